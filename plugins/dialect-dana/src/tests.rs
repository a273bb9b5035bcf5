//! Unit tests for what the golden fixtures cannot show: credentials (the fixture file has
//! one context), escaping of hostile references, and the exact XML produced.

use payproxy_plugin_sdk::payment::{
    Context, Egress, Ewallet, HttpResponse, Money, Operation, OutcomeStatus, Payment,
    PaymentMethod, RefusalKind,
};
use payproxy_plugin_sdk::testing;

use crate::xml::read_request;
use crate::Dana;

const PHONE: &str = "+6281234567890";

fn context(credentials: &[(&str, &str)]) -> Context {
    testing::egress_context("dana-id", credentials, 1_700_000_000_000, "idem-1")
}

fn full_context() -> Context {
    context(&[("client_id", "client-1"), ("merchant_id", "m-1")])
}

fn charge(minor: i64, reference: &str) -> Payment {
    let mut payment = Payment::new(Operation::Authorize);
    payment.amount = Some(Money {
        minor,
        currency: "IDR".into(),
    });
    payment.method = Some(PaymentMethod::Ewallet(Ewallet {
        wallet: "dana".into(),
        phone: Some(PHONE.into()),
    }));
    payment.merchant_reference = Some(reference.into());
    payment
}

fn plugin() -> Dana {
    Dana::init("{}").expect("default config")
}

fn body_text(payment: &Payment) -> String {
    let request = plugin()
        .encode_request(payment, &full_context())
        .expect("encoded");
    String::from_utf8(request.body.unwrap_or_default()).expect("utf-8")
}

#[test]
fn exact_xml_of_a_create() {
    assert_eq!(
        body_text(&charge(15_000_000, "order-1")),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><request><head><version>2.0</version>\
         <function>dana.acquiring.order.create</function><clientId>client-1</clientId>\
         <reqTime>2023-11-15T05:13:20+07:00</reqTime><reqMsgId>idem-1</reqMsgId></head><body>\
         <merchantId>m-1</merchantId><merchantTransId>order-1</merchantTransId><order>\
         <orderTitle>Payment</orderTitle><orderAmount><value>150000.00</value>\
         <currency>IDR</currency></orderAmount></order><shopperPhone>+6281234567890</shopperPhone>\
         </body></request>"
    );
}

#[test]
fn hostile_references_are_escaped_and_read_back_intact() {
    let reference = r#"a<b>&c"d'e</body>]]>"#;
    let text = body_text(&charge(100, reference));
    assert!(
        text.contains(
            "<merchantTransId>a&lt;b&gt;&amp;c&quot;d&apos;e&lt;/body&gt;]]&gt;</merchantTransId>"
        ),
        "{text}"
    );
    let parsed = read_request(&text).expect("well-formed");
    assert_eq!(parsed.body.merchant_trans_id.as_deref(), Some(reference));
}

#[test]
fn references_xml_cannot_carry_are_refused() {
    for reference in [
        "",
        " padded",
        "padded ",
        "a\u{0}b",
        "a\u{1b}b",
        "a\u{FFFF}",
        &"x".repeat(65),
    ] {
        let refusal = plugin()
            .encode_request(&charge(100, reference), &full_context())
            .expect_err(reference);
        assert_eq!(refusal.code, "parameter_invalid", "{reference:?}");
    }
}

#[test]
fn missing_credentials_refuse_without_naming_values() {
    for credentials in [
        &[][..],
        &[("client_id", "client-1")][..],
        &[("merchant_id", "m-1"), ("client_id", "")][..],
    ] {
        let refusal = plugin()
            .encode_request(&charge(100, "o"), &context(credentials))
            .expect_err("refused");
        assert_eq!(refusal.code, "provider_misconfigured");
        assert_eq!(refusal.status, 500);
        assert_eq!(refusal.kind, RefusalKind::Unavailable);
        assert!(
            !refusal.message.contains("client-1") && !refusal.message.contains("m-1"),
            "{}",
            refusal.message
        );
    }
}

#[test]
fn phone_refusals_never_repeat_the_number() {
    let mut payment = charge(100, "o");
    payment.method = Some(PaymentMethod::Ewallet(Ewallet {
        wallet: "dana".into(),
        phone: Some("0812-3456-7890".into()),
    }));
    let refusal = plugin()
        .encode_request(&payment, &full_context())
        .expect_err("refused");
    assert_eq!(refusal.code, "phone_invalid");
    assert!(!refusal.message.contains("3456"), "{}", refusal.message);
    // The customer's phone stands in for the wallet's.
    payment.method = Some(PaymentMethod::Ewallet(Ewallet {
        wallet: "dana".into(),
        phone: None,
    }));
    payment.customer.phone = Some(PHONE.into());
    assert!(body_text(&payment).contains("<shopperPhone>+6281234567890</shopperPhone>"));
}

#[test]
fn description_control_characters_are_dropped() {
    let mut payment = charge(100, "o");
    payment.description = Some("Kopi\u{0} & <roti>".into());
    let text = body_text(&payment);
    assert!(
        text.contains("<orderTitle>Kopi &amp; &lt;roti&gt;</orderTitle>"),
        "{text}"
    );
}

#[test]
fn decode_survives_any_body() {
    let plugin = plugin();
    for status in [200u16, 400, 500, 302] {
        for body in [
            &b""[..],
            b"\xff",
            b"<response>",
            b"<response><body></body></response>",
            b"{}",
            b"<a></b>",
            // quick-xml's serde support, which read answers before, panicked on this one.
            b"<response><body><resultInfo> <resultCode>S<!DOCTYPE x> </resultCode></resultInfo></body></response>",
        ] {
            let response = HttpResponse {
                status,
                headers: Vec::new(),
                body: body.to_vec(),
            };
            let outcome = plugin.decode_response(&charge(100, "o"), &response);
            assert!(
                matches!(outcome.status, OutcomeStatus::Error(_)),
                "{status} {body:?}"
            );
        }
    }
}
