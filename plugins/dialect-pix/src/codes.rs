//! Pix charge (`cob`) statuses and HTTP errors → normalized outcomes.
//!
//! | status                             | authorize / status                       | void     |
//! |------------------------------------|------------------------------------------|----------|
//! | `ATIVA`                            | requires-action QR (`pixCopiaECola`)     | error `provider_error`, answered-not-processed (still payable) |
//! | `CONCLUIDA`                        | approved                                 | declined `generic_decline`, hard (already paid) |
//! | `REMOVIDA_PELO_USUARIO_RECEBEDOR`  | declined `generic_decline`, hard         | approved |
//! | `REMOVIDA_PELO_PSP`                | declined `generic_decline`, hard         | approved |
//!
//! Error answers (RFC 7807 problem documents) are classified by the SDK's standard table
//! ([`http_errors::STANDARD`](payproxy_plugin_sdk::helpers::http_errors::STANDARD)): 4xx are
//! refusals before processing; 503 is the PSP saying it did nothing; 500, 502 and 504 are
//! ambiguous — settled by resending the same `PUT /cob/{txid}` (idempotent) or by
//! `GET /cob/{txid}`.

use payproxy_plugin_sdk::payment::DeclineKind;

/// What a charge status means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meaning {
    /// Waiting for the payer to scan and pay.
    Active,
    /// Paid.
    Paid,
    /// Removed before payment (by the receiver or the PSP); no money moved.
    Removed,
}

/// Charge statuses of the Central Bank's API.
pub const STATUSES: &[(&str, Meaning)] = &[
    ("ATIVA", Meaning::Active),
    ("CONCLUIDA", Meaning::Paid),
    ("REMOVIDA_PELO_USUARIO_RECEBEDOR", Meaning::Removed),
    ("REMOVIDA_PELO_PSP", Meaning::Removed),
];

/// Decline of a removed charge (authorize / status).
pub const REMOVED: (&str, DeclineKind) = ("generic_decline", DeclineKind::Hard);

/// The meaning of a status, if known.
pub fn meaning(status: &str) -> Option<Meaning> {
    STATUSES.iter().find(|(s, _)| *s == status).map(|(_, m)| *m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        assert_eq!(meaning("CONCLUIDA"), Some(Meaning::Paid));
        assert_eq!(meaning("ativa"), None, "statuses are upper case");
    }
}
