//! The delivery task: claims due events from the outbox (leased, so one instance at a time
//! delivers an event and a dead instance's claims are retaken), POSTs each to its endpoint
//! signed by the route's storefront dialect with the time of the attempt, and records the
//! result: 2xx is delivered; anything else is retried after an exponential backoff with
//! jitter, until the event is older than the route's give-up age, then kept as `failed`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use tokio::sync::watch;

use super::backoff_ms;
use crate::config::WebhookDeliveryConfig;
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::store::{Attempted, OutboxEvent, Store};
use crate::upstream::{ClientCache, HttpClient};

/// How often the pending gauge is refreshed.
const GAUGE_EVERY: Duration = Duration::from_secs(1);
/// How often delivered events past `keep_delivered_s` are purged.
const PURGE_EVERY: Duration = Duration::from_secs(60);
/// Rows one purge call deletes, and calls one purge pass makes at most.
const PURGE_BATCH: usize = 1_000;
const PURGE_CALLS: usize = 10;

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the task needs.
pub struct Deliverer {
    /// The outbox.
    pub store: Arc<dyn Store>,
    /// The running snapshot: routes' endpoints, secrets and dialects.
    pub reloader: Arc<Reloader>,
    /// Delivery metrics.
    pub metrics: Arc<Metrics>,
    /// Lease, concurrency, poll interval.
    pub settings: WebhookDeliveryConfig,
}

/// Runs until `shutdown` flips. Store failures are logged and retried at the next poll.
pub async fn run(d: Deliverer, mut shutdown: watch::Receiver<bool>) {
    let client = match ClientCache::default().default_client(5_000) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "webhook delivery cannot start: no HTTP client");
            return;
        }
    };
    let poll = Duration::from_millis(d.settings.poll_ms);
    let mut gauge_at = tokio::time::Instant::now();
    let mut purge_at = tokio::time::Instant::now();
    loop {
        if *shutdown.borrow() {
            return;
        }
        if gauge_at.elapsed() >= GAUGE_EVERY {
            gauge_at = tokio::time::Instant::now();
            refresh_gauge(&d).await;
        }
        if purge_at.elapsed() >= PURGE_EVERY {
            purge_at = tokio::time::Instant::now();
            purge(&d).await;
        }
        let (store, lease, limit) = (d.store.clone(), d.settings.lease_ms, d.settings.concurrency);
        let claimed =
            tokio::task::spawn_blocking(move || store.claim_events(wall_ms(), lease, limit)).await;
        let events = match claimed {
            Ok(Ok(events)) => events,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "webhook outbox: claim failed");
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(error = %e, "webhook outbox: claim task failed");
                Vec::new()
            }
        };
        if events.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        // At most `concurrency` at once (the claim's limit); an attempt is bounded by its
        // route's timeout, well inside the lease.
        let attempts = events.into_iter().map(|event| deliver(&d, &client, event));
        tokio::select! {
            _ = futures_util::future::join_all(attempts) => {}
            // Abandoned claims are retaken: at once by the next process on a redb file, by
            // another instance once their lease lapses on postgres.
            _ = shutdown.changed() => return,
        }
    }
}

/// Delete delivered events older than `keep_delivered_s`, a bounded number of batches.
async fn purge(d: &Deliverer) {
    let cutoff = wall_ms().saturating_sub(d.settings.keep_delivered_s.saturating_mul(1000));
    for _ in 0..PURGE_CALLS {
        let store = d.store.clone();
        let purged =
            tokio::task::spawn_blocking(move || store.purge_events(cutoff, PURGE_BATCH)).await;
        match purged {
            Ok(Ok(n)) => {
                d.metrics
                    .store_purged
                    .with_label_values(&["outbox"])
                    .inc_by(n as u64);
                if n < PURGE_BATCH {
                    return;
                }
            }
            Ok(Err(e)) => {
                d.metrics.store_purge_failures.inc();
                tracing::warn!(error = %e, "webhook outbox: purge failed");
                return;
            }
            Err(_) => return,
        }
    }
}

async fn refresh_gauge(d: &Deliverer) {
    let store = d.store.clone();
    if let Ok(Ok(counts)) = tokio::task::spawn_blocking(move || store.event_counts()).await {
        d.metrics.events_pending.reset();
        for (route, (pending, failed)) in counts {
            d.metrics
                .events_pending
                .with_label_values(&[route.as_str()])
                .set((pending + failed) as i64);
        }
    }
}

/// Why an attempt failed: the metric's reason and the admin list's error.
struct Failure {
    reason: &'static str,
    error: String,
}

/// One attempt at one event, and its result recorded.
async fn deliver(d: &Deliverer, client: &HttpClient, event: OutboxEvent) {
    let route = event.event.route.clone();
    let result = attempt(d, client, &event).await;
    let now = wall_ms();
    let outcome = match result {
        Ok(()) => {
            d.metrics
                .events_delivered
                .with_label_values(&[route.as_str()])
                .inc();
            let waited = now.saturating_sub(event.since_ms) as f64 / 1000.0;
            d.metrics
                .event_delivery_seconds
                .with_label_values(&[] as &[&str])
                .observe(waited);
            Attempted::Delivered { at_ms: now }
        }
        Err(failure) => {
            d.metrics
                .events_failed
                .with_label_values(&[route.as_str(), failure.reason])
                .inc();
            let retry = d
                .reloader
                .snapshot()
                .routes
                .iter()
                .find(|r| r.name == route)
                .and_then(|r| r.webhooks.as_ref())
                .map(|w| w.retry.clone())
                .unwrap_or_default();
            let delay = backoff_ms(&retry, event.attempts + 1, rand::random::<f64>());
            let retry_at = now.saturating_add(delay);
            let give_up_at = event
                .since_ms
                .saturating_add(retry.give_up_after_s.saturating_mul(1000));
            let retry_at_ms = (retry_at <= give_up_at).then_some(retry_at);
            if retry_at_ms.is_none() {
                d.metrics
                    .events_failed
                    .with_label_values(&[route.as_str(), "gave_up"])
                    .inc();
                tracing::warn!(event = %event.event.id, payment = %event.event.payment_id, endpoint = %event.event.endpoint, error = %failure.error, "webhook event given up");
            } else {
                tracing::debug!(event = %event.event.id, endpoint = %event.event.endpoint, error = %failure.error, delay_ms = delay, "webhook delivery failed; retrying");
            }
            Attempted::Failed {
                error: failure.error,
                retry_at_ms,
            }
        }
    };
    let store = d.store.clone();
    let key = event.key();
    let recorded = tokio::task::spawn_blocking(move || store.event_attempted(&key, &outcome)).await;
    if let Ok(Err(e)) = recorded {
        // The lease lapses and the event is claimed again: delivered at least once.
        tracing::warn!(event = %event.event.id, error = %e, "webhook outbox: could not record an attempt");
    }
}

/// POST the event, signed now; `Ok` on 2xx.
async fn attempt(d: &Deliverer, client: &HttpClient, event: &OutboxEvent) -> Result<(), Failure> {
    let snapshot = d.reloader.snapshot();
    let unconfigured = || Failure {
        reason: "unconfigured",
        error: "the route or endpoint is no longer configured".into(),
    };
    let route = snapshot
        .routes
        .iter()
        .find(|r| r.name == event.event.route)
        .ok_or_else(unconfigured)?;
    let webhooks = route.webhooks.as_ref().ok_or_else(unconfigured)?;
    let endpoint = webhooks
        .endpoint(&event.event.endpoint)
        .ok_or_else(unconfigured)?;
    let (_, dialect) = route.dialect.as_ref().ok_or_else(unconfigured)?;
    let now_s = (wall_ms() / 1000) as i64;
    let headers = dialect
        .sign_event(&event.event.body, endpoint.secret(), now_s)
        .map_err(|e| Failure {
            reason: "plugin",
            error: format!("signing failed: {e}"),
        })?;
    let mut request = Request::post(endpoint.url.as_str())
        .header(
            http::header::CONTENT_TYPE,
            event.event.content_type.as_str(),
        )
        .header(http::header::USER_AGENT, "payproxy-webhooks")
        .body(
            Full::new(Bytes::from(event.event.body.clone()))
                .map_err(|never| match never {})
                .boxed(),
        )
        .map_err(|e| Failure {
            reason: "unconfigured",
            error: format!("bad request: {e}"),
        })?;
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            request.headers_mut().insert(name, value);
        }
    }
    let sent = tokio::time::timeout(webhooks.timeout, async {
        let response = client.request(request).await?;
        let status = response.status();
        // Read (and drop) a bounded answer so the connection can be reused.
        let _ = http_body_util::Limited::new(response.into_body(), 64 * 1024)
            .collect()
            .await;
        Ok::<_, hyper_util::client::legacy::Error>(status)
    })
    .await;
    match sent {
        Ok(Ok(status)) if status.is_success() => Ok(()),
        Ok(Ok(status)) => Err(Failure {
            reason: "status",
            error: format!("endpoint answered {}", status.as_u16()),
        }),
        Ok(Err(e)) => Err(Failure {
            reason: "connect",
            error: crate::upstream::error_chain(&e),
        }),
        Err(_) => Err(Failure {
            reason: "timeout",
            error: format!("no answer within {:?}", webhooks.timeout),
        }),
    }
}
