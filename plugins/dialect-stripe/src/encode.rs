//! Egress: the canonical payment → a Stripe API request (form body, bearer key,
//! `Idempotency-Key`).

use payproxy_plugin_sdk::currency;
use payproxy_plugin_sdk::payment::{
    Context, HttpRequest, Operation, Payment, Refusal, RefusalKind,
};

use crate::config::Config;
use crate::form::FormBuilder;
use crate::method::{self, stripe_type};
use crate::{refuse, validate};

/// Build the request, refusing invalid input before anything is sent.
pub fn request(
    config: &Config,
    payment: &Payment,
    context: &Context,
) -> Result<HttpRequest, Refusal> {
    check_metadata(config, payment)?;
    if let Some(m) = &payment.method {
        let t = stripe_type(m);
        if t.is_empty()
            || !t
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(refuse::bad_value(
                "payment_method_data[type]",
                "a lower-case method type",
            ));
        }
    }
    let mut body = FormBuilder::new();
    let (method, path) = match (payment.operation, &payment.provider_reference) {
        (Operation::Authorize, None) => {
            create(config, payment, &mut body)?;
            ("POST", "/v1/payment_intents".to_string())
        }
        (Operation::Authorize, Some(_)) => {
            purchase(payment, &mut body);
            (
                "POST",
                format!("/v1/payment_intents/{}/confirm", reference(payment)?),
            )
        }
        (Operation::Capture, _) => {
            let path = format!("/v1/payment_intents/{}/capture", reference(payment)?);
            body.push_opt(
                "amount_to_capture",
                follow_up_amount(payment, "amount_to_capture")?.as_deref(),
            );
            ("POST", path)
        }
        (Operation::Void, _) => (
            "POST",
            format!("/v1/payment_intents/{}/cancel", reference(payment)?),
        ),
        (Operation::Status, _) => (
            "GET",
            format!("/v1/payment_intents/{}", reference(payment)?),
        ),
        (Operation::Refund, _) => {
            body.push("payment_intent", reference(payment)?);
            body.push_opt("amount", follow_up_amount(payment, "amount")?.as_deref());
            metadata(config, payment, &mut body);
            ("POST", "/v1/refunds".to_string())
        }
    };
    let mut headers = Vec::new();
    if let Some((_, key)) = context.credentials.iter().find(|(k, _)| k == "api_key") {
        headers.push(("authorization".to_string(), format!("Bearer {key}")));
    }
    if let Some(version) = &config.stripe_version {
        headers.push(("stripe-version".to_string(), version.clone()));
    }
    let body = if method == "POST" {
        headers.push((
            "content-type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        ));
        if !context.idempotency_key.is_empty() {
            headers.push((
                "idempotency-key".to_string(),
                context.idempotency_key.clone(),
            ));
        }
        Some(body.finish().into_bytes())
    } else {
        None
    };
    Ok(HttpRequest {
        method: method.to_string(),
        path,
        query: None,
        headers,
        body,
    })
}

/// `POST /v1/payment_intents`: confirmed at once (`confirm=true`), like every payproxy
/// authorization; `capture_method` only when it is not Stripe's default.
fn create(config: &Config, payment: &Payment, body: &mut FormBuilder) -> Result<(), Refusal> {
    let money = payment
        .amount
        .as_ref()
        .ok_or_else(|| refuse::missing("amount"))?;
    if money.minor <= 0 {
        return Err(refuse::too_small("amount"));
    }
    let currency = currency::normalise(&money.currency)
        .ok_or_else(|| refuse::currency("currency", &money.currency))?;
    body.push("amount", &money.minor.to_string())
        .push("currency", &currency.to_ascii_lowercase())
        .push("confirm", "true");
    if payment.manual_capture {
        body.push("capture_method", "manual");
    }
    purchase(payment, body);
    body.push_opt(
        "customer",
        payment
            .customer
            .id
            .as_deref()
            .filter(|id| validate::object_id(id)),
    )
    .push_opt("description", payment.description.as_deref());
    metadata(config, payment, body);
    Ok(())
}

/// Fields a create and a confirm share: method, shopper, options, return URL.
fn purchase(payment: &Payment, body: &mut FormBuilder) {
    method::encode(payment, body);
    body.push_opt("receipt_email", payment.customer.email.as_deref())
        .push_opt("return_url", payment.return_url.as_deref());
}

/// `metadata[k]=v`, and the merchant reference under the configured key.
fn metadata(config: &Config, payment: &Payment, body: &mut FormBuilder) {
    let key = &config.egress_reference_key;
    for (k, v) in &payment.metadata {
        if !(k == key && payment.merchant_reference.is_some()) {
            body.push(&format!("metadata[{k}]"), v);
        }
    }
    if let Some(reference) = &payment.merchant_reference {
        body.push(&format!("metadata[{key}]"), reference);
    }
}

/// Metadata keys with brackets would nest; Stripe allows 50 keys, the reference included.
fn check_metadata(config: &Config, payment: &Payment) -> Result<(), Refusal> {
    let bad = payment
        .metadata
        .iter()
        .any(|(k, _)| k.is_empty() || k.contains(['[', ']']));
    let reference_key = &config.egress_reference_key;
    let count = match &payment.merchant_reference {
        Some(_) => {
            payment
                .metadata
                .iter()
                .filter(|(k, _)| k != reference_key)
                .count()
                + 1
        }
        None => payment.metadata.len(),
    };
    if bad || count > 50 {
        return Err(Refusal::invalid(
            Some("metadata"),
            "invalid_metadata",
            "metadata keys must be non-empty and without brackets, at most 50 with the merchant reference.",
        ));
    }
    Ok(())
}

/// The amount of a capture or refund; its currency is not sent (Stripe uses the intent's).
fn follow_up_amount(payment: &Payment, param: &str) -> Result<Option<String>, Refusal> {
    match &payment.amount {
        None => Ok(None),
        Some(m) if m.minor > 0 => Ok(Some(m.minor.to_string())),
        Some(_) => Err(refuse::too_small(param)),
    }
}

/// The provider's id of the payment a follow-up is about.
fn reference(payment: &Payment) -> Result<&str, Refusal> {
    match payment.provider_reference.as_deref() {
        Some(r) if validate::object_id(r) => Ok(r),
        _ => Err(Refusal {
            kind: RefusalKind::NotFound,
            status: 404,
            code: "resource_missing".into(),
            message: "No provider reference for this payment.".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use payproxy_plugin_sdk::payment::Money;

    fn context(credentials: Vec<(String, String)>) -> Context {
        Context {
            provider: "p".into(),
            credentials,
            now_ms: 0,
            idempotency_key: String::new(),
        }
    }

    #[test]
    fn optional_headers() {
        let config = Config {
            stripe_version: Some("2024-06-20".into()),
            ..Config::default()
        };
        let mut payment = Payment::new(Operation::Authorize);
        payment.amount = Some(Money {
            minor: 100,
            currency: "eur".into(),
        });
        let request = request(&config, &payment, &context(vec![])).expect("valid");
        let names: Vec<&str> = request.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["stripe-version", "content-type"],
            "no key, no idempotency key: neither header"
        );
        assert_eq!(request.header("stripe-version"), Some("2024-06-20"));
    }

    #[test]
    fn merchant_reference_replaces_a_metadata_order_id() {
        let mut payment = Payment::new(Operation::Refund);
        payment.provider_reference = Some("pi_1".into());
        payment.merchant_reference = Some("B".into());
        payment.metadata = vec![("order_id".into(), "A".into()), ("x".into(), "1".into())];
        let request = request(&Config::default(), &payment, &context(vec![])).expect("valid");
        let body = String::from_utf8(request.body.unwrap_or_default()).unwrap_or_default();
        assert_eq!(
            body,
            "payment_intent=pi_1&metadata%5Bx%5D=1&metadata%5Border_id%5D=B"
        );
    }
}
