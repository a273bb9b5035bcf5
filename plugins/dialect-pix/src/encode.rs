//! Canonical payment → Pix `cob` request. Currency, amount and CPF/CNPJ are checked before a
//! request exists; invalid input is refused and nothing is sent.

use payproxy_plugin_sdk::currency;
use payproxy_plugin_sdk::helpers::encode;
use payproxy_plugin_sdk::payment::{
    Context, HttpRequest, Operation, Payment, PaymentMethod, Refusal,
};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::taxid::{self, TaxId, TaxIdError};

/// `solicitacaoPagador` is at most 140 characters.
pub const MAX_REQUEST_TEXT: usize = 140;

/// Length of the txids this plugin derives (the API allows 26–35 alphanumerics).
pub const TXID_LENGTH: usize = 32;

/// Build the request for `payment`, or refuse it.
pub fn request(
    config: &Config,
    payment: &Payment,
    context: &Context,
) -> Result<HttpRequest, Refusal> {
    let base = &config.base_path;
    let (method, txid, body) = match payment.operation {
        Operation::Authorize => (
            "PUT",
            txid(&context.idempotency_key),
            Some(cob(config, payment, context)?),
        ),
        Operation::Status => ("GET", existing_txid(payment)?.to_string(), None),
        Operation::Void => (
            "PATCH",
            existing_txid(payment)?.to_string(),
            Some(json!({ "status": "REMOVIDA_PELO_USUARIO_RECEBEDOR" })),
        ),
        Operation::Capture | Operation::Refund => {
            return Err(Refusal::invalid(
                None,
                "operation_unsupported",
                "Pix charges are paid at once; this provider supports no capture or refund",
            ))
        }
    };
    // No idempotency-key header: the txid in the path makes a resend find the same charge.
    let mut headers = match body {
        Some(_) => encode::json_headers(None),
        None => Vec::new(),
    };
    // Without a token the request still goes out: the PSP answers 401 (answered, not
    // processed) and the host may try another provider.
    headers.extend(context.credential("api_key").map(encode::bearer));
    Ok(encode::json_request(
        method,
        format!("{base}/cob/{txid}"),
        headers,
        body,
    ))
}

/// The txid for an idempotency key: 32 lower-case hex characters of its SHA-256, so the same
/// key always creates (or finds) the same charge.
pub fn txid(idempotency_key: &str) -> String {
    let digest = Sha256::digest(idempotency_key.as_bytes());
    let mut id = hex::encode(digest);
    id.truncate(TXID_LENGTH);
    id
}

/// Whether `id` is a txid the API accepts: 26–35 ASCII alphanumerics.
pub fn valid_txid(id: &str) -> bool {
    (26..=35).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn existing_txid(payment: &Payment) -> Result<&str, Refusal> {
    match payment.provider_reference.as_deref() {
        None | Some("") => Err(Refusal::invalid(
            Some("id"),
            "parameter_missing",
            "the provider reference of the payment is unknown",
        )),
        Some(id) if valid_txid(id) => Ok(id),
        Some(_) => Err(Refusal::invalid(
            Some("id"),
            "invalid_reference",
            "the provider reference is malformed",
        )),
    }
}

/// The amount as a BRL decimal string; Pix only moves reais.
pub fn brl_amount(payment: &Payment) -> Result<String, Refusal> {
    let money = encode::required_amount(payment)?;
    let code = encode::checked_amount_in(money, "BRL", "Pix")?;
    // BRL is in the table, so this is always Some.
    Ok(currency::to_decimal(money.minor, &code).unwrap_or_default())
}

/// The `cob` body: `{"calendario", "devedor"?, "valor", "chave"?, "solicitacaoPagador", "infoAdicionais"}`.
fn cob(config: &Config, payment: &Payment, context: &Context) -> Result<Value, Refusal> {
    let tax_id = match &payment.method {
        Some(PaymentMethod::InstantTransfer(t)) if t.scheme.eq_ignore_ascii_case("pix") => {
            t.tax_id.as_deref()
        }
        None => return Err(encode::missing_method()),
        Some(_) => {
            return Err(encode::unsupported_method(
                "this provider only takes Pix instant transfers",
            ))
        }
    };
    encode::refuse_manual_capture(payment, "Pix")?;
    let amount = brl_amount(payment)?;
    let debtor = match tax_id.filter(|t| !t.trim().is_empty()) {
        Some(raw) => Some(debtor(raw, payment)?),
        None => None,
    };
    let reference = encode::reference(payment, context);
    let text = payment
        .description
        .clone()
        .unwrap_or_else(|| reference.clone());
    let mut body = Map::new();
    body.insert(
        "calendario".into(),
        json!({ "expiracao": config.expiration_seconds }),
    );
    if let Some(debtor) = debtor {
        body.insert("devedor".into(), debtor);
    }
    body.insert("valor".into(), json!({ "original": amount }));
    if let Some(key) = context.credential("pix_key").or(config.pix_key.as_deref()) {
        body.insert("chave".into(), key.into());
    }
    body.insert(
        "solicitacaoPagador".into(),
        text.chars()
            .take(MAX_REQUEST_TEXT)
            .collect::<String>()
            .into(),
    );
    body.insert(
        "infoAdicionais".into(),
        json!([{ "nome": "reference", "valor": reference }]),
    );
    Ok(body.into())
}

/// `{"cpf": …}` or `{"cnpj": …}`, with `nome` from metadata `payer_name` when given.
fn debtor(raw: &str, payment: &Payment) -> Result<Value, Refusal> {
    let id = taxid::parse(raw).map_err(|e| {
        let why = match e {
            TaxIdError::Format => "it must have 11 (CPF) or 14 (CNPJ) digits",
            TaxIdError::Repeated => "its digits are all the same",
            TaxIdError::CheckDigits => "its check digits do not match",
        };
        Refusal::invalid(
            Some("tax_id"),
            "invalid_tax_id",
            format!("the CPF/CNPJ is not valid: {why}"),
        )
    })?;
    let mut debtor = match id {
        TaxId::Cpf(digits) => json!({ "cpf": digits }),
        TaxId::Cnpj(digits) => json!({ "cnpj": digits }),
    };
    if let Some((_, name)) = payment.metadata.iter().find(|(k, _)| k == "payer_name") {
        debtor["nome"] = name.clone().into();
    }
    Ok(debtor)
}
