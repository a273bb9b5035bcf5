//! DANA finish notifications → verified, canonical notifications (`decode-webhook`).
//!
//! DANA posts a JSON `finishNotify` when an order reaches a final status, and another when a
//! refund finishes:
//!
//! ```json
//! {"request": {"head": {"version": "2.0", "function": "dana.acquiring.order.finishNotify",
//!    "clientId": "…", "reqTime": "2023-11-15T05:13:20+07:00", "reqMsgId": "…"},
//!  "body": {"merchantId": "…", "acquirementId": "dana_…", "merchantTransId": "order-1",
//!    "acquirementStatus": "SUCCESS", "orderAmount": {"value": "150000.00", "currency": "IDR"},
//!    "createdTime": "…", "finishedTime": "…"}}}
//! {"request": {"head": {…, "function": "dana.acquiring.refund.finishNotify", …},
//!  "body": {"merchantId": "…", "acquirementId": "dana_…", "merchantTransId": "order-1",
//!    "refundId": "danare_…", "refundStatus": "SUCCESS", "refundAmount": {"value", "currency"}}}}
//! ```
//!
//! and expects the finishNotify answer back: `{"response": {"head": {"version": "2.0",
//! "function": <the same>, "clientId"?, "respTime", "reqMsgId"}, "body": {"resultInfo":
//! {"resultStatus": "S", "resultCodeId": "00000000", "resultCode": "SUCCESS", "resultMsg":
//! "success"}}}}`.
//!
//! # Verification
//!
//! DANA's SNAP scheme, with a shared secret in place of its RSA keys: `x-timestamp` is the
//! delivery time as ISO-8601 with offset (`2023-11-15T05:13:20+07:00`) and `x-signature` is
//! base64 of HMAC-SHA256, keyed with the provider's credential `webhook_secret`, over
//! `POST:<request path>:<lower-case hex SHA-256 of the raw body>:<x-timestamp>`, compared in
//! constant time. A timestamp more than [`TOLERANCE_SECS`] from `context.now_ms` (either way),
//! a missing header or a wrong signature is refused 401 `invalid_signature`; a verified body
//! that is not such a notification 400 `invalid_notification`. Messages never repeat the body.
//!
//! # Mapping
//!
//! | function / status                          | operation | outcome                              |
//! |--------------------------------------------|-----------|--------------------------------------|
//! | order `SUCCESS`                            | status    | approved, `orderAmount`              |
//! | order `CLOSED` (timed out) / `CANCELLED`   | status    | declined `generic_decline`, hard, provider code the status |
//! | order `INIT` / `PAYING`                    | —         | left out (not final)                 |
//! | refund `SUCCESS`                           | refund    | approved, `refundAmount`             |
//! | refund `FAIL`                              | refund    | declined `generic_decline`, hard     |
//! | other functions or statuses                | —         | left out (accepted, verified)        |
//!
//! The reference is `acquirementId` (what [`crate::decode`] gives for the order's create
//! answer); the merchant reference `merchantTransId`. Event id: `<acquirementId>:<status>`
//! for orders, `<refundId>:<status>` for refunds (DANA's `reqMsgId` is per request, so the
//! change itself is the id).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use payproxy_plugin_sdk::currency;
use payproxy_plugin_sdk::helpers::decode::text;
use payproxy_plugin_sdk::helpers::webhook;
use payproxy_plugin_sdk::payment::{
    Context, Decline, DeclineKind, HttpRequest, HttpResponse, Money, Notification, Operation,
    Outcome, OutcomeStatus, Refusal, Webhook,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::time;

/// The credential keying the notifications' HMAC.
pub const WEBHOOK_SECRET: &str = "webhook_secret";
/// Delivery time, ISO-8601 with offset.
pub const TIMESTAMP_HEADER: &str = "x-timestamp";
/// Base64 HMAC-SHA256 of the string to sign.
pub const SIGNATURE_HEADER: &str = "x-signature";
/// Largest accepted distance between the timestamp and the host's clock.
pub const TOLERANCE_SECS: u64 = 300;
/// `<function>` of an order's finish notification.
pub const ORDER_FINISH: &str = "dana.acquiring.order.finishNotify";
/// `<function>` of a refund's finish notification.
pub const REFUND_FINISH: &str = "dana.acquiring.refund.finishNotify";

/// The string the signature covers: `POST:<path>:<hex SHA-256(body)>:<timestamp>`.
pub fn string_to_sign(method: &str, path: &str, body: &[u8], timestamp: &str) -> String {
    let digest = Sha256::digest(body);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}:{path}:{hex}:{timestamp}", method.to_ascii_uppercase())
}

/// The `x-signature` value; for tests and tools.
pub fn sign(secret: &str, path: &str, body: &[u8], timestamp: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(string_to_sign("POST", path, body, timestamp).as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Verify and decode one notification request.
pub fn decode(request: &HttpRequest, context: &Context) -> Result<Webhook, Refusal> {
    let secret = context.required_credential(WEBHOOK_SECRET)?;
    let body = request.body.as_deref().unwrap_or_default();
    let timestamp = request
        .header(TIMESTAMP_HEADER)
        .map(str::trim)
        .ok_or_else(|| webhook::forged("the notification has no x-timestamp header"))?;
    let seconds = time::parse_iso(timestamp)
        .ok_or_else(|| webhook::forged("the x-timestamp header is not an ISO-8601 time"))?;
    if seconds.abs_diff(context.now_ms / 1000) > TOLERANCE_SECS {
        return Err(webhook::forged(
            "the notification's timestamp is outside the tolerance",
        ));
    }
    let signature = request
        .header(SIGNATURE_HEADER)
        .and_then(|s| STANDARD.decode(s.trim()).ok())
        .ok_or_else(|| webhook::forged("the notification has no readable x-signature header"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|_| webhook::forged("the signature does not verify"))?;
    mac.update(string_to_sign(&request.method, &request.path, body, timestamp).as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| webhook::forged("the notification's HMAC signature does not verify"))?;
    let document: Value = serde_json::from_slice(body).map_err(|_| unreadable())?;
    let (head, notification) = read(&document).ok_or_else(unreadable)?;
    Ok(Webhook {
        notifications: notification.into_iter().collect(),
        response: answer(&head, context.now_ms),
    })
}

fn unreadable() -> Refusal {
    webhook::unreadable("a DANA finish notification")
}

/// What the answer echoes of the request head.
struct Head {
    function: String,
    client_id: Option<String>,
    req_msg_id: String,
}

/// The finishNotify answer: success, echoing function, client and message id.
fn answer(head: &Head, now_ms: u64) -> HttpResponse {
    let mut response_head = json!({
        "version": "2.0",
        "function": head.function,
        "respTime": time::req_time(now_ms),
        "reqMsgId": head.req_msg_id,
    });
    if let Some(client) = &head.client_id {
        response_head["clientId"] = client.as_str().into();
    }
    let body = json!({"response": {
        "head": response_head,
        "body": {"resultInfo": {
            "resultStatus": "S",
            "resultCodeId": "00000000",
            "resultCode": "SUCCESS",
            "resultMsg": "success"
        }}
    }});
    HttpResponse::json(200, &body)
}

fn optional(value: &Value, key: &str) -> Option<Option<String>> {
    match value.get(key) {
        None | Some(Value::Null) => Some(None),
        Some(v) => Some(Some(v.as_str()?.to_string()).filter(|s| !s.is_empty())),
    }
}

/// `{"value": "150000.00", "currency": "IDR"}`, exact for the currency.
fn money(value: &Value) -> Option<Money> {
    let code = currency::normalise(text(value, "currency")?)?;
    let minor = currency::from_decimal(text(value, "value")?, &code).ok()?;
    Some(Money {
        minor,
        currency: code,
    })
}

fn declined(status: &str, message: &str) -> OutcomeStatus {
    OutcomeStatus::Declined(Decline {
        code: "generic_decline".into(),
        provider_code: status.into(),
        kind: DeclineKind::Hard,
        message: message.into(),
    })
}

/// The head and notification of `document`: `None` when it is malformed, no notification
/// when it reports nothing final.
fn read(document: &Value) -> Option<(Head, Option<Notification>)> {
    let request = document.get("request")?;
    let head = request.get("head")?;
    let body = request.get("body").filter(|b| b.is_object())?;
    let head = Head {
        function: text(head, "function")?.to_string(),
        client_id: optional(head, "clientId")?,
        req_msg_id: text(head, "reqMsgId")?.to_string(),
    };
    let acquirement = text(body, "acquirementId")?;
    let merchant_reference = optional(body, "merchantTransId")?;
    let (event_id, operation, status, amount) = match head.function.as_str() {
        ORDER_FINISH => {
            let status = text(body, "acquirementStatus")?;
            let amount = match body.get("orderAmount") {
                None | Some(Value::Null) => None,
                Some(a) => Some(money(a)?),
            };
            let outcome = match status {
                "SUCCESS" => OutcomeStatus::Approved,
                "CLOSED" => declined(status, "the DANA order closed without payment"),
                "CANCELLED" => declined(status, "the DANA order was cancelled"),
                _ => return Some((head, None)),
            };
            (
                format!("{acquirement}:{status}"),
                Operation::Status,
                outcome,
                amount,
            )
        }
        REFUND_FINISH => {
            let refund = text(body, "refundId")?;
            let status = text(body, "refundStatus")?;
            let amount = money(body.get("refundAmount")?)?;
            let outcome = match status {
                "SUCCESS" => OutcomeStatus::Approved,
                "FAIL" => declined(status, "the DANA refund failed"),
                _ => return Some((head, None)),
            };
            (
                format!("{refund}:{status}"),
                Operation::Refund,
                outcome,
                Some(amount),
            )
        }
        _ => return Some((head, None)),
    };
    let notification = Notification {
        event_id,
        operation,
        outcome: Outcome {
            status,
            provider_reference: Some(acquirement.into()),
            amount,
        },
        merchant_reference,
    };
    Some((head, Some(notification)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "dana-webhook-secret";
    const PATH: &str = "/webhooks/dana-id";
    const NOW: u64 = 1_700_000_000;

    fn context() -> Context {
        Context {
            provider: "dana-id".into(),
            credentials: vec![
                ("client_id".into(), "c".into()),
                ("merchant_id".into(), "m".into()),
                (WEBHOOK_SECRET.into(), SECRET.into()),
            ],
            now_ms: NOW * 1000 + 250,
            idempotency_key: String::new(),
        }
    }

    fn request(body: &[u8], timestamp: Option<&str>, signature: Option<String>) -> HttpRequest {
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        headers.extend(timestamp.map(|t| (TIMESTAMP_HEADER.to_string(), t.to_string())));
        headers.extend(signature.map(|s| (SIGNATURE_HEADER.to_string(), s)));
        HttpRequest {
            method: "POST".into(),
            path: PATH.into(),
            query: None,
            headers,
            body: Some(body.to_vec()),
        }
    }

    fn signed_at(body: &Value, at: u64) -> HttpRequest {
        let bytes = serde_json::to_vec(body).unwrap();
        let timestamp = time::req_time(at * 1000);
        let signature = sign(SECRET, PATH, &bytes, &timestamp);
        request(&bytes, Some(&timestamp), Some(signature))
    }

    fn signed(body: &Value) -> HttpRequest {
        signed_at(body, NOW - 5)
    }

    fn order(status: &str) -> Value {
        json!({"request": {
            "head": {"version": "2.0", "function": ORDER_FINISH, "clientId": "c",
                     "reqTime": "2023-11-15T05:13:15+07:00", "reqMsgId": "msg-1"},
            "body": {"merchantId": "m", "acquirementId": "dana_danaid_1",
                     "merchantTransId": "order-1", "acquirementStatus": status,
                     "orderAmount": {"value": "150000.00", "currency": "IDR"},
                     "createdTime": "2023-11-15T05:10:00+07:00",
                     "finishedTime": "2023-11-15T05:13:10+07:00"}
        }})
    }

    fn refund(status: &str) -> Value {
        json!({"request": {
            "head": {"version": "2.0", "function": REFUND_FINISH, "clientId": "c",
                     "reqTime": "2023-11-15T05:13:15+07:00", "reqMsgId": "msg-2"},
            "body": {"merchantId": "m", "acquirementId": "dana_danaid_1",
                     "merchantTransId": "order-1", "refundId": "danare_danaid_1",
                     "refundStatus": status,
                     "refundAmount": {"value": "50000.00", "currency": "IDR"}}
        }})
    }

    fn one(body: &Value) -> Notification {
        let mut webhook = decode(&signed(body), &context()).unwrap();
        assert_eq!(webhook.notifications.len(), 1);
        webhook.notifications.remove(0)
    }

    #[test]
    fn a_paid_order_is_approved_and_answered() {
        let webhook = decode(&signed(&order("SUCCESS")), &context()).unwrap();
        let answer: Value = serde_json::from_slice(&webhook.response.body).unwrap();
        assert_eq!(webhook.response.status, 200);
        assert_eq!(answer["response"]["head"]["function"], ORDER_FINISH);
        assert_eq!(answer["response"]["head"]["reqMsgId"], "msg-1");
        assert_eq!(
            answer["response"]["body"]["resultInfo"]["resultStatus"],
            "S"
        );
        let n = &webhook.notifications[0];
        assert_eq!(n.event_id, "dana_danaid_1:SUCCESS");
        assert_eq!(n.operation, Operation::Status);
        assert_eq!(n.outcome.status, OutcomeStatus::Approved);
        assert_eq!(
            n.outcome.provider_reference.as_deref(),
            Some("dana_danaid_1")
        );
        assert_eq!(
            n.outcome.amount,
            Some(Money {
                minor: 15_000_000,
                currency: "IDR".into()
            })
        );
        assert_eq!(n.merchant_reference.as_deref(), Some("order-1"));
    }

    #[test]
    fn closed_and_cancelled_orders_are_declined() {
        for status in ["CLOSED", "CANCELLED"] {
            let n = one(&order(status));
            assert_eq!(n.event_id, format!("dana_danaid_1:{status}"));
            match n.outcome.status {
                OutcomeStatus::Declined(d) => {
                    assert_eq!(d.code, "generic_decline");
                    assert_eq!(d.provider_code, status);
                }
                other => panic!("{other:?}"),
            }
        }
        for status in ["INIT", "PAYING"] {
            let webhook = decode(&signed(&order(status)), &context()).unwrap();
            assert!(webhook.notifications.is_empty(), "{status}");
        }
    }

    #[test]
    fn refunds() {
        let n = one(&refund("SUCCESS"));
        assert_eq!(n.event_id, "danare_danaid_1:SUCCESS");
        assert_eq!(n.operation, Operation::Refund);
        assert_eq!(n.outcome.status, OutcomeStatus::Approved);
        assert_eq!(
            n.outcome.provider_reference.as_deref(),
            Some("dana_danaid_1")
        );
        assert_eq!(n.outcome.amount.map(|m| m.minor), Some(5_000_000));
        let n = one(&refund("FAIL"));
        assert!(matches!(n.outcome.status, OutcomeStatus::Declined(_)));
    }

    #[test]
    fn forged_notifications_are_401() {
        let bytes = serde_json::to_vec(&order("SUCCESS")).unwrap();
        let timestamp = time::req_time((NOW - 5) * 1000);
        let good = sign(SECRET, PATH, &bytes, &timestamp);
        for (t, signature) in [
            (None, Some(good.clone())),
            (Some(timestamp.as_str()), None),
            (Some(timestamp.as_str()), Some("%%%".to_string())),
            (
                Some(timestamp.as_str()),
                Some(sign("another", PATH, &bytes, &timestamp)),
            ),
            (
                Some(timestamp.as_str()),
                Some(sign(SECRET, "/webhooks/other", &bytes, &timestamp)),
            ),
            (Some("yesterday"), Some(good.clone())),
        ] {
            let refusal = decode(&request(&bytes, t, signature), &context()).unwrap_err();
            assert_eq!(
                (refusal.status, refusal.code.as_str()),
                (401, "invalid_signature")
            );
        }
        // The same signature with another timestamp in the header.
        let later = time::req_time((NOW - 4) * 1000);
        let refusal = decode(&request(&bytes, Some(&later), Some(good)), &context()).unwrap_err();
        assert_eq!(refusal.status, 401);
    }

    #[test]
    fn stale_and_future_timestamps_are_401() {
        for at in [NOW - 301, NOW + 301] {
            let refusal = decode(&signed_at(&order("SUCCESS"), at), &context()).unwrap_err();
            assert_eq!(refusal.status, 401, "{at}");
        }
        assert!(decode(&signed_at(&order("SUCCESS"), NOW - 300), &context()).is_ok());
    }

    #[test]
    fn unreadable_notifications_are_400_without_echo() {
        let mut no_id = order("SUCCESS");
        no_id["request"]["body"]
            .as_object_mut()
            .unwrap()
            .remove("acquirementId");
        let mut bad_amount = order("SUCCESS");
        bad_amount["request"]["body"]["orderAmount"]["value"] = "1.001".into();
        let mut refund_without_amount = refund("SUCCESS");
        refund_without_amount["request"]["body"]
            .as_object_mut()
            .unwrap()
            .remove("refundAmount");
        for body in [
            no_id,
            bad_amount,
            refund_without_amount,
            json!({"response": {}}),
        ] {
            let refusal = decode(&signed(&body), &context()).unwrap_err();
            assert_eq!(
                (refusal.status, refusal.code.as_str()),
                (400, "invalid_notification")
            );
            assert!(!refusal.message.contains("dana_danaid_1"));
        }
        let timestamp = time::req_time(NOW * 1000);
        let xml = b"<request/>";
        let signature = sign(SECRET, PATH, xml, &timestamp);
        let refusal =
            decode(&request(xml, Some(&timestamp), Some(signature)), &context()).unwrap_err();
        assert_eq!(refusal.status, 400);
    }

    #[test]
    fn a_missing_secret_is_a_misconfiguration() {
        let mut context = context();
        context.credentials.retain(|(k, _)| k != WEBHOOK_SECRET);
        let refusal = decode(&signed(&order("SUCCESS")), &context).unwrap_err();
        assert_eq!(refusal.status, 500);
    }
}
