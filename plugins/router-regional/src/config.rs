//! The rule table, parsed from the plugin's JSON config.

use std::collections::BTreeMap;

use payproxy_plugin_sdk::currency;
use payproxy_plugin_sdk::helpers::{config, country};
use payproxy_plugin_sdk::payment::{Operation, Refusal};
use payproxy_plugin_sdk::routing::ProviderInfo;
use serde::Deserialize;

/// The whole plugin config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Rules, tried in order.
    pub rules: Vec<Rule>,
    /// Providers when no rule matches (unweighted); `None` means the route's own order.
    pub default: Option<Vec<WeightedProvider>>,
    /// Among unweighted candidates whose success rates are within this of the best one,
    /// the cheapest goes first; `None` keeps the config order.
    pub prefer_cheaper_within: Option<f64>,
    /// Every header name a rule matches on (lower case, once each), so a request's headers
    /// are read in one pass whatever the number of rules.
    pub header_names: Vec<String>,
    /// Every top-level body key a rule's path starts with (once each), so the body is walked
    /// once keeping only those.
    pub body_keys: Vec<String>,
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
    Reject(Refusal),
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
    /// The provider's id (its index in the host's provider list), set by [`Config::resolve`].
    #[serde(skip)]
    pub id: u32,
}

impl WeightedProvider {
    /// A provider without weight.
    pub fn unweighted(name: impl AsRef<str>) -> Self {
        WeightedProvider {
            name: name.as_ref().to_string(),
            weight: None,
            id: 0,
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
    /// Canonical payment: shopper countries, ISO 3166-1 alpha-2 (stored upper case).
    #[serde(default)]
    pub country: Option<Vec<String>>,
    /// Canonical payment: ISO 4217 currencies (stored upper case).
    #[serde(default)]
    pub currency: Option<Vec<String>>,
    /// Canonical payment: method kinds (`card`, `ewallet`, `bank_redirect`,
    /// `instant_transfer`, `cash_voucher`) or wallet / scheme / network names (`dana`,
    /// `ideal`, `pix`, `visa`), stored lower case. Named apart from `method` (HTTP).
    #[serde(default)]
    pub payment_method: Option<Vec<String>>,
    /// Canonical payment: issuer countries of a card payment, ISO 3166-1 alpha-2 (stored upper
    /// case). The host fills the card's issuer country from the home provider's
    /// payment-method object before routing.
    #[serde(default)]
    pub card_country: Option<Vec<String>>,
    /// Canonical payment: networks of a card payment (`visa`, `mastercard`, `amex` …, stored
    /// lower case). The host fills the card's network from the home provider's
    /// payment-method object before routing.
    #[serde(default)]
    pub card_network: Option<Vec<String>>,
    /// Canonical payment: smallest amount, inclusive, in minor units of the one `currency`.
    #[serde(default)]
    pub amount_min: Option<i64>,
    /// Canonical payment: largest amount, inclusive, in minor units of the one `currency`.
    #[serde(default)]
    pub amount_max: Option<i64>,
    /// Canonical payment: operations.
    #[serde(default)]
    pub operation: Option<Vec<OperationName>>,
}

impl Conditions {
    /// True when a condition needs the canonical payment (no match on transparent routes).
    pub fn needs_payment(&self) -> bool {
        self.country.is_some()
            || self.currency.is_some()
            || self.payment_method.is_some()
            || self.card_country.is_some()
            || self.card_network.is_some()
            || self.amount_min.is_some()
            || self.amount_max.is_some()
            || self.operation.is_some()
    }
}

/// An operation as config names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperationName {
    /// `authorize`
    Authorize,
    /// `capture`
    Capture,
    /// `refund`
    Refund,
    /// `void`
    Void,
    /// `status`
    Status,
}

impl OperationName {
    /// True when this names `op`.
    pub fn is(self, op: Operation) -> bool {
        matches!(
            (self, op),
            (OperationName::Authorize, Operation::Authorize)
                | (OperationName::Capture, Operation::Capture)
                | (OperationName::Refund, Operation::Refund)
                | (OperationName::Void, Operation::Void)
                | (OperationName::Status, Operation::Status)
        )
    }
}

/// Method kinds of the canonical model, as config names them.
pub const METHOD_KINDS: &[&str] = &[
    "card",
    "ewallet",
    "bank_redirect",
    "instant_transfer",
    "cash_voucher",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    default: Option<Vec<String>>,
    #[serde(default)]
    prefer_cheaper_within: Option<f64>,
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
        let raw: RawConfig = config::from_json(text).map_err(|e| e.in_plugin("router-regional"))?;
        validate(raw).map_err(|e| format!("router-regional config: {e}"))
    }

    /// Give every provider a rule or `default` names its id in `providers` (the host's list of
    /// configured providers). A name that is not configured is a config error: it is a typo
    /// or a provider that was removed, and either would quietly send traffic elsewhere.
    pub fn resolve(&mut self, providers: &[ProviderInfo]) -> Result<(), String> {
        let lookup = |w: &mut WeightedProvider, at: &str| {
            let id = providers
                .iter()
                .position(|p| p.name == w.name)
                .ok_or_else(|| {
                    format!(
                        "router-regional config: {at}: provider {:?} is not configured",
                        w.name
                    )
                })?;
            w.id = u32::try_from(id).map_err(|_| "too many providers".to_string())?;
            Ok::<(), String>(())
        };
        for (index, rule) in self.rules.iter_mut().enumerate() {
            if let Action::Providers(list) = &mut rule.action {
                for (i, w) in list.iter_mut().enumerate() {
                    lookup(w, &format!("rules[{index}] ({}).providers[{i}]", rule.name))?;
                }
            }
        }
        for (i, w) in self.default.iter_mut().flatten().enumerate() {
            lookup(w, &format!("default[{i}]"))?;
        }
        Ok(())
    }
}

/// Each value once, in first-seen order.
fn distinct(values: impl Iterator<Item = String>) -> Vec<String> {
    let mut list: Vec<String> = Vec::new();
    for value in values {
        if !list.contains(&value) {
            list.push(value);
        }
    }
    list
}

fn validate(raw: RawConfig) -> Result<Config, String> {
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
                Action::Reject(Refusal::unroutable(r.status, &r.code, r.message))
            }
            _ => {
                return Err(format!(
                    "{at}: exactly one of providers or reject is required"
                ))
            }
        };
        let mut conditions = rule.conditions;
        conditions.headers = conditions
            .headers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        canonical(&mut conditions).map_err(|m| format!("{at}: match.{m}"))?;
        rules.push(Rule {
            name: rule.name,
            conditions,
            action,
        });
    }
    if raw.default.as_ref().is_some_and(|d| d.is_empty()) {
        return Err("default: must not be empty (omit it to use the route's order)".into());
    }
    if let Some(t) = raw.prefer_cheaper_within {
        if !(0.0..=1.0).contains(&t) {
            return Err("prefer_cheaper_within: must be between 0 and 1 \
                        (a difference in success rate: 0.02 = 2 points)"
                .into());
        }
    }
    let header_names = distinct(
        rules
            .iter()
            .flat_map(|r| r.conditions.headers.keys().cloned()),
    );
    let body_keys = distinct(rules.iter().flat_map(|r| {
        let paths = r.conditions.body.keys();
        paths.map(|path| path.split('.').next().unwrap_or_default().to_string())
    }));
    Ok(Config {
        header_names,
        body_keys,
        rules,
        default: raw
            .default
            .map(|names| names.iter().map(WeightedProvider::unweighted).collect()),
        prefer_cheaper_within: raw.prefer_cheaper_within,
    })
}

/// Validate and normalise the canonical-field conditions; the error starts with the field.
fn canonical(c: &mut Conditions) -> Result<(), String> {
    if let Some(list) = &mut c.country {
        non_empty("country", list)?;
        for (i, code) in list.iter_mut().enumerate() {
            if !country::is_alpha2(code) {
                return Err(format!(
                    "country[{i}]: must be an ISO 3166-1 alpha-2 code such as \"NL\""
                ));
            }
            *code = code.to_ascii_uppercase();
        }
    }
    if let Some(list) = &mut c.currency {
        non_empty("currency", list)?;
        for (i, code) in list.iter_mut().enumerate() {
            *code = currency::normalise(code)
                .ok_or_else(|| format!("currency[{i}]: not an ISO 4217 currency code"))?;
        }
    }
    if let Some(list) = &mut c.payment_method {
        non_empty("payment_method", list)?;
        for (i, name) in list.iter_mut().enumerate() {
            *name = name.trim().to_ascii_lowercase();
            let ok = !name.is_empty()
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !ok {
                return Err(format!(
                    "payment_method[{i}]: must be one of {} or a wallet/scheme/network name \
                     such as \"dana\"",
                    METHOD_KINDS.join(", ")
                ));
            }
        }
    }
    if let Some(list) = &mut c.card_country {
        non_empty("card_country", list)?;
        for (i, code) in list.iter_mut().enumerate() {
            if !country::is_alpha2(code) {
                return Err(format!(
                    "card_country[{i}]: must be an ISO 3166-1 alpha-2 code such as \"DE\""
                ));
            }
            *code = code.to_ascii_uppercase();
        }
    }
    if let Some(list) = &mut c.card_network {
        non_empty("card_network", list)?;
        for (i, name) in list.iter_mut().enumerate() {
            *name = name.trim().to_ascii_lowercase();
            let ok = !name.is_empty()
                && name.len() <= 32
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                return Err(format!(
                    "card_network[{i}]: must be a card network name such as \"visa\" or \"amex\""
                ));
            }
        }
    }
    if let Some(list) = &c.operation {
        if list.is_empty() {
            return Err("operation: must not be empty".into());
        }
    }
    if c.amount_min.is_some() || c.amount_max.is_some() {
        // Minor units mean nothing without one currency's exponent (100 JPY ≠ 100 EUR cents).
        if c.currency.as_ref().is_none_or(|list| list.len() != 1) {
            return Err(
                "amount_min/amount_max: need match.currency with exactly one currency \
                        (the amounts are its minor units)"
                    .into(),
            );
        }
        if let (Some(min), Some(max)) = (c.amount_min, c.amount_max) {
            if min > max {
                return Err(format!("amount_min: {min} is more than amount_max {max}"));
            }
        }
    }
    Ok(())
}

fn non_empty(field: &str, list: &[String]) -> Result<(), String> {
    if list.is_empty() {
        return Err(format!("{field}: must not be empty"));
    }
    Ok(())
}
