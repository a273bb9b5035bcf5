//! "No webhook? Ask": payments left `processing` or `requires_action` are queried at their
//! provider by payproxy itself (a route's `pending_queries`, off by default), so an outcome
//! arrives even when the storefront never retrieves the payment and no notification comes. A
//! query is the storefront's retrieve run by the host: the payment's lock, the owner's status
//! query, the record and its events written as for any retrieve that learns something (an
//! event per change on a route with `webhooks`), and an audit line. A query that gets no
//! usable answer leaves the record as it was.
//!
//! Which payments: those created between `after_ms` and `after_ms + max_queries × every_ms`
//! ago, read oldest first in slices of `every_ms`; each sweep of a route (every `every_ms`)
//! queries each of them once, so this instance queries a payment at most `max_queries` times.
//! One that leaves the window still pending is reported once (a warning and
//! `payproxy_pending_queries_total{result="gave_up"}`) and left to the storefront. Skipped
//! (never queried, never reported): payments owned by a provider of the storefront's own dialect
//! (the storefront's own provider notifies the storefront itself), payments marked unresolved
//! (their idempotency key's retry resolves them) and payments without a provider reference.
//! Every instance sharing a store sweeps on its own: the payment's lock keeps their queries
//! of one payment apart, but N instances query a payment up to N × `max_queries` times.

use std::collections::HashMap;
use tokio::sync::watch;

use super::*;
use crate::config::PendingQueriesConfig;
use crate::plugin::storefront::{ListQuery, PaymentState};
use crate::reload::Reloader;
use crate::store::PaymentEntry;

/// How often the task looks for a route whose sweep is due.
const TICK: Duration = Duration::from_millis(100);
/// Payments one list call reads.
const PAGE: u32 = 100;
/// Payments one sweep of a route reads at most (pending or not); the newest wait for the
/// next sweep (they have queries left).
const MAX_READ: usize = 5_000;

/// A route's sweeps: when the last ran, and the oldest creation time it queried (payments
/// older than that since then have run out of queries).
struct Swept {
    at: Instant,
    oldest_ms: u64,
}

/// Runs until `shutdown` flips: sweeps each payment route with `pending_queries` every
/// `every_ms`, one payment at a time.
pub async fn run(
    payments: Arc<Payments>,
    reloader: Arc<Reloader>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut swept: HashMap<String, Swept> = HashMap::new();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let snapshot = reloader.snapshot();
        for (index, route) in snapshot.routes.iter().enumerate() {
            let Some(settings) = &route.pending_queries else {
                continue;
            };
            let every = Duration::from_millis(settings.every_ms);
            let last = swept.get(&route.name);
            if last.is_some_and(|s| s.at.elapsed() < every) {
                continue;
            }
            let sweep = Sweep::new(settings, last.map(|s| s.oldest_ms));
            swept.insert(
                route.name.clone(),
                Swept {
                    at: Instant::now(),
                    oldest_ms: sweep.oldest,
                },
            );
            payments
                .sweep(&snapshot, index, settings, &sweep, &shutdown)
                .await;
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            // The sender gone is a shutdown too (not a reason to spin).
            changed = shutdown.changed() => if changed.is_err() { return },
        }
    }
}

/// The creation-time bounds of one sweep, in ms since the epoch.
struct Sweep {
    /// Payments created at or after this and before `oldest` ran out of queries since the
    /// last sweep.
    gave_up_from: u64,
    /// The oldest payment still queried.
    oldest: u64,
    /// The newest payment queried (`after_ms` old).
    newest: u64,
}

impl Sweep {
    fn new(settings: &PendingQueriesConfig, last_oldest: Option<u64>) -> Sweep {
        let window = u64::from(settings.max_queries).saturating_mul(settings.every_ms);
        let newest = now_ms().saturating_sub(settings.after_ms);
        let oldest = newest.saturating_sub(window);
        let gave_up_from = last_oldest
            .unwrap_or_else(|| oldest.saturating_sub(settings.every_ms))
            .min(oldest);
        Sweep {
            gave_up_from,
            oldest,
            newest,
        }
    }
}

/// A state a provider may still move on its own.
fn pending(state: PaymentState) -> bool {
    matches!(
        state,
        PaymentState::Processing | PaymentState::RequiresAction
    )
}

/// Whether payproxy queries `entry` at all: an owner with a reference, of another dialect
/// than the storefront's, and not unresolved.
fn queryable(snapshot: &Snapshot, route: &Route, entry: &PaymentEntry) -> bool {
    let Some(owner) = &entry.owner else {
        return false;
    };
    let same_dialect = route.dialect.as_ref().is_some_and(|(storefront, _)| {
        super::charge::speaks(snapshot, &owner.provider, storefront)
    });
    !owner.reference.is_empty() && entry.unresolved.is_none() && !same_dialect
}

impl Payments {
    /// Query each pending payment of route `index` in the sweep's window once, oldest first.
    async fn sweep(
        self: &Arc<Self>,
        snapshot: &Arc<Snapshot>,
        index: usize,
        settings: &PendingQueriesConfig,
        sweep: &Sweep,
        shutdown: &watch::Receiver<bool>,
    ) {
        let route = &snapshot.routes[index];
        let mut read = 0;
        let mut from = sweep.gave_up_from;
        while from <= sweep.newest {
            // One slice of creation times [from, to], newest first within it.
            let to = from.saturating_add(settings.every_ms - 1).min(sweep.newest);
            let mut query = ListQuery {
                limit: PAGE,
                starting_after: None,
                ending_before: None,
                created_gte: Some(seconds(from)),
                created_lte: Some(seconds(to)),
                customer: None,
            };
            loop {
                if *shutdown.borrow() {
                    return;
                }
                let (name, q) = (route.name.clone(), query.clone());
                let (entries, more) = match self.scan(move |s| s.list_payments(&name, &q)).await {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::warn!(route = %route.name, error = %e, "pending payments could not be listed; trying again at the next sweep");
                        return;
                    }
                };
                read += entries.len();
                for entry in &entries {
                    let in_slice = (from..=to).contains(&entry.created_ms);
                    if !in_slice
                        || !pending(entry.record.state)
                        || !queryable(snapshot, route, entry)
                    {
                        continue;
                    }
                    if entry.created_ms < sweep.oldest {
                        tracing::warn!(route = %route.name, payment = %entry.record.id, queries = settings.max_queries, "payment still pending after its last status query; left to the storefront");
                        self.pending_result(route, "gave_up");
                        continue;
                    }
                    let result = self.query_isolated(snapshot, index, entry).await;
                    self.pending_result(route, result);
                }
                if read >= MAX_READ {
                    tracing::warn!(route = %route.name, read, "more payments in the query window than one sweep reads; the newer ones wait for the next sweep");
                    return;
                }
                match entries.last() {
                    Some(last) if more => query.starting_after = Some(last.record.id.clone()),
                    _ => break,
                }
            }
            from = to.saturating_add(1);
        }
    }

    /// [`Self::query_pending`] in a task of its own: a panic fails this query only.
    async fn query_isolated(
        self: &Arc<Self>,
        snapshot: &Arc<Snapshot>,
        index: usize,
        entry: &PaymentEntry,
    ) -> &'static str {
        let (payments, snapshot, entry) = (self.clone(), snapshot.clone(), entry.clone());
        let id = entry.record.id.clone();
        let task = tokio::spawn(async move {
            payments
                .query_pending(&snapshot, &snapshot.routes[index], &entry)
                .await
        });
        match task.await {
            Ok(result) => result,
            Err(e) => {
                tracing::error!(payment = %id, error = %e, "a pending-payment query failed");
                "failed"
            }
        }
    }

    /// Retrieve `entry` as the storefront would, asking its provider: `resolved` when it is
    /// no longer pending, `pending` when it still is (or the provider gave no usable
    /// answer), `failed` when payproxy could not ask (store, lock or plugin failure).
    async fn query_pending(
        &self,
        snapshot: &Snapshot,
        route: &Route,
        entry: &PaymentEntry,
    ) -> &'static str {
        let parts = host_parts();
        let Some(ctx) = Ctx::host_made(snapshot, route, &parts) else {
            return "failed";
        };
        let id = entry.record.id.clone();
        ctx.note(|d| {
            d.operation = Some(audit::operation_name(Operation::Status).to_string());
            d.payment = Some(id.clone());
            d.stage = "record";
        });
        let mut payment = crate::plugin::blank_payment(Operation::Status);
        payment.id = Some(id.clone());
        let done = self
            .operate(
                &ctx,
                PaymentCall {
                    payment,
                    confirm: false,
                },
                None,
            )
            .await;
        self.write_audit(&ctx, &done.answer);
        let result = if done.answer.response.status().is_server_error() {
            "failed"
        } else {
            match self.state(move |s| s.payment(&id)).await {
                Ok(Some(now)) if !pending(now.record.state) => "resolved",
                Ok(_) => "pending",
                Err(_) => "failed",
            }
        };
        tracing::debug!(route = %route.name, payment = %entry.record.id, result, "pending payment queried");
        result
    }

    fn pending_result(&self, route: &Route, result: &str) {
        self.metrics
            .pending_queries
            .with_label_values(&[&route.name, result])
            .inc();
    }
}

/// Unix seconds of a time in ms (list bounds are in seconds, inclusive).
fn seconds(ms: u64) -> i64 {
    i64::try_from(ms / 1000).unwrap_or(i64::MAX)
}
