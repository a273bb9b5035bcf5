//! Between HTTP and the plugin views: request and response views, provider requests built
//! from a dialect's encoding, and answers to the storefront.

use super::*;

/// How Stripe marks the replay of an earlier answer (`Idempotent-Replayed: true`): payproxy
/// marks its own replays so, and reads a provider's so.
pub(super) const REPLAYED_HEADER: &str = "idempotent-replayed";

/// A stored answer, replayed byte for byte, marked the way Stripe marks replays.
pub(super) fn replay(route: &Route, stored: StoredResponse) -> Answer {
    let mut headers = stored.headers;
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case(REPLAYED_HEADER));
    headers.push((REPLAYED_HEADER.into(), "true".into()));
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

pub(super) fn refusal(kind: RefusalKind, status: u16, code: &str, message: &str) -> Refusal {
    Refusal {
        kind,
        status,
        code: code.into(),
        message: message.into(),
    }
}

pub(super) fn challenge(kind: ChallengeKind) -> Refusal {
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

/// Header names and values as plugins see them (values that are not UTF-8 are left out).
pub(super) fn header_pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(n, v)| {
            v.to_str()
                .ok()
                .map(|v| (n.as_str().to_string(), v.to_string()))
        })
        .collect()
}

/// The plugin view of a request (headers that are not UTF-8 are left out). The storefront's
/// credentials (`authorization`, `cookie`, `proxy-authorization`) are never shown to a
/// plugin: no plugin needs them, and a plugin that logs or echoes its input must not leak them.
pub fn http_view(parts: &http::request::Parts, body: Option<&Bytes>) -> HttpRequest {
    let mut view = notification_view(parts, body);
    view.headers.retain(|(name, _)| {
        !matches!(
            name.as_str(),
            "authorization" | "cookie" | "proxy-authorization"
        ) && name != payproxy_plugin_sdk::storefront::HELD_HEADER
    });
    view
}

/// A provider's notification request as its dialect sees it: every header, `authorization`
/// included (providers sign there; it is the provider's, not a storefront credential).
pub(super) fn notification_view(parts: &http::request::Parts, body: Option<&Bytes>) -> HttpRequest {
    let headers = header_pairs(&parts.headers);
    HttpRequest {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers,
        body: body.map(|b| b.to_vec()),
    }
}

pub(super) fn response_view(parts: &http::response::Parts, body: &Bytes) -> HttpResponse {
    HttpResponse {
        status: parts.status.as_u16(),
        headers: header_pairs(&parts.headers),
        body: body.to_vec(),
    }
}

/// A provider request from a dialect's encoding; `None` when it is not valid HTTP.
pub(super) fn outbound_request(
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

pub(super) fn answer(route: &Route, provider: &str, response: HttpResponse) -> Answer {
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

pub(super) fn answer_from_error(route: &Route, error: crate::error::ProxyError) -> Answer {
    Answer {
        route: route.name.clone(),
        provider: error.provider.clone().unwrap_or_else(|| "none".into()),
        response: error
            .to_response()
            .map(|b| b.map_err(|never| match never {}).boxed()),
    }
}

pub(super) fn plain_error(route: &Route, status: StatusCode, message: &str) -> Answer {
    let error = crate::error::ProxyError::plugin(status, "internal", message);
    answer_from_error(route, error)
}
