//! GrabPay transaction status webhooks → verified, canonical notifications (`decode-webhook`).
//!
//! GrabPay posts one JSON notification per final change of a charge or a follow-up:
//!
//! ```json
//! {"txType": "payment", "partnerTxID": "…", "partnerGroupTxID": "order-1", "txID": "grab_…",
//!  "status": "success", "amount": 1000, "currency": "SGD", "updatedAt": 1700000000}
//! {"txType": "refund", "partnerTxID": "…", "partnerGroupTxID": "order-1", "txID": "gpre_…",
//!  "originTxID": "grab_…", "status": "success", "amount": 500, "currency": "SGD", "updatedAt": …}
//! ```
//!
//! (`txType` `payment`, `capture`, `cancel` or `refund`; `status` `success`, `authorised`,
//! `failed`, `cancelled` or `pending`; `code` and `reason` with `failed`) and expects any 2xx
//! back (this dialect answers 200 with an empty body).
//!
//! # Verification
//!
//! The same HMAC-SHA256 scheme as GrabPay's requests ([`crate::signing`]), keyed with the
//! provider's `partner_secret`: `date` (IMF-fixdate) within [`TOLERANCE_SECS`] of
//! `context.now_ms`, and `authorization: <partner_id>:<base64 HMAC-SHA256(partner_secret,
//! "POST\n<content-type>\n<date>\n<request path>\n<base64 SHA-256(raw body)>\n")>`, the
//! partner id being this provider's `partner_id`, compared in constant time. Anything else
//! is refused 401 `invalid_signature`; a verified body that is not such a notification 400
//! `invalid_notification`. Messages never repeat the body.
//!
//! # Mapping
//!
//! | txType    | status                   | operation | outcome                                     |
//! |-----------|--------------------------|-----------|---------------------------------------------|
//! | `payment` | `success`, `authorised`  | status    | approved, `amount`                          |
//! | `payment` | `failed`                 | status    | declined, `code` through [`crate::mapping`] |
//! | `payment` | `cancelled`              | status    | declined `generic_decline`, hard            |
//! | `capture` | `success` / `failed`     | capture   | approved, `amount` / declined               |
//! | `cancel`  | `success` / `failed`     | void      | approved / declined                         |
//! | `refund`  | `success` / `failed`     | refund    | approved, the refunded `amount` / declined  |
//! | anything else (`pending`, other types) | | — | left out (accepted, verified)            |
//!
//! The reference is the charge's `txID` (what [`crate::decode`] gives for the charge's
//! answer): `originTxID` when the notification has one (refunds, whose own `txID` is the
//! refund's), else `txID`. The merchant reference is `partnerGroupTxID`. Event id:
//! `<txID>:<txType>:<status>` (GrabPay's notifications have no id of their own).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use payproxy_plugin_sdk::currency;
use payproxy_plugin_sdk::helpers::decode::text;
use payproxy_plugin_sdk::helpers::webhook;
use payproxy_plugin_sdk::payment::{
    Context, Decline, DeclineKind, HttpRequest, Money, Notification, Operation, Outcome,
    OutcomeStatus, Refusal, Webhook,
};
use serde_json::Value;
use sha2::Sha256;

use crate::mapping;
use crate::signing::{self, Signed};

/// Largest accepted distance between `date` and the host's clock.
pub const TOLERANCE_SECS: u64 = 300;

/// Verify and decode one notification request.
pub fn decode(request: &HttpRequest, context: &Context) -> Result<Webhook, Refusal> {
    let partner_id = context.required_credential("partner_id")?;
    let secret = context.required_credential("partner_secret")?;
    let body = request.body.as_deref().unwrap_or_default();
    let date = request
        .header("date")
        .ok_or_else(|| webhook::forged("the notification has no date header"))?;
    let seconds = signing::parse_imf_fixdate(date.trim())
        .ok_or_else(|| webhook::forged("the date header is not an IMF-fixdate"))?;
    if seconds.abs_diff(context.now_ms / 1000) > TOLERANCE_SECS {
        return Err(webhook::forged(
            "the notification's date is outside the tolerance",
        ));
    }
    let (sender, signature) = request
        .header("authorization")
        .and_then(|a| a.split_once(':'))
        .ok_or_else(|| webhook::forged("the notification has no readable authorization header"))?;
    if sender.trim() != partner_id {
        return Err(webhook::forged(
            "the notification is not from this partner id",
        ));
    }
    let signature = STANDARD
        .decode(signature.trim())
        .map_err(|_| webhook::forged("the notification's signature is not base64"))?;
    let signed = Signed {
        method: &request.method.to_ascii_uppercase(),
        content_type: request.header("content-type").unwrap_or_default(),
        date,
        path: &request.path,
        body,
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|_| webhook::forged("the signature does not verify"))?;
    mac.update(signed.string_to_sign().as_bytes());
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
    webhook::unreadable("a GrabPay notification")
}

fn optional<'a>(value: &'a Value, key: &str) -> Option<Option<&'a str>> {
    match value.get(key) {
        None | Some(Value::Null) => Some(None),
        Some(v) => Some(Some(v.as_str()?).filter(|s| !s.is_empty())),
    }
}

fn declined(code: &str, provider_code: &str, kind: DeclineKind, message: &str) -> OutcomeStatus {
    OutcomeStatus::Declined(Decline {
        code: code.into(),
        provider_code: provider_code.into(),
        kind,
        message: message.chars().take(200).collect(),
    })
}

/// The notification in `document`: `None` when it is malformed, `Some(None)` when it reports
/// nothing final.
fn read(document: &Value) -> Option<Option<Notification>> {
    let tx_type = text(document, "txType")?;
    let tx_id = text(document, "txID")?;
    let status = text(document, "status")?;
    let origin = optional(document, "originTxID")?;
    let merchant_reference = optional(document, "partnerGroupTxID")?.map(str::to_string);
    let amount = match (document.get("amount"), document.get("currency")) {
        (None | Some(Value::Null), None | Some(Value::Null)) => None,
        (Some(minor), Some(code)) => Some(Money {
            minor: minor.as_i64()?,
            currency: currency::normalise(code.as_str()?)?,
        }),
        _ => return None,
    };
    let operation = match tx_type {
        "payment" => Operation::Status,
        "capture" => Operation::Capture,
        "cancel" => Operation::Void,
        "refund" => Operation::Refund,
        _ => return Some(None),
    };
    let failed = || {
        let code = text(document, "code").unwrap_or("failed");
        let mapping = mapping::decline_for(code);
        let reason = text(document, "reason").unwrap_or("declined by GrabPay");
        declined(mapping.code, code, mapping.kind, reason)
    };
    let outcome = match (operation, status) {
        (Operation::Status, "success" | "authorised") => OutcomeStatus::Approved,
        (Operation::Status, "cancelled") => declined(
            "generic_decline",
            status,
            DeclineKind::Hard,
            "the GrabPay charge was cancelled",
        ),
        (_, "success") => OutcomeStatus::Approved,
        (_, "failed") => failed(),
        _ => return Some(None),
    };
    // A refund's amount is what this change refunded: without one it cannot be applied.
    if operation == Operation::Refund && amount.is_none() {
        return None;
    }
    // A refund's own txID is the refund's: its charge must be named.
    if operation == Operation::Refund && origin.is_none() {
        return None;
    }
    Some(Some(Notification {
        event_id: format!("{tx_id}:{tx_type}:{status}"),
        operation,
        outcome: Outcome {
            status: outcome,
            provider_reference: Some(origin.unwrap_or(tx_id).into()),
            amount,
        },
        merchant_reference,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;
    const PATH: &str = "/webhooks/grab-sg";
    const SECRET: &str = "sim-secret-grab-sg";

    fn context() -> Context {
        Context {
            provider: "grab-sg".into(),
            credentials: vec![
                ("partner_id".into(), "sim-partner-grab-sg".into()),
                ("partner_secret".into(), SECRET.into()),
                ("merchant_id".into(), "m".into()),
            ],
            now_ms: NOW * 1000 + 999,
            idempotency_key: String::new(),
        }
    }

    fn request(body: &[u8], date: &str, authorization: Option<String>) -> HttpRequest {
        let mut headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("date".to_string(), date.to_string()),
        ];
        headers.extend(authorization.map(|a| ("authorization".to_string(), a)));
        HttpRequest {
            method: "POST".into(),
            path: PATH.into(),
            query: None,
            headers,
            body: Some(body.to_vec()),
        }
    }

    fn authorization(secret: &str, date: &str, path: &str, body: &[u8]) -> String {
        let signed = Signed {
            method: "POST",
            content_type: "application/json",
            date,
            path,
            body,
        };
        format!(
            "sim-partner-grab-sg:{}",
            signed.signature(secret.as_bytes())
        )
    }

    fn signed_at(body: &Value, at: u64) -> HttpRequest {
        let bytes = serde_json::to_vec(body).unwrap();
        let date = signing::imf_fixdate(at * 1000);
        let auth = authorization(SECRET, &date, PATH, &bytes);
        request(&bytes, &date, Some(auth))
    }

    fn signed(body: &Value) -> HttpRequest {
        signed_at(body, NOW - 3)
    }

    fn payment(status: &str) -> Value {
        json!({"txType": "payment", "partnerTxID": "p1", "partnerGroupTxID": "order-1",
               "txID": "grab_grabsg_1", "status": status, "amount": 1000, "currency": "SGD",
               "updatedAt": NOW})
    }

    fn one(body: &Value) -> Notification {
        let mut webhook = decode(&signed(body), &context()).unwrap();
        assert_eq!(webhook.response.status, 200);
        assert_eq!(webhook.notifications.len(), 1);
        webhook.notifications.remove(0)
    }

    #[test]
    fn a_successful_payment_is_approved() {
        let n = one(&payment("success"));
        assert_eq!(n.event_id, "grab_grabsg_1:payment:success");
        assert_eq!(n.operation, Operation::Status);
        assert_eq!(n.outcome.status, OutcomeStatus::Approved);
        assert_eq!(
            n.outcome.provider_reference.as_deref(),
            Some("grab_grabsg_1")
        );
        assert_eq!(
            n.outcome.amount,
            Some(Money {
                minor: 1000,
                currency: "SGD".into()
            })
        );
        assert_eq!(n.merchant_reference.as_deref(), Some("order-1"));
        assert_eq!(
            one(&payment("authorised")).outcome.status,
            OutcomeStatus::Approved
        );
    }

    #[test]
    fn failed_and_cancelled_payments_are_declined() {
        let mut body = payment("failed");
        body["code"] = "insufficient_balance".into();
        body["reason"] = "wallet balance too low".into();
        match one(&body).outcome.status {
            OutcomeStatus::Declined(d) => {
                assert_eq!(d.code, "insufficient_funds");
                assert_eq!(d.provider_code, "insufficient_balance");
                assert_eq!(d.kind, DeclineKind::Soft);
            }
            other => panic!("{other:?}"),
        }
        match one(&payment("failed")).outcome.status {
            OutcomeStatus::Declined(d) => {
                assert_eq!(
                    (d.code.as_str(), d.provider_code.as_str()),
                    ("generic_decline", "failed")
                )
            }
            other => panic!("{other:?}"),
        }
        match one(&payment("cancelled")).outcome.status {
            OutcomeStatus::Declined(d) => assert_eq!(d.provider_code, "cancelled"),
            other => panic!("{other:?}"),
        }
        let webhook = decode(&signed(&payment("pending")), &context()).unwrap();
        assert!(webhook.notifications.is_empty());
    }

    #[test]
    fn follow_ups() {
        let refund = json!({"txType": "refund", "partnerTxID": "p2", "partnerGroupTxID": "order-1",
                            "txID": "gpre_grabsg_1", "originTxID": "grab_grabsg_1",
                            "status": "success", "amount": 400, "currency": "SGD"});
        let n = one(&refund);
        assert_eq!(n.event_id, "gpre_grabsg_1:refund:success");
        assert_eq!(n.operation, Operation::Refund);
        assert_eq!(n.outcome.status, OutcomeStatus::Approved);
        assert_eq!(
            n.outcome.provider_reference.as_deref(),
            Some("grab_grabsg_1")
        );
        assert_eq!(n.outcome.amount.map(|m| m.minor), Some(400));
        let mut capture = payment("success");
        capture["txType"] = "capture".into();
        assert_eq!(one(&capture).operation, Operation::Capture);
        let mut cancel = payment("success");
        cancel["txType"] = "cancel".into();
        assert_eq!(one(&cancel).operation, Operation::Void);
        let mut failed_refund = refund.clone();
        failed_refund["status"] = "failed".into();
        assert!(matches!(
            one(&failed_refund).outcome.status,
            OutcomeStatus::Declined(_)
        ));
    }

    #[test]
    fn forged_notifications_are_401() {
        let bytes = serde_json::to_vec(&payment("success")).unwrap();
        let date = signing::imf_fixdate((NOW - 3) * 1000);
        let good = authorization(SECRET, &date, PATH, &bytes);
        let other_partner = good.replace("sim-partner-grab-sg", "sim-partner-other");
        for auth in [
            None,
            Some("no-colon".to_string()),
            Some("sim-partner-grab-sg:%%%".to_string()),
            Some(other_partner),
            Some(authorization("another-secret", &date, PATH, &bytes)),
            Some(authorization(SECRET, &date, "/webhooks/other", &bytes)),
        ] {
            let refusal = decode(&request(&bytes, &date, auth), &context()).unwrap_err();
            assert_eq!(
                (refusal.status, refusal.code.as_str()),
                (401, "invalid_signature")
            );
        }
        for bad_date in ["", "yesterday", &signing::imf_fixdate((NOW - 2) * 1000)] {
            let refusal =
                decode(&request(&bytes, bad_date, Some(good.clone())), &context()).unwrap_err();
            assert_eq!(refusal.status, 401, "{bad_date}");
        }
    }

    #[test]
    fn stale_and_future_dates_are_401() {
        for at in [NOW - 301, NOW + 301] {
            let refusal = decode(&signed_at(&payment("success"), at), &context()).unwrap_err();
            assert_eq!(refusal.status, 401, "{at}");
        }
        assert!(decode(&signed_at(&payment("success"), NOW + 300), &context()).is_ok());
    }

    #[test]
    fn unreadable_notifications_are_400_without_echo() {
        let mut no_tx = payment("success");
        no_tx.as_object_mut().unwrap().remove("txID");
        let mut text_amount = payment("success");
        text_amount["amount"] = "10.00".into();
        let mut refund_without_origin = payment("success");
        refund_without_origin["txType"] = "refund".into();
        for body in [
            no_tx,
            text_amount,
            refund_without_origin,
            json!("grab_grabsg_1"),
        ] {
            let refusal = decode(&signed(&body), &context()).unwrap_err();
            assert_eq!(
                (refusal.status, refusal.code.as_str()),
                (400, "invalid_notification")
            );
            assert!(!refusal.message.contains("grab_grabsg_1"));
        }
    }

    #[test]
    fn missing_credentials_are_a_misconfiguration() {
        let mut context = context();
        context.credentials.retain(|(k, _)| k != "partner_secret");
        let refusal = decode(&signed(&payment("success")), &context).unwrap_err();
        assert_eq!(refusal.status, 500);
    }
}
