//! A private PostgreSQL cluster for a test that restarts its database (so other tests sharing
//! the test server are not disturbed): initdb in a temp dir, loopback only, run by `nobody`
//! when the tests run as root (initdb refuses root).
//!
//! `PAYPROXY_TEST_POSTGRES_URL` set (scripts/test.sh) means Postgres is expected: a missing
//! binary then fails the test. Unset: [`PgCluster::start`] returns `None` with a loud message.

use std::ffi::OsString;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A running cluster; stopped (immediately) when dropped.
pub struct PgCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    /// `fsync=on` (benchmarks of durable writes); tests run with it off.
    fsync: bool,
    /// TLS only (`ssl=on`, plaintext connections rejected), with `server.crt`/`server.key`
    /// in the cluster's directory.
    tls: bool,
}

/// Where initdb and pg_ctl are: `PAYPROXY_TEST_POSTGRES_BIN`, else Debian's directory.
fn bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("PAYPROXY_TEST_POSTGRES_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

fn as_root() -> bool {
    id(&["-u"]) == 0
}

fn id(args: &[&str]) -> u32 {
    let out = Command::new("id").args(args).output().expect("id runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a uid")
}

impl PgCluster {
    /// A new cluster on a free loopback port, or `None` when Postgres is not expected here.
    /// fsync is off: a test's database need not survive a power cut.
    pub fn start() -> Option<PgCluster> {
        PgCluster::start_with(false)
    }

    /// A cluster that accepts TLS connections only, with `pki`'s certificate and key.
    pub fn start_tls(pki: &crate::TestPki) -> Option<PgCluster> {
        PgCluster::start_inner(false, Some(pki))
    }

    /// [`PgCluster::start`] with fsync on or off.
    pub fn start_with(fsync: bool) -> Option<PgCluster> {
        PgCluster::start_inner(fsync, None)
    }

    fn start_inner(fsync: bool, pki: Option<&crate::TestPki>) -> Option<PgCluster> {
        if std::env::var("PAYPROXY_TEST_POSTGRES_URL").is_err() {
            eprintln!(
                "SKIPPED: PAYPROXY_TEST_POSTGRES_URL is not set; the multi-instance postgres \
                 test does not run (scripts/test.sh sets it up)"
            );
            return None;
        }
        let bin = bin_dir().expect("PostgreSQL binaries (initdb, pg_ctl) not found");
        let dir = tempfile::tempdir().unwrap();
        if as_root() {
            std::os::unix::fs::chown(dir.path(), Some(nobody()), None).unwrap();
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let data = dir.path().join("data");
        let cluster = PgCluster {
            bin,
            port: 0,
            dir,
            fsync,
            tls: pki.is_some(),
        };
        cluster.run(
            "initdb",
            &[
                "-D".into(),
                data.clone().into(),
                "-U".into(),
                "payproxy".into(),
                "--auth=trust".into(),
                "--no-sync".into(),
            ],
        );
        if let Some(pki) = pki {
            for (from, to) in [(&pki.cert, "server.crt"), (&pki.key, "server.key")] {
                let to = cluster.dir.path().join(to);
                std::fs::copy(from, &to).unwrap();
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
                if as_root() {
                    std::os::unix::fs::chown(&to, Some(nobody()), None).unwrap();
                }
            }
            // TLS or nothing: a plaintext connection is rejected by the server.
            std::fs::write(
                data.join("pg_hba.conf"),
                "hostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n",
            )
            .unwrap();
        }
        let mut cluster = cluster;
        cluster.port = free_port();
        cluster.pg_ctl("start");
        Some(cluster)
    }

    /// `postgres://payproxy@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://payproxy@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl restart -m fast`: every connection is cut; back on the same port when it
    /// returns.
    pub fn restart(&self) {
        self.pg_ctl("restart");
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl(&self, action: &str) {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync={} -c max_connections=200",
            self.port,
            self.dir.path().display(),
            if self.fsync { "on" } else { "off" }
        );
        if self.tls {
            let dir = self.dir.path().display();
            options += &format!(
                " -c ssl=on -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key"
            );
        }
        let data = self.data();
        let log = self.dir.path().join("postgres.log");
        let mut args: Vec<OsString> = vec![
            "-D".into(),
            data.into(),
            "-l".into(),
            log.clone().into(),
            "-w".into(),
            "-t".into(),
            "60".into(),
            "-m".into(),
            "fast".into(),
        ];
        if action != "stop" {
            args.extend(["-o".into(), options.into()]);
        }
        args.push(action.into());
        let out = self.run("pg_ctl", &args);
        assert!(
            out.status.success(),
            "pg_ctl {action}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn run(&self, tool: &str, args: &[OsString]) -> Output {
        let program = self.bin.join(tool);
        let mut command = if as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "nobody", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = command.args(args).output().expect("run a postgres tool");
        assert!(
            out.status.success(),
            "{tool}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The cluster's directory (its log is `postgres.log` there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.port != 0 {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.pg_ctl("stop");
            }));
        }
    }
}

/// `nobody`'s uid.
fn nobody() -> u32 {
    id(&["-u", "nobody"])
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
