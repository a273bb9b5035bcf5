//! The Stripe dialect: payment intents and refunds over form bodies, with idempotency keys.
//!
//! Idempotency follows Stripe: a `POST` with an `Idempotency-Key` that succeeded is stored;
//! a retry with the same key and the same method, path and body gets the stored answer back
//! (header `idempotent-replayed: true`, no new ledger entry); the same key with a different
//! request is refused with a 400 `idempotency_error`. Failed requests are not stored, so
//! they can be retried with the same key.
//!
//! A payment confirmed with `payment_method=pm_card_chargeDeclined` is recorded as
//! `requires_payment_method` and answered 402 `card_error` `card_declined` (with the intent in
//! `error.payment_intent`). Events (when webhooks are on; see `events`):
//! `payment_intent.succeeded`, `payment_intent.payment_failed`, `charge.refunded`. Fault
//! `charge_then_unavailable`: a new intent is recorded (and notified), then answered 503
//! `api_error` (its idempotent answer is stored as the true one).

mod events;
mod intents;
mod methods;
mod refunds;

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{HeaderMap, Method, Request, StatusCode};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::body::{read_capped, ReadError};
use crate::form::Form;
use crate::ledger::StoredResponse;
use crate::provider::Provider;
use crate::respond::{json_bytes, SimResponse, StripeError};
use crate::service::ServeError;

/// Stripe API bodies are small forms; a cap keeps a runaway client from filling memory.
const MAX_BODY: usize = 1024 * 1024;

/// A Stripe API call the simulator implements.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Route {
    CreateIntent,
    RetrieveIntent(String),
    IntentAction(String, Action),
    CreateRefund,
    RetrievePaymentMethod(String),
}

/// State changes of a payment intent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Action {
    Capture,
    Cancel,
    Confirm,
}

impl Route {
    /// The route for `method` and `path`, or `None` to leave the request to the echo.
    pub(crate) fn parse(method: &Method, path: &str) -> Option<Route> {
        let rest = path.strip_prefix("/v1/")?;
        let segments: Vec<&str> = rest.split('/').collect();
        match (method, segments.as_slice()) {
            (&Method::POST, ["payment_intents"]) => Some(Route::CreateIntent),
            (&Method::GET, ["payment_intents", id]) if !id.is_empty() => {
                Some(Route::RetrieveIntent((*id).to_owned()))
            }
            (&Method::POST, ["payment_intents", id, action]) if !id.is_empty() => {
                let action = match *action {
                    "capture" => Action::Capture,
                    "cancel" => Action::Cancel,
                    "confirm" => Action::Confirm,
                    _ => return None,
                };
                Some(Route::IntentAction((*id).to_owned(), action))
            }
            (&Method::POST, ["refunds"]) => Some(Route::CreateRefund),
            (&Method::GET, ["payment_methods", id]) if !id.is_empty() => {
                Some(Route::RetrievePaymentMethod((*id).to_owned()))
            }
            _ => None,
        }
    }
}

/// Serve one Stripe API call.
pub(crate) async fn handle(
    provider: &Provider,
    route: Route,
    req: Request<Incoming>,
) -> Result<SimResponse, ServeError> {
    let (parts, body) = req.into_parts();
    let body = match read_capped(body, MAX_BODY).await {
        Ok(body) => body,
        Err(ReadError::TooLarge) => {
            let mut error = StripeError::bad_value("body", "Request body too large.".to_owned());
            error.status = StatusCode::PAYLOAD_TOO_LARGE;
            return Ok(error.response());
        }
        Err(ReadError::Transport(e)) => return Err(ServeError::Body(e)),
    };
    let post = parts.method == Method::POST;
    let key = idempotency_key(&parts.headers).filter(|_| post);
    let fingerprint = fingerprint(&parts.method, parts.uri.path(), &body);
    let form = Form::parse(&body);

    // One lock for check, execute and store: concurrent retries of one key cannot both run.
    let mut ledger = provider.ledger();
    if let Some(stored) = key.as_deref().and_then(|key| ledger.stored(key)) {
        if stored.fingerprint != fingerprint {
            let key = key.as_deref().unwrap_or_default();
            return Ok(StripeError::idempotency_mismatch(key).response());
        }
        let mut response = json_bytes(stored.status, stored.body.clone());
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        return Ok(response);
    }

    let creates = route == Route::CreateIntent;
    let result = match &route {
        Route::CreateIntent => intents::create(&mut ledger, &form, key.as_deref()),
        Route::RetrieveIntent(id) => intents::retrieve(&ledger, id),
        Route::IntentAction(id, action) => intents::act(&mut ledger, id, *action),
        Route::CreateRefund => refunds::create(&mut ledger, &form),
        Route::RetrievePaymentMethod(id) => methods::retrieve(id),
    };
    let (status, value, event) = match result {
        Ok(mut value) if value["status"] == "requires_payment_method" => {
            value["last_payment_error"] = card_declined();
            let mut error = card_declined();
            error["payment_intent"] = value.clone();
            let event = events::Event {
                kind: "payment_intent.payment_failed",
                object: value,
                previous: None,
            };
            (
                StatusCode::PAYMENT_REQUIRED,
                json!({ "error": error }),
                Some(event),
            )
        }
        Ok(value) => {
            let event = match &route {
                Route::CreateIntent | Route::IntentAction(..) if value["status"] == "succeeded" => {
                    Some(events::Event {
                        kind: "payment_intent.succeeded",
                        object: value.clone(),
                        previous: None,
                    })
                }
                Route::CreateRefund => value["payment_intent"]
                    .as_str()
                    .and_then(|pi| events::refunded(&ledger, pi)),
                _ => None,
            };
            (StatusCode::OK, value, event)
        }
        Err(error) => (error.status, error.to_json(), None),
    };
    let encoded: bytes::Bytes = serde_json::to_vec(&value).unwrap_or_default().into();
    if let (Some(key), true) = (key, status.is_success()) {
        let stored = StoredResponse {
            fingerprint,
            status,
            body: encoded.clone(),
        };
        ledger.store(key, stored);
    }
    drop(ledger);
    if let Some(event) = event {
        events::send(provider, event);
    }
    if creates && status.is_success() && provider.faults().faults().charge_then_unavailable {
        return Ok(StripeError::simulated(StatusCode::SERVICE_UNAVAILABLE).response());
    }
    Ok(json_bytes(status, encoded))
}

/// The card error of a declined payment (Stripe's shape).
fn card_declined() -> serde_json::Value {
    json!({
        "type": "card_error",
        "code": "card_declined",
        "decline_code": "generic_decline",
        "message": "Your card was declined.",
    })
}

/// The `Idempotency-Key` header; an empty key counts as none.
fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("idempotency-key")?;
    let key = String::from_utf8_lossy(value.as_bytes()).trim().to_owned();
    (!key.is_empty()).then_some(key)
}

/// What a retry must repeat exactly to be replayed.
fn fingerprint(method: &Method, path: &str, body: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(method.as_str());
    hasher.update([0]);
    hasher.update(path);
    hasher.update([0]);
    hasher.update(body);
    hasher.finalize().into()
}

/// A positive integer parameter (amounts in minor units), `None` when absent.
fn positive_int(form: &Form, param: &'static str) -> Result<Option<i64>, StripeError> {
    let Some(raw) = form.get(param) else {
        return Ok(None);
    };
    let value: i64 = raw.trim().parse().map_err(|_| {
        StripeError::invalid(
            "parameter_invalid_integer",
            Some(param),
            format!("Invalid integer: {raw}"),
        )
    })?;
    if value <= 0 {
        return Err(StripeError::invalid(
            "amount_too_small",
            Some(param),
            "Amount must be at least 1.".to_owned(),
        ));
    }
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let post = Method::POST;
        assert_eq!(
            Route::parse(&post, "/v1/payment_intents"),
            Some(Route::CreateIntent)
        );
        assert_eq!(
            Route::parse(&Method::GET, "/v1/payment_intents/pi_x_1"),
            Some(Route::RetrieveIntent("pi_x_1".into()))
        );
        assert_eq!(
            Route::parse(&post, "/v1/payment_intents/pi_x_1/capture"),
            Some(Route::IntentAction("pi_x_1".into(), Action::Capture))
        );
        assert_eq!(
            Route::parse(&post, "/v1/refunds"),
            Some(Route::CreateRefund)
        );
        assert_eq!(Route::parse(&post, "/v1/payment_intents/pi_x_1/zap"), None);
        assert_eq!(Route::parse(&Method::GET, "/v1/payment_intents/"), None);
        assert_eq!(Route::parse(&post, "/echo"), None);
    }

    #[test]
    fn amounts() {
        let form = Form::parse(b"a=12&b=x&c=0&d=-5");
        assert_eq!(positive_int(&form, "a"), Ok(Some(12)));
        assert_eq!(positive_int(&form, "missing"), Ok(None));
        let code = |p| positive_int(&form, p).err().and_then(|e| e.code);
        assert_eq!(code("b"), Some("parameter_invalid_integer"));
        assert_eq!(code("c"), Some("amount_too_small"));
        assert_eq!(code("d"), Some("amount_too_small"));
    }
}

#[cfg(test)]
mod webhook_tests {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use serde_json::Value;

    use super::events::signature;
    use crate::{Faults, Simulator};

    const SECRET: &str = "whsec_test";

    async fn post(base: &str, path: &str, form: &str) -> (u16, Value) {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let request = hyper::Request::post(format!("{base}{path}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form.to_owned())))
            .unwrap();
        let response = client.request(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    fn events(sim: &Simulator) -> Vec<Value> {
        sim.webhooks_sent("s")
            .iter()
            .map(|sent| {
                let header = sent.header("stripe-signature").unwrap();
                let (t, v1) = header.split_once(",v1=").unwrap();
                let t: u64 = t.strip_prefix("t=").unwrap().parse().unwrap();
                assert_eq!(v1, signature(SECRET, t, &sent.body));
                sent.json().unwrap()
            })
            .collect()
    }

    #[tokio::test]
    async fn the_cards_own_manual_capture_waits_for_the_capture() {
        let sim = Simulator::start(&["s"]).await.unwrap();
        let base = sim.base_url("s");
        sim.set_webhooks("s", Some("http://127.0.0.1:9/webhooks/s"), SECRET);
        let form = "amount=1000&currency=eur&payment_method_types[]=card\
                    &payment_method_types[]=ideal&payment_method_options[card][capture_method]=manual";
        let (status, pi) = post(&base, "/v1/payment_intents", form).await;
        assert_eq!(status, 200, "{pi}");
        assert_eq!(pi["status"], "requires_capture");
        assert_eq!(pi["capture_method"], "automatic");
        assert_eq!(
            pi["payment_method_options"]["card"]["capture_method"],
            "manual"
        );
        let id = pi["id"].as_str().unwrap();
        let (status, captured) =
            post(&base, &format!("/v1/payment_intents/{id}/capture"), "").await;
        assert_eq!(
            (status, captured["status"].as_str()),
            (200, Some("succeeded"))
        );
        let events = events(&sim);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["type"], "payment_intent.succeeded");
        let object = &events[0]["data"]["object"];
        assert_eq!(
            object["payment_method_types"],
            serde_json::json!(["card", "ideal"])
        );
        assert_eq!(
            object["payment_method_options"]["card"]["capture_method"],
            "manual"
        );
        let form = "amount=1000&currency=eur&payment_method_options[card][capture_method]=later";
        assert_eq!(post(&base, "/v1/payment_intents", form).await.0, 400);
    }

    #[tokio::test]
    async fn intents_and_refunds_send_signed_events() {
        let sim = Simulator::start(&["s"]).await.unwrap();
        let base = sim.base_url("s");
        sim.set_webhooks("s", Some("http://127.0.0.1:9/webhooks/s"), SECRET);
        let (_, pi) = post(&base, "/v1/payment_intents", "amount=1000&currency=eur").await;
        let pi = pi["id"].as_str().unwrap().to_owned();
        let form = "amount=500&currency=eur&payment_method=pm_card_chargeDeclined";
        let (status, declined) = post(&base, "/v1/payment_intents", form).await;
        assert_eq!(status, 402);
        assert_eq!(declined["error"]["type"], "card_error");
        let declined_id = declined["error"]["payment_intent"]["id"].clone();
        let refund = format!("payment_intent={pi}&amount=300");
        assert_eq!(post(&base, "/v1/refunds", &refund).await.0, 200);
        let refund = format!("payment_intent={pi}&amount=200");
        assert_eq!(post(&base, "/v1/refunds", &refund).await.0, 200);
        let events = events(&sim);
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "payment_intent.succeeded",
                "payment_intent.payment_failed",
                "charge.refunded",
                "charge.refunded"
            ]
        );
        assert_eq!(events[0]["data"]["object"]["id"], pi.as_str());
        assert_eq!(events[1]["data"]["object"]["id"], declined_id);
        // As Stripe's API since 2022-11-15: the cumulative amount_refunded, the one before
        // this refund in previous_attributes, no refunds list.
        for (event, (now, before)) in events[2..].iter().zip([(300, 0), (500, 300)]) {
            let charge = &event["data"]["object"];
            assert_eq!(charge["payment_intent"], pi.as_str());
            assert_eq!(charge["amount_refunded"], now);
            assert!(charge.get("refunds").is_none(), "{charge}");
            assert_eq!(
                event["data"]["previous_attributes"]["amount_refunded"],
                before
            );
        }
        assert_ne!(events[0]["id"], events[1]["id"]);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn charge_then_unavailable_records_and_answers_503() {
        let sim = Simulator::start(&["s"]).await.unwrap();
        let base = sim.base_url("s");
        sim.set_faults("s", Faults::charge_then_unavailable(0));
        let (status, body) = post(&base, "/v1/payment_intents", "amount=1000&currency=eur").await;
        assert_eq!(status, 503);
        assert_eq!(body["error"]["type"], "api_error");
        assert_eq!(sim.ledger("s").len(), 1);
        sim.shutdown().await;
    }
}
