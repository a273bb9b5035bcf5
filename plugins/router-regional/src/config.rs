//! The rule table, parsed from the plugin's JSON config.

use std::collections::BTreeMap;

use payproxy_plugin_sdk::Rejection;
use serde::Deserialize;

/// The whole plugin config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Rules, tried in order.
    pub rules: Vec<Rule>,
    /// Providers when no rule matches; `None` means the route's own order.
    pub default: Option<Vec<String>>,
}

/// One rule: conditions and what to do when they all hold.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Name used in error messages.
    pub name: String,
    /// All must hold.
    pub conditions: Conditions,
    /// What the rule decides.
    pub action: Action,
}

/// What a matching rule decides.
#[derive(Debug, Clone)]
pub enum Action {
    /// Try these providers (weighted pick first).
    Providers(Vec<WeightedProvider>),
    /// Answer the storefront with this rejection.
    Reject(Rejection),
}

/// A provider name with an optional volume-split weight.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedProvider {
    /// Provider name as in the proxy config.
    pub name: String,
    /// Share of first attempts; providers without weight are only fallbacks.
    #[serde(default)]
    pub weight: Option<u32>,
}

impl WeightedProvider {
    /// A provider without weight.
    pub fn unweighted(name: impl AsRef<str>) -> Self {
        WeightedProvider {
            name: name.as_ref().to_string(),
            weight: None,
        }
    }
}

/// Conditions of a rule; every present condition must hold. Value lists are alternatives.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    /// Upper-case HTTP methods.
    #[serde(default)]
    pub method: Option<Vec<String>>,
    /// Path prefixes.
    #[serde(default)]
    pub path_prefix: Option<Vec<String>>,
    /// Header name → accepted values (ASCII case-insensitive).
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<String>>,
    /// Dotted JSON body path → accepted values (strings case-insensitive; numbers and booleans
    /// compared by their JSON text).
    #[serde(default)]
    pub body: BTreeMap<String, Vec<serde_json::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    default: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    #[serde(default, rename = "match")]
    conditions: Conditions,
    #[serde(default)]
    providers: Option<Vec<WeightedProvider>>,
    #[serde(default)]
    reject: Option<RawRejection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRejection {
    status: u16,
    code: String,
    message: String,
}

impl Config {
    /// Parse and validate the JSON config; errors name the rule and field.
    pub fn parse(text: &str) -> Result<Config, String> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            // The host re-serialises the config, so serde's line/column would mislead.
            let message = e.inner().to_string();
            let message = message.split(" at line ").next().unwrap_or_default().to_string();
            format!("router-regional config: {path}: {message}")
        })?;
        let mut rules = Vec::with_capacity(raw.rules.len());
        for (index, rule) in raw.rules.into_iter().enumerate() {
            let at = format!("rules[{index}] ({})", rule.name);
            let action = match (rule.providers, rule.reject) {
                (Some(list), None) => {
                    if list.is_empty() {
                        return Err(format!("{at}: providers must not be empty"));
                    }
                    Action::Providers(list)
                }
                (None, Some(r)) => {
                    if !(400..=599).contains(&r.status) {
                        return Err(format!("{at}: reject.status {} is not 400..=599", r.status));
                    }
                    Action::Reject(Rejection::new(r.status, r.code, r.message))
                }
                _ => return Err(format!("{at}: exactly one of providers or reject is required")),
            };
            let mut conditions = rule.conditions;
            conditions.headers = conditions
                .headers
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect();
            rules.push(Rule {
                name: rule.name,
                conditions,
                action,
            });
        }
        if raw.default.as_ref().is_some_and(|d| d.is_empty()) {
            return Err("default: must not be empty (omit it to use the route's order)".into());
        }
        Ok(Config {
            rules,
            default: raw.default,
        })
    }
}
