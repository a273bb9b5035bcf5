//! The Adyen-like Checkout API under `/adyen/v71/`: payments, captures, refunds, cancels.
//!
//! - `POST /adyen/v71/payments` → `{"pspReference", "resultCode", "merchantReference",
//!   "amount"?, "refusalReason"?, "refusalReasonCode"?, "action"?}` (200). Outcomes are decided
//!   by the test inputs: `paymentMethod.type` other than `scheme` → `RedirectShopper` to
//!   `/adyen/v71/redirect/{psp}`; otherwise the last two digits of `amount.value`:
//!   `02` Refused 2, `05` Refused 12 "Not enough balance", `06` Refused 6 "Expired Card",
//!   `20` Refused 20 "FRAUD", `24` Refused 24 "CVC Declined", `07` Pending, `99` Error,
//!   anything else Authorised (`additionalData.manualCapture: "true"` leaves it to capture).
//!   The ledger's merchant reference is `merchantOrderReference`, else `reference`; answers
//!   and notifications carry `reference` as `merchantReference`, as Adyen does.
//! - `POST /adyen/v71/payments/{psp}/captures|refunds|cancels` `{"merchantAccount", "amount"?,
//!   "reference"}` → 202 `{"pspReference", "paymentPspReference", "status": "received"}`; the
//!   ledger changes at once. An automatically captured payment can be cancelled until it is
//!   refunded (Adyen captures those with a delay); a manually captured one only before its
//!   capture.
//! - `GET /adyen/v71/redirect/{psp}?result=authorised|refused` — the shopper finishing the
//!   redirect (simulator control, no key needed).
//!
//! Every API call needs a non-empty `X-API-Key` (401 otherwise). Validation errors are 422 in
//! Adyen's shape `{"status", "errorCode", "message", "errorType"}`. The simulated Adyen
//! guarantees that every 4xx and 5xx it answers (including injected 500/503 faults) did
//! nothing. `Idempotency-Key` replays the first successful answer; the same key with another
//! request is a 422 `704`. Refused and errored payments get a `pspReference` but no ledger
//! entry: the ledger holds only payments that may move money.
//!
//! Notifications (when webhooks are on, `POST /__sim/webhooks` with the hex HMAC key as
//! secret; see `notifications`): `AUTHORISATION` success `true` for an authorised payment
//! (and a redirect completed), `false` with the refusal reason for a refused one (and a
//! redirect failed); `CAPTURE`, `REFUND`, `CANCELLATION` for each accepted modification, its
//! own `pspReference` and the payment's as `originalReference`. Pending and errored payments
//! send nothing. Fault `charge_then_unavailable`: a payment that was recorded (and notified)
//! is answered 503 `{"status":503,"errorCode":"000","errorType":"internal"}` (its idempotent
//! answer is stored as the true one).

mod modifications;
mod notifications;
mod payments;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

use crate::json_api::{self, Call, Replay};
use crate::ledger::Ledger;
use crate::provider::Provider;
use crate::respond::{json, SimResponse};
use crate::service::ServeError;

/// Prefix of the API.
const PREFIX: &str = "/adyen/v71/";

/// A route of this dialect.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Route {
    /// An API call (key checked, idempotent).
    Api(ApiCall),
    /// The shopper back from the redirect.
    Redirect(String),
}

/// The API calls.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ApiCall {
    Payments,
    Modify(String, Modification),
}

/// The follow-up operations on a payment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Modification {
    Capture,
    Refund,
    Cancel,
}

impl Route {
    /// The route for a method and path, if this dialect serves it.
    pub(crate) fn parse(method: &Method, path: &str) -> Option<Route> {
        let rest = path.strip_prefix(PREFIX)?;
        let segments: Vec<&str> = rest.split('/').collect();
        match (method, segments.as_slice()) {
            (&Method::POST, ["payments"]) => Some(Route::Api(ApiCall::Payments)),
            (&Method::POST, ["payments", psp, kind]) if !psp.is_empty() => {
                let kind = match *kind {
                    "captures" => Modification::Capture,
                    "refunds" => Modification::Refund,
                    "cancels" => Modification::Cancel,
                    _ => return None,
                };
                Some(Route::Api(ApiCall::Modify((*psp).to_owned(), kind)))
            }
            (&Method::GET, ["redirect", psp]) if !psp.is_empty() => {
                Some(Route::Redirect((*psp).to_owned()))
            }
            _ => None,
        }
    }
}

/// An error answer in Adyen's shape.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AdyenError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) kind: &'static str,
}

impl AdyenError {
    /// A 422 validation error.
    pub(crate) fn validation(code: &'static str, message: impl Into<String>) -> Self {
        AdyenError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code,
            message: message.into(),
            kind: "validation",
        }
    }

    fn unauthorized() -> Self {
        AdyenError {
            status: StatusCode::UNAUTHORIZED,
            code: "000",
            message: "HTTP Status Response - Unauthorized".into(),
            kind: "security",
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "status": self.status.as_u16(),
            "errorCode": self.code,
            "message": self.message,
            "errorType": self.kind,
        })
    }

    fn response(&self) -> SimResponse {
        json(self.status, &self.to_json())
    }
}

/// Serve one request of this dialect.
pub(crate) async fn handle(
    provider: &Provider,
    route: Route,
    req: Request<Incoming>,
) -> Result<SimResponse, ServeError> {
    let Some(call) = Call::read(req).await? else {
        let mut error = AdyenError::validation("702", "Request body too large");
        error.status = StatusCode::PAYLOAD_TOO_LARGE;
        return Ok(error.response());
    };
    let api = match route {
        Route::Redirect(psp) => return Ok(payments::finish_redirect(provider, &psp, &call)),
        Route::Api(api) => api,
    };
    if call.header("x-api-key").is_none() {
        return Ok(AdyenError::unauthorized().response());
    }
    let Some(body) = call.json().filter(Value::is_object) else {
        let mut error = AdyenError::validation(
            "702",
            "Structure of the request is invalid: not a JSON object",
        );
        error.status = StatusCode::BAD_REQUEST;
        return Ok(error.response());
    };
    let key = call.header("idempotency-key");
    let fingerprint = call.fingerprint();

    // One lock for check, execute and store: concurrent retries of one key cannot both run.
    let mut ledger = provider.ledger();
    if let Some(key) = key.as_deref() {
        match json_api::replay(&ledger, "adyen", key, &fingerprint) {
            Replay::Fresh => {}
            Replay::Replayed(response) => return Ok(response),
            Replay::Conflict => {
                let message = "Request already processed or in progress with another payload";
                return Ok(AdyenError::validation("704", message).response());
            }
        }
    }
    let base = call.base_url();
    // The faults' lock is taken briefly, under the ledger's (allowed that way round).
    let refused = matches!(api, ApiCall::Modify(_, Modification::Refund))
        && provider.faults().faults().refunds_refused;
    let result = match &api {
        ApiCall::Payments => {
            payments::create(&mut ledger, &body, key.as_deref(), &base).map(|v| (StatusCode::OK, v))
        }
        ApiCall::Modify(psp, kind) => modifications::apply(&mut ledger, psp, *kind, &body, refused)
            .map(|v| (StatusCode::ACCEPTED, v)),
    };
    let (status, value) = match result {
        Ok(answer) => answer,
        Err(error) => (error.status, error.to_json()),
    };
    let event = status
        .is_success()
        .then(|| event_of(&ledger, &api, &body, &value, refused))
        .flatten();
    // A payment the ledger holds was processed: the late-success fault may hide it.
    let recorded = matches!(api, ApiCall::Payments)
        && value
            .get("pspReference")
            .and_then(Value::as_str)
            .is_some_and(|psp| ledger.intent(psp).is_some());
    let keyed = key.as_deref().map(|k| ("adyen", k, fingerprint));
    let response = json_api::answer(&mut ledger, keyed, status, &value);
    drop(ledger);
    if let (ApiCall::Payments, Some(psp)) =
        (&api, value.get("pspReference").and_then(Value::as_str))
    {
        provider.set_note(format!("adyen:{psp}"), merchant_account_of(&body));
        if let Some(reference) = body.get("reference").and_then(Value::as_str) {
            provider.set_note(payments::reference_note(psp), reference.to_owned());
        }
    }
    if let Some(event) = &event {
        notifications::send(provider, event);
    }
    if recorded && provider.faults().faults().charge_then_unavailable {
        return Ok(unavailable().response());
    }
    Ok(response)
}

/// The 503 of the late-success fault: Adyen down, "nothing done" (yet it was).
fn unavailable() -> AdyenError {
    AdyenError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "000",
        message: "Service unavailable".into(),
        kind: "internal",
    }
}

fn merchant_account_of(body: &Value) -> String {
    body.get("merchantAccount")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The notification a successful API call causes, if any (`refused`: a refund's says it was
/// not executed).
fn event_of(
    ledger: &Ledger,
    api: &ApiCall,
    body: &Value,
    answer: &Value,
    refused: bool,
) -> Option<notifications::Event> {
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    let (value, currency) = payments::amount(body).unwrap_or_default();
    match api {
        ApiCall::Payments => {
            let success = match text(answer, "resultCode")?.as_str() {
                "Authorised" => true,
                "Refused" => false,
                _ => return None,
            };
            Some(notifications::Event {
                code: "AUTHORISATION",
                success,
                psp: text(answer, "pspReference")?,
                original: None,
                merchant_reference: text(body, "reference").unwrap_or_default(),
                merchant_account: merchant_account_of(body),
                value,
                currency,
                reason: text(answer, "refusalReason").unwrap_or_default(),
            })
        }
        ApiCall::Modify(psp, kind) => {
            let charge = &ledger.intent(psp)?.charge;
            let code = match kind {
                Modification::Capture => "CAPTURE",
                Modification::Refund => "REFUND",
                Modification::Cancel => "CANCELLATION",
            };
            let (value, currency) = match kind {
                Modification::Cancel => (charge.amount, charge.currency.to_ascii_uppercase()),
                _ => (value, currency),
            };
            let merchant_reference = text(body, "reference")
                .or_else(|| charge.merchant_reference.clone())
                .unwrap_or_default();
            Some(notifications::Event {
                code,
                success: !refused,
                psp: text(answer, "pspReference")?,
                original: Some(psp.clone()),
                merchant_reference,
                merchant_account: merchant_account_of(body),
                value,
                currency,
                reason: if refused {
                    "Insufficient balance on payment".into()
                } else {
                    String::new()
                },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let post = Method::POST;
        assert_eq!(
            Route::parse(&post, "/adyen/v71/payments"),
            Some(Route::Api(ApiCall::Payments))
        );
        assert_eq!(
            Route::parse(&post, "/adyen/v71/payments/psp_x_1/refunds"),
            Some(Route::Api(ApiCall::Modify(
                "psp_x_1".into(),
                Modification::Refund
            )))
        );
        assert_eq!(
            Route::parse(&Method::GET, "/adyen/v71/redirect/psp_x_1"),
            Some(Route::Redirect("psp_x_1".into()))
        );
        assert_eq!(Route::parse(&post, "/adyen/v71/payments//captures"), None);
        assert_eq!(Route::parse(&post, "/adyen/v71/payments/p/zap"), None);
        assert_eq!(Route::parse(&Method::GET, "/adyen/v71/payments"), None);
        assert_eq!(Route::parse(&post, "/v1/payment_intents"), None);
    }
}

#[cfg(test)]
mod webhook_tests {
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use serde_json::{json, Value};

    use super::notifications::signature;
    use crate::{Faults, Simulator};

    const KEY_HEX: &str = "00112233445566778899aabbccddeeff";

    async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let request = hyper::Request::post(format!("{base}{path}"))
            .header("x-api-key", "k")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let response = client.request(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    fn payment(value: i64) -> Value {
        json!({
            "merchantAccount": "PayproxyECOM",
            "amount": {"value": value, "currency": "EUR"},
            "reference": "order-1",
            "paymentMethod": {"type": "scheme", "storedPaymentMethodId": "tok"},
            "additionalData": {"manualCapture": "true"},
        })
    }

    /// The notification items `name` sent, checking each one's signature.
    fn items(sim: &Simulator, name: &str) -> Vec<Value> {
        sim.webhooks_sent(name)
            .iter()
            .map(|sent| {
                assert_eq!(sent.dialect, "adyen");
                let body = sent.json().expect("JSON");
                let item = body["notificationItems"][0]["NotificationRequestItem"].clone();
                let s = |k: &str| item[k].as_str().unwrap_or_default().to_owned();
                let signed = format!(
                    "{}:{}:{}:{}:{}:{}:{}:{}",
                    s("pspReference"),
                    s("originalReference"),
                    s("merchantAccountCode"),
                    s("merchantReference"),
                    item["amount"]["value"],
                    item["amount"]["currency"].as_str().unwrap(),
                    s("eventCode"),
                    s("success"),
                );
                assert_eq!(
                    item["additionalData"]["hmacSignature"],
                    signature(KEY_HEX, &signed).as_str()
                );
                item
            })
            .collect()
    }

    #[tokio::test]
    async fn payments_and_modifications_notify() {
        let sim = Simulator::start(&["a"]).await.unwrap();
        let base = sim.base_url("a");
        // Off: nothing is sent.
        post(&base, "/adyen/v71/payments", payment(1000)).await;
        assert!(sim.webhooks_sent("a").is_empty());

        // Nobody listens on port 9: the notices are logged all the same.
        sim.set_webhooks("a", Some("http://127.0.0.1:9/webhooks/a"), KEY_HEX);
        let (status, answer) = post(&base, "/adyen/v71/payments", payment(1000)).await;
        assert_eq!(status, 200);
        let psp = answer["pspReference"].as_str().unwrap().to_owned();
        let (status, _) = post(&base, "/adyen/v71/payments", payment(1005)).await;
        assert_eq!(status, 200);
        let modify = |kind: &str| format!("/adyen/v71/payments/{psp}/{kind}");
        let amount = json!({"merchantAccount": "PayproxyECOM",
                            "amount": {"value": 1000, "currency": "EUR"}, "reference": "m-1"});
        assert_eq!(
            post(&base, &modify("captures"), amount.clone()).await.0,
            202
        );
        let mut part = amount.clone();
        part["amount"]["value"] = 400.into();
        let (_, refund) = post(&base, &modify("refunds"), part).await;
        let items = items(&sim, "a");
        let summary: Vec<(String, String, String, i64)> = items
            .iter()
            .map(|i| {
                (
                    i["eventCode"].as_str().unwrap().into(),
                    i["success"].as_str().unwrap().into(),
                    i["originalReference"].as_str().unwrap_or("").into(),
                    i["amount"]["value"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("AUTHORISATION".into(), "true".into(), "".into(), 1000),
                ("AUTHORISATION".into(), "false".into(), "".into(), 1005),
                ("CAPTURE".into(), "true".into(), psp.clone(), 1000),
                ("REFUND".into(), "true".into(), psp.clone(), 400),
            ]
        );
        assert_eq!(items[0]["pspReference"], psp.as_str());
        assert_eq!(items[0]["merchantReference"], "order-1");
        assert_eq!(items[1]["reason"], "Not enough balance");
        assert_eq!(items[3]["pspReference"], refund["pspReference"]);

        sim.reset("a");
        assert!(sim.webhooks_sent("a").is_empty());
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn a_refused_refund_is_received_then_notified_unsuccessful() {
        let sim = Simulator::start(&["a"]).await.unwrap();
        let base = sim.base_url("a");
        sim.set_webhooks("a", Some("http://127.0.0.1:9/webhooks/a"), KEY_HEX);
        let (_, answer) = post(&base, "/adyen/v71/payments", payment(1000)).await;
        let psp = answer["pspReference"].as_str().unwrap().to_owned();
        let capture = json!({"merchantAccount": "PayproxyECOM",
                             "amount": {"value": 1000, "currency": "EUR"}, "reference": "m-0"});
        let captures = format!("/adyen/v71/payments/{psp}/captures");
        assert_eq!(post(&base, &captures, capture).await.0, 202);
        sim.set_faults(
            "a",
            Faults {
                refunds_refused: true,
                ..Faults::default()
            },
        );
        let refund = json!({"merchantAccount": "PayproxyECOM",
                            "amount": {"value": 400, "currency": "EUR"}, "reference": "m-1"});
        let path = format!("/adyen/v71/payments/{psp}/refunds");
        let (status, answer) = post(&base, &path, refund.clone()).await;
        assert_eq!((status, answer["status"].as_str()), (202, Some("received")));
        assert!(sim.refunds("a").is_empty(), "nothing refunded");
        let items = items(&sim, "a");
        let last = items.last().unwrap();
        assert_eq!(
            (last["eventCode"].as_str(), last["success"].as_str()),
            (Some("REFUND"), Some("false"))
        );
        assert_eq!(last["amount"]["value"], 400);
        assert_eq!(last["reason"], "Insufficient balance on payment");
        // Without the fault the same refund goes through: nothing was counted against it.
        sim.set_faults("a", Faults::default());
        let mut whole = refund;
        whole["amount"]["value"] = 1000.into();
        assert_eq!(post(&base, &path, whole).await.0, 202);
        assert_eq!(sim.refunds("a").len(), 1);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn redirect_completion_and_cancel_notify() {
        let sim = Simulator::start(&["a"]).await.unwrap();
        let base = sim.base_url("a");
        sim.set_webhooks("a", Some("http://127.0.0.1:9/webhooks/a"), KEY_HEX);
        let mut ideal = payment(1000);
        ideal["paymentMethod"] = json!({"type": "ideal"});
        let (_, answer) = post(&base, "/adyen/v71/payments", ideal).await;
        let psp = answer["pspReference"].as_str().unwrap().to_owned();
        assert!(
            sim.webhooks_sent("a").is_empty(),
            "nothing before the shopper is back"
        );
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let uri = format!("{base}/adyen/v71/redirect/{psp}").parse().unwrap();
        assert_eq!(client.get(uri).await.unwrap().status(), 200);
        let (_, card) = post(&base, "/adyen/v71/payments", payment(2000)).await;
        let card = card["pspReference"].as_str().unwrap();
        // Not yet captured: auto-captured payments can be cancelled until refunded.
        let mut auto = payment(3000);
        auto["additionalData"] = json!({});
        let (_, auto) = post(&base, "/adyen/v71/payments", auto).await;
        let auto = auto["pspReference"].as_str().unwrap();
        let cancel = json!({"merchantAccount": "PayproxyECOM", "reference": "c-0"});
        let path = format!("/adyen/v71/payments/{auto}/cancels");
        assert_eq!(post(&base, &path, cancel).await.0, 202);
        assert_eq!(sim.ledger("a")[2].status, "canceled");
        let cancel = json!({"merchantAccount": "PayproxyECOM", "reference": "c-1"});
        let path = format!("/adyen/v71/payments/{card}/cancels");
        assert_eq!(post(&base, &path, cancel).await.0, 202);
        let items = items(&sim, "a");
        assert_eq!(items.len(), 5);
        assert_eq!(items[0]["eventCode"], "AUTHORISATION");
        assert_eq!(items[0]["pspReference"], psp.as_str());
        assert_eq!(items[0]["merchantAccountCode"], "PayproxyECOM");
        assert_eq!(items[0]["success"], "true");
        assert_eq!(items[3]["eventCode"], "CANCELLATION");
        assert_eq!(items[3]["originalReference"], auto);
        assert_eq!(items[4]["eventCode"], "CANCELLATION");
        assert_eq!(items[4]["originalReference"], card);
        assert_eq!(items[4]["amount"]["value"], 2000);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn charge_then_unavailable_charges_notifies_and_answers_503() {
        let sim = Simulator::start(&["a"]).await.unwrap();
        let base = sim.base_url("a");
        sim.set_webhooks("a", Some("http://127.0.0.1:9/webhooks/a"), KEY_HEX);
        sim.set_faults("a", Faults::charge_then_unavailable(300));
        let (status, answer) = post(&base, "/adyen/v71/payments", payment(1000)).await;
        assert_eq!(status, 503);
        assert_eq!(answer["status"], 503);
        assert_eq!(answer["errorType"], "internal");
        let ledger = sim.ledger("a");
        assert_eq!(ledger.len(), 1, "the charge is recorded");
        assert_eq!(ledger[0].amount, 1000);
        assert_eq!(ledger[0].merchant_reference.as_deref(), Some("order-1"));
        let sent = sim.webhooks_sent("a");
        assert_eq!(sent.len(), 1);
        // Held back by notify_delay_ms.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(sim.webhooks_sent("a")[0].attempts.is_empty());
        let item = &items(&sim, "a")[0];
        assert_eq!(item["pspReference"], ledger[0].id.as_str());
        assert_eq!(item["success"], "true");
        // A refused payment is answered as usual.
        let (status, answer) = post(&base, "/adyen/v71/payments", payment(1002)).await;
        assert_eq!(
            (status, answer["resultCode"].as_str()),
            (200, Some("Refused"))
        );
        sim.shutdown().await;
    }
}
