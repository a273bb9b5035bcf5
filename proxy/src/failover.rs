//! Attempt outcome classes and the failover policy (DESIGN.md, "Money safety").
//!
//! The host decides the class of every attempt from transport facts plus the dialect's
//! decoded outcome. Only `NotSent` and `AnsweredNotProcessed` (and soft declines a route
//! marks retryable) let the payment move to another provider; after `Ambiguous` the
//! payment stays with the provider it may already exist at.

use crate::plugin::types::{DeclineKind, ErrorClass, Outcome, OutcomeStatus};

/// What the transport saw for one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Nothing was written: connect refused, DNS, TLS handshake, pool timeout, or the
    /// dialect refused/failed to encode.
    NotSent,
    /// The request was written and a complete answer came back (decoded by the dialect).
    Answered,
    /// The request was written but no answer came in time.
    TimedOutAfterSend,
    /// The request was written and the connection broke before a complete answer.
    Broken,
}

/// The class of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptClass {
    /// The provider never saw the payment.
    NotSent,
    /// The provider answered and guarantees it did nothing.
    AnsweredNotProcessed,
    /// Declined; `soft` declines may succeed elsewhere.
    Declined {
        /// Soft (retryable elsewhere if the route allows) or hard.
        soft: bool,
    },
    /// Approved, pending or requires action: the provider has the payment.
    Processed,
    /// Sent, no trustworthy answer: the payment may exist at the provider.
    Ambiguous,
}

impl AttemptClass {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptClass::NotSent => "not_sent",
            AttemptClass::AnsweredNotProcessed => "answered_not_processed",
            AttemptClass::Declined { soft: true } => "soft_decline",
            AttemptClass::Declined { soft: false } => "hard_decline",
            AttemptClass::Processed => "processed",
            AttemptClass::Ambiguous => "ambiguous",
        }
    }

    /// Whether the provider worked (for health): it processed or declined the payment.
    pub fn provider_healthy(self) -> bool {
        matches!(
            self,
            AttemptClass::Processed | AttemptClass::Declined { .. }
        )
    }
}

/// Classify an attempt. `decoded` is the dialect's outcome when the provider answered and
/// the dialect could decode it (`None` when decoding failed).
pub fn classify(transport: Transport, decoded: Option<&Outcome>) -> AttemptClass {
    match transport {
        Transport::NotSent => AttemptClass::NotSent,
        Transport::TimedOutAfterSend | Transport::Broken => AttemptClass::Ambiguous,
        Transport::Answered => match decoded.map(|o| &o.status) {
            // An answer nobody can read may hide a charge.
            None => AttemptClass::Ambiguous,
            Some(
                OutcomeStatus::Approved | OutcomeStatus::Pending | OutcomeStatus::RequiresAction(_),
            ) => AttemptClass::Processed,
            Some(OutcomeStatus::Declined(d)) => AttemptClass::Declined {
                soft: d.kind == DeclineKind::Soft,
            },
            Some(OutcomeStatus::Error(f)) => match f.class {
                // The request reached the provider, so "not sent" from a decoder can only
                // mean the provider refused it before processing.
                ErrorClass::NotSent | ErrorClass::AnsweredNotProcessed => {
                    AttemptClass::AnsweredNotProcessed
                }
                ErrorClass::Ambiguous => AttemptClass::Ambiguous,
            },
        },
    }
}

/// The failover decision after an attempt of class `class`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Answer with this attempt's outcome.
    Stop,
    /// Try the next candidate provider (nothing happened at this one).
    NextProvider,
    /// Stay with this provider: resend with the same key, or ask for the status.
    Resolve,
}

/// What to do after an attempt, given whether the route retries soft declines elsewhere.
pub fn next(class: AttemptClass, retry_soft_declines: bool) -> Next {
    match class {
        AttemptClass::NotSent | AttemptClass::AnsweredNotProcessed => Next::NextProvider,
        AttemptClass::Declined { soft: true } if retry_soft_declines => Next::NextProvider,
        AttemptClass::Declined { .. } | AttemptClass::Processed => Next::Stop,
        AttemptClass::Ambiguous => Next::Resolve,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::types::{Decline, Failure, NextAction};

    fn outcome(status: OutcomeStatus) -> Outcome {
        Outcome {
            status,
            provider_reference: None,
            amount: None,
        }
    }

    fn error(class: ErrorClass) -> Outcome {
        outcome(OutcomeStatus::Error(Failure {
            class,
            code: "x".into(),
            provider_code: "x".into(),
            message: String::new(),
        }))
    }

    fn decline(kind: DeclineKind) -> Outcome {
        outcome(OutcomeStatus::Declined(Decline {
            code: "insufficient_funds".into(),
            provider_code: "51".into(),
            kind,
            message: String::new(),
        }))
    }

    #[test]
    fn classifier_table() {
        use AttemptClass::*;
        let redirect = outcome(OutcomeStatus::RequiresAction(NextAction::Redirect(
            "https://bank".into(),
        )));
        let table: Vec<(Transport, Option<Outcome>, AttemptClass)> = vec![
            // Transport facts win over anything decoded.
            (Transport::NotSent, None, NotSent),
            (
                Transport::NotSent,
                Some(outcome(OutcomeStatus::Approved)),
                NotSent,
            ),
            (Transport::TimedOutAfterSend, None, Ambiguous),
            (
                Transport::TimedOutAfterSend,
                Some(outcome(OutcomeStatus::Approved)),
                Ambiguous,
            ),
            (Transport::Broken, None, Ambiguous),
            (
                Transport::Broken,
                Some(error(ErrorClass::AnsweredNotProcessed)),
                Ambiguous,
            ),
            // Answered: the dialect's reading decides.
            (Transport::Answered, None, Ambiguous),
            (
                Transport::Answered,
                Some(outcome(OutcomeStatus::Approved)),
                Processed,
            ),
            (
                Transport::Answered,
                Some(outcome(OutcomeStatus::Pending)),
                Processed,
            ),
            (Transport::Answered, Some(redirect), Processed),
            (
                Transport::Answered,
                Some(decline(DeclineKind::Soft)),
                Declined { soft: true },
            ),
            (
                Transport::Answered,
                Some(decline(DeclineKind::Hard)),
                Declined { soft: false },
            ),
            (
                Transport::Answered,
                Some(error(ErrorClass::AnsweredNotProcessed)),
                AnsweredNotProcessed,
            ),
            (
                Transport::Answered,
                Some(error(ErrorClass::NotSent)),
                AnsweredNotProcessed,
            ),
            (
                Transport::Answered,
                Some(error(ErrorClass::Ambiguous)),
                Ambiguous,
            ),
        ];
        for (transport, decoded, want) in table {
            assert_eq!(
                classify(transport, decoded.as_ref()),
                want,
                "{transport:?} {decoded:?}"
            );
        }
    }

    #[test]
    fn only_safe_classes_move_to_another_provider() {
        use AttemptClass::*;
        assert_eq!(next(NotSent, false), Next::NextProvider);
        assert_eq!(next(AnsweredNotProcessed, false), Next::NextProvider);
        assert_eq!(next(Declined { soft: true }, false), Next::Stop);
        assert_eq!(next(Declined { soft: true }, true), Next::NextProvider);
        assert_eq!(next(Declined { soft: false }, true), Next::Stop);
        assert_eq!(next(Processed, true), Next::Stop);
        assert_eq!(
            next(Ambiguous, true),
            Next::Resolve,
            "never another provider after ambiguous"
        );
    }

    #[test]
    fn health_counts_processing_not_outcomes() {
        assert!(AttemptClass::Declined { soft: false }.provider_healthy());
        assert!(AttemptClass::Processed.provider_healthy());
        assert!(!AttemptClass::Ambiguous.provider_healthy());
        assert!(!AttemptClass::AnsweredNotProcessed.provider_healthy());
        assert!(!AttemptClass::NotSent.provider_healthy());
    }
}
