//! The Adyen-like Checkout API under `/adyen/v71/`: payments, captures, refunds, cancels.
//!
//! - `POST /adyen/v71/payments` → `{"pspReference", "resultCode", "merchantReference",
//!   "amount"?, "refusalReason"?, "refusalReasonCode"?, "action"?}` (200). Outcomes are decided
//!   by the test inputs: `paymentMethod.type` other than `scheme` → `RedirectShopper` to
//!   `/adyen/v71/redirect/{psp}`; otherwise the last two digits of `amount.value`:
//!   `02` Refused 2, `05` Refused 12 "Not enough balance", `06` Refused 6 "Expired Card",
//!   `20` Refused 20 "FRAUD", `24` Refused 24 "CVC Declined", `07` Pending, `99` Error,
//!   anything else Authorised (`additionalData.manualCapture: "true"` leaves it to capture).
//! - `POST /adyen/v71/payments/{psp}/captures|refunds|cancels` `{"merchantAccount", "amount"?,
//!   "reference"}` → 202 `{"pspReference", "paymentPspReference", "status": "received"}`; the
//!   ledger changes at once.
//! - `GET /adyen/v71/redirect/{psp}?result=authorised|refused` — the shopper finishing the
//!   redirect (simulator control, no key needed).
//!
//! Every API call needs a non-empty `X-API-Key` (401 otherwise). Validation errors are 422 in
//! Adyen's shape `{"status", "errorCode", "message", "errorType"}`. The simulated Adyen
//! guarantees that every 4xx and 5xx it answers (including injected 500/503 faults) did
//! nothing. `Idempotency-Key` replays the first successful answer; the same key with another
//! request is a 422 `704`. Refused and errored payments get a `pspReference` but no ledger
//! entry: the ledger holds only payments that may move money.

mod modifications;
mod payments;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

use crate::json_api::{self, Call, Replay};
use crate::provider::Provider;
use crate::respond::{json, SimResponse};
use crate::service::ServeError;

/// Prefix of the API.
const PREFIX: &str = "/adyen/v71/";

/// A route of this dialect.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Route {
    /// An API call (key checked, idempotent).
    Api(ApiCall),
    /// The shopper back from the redirect.
    Redirect(String),
}

/// The API calls.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ApiCall {
    Payments,
    Modify(String, Modification),
}

/// The follow-up operations on a payment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Modification {
    Capture,
    Refund,
    Cancel,
}

impl Route {
    /// The route for a method and path, if this dialect serves it.
    pub(crate) fn parse(method: &Method, path: &str) -> Option<Route> {
        let rest = path.strip_prefix(PREFIX)?;
        let segments: Vec<&str> = rest.split('/').collect();
        match (method, segments.as_slice()) {
            (&Method::POST, ["payments"]) => Some(Route::Api(ApiCall::Payments)),
            (&Method::POST, ["payments", psp, kind]) if !psp.is_empty() => {
                let kind = match *kind {
                    "captures" => Modification::Capture,
                    "refunds" => Modification::Refund,
                    "cancels" => Modification::Cancel,
                    _ => return None,
                };
                Some(Route::Api(ApiCall::Modify((*psp).to_owned(), kind)))
            }
            (&Method::GET, ["redirect", psp]) if !psp.is_empty() => {
                Some(Route::Redirect((*psp).to_owned()))
            }
            _ => None,
        }
    }
}

/// An error answer in Adyen's shape.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AdyenError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) kind: &'static str,
}

impl AdyenError {
    /// A 422 validation error.
    pub(crate) fn validation(code: &'static str, message: impl Into<String>) -> Self {
        AdyenError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code,
            message: message.into(),
            kind: "validation",
        }
    }

    fn unauthorized() -> Self {
        AdyenError {
            status: StatusCode::UNAUTHORIZED,
            code: "000",
            message: "HTTP Status Response - Unauthorized".into(),
            kind: "security",
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "status": self.status.as_u16(),
            "errorCode": self.code,
            "message": self.message,
            "errorType": self.kind,
        })
    }

    fn response(&self) -> SimResponse {
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
        let mut error = AdyenError::validation("702", "Request body too large");
        error.status = StatusCode::PAYLOAD_TOO_LARGE;
        return Ok(error.response());
    };
    let api = match route {
        Route::Redirect(psp) => return Ok(payments::finish_redirect(provider, &psp, &call)),
        Route::Api(api) => api,
    };
    if call.header("x-api-key").is_none() {
        return Ok(AdyenError::unauthorized().response());
    }
    let Some(body) = call.json().filter(Value::is_object) else {
        let mut error = AdyenError::validation(
            "702",
            "Structure of the request is invalid: not a JSON object",
        );
        error.status = StatusCode::BAD_REQUEST;
        return Ok(error.response());
    };
    let key = call.header("idempotency-key");
    let fingerprint = call.fingerprint();

    // One lock for check, execute and store: concurrent retries of one key cannot both run.
    let mut ledger = provider.ledger();
    if let Some(key) = key.as_deref() {
        match json_api::replay(&ledger, "adyen", key, &fingerprint) {
            Replay::Fresh => {}
            Replay::Replayed(response) => return Ok(response),
            Replay::Conflict => {
                let message = "Request already processed or in progress with another payload";
                return Ok(AdyenError::validation("704", message).response());
            }
        }
    }
    let base = call.base_url();
    let result =
        match api {
            ApiCall::Payments => payments::create(&mut ledger, &body, key.as_deref(), &base)
                .map(|v| (StatusCode::OK, v)),
            ApiCall::Modify(psp, kind) => modifications::apply(&mut ledger, &psp, kind, &body)
                .map(|v| (StatusCode::ACCEPTED, v)),
        };
    let (status, value) = match result {
        Ok(answer) => answer,
        Err(error) => (error.status, error.to_json()),
    };
    let keyed = key.as_deref().map(|k| ("adyen", k, fingerprint));
    Ok(json_api::answer(&mut ledger, keyed, status, &value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let post = Method::POST;
        assert_eq!(
            Route::parse(&post, "/adyen/v71/payments"),
            Some(Route::Api(ApiCall::Payments))
        );
        assert_eq!(
            Route::parse(&post, "/adyen/v71/payments/psp_x_1/refunds"),
            Some(Route::Api(ApiCall::Modify(
                "psp_x_1".into(),
                Modification::Refund
            )))
        );
        assert_eq!(
            Route::parse(&Method::GET, "/adyen/v71/redirect/psp_x_1"),
            Some(Route::Redirect("psp_x_1".into()))
        );
        assert_eq!(Route::parse(&post, "/adyen/v71/payments//captures"), None);
        assert_eq!(Route::parse(&post, "/adyen/v71/payments/p/zap"), None);
        assert_eq!(Route::parse(&Method::GET, "/adyen/v71/payments"), None);
        assert_eq!(Route::parse(&post, "/v1/payment_intents"), None);
    }
}
