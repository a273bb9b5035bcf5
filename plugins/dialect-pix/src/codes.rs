//! Pix charge (`cob`) statuses and HTTP errors → normalized outcomes.
//!
//! | status                             | authorize / status                       | void     |
//! |------------------------------------|------------------------------------------|----------|
//! | `ATIVA`                            | requires-action QR (`pixCopiaECola`)     | error `provider_error`, answered-not-processed (still payable) |
//! | `CONCLUIDA`                        | approved                                 | declined `generic_decline`, hard (already paid) |
//! | `REMOVIDA_PELO_USUARIO_RECEBEDOR`  | declined `generic_decline`, hard         | approved |
//! | `REMOVIDA_PELO_PSP`                | declined `generic_decline`, hard         | approved |

use payproxy_plugin_sdk::payment::{DeclineKind, ErrorClass};

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

/// One HTTP error row: status, normalized failure code, class.
pub type HttpError = (u16, &'static str, ErrorClass);

/// Error answers (RFC 7807 problem documents). 4xx are refusals before processing; 503 is the
/// PSP saying it did nothing; 500, 502 and 504 are ambiguous — settled by resending the same
/// `PUT /cob/{txid}` (idempotent) or by `GET /cob/{txid}`.
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
        assert_eq!(meaning("CONCLUIDA"), Some(Meaning::Paid));
        assert_eq!(meaning("ativa"), None, "statuses are upper case");
        assert_eq!(http_error(418).2, ErrorClass::AnsweredNotProcessed);
        assert_eq!(http_error(301).2, ErrorClass::Ambiguous);
    }
}
