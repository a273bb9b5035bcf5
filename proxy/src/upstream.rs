//! Providers as upstreams: pooled keep-alive HTTP/1.1 and HTTP/2 clients (rustls), the
//! request rewrite for forwarding (hop-by-hop headers, Host, X-Forwarded-*), and the
//! classification of transport failures into storefront errors that say whether the
//! request could have reached the provider.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::ProviderConfig;
use crate::error::ProxyError;
use crate::failover::Transport;

/// Body type sent upstream: the storefront's streamed body or a buffered one.
pub type ProxyBody = BoxBody<Bytes, BoxError>;
/// Boxed body error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A pooled client to providers (rustls, HTTP/1.1 and HTTP/2).
pub type HttpClient = Client<HttpsConnector<HttpConnector>, ProxyBody>;
/// Clients are shared when CA file (path and bytes) and connect timeout are equal.
type ClientKey = (Option<PathBuf>, Vec<u8>, u64);

/// Parse and check a provider base URL: `http` or `https`, a host, no query.
pub fn parse_base_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("URL {url:?} must start with http:// or https://")),
    }
    if uri.authority().is_none() {
        return Err(format!("URL {url:?} has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("URL {url:?} must not have a query"));
    }
    Ok(uri)
}

/// Clients shared across config snapshots, keyed by their TLS and connect settings, so a
/// reload keeps pooled connections to providers warm.
#[derive(Default)]
pub struct ClientCache {
    clients: Mutex<HashMap<ClientKey, Clients>>,
}

impl ClientCache {
    fn clients(
        &self,
        ca_file: Option<PathBuf>,
        connect_timeout_ms: u64,
    ) -> Result<Clients, String> {
        let ca_bytes = match &ca_file {
            Some(path) => crate::files::read(path, crate::files::PEM).map_err(|e| e.to_string())?,
            None => Vec::new(),
        };
        let key = (ca_file.clone(), ca_bytes, connect_timeout_ms);
        let mut clients = self
            .clients
            .lock()
            .map_err(|_| "client cache poisoned".to_string())?;
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let tls = crate::tls::client_config(ca_file.as_deref().map(|p| (p, key.1.as_slice())))?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_millis(connect_timeout_ms)));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let built = Clients {
            requests: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .pool_max_idle_per_host(64)
                .build(connector.clone()),
            checks: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build(connector),
        };
        clients.insert(key, built.clone());
        Ok(built)
    }
}

impl ClientCache {
    /// A pooled client trusting the default roots, for requests that are not a provider's
    /// (webhook deliveries).
    pub fn default_client(&self, connect_timeout_ms: u64) -> Result<HttpClient, String> {
        Ok(self.clients(None, connect_timeout_ms)?.requests)
    }
}

/// A send that got no answer: what the transport saw, and the error to answer with.
#[derive(Debug)]
pub struct SendFailure {
    /// `NotSent` (nothing written: another provider is safe), `TimedOutAfterSend` or `Broken`.
    pub transport: Transport,
    /// The storefront-facing error.
    pub error: ProxyError,
}

/// One provider, ready to receive requests.
pub struct Upstream {
    /// Provider name.
    pub name: String,
    base: Uri,
    timeout: Duration,
    clients: Clients,
}

/// A provider's two clients, with the same TLS trust and connect timeout.
#[derive(Clone)]
struct Clients {
    /// Pooled keep-alive connections for requests.
    requests: HttpClient,
    /// No pool: every active health check opens its own connection, so it tests connect and
    /// handshake, and never waits behind (or resets a stream on) a connection requests use.
    checks: HttpClient,
}

impl Upstream {
    /// Build from config; `ca_file` is already resolved against the config file.
    pub fn new(
        name: &str,
        config: &ProviderConfig,
        ca_file: Option<PathBuf>,
        cache: &ClientCache,
    ) -> Result<Upstream, String> {
        Ok(Upstream {
            name: name.to_string(),
            base: parse_base_url(&config.url)?,
            timeout: Duration::from_millis(config.timeout_ms),
            clients: cache.clients(ca_file, config.connect_timeout_ms)?,
        })
    }

    /// The pooled client requests to this provider use (its TLS trust and connect timeout).
    pub fn client(&self) -> HttpClient {
        self.clients.requests.clone()
    }

    /// The client for this provider's active health checks: its TLS trust and connect
    /// timeout, a new connection per check.
    pub fn check_client(&self) -> HttpClient {
        self.clients.checks.clone()
    }

    /// The upstream URI for a storefront path and query: base path + path.
    pub fn target(&self, path_and_query: &str) -> Result<Uri, ProxyError> {
        let base_path = self.base.path().trim_end_matches('/');
        let uri = format!(
            "{}://{}{}{}",
            self.base.scheme_str().unwrap_or("http"),
            self.base
                .authority()
                .map(|a| a.as_str())
                .unwrap_or_default(),
            base_path,
            path_and_query
        );
        uri.parse().map_err(|_| {
            ProxyError::downstream(
                StatusCode::BAD_REQUEST,
                "invalid_path",
                "the request path cannot be forwarded",
            )
        })
    }

    /// Send a prepared request; the answer is the provider's response head with its body
    /// still streaming. A failure carries the transport fact (could the request have reached
    /// the provider?) and the error to answer with.
    pub async fn send(
        &self,
        request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, SendFailure> {
        match tokio::time::timeout(self.timeout, self.clients.requests.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(self.classify(&e)),
            Err(_) => Err(SendFailure {
                transport: Transport::TimedOutAfterSend,
                error: ProxyError::upstream(
                    StatusCode::GATEWAY_TIMEOUT,
                    "provider_timeout",
                    &self.name,
                    format!(
                        "provider {} did not answer within {} ms",
                        self.name,
                        self.timeout.as_millis()
                    ),
                    false,
                ),
            }),
        }
    }

    fn classify(&self, e: &hyper_util::client::legacy::Error) -> SendFailure {
        if let Some(limit) = find_source::<http_body_util::LengthLimitError>(e) {
            // The storefront's streamed body outgrew the limit while it was being sent.
            return SendFailure {
                transport: Transport::Broken,
                error: ProxyError::downstream(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    limit.to_string(),
                ),
            };
        }
        if e.is_connect() {
            // Nothing was written: safe to try another provider.
            return SendFailure {
                transport: Transport::NotSent,
                error: ProxyError::upstream(
                    StatusCode::BAD_GATEWAY,
                    "provider_unreachable",
                    &self.name,
                    format!("provider {} is unreachable", self.name),
                    true,
                ),
            };
        }
        tracing::warn!(provider = %self.name, error = %error_chain(e), "provider request failed");
        SendFailure {
            transport: Transport::Broken,
            error: ProxyError::upstream(
                StatusCode::BAD_GATEWAY,
                "provider_error",
                &self.name,
                format!(
                    "provider {} closed the connection without a complete answer",
                    self.name
                ),
                false,
            ),
        }
    }
}

fn find_source<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        current = err.source();
    }
    None
}

/// The error and its sources on one line, for logs.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut current = e.source();
    while let Some(err) = current {
        text.push_str(": ");
        text.push_str(&err.to_string());
        current = err.source();
    }
    text
}

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Remove hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// Facts about the downstream connection that forwarding adds to the request.
#[derive(Debug, Clone, Copy)]
pub struct Downstream {
    /// The storefront's address.
    pub client_ip: IpAddr,
    /// Whether it connected over TLS.
    pub tls: bool,
}

/// Rewrite the storefront's request head for the provider: target URI, HTTP/1.1 (the
/// client upgrades to h2 by ALPN), no hop-by-hop headers, Host from the target, and
/// `X-Forwarded-For` / `-Proto` / `-Host` added.
pub fn prepare_head(parts: &mut http::request::Parts, target: Uri, downstream: Downstream) {
    let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    strip_hop_by_hop(&mut parts.headers);
    // The client sets Host from the target URI.
    parts.headers.remove(header::HOST);
    let xff = HeaderName::from_static("x-forwarded-for");
    let prior: Vec<String> = parts
        .headers
        .get_all(&xff)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    let mut chain = prior.join(", ");
    if !chain.is_empty() {
        chain.push_str(", ");
    }
    chain.push_str(&downstream.client_ip.to_string());
    parts.headers.remove(&xff);
    if let Ok(value) = HeaderValue::from_str(&chain) {
        parts.headers.insert(xff, value);
    }
    parts.headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if downstream.tls { "https" } else { "http" }),
    );
    if let Some(host) = original_host {
        parts
            .headers
            .insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    parts.uri = target;
    parts.version = Version::HTTP_11;
}

/// A copy of a request head (method, URI, version, headers) for another attempt.
pub fn clone_head(parts: &http::request::Parts) -> http::request::Parts {
    let mut builder = Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.clone())
        .version(parts.version);
    if let Some(headers) = builder.headers_mut() {
        *headers = parts.headers.clone();
    }
    // Method, URI and headers come from a parsed request, so this cannot fail.
    builder
        .body(())
        .map(|r| r.into_parts().0)
        .unwrap_or_else(|_| Request::new(()).into_parts().0)
}
