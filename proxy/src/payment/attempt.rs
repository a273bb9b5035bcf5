//! The attempt phase: candidates in order under the failover policy, same-dialect
//! forwarding, translated sends, classification, and resolution after ambiguous attempts.

use super::*;

impl Payments {
    /// Try the candidates in order, within the route's attempt and time budget. Another
    /// candidate only when the previous one certainly did nothing; after an ambiguous
    /// attempt the payment stays with that provider (see [`Payments::resolve`]).
    pub(super) async fn attempt(
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
    pub(super) async fn forward(
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
    pub(super) async fn send_once(
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
    pub(super) fn classified(
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

    pub(super) fn observe(&self, provider: &str, started: Instant) {
        self.metrics
            .upstream_seconds
            .with_label_values(&[provider])
            .observe(started.elapsed().as_secs_f64());
    }
}

/// The transport fact and error code behind a failed send.
pub(super) fn transport_failure(e: &crate::error::ProxyError) -> (Transport, &'static str) {
    if e.retry_safe {
        (Transport::NotSent, "provider_unavailable")
    } else if e.status == StatusCode::GATEWAY_TIMEOUT {
        (Transport::TimedOutAfterSend, "provider_timeout")
    } else {
        (Transport::Broken, "provider_error")
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
