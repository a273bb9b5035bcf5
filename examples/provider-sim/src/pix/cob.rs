//! Charges: create (idempotent by txid), read, remove, pay.

use std::collections::BTreeMap;

use hyper::StatusCode;
use payproxy_plugin_sdk::currency;
use serde_json::{json, Value};

use super::{brcode, callback, taxid, Problem, Reply};
use crate::json_api::Call;
use crate::ledger::{Charge, Intent, Ledger, StoredResponse};
use crate::provider::Provider;

/// Ledger status ↔ charge status.
const STATUSES: &[(&str, &str)] = &[
    ("requires_action", "ATIVA"),
    ("succeeded", "CONCLUIDA"),
    ("canceled", "REMOVIDA_PELO_USUARIO_RECEBEDOR"),
];

/// Default `calendario.expiracao`, as the Central Bank specifies.
const DEFAULT_EXPIRATION: u64 = 86_400;

fn cob_status(ledger_status: &str) -> &'static str {
    STATUSES
        .iter()
        .find(|(l, _)| *l == ledger_status)
        .map(|(_, c)| *c)
        .unwrap_or("REMOVIDA_PELO_PSP")
}

fn valid_txid(txid: &str) -> bool {
    (26..=35).contains(&txid.len()) && txid.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn not_found(txid: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "CobNaoEncontrado",
        "Cobrança não encontrada.",
        format!("no charge with txid {txid}"),
    )
}

fn text<'a>(body: &'a Value, key: &str) -> Option<&'a str> {
    body.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

/// The charge as the API shows it.
fn render(intent: &Intent) -> Value {
    let charge = &intent.charge;
    let status = cob_status(&charge.status);
    let amount = currency::to_decimal(charge.amount, "BRL").unwrap_or_default();
    let expiration: u64 = charge
        .metadata
        .get("expiracao")
        .and_then(|e| e.parse().ok())
        .unwrap_or(DEFAULT_EXPIRATION);
    let mut value = json!({
        "txid": charge.id,
        "revisao": if status == "ATIVA" || status == "CONCLUIDA" { 0 } else { 1 },
        "status": status,
        "calendario": { "expiracao": expiration },
        "location": format!("pix.sim.example/qr/v2/{}", charge.id),
        "valor": { "original": amount },
        "chave": charge.metadata.get("chave"),
        "pixCopiaECola": brcode::copy_paste(&charge.id, &amount),
    });
    if let Some(text) = charge.metadata.get("solicitacaoPagador") {
        value["solicitacaoPagador"] = text.clone().into();
    }
    if status == "CONCLUIDA" {
        // An end-to-end id shaped like the real ones (E + ISPB + …), derived from the txid.
        let e2e: String = format!("E00000000{}", charge.id).chars().take(32).collect();
        value["pix"] = json!([{ "endToEndId": e2e, "txid": charge.id, "valor": amount }]);
    }
    value
}

/// What a valid `PUT` body asks for.
#[derive(Debug)]
struct NewCharge {
    amount: i64,
    chave: String,
    expiration: u64,
    request_text: Option<String>,
    reference: Option<String>,
}

/// Validate a `PUT` body.
fn validate(body: &Value) -> Result<NewCharge, Problem> {
    let original = body.pointer("/valor/original").and_then(Value::as_str);
    let amount = match original.map(|o| currency::from_decimal(o, "BRL")) {
        Some(Ok(minor)) if minor > 0 => minor,
        _ => {
            return Err(Problem::invalid(
                "cob.valor.original",
                "valor.original must be a positive amount with 2 decimals",
            ))
        }
    };
    let chave =
        text(body, "chave").ok_or_else(|| Problem::invalid("cob.chave", "chave is required"))?;
    let expiration = match body.pointer("/calendario/expiracao") {
        None => DEFAULT_EXPIRATION,
        Some(e) => e.as_u64().filter(|e| *e > 0).ok_or_else(|| {
            Problem::invalid(
                "cob.calendario.expiracao",
                "expiracao must be a positive integer",
            )
        })?,
    };
    if let Some(debtor) = body.get("devedor") {
        let cpf = debtor.get("cpf").and_then(Value::as_str);
        let cnpj = debtor.get("cnpj").and_then(Value::as_str);
        match (cpf, cnpj) {
            (Some(id), None) if taxid::valid(id) && id.len() == 11 => {}
            (None, Some(id)) if taxid::valid(id) && id.len() == 14 => {}
            (Some(_), None) => return Err(Problem::invalid("cob.devedor.cpf", "CPF inválido")),
            (None, Some(_)) => return Err(Problem::invalid("cob.devedor.cnpj", "CNPJ inválido")),
            _ => {
                return Err(Problem::invalid(
                    "cob.devedor",
                    "devedor needs exactly one of cpf or cnpj",
                ))
            }
        }
    }
    let request_text = text(body, "solicitacaoPagador").map(str::to_owned);
    if request_text
        .as_ref()
        .is_some_and(|t| t.chars().count() > 140)
    {
        return Err(Problem::invalid(
            "cob.solicitacaoPagador",
            "solicitacaoPagador has more than 140 characters",
        ));
    }
    let reference = body
        .get("infoAdicionais")
        .and_then(Value::as_array)
        .and_then(|list| {
            list.iter()
                .find(|i| i.get("nome").and_then(Value::as_str) == Some("reference"))
        })
        .and_then(|i| text(i, "valor"))
        .map(str::to_owned)
        .or_else(|| request_text.clone());
    Ok(NewCharge {
        amount,
        chave: chave.to_owned(),
        expiration,
        request_text,
        reference,
    })
}

/// `PUT /cob/{txid}`.
pub(super) fn create(provider: &Provider, txid: &str, call: &Call) -> Result<Reply, Problem> {
    if !valid_txid(txid) {
        return Err(Problem::invalid(
            "cob.txid",
            "txid must be 26 to 35 letters or digits",
        ));
    }
    let body = call
        .json()
        .filter(Value::is_object)
        .ok_or_else(|| Problem::invalid("cob", "the body is not a JSON object"))?;
    let fingerprint = call.fingerprint();
    let store_key = format!("pix:{txid}");
    // One lock for check, execute and store: concurrent resends of one txid cannot both run.
    let mut ledger = provider.ledger();
    if let Some(stored) = ledger.stored(&store_key) {
        if stored.fingerprint != fingerprint {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "CobTxidDuplicado",
                "txid em uso.",
                format!("txid {txid} already names a charge with other data"),
            ));
        }
        return ledger
            .intent(txid)
            .map(|i| Reply::Replayed(render(i)))
            .ok_or_else(|| not_found(txid));
    }
    let new = validate(&body)?;
    let mut metadata = BTreeMap::from([
        ("chave".to_owned(), new.chave),
        ("expiracao".to_owned(), new.expiration.to_string()),
    ]);
    if let Some(text) = new.request_text {
        metadata.insert("solicitacaoPagador".to_owned(), text);
    }
    let intent = Intent {
        charge: Charge {
            id: txid.to_owned(),
            provider: ledger.provider().to_owned(),
            amount: new.amount,
            currency: "brl".to_owned(),
            status: "requires_action".to_owned(),
            idempotency_key: Some(txid.to_owned()),
            merchant_reference: new.reference,
            metadata,
        },
        manual_capture: false,
        card_manual_capture: false,
        payment_method_types: vec!["pix".to_owned()],
        amount_refunded: 0,
    };
    let rendered = render(&intent);
    ledger.insert(intent);
    store(&mut ledger, store_key, fingerprint, &rendered);
    Ok(Reply::Created(rendered))
}

/// Remember the creating request, so a resend is recognised.
fn store(ledger: &mut Ledger, key: String, fingerprint: [u8; 32], rendered: &Value) {
    let stored = StoredResponse {
        fingerprint,
        status: StatusCode::CREATED,
        body: serde_json::to_vec(rendered).unwrap_or_default().into(),
    };
    ledger.store(key, stored);
}

/// `GET /cob/{txid}`.
pub(super) fn read(provider: &Provider, txid: &str) -> Result<Value, Problem> {
    provider
        .ledger()
        .intent(txid)
        .map(render)
        .ok_or_else(|| not_found(txid))
}

/// `PATCH /cob/{txid}`: only removal by the receiver.
pub(super) fn revise(provider: &Provider, txid: &str, call: &Call) -> Result<Value, Problem> {
    let body = call.json().unwrap_or(Value::Null);
    if body != json!({ "status": "REMOVIDA_PELO_USUARIO_RECEBEDOR" }) {
        return Err(Problem::invalid(
            "cob.status",
            "only {\"status\": \"REMOVIDA_PELO_USUARIO_RECEBEDOR\"} is supported",
        ));
    }
    let mut ledger = provider.ledger();
    let intent = ledger.intent_mut(txid).ok_or_else(|| not_found(txid))?;
    match intent.charge.status.as_str() {
        "requires_action" => intent.charge.status = "canceled".to_owned(),
        "canceled" => {}
        _ => return Err(Problem::invalid("cob.status", "the charge is not ATIVA")),
    }
    Ok(render(intent))
}

/// `POST /cob/{txid}/pay` (simulator control): the payer pays. Paying a paid charge again
/// changes nothing; the first payment sends the Pix callback (webhooks on), after the
/// ledger's lock is released.
pub(super) fn pay(provider: &Provider, txid: &str) -> Result<Value, Problem> {
    let (rendered, paid) = {
        let mut ledger = provider.ledger();
        let intent = ledger.intent_mut(txid).ok_or_else(|| not_found(txid))?;
        let paid_now = match intent.charge.status.as_str() {
            "requires_action" => {
                intent.charge.status = "succeeded".to_owned();
                true
            }
            "succeeded" => false,
            _ => return Err(Problem::invalid("cob.status", "the charge is not ATIVA")),
        };
        let rendered = render(intent);
        let paid = paid_now.then(|| callback::Paid {
            end_to_end_id: rendered
                .pointer("/pix/0/endToEndId")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            txid: txid.to_owned(),
            valor: rendered
                .pointer("/valor/original")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            // The payer writes no message in the simulator.
            info: None,
        });
        (rendered, paid)
    };
    if let Some(paid) = paid {
        callback::send(provider, &paid);
    }
    Ok(rendered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> Value {
        json!({
            "calendario": {"expiracao": 600},
            "devedor": {"cpf": "52998224725", "nome": "Fulano"},
            "valor": {"original": "10.00"},
            "chave": "pix@shop.example",
            "solicitacaoPagador": "Pedido 1",
            "infoAdicionais": [{"nome": "reference", "valor": "order-1"}]
        })
    }

    #[test]
    fn valid_body() {
        let new = validate(&body()).unwrap();
        assert_eq!(
            (new.amount, new.chave.as_str(), new.expiration),
            (1000, "pix@shop.example", 600)
        );
        assert_eq!(new.request_text.as_deref(), Some("Pedido 1"));
        assert_eq!(new.reference.as_deref(), Some("order-1"));
    }

    #[test]
    fn invalid_bodies_name_the_property() {
        let property = |patch: fn(&mut Value)| {
            let mut b = body();
            patch(&mut b);
            validate(&b).err().map(|p| p.violations[0].1)
        };
        assert_eq!(
            property(|b| b["valor"]["original"] = "10.001".into()),
            Some("cob.valor.original")
        );
        assert_eq!(
            property(|b| b["devedor"]["cpf"] = "52998224724".into()),
            Some("cob.devedor.cpf")
        );
        assert_eq!(
            property(|b| b["devedor"] = json!({"cnpj": "11222333000180"})),
            Some("cob.devedor.cnpj")
        );
        assert_eq!(
            property(|b| b["devedor"] = json!({"cpf": "11222333000181"})),
            Some("cob.devedor.cpf")
        );
        assert_eq!(
            property(|b| {
                b.as_object_mut().unwrap().remove("chave");
            }),
            Some("cob.chave")
        );
        assert_eq!(
            property(|b| b["calendario"]["expiracao"] = 0.into()),
            Some("cob.calendario.expiracao")
        );
    }
}
