//! Respond: refusals, outcomes and records rendered in the storefront's dialect, and the
//! audit line.

use super::*;
use crate::plugin::storefront::PaymentRecord;

impl Payments {
    /// Render a refusal in the storefront's dialect.
    pub(super) fn refuse(&self, ctx: &Ctx<'_>, refusal: Refusal) -> Answer {
        ctx.note(|d| {
            d.refusal = Some(audit::Refused {
                stage: d.stage,
                code: refusal.code.clone(),
            })
        });
        refuse_on(ctx.route, ctx.ingress, refusal)
    }

    /// 401 in the storefront's dialect: the request has no key the route accepts. The key
    /// given, if any, is not repeated.
    pub fn unauthenticated(&self, route: &Route) -> Answer {
        early(
            route,
            401,
            "api_key_invalid",
            "Invalid or missing API key. Send a key this payproxy route accepts in the \
             Authorization header, using Bearer auth (Authorization: Bearer YOUR_KEY).",
        )
    }

    /// 400 in the storefront's dialect: the request carries a card number (never echoed).
    pub fn card_data(&self, route: &Route, hit: crate::cards::Hit) -> Answer {
        early(route, 400, "card_number_not_accepted", &hit.message())
    }

    /// 415 in the storefront's dialect: an encoded (compressed) body cannot be checked for
    /// card numbers, so it is not taken.
    pub fn encoded_body(&self, route: &Route) -> Answer {
        early(
            route,
            415,
            "content_encoding_not_accepted",
            "Send the request body without Content-Encoding: payproxy checks every body for \
             card numbers before anything is sent.",
        )
    }

    /// A refusal that leaves nothing behind (the idempotency record is released).
    pub(super) fn refused(&self, ctx: &Ctx<'_>, refusal: Refusal) -> Done {
        Done::release(self.refuse(ctx, refusal))
    }

    /// The state store failed: refuse rather than risk a double charge.
    pub(super) fn store_failed(&self, ctx: &Ctx<'_>, e: &StoreError) -> Done {
        tracing::error!(route = %ctx.route.name, error = %e, "state store failed; refusing the payment rather than risk a double charge");
        self.refused(
            ctx,
            refusal(
                RefusalKind::Unavailable,
                503,
                "state_unavailable",
                "the payment cannot be processed right now",
            ),
        )
    }

    /// Render a provider's outcome for payment `id`.
    pub(super) fn render_outcome(
        &self,
        ctx: &Ctx<'_>,
        provider: &str,
        payment: &Payment,
        outcome: &Outcome,
        id: &str,
        annotations: &[crate::plugin::types::Annotation],
    ) -> Result<HttpResponse, Answer> {
        ctx.ingress
            .render_outcome(payment, outcome, id, annotations)
            .map(|mut response| {
                if provider != "none" {
                    response
                        .headers
                        .push((PROVIDER_HEADER.into(), provider.to_string()));
                }
                response
            })
            .map_err(|failure| self.plugin_failed(ctx, &failure))
    }

    /// Render a payment from its record; the answer replays.
    pub(super) fn render_record(&self, ctx: &Ctx<'_>, record: &PaymentRecord) -> Done {
        self.audit_record(ctx, &record.id, "recorded");
        match ctx.ingress.render_payment(record) {
            Ok(response) => replayable(ctx.route, "none", response),
            Err(failure) => Done::release(self.plugin_failed(ctx, &failure)),
        }
    }

    /// The storefront's own dialect failed: a plain JSON error is all that is left.
    pub(super) fn plugin_failed(&self, ctx: &Ctx<'_>, failure: &PluginFailure) -> Answer {
        ctx.note(|d| {
            d.refusal = Some(audit::Refused {
                stage: d.stage,
                code: "plugin_failed".into(),
            })
        });
        plugin_failed(ctx.route, failure)
    }
}

/// A refusal before the payment phases: in the storefront's dialect on a payment route,
/// payproxy's plain JSON elsewhere.
pub(super) fn early(route: &Route, status: u16, code: &'static str, message: &str) -> Answer {
    match &route.dialect {
        Some((_, ingress)) => refuse_on(
            route,
            ingress,
            refusal(RefusalKind::InvalidRequest(None), status, code, message),
        ),
        None => answer_from_error(
            route,
            crate::error::ProxyError::downstream(
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                code,
                message.to_string(),
            ),
        ),
    }
}

/// Render a refusal with the route's storefront dialect.
fn refuse_on(route: &Route, ingress: &DialectPlugin, refusal: Refusal) -> Answer {
    match ingress.render_refusal(&refusal) {
        Ok(response) => answer(route, "none", response),
        Err(failure) => plugin_failed(route, &failure),
    }
}

/// The storefront's own dialect failed: a plain JSON error is all that is left.
fn plugin_failed(route: &Route, failure: &PluginFailure) -> Answer {
    tracing::warn!(route = %route.name, plugin = %failure.plugin, kind = failure.kind.as_str(), detail = %failure.detail, "dialect plugin failed");
    let error = crate::error::ProxyError::plugin(
        StatusCode::BAD_GATEWAY,
        "plugin_failed",
        format!("dialect plugin {} failed", failure.plugin),
    );
    Answer {
        route: route.name.clone(),
        provider: "none".into(),
        response: error
            .to_response()
            .map(|b| b.map_err(|never| match never {}).boxed()),
    }
}

/// An answer kept for replay: the response as the storefront sees it.
pub(super) fn replayable(route: &Route, provider: &str, response: HttpResponse) -> Done {
    let stored = StoredResponse {
        status: response.status,
        headers: response.headers.clone(),
        body: response.body.clone(),
    };
    Done {
        answer: answer(route, provider, response),
        keep: Keep::Replay(stored),
    }
}
