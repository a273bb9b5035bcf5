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
        // A new claim for a new payment is answered before it is durable: such a request
        // sends nothing before its attempt is journaled on the claim (or, created without
        // confirm, writes its record), and that write is answered only once durable, which
        // it cannot be if the claim's batch was lost (no record: `NotInFlight`; a failed
        // flush fails redb's every later write). A crash before then loses a claim nothing
        // was sent for. A call naming a payment may be forwarded without a journal (an id
        // never seen here), so its claim waits for the flush, as does every other answer
        // (replay, mismatch, in flight, resume).
        let early: fn(&Result<Begin, StoreError>) -> bool = if payment.id.is_none() {
            |begun| matches!(begun, Ok(Begin::Started))
        } else {
            |_| false
        };
        let begun = self
            .state_answering_early(move |s| s.begin(&r, &f, now_ms(), stale), early)
            .await;
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
    /// nobody: the storefront's retry resumes it at once), after the payment record write held
    /// back for it ([`Payments::record_last`]) in the same store call. Returns the answer:
    /// `done`'s, unless the record write was fenced, or the idempotency record was taken
    /// over while this request ran (fenced): another instance now speaks for the payment,
    /// and this request's answer is not the payment's.
    pub(super) async fn settle(&self, ctx: &Ctx<'_>, held: Option<Held>, mut done: Done) -> Answer {
        let Some(Held { record, resume, .. }) = held else {
            // Nothing is held back without a claim ([`Payments::record_last`]); written all
            // the same if it were.
            if let Err(e) = self.save_held_back(ctx).await {
                tracing::error!(error = %e, "could not record the payment");
            }
            return done.answer;
        };
        let unsaved = ctx.take_held_back();
        let keep = match &done.keep {
            // A resumed record's first run may have charged at its journaled provider: what
            // this run did not do says nothing of that, so the record (and its attempt) is
            // kept for the next retry, never released for a fresh start elsewhere.
            Keep::Release if resume.is_some() => Keep::Hold,
            other => other.clone(),
        };
        let ttl = self.ttl_ms;
        let id = unsaved.as_ref().map(|w| w.payment_id().to_string());
        let settled = self
            .state(move |s| {
                let saved = unsaved.as_ref().map(|write| write.apply(s));
                // A fenced record write answers nothing as recorded: the key stays in flight.
                let keep = match &saved {
                    Some(Err(StoreError::Fenced { .. })) => Keep::Hold,
                    _ => keep,
                };
                let kept = match keep {
                    Keep::Hold => s.park(&record),
                    Keep::Replay(stored) => s.finish(&record, &stored, now_ms(), ttl),
                    Keep::Release => s.release(&record),
                };
                Ok((saved, kept))
            })
            .await;
        let (saved, kept) = match settled {
            Ok(both) => both,
            // Neither is durable (the batch's flush failed, or the store's writer stopped).
            Err(e) => {
                if let Some(id) = &id {
                    tracing::error!(payment = %id, error = %e, "could not record the payment");
                }
                (None, Err(e))
            }
        };
        if let (Some(Err(e)), Some(id)) = (saved, &id) {
            if let Err(fenced) = self.not_recorded(ctx, id, e) {
                done = fenced;
            }
        }
        let fenced = match kept {
            Ok(()) => false,
            Err(e) => {
                tracing::error!(error = %e, "could not record the idempotent result");
                matches!(e, StoreError::Fenced { .. })
            }
        };
        if fenced && done.keep != Keep::Hold {
            // Taken over while this request stalled: whatever it did, the instance that took
            // the key over may have charged the payment since, and its answer is the one
            // the key replays. This one must not stand for it ("declined", "nothing was
            // charged"): the storefront retries and gets that answer.
            ctx.note(|d| d.stage = "respond");
            return self.refuse(ctx, still_processing());
        }
        done.answer
    }
}
