//! Canonical payment → iDEAL request. The IBAN, BIC, currency and amount are checked before a
//! request exists; invalid input is refused and nothing is sent.

use payproxy_plugin_sdk::currency;
use payproxy_plugin_sdk::helpers::encode;
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
            format!(
                "{base}/transactions/{}",
                encode::provider_reference(payment)?
            ),
            None,
        ),
        Operation::Refund => {
            let id = encode::provider_reference(payment)?;
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
    let mut headers = match body {
        Some(_) => encode::json_headers(Some(&context.idempotency_key)),
        None => Vec::new(),
    };
    // Without a key the request still goes out: the provider answers 401 (answered, not
    // processed) and the host may try another provider.
    headers.extend(context.credential("api_key").map(encode::bearer));
    Ok(encode::json_request(method, path, headers, body))
}

/// The amount as iDEAL's decimal string; only euros exist in iDEAL.
pub fn euro_amount(payment: &Payment, required: bool) -> Result<Option<String>, Refusal> {
    let Some(money) = payment.amount.as_ref() else {
        return if required {
            Err(encode::missing_amount())
        } else {
            Ok(None)
        };
    };
    let code = encode::checked_amount_in(money, "EUR", "iDEAL")?;
    // EUR is in the table, so this is always Some.
    Ok(currency::to_decimal(money.minor, &code))
}

/// `POST /transactions`: `{"amount", "currency", "iban"?, "bic"?, "reference", "returnUrl", "description"}`.
fn create(config: &Config, payment: &Payment, context: &Context) -> Result<Value, Refusal> {
    let bank = match &payment.method {
        Some(PaymentMethod::BankRedirect(bank)) if bank.scheme.eq_ignore_ascii_case("ideal") => {
            bank
        }
        None => return Err(encode::missing_method()),
        Some(_) => {
            return Err(encode::unsupported_method(
                "this provider only takes iDEAL bank redirects",
            ))
        }
    };
    encode::refuse_manual_capture(payment, "iDEAL")?;
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
    let reference = encode::reference(payment, context);
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
