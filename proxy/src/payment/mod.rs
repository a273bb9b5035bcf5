//! The payment phases of a route with a dialect: ingress (parse into the canonical payment)
//! → comply → route → attempt (forward unchanged to a provider of the same dialect, or
//! encode/send/decode through the provider's dialect) → respond (render in the storefront's
//! dialect) → record (affinity, metrics, audit line).
//!
//! Every refusal is rendered by the storefront's dialect; nothing is sent to a provider
//! before the payment parsed, passed compliance and the provider's dialect encoded it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use sha2::{Digest, Sha256};

use crate::config::OnError;
use crate::error::PluginFailure;
use crate::failover::{classify, next, AttemptClass, Next, Transport};
use crate::health::{Admission, HealthBook};
use crate::metrics::Metrics;
use crate::plugin::types::{
    Annotation, ChallengeKind, ErrorClass, Failure, HttpRequest, HttpResponse, Operation, Outcome,
    OutcomeStatus, Payment, Refusal, RefusalKind,
};
use crate::plugin::{Context, DialectPlugin, RouteDecision, Verdict};
use crate::proxy::{Answer, PROVIDER_HEADER};
use crate::route::Route;
use crate::snapshot::{ProviderEntry, Snapshot};
use crate::store::{Attempt, Begin, Owner, Store, StoreError, StoredResponse};
use crate::upstream::{clone_head, prepare_head, strip_hop_by_hop, Downstream, ProxyBody};

mod attempt;
mod ids;
mod wire;

pub use ids::provider_key;
use ids::*;
use wire::*;
pub use wire::{http_view, outcome_label};

/// Largest provider answer the host buffers for decoding.
const MAX_PROVIDER_BODY: usize = 1 << 20;

/// State of the payment path that outlives snapshots.
pub struct Payments {
    /// Idempotency records and payment owners.
    store: Arc<dyn Store>,
    /// How long a finished idempotent answer replays.
    ttl_ms: u64,
    /// Provider health and circuit breakers.
    pub health: Arc<HealthBook>,
    metrics: Arc<Metrics>,
}

/// One payment request in flight.
struct Flow<'a> {
    snapshot: &'a Snapshot,
    route: &'a Route,
    ingress: &'a DialectPlugin,
    ingress_name: &'a str,
    parts: &'a http::request::Parts,
    body: Bytes,
    downstream: Downstream,
    /// The idempotency record this request holds, if any.
    idempotency: Option<Held>,
    /// The final answer to keep for replay, set where one is produced.
    keep: std::sync::Mutex<Option<StoredResponse>>,
    /// Leave the idempotency record in flight (outcome unknown): neither finish nor release.
    hold: std::sync::atomic::AtomicBool,
    /// The attempt journaled by a proxy that stopped mid-request, when resuming it.
    resume: Option<Attempt>,
}

/// An idempotency record held by a request.
struct Held {
    /// The record's key: route and idempotency key.
    record: String,
    /// What makes a retry "the same" request (see `fingerprint`).
    fingerprint: String,
}

/// How the attempt phase ended.
enum Attempted {
    /// A translated outcome from `provider`.
    Outcome { provider: String, outcome: Outcome },
    /// The provider's own answer, forwarded unchanged (same dialect).
    Forwarded(Answer),
    /// Refused before anything was sent (encode refusal).
    Refused(Refusal),
}

impl Payments {
    /// Payment state over shared metrics.
    pub fn new(
        metrics: Arc<Metrics>,
        store: Arc<dyn Store>,
        ttl_ms: u64,
        health: Arc<HealthBook>,
    ) -> Payments {
        Payments {
            store,
            ttl_ms,
            health,
            metrics,
        }
    }

    /// Run the payment phases for one request on a route with a dialect.
    pub async fn handle(
        &self,
        snapshot: &Snapshot,
        route: &Route,
        parts: http::request::Parts,
        body: Bytes,
        downstream: Downstream,
    ) -> Answer {
        let Some((ingress_name, ingress)) = &route.dialect else {
            // Only called for routes with a dialect.
            return plain_error(
                route,
                StatusCode::INTERNAL_SERVER_ERROR,
                "route has no dialect",
            );
        };
        let flow = Flow {
            snapshot,
            route,
            ingress,
            ingress_name,
            parts: &parts,
            body,
            downstream,
            idempotency: None,
            keep: std::sync::Mutex::new(None),
            hold: std::sync::atomic::AtomicBool::new(false),
            resume: None,
        };
        self.run(flow).await
    }

    /// Ingress, then the idempotency gate, then the rest; the record is finished with the
    /// answer (kept for replay) or released when nothing can have been charged.
    async fn run(&self, mut flow: Flow<'_>) -> Answer {
        let view = http_view(flow.parts, Some(&flow.body));

        // ingress
        let payment = match flow.ingress.parse_request(&view) {
            Ok(Ok(payment)) => payment,
            Ok(Err(refusal)) => return self.refuse(&flow, refusal, "none"),
            Err(failure) => return self.plugin_failed(&flow, &failure),
        };

        // idempotency (Stripe semantics), for everything but reads
        if let (Some(key), true) = (
            &payment.idempotency_key,
            payment.operation != Operation::Status,
        ) {
            let record = format!("{}\u{0}{key}", flow.route.name);
            let fingerprint = fingerprint(flow.parts, &flow.body);
            let stale = flow.route.failover.deadline_ms.saturating_mul(3);
            let (r, f) = (record.clone(), fingerprint.clone());
            match self.state(move |s| s.begin(&r, &f, now_ms(), stale)).await {
                Ok(Begin::Started) => {
                    flow.idempotency = Some(Held {
                        record,
                        fingerprint,
                    })
                }
                Ok(Begin::Resume { attempt }) => {
                    tracing::warn!(route = %flow.route.name, "taking over a request whose proxy stopped mid-flight");
                    flow.resume = attempt;
                    flow.idempotency = Some(Held {
                        record,
                        fingerprint,
                    });
                }
                Ok(Begin::Replay(stored)) => {
                    self.metrics
                        .idempotent_replays
                        .with_label_values(&[flow.route.name.as_str()])
                        .inc();
                    return replay(flow.route, stored);
                }
                Ok(Begin::Mismatch) => {
                    let r = refusal(
                        RefusalKind::InvalidRequest(None),
                        400,
                        "idempotency_error",
                        "this idempotency key was already used with different parameters",
                    );
                    return self.refuse(&flow, r, "none");
                }
                Ok(Begin::InFlight) => {
                    let r = refusal(
                        RefusalKind::InvalidRequest(None),
                        409,
                        "idempotency_key_in_use",
                        "a request with this idempotency key is still being processed; retry later",
                    );
                    return self.refuse(&flow, r, "none");
                }
                Err(e) => {
                    tracing::error!(error = %e, "state store failed; refusing the payment rather than risk a double charge");
                    let r = refusal(
                        RefusalKind::Unavailable,
                        503,
                        "state_unavailable",
                        "the payment cannot be processed right now",
                    );
                    return self.refuse(&flow, r, "none");
                }
            }
        }

        let answer = self.execute(&flow, &view, payment).await;
        let hold = flow.hold.load(std::sync::atomic::Ordering::Relaxed);
        if let (Some(Held { record, .. }), false) = (&flow.idempotency, hold) {
            let kept = flow.keep.lock().ok().and_then(|mut k| k.take());
            let record = record.clone();
            let done = match kept {
                Some(stored) => {
                    let ttl = self.ttl_ms;
                    self.state(move |s| s.finish(&record, &stored, now_ms(), ttl))
                        .await
                }
                None => self.state(move |s| s.release(&record)).await,
            };
            if let Err(e) = done {
                tracing::error!(error = %e, "could not record the idempotent result");
            }
        }
        answer
    }

    async fn execute(&self, flow: &Flow<'_>, view: &HttpRequest, mut payment: Payment) -> Answer {
        // affinity: follow-ups go to the provider that owns the payment
        let known = match payment.id.clone() {
            Some(id) => match self.state(move |s| s.owner(&id)).await {
                Ok(found) => Some(found),
                Err(e) => {
                    tracing::error!(error = %e, "state store failed reading a payment owner");
                    let r = refusal(
                        RefusalKind::Unavailable,
                        503,
                        "state_unavailable",
                        "the payment cannot be processed right now",
                    );
                    return self.refuse(flow, r, "none");
                }
            },
            None => None,
        };
        let owner = match known {
            Some(found) => match found {
                Some(owner) => {
                    payment.provider_reference = Some(owner.reference.clone());
                    // Follow-ups in some dialects carry an amount without currency.
                    if let (Some(amount), Some(currency)) =
                        (payment.amount.as_mut(), &owner.currency)
                    {
                        if amount.currency.is_empty() {
                            amount.currency = currency.clone();
                        }
                    }
                    Some(owner)
                }
                None => {
                    return self.refuse(
                        flow,
                        refusal(
                            RefusalKind::NotFound,
                            404,
                            "resource_missing",
                            "no such payment",
                        ),
                        "none",
                    )
                }
            },
            None => None,
        };

        // comply
        let mut annotations: Vec<Annotation> = Vec::new();
        let mut rules = Vec::new();
        for plugin in &flow.route.compliance {
            let decision = match plugin.check(&payment) {
                Ok(decision) => decision,
                Err(failure) => {
                    // Compliance fails closed.
                    tracing::warn!(plugin = %failure.plugin, kind = failure.kind.as_str(), detail = %failure.detail, "compliance plugin failed");
                    return self.refuse(
                        flow,
                        refusal(
                            RefusalKind::Unavailable,
                            503,
                            "compliance_unavailable",
                            "the payment cannot be checked right now",
                        ),
                        "none",
                    );
                }
            };
            let verdict = match &decision.verdict {
                Verdict::Allow => "allow",
                Verdict::Deny(_) => "deny",
                Verdict::Challenge(_) => "challenge",
            };
            self.metrics
                .compliance_verdict(plugin.name(), &decision.rule, verdict);
            rules.push(format!("{}:{}={verdict}", plugin.name(), decision.rule));
            match decision.verdict {
                Verdict::Allow => annotations.extend(decision.annotations),
                Verdict::Deny(denial) => {
                    return self.refuse(
                        flow,
                        refusal(
                            RefusalKind::ComplianceDenied,
                            402,
                            &denial.code,
                            &denial.message,
                        ),
                        "none",
                    )
                }
                Verdict::Challenge(kind) => return self.refuse(flow, challenge(kind), "none"),
            }
        }

        // A payment whose outcome is still unknown (no provider reference yet).
        if let Some(owner) = owner.as_ref().filter(|o| o.reference.is_empty()) {
            if payment.operation == Operation::Status {
                let pending = Outcome {
                    status: OutcomeStatus::Pending,
                    provider_reference: None,
                    amount: payment.amount.clone(),
                };
                let id = payment.id.clone().unwrap_or_default();
                return match flow.ingress.render_outcome(&payment, &pending, &id, &[]) {
                    Ok(response) => answer(flow.route, &owner.provider, response),
                    Err(failure) => self.plugin_failed(flow, &failure),
                };
            }
            let r = refusal(
                RefusalKind::InvalidRequest(None),
                409,
                "payment_processing",
                "the payment is still processing; retry the original request with its idempotency key",
            );
            return self.refuse(flow, r, "none");
        }

        // route
        let order = match (&owner, &flow.resume) {
            // A resumed request goes back where it may already have been charged.
            (_, Some(attempt)) => vec![attempt.provider.clone()],
            (Some(owner), None) => vec![owner.provider.clone()],
            (None, None) => match self.decide(flow, view, &payment) {
                Ok(order) => order,
                Err(refused) => return self.refuse(flow, refused, "none"),
            },
        };

        // attempt
        let affinity = owner.is_some() || flow.resume.is_some();
        let attempted = self.attempt(flow, &payment, &order, affinity).await;
        let (provider, outcome) = match attempted {
            Attempted::Forwarded(answer) => return answer,
            Attempted::Refused(r) => return self.refuse(flow, r, "none"),
            Attempted::Outcome { provider, outcome } => (provider, outcome),
        };

        // respond + record
        let payment_id = match (&payment.id, payment.operation) {
            (_, Operation::Refund) => flow.mint(&flow.route.refund_id_prefix),
            (Some(id), _) => id.clone(),
            (None, _) => flow.mint(&flow.route.payment_id_prefix),
        };
        let held = flow.hold.load(std::sync::atomic::Ordering::Relaxed);
        if owner.is_none() && payment.operation == Operation::Authorize {
            // An unknown outcome without a reference is still owned by this provider: the
            // id answers "processing" until a retry of the request resolves it.
            let reference = outcome
                .provider_reference
                .clone()
                .or_else(|| held.then(String::new));
            if let Some(reference) = &reference {
                let owner = Owner {
                    provider: provider.clone(),
                    reference: reference.clone(),
                    currency: payment.amount.as_ref().map(|a| a.currency.clone()),
                };
                let id = payment_id.clone();
                if let Err(e) = self.state(move |s| s.set_owner(&id, &owner)).await {
                    tracing::error!(error = %e, "could not record the payment owner");
                }
            }
        }
        tracing::info!(
            target: "payproxy::audit",
            route = %flow.route.name,
            operation = ?payment.operation,
            provider = %provider,
            outcome = outcome_label(&outcome.status),
            compliance = %rules.join(","),
            ingress = %flow.ingress_name,
            "payment"
        );
        match flow
            .ingress
            .render_outcome(&payment, &outcome, &payment_id, &annotations)
        {
            Ok(response) => {
                // Nothing charged anywhere: a retry may run it again. Everything else replays.
                let nothing_happened = matches!(
                    &outcome.status,
                    OutcomeStatus::Error(Failure {
                        class: ErrorClass::NotSent | ErrorClass::AnsweredNotProcessed,
                        ..
                    })
                );
                if !nothing_happened {
                    let mut headers = response.headers.clone();
                    headers.push((PROVIDER_HEADER.into(), provider.clone()));
                    flow.keep_response(StoredResponse {
                        status: response.status,
                        headers,
                        body: response.body.clone(),
                    });
                }
                answer(flow.route, &provider, response)
            }
            Err(failure) => self.plugin_failed(flow, &failure),
        }
    }

    /// The route's providers as routers see them, with their current health.
    fn provider_views(&self, route: &Route) -> Vec<crate::plugin::types::Provider> {
        let now = Instant::now();
        route
            .provider_views
            .iter()
            .map(|p| {
                let mut p = p.clone();
                p.health = (&self.health.snapshot(&p.name, now)).into();
                p
            })
            .collect()
    }

    /// Run a store call off the async workers (it may fsync).
    async fn state<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || f(&*store)).await {
            Ok(result) => result,
            Err(e) => Err(StoreError::Task(e.to_string())),
        }
    }

    /// Journal an attempt before it is sent (after a crash, the retry resumes there).
    async fn journal(
        &self,
        flow: &Flow<'_>,
        provider: &str,
        provider_key: &str,
    ) -> Result<(), Refusal> {
        let Some(record) = flow.idempotency.as_ref().map(|held| held.record.clone()) else {
            return Ok(());
        };
        let attempt = Attempt {
            provider: provider.to_string(),
            provider_key: provider_key.to_string(),
        };
        self.state(move |s| s.note_attempt(&record, &attempt))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "could not journal the attempt; not sending it");
                refusal(
                    RefusalKind::Unavailable,
                    503,
                    "state_unavailable",
                    "the payment cannot be processed right now",
                )
            })
    }

    /// Ask the router (with the canonical payment) for the order; static order without one.
    fn decide(
        &self,
        flow: &Flow<'_>,
        view: &HttpRequest,
        payment: &Payment,
    ) -> Result<Vec<String>, Refusal> {
        let Some((router, on_error)) = &flow.route.router else {
            return Ok(flow.route.providers.clone());
        };
        match router.route(
            view,
            Some(payment),
            &self.provider_views(flow.route),
            rand::random(),
        ) {
            Ok(RouteDecision::Providers(order)) => Ok(order),
            Ok(RouteDecision::Reject {
                status,
                code,
                message,
            }) => {
                // A 4xx is a policy refusal (permanent); only a 5xx means "try later".
                let kind = if status < 500 {
                    RefusalKind::ComplianceDenied
                } else {
                    RefusalKind::Unavailable
                };
                Err(refusal(kind, status, &code, &message))
            }
            Err(failure) => {
                tracing::warn!(route = %flow.route.name, plugin = %failure.plugin, kind = failure.kind.as_str(), detail = %failure.detail, "router plugin failed");
                match on_error {
                    OnError::FailOpen => Ok(flow.route.providers.clone()),
                    OnError::FailClosed => Err(refusal(
                        RefusalKind::Unavailable,
                        503,
                        "plugin_failed",
                        "no route for this payment right now",
                    )),
                }
            }
        }
    }

    /// Render a refusal in the storefront's dialect.
    fn refuse(&self, flow: &Flow<'_>, refusal: Refusal, provider: &str) -> Answer {
        match flow.ingress.render_refusal(&refusal) {
            Ok(response) => answer(flow.route, provider, response),
            Err(failure) => self.plugin_failed(flow, &failure),
        }
    }

    /// The storefront's own dialect failed: a plain JSON error is all that is left.
    fn plugin_failed(&self, flow: &Flow<'_>, failure: &PluginFailure) -> Answer {
        tracing::warn!(route = %flow.route.name, plugin = %failure.plugin, kind = failure.kind.as_str(), detail = %failure.detail, "dialect plugin failed");
        let error = crate::error::ProxyError::plugin(
            StatusCode::BAD_GATEWAY,
            "plugin_failed",
            format!("dialect plugin {} failed", failure.plugin),
        );
        Answer {
            route: flow.route.name.clone(),
            provider: "none".into(),
            response: error
                .to_response()
                .map(|b| b.map_err(|never| match never {}).boxed()),
        }
    }
}
