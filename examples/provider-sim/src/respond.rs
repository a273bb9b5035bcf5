//! JSON responses, and errors in Stripe's shape where the API calls for them.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};

/// Every simulator answer is small and fully built before it is sent.
pub(crate) type SimResponse = Response<Full<Bytes>>;

/// A JSON answer with `status`.
pub(crate) fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> SimResponse {
    // Serialising our own maps and structs cannot fail; an empty body would show up in tests.
    json_bytes(status, serde_json::to_vec(value).unwrap_or_default().into())
}

/// A JSON answer whose body is already encoded.
pub(crate) fn json_bytes(status: StatusCode, body: Bytes) -> SimResponse {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// An error in Stripe's shape: `{"error":{"type","code","message","param"}}`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StripeError {
    pub(crate) status: StatusCode,
    pub(crate) kind: &'static str,
    pub(crate) code: Option<&'static str>,
    pub(crate) message: String,
    pub(crate) param: Option<&'static str>,
}

impl StripeError {
    /// A 400 `invalid_request_error`.
    pub(crate) fn invalid(
        code: &'static str,
        param: Option<&'static str>,
        message: String,
    ) -> Self {
        StripeError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: Some(code),
            message,
            param,
        }
    }

    /// A parameter has a value Stripe would not accept (no specific error code).
    pub(crate) fn bad_value(param: &'static str, message: String) -> Self {
        StripeError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: None,
            message,
            param: Some(param),
        }
    }

    /// A required parameter is absent.
    pub(crate) fn missing(param: &'static str) -> Self {
        Self::invalid(
            "parameter_missing",
            Some(param),
            format!("Missing required param: {param}."),
        )
    }

    /// A 404 for an object that does not exist.
    pub(crate) fn not_found(param: &'static str, object: &str, id: &str) -> Self {
        StripeError {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            code: Some("resource_missing"),
            message: format!("No such {object}: '{id}'"),
            param: Some(param),
        }
    }

    /// An `Idempotency-Key` reused with a different request.
    pub(crate) fn idempotency_mismatch(key: &str) -> Self {
        StripeError {
            status: StatusCode::BAD_REQUEST,
            kind: "idempotency_error",
            code: None,
            message: format!(
                "Keys for idempotent requests can only be used with the same parameters they \
                 were first used with. Try using a key other than '{key}' if you meant to \
                 execute a different request."
            ),
            param: None,
        }
    }

    /// The error an injected fault answers with.
    pub(crate) fn simulated(status: StatusCode) -> Self {
        StripeError {
            status,
            kind: "api_error",
            code: None,
            message: "simulated failure".to_owned(),
            param: None,
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        let mut error = json!({ "type": self.kind, "message": self.message });
        if let Some(code) = self.code {
            error["code"] = code.into();
        }
        if let Some(param) = self.param {
            error["param"] = param.into();
        }
        json!({ "error": error })
    }

    pub(crate) fn response(&self) -> SimResponse {
        json(self.status, &self.to_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_error_shape() {
        assert_eq!(
            StripeError::missing("amount").to_json(),
            json!({"error": {
                "type": "invalid_request_error",
                "code": "parameter_missing",
                "message": "Missing required param: amount.",
                "param": "amount"
            }})
        );
        assert_eq!(
            StripeError::simulated(StatusCode::BAD_GATEWAY).to_json(),
            json!({"error": {"type": "api_error", "message": "simulated failure"}})
        );
    }
}
