//! The JSON configuration: typed, `deny_unknown_fields`, defaults stated on each field.
//!
//! [`Config::parse`] takes the text as an argument so tests call it directly; errors name
//! the file and the field (`routes[0].providers[1]`), or the line and column for JSON syntax.
//! Semantic checks (references between sections, addresses, limits) are in [`Config::validate`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::ConfigError;
use crate::files;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Storefront-facing listeners; at least one. Changing them needs a restart.
    pub listeners: Vec<ListenerConfig>,
    /// Admin listener (metrics, status, reload). Changing it needs a restart, except
    /// `max_connections`.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Limits applied to every storefront request; the connection ones (`idle_timeout_ms`,
    /// `header_read_timeout_ms`) apply to the admin listener too.
    #[serde(default)]
    pub limits: Limits,
    /// Sandbox and instance settings shared by all plugins.
    #[serde(default)]
    pub plugin_host: PluginHostConfig,
    /// Plugins by name.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginConfig>,
    /// Providers (upstreams) by name.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Routes, matched in order: the first whose host and path prefix match wins.
    pub routes: Vec<RouteConfig>,
    /// Live reload settings.
    #[serde(default)]
    pub reload: ReloadConfig,
    /// Where idempotency records and payment owners live. Needs a restart to change.
    #[serde(default)]
    pub state: StateConfig,
    /// Circuit breaker settings shared by all providers (see `health::BreakerConfig`).
    #[serde(default)]
    pub breaker: crate::health::BreakerConfig,
    /// Log format and the audit trail. Read at start; a reload does not change them.
    #[serde(default)]
    pub log: LogConfig,
    /// OpenTelemetry trace export (off by default). Read at start, like `log`.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// How this instance delivers the webhook outbox (routes' `webhooks`). Read at start.
    #[serde(default)]
    pub webhook_delivery: WebhookDeliveryConfig,
    /// The async runtime. Read at start.
    #[serde(default)]
    pub runtime: RuntimeConfig,
}

/// The serving threads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Threads serving the storefront listeners, each with an event loop of its own (1 to
    /// 1024). Default: one per CPU this process may run on (its affinity mask and cgroup
    /// quota count).
    #[serde(default)]
    pub worker_threads: Option<usize>,
}

/// How an instance delivers the webhook outbox.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookDeliveryConfig {
    /// How long a claimed event is this instance's to deliver; after that (the instance died)
    /// any instance sharing the store retakes it. Must exceed every route's webhook
    /// `timeout_ms`. Default 30000.
    #[serde(default = "default_delivery_lease_ms")]
    pub lease_ms: u64,
    /// Deliveries in flight at once. Default 8.
    #[serde(default = "default_delivery_concurrency")]
    pub concurrency: usize,
    /// How often the outbox is polled for due events when idle. Default 250.
    #[serde(default = "default_delivery_poll_ms")]
    pub poll_ms: u64,
    /// How long delivered events are kept (then purged, except each payment's last event,
    /// which carries its sequence). Default 604800 (7 days).
    #[serde(default = "default_keep_delivered_s")]
    pub keep_delivered_s: u64,
}

impl Default for WebhookDeliveryConfig {
    fn default() -> Self {
        WebhookDeliveryConfig {
            lease_ms: default_delivery_lease_ms(),
            concurrency: default_delivery_concurrency(),
            poll_ms: default_delivery_poll_ms(),
            keep_delivered_s: default_keep_delivered_s(),
        }
    }
}

fn default_keep_delivered_s() -> u64 {
    604_800
}

fn default_delivery_lease_ms() -> u64 {
    30_000
}

fn default_delivery_concurrency() -> usize {
    8
}

fn default_delivery_poll_ms() -> u64 {
    250
}

/// Signed storefront events for a payment route: each payment state change the storefront
/// dialect renders an event for is delivered to every endpoint, in order per payment.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// The merchant's endpoints; at least one.
    pub endpoints: Vec<WebhookEndpointConfig>,
    /// Retries of a failed delivery.
    #[serde(default)]
    pub retry: WebhookRetryConfig,
    /// Longest a delivery attempt may take. Default 10000.
    #[serde(default = "default_webhook_timeout_ms")]
    pub timeout_ms: u64,
}

/// One merchant endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpointConfig {
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// The signing secret (Stripe: the endpoint's `whsec_…`), inline or `{"env": "VAR"}`.
    /// Never logged or shown.
    pub secret: Secret,
}

/// Exponential backoff with jitter between delivery attempts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookRetryConfig {
    /// Delay after the first failed attempt. Default 5000.
    #[serde(default = "default_retry_initial_ms")]
    pub initial_ms: u64,
    /// Longest delay between attempts. Default 3600000 (1 h).
    #[serde(default = "default_retry_max_ms")]
    pub max_ms: u64,
    /// An event still undelivered this long after it was written is given up (kept as
    /// `failed`, listed by the admin API, redeliverable). Default 259200 (3 days).
    #[serde(default = "default_give_up_after_s")]
    pub give_up_after_s: u64,
}

impl Default for WebhookRetryConfig {
    fn default() -> Self {
        WebhookRetryConfig {
            initial_ms: default_retry_initial_ms(),
            max_ms: default_retry_max_ms(),
            give_up_after_s: default_give_up_after_s(),
        }
    }
}

fn default_webhook_timeout_ms() -> u64 {
    10_000
}

fn default_retry_initial_ms() -> u64 {
    5_000
}

fn default_retry_max_ms() -> u64 {
    3_600_000
}

fn default_give_up_after_s() -> u64 {
    259_200
}

impl WebhooksConfig {
    /// Check values; errors name the field under `at`.
    fn check(&self, at: &str, lease_ms: u64) -> Result<(), (String, String)> {
        if self.endpoints.is_empty() {
            return Err((
                format!("{at}.endpoints"),
                "at least one endpoint is required".into(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (j, e) in self.endpoints.iter().enumerate() {
            let field = format!("{at}.endpoints[{j}].url");
            let ok = match e.url.parse::<http::Uri>() {
                Ok(uri) => {
                    matches!(uri.scheme_str(), Some("http" | "https"))
                        && uri.host().is_some_and(|h| !h.is_empty())
                }
                Err(_) => false,
            };
            if !ok {
                return Err((
                    field,
                    "must be an http:// or https:// URL with a host".into(),
                ));
            }
            if !seen.insert(e.url.as_str()) {
                return Err((field, "duplicate endpoint".into()));
            }
            if let Secret::Inline(v) = &e.secret {
                if v.is_empty() {
                    return Err((
                        format!("{at}.endpoints[{j}].secret"),
                        "must not be empty".into(),
                    ));
                }
            }
        }
        let r = &self.retry;
        if r.initial_ms == 0 || r.max_ms < r.initial_ms || r.give_up_after_s == 0 {
            return Err((
                format!("{at}.retry"),
                "initial_ms and give_up_after_s must be positive, max_ms at least initial_ms"
                    .into(),
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms >= lease_ms {
            return Err((
                format!("{at}.timeout_ms"),
                format!("must be positive and below webhook_delivery.lease_ms ({lease_ms})"),
            ));
        }
        Ok(())
    }
}

/// Logs and the audit trail.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json` (one JSON object per line, with the request's trace id).
    /// `payproxy run --log-format` overrides it.
    #[serde(default)]
    pub format: LogFormat,
    /// File the audit trail is appended to (one JSON line per payment decision), relative
    /// to the config file. Absent: audit lines go to the main log, target `payproxy::audit`.
    #[serde(default)]
    pub audit_path: Option<PathBuf>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// `time level target: message key=value…`.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Trace export.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Export spans over OTLP/HTTP (protobuf). Absent: no spans are exported; the storefront's
    /// `traceparent` still reaches providers unchanged.
    #[serde(default)]
    pub otlp: Option<OtlpConfig>,
}

/// An OTLP/HTTP trace exporter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's traces URL, e.g. `http://127.0.0.1:4318/v1/traces` (https with the
    /// webpki roots).
    pub endpoint: String,
    /// Headers sent with each export (e.g. an API key), values inline or `{"env": "VAR"}`.
    /// Never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Share of new traces recorded, 0.0–1.0. Default 1.0. A storefront `traceparent`'s
    /// sampled flag is followed (parent-based sampling).
    #[serde(default = "default_sampling_ratio")]
    pub sampling_ratio: f64,
    /// `service.name` of the exported spans. Default `payproxy`.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// How often finished spans are sent, in milliseconds. Default 5000.
    #[serde(default = "default_export_interval_ms")]
    pub export_interval_ms: u64,
    /// Time allowed for one export request, in milliseconds. Default 10000.
    #[serde(default = "default_export_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_sampling_ratio() -> f64 {
    1.0
}
fn default_service_name() -> String {
    "payproxy".into()
}
fn default_export_interval_ms() -> u64 {
    5_000
}
fn default_export_timeout_ms() -> u64 {
    10_000
}

/// The state store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// `redb` (default: an embedded, crash-safe database file), `memory` (lost on restart)
    /// or `postgres` (shared by several instances, see `postgres`).
    #[serde(default = "default_state_kind")]
    pub kind: StateKind,
    /// Database file, relative to the config file. Default `payproxy.redb`.
    #[serde(default = "default_state_path")]
    pub path: PathBuf,
    /// How long a finished idempotent answer is replayed. Default 24 h.
    #[serde(default = "default_idempotency_ttl_ms")]
    pub idempotency_ttl_ms: u64,
    /// How long payment records are kept after their creation, and owners (which provider
    /// owns a payment or refund id) after their last write; follow-ups on an id past it go to
    /// the home provider. Default 400 days: longer than card refund and dispute windows.
    #[serde(default = "default_payment_retention_ms")]
    pub payment_retention_ms: u64,
    /// How often the background purge deletes expired idempotency records and payments and
    /// owners past their retention. Default 60 s; must be positive.
    #[serde(default = "default_purge_interval_ms")]
    pub purge_interval_ms: u64,
    /// How long a provider notification for a payment payproxy does not know yet (the
    /// provider notified before its answer was recorded) is held and tried again before it
    /// is reported and dropped. Default 10 minutes; at least 1 s.
    #[serde(default = "default_notice_hold_ms")]
    pub notice_hold_ms: u64,
    /// The shared database of `kind: "postgres"`; required for that kind, refused otherwise.
    #[serde(default)]
    pub postgres: Option<PostgresConfig>,
}

/// `state.postgres`: several payproxy instances share one PostgreSQL database.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Connection URL (`postgres://user:password@host:port/db`) or `key=value` string,
    /// inline or `{"env": "VAR"}`. Never logged or shown on the status page.
    pub url: Secret,
    /// TLS to the database. Without it the connection is plaintext, allowed only to a
    /// loopback host (127.0.0.0/8, ::1, `localhost`) or a Unix socket.
    #[serde(default)]
    pub tls: Option<PostgresTls>,
    /// How long a claim on an in-flight idempotency key lasts without renewal; each instance
    /// renews its claims every third of it. Another instance takes a payment over only once
    /// its lease has lapsed. Default 10 s; at least 300 ms.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// Connections in the pool. Default 16; at least 1.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Connect timeout, and the longest a store call waits for a pooled connection. Default
    /// 5 s.
    #[serde(default = "default_pg_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

/// `state.postgres.tls`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresTls {
    /// PEM file of the CA(s) that issued the server's certificate, relative to the config
    /// file; trusted in addition to the webpki roots. The server name is verified.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_lease_ms() -> u64 {
    10_000
}
fn default_pool_size() -> usize {
    16
}
fn default_pg_connect_timeout_ms() -> u64 {
    5_000
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            kind: default_state_kind(),
            path: default_state_path(),
            idempotency_ttl_ms: default_idempotency_ttl_ms(),
            payment_retention_ms: default_payment_retention_ms(),
            purge_interval_ms: default_purge_interval_ms(),
            notice_hold_ms: default_notice_hold_ms(),
            postgres: None,
        }
    }
}

/// State store kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StateKind {
    /// Embedded redb file.
    Redb,
    /// In memory only.
    Memory,
    /// A PostgreSQL database shared by several instances (`state.postgres`).
    Postgres,
}

fn default_state_kind() -> StateKind {
    StateKind::Redb
}
fn default_state_path() -> PathBuf {
    PathBuf::from("payproxy.redb")
}
fn default_idempotency_ttl_ms() -> u64 {
    24 * 60 * 60 * 1000
}
fn default_payment_retention_ms() -> u64 {
    400 * 24 * 60 * 60 * 1000
}
fn default_purge_interval_ms() -> u64 {
    60 * 1000
}

fn default_notice_hold_ms() -> u64 {
    10 * 60 * 1000
}

/// One storefront listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address to bind, e.g. `127.0.0.1:8080` (port 0 picks a free port).
    pub addr: SocketAddr,
    /// Terminate TLS here with this certificate; plain HTTP when absent.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// A certificate chain and private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The admin listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address to bind. Default `127.0.0.1:9901`. A non-loopback address requires a token.
    #[serde(default = "default_admin_addr")]
    pub addr: SocketAddr,
    /// Bearer token for `POST /admin/reload`, and on a non-loopback address for every endpoint.
    #[serde(default)]
    pub token: Option<String>,
    /// Environment variable holding the token when `token` is absent.
    /// Default `PAYPROXY_ADMIN_TOKEN`.
    #[serde(default = "default_token_env")]
    pub token_env: String,
    /// Open connections the admin listener keeps at once; beyond it new ones are closed at
    /// once. Its own cap, so a flood on one listener cannot use the other's descriptors.
    /// Default 1024. Follows reloads.
    #[serde(default = "default_admin_max_connections")]
    pub max_connections: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            addr: default_admin_addr(),
            token: None,
            token_env: default_token_env(),
            max_connections: default_admin_max_connections(),
        }
    }
}

/// Limits on storefront requests.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Total size of request headers (names + values). Default 16 KiB → 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Number of request headers. Default 100 → 431.
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// Request body size. Default 1 MiB → 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Whole request, from headers read to response headers sent. Default 30 s → 504.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Time allowed for a client to send its request headers (HTTP/1.1), and for the TLS
    /// handshake. Default 10 s. Storefront and admin listeners.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// A connection with no request in progress for this long is closed: one that never sent
    /// anything, only the HTTP/2 preface, or an idle keep-alive. Default 60 s. Storefront and
    /// admin listeners.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Open connections each storefront listener keeps at once; beyond it new connections are
    /// closed at once (counted in `payproxy_connections_refused_total`) while the open ones
    /// are still served. Default 10 000; keep it below the descriptor limit.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Payments (payment-route requests) running at once in the process; beyond it a payment
    /// request is answered 503 before anything is sent. Payments run on their own tasks, which
    /// a client's hang-up does not stop, so this bounds what clients can leave running.
    /// Default 4096; read at start.
    #[serde(default = "default_max_payments_in_flight")]
    pub max_payments_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: default_max_header_bytes(),
            max_headers: default_max_headers(),
            max_body_bytes: default_max_body_bytes(),
            request_timeout_ms: default_request_timeout_ms(),
            header_read_timeout_ms: default_header_read_timeout_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
            max_connections: default_max_connections(),
            max_payments_in_flight: default_max_payments_in_flight(),
        }
    }
}

fn default_max_payments_in_flight() -> usize {
    4096
}

/// Whether plugin instances are reused across requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceMode {
    /// Keep warm instances and reuse them (recycled after `recycle_after` calls).
    Reuse,
    /// A fresh instance for every call.
    Fresh,
}

/// Plugin sandbox settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginHostConfig {
    /// `reuse` (default) or `fresh`.
    #[serde(default = "default_instance_mode")]
    pub instance_mode: InstanceMode,
    /// Calls an instance serves before it is replaced by a fresh one. Default 10 000.
    #[serde(default = "default_recycle_after")]
    pub recycle_after: u32,
    /// CPU deadline per plugin call, default 20 ms.
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    /// Linear memory cap per plugin instance, default 32 MiB.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u32,
    /// Highest `memory_mb` any plugin may set (sizes the pooling allocator). Default 128.
    /// Needs a restart to change.
    #[serde(default = "default_max_memory_mb")]
    pub max_memory_mb: u32,
    /// Instances that may exist at once across all plugins. Default 256. Needs a restart.
    #[serde(default = "default_max_instances")]
    pub max_instances: u32,
    /// Keep compiled plugins on disk, so a restart loads them instead of compiling. Default
    /// true.
    #[serde(default = "default_true")]
    pub compile_cache: bool,
    /// Directory of the compile cache, relative to the config file. Default `plugin-cache`.
    /// It must be writable by payproxy's user only (it holds machine code).
    #[serde(default = "default_compile_cache_dir")]
    pub compile_cache_dir: PathBuf,
}

impl Default for PluginHostConfig {
    fn default() -> Self {
        PluginHostConfig {
            instance_mode: default_instance_mode(),
            recycle_after: default_recycle_after(),
            deadline_ms: default_deadline_ms(),
            memory_mb: default_memory_mb(),
            max_memory_mb: default_max_memory_mb(),
            max_instances: default_max_instances(),
            compile_cache: true,
            compile_cache_dir: default_compile_cache_dir(),
        }
    }
}

/// A plugin's role, i.e. the WIT world it implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// `payproxy:plugin/router@0.4.0`, `@0.3.0`, `@0.2.0` or `@0.1.0`: orders the route's providers.
    Router,
    /// `payproxy:plugin/compliance@0.2.0`: allow, deny or challenge a payment.
    Compliance,
    /// `payproxy:plugin/ingress@0.2.0` and/or `egress@0.2.0`: a payment protocol.
    Dialect,
}

impl Role {
    /// Name as written in config and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Router => "router",
            Role::Compliance => "compliance",
            Role::Dialect => "dialect",
        }
    }
}

/// What happens to a request when this plugin fails (trap, deadline, memory, bad output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Answer the storefront with a JSON 5xx.
    FailClosed,
    /// Continue without the plugin: a router falls back to the route's static order.
    FailOpen,
}

/// One plugin.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Path to the component (`.wasm`), relative to the config file.
    pub path: PathBuf,
    /// The role it must implement.
    pub role: Role,
    /// The plugin's own JSON config, given to its `init`. Default `{}`.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    /// Or: a JSON file holding it (relative to the config file; watched for changes).
    #[serde(default)]
    pub config_file: Option<PathBuf>,
    /// `fail-closed` (default) or `fail-open`.
    #[serde(default = "default_on_error")]
    pub on_error: OnError,
    /// Overrides `plugin_host.deadline_ms`.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// Overrides `plugin_host.memory_mb`.
    #[serde(default)]
    pub memory_mb: Option<u32>,
    /// Pins the component: the lower-case hex sha256 its file must have. A file that does
    /// not match is refused before it is compiled, at start and at every reload (the
    /// running snapshot keeps serving). Default: not pinned.
    #[serde(default)]
    pub sha256: Option<String>,
}

/// One provider (upstream).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Base URL, `http://` or `https://`; its path is prefixed to the request path.
    pub url: String,
    /// Region label passed to plugins. Default empty.
    #[serde(default)]
    pub region: String,
    /// Tags passed to plugins. Default none.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Relative cost passed to plugins. Default 1.0.
    #[serde(default = "default_cost")]
    pub cost: f64,
    /// Extra PEM CA certificates trusted for this provider, besides the webpki roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The dialect plugin this provider speaks (its provider side is used). Without one the
    /// provider can only take requests forwarded unchanged (transparent routes).
    #[serde(default)]
    pub dialect: Option<String>,
    /// Credentials given to this provider's dialect plugin only: literal strings or
    /// `{"env": "VAR"}`. Never logged or shown on the status page.
    #[serde(default)]
    pub credentials: BTreeMap<String, Secret>,
    /// An OAuth 2.0 access token the host fetches for this provider (client credentials
    /// grant) and gives its dialect as one more credential. Default: none.
    #[serde(default)]
    pub oauth2: Option<OAuth2Config>,
    /// Optional active health check: a cheap GET the host sends on its own.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    /// Who issues the instruments (card tokens) this provider can charge: providers with the
    /// same issuer are endpoints of one account and can charge each other's tokens. Default:
    /// the provider's own name (it charges only what it issued).
    #[serde(default)]
    pub issuer: Option<String>,
    /// TCP + TLS connect timeout. Default 2 s.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Time to the provider's response headers. Default 15 s.
    #[serde(default = "default_upstream_timeout_ms")]
    pub timeout_ms: u64,
}

/// A provider's OAuth 2.0 token endpoint (RFC 6749 §4.4, client credentials grant).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Config {
    /// The token endpoint, `https://` (or `http://`), e.g. `https://api.example/oauth/token`.
    pub token_url: String,
    /// The client id: inline, `{"env": …}` or `{"file": …}`.
    pub client_id: Secret,
    /// The client secret: inline, `{"env": …}` or `{"file": …}`; never logged.
    pub client_secret: Secret,
    /// `scope`, when the provider wants one.
    #[serde(default)]
    pub scope: Option<String>,
    /// How the client authenticates: `basic` (HTTP Basic, `client_secret_basic`, the
    /// default) or `body` (`client_id` and `client_secret` in the form).
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// The credential name the token is given to the dialect under. Default `access_token`.
    #[serde(default = "default_token_credential")]
    pub credential: String,
    /// Refresh this long before the token expires (at most half its lifetime). Default 60 s.
    #[serde(default = "default_refresh_before_ms")]
    pub refresh_before_ms: u64,
    /// Time allowed for one token request. Default 5 s.
    #[serde(default = "default_token_timeout_ms")]
    pub timeout_ms: u64,
}

/// How an OAuth client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with the form-urlencoded id and secret (RFC 6749 §2.3.1).
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the request body.
    Body,
}

fn default_token_credential() -> String {
    "access_token".into()
}
fn default_refresh_before_ms() -> u64 {
    60_000
}
fn default_token_timeout_ms() -> u64 {
    5_000
}

/// An active health check of a provider.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Path appended to the provider's base URL, e.g. `/health`.
    pub path: String,
    /// Time between checks. Default 1 s.
    #[serde(default = "default_check_interval_ms")]
    pub interval_ms: u64,
    /// Time allowed for an answer. Default 500 ms.
    #[serde(default = "default_check_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_check_interval_ms() -> u64 {
    1_000
}
fn default_check_timeout_ms() -> u64 {
    500
}

/// A secret value: inline, read from the environment when the config is loaded, or read
/// from a file at every load and reload.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Secret {
    /// The value itself.
    Inline(String),
    /// `{"env": "VAR"}`.
    Env {
        /// Environment variable name.
        env: String,
    },
    /// `{"file": "/abs/path"}`: the file's content without its trailing newline, read at
    /// start and again at every reload (a rotated secret file takes effect on reload).
    File {
        /// Absolute path.
        file: PathBuf,
    },
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("Secret(***)"),
            Secret::Env { env } => write!(f, "Secret(env {env})"),
            Secret::File { file } => write!(f, "Secret(file {})", file.display()),
        }
    }
}

impl Secret {
    /// The value; an unset variable is an error naming the variable, not the value.
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            Secret::Inline(v) => Ok(v.clone()),
            Secret::Env { env } => {
                std::env::var(env).map_err(|_| format!("environment variable {env} is not set"))
            }
            Secret::File { file } => {
                if !file.is_absolute() {
                    return Err(format!(
                        "secret file {} must be an absolute path",
                        file.display()
                    ));
                }
                // The error names the file, never its content.
                let mut value = crate::files::read_to_string(file, crate::files::SECRET)
                    .map_err(|e| e.to_string())?;
                let trimmed = value.trim_end_matches(['\n', '\r']).len();
                value.truncate(trimmed);
                if value.is_empty() {
                    return Err(format!("secret file {} is empty", file.display()));
                }
                Ok(value)
            }
        }
    }
}

/// Time a payment route needs after its payment deadline to record and answer.
pub const PAYMENT_MARGIN_MS: u64 = 1_000;

/// One route.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique name, used in metrics and errors.
    pub name: String,
    /// Host (without port) the request must be for; any host when absent.
    #[serde(default)]
    pub host: Option<String>,
    /// Path prefix the request path must start with. Default `/`.
    #[serde(default = "default_path_prefix")]
    pub path_prefix: String,
    /// Plugin chain, by name. At most one router.
    #[serde(default)]
    pub plugins: Vec<String>,
    /// Providers in static order (used as is without a router, and as the fail-open order).
    pub providers: Vec<String>,
    /// Give the request body to plugins (buffered up to `limits.max_body_bytes`).
    /// Default false: bodies are streamed. Payment routes always buffer.
    #[serde(default)]
    pub plugin_body: bool,
    /// The storefront's dialect (a dialect plugin with a storefront side). Makes this a
    /// payment route: ingress → comply → route → attempt → respond.
    #[serde(default)]
    pub dialect: Option<String>,
    /// The provider of the storefront's own dialect that answers everything the dialect does
    /// not orchestrate (customers, payment methods, unknown endpoints), payments payproxy has
    /// never seen, and card-token lookups. Its tokens can be charged by providers of the same
    /// `issuer` only. Payment routes only; none: such requests are answered 404.
    #[serde(default)]
    pub home: Option<String>,
    /// HTTP methods the route takes (upper case); any when empty. Default any.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Prefix of payment ids the proxy mints for payments made in another dialect.
    /// Default `pi_` (Stripe's PaymentIntent prefix).
    #[serde(default = "default_payment_prefix")]
    pub payment_id_prefix: String,
    /// Prefix of refund ids the proxy mints. Default `re_`.
    #[serde(default = "default_refund_prefix")]
    pub refund_id_prefix: String,
    /// Failover policy of a payment route.
    #[serde(default)]
    pub failover: FailoverConfig,
    /// The storefront API keys this route accepts (`Authorization: Bearer KEY`, or Basic
    /// with the key as user name), as SHA-256 digests or environment variables; anything else
    /// is answered 401. Required on payment routes unless `allow_unauthenticated`.
    #[serde(default)]
    pub storefront_keys: Vec<StorefrontKey>,
    /// Accept storefront requests without a key (only behind a network that admits the
    /// storefront alone). Default false.
    #[serde(default)]
    pub allow_unauthenticated: bool,
    /// What a card number in the request does: `refuse` (default: 400 before anything is
    /// stored, logged or sent) or `allow` (a route to a card vault or a PCI-scoped provider;
    /// its bodies are then streamed unread).
    #[serde(default)]
    pub card_data: CardData,
    /// Signed storefront events delivered to the merchant (payment routes only). None: no
    /// events are written.
    #[serde(default)]
    pub webhooks: Option<WebhooksConfig>,
    /// Status queries of payments left pending (payment routes): payproxy asks the provider
    /// itself when no outcome arrived. Off by default.
    #[serde(default)]
    pub pending_queries: PendingQueriesConfig,
}

/// "No webhook? Ask": a payment of the route still `processing` or `requires_action`
/// `after_ms` after its creation is queried at its provider every `every_ms`, at most
/// `max_queries` times, until it resolves; one still pending after that is reported (log line
/// and `payproxy_pending_queries_total{result="gave_up"}`) and left to the storefront.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingQueriesConfig {
    /// Default false: each query is a provider request (rate limits, cost) and counts
    /// towards that provider's health, so an operator turns them on per route.
    #[serde(default)]
    pub enabled: bool,
    /// Age of a payment before its first query. Default 600000 (10 min).
    #[serde(default = "default_pending_after_ms")]
    pub after_ms: u64,
    /// Time between two queries of one payment. Default 600000 (10 min).
    #[serde(default = "default_pending_every_ms")]
    pub every_ms: u64,
    /// Queries of one payment at most. Default 12.
    #[serde(default = "default_pending_max_queries")]
    pub max_queries: u32,
}

impl Default for PendingQueriesConfig {
    fn default() -> Self {
        PendingQueriesConfig {
            enabled: false,
            after_ms: default_pending_after_ms(),
            every_ms: default_pending_every_ms(),
            max_queries: default_pending_max_queries(),
        }
    }
}

fn default_pending_after_ms() -> u64 {
    600_000
}

fn default_pending_every_ms() -> u64 {
    600_000
}

fn default_pending_max_queries() -> u32 {
    12
}

impl PendingQueriesConfig {
    fn check(&self, at: &str) -> Result<(), (String, String)> {
        const DAY_MS: u64 = 86_400_000;
        if !(1_000..=30 * DAY_MS).contains(&self.after_ms) {
            return Err((
                format!("{at}.after_ms"),
                "must be 1000..=2592000000 (1 s to 30 days)".into(),
            ));
        }
        if !(1_000..=DAY_MS).contains(&self.every_ms) {
            return Err((
                format!("{at}.every_ms"),
                "must be 1000..=86400000 (1 s to 1 day)".into(),
            ));
        }
        if !(1..=1_000).contains(&self.max_queries) {
            return Err((format!("{at}.max_queries"), "must be 1..=1000".into()));
        }
        Ok(())
    }
}

/// A storefront API key a route accepts. The key itself never appears in the config file.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum StorefrontKey {
    /// `{"sha256": "hex"}`: the key's SHA-256 digest (`printf %s KEY | sha256sum`).
    Digest {
        /// 64 hex digits.
        sha256: String,
    },
    /// `{"env": "VAR"}`: the key, read from the environment at each (re)load.
    Env {
        /// Environment variable name.
        env: String,
    },
}

impl std::fmt::Debug for StorefrontKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorefrontKey::Digest { .. } => f.write_str("StorefrontKey(sha256 ***)"),
            StorefrontKey::Env { env } => write!(f, "StorefrontKey(env {env})"),
        }
    }
}

impl StorefrontKey {
    /// The key's digest; an unset variable or a malformed digest is an error naming it.
    pub fn digest(&self) -> Result<[u8; 32], String> {
        use sha2::Digest as _;
        match self {
            StorefrontKey::Digest { sha256 } => {
                let mut digest = [0u8; 32];
                hex::decode_to_slice(sha256.trim(), &mut digest)
                    .map_err(|_| "sha256 must be 64 hex digits".to_string())?;
                // `printf %s "$UNSET" | sha256sum` gives this: it would accept an empty key.
                if digest == <[u8; 32]>::from(sha2::Sha256::digest(b"")) {
                    return Err("sha256 is the digest of an empty key".into());
                }
                Ok(digest)
            }
            StorefrontKey::Env { env } => match std::env::var(env) {
                Ok(key) if !key.is_empty() => Ok(sha2::Sha256::digest(key.as_bytes()).into()),
                _ => Err(format!("environment variable {env} is not set")),
            },
        }
    }
}

/// What a route does with card numbers in requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardData {
    /// Refused with 400, nothing kept or sent.
    #[default]
    Refuse,
    /// Passed on unread.
    Allow,
}

/// How a payment route moves between providers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverConfig {
    /// Providers tried at most per request. Default 3.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Overall time for all attempts of one request. Default 20 s.
    #[serde(default = "default_payment_deadline_ms")]
    pub deadline_ms: u64,
    /// Try the next provider after a soft decline. Default false.
    #[serde(default)]
    pub retry_soft_declines: bool,
    /// Resends (same provider, same idempotency key) after an ambiguous attempt. Default 1.
    #[serde(default = "default_resend_attempts")]
    pub resend_attempts: u32,
    /// Pause before such a resend. Default 200 ms.
    #[serde(default = "default_resend_backoff_ms")]
    pub resend_backoff_ms: u64,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        FailoverConfig {
            max_attempts: default_max_attempts(),
            deadline_ms: default_payment_deadline_ms(),
            retry_soft_declines: false,
            resend_attempts: default_resend_attempts(),
            resend_backoff_ms: default_resend_backoff_ms(),
        }
    }
}

/// Live reload settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Reload when the config file, a plugin file or a plugin config file changes. Default true.
    #[serde(default = "default_true")]
    pub watch: bool,
    /// Quiet period after a change before reloading, default 200 ms.
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            watch: true,
            debounce_ms: default_debounce_ms(),
        }
    }
}

fn default_admin_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9901))
}
fn default_token_env() -> String {
    "PAYPROXY_ADMIN_TOKEN".into()
}
fn default_max_header_bytes() -> usize {
    16 * 1024
}
fn default_max_headers() -> usize {
    100
}
fn default_max_body_bytes() -> u64 {
    1024 * 1024
}
fn default_request_timeout_ms() -> u64 {
    30_000
}
fn default_header_read_timeout_ms() -> u64 {
    10_000
}
fn default_idle_timeout_ms() -> u64 {
    60_000
}
fn default_max_connections() -> usize {
    10_000
}
fn default_admin_max_connections() -> usize {
    1024
}
fn default_instance_mode() -> InstanceMode {
    InstanceMode::Reuse
}
fn default_recycle_after() -> u32 {
    10_000
}
fn default_compile_cache_dir() -> PathBuf {
    PathBuf::from("plugin-cache")
}
fn default_deadline_ms() -> u64 {
    20
}
fn default_memory_mb() -> u32 {
    32
}
fn default_max_memory_mb() -> u32 {
    128
}
fn default_max_instances() -> u32 {
    256
}
fn default_on_error() -> OnError {
    OnError::FailClosed
}
fn default_cost() -> f64 {
    1.0
}
fn default_connect_timeout_ms() -> u64 {
    2_000
}
fn default_upstream_timeout_ms() -> u64 {
    15_000
}
fn default_path_prefix() -> String {
    "/".into()
}
fn default_max_attempts() -> u32 {
    3
}
fn default_payment_deadline_ms() -> u64 {
    20_000
}
fn default_resend_attempts() -> u32 {
    1
}
fn default_resend_backoff_ms() -> u64 {
    200
}
fn default_payment_prefix() -> String {
    "pi_".into()
}
fn default_refund_prefix() -> String {
    "re_".into()
}
fn default_true() -> bool {
    true
}
fn default_debounce_ms() -> u64 {
    200
}

impl Config {
    /// Parse config text; `file` only names the source in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let mut field = e.path().to_string();
            let inner = e.into_inner();
            let message = strip_position(&inner);
            // serde reports a missing field at its parent; name the field itself.
            if let Some(name) = message
                .strip_prefix("missing field `")
                .and_then(|m| m.strip_suffix('`'))
            {
                field = if field == "." {
                    name.to_string()
                } else {
                    format!("{field}.{name}")
                };
            }
            if inner.is_data() && field != "." {
                ConfigError::Field {
                    file: file.to_path_buf(),
                    field,
                    message,
                }
            } else {
                ConfigError::Syntax {
                    file: file.to_path_buf(),
                    line: inner.line(),
                    column: inner.column(),
                    message: strip_position(&inner),
                }
            }
        })?;
        config.validate(file)?;
        Ok(config)
    }

    /// Read (a regular file within [`files::JSON`]) and parse a config file.
    pub fn load(file: &Path) -> Result<(Config, String), ConfigError> {
        let text = files::read_to_string(file, files::JSON)?;
        Ok((Config::parse(&text, file)?, text))
    }

    /// Check references between sections and value ranges.
    pub fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Field {
            file: file.to_path_buf(),
            field,
            message,
        };
        if self.listeners.is_empty() {
            return Err(invalid(
                "listeners".into(),
                "at least one listener is required".into(),
            ));
        }
        if self.routes.is_empty() {
            return Err(invalid(
                "routes".into(),
                "at least one route is required".into(),
            ));
        }
        for (name, p) in &self.plugins {
            if let Some(pin) = &p.sha256 {
                if pin.len() != 64 || !pin.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return Err(invalid(
                        format!("plugins.{name}.sha256"),
                        "must be 64 lower-case hex digits (`sha256sum` of the component)".into(),
                    ));
                }
            }
        }
        if let Some(otlp) = &self.telemetry.otlp {
            if !(0.0..=1.0).contains(&otlp.sampling_ratio) {
                return Err(invalid(
                    "telemetry.otlp.sampling_ratio".into(),
                    "must be between 0.0 and 1.0".into(),
                ));
            }
            match otlp.endpoint.parse::<http::Uri>() {
                Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) => {}
                _ => {
                    return Err(invalid(
                        "telemetry.otlp.endpoint".into(),
                        "must be an http:// or https:// URL".into(),
                    ))
                }
            }
            for name in otlp.headers.keys() {
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err(invalid(
                        format!("telemetry.otlp.headers.{name}"),
                        "is not a valid header name".into(),
                    ));
                }
            }
            if otlp.export_interval_ms == 0 || otlp.timeout_ms == 0 {
                return Err(invalid(
                    "telemetry.otlp".into(),
                    "export_interval_ms and timeout_ms must be positive".into(),
                ));
            }
        }
        let l = &self.limits;
        if l.max_header_bytes < 1024 || l.max_header_bytes > 1024 * 1024 {
            return Err(invalid(
                "limits.max_header_bytes".into(),
                "must be 1024..=1048576".into(),
            ));
        }
        for (field, value) in [
            ("limits.max_headers", l.max_headers as u64),
            ("limits.request_timeout_ms", l.request_timeout_ms),
            ("limits.header_read_timeout_ms", l.header_read_timeout_ms),
            ("limits.idle_timeout_ms", l.idle_timeout_ms),
            ("limits.max_connections", l.max_connections as u64),
            ("admin.max_connections", self.admin.max_connections as u64),
        ] {
            if value == 0 {
                return Err(invalid(field.into(), "must be positive".into()));
            }
        }
        if let Some(threads) = self.runtime.worker_threads {
            if !(1..=1024).contains(&threads) {
                return Err(invalid(
                    "runtime.worker_threads".into(),
                    format!("must be between 1 and 1024, not {threads}"),
                ));
            }
        }
        let d = &self.webhook_delivery;
        if d.lease_ms == 0 || d.concurrency == 0 || d.poll_ms == 0 {
            return Err(invalid(
                "webhook_delivery".into(),
                "lease_ms, concurrency and poll_ms must be positive".into(),
            ));
        }
        if self.state.purge_interval_ms == 0 {
            return Err(invalid(
                "state.purge_interval_ms".into(),
                "must be positive".into(),
            ));
        }
        if self.state.notice_hold_ms < 1000 {
            return Err(invalid(
                "state.notice_hold_ms".into(),
                "must be at least 1000".into(),
            ));
        }
        match (&self.state.kind, &self.state.postgres) {
            (StateKind::Postgres, None) => {
                return Err(invalid(
                    "state.postgres".into(),
                    "required with \"kind\": \"postgres\"".into(),
                ))
            }
            (StateKind::Postgres, Some(pg)) => {
                if pg.lease_ms < 300 {
                    return Err(invalid(
                        "state.postgres.lease_ms".into(),
                        "must be at least 300".into(),
                    ));
                }
                if pg.pool_size == 0 || pg.connect_timeout_ms == 0 {
                    return Err(invalid(
                        "state.postgres".into(),
                        "pool_size and connect_timeout_ms must be positive".into(),
                    ));
                }
            }
            (_, Some(_)) => {
                return Err(invalid(
                    "state.postgres".into(),
                    "only with \"kind\": \"postgres\"".into(),
                ))
            }
            (_, None) => {}
        }
        let host = &self.plugin_host;
        if host.deadline_ms == 0 || host.memory_mb == 0 || host.recycle_after == 0 {
            return Err(invalid(
                "plugin_host".into(),
                "deadline_ms, memory_mb and recycle_after must be positive".into(),
            ));
        }
        if host.memory_mb > host.max_memory_mb {
            return Err(invalid(
                "plugin_host.memory_mb".into(),
                format!(
                    "{} exceeds plugin_host.max_memory_mb {}",
                    host.memory_mb, host.max_memory_mb
                ),
            ));
        }
        for (name, plugin) in &self.plugins {
            let at = format!("plugins.{name}");
            if plugin.config.is_some() && plugin.config_file.is_some() {
                return Err(invalid(at, "set config or config_file, not both".into()));
            }
            if let Some(mb) = plugin.memory_mb {
                if mb == 0 || mb > host.max_memory_mb {
                    return Err(invalid(
                        format!("{at}.memory_mb"),
                        format!("must be 1..={}", host.max_memory_mb),
                    ));
                }
            }
            if plugin.role == Role::Compliance && plugin.on_error == OnError::FailOpen {
                return Err(invalid(
                    format!("{at}.on_error"),
                    "compliance plugins always fail closed".into(),
                ));
            }
            if plugin.deadline_ms == Some(0) {
                return Err(invalid(
                    format!("{at}.deadline_ms"),
                    "must be positive".into(),
                ));
            }
        }
        for (name, provider) in &self.providers {
            let at = format!("providers.{name}");
            crate::upstream::parse_base_url(&provider.url)
                .map_err(|message| invalid(format!("{at}.url"), message))?;
            if !provider.cost.is_finite() || provider.cost < 0.0 {
                return Err(invalid(
                    format!("{at}.cost"),
                    "must be a non-negative number".into(),
                ));
            }
            if let Some(d) = &provider.dialect {
                if self.plugins.get(d).map(|p| p.role) != Some(Role::Dialect) {
                    return Err(invalid(
                        format!("{at}.dialect"),
                        format!("{d:?} is not a dialect plugin"),
                    ));
                }
            }
            if provider.connect_timeout_ms == 0 || provider.timeout_ms == 0 {
                return Err(invalid(at, "timeouts must be positive".into()));
            }
            if let Some(oauth) = &provider.oauth2 {
                let at = format!("{at}.oauth2");
                let url = crate::upstream::parse_base_url(&oauth.token_url)
                    .map_err(|message| invalid(format!("{at}.token_url"), message))?;
                if url.authority().is_some_and(|a| a.as_str().contains('@')) {
                    return Err(invalid(
                        format!("{at}.token_url"),
                        "must not carry credentials; use client_id and client_secret".into(),
                    ));
                }
                if oauth.credential.is_empty()
                    || provider.credentials.contains_key(&oauth.credential)
                {
                    return Err(invalid(
                        format!("{at}.credential"),
                        format!(
                            "{:?} must be a non-empty name that is not also in credentials",
                            oauth.credential
                        ),
                    ));
                }
                if oauth.timeout_ms == 0 || oauth.timeout_ms > 60_000 {
                    return Err(invalid(
                        format!("{at}.timeout_ms"),
                        "must be 1..=60000".into(),
                    ));
                }
            }
        }
        self.breaker
            .validate()
            .map_err(|e| invalid(format!("breaker.{}", e.field), e.message.clone()))?;
        let mut seen = std::collections::BTreeSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            let at = format!("routes[{i}]");
            if !seen.insert(route.name.as_str()) {
                return Err(invalid(
                    format!("{at}.name"),
                    format!("duplicate route name {:?}", route.name),
                ));
            }
            if !route.path_prefix.starts_with('/') {
                return Err(invalid(
                    format!("{at}.path_prefix"),
                    "must start with /".into(),
                ));
            }
            // Payment phases are not cut by the request timeout; it must hold them, so a
            // storefront's request never ends before its payment's outcome is known.
            let hold_ms = route.failover.deadline_ms.saturating_add(PAYMENT_MARGIN_MS);
            if route.dialect.is_some() && self.limits.request_timeout_ms < hold_ms {
                return Err(invalid(
                    "limits.request_timeout_ms".into(),
                    format!(
                        "{} ms cannot hold route {:?}'s payment deadline ({} ms) plus {} ms to \
                         record and answer: set it to at least {hold_ms}",
                        self.limits.request_timeout_ms,
                        route.name,
                        route.failover.deadline_ms,
                        PAYMENT_MARGIN_MS
                    ),
                ));
            }
            if route.dialect.is_some()
                && route.storefront_keys.is_empty()
                && !route.allow_unauthenticated
            {
                return Err(invalid(
                    format!("{at}.storefront_keys"),
                    "a payment route needs the storefront keys it accepts (or \
                     \"allow_unauthenticated\": true behind a network only the storefront reaches)"
                        .into(),
                ));
            }
            if !route.storefront_keys.is_empty() && route.allow_unauthenticated {
                return Err(invalid(
                    format!("{at}.allow_unauthenticated"),
                    "a route with storefront_keys takes only those keys: set one or the other"
                        .into(),
                ));
            }
            for (j, key) in route.storefront_keys.iter().enumerate() {
                key.digest()
                    .map_err(|message| invalid(format!("{at}.storefront_keys[{j}]"), message))?;
            }
            if let Some(webhooks) = &route.webhooks {
                if route.dialect.is_none() {
                    return Err(invalid(
                        format!("{at}.webhooks"),
                        "only payment routes (with a dialect) send webhooks".into(),
                    ));
                }
                webhooks
                    .check(&format!("{at}.webhooks"), self.webhook_delivery.lease_ms)
                    .map_err(|(field, message)| invalid(field, message))?;
            }
            route
                .pending_queries
                .check(&format!("{at}.pending_queries"))
                .map_err(|(field, message)| invalid(field, message))?;
            if route.card_data == CardData::Allow && route.dialect.is_some() {
                return Err(invalid(
                    format!("{at}.card_data"),
                    "payment routes always refuse card numbers".into(),
                ));
            }
            if route.providers.is_empty() {
                return Err(invalid(
                    format!("{at}.providers"),
                    "at least one provider is required".into(),
                ));
            }
            for (j, p) in route.providers.iter().enumerate() {
                if !self.providers.contains_key(p) {
                    return Err(invalid(
                        format!("{at}.providers[{j}]"),
                        format!("unknown provider {p:?}"),
                    ));
                }
            }
            for (j, m) in route.methods.iter().enumerate() {
                if http::Method::from_bytes(m.as_bytes()).is_err()
                    || m.bytes().any(|b| b.is_ascii_lowercase())
                {
                    return Err(invalid(
                        format!("{at}.methods[{j}]"),
                        format!("{m:?} is not an upper-case HTTP method"),
                    ));
                }
            }
            if let Some(home) = &route.home {
                let provider = self.providers.get(home).ok_or_else(|| {
                    invalid(format!("{at}.home"), format!("unknown provider {home:?}"))
                })?;
                if route.dialect.is_none() {
                    return Err(invalid(
                        format!("{at}.home"),
                        "only payment routes (with a dialect) have a home provider".into(),
                    ));
                }
                if provider.dialect != route.dialect {
                    return Err(invalid(
                        format!("{at}.home"),
                        format!(
                            "provider {home:?} does not speak the route's dialect {:?}",
                            route.dialect.as_deref().unwrap_or_default()
                        ),
                    ));
                }
            }
            let mut routers = 0;
            for (j, p) in route.plugins.iter().enumerate() {
                let plugin = self.plugins.get(p).ok_or_else(|| {
                    invalid(
                        format!("{at}.plugins[{j}]"),
                        format!("unknown plugin {p:?}"),
                    )
                })?;
                if plugin.role == Role::Router {
                    routers += 1;
                }
            }
            if routers > 1 {
                return Err(invalid(
                    format!("{at}.plugins"),
                    "at most one router plugin per route".into(),
                ));
            }
        }
        Ok(())
    }
}

/// serde_json appends " at line L column C"; errors here carry position separately.
fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Resolve `path` against the directory of the config file.
pub fn resolve(config_file: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        config_file.parent().unwrap_or(Path::new(".")).join(path)
    }
}
