//! Canonical payment → DANA XML request. Everything is validated before the XML is
//! written, so a refusal means nothing was sent.

use payproxy_plugin_sdk::currency;
use payproxy_plugin_sdk::helpers::encode;
use payproxy_plugin_sdk::payment::{
    Context, HttpRequest, Operation, Payment, PaymentMethod, Refusal,
};

use crate::config::{Config, Credentials};
use crate::time::req_time;
use crate::xml::{self, Amount, Order, Request, RequestBody, RequestHead};

/// The one endpoint; `<function>` selects the call.
pub const PATH: &str = "/dana/v1/payment.xml";
/// `merchantTransId` and id limit.
const MAX_ID: usize = 64;
/// `orderTitle` limit.
const MAX_TITLE: usize = 64;

/// Build the request for `payment`.
pub fn encode(
    config: &Config,
    payment: &Payment,
    context: &Context,
) -> Result<HttpRequest, Refusal> {
    let (function, body) = match payment.operation {
        Operation::Authorize => (
            "dana.acquiring.order.create",
            create(config, payment, context)?,
        ),
        Operation::Status => (
            "dana.acquiring.order.query",
            order_ref(payment, context, "query")?,
        ),
        Operation::Void => (
            "dana.acquiring.order.cancel",
            order_ref(payment, context, "cancel")?,
        ),
        Operation::Refund => ("dana.acquiring.order.refund", refund(payment, context)?),
        Operation::Capture => {
            return Err(Refusal::invalid(
                None,
                "operation_unsupported",
                "DANA captures on payment: there is no separate capture",
            ))
        }
    };
    let credentials = Credentials::from_context(context)?;
    let request = Request {
        head: RequestHead {
            version: "2.0".into(),
            function: function.into(),
            client_id: credentials.client_id.into(),
            req_time: req_time(context.now_ms),
            req_msg_id: context.idempotency_key.clone(),
        },
        body,
    };
    let text = xml::write(&request);
    Ok(HttpRequest {
        method: "POST".into(),
        path: PATH.into(),
        query: None,
        headers: vec![("content-type".into(), "application/xml".into())],
        body: Some(text.into_bytes()),
    })
}

fn create(config: &Config, payment: &Payment, context: &Context) -> Result<RequestBody, Refusal> {
    let wallet = match &payment.method {
        Some(PaymentMethod::Ewallet(wallet)) if wallet.wallet.eq_ignore_ascii_case("dana") => {
            wallet
        }
        Some(_) => {
            return Err(Refusal::invalid(
                Some("method"),
                "payment_method_unsupported",
                "DANA takes only e-wallet payments with wallet dana",
            ))
        }
        None => {
            return Err(Refusal::invalid(
                Some("method"),
                "parameter_missing",
                "a payment method (e-wallet dana) is required",
            ))
        }
    };
    if payment.manual_capture {
        return Err(Refusal::invalid(
            Some("capture_method"),
            "operation_unsupported",
            "DANA has no separate capture: manual capture is not available",
        ));
    }
    let amount = amount(payment)?.ok_or_else(encode::missing_amount)?;
    let phone = wallet
        .phone
        .as_deref()
        .or(payment.customer.phone.as_deref())
        .ok_or_else(|| {
            Refusal::invalid(
                Some("phone"),
                "parameter_missing",
                "a DANA payment needs the phone number linked to the wallet",
            )
        })?;
    if !is_e164(phone) {
        // The message never repeats the number.
        return Err(Refusal::invalid(
            Some("phone"),
            "phone_invalid",
            "phone must be in E.164 format (+ and 8 to 15 digits)",
        ));
    }
    let reference = match &payment.merchant_reference {
        Some(reference) => checked_id(reference, "merchant_reference")?.to_string(),
        None => context.idempotency_key.clone(),
    };
    let title = payment
        .description
        .as_deref()
        .map(clean_text)
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(|| config.order_title.clone())
        .chars()
        .take(MAX_TITLE)
        .collect();
    let credentials = Credentials::from_context(context)?;
    Ok(RequestBody {
        merchant_id: credentials.merchant_id.into(),
        merchant_trans_id: Some(reference),
        order: Some(Order {
            order_title: title,
            order_amount: amount,
        }),
        shopper_phone: Some(phone.into()),
        ..RequestBody::default()
    })
}

/// Query and cancel: by DANA's id when the host knows it, else by the merchant reference.
fn order_ref(payment: &Payment, context: &Context, what: &str) -> Result<RequestBody, Refusal> {
    let (acquirement_id, merchant_trans_id) =
        match (&payment.provider_reference, &payment.merchant_reference) {
            (Some(id), _) => (
                Some(checked_id(id, "provider_reference")?.to_string()),
                None,
            ),
            (None, Some(reference)) => (
                None,
                Some(checked_id(reference, "merchant_reference")?.to_string()),
            ),
            (None, None) => {
                return Err(Refusal::invalid(
                    Some("provider_reference"),
                    "parameter_missing",
                    format!("a {what} needs the DANA acquirement id or the merchant reference"),
                ))
            }
        };
    let credentials = Credentials::from_context(context)?;
    Ok(RequestBody {
        merchant_id: credentials.merchant_id.into(),
        merchant_trans_id,
        acquirement_id,
        ..RequestBody::default()
    })
}

fn refund(payment: &Payment, context: &Context) -> Result<RequestBody, Refusal> {
    let id = payment.provider_reference.as_deref().ok_or_else(|| {
        Refusal::invalid(
            Some("provider_reference"),
            "parameter_missing",
            "a refund needs the DANA acquirement id of the payment",
        )
    })?;
    let acquirement_id = checked_id(id, "provider_reference")?.to_string();
    let refund_amount = amount(payment)?;
    let credentials = Credentials::from_context(context)?;
    Ok(RequestBody {
        merchant_id: credentials.merchant_id.into(),
        acquirement_id: Some(acquirement_id),
        refund_amount,
        ..RequestBody::default()
    })
}

/// The payment's amount as DANA's decimal, if any; only positive IDR amounts.
fn amount(payment: &Payment) -> Result<Option<Amount>, Refusal> {
    let Some(money) = &payment.amount else {
        return Ok(None);
    };
    let Some(code) = currency::normalise(&money.currency) else {
        return Err(Refusal::invalid(
            Some("currency"),
            "currency_invalid",
            "currency is not an ISO 4217 code",
        ));
    };
    if code != "IDR" {
        return Err(Refusal::invalid(
            Some("currency"),
            "currency_unsupported",
            format!("DANA accepts only IDR, not {code}"),
        ));
    }
    if money.minor <= 0 {
        return Err(Refusal::invalid(
            Some("amount"),
            "amount_invalid",
            "amount must be a positive number of minor units",
        ));
    }
    // IDR is in the currency table, so formatting cannot fail; refuse rather than unwrap.
    let value = currency::to_decimal(money.minor, &code).ok_or_else(|| {
        Refusal::invalid(
            Some("currency"),
            "currency_invalid",
            "currency has no known exponent",
        )
    })?;
    Ok(Some(Amount {
        value,
        currency: code,
    }))
}

/// `+` then 8 to 15 digits.
fn is_e164(phone: &str) -> bool {
    phone
        .strip_prefix('+')
        .is_some_and(|d| (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}

/// An id or reference XML can carry intact: 1 to 64 characters, none of them control
/// characters or XML non-characters, no surrounding whitespace (some XML readers trim it).
fn checked_id<'a>(value: &'a str, param: &str) -> Result<&'a str, Refusal> {
    let ok = !value.is_empty()
        && value.chars().count() <= MAX_ID
        && value.trim() == value
        && value.chars().all(xml_safe);
    if !ok {
        return Err(Refusal::invalid(
            Some(param),
            "parameter_invalid",
            format!("{param} must be 1 to {MAX_ID} characters, without control characters or surrounding spaces"),
        ));
    }
    Ok(value)
}

/// Free text made safe for XML: control characters and non-characters dropped.
fn clean_text(text: &str) -> String {
    text.chars().filter(|c| xml_safe(*c)).collect()
}

fn xml_safe(c: char) -> bool {
    !c.is_control() && c != '\u{FFFE}' && c != '\u{FFFF}'
}
