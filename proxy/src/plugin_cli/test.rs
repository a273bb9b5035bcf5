//! `payproxy plugin test PLUGIN.wasm --fixtures FILE_OR_DIR`: a plugin's golden fixtures run
//! through the host (the same compile, sandbox, limits and output checks as `payproxy run`),
//! one line per case, a line diff of expected and actual for each failure.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use payproxy_plugin_sdk::testing::{self, CaseFailure};
use serde_json::Value;

use crate::config::{PluginHostConfig, Role};
use crate::files;
use crate::plugin::fixtures::{role_of, Loaded};
use crate::plugin::PluginHost;

/// What `plugin test` was asked.
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// The component.
    pub plugin: PathBuf,
    /// A fixture file, or a directory of them.
    pub fixtures: PathBuf,
    /// A JSON file whose content replaces every fixture file's `config`.
    pub config: Option<PathBuf>,
    /// The role to load the plugin as (default: the role its exports implement).
    pub role: Option<Role>,
    /// The compile cache directory (`None`: compile every time).
    pub cache_dir: Option<PathBuf>,
    /// CPU time per call in milliseconds (default: `plugin_host.deadline_ms`, 20).
    pub deadline_ms: Option<u64>,
    /// Memory cap per instance in MiB (default: `plugin_host.memory_mb`, 32).
    pub memory_mb: Option<u32>,
}

/// The outcome of a run: what to print and whether every case passed.
pub struct TestRun {
    /// The report, one line per case.
    pub report: String,
    /// Every case passed (and there was at least one).
    pub passed: bool,
}

/// The default compile cache: `$XDG_CACHE_HOME/payproxy/plugin-cache`, else
/// `$HOME/.cache/payproxy/plugin-cache`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .map(|home| PathBuf::from(home).join(".cache"))
        })?;
    Some(base.join("payproxy/plugin-cache"))
}

/// The fixture files to run: `path` itself, or the `*.json` files of a directory (sorted).
fn fixture_files(path: &Path) -> anyhow::Result<(Vec<PathBuf>, bool)> {
    let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    if !meta.is_dir() {
        return Ok((vec![path.to_path_buf()], false));
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(path).with_context(|| format!("{}", path.display()))? {
        let entry = entry.with_context(|| format!("{}", path.display()))?;
        let file = entry.path();
        if file.extension().is_some_and(|e| e == "json") && file.is_file() {
            found.push(file);
        }
    }
    found.sort();
    if found.is_empty() {
        anyhow::bail!("{}: no *.json fixture files", path.display());
    }
    Ok((found, true))
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text =
        files::read_to_string(path, files::JSON).with_context(|| path.display().to_string())?;
    serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}:{}:{}: not JSON: {e}",
            path.display(),
            e.line(),
            e.column()
        )
    })
}

/// Run the fixtures. `Err` only when nothing could be run (the plugin does not load, a file
/// cannot be read); failing cases and fixture files the plugin cannot run are in the report.
pub fn run(options: &TestOptions) -> anyhow::Result<TestRun> {
    let started = Instant::now();
    let (files_to_run, scanned) = fixture_files(&options.fixtures)?;
    let config_override = match &options.config {
        Some(path) => Some(read_json(path)?.to_string()),
        None => None,
    };
    let bytes = files::read(&options.plugin, files::COMPONENT)
        .with_context(|| options.plugin.display().to_string())?;
    let defaults = PluginHostConfig::default();
    let memory_mb = options.memory_mb.unwrap_or(defaults.memory_mb);
    let limits = PluginHostConfig {
        deadline_ms: options.deadline_ms.unwrap_or(defaults.deadline_ms),
        memory_mb,
        // The pool must hold an instance of the cap asked for.
        max_memory_mb: defaults.max_memory_mb.max(memory_mb),
        ..defaults
    };
    let host = PluginHost::with_cache(&limits, options.cache_dir.as_deref())?;
    let compiled = host
        .compile(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", options.plugin.display()))?;
    let role = match options.role {
        Some(role) => role,
        None => role_of(&host, &compiled.component).ok_or_else(|| {
            anyhow::anyhow!(
                "{}: implements no plugin role (router, compliance or dialect exports)",
                options.plugin.display()
            )
        })?,
    };
    let name = options
        .plugin
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".into());
    let mut report = format!(
        "{}: {} plugin, sha256 {}, ready in {} ms; limits: {} ms CPU per call, {} MiB\n",
        options.plugin.display(),
        role.as_str(),
        &compiled.sha256[..12],
        started.elapsed().as_millis(),
        limits.deadline_ms,
        limits.memory_mb
    );
    let (mut passed, mut failed, mut broken) = (0usize, 0usize, 0usize);
    for file in &files_to_run {
        let fixtures = match read_json(file) {
            Ok(v) => v,
            Err(e) => {
                let _ = writeln!(report, "\n{file}\n  ERROR {e:#}", file = file.display());
                broken += 1;
                continue;
            }
        };
        let has_sections = fixtures
            .as_object()
            .is_some_and(|m| m.keys().any(|k| testing::ALL.contains(&k.as_str())));
        if scanned && !has_sections {
            let _ = writeln!(
                report,
                "\n{}: skipped (no fixture sections)",
                file.display()
            );
            continue;
        }
        let config = config_override
            .clone()
            .unwrap_or_else(|| testing::config_text(&fixtures));
        let loaded = Loaded::load(&host, &name, &compiled, role, config, &fixtures, &limits);
        let results = loaded.and_then(|plugin| {
            let header = format!("{} as {}", file.display(), plugin.describe());
            plugin.run(&fixtures).map(|r| (header, r))
        });
        match results {
            Err(e) => {
                let _ = writeln!(report, "\n{}\n  ERROR {e}", file.display());
                broken += 1;
            }
            Ok((header, cases)) => {
                let _ = writeln!(report, "\n{header}");
                if cases.is_empty() {
                    let _ = writeln!(report, "  ERROR no cases");
                    broken += 1;
                }
                for case in cases {
                    match &case.result {
                        Ok(()) => {
                            passed += 1;
                            let _ = writeln!(report, "  ok    {} {}", case.section, case.name);
                        }
                        Err(failure) => {
                            failed += 1;
                            let _ = writeln!(report, "  FAIL  {} {}", case.section, case.name);
                            report.push_str(&explain(failure));
                        }
                    }
                }
            }
        }
    }
    let _ = writeln!(
        report,
        "\n{passed} passed, {failed} failed{} ({} ms)",
        if broken > 0 {
            format!(", {broken} fixture file(s) not run")
        } else {
            String::new()
        },
        started.elapsed().as_millis()
    );
    Ok(TestRun {
        report,
        passed: failed == 0 && broken == 0 && passed > 0,
    })
}

/// A failure's message, then a line diff of what the fixture expects (`-`) and what the
/// plugin answered (`+`), both pretty-printed JSON, indented under the case.
pub fn explain(failure: &CaseFailure) -> String {
    let mut out = format!("        {}\n", failure.message);
    if let (Some(expected), Some(actual)) = (&failure.expected, &failure.actual) {
        let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
        let (expected, actual) = (pretty(expected), pretty(actual));
        let diff = similar::TextDiff::from_lines(&expected, &actual);
        out.push_str("        --- expected\n        +++ actual\n");
        // The changed lines with three lines of context around each change.
        for (i, group) in diff.grouped_ops(3).iter().enumerate() {
            if i > 0 {
                out.push_str("        ...\n");
            }
            for change in group.iter().flat_map(|op| diff.iter_changes(op)) {
                let sign = match change.tag() {
                    similar::ChangeTag::Delete => '-',
                    similar::ChangeTag::Insert => '+',
                    similar::ChangeTag::Equal => ' ',
                };
                let _ = write!(out, "        {sign}{}", change.value());
                if change.missing_newline() {
                    out.push('\n');
                }
            }
        }
    }
    out
}
