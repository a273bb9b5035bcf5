//! Reading the files a config names (the config itself, plugin components, plugin config
//! files, PEM certificates, keys and CAs) so that no path can exhaust or hang the proxy.
//!
//! A file must be a regular file (a symlink to one is fine): FIFOs, devices such as
//! `/dev/zero`, directories and sockets are refused before a byte is read. It is opened
//! with `O_NONBLOCK`, so opening a FIFO returns at once instead of waiting for a writer;
//! its size is checked against a per-kind [`Limit`] before reading, and at most one byte
//! more than the limit is read, so a file growing meanwhile is capped too. The read runs on
//! its own thread and is given up after [`READ_TIMEOUT`] (a stalled network filesystem);
//! at most [`MAX_READS_IN_FLIGHT`] such threads exist, so repeated reloads against a
//! stalled mount cannot pile threads up. Errors name the file and the reason, never its
//! contents.

use std::fs::{FileType, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// The most bytes a kind of file may have, and the name errors use for that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Plural noun for error messages, e.g. `plugin components`.
    pub what: &'static str,
    /// Largest accepted size.
    pub max_bytes: u64,
}

/// The config file and plugin `config_file`s: 4 MiB.
pub const JSON: Limit = Limit {
    what: "JSON config files",
    max_bytes: 4 << 20,
};

/// Plugin components (`.wasm`): 64 MiB.
pub const COMPONENT: Limit = Limit {
    what: "plugin components",
    max_bytes: 64 << 20,
};

/// Compiled plugins in the compile cache (machine code is several times the component's
/// size): 512 MiB.
pub const COMPILED: Limit = Limit {
    what: "compiled plugins",
    max_bytes: 512 << 20,
};

/// PEM files: listener certificates and keys, provider CA files: 1 MiB.
pub const PEM: Limit = Limit {
    what: "PEM files",
    max_bytes: 1 << 20,
};

/// Secret files (`{"file": …}` values): 64 KiB.
pub const SECRET: Limit = Limit {
    what: "secret files",
    max_bytes: 64 << 10,
};

/// How long one file read may take before the reload gives up on it.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads still running (normally none; a stalled filesystem leaves some behind): past
/// this many, reads are refused at once rather than starting another thread.
pub const MAX_READS_IN_FLIGHT: usize = 8;

static READS_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Why a file was not read. Names the file, never its contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// Opening or reading failed (missing, no permission, I/O error).
    #[error("{path}: cannot read: {message}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// Not a regular file.
    #[error("{path} is {kind}, not a regular file", path = path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is instead, with its article: `a FIFO`, `a directory`, ….
        kind: &'static str,
    },
    /// Larger than its limit.
    #[error(
        "{path} is {size} bytes; the limit for {what} is {mib} MiB",
        path = path.display(), what = limit.what, mib = limit.max_bytes >> 20
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size (or, when it grew while read, the bytes read so far).
        size: u64,
        /// The limit it broke.
        limit: Limit,
    },
    /// Text was expected.
    #[error("{path} is not UTF-8 text", path = path.display())]
    NotText {
        /// The file.
        path: PathBuf,
    },
    /// The read did not finish in time; it is abandoned, not awaited.
    #[error("{path}: not read within {secs} s (stalled filesystem?)", path = path.display(), secs = after.as_secs_f32())]
    TimedOut {
        /// The file.
        path: PathBuf,
        /// The timeout.
        after: Duration,
    },
    /// Too many earlier reads have not finished.
    #[error("{path}: not read: {in_flight} earlier file reads have not finished (stalled filesystem?)", path = path.display())]
    Busy {
        /// The file.
        path: PathBuf,
        /// Reads still running.
        in_flight: usize,
    },
}

/// Read a whole file within `limit`, with [`READ_TIMEOUT`]. Blocks the calling thread (at
/// most that long): call it where blocking is allowed, as snapshot builds do.
pub fn read(path: &Path, limit: Limit) -> Result<Vec<u8>, FileError> {
    let owned = path.to_path_buf();
    with_timeout(path, READ_TIMEOUT, move || read_now(&owned, limit))
}

/// [`read`], for text.
pub fn read_to_string(path: &Path, limit: Limit) -> Result<String, FileError> {
    String::from_utf8(read(path, limit)?).map_err(|_| FileError::NotText {
        path: path.to_path_buf(),
    })
}

/// Open, check and read on this thread.
fn read_now(path: &Path, limit: Limit) -> Result<Vec<u8>, FileError> {
    let io = |e: std::io::Error| FileError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    // Refuse by the path first so a device is never even opened (opening some has side
    // effects), then again on the open file (fstat), which is what is actually read.
    check_type(path, std::fs::metadata(path).map_err(io)?.file_type())?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(io)?;
    let metadata = file.metadata().map_err(io)?;
    check_type(path, metadata.file_type())?;
    let too_large = |size| FileError::TooLarge {
        path: path.to_path_buf(),
        size,
        limit,
    };
    if metadata.len() > limit.max_bytes {
        return Err(too_large(metadata.len()));
    }
    // The size was checked above, so this allocation is bounded by the limit.
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(limit.max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limit.max_bytes {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

fn check_type(path: &Path, file_type: FileType) -> Result<(), FileError> {
    if file_type.is_file() {
        return Ok(());
    }
    let kind = if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a file"
    };
    Err(FileError::NotRegular {
        path: path.to_path_buf(),
        kind,
    })
}

/// Run `read` on its own thread and wait at most `timeout`. A read that overruns is left
/// to finish (or not) on its thread; the count of those bounds how many can pile up.
fn with_timeout(
    path: &Path,
    timeout: Duration,
    read: impl FnOnce() -> Result<Vec<u8>, FileError> + Send + 'static,
) -> Result<Vec<u8>, FileError> {
    let in_flight = READS_IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    let guard = InFlight;
    if in_flight >= MAX_READS_IN_FLIGHT {
        return Err(FileError::Busy {
            path: path.to_path_buf(),
            in_flight,
        });
    }
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("payproxy-file-read".into())
        .spawn(move || {
            let _guard = guard;
            let _ = tx.send(read());
        })
        .map_err(|e| FileError::Io {
            path: path.to_path_buf(),
            message: format!("cannot start a reader thread: {e}"),
        })?;
    rx.recv_timeout(timeout).unwrap_or_else(|_| {
        Err(FileError::TimedOut {
            path: path.to_path_buf(),
            after: timeout,
        })
    })
}

/// One read counted in [`READS_IN_FLIGHT`] until dropped.
struct InFlight;

impl Drop for InFlight {
    fn drop(&mut self) {
        READS_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Limit = Limit {
        what: "test files",
        max_bytes: 1 << 20,
    };

    fn mkfifo(path: &Path) {
        let status = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .expect("mkfifo runs");
        assert!(status.success());
    }

    #[test]
    fn reads_a_regular_file_and_a_symlink_to_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.json");
        std::fs::write(&file, b"{}").unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read(&file, SMALL).unwrap(), b"{}");
        assert_eq!(read_to_string(&link, SMALL).unwrap(), "{}");
    }

    #[test]
    fn refuses_what_is_not_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        let link = dir.path().join("zero-link");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        for (path, kind) in [
            (fifo.as_path(), "a FIFO"),
            (Path::new("/dev/zero"), "a character device"),
            (link.as_path(), "a character device"),
            (dir.path(), "a directory"),
        ] {
            let error = read(path, SMALL).unwrap_err();
            assert_eq!(
                error,
                FileError::NotRegular {
                    path: path.to_path_buf(),
                    kind
                }
            );
            assert_eq!(
                error.to_string(),
                format!("{} is {kind}, not a regular file", path.display())
            );
        }
    }

    #[test]
    fn refuses_a_file_over_its_limit_before_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.wasm");
        // Sparse: no disk used, and reading it would allocate a GiB.
        std::fs::File::create(&big)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        let error = read(&big, COMPONENT).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{} is 1073741824 bytes; the limit for plugin components is 64 MiB",
                big.display()
            )
        );
        let at_limit = dir.path().join("at-limit.json");
        std::fs::write(&at_limit, vec![b' '; SMALL.max_bytes as usize]).unwrap();
        assert_eq!(
            read(&at_limit, SMALL).unwrap().len() as u64,
            SMALL.max_bytes
        );
        std::fs::write(&at_limit, vec![b' '; SMALL.max_bytes as usize + 1]).unwrap();
        assert!(matches!(
            read(&at_limit, SMALL),
            Err(FileError::TooLarge { size, .. }) if size == SMALL.max_bytes + 1
        ));
    }

    #[test]
    fn missing_files_and_non_text_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let error = read(&missing, PEM).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("{}: cannot read: ", missing.display())),
            "{error}"
        );
        let binary = dir.path().join("binary.json");
        std::fs::write(&binary, [0xff, 0xfe]).unwrap();
        assert_eq!(
            read_to_string(&binary, JSON).unwrap_err(),
            FileError::NotText { path: binary }
        );
    }

    #[test]
    fn a_read_that_stalls_is_given_up_after_the_timeout() {
        let path = Path::new("/stalled/mount/file");
        let (release, stalled) = mpsc::channel::<()>();
        let started = std::time::Instant::now();
        let result = with_timeout(path, Duration::from_millis(100), move || {
            // Stands for a read stuck in the kernel; released at the end of the test.
            let _ = stalled.recv_timeout(Duration::from_secs(10));
            Ok(Vec::new())
        });
        assert_eq!(
            result,
            Err(FileError::TimedOut {
                path: path.to_path_buf(),
                after: Duration::from_millis(100)
            })
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(release);
    }
}
