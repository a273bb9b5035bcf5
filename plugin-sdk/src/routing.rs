//! The router role (contract 0.4.0; 0.3.0 has the same shape), built for the per-payment
//! hot path.
//!
//! What differs from the 0.2.0 [`Router`](crate::payment::Router): the providers' static
//! attributes ([`ProviderInfo`]) arrive once, at [`Router::init`], and each request brings
//! only the route's [`Candidate`]s (an id and live health); the request's headers arrive
//! as one text block ([`RequestView::header`] reads it); the answer is provider ids, or a
//! [`Refusal`] (the same "no" every role uses). The payment and health types are
//! [`crate::payment`]'s: a router sees every method, `other` ones included.
//!
//! ```ignore
//! use payproxy_plugin_sdk::export_router_v4;
//! use payproxy_plugin_sdk::payment::{Payment, Refusal};
//! use payproxy_plugin_sdk::routing::{Candidate, ProviderInfo, RequestView, Router};
//!
//! struct Healthiest;
//!
//! impl Router for Healthiest {
//!     fn init(_config: &str, _providers: Vec<ProviderInfo>) -> Result<Self, String> {
//!         Ok(Healthiest)
//!     }
//!     fn route(&self, _request: &RequestView, _payment: Option<&Payment>,
//!              candidates: &[Candidate], _seed: u64) -> Result<Vec<u32>, Refusal> {
//!         let mut list = candidates.to_vec();
//!         list.sort_by(|a, b| b.health.success_rate.total_cmp(&a.health.success_rate));
//!         Ok(list.into_iter().map(|c| c.id).collect())
//!     }
//! }
//!
//! export_router_v4!(Healthiest);
//! ```

pub use crate::bindings::v4::router::exports::payproxy::plugin::router::{
    Candidate, ProviderInfo, RequestView,
};
use crate::payment::{Payment, Refusal};

/// Router role, 0.4.0. Implement it, then call [`export_router_v4!`](crate::export_router_v4)
/// ([`export_router_v3!`](crate::export_router_v3) for hosts older than 0.4.0).
///
/// Instances may be reused across requests or created fresh for each, so a router must not
/// keep request state between calls.
pub trait Router: Sized + 'static {
    /// Parse and validate the plugin's JSON config against the configured providers (a
    /// provider's id is its index in `providers`). An error rejects the config and keeps the
    /// proxy on its previous snapshot.
    fn init(config: &str, providers: Vec<ProviderInfo>) -> Result<Self, String>;

    /// Ordered ids of the candidates to try, or a rejection answered to the storefront.
    /// `candidates` are the route's providers in the route's order; `payment` is none on
    /// transparent routes; `seed` is a per-request number for deterministic volume splits.
    fn route(
        &self,
        request: &RequestView,
        payment: Option<&Payment>,
        candidates: &[Candidate],
        seed: u64,
    ) -> Result<Vec<u32>, Refusal>;
}

impl RequestView {
    /// A view from parts, packing the headers the way the host does; for tests.
    pub fn new(
        method: &str,
        path: &str,
        query: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> RequestView {
        RequestView {
            method: method.to_string(),
            path: path.to_string(),
            query: query.map(str::to_string),
            headers: pack_headers(headers.iter().map(|(n, v)| (*n, *v))),
            body: body.map(<[u8]>::to_vec),
        }
    }

    /// The headers in arrival order, as (lower-case name, value).
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.lines().filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name, value.trim()))
        })
    }

    /// First value of header `name`, case-insensitive.
    ///
    /// Walks the block line by line, comparing only each line's start with `name`; no line
    /// is split unless it is the one asked for.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.lines().find_map(|line| self.value_of(line, name))
    }

    /// The first value of each header in `names` (lower case), in one pass over the block:
    /// for a router that checks several headers, or the same one in several rules.
    pub fn headers_named<'a, S: AsRef<str>>(&'a self, names: &[S]) -> Vec<Option<&'a str>> {
        let mut found = vec![None; names.len()];
        for line in self.lines() {
            for (slot, wanted) in found.iter_mut().zip(names) {
                if slot.is_none() {
                    *slot = self.value_of(line.clone(), wanted.as_ref());
                }
            }
        }
        found
    }

    /// The byte ranges of the block's lines, found with memchr.
    fn lines(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        let block = self.headers.as_bytes();
        let mut start = 0;
        std::iter::from_fn(move || {
            if start >= block.len() {
                return None;
            }
            let end = memchr::memchr(b'\n', &block[start..]).map_or(block.len(), |i| start + i);
            let line = start..end;
            start = end + 1;
            Some(line)
        })
    }

    /// The value on `line` when its name is `name` (ASCII case-insensitive).
    fn value_of(&self, line: std::ops::Range<usize>, name: &str) -> Option<&str> {
        let (bytes, n) = (&self.headers.as_bytes()[line.clone()], name.len());
        let named =
            bytes.len() > n && bytes[n] == b':' && bytes[..n].eq_ignore_ascii_case(name.as_bytes());
        // Cut after an ASCII `:`, so on a character boundary.
        named.then(|| self.headers[line.start + n + 1..line.end].trim())
    }
}

/// The header block of a [`RequestView`]: `name: value\n` per header, names lower-cased.
/// Headers whose name or value would break the format (a line break, a `:` in the name) are
/// left out; HTTP forbids them anyway.
pub fn pack_headers<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut block = String::new();
    for (name, value) in headers {
        let breaks = |s: &str| s.contains(['\n', '\r']);
        if name.is_empty() || name.contains(':') || breaks(name) || breaks(value) {
            continue;
        }
        block.push_str(&name.to_ascii_lowercase());
        block.push_str(": ");
        block.push_str(value);
        block.push('\n');
    }
    block
}

/// Export a type implementing [`Router`] as contract 0.4.0's `router` interface.
#[macro_export]
macro_rules! export_router_v4 {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __PayproxyExport;
            impl $crate::bindings::v4::router::exports::payproxy::plugin::router::Guest
                for __PayproxyExport
            {
                fn init(
                    config: ::std::string::String,
                    providers: ::std::vec::Vec<$crate::routing::ProviderInfo>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::arena::during_init(|| {
                        let value = <$ty as $crate::routing::Router>::init(&config, providers)?;
                        $crate::routing::__glue::store(value);
                        Ok(())
                    })
                }
                fn route(
                    request: $crate::routing::RequestView,
                    payment: ::std::option::Option<$crate::payment::Payment>,
                    candidates: ::std::vec::Vec<$crate::routing::Candidate>,
                    seed: u64,
                ) -> ::std::result::Result<::std::vec::Vec<u32>, $crate::payment::Refusal> {
                    $crate::routing::__glue::with(|p: &$ty| {
                        $crate::routing::Router::route(
                            p,
                            &request,
                            payment.as_ref(),
                            &candidates,
                            seed,
                        )
                    })
                }
            }
            $crate::bindings::v4::router::__export_router_v4_world!(
                __PayproxyExport with_types_in $crate::bindings::v4::router
            );
        };
    };
}

/// Export a type implementing [`Router`] as contract 0.3.0's `router` interface, for hosts
/// older than 0.4.0: the values are converted (an `other` payment method cannot reach a
/// 0.3.0 router: the host shows it as no method), and a refusal is answered with its
/// status, code and message.
#[macro_export]
macro_rules! export_router_v3 {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __PayproxyExport;
            impl $crate::bindings::v3::router::exports::payproxy::plugin::router::Guest
                for __PayproxyExport
            {
                fn init(
                    config: ::std::string::String,
                    providers: ::std::vec::Vec<
                        $crate::bindings::v3::router::exports::payproxy::plugin::router::ProviderInfo,
                    >,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::arena::during_init(|| {
                        let providers: ::std::vec::Vec<$crate::routing::ProviderInfo> =
                            $crate::payment::__glue::convert(&providers);
                        let value = <$ty as $crate::routing::Router>::init(&config, providers)?;
                        $crate::routing::__glue::store(value);
                        Ok(())
                    })
                }
                fn route(
                    request: $crate::bindings::v3::router::exports::payproxy::plugin::router::RequestView,
                    payment: ::std::option::Option<$crate::payment::__v2::Payment>,
                    candidates: ::std::vec::Vec<
                        $crate::bindings::v3::router::exports::payproxy::plugin::router::Candidate,
                    >,
                    seed: u64,
                ) -> ::std::result::Result<::std::vec::Vec<u32>, $crate::payment::__v2::Rejection>
                {
                    let request = $crate::routing::RequestView {
                        method: request.method,
                        path: request.path,
                        query: request.query,
                        headers: request.headers,
                        body: request.body,
                    };
                    let payment: ::std::option::Option<$crate::payment::Payment> =
                        payment.map(|p| $crate::payment::Version::version(p));
                    let candidates: ::std::vec::Vec<$crate::routing::Candidate> =
                        $crate::payment::__glue::convert(&candidates);
                    $crate::routing::__glue::with(|p: &$ty| {
                        $crate::routing::Router::route(
                            p,
                            &request,
                            payment.as_ref(),
                            &candidates,
                            seed,
                        )
                    })
                    .map_err(|r| $crate::payment::__v2::Rejection {
                        status: r.status,
                        code: r.code,
                        message: r.message,
                    })
                }
            }
            $crate::bindings::v3::router::__export_router_v3_world!(
                __PayproxyExport with_types_in $crate::bindings::v3::router
            );
        };
    };
}

/// Glue used by the router export macros; not part of the public API.
#[doc(hidden)]
pub mod __glue {
    use std::any::Any;
    use std::cell::RefCell;

    use crate::payment::{Refusal, RefusalKind};

    thread_local! {
        // A component instance is single-threaded; the router lives here between calls.
        static ROUTER: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    }

    /// Keep the router value.
    pub fn store<T: 'static>(value: T) {
        ROUTER.with(|r| *r.borrow_mut() = Some(Box::new(value)));
    }

    /// Call `f` with the router; a 500 refusal before `init`.
    pub fn with<T: 'static>(
        f: impl FnOnce(&T) -> Result<Vec<u32>, Refusal>,
    ) -> Result<Vec<u32>, Refusal> {
        ROUTER.with(
            |r| match r.borrow().as_ref().and_then(|v| v.downcast_ref::<T>()) {
                Some(router) => f(router),
                None => Err(Refusal {
                    kind: RefusalKind::Unavailable,
                    status: 500,
                    code: "plugin_not_initialised".into(),
                    message: "router called before init".into(),
                }),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_through_the_block() {
        let view = RequestView::new(
            "POST",
            "/v1/x",
            None,
            &[
                ("Content-Type", "application/json"),
                ("x-shopper-country", "NL"),
                ("x-multi", "a"),
                ("x-multi", "b: c"),
                ("bad\nname", "v"),
                ("x-bad-value", "a\r\nb"),
                ("x-empty", ""),
            ],
            None,
        );
        assert_eq!(
            view.headers,
            "content-type: application/json\nx-shopper-country: NL\nx-multi: a\nx-multi: b: c\nx-empty: \n"
        );
        assert_eq!(view.header("CONTENT-TYPE"), Some("application/json"));
        assert_eq!(view.header("x-multi"), Some("a"));
        assert_eq!(view.header("x-empty"), Some(""));
        assert_eq!(view.header("x-bad-value"), None);
        // A name that is only the tail of another, or a prefix of one, is not that header.
        assert_eq!(view.header("type"), None);
        assert_eq!(view.header("x-shopper"), None);
        assert_eq!(view.header("x-shopper-country"), Some("NL"));
        assert_eq!(
            view.headers_named(&["x-multi", "nope", "content-type"]),
            [Some("a"), None, Some("application/json")]
        );
        let all: Vec<_> = view.headers().collect();
        assert_eq!(all[3], ("x-multi", "b: c"));
        assert_eq!(all.len(), 5);
    }
}
