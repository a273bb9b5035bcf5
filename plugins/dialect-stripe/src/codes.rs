//! Code tables: Stripe decline and error answers → normalized outcomes (egress), and
//! normalized declines → Stripe's own codes and messages (ingress).
//!
//! Hard declines are not worth retrying anywhere (the card or account is the problem, or a
//! retry could duplicate); soft ones may succeed later or through another provider. An
//! unknown decline code is a hard `generic_decline`: retrying a decline we do not
//! understand risks card-network penalties and buys nothing.

use payproxy_plugin_sdk::payment::{DeclineKind, ErrorClass};

use crate::config::ServerErrors;

use DeclineKind::{Hard, Soft};

/// Stripe `decline_code` (or `code` when a card error has no decline code) →
/// (normalized code, kind).
pub const DECLINE_CODES: &[(&str, &str, DeclineKind)] = &[
    ("insufficient_funds", "insufficient_funds", Soft),
    ("do_not_honor", "do_not_honor", Soft),
    ("generic_decline", "generic_decline", Soft),
    ("card_declined", "generic_decline", Soft),
    ("try_again_later", "generic_decline", Soft),
    ("issuer_not_available", "generic_decline", Soft),
    ("processing_error", "generic_decline", Soft),
    ("reenter_transaction", "generic_decline", Soft),
    ("approve_with_id", "generic_decline", Soft),
    ("no_action_taken", "do_not_honor", Soft),
    ("expired_card", "expired_card", Hard),
    ("invalid_expiry_month", "expired_card", Hard),
    ("invalid_expiry_year", "expired_card", Hard),
    ("incorrect_number", "invalid_account", Hard),
    ("invalid_number", "invalid_account", Hard),
    ("invalid_account", "invalid_account", Hard),
    ("new_account_information_available", "invalid_account", Hard),
    ("incorrect_cvc", "generic_decline", Hard),
    ("invalid_cvc", "generic_decline", Hard),
    ("incorrect_zip", "generic_decline", Hard),
    ("fraudulent", "fraud_suspected", Hard),
    ("lost_card", "fraud_suspected", Hard),
    ("stolen_card", "fraud_suspected", Hard),
    ("pickup_card", "fraud_suspected", Hard),
    ("merchant_blacklist", "fraud_suspected", Hard),
    ("security_violation", "fraud_suspected", Hard),
    ("restricted_card", "do_not_honor", Hard),
    ("call_issuer", "do_not_honor", Hard),
    ("stop_payment_order", "do_not_honor", Hard),
    ("revocation_of_authorization", "do_not_honor", Hard),
    ("revocation_of_all_authorizations", "do_not_honor", Hard),
    ("card_velocity_exceeded", "limit_exceeded", Soft),
    ("withdrawal_count_limit_exceeded", "limit_exceeded", Soft),
    ("authentication_required", "authentication_required", Soft),
    ("offline_pin_required", "authentication_required", Soft),
    (
        "online_or_offline_pin_required",
        "authentication_required",
        Soft,
    ),
    ("card_not_supported", "generic_decline", Hard),
    ("currency_not_supported", "generic_decline", Hard),
    ("transaction_not_allowed", "generic_decline", Hard),
    ("not_permitted", "generic_decline", Hard),
    ("service_not_allowed", "generic_decline", Hard),
    ("invalid_amount", "generic_decline", Hard),
    ("duplicate_transaction", "generic_decline", Hard),
    ("testmode_decline", "generic_decline", Hard),
];

/// The normalized code and kind of a Stripe decline code.
pub fn decline(provider_code: &str) -> (&'static str, DeclineKind) {
    DECLINE_CODES
        .iter()
        .find(|(p, _, _)| *p == provider_code)
        .map(|(_, code, kind)| (*code, *kind))
        .unwrap_or(("generic_decline", Hard))
}

/// How an error answer is classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Always this class.
    Fixed(ErrorClass),
    /// As the config's `server_errors` says (default answered-not-processed).
    ServerErrors,
}

/// One row of [`ERRORS`]: HTTP statuses, Stripe error `type` (`None`: any or none).
pub struct ErrorRule {
    /// Inclusive status range.
    pub status: (u16, u16),
    /// The `error.type` that must match, if any.
    pub error_type: Option<&'static str>,
    /// Normalized code.
    pub code: &'static str,
    /// Class.
    pub class: Class,
}

const fn rule(
    status: (u16, u16),
    error_type: Option<&'static str>,
    code: &'static str,
    class: Class,
) -> ErrorRule {
    ErrorRule {
        status,
        error_type,
        code,
        class,
    }
}

use ErrorClass::{Ambiguous, AnsweredNotProcessed};

/// Non-2xx answers that are not card declines, first match wins. `idempotency_error` (the
/// key was used before with another body) and 409 (a request with this key is in flight)
/// are ambiguous: the earlier request may have charged. An answer whose body is not a Stripe
/// error is matched with type `None` only.
pub const ERRORS: &[ErrorRule] = &[
    rule(
        (429, 429),
        None,
        "rate_limited",
        Class::Fixed(AnsweredNotProcessed),
    ),
    rule((409, 409), None, "provider_error", Class::Fixed(Ambiguous)),
    rule(
        (400, 599),
        Some("idempotency_error"),
        "provider_error",
        Class::Fixed(Ambiguous),
    ),
    rule(
        (500, 500),
        Some("api_error"),
        "provider_error",
        Class::ServerErrors,
    ),
    rule(
        (502, 504),
        Some("api_error"),
        "provider_unavailable",
        Class::ServerErrors,
    ),
    rule(
        (500, 599),
        Some("api_error"),
        "provider_error",
        Class::ServerErrors,
    ),
    rule(
        (400, 499),
        Some("invalid_request_error"),
        "invalid_request",
        Class::Fixed(AnsweredNotProcessed),
    ),
    // Stripe's 402 is a card error (a decline, handled before this table) or a request it
    // refused to process: the merchant's mistake, as a 400 is.
    rule(
        (402, 402),
        None,
        "invalid_request",
        Class::Fixed(AnsweredNotProcessed),
    ),
    rule(
        (400, 499),
        Some("authentication_error"),
        "provider_error",
        Class::Fixed(AnsweredNotProcessed),
    ),
    rule(
        (400, 499),
        Some("permission_error"),
        "provider_error",
        Class::Fixed(AnsweredNotProcessed),
    ),
    rule(
        (400, 499),
        None,
        "provider_error",
        Class::Fixed(AnsweredNotProcessed),
    ),
    rule((500, 599), None, "provider_error", Class::Fixed(Ambiguous)),
];

/// The normalized code and class of an error answer; `error_type` is `None` when the body is
/// not a Stripe error object. Statuses outside 400–599 are ambiguous.
pub fn error(
    status: u16,
    error_type: Option<&str>,
    server_errors: ServerErrors,
) -> (&'static str, ErrorClass) {
    let found = ERRORS.iter().find(|r| {
        (r.status.0..=r.status.1).contains(&status)
            && (r.error_type.is_none() || r.error_type == error_type)
    });
    match found {
        Some(r) => {
            let class = match r.class {
                Class::Fixed(c) => c,
                Class::ServerErrors => match server_errors {
                    ServerErrors::AnsweredNotProcessed => AnsweredNotProcessed,
                    ServerErrors::Ambiguous => Ambiguous,
                },
            };
            (r.code, class)
        }
        None => ("provider_error", Ambiguous),
    }
}

/// Normalized decline code → (Stripe `code`, Stripe `decline_code`, shopper message).
pub const STOREFRONT_DECLINES: &[(&str, &str, &str, &str)] = &[
    (
        "insufficient_funds",
        "card_declined",
        "insufficient_funds",
        "Your card has insufficient funds.",
    ),
    (
        "do_not_honor",
        "card_declined",
        "do_not_honor",
        "Your card was declined.",
    ),
    (
        "expired_card",
        "expired_card",
        "expired_card",
        "Your card has expired.",
    ),
    (
        "fraud_suspected",
        "card_declined",
        "fraudulent",
        "Your card was declined.",
    ),
    (
        "invalid_account",
        "card_declined",
        "invalid_account",
        "The account is invalid.",
    ),
    (
        "limit_exceeded",
        "card_declined",
        "card_velocity_exceeded",
        "Your card has exceeded its limit.",
    ),
    (
        "authentication_required",
        "authentication_required",
        "authentication_required",
        "Your card was declined. This transaction requires authentication.",
    ),
    (
        "generic_decline",
        "card_declined",
        "generic_decline",
        "Your card was declined.",
    ),
    (
        "shopper_declined",
        "payment_method_provider_decline",
        "shopper_declined",
        "The payment was declined.",
    ),
    (
        "confirmation_expired",
        "payment_method_provider_timeout",
        "confirmation_expired",
        "The payment was not confirmed in time.",
    ),
    (
        "shopper_unreachable",
        "payment_method_provider_decline",
        "shopper_unreachable",
        "The payment could not be confirmed.",
    ),
];

/// Stripe's `code`, `decline_code` and message for a normalized decline.
pub fn storefront_decline(code: &str) -> (&'static str, &'static str, &'static str) {
    STOREFRONT_DECLINES
        .iter()
        .find(|(c, _, _, _)| *c == code)
        .map(|(_, code, decline, message)| (*code, *decline, *message))
        .unwrap_or((
            "card_declined",
            "generic_decline",
            "Your card was declined.",
        ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use payproxy_plugin_sdk::helpers::codes as normalized;

    #[test]
    fn tables_use_normalized_codes_only() {
        for (provider, code, _) in DECLINE_CODES {
            assert!(
                normalized::DECLINE_CODES.contains(code),
                "{provider} → {code}"
            );
        }
        for code in normalized::DECLINE_CODES {
            assert_ne!(storefront_decline(code).2, "", "{code}");
            assert!(
                STOREFRONT_DECLINES.iter().any(|r| r.0 == *code),
                "{code} has no storefront row"
            );
        }
        assert!(ERRORS
            .iter()
            .all(|r| normalized::ERROR_CODES.contains(&r.code)));
    }

    #[test]
    fn declines() {
        assert_eq!(decline("fraudulent"), ("fraud_suspected", Hard));
        assert_eq!(decline("insufficient_funds"), ("insufficient_funds", Soft));
        assert_eq!(decline("something_new"), ("generic_decline", Hard));
    }

    #[test]
    fn errors() {
        let nap = ServerErrors::AnsweredNotProcessed;
        assert_eq!(
            error(429, None, nap),
            ("rate_limited", AnsweredNotProcessed)
        );
        assert_eq!(
            error(500, Some("api_error"), nap),
            ("provider_error", AnsweredNotProcessed)
        );
        assert_eq!(
            error(503, Some("api_error"), nap),
            ("provider_unavailable", AnsweredNotProcessed)
        );
        assert_eq!(
            error(503, Some("api_error"), ServerErrors::Ambiguous),
            ("provider_unavailable", Ambiguous)
        );
        assert_eq!(error(502, None, nap), ("provider_error", Ambiguous));
        assert_eq!(
            error(400, Some("invalid_request_error"), nap),
            ("invalid_request", AnsweredNotProcessed)
        );
        assert_eq!(
            error(400, Some("idempotency_error"), nap),
            ("provider_error", Ambiguous)
        );
        assert_eq!(
            error(409, Some("invalid_request_error"), nap),
            ("provider_error", Ambiguous)
        );
        assert_eq!(error(302, None, nap), ("provider_error", Ambiguous));
        assert_eq!(
            error(404, Some("invalid_request_error"), nap),
            ("invalid_request", AnsweredNotProcessed)
        );
        assert_eq!(
            error(402, Some("invalid_request_error"), nap),
            ("invalid_request", AnsweredNotProcessed)
        );
        assert_eq!(
            error(402, None, nap),
            ("invalid_request", AnsweredNotProcessed)
        );
        assert_eq!(
            error(401, Some("authentication_error"), nap),
            ("provider_error", AnsweredNotProcessed)
        );
    }
}
