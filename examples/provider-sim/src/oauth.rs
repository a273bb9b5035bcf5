//! An OAuth 2.0 token endpoint (RFC 6749 client credentials grant), as PayPal, M-Pesa
//! (Daraja), DANA and Pix PSPs have one: `POST /oauth/token` with `grant_type=
//! client_credentials`, the client authenticated with HTTP Basic (`client_secret_basic`) or
//! with `client_id`/`client_secret` in the form (`client_secret_post`), answers
//! `{"access_token", "token_type": "Bearer", "expires_in"}`; a wrong client → 401
//! `{"error": "invalid_client"}`.
//!
//! Tokens are not checked until required (`POST /__sim/oauth` or
//! [`crate::Simulator::set_oauth`]). Once `require` is on, every API call of this provider needs `Authorization: Bearer` with a
//! token it issued that has not expired; anything else → 401 `{"error": "invalid_token"}`,
//! counted as rejected and not processed. `fail_next` makes the next token requests
//! answer 503, to show a client riding out a failed refresh.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Method, Request, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::body::{read_capped, ReadError};
use crate::provider::Provider;
use crate::respond::{json, SimResponse};
use crate::service::ServeError;

/// The token endpoint's path.
pub(crate) const TOKEN_PATH: &str = "/oauth/token";

/// Token requests are small forms.
const MAX_TOKEN_BODY: usize = 16 * 1024;

/// How a provider's token endpoint behaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthSettings {
    /// API calls need a live token this provider issued.
    pub require: bool,
    /// The client the endpoint accepts.
    pub client_id: String,
    pub client_secret: String,
    /// Lifetime of issued tokens (`expires_in`), seconds.
    pub lifetime_s: u64,
    /// The next this many token requests answer 503.
    pub fail_next: u32,
}

impl Default for OAuthSettings {
    fn default() -> Self {
        OAuthSettings {
            require: false,
            client_id: "payproxy".into(),
            client_secret: "sim-secret".into(),
            lifetime_s: 3600,
            fail_next: 0,
        }
    }
}

/// What the token endpoint did, for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthStats {
    /// Tokens issued, oldest first.
    pub issued: Vec<String>,
    /// Token requests answered 503 by `fail_next`.
    pub failed: u64,
    /// Token requests with a wrong client.
    pub refused_clients: u64,
    /// API calls refused for a missing, unknown or expired token.
    pub rejected_calls: u64,
}

/// A provider's token endpoint state.
#[derive(Debug, Default)]
pub(crate) struct OAuthState {
    settings: OAuthSettings,
    expiry: HashMap<String, Instant>,
    stats: OAuthStats,
}

impl OAuthState {
    pub(crate) fn set(&mut self, settings: OAuthSettings) {
        self.settings = settings;
    }

    pub(crate) fn stats(&self) -> OAuthStats {
        self.stats.clone()
    }

    /// Whether an API call may go on: always, unless tokens are required; then only with
    /// a live one (a refusal is counted).
    pub(crate) fn admits(&mut self, authorization: Option<&str>) -> bool {
        if !self.settings.require {
            return true;
        }
        let token = authorization
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let live = token
            .and_then(|t| self.expiry.get(t))
            .is_some_and(|expires| Instant::now() < *expires);
        if !live {
            self.stats.rejected_calls += 1;
        }
        live
    }

    fn issue(&mut self) -> (String, u64) {
        let token = format!("sim_at_{}", hex::encode(rand::random::<[u8; 16]>()));
        let lifetime = self.settings.lifetime_s;
        self.expiry.insert(
            token.clone(),
            Instant::now() + Duration::from_secs(lifetime),
        );
        self.stats.issued.push(token.clone());
        (token, lifetime)
    }
}

/// The 401 for an API call without a live token.
pub(crate) fn invalid_token() -> SimResponse {
    let mut response = json(
        StatusCode::UNAUTHORIZED,
        &json!({ "error": "invalid_token", "error_description": "the access token is missing, unknown or expired" }),
    );
    response.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        hyper::header::HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    response
}

/// `POST /oauth/token`.
pub(crate) async fn token(
    provider: &Provider,
    req: Request<Incoming>,
) -> Result<SimResponse, ServeError> {
    if req.method() != Method::POST {
        return Ok(error(StatusCode::METHOD_NOT_ALLOWED, "invalid_request"));
    }
    let basic = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(basic_credentials);
    let body = match read_capped(req.into_body(), MAX_TOKEN_BODY).await {
        Ok(body) => body,
        Err(ReadError::TooLarge) => {
            return Ok(error(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request"))
        }
        Err(ReadError::Transport(e)) => return Err(ServeError::Body(e)),
    };
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let mut oauth = provider.oauth();
    if oauth.settings.fail_next > 0 {
        oauth.settings.fail_next -= 1;
        oauth.stats.failed += 1;
        return Ok(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
        ));
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return Ok(error(StatusCode::BAD_REQUEST, "unsupported_grant_type"));
    }
    let client = basic.or_else(|| {
        Some((
            form.get("client_id")?.clone(),
            form.get("client_secret")?.clone(),
        ))
    });
    let settings = oauth.settings.clone();
    if client != Some((settings.client_id, settings.client_secret)) {
        oauth.stats.refused_clients += 1;
        return Ok(error(StatusCode::UNAUTHORIZED, "invalid_client"));
    }
    let (token, lifetime) = oauth.issue();
    Ok(json(
        StatusCode::OK,
        &json!({ "access_token": token, "token_type": "Bearer", "expires_in": lifetime }),
    ))
}

/// `client_secret_basic`: both parts form-urlencoded, then base64 (RFC 6749 §2.3.1).
fn basic_credentials(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| -> String {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

fn error(status: StatusCode, code: &str) -> SimResponse {
    json(status, &json!({ "error": code }))
}
