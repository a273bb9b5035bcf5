//! Bounded, restart-safe state, end to end (issue 9, point 5): a payment in flight when the
//! proxy is killed resumes at once after the restart, charged once; and under steady keyed
//! traffic with a short TTL the background purge keeps the redb file from growing.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::Method;
use payproxy_e2e::chaos::{
    charges_for, eventually, metric, metrics_text, two_provider_config, ChildProxy, ReservedPort,
};
use payproxy_e2e::*;
use provider_sim::SentWebhook;
use serde_json::{json, Value};

/// One payment route over providers `a` then `b` (Adyen's protocol), state in `state`. A
/// 20 s deadline: the old rule would refuse the key for 60 s after the crash.
fn config(sim: &Simulator, listen: SocketAddr, admin: SocketAddr, state: Value) -> Value {
    two_provider_config(sim, (listen, admin), 60_000, 20_000, state)
}

/// Simulated providers `a` and `b`, and a payproxy child process over them with its state in
/// a redb file ([`config`], changed by `change` first): the simulator, the directory (kept
/// for as long as the test runs), the proxy and its admin address. Its ports are held for
/// the whole test: a restart gets the same ones back.
async fn proxy_on_redb(
    change: impl FnOnce(&mut Value),
) -> (Simulator, tempfile::TempDir, ChildProxy, SocketAddr) {
    let sim = Simulator::start(&["a", "b"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin) = (ReservedPort::new(), ReservedPort::new());
    let admin_addr = admin.addr();
    let state = json!({ "kind": "redb", "path": dir.path().join("state.redb") });
    let mut config = config(&sim, listen.addr(), admin_addr, state);
    change(&mut config);
    let config_path = write_config(dir.path(), &config);
    let proxy = ChildProxy::start(&config_path, &dir.path().join("proxy.log"), listen, admin).await;
    (sim, dir, proxy, admin_addr)
}

fn card(order: &str) -> String {
    form_with(card_from("DE", "1000", order), &[])
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// POST `body` to `url` through the proxy while `a` holds its answers back (it processes each
/// request in full first), and kill the proxy with `kill -9` once `processed` holds: the
/// request's holder dies with it in flight at the provider. `a` answers at once again after.
async fn kill_mid_flight(
    proxy: &mut ChildProxy,
    sim: &Simulator,
    (url, headers, body): (&str, &[(&str, &str)], String),
    what: &str,
    processed: impl AsyncFnMut() -> bool,
) {
    sim.set_faults("a", Faults::timeout_after_charge(30_000));
    let first = {
        let url = url.to_string();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tokio::spawn(async move {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            HttpClient::default()
                .try_send(Method::POST, &url, &headers, body)
                .await
        })
    };
    eventually(Duration::from_secs(10), what, processed).await;
    proxy.kill9();
    assert!(first.await.unwrap().is_err(), "the killed proxy answered");
    sim.set_faults("a", Faults::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_in_flight_when_the_proxy_is_killed_resumes_at_once_after_the_restart() {
    init_logs();
    let (sim, _dir, mut proxy, _) = proxy_on_redb(|_| {}).await;
    let client = HttpClient::default();
    let url = proxy.url("/v1/payment_intents");
    let headers = [
        ("content-type", "application/x-www-form-urlencoded"),
        ("idempotency-key", "k-KILL-1"),
    ];

    // `a` charges the payment and holds its answer back; the proxy is killed meanwhile.
    kill_mid_flight(
        &mut proxy,
        &sim,
        (&url, &headers, card("KILL-1")),
        "a charged the payment",
        || async { !charges_for(&sim, "KILL-1").is_empty() },
    )
    .await;

    // Restarted on the same file, the proxy knows the key was its previous incarnation's:
    // the SDK's first retry resumes it at `a` with the same provider key (not 409).
    proxy.restart().await;
    let retry = client.post_form(&url, &headers[1..], &card("KILL-1")).await;
    assert_eq!(
        (retry.status.as_u16(), retry.provider()),
        (200, Some("a")),
        "{}\n{}",
        String::from_utf8_lossy(&retry.body),
        proxy.log_tail()
    );
    assert_eq!(retry.json()["status"], "succeeded");
    let charges = charges_for(&sim, "KILL-1");
    assert_eq!(charges.len(), 1, "{charges:?}");
    assert_eq!(charges[0].provider, "a");
    assert_eq!(
        sim.request_count("a"),
        2,
        "the attempt, then the resumed one"
    );
    assert_eq!(sim.request_count("b"), 0, "no other provider asked");
    assert!(
        proxy
            .log_tail()
            .contains("resuming a payment held by a previous process"),
        "{}",
        proxy.log_tail()
    );
    let again = client.post_form(&url, &headers[1..], &card("KILL-1")).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, retry.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_killed_mid_flight_is_not_charged_again_by_a_confirm_with_another_key() {
    init_logs();
    let (sim, _dir, mut proxy, _) = proxy_on_redb(|_| {}).await;
    let client = HttpClient::default();
    let mut pairs = card_from("DE", "1000", "KILL-2");
    pairs.retain(|(k, _)| *k != "confirm");
    let created = client
        .post_form(
            &proxy.url("/v1/payment_intents"),
            &[],
            &form_with(pairs, &[]),
        )
        .await;
    created.assert_status(200);
    let id = created.json()["id"].as_str().unwrap().to_string();
    let confirm_url = proxy.url(&format!("/v1/payment_intents/{id}/confirm"));

    // The confirm (key k1) reaches `a`, which charges and holds its answer; killed meanwhile.
    kill_mid_flight(
        &mut proxy,
        &sim,
        (&confirm_url, &[("idempotency-key", "k1")], String::new()),
        "a charged the payment",
        || async { !charges_for(&sim, "KILL-2").is_empty() },
    )
    .await;
    proxy.restart().await;

    // A confirm with another key finds the lock the killed confirm journaled its attempt on:
    // nothing is sent, the payment shows processing.
    let other = client
        .post_form(&confirm_url, &[("idempotency-key", "k2")], "")
        .await;
    assert_eq!(
        (other.status.as_u16(), other.json()["error"]["code"].clone()),
        (409, json!("payment_processing")),
        "{}",
        String::from_utf8_lossy(&other.body)
    );
    let retrieved = client
        .get(&proxy.url(&format!("/v1/payment_intents/{id}")))
        .await;
    assert_eq!(retrieved.json()["status"], "processing");
    assert_eq!(sim.request_count("a"), 1, "nothing more sent to a");
    assert_eq!(sim.request_count("b"), 0, "nothing sent to b");

    // The retry of k1 resumes the attempt at `a` with the same provider key: one charge.
    let retry = client
        .post_form(&confirm_url, &[("idempotency-key", "k1")], "")
        .await;
    assert_eq!(
        (retry.status.as_u16(), retry.json()["status"].clone()),
        (200, json!("succeeded")),
        "{}",
        String::from_utf8_lossy(&retry.body)
    );
    let retrieved = client
        .get(&proxy.url(&format!("/v1/payment_intents/{id}")))
        .await;
    assert_eq!(retrieved.json()["status"], "succeeded");
    assert_eq!(charges_for(&sim, "KILL-2").len(), 1);
    assert_eq!(sim.request_count("b"), 0, "nothing sent to b");
}

/// A capture killed mid-flight whose provider's notification arrives after the restart. It
/// is applied under the lock taken over from the dead process: the payment is captured, and
/// marked unresolved, since the capture's journaled attempt may have reached the provider. The capture's retry resumes that attempt, finds the payment captured and answers
/// it, clearing the mark: the payment then reads succeeded and takes a refund. (Before, the
/// retry was refused as a capture of a paid payment and the mark stayed: the payment read
/// "processing" and refused every operation for good.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_killed_mid_flight_and_notified_meanwhile_is_answered_by_its_retry() {
    const HMAC: &str = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056";
    // Adyen needs the amount of a capture.
    const CAPTURE: &str = "amount_to_capture=1000";
    init_logs();
    let (sim, _dir, mut proxy, admin_addr) = proxy_on_redb(|config| {
        config["providers"]["a"]["credentials"]["hmac_key"] = HMAC.into();
    })
    .await;
    sim.set_webhooks("a", Some(&proxy.url("/webhooks/a")), HMAC);
    let client = HttpClient::default();

    let authorised = client
        .post_form(
            &proxy.url("/v1/payment_intents"),
            &[],
            &form_with(
                card_from("DE", "1000", "CAP-1"),
                &[("capture_method", "manual")],
            ),
        )
        .await;
    assert_eq!(
        authorised.json()["status"],
        "requires_capture",
        "{}",
        authorised.json()
    );
    let id = authorised.json()["id"].as_str().unwrap().to_string();
    eventually(
        Duration::from_secs(10),
        "the authorisation's notification delivered",
        || async { sim.webhooks_sent("a").iter().any(|w| w.delivered()) },
    )
    .await;
    // From now on `a`'s deliveries fail: the test delivers its capture notification itself
    // after the restart, as `a` redelivering it (Adyen does, until it is accepted), whenever
    // the restart ends.
    sim.set_webhooks("a", Some("http://127.0.0.1:9/closed"), HMAC);

    // The capture (key c1) reaches `a`, which captures and holds its answer; the proxy is
    // killed meanwhile.
    let capture_url = proxy.url(&format!("/v1/payment_intents/{id}/capture"));
    let form_type = ("content-type", "application/x-www-form-urlencoded");
    kill_mid_flight(
        &mut proxy,
        &sim,
        (
            &capture_url,
            &[("idempotency-key", "c1"), form_type],
            CAPTURE.into(),
        ),
        "a captured the payment",
        || async {
            charges_for(&sim, "CAP-1")
                .iter()
                .any(|c| c.status == "succeeded")
        },
    )
    .await;
    proxy.restart().await;

    // `a`'s CAPTURE notification, exactly as it built and signed it.
    let captured = |w: &SentWebhook| String::from_utf8_lossy(&w.body).contains("\"CAPTURE\"");
    eventually(
        Duration::from_secs(10),
        "a notified the capture",
        || async { sim.webhooks_sent("a").iter().any(captured) },
    )
    .await;
    let notice = sim
        .webhooks_sent("a")
        .into_iter()
        .find(captured)
        .expect("a notified the capture");
    let mut headers: Vec<(&str, &str)> = notice
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        headers.push(("content-type", "application/json"));
    }
    let delivered = client
        .send(
            Method::POST,
            &proxy.url("/webhooks/a"),
            &headers,
            notice.body.clone(),
        )
        .await;
    assert!(delivered.status.is_success(), "{:?}", delivered.status);
    eventually(
        Duration::from_secs(30),
        "the capture's notification applied",
        || async {
            let text = metrics_text(&client, admin_addr).await;
            let labels = [("provider", "a"), ("result", "applied")];
            metric(&text, "payproxy_webhook_notifications_total", &labels).unwrap_or(0.0) >= 1.0
        },
    )
    .await;

    // Applied under the lock taken over from the dead process, whose capture attempt may
    // have reached `a`: the payment waits for that request's retry.
    let waiting = client
        .get(&proxy.url(&format!("/v1/payment_intents/{id}")))
        .await;
    assert_eq!(waiting.json()["status"], "processing", "{}", waiting.json());

    // The capture's retry resumes its attempt, finds the payment captured: answered.
    let retry = client
        .post_form(&capture_url, &[("idempotency-key", "c1")], CAPTURE)
        .await;
    assert_eq!(
        (retry.status.as_u16(), retry.json()["status"].clone()),
        (200, json!("succeeded")),
        "{}\n{}",
        String::from_utf8_lossy(&retry.body),
        proxy.log_tail()
    );
    let retrieved = client
        .get(&proxy.url(&format!("/v1/payment_intents/{id}")))
        .await;
    assert_eq!(
        retrieved.json()["status"],
        "succeeded",
        "{}",
        retrieved.json()
    );
    let refund = client
        .post_form(
            &proxy.url("/v1/refunds"),
            &[],
            &form(&[("payment_intent", id.as_str()), ("amount", "400")]),
        )
        .await;
    refund.assert_status(200);
    assert_eq!(refund.json()["amount"], 400, "{}", refund.json());
    let captures = sim
        .webhooks_sent("a")
        .iter()
        .filter(|w| captured(w))
        .count();
    assert_eq!(captures, 1, "one capture notified");
    assert_eq!(
        sim.request_count("a"),
        3,
        "the authorisation, the capture, the refund"
    );
}

/// Keyed payments through the proxy, `CONCURRENCY` at a time.
/// On the redb store a keyed payment makes three calls to the store's writer: the claim,
/// the journaled attempt, and the payment record with the idempotency record's answer in one
/// call. Both of the last are durable before the storefront is answered: killed right after
/// the answer, the restarted proxy replays it under the key and has the payment's record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_payment_takes_three_writer_calls_and_its_record_and_answer_survive_kill_9() {
    init_logs();
    let (sim, _dir, mut proxy, admin_addr) = proxy_on_redb(|_| {}).await;
    let client = HttpClient::default();
    let url = proxy.url("/v1/payment_intents");
    let key = [("idempotency-key", "k-THREE-1")];
    let calls = |text: &str| metric(text, "payproxy_store_writer_calls_total", &[]);

    let before = calls(&metrics_text(&client, admin_addr).await);
    assert_eq!(before, Some(0.0), "no store call before the payment");
    let paid = client.post_form(&url, &key, &card("THREE-1")).await;
    paid.assert_status(200);
    assert_eq!(paid.json()["status"], "succeeded");
    let text = metrics_text(&client, admin_addr).await;
    assert_eq!(
        calls(&text),
        Some(3.0),
        "claim, journal, record with answer"
    );
    let batches = metric(&text, "payproxy_store_writer_batches_total", &[]).unwrap();
    assert!((1.0..=3.0).contains(&batches), "{batches} batches");
    // Each batch, with its calls and its settle (commit and fsync), in the histograms.
    let histogram = |name: &str, part: &str| metric(&text, &format!("{name}_{part}"), &[]);
    let sizes = "payproxy_store_writer_batch_calls";
    assert_eq!(histogram(sizes, "count"), Some(batches));
    assert_eq!(histogram(sizes, "sum"), Some(3.0));
    let settles = "payproxy_store_writer_settle_seconds";
    assert_eq!(histogram(settles, "count"), Some(batches));
    assert!(
        histogram(settles, "sum").unwrap() > 0.0,
        "an fsync takes time"
    );

    proxy.kill9();
    proxy.restart().await;
    let again = client.post_form(&url, &key, &card("THREE-1")).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, paid.body);
    let id = paid.json()["id"].as_str().unwrap().to_string();
    let found = client
        .get(&proxy.url(&format!("/v1/payment_intents/{id}")))
        .await;
    found.assert_status(200);
    assert_eq!(found.json()["id"], id);
    assert_eq!(found.json()["status"], "succeeded");
    assert_eq!(charges_for(&sim, "THREE-1").len(), 1);
}

const PAYMENTS: usize = 4_000;
const CONCURRENCY: usize = 4;

async fn pay_many(client: &HttpClient, env: &Env, from: usize, to: usize) {
    let url = env.url("/v1/payment_intents");
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..CONCURRENCY {
        let (client, url) = (client.clone(), url.clone());
        tasks.spawn(async move {
            for n in (from + lane..to).step_by(CONCURRENCY) {
                let order = format!("BOUND-{n}");
                let key = format!("k-{order}");
                let reply = client
                    .post_form(&url, &[("idempotency-key", &key)], &card(&order))
                    .await;
                reply.assert_status(200);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

const SAMPLE_EVERY: usize = 250;

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// The most the store file may take at any sample. redb reuses the pages a purge frees;
/// within its first region it grows the file by doubling when a transaction needs more than
/// is free, and trims half of a free tail, so the length jumps ×2 either way around what the
/// live records (a TTL's worth of payments, ~100 here) and one purge batch need: well under
/// 1 MiB measured, 4 MiB with room for a faster machine. Kept forever, these 4,000 payments
/// take ~14 MB (measured with the purge off): past this bound after ~1,200 payments.
const BUDGET: u64 = 4 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_payments_with_a_short_ttl_leave_the_store_file_bounded() {
    let sim = Simulator::start(&["a", "b"]).await.unwrap();
    let state = json!({
        "kind": "redb", "path": "state.redb",
        "idempotency_ttl_ms": 200, "payment_retention_ms": 200, "purge_interval_ms": 100,
    });
    let (port0, admin0) = (loopback(0), loopback(0));
    let env = Env::start(config(&sim, port0, admin0, state)).await;
    let client = HttpClient::default();
    let db = env.dir.path().join("state.redb");

    let mut sizes = Vec::new();
    for chunk in 0..PAYMENTS / SAMPLE_EVERY {
        pay_many(
            &client,
            &env,
            chunk * SAMPLE_EVERY,
            (chunk + 1) * SAMPLE_EVERY,
        )
        .await;
        sizes.push(file_size(&db));
    }
    eprintln!("store file after each {SAMPLE_EVERY} payments: {sizes:?}");
    // Bounded by a constant while the traffic grows sixteenfold: it levelled off.
    assert!(
        sizes.iter().all(|&size| size <= BUDGET),
        "the file grows with traffic: {sizes:?}"
    );

    // What expired is gone from the store, not only unreplayed.
    let text = metrics_text(&client, env.proxy.admin_addr).await;
    let purged = |table| {
        metric(&text, "payproxy_store_purged_total", &[("table", table)])
            .unwrap_or_else(|| panic!("no payproxy_store_purged_total for {table}:\n{text}"))
    };
    let least = (PAYMENTS - PAYMENTS / 10) as f64;
    // (Owners are written for refunds and provider ids, not for these payments: the store
    // tests cover them.)
    for table in ["idempotency", "payments"] {
        assert!(purged(table) >= least, "{table}: {} purged", purged(table));
    }
    // The first key is no longer payproxy's to replay: its retry runs again, and only the
    // provider's own idempotency (the same provider key) keeps it one charge.
    let before = sim.request_count("a");
    let retry = client
        .post_form(
            &env.url("/v1/payment_intents"),
            &[("idempotency-key", "k-BOUND-0")],
            &card("BOUND-0"),
        )
        .await;
    retry.assert_status(200);
    assert_eq!(retry.header("idempotent-replayed"), None);
    assert_eq!(sim.request_count("a"), before + 1);
    assert_eq!(charges_for(&sim, "BOUND-0").len(), 1);
    env.proxy.shutdown().await;
}
