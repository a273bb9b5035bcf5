//! Canonical payment → iDEAL request. The IBAN, BIC, currency and amount are checked before a
//! request exists; invalid input is refused and nothing is sent.

use payproxy_plugin_sdk::currency;
use payproxy_plugin_sdk::payment::{
    Context, HttpRequest, Operation, Payment, PaymentMethod, Refusal,
};
use serde_json::{Map, Value};

use crate::config::Config;
use crate::iban::{self, IbanError};

/// iDEAL descriptions are at most 35 characters; longer ones are cut.
pub const MAX_DESCRIPTION: usize = 35;

/// Build the request for `payment`, or refuse it.
pub fn request(
    config: &Config,
    payment: &Payment,
    context: &Context,
) -> Result<HttpRequest, Refusal> {
    let base = &config.base_path;
    let (method, path, body) = match payment.operation {
        Operation::Authorize => (
            "POST",
            format!("{base}/transactions"),
            Some(create(config, payment, context)?),
        ),
        Operation::Status => (
            "GET",
            format!("{base}/transactions/{}", transaction_id(payment)?),
            None,
        ),
        Operation::Refund => {
            let id = transaction_id(payment)?;
            (
                "POST",
                format!("{base}/transactions/{id}/refunds"),
                Some(refund(payment)?),
            )
        }
        Operation::Capture | Operation::Void => {
            return Err(Refusal::invalid(
                None,
                "operation_unsupported",
                "iDEAL payments are captured at once and cannot be captured or voided",
            ))
        }
    };
    let mut headers = Vec::new();
    if body.is_some() {
        headers.push(("content-type".to_string(), "application/json".to_string()));
        headers.push((
            "idempotency-key".to_string(),
            context.idempotency_key.clone(),
        ));
    }
    // Without a key the request still goes out: the provider answers 401 (answered, not
    // processed) and the host may try another provider.
    if let Some(key) = context
        .credentials
        .iter()
        .find(|(k, v)| k == "api_key" && !v.is_empty())
    {
        headers.push(("authorization".to_string(), format!("Bearer {}", key.1)));
    }
    Ok(HttpRequest {
        method: method.into(),
        path,
        query: None,
        headers,
        body: body.map(|b| b.to_string().into_bytes()),
    })
}

/// The amount as iDEAL's decimal string; only euros exist in iDEAL.
pub fn euro_amount(payment: &Payment, required: bool) -> Result<Option<String>, Refusal> {
    let Some(money) = payment.amount.as_ref() else {
        return if required {
            Err(Refusal::invalid(
                Some("amount"),
                "parameter_missing",
                "amount is required",
            ))
        } else {
            Ok(None)
        };
    };
    let code = currency::normalise(&money.currency).ok_or_else(|| {
        Refusal::invalid(
            Some("currency"),
            "invalid_currency",
            format!("currency {:?} is not an ISO 4217 code", money.currency),
        )
    })?;
    if code != "EUR" {
        return Err(Refusal::invalid(
            Some("currency"),
            "currency_unsupported",
            format!("iDEAL only accepts EUR, not {code}"),
        ));
    }
    if money.minor <= 0 {
        return Err(Refusal::invalid(
            Some("amount"),
            "invalid_amount",
            "amount must be positive",
        ));
    }
    // EUR is in the table, so this is always Some.
    Ok(currency::to_decimal(money.minor, &code))
}

fn reference(payment: &Payment, context: &Context) -> String {
    payment
        .merchant_reference
        .clone()
        .or_else(|| payment.id.clone())
        .unwrap_or_else(|| context.idempotency_key.clone())
}

/// `POST /transactions`: `{"amount", "currency", "iban"?, "bic"?, "reference", "returnUrl", "description"}`.
fn create(config: &Config, payment: &Payment, context: &Context) -> Result<Value, Refusal> {
    let bank = match &payment.method {
        Some(PaymentMethod::BankRedirect(bank)) if bank.scheme.eq_ignore_ascii_case("ideal") => {
            bank
        }
        None => {
            return Err(Refusal::invalid(
                Some("payment_method"),
                "parameter_missing",
                "a payment method is required",
            ))
        }
        Some(_) => {
            return Err(Refusal::invalid(
                Some("payment_method"),
                "payment_method_unsupported",
                "this provider only takes iDEAL bank redirects",
            ))
        }
    };
    if payment.manual_capture {
        return Err(Refusal::invalid(
            Some("capture_method"),
            "manual_capture_unsupported",
            "iDEAL payments cannot be authorised for a later capture",
        ));
    }
    let amount = euro_amount(payment, true)?.unwrap_or_default();
    let iban = match bank.iban.as_deref().filter(|i| !i.trim().is_empty()) {
        Some(raw) => Some(iban::validate(raw).map_err(|e| invalid_iban(raw, e))?),
        None => None,
    };
    let bic = match bank.bic.as_deref().filter(|b| !b.trim().is_empty()) {
        Some(raw) if iban::valid_bic(raw) => Some(raw.trim().to_ascii_uppercase()),
        Some(_) => {
            return Err(Refusal::invalid(
                Some("bic"),
                "invalid_bic",
                "the BIC is not valid",
            ))
        }
        None => None,
    };
    let return_url = payment
        .return_url
        .as_deref()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            Refusal::invalid(
                Some("return_url"),
                "parameter_missing",
                "a return URL is required: the shopper comes back there from the bank",
            )
        })?;
    let reference = reference(payment, context);
    let description = payment
        .description
        .clone()
        .or_else(|| config.default_description.clone())
        .unwrap_or_else(|| reference.clone());
    let mut body = Map::new();
    body.insert("amount".into(), amount.into());
    body.insert("currency".into(), "EUR".into());
    if let Some(iban) = iban {
        body.insert("iban".into(), iban.into());
    }
    if let Some(bic) = bic {
        body.insert("bic".into(), bic.into());
    }
    body.insert("reference".into(), reference.into());
    body.insert("returnUrl".into(), return_url.into());
    body.insert(
        "description".into(),
        description
            .chars()
            .take(MAX_DESCRIPTION)
            .collect::<String>()
            .into(),
    );
    Ok(body.into())
}

/// The refusal for a bad IBAN; the message shows at most its last four characters.
fn invalid_iban(raw: &str, error: IbanError) -> Refusal {
    let shown = iban::masked(raw);
    let why = match error {
        IbanError::Format => {
            "it must be a country code, two check digits and letters or digits".to_string()
        }
        IbanError::Length => "its length is wrong for its country".to_string(),
        IbanError::Checksum => "its check digits do not match".to_string(),
    };
    Refusal::invalid(
        Some("iban"),
        "invalid_iban",
        format!("the IBAN ending in {shown} is not valid: {why}"),
    )
}

/// `POST /transactions/{id}/refunds`: `{"amount"?, "currency", "reference"?}`; no amount
/// refunds what is left.
fn refund(payment: &Payment) -> Result<Value, Refusal> {
    let mut body = Map::new();
    if let Some(amount) = euro_amount(payment, false)? {
        body.insert("amount".into(), amount.into());
    }
    body.insert("currency".into(), "EUR".into());
    if let Some(reference) = &payment.merchant_reference {
        body.insert("reference".into(), reference.clone().into());
    }
    Ok(body.into())
}

/// The owning transaction's id, checked to be safe inside a path.
fn transaction_id(payment: &Payment) -> Result<&str, Refusal> {
    let id = payment.provider_reference.as_deref().unwrap_or_default();
    if id.is_empty() {
        return Err(Refusal::invalid(
            Some("id"),
            "parameter_missing",
            "the provider reference of the payment is unknown",
        ));
    }
    if id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(Refusal::invalid(
            Some("id"),
            "invalid_reference",
            "the provider reference is malformed",
        ));
    }
    Ok(id)
}
