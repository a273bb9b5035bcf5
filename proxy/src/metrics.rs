//! Prometheus metrics, registered once per proxy in their own registry and served as text
//! on the admin listener (`GET /metrics`).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Latency buckets in seconds, from 50 µs (plugin calls) to 30 s (slow providers).
pub(crate) const BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0,
];

/// Most distinct `rule` values one compliance plugin (by name) may put in
/// `payproxy_compliance_verdicts_total`; later ones are counted as `other`. The rule comes
/// from the plugin, so without a cap a misbehaving plugin could grow the series without end.
pub const MAX_RULE_LABELS: usize = 64;

/// Every metric payproxy exports.
pub struct Metrics {
    registry: Registry,
    /// Rule label values seen per compliance plugin, for [`MAX_RULE_LABELS`].
    rule_labels: Mutex<HashMap<String, HashSet<String>>>,
    /// Requests by route, provider and status class (`2xx` … `5xx`).
    pub requests: IntCounterVec,
    /// Whole-request latency by route.
    pub request_seconds: HistogramVec,
    /// Provider latency (request sent to response headers) by provider.
    pub upstream_seconds: HistogramVec,
    /// Plugin call latency by plugin and function.
    pub plugin_call_seconds: HistogramVec,
    /// Plugin failures by plugin and kind (trap, deadline, memory, bad_output, instantiate).
    pub plugin_failures: IntCounterVec,
    /// Compliance verdicts by plugin, rule and verdict (`allow`, `deny`, `challenge`).
    pub compliance_verdicts: IntCounterVec,
    /// Provider attempts on payment routes by provider and outcome.
    pub attempts: IntCounterVec,
    /// Failovers by from-provider, to-provider and reason (the failed attempt's outcome).
    pub failovers: IntCounterVec,
    /// Ambiguous attempts resolved by resend, status query or pending, by provider.
    pub resolutions: IntCounterVec,
    /// Idempotent replays by route.
    pub idempotent_replays: IntCounterVec,
    /// Requests refused before anything else, by route and reason (`unauthenticated`,
    /// `card_data`).
    pub storefront_refusals: IntCounterVec,
    /// Reloads by result (`ok`, `error`).
    pub reloads: IntCounterVec,
    /// Records deleted by the background purge, by table (`idempotency`, `payments`,
    /// `owners`).
    pub store_purged: IntCounterVec,
    /// Purge calls that failed; the next pass tries again.
    pub store_purge_failures: IntCounter,
    /// Loaded plugins: value 1, labels plugin, role and sha256 digest.
    pub plugin_info: IntGaugeVec,
    /// Config info: value 1, label config hash.
    pub config_info: IntGaugeVec,
    /// This process: value 1, labels instance id and state store kind.
    pub instance_info: IntGaugeVec,
    /// The serving threads (`runtime.worker_threads`).
    pub worker_threads: IntGaugeVec,
    /// Open connections by listener (`storefront`, `admin`) and bound address.
    pub connections_open: IntGaugeVec,
    /// Connections closed at accept because the listener was at `max_connections`.
    pub connections_refused: IntCounterVec,
    /// Storefront events delivered (2xx from the merchant's endpoint), by route.
    pub events_delivered: IntCounterVec,
    /// Failed delivery attempts by route and reason (`status`, `connect`, `timeout`,
    /// `unconfigured`, `plugin`), and events given up (`gave_up`).
    pub events_failed: IntCounterVec,
    /// Undelivered events in the outbox (pending or given up), by route.
    pub events_pending: IntGaugeVec,
    /// Time from an event's write (or redelivery) to its delivery.
    pub event_delivery_seconds: HistogramVec,
    /// Status queries of pending payments by route and result (`resolved`, `pending`,
    /// `failed`), and payments still pending after their last query (`gave_up`).
    pub pending_queries: IntCounterVec,
    /// Provider notification requests (`POST /webhooks/{provider}`) by provider and result
    /// (`verified`, `rejected`, `failed`).
    pub webhooks: IntCounterVec,
    /// Notifications of verified requests by provider and what became of them (`applied`,
    /// `duplicate`, `stale`, `held`, `expired`, `unmatched`, `failed`).
    pub webhook_notices: IntCounterVec,
    /// Charges a provider reported for a payment completed elsewhere (or failed), by
    /// provider and result (`voided`, `refunded`, `failed`).
    pub late_charges: IntCounterVec,
}

impl Metrics {
    /// Create and register all metrics.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("static metric definition");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric name");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(BUCKETS.to_vec());
            let h = HistogramVec::new(opts, labels).expect("static metric definition");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric name");
            h
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g =
                IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric name");
            g
        };
        Metrics {
            requests: counter(
                "payproxy_requests_total",
                "Storefront requests by route, provider and status class.",
                &["route", "provider", "status_class"],
            ),
            request_seconds: histogram(
                "payproxy_request_duration_seconds",
                "Storefront request latency, request head read to response headers.",
                &["route"],
            ),
            upstream_seconds: histogram(
                "payproxy_upstream_duration_seconds",
                "Provider latency, request sent to response headers.",
                &["provider"],
            ),
            plugin_call_seconds: histogram(
                "payproxy_plugin_call_duration_seconds",
                "Plugin call latency, including instantiation when one was needed.",
                &["plugin", "function"],
            ),
            plugin_failures: counter(
                "payproxy_plugin_failures_total",
                "Failed plugin calls by plugin and kind.",
                &["plugin", "kind"],
            ),
            compliance_verdicts: counter(
                "payproxy_compliance_verdicts_total",
                "Compliance decisions by plugin, rule and verdict.",
                &["plugin", "rule", "verdict"],
            ),
            attempts: counter(
                "payproxy_attempts_total",
                "Provider attempts on payment routes by provider and outcome class.",
                &["provider", "outcome"],
            ),
            failovers: counter(
                "payproxy_failovers_total",
                "Payments moved to another provider, by from, to and reason.",
                &["from", "to", "reason"],
            ),
            resolutions: counter(
                "payproxy_ambiguous_resolutions_total",
                "Ambiguous attempts by provider, how they were resolved and the class found.",
                &["provider", "how", "class"],
            ),
            idempotent_replays: counter(
                "payproxy_idempotent_replays_total",
                "Stored answers replayed for a repeated Idempotency-Key, by route.",
                &["route"],
            ),
            storefront_refusals: counter(
                "payproxy_storefront_refusals_total",
                "Requests refused before anything was stored or sent, by route and reason.",
                &["route", "reason"],
            ),
            reloads: counter(
                "payproxy_reloads_total",
                "Config reloads by result.",
                &["result"],
            ),
            store_purged: counter(
                "payproxy_store_purged_total",
                "Records deleted by the background purge, by table.",
                &["table"],
            ),
            store_purge_failures: {
                let c = IntCounter::new(
                    "payproxy_store_purge_failures_total",
                    "Background purge calls that failed.",
                )
                .expect("static metric definition");
                registry
                    .register(Box::new(c.clone()))
                    .expect("unique metric name");
                c
            },
            plugin_info: gauge(
                "payproxy_plugin_info",
                "Loaded plugins with their role and sha256 digest (value 1).",
                &["plugin", "role", "sha256"],
            ),
            config_info: gauge(
                "payproxy_config_info",
                "The running config's hash (value 1).",
                &["hash"],
            ),
            instance_info: gauge(
                "payproxy_instance_info",
                "This process's instance id and state store kind (value 1). Instances sharing \
                 a postgres store each have their own id; provider health is per instance.",
                &["instance", "store"],
            ),
            worker_threads: gauge(
                "payproxy_runtime_worker_threads",
                "Threads serving requests (runtime.worker_threads; default one per CPU this \
                 process may run on).",
                &[],
            ),
            connections_open: gauge(
                "payproxy_connections_open",
                "Open client connections by listener and address.",
                &["listener", "addr"],
            ),
            connections_refused: counter(
                "payproxy_connections_refused_total",
                "Connections closed at accept because the listener was at its connection cap.",
                &["listener", "addr"],
            ),
            events_delivered: counter(
                "payproxy_events_delivered_total",
                "Storefront events delivered to the merchant's endpoints, by route.",
                &["route"],
            ),
            pending_queries: counter(
                "payproxy_pending_queries_total",
                "Status queries payproxy made of payments left pending, by route and result \
                 (resolved, pending, failed); gave_up counts payments still pending after \
                 their last query.",
                &["route", "result"],
            ),
            webhooks: counter(
                "payproxy_webhooks_received_total",
                "Provider notification requests by provider and result: verified, rejected \
                 (signature or format; nothing changed), failed (payproxy could not take them; \
                 the provider retries).",
                &["provider", "result"],
            ),
            webhook_notices: counter(
                "payproxy_webhook_notifications_total",
                "Notifications in verified provider requests by provider and result: applied, \
                 duplicate (applied before), stale (the payment had moved on), held (not \
                 applicable yet: its payment unknown, locked by an operation, or not where \
                 it refers to; counted again with its fate when tried again), expired (held \
                 too long), unmatched, failed.",
                &["provider", "result"],
            ),
            late_charges: counter(
                "payproxy_late_charges_total",
                "Charges a provider that answered \"not processed\" reported after payproxy \
                 completed the payment elsewhere, by provider and what payproxy did: voided, \
                 refunded, failed (the first try failed; tried again until \
                 state.notice_hold_ms, then left for an operator).",
                &["provider", "result"],
            ),
            events_failed: counter(
                "payproxy_events_delivery_failures_total",
                "Failed storefront event delivery attempts by route and reason; gave_up counts \
                 events given up.",
                &["route", "reason"],
            ),
            events_pending: gauge(
                "payproxy_events_pending",
                "Undelivered storefront events in the outbox (pending or given up), by route.",
                &["route"],
            ),
            event_delivery_seconds: {
                let opts = HistogramOpts::new(
                    "payproxy_event_delivery_seconds",
                    "Time from a storefront event's write (or redelivery) to its delivery.",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0, 3600.0, 86400.0,
                ]);
                let h = HistogramVec::new(opts, &[]).expect("static metric definition");
                registry
                    .register(Box::new(h.clone()))
                    .expect("unique metric name");
                h
            },
            registry,
            rule_labels: Mutex::new(HashMap::new()),
        }
    }

    /// Count a compliance verdict. The rule keeps its own label value for the plugin's first
    /// [`MAX_RULE_LABELS`] distinct rules (across reloads); later new rules count as `other`.
    pub fn compliance_verdict(&self, plugin: &str, rule: &str, verdict: &str) {
        let known = {
            let mut seen = self.rule_labels.lock().unwrap_or_else(|p| p.into_inner());
            // No allocation once the plugin and rule are known (every call after the first).
            match seen.get_mut(plugin) {
                Some(rules) => {
                    rules.contains(rule)
                        || (rules.len() < MAX_RULE_LABELS && rules.insert(rule.to_string()))
                }
                None => {
                    seen.insert(plugin.to_string(), HashSet::from([rule.to_string()]));
                    true
                }
            }
        };
        let rule = if known { rule } else { "other" };
        self.compliance_verdicts
            .with_label_values(&[plugin, rule, verdict])
            .inc();
    }

    /// The registry, for modules that register their own metrics (health).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// `2xx`, `4xx` … for a status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compliance_rule_labels_are_capped_per_plugin() {
        let m = Metrics::new();
        for i in 0..MAX_RULE_LABELS + 10 {
            m.compliance_verdict("noisy", &format!("rule-{i}"), "allow");
        }
        m.compliance_verdict("noisy", "rule-0", "deny");
        m.compliance_verdict("calm", "only-rule", "allow");
        let count = |plugin: &str, rule: &str, verdict: &str| {
            m.compliance_verdicts
                .with_label_values(&[plugin, rule, verdict])
                .get()
        };
        assert_eq!(count("noisy", "other", "allow"), 10);
        assert_eq!(count("noisy", "rule-0", "allow"), 1);
        assert_eq!(
            count("noisy", "rule-0", "deny"),
            1,
            "a known rule keeps its label"
        );
        assert_eq!(
            count("calm", "only-rule", "allow"),
            1,
            "the cap is per plugin"
        );
        let series = m
            .render()
            .lines()
            .filter(|l| l.starts_with("payproxy_compliance_verdicts_total{"))
            .count();
        assert_eq!(series, MAX_RULE_LABELS + 1 + 1 + 1);
    }
}
