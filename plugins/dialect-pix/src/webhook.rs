//! Pix callbacks (the Central Bank's `webhook` API) → verified, canonical notifications
//! (`decode-webhook`).
//!
//! The PSP posts `{"pix": [{"endToEndId", "txid", "valor": "10.00", "horario",
//! "infoPagador"?, "devolucoes"?: [{"id", "rtrId", "valor", "horario": {"solicitacao",
//! "liquidacao"?}, "status"}]}]}` for every Pix received on a charge (and again when one is
//! returned), and expects any 2xx back (this dialect answers 200 with an empty body).
//!
//! # Verification
//!
//! The Central Bank's scheme authenticates the PSP with mutual TLS and signs nothing; a
//! shared-secret stand-in is used instead: header `x-pix-signature` holds the lower-case hex
//! HMAC-SHA256 of the raw body, keyed with the provider's credential `webhook_secret`,
//! compared in constant time. The real callbacks carry no delivery timestamp, so there is no
//! tolerance window: a replayed callback repeats the same event ids, which the host applies
//! once. A missing or wrong signature is refused 401 `invalid_signature`; a verified body that
//! is not such a document 400 `invalid_notification`. Messages never repeat the body.
//!
//! # Mapping
//!
//! | entry                                    | operation | outcome                                   | event id     |
//! |------------------------------------------|-----------|-------------------------------------------|--------------|
//! | a `pix` with a `txid`                    | status    | approved, `valor` in BRL                  | `endToEndId` |
//! | a `devolucao` with status `DEVOLVIDO`    | refund    | approved, its `valor`                     | its `rtrId` (else `endToEndId:id`) |
//! | a `devolucao` with status `NAO_REALIZADO`| refund    | declined `generic_decline` (hard), provider code `NAO_REALIZADO` | the same |
//! | a `pix` without `txid`, a `devolucao` `EM_PROCESSAMENTO` | — | left out (nothing final to say) | |
//!
//! The reference is the `txid` (what [`crate::decode`] gives for the charge); callbacks carry
//! no merchant reference.

use hmac::{Hmac, Mac};
use payproxy_plugin_sdk::helpers::decode::decimal_amount;
use payproxy_plugin_sdk::helpers::decode::text;
use payproxy_plugin_sdk::helpers::webhook;
use payproxy_plugin_sdk::payment::{
    Context, Decline, DeclineKind, HttpRequest, Money, Notification, Operation, Outcome,
    OutcomeStatus, Refusal, Webhook,
};
use serde_json::Value;
use sha2::Sha256;

/// The credential keying the callbacks' HMAC.
pub const WEBHOOK_SECRET: &str = "webhook_secret";
/// The header carrying the hex HMAC-SHA256 of the body.
pub const SIGNATURE_HEADER: &str = "x-pix-signature";

/// Verify and decode one callback.
pub fn decode(request: &HttpRequest, context: &Context) -> Result<Webhook, Refusal> {
    let secret = context.required_credential(WEBHOOK_SECRET)?;
    let body = request.body.as_deref().unwrap_or_default();
    let signature = request
        .header(SIGNATURE_HEADER)
        .and_then(|s| hex::decode(s.trim()).ok())
        .ok_or_else(|| webhook::forged("the callback has no readable x-pix-signature header"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|_| webhook::forged("the signature does not verify"))?;
    mac.update(body);
    mac.verify_slice(&signature)
        .map_err(|_| webhook::forged("the callback's HMAC signature does not verify"))?;
    let document: Value = serde_json::from_slice(body).map_err(|_| unreadable())?;
    let entries = document
        .get("pix")
        .and_then(Value::as_array)
        .ok_or_else(unreadable)?;
    let mut notifications = Vec::new();
    for entry in entries {
        read_entry(entry, &mut notifications).ok_or_else(unreadable)?;
    }
    Ok(Webhook {
        notifications,
        response: webhook::acknowledged(),
    })
}

fn unreadable() -> Refusal {
    webhook::unreadable("a Pix callback")
}

fn brl(value: &Value) -> Option<Money> {
    let minor = decimal_amount(value.get("valor")?, "BRL").ok()?;
    Some(Money {
        minor,
        currency: "BRL".into(),
    })
}

/// One `pix` entry → its notifications; `None` when it is malformed.
fn read_entry(entry: &Value, out: &mut Vec<Notification>) -> Option<()> {
    let end_to_end = text(entry, "endToEndId")?;
    let amount = brl(entry)?;
    let txid = match entry.get("txid") {
        None | Some(Value::Null) => None,
        Some(t) => Some(t.as_str()?).filter(|t| !t.is_empty()),
    };
    let returns = match entry.get("devolucoes") {
        None | Some(Value::Null) => &[][..],
        Some(list) => list.as_array()?.as_slice(),
    };
    // A Pix to the key without a charge has no txid: no payment of ours to tell about.
    let Some(txid) = txid else {
        return Some(());
    };
    out.push(Notification {
        event_id: end_to_end.into(),
        operation: Operation::Status,
        outcome: Outcome {
            status: OutcomeStatus::Approved,
            provider_reference: Some(txid.into()),
            amount: Some(amount),
        },
        merchant_reference: None,
    });
    for devolution in returns {
        let id = text(devolution, "id")?;
        let status = text(devolution, "status")?;
        let amount = brl(devolution)?;
        let event_id = text(devolution, "rtrId")
            .map(str::to_string)
            .unwrap_or_else(|| format!("{end_to_end}:{id}"));
        let status = match status {
            "DEVOLVIDO" => OutcomeStatus::Approved,
            "NAO_REALIZADO" => OutcomeStatus::Declined(Decline {
                code: "generic_decline".into(),
                provider_code: status.into(),
                kind: DeclineKind::Hard,
                message: "the Pix return was not made".into(),
            }),
            // EM_PROCESSAMENTO, or a status this dialect does not know: nothing final.
            _ => continue,
        };
        out.push(Notification {
            event_id,
            operation: Operation::Refund,
            outcome: Outcome {
                status,
                provider_reference: Some(txid.into()),
                amount: Some(amount),
            },
            merchant_reference: None,
        });
    }
    Some(())
}

/// The `x-pix-signature` value for `body` (lower-case hex HMAC-SHA256), as the PSP computes
/// it; for tests and tools.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &str = "pix-webhook-secret";
    const TXID: &str = "7978c0c97ea847e78e8849634473c1f1";

    fn context() -> Context {
        Context {
            provider: "pix-br".into(),
            credentials: vec![
                ("api_key".into(), "t".into()),
                (WEBHOOK_SECRET.into(), SECRET.into()),
            ],
            now_ms: 1_700_000_000_000,
            idempotency_key: String::new(),
        }
    }

    fn request(body: &[u8], signature: Option<String>) -> HttpRequest {
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        headers.extend(signature.map(|s| (SIGNATURE_HEADER.to_string(), s)));
        HttpRequest {
            method: "POST".into(),
            path: "/webhooks/pix-br".into(),
            query: None,
            headers,
            body: Some(body.to_vec()),
        }
    }

    fn signed(body: &Value) -> HttpRequest {
        let bytes = serde_json::to_vec(body).unwrap();
        request(&bytes, Some(sign(SECRET, &bytes)))
    }

    fn paid() -> Value {
        json!({"pix": [{
            "endToEndId": "E00000000202311142213abcdef01234",
            "txid": TXID,
            "valor": "10.00",
            "horario": "2023-11-14T22:13:20.000Z",
            "infoPagador": "pedido 1"
        }]})
    }

    #[test]
    fn a_paid_charge_is_approved() {
        let webhook = decode(&signed(&paid()), &context()).unwrap();
        assert_eq!(webhook.response.status, 200);
        assert_eq!(webhook.notifications.len(), 1);
        let n = &webhook.notifications[0];
        assert_eq!(n.event_id, "E00000000202311142213abcdef01234");
        assert_eq!(n.operation, Operation::Status);
        assert_eq!(n.outcome.status, OutcomeStatus::Approved);
        assert_eq!(n.outcome.provider_reference.as_deref(), Some(TXID));
        assert_eq!(
            n.outcome.amount,
            Some(Money {
                minor: 1000,
                currency: "BRL".into()
            })
        );
        assert_eq!(n.merchant_reference, None);
    }

    #[test]
    fn returns_are_refunds() {
        let mut body = paid();
        body["pix"][0]["devolucoes"] = json!([
            {"id": "d1", "rtrId": "D00000000202311150000aaaaaaaaaaa", "valor": "2.50",
             "horario": {"solicitacao": "2023-11-15T00:00:00Z"}, "status": "DEVOLVIDO"},
            {"id": "d2", "valor": "1.00", "status": "NAO_REALIZADO"},
            {"id": "d3", "valor": "1.00", "status": "EM_PROCESSAMENTO"}
        ]);
        let notifications = decode(&signed(&body), &context()).unwrap().notifications;
        assert_eq!(notifications.len(), 3);
        let refund = &notifications[1];
        assert_eq!(refund.operation, Operation::Refund);
        assert_eq!(refund.event_id, "D00000000202311150000aaaaaaaaaaa");
        assert_eq!(refund.outcome.status, OutcomeStatus::Approved);
        assert_eq!(refund.outcome.amount.as_ref().map(|m| m.minor), Some(250));
        assert_eq!(refund.outcome.provider_reference.as_deref(), Some(TXID));
        let failed = &notifications[2];
        assert_eq!(failed.event_id, "E00000000202311142213abcdef01234:d2");
        match &failed.outcome.status {
            OutcomeStatus::Declined(d) => {
                assert_eq!(
                    (d.code.as_str(), d.provider_code.as_str()),
                    ("generic_decline", "NAO_REALIZADO")
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_pix_without_a_charge_is_left_out() {
        let mut body = paid();
        body["pix"][0].as_object_mut().unwrap().remove("txid");
        let webhook = decode(&signed(&body), &context()).unwrap();
        assert!(webhook.notifications.is_empty());
    }

    #[test]
    fn forged_and_unsigned_callbacks_are_401() {
        let bytes = serde_json::to_vec(&paid()).unwrap();
        for signature in [
            None,
            Some("zz".to_string()),
            Some(sign("another-secret", &bytes)),
        ] {
            let refusal = decode(&request(&bytes, signature), &context()).unwrap_err();
            assert_eq!(
                (refusal.status, refusal.code.as_str()),
                (401, "invalid_signature")
            );
        }
        // A signature over another body.
        let other = sign(SECRET, b"{}");
        let refusal = decode(&request(&bytes, Some(other)), &context()).unwrap_err();
        assert_eq!(refusal.status, 401);
    }

    #[test]
    fn unreadable_callbacks_are_400_without_echo() {
        for body in [
            json!({"cob": []}),
            json!({"pix": [{"txid": TXID, "valor": "10.00"}]}),
            json!({"pix": [{"endToEndId": "E1", "txid": TXID, "valor": "10.001"}]}),
            json!({"pix": [{"endToEndId": "E1", "txid": TXID, "valor": "10.00", "devolucoes": [{"id": "d"}]}]}),
        ] {
            let refusal = decode(&signed(&body), &context()).unwrap_err();
            assert_eq!(
                (refusal.status, refusal.code.as_str()),
                (400, "invalid_notification")
            );
            assert!(!refusal.message.contains(TXID));
        }
        let refusal = decode(
            &request(b"not json", Some(sign(SECRET, b"not json"))),
            &context(),
        )
        .unwrap_err();
        assert_eq!(refusal.status, 400);
        assert!(!refusal.message.contains("not json"));
    }

    #[test]
    fn a_missing_secret_is_a_misconfiguration() {
        let mut context = context();
        context.credentials.retain(|(k, _)| k != WEBHOOK_SECRET);
        let refusal = decode(&signed(&paid()), &context).unwrap_err();
        assert_eq!(
            (refusal.status, refusal.code.as_str()),
            (500, "provider_misconfigured")
        );
    }
}
