//! The compile cache: components compiled by cranelift kept on disk, so a restart (or a
//! reload of a plugin seen before) loads machine code in milliseconds instead of compiling
//! for seconds.
//!
//! An entry is named by the plugin file's SHA-256 and the engine's compatibility hash (the
//! wasmtime version and every engine setting that changes code), so a changed plugin, engine
//! setting or payproxy build never loads a stale entry. Its content is wasmtime's serialized
//! component followed by the SHA-256 of those bytes, checked before loading: a torn or
//! corrupted file is compiled again, never run.
//!
//! Loading machine code from disk is only as safe as the directory: payproxy creates it
//! readable and writable by its own user only (mode 0700), and the directory must not be
//! writable by anyone else (README, "compile cache").

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// Entries no snapshot used for this long are removed when a snapshot is built.
const KEEP_UNUSED: Duration = Duration::from_secs(7 * 24 * 3600);

/// A directory of compiled components.
pub struct DiskCache {
    dir: PathBuf,
    /// The engine's compatibility hash, part of every entry's name.
    engine: String,
}

impl DiskCache {
    /// The cache in `dir`, created (mode 0700) if missing.
    pub fn open(dir: &Path, engine: &Engine) -> std::io::Result<DiskCache> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        trusted(dir, true)?;
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(DiskCache {
            dir: dir.to_path_buf(),
            engine: format!("{:016x}", hasher.finish()),
        })
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.engine))
    }

    /// The component compiled from the file with digest `sha256`, if cached and intact.
    #[allow(unsafe_code)]
    pub fn load(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        let path = self.path(sha256);
        // Checked at every load, not only at start: the directory and the entry are still
        // payproxy's own, and the entry is no symlink.
        if let Err(e) = trusted(&self.dir, true).and_then(|_| trusted(&path, false)) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "compile cache entry not trusted; compiling instead");
            }
            return None;
        }
        // Read like every other file payproxy loads (regular, capped).
        let bytes = crate::files::read(&path, crate::files::COMPILED).ok()?;
        let (code, digest) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
        if Sha256::digest(code).as_slice() != digest {
            tracing::warn!(path = %path.display(), "compile cache entry is corrupt; compiling again");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        // SAFETY: the bytes are what `store` wrote (wasmtime's own serialization of a
        // component this engine compiled), checked against their digest, in a directory only
        // payproxy's user can write. wasmtime checks the engine compatibility itself too.
        match unsafe { Component::deserialize(engine, code) } {
            Ok(component) => {
                // Marks the entry as used, for `prune`.
                let _ = std::fs::File::options()
                    .append(true)
                    .open(&path)
                    .and_then(|f| f.set_modified(SystemTime::now()));
                Some(component)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %super::root_cause(&e), "compile cache entry unusable; compiling again");
                None
            }
        }
    }

    /// Keep `component`, compiled from the file with digest `sha256` (best effort: a cache
    /// that cannot be written only costs the next start its compile time).
    pub fn store(&self, sha256: &str, component: &Component) {
        let result = component
            .serialize()
            .map_err(|e| std::io::Error::other(super::root_cause(&e)))
            .and_then(|code| {
                let path = self.path(sha256);
                let tmp = path.with_extension(format!(
                    "tmp{}-{:08x}",
                    std::process::id(),
                    rand::random::<u32>()
                ));
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)?;
                file.write_all(&code)?;
                file.write_all(&Sha256::digest(&code))?;
                file.sync_all()?;
                std::fs::rename(&tmp, &path)
            });
        if let Err(e) = result {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not write the compile cache");
        }
    }

    /// Remove entries of other plugin versions that no build used for [`KEEP_UNUSED`].
    pub fn prune(&self, used: &[String]) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let in_use = used.iter().any(|sha| name.starts_with(sha.as_str()));
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > KEEP_UNUSED);
            if !in_use && old {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// `path` (not followed if a symlink) is a directory (`dir`) or a regular file owned by
/// payproxy's own user that no one else can write.
fn trusted(path: &Path, dir: bool) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path)?;
    // `/proc/self` belongs to the process's effective user.
    let me = std::fs::metadata("/proc/self")?.uid();
    let kind_ok = if dir {
        meta.file_type().is_dir()
    } else {
        meta.file_type().is_file()
    };
    let problem = if !kind_ok {
        "is a symlink or not a plain file or directory"
    } else if meta.uid() != me {
        "belongs to another user"
    } else if meta.permissions().mode() & 0o022 != 0 {
        "is writable by other users"
    } else {
        return Ok(());
    };
    Err(std::io::Error::other(format!(
        "{} {problem}; refusing to load machine code from it",
        path.display()
    )))
}
