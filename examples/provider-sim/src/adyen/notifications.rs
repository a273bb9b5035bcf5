//! Adyen's standard notifications, sent when webhooks are on (see `crate::notify`).
//!
//! One notification request per event: `{"live": "false", "notificationItems":
//! [{"NotificationRequestItem": {…}}]}` with `eventCode` (`AUTHORISATION`, `CAPTURE`,
//! `CANCELLATION`, `REFUND`), `success` `"true"`/`"false"`, `pspReference` (the
//! modification's own for modifications), `originalReference` (the payment's, for
//! modifications), `merchantReference`, `merchantAccountCode`, `amount {value, currency}`,
//! `eventDate`, `reason` and `additionalData.hmacSignature`: base64 of HMAC-SHA256, keyed with
//! the hex-decoded webhook secret, over
//! `pspReference:originalReference:merchantAccountCode:merchantReference:value:currency:eventCode:success`
//! (empty strings for what is missing). A secret that is not hex is used as raw bytes.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::notify::Notice;
use crate::provider::Provider;

/// What one notification reports.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Event {
    pub(super) code: &'static str,
    pub(super) success: bool,
    /// The payment's reference for `AUTHORISATION`, the modification's own otherwise.
    pub(super) psp: String,
    /// The payment's reference, for modifications.
    pub(super) original: Option<String>,
    pub(super) merchant_reference: String,
    pub(super) merchant_account: String,
    pub(super) value: i64,
    /// Upper-case ISO 4217.
    pub(super) currency: String,
    /// Refusal reason of an unsuccessful event, else empty.
    pub(super) reason: String,
}

/// Send `event` if webhooks are on.
pub(super) fn send(provider: &Provider, event: &Event) {
    if let Some(secret) = provider.webhook_secret() {
        provider.notify(notice(&secret, event));
    }
}

/// The signed notification request for `event`.
pub(super) fn notice(secret: &str, event: &Event) -> Notice {
    let body = json!({
        "live": "false",
        "notificationItems": [{ "NotificationRequestItem": item(secret, event) }],
    });
    Notice {
        dialect: "adyen",
        query: None,
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        body: serde_json::to_vec(&body).unwrap_or_default(),
    }
}

fn item(secret: &str, event: &Event) -> Value {
    let success = if event.success { "true" } else { "false" };
    let original = event.original.clone().unwrap_or_default();
    let signed = [
        event.psp.as_str(),
        original.as_str(),
        event.merchant_account.as_str(),
        event.merchant_reference.as_str(),
        &event.value.to_string(),
        event.currency.as_str(),
        event.code,
        success,
    ]
    .join(":");
    let mut item = json!({
        "eventCode": event.code,
        "success": success,
        "pspReference": event.psp,
        "merchantReference": event.merchant_reference,
        "merchantAccountCode": event.merchant_account,
        "amount": { "value": event.value, "currency": event.currency },
        "eventDate": event_date(),
        "reason": event.reason,
        "additionalData": { "hmacSignature": signature(secret, &signed) },
    });
    if let Some(original) = &event.original {
        item["originalReference"] = original.as_str().into();
    }
    item
}

/// Base64 of HMAC-SHA256 over `signed`, keyed with the hex-decoded secret.
pub(super) fn signature(secret: &str, signed: &str) -> String {
    let key = hex::decode(secret).unwrap_or_else(|_| secret.as_bytes().to_vec());
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(signed.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Now as `YYYY-MM-DDTHH:MM:SS+00:00`.
fn event_date() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}+00:00",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_adyens_documented_example() {
        // The HMAC example of Adyen's "Verify HMAC signatures" docs.
        let key = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056";
        let signed =
            "7914073381342284::TestMerchant:TestPayment-1407325143704:1130:EUR:AUTHORISATION:true";
        assert_eq!(
            signature(key, signed),
            "coqCmt/IZ4E3CzPvMY8zTjQVL5hYJUiBRg8UU+iCWo0="
        );
    }

    #[test]
    fn notification_shape() {
        let event = Event {
            code: "REFUND",
            success: true,
            psp: "psp_re_simeu_2".into(),
            original: Some("psp_simeu_1".into()),
            merchant_reference: "order-1".into(),
            merchant_account: "PayproxyECOM".into(),
            value: 500,
            currency: "EUR".into(),
            reason: String::new(),
        };
        let notice = notice("00ff", &event);
        assert_eq!(notice.dialect, "adyen");
        let body: Value = serde_json::from_slice(&notice.body).unwrap();
        let item = &body["notificationItems"][0]["NotificationRequestItem"];
        assert_eq!(item["eventCode"], "REFUND");
        assert_eq!(item["success"], "true");
        assert_eq!(item["originalReference"], "psp_simeu_1");
        assert_eq!(item["amount"], json!({"value": 500, "currency": "EUR"}));
        let signed = "psp_re_simeu_2:psp_simeu_1:PayproxyECOM:order-1:500:EUR:REFUND:true";
        assert_eq!(
            item["additionalData"]["hmacSignature"],
            signature("00ff", signed).as_str()
        );
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_723), (2024, 1, 1));
        assert_eq!(civil(20_513), (2026, 3, 1));
    }
}
