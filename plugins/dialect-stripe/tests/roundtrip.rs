//! Property tests: amounts, currencies, metadata and merchant references survive the
//! dialect's round trips, and no input makes it panic.

use std::collections::BTreeMap;

use dialect_stripe::Stripe;
use payproxy_plugin_sdk::payment::{
    Card, Context, Egress, HttpRequest, HttpResponse, Money, Operation, Outcome, OutcomeStatus,
    Payment, PaymentMethod, Refusal,
};
use payproxy_plugin_sdk::storefront::{Call, Storefront};
use payproxy_plugin_sdk::testing;
use proptest::prelude::*;
use serde_json::Value;

/// Currencies with 0, 2 and 3 decimals, upper and lower case as storefronts send them.
const CURRENCIES: &[&str] = &[
    "eur", "usd", "GBP", "jpy", "KRW", "kwd", "BHD", "idr", "brl", "mxn", "sgd", "vnd", "clp",
    "isk", "tnd", "Omr",
];

fn plugin() -> Stripe {
    <Stripe as Storefront>::init("{}").expect("default config")
}

/// The payment of a payment call.
fn payment_of(call: Result<Call, Refusal>) -> Result<Payment, Refusal> {
    match call? {
        Call::Payment(c) => Ok(c.payment),
        other => panic!("not a payment call: {other:?}"),
    }
}

fn create_request(
    amount: i64,
    currency: &str,
    order_id: &str,
    metadata: &BTreeMap<String, String>,
) -> HttpRequest {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("amount", &amount.to_string())
        .append_pair("currency", currency);
    form.append_pair("metadata[order_id]", order_id);
    for (k, v) in metadata {
        form.append_pair(&format!("metadata[{k}]"), v);
    }
    form.append_pair("payment_method_data[type]", "card")
        .append_pair("payment_method_data[card][token]", "tok_visa");
    HttpRequest {
        method: "POST".into(),
        path: "/v1/payment_intents".into(),
        query: None,
        headers: vec![(
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        )],
        body: Some(form.finish().into_bytes()),
    }
}

fn metadata_strategy() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map("k_[a-z0-9_]{1,20}", "[^\\[\\]\\p{Cc}]{1,60}", 0..8)
}

fn context() -> Context {
    testing::egress_context("stripe-sim", &[("api_key", "sk_test")], 0, "k1")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parse_then_render_keeps_amount_currency_metadata(
        amount in 1i64..=1_000_000_000_000,
        currency in prop::sample::select(CURRENCIES),
        order_id in "[A-Za-z0-9-]{1,30}",
        metadata in metadata_strategy(),
    ) {
        let plugin = plugin();
        let payment = payment_of(plugin.parse(&create_request(amount, currency, &order_id, &metadata))).expect("valid request");
        prop_assert_eq!(payment.amount.as_ref(), Some(&Money { minor: amount, currency: currency.to_ascii_uppercase() }));
        prop_assert_eq!(payment.merchant_reference.as_deref(), Some(order_id.as_str()));

        let outcome = Outcome { status: OutcomeStatus::Approved, provider_reference: Some("x_1".into()), amount: None };
        let response = plugin.render_outcome(&payment, &outcome, "pi_pp_1", &[]);
        prop_assert_eq!(response.status, 200);
        let body: Value = serde_json::from_slice(&response.body).expect("JSON");
        prop_assert_eq!(&body["amount"], &Value::from(amount));
        prop_assert_eq!(&body["currency"], &Value::from(currency.to_ascii_lowercase()));
        prop_assert_eq!(&body["status"], &Value::from("succeeded"));
        let mut want: serde_json::Map<String, Value> =
            metadata.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect();
        want.insert("order_id".into(), Value::from(order_id.as_str()));
        prop_assert_eq!(&body["metadata"], &Value::Object(want));
    }

    #[test]
    fn encode_keeps_amount_currency_reference(
        amount in 1i64..=1_000_000_000_000,
        currency in prop::sample::select(CURRENCIES),
        order_id in "[^\\p{Cc}]{1,40}",
        metadata in metadata_strategy(),
        token in prop::sample::select(&["tok_visa", "pm_card_visa", "pm_1NkP2qA7b", "card_1Ab"][..]),
    ) {
        let storefront = plugin();
        let plugin = <Stripe as Egress>::init("{}").expect("default config");
        let mut payment = Payment::new(Operation::Authorize);
        payment.amount = Some(Money { minor: amount, currency: currency.to_ascii_uppercase() });
        payment.merchant_reference = Some(order_id.clone());
        payment.metadata = metadata.clone().into_iter().collect();
        payment.method = Some(PaymentMethod::Card(Card {
            token: token.into(), bin: None, last4: None, network: None, issuer_country: None,
        }));
        let request = plugin.encode_request(&payment, &context()).expect("valid payment");
        let body = request.body.expect("form body");
        let pairs: BTreeMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
        prop_assert_eq!(pairs.get("amount"), Some(&amount.to_string()));
        prop_assert_eq!(pairs.get("currency"), Some(&currency.to_ascii_lowercase()));
        prop_assert_eq!(pairs.get("metadata[order_id]"), Some(&order_id));
        for (k, v) in &metadata {
            prop_assert_eq!(pairs.get(&format!("metadata[{k}]")), Some(v));
        }

        // Our own storefront side reads the same payment back.
        let back = payment_of(storefront.parse(&HttpRequest {
            method: "POST".into(), path: request.path.clone(), query: None, headers: request.headers.clone(), body: Some(body),
        }));
        let back = back.expect("own egress output parses");
        prop_assert_eq!(back.amount, payment.amount);
        prop_assert_eq!(back.merchant_reference, payment.merchant_reference);
        prop_assert_eq!(back.method, payment.method);
    }

    #[test]
    fn arbitrary_requests_never_panic(body in prop::collection::vec(any::<u8>(), 0..300), path in "/v1/[a-z_/]{0,40}") {
        let plugin = plugin();
        let request = HttpRequest { method: "POST".into(), path, query: None, headers: vec![], body: Some(body) };
        if let Err(refusal) = plugin.parse(&request) {
            let rendered = plugin.render_refusal(&refusal);
            prop_assert!((400..600).contains(&rendered.status));
        }
    }

    #[test]
    fn arbitrary_answers_never_panic(status in 100u16..600, body in prop::collection::vec(any::<u8>(), 0..300)) {
        let plugin = <Stripe as Egress>::init("{}").expect("default config");
        let outcome = plugin.decode_response(&Payment::new(Operation::Authorize), &HttpResponse { status, headers: vec![], body });
        // Nothing readable is never approved.
        prop_assert!(!matches!(outcome.status, OutcomeStatus::Approved));
    }
}
