//! The router role: choose which of the route's providers to try, in order.

use crate::{Provider, Rejection, Request};

/// A router plugin. Implement it, then call [`export_router!`](crate::export_router).
///
/// The host calls [`Router::init`] once per plugin instance with the plugin's JSON config
/// and then [`Router::route`] once per request. Instances may be reused across requests or
/// created fresh for each, so a router must not keep request state between calls.
pub trait Router: Sized + 'static {
    /// Parse and validate the plugin's config (JSON text). An error rejects the config
    /// and keeps the proxy on its previous snapshot.
    fn init(config: &str) -> Result<Self, String>;

    /// Ordered names of the providers to try, or a rejection answered to the storefront.
    /// `seed` is a per-request number from the host for deterministic volume splits.
    fn route(
        &self,
        request: &Request,
        providers: &[Provider],
        seed: u64,
    ) -> Result<Vec<String>, Rejection>;
}

/// Export a [`Router`] implementation as the plugin's `router` interface.
///
/// Call it once, at the crate root of a `cdylib` built for `wasm32-wasip2`.
#[macro_export]
macro_rules! export_router {
    ($ty:ty) => {
        // Only the wasm build exports the interface; native builds (unit tests) skip it.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __PayproxyRouterExport;

            impl $crate::__router_glue::Guest for __PayproxyRouterExport {
                fn init(
                    config: ::std::string::String,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::arena::during_init(|| $crate::__router_glue::init::<$ty>(config))
                }

                fn route(
                    request: $crate::__router_glue::HttpRequest,
                    providers: ::std::vec::Vec<$crate::__router_glue::WitProvider>,
                    seed: u64,
                ) -> ::std::result::Result<
                    ::std::vec::Vec<::std::string::String>,
                    $crate::__router_glue::WitRejection,
                > {
                    $crate::__router_glue::route::<$ty>(request, providers, seed)
                }
            }

            $crate::bindings::router::__export_router_world!(
                __PayproxyRouterExport with_types_in $crate::bindings::router
            );
        };
    };
}

/// Glue between the generated bindings and [`Router`]; used by [`export_router!`] only.
#[doc(hidden)]
pub mod __glue {
    use std::any::Any;
    use std::cell::RefCell;

    pub use crate::bindings::router::exports::payproxy::plugin::router::Guest;
    pub use crate::bindings::router::payproxy::plugin::types::{
        HttpRequest, Provider as WitProvider, Rejection as WitRejection,
    };

    use super::Router;
    use crate::{Provider, Rejection, Request};

    thread_local! {
        // A component instance is single-threaded; the plugin value lives here between calls.
        static PLUGIN: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    }

    /// `init` export: build the plugin from its config and keep it for later calls.
    pub fn init<R: Router>(config: String) -> Result<(), String> {
        let plugin = R::init(&config)?;
        PLUGIN.with(|slot| *slot.borrow_mut() = Some(Box::new(plugin)));
        Ok(())
    }

    /// `route` export: convert the inputs and call the plugin.
    pub fn route<R: Router>(
        request: HttpRequest,
        providers: Vec<WitProvider>,
        seed: u64,
    ) -> Result<Vec<String>, WitRejection> {
        let request = Request {
            method: request.method,
            path: request.path,
            query: request.query,
            headers: request.headers,
            body: request.body,
        };
        let providers: Vec<Provider> = providers
            .into_iter()
            .map(|p| Provider {
                name: p.name,
                region: p.region,
                tags: p.tags,
                cost: p.cost,
            })
            .collect();
        PLUGIN.with(|slot| {
            let slot = slot.borrow();
            let plugin = slot
                .as_ref()
                .and_then(|p| p.downcast_ref::<R>())
                .ok_or_else(|| {
                    to_wit(Rejection::new(
                        500,
                        "plugin_not_initialised",
                        "router called before init",
                    ))
                })?;
            plugin.route(&request, &providers, seed).map_err(to_wit)
        })
    }

    fn to_wit(r: Rejection) -> WitRejection {
        WitRejection {
            status: r.status,
            code: r.code,
            message: r.message,
        }
    }
}
