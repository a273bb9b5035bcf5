//! Pieces shared by the JSON provider APIs (Adyen, iDEAL, Pix): reading a request, credentials
//! headers, idempotent replay and minting ids.
//!
//! Replay follows Stripe's rules (see `stripe`): a successful answer to a keyed request is
//! stored; a retry with the same key and the same method, path and body gets it back with
//! `idempotent-replayed: true` and changes nothing; the same key with another request is a
//! conflict. Keys are stored per dialect (`adyen:KEY`) so dialects never see each other's.

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, HOST};
use hyper::http::request::Parts;
use hyper::{HeaderMap, Request, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::body::{read_capped, ReadError};
use crate::ledger::{Ledger, StoredResponse};
use crate::respond::{json_bytes, SimResponse};
use crate::service::ServeError;

/// API bodies are small JSON documents; a cap keeps a runaway client from filling memory.
const MAX_BODY: usize = 256 * 1024;

/// A request read in full.
pub(crate) struct Call {
    pub(crate) parts: Parts,
    pub(crate) body: Bytes,
}

impl Call {
    /// Read the body; `Ok(None)` when it is larger than the cap (answer 413).
    pub(crate) async fn read(req: Request<Incoming>) -> Result<Option<Call>, ServeError> {
        let (parts, body) = req.into_parts();
        match read_capped(body, MAX_BODY).await {
            Ok(body) => Ok(Some(Call { parts, body })),
            Err(ReadError::TooLarge) => Ok(None),
            Err(ReadError::Transport(e)) => Err(ServeError::Body(e)),
        }
    }

    /// The body as JSON, if it is.
    pub(crate) fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// A header's value, trimmed; empty counts as absent.
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        header(&self.parts.headers, name)
    }

    /// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
    pub(crate) fn bearer(&self) -> Option<String> {
        let value = self.parts.headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
        let (scheme, token) = value.split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
    }

    /// A query parameter, undecoded.
    pub(crate) fn query(&self, name: &str) -> Option<String> {
        self.parts.uri.query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| v.to_owned())
        })
    }

    /// `http://<host>` as the caller addressed us, for URLs we hand out (redirects, QR).
    pub(crate) fn base_url(&self) -> String {
        base_url(&self.parts)
    }

    /// What a retry must repeat exactly to be replayed.
    pub(crate) fn fingerprint(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.parts.method.as_str());
        hasher.update([0]);
        hasher.update(self.parts.uri.path());
        hasher.update([0]);
        hasher.update(&self.body);
        hasher.finalize().into()
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    let value = headers.get(name)?;
    let value = String::from_utf8_lossy(value.as_bytes()).trim().to_owned();
    (!value.is_empty()).then_some(value)
}

/// What the idempotency store says about a keyed request.
pub(crate) enum Replay {
    /// Never seen: execute it.
    Fresh,
    /// Seen with the same request: answer this.
    Replayed(SimResponse),
    /// Seen with another request.
    Conflict,
}

/// Look `dialect:key` up in the store.
pub(crate) fn replay(ledger: &Ledger, dialect: &str, key: &str, fingerprint: &[u8; 32]) -> Replay {
    match ledger.stored(&format!("{dialect}:{key}")) {
        None => Replay::Fresh,
        Some(stored) if &stored.fingerprint != fingerprint => Replay::Conflict,
        Some(stored) => {
            let mut response = json_bytes(stored.status, stored.body.clone());
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            Replay::Replayed(response)
        }
    }
}

/// Encode the answer, and store it under `dialect:key` when it is a success.
pub(crate) fn answer(
    ledger: &mut Ledger,
    keyed: Option<(&str, &str, [u8; 32])>,
    status: StatusCode,
    value: &Value,
) -> SimResponse {
    let body: Bytes = serde_json::to_vec(value).unwrap_or_default().into();
    if let (Some((dialect, key, fingerprint)), true) = (keyed, status.is_success()) {
        let stored = StoredResponse {
            fingerprint,
            status,
            body: body.clone(),
        };
        ledger.store(format!("{dialect}:{key}"), stored);
    }
    json_bytes(status, body)
}

/// A new id from the provider's counter: `pi_<tag>_<n>` becomes `<prefix>_<tag>_<n>`.
pub(crate) fn mint(ledger: &mut Ledger, prefix: &str) -> String {
    let id = ledger.next_intent_id();
    match id.strip_prefix("pi_") {
        Some(rest) => format!("{prefix}_{rest}"),
        None => id,
    }
}

/// A new refund id: `re_<tag>_<n>` becomes `<prefix>_<tag>_<n>`.
pub(crate) fn mint_refund(ledger: &mut Ledger, prefix: &str) -> String {
    let id = ledger.next_refund_id();
    match id.strip_prefix("re_") {
        Some(rest) => format!("{prefix}_{rest}"),
        None => id,
    }
}

/// `http://<host>` as the caller of `parts` addressed us, for URLs we hand out.
pub(crate) fn base_url(parts: &Parts) -> String {
    let host = parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_else(|| "127.0.0.1".to_owned());
    format!("http://{host}")
}
