//! Canonical payment → signed GrabPay request. Everything is validated before a request is
//! built, so a refusal means nothing was sent.

use payproxy_plugin_sdk::helpers::encode;
use payproxy_plugin_sdk::payment::{
    Context, HttpRequest, Operation, Payment, PaymentMethod, Refusal,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Config, Credentials};
use crate::signing::{imf_fixdate, Signed};

/// Where every call lives, below the provider's base URL.
pub const BASE_PATH: &str = "/grabpay/v2/charge";
const JSON: &str = "application/json";
/// `partnerTxID` and `partnerGroupTxID` limit.
const MAX_REFERENCE: usize = 64;

/// `POST /grabpay/v2/charge/init`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChargeInit {
    /// Ours, derived from the host's idempotency key: GrabPay's idempotency key.
    #[serde(rename = "partnerTxID")]
    pub partner_tx_id: String,
    /// The merchant reference (falls back to `partnerTxID`).
    #[serde(rename = "partnerGroupTxID")]
    pub partner_group_tx_id: String,
    /// Minor units.
    pub amount: i64,
    /// Upper-case ISO 4217.
    pub currency: String,
    /// Shown to the shopper in the wallet.
    pub description: String,
    /// From the credentials.
    #[serde(rename = "merchantID")]
    pub merchant_id: String,
    /// `true` for manual capture: the charge ends `authorised` and waits for a capture.
    #[serde(rename = "authoriseOnly")]
    pub authorise_only: bool,
}

/// `POST /grabpay/v2/charge/{txID}/capture|refund|cancel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FollowUp {
    /// Derived from this follow-up's own idempotency key.
    #[serde(rename = "partnerTxID")]
    pub partner_tx_id: String,
    /// From the credentials.
    #[serde(rename = "merchantID")]
    pub merchant_id: String,
    /// Minor units; absent = the full (remaining) amount.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub amount: Option<i64>,
    /// With `amount`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub currency: Option<String>,
}

/// GrabPay's `partnerTxID` for a host idempotency key: the first 32 hex digits of its
/// SHA-256. Stable across resends, fixed length, in GrabPay's character set whatever the key.
pub fn partner_tx_id(idempotency_key: &str) -> String {
    let digest = Sha256::digest(idempotency_key.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Build the signed request for `payment`.
pub fn encode(
    config: &Config,
    payment: &Payment,
    context: &Context,
) -> Result<HttpRequest, Refusal> {
    let (method, path, body) = match payment.operation {
        Operation::Authorize => (
            "POST",
            format!("{BASE_PATH}/init"),
            init_body(config, payment, context)?,
        ),
        Operation::Capture => follow_up(config, payment, context, "capture")?,
        Operation::Refund => follow_up(config, payment, context, "refund")?,
        Operation::Void => follow_up(config, payment, context, "cancel")?,
        Operation::Status => {
            // By GrabPay's txID when the host knows it, else by our partnerTxID (an
            // ambiguous first attempt has no txID yet, but the same idempotency key).
            let id = match &payment.provider_reference {
                Some(reference) => path_segment(reference)?,
                None => partner_tx_id(&context.idempotency_key),
            };
            ("GET", format!("{BASE_PATH}/{id}/status"), Vec::new())
        }
    };
    let credentials = Credentials::from_context(context)?;
    let date = imf_fixdate(context.now_ms);
    let content_type = if body.is_empty() { "" } else { JSON };
    let signature = Signed {
        method,
        content_type,
        date: &date,
        path: &path,
        body: &body,
    }
    .signature(credentials.partner_secret.as_bytes());
    let mut headers = vec![("date".to_string(), date)];
    if !content_type.is_empty() {
        headers.push(("content-type".into(), JSON.into()));
    }
    headers.push((
        "authorization".into(),
        format!("{}:{signature}", credentials.partner_id),
    ));
    Ok(HttpRequest {
        method: method.into(),
        path,
        query: None,
        headers,
        body: Some(body),
    })
}

fn init_body(config: &Config, payment: &Payment, context: &Context) -> Result<Vec<u8>, Refusal> {
    match &payment.method {
        Some(PaymentMethod::Ewallet(wallet)) if wallet.wallet.eq_ignore_ascii_case("grabpay") => {}
        Some(_) => {
            return Err(Refusal::invalid(
                Some("method"),
                "payment_method_unsupported",
                "GrabPay takes only e-wallet payments with wallet grabpay",
            ))
        }
        None => {
            return Err(Refusal::invalid(
                Some("method"),
                "parameter_missing",
                "a payment method (e-wallet grabpay) is required",
            ))
        }
    }
    let money = encode::required_amount(payment)?;
    let amount = positive(money.minor)?;
    let currency = config.currency(&money.currency)?;
    let partner_tx_id = partner_tx_id(&context.idempotency_key);
    let reference = match &payment.merchant_reference {
        Some(reference) => checked_reference(reference)?.to_string(),
        None => partner_tx_id.clone(),
    };
    let description = payment
        .description
        .as_deref()
        .map(|d| d.chars().filter(|c| !c.is_control()).collect::<String>())
        .filter(|d| !d.trim().is_empty())
        .unwrap_or_else(|| config.description.clone());
    let credentials = Credentials::from_context(context)?;
    let body = ChargeInit {
        partner_tx_id,
        partner_group_tx_id: reference,
        amount,
        currency,
        description,
        merchant_id: credentials.merchant_id.to_string(),
        authorise_only: payment.manual_capture,
    };
    Ok(to_json(&body))
}

fn follow_up(
    config: &Config,
    payment: &Payment,
    context: &Context,
    action: &str,
) -> Result<(&'static str, String, Vec<u8>), Refusal> {
    let reference = payment.provider_reference.as_deref().ok_or_else(|| {
        Refusal::invalid(
            Some("provider_reference"),
            "parameter_missing",
            format!("a {action} needs the GrabPay transaction id of the payment"),
        )
    })?;
    let tx_id = path_segment(reference)?;
    let (amount, currency) = match (&payment.amount, payment.operation) {
        // A cancel releases the whole authorisation: no amount.
        (Some(money), Operation::Capture | Operation::Refund) => (
            Some(positive(money.minor)?),
            Some(config.currency(&money.currency)?),
        ),
        _ => (None, None),
    };
    let credentials = Credentials::from_context(context)?;
    let body = FollowUp {
        partner_tx_id: partner_tx_id(&context.idempotency_key),
        merchant_id: credentials.merchant_id.to_string(),
        amount,
        currency,
    };
    Ok((
        "POST",
        format!("{BASE_PATH}/{tx_id}/{action}"),
        to_json(&body),
    ))
}

fn positive(minor: i64) -> Result<i64, Refusal> {
    if minor <= 0 {
        return Err(Refusal::invalid(
            Some("amount"),
            "amount_invalid",
            "amount must be a positive number of minor units",
        ));
    }
    Ok(minor)
}

/// A merchant reference GrabPay can carry: non-empty, at most 64 characters, no control
/// characters.
fn checked_reference(reference: &str) -> Result<&str, Refusal> {
    if reference.is_empty()
        || reference.chars().count() > MAX_REFERENCE
        || reference.chars().any(char::is_control)
    {
        return Err(Refusal::invalid(
            Some("merchant_reference"),
            "parameter_invalid",
            "merchant reference must be 1 to 64 characters without control characters",
        ));
    }
    Ok(reference)
}

/// A provider id safe to put in a path: ASCII letters, digits, `-` and `_` only.
fn path_segment(reference: &str) -> Result<String, Refusal> {
    let ok = !reference.is_empty()
        && reference.len() <= MAX_REFERENCE
        && reference
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(Refusal::invalid(
            Some("provider_reference"),
            "parameter_invalid",
            "the GrabPay transaction id has unexpected characters",
        ));
    }
    Ok(reference.to_string())
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Our own structs of strings and integers always serialise.
    serde_json::to_vec(value).unwrap_or_default()
}
