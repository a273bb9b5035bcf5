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
//! `error.payment_intent`); it may be confirmed again with another `payment_method`, as at
//! Stripe (the same intent, the same id). One confirmed with
//! `pm_card_threeDSecure2Required` waits for the shopper's 3-D Secure challenge
//! (`requires_action`; `next_action.redirect_to_url` when confirmed with a `return_url`,
//! else `use_stripe_sdk` with the challenge as its `stripe_js` page, as Stripe answers),
//! finished by
//! `GET /stripe/3ds/{id}?result=succeeded|failed` (simulator control, no key needed): a
//! failed one goes back to `requires_payment_method` with an authentication failure as its
//! `last_payment_error`. Events (when webhooks are on; see `events`):
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
    /// The shopper back from an intent's 3-D Secure challenge.
    Authenticate(String),
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
        if let Some(id) = path.strip_prefix("/stripe/3ds/") {
            return (method == Method::GET && !id.is_empty() && !id.contains('/'))
                .then(|| Route::Authenticate(id.to_owned()));
        }
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
    let base = crate::json_api::base_url(&parts);
    if let Route::Authenticate(id) = &route {
        let query = Form::parse(parts.uri.query().unwrap_or_default().as_bytes());
        let failed = query.get("result") == Some("failed");
        return Ok(authenticate(provider, id, failed));
    }
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
        Route::IntentAction(id, action) => intents::act(&mut ledger, id, *action, &form),
        Route::CreateRefund => refunds::create(&mut ledger, &form),
        Route::RetrievePaymentMethod(id) => methods::retrieve(id),
        Route::Authenticate(_) => unreachable!("answered above"),
    };
    let result = result.map(|mut value| {
        challenge_as_stripe_answers(provider, &route, &form, &base, &mut value);
        value
    });
    let declines = matches!(
        route,
        Route::CreateIntent | Route::IntentAction(_, Action::Confirm)
    );
    let (status, value, event) = match result {
        Ok(mut value) if declines && value["status"] == "requires_payment_method" => {
            value["last_payment_error"] = card_declined();
            if let Some(id) = value["id"].as_str() {
                provider.set_note(error_note(id), "card".to_owned());
            }
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
        Ok(mut value) => {
            if value["status"] == "requires_payment_method" {
                // As Stripe keeps it on the intent until it is confirmed again.
                let id = value["id"].as_str().unwrap_or_default();
                value["last_payment_error"] = last_payment_error(provider, id);
            }
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

/// `GET /stripe/3ds/{id}`: the shopper finishes the challenge (or fails it with
/// `result=failed`); answers the intent, and notifies its change like Stripe.
fn authenticate(provider: &Provider, id: &str, failed: bool) -> SimResponse {
    let mut ledger = provider.ledger();
    let (mut intent, moved) = match intents::authenticate(&mut ledger, id, failed) {
        Ok(done) => done,
        Err(error) => return error.response(),
    };
    drop(ledger);
    let kind = match intent["status"].as_str() {
        Some("succeeded") => Some("payment_intent.succeeded"),
        Some("requires_payment_method") => {
            provider.set_note(error_note(id), "authentication".to_owned());
            intent["last_payment_error"] = authentication_failed();
            Some("payment_intent.payment_failed")
        }
        _ => None,
    };
    if let (Some(kind), true) = (kind, moved) {
        let object = intent.clone();
        events::send(
            provider,
            events::Event {
                kind,
                object,
                previous: None,
            },
        );
    }
    json_bytes(
        StatusCode::OK,
        serde_json::to_vec(&intent).unwrap_or_default().into(),
    )
}

/// An intent waiting for its 3-D Secure challenge, as Stripe answers it: the challenge is
/// `GET {base}/stripe/3ds/{id}`; confirmed with a `return_url` (remembered per intent), a
/// `redirect_to_url` to it and back there; without one, `use_stripe_sdk`, the action
/// Stripe.js runs, with the challenge as its `stripe_js` page.
fn challenge_as_stripe_answers(
    provider: &Provider,
    route: &Route,
    form: &Form,
    base: &str,
    value: &mut serde_json::Value,
) {
    let Some(id) = value["id"].as_str().map(str::to_owned) else {
        return;
    };
    let note = format!("stripe-return:{id}");
    let confirms = matches!(
        route,
        Route::CreateIntent | Route::IntentAction(_, Action::Confirm)
    );
    if let Some(url) = form.get("return_url").filter(|_| confirms) {
        provider.set_note(note.clone(), url.to_owned());
    }
    if value["status"] != "requires_action" {
        return;
    }
    let page = format!("{base}/stripe/3ds/{id}");
    value["next_action"] = match provider.note(&note) {
        Some(back) => json!({
            "type": "redirect_to_url",
            "redirect_to_url": {"url": page, "return_url": back},
        }),
        None => json!({
            "type": "use_stripe_sdk",
            "use_stripe_sdk": {"type": "three_d_secure_redirect", "stripe_js": page},
        }),
    };
}

/// The provider note naming how intent `id` last failed (`card` or `authentication`).
fn error_note(id: &str) -> String {
    format!("stripe-error:{id}")
}

/// Intent `id`'s `last_payment_error`, as its last failure left it.
fn last_payment_error(provider: &Provider, id: &str) -> serde_json::Value {
    match provider.note(&error_note(id)).as_deref() {
        Some("authentication") => authentication_failed(),
        _ => card_declined(),
    }
}

/// The error of a payment whose 3-D Secure challenge failed (Stripe's shape).
fn authentication_failed() -> serde_json::Value {
    json!({
        "type": "invalid_request_error",
        "code": "payment_intent_authentication_failure",
        "message": "The provided PaymentMethod has failed authentication. You can provide payment_method_data or a new PaymentMethod to attempt to fulfill this PaymentIntent again.",
    })
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

    async fn get(url: &str) -> (u16, Value) {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let response = client.get(url.parse().unwrap()).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// A declined intent confirmed again (the same id) with a card that needs 3-D Secure
    /// waits for the shopper; the challenge failed sends it back to
    /// `requires_payment_method`, passed it succeeds; each change is notified.
    #[tokio::test]
    async fn a_declined_intent_confirmed_again_waits_for_its_challenge() {
        let sim = Simulator::start(&["s"]).await.unwrap();
        let base = sim.base_url("s");
        sim.set_webhooks("s", Some("http://127.0.0.1:9/webhooks/s"), SECRET);
        let form = "amount=1000&currency=eur&payment_method=pm_card_chargeDeclined";
        let (status, declined) = post(&base, "/v1/payment_intents", form).await;
        assert_eq!(status, 402, "{declined}");
        let id = declined["error"]["payment_intent"]["id"].as_str().unwrap();
        // Retrieved, it is no error: the intent, with how it failed.
        let (status, retrieved) = get(&format!("{base}/v1/payment_intents/{id}")).await;
        assert_eq!(
            (status, retrieved["status"].as_str()),
            (200, Some("requires_payment_method"))
        );
        assert_eq!(retrieved["last_payment_error"]["code"], "card_declined");
        let confirm = format!("/v1/payment_intents/{id}/confirm");
        // Without a payment method there is nothing to confirm again.
        assert_eq!(post(&base, &confirm, "").await.0, 400);
        let three_ds = "payment_method=pm_card_threeDSecure2Required";
        let (status, waiting) = post(&base, &confirm, three_ds).await;
        assert_eq!(
            (status, waiting["id"].as_str()),
            (200, Some(id)),
            "{waiting}"
        );
        assert_eq!(waiting["status"], "requires_action");
        // Without a return_url: Stripe.js's action, its page the challenge.
        assert_eq!(waiting["next_action"]["type"], "use_stripe_sdk");
        let url = waiting["next_action"]["use_stripe_sdk"]["stripe_js"]
            .as_str()
            .unwrap();
        assert_eq!(url, format!("{base}/stripe/3ds/{id}"));
        let (status, retrieved) = get(&format!("{base}/v1/payment_intents/{id}")).await;
        assert_eq!(
            (status, &retrieved["next_action"]),
            (200, &waiting["next_action"])
        );
        let (status, failed) = get(&format!("{url}?result=failed")).await;
        assert_eq!(
            (status, failed["status"].as_str()),
            (200, Some("requires_payment_method"))
        );
        assert_eq!(failed["next_action"], Value::Null);
        let (status, retrieved) = get(&format!("{base}/v1/payment_intents/{id}")).await;
        assert_eq!(
            (status, retrieved["last_payment_error"]["code"].as_str()),
            (200, Some("payment_intent_authentication_failure"))
        );
        // Once more, with a return_url: a redirect, back there; passed this time.
        let back = format!("{three_ds}&return_url=https://shop.example/back");
        let (_, waiting) = post(&base, &confirm, &back).await;
        assert_eq!(
            waiting["next_action"]["type"], "redirect_to_url",
            "{waiting}"
        );
        let redirect = &waiting["next_action"]["redirect_to_url"];
        assert_eq!(
            (redirect["url"].as_str(), redirect["return_url"].as_str()),
            (Some(url), Some("https://shop.example/back"))
        );
        let (_, paid) = get(url).await;
        assert_eq!(paid["status"], "succeeded");
        // Finished already: nothing moves, nothing is notified again.
        assert_eq!(
            get(&format!("{url}?result=failed")).await.1["status"],
            "succeeded"
        );
        let kinds: Vec<Value> = events(&sim).iter().map(|e| e["type"].clone()).collect();
        assert_eq!(
            kinds,
            [
                "payment_intent.payment_failed",
                "payment_intent.payment_failed",
                "payment_intent.succeeded"
            ]
        );
        let failure = &events(&sim)[1]["data"]["object"]["last_payment_error"];
        assert_eq!(failure["code"], "payment_intent_authentication_failure");
        assert_eq!(get(&format!("{base}/stripe/3ds/pi_nope")).await.0, 404);
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
