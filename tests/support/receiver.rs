//! A merchant's webhook endpoint for the tests: an HTTP server on a reserved loopback port
//! that logs every delivery (arrival time, headers, body) and answers with a status the test
//! sets; it can be taken down (connections refused, open ones dropped) and brought back up
//! on the same port. Stripe-style signatures are checked here with the test's own HMAC, not
//! payproxy's code.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::chaos::ReservedPort;
use crate::Recorded;

/// One delivery as it arrived, and what it was answered.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub request: Recorded,
    pub status: u16,
    /// Arrival, Unix milliseconds.
    pub at_ms: u64,
}

impl Delivery {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.request.body).expect("a JSON event body")
    }

    /// The event id (`id`) and type (`type`).
    pub fn id_and_type(&self) -> (String, String) {
        let v = self.json();
        (
            v["id"].as_str().unwrap_or_default().to_string(),
            v["type"].as_str().unwrap_or_default().to_string(),
        )
    }

    /// Whether `Stripe-Signature` verifies with `secret` (HMAC-SHA256 over `t.body`,
    /// timestamp within 300 s of now), computed here independently of payproxy.
    pub fn stripe_signature_ok(&self, secret: &str) -> bool {
        let Some(header) = self.request.header("stripe-signature") else {
            return false;
        };
        let mut t = None;
        let mut v1 = Vec::new();
        for part in header.split(',') {
            match part.split_once('=') {
                Some(("t", value)) => t = value.parse::<i64>().ok(),
                Some(("v1", value)) => v1.push(value.to_string()),
                _ => {}
            }
        }
        let Some(t) = t else { return false };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        if (now - t).abs() > 300 {
            return false;
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(&self.request.body);
        let expected = hex::encode(mac.finalize().into_bytes());
        v1.contains(&expected)
    }
}

/// A webhook endpoint; stops when dropped.
pub struct Receiver {
    port: ReservedPort,
    log: Arc<Mutex<Vec<Delivery>>>,
    status: Arc<AtomicU16>,
    /// While true, deliveries are held unanswered (then answered 500).
    hold: Arc<watch::Sender<bool>>,
    task: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Up on a fresh reserved port, answering 200.
    pub fn start() -> Receiver {
        let mut receiver = Receiver::down_on(ReservedPort::new());
        receiver.up();
        receiver
    }

    /// Down (connections refused) on `port`, answering 200 once up.
    pub fn down_on(port: ReservedPort) -> Receiver {
        Receiver {
            port,
            log: Arc::default(),
            status: Arc::new(AtomicU16::new(200)),
            hold: Arc::new(watch::channel(false).0),
            task: None,
        }
    }

    /// `http://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.port.addr())
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.port.addr()
    }

    /// Answer every delivery from now on with `status`.
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// Hold every delivery from now on unanswered until [`Receiver::hold`]`(false)`, then
    /// answer it 500 (it is logged, on arrival, as answered 500).
    pub fn hold(&self, on: bool) {
        self.hold.send_replace(on);
    }

    /// Accept connections (again).
    pub fn up(&mut self) {
        if self.task.is_some() {
            return;
        }
        let listener = self.port.listen();
        let (log, status, hold) = (self.log.clone(), self.status.clone(), self.hold.clone());
        self.task = Some(tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let (log, status, hold) = (log.clone(), status.clone(), hold.clone());
                let service = service_fn(move |req: Request<Incoming>| {
                    let (log, status, mut hold) = (log.clone(), status.clone(), hold.subscribe());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|c| c.to_bytes())
                            .unwrap_or_default();
                        let held = *hold.borrow_and_update();
                        let code = if held {
                            500
                        } else {
                            status.load(Ordering::SeqCst)
                        };
                        let at_ms = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .unwrap()
                            .as_millis() as u64;
                        log.lock().unwrap().push(Delivery {
                            request: Recorded {
                                method: parts.method.to_string(),
                                path: parts.uri.path().to_string(),
                                headers: parts.headers,
                                body,
                            },
                            status: code,
                            at_ms,
                        });
                        if held {
                            // The sender lives as long as the receiver, which aborts this first.
                            let _ = hold.wait_for(|on| !*on).await;
                        }
                        let response = Response::builder()
                            .status(StatusCode::from_u16(code).unwrap())
                            .body(Full::new(Bytes::from_static(b"{}")))
                            .unwrap();
                        Ok::<_, Infallible>(response)
                    }
                });
                connections.spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }));
    }

    /// Refuse connections and drop the open ones (the accept task owns them).
    pub fn down(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Every delivery so far, in arrival order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.log.lock().unwrap().clone()
    }

    /// The deliveries answered 2xx.
    pub fn accepted(&self) -> Vec<Delivery> {
        self.deliveries()
            .into_iter()
            .filter(|d| (200..300).contains(&d.status))
            .collect()
    }

    /// Poll until `check` holds for the accepted deliveries (bounded); fails with them.
    pub async fn wait_accepted(
        &self,
        within: Duration,
        what: &str,
        check: impl Fn(&[Delivery]) -> bool,
    ) -> Vec<Delivery> {
        let deadline = Instant::now() + within;
        loop {
            let accepted = self.accepted();
            if check(&accepted) {
                return accepted;
            }
            assert!(
                Instant::now() < deadline,
                "{what} not seen within {within:?}; accepted: {:#?}",
                accepted
                    .iter()
                    .map(Delivery::id_and_type)
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.down();
    }
}

// ---- Stripe events as the tests read them ----

/// `config` with webhooks to `url` on its payment route (secret `secret`, inline or
/// `{"env": …}`), retried every 50–200 ms, polled often.
pub fn with_webhooks(mut config: Value, url: &str, secret: Value) -> Value {
    config["routes"][0]["webhooks"] = json!({
        "endpoints": [{ "url": url, "secret": secret }],
        "retry": { "initial_ms": 50, "max_ms": 200, "give_up_after_s": 600 },
        "timeout_ms": 2000,
    });
    config["webhook_delivery"] = json!({ "poll_ms": 20, "lease_ms": 5000 });
    config
}

pub fn object(d: &Delivery) -> Value {
    d.json()["data"]["object"].clone()
}

/// The payment an event is about: the intent's id, or a charge's `payment_intent`.
pub fn payment_of(d: &Delivery) -> String {
    let o = object(d);
    let id = match o["object"].as_str() {
        Some("charge") => &o["payment_intent"],
        _ => &o["id"],
    };
    id.as_str().unwrap_or_default().to_string()
}

/// The event types delivered for `payment`, in arrival order.
pub fn types_for(accepted: &[Delivery], payment: &str) -> Vec<String> {
    accepted
        .iter()
        .filter(|d| payment_of(d) == payment)
        .map(|d| d.id_and_type().1)
        .collect()
}
