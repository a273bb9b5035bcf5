//! Adyen standard notifications → verified, canonical notifications (`decode-webhook`).
//!
//! Adyen posts `{"live": "false", "notificationItems": [{"NotificationRequestItem": {…}}]}`
//! and expects `[accepted]` back. Every item carries `additionalData.hmacSignature`: base64 of
//! HMAC-SHA256, keyed with the hex-decoded credential `hmac_key`, over
//! `pspReference:originalReference:merchantAccountCode:merchantReference:value:currency:eventCode:success`
//! (empty strings for missing fields). Every item must verify (constant-time compare), else
//! the whole request is refused 401 `invalid_signature`; a body that is not such a document
//! is 400 `invalid_notification`. Refusal messages never repeat the body.
//!
//! | eventCode                       | operation | outcome                                           |
//! |---------------------------------|-----------|---------------------------------------------------|
//! | `AUTHORISATION` success `true`  | status    | approved, `amount`                                |
//! | `AUTHORISATION` success `false` | status    | declined, `reason` mapped like `refusalReason`    |
//! | `CAPTURE`                       | capture   | approved (`false`: declined)                      |
//! | `CAPTURE_FAILED`                | capture   | declined                                          |
//! | `REFUND`                        | refund    | approved with the refunded amount (`false`: declined, with it) |
//! | `REFUND_FAILED`                 | refund    | declined, with the refund's amount                |
//! | `CANCELLATION`                  | void      | approved (`false`: declined)                      |
//! | anything else                   | —         | left out (accepted, verified)                     |
//!
//! The outcome's reference is the payment's `pspReference` (what [`crate::decode`] gives for
//! the payment's answer): the item's `pspReference` for `AUTHORISATION`, its
//! `originalReference` for modifications (a modification without one is left out). The event
//! id is `pspReference:eventCode:success`, plus `:originalReference` when present: Adyen
//! redelivers the same item unchanged, and each modification has its own `pspReference`.

use base64::Engine;
use hmac::{Hmac, Mac};
use payproxy_plugin_sdk::currency;
use payproxy_plugin_sdk::helpers::webhook;
use payproxy_plugin_sdk::payment::{
    Context, Decline, DeclineKind, HttpRequest, HttpResponse, Money, Notification, Operation,
    Outcome, OutcomeStatus, Refusal, RefusalKind, Webhook,
};
use serde_json::Value;
use sha2::Sha256;

use crate::codes;

/// The credential holding the hex HMAC key of the notification webhook.
pub const HMAC_KEY: &str = "hmac_key";

/// Verify and decode one notification request.
pub fn decode(request: &HttpRequest, context: &Context) -> Result<Webhook, Refusal> {
    let key = context.required_credential(HMAC_KEY)?;
    let key = hex::decode(key.trim()).map_err(|_| Refusal {
        kind: RefusalKind::Unavailable,
        status: 500,
        code: "provider_misconfigured".into(),
        message: format!(
            "provider {}: credential {HMAC_KEY} is not hex",
            context.provider
        ),
    })?;
    let body = request.body.as_deref().unwrap_or_default();
    let document: Value = serde_json::from_slice(body).map_err(|_| unreadable())?;
    let items = document
        .get("notificationItems")
        .and_then(Value::as_array)
        .ok_or_else(unreadable)?;
    let items = items
        .iter()
        .map(|entry| entry.get("NotificationRequestItem").and_then(Item::read))
        .collect::<Option<Vec<Item>>>()
        .ok_or_else(unreadable)?;
    if !items.iter().all(|item| item.verifies(&key)) {
        return Err(webhook::forged(
            "the notification's HMAC signature does not verify",
        ));
    }
    Ok(Webhook {
        notifications: items.iter().filter_map(Item::notification).collect(),
        response: HttpResponse {
            status: 200,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: b"[accepted]".to_vec(),
        },
    })
}

fn unreadable() -> Refusal {
    webhook::unreadable("an Adyen notification")
}

/// The fields of one `NotificationRequestItem` that are signed or read.
#[derive(Debug)]
struct Item {
    psp: String,
    original: String,
    merchant_account: String,
    merchant_reference: String,
    /// `amount.value` as sent (digits), empty when absent.
    value: String,
    currency: String,
    event_code: String,
    success: String,
    reason: String,
    signature: String,
}

impl Item {
    /// `None` when a required field (`pspReference`, `eventCode`, `success`) is missing or a
    /// field has the wrong type.
    fn read(item: &Value) -> Option<Item> {
        let text = |key: &str| -> Option<String> {
            match item.get(key) {
                None | Some(Value::Null) => Some(String::new()),
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => None,
            }
        };
        let required = |key: &str| text(key).filter(|s| !s.is_empty());
        let amount = item.get("amount").filter(|a| !a.is_null());
        let value = match amount.map(|a| a.get("value")) {
            None | Some(None) => String::new(),
            Some(Some(v)) => v.as_i64()?.to_string(),
        };
        let currency = match amount.and_then(|a| a.get("currency")) {
            None => String::new(),
            Some(c) => c.as_str()?.to_owned(),
        };
        let success = required("success")?;
        if success != "true" && success != "false" {
            return None;
        }
        Some(Item {
            psp: required("pspReference")?,
            original: text("originalReference")?,
            merchant_account: text("merchantAccountCode")?,
            merchant_reference: text("merchantReference")?,
            value,
            currency,
            event_code: required("eventCode")?,
            success,
            reason: text("reason")?,
            signature: item
                .pointer("/additionalData/hmacSignature")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        })
    }

    fn signed(&self) -> String {
        [
            self.psp.as_str(),
            &self.original,
            &self.merchant_account,
            &self.merchant_reference,
            &self.value,
            &self.currency,
            &self.event_code,
            &self.success,
        ]
        .join(":")
    }

    /// Constant-time check of `hmacSignature`.
    fn verifies(&self, key: &[u8]) -> bool {
        let Ok(expected) = base64::engine::general_purpose::STANDARD.decode(&self.signature) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
            return false;
        };
        mac.update(self.signed().as_bytes());
        mac.verify_slice(&expected).is_ok()
    }

    /// The canonical notification, `None` for events payproxy does not track.
    fn notification(&self) -> Option<Notification> {
        let success = self.success == "true";
        let (operation, failed) = match self.event_code.as_str() {
            "AUTHORISATION" => (Operation::Status, false),
            "CAPTURE" => (Operation::Capture, false),
            "CAPTURE_FAILED" => (Operation::Capture, true),
            "REFUND" => (Operation::Refund, false),
            "REFUND_FAILED" => (Operation::Refund, true),
            "CANCELLATION" => (Operation::Void, false),
            _ => return None,
        };
        let reference = match operation {
            Operation::Status => self.psp.clone(),
            _ if self.original.is_empty() => return None,
            _ => self.original.clone(),
        };
        let status = if success && !failed {
            OutcomeStatus::Approved
        } else if operation == Operation::Status {
            let row = codes::refusal(reason_code(&self.reason));
            OutcomeStatus::Declined(Decline {
                code: row.code.into(),
                provider_code: if row.provider.is_empty() {
                    "Refused".into()
                } else {
                    row.provider.into()
                },
                kind: row.kind,
                message: row.message.into(),
            })
        } else {
            OutcomeStatus::Declined(Decline {
                code: "generic_decline".into(),
                provider_code: self.event_code.clone(),
                kind: DeclineKind::Hard,
                message: format!("the provider did not execute the {}", verb(operation)),
            })
        };
        let amount = match (&status, operation) {
            (OutcomeStatus::Approved, Operation::Void) => None,
            (OutcomeStatus::Approved, _) => self.money(),
            // Which refund was refused: payproxy counts one it made out again.
            (_, Operation::Refund) => self.money(),
            _ => None,
        };
        let mut event_id = format!("{}:{}:{}", self.psp, self.event_code, self.success);
        if !self.original.is_empty() {
            event_id.push(':');
            event_id.push_str(&self.original);
        }
        Some(Notification {
            event_id,
            operation,
            outcome: Outcome {
                status,
                provider_reference: Some(reference),
                amount,
            },
            merchant_reference: Some(self.merchant_reference.clone()).filter(|r| !r.is_empty()),
        })
    }

    fn money(&self) -> Option<Money> {
        let minor = self.value.parse::<i64>().ok().filter(|v| *v >= 0)?;
        let currency = currency::normalise(&self.currency)?;
        Some(Money { minor, currency })
    }
}

fn verb(operation: Operation) -> &'static str {
    match operation {
        Operation::Capture => "capture",
        Operation::Refund => "refund",
        Operation::Void => "cancellation",
        _ => "operation",
    }
}

/// Adyen's `refusalReason` texts (the `reason` of a refused `AUTHORISATION`) → their
/// `refusalReasonCode`; unknown texts map to "" (generic decline).
fn reason_code(reason: &str) -> &'static str {
    const TEXTS: &[(&str, &str)] = &[
        ("refused", "2"),
        ("referral", "3"),
        ("acquirer error", "4"),
        ("blocked card", "5"),
        ("expired card", "6"),
        ("invalid amount", "7"),
        ("invalid card number", "8"),
        ("issuer unavailable", "9"),
        ("not supported", "10"),
        ("not enough balance", "12"),
        ("acquirer fraud", "14"),
        ("cancelled", "15"),
        ("invalid pin", "17"),
        ("pin tries exceeded", "18"),
        ("pin validation not possible", "19"),
        ("fraud", "20"),
        ("fraud-cancelled", "22"),
        ("cvc declined", "24"),
        ("restricted card", "25"),
        ("revocation of auth", "26"),
        ("declined non generic", "27"),
        ("withdrawal amount exceeded", "28"),
        ("withdrawal count exceeded", "29"),
        ("issuer suspected fraud", "31"),
        ("avs declined", "32"),
    ];
    // Adyen may append details after a colon ("Refused: 05 Do not honor").
    let head = reason.split(':').next().unwrap_or_default().trim();
    TEXTS
        .iter()
        .find(|(text, _)| text.eq_ignore_ascii_case(head))
        .map(|(_, code)| *code)
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &str = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056";

    fn context(key: &str) -> Context {
        Context {
            provider: "adyen-eu".into(),
            credentials: vec![
                ("api_key".into(), "k".into()),
                (HMAC_KEY.into(), key.into()),
            ],
            now_ms: 1_700_000_000_000,
            idempotency_key: String::new(),
        }
    }

    /// A signed item.
    fn item(code: &str, success: bool, psp: &str, original: Option<&str>, value: i64) -> Value {
        let mut item = json!({
            "eventCode": code,
            "success": if success { "true" } else { "false" },
            "pspReference": psp,
            "merchantReference": "order-1",
            "merchantAccountCode": "PayproxyECOM",
            "amount": {"value": value, "currency": "EUR"},
            "eventDate": "2026-12-04T12:00:00+01:00",
            "reason": if success { "" } else { "Not enough balance" },
        });
        if let Some(original) = original {
            item["originalReference"] = original.into();
        }
        sign(&mut item, KEY);
        item
    }

    fn sign(item: &mut Value, key: &str) {
        let read = Item::read(item).unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(&hex::decode(key).unwrap()).unwrap();
        mac.update(read.signed().as_bytes());
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        item["additionalData"] = json!({ "hmacSignature": signature });
    }

    fn request(items: &[Value]) -> HttpRequest {
        let items: Vec<Value> = items
            .iter()
            .map(|i| json!({ "NotificationRequestItem": i }))
            .collect();
        let body = json!({ "live": "false", "notificationItems": items });
        raw(body.to_string().as_bytes())
    }

    fn raw(body: &[u8]) -> HttpRequest {
        HttpRequest {
            method: "POST".into(),
            path: "/webhooks/adyen-eu".into(),
            query: None,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Some(body.to_vec()),
        }
    }

    fn one(item: Value) -> Notification {
        let webhook = decode(&request(&[item]), &context(KEY)).expect("accepted");
        assert_eq!(webhook.notifications.len(), 1);
        webhook.notifications.into_iter().next().unwrap()
    }

    fn money(minor: i64) -> Option<Money> {
        Some(Money {
            minor,
            currency: "EUR".into(),
        })
    }

    #[test]
    fn adyens_documented_signature_verifies() {
        // Adyen's "Verify HMAC signatures" example.
        let item = json!({
            "pspReference": "7914073381342284",
            "merchantAccountCode": "TestMerchant",
            "merchantReference": "TestPayment-1407325143704",
            "amount": {"value": 1130, "currency": "EUR"},
            "eventCode": "AUTHORISATION",
            "success": "true",
            "additionalData": {"hmacSignature": "coqCmt/IZ4E3CzPvMY8zTjQVL5hYJUiBRg8UU+iCWo0="},
        });
        let n = one(item);
        assert_eq!(n.event_id, "7914073381342284:AUTHORISATION:true");
        assert_eq!(
            n.merchant_reference.as_deref(),
            Some("TestPayment-1407325143704")
        );
    }

    #[test]
    fn authorisation_success_is_approved() {
        let webhook = decode(
            &request(&[item("AUTHORISATION", true, "psp_1", None, 1050)]),
            &context(KEY),
        )
        .unwrap();
        assert_eq!(webhook.response.status, 200);
        assert_eq!(webhook.response.body, b"[accepted]");
        let n = &webhook.notifications[0];
        assert_eq!(n.operation, Operation::Status);
        assert_eq!(n.outcome.status, OutcomeStatus::Approved);
        assert_eq!(n.outcome.provider_reference.as_deref(), Some("psp_1"));
        assert_eq!(n.outcome.amount, money(1050));
        assert_eq!(n.event_id, "psp_1:AUTHORISATION:true");
        assert_eq!(n.merchant_reference.as_deref(), Some("order-1"));
    }

    #[test]
    fn authorisation_failure_is_declined_with_the_reason() {
        let n = one(item("AUTHORISATION", false, "psp_1", None, 1005));
        assert_eq!(n.operation, Operation::Status);
        match n.outcome.status {
            OutcomeStatus::Declined(d) => {
                assert_eq!(d.code, "insufficient_funds");
                assert_eq!(d.provider_code, "12");
            }
            other => panic!("not declined: {other:?}"),
        }
        assert_eq!(n.outcome.amount, None);
        assert_eq!(n.event_id, "psp_1:AUTHORISATION:false");
    }

    #[test]
    fn modifications_refer_to_the_payment() {
        let capture = one(item("CAPTURE", true, "psp_mod_2", Some("psp_1"), 1050));
        assert_eq!(capture.operation, Operation::Capture);
        assert_eq!(capture.outcome.status, OutcomeStatus::Approved);
        assert_eq!(capture.outcome.provider_reference.as_deref(), Some("psp_1"));
        assert_eq!(capture.event_id, "psp_mod_2:CAPTURE:true:psp_1");

        let refund = one(item("REFUND", true, "psp_re_3", Some("psp_1"), 400));
        assert_eq!(refund.operation, Operation::Refund);
        assert_eq!(refund.outcome.amount, money(400));
        assert_eq!(refund.outcome.provider_reference.as_deref(), Some("psp_1"));

        let void = one(item("CANCELLATION", true, "psp_mod_4", Some("psp_1"), 1050));
        assert_eq!(void.operation, Operation::Void);
        assert_eq!(void.outcome.status, OutcomeStatus::Approved);
        assert_eq!(void.outcome.amount, None);

        let failed = one(item("REFUND_FAILED", true, "psp_re_5", Some("psp_1"), 400));
        assert_eq!(failed.operation, Operation::Refund);
        assert!(matches!(failed.outcome.status, OutcomeStatus::Declined(_)));
        assert_eq!(failed.outcome.amount, money(400));
        let refused = one(item("REFUND", false, "psp_re_6", Some("psp_1"), 300));
        assert!(matches!(refused.outcome.status, OutcomeStatus::Declined(_)));
        assert_eq!(refused.outcome.amount, money(300));
    }

    #[test]
    fn untracked_events_and_modifications_without_payment_are_left_out() {
        let items = [
            item("REPORT_AVAILABLE", true, "psp_9", None, 0),
            item("CAPTURE", true, "psp_mod_2", None, 1050),
            item("AUTHORISATION", true, "psp_1", None, 1050),
        ];
        let webhook = decode(&request(&items), &context(KEY)).unwrap();
        assert_eq!(webhook.notifications.len(), 1);
        assert_eq!(
            webhook.notifications[0].event_id,
            "psp_1:AUTHORISATION:true"
        );
    }

    #[test]
    fn forged_signatures_are_401() {
        let mut forged = item("AUTHORISATION", true, "psp_1", None, 1050);
        forged["amount"]["value"] = 1.into();
        let good = item("AUTHORISATION", true, "psp_2", None, 1050);
        let refusal = decode(&request(&[good.clone(), forged]), &context(KEY)).unwrap_err();
        assert_eq!(
            (refusal.status, refusal.code.as_str()),
            (401, "invalid_signature")
        );

        let mut other_key = item("AUTHORISATION", true, "psp_1", None, 1050);
        sign(&mut other_key, "00ff");
        assert_eq!(
            decode(&request(&[other_key]), &context(KEY))
                .unwrap_err()
                .status,
            401
        );

        let mut unsigned = good.clone();
        unsigned["additionalData"] = json!({});
        assert_eq!(
            decode(&request(&[unsigned]), &context(KEY))
                .unwrap_err()
                .status,
            401
        );

        let mut garbage = good;
        garbage["additionalData"]["hmacSignature"] = "not base64!".into();
        let refusal = decode(&request(&[garbage]), &context(KEY)).unwrap_err();
        assert_eq!(refusal.status, 401);
        assert!(!refusal.message.contains("psp_"));
    }

    #[test]
    fn malformed_bodies_are_400_without_echo() {
        for body in [
            &b"not json at all: secret-ish"[..],
            br#"{"live":"false"}"#,
            br#"{"notificationItems":[{"Other":{}}]}"#,
            br#"{"notificationItems":[{"NotificationRequestItem":{"eventCode":"AUTHORISATION","success":"true"}}]}"#,
            br#"{"notificationItems":[{"NotificationRequestItem":{"pspReference":"p","eventCode":"AUTHORISATION","success":"maybe"}}]}"#,
        ] {
            let refusal = decode(&raw(body), &context(KEY)).unwrap_err();
            assert_eq!(refusal.status, 400, "{}", String::from_utf8_lossy(body));
            assert_eq!(refusal.code, "invalid_notification");
            assert!(!refusal.message.contains("secret-ish"));
        }
    }

    #[test]
    fn an_empty_list_is_a_ping() {
        let webhook = decode(&request(&[]), &context(KEY)).unwrap();
        assert!(webhook.notifications.is_empty());
        assert_eq!(webhook.response.body, b"[accepted]");
    }

    #[test]
    fn missing_or_bad_key_is_a_configuration_fault() {
        let mut ctx = context(KEY);
        ctx.credentials.retain(|(k, _)| k != HMAC_KEY);
        let body = request(&[item("AUTHORISATION", true, "psp_1", None, 1)]);
        assert_eq!(
            decode(&body, &ctx).unwrap_err().code,
            "provider_misconfigured"
        );
        assert_eq!(decode(&body, &context("zz")).unwrap_err().status, 500);
    }

    #[test]
    fn reasons_map_to_codes() {
        assert_eq!(reason_code("Not enough balance"), "12");
        assert_eq!(reason_code("CVC Declined"), "24");
        assert_eq!(reason_code("Refused: 05 Do not honor"), "2");
        assert_eq!(reason_code("Something new"), "");
    }
}
