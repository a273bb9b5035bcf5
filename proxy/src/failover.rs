//! Attempt outcome classes and the failover policy (`docs/money-safety.md`).
//!
//! The host decides the class of every attempt from transport facts plus the dialect's
//! decoded outcome. Only `NotSent` and `AnsweredNotProcessed` (and soft declines a route
//! marks retryable) let the payment move to another provider; after `Ambiguous` the
//! payment stays with the provider it may already exist at.

use std::time::Instant;

use crate::plugin::types::{DeclineKind, ErrorClass, Outcome, OutcomeStatus};

/// The failure code a dialect gives a provider's refusal of the merchant's request.
pub const INVALID_REQUEST: &str = "invalid_request";

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
    /// The provider refused the merchant's request as invalid (decoded failure code
    /// `invalid_request`): it did nothing and did its job; the answer goes back to the
    /// storefront once, and no other provider would say otherwise.
    Rejected,
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
            AttemptClass::Rejected => "rejected",
            AttemptClass::Ambiguous => "ambiguous",
        }
    }

    /// Whether the provider did its job (for health): it processed, declined or refused the
    /// payment as invalid. Only faults (not sent, answered-not-processed, ambiguous) count
    /// against a provider: a merchant's bad request must never open a breaker.
    pub fn provider_healthy(self) -> bool {
        matches!(
            self,
            AttemptClass::Processed | AttemptClass::Declined { .. } | AttemptClass::Rejected
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
            Some(OutcomeStatus::Error(f)) if f.code == INVALID_REQUEST => AttemptClass::Rejected,
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
        AttemptClass::Declined { .. } | AttemptClass::Processed | AttemptClass::Rejected => {
            Next::Stop
        }
        AttemptClass::Ambiguous => Next::Resolve,
    }
}

/// What an attempt loop may spend: candidates tried at most, and a deadline.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Candidates actually tried (skipped ones do not count).
    pub max_attempts: u32,
    /// No new candidate is tried after this.
    pub deadline: Instant,
}

/// The one attempt loop of every route: candidates in order within a [`Budget`], with what
/// the last tried candidate left behind. The caller decides what a try means: transparent
/// routes move on only when nothing reached the provider and the body can be sent again,
/// payment routes only after the classes [`next`] allows.
///
/// ```text
/// while let Some(name) = candidates.next() {
///     // skip: `continue` (breaker open, provider gone; not counted)
///     // answer: return it
///     // did nothing: candidates.failed(name, reason)
/// }
/// candidates.into_last() // what the last tried candidate said, if any
/// ```
#[derive(Debug)]
pub struct Candidates<'a, F> {
    order: std::slice::Iter<'a, String>,
    budget: Budget,
    tried: u32,
    last: Option<(String, F)>,
}

impl<'a, F> Candidates<'a, F> {
    /// The loop over `order`.
    pub fn new(order: &'a [String], budget: Budget) -> Self {
        Candidates {
            order: order.iter(),
            budget,
            tried: 0,
            last: None,
        }
    }

    /// The next candidate, or `None` once the order, the attempts or the time are spent.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<&'a str> {
        if self.tried >= self.budget.max_attempts || Instant::now() >= self.budget.deadline {
            return None;
        }
        self.order.next().map(String::as_str)
    }

    /// Whether the order holds a candidate after the last one [`next`](Self::next) gave
    /// (the attempts or the time may still run out first).
    pub fn has_more(&self) -> bool {
        !self.order.as_slice().is_empty()
    }

    /// `name` was tried and certainly did nothing, because of `reason`.
    pub fn failed(&mut self, name: &str, reason: F) {
        self.tried += 1;
        self.last = Some((name.to_string(), reason));
    }

    /// The last tried candidate and why it did nothing.
    pub fn last(&self) -> Option<&(String, F)> {
        self.last.as_ref()
    }

    /// The last tried candidate and its reason (none tried: `None`).
    pub fn into_last(self) -> Option<(String, F)> {
        self.last
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

    fn invalid(class: ErrorClass) -> Outcome {
        outcome(OutcomeStatus::Error(Failure {
            class,
            code: INVALID_REQUEST.into(),
            provider_code: "parameter_unknown".into(),
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
            (
                Transport::Answered,
                Some(invalid(ErrorClass::AnsweredNotProcessed)),
                Rejected,
            ),
            // A transport fault wins over a decoded refusal.
            (
                Transport::Broken,
                Some(invalid(ErrorClass::AnsweredNotProcessed)),
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
            next(Rejected, true),
            Next::Stop,
            "a bad request goes back once"
        );
        assert_eq!(
            next(Ambiguous, true),
            Next::Resolve,
            "never another provider after ambiguous"
        );
    }

    fn budget(max_attempts: u32) -> Budget {
        Budget {
            max_attempts,
            deadline: Instant::now() + std::time::Duration::from_secs(60),
        }
    }

    #[test]
    fn the_loop_skips_freely_keeps_the_budget_and_the_last_reason() {
        let order: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let mut c = Candidates::new(&order, budget(2));
        assert_eq!(c.next(), Some("a")); // skipped: not counted
        assert_eq!(c.next(), Some("b"));
        c.failed("b", "not_sent");
        assert_eq!(c.last(), Some(&("b".to_string(), "not_sent")));
        assert_eq!(c.next(), Some("c"));
        c.failed("c", "answered_not_processed");
        assert_eq!(c.next(), None, "two tries at most");
        assert_eq!(
            c.into_last(),
            Some(("c".to_string(), "answered_not_processed"))
        );
        let past = Budget {
            max_attempts: 3,
            deadline: Instant::now(),
        };
        let mut c: Candidates<'_, ()> = Candidates::new(&order, past);
        assert_eq!(c.next(), None, "no candidate after the deadline");
        assert_eq!(c.into_last(), None);
    }

    #[test]
    fn health_counts_processing_not_outcomes() {
        assert!(AttemptClass::Declined { soft: false }.provider_healthy());
        assert!(AttemptClass::Processed.provider_healthy());
        assert!(
            AttemptClass::Rejected.provider_healthy(),
            "a merchant's invalid request is not a provider fault"
        );
        assert!(!AttemptClass::Ambiguous.provider_healthy());
        assert!(!AttemptClass::AnsweredNotProcessed.provider_healthy());
        assert!(!AttemptClass::NotSent.provider_healthy());
    }
}
