//! Files named by the config are read safely: `/dev/zero`, a FIFO, a sparse 1 GiB file and a
//! directory, used as a plugin, a plugin config file, the config file itself, a provider CA
//! file and a listener key, each fail their reload at once with a reason on the status
//! page, the running snapshot keeps serving, the next good reload works, and memory does not
//! grow. `payproxy check` refuses them the same way.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use payproxy_e2e::*;
use serde_json::{json, Value};

/// The hostile things, in a temp dir of their own.
struct Hostile {
    dir: tempfile::TempDir,
}

impl Hostile {
    fn create() -> Hostile {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mkfifo")
            .arg(dir.path().join("fifo"))
            .status()
            .expect("mkfifo runs");
        assert!(status.success(), "mkfifo");
        // Sparse: no disk used; reading it would take a GiB of memory.
        std::fs::File::create(dir.path().join("big"))
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        std::fs::create_dir(dir.path().join("dir")).unwrap();
        Hostile { dir }
    }

    /// (path, what the error must say). The FIFO first: without the protection it is the
    /// case that hangs, and the test shows that rather than risk reading `/dev/zero`.
    fn cases(&self) -> Vec<(PathBuf, String)> {
        vec![
            (
                self.dir.path().join("fifo"),
                "is a FIFO, not a regular file".into(),
            ),
            (
                self.dir.path().join("big"),
                "is 1073741824 bytes; the limit for".into(),
            ),
            (
                PathBuf::from("/dev/zero"),
                "is a character device, not a regular file".into(),
            ),
            (
                self.dir.path().join("dir"),
                "is a directory, not a regular file".into(),
            ),
        ]
    }
}

impl Drop for Hostile {
    /// Should a read be stuck on the FIFO (the protection gone), open it for writing and
    /// close it, so the reader sees end-of-file and a failing test ends instead of hanging.
    /// Non-blocking: with no reader the open fails at once.
    fn drop(&mut self) {
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(self.dir.path().join("fifo"));
    }
}

/// One good config reading every kind of file: a plugin with a `config_file`, a provider
/// with a CA file. (The listener stays plain: the tests send plain HTTP.)
fn good(sim: &Simulator, pki: &TestPki) -> Value {
    let mut config = base_config(sim, &["a"]);
    config["plugins"] = json!({
        "router": { "path": wasm("router_regional"), "role": "router", "config_file": "rules.json" }
    });
    config["routes"][0]["plugins"] = json!(["router"]);
    config["providers"]["a"]["ca_file"] = json!(pki.ca_cert);
    config
}

/// Where a hostile path goes.
#[derive(Debug, Clone, Copy)]
enum Use {
    Plugin,
    PluginConfig,
    /// The config file itself, replaced by a symlink.
    Config,
    CaFile,
    ListenerKey,
}

/// Put `path` in place as `what`.
fn apply(env: &Env, good: &Value, pki: &TestPki, what: Use, path: &Path) {
    let mut config = good.clone();
    match what {
        Use::Plugin => config["plugins"]["router"]["path"] = json!(path),
        Use::PluginConfig => config["plugins"]["router"]["config_file"] = json!(path),
        Use::CaFile => config["providers"]["a"]["ca_file"] = json!(path),
        Use::ListenerKey => {
            config["listeners"][0]["tls"] = json!({ "cert": pki.cert, "key": path });
        }
        Use::Config => {
            let link = env.config_path.with_extension("link");
            std::os::unix::fs::symlink(path, &link).unwrap();
            std::fs::rename(&link, &env.config_path).unwrap();
            return;
        }
    }
    env.rewrite(&config);
}

/// VmRSS and VmHWM (peak resident) of this process in KiB: the proxy runs in-process.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/self/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A payment served by the running snapshot (router → provider a).
async fn assert_serving(client: &HttpClient, env: &Env, context: &str) {
    let reply = client
        .post_form(
            &env.url("/v1/payment_intents"),
            &[],
            "amount=1&currency=eur",
        )
        .await;
    assert_eq!(
        (reply.status.as_u16(), reply.provider()),
        (200, Some("a")),
        "{context}: {}",
        String::from_utf8_lossy(&reply.body)
    );
}

async fn admin_reload(client: &HttpClient, env: &Env) -> Result<Reply, String> {
    client
        .try_send(http::Method::POST, &env.admin_url("/admin/reload"), &[], "")
        .await
}

/// Every hostile path as `what`: each reload fails fast with its reason, the old snapshot
/// serves, the next good reload succeeds; resident and peak memory grow by less than
/// 64 MiB, where reading the 1 GiB file would add a GiB to the peak and `/dev/zero` would
/// not stop at all.
async fn hostile_reloads(what: Use) {
    let sim = Simulator::start(&["a"]).await.unwrap();
    let certs = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(certs.path());
    let good = good(&sim, &pki);
    let env = Env::start_with_files(
        good.clone(),
        &[("rules.json", &json!({ "default": ["a"] }))],
    )
    .await;
    let hostile = Hostile::create();
    let client = HttpClient::default();
    // Warm up (one good reload, one payment) so the baseline includes steady-state memory.
    admin_reload(&client, &env)
        .await
        .unwrap()
        .assert_status(200);
    assert_serving(&client, &env, "warm-up").await;
    let mut version = 2;
    let (rss_before, peak_before) = memory_kib();

    for (path, reason) in hostile.cases() {
        let case = format!("{what:?} = {}", path.display());
        apply(&env, &good, &pki, what, &path);
        // Bounded by the client's 10 s: a hang is a failure, not a stuck test.
        let reply = admin_reload(&client, &env)
            .await
            .unwrap_or_else(|e| panic!("{case}: POST /admin/reload: {e}"));
        assert_eq!(reply.status, 422, "{case}: {:?}", reply.json());
        let status = client.get(&env.admin_url("/admin/status")).await.json();
        let last = &status["last_reload"];
        assert_eq!(last["result"], "error", "{case}");
        let error = last["error"].as_str().unwrap();
        // The config file is named by its own (symlink) path; the others by theirs.
        let named = match what {
            Use::Config => env.config_path.clone(),
            _ => path.clone(),
        };
        assert!(
            error.contains(&format!("{} {reason}", named.display())),
            "{case}: {error:?} should say {reason:?}"
        );
        assert_eq!(status["config"]["version"], version, "{case}: old snapshot");
        assert_serving(&client, &env, &case).await;

        env.rewrite(&good);
        let reply = admin_reload(&client, &env).await.unwrap();
        reply.assert_status(200);
        version += 1;
        assert_eq!(reply.json()["version"], version, "{case}: next good reload");
        assert_serving(&client, &env, &case).await;
    }

    let (rss_after, peak_after) = memory_kib();
    let limit = 64 << 10;
    assert!(
        rss_after.saturating_sub(rss_before) < limit
            && peak_after.saturating_sub(peak_before) < limit,
        "{what:?}: RSS {rss_before} → {rss_after} KiB, peak {peak_before} → {peak_after} KiB"
    );
    env.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugin_paths_fail_their_reload() {
    hostile_reloads(Use::Plugin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugin_config_files_fail_their_reload() {
    hostile_reloads(Use::PluginConfig).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_config_file_fails_its_reload() {
    hostile_reloads(Use::Config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_ca_files_fail_their_reload() {
    hostile_reloads(Use::CaFile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_listener_keys_fail_their_reload() {
    hostile_reloads(Use::ListenerKey).await;
}

/// What `payproxy check --config PATH` runs, on each hostile path as the config file.
#[test]
fn check_refuses_a_hostile_config_path_at_once() {
    let hostile = Hostile::create();
    for (path, reason) in hostile.cases() {
        let (tx, rx) = std::sync::mpsc::channel();
        let checked = path.clone();
        // Detached, so a hang fails the test instead of stalling it.
        std::thread::spawn(move || {
            let _ = tx.send(payproxy::server::check(&checked).map_err(|e| format!("{e:#}")));
        });
        let result = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("check {} did not return", path.display()));
        let error = result.expect_err("a hostile config is refused");
        assert!(
            error.starts_with(&format!("{} {reason}", path.display())),
            "{error}"
        );
    }
}
