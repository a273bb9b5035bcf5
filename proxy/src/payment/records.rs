//! Record: the payment a call refers to, its state machine, and the operation it asks for.
//!
//! payproxy keeps a record of each payment a payment route handles ([`PaymentEntry`]). A
//! follow-up is completed from it (a confirm with an empty body charges the payment as it
//! was created), checked against its state (capture only what is authorized, refund only
//! what was captured and not yet refunded), and the record moves forward with each outcome.
//! An id payproxy has never seen belongs to the home provider: the call goes there unchanged.
//!
//! A payment created without confirm is minted here: nothing is sent to any provider until
//! the confirm, so it cannot be charged anywhere before payproxy routes it, and never twice.

use super::events::Source;
use super::idempotency::{Held, Live};
use super::*;
use crate::plugin::storefront::{PaymentRecord, PaymentState};
use crate::store::{Begin, Fence, Owner, PaymentEntry, Takeover};

impl Payments {
    /// The operation a payment call asks for, on the payment's record, under the payment's
    /// operation lock; the lock is handed back when the operation ends.
    pub(super) async fn operate(
        &self,
        ctx: &Ctx<'_>,
        call: PaymentCall,
        held: Option<&Held>,
    ) -> Done {
        let mut lock = None;
        let done = self.operate_locked(ctx, call, held, &mut lock).await;
        let Some(lock) = lock else {
            return done;
        };
        match self.unlock(lock).await {
            Unlocked::Released => done,
            // Taken over while this request stalled (the other instance may have marked
            // the payment unresolved, waiting for this request's retry), or the lock could
            // not be handed back (it lapses and is taken over with the attempt journaled
            // on it): whatever happened, the idempotency record stays in flight, so the
            // storefront's retry resumes the attempt and resolves the payment, and the
            // answer says to retry.
            Unlocked::Lost | Unlocked::Failed if done.keep != Keep::Hold => {
                let r = refusal(
                    RefusalKind::Unavailable,
                    503,
                    "payment_processing",
                    "the payment's outcome could not be recorded; retry the request (with the same idempotency key, if it had one)",
                );
                Done {
                    answer: self.refuse(ctx, r),
                    keep: Keep::Hold,
                }
            }
            Unlocked::Lost | Unlocked::Failed => done,
        }
    }

    async fn operate_locked(
        &self,
        ctx: &Ctx<'_>,
        call: PaymentCall,
        held: Option<&Held>,
        lock: &mut Option<OpLock>,
    ) -> Done {
        let PaymentCall { payment, confirm } = call;
        // `authorize` with an id, not confirmed: an update of the payment's parameters.
        let update = payment.operation == Operation::Authorize && payment.id.is_some() && !confirm;
        let resuming = held.is_some_and(|h| h.resume.is_some());
        let entry = match &payment.id {
            None => None,
            Some(id) => match self.own_record(ctx, id).await {
                Ok(Some(entry)) => Some(entry),
                // Never seen here: made at a provider before payproxy, or elsewhere.
                Ok(None) => return Done::release(self.forward_call(ctx, Some(id)).await),
                Err(e) => return self.store_failed(ctx, &e),
            },
        };
        // One operation at a time on a payment, across every instance sharing the store
        // (Stripe answers `lock_timeout` too): two confirms racing must not both charge, a
        // cancel must not overwrite a capture. The record is read again under the lock, so
        // what is read is what the operation acts on. A retrieve takes it only when it
        // would ask the provider (and write what it learns); while an operation holds it, a
        // retrieve answers from the record.
        let entry = match (&payment.id, entry) {
            (Some(id), Some(found)) => {
                let read = payment.operation == Operation::Status;
                if read && !asks_provider(ctx, &found) {
                    Some(found)
                } else {
                    match self.lock(ctx, id, held).await {
                        Ok(taken) => *lock = Some(taken),
                        Err(Locked::Busy) if read => return self.render_record(ctx, &found.record),
                        Err(Locked::Busy) => return self.lock_timeout(ctx),
                        Err(Locked::Failed(e)) => return self.store_failed(ctx, &e),
                    }
                    match self.own_record(ctx, id).await {
                        Ok(Some(entry)) => Some(entry),
                        Ok(None) => return Done::release(self.forward_call(ctx, Some(id)).await),
                        Err(e) => return self.store_failed(ctx, &e),
                    }
                }
            }
            (_, entry) => entry,
        };
        let Some(mut entry) = entry else {
            if payment.operation != Operation::Authorize {
                // Dialects give follow-ups an id; one without is malformed.
                return self.refused(
                    ctx,
                    refusal(
                        RefusalKind::InvalidRequest(None),
                        400,
                        "parameter_missing",
                        "this operation needs the id of a payment",
                    ),
                );
            }
            return match confirm {
                false => self.create(ctx, payment, held).await,
                true => self.charge(ctx, payment, None, held).await,
            };
        };
        if let Some(owner) = awaiting_reference(&entry) {
            // The retry that holds the idempotency record resumes at the provider it
            // journaled; anyone else waits for it.
            if !resuming {
                return self.unresolved(ctx, &payment, &entry, owner);
            }
        }
        if let Some(attempt) = &entry.unresolved {
            // An operation whose holder stopped after journaling this attempt: only the
            // retry that resumes that very attempt goes on.
            if held.and_then(|h| h.resume.as_ref()) != Some(attempt) {
                let owner = Owner {
                    provider: attempt.provider.clone(),
                    reference: String::new(),
                    currency: entry.owner.as_ref().and_then(|o| o.currency.clone()),
                };
                return self.unresolved(ctx, &payment, &entry, &owner);
            }
        }
        if payment.operation == Operation::Authorize
            && !update
            && matches!(
                entry.record.state,
                PaymentState::Failed | PaymentState::RequiresAction | PaymentState::Processing
            )
        {
            // Kept with what this attempt records (see `PaymentEntry::confirmed_again_under`).
            if let Some(owner) = entry.owner.as_ref().filter(|o| !o.reference.is_empty()) {
                entry.confirmed_again_under = Some(owner.reference.clone());
            }
        }
        // A provider of the storefront's dialect that knows the payment by this id judges
        // every follow-up itself, a second confirm included: the request goes there unchanged.
        if forwardable(ctx, &entry) {
            if update {
                // Relayed as it is: the provider's answer is not a payment outcome. What the
                // provider accepted is mirrored into payproxy's record, which lists and
                // storefront events are rendered from.
                let answer = self.forward_call(ctx, Some(&entry.record.id)).await;
                let applied = answer.response.status().is_success()
                    && entry
                        .owner
                        .as_ref()
                        .is_some_and(|o| o.provider == answer.provider)
                    && !replayed(answer.response.headers());
                if applied {
                    self.mirror_update(ctx, entry, payment).await;
                }
                return Done::release(answer);
            }
            return self.follow_up(ctx, payment, entry, held).await;
        }
        if resumed_past(resuming, &payment, &entry) {
            return self.replay_moved_on(ctx, entry).await;
        }
        // What reaches a provider from here is what the canonical payment carries: a request
        // carrying more is refused, never dropped unseen.
        // (Not when resuming: the retry goes where its first run may have charged.)
        if let (Some(refusal), false) = (
            &ctx.beyond_canonical,
            payment.operation == Operation::Status || resuming,
        ) {
            return self.refused(ctx, refusal.clone());
        }
        if update {
            return self.update(ctx, entry, payment).await;
        }
        if let Err(refused) = allowed(&entry, &payment) {
            return self.refused(ctx, refused);
        }
        match payment.operation {
            Operation::Authorize => {
                let merged = merge(&entry.record.payment, payment);
                self.charge(ctx, merged, Some(entry), held).await
            }
            // Settled, or its provider has no status query: the record answers.
            Operation::Status if !asks_provider(ctx, &entry) => {
                self.render_record(ctx, &entry.record)
            }
            // Nothing sent, or refused without a reference: nothing at a provider to cancel.
            Operation::Void if entry.owner.is_none() || refused_unnamed(&entry) => {
                self.cancel_unsent(ctx, entry).await
            }
            Operation::Status if entry.owner.is_none() => self.render_record(ctx, &entry.record),
            _ => self.follow_up(ctx, payment, entry, held).await,
        }
    }

    /// Create without confirm: a record only. The answer replays under its key.
    async fn create(&self, ctx: &Ctx<'_>, payment: Payment, held: Option<&Held>) -> Done {
        let id = mint_id(held, &ctx.route.payment_id_prefix);
        let state = if payment.method.is_some() {
            PaymentState::RequiresConfirmation
        } else {
            PaymentState::RequiresPaymentMethod
        };
        let entry = new_entry(ctx, id, payment, state);
        if let Err(e) = self.save(ctx, &entry).await {
            return self.store_failed(ctx, &e);
        }
        self.audit_record(ctx, &entry.record.id, "created");
        self.render_record(ctx, &entry.record)
    }

    /// An update of a payment payproxy holds: applied to its record while nothing has been
    /// sent for it (as Stripe updates an intent before its confirm); after that, only its
    /// metadata and description (what payproxy renders from its record; the provider's copy
    /// keeps what it was sent). The record's next confirm sends what it says then, through
    /// compliance and routing.
    async fn update(&self, ctx: &Ctx<'_>, mut entry: PaymentEntry, payment: Payment) -> Done {
        use PaymentState as S;
        let state = entry.record.state;
        let unsent = entry.owner.is_none()
            && matches!(state, S::RequiresPaymentMethod | S::RequiresConfirmation);
        if !unsent && !annotates_only(&payment) {
            let why = "payproxy updates a payment it holds only before its first confirm, and \
                       after it only its metadata and description";
            return self.refused(ctx, unexpected_state(state, why));
        }
        let payment = updated(&entry.record.payment, payment, !unsent);
        if unsent {
            entry.record.state = match payment.method {
                Some(_) => S::RequiresConfirmation,
                None => S::RequiresPaymentMethod,
            };
        }
        entry.record.payment = payment;
        if let Err(e) = self.save(ctx, &entry).await {
            return self.store_failed(ctx, &e);
        }
        self.audit_record(ctx, &entry.record.id, "updated");
        self.render_record(ctx, &entry.record)
    }

    /// Mirror the metadata and description of an update the payment's owner applied (a
    /// provider of the storefront's dialect that knows the payment by its id, which judged
    /// the request) into payproxy's record, which lists and storefront events are rendered
    /// from. Nothing else is: the amount, method and the rest stay what the payment was
    /// charged with (a retrieve asks the owner), and the state waits for the owner's next
    /// answer about the payment. A failure is logged: the update itself happened there.
    async fn mirror_update(&self, ctx: &Ctx<'_>, mut entry: PaymentEntry, payment: Payment) {
        if ctx.beyond_canonical.is_some() {
            // Parsed as it is (it carries more than payproxy keeps), the update named only
            // its payment: there is nothing to mirror.
            tracing::info!(route = %ctx.route.name, payment = %entry.record.id, "update applied by its provider; payproxy's record keeps what it had (the update carries more than payproxy keeps)");
            return;
        }
        let mut annotations = crate::plugin::blank_payment(Operation::Authorize);
        annotations.metadata = payment.metadata;
        annotations.description = payment.description;
        entry.record.payment = updated(&entry.record.payment, annotations, true);
        if let Err(e) = self.save(ctx, &entry).await {
            tracing::warn!(route = %ctx.route.name, payment = %entry.record.id, error = %e, "update accepted by its provider; payproxy's record could not be written");
            return;
        }
        ctx.note(|d| {
            d.payment.get_or_insert_with(|| entry.record.id.clone());
        });
    }

    /// Cancel a payment nothing was sent for yet: only the record changes.
    async fn cancel_unsent(&self, ctx: &Ctx<'_>, mut entry: PaymentEntry) -> Done {
        entry.record.state = PaymentState::Canceled;
        if let Err(e) = self.save(ctx, &entry).await {
            return self.store_failed(ctx, &e);
        }
        self.audit_record(ctx, &entry.record.id, "canceled");
        self.render_record(ctx, &entry.record)
    }

    /// The answer to a resumed operation whose payment moved on since (see
    /// [`resumed_past`]): its record. A provider's word (a notification applied while this
    /// operation's holder was gone, which marked the payment unresolved when it took the
    /// lock over) settled what the operation's attempt did, so this retry, the one the mark
    /// waits for, clears it: otherwise the payment would answer "processing" and refuse
    /// every later operation for good. Only when that word is the attempt's provider's,
    /// about the payment it holds by reference: a confirm's payment may have moved on by
    /// another provider's late success, and then the attempt's own provider may have charged
    /// too, which the mark keeps guarding.
    async fn replay_moved_on(&self, ctx: &Ctx<'_>, mut entry: PaymentEntry) -> Done {
        use PaymentState as S;
        let settled = matches!(
            entry.record.state,
            S::Succeeded | S::RequiresCapture | S::Canceled
        );
        let its_provider = match (&entry.owner, &entry.unresolved) {
            (Some(owner), Some(attempt)) => {
                owner.provider == attempt.provider && !owner.reference.is_empty()
            }
            _ => false,
        };
        if settled && its_provider && entry.unresolved.take().is_some() {
            if let Err(e) = self.save(ctx, &entry).await {
                return self.store_failed(ctx, &e);
            }
        }
        self.render_record(ctx, &entry.record)
    }

    /// A payment whose outcome is unknown and has no provider reference yet: a retrieve says
    /// it is processing; anything else waits for the retry that resolves it.
    fn unresolved(
        &self,
        ctx: &Ctx<'_>,
        payment: &Payment,
        entry: &PaymentEntry,
        owner: &Owner,
    ) -> Done {
        if payment.operation == Operation::Status {
            ctx.note(|d| d.provider = Some(owner.provider.clone()));
            self.audit_record(ctx, &entry.record.id, "pending");
            let pending = Outcome {
                status: OutcomeStatus::Pending,
                provider_reference: None,
                amount: entry.record.payment.amount.clone(),
            };
            return match self.render_outcome(
                ctx,
                &owner.provider,
                &entry.record.payment,
                &pending,
                &entry.record.id,
                &[],
            ) {
                Ok(response) => Done::release(answer(ctx.route, &owner.provider, response)),
                Err(answer) => Done::release(answer),
            };
        }
        self.refused(ctx, still_processing())
    }

    /// Write a payment record with the storefront events of its change, fenced by the
    /// claim this request holds: the payment's lock, else its idempotency claim (a request
    /// without a key holds none, and nobody can take its payment over). A request whose
    /// claim was taken over while it stalled gets [`StoreError::Fenced`] and writes nothing.
    /// The change is no attempt's outcome ([`Source::Other`]).
    pub(super) async fn save(&self, ctx: &Ctx<'_>, entry: &PaymentEntry) -> Result<(), StoreError> {
        self.save_owned(ctx, entry.clone(), Source::Other).await
    }

    /// [`Payments::save`] of a record the caller gives up (no copy of it is made), whose
    /// change `source` recorded.
    pub(super) async fn save_owned(
        &self,
        ctx: &Ctx<'_>,
        entry: PaymentEntry,
        source: Source,
    ) -> Result<(), StoreError> {
        self.save_held_back(ctx).await?;
        let write = self.record_write(ctx, entry, source).await?;
        self.state(move |s| write.apply(s)).await
    }

    /// Write the record write held back for the settle ([`Payments::record_last`]) now,
    /// before a later one: writes reach the store in the order they were made.
    pub(super) async fn save_held_back(&self, ctx: &Ctx<'_>) -> Result<(), StoreError> {
        match ctx.take_held_back() {
            Some(write) => self.state(move |s| write.apply(s)).await,
            None => Ok(()),
        }
    }

    /// The write [`Payments::save`] makes: the record, the events of its change (which
    /// `source` recorded), and the claim fencing it.
    pub(super) async fn record_write(
        &self,
        ctx: &Ctx<'_>,
        entry: PaymentEntry,
        source: Source,
    ) -> Result<RecordWrite, StoreError> {
        let lock = crate::store::payment_lock_key(&entry.record.id);
        let fence = if ctx.lock.get() == Some(&lock) {
            Some((lock, true))
        } else {
            ctx.claim.get().map(|key| (key.clone(), false))
        };
        let events = self.events_of(ctx, &entry, source).await?;
        Ok(RecordWrite {
            entry,
            events,
            fence,
        })
    }
}

/// A payment record write ready for the store ([`Payments::save`]).
pub(super) struct RecordWrite {
    entry: PaymentEntry,
    events: Vec<crate::store::NewEvent>,
    /// The claim fencing the write: its key, and whether it is the payment's lock.
    fence: Option<(String, bool)>,
}

impl RecordWrite {
    pub(super) fn apply(&self, s: &dyn Store) -> Result<(), StoreError> {
        let (entry, events) = (&self.entry, &self.events);
        match &self.fence {
            Some((key, true)) => s.put_payment_fenced(Fence::Lock(key), entry, events),
            Some((key, false)) => s.put_payment_fenced(Fence::Claim(key), entry, events),
            None => s.put_payment(entry, events),
        }
    }

    pub(super) fn payment_id(&self) -> &str {
        &self.entry.record.id
    }
}

/// A payment's operation lock, held by this request ([`crate::store::payment_lock_key`]).
pub(super) struct OpLock {
    key: String,
    /// Marks the lock as held by a request of this process (a slow operation is never taken
    /// over by another request here).
    _live: Live,
}

/// How handing a lock back went.
pub(super) enum Unlocked {
    Released,
    /// Another request took it over meanwhile.
    Lost,
    /// The store could not say.
    Failed,
}

/// Why an operation lock was not taken.
pub(super) enum Locked {
    /// Another operation holds it (on this instance, or on another with a live lease).
    Busy,
    /// The store could not say.
    Failed(StoreError),
}

impl Payments {
    /// Take payment `id`'s operation lock. A lock whose holder stopped (killed, stalled past
    /// its lease, past its deadline) is taken over; when that holder had journaled an
    /// attempt (it may have reached the provider) and this request does not resume that
    /// very attempt, the payment is marked unresolved first, so no one charges it elsewhere
    /// before that attempt's retry resolves it.
    pub(super) async fn lock(
        &self,
        ctx: &Ctx<'_>,
        id: &str,
        held: Option<&Held>,
    ) -> Result<OpLock, Locked> {
        let key = crate::store::payment_lock_key(id);
        if self.live.contains(&key) {
            return Err(Locked::Busy);
        }
        let stale = ctx.route.failover.deadline_ms.saturating_mul(3);
        let k = key.clone();
        let begun = self
            .state(move |s| s.begin(&k, "operation", now_ms(), stale))
            .await
            .map_err(Locked::Failed)?;
        let journaled = match begun {
            Begin::Started => None,
            // Handed back parked (nothing parks a lock today; a parked one has no holder
            // that stopped mid-attempt).
            Begin::Resume {
                reason: Takeover::Parked,
                ..
            } => None,
            Begin::Resume { attempt, .. } => attempt,
            Begin::InFlight => return Err(Locked::Busy),
            // Lock records are never finished and always have the same fingerprint.
            Begin::Replay(_) | Begin::Mismatch => {
                return Err(Locked::Failed(StoreError::Task(format!(
                    "payment {id}: its lock record is not a lock"
                ))))
            }
        };
        let lock = OpLock {
            _live: self.live.hold(&key),
            key,
        };
        let _ = ctx.lock.set(lock.key.clone());
        if let Some(attempt) = journaled {
            if held.and_then(|h| h.resume.as_ref()) != Some(&attempt) {
                tracing::warn!(route = %ctx.route.name, provider = %attempt.provider, "took over a payment's lock from an operation that stopped after journaling an attempt; the payment waits for that request's retry");
                if let Err(e) = self.mark_unresolved(ctx, id, attempt).await {
                    // Not handed back: the lock keeps the attempt, lapses, and whoever
                    // takes it next marks the payment.
                    return Err(Locked::Failed(e));
                }
            }
        }
        Ok(lock)
    }

    /// Record that an attempt of payment `id` may have reached its provider.
    async fn mark_unresolved(
        &self,
        ctx: &Ctx<'_>,
        id: &str,
        attempt: Attempt,
    ) -> Result<(), StoreError> {
        let Some(mut entry) = self.own_record(ctx, id).await? else {
            return Ok(());
        };
        if entry.unresolved.is_some() {
            return Ok(());
        }
        entry.unresolved = Some(attempt);
        self.save(ctx, &entry).await
    }

    /// Hand a lock back.
    pub(super) async fn unlock(&self, lock: OpLock) -> Unlocked {
        let key = lock.key.clone();
        let done = self.state(move |s| s.release(&key)).await;
        drop(lock);
        match done {
            Ok(()) => Unlocked::Released,
            Err(StoreError::Fenced { .. }) => Unlocked::Lost,
            Err(e) => {
                tracing::error!(error = %e, "could not hand back a payment's lock");
                Unlocked::Failed
            }
        }
    }

    /// This route's record of payment `id`; another route's payment is not its to touch.
    pub(super) async fn own_record(
        &self,
        ctx: &Ctx<'_>,
        id: &str,
    ) -> Result<Option<PaymentEntry>, StoreError> {
        let key = id.to_string();
        let found = self.state(move |s| s.payment(&key)).await?;
        Ok(found.filter(|entry| entry.route == ctx.route.name))
    }

    fn lock_timeout(&self, ctx: &Ctx<'_>) -> Done {
        self.refused(
            ctx,
            refusal(
                RefusalKind::InvalidRequest(None),
                409,
                "lock_timeout",
                "another request is operating on this payment right now; retry shortly",
            ),
        )
    }
}

/// A new record for `payment`, created now.
pub(super) fn new_entry(
    ctx: &Ctx<'_>,
    id: String,
    payment: Payment,
    state: PaymentState,
) -> PaymentEntry {
    let created_ms = creation_ms();
    PaymentEntry::new(
        &ctx.route.name,
        created_ms,
        PaymentRecord {
            id,
            payment,
            state,
            created: i64::try_from(created_ms / 1000).unwrap_or(i64::MAX),
            amount_captured: 0,
            amount_refunded: 0,
            last_outcome: None,
        },
    )
}

/// Now in Unix milliseconds, strictly increasing within the process, so payments created in
/// the same millisecond still list in the order they were made.
fn creation_ms() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = now_ms();
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// Whether a provider's answer is its replay of an earlier one (Stripe's
/// `Idempotent-Replayed: true`): a retried update that changed nothing this time.
fn replayed(headers: &http::HeaderMap) -> bool {
    headers
        .get(super::wire::REPLAYED_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// `recorded` with `update` applied. An amount alone keeps the payment's currency; the id
/// and idempotency key stay; a metadata key set to an empty value is removed, as on Stripe.
/// Once `sent`, the merchant reference stays too: it keys the provider's idempotency keys
/// and matches its notifications.
fn updated(recorded: &Payment, mut update: Payment, sent: bool) -> Payment {
    if let (Some(new), Some(old)) = (update.amount.as_mut(), recorded.amount.as_ref()) {
        if new.currency.is_empty() {
            new.currency.clone_from(&old.currency);
        }
    }
    let mut updated = merge(recorded, update);
    updated.id.clone_from(&recorded.id);
    updated
        .idempotency_key
        .clone_from(&recorded.idempotency_key);
    if sent {
        updated
            .merchant_reference
            .clone_from(&recorded.merchant_reference);
    }
    updated.metadata.retain(|(_, value)| !value.is_empty());
    updated
}

/// Whether an update carries nothing but metadata and a description.
fn annotates_only(update: &Payment) -> bool {
    let customer = &update.customer;
    update.amount.is_none()
        && update.country.is_none()
        && update.method.is_none()
        && update.installments.is_none()
        && customer.id.is_none()
        && customer.email.is_none()
        && customer.phone.is_none()
        && !customer.phone_verified
        && !update.strong_auth.authenticated
        && update.strong_auth.exemption_requested.is_none()
        && update.return_url.is_none()
        && !update.manual_capture
}

/// Whether the storefront's request can go unchanged to the payment's owner: it speaks the
/// storefront's dialect and knows the payment by the id the storefront uses.
pub(super) fn forwardable(ctx: &Ctx<'_>, entry: &PaymentEntry) -> bool {
    let Some(owner) = &entry.owner else {
        return false;
    };
    owner.reference == entry.record.id
        && super::charge::speaks(ctx.snapshot, &owner.provider, ctx.ingress_name)
}

/// The owner of a payment whose attempt's outcome is not known and that has no provider
/// reference yet (ambiguous, or pending without one): only the retry resuming that attempt
/// goes on. A payment refused without a reference (GrabPay names no transaction for a
/// refusal at init) has its outcome: it is failed, read from the record and confirmed again
/// like any failed payment.
fn awaiting_reference(entry: &PaymentEntry) -> Option<&Owner> {
    entry
        .owner
        .as_ref()
        .filter(|o| o.reference.is_empty() && entry.record.state != PaymentState::Failed)
}

/// Whether `entry` failed at a provider that named no payment for it.
fn refused_unnamed(entry: &PaymentEntry) -> bool {
    entry.record.state == PaymentState::Failed
        && entry.owner.as_ref().is_some_and(|o| o.reference.is_empty())
}

/// Whether `provider`'s dialect can be asked for a payment's status.
pub(super) fn status_query(ctx: &Ctx<'_>, provider: &str) -> bool {
    ctx.snapshot
        .providers
        .get(provider)
        .and_then(|p| p.dialect.as_ref())
        .is_some_and(|(_, d)| d.capabilities().status_query)
}

/// Whether a retrieve of `entry` asks its provider (and records what it learns): see the
/// arms of `operate_locked`.
fn asks_provider(ctx: &Ctx<'_>, entry: &PaymentEntry) -> bool {
    let Some(owner) = &entry.owner else {
        return false;
    };
    if owner.reference.is_empty() || entry.unresolved.is_some() {
        return false;
    }
    // A provider without a status query (Adyen: outcomes arrive by notification) is not
    // asked: the record answers.
    forwardable(ctx, entry) || (status_query(ctx, &owner.provider) && !settled(entry))
}

/// Whether a resumed confirm finds its payment moved on since: its first run recorded the
/// outcome, then lost its idempotency key before finishing it (it stalled past its lease
/// after the record write). That outcome is the answer, replayed under the key, rather than
/// a refusal of a second confirm that would leave the key without its answer.
///
/// A resumed capture finds its payment captured, a resumed cancel finds it canceled, when
/// the provider's notification of that attempt was applied while its holder was gone.
fn resumed_past(resuming: bool, payment: &Payment, entry: &PaymentEntry) -> bool {
    use PaymentState as S;
    let state = entry.record.state;
    resuming
        && match payment.operation {
            Operation::Authorize => !matches!(
                state,
                S::RequiresPaymentMethod | S::RequiresConfirmation | S::Failed
            ),
            Operation::Capture => state == S::Succeeded,
            Operation::Void => state == S::Canceled,
            _ => false,
        }
}

/// A state no provider will change by itself.
fn settled(entry: &PaymentEntry) -> bool {
    matches!(
        entry.record.state,
        PaymentState::Succeeded
            | PaymentState::Canceled
            | PaymentState::RequiresPaymentMethod
            | PaymentState::RequiresConfirmation
    )
}

/// 400 `unexpected_state`: "this payment is <state>; <why>".
fn unexpected_state(state: PaymentState, why: &str) -> Refusal {
    let message = format!(
        "this payment is {}; {why}",
        state_name(state).replace('_', " ")
    );
    refusal(
        RefusalKind::InvalidRequest(None),
        400,
        "unexpected_state",
        &message,
    )
}

/// Whether `payment`'s operation may run on the payment in its recorded state. Payments
/// owned by a provider of the storefront's own dialect are that provider's to judge (the
/// request goes there unchanged), so only the others are checked here.
pub(super) fn allowed(entry: &PaymentEntry, payment: &Payment) -> Result<(), Refusal> {
    use PaymentState as S;
    let owned_same_dialect = entry
        .owner
        .as_ref()
        .is_some_and(|o| o.reference == entry.record.id);
    if owned_same_dialect {
        return Ok(());
    }
    let state = entry.record.state;
    let unexpected = |what: &str| unexpected_state(state, what);
    match payment.operation {
        Operation::Status => Ok(()),
        Operation::Authorize => match state {
            S::RequiresPaymentMethod | S::RequiresConfirmation | S::Failed => Ok(()),
            _ => Err(unexpected("it cannot be confirmed again")),
        },
        Operation::Capture => match state {
            S::RequiresCapture => {
                let authorized = entry.record.payment.amount.as_ref().map_or(0, |m| m.minor);
                match payment.amount.as_ref() {
                    Some(m) if m.minor > authorized => Err(too_large("amount_to_capture")),
                    _ => Ok(()),
                }
            }
            _ => Err(unexpected("only an authorized payment can be captured")),
        },
        Operation::Void => match state {
            S::RequiresPaymentMethod
            | S::RequiresConfirmation
            | S::RequiresAction
            | S::RequiresCapture
            | S::Failed => Ok(()),
            _ => Err(unexpected("it cannot be canceled")),
        },
        Operation::Refund => {
            if state != S::Succeeded {
                return Err(unexpected("only a paid payment can be refunded"));
            }
            let left = entry.record.amount_captured - entry.record.amount_refunded;
            if left <= 0 {
                return Err(refusal(
                    RefusalKind::InvalidRequest(None),
                    400,
                    "already_refunded",
                    "this payment has already been refunded in full",
                ));
            }
            match payment.amount.as_ref() {
                Some(m) if m.minor > left => Err(too_large("amount")),
                _ => Ok(()),
            }
        }
    }
}

fn too_large(param: &str) -> Refusal {
    refusal(
        RefusalKind::InvalidRequest(Some(param.to_string())),
        400,
        "amount_too_large",
        "the amount is greater than what remains on this payment",
    )
}

/// Stripe-style state name, for messages and the audit line.
pub(super) fn state_name(state: PaymentState) -> &'static str {
    match state {
        PaymentState::RequiresPaymentMethod => "requires_payment_method",
        PaymentState::RequiresConfirmation => "requires_confirmation",
        PaymentState::RequiresAction => "requires_action",
        PaymentState::Processing => "processing",
        PaymentState::RequiresCapture => "requires_capture",
        PaymentState::Succeeded => "succeeded",
        PaymentState::Canceled => "canceled",
        PaymentState::Failed => "failed",
    }
}

/// A confirm completed from the record: what the confirm says wins, the rest is the
/// payment as created. The operation, id and idempotency key are the confirm's.
pub(super) fn merge(created: &Payment, confirm: Payment) -> Payment {
    let mut merged = created.clone();
    merged.operation = confirm.operation;
    merged.id = confirm.id;
    merged.idempotency_key = confirm.idempotency_key;
    if confirm.amount.is_some() {
        merged.amount = confirm.amount;
    }
    if confirm.country.is_some() {
        merged.country = confirm.country;
    }
    if confirm.method.is_some() {
        merged.method = confirm.method;
    }
    if confirm.installments.is_some() {
        merged.installments = confirm.installments;
    }
    let c = confirm.customer;
    let customer = &mut merged.customer;
    customer.id = c.id.or(customer.id.take());
    customer.email = c.email.or(customer.email.take());
    customer.phone = c.phone.or(customer.phone.take());
    customer.phone_verified |= c.phone_verified;
    if confirm.merchant_reference.is_some() {
        merged.merchant_reference = confirm.merchant_reference;
    }
    for (key, value) in confirm.metadata {
        match merged.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => merged.metadata.push((key, value)),
        }
    }
    merged.strong_auth.authenticated |= confirm.strong_auth.authenticated;
    if confirm.strong_auth.exemption_requested.is_some() {
        merged.strong_auth.exemption_requested = confirm.strong_auth.exemption_requested;
    }
    if confirm.return_url.is_some() {
        merged.return_url = confirm.return_url;
    }
    merged.manual_capture |= confirm.manual_capture;
    if confirm.description.is_some() {
        merged.description = confirm.description;
    }
    merged
}

/// A follow-up completed from the record: the currency the storefront's protocol leaves out
/// (Stripe captures and refunds), and the provider's reference.
pub(super) fn complete_follow_up(entry: &PaymentEntry, payment: &mut Payment) {
    if let Some(owner) = &entry.owner {
        payment.provider_reference = Some(owner.reference.clone());
    }
    let currency = entry
        .record
        .payment
        .amount
        .as_ref()
        .map(|m| m.currency.clone());
    if let (Some(amount), Some(currency)) = (payment.amount.as_mut(), currency) {
        if amount.currency.is_empty() {
            amount.currency = currency;
        }
    }
    if payment.operation == Operation::Status || payment.operation == Operation::Void {
        payment.amount = payment
            .amount
            .take()
            .or(entry.record.payment.amount.clone());
    }
    payment.manual_capture = entry.record.payment.manual_capture;
    if payment.method.is_none() {
        payment.method = entry.record.payment.method.clone();
    }
    if payment.metadata.is_empty() && payment.operation != Operation::Refund {
        payment.metadata = entry.record.payment.metadata.clone();
    }
}

/// The record after an outcome of `payment`'s operation. Outcomes that say nothing
/// happened leave it as it was.
pub(super) fn advance(entry: &mut PaymentEntry, payment: &Payment, outcome: &Outcome) {
    use PaymentState as S;
    let record = &mut entry.record;
    let amount = |fallback: Option<&crate::plugin::types::Money>| {
        outcome
            .amount
            .as_ref()
            .filter(|m| m.minor > 0)
            .or(fallback)
            .map_or(0, |m| m.minor)
    };
    let next = match (&outcome.status, payment.operation) {
        (OutcomeStatus::Error(f), _) if f.class != ErrorClass::Ambiguous => None,
        (OutcomeStatus::Error(_), Operation::Authorize) => Some(S::Processing),
        (OutcomeStatus::Error(_), _) => None,
        (OutcomeStatus::Declined(_), Operation::Authorize) => Some(S::Failed),
        (OutcomeStatus::Declined(d), Operation::Status) if d.provider_code == "canceled" => {
            Some(S::Canceled)
        }
        (OutcomeStatus::Declined(_), Operation::Status) => Some(S::Failed),
        (OutcomeStatus::Declined(_), _) => None,
        (OutcomeStatus::RequiresAction(_), Operation::Authorize | Operation::Status) => {
            Some(S::RequiresAction)
        }
        (OutcomeStatus::RequiresAction(_), _) => None,
        (OutcomeStatus::Approved | OutcomeStatus::Pending, Operation::Refund) => {
            // A pending refund is committed money: count it, so nothing refunds it twice.
            let left = record.amount_captured - record.amount_refunded;
            let refunded = payment
                .amount
                .as_ref()
                .map_or(left, |m| m.minor)
                .clamp(0, left.max(0));
            record.amount_refunded += refunded;
            if refunded > 0 {
                // Until the provider's notification of it arrives (`notices::forward`).
                entry.unconfirmed_refunds.push(refunded);
            }
            None
        }
        (OutcomeStatus::Approved | OutcomeStatus::Pending, Operation::Capture) => {
            // Captured (or being captured): the amount is taken, a second capture is not.
            record.amount_captured =
                amount(payment.amount.as_ref().or(record.payment.amount.as_ref()));
            Some(match outcome.status {
                OutcomeStatus::Approved => S::Succeeded,
                _ => S::Processing,
            })
        }
        (OutcomeStatus::Pending, _) => Some(S::Processing),
        (OutcomeStatus::Approved, Operation::Authorize | Operation::Status) => {
            if record.amount_captured > 0 {
                // A capture was taken already: paid, whatever was captured stays.
                Some(S::Succeeded)
            } else if payment.manual_capture {
                Some(S::RequiresCapture)
            } else {
                record.amount_captured = amount(record.payment.amount.as_ref());
                Some(S::Succeeded)
            }
        }
        (OutcomeStatus::Approved, Operation::Void) => Some(S::Canceled),
    };
    if let Some(state) = next {
        record.state = state;
    }
    if matches!(payment.operation, Operation::Authorize | Operation::Status)
        && !matches!(&outcome.status, OutcomeStatus::Error(f) if f.class != ErrorClass::Ambiguous)
    {
        record.last_outcome = Some(outcome.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::types::{Card, Decline, DeclineKind, Money, PaymentMethod};

    fn payment(operation: Operation) -> Payment {
        crate::plugin::blank_payment(operation)
    }

    fn eur(minor: i64) -> Option<Money> {
        Some(Money {
            minor,
            currency: "EUR".into(),
        })
    }

    fn entry(state: PaymentState, owner: Option<(&str, &str)>) -> PaymentEntry {
        let mut created = payment(Operation::Authorize);
        created.amount = eur(1000);
        PaymentEntry {
            route: "r".into(),
            created_ms: 0,
            owner: owner.map(|(provider, reference)| Owner {
                provider: provider.into(),
                reference: reference.into(),
                currency: Some("EUR".into()),
            }),
            record: PaymentRecord {
                id: "pi_1".into(),
                payment: created,
                state,
                created: 0,
                amount_captured: 0,
                amount_refunded: 0,
                last_outcome: None,
            },
            card: None,
            unresolved: None,
            notices: Vec::new(),
            passed_over: Vec::new(),
            late_charges: Vec::new(),
            unconfirmed_refunds: Vec::new(),
            confirmed_again_under: None,
        }
    }

    fn outcome(status: OutcomeStatus) -> Outcome {
        Outcome {
            status,
            provider_reference: Some("psp_1".into()),
            amount: None,
        }
    }

    #[test]
    fn a_resumed_confirm_of_a_payment_that_moved_on_replays_its_record() {
        use PaymentState as S;
        let confirm = payment(Operation::Authorize);
        let owned = Some(("adyen", "psp_1"));
        for state in [
            S::Succeeded,
            S::RequiresCapture,
            S::RequiresAction,
            S::Processing,
        ] {
            assert!(
                resumed_past(true, &confirm, &entry(state, owned)),
                "{state:?}"
            );
            // Not resuming: a second confirm, judged by `allowed` as before.
            assert!(
                !resumed_past(false, &confirm, &entry(state, owned)),
                "{state:?}"
            );
        }
        // Still chargeable: the resumed confirm goes on (same provider, same key).
        for state in [S::RequiresConfirmation, S::RequiresPaymentMethod, S::Failed] {
            assert!(
                !resumed_past(true, &confirm, &entry(state, owned)),
                "{state:?}"
            );
        }
        // A capture finds its payment captured, a cancel finds it canceled; anything else
        // (still to capture, a refund) goes on and is judged by `allowed`.
        let (capture, void, refund) = (
            payment(Operation::Capture),
            payment(Operation::Void),
            payment(Operation::Refund),
        );
        assert!(resumed_past(true, &capture, &entry(S::Succeeded, owned)));
        assert!(!resumed_past(false, &capture, &entry(S::Succeeded, owned)));
        assert!(!resumed_past(
            true,
            &capture,
            &entry(S::RequiresCapture, owned)
        ));
        assert!(resumed_past(true, &void, &entry(S::Canceled, owned)));
        assert!(!resumed_past(
            true,
            &void,
            &entry(S::RequiresCapture, owned)
        ));
        assert!(!resumed_past(true, &refund, &entry(S::Succeeded, owned)));
    }

    #[test]
    fn an_empty_confirm_charges_the_payment_as_created() {
        let mut created = payment(Operation::Authorize);
        created.amount = eur(1500);
        created.method = Some(PaymentMethod::Card(Card {
            token: "pm_1".into(),
            bin: None,
            last4: None,
            network: None,
            issuer_country: None,
        }));
        created.metadata = vec![("order".into(), "A1".into())];
        created.customer.id = Some("cus_1".into());
        let mut confirm = payment(Operation::Authorize);
        confirm.id = Some("pi_1".into());
        confirm.idempotency_key = Some("k2".into());
        confirm.metadata = vec![("order".into(), "A2".into()), ("x".into(), "y".into())];
        let merged = merge(&created, confirm);
        assert_eq!(merged.amount, eur(1500));
        assert_eq!(merged.method, created.method);
        assert_eq!(merged.customer.id.as_deref(), Some("cus_1"));
        assert_eq!(merged.id.as_deref(), Some("pi_1"));
        assert_eq!(merged.idempotency_key.as_deref(), Some("k2"));
        assert_eq!(
            merged.metadata,
            vec![("order".into(), "A2".into()), ("x".into(), "y".into())]
        );
    }

    #[test]
    fn states_allow_what_stripe_allows() {
        use PaymentState as S;
        let ok = |state, op: Operation, amount: Option<Money>| {
            let mut p = payment(op);
            p.amount = amount;
            allowed(&entry(state, Some(("adyen", "psp_1"))), &p).map_err(|r| r.code)
        };
        assert_eq!(ok(S::RequiresCapture, Operation::Capture, None), Ok(()));
        assert_eq!(
            ok(S::Succeeded, Operation::Capture, None),
            Err("unexpected_state".into()),
            "capture twice"
        );
        assert_eq!(
            ok(S::RequiresCapture, Operation::Capture, eur(1001)),
            Err("amount_too_large".into())
        );
        assert_eq!(
            ok(S::RequiresCapture, Operation::Refund, None),
            Err("unexpected_state".into())
        );
        assert_eq!(
            ok(S::Succeeded, Operation::Void, None),
            Err("unexpected_state".into())
        );
        assert_eq!(
            ok(S::Succeeded, Operation::Authorize, None),
            Err("unexpected_state".into())
        );
        assert_eq!(ok(S::Failed, Operation::Authorize, None), Ok(()));
        // Same-dialect owners judge for themselves: the request goes there unchanged.
        let mut p = payment(Operation::Capture);
        p.amount = eur(5);
        assert_eq!(
            allowed(&entry(S::Succeeded, Some(("ls", "pi_1"))), &p),
            Ok(())
        );
    }

    #[test]
    fn refunds_never_exceed_what_was_captured() {
        let mut e = entry(PaymentState::Succeeded, Some(("adyen", "psp_1")));
        e.record.amount_captured = 1000;
        e.record.amount_refunded = 600;
        let mut refund = payment(Operation::Refund);
        refund.amount = eur(401);
        assert_eq!(
            allowed(&e, &refund).map_err(|r| r.code),
            Err("amount_too_large".into())
        );
        refund.amount = eur(400);
        assert_eq!(allowed(&e, &refund), Ok(()));
        advance(&mut e, &refund, &outcome(OutcomeStatus::Approved));
        assert_eq!(e.record.amount_refunded, 1000);
        assert_eq!(
            allowed(&e, &payment(Operation::Refund)).map_err(|r| r.code),
            Err("already_refunded".into())
        );
    }

    #[test]
    fn outcomes_move_the_record_forward() {
        use PaymentState as S;
        let mut e = entry(S::RequiresConfirmation, None);
        let mut confirm = payment(Operation::Authorize);
        confirm.manual_capture = true;
        // Nothing happened: the record stays as it was.
        let not_sent = outcome(OutcomeStatus::Error(Failure {
            class: ErrorClass::NotSent,
            code: "provider_unavailable".into(),
            provider_code: String::new(),
            message: String::new(),
        }));
        advance(&mut e, &confirm, &not_sent);
        assert_eq!(e.record.state, S::RequiresConfirmation);
        assert_eq!(e.record.last_outcome, None);
        advance(&mut e, &confirm, &outcome(OutcomeStatus::Approved));
        assert_eq!(
            (e.record.state, e.record.amount_captured),
            (S::RequiresCapture, 0)
        );
        let mut capture = payment(Operation::Capture);
        capture.amount = eur(700);
        advance(&mut e, &capture, &outcome(OutcomeStatus::Approved));
        assert_eq!(
            (e.record.state, e.record.amount_captured),
            (S::Succeeded, 700)
        );
        let declined = outcome(OutcomeStatus::Declined(Decline {
            code: "insufficient_funds".into(),
            provider_code: "51".into(),
            kind: DeclineKind::Hard,
            message: String::new(),
        }));
        let mut fresh = entry(S::RequiresConfirmation, None);
        advance(&mut fresh, &payment(Operation::Authorize), &declined);
        assert_eq!(fresh.record.state, S::Failed);
        assert!(fresh.record.last_outcome.is_some());
    }

    #[test]
    fn follow_ups_get_the_currency_and_reference() {
        let e = entry(PaymentState::RequiresCapture, Some(("adyen", "psp_9")));
        let mut capture = payment(Operation::Capture);
        capture.amount = Some(Money {
            minor: 5,
            currency: String::new(),
        });
        complete_follow_up(&e, &mut capture);
        assert_eq!(capture.amount, eur(5));
        assert_eq!(capture.provider_reference.as_deref(), Some("psp_9"));
    }
}
