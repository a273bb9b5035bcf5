//! The plugin's JSON config, parsed and validated once at `init`.

use payproxy_plugin_sdk::currency;
use payproxy_plugin_sdk::helpers::{config, country};
use payproxy_plugin_sdk::payment_method;
use serde::Deserialize;

/// An amount range for payments of one currency, optionally narrowed by method and country.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// Rule name for metrics and the audit line.
    pub name: String,
    /// A method kind, a wallet / scheme / network name, or `*`; lower case.
    pub method: String,
    /// Upper-case ISO 4217 code; `min` and `max` are its minor units.
    pub currency: String,
    /// Upper-case ISO 3166-1 alpha-2 shopper country, or `*`.
    pub country: String,
    /// Smallest allowed amount (inclusive).
    pub min: Option<i64>,
    /// Largest allowed amount (inclusive).
    pub max: Option<i64>,
}

/// A tax line added to payments from one country.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tax {
    /// Upper-case shopper country.
    pub country: String,
    /// e.g. `VAT`.
    pub name: String,
    /// Basis points: 300 = 3%.
    pub rate_bp: u32,
    /// Only when the shopper's country is not the merchant's.
    pub cross_border_only: bool,
    /// Text shown with the tax line.
    pub note: String,
}

/// The validated config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Checked in order; the first one broken denies.
    pub limits: Vec<Limit>,
    /// Upper-case countries whose shoppers are refused.
    pub blocked_countries: Vec<String>,
    /// Every matching tax is annotated.
    pub taxes: Vec<Tax>,
    /// Upper-case merchant country, for `cross_border_only`.
    pub merchant_country: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    limits: Vec<RawLimit>,
    #[serde(default)]
    blocked_countries: Vec<String>,
    #[serde(default)]
    taxes: Vec<RawTax>,
    #[serde(default)]
    merchant_country: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    #[serde(default)]
    name: Option<String>,
    #[serde(default = "any")]
    method: String,
    currency: String,
    #[serde(default = "any")]
    country: String,
    #[serde(default)]
    min: Option<i64>,
    #[serde(default)]
    max: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTax {
    country: String,
    name: String,
    rate_bp: u32,
    #[serde(default)]
    cross_border_only: bool,
    #[serde(default)]
    note: Option<String>,
}

fn any() -> String {
    "*".into()
}

/// Highest tax rate: 100%.
pub const MAX_RATE_BP: u32 = 10_000;

fn error(path: &str, message: impl std::fmt::Display) -> String {
    config::error("compliance-limits", path, message)
}

const COUNTRY: &str = "must be an ISO 3166-1 alpha-2 code such as \"VN\"";

impl Config {
    /// Parse and validate the JSON config; errors name the field.
    pub fn parse(text: &str) -> Result<Config, String> {
        let raw: RawConfig = config::from_json(text).map_err(|e| error(&e.path, e.message))?;
        let merchant_country = match raw.merchant_country {
            Some(c) if !country::is_alpha2(&c) => return Err(error("merchant_country", COUNTRY)),
            c => c.map(|c| c.to_ascii_uppercase()),
        };
        let limits = raw
            .limits
            .into_iter()
            .enumerate()
            .map(|(i, l)| limit(i, l))
            .collect::<Result<Vec<_>, _>>()?;
        let mut blocked_countries = Vec::with_capacity(raw.blocked_countries.len());
        for (i, c) in raw.blocked_countries.iter().enumerate() {
            if !country::is_alpha2(c) {
                return Err(error(&format!("blocked_countries[{i}]"), COUNTRY));
            }
            blocked_countries.push(c.to_ascii_uppercase());
        }
        let mut taxes = Vec::with_capacity(raw.taxes.len());
        for (i, t) in raw.taxes.into_iter().enumerate() {
            let at = |field: &str| format!("taxes[{i}].{field}");
            if t.cross_border_only && merchant_country.is_none() {
                return Err(error(
                    "merchant_country",
                    format!("required when {} is true", at("cross_border_only")),
                ));
            }
            taxes.push(tax(t, at)?);
        }
        Ok(Config {
            limits,
            blocked_countries,
            taxes,
            merchant_country,
        })
    }
}

fn limit(i: usize, l: RawLimit) -> Result<Limit, String> {
    let at = |field: &str| format!("limits[{i}].{field}");
    let method =
        payment_method::normalise_name(&l.method).map_err(|why| error(&at("method"), why))?;
    // min and max are minor units: they mean nothing without one currency's exponent.
    let Some(currency) = currency::normalise(&l.currency) else {
        return Err(error(
            &at("currency"),
            "must be a concrete ISO 4217 code such as \"IDR\" (min and max are its minor units)",
        ));
    };
    if l.country != "*" && !country::is_alpha2(&l.country) {
        return Err(error(&at("country"), format!("{COUNTRY}, or \"*\"")));
    }
    let country = l.country.to_ascii_uppercase();
    match (l.min, l.max) {
        (None, None) => return Err(error(&format!("limits[{i}]"), "needs min, max or both")),
        (Some(min), _) if min < 0 => return Err(error(&at("min"), "must not be negative")),
        (_, Some(max)) if max < 0 => return Err(error(&at("max"), "must not be negative")),
        (Some(min), Some(max)) if min > max => {
            return Err(error(&at("min"), format!("{min} is more than max {max}")))
        }
        _ => {}
    }
    let name = config::rule_name(l.name, || {
        let (currency, country) = (currency.to_ascii_lowercase(), country.to_ascii_lowercase());
        format!("limit-{method}-{currency}-{country}")
    })
    .map_err(|why| error(&at("name"), why))?;
    Ok(Limit {
        name,
        method,
        currency,
        country,
        min: l.min,
        max: l.max,
    })
}

fn tax(t: RawTax, at: impl Fn(&str) -> String) -> Result<Tax, String> {
    if !country::is_alpha2(&t.country) {
        return Err(error(&at("country"), COUNTRY));
    }
    if t.name.trim().is_empty() {
        return Err(error(&at("name"), "must not be empty"));
    }
    if t.rate_bp == 0 || t.rate_bp > MAX_RATE_BP {
        return Err(error(
            &at("rate_bp"),
            format!("must be 1..={MAX_RATE_BP} (basis points: 300 = 3%)"),
        ));
    }
    let country = t.country.to_ascii_uppercase();
    let note = t.note.unwrap_or_else(|| {
        let scope = if t.cross_border_only {
            " on cross-border sales"
        } else {
            ""
        };
        format!("{}% {}{scope} ({country})", percent(t.rate_bp), t.name)
    });
    Ok(Tax {
        country,
        name: t.name,
        rate_bp: t.rate_bp,
        cross_border_only: t.cross_border_only,
        note,
    })
}

/// Basis points as a percentage without trailing zeros: 300 → `3`, 250 → `2.5`, 1 → `0.01`.
pub fn percent(rate_bp: u32) -> String {
    let (whole, frac) = (rate_bp / 100, rate_bp % 100);
    match frac {
        0 => whole.to_string(),
        f if f % 10 == 0 => format!("{whole}.{}", f / 10),
        f => format!("{whole}.{f:02}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_defaults() {
        let c = Config::parse(
            r#"{"limits": [{"currency": "idr", "max": 100}],
                "taxes": [{"country": "vn", "name": "VAT", "rate_bp": 300, "cross_border_only": true}],
                "blocked_countries": ["kp"], "merchant_country": "sg"}"#,
        )
        .unwrap();
        assert_eq!(c.limits[0].name, "limit-*-idr-*");
        assert_eq!(
            (c.limits[0].method.as_str(), c.limits[0].country.as_str()),
            ("*", "*")
        );
        assert_eq!(c.limits[0].currency, "IDR");
        assert_eq!(c.taxes[0].note, "3% VAT on cross-border sales (VN)");
        assert_eq!(c.blocked_countries, ["KP"]);
        assert_eq!(c.merchant_country.as_deref(), Some("SG"));
        assert_eq!(Config::parse("{}").unwrap().limits, []);
    }

    #[test]
    fn percentages() {
        assert_eq!(percent(300), "3");
        assert_eq!(percent(250), "2.5");
        assert_eq!(percent(1), "0.01");
        assert_eq!(percent(1234), "12.34");
        assert_eq!(percent(10_000), "100");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                r#"{"limits": [{"currency": "*", "max": 1}]}"#,
                "config: limits[0].currency: must be a concrete ISO 4217 code",
            ),
            (
                r#"{"limits": [{"currency": "XYZ", "max": 1}]}"#,
                "config: limits[0].currency: must be a concrete",
            ),
            (
                r#"{"limits": [{"max": 1}]}"#,
                "config: limits[0]: missing field `currency`",
            ),
            (
                r#"{"limits": [{"currency": "EUR"}]}"#,
                "config: limits[0]: needs min, max or both",
            ),
            (
                r#"{"limits": [{"currency": "EUR", "min": 5, "max": 4}]}"#,
                "config: limits[0].min: 5 is more than max 4",
            ),
            (
                r#"{"limits": [{"currency": "EUR", "min": -1}]}"#,
                "config: limits[0].min: must not be negative",
            ),
            (
                r#"{"limits": [{"currency": "EUR", "max": -1}]}"#,
                "config: limits[0].max: must not be negative",
            ),
            (
                r#"{"limits": [{"currency": "EUR", "max": 1.5}]}"#,
                "config: limits[0].max: invalid type",
            ),
            (
                r#"{"limits": [{"currency": "EUR", "max": 1, "method": "e wallet"}]}"#,
                "config: limits[0].method: must be \"*\"",
            ),
            (
                r#"{"limits": [{"currency": "EUR", "max": 1, "country": "EU1"}]}"#,
                "config: limits[0].country: must be an ISO 3166-1",
            ),
            (
                r#"{"limits": [{"currency": "EUR", "max": 1, "name": ""}]}"#,
                "config: limits[0].name: must not be empty",
            ),
            (
                r#"{"blocked_countries": ["KP", "North Korea"]}"#,
                "config: blocked_countries[1]: must be an ISO 3166-1",
            ),
            (
                r#"{"taxes": [{"country": "VN", "name": "VAT", "rate_bp": 300, "cross_border_only": true}]}"#,
                "config: merchant_country: required when taxes[0].cross_border_only is true",
            ),
            (
                r#"{"taxes": [{"country": "VN", "name": "VAT", "rate_bp": 0}]}"#,
                "config: taxes[0].rate_bp: must be 1..=10000",
            ),
            (
                r#"{"taxes": [{"country": "VN", "name": "VAT", "rate_bp": 10001}]}"#,
                "config: taxes[0].rate_bp: must be 1..=10000",
            ),
            (
                r#"{"taxes": [{"country": "VN", "name": "VAT", "rate_bp": -3}]}"#,
                "config: taxes[0].rate_bp: invalid value",
            ),
            (
                r#"{"taxes": [{"country": "VN", "name": " ", "rate_bp": 3}]}"#,
                "config: taxes[0].name: must not be empty",
            ),
            (
                r#"{"taxes": [{"country": "*", "name": "VAT", "rate_bp": 3}]}"#,
                "config: taxes[0].country: must be an ISO 3166-1",
            ),
            (
                r#"{"merchant_country": "Singapore"}"#,
                "config: merchant_country: must be an ISO 3166-1",
            ),
            (r#"{"limit": []}"#, "config: limit: unknown field"),
            ("not json", "compliance-limits config: "),
        ];
        for (text, want) in cases {
            let err = Config::parse(text)
                .err()
                .unwrap_or_else(|| panic!("accepted {text}"));
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
