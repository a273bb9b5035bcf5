//! Directory watches for reloads on file changes.
//!
//! Directories are watched, not files, so that editors and deploy tools that replace a file by
//! rename are seen. On Linux the watch asks inotify only for the events that finish a change
//! (a file closed after writing, moved in or out, created, deleted, its attributes changed),
//! never for every `write` or `open`: a directory that also holds a file written on every
//! request (an audit log, a redb store) then wakes nobody while that file is written. A
//! watch on every write (notify's, which also asks for opens and modifications) cost the
//! payment chain 8% of its throughput with the audit log beside the config
//! (docs/benchmarks.md). Elsewhere the `notify` crate watches.

use std::path::{Path, PathBuf};

/// Watches directories and passes the paths of changed entries to a callback.
pub struct DirWatcher {
    inner: imp::Inner,
}

impl DirWatcher {
    /// Start watching nothing yet; `on_change` gets the paths of each change, or no path when
    /// changes were lost (the kernel's queue overflowed): then anything may have changed. It
    /// runs on the watcher's own task or thread, so it must be quick.
    pub fn start(
        on_change: impl Fn(Vec<PathBuf>) + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        Ok(DirWatcher {
            inner: imp::Inner::start(on_change)?,
        })
    }

    /// Watch `dir` (not its subdirectories).
    pub fn watch(&mut self, dir: &Path) -> std::io::Result<()> {
        self.inner.watch(dir)
    }

    /// Stop watching `dir`.
    pub fn unwatch(&mut self, dir: &Path) {
        self.inner.unwatch(dir);
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex};

    use futures_util::StreamExt;
    use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};

    /// The events that end a change; `MODIFY` (every write) and `OPEN` are left out.
    const CHANGES: WatchMask = WatchMask::CLOSE_WRITE
        .union(WatchMask::MOVED_TO)
        .union(WatchMask::MOVED_FROM)
        .union(WatchMask::CREATE)
        .union(WatchMask::DELETE)
        .union(WatchMask::ATTRIB);

    pub(super) struct Inner {
        watches: Watches,
        by_dir: HashMap<PathBuf, WatchDescriptor>,
        dirs: Arc<Mutex<HashMap<WatchDescriptor, PathBuf>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Inner {
        pub(super) fn start(
            on_change: impl Fn(Vec<PathBuf>) + Send + Sync + 'static,
        ) -> std::io::Result<Inner> {
            let inotify = Inotify::init()?;
            let watches = inotify.watches();
            let dirs: Arc<Mutex<HashMap<WatchDescriptor, PathBuf>>> = Arc::default();
            let mut events = inotify.into_event_stream([0u8; 4096])?;
            let names = dirs.clone();
            let task = tokio::spawn(async move {
                while let Some(event) = events.next().await {
                    match event {
                        Ok(event) if event.mask.contains(EventMask::Q_OVERFLOW) => {
                            on_change(Vec::new());
                        }
                        Ok(event) => {
                            let dir = lock(&names).get(&event.wd).cloned();
                            if let (Some(dir), Some(name)) = (dir, event.name) {
                                on_change(vec![dir.join(name)]);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "file watch stopped; reload with SIGHUP or POST /admin/reload");
                            break;
                        }
                    }
                }
            });
            Ok(Inner {
                watches,
                by_dir: HashMap::new(),
                dirs,
                task,
            })
        }

        pub(super) fn watch(&mut self, dir: &Path) -> std::io::Result<()> {
            let wd = self.watches.add(dir, CHANGES)?;
            lock(&self.dirs).insert(wd.clone(), dir.to_path_buf());
            self.by_dir.insert(dir.to_path_buf(), wd);
            Ok(())
        }

        pub(super) fn unwatch(&mut self, dir: &Path) {
            if let Some(wd) = self.by_dir.remove(dir) {
                lock(&self.dirs).remove(&wd);
                let _ = self.watches.remove(wd);
            }
        }
    }

    impl Drop for Inner {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::path::{Path, PathBuf};

    use notify::{RecursiveMode, Watcher};

    pub(super) struct Inner {
        watcher: notify::RecommendedWatcher,
    }

    impl Inner {
        pub(super) fn start(
            on_change: impl Fn(Vec<PathBuf>) + Send + Sync + 'static,
        ) -> std::io::Result<Inner> {
            let watcher =
                notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                    if let Ok(event) = event {
                        if !event.kind.is_access() {
                            on_change(event.paths);
                        }
                    }
                })
                .map_err(std::io::Error::other)?;
            Ok(Inner { watcher })
        }

        pub(super) fn watch(&mut self, dir: &Path) -> std::io::Result<()> {
            self.watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(std::io::Error::other)
        }

        pub(super) fn unwatch(&mut self, dir: &Path) {
            let _ = self.watcher.unwatch(dir);
        }
    }
}

// What the inotify mask leaves out; notify, elsewhere, reports every write.
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;
    use tokio::sync::mpsc;

    /// The next change seen; a missing one fails the test instead of hanging it.
    async fn change(rx: &mut mpsc::UnboundedReceiver<Vec<PathBuf>>) -> Vec<PathBuf> {
        tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("no change seen within 30 s")
            .unwrap()
    }

    #[tokio::test]
    async fn appends_to_an_open_file_wake_nobody_and_a_finished_write_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut watcher = DirWatcher::start(move |paths| {
            let _ = tx.send(paths);
        })
        .unwrap();
        watcher.watch(dir.path()).unwrap();
        // A log written on every request: opened before, appended to, kept open.
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("audit.log"))
            .unwrap();
        // Its creation is a change; drain it before the appends.
        let first = change(&mut rx).await;
        assert_eq!(first, vec![dir.path().join("audit.log")]);
        for i in 0..100 {
            writeln!(log, "line {i}").unwrap();
        }
        log.flush().unwrap();
        // Then a config edit, written and closed. Events arrive in order, so if the appends
        // had produced any, one would come first.
        std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
        let next = change(&mut rx).await;
        assert_eq!(
            next,
            vec![dir.path().join("config.json")],
            "the appends woke the watcher"
        );
        // An atomic replace (write elsewhere, rename in) is seen under the new name.
        std::fs::write(dir.path().join(".config.json.tmp"), b"{\"a\":1}").unwrap();
        std::fs::rename(
            dir.path().join(".config.json.tmp"),
            dir.path().join("config.json"),
        )
        .unwrap();
        let mut seen = Vec::new();
        while !seen.contains(&dir.path().join("config.json")) {
            seen.extend(change(&mut rx).await);
        }
        watcher.unwatch(dir.path());
        drop(log);
    }
}
