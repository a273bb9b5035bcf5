//! The payment path of a route with a storefront dialect, as named phases over one
//! per-request context ([`Ctx`]), each in its own file and each returning a typed result:
//!
//! 1. **ingress** (`ingress`) — the storefront dialect says what the request asks: a payment
//!    call, a list of payproxy's payments, or anything else.
//! 2. anything else is **forwarded** (`forward`) unchanged to the route's home provider (or
//!    to the provider owning the object it names), with that provider's own credentials;
//!    lists are answered from the payment records (`list`).
//! 3. **idempotency** (`idempotency`) — Stripe's semantics for `Idempotency-Key`.
//! 4. **record** (`records`) — the payment a follow-up refers to, completed from payproxy's
//!    record; an id payproxy has never seen goes to the home provider unchanged.
//! 5. **instrument** (`instrument`) — a card token's details from the home provider.
//! 6. **comply** (`comply`) — compliance plugins on the completed payment.
//! 7. **route** (`decide`) — the router's order over the providers able to charge the
//!    payment's instrument.
//! 8. **attempt** (`attempt`) — providers in order under the failover policy.
//! 9. **respond** (`respond`) and **record** — rendered in the storefront's dialect; the
//!    payment record and the idempotency record are written before the answer leaves.
//!
//! Nothing is sent to a provider before the payment parsed, passed compliance and the
//! provider's dialect encoded it (or the request is forwarded unchanged to a provider of the
//! storefront's own dialect).

// Phases end early with the storefront's answer as their `Err`: built once per request and
// moved once, so its size does not matter on this path.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::error::PluginFailure;
use crate::failover::{classify, next, AttemptClass, Budget, Candidates, Next, Transport};
use crate::health::{Admission, HealthBook};
use crate::metrics::Metrics;
use crate::plugin::storefront::{Call, PaymentCall};
use crate::plugin::types::{
    ChallengeKind, ErrorClass, Failure, HttpRequest, HttpResponse, Operation, Outcome,
    OutcomeStatus, Payment, Refusal, RefusalKind,
};
use crate::plugin::{Context, DialectPlugin};
use crate::proxy::{Answer, PROVIDER_HEADER};
use crate::route::Route;
use crate::snapshot::{ProviderEntry, Snapshot};
use crate::store::{Attempt, Store, StoreError, StoredResponse};
use crate::upstream::{clone_head, prepare_head, strip_hop_by_hop, Downstream, ProxyBody};

mod attempt;
mod audit;
mod charge;
mod comply;
mod decide;
mod events;
mod forward;
mod idempotency;
mod ids;
mod ingress;
mod instrument;
mod list;
pub mod notices;
pub mod pending;
mod records;
mod respond;
mod wire;

pub use audit::AuditLog;
pub use ids::provider_key;
use ids::*;
use wire::*;
pub use wire::{http_view, outcome_label};

/// Largest provider answer the host buffers for decoding.
const MAX_PROVIDER_BODY: usize = 1 << 20;

/// State of the payment path that outlives snapshots.
pub struct Payments {
    /// Idempotency records, payment records and owners.
    store: Arc<dyn Store>,
    /// How long a finished idempotent answer replays.
    ttl_ms: u64,
    /// Provider health and circuit breakers.
    pub health: Arc<HealthBook>,
    metrics: Arc<Metrics>,
    /// Card details learned from home providers.
    cards: instrument::CardCache,
    /// Idempotency records requests of this process are executing.
    live: idempotency::LiveRecords,
    /// Payments that may run at once (`limits.max_payments_in_flight`).
    slots: Arc<tokio::sync::Semaphore>,
    /// How many `slots` there are.
    slots_total: u32,
    /// Where audit lines go.
    audit: Arc<AuditLog>,
}

/// One storefront request on a payment route: what every phase reads.
pub(crate) struct Ctx<'a> {
    snapshot: &'a Snapshot,
    route: &'a Route,
    /// The storefront dialect.
    ingress: &'a DialectPlugin,
    ingress_name: &'a str,
    parts: &'a http::request::Parts,
    body: Bytes,
    downstream: Downstream,
    /// The request as plugins see it.
    view: HttpRequest,
    /// What the phases did, for the audit line (shared with the task that spawned the
    /// phases, which writes it if they panic).
    audit: Arc<std::sync::Mutex<audit::Draft>>,
    /// The key of the payment's operation lock, once this request holds it: attempts are
    /// journaled on it too.
    lock: std::sync::OnceLock<String>,
    /// The key of the request's idempotency claim, while it holds one: payment-record
    /// writes outside the lock are fenced by it.
    claim: std::sync::OnceLock<String>,
    /// The payment record write held back to go to the store in one call with the
    /// idempotency record's (see [`Payments::record_last`]).
    unsaved: std::sync::Mutex<Option<records::RecordWrite>>,
    /// Made by payproxy itself (a pending-payment query), not by the storefront: there is no
    /// storefront request to forward, and nothing is.
    host_made: bool,
    /// The dialect's refusal of the request as payproxy would make it from the canonical
    /// payment, when the request as it is was accepted: it carries more than the canonical
    /// payment can (a Connect header, a parameter with no place in it). Such a request
    /// reaches only a provider of its own dialect, unchanged; where payproxy would make the
    /// provider's request itself, this refusal is the answer.
    beyond_canonical: Option<Refusal>,
}

impl Ctx<'_> {
    /// Hold a payment record write back for the settle ([`Payments::record_last`]).
    fn hold_back(&self, write: records::RecordWrite) {
        *self.unsaved.lock().unwrap_or_else(|p| p.into_inner()) = Some(write);
    }

    /// The payment record write held back for the settle, if any; none is held after this.
    fn take_held_back(&self) -> Option<records::RecordWrite> {
        self.unsaved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// The request head standing for a storefront request where payproxy acts on its own (a
/// pending-payment query, a provider notification): a GET with no body, never forwarded.
fn host_parts() -> http::request::Parts {
    Request::new(()).into_parts().0
}

impl<'a> Ctx<'a> {
    /// A context for what payproxy does on its own on `route` (see [`host_parts`]); `None`
    /// when the route has no storefront dialect.
    fn host_made(
        snapshot: &'a Snapshot,
        route: &'a Route,
        parts: &'a http::request::Parts,
    ) -> Option<Ctx<'a>> {
        let (ingress_name, ingress) = route.dialect.as_ref()?;
        let body = Bytes::new();
        Some(Ctx {
            snapshot,
            route,
            ingress,
            ingress_name,
            view: http_view(parts, Some(&body)),
            parts,
            body,
            downstream: Downstream {
                client_ip: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                tls: false,
            },
            audit: Arc::new(std::sync::Mutex::new(audit::Draft::default())),
            lock: std::sync::OnceLock::new(),
            claim: std::sync::OnceLock::new(),
            unsaved: std::sync::Mutex::new(None),
            host_made: true,
            beyond_canonical: None,
        })
    }
}

impl Ctx<'_> {
    /// Note something for the request's audit line.
    fn note(&self, f: impl FnOnce(&mut audit::Draft)) {
        f(&mut self.audit.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// A span for phase `name` (`payment.<name>`), which is also where a refusal from now on
    /// happened, for the audit line.
    fn phase(&self, name: &'static str) -> tracing::Span {
        self.note(|d| d.stage = name);
        phase_span(name)
    }
}

/// The span of phase `name` (`payment.<name>`).
fn phase_span(name: &'static str) -> tracing::Span {
    tracing::debug_span!(target: crate::telemetry::TRACE_TARGET, "phase", otel.name = %format_args!("payment.{name}"))
}

/// How a payment request ends: the answer, and what becomes of its idempotency record.
pub(crate) struct Done {
    answer: Answer,
    keep: Keep,
}

/// 409 `payment_processing`: another request or instance speaks for the payment now (it took
/// this one's claim over, or marked the payment unresolved); the retry of the original
/// request, with its key, gets the payment's answer.
fn still_processing() -> Refusal {
    refusal(
        RefusalKind::InvalidRequest(None),
        409,
        "payment_processing",
        "the payment is still processing; retry the original request with its idempotency key",
    )
}

/// What the idempotency record of a finished request keeps.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Keep {
    /// This answer, replayed to retries with the key.
    Replay(StoredResponse),
    /// Nothing: nothing can have been charged, a retry may run the request again.
    Release,
    /// The record stays in flight, parked (the outcome is unknown and has no provider
    /// reference): a retry resumes at once at the same provider with the same provider key.
    Hold,
}

impl Done {
    fn release(answer: Answer) -> Done {
        Done {
            answer,
            keep: Keep::Release,
        }
    }
}

impl Payments {
    /// Payment state over shared metrics.
    pub fn new(
        metrics: Arc<Metrics>,
        store: Arc<dyn Store>,
        ttl_ms: u64,
        health: Arc<HealthBook>,
        max_in_flight: usize,
        audit: Arc<AuditLog>,
    ) -> Payments {
        Payments {
            store,
            ttl_ms,
            health,
            metrics,
            cards: instrument::CardCache::default(),
            live: idempotency::LiveRecords::default(),
            slots: Arc::new(tokio::sync::Semaphore::new(max_in_flight.max(1))),
            slots_total: u32::try_from(max_in_flight.max(1)).unwrap_or(u32::MAX),
            audit,
        }
    }

    /// Wait, at most `within`, until no payment is being processed; whether none is. At
    /// shutdown a payment whose storefront connection has gone keeps running on its own (its
    /// phases are a task of their own); this lets it reach its provider's answer and its
    /// record before the serving threads stop. New payments are refused meanwhile.
    pub async fn settled(&self, within: std::time::Duration) -> bool {
        let all = self.slots.acquire_many(self.slots_total);
        matches!(tokio::time::timeout(within, all).await, Ok(Ok(_)))
    }

    /// Run the payment phases for route `route` (an index into the snapshot's routes) on a
    /// task of their own: a storefront that hangs up does not cut a payment that may have
    /// reached a provider, its outcome is still recorded.
    pub async fn spawn(
        self: &Arc<Self>,
        snapshot: Arc<Snapshot>,
        route: usize,
        parts: http::request::Parts,
        body: Bytes,
        downstream: Downstream,
    ) -> Answer {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            let route = &snapshot.routes[route];
            tracing::warn!(route = %route.name, "too many payments in flight; refusing one before anything was sent");
            let answer = respond::early(
                route,
                503,
                "too_many_payments",
                "Too many payments are being processed right now; retry shortly.",
            );
            let status = answer.response.status().as_u16();
            self.audit_early(&snapshot, route, "admission", "too_many_payments", status);
            return answer;
        };
        let payments = self.clone();
        let draft = Arc::new(std::sync::Mutex::new(audit::Draft::default()));
        let phases = {
            let (snapshot, draft) = (snapshot.clone(), draft.clone());
            // The phases' spans, log lines and audit line belong to the storefront's request.
            crate::telemetry::carry(async move {
                let _slot = slot;
                let route = &snapshot.routes[route];
                // Boxed where it is made, in the task: the phases' state is about 26 KB, which
                // spawning would otherwise copy along with the task, more than once.
                Box::pin(payments.handle(&snapshot, route, parts, body, downstream, draft)).await
            })
        };
        match tokio::spawn(crate::listener::priority::ahead(phases)).await {
            Ok(answer) => answer,
            Err(e) => {
                // A panic in the payment path: its records tell what happened; say so plainly.
                let route = &snapshot.routes[route];
                tracing::error!(route = %route.name, error = %e, "payment task failed");
                let failed = crate::error::ProxyError::plugin(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "the payment could not be processed",
                );
                // The audit line keeps what the phases noted before it (attempts included).
                let mut draft = draft.lock().unwrap_or_else(|p| p.into_inner());
                if draft.operation.is_some() {
                    draft.refusal = Some(audit::Refused {
                        stage: "internal",
                        code: "internal_error".into(),
                    });
                    self.audit.write(&draft.line(
                        &route.name,
                        self.ingress_of(&snapshot, route),
                        failed.status.as_u16(),
                    ));
                }
                Answer {
                    route: route.name.clone(),
                    provider: "none".into(),
                    response: failed
                        .to_response()
                        .map(|b| b.map_err(|never| match never {}).boxed()),
                }
            }
        }
    }

    /// Run the payment phases for one request on a route with a dialect.
    async fn handle(
        &self,
        snapshot: &Snapshot,
        route: &Route,
        parts: http::request::Parts,
        body: Bytes,
        downstream: Downstream,
        audit: Arc<std::sync::Mutex<audit::Draft>>,
    ) -> Answer {
        let Some((ingress_name, ingress)) = &route.dialect else {
            // Only called for routes with a dialect.
            return plain_error(
                route,
                StatusCode::INTERNAL_SERVER_ERROR,
                "route has no dialect",
            );
        };
        let mut view = http_view(&parts, Some(&body));
        // The ingress phase starts before its context: both parses are in its span.
        let ingress_phase = phase_span("ingress");
        let marked = ingress_phase.in_scope(|| ingress::parse_marked(ingress, &mut view));
        let mut ctx = Ctx {
            snapshot,
            route,
            ingress,
            ingress_name,
            parts: &parts,
            body,
            downstream,
            view,
            audit,
            lock: std::sync::OnceLock::new(),
            claim: std::sync::OnceLock::new(),
            unsaved: std::sync::Mutex::new(None),
            host_made: false,
            beyond_canonical: None,
        };
        let call = {
            ctx.note(|d| d.stage = "ingress");
            let _phase = ingress_phase.enter();
            self.ingress(&mut ctx, marked)
        };
        let answer = match call {
            Err(answer) => {
                ctx.note(|d| {
                    d.refusal.get_or_insert(audit::Refused {
                        stage: "ingress",
                        code: "ingress_refused".into(),
                    });
                });
                answer
            }
            Ok(Call::Forward(id)) => {
                return self
                    .forward_call(&ctx, id.as_deref())
                    .instrument(ctx.phase("forward"))
                    .await
            }
            Ok(Call::List(query)) => {
                return self.list(&ctx, &query).instrument(ctx.phase("list")).await
            }
            Ok(Call::Payment(call)) => self.payment(&ctx, call).await,
        };
        self.write_audit(&ctx, &answer);
        answer
    }

    /// The request's audit line.
    fn write_audit(&self, ctx: &Ctx<'_>, answer: &Answer) {
        self.write_audit_status(ctx, answer.response.status().as_u16());
    }

    /// The audit line of `ctx`, answered `status`.
    fn write_audit_status(&self, ctx: &Ctx<'_>, status: u16) {
        let draft = ctx.audit.lock().unwrap_or_else(|p| p.into_inner());
        self.audit.write(&draft.line(
            &ctx.route.name,
            self.ingress_of(ctx.snapshot, ctx.route),
            status,
        ));
    }

    /// The route's storefront dialect, for audit lines.
    fn ingress_of<'s>(&self, snapshot: &'s Snapshot, route: &'s Route) -> audit::Ingress<'s> {
        let plugin = route
            .dialect
            .as_ref()
            .map_or("none", |(name, _)| name.as_str());
        audit::Ingress {
            plugin,
            sha256: snapshot.plugins.get(plugin).map(|p| p.sha256.as_str()),
        }
    }

    /// An audit line for a request on payment route `route` refused before its phases
    /// (`stage`: `authentication`, `card_data`, `body`, `admission`), answered `status`.
    pub fn audit_early(
        &self,
        snapshot: &Snapshot,
        route: &Route,
        stage: &'static str,
        code: &str,
        status: u16,
    ) {
        if route.dialect.is_none() {
            return;
        }
        let draft = audit::Draft {
            refusal: Some(audit::Refused {
                stage,
                code: code.to_string(),
            }),
            ..Default::default()
        };
        self.audit
            .write(&draft.line(&route.name, self.ingress_of(snapshot, route), status));
    }

    /// A payment call: idempotency gate, the operation, then the idempotency record settled
    /// with what the operation says to keep.
    async fn payment(&self, ctx: &Ctx<'_>, call: PaymentCall) -> Answer {
        ctx.note(|d| {
            d.operation = Some(audit::operation_name(call.payment.operation).to_string());
            d.payment = call.payment.id.clone();
        });
        let claimed = self
            .claim(ctx, &call.payment)
            .instrument(ctx.phase("idempotency"))
            .await;
        let held = match claimed {
            Ok(held) => held,
            Err(answer) => return answer,
        };
        if let Some(held) = &held {
            let _ = ctx.claim.set(held.record.clone());
        }
        // Reading the payment's record (and its lock); the phases inside note their own.
        ctx.note(|d| d.stage = "record");
        let done = self.operate(ctx, call, held.as_ref()).await;
        self.settle(ctx, held, done).await
    }

    /// Run a store call off the async workers when it may wait on the disk or the network
    /// (an fsync, a database round trip): on the store's writer when it has one, else on the
    /// blocking pool; in place when the store never blocks.
    async fn state<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.state_answering_early(f, |_| false).await
    }

    /// [`Payments::state`], with a result `early` accepts answered by the store's writer as
    /// soon as the call has run, before its batch is durable
    /// ([`crate::store::Writer::run_answering_early`]: only for a result nothing irrevocable
    /// rests on until a later call is durable).
    async fn state_answering_early<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
        early: fn(&Result<T, StoreError>) -> bool,
    ) -> Result<T, StoreError> {
        if let Some(writer) = self.store.writer() {
            let store = self.store.clone();
            let _waiting = crate::listener::priority::on_the_writer();
            return writer.run_answering_early(move || f(&*store), early).await;
        }
        self.scan(f).await
    }

    /// A read that may go through many rows (a page of a list, the held notifications): off
    /// the async workers like [`Payments::state`], but never on the store's writer, where it
    /// would hold up the batch behind it and with it other requests' payments. On the
    /// blocking pool the store waits for the flush covering what it read before answering.
    async fn scan<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        if !self.store.blocks() {
            return f(&*self.store);
        }
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || f(&*store)).await {
            Ok(result) => result,
            Err(e) => Err(StoreError::Task(e.to_string())),
        }
    }
}
