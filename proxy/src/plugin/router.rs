//! The router role: a loaded router plugin, its warm instances and the sandboxed call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::Component;
use wasmtime::{Store, Trap};

use super::bindings::router::{RouterPlugin as Bindings, RouterPluginPre};
use super::bindings::ROUTER_EXPORT;
use super::{root_cause, CallState, PluginHost, WitHttpRequest, WitProvider};
use crate::config::InstanceMode;
use crate::error::{PluginFailure, PluginFailureKind};
use crate::metrics::Metrics;

/// Most providers a router may name in one answer.
const MAX_NAMES: usize = 64;
/// Longest rejection code and message a router may return.
const MAX_CODE: usize = 64;
const MAX_MESSAGE: usize = 1024;

/// What a router decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteDecision {
    /// Try these providers, in order (all known to the route, no duplicates).
    Providers(Vec<String>),
    /// Answer the storefront with this status, code and message.
    Reject {
        /// 400..=599.
        status: u16,
        /// Machine-readable code.
        code: String,
        /// Storefront-safe message.
        message: String,
    },
}

/// Settings a router plugin runs with.
#[derive(Debug, Clone)]
pub struct RouterSettings {
    /// Reuse or fresh instances.
    pub mode: InstanceMode,
    /// Calls before a reused instance is replaced.
    pub recycle_after: u32,
    /// CPU deadline per call.
    pub deadline_ms: u64,
    /// Memory cap per instance.
    pub memory_bytes: usize,
}

struct Warm {
    store: Store<CallState>,
    bindings: Bindings,
    calls: u32,
}

/// A loaded, validated router plugin.
pub struct RouterPlugin {
    name: String,
    pre: RouterPluginPre<CallState>,
    config_json: String,
    settings: RouterSettings,
    warm: Mutex<Vec<Warm>>,
    created: AtomicU64,
    metrics: Arc<Metrics>,
    host: Arc<PluginHost>,
}

impl RouterPlugin {
    /// Bind a compiled component to the router role and validate it by instantiating it
    /// and calling `init` with its config. Errors are one line, naming what is wrong.
    pub fn load(
        host: &Arc<PluginHost>,
        name: &str,
        component: &Component,
        config_json: String,
        settings: RouterSettings,
        metrics: Arc<Metrics>,
    ) -> Result<RouterPlugin, String> {
        let exports = host.export_names(component);
        if !exports.iter().any(|e| e == ROUTER_EXPORT) {
            return Err(format!(
                "does not implement the router role: expected export {ROUTER_EXPORT} (world router-plugin), \
                 found [{}]",
                exports.join(", ")
            ));
        }
        let instance_pre = host.linker().instantiate_pre(component).map_err(|e| {
            format!(
                "imports something payproxy does not grant (plugins get no filesystem, network or \
                 environment): {}",
                root_cause(&e)
            )
        })?;
        let pre = RouterPluginPre::new(instance_pre)
            .map_err(|e| format!("does not match world router-plugin: {}", root_cause(&e)))?;
        let plugin = RouterPlugin {
            name: name.to_string(),
            pre,
            config_json,
            settings,
            warm: Mutex::new(Vec::new()),
            created: AtomicU64::new(0),
            metrics,
            host: host.clone(),
        };
        // Validate now, off the request path: a config the plugin rejects fails the reload.
        let warm = plugin.instantiate().map_err(|f| f.detail)?;
        if plugin.settings.mode == InstanceMode::Reuse {
            plugin.put_back(warm);
        }
        Ok(plugin)
    }

    /// Ask the router for the provider order. Sandbox failures come back as
    /// [`PluginFailure`] (and are counted); the caller applies the plugin's `on_error`.
    pub fn route(
        &self,
        request: &WitHttpRequest,
        providers: &[WitProvider],
        seed: u64,
    ) -> Result<RouteDecision, PluginFailure> {
        let started = Instant::now();
        let result = self.call_route(request, providers, seed);
        self.metrics
            .plugin_call_seconds
            .with_label_values(&[self.name.as_str(), "route"])
            .observe(started.elapsed().as_secs_f64());
        if let Err(failure) = &result {
            self.metrics
                .plugin_failures
                .with_label_values(&[self.name.as_str(), failure.kind.as_str()])
                .inc();
        }
        result
    }

    fn call_route(
        &self,
        request: &WitHttpRequest,
        providers: &[WitProvider],
        seed: u64,
    ) -> Result<RouteDecision, PluginFailure> {
        let mut warm = match self.take() {
            Some(warm) => warm,
            None => self.instantiate()?,
        };
        self.arm(&mut warm.store);
        let result = warm.bindings.payproxy_plugin_router().call_route(
            &mut warm.store,
            request,
            providers,
            seed,
        );
        let output = match result {
            Ok(output) => output,
            // The instance is dropped: after a trap its state cannot be trusted.
            Err(e) => return Err(self.classify(&e, &warm.store)),
        };
        warm.calls += 1;
        if self.settings.mode == InstanceMode::Reuse && warm.calls < self.settings.recycle_after {
            self.put_back(warm);
        }
        self.check_output(output, providers)
    }

    /// A new instance with `init(config)` done.
    fn instantiate(&self) -> Result<Warm, PluginFailure> {
        self.created.fetch_add(1, Ordering::Relaxed);
        let mut store = Store::new(
            self.host.engine(),
            CallState::new(self.settings.memory_bytes),
        );
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_callback(super::store::on_deadline);
        self.arm(&mut store);
        let bindings = self.pre.instantiate(&mut store).map_err(|e| {
            self.failure(
                PluginFailureKind::Instantiate,
                format!("instantiate: {}", root_cause(&e)),
            )
        })?;
        match bindings
            .payproxy_plugin_router()
            .call_init(&mut store, &self.config_json)
        {
            Ok(Ok(())) => Ok(Warm {
                store,
                bindings,
                calls: 0,
            }),
            Ok(Err(message)) => Err(self.failure(
                PluginFailureKind::Instantiate,
                format!(
                    "config rejected by the plugin: {}",
                    truncate(&message, MAX_MESSAGE)
                ),
            )),
            Err(e) => {
                let mut failure = self.classify(&e, &store);
                failure.detail = format!("init: {}", failure.detail);
                Err(failure)
            }
        }
    }

    /// Set the CPU budget for the next call and clear the memory flag. The epoch check
    /// first fires after one tick, then every tick, until the budget is spent.
    fn arm(&self, store: &mut Store<CallState>) {
        store.set_epoch_deadline(1);
        let state = store.data_mut();
        state
            .budget
            .arm(Duration::from_millis(self.settings.deadline_ms));
        state.limiter.hit = false;
    }

    fn take(&self) -> Option<Warm> {
        self.warm.lock().ok()?.pop()
    }

    fn put_back(&self, warm: Warm) {
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

    fn check_output(
        &self,
        output: Result<Vec<String>, super::WitRejection>,
        providers: &[WitProvider],
    ) -> Result<RouteDecision, PluginFailure> {
        match output {
            Ok(names) => {
                if names.is_empty() || names.len() > MAX_NAMES {
                    return Err(self.bad_output(format!("returned {} provider names", names.len())));
                }
                let mut order: Vec<String> = Vec::with_capacity(names.len());
                for name in names {
                    if !providers.iter().any(|p| p.name == name) {
                        return Err(self.bad_output(format!(
                            "named provider {:?}, which this route does not have",
                            truncate(&name, 64)
                        )));
                    }
                    if !order.contains(&name) {
                        order.push(name);
                    }
                }
                Ok(RouteDecision::Providers(order))
            }
            Err(r) => {
                let code_ok = !r.code.is_empty()
                    && r.code.len() <= MAX_CODE
                    && r.code
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !(400..=599).contains(&r.status) || !code_ok || r.message.len() > MAX_MESSAGE {
                    return Err(self.bad_output(format!(
                        "returned an invalid rejection (status {}, code of {} bytes, message of {} bytes)",
                        r.status,
                        r.code.len(),
                        r.message.len()
                    )));
                }
                Ok(RouteDecision::Reject {
                    status: r.status,
                    code: r.code,
                    message: r.message,
                })
            }
        }
    }

    fn bad_output(&self, detail: String) -> PluginFailure {
        self.failure(PluginFailureKind::BadOutput, detail)
    }

    fn failure(&self, kind: PluginFailureKind, detail: String) -> PluginFailure {
        PluginFailure {
            plugin: self.name.clone(),
            kind,
            detail,
        }
    }

    /// Instances created so far (load, recycling, fresh mode, replacement after failures).
    pub fn instances_created(&self) -> u64 {
        self.created.load(Ordering::Relaxed)
    }

    /// Plugin name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
