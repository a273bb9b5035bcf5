//! The DANA-like XML API over real HTTP: strict parsing, charges in the ledger, replay on
//! `reqMsgId`, deterministic outcomes, checkout and follow-ups.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use provider_sim::Simulator;
use serde::Deserialize;

const NAME: &str = "dana-id";
const API: &str = "/dana/v1/payment.xml";

/// The parts of an answer the tests look at.
#[derive(Debug, Deserialize)]
struct Response {
    head: Head,
    body: Body,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    req_msg_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    result_info: ResultInfo,
    acquirement_id: Option<String>,
    merchant_trans_id: Option<String>,
    checkout_url: Option<String>,
    acquirement_status: Option<String>,
    order_amount: Option<Amount>,
    refund_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResultInfo {
    result_status: String,
    result_code: String,
}

#[derive(Debug, Deserialize)]
struct Amount {
    value: String,
    currency: String,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
    xml: Response,
}

impl Answer {
    fn code(&self) -> (&str, &str) {
        let info = &self.xml.body.result_info;
        (info.result_status.as_str(), info.result_code.as_str())
    }
}

struct Dana {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Dana {
    fn new(sim: &Simulator) -> Self {
        Dana {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: sim.base_url(NAME),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: String,
    ) -> (StatusCode, HeaderMap, String) {
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let response = self.client.request(request).await.expect("answered");
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8(bytes.to_vec()).expect("utf-8"),
        )
    }

    async fn xml(&self, body: String) -> Answer {
        let (status, headers, text) = self.send(Method::POST, API, "application/xml", body).await;
        assert_eq!(headers["content-type"], "application/xml");
        let xml = quick_xml::de::from_str(&text)
            .unwrap_or_else(|e| panic!("answer is not DANA XML ({e}): {text}"));
        Answer {
            status,
            headers,
            text,
            xml,
        }
    }
}

fn escape(text: &str) -> String {
    quick_xml::escape::escape(text).into_owned()
}

fn request(function: &str, msg_id: &str, req_time: &str, body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><request><head><version>2.0</version>\
         <function>{function}</function><clientId>client-1</clientId><reqTime>{req_time}</reqTime>\
         <reqMsgId>{}</reqMsgId></head><body><merchantId>m-1</merchantId>{body}</body></request>",
        escape(msg_id)
    )
}

fn create(msg_id: &str, reference: &str, value: &str) -> String {
    create_at(msg_id, reference, value, "2023-11-15T05:13:20+07:00")
}

fn create_at(msg_id: &str, reference: &str, value: &str, req_time: &str) -> String {
    let body = format!(
        "<merchantTransId>{}</merchantTransId><order><orderTitle>Kopi</orderTitle><orderAmount>\
         <value>{value}</value><currency>IDR</currency></orderAmount></order>\
         <shopperPhone>+6281234567890</shopperPhone>",
        escape(reference)
    );
    request("dana.acquiring.order.create", msg_id, req_time, &body)
}

fn by_id(function: &str, msg_id: &str, id: &str, extra: &str) -> String {
    request(
        function,
        msg_id,
        "2023-11-15T05:13:20+07:00",
        &format!("<acquirementId>{id}</acquirementId>{extra}"),
    )
}

#[tokio::test]
async fn create_records_redirects_and_replays_on_req_msg_id() {
    let sim = Simulator::start(&[NAME]).await.expect("start");
    let dana = Dana::new(&sim);
    let reference = r#"order <1> & "two" 'three'"#;

    let first = dana.xml(create("msg-1", reference, "150000.00")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(first.code(), ("S", "SUCCESS"));
    assert_eq!(first.xml.head.req_msg_id, "msg-1");
    assert_eq!(first.xml.body.merchant_trans_id.as_deref(), Some(reference));
    let id = first
        .xml
        .body
        .acquirement_id
        .clone()
        .expect("acquirementId");
    let checkout = first.xml.body.checkout_url.clone().expect("checkoutUrl");
    assert_eq!(checkout, format!("{}/dana/v1/checkout/{id}", dana.base));

    let ledger = sim.ledger(NAME);
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].id, id);
    assert_eq!(ledger[0].amount, 15_000_000);
    assert_eq!(ledger[0].currency, "idr");
    assert_eq!(ledger[0].status, "requires_action");
    assert_eq!(ledger[0].merchant_reference.as_deref(), Some(reference));
    assert_eq!(ledger[0].idempotency_key.as_deref(), Some("msg-1"));

    // A resend (new reqTime) replays; the same id for another order is inconsistent.
    let again = dana
        .xml(create_at(
            "msg-1",
            reference,
            "150000.00",
            "2023-11-15T05:14:00+07:00",
        ))
        .await;
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.text, first.text);
    let other = dana.xml(create("msg-1", reference, "99.00")).await;
    assert_eq!(other.code(), ("F", "REPEAT_REQ_INCONSISTENT"));
    assert_eq!(sim.ledger(NAME).len(), 1);

    // Status INIT until the shopper pays on the checkout page.
    let query = || by_id("dana.acquiring.order.query", "q-1", &id, "");
    let before = dana.xml(query()).await;
    assert_eq!(before.xml.body.acquirement_status.as_deref(), Some("INIT"));
    let (status, _, paid) = dana
        .send(
            Method::GET,
            &format!("/dana/v1/checkout/{id}"),
            "text/html",
            String::new(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    let after = dana.xml(query()).await;
    assert_eq!(after.code(), ("S", "SUCCESS"));
    assert_eq!(
        after.xml.body.acquirement_status.as_deref(),
        Some("SUCCESS")
    );
    let amount = after.xml.body.order_amount.as_ref().expect("orderAmount");
    assert_eq!(
        (amount.value.as_str(), amount.currency.as_str()),
        ("150000.00", "IDR")
    );
    assert_eq!(sim.ledger(NAME)[0].status, "succeeded");

    // Query by merchantTransId, and for an order that does not exist.
    let by_reference = request(
        "dana.acquiring.order.query",
        "q-2",
        "t",
        &format!("<merchantTransId>{}</merchantTransId>", escape(reference)),
    );
    assert_eq!(
        dana.xml(by_reference)
            .await
            .xml
            .body
            .acquirement_id
            .as_deref(),
        Some(id.as_str())
    );
    let unknown = dana
        .xml(by_id(
            "dana.acquiring.order.query",
            "q-3",
            "dana_none_1",
            "",
        ))
        .await;
    assert_eq!(unknown.code(), ("F", "ORDER_NOT_EXIST"));
    sim.shutdown().await;
}

#[tokio::test]
async fn malformed_or_illegal_requests_are_param_illegal_and_record_nothing() {
    let sim = Simulator::start(&[NAME]).await.expect("start");
    let dana = Dana::new(&sim);
    let good = create("msg-x", "o-1", "1000.00");
    let cases = [
        ("truncated", good.replace("</request>", "")),
        ("mismatched tags", good.replace("</head>", "</heads>")),
        (
            "wrong root",
            good.replace("<request>", "<req>")
                .replace("</request>", "</req>"),
        ),
        (
            "unknown element",
            good.replace("</body>", "<tip>1</tip></body>"),
        ),
        (
            "missing clientId",
            good.replace("<clientId>client-1</clientId>", ""),
        ),
        (
            "wrong version",
            good.replace("<version>2.0</version>", "<version>1.0</version>"),
        ),
        (
            "unknown function",
            good.replace("order.create", "order.explode"),
        ),
        ("wrong exponent", create("msg-x", "o-1", "1000.001")),
        ("not a number", create("msg-x", "o-1", "1e3")),
        (
            "other currency",
            good.replace("<currency>IDR</currency>", "<currency>USD</currency>"),
        ),
        ("bad phone", good.replace("+6281234567890", "0812")),
        (
            "no phone",
            good.replace("<shopperPhone>+6281234567890</shopperPhone>", ""),
        ),
        ("not XML", "{\"amount\": 1}".to_owned()),
    ];
    for (name, body) in cases {
        let answer = dana.xml(body).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{name}: {}",
            answer.text
        );
        assert_eq!(answer.code(), ("F", "PARAM_ILLEGAL"), "{name}");
    }
    let (status, _, text) = dana
        .send(Method::POST, API, "application/json", good.clone())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(sim.ledger(NAME).is_empty());
    // Nothing was stored for the key either: the good request still goes through.
    assert_eq!(dana.xml(good).await.code(), ("S", "SUCCESS"));
    sim.shutdown().await;
}

#[tokio::test]
async fn outcomes_follow_the_amount() {
    let sim = Simulator::start(&[NAME]).await.expect("start");
    let dana = Dana::new(&sim);
    for (value, status, code) in [
        ("1000.13", "F", "INSUFFICIENT_BALANCE"),
        ("1000.66", "F", "RISK_REJECT"),
        ("1000.77", "F", "USER_STATUS_ABNORMAL"),
        ("1000.99", "U", "SYSTEM_ERROR"),
    ] {
        let answer = dana.xml(create(&format!("m-{value}"), "o", value)).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.code(), (status, code), "{value}");
        assert!(answer.xml.body.acquirement_id.is_none());
    }
    assert!(sim.ledger(NAME).is_empty());
    // A SYSTEM_ERROR is not stored: the resend is processed again, not replayed.
    let again = dana.xml(create("m-1000.99", "o", "1000.99")).await;
    assert!(!again.headers.contains_key("idempotent-replayed"));
    // A decline is stored and replayed.
    let declined = dana.xml(create("m-1000.13", "o", "1000.13")).await;
    assert_eq!(declined.headers["idempotent-replayed"], "true");
    sim.shutdown().await;
}

#[tokio::test]
async fn refunds_and_cancels() {
    let sim = Simulator::start(&[NAME]).await.expect("start");
    let dana = Dana::new(&sim);
    let paid = dana
        .xml(create("c-1", "o-1", "50000.00"))
        .await
        .xml
        .body
        .acquirement_id
        .expect("id");
    let unpaid = dana
        .xml(create("c-2", "o-2", "20000.00"))
        .await
        .xml
        .body
        .acquirement_id
        .expect("id");
    dana.send(
        Method::GET,
        &format!("/dana/v1/checkout/{paid}"),
        "text/html",
        String::new(),
    )
    .await;

    let refund = |msg: &str, id: &str, value: Option<&str>| {
        let amount = value
            .map(|v| {
                format!("<refundAmount><value>{v}</value><currency>IDR</currency></refundAmount>")
            })
            .unwrap_or_default();
        by_id("dana.acquiring.order.refund", msg, id, &amount)
    };
    let unpaid_refund = dana.xml(refund("r-0", &unpaid, None)).await;
    assert_eq!(unpaid_refund.code(), ("F", "ORDER_STATUS_INVALID"));
    let partial = dana.xml(refund("r-1", &paid, Some("20000.00"))).await;
    assert_eq!(partial.code(), ("S", "SUCCESS"), "{}", partial.text);
    assert!(partial
        .xml
        .body
        .refund_id
        .as_deref()
        .is_some_and(|r| r.starts_with("danare_")));
    let replayed = dana.xml(refund("r-1", &paid, Some("20000.00"))).await;
    assert_eq!(replayed.headers["idempotent-replayed"], "true");
    let too_much = dana.xml(refund("r-2", &paid, Some("30000.01"))).await;
    assert_eq!(too_much.code(), ("F", "REFUND_AMOUNT_EXCEED"));
    let rest = dana.xml(refund("r-3", &paid, None)).await;
    assert_eq!(rest.code(), ("S", "SUCCESS"));
    let refunds = sim.refunds(NAME);
    assert_eq!(
        refunds.iter().map(|r| r.amount).collect::<Vec<_>>(),
        vec![2_000_000, 3_000_000]
    );

    let cancel_paid = dana
        .xml(by_id("dana.acquiring.order.cancel", "v-1", &paid, ""))
        .await;
    assert_eq!(cancel_paid.code(), ("F", "ORDER_STATUS_INVALID"));
    let cancelled = dana
        .xml(by_id("dana.acquiring.order.cancel", "v-2", &unpaid, ""))
        .await;
    assert_eq!(cancelled.code(), ("S", "SUCCESS"));
    let query = dana
        .xml(by_id("dana.acquiring.order.query", "q", &unpaid, ""))
        .await;
    assert_eq!(
        query.xml.body.acquirement_status.as_deref(),
        Some("CANCELLED")
    );
    let (status, _, _) = dana
        .send(
            Method::GET,
            "/dana/v1/checkout/dana_none_1",
            "text/html",
            String::new(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    sim.shutdown().await;
}
