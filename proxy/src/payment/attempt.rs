//! The attempt phase: candidates in order under the failover policy, same-dialect
//! forwarding, translated sends, classification, and resolution after ambiguous attempts.

use super::idempotency::Held;
use super::*;

/// How the attempt phase ended.
pub(super) enum Attempted {
    /// A translated outcome from `provider` (or the last candidate's when none took it).
    /// `hold`: the outcome is unknown and has no reference; the idempotency record must
    /// stay in flight so a retry resumes at this provider.
    Outcome {
        provider: String,
        outcome: Outcome,
        hold: bool,
    },
    /// The provider's own answer, forwarded unchanged (same dialect), with the dialect's
    /// reading of it (to learn the provider's id) and what the idempotency record keeps.
    Forwarded {
        provider: String,
        answer: Box<Answer>,
        outcome: Option<Outcome>,
        keep: Keep,
    },
    /// Refused before anything was sent (encode refusal, journal failure, no candidate).
    Refused(Refusal),
}

impl Payments {
    /// Try the candidates in order, within the route's attempt and time budget. Another
    /// candidate only when the previous one certainly did nothing; after an ambiguous
    /// attempt the payment stays with that provider (see [`Payments::resolve`]).
    /// `affinity`: the payment already belongs to the first candidate (follow-ups, resumed
    /// requests), breaker or not. `unchanged`: the storefront's request may be forwarded as
    /// is to a provider of its own dialect.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn attempt(
        &self,
        ctx: &Ctx<'_>,
        payment: &Payment,
        order: &[String],
        resume: Option<&Attempt>,
        affinity: bool,
        unchanged: bool,
        held: Option<&Held>,
    ) -> Attempted {
        let policy = &ctx.route.failover;
        let deadline = Instant::now() + Duration::from_millis(policy.deadline_ms);
        let budget = Budget {
            max_attempts: policy.max_attempts,
            deadline,
        };
        let mut candidates = Candidates::new(order, budget);
        while let Some(name) = candidates.next() {
            let Some(entry) = ctx.snapshot.providers.get(name) else {
                continue;
            };
            let Some((dialect_name, egress)) = &entry.dialect else {
                continue;
            };
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
                        .with_label_values(&[name, "breaker_open"])
                        .inc();
                    continue;
                }
            };
            // A resumed request reuses the key it journaled before the crash.
            let key = match resume {
                Some(attempt) if attempt.provider == name => attempt.provider_key.clone(),
                _ => provider_key(name, payment),
            };
            // Nothing goes out unjournaled: a claim lost to a takeover (fenced) stops here,
            // before this provider is tried.
            if let Err(refused) = self.journal(ctx, held, name, &key).await {
                return Attempted::Refused(refused);
            }
            // Counted once the payment really moves on (journaled, about to be sent).
            if let Some((from, outcome)) = candidates.last() {
                self.failover(from, name, outcome);
            }
            // A resumed payment may already be charged here under `key`: sending again is
            // safe only where the provider replays a request with the same key. Elsewhere it
            // stays unknown (parked), resolved by what the provider says later, never resent.
            let resumed_here = resume.is_some_and(|a| a.provider == name);
            if resumed_here
                && !egress.capabilities().idempotent_resend
                && dialect_name != ctx.ingress_name
            {
                tracing::warn!(route = %ctx.route.name, provider = %name, "resumed payment at a provider that cannot replay a request: not resending; its outcome stays unknown");
                let unknown = ambiguous(
                    "provider_timeout",
                    "the payment may have been processed; its outcome is not known yet",
                );
                let (outcome, hold) = self
                    .resolve(ctx, name, entry, egress, payment, &key, unknown, deadline)
                    .await;
                return Attempted::Outcome {
                    provider: name.to_string(),
                    outcome,
                    hold,
                };
            }
            if unchanged && dialect_name == ctx.ingress_name {
                match self
                    .forward(
                        Attempting {
                            ctx,
                            name,
                            kind: "forward",
                            probe,
                            status: None,
                        },
                        entry,
                        egress,
                        payment,
                        deadline,
                    )
                    .await
                {
                    Ok(forwarded) => return forwarded,
                    // Sent, no trustworthy answer: stays here, rendered in the storefront's dialect.
                    Err((outcome, true)) => {
                        return Attempted::Outcome {
                            provider: name.to_string(),
                            outcome,
                            hold: true,
                        }
                    }
                    Err((not_sent, false)) => {
                        candidates.failed(name, not_sent);
                        continue;
                    }
                }
            }
            let (class, outcome) = match self
                .send_once(
                    Attempting {
                        ctx,
                        name,
                        kind: "send",
                        probe,
                        status: None,
                    },
                    entry,
                    egress,
                    payment,
                    &key,
                    deadline,
                )
                .await
            {
                Ok(result) => result,
                Err(refusal) => return Attempted::Refused(refusal),
            };
            match next(class, policy.retry_soft_declines) {
                Next::Stop => {
                    return Attempted::Outcome {
                        provider: name.to_string(),
                        outcome,
                        hold: false,
                    }
                }
                Next::NextProvider => {
                    tracing::warn!(route = %ctx.route.name, provider = %name, class = class.as_str(), "provider did not take the payment; trying the next candidate");
                    candidates.failed(name, outcome);
                }
                Next::Resolve => {
                    let (outcome, hold) = self
                        .resolve(ctx, name, entry, egress, payment, &key, outcome, deadline)
                        .await;
                    return Attempted::Outcome {
                        provider: name.to_string(),
                        outcome,
                        hold,
                    };
                }
            }
        }
        match candidates.into_last() {
            Some((provider, outcome)) => Attempted::Outcome {
                provider,
                outcome,
                hold: false,
            },
            None => Attempted::Refused(refusal(
                RefusalKind::Unavailable,
                503,
                "no_provider",
                "no provider can take this payment",
            )),
        }
    }

    /// Journal an attempt before it is sent, on the request's idempotency record (after a
    /// crash, its retry resumes there) and then on the payment's lock (whoever takes the
    /// lock over learns the payment may be charged there, and waits for that retry).
    /// Either write failing, the lock or the key lost to a takeover included, nothing is
    /// sent.
    async fn journal(
        &self,
        ctx: &Ctx<'_>,
        held: Option<&Held>,
        provider: &str,
        provider_key: &str,
    ) -> Result<(), Refusal> {
        // On the lock only with an idempotency key: an attempt marks a payment unresolved
        // until its request's retry resumes it, and a request without a key has no retry
        // that could.
        let Some(held) = held else {
            return Ok(());
        };
        let keys: Vec<String> = std::iter::once(held.record.clone())
            .chain(ctx.lock.get().cloned())
            .collect();
        let attempt = Attempt {
            provider: provider.to_string(),
            provider_key: provider_key.to_string(),
        };
        self.state(move |s| {
            keys.iter()
                .try_for_each(|key| s.note_attempt(key, &attempt))
        })
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

    pub(super) fn failover(&self, from: &str, to: &str, outcome: &Outcome) {
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
    pub(super) async fn resolve(
        &self,
        ctx: &Ctx<'_>,
        name: &str,
        entry: &ProviderEntry,
        egress: &DialectPlugin,
        payment: &Payment,
        key: &str,
        ambiguous: Outcome,
        deadline: Instant,
    ) -> (Outcome, bool) {
        let policy = &ctx.route.failover;
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
                    .send_once(
                        Attempting::new(ctx, name, "resend"),
                        entry,
                        egress,
                        payment,
                        key,
                        deadline,
                    )
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
                        return (outcome, false);
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
                    .send_once(
                        Attempting::new(ctx, name, "status"),
                        entry,
                        egress,
                        &status,
                        key,
                        deadline,
                    )
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
                        return (outcome, false);
                    }
                }
            }
        }
        self.metrics
            .resolutions
            .with_label_values(&[name, "pending", "ambiguous"])
            .inc();
        match reference {
            // A status query that got no readable answer learned nothing: the record stands
            // (answering "pending" would move a payment waiting on its shopper to
            // processing and lose its next action).
            _ if payment.operation == Operation::Status => (ambiguous, false),
            // The provider has an id for it: answer pending; status queries can follow it.
            Some(reference) => {
                tracing::warn!(route = %ctx.route.name, provider = %name, "payment outcome unknown after resolution; answering pending");
                let pending = Outcome {
                    status: OutcomeStatus::Pending,
                    provider_reference: Some(reference),
                    amount: payment.amount.clone(),
                };
                (pending, false)
            }
            // Nothing to follow: answer "unknown, retry with the same key" and keep the
            // idempotency record in flight, so the retry resumes at this provider with the
            // same provider key once the record is stale — never at another provider.
            None => {
                tracing::warn!(route = %ctx.route.name, provider = %name, "payment outcome unknown and no provider reference; holding the idempotency record");
                (ambiguous, true)
            }
        }
    }

    /// Same dialect: forward the storefront's request unchanged (with the provider's own
    /// credentials), decode the answer only to classify it and learn the provider's id.
    /// `Err((outcome, hold))`: no answer to relay; `hold` when it may exist at this provider
    /// (a retry must resume here), else nothing was sent and the next candidate may be tried.
    pub(super) async fn forward(
        &self,
        at: Attempting<'_, '_>,
        entry: &ProviderEntry,
        egress: &DialectPlugin,
        payment: &Payment,
        deadline: Instant,
    ) -> Result<Attempted, (Outcome, bool)> {
        self.forward_inner(at, entry, egress, payment, deadline)
            .instrument(crate::telemetry::attempt_span(at.name, at.kind))
            .await
    }

    async fn forward_inner(
        &self,
        attempting: Attempting<'_, '_>,
        entry: &ProviderEntry,
        egress: &DialectPlugin,
        payment: &Payment,
        deadline: Instant,
    ) -> Result<Attempted, (Outcome, bool)> {
        let Attempting { ctx, name, .. } = attempting;
        let at = |status| Attempting {
            status,
            ..attempting
        };
        if ctx.host_made {
            // Nothing from the storefront to forward (a pending-payment query).
            return Err((not_sent("invalid_request"), false));
        }
        let credentials = match entry.credentials_now().await {
            Ok(credentials) => credentials,
            Err(error) => {
                tracing::warn!(provider = %name, %error, "no OAuth token for the provider; not sending");
                // Counted like the encoded path's: a provider whose token cannot be had is
                // unavailable (health, attempts metric, audit).
                let (_, outcome) = self.classified(
                    at(None),
                    Instant::now(),
                    Transport::NotSent,
                    None,
                    "provider_auth_unavailable",
                );
                return Err((outcome, false));
            }
        };
        let Ok(mut head) = self.forward_head(ctx, entry, &credentials) else {
            return Err((not_sent("invalid_request"), false));
        };
        crate::telemetry::propagate(
            &tracing::Span::current(),
            &mut head.headers,
            &ctx.parts.headers,
        );
        let outbound: ProxyBody = Full::new(ctx.body.clone())
            .map_err(|never| match never {})
            .boxed();
        let started = Instant::now();
        let send = entry.upstream.send(Request::from_parts(head, outbound));
        let response = tokio::time::timeout_at(deadline.into(), send).await;
        self.observe(name, started);
        let response = match response {
            Ok(Ok(r)) => r,
            // Sent and unanswered by the deadline: it may exist at this provider.
            Err(_) => {
                let (_, outcome) = self.classified(
                    at(None),
                    started,
                    Transport::TimedOutAfterSend,
                    None,
                    "provider_timeout",
                );
                return Err((outcome, true));
            }
            Ok(Err(failed)) => {
                let code = transport_code(failed.transport);
                let (_, outcome) = self.classified(at(None), started, failed.transport, None, code);
                // Unless nothing was sent, it may exist at this provider: a retry must
                // resume here, not start anew.
                return Err((outcome, failed.transport != Transport::NotSent));
            }
        };
        let (mut parts, body) = response.into_parts();
        let collect = Limited::new(body, MAX_PROVIDER_BODY).collect();
        let bytes = match tokio::time::timeout_at(deadline.into(), collect).await {
            Ok(Ok(c)) => c.to_bytes(),
            _ => {
                let (_, outcome) =
                    self.classified(at(None), started, Transport::Broken, None, "provider_error");
                return Err((outcome, true));
            }
        };
        // Decode only to classify (failover) and to learn the provider's id (records).
        let decoded = egress
            .decode_response(payment, &response_view(&parts, &bytes))
            .ok();
        let (class, outcome) = self.classified(
            at(Some(parts.status.as_u16())),
            started,
            Transport::Answered,
            decoded.clone(),
            "provider_error",
        );
        if next(class, ctx.route.failover.retry_soft_declines) == Next::NextProvider {
            return Err((outcome, false));
        }
        strip_hop_by_hop(&mut parts.headers);
        let keep = if class == AttemptClass::Ambiguous {
            // It may exist there: a retry resumes at this provider, never elsewhere.
            Keep::Hold
        } else if parts.status.as_u16() < 500 {
            let mut headers = header_pairs(&parts.headers);
            headers.push((PROVIDER_HEADER.into(), name.to_string()));
            Keep::Replay(StoredResponse {
                status: parts.status.as_u16(),
                headers,
                body: bytes.to_vec(),
            })
        } else {
            Keep::Release
        };
        if let Ok(v) = HeaderValue::from_str(name) {
            parts
                .headers
                .insert(HeaderName::from_static(PROVIDER_HEADER), v);
        }
        let response = Response::from_parts(
            parts,
            Full::new(bytes).map_err(|never| match never {}).boxed(),
        );
        Ok(Attempted::Forwarded {
            provider: name.to_string(),
            answer: Box::new(Answer {
                route: ctx.route.name.clone(),
                provider: name.to_string(),
                response,
            }),
            outcome: decoded,
            keep,
        })
    }

    /// One attempt at a provider of another dialect: encode, send, decode, classify.
    /// Err = the dialect refused the payment before anything was sent.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send_once(
        &self,
        at: Attempting<'_, '_>,
        entry: &ProviderEntry,
        egress: &DialectPlugin,
        payment: &Payment,
        key: &str,
        deadline: Instant,
    ) -> Result<(AttemptClass, Outcome), Refusal> {
        self.send_inner(at, entry, egress, payment, key, deadline)
            .instrument(crate::telemetry::attempt_span(at.name, at.kind))
            .await
    }

    async fn send_inner(
        &self,
        attempting: Attempting<'_, '_>,
        entry: &ProviderEntry,
        egress: &DialectPlugin,
        payment: &Payment,
        key: &str,
        deadline: Instant,
    ) -> Result<(AttemptClass, Outcome), Refusal> {
        let Attempting { ctx, name, .. } = attempting;
        let at = |status| Attempting {
            status,
            ..attempting
        };
        let started = Instant::now();
        let credentials = match entry.credentials_now().await {
            Ok(credentials) => credentials.into_owned(),
            Err(error) => {
                tracing::warn!(provider = %name, %error, "no OAuth token for the provider; not sending");
                return Ok(self.classified(
                    at(None),
                    started,
                    Transport::NotSent,
                    None,
                    "provider_auth_unavailable",
                ));
            }
        };
        let context = Context {
            provider: name.to_string(),
            credentials,
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
        let Some(mut outbound) = request.and_then(|r| outbound_request(&entry.upstream, r)) else {
            return Ok(self.classified(
                at(None),
                started,
                Transport::NotSent,
                None,
                "provider_error",
            ));
        };
        crate::telemetry::propagate(
            &tracing::Span::current(),
            outbound.headers_mut(),
            &ctx.parts.headers,
        );
        // The provider's latency (the upstream histogram) is request sent to response head,
        // as on the forward path: the dialect's encode and decode are the plugin histogram's.
        let sent_at = Instant::now();
        // The payment's deadline, as on the forward path: a token fetch or an encode before
        // the send does not extend it.
        let send = tokio::time::timeout_at(deadline.into(), entry.upstream.send(outbound));
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
        self.observe(name, sent_at);
        let response = match sent {
            Ok(Ok(r)) => r,
            Ok(Err(failed)) => {
                let code = transport_code(failed.transport);
                return Ok(self.classified(at(None), started, failed.transport, None, code));
            }
            Err(_) => {
                return Ok(self.classified(
                    at(None),
                    started,
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
                    return Ok(self.classified(
                        at(None),
                        started,
                        Transport::Broken,
                        None,
                        "provider_error",
                    ));
                }
            };
        let decoded = match egress.decode_response(payment, &response_view(&parts, &bytes)) {
            Ok(outcome) => Some(outcome),
            Err(failure) => {
                tracing::warn!(provider = %name, plugin = %failure.plugin, kind = failure.kind.as_str(), detail = %failure.detail, "dialect failed to decode");
                None
            }
        };
        Ok(self.classified(
            at(Some(parts.status.as_u16())),
            started,
            Transport::Answered,
            decoded,
            "provider_error",
        ))
    }

    /// Classify an attempt, count it, and make sure an outcome exists to render.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn classified(
        &self,
        at: Attempting<'_, '_>,
        started: Instant,
        transport: Transport,
        decoded: Option<Outcome>,
        code: &str,
    ) -> (AttemptClass, Outcome) {
        let Attempting {
            ctx,
            name,
            kind,
            probe,
            status,
        } = at;
        let class = classify(transport, decoded.as_ref());
        let span = tracing::Span::current();
        span.record("class", class.as_str());
        if let Some(status) = status {
            span.record("http.response.status_code", status);
        }
        ctx.note(|d| {
            d.attempts.push(audit::AttemptNote {
                provider: name.to_string(),
                kind,
                class: class.as_str(),
                status,
            })
        });
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
}

/// Who an attempt is for: the request, the provider, what kind of attempt it is (`forward`,
/// `send`, `resend`, `status`), whether it is a breaker probe, and the provider's HTTP status
/// once it answered.
#[derive(Clone, Copy)]
pub(super) struct Attempting<'c, 'a> {
    pub ctx: &'c Ctx<'a>,
    pub name: &'c str,
    pub kind: &'static str,
    pub probe: bool,
    pub status: Option<u16>,
}

impl<'c, 'a> Attempting<'c, 'a> {
    pub(super) fn new(ctx: &'c Ctx<'a>, name: &'c str, kind: &'static str) -> Self {
        Attempting {
            ctx,
            name,
            kind,
            probe: false,
            status: None,
        }
    }
}

/// The error code of an outcome nobody decoded, by what the transport saw.
pub(super) fn transport_code(transport: Transport) -> &'static str {
    match transport {
        Transport::NotSent => "provider_unavailable",
        Transport::TimedOutAfterSend => "provider_timeout",
        Transport::Broken | Transport::Answered => "provider_error",
    }
}

pub(super) fn not_sent(code: &str) -> Outcome {
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

pub(super) fn ambiguous(code: &str, message: &str) -> Outcome {
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
