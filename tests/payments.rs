//! Payments end to end: a storefront speaking Stripe's form API to payproxy, the payments
//! demo config (`examples/config/payments.json`: compliance plugins, the regional router,
//! one dialect per provider) and simulated providers. Each test asserts what the storefront
//! sees (status, Stripe-shaped JSON) and what the providers saw (ledgers, request counts).

use std::time::{Duration, Instant};

use payproxy_e2e::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// The simulator with the demo's providers, plus `extra` ones.
async fn simulator(extra: &[&str]) -> Simulator {
    let names: Vec<&str> = PAYMENT_PROVIDERS.iter().chain(extra).copied().collect();
    Simulator::start(&names).await.unwrap()
}

async fn create(client: &HttpClient, env: &Env, body: &str) -> Reply {
    client
        .post_form(&env.url("/v1/payment_intents"), &[], body)
        .await
}

/// Requests each simulated provider received, by name.
fn counts(sim: &Simulator) -> Vec<(String, u64)> {
    sim.names()
        .into_iter()
        .map(|n| (n.to_string(), sim.request_count(n)))
        .collect()
}

fn assert_no_provider_contacted(sim: &Simulator) {
    let counts = counts(sim);
    assert!(
        counts.iter().all(|(_, n)| *n == 0),
        "providers were contacted: {counts:?}"
    );
}

/// Only `name` received requests (`n` of them).
fn assert_only_contacted(sim: &Simulator, name: &str, n: u64) {
    for (provider, count) in counts(sim) {
        let want = if provider == name { n } else { 0 };
        assert_eq!(count, want, "requests to {provider}: {:?}", counts(sim));
    }
}

/// A Stripe error object: `{"error": {"type", "code", "message", …}}`.
fn stripe_error(reply: &Reply) -> Value {
    let body = reply.json();
    let error = body["error"].clone();
    assert!(
        error["type"].is_string() && error["code"].is_string() && error["message"].is_string(),
        "not a Stripe error: {body}"
    );
    error
}

/// The proxy minted this id (not the provider's own).
fn assert_minted(id: &str, sim: &Simulator, provider: &str) {
    assert!(id.starts_with("pi_"), "not a PaymentIntent id: {id}");
    for charge in sim.ledger(provider) {
        assert_ne!(charge.id, id, "the storefront saw the provider's id");
    }
}

/// `payproxy_compliance_verdicts_total` for one plugin, rule and verdict.
async fn verdicts(client: &HttpClient, env: &Env, plugin: &str, rule: &str, verdict: &str) -> f64 {
    let text = client.get(&env.admin_url("/metrics")).await.body;
    let text = String::from_utf8_lossy(&text);
    let labels = format!(
        "payproxy_compliance_verdicts_total{{plugin=\"{plugin}\",rule=\"{rule}\",verdict=\"{verdict}\"}}"
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&labels))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Wait (bounded) until the proxy serves a snapshot newer than `version`.
async fn wait_for_reload(env: &Env, version: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.proxy.reloader.snapshot().version <= version {
        let status = env.proxy.reloader.status();
        assert!(
            Instant::now() < deadline,
            "no reload within 20 s: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Regional methods
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_shopper_pays_with_dana_through_xml_and_sees_a_stripe_intent() {
    let sim = simulator(&[]).await;
    let env = Env::start(payments_config(&sim)).await;
    let client = HttpClient::default();

    let reply = create(&client, &env, &dana_shopper("15000000", "ID-1001")).await;
    reply.assert_status(200);
    assert_eq!(reply.provider(), Some("dana"));
    let intent = reply.json();
    let id = intent["id"].as_str().unwrap().to_string();
    assert_minted(&id, &sim, "dana");
    assert_eq!(intent["object"], "payment_intent");
    assert_eq!(intent["amount"], 15000000);
    assert_eq!(intent["currency"], "idr");
    assert_eq!(intent["payment_method_types"], json!(["dana"]));
    // A DANA create with a checkoutUrl is requires-action: the shopper pays in DANA.
    assert_eq!(intent["status"], "requires_action", "{intent}");
    assert_eq!(intent["next_action"]["type"], "redirect_to_url");
    let checkout = intent["next_action"]["redirect_to_url"]["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        checkout.starts_with(&format!("{}/dana/v1/checkout/", sim.base_url("dana"))),
        "{checkout}"
    );

    // The XML reached DANA: its ledger holds the charge under the merchant reference.
    let ledger = sim.ledger("dana");
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(ledger[0].merchant_reference.as_deref(), Some("ID-1001"));
    assert_eq!(ledger[0].amount, 15000000);
    assert_eq!(ledger[0].status, "requires_action");
    assert_only_contacted(&sim, "dana", 1);

    // The shopper pays at DANA; retrieving the intent asks DANA (XML query) for it.
    let paid = client.get(&checkout).await;
    assert!(paid.status.is_success(), "{}", paid.status);
    let reply = client
        .get(&env.url(&format!("/v1/payment_intents/{id}")))
        .await;
    reply.assert_status(200);
    assert_eq!(reply.provider(), Some("dana"));
    let intent = reply.json();
    assert_eq!(intent["id"], id.as_str());
    assert_eq!(intent["status"], "succeeded", "{intent}");
    assert_eq!(sim.ledger("dana")[0].status, "succeeded");

    // KYC: an Indonesian wallet without a verified phone is challenged before DANA.
    let before = sim.request_count("dana");
    let unverified = dana_shopper("15000000", "ID-1002").replace(
        "payment_method_data[billing_details][phone_verified]=true",
        "payment_method_data[billing_details][phone_verified]=false",
    );
    let reply = create(&client, &env, &unverified).await;
    assert_eq!(reply.status, 402);
    assert_eq!(stripe_error(&reply)["code"], "phone_verification_required");
    assert_eq!(sim.request_count("dana"), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nl_shopper_gets_an_ideal_redirect_and_the_status_follows_the_bank() {
    let sim = simulator(&[]).await;
    let env = Env::start(payments_config(&sim)).await;
    let client = HttpClient::default();

    let reply = create(&client, &env, &ideal_shopper("NL91ABNA0417164300", "NL-1")).await;
    reply.assert_status(200);
    // Adyen could take iDEAL too; the router puts the cheaper iDEAL acquirer first.
    assert_eq!(reply.provider(), Some("ideal"));
    let intent = reply.json();
    let id = intent["id"].as_str().unwrap().to_string();
    assert_minted(&id, &sim, "ideal");
    assert_eq!(intent["status"], "requires_action", "{intent}");
    assert_eq!(intent["next_action"]["type"], "redirect_to_url");
    assert_eq!(
        intent["next_action"]["redirect_to_url"]["return_url"],
        "https://shop.example/return"
    );
    let bank = intent["next_action"]["redirect_to_url"]["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        bank.starts_with(&format!("{}/ideal/v1/authenticate/", sim.base_url("ideal"))),
        "{bank}"
    );
    let ledger = sim.ledger("ideal");
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].merchant_reference.as_deref(), Some("NL-1"));
    assert_eq!(ledger[0].status, "requires_action");

    // Before the shopper is back, the intent still waits for them.
    let reply = client
        .get(&env.url(&format!("/v1/payment_intents/{id}")))
        .await;
    reply.assert_status(200);
    assert_ne!(reply.json()["status"], "succeeded");

    // The shopper approves at the bank, which sends them back to the shop.
    let back = client.get(&format!("{bank}?result=success")).await;
    assert_eq!(back.status, 303);
    assert!(back
        .header("location")
        .is_some_and(|l| l.starts_with("https://shop.example/return")));

    // Affinity: the status query reaches the iDEAL provider that owns the payment.
    let reply = client
        .get(&env.url(&format!("/v1/payment_intents/{id}")))
        .await;
    reply.assert_status(200);
    assert_eq!(reply.provider(), Some("ideal"));
    let intent = reply.json();
    assert_eq!(intent["id"], id.as_str());
    assert_eq!(intent["status"], "succeeded", "{intent}");
    assert_eq!(sim.ledger("ideal")[0].status, "succeeded");
    // create, status, the shopper at the bank, status.
    assert_only_contacted(&sim, "ideal", 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn br_shopper_gets_a_pix_qr_code() {
    let sim = simulator(&[]).await;
    let env = Env::start(payments_config(&sim)).await;
    let client = HttpClient::default();

    let reply = create(&client, &env, &pix_shopper("529.982.247-25", "BR-1")).await;
    reply.assert_status(200);
    assert_eq!(reply.provider(), Some("pix"));
    let intent = reply.json();
    assert_minted(intent["id"].as_str().unwrap(), &sim, "pix");
    assert_eq!(intent["status"], "requires_action", "{intent}");
    assert_eq!(intent["amount"], 5000);
    assert_eq!(intent["currency"], "brl");
    assert_eq!(intent["next_action"]["type"], "pix_display_qr_code");
    let qr = intent["next_action"]["pix_display_qr_code"]["data"]
        .as_str()
        .unwrap();
    assert!(qr.starts_with("000201"), "not an EMV BR Code: {qr}");
    let ledger = sim.ledger("pix");
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].merchant_reference.as_deref(), Some("BR-1"));
    assert_eq!(ledger[0].amount, 5000);
    assert_only_contacted(&sim, "pix", 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sg_shopper_pays_with_grabpay_and_the_simulator_checks_the_signature() {
    let sim = simulator(&["grabpay-bad"]).await;
    let mut config = payments_config(&sim);
    // A second GrabPay account whose secret is wrong, reached by a header-matched rule.
    let mut bad = config["providers"]["grabpay"].clone();
    bad["url"] = sim.base_url("grabpay-bad").into();
    bad["credentials"] = json!({
        "partner_id": "sim-partner-grabpay-bad",
        "partner_secret": "not-the-secret",
        "merchant_id": "demo-merchant",
    });
    config["providers"]["grabpay-bad"] = bad;
    config["routes"][0]["providers"]
        .as_array_mut()
        .unwrap()
        .push("grabpay-bad".into());
    config["plugins"]["regional-router"]["config"]["rules"]
        .as_array_mut()
        .unwrap()
        .insert(
            0,
            json!({ "name": "test-bad-secret", "match": { "headers": { "x-test-account": ["bad"] } },
                    "providers": [ { "name": "grabpay-bad" } ] }),
        );
    // The demo's account carries the simulator's real credentials.
    let (partner, secret) = provider_sim::grabpay_credentials("grabpay");
    assert_eq!(
        config["providers"]["grabpay"]["credentials"]["partner_secret"],
        secret.as_str()
    );
    assert_eq!(
        config["providers"]["grabpay"]["credentials"]["partner_id"],
        partner.as_str()
    );
    let env = Env::start(config).await;
    let client = HttpClient::default();

    let reply = create(&client, &env, &grabpay_shopper("SG-1")).await;
    reply.assert_status(200);
    assert_eq!(reply.provider(), Some("grabpay"));
    let intent = reply.json();
    assert_minted(intent["id"].as_str().unwrap(), &sim, "grabpay");
    assert_eq!(intent["status"], "succeeded", "{intent}");
    assert_eq!(intent["amount"], 4200);
    assert_eq!(intent["currency"], "sgd");
    // Recorded only because the signature verified (a bad one is a 401 that records nothing).
    let ledger = sim.ledger("grabpay");
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].merchant_reference.as_deref(), Some("SG-1"));
    assert_eq!(ledger[0].amount, 4200);

    // The same payment signed with the wrong secret: the simulator refuses it.
    let reply = client
        .post_form(
            &env.url("/v1/payment_intents"),
            &[("x-test-account", "bad")],
            &grabpay_shopper("SG-2"),
        )
        .await;
    assert!(!reply.status.is_success(), "{}", reply.status);
    assert_eq!(reply.provider(), Some("grabpay-bad"));
    let error = stripe_error(&reply);
    assert_eq!(error["type"], "api_error", "{error}");
    assert_eq!(sim.request_count("grabpay-bad"), 1);
    assert!(sim.ledger("grabpay-bad").is_empty());
    assert_eq!(sim.request_count("grabpay"), 1);
    assert_eq!(sim.ledger("grabpay").len(), 1);
}

/// A GrabPay payment refused at its init: GrabPay names no transaction for a refusal (no
/// `txID`). The payment is declined, not unresolved: a retrieve reads the decline from the
/// record, and the storefront may confirm it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grabpay_refusal_at_init_is_a_decline_a_retrieve_reads_and_a_confirm_retries() {
    let sim = simulator(&[]).await;
    let env = Env::start(payments_config(&sim)).await;
    let client = HttpClient::default();

    let refused = client
        .post_form(
            &env.url("/v1/payment_intents"),
            &[],
            &grabpay_shopper("SG-DECLINED").replace("amount=4200", "amount=1013"),
        )
        .await;
    assert_eq!(refused.provider(), Some("grabpay"));
    let error = stripe_error(&refused);
    assert_eq!(error["type"], "card_error", "{error}");
    let id = error["payment_intent"]["id"].as_str().unwrap().to_string();
    assert!(sim.ledger("grabpay").is_empty(), "a refusal is no charge");

    let got = client
        .get(&env.url(&format!("/v1/payment_intents/{id}")))
        .await;
    got.assert_status(200);
    assert_eq!(
        got.json()["status"],
        "requires_payment_method",
        "{}",
        got.json()
    );
    assert_eq!(sim.request_count("grabpay"), 1, "the record answers");

    // Confirmed again: a new attempt at GrabPay (refused again: the amount decides), not
    // "still processing".
    let again = client
        .post_form(
            &env.url(&format!("/v1/payment_intents/{id}/confirm")),
            &[],
            "",
        )
        .await;
    assert_eq!(again.provider(), Some("grabpay"));
    let error = stripe_error(&again);
    assert_eq!(error["type"], "card_error", "{error}");
    assert_eq!(error["payment_intent"]["id"], id.as_str());
    assert_eq!(sim.request_count("grabpay"), 2);

    // Canceled: nothing at GrabPay to cancel, so nothing is sent.
    let canceled = client
        .post_form(
            &env.url(&format!("/v1/payment_intents/{id}/cancel")),
            &[],
            "",
        )
        .await;
    canceled.assert_status(200);
    assert_eq!(canceled.json()["status"], "canceled", "{}", canceled.json());
    assert_eq!(sim.request_count("grabpay"), 2);
    assert!(sim.ledger("grabpay").is_empty());
}

/// `(sum, count)` of the histogram `name` with `labels` in a Prometheus text page.
fn histogram(metrics: &str, name: &str, labels: &[(&str, &str)]) -> (f64, f64) {
    let value = |suffix: &str| {
        let series = format!("{name}_{suffix}");
        chaos::metric(metrics, &series, labels)
            .unwrap_or_else(|| panic!("no {series} {labels:?} in the metrics"))
    };
    (value("sum"), value("count"))
}

/// The upstream histogram is the provider's own time, request sent to response head: on a
/// translated payment the dialect's encode and decode are plugin time, outside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_translated_payment_times_the_provider_apart_from_its_dialect() {
    let sim = simulator(&[]).await;
    sim.set_faults("dana", Faults::latency(150));
    let env = Env::start(payments_config(&sim)).await;
    let client = HttpClient::default();

    let reply = create(&client, &env, &dana_shopper("15000000", "ID-3001")).await;
    reply.assert_status(200);
    assert_eq!(reply.provider(), Some("dana"));
    assert_only_contacted(&sim, "dana", 1);

    let metrics = client.get(&env.admin_url("/metrics")).await.body;
    let metrics = String::from_utf8_lossy(&metrics);
    let (upstream, sent) = histogram(
        &metrics,
        "payproxy_upstream_duration_seconds",
        &[("provider", "dana")],
    );
    let plugin = |function: &str| {
        histogram(
            &metrics,
            "payproxy_plugin_call_duration_seconds",
            &[("function", function), ("plugin", "dana")],
        )
    };
    let (encode, encoded) = plugin("encode-request");
    let (decode, decoded) = plugin("decode-response");
    let (request, requests) = histogram(
        &metrics,
        "payproxy_request_duration_seconds",
        &[("route", "payments")],
    );
    assert_eq!((sent, encoded, decoded, requests), (1.0, 1.0, 1.0, 1.0));
    // The provider's 150 ms are in it ...
    assert!(upstream >= 0.150, "upstream {upstream} s");
    // ... and the dialect's calls are not: the three are disjoint parts of the request.
    assert!(
        upstream + encode + decode <= request,
        "upstream {upstream} s + encode {encode} s + decode {decode} s > request {request} s"
    );
}

// ---------------------------------------------------------------------------------------
// Compliance
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eea_card_over_30_eur_without_sca_is_challenged_before_any_provider() {
    let sim = simulator(&[]).await;
    let env = Env::start(payments_config(&sim)).await;
    let client = HttpClient::default();

    let reply = create(&client, &env, &form_with(eea_card("3001", "DE-1"), &[])).await;
    reply.assert_status(402);
    let error = stripe_error(&reply);
    assert_eq!(error["type"], "card_error");
    assert_eq!(error["code"], "authentication_required");
    assert_eq!(reply.provider(), None);
    assert_no_provider_contacted(&sim);
    assert_eq!(
        verdicts(&client, &env, "psd2-sca", "psd2-sca", "challenge").await,
        1.0
    );

    // €30.00 is low value: no challenge, the card provider takes it.
    let reply = create(&client, &env, &form_with(eea_card("3000", "DE-2"), &[])).await;
    reply.assert_status(200);
    assert_eq!(reply.json()["status"], "succeeded");
    assert_eq!(reply.provider(), Some("stripe-like"));
    assert_eq!(sim.ledger("stripe-like").len(), 1);
    assert_eq!(
        verdicts(&client, &env, "psd2-sca", "psd2-low-value", "allow").await,
        1.0
    );

    // Above €30 once 3-D Secure is done: allowed.
    let authenticated = form_with(
        eea_card("3001", "DE-3"),
        &[(
            "payment_method_options[card][three_d_secure][authenticated]",
            "true",
        )],
    );
    let reply = create(&client, &env, &authenticated).await;
    reply.assert_status(200);
    assert_eq!(reply.json()["status"], "succeeded");
    assert_only_contacted(&sim, "stripe-like", 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_exceeded_and_blocked_countries_are_refused_before_any_provider() {
    let sim = simulator(&[]).await;
    let env = Env::start(payments_config(&sim)).await;
    let client = HttpClient::default();
    let sca_done = [(
        "payment_method_options[card][three_d_secure][authenticated]",
        "true",
    )];

    // eur-card-max is €10,000.00.
    let reply = create(
        &client,
        &env,
        &form_with(eea_card("1000001", "DE-9"), &sca_done),
    )
    .await;
    reply.assert_status(402);
    let error = stripe_error(&reply);
    assert_eq!(error["type"], "card_error");
    assert_eq!(error["code"], "amount_too_large");
    assert!(
        error["message"].as_str().unwrap().contains("10000.00"),
        "{error}"
    );
    assert_eq!(
        verdicts(&client, &env, "limits", "eur-card-max", "deny").await,
        1.0
    );

    // The DANA wallet range: below its minimum.
    let reply = create(&client, &env, &dana_shopper("500", "ID-9")).await;
    assert_eq!(reply.status, 402);
    assert_eq!(stripe_error(&reply)["code"], "amount_too_small");

    // A blocked country.
    let reply = create(
        &client,
        &env,
        &form_with(card_from("KP", "1000", "KP-1"), &[]),
    )
    .await;
    assert_eq!(reply.status, 402);
    assert_eq!(stripe_error(&reply)["code"], "country_blocked");
    assert_no_provider_contacted(&sim);

    // At the limit: allowed.
    let reply = create(
        &client,
        &env,
        &form_with(eea_card("1000000", "DE-10"), &sca_done),
    )
    .await;
    reply.assert_status(200);
    assert_only_contacted(&sim, "stripe-like", 1);
}

// ---------------------------------------------------------------------------------------
// Same-dialect fast path
// ---------------------------------------------------------------------------------------

const RECORDED_INTENT: &str = r#"{"id":"pi_rec_3PxY7","object":"payment_intent","amount":2000,"currency":"eur","status":"requires_capture","capture_method":"manual","metadata":{"order_id":"DE-PASS"},"livemode":false,"x_provider_field":"kept as is"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_dialect_passthrough_forwards_the_bytes_unchanged_and_keeps_affinity() {
    let sim = simulator(&[]).await;
    let recorder = Recorder::start(200, "application/json", RECORDED_INTENT).await;
    let mut config = payments_config(&sim);
    config["providers"]["stripe-like"]["url"] = recorder.url().into();
    let env = Env::start(config).await;
    let client = HttpClient::default();

    let sent = form_with(
        eea_card("2000", "DE-PASS"),
        &[
            ("capture_method", "manual"),
            ("metadata[note]", "ünïcødé & spaces"),
        ],
    );
    let reply = client
        .post_form(
            &env.url("/v1/payment_intents"),
            &[
                ("idempotency-key", "order-DE-PASS-1"),
                ("stripe-version", "2024-06-20"),
            ],
            &sent,
        )
        .await;
    reply.assert_status(200);
    assert_eq!(reply.provider(), Some("stripe-like"));
    // The storefront gets the provider's answer as it was, its own id included.
    assert_eq!(reply.body.as_ref(), RECORDED_INTENT.as_bytes());

    let recorded = recorder.requests();
    assert_eq!(recorded.len(), 1);
    let request = &recorded[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/payment_intents");
    assert_eq!(
        request.body.as_ref(),
        sent.as_bytes(),
        "body changed on the way"
    );
    assert_eq!(request.header("idempotency-key"), Some("order-DE-PASS-1"));
    assert_eq!(request.header("stripe-version"), Some("2024-06-20"));
    assert_eq!(
        request.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );

    // Affinity: the capture of the provider's id goes to the same provider, unchanged.
    let capture = "amount_to_capture=2000";
    let reply = client
        .post_form(
            &env.url("/v1/payment_intents/pi_rec_3PxY7/capture"),
            &[],
            capture,
        )
        .await;
    reply.assert_status(200);
    assert_eq!(reply.provider(), Some("stripe-like"));
    let recorded = recorder.requests();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[1].path, "/v1/payment_intents/pi_rec_3PxY7/capture");
    assert_eq!(recorded[1].body.as_ref(), capture.as_bytes());
    assert_no_provider_contacted(&sim);
}

// ---------------------------------------------------------------------------------------
// Live rule changes
// ---------------------------------------------------------------------------------------

/// The demo config with one plugin's rules in a watched file of the env dir.
fn watched(sim: &Simulator, plugin: &str, file: &str) -> (Value, Value) {
    let mut config = payments_config(sim);
    let rules = config["plugins"][plugin]
        .as_object_mut()
        .unwrap()
        .remove("config")
        .unwrap();
    config["plugins"][plugin]["config_file"] = file.into();
    config["reload"] = json!({ "watch": true, "debounce_ms": 50 });
    (config, rules)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routing_rule_changed_in_its_file_applies_to_the_next_payment() {
    let sim = simulator(&[]).await;
    let (config, mut rules) = watched(&sim, "regional-router", "router.json");
    let env = Env::start_with_files(config, &[("router.json", &rules)]).await;
    let client = HttpClient::default();
    let card = |order: &str| form_with(eea_card("2500", order), &[]);

    let reply = create(&client, &env, &card("DE-R1")).await;
    reply.assert_status(200);
    assert_eq!(reply.provider(), Some("stripe-like"));

    // Cards now go to Adyen only.
    let cards = rules["rules"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|r| r["name"] == "cards")
        .unwrap();
    cards["providers"] = json!([{ "name": "adyen" }]);
    let version = env.proxy.reloader.snapshot().version;
    write_atomic(
        &env.dir.path().join("router.json"),
        &serde_json::to_vec_pretty(&rules).unwrap(),
    );
    wait_for_reload(&env, version).await;

    let reply = create(&client, &env, &card("DE-R2")).await;
    reply.assert_status(200);
    assert_eq!(reply.provider(), Some("adyen"));
    assert_eq!(reply.json()["status"], "succeeded");
    assert_eq!(sim.ledger("adyen").len(), 1);
    assert_eq!(sim.ledger("stripe-like").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compliance_rule_changed_in_its_file_applies_to_the_next_payment() {
    let sim = simulator(&[]).await;
    let (config, mut rules) = watched(&sim, "psd2-sca", "psd2-sca.json");
    let env = Env::start_with_files(config, &[("psd2-sca.json", &rules)]).await;
    let client = HttpClient::default();
    let card = |order: &str| form_with(eea_card("2500", order), &[]);

    let reply = create(&client, &env, &card("DE-C1")).await;
    reply.assert_status(200);

    // The low-value threshold drops to €20: the same €25 payment now needs SCA.
    rules["low_value_threshold"] = json!({ "minor": 2000, "currency": "EUR" });
    let version = env.proxy.reloader.snapshot().version;
    write_atomic(
        &env.dir.path().join("psd2-sca.json"),
        &serde_json::to_vec_pretty(&rules).unwrap(),
    );
    wait_for_reload(&env, version).await;

    let reply = create(&client, &env, &card("DE-C2")).await;
    reply.assert_status(402);
    assert_eq!(stripe_error(&reply)["code"], "authentication_required");
    assert_only_contacted(&sim, "stripe-like", 1);
}

// ---------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_stripe_error_and_reaches_no_provider() {
    let sim = simulator(&[]).await;
    let env = Env::start(payments_config(&sim)).await;
    let client = HttpClient::default();
    let card = |amount: &str, currency: &str| {
        let mut pairs = eea_card(amount, "BAD-1");
        pairs.retain(|(k, _)| *k != "amount" || !amount.is_empty());
        pairs.retain(|(k, _)| *k != "currency");
        pairs.push(("currency", currency.to_string()));
        form_with(pairs, &[])
    };

    // (what, body, status, code, param)
    let cases: Vec<(&str, String, u16, &str, Option<&str>)> = vec![
        (
            "missing amount",
            card("", "eur"),
            400,
            "parameter_missing",
            Some("amount"),
        ),
        (
            "unknown currency",
            card("1000", "xyz"),
            400,
            "invalid_currency",
            Some("currency"),
        ),
        (
            "amount with a decimal point",
            card("10.50", "eur"),
            400,
            "parameter_invalid_integer",
            Some("amount"),
        ),
        (
            "iDEAL with an invalid IBAN",
            ideal_shopper("NL91ABNA0417164301", "NL-BAD"),
            400,
            "invalid_iban",
            Some("iban"),
        ),
        (
            "Pix with an invalid CPF",
            pix_shopper("529.982.247-26", "BR-BAD"),
            400,
            "invalid_tax_id",
            None,
        ),
    ];
    for (what, body, status, code, param) in cases {
        let reply = create(&client, &env, &body).await;
        assert_eq!(
            reply.status.as_u16(),
            status,
            "{what}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        let error = stripe_error(&reply);
        assert_eq!(error["type"], "invalid_request_error", "{what}: {error}");
        assert_eq!(error["code"], code, "{what}: {error}");
        if let Some(param) = param {
            assert_eq!(error["param"], param, "{what}: {error}");
        }
        // Refusals never repeat the account number or tax id.
        let text = String::from_utf8_lossy(&reply.body);
        assert!(!text.contains("NL91ABNA0417164301"), "{what}: {text}");
        assert!(!text.contains("52998224726"), "{what}: {text}");
        assert_no_provider_contacted(&sim);
    }
}

/// The text of the first `<tag>…</tag>` in `xml`.
fn xml_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(&xml[start..end])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_xml_from_dana_becomes_a_stripe_error() {
    let sim = simulator(&[]).await;
    // Two DANA accounts answering garbage: one with an HTTP error, one with a 200.
    let failing = Recorder::start(500, "application/xml", "<response><head><oops").await;
    let garbled = Recorder::start(200, "application/xml", "<response><head><oops").await;
    let mut config = payments_config(&sim);
    config["providers"]["dana"]["url"] = failing.url().into();
    let mut second = config["providers"]["dana"].clone();
    second["url"] = garbled.url().into();
    config["providers"]["dana-garbled"] = second;
    config["routes"][0]["providers"]
        .as_array_mut()
        .unwrap()
        .push("dana-garbled".into());
    config["plugins"]["regional-router"]["config"]["rules"]
        .as_array_mut()
        .unwrap()
        .insert(
            0,
            json!({ "name": "test-garbled", "match": { "headers": { "x-test-account": ["garbled"] } },
                    "providers": [ { "name": "dana-garbled" } ] }),
        );
    // The resend after an ambiguous answer, without the default pause.
    config["routes"][0]["failover"] = json!({ "resend_backoff_ms": 10 });
    let env = Env::start(config).await;
    let client = HttpClient::default();

    // HTTP 500 with unreadable XML: DANA did nothing, the storefront may retry.
    let reply = create(&client, &env, &dana_shopper("15000000", "ID-XML-1")).await;
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    assert_eq!(reply.status, 503, "{text}");
    let error = stripe_error(&reply);
    assert_eq!(error["type"], "api_error", "{error}");
    assert_eq!(reply.header("stripe-should-retry"), Some("true"));
    assert!(
        !text.contains("oops"),
        "the provider's garbage leaked: {text}"
    );
    // It was sent to DANA, as XML; nobody else was asked.
    let sent = failing.requests();
    assert_eq!(sent.len(), 1);
    let xml = String::from_utf8_lossy(&sent[0].body).into_owned();
    assert_eq!(xml_text(&xml, "merchantTransId"), Some("ID-XML-1"), "{xml}");
    assert!(garbled.requests().is_empty());
    assert_no_provider_contacted(&sim);

    // HTTP 200 with unreadable XML: the order may exist at DANA. Never reported as paid,
    // never sent elsewhere; DANA is asked again under the same reqMsgId (its idempotency key).
    let reply = client
        .post_form(
            &env.url("/v1/payment_intents"),
            &[("x-test-account", "garbled")],
            &dana_shopper("15000000", "ID-XML-2"),
        )
        .await;
    // The one answer for an outcome nobody knows yet (as in failover.rs and hardening.rs):
    // Stripe's 502 `api_error` carrying the intent as `processing`, with its id.
    let body = reply.json();
    assert_eq!(reply.status, 502, "{body}");
    assert_eq!(stripe_error(&reply)["type"], "api_error", "{body}");
    let intent = &body["error"]["payment_intent"];
    assert_eq!(intent["object"], "payment_intent", "{body}");
    assert_eq!(intent["status"], "processing", "{body}");
    assert!(
        intent["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("pi_")),
        "{body}"
    );
    assert!(!body.to_string().contains("oops"), "{body}");
    let sent = garbled.requests();
    assert!(sent.len() >= 2, "no resend: {} request(s)", sent.len());
    let first = String::from_utf8_lossy(&sent[0].body).into_owned();
    let key = xml_text(&first, "reqMsgId").expect("reqMsgId").to_string();
    for request in &sent {
        let xml = String::from_utf8_lossy(&request.body).into_owned();
        assert_eq!(xml_text(&xml, "reqMsgId"), Some(key.as_str()), "{xml}");
    }
    assert_eq!(failing.requests().len(), 1);
    assert_no_provider_contacted(&sim);
}

// ---------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_whose_shopper_hung_up_still_finishes_when_the_proxy_stops() {
    let sim = simulator(&[]).await;
    let mut config = payments_config(&sim);
    config["log"] = json!({ "audit_path": "audit.log" });
    // A €30 card payment (no SCA challenge) goes to stripe-like; it answers after a while.
    sim.set_faults("stripe-like", Faults::latency(1_500));
    let Env { dir, proxy, .. } = Env::start(config).await;
    let url = format!("http://{}/v1/payment_intents", proxy.listen_addrs[0]);
    let shopper = tokio::spawn(async move {
        HttpClient::default()
            .post_form(&url, &[], &form_with(eea_card("3000", "HUNG-UP-1"), &[]))
            .await
    });
    // The charge has reached the provider: then the shopper's side goes away, and the proxy
    // stops.
    payproxy_e2e::chaos::eventually(
        Duration::from_secs(30),
        "the charge reaches stripe-like",
        async || sim.request_count("stripe-like") > 0,
    )
    .await;
    shopper.abort();
    let _ = shopper.await;
    proxy.shutdown().await;

    // The payment ran to its provider's answer and was recorded before the proxy stopped.
    let audit = std::fs::read_to_string(dir.path().join("audit.log")).expect("audit log");
    let lines: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).expect("an audit line is JSON"))
        .filter(|l: &Value| l["event"] == "payment")
        .collect();
    assert_eq!(lines.len(), 1, "{audit}");
    assert_eq!(lines[0]["provider"], "stripe-like", "{audit}");
    assert_eq!(lines[0]["decision"], "approved", "{audit}");
    let ledger = sim.ledger("stripe-like");
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(
        (ledger[0].amount, ledger[0].status.as_str()),
        (3000, "succeeded")
    );
}
