//! Provider notifications in (`POST /webhooks/{provider}` on a storefront listener): the
//! provider's dialect verifies the request with that provider's credentials and decodes it
//! (`decode-webhook`); each notification is applied to the payment the provider owns under
//! its reference, as a state machine:
//!
//! - **once**: a notification id applied to a payment is kept in its record, so a
//!   redelivery (or a replayed request) changes nothing;
//! - **forward only**: `requires_action → processing → requires_capture → succeeded |
//!   failed | canceled`; a late `pending` after `succeeded` changes nothing; a refund counts
//!   only on a paid payment and never beyond what was captured;
//! - **early events held**: a notification for a payment payproxy does not know yet (the
//!   provider notified before its answer to the payment was recorded) is kept in the store
//!   and applied when the payment appears, for at most `state.notice_hold_ms`; then it is
//!   reported (a warning and `payproxy_webhook_notifications_total{result="expired"}`).
//!
//! - **late charges voided**: a charge reported by a provider that had answered a confirm
//!   of the payment "not processed" (payproxy then completed it elsewhere, or failed it) is
//!   voided at that provider, else refunded, through its dialect; the record keeps it
//!   (`late_charges`), `payproxy_late_charges_total` counts it, and the storefront gets no
//!   success for it (the payment's state does not change).
//!
//! A change is written like any other: under the payment's lock, fenced, with the
//! storefront events of the change in the same transaction. The provider gets its expected
//! answer only once every notification of the request is applied or durably held; if the
//! store fails it gets a 503 and redelivers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::watch;

use super::attempt::Attempted;
use super::records::{advance, Locked};
use super::*;
use crate::plugin::storefront::PaymentState;
use crate::plugin::Notification;
use crate::reload::Reloader;
use crate::store::{notices, HeldNotice, LateCharge, PaymentEntry, NOTICES_KEPT};

/// How often the held notifications are looked at (each is tried on its own backoff).
const RETRY_HELD: Duration = Duration::from_millis(250);
/// The longest wait between two tries of one held notification.
const MAX_HELD_WAIT: Duration = Duration::from_secs(5);
/// Held notifications one pass reads at most.
const HELD_BATCH: usize = 500;
/// The longest a decline's check with its provider may hold the payment's lock.
const CHECK_WITHIN: Duration = Duration::from_secs(5);
/// Largest notification request body read.
const MAX_WEBHOOK_BODY: u64 = 1 << 20;

/// What became of one notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// The payment moved (or its refunds grew).
    Applied,
    /// This notification was applied before.
    Duplicate,
    /// The payment had moved on already; nothing changed.
    Stale,
    /// Its payment is not known yet, busy, or not yet where the notification refers to:
    /// kept, applied later.
    Held,
    /// No reference: nothing to apply it to.
    Unmatched,
    /// A late charge at a passed-over provider, voided or refunded (or left for an
    /// operator when neither worked).
    LateCharge,
}

/// Which of a payment's providers a notification comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum From {
    /// The provider that owns the payment.
    Owner,
    /// A provider the payment was passed over for.
    PassedOver,
    /// A late charge payproxy voided or refunded: its notifications (the undo's own among
    /// them) change nothing.
    Undone,
}

impl Fate {
    fn label(self) -> &'static str {
        match self {
            Fate::Applied => "applied",
            Fate::Duplicate => "duplicate",
            Fate::Stale => "stale",
            Fate::Held => "held",
            Fate::Unmatched => "unmatched",
            Fate::LateCharge => "late_charge",
        }
    }
}

impl Payments {
    /// Answer a provider's notification request for `provider`.
    pub async fn webhook(
        &self,
        snapshot: &Arc<Snapshot>,
        provider: &str,
        parts: http::request::Parts,
        incoming: hyper::body::Incoming,
        deadline: Instant,
    ) -> Response<Full<Bytes>> {
        let Some((entry, dialect)) = snapshot
            .providers
            .get(provider)
            .and_then(|e| e.dialect.as_ref().map(|(_, d)| (e, d.clone())))
        else {
            return plain(
                StatusCode::NOT_FOUND,
                "unknown_provider",
                "No such provider.",
            );
        };
        let limit = snapshot.config.limits.max_body_bytes.min(MAX_WEBHOOK_BODY);
        let read = Limited::new(incoming, limit as usize).collect();
        let body = match tokio::time::timeout_at(deadline.into(), read).await {
            Ok(Ok(body)) => body.to_bytes(),
            Ok(Err(_)) | Err(_) => {
                self.webhook_result(provider, "rejected");
                return plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "The notification body is too large, cut or too slow.",
                );
            }
        };
        let context = Context {
            provider: provider.to_string(),
            credentials: entry.credentials.clone(),
            now_ms: now_ms(),
            idempotency_key: String::new(),
        };
        let view = notification_view(&parts, Some(&body));
        let webhook = match dialect.decode_webhook(&view, &context) {
            Ok(Ok(webhook)) => webhook,
            Ok(Err(refusal)) => {
                self.webhook_result(provider, "rejected");
                tracing::warn!(provider, code = %refusal.code, status = refusal.status, "provider notification refused by its dialect; nothing changed");
                let status =
                    StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
                let status = if status.is_client_error() {
                    status
                } else {
                    StatusCode::BAD_REQUEST
                };
                return plain(status, &refusal.code, &refusal.message);
            }
            Err(failure) => {
                self.webhook_result(provider, "failed");
                tracing::error!(provider, plugin = %failure.plugin, kind = failure.kind.as_str(), detail = %failure.detail, "the provider's dialect failed to read a notification; answered 503 (the provider retries)");
                return plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "plugin_failed",
                    "The notification could not be read now; send it again later.",
                );
            }
        };
        self.webhook_result(provider, "verified");
        for notification in webhook.notifications {
            match self.apply_notice(snapshot, provider, notification).await {
                Ok(applied) => self.notice_result(provider, applied.label()),
                Err(e) => {
                    self.notice_result(provider, "failed");
                    tracing::error!(provider, error = %e, "a provider notification could not be applied or held; answered 503 (the provider retries)");
                    return plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "state_unavailable",
                        "The notification could not be recorded now; send it again later.",
                    );
                }
            }
        }
        provider_answer(webhook.response)
    }

    /// Apply one verified notification, or hold it for a payment not known yet.
    async fn apply_notice(
        &self,
        snapshot: &Snapshot,
        provider: &str,
        notification: Notification,
    ) -> Result<Fate, StoreError> {
        let Some(reference) = notification.outcome.provider_reference.clone() else {
            tracing::debug!(provider, event = %notification.event_id, "a notification without a payment reference; ignored");
            return Ok(Fate::Unmatched);
        };
        let applied = match self.find(provider, &reference, &notification).await? {
            Some((id, from)) => {
                self.apply_to(snapshot, provider, &id, &notification, from)
                    .await?
            }
            None => None,
        };
        match applied {
            Some(applied) => Ok(applied),
            None => {
                let held = HeldNotice::new(provider, notification, now_ms());
                self.state(move |s| s.hold_notice(&held)).await?;
                Ok(Fate::Held)
            }
        }
    }

    /// The payment a notification from `provider` about its `reference` is for: the one the
    /// provider owns under it, else (for a charge) one the provider was passed over for,
    /// found by the reference it was sent and echoes.
    async fn find(
        &self,
        provider: &str,
        reference: &str,
        notification: &Notification,
    ) -> Result<Option<(String, From)>, StoreError> {
        let (key, undone) = (
            notices::reference_key(provider, reference),
            notices::undone_key(provider, reference),
        );
        let (owned, undone) = self.by_references(key, undone).await?;
        if let Some(id) = owned {
            return Ok(Some((id, From::Owner)));
        }
        if let Some(id) = undone {
            return Ok(Some((id, From::Undone)));
        }
        let charged = matches!(notification.outcome.status, OutcomeStatus::Approved)
            && matches!(
                notification.operation,
                Operation::Status | Operation::Authorize | Operation::Capture
            );
        let Some(sent) = notification.merchant_reference.clone().filter(|_| charged) else {
            return Ok(None);
        };
        // A payment this provider may hold under a reference payproxy does not know yet
        // (ambiguous, unresolved) may own this charge: never taken for a late one (held,
        // then reported).
        let (unsure, passed) = (
            notices::unsure_key(provider, &sent),
            notices::passed_over_key(provider, &sent),
        );
        let (unsure, found) = self.by_references(unsure, passed).await?;
        if unsure.is_some() {
            return Ok(None);
        }
        Ok(found.map(|id| (id, From::PassedOver)))
    }

    /// The payments indexed under two reference keys, in one store call.
    async fn by_references(
        &self,
        first: String,
        second: String,
    ) -> Result<(Option<String>, Option<String>), StoreError> {
        self.state(move |s| {
            Ok((
                s.payment_by_reference(&first)?,
                s.payment_by_reference(&second)?,
            ))
        })
        .await
    }

    /// Apply `notification` to payment `id` under its lock: `None` when it cannot be applied
    /// now (the payment's route is gone from the config, an operation holds it, or it has not
    /// reached the state the notification refers to).
    async fn apply_to(
        &self,
        snapshot: &Snapshot,
        provider: &str,
        id: &str,
        notification: &Notification,
        from: From,
    ) -> Result<Option<Fate>, StoreError> {
        let key = id.to_string();
        let Some(current) = self.state(move |s| s.payment(&key)).await? else {
            return Ok(None);
        };
        if from == From::Undone {
            // Nothing to change, so no lock: the charge's own notification again, or its
            // undoing's.
            let seen = seen_key(provider, notification);
            return Ok(Some(if current.notices.contains(&seen) {
                Fate::Duplicate
            } else {
                Fate::Stale
            }));
        }
        let Some(route) = snapshot.routes.iter().find(|r| r.name == current.route) else {
            return Ok(None);
        };
        let parts = host_parts();
        let Some(ctx) = Ctx::host_made(snapshot, route, &parts) else {
            return Ok(None);
        };
        let lock = match self.lock(&ctx, id, None).await {
            Ok(lock) => lock,
            Err(Locked::Busy) => return Ok(None),
            Err(Locked::Failed(e)) => return Err(e),
        };
        let result = match from {
            From::Owner => self.apply_locked(&ctx, provider, id, notification).await,
            From::PassedOver => self.late_charge(&ctx, provider, id, notification).await,
            From::Undone => Ok(Fate::Stale),
        };
        self.unlock(lock).await;
        // Held (it refers to a state the payment has not reached yet): not applied now.
        result.map(|fate| (fate != Fate::Held).then_some(fate))
    }

    /// Payment `id`'s record and the notification's key in its applied ids, or what becomes
    /// of the notification when there is nothing to apply it to (or it was applied).
    async fn record_for(
        &self,
        ctx: &Ctx<'_>,
        provider: &str,
        id: &str,
        notification: &Notification,
    ) -> Result<Result<(PaymentEntry, String), Fate>, StoreError> {
        let Some(entry) = self.own_record(ctx, id).await? else {
            return Ok(Err(Fate::Unmatched));
        };
        let seen = seen_key(provider, notification);
        if entry.notices.contains(&seen) {
            return Ok(Err(Fate::Duplicate));
        }
        Ok(Ok((entry, seen)))
    }

    async fn apply_locked(
        &self,
        ctx: &Ctx<'_>,
        provider: &str,
        id: &str,
        notification: &Notification,
    ) -> Result<Fate, StoreError> {
        let (mut entry, seen) = match self.record_for(ctx, provider, id, notification).await? {
            Ok(found) => found,
            Err(fate) => return Ok(fate),
        };
        let checked;
        let asked = decline_to_check(&entry, provider, notification)
            && records::status_query(ctx, provider);
        let notification = if asked {
            // The provider's word on the payment now stands for the decline, which may be an
            // earlier attempt's. With no word now, the decline is applied as it says.
            let asking = self.ask_owner(ctx, &entry);
            match tokio::time::timeout(CHECK_WITHIN, asking).await {
                Ok(Some(outcome)) if stands_for_the_decline(&entry, &outcome) => {
                    checked = Notification {
                        operation: Operation::Status,
                        outcome,
                        ..notification.clone()
                    };
                    &checked
                }
                Ok(_) | Err(_) => {
                    tracing::warn!(provider, payment = %id, "a decline of a payment confirmed again could not be checked with its provider; applied as notified");
                    notification
                }
            }
        } else {
            notification
        };
        match forward(&mut entry, notification) {
            Step::Moved => {}
            Step::Stale => {
                if asked {
                    // The check asked the provider: its audit line says what it answered.
                    ctx.note(|d| {
                        d.operation = Some(audit::operation_name(Operation::Status).to_string());
                        d.stage = "notification";
                    });
                    let reference = notification.outcome.provider_reference.clone();
                    let answer = super::wire::outcome_label(&notification.outcome.status);
                    self.audit(ctx, &entry, Operation::Status, provider, reference, answer);
                    self.write_audit_status(ctx, 200);
                }
                return Ok(Fate::Stale);
            }
            // Its payment has not got where it refers to yet (a refund before the payment
            // is paid): an earlier notification is on its way; held until then.
            Step::NotYet => return Ok(Fate::Held),
        }
        entry.notices.push(seen);
        if entry.notices.len() > NOTICES_KEPT {
            let extra = entry.notices.len() - NOTICES_KEPT;
            entry.notices.drain(..extra);
        }
        self.save(ctx, &entry).await?;
        tracing::info!(route = %ctx.route.name, provider, payment = %id, state = records::state_name(entry.record.state), "provider notification applied");
        ctx.note(|d| {
            d.operation = Some(audit::operation_name(notification.operation).to_string());
            d.stage = "notification";
        });
        let reference = notification.outcome.provider_reference.clone();
        self.audit(
            ctx,
            &entry,
            notification.operation,
            provider,
            reference,
            "notified",
        );
        self.write_audit_status(ctx, 200);
        Ok(Fate::Applied)
    }

    /// What payment `entry`'s owner says of it now (its status query, translated), or
    /// `None` when it gives no usable answer.
    async fn ask_owner(&self, ctx: &Ctx<'_>, entry: &PaymentEntry) -> Option<Outcome> {
        let owner = entry.owner.as_ref()?;
        let mut payment = crate::plugin::blank_payment(Operation::Status);
        payment.id = Some(entry.record.id.clone());
        records::complete_follow_up(entry, &mut payment);
        let providers = std::slice::from_ref(&owner.provider);
        let outcome = match self
            .attempt(ctx, &payment, providers, None, true, false, None)
            .await
        {
            Attempted::Outcome { outcome, .. } => outcome,
            Attempted::Forwarded { outcome, .. } => outcome?,
            Attempted::Refused(_) => return None,
        };
        (!matches!(outcome.status, OutcomeStatus::Error(_))).then_some(outcome)
    }

    /// A charge `provider` reports for payment `id` after answering its confirm "not
    /// processed": void it there, else refund it, and record what was done. The payment's
    /// state is not touched, so the storefront hears of no success.
    async fn late_charge(
        &self,
        ctx: &Ctx<'_>,
        provider: &str,
        id: &str,
        notification: &Notification,
    ) -> Result<Fate, StoreError> {
        let (mut entry, seen) = match self.record_for(ctx, provider, id, notification).await? {
            Ok(found) => found,
            Err(fate) => return Ok(fate),
        };
        let reference = notification
            .outcome
            .provider_reference
            .clone()
            .unwrap_or_default();
        let earlier = entry
            .late_charges
            .iter()
            .position(|c| c.provider == provider && c.reference == reference);
        if earlier.is_some_and(|at| entry.late_charges[at].result != "failed") {
            return Ok(Fate::Duplicate);
        }
        if !entry.passed_over.iter().any(|p| p.provider == provider) {
            return Ok(Fate::Unmatched);
        }
        // Re-read under the lock: the provider may own this very charge by now (a confirm
        // that recorded it between the lookup and the lock): then it is the payment's outcome.
        let key = notices::reference_key(provider, &reference);
        if entry
            .owner
            .as_ref()
            .is_some_and(|o| o.provider == provider && o.reference == reference)
            || self
                .state(move |s| s.payment_by_reference(&key))
                .await?
                .is_some()
        {
            return Ok(Fate::Held);
        }
        // Undone only when the payment is done elsewhere: paid (or authorized, or canceled)
        // at another provider, by a reference payproxy knows, nothing unresolved. Then nothing
        // can send it to this provider again (a second confirm is refused, the first one's
        // retry replays), so this charge is not, and will never be, the payment's own. A
        // payment still open or failed (a confirm may still go to this provider, or be under
        // way) keeps it held, then reported.
        let done_elsewhere = matches!(
            entry.record.state,
            PaymentState::Succeeded | PaymentState::RequiresCapture | PaymentState::Canceled
        ) && entry.unresolved.is_none()
            && entry
                .owner
                .as_ref()
                .is_some_and(|o| o.provider != provider && !o.reference.is_empty());
        if !done_elsewhere {
            return Ok(Fate::Held);
        }
        tracing::warn!(route = %ctx.route.name, provider, payment = %id, "a provider that answered \"not processed\" reports a charge of this payment; voiding it there");
        let amount = notification
            .outcome
            .amount
            .clone()
            .or_else(|| entry.record.payment.amount.clone());
        let mut result = "failed";
        for operation in [Operation::Void, Operation::Refund] {
            let mut undo = crate::plugin::blank_payment(operation);
            ctx.note(|d| d.stage = "attempt");
            undo.id = Some(id.to_string());
            undo.provider_reference = Some(reference.clone());
            undo.amount = amount.clone();
            undo.method = entry.record.payment.method.clone();
            undo.merchant_reference = entry.record.payment.merchant_reference.clone();
            // Stable per charge: a retried undo is the same request at the provider.
            undo.idempotency_key = Some(format!("late-charge\u{0}{reference}"));
            let attempted = self
                .attempt(ctx, &undo, &[provider.to_string()], None, true, false, None)
                .await;
            let status = match &attempted {
                Attempted::Outcome { outcome, .. } => Some(&outcome.status),
                _ => None,
            };
            match status {
                Some(OutcomeStatus::Approved | OutcomeStatus::Pending) => {
                    result = match operation {
                        Operation::Void => "voided",
                        _ => "refunded",
                    };
                    break;
                }
                // Refused as such (a capture already taken cannot be voided): refund.
                Some(OutcomeStatus::Declined(_))
                | Some(OutcomeStatus::Error(Failure {
                    class: ErrorClass::NotSent | ErrorClass::AnsweredNotProcessed,
                    ..
                })) => {}
                // The undo may have happened: nothing more now (a refund on top of a void
                // that went through would be refused, or worse); held and tried again.
                _ => break,
            }
        }
        let late = LateCharge {
            provider: provider.to_string(),
            reference: reference.clone(),
            amount: amount.map(|m| m.minor),
            result: result.to_string(),
            at_ms: now_ms(),
        };
        if result == "failed" {
            // Held and tried again (the same undo, the same provider key) until the hold runs
            // out; recorded and counted once, so the record shows it meanwhile.
            tracing::error!(route = %ctx.route.name, provider, payment = %id, "a late charge could not be voided or refunded now; tried again until state.notice_hold_ms, then an operator must refund it (the payment record lists it under late_charges)");
            if earlier.is_none() {
                self.metrics
                    .late_charges
                    .with_label_values(&[provider, result])
                    .inc();
                entry.late_charges.push(late);
                self.save(ctx, &entry).await?;
            }
            return Ok(Fate::Held);
        }
        self.metrics
            .late_charges
            .with_label_values(&[provider, result])
            .inc();
        match earlier {
            Some(at) => entry.late_charges[at] = late,
            None => entry.late_charges.push(late),
        }
        entry.notices.push(seen);
        self.save(ctx, &entry).await?;
        ctx.note(|d| {
            d.operation = Some(audit::operation_name(Operation::Void).to_string());
            d.stage = "notification";
        });
        let late = Some(reference);
        let decision = format!("late_charge_{result}");
        self.audit(ctx, &entry, Operation::Void, provider, late, &decision);
        self.write_audit_status(ctx, 200);
        Ok(Fate::LateCharge)
    }

    /// Try the held notifications again: apply those whose payment is known now, report
    /// and drop those held longer than `hold_ms`.
    async fn retry_held(
        &self,
        snapshot: &Snapshot,
        hold_ms: u64,
        backoff: &mut Backoff,
    ) -> Result<(), StoreError> {
        let held = self.scan(|s| s.held_notices(HELD_BATCH)).await?;
        backoff.forget_all_but(&held);
        let mut busy = HashSet::new();
        for notice in held {
            let expired = now_ms().saturating_sub(notice.received_ms) > hold_ms;
            if !expired && !backoff.due(&notice.key) {
                continue;
            }
            // Each on its own: one that fails (a store error, a lock that is not a lock)
            // never stops the others, nor its own expiry.
            let tried = self.retry_one(snapshot, &notice, &mut busy).await;
            let key = notice.key.clone();
            let done = match tried {
                Ok(Some(applied)) => {
                    self.notice_result(&notice.provider, applied.label());
                    true
                }
                Ok(None) | Err(_) if expired => {
                    self.notice_result(&notice.provider, "expired");
                    tracing::warn!(provider = %notice.provider, event = %notice.notification.event_id, reference = notice.notification.outcome.provider_reference.as_deref().unwrap_or("-"), "a provider notification waited past state.notice_hold_ms and was not applied; dropped (the payment may need a status query or an operator)");
                    true
                }
                Ok(None) => false,
                Err(e) => {
                    tracing::warn!(provider = %notice.provider, event = %notice.notification.event_id, error = %e, "a held provider notification could not be tried again; trying later");
                    false
                }
            };
            if done {
                if let Err(e) = self.state(move |s| s.drop_notice(&key)).await {
                    tracing::warn!(error = %e, "could not drop a held provider notification");
                }
                backoff.forget(&notice.key);
            } else {
                backoff.later(&notice.key);
            }
        }
        Ok(())
    }

    /// Try one held notification: what became of it, or `None` when it waits on.
    async fn retry_one(
        &self,
        snapshot: &Snapshot,
        notice: &HeldNotice,
        busy: &mut HashSet<String>,
    ) -> Result<Option<Fate>, StoreError> {
        let reference = notice
            .notification
            .outcome
            .provider_reference
            .clone()
            .unwrap_or_default();
        let found = self
            .find(&notice.provider, &reference, &notice.notification)
            .await?;
        let Some((id, from)) = found.filter(|(id, _)| !busy.contains(id)) else {
            return Ok(None);
        };
        let applied = self
            .apply_to(snapshot, &notice.provider, &id, &notice.notification, from)
            .await?;
        if applied.is_none() {
            // Keep its later notifications behind it, in order.
            busy.insert(id);
        }
        Ok(applied)
    }

    fn webhook_result(&self, provider: &str, result: &str) {
        self.metrics
            .webhooks
            .with_label_values(&[provider, result])
            .inc();
    }

    fn notice_result(&self, provider: &str, result: &str) {
        self.metrics
            .webhook_notices
            .with_label_values(&[provider, result])
            .inc();
    }
}

/// Runs until `shutdown` flips: tries held notifications again every 250 ms.
pub async fn run_held(
    payments: Arc<Payments>,
    reloader: Arc<Reloader>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::default();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let snapshot = reloader.snapshot();
        let hold_ms = snapshot.config.state.notice_hold_ms;
        if let Err(e) = payments.retry_held(&snapshot, hold_ms, &mut backoff).await {
            tracing::warn!(error = %e, "could not try held provider notifications again");
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY_HELD) => {}
            // The sender gone is a shutdown too (not a reason to spin).
            changed = shutdown.changed() => if changed.is_err() { return },
        }
    }
}

/// When each held notification is tried next: 250 ms after it was held, then twice as long
/// after each try, up to 5 s (so a flood of notifications for payments payproxy never made
/// costs little). Kept in memory: after a restart every held one is tried at once.
#[derive(Default)]
struct Backoff {
    next: HashMap<String, (Instant, u32)>,
}

impl Backoff {
    fn due(&self, key: &str) -> bool {
        self.next
            .get(key)
            .is_none_or(|(at, _)| *at <= Instant::now())
    }

    fn later(&mut self, key: &str) {
        let tries = self.next.get(key).map_or(0, |(_, n)| n + 1);
        let wait = RETRY_HELD
            .saturating_mul(1 << tries.min(7))
            .min(MAX_HELD_WAIT);
        self.next
            .insert(key.to_string(), (Instant::now() + wait, tries));
    }

    fn forget(&mut self, key: &str) {
        self.next.remove(key);
    }

    /// Forget the notifications no longer held (applied or dropped elsewhere).
    fn forget_all_but(&mut self, held: &[HeldNotice]) {
        let keys: HashSet<&str> = held.iter().map(|n| n.key.as_str()).collect();
        self.next.retain(|k, _| keys.contains(k.as_str()));
    }
}

/// A notification's key in its payment's applied ids ([`PaymentEntry::notices`]).
fn seen_key(provider: &str, notification: &Notification) -> String {
    format!("{provider}\u{0}{}", notification.event_id)
}

/// What a notification does to a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// It moved the payment forward (or its refunds grew).
    Moved,
    /// Nothing new: the payment is there already, or past it.
    Stale,
    /// It refers to a state the payment has not reached yet (a refund of a payment not yet
    /// paid): an earlier notification has not arrived.
    NotYet,
}

/// Whether `notification` is a decline, from the provider that holds the payment, under
/// the reference the payment kept when it was confirmed again, while the new attempt is
/// under way (waiting for the shopper, or processing; not a capture pending): it may be the
/// earlier attempt's, late (a Stripe PaymentIntent confirmed again keeps its id). Failing
/// the attempt under way for it would tell the storefront its payment failed while the
/// shopper may still pay it, and may have them pay again. A cancel is no attempt's.
fn decline_to_check(entry: &PaymentEntry, provider: &str, notification: &Notification) -> bool {
    let declined = matches!(
        &notification.outcome.status,
        OutcomeStatus::Declined(d) if d.provider_code != "canceled"
    );
    let under_way = match entry.record.state {
        PaymentState::RequiresAction => true,
        PaymentState::Processing => entry.record.amount_captured == 0,
        _ => false,
    };
    let kept = entry.owner.as_ref().is_some_and(|o| {
        o.provider == provider
            && entry.confirmed_again_under.as_ref() == Some(&o.reference)
            && notification.outcome.provider_reference.as_ref() == Some(&o.reference)
    });
    declined && notification.operation == Operation::Status && under_way && kept
}

/// Whether the provider's answer to a decline's check settles it: a decline or a success
/// is the payment's outcome; still waiting as the record says (for the shopper, or
/// processing) means the decline was an earlier attempt's. Anything else (pending while the
/// record waits for the shopper: Stripe's `requires_confirmation`, a payment method changed
/// without a confirm) does not say whose the decline is: it is applied as notified.
fn stands_for_the_decline(entry: &PaymentEntry, answer: &Outcome) -> bool {
    match answer.status {
        OutcomeStatus::Declined(_) | OutcomeStatus::Approved => true,
        OutcomeStatus::RequiresAction(_) => entry.record.state == PaymentState::RequiresAction,
        OutcomeStatus::Pending => entry.record.state == PaymentState::Processing,
        OutcomeStatus::Error(_) => false,
    }
}

/// Move `entry` forward by `notification` (`entry` unchanged unless [`Step::Moved`]).
fn forward(entry: &mut PaymentEntry, notification: &Notification) -> Step {
    let outcome = &notification.outcome;
    if matches!(outcome.status, OutcomeStatus::Error(_)) {
        return Step::Stale;
    }
    let state = entry.record.state;
    let manual = entry.record.payment.manual_capture;
    // A capture the provider made is money taken. Of a payment payproxy did not see
    // authorised (recorded as captured automatically; failed; or not authorised yet, its
    // authorisation's word late or never to come) it is the payment's success: a dialect
    // that cannot tell from an event how the shopper paid (Stripe's per-card manual capture
    // on an intent offering other methods too) reports a capture, and held until an
    // authorisation that never comes it would be dropped. A refused capture is not.
    let capturing = state == PaymentState::RequiresCapture
        || (state == PaymentState::Processing && entry.record.amount_captured > 0);
    let success = notification.operation == Operation::Capture
        && matches!(outcome.status, OutcomeStatus::Approved)
        && !capturing
        && (!manual
            || rank(state) < rank(PaymentState::RequiresCapture)
            || state == PaymentState::Failed);
    let operation = if success {
        Operation::Status
    } else {
        notification.operation
    };
    let mut payment = crate::plugin::blank_payment(operation);
    payment.manual_capture = manual && !success;
    payment.amount = outcome
        .amount
        .clone()
        .or_else(|| entry.record.payment.amount.clone());
    match operation {
        // Refunds and captures only follow what they refer to.
        Operation::Refund if state != PaymentState::Succeeded => {
            return if rank(state) < rank(PaymentState::Succeeded) {
                Step::NotYet
            } else {
                Step::Stale
            };
        }
        Operation::Refund => {
            // A refund notification says how much; without an amount it says nothing usable.
            let Some(amount) = outcome.amount.as_ref().map(|m| m.minor) else {
                return Step::Stale;
            };
            let unconfirmed = entry.unconfirmed_refunds.iter().position(|a| *a == amount);
            if matches!(outcome.status, OutcomeStatus::Declined(_)) {
                // Refused: one payproxy made (and counted when the provider accepted it) did
                // not happen after all, so it is counted out and may be asked again. One
                // payproxy never counted (made elsewhere) changes nothing.
                let Some(i) = unconfirmed else {
                    return Step::Stale;
                };
                entry.unconfirmed_refunds.remove(i);
                entry.record.amount_refunded = (entry.record.amount_refunded - amount).max(0);
                return Step::Moved;
            }
            // One payproxy made (and counted) itself: confirmed, not counted again.
            if let Some(i) = unconfirmed {
                entry.unconfirmed_refunds.remove(i);
                return Step::Moved;
            }
        }
        // A capture answered pending (processing, its amount counted) completes too.
        Operation::Capture
            if state != PaymentState::RequiresCapture
                && !(state == PaymentState::Processing && entry.record.amount_captured > 0) =>
        {
            return if rank(state) < rank(PaymentState::RequiresCapture) {
                Step::NotYet
            } else {
                Step::Stale
            };
        }
        Operation::Authorize => payment.operation = Operation::Status,
        _ => {}
    }
    let mut next = entry.clone();
    advance(&mut next, &payment, outcome);
    if notification.operation == Operation::Refund {
        // The notification is the provider's word on this refund: nothing to confirm later.
        next.unconfirmed_refunds = entry.unconfirmed_refunds.clone();
    }
    // Failed is final but for one way out: a failed payment may be confirmed again, and a
    // success reported then is money taken, never dropped as stale.
    let retried = state == PaymentState::Failed
        && matches!(
            next.record.state,
            PaymentState::Succeeded | PaymentState::RequiresCapture
        );
    // An authorisation is the provider's word on the last attempt: a decline read after it
    // is an earlier attempt's, late (a cancel or an expiry comes as canceled, not failed).
    let late_decline =
        state == PaymentState::RequiresCapture && next.record.state == PaymentState::Failed;
    let moved = (rank(next.record.state) > rank(state) && !late_decline) || retried;
    let refunded = next.record.amount_refunded > entry.record.amount_refunded;
    if !(moved || refunded) {
        return Step::Stale;
    }
    if !moved {
        next.record.state = state;
        next.record.last_outcome = entry.record.last_outcome.clone();
    }
    *entry = next;
    Step::Moved
}

/// How far along a payment is; states only move to a higher rank.
fn rank(state: PaymentState) -> u8 {
    match state {
        PaymentState::RequiresPaymentMethod | PaymentState::RequiresConfirmation => 0,
        PaymentState::RequiresAction => 1,
        PaymentState::Processing => 2,
        PaymentState::RequiresCapture => 3,
        PaymentState::Succeeded | PaymentState::Failed | PaymentState::Canceled => 4,
    }
}

/// The dialect's answer for the provider.
fn provider_answer(response: HttpResponse) -> Response<Full<Bytes>> {
    let mut answer = Response::new(Full::new(Bytes::from(response.body)));
    *answer.status_mut() = StatusCode::from_u16(response.status).unwrap_or(StatusCode::OK);
    for (name, value) in response.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            answer.headers_mut().append(name, value);
        }
    }
    answer
}

/// A JSON error for the provider; nothing from its request is repeated.
fn plain(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    let mut answer = Response::new(Full::new(Bytes::from(body.to_string())));
    *answer.status_mut() = status;
    answer.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::storefront::PaymentRecord;
    use crate::plugin::types::{Decline, DeclineKind, Money, NextAction};

    fn entry(state: PaymentState, captured: i64) -> PaymentEntry {
        let mut payment = crate::plugin::blank_payment(Operation::Authorize);
        payment.amount = Some(Money {
            minor: 1000,
            currency: "EUR".into(),
        });
        PaymentEntry::new(
            "payments",
            1,
            PaymentRecord {
                id: "pi_1".into(),
                payment,
                state,
                created: 0,
                amount_captured: captured,
                amount_refunded: 0,
                last_outcome: None,
            },
        )
    }

    fn notice(operation: Operation, status: OutcomeStatus, amount: Option<i64>) -> Notification {
        Notification {
            event_id: "e1".into(),
            operation,
            outcome: Outcome {
                status,
                provider_reference: Some("ref".into()),
                amount: amount.map(|minor| Money {
                    minor,
                    currency: "EUR".into(),
                }),
            },
            merchant_reference: None,
        }
    }

    fn declined() -> OutcomeStatus {
        OutcomeStatus::Declined(Decline {
            code: "expired".into(),
            provider_code: "EXPIRED".into(),
            kind: DeclineKind::Hard,
            message: "expired".into(),
        })
    }

    /// payproxy refunds `minor` of `paid` (the storefront asked; the provider accepted it):
    /// counted, awaiting the provider's confirmation.
    fn refund_by_payproxy(paid: &mut PaymentEntry, minor: i64) {
        let mut refund = crate::plugin::blank_payment(Operation::Refund);
        refund.amount = Some(Money {
            minor,
            currency: "EUR".into(),
        });
        let accepted = Outcome {
            status: OutcomeStatus::Approved,
            provider_reference: Some("re_1".into()),
            amount: None,
        };
        advance(paid, &refund, &accepted);
    }

    /// Only a decline under the reference the payment kept when it was confirmed again, from
    /// its provider, while the new attempt is under way, may be the earlier attempt's.
    #[test]
    fn a_decline_is_checked_only_where_it_may_be_an_earlier_attempts() {
        use PaymentState as S;
        let owned = |state, captured, again: Option<&str>| {
            let mut e = entry(state, captured);
            e.owner = Some(crate::store::Owner {
                provider: "stripe".into(),
                reference: "ref".into(),
                currency: Some("EUR".into()),
            });
            e.confirmed_again_under = again.map(str::to_string);
            e
        };
        let decline = notice(Operation::Status, declined(), None);
        for state in [S::RequiresAction, S::Processing] {
            assert!(decline_to_check(
                &owned(state, 0, Some("ref")),
                "stripe",
                &decline
            ));
        }
        // Never confirmed again; confirmed again under another reference (M-Pesa gives
        // each push its own: the decline names the attempt it is about); another provider.
        assert!(!decline_to_check(
            &owned(S::RequiresAction, 0, None),
            "stripe",
            &decline
        ));
        assert!(!decline_to_check(
            &owned(S::RequiresAction, 0, Some("old")),
            "stripe",
            &decline
        ));
        assert!(!decline_to_check(
            &owned(S::RequiresAction, 0, Some("ref")),
            "adyen",
            &decline
        ));
        // Not under way: settled, failed, or a capture pending.
        for (state, captured) in [
            (S::Succeeded, 1000),
            (S::Failed, 0),
            (S::RequiresCapture, 0),
            (S::Processing, 1000),
        ] {
            assert!(
                !decline_to_check(&owned(state, captured, Some("ref")), "stripe", &decline),
                "{state:?}"
            );
        }
        // A cancel is no attempt's; a success needs no check.
        let mut canceled = declined();
        if let OutcomeStatus::Declined(d) = &mut canceled {
            d.provider_code = "canceled".into();
        }
        let waiting = owned(S::RequiresAction, 0, Some("ref"));
        assert!(!decline_to_check(
            &waiting,
            "stripe",
            &notice(Operation::Status, canceled, None)
        ));
        assert!(!decline_to_check(
            &waiting,
            "stripe",
            &notice(Operation::Status, OutcomeStatus::Approved, Some(1000))
        ));
        assert!(!decline_to_check(
            &waiting,
            "stripe",
            &notice(Operation::Capture, declined(), None)
        ));
    }

    /// The provider's answer settles the decline only when it says the payment's outcome, or
    /// that the payment still waits as the record says.
    #[test]
    fn only_an_answer_that_says_whose_the_decline_is_stands_for_it() {
        use PaymentState as S;
        let answer = |status| Outcome {
            status,
            provider_reference: Some("ref".into()),
            amount: None,
        };
        let action = || OutcomeStatus::RequiresAction(NextAction::Redirect("https://x".into()));
        let (waiting, processing) = (entry(S::RequiresAction, 0), entry(S::Processing, 0));
        for e in [&waiting, &processing] {
            assert!(stands_for_the_decline(e, &answer(declined())));
            assert!(stands_for_the_decline(e, &answer(OutcomeStatus::Approved)));
        }
        assert!(stands_for_the_decline(&waiting, &answer(action())));
        assert!(stands_for_the_decline(
            &processing,
            &answer(OutcomeStatus::Pending)
        ));
        // Pending while the record waits for the shopper (a payment method changed without a
        // confirm), or waiting while the record says processing: not whose the decline is.
        assert!(!stands_for_the_decline(
            &waiting,
            &answer(OutcomeStatus::Pending)
        ));
        assert!(!stands_for_the_decline(&processing, &answer(action())));
    }

    #[test]
    fn statuses_only_move_forward() {
        use PaymentState as S;
        let paid = notice(Operation::Status, OutcomeStatus::Approved, None);
        let mut e = entry(S::RequiresAction, 0);
        assert_eq!(forward(&mut e, &paid), Step::Moved);
        assert_eq!(e.record.state, S::Succeeded);
        assert_eq!(e.record.amount_captured, 1000);
        // A late `pending` or a decline after success changes nothing.
        for late in [
            notice(Operation::Status, OutcomeStatus::Pending, None),
            notice(Operation::Status, declined(), None),
            paid.clone(),
        ] {
            let before = e.clone();
            assert_eq!(forward(&mut e, &late), Step::Stale);
            assert_eq!(e, before);
        }
        // Failed is final for anything but a success (a failed payment may be confirmed
        // again: the money taken then is never dropped).
        let mut failed = entry(S::RequiresAction, 0);
        let decline = notice(Operation::Status, declined(), None);
        assert_eq!(forward(&mut failed, &decline), Step::Moved);
        assert_eq!(failed.record.state, S::Failed);
        let pending = notice(Operation::Status, OutcomeStatus::Pending, None);
        assert_eq!(forward(&mut failed, &pending), Step::Stale);
        assert_eq!(forward(&mut failed, &paid), Step::Moved);
        assert_eq!(failed.record.state, S::Succeeded);
        // Pending moves requires_action on, not back.
        let mut waiting = entry(S::RequiresAction, 0);
        let pending = notice(Operation::Status, OutcomeStatus::Pending, None);
        assert_eq!(forward(&mut waiting, &pending), Step::Moved);
        assert_eq!(waiting.record.state, S::Processing);
    }

    #[test]
    fn refunds_count_once_on_paid_payments_up_to_the_capture() {
        use PaymentState as S;
        let refund = notice(Operation::Refund, OutcomeStatus::Approved, Some(400));
        let mut unpaid = entry(S::RequiresAction, 0);
        assert_eq!(
            forward(&mut unpaid, &refund),
            Step::NotYet,
            "held for the payment"
        );
        let mut paid = entry(S::Succeeded, 1000);
        assert_eq!(forward(&mut paid, &refund), Step::Moved);
        assert_eq!(paid.record.amount_refunded, 400);
        assert_eq!(paid.record.state, S::Succeeded);
        let big = notice(Operation::Refund, OutcomeStatus::Approved, Some(5000));
        assert_eq!(forward(&mut paid, &big), Step::Moved);
        assert_eq!(
            paid.record.amount_refunded, 1000,
            "never beyond the capture"
        );
        assert_eq!(forward(&mut paid, &big), Step::Stale);
        // No amount: nothing to count.
        let vague = notice(Operation::Refund, OutcomeStatus::Approved, None);
        assert_eq!(forward(&mut entry(S::Succeeded, 1000), &vague), Step::Stale);
    }

    #[test]
    fn a_refund_payproxy_made_is_confirmed_by_its_notification_not_counted_twice() {
        use PaymentState as S;
        let mut paid = entry(S::Succeeded, 1000);
        // payproxy refunds 400 (the storefront asked): counted, awaiting confirmation.
        refund_by_payproxy(&mut paid, 400);
        assert_eq!(paid.record.amount_refunded, 400);
        assert_eq!(paid.unconfirmed_refunds, [400]);
        // The provider's notification of it: confirmed, not counted again.
        let notified = notice(Operation::Refund, OutcomeStatus::Approved, Some(400));
        assert_eq!(forward(&mut paid, &notified), Step::Moved);
        assert_eq!(paid.record.amount_refunded, 400);
        assert!(paid.unconfirmed_refunds.is_empty());
        // A refund made elsewhere (the provider's dashboard) of the same amount: counted.
        assert_eq!(forward(&mut paid, &notified), Step::Moved);
        assert_eq!(paid.record.amount_refunded, 800);
        assert!(paid.unconfirmed_refunds.is_empty());
    }

    #[test]
    fn a_refund_payproxy_made_and_the_provider_refused_is_counted_out() {
        use PaymentState as S;
        let mut paid = entry(S::Succeeded, 1000);
        refund_by_payproxy(&mut paid, 400);
        assert_eq!(paid.record.amount_refunded, 400);
        // The provider then refuses it (Adyen: REFUND with success false): counted out.
        let refused = notice(Operation::Refund, declined(), Some(400));
        assert_eq!(forward(&mut paid, &refused), Step::Moved);
        assert_eq!(paid.record.amount_refunded, 0);
        assert!(paid.unconfirmed_refunds.is_empty());
        assert_eq!(paid.record.state, S::Succeeded);
        // A refusal of a refund payproxy never counted (made elsewhere), or without an
        // amount: nothing.
        let before = paid.clone();
        assert_eq!(forward(&mut paid, &refused), Step::Stale);
        let vague = notice(Operation::Refund, declined(), None);
        assert_eq!(forward(&mut paid, &vague), Step::Stale);
        assert_eq!(paid, before);
    }

    #[test]
    fn captures_follow_authorizations() {
        use PaymentState as S;
        // Payments recorded as captured by hand.
        let manual = |state, captured| {
            let mut e = entry(state, captured);
            e.record.payment.manual_capture = true;
            e
        };
        let capture = notice(Operation::Capture, OutcomeStatus::Approved, Some(700));
        let mut e = manual(S::RequiresCapture, 0);
        assert_eq!(forward(&mut e, &capture), Step::Moved);
        assert_eq!(e.record.state, S::Succeeded);
        assert_eq!(e.record.amount_captured, 700);
        // Captured before payproxy heard of the authorisation: money taken, the payment's
        // success (the authorisation's word, arriving after, changes nothing).
        let mut pending = manual(S::RequiresAction, 0);
        assert_eq!(forward(&mut pending, &capture), Step::Moved);
        assert_eq!(pending.record.state, S::Succeeded);
        assert_eq!(pending.record.amount_captured, 700);
        let authorised = notice(Operation::Status, OutcomeStatus::Approved, Some(1000));
        assert_eq!(forward(&mut pending, &authorised), Step::Stale);
        // A refused capture of a payment not yet authorised waits for the authorisation.
        let refused = notice(Operation::Capture, declined(), Some(700));
        let mut pending = manual(S::RequiresAction, 0);
        assert_eq!(forward(&mut pending, &refused), Step::NotYet);
        let mut canceled = manual(S::Canceled, 0);
        assert_eq!(forward(&mut canceled, &capture), Step::Stale);
        // A capture payproxy asked for and the provider answered pending: its notification
        // completes it.
        let mut capturing = manual(S::Processing, 1000);
        assert_eq!(forward(&mut capturing, &capture), Step::Moved);
        assert_eq!(capturing.record.state, S::Succeeded);
        assert_eq!(capturing.record.amount_captured, 700);
        // Already captured (through payproxy): the provider's word on it is nothing new.
        let mut paid = manual(S::Succeeded, 1000);
        assert_eq!(forward(&mut paid, &capture), Step::Stale);
        assert_eq!(paid.record.amount_captured, 1000);
    }

    #[test]
    fn a_capture_of_a_payment_captured_automatically_is_its_success() {
        use PaymentState as S;
        // Stripe's per-card manual capture on an intent the shopper paid by iDEAL: the
        // dialect reports its `succeeded` as a capture; payproxy recorded it automatic.
        let capture = notice(Operation::Capture, OutcomeStatus::Approved, Some(1000));
        let mut waiting = entry(S::RequiresAction, 0);
        assert_eq!(forward(&mut waiting, &capture), Step::Moved);
        assert_eq!(waiting.record.state, S::Succeeded);
        assert_eq!(waiting.record.amount_captured, 1000);
        // Paid already: nothing new, as a status would say.
        let mut paid = entry(S::Succeeded, 1000);
        assert_eq!(forward(&mut paid, &capture), Step::Stale);
        // A failed payment confirmed again and paid: money taken is applied, whether
        // payproxy recorded it captured by hand or not.
        for manual in [false, true] {
            let mut failed = entry(S::Failed, 0);
            failed.record.payment.manual_capture = manual;
            assert_eq!(forward(&mut failed, &capture), Step::Moved, "{manual}");
            assert_eq!(failed.record.state, S::Succeeded, "{manual}");
        }
        // A refused capture is no success: held as before, never a failed payment.
        let refused = notice(Operation::Capture, declined(), Some(1000));
        let mut waiting = entry(S::RequiresAction, 0);
        assert_eq!(forward(&mut waiting, &refused), Step::NotYet);
        assert_eq!(waiting.record.state, S::RequiresAction);
        let mut canceled = entry(S::Canceled, 0);
        assert_eq!(forward(&mut canceled, &capture), Step::Stale);
    }

    #[test]
    fn a_late_decline_does_not_undo_an_authorisation() {
        use PaymentState as S;
        // A first confirm declined, a second authorised; the first's decline arrives last.
        let decline = notice(Operation::Status, declined(), None);
        let mut authorised = entry(S::RequiresCapture, 0);
        let before = authorised.clone();
        assert_eq!(forward(&mut authorised, &decline), Step::Stale);
        assert_eq!(authorised, before);
    }

    #[test]
    fn an_authorisation_canceled_at_the_provider_is_canceled_here() {
        use PaymentState as S;
        let canceled = notice(
            Operation::Status,
            OutcomeStatus::Declined(Decline {
                code: "generic_decline".into(),
                provider_code: "canceled".into(),
                kind: DeclineKind::Hard,
                message: "the payment was canceled".into(),
            }),
            None,
        );
        let mut authorised = entry(S::RequiresCapture, 0);
        assert_eq!(forward(&mut authorised, &canceled), Step::Moved);
        assert_eq!(authorised.record.state, S::Canceled);
        // Captured first: the cancel cannot be this payment's (it is paid).
        let mut paid = entry(S::Succeeded, 1000);
        assert_eq!(forward(&mut paid, &canceled), Step::Stale);
        assert_eq!(paid.record.state, S::Succeeded);
    }
}
