//! Unit tests for what the golden fixtures cannot show: credentials handling (the fixture
//! file has one context), the signature over the exact bytes sent, and id derivation.

use payproxy_plugin_sdk::payment::{
    Context, Egress, Ewallet, HttpResponse, Money, Operation, OutcomeStatus, Payment,
    PaymentMethod, RefusalKind,
};
use payproxy_plugin_sdk::testing;

use crate::encode::partner_tx_id;
use crate::signing::Signed;
use crate::GrabPay;

const SECRET: &str = "s3cr3t-value";

fn context(credentials: &[(&str, &str)]) -> Context {
    testing::egress_context("grab-sg", credentials, 1_700_000_000_000, "idem-1")
}

fn full_context() -> Context {
    context(&[
        ("partner_id", "partner-1"),
        ("partner_secret", SECRET),
        ("merchant_id", "m-1"),
    ])
}

fn charge(minor: i64) -> Payment {
    let mut payment = Payment::new(Operation::Authorize);
    payment.amount = Some(Money {
        minor,
        currency: "SGD".into(),
    });
    payment.method = Some(PaymentMethod::Ewallet(Ewallet {
        wallet: "grabpay".into(),
        phone: None,
    }));
    payment.merchant_reference = Some("order-1".into());
    payment
}

fn plugin() -> GrabPay {
    GrabPay::init("{}").expect("default config")
}

#[test]
fn partner_tx_id_is_a_stable_sha256_prefix() {
    // python3 -c 'import hashlib; print(hashlib.sha256(b"idem-1").hexdigest()[:32])'
    assert_eq!(partner_tx_id("idem-1"), "d05b61bd4b70e0d9a197ac9360f8c24e");
    assert_eq!(partner_tx_id("idem-1"), partner_tx_id("idem-1"));
    assert_ne!(partner_tx_id("idem-1"), partner_tx_id("idem-2"));
}

#[test]
fn missing_credentials_refuse_without_naming_values() {
    let cases: &[&[(&str, &str)]] = &[
        &[],
        &[("partner_id", "partner-1"), ("merchant_id", "m-1")],
        &[
            ("partner_id", "partner-1"),
            ("partner_secret", ""),
            ("merchant_id", "m-1"),
        ],
        &[("partner_secret", SECRET), ("merchant_id", "m-1")],
        &[("partner_id", "partner-1"), ("partner_secret", SECRET)],
    ];
    for credentials in cases {
        let refusal = plugin()
            .encode_request(&charge(1000), &context(credentials))
            .expect_err("refused");
        assert_eq!(refusal.code, "provider_misconfigured");
        assert_eq!(refusal.status, 500);
        assert_eq!(refusal.kind, RefusalKind::Unavailable);
        assert!(refusal.message.contains("grab-sg"), "{}", refusal.message);
        assert!(!refusal.message.contains(SECRET), "{}", refusal.message);
    }
    // Follow-ups need them too.
    let mut status = Payment::new(Operation::Status);
    status.provider_reference = Some("grab_x_1".into());
    let refusal = plugin()
        .encode_request(&status, &context(&[]))
        .expect_err("refused");
    assert_eq!(refusal.code, "provider_misconfigured");
}

#[test]
fn invalid_input_is_refused_before_credentials_are_looked_at() {
    let mut payment = charge(1000);
    payment.amount = None;
    let refusal = plugin()
        .encode_request(&payment, &context(&[]))
        .expect_err("refused");
    assert_eq!(refusal.code, "parameter_missing");
}

#[test]
fn the_signature_covers_the_exact_request_sent() {
    let request = plugin()
        .encode_request(&charge(1000), &full_context())
        .expect("encoded");
    let body = request.body.clone().unwrap_or_default();
    let date = request.header("date").expect("date");
    assert_eq!(date, "Tue, 14 Nov 2023 22:13:20 GMT");
    let want = Signed {
        method: "POST",
        content_type: "application/json",
        date,
        path: "/grabpay/v2/charge/init",
        body: &body,
    }
    .signature(SECRET.as_bytes());
    assert_eq!(
        request.header("authorization"),
        Some(format!("partner-1:{want}").as_str())
    );
    assert!(!String::from_utf8_lossy(&body).contains(SECRET));
}

#[test]
fn status_without_reference_uses_the_partner_tx_id_and_signs_an_empty_body() {
    let request = plugin()
        .encode_request(&Payment::new(Operation::Status), &full_context())
        .expect("encoded");
    assert_eq!(request.method, "GET");
    assert_eq!(
        request.path,
        format!("/grabpay/v2/charge/{}/status", partner_tx_id("idem-1"))
    );
    assert_eq!(request.header("content-type"), None);
    let date = request.header("date").expect("date");
    let want = Signed {
        method: "GET",
        content_type: "",
        date,
        path: &request.path,
        body: b"",
    }
    .signature(SECRET.as_bytes());
    assert_eq!(
        request.header("authorization"),
        Some(format!("partner-1:{want}").as_str())
    );
}

#[test]
fn hostile_provider_references_never_reach_the_path() {
    let mut capture = Payment::new(Operation::Capture);
    capture.provider_reference = Some("../init?x=1".into());
    let refusal = plugin()
        .encode_request(&capture, &full_context())
        .expect_err("refused");
    assert_eq!(refusal.code, "parameter_invalid");
}

#[test]
fn decode_survives_any_body() {
    let plugin = plugin();
    for status in [200u16, 201, 302, 401, 500, 599] {
        for body in [
            &b""[..],
            b"\xff\xfe",
            b"{",
            b"[]",
            br#"{"status":7}"#,
            br#"{"code":{}}"#,
        ] {
            let outcome = plugin.decode_response(
                &charge(1000),
                &HttpResponse {
                    status,
                    headers: Vec::new(),
                    body: body.to_vec(),
                },
            );
            assert!(
                matches!(outcome.status, OutcomeStatus::Error(_)),
                "{status} {body:?}"
            );
        }
    }
}
