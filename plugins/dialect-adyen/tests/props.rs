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
        // The merchant's reference travels as the order reference; Adyen's `reference` is
        // the one that names this payment alone (here, no payment id: the key).
        prop_assert_eq!(sent["merchantOrderReference"].as_str(), Some(reference.as_str()));
        prop_assert_eq!(sent["reference"].as_str(), Some("idem"));
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

    /// Whatever bytes the provider answers, with the key it was sent spliced in anywhere and
    /// echoed in its headers, decoding never panics and the outcome never repeats the key.
    #[test]
    fn any_answer_decodes(
        status in 100u16..600,
        mut body in proptest::collection::vec(any::<u8>(), 0..200),
        at in any::<prop::sample::Index>(),
    ) {
        let key = sent_key();
        let at = at.index(body.len() + 1);
        body.splice(at..at, key.bytes());
        let response = HttpResponse { status, headers: echoed_headers(&key), body };
        let outcome = plugin().decode_response(&card_payment(100, "EUR", "r"), &response);
        let shown = format!("{outcome:?}");
        prop_assert!(!shown.contains(&key), "the key leaked: {}", shown);
    }

    /// An Adyen-shaped answer that echoes the key payproxy sent (a provider quoting a bad key
    /// in its error text, a debugging proxy copying request headers into the answer) in every
    /// free-text field and header: the decoded outcome never contains it. When the key is
    /// also in a field that decode passes through verbatim as the provider's own identifier,
    /// it may come back there, but never in the outcome's message or normalized code.
    #[test]
    fn echoed_key_never_reaches_the_outcome(
        answer in adyen_answer(),
        verbatim in proptest::option::of(proptest::sample::select(VERBATIM)),
    ) {
        let key = sent_key();
        let (status, operation, mut body) = answer;
        let echo = |text: &str| Value::String(text.replace("{key}", &key));
        for (field, text) in FREE_TEXT {
            body[*field] = echo(text);
        }
        body["additionalData"] = json!({"refusalReasonRaw": echo("05 : {key}"), "acquirerAccountCode": echo("{key}")});
        if let Some(field) = verbatim {
            *body.pointer_mut(field).expect("the answer has the field") = echo("{key}");
        }
        let response = HttpResponse {
            status,
            headers: echoed_headers(&key),
            body: body.to_string().into_bytes(),
        };
        let mut payment = card_payment(100, "EUR", "order-1");
        payment.operation = operation;
        payment.provider_reference = Some("8815329842815468".into());
        let outcome = plugin().decode_response(&payment, &response);
        let (code, message) = match &outcome.status {
            OutcomeStatus::Declined(d) => (d.code.as_str(), d.message.as_str()),
            OutcomeStatus::Error(f) => (f.code.as_str(), f.message.as_str()),
            _ => ("", ""),
        };
        prop_assert!(!message.contains(&key), "the key reached the message: {:?}", outcome);
        prop_assert!(!code.contains(&key), "the key reached the code: {:?}", outcome);
        if verbatim.is_none() {
            let shown = format!("{outcome:?}");
            prop_assert!(!shown.contains(&key), "the key leaked: {}", shown);
        }
    }
}

/// The API key as payproxy sends it to the provider (the `X-API-Key` header of an encoded
/// request): what a provider could echo back.
fn sent_key() -> String {
    let request = plugin()
        .encode_request(&card_payment(100, "EUR", "r"), &context())
        .expect("encodes");
    let key = request.header("x-api-key").expect("the key is sent");
    assert_eq!(key, "secret-key-123");
    key.to_string()
}

fn echoed_headers(key: &str) -> Vec<(String, String)> {
    vec![
        ("content-type".into(), "application/json".into()),
        ("x-api-key".into(), key.into()),
        (
            "www-authenticate".into(),
            format!("ApiKey realm=\"adyen\", key=\"{key}\""),
        ),
    ]
}

/// Free-text fields of Adyen answers (payments, modifications and errors) and the text the
/// provider puts there; decode must never copy any of them.
const FREE_TEXT: &[(&str, &str)] = &[
    ("message", "Invalid API key {key} for merchant account Shop"),
    ("errorType", "security: {key}"),
    ("refusalReason", "Refused, key {key}"),
    ("merchantReference", "{key}"),
    ("shopperReference", "{key}"),
];

/// Fields decode copies verbatim: the provider's references, codes and redirect URL.
const VERBATIM: &[&str] = &[
    "/pspReference",
    "/paymentPspReference",
    "/errorCode",
    "/refusalReasonCode",
    "/resultCode",
    "/status",
    "/action/url",
];

/// HTTP status, operation and an Adyen answer with every field decode reads, each with a
/// value that leads somewhere (most often a payment answer, since that has the most paths).
fn adyen_answer() -> impl Strategy<Value = (u16, Operation, Value)> {
    let status = prop_oneof![
        3 => proptest::sample::select(vec![200u16, 201, 202]),
        2 => proptest::sample::select(vec![400u16, 401, 403, 404, 422, 429, 500, 502, 503, 504]),
        1 => 100u16..600,
    ];
    let operation = prop_oneof![
        3 => Just(Operation::Authorize),
        1 => proptest::sample::select(vec![Operation::Capture, Operation::Refund, Operation::Void]),
    ];
    let result_code = proptest::sample::select(vec![
        "Authorised",
        "Refused",
        "RedirectShopper",
        "IdentifyShopper",
        "ChallengeShopper",
        "Pending",
        "Received",
        "Cancelled",
        "Error",
        "",
        "PartiallyAuthorised",
    ]);
    let refusal = proptest::sample::select(vec!["2", "6", "12", "20", "24", "46", "777", ""]);
    let modification = proptest::sample::select(vec!["received", "refused", ""]);
    (status, operation, result_code, refusal, modification, any::<bool>()).prop_map(
        |(status, operation, result_code, refusal, modification, amount)| {
            let mut body = json!({
                "status": modification,
                "pspReference": "8815329842815468",
                "paymentPspReference": "8815329842815468",
                "resultCode": result_code,
                "refusalReasonCode": refusal,
                "errorCode": "000",
                "action": {"type": "redirect", "method": "GET", "url": "https://psp.example/3ds"},
            });
            if amount {
                body["amount"] = json!({"value": 100, "currency": "EUR"});
            }
            (status, operation, body)
        },
    )
}
