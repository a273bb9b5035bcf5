//! Adyen codes → normalized outcome codes.
//!
//! Two tables: `refusalReasonCode` of a `Refused` payment → decline code and kind; HTTP
//! status of an error answer → failure code and class (Adyen's own rows before the SDK's
//! standard ones). `resultCode` values are mapped in `decode.rs` (a handful, each with its
//! own shape).
//!
//! Decline kinds: **soft** means the same card may succeed later or elsewhere (balance, issuer
//! unavailable, authentication needed), **hard** means retrying is pointless or harmful
//! (expired, blocked, fraud).

use payproxy_plugin_sdk::helpers::http_errors::HttpError;
use payproxy_plugin_sdk::payment::{DeclineKind, ErrorClass};

/// One refusal reason: Adyen `refusalReasonCode`, normalized code, kind, shopper-safe text.
pub struct Refusal {
    /// Adyen's numeric code, as the string Adyen sends.
    pub provider: &'static str,
    /// Normalized decline code (types.wit).
    pub code: &'static str,
    /// Whether retrying can help.
    pub kind: DeclineKind,
    /// Our own description (provider text is never passed through).
    pub message: &'static str,
}

const fn r(
    provider: &'static str,
    code: &'static str,
    kind: DeclineKind,
    message: &'static str,
) -> Refusal {
    Refusal {
        provider,
        code,
        kind,
        message,
    }
}

use DeclineKind::{Hard, Soft};

/// Adyen refusal reasons (docs.adyen.com "Refusal reasons"). Codes not listed map to
/// `generic_decline`, soft.
pub const REFUSALS: &[Refusal] = &[
    r("2", "do_not_honor", Soft, "the issuer refused the payment"),
    r("3", "do_not_honor", Soft, "the issuer asks for a referral"),
    r("4", "generic_decline", Soft, "acquirer error"),
    r("5", "do_not_honor", Hard, "the card is blocked"),
    r("6", "expired_card", Hard, "the card has expired"),
    r("7", "generic_decline", Hard, "invalid amount"),
    r("8", "invalid_account", Hard, "invalid card number"),
    r("9", "generic_decline", Soft, "the issuer is unavailable"),
    r("10", "generic_decline", Hard, "not supported by the issuer"),
    r(
        "11",
        "authentication_required",
        Soft,
        "3-D Secure authentication failed",
    ),
    r("12", "insufficient_funds", Soft, "not enough balance"),
    r("14", "fraud_suspected", Hard, "acquirer suspects fraud"),
    r("15", "generic_decline", Hard, "the payment was cancelled"),
    r(
        "16",
        "generic_decline",
        Hard,
        "the shopper cancelled the payment",
    ),
    r("17", "authentication_required", Soft, "invalid PIN"),
    r("18", "do_not_honor", Hard, "PIN tries exceeded"),
    r("19", "generic_decline", Soft, "PIN validation not possible"),
    r("20", "fraud_suspected", Hard, "refused by risk checks"),
    r(
        "21",
        "generic_decline",
        Soft,
        "the payment was not submitted",
    ),
    r("22", "fraud_suspected", Hard, "cancelled by risk checks"),
    r(
        "23",
        "do_not_honor",
        Hard,
        "transaction not permitted for this card",
    ),
    r("24", "do_not_honor", Soft, "the security code was declined"),
    r("25", "do_not_honor", Hard, "the card is restricted"),
    r("26", "do_not_honor", Hard, "the authorisation was revoked"),
    r("27", "generic_decline", Hard, "declined by the issuer"),
    r("28", "limit_exceeded", Soft, "withdrawal amount exceeded"),
    r("29", "limit_exceeded", Soft, "withdrawal count exceeded"),
    r("31", "fraud_suspected", Hard, "the issuer suspects fraud"),
    r("32", "do_not_honor", Soft, "address verification declined"),
    r(
        "33",
        "authentication_required",
        Soft,
        "the card requires an online PIN",
    ),
    r(
        "34",
        "invalid_account",
        Hard,
        "no checking account on the card",
    ),
    r(
        "35",
        "invalid_account",
        Hard,
        "no savings account on the card",
    ),
    r(
        "36",
        "authentication_required",
        Soft,
        "a mobile PIN is required",
    ),
    r(
        "37",
        "authentication_required",
        Soft,
        "contactless fallback required",
    ),
    r(
        "38",
        "authentication_required",
        Soft,
        "authentication required",
    ),
    r(
        "39",
        "authentication_required",
        Soft,
        "3-D Secure response not received",
    ),
    r(
        "40",
        "generic_decline",
        Soft,
        "the card application is temporarily blocked",
    ),
    r(
        "41",
        "authentication_required",
        Soft,
        "cardholder verification required",
    ),
    r(
        "42",
        "authentication_required",
        Soft,
        "3-D Secure authentication error",
    ),
    r(
        "46",
        "do_not_honor",
        Hard,
        "blocked to prevent excessive retries",
    ),
];

/// The row for a refusal reason code; unknown codes are a soft generic decline.
pub fn refusal(code: &str) -> &'static Refusal {
    const UNKNOWN: Refusal = r("", "generic_decline", Soft, "the payment was refused");
    REFUSALS
        .iter()
        .find(|row| row.provider == code.trim())
        .unwrap_or(&UNKNOWN)
}

/// Adyen's error answers where they differ from
/// [`http_errors::STANDARD`](payproxy_plugin_sdk::helpers::http_errors::STANDARD), for
/// [`http_errors::classify`](payproxy_plugin_sdk::helpers::http_errors::classify). Adyen validates
/// and authenticates before it processes, so 4xx are "answered, not processed" (standard).
/// The simulated Adyen guarantees that its 500 and 503 did nothing (the real one documents
/// 500 as "not processed, retry"); 502 and 504 come from gateways in front of it and prove
/// nothing, so they are ambiguous (standard).
pub const HTTP_ERRORS: &[HttpError] = &[(
    500,
    "provider_unavailable",
    ErrorClass::AnsweredNotProcessed,
)];

#[cfg(test)]
mod tests {
    use super::*;
    use payproxy_plugin_sdk::helpers::codes::DECLINE_CODES;
    use payproxy_plugin_sdk::helpers::http_errors;

    #[test]
    fn table_is_consistent() {
        for (i, row) in REFUSALS.iter().enumerate() {
            assert!(DECLINE_CODES.contains(&row.code), "{}", row.provider);
            assert!(
                REFUSALS[..i].iter().all(|o| o.provider != row.provider),
                "duplicate {}",
                row.provider
            );
        }
        assert_eq!(refusal("12").code, "insufficient_funds");
        assert_eq!(refusal(" 6 ").kind, Hard);
        assert_eq!(refusal("999").code, "generic_decline");
        let http_error = |status| http_errors::classify(status, HTTP_ERRORS);
        assert_eq!(http_error(500).1, "provider_unavailable");
        assert_eq!(http_error(500).2, ErrorClass::AnsweredNotProcessed);
        assert_eq!(http_error(502).2, ErrorClass::Ambiguous);
        assert_eq!(http_error(418).2, ErrorClass::AnsweredNotProcessed);
        assert_eq!(http_error(599).1, "provider_error");
        assert_eq!(http_error(302).2, ErrorClass::Ambiguous);
    }
}
