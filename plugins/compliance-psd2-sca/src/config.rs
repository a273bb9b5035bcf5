//! The plugin's JSON config, parsed and validated once at `init`.

use std::collections::{BTreeMap, BTreeSet};

use payproxy_plugin_sdk::currency;
use payproxy_plugin_sdk::helpers::{config, country};
use serde::Deserialize;

use crate::convert::{Euros, Rate};
use crate::eea::EEA;

/// The validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The merchant's country (upper case).
    pub merchant_country: String,
    /// Payments worth at most this many euros are low-value.
    pub threshold: Euros,
    /// Upper-case currency → units per 1 EUR; EUR is always present (1).
    pub rates: BTreeMap<String, Rate>,
    /// Upper-case EEA country codes.
    pub eea: BTreeSet<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    merchant_country: String,
    #[serde(default)]
    low_value_threshold: Option<RawMoney>,
    #[serde(default)]
    rates: BTreeMap<String, String>,
    #[serde(default)]
    eea: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMoney {
    minor: i64,
    currency: String,
}

/// Default low-value threshold: €30.00 (PSD2 RTS article 16).
pub const DEFAULT_THRESHOLD_MINOR: i64 = 3000;

fn error(path: &str, message: impl std::fmt::Display) -> String {
    config::error("compliance-psd2-sca", path, message)
}

impl Config {
    /// Parse and validate the JSON config; errors name the field.
    pub fn parse(text: &str) -> Result<Config, String> {
        let raw: RawConfig = config::from_json(text).map_err(|e| error(&e.path, e.message))?;

        if !country::is_alpha2(&raw.merchant_country) {
            return Err(error(
                "merchant_country",
                "must be an ISO 3166-1 alpha-2 code such as \"NL\"",
            ));
        }

        let mut rates = BTreeMap::new();
        for (code, text) in &raw.rates {
            let at = format!("rates.{code}");
            let Some(upper) = currency::normalise(code) else {
                return Err(error(&at, "not an ISO 4217 currency code"));
            };
            let rate = Rate::parse(text).map_err(|m| error(&at, m))?;
            if upper == "EUR" && rate != Rate::ONE {
                return Err(error(&at, "the rates are per 1 EUR, so EUR must be \"1\""));
            }
            if rates.insert(upper, rate).is_some() {
                return Err(error(&at, "currency given twice"));
            }
        }
        rates.insert("EUR".to_string(), Rate::ONE);

        let threshold = match raw.low_value_threshold {
            None => Euros::of(DEFAULT_THRESHOLD_MINOR, "EUR", Rate::ONE),
            Some(money) => {
                let Some(code) = currency::normalise(&money.currency) else {
                    return Err(error(
                        "low_value_threshold.currency",
                        "not an ISO 4217 currency code",
                    ));
                };
                if money.minor < 0 {
                    return Err(error("low_value_threshold.minor", "must not be negative"));
                }
                let Some(rate) = rates.get(&code) else {
                    return Err(error(
                        "low_value_threshold.currency",
                        format!("no rate for {code} in rates"),
                    ));
                };
                Euros::of(money.minor, &code, *rate)
            }
        };
        let threshold = threshold.ok_or_else(|| error("low_value_threshold", "invalid amount"))?;

        let eea = match raw.eea {
            None => EEA.iter().map(|c| c.to_string()).collect(),
            Some(list) => {
                if list.is_empty() {
                    return Err(error(
                        "eea",
                        "must not be empty (omit it for the built-in list)",
                    ));
                }
                let mut set = BTreeSet::new();
                for (i, code) in list.iter().enumerate() {
                    if !country::is_alpha2(code) {
                        return Err(error(
                            &format!("eea[{i}]"),
                            "must be an ISO 3166-1 alpha-2 code such as \"NL\"",
                        ));
                    }
                    set.insert(code.to_ascii_uppercase());
                }
                set
            }
        };

        Ok(Config {
            merchant_country: raw.merchant_country.to_ascii_uppercase(),
            threshold,
            rates,
            eea,
        })
    }

    /// The rate of `code` (any case), when configured.
    pub fn rate(&self, code: &str) -> Option<Rate> {
        self.rates.get(&code.to_ascii_uppercase()).copied()
    }

    /// True when `country` (any case) is in the EEA list.
    pub fn in_eea(&self, country: &str) -> bool {
        self.eea.contains(&country.to_ascii_uppercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_normalisation() {
        let c = Config::parse(r#"{"merchant_country": "nl", "rates": {"gbp": "0.85"}}"#).unwrap();
        assert_eq!(c.merchant_country, "NL");
        assert_eq!(c.rate("GBP"), Rate::parse("0.85").ok());
        assert_eq!(c.rate("eur"), Some(Rate::ONE));
        assert_eq!(c.threshold, Euros::of(3000, "EUR", Rate::ONE).unwrap());
        assert_eq!(c.eea.len(), 30);
        assert!(c.in_eea("no") && !c.in_eea("GB"));
    }

    #[test]
    fn threshold_in_another_currency_is_converted() {
        let c = Config::parse(
            r#"{"merchant_country": "NL", "low_value_threshold": {"minor": 2550, "currency": "GBP"},
                "rates": {"GBP": "0.85"}}"#,
        )
        .unwrap();
        assert!(!Euros::of(3000, "EUR", Rate::ONE)
            .unwrap()
            .exceeds(&c.threshold));
        assert!(Euros::of(3001, "EUR", Rate::ONE)
            .unwrap()
            .exceeds(&c.threshold));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (r#"{}"#, "config: missing field `merchant_country`"),
            (
                r#"{"merchant_country": "NLD"}"#,
                "config: merchant_country: must be an ISO 3166-1",
            ),
            (
                r#"{"merchant_country": "NL", "rates": {"GBP": 0.85}}"#,
                "config: rates.GBP: invalid type",
            ),
            (
                r#"{"merchant_country": "NL", "rates": {"GBP": "-0.85"}}"#,
                "config: rates.GBP: must be a positive decimal",
            ),
            (
                r#"{"merchant_country": "NL", "rates": {"GBP": "0"}}"#,
                "config: rates.GBP: must be greater than zero",
            ),
            (
                r#"{"merchant_country": "NL", "rates": {"XYZ": "1"}}"#,
                "config: rates.XYZ: not an ISO 4217",
            ),
            (
                r#"{"merchant_country": "NL", "rates": {"EUR": "1.1"}}"#,
                "config: rates.EUR: the rates are per 1 EUR",
            ),
            (
                r#"{"merchant_country": "NL", "rates": {"GBP": "0.85", "gbp": "0.85"}}"#,
                "currency given twice",
            ),
            (
                r#"{"merchant_country": "NL", "low_value_threshold": {"minor": 3000, "currency": "USD"}}"#,
                "config: low_value_threshold.currency: no rate for USD",
            ),
            (
                r#"{"merchant_country": "NL", "low_value_threshold": {"minor": -1, "currency": "EUR"}}"#,
                "config: low_value_threshold.minor: must not be negative",
            ),
            (
                r#"{"merchant_country": "NL", "low_value_threshold": {"minor": 1}}"#,
                "config: low_value_threshold: missing field `currency`",
            ),
            (
                r#"{"merchant_country": "NL", "eea": []}"#,
                "config: eea: must not be empty",
            ),
            (
                r#"{"merchant_country": "NL", "eea": ["DE", "D"]}"#,
                "config: eea[1]: must be an ISO",
            ),
            (
                r#"{"merchant_country": "NL", "threshold": 1}"#,
                "config: threshold: unknown field",
            ),
            ("not json", "compliance-psd2-sca config"),
        ];
        for (text, want) in cases {
            let err = Config::parse(text)
                .err()
                .unwrap_or_else(|| panic!("accepted {text}"));
            assert!(err.contains(want), "{text}: {err}");
            assert!(err.starts_with("compliance-psd2-sca config: "), "{err}");
        }
    }
}
