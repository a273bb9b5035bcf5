//! Property tests: amount, currency and merchant reference survive encoding — the XML the
//! provider parses back carries them exactly, references with `<&>"'` included — and
//! decoding gives the outcome class DANA's result table documents, whatever the text.

use dialect_dana::xml::{read_request, read_response, Response};
use dialect_dana::Dana;
use payproxy_plugin_sdk::currency::from_decimal;
use payproxy_plugin_sdk::payment::{
    Context, Egress, ErrorClass, Ewallet, HttpResponse, Money, Operation, OutcomeStatus, Payment,
    PaymentMethod,
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

    /// A well-formed answer, its texts escaped as a provider escapes them (`<&>"'` and all):
    /// the outcome is the one of the documented result table.
    #[test]
    fn result_info_decides_the_outcome_class(
        status in prop_oneof![known(&["S", "F", "A", "U", ""]), "[ -~]{0,40}"],
        code in prop_oneof![result_code(), "[ -~]{0,40}"],
        message in "[ -~]{0,40}",
        checkout in prop_oneof![Just(String::new()), Just(" ".to_string()), "[ -~]{0,40}"],
    ) {
        let body = format!(
            "<response><body><resultInfo><resultStatus>{}</resultStatus><resultCode>{}</resultCode>\
             <resultMsg>{}</resultMsg></resultInfo><checkoutUrl>{}</checkoutUrl></body></response>",
            escape(&status), escape(&code), escape(&message), escape(&checkout),
        );
        let outcome = decode(200, body.into_bytes());
        prop_assert_eq!(class(&outcome), documented(&status, &code, &checkout));
    }

    /// Provider text that breaks the markup (an unescaped `<` or `&`): the answer has no
    /// readable resultInfo, so the order may exist: ambiguous.
    #[test]
    fn broken_markup_is_ambiguous(
        before in "[ -%'-;=-~]{0,20}",
        broken in prop::sample::select(vec!["<", "&", "< ", "& ", "&;", "</resultInfo>", "<resultInfo>"]),
        after in "[ -%'-;=-~]{0,20}",
    ) {
        let text = format!("{before}{broken}{after}");
        let body = format!(
            "<response><body><resultInfo><resultStatus>{text}</resultStatus><resultCode>{text}</resultCode>\
             <resultMsg>{text}</resultMsg></resultInfo><checkoutUrl>{text}</checkoutUrl></body></response>"
        );
        let outcome = decode(200, body.into_bytes());
        prop_assert_eq!(class(&outcome), Class::Error(ErrorClass::Ambiguous, "provider_error"));
    }
}

fn decode(status: u16, body: Vec<u8>) -> OutcomeStatus {
    let response = HttpResponse {
        status,
        headers: Vec::new(),
        body,
    };
    let plugin = Dana::init("{}").expect("config");
    plugin
        .decode_response(&Payment::new(Operation::Authorize), &response)
        .status
}

fn known(values: &[&'static str]) -> BoxedStrategy<String> {
    prop::sample::select(values.to_vec())
        .prop_map(str::to_string)
        .boxed()
}

/// A listed result code, or `SUCCESS` (which only `S` comes with).
fn result_code() -> BoxedStrategy<String> {
    let mut codes: Vec<&str> = RESULT_CODES.iter().map(|(code, _)| *code).collect();
    codes.push("SUCCESS");
    known(&codes)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An outcome reduced to what failover acts on.
#[derive(Debug, PartialEq)]
enum Class<'a> {
    Approved,
    Redirect,
    Pending,
    Declined(&'a str),
    Error(ErrorClass, &'a str),
}

fn class(status: &OutcomeStatus) -> Class<'_> {
    match status {
        OutcomeStatus::Approved => Class::Approved,
        OutcomeStatus::RequiresAction(_) => Class::Redirect,
        OutcomeStatus::Pending => Class::Pending,
        OutcomeStatus::Declined(d) => Class::Declined(&d.code),
        OutcomeStatus::Error(f) => Class::Error(f.class, &f.code),
    }
}

const ANSWERED: ErrorClass = ErrorClass::AnsweredNotProcessed;

/// DANA's result codes and what they mean (the table in the plugin's `mapping` docs),
/// written out here rather than read from the plugin.
const RESULT_CODES: &[(&str, Class<'static>)] = &[
    (
        "SYSTEM_ERROR",
        Class::Error(ANSWERED, "provider_unavailable"),
    ),
    (
        "REQUEST_TRAFFIC_EXCEED_LIMIT",
        Class::Error(ANSWERED, "rate_limited"),
    ),
    ("PARAM_ILLEGAL", Class::Error(ANSWERED, "invalid_request")),
    ("ORDER_NOT_EXIST", Class::Error(ANSWERED, "invalid_request")),
    (
        "ORDER_STATUS_INVALID",
        Class::Error(ANSWERED, "invalid_request"),
    ),
    (
        "REFUND_AMOUNT_EXCEED",
        Class::Error(ANSWERED, "invalid_request"),
    ),
    (
        "REPEAT_REQ_INCONSISTENT",
        Class::Error(ANSWERED, "invalid_request"),
    ),
    ("INVALID_CLIENT", Class::Error(ANSWERED, "invalid_request")),
    (
        "INSUFFICIENT_BALANCE",
        Class::Declined("insufficient_funds"),
    ),
    (
        "USER_AMOUNT_EXCEED_LIMIT",
        Class::Declined("limit_exceeded"),
    ),
    ("USER_STATUS_ABNORMAL", Class::Declined("do_not_honor")),
    ("USER_NOT_EXIST", Class::Declined("invalid_account")),
    ("RISK_REJECT", Class::Declined("fraud_suspected")),
];

/// The documented outcome of an authorize answer: `S` succeeds whatever the code (to the
/// checkout page when there is one); otherwise a listed code decides; otherwise `F` is a
/// generic decline, `A` pending and anything else ambiguous.
fn documented(status: &str, code: &str, checkout: &str) -> Class<'static> {
    if status == "S" {
        return match checkout.trim() {
            "" => Class::Approved,
            _ => Class::Redirect,
        };
    }
    let listed = RESULT_CODES.iter().find(|(c, _)| *c == code);
    match (listed, status) {
        (Some((_, Class::Error(class, code))), _) => Class::Error(*class, code),
        (Some((_, Class::Declined(code))), _) => Class::Declined(code),
        (_, "F") => Class::Declined("generic_decline"),
        (_, "A") => Class::Pending,
        _ => Class::Error(ErrorClass::Ambiguous, "provider_error"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The answer reader reads what quick-xml's serde support reads from the same bytes
    /// (whitespace at a text's ends kept, as serde keeps it):
    /// known elements in any order and subset, texts with references, character references
    /// and CDATA, comments, unknown elements (holding known names too) skipped whole.
    #[test]
    fn the_reader_agrees_with_serde(answer in answer()) {
        let ours = read_response(answer.as_bytes());
        let serde: Option<Response> = quick_xml::de::from_str(&answer).ok();
        prop_assert_eq!(&ours, &serde, "{}", answer);
        prop_assert!(ours.is_some(), "a well-formed answer was refused: {}", answer);
    }

    /// Each known element at most once: a repeated one makes the answer unreadable
    /// (serde refuses it too), so a second `resultStatus` never overrides the first. A
    /// namespace prefix does not make another element of it: serde matched names without
    /// their prefix, and so does the reader.
    #[test]
    fn a_repeated_element_makes_the_answer_unreadable(
        name in prop::sample::select(vec![
            "resultInfo", "resultStatus", "resultCode", "acquirementId", "checkoutUrl", "body",
        ]),
        prefix in prop::sample::select(vec!["", "a:", "dana:"]),
    ) {
        let answer = "<response><body><resultInfo><resultStatus>S</resultStatus>\
            <resultCode>SUCCESS</resultCode></resultInfo><acquirementId>a1</acquirementId>\
            <checkoutUrl>u</checkoutUrl></body></response>";
        // A declined repeat in front of the approved element.
        let repeat = match name {
            "resultInfo" | "body" => "<resultInfo><resultStatus>F</resultStatus>\
                <resultCode>INSUFFICIENT_BALANCE</resultCode></resultInfo>",
            _ => "F",
        };
        let repeated = answer.replacen(
            &format!("<{name}>"),
            &format!("<{prefix}{name}>{repeat}</{prefix}{name}><{name}>"),
            1,
        );
        prop_assert!(read_response(answer.as_bytes()).is_some());
        prop_assert_eq!(read_response(repeated.as_bytes()), None, "{}", repeated);
        prop_assert!(quick_xml::de::from_str::<Response>(&repeated).is_err(), "{}", repeated);
    }

    /// A reference that resolves to no character, or to an entity XML does not define, makes
    /// the answer unreadable wherever it is: in a field, between elements, inside an element
    /// the reader skips. serde refused the first two; inside an element it skipped it did not
    /// look, and the reader is stricter there.
    #[test]
    fn a_damaged_reference_anywhere_makes_the_answer_unreadable(
        reference in prop::sample::select(vec!["&#0;", "&#xD800;", "&#x;", "&s;", "&nbsp;"]),
        at in 0usize..4,
    ) {
        let places = [
            "<resultCode>SUCCESS{r}</resultCode>",
            "<resultCode>SUCCESS</resultCode>{r}",
            "<resultCode>SUCCESS</resultCode><extendInfo><x>{r}</x></extendInfo>",
            "<resultCode>SUCCESS</resultCode></resultInfo>{r}<resultInfo2>",
        ];
        let body = places[at].replace("{r}", reference);
        let answer = format!(
            "<response><body><resultInfo><resultStatus>S</resultStatus>{body}</resultInfo>\
             </body></response>"
        )
        .replace("<resultInfo2></resultInfo>", "");
        prop_assert_eq!(read_response(answer.as_bytes()), None, "{}", answer);
        if at != 2 {
            prop_assert!(quick_xml::de::from_str::<Response>(&answer).is_err(), "{}", answer);
        }
    }
}

/// A text as a provider may write it: plain characters, spaces, tabs and line ends, the five
/// predefined references, character references and a CDATA section.
fn text() -> BoxedStrategy<String> {
    let piece = prop_oneof![
        "[a-zA-Z0-9 ./:_-]{1,8}",
        prop::sample::select(vec![
            "&amp;",
            "&lt;",
            "&gt;",
            "&quot;",
            "&apos;",
            "&#233;",
            "&#x20AC;",
            "<![CDATA[a<b&c]]>",
            "\r\n",
            "\t",
            "é",
        ])
        .prop_map(str::to_string),
    ];
    prop::collection::vec(piece, 1..5)
        .prop_map(|pieces| pieces.concat())
        .boxed()
}

fn leaf(name: &'static str) -> BoxedStrategy<String> {
    text()
        .prop_map(move |raw| format!("<{name}>{raw}</{name}>"))
        .boxed()
}

/// An element the reader does not know, holding one it does.
fn unknown() -> BoxedStrategy<String> {
    prop_oneof![
        Just(
            "<extendInfo><resultInfo><resultStatus>F</resultStatus></resultInfo></extendInfo>"
                .to_string()
        ),
        Just("<paymentView/>".to_string()),
        Just("<!-- a comment -->".to_string()),
        leaf("resultDetail"),
    ]
    .boxed()
}

/// Some of `elements`, in any order, with unknown ones between.
fn shuffled(elements: Vec<BoxedStrategy<String>>) -> BoxedStrategy<String> {
    let optional: Vec<_> = elements.into_iter().map(prop::option::of).collect();
    (optional, prop::collection::vec(unknown(), 0..3))
        .prop_flat_map(|(present, unknown)| {
            let all: Vec<String> = present.into_iter().flatten().chain(unknown).collect();
            Just(all).prop_shuffle()
        })
        .prop_map(|parts| parts.concat())
        .boxed()
}

fn answer() -> BoxedStrategy<String> {
    let result_info = (
        leaf("resultStatus"),
        leaf("resultCode"),
        shuffled(vec![leaf("resultCodeId"), leaf("resultMsg")]),
    )
        .prop_map(|(status, code, rest)| format!("<resultInfo>{status}{rest}{code}</resultInfo>"));
    let amount = (leaf("value"), leaf("currency"))
        .prop_map(|(value, currency)| format!("<orderAmount>{currency}{value}</orderAmount>"));
    let body = shuffled(vec![
        result_info.boxed(),
        leaf("acquirementId"),
        leaf("merchantTransId"),
        leaf("checkoutUrl"),
        leaf("acquirementStatus"),
        amount.boxed(),
        leaf("refundId"),
    ]);
    let head = shuffled(vec![leaf("function"), leaf("reqMsgId"), leaf("version")]);
    (any::<bool>(), head, body, "[ \n]{0,2}").prop_map(|(declared, head, body, space)| {
        let declaration = if declared { r#"<?xml version="1.0" encoding="UTF-8"?>"# } else { "" };
        format!("{declaration}{space}<response>{space}<head>{head}</head>{space}<body>{body}</body></response>")
    })
    .boxed()
}
