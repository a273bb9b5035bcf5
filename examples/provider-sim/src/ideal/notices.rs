//! iDEAL status notifications, sent when webhooks are on (see `crate::notify`): when the
//! shopper finishes at the bank (`GET …/authenticate/{id}`: `success`, `failure`,
//! `cancelled` or `expired`) and when a refund succeeds.
//!
//! Body: `{"notificationId", "type": "transaction.status"|"refund.status", "createdAt",
//! "transactionId", "refundId"?, "status", "amount", "currency": "EUR", "reference"}`;
//! `notificationId` is `ntf_<transactionId>_<status>` (`ntf_<refundId>` for refunds), so a
//! redelivery carries the same one. Headers, as `dialect-ideal` verifies them:
//! `x-ideal-timestamp` (Unix seconds of the notice) and `x-ideal-signature` = lower-case hex
//! HMAC-SHA256(secret, `<timestamp>.<body>`), the secret being the webhook secret (the
//! dialect's `webhook_secret` credential).

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use payproxy_plugin_sdk::currency;
use payproxy_plugin_sdk::helpers::time::DateTime;
use serde_json::json;
use sha2::Sha256;

use crate::notify::Notice;
use crate::provider::Provider;

pub(super) const TIMESTAMP_HEADER: &str = "x-ideal-timestamp";
pub(super) const SIGNATURE_HEADER: &str = "x-ideal-signature";

/// What one notification reports.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Event {
    pub(super) transaction_id: String,
    /// For refunds.
    pub(super) refund_id: Option<String>,
    /// iDEAL status: `success`, `failure`, `cancelled`, `expired`.
    pub(super) status: &'static str,
    /// Euro cents (of the refund, for refunds).
    pub(super) amount: i64,
    pub(super) reference: Option<String>,
}

/// Send `event` if webhooks are on. Call with no lock held.
pub(super) fn send(provider: &Provider, event: &Event) {
    if let Some(secret) = provider.webhook_secret() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        provider.notify(notice(&secret, event, now));
    }
}

/// The signed notification of `event`, sent at `now` (Unix seconds).
pub(super) fn notice(secret: &str, event: &Event, now: u64) -> Notice {
    let (id, kind) = match &event.refund_id {
        Some(refund) => (format!("ntf_{refund}"), "refund.status"),
        None => (
            format!("ntf_{}_{}", event.transaction_id, event.status),
            "transaction.status",
        ),
    };
    let mut body = json!({
        "notificationId": id,
        "type": kind,
        "createdAt": rfc3339(now),
        "transactionId": event.transaction_id,
        "status": event.status,
        "amount": currency::to_decimal(event.amount, "EUR"),
        "currency": "EUR",
        "reference": event.reference,
    });
    if let Some(refund) = &event.refund_id {
        body["refundId"] = refund.as_str().into();
    }
    let body = serde_json::to_vec(&body).unwrap_or_default();
    Notice {
        dialect: "ideal",
        query: None,
        headers: vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            (TIMESTAMP_HEADER.to_owned(), now.to_string()),
            (SIGNATURE_HEADER.to_owned(), signature(secret, now, &body)),
        ],
        body,
    }
}

/// Lower-case hex HMAC-SHA256 of `<timestamp>.<body>`.
pub(super) fn signature(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// `2023-11-14T22:13:20Z`.
fn rfc3339(secs: u64) -> String {
    let t = DateTime::from_unix_ms(secs * 1000, 0);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn transaction_notice() {
        let event = Event {
            transaction_id: "tr_idealnl_1".into(),
            refund_id: None,
            status: "expired",
            amount: 1050,
            reference: Some("order-1".into()),
        };
        let notice = notice("ideal-secret", &event, 1_700_000_000);
        assert_eq!(notice.dialect, "ideal");
        let body: Value = serde_json::from_slice(&notice.body).unwrap();
        assert_eq!(
            body,
            json!({
                "notificationId": "ntf_tr_idealnl_1_expired",
                "type": "transaction.status",
                "createdAt": "2023-11-14T22:13:20Z",
                "transactionId": "tr_idealnl_1",
                "status": "expired",
                "amount": "10.50",
                "currency": "EUR",
                "reference": "order-1"
            })
        );
        assert_eq!(notice.header(TIMESTAMP_HEADER), Some("1700000000"));
        let mut signed = b"1700000000.".to_vec();
        signed.extend_from_slice(&notice.body);
        let mut mac = Hmac::<Sha256>::new_from_slice(b"ideal-secret").unwrap();
        mac.update(&signed);
        assert_eq!(
            notice.header(SIGNATURE_HEADER),
            Some(hex::encode(mac.finalize().into_bytes()).as_str())
        );
    }

    #[test]
    fn refund_notice() {
        let event = Event {
            transaction_id: "tr_idealnl_1".into(),
            refund_id: Some("rf_idealnl_2".into()),
            status: "success",
            amount: 250,
            reference: Some("order-1".into()),
        };
        let notice = notice("s", &event, 1_700_000_000);
        let body: Value = serde_json::from_slice(&notice.body).unwrap();
        assert_eq!(body["notificationId"], "ntf_rf_idealnl_2");
        assert_eq!(body["type"], "refund.status");
        assert_eq!(body["refundId"], "rf_idealnl_2");
        assert_eq!(body["amount"], "2.50");
        assert_eq!(
            notice.header(SIGNATURE_HEADER),
            Some(signature("s", 1_700_000_000, &notice.body).as_str())
        );
    }
}
