//! GrabPay codes → normalized outcome codes.
//!
//! Two tables: decline codes carried in the body of a `"status":"failed"` answer, and HTTP
//! error statuses. The normalized codes are those of `types.wit`.
//!
//! | GrabPay `code`             | normalized               | kind |
//! |----------------------------|--------------------------|------|
//! | `insufficient_balance`     | `insufficient_funds`     | soft |
//! | `wallet_blocked`           | `do_not_honor`           | hard |
//! | `risk_rejected`            | `fraud_suspected`        | hard |
//! | `limit_exceeded`           | `limit_exceeded`         | soft |
//! | `wallet_not_found`         | `invalid_account`        | hard |
//! | `authentication_failed`    | `authentication_required`| soft |
//! | `declined`, anything else  | `generic_decline`        | hard |
//!
//! | HTTP | normalized             | class                    |
//! |------|------------------------|--------------------------|
//! | 500  | `provider_unavailable` | answered-not-processed   |
//! | 503  | `provider_unavailable` | answered-not-processed   |
//! | 429  | `rate_limited`         | answered-not-processed   |
//! | 400, 404, 409, 422 | `invalid_request` | answered-not-processed |
//! | 401, 403 | `provider_auth_failed` | answered-not-processed |
//! | 504  | `provider_timeout`     | ambiguous                |
//! | other| `provider_error`       | ambiguous                |
//!
//! HTTP 500 maps to the same retryable `provider_unavailable` as DANA's `SYSTEM_ERROR`, so
//! failover treats both providers alike. 401 is a bad signature: nothing was processed, and
//! it is payproxy's credentials that are wrong, not the storefront's request, so it is a
//! provider fault (`provider_auth_failed`), not the merchant's `invalid_request`.

use payproxy_plugin_sdk::payment::{DeclineKind, ErrorClass};

/// A decline code of a failed charge.
pub struct DeclineMapping {
    /// GrabPay's `code`.
    pub provider: &'static str,
    /// Normalized decline code.
    pub code: &'static str,
    /// Whether retrying (elsewhere, later) can succeed.
    pub kind: DeclineKind,
}

/// An HTTP error status.
pub struct HttpMapping {
    /// HTTP status.
    pub status: u16,
    /// Normalized error code.
    pub code: &'static str,
    /// What the provider did.
    pub class: ErrorClass,
}

/// Decline codes; unknown codes decline as [`FALLBACK_DECLINE`].
pub const DECLINES: &[DeclineMapping] = &[
    decline(
        "insufficient_balance",
        "insufficient_funds",
        DeclineKind::Soft,
    ),
    decline("wallet_blocked", "do_not_honor", DeclineKind::Hard),
    decline("risk_rejected", "fraud_suspected", DeclineKind::Hard),
    decline("limit_exceeded", "limit_exceeded", DeclineKind::Soft),
    decline("wallet_not_found", "invalid_account", DeclineKind::Hard),
    decline(
        "authentication_failed",
        "authentication_required",
        DeclineKind::Soft,
    ),
    decline("declined", "generic_decline", DeclineKind::Hard),
];

/// A failed charge whose code the table does not know: hard, so nobody retries blindly.
pub const FALLBACK_DECLINE: DeclineMapping = decline("", "generic_decline", DeclineKind::Hard);

/// HTTP error statuses; other statuses map to [`FALLBACK_HTTP`].
pub const HTTP_ERRORS: &[HttpMapping] = &[
    http(
        500,
        "provider_unavailable",
        ErrorClass::AnsweredNotProcessed,
    ),
    http(
        503,
        "provider_unavailable",
        ErrorClass::AnsweredNotProcessed,
    ),
    http(429, "rate_limited", ErrorClass::AnsweredNotProcessed),
    http(400, "invalid_request", ErrorClass::AnsweredNotProcessed),
    http(
        401,
        "provider_auth_failed",
        ErrorClass::AnsweredNotProcessed,
    ),
    http(
        403,
        "provider_auth_failed",
        ErrorClass::AnsweredNotProcessed,
    ),
    http(404, "invalid_request", ErrorClass::AnsweredNotProcessed),
    http(409, "invalid_request", ErrorClass::AnsweredNotProcessed),
    http(422, "invalid_request", ErrorClass::AnsweredNotProcessed),
    http(504, "provider_timeout", ErrorClass::Ambiguous),
];

/// An error status nobody listed: the payment may exist.
pub const FALLBACK_HTTP: HttpMapping = http(0, "provider_error", ErrorClass::Ambiguous);

const fn decline(provider: &'static str, code: &'static str, kind: DeclineKind) -> DeclineMapping {
    DeclineMapping {
        provider,
        code,
        kind,
    }
}

const fn http(status: u16, code: &'static str, class: ErrorClass) -> HttpMapping {
    HttpMapping {
        status,
        code,
        class,
    }
}

/// The mapping of a decline code.
pub fn decline_for(code: &str) -> &'static DeclineMapping {
    DECLINES
        .iter()
        .find(|m| m.provider == code)
        .unwrap_or(&FALLBACK_DECLINE)
}

/// The mapping of an HTTP error status.
pub fn http_for(status: u16) -> &'static HttpMapping {
    HTTP_ERRORS
        .iter()
        .find(|m| m.status == status)
        .unwrap_or(&FALLBACK_HTTP)
}

#[cfg(test)]
mod tests {
    use super::*;

    use payproxy_plugin_sdk::helpers::codes::{DECLINE_CODES, ERROR_CODES};

    #[test]
    fn tables_use_only_normalized_codes_and_have_no_duplicates() {
        for (i, m) in DECLINES.iter().enumerate() {
            assert!(DECLINE_CODES.contains(&m.code), "{}", m.code);
            assert!(DECLINES[..i].iter().all(|o| o.provider != m.provider));
        }
        for (i, m) in HTTP_ERRORS.iter().enumerate() {
            assert!(ERROR_CODES.contains(&m.code), "{}", m.code);
            assert!(HTTP_ERRORS[..i].iter().all(|o| o.status != m.status));
        }
    }

    #[test]
    fn lookups() {
        assert_eq!(
            decline_for("insufficient_balance").code,
            "insufficient_funds"
        );
        assert_eq!(decline_for("insufficient_balance").kind, DeclineKind::Soft);
        assert_eq!(decline_for("mystery").code, "generic_decline");
        assert_eq!(decline_for("mystery").kind, DeclineKind::Hard);
        assert_eq!(http_for(500).code, "provider_unavailable");
        assert_eq!(http_for(500).class, ErrorClass::AnsweredNotProcessed);
        assert_eq!(http_for(502).class, ErrorClass::Ambiguous);
    }
}
