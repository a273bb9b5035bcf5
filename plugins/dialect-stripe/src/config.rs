//! The plugin's JSON config; every field is optional (`{}` is a valid config).

use payproxy_plugin_sdk::helpers::config;
use serde::Deserialize;

/// How a 5xx answer carrying a Stripe `api_error` object is classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerErrors {
    /// The provider answered before processing (the simulator's injected faults do): safe to
    /// fail over. The default.
    AnsweredNotProcessed,
    /// The result is indeterminate (what Stripe documents for its own 500s): no failover, the
    /// host asks the same provider again.
    Ambiguous,
}

/// The parsed config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Ingress: `metadata` keys read as the merchant reference, first present wins.
    /// Default `["order_id", "merchant_reference"]`.
    pub reference_keys: Vec<String>,
    /// Egress: the `metadata` key the merchant reference is sent under. Default `order_id`.
    pub egress_reference_key: String,
    /// Egress: a `Stripe-Version` header to send, when set. Default none.
    pub stripe_version: Option<String>,
    /// Egress: class of 5xx `api_error` answers. Default `ambiguous`: Stripe documents a
    /// 500 as "the request may or may not have been processed", so a payment that met one
    /// stays with that Stripe account (resend with the same key, then ask) and never goes to
    /// another provider. `answered_not_processed` is for providers that guarantee a 5xx did
    /// nothing (the simulator's injected faults).
    pub server_errors: ServerErrors,
    /// Ingress: refuse metadata and description values that look like a card number (13–19
    /// digits passing the Luhn check). Default `true`.
    pub refuse_card_like_values: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            reference_keys: vec!["order_id".into(), "merchant_reference".into()],
            egress_reference_key: "order_id".into(),
            stripe_version: None,
            server_errors: ServerErrors::Ambiguous,
            refuse_card_like_values: true,
        }
    }
}

impl Config {
    /// Parse and validate; errors read `dialect-stripe config: <field path>: <message>`.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = config::parse("dialect-stripe", text)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let bad_key = |k: &str| k.is_empty() || k.len() > 40 || k.contains(['[', ']']);
        if let Some((i, _)) = self
            .reference_keys
            .iter()
            .enumerate()
            .find(|(_, k)| bad_key(k))
        {
            return Err(format!(
                "dialect-stripe config: reference_keys[{i}]: must be 1-40 characters without brackets"
            ));
        }
        if bad_key(&self.egress_reference_key) {
            return Err("dialect-stripe config: egress_reference_key: must be 1-40 characters without brackets".into());
        }
        if let Some(v) = &self.stripe_version {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(
                    "dialect-stripe config: stripe_version: must be a non-empty header value"
                        .into(),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_takes_defaults() {
        assert_eq!(Config::parse("{}"), Ok(Config::default()));
        assert_eq!(Config::parse(""), Ok(Config::default()));
    }

    #[test]
    fn fields_parse() {
        let c = Config::parse(
            r#"{"reference_keys":["ref"],"egress_reference_key":"ref","stripe_version":"2024-06-20",
                "server_errors":"ambiguous","refuse_card_like_values":false}"#,
        )
        .expect("valid");
        assert_eq!(c.reference_keys, ["ref"]);
        assert_eq!(c.server_errors, ServerErrors::Ambiguous);
        assert!(!c.refuse_card_like_values);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                r#"{"reference_kyes":[]}"#,
                "dialect-stripe config: reference_kyes: unknown field `reference_kyes`",
            ),
            (
                r#"{"server_errors":"maybe"}"#,
                "dialect-stripe config: server_errors: unknown variant",
            ),
            (
                r#"{"reference_keys":["ok","a[b]"]}"#,
                "dialect-stripe config: reference_keys[1]:",
            ),
            (
                r#"{"egress_reference_key":""}"#,
                "dialect-stripe config: egress_reference_key:",
            ),
            (
                r#"{"stripe_version":"a b"}"#,
                "dialect-stripe config: stripe_version:",
            ),
            ("[1]", "dialect-stripe config"),
        ];
        for (text, want) in cases {
            let err = Config::parse(text).expect_err(text);
            assert!(err.starts_with(want), "{text}: {err}");
        }
    }
}
