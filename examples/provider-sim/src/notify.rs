//! Outbound provider notifications (webhooks): where to send them, sending them with retries,
//! and the log of everything sent.
//!
//! A dialect builds a [`Notice`] (its own body, signature headers and query) and hands it to
//! [`Provider::notify`](crate::provider::Provider::notify); the notice is delivered in the
//! background as `POST {url}{?query}` while the request that caused it is answered. A delivery
//! that fails to connect or gets a non-2xx answer is retried ([`ATTEMPTS`] attempts in all,
//! [`FIRST_BACKOFF`] doubling in between). Every notice and every attempt is logged
//! ([`SentWebhook`]), whether it reached anyone or not.
//!
//! Webhooks are off until configured (`POST /__sim/webhooks` or
//! [`Simulator::set_webhooks`](crate::Simulator::set_webhooks)): a provider without a webhook
//! URL sends nothing at all, like a provider that drops its notifications.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize, Serializer};

/// Deliveries of one notice, the first included.
pub(crate) const ATTEMPTS: usize = 5;
/// Wait before the first retry; doubles after each failed attempt.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// One delivery attempt gives up after this long (counted as an error).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// One notification a dialect wants sent: body and headers exactly as the receiver verifies
/// them (signature included). `query` is appended to the configured URL.
#[derive(Clone, Debug)]
pub(crate) struct Notice {
    /// The dialect that built it (`adyen`, `stripe`, `pix` …), for the log.
    pub dialect: &'static str,
    /// Raw query without `?`, appended to the configured URL.
    pub query: Option<String>,
    /// Header names and values; `content-type: application/json` is added when absent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[cfg(test)]
impl Notice {
    /// The value of header `name` (as built, lower case), if the notice has it.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One delivery attempt of a notice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookAttempt {
    /// The receiver answered with this HTTP status (`{"status": 200}`).
    Status(u16),
    /// No answer: connection refused, timeout … (`{"error": "…"}`).
    Error(String),
}

impl WebhookAttempt {
    /// Whether this attempt delivered the notice (a 2xx answer).
    pub fn delivered(&self) -> bool {
        matches!(self, WebhookAttempt::Status(status) if (200..300).contains(status))
    }
}

/// A notice the simulator sent (or is still sending), with its delivery attempts so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SentWebhook {
    /// The dialect that built it (`adyen`, `stripe` …).
    pub dialect: String,
    /// The query appended to the webhook URL, without `?`.
    pub query: Option<String>,
    /// Headers as sent (before `content-type` is defaulted).
    pub headers: Vec<(String, String)>,
    /// The body as sent; `GET /__sim/webhooks` shows it as a (lossy) UTF-8 string.
    #[serde(serialize_with = "utf8")]
    pub body: Vec<u8>,
    /// Delivery attempts, oldest first; empty while the first one is pending (or delayed).
    pub attempts: Vec<WebhookAttempt>,
}

impl SentWebhook {
    /// Whether some attempt got a 2xx answer.
    pub fn delivered(&self) -> bool {
        self.attempts.iter().any(WebhookAttempt::delivered)
    }

    /// The body as JSON, when it is (a test helper).
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn utf8<S: Serializer>(body: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&String::from_utf8_lossy(body))
}

/// `POST /__sim/webhooks`: where notifications go. `url: null` turns them off.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Receiver, e.g. `http://127.0.0.1:8080/webhooks/sim-eu`; `None`: send nothing.
    pub url: Option<String>,
    /// The dialect's signing secret (Adyen: the hex HMAC key; Stripe: the `whsec_…` secret).
    pub secret: String,
    /// Delay every notice's first delivery by this long (default 0), for late events.
    pub delay_ms: u64,
}

/// A provider's webhook configuration and log, shared with its delivery tasks.
#[derive(Debug)]
pub(crate) struct Webhooks {
    inner: Arc<Mutex<State>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

#[derive(Debug, Default)]
struct State {
    settings: WebhookSettings,
    sent: Vec<SentWebhook>,
    /// Bumped by a reset: deliveries of an older generation stop and log nothing more.
    generation: u64,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Poisoning only follows a panic in this module; the log is still usable.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Webhooks {
    pub(crate) fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(ATTEMPT_TIMEOUT));
        Webhooks {
            inner: Arc::default(),
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    pub(crate) fn settings(&self) -> WebhookSettings {
        lock(&self.inner).settings.clone()
    }

    pub(crate) fn set(&self, settings: WebhookSettings) {
        lock(&self.inner).settings = settings;
    }

    /// The signing secret while webhooks are on.
    pub(crate) fn secret(&self) -> Option<String> {
        let state = lock(&self.inner);
        state
            .settings
            .url
            .as_ref()
            .map(|_| state.settings.secret.clone())
    }

    pub(crate) fn sent(&self) -> Vec<SentWebhook> {
        lock(&self.inner).sent.clone()
    }

    /// Deliveries in flight (and their retries) stop; settings and log stay.
    pub(crate) fn abandon(&self) {
        lock(&self.inner).generation += 1;
    }

    /// Settings off, log empty, deliveries in flight abandoned.
    pub(crate) fn reset(&self) {
        let mut state = lock(&self.inner);
        state.settings = WebhookSettings::default();
        state.sent.clear();
        state.generation += 1;
    }

    /// Log `notice` and deliver it in the background, first after `delay` plus the configured
    /// delay. Nothing happens while webhooks are off, or outside a Tokio runtime.
    pub(crate) fn send(&self, notice: Notice, delay: Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("notification dropped: not on a Tokio runtime");
            return;
        };
        let (url, index, generation, delay) = {
            let mut state = lock(&self.inner);
            let Some(url) = state.settings.url.clone() else {
                return;
            };
            let url = match notice.query.as_deref() {
                None | Some("") => url,
                Some(query) if url.contains('?') => format!("{url}&{query}"),
                Some(query) => format!("{url}?{query}"),
            };
            state.sent.push(SentWebhook {
                dialect: notice.dialect.to_owned(),
                query: notice.query.clone(),
                headers: notice.headers.clone(),
                body: notice.body.clone(),
                attempts: Vec::new(),
            });
            let delay = delay + Duration::from_millis(state.settings.delay_ms);
            (url, state.sent.len() - 1, state.generation, delay)
        };
        let delivery = Delivery {
            state: Arc::clone(&self.inner),
            client: self.client.clone(),
            url,
            index,
            generation,
            notice,
        };
        runtime.spawn(delivery.run(delay));
    }
}

/// One notice on its way.
struct Delivery {
    state: Arc<Mutex<State>>,
    client: Client<HttpConnector, Full<Bytes>>,
    url: String,
    index: usize,
    generation: u64,
    notice: Notice,
}

impl Delivery {
    async fn run(self, delay: Duration) {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            if self.abandoned() {
                return;
            }
            let result = self.attempt().await;
            let delivered = result.delivered();
            tracing::info!(
                dialect = self.notice.dialect,
                url = %self.url,
                attempt,
                result = ?result,
                "notification"
            );
            {
                let mut state = lock(&self.state);
                if state.generation != self.generation {
                    return;
                }
                if let Some(sent) = state.sent.get_mut(self.index) {
                    sent.attempts.push(result);
                }
            }
            if delivered {
                return;
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
    }

    fn abandoned(&self) -> bool {
        lock(&self.state).generation != self.generation
    }

    async fn attempt(&self) -> WebhookAttempt {
        let request = match self.request() {
            Ok(request) => request,
            Err(error) => return WebhookAttempt::Error(error),
        };
        let exchange = async {
            let response = self.client.request(request).await?;
            let status = response.status().as_u16();
            // Drain the answer so the connection can be reused.
            let _ = response.into_body().collect().await;
            Ok::<u16, hyper_util::client::legacy::Error>(status)
        };
        match tokio::time::timeout(ATTEMPT_TIMEOUT, exchange).await {
            Ok(Ok(status)) => WebhookAttempt::Status(status),
            Ok(Err(error)) => WebhookAttempt::Error(error_chain(&error)),
            Err(_) => WebhookAttempt::Error(format!("no answer within {ATTEMPT_TIMEOUT:?}")),
        }
    }

    fn request(&self) -> Result<Request<Full<Bytes>>, String> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(&self.url)
            .body(Full::new(Bytes::from(self.notice.body.clone())))
            .map_err(|e| format!("invalid webhook URL {:?}: {e}", self.url))?;
        let headers = request.headers_mut();
        for (name, value) in &self.notice.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| format!("invalid header name {name:?}: {e}"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|e| format!("invalid value of header {name}: {e}"))?;
            headers.append(name, value);
        }
        if !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        Ok(request)
    }
}

/// An error with its causes, `a: b: c`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper::{Response, StatusCode};
    use hyper_util::rt::TokioIo;
    use hyper_util::server::conn::auto;
    use tokio::net::TcpListener;

    use super::*;

    /// What the receiver saw of one request.
    #[derive(Debug, Clone)]
    struct Received {
        uri: String,
        signature: Option<String>,
        content_type: Option<String>,
        body: Vec<u8>,
    }

    /// A receiver on 127.0.0.1:0 that answers `fail_first` requests with 500, then 200.
    async fn receiver(fail_first: usize) -> (String, Arc<Mutex<Vec<Received>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let log: Arc<Mutex<Vec<Received>>> = Arc::default();
        let seen = Arc::new(AtomicUsize::new(0));
        let shared = Arc::clone(&log);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (log, seen) = (Arc::clone(&shared), Arc::clone(&seen));
                let service = service_fn(move |req: Request<Incoming>| {
                    let (log, seen) = (Arc::clone(&log), Arc::clone(&seen));
                    async move {
                        let header = |name: &str| {
                            req.headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned)
                        };
                        let (signature, content_type) =
                            (header("x-signature"), header("content-type"));
                        let uri = req.uri().to_string();
                        let body = req.into_body().collect().await?.to_bytes().to_vec();
                        log.lock().unwrap().push(Received {
                            uri,
                            signature,
                            content_type,
                            body,
                        });
                        let n = seen.fetch_add(1, Ordering::SeqCst);
                        let status = if n < fail_first {
                            StatusCode::INTERNAL_SERVER_ERROR
                        } else {
                            StatusCode::OK
                        };
                        let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
                        *response.status_mut() = status;
                        Ok::<_, hyper::Error>(response)
                    }
                });
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (format!("http://{addr}/webhooks/sim-eu"), log)
    }

    fn notice() -> Notice {
        Notice {
            dialect: "adyen",
            query: Some("a=1".into()),
            headers: vec![("x-signature".into(), "sig".into())],
            body: br#"{"live":"false"}"#.to_vec(),
        }
    }

    fn settings(url: &str) -> WebhookSettings {
        WebhookSettings {
            url: Some(url.to_owned()),
            secret: "s3cret".into(),
            delay_ms: 0,
        }
    }

    /// Wait until the log's first notice has `n` attempts.
    async fn attempts(webhooks: &Webhooks, n: usize) -> SentWebhook {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let sent = webhooks.sent();
            if let Some(first) = sent.first().filter(|s| s.attempts.len() >= n) {
                return first.clone();
            }
            assert!(Instant::now() < deadline, "no {n} attempts: {sent:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn off_until_configured() {
        let webhooks = Webhooks::new();
        assert_eq!(webhooks.secret(), None);
        webhooks.send(notice(), Duration::ZERO);
        assert!(webhooks.sent().is_empty());
        webhooks.set(settings("http://127.0.0.1:1/x"));
        assert_eq!(webhooks.secret().as_deref(), Some("s3cret"));
        webhooks.reset();
        assert_eq!(webhooks.secret(), None);
    }

    #[tokio::test]
    async fn delivers_with_headers_query_and_body() {
        let (url, received) = receiver(0).await;
        let webhooks = Webhooks::new();
        webhooks.set(settings(&url));
        webhooks.send(notice(), Duration::ZERO);
        let sent = attempts(&webhooks, 1).await;
        assert_eq!(sent.attempts, vec![WebhookAttempt::Status(200)]);
        assert!(sent.delivered());
        assert_eq!(sent.header("X-Signature"), Some("sig"));
        let received = received.lock().unwrap().clone();
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].uri, "/webhooks/sim-eu?a=1");
        assert_eq!(received[0].signature.as_deref(), Some("sig"));
        assert_eq!(
            received[0].content_type.as_deref(),
            Some("application/json")
        );
        assert_eq!(received[0].body, br#"{"live":"false"}"#);
        let listed = serde_json::to_value(webhooks.sent()).unwrap();
        assert_eq!(
            listed,
            serde_json::json!([{
                "dialect": "adyen",
                "query": "a=1",
                "headers": [["x-signature", "sig"]],
                "body": "{\"live\":\"false\"}",
                "attempts": [{"status": 200}],
            }])
        );
    }

    #[tokio::test]
    async fn retries_non_2xx_with_backoff() {
        let (url, received) = receiver(2).await;
        let webhooks = Webhooks::new();
        webhooks.set(settings(&url));
        let started = Instant::now();
        webhooks.send(notice(), Duration::ZERO);
        let sent = attempts(&webhooks, 3).await;
        // 100 ms, then 200 ms between the attempts.
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(
            sent.attempts,
            vec![
                WebhookAttempt::Status(500),
                WebhookAttempt::Status(500),
                WebhookAttempt::Status(200)
            ]
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(webhooks.sent()[0].attempts.len(), 3, "no retry after a 200");
        assert_eq!(received.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn connection_errors_are_retried_then_given_up() {
        // A port that was just free: connections are refused.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let webhooks = Webhooks::new();
        webhooks.set(settings(&format!("http://{addr}/webhooks/x")));
        webhooks.send(notice(), Duration::ZERO);
        let sent = attempts(&webhooks, ATTEMPTS).await;
        assert!(sent
            .attempts
            .iter()
            .all(|a| matches!(a, WebhookAttempt::Error(_))));
        assert!(!sent.delivered());
        tokio::time::sleep(Duration::from_millis(1700)).await;
        assert_eq!(webhooks.sent()[0].attempts.len(), ATTEMPTS);
    }

    #[tokio::test]
    async fn delay_holds_the_first_delivery_and_reset_abandons_it() {
        let (url, received) = receiver(0).await;
        let webhooks = Webhooks::new();
        webhooks.set(WebhookSettings {
            delay_ms: 200,
            ..settings(&url)
        });
        let started = Instant::now();
        webhooks.send(notice(), Duration::ZERO);
        let sent = attempts(&webhooks, 1).await;
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(sent.delivered());

        webhooks.set(settings(&url));
        webhooks.send(notice(), Duration::from_millis(200));
        assert_eq!(webhooks.sent().len(), 2);
        webhooks.reset();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(webhooks.sent().is_empty());
        assert_eq!(received.lock().unwrap().len(), 1, "abandoned after reset");
    }
}
