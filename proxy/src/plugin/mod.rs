//! The plugin host: one wasmtime engine (pooling allocator, epoch interruption) for the
//! process, components compiled once per load, and per-role wrappers that enforce the
//! sandbox on every call (CPU deadline, memory cap, output checks).

mod bindings;
mod cache;
mod compliance;
mod convert;
mod dialect;
pub mod fixtures;
mod router;
mod sandbox;
mod standin;
mod store;
mod ticker;

use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// The contract's shared types (0.4.0): canonical payment, outcome, HTTP views, and the
/// host's view of a route's provider.
pub mod types {
    pub use super::bindings::v4::types::payproxy::plugin::types::*;
    pub use super::router::Provider;
}
/// A payment with nothing but `operation` set (a host-made status query, unit tests).
pub fn blank_payment(operation: types::Operation) -> types::Payment {
    types::Payment {
        operation,
        id: None,
        provider_reference: None,
        amount: None,
        country: None,
        method: None,
        installments: None,
        customer: types::Customer {
            id: None,
            email: None,
            phone: None,
            phone_verified: false,
        },
        merchant_reference: None,
        idempotency_key: None,
        metadata: vec![],
        strong_auth: types::StrongAuth {
            authenticated: false,
            exemption_requested: None,
        },
        return_url: None,
        manual_capture: false,
        description: None,
    }
}

/// The storefront side's own types (contract 0.4.0): calls, lists, payment records.
pub mod storefront {
    pub use super::dialect::{
        Call, CardDetails, EventKind, ListQuery, PaymentCall, PaymentEvent, PaymentRecord,
        PaymentState, RenderedEvent,
    };
}
pub use bindings::v4::router::exports::payproxy::plugin::router::ProviderInfo;
pub use compliance::{CompliancePlugin, Decision, Verdict};
pub use dialect::{Capabilities, Context, DialectPlugin, Notification, Webhook};
pub use router::{RouteDecision, RouterPlugin};
pub use sandbox::{Binding, Sandbox, SandboxSettings};
pub use store::CallState;

use crate::config::PluginHostConfig;

pub use ticker::EPOCH_TICK;

/// The engine, the linker with the WASI stand-ins, and the epoch ticker.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<CallState>,
    ticker: ticker::Ticker,
    /// Compiled components kept on disk across restarts.
    cache: Option<cache::DiskCache>,
}

/// A compiled component with its digest, before it is bound to a role.
pub struct Compiled {
    /// The compiled component.
    pub component: Component,
    /// Lower-case hex sha256 of the file's bytes.
    pub sha256: String,
    /// Loaded from the compile cache (not compiled now).
    pub cached: bool,
}

impl PluginHost {
    /// Build the engine from the host settings. Pool sizes are fixed for the process lifetime.
    pub fn new(config: &PluginHostConfig) -> anyhow::Result<Arc<PluginHost>> {
        let instances = config.max_instances.max(1);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(instances);
        // A std Rust component holds a few core instances (main module plus shims).
        pool.total_core_instances(instances.saturating_mul(8));
        pool.total_memories(instances.saturating_mul(2));
        pool.total_tables(instances.saturating_mul(8));
        pool.max_memory_size(usize::try_from(config.max_memory_mb)? << 20);
        pool.max_memories_per_component(4);
        pool.max_tables_per_component(16);

        let mut wasm = wasmtime::Config::new();
        wasm.wasm_component_model(true);
        wasm.epoch_interruption(true);
        // `perf` can name plugin functions when this is set (writes /tmp/perf-<pid>.map).
        if std::env::var_os("PAYPROXY_PERFMAP").is_some() {
            wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine =
            Engine::new(&wasm).map_err(|e| anyhow::anyhow!("plugin engine: {}", root_cause(&e)))?;

        let mut linker = Linker::new(&engine);
        standin::add_to_linker(&mut linker)
            .map_err(|e| anyhow::anyhow!("plugin stand-ins: {}", root_cause(&e)))?;

        let ticker = ticker::Ticker::start(engine.clone())?;
        Ok(Arc::new(PluginHost {
            engine,
            linker,
            ticker,
            cache: None,
        }))
    }

    /// A host that keeps compiled components in `cache_dir` (`None`: compile every start).
    /// A directory that cannot be used is logged and the host compiles as if there were none.
    pub fn with_cache(
        config: &PluginHostConfig,
        cache_dir: Option<&std::path::Path>,
    ) -> anyhow::Result<Arc<PluginHost>> {
        let host = Self::new(config)?;
        let Some(dir) = cache_dir else {
            return Ok(host);
        };
        let mut host = Arc::into_inner(host).expect("a new host is not shared yet");
        match cache::DiskCache::open(dir, &host.engine) {
            Ok(cache) => host.cache = Some(cache),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "compile cache unusable; plugins are compiled at every start")
            }
        }
        Ok(Arc::new(host))
    }

    /// Forget cached components of plugin files no longer in use (digests `used`).
    pub fn prune_cache(&self, used: &[String]) {
        if let Some(cache) = &self.cache {
            cache.prune(used);
        }
    }

    /// Compile a component from its bytes. CPU-heavy: call off the request path.
    pub fn compile(&self, bytes: &[u8]) -> Result<Compiled, String> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        if !bytes.starts_with(b"\0asm") {
            return Err("not a WebAssembly file (no \\0asm header)".into());
        }
        // Byte 4..8: version 1 and layer 0 is a core module; components use layer 1.
        if bytes.get(4..8) == Some(&[1, 0, 0, 0]) {
            return Err(
                "is a core WebAssembly module, not a component: build the plugin for wasm32-wasip2"
                    .into(),
            );
        }
        if let Some(component) = self
            .cache
            .as_ref()
            .and_then(|c| c.load(&self.engine, &sha256))
        {
            return Ok(Compiled {
                component,
                sha256,
                cached: true,
            });
        }
        let component = Component::from_binary(&self.engine, bytes)
            .map_err(|e| format!("not a valid WebAssembly component: {}", root_cause(&e)))?;
        if let Some(cache) = &self.cache {
            cache.store(&sha256, &component);
        }
        Ok(Compiled {
            component,
            sha256,
            cached: false,
        })
    }

    /// The names a component exports, for error messages.
    fn export_names(&self, component: &Component) -> Vec<String> {
        component
            .component_type()
            .exports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect()
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn linker(&self) -> &Linker<CallState> {
        &self.linker
    }

    /// Announce guest code about to run (a call, an instantiation and its `init`): the epoch
    /// ticks until the guard is dropped, so the call's deadline can fire.
    pub(crate) fn running(&self) -> ticker::Running<'_> {
        self.ticker.enter()
    }

    /// The epoch thread's kernel thread id, for tests that count how often it wakes.
    #[doc(hidden)]
    pub fn ticker_tid(&self) -> u64 {
        self.ticker.tid()
    }
}

/// The innermost message of a wasmtime error chain, for one-line errors.
pub(crate) fn root_cause(e: &wasmtime::Error) -> String {
    e.chain().last().map(|c| c.to_string()).unwrap_or_default()
}
