//! Pix callbacks, sent when webhooks are on (see `crate::notify`): when a charge is paid
//! (`POST …/cob/{txid}/pay`), one `{"pix": [{"endToEndId", "txid", "valor", "horario",
//! "infoPagador"?}]}` callback, as the Central Bank's webhook API posts it. The simulator has
//! no returns (`devolucoes`), so it never sends one.
//!
//! The real callbacks are authenticated by mutual TLS only; the simulator signs them the way
//! `dialect-pix` verifies them instead: `x-pix-signature` = lower-case hex HMAC-SHA256 of the
//! body, keyed with the webhook secret (the dialect's `webhook_secret` credential). No
//! timestamp header: the real callbacks have none.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use payproxy_plugin_sdk::helpers::time::DateTime;
use serde_json::json;
use sha2::Sha256;

use crate::notify::Notice;
use crate::provider::Provider;

/// The header carrying the signature.
pub(super) const SIGNATURE_HEADER: &str = "x-pix-signature";

/// A paid charge, as its callback tells it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Paid {
    pub(super) end_to_end_id: String,
    pub(super) txid: String,
    /// BRL decimal, e.g. `10.00`.
    pub(super) valor: String,
    pub(super) info: Option<String>,
}

/// Send the callback of `paid` if webhooks are on. Call with no lock held.
pub(super) fn send(provider: &Provider, paid: &Paid) {
    if let Some(secret) = provider.webhook_secret() {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        provider.notify(notice(&secret, paid, now_ms));
    }
}

/// The signed callback of `paid`, paid at `now_ms`.
pub(super) fn notice(secret: &str, paid: &Paid, now_ms: u64) -> Notice {
    let mut entry = json!({
        "endToEndId": paid.end_to_end_id,
        "txid": paid.txid,
        "valor": paid.valor,
        "horario": rfc3339(now_ms),
    });
    if let Some(info) = &paid.info {
        entry["infoPagador"] = info.as_str().into();
    }
    let body = serde_json::to_vec(&json!({ "pix": [entry] })).unwrap_or_default();
    Notice {
        dialect: "pix",
        query: None,
        headers: vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            (SIGNATURE_HEADER.to_owned(), signature(secret, &body)),
        ],
        body,
    }
}

/// Lower-case hex HMAC-SHA256 of `body`.
pub(super) fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// `2023-11-14T22:13:20.000Z`.
fn rfc3339(now_ms: u64) -> String {
    let t = DateTime::from_unix_ms(now_ms, 0);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        now_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn callback_shape_and_signature() {
        let paid = Paid {
            end_to_end_id: "E000000007978c0c97ea847e78e88496".into(),
            txid: "7978c0c97ea847e78e8849634473c1f1".into(),
            valor: "10.00".into(),
            info: Some("Pedido 1".into()),
        };
        let notice = notice("pix-secret", &paid, 1_700_000_000_123);
        assert_eq!(notice.dialect, "pix");
        let body: Value = serde_json::from_slice(&notice.body).unwrap();
        assert_eq!(
            body,
            json!({"pix": [{
                "endToEndId": "E000000007978c0c97ea847e78e88496",
                "txid": "7978c0c97ea847e78e8849634473c1f1",
                "valor": "10.00",
                "horario": "2023-11-14T22:13:20.123Z",
                "infoPagador": "Pedido 1"
            }]})
        );
        let header = |name: &str| {
            notice
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let sig = header(SIGNATURE_HEADER).unwrap();
        assert_eq!(sig, signature("pix-secret", &notice.body));
        assert_eq!(sig.len(), 64);
        // An independent check of the HMAC: RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(header("content-type").as_deref(), Some("application/json"));
    }
}
