//! Three payproxy instances sharing one PostgreSQL (issue 12): storefront clients spread
//! payments over the instances and retry on another instance with the same Idempotency-Key,
//! while provider `a` goes through the chaos suite's faults one at a time (provider `b` stays
//! healthy), an instance is paused past its lease (SIGSTOP, then SIGCONT) before and during
//! the traffic, another is killed with SIGKILL and restarted, and the database restarts
//! mid-traffic. Checked afterwards: no payment charged twice (simulator ledgers), every
//! acknowledged payment replays the same payment from any instance, every payment answered
//! as taken is charged once where it says and every other one not at all, and success
//! ≥ 99.5 % (a healthy provider exists throughout, so every payment counts).
//!
//! Before the traffic, a stalled holder that wakes to a definite "not processed" answer must
//! not fail over: its claim was taken over, so it may send nothing anywhere; and one that
//! wakes to a refusal after the instance that took its key over charged the payment must
//! neither record it nor answer it (409 `payment_processing`; the retry replays the charge).
//!
//! The test runs its own Postgres cluster (it restarts it), from the binaries that
//! scripts/test.sh installs; without `PAYPROXY_TEST_POSTGRES_URL` it is skipped loudly.
//! Faults are triggered by progress (payments answered) or by what the simulator saw, never
//! by sleeps; only a fault's own duration is a time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use payproxy_e2e::chaos::{
    all_charges, charges_for, eventually, metric, metrics_text, two_provider_config, Call,
    ChildProxy, FaultKind, Gate, ReservedPort, RetryPolicy, Sdk,
};
use payproxy_e2e::postgres::PgCluster;
use payproxy_e2e::*;
use serde_json::{json, Value};

/// Claims lapse this long after their holder stops renewing them.
const LEASE_MS: u64 = 1_500;
/// Provider answer timeout; the injected latencies go beyond it.
const PROVIDER_TIMEOUT_MS: u64 = 5_000;
/// A payment's attempt budget.
const DEADLINE_MS: u64 = 10_000;
const PAYMENTS: usize = 240;
const CONCURRENCY: usize = 6;
/// The provider every fault hits, behind a [`Gate`]; `b` stays healthy throughout.
const FAULTED: &str = "a";
/// How long each provider fault of the traffic phase lasts.
const FAULT_WINDOW: Duration = Duration::from_secs(2);
/// Each lane starts a payment at most this often: 10 payments/s over all lanes, so the
/// traffic spans the fault schedule instead of finishing before it.
const LANE_PACE: Duration = Duration::from_millis(600);
/// Payments may run this far ahead of the next scheduled fault's trigger, no further: a
/// slow fault step holds the traffic back, so every fault still meets traffic.
const LEAD: usize = 2 * CONCURRENCY;

/// What happens during the traffic.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Instance 1 paused past its lease while it holds a payment (see `pause_mid_traffic`).
    Pause,
    /// A chaos-suite fault on provider `a` for [`FAULT_WINDOW`].
    Fault(FaultKind),
    /// SIGKILL of instance 1.
    Kill9,
    /// Instance 1 started again.
    Restart,
    /// PostgreSQL restarted (every connection of every instance cut).
    DatabaseRestart,
}

/// The traffic's schedule: each step once this many payments were answered, in order. The
/// pause comes first, while every instance's breaker for `a` is closed (the paused instance
/// must send its payment there).
const SCHEDULE: [(usize, Step); 10] = [
    (10, Step::Pause),
    (30, Step::Fault(FaultKind::Errors5xx)),
    (50, Step::Kill9),
    (52, Step::Fault(FaultKind::Outage)),
    (70, Step::Fault(FaultKind::Reset)),
    (90, Step::Restart),
    (100, Step::Fault(FaultKind::DroppedConnections)),
    (120, Step::Fault(FaultKind::TimeoutAfterCharge)),
    (140, Step::DatabaseRestart),
    (150, Step::Fault(FaultKind::LatencySpike)),
];

/// The postgres state of these tests (inline URL: a test cannot safely change its own
/// environment while other threads run; examples/cluster shows `{"env": "VAR"}`).
fn postgres_state(url: &str) -> Value {
    json!({
        "kind": "postgres",
        "postgres": { "url": url, "lease_ms": LEASE_MS, "pool_size": 4,
                      "connect_timeout_ms": 2_000 },
    })
}

/// Providers `a` (through `gate` when given) then `b`.
fn config(
    sim: &Simulator,
    gate: Option<&Gate>,
    (listen, admin): (SocketAddr, SocketAddr),
    cache: &Path,
    state: &Value,
) -> Value {
    let mut config = two_provider_config(
        sim,
        (listen, admin),
        PROVIDER_TIMEOUT_MS,
        DEADLINE_MS,
        state.clone(),
    );
    if let Some(gate) = gate {
        config["providers"][FAULTED]["url"] = gate.url().into();
    }
    // Only the dialects in use (storefront: Stripe; providers: Adyen), compiled once for all
    // instances: starting is then seconds, not a minute.
    if let Some(plugins) = config["plugins"].as_object_mut() {
        plugins.retain(|name, _| name == "stripe" || name == "adyen");
    }
    config["plugin_host"] = json!({ "compile_cache_dir": cache });
    config
}

fn card(order: &str) -> String {
    form_with(card_from("DE", "1000", order), &[])
}

/// `n` instances with `state`, sharing one plugin compile cache in `dir`.
async fn start_instances(
    sim: &Simulator,
    gate: Option<&Gate>,
    dir: &Path,
    n: usize,
    state: &Value,
) -> Vec<ChildProxy> {
    let mut proxies = Vec::new();
    for i in 0..n {
        let (listen, admin) = (ReservedPort::new(), ReservedPort::new());
        let sub = dir.join(format!("i{i}"));
        std::fs::create_dir_all(&sub).unwrap();
        let addrs = (listen.addr(), admin.addr());
        let cache = dir.join("plugin-cache");
        let path = write_config(&sub, &config(sim, gate, addrs, &cache, state));
        proxies.push(ChildProxy::start(&path, &sub.join("proxy.log"), listen, admin).await);
    }
    proxies
}

fn signal(proxy: &ChildProxy, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &proxy.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig}");
}

/// One try, no retry: the callers choose the next instance.
fn one_try() -> Sdk {
    Sdk::new(RetryPolicy {
        timeout: Duration::from_secs(20),
        max_retries: 0,
        backoff: Duration::ZERO,
        backoff_cap: Duration::ZERO,
    })
}

/// Whether an answer is final for the storefront (a retry would not help).
fn settled(reply: &Option<Reply>) -> bool {
    match reply {
        Some(r) => {
            let s = r.status.as_u16();
            !(s == 409 || s == 429 || s >= 500)
        }
        None => false,
    }
}

/// POST the payment to instance `first`, and on a retryable outcome to the next instance,
/// same key, with backoff; bounded by `within`.
async fn pay(
    sdk: &Sdk,
    urls: &[String],
    first: usize,
    key: &str,
    form: &str,
    within: Duration,
) -> (Option<Reply>, usize) {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(25);
    let mut tries = 0;
    loop {
        let url = &urls[(first + tries) % urls.len()];
        tries += 1;
        let call = sdk.post_form(url, key, form).await;
        if settled(&call.reply) || started.elapsed() > within {
            return (call.reply, tries);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(400));
    }
}

/// Retry `key` at `url` while it answers 409 (another instance's claim on the key is live),
/// bounded; returns the first other answer and how many 409s came before it.
async fn take_over(sdk: &Sdk, url: &str, key: &str, form: &str) -> (Reply, usize) {
    let mut refused = 0;
    loop {
        let call = sdk.post_form(url, key, form).await;
        match call.reply {
            Some(r) if r.status == 409 => refused += 1,
            Some(r) => return (r, refused),
            None => panic!("{url} did not answer {key}: {:?}", call.tries),
        }
        assert!(refused < 500, "{key} never taken over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A takeover's answer: the payment charged at `a`, after at least one 409 (the holder's
/// lease was honoured while it lived), by an instance that says it resumed a lapsed claim.
async fn assert_taken_over_at_a(what: &str, (reply, refused): &(Reply, usize), taker: &ChildProxy) {
    assert_eq!(
        (reply.status.as_u16(), reply.provider()),
        (200, Some(FAULTED)),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&reply.body),
        taker.log_tail()
    );
    assert_eq!(reply.json()["status"], "succeeded", "{what}");
    assert!(*refused > 0, "{what}: the live lease was not honoured");
    taker
        .wait_for_log(
            "resuming a payment whose holder's lease expired",
            Duration::from_secs(5),
        )
        .await;
}

/// The storefront retries `key` at `url` after the takeover: the taker's answer, replayed.
async fn assert_replays(sdk: &Sdk, url: &str, key: &str, form: &str, taken: &Reply) {
    let again = sdk
        .post_form(url, key, form)
        .await
        .reply
        .unwrap_or_else(|| panic!("{url} does not answer {key}"));
    assert_eq!(again.header("idempotent-replayed"), Some("true"), "{key}");
    assert_eq!(again.body, taken.body, "{key}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_postgres_charge_once_through_pause_kill_and_db_restart() {
    init_logs();
    let test_started = Instant::now();
    let Some(pg) = PgCluster::start() else { return };
    let sim = Simulator::start(&["a", "b"]).await.unwrap();
    let gate = Gate::start(sim.addr(FAULTED)).await;
    let dir = tempfile::tempdir().unwrap();
    let state = postgres_state(&pg.url());
    let mut proxies = start_instances(&sim, Some(&gate), dir.path(), 3, &state).await;
    let urls: Vec<String> = proxies
        .iter()
        .map(|p| p.url("/v1/payment_intents"))
        .collect();
    let sdk = one_try();

    // Each instance says which one it is and that it shares a postgres store; the config
    // hash is there to compare rollouts (these configs differ: each listens on its own ports).
    let client = HttpClient::default();
    let mut ids = std::collections::BTreeSet::new();
    for proxy in &proxies {
        let status = client
            .get(&format!("http://{}/admin/status", proxy.admin))
            .await
            .json();
        assert_eq!(status["state"]["kind"], "postgres", "{status}");
        assert!(status["config"]["hash"]
            .as_str()
            .is_some_and(|h| h.len() == 64));
        let id = status["state"]["instance"].as_str().unwrap().to_string();
        let metrics = metrics_text(&client, proxy.admin).await;
        let labels = [("instance", id.as_str()), ("store", "postgres")];
        assert_eq!(
            metric(&metrics, "payproxy_instance_info", &labels),
            Some(1.0)
        );
        ids.insert(id);
    }
    assert_eq!(ids.len(), 3, "{ids:?}");

    // ---- 1. an instance paused past its lease: taken over, its late writes fenced ----
    sim.set_faults("a", Faults::timeout_after_charge(20_000));
    let stalled = send_and_hold(&sim, &sdk, &urls[2], "STALL").await;
    signal(&proxies[2], "-STOP");
    sim.set_faults("a", Faults::default());
    // Instance 0 refuses while instance 2's lease lives, then takes the payment over at the
    // same provider with the same provider key.
    let took_over = take_over(&sdk, &urls[0], "k-STALL", &card("STALL")).await;
    assert_taken_over_at_a("STALL", &took_over, &proxies[0]).await;
    signal(&proxies[2], "-CONT");
    woken_and_fenced(&sim, &sdk, &proxies[2], (stalled, "STALL"), &took_over.0).await;

    // ---- 2. a stalled holder woken by a definite "not processed" must not fail over ----
    stalled_holder_woken_by_a_definite_no(&sim, &proxies, &urls, &sdk).await;
    // ---- 2b. ... nor, woken by a refusal, record it over the taker's charge ----
    stalled_holder_woken_by_a_refusal(&sim, &proxies, &urls, &sdk).await;
    let before_traffic = test_started.elapsed();

    // ---- 3. traffic over all instances, paced; on a schedule by progress: a pause past the
    //         lease, provider faults, kill -9 and restart, a database restart ----
    let traffic_started = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let allowed = Arc::new(AtomicUsize::new(SCHEDULE[0].0 + LEAD));
    let results = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    let mut lanes = tokio::task::JoinSet::new();
    for lane in 0..CONCURRENCY {
        let (sdk, urls, done, results) = (sdk.clone(), urls.clone(), done.clone(), results.clone());
        let allowed = allowed.clone();
        lanes.spawn(async move {
            let mut next_start = Instant::now();
            for n in (lane..PAYMENTS).step_by(CONCURRENCY) {
                tokio::time::sleep_until(next_start.into()).await;
                let held_back = Instant::now();
                while n >= allowed.load(Ordering::SeqCst) {
                    let waited = held_back.elapsed();
                    assert!(
                        waited < Duration::from_secs(120),
                        "P-{n} held back {waited:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                next_start = Instant::now() + LANE_PACE;
                let order = format!("P-{n}");
                let key = format!("k-{order}");
                let (reply, tries) = pay(
                    &sdk,
                    &urls,
                    n % 3,
                    &key,
                    &card(&order),
                    Duration::from_secs(60),
                )
                .await;
                let outcome = reply.map(|r| Outcome {
                    status: r.status.as_u16(),
                    id: r.json()["id"].as_str().map(str::to_string),
                    intent: r.json()["status"].as_str().map(str::to_string),
                    provider: r.provider().map(str::to_string),
                    body: String::from_utf8_lossy(&r.body).into_owned(),
                });
                results.lock().unwrap().insert(n, (outcome, tries));
                done.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    let mut began = Vec::new();
    for (i, (at, step)) in SCHEDULE.iter().enumerate() {
        eventually(
            Duration::from_secs(90),
            &format!("{at} payments answered"),
            || async { done.load(Ordering::SeqCst) >= *at },
        )
        .await;
        let next = SCHEDULE.get(i + 1).map_or(PAYMENTS, |(at, _)| at + LEAD);
        allowed.store(next, Ordering::SeqCst);
        began.push((*step, done.load(Ordering::SeqCst)));
        match *step {
            Step::Pause => pause_mid_traffic(&sim, &gate, &proxies, &urls, &sdk).await,
            Step::Fault(kind) => {
                kind.start(&sim, FAULTED, &gate, PROVIDER_TIMEOUT_MS);
                tokio::time::sleep(FAULT_WINDOW).await;
                kind.end(&sim, FAULTED, &gate).await;
            }
            Step::Kill9 => proxies[1].kill9(),
            Step::Restart => {
                proxies[1].restart().await;
            }
            Step::DatabaseRestart => tokio::task::block_in_place(|| pg.restart()),
        }
    }
    while let Some(lane) = lanes.join_next().await {
        lane.unwrap();
    }
    let traffic = traffic_started.elapsed();
    // Every step met traffic: at least a lane's worth of payments was still to be answered.
    for (step, answered) in &began {
        assert!(
            answered + CONCURRENCY <= PAYMENTS,
            "{step:?} began after the traffic ({answered} answered)"
        );
    }

    // ---- checks ----
    let charges = all_charges(&sim);
    assert!(
        charges.unreferenced.is_empty(),
        "{:?}",
        charges.unreferenced
    );
    let doubles: Vec<_> = charges
        .by_reference
        .iter()
        .filter(|(_, c)| c.len() > 1)
        .collect();
    assert!(doubles.is_empty(), "charged more than once: {doubles:?}");
    let results = results.lock().unwrap().clone();
    assert_eq!(results.len(), PAYMENTS);
    // As in tests/chaos.rs: a PaymentIntent that took the payment or waits for the shopper
    // is a success, and so is `processing` (outcome not known yet), but only a few of those.
    let ok = |o: &Outcome| {
        o.status == 200
            && matches!(
                o.intent.as_deref(),
                Some("succeeded" | "requires_action" | "requires_capture" | "processing")
            )
    };
    // Answered as taken: charged exactly once, at the provider the answer names. Not taken
    // (or no final answer): not charged at all.
    let mut wrong = Vec::new();
    let mut not_taken = Vec::new();
    let mut succeeded = Vec::new();
    let mut pending = 0;
    for (n, (outcome, tries)) in &results {
        let reference = format!("P-{n}");
        let at: Vec<&str> = charges
            .by_reference
            .get(&reference)
            .map(|c| c.iter().map(|c| c.provider.as_str()).collect())
            .unwrap_or_default();
        match outcome {
            Some(o) if ok(o) && o.intent.as_deref() == Some("processing") => pending += 1,
            Some(o) if ok(o) => {
                if at != [o.provider.as_deref().unwrap_or("?")] {
                    wrong.push(format!(
                        "{reference}: answered by {:?}, charged at {at:?}",
                        o.provider
                    ));
                }
                match &o.id {
                    Some(id) => succeeded.push((*n, id.clone())),
                    None => wrong.push(format!("{reference}: no id in {}", o.body)),
                }
            }
            other => {
                not_taken.push(format!("{reference} after {tries} tries: {other:?}"));
                if !at.is_empty() {
                    wrong.push(format!("{reference}: not taken, yet charged at {at:?}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    let ok_count = succeeded.len() + pending;
    // tests/chaos.rs allows one payment in 1,000 to end `processing`: none of these.
    assert_eq!(pending, 0, "payments ended `processing`");
    assert!(
        ok_count * 1000 >= PAYMENTS * 995,
        "success {ok_count}/{PAYMENTS}; not taken: {not_taken:#?}\n{}\n{}",
        proxies[0].log_tail(),
        std::fs::read_to_string(pg.dir().join("postgres.log")).unwrap_or_default()
    );
    // Every acknowledged payment is there, on every instance: replayed, same payment.
    for (n, id) in &succeeded {
        let key = format!("k-P-{n}");
        let (reply, _) = pay(
            &sdk,
            &urls,
            n + 1,
            &key,
            &card(&format!("P-{n}")),
            Duration::from_secs(30),
        )
        .await;
        let reply = reply.unwrap_or_else(|| panic!("P-{n}: no answer"));
        assert_eq!(reply.status, 200, "P-{n}");
        assert_eq!(reply.json()["id"].as_str(), Some(id.as_str()), "P-{n}");
        assert_eq!(charges_for(&sim, &format!("P-{n}")).len(), 1, "P-{n}");
    }
    let retried = results.values().filter(|(_, tries)| *tries > 1).count();
    let mut metrics = Vec::new();
    for proxy in &proxies {
        metrics.push(metrics_text(&client, proxy.admin).await);
    }
    let sum = |name: &str, labels: &[(&str, &str)]| -> f64 {
        // For the summary only: a counter nothing incremented has no series yet, i.e. 0.
        metrics
            .iter()
            .map(|m| metric(m, name, labels).unwrap_or(0.0))
            .sum()
    };
    eprintln!(
        "cluster: {ok_count}/{PAYMENTS} succeeded ({pending} pending, {} not), {retried} \
         needed another instance or a retry; failovers a→b {}, breaker opens {}, resolutions \
         resend {} / pending {} (instance 1 since its restart); before the traffic {:.1}s, \
         traffic {:.1}s, whole test {:.1}s; steps began at {began:?}",
        not_taken.len(),
        sum("payproxy_failovers_total", &[("from", "a"), ("to", "b")]),
        sum("payproxy_breaker_transitions_total", &[("to", "open")]),
        sum("payproxy_ambiguous_resolutions_total", &[("how", "resend")]),
        sum(
            "payproxy_ambiguous_resolutions_total",
            &[("how", "pending")]
        ),
        before_traffic.as_secs_f64(),
        traffic.as_secs_f64(),
        test_started.elapsed().as_secs_f64(),
    );
    drop(pg);
}

/// What the storefront finally got for one payment of the traffic.
#[derive(Debug, Clone)]
struct Outcome {
    status: u16,
    id: Option<String>,
    /// The PaymentIntent's `status`.
    intent: Option<String>,
    /// `x-payproxy-provider`.
    provider: Option<String>,
    body: String,
}

/// How long `a` holds instance 0's request before its injected answer: long enough for the
/// pause to land first, and the answer reaches instance 0 well before its provider timeout.
const HOLD_MS: u64 = 3_000;

/// Instance 0 (A) sends payment `order` (key `k-{order}`) to `a`, which holds it for
/// [`HOLD_MS`] and then answers `status`; A is paused (SIGSTOP) once the request reached `a`,
/// and instance 1 (B) takes the key over and is charged at `a`. Returns A's pending call, B's
/// answer (with the 409s before it) and when A's request reached `a`. A stays paused.
async fn hold_pause_and_take_over(
    sim: &Simulator,
    proxies: &[ChildProxy],
    urls: &[String],
    sdk: &Sdk,
    order: &'static str,
    status: u16,
) -> (tokio::task::JoinHandle<Call>, (Reply, usize), Instant) {
    let (key, form) = (format!("k-{order}"), card(order));
    let at_a = sim.request_count("a");
    sim.set_faults(
        "a",
        Faults {
            latency_ms: HOLD_MS,
            ..Faults::error(status)
        },
    );
    let holder = {
        let (sdk, url, key, form) = (sdk.clone(), urls[0].clone(), key.clone(), form.clone());
        tokio::spawn(async move { sdk.post_form(&url, &key, &form).await })
    };
    // At `a`: journaled by A, then sent.
    eventually(
        Duration::from_secs(20),
        &format!("A's {order} reached a"),
        || async { sim.request_count("a") > at_a },
    )
    .await;
    let sent = Instant::now();
    signal(&proxies[0], "-STOP");
    // A's request was admitted with the hold and the error; B's resume will be charged.
    sim.set_faults("a", Faults::default());
    let took_over = take_over(sdk, &urls[1], &key, &form).await;
    assert_taken_over_at_a(order, &took_over, &proxies[1]).await;
    (holder, took_over, sent)
}

/// Issue 12: a stalled holder that wakes to a definite "not processed" must not fail over.
///
/// Instance 0 (A) sends payment HOLD to provider `a`, which holds the request, then answers
/// 503 (Adyen's dialect: answered, not processed). While `a` holds it, A is paused past its
/// lease; instance 1 (B) takes the payment over and resumes it at `a` with the journaled
/// provider key: charged. A wakes before its own provider timeout and reads `a`'s 503. A
/// fresh holder would try `b` next; A's claim is fenced, so journaling that attempt fails
/// (`note_attempt`) and nothing may be sent: `b` must see no request at all.
async fn stalled_holder_woken_by_a_definite_no(
    sim: &Simulator,
    proxies: &[ChildProxy],
    urls: &[String],
    sdk: &Sdk,
) {
    let (key, form) = ("k-HOLD", card("HOLD"));
    let at_b = sim.request_count("b");
    let (holder, took_over, sent) =
        hold_pause_and_take_over(sim, proxies, urls, sdk, "HOLD", 503).await;
    // What A reads on waking must be `a`'s 503, not its own timeout: it wakes in time.
    let woken_after = sent.elapsed();
    assert!(
        woken_after < Duration::from_millis(PROVIDER_TIMEOUT_MS - 1_000),
        "B took HOLD over only {woken_after:?} after A sent it: too late to wake A before \
         its {PROVIDER_TIMEOUT_MS} ms provider timeout"
    );
    signal(&proxies[0], "-CONT");
    let woke = holder
        .await
        .unwrap()
        .reply
        .expect("the woken holder answers");
    // The ledgers: charged once, at `a`; `b` never saw a request.
    let charged = charges_for(sim, "HOLD");
    assert_eq!(charged.len(), 1, "{charged:?}");
    assert_eq!(charged[0].provider, "a");
    assert_eq!(sim.request_count("b"), at_b, "the woken holder sent to b");
    // A refuses (retry later) rather than send anything: not a failure the storefront would
    // act on, since B charged the payment.
    assert_eq!(
        (woke.status.as_u16(), woke.json()["error"]["code"].as_str()),
        (503, Some("state_unavailable")),
        "{}\n{}",
        String::from_utf8_lossy(&woke.body),
        proxies[0].log_tail()
    );
    proxies[0]
        .wait_for_log(
            "could not journal the attempt; not sending it",
            Duration::from_secs(5),
        )
        .await;
    let log = proxies[0].log_tail();
    assert!(
        log.contains("note_attempt") && log.contains("claim lost to a takeover (fenced)"),
        "{log}"
    );
    // A's own account: one attempt at `a`, answered not processed; none at `b`, and no
    // failover to it.
    let metrics = metrics_text(&HttpClient::default(), proxies[0].admin).await;
    let a_not_processed = [("provider", "a"), ("outcome", "answered_not_processed")];
    assert_eq!(
        metric(&metrics, "payproxy_attempts_total", &a_not_processed),
        Some(1.0)
    );
    assert_eq!(
        metric(&metrics, "payproxy_attempts_total", &[("provider", "b")]),
        None
    );
    assert_eq!(
        metric(&metrics, "payproxy_failovers_total", &[("to", "b")]),
        None,
        "A counted a failover to b"
    );
    // The storefront's retry at A gets B's answer.
    assert_replays(sdk, &urls[0], key, &form, &took_over.0).await;
}

/// Issue 12: a stalled holder's late payment-record write is fenced by its idempotency claim.
///
/// Instance 0 (A) sends payment REFUSE to `a`, which holds the request, then answers 422
/// (a refusal of the request: answered, not processed, no failover, recorded as failed).
/// A is paused past its lease meanwhile; instance 1 (B) takes the payment over and resumes
/// it at `a`: charged and recorded as succeeded. A wakes to the 422; recording it would
/// turn a charged payment into a failed one. Its write must be refused: A answers 409
/// `payment_processing`, and the record (retrieved at A) stays B's.
async fn stalled_holder_woken_by_a_refusal(
    sim: &Simulator,
    proxies: &[ChildProxy],
    urls: &[String],
    sdk: &Sdk,
) {
    let (key, form) = ("k-REFUSE", card("REFUSE"));
    let (holder, took_over, _) =
        hold_pause_and_take_over(sim, proxies, urls, sdk, "REFUSE", 422).await;
    signal(&proxies[0], "-CONT");
    let woke = holder
        .await
        .unwrap()
        .reply
        .expect("the woken holder answers");
    assert_eq!(
        (woke.status.as_u16(), woke.json()["error"]["code"].as_str()),
        (409, Some("payment_processing")),
        "{}\n{}",
        String::from_utf8_lossy(&woke.body),
        proxies[0].log_tail()
    );
    let id = took_over.0.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        retrieved_status(&proxies[0], &id).await,
        "succeeded",
        "the woken holder's refusal replaced the taker's record"
    );
    assert_eq!(charges_for(sim, "REFUSE").len(), 1);
    assert_replays(sdk, &urls[0], key, &form, &took_over.0).await;
}

/// Mid-traffic: instance 1 is paused past its lease while it holds payment PAUSE, charged at
/// `a` whose answer is late (the chaos suite's timeout-after-charge fault); instance 2 takes
/// it over, then instance 1 resumes and is fenced. Traffic goes on throughout.
async fn pause_mid_traffic(
    sim: &Simulator,
    gate: &Gate,
    proxies: &[ChildProxy],
    urls: &[String],
    sdk: &Sdk,
) {
    let late = FaultKind::TimeoutAfterCharge;
    late.start(sim, FAULTED, gate, PROVIDER_TIMEOUT_MS);
    let stalled = send_and_hold(sim, sdk, &urls[1], "PAUSE").await;
    signal(&proxies[1], "-STOP");
    late.end(sim, FAULTED, gate).await;
    let took_over = take_over(sdk, &urls[2], "k-PAUSE", &card("PAUSE")).await;
    assert_taken_over_at_a("PAUSE", &took_over, &proxies[2]).await;
    signal(&proxies[1], "-CONT");
    woken_and_fenced(sim, sdk, &proxies[1], (stalled, "PAUSE"), &took_over.0).await;
}

/// Send payment `order` (key `k-{order}`) to `url` and wait until `a` charged it: `a` must
/// hold its answer (a fault set by the caller), so the instance holds the payment's claim.
async fn send_and_hold(
    sim: &Simulator,
    sdk: &Sdk,
    url: &str,
    order: &'static str,
) -> tokio::task::JoinHandle<Call> {
    let stalled = {
        let (sdk, url) = (sdk.clone(), url.to_string());
        tokio::spawn(async move {
            sdk.post_form(&url, &format!("k-{order}"), &card(order))
                .await
        })
    };
    eventually(
        Duration::from_secs(20),
        &format!("a charged {order}"),
        || async { !charges_for(sim, order).is_empty() },
    )
    .await;
    stalled
}

/// After SIGCONT: the paused instance's late writes for `order` are refused (fenced), the
/// storefront's retry there replays the taker's answer, and the payment is charged once.
async fn woken_and_fenced(
    sim: &Simulator,
    sdk: &Sdk,
    paused: &ChildProxy,
    (stalled, order): (tokio::task::JoinHandle<Call>, &str),
    taken: &Reply,
) {
    paused
        .wait_for_log("claim lost to a takeover (fenced)", Duration::from_secs(30))
        .await;
    let _ = stalled.await;
    let (url, key) = (paused.url("/v1/payment_intents"), format!("k-{order}"));
    assert_replays(sdk, &url, &key, &card(order), taken).await;
    assert_eq!(charges_for(sim, order).len(), 1, "{order}");
}

// ---------------------------------------------------------------------------------------
// Throughput: durable idempotent payments/s (docs/benchmarks.md)
// ---------------------------------------------------------------------------------------

/// Payments per measured run (after a warm-up of a tenth of it); `PAYPROXY_BENCH_PAYMENTS`.
fn bench_payments() -> usize {
    std::env::var("PAYPROXY_BENCH_PAYMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

/// Storefront clients sending at once.
const BENCH_CLIENTS: usize = 32;

/// Sends `count` keyed payments (prefix `tag`) over `urls` round robin, `BENCH_CLIENTS` at a
/// time; every one must succeed. Returns payments per second.
async fn throughput(sim: &Simulator, urls: &[String], tag: &str, count: usize) -> f64 {
    let sdk = one_try();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..BENCH_CLIENTS {
        let (sdk, urls, next, tag) = (sdk.clone(), urls.to_vec(), next.clone(), tag.to_string());
        clients.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return;
                }
                let order = format!("{tag}-{n}");
                let call = sdk
                    .post_form(&urls[n % urls.len()], &format!("k-{order}"), &card(&order))
                    .await;
                let reply = call
                    .reply
                    .unwrap_or_else(|| panic!("{order}: {:?}", call.tries));
                assert_eq!(reply.status, 200, "{order}");
            }
        });
    }
    while let Some(client) = clients.join_next().await {
        client.unwrap();
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    let charges = all_charges(sim);
    assert!(charges.by_reference.values().all(|c| c.len() == 1));
    rate
}

/// Run with `cargo test -p payproxy-e2e --test cluster -- --ignored --nocapture` under
/// scripts/postgres.sh's environment (see docs/benchmarks.md): redb, postgres×1 and
/// postgres×3 in one run, each on a fresh store, Postgres with fsync on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints durable idempotent payments/s"]
async fn bench_durable_idempotent_payments_per_second() {
    init_logs();
    let Some(pg) = PgCluster::start_with(true) else {
        return;
    };
    let sim = Simulator::start(&["a", "b"]).await.unwrap();
    let count = bench_payments();
    let mut rows = Vec::new();
    for (name, n) in [("redb", 1), ("postgres x1", 1), ("postgres x3", 3)] {
        let dir = tempfile::tempdir().unwrap();
        let state = if name == "redb" {
            json!({ "kind": "redb", "path": dir.path().join("state.redb") })
        } else {
            postgres_state(&pg.url())
        };
        let proxies = start_instances(&sim, None, dir.path(), n, &state).await;
        let urls: Vec<String> = proxies
            .iter()
            .map(|p| p.url("/v1/payment_intents"))
            .collect();
        let tag = name.replace(' ', "");
        throughput(&sim, &urls, &format!("warm-{tag}"), count / 10).await;
        let rate = throughput(&sim, &urls, &tag, count).await;
        rows.push((name, rate));
        drop(proxies);
    }
    println!("\n| store | instances | payments | clients | payments/s |\n|---|---|---|---|---|");
    for (name, rate) in rows {
        let instances = if name.ends_with("x3") { 3 } else { 1 };
        let store = name.split(' ').next().unwrap_or(name);
        println!("| {store} | {instances} | {count} | {BENCH_CLIENTS} | {rate:.0} |");
    }
}

// ---------------------------------------------------------------------------------------
// TLS to the database
// ---------------------------------------------------------------------------------------

/// With `state.postgres.tls` the store speaks TLS only and verifies the server: against a
/// server that rejects plaintext, it works with the CA that issued the server's certificate
/// and fails without it; without `tls` the server refuses it.
#[test]
fn postgres_store_speaks_tls_and_verifies_the_server() {
    use payproxy::store::{Begin, PostgresOptions, PostgresStore, Store};
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let Some(pg) = PgCluster::start_tls(&pki) else {
        return;
    };
    // The certificate names `localhost` and 127.0.0.1.
    let options = |tls: bool, ca: Option<&Path>| {
        let mut o = PostgresOptions::from_url(&pg.url()).unwrap();
        o.tls = tls;
        o.tls_ca = ca.map(Path::to_path_buf);
        o.connect_timeout = Duration::from_secs(5);
        o
    };
    let store = PostgresStore::open(options(true, Some(&pki.ca_cert))).unwrap();
    assert_eq!(store.begin("k", "fp", 0, 30_000).unwrap(), Begin::Started);
    let untrusted = PostgresStore::open(options(true, None))
        .unwrap_err()
        .to_string();
    assert!(untrusted.contains("certificate"), "{untrusted}");
    let plaintext = PostgresStore::open(options(false, None))
        .unwrap_err()
        .to_string();
    assert!(plaintext.contains("no encryption"), "{plaintext}");
}

// ---------------------------------------------------------------------------------------
// One operation at a time per payment, across instances (the payment's operation lock)
// ---------------------------------------------------------------------------------------

/// A card payment created without confirm on `url`; its id.
async fn create_unconfirmed(sdk: &Sdk, url: &str, order: &str) -> String {
    let mut pairs = card_from("DE", "1000", order);
    pairs.retain(|(k, _)| *k != "confirm");
    let created = sdk
        .post_form(url, &format!("k-create-{order}"), &form_with(pairs, &[]))
        .await
        .reply
        .expect("the create is answered");
    assert_eq!(
        created.status,
        200,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let body = created.json();
    assert_eq!(body["status"], "requires_confirmation", "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// The storefront-visible status of payment `id`, retrieved from `proxy`.
async fn retrieved_status(proxy: &ChildProxy, id: &str) -> Value {
    let reply = HttpClient::default()
        .get(&proxy.url(&format!("/v1/payment_intents/{id}")))
        .await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()["status"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirms_of_one_payment_with_different_keys_on_several_instances_charge_it_once() {
    init_logs();
    let Some(pg) = PgCluster::start() else { return };
    let sim = Simulator::start(&["a", "b"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxies = start_instances(&sim, None, dir.path(), 3, &postgres_state(&pg.url())).await;
    let sdk = one_try();
    let id = create_unconfirmed(&sdk, &proxies[0].url("/v1/payment_intents"), "RACE").await;
    // Each charge takes a while at the provider, so the confirms overlap.
    for name in ["a", "b"] {
        sim.set_faults(name, Faults::latency(400));
    }
    let mut confirms = tokio::task::JoinSet::new();
    for n in 0..6 {
        let (sdk, url) = (
            sdk.clone(),
            proxies[n % 3].url(&format!("/v1/payment_intents/{id}/confirm")),
        );
        confirms.spawn(async move {
            let reply = sdk
                .post_form(&url, &format!("k-confirm-{n}"), "")
                .await
                .reply;
            let reply = reply.expect("every confirm is answered");
            (reply.status.as_u16(), reply.json())
        });
    }
    let mut answers = Vec::new();
    while let Some(answer) = confirms.join_next().await {
        answers.push(answer.unwrap());
    }
    let charged: Vec<_> = answers.iter().filter(|(s, _)| *s == 200).collect();
    assert_eq!(charged.len(), 1, "{answers:?}");
    assert_eq!(charged[0].1["status"], "succeeded", "{answers:?}");
    // The others were told the payment is busy or no longer awaiting a confirm.
    for (status, body) in &answers {
        if *status != 200 {
            let code = body["error"]["code"].as_str().unwrap_or_default();
            assert!(
                (*status == 409 && code == "lock_timeout")
                    || (*status == 400 && code == "payment_intent_unexpected_state"),
                "{status} {body}"
            );
        }
    }
    assert_eq!(
        charges_for(&sim, "RACE").len(),
        1,
        "{:?}",
        all_charges(&sim)
    );
    for proxy in &proxies {
        assert_eq!(retrieved_status(proxy, &id).await, "succeeded");
    }
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_stalled_past_its_lock_lease_is_neither_repeated_elsewhere_nor_recorded_late() {
    init_logs();
    let Some(pg) = PgCluster::start() else { return };
    let sim = Simulator::start(&["a", "b"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxies = start_instances(&sim, None, dir.path(), 3, &postgres_state(&pg.url())).await;
    let sdk = one_try();
    let id = create_unconfirmed(&sdk, &proxies[0].url("/v1/payment_intents"), "HOLD").await;
    let confirm = |i: usize| proxies[i].url(&format!("/v1/payment_intents/{id}/confirm"));

    // Instance 2 confirms with key k1: provider a charges, and the answer is slow to come.
    sim.set_faults("a", Faults::timeout_after_charge(20_000));
    let stalled = {
        let (sdk, url) = (sdk.clone(), confirm(2));
        tokio::spawn(async move { sdk.post_form(&url, "k1", "").await })
    };
    eventually(Duration::from_secs(20), "a charged HOLD", || async {
        !charges_for(&sim, "HOLD").is_empty()
    })
    .await;
    // Instance 2 stalls past its leases (a paused VM or process).
    signal(&proxies[2], "-STOP");
    sim.set_faults("a", Faults::default());

    // A confirm with another key waits while the lock's lease lives, then takes the lock
    // over, finds the journaled attempt and sends nothing: the payment may be charged.
    let mut busy = 0;
    let unresolved = loop {
        let reply = sdk.post_form(&confirm(0), "k2", "").await.reply;
        let reply = reply.expect("instance 0 answers");
        let body = reply.json();
        match (reply.status.as_u16(), body["error"]["code"].as_str()) {
            (409, Some("lock_timeout")) => busy += 1,
            (409, Some("payment_processing")) => break body,
            other => panic!("a second confirm while the first may have charged: {other:?} {body}"),
        }
        assert!(busy < 1_000, "the lock was never taken over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(busy > 0, "the live lease was not honoured: {unresolved}");
    proxies[0]
        .wait_for_log("took over a payment's lock", Duration::from_secs(5))
        .await;
    assert_eq!(retrieved_status(&proxies[1], &id).await, "processing");
    assert_eq!(charges_for(&sim, "HOLD").len(), 1);
    assert_eq!(sim.request_count("b"), 0, "nothing went to b");

    // Instance 2 wakes: what it learns is not recorded over the other instances' record.
    signal(&proxies[2], "-CONT");
    proxies[2]
        .wait_for_log(
            "a takeover fenced this request's record write",
            Duration::from_secs(60),
        )
        .await;
    let late = stalled.await.unwrap().reply.expect("instance 2 answers");
    assert_eq!(
        (late.status.as_u16(), late.json()["error"]["code"].clone()),
        (409, json!("payment_processing")),
        "{}",
        String::from_utf8_lossy(&late.body)
    );
    assert_eq!(retrieved_status(&proxies[0], &id).await, "processing");

    // The storefront retries k1 (on another instance): it resumes the journaled attempt at
    // a with the same provider key, which answers with the one charge.
    let (resolved, _) = pay(&sdk, &[confirm(1)], 0, "k1", "", Duration::from_secs(60)).await;
    let resolved = resolved.expect("the retry is answered");
    assert_eq!(
        (resolved.status.as_u16(), resolved.json()["status"].clone()),
        (200, json!("succeeded")),
        "{}",
        String::from_utf8_lossy(&resolved.body)
    );
    for proxy in &proxies {
        assert_eq!(retrieved_status(proxy, &id).await, "succeeded");
    }
    // k2 again: the payment no longer awaits a confirm; still one charge, none at b.
    let again = sdk
        .post_form(&confirm(0), "k2-again", "")
        .await
        .reply
        .unwrap();
    assert_eq!(
        again.status,
        400,
        "{}",
        String::from_utf8_lossy(&again.body)
    );
    assert_eq!(charges_for(&sim, "HOLD").len(), 1);
    assert_eq!(sim.request_count("b"), 0, "nothing went to b");
    drop(pg);
}
