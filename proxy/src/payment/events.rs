//! Storefront events of a payment's state changes (issue 10 point 3): derived from the
//! record before and after a change, rendered once by the storefront dialect
//! (`render-event`), and written to the outbox with the record, one row per endpoint of the
//! route's `webhooks`. One event id per change: `evt_` and a digest of the payment id and the
//! change's place in the payment's sequence, so a change written again (a resumed request)
//! is the same event, kept once.
//!
//! A payment is declined, or waits for its shopper, once per attempt: the state again
//! (`payment_intent.payment_failed` twice, as Stripe sends it for each failed confirmation) is
//! an event only when a new attempt ends there ([`Source`]). What a retrieve, a status query
//! or a notification reads of a payment is never a new attempt: the same decline read again
//! in other words (another message, an amount) is not reported again.

use super::*;
use crate::plugin::storefront::{EventKind, PaymentEvent, PaymentState};
use crate::store::{NewEvent, PaymentEntry};

impl Payments {
    /// The outbox rows of the change that writing `entry` makes, which `source` recorded;
    /// none when the route sends no webhooks. A rendering failure is logged and sends nothing
    /// (the payment happened).
    pub(super) async fn events_of(
        &self,
        ctx: &Ctx<'_>,
        entry: &PaymentEntry,
        source: Source,
    ) -> Result<Vec<NewEvent>, StoreError> {
        let Some(webhooks) = ctx.route.webhooks.clone() else {
            return Ok(Vec::new());
        };
        let id = entry.record.id.clone();
        let (old, seq) = self
            .state(move |s| Ok((s.payment(&id)?, s.next_event_seq(&id)?)))
            .await?;
        let changes = changes(old.as_ref(), entry, source);
        let now = now_ms();
        let mut out = Vec::new();
        for (n, (kind, amount)) in changes.into_iter().enumerate() {
            let seq = seq + n as u64;
            let event = PaymentEvent {
                id: event_id(&entry.record.id, seq),
                kind,
                record: entry.record.clone(),
                created: i64::try_from(now / 1000).unwrap_or(i64::MAX),
                amount,
            };
            let rendered = match ctx.ingress.render_event(&event) {
                Ok(Some(rendered)) => rendered,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(payment = %entry.record.id, event = %event.id, error = %e, "the storefront dialect could not render an event; none is sent for this change");
                    continue;
                }
            };
            for endpoint in &webhooks.endpoints {
                out.push(NewEvent {
                    id: event.id.clone(),
                    payment_id: entry.record.id.clone(),
                    seq,
                    route: entry.route.clone(),
                    endpoint: endpoint.url.clone(),
                    event_type: rendered.event_type.clone(),
                    content_type: rendered.content_type.clone(),
                    body: rendered.body.clone(),
                    created_ms: now,
                });
            }
        }
        Ok(out)
    }
}

/// What a payment record write records, for its events: whether the outcome it holds in the
/// state the payment is in already (declined, waiting for the shopper) is a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// A confirm's decline or next action, as the provider answered this request's attempt.
    /// A new attempt (`resumed` false) is news even when it ends as the last one did (the
    /// same decline twice is two failed confirmations). The retry that resumes an attempt
    /// (`resumed`) asks the provider again under the attempt's key and writes the answer
    /// its first run may have written already, event included: news only when it differs
    /// from the recorded outcome.
    Attempt { resumed: bool },
    /// Anything else: what a retrieve, a status query or a notification reads of a payment
    /// (an earlier attempt's outcome, read again), a confirm that ended elsewhere (approved,
    /// pending, not sent), a change of payproxy's own. An event only when the state moves.
    Other,
}

impl Source {
    /// The source of the record write after `operation` got `status` (`resumed`: the
    /// request resumes an earlier run's attempt).
    pub(super) fn of(operation: Operation, status: &OutcomeStatus, resumed: bool) -> Source {
        let attempted = operation == Operation::Authorize
            && matches!(
                status,
                OutcomeStatus::Declined(_) | OutcomeStatus::RequiresAction(_)
            );
        if attempted {
            Source::Attempt { resumed }
        } else {
            Source::Other
        }
    }
}

/// `evt_` and 24 hex digits of SHA-256(payment id, NUL, sequence).
fn event_id(payment_id: &str, seq: u64) -> String {
    let digest = Sha256::digest(format!("{payment_id}\u{0}{seq}").as_bytes());
    format!("evt_{}", &hex::encode(digest)[..24])
}

/// The event kind a state stands for, if it has one.
fn kind_of(state: PaymentState) -> Option<EventKind> {
    match state {
        PaymentState::RequiresPaymentMethod | PaymentState::RequiresConfirmation => None,
        PaymentState::RequiresAction => Some(EventKind::RequiresAction),
        PaymentState::Processing => Some(EventKind::Processing),
        PaymentState::RequiresCapture => Some(EventKind::RequiresCapture),
        PaymentState::Succeeded => Some(EventKind::Succeeded),
        PaymentState::Failed => Some(EventKind::Failed),
        PaymentState::Canceled => Some(EventKind::Canceled),
    }
}

/// The changes from `old` to `new`, written by `source`, in order, with the amount of a
/// refund: a new payment is `created` (then its state, when it was charged at once); a state
/// moved is the new state; a new attempt's outcome in the same state (declined again, a new
/// next action: see [`Source`]) is that state again; a grown refunded amount is `refunded`.
fn changes(
    old: Option<&PaymentEntry>,
    new: &PaymentEntry,
    source: Source,
) -> Vec<(EventKind, i64)> {
    let mut out = Vec::new();
    let state = new.record.state;
    match old {
        None => {
            out.push((EventKind::Created, 0));
            out.extend(kind_of(state).map(|k| (k, 0)));
        }
        Some(old) => {
            let moved = old.record.state != state;
            let again = matches!(state, PaymentState::Failed | PaymentState::RequiresAction)
                && match source {
                    Source::Attempt { resumed: false } => true,
                    Source::Attempt { resumed: true } => {
                        old.record.last_outcome != new.record.last_outcome
                    }
                    Source::Other => false,
                };
            if moved || again {
                out.extend(kind_of(state).map(|k| (k, 0)));
            }
            let refunded = new.record.amount_refunded - old.record.amount_refunded;
            if refunded > 0 {
                out.push((EventKind::Refunded, refunded));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::storefront::PaymentRecord;
    use crate::plugin::types::{Decline, DeclineKind, Money, NextAction};

    fn entry(state: PaymentState, refunded: i64) -> PaymentEntry {
        PaymentEntry::new(
            "r",
            0,
            PaymentRecord {
                id: "pi_1".into(),
                payment: crate::plugin::blank_payment(Operation::Authorize),
                state,
                created: 0,
                amount_captured: 1000,
                amount_refunded: refunded,
                last_outcome: None,
            },
        )
    }

    /// A record in `state` whose last outcome is `status`, of `amount` when given.
    fn after(state: PaymentState, status: OutcomeStatus, amount: Option<i64>) -> PaymentEntry {
        let mut e = entry(state, 0);
        e.record.last_outcome = Some(Outcome {
            status,
            provider_reference: Some("pi_1".into()),
            amount: amount.map(|minor| Money {
                minor,
                currency: "EUR".into(),
            }),
        });
        e
    }

    fn declined(code: &str, message: &str) -> OutcomeStatus {
        OutcomeStatus::Declined(Decline {
            code: code.into(),
            provider_code: "generic_decline".into(),
            kind: DeclineKind::Hard,
            message: message.into(),
        })
    }

    fn redirect(url: &str) -> OutcomeStatus {
        OutcomeStatus::RequiresAction(NextAction::Redirect(url.into()))
    }

    const ATTEMPT: Source = Source::Attempt { resumed: false };
    const RESUMED: Source = Source::Attempt { resumed: true };

    #[test]
    fn changes_follow_the_record() {
        use PaymentState as S;
        assert_eq!(
            changes(None, &entry(S::RequiresConfirmation, 0), Source::Other),
            [(EventKind::Created, 0)]
        );
        assert_eq!(
            changes(None, &entry(S::Succeeded, 0), Source::Other),
            [(EventKind::Created, 0), (EventKind::Succeeded, 0)]
        );
        let paid = entry(S::Succeeded, 0);
        assert_eq!(
            changes(Some(&paid), &paid, Source::Other),
            [],
            "nothing moved: no event"
        );
        assert_eq!(
            changes(Some(&paid), &entry(S::Succeeded, 400), Source::Other),
            [(EventKind::Refunded, 400)]
        );
        assert_eq!(
            changes(
                Some(&entry(S::RequiresConfirmation, 0)),
                &entry(S::Failed, 0),
                ATTEMPT
            ),
            [(EventKind::Failed, 0)]
        );
    }

    /// (1) A decline a notification reported, read again by a retrieve or a status query in
    /// other words (the provider's own message, the amount): the same failure, no second
    /// `payment_failed`. The same for a next action read again.
    #[test]
    fn an_outcome_read_again_is_no_new_event() {
        use PaymentState as S;
        let notified = after(S::Failed, declined("generic_decline", "declined"), None);
        let retrieved = after(
            S::Failed,
            declined("generic_decline", "Your payment was declined by the bank."),
            Some(2500),
        );
        assert_eq!(changes(Some(&notified), &retrieved, Source::Other), []);
        let waiting = after(S::RequiresAction, redirect("https://bank.example/1"), None);
        let read = after(
            S::RequiresAction,
            redirect("https://bank.example/1?session=2"),
            Some(2500),
        );
        assert_eq!(changes(Some(&waiting), &read, Source::Other), []);
        // Whatever reads it, a state that moves is an event.
        assert_eq!(
            changes(Some(&entry(S::Processing, 0)), &retrieved, Source::Other),
            [(EventKind::Failed, 0)]
        );
        assert_eq!(
            changes(Some(&waiting), &notified, Source::Other),
            [(EventKind::Failed, 0)]
        );
    }

    /// (2) A confirm after a decline is a new attempt: declined again, it is another
    /// `payment_failed`, whether its decline differs or not (Stripe sends one per failed
    /// confirmation); a new next action is another `requires_action`. The retry resuming an
    /// attempt writes what its first run may have written: an event only if it differs.
    #[test]
    fn a_new_attempts_outcome_in_the_same_state_is_a_new_event() {
        use PaymentState as S;
        let first = after(S::Failed, declined("generic_decline", "declined"), None);
        let other = after(S::Failed, declined("insufficient_funds", "declined"), None);
        assert_eq!(
            changes(Some(&first), &other, ATTEMPT),
            [(EventKind::Failed, 0)]
        );
        assert_eq!(
            changes(Some(&first), &first, ATTEMPT),
            [(EventKind::Failed, 0)]
        );
        let waiting = after(S::RequiresAction, redirect("https://bank.example/1"), None);
        let again = after(S::RequiresAction, redirect("https://bank.example/2"), None);
        assert_eq!(
            changes(Some(&waiting), &again, ATTEMPT),
            [(EventKind::RequiresAction, 0)]
        );
        assert_eq!(changes(Some(&first), &first, RESUMED), []);
        assert_eq!(
            changes(Some(&first), &other, RESUMED),
            [(EventKind::Failed, 0)]
        );
    }

    #[test]
    fn only_a_confirms_decline_or_next_action_is_an_attempts_outcome() {
        use Operation as O;
        let no = declined("generic_decline", "declined");
        assert_eq!(Source::of(O::Authorize, &no, false), ATTEMPT);
        assert_eq!(Source::of(O::Authorize, &no, true), RESUMED);
        assert_eq!(
            Source::of(O::Authorize, &redirect("https://bank.example/1"), false),
            ATTEMPT
        );
        // A retrieve or a status query reads; other outcomes of a confirm move the state
        // (or, not sent, change nothing).
        assert_eq!(Source::of(O::Status, &no, false), Source::Other);
        assert_eq!(
            Source::of(O::Status, &redirect("https://bank.example/1"), false),
            Source::Other
        );
        for status in [
            OutcomeStatus::Approved,
            OutcomeStatus::Pending,
            OutcomeStatus::Error(Failure {
                class: ErrorClass::NotSent,
                code: "provider_unavailable".into(),
                provider_code: String::new(),
                message: String::new(),
            }),
        ] {
            assert_eq!(Source::of(O::Authorize, &status, false), Source::Other);
        }
        assert_eq!(Source::of(O::Void, &no, false), Source::Other);
    }

    #[test]
    fn one_id_per_change() {
        assert_eq!(event_id("pi_1", 0), event_id("pi_1", 0));
        assert_ne!(event_id("pi_1", 0), event_id("pi_1", 1));
        assert_ne!(event_id("pi_1", 0), event_id("pi_2", 0));
        assert!(event_id("pi_1", 0).starts_with("evt_"));
    }
}
