//! Identifiers: storefront-visible ids, provider idempotency keys, request fingerprints.

use super::idempotency::Held;
use super::*;

/// A storefront-visible id. Idempotent requests get one derived from their record, so a
/// retry that resumes after a crash shows the storefront the same id.
pub(super) fn mint_id(held: Option<&Held>, prefix: &str) -> String {
    match held {
        Some(Held {
            record,
            fingerprint,
            ..
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
    // Without a storefront key, a payment retried for the same order is the same payment;
    // two refunds of one payment are not the same refund (partial refunds add up).
    let basis = match (&payment.idempotency_key, payment.operation) {
        (Some(key), _) => key.clone(),
        (None, Operation::Refund) => mint(""),
        (None, _) => payment
            .merchant_reference
            .clone()
            .or_else(|| payment.id.clone())
            .unwrap_or_else(|| mint("")),
    };
    let digest =
        Sha256::digest(format!("{provider}\u{0}{:?}\u{0}{basis}", payment.operation).as_bytes());
    format!("pp-{}", &hex::encode(digest)[..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(key: Option<&str>, reference: Option<&str>) -> Payment {
        let mut p = crate::plugin::blank_payment(Operation::Authorize);
        p.merchant_reference = reference.map(str::to_string);
        p.idempotency_key = key.map(str::to_string);
        p
    }

    #[test]
    fn ids_of_a_held_request_are_stable_and_others_random() {
        let held = Held::unlisted("route\u{0}key-1", "fp");
        let a = mint_id(Some(&held), "pi_");
        assert_eq!(
            a,
            mint_id(Some(&held), "pi_"),
            "a resumed request shows the same id"
        );
        assert!(a.starts_with("pi_") && a.len() == 27, "{a}");
        assert_ne!(a, mint_id(Some(&held), "re_")[..].replacen("re_", "pi_", 1));
        assert_ne!(mint_id(None, "pi_"), mint_id(None, "pi_"));
    }

    #[test]
    fn provider_keys_are_stable_per_request_and_distinct_per_provider() {
        let p = payment(Some("k1"), Some("order-1"));
        assert_eq!(provider_key("adyen", &p), provider_key("adyen", &p));
        assert_ne!(provider_key("adyen", &p), provider_key("stripe", &p));
        // Without a storefront key, the merchant reference makes retries the same request.
        let by_reference = payment(None, Some("order-1"));
        assert_eq!(
            provider_key("adyen", &by_reference),
            provider_key("adyen", &payment(None, Some("order-1")))
        );
        assert_ne!(
            provider_key("adyen", &by_reference),
            provider_key("adyen", &payment(Some("k1"), Some("order-1")))
        );
        // Two key-less partial refunds of one payment are two refunds.
        let mut refund = payment(None, Some("order-1"));
        refund.operation = Operation::Refund;
        refund.id = Some("pi_1".into());
        assert_ne!(
            provider_key("adyen", &refund),
            provider_key("adyen", &refund)
        );
    }
}
