//! The Stripe dialect: payment intents and refunds over form bodies, with idempotency keys.
//!
//! Idempotency follows Stripe: a `POST` with an `Idempotency-Key` that succeeded is stored;
//! a retry with the same key and the same method, path and body gets the stored answer back
//! (header `idempotent-replayed: true`, no new ledger entry); the same key with a different
//! request is refused with a 400 `idempotency_error`. Failed requests are not stored, so
//! they can be retried with the same key.

mod intents;
mod methods;
mod refunds;

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{HeaderMap, Method, Request, StatusCode};
use sha2::{Digest, Sha256};

use crate::body::{read_capped, ReadError};
use crate::form::Form;
use crate::ledger::StoredResponse;
use crate::provider::Provider;
use crate::respond::{json_bytes, SimResponse, StripeError};
use crate::service::ServeError;

/// Stripe API bodies are small forms; a cap keeps a runaway client from filling memory.
const MAX_BODY: usize = 1024 * 1024;

/// A Stripe API call the simulator implements.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Route {
    CreateIntent,
    RetrieveIntent(String),
    IntentAction(String, Action),
    CreateRefund,
    RetrievePaymentMethod(String),
}

/// State changes of a payment intent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Action {
    Capture,
    Cancel,
    Confirm,
}

impl Route {
    /// The route for `method` and `path`, or `None` to leave the request to the echo.
    pub(crate) fn parse(method: &Method, path: &str) -> Option<Route> {
        let rest = path.strip_prefix("/v1/")?;
        let segments: Vec<&str> = rest.split('/').collect();
        match (method, segments.as_slice()) {
            (&Method::POST, ["payment_intents"]) => Some(Route::CreateIntent),
            (&Method::GET, ["payment_intents", id]) if !id.is_empty() => {
                Some(Route::RetrieveIntent((*id).to_owned()))
            }
            (&Method::POST, ["payment_intents", id, action]) if !id.is_empty() => {
                let action = match *action {
                    "capture" => Action::Capture,
                    "cancel" => Action::Cancel,
                    "confirm" => Action::Confirm,
                    _ => return None,
                };
                Some(Route::IntentAction((*id).to_owned(), action))
            }
            (&Method::POST, ["refunds"]) => Some(Route::CreateRefund),
            (&Method::GET, ["payment_methods", id]) if !id.is_empty() => {
                Some(Route::RetrievePaymentMethod((*id).to_owned()))
            }
            _ => None,
        }
    }
}

/// Serve one Stripe API call.
pub(crate) async fn handle(
    provider: &Provider,
    route: Route,
    req: Request<Incoming>,
) -> Result<SimResponse, ServeError> {
    let (parts, body) = req.into_parts();
    let body = match read_capped(body, MAX_BODY).await {
        Ok(body) => body,
        Err(ReadError::TooLarge) => {
            let mut error = StripeError::bad_value("body", "Request body too large.".to_owned());
            error.status = StatusCode::PAYLOAD_TOO_LARGE;
            return Ok(error.response());
        }
        Err(ReadError::Transport(e)) => return Err(ServeError::Body(e)),
    };
    let post = parts.method == Method::POST;
    let key = idempotency_key(&parts.headers).filter(|_| post);
    let fingerprint = fingerprint(&parts.method, parts.uri.path(), &body);
    let form = Form::parse(&body);

    // One lock for check, execute and store: concurrent retries of one key cannot both run.
    let mut ledger = provider.ledger();
    if let Some(stored) = key.as_deref().and_then(|key| ledger.stored(key)) {
        if stored.fingerprint != fingerprint {
            let key = key.as_deref().unwrap_or_default();
            return Ok(StripeError::idempotency_mismatch(key).response());
        }
        let mut response = json_bytes(stored.status, stored.body.clone());
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        return Ok(response);
    }

    let result = match route {
        Route::CreateIntent => intents::create(&mut ledger, &form, key.as_deref()),
        Route::RetrieveIntent(id) => intents::retrieve(&ledger, &id),
        Route::IntentAction(id, action) => intents::act(&mut ledger, &id, action),
        Route::CreateRefund => refunds::create(&mut ledger, &form),
        Route::RetrievePaymentMethod(id) => methods::retrieve(&id),
    };
    let (status, value) = match result {
        Ok(value) => (StatusCode::OK, value),
        Err(error) => (error.status, error.to_json()),
    };
    let encoded: bytes::Bytes = serde_json::to_vec(&value).unwrap_or_default().into();
    if let (Some(key), true) = (key, status.is_success()) {
        let stored = StoredResponse {
            fingerprint,
            status,
            body: encoded.clone(),
        };
        ledger.store(key, stored);
    }
    Ok(json_bytes(status, encoded))
}

/// The `Idempotency-Key` header; an empty key counts as none.
fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("idempotency-key")?;
    let key = String::from_utf8_lossy(value.as_bytes()).trim().to_owned();
    (!key.is_empty()).then_some(key)
}

/// What a retry must repeat exactly to be replayed.
fn fingerprint(method: &Method, path: &str, body: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(method.as_str());
    hasher.update([0]);
    hasher.update(path);
    hasher.update([0]);
    hasher.update(body);
    hasher.finalize().into()
}

/// A positive integer parameter (amounts in minor units), `None` when absent.
fn positive_int(form: &Form, param: &'static str) -> Result<Option<i64>, StripeError> {
    let Some(raw) = form.get(param) else {
        return Ok(None);
    };
    let value: i64 = raw.trim().parse().map_err(|_| {
        StripeError::invalid(
            "parameter_invalid_integer",
            Some(param),
            format!("Invalid integer: {raw}"),
        )
    })?;
    if value <= 0 {
        return Err(StripeError::invalid(
            "amount_too_small",
            Some(param),
            "Amount must be at least 1.".to_owned(),
        ));
    }
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let post = Method::POST;
        assert_eq!(
            Route::parse(&post, "/v1/payment_intents"),
            Some(Route::CreateIntent)
        );
        assert_eq!(
            Route::parse(&Method::GET, "/v1/payment_intents/pi_x_1"),
            Some(Route::RetrieveIntent("pi_x_1".into()))
        );
        assert_eq!(
            Route::parse(&post, "/v1/payment_intents/pi_x_1/capture"),
            Some(Route::IntentAction("pi_x_1".into(), Action::Capture))
        );
        assert_eq!(
            Route::parse(&post, "/v1/refunds"),
            Some(Route::CreateRefund)
        );
        assert_eq!(Route::parse(&post, "/v1/payment_intents/pi_x_1/zap"), None);
        assert_eq!(Route::parse(&Method::GET, "/v1/payment_intents/"), None);
        assert_eq!(Route::parse(&post, "/echo"), None);
    }

    #[test]
    fn amounts() {
        let form = Form::parse(b"a=12&b=x&c=0&d=-5");
        assert_eq!(positive_int(&form, "a"), Ok(Some(12)));
        assert_eq!(positive_int(&form, "missing"), Ok(None));
        let code = |p| positive_int(&form, p).err().and_then(|e| e.code);
        assert_eq!(code("b"), Some("parameter_invalid_integer"));
        assert_eq!(code("c"), Some("amount_too_small"));
        assert_eq!(code("d"), Some("amount_too_small"));
    }
}
