//! Logs and traces: the `tracing` subscriber (text or JSON lines, each with its request's
//! trace id), W3C trace context in and out, and the optional OpenTelemetry exporter (OTLP
//! over HTTP, through payproxy's own hyper + rustls client).
//!
//! # Spans
//!
//! When spans are read (exported, or a log at `debug` or finer), every storefront request
//! runs in a `request` span whose parent is the storefront's `traceparent` when it sent one.
//! Otherwise no request span is built: the request's trace id rides on its task
//! ([`RequestTrace`]), which is all log and audit lines need. Under the request span: one
//! span per payment phase (`payment.ingress`, `payment.idempotency`, `payment.comply`, …),
//! one per plugin call (`plugin <name>`: name,
//! role, sha256, function, outcome, time in the sandbox) and one per provider attempt
//! (`provider <name>`: kind `send`/`forward`/`resend`/`status`, class, HTTP status). Spans
//! carry names, classes, codes and timings only, never a body, a header value, a secret or a
//! card number.
//!
//! Span and phase events use the target [`TRACE_TARGET`] at `debug` level (the request span
//! at `info`), so with export off they cost a disabled-callsite check, and `PAYPROXY_LOG`
//! at `info` does not print them. With export on, the exporter's own filter takes them.
//!
//! # Propagation
//!
//! A provider request carries a `traceparent` naming its attempt span when spans are
//! exported; otherwise the storefront's `traceparent` and `tracestate`, unchanged.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Instrument, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::fmt::format::Format;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::{LogFormat, OtlpConfig};

/// Target of payproxy's spans (request, phase, plugin, attempt).
pub const TRACE_TARGET: &str = "payproxy::trace";

/// Target of audit lines written to the main log (no `log.audit_path`).
pub const AUDIT_TARGET: &str = "payproxy::audit";

/// Whether spans are exported (set once by [`init`]): without an exporter, requests skip the
/// OpenTelemetry context work altogether.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether each request gets a `request` span (set once by [`init`]): when spans are exported
/// or the log shows spans. Otherwise a request's trace id rides on its task alone
/// ([`RequestTrace`]): a span is entered and left at every poll of the request, through
/// every layer, and that was about a tenth of a payment's CPU and of a forwarded request's.
static REQUEST_SPANS: AtomicBool = AtomicBool::new(false);

fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Compiler and runtime crates whose debug output (megabytes per plugin compiled) is not
/// payproxy's: kept at `warn` unless `PAYPROXY_LOG` names them itself.
const QUIET: &[&str] = &[
    "cranelift",
    "wasmtime",
    "regalloc2",
    "wasmparser",
    "wit_parser",
];

/// `PAYPROXY_LOG` (default `info`) with [`QUIET`] crates at `warn` unless it names them.
pub fn log_filter(spec: Option<&str>) -> EnvFilter {
    let spec = spec.filter(|s| !s.trim().is_empty()).unwrap_or("info");
    let mut directives = vec![spec.to_string()];
    for krate in QUIET {
        if !spec.contains(krate) {
            directives.push(format!("{krate}=warn"));
        }
    }
    // Audit lines in the main log (no `log.audit_path`) are kept at any level unless named.
    if !spec.contains("payproxy::audit") {
        directives.push("payproxy::audit=info".into());
    }
    EnvFilter::try_new(directives.join(",")).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// The running exporter; [`Telemetry::shutdown`] sends what is still queued.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// How long the last export may take at shutdown.
    flush: Duration,
}

impl Telemetry {
    /// Flush and stop the exporter (blocks up to its export timeout).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown_with_timeout(self.flush) {
                tracing::warn!(error = %e, "trace exporter did not shut down cleanly");
            }
        }
    }
}

/// Install the global subscriber: logs to stderr in `format` filtered by `PAYPROXY_LOG`,
/// and, with `otlp`, payproxy's spans exported over OTLP (needs a Tokio runtime: exports run
/// on it). Call once, before anything logs.
pub fn init(format: LogFormat, otlp: Option<&OtlpConfig>) -> Result<Telemetry, String> {
    let filter = log_filter(std::env::var("PAYPROXY_LOG").ok().as_deref());
    // A log at `debug` or finer shows spans: then the request span is built for it too.
    let log_shows_spans = filter
        .max_level_hint()
        .is_none_or(|level| level >= tracing::level_filters::LevelFilter::DEBUG);
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            // Colours only on a terminal: a log file or journal gets plain `key=value` text.
            .with_ansi(std::io::stderr().is_terminal())
            .event_format(TextLines)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .event_format(JsonLines)
            .with_filter(filter)
            .boxed(),
    };
    let (provider, spans) = match otlp {
        Some(config) => {
            let provider = tracer_provider(config)?;
            let tracer = provider.tracer("payproxy");
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(filter_fn(|meta| meta.target() == TRACE_TARGET))
                .boxed();
            (Some(provider), Some(layer))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .map_err(|e| format!("cannot install the log subscriber: {e}"))?;
    EXPORTING.store(provider.is_some(), Ordering::Relaxed);
    REQUEST_SPANS.store(provider.is_some() || log_shows_spans, Ordering::Relaxed);
    let flush = Duration::from_millis(otlp.map_or(0, |c| c.timeout_ms) + 1_000);
    Ok(Telemetry { provider, flush })
}

fn tracer_provider(config: &OtlpConfig) -> Result<SdkTracerProvider, String> {
    let mut headers = HashMap::new();
    for (name, value) in &config.headers {
        let value = value
            .resolve()
            .map_err(|e| format!("telemetry.otlp.headers.{name}: {e}"))?;
        headers.insert(name.clone(), value);
    }
    let client = OtlpClient::new(Duration::from_millis(config.timeout_ms))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(config.endpoint.clone())
        .with_headers(headers)
        .with_timeout(Duration::from_millis(config.timeout_ms))
        .build()
        .map_err(|e| format!("telemetry.otlp: {e}"))?;
    let batch = BatchConfigBuilder::default()
        .with_scheduled_delay(Duration::from_millis(config.export_interval_ms))
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch)
        .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(config.service_name.clone())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sampling_ratio,
        ))))
        .with_resource(resource)
        .build())
}

/// The exporter's HTTP client: payproxy's hyper + rustls stack. The SDK exports from a
/// thread of its own; each request runs on the Tokio runtime that was current at start.
#[derive(Debug, Clone)]
struct OtlpClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

/// Largest collector answer read (the answer is a small status message).
const MAX_COLLECTOR_ANSWER: usize = 64 * 1024;

impl OtlpClient {
    fn new(timeout: Duration) -> Result<OtlpClient, String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "trace export needs a Tokio runtime".to_string())?;
        let tls = crate::tls::client_config(None)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(OtlpClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
            runtime,
            timeout,
        })
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        let timeout = self.timeout;
        let exchange = async move {
            let response = client.request(request.map(Full::new)).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_COLLECTOR_ANSWER)
                .collect()
                .await?
                .to_bytes();
            Ok::<_, opentelemetry_http::HttpError>(http::Response::from_parts(parts, body))
        };
        // The timer is made on the runtime too: this thread has no reactor.
        match self
            .runtime
            .spawn(async move { tokio::time::timeout(timeout, exchange).await })
            .await
        {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("collector did not answer in time".into()),
            Err(e) => Err(format!("export task failed: {e}").into()),
        }
    }
}

/// W3C trace context headers.
const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// The storefront request the running code serves: its W3C trace id (the storefront's
/// `traceparent`'s, else a fresh one) and, when spans are built, its `request` span.
///
/// It rides on the request's task (a Tokio task-local, set at every poll: two thread-local
/// swaps), so log lines and audit lines find the trace id without a span; the span is
/// built only when something reads spans (the exporter, or a log at `debug` or finer).
#[derive(Clone)]
pub struct RequestTrace {
    trace_id: TraceHex,
    span: tracing::Span,
}

tokio::task_local! {
    static CURRENT: RequestTrace;
}

impl RequestTrace {
    /// The trace of a new storefront request with these headers. The `request` span, when
    /// built, is a child of the storefront's `traceparent` when it sent a valid one.
    pub fn start(headers: &HeaderMap) -> RequestTrace {
        if !REQUEST_SPANS.load(Ordering::Relaxed) {
            let trace_id = incoming_trace_id(headers).unwrap_or_else(TraceHex::fresh);
            return RequestTrace {
                trace_id,
                span: tracing::Span::none(),
            };
        }
        // Not exported: the storefront's trace id, or a fresh one, given to the span as it is
        // made. Exported: the span's own context decides it, once the storefront's parent is
        // set (below).
        let local =
            (!exporting()).then(|| incoming_trace_id(headers).unwrap_or_else(TraceHex::fresh));
        let span = tracing::info_span!(
            target: TRACE_TARGET,
            "request",
            otel.name = "payproxy.request",
            otel.kind = "server",
            trace_id = local.as_ref().map(TraceHex::as_str),
            route = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
        );
        if let Some(trace_id) = local {
            return RequestTrace { trace_id, span };
        }
        let parent =
            TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers));
        let _ = span.set_parent(parent);
        let exported = span.context().span().span_context().trace_id();
        let trace_id = TraceHex::of(exported.to_bytes())
            .or_else(|| incoming_trace_id(headers))
            .unwrap_or_else(TraceHex::fresh);
        span.record("trace_id", trace_id.as_str());
        RequestTrace { trace_id, span }
    }

    /// The trace of the request the calling code serves, if it serves one.
    pub fn current() -> Option<RequestTrace> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// `work` run for this request: inside it, log lines, audit lines and spans belong to it.
    pub fn run<F: Future>(self, work: F) -> impl Future<Output = F::Output> {
        let span = self.span.clone();
        CURRENT.scope(self, work.instrument(span))
    }

    /// `work` run now, for this request.
    pub fn in_scope<R>(&self, work: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(self.clone(), || self.span.in_scope(work))
    }

    /// The `request` span (disabled when spans are not built).
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }
}

/// `work`, run for the request the calling code serves (if any), wherever it is polled: for
/// a task spawned on the request's behalf.
pub fn carry<F: Future>(work: F) -> impl Future<Output = F::Output> {
    let trace = RequestTrace::current();
    async move {
        match trace {
            Some(trace) => trace.run(work).await,
            None => work.await,
        }
    }
}

/// The trace id of the request the running code serves, if any.
pub fn current_trace_id() -> Option<String> {
    CURRENT.try_with(|t| t.trace_id.as_str().to_owned()).ok()
}

/// A W3C trace id as its 32 lowercase hex digits, never all zeros.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct TraceHex([u8; 32]);

impl TraceHex {
    /// A random one.
    fn fresh() -> TraceHex {
        let id = rand::random::<u128>().max(1).to_be_bytes();
        TraceHex::of(id).unwrap_or(TraceHex([b'1'; 32]))
    }

    /// The 16 bytes of a trace id in hex, unless they are all zero (the invalid trace id).
    fn of(id: [u8; 16]) -> Option<TraceHex> {
        let mut hex = [0u8; 32];
        (id != [0; 16] && hex::encode_to_slice(id, &mut hex).is_ok()).then_some(TraceHex(hex))
    }

    fn as_str(&self) -> &str {
        // Only ever ASCII hex digits.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// The trace id of a valid `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`, not all zeros).
fn incoming_trace_id(headers: &HeaderMap) -> Option<TraceHex> {
    let value = headers.get(TRACEPARENT)?.to_str().ok()?;
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    // Version 00 has exactly four fields; a later version may add fields after them.
    let rest_ok = match parts.next() {
        None => true,
        Some(_) => version != "00",
    };
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(span, 16)
        && span.bytes().any(|b| b != b'0')
        && hex(flags, 2)
        && rest_ok;
    // 32 lowercase hex digits, not all zeros: the id as it is.
    let id: [u8; 32] = trace.as_bytes().try_into().ok()?;
    valid.then_some(TraceHex(id))
}

/// Set the trace context headers of a provider request: `span`'s when spans are exported,
/// else the storefront's own (`incoming`), else none.
pub fn propagate(span: &tracing::Span, outgoing: &mut HeaderMap, incoming: &HeaderMap) {
    outgoing.remove(TRACEPARENT);
    outgoing.remove(TRACESTATE);
    if exporting() {
        let context = span.context();
        if context.span().span_context().is_valid() {
            TraceContextPropagator::new()
                .inject_context(&context, &mut opentelemetry_http::HeaderInjector(outgoing));
            return;
        }
    }
    // Not exported: the storefront's context passes through, when it is a valid one (one
    // traceparent, and its tracestate only with it).
    if incoming.get_all(TRACEPARENT).iter().count() != 1 || incoming_trace_id(incoming).is_none() {
        return;
    }
    if let Some(value) = incoming.get(TRACEPARENT) {
        outgoing.insert(HeaderName::from_static(TRACEPARENT), value.clone());
    }
    for value in incoming.get_all(TRACESTATE) {
        outgoing.append(HeaderName::from_static(TRACESTATE), value.clone());
    }
}

/// The storefront's trace context headers alone (`traceparent`, `tracestate`): what
/// [`propagate`] reads of the storefront's head, kept for it when the head itself is taken
/// for the provider request. Empty, and allocating nothing, when the storefront sent none.
pub fn context_headers(storefront: &HeaderMap) -> HeaderMap {
    let mut context = HeaderMap::new();
    for name in [TRACEPARENT, TRACESTATE] {
        for value in storefront.get_all(name) {
            context.append(HeaderName::from_static(name), value.clone());
        }
    }
    context
}

/// The span of one provider attempt (`kind`: `forward`, `send`, `resend`, `status`).
pub fn attempt_span(provider: &str, kind: &'static str) -> tracing::Span {
    tracing::debug_span!(
        target: TRACE_TARGET,
        "attempt",
        otel.name = %format_args!("provider {provider}"),
        otel.kind = "client",
        provider = %provider,
        kind,
        class = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    )
}

/// tracing-subscriber's own text line, with ` trace_id=<id>` at its end when the event is
/// logged for a storefront request and the line does not already show the `request` span
/// (which carries the id). An audit line is left as it is: its JSON has the id, and a
/// reader takes everything after its target as that JSON.
struct TextLines;

impl<S, N> FormatEvent<S, N> for TextLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let format = Format::default().with_ansi(writer.has_ansi_escapes());
        let shown = |span: &tracing_subscriber::registry::SpanRef<'_, S>| {
            span.name() == "request" && span.metadata().target() == TRACE_TARGET
        };
        let trace_id = current_trace_id().filter(|_| {
            event.metadata().target() != AUDIT_TARGET
                && !ctx
                    .event_scope()
                    .is_some_and(|mut scope| scope.any(|s| shown(&s)))
        });
        let Some(trace_id) = trace_id else {
            return format.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        format.format_event(ctx, Writer::new(&mut line), event)?;
        let line = line.strip_suffix('\n').unwrap_or(&line);
        writeln!(writer, "{line} trace_id={trace_id}")
    }
}

/// One JSON object per line: `ts`, `level`, `target`, `message`, the event's fields, the
/// innermost span's name (when there is one) and the request's `trace_id`.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut ts = String::new();
        SystemTime.format_time(&mut Writer::new(&mut ts))?;
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("ts".into(), Value::String(ts));
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("target".into(), Value::String(meta.target().to_string()));
        let mut fields = JsonFields(Map::new());
        event.record(&mut fields);
        if let Some(message) = fields.0.remove("message") {
            line.insert("message".into(), message);
        }
        // From the request's task, not from a span: there may be none.
        if let Some(trace_id) = current_trace_id() {
            line.insert("trace_id".into(), Value::String(trace_id));
        }
        if let Some(span) = ctx.lookup_current() {
            line.insert("span".into(), Value::String(span.name().into()));
        }
        for (key, value) in fields.0 {
            line.entry(key).or_insert(value);
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// An event's fields as JSON values.
struct JsonFields(Map<String, Value>);

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.into()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::Bool(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().into(), Value::String(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(traceparent: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_str(traceparent).unwrap());
        h
    }

    #[test]
    fn compiler_internals_stay_at_warn_unless_named() {
        let debug = log_filter(Some("debug")).to_string();
        for krate in QUIET {
            assert!(debug.contains(&format!("{krate}=warn")), "{debug}");
        }
        let named = log_filter(Some("debug,cranelift=trace")).to_string();
        assert!(!named.contains("cranelift=warn"), "{named}");
        assert!(named.contains("wasmtime=warn"), "{named}");
        assert!(log_filter(Some("warn"))
            .to_string()
            .contains("payproxy::audit=info"));
        let default = log_filter(None).to_string();
        assert!(default.split(',').any(|d| d == "info"), "{default}");
    }

    #[test]
    fn fresh_trace_ids_are_valid_w3c_trace_ids() {
        let ids: std::collections::HashSet<String> = (0..64)
            .map(|_| TraceHex::fresh().as_str().to_owned())
            .collect();
        assert_eq!(ids.len(), 64, "fresh ids repeat");
        for id in &ids {
            // The shape a traceparent carries, so the id a log line shows could be one.
            let traceparent = format!("00-{id}-00f067aa0ba902b7-01");
            assert_eq!(
                incoming_trace_id(&headers(&traceparent))
                    .as_ref()
                    .map(TraceHex::as_str),
                Some(id.as_str())
            );
        }
    }

    #[test]
    fn only_valid_traceparents_give_a_trace_id() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            incoming_trace_id(&headers(good))
                .as_ref()
                .map(TraceHex::as_str),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            assert_eq!(incoming_trace_id(&headers(bad)), None, "{bad}");
        }
    }

    #[test]
    fn without_export_the_storefronts_context_goes_out_unchanged() {
        let incoming = headers("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let mut outgoing = HeaderMap::new();
        outgoing.insert(TRACEPARENT, HeaderValue::from_static("stale"));
        propagate(&tracing::Span::none(), &mut outgoing, &incoming);
        assert_eq!(outgoing.get(TRACEPARENT), incoming.get(TRACEPARENT));
        let mut none = HeaderMap::new();
        none.insert(TRACEPARENT, HeaderValue::from_static("stale"));
        propagate(&tracing::Span::none(), &mut none, &HeaderMap::new());
        assert!(none.get(TRACEPARENT).is_none());
        // An invalid or repeated traceparent, or a tracestate alone, is not passed on.
        let mut twice = incoming.clone();
        twice.append(
            TRACEPARENT,
            HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
        let mut bad = headers("00-xyz");
        bad.insert(TRACESTATE, HeaderValue::from_static("vendor=x"));
        for incoming in [twice, bad] {
            let mut outgoing = HeaderMap::new();
            propagate(&tracing::Span::none(), &mut outgoing, &incoming);
            assert!(outgoing.is_empty(), "{incoming:?} gave {outgoing:?}");
        }
    }

    #[test]
    fn the_context_headers_alone_propagate_as_the_whole_head_does() {
        let traced = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut with_state = headers(traced);
        with_state.append(TRACESTATE, HeaderValue::from_static("vendor=a"));
        with_state.append(TRACESTATE, HeaderValue::from_static("other=b"));
        let mut twice = headers(traced);
        twice.append(
            TRACEPARENT,
            HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
        let mut state_alone = HeaderMap::new();
        state_alone.insert(TRACESTATE, HeaderValue::from_static("vendor=x"));
        let mut bad = headers("00-xyz");
        bad.insert(TRACESTATE, HeaderValue::from_static("vendor=x"));
        for mut storefront in [
            headers(traced),
            with_state,
            twice,
            state_alone,
            bad,
            HeaderMap::new(),
        ] {
            storefront.insert("x-other", HeaderValue::from_static("not trace context"));
            let context = context_headers(&storefront);
            assert!(context.get("x-other").is_none());
            let mut outgoing = HeaderMap::new();
            outgoing.insert(TRACEPARENT, HeaderValue::from_static("stale"));
            let mut from_context = outgoing.clone();
            propagate(&tracing::Span::none(), &mut outgoing, &storefront);
            propagate(&tracing::Span::none(), &mut from_context, &context);
            // Each name's values in their order: a tracestate's order matters.
            for name in [TRACEPARENT, TRACESTATE] {
                let values =
                    |map: &HeaderMap| map.get_all(name).iter().cloned().collect::<Vec<_>>();
                assert_eq!(
                    values(&from_context),
                    values(&outgoing),
                    "{name} from {storefront:?}"
                );
            }
            assert_eq!(from_context.len(), outgoing.len(), "from {storefront:?}");
        }
    }

    const TRACED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_trace_id_reaches_code_the_request_runs_and_tasks_spawned_for_it() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let trace = RequestTrace::start(&headers(TRACED));
        let (inside, spawned) = runtime.block_on(trace.run(async {
            let spawned = tokio::spawn(carry(async { current_trace_id() }));
            (current_trace_id(), spawned.await.unwrap())
        }));
        let id = Some("4bf92f3577b34da6a3ce929d0e0e4736".to_string());
        assert_eq!(inside, id);
        assert_eq!(spawned, id);
        // A task spawned without it, and code outside any request, serve no request.
        let bare = runtime.block_on(
            RequestTrace::start(&headers(TRACED))
                .run(async { tokio::spawn(async { current_trace_id() }).await.unwrap() }),
        );
        assert_eq!(bare, None);
        assert_eq!(current_trace_id(), None);
        // Without a traceparent, a fresh valid id, the same everywhere in the request.
        let fresh = RequestTrace::start(&HeaderMap::new());
        let seen = fresh.in_scope(current_trace_id).unwrap();
        assert_eq!(seen.len(), 32);
        assert!(seen
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(fresh.in_scope(current_trace_id), Some(seen));
    }

    #[test]
    fn a_text_line_logged_for_a_request_ends_with_its_trace_id() {
        #[derive(Clone, Default)]
        struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let sink = lines.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || sink.clone())
                .with_ansi(false)
                .event_format(TextLines),
        );
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        tracing::subscriber::with_default(subscriber, || {
            let trace = RequestTrace::start(&headers(TRACED));
            trace.in_scope(|| tracing::warn!(provider = "acquirer", "provider not reached"));
            tracing::warn!("outside any request");
            // An audit line's JSON already has the id.
            trace.in_scope(|| tracing::info!(target: AUDIT_TARGET, "{{\"trace_id\":\"{id}\"}}"));
            // A request whose span is built (spans exported, or a debug log) shows the span,
            // and its id once.
            let span = tracing::info_span!(target: TRACE_TARGET, "request", trace_id = id);
            let shown = RequestTrace {
                trace_id: incoming_trace_id(&headers(TRACED)).unwrap(),
                span,
            };
            shown.in_scope(|| tracing::warn!("inside a shown span"));
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let text: Vec<&str> = text.lines().collect();
        assert_eq!(text.len(), 4, "{text:?}");
        assert!(
            text[2].ends_with(&format!("payproxy::audit: {{\"trace_id\":\"{id}\"}}")),
            "{}",
            text[2]
        );
        assert!(
            text[3].contains(&format!("request{{trace_id=\"{id}\"}}"))
                || text[3].contains(&format!("request{{trace_id={id}}}")),
            "{}",
            text[3]
        );
        assert_eq!(text[3].matches(id).count(), 1, "{}", text[3]);
        assert!(
            text[0].ends_with(
                "provider not reached provider=\"acquirer\" trace_id=4bf92f3577b34da6a3ce929d0e0e4736"
            ),
            "{}",
            text[0]
        );
        assert!(text[0].contains(" WARN "), "{}", text[0]);
        assert!(text[1].ends_with("outside any request"), "{}", text[1]);
    }
}
