//! Egress: Stripe webhook events → verified, canonical notifications (`decode-webhook`).
//!
//! Credential `webhook_secret` (the endpoint's signing secret, `whsec_…`, used as is).
//! `Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>` (several
//! `v1` allowed, one must match, constant-time); `t` must be within 300 s of `context.now_ms`.
//! A missing, malformed or wrong signature or a stale timestamp is 401 (`invalid_signature`,
//! `timestamp_out_of_tolerance`); a verified body that is not an event is 400
//! (`invalid_notification`). Refusal messages never repeat the body.
//!
//! | event type                                  | operation | outcome                              |
//! |---------------------------------------------|-----------|--------------------------------------|
//! | `payment_intent.succeeded`                  | status    | approved, `amount_received`          |
//! | the same, captured by hand (below)          | capture   | approved, `amount_received`          |
//! | `…amount_capturable_updated`, `requires_capture` | status | approved, `amount_capturable`   |
//! | `payment_intent.payment_failed`             | status    | declined from `last_payment_error`   |
//! | `payment_intent.canceled`                   | status    | declined `canceled` (→ canceled)     |
//! | `charge.refunded`                           | refund    | approved, this refund's amount (below) |
//! | anything else                               | —         | left out (accepted)                  |
//!
//! A manual-capture intent reaches `succeeded` only by its capture (its authorisation is
//! `requires_capture`, announced by `amount_capturable_updated`), so its `succeeded` is a
//! capture: one the storefront made through payproxy (already recorded), or one made at the
//! provider itself (the dashboard, another integration), which only this event tells
//! payproxy of. Read as a status it would be taken for the authorisation. Captured by hand:
//! `capture_method: manual`, or `payment_method_options.card.capture_method: manual`
//! (Stripe's per-method override, the way to capture cards by hand on an intent that offers
//! other methods too, as automatic payment methods do). With the per-card option the event
//! does not say whether the shopper paid by card (the intent names its payment method by id
//! only), so its `succeeded` is a capture whenever the option is set: the host, which knows
//! whether it recorded the payment as captured by hand, reads a capture of a payment it
//! recorded as captured automatically as that payment's success.
//!
//! `charge.refunded`'s charge holds the cumulative `amount_refunded`. Since API version
//! 2022-11-15 it has no `refunds` list (expandable, and an event's object is never expanded),
//! so this refund's amount is `amount_refunded` less `data.previous_attributes.amount_refunded`
//! (the total before it), both counted of what was captured: Stripe counts the part of a
//! charge it never captured (the rest of a partial capture, a released authorisation) as
//! refunded too, and that is no refund of the payment. With the list (older API versions,
//! or an endpoint expanding it) it is the newest refund's `amount`. With neither, the event is left out (accepted): the total
//! alone would count every earlier refund again.
//!
//! `payment_intent.canceled` is a cancel made at the provider, or Stripe's own: an
//! authorisation not captured within its validity (7 days for most cards) is canceled
//! automatically. Either way the payment can no longer be captured.
//!
//! The outcome's reference is always the PaymentIntent id (what [`crate::decode`] gives for
//! the payment's answer): the intent's `id`, or the charge's `payment_intent`. The event id
//! is the event's `id` (`evt_…`), the same on every redelivery. The merchant reference is
//! the object's `metadata[<egress_reference_key>]`. The answer is `{"received": true}`.

use hmac::{Hmac, Mac};
use payproxy_plugin_sdk::currency;
use payproxy_plugin_sdk::helpers::webhook;
use payproxy_plugin_sdk::payment::{
    Context, Decline, HttpRequest, HttpResponse, Money, Notification, Operation, Outcome,
    OutcomeStatus, Refusal, Webhook,
};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::codes;
use crate::config::Config;

/// The credential holding the endpoint's signing secret.
pub const WEBHOOK_SECRET: &str = "webhook_secret";
/// Largest accepted distance between `t` and now, in seconds (Stripe's libraries' default).
pub const TOLERANCE_S: u64 = 300;

/// Verify and decode one webhook request.
pub fn decode(
    config: &Config,
    request: &HttpRequest,
    context: &Context,
) -> Result<Webhook, Refusal> {
    let secret = context.required_credential(WEBHOOK_SECRET)?;
    let body = request.body.as_deref().unwrap_or_default();
    verify(
        request.header("stripe-signature"),
        secret,
        body,
        context.now_ms / 1000,
    )?;
    let event: Value = serde_json::from_slice(body).map_err(|_| unreadable())?;
    let (Some(id), Some(kind), Some(object)) = (
        event["id"].as_str().filter(|s| !s.is_empty()),
        event["type"].as_str(),
        event["data"]["object"].as_object(),
    ) else {
        return Err(unreadable());
    };
    let object = Value::Object(object.clone());
    let notification = match kind {
        "payment_intent.succeeded"
        | "payment_intent.amount_capturable_updated"
        | "payment_intent.payment_failed"
        | "payment_intent.canceled" => intent(config, id, kind, &object)?,
        "charge.refunded" => refunded(config, id, &object, &event["data"]["previous_attributes"])?,
        _ => None,
    };
    Ok(Webhook {
        notifications: notification.into_iter().collect(),
        response: HttpResponse::json(200, &json!({ "received": true })),
    })
}

fn unreadable() -> Refusal {
    webhook::unreadable("a Stripe event")
}

/// Check `Stripe-Signature` against the raw body.
fn verify(header: Option<&str>, secret: &str, body: &[u8], now_s: u64) -> Result<(), Refusal> {
    let invalid = || {
        webhook::unauthorized(
            "invalid_signature",
            "the Stripe-Signature header does not verify",
        )
    };
    let header = header.ok_or_else(invalid)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t.parse::<u64>().map_err(|_| invalid())?),
            Some(("v1", v1)) => signatures.push(v1),
            _ => {}
        }
    }
    let t = timestamp.ok_or_else(invalid)?;
    let matches = signatures.iter().any(|v1| {
        let Ok(expected) = hex::decode(v1) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
            return false;
        };
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.verify_slice(&expected).is_ok()
    });
    if !matches {
        return Err(invalid());
    }
    if now_s.abs_diff(t) > TOLERANCE_S {
        return Err(webhook::unauthorized(
            "timestamp_out_of_tolerance",
            "the Stripe-Signature timestamp is too far from now",
        ));
    }
    Ok(())
}

fn money(v: &Value, field: &str) -> Option<Money> {
    let minor = v[field].as_i64().filter(|m| *m >= 0)?;
    let currency = currency::normalise(v["currency"].as_str()?)?;
    Some(Money { minor, currency })
}

fn merchant_reference(config: &Config, object: &Value) -> Option<String> {
    object["metadata"][config.egress_reference_key.as_str()]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// `payment_intent.succeeded` / `.amount_capturable_updated` / `.payment_failed` /
/// `.canceled`.
fn intent(
    config: &Config,
    event_id: &str,
    kind: &str,
    object: &Value,
) -> Result<Option<Notification>, Refusal> {
    let id = object["id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(unreadable)?;
    // The amount received (or capturable) when the event says, else the intent's.
    let field_or_amount = |field: &'static str| {
        if object[field].as_i64().is_some_and(|a| a > 0) {
            field
        } else {
            "amount"
        }
    };
    let mut operation = Operation::Status;
    let (status, amount) = if kind == "payment_intent.succeeded" {
        if manual_capture(object) {
            operation = Operation::Capture;
        }
        (
            OutcomeStatus::Approved,
            money(object, field_or_amount("amount_received")),
        )
    } else if kind == "payment_intent.amount_capturable_updated" {
        // Authorised, to be captured; at any other status it says nothing of the payment.
        if object["status"].as_str() != Some("requires_capture") {
            return Ok(None);
        }
        (
            OutcomeStatus::Approved,
            money(object, field_or_amount("amount_capturable")),
        )
    } else if kind == "payment_intent.canceled" {
        // What the host reads as canceled, as the decode of a canceled intent says it.
        (
            OutcomeStatus::Declined(crate::decode::hard_decline(
                "canceled",
                "the payment was canceled".into(),
            )),
            None,
        )
    } else {
        let error = &object["last_payment_error"];
        let provider_code = error["decline_code"]
            .as_str()
            .or(error["code"].as_str())
            .unwrap_or("card_declined")
            .to_string();
        let (code, kind) = codes::decline(&provider_code);
        let decline = Decline {
            code: code.into(),
            provider_code,
            kind,
            message: "the payment was declined".into(),
        };
        (OutcomeStatus::Declined(decline), None)
    };
    Ok(Some(Notification {
        event_id: event_id.to_string(),
        operation,
        outcome: Outcome {
            status,
            provider_reference: Some(id.to_string()),
            amount,
        },
        merchant_reference: merchant_reference(config, object),
    }))
}

/// Whether an intent may be captured by hand: `capture_method: manual`, or
/// `payment_method_options.card.capture_method: manual` (Stripe's per-method override; for a
/// payment by another method the host reads the capture as the payment's success).
fn manual_capture(intent: &Value) -> bool {
    intent["capture_method"] == "manual"
        || intent["payment_method_options"]["card"]["capture_method"] == "manual"
}

/// `charge.refunded`: the refund it announces (see the module's docs), about the charge's
/// PaymentIntent. `previous` is the event's `data.previous_attributes`.
fn refunded(
    config: &Config,
    event_id: &str,
    charge: &Value,
    previous: &Value,
) -> Result<Option<Notification>, Refusal> {
    // A charge made without a PaymentIntent was not made through payproxy.
    let Some(intent) = charge["payment_intent"].as_str().filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let newest = &charge["refunds"]["data"][0];
    let amount = if newest.is_object() {
        money(
            &json!({"amount": newest["amount"], "currency": newest["currency"]
            .as_str()
            .or(charge["currency"].as_str())}),
            "amount",
        )
    } else {
        let (Some(total), Some(before)) = (
            charge["amount_refunded"].as_i64(),
            previous["amount_refunded"].as_i64(),
        ) else {
            return Ok(None);
        };
        // Of what was captured: Stripe counts the part of a charge it never captured (the
        // rest of a partial capture, a released authorisation) in amount_refunded too.
        let captured_now = charge["amount_captured"].as_i64();
        let captured_before = previous["amount_captured"].as_i64().or(captured_now);
        let of_captured = |refunded: i64, captured: Option<i64>| {
            let never_captured = match (charge["amount"].as_i64(), captured) {
                (Some(amount), Some(captured)) if captured <= amount => amount - captured,
                _ => 0,
            };
            (refunded - never_captured).max(0)
        };
        let this = of_captured(total, captured_now) - of_captured(before, captured_before);
        if this <= 0 {
            return Ok(None);
        }
        money(
            &json!({"amount": this, "currency": charge["currency"]}),
            "amount",
        )
    };
    if amount.is_none() {
        return Err(unreadable());
    }
    Ok(Some(Notification {
        event_id: event_id.to_string(),
        operation: Operation::Refund,
        outcome: Outcome {
            status: OutcomeStatus::Approved,
            provider_reference: Some(intent.to_string()),
            amount,
        },
        merchant_reference: merchant_reference(config, charge),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test";
    const NOW_S: u64 = 1_700_000_000;

    fn context() -> Context {
        Context {
            provider: "stripe-us".into(),
            credentials: vec![
                ("secret_key".into(), "sk_test".into()),
                (WEBHOOK_SECRET.into(), SECRET.into()),
            ],
            now_ms: NOW_S * 1000 + 123,
            idempotency_key: String::new(),
        }
    }

    fn sign(body: &[u8], t: u64, secret: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
    }

    fn request(body: &[u8], signature: Option<String>) -> HttpRequest {
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        if let Some(signature) = signature {
            headers.push(("stripe-signature".into(), signature));
        }
        HttpRequest {
            method: "POST".into(),
            path: "/webhooks/stripe-us".into(),
            query: None,
            headers,
            body: Some(body.to_vec()),
        }
    }

    fn event(kind: &str, object: Value) -> Vec<u8> {
        json!({"id": "evt_1", "object": "event", "type": kind, "created": NOW_S,
               "data": {"object": object}})
        .to_string()
        .into_bytes()
    }

    /// A `charge.refunded` whose `data.previous_attributes` is `previous`.
    fn refunded_event(charge: Value, previous: Value) -> Vec<u8> {
        json!({"id": "evt_2", "object": "event", "type": "charge.refunded", "created": NOW_S,
               "data": {"object": charge, "previous_attributes": previous}})
        .to_string()
        .into_bytes()
    }

    fn decoded(body: &[u8]) -> Result<Webhook, Refusal> {
        let signature = sign(body, NOW_S - 10, SECRET);
        decode(
            &Config::default(),
            &request(body, Some(signature)),
            &context(),
        )
    }

    fn one(body: &[u8]) -> Notification {
        let mut webhook = decoded(body).expect("accepted");
        assert_eq!(webhook.response.status, 200);
        assert_eq!(webhook.notifications.len(), 1);
        webhook.notifications.remove(0)
    }

    #[test]
    fn succeeded_is_approved_for_the_intent() {
        let body = event(
            "payment_intent.succeeded",
            json!({"id": "pi_1", "object": "payment_intent", "amount": 1000,
                   "amount_received": 1000, "currency": "eur", "status": "succeeded",
                   "metadata": {"order_id": "order-1"}}),
        );
        let n = one(&body);
        assert_eq!(n.event_id, "evt_1");
        assert_eq!(n.operation, Operation::Status);
        assert_eq!(n.outcome.status, OutcomeStatus::Approved);
        assert_eq!(n.outcome.provider_reference.as_deref(), Some("pi_1"));
        assert_eq!(
            n.outcome.amount,
            Some(Money {
                minor: 1000,
                currency: "EUR".into()
            })
        );
        assert_eq!(n.merchant_reference.as_deref(), Some("order-1"));
    }

    #[test]
    fn a_manual_capture_intents_succeeded_is_its_capture() {
        let body = event(
            "payment_intent.succeeded",
            json!({"id": "pi_3", "object": "payment_intent", "amount": 1000,
                   "amount_received": 600, "currency": "eur", "status": "succeeded",
                   "capture_method": "manual"}),
        );
        let n = one(&body);
        assert_eq!(n.operation, Operation::Capture);
        assert_eq!(n.outcome.status, OutcomeStatus::Approved);
        assert_eq!(n.outcome.provider_reference.as_deref(), Some("pi_3"));
        assert_eq!(n.outcome.amount.map(|m| m.minor), Some(600));
        // Captured by hand through the card's own options (card only): a capture too.
        let body = event(
            "payment_intent.succeeded",
            json!({"id": "pi_7", "amount": 1000, "currency": "eur", "status": "succeeded",
                   "capture_method": "automatic", "payment_method_types": ["card"],
                   "payment_method_options": {"card": {"capture_method": "manual"}}}),
        );
        assert_eq!(one(&body).operation, Operation::Capture);
        // The same option on an intent offering other methods too (automatic payment
        // methods): a capture as well, whichever method the shopper used (the host tells).
        let body = event(
            "payment_intent.succeeded",
            json!({"id": "pi_8", "amount": 1000, "currency": "eur", "status": "succeeded",
                   "capture_method": "automatic",
                   "payment_method_types": ["card", "ideal", "sepa_debit"],
                   "payment_method_options": {"card": {"capture_method": "manual"},
                                              "ideal": {}}}),
        );
        assert_eq!(one(&body).operation, Operation::Capture);
        // Captured automatically (either way Stripe spells it): the payment's status.
        for method in ["automatic", "automatic_async"] {
            let body = event(
                "payment_intent.succeeded",
                json!({"id": "pi_4", "amount": 1000, "currency": "eur",
                       "status": "succeeded", "capture_method": method}),
            );
            let n = one(&body);
            assert_eq!(n.operation, Operation::Status, "{method}");
            assert_eq!(n.outcome.amount.map(|m| m.minor), Some(1000), "{method}");
        }
    }

    #[test]
    fn amount_capturable_updated_is_the_authorisation() {
        let body = event(
            "payment_intent.amount_capturable_updated",
            json!({"id": "pi_5", "object": "payment_intent", "amount": 1000,
                   "amount_capturable": 1000, "amount_received": 0, "currency": "eur",
                   "status": "requires_capture", "capture_method": "manual"}),
        );
        let n = one(&body);
        assert_eq!(n.operation, Operation::Status);
        assert_eq!(n.outcome.status, OutcomeStatus::Approved);
        assert_eq!(n.outcome.provider_reference.as_deref(), Some("pi_5"));
        assert_eq!(n.outcome.amount.map(|m| m.minor), Some(1000));
        // At any other status it says nothing of the payment: left out.
        let body = event(
            "payment_intent.amount_capturable_updated",
            json!({"id": "pi_5", "amount": 1000, "amount_capturable": 0,
                   "currency": "eur", "status": "canceled"}),
        );
        assert!(decoded(&body).unwrap().notifications.is_empty());
    }

    #[test]
    fn canceled_is_the_payments_cancel() {
        let body = event(
            "payment_intent.canceled",
            json!({"id": "pi_6", "object": "payment_intent", "amount": 1000,
                   "amount_capturable": 0, "currency": "eur", "status": "canceled",
                   "cancellation_reason": "automatic", "capture_method": "manual"}),
        );
        let n = one(&body);
        assert_eq!(n.operation, Operation::Status);
        assert_eq!(n.outcome.provider_reference.as_deref(), Some("pi_6"));
        match n.outcome.status {
            OutcomeStatus::Declined(d) => {
                assert_eq!(d.provider_code, "canceled");
                assert_eq!(d.kind, payproxy_plugin_sdk::payment::DeclineKind::Hard);
            }
            other => panic!("not declined: {other:?}"),
        }
    }

    #[test]
    fn payment_failed_is_declined() {
        let body = event(
            "payment_intent.payment_failed",
            json!({"id": "pi_2", "object": "payment_intent", "amount": 500, "currency": "eur",
                   "status": "requires_payment_method",
                   "last_payment_error": {"type": "card_error", "code": "card_declined",
                                          "decline_code": "insufficient_funds",
                                          "message": "Your card has insufficient funds."}}),
        );
        let n = one(&body);
        assert_eq!(n.operation, Operation::Status);
        assert_eq!(n.outcome.provider_reference.as_deref(), Some("pi_2"));
        match n.outcome.status {
            OutcomeStatus::Declined(d) => {
                assert_eq!(d.provider_code, "insufficient_funds");
                assert_eq!(d.code, codes::decline("insufficient_funds").0);
                assert!(!d.message.contains("insufficient funds."));
            }
            other => panic!("not declined: {other:?}"),
        }
        assert_eq!(n.merchant_reference, None);
    }

    #[test]
    fn charge_refunded_is_a_refund_of_the_intent() {
        let body = event(
            "charge.refunded",
            json!({"id": "ch_1", "object": "charge", "payment_intent": "pi_1", "amount": 1000,
                   "amount_refunded": 700, "currency": "eur",
                   "refunds": {"object": "list", "data": [
                       {"id": "re_2", "amount": 300, "currency": "eur"},
                       {"id": "re_1", "amount": 400, "currency": "eur"}]}}),
        );
        let n = one(&body);
        assert_eq!(n.operation, Operation::Refund);
        assert_eq!(n.outcome.provider_reference.as_deref(), Some("pi_1"));
        assert_eq!(
            n.outcome.amount,
            Some(Money {
                minor: 300,
                currency: "EUR".into()
            })
        );
        // Without the refunds list (API versions since 2022-11-15): the total less the total
        // before, from previous_attributes.
        let body = refunded_event(
            json!({"id": "ch_1", "object": "charge", "payment_intent": "pi_1",
                   "amount": 1000, "amount_refunded": 700, "currency": "eur"}),
            json!({"amount_refunded": 400, "refunded": false}),
        );
        assert_eq!(one(&body).outcome.amount.map(|m| m.minor), Some(300));
        // A partial capture (600 of 1000): Stripe counts the 400 never captured as refunded.
        // Not a refund of the payment: left out. A refund of 100 after it is 100.
        let charge_event = |refunded: i64, previous: Value| {
            let charge = json!({"id": "ch_1", "object": "charge", "payment_intent": "pi_1",
                                "amount": 1000, "amount_captured": 600,
                                "amount_refunded": refunded, "currency": "eur"});
            refunded_event(charge, previous)
        };
        let captured = charge_event(
            400,
            json!({"amount_captured": 0, "amount_refunded": 0, "captured": false}),
        );
        assert!(decoded(&captured).unwrap().notifications.is_empty());
        let refund = charge_event(500, json!({"amount_refunded": 400}));
        assert_eq!(one(&refund).outcome.amount.map(|m| m.minor), Some(100));
        // The total alone says nothing of this refund (it would count the earlier ones again):
        // accepted, left out.
        let body = event(
            "charge.refunded",
            json!({"id": "ch_1", "payment_intent": "pi_1", "amount_refunded": 700,
                   "currency": "eur"}),
        );
        assert!(decoded(&body).unwrap().notifications.is_empty());
    }

    #[test]
    fn other_events_are_accepted_and_left_out() {
        let body = event("customer.created", json!({"id": "cus_1"}));
        assert!(decoded(&body).unwrap().notifications.is_empty());
        let body = event(
            "charge.refunded",
            json!({"id": "ch_1", "amount_refunded": 5,
                                                   "currency": "eur"}),
        );
        assert!(decoded(&body).unwrap().notifications.is_empty());
    }

    #[test]
    fn forged_or_stale_signatures_are_401() {
        let body = event(
            "payment_intent.succeeded",
            json!({"id": "pi_1", "amount": 1,
                                                             "currency": "eur"}),
        );
        let config = Config::default();
        let refuse = |signature: Option<String>, body: &[u8]| {
            decode(&config, &request(body, signature), &context()).unwrap_err()
        };
        let wrong_secret = refuse(Some(sign(&body, NOW_S, "whsec_other")), &body);
        assert_eq!(
            (wrong_secret.status, wrong_secret.code.as_str()),
            (401, "invalid_signature")
        );
        let mut tampered = body.clone();
        tampered.extend_from_slice(b" ");
        assert_eq!(
            refuse(Some(sign(&body, NOW_S, SECRET)), &tampered).status,
            401
        );
        assert_eq!(refuse(None, &body).status, 401);
        assert_eq!(refuse(Some("v1=abc".into()), &body).status, 401);
        assert_eq!(refuse(Some("t=x,v1=abc".into()), &body).status, 401);
        let stale = refuse(Some(sign(&body, NOW_S - TOLERANCE_S - 1, SECRET)), &body);
        assert_eq!(
            (stale.status, stale.code.as_str()),
            (401, "timestamp_out_of_tolerance")
        );
        // One of several v1 signatures is enough (secret rotation).
        let good = sign(&body, NOW_S, SECRET);
        let rotated = format!("{},v1=00{}", good, "ab".repeat(31));
        assert!(decode(&config, &request(&body, Some(rotated)), &context()).is_ok());
    }

    #[test]
    fn malformed_events_are_400_without_echo() {
        for body in [
            &b"not json: secret-ish"[..],
            br#"{"type":"payment_intent.succeeded"}"#,
            br#"{"id":"evt_1","type":"payment_intent.succeeded","data":{"object":{"amount":1}}}"#,
        ] {
            let refusal = decoded(body).unwrap_err();
            assert_eq!(refusal.status, 400, "{}", String::from_utf8_lossy(body));
            assert_eq!(refusal.code, "invalid_notification");
            assert!(!refusal.message.contains("secret-ish"));
        }
    }

    #[test]
    fn missing_secret_is_a_configuration_fault() {
        let mut ctx = context();
        ctx.credentials.retain(|(k, _)| k != WEBHOOK_SECRET);
        let body = event("customer.created", json!({"id": "cus_1"}));
        let request = request(&body, Some(sign(&body, NOW_S, SECRET)));
        let refusal = decode(&Config::default(), &request, &ctx).unwrap_err();
        assert_eq!(refusal.code, "provider_misconfigured");
    }
}
