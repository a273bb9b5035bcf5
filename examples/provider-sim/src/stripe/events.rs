//! Stripe events, sent when webhooks are on (see `crate::notify`).
//!
//! `{"id": "evt_<tag>_<n>", "object": "event", "type", "created", "livemode": false,
//! "data": {"object": …}}`: `payment_intent.succeeded` (the intent) when an intent reaches
//! `succeeded` (created with automatic capture, confirmed, captured),
//! `payment_intent.payment_failed` (the intent, with `last_payment_error`) when a payment is
//! declined, `charge.refunded` (the intent's charge `ch_…` with `payment_intent` and the
//! cumulative `amount_refunded`; `data.previous_attributes` holds `amount_refunded` and
//! `refunded` before this refund) for each refund. Like Stripe's API since 2022-11-15 (the
//! events say 2024-06-20), the charge has no `refunds` list: it is expandable, and an event's
//! object is never expanded.
//! Signed `Stripe-Signature: t=<unix secs>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::ledger::Ledger;
use crate::notify::Notice;
use crate::provider::Provider;

/// Event ids are unique in the process (a reset does not reuse them).
static NEXT_EVENT: AtomicU64 = AtomicU64::new(0);

/// An event to send: type, `data.object` and, for a change, `data.previous_attributes`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Event {
    pub(super) kind: &'static str,
    pub(super) object: Value,
    pub(super) previous: Option<Value>,
}

/// Send `event` if webhooks are on.
pub(super) fn send(provider: &Provider, event: Event) {
    if let Some(secret) = provider.webhook_secret() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        provider.notify(notice(&secret, provider.name(), now, event));
    }
}

/// The signed event request.
pub(super) fn notice(secret: &str, provider: &str, now_secs: u64, event: Event) -> Notice {
    let n = NEXT_EVENT.fetch_add(1, Ordering::Relaxed) + 1;
    let tag: String = provider
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let body = json!({
        "id": format!("evt_{tag}_{n}"),
        "object": "event",
        "api_version": "2024-06-20",
        "created": now_secs,
        "type": event.kind,
        "livemode": false,
        "pending_webhooks": 1,
        "data": match event.previous {
            Some(previous) => json!({ "object": event.object, "previous_attributes": previous }),
            None => json!({ "object": event.object }),
        },
    });
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let header = format!("t={now_secs},v1={}", signature(secret, now_secs, &body));
    Notice {
        dialect: "stripe",
        query: None,
        headers: vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("stripe-signature".to_owned(), header),
        ],
        body,
    }
}

/// Hex HMAC-SHA256 of `"<t>.<body>"` keyed with the secret (as is, `whsec_` included).
pub(super) fn signature(secret: &str, t: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// `charge.refunded` for the refund just made against `intent_id`.
pub(super) fn refunded(ledger: &Ledger, intent_id: &str) -> Option<Event> {
    let intent = ledger.intent(intent_id)?;
    let charge = &intent.charge;
    let newest = ledger
        .refunds()
        .into_iter()
        .rfind(|r| r.payment_intent == intent_id)?;
    let before = intent.amount_refunded - newest.amount;
    let charge_id = match intent_id.strip_prefix("pi_") {
        Some(rest) => format!("ch_{rest}"),
        None => format!("ch_{intent_id}"),
    };
    Some(Event {
        kind: "charge.refunded",
        object: json!({
            "id": charge_id,
            "object": "charge",
            "payment_intent": intent_id,
            "amount": charge.amount,
            "amount_captured": charge.amount,
            "amount_refunded": intent.amount_refunded,
            "currency": charge.currency,
            "refunded": intent.amount_refunded >= charge.amount,
            "status": "succeeded",
            "metadata": charge.metadata,
        }),
        previous: Some(json!({
            "amount_refunded": before,
            "refunded": before >= charge.amount,
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_like_stripe() {
        let event = Event {
            kind: "payment_intent.succeeded",
            object: json!({"id": "pi_x_1", "object": "payment_intent"}),
            previous: None,
        };
        let notice = notice("whsec_test", "sim-eu", 1_700_000_000, event);
        let header = notice
            .headers
            .iter()
            .find(|(k, _)| k == "stripe-signature")
            .map(|(_, v)| v.clone())
            .unwrap();
        let expected = signature("whsec_test", 1_700_000_000, &notice.body);
        assert_eq!(header, format!("t=1700000000,v1={expected}"));
        let body: Value = serde_json::from_slice(&notice.body).unwrap();
        assert!(body["id"].as_str().unwrap().starts_with("evt_simeu_"));
        assert_eq!(body["type"], "payment_intent.succeeded");
        assert_eq!(body["data"]["object"]["id"], "pi_x_1");
    }
}
