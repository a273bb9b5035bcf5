//! Start and stop a whole payproxy: snapshot, listeners, admin, reload triggers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, Admin};
use crate::config::{self, Config, StateKind};
use crate::health::{run_active_checks, ActiveCheck};
use crate::listener::workers::Workers;
use crate::listener::{self, ConnLimits};
use crate::metrics::Metrics;
use crate::payment::{AuditLog, Payments};
use crate::plugin::PluginHost;
use crate::proxy::Proxy;
use crate::reload::Reloader;
use crate::snapshot::Builder;
use crate::store::sweeper::{self, Sweep};
use crate::store::{MemoryStore, PostgresOptions, PostgresStore, RedbStore, Store};

/// A running proxy.
pub struct Running {
    /// Bound storefront addresses, in config order (useful with port 0).
    pub listen_addrs: Vec<SocketAddr>,
    /// Bound admin address.
    pub admin_addr: SocketAddr,
    /// The snapshot owner (tests trigger reloads directly).
    pub reloader: Arc<Reloader>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    /// Admin, background work and active checks: they finish when `shutdown` flips.
    tasks: Vec<JoinHandle<()>>,
    /// Reload triggers (SIGHUP, file watch): they run until aborted.
    triggers: Vec<JoinHandle<()>>,
    /// The threads serving the storefront listeners; they drain when `shutdown` flips.
    workers: Workers,
    /// The payments the serving threads run, awaited at shutdown.
    payments: Arc<Payments>,
}

/// Validate a config file completely without serving: parse, check references, compile
/// every plugin and run its `init` with its config, load certificates. What `payproxy check`
/// does.
pub fn check(file: &Path) -> anyhow::Result<String> {
    let (config, _) = Config::load(file)?;
    // What `run` refuses, `check` refuses too.
    admin_token(&config)?;
    // A check writes nothing: no compile cache.
    let host = PluginHost::new(&config.plugin_host)?;
    let builder = Builder::new(host, Arc::new(Metrics::new()));
    let snapshot = builder.build(file, 1)?;
    Ok(format!(
        "{}: ok ({} routes, {} providers, {} plugins, hash {})",
        file.display(),
        snapshot.routes.len(),
        snapshot.providers.len(),
        snapshot.plugins.len(),
        &snapshot.hash[..12]
    ))
}

/// The plugin host, with its compile cache when the config keeps one.
fn plugin_host(file: &Path, config: &Config) -> anyhow::Result<Arc<PluginHost>> {
    let settings = &config.plugin_host;
    let cache = settings
        .compile_cache
        .then(|| config::resolve(file, &settings.compile_cache_dir));
    PluginHost::with_cache(settings, cache.as_deref())
}

fn admin_token(config: &Config) -> anyhow::Result<Option<String>> {
    let token = config
        .admin
        .token
        .clone()
        .or_else(|| std::env::var(&config.admin.token_env).ok())
        .filter(|t| !t.is_empty());
    if token.is_none() && !config.admin.addr.ip().is_loopback() {
        anyhow::bail!(
            "refusing to start: admin address {} is not loopback and no admin token is set \
             (set admin.token or ${})",
            config.admin.addr,
            config.admin.token_env
        );
    }
    if token.is_none() {
        tracing::warn!(addr = %config.admin.addr, "admin listener has no token; POST /admin/reload is open to local processes");
    }
    Ok(token)
}

/// Raise this process's open-file soft limit to its hard limit (on macOS, to the kernel's
/// per-process cap), so that the common default soft limit of 1024 descriptors does not cap
/// how many clients can connect. Returns the limit now in force.
pub fn raise_descriptor_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// Build the first snapshot, bind every listener and start serving.
pub async fn start(file: &Path) -> anyhow::Result<Running> {
    let file: PathBuf = file.to_path_buf();
    let (config, _) = Config::load(&file)?;
    let token = admin_token(&config)?;
    let metrics = Arc::new(Metrics::new());
    let host = plugin_host(&file, &config)?;
    let builder = Builder::new(host, metrics.clone());
    let reloader = {
        let file = file.clone();
        tokio::task::spawn_blocking(move || Reloader::start(&file, builder)).await??
    };
    // This process's id on the status page and in a metric: the postgres store's holder id
    // (what its claims carry), a random one otherwise.
    let mut instance = format!("{:016x}", rand::random::<u64>());
    let store: Arc<dyn Store> = match config.state.kind {
        StateKind::Redb => {
            let path = config::resolve(&file, &config.state.path);
            Arc::new(tokio::task::spawn_blocking(move || RedbStore::open(&path)).await??)
        }
        StateKind::Memory => Arc::new(MemoryStore::new()),
        StateKind::Postgres => {
            let options = postgres_options(&file, &config.state)?;
            let store = tokio::task::spawn_blocking(move || PostgresStore::open(options)).await??;
            tracing::info!(instance = store.instance(), "postgres state store ready");
            instance = store.instance().to_string();
            Arc::new(store)
        }
    };
    if let Some(writer) = store.writer() {
        for collector in writer.counts().collectors() {
            metrics.registry().register(collector)?;
        }
    }
    let audit = match &config.log.audit_path {
        Some(path) => {
            AuditLog::to_file(&config::resolve(&file, path)).map_err(anyhow::Error::msg)?
        }
        None => AuditLog::to_log(),
    };
    let proxy = Arc::new(Proxy::new(
        reloader.clone(),
        metrics.clone(),
        store.clone(),
        config.state.idempotency_ttl_ms,
        audit,
    ));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let sweep = Sweep {
        interval: Duration::from_millis(config.state.purge_interval_ms),
        retention_ms: config.state.payment_retention_ms,
    };
    let mut tasks = vec![tokio::spawn(crate::webhooks::deliver::run(
        crate::webhooks::deliver::Deliverer {
            store: store.clone(),
            reloader: reloader.clone(),
            metrics: metrics.clone(),
            settings: config.webhook_delivery.clone(),
        },
        shutdown_rx.clone(),
    ))];
    tasks.push(tokio::spawn(crate::payment::notices::run_held(
        proxy.payments(),
        reloader.clone(),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(crate::payment::pending::run(
        proxy.payments(),
        reloader.clone(),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(sweeper::run(
        store.clone(),
        sweep,
        metrics.clone(),
        shutdown_rx.clone(),
    )));
    // SIGHUP reloads before anything answers: a signal to a proxy that already serves never
    // finds the default action (exit) in place.
    let mut triggers = vec![reloader.spawn_sighup()?];
    let mut listen_addrs = Vec::new();
    let mut storefronts = Vec::new();
    for l in &config.listeners {
        let tcp = listener::bind(l.addr).await?;
        listen_addrs.push(tcp.local_addr()?);
        let tls = match &l.tls {
            Some(tls) => Some(tokio_rustls::TlsAcceptor::from(
                crate::tls::server_config(
                    &config::resolve(&file, &tls.cert),
                    &config::resolve(&file, &tls.key),
                )
                .map_err(|e| anyhow::anyhow!("listeners {}: tls: {e}", l.addr))?,
            )),
            None => None,
        };
        storefronts.push((tcp.into_std()?, tls));
    }
    let workers = serve_storefronts(
        storefronts,
        config.runtime.worker_threads,
        &proxy,
        &metrics,
        &reloader,
        &shutdown_rx,
    )
    .await?;
    let admin_tcp = listener::bind(config.admin.addr).await?;
    let admin_addr = admin_tcp.local_addr()?;
    let admin = Arc::new(
        Admin::new(
            reloader.clone(),
            metrics.clone(),
            proxy.health(),
            token,
            config.admin.addr.ip().is_loopback(),
        )
        .with_instance(store_kind(config.state.kind), &instance)
        .with_store(store.clone()),
    );
    metrics
        .instance_info
        .with_label_values(&[instance.as_str(), store_kind(config.state.kind)])
        .set(1);
    metrics
        .worker_threads
        .with_label_values::<&str>(&[])
        .set(i64::try_from(workers.len()).unwrap_or(i64::MAX));
    tasks.push(spawn_active_checks(&proxy, &reloader, shutdown_rx.clone()));
    let limits_source = reloader.clone();
    tasks.push(tokio::spawn(admin::serve(
        admin_tcp,
        admin,
        metrics.clone(),
        move || ConnLimits::admin(&limits_source.snapshot().config),
        shutdown_rx.clone(),
    )));
    if config.reload.watch {
        triggers.push(reloader.spawn_watch(Duration::from_millis(config.reload.debounce_ms))?);
    }
    tracing::info!(listeners = ?listen_addrs, admin = %admin_addr, version = reloader.snapshot().version, "payproxy serving");
    Ok(Running {
        listen_addrs,
        admin_addr,
        reloader,
        metrics,
        shutdown,
        tasks,
        triggers,
        workers,
        payments: proxy.payments(),
    })
}

/// Start the serving threads (`runtime.worker_threads`, default one per CPU this process may
/// run on), each with an accept loop on every storefront listener.
async fn serve_storefronts(
    storefronts: Vec<(std::net::TcpListener, Option<tokio_rustls::TlsAcceptor>)>,
    threads: Option<usize>,
    proxy: &Arc<Proxy>,
    metrics: &Arc<Metrics>,
    reloader: &Arc<Reloader>,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<Workers> {
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut seeds = Vec::with_capacity(threads);
    for _ in 0..threads {
        // Each thread gets its own descriptors: when every thread has dropped its own at
        // shutdown, the socket is closed and new connections are refused at once.
        let listeners = storefronts
            .iter()
            .map(|(tcp, tls)| Ok((tcp.try_clone()?, tls.clone())))
            .collect::<std::io::Result<Vec<_>>>()?;
        let (proxy, metrics, reloader) = (proxy.clone(), metrics.clone(), reloader.clone());
        let shutdown = shutdown.clone();
        seeds.push(move || {
            let mut serving = tokio::task::JoinSet::new();
            for (tcp, tls) in listeners {
                let tcp = tokio::net::TcpListener::from_std(tcp)?;
                let limits_source = reloader.clone();
                serving.spawn(listener::serve(
                    tcp,
                    tls,
                    proxy.clone(),
                    metrics.clone(),
                    move || ConnLimits::storefront(&limits_source.snapshot().config),
                    shutdown.clone(),
                ));
            }
            Ok(async move {
                while let Some(ended) = serving.join_next().await {
                    if let Err(e) = ended {
                        // This thread no longer accepts on that listener; the others do.
                        tracing::error!(error = %e, "a storefront accept loop failed");
                    }
                }
            })
        });
    }
    Workers::start(seeds).await
}

/// Active health checks of the providers that configure one, following reloads.
fn spawn_active_checks(
    proxy: &Arc<Proxy>,
    reloader: &Arc<Reloader>,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let reloader = reloader.clone();
    let targets = move || {
        let snapshot = reloader.snapshot();
        snapshot
            .config
            .providers
            .iter()
            .filter_map(|(name, p)| {
                let check = p.health_check.as_ref()?;
                let upstream = &snapshot.providers.get(name)?.upstream;
                let url = upstream.target(&check.path).ok()?;
                let check = ActiveCheck {
                    provider: name.clone(),
                    url,
                    interval: Duration::from_millis(check.interval_ms),
                    timeout: Duration::from_millis(check.timeout_ms),
                };
                // Its extra CA and connect timeout apply, as to its requests.
                Some((check, upstream.check_client()))
            })
            .collect()
    };
    tokio::spawn(run_active_checks(proxy.health(), targets, shutdown))
}

impl Running {
    /// Stop accepting, drain in-flight requests (bounded), stop background tasks.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.triggers {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        // Last: a background task above may have used a provider connection that lives on
        // a serving thread's runtime. A payment whose storefront connection has gone is
        // still running there: it gets the drain period to finish and be recorded.
        let payments = self.payments;
        self.workers
            .stop(async move {
                if !payments.settled(listener::DRAIN).await {
                    tracing::warn!(
                        "payments still in progress after the drain period are stopped; their \
                         records stay in flight (with a durable store, a retry with the same \
                         idempotency key resumes them)"
                    );
                }
            })
            .await;
    }
}

/// The PostgreSQL store's options from `state.postgres` (validated with the config: present
/// for this kind). The URL is resolved here, from the config or the environment.
fn postgres_options(file: &Path, state: &config::StateConfig) -> anyhow::Result<PostgresOptions> {
    let pg = state
        .postgres
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("state.postgres: required with \"kind\": \"postgres\""))?;
    let url = pg
        .url
        .resolve()
        .map_err(|e| anyhow::anyhow!("state.postgres.url: {e}"))?;
    let mut options = PostgresOptions::from_url(&url)?;
    options.tls = pg.tls.is_some();
    options.tls_ca = pg
        .tls
        .as_ref()
        .and_then(|t| t.ca_file.as_ref())
        .map(|ca| config::resolve(file, ca));
    options.lease = Duration::from_millis(pg.lease_ms);
    options.pool_size = pg.pool_size;
    options.connect_timeout = Duration::from_millis(pg.connect_timeout_ms);
    Ok(options)
}

fn store_kind(kind: StateKind) -> &'static str {
    match kind {
        StateKind::Redb => "redb",
        StateKind::Memory => "memory",
        StateKind::Postgres => "postgres",
    }
}
