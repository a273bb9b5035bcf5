//! Applying blocked countries, limits and taxes to one payment.

use payproxy_plugin_sdk::currency;
use payproxy_plugin_sdk::payment::{Annotation, Decision, Money, Operation, Payment};

use payproxy_plugin_sdk::payment_method;

use crate::config::{Config, Limit, Tax};

/// Allowed (with any tax lines).
pub const RULE_OK: &str = "limits-ok";
/// Allowed: not an authorisation.
pub const RULE_NOT_APPLICABLE: &str = "limits-not-applicable";
/// Denied: the shopper's country is blocked.
pub const RULE_COUNTRY_BLOCKED: &str = "country-blocked";
/// Denied: an authorisation without an amount, or a negative one.
pub const RULE_INVALID_AMOUNT: &str = "limits-invalid-amount";

/// Blocked country, then amount, then each limit in order, then taxes.
pub fn decide(config: &Config, payment: &Payment) -> Decision {
    if payment.operation != Operation::Authorize {
        return Decision::allow(RULE_NOT_APPLICABLE, Vec::new());
    }
    let country = payment.country.as_deref().map(str::trim);
    if country.is_some_and(|c| {
        config
            .blocked_countries
            .iter()
            .any(|b| b.eq_ignore_ascii_case(c))
    }) {
        return Decision::deny(
            RULE_COUNTRY_BLOCKED,
            "country_blocked",
            "Payments from this country are not accepted.",
        );
    }
    let amount = match &payment.amount {
        Some(a) if a.minor >= 0 => a,
        Some(_) => {
            return Decision::deny(
                RULE_INVALID_AMOUNT,
                "invalid_amount",
                "The amount must not be negative.",
            )
        }
        None => {
            return Decision::deny(
                RULE_INVALID_AMOUNT,
                "amount_required",
                "An amount is required.",
            )
        }
    };
    for limit in config.limits.iter().filter(|l| applies(l, payment, amount)) {
        if let Some(denial) = broken(limit, amount.minor) {
            return denial;
        }
    }
    let annotations = config
        .taxes
        .iter()
        .filter(|t| taxed(t, country, config.merchant_country.as_deref()))
        .map(|t| tax_line(t, amount))
        .collect();
    Decision::allow(RULE_OK, annotations)
}

/// A limit applies to payments in its currency, from its country (`*`: any; an unknown
/// shopper country matches only `*`), by its method (`*`: any, also none).
fn applies(limit: &Limit, payment: &Payment, amount: &Money) -> bool {
    amount.currency.trim().eq_ignore_ascii_case(&limit.currency)
        && (limit.country == "*"
            || payment
                .country
                .as_deref()
                .is_some_and(|c| c.trim().eq_ignore_ascii_case(&limit.country)))
        && payment_method::matches(std::slice::from_ref(&limit.method), payment.method.as_ref())
}

/// The denial when `minor` is outside the limit (both ends inclusive).
fn broken(limit: &Limit, minor: i64) -> Option<Decision> {
    let major = |m: i64| {
        let text = currency::to_decimal(m, &limit.currency).unwrap_or_else(|| m.to_string());
        format!("{text} {}", limit.currency)
    };
    if let Some(min) = limit.min.filter(|min| minor < *min) {
        let message = format!(
            "The amount is below the minimum of {} for this payment.",
            major(min)
        );
        return Some(Decision::deny(&limit.name, "amount_too_small", message));
    }
    if let Some(max) = limit.max.filter(|max| minor > *max) {
        let message = format!(
            "The amount is above the maximum of {} for this payment.",
            major(max)
        );
        return Some(Decision::deny(&limit.name, "amount_too_large", message));
    }
    None
}

/// A tax applies to shoppers of its country; `cross_border_only` also needs that country to
/// differ from the merchant's.
fn taxed(tax: &Tax, country: Option<&str>, merchant: Option<&str>) -> bool {
    let Some(country) = country else { return false };
    country.eq_ignore_ascii_case(&tax.country)
        && (!tax.cross_border_only || merchant.is_none_or(|m| !m.eq_ignore_ascii_case(country)))
}

/// The tax line: `round_half_up(amount × rate_bp / 10 000)` in the payment's currency.
fn tax_line(tax: &Tax, amount: &Money) -> Annotation {
    Annotation {
        kind: "tax".into(),
        name: tax.name.clone(),
        rate_bp: tax.rate_bp,
        amount: Some(Money {
            minor: tax_amount(amount.minor, tax.rate_bp),
            currency: amount.currency.trim().to_ascii_uppercase(),
        }),
        note: tax.note.clone(),
    }
}

/// `round_half_up(minor × rate_bp / 10 000)` for `minor ≥ 0` and `rate_bp ≤ 10 000`, so the
/// result is between 0 and `minor`; computed in `i128`, no overflow.
pub fn tax_amount(minor: i64, rate_bp: u32) -> i64 {
    let scaled = i128::from(minor.max(0)) * i128::from(rate_bp);
    let rounded = (scaled + 5_000) / 10_000;
    i64::try_from(rounded).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tax_rounds_half_up() {
        assert_eq!(tax_amount(100_000, 300), 3_000);
        assert_eq!(tax_amount(50, 300), 2, "1.5 rounds up");
        assert_eq!(tax_amount(49, 300), 1, "1.47 rounds down");
        assert_eq!(tax_amount(16, 300), 0, "0.48 rounds down");
        assert_eq!(tax_amount(17, 300), 1, "0.51 rounds up");
        assert_eq!(tax_amount(0, 300), 0);
        assert_eq!(tax_amount(i64::MAX, 10_000), i64::MAX);
    }
}
