//! The GrabPay-like API: signed JSON charges, captures, refunds, cancels and status.
//!
//! Every request must carry `Date` and `Authorization: <partner id>:<signature>`, the
//! signature being `base64(HMAC-SHA256(secret, METHOD\ncontent-type\ndate\npath\n
//! base64(SHA256(body))\n))` with this provider's credentials ([`grabpay_credentials`]); a
//! request without a valid one is answered 401 and changes nothing. `partnerTxID` is the
//! idempotency key: the same request again replays the first answer, another request with
//! it is a 409.
//!
//! Outcomes of `init` follow the amount's last two digits (minor units): `13` failed
//! `insufficient_balance`, `66` failed `risk_rejected`, `77` failed `wallet_blocked`
//! (declines are not charges: not in the ledger), `88` pending, `99` HTTP 500 with nothing
//! recorded; anything else `success`, or `authorised` with `"authoriseOnly": true`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::json_api::{self, Call, Replay};
use crate::ledger::{Charge, Intent, Ledger, Refund};
use crate::provider::Provider;
use crate::respond::{json, SimResponse};
use crate::service::ServeError;

const PREFIX: &str = "/grabpay/v2/charge/";
/// Replays are stored as `grabpay:<partnerTxID>`.
const DIALECT: &str = "grabpay";
const CURRENCIES: [&str; 6] = ["SGD", "MYR", "PHP", "THB", "VND", "IDR"];

/// The credentials a client needs for simulated provider `name`: `(partner_id,
/// partner_secret)` = `("sim-partner-{name}", "sim-secret-{name}")`. Any non-empty
/// `merchantID` is accepted.
pub fn grabpay_credentials(name: &str) -> (String, String) {
    (format!("sim-partner-{name}"), format!("sim-secret-{name}"))
}

/// A GrabPay call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Route {
    /// `POST /grabpay/v2/charge/init`.
    Init,
    /// `POST /grabpay/v2/charge/{txID}/capture|refund|cancel`.
    Act(String, Action),
    /// `GET /grabpay/v2/charge/{txID or partnerTxID}/status`.
    Status(String),
}

/// Follow-ups on a charge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Action {
    Capture,
    Refund,
    Cancel,
}

impl Route {
    /// The route for a method and path, if this dialect serves it.
    pub(crate) fn parse(method: &Method, path: &str) -> Option<Route> {
        let segments: Vec<&str> = path.strip_prefix(PREFIX)?.split('/').collect();
        match (method, segments.as_slice()) {
            (&Method::POST, ["init"]) => Some(Route::Init),
            (&Method::GET, [id, "status"]) if !id.is_empty() => {
                Some(Route::Status((*id).to_owned()))
            }
            (&Method::POST, [id, action]) if !id.is_empty() => {
                let action = match *action {
                    "capture" => Action::Capture,
                    "refund" => Action::Refund,
                    "cancel" => Action::Cancel,
                    _ => return None,
                };
                Some(Route::Act((*id).to_owned(), action))
            }
            _ => None,
        }
    }
}

/// `init` body, as the dialect plugin sends it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InitBody {
    #[serde(rename = "partnerTxID")]
    partner_tx_id: String,
    #[serde(rename = "partnerGroupTxID")]
    partner_group_tx_id: String,
    amount: i64,
    currency: String,
    description: String,
    #[serde(rename = "merchantID")]
    merchant_id: String,
    #[serde(rename = "authoriseOnly", default)]
    authorise_only: bool,
}

/// Capture, refund and cancel body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FollowUpBody {
    #[serde(rename = "partnerTxID")]
    partner_tx_id: String,
    #[serde(rename = "merchantID")]
    merchant_id: String,
    #[serde(default)]
    amount: Option<i64>,
    #[serde(default)]
    currency: Option<String>,
}

/// Why a call failed: HTTP status, GrabPay `code`, `reason`.
type Failure = (StatusCode, &'static str, String);

/// Serve one request of this dialect.
pub(crate) async fn handle(
    provider: &Provider,
    route: Route,
    req: Request<Incoming>,
) -> Result<SimResponse, ServeError> {
    let Some(call) = Call::read(req).await? else {
        return Ok(error((
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            "body too large".into(),
        )));
    };
    if let Err(failure) = verify(provider.name(), &call) {
        return Ok(error(failure));
    }
    let fingerprint = call.fingerprint();
    let body = match route {
        Route::Status(_) => None,
        _ => match call.json() {
            Some(value) => Some(value),
            None => {
                let reason = "body is not JSON".to_owned();
                return Ok(error((StatusCode::BAD_REQUEST, "invalid_request", reason)));
            }
        },
    };
    // One lock for check, execute and store: concurrent retries of one key cannot both run.
    let mut ledger = provider.ledger();
    let result = match (route, body) {
        (Route::Status(id), _) => status(&ledger, &id),
        (Route::Init, Some(body)) => parse::<InitBody>(body).and_then(|body| {
            keyed(&mut ledger, &body.partner_tx_id.clone(), fingerprint, |l| {
                init(l, body)
            })
        }),
        (Route::Act(id, action), Some(body)) => parse::<FollowUpBody>(body).and_then(|body| {
            keyed(&mut ledger, &body.partner_tx_id.clone(), fingerprint, |l| {
                act(l, &id, action, body)
            })
        }),
        (_, None) => Err((
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "missing body".into(),
        )),
    };
    Ok(result.unwrap_or_else(error))
}

/// Check `Date` and the `Authorization` signature against this provider's credentials.
fn verify(provider: &str, call: &Call) -> Result<(), Failure> {
    let unauthorized = |reason: &str| (StatusCode::UNAUTHORIZED, "unauthorized", reason.to_owned());
    let date = call
        .header("date")
        .ok_or_else(|| unauthorized("missing Date header"))?;
    let authorization = call
        .header("authorization")
        .ok_or_else(|| unauthorized("missing Authorization header"))?;
    let (partner_id, signature) = authorization
        .split_once(':')
        .ok_or_else(|| unauthorized("Authorization must be <partner id>:<signature>"))?;
    let (expected_partner, secret) = grabpay_credentials(provider);
    if partner_id != expected_partner {
        return Err(unauthorized("unknown partner"));
    }
    let signature = STANDARD
        .decode(signature.trim())
        .map_err(|_| unauthorized("signature is not base64"))?;
    let content_type = call.header("content-type").unwrap_or_default();
    let body_hash = STANDARD.encode(Sha256::digest(&call.body));
    let signed = format!(
        "{}\n{content_type}\n{date}\n{}\n{body_hash}\n",
        call.parts.method,
        call.parts.uri.path()
    );
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| unauthorized("bad key"))?;
    mac.update(signed.as_bytes());
    // Constant-time comparison.
    mac.verify_slice(&signature)
        .map_err(|_| unauthorized("invalid signature"))
}

fn parse<T: serde::de::DeserializeOwned>(body: Value) -> Result<T, Failure> {
    serde_json::from_value(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, "invalid_request", e.to_string()))
}

/// Replay or execute a call keyed by `partnerTxID`, storing its 2xx answer.
fn keyed(
    ledger: &mut Ledger,
    partner_tx_id: &str,
    fingerprint: [u8; 32],
    execute: impl FnOnce(&mut Ledger) -> Result<Value, Failure>,
) -> Result<SimResponse, Failure> {
    if partner_tx_id.is_empty() || partner_tx_id.len() > 64 {
        let reason = "partnerTxID must be 1 to 64 characters".to_owned();
        return Err((StatusCode::BAD_REQUEST, "invalid_request", reason));
    }
    match json_api::replay(ledger, DIALECT, partner_tx_id, &fingerprint) {
        Replay::Replayed(response) => return Ok(response),
        Replay::Conflict => {
            let reason = "partnerTxID was used for another request".to_owned();
            return Err((StatusCode::CONFLICT, "duplicate_partner_tx_id", reason));
        }
        Replay::Fresh => {}
    }
    let value = execute(ledger)?;
    let keyed = Some((DIALECT, partner_tx_id, fingerprint));
    Ok(json_api::answer(ledger, keyed, StatusCode::OK, &value))
}

fn init(ledger: &mut Ledger, body: InitBody) -> Result<Value, Failure> {
    let bad = |reason: &str| {
        (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            reason.to_owned(),
        )
    };
    if body.amount <= 0 {
        return Err(bad("amount must be a positive integer of minor units"));
    }
    if !CURRENCIES.contains(&body.currency.as_str()) {
        return Err(bad("unsupported currency"));
    }
    if body.merchant_id.is_empty() || body.partner_group_tx_id.is_empty() {
        return Err(bad("merchantID and partnerGroupTxID are required"));
    }
    let mut answer = json!({
        "partnerTxID": body.partner_tx_id,
        "amount": body.amount,
        "currency": body.currency,
    });
    let status = match body.amount % 100 {
        99 => {
            let reason = "simulated system error".to_owned();
            return Err((StatusCode::INTERNAL_SERVER_ERROR, "internal_error", reason));
        }
        decline @ (13 | 66 | 77) => {
            let (code, reason) = match decline {
                13 => ("insufficient_balance", "wallet balance too low"),
                66 => ("risk_rejected", "rejected by risk checks"),
                _ => ("wallet_blocked", "wallet is blocked"),
            };
            answer["status"] = "failed".into();
            answer["code"] = code.into();
            answer["reason"] = reason.into();
            return Ok(answer);
        }
        88 => "processing",
        _ if body.authorise_only => "requires_capture",
        _ => "succeeded",
    };
    let id = json_api::mint(ledger, "grab");
    let intent = Intent {
        charge: Charge {
            id: id.clone(),
            provider: ledger.provider().to_owned(),
            amount: body.amount,
            currency: body.currency.to_ascii_lowercase(),
            status: status.to_owned(),
            idempotency_key: Some(body.partner_tx_id),
            merchant_reference: Some(body.partner_group_tx_id),
            metadata: [("description".to_owned(), body.description)].into(),
        },
        manual_capture: body.authorise_only,
        payment_method_types: vec!["grabpay".to_owned()],
        amount_refunded: 0,
    };
    ledger.insert(intent);
    answer["txID"] = id.into();
    answer["status"] = grab_status(status).into();
    Ok(answer)
}

fn act(
    ledger: &mut Ledger,
    id: &str,
    action: Action,
    body: FollowUpBody,
) -> Result<Value, Failure> {
    if body.merchant_id.is_empty() {
        let reason = "merchantID is required".to_owned();
        return Err((StatusCode::BAD_REQUEST, "invalid_request", reason));
    }
    let intent = ledger
        .intent_mut(id)
        .filter(|i| i.charge.id.starts_with("grab_"))
        .ok_or_else(|| {
            (
                StatusCode::NOT_FOUND,
                "not_found",
                "no such transaction".to_owned(),
            )
        })?;
    let charge = &intent.charge;
    if let Some(currency) = &body.currency {
        if !currency.eq_ignore_ascii_case(&charge.currency) {
            let reason = "currency differs from the charge's".to_owned();
            return Err((StatusCode::BAD_REQUEST, "invalid_request", reason));
        }
    }
    let state = grab_status(&charge.status);
    let invalid_state = || {
        let reason = format!("transaction is {state}");
        (StatusCode::BAD_REQUEST, "invalid_state", reason)
    };
    let currency = charge.currency.to_ascii_uppercase();
    match action {
        Action::Capture => {
            if charge.status != "requires_capture" {
                return Err(invalid_state());
            }
            let amount = within(body.amount, charge.amount)?;
            intent.charge.amount = amount;
            intent.charge.status = "succeeded".to_owned();
            Ok(follow_up_answer(&body.partner_tx_id, id, amount, &currency))
        }
        Action::Cancel => {
            if !matches!(charge.status.as_str(), "requires_capture" | "processing") {
                return Err(invalid_state());
            }
            let amount = charge.amount;
            intent.charge.status = "canceled".to_owned();
            Ok(follow_up_answer(&body.partner_tx_id, id, amount, &currency))
        }
        Action::Refund => {
            if charge.status != "succeeded" {
                return Err(invalid_state());
            }
            let amount = within(body.amount, charge.amount - intent.amount_refunded)?;
            intent.amount_refunded += amount;
            let refund_id = json_api::mint_refund(ledger, "gpre");
            ledger.add_refund(Refund {
                id: refund_id.clone(),
                payment_intent: id.to_owned(),
                amount,
                currency: currency.to_ascii_lowercase(),
                status: "succeeded".to_owned(),
            });
            let mut answer = follow_up_answer(&body.partner_tx_id, &refund_id, amount, &currency);
            answer["originTxID"] = id.into();
            Ok(answer)
        }
    }
}

/// `amount`, defaulting to and at most `limit`.
fn within(amount: Option<i64>, limit: i64) -> Result<i64, Failure> {
    match amount {
        None => Ok(limit),
        Some(a) if a > 0 && a <= limit => Ok(a),
        Some(_) => {
            let reason = format!("amount must be between 1 and {limit}");
            Err((StatusCode::BAD_REQUEST, "invalid_amount", reason))
        }
    }
}

fn follow_up_answer(partner_tx_id: &str, tx_id: &str, amount: i64, currency: &str) -> Value {
    json!({
        "partnerTxID": partner_tx_id,
        "txID": tx_id,
        "status": "success",
        "amount": amount,
        "currency": currency,
    })
}

/// `GET …/{id}/status`, by txID or by partnerTxID; never stored (a read).
fn status(ledger: &Ledger, id: &str) -> Result<SimResponse, Failure> {
    let charge = ledger
        .charges()
        .into_iter()
        .filter(|c| c.id.starts_with("grab_"))
        .find(|c| c.id == id || c.idempotency_key.as_deref() == Some(id))
        .ok_or_else(|| {
            (
                StatusCode::NOT_FOUND,
                "not_found",
                "no such transaction".to_owned(),
            )
        })?;
    let answer = json!({
        "partnerTxID": charge.idempotency_key,
        "txID": charge.id,
        "status": grab_status(&charge.status),
        "amount": charge.amount,
        "currency": charge.currency.to_ascii_uppercase(),
    });
    Ok(json(StatusCode::OK, &answer))
}

/// The ledger status in GrabPay's words.
fn grab_status(ledger_status: &str) -> &'static str {
    match ledger_status {
        "succeeded" => "success",
        "requires_capture" => "authorised",
        "processing" => "pending",
        "canceled" => "cancelled",
        _ => "failed",
    }
}

/// A GrabPay error answer: `{"code","reason"}`.
fn error((status, code, reason): Failure) -> SimResponse {
    json(status, &json!({ "code": code, "reason": reason }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let post = Method::POST;
        assert_eq!(
            Route::parse(&post, "/grabpay/v2/charge/init"),
            Some(Route::Init)
        );
        assert_eq!(
            Route::parse(&post, "/grabpay/v2/charge/grab_x_1/refund"),
            Some(Route::Act("grab_x_1".into(), Action::Refund))
        );
        assert_eq!(
            Route::parse(&Method::GET, "/grabpay/v2/charge/abc/status"),
            Some(Route::Status("abc".into()))
        );
        assert_eq!(Route::parse(&Method::GET, "/grabpay/v2/charge/init"), None);
        assert_eq!(Route::parse(&post, "/grabpay/v2/charge/x/zap"), None);
        assert_eq!(Route::parse(&post, "/grabpay/v2/charge//capture"), None);
    }

    #[test]
    fn credentials_are_derived_from_the_name() {
        assert_eq!(
            grabpay_credentials("grab-sg"),
            (
                "sim-partner-grab-sg".to_owned(),
                "sim-secret-grab-sg".to_owned()
            )
        );
    }
}
