//! The plugin's JSON config and the provider credentials it reads from the context.

use payproxy_plugin_sdk::helpers::config;
use payproxy_plugin_sdk::payment::{Context, Refusal};
use serde::Deserialize;

/// The whole plugin config; `{}` is valid.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `orderTitle` when the payment has no description (default `"Payment"`).
    #[serde(default = "default_title")]
    pub order_title: String,
}

fn default_title() -> String {
    "Payment".into()
}

impl Config {
    /// Parse and validate; errors read `dialect-dana config: <field path>: <message>`.
    pub fn parse(text: &str) -> Result<Config, String> {
        // Unlike the other dialects, serde's position stays in the message.
        let config: Config = config::from_json(config::or_empty_object(text))
            .map_err(|e| format!("dialect-dana config: {}: {}", e.path, e.with_position))?;
        if config.order_title.trim().is_empty() || config.order_title.chars().any(char::is_control)
        {
            return Err("dialect-dana config: order_title: must be non-empty text without control characters".into());
        }
        Ok(config)
    }
}

/// This provider's credentials, from `Context.credentials`.
pub struct Credentials<'a> {
    /// `<clientId>` in every head.
    pub client_id: &'a str,
    /// `<merchantId>` in every body.
    pub merchant_id: &'a str,
}

impl<'a> Credentials<'a> {
    /// Read `client_id` and `merchant_id`; a missing or empty one is a misconfigured
    /// provider (named by key only, never by value).
    pub fn from_context(context: &'a Context) -> Result<Credentials<'a>, Refusal> {
        Ok(Credentials {
            client_id: context.required_credential("client_id")?,
            merchant_id: context.required_credential("merchant_id")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors_name_the_field() {
        assert_eq!(Config::parse("{}").expect("empty").order_title, "Payment");
        assert_eq!(Config::parse("").expect("blank").order_title, "Payment");
        let err = Config::parse(r#"{"title":"x"}"#).unwrap_err();
        assert!(
            err.starts_with("dialect-dana config: title: unknown field"),
            "{err}"
        );
        let err = Config::parse(r#"{"order_title":1}"#).unwrap_err();
        assert!(
            err.starts_with("dialect-dana config: order_title: invalid type"),
            "{err}"
        );
        assert!(Config::parse(r#"{"order_title":" "}"#).is_err());
    }
}
