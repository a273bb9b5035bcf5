//! Helpers for the failover, chaos and breaker tests: configs for payment routes over the
//! simulator's dialects, a TCP gate that makes a provider refuse connections, Prometheus text
//! lookups, payproxy as a child process (for `kill -9`), a storefront client that retries like
//! a real SDK, and ledger checks for double charges.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use provider_sim::Charge;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::{wasm, Faults, HttpClient, Reply, Simulator};

// ---------------------------------------------------------------------------------------
// Configs
// ---------------------------------------------------------------------------------------

/// The dialect plugins of the simulator's protocols, by the names providers refer to:
/// `stripe` (storefront and provider side), `adyen`, `grabpay`, `dana`, `ideal`, `pix`.
pub fn dialect_plugins() -> serde_json::Map<String, Value> {
    let plugin = |file: &str, config: Value| json!({ "path": wasm(file), "role": "dialect", "config": config });
    let mut plugins = serde_json::Map::new();
    plugins.insert("stripe".into(), plugin("dialect_stripe", json!({})));
    plugins.insert(
        "adyen".into(),
        plugin("dialect_adyen", json!({ "merchant_account": "ChaosECOM" })),
    );
    plugins.insert(
        "grabpay".into(),
        plugin("dialect_grabpay", json!({ "description": "chaos shop" })),
    );
    plugins.insert(
        "dana".into(),
        plugin("dialect_dana", json!({ "order_title": "chaos shop" })),
    );
    plugins.insert(
        "ideal".into(),
        plugin(
            "dialect_ideal",
            json!({ "default_description": "chaos shop" }),
        ),
    );
    plugins.insert(
        "pix".into(),
        plugin("dialect_pix", json!({ "pix_key": "pix@chaos.example" })),
    );
    plugins
}

/// The regional router plugin with `rules` as its config.
pub fn router_plugin(config: Value) -> Value {
    json!({ "path": wasm("router_regional"), "role": "router", "config": config, "on_error": "fail-open" })
}

/// A provider speaking `dialect` at `url`, with the credentials the simulated provider named
/// `sim_name` accepts (GrabPay signatures are per simulated provider).
pub fn provider(url: &str, sim_name: &str, dialect: &str, region: &str) -> Value {
    let credentials = match dialect {
        "grabpay" => {
            let (partner_id, partner_secret) = provider_sim::grabpay_credentials(sim_name);
            json!({ "partner_id": partner_id, "partner_secret": partner_secret, "merchant_id": "chaos-merchant" })
        }
        "dana" => json!({ "client_id": "chaos-client", "merchant_id": "chaos-merchant" }),
        _ => json!({ "api_key": format!("key-{sim_name}") }),
    };
    json!({ "url": url, "region": region, "dialect": dialect, "credentials": credentials })
}

/// A payment route (`/v1`, Stripe storefront dialect) over `providers` in static order.
pub fn payment_route(providers: &[&str], plugins: &[&str], failover: Value) -> Value {
    json!({
        "name": "payments",
        "path_prefix": "/v1",
        "dialect": "stripe",
        "allow_unauthenticated": true,
        "plugins": plugins,
        "providers": providers,
        "failover": failover,
    })
}

// ---------------------------------------------------------------------------------------
// Ports that stay ours
// ---------------------------------------------------------------------------------------

/// A proxy config with one payment route over simulated providers `a` then `b` (Adyen's
/// protocol, answer timeout `timeout_ms`), a payment deadline of `deadline_ms`, and `state`.
pub fn two_provider_config(
    sim: &Simulator,
    (listen, admin): (SocketAddr, SocketAddr),
    timeout_ms: u64,
    deadline_ms: u64,
    state: Value,
) -> Value {
    let mut providers = serde_json::Map::new();
    for name in ["a", "b"] {
        let mut p = provider(&sim.base_url(name), name, "adyen", "eu");
        p["timeout_ms"] = timeout_ms.into();
        providers.insert(name.into(), p);
    }
    json!({
        "listeners": [ { "addr": listen } ],
        "admin": { "addr": admin },
        "reload": { "watch": false },
        "plugins": dialect_plugins(),
        "providers": providers,
        "routes": [ payment_route(&["a", "b"], &[], json!({ "deadline_ms": deadline_ms })) ],
        "state": state,
    })
}

/// A loopback port held by a bound socket that never listens (`SO_REUSEADDR` and
/// `SO_REUSEPORT`), for as long as the value lives.
///
/// A port that is bound, released and bound again races every other process on the machine:
/// in between, the kernel may hand it to anyone's port-0 bind or use it as an outgoing
/// connection's local port. While this socket holds it, the kernel hands it to no one, yet a
/// listener that sets `SO_REUSEADDR` too can listen on it beside the reservation (Linux
/// allows it while the reservation does not listen): a [`Gate`] reopening, or payproxy (its
/// tokio listeners set `SO_REUSEADDR`) restarting after `kill -9`. With nobody listening,
/// connections to the port are refused, as for a host that is down.
pub struct ReservedPort {
    addr: SocketAddr,
    /// `None` once released for a child that cannot bind beside it (not Linux).
    holder: Mutex<Option<TcpSocket>>,
}

impl ReservedPort {
    /// Reserve a free port on 127.0.0.1.
    pub fn new() -> ReservedPort {
        let socket = reusable_socket().expect("reservation socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("reserve a loopback port");
        ReservedPort {
            addr: socket.local_addr().expect("reserved address"),
            holder: Mutex::new(Some(socket)),
        }
    }

    /// The reserved address, 127.0.0.1:PORT.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A listener on the reserved port, beside the reservation.
    pub fn listen(&self) -> TcpListener {
        let socket = reusable_socket().expect("listener socket");
        socket
            .bind(self.addr)
            .unwrap_or_else(|e| panic!("cannot bind reserved {}: {e}", self.addr));
        socket
            .listen(1024)
            .unwrap_or_else(|e| panic!("cannot listen on reserved {}: {e}", self.addr))
    }

    /// Before a child process binds the port with `SO_REUSEADDR` alone: on Linux it can
    /// bind beside the reservation, which stays; elsewhere (BSD rules) the reservation must
    /// go, and the port is only as safe as a released one.
    fn lend_to_child(&self) {
        if !cfg!(target_os = "linux") {
            self.holder.lock().unwrap().take();
        }
    }
}

impl Default for ReservedPort {
    fn default() -> Self {
        ReservedPort::new()
    }
}

fn reusable_socket() -> std::io::Result<TcpSocket> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    Ok(socket)
}

// ---------------------------------------------------------------------------------------
// A TCP gate: a provider that can be made to refuse connections
// ---------------------------------------------------------------------------------------

/// How long [`Gate::close_and_wait_for_clients`] waits for each client to close its end.
const CLIENT_CLOSE_WITHIN: Duration = Duration::from_secs(10);

/// A TCP forwarder on a fixed loopback port in front of a simulated provider. Open, it pipes
/// every connection to the provider; closed, nothing listens on its port (connections are
/// refused, as for a provider whose host is down) and the connections it was piping are cut.
/// The port stays reserved while the gate is closed, so reopening never races anyone for it.
/// It counts the bytes clients sent through it, so a test can see what reached the provider.
pub struct Gate {
    port: ReservedPort,
    target: SocketAddr,
    serving: Mutex<Option<Serving>>,
    traffic: Arc<Traffic>,
}

/// The accept task of an open gate, and how to ask it to close gracefully.
struct Serving {
    /// Owns the listener and the pipes; returns how many clients did not close in time.
    task: JoinHandle<usize>,
    closing: watch::Sender<bool>,
}

/// What went through a gate, over all its connections.
#[derive(Default)]
struct Traffic {
    /// Bytes read from clients and written to the provider.
    forwarded: AtomicU64,
    /// Connections accepted, and those whose pipe has ended.
    accepted: AtomicUsize,
    ended: AtomicUsize,
}

impl Gate {
    /// An open gate on a reserved loopback port forwarding to `target`.
    pub async fn start(target: SocketAddr) -> Gate {
        let gate = Gate {
            port: ReservedPort::new(),
            target,
            serving: Mutex::new(None),
            traffic: Arc::default(),
        };
        gate.open().await;
        gate
    }

    /// `http://127.0.0.1:PORT` of the gate.
    pub fn url(&self) -> String {
        format!("http://{}", self.port.addr())
    }

    /// Refuse connections from now on and cut those being piped.
    pub fn close(&self) {
        if let Some(serving) = self.serving.lock().unwrap().take() {
            // The accept task owns the listener and the pipes: aborting it drops them all.
            serving.task.abort();
        }
    }

    /// Like [`Gate::close`], and a readiness signal besides: each piped connection is ended
    /// with a FIN, and this returns once every client has closed its end too (fails after
    /// 10 s). A client's HTTP pool then no longer holds the connection, so no later request
    /// can go out on it: the next one connects, and is refused.
    pub async fn close_and_wait_for_clients(&self) {
        let Some(serving) = self.serving.lock().unwrap().take() else {
            return;
        };
        let _ = serving.closing.send(true);
        let lingering = tokio::time::timeout(CLIENT_CLOSE_WITHIN * 2, serving.task)
            .await
            .expect("the gate's pipes end within their bound")
            .expect("the gate's accept task did not panic");
        assert_eq!(
            lingering, 0,
            "clients still held connections {CLIENT_CLOSE_WITHIN:?} after the gate closed them"
        );
    }

    /// Listen again on the same port (still reserved: nobody can have taken it).
    pub async fn open(&self) {
        let listener = self.port.listen();
        let (closing, closed) = watch::channel(false);
        let task = tokio::spawn(serve(listener, self.target, closed, self.traffic.clone()));
        let serving = Serving { task, closing };
        if let Some(old) = self.serving.lock().unwrap().replace(serving) {
            old.task.abort();
        }
    }

    /// Bytes clients sent through the gate to the provider, over every connection so far.
    pub fn bytes_forwarded(&self) -> u64 {
        self.traffic.forwarded.load(Ordering::SeqCst)
    }

    /// Connections accepted so far, and how many of those are still being piped.
    pub fn connections(&self) -> (usize, usize) {
        let ended = self.traffic.ended.load(Ordering::SeqCst);
        let accepted = self.traffic.accepted.load(Ordering::SeqCst);
        (accepted, accepted - ended)
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.close();
    }
}

/// The accept loop of an open gate. Until `closing`, it pipes each connection; then it stops
/// listening and waits for the pipes, returning how many clients did not close in time.
async fn serve(
    listener: TcpListener,
    target: SocketAddr,
    mut closing: watch::Receiver<bool>,
    traffic: Arc<Traffic>,
) -> usize {
    let mut pipes = JoinSet::new();
    let for_pipes = closing.clone();
    loop {
        tokio::select! {
            Some(_) = pipes.join_next(), if !pipes.is_empty() => {}
            _ = closing.wait_for(|closing| *closing) => break,
            conn = listener.accept() => {
                let Ok((inbound, _)) = conn else { continue };
                traffic.accepted.fetch_add(1, Ordering::SeqCst);
                let (closing, traffic) = (for_pipes.clone(), traffic.clone());
                pipes.spawn(async move {
                    let closed_in_time = pipe(inbound, target, closing, &traffic).await;
                    traffic.ended.fetch_add(1, Ordering::SeqCst);
                    closed_in_time
                });
            }
        }
    }
    drop(listener);
    let mut lingering = 0;
    while let Some(closed_in_time) = pipes.join_next().await {
        if !closed_in_time.unwrap_or(false) {
            lingering += 1;
        }
    }
    lingering
}

/// Pipe one connection both ways, counting the client's bytes, until both directions are
/// done or the gate closes. On close: FIN to the client, then wait (bounded) for its own
/// close. Returns whether the client had closed its end when the pipe ended.
async fn pipe(
    inbound: TcpStream,
    target: SocketAddr,
    mut closing: watch::Receiver<bool>,
    traffic: &Traffic,
) -> bool {
    let _ = inbound.set_nodelay(true);
    let (mut client_read, mut client_write) = inbound.into_split();
    let Ok(upstream) = TcpStream::connect(target).await else {
        return true;
    };
    let _ = upstream.set_nodelay(true);
    let (mut provider_read, mut provider_write) = upstream.into_split();
    let forward = async {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n @ 1..) = client_read.read(&mut buf).await {
            if provider_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
            traffic.forwarded.fetch_add(n as u64, Ordering::SeqCst);
        }
        let _ = provider_write.shutdown().await;
    };
    let back = async {
        let _ = tokio::io::copy(&mut provider_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    let gate_closing = tokio::select! {
        _ = async { tokio::join!(forward, back) } => false,
        _ = closing.wait_for(|closing| *closing) => true,
    };
    if !gate_closing {
        return true;
    }
    drop((provider_read, provider_write));
    let _ = client_write.shutdown().await;
    let mut sink = [0u8; 4096];
    let drained = async { while let Ok(1..) = client_read.read(&mut sink).await {} };
    tokio::time::timeout(CLIENT_CLOSE_WITHIN, drained)
        .await
        .is_ok()
}

// ---------------------------------------------------------------------------------------
// Provider faults
// ---------------------------------------------------------------------------------------

/// The provider faults of the chaos suites: each on one provider behind a [`Gate`], for a
/// while, with a provider answer timeout of `provider_timeout_ms` in the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// Connections refused (the gate is closed): not sent, safe to fail over.
    Outage,
    /// Half the requests answered 503 before processing.
    Errors5xx,
    /// Answers delayed beyond the proxy's timeout (nothing charged, but the proxy can't know).
    LatencySpike,
    /// Charged, then answered too late.
    TimeoutAfterCharge,
    /// Charged, then the answer cut mid-body.
    Reset,
    /// Accepted, then dropped without an answer.
    DroppedConnections,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Outage,
        FaultKind::Errors5xx,
        FaultKind::TimeoutAfterCharge,
        FaultKind::Reset,
        FaultKind::LatencySpike,
        FaultKind::DroppedConnections,
    ];

    /// The simulator's faults for this kind (none for an outage: the gate does it).
    fn faults(self, provider_timeout_ms: u64) -> Faults {
        let late = provider_timeout_ms + 300;
        match self {
            FaultKind::Outage => Faults::default(),
            FaultKind::Errors5xx => Faults {
                error_status: Some(503),
                error_rate: 0.5,
                ..Faults::default()
            },
            FaultKind::LatencySpike => Faults::latency(late),
            FaultKind::TimeoutAfterCharge => Faults::timeout_after_charge(late),
            FaultKind::Reset => Faults::reset_mid_response(),
            FaultKind::DroppedConnections => Faults::outage(),
        }
    }

    /// Start the fault on `provider`, reached through `gate`.
    pub fn start(self, sim: &Simulator, provider: &str, gate: &Gate, provider_timeout_ms: u64) {
        match self {
            FaultKind::Outage => gate.close(),
            kind => sim.set_faults(provider, kind.faults(provider_timeout_ms)),
        }
    }

    /// End it: the provider is healthy again.
    pub async fn end(self, sim: &Simulator, provider: &str, gate: &Gate) {
        match self {
            FaultKind::Outage => gate.open().await,
            _ => sim.set_faults(provider, Faults::default()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Metrics and status
// ---------------------------------------------------------------------------------------

/// Sum of the samples of `name` whose labels include every pair of `labels`, in Prometheus
/// text; `None` when there is none. A missing series is not a zero: a gauge that does not
/// exist must fail a check for "closed", so callers decide. Where a counter may rightly not
/// exist yet (nothing counted so far), the caller says so with `.unwrap_or(0.0)`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (label_text, value) = match rest.strip_prefix('{') {
                Some(inner) => {
                    let end = inner.rfind('}')?;
                    (&inner[..end], &inner[end + 1..])
                }
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            let found = parse_labels(label_text);
            labels
                .iter()
                .all(|(k, v)| found.iter().any(|(fk, fv)| fk == k && fv == v))
                .then(|| value.split_whitespace().next()?.parse::<f64>().ok())
                .flatten()
        })
        .collect();
    // An empty sum would be -0.0; there is none here.
    (!values.is_empty()).then(|| values.iter().sum())
}

fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((key.trim_start_matches(',').trim().to_string(), value));
        rest = &after[end..];
    }
    out
}

/// `GET /metrics` of an admin listener.
pub async fn metrics_text(client: &HttpClient, admin: SocketAddr) -> String {
    let reply = client.get(&format!("http://{admin}/metrics")).await;
    String::from_utf8_lossy(&reply.body).into_owned()
}

/// The breaker state `/admin/status` shows for `provider` (`closed`, `open`, `half_open`).
pub async fn status_breaker(client: &HttpClient, admin: SocketAddr, provider: &str) -> String {
    let health = status_health(client, admin, provider).await;
    health["breaker"]
        .as_str()
        .unwrap_or_else(|| panic!("no breaker for {provider} in {health}"))
        .to_string()
}

/// A provider's `health` object in `/admin/status`.
pub async fn status_health(client: &HttpClient, admin: SocketAddr, provider: &str) -> Value {
    let status = client
        .get(&format!("http://{admin}/admin/status"))
        .await
        .json();
    status["providers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == provider))
        .map(|p| p["health"].clone())
        .filter(Value::is_object)
        .unwrap_or_else(|| panic!("no health for {provider} in {status}"))
}

// ---------------------------------------------------------------------------------------
// Ledgers
// ---------------------------------------------------------------------------------------

/// Every charge in every simulated provider's ledger: grouped by merchant reference, and
/// those without one kept apart. None is dropped: a second charge for a payment could be
/// one whose dialect lost the reference, and a double-charge check must still count it.
#[derive(Debug, Default)]
pub struct Charges {
    pub by_reference: BTreeMap<String, Vec<Charge>>,
    pub unreferenced: Vec<Charge>,
}

impl Charges {
    /// Every charge, referenced or not.
    pub fn total(&self) -> usize {
        self.by_reference.values().map(Vec::len).sum::<usize>() + self.unreferenced.len()
    }
}

/// Every simulated provider's charges (see [`Charges`]).
pub fn all_charges(sim: &Simulator) -> Charges {
    let mut charges = Charges::default();
    for name in sim.names() {
        for charge in sim.ledger(name) {
            match charge.merchant_reference.clone() {
                Some(reference) => charges
                    .by_reference
                    .entry(reference)
                    .or_default()
                    .push(charge),
                None => charges.unreferenced.push(charge),
            }
        }
    }
    charges
}

/// Charges for `reference` across every simulated provider. Every payment these tests make
/// carries a merchant reference, so a charge without one anywhere fails here: it could be
/// this payment's second charge, and no count by reference would see it.
pub fn charges_for(sim: &Simulator, reference: &str) -> Vec<Charge> {
    let mut charges = all_charges(sim);
    assert!(
        charges.unreferenced.is_empty(),
        "charges without a merchant reference: {:?}",
        charges.unreferenced
    );
    charges.by_reference.remove(reference).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// payproxy as a child process
// ---------------------------------------------------------------------------------------

/// `target/debug/payproxy` next to the running test binary (`target/debug/deps/…`).
pub fn payproxy_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let debug = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary is in target/<profile>/deps");
    let binary = debug.join("payproxy");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build -p payproxy` (scripts/test.sh does) before this test",
        binary.display()
    );
    binary
}

/// payproxy running as a child process on reserved ports, so it can be killed with SIGKILL
/// and started again on the same config, state file and ports.
pub struct ChildProxy {
    binary: PathBuf,
    config: PathBuf,
    log: PathBuf,
    /// Where this run's lines start in `log` (it is appended to across restarts).
    log_start: u64,
    child: Option<Child>,
    /// `PAYPROXY_LOG` for the child.
    log_level: String,
    /// Held for the proxy's whole life, restarts included.
    ports: [ReservedPort; 2],
    /// The storefront listener.
    pub listen: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
}

impl ChildProxy {
    /// Start `payproxy run --config <config>` (stderr appended to `log`) and wait until its
    /// admin listener answers. The config must listen on `listen` and `admin`'s addresses.
    pub async fn start(
        config: &Path,
        log: &Path,
        listen: ReservedPort,
        admin: ReservedPort,
    ) -> ChildProxy {
        let level = std::env::var("PAYPROXY_LOG").unwrap_or_else(|_| "warn".into());
        ChildProxy::start_logging(config, log, listen, admin, &level).await
    }

    /// [`ChildProxy::start`] logging at `level` (`PAYPROXY_LOG`).
    pub async fn start_logging(
        config: &Path,
        log: &Path,
        listen: ReservedPort,
        admin: ReservedPort,
        level: &str,
    ) -> ChildProxy {
        let mut proxy = ChildProxy {
            binary: payproxy_binary(),
            config: config.to_path_buf(),
            log: log.to_path_buf(),
            log_start: 0,
            child: None,
            log_level: level.to_string(),
            listen: listen.addr(),
            admin: admin.addr(),
            ports: [listen, admin],
        };
        proxy.spawn().await;
        proxy
    }

    /// The running child's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("payproxy is running").id()
    }

    /// Poll this run's log until a line contains `needle` (bounded); fails with the tail.
    pub async fn wait_for_log(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let text = std::fs::read(&self.log).unwrap_or_default();
            let run = text.get(self.log_start as usize..).unwrap_or_default();
            if String::from_utf8_lossy(run).contains(needle) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "payproxy did not log {needle:?} within {within:?}:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("proxy log file");
        self.log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        for port in &self.ports {
            port.lend_to_child();
        }
        let child = Command::new(&self.binary)
            .args(["run", "--config"])
            .arg(&self.config)
            .env("PAYPROXY_LOG", &self.log_level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("payproxy starts");
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(60)).await;
    }

    /// Poll `/admin/status` until it answers 200 (bounded), or 401 off loopback, where it
    /// needs the admin token; fails with the log's tail.
    pub async fn wait_ready(&mut self, within: Duration) {
        let client = HttpClient::default();
        let url = format!("http://{}/admin/status", self.admin);
        let deadline = Instant::now() + within;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(exit)) = child.try_wait() {
                    panic!(
                        "payproxy exited ({exit}) while starting:\n{}",
                        self.log_tail()
                    );
                }
            }
            let ready = client
                .try_send(Method::GET, &url, &[], Bytes::new())
                .await
                .is_ok_and(|r| r.status == 200 || r.status == 401);
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "payproxy not ready within {within:?}:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGKILL (no drain, no cleanup), then reap the process.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM: the proxy stops accepting, drains and exits; [`ChildProxy::wait_exit`] reaps
    /// it.
    pub fn terminate(&self) {
        let pid = i32::try_from(self.pid()).expect("a process id fits an i32");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM to payproxy");
    }

    /// Wait (bounded) until the process has exited, and reap it; fails with the log's tail.
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut().expect("payproxy was started");
        loop {
            if let Some(status) = child.try_wait().expect("wait for payproxy") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "payproxy still running {within:?} after asked to stop:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Start again on the same config and state; returns how long until it was ready.
    pub async fn restart(&mut self) -> Duration {
        let started = Instant::now();
        self.spawn().await;
        started.elapsed()
    }

    /// `http://LISTEN{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.listen, path)
    }

    /// The last lines the proxy logged.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for ChildProxy {
    fn drop(&mut self) {
        self.kill9();
    }
}

// ---------------------------------------------------------------------------------------
// A storefront client that retries like a payment SDK
// ---------------------------------------------------------------------------------------

/// How an SDK retries: the same `Idempotency-Key` on every try; retried after connection
/// errors, timeouts, 409, 429 and 5xx (unless the answer says `Stripe-Should-Retry: false`);
/// exponential backoff, bounded tries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// No answer within this is a timeout (counted, then retried).
    pub timeout: Duration,
    /// Retries after the first try.
    pub max_retries: u32,
    /// First backoff; doubles each retry.
    pub backoff: Duration,
    /// Largest backoff.
    pub backoff_cap: Duration,
}

/// What one try got.
#[derive(Debug, Clone)]
pub enum Try {
    /// An HTTP answer.
    Answer {
        status: u16,
        replayed: bool,
        provider: Option<String>,
    },
    /// The connection failed or broke.
    Transport(String),
    /// No answer within the policy's timeout.
    TimedOut,
}

/// One try of a call: what it got, when it started, how long it took.
#[derive(Debug, Clone)]
pub struct TryLog {
    pub outcome: Try,
    pub started: Instant,
    pub took: Duration,
}

/// One storefront call with its retries.
#[derive(Debug)]
pub struct Call {
    /// Every try, in order.
    pub tries: Vec<TryLog>,
    /// The answer that ended the call (none when every try failed in transport).
    pub reply: Option<Reply>,
    /// From the first try to the end.
    pub elapsed: Duration,
}

impl Call {
    /// Tries that got no answer within the timeout.
    pub fn timeouts(&self) -> usize {
        self.tries
            .iter()
            .filter(|t| matches!(t.outcome, Try::TimedOut))
            .count()
    }
}

/// The retrying storefront client; cheap to clone (one connection pool).
#[derive(Clone)]
pub struct Sdk {
    client: Client<HttpConnector, Full<Bytes>>,
    policy: RetryPolicy,
}

impl Sdk {
    pub fn new(policy: RetryPolicy) -> Sdk {
        Sdk {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(HttpConnector::new()),
            policy,
        }
    }

    /// POST a Stripe form to `url` with `Idempotency-Key: key`, retrying per the policy.
    pub async fn post_form(&self, url: &str, key: &str, form: &str) -> Call {
        let started = Instant::now();
        let mut tries = Vec::new();
        let mut backoff = self.policy.backoff;
        for attempt in 0..=self.policy.max_retries {
            let at = Instant::now();
            let result = self.once(url, key, form).await;
            let took = at.elapsed();
            let (t, reply) = match result {
                Ok(reply) => (
                    Try::Answer {
                        status: reply.status.as_u16(),
                        replayed: reply.header("idempotent-replayed") == Some("true"),
                        provider: reply.provider().map(str::to_string),
                    },
                    Some(reply),
                ),
                Err(None) => (Try::TimedOut, None),
                Err(Some(e)) => (Try::Transport(e), None),
            };
            let retry = match &reply {
                None => true,
                Some(r) => {
                    let s = r.status.as_u16();
                    s == 409
                        || s == 429
                        || (s >= 500 && r.header("stripe-should-retry") != Some("false"))
                }
            };
            tries.push(TryLog {
                outcome: t,
                started: at,
                took,
            });
            if !retry || attempt == self.policy.max_retries {
                return Call {
                    tries,
                    reply,
                    elapsed: started.elapsed(),
                };
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.policy.backoff_cap);
        }
        unreachable!("the loop returns on its last try")
    }

    /// One try: `Err(None)` on timeout, `Err(Some(..))` on a transport error.
    async fn once(&self, url: &str, key: &str, form: &str) -> Result<Reply, Option<String>> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("idempotency-key", key)
            .body(Full::new(Bytes::from(form.to_string())))
            .map_err(|e| Some(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| Some(format!("{e:?}")))?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| Some(e.to_string()))?
                .to_bytes();
            Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.policy.timeout, exchange)
            .await
            .map_err(|_| None)?
    }
}

// ---------------------------------------------------------------------------------------
// Small things
// ---------------------------------------------------------------------------------------

/// A deterministic pseudo-random sequence (SplitMix64): reproducible runs without a crate.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Nearest-rank percentile of `values` (sorted here); zero when empty.
pub fn percentile(values: &[Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Poll `check` every 10 ms until it holds; panics with `what` after `within`.
pub async fn eventually(within: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
