//! The plugin author's loop, end to end with the real binary: `payproxy plugin new` scaffolds
//! a crate for each role, cargo builds it for wasm32-wasip2 (and runs its native tests),
//! `payproxy plugin test` passes its generated fixtures; a broken fixture fails with a diff.
//!
//! Needs the wasm32-wasip2 target and the plugins built once (`scripts/test.sh` does both):
//! the builds share `plugins/target`, so the SDK's dependencies are not compiled again.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use serde_json::Value;

fn payproxy(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_payproxy"))
        .args(args)
        .current_dir(dir)
        .env("PAYPROXY_LOG", "off")
        .output()
        .expect("run payproxy")
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn plugins_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins")
}

/// `cargo ARGS` on the crate in `dir`, run from `plugins/` the way `scripts/build-plugins.sh`
/// builds (so `plugins/.cargo/config.toml` applies) into `plugins/target`. The standalone
/// template's release profile is `plugins/Cargo.toml`'s, so the SDK's dependencies built for
/// the first-party plugins are reused instead of compiled again.
fn cargo(dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .args(args)
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .current_dir(plugins_dir())
        .env("CARGO_TARGET_DIR", plugins_dir().join("target"))
        // The proxy's own test build must not leak into the plugin's.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    command.output().expect("run cargo")
}

/// Scaffold `role` as `name` in `root`, build it, run its native tests and its fixtures
/// through the host; returns the crate directory and the component, and prints how long each
/// step took.
fn round_trip(root: &Path, role: &str, name: &str, cache: &Path) -> (PathBuf, PathBuf) {
    let dir = root.join(name);
    let started = Instant::now();
    let out = payproxy(&["plugin", "new", "--role", role, name], root);
    assert!(out.status.success(), "plugin new: {}", text(&out));
    let scaffolded = started.elapsed();
    // The first-party plugins' lock file: the same dependency versions, already built.
    std::fs::copy(plugins_dir().join("Cargo.lock"), dir.join("Cargo.lock")).expect("lock file");

    let step = Instant::now();
    let out = cargo(
        &dir,
        &["build", "--quiet", "--release", "--target", "wasm32-wasip2"],
    );
    assert!(out.status.success(), "cargo build: {}", text(&out));
    let built = step.elapsed();
    let wasm = plugins_dir()
        .join("target/wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));

    let step = Instant::now();
    let fixtures = dir.join("fixtures");
    let out = payproxy(
        &[
            "plugin",
            "test",
            &wasm.to_string_lossy(),
            "--fixtures",
            &fixtures.to_string_lossy(),
            "--cache-dir",
            &cache.to_string_lossy(),
        ],
        root,
    );
    let report = text(&out);
    assert!(out.status.success(), "plugin test: {report}");
    assert!(
        report.contains(" passed, 0 failed") && !report.contains("FAIL"),
        "{report}"
    );
    let tested = step.elapsed();

    let step = Instant::now();
    let out = cargo(&dir, &["test", "--quiet"]);
    assert!(out.status.success(), "cargo test: {}", text(&out));
    eprintln!(
        "{role}: plugin new {} ms, cargo build (wasm) {} ms, plugin test {} ms \
         (round trip {} ms); native cargo test {} ms",
        scaffolded.as_millis(),
        built.as_millis(),
        tested.as_millis(),
        (scaffolded + built + tested).as_millis(),
        step.elapsed().as_millis()
    );
    (dir, wasm)
}

#[test]
fn scaffolded_plugins_build_and_pass_their_fixtures_in_the_host() {
    let root = tempfile::tempdir().expect("temp dir");
    let cache = root.path().join("cache");
    // Distinct names: the components land beside the first-party ones in plugins/target.
    let (dialect, wasm) = round_trip(root.path(), "dialect", "scaffold-test-dialect", &cache);
    for role in ["router", "compliance", "egress"] {
        round_trip(root.path(), role, &format!("scaffold-test-{role}"), &cache);
    }

    // A fixture that expects what the plugin does not answer: exit 1 and a diff.
    let text_of = |p: &Path| std::fs::read_to_string(p).expect("fixtures");
    let mut fixtures: Value =
        serde_json::from_str(&text_of(&dialect.join("fixtures/golden.json"))).expect("JSON");
    fixtures["encode"][0]["request"]["body_json"]["amount"] = Value::from(999);
    let broken = root.path().join("broken.json");
    std::fs::write(&broken, fixtures.to_string()).expect("write");
    let out = payproxy(
        &[
            "plugin",
            "test",
            &wasm.to_string_lossy(),
            "--fixtures",
            &broken.to_string_lossy(),
            "--cache-dir",
            &cache.to_string_lossy(),
        ],
        root.path(),
    );
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    for expected in [
        "FAIL  encode an authorization is a POST /charges",
        "body_json.amount: expected 999, got 1000",
        "-    \"amount\": 999,",
        "+    \"amount\": 1000,",
        " passed, 1 failed",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in\n{report}"
        );
    }
}

#[test]
fn plugin_new_refuses_bad_input_with_a_message() {
    let root = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(root.path().join("taken")).expect("mkdir");
    for (args, message) in [
        (
            &["plugin", "new", "--role", "dialect", "taken"][..],
            "taken already exists",
        ),
        (
            &["plugin", "new", "--role", "router", "My_Router"][..],
            "invalid plugin name \"My_Router\"",
        ),
        (
            &["plugin", "new", "--role", "router", "self"][..],
            "reserved Rust name",
        ),
        (
            &["plugin", "new", "--role", "storage", "x"][..],
            "invalid value 'storage' for '--role <ROLE>'",
        ),
        (
            &[
                "plugin",
                "new",
                "--role",
                "router",
                "x",
                "--dir",
                "no/such/parent/x",
            ][..],
            "parent directory does not exist",
        ),
    ] {
        let out = payproxy(args, root.path());
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // Nothing was created for the refused names.
    let left: Vec<_> = std::fs::read_dir(root.path())
        .expect("read")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, ["taken"]);
}

#[test]
fn plugin_test_refuses_bad_input_with_a_message() {
    let root = tempfile::tempdir().expect("temp dir");
    let not_wasm = root.path().join("x.wasm");
    std::fs::write(&not_wasm, "hello").expect("write");
    let fixtures = root.path().join("f.json");
    std::fs::write(&fixtures, "{\"check\": []}").expect("write");
    let p = |path: &Path| path.to_string_lossy().into_owned();
    for (args, message) in [
        (
            vec![
                "plugin",
                "test",
                "missing.wasm",
                "--fixtures",
                &p(&fixtures),
            ],
            "missing.wasm",
        ),
        (
            vec!["plugin", "test", &p(&not_wasm), "--fixtures", &p(&fixtures)],
            "not a WebAssembly file",
        ),
        (
            vec!["plugin", "test", &p(&not_wasm), "--fixtures", "nowhere"],
            "nowhere",
        ),
    ] {
        // No compile cache: a test writes nothing outside its temporary directory.
        let args = [&args[..], &["--no-cache"]].concat();
        let out = payproxy(&args, root.path());
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}
