//! The DANA-like API: XML orders on one endpoint, the call chosen by `<function>`.
//!
//! `POST /dana/v1/payment.xml` takes `<request><head>…</head><body>…</body></request>`
//! (`dana.acquiring.order.create|query|cancel|refund`) and answers
//! `<response><head>…</head><body><resultInfo>…</resultInfo>…</body></response>`. The XML is
//! parsed strictly (root `request`, no unknown elements, version `2.0`); anything else is a
//! 400 `PARAM_ILLEGAL`. Amounts are decimal strings with IDR's exponent, parsed exactly.
//! `reqMsgId` is the idempotency key: create, cancel and refund answers are stored and
//! replayed for the same body (`reqTime` may differ), a different body with the same id is
//! `REPEAT_REQ_INCONSISTENT`. Queries are reads and never stored.
//!
//! A successful create is recorded (status `requires_action`) and answered with a
//! `checkoutUrl` on this provider: `GET /dana/v1/checkout/{acquirementId}` plays the shopper
//! paying there (status `succeeded`). Outcomes of a create follow the amount's last two
//! digits in minor units: `13` `INSUFFICIENT_BALANCE`, `66` `RISK_REJECT`, `77`
//! `USER_STATUS_ABNORMAL` (declines: stored, not recorded), `99` `SYSTEM_ERROR` (`U`, nothing
//! recorded or stored).
//!
//! With webhooks on (`POST /__sim/webhooks`), an order paid at the checkout (the first time)
//! and every successful refund post a JSON finish notification, signed as `dialect-dana`
//! verifies it (see [`finish_notify`]): `{"request": {"head": {"version": "2.0", "function":
//! "dana.acquiring.order.finishNotify"|"dana.acquiring.refund.finishNotify", "clientId",
//! "reqTime", "reqMsgId"}, "body": {"merchantId", "acquirementId", "merchantTransId",
//! "acquirementStatus", "orderAmount", "finishedTime"} | {…, "refundId", "refundStatus",
//! "refundAmount"}}}` with headers `x-timestamp` (ISO-8601 at +07:00) and `x-signature` =
//! base64 HMAC-SHA256(secret, `POST:<webhook URL path>:<hex SHA-256(body)>:<x-timestamp>`).

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use payproxy_plugin_sdk::currency;
use quick_xml::events::Event;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::json_api::{self, Call};
use crate::ledger::{Charge, Intent, Ledger, Refund, StoredResponse};
use crate::provider::Provider;
use crate::respond::SimResponse;
use crate::service::ServeError;

const API: &str = "/dana/v1/payment.xml";
const CHECKOUT: &str = "/dana/v1/checkout/";

/// A DANA call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Route {
    /// `POST /dana/v1/payment.xml`.
    Api,
    /// `GET /dana/v1/checkout/{acquirementId}`: the shopper pays.
    Checkout(String),
}

impl Route {
    /// The route for a method and path, if this dialect serves it.
    pub(crate) fn parse(method: &Method, path: &str) -> Option<Route> {
        if method == Method::POST && path == API {
            return Some(Route::Api);
        }
        let id = path.strip_prefix(CHECKOUT)?;
        (method == Method::GET && !id.is_empty() && !id.contains('/'))
            .then(|| Route::Checkout(id.to_owned()))
    }
}

/// `<request>`, strictly.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DanaRequest {
    head: Head,
    body: Body,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Head {
    version: String,
    function: String,
    client_id: String,
    req_time: String,
    req_msg_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Body {
    merchant_id: String,
    #[serde(default)]
    merchant_trans_id: Option<String>,
    #[serde(default)]
    acquirement_id: Option<String>,
    #[serde(default)]
    order: Option<Order>,
    #[serde(default)]
    shopper_phone: Option<String>,
    #[serde(default)]
    refund_amount: Option<Amount>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Order {
    order_title: String,
    order_amount: Amount,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Amount {
    value: String,
    currency: String,
}

/// `<response>`.
#[derive(Debug, Serialize)]
#[serde(rename = "response")]
struct DanaResponse {
    head: RespHead,
    body: RespBody,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RespHead {
    version: &'static str,
    function: String,
    req_msg_id: String,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct RespBody {
    result_info: ResultInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    acquirement_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    merchant_trans_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checkout_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    acquirement_status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_amount: Option<Amount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refund_id: Option<String>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct ResultInfo {
    result_status: &'static str,
    result_code_id: &'static str,
    result_code: &'static str,
    result_msg: String,
}

/// A result: status letter, code, code id, message, HTTP status.
struct Verdict {
    http: StatusCode,
    status: &'static str,
    code: &'static str,
    code_id: &'static str,
    message: String,
}

impl Verdict {
    fn success() -> Self {
        Verdict::new(StatusCode::OK, "S", "SUCCESS", "00000000", "success")
    }

    fn new(
        http: StatusCode,
        status: &'static str,
        code: &'static str,
        id: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Verdict {
            http,
            status,
            code,
            code_id: id,
            message: message.into(),
        }
    }

    fn illegal(message: impl Into<String>) -> Self {
        Verdict::new(
            StatusCode::BAD_REQUEST,
            "F",
            "PARAM_ILLEGAL",
            "00000004",
            message,
        )
    }

    fn failed(code: &'static str, id: &'static str, message: &str) -> Self {
        Verdict::new(StatusCode::OK, "F", code, id, message)
    }
}

/// Serve one request of this dialect.
pub(crate) async fn handle(
    provider: &Provider,
    route: Route,
    req: Request<Incoming>,
) -> Result<SimResponse, ServeError> {
    if let Route::Checkout(id) = route {
        return Ok(checkout(provider, &id));
    }
    let Some(call) = Call::read(req).await? else {
        return Ok(answer_error(
            "",
            "",
            Verdict::illegal("request body too large"),
        ));
    };
    let xml = call
        .header("content-type")
        .is_some_and(|t| t.contains("xml"));
    if !xml {
        return Ok(answer_error(
            "",
            "",
            Verdict::illegal("content-type must be application/xml"),
        ));
    }
    let request = match parse_strict(&call.body) {
        Ok(request) => request,
        Err(message) => return Ok(answer_error("", "", Verdict::illegal(message))),
    };
    let (function, msg_id) = (
        request.head.function.clone(),
        request.head.req_msg_id.clone(),
    );
    if let Err(message) = check_head(&request.head, &request.body) {
        return Ok(answer_error(&function, &msg_id, Verdict::illegal(message)));
    }
    let base_url = call.base_url();
    let mut ledger = provider.ledger();
    if function == "dana.acquiring.order.query" {
        let (verdict, body) = query(&ledger, &request.body);
        return Ok(answer(&function, &msg_id, verdict, body));
    }
    let key = format!("dana:{msg_id}");
    let fingerprint = fingerprint(&request);
    if let Some(stored) = ledger.stored(&key) {
        if stored.fingerprint != fingerprint {
            let verdict = Verdict::failed(
                "REPEAT_REQ_INCONSISTENT",
                "00000412",
                "reqMsgId was used for another request",
            );
            return Ok(answer_error(&function, &msg_id, verdict));
        }
        let mut response = xml_bytes(stored.status, stored.body.clone());
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        return Ok(response);
    }
    let (verdict, body) = match function.as_str() {
        "dana.acquiring.order.create" => create(&mut ledger, &request, &base_url),
        "dana.acquiring.order.cancel" => cancel(&mut ledger, &request.body),
        _ => refund(&mut ledger, &request.body),
    };
    let succeeded = verdict.status == "S";
    // Who the order's later finish notification is addressed to (the ledger keeps neither).
    let created = (succeeded && function == "dana.acquiring.order.create")
        .then(|| body.acquirement_id.clone())
        .flatten();
    let refunded = (succeeded && function == "dana.acquiring.order.refund")
        .then(|| finish_notify::Finish::refund(&ledger, &request, &body))
        .flatten();
    // A system error promises nothing happened: a retry must be processed afresh.
    let store = verdict.http.is_success() && verdict.code != "SYSTEM_ERROR";
    let (status, bytes) = render(&function, &msg_id, verdict, body);
    if store {
        ledger.store(
            key,
            StoredResponse {
                fingerprint,
                status,
                body: bytes.clone(),
            },
        );
    }
    drop(ledger);
    if let Some(id) = created {
        let addressee = json!({
            "clientId": request.head.client_id,
            "merchantId": request.body.merchant_id,
        });
        provider.set_note(format!("dana:{id}"), addressee.to_string());
    }
    if let Some(finish) = refunded {
        finish_notify::send(provider, &finish);
    }
    Ok(xml_bytes(status, bytes))
}

/// Parse the body as a `<request>` document, refusing anything else.
fn parse_strict(body: &[u8]) -> Result<DanaRequest, String> {
    let text = std::str::from_utf8(body).map_err(|_| "XML is not UTF-8".to_owned())?;
    let mut reader = quick_xml::Reader::from_str(text);
    let root = loop {
        match reader.read_event() {
            Ok(Event::Decl(_) | Event::Comment(_) | Event::PI(_)) => {}
            Ok(Event::Text(t)) if t.iter().all(u8::is_ascii_whitespace) => {}
            Ok(Event::Start(start)) => break start.name().as_ref().to_vec(),
            Ok(_) => return Err("XML has no root element".into()),
            Err(e) => return Err(format!("malformed XML: {e}")),
        }
    };
    if root != b"request" {
        return Err("XML root element must be <request>".into());
    }
    quick_xml::de::from_str(text).map_err(|e| format!("malformed XML: {e}"))
}

fn check_head(head: &Head, body: &Body) -> Result<(), String> {
    if head.version != "2.0" {
        return Err("version must be 2.0".into());
    }
    let known = [
        "dana.acquiring.order.create",
        "dana.acquiring.order.query",
        "dana.acquiring.order.cancel",
        "dana.acquiring.order.refund",
    ];
    if !known.contains(&head.function.as_str()) {
        return Err("unknown function".into());
    }
    if head.client_id.trim().is_empty()
        || head.req_msg_id.trim().is_empty()
        || head.req_time.trim().is_empty()
    {
        return Err("clientId, reqTime and reqMsgId are required".into());
    }
    if body.merchant_id.trim().is_empty() {
        return Err("merchantId is required".into());
    }
    Ok(())
}

/// What a resend must repeat to be replayed: function and body (not `reqTime`).
fn fingerprint(request: &DanaRequest) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(request.head.function.as_bytes());
    hasher.update([0]);
    hasher.update(serde_json::to_vec(&request.body).unwrap_or_default());
    hasher.finalize().into()
}

fn create(ledger: &mut Ledger, request: &DanaRequest, base_url: &str) -> (Verdict, RespBody) {
    let body = &request.body;
    let (Some(reference), Some(order), Some(phone)) =
        (&body.merchant_trans_id, &body.order, &body.shopper_phone)
    else {
        return (
            Verdict::illegal("merchantTransId, order and shopperPhone are required"),
            RespBody::default(),
        );
    };
    let valid_phone = phone
        .strip_prefix('+')
        .is_some_and(|d| (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()));
    if reference.is_empty() || !valid_phone {
        return (
            Verdict::illegal("merchantTransId or shopperPhone is invalid"),
            RespBody::default(),
        );
    }
    let minor = match idr(&order.order_amount) {
        Ok(minor) if minor > 0 => minor,
        Ok(_) => {
            return (
                Verdict::illegal("orderAmount must be positive"),
                RespBody::default(),
            )
        }
        Err(message) => return (Verdict::illegal(message), RespBody::default()),
    };
    let echo = RespBody {
        merchant_trans_id: Some(reference.clone()),
        ..RespBody::default()
    };
    let verdict = match minor % 100 {
        99 => Verdict::new(
            StatusCode::OK,
            "U",
            "SYSTEM_ERROR",
            "00000900",
            "simulated system error",
        ),
        13 => Verdict::failed("INSUFFICIENT_BALANCE", "00000014", "wallet balance too low"),
        66 => Verdict::failed("RISK_REJECT", "00000015", "rejected by risk checks"),
        77 => Verdict::failed(
            "USER_STATUS_ABNORMAL",
            "00000016",
            "wallet account is frozen",
        ),
        _ => Verdict::success(),
    };
    if verdict.status != "S" {
        return (verdict, echo);
    }
    let id = json_api::mint(ledger, "dana");
    ledger.insert(Intent {
        charge: Charge {
            id: id.clone(),
            provider: ledger.provider().to_owned(),
            amount: minor,
            currency: "idr".to_owned(),
            status: "requires_action".to_owned(),
            idempotency_key: Some(request.head.req_msg_id.clone()),
            merchant_reference: Some(reference.clone()),
            metadata: [("order_title".to_owned(), order.order_title.clone())].into(),
        },
        manual_capture: false,
        card_manual_capture: false,
        payment_method_types: vec!["dana".to_owned()],
        amount_refunded: 0,
    });
    let body = RespBody {
        acquirement_id: Some(id.clone()),
        checkout_url: Some(format!("{base_url}{CHECKOUT}{id}")),
        ..echo
    };
    (verdict, body)
}

/// The DANA order a follow-up names: by acquirementId, else the latest by merchantTransId.
fn find(ledger: &Ledger, body: &Body) -> Option<String> {
    let charges = ledger.charges();
    let mut dana = charges.iter().rev().filter(|c| c.id.starts_with("dana_"));
    match (&body.acquirement_id, &body.merchant_trans_id) {
        (Some(id), _) => dana.find(|c| &c.id == id),
        (None, Some(reference)) => dana.find(|c| c.merchant_reference.as_ref() == Some(reference)),
        (None, None) => None,
    }
    .map(|c| c.id.clone())
}

fn not_found() -> (Verdict, RespBody) {
    (
        Verdict::failed("ORDER_NOT_EXIST", "00000404", "no such order"),
        RespBody::default(),
    )
}

fn query(ledger: &Ledger, body: &Body) -> (Verdict, RespBody) {
    let Some(intent) = find(ledger, body).and_then(|id| ledger.intent(&id)) else {
        return not_found();
    };
    let charge = &intent.charge;
    let status = match charge.status.as_str() {
        "succeeded" => "SUCCESS",
        "canceled" => "CANCELLED",
        "processing" => "PAYING",
        _ => "INIT",
    };
    let body = RespBody {
        acquirement_id: Some(charge.id.clone()),
        merchant_trans_id: charge.merchant_reference.clone(),
        acquirement_status: Some(status),
        order_amount: currency::to_decimal(charge.amount, "IDR").map(|value| Amount {
            value,
            currency: "IDR".into(),
        }),
        ..RespBody::default()
    };
    (Verdict::success(), body)
}

fn cancel(ledger: &mut Ledger, body: &Body) -> (Verdict, RespBody) {
    let Some(intent) = find(ledger, body).and_then(|id| ledger.intent_mut(&id)) else {
        return not_found();
    };
    if intent.charge.status != "requires_action" {
        return (
            Verdict::failed(
                "ORDER_STATUS_INVALID",
                "00000409",
                "only unpaid orders can be cancelled",
            ),
            RespBody::default(),
        );
    }
    intent.charge.status = "canceled".to_owned();
    let body = RespBody {
        acquirement_id: Some(intent.charge.id.clone()),
        merchant_trans_id: intent.charge.merchant_reference.clone(),
        ..RespBody::default()
    };
    (Verdict::success(), body)
}

fn refund(ledger: &mut Ledger, body: &Body) -> (Verdict, RespBody) {
    if body.acquirement_id.is_none() {
        return (
            Verdict::illegal("acquirementId is required"),
            RespBody::default(),
        );
    }
    let Some(intent) = find(ledger, body).and_then(|id| ledger.intent_mut(&id)) else {
        return not_found();
    };
    if intent.charge.status != "succeeded" {
        return (
            Verdict::failed(
                "ORDER_STATUS_INVALID",
                "00000409",
                "only paid orders can be refunded",
            ),
            RespBody::default(),
        );
    }
    let remaining = intent.charge.amount - intent.amount_refunded;
    let amount = match body.refund_amount.as_ref().map(idr) {
        None => remaining,
        Some(Ok(a)) if a > 0 && a <= remaining => a,
        Some(Ok(_)) => {
            return (
                Verdict::failed(
                    "REFUND_AMOUNT_EXCEED",
                    "00000410",
                    "refund exceeds what remains",
                ),
                RespBody::default(),
            )
        }
        Some(Err(message)) => return (Verdict::illegal(message), RespBody::default()),
    };
    intent.amount_refunded += amount;
    let payment_intent = intent.charge.id.clone();
    let refund_id = json_api::mint_refund(ledger, "danare");
    ledger.add_refund(Refund {
        id: refund_id.clone(),
        payment_intent: payment_intent.clone(),
        amount,
        currency: "idr".to_owned(),
        status: "succeeded".to_owned(),
    });
    let body = RespBody {
        acquirement_id: Some(payment_intent),
        refund_id: Some(refund_id),
        ..RespBody::default()
    };
    (Verdict::success(), body)
}

/// An IDR amount in minor units, refusing other currencies and extra decimals.
fn idr(amount: &Amount) -> Result<i64, String> {
    if amount.currency != "IDR" {
        return Err("only IDR is accepted".into());
    }
    currency::from_decimal(&amount.value, "IDR").map_err(|e| format!("amount value: {e}"))
}

/// `GET /dana/v1/checkout/{id}`: the shopper pays an unpaid order (and, the first time,
/// DANA sends its finish notification).
fn checkout(provider: &Provider, id: &str) -> SimResponse {
    let (answer, paid) = {
        let mut ledger = provider.ledger();
        let Some(intent) = ledger
            .intent_mut(id)
            .filter(|i| i.charge.id.starts_with("dana_"))
        else {
            return crate::respond::json(
                StatusCode::NOT_FOUND,
                &json!({ "error": "no such order" }),
            );
        };
        let paid = (intent.charge.status == "requires_action").then(|| {
            intent.charge.status = "succeeded".to_owned();
            (
                intent.charge.amount,
                intent.charge.merchant_reference.clone(),
            )
        });
        let answer = json!({ "acquirementId": id, "status": intent.charge.status });
        (answer, paid)
    };
    if let Some((amount, reference)) = paid {
        let addressee: serde_json::Value = provider
            .note(&format!("dana:{id}"))
            .and_then(|n| serde_json::from_str(&n).ok())
            .unwrap_or_default();
        let text = |key: &str| addressee[key].as_str().unwrap_or_default().to_owned();
        let finish = finish_notify::Finish {
            function: finish_notify::ORDER_FINISH,
            client_id: text("clientId"),
            merchant_id: text("merchantId"),
            acquirement_id: id.to_owned(),
            merchant_trans_id: reference,
            refund_id: None,
            status: "SUCCESS",
            amount,
        };
        finish_notify::send(provider, &finish);
    }
    crate::respond::json(StatusCode::OK, &answer)
}

/// DANA's finish notifications, sent when webhooks are on (see `crate::notify`), signed as
/// `dialect-dana` verifies them with its `webhook_secret` credential: `x-timestamp` is the
/// notice's time (ISO-8601 at +07:00, also the head's `reqTime`), `x-signature` base64
/// HMAC-SHA256(secret, `POST:<path>:<lower-case hex SHA-256(body)>:<x-timestamp>`), the path
/// being the configured webhook URL's. `reqMsgId` is derived from the change, so a
/// redelivery is the same message.
pub(crate) mod finish_notify {
    use std::time::{SystemTime, UNIX_EPOCH};

    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use hmac::{Hmac, Mac};
    use payproxy_plugin_sdk::currency;
    use payproxy_plugin_sdk::helpers::time::DateTime;
    use serde_json::json;
    use sha2::{Digest, Sha256};

    use super::{DanaRequest, RespBody};
    use crate::ledger::Ledger;
    use crate::notify::Notice;
    use crate::provider::Provider;

    pub(crate) const ORDER_FINISH: &str = "dana.acquiring.order.finishNotify";
    pub(crate) const REFUND_FINISH: &str = "dana.acquiring.refund.finishNotify";

    /// One finish: of an order (`SUCCESS`) or of a refund.
    #[derive(Debug, Clone, PartialEq)]
    pub(crate) struct Finish {
        pub(crate) function: &'static str,
        pub(crate) client_id: String,
        pub(crate) merchant_id: String,
        pub(crate) acquirement_id: String,
        pub(crate) merchant_trans_id: Option<String>,
        pub(crate) refund_id: Option<String>,
        /// `acquirementStatus` or `refundStatus`.
        pub(crate) status: &'static str,
        /// IDR minor units: the order's, or the refund's.
        pub(crate) amount: i64,
    }

    impl Finish {
        /// The finish of the refund just answered with `body`.
        pub(super) fn refund(
            ledger: &Ledger,
            request: &DanaRequest,
            body: &RespBody,
        ) -> Option<Finish> {
            let refund_id = body.refund_id.clone()?;
            let refund = ledger.refunds().into_iter().find(|r| r.id == refund_id)?;
            let acquirement_id = body.acquirement_id.clone()?;
            let reference = ledger
                .intent(&acquirement_id)
                .and_then(|i| i.charge.merchant_reference.clone());
            Some(Finish {
                function: REFUND_FINISH,
                client_id: request.head.client_id.clone(),
                merchant_id: request.body.merchant_id.clone(),
                acquirement_id,
                merchant_trans_id: reference,
                refund_id: Some(refund_id),
                status: "SUCCESS",
                amount: refund.amount,
            })
        }
    }

    /// Send `finish` if webhooks are on. Call with no lock held.
    pub(crate) fn send(provider: &Provider, finish: &Finish) {
        let Some(secret) = provider.webhook_secret() else {
            return;
        };
        let path = provider
            .webhook_settings()
            .url
            .and_then(|u| u.parse::<hyper::Uri>().ok())
            .map(|u| u.path().to_owned())
            .unwrap_or_else(|| "/".to_owned());
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        provider.notify(notice(&secret, &path, finish, now_ms));
    }

    /// The signed notification of `finish`, sent to `path` at `now_ms`.
    pub(crate) fn notice(secret: &str, path: &str, finish: &Finish, now_ms: u64) -> Notice {
        let time = jakarta(now_ms);
        let amount = json!({
            "value": currency::to_decimal(finish.amount, "IDR"),
            "currency": "IDR",
        });
        let (msg_id, body) = match &finish.refund_id {
            Some(refund) => (
                format!("notify-{refund}-{}", finish.status),
                json!({
                    "merchantId": finish.merchant_id,
                    "acquirementId": finish.acquirement_id,
                    "merchantTransId": finish.merchant_trans_id,
                    "refundId": refund,
                    "refundStatus": finish.status,
                    "refundAmount": amount,
                }),
            ),
            None => (
                format!("notify-{}-{}", finish.acquirement_id, finish.status),
                json!({
                    "merchantId": finish.merchant_id,
                    "acquirementId": finish.acquirement_id,
                    "merchantTransId": finish.merchant_trans_id,
                    "acquirementStatus": finish.status,
                    "orderAmount": amount,
                    "finishedTime": time,
                }),
            ),
        };
        let document = json!({"request": {
            "head": {
                "version": "2.0",
                "function": finish.function,
                "clientId": finish.client_id,
                "reqTime": time,
                "reqMsgId": msg_id,
            },
            "body": body,
        }});
        let body = serde_json::to_vec(&document).unwrap_or_default();
        let signature = signature(secret, path, &body, &time);
        Notice {
            dialect: "dana",
            query: None,
            headers: vec![
                ("content-type".to_owned(), "application/json".to_owned()),
                ("x-timestamp".to_owned(), time),
                ("x-signature".to_owned(), signature),
            ],
            body,
        }
    }

    /// Base64 HMAC-SHA256(secret, `POST:<path>:<hex SHA-256(body)>:<timestamp>`).
    pub(crate) fn signature(secret: &str, path: &str, body: &[u8], timestamp: &str) -> String {
        let signed = format!(
            "POST:{path}:{}:{timestamp}",
            hex::encode(Sha256::digest(body))
        );
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
        mac.update(signed.as_bytes());
        STANDARD.encode(mac.finalize().into_bytes())
    }

    /// `2023-11-15T05:13:20+07:00`.
    pub(crate) fn jakarta(now_ms: u64) -> String {
        let t = DateTime::from_unix_ms(now_ms, 7 * 3600);
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+07:00",
            t.year, t.month, t.day, t.hour, t.minute, t.second
        )
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use serde_json::Value;

        #[test]
        fn order_finish() {
            let finish = Finish {
                function: ORDER_FINISH,
                client_id: "client-1".into(),
                merchant_id: "merchant-1".into(),
                acquirement_id: "dana_danaid_1".into(),
                merchant_trans_id: Some("order-1".into()),
                refund_id: None,
                status: "SUCCESS",
                amount: 15_000_000,
            };
            let notice = notice(
                "dana-secret",
                "/webhooks/dana-id",
                &finish,
                1_700_000_000_000,
            );
            assert_eq!(notice.dialect, "dana");
            let body: Value = serde_json::from_slice(&notice.body).unwrap();
            assert_eq!(
                body,
                json!({"request": {
                    "head": {"version": "2.0", "function": ORDER_FINISH, "clientId": "client-1",
                             "reqTime": "2023-11-15T05:13:20+07:00",
                             "reqMsgId": "notify-dana_danaid_1-SUCCESS"},
                    "body": {"merchantId": "merchant-1", "acquirementId": "dana_danaid_1",
                             "merchantTransId": "order-1", "acquirementStatus": "SUCCESS",
                             "orderAmount": {"value": "150000.00", "currency": "IDR"},
                             "finishedTime": "2023-11-15T05:13:20+07:00"}
                }})
            );
            assert_eq!(
                notice.header("x-timestamp"),
                Some("2023-11-15T05:13:20+07:00")
            );
            // The signature, computed independently of `signature`.
            let signed = format!(
                "POST:/webhooks/dana-id:{}:2023-11-15T05:13:20+07:00",
                hex::encode(Sha256::digest(&notice.body))
            );
            let mut mac = Hmac::<Sha256>::new_from_slice(b"dana-secret").unwrap();
            mac.update(signed.as_bytes());
            let want = STANDARD.encode(mac.finalize().into_bytes());
            assert_eq!(notice.header("x-signature"), Some(want.as_str()));
        }

        #[test]
        fn refund_finish() {
            let finish = Finish {
                function: REFUND_FINISH,
                client_id: "c".into(),
                merchant_id: "m".into(),
                acquirement_id: "dana_danaid_1".into(),
                merchant_trans_id: Some("order-1".into()),
                refund_id: Some("danare_danaid_2".into()),
                status: "SUCCESS",
                amount: 5_000_000,
            };
            let notice = notice("s", "/w", &finish, 1_700_000_000_000);
            let body: Value = serde_json::from_slice(&notice.body).unwrap();
            let b = &body["request"]["body"];
            assert_eq!(body["request"]["head"]["function"], REFUND_FINISH);
            assert_eq!(b["refundId"], "danare_danaid_2");
            assert_eq!(b["refundStatus"], "SUCCESS");
            assert_eq!(b["acquirementId"], "dana_danaid_1");
            assert_eq!(
                b["refundAmount"],
                json!({"value": "50000.00", "currency": "IDR"})
            );
            assert_eq!(
                notice.header("x-signature"),
                Some(signature("s", "/w", &notice.body, "2023-11-15T05:13:20+07:00").as_str())
            );
        }
    }
}

fn answer(function: &str, msg_id: &str, verdict: Verdict, body: RespBody) -> SimResponse {
    let (status, bytes) = render(function, msg_id, verdict, body);
    xml_bytes(status, bytes)
}

fn answer_error(function: &str, msg_id: &str, verdict: Verdict) -> SimResponse {
    answer(function, msg_id, verdict, RespBody::default())
}

fn render(
    function: &str,
    msg_id: &str,
    verdict: Verdict,
    mut body: RespBody,
) -> (StatusCode, Bytes) {
    body.result_info = ResultInfo {
        result_status: verdict.status,
        result_code_id: verdict.code_id,
        result_code: verdict.code,
        result_msg: verdict.message,
    };
    let response = DanaResponse {
        head: RespHead {
            version: "2.0",
            function: function.to_owned(),
            req_msg_id: msg_id.to_owned(),
        },
        body,
    };
    let mut text = String::from(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    // Serialising our own structs of strings cannot fail; an empty body would show in tests.
    let _ = response.serialize(quick_xml::se::Serializer::new(&mut text));
    (verdict.http, Bytes::from(text))
}

fn xml_bytes(status: StatusCode, body: Bytes) -> SimResponse {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(Route::parse(&Method::POST, API), Some(Route::Api));
        assert_eq!(Route::parse(&Method::GET, API), None);
        assert_eq!(
            Route::parse(&Method::GET, "/dana/v1/checkout/dana_x_1"),
            Some(Route::Checkout("dana_x_1".into()))
        );
        assert_eq!(Route::parse(&Method::GET, "/dana/v1/checkout/"), None);
        assert_eq!(Route::parse(&Method::GET, "/dana/v1/checkout/a/b"), None);
    }

    #[test]
    fn strict_parsing() {
        let ok = r#"<?xml version="1.0"?><request><head><version>2.0</version><function>f</function><clientId>c</clientId><reqTime>t</reqTime><reqMsgId>m</reqMsgId></head><body><merchantId>x</merchantId></body></request>"#;
        assert!(parse_strict(ok.as_bytes()).is_ok());
        for bad in [
            ok.replace("<request>", "<req>")
                .replace("</request>", "</req>"),
            ok.replace("</body>", "<extra>1</extra></body>"),
            ok.replace("</request>", ""),
            ok.replace("</head>", "</heads>"),
            ok.replace("<clientId>c</clientId>", ""),
            "\u{ff}".to_owned(),
            String::new(),
        ] {
            assert!(parse_strict(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn responses_escape_text() {
        let body = RespBody {
            merchant_trans_id: Some("a<&>b".into()),
            ..RespBody::default()
        };
        let (status, bytes) = render("f", "m", Verdict::success(), body);
        assert_eq!(status, StatusCode::OK);
        let text = String::from_utf8(bytes.to_vec()).expect("utf-8");
        assert!(
            text.contains("<merchantTransId>a&lt;&amp;&gt;b</merchantTransId>"),
            "{text}"
        );
        assert!(text.contains("<resultStatus>S</resultStatus>"), "{text}");
    }
}

#[cfg(test)]
mod webhook_tests {

    use super::finish_notify::{signature, ORDER_FINISH, REFUND_FINISH};
    use crate::test_client::call;
    use crate::Simulator;

    async fn api(base: &str, function: &str, msg: &str, body: &str) -> String {
        let xml = format!(
            "<request><head><version>2.0</version><function>{function}</function>\
             <clientId>client-1</clientId><reqTime>2023-11-15T05:13:20+07:00</reqTime>\
             <reqMsgId>{msg}</reqMsgId></head><body><merchantId>merchant-1</merchantId>{body}\
             </body></request>"
        );
        let headers = [("content-type", "application/xml".to_owned())];
        let url = format!("{base}/dana/v1/payment.xml");
        let (status, answer) = call("POST", url, &headers, Some(xml)).await;
        assert_eq!(status, 200, "{answer}");
        answer
    }

    #[tokio::test]
    async fn checkout_and_refund_send_signed_finish_notifications() {
        let sim = Simulator::start(&["dana-id"]).await.unwrap();
        let base = sim.base_url("dana-id");
        sim.set_webhooks(
            "dana-id",
            Some("http://127.0.0.1:9/webhooks/dana-id?v=1"),
            "s",
        );
        let order = "<merchantTransId>order-1</merchantTransId><order><orderTitle>t</orderTitle>\
                     <orderAmount><value>150000.00</value><currency>IDR</currency></orderAmount>\
                     </order><shopperPhone>+6281234567890</shopperPhone>";
        let created = api(&base, "dana.acquiring.order.create", "m1", order).await;
        let id = created
            .split("<acquirementId>")
            .nth(1)
            .and_then(|rest| rest.split('<').next())
            .unwrap()
            .to_owned();
        assert!(
            sim.webhooks_sent("dana-id").is_empty(),
            "nothing before payment"
        );
        let checkout = format!("{base}/dana/v1/checkout/{id}");
        assert_eq!(call("GET", checkout.clone(), &[], None).await.0, 200);
        assert_eq!(call("GET", checkout, &[], None).await.0, 200);
        let refund = format!(
            "<acquirementId>{id}</acquirementId><refundAmount><value>50000.00</value>\
             <currency>IDR</currency></refundAmount>"
        );
        api(&base, "dana.acquiring.order.refund", "m2", &refund).await;
        // The same refund again is a replay: no second notification.
        api(&base, "dana.acquiring.order.refund", "m2", &refund).await;
        let sent = sim.webhooks_sent("dana-id");
        assert_eq!(sent.len(), 2);
        for n in &sent {
            assert_eq!(n.dialect, "dana");
            let timestamp = n.header("x-timestamp").unwrap();
            assert_eq!(
                n.header("x-signature"),
                Some(signature("s", "/webhooks/dana-id", &n.body, timestamp).as_str())
            );
        }
        let paid = sent[0].json().unwrap();
        assert_eq!(paid["request"]["head"]["function"], ORDER_FINISH);
        assert_eq!(paid["request"]["head"]["clientId"], "client-1");
        let body = &paid["request"]["body"];
        assert_eq!(body["acquirementId"], id.as_str());
        assert_eq!(body["merchantId"], "merchant-1");
        assert_eq!(body["merchantTransId"], "order-1");
        assert_eq!(body["acquirementStatus"], "SUCCESS");
        assert_eq!(body["orderAmount"]["value"], "150000.00");
        let refunded = sent[1].json().unwrap();
        assert_eq!(refunded["request"]["head"]["function"], REFUND_FINISH);
        let body = &refunded["request"]["body"];
        assert_eq!(body["acquirementId"], id.as_str());
        assert_eq!(body["refundStatus"], "SUCCESS");
        assert_eq!(body["refundAmount"]["value"], "50000.00");
        sim.shutdown().await;
    }
}
