//! Shared helpers for the proxy crate's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use payproxy::config::{InstanceMode, PluginHostConfig};
use payproxy::metrics::Metrics;
use payproxy::plugin::types::{BreakerState, Health, HttpRequest, Provider};
use payproxy::plugin::{PluginHost, ProviderInfo, RouterPlugin, SandboxSettings};

/// Path of a plugin built by `scripts/build-plugins.sh` (the test command runs it first).
pub fn wasm(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-plugins.sh (the test command does)",
        path.display()
    );
    path
}

pub fn host() -> Arc<PluginHost> {
    PluginHost::new(&PluginHostConfig {
        max_instances: 32,
        ..PluginHostConfig::default()
    })
    .expect("plugin host")
}

pub fn settings(mode: InstanceMode) -> SandboxSettings {
    SandboxSettings {
        mode,
        recycle_after: 1000,
        deadline_ms: 50,
        memory_bytes: 16 << 20,
        identity: ("test", String::new()),
    }
}

/// The providers these tests configure, as 0.3.0 routers get them at `init`; the
/// router-regional fixtures (`cases.json`) name the `sim-*` ones.
pub const CONFIGURED: &[&str] = &["a", "b", "sim-eu", "sim-us", "sim-sea", "sim-latam"];

/// Provider descriptions for `names`, in that order (a provider's id is its index).
pub fn catalogue(names: &[&str]) -> Vec<ProviderInfo> {
    names
        .iter()
        .map(|name| ProviderInfo {
            name: (*name).into(),
            region: String::new(),
            tags: Vec::new(),
            cost: 1.0,
            dialect: String::new(),
        })
        .collect()
}

/// Load a router plugin with [`CONFIGURED`] as the configured providers.
pub fn load_router(
    host: &Arc<PluginHost>,
    file: &str,
    config: &str,
    mode: InstanceMode,
    metrics: &Arc<Metrics>,
) -> Result<RouterPlugin, String> {
    load_router_with(host, file, config, &catalogue(CONFIGURED), mode, metrics)
}

/// Load a router plugin with the given configured providers.
pub fn load_router_with(
    host: &Arc<PluginHost>,
    file: &str,
    config: &str,
    configured: &[ProviderInfo],
    mode: InstanceMode,
    metrics: &Arc<Metrics>,
) -> Result<RouterPlugin, String> {
    let bytes = std::fs::read(wasm(file)).expect("read wasm");
    let compiled = host.compile(&bytes)?;
    RouterPlugin::load(
        host,
        file,
        &compiled.component,
        config.to_string(),
        configured,
        settings(mode),
        metrics.clone(),
    )
}

pub fn provider(name: &str, region: &str) -> Provider {
    Provider {
        name: name.into(),
        region: region.into(),
        tags: vec![],
        cost: 1.0,
        dialect: String::new(),
        health: healthy(),
    }
}

pub fn healthy() -> Health {
    Health {
        success_rate: 1.0,
        latency_p50_ms: 0,
        latency_p99_ms: 0,
        breaker: BreakerState::Closed,
    }
}

pub fn request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpRequest {
    HttpRequest {
        method: method.into(),
        path: path.into(),
        query: None,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.map(|b| b.as_bytes().to_vec()),
    }
}
