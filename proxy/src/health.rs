//! Provider health and circuit breakers: a sliding window of attempt results per provider
//! (success rate, latency percentiles, consecutive failures) and a breaker that takes a failing
//! provider out of rotation, then lets a few probes through before trusting it again.
//!
//! ```text
//!            failure rate > threshold (≥ min_volume) or N failures in a row
//!   Closed ───────────────────────────────────────────────────────────────▶ Open
//!     ▲                                                                   │   ▲
//!     │ close_after probe successes              open_ms elapsed, or an   │   │ a probe (or an
//!     │ (window cleared)                         active check succeeds    ▼   │ active check) fails
//!     └──────────────────────────────────────────────────────────────── HalfOpen
//! ```
//!
//! Everything takes the time as an argument (`now`), so the state machine is deterministic
//! and tests never sleep. The [`HealthBook`] is shared by the request path, the router's
//! health snapshot, `/admin/status` and the [`run_active_checks`] task; each provider has its
//! own lock, held only to update a few counters.

mod active;
mod breaker;
mod config;
mod metrics;
mod window;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Serialize;

pub use active::{run_active_checks, ActiveCheck, CheckClient};
pub use config::{BreakerConfig, BreakerConfigError};
pub use metrics::HealthMetrics;

use breaker::{ProviderHealth, Transition};

/// A provider's circuit breaker state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Healthy: every request is allowed.
    Closed,
    /// Failing: requests are rejected until `open_ms` has passed.
    Open,
    /// Recovering: a limited number of probe requests are allowed.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open` (metric labels, logs, `/admin/status`).
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// The answer to "may a request go to this provider now?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The breaker is closed.
    Allowed,
    /// The breaker is half-open and a probe slot was taken: the attempt's result must be
    /// reported with [`HealthBook::record`] and `probe = true`, which frees the slot. (A slot
    /// never reported is presumed lost after `window_ms`.)
    Probe,
    /// The breaker is open, or half-open with every probe slot taken: try another provider.
    Rejected,
}

/// A provider's health at one moment: what the router plugin and `/admin/status` see.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HealthSnapshot {
    /// Successes / samples over the window, 0.0–1.0; 1.0 with no samples.
    pub success_rate: f64,
    /// Median latency over the window (all samples, nearest rank), ms; 0 with no samples.
    pub latency_p50_ms: u32,
    /// 99th percentile latency over the window (all samples, nearest rank), ms.
    pub latency_p99_ms: u32,
    /// The breaker state. An open breaker whose `open_ms` has passed shows as half-open.
    pub breaker: BreakerState,
    /// Failures in a row, up to now.
    pub consecutive_failures: u32,
    /// Samples in the window.
    pub samples: usize,
}

impl HealthSnapshot {
    /// A provider nothing is known about: healthy, closed.
    pub const UNKNOWN: HealthSnapshot = HealthSnapshot {
        success_rate: 1.0,
        latency_p50_ms: 0,
        latency_p99_ms: 0,
        breaker: BreakerState::Closed,
        consecutive_failures: 0,
        samples: 0,
    };
}

impl From<BreakerState> for crate::plugin::types::BreakerState {
    fn from(state: BreakerState) -> Self {
        match state {
            BreakerState::Closed => Self::Closed,
            BreakerState::Open => Self::Open,
            BreakerState::HalfOpen => Self::HalfOpen,
        }
    }
}

impl From<&HealthSnapshot> for crate::plugin::types::Health {
    fn from(s: &HealthSnapshot) -> Self {
        crate::plugin::types::Health {
            success_rate: s.success_rate,
            latency_p50_ms: s.latency_p50_ms,
            latency_p99_ms: s.latency_p99_ms,
            breaker: s.breaker.into(),
        }
    }
}

/// Health and breakers of every provider. `Send + Sync`; share it in an `Arc` and keep it
/// across reloads (use [`HealthBook::set_config`]).
pub struct HealthBook {
    config: ArcSwap<BreakerConfig>,
    providers: RwLock<HashMap<String, Arc<Mutex<ProviderHealth>>>>,
    metrics: HealthMetrics,
}

impl HealthBook {
    /// An empty book: providers appear on their first [`admit`](Self::admit) or
    /// [`record`](Self::record).
    pub fn new(config: BreakerConfig, metrics: HealthMetrics) -> HealthBook {
        HealthBook {
            config: ArcSwap::from_pointee(config),
            providers: RwLock::new(HashMap::new()),
            metrics,
        }
    }

    /// The slow-call threshold, when the rule is on.
    pub fn slow_call(&self) -> Option<Duration> {
        let ms = self.config.load().slow_call_ms;
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    /// Replaces the settings (on reload). Every provider keeps its state and samples; the new
    /// settings apply from the next call (an open breaker's period is measured with the new
    /// `open_ms`).
    pub fn set_config(&self, config: BreakerConfig) {
        self.config.store(Arc::new(config));
    }

    /// Forgets the providers `keep` says no for (removed by a reload), with their breaker
    /// state gauge. Their transition counters stay: they are history. A provider that comes
    /// back later starts closed with an empty window, like a new one.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut providers = self
            .providers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        providers.retain(|name, _| {
            let kept = keep(name);
            if !kept {
                self.metrics.provider_removed(name);
            }
            kept
        });
    }

    /// May a request go to `provider` now? Closed → `Allowed`; open for less than `open_ms` →
    /// `Rejected`; open for `open_ms` or more → half-open, then as half-open; half-open →
    /// `Probe` if fewer than `half_open_probes` probes are in flight, else `Rejected`.
    pub fn admit(&self, provider: &str, now: Instant) -> Admission {
        self.with(provider, |health, config, out| {
            health.admit(now, config, out)
        })
    }

    /// Records an attempt's result. `success`: the provider processed the request (approved,
    /// declined, requires action, pending). Failure: not sent, answered-not-processed (5xx,
    /// 429) or ambiguous. `probe`: the attempt was admitted as [`Admission::Probe`].
    ///
    /// Closed: opens on the failure-rate or consecutive-failures rule. Half-open: a failed
    /// probe reopens for a new `open_ms`; `close_after` successful probes close it and clear
    /// the window. Results of requests admitted before the breaker opened (not probes) only
    /// count in the window.
    pub fn record(
        &self,
        provider: &str,
        success: bool,
        latency: Duration,
        probe: bool,
        now: Instant,
    ) {
        self.with(provider, |health, config, out| {
            health.record(success, latency, probe, now, config, out)
        })
    }

    /// Records an active health check's result ([`run_active_checks`], or a dialect-defined
    /// check run elsewhere). Counts like a non-probe request, and also: a success while open
    /// moves the breaker to half-open early (real traffic may then probe); a failure while
    /// half-open reopens it. Active checks never close a breaker: only real probes do.
    pub fn record_active_check(
        &self,
        provider: &str,
        success: bool,
        latency: Duration,
        now: Instant,
    ) {
        self.with(provider, |health, config, out| {
            health.record_active(success, latency, now, config, out)
        })
    }

    /// The health of `provider` now. A provider never seen is healthy and closed
    /// ([`HealthSnapshot::UNKNOWN`]).
    pub fn snapshot(&self, provider: &str, now: Instant) -> HealthSnapshot {
        match self.get(provider) {
            Some(entry) => self.snapshot_of(provider, &entry, now),
            None => HealthSnapshot::UNKNOWN,
        }
    }

    /// Every provider seen so far, by name (for `/admin/status`).
    pub fn all(&self, now: Instant) -> Vec<(String, HealthSnapshot)> {
        let mut entries: Vec<(String, Arc<Mutex<ProviderHealth>>)> = read(&self.providers)
            .iter()
            .map(|(name, entry)| (name.clone(), entry.clone()))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries
            .into_iter()
            .map(|(name, entry)| {
                let snapshot = self.snapshot_of(&name, &entry, now);
                (name, snapshot)
            })
            .collect()
    }

    fn snapshot_of(
        &self,
        provider: &str,
        entry: &Mutex<ProviderHealth>,
        now: Instant,
    ) -> HealthSnapshot {
        let config = self.config.load();
        let mut transitions = Vec::new();
        let view = {
            let mut health = lock(entry);
            let view = health.view(now, &config, &mut transitions);
            self.count(provider, &transitions);
            view
        };
        log(provider, &transitions);
        let mut latencies = view.latencies;
        latencies.sort_unstable();
        HealthSnapshot {
            success_rate: view.success_rate,
            latency_p50_ms: window::percentile(&latencies, 50.0),
            latency_p99_ms: window::percentile(&latencies, 99.0),
            breaker: view.breaker,
            consecutive_failures: view.consecutive_failures,
            samples: view.samples,
        }
    }

    /// Runs `f` on the provider's health under its lock, then logs the transitions it made
    /// once the lock is released. Metrics are updated under the lock, so the state gauge
    /// cannot end on a stale value when two threads change the state back to back.
    fn with<T>(
        &self,
        provider: &str,
        f: impl FnOnce(&mut ProviderHealth, &BreakerConfig, &mut Vec<Transition>) -> T,
    ) -> T {
        let entry = self.get_or_insert(provider);
        let config = self.config.load();
        let mut transitions = Vec::new();
        let result = {
            let mut health = lock(&entry);
            let result = f(&mut health, &config, &mut transitions);
            self.count(provider, &transitions);
            result
        };
        log(provider, &transitions);
        result
    }

    fn get(&self, provider: &str) -> Option<Arc<Mutex<ProviderHealth>>> {
        read(&self.providers).get(provider).cloned()
    }

    fn get_or_insert(&self, provider: &str) -> Arc<Mutex<ProviderHealth>> {
        if let Some(entry) = self.get(provider) {
            return entry;
        }
        let mut providers = self
            .providers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        providers
            .entry(provider.to_string())
            .or_insert_with(|| {
                self.metrics.provider_added(provider);
                Arc::default()
            })
            .clone()
    }

    fn count(&self, provider: &str, transitions: &[Transition]) {
        for t in transitions {
            self.metrics.transition(provider, t);
        }
    }
}

fn log(provider: &str, transitions: &[Transition]) {
    for t in transitions {
        tracing::warn!(
            provider,
            from = t.from.as_str(),
            to = t.to.as_str(),
            reason = t.reason,
            "circuit breaker changed state"
        );
    }
}

// A panic elsewhere while a lock was held leaves counters that are still valid numbers:
// keep serving rather than poison every later request.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(rw: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    rw.read().unwrap_or_else(PoisonError::into_inner)
}
