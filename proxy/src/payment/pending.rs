//! "No webhook? Ask": payments left `processing` or `requires_action` are queried at their
//! provider by payproxy itself (a route's `pending_queries`), so an outcome arrives even when
//! the storefront never retrieves the payment and no notification comes. A query is the
//! storefront's retrieve run by the host: the payment's lock, the owner's status query, the
//! record and its events written as for any retrieve that learns something (an event per
//! change on a route with `webhooks`), and an audit line.
//!
//! Which payments: those created between `after_ms` and `after_ms + max_queries × every_ms`
//! ago; each sweep of a route (every `every_ms`) queries each of them once, so a payment is
//! queried at most `max_queries` times. One that leaves the window still pending is reported
//! once (a warning and `payproxy_pending_queries_total{result="gave_up"}`) and left to the
//! storefront. Payments owned by a provider of the storefront's own dialect are not queried
//! (the storefront's own provider notifies the storefront itself), nor are payments marked
//! unresolved (their idempotency key's retry resolves them) or without a provider reference.
//! Every instance sharing a store sweeps: the payment's lock keeps their queries of one
//! payment apart.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use tokio::sync::watch;

use super::records::forwardable;
use super::*;
use crate::config::PendingQueriesConfig;
use crate::plugin::storefront::{ListQuery, PaymentState};
use crate::reload::Reloader;
use crate::store::PaymentEntry;

/// How often the task looks for a route whose sweep is due.
const TICK: Duration = Duration::from_millis(100);
/// Payments one list call reads, and pages one sweep of a route reads at most.
const PAGE: u32 = 100;
const MAX_PAGES: usize = 50;

/// Runs until `shutdown` flips: sweeps each payment route with `pending_queries` every
/// `every_ms`, one payment at a time.
pub async fn run(
    payments: Arc<Payments>,
    reloader: Arc<Reloader>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last: HashMap<String, Instant> = HashMap::new();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let snapshot = reloader.snapshot();
        for route in &snapshot.routes {
            let Some(settings) = &route.pending_queries else {
                continue;
            };
            let every = Duration::from_millis(settings.every_ms);
            if last.get(&route.name).is_some_and(|at| at.elapsed() < every) {
                continue;
            }
            last.insert(route.name.clone(), Instant::now());
            payments.sweep(&snapshot, route, settings).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.changed() => {}
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

impl Payments {
    /// Query each pending payment of `route` in its query window once.
    async fn sweep(&self, snapshot: &Snapshot, route: &Route, settings: &PendingQueriesConfig) {
        let now = now_ms();
        let window = u64::from(settings.max_queries).saturating_mul(settings.every_ms);
        let newest = now.saturating_sub(settings.after_ms);
        let oldest = newest.saturating_sub(window);
        // Payments that left the window since the last sweep: reported, not queried.
        let gave_up_from = oldest.saturating_sub(settings.every_ms);
        let seconds = |ms: u64| i64::try_from(ms / 1000).unwrap_or(i64::MAX);
        let mut query = ListQuery {
            limit: PAGE,
            starting_after: None,
            ending_before: None,
            created_gte: Some(seconds(gave_up_from)),
            created_lte: Some(seconds(newest)),
            customer: None,
        };
        for _ in 0..MAX_PAGES {
            let (name, q) = (route.name.clone(), query.clone());
            let (entries, more) = match self.state(move |s| s.list_payments(&name, &q)).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(route = %route.name, error = %e, "pending payments could not be listed; trying again at the next sweep");
                    return;
                }
            };
            for entry in &entries {
                if !pending(entry.record.state) || entry.created_ms > newest {
                    continue;
                }
                if entry.created_ms < oldest {
                    if entry.created_ms >= gave_up_from {
                        tracing::warn!(route = %route.name, payment = %entry.record.id, queries = settings.max_queries, "payment still pending after its last status query; left to the storefront");
                        self.pending_result(route, "gave_up");
                    }
                    continue;
                }
                self.query_pending(snapshot, route, entry).await;
            }
            match entries.last() {
                Some(last) if more => query.starting_after = Some(last.record.id.clone()),
                _ => return,
            }
        }
        tracing::warn!(route = %route.name, pages = MAX_PAGES, "more pending payments than one sweep reads; the rest wait for the next");
    }

    /// Retrieve `entry` as the storefront would, asking its provider.
    async fn query_pending(&self, snapshot: &Snapshot, route: &Route, entry: &PaymentEntry) {
        let Some((ingress_name, ingress)) = &route.dialect else {
            return;
        };
        let queryable = entry
            .owner
            .as_ref()
            .is_some_and(|o| !o.reference.is_empty());
        if !queryable || entry.unresolved.is_some() {
            return;
        }
        // No storefront request: a GET with no body stands for one, never sent anywhere (a
        // payment whose owner would get the storefront's request unchanged is skipped).
        let (parts, ()) = Request::new(()).into_parts();
        let body = Bytes::new();
        let ctx = Ctx {
            snapshot,
            route,
            ingress,
            ingress_name,
            view: http_view(&parts, Some(&body)),
            parts: &parts,
            body,
            downstream: Downstream {
                client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                tls: false,
            },
            audit: Arc::new(std::sync::Mutex::new(audit::Draft::default())),
            lock: std::sync::OnceLock::new(),
            claim: std::sync::OnceLock::new(),
        };
        if forwardable(&ctx, entry) {
            return;
        }
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
        self.pending_result(route, result);
    }

    fn pending_result(&self, route: &Route, result: &str) {
        self.metrics
            .pending_queries
            .with_label_values(&[&route.name, result])
            .inc();
    }
}
