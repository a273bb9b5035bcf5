//! `payproxy plugin new --role ROLE NAME`: a plugin crate that builds, passes its native
//! tests and passes `payproxy plugin test` on its own fixtures as generated.

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context as _};
use serde_json::Value;

/// The roles `plugin new` scaffolds, each against the newest contract the SDK exports for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NewRole {
    /// Router, contract 0.4.0 (`export_router_v4!`): picks providers by country.
    Router,
    /// Compliance, contract 0.4.0 (`export_compliance!`): amount limits, blocked countries.
    Compliance,
    /// Two-sided dialect, contract 0.4.0 (`export_storefront_dialect!`): storefront and
    /// provider side of a tiny JSON API.
    Dialect,
    /// Provider-side dialect only (`export_egress_v4!`): a tiny JSON payments API.
    Egress,
}

struct Template {
    lib: &'static str,
    fixtures: &'static [&'static str],
    check: &'static str,
    config_role: &'static str,
    role_title: &'static str,
    contract: &'static str,
    summary: &'static str,
    config_doc: &'static str,
    config_example: &'static str,
}

const EGRESS_PART: &str = include_str!("templates/egress_part.rs.tmpl");
const EGRESS_FIXTURES: &str = include_str!("templates/egress.json.tmpl");

impl NewRole {
    fn template(self) -> Template {
        match self {
            NewRole::Router => Template {
                lib: include_str!("templates/router.rs.tmpl"),
                fixtures: &[include_str!("templates/router.json.tmpl")],
                check: "check_router_v3",
                config_role: "router",
                role_title: "router",
                contract: "contract 0.4.0",
                summary: "Orders a route's providers by the payment's country (or the \
                          `x-shopper-country` header) and rejects blocked countries.",
                config_doc: "- `countries`: country code → provider names tried first, in order \
                             (names must be configured providers)\n- `blocked`: country codes \
                             rejected with 403 `country_blocked`",
                config_example: r#"{"countries": {"DE": ["eu-1"]}, "blocked": ["KP"]}"#,
            },
            NewRole::Compliance => Template {
                lib: include_str!("templates/compliance.rs.tmpl"),
                fixtures: &[include_str!("templates/compliance.json.tmpl")],
                check: "check_compliance",
                config_role: "compliance",
                role_title: "compliance",
                contract: "contract 0.4.0",
                summary: "Denies payments above a per-currency limit and payments from blocked \
                          countries; allows the rest.",
                config_doc: "- `max_amount`: currency → largest amount allowed, in minor units\n\
                             - `blocked_countries`: country codes denied with `country_blocked`",
                config_example: r#"{"max_amount": {"EUR": 100000}, "blocked_countries": ["KP"]}"#,
            },
            NewRole::Dialect => Template {
                lib: include_str!("templates/dialect.rs.tmpl"),
                fixtures: &[include_str!("templates/dialect.json.tmpl"), EGRESS_FIXTURES],
                check: "check_storefront",
                config_role: "dialect",
                role_title: "dialect",
                contract: "contract 0.4.0, storefront and egress",
                summary: "Both sides of a tiny JSON payments API: storefronts `POST /payments`, \
                          providers take `POST /charges`.",
                config_doc:
                    "- `currencies`: the currencies a storefront may pay in (absent: any)\n\
                             - providers' `credentials`: `api_key`",
                config_example: r#"{"currencies": ["EUR", "USD"]}"#,
            },
            NewRole::Egress => Template {
                lib: include_str!("templates/egress.rs.tmpl"),
                fixtures: &[EGRESS_FIXTURES],
                check: "check_egress",
                config_role: "dialect",
                role_title: "provider dialect (egress)",
                contract: "contract 0.4.0, provider side",
                summary: "The provider side of a tiny JSON payments API (`POST /charges`).",
                config_doc: "No settings (`{}`); providers' `credentials`: `api_key`.",
                config_example: "{}",
            },
        }
    }
}

/// Rust keywords and names a crate cannot take.
const RESERVED: &[&str] = &[
    "as",
    "async",
    "await",
    "break",
    "const",
    "continue",
    "crate",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "fn",
    "for",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "match",
    "mod",
    "move",
    "mut",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "type",
    "unsafe",
    "use",
    "where",
    "while",
    "abstract",
    "become",
    "box",
    "do",
    "final",
    "macro",
    "override",
    "priv",
    "try",
    "typeof",
    "unsized",
    "virtual",
    "yield",
    "core",
    "std",
    "alloc",
    "proc_macro",
    "test",
];

/// `NAME` must be a crate name payproxy can also use as a file name: lower-case ASCII letters,
/// digits and single dashes, starting with a letter, at most 64 characters.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let shape = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && !name.contains("--")
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !shape {
        bail!(
            "invalid plugin name {name:?}: use lower-case letters, digits and single dashes, \
             starting with a letter (e.g. dialect-acme), at most 64 characters"
        );
    }
    if RESERVED.contains(&name.replace('-', "_").as_str()) {
        bail!("invalid plugin name {name:?}: it is a reserved Rust name");
    }
    Ok(())
}

/// `dialect-acme` → `DialectAcme`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// `to` relative to the directory `from` (both absolute, lexically normalised).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut path = PathBuf::new();
    for _ in common..from.len() {
        path.push("..");
    }
    for part in &to[common..] {
        path.push(part);
    }
    path
}

/// The SDK the new crate depends on, and whether the crate is in the SDK's checkout: `--sdk`,
/// else the `plugin-sdk/` of the payproxy checkout the new crate is created in, else the one
/// payproxy was built from. A path dependency in every case: the SDK is not published to a
/// registry (it generates its bindings from the checkout's `wit/`).
fn find_sdk(sdk: Option<&Path>, parent: &Path) -> anyhow::Result<(PathBuf, bool)> {
    let is_sdk = |dir: &Path| {
        std::fs::read_to_string(dir.join("Cargo.toml"))
            .is_ok_and(|t| t.contains("name = \"payproxy-plugin-sdk\""))
    };
    let found = match sdk {
        Some(sdk) => {
            let sdk =
                std::fs::canonicalize(sdk).with_context(|| format!("--sdk {}", sdk.display()))?;
            if !is_sdk(&sdk) {
                bail!("--sdk {}: not the payproxy-plugin-sdk crate", sdk.display());
            }
            sdk
        }
        None => parent
            .ancestors()
            .map(|dir| dir.join("plugin-sdk"))
            .chain([Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk")])
            .find(|dir| is_sdk(dir))
            .and_then(|dir| std::fs::canonicalize(dir).ok())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "cannot find payproxy-plugin-sdk: create the plugin inside a payproxy \
                     checkout or name the SDK with --sdk PATH/TO/plugin-sdk"
                )
            })?,
    };
    let same_checkout = found.parent().is_some_and(|root| parent.starts_with(root));
    Ok((found, same_checkout))
}

/// The directory of the cargo workspace `dir` is in, if any (a `Cargo.toml` with a
/// `[workspace]` table in `dir` or above).
fn enclosing_workspace(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| {
            std::fs::read_to_string(d.join("Cargo.toml"))
                .is_ok_and(|t| t.lines().any(|l| l.trim() == "[workspace]"))
        })
        .map(Path::to_path_buf)
}

fn fill(template: &str, values: &[(&str, &str)]) -> String {
    values
        .iter()
        .fold(template.to_string(), |text, (key, value)| {
            text.replace(&format!("{{{{{key}}}}}"), value)
        })
}

/// The fixture file: the role's fixture templates merged (the first one's keys win).
fn fixtures(parts: &[&str]) -> anyhow::Result<String> {
    let mut merged = serde_json::Map::new();
    for part in parts {
        let Value::Object(map) = serde_json::from_str(part).context("fixture template")? else {
            bail!("fixture template is not a JSON object");
        };
        for (key, value) in map {
            merged.entry(key).or_insert(value);
        }
    }
    Ok(serde_json::to_string_pretty(&Value::Object(merged))? + "\n")
}

/// What `plugin new` created, for its summary.
pub struct Created {
    /// The crate's directory.
    pub dir: PathBuf,
    /// What the user should do next.
    pub notes: Vec<String>,
}

/// Create the crate `name` for `role` in `dir` (default `./NAME`), which must not exist.
pub fn create(
    role: NewRole,
    name: &str,
    dir: Option<&Path>,
    sdk: Option<&Path>,
) -> anyhow::Result<Created> {
    check_name(name)?;
    let dir = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(name));
    if std::fs::symlink_metadata(&dir).is_ok() {
        bail!("{} already exists: choose another --dir", dir.display());
    }
    let cwd = std::env::current_dir().context("the current directory")?;
    let absolute = cwd.join(&dir);
    let parent = absolute
        .parent()
        .filter(|p| p.is_dir())
        .ok_or_else(|| anyhow::anyhow!("{}: its parent directory does not exist", dir.display()))?;
    let parent = std::fs::canonicalize(parent).context("the parent directory")?;
    let Some(leaf) = absolute.file_name() else {
        bail!("{}: not a directory name", dir.display());
    };
    let target = parent.join(leaf);
    let (sdk, same_checkout) = find_sdk(sdk, &parent)?;
    let workspace = enclosing_workspace(&parent);
    let template = role.template();
    let crate_name = name.replace('-', "_");
    let type_name = type_name(name);
    // Relative inside the SDK's checkout (it moves with it), absolute elsewhere.
    let sdk_path = if same_checkout {
        relative(&target, &sdk)
    } else {
        sdk
    }
    .display()
    .to_string();
    let standalone = match &workspace {
        Some(_) => String::new(),
        None => include_str!("templates/standalone.toml.tmpl").to_string(),
    };
    let fixtures = fixtures(template.fixtures)?;
    let cases = serde_json::from_str::<Value>(&fixtures)?
        .as_object()
        .map(|m| {
            m.values()
                .filter_map(Value::as_array)
                .map(Vec::len)
                .sum::<usize>()
        })
        .unwrap_or(0)
        .to_string();
    let values = [
        ("egress_part", EGRESS_PART.trim_end()),
        ("name", name),
        ("crate", &crate_name),
        ("Type", &type_name),
        ("sdk", &sdk_path),
        ("standalone", standalone.trim_end()),
        ("check", template.check),
        ("min_cases", &cases),
        ("config_role", template.config_role),
        ("role_title", template.role_title),
        ("contract", template.contract),
        ("summary", template.summary),
        ("config_doc", template.config_doc),
        ("config_example", template.config_example),
    ];
    let files = [
        (
            "Cargo.toml",
            fill(include_str!("templates/Cargo.toml.tmpl"), &values),
        ),
        ("src/lib.rs", fill(template.lib, &values)),
        (
            "tests/golden.rs",
            fill(include_str!("templates/golden.rs.tmpl"), &values),
        ),
        ("fixtures/golden.json", fixtures),
        (
            "README.md",
            fill(include_str!("templates/README.md.tmpl"), &values),
        ),
        (".gitignore", "/target\n".to_string()),
    ];
    // Created whole or not at all: a failure halfway removes what was written.
    std::fs::create_dir(&target).with_context(|| format!("create {}", dir.display()))?;
    let written = files.iter().try_for_each(|(path, text)| {
        let path = target.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text)
    });
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&target);
        bail!("writing {}: {e}", dir.display());
    }
    // Formatted like `cargo fmt` would, when rustfmt is installed (the sources compile either
    // way; a formatter that is missing or fails only leaves the template's layout).
    let _ = std::process::Command::new("rustfmt")
        .args(["--edition", "2021", "src/lib.rs", "tests/golden.rs"])
        .current_dir(&target)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    let mut notes = Vec::new();
    if let Some(ws) = workspace {
        notes.push(format!(
            "it is inside the cargo workspace {}: its `members` must include it \
             (plugins/ takes router-*, dialect-* and compliance-* by pattern)",
            ws.display()
        ));
    }
    Ok(Created { dir, notes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["dialect-acme", "r2", "my-router-2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "", "Dialect", "2fa", "a--b", "a-", "a_b", "a b", "self", "x/y", "../x",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn a_standalone_plugin_builds_with_the_first_party_plugins_release_profile() {
        // The settings of `[profile.release]` (comments and blank lines aside): a standalone
        // plugin gets the speed and size the first-party plugins were measured with.
        fn release_profile(toml: &str) -> Vec<&str> {
            toml.lines()
                .skip_while(|l| l.trim() != "[profile.release]")
                .skip(1)
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .take_while(|l| !l.starts_with('['))
                .collect()
        }
        let plugins = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/Cargo.toml"),
        )
        .expect("plugins/Cargo.toml");
        let template = include_str!("templates/standalone.toml.tmpl");
        assert!(release_profile(&plugins).contains(&"opt-level = 3"));
        assert_eq!(release_profile(template), release_profile(&plugins));
    }

    #[test]
    fn type_names_and_relative_paths() {
        assert_eq!(type_name("dialect-acme-2"), "DialectAcme2");
        assert_eq!(
            relative(Path::new("/w/plugins/x"), Path::new("/w/plugin-sdk")),
            PathBuf::from("../../plugin-sdk")
        );
    }

    #[test]
    fn every_template_is_filled_and_its_fixtures_are_json() {
        for role in [
            NewRole::Router,
            NewRole::Compliance,
            NewRole::Dialect,
            NewRole::Egress,
        ] {
            let t = role.template();
            let text = fixtures(t.fixtures).expect("fixtures");
            assert!(text.len() > 100);
            let lib = fill(
                t.lib,
                &[("egress_part", EGRESS_PART), ("Type", "X"), ("name", "x")],
            );
            let left: Vec<&str> = lib
                .match_indices("{{")
                .map(|(i, _)| &lib[i..i + 12])
                .collect();
            assert!(left.is_empty(), "{role:?}: unfilled {left:?}");
        }
    }
}
