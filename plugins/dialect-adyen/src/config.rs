//! The plugin's JSON config.

use payproxy_plugin_sdk::helpers::config;
use serde::Deserialize;

/// Parsed config. Every field is optional: `{}` talks to the simulator's `/adyen/v71`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Path prefix of the API under the provider's base URL, without a trailing `/`
    /// (default `/adyen/v71`; the real Checkout API is `/v71` on `checkout-test.adyen.com`).
    #[serde(default = "default_base_path")]
    pub base_path: String,
    /// `merchantAccount` to send when the provider's credentials carry no `merchant_account`.
    #[serde(default)]
    pub merchant_account: Option<String>,
}

fn default_base_path() -> String {
    "/adyen/v71".into()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            base_path: default_base_path(),
            merchant_account: None,
        }
    }
}

impl Config {
    /// Parse and validate; errors read `dialect-adyen config: <field path>: <message>`.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = config::parse("dialect-adyen", text)?;
        config::check_base_path("dialect-adyen", &config.base_path)?;
        config::check_not_blank(
            "dialect-adyen",
            "merchant_account",
            config.merchant_account.as_deref(),
        )?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        assert_eq!(Config::parse("{}").unwrap().base_path, "/adyen/v71");
        let c = Config::parse(r#"{"base_path":"/v71","merchant_account":"Shop"}"#).unwrap();
        assert_eq!(c.merchant_account.as_deref(), Some("Shop"));
        assert_eq!(
            Config::parse(r#"{"merchant":"x"}"#).unwrap_err(),
            "dialect-adyen config: merchant: unknown field `merchant`, expected `base_path` or `merchant_account`"
        );
        assert_eq!(
            Config::parse(r#"{"merchant_account":5}"#).unwrap_err(),
            "dialect-adyen config: merchant_account: invalid type: integer `5`, expected a string"
        );
        assert!(Config::parse(r#"{"base_path":"v71/"}"#)
            .unwrap_err()
            .contains("base_path"));
        assert!(Config::parse(r#"{"merchant_account":" "}"#)
            .unwrap_err()
            .contains("merchant_account"));
    }
}
