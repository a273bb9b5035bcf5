//! Three payproxy instances sharing one PostgreSQL (issue 12): storefront clients spread
//! payments over the instances and retry on another instance with the same Idempotency-Key,
//! while an instance is paused past its lease (SIGSTOP, then SIGCONT), another is killed
//! with SIGKILL and restarted, and the database restarts mid-traffic. Checked afterwards:
//! no payment charged twice (simulator ledgers), every acknowledged payment replays the same
//! payment from any instance, and success ≥ 99.5 % (a healthy provider exists throughout).
//!
//! The test runs its own Postgres cluster (it restarts it), from the binaries that
//! scripts/test.sh installs; without `PAYPROXY_TEST_POSTGRES_URL` it is skipped loudly.
//! Faults are triggered by progress (payments answered), never by sleeps.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use payproxy_e2e::chaos::{
    all_charges, charges_for, eventually, metric, metrics_text, two_provider_config, ChildProxy,
    ReservedPort, RetryPolicy, Sdk,
};
use payproxy_e2e::postgres::PgCluster;
use payproxy_e2e::*;
use serde_json::{json, Value};

/// Claims lapse this long after their holder stops renewing them.
const LEASE_MS: u64 = 1_500;
const PAYMENTS: usize = 240;
const CONCURRENCY: usize = 6;

/// The postgres state of these tests (inline URL: a test cannot safely change its own
/// environment while other threads run; examples/cluster shows `{"env": "VAR"}`).
fn postgres_state(url: &str) -> Value {
    json!({
        "kind": "postgres",
        "postgres": { "url": url, "lease_ms": LEASE_MS, "pool_size": 4,
                      "connect_timeout_ms": 2_000 },
    })
}

fn config(sim: &Simulator, listen: SocketAddr, admin: SocketAddr, state: &Value) -> Value {
    two_provider_config(sim, (listen, admin), 5_000, 10_000, state.clone())
}

fn card(order: &str) -> String {
    form_with(card_from("DE", "1000", order), &[])
}

/// `n` instances with `state`.
async fn start_instances(sim: &Simulator, dir: &Path, n: usize, state: &Value) -> Vec<ChildProxy> {
    let mut proxies = Vec::new();
    for i in 0..n {
        let (listen, admin) = (ReservedPort::new(), ReservedPort::new());
        let sub = dir.join(format!("i{i}"));
        std::fs::create_dir_all(&sub).unwrap();
        let path = write_config(&sub, &config(sim, listen.addr(), admin.addr(), state));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_postgres_charge_once_through_pause_kill_and_db_restart() {
    init_logs();
    let Some(pg) = PgCluster::start() else { return };
    let sim = Simulator::start(&["a", "b"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut proxies = start_instances(&sim, dir.path(), 3, &postgres_state(&pg.url())).await;
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
    let stalled = {
        let (sdk, url) = (sdk.clone(), urls[2].clone());
        tokio::spawn(async move { sdk.post_form(&url, "k-STALL", &card("STALL")).await })
    };
    eventually(Duration::from_secs(20), "a charged STALL", || async {
        !charges_for(&sim, "STALL").is_empty()
    })
    .await;
    signal(&proxies[2], "-STOP");
    sim.set_faults("a", Faults::default());
    // Instance 0 refuses while instance 2's lease lives, then takes the payment over at the
    // same provider with the same provider key.
    let mut refused = 0;
    let took_over = loop {
        let call = sdk.post_form(&urls[0], "k-STALL", &card("STALL")).await;
        match call.reply {
            Some(r) if r.status == 409 => refused += 1,
            Some(r) => break r,
            None => panic!("instance 0 did not answer: {:?}", call.tries),
        }
        assert!(refused < 500, "never taken over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (took_over.status.as_u16(), took_over.provider()),
        (200, Some("a")),
        "{}\n{}",
        String::from_utf8_lossy(&took_over.body),
        proxies[0].log_tail()
    );
    assert_eq!(took_over.json()["status"], "succeeded");
    assert!(refused > 0, "the live lease was not honoured");
    proxies[0]
        .wait_for_log(
            "resuming a payment whose holder's lease expired",
            Duration::from_secs(5),
        )
        .await;
    signal(&proxies[2], "-CONT");
    // The paused instance wakes up: whatever it tries to record is refused.
    proxies[2]
        .wait_for_log("claim lost to a takeover (fenced)", Duration::from_secs(30))
        .await;
    let _ = stalled.await;
    let again = sdk
        .post_form(&urls[2], "k-STALL", &card("STALL"))
        .await
        .reply
        .expect("instance 2 answers");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, took_over.body);
    assert_eq!(charges_for(&sim, "STALL").len(), 1);

    // ---- 2. traffic over all instances; kill -9, restart, and a database restart ----
    let done = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    let mut lanes = tokio::task::JoinSet::new();
    for lane in 0..CONCURRENCY {
        let (sdk, urls, done, results) = (sdk.clone(), urls.clone(), done.clone(), results.clone());
        lanes.spawn(async move {
            for n in (lane..PAYMENTS).step_by(CONCURRENCY) {
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
                let outcome = reply.map(|r| {
                    let body = r.json();
                    (
                        r.status.as_u16(),
                        body["id"].as_str().map(str::to_string),
                        body["status"].clone(),
                    )
                });
                results.lock().unwrap().insert(n, (outcome, tries));
                done.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    let progress = |at: usize| {
        let done = done.clone();
        async move {
            eventually(
                Duration::from_secs(90),
                &format!("{at} payments answered"),
                || async { done.load(Ordering::SeqCst) >= at },
            )
            .await
        }
    };
    progress(40).await;
    proxies[1].kill9();
    progress(90).await;
    proxies[1].restart().await;
    progress(130).await;
    let pg = tokio::task::spawn_blocking(move || {
        pg.restart();
        pg
    })
    .await
    .unwrap();
    while let Some(lane) = lanes.join_next().await {
        lane.unwrap();
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
    let succeeded: Vec<(usize, String)> = results
        .iter()
        .filter_map(|(n, (outcome, _))| match outcome {
            Some((200, Some(id), status)) if status == "succeeded" => Some((*n, id.clone())),
            _ => None,
        })
        .collect();
    let failed: Vec<_> = results
        .iter()
        .filter(|(n, _)| !succeeded.iter().any(|(m, _)| m == *n))
        .collect();
    assert!(
        succeeded.len() * 1000 >= PAYMENTS * 995,
        "success {}/{PAYMENTS}; failed: {failed:?}\n{}\n{}",
        succeeded.len(),
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
    eprintln!(
        "cluster: {}/{PAYMENTS} succeeded, {retried} needed another instance or a retry",
        succeeded.len()
    );
    drop(pg);
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
        let proxies = start_instances(&sim, dir.path(), n, &state).await;
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
    let proxies = start_instances(&sim, dir.path(), 3, &postgres_state(&pg.url())).await;
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
    let proxies = start_instances(&sim, dir.path(), 3, &postgres_state(&pg.url())).await;
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
        .wait_for_log("the payment's lock was taken over", Duration::from_secs(60))
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
