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
        let fingerprint = fingerprint(ctx.parts, &ctx.body);
        let stale = ctx.route.failover.deadline_ms.saturating_mul(3);
        let (r, f) = (record.clone(), fingerprint.clone());
        let begun = self.state(move |s| s.begin(&r, &f, now_ms(), stale)).await;
        let held = |resume| {
            Ok(Some(Held {
                record,
                fingerprint,
                resume,
            }))
        };
        match begun {
            Ok(Begin::Started) => held(None),
            Ok(Begin::Resume { attempt, reason }) => {
                let what = match reason {
                    Takeover::Parked => "whose earlier request ended with its outcome unknown",
                    Takeover::PreviousProcess => "held by a previous process",
                    Takeover::PastDeadline => "in flight past its deadline",
                };
                tracing::warn!(route = %ctx.route.name, provider = attempt.as_ref().map(|a| a.provider.as_str()).unwrap_or("-"), "resuming a payment {what}");
                held(attempt)
            }
            Ok(Begin::Replay(stored)) => {
                self.metrics
                    .idempotent_replays
                    .with_label_values(&[ctx.route.name.as_str()])
                    .inc();
                Err(replay(ctx.route, stored))
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
            Ok(Begin::InFlight) => Err(self.refuse(
                ctx,
                refusal(
                    RefusalKind::InvalidRequest(None),
                    409,
                    "idempotency_key_in_use",
                    "a request with this idempotency key is still being processed; retry later",
                ),
            )),
            Err(e) => Err(self.store_failed(ctx, &e).answer),
        }
    }

    /// Finish the record with the answer to replay, release it, or park it (in flight, held by
    /// nobody: the storefront's retry resumes it at once).
    pub(super) async fn settle(&self, held: Option<Held>, keep: &Keep) {
        let Some(Held { record, .. }) = held else {
            return;
        };
        let done = match keep.clone() {
            Keep::Hold => self.state(move |s| s.park(&record)).await,
            Keep::Replay(stored) => {
                let ttl = self.ttl_ms;
                self.state(move |s| s.finish(&record, &stored, now_ms(), ttl))
                    .await
            }
            Keep::Release => self.state(move |s| s.release(&record)).await,
        };
        if let Err(e) = done {
            tracing::error!(error = %e, "could not record the idempotent result");
        }
    }
}
