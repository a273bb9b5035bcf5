//! Reading a provider's JSON answer. Decoding never panics: anything unreadable becomes an
//! error outcome, [`ambiguous`] whenever the payment may exist.
//!
//! ```
//! use payproxy_plugin_sdk::helpers::decode;
//! use payproxy_plugin_sdk::payment::{HttpResponse, Outcome, OutcomeStatus};
//!
//! fn outcome(response: &HttpResponse) -> Outcome {
//!     let code = |b: &_| decode::text(b, "code").map(str::to_string);
//!     decode::json_answer(response, &[], code, |body| match decode::text(body, "status") {
//!         Some("paid") => Outcome::of(OutcomeStatus::Approved),
//!         Some(other) => decode::ambiguous(other, "the provider answered an unknown status"),
//!         None => decode::ambiguous("", "the provider's answer has no status"),
//!     })
//! }
//!
//! let ok = HttpResponse { status: 200, headers: vec![], body: br#"{"status":"paid"}"#.to_vec() };
//! assert_eq!(outcome(&ok).status, OutcomeStatus::Approved);
//! ```

use serde_json::Value;

use crate::currency;
use crate::helpers::http_errors::{self, HttpError};
use crate::payment::{ErrorClass, HttpResponse, Outcome};

/// An ambiguous `provider_error`: the answer cannot be trusted, the payment may exist.
pub fn ambiguous(provider_code: &str, message: &str) -> Outcome {
    Outcome::error(
        ErrorClass::Ambiguous,
        "provider_error",
        provider_code,
        message,
    )
}

/// The non-empty string at `key` of a JSON object.
pub fn text<'a>(body: &'a Value, key: &str) -> Option<&'a str> {
    body.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Decode a JSON API's answer. A non-2xx answer is the error outcome of its status
/// ([`http_errors::outcome`] with `overrides`), its provider code read from the body (when it
/// is JSON) by `provider_code`. A 2xx answer must be a JSON object, else it is an ambiguous
/// `provider_error`; the object is decoded by `decode_object`.
pub fn json_answer(
    response: &HttpResponse,
    overrides: &[HttpError],
    provider_code: impl FnOnce(&Value) -> Option<String>,
    decode_object: impl FnOnce(&Value) -> Outcome,
) -> Outcome {
    let errors = http_errors::Errors {
        by_code: &[],
        by_status: overrides,
    };
    json_answer_with(response, &errors, provider_code, decode_object)
}

/// [`json_answer`] for a provider whose error codes say more than its statuses: a non-2xx
/// answer is classified by the code `provider_code` reads from the body when `errors` has a
/// row for it, else by its status ([`http_errors::outcome_of`]).
pub fn json_answer_with(
    response: &HttpResponse,
    errors: &http_errors::Errors<'_>,
    provider_code: impl FnOnce(&Value) -> Option<String>,
    decode_object: impl FnOnce(&Value) -> Outcome,
) -> Outcome {
    let body: Option<Value> = serde_json::from_slice(&response.body).ok();
    if !(200..300).contains(&response.status) {
        let code = body.as_ref().and_then(provider_code);
        return http_errors::outcome_of(response.status, code, errors);
    }
    match body.filter(Value::is_object) {
        Some(body) => decode_object(&body),
        None => ambiguous("", "the provider's success answer is not a JSON object"),
    }
}

/// Minor units of a decimal amount string in a provider's answer (`"10.50"` EUR → `1050`),
/// exact for the currency's exponent. The error is the message of the ambiguous outcome.
pub fn decimal_amount(value: &Value, currency_code: &str) -> Result<i64, String> {
    value
        .as_str()
        .ok_or(currency::AmountError::Invalid)
        .and_then(|a| currency::from_decimal(a, currency_code))
        .map_err(|e| format!("the provider's answer has an unreadable amount: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payment::{Failure, OutcomeStatus};
    use serde_json::json;

    fn response(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn failure(outcome: Outcome) -> Failure {
        match outcome.status {
            OutcomeStatus::Error(f) => f,
            other => panic!("not an error: {other:?}"),
        }
    }

    fn code(body: &Value) -> Option<String> {
        text(body, "code").map(str::to_string)
    }

    /// The answer's `id` as a reference, to see what reached `decode_object`.
    fn echo(body: &Value) -> Outcome {
        Outcome {
            provider_reference: text(body, "id").map(str::to_string),
            ..Outcome::of(OutcomeStatus::Approved)
        }
    }

    #[test]
    fn texts_are_non_empty_strings() {
        let body = json!({"a": "x", "b": "", "c": 5});
        assert_eq!(text(&body, "a"), Some("x"));
        assert_eq!(text(&body, "b"), None);
        assert_eq!(text(&body, "c"), None);
        assert_eq!(text(&body, "d"), None);
        assert_eq!(text(&json!("a"), "a"), None);
    }

    #[test]
    fn success_answers_must_be_objects() {
        let outcome = json_answer(&response(201, r#"{"id":"1"}"#), &[], code, echo);
        assert_eq!(outcome.status, OutcomeStatus::Approved);
        assert_eq!(outcome.provider_reference.as_deref(), Some("1"));
        for body in ["[]", "\"x\"", "not json", ""] {
            let f = failure(json_answer(&response(200, body), &[], code, echo));
            assert_eq!(f.class, ErrorClass::Ambiguous, "{body}");
            assert_eq!(f.provider_code, "");
            assert_eq!(
                f.message,
                "the provider's success answer is not a JSON object"
            );
        }
    }

    #[test]
    fn error_answers_are_classified_with_the_provider_code() {
        let f = failure(json_answer(
            &response(404, r#"{"code":"gone"}"#),
            &[],
            code,
            echo,
        ));
        assert_eq!(
            (f.class, f.code.as_str(), f.provider_code.as_str()),
            (ErrorClass::AnsweredNotProcessed, "invalid_request", "gone")
        );
        assert_eq!(f.message, "the provider answered HTTP 404");
        let f = failure(json_answer(&response(502, "<html>"), &[], code, echo));
        assert_eq!(
            (f.class, f.provider_code.as_str()),
            (ErrorClass::Ambiguous, "502")
        );
        let own = &[(
            502,
            "provider_unavailable",
            ErrorClass::AnsweredNotProcessed,
        )];
        let f = failure(json_answer(&response(502, "{}"), own, code, echo));
        assert_eq!(f.code, "provider_unavailable");
    }

    #[test]
    fn decimal_amounts_are_exact() {
        assert_eq!(decimal_amount(&json!("10.50"), "EUR"), Ok(1050));
        assert_eq!(decimal_amount(&json!("1050"), "JPY"), Ok(1050));
        let err = decimal_amount(&json!(10.5), "EUR").unwrap_err();
        assert!(
            err.starts_with("the provider's answer has an unreadable amount: "),
            "{err}"
        );
        assert!(decimal_amount(&json!("10.505"), "EUR").is_err());
        assert!(decimal_amount(&json!("1"), "XYZ").is_err());
    }

    #[test]
    fn error_codes_in_the_body_classify_before_the_status() {
        use crate::payment::ErrorClass;
        const BY_CODE: &[http_errors::CodeError] = &[(
            "500.001.1001",
            "provider_unavailable",
            ErrorClass::AnsweredNotProcessed,
        )];
        let errors = http_errors::Errors {
            by_code: BY_CODE,
            by_status: &[],
        };
        let code = |b: &Value| text(b, "errorCode").map(str::to_string);
        let decoded = |status, body| {
            json_answer_with(&response(status, body), &errors, code, |_| {
                unreachable!("an error answer")
            })
        };
        let class = |outcome: Outcome| match outcome.status {
            OutcomeStatus::Error(Failure { class, code, .. }) => (class, code),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            class(decoded(500, r#"{"errorCode":"500.001.1001"}"#)),
            (
                ErrorClass::AnsweredNotProcessed,
                "provider_unavailable".into()
            )
        );
        assert_eq!(
            class(decoded(500, r#"{"errorCode":"500.003.02"}"#)),
            (ErrorClass::Ambiguous, "provider_error".into())
        );
        assert_eq!(
            class(decoded(500, "<html>")),
            (ErrorClass::Ambiguous, "provider_error".into())
        );
    }
}
