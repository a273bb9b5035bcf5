//! A recording upstream: a tiny HTTP server on 127.0.0.1:0 that keeps every request it gets
//! (method, path and query, headers, body bytes) and answers each with one fixed response.
//! Tests use it to see exactly what payproxy sent, and to make a provider answer garbage.
//! A held recorder keeps every request waiting for its answer until the test releases it:
//! a request in flight for exactly as long as the test needs, whatever the machine's speed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The fixed answer.
#[derive(Debug, Clone)]
struct Canned {
    status: StatusCode,
    content_type: String,
    body: Bytes,
    /// Answer with `idempotent-replayed: true`, as Stripe marks the replay of an earlier
    /// answer to a retried request ([`Recorder::mark_replays`]).
    replayed: Arc<AtomicBool>,
}

/// A running recorder; stops when dropped.
pub struct Recorder {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    replayed: Arc<AtomicBool>,
    /// `true` once answers may go out.
    released: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Recorder {
    /// Listen on 127.0.0.1:0 and answer every request with `status`, `content_type`, `body`.
    pub async fn start(status: u16, content_type: &str, body: impl Into<Bytes>) -> Recorder {
        Recorder::start_with(status, content_type, body.into(), true).await
    }

    /// Like [`Recorder::start`], but every request (recorded on arrival) waits for its
    /// answer until [`Recorder::release`].
    pub async fn start_held(status: u16, content_type: &str, body: impl Into<Bytes>) -> Recorder {
        Recorder::start_with(status, content_type, body.into(), false).await
    }

    async fn start_with(status: u16, content_type: &str, body: Bytes, released: bool) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let replayed = Arc::new(AtomicBool::new(false));
        let canned = Arc::new(Canned {
            status: StatusCode::from_u16(status).unwrap(),
            content_type: content_type.to_string(),
            body,
            replayed: replayed.clone(),
        });
        let (released, release) = watch::channel(released);
        let task = tokio::spawn(accept(listener, requests.clone(), canned, release));
        Recorder {
            addr,
            requests,
            replayed,
            released,
            task,
        }
    }

    /// From now on, answer as Stripe answers a retried request it replays
    /// (`idempotent-replayed: true`), or not.
    pub fn mark_replays(&self, replayed: bool) {
        self.replayed.store(replayed, Ordering::SeqCst);
    }

    /// Let the held answers (and every later one) go out.
    pub fn release(&self) {
        self.released.send_replace(true);
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything received so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(
    listener: TcpListener,
    requests: Arc<Mutex<Vec<Recorded>>>,
    canned: Arc<Canned>,
    release: watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        let (requests, canned, release) = (requests.clone(), canned.clone(), release.clone());
        let service = service_fn(move |req: Request<Incoming>| {
            let (requests, canned, mut release) =
                (requests.clone(), canned.clone(), release.clone());
            async move {
                let (parts, body) = req.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                requests.lock().unwrap().push(Recorded {
                    method: parts.method.to_string(),
                    path: parts
                        .uri
                        .path_and_query()
                        .map(|p| p.as_str().to_string())
                        .unwrap_or_default(),
                    headers: parts.headers,
                    body,
                });
                // The sender lives as long as the recorder, which aborts this task first.
                let _ = release.wait_for(|released| *released).await;
                let mut response = Response::builder()
                    .status(canned.status)
                    .header("content-type", canned.content_type.as_str());
                if canned.replayed.load(Ordering::SeqCst) {
                    response = response.header("idempotent-replayed", "true");
                }
                let response = response.body(Full::new(canned.body.clone())).unwrap();
                Ok::<_, Infallible>(response)
            }
        });
        // Owned by the JoinSet: aborting the accept task drops (and aborts) the connections.
        connections.spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
