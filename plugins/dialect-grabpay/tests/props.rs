//! Property tests: amount, currency and merchant reference survive encoding (the body the
//! provider parses carries them exactly), the signature always verifies, and decoding gives
//! the outcome class of GrabPay's documented tables.

use dialect_grabpay::encode::ChargeInit;
use dialect_grabpay::signing::Signed;
use dialect_grabpay::GrabPay;
use payproxy_plugin_sdk::payment::{
    Context, Egress, ErrorClass, Ewallet, HttpResponse, Money, Operation, OutcomeStatus, Payment,
    PaymentMethod,
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

    /// Bytes that are not a charge response: a 2xx is ambiguous (the charge may exist), an
    /// error status is classified by the HTTP table.
    #[test]
    fn unreadable_answers_are_classified_by_status(
        status in prop_oneof![
            prop::sample::select(vec![200u16, 201, 204, 400, 401, 403, 404, 409, 422, 429, 500, 502, 503, 504]),
            100u16..600,
        ],
        body in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let outcome = decode(status, body);
        let expected = match status {
            200..=299 => Class::Error(ErrorClass::Ambiguous, "provider_error"),
            _ => Class::Error(http_row(status).0, http_row(status).1),
        };
        prop_assert_eq!(class(&outcome), expected);
    }

    /// A charge response: its `status` (and `code` when failed) decides, per the tables.
    #[test]
    fn charge_status_decides_the_outcome_class(
        http in prop::sample::select(vec![200u16, 201, 202]),
        status in prop_oneof![
            prop::sample::select(vec!["success", "authorised", "pending", "failed", "cancelled"]).prop_map(str::to_string),
            "[a-z_ ]{0,12}",
        ],
        code in proptest::option::of(prop_oneof![
            prop::sample::select(DECLINES.iter().map(|(code, _)| *code).collect::<Vec<_>>()).prop_map(str::to_string),
            "[a-z_]{0,20}",
        ]),
        reason in proptest::option::of("[ -~]{0,40}"),
    ) {
        let body = serde_json::json!({"partnerTxID": "p", "txID": "t", "status": status, "code": code, "reason": reason});
        let outcome = decode(http, body.to_string().into_bytes());
        let expected = match status.as_str() {
            "success" | "authorised" => Class::Approved,
            "pending" => Class::Pending,
            "failed" => Class::Declined(decline_row(code.as_deref().unwrap_or("failed"))),
            "cancelled" => Class::Declined("generic_decline"),
            _ => Class::Error(ErrorClass::Ambiguous, "provider_error"),
        };
        prop_assert_eq!(class(&outcome), expected);
    }
}

fn decode(status: u16, body: Vec<u8>) -> OutcomeStatus {
    let plugin = GrabPay::init("{}").expect("config");
    let response = HttpResponse {
        status,
        headers: Vec::new(),
        body,
    };
    plugin
        .decode_response(&Payment::new(Operation::Authorize), &response)
        .status
}

/// An outcome reduced to what failover acts on.
#[derive(Debug, PartialEq)]
enum Class<'a> {
    Approved,
    Pending,
    Declined(&'a str),
    Error(ErrorClass, &'a str),
    Other,
}

fn class(status: &OutcomeStatus) -> Class<'_> {
    match status {
        OutcomeStatus::Approved => Class::Approved,
        OutcomeStatus::Pending => Class::Pending,
        OutcomeStatus::Declined(d) => Class::Declined(&d.code),
        OutcomeStatus::Error(f) => Class::Error(f.class, &f.code),
        OutcomeStatus::RequiresAction(_) => Class::Other,
    }
}

/// GrabPay decline codes → normalized code (the table in the plugin's `mapping` docs),
/// written out here rather than read from the plugin.
const DECLINES: &[(&str, &str)] = &[
    ("insufficient_balance", "insufficient_funds"),
    ("wallet_blocked", "do_not_honor"),
    ("risk_rejected", "fraud_suspected"),
    ("limit_exceeded", "limit_exceeded"),
    ("wallet_not_found", "invalid_account"),
    ("authentication_failed", "authentication_required"),
    ("declined", "generic_decline"),
];

fn decline_row(code: &str) -> &'static str {
    DECLINES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or("generic_decline", |(_, normalized)| normalized)
}

/// The HTTP table of the plugin's `mapping` docs: class and normalized code of an error status.
fn http_row(status: u16) -> (ErrorClass, &'static str) {
    const ANSWERED: ErrorClass = ErrorClass::AnsweredNotProcessed;
    match status {
        500 | 503 => (ANSWERED, "provider_unavailable"),
        429 => (ANSWERED, "rate_limited"),
        400 | 404 | 409 | 422 => (ANSWERED, "invalid_request"),
        401 | 403 => (ANSWERED, "provider_auth_failed"),
        504 => (ErrorClass::Ambiguous, "provider_timeout"),
        _ => (ErrorClass::Ambiguous, "provider_error"),
    }
}
