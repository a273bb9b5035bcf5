//! Active health checks: a GET to a configured URL per provider, on its own interval, whose
//! result feeds the [`HealthBook`] like a request's. A provider with no traffic still gets its
//! breaker opened when it goes down, and an open breaker goes half-open as soon as the
//! provider answers again instead of waiting out `open_ms`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::Body;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::Client;
use tokio::sync::watch;
use tokio::task::{Id, JoinSet};
use tokio::time::Instant;

use super::HealthBook;

/// A plain-HTTP client for active checks. Any `hyper_util` legacy client works: the proxy
/// checks each provider with a client of the provider's TLS trust and connect timeout and no
/// connection pool (`Upstream::check_client`); this is the simplest.
pub type CheckClient = Client<HttpConnector, Empty<Bytes>>;

/// Checks never run more often than this, whatever the config says.
const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// How often the target list is read again when no check is due sooner (picks up reloads).
const RETARGET: Duration = Duration::from_secs(1);

/// One provider's active check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveCheck {
    /// The provider whose health the result counts for.
    pub provider: String,
    /// GET this; any 2xx answer within `timeout` is a success.
    pub url: http::Uri,
    /// Time between the start of one check and the next (at least 10 ms). A check still
    /// running when the next is due delays it: checks of a provider never overlap.
    pub interval: Duration,
    /// A check with no response headers within this is a failure.
    pub timeout: Duration,
}

/// Runs the active checks until `shutdown` becomes `true` (or its sender is dropped).
///
/// `targets` is called before every scheduling round, so checks follow config reloads: a
/// provider that disappears stops being checked, a new one is checked at once. Results are
/// recorded with [`HealthBook::record_active_check`] (success = 2xx). Checks of different
/// providers run concurrently, so one slow provider delays nobody else's. Checks still running
/// at shutdown are cancelled and not recorded. Each check comes with the client to send it
/// with.
pub async fn run_active_checks<C, B>(
    book: Arc<HealthBook>,
    targets: impl Fn() -> Vec<(ActiveCheck, Client<C, B>)> + Send + 'static,
    mut shutdown: watch::Receiver<bool>,
) where
    C: Connect + Clone + Send + Sync + 'static,
    B: Body + Default + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut next_due: HashMap<String, Instant> = HashMap::new();
    let mut running: JoinSet<()> = JoinSet::new();
    let mut in_flight: HashMap<Id, String> = HashMap::new();
    loop {
        if *shutdown.borrow_and_update() {
            break;
        }
        let now = Instant::now();
        let checks = targets();
        let names: HashSet<&str> = checks.iter().map(|(c, _)| c.provider.as_str()).collect();
        next_due.retain(|provider, _| names.contains(provider.as_str()));
        let busy: HashSet<String> = in_flight.values().cloned().collect();
        let mut wake = now + RETARGET;
        for (check, client) in checks {
            if busy.contains(&check.provider) {
                // Its completion wakes the loop; its due time must not, or we would spin.
                continue;
            }
            let due = next_due.entry(check.provider.clone()).or_insert(now);
            if *due <= now {
                *due = now + check.interval.max(MIN_INTERVAL);
                let provider = check.provider.clone();
                let task = running.spawn(check_once(book.clone(), client, check));
                in_flight.insert(task.id(), provider);
            }
            wake = wake.min(*due);
        }
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            Some(done) = running.join_next_with_id() => {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(e) => e.id(),
                };
                in_flight.remove(&id);
            }
            () = tokio::time::sleep_until(wake) => {}
        }
    }
    // Dropping `running` aborts the checks still in flight.
}

async fn check_once<C, B>(book: Arc<HealthBook>, client: Client<C, B>, check: ActiveCheck)
where
    C: Connect + Clone + Send + Sync + 'static,
    B: Body + Default + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let started = std::time::Instant::now();
    let success = match tokio::time::timeout(check.timeout, client.get(check.url)).await {
        // The body is dropped unread: the status is the whole answer, and a fresh connection
        // next time checks connectivity too.
        Ok(Ok(response)) => response.status().is_success(),
        Ok(Err(error)) => {
            tracing::debug!(provider = %check.provider, %error, "active health check failed");
            false
        }
        Err(_) => {
            tracing::debug!(provider = %check.provider, "active health check timed out");
            false
        }
    };
    book.record_active_check(
        &check.provider,
        success,
        started.elapsed(),
        std::time::Instant::now(),
    );
}
