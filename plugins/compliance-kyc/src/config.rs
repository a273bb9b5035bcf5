//! The plugin's JSON config, parsed and validated once at `init`.

use payproxy_plugin_sdk::helpers::{config, country};
use payproxy_plugin_sdk::payment_method;
use serde::Deserialize;

/// What a rule requires of the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Requirement {
    /// A phone (customer's or the wallet's) and `customer.phone_verified`.
    VerifiedPhone,
    /// A customer email address.
    Email,
    /// A customer id (an account at the merchant).
    CustomerId,
    /// `metadata["kyc_level"] == "verified"`.
    IdentityDocuments,
}

impl Requirement {
    fn as_str(self) -> &'static str {
        match self {
            Requirement::VerifiedPhone => "verified_phone",
            Requirement::Email => "email",
            Requirement::CustomerId => "customer_id",
            Requirement::IdentityDocuments => "identity_documents",
        }
    }
}

/// One validated rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Rule name for metrics and the audit line.
    pub name: String,
    /// Upper-case ISO 3166-1 alpha-2 shopper country, or `*`.
    pub country: String,
    /// Method kinds or wallet / scheme / network names, or `*`; lower case.
    pub methods: Vec<String>,
    /// What the customer must have.
    pub require: Requirement,
}

/// The validated config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Rules; every matching rule is checked.
    pub rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    name: Option<String>,
    country: String,
    methods: Vec<String>,
    require: Requirement,
}

fn error(path: &str, message: impl std::fmt::Display) -> String {
    config::error("compliance-kyc", path, message)
}

impl Config {
    /// Parse and validate the JSON config; errors name the field.
    pub fn parse(text: &str) -> Result<Config, String> {
        let raw: RawConfig = config::from_json(text).map_err(|e| error(&e.path, e.message))?;
        let mut rules = Vec::with_capacity(raw.rules.len());
        for (i, rule) in raw.rules.into_iter().enumerate() {
            let at = |field: &str| format!("rules[{i}].{field}");
            if rule.country != "*" && !country::is_alpha2(&rule.country) {
                return Err(error(
                    &at("country"),
                    "must be an ISO 3166-1 alpha-2 code such as \"ID\", or \"*\"",
                ));
            }
            let country = rule.country.to_ascii_uppercase();
            if rule.methods.is_empty() {
                return Err(error(
                    &at("methods"),
                    "must not be empty (use [\"*\"] for any method)",
                ));
            }
            let mut methods = Vec::with_capacity(rule.methods.len());
            for (j, m) in rule.methods.iter().enumerate() {
                let m = payment_method::normalise_name(m)
                    .map_err(|why| error(&at(&format!("methods[{j}]")), why))?;
                methods.push(m);
            }
            let name = config::rule_name(rule.name, || {
                let country = country.to_ascii_lowercase();
                format!("kyc-{country}-{}", rule.require.as_str())
            })
            .map_err(|why| error(&at("name"), why))?;
            rules.push(Rule {
                name,
                country,
                methods,
                require: rule.require,
            });
        }
        Ok(Config { rules })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        let c = Config::parse(
            r#"{"rules": [{"country": "id", "methods": ["EWallet", "dana"], "require": "verified_phone"},
                          {"name": "eu-docs", "country": "*", "methods": ["*"], "require": "identity_documents"}]}"#,
        )
        .unwrap();
        assert_eq!(c.rules[0].name, "kyc-id-verified_phone");
        assert_eq!(c.rules[0].country, "ID");
        assert_eq!(c.rules[0].methods, ["ewallet", "dana"]);
        assert_eq!(c.rules[1].name, "eu-docs");
        assert_eq!(c.rules[1].require, Requirement::IdentityDocuments);
        assert_eq!(Config::parse("{}").unwrap().rules, []);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                r#"{"rules": [{"country": "IDN", "methods": ["ewallet"], "require": "email"}]}"#,
                "config: rules[0].country: must be an ISO 3166-1",
            ),
            (
                r#"{"rules": [{"country": "ID", "methods": [], "require": "email"}]}"#,
                "config: rules[0].methods: must not be empty",
            ),
            (
                r#"{"rules": [{"country": "ID", "methods": ["ewallet", "e wallet"], "require": "email"}]}"#,
                "config: rules[0].methods[1]: must be \"*\"",
            ),
            (
                r#"{"rules": [{"country": "ID", "methods": ["ewallet"], "require": "passport"}]}"#,
                "config: rules[0].require: unknown variant `passport`",
            ),
            (
                r#"{"rules": [{"country": "ID", "methods": ["ewallet"]}]}"#,
                "config: rules[0]: missing field `require`",
            ),
            (
                r#"{"rules": [{"name": " ", "country": "ID", "methods": ["ewallet"], "require": "email"}]}"#,
                "config: rules[0].name: must not be empty",
            ),
            (
                r#"{"rules": [{"country": "ID", "methods": ["ewallet"], "require": "email", "when": 1}]}"#,
                "config: rules[0].when: unknown field",
            ),
            (r#"{"rule": []}"#, "config: rule: unknown field"),
            ("\"rules\"", "compliance-kyc config: invalid type"),
            ("not json", "compliance-kyc config: "),
        ];
        for (text, want) in cases {
            let err = Config::parse(text)
                .err()
                .unwrap_or_else(|| panic!("accepted {text}"));
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
