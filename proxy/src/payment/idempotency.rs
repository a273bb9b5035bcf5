//! Idempotency: Stripe's semantics for `Idempotency-Key` (replay the stored answer, refuse a
//! reuse with another request, conflict while in flight, take over after a crash).

use super::*;
use crate::store::{Begin, Takeover};

/// An idempotency record a request holds.
pub(super) struct Held {
    /// The record's key: route and idempotency key.
    pub record: String,
    /// What makes a retry "the same" request (see `fingerprint`).
    pub fingerprint: String,
    /// The attempt journaled by a process that stopped mid-request, when taking it over.
    pub resume: Option<Attempt>,
    /// Marks the record as held by a request of this process until the request ends.
    _live: Live,
}

#[cfg(test)]
impl Held {
    /// A held record outside any [`LiveRecords`], for unit tests.
    pub(super) fn unlisted(record: &str, fingerprint: &str) -> Held {
        Held {
            record: record.into(),
            fingerprint: fingerprint.into(),
            resume: None,
            _live: LiveRecords::default().hold(record),
        }
    }
}

/// Idempotency records a request of this process is executing now. A record in flight past
/// its deadline is only taken over when no request here holds it: a slow request is never
/// raced by its own retry (the store cannot tell, its holder is this very process).
#[derive(Default)]
pub(super) struct LiveRecords(Arc<std::sync::Mutex<std::collections::HashSet<String>>>);

impl LiveRecords {
    pub(super) fn contains(&self, record: &str) -> bool {
        self.0.lock().is_ok_and(|set| set.contains(record))
    }

    pub(super) fn hold(&self, record: &str) -> Live {
        if let Ok(mut set) = self.0.lock() {
            set.insert(record.to_string());
        }
        Live {
            set: self.0.clone(),
            record: record.to_string(),
        }
    }
}

/// A record in [`LiveRecords`] until dropped (also when its request's task ends abnormally).
pub(super) struct Live {
    set: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    record: String,
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.record);
        }
    }
}

impl Payments {
    /// Claim the request's idempotency key (reads are never claimed). `Ok(None)`: no key,
    /// run without a record. `Err`: the answer is already known (replay, mismatch,
    /// in flight, store down).
    pub(super) async fn claim(
        &self,
        ctx: &Ctx<'_>,
        payment: &Payment,
    ) -> Result<Option<Held>, Answer> {
        let Some(key) = &payment.idempotency_key else {
            return Ok(None);
        };
        if payment.operation == Operation::Status {
            return Ok(None);
        }
        let record = format!("{}\u{0}{key}", ctx.route.name);
        if self.live.contains(&record) {
            ctx.note(|d| d.idempotency = Some("in_flight"));
            return Err(self.in_use(ctx));
        }
        let fingerprint = fingerprint(ctx.parts, &ctx.body);
        let stale = ctx.route.failover.deadline_ms.saturating_mul(3);
        let (r, f) = (record.clone(), fingerprint.clone());
        let begun = self.state(move |s| s.begin(&r, &f, now_ms(), stale)).await;
        let held = |resume| {
            let live = self.live.hold(&record);
            Ok(Some(Held {
                record,
                fingerprint,
                resume,
                _live: live,
            }))
        };
        let state = match &begun {
            Ok(Begin::Started) => "new",
            Ok(Begin::Resume { .. }) => "resume",
            Ok(Begin::Replay(_)) => "replay",
            Ok(Begin::Mismatch) => "mismatch",
            Ok(Begin::InFlight) => "in_flight",
            Err(_) => "unavailable",
        };
        ctx.note(|d| d.idempotency = Some(state));
        match begun {
            Ok(Begin::Started) => held(None),
            Ok(Begin::Resume { attempt, reason }) => {
                let what = match reason {
                    Takeover::Parked => "whose earlier request ended with its outcome unknown",
                    Takeover::PreviousProcess => "held by a previous process",
                    Takeover::PastDeadline => "in flight past its deadline",
                    Takeover::LeaseExpired => "whose holder's lease expired",
                };
                tracing::warn!(route = %ctx.route.name, provider = attempt.as_ref().map(|a| a.provider.as_str()).unwrap_or("-"), "resuming a payment {what}");
                held(attempt)
            }
            Ok(Begin::Replay(stored)) => {
                self.metrics
                    .idempotent_replays
                    .with_label_values(&[ctx.route.name.as_str()])
                    .inc();
                let answer = replay(ctx.route, stored);
                if answer.provider != "none" {
                    ctx.note(|d| d.provider = Some(answer.provider.clone()));
                }
                Err(answer)
            }
            Ok(Begin::Mismatch) => Err(self.refuse(
                ctx,
                refusal(
                    RefusalKind::InvalidRequest(None),
                    400,
                    "idempotency_error",
                    "this idempotency key was already used with different parameters",
                ),
            )),
            Ok(Begin::InFlight) => Err(self.in_use(ctx)),
            Err(e) => Err(self.store_failed(ctx, &e).answer),
        }
    }

    /// 409: another request with the key is running.
    fn in_use(&self, ctx: &Ctx<'_>) -> Answer {
        self.refuse(
            ctx,
            refusal(
                RefusalKind::InvalidRequest(None),
                409,
                "idempotency_key_in_use",
                "a request with this idempotency key is still being processed; retry later",
            ),
        )
    }

    /// Finish the record with the answer to replay, release it, or park it (in flight, held by
    /// nobody: the storefront's retry resumes it at once). `true` when the record was taken
    /// over while this request ran (fenced): another instance now speaks for the payment,
    /// and this request's answer is not the payment's.
    pub(super) async fn settle(&self, held: Option<Held>, keep: &Keep) -> bool {
        let Some(Held { record, resume, .. }) = held else {
            return false;
        };
        let keep = match keep {
            // A resumed record's first run may have charged at its journaled provider: what
            // this run did not do says nothing of that, so the record (and its attempt) is
            // kept for the next retry, never released for a fresh start elsewhere.
            Keep::Release if resume.is_some() => Keep::Hold,
            other => other.clone(),
        };
        let done = match keep {
            Keep::Hold => self.state(move |s| s.park(&record)).await,
            Keep::Replay(stored) => {
                let ttl = self.ttl_ms;
                self.state(move |s| s.finish(&record, &stored, now_ms(), ttl))
                    .await
            }
            Keep::Release => self.state(move |s| s.release(&record)).await,
        };
        match done {
            Ok(()) => false,
            Err(e) => {
                tracing::error!(error = %e, "could not record the idempotent result");
                matches!(e, StoreError::Fenced { .. })
            }
        }
    }
}
