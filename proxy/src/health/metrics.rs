//! The breaker metrics: state gauge and transition counter per provider.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

use super::breaker::Transition;
use super::BreakerState;

/// Breaker metrics, registered on the proxy's registry once; the [`super::HealthBook`] that
/// owns them lives across reloads.
#[derive(Clone)]
pub struct HealthMetrics {
    /// `payproxy_breaker_state{provider}`: 0 closed, 1 half-open, 2 open.
    pub state: IntGaugeVec,
    /// `payproxy_breaker_transitions_total{provider,from,to}`.
    pub transitions: IntCounterVec,
}

impl HealthMetrics {
    /// Creates the metrics and registers them on `registry`.
    ///
    /// # Panics
    /// If they are already registered there: call this once per registry.
    pub fn register(registry: &Registry) -> HealthMetrics {
        let state = IntGaugeVec::new(
            Opts::new(
                "payproxy_breaker_state",
                "Circuit breaker state by provider: 0 closed, 1 half-open, 2 open.",
            ),
            &["provider"],
        )
        .expect("static metric definition");
        let transitions = IntCounterVec::new(
            Opts::new(
                "payproxy_breaker_transitions_total",
                "Circuit breaker state changes by provider, from and to.",
            ),
            &["provider", "from", "to"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(state.clone()))
            .expect("unique metric name");
        registry
            .register(Box::new(transitions.clone()))
            .expect("unique metric name");
        HealthMetrics { state, transitions }
    }

    /// Publishes the state of a provider seen for the first time (closed), so the gauge
    /// exists before anything goes wrong.
    pub(super) fn provider_added(&self, provider: &str) {
        self.state
            .with_label_values(&[provider])
            .set(gauge_value(BreakerState::Closed));
    }

    /// Drops the state gauge of a provider no longer configured.
    pub(super) fn provider_removed(&self, provider: &str) {
        // Absent when the gauge was never set; nothing to remove then.
        let _ = self.state.remove_label_values(&[provider]);
    }

    pub(super) fn transition(&self, provider: &str, t: &Transition) {
        self.state
            .with_label_values(&[provider])
            .set(gauge_value(t.to));
        self.transitions
            .with_label_values(&[provider, t.from.as_str(), t.to.as_str()])
            .inc();
    }
}

/// The gauge encoding: ordered by how much traffic the provider gets.
fn gauge_value(state: BreakerState) -> i64 {
    match state {
        BreakerState::Closed => 0,
        BreakerState::HalfOpen => 1,
        BreakerState::Open => 2,
    }
}
