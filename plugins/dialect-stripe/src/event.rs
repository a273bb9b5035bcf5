//! Storefront events: Stripe `Event` objects for the host's payment events, and the
//! `Stripe-Signature` header that `stripe.Webhook.construct_event` verifies.

use hmac::{Hmac, Mac};
use payproxy_plugin_sdk::storefront::{
    EventKind, PaymentEvent, PaymentRecord, PaymentState, RenderedEvent,
};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::render;

/// The API version the rendered objects follow.
const API_VERSION: &str = "2024-06-20";

/// Stripe's event type for a change.
fn event_type(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Created => "payment_intent.created",
        EventKind::RequiresAction => "payment_intent.requires_action",
        EventKind::Processing => "payment_intent.processing",
        EventKind::RequiresCapture => "payment_intent.amount_capturable_updated",
        EventKind::Succeeded => "payment_intent.succeeded",
        EventKind::Failed => "payment_intent.payment_failed",
        EventKind::Canceled => "payment_intent.canceled",
        EventKind::Refunded => "charge.refunded",
    }
}

/// The Charge of a paid PaymentIntent, as `charge.refunded` carries it. Its id is derived
/// from the intent's (`pi_X` → `ch_X`), stable across events.
fn charge(event: &PaymentEvent) -> Value {
    let r = &event.record;
    let suffix = r.id.split_once('_').map_or(r.id.as_str(), |(_, s)| s);
    let (amount, currency) = r
        .payment
        .amount
        .as_ref()
        .map_or((0, String::new()), |m| (m.minor, m.currency.to_lowercase()));
    json!({
        "id": format!("ch_{suffix}"),
        "object": "charge",
        "amount": amount,
        "amount_captured": r.amount_captured,
        "amount_refunded": r.amount_refunded,
        "captured": r.amount_captured > 0,
        "created": r.created,
        "currency": currency,
        "livemode": false,
        "metadata": render::metadata(&r.payment),
        "paid": r.state == PaymentState::Succeeded,
        "payment_intent": r.id,
        "refunded": fully_refunded(r, r.amount_refunded),
        "status": "succeeded",
    })
}

/// A charge's `refunded`: all that was captured is refunded, with `total` refunded.
fn fully_refunded(r: &PaymentRecord, total: i64) -> bool {
    r.amount_captured > 0 && total >= r.amount_captured
}

/// What a refund changed on its charge, as it was before: `amount_refunded` (the total less
/// this refund's amount) and `refunded` when that changed.
fn before(event: &PaymentEvent) -> Value {
    let r = &event.record;
    let previous = r.amount_refunded - event.amount.max(0);
    let mut before = json!({"amount_refunded": previous});
    if fully_refunded(r, previous) != fully_refunded(r, r.amount_refunded) {
        before["refunded"] = json!(fully_refunded(r, previous));
    }
    before
}

/// A Stripe `Event` for the host's event (every kind has one).
pub fn render(event: &PaymentEvent) -> Option<RenderedEvent> {
    let kind = event_type(event.kind);
    let data = match event.kind {
        // As Stripe's since API version 2022-11-15: the charge's cumulative amount_refunded,
        // no refunds list, and what the refund changed in previous_attributes, from which a
        // receiver reads this refund's amount.
        EventKind::Refunded => {
            json!({"object": charge(event), "previous_attributes": before(event)})
        }
        _ => json!({"object": render::record_intent(&event.record).to_value()}),
    };
    let body = json!({
        "id": event.id,
        "object": "event",
        "api_version": API_VERSION,
        "created": event.created,
        "type": kind,
        "data": data,
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
    });
    Some(RenderedEvent {
        event_type: kind.to_string(),
        body: body.to_string().into_bytes(),
        content_type: "application/json; charset=utf-8".to_string(),
    })
}

/// `Stripe-Signature: t=<now>,v1=<hex HMAC-SHA256(secret, "<now>.<body>")>`.
pub fn sign(body: &[u8], secret: &str, now_s: i64) -> Vec<(String, String)> {
    // HMAC takes a key of any length: this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return Vec::new();
    };
    mac.update(now_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let v1 = hex::encode(mac.finalize().into_bytes());
    vec![("stripe-signature".to_string(), format!("t={now_s},v1={v1}"))]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_stripes() {
        // Known answer: HMAC-SHA256("whsec_test", "1700000000.{}").
        let headers = sign(b"{}", "whsec_test", 1_700_000_000);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].0, "stripe-signature");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_test").unwrap();
        mac.update(b"1700000000.{}");
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(headers[0].1, format!("t=1700000000,v1={expected}"));
    }
}

#[cfg(test)]
mod render_tests {
    use super::*;
    use payproxy_plugin_sdk::payment::{Money, Operation, Payment};

    fn payment_event(kind: EventKind, state: PaymentState, refunded: i64) -> PaymentEvent {
        let mut payment = Payment::new(Operation::Authorize);
        payment.amount = Some(Money {
            minor: 1000,
            currency: "EUR".into(),
        });
        PaymentEvent {
            id: "evt_1".into(),
            kind,
            record: PaymentRecord {
                id: "pi_abc".into(),
                payment,
                state,
                created: 1_700_000_000,
                amount_captured: 1000,
                amount_refunded: refunded,
                last_outcome: None,
            },
            created: 1_700_000_100,
            amount: refunded,
        }
    }

    fn body(e: &PaymentEvent) -> (String, serde_json::Value) {
        let r = render(e).expect("every kind has an event");
        (r.event_type, serde_json::from_slice(&r.body).unwrap())
    }

    #[test]
    fn events_are_stripe_events() {
        let (kind, v) = body(&payment_event(
            EventKind::Succeeded,
            PaymentState::Succeeded,
            0,
        ));
        assert_eq!(kind, "payment_intent.succeeded");
        assert_eq!(v["id"], "evt_1");
        assert_eq!(v["object"], "event");
        assert_eq!(v["type"], "payment_intent.succeeded");
        assert_eq!(v["created"], 1_700_000_100);
        assert_eq!(v["livemode"], false);
        assert_eq!(v["data"]["object"]["id"], "pi_abc");
        assert_eq!(v["data"]["object"]["object"], "payment_intent");
        assert_eq!(v["data"]["object"]["status"], "succeeded");
        let (kind, v) = body(&payment_event(EventKind::Failed, PaymentState::Failed, 0));
        assert_eq!(kind, "payment_intent.payment_failed");
        assert!(v["data"]["object"]["last_payment_error"].is_object());
        let (kind, v) = body(&payment_event(
            EventKind::Refunded,
            PaymentState::Succeeded,
            1000,
        ));
        assert_eq!(kind, "charge.refunded");
        let charge = &v["data"]["object"];
        assert_eq!(charge["object"], "charge");
        assert_eq!(charge["id"], "ch_abc");
        assert_eq!(charge["payment_intent"], "pi_abc");
        assert_eq!(charge["amount_refunded"], 1000);
        assert_eq!(charge["refunded"], true);
        assert_eq!(charge["currency"], "eur");
        assert!(charge.get("refunds").is_none());
        // This refund (all 1000 of it): before it, nothing was refunded.
        let before = &v["data"]["previous_attributes"];
        assert_eq!(before["amount_refunded"], 0);
        assert_eq!(before["refunded"], false);
        // A partial refund of 300 on top of 400: before it, 400, and `refunded` unchanged.
        let mut partial = payment_event(EventKind::Refunded, PaymentState::Succeeded, 700);
        partial.amount = 300;
        let (_, v) = body(&partial);
        assert_eq!(v["data"]["object"]["amount_refunded"], 700);
        assert_eq!(
            v["data"]["previous_attributes"],
            serde_json::json!({"amount_refunded": 400})
        );
        // No other event has previous_attributes.
        let (_, v) = body(&payment_event(
            EventKind::Succeeded,
            PaymentState::Succeeded,
            0,
        ));
        assert!(v["data"].get("previous_attributes").is_none());
    }
}
