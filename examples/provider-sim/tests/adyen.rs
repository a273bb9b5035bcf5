//! The Adyen-like API over real HTTP: outcomes decided by the amount, redirects, the API key,
//! idempotent replay, modifications and the ledger.

mod json_http;

use hyper::{Method, StatusCode};
use json_http::{Answer, Http};
use provider_sim::{Faults, Simulator};
use serde_json::{json, Value};

/// An edit that breaks a valid body.
type Patch = fn(&mut Value);

const KEY: (&str, &str) = ("x-api-key", "test_adyen_key");

fn payment(value: i64, reference: &str) -> Value {
    json!({
        "merchantAccount": "PayproxyECOM",
        "amount": {"value": value, "currency": "EUR"},
        "reference": reference,
        "paymentMethod": {"type": "scheme", "storedPaymentMethodId": "tok_visa_4242"},
        "countryCode": "NL",
        "shopperEmail": "shopper@example.com",
        "metadata": {"cart": "c-9"}
    })
}

async fn pay(http: &Http, body: &Value, key: Option<&str>) -> Answer {
    let mut headers = vec![KEY];
    if let Some(key) = key {
        headers.push(("idempotency-key", key));
    }
    http.send(
        Method::POST,
        "/adyen/v71/payments",
        &headers,
        &body.to_string(),
    )
    .await
}

async fn modify(http: &Http, psp: &str, kind: &str, body: Value) -> Answer {
    let path = format!("/adyen/v71/payments/{psp}/{kind}");
    http.send(Method::POST, &path, &[KEY], &body.to_string())
        .await
}

#[tokio::test]
async fn card_payment_is_authorised_and_recorded() {
    let sim = Simulator::start(&["adyen-eu"]).await.unwrap();
    let http = Http::new(&sim, "adyen-eu");
    let answer = pay(&http, &payment(1050, "order-1"), Some("idem-1")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json["resultCode"], "Authorised");
    assert_eq!(
        answer.json["amount"],
        json!({"value": 1050, "currency": "EUR"})
    );
    assert_eq!(answer.json["merchantReference"], "order-1");
    let psp = answer.json["pspReference"].as_str().unwrap();
    let ledger = sim.ledger("adyen-eu");
    assert_eq!(ledger.len(), 1);
    let charge = &ledger[0];
    assert_eq!(charge.id, psp);
    assert_eq!(
        (
            charge.amount,
            charge.currency.as_str(),
            charge.status.as_str()
        ),
        (1050, "eur", "succeeded")
    );
    assert_eq!(charge.merchant_reference.as_deref(), Some("order-1"));
    assert_eq!(charge.idempotency_key.as_deref(), Some("idem-1"));
    assert_eq!(charge.metadata.get("cart").map(String::as_str), Some("c-9"));
    sim.shutdown().await;
}

#[tokio::test]
async fn missing_api_key_is_401_and_does_nothing() {
    let sim = Simulator::start(&["adyen-eu"]).await.unwrap();
    let http = Http::new(&sim, "adyen-eu");
    let body = payment(1050, "order-1").to_string();
    let answer = http
        .send(
            Method::POST,
            "/adyen/v71/payments",
            &[("x-api-key", " ")],
            &body,
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.json["errorCode"], "000");
    assert_eq!(answer.json["errorType"], "security");
    assert!(sim.ledger("adyen-eu").is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn amounts_decide_refusals_pending_and_errors() {
    let sim = Simulator::start(&["adyen-eu"]).await.unwrap();
    let http = Http::new(&sim, "adyen-eu");
    for (value, result, code, reason) in [
        (1005, "Refused", Some("12"), Some("Not enough balance")),
        (1006, "Refused", Some("6"), Some("Expired Card")),
        (1020, "Refused", Some("20"), Some("FRAUD")),
        (1024, "Refused", Some("24"), Some("CVC Declined")),
        (1002, "Refused", Some("2"), Some("Refused")),
        (1099, "Error", None, Some("Acquirer Error")),
        (1007, "Pending", None, None),
    ] {
        let answer = pay(&http, &payment(value, "r"), None).await;
        assert_eq!(answer.status, StatusCode::OK, "{value}");
        assert_eq!(answer.json["resultCode"], result, "{value}");
        assert_eq!(answer.json["refusalReasonCode"].as_str(), code, "{value}");
        assert_eq!(answer.json["refusalReason"].as_str(), reason, "{value}");
        assert!(answer.json["pspReference"].is_string());
    }
    // Only the pending payment may move money.
    let ledger = sim.ledger("adyen-eu");
    assert_eq!(ledger.len(), 1);
    assert_eq!(
        (ledger[0].amount, ledger[0].status.as_str()),
        (1007, "processing")
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn ideal_redirects_and_the_shopper_completes_it() {
    let sim = Simulator::start(&["adyen-eu"]).await.unwrap();
    let http = Http::new(&sim, "adyen-eu");
    let mut body = payment(2500, "order-ideal");
    body["paymentMethod"] = json!({"type": "ideal"});
    body["returnUrl"] = "https://shop.example/return".into();
    let answer = pay(&http, &body, Some("idem-ideal")).await;
    assert_eq!(answer.json["resultCode"], "RedirectShopper");
    assert_eq!(answer.json["action"]["type"], "redirect");
    let url = answer.json["action"]["url"].as_str().unwrap().to_owned();
    let psp = answer.json["pspReference"].as_str().unwrap().to_owned();
    assert_eq!(url, format!("{}/adyen/v71/redirect/{psp}", http.base));
    assert_eq!(sim.ledger("adyen-eu")[0].status, "requires_action");

    let back = http.send_url(Method::GET, &url, &[], "").await;
    assert_eq!(back.status, StatusCode::OK);
    assert_eq!(back.json["resultCode"], "Authorised");
    assert_eq!(sim.ledger("adyen-eu")[0].status, "succeeded");
    sim.shutdown().await;
}

#[tokio::test]
async fn same_idempotency_key_replays_and_another_body_conflicts() {
    let sim = Simulator::start(&["adyen-eu"]).await.unwrap();
    let http = Http::new(&sim, "adyen-eu");
    let first = pay(&http, &payment(1050, "order-1"), Some("idem-r")).await;
    let again = pay(&http, &payment(1050, "order-1"), Some("idem-r")).await;
    assert!(!first.replayed());
    assert!(again.replayed());
    assert_eq!(first.json, again.json);
    assert_eq!(sim.ledger("adyen-eu").len(), 1, "a replay charges nothing");

    let other = pay(&http, &payment(2000, "order-2"), Some("idem-r")).await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(other.json["errorCode"], "704");

    // A refused answer is replayed too: the resend of a decline stays a decline.
    let refused = pay(&http, &payment(1005, "order-3"), Some("idem-d")).await;
    let refused_again = pay(&http, &payment(1005, "order-3"), Some("idem-d")).await;
    assert!(refused_again.replayed());
    assert_eq!(
        refused.json["pspReference"],
        refused_again.json["pspReference"]
    );
    assert_eq!(sim.ledger("adyen-eu").len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn manual_capture_then_capture_refund_and_cancel_rules() {
    let sim = Simulator::start(&["adyen-eu"]).await.unwrap();
    let http = Http::new(&sim, "adyen-eu");
    let mut body = payment(5000, "order-m");
    body["additionalData"] = json!({"manualCapture": "true"});
    let answer = pay(&http, &body, None).await;
    let psp = answer.json["pspReference"].as_str().unwrap().to_owned();
    assert_eq!(sim.ledger("adyen-eu")[0].status, "requires_capture");

    let amount = |v: i64| json!({"merchantAccount": "PayproxyECOM", "amount": {"value": v, "currency": "EUR"}, "reference": "order-m"});
    let early_refund = modify(&http, &psp, "refunds", amount(100)).await;
    assert_eq!(early_refund.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(early_refund.json["errorCode"], "703");

    let capture = modify(&http, &psp, "captures", amount(5000)).await;
    assert_eq!(capture.status, StatusCode::ACCEPTED);
    assert_eq!(capture.json["status"], "received");
    assert_eq!(capture.json["paymentPspReference"], psp.as_str());
    assert_ne!(capture.json["pspReference"], psp.as_str());
    assert_eq!(sim.ledger("adyen-eu")[0].status, "succeeded");

    let refund = modify(&http, &psp, "refunds", amount(1500)).await;
    assert_eq!(refund.status, StatusCode::ACCEPTED);
    assert_eq!(
        refund.json["amount"],
        json!({"value": 1500, "currency": "EUR"})
    );
    let refunds = sim.refunds("adyen-eu");
    assert_eq!(refunds.len(), 1);
    assert_eq!(
        (refunds[0].payment_intent.as_str(), refunds[0].amount),
        (psp.as_str(), 1500)
    );
    assert_eq!(refunds[0].id, refund.json["pspReference"].as_str().unwrap());

    let too_much = modify(&http, &psp, "refunds", amount(4000)).await;
    assert_eq!(too_much.json["errorCode"], "137");
    let cancel = modify(
        &http,
        &psp,
        "cancels",
        json!({"merchantAccount": "PayproxyECOM", "reference": "x"}),
    )
    .await;
    assert_eq!(
        cancel.json["errorCode"], "703",
        "a captured payment cannot be cancelled"
    );
    let unknown = modify(&http, "psp_nope_1", "captures", amount(1)).await;
    assert_eq!(unknown.json["errorCode"], "167");
    sim.shutdown().await;
}

#[tokio::test]
async fn cancel_an_authorisation() {
    let sim = Simulator::start(&["adyen-eu"]).await.unwrap();
    let http = Http::new(&sim, "adyen-eu");
    let mut body = payment(5000, "order-c");
    body["additionalData"] = json!({"manualCapture": "true"});
    let psp = pay(&http, &body, None).await.json["pspReference"]
        .as_str()
        .unwrap()
        .to_owned();
    let cancel = modify(
        &http,
        &psp,
        "cancels",
        json!({"merchantAccount": "PayproxyECOM", "reference": "order-c"}),
    )
    .await;
    assert_eq!(cancel.status, StatusCode::ACCEPTED);
    assert!(cancel.json.get("amount").is_none());
    assert_eq!(sim.ledger("adyen-eu")[0].status, "canceled");
    sim.shutdown().await;
}

#[tokio::test]
async fn validation_errors_are_422_and_record_nothing() {
    let sim = Simulator::start(&["adyen-eu"]).await.unwrap();
    let http = Http::new(&sim, "adyen-eu");
    let cases: [(Patch, &str); 6] = [
        (
            |b| {
                b.as_object_mut().unwrap().remove("merchantAccount");
            },
            "901",
        ),
        (
            |b| {
                b.as_object_mut().unwrap().remove("amount");
            },
            "100",
        ),
        (|b| b["amount"]["value"] = json!(-5), "137"),
        (|b| b["amount"]["currency"] = json!("XYZ"), "138"),
        (
            |b| {
                b.as_object_mut().unwrap().remove("reference");
            },
            "130",
        ),
        (|b| b["paymentMethod"] = json!({"type": "scheme"}), "702"),
    ];
    for (patch, code) in cases {
        let mut body = payment(1000, "r");
        patch(&mut body);
        let answer = pay(&http, &body, Some("same-key")).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{code}");
        assert_eq!(answer.json["errorCode"], code);
        assert_eq!(answer.json["errorType"], "validation");
    }
    let garbage = http
        .send(Method::POST, "/adyen/v71/payments", &[KEY], "{not json")
        .await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST);
    assert!(
        sim.ledger("adyen-eu").is_empty(),
        "failed calls are not stored, so the key stays usable"
    );
    let ok = pay(&http, &payment(1000, "r"), Some("same-key")).await;
    assert_eq!(ok.json["resultCode"], "Authorised");
    sim.shutdown().await;
}

#[tokio::test]
async fn injected_unavailability_does_nothing() {
    let sim = Simulator::start(&["adyen-eu"]).await.unwrap();
    let http = Http::new(&sim, "adyen-eu");
    sim.set_faults("adyen-eu", Faults::error(503));
    let answer = pay(&http, &payment(1000, "r"), Some("k")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(sim.ledger("adyen-eu").is_empty());
    sim.set_faults("adyen-eu", Faults::default());
    let answer = pay(&http, &payment(1000, "r"), Some("k")).await;
    assert_eq!(answer.json["resultCode"], "Authorised");
    assert!(!answer.replayed());
    sim.shutdown().await;
}
