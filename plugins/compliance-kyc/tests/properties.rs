//! Property tests: the phone rule follows exactly the phone data, other countries are never
//! touched, and no verdict repeats customer data.

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

    #[test]
    fn denials_never_repeat_customer_data(
        customer_phone in phone(), email in proptest::option::of("[0-9]{4,8}(@[0-9]{2,8})?"),
    ) {
        let plugin = Kyc::init(CONFIG).unwrap();
        let p = wallet_payment("ID", None, customer_phone.clone(), true, email.clone());
        if let Verdict::Deny(denial) = plugin.check(&p).verdict {
            for secret in customer_phone.iter().chain(email.iter()) {
                prop_assert!(!denial.message.contains(secret.as_str()));
            }
        }
    }
}
