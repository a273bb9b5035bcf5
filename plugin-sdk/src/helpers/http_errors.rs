//! The HTTP status of a provider's error answer → normalized failure code and class.
//!
//! Most JSON payment APIs validate and authenticate before they process, so a 4xx proves
//! nothing happened; a 503 is the provider saying it is down and did nothing; a 500, 502 or
//! 504 proves nothing either way. That is [`STANDARD`]. A provider that guarantees more (or
//! less) lists its own rows, which [`classify`] reads before the standard ones.
//!
//! Many providers put the meaning in an error code inside the body rather than in the
//! status (M-Pesa's Daraja answers 500 with `errorCode` `500.001.1001`, "a transaction is
//! already in process for the subscriber": nothing was charged). [`Errors`] adds rows keyed
//! by the provider's own code ([`CodeError`]), read before any status row by
//! [`classify_answer`] and [`outcome_of`] (and by
//! [`decode::json_answer_with`](crate::helpers::decode::json_answer_with)). A code with no
//! row falls back to the status: an unknown code is never taken as proof of anything.
//!
//! ```
//! use payproxy_plugin_sdk::helpers::http_errors;
//! use payproxy_plugin_sdk::payment::ErrorClass;
//!
//! assert_eq!(http_errors::classify(504, &[]), (504, "provider_timeout", ErrorClass::Ambiguous));
//! // A provider whose 500 is documented as "not processed":
//! const OWN: &[http_errors::HttpError] =
//!     &[(500, "provider_unavailable", ErrorClass::AnsweredNotProcessed)];
//! assert_eq!(http_errors::classify(500, OWN).2, ErrorClass::AnsweredNotProcessed);
//! ```

use crate::payment::{ErrorClass, Outcome};

/// One row: HTTP status, normalized failure code, class.
pub type HttpError = (u16, &'static str, ErrorClass);

/// The standard rows: 4xx are refusals before processing (429 `rate_limited`), 503 is
/// `provider_unavailable` and did nothing, 500, 502 and 504 are ambiguous.
///
/// `invalid_request` is the merchant's own mistake: the host answers it once, never tries
/// another provider with it and never counts it against the provider. 401 and 403 are not
/// that: the provider refused payproxy's credentials for it (a configuration fault), so they
/// are `provider_auth_failed`, a fault another provider may not have.
pub const STANDARD: &[HttpError] = &[
    (400, "invalid_request", ErrorClass::AnsweredNotProcessed),
    (
        401,
        "provider_auth_failed",
        ErrorClass::AnsweredNotProcessed,
    ),
    (
        403,
        "provider_auth_failed",
        ErrorClass::AnsweredNotProcessed,
    ),
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

/// One row keyed by the provider's own error code (exact, case-sensitive): provider code,
/// normalized failure code, class.
pub type CodeError = (&'static str, &'static str, ErrorClass);

/// A provider's error tables: its own codes first, then its status rows, then [`STANDARD`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Errors<'a> {
    /// Rows by the provider's error code.
    pub by_code: &'a [CodeError],
    /// Rows by HTTP status, before [`STANDARD`].
    pub by_status: &'a [HttpError],
}

/// The normalized code and class of an error answer: the row of `provider_code` in
/// `errors.by_code` when there is one, else [`classify`] of the status.
pub fn classify_answer(
    status: u16,
    provider_code: Option<&str>,
    errors: &Errors<'_>,
) -> (&'static str, ErrorClass) {
    let by_code = provider_code.and_then(|c| errors.by_code.iter().find(|row| row.0 == c));
    match by_code {
        Some(&(_, code, class)) => (code, class),
        None => {
            let (_, code, class) = classify(status, errors.by_status);
            (code, class)
        }
    }
}

/// The error outcome of a non-2xx answer, classified by [`classify_answer`]: by the
/// provider's code when `errors` knows it, else by the status. The provider code kept is
/// `provider_code`, else the status; the message says only the status (provider text is
/// never passed through).
pub fn outcome_of(status: u16, provider_code: Option<String>, errors: &Errors<'_>) -> Outcome {
    let (code, class) = classify_answer(status, provider_code.as_deref(), errors);
    let provider_code = provider_code.unwrap_or_else(|| status.to_string());
    Outcome::error(
        class,
        code,
        &provider_code,
        format!("the provider answered HTTP {status}"),
    )
}

/// The row for an error status: the provider's own rows (`overrides`) first, then
/// [`STANDARD`]; any other 4xx is an unprocessed `invalid_request` and anything else an
/// ambiguous `provider_error`.
pub fn classify(status: u16, overrides: &[HttpError]) -> HttpError {
    if let Some(row) = overrides.iter().chain(STANDARD).find(|row| row.0 == status) {
        return *row;
    }
    if (400..500).contains(&status) {
        (status, "invalid_request", ErrorClass::AnsweredNotProcessed)
    } else {
        (status, "provider_error", ErrorClass::Ambiguous)
    }
}

/// The error outcome of a non-2xx answer, classified by [`classify`] (by status only; see
/// [`outcome_of`] for a provider's own codes). `provider_code` is what the provider's body
/// names the error, else the status; the message says only the status (provider text is
/// never passed through).
pub fn outcome(status: u16, overrides: &[HttpError], provider_code: Option<String>) -> Outcome {
    outcome_of(
        status,
        provider_code,
        &Errors {
            by_code: &[],
            by_status: overrides,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helpers::codes::ERROR_CODES;
    use crate::payment::{Failure, OutcomeStatus};

    #[test]
    fn standard_rows_and_fallbacks() {
        assert_eq!(
            classify(409, &[]),
            (409, "invalid_request", ErrorClass::AnsweredNotProcessed)
        );
        assert_eq!(classify(429, &[]).1, "rate_limited");
        assert_eq!(classify(500, &[]).2, ErrorClass::Ambiguous);
        assert_eq!(
            classify(503, &[]),
            (
                503,
                "provider_unavailable",
                ErrorClass::AnsweredNotProcessed
            )
        );
        assert_eq!(
            classify(418, &[]),
            (418, "invalid_request", ErrorClass::AnsweredNotProcessed)
        );
        assert_eq!(
            classify(507, &[]),
            (507, "provider_error", ErrorClass::Ambiguous)
        );
        assert_eq!(
            classify(302, &[]),
            (302, "provider_error", ErrorClass::Ambiguous)
        );
    }

    #[test]
    fn overrides_come_first() {
        const OWN: &[HttpError] = &[
            (
                500,
                "provider_unavailable",
                ErrorClass::AnsweredNotProcessed,
            ),
            (418, "rate_limited", ErrorClass::AnsweredNotProcessed),
        ];
        assert_eq!(classify(500, OWN).1, "provider_unavailable");
        assert_eq!(classify(418, OWN).1, "rate_limited");
        assert_eq!(classify(502, OWN), classify(502, &[]));
    }

    #[test]
    fn table_is_consistent() {
        for (i, row) in STANDARD.iter().enumerate() {
            assert!(ERROR_CODES.contains(&row.1), "{}", row.0);
            assert!(
                STANDARD[..i].iter().all(|o| o.0 != row.0),
                "{} twice",
                row.0
            );
        }
    }

    #[test]
    fn outcomes_keep_the_provider_code_or_the_status() {
        let failure = |o: Outcome| match o.status {
            OutcomeStatus::Error(f) => f,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            failure(outcome(404, &[], Some("NotFound".into()))),
            Failure {
                class: ErrorClass::AnsweredNotProcessed,
                code: "invalid_request".into(),
                provider_code: "NotFound".into(),
                message: "the provider answered HTTP 404".into(),
            }
        );
        let f = failure(outcome(504, &[], None));
        assert_eq!(
            (f.code.as_str(), f.provider_code.as_str()),
            ("provider_timeout", "504")
        );
    }

    #[test]
    fn a_providers_own_code_outranks_the_status() {
        // M-Pesa-like: a 500 whose code says nothing was done, and one whose code says the
        // provider failed mid-way.
        const BY_CODE: &[CodeError] = &[
            (
                "500.001.1001",
                "provider_unavailable",
                ErrorClass::AnsweredNotProcessed,
            ),
            (
                "400.002.02",
                "invalid_request",
                ErrorClass::AnsweredNotProcessed,
            ),
        ];
        let errors = Errors {
            by_code: BY_CODE,
            by_status: &[],
        };
        assert_eq!(
            classify_answer(500, Some("500.001.1001"), &errors),
            ("provider_unavailable", ErrorClass::AnsweredNotProcessed)
        );
        // Unknown code, or none: the status decides (500 stays ambiguous).
        assert_eq!(
            classify_answer(500, Some("500.003.02"), &errors),
            ("provider_error", ErrorClass::Ambiguous)
        );
        assert_eq!(
            classify_answer(500, None, &errors),
            ("provider_error", ErrorClass::Ambiguous)
        );
        // A code row applies whatever the status.
        assert_eq!(
            classify_answer(200, Some("400.002.02"), &errors).0,
            "invalid_request"
        );
        let outcome = outcome_of(500, Some("500.001.1001".into()), &errors);
        match outcome.status {
            OutcomeStatus::Error(Failure {
                class,
                code,
                provider_code,
                message,
            }) => {
                assert_eq!(class, ErrorClass::AnsweredNotProcessed);
                assert_eq!(code, "provider_unavailable");
                assert_eq!(provider_code, "500.001.1001");
                assert_eq!(message, "the provider answered HTTP 500");
            }
            other => panic!("{other:?}"),
        }
        for row in BY_CODE {
            assert!(ERROR_CODES.contains(&row.1), "{}", row.1);
        }
    }
}
