//! Hot reload: the running snapshot behind `arc-swap`, rebuilt off the request path on a
//! file change, `POST /admin/reload` or SIGHUP. A failed build leaves the old snapshot
//! serving and records why (status page, log, `payproxy_reloads_total{result="error"}`).

mod dirs;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::ConfigError;
use crate::metrics::Metrics;
use crate::snapshot::{Builder, Snapshot};

/// The outcome of the most recent reload, for `/admin/status`.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadStatus {
    /// `ok` or `error`.
    pub result: &'static str,
    /// What failed, when it failed.
    pub error: Option<String>,
    /// What triggered it: `startup`, `admin`, `sighup`, `file`.
    pub trigger: String,
    /// Unix time in seconds.
    pub at_unix: u64,
    /// Successful reloads since start (not counting startup).
    pub ok_total: u64,
    /// Failed reloads since start.
    pub error_total: u64,
}

/// Owns the running snapshot and rebuilds it on demand.
pub struct Reloader {
    file: PathBuf,
    builder: Builder,
    current: ArcSwap<Snapshot>,
    status: Mutex<ReloadStatus>,
    // Serialises builds so two triggers never race to swap.
    building: tokio::sync::Mutex<()>,
    version: AtomicU64,
    metrics: Arc<Metrics>,
    /// Called with each snapshot swapped in (see [`Reloader::on_swap`]).
    on_swap: Mutex<Vec<SwapHook>>,
}

type SwapHook = Box<dyn Fn(&Snapshot) + Send + Sync>;

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Reloader {
    /// Build the first snapshot; an error here means the proxy cannot start.
    pub fn start(file: &Path, builder: Builder) -> Result<Arc<Reloader>, ConfigError> {
        let snapshot = builder.build(file, 1)?;
        let metrics = builder.metrics.clone();
        let reloader = Reloader {
            file: file.to_path_buf(),
            builder,
            current: ArcSwap::from_pointee(snapshot),
            status: Mutex::new(ReloadStatus {
                result: "ok",
                error: None,
                trigger: "startup".into(),
                at_unix: now_unix(),
                ok_total: 0,
                error_total: 0,
            }),
            building: tokio::sync::Mutex::new(()),
            version: AtomicU64::new(1),
            metrics,
            on_swap: Mutex::new(Vec::new()),
        };
        reloader.publish_info(&reloader.snapshot());
        Ok(Arc::new(reloader))
    }

    /// The snapshot in force now. A request keeps the one it loaded until it finishes.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Run `hook` with every snapshot a reload swaps in, right after the swap, for state
    /// that lives beside the snapshots and follows their config.
    pub fn on_swap(&self, hook: impl Fn(&Snapshot) + Send + Sync + 'static) {
        self.on_swap
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(hook));
    }

    /// The last reload's outcome.
    pub fn status(&self) -> ReloadStatus {
        self.status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The config file this reloader reads.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Build a new snapshot (on a blocking thread) and swap it in if it is valid.
    /// Returns the new version, or the reason the old snapshot stays.
    pub async fn reload(self: &Arc<Self>, trigger: &str) -> Result<u64, String> {
        let _guard = self.building.lock().await;
        let version = self.version.load(Ordering::Relaxed) + 1;
        let this = self.clone();
        let built = tokio::task::spawn_blocking(move || this.builder.build(&this.file, version))
            .await
            .map_err(|e| format!("reload task failed: {e}"))
            .and_then(|r| r.map_err(|e| e.to_string()));
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        status.trigger = trigger.to_string();
        status.at_unix = now_unix();
        match built {
            Ok(snapshot) => {
                self.version.store(version, Ordering::Relaxed);
                let snapshot = Arc::new(snapshot);
                self.current.store(snapshot.clone());
                self.publish_info(&snapshot);
                for hook in self
                    .on_swap
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                {
                    hook(&snapshot);
                }
                self.metrics.reloads.with_label_values(&["ok"]).inc();
                status.result = "ok";
                status.error = None;
                status.ok_total += 1;
                tracing::info!(trigger, version, hash = %snapshot.hash, "config reloaded");
                Ok(version)
            }
            Err(error) => {
                self.metrics.reloads.with_label_values(&["error"]).inc();
                status.result = "error";
                status.error = Some(error.clone());
                status.error_total += 1;
                tracing::error!(trigger, %error, "reload rejected; previous config keeps serving");
                Err(error)
            }
        }
    }

    fn publish_info(&self, snapshot: &Snapshot) {
        self.metrics.plugin_info.reset();
        for p in snapshot.plugins.values() {
            self.metrics
                .plugin_info
                .with_label_values(&[p.name.as_str(), p.role.as_str(), p.sha256.as_str()])
                .set(1);
        }
        self.metrics.config_info.reset();
        self.metrics
            .config_info
            .with_label_values(&[snapshot.hash.as_str()])
            .set(1);
    }

    /// Reload on SIGHUP until the process ends.
    pub fn spawn_sighup(self: &Arc<Self>) -> std::io::Result<tokio::task::JoinHandle<()>> {
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let this = self.clone();
        Ok(tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                let _ = this.reload("sighup").await;
            }
        }))
    }

    /// Reload when any file of the running snapshot changes (config, plugins, plugin
    /// configs). Directories are watched, so editors that replace files by rename work.
    pub fn spawn_watch(
        self: &Arc<Self>,
        debounce: Duration,
    ) -> std::io::Result<tokio::task::JoinHandle<()>> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<PathBuf>>();
        // The watched files' names, checked on the watcher's side: the directories may also
        // hold files written on every request (a redb store, an audit log next to the
        // config), whose events go no further. While a reload runs every event is kept: the
        // new snapshot may name a file this set does not hold yet, and an edit of it
        // meanwhile must still lead to the next reload. No path at all means changes were
        // lost: it is passed on, and reloads.
        let names: Arc<std::sync::RwLock<BTreeSet<std::ffi::OsString>>> = Arc::default();
        let reloading = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ours, during) = (names.clone(), reloading.clone());
        let mut watcher = dirs::DirWatcher::start(move |paths: Vec<PathBuf>| {
            let names = ours.read().unwrap_or_else(|p| p.into_inner());
            let named = |p: &PathBuf| p.file_name().is_some_and(|n| names.contains(n));
            if paths.is_empty()
                || during.load(std::sync::atomic::Ordering::SeqCst)
                || paths.iter().any(named)
            {
                let _ = tx.send(paths);
            }
        })?;
        let this = self.clone();
        let mut watched = BTreeSet::new();
        let mut files = watch_set(&this.snapshot());
        let name_set = move |files: &BTreeSet<PathBuf>| {
            let set = files.iter().filter_map(|f| f.file_name()).map(Into::into);
            *names.write().unwrap_or_else(|p| p.into_inner()) = set.collect();
        };
        name_set(&files);
        sync_watches(&mut watcher, &mut watched, &files);
        Ok(tokio::spawn(async move {
            while let Some(paths) = rx.recv().await {
                if !paths.is_empty() && !paths.iter().any(|p| files.contains(&normalise(p))) {
                    continue;
                }
                // Let a burst of writes settle, then drop what queued up meanwhile.
                tokio::time::sleep(debounce).await;
                while rx.try_recv().is_ok() {}
                reloading.store(true, std::sync::atomic::Ordering::SeqCst);
                if this.reload("file").await.is_ok() {
                    files = watch_set(&this.snapshot());
                    name_set(&files);
                    sync_watches(&mut watcher, &mut watched, &files);
                }
                reloading.store(false, std::sync::atomic::Ordering::SeqCst);
            }
        }))
    }
}

fn normalise(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

fn watch_set(snapshot: &Snapshot) -> BTreeSet<PathBuf> {
    snapshot.files.iter().map(|f| normalise(f)).collect()
}

fn sync_watches(
    watcher: &mut dirs::DirWatcher,
    watched: &mut BTreeSet<PathBuf>,
    files: &BTreeSet<PathBuf>,
) {
    let wanted: BTreeSet<PathBuf> = files
        .iter()
        .filter_map(|f| f.parent().map(Path::to_path_buf))
        .collect();
    for dir in watched.difference(&wanted) {
        watcher.unwatch(dir);
    }
    for dir in wanted.difference(watched) {
        if let Err(e) = watcher.watch(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory");
        }
    }
    *watched = wanted;
}
