//! Golden tests for `payproxy check`: each `tests/golden/check/NAME.json` is a config, and
//! `NAME.expected` is what the real binary prints for it. Cases named `ok_*` must pass
//! (exit 0, summary on stdout); every other case must fail (exit 1, message on stderr).
//!
//! The absolute golden directory is written `<dir>` and config hashes `<hash>`, so the files
//! are the same in every clone and after plugins are rebuilt. `UPDATE_GOLDEN=1` rewrites
//! the `.expected` files from the current output.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Fewest cases the directory must hold, so losing files cannot make the test pass.
const MIN_CASES: usize = 20;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/check")
}

/// Replace what differs between machines and builds with placeholders.
fn normalise(output: &str, dir: &Path, summary: bool) -> String {
    let text = output.replace(&dir.display().to_string(), "<dir>");
    // The summary ends `hash 0123456789ab)`; the hash covers the plugin bytes too.
    match text.rfind("hash ") {
        Some(i) if summary && text.len() >= i + 5 + 12 => {
            format!("{}hash <hash>{}", &text[..i], &text[i + 5 + 12..])
        }
        _ => text,
    }
}

/// Run `payproxy check` on one case; returns (what it printed, problems found).
fn run_case(config: &Path, dir: &Path) -> (String, Vec<String>) {
    let name = config.file_stem().unwrap().to_string_lossy().to_string();
    let expect_ok = name.starts_with("ok_");
    let output = Command::new(env!("CARGO_BIN_EXE_payproxy"))
        .arg("check")
        .arg("--config")
        .arg(config)
        // Only the command's own output: no log lines with timestamps.
        .env("PAYPROXY_LOG", "off")
        .output()
        .expect("run payproxy");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let mut problems = Vec::new();
    let (printed, other, want_code) = if expect_ok {
        (stdout, stderr, 0)
    } else {
        (stderr, stdout, 1)
    };
    if output.status.code() != Some(want_code) {
        problems.push(format!(
            "{name}: exit {:?}, want {want_code}",
            output.status.code()
        ));
    }
    if !other.is_empty() {
        problems.push(format!(
            "{name}: unexpected output on the other stream: {other:?}"
        ));
    }
    (normalise(&printed, dir, expect_ok), problems)
}

#[test]
fn check_output_matches_golden_files() {
    let dir = golden_dir();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut configs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    configs.sort();
    assert!(
        configs.len() >= MIN_CASES,
        "only {} cases in {}",
        configs.len(),
        dir.display()
    );
    assert!(configs
        .iter()
        .any(|c| c.file_stem().unwrap().to_string_lossy().starts_with("ok_")));

    let mut failures = Vec::new();
    for config in &configs {
        let (printed, problems) = run_case(config, &dir);
        failures.extend(problems);
        let expected_path = config.with_extension("expected");
        if update {
            std::fs::write(&expected_path, &printed).unwrap();
            continue;
        }
        match std::fs::read_to_string(&expected_path) {
            Ok(expected) if expected == printed => {}
            Ok(expected) => failures.push(format!(
                "{}:\n  expected: {expected:?}\n  actual:   {printed:?}",
                expected_path.display()
            )),
            Err(e) => failures.push(format!(
                "{}: {e} (run with UPDATE_GOLDEN=1)",
                expected_path.display()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
