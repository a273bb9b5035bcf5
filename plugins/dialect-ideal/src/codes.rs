//! iDEAL transaction statuses and HTTP errors → normalized outcomes.
//!
//! | status      | outcome                                                                 |
//! |-------------|-------------------------------------------------------------------------|
//! | `open`      | requires-action redirect to `issuerAuthenticationUrl` (pending without one) |
//! | `success`   | approved                                                                |
//! | `failure`   | declined `generic_decline`, soft (the bank refused; another try may work) |
//! | `expired`   | declined `generic_decline`, hard (the shopper never finished)           |
//! | `cancelled` | declined `generic_decline`, hard (the shopper cancelled at the bank)    |
//!
//! Refund statuses: `success` → approved, `pending` → pending, `failure` → declined hard.

use payproxy_plugin_sdk::payment::{DeclineKind, ErrorClass};

/// What a transaction status means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meaning {
    /// Waiting for the shopper at the bank.
    Open,
    /// Paid.
    Approved,
    /// The provider is still working on it (refunds).
    Pending,
    /// Not paid, with normalized code and kind.
    Declined(&'static str, DeclineKind),
}

/// Transaction statuses of payments.
pub const TRANSACTION_STATUSES: &[(&str, Meaning)] = &[
    ("open", Meaning::Open),
    ("success", Meaning::Approved),
    (
        "failure",
        Meaning::Declined("generic_decline", DeclineKind::Soft),
    ),
    (
        "expired",
        Meaning::Declined("generic_decline", DeclineKind::Hard),
    ),
    (
        "cancelled",
        Meaning::Declined("generic_decline", DeclineKind::Hard),
    ),
];

/// Statuses of refunds.
pub const REFUND_STATUSES: &[(&str, Meaning)] = &[
    ("success", Meaning::Approved),
    ("pending", Meaning::Pending),
    (
        "failure",
        Meaning::Declined("generic_decline", DeclineKind::Hard),
    ),
];

/// Look a status up in one of the tables.
pub fn meaning(table: &[(&str, Meaning)], status: &str) -> Option<Meaning> {
    table.iter().find(|(s, _)| *s == status).map(|(_, m)| *m)
}

/// One HTTP error row: status, normalized failure code, class.
pub type HttpError = (u16, &'static str, ErrorClass);

/// Error answers. 4xx are refusals before processing. 503 is the provider saying it is down
/// and did nothing; 500, 502 and 504 prove nothing, so they are ambiguous — safe here because
/// the protocol has both an idempotent resend and a status query to settle them.
pub const HTTP_ERRORS: &[HttpError] = &[
    (400, "invalid_request", ErrorClass::AnsweredNotProcessed),
    (401, "invalid_request", ErrorClass::AnsweredNotProcessed),
    (403, "invalid_request", ErrorClass::AnsweredNotProcessed),
    (404, "invalid_request", ErrorClass::AnsweredNotProcessed),
    (409, "invalid_request", ErrorClass::AnsweredNotProcessed),
    (422, "invalid_request", ErrorClass::AnsweredNotProcessed),
    (429, "rate_limited", ErrorClass::AnsweredNotProcessed),
    (500, "provider_error", ErrorClass::Ambiguous),
    (502, "provider_error", ErrorClass::Ambiguous),
    (
        503,
        "provider_unavailable",
        ErrorClass::AnsweredNotProcessed,
    ),
    (504, "provider_timeout", ErrorClass::Ambiguous),
];

/// The row for an error status: listed, else any 4xx is an unprocessed invalid request and
/// anything else an ambiguous provider error.
pub fn http_error(status: u16) -> HttpError {
    if let Some(row) = HTTP_ERRORS.iter().find(|row| row.0 == status) {
        return *row;
    }
    if (400..500).contains(&status) {
        (status, "invalid_request", ErrorClass::AnsweredNotProcessed)
    } else {
        (status, "provider_error", ErrorClass::Ambiguous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        assert_eq!(
            meaning(TRANSACTION_STATUSES, "success"),
            Some(Meaning::Approved)
        );
        assert_eq!(meaning(TRANSACTION_STATUSES, "pending"), None);
        assert_eq!(meaning(REFUND_STATUSES, "pending"), Some(Meaning::Pending));
        assert_eq!(http_error(410).1, "invalid_request");
        assert_eq!(http_error(507).2, ErrorClass::Ambiguous);
    }
}
