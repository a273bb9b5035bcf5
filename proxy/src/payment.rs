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
    /// Snapshot version whose breaker settings the health book has.
    breaker_version: std::sync::atomic::AtomicU64,
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
    idempotency: Option<String>,
    /// The final answer to keep for replay, set where one is produced.
    keep: std::sync::Mutex<Option<StoredResponse>>,
    /// Leave the idempotency record in flight (outcome unknown): neither finish nor release.
    hold: std::sync::atomic::AtomicBool,
    /// The attempt journaled by a proxy that stopped mid-request, when resuming it.
    resume: Option<Attempt>,
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
            breaker_version: std::sync::atomic::AtomicU64::new(0),
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
        let version = snapshot.version;
        if self
            .breaker_version
            .swap(version, std::sync::atomic::Ordering::Relaxed)
            != version
        {
            self.health.set_config(snapshot.config.breaker.clone());
        }
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
        let mut resume = None;
        if let (Some(key), true) = (
            &payment.idempotency_key,
            payment.operation != Operation::Status,
        ) {
            let record = format!("{}\u{0}{key}", flow.route.name);
            let fingerprint = fingerprint(flow.parts, &flow.body);
            let stale = flow.route.failover.deadline_ms.saturating_mul(3);
            let (r, f) = (record.clone(), fingerprint.clone());
            match self.state(move |s| s.begin(&r, &f, now_ms(), stale)).await {
                Ok(Begin::Started) => flow.idempotency = Some(record),
                Ok(Begin::Resume { attempt }) => {
                    tracing::warn!(route = %flow.route.name, "taking over a request whose proxy stopped mid-flight");
                    resume = attempt.clone();
                    flow.resume = attempt;
                    flow.idempotency = Some(record);
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

        let answer = self.execute(&flow, &view, payment, resume).await;
        let hold = flow.hold.load(std::sync::atomic::Ordering::Relaxed);
        if let (Some(record), false) = (&flow.idempotency, hold) {
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

    async fn execute(
        &self,
        flow: &Flow<'_>,
        view: &HttpRequest,
        mut payment: Payment,
        resume: Option<Attempt>,
    ) -> Answer {
        let view = view.clone();
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
                .compliance_verdicts
                .with_label_values(&[plugin.name(), decision.rule.as_str(), verdict])
                .inc();
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
        let order = match (&owner, &resume) {
            // A resumed request goes back where it may already have been charged.
            (_, Some(attempt)) => vec![attempt.provider.clone()],
            (Some(owner), None) => vec![owner.provider.clone()],
            (None, None) => match self.decide(flow, &view, &payment) {
                Ok(order) => order,
                Err(refused) => return self.refuse(flow, refused, "none"),
            },
        };

        // attempt
        let affinity = owner.is_some() || resume.is_some();
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
        let Some(record) = flow.idempotency.clone() else {
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

    /// Try the candidates in order, within the route's attempt and time budget. Another
    /// candidate only when the previous one certainly did nothing; after an ambiguous
    /// attempt the payment stays with that provider (see [`Payments::resolve`]).
    async fn attempt(
        &self,
        flow: &Flow<'_>,
        payment: &Payment,
        order: &[String],
        affinity: bool,
    ) -> Attempted {
        let policy = &flow.route.failover;
        let deadline = Instant::now() + Duration::from_millis(policy.deadline_ms);
        let mut tried = 0;
        let mut last: Option<(String, Outcome)> = None;
        for name in order {
            if tried >= policy.max_attempts || Instant::now() >= deadline {
                break;
            }
            let Some(entry) = flow.snapshot.providers.get(name) else {
                continue;
            };
            let Some((dialect_name, egress)) = &entry.dialect else {
                continue;
            };
            // Follow-ups and resumed requests must reach their provider, breaker or not.
            let probe = match if affinity {
                Admission::Allowed
            } else {
                self.health.admit(name, Instant::now())
            } {
                Admission::Allowed => false,
                Admission::Probe => true,
                Admission::Rejected => {
                    self.metrics
                        .attempts
                        .with_label_values(&[name.as_str(), "breaker_open"])
                        .inc();
                    continue;
                }
            };
            tried += 1;
            if let Some((from, outcome)) = &last {
                self.failover(from, name, outcome);
            }
            // A resumed request reuses the key it journaled before the crash.
            let key = match &flow.resume {
                Some(attempt) if &attempt.provider == name => attempt.provider_key.clone(),
                _ => provider_key(name, payment),
            };
            if let Err(refused) = self.journal(flow, name, &key).await {
                return Attempted::Refused(refused);
            }
            if dialect_name == flow.ingress_name {
                match self
                    .forward(flow, name, entry, egress, payment, probe)
                    .await
                {
                    Ok(answer) => return Attempted::Forwarded(answer),
                    // Sent, no trustworthy answer: stays here, rendered in the storefront's dialect.
                    Err(outcome) if flow.hold.load(std::sync::atomic::Ordering::Relaxed) => {
                        return Attempted::Outcome {
                            provider: name.clone(),
                            outcome,
                        }
                    }
                    Err(not_sent) => {
                        last = Some((name.clone(), not_sent));
                        continue;
                    }
                }
            }
            let (class, outcome) = match self
                .send_once(name, entry, egress, payment, &key, deadline, probe)
                .await
            {
                Ok(result) => result,
                Err(refusal) => return Attempted::Refused(refusal),
            };
            match next(class, policy.retry_soft_declines) {
                Next::Stop => {
                    return Attempted::Outcome {
                        provider: name.clone(),
                        outcome,
                    }
                }
                Next::NextProvider => {
                    tracing::warn!(route = %flow.route.name, provider = %name, class = class.as_str(), "provider did not take the payment; trying the next candidate");
                    last = Some((name.clone(), outcome));
                }
                Next::Resolve => {
                    let outcome = self
                        .resolve(flow, name, entry, egress, payment, &key, outcome, deadline)
                        .await;
                    return Attempted::Outcome {
                        provider: name.clone(),
                        outcome,
                    };
                }
            }
        }
        match last {
            Some((provider, outcome)) => Attempted::Outcome { provider, outcome },
            None => Attempted::Refused(refusal(
                RefusalKind::Unavailable,
                503,
                "no_provider",
                "no provider can take this payment",
            )),
        }
    }

    fn failover(&self, from: &str, to: &str, outcome: &Outcome) {
        let reason = outcome_label(&outcome.status);
        self.metrics
            .failovers
            .with_label_values(&[from, to, reason])
            .inc();
    }

    /// After an ambiguous attempt: resend with the same provider key while the protocol
    /// makes that safe, then ask for the status when there is a reference, else answer
    /// pending. Never another provider.
    #[allow(clippy::too_many_arguments)]
    async fn resolve(
        &self,
        flow: &Flow<'_>,
        name: &str,
        entry: &ProviderEntry,
        egress: &DialectPlugin,
        payment: &Payment,
        key: &str,
        ambiguous: Outcome,
        deadline: Instant,
    ) -> Outcome {
        let policy = &flow.route.failover;
        let capabilities = egress.capabilities();
        let mut reference = ambiguous.provider_reference.clone();
        if capabilities.idempotent_resend {
            for _ in 0..policy.resend_attempts {
                let backoff = Duration::from_millis(policy.resend_backoff_ms);
                if Instant::now() + backoff >= deadline {
                    break;
                }
                tokio::time::sleep(backoff).await;
                if let Ok((class, outcome)) = self
                    .send_once(name, entry, egress, payment, key, deadline, false)
                    .await
                {
                    self.metrics
                        .resolutions
                        .with_label_values(&[name, "resend", class.as_str()])
                        .inc();
                    if reference.is_none() {
                        reference = outcome.provider_reference.clone();
                    }
                    // The provider replays what it did under this key: that answer is the truth.
                    if matches!(
                        class,
                        AttemptClass::Processed | AttemptClass::Declined { .. }
                    ) {
                        return outcome;
                    }
                }
            }
        }
        if capabilities.status_query {
            if let Some(reference) = &reference {
                let mut status = payment.clone();
                status.operation = Operation::Status;
                status.provider_reference = Some(reference.clone());
                if let Ok((class, mut outcome)) = self
                    .send_once(name, entry, egress, &status, key, deadline, false)
                    .await
                {
                    self.metrics
                        .resolutions
                        .with_label_values(&[name, "status", class.as_str()])
                        .inc();
                    if matches!(
                        class,
                        AttemptClass::Processed | AttemptClass::Declined { .. }
                    ) {
                        outcome
                            .provider_reference
                            .get_or_insert_with(|| reference.clone());
                        return outcome;
                    }
                }
            }
        }
        self.metrics
            .resolutions
            .with_label_values(&[name, "pending", "ambiguous"])
            .inc();
        match reference {
            // The provider has an id for it: answer pending; status queries can follow it.
            Some(reference) => {
                tracing::warn!(route = %flow.route.name, provider = %name, "payment outcome unknown after resolution; answering pending");
                Outcome {
                    status: OutcomeStatus::Pending,
                    provider_reference: Some(reference),
                    amount: payment.amount.clone(),
                }
            }
            // Nothing to follow: answer "unknown, retry with the same key" and keep the
            // idempotency record in flight, so the retry resumes at this provider with the
            // same provider key once the record is stale — never at another provider.
            None => {
                tracing::warn!(route = %flow.route.name, provider = %name, "payment outcome unknown and no provider reference; holding the idempotency record");
                flow.hold.store(true, std::sync::atomic::Ordering::Relaxed);
                ambiguous
            }
        }
    }

    /// Same dialect: forward the storefront's request unchanged, decode the answer only to
    /// learn the provider's id (affinity). Err = not sent (the next candidate may be tried).
    async fn forward(
        &self,
        flow: &Flow<'_>,
        name: &str,
        entry: &ProviderEntry,
        egress: &DialectPlugin,
        payment: &Payment,
        probe: bool,
    ) -> Result<Answer, Outcome> {
        let path_and_query = flow
            .parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let target = entry
            .upstream
            .target(path_and_query)
            .map_err(|_| not_sent("invalid_request"))?;
        let mut head = clone_head(flow.parts);
        prepare_head(&mut head, target, flow.downstream);
        let outbound: ProxyBody = Full::new(flow.body.clone())
            .map_err(|never| match never {})
            .boxed();
        let started = Instant::now();
        let response = entry
            .upstream
            .send(Request::from_parts(head, outbound))
            .await;
        self.observe(name, started);
        let response = match response {
            Ok(r) => r,
            Err(e) if e.retry_safe => {
                let (_, outcome) = self.classified(
                    name,
                    started,
                    probe,
                    Transport::NotSent,
                    None,
                    "provider_unavailable",
                );
                return Err(outcome);
            }
            Err(e) => {
                let (transport, code) = transport_failure(&e);
                let (_, outcome) = self.classified(name, started, probe, transport, None, code);
                // It may exist at this provider: a retry must resume here, not start anew.
                flow.hold.store(true, std::sync::atomic::Ordering::Relaxed);
                return Err(outcome);
            }
        };
        let (mut parts, body) = response.into_parts();
        let bytes = match Limited::new(body, MAX_PROVIDER_BODY).collect().await {
            Ok(c) => c.to_bytes(),
            Err(_) => {
                let (_, outcome) = self.classified(
                    name,
                    started,
                    probe,
                    Transport::Broken,
                    None,
                    "provider_error",
                );
                flow.hold.store(true, std::sync::atomic::Ordering::Relaxed);
                return Err(outcome);
            }
        };
        // Decode only to classify (failover) and to learn the provider's id (affinity).
        let decoded = egress
            .decode_response(payment, &response_view(&parts, &bytes))
            .ok();
        let (class, outcome) = self.classified(
            name,
            started,
            probe,
            Transport::Answered,
            decoded.clone(),
            "provider_error",
        );
        if next(class, flow.route.failover.retry_soft_declines) == Next::NextProvider {
            return Err(outcome);
        }
        if payment.id.is_none() && payment.operation == Operation::Authorize {
            if let Some(reference) = decoded.and_then(|o| o.provider_reference) {
                // Same dialect: the provider's id is the storefront-visible id.
                let owner = Owner {
                    provider: name.to_string(),
                    reference: reference.clone(),
                    currency: payment.amount.as_ref().map(|a| a.currency.clone()),
                };
                if let Err(e) = self.state(move |s| s.set_owner(&reference, &owner)).await {
                    tracing::error!(error = %e, "could not record the payment owner");
                }
            }
        }
        if parts.status.as_u16() < 500 {
            flow.keep_response(StoredResponse {
                status: parts.status.as_u16(),
                headers: header_pairs(&parts.headers),
                body: bytes.to_vec(),
            });
        }
        strip_hop_by_hop(&mut parts.headers);
        if let Ok(v) = HeaderValue::from_str(name) {
            parts
                .headers
                .insert(HeaderName::from_static(PROVIDER_HEADER), v);
        }
        let response = Response::from_parts(
            parts,
            Full::new(bytes).map_err(|never| match never {}).boxed(),
        );
        Ok(Answer {
            route: flow.route.name.clone(),
            provider: name.to_string(),
            response,
        })
    }

    /// One attempt at a provider of another dialect: encode, send, decode, classify.
    /// Err = the dialect refused the payment before anything was sent.
    #[allow(clippy::too_many_arguments)]
    async fn send_once(
        &self,
        name: &str,
        entry: &ProviderEntry,
        egress: &DialectPlugin,
        payment: &Payment,
        key: &str,
        deadline: Instant,
        probe: bool,
    ) -> Result<(AttemptClass, Outcome), Refusal> {
        let started = Instant::now();
        let context = Context {
            provider: name.to_string(),
            credentials: entry.credentials.clone(),
            now_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            idempotency_key: key.to_string(),
        };
        let request = match egress.encode_request(payment, &context) {
            Ok(Ok(request)) => Some(request),
            Ok(Err(refusal)) => return Err(refusal),
            Err(failure) => {
                tracing::warn!(provider = %name, plugin = %failure.plugin, kind = failure.kind.as_str(), detail = %failure.detail, "dialect failed to encode");
                None
            }
        };
        let Some(outbound) = request.and_then(|r| outbound_request(&entry.upstream, r)) else {
            return Ok(self.classified(
                name,
                started,
                probe,
                Transport::NotSent,
                None,
                "provider_error",
            ));
        };
        let remaining = deadline.saturating_duration_since(started);
        let send = tokio::time::timeout(remaining, entry.upstream.send(outbound));
        let sent = match self.health.slow_call() {
            None => send.await,
            Some(after) => {
                tokio::pin!(send);
                tokio::select! {
                    result = &mut send => result,
                    _ = tokio::time::sleep(after) => {
                        // Still waiting: count it now, so a hanging provider's breaker opens
                        // before the first timeout instead of after it.
                        self.health.record(name, false, started.elapsed(), false, Instant::now());
                        self.metrics.attempts.with_label_values(&[name, "slow"]).inc();
                        send.await
                    }
                }
            }
        };
        let response = match sent {
            Ok(Ok(r)) => r,
            Ok(Err(e)) if e.retry_safe => {
                self.observe(name, started);
                return Ok(self.classified(
                    name,
                    started,
                    probe,
                    Transport::NotSent,
                    None,
                    "provider_unavailable",
                ));
            }
            Ok(Err(e)) => {
                self.observe(name, started);
                let (transport, code) = transport_failure(&e);
                return Ok(self.classified(name, started, probe, transport, None, code));
            }
            Err(_) => {
                self.observe(name, started);
                return Ok(self.classified(
                    name,
                    started,
                    probe,
                    Transport::TimedOutAfterSend,
                    None,
                    "provider_timeout",
                ));
            }
        };
        let (parts, body) = response.into_parts();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let bytes =
            match tokio::time::timeout(remaining, Limited::new(body, MAX_PROVIDER_BODY).collect())
                .await
            {
                Ok(Ok(c)) => c.to_bytes(),
                _ => {
                    self.observe(name, started);
                    return Ok(self.classified(
                        name,
                        started,
                        probe,
                        Transport::Broken,
                        None,
                        "provider_error",
                    ));
                }
            };
        self.observe(name, started);
        let decoded = match egress.decode_response(payment, &response_view(&parts, &bytes)) {
            Ok(outcome) => Some(outcome),
            Err(failure) => {
                tracing::warn!(provider = %name, plugin = %failure.plugin, kind = failure.kind.as_str(), detail = %failure.detail, "dialect failed to decode");
                None
            }
        };
        Ok(self.classified(
            name,
            started,
            probe,
            Transport::Answered,
            decoded,
            "provider_error",
        ))
    }

    /// Classify an attempt, count it, and make sure an outcome exists to render.
    #[allow(clippy::too_many_arguments)]
    fn classified(
        &self,
        name: &str,
        started: Instant,
        probe: bool,
        transport: Transport,
        decoded: Option<Outcome>,
        code: &str,
    ) -> (AttemptClass, Outcome) {
        let class = classify(transport, decoded.as_ref());
        self.health.record(
            name,
            class.provider_healthy(),
            started.elapsed(),
            probe,
            Instant::now(),
        );
        self.metrics
            .attempts
            .with_label_values(&[name, class.as_str()])
            .inc();
        let outcome = match (decoded, class) {
            (Some(outcome), _) => outcome,
            (None, AttemptClass::NotSent) => not_sent(code),
            (None, _) => ambiguous(code, "the provider did not give a trustworthy answer"),
        };
        (class, outcome)
    }

    fn observe(&self, provider: &str, started: Instant) {
        self.metrics
            .upstream_seconds
            .with_label_values(&[provider])
            .observe(started.elapsed().as_secs_f64());
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

impl Flow<'_> {
    /// A storefront-visible id. Idempotent requests get one derived from their record, so a
    /// retry that resumes after a crash shows the storefront the same id.
    fn mint(&self, prefix: &str) -> String {
        match &self.idempotency {
            Some(record) => {
                let digest = Sha256::digest(
                    format!(
                        "{prefix}\u{0}{record}\u{0}{}",
                        fingerprint(self.parts, &self.body)
                    )
                    .as_bytes(),
                );
                let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
                let token: String = digest
                    .iter()
                    .take(24)
                    .map(|b| alphabet[usize::from(*b) % alphabet.len()] as char)
                    .collect();
                format!("{prefix}{token}")
            }
            None => mint(prefix),
        }
    }

    fn keep_response(&self, response: StoredResponse) {
        if let Ok(mut keep) = self.keep.lock() {
            *keep = Some(response);
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What makes two requests "the same" for an idempotency key: method, path and body.
fn fingerprint(parts: &http::request::Parts, body: &Bytes) -> String {
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(parts.uri.path().as_bytes());
    hasher.update([0]);
    hasher.update(body);
    hex::encode(hasher.finalize())
}

/// A stored answer, replayed byte for byte, marked the way Stripe marks replays.
fn replay(route: &Route, stored: StoredResponse) -> Answer {
    let mut headers = stored.headers;
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case("idempotent-replayed"));
    headers.push(("idempotent-replayed".into(), "true".into()));
    let provider = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(PROVIDER_HEADER))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| "none".into());
    answer(
        route,
        &provider,
        HttpResponse {
            status: stored.status,
            headers,
            body: stored.body,
        },
    )
}

fn refusal(kind: RefusalKind, status: u16, code: &str, message: &str) -> Refusal {
    Refusal {
        kind,
        status,
        code: code.into(),
        message: message.into(),
    }
}

fn challenge(kind: ChallengeKind) -> Refusal {
    let (code, message) = match kind {
        ChallengeKind::StrongAuthentication => (
            "authentication_required",
            "strong customer authentication is required",
        ),
        ChallengeKind::PhoneVerification => (
            "phone_verification_required",
            "the shopper's phone number must be verified",
        ),
        ChallengeKind::IdentityDocuments => (
            "identity_verification_required",
            "the shopper's identity must be verified",
        ),
    };
    refusal(RefusalKind::Challenge(kind), 402, code, message)
}

/// The transport fact and error code behind a failed send.
fn transport_failure(e: &crate::error::ProxyError) -> (Transport, &'static str) {
    if e.retry_safe {
        (Transport::NotSent, "provider_unavailable")
    } else if e.status == StatusCode::GATEWAY_TIMEOUT {
        (Transport::TimedOutAfterSend, "provider_timeout")
    } else {
        (Transport::Broken, "provider_error")
    }
}

fn not_sent(code: &str) -> Outcome {
    Outcome {
        status: OutcomeStatus::Error(Failure {
            class: ErrorClass::NotSent,
            code: code.into(),
            provider_code: String::new(),
            message: "the payment did not reach the provider".into(),
        }),
        provider_reference: None,
        amount: None,
    }
}

fn ambiguous(code: &str, message: &str) -> Outcome {
    Outcome {
        status: OutcomeStatus::Error(Failure {
            class: ErrorClass::Ambiguous,
            code: code.into(),
            provider_code: String::new(),
            message: message.into(),
        }),
        provider_reference: None,
        amount: None,
    }
}

/// Metric label of an outcome.
pub fn outcome_label(status: &OutcomeStatus) -> &'static str {
    match status {
        OutcomeStatus::Approved => "approved",
        OutcomeStatus::Declined(_) => "declined",
        OutcomeStatus::RequiresAction(_) => "requires_action",
        OutcomeStatus::Pending => "pending",
        OutcomeStatus::Error(f) => match f.class {
            ErrorClass::NotSent => "not_sent",
            ErrorClass::AnsweredNotProcessed => "answered_not_processed",
            ErrorClass::Ambiguous => "ambiguous",
        },
    }
}

/// A new storefront-visible id: prefix + 24 random alphanumerics.
fn mint(prefix: &str) -> String {
    use rand::distr::{Alphanumeric, SampleString};
    format!(
        "{prefix}{}",
        Alphanumeric.sample_string(&mut rand::rng(), 24)
    )
}

/// The idempotency key a provider sees: stable for the same storefront request (same
/// storefront key, or same merchant reference and operation), distinct per provider.
pub fn provider_key(provider: &str, payment: &Payment) -> String {
    let basis = payment
        .idempotency_key
        .clone()
        .or_else(|| payment.merchant_reference.clone())
        .or_else(|| payment.id.clone())
        .unwrap_or_else(|| mint(""));
    let digest =
        Sha256::digest(format!("{provider}\u{0}{:?}\u{0}{basis}", payment.operation).as_bytes());
    format!("pp-{}", &hex::encode(digest)[..32])
}

/// Header names and values as plugins see them (values that are not UTF-8 are left out).
fn header_pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(n, v)| {
            v.to_str()
                .ok()
                .map(|v| (n.as_str().to_string(), v.to_string()))
        })
        .collect()
}

/// The plugin view of a request (headers that are not UTF-8 are left out).
pub fn http_view(parts: &http::request::Parts, body: Option<&Bytes>) -> HttpRequest {
    HttpRequest {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: header_pairs(&parts.headers),
        body: body.map(|b| b.to_vec()),
    }
}

fn response_view(parts: &http::response::Parts, body: &Bytes) -> HttpResponse {
    HttpResponse {
        status: parts.status.as_u16(),
        headers: header_pairs(&parts.headers),
        body: body.to_vec(),
    }
}

/// A provider request from a dialect's encoding; `None` when it is not valid HTTP.
fn outbound_request(
    upstream: &crate::upstream::Upstream,
    request: HttpRequest,
) -> Option<Request<ProxyBody>> {
    let path_and_query = match &request.query {
        Some(q) => format!("{}?{q}", request.path),
        None => request.path.clone(),
    };
    let uri = upstream.target(&path_and_query).ok()?;
    let mut builder = Request::builder().method(request.method.as_str()).uri(uri);
    let headers = builder.headers_mut()?;
    for (name, value) in &request.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            return None;
        };
        headers.append(name, value);
    }
    strip_hop_by_hop(headers);
    headers.remove(http::header::HOST);
    let body = Full::new(Bytes::from(request.body.unwrap_or_default()))
        .map_err(|never| match never {})
        .boxed();
    builder.body(body).ok()
}

fn answer(route: &Route, provider: &str, response: HttpResponse) -> Answer {
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(response.status).unwrap_or(StatusCode::BAD_GATEWAY));
    if let Some(headers) = builder.headers_mut() {
        for (name, value) in &response.headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.append(n, v);
            }
        }
        strip_hop_by_hop(headers);
        headers.remove(http::header::CONTENT_LENGTH);
        if provider != "none" {
            if let Ok(v) = HeaderValue::from_str(provider) {
                headers.insert(HeaderName::from_static(PROVIDER_HEADER), v);
            }
        }
    }
    let body = Full::new(Bytes::from(response.body))
        .map_err(|never| match never {})
        .boxed();
    let response = builder.body(body).unwrap_or_else(|_| {
        Response::new(
            Full::new(Bytes::new())
                .map_err(|never| match never {})
                .boxed(),
        )
    });
    Answer {
        route: route.name.clone(),
        provider: provider.to_string(),
        response,
    }
}

fn answer_from_error(route: &Route, error: crate::error::ProxyError) -> Answer {
    Answer {
        route: route.name.clone(),
        provider: error.provider.clone().unwrap_or_else(|| "none".into()),
        response: error
            .to_response()
            .map(|b| b.map_err(|never| match never {}).boxed()),
    }
}

fn plain_error(route: &Route, status: StatusCode, message: &str) -> Answer {
    let error = crate::error::ProxyError::plugin(status, "internal", message);
    answer_from_error(route, error)
}
