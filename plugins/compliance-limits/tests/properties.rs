//! Property tests: limit boundaries are inclusive, tax lines are exact and never negative,
//! follow-up operations are never limited.

use compliance_limits::{tax_amount, Limits, RULE_NOT_APPLICABLE};
use payproxy_plugin_sdk::payment::{
    Compliance, Ewallet, Money, Operation, Payment, PaymentMethod, Verdict,
};
use proptest::prelude::*;

fn payment(operation: Operation, minor: i64, currency: &str, country: &str) -> Payment {
    let mut p = Payment::new(operation);
    p.amount = Some(Money {
        minor,
        currency: currency.into(),
    });
    p.country = Some(country.into());
    p.method = Some(PaymentMethod::Ewallet(Ewallet {
        wallet: "dana".into(),
        phone: None,
    }));
    p
}

fn limits(min: i64, max: i64) -> Limits {
    Limits::init(&format!(
        r#"{{"limits": [{{"method": "ewallet", "currency": "IDR", "country": "ID", "min": {min}, "max": {max}}}]}}"#
    ))
    .expect("config")
}

fn code(verdict: &Verdict) -> Option<&str> {
    match verdict {
        Verdict::Deny(d) => Some(d.code.as_str()),
        _ => None,
    }
}

/// Oracle: half-up rounding by comparing twice the remainder with the divisor.
fn half_up(minor: i64, rate_bp: u32) -> i64 {
    let product = minor as u128 * rate_bp as u128;
    let (q, r) = (product / 10_000, product % 10_000);
    (q + u128::from(2 * r >= 10_000)) as i64
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn limits_are_inclusive(min in 0i64..1_000_000_000_000, span in 0i64..1_000_000_000_000, amount in 0i64..3_000_000_000_000) {
        let max = min + span;
        let plugin = limits(min, max);
        let verdict = plugin.check(&payment(Operation::Authorize, amount, "IDR", "ID")).verdict;
        let want = if amount < min { Some("amount_too_small") } else if amount > max { Some("amount_too_large") } else { None };
        prop_assert_eq!(code(&verdict), want);
        for edge in [min, max] {
            prop_assert_eq!(plugin.check(&payment(Operation::Authorize, edge, "IDR", "ID")).verdict, Verdict::Allow);
        }
    }

    #[test]
    fn tax_lines_are_round_half_up_and_never_negative(minor in 0i64..i64::MAX, rate_bp in 1u32..=10_000) {
        let plugin = Limits::init(&format!(
            r#"{{"taxes": [{{"country": "VN", "name": "VAT", "rate_bp": {rate_bp}}}]}}"#
        )).unwrap();
        let d = plugin.check(&payment(Operation::Authorize, minor, "VND", "VN"));
        prop_assert_eq!(&d.verdict, &Verdict::Allow);
        prop_assert_eq!(d.annotations.len(), 1);
        let line = &d.annotations[0];
        let tax = line.amount.as_ref().unwrap();
        prop_assert_eq!(tax.minor, half_up(minor, rate_bp));
        prop_assert_eq!(tax.minor, tax_amount(minor, rate_bp));
        prop_assert!(tax.minor >= 0 && tax.minor <= minor);
        prop_assert_eq!(tax.currency.as_str(), "VND");
        prop_assert_eq!(line.rate_bp, rate_bp);
    }

    #[test]
    fn follow_ups_are_never_limited(
        op in prop_oneof![Just(Operation::Capture), Just(Operation::Refund), Just(Operation::Void), Just(Operation::Status)],
        amount in 0i64..i64::MAX,
    ) {
        let plugin = Limits::init(r#"{"limits": [{"currency": "IDR", "max": 0}], "blocked_countries": ["ID"]}"#).unwrap();
        let d = plugin.check(&payment(op, amount, "IDR", "ID"));
        prop_assert_eq!(d.verdict, Verdict::Allow);
        prop_assert_eq!(d.rule, RULE_NOT_APPLICABLE);
    }
}
