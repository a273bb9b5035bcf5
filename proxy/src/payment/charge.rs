//! The phases of a charge (instrument → comply → route → attempt → record → respond) and of
//! a follow-up at the payment's owner (attempt → record → respond).

use super::attempt::Attempted;
use super::events::Source;
use super::idempotency::Held;
use super::records::{advance, complete_follow_up, forwardable, new_entry};
use super::respond::replayable;
use super::*;
use crate::plugin::storefront::PaymentState;
use crate::store::{Owner, PassedOver, PaymentEntry};

impl Payments {
    /// Charge a payment: new (`entry` none) or the confirm of a recorded one.
    pub(super) async fn charge(
        &self,
        ctx: &Ctx<'_>,
        mut payment: Payment,
        entry: Option<PaymentEntry>,
        held: Option<&Held>,
    ) -> Done {
        let resume = held.and_then(|h| h.resume.as_ref());
        let (card, annotations, order) = match resume {
            // A request whose process stopped after sending goes back where it may already
            // have been charged, whatever compliance or the router would say now.
            Some(attempt) => {
                if !ctx.snapshot.providers.contains_key(&attempt.provider) {
                    tracing::error!(route = %ctx.route.name, provider = %attempt.provider, "resuming a payment at a provider that is no longer configured; holding it");
                    let r = refusal(
                        RefusalKind::Unavailable,
                        503,
                        "provider_unavailable",
                        "the payment cannot be completed right now; retry with the same idempotency key",
                    );
                    return Done {
                        answer: self.refuse(ctx, r),
                        keep: Keep::Hold,
                    };
                }
                (
                    entry.as_ref().and_then(|e| e.card.clone()),
                    Vec::new(),
                    vec![attempt.provider.clone()],
                )
            }
            None => {
                let card = self
                    .instrument(ctx, &mut payment)
                    .instrument(ctx.phase("instrument"))
                    .await;
                let complied = {
                    let _phase = ctx.phase("comply").entered();
                    self.comply(ctx, &payment, card.as_ref())
                };
                let annotations = match complied {
                    Ok(annotations) => annotations,
                    Err(refused) => return self.refused(ctx, refused),
                };
                let decided = {
                    let _phase = ctx.phase("route").entered();
                    self.decide(ctx, &payment)
                };
                let mut order = match decided {
                    Ok(order) => order,
                    Err(refused) => return self.refused(ctx, refused),
                };
                // A request carrying more than the canonical payment goes only where it is
                // sent unchanged: to the providers of its own dialect.
                if let (Some(refusal), None) = (&ctx.beyond_canonical, &payment.id) {
                    order.retain(|provider| self.speaks_storefront(ctx, provider));
                    if order.is_empty() {
                        return self.refused(ctx, refusal.clone());
                    }
                }
                (card, annotations, order)
            }
        };
        // A resumed create finds the record its first run left (its id is derived from the
        // idempotency record).
        let entry = match (entry, resume) {
            (None, Some(_)) => {
                let id = mint_id(held, &ctx.route.payment_id_prefix);
                self.state(move |s| s.payment(&id)).await.ok().flatten()
            }
            (entry, _) => entry,
        };

        // attempt: the storefront's request goes unchanged to a provider of its own dialect
        // only when it names no payproxy payment (a confirm of a recorded one is encoded).
        let unchanged = payment.id.is_none();
        let attempted = self
            .attempt(
                ctx,
                &payment,
                &order,
                resume,
                resume.is_some(),
                unchanged,
                held,
            )
            .instrument(ctx.phase("attempt"))
            .await;

        // record + respond
        let mut entry = entry.unwrap_or_else(|| {
            let id = mint_id(held, &ctx.route.payment_id_prefix);
            new_entry(ctx, id, payment.clone(), PaymentState::RequiresConfirmation)
        });
        if card.is_some() {
            entry.card = card;
        }
        entry.record.payment = Payment {
            id: None,
            idempotency_key: None,
            provider_reference: None,
            ..payment.clone()
        };
        self.finish(
            ctx,
            &payment,
            entry,
            attempted,
            &annotations,
            resume.is_some(),
        )
        .instrument(ctx.phase("respond"))
        .await
    }

    /// A follow-up (capture, cancel, refund, retrieve) at the payment's owner.
    pub(super) async fn follow_up(
        &self,
        ctx: &Ctx<'_>,
        mut payment: Payment,
        entry: PaymentEntry,
        held: Option<&Held>,
    ) -> Done {
        let Some(owner) = entry.owner.clone() else {
            return self.render_record(ctx, &entry.record);
        };
        complete_follow_up(&entry, &mut payment);
        let unchanged = forwardable(ctx, &entry);
        let resume = held.and_then(|h| h.resume.as_ref());
        let attempted = self
            .attempt(
                ctx,
                &payment,
                std::slice::from_ref(&owner.provider),
                resume,
                true,
                unchanged,
                held,
            )
            .instrument(ctx.phase("attempt"))
            .await;
        self.finish(ctx, &payment, entry, attempted, &[], resume.is_some())
            .instrument(ctx.phase("respond"))
            .await
    }

    /// Record what the attempt phase did, then answer. `resumed`: the request resumes an
    /// earlier run's attempt (see [`Source`]).
    async fn finish(
        &self,
        ctx: &Ctx<'_>,
        payment: &Payment,
        mut entry: PaymentEntry,
        attempted: Attempted,
        annotations: &[crate::plugin::types::Annotation],
        resumed: bool,
    ) -> Done {
        let passed_over =
            payment.operation == Operation::Authorize && note_passed_over(ctx, payment, &mut entry);
        match attempted {
            Attempted::Refused(r) => {
                // Refused in the attempt phase (nothing sent): that is where it happened.
                ctx.note(|d| d.stage = "attempt");
                self.refused(ctx, r)
            }
            Attempted::Forwarded {
                provider,
                answer,
                outcome,
                keep,
            } => {
                // Same dialect: the provider's id is the storefront's.
                ctx.note(|d| d.path = Some("forwarded"));
                let new = entry.owner.is_none();
                let resolved = keep != Keep::Hold;
                if let Some(outcome) = &outcome {
                    let source = Source::of(payment.operation, &outcome.status, resumed);
                    let reference = outcome.provider_reference.clone();
                    match (payment.operation, reference) {
                        (Operation::Authorize, Some(reference)) if new => {
                            entry.record.id = reference.clone();
                            entry.owner = Some(owner(&provider, reference, payment));
                            advance(&mut entry, payment, outcome);
                            if let Err(done) = self.record_last(ctx, &entry, resolved, source).await
                            {
                                return done;
                            }
                        }
                        // A resumed create whose first run left a record without a
                        // reference: that record (the id the storefront was shown) now points
                        // at the provider's payment, and the provider's own id finds its owner.
                        (Operation::Authorize, Some(reference))
                            if entry.owner.as_ref().is_some_and(|o| o.reference.is_empty()) =>
                        {
                            entry.owner = Some(owner(&provider, reference.clone(), payment));
                            advance(&mut entry, payment, outcome);
                            if let Err(done) = self.record(ctx, &entry, resolved, source).await {
                                return done;
                            }
                            self.remember_owner(&provider, reference, payment).await;
                        }
                        (Operation::Refund, Some(reference)) => {
                            advance(&mut entry, payment, outcome);
                            if let Err(done) = self.record(ctx, &entry, resolved, source).await {
                                return done;
                            }
                            self.remember_owner(&provider, reference, payment).await;
                        }
                        _ if !new => {
                            advance(&mut entry, payment, outcome);
                            if let Err(done) = self.record_last(ctx, &entry, resolved, source).await
                            {
                                return done;
                            }
                        }
                        _ => {}
                    }
                }
                let provider_id = outcome.as_ref().and_then(|o| o.provider_reference.clone());
                self.audit(
                    ctx,
                    &entry,
                    payment.operation,
                    &provider,
                    provider_id,
                    outcome
                        .as_ref()
                        .map_or("forwarded", |o| outcome_label(&o.status)),
                );
                Done {
                    answer: *answer,
                    keep,
                }
            }
            Attempted::Outcome {
                provider,
                outcome,
                hold,
            } => {
                // A status query the provider answered with an error (unreadable, refused,
                // unavailable, timed out) learned nothing: the record stands as it is, next
                // action included, and is what the storefront sees.
                if payment.operation == Operation::Status
                    && matches!(&outcome.status, OutcomeStatus::Error(_))
                {
                    tracing::warn!(payment = %entry.record.id, provider = %provider, "status query got no usable answer; answering from the record");
                    return self.render_record(ctx, &entry.record);
                }
                let nothing_happened = matches!(
                    &outcome.status,
                    OutcomeStatus::Error(Failure {
                        class: ErrorClass::NotSent | ErrorClass::AnsweredNotProcessed,
                        ..
                    })
                ) && !hold;
                let id = match payment.operation {
                    Operation::Refund => {
                        // A refund at a provider of the storefront's dialect keeps the
                        // provider's id, so a retrieve of it can be forwarded there.
                        let same_dialect = self.speaks_storefront(ctx, &provider);
                        match (&outcome.provider_reference, same_dialect) {
                            (Some(reference), true) => reference.clone(),
                            _ => mint(&ctx.route.refund_id_prefix),
                        }
                    }
                    _ => entry.record.id.clone(),
                };
                if nothing_happened && passed_over {
                    // Nothing to record but who said "not processed": a charge one of them
                    // reports later is found and undone.
                    if let Err(done) = self.record_last(ctx, &entry, false, Source::Other).await {
                        return done;
                    }
                }
                if !nothing_happened {
                    if entry.owner.is_none() || payment.operation == Operation::Authorize {
                        let reference = outcome.provider_reference.clone().unwrap_or_default();
                        entry.owner = Some(owner(&provider, reference, payment));
                    }
                    advance(&mut entry, payment, &outcome);
                    let source = Source::of(payment.operation, &outcome.status, resumed);
                    // A refund's owner is remembered after its record: not the last write.
                    let recorded = if payment.operation == Operation::Refund {
                        self.record(ctx, &entry, !hold, source).await
                    } else {
                        self.record_last(ctx, &entry, !hold, source).await
                    };
                    if let Err(done) = recorded {
                        return done;
                    }
                    if payment.operation == Operation::Refund {
                        if let Some(reference) = &outcome.provider_reference {
                            self.remember_owner(&provider, reference.clone(), payment)
                                .await;
                        }
                    }
                }
                ctx.note(|d| {
                    d.path = Some("translated");
                    if payment.operation == Operation::Refund {
                        d.refund = Some(id.clone());
                    }
                });
                self.audit(
                    ctx,
                    &entry,
                    payment.operation,
                    &provider,
                    outcome.provider_reference.clone(),
                    outcome_label(&outcome.status),
                );
                let response = match self.render_outcome(
                    ctx,
                    &provider,
                    payment,
                    &outcome,
                    &id,
                    annotations,
                ) {
                    Ok(response) => response,
                    // No answer to replay: unless nothing happened, the record stays in
                    // flight so a retry resumes at this provider instead of starting anew.
                    Err(answer) if nothing_happened => return Done::release(answer),
                    Err(answer) => {
                        return Done {
                            answer,
                            keep: Keep::Hold,
                        }
                    }
                };
                match (hold, nothing_happened) {
                    (true, _) => Done {
                        answer: answer(ctx.route, &provider, response),
                        keep: Keep::Hold,
                    },
                    (false, true) => Done::release(answer(ctx.route, &provider, response)),
                    (false, false) => replayable(ctx.route, &provider, response),
                }
            }
        }
    }

    /// Write a payment record after an attempt; a failure is logged (the payment itself
    /// already happened). `Err`: this request lost the payment's lock to another instance
    /// while it stalled (its lease lapsed), and that instance now speaks for the payment:
    /// the outcome is not answered as recorded, the idempotency record stays in flight,
    /// and the storefront's retry resumes it (same provider, same provider key).
    async fn record(
        &self,
        ctx: &Ctx<'_>,
        entry: &PaymentEntry,
        resolved: bool,
        source: Source,
    ) -> Result<(), Done> {
        match self
            .save_owned(ctx, recorded(entry, resolved), source)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => self.not_recorded(ctx, &entry.record.id, e),
        }
    }

    /// [`Payments::record`], when it is the request's last store write before its
    /// idempotency record is settled: on a store with a writer, the record goes to the store
    /// in the same call as the idempotency record's answer ([`Payments::settle`]), one trip
    /// to the writer and one flush wait fewer. Both are in one batch, the record first, and
    /// the answer is given only once both are durable, as before. Only for a request that
    /// holds an idempotency claim (there is a settle to go with) and not the payment's lock
    /// (handed back before the settle, it must not be while the record is unwritten).
    async fn record_last(
        &self,
        ctx: &Ctx<'_>,
        entry: &PaymentEntry,
        resolved: bool,
        source: Source,
    ) -> Result<(), Done> {
        let deferrable =
            self.store.writer().is_some() && ctx.claim.get().is_some() && ctx.lock.get().is_none();
        if !deferrable {
            return self.record(ctx, entry, resolved, source).await;
        }
        if let Err(e) = self.save_held_back(ctx).await {
            self.not_recorded(ctx, &entry.record.id, e)?;
        }
        match self
            .record_write(ctx, recorded(entry, resolved), source)
            .await
        {
            Ok(write) => {
                ctx.hold_back(write);
                Ok(())
            }
            Err(e) => self.not_recorded(ctx, &entry.record.id, e),
        }
    }

    /// What a record write that failed means for the request (see [`Payments::record`]).
    pub(super) fn not_recorded(&self, ctx: &Ctx<'_>, id: &str, e: StoreError) -> Result<(), Done> {
        if let StoreError::Fenced { .. } = e {
            tracing::warn!(payment = %id, error = %e, "a takeover fenced this request's record write (the payment's lock or its idempotency claim lapsed while it ran); not answering its outcome as recorded");
            return Err(Done {
                answer: self.refuse(ctx, still_processing()),
                keep: Keep::Hold,
            });
        }
        tracing::error!(payment = %id, error = %e, "could not record the payment");
        Ok(())
    }

    /// Remember who owns an object by its provider id (a refund, a payment known by the
    /// provider's id), so a call naming it goes there.
    async fn remember_owner(&self, provider: &str, reference: String, payment: &Payment) {
        let owner = owner(provider, reference.clone(), payment);
        if let Err(e) = self.state(move |s| s.set_owner(&reference, &owner)).await {
            tracing::error!(error = %e, "could not record the owner of a provider id");
        }
    }

    /// Whether `provider` speaks the storefront's dialect.
    pub(super) fn speaks_storefront(&self, ctx: &Ctx<'_>, provider: &str) -> bool {
        speaks(ctx.snapshot, provider, ctx.ingress_name)
    }

    /// Note the payment, the provider that has it and the decision, for the audit line.
    /// `provider_id` is the id the provider answered with: the payment's reference, or for a
    /// refund the refund's own id (the payment's reference then comes from its owner).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn audit(
        &self,
        ctx: &Ctx<'_>,
        entry: &PaymentEntry,
        operation: Operation,
        provider: &str,
        provider_id: Option<String>,
        decision: &str,
    ) {
        let owned = entry.owner.as_ref().map(|o| o.reference.clone());
        ctx.note(|d| {
            d.payment = Some(entry.record.id.clone());
            d.provider = Some(provider.to_string());
            if operation == Operation::Refund {
                if d.refund.is_none() {
                    d.refund = provider_id;
                }
                d.reference = owned.filter(|r| !r.is_empty());
            } else {
                d.reference = provider_id.or(owned).filter(|r| !r.is_empty());
            }
            d.outcome = Some(decision.to_string());
        });
    }

    /// Note a decision made on payproxy's own record, without a provider (`created`,
    /// `canceled`, `recorded`: a read answered from the record).
    pub(super) fn audit_record(&self, ctx: &Ctx<'_>, id: &str, decision: &str) {
        ctx.note(|d| {
            d.payment.get_or_insert_with(|| id.to_string());
            d.outcome.get_or_insert_with(|| decision.to_string());
        });
    }
}

fn owner(provider: &str, reference: String, payment: &Payment) -> Owner {
    Owner {
        provider: provider.to_string(),
        reference,
        currency: payment.amount.as_ref().map(|a| a.currency.clone()),
    }
}

/// Whether `provider` speaks `dialect` (the storefront's, for a same-dialect forward).
pub(super) fn speaks(snapshot: &Snapshot, provider: &str, dialect: &str) -> bool {
    snapshot
        .providers
        .get(provider)
        .and_then(|p| p.dialect.as_ref())
        .is_some_and(|(name, _)| name == dialect)
}

/// Note in `entry` the providers this request's attempts were answered "not processed" by
/// (see [`PassedOver`]): whether any is new.
fn note_passed_over(ctx: &Ctx<'_>, payment: &Payment, entry: &mut PaymentEntry) -> bool {
    let providers: Vec<String> = {
        let draft = ctx.audit.lock().unwrap_or_else(|p| p.into_inner());
        draft
            .attempts
            .iter()
            .filter(|a| {
                matches!(a.kind, "send" | "resend" | "forward")
                    && a.class == "answered_not_processed"
            })
            .map(|a| a.provider.clone())
            .collect()
    };
    let mut added = false;
    for provider in providers {
        // What it may have been sent that identifies this payment alone: its id, and the
        // provider key (not the merchant's reference, which other payments may share).
        let sent = [
            payment.id.clone(),
            Some(entry.record.id.clone()),
            Some(provider_key(&provider, payment)),
        ];
        let at = match entry
            .passed_over
            .iter()
            .position(|p| p.provider == provider)
        {
            Some(at) => at,
            None => {
                entry.passed_over.push(PassedOver {
                    provider,
                    sent: Vec::new(),
                });
                entry.passed_over.len() - 1
            }
        };
        let known = &mut entry.passed_over[at].sent;
        for reference in sent.into_iter().flatten() {
            if !known.contains(&reference) {
                known.push(reference);
                added = true;
            }
        }
    }
    added
}

/// The record an attempt leaves: `entry`, with its unresolved attempt dropped when the
/// attempt's outcome is known.
fn recorded(entry: &PaymentEntry, resolved: bool) -> PaymentEntry {
    let mut entry = entry.clone();
    if resolved {
        entry.unresolved = None;
    }
    entry
}
