//! Property tests: amount, currency and merchant reference survive encoding (the body the
//! provider parses carries them exactly), and the signature always verifies.

use dialect_grabpay::encode::ChargeInit;
use dialect_grabpay::signing::Signed;
use dialect_grabpay::GrabPay;
use payproxy_plugin_sdk::payment::{
    Context, Egress, Ewallet, Money, Operation, Payment, PaymentMethod,
};
use payproxy_plugin_sdk::testing;
use proptest::prelude::*;

fn context(key: &str, now_ms: u64) -> Context {
    let credentials = [
        ("partner_id", "p-1"),
        ("partner_secret", "secret"),
        ("merchant_id", "m-1"),
    ];
    testing::egress_context("grab", &credentials, now_ms, key)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn amount_currency_reference_round_trip(
        minor in 1i64..=i64::MAX,
        currency in prop::sample::select(vec!["SGD", "MYR", "PHP", "THB", "VND", "IDR"]),
        reference in "[a-zA-Z0-9 <&>\"'/#é€-]{1,64}",
        key in "[ -~]{1,80}",
        now_ms in 0u64..4_102_444_800_000,
    ) {
        let mut payment = Payment::new(Operation::Authorize);
        payment.amount = Some(Money { minor, currency: currency.to_lowercase() });
        payment.method = Some(PaymentMethod::Ewallet(Ewallet { wallet: "grabpay".into(), phone: None }));
        payment.merchant_reference = Some(reference.clone());
        let plugin = GrabPay::init("{}").expect("config");
        let request = plugin.encode_request(&payment, &context(&key, now_ms)).expect("encoded");
        let body = request.body.clone().unwrap_or_default();
        let sent: ChargeInit = serde_json::from_slice(&body).expect("body parses");
        prop_assert_eq!(sent.amount, minor);
        prop_assert_eq!(sent.currency, currency);
        prop_assert_eq!(sent.partner_group_tx_id, reference);
        prop_assert_eq!(sent.partner_tx_id.len(), 32);

        let date = request.header("date").expect("date").to_string();
        let signature = Signed {
            method: &request.method,
            content_type: "application/json",
            date: &date,
            path: &request.path,
            body: &body,
        }
        .signature(b"secret");
        let expected = format!("p-1:{signature}");
        prop_assert_eq!(request.header("authorization"), Some(expected.as_str()));
    }

    #[test]
    fn decode_never_panics(status in 100u16..600, body in prop::collection::vec(any::<u8>(), 0..256)) {
        let plugin = GrabPay::init("{}").expect("config");
        let response = payproxy_plugin_sdk::payment::HttpResponse { status, headers: Vec::new(), body };
        let _ = plugin.decode_response(&Payment::new(Operation::Authorize), &response);
    }
}
