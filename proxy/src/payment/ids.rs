//! Identifiers: storefront-visible ids, provider idempotency keys, request fingerprints.

use super::*;

impl Flow<'_> {
    /// A storefront-visible id. Idempotent requests get one derived from their record, so a
    /// retry that resumes after a crash shows the storefront the same id.
    pub(super) fn mint(&self, prefix: &str) -> String {
        match &self.idempotency {
            Some(Held {
                record,
                fingerprint,
            }) => {
                let digest =
                    Sha256::digest(format!("{prefix}\u{0}{record}\u{0}{fingerprint}").as_bytes());
                let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
                let token: String = digest
                    .iter()
                    .take(24)
                    .map(|b| alphabet[usize::from(*b) % alphabet.len()] as char)
                    .collect();
                format!("{prefix}{token}")
            }
            None => mint(prefix),
        }
    }

    pub(super) fn keep_response(&self, response: StoredResponse) {
        if let Ok(mut keep) = self.keep.lock() {
            *keep = Some(response);
        }
    }
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What makes two requests "the same" for an idempotency key: method, path and body.
pub(super) fn fingerprint(parts: &http::request::Parts, body: &Bytes) -> String {
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(parts.uri.path().as_bytes());
    hasher.update([0]);
    hasher.update(body);
    hex::encode(hasher.finalize())
}

/// A new storefront-visible id: prefix + 24 random alphanumerics.
pub(super) fn mint(prefix: &str) -> String {
    use rand::distr::{Alphanumeric, SampleString};
    format!(
        "{prefix}{}",
        Alphanumeric.sample_string(&mut rand::rng(), 24)
    )
}

/// The idempotency key a provider sees: stable for the same storefront request (same
/// storefront key, or same merchant reference and operation), distinct per provider.
pub fn provider_key(provider: &str, payment: &Payment) -> String {
    let basis = payment
        .idempotency_key
        .clone()
        .or_else(|| payment.merchant_reference.clone())
        .or_else(|| payment.id.clone())
        .unwrap_or_else(|| mint(""));
    let digest =
        Sha256::digest(format!("{provider}\u{0}{:?}\u{0}{basis}", payment.operation).as_bytes());
    format!("pp-{}", &hex::encode(digest)[..32])
}
