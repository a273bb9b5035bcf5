//! Every first-party plugin's golden fixtures, found by convention and run through its wasm
//! build by the real `payproxy plugin test` — the same files its native tests run.
//!
//! The convention: a crate directly under `plugins/` (the test fixture plugins under
//! `plugins/fixtures/` are not first-party plugins) with a `fixtures/` directory; its
//! component is `plugins/target/wasm32-wasip2/release/<crate_name>.wasm`
//! (`scripts/build-plugins.sh`); every fixture file in `fixtures/` runs. A new plugin's
//! fixtures run without editing this file.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use payproxy::config::{PluginHostConfig, Role};
use payproxy::plugin::fixtures::Loaded;
use payproxy_plugin_sdk::testing;
use serde_json::Value;

/// Fewest plugins and cases, so that losing a plugin's fixtures (a moved directory, a
/// renamed crate) cannot make the test pass: the counts when they were last raised.
const MIN_PLUGINS: usize = 11;
const MIN_CASES: usize = 499;

fn plugins_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins")
}

/// A crate's package name, from its `Cargo.toml`.
fn package_name(manifest: &Path) -> Option<String> {
    let text = std::fs::read_to_string(manifest).ok()?;
    let package = text.split("[package]").nth(1)?;
    package.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "name").then(|| value.trim().trim_matches('"').to_string())
    })
}

/// The first-party plugins with fixtures: (crate directory, wasm file name stem).
fn first_party() -> Vec<(PathBuf, String)> {
    let mut found: Vec<(PathBuf, String)> = std::fs::read_dir(plugins_dir())
        .expect("plugins/")
        .map(|entry| entry.expect("plugins/ entry").path())
        .filter(|dir| dir.join("fixtures").is_dir())
        .filter_map(|dir| {
            let name = package_name(&dir.join("Cargo.toml"))?;
            Some((dir, name.replace('-', "_")))
        })
        .collect();
    found.sort();
    found
}

/// The cases of the fixture files of `dir`, by file and section: what must run.
fn cases_in(dir: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("fixtures/") {
        let path = entry.expect("fixtures/ entry").path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("fixture file");
        let fixtures: Value = serde_json::from_str(&text).expect("fixture file is JSON");
        for section in testing::ALL {
            if let Some(cases) = fixtures[section].as_array() {
                *counts.entry(section.to_string()).or_default() += cases.len();
            }
        }
    }
    counts
}

#[test]
fn first_party_fixtures_pass_through_payproxy_plugin_test() {
    let plugins = first_party();
    assert!(
        plugins.len() >= MIN_PLUGINS,
        "only {} plugins with fixtures in {}",
        plugins.len(),
        plugins_dir().display()
    );
    // Kept between runs: the second run loads compiled plugins instead of compiling them.
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-test-cache");
    let mut total = 0;
    let mut failures = Vec::new();
    for (dir, wasm_name) in &plugins {
        let fixtures = dir.join("fixtures");
        let output = Command::new(env!("CARGO_BIN_EXE_payproxy"))
            .args(["plugin", "test"])
            .arg(wasm(wasm_name))
            .arg("--fixtures")
            .arg(&fixtures)
            .arg("--cache-dir")
            .arg(&cache)
            .env("PAYPROXY_LOG", "off")
            .output()
            .expect("run payproxy plugin test");
        let stdout = String::from_utf8_lossy(&output.stdout);
        // Every case of every fixture file ran and passed, section by section.
        let mut ran: BTreeMap<String, usize> = BTreeMap::new();
        for line in stdout.lines() {
            if let Some(rest) = line.strip_prefix("  ok    ") {
                let section = rest.split(' ').next().unwrap_or_default();
                *ran.entry(section.to_string()).or_default() += 1;
            }
        }
        let expected = cases_in(&fixtures);
        total += ran.values().sum::<usize>();
        if !output.status.success() || ran != expected {
            failures.push(format!(
                "{}: exit {:?}, cases passed by section {ran:?}, in the files {expected:?}\n{stdout}{}",
                dir.display(),
                output.status.code(),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(total >= MIN_CASES, "{total} cases ran, want ≥ {MIN_CASES}");
}

/// The Stripe fixtures' sections that contract 0.2.0 answers, with their minimum counts.
const STRIPE_PAYMENT_SECTIONS: [(&str, usize); 4] = [
    ("render", 19),
    ("refusals", 13),
    ("encode", 19),
    ("decode", 26),
];

/// The same Stripe logic exported through contract 0.2.0 (`plugins/fixtures/stripe-v2`):
/// a 0.2.0 ingress still loads and answers payment calls; the 0.4.0-only sections are not
/// its to answer.
#[test]
fn dialect_stripe_through_the_0_2_0_contract() {
    let path = plugins_dir().join("dialect-stripe/fixtures/golden.json");
    let text = std::fs::read_to_string(&path).expect("stripe fixtures");
    let mut fixtures = testing::load(&text);
    // Payment calls only: lists and forwards are 0.4.0's (a 0.2.0 ingress refuses them).
    let payment_call = |case: &Value| {
        let call = &case["call"];
        let request = &case["request"];
        let list = request["method"] == "GET" && request["path"] == "/v1/payment_intents";
        (call.is_null() || call.get("Payment").is_some()) && !list
    };
    let parse = fixtures["parse"].as_array_mut().expect("parse cases");
    parse.retain(payment_call);
    // Values 0.2.0 cannot carry (an `other` method, a confirm-on-device next action) reach a
    // 0.2.0 ingress downgraded (no method, pending): those cases are 0.4.0's.
    let expressible = |case: &Value| {
        let text = case.to_string();
        !text.contains("\"Other\"") && !text.contains("ConfirmOnDevice")
    };
    for section in ["parse", "render"] {
        if let Some(cases) = fixtures[section].as_array_mut() {
            cases.retain(expressible);
        }
    }
    // Drop the 0.4.0-only sections: each would fail here, and none has a minimum below.
    if let Value::Object(sections) = &mut fixtures {
        sections.retain(|name, _| {
            !testing::ALL.contains(&name.as_str())
                || name == "parse"
                || STRIPE_PAYMENT_SECTIONS.iter().any(|(s, _)| s == name)
        });
    }
    let host = host();
    let bytes = std::fs::read(wasm("fixture_stripe_v2")).expect("read wasm");
    let compiled = host.compile(&bytes).expect("compiles");
    let plugin = Loaded::load(
        &host,
        "fixture_stripe_v2",
        &compiled,
        Role::Dialect,
        testing::config_text(&fixtures),
        &fixtures,
        &PluginHostConfig::default(),
    )
    .expect("a 0.2.0 dialect loads");
    assert_eq!(plugin.describe(), "dialect (storefront 0.2.0, egress)");
    let reports = plugin.run(&fixtures).expect("runs");
    let failed: Vec<String> = reports
        .iter()
        .filter_map(|r| r.result.as_ref().err().map(|f| f.to_string()))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    let mut minimums = vec![("parse", 37)];
    minimums.extend(STRIPE_PAYMENT_SECTIONS);
    for (section, min) in minimums {
        let n = reports.iter().filter(|r| r.section == section).count();
        assert!(n >= min, "section `{section}`: {n} cases, want ≥ {min}");
    }
}

/// A fixture file the plugin cannot run as a whole is an error, not a silent skip: a section
/// of another role, a misspelt section. A case whose input the contract cannot hold fails.
#[test]
fn fixture_files_a_plugin_cannot_run_fail_loudly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    for (file, text, message) in [
        (
            "other-role.json",
            r#"{"encode": [{"name": "x", "payment": {}, "request": {}}]}"#,
            "section `encode` is not for this plugin, a compliance (contract 0.4.0)",
        ),
        (
            "misspelt.json",
            r#"{"chek": [{"name": "x"}]}"#,
            "unknown key `chek`",
        ),
        (
            "bad-input.json",
            r#"{"check": [{"name": "no payment", "payment": 7, "decision": {"verdict": "Allow"}}]}"#,
            "FAIL  check no payment",
        ),
    ] {
        let path = write(file, text);
        let output = Command::new(env!("CARGO_BIN_EXE_payproxy"))
            .args(["plugin", "test"])
            .arg(wasm("compliance_kyc"))
            .arg("--fixtures")
            .arg(&path)
            .arg("--no-cache")
            .env("PAYPROXY_LOG", "off")
            .output()
            .expect("run payproxy plugin test");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(1), "{file}: {stdout}");
        assert!(stdout.contains(message), "{file}: {stdout}");
    }
}

/// `plugin test` runs under the host's limits and output checks: a plugin that loops, hoards
/// memory, traps or answers garbage fails its case with the host's reason, and one whose
/// `init` rejects its config fails its fixture file.
#[test]
fn plugin_test_applies_the_sandbox_limits() {
    let dir = tempfile::tempdir().expect("temp dir");
    for mode in ["loop", "memory", "trap", "garbage", "init-error", "ok"] {
        let fixtures = serde_json::json!({
            "config": { "mode": mode },
            "route": [{
                "name": format!("{mode} routes to a"),
                "request": { "method": "GET", "path": "/", "query": null, "headers": [] },
                "payment": null,
                "providers": [{ "name": "a", "region": "eu", "tags": [], "cost": 1.0, "dialect": "",
                    "health": { "success_rate": 1.0, "latency_p50_ms": 0, "latency_p99_ms": 0, "breaker": "Closed" } }],
                "providers_out": ["a"]
            }]
        });
        std::fs::write(
            dir.path().join(format!("{mode}.json")),
            fixtures.to_string(),
        )
        .expect("write");
    }
    let output = Command::new(env!("CARGO_BIN_EXE_payproxy"))
        .args(["plugin", "test"])
        .arg(wasm("fixture_hostile"))
        .arg("--fixtures")
        .arg(dir.path())
        .args(["--no-cache", "--deadline-ms", "30", "--memory-mb", "16"])
        .env("PAYPROXY_LOG", "off")
        .output()
        .expect("run payproxy plugin test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    for expected in [
        "limits: 30 ms CPU per call, 16 MiB",
        "the call failed: plugin fixture_hostile: deadline: exceeded its 30 ms CPU deadline",
        "memory cap reached",
        "trap: ",
        "which this route does not have",
        "config rejected by the plugin: hostile fixture refuses this config",
        "  ok    route ok routes to a",
        "1 passed, 4 failed, 1 fixture file(s) not run",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in\n{stdout}"
        );
    }
}
