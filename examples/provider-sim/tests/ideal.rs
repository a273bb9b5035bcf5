//! The iDEAL-like API over real HTTP: transactions, the shopper at the bank, status, refunds,
//! IBAN and currency checks, the bearer token and idempotent replay.

mod json_http;

use hyper::{Method, StatusCode};
use json_http::{Answer, Http};
use provider_sim::Simulator;
use serde_json::{json, Value};

/// An edit that breaks a valid body.
type Patch = fn(&mut Value);

const AUTH: (&str, &str) = ("authorization", "Bearer test_ideal_key");

fn transaction(amount: &str, reference: &str) -> Value {
    json!({
        "amount": amount,
        "currency": "EUR",
        "iban": "NL91ABNA0417164300",
        "bic": "ABNANL2A",
        "reference": reference,
        "returnUrl": "https://shop.example/return?o=1",
        "description": "Order at Example Shop"
    })
}

async fn create(http: &Http, body: &Value, key: Option<&str>) -> Answer {
    let mut headers = vec![AUTH];
    if let Some(key) = key {
        headers.push(("idempotency-key", key));
    }
    http.send(
        Method::POST,
        "/ideal/v1/transactions",
        &headers,
        &body.to_string(),
    )
    .await
}

async fn status(http: &Http, id: &str) -> Answer {
    http.send(
        Method::GET,
        &format!("/ideal/v1/transactions/{id}"),
        &[AUTH],
        "",
    )
    .await
}

async fn refund(http: &Http, id: &str, body: Value, key: &str) -> Answer {
    let path = format!("/ideal/v1/transactions/{id}/refunds");
    http.send(
        Method::POST,
        &path,
        &[AUTH, ("idempotency-key", key)],
        &body.to_string(),
    )
    .await
}

#[tokio::test]
async fn transaction_opens_and_the_shopper_pays_at_the_bank() {
    let sim = Simulator::start(&["bank-nl"]).await.unwrap();
    let http = Http::new(&sim, "bank-nl");
    let answer = create(&http, &transaction("10.50", "order-1"), Some("idem-1")).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.json["status"], "open");
    assert_eq!(answer.json["amount"], "10.50");
    let id = answer.json["transactionId"].as_str().unwrap().to_owned();
    let url = answer.json["issuerAuthenticationUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(url, format!("{}/ideal/v1/authenticate/{id}", http.base));

    let ledger = sim.ledger("bank-nl");
    assert_eq!(ledger.len(), 1);
    let charge = &ledger[0];
    assert_eq!(
        (charge.id.as_str(), charge.amount, charge.currency.as_str()),
        (id.as_str(), 1050, "eur")
    );
    assert_eq!(charge.status, "requires_action");
    assert_eq!(charge.merchant_reference.as_deref(), Some("order-1"));
    assert_eq!(charge.idempotency_key.as_deref(), Some("idem-1"));
    assert_eq!(
        charge.metadata["returnUrl"],
        "https://shop.example/return?o=1"
    );

    let open = status(&http, &id).await;
    assert_eq!(open.json["status"], "open");
    assert_eq!(open.json["issuerAuthenticationUrl"], url.as_str());

    let back = http.send_url(Method::GET, &url, &[], "").await;
    assert_eq!(back.status, StatusCode::SEE_OTHER);
    let location = format!("https://shop.example/return?o=1&trxid={id}");
    assert_eq!(back.headers["location"], location.as_str());
    assert_eq!(back.json["status"], "success");

    let done = status(&http, &id).await;
    assert_eq!(done.json["status"], "success");
    assert!(done.json.get("issuerAuthenticationUrl").is_none());
    assert_eq!(sim.ledger("bank-nl")[0].status, "succeeded");
    // Coming back again changes nothing.
    let again = http
        .send_url(Method::GET, &format!("{url}?result=failure"), &[], "")
        .await;
    assert_eq!(again.json["status"], "success");
    sim.shutdown().await;
}

#[tokio::test]
async fn the_shopper_can_fail_cancel_or_let_it_expire() {
    let sim = Simulator::start(&["bank-nl"]).await.unwrap();
    let http = Http::new(&sim, "bank-nl");
    for (result, status_text, ledger_status) in [
        ("failure", "failure", "failed"),
        ("cancelled", "cancelled", "canceled"),
        ("expired", "expired", "expired"),
    ] {
        let answer = create(&http, &transaction("5.00", result), None).await;
        let url = answer.json["issuerAuthenticationUrl"]
            .as_str()
            .unwrap()
            .to_owned();
        let id = answer.json["transactionId"].as_str().unwrap().to_owned();
        http.send_url(Method::GET, &format!("{url}?result={result}"), &[], "")
            .await;
        assert_eq!(status(&http, &id).await.json["status"], status_text);
        let ledger = sim.ledger("bank-nl");
        assert_eq!(
            ledger.iter().find(|c| c.id == id).unwrap().status,
            ledger_status
        );
    }
    let answer = create(&http, &transaction("5.00", "x"), None).await;
    let url = answer.json["issuerAuthenticationUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    let bad = http
        .send_url(Method::GET, &format!("{url}?result=maybe"), &[], "")
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    sim.shutdown().await;
}

#[tokio::test]
async fn invalid_input_is_422_and_records_nothing() {
    let sim = Simulator::start(&["bank-nl"]).await.unwrap();
    let http = Http::new(&sim, "bank-nl");
    let cases: [(Patch, &str, &str); 8] = [
        (
            |b| b["iban"] = json!("NL91ABNA0417164301"),
            "invalid_iban",
            "iban",
        ),
        (
            |b| b["iban"] = json!("NL91ABNA041716430"),
            "invalid_iban",
            "iban",
        ),
        (
            |b| b["currency"] = json!("USD"),
            "currency_not_supported",
            "currency",
        ),
        (
            |b| b["amount"] = json!("10.505"),
            "invalid_amount",
            "amount",
        ),
        (|b| b["amount"] = json!(10.5), "invalid_amount", "amount"),
        (
            |b| {
                b.as_object_mut().unwrap().remove("amount");
            },
            "missing_amount",
            "amount",
        ),
        (
            |b| {
                b.as_object_mut().unwrap().remove("returnUrl");
            },
            "missing_return_url",
            "returnUrl",
        ),
        (
            |b| b["description"] = json!("x".repeat(36)),
            "description_too_long",
            "description",
        ),
    ];
    for (patch, code, field) in cases {
        let mut body = transaction("10.00", "r");
        patch(&mut body);
        let answer = create(&http, &body, None).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{code}");
        assert_eq!(answer.json["error"]["code"], code);
        assert_eq!(answer.json["error"]["field"], field);
    }
    assert!(sim.ledger("bank-nl").is_empty());
    // Spaced, lower-case IBANs are fine; so is none at all.
    let mut body = transaction("10.00", "r");
    body["iban"] = json!("nl91 abna 0417 1643 00");
    assert_eq!(create(&http, &body, None).await.status, StatusCode::CREATED);
    body.as_object_mut().unwrap().remove("iban");
    assert_eq!(create(&http, &body, None).await.status, StatusCode::CREATED);
    sim.shutdown().await;
}

#[tokio::test]
async fn bearer_token_required() {
    let sim = Simulator::start(&["bank-nl"]).await.unwrap();
    let http = Http::new(&sim, "bank-nl");
    let body = transaction("10.00", "r").to_string();
    for headers in [
        vec![],
        vec![("authorization", "Bearer ")],
        vec![("authorization", "Basic abc")],
    ] {
        let answer = http
            .send(Method::POST, "/ideal/v1/transactions", &headers, &body)
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.json["error"]["code"], "unauthorized");
    }
    let answer = http
        .send(Method::GET, "/ideal/v1/transactions/tr_x_1", &[], "")
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(sim.ledger("bank-nl").is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn idempotency_key_replays_and_conflicts() {
    let sim = Simulator::start(&["bank-nl"]).await.unwrap();
    let http = Http::new(&sim, "bank-nl");
    let first = create(&http, &transaction("10.00", "order-1"), Some("k1")).await;
    let again = create(&http, &transaction("10.00", "order-1"), Some("k1")).await;
    assert!(again.replayed());
    assert_eq!(first.json["transactionId"], again.json["transactionId"]);
    assert_eq!(sim.ledger("bank-nl").len(), 1);
    let other = create(&http, &transaction("11.00", "order-1"), Some("k1")).await;
    assert_eq!(other.status, StatusCode::CONFLICT);
    assert_eq!(other.json["error"]["code"], "idempotency_conflict");
    sim.shutdown().await;
}

#[tokio::test]
async fn refunds_only_after_payment_and_never_more_than_paid() {
    let sim = Simulator::start(&["bank-nl"]).await.unwrap();
    let http = Http::new(&sim, "bank-nl");
    let answer = create(&http, &transaction("10.00", "order-r"), None).await;
    let id = answer.json["transactionId"].as_str().unwrap().to_owned();
    let early = refund(
        &http,
        &id,
        json!({"amount": "1.00", "currency": "EUR"}),
        "r0",
    )
    .await;
    assert_eq!(early.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(early.json["error"]["code"], "not_refundable");

    let url = answer.json["issuerAuthenticationUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    http.send_url(Method::GET, &url, &[], "").await;
    let part = refund(
        &http,
        &id,
        json!({"amount": "2.50", "currency": "EUR", "reference": "rf-1"}),
        "r1",
    )
    .await;
    assert_eq!(part.status, StatusCode::CREATED);
    assert_eq!(part.json["status"], "success");
    assert_eq!(part.json["amount"], "2.50");
    let replay = refund(
        &http,
        &id,
        json!({"amount": "2.50", "currency": "EUR", "reference": "rf-1"}),
        "r1",
    )
    .await;
    assert!(replay.replayed());
    let too_much = refund(&http, &id, json!({"amount": "8.00"}), "r2").await;
    assert_eq!(too_much.json["error"]["code"], "amount_too_large");
    let rest = refund(&http, &id, json!({"currency": "EUR"}), "r3").await;
    assert_eq!(rest.json["amount"], "7.50");
    let refunds = sim.refunds("bank-nl");
    assert_eq!(
        refunds.iter().map(|r| r.amount).collect::<Vec<_>>(),
        vec![250, 750]
    );
    assert!(refunds.iter().all(|r| r.payment_intent == id));
    let unknown = status(&http, "tr_nope_9").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json["error"]["code"], "not_found");
    sim.shutdown().await;
}
