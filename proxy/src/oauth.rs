//! Host-managed OAuth 2.0 access tokens (RFC 6749 §4.4, client credentials grant) for
//! providers whose API wants a bearer token that expires (PayPal, M-Pesa's Daraja, DANA,
//! Pix PSPs …). Plugins have no network, so the host fetches the token from the provider's
//! token endpoint, keeps it until shortly before it expires, refreshes it ahead of that in
//! the background, and hands it to that provider's dialect only, as one more credential
//! (`providers.NAME.oauth2.credential`, default `access_token`).
//!
//! A token source outlives snapshots: a reload that keeps a provider's token settings keeps
//! its token; one that changes them (a rotated client secret, a new scope) gets a new
//! source, which fetches a new token. A failed refresh is retried with backoff while the
//! current token is still good; only when there is no good token does an attempt wait for a
//! fetch, and if that fails the attempt is not sent (another provider may take the
//! payment). Neither the client secret nor any token is ever logged or shown: errors carry
//! the endpoint's status and its RFC 6749 `error` code only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::config::ClientAuth;
use crate::metrics::Metrics;
use crate::upstream::{HttpClient, ProxyBody};

/// Largest token endpoint answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// `expires_in` when the endpoint leaves it out (RFC 6749 makes it only RECOMMENDED).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// Longest wait between retries of a failed refresh.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How a provider's token is obtained (resolved from `providers.NAME.oauth2`).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSettings {
    pub token_url: Uri,
    pub client_id: String,
    pub client_secret: String,
    pub scope: Option<String>,
    pub client_auth: ClientAuth,
    /// The credential name the token is given to the dialect under.
    pub credential: String,
    /// Refresh this long before the token expires (at most half its lifetime).
    pub refresh_before: Duration,
    /// Time allowed for one token request.
    pub timeout: Duration,
}

impl std::fmt::Debug for TokenSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSettings")
            .field("token_url", &self.token_url)
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

impl TokenSettings {
    /// What identifies a source: every setting, the secret only as a digest.
    fn identity(&self, provider: &str) -> String {
        let mut h = Sha256::new();
        for part in [
            provider,
            &self.token_url.to_string(),
            &self.client_id,
            &self.client_secret,
            self.scope.as_deref().unwrap_or("\u{0}"),
            match self.client_auth {
                ClientAuth::Basic => "basic",
                ClientAuth::Body => "body",
            },
            &self.credential,
            &self.refresh_before.as_millis().to_string(),
            &self.timeout.as_millis().to_string(),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        hex::encode(h.finalize())
    }
}

/// Why no token could be had. Never carries a secret or a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// The endpoint could not be reached (or the connection broke).
    #[error("token endpoint unreachable: {0}")]
    Transport(String),
    /// No answer in time.
    #[error("token endpoint did not answer within {0:?}")]
    Timeout(Duration),
    /// The endpoint refused (`error` is its RFC 6749 error code, when it gave one).
    #[error("token endpoint answered {status}{}", error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default())]
    Refused { status: u16, error: Option<String> },
    /// A 2xx answer that is not a usable bearer token.
    #[error("token endpoint answer unusable: {0}")]
    Malformed(&'static str),
}

impl TokenError {
    fn label(&self) -> &'static str {
        match self {
            TokenError::Transport(_) => "unreachable",
            TokenError::Timeout(_) => "timeout",
            TokenError::Refused { .. } => "refused",
            TokenError::Malformed(_) => "malformed",
        }
    }
}

/// A token and when it expires.
#[derive(Clone)]
struct Token {
    value: String,
    fetched: Instant,
    expires: Instant,
}

/// The token sources of every provider, across snapshots.
pub struct OAuthTokens {
    sources: Mutex<HashMap<String, Weak<TokenSource>>>,
    fetches: IntCounterVec,
    expiry: IntGaugeVec,
}

impl OAuthTokens {
    /// Registers the token metrics on `metrics`.
    pub fn new(metrics: &Metrics) -> OAuthTokens {
        let fetches = IntCounterVec::new(
            Opts::new(
                "payproxy_oauth_token_fetches_total",
                "OAuth token requests to providers' token endpoints, by provider and result (ok, refused, unreachable, timeout, malformed)",
            ),
            &["provider", "result"],
        )
        .expect("valid metric");
        let expiry = IntGaugeVec::new(
            Opts::new(
                "payproxy_oauth_token_expiry_timestamp_seconds",
                "When the provider's current OAuth token expires, Unix seconds",
            ),
            &["provider"],
        )
        .expect("valid metric");
        // Registered once per process; a second registry (tests) keeps its own.
        let _ = metrics.registry().register(Box::new(fetches.clone()));
        let _ = metrics.registry().register(Box::new(expiry.clone()));
        OAuthTokens {
            sources: Mutex::new(HashMap::new()),
            fetches,
            expiry,
        }
    }

    /// The token source of `provider` with `settings`: the running one when the settings
    /// are unchanged, else a new one (which starts fetching at once when a runtime runs).
    pub fn source(
        &self,
        provider: &str,
        settings: TokenSettings,
        client: HttpClient,
    ) -> Arc<TokenSource> {
        let identity = settings.identity(provider);
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        sources.retain(|_, s| s.strong_count() > 0);
        if let Some(source) = sources.get(&identity).and_then(Weak::upgrade) {
            return source;
        }
        let source = Arc::new(TokenSource {
            provider: provider.to_string(),
            settings,
            client,
            current: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            closed: Arc::new(Notify::new()),
            fetches: self.fetches.clone(),
            expiry: self.expiry.clone(),
        });
        sources.insert(identity, Arc::downgrade(&source));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(refresh(Arc::downgrade(&source), source.closed.clone()));
        }
        source
    }
}

/// One provider's access token.
pub struct TokenSource {
    provider: String,
    settings: TokenSettings,
    client: HttpClient,
    current: Mutex<Option<Token>>,
    /// One token request at a time.
    fetching: tokio::sync::Mutex<()>,
    /// Wakes the refresh task when the source is dropped.
    closed: Arc<Notify>,
    fetches: IntCounterVec,
    expiry: IntGaugeVec,
}

impl Drop for TokenSource {
    fn drop(&mut self) {
        self.closed.notify_one();
    }
}

impl TokenSource {
    /// The credential name the token goes under.
    pub fn credential(&self) -> &str {
        &self.settings.credential
    }

    /// A token good for a request now: the current one, or (when there is none or it is
    /// about to expire) a new one, fetched once for every caller waiting.
    pub async fn token(&self) -> Result<String, TokenError> {
        if let Some(value) = self.good() {
            return Ok(value);
        }
        let _one = self.fetching.lock().await;
        if let Some(value) = self.good() {
            return Ok(value);
        }
        self.fetch().await
    }

    /// The current token unless it expires within a small margin (a request must not
    /// carry a token that lapses on the way).
    fn good(&self) -> Option<String> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let token = current.as_ref()?;
        let margin = (token.expires - token.fetched)
            .checked_div(4)
            .unwrap_or_default()
            .min(Duration::from_secs(1));
        (Instant::now() + margin < token.expires).then(|| token.value.clone())
    }

    /// When the current token should be replaced: `refresh_before` ahead of its expiry,
    /// but not before half its lifetime. `None`: there is no token yet.
    fn refresh_due(&self) -> Option<Instant> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let token = current.as_ref()?;
        let lifetime = token.expires - token.fetched;
        Some(token.expires - self.settings.refresh_before.min(lifetime / 2))
    }

    /// One token request; the answer replaces the current token.
    async fn fetch(&self) -> Result<String, TokenError> {
        let result = match tokio::time::timeout(self.settings.timeout, self.request()).await {
            Ok(result) => result,
            Err(_) => Err(TokenError::Timeout(self.settings.timeout)),
        };
        match &result {
            Ok(token) => {
                self.fetches
                    .with_label_values(&[self.provider.as_str(), "ok"])
                    .inc();
                let expires_unix = SystemTime::now()
                    .checked_add(token.expires - token.fetched)
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs() as i64);
                self.expiry
                    .with_label_values(&[self.provider.as_str()])
                    .set(expires_unix);
                tracing::info!(provider = %self.provider, expires_in_s = (token.expires - token.fetched).as_secs(), "oauth token fetched");
                *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(token.clone());
            }
            Err(error) => {
                self.fetches
                    .with_label_values(&[self.provider.as_str(), error.label()])
                    .inc();
                tracing::warn!(provider = %self.provider, %error, "oauth token request failed");
            }
        }
        result.map(|token| token.value)
    }

    async fn request(&self) -> Result<Token, TokenError> {
        let s = &self.settings;
        let mut request = Request::post(s.token_url.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json");
        let form = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            if let Some(scope) = &s.scope {
                form.append_pair("scope", scope);
            }
            match s.client_auth {
                ClientAuth::Basic => {
                    // RFC 6749 §2.3.1: each part form-urlencoded, then base64.
                    let encode =
                        |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
                    let pair = format!("{}:{}", encode(&s.client_id), encode(&s.client_secret));
                    let basic = base64::engine::general_purpose::STANDARD.encode(pair);
                    request = request.header(header::AUTHORIZATION, format!("Basic {basic}"));
                }
                ClientAuth::Body => {
                    form.append_pair("client_id", &s.client_id);
                    form.append_pair("client_secret", &s.client_secret);
                }
            }
            form.finish()
        };
        let body: ProxyBody = Full::new(Bytes::from(form))
            .map_err(|never| match never {})
            .boxed();
        let request = request
            .body(body)
            .map_err(|_| TokenError::Malformed("the token request could not be built"))?;
        let fetched = Instant::now();
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| TokenError::Transport(crate::upstream::error_chain(&e)))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|_| TokenError::Malformed("the answer is unreadable or larger than 64 KiB"))?
            .to_bytes();
        if !status.is_success() {
            return Err(TokenError::Refused {
                status: status.as_u16(),
                error: error_code(&bytes),
            });
        }
        let answer: Answer = serde_json::from_slice(&bytes)
            .map_err(|_| TokenError::Malformed("not a JSON token answer"))?;
        if !answer.token_type.eq_ignore_ascii_case("bearer") {
            return Err(TokenError::Malformed("token_type is not Bearer"));
        }
        let value = answer.access_token;
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Malformed(
                "access_token is empty or not printable ASCII",
            ));
        }
        let lifetime = answer
            .expires_in
            .map_or(DEFAULT_LIFETIME, |s| Duration::from_secs(s.max(1)));
        Ok(Token {
            value,
            fetched,
            expires: fetched + lifetime,
        })
    }
}

/// A successful token answer (RFC 6749 §5.1).
#[derive(Deserialize)]
struct Answer {
    access_token: String,
    token_type: String,
    expires_in: Option<u64>,
}

/// The RFC 6749 §5.2 `error` code of a refusal, when it is one (a short lower-case code:
/// nothing else from the answer is kept).
fn error_code(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Refusal {
        error: String,
    }
    let code = serde_json::from_slice::<Refusal>(body).ok()?.error;
    (code.len() <= 64 && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')).then_some(code)
}

/// Keeps a source's token fresh until the source is dropped: the first token at once, then
/// each one ahead of its expiry; a failure is retried with backoff (the current token, while
/// good, keeps serving).
async fn refresh(source: Weak<TokenSource>, closed: Arc<Notify>) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let due = match source.upgrade() {
            Some(s) => s.refresh_due(),
            None => return,
        };
        if let Some(due) = due {
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = closed.notified() => return,
            }
        }
        let Some(s) = source.upgrade() else { return };
        let fetched = {
            let _one = s.fetching.lock().await;
            // Someone else may have fetched while this waited.
            match s.refresh_due() {
                Some(due) if due > Instant::now() => Ok(()),
                _ => s.fetch().await.map(drop),
            }
        };
        drop(s);
        match fetched {
            Ok(()) => backoff = Duration::from_millis(250),
            Err(_) => {
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = closed.notified() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_lower_case_error_codes_are_kept() {
        assert_eq!(
            error_code(
                br#"{"error":"invalid_client","error_description":"secret sk_live_x wrong"}"#
            ),
            Some("invalid_client".into())
        );
        assert_eq!(error_code(br#"{"error":"Bad client sk_live_x"}"#), None);
        assert_eq!(error_code(b"<html>"), None);
    }
}
