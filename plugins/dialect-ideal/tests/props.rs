//! Properties: amounts and references survive encode → iDEAL body → decode; IBANs with correct
//! check digits are accepted and any single-digit change is refused.

use dialect_ideal::iban::{check_digits, LENGTHS};
use dialect_ideal::Ideal;
use payproxy_plugin_sdk::currency;
use payproxy_plugin_sdk::payment::{
    BankRedirect, Context, Egress, HttpRequest, HttpResponse, Money, Operation, OutcomeStatus,
    Payment, PaymentMethod, RefusalKind,
};
use payproxy_plugin_sdk::testing;
use proptest::prelude::*;
use serde_json::{json, Value};

fn plugin() -> Ideal {
    Ideal::init("{}").expect("config")
}

fn context() -> Context {
    testing::egress_context("ideal", &[("api_key", "secret-ideal-key")], 0, "idem")
}

fn payment(minor: i64, reference: &str, iban: Option<String>) -> Payment {
    let mut p = Payment::new(Operation::Authorize);
    p.amount = Some(Money {
        minor,
        currency: "EUR".into(),
    });
    p.merchant_reference = Some(reference.into());
    p.return_url = Some("https://shop.example/back".into());
    p.method = Some(PaymentMethod::BankRedirect(BankRedirect {
        scheme: "ideal".into(),
        iban,
        bic: None,
    }));
    p
}

fn body(request: &HttpRequest) -> Value {
    serde_json::from_slice(request.body.as_deref().unwrap_or_default()).expect("JSON body")
}

/// A valid IBAN of a country in the length table, with a digits-only BBAN.
fn valid_iban() -> impl Strategy<Value = String> {
    proptest::sample::select(LENGTHS).prop_flat_map(|(country, length)| {
        proptest::collection::vec(0u8..10, length - 4).prop_map(move |digits| {
            let bban: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
            format!("{country}{}{bban}", check_digits(country, &bban))
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn amount_and_reference_round_trip(minor in 1i64..=99_999_999_999, reference in "[A-Za-z0-9 _./#:-]{1,40}|\\PC{1,20}") {
        let p = payment(minor, &reference, None);
        let sent = body(&plugin().encode_request(&p, &context()).expect("encodes"));
        let text = sent["amount"].as_str().expect("decimal string");
        prop_assert_eq!(currency::from_decimal(text, "EUR"), Ok(minor));
        prop_assert_eq!(sent["currency"].as_str(), Some("EUR"));
        prop_assert_eq!(sent["reference"].as_str(), Some(reference.as_str()));
        // A status answer echoing the amount decodes to the same money.
        let mut status = p.clone();
        status.operation = Operation::Status;
        status.provider_reference = Some("tr_1".into());
        let answer = json!({"transactionId": "tr_1", "status": "success", "amount": text, "currency": "EUR"});
        let outcome = plugin().decode_response(&status, &HttpResponse::json(200, &answer));
        prop_assert_eq!(outcome.status, OutcomeStatus::Approved);
        prop_assert_eq!(outcome.amount, Some(Money { minor, currency: "EUR".into() }));
    }

    #[test]
    fn valid_ibans_are_accepted_in_any_spacing_and_case(iban in valid_iban(), lower in any::<bool>()) {
        let spaced: String = iban.chars().enumerate()
            .flat_map(|(i, c)| (i > 0 && i % 4 == 0).then_some(' ').into_iter().chain([c]))
            .collect();
        let raw = if lower { spaced.to_ascii_lowercase() } else { spaced };
        let sent = body(&plugin().encode_request(&payment(100, "r", Some(raw)), &context()).expect("accepted"));
        prop_assert_eq!(sent["iban"].as_str(), Some(iban.as_str()));
    }

    #[test]
    fn any_single_digit_change_is_refused(iban in valid_iban(), position in any::<proptest::sample::Index>(), delta in 1u8..10) {
        // Every character after the country code is a digit here: check digits and BBAN.
        let mut bytes = iban.clone().into_bytes();
        let at = 2 + position.index(bytes.len() - 2);
        bytes[at] = b'0' + (bytes[at] - b'0' + delta) % 10;
        let changed = String::from_utf8(bytes).expect("ascii");
        let refusal = plugin().encode_request(&payment(100, "r", Some(changed.clone())), &context()).expect_err("refused");
        prop_assert_eq!(refusal.kind, RefusalKind::InvalidRequest(Some("iban".into())));
        prop_assert_eq!(refusal.code.as_str(), "invalid_iban");
        prop_assert!(!refusal.message.contains(&changed[..changed.len() - 4]), "message shows more than the last four");
    }
}
