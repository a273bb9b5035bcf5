//! Property tests: the verdict follows the exact converted amount, in every currency, on both
//! sides of the threshold and at it.

use compliance_psd2_sca::{Psd2Sca, RULE_LOW_VALUE, RULE_SCA};
use payproxy_plugin_sdk::payment::{
    Card, ChallengeKind, Compliance, Money, Operation, Payment, PaymentMethod, Verdict,
};
use std::cmp::Ordering;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};

/// A configured currency: code, ISO 4217 exponent, units per EUR as `units / 10^scale`.
type Rate = (&'static str, u32, u128, u32);

/// The config's rates, written out as fractions (SEK 11.4375 puts €30 at 34 312.5 öre).
const RATES: &[Rate] = &[
    ("EUR", 2, 1, 0),
    ("GBP", 2, 85, 2),
    ("USD", 2, 108, 2),
    ("JPY", 0, 160, 0),
    ("KWD", 3, 333, 3),
    ("SEK", 2, 114_375, 4),
];

fn plugin(threshold_minor: i64, threshold_currency: &str) -> Psd2Sca {
    let config = format!(
        r#"{{"merchant_country": "DE",
            "low_value_threshold": {{"minor": {threshold_minor}, "currency": "{threshold_currency}"}},
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

/// `minor` units of a currency are worth `minor × 10^scale / (10^exp × units)` EUR. Oracle,
/// written independently of the plugin: the amount's worth against the threshold's,
/// cross-multiplied in `u128` (exact for the amounts drawn here).
fn compare(minor: i64, (_, exp, units, scale): Rate, threshold: i64, t: Rate) -> Ordering {
    let (_, t_exp, t_units, t_scale) = t;
    let amount = minor as u128 * 10u128.pow(scale) * 10u128.pow(t_exp) * t_units;
    let limit = threshold as u128 * 10u128.pow(t_scale) * 10u128.pow(exp) * units;
    amount.cmp(&limit)
}

fn above(minor: i64, rate: Rate, threshold: i64, t: Rate) -> bool {
    compare(minor, rate, threshold, t) == Ordering::Greater
}

/// The threshold's worth in minor units of `rate`'s currency, rounded down: the largest
/// low-value amount.
fn boundary(threshold: i64, t: Rate, (_, exp, units, scale): Rate) -> i64 {
    let (_, t_exp, t_units, t_scale) = t;
    let num = threshold as u128 * 10u128.pow(t_scale) * 10u128.pow(exp) * units;
    let den = 10u128.pow(t_exp) * t_units * 10u128.pow(scale);
    i64::try_from(num / den).expect("fits")
}

/// One draw: amount (minor units) in currency `RATES[c]`, threshold (minor units) in
/// `RATES[t]`.
#[derive(Debug, Clone, Copy)]
struct Case {
    minor: i64,
    c: usize,
    threshold: i64,
    t: usize,
}

/// Mostly amounts within a few minor units of the threshold converted to the payment's
/// currency (both sides and, when the conversion is exact, the threshold itself); now and
/// then any amount up to 10^10, far from it.
fn case() -> impl Strategy<Value = Case> {
    let currency = 0..RATES.len();
    let near = (
        0i64..1_000_000,
        currency.clone(),
        currency.clone(),
        -3i64..=3,
    )
        .prop_map(|(threshold, t, c, delta)| Case {
            minor: (boundary(threshold, RATES[t], RATES[c]) + delta).max(0),
            c,
            threshold,
            t,
        });
    let far = (
        0i64..10_000_000_000,
        currency.clone(),
        0i64..1_000_000,
        currency,
    )
        .prop_map(|(minor, c, threshold, t)| Case {
            minor,
            c,
            threshold,
            t,
        });
    prop_oneof![4 => near, 1 => far]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn challenge_iff_converted_amount_above_threshold(case in case()) {
        let Case { minor, c, threshold, t } = case;
        let decision = plugin(threshold, RATES[t].0).check(&card_payment(minor, RATES[c].0, "FR"));
        if above(minor, RATES[c], threshold, RATES[t]) {
            prop_assert_eq!(decision.verdict, Verdict::Challenge(ChallengeKind::StrongAuthentication));
            prop_assert_eq!(decision.rule, RULE_SCA);
        } else {
            prop_assert_eq!(decision.verdict, Verdict::Allow);
            prop_assert_eq!(decision.rule, RULE_LOW_VALUE);
        }
    }

    /// Around €30 in every currency, one more minor unit never turns a challenge into an
    /// allow.
    #[test]
    fn challenge_is_monotonic_in_the_amount(c in 0..RATES.len(), delta in -3i64..=3) {
        let p = plugin(3000, "EUR");
        let (code, ..) = RATES[c];
        let minor = (boundary(3000, RATES[0], RATES[c]) + delta).max(0);
        let challenged = |m| p.check(&card_payment(m, code, "FR")).verdict != Verdict::Allow;
        prop_assert!(!challenged(minor) || challenged(minor + 1));
    }

    #[test]
    fn non_eea_issuers_are_never_challenged(
        minor in 0i64..i64::MAX,
        issuer in "(US|GB|CH|SG|BR|ID|JP)",
    ) {
        let decision = plugin(3000, "EUR").check(&card_payment(minor, "EUR", &issuer));
        prop_assert_eq!(decision.verdict, Verdict::Allow);
    }
}

/// The draws of [`case`] get both verdicts from the plugin, in every currency, and hit the
/// threshold itself: a property whose draws all fall on one side proves nothing about the
/// other.
#[test]
fn draws_reach_both_sides_of_the_threshold() {
    let config = ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let strategy = case();
    let (mut allowed, mut challenged, mut at_threshold) = (0, 0, 0);
    let mut currencies = [(0, 0); RATES.len()];
    for _ in 0..1_000 {
        let Case {
            minor,
            c,
            threshold,
            t,
        } = strategy.new_tree(&mut runner).expect("a draw").current();
        let decision = plugin(threshold, RATES[t].0).check(&card_payment(minor, RATES[c].0, "FR"));
        at_threshold += usize::from(compare(minor, RATES[c], threshold, RATES[t]).is_eq());
        if decision.verdict != Verdict::Allow {
            challenged += 1;
            currencies[c].1 += 1;
        } else {
            allowed += 1;
            currencies[c].0 += 1;
        }
    }
    eprintln!("allowed {allowed}, challenged {challenged}, exactly at the threshold {at_threshold}, per currency (allowed, challenged) {currencies:?}");
    assert!(
        allowed >= 300 && challenged >= 300,
        "allowed {allowed}, challenged {challenged}"
    );
    assert!(
        at_threshold >= 10,
        "only {at_threshold} draws exactly at the threshold"
    );
    for (i, (a, ch)) in currencies.iter().enumerate() {
        assert!(
            *a >= 20 && *ch >= 20,
            "{}: allowed {a}, challenged {ch}",
            RATES[i].0
        );
    }
}
