//! Properties: amounts, currencies and references survive encode → Adyen body → decode.

use dialect_adyen::Adyen;
use payproxy_plugin_sdk::payment::{
    Card, Context, Egress, HttpResponse, Money, Operation, OutcomeStatus, Payment, PaymentMethod,
};
use payproxy_plugin_sdk::testing;
use proptest::prelude::*;
use serde_json::{json, Value};

const CURRENCIES: &[&str] = &[
    "EUR", "USD", "JPY", "KWD", "BRL", "IDR", "SGD", "CLP", "BHD", "gbp",
];

fn plugin() -> Adyen {
    Adyen::init(r#"{"merchant_account":"Shop"}"#).expect("config")
}

fn context() -> Context {
    testing::egress_context("adyen", &[("api_key", "secret-key-123")], 0, "idem")
}

fn card_payment(minor: i64, currency: &str, reference: &str) -> Payment {
    let mut p = Payment::new(Operation::Authorize);
    p.amount = Some(Money {
        minor,
        currency: currency.into(),
    });
    p.merchant_reference = Some(reference.into());
    p.method = Some(PaymentMethod::Card(Card {
        token: "tok_1".into(),
        bin: None,
        last4: None,
        network: None,
        issuer_country: None,
    }));
    p
}

fn body(request: &payproxy_plugin_sdk::payment::HttpRequest) -> Value {
    serde_json::from_slice(request.body.as_deref().unwrap_or_default()).expect("JSON body")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn authorize_round_trip(
        minor in 1i64..=9_999_999_999_999,
        currency in proptest::sample::select(CURRENCIES),
        reference in "[A-Za-z0-9 _./#:-]{1,40}|\\PC{1,20}",
    ) {
        let payment = card_payment(minor, currency, &reference);
        let request = plugin().encode_request(&payment, &context()).expect("encodes");
        let sent = body(&request);
        prop_assert_eq!(&sent["amount"]["value"], &json!(minor));
        let upper = currency.to_ascii_uppercase();
        prop_assert_eq!(sent["amount"]["currency"].as_str(), Some(upper.as_str()));
        prop_assert_eq!(sent["reference"].as_str(), Some(reference.as_str()));
        // The provider echoes the amount; decoding gives back the same money.
        let answer = json!({"pspReference": "P1", "resultCode": "Authorised", "amount": sent["amount"], "merchantReference": sent["reference"]});
        let response = HttpResponse::json(200, &answer);
        let outcome = plugin().decode_response(&payment, &response);
        prop_assert_eq!(outcome.status, OutcomeStatus::Approved);
        prop_assert_eq!(outcome.amount, Some(Money { minor, currency: upper }));
    }

    #[test]
    fn refund_round_trip(minor in 1i64..=1_000_000_000, currency in proptest::sample::select(CURRENCIES)) {
        let mut payment = card_payment(minor, currency, "order-9");
        payment.operation = Operation::Refund;
        payment.provider_reference = Some("8815329842815468".into());
        let request = plugin().encode_request(&payment, &context()).expect("encodes");
        prop_assert_eq!(request.path.as_str(), "/adyen/v71/payments/8815329842815468/refunds");
        let sent = body(&request);
        prop_assert_eq!(&sent["amount"]["value"], &json!(minor));
        prop_assert_eq!(sent["reference"].as_str(), Some("order-9"));
    }

    /// Whatever the provider answers, decoding never panics and never leaks the API key.
    #[test]
    fn any_answer_decodes(status in 100u16..600, body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let response = HttpResponse { status, headers: Vec::new(), body };
        let outcome = plugin().decode_response(&card_payment(100, "EUR", "r"), &response);
        let shown = format!("{:?}", outcome);
        prop_assert!(!shown.contains("secret-key-123"));
    }
}
