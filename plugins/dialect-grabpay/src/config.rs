//! The plugin's JSON config and the provider credentials it reads from the context.

use payproxy_plugin_sdk::currency;
use payproxy_plugin_sdk::helpers::config;
use payproxy_plugin_sdk::payment::{Context, Refusal};
use serde::Deserialize;

/// Currencies the GrabPay API takes.
pub const SUPPORTED_CURRENCIES: [&str; 6] = ["SGD", "MYR", "PHP", "THB", "VND", "IDR"];

/// The whole plugin config; `{}` is valid.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `description` sent when the payment has none (default `"Payment"`).
    #[serde(default = "default_description")]
    pub description: String,
    /// Currencies this provider account accepts, a subset of [`SUPPORTED_CURRENCIES`]
    /// (default: all of them).
    #[serde(default = "default_currencies")]
    pub currencies: Vec<String>,
}

fn default_description() -> String {
    "Payment".into()
}

fn default_currencies() -> Vec<String> {
    SUPPORTED_CURRENCIES
        .iter()
        .map(|c| (*c).to_string())
        .collect()
}

impl Config {
    /// Parse and validate; errors read `dialect-grabpay config: <field path>: <message>`.
    pub fn parse(text: &str) -> Result<Config, String> {
        // Unlike the other dialects, serde's position stays in the message.
        let mut config: Config = config::from_json(config::or_empty_object(text))
            .map_err(|e| format!("dialect-grabpay config: {}: {}", e.path, e.with_position))?;
        for (i, code) in config.currencies.iter_mut().enumerate() {
            let upper = code.to_ascii_uppercase();
            if !SUPPORTED_CURRENCIES.contains(&upper.as_str()) {
                return Err(format!(
                    "dialect-grabpay config: currencies[{i}]: {code:?} is not one of {}",
                    SUPPORTED_CURRENCIES.join(", ")
                ));
            }
            *code = upper;
        }
        if config.currencies.is_empty() {
            return Err("dialect-grabpay config: currencies: must not be empty".into());
        }
        Ok(config)
    }

    /// The upper-case currency if this account takes it, else the refusal to answer.
    pub fn currency(&self, code: &str) -> Result<String, Refusal> {
        let Some(code) = currency::normalise(code) else {
            return Err(Refusal::invalid(
                Some("currency"),
                "currency_invalid",
                "currency is not an ISO 4217 code",
            ));
        };
        if !self.currencies.contains(&code) {
            return Err(Refusal::invalid(
                Some("currency"),
                "currency_unsupported",
                format!(
                    "GrabPay does not accept {code}; accepted: {}",
                    self.currencies.join(", ")
                ),
            ));
        }
        Ok(code)
    }
}

/// This provider's credentials, from `Context.credentials`.
pub struct Credentials<'a> {
    /// Goes in clear in the `Authorization` header.
    pub partner_id: &'a str,
    /// The HMAC key; never leaves the plugin.
    pub partner_secret: &'a str,
    /// `merchantID` in bodies.
    pub merchant_id: &'a str,
}

impl<'a> Credentials<'a> {
    /// Read `partner_id`, `partner_secret` and `merchant_id`; a missing or empty one is a
    /// misconfigured provider (named by key only, never by value).
    pub fn from_context(context: &'a Context) -> Result<Credentials<'a>, Refusal> {
        Ok(Credentials {
            partner_id: context.required_credential("partner_id")?,
            partner_secret: context.required_credential("partner_secret")?,
            merchant_id: context.required_credential("merchant_id")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors_name_the_field() {
        let config = Config::parse("{}").expect("empty config");
        assert_eq!(config.description, "Payment");
        assert_eq!(config.currencies.len(), 6);
        let config = Config::parse(r#"{"currencies":["sgd"]}"#).expect("subset");
        assert_eq!(config.currencies, vec!["SGD"]);
        assert_eq!(
            Config::parse(r#"{"currencies":["SGD","EUR"]}"#).unwrap_err(),
            "dialect-grabpay config: currencies[1]: \"EUR\" is not one of SGD, MYR, PHP, THB, VND, IDR"
        );
        let err = Config::parse(r#"{"descripton":"x"}"#).unwrap_err();
        assert!(
            err.starts_with("dialect-grabpay config: descripton: unknown field"),
            "{err}"
        );
        let err = Config::parse(r#"{"description":7}"#).unwrap_err();
        assert!(
            err.starts_with("dialect-grabpay config: description: invalid type"),
            "{err}"
        );
        assert!(Config::parse(r#"{"currencies":[]}"#).is_err());
    }
}
