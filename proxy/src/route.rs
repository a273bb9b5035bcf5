//! Route matching (host and path prefix) and the route's resolved plugin chain.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::{CardData, FailoverConfig, OnError};
use crate::plugin::types::Provider;
use crate::plugin::{CompliancePlugin, DialectPlugin, RouterPlugin};

/// A route of the running snapshot.
pub struct Route {
    /// Name for metrics and errors.
    pub name: String,
    /// Lower-case host to match, any when `None`.
    pub host: Option<String>,
    /// Path prefix to match.
    pub path_prefix: String,
    /// Providers in static order.
    pub providers: Vec<String>,
    /// The same providers as plugins see them, built once per snapshot.
    pub provider_views: Vec<Provider>,
    /// The router plugin and its failure policy.
    pub router: Option<(Arc<RouterPlugin>, OnError)>,
    /// Compliance plugins in chain order (they always fail closed).
    pub compliance: Vec<Arc<CompliancePlugin>>,
    /// The storefront dialect (name, plugin): set on payment routes.
    pub dialect: Option<(String, Arc<DialectPlugin>)>,
    /// Whether plugins get the body.
    pub plugin_body: bool,
    /// Prefix of payment ids minted for payments made in another dialect.
    pub payment_id_prefix: String,
    /// Prefix of refund ids minted.
    pub refund_id_prefix: String,
    /// Failover policy (payment routes).
    pub failover: FailoverConfig,
    /// The storefront dialect's own provider (payment routes): forwards and card lookups.
    pub home: Option<String>,
    /// Methods the route takes; any when empty.
    pub methods: Vec<http::Method>,
    /// SHA-256 digests of the storefront keys the route accepts.
    pub storefront_keys: Vec<[u8; 32]>,
    /// What a card number in a request does.
    pub card_data: CardData,
    /// Signed storefront events for this route's payments (payment routes), if configured.
    pub webhooks: Option<Arc<crate::webhooks::Webhooks>>,
    /// Status queries of payments left pending (payment routes, when enabled).
    pub pending_queries: Option<crate::config::PendingQueriesConfig>,
}

impl Route {
    /// Whether the request presents a key the route accepts: `Authorization: Bearer KEY` or
    /// `Basic` with the key as user name (how Stripe's clients and `curl -u KEY:` send it).
    /// Digests are compared, so the comparison does not depend on where a wrong key differs.
    pub fn authorised(&self, headers: &http::HeaderMap) -> bool {
        // No keys: an open route (a payment route only with `allow_unauthenticated`, as the
        // config checks).
        if self.storefront_keys.is_empty() {
            return true;
        }
        let Some(key) = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(presented_key)
            .filter(|key| !key.is_empty())
        else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        self.storefront_keys.contains(&digest)
    }
    /// Whether a `method` request for `host` (no port) and `path` belongs to this route.
    pub fn matches(&self, method: &http::Method, host: Option<&str>, path: &str) -> bool {
        if !self.methods.is_empty() && !self.methods.contains(method) {
            return false;
        }
        let host_ok = match (&self.host, host) {
            (None, _) => true,
            (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
            (Some(_), None) => false,
        };
        host_ok && path_has_prefix(path, &self.path_prefix)
    }
}

/// `/v1` matches `/v1` and `/v1/x` but not `/v10`; a prefix ending in `/` matches plainly.
fn path_has_prefix(path: &str, prefix: &str) -> bool {
    if prefix.ends_with('/') {
        return path.starts_with(prefix);
    }
    path == prefix || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// The key in an `Authorization` value (schemes are case-insensitive, RFC 9110 §11.1).
fn presented_key(value: &str) -> Option<String> {
    let (scheme, credentials) = value.trim().split_once(' ')?;
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(credentials.to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, _password) = decoded.split_once(':').unwrap_or((&decoded, ""));
        return Some(user.to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(methods: &[http::Method]) -> Route {
        Route {
            name: "r".into(),
            host: Some("shop.example".into()),
            path_prefix: "/v1".into(),
            providers: vec![],
            provider_views: vec![],
            router: None,
            compliance: vec![],
            dialect: None,
            plugin_body: false,
            payment_id_prefix: "pi_".into(),
            refund_id_prefix: "re_".into(),
            failover: FailoverConfig::default(),
            home: None,
            methods: methods.to_vec(),
            storefront_keys: vec![],
            card_data: CardData::Refuse,
            webhooks: None,
            pending_queries: None,
        }
    }

    #[test]
    fn methods_narrow_a_route_and_none_means_any() {
        use http::Method;
        let reads = route(&[Method::GET, Method::HEAD]);
        assert!(reads.matches(&Method::GET, Some("shop.example"), "/v1/x"));
        assert!(!reads.matches(&Method::POST, Some("shop.example"), "/v1/x"));
        let any = route(&[]);
        assert!(any.matches(&Method::POST, Some("SHOP.example"), "/v1"));
        assert!(!any.matches(&Method::POST, Some("other.example"), "/v1"));
    }

    #[test]
    fn prefixes_respect_segment_boundaries() {
        assert!(path_has_prefix("/v1", "/v1"));
        assert!(path_has_prefix("/v1/payment_intents", "/v1"));
        assert!(!path_has_prefix("/v10/x", "/v1"));
        assert!(path_has_prefix("/anything", "/"));
        assert!(path_has_prefix("/v1/x", "/v1/"));
        assert!(!path_has_prefix("/v1", "/v1/"));
    }
}
