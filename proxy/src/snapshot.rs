//! The running configuration as one immutable value: routes, providers and loaded plugins.
//!
//! A snapshot is fully built and validated before it is used; building one reads files and
//! compiles plugins, so it runs off the request path (see `reload`). Compiled components
//! are cached by digest so reloading an unchanged plugin costs an instantiation, not a compile.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use crate::config::{self, Config, InstanceMode, OnError, Role};
use crate::error::ConfigError;
use crate::metrics::Metrics;
use crate::plugin::{PluginHost, RouterPlugin, RouterSettings, WitProvider};
use crate::route::Route;
use crate::upstream::{ClientCache, Upstream};

/// A loaded plugin as the status page shows it.
pub struct LoadedPlugin {
    /// Name from config.
    pub name: String,
    /// Role it implements.
    pub role: Role,
    /// Component file.
    pub path: PathBuf,
    /// sha256 of the component file.
    pub sha256: String,
    /// Failure policy.
    pub on_error: OnError,
    /// The router, for the router role.
    pub router: Arc<RouterPlugin>,
}

/// One immutable running configuration.
pub struct Snapshot {
    /// Increases by one per successful load.
    pub version: u64,
    /// sha256 over the config text and every plugin and plugin config file.
    pub hash: String,
    /// The parsed config.
    pub config: Config,
    /// Routes in match order.
    pub routes: Vec<Route>,
    /// Providers by name.
    pub providers: BTreeMap<String, Arc<Upstream>>,
    /// Plugins by name.
    pub plugins: BTreeMap<String, LoadedPlugin>,
    /// Every file the snapshot was built from (config, plugins, plugin configs): the watch set.
    pub files: Vec<PathBuf>,
}

/// What a snapshot build needs that outlives snapshots.
pub struct Builder {
    /// The plugin engine.
    pub host: Arc<PluginHost>,
    /// Metrics handed to plugins.
    pub metrics: Arc<Metrics>,
    /// Upstream clients shared across snapshots.
    pub clients: ClientCache,
    compiled: Mutex<HashMap<String, Component>>,
}

impl Builder {
    /// A builder around a plugin host.
    pub fn new(host: Arc<PluginHost>, metrics: Arc<Metrics>) -> Builder {
        Builder {
            host,
            metrics,
            clients: ClientCache::default(),
            compiled: Mutex::new(HashMap::new()),
        }
    }

    /// Read `file` and build a complete snapshot, or say exactly what is wrong.
    pub fn build(&self, file: &Path, version: u64) -> Result<Snapshot, ConfigError> {
        let (config, text) = Config::load(file)?;
        let mut hasher = Sha256::new();
        hasher.update(text.as_bytes());
        let mut files = vec![file.to_path_buf()];

        let mut providers = BTreeMap::new();
        for (name, p) in &config.providers {
            let ca = p.ca_file.as_ref().map(|ca| config::resolve(file, ca));
            let upstream = Upstream::new(name, p, ca, &self.clients).map_err(|message| {
                ConfigError::Resource {
                    file: file.to_path_buf(),
                    field: format!("providers.{name}.ca_file"),
                    message,
                }
            })?;
            providers.insert(name.clone(), Arc::new(upstream));
        }

        let mut plugins = BTreeMap::new();
        let mut used = Vec::new();
        for (name, p) in &config.plugins {
            let path = config::resolve(file, &p.path);
            let plugin_err = |message: String| ConfigError::Plugin {
                config: file.to_path_buf(),
                plugin: name.clone(),
                file: path.clone(),
                message,
            };
            let bytes =
                std::fs::read(&path).map_err(|e| plugin_err(format!("cannot read: {e}")))?;
            hasher.update(&bytes);
            files.push(path.clone());
            let config_json = match (&p.config, &p.config_file) {
                (_, Some(config_file)) => {
                    let config_path = config::resolve(file, config_file);
                    let text =
                        std::fs::read_to_string(&config_path).map_err(|e| ConfigError::Field {
                            file: file.to_path_buf(),
                            field: format!("plugins.{name}.config_file"),
                            message: format!("cannot read {}: {e}", config_path.display()),
                        })?;
                    serde_json::from_str::<serde_json::Value>(&text).map_err(|e| {
                        ConfigError::Syntax {
                            file: config_path.clone(),
                            line: e.line(),
                            column: e.column(),
                            message: e.to_string(),
                        }
                    })?;
                    hasher.update(text.as_bytes());
                    files.push(config_path);
                    text
                }
                (Some(value), None) => value.to_string(),
                (None, None) => "{}".to_string(),
            };
            let (component, sha256) = self.compile(&bytes).map_err(&plugin_err)?;
            used.push(sha256.clone());
            let host_config = &config.plugin_host;
            let settings = RouterSettings {
                mode: host_config.instance_mode,
                recycle_after: host_config.recycle_after,
                deadline_ms: p.deadline_ms.unwrap_or(host_config.deadline_ms),
                memory_bytes: (p.memory_mb.unwrap_or(host_config.memory_mb) as usize) << 20,
            };
            let router = match p.role {
                Role::Router => RouterPlugin::load(
                    &self.host,
                    name,
                    &component,
                    config_json,
                    settings,
                    self.metrics.clone(),
                )
                .map_err(&plugin_err)?,
            };
            plugins.insert(
                name.clone(),
                LoadedPlugin {
                    name: name.clone(),
                    role: p.role,
                    path,
                    sha256,
                    on_error: p.on_error,
                    router: Arc::new(router),
                },
            );
        }
        self.prune(&used);

        let routes = config
            .routes
            .iter()
            .map(|r| route(r, &config, &plugins))
            .collect();
        for (index, listener) in config.listeners.iter().enumerate() {
            if let Some(tls) = &listener.tls {
                crate::tls::server_config(
                    &config::resolve(file, &tls.cert),
                    &config::resolve(file, &tls.key),
                )
                .map_err(|message| ConfigError::Resource {
                    file: file.to_path_buf(),
                    field: format!("listeners[{index}].tls"),
                    message,
                })?;
            }
        }
        Ok(Snapshot {
            version,
            hash: hex::encode(hasher.finalize()),
            config,
            routes,
            providers,
            plugins,
            files,
        })
    }

    fn compile(&self, bytes: &[u8]) -> Result<(Component, String), String> {
        let digest = hex::encode(Sha256::digest(bytes));
        if let Some(component) = self
            .compiled
            .lock()
            .ok()
            .and_then(|c| c.get(&digest).cloned())
        {
            return Ok((component, digest));
        }
        let compiled = self.host.compile(bytes)?;
        if let Ok(mut cache) = self.compiled.lock() {
            cache.insert(digest.clone(), compiled.component.clone());
        }
        Ok((compiled.component, digest))
    }

    /// Keep only the components the newest snapshot uses, so reloads do not accumulate them.
    fn prune(&self, used: &[String]) {
        if let Ok(mut cache) = self.compiled.lock() {
            cache.retain(|digest, _| used.contains(digest));
        }
    }
}

fn route(
    r: &config::RouteConfig,
    config: &Config,
    plugins: &BTreeMap<String, LoadedPlugin>,
) -> Route {
    let wit_providers = r
        .providers
        .iter()
        .filter_map(|name| {
            config.providers.get(name).map(|p| WitProvider {
                name: name.clone(),
                region: p.region.clone(),
                tags: p.tags.clone(),
                cost: p.cost,
            })
        })
        .collect();
    let router = r
        .plugins
        .iter()
        .filter_map(|name| plugins.get(name))
        .find(|p| p.role == Role::Router)
        .map(|p| (p.router.clone(), p.on_error));
    Route {
        name: r.name.clone(),
        host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
        path_prefix: r.path_prefix.clone(),
        providers: r.providers.clone(),
        wit_providers,
        router,
        plugin_body: r.plugin_body,
    }
}

impl Snapshot {
    /// The first route matching `host` (without port, any case) and `path`.
    pub fn match_route(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(host, path))
    }

    /// Instance mode in force (for the status page).
    pub fn instance_mode(&self) -> InstanceMode {
        self.config.plugin_host.instance_mode
    }
}
