//! The `/__sim/` control API: ledger, faults, reset and health, for demos and scripts.
//!
//! Control requests are neither counted nor subject to faults (except an outage that drops
//! the connection on accept, before any request is read).

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::json;

use crate::body::{read_capped, ReadError};
use crate::faults::Faults;
use crate::oauth::OAuthSettings;
use crate::provider::Provider;
use crate::respond::{json, SimResponse};
use crate::service::ServeError;

/// Faults documents are tiny; anything bigger is a mistake.
const MAX_FAULTS_BODY: usize = 64 * 1024;

/// Whether `path` belongs to the control API.
pub(crate) fn is_control(path: &str) -> bool {
    path == "/__sim" || path.starts_with("/__sim/")
}

pub(crate) async fn handle(
    provider: &Provider,
    req: Request<Incoming>,
) -> Result<SimResponse, ServeError> {
    let route = (req.method().clone(), req.uri().path().to_owned());
    let response = match (&route.0, route.1.as_str()) {
        (&Method::GET, "/__sim/health") => json(StatusCode::OK, &json!({ "ok": true })),
        (&Method::GET, "/__sim/ledger") => json(StatusCode::OK, &provider.ledger().charges()),
        (&Method::GET, "/__sim/refunds") => json(StatusCode::OK, &provider.ledger().refunds()),
        (&Method::GET, "/__sim/faults") => json(StatusCode::OK, provider.faults().faults()),
        (&Method::POST, "/__sim/faults") => set_faults(provider, req).await?,
        (&Method::GET, "/__sim/oauth") => json(StatusCode::OK, &provider.oauth().stats()),
        (&Method::POST, "/__sim/oauth") => set_oauth(provider, req).await?,
        (&Method::POST, "/__sim/reset") => {
            provider.reset();
            json(StatusCode::OK, &json!({ "ok": true }))
        }
        (&Method::GET, "/__sim/stats") => {
            let ledger = provider.ledger();
            let stats = json!({
                "provider": provider.name(),
                "requests": provider.request_count(),
                "charges": ledger.charges().len(),
                "refunds": ledger.refunds().len(),
            });
            json(StatusCode::OK, &stats)
        }
        _ => control_error(StatusCode::NOT_FOUND, "unknown control route".to_owned()),
    };
    Ok(response)
}

/// `POST /__sim/faults`: the JSON body replaces the provider's faults.
async fn set_faults(
    provider: &Provider,
    req: Request<Incoming>,
) -> Result<SimResponse, ServeError> {
    let body = match read_capped(req.into_body(), MAX_FAULTS_BODY).await {
        Ok(body) => body,
        Err(ReadError::TooLarge) => {
            let message = "faults body too large".to_owned();
            return Ok(control_error(StatusCode::PAYLOAD_TOO_LARGE, message));
        }
        Err(ReadError::Transport(e)) => return Err(ServeError::Body(e)),
    };
    match serde_json::from_slice::<Faults>(&body) {
        Ok(faults) => {
            provider.faults().set(faults.clone());
            Ok(json(StatusCode::OK, &faults))
        }
        Err(e) => Ok(control_error(
            StatusCode::BAD_REQUEST,
            format!("invalid faults: {e}"),
        )),
    }
}

/// `POST /__sim/oauth`: the JSON body replaces the provider's token endpoint settings.
async fn set_oauth(provider: &Provider, req: Request<Incoming>) -> Result<SimResponse, ServeError> {
    let body = match read_capped(req.into_body(), MAX_FAULTS_BODY).await {
        Ok(body) => body,
        Err(ReadError::TooLarge) => {
            let message = "oauth settings body too large".to_owned();
            return Ok(control_error(StatusCode::PAYLOAD_TOO_LARGE, message));
        }
        Err(ReadError::Transport(e)) => return Err(ServeError::Body(e)),
    };
    match serde_json::from_slice::<OAuthSettings>(&body) {
        Ok(settings) => {
            provider.oauth().set(settings);
            Ok(json(StatusCode::OK, &json!({ "ok": true })))
        }
        Err(e) => Ok(control_error(
            StatusCode::BAD_REQUEST,
            format!("invalid oauth settings: {e}"),
        )),
    }
}

fn control_error(status: StatusCode, message: String) -> SimResponse {
    json(
        status,
        &json!({ "error": { "type": "invalid_request_error", "message": message } }),
    )
}
