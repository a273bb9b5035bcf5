//! Property tests: the phone rule follows exactly the phone data, the email rule denies
//! exactly when the email is missing or malformed, other countries are never touched, and no
//! verdict repeats customer data.

use compliance_kyc::Kyc;
use payproxy_plugin_sdk::payment::{
    ChallengeKind, Compliance, Ewallet, Money, Operation, Payment, PaymentMethod, Verdict,
};
use proptest::prelude::*;

const CONFIG: &str = r#"{"rules": [
    {"name": "id-ewallet-phone", "country": "ID", "methods": ["ewallet"], "require": "verified_phone"},
    {"name": "id-ewallet-email", "country": "ID", "methods": ["ewallet"], "require": "email"}
]}"#;

fn wallet_payment(
    country: &str,
    wallet_phone: Option<String>,
    customer_phone: Option<String>,
    verified: bool,
    email: Option<String>,
) -> Payment {
    let mut p = Payment::new(Operation::Authorize);
    p.amount = Some(Money {
        minor: 150_000,
        currency: "IDR".into(),
    });
    p.country = Some(country.into());
    p.method = Some(PaymentMethod::Ewallet(Ewallet {
        wallet: "dana".into(),
        phone: wallet_phone,
    }));
    p.customer.phone = customer_phone;
    p.customer.phone_verified = verified;
    p.customer.email = email;
    p
}

fn phone() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("\\+62[0-9]{8,12}")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn indonesian_wallets_need_a_verified_phone(
        wallet_phone in phone(), customer_phone in phone(), verified: bool,
    ) {
        let plugin = Kyc::init(CONFIG).unwrap();
        let has_phone = wallet_phone.is_some() || customer_phone.is_some();
        let p = wallet_payment("ID", wallet_phone, customer_phone, verified, Some("a@b.id".into()));
        let d = plugin.check(&p);
        if has_phone && verified {
            prop_assert_eq!(d.verdict, Verdict::Allow);
        } else {
            prop_assert_eq!(d.verdict, Verdict::Challenge(ChallengeKind::PhoneVerification));
            prop_assert_eq!(d.rule, "id-ewallet-phone");
        }
    }

    #[test]
    fn other_countries_are_never_refused(
        country in "[A-HJ-Z][A-Z]", wallet_phone in phone(), verified: bool,
    ) {
        let plugin = Kyc::init(CONFIG).unwrap();
        let d = plugin.check(&wallet_payment(&country, wallet_phone, None, verified, None));
        prop_assert_eq!(d.verdict, Verdict::Allow);
    }

    /// A missing or malformed email is denied, whatever the phone (a denial wins over the
    /// phone challenge), and the denial never repeats the customer's data; a well-formed one
    /// leaves the phone rule to decide.
    #[test]
    fn email_rule_denies_exactly_bad_emails(
        customer_phone in phone(), (email, well_formed) in email(),
    ) {
        let plugin = Kyc::init(CONFIG).unwrap();
        let has_phone = customer_phone.is_some();
        let p = wallet_payment("ID", None, customer_phone.clone(), true, email.clone());
        let d = plugin.check(&p);
        match (well_formed, d.verdict) {
            (false, Verdict::Deny(denial)) => {
                prop_assert_eq!(denial.code.as_str(), "email_required");
                prop_assert_eq!(d.rule.as_str(), "id-ewallet-email");
                for secret in customer_phone.iter().chain(email.iter()).filter(|s| !s.trim().is_empty()) {
                    prop_assert!(!denial.message.contains(secret.as_str()), "{:?} repeats {:?}", denial.message, secret);
                }
            }
            (false, verdict) => prop_assert!(false, "{:?} needs a deny, got {:?}", email, verdict),
            (true, verdict) if has_phone => prop_assert_eq!(verdict, Verdict::Allow),
            (true, verdict) => prop_assert_eq!(verdict, Verdict::Challenge(ChallengeKind::PhoneVerification)),
        }
    }
}

/// An email and whether it is well formed (`local@domain`, one `@`, no inner whitespace,
/// surrounding spaces allowed), known by construction rather than by parsing. The malformed
/// ones are digits, which the denial's text has none of, so a repeat would show.
fn email() -> impl Strategy<Value = (Option<String>, bool)> {
    let bad = prop_oneof![
        Just(None),
        Just(Some(String::new())),
        Just(Some("  ".to_string())),
        "[0-9]{1,8}".prop_map(Some),
        "@[0-9]{1,8}".prop_map(Some),
        "[0-9]{1,8}@".prop_map(Some),
        "[0-9]{1,8}@[0-9]{1,8}@[0-9]{1,8}".prop_map(Some),
        "[0-9]{1,8} [0-9]{1,8}@[0-9]{1,8}".prop_map(Some),
        "[0-9]{1,8}@[0-9]{1,8}\t[0-9]{1,3}".prop_map(Some),
    ];
    let good = prop_oneof![
        "[a-z0-9.+_-]{1,12}@[a-z0-9.-]{1,12}",
        " {1,2}[a-z0-9]{1,8}@[a-z0-9.]{1,8} {0,2}",
    ];
    prop_oneof![
        bad.prop_map(|email| (email, false)),
        good.prop_map(|email| (Some(email), true)),
    ]
}
