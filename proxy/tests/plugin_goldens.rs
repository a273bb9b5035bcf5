//! Every first-party plugin's golden fixtures (`plugins/<name>/fixtures/golden.json`), run
//! through its wasm build in the host — the same file its native tests run.

mod common;

use std::sync::Arc;

use common::*;
use payproxy::config::InstanceMode;
use payproxy::metrics::Metrics;
use payproxy::plugin::storefront::{Call, CardDetails, PaymentRecord};
use payproxy::plugin::types::{Annotation, HttpRequest, Payment, Provider};
use payproxy::plugin::{
    CompliancePlugin, Context, DialectPlugin, ProviderInfo, RouteDecision, RouterPlugin,
};
use payproxy_plugin_sdk::testing::{self, Harness};
use serde::de::DeserializeOwned;
use serde_json::Value;

fn typed<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("fixture does not match the host type: {e}\n{value:#}"))
}

fn json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap()
}

fn golden(crate_dir: &str) -> (String, String) {
    let path = format!(
        "{}/../plugins/{crate_dir}/fixtures/golden.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let config = testing::config_text(&testing::load(&text));
    (text, config)
}

fn compiled(
    wasm_name: &str,
) -> (
    Arc<payproxy::plugin::PluginHost>,
    wasmtime::component::Component,
) {
    let host = host();
    let bytes = std::fs::read(wasm(wasm_name)).unwrap();
    let component = host.compile(&bytes).unwrap().component;
    (host, component)
}

struct Dialect(DialectPlugin);

impl Harness for Dialect {
    fn parse(&self, request: Value) -> Result<Value, Value> {
        let got = self
            .0
            .parse(&typed::<HttpRequest>(request))
            .expect("parse call");
        match got {
            Ok(Call::Payment(call)) => Ok(json(&call.payment)),
            Ok(other) => Ok(json(&other)),
            Err(r) => Err(json(&r)),
        }
    }
    fn is_storefront(&self) -> bool {
        self.0.storefront_contract() == Some("0.4.0")
    }
    fn parse_call(&self, request: Value) -> Result<Value, Value> {
        let got = self
            .0
            .parse(&typed::<HttpRequest>(request))
            .expect("parse call");
        got.map(|c| json(&c)).map_err(|r| json(&r))
    }
    fn render_payment(&self, record: Value) -> Value {
        json(
            &self
                .0
                .render_payment(&typed(record))
                .expect("render-payment call"),
        )
    }
    fn render_list(&self, records: Value, has_more: bool, url: &str) -> Value {
        let records: Vec<PaymentRecord> = typed(records);
        json(
            &self
                .0
                .render_list(&records, has_more, url)
                .expect("render-list call"),
        )
    }
    fn forward_headers(&self, credentials: Value) -> Value {
        let credentials: Vec<(String, String)> = typed(credentials);
        json(
            &self
                .0
                .forward_headers(&credentials)
                .expect("forward-headers call"),
        )
    }
    fn card_lookup(&self, token: &str, credentials: Value) -> Value {
        let credentials: Vec<(String, String)> = typed(credentials);
        json(
            &self
                .0
                .card_lookup(token, &credentials)
                .expect("card-lookup call"),
        )
    }
    fn card_details(&self, response: Value) -> Value {
        json(
            &self
                .0
                .card_details(&typed(response))
                .expect("read-card call"),
        )
    }
    fn render(
        &self,
        payment: Value,
        outcome: Value,
        payment_id: &str,
        annotations: Value,
    ) -> Value {
        let annotations: Vec<Annotation> = typed(annotations);
        json(
            &self
                .0
                .render_outcome(&typed(payment), &typed(outcome), payment_id, &annotations)
                .expect("render call"),
        )
    }
    fn refusal(&self, refusal: Value) -> Value {
        json(
            &self
                .0
                .render_refusal(&typed(refusal))
                .expect("render-refusal call"),
        )
    }
    fn encode(&self, payment: Value, context: Value) -> Result<Value, Value> {
        let got = self
            .0
            .encode_request(&typed::<Payment>(payment), &typed::<Context>(context))
            .expect("encode call");
        got.map(|r| json(&r)).map_err(|r| json(&r))
    }
    fn decode(&self, payment: Value, response: Value) -> Value {
        json(
            &self
                .0
                .decode_response(&typed(payment), &typed(response))
                .expect("decode call"),
        )
    }
}

struct Compliance(CompliancePlugin);

impl Harness for Compliance {
    fn check(&self, payment: Value, card: Value) -> Value {
        let card: Option<CardDetails> = typed(card);
        json(
            &self
                .0
                .check(&typed(payment), card.as_ref())
                .expect("check call"),
        )
    }
}

struct Router(RouterPlugin);

impl Harness for Router {
    fn route(
        &self,
        request: Value,
        payment: Value,
        providers: Value,
        seed: u64,
    ) -> Result<Value, Value> {
        let payment: Option<Payment> = typed(payment);
        let providers: Vec<Provider> = typed(providers);
        match self
            .0
            .route(&typed(request), payment.as_ref(), &providers, seed)
            .expect("route call")
        {
            RouteDecision::Providers(list) => Ok(json(&list)),
            RouteDecision::Reject {
                status,
                code,
                message,
            } => Err(serde_json::json!({ "status": status, "code": code, "message": message })),
        }
    }
}

/// Run every section of the fixture file `text` through `plugin`, one section at a time, and
/// require at least `minimums[section]` cases in each. A total would let a whole section
/// (say every `parse` case, after a rename) disappear unnoticed behind the others; the
/// minimums are the counts when they were last raised, so losing cases is a visible change.
/// A section in the file that `minimums` does not name fails too: it would run unchecked.
fn run_each_section(text: &str, plugin: &dyn Harness, minimums: &[(&str, usize)]) {
    let fixtures = testing::load(text);
    for section in testing::ALL {
        let listed = minimums.iter().any(|(s, _)| s == section);
        assert!(
            listed || fixtures.get(section).is_none(),
            "section `{section}` has cases but no minimum count"
        );
    }
    for (section, min) in minimums {
        let n = testing::run_sections(text, plugin, &[section]);
        assert!(n >= *min, "section `{section}`: {n} cases, want ≥ {min}");
    }
}

fn dialect(crate_dir: &str, wasm_name: &str, minimums: &[(&str, usize)]) {
    let (text, config) = golden(crate_dir);
    let (host, component) = compiled(wasm_name);
    let metrics = Arc::new(Metrics::new());
    let plugin = DialectPlugin::load(
        &host,
        wasm_name,
        &component,
        config,
        settings(InstanceMode::Reuse),
        metrics,
    )
    .expect("dialect loads");
    run_each_section(&text, &Dialect(plugin), minimums);
}

fn compliance(crate_dir: &str, wasm_name: &str, min_checks: usize) {
    let (text, config) = golden(crate_dir);
    let (host, component) = compiled(wasm_name);
    let metrics = Arc::new(Metrics::new());
    let plugin = CompliancePlugin::load(
        &host,
        wasm_name,
        &component,
        config,
        settings(InstanceMode::Reuse),
        metrics,
    )
    .expect("compliance plugin loads");
    run_each_section(&text, &Compliance(plugin), &[("check", min_checks)]);
}

/// The Stripe fixtures' sections that contract 0.2.0 answers, with their minimum counts.
const STRIPE_PAYMENT_SECTIONS: [(&str, usize); 4] = [
    ("render", 19),
    ("refusals", 13),
    ("encode", 19),
    ("decode", 26),
];

#[test]
fn dialect_stripe() {
    let mut minimums = vec![
        ("parse", 63),
        ("render_payment", 8),
        ("render_list", 2),
        ("forward_headers", 2),
        ("card_lookup", 5),
        ("card_details", 5),
    ];
    minimums.extend(STRIPE_PAYMENT_SECTIONS);
    dialect("dialect-stripe", "dialect_stripe", &minimums);
}

/// The same Stripe logic exported through contract 0.2.0 (`plugins/fixtures/stripe-v2`):
/// a 0.2.0 ingress still loads and answers payment calls; the 0.4.0-only sections are not
/// its to answer.
#[test]
fn dialect_stripe_through_the_0_2_0_contract() {
    let (text, config) = golden("dialect-stripe");
    let (host, component) = compiled("fixture_stripe_v2");
    let plugin = DialectPlugin::load(
        &host,
        "fixture_stripe_v2",
        &component,
        config,
        settings(InstanceMode::Reuse),
        Arc::new(Metrics::new()),
    )
    .expect("a 0.2.0 dialect loads");
    assert_eq!(plugin.storefront_contract(), Some("0.2.0"));
    // Payment calls only: lists and forwards are 0.4.0's (a 0.2.0 ingress refuses them).
    let mut fixtures = testing::load(&text);
    let payment_call = |case: &Value| {
        let call = &case["call"];
        let request = &case["request"];
        let list = request["method"] == "GET" && request["path"] == "/v1/payment_intents";
        (call.is_null() || call.get("Payment").is_some()) && !list
    };
    let parse = fixtures["parse"].as_array_mut().expect("parse cases");
    parse.retain(payment_call);
    // Drop the 0.4.0-only sections: each would fail here, and none has a minimum below.
    if let Value::Object(sections) = &mut fixtures {
        sections.retain(|name, _| {
            !testing::ALL.contains(&name.as_str())
                || name == "parse"
                || STRIPE_PAYMENT_SECTIONS.iter().any(|(s, _)| s == name)
        });
    }
    let mut minimums = vec![("parse", 37)];
    minimums.extend(STRIPE_PAYMENT_SECTIONS);
    run_each_section(&fixtures.to_string(), &Dialect(plugin), &minimums);
}

#[test]
fn dialect_adyen() {
    dialect(
        "dialect-adyen",
        "dialect_adyen",
        &[("encode", 18), ("decode", 29)],
    );
}

#[test]
fn dialect_grabpay() {
    dialect(
        "dialect-grabpay",
        "dialect_grabpay",
        &[("encode", 17), ("decode", 16)],
    );
}

#[test]
fn dialect_dana() {
    dialect(
        "dialect-dana",
        "dialect_dana",
        &[("encode", 18), ("decode", 21)],
    );
}

#[test]
fn dialect_ideal() {
    dialect(
        "dialect-ideal",
        "dialect_ideal",
        &[("encode", 22), ("decode", 22)],
    );
}

#[test]
fn dialect_pix() {
    dialect(
        "dialect-pix",
        "dialect_pix",
        &[("encode", 21), ("decode", 22)],
    );
}

#[test]
fn compliance_psd2_sca() {
    compliance("compliance-psd2-sca", "compliance_psd2_sca", 36);
}

#[test]
fn compliance_kyc() {
    compliance("compliance-kyc", "compliance_kyc", 19);
}

#[test]
fn compliance_limits() {
    compliance("compliance-limits", "compliance_limits", 27);
}

#[test]
fn router_regional() {
    let (text, config) = golden("router-regional");
    let metrics = Arc::new(Metrics::new());
    let configured: Vec<ProviderInfo> =
        serde_json::from_value(testing::provider_catalogue(&testing::load(&text)))
            .expect("provider-info values");
    let plugin = load_router_with(
        &host(),
        "router_regional",
        &config,
        &configured,
        InstanceMode::Reuse,
        &metrics,
    )
    .expect("router loads");
    assert_eq!(plugin.contract(), "0.3.0");
    run_each_section(&text, &Router(plugin), &[("route", 29)]);
}
