//! Storefront events of a payment's state changes (issue 10 point 3): derived from the
//! record before and after a change, rendered once by the storefront dialect
//! (`render-event`), and written to the outbox with the record, one row per endpoint of the
//! route's `webhooks`. One event id per change: `evt_` and a digest of the payment id and the
//! change's place in the payment's sequence, so a change written again (a resumed request)
//! is the same event, kept once.

use super::*;
use crate::plugin::storefront::{EventKind, PaymentEvent, PaymentState};
use crate::store::{NewEvent, PaymentEntry};

impl Payments {
    /// The outbox rows of the change that writing `entry` makes; none when the route sends
    /// no webhooks. A rendering failure is logged and sends nothing (the payment happened).
    pub(super) async fn events_of(
        &self,
        ctx: &Ctx<'_>,
        entry: &PaymentEntry,
    ) -> Result<Vec<NewEvent>, StoreError> {
        let Some(webhooks) = ctx.route.webhooks.clone() else {
            return Ok(Vec::new());
        };
        let id = entry.record.id.clone();
        let (old, seq) = self
            .state(move |s| Ok((s.payment(&id)?, s.next_event_seq(&id)?)))
            .await?;
        let changes = changes(old.as_ref(), entry);
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

/// The changes from `old` to `new`, in order, with the amount of a refund: a new payment is
/// `created` (then its state, when it was charged at once); a state moved is the new state;
/// a new outcome in the same state (a second decline, a new next action) is that state
/// again; a grown refunded amount is `refunded`.
fn changes(old: Option<&PaymentEntry>, new: &PaymentEntry) -> Vec<(EventKind, i64)> {
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
                && old.record.last_outcome != new.record.last_outcome;
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

    #[test]
    fn changes_follow_the_record() {
        use PaymentState as S;
        assert_eq!(
            changes(None, &entry(S::RequiresConfirmation, 0)),
            [(EventKind::Created, 0)]
        );
        assert_eq!(
            changes(None, &entry(S::Succeeded, 0)),
            [(EventKind::Created, 0), (EventKind::Succeeded, 0)]
        );
        let paid = entry(S::Succeeded, 0);
        assert_eq!(changes(Some(&paid), &paid), [], "nothing moved: no event");
        assert_eq!(
            changes(Some(&paid), &entry(S::Succeeded, 400)),
            [(EventKind::Refunded, 400)]
        );
        assert_eq!(
            changes(
                Some(&entry(S::RequiresConfirmation, 0)),
                &entry(S::Failed, 0)
            ),
            [(EventKind::Failed, 0)]
        );
    }

    #[test]
    fn one_id_per_change() {
        assert_eq!(event_id("pi_1", 0), event_id("pi_1", 0));
        assert_ne!(event_id("pi_1", 0), event_id("pi_1", 1));
        assert_ne!(event_id("pi_1", 0), event_id("pi_2", 0));
        assert!(event_id("pi_1", 0).starts_with("evt_"));
    }
}
