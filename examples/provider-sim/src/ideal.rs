//! The iDEAL-like bank redirect API under `/ideal/v1/`.
//!
//! - `POST /ideal/v1/transactions` `{"amount": "10.00", "currency": "EUR", "iban"?, "bic"?,
//!   "reference", "returnUrl", "description"?}` → 201 `{"transactionId", "status": "open",
//!   "issuerAuthenticationUrl", "amount", "currency", "reference"}`. Only EUR; the amount must
//!   be an exact euro decimal; an IBAN must pass ISO 13616 (422 `invalid_iban` otherwise).
//! - `GET /ideal/v1/transactions/{id}` → `{"transactionId", "status": "open"|"success"|
//!   "failure"|"expired"|"cancelled", "amount", "currency", "reference",
//!   "issuerAuthenticationUrl"?}` (the URL while open).
//! - `POST /ideal/v1/transactions/{id}/refunds` `{"amount"?, "currency"?, "reference"?}` →
//!   201 `{"refundId", "transactionId", "status": "success", "amount", "currency"}`; only a
//!   successful transaction, at most what is left (no amount: all of it).
//! - `GET /ideal/v1/authenticate/{id}?result=success|failure|cancelled|expired` — the shopper
//!   at the bank (no key needed): an open transaction takes that status (default success);
//!   answers 303 to the `returnUrl` with `trxid=<id>`, and the new state as JSON.
//!
//! API calls need `Authorization: Bearer <non-empty token>` (401 otherwise). Errors are
//! `{"error": {"code", "message", "field"?}}`. `Idempotency-Key` on POSTs replays the first
//! successful answer; another request with the same key is a 409 `idempotency_conflict`.
//! Ledger: the charge is recorded when the transaction is created (`requires_action`), then
//! moves to `succeeded`, `failed`, `canceled` or `expired`; `metadata` holds `description` and
//! `returnUrl` as sent.

mod iban;
mod transactions;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

use crate::json_api::{self, Call, Replay};
use crate::provider::Provider;
use crate::respond::{json, SimResponse};
use crate::service::ServeError;

const PREFIX: &str = "/ideal/v1/";

/// A route of this dialect.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Route {
    Create,
    Status(String),
    Refund(String),
    Authenticate(String),
}

impl Route {
    /// The route for a method and path, if this dialect serves it.
    pub(crate) fn parse(method: &Method, path: &str) -> Option<Route> {
        let rest = path.strip_prefix(PREFIX)?;
        let segments: Vec<&str> = rest.split('/').collect();
        match (method, segments.as_slice()) {
            (&Method::POST, ["transactions"]) => Some(Route::Create),
            (&Method::GET, ["transactions", id]) if !id.is_empty() => {
                Some(Route::Status((*id).to_owned()))
            }
            (&Method::POST, ["transactions", id, "refunds"]) if !id.is_empty() => {
                Some(Route::Refund((*id).to_owned()))
            }
            (&Method::GET, ["authenticate", id]) if !id.is_empty() => {
                Some(Route::Authenticate((*id).to_owned()))
            }
            _ => None,
        }
    }
}

/// An error answer: `{"error": {"code", "message", "field"?}}`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct IdealError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) field: Option<&'static str>,
}

impl IdealError {
    /// A 422 about one field.
    pub(crate) fn invalid(
        code: &'static str,
        field: &'static str,
        message: impl Into<String>,
    ) -> Self {
        IdealError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code,
            message: message.into(),
            field: Some(field),
        }
    }

    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        IdealError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(field) = self.field {
            error["field"] = field.into();
        }
        json!({ "error": error })
    }

    pub(crate) fn response(&self) -> SimResponse {
        json(self.status, &self.to_json())
    }
}

/// Serve one request of this dialect.
pub(crate) async fn handle(
    provider: &Provider,
    route: Route,
    req: Request<Incoming>,
) -> Result<SimResponse, ServeError> {
    let Some(call) = Call::read(req).await? else {
        let error = IdealError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "request body too large",
        );
        return Ok(error.response());
    };
    if !matches!(route, Route::Authenticate(_)) && call.bearer().is_none() {
        let error = IdealError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing bearer token",
        );
        return Ok(error.response());
    }
    let base = call.base_url();
    let write = match route {
        Route::Authenticate(id) => return Ok(transactions::authenticate(provider, &id, &call)),
        Route::Status(id) => {
            return Ok(match transactions::status(&provider.ledger(), &id, &base) {
                Ok(value) => json(StatusCode::OK, &value),
                Err(error) => error.response(),
            })
        }
        Route::Create => None,
        Route::Refund(id) => Some(id),
    };
    let Some(body) = call.json().filter(Value::is_object) else {
        return Ok(IdealError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body is not a JSON object",
        )
        .response());
    };
    let key = call.header("idempotency-key");
    let fingerprint = call.fingerprint();
    // One lock for check, execute and store: concurrent retries of one key cannot both run.
    let mut ledger = provider.ledger();
    if let Some(key) = key.as_deref() {
        match json_api::replay(&ledger, "ideal", key, &fingerprint) {
            Replay::Fresh => {}
            Replay::Replayed(response) => return Ok(response),
            Replay::Conflict => {
                let message = "this Idempotency-Key was used with another request";
                return Ok(
                    IdealError::new(StatusCode::CONFLICT, "idempotency_conflict", message)
                        .response(),
                );
            }
        }
    }
    let result = match write {
        None => transactions::create(&mut ledger, &body, key.as_deref(), &base),
        Some(id) => transactions::refund(&mut ledger, &id, &body),
    };
    let (status, value) = match result {
        Ok(value) => (StatusCode::CREATED, value),
        Err(error) => (error.status, error.to_json()),
    };
    let keyed = key.as_deref().map(|k| ("ideal", k, fingerprint));
    Ok(json_api::answer(&mut ledger, keyed, status, &value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let post = Method::POST;
        assert_eq!(
            Route::parse(&post, "/ideal/v1/transactions"),
            Some(Route::Create)
        );
        assert_eq!(
            Route::parse(&Method::GET, "/ideal/v1/transactions/tr_x_1"),
            Some(Route::Status("tr_x_1".into()))
        );
        assert_eq!(
            Route::parse(&post, "/ideal/v1/transactions/tr_x_1/refunds"),
            Some(Route::Refund("tr_x_1".into()))
        );
        assert_eq!(
            Route::parse(&Method::GET, "/ideal/v1/authenticate/tr_x_1"),
            Some(Route::Authenticate("tr_x_1".into()))
        );
        assert_eq!(Route::parse(&Method::GET, "/ideal/v1/transactions/"), None);
        assert_eq!(Route::parse(&post, "/ideal/v1/transactions/tr_x_1"), None);
    }
}
