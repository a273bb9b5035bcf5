//! Providers as upstreams: pooled keep-alive HTTP/1.1 and HTTP/2 clients (rustls), the
//! request rewrite for forwarding (hop-by-hop headers, Host, X-Forwarded-*), and the
//! classification of transport failures into storefront errors that say whether the
//! request could have reached the provider.

use std::collections::HashMap;
use std::fmt::Write as _;
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

/// What every target URI of the provider at `base` starts with: scheme, authority and base
/// path without its trailing `/`.
fn target_prefix(base: &Uri) -> String {
    format!(
        "{}://{}{}",
        base.scheme_str().unwrap_or("http"),
        base.authority().map(|a| a.as_str()).unwrap_or_default(),
        base.path().trim_end_matches('/'),
    )
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
            requests: ThreadPools::new(connector.clone()),
            shared: pooled(connector.clone()),
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
        Ok(self.clients(None, connect_timeout_ms)?.shared)
    }
}

/// A client with keep-alive pooling, as requests to providers use it. The timer closes
/// connections idle for 90 s; without one, hyper-util drops an expired connection only when
/// a later request to the same provider looks for one.
fn pooled(connector: HttpsConnector<HttpConnector>) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .build(connector)
}

/// A pooled client per thread. A pooled connection's I/O is driven by the event loop of the
/// thread that opened it; a request from another serving thread would have to wake that
/// thread for every write and read. So each thread sends on connections it opened itself.
#[derive(Clone)]
struct ThreadPools {
    /// Which settings these are, in every thread's table.
    id: u64,
    connector: HttpsConnector<HttpConnector>,
}

thread_local! {
    /// This thread's clients, by [`ThreadPools::id`]. Made at a thread's first request with
    /// those settings; as few as there are distinct provider TLS and connect settings.
    static POOLS: std::cell::RefCell<HashMap<u64, HttpClient>> =
        std::cell::RefCell::new(HashMap::new());
}

impl ThreadPools {
    fn new(connector: HttpsConnector<HttpConnector>) -> ThreadPools {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        ThreadPools {
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            connector,
        }
    }

    /// Send `request` on this thread's pool.
    fn request(&self, request: Request<ProxyBody>) -> hyper_util::client::legacy::ResponseFuture {
        POOLS.with_borrow_mut(|pools| {
            pools
                .entry(self.id)
                .or_insert_with(|| pooled(self.connector.clone()))
                .request(request)
        })
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
    /// Scheme, authority and base path without its trailing `/`: what every target starts
    /// with.
    prefix: String,
    timeout: Duration,
    clients: Clients,
}

/// A provider's clients, with the same TLS trust and connect timeout.
#[derive(Clone)]
struct Clients {
    /// Pooled keep-alive connections for requests, a pool per serving thread.
    requests: ThreadPools,
    /// One pool for the process, for what is not a request to the provider: access token
    /// requests (made by the refresh task, or by a serving thread when no good token is
    /// held) and webhook deliveries.
    shared: HttpClient,
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
            prefix: target_prefix(&parse_base_url(&config.url)?),
            timeout: Duration::from_millis(config.timeout_ms),
            clients: cache.clients(ca_file, config.connect_timeout_ms)?,
        })
    }

    /// A pooled client with this provider's TLS trust and connect timeout, one pool for every
    /// thread (access token requests use it; requests to the provider use a pool per thread).
    pub fn client(&self) -> HttpClient {
        self.clients.shared.clone()
    }

    /// The client for this provider's active health checks: its TLS trust and connect
    /// timeout, a new connection per check.
    pub fn check_client(&self) -> HttpClient {
        self.clients.checks.clone()
    }

    /// The upstream URI for a storefront path and query: base path + path.
    pub fn target(&self, path_and_query: &str) -> Result<Uri, ProxyError> {
        let mut uri = String::with_capacity(self.prefix.len() + path_and_query.len());
        uri.push_str(&self.prefix);
        uri.push_str(path_and_query);
        Uri::try_from(uri).map_err(|_| {
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
    // Most heads carry none: one look at each name finds that, where removing every
    // hop-by-hop name looked each one up.
    if !headers
        .keys()
        .any(|name| name == header::UPGRADE || HOP_BY_HOP.contains(name))
    {
        return;
    }
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
    // The client sets Host from the target URI.
    let original_host = parts.headers.remove(header::HOST).or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    strip_hop_by_hop(&mut parts.headers);
    let xff = HeaderName::from_static("x-forwarded-for");
    // The earlier values joined with ", ", then the storefront's address.
    let mut chain = String::new();
    for (n, prior) in parts
        .headers
        .get_all(&xff)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .enumerate()
    {
        if n > 0 {
            chain.push_str(", ");
        }
        chain.push_str(prior);
    }
    if !chain.is_empty() {
        chain.push_str(", ");
    }
    // Writing to a String cannot fail.
    let _ = write!(chain, "{}", downstream.client_ip);
    match HeaderValue::from_str(&chain) {
        // Replaces every earlier value.
        Ok(value) => {
            parts.headers.insert(xff, value);
        }
        // Readable earlier values and an address always make a valid value; were one not,
        // no earlier value would be forwarded unchecked.
        Err(_) => {
            parts.headers.remove(&xff);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty};
    use std::future::Future;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    /// What a test provider saw: connections accepted, and the requests each closed
    /// connection carried.
    #[derive(Default)]
    struct Seen {
        accepted: usize,
        closed: Vec<usize>,
    }

    /// A provider answering 200 to every request on a keep-alive connection.
    async fn counting_provider() -> (String, Arc<Mutex<Seen>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Seen::default()));
        let counts = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counts.lock().unwrap().accepted += 1;
                let counts = counts.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    let mut requests = 0;
                    while let Ok(Some(line)) = lines.next_line().await {
                        if line.is_empty() {
                            requests += 1;
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if write.write_all(answer).await.is_err() {
                                break;
                            }
                        }
                    }
                    counts.lock().unwrap().closed.push(requests);
                });
            }
        });
        (url, seen)
    }

    async fn get_twice(upstream: &Upstream) {
        for _ in 0..2 {
            let request = Request::get(upstream.target("/x").unwrap())
                .body(Empty::new().map_err(|e| match e {}).boxed())
                .unwrap();
            let response = upstream.send(request).await.expect("answered");
            assert_eq!(response.status(), 200);
            response.into_body().collect().await.expect("body");
        }
    }

    /// Run what `make` returns on a thread of its own, with an event loop of its own (as a
    /// serving thread does), until it ends.
    fn on_own_thread<F: Future<Output = ()>>(
        make: impl FnOnce() -> F + Send + 'static,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(make());
        })
    }

    #[test]
    fn a_target_is_the_base_url_with_the_request_path_and_query() {
        let target = |url: &str, path_and_query: &str| {
            let config: ProviderConfig =
                serde_json::from_value(serde_json::json!({ "url": url })).expect("config");
            Upstream::new("p", &config, None, &ClientCache::default())
                .unwrap()
                .target(path_and_query)
                .map(|uri| uri.to_string())
                .map_err(|e| e.code.to_string())
        };
        let ok = |uri: &str| Ok::<_, String>(uri.to_string());
        assert_eq!(
            target("http://a:81", "/v1/x?y=1"),
            ok("http://a:81/v1/x?y=1")
        );
        assert_eq!(target("https://a/api/", "/v1/x"), ok("https://a/api/v1/x"));
        assert_eq!(target("https://a/api", "/v1/x"), ok("https://a/api/v1/x"));
        assert_eq!(target("http://[::1]:9/", "/"), ok("http://[::1]:9/"));
        assert_eq!(target("http://a", "/a b"), Err("invalid_path".to_string()));
    }

    /// A storefront head with `headers` (raw bytes allowed), for `prepare_head`.
    fn head(headers: &[(&str, &[u8])]) -> http::request::Parts {
        let mut request = Request::get("/v1/x?y=1").body(()).unwrap();
        for (name, value) in headers {
            request.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        request.into_parts().0
    }

    fn values<'a>(parts: &'a http::request::Parts, name: &str) -> Vec<&'a [u8]> {
        parts
            .headers
            .get_all(name)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect()
    }

    fn prepared(headers: &[(&str, &[u8])], tls: bool) -> http::request::Parts {
        let mut parts = head(headers);
        let downstream = Downstream {
            client_ip: "192.0.2.7".parse().unwrap(),
            tls,
        };
        prepare_head(
            &mut parts,
            "http://p:81/base/v1/x?y=1".parse().unwrap(),
            downstream,
        );
        parts
    }

    #[test]
    fn a_forwarded_head_loses_hop_by_hop_headers_and_gains_forwarded_ones() {
        let parts = prepared(
            &[
                ("host", b"shop.example"),
                ("connection", b"keep-alive, X-Drop-Me"),
                ("x-drop-me", b"1"),
                ("keep-alive", b"timeout=5"),
                ("proxy-connection", b"keep-alive"),
                ("proxy-authorization", b"Basic c2VjcmV0"),
                ("te", b"trailers"),
                ("trailer", b"x-sum"),
                ("transfer-encoding", b"chunked"),
                ("upgrade", b"websocket"),
                ("x-keep", b"yes"),
                ("x-keep", b"twice"),
            ],
            true,
        );
        let mut names: Vec<&str> = parts.headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto",
                "x-keep"
            ]
        );
        assert_eq!(values(&parts, "x-keep"), [&b"yes"[..], b"twice"]);
        assert_eq!(values(&parts, "x-forwarded-host"), [b"shop.example"]);
        assert_eq!(values(&parts, "x-forwarded-proto"), [b"https"]);
        assert_eq!(values(&parts, "x-forwarded-for"), [b"192.0.2.7"]);
        assert_eq!(parts.uri, "http://p:81/base/v1/x?y=1");
        assert_eq!(parts.version, Version::HTTP_11);
    }

    #[test]
    fn each_hop_by_hop_header_is_dropped_when_it_is_the_only_one() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ] {
            let parts = prepared(&[(name, b"x"), ("x-keep", b"yes")], false);
            assert!(values(&parts, name).is_empty(), "{name} was forwarded");
            assert_eq!(values(&parts, "x-keep"), [b"yes"], "beside {name}");
        }
    }

    #[test]
    fn a_head_without_hop_by_hop_headers_keeps_every_other_header() {
        let parts = prepared(
            &[
                ("content-type", b"application/x-www-form-urlencoded"),
                ("authorization", b"Bearer sk_test"),
                ("idempotency-key", b"k-1"),
                ("x-keep", b"a"),
                ("x-keep", b"b"),
            ],
            false,
        );
        assert_eq!(parts.headers.len(), 7);
        assert_eq!(
            values(&parts, "content-type"),
            [b"application/x-www-form-urlencoded"]
        );
        assert_eq!(values(&parts, "authorization"), [b"Bearer sk_test"]);
        assert_eq!(values(&parts, "idempotency-key"), [b"k-1"]);
        assert_eq!(values(&parts, "x-keep"), [b"a", b"b"]);
        assert_eq!(values(&parts, "x-forwarded-proto"), [b"http"]);
        assert_eq!(values(&parts, "x-forwarded-for"), [b"192.0.2.7"]);
        // No Host and no authority in the storefront's URI: none to forward.
        assert!(values(&parts, "x-forwarded-host").is_empty());
    }

    #[test]
    fn x_forwarded_for_appends_the_storefront_to_the_earlier_values_it_can_read() {
        let chain = |earlier: &[&[u8]]| {
            let headers: Vec<(&str, &[u8])> =
                earlier.iter().map(|v| ("x-forwarded-for", *v)).collect();
            let parts = prepared(&headers, false);
            values(&parts, "x-forwarded-for")
                .iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(chain(&[]), ["192.0.2.7"]);
        assert_eq!(chain(&[b"10.0.0.1"]), ["10.0.0.1, 192.0.2.7"]);
        assert_eq!(
            chain(&[b"10.0.0.1, 10.0.0.2", b"10.0.0.3"]),
            ["10.0.0.1, 10.0.0.2, 10.0.0.3, 192.0.2.7"]
        );
        // An empty value joins as nothing; one that is not visible ASCII is dropped.
        assert_eq!(chain(&[b""]), ["192.0.2.7"]);
        assert_eq!(chain(&[b"", b"10.0.0.1"]), [", 10.0.0.1, 192.0.2.7"]);
        assert_eq!(
            chain(&[b"10.0.0.1", b"caf\xc3\xa9", b"10.0.0.2"]),
            ["10.0.0.1, 10.0.0.2, 192.0.2.7"]
        );
        assert_eq!(
            chain(&[b"caf\xc3\xa9", b"10.0.0.1"]),
            ["10.0.0.1, 192.0.2.7"]
        );
    }

    #[test]
    fn headers_the_connection_header_names_are_dropped_before_they_are_read() {
        let parts = prepared(
            &[
                ("connection", b"host, x-forwarded-for"),
                ("host", b"shop.example"),
                ("x-forwarded-for", b"10.0.0.1"),
            ],
            false,
        );
        // The storefront's Host still names the shop; its X-Forwarded-For, being hop-by-hop
        // here, is not extended.
        assert_eq!(values(&parts, "x-forwarded-host"), [b"shop.example"]);
        assert_eq!(values(&parts, "x-forwarded-for"), [b"192.0.2.7"]);
        assert!(values(&parts, "host").is_empty());
    }

    #[test]
    fn without_a_host_header_the_uri_authority_is_the_forwarded_host() {
        // HTTP/2 carries the authority in the URI, not in a Host header.
        let mut parts = Request::get("https://shop.example:8443/v1/x")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let downstream = Downstream {
            client_ip: "2001:db8::7".parse().unwrap(),
            tls: true,
        };
        prepare_head(&mut parts, "http://p/v1/x".parse().unwrap(), downstream);
        assert_eq!(values(&parts, "x-forwarded-host"), [b"shop.example:8443"]);
        assert_eq!(values(&parts, "x-forwarded-for"), [b"2001:db8::7"]);
        assert_eq!(values(&parts, "x-forwarded-proto"), [b"https"]);
    }

    #[tokio::test]
    async fn each_thread_sends_on_connections_it_opened() {
        let (url, seen) = counting_provider().await;
        let config: ProviderConfig =
            serde_json::from_value(serde_json::json!({ "url": url })).expect("provider config");
        let upstream =
            Arc::new(Upstream::new("p", &config, None, &ClientCache::default()).unwrap());
        // `first` sends twice, then keeps its event loop running (its idle connection stays
        // open and usable) until `second` has sent twice too.
        let (first_done, first_sent) = tokio::sync::oneshot::channel();
        let (second_done, second_sent) = tokio::sync::oneshot::channel::<()>();
        let first = on_own_thread({
            let upstream = upstream.clone();
            move || async move {
                get_twice(&upstream).await;
                first_done.send(()).unwrap();
                let _ = second_sent.await;
            }
        });
        first_sent.await.unwrap();
        let second = on_own_thread({
            let upstream = upstream.clone();
            move || async move {
                get_twice(&upstream).await;
                second_done.send(()).unwrap();
            }
        });
        tokio::task::spawn_blocking(move || {
            second.join().unwrap();
            first.join().unwrap();
        })
        .await
        .unwrap();
        // Every request was answered, so every connection was accepted; with both threads
        // gone their connections close. Bounded wait for the provider to see them close.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (closed, accepted) = {
                let seen = seen.lock().unwrap();
                (seen.closed.clone(), seen.accepted)
            };
            if closed.len() == accepted {
                // One connection per thread, each carrying that thread's two requests.
                assert_eq!(closed, vec![2, 2]);
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "connections not closed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
