//! The sandbox every plugin call goes through, whatever its role: warm instances (reused
//! or fresh per call), the CPU budget and memory cap armed per call, failures classified
//! (trap, deadline, memory) and counted, call latency observed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, InstancePre};
use wasmtime::{Store, Trap};

use super::{root_cause, CallState, PluginHost};
use crate::config::InstanceMode;
use crate::error::{PluginFailure, PluginFailureKind};
use crate::metrics::Metrics;

/// Settings a plugin runs with.
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    /// Reuse or fresh instances.
    pub mode: InstanceMode,
    /// Calls before a reused instance is replaced.
    pub recycle_after: u32,
    /// CPU budget per call, in milliseconds.
    pub deadline_ms: u64,
    /// Memory cap per instance.
    pub memory_bytes: usize,
    /// The plugin's role (`router`, `compliance`, `dialect`) and the sha256 of its
    /// component, for the spans of its calls.
    pub identity: (&'static str, String),
}

/// A role's typed view of an instance: how to create it and run its `init`.
pub trait Binding: Sized + Send + 'static {
    /// What is prepared once per load (export indices, pre-instantiation).
    type Pre: Send + Sync + 'static;

    /// Type-check the component for this role.
    fn prepare(instance_pre: InstancePre<CallState>) -> wasmtime::Result<Self::Pre>;

    /// A new instance.
    fn instantiate(pre: &Self::Pre, store: &mut Store<CallState>) -> wasmtime::Result<Self>;

    /// Run the plugin's `init` with its JSON config.
    fn init(
        &self,
        store: &mut Store<CallState>,
        config: &str,
    ) -> wasmtime::Result<Result<(), String>>;
}

struct Warm<B> {
    store: Store<CallState>,
    binding: B,
    calls: u32,
}

/// One loaded plugin of role `B` and its instances.
pub struct Sandbox<B: Binding> {
    name: String,
    pre: B::Pre,
    config_json: String,
    settings: SandboxSettings,
    warm: Mutex<Vec<Warm<B>>>,
    created: AtomicU64,
    metrics: Arc<Metrics>,
    // Latency histograms by function, resolved once instead of per call.
    latency: RwLock<Vec<(&'static str, prometheus::Histogram)>>,
    host: Arc<PluginHost>,
}

impl<B: Binding> Sandbox<B> {
    /// Check the component's imports and exports for role `B`, then validate the config by
    /// creating a first instance and running `init`.
    pub fn load(
        host: &Arc<PluginHost>,
        name: &str,
        component: &Component,
        config_json: String,
        settings: SandboxSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Sandbox<B>, String> {
        Self::load_with(
            host,
            name,
            component,
            config_json,
            settings,
            metrics,
            |_| {},
        )
    }

    /// [`Sandbox::load`], with `configure` adding role data to the prepared component before
    /// the first instance is made.
    pub fn load_with(
        host: &Arc<PluginHost>,
        name: &str,
        component: &Component,
        config_json: String,
        settings: SandboxSettings,
        metrics: Arc<Metrics>,
        configure: impl FnOnce(&mut B::Pre),
    ) -> Result<Sandbox<B>, String> {
        let refused = |detail: String| {
            format!(
                "imports something payproxy does not grant (plugins get no filesystem, network or \
                 environment): {detail}"
            )
        };
        if let Some(import) = super::standin::ungranted_import(component, host.engine()) {
            return Err(refused(format!("`{import}`")));
        }
        // Interfaces a language runtime imports whatever the plugin does are linked as traps,
        // on a copy of the host's linker for this component (see `standin::with_traps`).
        let trapping = super::standin::with_traps(host.linker(), component, host.engine())
            .map_err(|e| refused(root_cause(&e)))?;
        let instance_pre = trapping
            .as_ref()
            .unwrap_or(host.linker())
            .instantiate_pre(component)
            .map_err(|e| refused(root_cause(&e)))?;
        let mut pre = B::prepare(instance_pre)
            .map_err(|e| format!("does not match its role's world: {}", root_cause(&e)))?;
        configure(&mut pre);
        let sandbox = Sandbox {
            name: name.to_string(),
            pre,
            config_json,
            settings,
            warm: Mutex::new(Vec::new()),
            created: AtomicU64::new(0),
            metrics,
            latency: RwLock::new(Vec::new()),
            host: host.clone(),
        };
        let warm = sandbox.instantiate().map_err(|f| f.detail)?;
        if sandbox.settings.mode == InstanceMode::Reuse {
            sandbox.put_back(warm);
        }
        Ok(sandbox)
    }

    /// Run `f` against an instance under the sandbox limits. Failures are classified,
    /// counted and logged by the caller; the instance is dropped after any failure.
    pub fn call<R>(
        &self,
        function: &'static str,
        f: impl FnOnce(&B, &mut Store<CallState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginFailure> {
        // Calls outside a request (a reload's checks) are no trace of their own. Whether
        // the span is wanted at all is asked first: it is the cheaper question, and with
        // span export and debug logs off (the usual case) the only one asked.
        let wanted = tracing::span_enabled!(target: crate::telemetry::TRACE_TARGET, tracing::Level::DEBUG)
            && !tracing::Span::current().is_none();
        let span = if !wanted {
            tracing::Span::none()
        } else {
            tracing::debug_span!(
                target: crate::telemetry::TRACE_TARGET,
                "plugin",
                otel.name = %format_args!("plugin {}", self.name),
                plugin.name = %self.name,
                plugin.role = self.settings.identity.0,
                plugin.sha256 = %self.settings.identity.1,
                plugin.function = function,
                outcome = tracing::field::Empty,
                sandbox_us = tracing::field::Empty,
            )
        }
        .entered();
        let started = Instant::now();
        let result = self.call_inner(f);
        let elapsed = started.elapsed();
        self.histogram(function).observe(elapsed.as_secs_f64());
        if let Err(failure) = &result {
            self.count(failure.kind);
        }
        if !span.is_disabled() {
            let outcome = match &result {
                Ok(_) => "ok",
                Err(failure) => failure.kind.as_str(),
            };
            span.record("outcome", outcome);
            span.record("sandbox_us", elapsed.as_micros() as u64);
        }
        result
    }

    fn call_inner<R>(
        &self,
        f: impl FnOnce(&B, &mut Store<CallState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginFailure> {
        let mut warm = match self.take() {
            Some(warm) => warm,
            None => self.instantiate()?,
        };
        arm(&mut warm.store, self.settings.deadline_ms);
        let output = {
            let _running = self.host.running();
            f(&warm.binding, &mut warm.store)
        };
        let output = output.map_err(|e| self.classify(&e, &warm.store))?;
        warm.calls += 1;
        if self.settings.mode == InstanceMode::Reuse && warm.calls < self.settings.recycle_after {
            self.put_back(warm);
        }
        Ok(output)
    }

    fn histogram(&self, function: &'static str) -> prometheus::Histogram {
        let cached = |cache: &[(&'static str, prometheus::Histogram)]| {
            cache
                .iter()
                .find(|(f, _)| *f == function)
                .map(|(_, h)| h.clone())
        };
        // Concurrent calls share the read lock; the write lock only adds a missing function.
        if let Some(h) = cached(&self.latency.read().unwrap_or_else(|p| p.into_inner())) {
            return h;
        }
        let mut cache = self.latency.write().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = cached(&cache) {
            return h;
        }
        let h = self
            .metrics
            .plugin_call_seconds
            .with_label_values(&[self.name.as_str(), function]);
        cache.push((function, h.clone()));
        h
    }

    /// A bad-output failure, counted.
    pub fn bad_output(&self, detail: String) -> PluginFailure {
        self.count(PluginFailureKind::BadOutput);
        self.failure(PluginFailureKind::BadOutput, detail)
    }

    fn count(&self, kind: PluginFailureKind) {
        self.metrics
            .plugin_failures
            .with_label_values(&[self.name.as_str(), kind.as_str()])
            .inc();
    }

    fn instantiate(&self) -> Result<Warm<B>, PluginFailure> {
        self.created.fetch_add(1, Ordering::Relaxed);
        let mut store = Store::new(
            self.host.engine(),
            CallState::new(self.settings.memory_bytes),
        );
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_callback(super::store::on_deadline);
        arm(&mut store, self.settings.deadline_ms);
        // Instantiation runs the component's start functions, then `init`: guest code.
        let _running = self.host.running();
        let binding = B::instantiate(&self.pre, &mut store).map_err(|e| {
            self.failure(
                PluginFailureKind::Instantiate,
                format!("instantiate: {}", root_cause(&e)),
            )
        })?;
        match binding.init(&mut store, &self.config_json) {
            Ok(Ok(())) => Ok(Warm {
                store,
                binding,
                calls: 0,
            }),
            Ok(Err(message)) => Err(self.failure(
                PluginFailureKind::Instantiate,
                format!(
                    "config rejected by the plugin: {}",
                    truncate(&message, 1024)
                ),
            )),
            Err(e) => {
                let mut failure = self.classify(&e, &store);
                failure.detail = format!("init: {}", failure.detail);
                Err(failure)
            }
        }
    }

    fn take(&self) -> Option<Warm<B>> {
        self.warm.lock().ok()?.pop()
    }

    fn put_back(&self, warm: Warm<B>) {
        if let Ok(mut pool) = self.warm.lock() {
            pool.push(warm);
        }
    }

    fn classify(&self, e: &wasmtime::Error, store: &Store<CallState>) -> PluginFailure {
        if store.data().limiter.hit {
            return self.failure(PluginFailureKind::Memory, "memory cap reached".into());
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => self.failure(
                PluginFailureKind::Deadline,
                format!("exceeded its {} ms CPU deadline", self.settings.deadline_ms),
            ),
            Some(trap) => self.failure(PluginFailureKind::Trap, format!("trap: {trap}")),
            None => self.failure(PluginFailureKind::Trap, root_cause(e)),
        }
    }

    fn failure(&self, kind: PluginFailureKind, detail: String) -> PluginFailure {
        PluginFailure {
            plugin: self.name.clone(),
            kind,
            detail,
        }
    }

    /// What the component was prepared with.
    pub fn pre(&self) -> &B::Pre {
        &self.pre
    }

    /// Plugin name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Instances created so far (load, recycling, fresh mode, replacement after failures).
    pub fn instances_created(&self) -> u64 {
        self.created.load(Ordering::Relaxed)
    }
}

/// Set the CPU budget for the next call and clear the memory flag. The epoch check first
/// fires after one tick, then every tick, until the budget is spent.
fn arm(store: &mut Store<CallState>, deadline_ms: u64) {
    store.set_epoch_deadline(1);
    let state = store.data_mut();
    state.budget.arm(Duration::from_millis(deadline_ms));
    state.limiter.hit = false;
}

/// At most `max` bytes of `text`, cut on a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
