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
//!
//! Error answers are classified by the SDK's standard table
//! ([`http_errors::STANDARD`](payproxy_plugin_sdk::helpers::http_errors::STANDARD)): 4xx are
//! refusals before processing, 503 is the provider saying it is down and did nothing; 500,
//! 502 and 504 prove nothing, so they are ambiguous — safe here because the protocol has both
//! an idempotent resend and a status query to settle them.

use payproxy_plugin_sdk::payment::DeclineKind;

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
    }
}
