//! The admin listener: `GET /metrics` (Prometheus text), `GET /admin/status` (JSON),
//! `POST /admin/reload`, and the webhook outbox (`GET /admin/events`,
//! `POST /admin/events/{id}/redeliver`, see `events`; token always, like reload). A configured bearer token guards reload always, and the two read
//! endpoints too when the listener is not on loopback: the status page shows file paths and
//! internal provider URLs. Local Prometheus scrapes of a loopback listener need no token.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::json_response;
use crate::health::HealthBook;
use crate::listener::{self, connection, Accepted, ConnLimits};
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::snapshot::Snapshot;
use crate::store::Store;

mod events;

/// Admin endpoints over the shared reloader and metrics.
pub struct Admin {
    reloader: Arc<Reloader>,
    metrics: Arc<Metrics>,
    health: Arc<HealthBook>,
    token_digest: Option<[u8; 32]>,
    /// Whether `GET /metrics` and `GET /admin/status` need the token too.
    reads_need_token: bool,
    /// `state` on the status page: the store kind and this process's instance id.
    instance: Value,
    /// The outbox, for `/admin/events`.
    store: Option<Arc<dyn Store>>,
}

impl Admin {
    /// `token`: the bearer token, if any. `loopback`: whether the admin address is a loopback
    /// one; otherwise every endpoint needs the token.
    pub fn new(
        reloader: Arc<Reloader>,
        metrics: Arc<Metrics>,
        health: Arc<HealthBook>,
        token: Option<String>,
        loopback: bool,
    ) -> Admin {
        Admin {
            reloader,
            metrics,
            health,
            token_digest: token.map(|t| Sha256::digest(t.as_bytes()).into()),
            reads_need_token: !loopback,
            instance: Value::Null,
            store: None,
        }
    }

    /// Serve `/admin/events` from `store`'s outbox.
    pub fn with_store(mut self, store: Arc<dyn Store>) -> Admin {
        self.store = Some(store);
        self
    }

    /// Show the state store kind and this process's instance id on the status page (several
    /// instances may share one postgres store; health and breakers are each instance's own).
    pub fn with_instance(mut self, store: &str, instance: &str) -> Admin {
        self.instance = json!({ "kind": store, "instance": instance });
        self
    }

    /// Route one admin request from `peer`.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Full<Bytes>> {
        let (method, path) = (request.method(), request.uri().path());
        let redeliver = events::redeliver_id(path).map(str::to_string);
        let needs_token = match (method, path) {
            (&Method::GET, "/metrics" | "/admin/status") => self.reads_need_token,
            (&Method::POST, "/admin/reload") => true,
            // Payment ids and a mutation: the token always, like reload.
            (_, "/admin/events") => true,
            _ => redeliver.is_some(),
        };
        if needs_token {
            if let Err(refusal) = self.authorise(&request) {
                // The given token is never logged, only whether there was one.
                tracing::warn!(%peer, %method, path, reason = refusal, "admin request refused");
                return error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "a valid bearer token is required",
                );
            }
        }
        match (method, path) {
            (&Method::GET, "/metrics") => {
                let mut response = Response::new(Full::new(Bytes::from(self.metrics.render())));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            (&Method::GET, "/admin/status") => json_response(StatusCode::OK, &self.status()),
            (&Method::POST, "/admin/reload") => match self.reloader.reload("admin").await {
                Ok(version) => json_response(
                    StatusCode::OK,
                    &json!({ "result": "ok", "version": version }),
                ),
                Err(e) => json_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &json!({ "result": "error", "error": e, "version": self.reloader.snapshot().version }),
                ),
            },
            (&Method::GET, "/admin/events") => match &self.store {
                Some(store) => events::list(store, request.uri().query().unwrap_or("")).await,
                None => error(StatusCode::NOT_FOUND, "not_found", "no outbox"),
            },
            (&Method::POST, _) if redeliver.is_some() => match (&self.store, &redeliver) {
                (Some(store), Some(id)) => events::redeliver(store, id).await,
                _ => error(StatusCode::NOT_FOUND, "not_found", "no outbox"),
            },
            (_, "/metrics" | "/admin/status" | "/admin/reload" | "/admin/events") => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed",
            ),
            _ => error(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint"),
        }
    }

    /// `Err(why)` unless the request carries the configured bearer token.
    fn authorise(&self, request: &Request<Incoming>) -> Result<(), &'static str> {
        let Some(want) = &self.token_digest else {
            // No token configured: only possible on a loopback admin address (checked at start).
            return Ok(());
        };
        let Some(value) = request.headers().get(header::AUTHORIZATION) else {
            return Err("no authorization header");
        };
        let given = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            // The auth scheme is case-insensitive (RFC 9110 §11.1).
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or("not a bearer token")?;
        // Comparing digests keeps the comparison independent of where the token differs.
        let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        if &given == want {
            Ok(())
        } else {
            Err("wrong token")
        }
    }

    /// The status document.
    pub fn status(&self) -> Value {
        let snapshot = self.reloader.snapshot();
        let now = std::time::Instant::now();
        json!({
            "config": {
                "file": self.reloader.file().display().to_string(),
                "version": snapshot.version,
                "hash": snapshot.hash,
                "instance_mode": format!("{:?}", snapshot.instance_mode()).to_lowercase(),
            },
            "state": self.instance,
            "last_reload": self.reloader.status(),
            "plugins": plugins(&snapshot),
            "routes": snapshot.routes.iter().map(|r| json!({
                "name": r.name,
                "host": r.host,
                "path_prefix": r.path_prefix,
                "providers": r.providers,
                "router": r.router.as_ref().map(|(p, _)| p.name().to_string()),
                "compliance": r.compliance.iter().map(|c| c.name().to_string()).collect::<Vec<_>>(),
                "dialect": r.dialect.as_ref().map(|(name, _)| name.clone()),
                "plugin_body": r.plugin_body,
            })).collect::<Vec<_>>(),
            "providers": snapshot.config.providers.iter().map(|(name, p)| json!({
                "name": name,
                "url": redact_userinfo(&p.url),
                "region": p.region,
                "tags": p.tags,
                "cost": p.cost,
                "dialect": p.dialect,
                "credentials": p.credentials.keys().collect::<Vec<_>>(),
                "health": self.health.snapshot(name, now),
            })).collect::<Vec<_>>(),
        })
    }
}

fn plugins(snapshot: &Snapshot) -> Vec<Value> {
    snapshot
        .plugins
        .values()
        .map(|p| {
            json!({
                "name": p.name,
                "role": p.role.as_str(),
                "contract": p.contract(),
                "deprecated": p.deprecation(),
                "path": p.path.display().to_string(),
                "sha256": p.sha256,
                "on_error": match p.on_error { crate::config::OnError::FailOpen => "fail-open", crate::config::OnError::FailClosed => "fail-closed" },
            })
        })
        .collect()
}

/// `https://user:secret@host/x` → `https://host/x`: credentials never reach the status page.
fn redact_userinfo(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme_end), Some(at))
            if at > scheme_end && !url[scheme_end + 3..at].contains('/') =>
        {
            format!("{}{}", &url[..scheme_end + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    json_response(
        status,
        &json!({ "error": { "code": code, "message": message } }),
    )
}

/// Serve the admin endpoints until `shutdown` flips, then drain.
pub async fn serve(
    listener: TcpListener,
    admin: Arc<Admin>,
    metrics: Arc<Metrics>,
    limits: impl Fn() -> ConnLimits,
    shutdown: watch::Receiver<bool>,
) {
    let serve_one = move |accepted: Accepted| {
        let admin = admin.clone();
        async move {
            let Accepted {
                stream,
                peer,
                limits,
                drain,
            } = accepted;
            let handler = move |request| {
                let admin = admin.clone();
                async move { admin.handle(request, peer).await }
            };
            if let Err(e) = connection::serve(stream, &limits, handler, drain).await {
                tracing::debug!(%peer, error = %e, "admin connection ended with an error");
            }
        }
    };
    listener::accept_loop(listener, "admin", metrics, limits, shutdown, serve_one).await;
}

#[cfg(test)]
mod tests {
    use super::redact_userinfo;

    #[test]
    fn credentials_in_urls_are_removed() {
        assert_eq!(redact_userinfo("https://u:p@host:1/x"), "https://host:1/x");
        assert_eq!(redact_userinfo("https://host/a@b"), "https://host/a@b");
        assert_eq!(redact_userinfo("http://host"), "http://host");
    }
}
