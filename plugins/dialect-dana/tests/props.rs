//! Property tests: amount, currency and merchant reference survive encoding — the XML the
//! provider parses back carries them exactly, references with `<&>"'` included — and
//! decoding arbitrary bytes never panics.

use dialect_dana::xml::read_request;
use dialect_dana::Dana;
use payproxy_plugin_sdk::currency::from_decimal;
use payproxy_plugin_sdk::payment::{
    Context, Egress, Ewallet, HttpResponse, Money, Operation, OutcomeStatus, Payment, PaymentMethod,
};
use payproxy_plugin_sdk::testing;
use proptest::prelude::*;

fn context(key: &str) -> Context {
    let credentials = [("client_id", "c-1"), ("merchant_id", "m-1")];
    testing::egress_context("dana", &credentials, 1_700_000_000_000, key)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn amount_currency_reference_round_trip(
        minor in 1i64..=i64::MAX,
        reference in "[a-zA-Z0-9<&>\"'/#é€ -]{0,62}",
        key in "[a-zA-Z0-9<&>\"'-]{1,64}",
        operation in prop::sample::select(vec![Operation::Authorize, Operation::Refund]),
    ) {
        // Surrounding spaces are refused (tested elsewhere): frame the reference.
        let reference = format!("[{reference}]");
        let mut payment = Payment::new(operation);
        payment.amount = Some(Money { minor, currency: "IDR".into() });
        payment.method = Some(PaymentMethod::Ewallet(Ewallet { wallet: "dana".into(), phone: Some("+6281234567890".into()) }));
        payment.merchant_reference = Some(reference.clone());
        payment.provider_reference = Some("dana_sim_1".into());
        let request = Dana::init("{}").expect("config").encode_request(&payment, &context(&key)).expect("encoded");
        let text = String::from_utf8(request.body.unwrap_or_default()).expect("utf-8");
        let sent = read_request(&text).expect("well-formed XML");
        prop_assert_eq!(&sent.head.req_msg_id, &key);
        let amount = match operation {
            Operation::Authorize => {
                prop_assert_eq!(sent.body.merchant_trans_id.as_deref(), Some(reference.as_str()));
                sent.body.order.expect("order").order_amount
            }
            _ => sent.body.refund_amount.expect("refund amount"),
        };
        prop_assert_eq!(&amount.currency, "IDR");
        prop_assert_eq!(from_decimal(&amount.value, &amount.currency), Ok(minor));
    }

    #[test]
    fn decode_never_panics(status in 100u16..600, body in prop::collection::vec(any::<u8>(), 0..256)) {
        let response = HttpResponse { status, headers: Vec::new(), body };
        let outcome = Dana::init("{}").expect("config").decode_response(&Payment::new(Operation::Authorize), &response);
        // Random bytes never carry a resultInfo: always an error outcome.
        prop_assert!(matches!(outcome.status, OutcomeStatus::Error(_)));
    }

    #[test]
    fn decode_survives_hostile_text_in_xml(text in "[ -~]{0,40}") {
        let body = format!(
            "<response><body><resultInfo><resultStatus>{text}</resultStatus><resultCode>{text}</resultCode>\
             <resultMsg>{text}</resultMsg></resultInfo><checkoutUrl>{text}</checkoutUrl></body></response>"
        );
        let response = HttpResponse { status: 200, headers: Vec::new(), body: body.into_bytes() };
        let _ = Dana::init("{}").expect("config").decode_response(&Payment::new(Operation::Authorize), &response);
    }
}
