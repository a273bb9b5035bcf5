//! Every first-party plugin's golden fixtures (`plugins/<name>/fixtures/golden.json`), run
//! through its wasm build in the host — the same file its native tests run.

mod common;

use std::sync::Arc;

use common::*;
use payproxy::config::InstanceMode;
use payproxy::metrics::Metrics;
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
            .parse_request(&typed::<HttpRequest>(request))
            .expect("parse-request call");
        got.map(|p| json(&p)).map_err(|r| json(&r))
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
    fn check(&self, payment: Value) -> Value {
        json(&self.0.check(&typed(payment)).expect("check call"))
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

fn dialect(crate_dir: &str, wasm_name: &str) -> usize {
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
    testing::run(&text, &Dialect(plugin))
}

fn compliance(crate_dir: &str, wasm_name: &str) -> usize {
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
    testing::run(&text, &Compliance(plugin))
}

#[test]
fn dialect_stripe() {
    assert!(dialect("dialect-stripe", "dialect_stripe") >= 20);
}

#[test]
fn dialect_adyen() {
    assert!(dialect("dialect-adyen", "dialect_adyen") >= 10);
}

#[test]
fn dialect_grabpay() {
    assert!(dialect("dialect-grabpay", "dialect_grabpay") >= 10);
}

#[test]
fn dialect_dana() {
    assert!(dialect("dialect-dana", "dialect_dana") >= 10);
}

#[test]
fn dialect_ideal() {
    assert!(dialect("dialect-ideal", "dialect_ideal") >= 10);
}

#[test]
fn dialect_pix() {
    assert!(dialect("dialect-pix", "dialect_pix") >= 10);
}

#[test]
fn compliance_psd2_sca() {
    assert!(compliance("compliance-psd2-sca", "compliance_psd2_sca") >= 8);
}

#[test]
fn compliance_kyc() {
    assert!(compliance("compliance-kyc", "compliance_kyc") >= 8);
}

#[test]
fn compliance_limits() {
    assert!(compliance("compliance-limits", "compliance_limits") >= 8);
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
    assert!(testing::run(&text, &Router(plugin)) >= 10);
}
