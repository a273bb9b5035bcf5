//! Property tests: the verdict follows the exact converted amount, in every currency.

use compliance_psd2_sca::{Psd2Sca, RULE_LOW_VALUE, RULE_SCA};
use payproxy_plugin_sdk::payment::{
    Card, ChallengeKind, Compliance, Money, Operation, Payment, PaymentMethod, Verdict,
};
use proptest::prelude::*;

/// Rates as (code, exponent, units per EUR as numerator / 10^scale).
const RATES: &[(&str, u32, u128, u32)] = &[
    ("EUR", 2, 1, 0),
    ("GBP", 2, 85, 2),
    ("USD", 2, 108, 2),
    ("JPY", 0, 160, 0),
    ("KWD", 3, 333, 3),
    ("SEK", 2, 114_375, 4),
];

fn plugin(threshold_minor: i64) -> Psd2Sca {
    let config = format!(
        r#"{{"merchant_country": "DE", "low_value_threshold": {{"minor": {threshold_minor}, "currency": "EUR"}},
            "rates": {{"GBP": "0.85", "USD": "1.08", "JPY": "160", "KWD": "0.333", "SEK": "11.4375"}}}}"#
    );
    Psd2Sca::init(&config).expect("config")
}

fn card_payment(minor: i64, currency: &str, issuer: &str) -> Payment {
    let mut p = Payment::new(Operation::Authorize);
    p.amount = Some(Money {
        minor,
        currency: currency.into(),
    });
    p.country = Some("DE".into());
    p.method = Some(PaymentMethod::Card(Card {
        token: "tok_1".into(),
        bin: None,
        last4: None,
        network: None,
        issuer_country: Some(issuer.into()),
    }));
    p
}

/// Oracle, written independently of the plugin: amount in EUR minor units × 10^(scale+exp)
/// compared in i128 with amounts small enough not to overflow.
fn above(minor: i64, (_, exp, units, scale): (&str, u32, u128, u32), threshold_minor: i64) -> bool {
    // minor / (10^exp × units / 10^scale) EUR  >  threshold / 100 EUR
    // ⇔ minor × 10^scale × 100  >  threshold × 10^exp × units
    (minor as u128) * 10u128.pow(scale) * 100 > (threshold_minor as u128) * 10u128.pow(exp) * units
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn challenge_iff_converted_amount_above_threshold(
        minor in 0i64..10_000_000_000,
        rate in 0..RATES.len(),
        threshold in 0i64..1_000_000,
    ) {
        let p = plugin(threshold);
        let (code, ..) = RATES[rate];
        let decision = p.check(&card_payment(minor, code, "FR"));
        if above(minor, RATES[rate], threshold) {
            prop_assert_eq!(decision.verdict, Verdict::Challenge(ChallengeKind::StrongAuthentication));
            prop_assert_eq!(decision.rule, RULE_SCA);
        } else {
            prop_assert_eq!(decision.verdict, Verdict::Allow);
            prop_assert_eq!(decision.rule, RULE_LOW_VALUE);
        }
    }

    #[test]
    fn challenge_is_monotonic_in_the_amount(minor in 0i64..i64::MAX - 1, rate in 0..RATES.len()) {
        let p = plugin(3000);
        let (code, ..) = RATES[rate];
        let challenged = |m| p.check(&card_payment(m, code, "FR")).verdict != Verdict::Allow;
        prop_assert!(!challenged(minor) || challenged(minor + 1));
    }

    #[test]
    fn non_eea_issuers_are_never_challenged(
        minor in 0i64..i64::MAX,
        issuer in "(US|GB|CH|SG|BR|ID|JP)",
    ) {
        let decision = plugin(3000).check(&card_payment(minor, "EUR", &issuer));
        prop_assert_eq!(decision.verdict, Verdict::Allow);
    }
}
