//! The plugin's JSON config.

use payproxy_plugin_sdk::helpers::config;
use serde::Deserialize;

/// Parsed config. Every field is optional: `{}` talks to the simulator's `/ideal/v1`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Path prefix of the API under the provider's base URL, without a trailing `/`
    /// (default `/ideal/v1`).
    #[serde(default = "default_base_path")]
    pub base_path: String,
    /// Description shown on the shopper's bank statement when the payment has none
    /// (default: the merchant reference).
    #[serde(default)]
    pub default_description: Option<String>,
}

fn default_base_path() -> String {
    "/ideal/v1".into()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            base_path: default_base_path(),
            default_description: None,
        }
    }
}

impl Config {
    /// Parse and validate; errors read `dialect-ideal config: <field path>: <message>`.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = config::parse("dialect-ideal", text)?;
        config::check_base_path("dialect-ideal", &config.base_path)?;
        config::check_not_blank(
            "dialect-ideal",
            "default_description",
            config.default_description.as_deref(),
        )?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        assert_eq!(Config::parse(" ").unwrap(), Config::default());
        assert_eq!(Config::parse("{}").unwrap().base_path, "/ideal/v1");
        assert_eq!(
            Config::parse(r#"{"default_description":true}"#).unwrap_err(),
            "dialect-ideal config: default_description: invalid type: boolean `true`, expected a string"
        );
        assert!(Config::parse(r#"{"descr":"x"}"#)
            .unwrap_err()
            .starts_with("dialect-ideal config: descr: unknown field"));
        assert!(Config::parse(r#"{"base_path":"/v1/"}"#).is_err());
    }
}
