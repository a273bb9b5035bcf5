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
//! With webhooks on (`POST /__sim/webhooks`), the shopper's finish at the bank (the first
//! one: a transaction changes once) and every successful refund post a status notification
//! `{"notificationId", "type": "transaction.status"|"refund.status", "transactionId",
//! "refundId"?, "status", "amount", "currency", "reference", "createdAt"}` signed as
//! `dialect-ideal` verifies it: `x-ideal-timestamp` (Unix seconds) and `x-ideal-signature` =
//! hex HMAC-SHA256(secret, `<timestamp>.<body>`) (see `notices`).
//!
//! API calls need `Authorization: Bearer <non-empty token>` (401 otherwise). Errors are
//! `{"error": {"code", "message", "field"?}}`. `Idempotency-Key` on POSTs replays the first
//! successful answer; another request with the same key is a 409 `idempotency_conflict`.
//! Ledger: the charge is recorded when the transaction is created (`requires_action`), then
//! moves to `succeeded`, `failed`, `canceled` or `expired`; `metadata` holds `description` and
//! `returnUrl` as sent.

mod iban;
mod notices;
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
        None => transactions::create(&mut ledger, &body, key.as_deref(), &base).map(|v| (v, None)),
        Some(id) => transactions::refund(&mut ledger, &id, &body).map(|(v, e)| (v, Some(e))),
    };
    let (status, value, event) = match result {
        Ok((value, event)) => (StatusCode::CREATED, value, event),
        Err(error) => (error.status, error.to_json(), None),
    };
    let keyed = key.as_deref().map(|k| ("ideal", k, fingerprint));
    let response = json_api::answer(&mut ledger, keyed, status, &value);
    drop(ledger);
    if let Some(event) = event {
        notices::send(provider, &event);
    }
    Ok(response)
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

#[cfg(test)]
mod webhook_tests {
    use serde_json::{json, Value};

    use super::notices::{signature, SIGNATURE_HEADER, TIMESTAMP_HEADER};
    use crate::test_client::call;
    use crate::Simulator;

    async fn create(base: &str, amount: &str) -> String {
        let body = json!({"amount": amount, "currency": "EUR", "reference": "order-1",
                          "returnUrl": "https://shop.example/back"});
        let headers = [
            ("authorization", "Bearer t".to_owned()),
            ("content-type", "application/json".to_owned()),
        ];
        let url = format!("{base}/ideal/v1/transactions");
        let (status, answer) = call("POST", url, &headers, Some(body.to_string())).await;
        assert_eq!(status, 201);
        let answer: Value = serde_json::from_str(&answer).unwrap();
        answer["transactionId"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn finishes_and_refunds_send_signed_notifications() {
        let sim = Simulator::start(&["ideal-nl"]).await.unwrap();
        let base = sim.base_url("ideal-nl");
        sim.set_webhooks(
            "ideal-nl",
            Some("http://127.0.0.1:9/webhooks/ideal-nl"),
            "s",
        );
        let paid = create(&base, "10.00").await;
        let expired = create(&base, "1.00").await;
        assert!(
            sim.webhooks_sent("ideal-nl").is_empty(),
            "nothing while open"
        );
        let finish =
            |id: &str, result: &str| format!("{base}/ideal/v1/authenticate/{id}?result={result}");
        assert_eq!(
            call("GET", finish(&paid, "success"), &[], None).await.0,
            303
        );
        // A second finish changes nothing and sends nothing.
        call("GET", finish(&paid, "failure"), &[], None).await;
        call("GET", finish(&expired, "expired"), &[], None).await;
        let headers = [
            ("authorization", "Bearer t".to_owned()),
            ("content-type", "application/json".to_owned()),
        ];
        let refunds = format!("{base}/ideal/v1/transactions/{paid}/refunds");
        let body = json!({"amount": "2.50", "currency": "EUR"}).to_string();
        assert_eq!(call("POST", refunds, &headers, Some(body)).await.0, 201);
        let sent = sim.webhooks_sent("ideal-nl");
        let summary: Vec<(String, String, String, String)> = sent
            .iter()
            .map(|n| {
                let timestamp: u64 = n.header(TIMESTAMP_HEADER).unwrap().parse().unwrap();
                assert_eq!(
                    n.header(SIGNATURE_HEADER),
                    Some(signature("s", timestamp, &n.body).as_str())
                );
                let b = n.json().unwrap();
                let s = |k: &str| b[k].as_str().unwrap_or_default().to_owned();
                (s("type"), s("transactionId"), s("status"), s("amount"))
            })
            .collect();
        let t = |kind: &str, id: &str, status: &str, amount: &str| {
            (
                kind.to_owned(),
                id.to_owned(),
                status.to_owned(),
                amount.to_owned(),
            )
        };
        assert_eq!(
            summary,
            vec![
                t("transaction.status", &paid, "success", "10.00"),
                t("transaction.status", &expired, "expired", "1.00"),
                t("refund.status", &paid, "success", "2.50"),
            ]
        );
        assert_eq!(sent[0].json().unwrap()["reference"], "order-1");
        sim.shutdown().await;
    }
}
