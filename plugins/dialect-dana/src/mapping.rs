//! DANA `resultCode` → normalized outcome codes.
//!
//! `resultStatus` `S` is success whatever the code. Otherwise the code is looked up here;
//! a code not listed falls back by status: `F` → `generic_decline` (hard), `A` → pending,
//! `U` (unknown) → ambiguous `provider_error`.
//!
//! | `resultCode`                  | outcome                                         |
//! |-------------------------------|-------------------------------------------------|
//! | `SYSTEM_ERROR`                | error `provider_unavailable`, answered-not-processed |
//! | `REQUEST_TRAFFIC_EXCEED_LIMIT`| error `rate_limited`, answered-not-processed    |
//! | `PARAM_ILLEGAL`               | error `invalid_request`, answered-not-processed |
//! | `ORDER_NOT_EXIST`             | error `invalid_request`, answered-not-processed |
//! | `ORDER_STATUS_INVALID`        | error `invalid_request`, answered-not-processed |
//! | `REFUND_AMOUNT_EXCEED`        | error `invalid_request`, answered-not-processed |
//! | `REPEAT_REQ_INCONSISTENT`     | error `invalid_request`, answered-not-processed |
//! | `INVALID_CLIENT`              | error `invalid_request`, answered-not-processed |
//! | `INSUFFICIENT_BALANCE`        | declined `insufficient_funds`, soft             |
//! | `USER_AMOUNT_EXCEED_LIMIT`    | declined `limit_exceeded`, soft                 |
//! | `USER_STATUS_ABNORMAL`        | declined `do_not_honor`, hard                   |
//! | `USER_NOT_EXIST`              | declined `invalid_account`, hard                |
//! | `RISK_REJECT`                 | declined `fraud_suspected`, hard                |
//!
//! `SYSTEM_ERROR` maps to the same retryable `provider_unavailable` as GrabPay's HTTP 500.
//! Without a readable `resultInfo`, the HTTP status decides ([`http_for`]).

use payproxy_plugin_sdk::payment::{DeclineKind, ErrorClass};

/// What a DANA result code means.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Meaning {
    /// Declined: normalized code, kind.
    Decline(&'static str, DeclineKind),
    /// Failed without a decline: class, normalized code.
    Error(ErrorClass, &'static str),
}

/// Result codes, in the order of the table above.
pub const RESULT_CODES: &[(&str, Meaning)] = &[
    (
        "SYSTEM_ERROR",
        Meaning::Error(ErrorClass::AnsweredNotProcessed, "provider_unavailable"),
    ),
    (
        "REQUEST_TRAFFIC_EXCEED_LIMIT",
        Meaning::Error(ErrorClass::AnsweredNotProcessed, "rate_limited"),
    ),
    (
        "PARAM_ILLEGAL",
        Meaning::Error(ErrorClass::AnsweredNotProcessed, "invalid_request"),
    ),
    (
        "ORDER_NOT_EXIST",
        Meaning::Error(ErrorClass::AnsweredNotProcessed, "invalid_request"),
    ),
    (
        "ORDER_STATUS_INVALID",
        Meaning::Error(ErrorClass::AnsweredNotProcessed, "invalid_request"),
    ),
    (
        "REFUND_AMOUNT_EXCEED",
        Meaning::Error(ErrorClass::AnsweredNotProcessed, "invalid_request"),
    ),
    (
        "REPEAT_REQ_INCONSISTENT",
        Meaning::Error(ErrorClass::AnsweredNotProcessed, "invalid_request"),
    ),
    (
        "INVALID_CLIENT",
        Meaning::Error(ErrorClass::AnsweredNotProcessed, "invalid_request"),
    ),
    (
        "INSUFFICIENT_BALANCE",
        Meaning::Decline("insufficient_funds", DeclineKind::Soft),
    ),
    (
        "USER_AMOUNT_EXCEED_LIMIT",
        Meaning::Decline("limit_exceeded", DeclineKind::Soft),
    ),
    (
        "USER_STATUS_ABNORMAL",
        Meaning::Decline("do_not_honor", DeclineKind::Hard),
    ),
    (
        "USER_NOT_EXIST",
        Meaning::Decline("invalid_account", DeclineKind::Hard),
    ),
    (
        "RISK_REJECT",
        Meaning::Decline("fraud_suspected", DeclineKind::Hard),
    ),
];

/// HTTP statuses, used only when the body has no readable `resultInfo`: the same table as
/// the GrabPay dialect, so both providers fail over alike.
pub const HTTP_ERRORS: &[(u16, Meaning)] = &[
    (
        500,
        Meaning::Error(ErrorClass::AnsweredNotProcessed, "provider_unavailable"),
    ),
    (
        503,
        Meaning::Error(ErrorClass::AnsweredNotProcessed, "provider_unavailable"),
    ),
    (
        429,
        Meaning::Error(ErrorClass::AnsweredNotProcessed, "rate_limited"),
    ),
    (
        400,
        Meaning::Error(ErrorClass::AnsweredNotProcessed, "invalid_request"),
    ),
    // Payproxy's credentials refused: a provider fault, not the merchant's request.
    (
        401,
        Meaning::Error(ErrorClass::AnsweredNotProcessed, "provider_auth_failed"),
    ),
    (
        403,
        Meaning::Error(ErrorClass::AnsweredNotProcessed, "provider_auth_failed"),
    ),
    (
        404,
        Meaning::Error(ErrorClass::AnsweredNotProcessed, "invalid_request"),
    ),
    (
        415,
        Meaning::Error(ErrorClass::AnsweredNotProcessed, "invalid_request"),
    ),
    (
        504,
        Meaning::Error(ErrorClass::Ambiguous, "provider_timeout"),
    ),
];

/// The meaning of a result code that is not success, by code then by `resultStatus`;
/// `None` for `A` (accepted, still processing).
pub fn for_result(status: &str, code: &str) -> Option<Meaning> {
    if let Some((_, meaning)) = RESULT_CODES.iter().find(|(c, _)| *c == code) {
        return Some(*meaning);
    }
    match status {
        "F" => Some(Meaning::Decline("generic_decline", DeclineKind::Hard)),
        "A" => None,
        _ => Some(Meaning::Error(ErrorClass::Ambiguous, "provider_error")),
    }
}

/// The meaning of an HTTP status without a readable result: listed, else ambiguous
/// `provider_error` (the order may exist).
pub fn http_for(status: u16) -> Meaning {
    HTTP_ERRORS
        .iter()
        .find(|(s, _)| *s == status)
        .map(|(_, m)| *m)
        .unwrap_or(Meaning::Error(ErrorClass::Ambiguous, "provider_error"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use payproxy_plugin_sdk::helpers::codes::{DECLINE_CODES, ERROR_CODES};

    #[test]
    fn tables_use_only_normalized_codes_and_have_no_duplicates() {
        let valid = |m: &Meaning| match m {
            Meaning::Decline(code, _) => DECLINE_CODES.contains(code),
            Meaning::Error(_, code) => ERROR_CODES.contains(code),
        };
        for (i, (code, meaning)) in RESULT_CODES.iter().enumerate() {
            assert!(valid(meaning), "{code}");
            assert!(
                RESULT_CODES[..i].iter().all(|(c, _)| c != code),
                "{code} twice"
            );
        }
        for (i, (status, meaning)) in HTTP_ERRORS.iter().enumerate() {
            assert!(valid(meaning), "{status}");
            assert!(
                HTTP_ERRORS[..i].iter().all(|(s, _)| s != status),
                "{status} twice"
            );
        }
    }

    #[test]
    fn system_error_and_http_500_mean_the_same() {
        assert_eq!(for_result("U", "SYSTEM_ERROR"), Some(http_for(500)));
        assert_eq!(
            for_result("F", "WHATEVER"),
            Some(Meaning::Decline("generic_decline", DeclineKind::Hard))
        );
        assert_eq!(for_result("A", "ACCEPTED"), None);
        assert_eq!(
            for_result("U", "WHATEVER"),
            Some(Meaning::Error(ErrorClass::Ambiguous, "provider_error"))
        );
    }
}
