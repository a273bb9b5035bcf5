//! The GrabPay-like API over real HTTP: signature checks, charges in the ledger, replay on
//! `partnerTxID`, deterministic outcomes and follow-ups.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use provider_sim::{grabpay_credentials, Simulator};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const NAME: &str = "grab-sg";
const DATE: &str = "Tue, 14 Nov 2023 22:13:20 GMT";

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    json: Value,
}

/// A client that signs like the dialect plugin does.
struct Grab {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    partner: String,
    secret: String,
}

impl Grab {
    fn new(sim: &Simulator) -> Self {
        let (partner, secret) = grabpay_credentials(NAME);
        Grab {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: sim.base_url(NAME),
            partner,
            secret,
        }
    }

    fn sign(
        &self,
        secret: &str,
        method: &str,
        content_type: &str,
        date: &str,
        path: &str,
        body: &[u8],
    ) -> String {
        let hash = STANDARD.encode(Sha256::digest(body));
        let text = format!("{method}\n{content_type}\n{date}\n{path}\n{hash}\n");
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(text.as_bytes());
        STANDARD.encode(mac.finalize().into_bytes())
    }

    /// A correctly signed request.
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Answer {
        self.call_dated(method, path, body, DATE).await
    }

    async fn call_dated(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        date: &str,
    ) -> Answer {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let content_type = if body.is_some() {
            "application/json"
        } else {
            ""
        };
        let signature = self.sign(
            &self.secret,
            method.as_str(),
            content_type,
            date,
            path,
            &bytes,
        );
        let auth = format!("{}:{signature}", self.partner);
        let mut headers = vec![("date", date.to_owned()), ("authorization", auth)];
        if body.is_some() {
            headers.push(("content-type", content_type.to_owned()));
        }
        self.raw(method, path, &headers, bytes).await
    }

    async fn raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = self
            .client
            .request(request.body(Full::new(Bytes::from(body))).expect("request"))
            .await
            .expect("answered");
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            json: serde_json::from_slice(&bytes).expect("JSON answer"),
        }
    }
}

fn init(partner_tx_id: &str, amount: i64) -> Value {
    json!({
        "partnerTxID": partner_tx_id,
        "partnerGroupTxID": format!("order-{partner_tx_id}"),
        "amount": amount,
        "currency": "SGD",
        "description": "Kopi",
        "merchantID": "merchant-1",
        "authoriseOnly": false,
    })
}

const INIT: &str = "/grabpay/v2/charge/init";

/// Header name and value pairs of a raw request.
type Headers = Vec<(&'static str, String)>;

#[tokio::test]
async fn signed_charge_is_recorded_and_replayed_on_the_same_partner_tx_id() {
    let sim = Simulator::start(&[NAME]).await.expect("start");
    let grab = Grab::new(&sim);

    let first = grab
        .call(Method::POST, INIT, Some(&init("ptx-1", 1000)))
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.json);
    assert_eq!(first.json["status"], "success");
    assert_eq!(first.json["partnerTxID"], "ptx-1");
    let tx_id = first.json["txID"].as_str().expect("txID").to_owned();
    assert!(tx_id.starts_with("grab_"), "{tx_id}");

    let ledger = sim.ledger(NAME);
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].id, tx_id);
    assert_eq!(ledger[0].amount, 1000);
    assert_eq!(ledger[0].currency, "sgd");
    assert_eq!(ledger[0].merchant_reference.as_deref(), Some("order-ptx-1"));
    assert_eq!(ledger[0].idempotency_key.as_deref(), Some("ptx-1"));

    // A resend later (another Date, so another signature) replays the first answer.
    let again = grab
        .call_dated(
            Method::POST,
            INIT,
            Some(&init("ptx-1", 1000)),
            "Tue, 14 Nov 2023 22:14:00 GMT",
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.json, first.json);
    assert_eq!(sim.ledger(NAME).len(), 1);

    // The same partnerTxID for another charge is a conflict.
    let other = grab
        .call(Method::POST, INIT, Some(&init("ptx-1", 2000)))
        .await;
    assert_eq!(other.status, StatusCode::CONFLICT);
    assert_eq!(other.json["code"], "duplicate_partner_tx_id");
    assert_eq!(sim.ledger(NAME).len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_or_missing_signatures_are_rejected_and_record_nothing() {
    let sim = Simulator::start(&[NAME]).await.expect("start");
    let grab = Grab::new(&sim);
    let body = init("ptx-bad", 1000).to_string().into_bytes();
    let good = grab.sign(&grab.secret, "POST", "application/json", DATE, INIT, &body);
    let wrong_secret = grab.sign(
        "not-the-secret",
        "POST",
        "application/json",
        DATE,
        INIT,
        &body,
    );
    let other_path = grab.sign(
        &grab.secret,
        "POST",
        "application/json",
        DATE,
        "/grabpay/v2/charge/x",
        &body,
    );
    let ct = ("content-type", "application/json".to_owned());
    let date = ("date", DATE.to_owned());
    let auth = |sig: &str| ("authorization", format!("{}:{sig}", grab.partner));
    let cases: Vec<(&str, Headers, Vec<u8>)> = vec![
        (
            "wrong secret",
            vec![date.clone(), ct.clone(), auth(&wrong_secret)],
            body.clone(),
        ),
        (
            "signed for another path",
            vec![date.clone(), ct.clone(), auth(&other_path)],
            body.clone(),
        ),
        (
            "tampered body",
            vec![date.clone(), ct.clone(), auth(&good)],
            init("ptx-bad", 9000).to_string().into_bytes(),
        ),
        (
            "another date",
            vec![
                ("date", "Wed, 15 Nov 2023 00:00:00 GMT".into()),
                ct.clone(),
                auth(&good),
            ],
            body.clone(),
        ),
        ("missing date", vec![ct.clone(), auth(&good)], body.clone()),
        (
            "missing authorization",
            vec![date.clone(), ct.clone()],
            body.clone(),
        ),
        (
            "unknown partner",
            vec![
                date.clone(),
                ct.clone(),
                ("authorization", format!("someone:{good}")),
            ],
            body.clone(),
        ),
        (
            "not base64",
            vec![date.clone(), ct.clone(), auth("%%%")],
            body.clone(),
        ),
        (
            "no separator",
            vec![date.clone(), ct.clone(), ("authorization", good.clone())],
            body.clone(),
        ),
    ];
    for (name, headers, body) in cases {
        let answer = grab.raw(Method::POST, INIT, &headers, body).await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{name}: {}",
            answer.json
        );
        assert_eq!(answer.json["code"], "unauthorized", "{name}");
    }
    assert!(sim.ledger(NAME).is_empty());
    // The properly signed request still goes through: nothing was stored for its key.
    let answer = grab
        .raw(Method::POST, INIT, &[date, ct, auth(&good)], body)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.json);
    assert_eq!(sim.ledger(NAME).len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn outcomes_follow_the_amount() {
    let sim = Simulator::start(&[NAME]).await.expect("start");
    let grab = Grab::new(&sim);
    for (amount, code) in [
        (1013, "insufficient_balance"),
        (1066, "risk_rejected"),
        (1077, "wallet_blocked"),
    ] {
        let answer = grab
            .call(
                Method::POST,
                INIT,
                Some(&init(&format!("d-{amount}"), amount)),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.json["status"], "failed", "{amount}");
        assert_eq!(answer.json["code"], code, "{amount}");
    }
    assert!(sim.ledger(NAME).is_empty(), "declines are not charges");

    let system = grab
        .call(Method::POST, INIT, Some(&init("e-1", 1099)))
        .await;
    assert_eq!(system.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(system.json["code"], "internal_error");
    assert!(sim.ledger(NAME).is_empty());

    let pending = grab
        .call(Method::POST, INIT, Some(&init("p-1", 1088)))
        .await;
    assert_eq!(pending.json["status"], "pending");
    assert_eq!(sim.ledger(NAME)[0].status, "processing");

    let invalid = grab
        .call(Method::POST, INIT, Some(&json!({"partnerTxID": "x"})))
        .await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    let eur = json!({"partnerTxID": "eur", "partnerGroupTxID": "o", "amount": 100, "currency": "EUR", "description": "d", "merchantID": "m"});
    assert_eq!(
        grab.call(Method::POST, INIT, Some(&eur)).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(sim.ledger(NAME).len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn authorise_capture_refund_cancel_and_status() {
    let sim = Simulator::start(&[NAME]).await.expect("start");
    let grab = Grab::new(&sim);
    let mut body = init("auth-1", 5000);
    body["authoriseOnly"] = true.into();
    let authorised = grab.call(Method::POST, INIT, Some(&body)).await;
    assert_eq!(authorised.json["status"], "authorised");
    let tx = authorised.json["txID"].as_str().expect("txID").to_owned();

    // Status by txID and by partnerTxID (what an ambiguous first attempt has).
    for id in [tx.as_str(), "auth-1"] {
        let status = grab
            .call(
                Method::GET,
                &format!("/grabpay/v2/charge/{id}/status"),
                None,
            )
            .await;
        assert_eq!(status.status, StatusCode::OK, "{}", status.json);
        assert_eq!(status.json["status"], "authorised");
        assert_eq!(status.json["txID"], tx.as_str());
    }
    let unknown = grab
        .call(Method::GET, "/grabpay/v2/charge/nope/status", None)
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    let follow = |ptx: &str, amount: Option<i64>| {
        let mut body = json!({"partnerTxID": ptx, "merchantID": "merchant-1"});
        if let Some(amount) = amount {
            body["amount"] = amount.into();
            body["currency"] = "SGD".into();
        }
        body
    };
    let refund_early = grab
        .call(
            Method::POST,
            &format!("/grabpay/v2/charge/{tx}/refund"),
            Some(&follow("r-0", None)),
        )
        .await;
    assert_eq!(refund_early.status, StatusCode::BAD_REQUEST);
    assert_eq!(refund_early.json["code"], "invalid_state");

    let captured = grab
        .call(
            Method::POST,
            &format!("/grabpay/v2/charge/{tx}/capture"),
            Some(&follow("c-1", Some(4000))),
        )
        .await;
    assert_eq!(captured.json["status"], "success", "{}", captured.json);
    assert_eq!(sim.ledger(NAME)[0].status, "succeeded");
    assert_eq!(sim.ledger(NAME)[0].amount, 4000);

    let refunded = grab
        .call(
            Method::POST,
            &format!("/grabpay/v2/charge/{tx}/refund"),
            Some(&follow("r-1", Some(1500))),
        )
        .await;
    assert_eq!(refunded.json["status"], "success");
    assert_eq!(refunded.json["originTxID"], tx.as_str());
    let too_much = grab
        .call(
            Method::POST,
            &format!("/grabpay/v2/charge/{tx}/refund"),
            Some(&follow("r-2", Some(2600))),
        )
        .await;
    assert_eq!(too_much.status, StatusCode::BAD_REQUEST);
    assert_eq!(too_much.json["code"], "invalid_amount");
    let rest = grab
        .call(
            Method::POST,
            &format!("/grabpay/v2/charge/{tx}/refund"),
            Some(&follow("r-3", None)),
        )
        .await;
    assert_eq!(rest.json["amount"], 2500);
    let refunds = sim.refunds(NAME);
    assert_eq!(
        refunds.iter().map(|r| r.amount).collect::<Vec<_>>(),
        vec![1500, 2500]
    );
    assert!(refunds.iter().all(|r| r.payment_intent == tx));

    // Cancel only releases authorisations.
    let cancel_paid = grab
        .call(
            Method::POST,
            &format!("/grabpay/v2/charge/{tx}/cancel"),
            Some(&follow("v-1", None)),
        )
        .await;
    assert_eq!(cancel_paid.status, StatusCode::BAD_REQUEST);
    let mut second = init("auth-2", 700);
    second["authoriseOnly"] = true.into();
    let tx2 = grab.call(Method::POST, INIT, Some(&second)).await.json["txID"]
        .as_str()
        .expect("txID")
        .to_owned();
    let cancelled = grab
        .call(
            Method::POST,
            &format!("/grabpay/v2/charge/{tx2}/cancel"),
            Some(&follow("v-2", None)),
        )
        .await;
    assert_eq!(cancelled.json["status"], "success");
    let status = grab
        .call(
            Method::GET,
            &format!("/grabpay/v2/charge/{tx2}/status"),
            None,
        )
        .await;
    assert_eq!(status.json["status"], "cancelled");
    let missing = grab
        .call(
            Method::POST,
            "/grabpay/v2/charge/grab_none_9/capture",
            Some(&follow("c-9", None)),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    sim.shutdown().await;
}
