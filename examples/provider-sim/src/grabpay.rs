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
//!
//! `POST /grabpay/v2/charge/{txID}/complete?result=success|failed` (simulator control, not
//! signed): the shopper finishes a `pending` charge in the app — it becomes `success`
//! (`authorised` when authorise-only) or `failed` (code `declined`); anything else is a 409.
//!
//! With webhooks on (`POST /__sim/webhooks`), every change to a charge posts a transaction
//! status webhook (see [`webhooks`]): a charge created `success`/`authorised`, a pending one
//! completed, a capture, a cancel, a refund — `{"txType": "payment"|"capture"|"cancel"|
//! "refund", "partnerTxID", "partnerGroupTxID", "txID", "originTxID"?, "status", "amount",
//! "currency", "code"?, "reason"?, "updatedAt"}`, signed like GrabPay's requests with this
//! provider's `partner_secret` (not the configured webhook secret, which only turns them on):
//! `date` and `authorization: <partner id>:<base64 HMAC-SHA256(secret, POST\napplication/json\n
//! date\n<webhook URL path>\nbase64(SHA256(body))\n)>`. Replays send nothing.

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
    /// `POST /grabpay/v2/charge/{txID}/complete?result=…` (simulator control).
    Complete(String),
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
            (&Method::POST, [id, "complete"]) if !id.is_empty() => {
                Some(Route::Complete((*id).to_owned()))
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
    if let Route::Complete(id) = &route {
        let result = call.query("result");
        return Ok(complete(provider, id, result.as_deref()).unwrap_or_else(error));
    }
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
    // What changed, to notify once the lock is released (a replay changes nothing).
    let mut events = Vec::new();
    let result = match (route, body) {
        (Route::Status(id), _) => status(&ledger, &id),
        (Route::Init, Some(body)) => parse::<InitBody>(body).and_then(|body| {
            keyed(&mut ledger, &body.partner_tx_id.clone(), fingerprint, |l| {
                init(l, body, &mut events)
            })
        }),
        (Route::Act(id, action), Some(body)) => parse::<FollowUpBody>(body).and_then(|body| {
            keyed(&mut ledger, &body.partner_tx_id.clone(), fingerprint, |l| {
                act(l, &id, action, body, &mut events)
            })
        }),
        (Route::Complete(_), _) | (_, None) => Err((
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "missing body".into(),
        )),
    };
    drop(ledger);
    for event in &events {
        webhooks::send(provider, event);
    }
    Ok(result.unwrap_or_else(error))
}

/// `POST …/{txID}/complete?result=success|failed`: the shopper finishes a pending charge.
fn complete(provider: &Provider, id: &str, result: Option<&str>) -> Result<SimResponse, Failure> {
    let failed = match result.unwrap_or("success") {
        "success" => false,
        "failed" => true,
        _ => {
            let reason = "result must be success or failed".to_owned();
            return Err((StatusCode::BAD_REQUEST, "invalid_request", reason));
        }
    };
    let (answer, event) = {
        let mut ledger = provider.ledger();
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
        if intent.charge.status != "processing" {
            let reason = format!("transaction is {}", grab_status(&intent.charge.status));
            return Err((StatusCode::CONFLICT, "invalid_state", reason));
        }
        intent.charge.status = match (failed, intent.manual_capture) {
            (true, _) => "failed",
            (false, true) => "requires_capture",
            (false, false) => "succeeded",
        }
        .to_owned();
        let charge = &intent.charge;
        let mut event = webhooks::TxEvent::of(charge, "payment", grab_status(&charge.status));
        if failed {
            event.code = Some("declined");
            event.reason = Some("declined in the GrabPay app");
        }
        let answer = json!({
            "partnerTxID": charge.idempotency_key,
            "txID": charge.id,
            "status": grab_status(&charge.status),
            "amount": charge.amount,
            "currency": charge.currency.to_ascii_uppercase(),
        });
        (answer, event)
    };
    webhooks::send(provider, &event);
    Ok(json(StatusCode::OK, &answer))
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

fn init(
    ledger: &mut Ledger,
    body: InitBody,
    events: &mut Vec<webhooks::TxEvent>,
) -> Result<Value, Failure> {
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
        card_manual_capture: false,
        payment_method_types: vec!["grabpay".to_owned()],
        amount_refunded: 0,
    };
    // A pending charge is notified when it completes.
    if status != "processing" {
        events.push(webhooks::TxEvent::of(
            &intent.charge,
            "payment",
            grab_status(status),
        ));
    }
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
    events: &mut Vec<webhooks::TxEvent>,
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
            let mut event = webhooks::TxEvent::of(&intent.charge, "capture", "success");
            event.partner_tx_id = body.partner_tx_id.clone();
            events.push(event);
            Ok(follow_up_answer(&body.partner_tx_id, id, amount, &currency))
        }
        Action::Cancel => {
            if !matches!(charge.status.as_str(), "requires_capture" | "processing") {
                return Err(invalid_state());
            }
            let amount = charge.amount;
            intent.charge.status = "canceled".to_owned();
            let mut event = webhooks::TxEvent::of(&intent.charge, "cancel", "success");
            event.partner_tx_id = body.partner_tx_id.clone();
            events.push(event);
            Ok(follow_up_answer(&body.partner_tx_id, id, amount, &currency))
        }
        Action::Refund => {
            if charge.status != "succeeded" {
                return Err(invalid_state());
            }
            let amount = within(body.amount, charge.amount - intent.amount_refunded)?;
            intent.amount_refunded += amount;
            let mut event = webhooks::TxEvent::of(&intent.charge, "refund", "success");
            let refund_id = json_api::mint_refund(ledger, "gpre");
            event.partner_tx_id = body.partner_tx_id.clone();
            event.origin_tx_id = Some(id.to_owned());
            event.tx_id = refund_id.clone();
            event.amount = amount;
            events.push(event);
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

/// GrabPay's transaction status webhooks, sent when webhooks are on (see `crate::notify`),
/// signed as `dialect-grabpay` verifies them: the request-signing scheme of [`verify`], with
/// this provider's [`grabpay_credentials`], over `POST`, `application/json`, the `date`, the
/// configured webhook URL's path and the body hash.
pub(crate) mod webhooks {
    use std::time::{SystemTime, UNIX_EPOCH};

    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use hmac::{Hmac, Mac};
    use payproxy_plugin_sdk::helpers::time::DateTime;
    use serde_json::json;
    use sha2::{Digest, Sha256};

    use super::grabpay_credentials;
    use crate::ledger::Charge;
    use crate::notify::Notice;
    use crate::provider::Provider;

    /// One change a webhook reports.
    #[derive(Debug, Clone, PartialEq)]
    pub(crate) struct TxEvent {
        /// `payment`, `capture`, `cancel`, `refund`.
        pub(crate) tx_type: &'static str,
        pub(crate) partner_tx_id: String,
        pub(crate) partner_group_tx_id: Option<String>,
        /// The charge's, or the refund's for refunds.
        pub(crate) tx_id: String,
        /// The charge's, for refunds.
        pub(crate) origin_tx_id: Option<String>,
        /// `success`, `authorised`, `failed`.
        pub(crate) status: &'static str,
        /// Minor units.
        pub(crate) amount: i64,
        /// Upper case.
        pub(crate) currency: String,
        pub(crate) code: Option<&'static str>,
        pub(crate) reason: Option<&'static str>,
    }

    impl TxEvent {
        /// A change of `charge` (the follow-up's own ids are set by the caller).
        pub(crate) fn of(charge: &Charge, tx_type: &'static str, status: &'static str) -> Self {
            TxEvent {
                tx_type,
                partner_tx_id: charge.idempotency_key.clone().unwrap_or_default(),
                partner_group_tx_id: charge.merchant_reference.clone(),
                tx_id: charge.id.clone(),
                origin_tx_id: None,
                status,
                amount: charge.amount,
                currency: charge.currency.to_ascii_uppercase(),
                code: None,
                reason: None,
            }
        }
    }

    /// Send `event` if webhooks are on. Call with no lock held.
    pub(crate) fn send(provider: &Provider, event: &TxEvent) {
        if provider.webhook_secret().is_none() {
            return;
        }
        let path = provider
            .webhook_settings()
            .url
            .and_then(|u| u.parse::<hyper::Uri>().ok())
            .map(|u| u.path().to_owned())
            .unwrap_or_else(|| "/".to_owned());
        let (partner_id, secret) = grabpay_credentials(provider.name());
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        provider.notify(notice(&partner_id, &secret, &path, event, now_ms));
    }

    /// The signed webhook of `event`, sent to `path` at `now_ms`.
    pub(crate) fn notice(
        partner_id: &str,
        secret: &str,
        path: &str,
        event: &TxEvent,
        now_ms: u64,
    ) -> Notice {
        let mut body = json!({
            "txType": event.tx_type,
            "partnerTxID": event.partner_tx_id,
            "partnerGroupTxID": event.partner_group_tx_id,
            "txID": event.tx_id,
            "status": event.status,
            "amount": event.amount,
            "currency": event.currency,
            "updatedAt": now_ms / 1000,
        });
        if let Some(origin) = &event.origin_tx_id {
            body["originTxID"] = origin.as_str().into();
        }
        if let Some(code) = event.code {
            body["code"] = code.into();
        }
        if let Some(reason) = event.reason {
            body["reason"] = reason.into();
        }
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let date = imf_fixdate(now_ms);
        let signature = signature(secret, &date, path, &body);
        Notice {
            dialect: "grabpay",
            query: None,
            headers: vec![
                ("content-type".to_owned(), "application/json".to_owned()),
                ("date".to_owned(), date),
                (
                    "authorization".to_owned(),
                    format!("{partner_id}:{signature}"),
                ),
            ],
            body,
        }
    }

    /// Base64 HMAC-SHA256 of `POST\napplication/json\n<date>\n<path>\n<base64 SHA-256(body)>\n`.
    pub(crate) fn signature(secret: &str, date: &str, path: &str, body: &[u8]) -> String {
        let signed = format!(
            "POST\napplication/json\n{date}\n{path}\n{}\n",
            STANDARD.encode(Sha256::digest(body))
        );
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
        mac.update(signed.as_bytes());
        STANDARD.encode(mac.finalize().into_bytes())
    }

    /// RFC 7231 IMF-fixdate, `Tue, 14 Nov 2023 22:13:20 GMT`.
    pub(crate) fn imf_fixdate(now_ms: u64) -> String {
        const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let t = DateTime::from_unix_ms(now_ms, 0);
        format!(
            "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
            DAYS[t.weekday as usize],
            t.day,
            MONTHS[(t.month - 1) as usize],
            t.year,
            t.hour,
            t.minute,
            t.second
        )
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use serde_json::Value;

        #[test]
        fn refund_webhook_shape_and_signature() {
            let event = TxEvent {
                tx_type: "refund",
                partner_tx_id: "p2".into(),
                partner_group_tx_id: Some("order-1".into()),
                tx_id: "gpre_grabsg_2".into(),
                origin_tx_id: Some("grab_grabsg_1".into()),
                status: "success",
                amount: 400,
                currency: "SGD".into(),
                code: None,
                reason: None,
            };
            let (partner, secret) = grabpay_credentials("grab-sg");
            let notice = notice(
                &partner,
                &secret,
                "/webhooks/grab-sg",
                &event,
                1_700_000_000_000,
            );
            assert_eq!(notice.dialect, "grabpay");
            let body: Value = serde_json::from_slice(&notice.body).unwrap();
            assert_eq!(
                body,
                json!({"txType": "refund", "partnerTxID": "p2", "partnerGroupTxID": "order-1",
                       "txID": "gpre_grabsg_2", "originTxID": "grab_grabsg_1",
                       "status": "success", "amount": 400, "currency": "SGD",
                       "updatedAt": 1_700_000_000u64})
            );
            assert_eq!(notice.header("date"), Some("Tue, 14 Nov 2023 22:13:20 GMT"));
            // Computed independently: the string the GrabPay request signing covers.
            let signed = format!(
                "POST\napplication/json\nTue, 14 Nov 2023 22:13:20 GMT\n/webhooks/grab-sg\n{}\n",
                STANDARD.encode(Sha256::digest(&notice.body))
            );
            let mut mac = Hmac::<Sha256>::new_from_slice(b"sim-secret-grab-sg").unwrap();
            mac.update(signed.as_bytes());
            let want = format!(
                "sim-partner-grab-sg:{}",
                STANDARD.encode(mac.finalize().into_bytes())
            );
            assert_eq!(notice.header("authorization"), Some(want.as_str()));
        }

        #[test]
        fn a_failed_payment_carries_its_code() {
            let mut event = TxEvent {
                tx_type: "payment",
                partner_tx_id: "p1".into(),
                partner_group_tx_id: None,
                tx_id: "grab_grabsg_1".into(),
                origin_tx_id: None,
                status: "failed",
                amount: 1088,
                currency: "SGD".into(),
                code: Some("declined"),
                reason: Some("declined in the GrabPay app"),
            };
            let notice = notice("p", "s", "/", &event, 0);
            let body: Value = serde_json::from_slice(&notice.body).unwrap();
            assert_eq!(body["code"], "declined");
            assert_eq!(body["partnerGroupTxID"], Value::Null);
            assert!(body.get("originTxID").is_none());
            event.code = None;
            let body: Value =
                serde_json::from_slice(&super::notice("p", "s", "/", &event, 0).body).unwrap();
            assert!(body.get("code").is_none());
        }
    }
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
        assert_eq!(
            Route::parse(&post, "/grabpay/v2/charge/grab_x_1/complete"),
            Some(Route::Complete("grab_x_1".into()))
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

#[cfg(test)]
mod webhook_flow_tests {
    use serde_json::{json, Value};

    use super::webhooks::{imf_fixdate, signature};
    use super::*;
    use crate::test_client::call;
    use crate::Simulator;

    /// A request signed as the dialect signs it.
    async fn signed(base: &str, path: &str, body: Value) -> Value {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let date = imf_fixdate(now_ms);
        let body = body.to_string();
        let (partner, secret) = grabpay_credentials("grab-sg");
        let headers = [
            ("content-type", "application/json".to_owned()),
            ("date", date.clone()),
            (
                "authorization",
                format!(
                    "{partner}:{}",
                    signature(&secret, &date, path, body.as_bytes())
                ),
            ),
        ];
        let (status, answer) = call("POST", format!("{base}{path}"), &headers, Some(body)).await;
        assert_eq!(status, 200, "{answer}");
        serde_json::from_str(&answer).unwrap()
    }

    fn init(partner_tx_id: &str, amount: i64) -> Value {
        json!({"partnerTxID": partner_tx_id, "partnerGroupTxID": "order-1", "amount": amount,
               "currency": "SGD", "description": "d", "merchantID": "m"})
    }

    #[tokio::test]
    async fn charges_completions_and_refunds_send_signed_webhooks() {
        let sim = Simulator::start(&["grab-sg"]).await.unwrap();
        let base = sim.base_url("grab-sg");
        sim.set_webhooks(
            "grab-sg",
            Some("http://127.0.0.1:9/webhooks/grab-sg"),
            "unused",
        );
        let charge = signed(&base, "/grabpay/v2/charge/init", init("p1", 1000)).await;
        let tx = charge["txID"].as_str().unwrap().to_owned();
        // A replay changes nothing and sends nothing.
        signed(&base, "/grabpay/v2/charge/init", init("p1", 1000)).await;
        let pending = signed(&base, "/grabpay/v2/charge/init", init("p2", 1088)).await;
        assert_eq!(pending["status"], "pending");
        let pending_tx = pending["txID"].as_str().unwrap().to_owned();
        let refund = json!({"partnerTxID": "p3", "merchantID": "m", "amount": 400});
        signed(&base, &format!("/grabpay/v2/charge/{tx}/refund"), refund).await;
        let complete = format!("{base}/grabpay/v2/charge/{pending_tx}/complete?result=failed");
        let (status, answer) = call("POST", complete.clone(), &[], None).await;
        assert_eq!((status, answer.contains("\"failed\"")), (200, true));
        assert_eq!(call("POST", complete, &[], None).await.0, 409);
        let sent = sim.webhooks_sent("grab-sg");
        let (partner, secret) = grabpay_credentials("grab-sg");
        let summary: Vec<(String, String, String, Value)> = sent
            .iter()
            .map(|n| {
                let date = n.header("date").unwrap();
                let want = format!(
                    "{partner}:{}",
                    signature(&secret, date, "/webhooks/grab-sg", &n.body)
                );
                assert_eq!(n.header("authorization"), Some(want.as_str()));
                let b = n.json().unwrap();
                let s = |k: &str| b[k].as_str().unwrap_or_default().to_owned();
                (
                    s("txType"),
                    s("originTxID"),
                    s("status"),
                    b["amount"].clone(),
                )
            })
            .collect();
        let row = |t: &str, origin: &str, status: &str, amount: i64| {
            (
                t.to_owned(),
                origin.to_owned(),
                status.to_owned(),
                json!(amount),
            )
        };
        assert_eq!(
            summary,
            vec![
                row("payment", "", "success", 1000),
                row("refund", &tx, "success", 400),
                row("payment", "", "failed", 1088),
            ]
        );
        assert_eq!(sent[0].json().unwrap()["txID"], tx.as_str());
        assert_eq!(sent[2].json().unwrap()["code"], "declined");
        sim.shutdown().await;
    }
}
