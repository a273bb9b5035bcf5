//! Connection limits (issue 9, point 3) and admin hardening, end to end: connections that send
//! nothing (plain TCP, an HTTP/2 preface, an idle keep-alive) are closed after
//! `limits.idle_timeout_ms` on both listeners while clients are still served and requests in
//! progress finish; at `max_connections` new connections are closed and open ones served; off
//! loopback the admin read endpoints need the token, and a refused admin request is logged.
//! The serving threads: as many as `runtime.worker_threads` says, every one of them serving;
//! on SIGTERM new connections are refused at once and a request in progress still finishes.
//!
//! payproxy runs as a child process (`target/debug/payproxy`, built by `cargo build -p
//! payproxy`): its descriptors are its own, and its log is a file the tests read.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use payproxy_e2e::chaos::{eventually, metric, ChildProxy, ReservedPort};
use payproxy_e2e::{base_config, write_config, Faults, HttpClient, Simulator};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Silent connections opened on each listener by the flood test.
const SILENT: usize = 2_000;

/// Generous bound for anything the proxy should do "soon" on a loaded machine.
const SOON: Duration = Duration::from_secs(30);

/// payproxy as a child process on `config` (with reserved loopback ports), and its log file.
struct Proxy {
    child: ChildProxy,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// Start on `config`, whose listener and admin addresses are set here. `admin_ip` is what
    /// the admin listener binds; the tests always connect to it through 127.0.0.1.
    async fn start(mut config: Value, admin_ip: &str) -> Proxy {
        let (listen, admin) = (ReservedPort::new(), ReservedPort::new());
        config["listeners"] = json!([{ "addr": listen.addr().to_string() }]);
        // The reservation is on 127.0.0.1; a wildcard admin listener binds beside it too.
        let admin_port = admin.addr().port();
        config["admin"]["addr"] = json!(format!("{admin_ip}:{admin_port}"));
        config["state"] = json!({ "kind": "memory" });
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), &config);
        let log = dir.path().join("payproxy.log");
        let child = ChildProxy::start(&path, &log, listen, admin).await;
        Proxy {
            child,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `payproxy_connections_open` of one listener (`storefront`, `admin`).
    async fn open_connections(&self, listener: &str) -> f64 {
        self.metric("payproxy_connections_open", listener).await
    }

    /// Metric `name` of one listener (`storefront`, `admin`). Asked on a connection of its
    /// own, closed after the answer, so the admin listener's count holds only that one.
    /// Fails when the series does not exist.
    async fn metric(&self, name: &str, listener: &str) -> f64 {
        let url = format!("http://{}/metrics", self.child.admin);
        let reply = HttpClient::default()
            .send(Method::GET, &url, &[("connection", "close")], Bytes::new())
            .await;
        reply.assert_status(200);
        let text = String::from_utf8_lossy(&reply.body);
        metric(&text, name, &[("listener", listener)])
            .unwrap_or_else(|| panic!("no {name} for listener {listener}:\n{text}"))
    }
}

/// A config over simulated provider `a` with `limits` and `admin` (without its address).
fn config(sim: &Simulator, limits: Value, admin: Value) -> Value {
    let mut config = base_config(sim, &["a"]);
    config["limits"] = limits;
    config["admin"] = admin;
    config
}

/// Open `n` TCP connections to `addr` that send nothing (a hundred connects at a time).
async fn open_silent(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(n);
    while streams.len() < n {
        let mut batch = JoinSet::new();
        for _ in 0..(n - streams.len()).min(100) {
            batch.spawn(tokio::time::timeout(SOON, TcpStream::connect(addr)));
        }
        while let Some(joined) = batch.join_next().await {
            let stream = joined
                .expect("connect task")
                .expect("connect within the bound")
                .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
            streams.push(stream);
        }
    }
    streams
}

/// Whether the peer closes `stream` (end of stream or reset) within `within`; whatever it
/// sends before is skipped.
async fn closed_by_peer(mut stream: TcpStream, within: Duration) -> bool {
    let read_to_end = async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read_to_end).await.is_ok()
}

/// How many of `streams` the peer closes within `within` (all waited on at once).
async fn count_closed(streams: Vec<TcpStream>, within: Duration) -> usize {
    let mut waits = JoinSet::new();
    for stream in streams {
        waits.spawn(closed_by_peer(stream, within));
    }
    let mut closed = 0;
    while let Some(joined) = waits.join_next().await {
        closed += usize::from(joined.expect("wait task"));
    }
    closed
}

fn get(addr: SocketAddr, path: &str) -> Request<Empty<Bytes>> {
    Request::builder()
        .method(Method::GET)
        .uri(path)
        .header("host", addr.to_string())
        .body(Empty::new())
        .unwrap()
}

/// An HTTP/1.1 keep-alive connection to `addr`: its request sender, and its connection task,
/// which ends when the connection closes.
async fn h1_connection(
    addr: SocketAddr,
) -> (
    http1::SendRequest<Empty<Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    (sender, tokio::spawn(conn))
}

/// Send `request` on `sender` and return the status, the body read to its end.
async fn status_h1(
    sender: &mut http1::SendRequest<Empty<Bytes>>,
    request: Request<Empty<Bytes>>,
) -> StatusCode {
    let exchange = async {
        // A request sent on a keep-alive connection before its task has taken the previous
        // answer's end fails at once with "connection was not ready" (seen on a loaded
        // machine). Waiting for readiness is what hyper asks of a sender.
        sender
            .ready()
            .await
            .expect("connection ready for a request");
        let response = sender.send_request(request).await.expect("response");
        let status = response.status();
        response.into_body().collect().await.expect("body");
        status
    };
    tokio::time::timeout(SOON, exchange)
        .await
        .expect("answered in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_on_both_listeners_are_closed_while_clients_are_served() {
    // The test's own end of every silent connection is a descriptor here.
    let limit = rlimit::increase_nofile_limit(u64::MAX).expect("raise the open file limit");
    assert!(
        limit >= 2 * SILENT as u64 + 512,
        "this test holds {} sockets but may open only {limit} files",
        2 * SILENT
    );
    let sim = Simulator::start(&["a"]).await.expect("simulator starts");
    // Long enough to open 4,000 connections on a loaded machine (seconds) and use the proxy.
    let limits = json!({ "idle_timeout_ms": 10_000, "max_connections": 3 * SILENT });
    let admin = json!({ "max_connections": 3 * SILENT });
    let proxy = Proxy::start(config(&sim, limits, admin), "127.0.0.1").await;

    let (storefront, admin) = tokio::join!(
        open_silent(proxy.child.listen, SILENT),
        open_silent(proxy.child.admin, SILENT)
    );
    eventually(
        SOON,
        "every silent connection accepted and open",
        async || {
            proxy.open_connections("storefront").await >= SILENT as f64
                && proxy.open_connections("admin").await >= SILENT as f64
        },
    )
    .await;

    // New clients on new connections, on both listeners, while the silent ones are open.
    HttpClient::default()
        .get(&proxy.child.url("/echo"))
        .await
        .assert_status(200);
    HttpClient::default()
        .get(&format!("http://{}/admin/status", proxy.child.admin))
        .await
        .assert_status(200);

    let (storefront_closed, admin_closed) =
        tokio::join!(count_closed(storefront, SOON), count_closed(admin, SOON));
    assert_eq!(
        storefront_closed, SILENT,
        "storefront silent connections closed"
    );
    assert_eq!(admin_closed, SILENT, "admin silent connections closed");
    eventually(
        SOON,
        "no storefront connection left open; on admin only the one asking",
        async || {
            proxy.open_connections("storefront").await == 0.0
                && proxy.open_connections("admin").await <= 1.0
        },
    )
    .await;
}

/// The client connection preface of HTTP/2 and an empty SETTINGS frame.
const H2_PREFACE_AND_SETTINGS: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// Send only the HTTP/2 preface, then nothing: whether the proxy closed the connection within
/// `within`, and whether it sent a GOAWAY frame before.
async fn h2_preface_only(addr: SocketAddr, within: Duration) -> (bool, bool) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(H2_PREFACE_AND_SETTINGS)
        .await
        .expect("send preface");
    let mut received = Vec::new();
    let read_to_end = async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    let closed = tokio::time::timeout(within, read_to_end).await.is_ok();
    // Frames: 3-byte length, 1-byte type (GOAWAY = 7), flags, stream id, payload.
    let mut goaway = false;
    let mut at = 0;
    while at + 9 <= received.len() {
        let length = usize::from(received[at]) << 16
            | usize::from(received[at + 1]) << 8
            | usize::from(received[at + 2]);
        goaway |= received[at + 3] == 7;
        at += 9 + length;
    }
    (closed, goaway)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_but_requests_in_progress_finish() {
    let sim = Simulator::start(&["a"]).await.expect("simulator starts");
    let limits = json!({ "idle_timeout_ms": 1_000 });
    let proxy = Proxy::start(config(&sim, limits, json!({})), "127.0.0.1").await;
    let listen = proxy.child.listen;

    // An HTTP/2 client that sends its preface and nothing more.
    let preface_only = h2_preface_only(listen, SOON);

    // An HTTP/1.1 keep-alive connection, idle after one request. The sender stays alive, so
    // only the proxy can end the connection.
    let keep_alive = async {
        let (mut sender, conn) = h1_connection(listen).await;
        assert_eq!(status_h1(&mut sender, get(listen, "/echo")).await, 200);
        let ended = tokio::time::timeout(SOON, conn).await;
        drop(sender);
        ended.is_ok()
    };

    // Requests whose provider answers after longer than the idle timeout (plus the close
    // grace): HTTP/1.1 and HTTP/2, each on a connection with no other traffic.
    sim.set_faults("a", Faults::latency(2_500));
    let slow_h1 = async {
        let (mut sender, _conn) = h1_connection(listen).await;
        status_h1(&mut sender, get(listen, "/slow")).await
    };
    let slow_h2 = async {
        let stream = TcpStream::connect(listen).await.expect("connect");
        let (mut sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
        tokio::spawn(conn);
        let request = Request::builder()
            .uri(format!("http://{listen}/slow"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let exchange = async {
            let response = sender.send_request(request).await.expect("h2 response");
            let status = response.status();
            response.into_body().collect().await.expect("h2 body");
            status
        };
        tokio::time::timeout(SOON, exchange)
            .await
            .expect("answered in time")
    };

    let ((closed, goaway), keep_alive_closed, slow_h1, slow_h2) =
        tokio::join!(preface_only, keep_alive, slow_h1, slow_h2);
    assert!(
        closed,
        "an HTTP/2 connection with only its preface is closed"
    );
    assert!(goaway, "and told so with a GOAWAY first");
    assert!(keep_alive_closed, "an idle keep-alive connection is closed");
    assert_eq!(slow_h1, 200, "an HTTP/1.1 request in progress is not cut");
    assert_eq!(slow_h2, 200, "an HTTP/2 request in progress is not cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_new_connections_are_closed_and_open_ones_served() {
    const CAP: usize = 20;
    let sim = Simulator::start(&["a"]).await.expect("simulator starts");
    // The default idle timeout (60 s): nothing here is closed for idling.
    let limits = json!({ "max_connections": CAP });
    let proxy = Proxy::start(config(&sim, limits, json!({})), "127.0.0.1").await;
    let listen = proxy.child.listen;

    let (mut keep_alive, _conn) = h1_connection(listen).await;
    assert_eq!(status_h1(&mut keep_alive, get(listen, "/echo")).await, 200);
    let mut silent = open_silent(listen, CAP - 1).await;
    eventually(SOON, "the storefront at its cap", async || {
        proxy.open_connections("storefront").await == CAP as f64
    })
    .await;

    let extra = TcpStream::connect(listen)
        .await
        .expect("the kernel accepts");
    assert!(
        closed_by_peer(extra, SOON).await,
        "a connection over the cap is closed at once"
    );
    let refused = proxy
        .metric("payproxy_connections_refused_total", "storefront")
        .await;
    assert!(refused >= 1.0, "refusals counted: {refused}");
    assert_eq!(
        status_h1(&mut keep_alive, get(listen, "/echo")).await,
        200,
        "the open keep-alive connection is still served"
    );
    eventually(SOON, "the refusal logged", async || {
        proxy.log().contains("connection limit reached")
    })
    .await;

    // A slot freed is a slot served.
    drop(silent.pop());
    eventually(SOON, "one connection below the cap", async || {
        proxy.open_connections("storefront").await == (CAP - 1) as f64
    })
    .await;
    HttpClient::default()
        .get(&proxy.child.url("/echo"))
        .await
        .assert_status(200);
}

const TOKEN: &str = "adm1n-t0ken-e2e";

/// GET `path` on the admin listener with `headers`.
async fn admin_get(proxy: &Proxy, path: &str, headers: &[(&str, &str)]) -> payproxy_e2e::Reply {
    let url = format!("http://{}{path}", proxy.child.admin);
    HttpClient::default()
        .send(Method::GET, &url, headers, Bytes::new())
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_the_admin_reads_need_the_token_and_refusals_are_logged() {
    let sim = Simulator::start(&["a"]).await.expect("simulator starts");
    let admin = json!({ "token": TOKEN });
    // Bound on every interface; the test connects through 127.0.0.1 only.
    let proxy = Proxy::start(config(&sim, json!({}), admin), "0.0.0.0").await;
    let bearer = format!("Bearer {TOKEN}");
    let wrong = "Bearer wrong-guess-5c1e";

    for path in ["/metrics", "/admin/status"] {
        for headers in [vec![], vec![("authorization", wrong)]] {
            let reply = admin_get(&proxy, path, &headers).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path} {headers:?}");
            assert_eq!(reply.json()["error"]["code"], "unauthorized", "{path}");
        }
        let reply = admin_get(&proxy, path, &[("authorization", &bearer)]).await;
        reply.assert_status(200);
    }
    let reload = format!("http://{}/admin/reload", proxy.child.admin);
    let reply = HttpClient::default()
        .send(Method::POST, &reload, &[], Bytes::new())
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    eventually(SOON, "every refusal logged", async || {
        let log = proxy.log();
        let refusals: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("admin request refused"))
            .collect();
        refusals.len() >= 5
            && refusals.iter().all(|l| l.contains("peer=127.0.0.1:"))
            && ["/metrics", "/admin/status", "/admin/reload"]
                .iter()
                .all(|path| refusals.iter().any(|l| l.contains(path)))
    })
    .await;
    let log = proxy.log();
    assert!(
        !log.contains("wrong-guess-5c1e"),
        "a given token is never logged:\n{log}"
    );
    assert!(!log.contains(TOKEN), "nor the real one:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_loopback_the_admin_reads_stay_open() {
    let sim = Simulator::start(&["a"]).await.expect("simulator starts");
    let admin = json!({ "token": TOKEN });
    let proxy = Proxy::start(config(&sim, json!({}), admin), "127.0.0.1").await;
    for path in ["/metrics", "/admin/status"] {
        admin_get(&proxy, path, &[]).await.assert_status(200);
    }
    let reload = format!("http://{}/admin/reload", proxy.child.admin);
    let reply = HttpClient::default()
        .send(Method::POST, &reload, &[], Bytes::new())
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "reload still needs it"
    );
}

#[tokio::test]
async fn worker_threads_are_one_per_cpu_unless_the_config_says_how_many() {
    let sim = Simulator::start(&["a"]).await.expect("simulator starts");
    let cpus = std::thread::available_parallelism().unwrap().get();
    for (setting, expected) in [(None, cpus), (Some(3), 3)] {
        let mut config = config(&sim, json!({}), json!({}));
        if let Some(threads) = setting {
            config["runtime"] = json!({ "worker_threads": threads });
        }
        let proxy = Proxy::start(config, "127.0.0.1").await;
        let url = format!("http://{}/metrics", proxy.child.admin);
        let reply = HttpClient::default()
            .send(Method::GET, &url, &[], Bytes::new())
            .await;
        reply.assert_status(200);
        let text = String::from_utf8_lossy(&reply.body);
        assert_eq!(
            metric(&text, "payproxy_runtime_worker_threads", &[]),
            Some(expected as f64),
            "runtime.worker_threads = {setting:?}"
        );
        // Thread names are read from /proc.
        #[cfg(target_os = "linux")]
        assert_eq!(
            serving_threads(proxy.child.pid()),
            expected,
            "threads named worker-N, runtime.worker_threads = {setting:?}"
        );
        // Connections at once from more clients than there are threads are all served.
        let mut clients = JoinSet::new();
        for _ in 0..4 * expected {
            let listen = proxy.child.listen;
            clients.spawn(async move {
                let (mut sender, _conn) = h1_connection(listen).await;
                status_h1(&mut sender, get(listen, "/echo")).await
            });
        }
        while let Some(status) = clients.join_next().await {
            assert_eq!(status.expect("client task"), 200);
        }
    }
}

/// How many of process `pid`'s threads are serving threads (named `worker-N`).
#[cfg(target_os = "linux")]
fn serving_threads(pid: u32) -> usize {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the proxy's threads");
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end().starts_with("worker-"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sigterm_new_connections_are_refused_and_requests_in_progress_finish() {
    // The provider is this test: it holds the request until told to answer.
    let provider = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = Simulator::start(&["a"]).await.expect("simulator starts");
    let mut config = config(&sim, json!({}), json!({}));
    config["providers"]["a"]["url"] = json!(format!("http://{}", provider.local_addr().unwrap()));
    config["runtime"] = json!({ "worker_threads": 2 });
    let mut proxy = Proxy::start(config, "127.0.0.1").await;
    let listen = proxy.child.listen;

    let (mut sender, _conn) = h1_connection(listen).await;
    let in_progress =
        tokio::spawn(async move { status_h1(&mut sender, get(listen, "/held")).await });
    let (mut held, _) = tokio::time::timeout(SOON, provider.accept())
        .await
        .expect("the request reaches the provider in time")
        .expect("accept");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(SOON, held.read(&mut byte)).await;
        assert_eq!(read.expect("request head in time").expect("read"), 1);
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"GET /held "),
        "{}",
        String::from_utf8_lossy(&head)
    );

    proxy.child.terminate();
    eventually(SOON, "new connections are refused", async || {
        matches!(
            TcpStream::connect(listen).await,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
        )
    })
    .await;
    assert!(
        !in_progress.is_finished(),
        "the request in progress is still waiting for its provider"
    );
    held.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nheld")
        .await
        .expect("answer the held request");
    let status = tokio::time::timeout(SOON, in_progress)
        .await
        .expect("the request in progress is answered in time")
        .expect("client task");
    assert_eq!(status, 200, "the request in progress finished");
    let exit = proxy.child.wait_exit(SOON).await;
    assert!(
        exit.success(),
        "payproxy exits cleanly after the drain: {exit}"
    );
}
