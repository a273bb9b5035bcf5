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

use crate::config::{self, Config, InstanceMode, OnError, Role, StorefrontKey};
use crate::error::ConfigError;
use crate::files;
use crate::metrics::Metrics;
use crate::plugin::types::{BreakerState, Health, Provider};
use crate::plugin::{
    CompliancePlugin, DialectPlugin, PluginHost, ProviderInfo, RouterPlugin, SandboxSettings,
};
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
    /// The loaded plugin, by role.
    pub kind: PluginKind,
}

/// A loaded plugin by role.
#[derive(Clone)]
pub enum PluginKind {
    /// A router (contract 0.1.0, 0.2.0, 0.3.0 or 0.4.0).
    Router(Arc<RouterPlugin>),
    /// A compliance plugin.
    Compliance(Arc<CompliancePlugin>),
    /// A dialect (one side or both).
    Dialect(Arc<DialectPlugin>),
}

impl LoadedPlugin {
    /// Contract version and sides, for the status page.
    pub fn contract(&self) -> String {
        match &self.kind {
            PluginKind::Router(r) => r.contract().to_string(),
            PluginKind::Compliance(c) => c.contract().into(),
            PluginKind::Dialect(d) => match (d.storefront_contract(), d.has_egress()) {
                (Some("0.4.0"), true) => "0.4.0 (storefront+egress)".into(),
                (Some("0.4.0"), false) => "0.4.0 (storefront)".into(),
                (Some(_), true) => "0.2.0 (ingress+egress)".into(),
                (Some(_), false) => "0.2.0 (ingress)".into(),
                (None, _) => "0.2.0 (egress)".into(),
            },
        }
    }

    /// The deprecation notice of the plugin's contract, if it is deprecated.
    pub fn deprecation(&self) -> Option<&'static str> {
        match &self.kind {
            PluginKind::Router(r) => r.deprecation(),
            _ => None,
        }
    }

    fn dialect(&self) -> Option<Arc<DialectPlugin>> {
        match &self.kind {
            PluginKind::Dialect(d) => Some(d.clone()),
            _ => None,
        }
    }
}

/// A provider of the snapshot: its transport, its dialect and its credentials.
pub struct ProviderEntry {
    /// The HTTP side.
    pub upstream: Arc<Upstream>,
    /// Its dialect (name, plugin), when it has one.
    pub dialect: Option<(String, Arc<DialectPlugin>)>,
    /// Credentials for its dialect plugin only.
    pub credentials: Vec<(String, String)>,
    /// Its OAuth access token, when the host fetches one for it.
    pub oauth: Option<Arc<crate::oauth::TokenSource>>,
}

impl ProviderEntry {
    /// The credentials its dialect gets now: the configured ones, plus a good OAuth access
    /// token when the provider has a token endpoint.
    pub async fn credentials_now(
        &self,
    ) -> Result<std::borrow::Cow<'_, [(String, String)]>, crate::oauth::TokenError> {
        let Some(source) = &self.oauth else {
            return Ok(std::borrow::Cow::Borrowed(&self.credentials));
        };
        let token = source.token().await?;
        let mut credentials = self.credentials.clone();
        credentials.push((source.credential().to_string(), token));
        Ok(std::borrow::Cow::Owned(credentials))
    }
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
    pub providers: BTreeMap<String, ProviderEntry>,
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
    /// OAuth token sources, kept across snapshots.
    pub oauth: crate::oauth::OAuthTokens,
    compiled: Mutex<HashMap<String, Component>>,
}

impl Builder {
    /// A builder around a plugin host.
    pub fn new(host: Arc<PluginHost>, metrics: Arc<Metrics>) -> Builder {
        Builder {
            oauth: crate::oauth::OAuthTokens::new(&metrics),
            host,
            metrics,
            clients: ClientCache::default(),
            compiled: Mutex::new(HashMap::new()),
        }
    }

    /// Read `file` and build a complete snapshot, or say exactly what is wrong.
    ///
    /// Every file is read through the config directory's real path (its symlinks followed
    /// once, at the start): a config directory switched by renaming a symlink (`current ->
    /// releases/v2`) is read whole from one release, never half from each, so a change that
    /// spans the config and its rules files is one change set. (The config file keeps its
    /// own name, so errors name the file as configured.)
    pub fn build(&self, file: &Path, version: u64) -> Result<Snapshot, ConfigError> {
        let real = match (file.parent(), file.file_name()) {
            (Some(dir), Some(name)) => {
                let dir = if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                };
                std::fs::canonicalize(dir).map(|d| d.join(name)).ok()
            }
            _ => None,
        };
        let real = real.unwrap_or_else(|| file.to_path_buf());
        let file = real.as_path();
        let (config, text) = Config::load(file)?;
        let mut hasher = Sha256::new();
        hasher.update(text.as_bytes());
        let mut files = vec![file.to_path_buf()];

        let mut plugins = BTreeMap::new();
        let mut used = Vec::new();
        let catalogue = catalogue(&config);
        for (name, p) in &config.plugins {
            let path = config::resolve(file, &p.path);
            let plugin_err = |message: String| ConfigError::Plugin {
                config: file.to_path_buf(),
                plugin: name.clone(),
                file: path.clone(),
                message,
            };
            let bytes =
                files::read(&path, files::COMPONENT).map_err(|e| ConfigError::Resource {
                    file: file.to_path_buf(),
                    field: format!("plugins.{name}.path"),
                    message: e.to_string(),
                })?;
            if let Some(pin) = &p.sha256 {
                let actual = hex::encode(Sha256::digest(&bytes));
                if &actual != pin {
                    return Err(plugin_err(format!(
                        "its sha256 is {actual}, but plugins.{name}.sha256 pins {pin}: not loaded"
                    )));
                }
            }
            hasher.update(&bytes);
            files.push(path.clone());
            let config_json = match (&p.config, &p.config_file) {
                (_, Some(config_file)) => {
                    let config_path = config::resolve(file, config_file);
                    let text = files::read_to_string(&config_path, files::JSON).map_err(|e| {
                        ConfigError::Resource {
                            file: file.to_path_buf(),
                            field: format!("plugins.{name}.config_file"),
                            message: e.to_string(),
                        }
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
            let settings = SandboxSettings {
                mode: host_config.instance_mode,
                recycle_after: host_config.recycle_after,
                deadline_ms: p.deadline_ms.unwrap_or(host_config.deadline_ms),
                memory_bytes: (p.memory_mb.unwrap_or(host_config.memory_mb) as usize) << 20,
                identity: (p.role.as_str(), sha256.clone()),
            };
            let (host, metrics) = (&self.host, self.metrics.clone());
            let kind = match p.role {
                Role::Router => PluginKind::Router(Arc::new(
                    RouterPlugin::load(
                        host,
                        name,
                        &component,
                        config_json,
                        &catalogue,
                        settings,
                        metrics,
                    )
                    .map_err(&plugin_err)?,
                )),
                Role::Compliance => PluginKind::Compliance(Arc::new(
                    CompliancePlugin::load(host, name, &component, config_json, settings, metrics)
                        .map_err(&plugin_err)?,
                )),
                Role::Dialect => PluginKind::Dialect(Arc::new(
                    DialectPlugin::load(host, name, &component, config_json, settings, metrics)
                        .map_err(&plugin_err)?,
                )),
            };
            plugins.insert(
                name.clone(),
                LoadedPlugin {
                    name: name.clone(),
                    role: p.role,
                    path,
                    sha256,
                    on_error: p.on_error,
                    kind,
                },
            );
        }
        self.prune(&used);

        let mut providers = BTreeMap::new();
        for (name, p) in &config.providers {
            let resource = |field: &str, message: String| ConfigError::Resource {
                file: file.to_path_buf(),
                field: format!("providers.{name}.{field}"),
                message,
            };
            let ca = p.ca_file.as_ref().map(|ca| config::resolve(file, ca));
            let upstream =
                Upstream::new(name, p, ca, &self.clients).map_err(|m| resource("ca_file", m))?;
            let dialect = match &p.dialect {
                Some(d) => {
                    let plugin =
                        plugins
                            .get(d)
                            .and_then(LoadedPlugin::dialect)
                            .ok_or_else(|| {
                                resource("dialect", format!("{d:?} is not a loaded dialect plugin"))
                            })?;
                    if !plugin.has_egress() {
                        return Err(resource(
                            "dialect",
                            format!("dialect {d:?} has no provider (egress) side"),
                        ));
                    }
                    Some((d.clone(), plugin))
                }
                None => None,
            };
            let mut credentials = Vec::new();
            for (key, secret) in &p.credentials {
                let value = secret
                    .resolve()
                    .map_err(|m| resource(&format!("credentials.{key}"), m))?;
                credentials.push((key.clone(), value));
            }
            let oauth = match &p.oauth2 {
                Some(o) => {
                    let secret = |field: &str, value: &crate::config::Secret| {
                        value
                            .resolve()
                            .map_err(|m| resource(&format!("oauth2.{field}"), m))
                    };
                    let settings = crate::oauth::TokenSettings {
                        token_url: crate::upstream::parse_base_url(&o.token_url)
                            .map_err(|m| resource("oauth2.token_url", m))?,
                        client_id: secret("client_id", &o.client_id)?,
                        client_secret: secret("client_secret", &o.client_secret)?,
                        scope: o.scope.clone(),
                        client_auth: o.client_auth,
                        credential: o.credential.clone(),
                        refresh_before: std::time::Duration::from_millis(o.refresh_before_ms),
                        timeout: std::time::Duration::from_millis(o.timeout_ms),
                    };
                    Some(self.oauth.source(name, settings, upstream.client()))
                }
                None => None,
            };
            providers.insert(
                name.clone(),
                ProviderEntry {
                    upstream: Arc::new(upstream),
                    dialect,
                    credentials,
                    oauth,
                },
            );
        }

        let mut routes = Vec::with_capacity(config.routes.len());
        for (i, r) in config.routes.iter().enumerate() {
            let mut built =
                route(r, &config, &plugins).map_err(|message| ConfigError::Resource {
                    file: file.to_path_buf(),
                    field: format!("routes[{i}].dialect"),
                    message,
                })?;
            if let Some(w) = &r.webhooks {
                let webhooks =
                    crate::webhooks::Webhooks::resolve(w).map_err(|(field, message)| {
                        ConfigError::Resource {
                            file: file.to_path_buf(),
                            field: format!("routes[{i}].webhooks.{field}"),
                            message,
                        }
                    })?;
                built.webhooks = Some(Arc::new(webhooks));
            }
            routes.push(built);
        }
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
        self.host.prune_cache(used);
    }
}

fn route(
    r: &config::RouteConfig,
    config: &Config,
    plugins: &BTreeMap<String, LoadedPlugin>,
) -> Result<Route, String> {
    let provider_views = r
        .providers
        .iter()
        .filter_map(|name| {
            config.providers.get(name).map(|p| Provider {
                name: name.clone(),
                region: p.region.clone(),
                tags: p.tags.clone(),
                cost: p.cost,
                dialect: p.dialect.clone().unwrap_or_default(),
                // Static until the health tracker fills it in.
                health: Health {
                    success_rate: 1.0,
                    latency_p50_ms: 0,
                    latency_p99_ms: 0,
                    breaker: BreakerState::Closed,
                },
            })
        })
        .collect();
    let chain: Vec<&LoadedPlugin> = r
        .plugins
        .iter()
        .filter_map(|name| plugins.get(name))
        .collect();
    let router = chain.iter().find_map(|p| match &p.kind {
        PluginKind::Router(router) => Some((router.clone(), p.on_error)),
        _ => None,
    });
    let compliance = chain
        .iter()
        .filter_map(|p| match &p.kind {
            PluginKind::Compliance(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    let dialect = match &r.dialect {
        Some(d) => {
            let plugin = plugins
                .get(d)
                .and_then(LoadedPlugin::dialect)
                .ok_or_else(|| format!("{d:?} is not a loaded dialect plugin"))?;
            if !plugin.has_ingress() {
                return Err(format!("dialect {d:?} has no storefront (ingress) side"));
            }
            Some((d.clone(), plugin))
        }
        None => None,
    };
    Ok(Route {
        name: r.name.clone(),
        host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
        path_prefix: r.path_prefix.clone(),
        providers: r.providers.clone(),
        provider_views,
        router,
        compliance,
        dialect,
        plugin_body: r.plugin_body || r.dialect.is_some(),
        payment_id_prefix: r.payment_id_prefix.clone(),
        refund_id_prefix: r.refund_id_prefix.clone(),
        failover: r.failover.clone(),
        home: r.home.clone(),
        storefront_keys: r
            .storefront_keys
            .iter()
            .map(StorefrontKey::digest)
            .collect::<Result<_, _>>()?,
        card_data: r.card_data,
        // Resolved by the caller, which names the secret's field in errors.
        webhooks: None,
        pending_queries: (r.dialect.is_some() && r.pending_queries.enabled)
            .then(|| r.pending_queries.clone()),
        methods: r
            .methods
            .iter()
            .filter_map(|m| http::Method::from_bytes(m.as_bytes()).ok())
            .collect(),
    })
}

impl Snapshot {
    /// The first route matching `method`, `host` (without port, any case) and `path`, with
    /// its index in `routes`.
    pub fn match_route(
        &self,
        method: &http::Method,
        host: Option<&str>,
        path: &str,
    ) -> Option<(usize, &Route)> {
        self.routes
            .iter()
            .enumerate()
            .find(|(_, r)| r.matches(method, host, path))
    }

    /// Instance mode in force (for the status page).
    pub fn instance_mode(&self) -> InstanceMode {
        self.config.plugin_host.instance_mode
    }
}

/// Every configured provider as 0.3.0 and 0.4.0 routers get it at `init`, in name order (a provider's
/// id is its index).
fn catalogue(config: &Config) -> Vec<ProviderInfo> {
    config
        .providers
        .iter()
        .map(|(name, p)| ProviderInfo {
            name: name.clone(),
            region: p.region.clone(),
            tags: p.tags.clone(),
            cost: p.cost,
            dialect: p.dialect.clone().unwrap_or_default(),
        })
        .collect()
}
