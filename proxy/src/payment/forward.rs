//! Forward: calls the storefront dialect does not orchestrate (customers, payment methods,
//! setup intents, unknown endpoints, payments payproxy has never seen) go unchanged to the
//! route's home provider, or to the provider owning the object they name. Only hop-by-hop
//! headers, `Host` and credentials change: the provider gets its own configured credentials,
//! never the storefront's `Authorization` or cookies.

use super::*;
use http::header;

/// Headers that carry the storefront's own credentials; never forwarded.
const STOREFRONT_CREDENTIALS: [HeaderName; 3] = [
    header::AUTHORIZATION,
    header::COOKIE,
    header::PROXY_AUTHORIZATION,
];

impl Payments {
    /// Forward the request to the owner of `id` (when payproxy knows one of the storefront's
    /// dialect) or to the home provider, and relay its answer unchanged.
    pub(super) async fn forward_call(&self, ctx: &Ctx<'_>, id: Option<&str>) -> Answer {
        if ctx.host_made {
            // A request payproxy made itself (a pending-payment query) has no storefront
            // request to forward.
            return self.refuse(
                ctx,
                refusal(
                    RefusalKind::NotFound,
                    404,
                    "resource_missing",
                    "no such payment",
                ),
            );
        }
        let target = match id {
            Some(id) => self.owner_of(ctx, id).await,
            None => None,
        };
        let Some(name) = target.or_else(|| ctx.route.home.clone()) else {
            return self.refuse(
                ctx,
                refusal(
                    RefusalKind::NotFound,
                    404,
                    "unrecognized_request_url",
                    "this route has no home provider for requests payproxy does not orchestrate",
                ),
            );
        };
        let Some(entry) = ctx.snapshot.providers.get(&name) else {
            return plain_error(ctx.route, StatusCode::BAD_GATEWAY, "home provider missing");
        };
        let credentials = match entry.credentials_now().await {
            Ok(credentials) => credentials,
            Err(error) => {
                tracing::warn!(provider = %name, %error, "no OAuth token for the provider; not forwarding");
                return plain_error(
                    ctx.route,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the provider cannot be reached right now",
                );
            }
        };
        let mut head = match self.forward_head(ctx, entry, &credentials) {
            Ok(head) => head,
            Err(answer) => return answer,
        };
        let span = crate::telemetry::attempt_span(&name, "forward");
        crate::telemetry::propagate(&span, &mut head.headers, &ctx.parts.headers);
        let body: ProxyBody = Full::new(ctx.body.clone())
            .map_err(|never| match never {})
            .boxed();
        let started = Instant::now();
        let sent = entry
            .upstream
            .send(Request::from_parts(head, body))
            .instrument(span.clone())
            .await;
        self.observe(&name, started);
        let status = sent.as_ref().ok().map(|r| r.status().as_u16());
        if let Some(status) = status {
            span.record("http.response.status_code", status);
        }
        // For a payment payproxy has never seen (relayed, not orchestrated): its audit line.
        ctx.note(|d| {
            d.path = Some("forwarded");
            d.provider = Some(name.clone());
            if status.is_some() {
                d.outcome.get_or_insert_with(|| "forwarded".into());
            }
            d.attempts.push(audit::AttemptNote {
                provider: name.clone(),
                kind: "forward",
                class: match &sent {
                    Ok(_) => "relayed",
                    Err(failed) if failed.transport == Transport::NotSent => "not_sent",
                    Err(_) => "ambiguous",
                },
                status,
            });
        });
        match sent {
            Ok(response) => {
                tracing::debug!(route = %ctx.route.name, provider = %name, status = response.status().as_u16(), "forwarded");
                crate::proxy::relay(ctx.route, &name, response)
            }
            Err(failed) => {
                tracing::warn!(route = %ctx.route.name, provider = %name, code = %failed.error.code, "forwarding failed");
                let (code, message) = match failed.transport {
                    Transport::NotSent => {
                        ("provider_unreachable", "the provider could not be reached")
                    }
                    _ => ("provider_error", "the provider did not answer"),
                };
                let mut r = refusal(RefusalKind::Unavailable, 502, code, message);
                if failed.transport == Transport::NotSent {
                    r.status = 503;
                }
                self.refuse(ctx, r)
            }
        }
    }

    /// The provider of the storefront's dialect that owns object `id`, if payproxy knows one.
    async fn owner_of(&self, ctx: &Ctx<'_>, id: &str) -> Option<String> {
        let key = id.to_string();
        let owner = match self.state(move |s| s.owner(&key)).await {
            Ok(Some(owner)) => Some(owner.provider),
            Ok(None) => {
                let key = id.to_string();
                let route = ctx.route.name.clone();
                match self.state(move |s| s.payment(&key)).await {
                    Ok(entry) => entry
                        .filter(|e| e.route == route)
                        .and_then(|e| e.owner)
                        .map(|o| o.provider),
                    Err(e) => {
                        tracing::warn!(error = %e, "state store failed reading an owner; forwarding home");
                        None
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "state store failed reading an owner; forwarding home");
                None
            }
        }?;
        self.speaks_storefront(ctx, &owner).then_some(owner)
    }

    /// The storefront's request head for `provider`: target URI, hop-by-hop headers and the
    /// storefront's credentials removed, the provider's own credentials added.
    pub(super) fn forward_head(
        &self,
        ctx: &Ctx<'_>,
        provider: &ProviderEntry,
        credentials: &[(String, String)],
    ) -> Result<http::request::Parts, Answer> {
        let path_and_query = ctx
            .parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let target = provider
            .upstream
            .target(path_and_query)
            .map_err(|e| answer_from_error(ctx.route, e))?;
        let mut head = clone_head(ctx.parts);
        prepare_head(&mut head, target, ctx.downstream);
        let credentials = ctx
            .ingress
            .forward_headers(credentials)
            .map_err(|failure| self.plugin_failed(ctx, &failure))?;
        if !with_provider_credentials(&mut head.headers, credentials) {
            tracing::warn!(route = %ctx.route.name, "dialect gave an invalid credential header; left out");
        }
        Ok(head)
    }

    pub(super) fn observe(&self, provider: &str, started: Instant) {
        self.metrics
            .upstream_seconds
            .with_label_values(&[provider])
            .observe(started.elapsed().as_secs_f64());
    }
}

/// Replace the storefront's credentials with the provider's: `false` when a header the
/// dialect gave is not valid HTTP (it is left out).
fn with_provider_credentials(
    headers: &mut http::HeaderMap,
    credentials: Vec<(String, String)>,
) -> bool {
    for name in &STOREFRONT_CREDENTIALS {
        headers.remove(name);
    }
    // payproxy's own mark for its dialects: a storefront's copy goes no further.
    headers.remove(payproxy_plugin_sdk::storefront::HELD_HEADER);
    let mut valid = true;
    for (name, value) in credentials {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            (Ok(name), Ok(value)) => {
                headers.insert(name, value);
            }
            _ => valid = false,
        }
    }
    valid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_sees_only_its_own_credentials() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer sk_shop"),
        );
        headers.append(header::COOKIE, HeaderValue::from_static("a=1"));
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        headers.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic x"),
        );
        headers.insert("stripe-version", HeaderValue::from_static("2024-06-20"));
        let ok = with_provider_credentials(
            &mut headers,
            vec![
                ("authorization".into(), "Bearer sk_provider".into()),
                ("bad header".into(), "x".into()),
            ],
        );
        assert!(!ok, "the invalid header is reported");
        assert_eq!(headers[header::AUTHORIZATION], "Bearer sk_provider");
        assert!(headers.get(header::COOKIE).is_none());
        assert!(headers.get(header::PROXY_AUTHORIZATION).is_none());
        assert_eq!(
            headers["stripe-version"], "2024-06-20",
            "other headers stay"
        );
        // A dialect without credentials for this provider: the storefront's are still gone.
        let mut headers = http::HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer sk_shop"),
        );
        assert!(with_provider_credentials(&mut headers, vec![]));
        assert!(headers.is_empty());
    }
}
