//! iDEAL status notifications → verified, canonical notifications (`decode-webhook`).
//!
//! The provider posts one JSON notification per final change of a transaction or a refund:
//!
//! ```json
//! {"notificationId": "ntf_…", "type": "transaction.status", "createdAt": "2023-11-14T22:13:20Z",
//!  "transactionId": "tr_…", "status": "success", "amount": "10.00", "currency": "EUR",
//!  "reference": "order-1"}
//! {"notificationId": "ntf_…", "type": "refund.status", "createdAt": "…", "transactionId": "tr_…",
//!  "refundId": "rf_…", "status": "success", "amount": "2.50", "currency": "EUR", "reference": "order-1"}
//! ```
//!
//! and expects any 2xx back (this dialect answers 200 with an empty body).
//!
//! # Verification
//!
//! Shared-secret HMAC, keyed with the provider's credential `webhook_secret`:
//! `x-ideal-timestamp` is the delivery time in Unix seconds and `x-ideal-signature` the
//! lower-case hex HMAC-SHA256 of `<x-ideal-timestamp>.<raw body>`, compared in constant time.
//! A timestamp more than [`TOLERANCE_SECS`] away from `context.now_ms` (either way), a missing
//! header or a wrong signature is refused 401 `invalid_signature`; a verified body that is not
//! such a notification 400 `invalid_notification`. Messages never repeat the body.
//!
//! # Mapping
//!
//! | type                 | status      | operation | outcome                                           |
//! |----------------------|-------------|-----------|---------------------------------------------------|
//! | `transaction.status` | `success`   | status    | approved, `amount`                                |
//! | `transaction.status` | `failure`   | status    | declined `generic_decline`, soft, provider code `failure` |
//! | `transaction.status` | `expired`   | status    | declined `generic_decline`, hard, provider code `expired` |
//! | `transaction.status` | `cancelled` | status    | declined `generic_decline`, hard, provider code `cancelled` |
//! | `refund.status`      | `success`   | refund    | approved, the refunded `amount`                   |
//! | `refund.status`      | `failure`   | refund    | declined `generic_decline`, hard                  |
//! | anything else (`open`, refund `pending`, other types) | | — | left out (accepted, verified) |
//!
//! The event id is `notificationId` (the same at every redelivery); the reference is the
//! `transactionId` (what [`crate::decode`] gives for the payment's answer, also for refunds);
//! the merchant reference is `reference`. Statuses and kinds are [`crate::codes`]'.

use hmac::{Hmac, Mac};
use payproxy_plugin_sdk::currency;
use payproxy_plugin_sdk::helpers::decode::decimal_amount;
use payproxy_plugin_sdk::helpers::decode::text;
use payproxy_plugin_sdk::helpers::webhook;
use payproxy_plugin_sdk::payment::{
    Context, Decline, HttpRequest, Money, Notification, Operation, Outcome, OutcomeStatus, Refusal,
    Webhook,
};
use serde_json::Value;
use sha2::Sha256;

use crate::codes::{self, Meaning};

/// The credential keying the notifications' HMAC.
pub const WEBHOOK_SECRET: &str = "webhook_secret";
/// Delivery time, Unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-ideal-timestamp";
/// Hex HMAC-SHA256 of `<timestamp>.<body>`.
pub const SIGNATURE_HEADER: &str = "x-ideal-signature";
/// Largest accepted distance between the timestamp and the host's clock.
pub const TOLERANCE_SECS: u64 = 300;

/// Verify and decode one notification request.
pub fn decode(request: &HttpRequest, context: &Context) -> Result<Webhook, Refusal> {
    let secret = context.required_credential(WEBHOOK_SECRET)?;
    let body = request.body.as_deref().unwrap_or_default();
    let timestamp = request
        .header(TIMESTAMP_HEADER)
        .map(str::trim)
        .ok_or_else(|| webhook::forged("the notification has no x-ideal-timestamp header"))?;
    let seconds: u64 = timestamp
        .parse()
        .map_err(|_| webhook::forged("the x-ideal-timestamp header is not Unix seconds"))?;
    if seconds.abs_diff(context.now_ms / 1000) > TOLERANCE_SECS {
        return Err(webhook::forged(
            "the notification's timestamp is outside the tolerance",
        ));
    }
    let signature = request
        .header(SIGNATURE_HEADER)
        .and_then(|s| hex::decode(s.trim()).ok())
        .ok_or_else(|| {
            webhook::forged("the notification has no readable x-ideal-signature header")
        })?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|_| webhook::forged("the signature does not verify"))?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&signature)
        .map_err(|_| webhook::forged("the notification's HMAC signature does not verify"))?;
    let document: Value = serde_json::from_slice(body).map_err(|_| unreadable())?;
    let notification = read(&document).ok_or_else(unreadable)?;
    Ok(Webhook {
        notifications: notification.into_iter().collect(),
        response: webhook::acknowledged(),
    })
}

fn unreadable() -> Refusal {
    webhook::unreadable("an iDEAL notification")
}

/// The notification in `document`: `None` when it is malformed, `Some(None)` when it reports
/// nothing final.
fn read(document: &Value) -> Option<Option<Notification>> {
    let event_id = text(document, "notificationId")?;
    let kind = text(document, "type")?;
    let transaction = text(document, "transactionId")?;
    let status = text(document, "status")?;
    let merchant_reference = match document.get("reference") {
        None | Some(Value::Null) => None,
        Some(r) => Some(r.as_str()?.to_string()).filter(|r| !r.is_empty()),
    };
    let amount = match document.get("amount") {
        None | Some(Value::Null) => None,
        Some(raw) => {
            let code = currency::normalise(text(document, "currency").unwrap_or("EUR"))?;
            let minor = decimal_amount(raw, &code).ok()?;
            Some(Money {
                minor,
                currency: code,
            })
        }
    };
    let (operation, table) = match kind {
        "transaction.status" => (Operation::Status, codes::TRANSACTION_STATUSES),
        "refund.status" => {
            text(document, "refundId")?;
            (Operation::Refund, codes::REFUND_STATUSES)
        }
        _ => return Some(None),
    };
    let status = match codes::meaning(table, status) {
        Some(Meaning::Approved) => OutcomeStatus::Approved,
        Some(Meaning::Declined(code, kind)) => OutcomeStatus::Declined(Decline {
            code: code.into(),
            provider_code: status.into(),
            kind,
            message: format!("the iDEAL {} ended with status {status}", noun(operation)),
        }),
        Some(Meaning::Open) | Some(Meaning::Pending) | None => return Some(None),
    };
    // A refund's amount is what this change refunded: without one it cannot be applied.
    if operation == Operation::Refund && amount.is_none() {
        return None;
    }
    Some(Some(Notification {
        event_id: event_id.into(),
        operation,
        outcome: Outcome {
            status,
            provider_reference: Some(transaction.into()),
            amount,
        },
        merchant_reference,
    }))
}

fn noun(operation: Operation) -> &'static str {
    match operation {
        Operation::Refund => "refund",
        _ => "payment",
    }
}

/// The `x-ideal-signature` value for a delivery at `timestamp` (Unix seconds); for tests and
/// tools.
pub fn sign(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use payproxy_plugin_sdk::payment::DeclineKind;
    use serde_json::json;

    const SECRET: &str = "ideal-webhook-secret";
    const NOW: u64 = 1_700_000_000;

    fn context() -> Context {
        Context {
            provider: "ideal-nl".into(),
            credentials: vec![
                ("api_key".into(), "k".into()),
                (WEBHOOK_SECRET.into(), SECRET.into()),
            ],
            now_ms: NOW * 1000 + 500,
            idempotency_key: String::new(),
        }
    }

    fn request(body: &[u8], timestamp: Option<u64>, signature: Option<String>) -> HttpRequest {
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        headers.extend(timestamp.map(|t| (TIMESTAMP_HEADER.to_string(), t.to_string())));
        headers.extend(signature.map(|s| (SIGNATURE_HEADER.to_string(), s)));
        HttpRequest {
            method: "POST".into(),
            path: "/webhooks/ideal-nl".into(),
            query: None,
            headers,
            body: Some(body.to_vec()),
        }
    }

    fn signed_at(body: &Value, at: u64) -> HttpRequest {
        let bytes = serde_json::to_vec(body).unwrap();
        request(&bytes, Some(at), Some(sign(SECRET, at, &bytes)))
    }

    fn signed(body: &Value) -> HttpRequest {
        signed_at(body, NOW - 10)
    }

    fn transaction(status: &str) -> Value {
        json!({
            "notificationId": format!("ntf_tr_1_{status}"),
            "type": "transaction.status",
            "createdAt": "2023-11-14T22:13:10Z",
            "transactionId": "tr_idealnl_1",
            "status": status,
            "amount": "10.00",
            "currency": "EUR",
            "reference": "order-1"
        })
    }

    fn one(body: &Value) -> Notification {
        let mut webhook = decode(&signed(body), &context()).unwrap();
        assert_eq!(webhook.response.status, 200);
        assert_eq!(webhook.notifications.len(), 1);
        webhook.notifications.remove(0)
    }

    #[test]
    fn a_successful_transaction_is_approved() {
        let n = one(&transaction("success"));
        assert_eq!(n.event_id, "ntf_tr_1_success");
        assert_eq!(n.operation, Operation::Status);
        assert_eq!(n.outcome.status, OutcomeStatus::Approved);
        assert_eq!(
            n.outcome.provider_reference.as_deref(),
            Some("tr_idealnl_1")
        );
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
    fn unpaid_transactions_are_declined() {
        for (status, kind) in [
            ("failure", DeclineKind::Soft),
            ("expired", DeclineKind::Hard),
            ("cancelled", DeclineKind::Hard),
        ] {
            let n = one(&transaction(status));
            assert_eq!(n.operation, Operation::Status);
            match n.outcome.status {
                OutcomeStatus::Declined(d) => {
                    assert_eq!(d.code, "generic_decline");
                    assert_eq!(d.provider_code, status);
                    assert_eq!(d.kind, kind);
                }
                other => panic!("{status}: {other:?}"),
            }
        }
    }

    #[test]
    fn refunds() {
        let refund = |status: &str| {
            json!({
                "notificationId": format!("ntf_rf_1_{status}"),
                "type": "refund.status",
                "transactionId": "tr_idealnl_1",
                "refundId": "rf_idealnl_1",
                "status": status,
                "amount": "2.50",
                "currency": "EUR",
                "reference": "order-1"
            })
        };
        let n = one(&refund("success"));
        assert_eq!(n.operation, Operation::Refund);
        assert_eq!(n.outcome.status, OutcomeStatus::Approved);
        assert_eq!(
            n.outcome.provider_reference.as_deref(),
            Some("tr_idealnl_1")
        );
        assert_eq!(n.outcome.amount.map(|m| m.minor), Some(250));
        let n = one(&refund("failure"));
        assert!(matches!(n.outcome.status, OutcomeStatus::Declined(_)));
        let webhook = decode(&signed(&refund("pending")), &context()).unwrap();
        assert!(webhook.notifications.is_empty());
    }

    #[test]
    fn open_and_unknown_types_are_left_out() {
        let webhook = decode(&signed(&transaction("open")), &context()).unwrap();
        assert!(webhook.notifications.is_empty());
        let mut body = transaction("success");
        body["type"] = "mandate.status".into();
        assert!(decode(&signed(&body), &context())
            .unwrap()
            .notifications
            .is_empty());
    }

    #[test]
    fn forged_notifications_are_401() {
        let bytes = serde_json::to_vec(&transaction("success")).unwrap();
        let at = NOW - 10;
        for (timestamp, signature) in [
            (None, Some(sign(SECRET, at, &bytes))),
            (Some(at), None),
            (Some(at), Some("not hex".to_string())),
            (Some(at), Some(sign("another-secret", at, &bytes))),
            // Signed for another moment than the header says.
            (Some(at), Some(sign(SECRET, at + 1, &bytes))),
        ] {
            let refusal = decode(&request(&bytes, timestamp, signature), &context()).unwrap_err();
            assert_eq!(
                (refusal.status, refusal.code.as_str()),
                (401, "invalid_signature")
            );
        }
    }

    #[test]
    fn stale_and_future_timestamps_are_401() {
        let body = transaction("success");
        for at in [NOW - 301, NOW + 301] {
            let refusal = decode(&signed_at(&body, at), &context()).unwrap_err();
            assert_eq!(refusal.status, 401, "{at}");
        }
        for at in [NOW - 300, NOW + 300] {
            assert!(decode(&signed_at(&body, at), &context()).is_ok(), "{at}");
        }
    }

    #[test]
    fn unreadable_notifications_are_400_without_echo() {
        let mut no_id = transaction("success");
        no_id.as_object_mut().unwrap().remove("notificationId");
        let mut bad_amount = transaction("success");
        bad_amount["amount"] = "10.001".into();
        let mut refund_without_amount = transaction("success");
        refund_without_amount["type"] = "refund.status".into();
        refund_without_amount["refundId"] = "rf_1".into();
        refund_without_amount
            .as_object_mut()
            .unwrap()
            .remove("amount");
        for body in [no_id, bad_amount, refund_without_amount, json!([1, 2])] {
            let refusal = decode(&signed(&body), &context()).unwrap_err();
            assert_eq!(
                (refusal.status, refusal.code.as_str()),
                (400, "invalid_notification")
            );
            assert!(!refusal.message.contains("tr_idealnl_1"));
        }
    }

    #[test]
    fn a_missing_secret_is_a_misconfiguration() {
        let mut context = context();
        context.credentials.retain(|(k, _)| k != WEBHOOK_SECRET);
        let refusal = decode(&signed(&transaction("success")), &context).unwrap_err();
        assert_eq!(refusal.status, 500);
    }
}
