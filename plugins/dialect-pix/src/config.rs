//! The plugin's JSON config.

use payproxy_plugin_sdk::helpers::config;
use serde::Deserialize;

/// Longest `calendario.expiracao` accepted: 7 days.
pub const MAX_EXPIRATION: u32 = 7 * 24 * 3600;

/// Parsed config. Every field is optional: `{}` talks to the simulator's `/pix/v2`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Path prefix of the API under the provider's base URL, without a trailing `/`
    /// (default `/pix/v2`, as in the Central Bank's specification).
    #[serde(default = "default_base_path")]
    pub base_path: String,
    /// Seconds the QR code stays payable (`calendario.expiracao`), 60..=604800, default 3600.
    #[serde(default = "default_expiration")]
    pub expiration_seconds: u32,
    /// The receiver's Pix key (`chave`) when the provider's credentials carry no `pix_key`.
    #[serde(default)]
    pub pix_key: Option<String>,
}

fn default_base_path() -> String {
    "/pix/v2".into()
}

fn default_expiration() -> u32 {
    3600
}

impl Default for Config {
    fn default() -> Self {
        Config {
            base_path: default_base_path(),
            expiration_seconds: default_expiration(),
            pix_key: None,
        }
    }
}

impl Config {
    /// Parse and validate; errors read `dialect-pix config: <field path>: <message>`.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = config::parse("dialect-pix", text)?;
        config::check_base_path("dialect-pix", &config.base_path)?;
        if !(60..=MAX_EXPIRATION).contains(&config.expiration_seconds) {
            return Err(format!(
                "dialect-pix config: expiration_seconds: {} is not within 60..={MAX_EXPIRATION}",
                config.expiration_seconds
            ));
        }
        config::check_not_blank("dialect-pix", "pix_key", config.pix_key.as_deref())?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        assert_eq!(Config::parse("{}").unwrap().expiration_seconds, 3600);
        assert_eq!(
            Config::parse(r#"{"expiration_seconds":10}"#).unwrap_err(),
            "dialect-pix config: expiration_seconds: 10 is not within 60..=604800"
        );
        assert_eq!(
            Config::parse(r#"{"expiration_seconds":-1}"#).unwrap_err(),
            "dialect-pix config: expiration_seconds: invalid value: integer `-1`, expected u32"
        );
        assert!(Config::parse(r#"{"chave":"x"}"#)
            .unwrap_err()
            .starts_with("dialect-pix config: chave: unknown field"));
    }
}
