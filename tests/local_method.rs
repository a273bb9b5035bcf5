//! A new local method, added to a running proxy with no change to the storefront, the Stripe
//! dialect or the host: M-Pesa STK push (Kenya). The regional team ships a provider dialect
//! (`dialect-mpesa`), a provider entry, a routing rule and an amount limit, and reloads. The
//! storefront keeps its Stripe integration: it sends `payment_method_data[type]=mpesa`, which
//! the Stripe dialect passes through as an `other` method, and gets `requires_action` with a
//! `confirm_on_device` next action; Daraja's callback then makes the payment succeed.
//!
//! The provider is a recorder answering as Daraja does, so the test sees the exact request
//! payproxy sent.

use http::Method;
use payproxy_e2e::*;
use serde_json::{json, Value};

/// Daraja's answer to an accepted STK push.
const ACCEPTED: &str = r#"{"MerchantRequestID":"29115-34620561-1","CheckoutRequestID":"ws_CO_191220191020363925","ResponseCode":"0","ResponseDescription":"Success. Request accepted for processing","CustomerMessage":"Success. Request accepted for processing"}"#;

/// A Kenyan shopper paying KES `shillings` with M-Pesa, as a Stripe storefront sends it.
fn mpesa_payment(shillings: u32, order: &str) -> String {
    let amount = (shillings * 100).to_string();
    form(&[
        ("amount", &amount),
        ("currency", "kes"),
        ("confirm", "true"),
        ("payment_method_types[]", "mpesa"),
        ("payment_method_data[type]", "mpesa"),
        ("payment_method_data[mpesa][phone]", "+254712345678"),
        (
            "payment_method_data[billing_details][address][country]",
            "KE",
        ),
        ("metadata[order_id]", order),
    ])
}

/// What the regional team deploys: the plugin file next to the config, the provider, the
/// routing rule (before the demo's catch-all refusal) and a per-method amount limit.
fn deploy_mpesa(env: &Env, config: &mut Value, daraja: &Recorder) {
    let plugin = env.dir.path().join("dialect_mpesa.wasm");
    std::fs::copy(wasm("dialect_mpesa"), &plugin).unwrap();
    config["plugins"]["mpesa"] = json!({
        "path": plugin.to_string_lossy(),
        "role": "dialect",
        "config": { "shortcode": "174379", "callback_url": env.url("/webhooks/mpesa-ke") },
    });
    config["providers"]["mpesa-ke"] = json!({
        "url": daraja.url(), "region": "africa", "tags": ["mpesa"], "cost": 1.0,
        "dialect": "mpesa",
        "credentials": { "access_token": "daraja-token", "passkey": "lipa-passkey",
                         "callback_token": "cb-secret-7d1f0a9c2e5b" },
    });
    let route = &mut config["routes"][0];
    route["providers"]
        .as_array_mut()
        .unwrap()
        .push("mpesa-ke".into());
    let rules = config["plugins"]["regional-router"]["config"]["rules"]
        .as_array_mut()
        .unwrap();
    let at = rules
        .iter()
        .position(|r| r["name"] == "no-local-method")
        .unwrap();
    rules.insert(
        at,
        json!({ "name": "ke-mpesa", "match": { "country": ["KE"], "payment_method": ["mpesa"] },
                "providers": [{ "name": "mpesa-ke" }] }),
    );
    config["plugins"]["limits"]["config"]["limits"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "ke-mpesa-max", "method": "mpesa", "currency": "KES", "max": 1_000_000 }));
    env.rewrite(config);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m_pesa_is_added_to_a_running_proxy_and_the_shopper_confirms_on_the_phone() {
    let sim = Simulator::start(PAYMENT_PROVIDERS).await.unwrap();
    let daraja = Recorder::start(200, "application/json", ACCEPTED).await;
    let mut config = payments_config(&sim);
    let env = Env::start(config.clone()).await;
    let client = HttpClient::default();
    let pay = env.url("/v1/payment_intents");

    // Before: the Stripe dialect takes the method (no edit of it), but no rule routes it.
    let before = client
        .post_form(
            &pay,
            &[("idempotency-key", "ke-1")],
            &mpesa_payment(1500, "ke-1"),
        )
        .await;
    before.assert_status(402);
    assert_eq!(before.json()["error"]["code"], "payment_method_unavailable");

    // Deploy while it runs.
    deploy_mpesa(&env, &mut config, &daraja);
    let reload = client
        .send(Method::POST, &env.admin_url("/admin/reload"), &[], "")
        .await;
    reload.assert_status(200);
    let status = client.get(&env.admin_url("/admin/status")).await.json();
    assert_eq!(status["last_reload"]["result"], "ok", "{status}");

    // The shopper pays; payproxy pushes the prompt to the phone.
    let reply = client
        .post_form(
            &pay,
            &[("idempotency-key", "ke-2")],
            &mpesa_payment(1500, "ke-2"),
        )
        .await;
    reply.assert_status(200);
    assert_eq!(reply.provider(), Some("mpesa-ke"));
    let intent = reply.json();
    assert_eq!(intent["status"], "requires_action", "{intent}");
    assert_eq!(intent["payment_method_types"], json!(["mpesa"]));
    assert_eq!(intent["amount"], 150_000);
    assert_eq!(intent["currency"], "kes");
    let action = &intent["next_action"];
    assert_eq!(action["type"], "confirm_on_device", "{intent}");
    assert_eq!(
        action["confirm_on_device"]["message"],
        "Check your phone ending 5678 and enter your M-Pesa PIN to pay KES 1500."
    );
    // The prompt expires 60 s after Daraja's clock (its `date` header).
    let expires_at = action["confirm_on_device"]["expires_at"].as_i64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now + 50..=now + 61).contains(&expires_at),
        "{expires_at} vs {now}"
    );

    // What Daraja got: one STK push, in its own shape, with the provider's credentials.
    let pushes = daraja.requests();
    assert_eq!(pushes.len(), 1, "one push");
    let push = &pushes[0];
    assert_eq!(push.path, "/mpesa/stkpush/v1/processrequest");
    assert_eq!(push.header("authorization"), Some("Bearer daraja-token"));
    let body: Value = serde_json::from_slice(&push.body).unwrap();
    assert_eq!(body["Amount"], 1500);
    assert_eq!(body["PhoneNumber"], "254712345678");
    assert_eq!(body["PartyA"], "254712345678");
    assert_eq!(body["BusinessShortCode"], "174379");
    assert_eq!(body["TransactionType"], "CustomerPayBillOnline");
    assert_eq!(
        body["CallBackURL"],
        env.url("/webhooks/mpesa-ke?token=cb-secret-7d1f0a9c2e5b")
    );

    // Compliance sees the new method by name: the limit deployed with it applies.
    let over = client
        .post_form(
            &pay,
            &[("idempotency-key", "ke-3")],
            &mpesa_payment(20_000, "ke-3"),
        )
        .await;
    over.assert_status(402);
    assert_eq!(
        daraja.requests().len(),
        1,
        "nothing sent for the denied payment"
    );

    // Daraja's callback: a forged one is refused, the real one makes the payment succeed.
    let callback = json!({"Body": {"stkCallback": {
        "MerchantRequestID": "29115-34620561-1",
        "CheckoutRequestID": "ws_CO_191220191020363925",
        "ResultCode": 0, "ResultDesc": "The service request is processed successfully.",
        "CallbackMetadata": {"Item": [
            {"Name": "Amount", "Value": 1500.00},
            {"Name": "MpesaReceiptNumber", "Value": "NLJ7RT61SV"},
            {"Name": "PhoneNumber", "Value": 254712345678u64}]}}}})
    .to_string();
    let json_body = [("content-type", "application/json")];
    let forged = client
        .send(
            Method::POST,
            &env.url("/webhooks/mpesa-ke?token=guess"),
            &json_body,
            callback.clone(),
        )
        .await;
    forged.assert_status(401);
    let accepted = client
        .send(
            Method::POST,
            &env.url("/webhooks/mpesa-ke?token=cb-secret-7d1f0a9c2e5b"),
            &json_body,
            callback.clone(),
        )
        .await;
    accepted.assert_status(200);
    assert_eq!(accepted.json()["ResultCode"], 0);
    let id = intent["id"].as_str().unwrap();
    let paid = client
        .get(&env.url(&format!("/v1/payment_intents/{id}")))
        .await;
    paid.assert_status(200);
    assert_eq!(paid.json()["status"], "succeeded", "{}", paid.json());
    assert_eq!(daraja.requests().len(), 1, "no second push");
}
