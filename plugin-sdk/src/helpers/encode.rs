//! Building a provider request: the checks every JSON API needs before anything is sent
//! (amount, currency, references), and its headers and body.
//!
//! Refusals are `invalid_request` (400) naming the parameter; their messages never repeat
//! secrets or card numbers.
//!
//! ```
//! use payproxy_plugin_sdk::helpers::encode;
//! use payproxy_plugin_sdk::payment::{Money, Operation, Payment};
//!
//! let mut payment = Payment::new(Operation::Authorize);
//! payment.amount = Some(Money { minor: 1050, currency: "eur".into() });
//! let money = encode::required_amount(&payment).unwrap();
//! assert_eq!(encode::checked_amount_in(money, "EUR", "iDEAL").unwrap(), "EUR");
//! assert_eq!(encode::checked_amount_in(money, "BRL", "Pix").unwrap_err().code, "currency_unsupported");
//! ```

use serde::Serialize;
use serde_json::Value;

use crate::currency;
use crate::payment::{Context, HttpRequest, Money, Payment, Refusal, RefusalKind};

/// `content-type: application/json`, then `idempotency-key` when given: the headers of a
/// request with a JSON body.
pub fn json_headers(idempotency_key: Option<&str>) -> Vec<(String, String)> {
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    if let Some(key) = idempotency_key {
        headers.push(("idempotency-key".to_string(), key.to_string()));
    }
    headers
}

/// `authorization: Bearer <token>`.
pub fn bearer(token: &str) -> (String, String) {
    ("authorization".to_string(), format!("Bearer {token}"))
}

/// A request without a query string whose body, when there is one, is `body` as JSON text.
pub fn json_request(
    method: &str,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Value>,
) -> HttpRequest {
    HttpRequest {
        method: method.into(),
        path,
        query: None,
        headers,
        // A `Value` always serializes: its map keys are strings.
        body: body.map(|b| json_bytes(&b).unwrap_or_else(|_| b.to_string().into_bytes())),
    }
}

/// [`json_request`] with a body of any `Serialize` type (a struct of borrowed fields writes
/// faster than a `Value` built first). A body serde_json cannot write (a map whose keys are
/// not strings, numbers, booleans or chars; a `Serialize` impl that fails) is the plugin's
/// fault: refused as `encoding_failed` (500, unavailable), so nothing is sent.
pub fn typed_json_request<T: Serialize + ?Sized>(
    method: &str,
    path: String,
    headers: Vec<(String, String)>,
    body: &T,
) -> Result<HttpRequest, Refusal> {
    let body = json_bytes(body).map_err(|_| Refusal {
        kind: RefusalKind::Unavailable,
        status: 500,
        code: "encoding_failed".into(),
        message: "the provider request could not be written as JSON".into(),
    })?;
    Ok(HttpRequest {
        body: Some(body),
        ..json_request(method, path, headers, None)
    })
}

/// `value` as JSON text, written straight into bytes (`Value::to_string` goes through
/// `fmt::Write`, one call per piece of text).
pub fn json_bytes<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    serde_json::to_writer(&mut out, value)?;
    Ok(out)
}

/// The reference a provider files the payment under: the merchant's reference, else the
/// payment id, else the idempotency key (so a resend carries the same one).
pub fn reference(payment: &Payment, context: &Context) -> String {
    payment
        .merchant_reference
        .clone()
        .or_else(|| payment.id.clone())
        .unwrap_or_else(|| context.idempotency_key.clone())
}

/// The provider's reference of the payment a follow-up refers to, checked to be safe inside
/// a path: 1 to 64 ASCII letters, digits, `_` and `-`. Refused `parameter_missing` when the
/// host does not know it, `invalid_reference` when it is malformed (param `id`).
pub fn provider_reference(payment: &Payment) -> Result<&str, Refusal> {
    let reference = payment.provider_reference.as_deref().unwrap_or_default();
    if reference.is_empty() {
        return Err(Refusal::invalid(
            Some("id"),
            "parameter_missing",
            "the provider reference of the payment is unknown",
        ));
    }
    if reference.len() > 64
        || !reference
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(Refusal::invalid(
            Some("id"),
            "invalid_reference",
            "the provider reference is malformed",
        ));
    }
    Ok(reference)
}

/// The refusal of a payment without a method (`parameter_missing`, param `payment_method`).
pub fn missing_method() -> Refusal {
    Refusal::invalid(
        Some("payment_method"),
        "parameter_missing",
        "a payment method is required",
    )
}

/// The refusal of a method the provider does not take (`payment_method_unsupported`, param
/// `payment_method`).
pub fn unsupported_method(message: impl Into<String>) -> Refusal {
    Refusal::invalid(
        Some("payment_method"),
        "payment_method_unsupported",
        message,
    )
}

/// Refuse manual capture for a provider whose payments are captured at once
/// (`manual_capture_unsupported`, param `capture_method`): "`<provider>` payments cannot be
/// authorised for a later capture".
pub fn refuse_manual_capture(payment: &Payment, provider: &str) -> Result<(), Refusal> {
    if payment.manual_capture {
        return Err(Refusal::invalid(
            Some("capture_method"),
            "manual_capture_unsupported",
            format!("{provider} payments cannot be authorised for a later capture"),
        ));
    }
    Ok(())
}

/// The refusal of a payment without an amount where one is needed (`parameter_missing`).
pub fn missing_amount() -> Refusal {
    Refusal::invalid(Some("amount"), "parameter_missing", "amount is required")
}

/// The payment's amount, or the [`missing_amount`] refusal.
pub fn required_amount(payment: &Payment) -> Result<&Money, Refusal> {
    payment.amount.as_ref().ok_or_else(missing_amount)
}

/// The upper-case currency of an amount the provider can take, checked in this order: an ISO
/// 4217 code (`invalid_currency`, param `currency`), then positive minor units
/// (`invalid_amount`, param `amount`).
pub fn checked_amount(money: &Money) -> Result<String, Refusal> {
    checked(money, None)
}

/// [`checked_amount`] for a provider that takes one currency only: between the two checks,
/// any other currency is refused `currency_unsupported` ("`<provider>` only accepts
/// `<currency>`, not `<code>`").
pub fn checked_amount_in(money: &Money, currency: &str, provider: &str) -> Result<String, Refusal> {
    checked(money, Some((currency, provider)))
}

fn checked(money: &Money, only: Option<(&str, &str)>) -> Result<String, Refusal> {
    let code = currency::normalise(&money.currency).ok_or_else(|| {
        Refusal::invalid(
            Some("currency"),
            "invalid_currency",
            format!("currency {:?} is not an ISO 4217 code", money.currency),
        )
    })?;
    if let Some((accepted, provider)) = only {
        if code != accepted {
            return Err(Refusal::invalid(
                Some("currency"),
                "currency_unsupported",
                format!("{provider} only accepts {accepted}, not {code}"),
            ));
        }
    }
    if money.minor <= 0 {
        return Err(Refusal::invalid(
            Some("amount"),
            "invalid_amount",
            "amount must be positive",
        ));
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payment::{Operation, RefusalKind};
    use serde_json::json;

    fn money(minor: i64, currency: &str) -> Money {
        Money {
            minor,
            currency: currency.into(),
        }
    }

    fn context() -> Context {
        Context {
            provider: "p".into(),
            credentials: Vec::new(),
            now_ms: 0,
            idempotency_key: "key-1".into(),
        }
    }

    fn refused<T: std::fmt::Debug>(result: Result<T, Refusal>) -> (Option<String>, String) {
        let refusal = result.unwrap_err();
        assert_eq!(refusal.status, 400);
        match refusal.kind {
            RefusalKind::InvalidRequest(param) => (param, refusal.code),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn headers_and_requests() {
        assert_eq!(
            json_headers(Some("k")),
            vec![
                ("content-type".to_string(), "application/json".to_string()),
                ("idempotency-key".to_string(), "k".to_string()),
            ]
        );
        assert_eq!(json_headers(None).len(), 1);
        assert_eq!(
            bearer("t0k"),
            ("authorization".to_string(), "Bearer t0k".to_string())
        );
        let request = json_request(
            "POST",
            "/x".into(),
            json_headers(None),
            Some(json!({"a": 1})),
        );
        assert_eq!(request.body.as_deref(), Some(&br#"{"a":1}"#[..]));
        assert_eq!((request.method.as_str(), request.query), ("POST", None));
        assert_eq!(
            json_request("GET", "/x".into(), Vec::new(), None).body,
            None
        );
    }

    #[test]
    fn typed_bodies_and_what_json_cannot_write() {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            a: &'a str,
            n: i64,
        }
        let request = typed_json_request(
            "POST",
            "/x".into(),
            json_headers(None),
            &Body { a: "é\"", n: 1 },
        )
        .unwrap();
        assert_eq!(
            request.body.as_deref(),
            Some(r#"{"a":"é\"","n":1}"#.as_bytes())
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
        // Compound map keys are what serde_json cannot write: refused, nothing sent.
        let bad: std::collections::BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        let refusal = typed_json_request("POST", "/x".into(), Vec::new(), &bad).unwrap_err();
        assert_eq!(
            (refusal.kind, refusal.status, refusal.code.as_str()),
            (RefusalKind::Unavailable, 500, "encoding_failed")
        );
        let response = crate::payment::HttpResponse::json(200, &bad);
        assert_eq!(response.status, 500);
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert!(body["error"]["message"].is_string(), "{body}");
    }

    #[test]
    fn references_fall_back_to_the_idempotency_key() {
        let mut payment = Payment::new(Operation::Authorize);
        assert_eq!(reference(&payment, &context()), "key-1");
        payment.id = Some("pi_1".into());
        assert_eq!(reference(&payment, &context()), "pi_1");
        payment.merchant_reference = Some("order-9".into());
        assert_eq!(reference(&payment, &context()), "order-9");
    }

    #[test]
    fn provider_references_are_path_safe() {
        let mut payment = Payment::new(Operation::Refund);
        assert_eq!(
            refused(provider_reference(&payment)),
            (Some("id".into()), "parameter_missing".into())
        );
        for bad in ["", "a/b", "a b", "../x", &"x".repeat(65)] {
            payment.provider_reference = Some(bad.to_string());
            assert!(provider_reference(&payment).is_err(), "{bad}");
        }
        payment.provider_reference = Some("a/b".into());
        assert_eq!(refused(provider_reference(&payment)).1, "invalid_reference");
        payment.provider_reference = Some("PSP_1-x".into());
        assert_eq!(provider_reference(&payment), Ok("PSP_1-x"));
    }

    #[test]
    fn method_and_capture_refusals() {
        assert_eq!(
            refused::<()>(Err(missing_method())),
            (Some("payment_method".into()), "parameter_missing".into())
        );
        let refusal = unsupported_method("cards only");
        assert_eq!(refusal.message, "cards only");
        assert_eq!(
            refused::<()>(Err(refusal)),
            (
                Some("payment_method".into()),
                "payment_method_unsupported".into()
            )
        );
        let mut payment = Payment::new(Operation::Authorize);
        assert_eq!(refuse_manual_capture(&payment, "Pix"), Ok(()));
        payment.manual_capture = true;
        let refusal = refuse_manual_capture(&payment, "Pix").unwrap_err();
        assert_eq!(
            refusal.message,
            "Pix payments cannot be authorised for a later capture"
        );
        assert_eq!(
            refused::<()>(Err(refusal)),
            (
                Some("capture_method".into()),
                "manual_capture_unsupported".into()
            )
        );
    }

    #[test]
    fn amounts_are_checked_in_order() {
        let payment = Payment::new(Operation::Authorize);
        assert_eq!(
            refused(required_amount(&payment)),
            (Some("amount".into()), "parameter_missing".into())
        );
        assert_eq!(checked_amount(&money(1, "eur")), Ok("EUR".into()));
        assert_eq!(
            refused(checked_amount(&money(1, "XYZ"))),
            (Some("currency".into()), "invalid_currency".into())
        );
        assert_eq!(
            refused(checked_amount(&money(0, "EUR"))),
            (Some("amount".into()), "invalid_amount".into())
        );
        assert_eq!(
            refused(checked_amount(&money(0, "XYZ"))).1,
            "invalid_currency",
            "the currency is checked first"
        );
        assert_eq!(
            checked_amount_in(&money(5, "brl"), "BRL", "Pix"),
            Ok("BRL".into())
        );
        let refusal = checked_amount_in(&money(0, "USD"), "BRL", "Pix").unwrap_err();
        assert_eq!(refusal.code, "currency_unsupported", "before the amount");
        assert_eq!(refusal.message, "Pix only accepts BRL, not USD");
        assert_eq!(
            refused(checked_amount_in(&money(-1, "BRL"), "BRL", "Pix")).1,
            "invalid_amount"
        );
    }
}
