//! The request path, phase by phase: limits (accept) → match → route (router plugin) →
//! attempt (forward to the chosen provider) → respond → record (metrics).
//!
//! Every error the storefront sees is JSON (see [`ProxyError`]); nothing here panics on
//! request input. Each request runs on the snapshot it started with.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tracing::Instrument;

use crate::config::{CardData, OnError};
use crate::error::ProxyError;
use crate::failover::{Budget, Candidates, Transport};
use crate::health::{HealthBook, HealthMetrics};
use crate::metrics::{status_class, Metrics};
use crate::payment::{http_view, AuditLog, Payments};
use crate::plugin::RouteDecision;
use crate::reload::Reloader;
use crate::route::Route;
use crate::snapshot::Snapshot;
use crate::store::Store;
use crate::upstream::{clone_head, prepare_head, BoxError, Downstream, ProxyBody};

/// Header naming the provider that answered, for storefront debugging and operators.
pub const PROVIDER_HEADER: &str = "x-payproxy-provider";

/// The request handler shared by every listener.
pub struct Proxy {
    reloader: Arc<Reloader>,
    metrics: Arc<Metrics>,
    payments: Arc<Payments>,
}

/// The request body: streamed to the provider, or buffered when plugins need it (which
/// also makes it replayable for a retry on another provider).
enum Body {
    Streaming(Incoming),
    Buffered(Bytes),
}

/// A response with the labels it is counted under.
pub struct Answer {
    /// Route name.
    pub route: String,
    /// Provider that answered, or `none`.
    pub provider: String,
    /// The response.
    pub response: Response<ProxyBody>,
}

fn boxed_full(response: Response<Full<Bytes>>) -> Response<ProxyBody> {
    response.map(|b| b.map_err(|never| match never {}).boxed())
}

impl Proxy {
    /// A handler reading snapshots from `reloader`, keeping payment state in `store`.
    pub fn new(
        reloader: Arc<Reloader>,
        metrics: Arc<Metrics>,
        store: Arc<dyn Store>,
        ttl_ms: u64,
        audit: AuditLog,
    ) -> Proxy {
        let breaker = reloader.snapshot().config.breaker.clone();
        let health = Arc::new(HealthBook::new(
            breaker,
            HealthMetrics::register(metrics.registry()),
        ));
        // A reload brings its breaker settings and forgets the providers it removed.
        let book = health.clone();
        reloader.on_swap(move |snapshot| {
            book.set_config(snapshot.config.breaker.clone());
            book.retain(|name| snapshot.config.providers.contains_key(name));
        });
        let max_in_flight = reloader.snapshot().config.limits.max_payments_in_flight;
        Proxy {
            reloader,
            payments: Arc::new(Payments::new(
                metrics.clone(),
                store,
                ttl_ms,
                health,
                max_in_flight,
                Arc::new(audit),
            )),
            metrics,
        }
    }

    /// The payment routes' handler (its background tasks share it).
    pub fn payments(&self) -> Arc<Payments> {
        self.payments.clone()
    }

    /// Provider health and breakers, shared with the admin listener and active checks.
    pub fn health(&self) -> Arc<HealthBook> {
        self.payments.health.clone()
    }

    /// Handle one storefront request. Never fails: errors become JSON responses.
    ///
    /// `limits.request_timeout_ms` bounds the whole request on routes without a dialect. On a
    /// payment route it bounds reading the request; the payment phases are never cut by it
    /// (the config makes it hold their deadline, `failover.deadline_ms`, plus a margin): an
    /// attempt unanswered at the payment deadline is answered `processing` with the
    /// payment's id. They run on their own task, so a storefront that hangs up does not cut
    /// them either.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        downstream: Downstream,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let snapshot = self.reloader.snapshot();
        let deadline = started + Duration::from_millis(snapshot.config.limits.request_timeout_ms);
        let trace = crate::telemetry::RequestTrace::start(request.headers());
        // Boxed where it is made. The request's state machine is kilobytes (docs/benchmarks.md,
        // "Later changes"); unboxed, wrapping it in the trace's scope and awaiting it moved
        // all of it several times a request, where now a pointer moves.
        let work = Box::pin(self.process(&snapshot, request, downstream, deadline));
        let answer = match trace.clone().run(work).await {
            Ok(answer) => answer,
            Err((route, error)) => trace.in_scope(|| self.error_answer(route, error)),
        };
        let span = trace.span();
        if !span.is_disabled() {
            span.record("route", answer.route.as_str());
            span.record(
                "http.response.status_code",
                answer.response.status().as_u16(),
            );
        }
        self.metrics
            .requests
            .with_label_values(&[
                answer.route.as_str(),
                answer.provider.as_str(),
                status_class(answer.response.status().as_u16()),
            ])
            .inc();
        self.metrics
            .request_seconds
            .with_label_values(&[answer.route.as_str()])
            .observe(started.elapsed().as_secs_f64());
        answer.response
    }

    fn error_answer(&self, route: Option<String>, error: ProxyError) -> Answer {
        if error.status.is_server_error() {
            tracing::warn!(route = route.as_deref().unwrap_or("-"), code = %error.code, provider = error.provider.as_deref().unwrap_or("-"), "{}", error.message);
        } else {
            tracing::debug!(route = route.as_deref().unwrap_or("-"), code = %error.code, "{}", error.message);
        }
        Answer {
            route: route.unwrap_or_else(|| "none".into()),
            provider: error.provider.clone().unwrap_or_else(|| "none".into()),
            response: boxed_full(error.to_response()),
        }
    }

    async fn process(
        &self,
        snapshot: &Arc<Snapshot>,
        request: Request<Incoming>,
        downstream: Downstream,
        deadline: Instant,
    ) -> Result<Answer, (Option<String>, ProxyError)> {
        check_limits(snapshot, &request).map_err(|e| (None, e))?;

        // A provider's notification: `POST /webhooks/{provider}` for a configured provider.
        if let Some(provider) = webhook_provider(snapshot, &request) {
            crate::listener::priority::payment();
            let (parts, incoming) = request.into_parts();
            // Boxed, like the payment below: the request's future is sized for its largest
            // branch, and every request (the transparent ones too) builds and moves it.
            let response = Box::pin(
                self.payments
                    .webhook(snapshot, &provider, parts, incoming, deadline),
            )
            .await;
            return Ok(Answer {
                route: "webhooks".into(),
                provider,
                response: boxed_full(response),
            });
        }

        // match
        let host = request_host(&request);
        let (index, route) = snapshot
            .match_route(request.method(), host.as_deref(), request.uri().path())
            .ok_or_else(|| {
                (
                    None,
                    ProxyError::downstream(
                        StatusCode::NOT_FOUND,
                        "no_route",
                        "no route matches this host and path",
                    ),
                )
            })?;
        let fail = |e: ProxyError| (Some(route.name.clone()), e);

        // authenticate
        if !route.authorised(request.headers()) {
            self.metrics
                .storefront_refusals
                .with_label_values(&[route.name.as_str(), "unauthenticated"])
                .inc();
            tracing::warn!(route = %route.name, client = %downstream.client_ip, "storefront request without a valid key refused");
            // Counted and logged, not audited: not a decision of the merchant's, and an
            // anonymous client must not be able to fill the audit file.
            return Ok(self.payments.unauthenticated(route));
        }

        let (parts, incoming) = request.into_parts();
        let limit = snapshot.config.limits.max_body_bytes;
        if route.dialect.is_some() {
            let body = match read_body(incoming, limit, deadline).await {
                Ok(body) => body,
                Err(e) => {
                    let status = e.status.as_u16();
                    self.payments
                        .audit_early(snapshot, route, "body", &e.code, status);
                    return Err(fail(e));
                }
            };
            if let Some(refused) = self.card_data(snapshot, route, &parts, &body) {
                return Ok(refused);
            }
            crate::listener::priority::payment();
            return Ok(Box::pin(self.payments.spawn(
                snapshot.clone(),
                index,
                parts,
                body,
                downstream,
            ))
            .await);
        }
        // A pass-through request: payments of this thread waiting for the store go first.
        crate::listener::priority::pass_through();
        let scanned = route.card_data == CardData::Refuse;
        let body = if incoming.is_end_stream() {
            // No body at all: trivially replayable.
            Body::Buffered(Bytes::new())
        } else if route.plugin_body || scanned {
            Body::Buffered(read_body(incoming, limit, deadline).await.map_err(fail)?)
        } else {
            Body::Streaming(incoming)
        };
        if let (true, Body::Buffered(bytes)) = (scanned, &body) {
            if let Some(refused) = self.card_data(snapshot, route, &parts, bytes) {
                return Ok(refused);
            }
        }

        let transparent = async {
            // route
            let order = match &route.router {
                None => route.providers.clone(),
                Some(_) => self.decide(route, &parts, &body)?,
            };
            // attempt
            self.attempt(snapshot, route, parts, body, &order, downstream)
                .await
        };
        // Boxed, as the request's state machine is in `handle`: the attempt is most of that
        // state, and unboxed it is moved into the timeout and again into this future.
        match tokio::time::timeout_at(deadline.into(), Box::pin(transparent)).await {
            Ok(answer) => answer.map_err(fail),
            Err(_) => Err(fail(request_timeout(snapshot))),
        }
    }

    /// The refusal of a request carrying a card number, or a body that cannot be checked for
    /// one (encoded): in the storefront's dialect on a payment route, plain JSON elsewhere;
    /// what was found is never repeated.
    fn card_data(
        &self,
        snapshot: &Snapshot,
        route: &Route,
        parts: &http::request::Parts,
        body: &[u8],
    ) -> Option<Answer> {
        let refused = |reason: &str, code: &str, answer: Answer| {
            self.metrics
                .storefront_refusals
                .with_label_values(&[route.name.as_str(), reason])
                .inc();
            let status = answer.response.status().as_u16();
            self.payments
                .audit_early(snapshot, route, "card_data", code, status);
            Some(answer)
        };
        if !body.is_empty() && crate::cards::encoded(parts) {
            tracing::warn!(route = %route.name, "encoded request body refused: it cannot be checked for card numbers");
            let answer = self.payments.encoded_body(route);
            return refused("encoded_body", "content_encoding_not_accepted", answer);
        }
        let hit = crate::cards::find(parts, body)?;
        tracing::warn!(route = %route.name, place = hit.as_str(), "request carrying a card number refused");
        refused(
            "card_data",
            "card_number_not_accepted",
            self.payments.card_data(route, hit),
        )
    }

    /// Ask the route's router plugin for the provider order, applying its failure policy.
    fn decide(
        &self,
        route: &Route,
        parts: &http::request::Parts,
        body: &Body,
    ) -> Result<Vec<String>, ProxyError> {
        let Some((router, on_error)) = &route.router else {
            return Ok(route.providers.clone());
        };
        let view = http_view(
            parts,
            match body {
                Body::Buffered(bytes) if route.plugin_body => Some(bytes),
                _ => None,
            },
        );
        match router.route(&view, None, &route.provider_views, rand::random()) {
            Ok(RouteDecision::Providers(order)) => Ok(order),
            Ok(RouteDecision::Reject {
                status,
                code,
                message,
            }) => Err(ProxyError::policy(
                // The host checked 400..=599, so this conversion holds.
                StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
                code,
                message,
            )),
            Err(failure) => {
                tracing::warn!(route = %route.name, plugin = %failure.plugin, kind = failure.kind.as_str(), detail = %failure.detail, "router plugin failed");
                match on_error {
                    OnError::FailOpen => Ok(route.providers.clone()),
                    OnError::FailClosed => Err(ProxyError::plugin(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "plugin_failed",
                        format!("routing plugin {} failed", failure.plugin),
                    )),
                }
            }
        }
    }

    /// Forward to the first candidate. Another candidate is tried only when the request
    /// cannot have reached the previous one (connect failure) and the body is replayable.
    async fn attempt(
        &self,
        snapshot: &Snapshot,
        route: &Route,
        parts: http::request::Parts,
        body: Body,
        order: &[String],
        downstream: Downstream,
    ) -> Result<Answer, ProxyError> {
        let limit = snapshot.config.limits.max_body_bytes as usize;
        let (mut streaming, buffered) = match body {
            Body::Streaming(incoming) => (Some(incoming), None),
            Body::Buffered(bytes) => (None, Some(bytes)),
        };
        // Transparent routes have no payment deadline: the request timeout bounds them.
        let budget = Budget {
            max_attempts: u32::MAX,
            deadline: Instant::now()
                + Duration::from_millis(snapshot.config.limits.request_timeout_ms),
        };
        let mut candidates = Candidates::new(order, budget);
        // What `propagate` reads of the storefront's head, for when an attempt takes it.
        let context = crate::telemetry::context_headers(&parts.headers);
        // The storefront's head, until an attempt takes it.
        let mut parts = Some(parts);
        while let Some(name) = candidates.next() {
            let upstream = snapshot
                .providers
                .get(name)
                .map(|p| &p.upstream)
                .ok_or_else(|| {
                    ProxyError::plugin(
                        StatusCode::BAD_GATEWAY,
                        "unknown_provider",
                        format!("provider {name} is not configured"),
                    )
                })?;
            // A copy only when a later attempt may need the head again (a replayable body
            // and candidates left); otherwise this attempt takes it, and none follows.
            let mut head = match parts.take() {
                Some(storefront) if buffered.is_some() && candidates.has_more() => {
                    let head = clone_head(&storefront);
                    parts = Some(storefront);
                    head
                }
                Some(storefront) => storefront,
                None => break,
            };
            let target = upstream.target(head.uri.path_and_query().map_or("/", |p| p.as_str()))?;
            prepare_head(&mut head, target, downstream);
            if !route.storefront_keys.is_empty() {
                // The storefront's key is payproxy's to check, not the provider's to see.
                head.headers.remove(header::AUTHORIZATION);
            }
            let outbound: ProxyBody = match (&buffered, streaming.take()) {
                (Some(bytes), _) => Full::new(bytes.clone())
                    .map_err(|never| match never {})
                    .boxed(),
                (None, Some(incoming)) => Limited::new(incoming, limit)
                    .map_err(BoxError::from)
                    .boxed(),
                // A streamed body was consumed by an earlier attempt: nothing left to replay.
                (None, None) => break,
            };
            let span = crate::telemetry::attempt_span(name, "forward");
            crate::telemetry::propagate(&span, &mut head.headers, &context);
            let started = Instant::now();
            let result = upstream
                .send(Request::from_parts(head, outbound))
                .instrument(span.clone())
                .await;
            self.metrics
                .upstream_seconds
                .with_label_values(&[name])
                .observe(started.elapsed().as_secs_f64());
            if let Ok(response) = &result {
                span.record("http.response.status_code", response.status().as_u16());
            }
            match result {
                Ok(response) => return Ok(relay(route, name, response)),
                // Nothing reached the provider and the body can be sent again: next one.
                Err(failed) if failed.transport == Transport::NotSent && buffered.is_some() => {
                    tracing::warn!(route = %route.name, provider = %name, code = %failed.error.code, "provider not reached; trying the next candidate");
                    candidates.failed(name, failed.error);
                }
                Err(failed) => return Err(failed.error),
            }
        }
        Err(candidates
            .into_last()
            .map(|(_, error)| error)
            .unwrap_or_else(|| {
                ProxyError::plugin(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_provider",
                    "no provider to try",
                )
            }))
    }
}

/// A provider's answer for the storefront: streamed back unchanged but for hop-by-hop
/// headers, with the provider named in `x-payproxy-provider`.
pub fn relay(route: &Route, provider: &str, response: Response<Incoming>) -> Answer {
    let (mut parts, body) = response.into_parts();
    crate::upstream::strip_hop_by_hop(&mut parts.headers);
    if let Ok(value) = HeaderValue::from_str(provider) {
        parts
            .headers
            .insert(HeaderName::from_static(PROVIDER_HEADER), value);
    }
    Answer {
        route: route.name.clone(),
        provider: provider.to_string(),
        response: Response::from_parts(parts, body.map_err(BoxError::from).boxed()),
    }
}

/// Header count, header bytes and declared body size against the limits (→ 431 / 413).
/// The provider a `POST /webhooks/{provider}` is for, when it names a configured provider
/// with a dialect (other paths, and unknown names, are matched against the routes).
fn webhook_provider<B>(snapshot: &Snapshot, request: &Request<B>) -> Option<String> {
    if request.method() != Method::POST {
        return None;
    }
    let name = request.uri().path().strip_prefix(WEBHOOK_PATH)?;
    let entry = snapshot.providers.get(name)?;
    entry.dialect.as_ref().map(|_| name.to_string())
}

/// Where providers send their notifications (`/webhooks/{provider}`).
pub const WEBHOOK_PATH: &str = "/webhooks/";

fn check_limits(snapshot: &Snapshot, request: &Request<Incoming>) -> Result<(), ProxyError> {
    let limits = &snapshot.config.limits;
    let headers = request.headers();
    if headers.len() > limits.max_headers {
        return Err(ProxyError::downstream(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "too_many_headers",
            format!(
                "{} headers exceed the limit of {}",
                headers.len(),
                limits.max_headers
            ),
        ));
    }
    let bytes: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum();
    if bytes > limits.max_header_bytes {
        return Err(ProxyError::downstream(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "headers of {bytes} bytes exceed the limit of {}",
                limits.max_header_bytes
            ),
        ));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes) {
        return Err(body_too_large(limits.max_body_bytes));
    }
    Ok(())
}

fn body_too_large(limit: u64) -> ProxyError {
    ProxyError::downstream(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("request body exceeds the limit of {limit} bytes"),
    )
}

/// The whole body, within `limit` bytes and by `deadline` (a storefront sending its body too
/// slowly gets 408).
async fn read_body(incoming: Incoming, limit: u64, deadline: Instant) -> Result<Bytes, ProxyError> {
    let collect = Limited::new(incoming, limit as usize).collect();
    match tokio::time::timeout_at(deadline.into(), collect).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(body_too_large(limit)),
        Ok(Err(_)) => Err(ProxyError::downstream(
            StatusCode::BAD_REQUEST,
            "body_read_error",
            "the request body could not be read",
        )),
        Err(_) => Err(ProxyError::downstream(
            StatusCode::REQUEST_TIMEOUT,
            "request_body_timeout",
            "the request body did not arrive in time",
        )),
    }
}

fn request_timeout(snapshot: &Snapshot) -> ProxyError {
    ProxyError {
        status: StatusCode::GATEWAY_TIMEOUT,
        origin: crate::error::Source::Internal,
        code: "request_timeout".into(),
        message: format!(
            "no answer within {} ms",
            snapshot.config.limits.request_timeout_ms
        ),
        retry_safe: false,
        provider: None,
    }
}

/// The request's host without port: `Host` header (HTTP/1.1) or the URI authority (h2).
fn request_host<B>(request: &Request<B>) -> Option<String> {
    let raw = request.uri().host().map(str::to_string).or_else(|| {
        request
            .headers()
            .get(header::HOST)?
            .to_str()
            .ok()
            .map(str::to_string)
    })?;
    let host = match raw.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6).to_string(),
        None => raw.split(':').next().unwrap_or(&raw).to_string(),
    };
    Some(host.to_ascii_lowercase())
}
