//! The normalized codes of the contract (`types.wit`): what a dialect maps a provider's own
//! decline and error codes to, so that storefronts and the host see one vocabulary.

/// Normalized decline codes (`decline.code`).
pub const DECLINE_CODES: &[&str] = &[
    "insufficient_funds",
    "do_not_honor",
    "expired_card",
    "fraud_suspected",
    "invalid_account",
    "limit_exceeded",
    "authentication_required",
    "generic_decline",
    // Methods the shopper confirms elsewhere (on the phone, in the banking app).
    "shopper_declined",
    "confirmation_expired",
    "shopper_unreachable",
];

/// Normalized failure codes (`failure.code`). `invalid_request` is the merchant's own
/// mistake (answered once, no failover, never a provider fault); `provider_auth_failed` is
/// the provider refusing payproxy's credentials for it (a fault: another provider may work).
pub const ERROR_CODES: &[&str] = &[
    "provider_unavailable",
    "rate_limited",
    "provider_timeout",
    "invalid_request",
    "provider_auth_failed",
    "provider_error",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_snake_case() {
        let all: Vec<&str> = DECLINE_CODES.iter().chain(ERROR_CODES).copied().collect();
        for (i, code) in all.iter().enumerate() {
            assert!(!all[..i].contains(code), "{code} twice");
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code}"
            );
        }
        assert_eq!((DECLINE_CODES.len(), ERROR_CODES.len()), (11, 6));
    }
}
