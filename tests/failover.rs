//! Failover without double charges, end to end: a storefront speaking Stripe's API to payproxy,
//! simulated providers behind it with injected faults. Every test asserts what the storefront
//! got (status, Stripe JSON, headers), what the providers saw (ledgers, request counts) and
//! what the proxy reports (`/metrics`, `/admin/status`).

use std::time::{Duration, Instant};

use payproxy_e2e::chaos::{
    charges_for, dialect_plugins, eventually, metric, metrics_text, payment_route, provider,
    router_plugin, status_breaker, Gate,
};
use payproxy_e2e::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A config with one payment route over `providers` (name → provider JSON) in that order.
fn config(providers: &[(&str, Value)], failover: Value, breaker: Value) -> Value {
    let order: Vec<&str> = providers.iter().map(|(n, _)| *n).collect();
    let mut map = serde_json::Map::new();
    for (name, p) in providers {
        map.insert(name.to_string(), p.clone());
    }
    json!({
        "listeners": [ { "addr": "127.0.0.1:0" } ],
        "admin": { "addr": "127.0.0.1:0" },
        "reload": { "watch": false },
        "plugins": dialect_plugins(),
        "providers": map,
        "routes": [ payment_route(&order, &[], failover) ],
        "breaker": breaker,
    })
}

/// A simulated provider `name` speaking `dialect`, at its own URL.
fn sim_provider(sim: &Simulator, name: &str, dialect: &str) -> Value {
    provider(&sim.base_url(name), name, dialect, "eu")
}

/// A German card payment of `amount` cents with merchant reference `order`.
fn card(amount: &str, order: &str) -> String {
    form_with(card_from("DE", amount, order), &[])
}

async fn pay(client: &HttpClient, env: &Env, key: &str, body: &str) -> Reply {
    client
        .post_form(
            &env.url("/v1/payment_intents"),
            &[("idempotency-key", key)],
            body,
        )
        .await
}

/// A succeeded PaymentIntent answered by `provider`.
fn assert_succeeded_by(reply: &Reply, provider: &str) {
    let body = String::from_utf8_lossy(&reply.body);
    assert_eq!(reply.status, 200, "{body}");
    assert_eq!(reply.json()["status"], "succeeded", "{body}");
    assert_eq!(reply.provider(), Some(provider), "{body}");
}

/// Exactly one charge for `reference` in all ledgers, held by `provider`.
fn assert_one_charge(sim: &Simulator, reference: &str, provider: &str) {
    let charges = charges_for(sim, reference);
    assert_eq!(charges.len(), 1, "charges for {reference}: {charges:?}");
    assert_eq!(charges[0].provider, provider, "{charges:?}");
}

/// The answer for an outcome nobody knows yet: Stripe's 502 `api_error` carrying the intent
/// as `processing` (the payment may exist), from `provider`.
fn assert_unknown_outcome(reply: &Reply, provider: &str) {
    let body = reply.json();
    assert_eq!(reply.status, 502, "{body}");
    assert_eq!(body["error"]["type"], "api_error", "{body}");
    assert_eq!(
        body["error"]["payment_intent"]["status"], "processing",
        "{body}"
    );
    assert!(
        body["error"]["payment_intent"]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("pi_")),
        "{body}"
    );
    assert_eq!(reply.provider(), Some(provider), "{body}");
}

async fn metrics(client: &HttpClient, env: &Env) -> String {
    metrics_text(client, env.proxy.admin_addr).await
}

/// The breaker state gauge of `provider` (0 closed, 1 half-open, 2 open); fails when the
/// series does not exist.
async fn breaker_gauge(client: &HttpClient, env: &Env, provider: &str) -> f64 {
    let text = metrics(client, env).await;
    metric(&text, "payproxy_breaker_state", &[("provider", provider)])
        .unwrap_or_else(|| panic!("no payproxy_breaker_state for {provider}:\n{text}"))
}

/// A counter's value; fails when no series matches (every count checked here is ≥ 1).
async fn counter(client: &HttpClient, env: &Env, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = metrics(client, env).await;
    metric(&text, name, labels).unwrap_or_else(|| panic!("no {name}{labels:?}:\n{text}"))
}

async fn reload(client: &HttpClient, env: &Env, config: &Value) {
    env.rewrite(config);
    let reply = client
        .send(http::Method::POST, &env.admin_url("/admin/reload"), &[], "")
        .await;
    reply.assert_status(200);
}

/// Whether `/metrics` has a breaker state series for `provider`.
async fn has_breaker_gauge(client: &HttpClient, env: &Env, provider: &str) -> bool {
    let label = format!("provider=\"{provider}\"");
    metrics(client, env)
        .await
        .lines()
        .any(|l| l.starts_with("payproxy_breaker_state{") && l.contains(&label))
}

/// The health book follows the reload itself, not the next payment: a provider the new
/// config drops loses its breaker series at once, with no traffic after the reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_forgets_removed_providers_without_waiting_for_a_payment() {
    let sim = Simulator::start(&["primary", "secondary"]).await.unwrap();
    let env = Env::start(config(
        &[
            ("primary", sim_provider(&sim, "primary", "adyen")),
            ("secondary", sim_provider(&sim, "secondary", "adyen")),
        ],
        json!({}),
        json!({}),
    ))
    .await;
    let client = HttpClient::default();
    let reply = pay(&client, &env, "k-forget-0", &card("1000", "FORGET-0")).await;
    assert_succeeded_by(&reply, "primary");
    assert!(has_breaker_gauge(&client, &env, "primary").await);

    let only_secondary = config(
        &[("secondary", sim_provider(&sim, "secondary", "adyen"))],
        json!({}),
        json!({}),
    );
    reload(&client, &env, &only_secondary).await;
    assert!(!has_breaker_gauge(&client, &env, "primary").await);
    env.proxy.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Outage, breaker, half-open probe, recovery
// ---------------------------------------------------------------------------------------

/// The outage test's config: the primary behind `gate`, breaker open for `open_ms`.
fn outage_config(sim: &Simulator, gate: &Gate, open_ms: u64) -> Value {
    config(
        &[
            ("primary", provider(&gate.url(), "primary", "adyen", "eu")),
            ("secondary", sim_provider(sim, "secondary", "adyen")),
        ],
        json!({}),
        json!({ "consecutive_failures": 3, "open_ms": open_ms, "close_after": 2, "half_open_probes": 1 }),
    )
}

/// No time assumption anywhere: while skips are checked the open period is a minute, far
/// beyond any run; a reload then shortens it (a reload keeps breaker state and measures the
/// open period with the new `open_ms`), and the half-open state is waited for, not slept on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_fails_over_in_the_same_request_then_the_breaker_opens_probes_and_closes() {
    let sim = Simulator::start(&["primary", "secondary"]).await.unwrap();
    let gate = Gate::start(sim.addr("primary")).await;
    let env = Env::start(outage_config(&sim, &gate, 60_000)).await;
    let client = HttpClient::default();
    let admin = env.proxy.admin_addr;

    // Healthy: the static order puts the primary first.
    let reply = pay(&client, &env, "k-out-0", &card("1000", "OUT-0")).await;
    assert_succeeded_by(&reply, "primary");
    assert_eq!(breaker_gauge(&client, &env, "primary").await, 0.0);

    // The primary's host goes down: connections are refused. The gate returns once the
    // proxy has closed its pooled connection, so every payment below has to connect.
    gate.close_and_wait_for_clients().await;
    for i in 1..=3 {
        let reference = format!("OUT-{i}");
        let reply = pay(
            &client,
            &env,
            &format!("k-{reference}"),
            &card("1000", &reference),
        )
        .await;
        assert_succeeded_by(&reply, "secondary");
        assert_one_charge(&sim, &reference, "secondary");
    }
    let failovers = [
        ("from", "primary"),
        ("to", "secondary"),
        ("reason", "not_sent"),
    ];
    assert_eq!(
        counter(&client, &env, "payproxy_failovers_total", &failovers).await,
        3.0
    );

    // Three refused connections in a row: the breaker is open.
    assert_eq!(breaker_gauge(&client, &env, "primary").await, 2.0);
    assert_eq!(status_breaker(&client, admin, "primary").await, "open");

    // While open, payments go straight to the secondary: the primary is not even tried.
    let refused = [("provider", "primary"), ("outcome", "not_sent")];
    let skipped = [("provider", "primary"), ("outcome", "breaker_open")];
    let not_sent_before = counter(&client, &env, "payproxy_attempts_total", &refused).await;
    assert_eq!(not_sent_before, 3.0);
    let sent_while_open = 5;
    for i in 1..=sent_while_open {
        let reference = format!("OPEN-{i}");
        let reply = pay(
            &client,
            &env,
            &format!("k-{reference}"),
            &card("1000", &reference),
        )
        .await;
        assert_succeeded_by(&reply, "secondary");
    }
    assert_eq!(status_breaker(&client, admin, "primary").await, "open");
    assert_eq!(
        counter(&client, &env, "payproxy_attempts_total", &refused).await,
        not_sent_before,
        "the primary was tried while its breaker was open"
    );
    assert_eq!(
        counter(&client, &env, "payproxy_attempts_total", &skipped).await,
        f64::from(sent_while_open)
    );
    assert_eq!(
        counter(&client, &env, "payproxy_failovers_total", &failovers).await,
        3.0,
        "skipping an open provider is not a failover"
    );

    // A short open period from now on: the breaker goes half-open, and one probe goes to
    // the primary; it fails (still down) and reopens.
    let open_ms = 200;
    reload(&client, &env, &outage_config(&sim, &gate, open_ms)).await;
    eventually(
        Duration::from_secs(10),
        "half-open after open_ms",
        async || status_breaker(&client, admin, "primary").await == "half_open",
    )
    .await;
    let reply = pay(&client, &env, "k-PROBE-1", &card("1000", "PROBE-1")).await;
    assert_succeeded_by(&reply, "secondary");
    assert_eq!(
        counter(&client, &env, "payproxy_attempts_total", &refused).await,
        not_sent_before + 1.0,
        "exactly one probe"
    );
    let reopened = [
        ("provider", "primary"),
        ("from", "half_open"),
        ("to", "open"),
    ];
    assert_eq!(
        counter(
            &client,
            &env,
            "payproxy_breaker_transitions_total",
            &reopened
        )
        .await,
        1.0
    );
    assert_eq!(breaker_gauge(&client, &env, "primary").await, 2.0);

    // The primary comes back; once half-open again the probes succeed and close the breaker.
    gate.open().await;
    eventually(Duration::from_secs(10), "half-open again", async || {
        status_breaker(&client, admin, "primary").await == "half_open"
    })
    .await;
    let before = sim.request_count("primary");
    for i in 1..=2 {
        let reference = format!("BACK-{i}");
        let reply = pay(
            &client,
            &env,
            &format!("k-{reference}"),
            &card("1000", &reference),
        )
        .await;
        assert_succeeded_by(&reply, "primary");
        assert_one_charge(&sim, &reference, "primary");
    }
    assert_eq!(sim.request_count("primary"), before + 2);
    assert_eq!(breaker_gauge(&client, &env, "primary").await, 0.0);
    assert_eq!(status_breaker(&client, admin, "primary").await, "closed");
    let closed = [
        ("provider", "primary"),
        ("from", "half_open"),
        ("to", "closed"),
    ];
    assert_eq!(
        counter(&client, &env, "payproxy_breaker_transitions_total", &closed).await,
        1.0
    );

    // Traffic is back on the primary.
    let secondary_before = sim.request_count("secondary");
    for i in 1..=3 {
        let reference = format!("AFTER-{i}");
        let reply = pay(
            &client,
            &env,
            &format!("k-{reference}"),
            &card("1000", &reference),
        )
        .await;
        assert_succeeded_by(&reply, "primary");
    }
    assert_eq!(sim.request_count("secondary"), secondary_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_errors_fail_over_and_an_open_breaker_stops_requests_to_the_provider() {
    let sim = Simulator::start(&["primary", "secondary"]).await.unwrap();
    let env = Env::start(config(
        &[
            ("primary", sim_provider(&sim, "primary", "adyen")),
            ("secondary", sim_provider(&sim, "secondary", "adyen")),
        ],
        json!({}),
        json!({ "consecutive_failures": 3, "open_ms": 60000 }),
    ))
    .await;
    let client = HttpClient::default();
    // 503 before processing: the simulated Adyen guarantees it did nothing.
    sim.set_faults("primary", Faults::error(503));

    for i in 1..=10 {
        let reference = format!("ERR-{i}");
        let reply = pay(
            &client,
            &env,
            &format!("k-{reference}"),
            &card("1000", &reference),
        )
        .await;
        assert_succeeded_by(&reply, "secondary");
        assert_one_charge(&sim, &reference, "secondary");
    }
    assert_eq!(
        sim.request_count("primary"),
        3,
        "the primary's request count must stop growing once its breaker is open"
    );
    assert!(sim.ledger("primary").is_empty());
    assert_eq!(
        counter(
            &client,
            &env,
            "payproxy_failovers_total",
            &[
                ("from", "primary"),
                ("to", "secondary"),
                ("reason", "answered_not_processed")
            ]
        )
        .await,
        3.0
    );
    assert_eq!(breaker_gauge(&client, &env, "primary").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_are_ambiguous_so_the_payment_is_never_sent_elsewhere() {
    let sim = Simulator::start(&["primary", "secondary"]).await.unwrap();
    let env = Env::start(config(
        &[
            ("primary", sim_provider(&sim, "primary", "adyen")),
            ("secondary", sim_provider(&sim, "secondary", "adyen")),
        ],
        json!({ "resend_attempts": 1, "resend_backoff_ms": 50 }),
        json!({ "consecutive_failures": 2, "open_ms": 60000 }),
    ))
    .await;
    let client = HttpClient::default();
    // Accept, then drop without answering: the request may have been processed.
    sim.set_faults("primary", Faults::outage());

    let reply = pay(&client, &env, "k-DROP-1", &card("1000", "DROP-1")).await;
    assert_unknown_outcome(&reply, "primary");
    assert_eq!(
        sim.request_count("secondary"),
        0,
        "an ambiguous attempt must never be sent to another provider"
    );
    assert!(charges_for(&sim, "DROP-1").is_empty());
    assert_eq!(
        counter(
            &client,
            &env,
            "payproxy_ambiguous_resolutions_total",
            &[("provider", "primary"), ("how", "pending")]
        )
        .await,
        1.0
    );
    // The attempt and its resend are two failures in a row: the breaker opened, and the next
    // payment goes to the secondary without touching the primary.
    assert_eq!(breaker_gauge(&client, &env, "primary").await, 2.0);
    let reply = pay(&client, &env, "k-DROP-2", &card("1000", "DROP-2")).await;
    assert_succeeded_by(&reply, "secondary");
    assert_one_charge(&sim, "DROP-2", "secondary");
}

// ---------------------------------------------------------------------------------------
// Ambiguous outcomes: timeout after charge, reset mid-response
// ---------------------------------------------------------------------------------------

/// Providers `a` and `b` of `dialect`; `a` gives up on answers after 300 ms. A payment's
/// deadline is 1 s, so a held idempotency record is stale (taken over) after 3 s.
async fn ambiguous_env(sim: &Simulator, dialect: &str, backoff_ms: u64) -> Env {
    let mut a = sim_provider(sim, "a", dialect);
    a["timeout_ms"] = 300.into();
    Env::start(config(
        &[("a", a), ("b", sim_provider(sim, "b", dialect))],
        json!({ "resend_attempts": 1, "resend_backoff_ms": backoff_ms, "deadline_ms": 1000 }),
        json!({}),
    ))
    .await
}

/// Pay in the background; once `a` has charged, clear its faults so the proxy's resend with the
/// same provider key gets the provider's replay.
async fn pay_and_heal_after_charge(
    sim: &Simulator,
    env: &Env,
    key: &str,
    body: String,
    reference: &str,
) -> Reply {
    let client = HttpClient::default();
    let (url, key_owned) = (env.url("/v1/payment_intents"), key.to_string());
    let payment = tokio::spawn(async move {
        client
            .post_form(&url, &[("idempotency-key", &key_owned)], &body)
            .await
    });
    eventually(Duration::from_secs(5), "a charged the payment", || async {
        !charges_for(sim, reference).is_empty()
    })
    .await;
    sim.set_faults("a", Faults::default());
    payment.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_after_charge_is_resolved_at_the_same_provider_never_elsewhere() {
    let sim = Simulator::start(&["a", "b"]).await.unwrap();
    let env = ambiguous_env(&sim, "adyen", 400).await;
    let client = HttpClient::default();
    sim.set_faults("a", Faults::timeout_after_charge(2000));

    let reply =
        pay_and_heal_after_charge(&sim, &env, "k-TAC-1", card("1000", "TAC-1"), "TAC-1").await;
    assert_succeeded_by(&reply, "a");
    assert_one_charge(&sim, "TAC-1", "a");
    assert_eq!(sim.request_count("b"), 0, "no second provider contacted");
    assert_eq!(
        sim.request_count("a"),
        2,
        "the attempt, then one resend with the same key (replayed by the provider)"
    );
    assert_eq!(
        counter(
            &client,
            &env,
            "payproxy_ambiguous_resolutions_total",
            &[("provider", "a"), ("how", "resend"), ("class", "processed")]
        )
        .await,
        1.0
    );
    // The storefront's retry replays the answer; nothing is charged again.
    let again = pay(&client, &env, "k-TAC-1", &card("1000", "TAC-1")).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json()["id"], reply.json()["id"]);
    assert_one_charge(&sim, "TAC-1", "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_after_charge_unresolved_stays_with_the_provider_until_a_retry_resolves_it() {
    let sim = Simulator::start(&["a", "b"]).await.unwrap();
    let env = ambiguous_env(&sim, "adyen", 50).await;
    let client = HttpClient::default();
    // Every answer from a comes too late, the resend's too.
    sim.set_faults("a", Faults::timeout_after_charge(1500));

    let reply = pay(&client, &env, "k-TAC-2", &card("1000", "TAC-2")).await;
    assert_unknown_outcome(&reply, "a");
    assert_one_charge(&sim, "TAC-2", "a");
    assert_eq!(sim.request_count("a"), 2, "the attempt and one resend");
    assert_eq!(sim.request_count("b"), 0, "no second provider contacted");
    assert_eq!(
        counter(
            &client,
            &env,
            "payproxy_ambiguous_resolutions_total",
            &[
                ("provider", "a"),
                ("how", "pending"),
                ("class", "ambiguous")
            ]
        )
        .await,
        1.0
    );

    // The request ended with its outcome unknown: its key is parked, not held. The SDK's
    // retry resumes it at once at the same provider with the same provider key (no 409 while
    // nothing runs), never elsewhere; still unknown, it is parked again.
    let again = pay(&client, &env, "k-TAC-2", &card("1000", "TAC-2")).await;
    assert_unknown_outcome(&again, "a");
    assert_eq!(
        again.json()["error"]["payment_intent"]["id"],
        reply.json()["error"]["payment_intent"]["id"]
    );
    assert_one_charge(&sim, "TAC-2", "a");
    assert_eq!(
        sim.request_count("a"),
        4,
        "resumed: one attempt and one resend"
    );
    assert_eq!(sim.request_count("b"), 0, "no second provider contacted");

    // The provider recovers: the next retry resumes again, and the provider replays its
    // charge.
    sim.set_faults("a", Faults::default());
    let resolved = pay(&client, &env, "k-TAC-2", &card("1000", "TAC-2")).await;
    assert_succeeded_by(&resolved, "a");
    assert_one_charge(&sim, "TAC-2", "a");
    assert_eq!(sim.request_count("a"), 5, "one resumed attempt, replayed");
    assert_eq!(sim.request_count("b"), 0);

    // From now on the answer replays.
    let replayed = pay(&client, &env, "k-TAC-2", &card("1000", "TAC-2")).await;
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!(replayed.json()["id"], resolved.json()["id"]);
    assert_eq!(sim.request_count("a"), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_mid_response_is_resolved_at_the_same_provider_never_elsewhere() {
    let sim = Simulator::start(&["a", "b"]).await.unwrap();
    let env = ambiguous_env(&sim, "grabpay", 400).await;
    let client = HttpClient::default();
    sim.set_faults("a", Faults::reset_mid_response());

    let reply =
        pay_and_heal_after_charge(&sim, &env, "k-RST-1", grabpay_shopper("RST-1"), "RST-1").await;
    assert_succeeded_by(&reply, "a");
    assert_one_charge(&sim, "RST-1", "a");
    assert_eq!(sim.request_count("b"), 0, "no second provider contacted");
    assert_eq!(sim.request_count("a"), 2, "the attempt and one resend");
    assert_eq!(
        counter(
            &client,
            &env,
            "payproxy_ambiguous_resolutions_total",
            &[("provider", "a"), ("how", "resend"), ("class", "processed")]
        )
        .await,
        1.0
    );

    // Unresolved (every answer cut): processing, still one charge, nobody else asked.
    sim.set_faults("a", Faults::reset_mid_response());
    let reply = pay(&client, &env, "k-RST-2", &grabpay_shopper("RST-2")).await;
    assert_unknown_outcome(&reply, "a");
    assert_one_charge(&sim, "RST-2", "a");
    assert_eq!(sim.request_count("b"), 0);
}

/// Same-dialect passthrough (Stripe storefront → Stripe-like providers): an ambiguous attempt
/// must keep the payment at its provider too, including when the storefront retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_timeout_after_charge_is_not_charged_again_when_the_storefront_retries() {
    let sim = Simulator::start(&["a", "b"]).await.unwrap();
    let mut a = sim_provider(&sim, "a", "stripe");
    a["timeout_ms"] = 300.into();
    let env = Env::start(config(
        &[("a", a), ("b", sim_provider(&sim, "b", "stripe"))],
        json!({ "resend_attempts": 1, "resend_backoff_ms": 50, "deadline_ms": 1000 }),
        // One failure opens a's breaker, as a burst of such timeouts would.
        json!({ "consecutive_failures": 1, "open_ms": 60000 }),
    ))
    .await;
    let client = HttpClient::default();
    sim.set_faults("a", Faults::timeout_after_charge(1000));

    let first = pay(&client, &env, "k-PT-1", &card("1000", "PT-1")).await;
    assert_unknown_outcome(&first, "a");
    assert_eq!(charges_for(&sim, "PT-1").len(), 1);
    assert_eq!(
        breaker_gauge(&client, &env, "a").await,
        2.0,
        "a's breaker is open"
    );

    // The SDK retries 5xx with the same key until it gets an answer. The provider is fine
    // again; a's breaker is still open, yet the retry must resume at a, never go to b.
    sim.set_faults("a", Faults::default());
    let deadline = Instant::now() + Duration::from_secs(15);
    let retry = loop {
        let retry = pay(&client, &env, "k-PT-1", &card("1000", "PT-1")).await;
        if retry.status != 409 {
            break retry;
        }
        assert!(Instant::now() < deadline, "still 409 after 15 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let charges = charges_for(&sim, "PT-1");
    assert_eq!(
        charges.len(),
        1,
        "charged twice: retry answer {} {} from {:?}: {charges:?}",
        retry.status,
        String::from_utf8_lossy(&retry.body),
        retry.provider()
    );
    assert_eq!(sim.request_count("b"), 0, "no second provider contacted");
    assert_succeeded_by(&retry, "a");
    assert_eq!(retry.json()["id"], charges[0].id.as_str());
}

// ---------------------------------------------------------------------------------------
// Storefront idempotency
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_replays_rejects_other_bodies_and_conflicts_while_in_flight() {
    let sim = Simulator::start(&["a", "b"]).await.unwrap();
    let env = Env::start(config(
        &[
            ("a", sim_provider(&sim, "a", "adyen")),
            ("b", sim_provider(&sim, "b", "adyen")),
        ],
        json!({}),
        json!({}),
    ))
    .await;
    let client = HttpClient::default();

    // Same key, same body: the stored answer, marked as a replay; one charge.
    let first = pay(&client, &env, "k-IDEM-1", &card("1000", "IDEM-1")).await;
    assert_succeeded_by(&first, "a");
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = pay(&client, &env, "k-IDEM-1", &card("1000", "IDEM-1")).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body, "replayed byte for byte");
    assert_eq!(sim.request_count("a"), 1);
    assert_one_charge(&sim, "IDEM-1", "a");

    // Same key, different body: Stripe's 400 idempotency_error, nothing sent.
    let other = pay(&client, &env, "k-IDEM-1", &card("2000", "IDEM-1")).await;
    assert_eq!(other.status, 400);
    assert_eq!(other.json()["error"]["type"], "idempotency_error");
    assert_eq!(sim.request_count("a"), 1);

    // Same key while the first is still at a slow provider: 409, nothing sent.
    sim.set_faults("a", Faults::latency(800));
    let slow = {
        let (client, url) = (client.clone(), env.url("/v1/payment_intents"));
        tokio::spawn(async move {
            client
                .post_form(
                    &url,
                    &[("idempotency-key", "k-IDEM-2")],
                    &card("1000", "IDEM-2"),
                )
                .await
        })
    };
    eventually(
        Duration::from_secs(5),
        "a received the slow payment",
        || async { sim.request_count("a") == 2 },
    )
    .await;
    let conflict = pay(&client, &env, "k-IDEM-2", &card("1000", "IDEM-2")).await;
    assert_eq!(conflict.status, 409);
    assert_eq!(conflict.json()["error"]["type"], "idempotency_error");
    assert_eq!(conflict.json()["error"]["code"], "idempotency_key_in_use");
    let slow = slow.await.unwrap();
    assert_succeeded_by(&slow, "a");
    assert_eq!(sim.request_count("a"), 2);
    assert_eq!(sim.request_count("b"), 0);
    assert_one_charge(&sim, "IDEM-2", "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retry_after_a_proxy_restart_is_replayed_from_the_durable_store() {
    let sim = Simulator::start(&["a"]).await.unwrap();
    let mut config = config(
        &[("a", sim_provider(&sim, "a", "adyen"))],
        json!({}),
        json!({}),
    );
    config["state"] = json!({ "kind": "redb", "path": "state/payproxy.redb" });
    let env = Env::start(config).await;
    let client = HttpClient::default();

    let first = pay(&client, &env, "k-RESTART-1", &card("1000", "RESTART-1")).await;
    assert_succeeded_by(&first, "a");

    // Restart in-process on the same config and the same redb file.
    let Env {
        dir,
        config_path,
        proxy,
    } = env;
    proxy.shutdown().await;
    assert!(dir.path().join("state/payproxy.redb").exists());
    let proxy = payproxy::server::start(&config_path)
        .await
        .expect("proxy restarts on the same state");
    let env = Env {
        dir,
        config_path,
        proxy,
    };
    let client = HttpClient::default();

    let retry = pay(&client, &env, "k-RESTART-1", &card("1000", "RESTART-1")).await;
    assert_eq!(retry.status, 200);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(retry.body, first.body);
    assert_eq!(
        sim.request_count("a"),
        1,
        "the retry did not reach the provider"
    );
    assert_one_charge(&sim, "RESTART-1", "a");
}

// ---------------------------------------------------------------------------------------
// Affinity
// ---------------------------------------------------------------------------------------

/// Two Stripe-like providers behind the regional router, all card volume to `first`.
fn affinity_config(sim: &Simulator, first: &str, second: &str) -> Value {
    let mut config = config(
        &[
            ("x", sim_provider(sim, "x", "stripe")),
            ("y", sim_provider(sim, "y", "stripe")),
        ],
        json!({}),
        json!({}),
    );
    let rules = json!({ "rules": [ { "name": "cards", "match": { "payment_method": ["card"] },
        "providers": [ { "name": first, "weight": 100 }, { "name": second, "weight": 0 } ] } ] });
    config["plugins"]["router"] = router_plugin(rules);
    config["routes"][0]["plugins"] = json!(["router"]);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_ups_go_to_the_provider_that_owns_the_payment_after_the_router_changed() {
    let sim = Simulator::start(&["x", "y"]).await.unwrap();
    let env = Env::start(affinity_config(&sim, "x", "y")).await;
    let client = HttpClient::default();

    let manual = form_with(
        card_from("DE", "1500", "AFF-1"),
        &[("capture_method", "manual")],
    );
    let created = pay(&client, &env, "k-AFF-1", &manual).await;
    created.assert_status(200);
    assert_eq!(created.provider(), Some("x"));
    assert_eq!(created.json()["status"], "requires_capture");
    let id = created.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        sim.ledger("x")[0].id,
        id,
        "passthrough: the provider's own id"
    );

    // The router now sends all new card volume to y.
    reload(&client, &env, &affinity_config(&sim, "y", "x")).await;
    let other = pay(&client, &env, "k-AFF-2", &card("1000", "AFF-2")).await;
    assert_succeeded_by(&other, "y");

    // Capture and retrieve of the first payment still go to x.
    let captured = client
        .post_form(
            &env.url(&format!("/v1/payment_intents/{id}/capture")),
            &[("idempotency-key", "k-AFF-1-capture")],
            "",
        )
        .await;
    captured.assert_status(200);
    assert_eq!(captured.provider(), Some("x"));
    assert_eq!(captured.json()["status"], "succeeded");
    let retrieved = client
        .get(&env.url(&format!("/v1/payment_intents/{id}")))
        .await;
    assert_eq!(retrieved.status, 200);
    assert_eq!(retrieved.provider(), Some("x"));
    assert_eq!(retrieved.json()["status"], "succeeded");

    assert_eq!(sim.ledger("x").len(), 1);
    assert_eq!(sim.ledger("x")[0].status, "succeeded");
    assert_eq!(sim.request_count("x"), 3, "create, capture, retrieve");
    assert_eq!(sim.request_count("y"), 1, "only the new payment");
    assert_one_charge(&sim, "AFF-2", "y");
}

// ---------------------------------------------------------------------------------------
// Declines
// ---------------------------------------------------------------------------------------

/// `a` speaks Adyen (declines by amount), `b` is Stripe-like (approves everything).
fn decline_config(sim: &Simulator, retry_soft_declines: bool) -> Value {
    config(
        &[
            ("a", sim_provider(sim, "a", "adyen")),
            ("b", sim_provider(sim, "b", "stripe")),
        ],
        json!({ "retry_soft_declines": retry_soft_declines }),
        json!({}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_decline_moves_on_when_the_route_allows_it_and_a_hard_decline_never_does() {
    let sim = Simulator::start(&["a", "b"]).await.unwrap();
    let env = Env::start(decline_config(&sim, true)).await;
    let client = HttpClient::default();

    // Amount ending 05: Adyen refuses with "not enough balance", a soft decline.
    let reply = pay(&client, &env, "k-SOFT-1", &card("1005", "SOFT-1")).await;
    assert_succeeded_by(&reply, "b");
    assert_one_charge(&sim, "SOFT-1", "b");
    assert_eq!((sim.request_count("a"), sim.request_count("b")), (1, 1));
    assert_eq!(
        counter(
            &client,
            &env,
            "payproxy_failovers_total",
            &[("from", "a"), ("to", "b"), ("reason", "declined")]
        )
        .await,
        1.0
    );

    // Amount ending 20: refused by risk checks, a hard decline: the shopper gets it.
    let reply = pay(&client, &env, "k-HARD-1", &card("1020", "HARD-1")).await;
    reply.assert_status(402);
    assert_eq!(reply.json()["error"]["type"], "card_error");
    assert_eq!(reply.json()["error"]["decline_code"], "fraudulent");
    assert_eq!((sim.request_count("a"), sim.request_count("b")), (2, 1));
    assert!(charges_for(&sim, "HARD-1").is_empty());

    // Without retry_soft_declines a soft decline is the answer too.
    reload(&client, &env, &decline_config(&sim, false)).await;
    let reply = pay(&client, &env, "k-SOFT-2", &card("1005", "SOFT-2")).await;
    reply.assert_status(402);
    assert_eq!(reply.json()["error"]["decline_code"], "insufficient_funds");
    assert_eq!((sim.request_count("a"), sim.request_count("b")), (3, 1));
    assert!(charges_for(&sim, "SOFT-2").is_empty());
}

/// `breaker.slow_call_ms`: attempts still waiting after 100 ms count as failures at once, so a
/// hanging provider's breaker opens long before its 2 s timeout, and later payments go to the
/// healthy provider while the first ones are still waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_calls_open_the_breaker_before_the_first_timeout() {
    let sim = Simulator::start(&["primary", "secondary"]).await.unwrap();
    let mut primary = sim_provider(&sim, "primary", "adyen");
    primary["timeout_ms"] = 2_000.into();
    let env = Env::start(config(
        &[
            ("primary", primary),
            ("secondary", sim_provider(&sim, "secondary", "adyen")),
        ],
        json!({ "resend_attempts": 0 }),
        json!({ "consecutive_failures": 3, "open_ms": 60000, "slow_call_ms": 100 }),
    ))
    .await;
    let client = HttpClient::default();
    sim.set_faults("primary", Faults::latency(3_000));

    let hanging: Vec<_> = (0..3)
        .map(|i| {
            let (client, url) = (client.clone(), env.url("/v1/payment_intents"));
            tokio::spawn(async move {
                let key = format!("k-SLOW-{i}");
                client
                    .try_send(
                        http::Method::POST,
                        &url,
                        &[
                            ("content-type", "application/x-www-form-urlencoded"),
                            ("idempotency-key", &key),
                        ],
                        card("1000", &format!("SLOW-{i}")),
                    )
                    .await
            })
        })
        .collect();
    // Readiness, not a sleep: wait until the three slow calls are counted. "Before the
    // first timeout" is read off the same scrape, not a clock: the breaker is open while no
    // attempt at the primary has ended yet (a timeout would count as `ambiguous`).
    let mut opened_at = String::new();
    eventually(
        Duration::from_secs(10),
        "breaker opened by slow calls",
        async || {
            opened_at = metrics(&client, &env).await;
            metric(
                &opened_at,
                "payproxy_breaker_state",
                &[("provider", "primary")],
            ) == Some(2.0)
        },
    )
    .await;
    let ended = [("provider", "primary"), ("outcome", "ambiguous")];
    assert_eq!(
        metric(&opened_at, "payproxy_attempts_total", &ended),
        None,
        "the breaker opened only after a timeout:\n{opened_at}"
    );
    // Counted just after the breaker records it: read it from a later scrape.
    let slow = [("provider", "primary"), ("outcome", "slow")];
    eventually(
        Duration::from_secs(10),
        "three slow calls counted",
        async || {
            metric(
                &metrics(&client, &env).await,
                "payproxy_attempts_total",
                &slow,
            ) == Some(3.0)
        },
    )
    .await;
    // Meanwhile a new payment goes straight to the healthy provider.
    let reply = pay(&client, &env, "k-SLOW-NEW", &card("1000", "SLOW-NEW")).await;
    assert_succeeded_by(&reply, "secondary");
    // The hanging payments end at the primary's timeout: outcome unknown, never moved.
    for h in hanging {
        let reply = h.await.unwrap().expect("the hanging payment is answered");
        assert_unknown_outcome(&reply, "primary");
    }
    assert_eq!(
        sim.request_count("secondary"),
        1,
        "the hanging payments never moved"
    );
}
