//! Golden fixtures (the SDK's `testing` format) run through the host: the component is
//! loaded for its role exactly as a config's plugin is (same sandbox, CPU deadline, memory
//! cap and output checks), and each case is one call into it. `payproxy plugin test` and
//! the host's golden tests both run fixtures through this module.

use std::sync::Arc;

use payproxy_plugin_sdk::testing::{self, CaseReport, Harness};
use serde::de::DeserializeOwned;
use serde_json::Value;
use wasmtime::component::Component;

use super::bindings::exports::{
    COMPLIANCE, COMPLIANCE_V4, EGRESS, EGRESS_V4, INGRESS, ROUTER_V1, ROUTER_V2, ROUTER_V3,
    ROUTER_V4, STOREFRONT,
};
use super::storefront::{Call, CardDetails, PaymentRecord};
use super::types::{Annotation, HttpRequest, Payment, Provider};
use super::{
    CompliancePlugin, Context, DialectPlugin, PluginHost, ProviderInfo, RouteDecision,
    RouterPlugin, SandboxSettings,
};
use crate::config::{PluginHostConfig, Role};
use crate::error::PluginFailure;
use crate::metrics::Metrics;

/// The role a component implements, from its exports (`None`: no role's export).
pub fn role_of(host: &PluginHost, component: &Component) -> Option<Role> {
    let exports = host.export_names(component);
    let has = |names: &[&str]| exports.iter().any(|e| names.contains(&e.as_str()));
    if has(&[ROUTER_V4, ROUTER_V3, ROUTER_V2, ROUTER_V1]) {
        Some(Role::Router)
    } else if has(&[COMPLIANCE_V4, COMPLIANCE]) {
        Some(Role::Compliance)
    } else if has(&[STOREFRONT, INGRESS, EGRESS_V4, EGRESS]) {
        Some(Role::Dialect)
    } else {
        None
    }
}

/// A plugin loaded for its fixtures.
pub enum Loaded {
    /// A router of any contract version.
    Router(RouterPlugin),
    /// A compliance plugin.
    Compliance(CompliancePlugin),
    /// A dialect, with whichever sides it has.
    Dialect(Box<DialectPlugin>),
}

impl Loaded {
    /// Load `component` for `role` with the plugin config `config_json`, under `limits`
    /// (instance mode, CPU deadline, memory cap) as a config's `plugin_host` sets them. A
    /// 0.3.0 router gets the fixture file's provider catalogue at `init`.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        host: &Arc<PluginHost>,
        name: &str,
        compiled: &super::Compiled,
        role: Role,
        config_json: String,
        fixtures: &Value,
        limits: &PluginHostConfig,
    ) -> Result<Loaded, String> {
        let settings = SandboxSettings {
            mode: limits.instance_mode,
            recycle_after: limits.recycle_after,
            deadline_ms: limits.deadline_ms,
            memory_bytes: (limits.memory_mb as usize) << 20,
            identity: (role.as_str(), compiled.sha256.clone()),
        };
        let metrics = Arc::new(Metrics::new());
        let component = &compiled.component;
        Ok(match role {
            Role::Router => {
                let catalogue: Vec<ProviderInfo> =
                    serde_json::from_value(testing::try_provider_catalogue(fixtures)?)
                        .map_err(|e| format!("the route cases' providers: {e}"))?;
                Loaded::Router(RouterPlugin::load(
                    host,
                    name,
                    component,
                    config_json,
                    &catalogue,
                    settings,
                    metrics,
                )?)
            }
            Role::Compliance => Loaded::Compliance(CompliancePlugin::load(
                host,
                name,
                component,
                config_json,
                settings,
                metrics,
            )?),
            Role::Dialect => Loaded::Dialect(Box::new(DialectPlugin::load(
                host,
                name,
                component,
                config_json,
                settings,
                metrics,
            )?)),
        })
    }

    /// What was loaded, e.g. `dialect (storefront 0.4.0, egress)`.
    pub fn describe(&self) -> String {
        match self {
            Loaded::Router(r) => format!("router (contract {})", r.contract()),
            Loaded::Compliance(c) => format!("compliance (contract {})", c.contract()),
            Loaded::Dialect(d) => {
                let mut sides = Vec::new();
                if let Some(v) = d.storefront_contract() {
                    sides.push(format!("storefront {v}"));
                }
                if d.has_egress() {
                    sides.push("egress".to_string());
                }
                format!("dialect ({})", sides.join(", "))
            }
        }
    }

    /// The fixture sections this plugin answers.
    pub fn sections(&self) -> Vec<&'static str> {
        match self {
            Loaded::Router(_) => vec!["route"],
            Loaded::Compliance(_) => vec!["check"],
            Loaded::Dialect(d) => {
                let mut sections = Vec::new();
                match d.storefront_contract() {
                    Some("0.4.0") => sections.extend([
                        "parse",
                        "render",
                        "refusals",
                        "render_payment",
                        "render_list",
                        "forward_headers",
                        "card_lookup",
                        "card_details",
                    ]),
                    Some(_) => sections.extend(["parse", "render", "refusals"]),
                    None => {}
                }
                if d.has_egress() {
                    sections.extend(["encode", "decode"]);
                }
                sections
            }
        }
    }

    fn harness(&self) -> &dyn Harness {
        match self {
            Loaded::Router(r) => r,
            Loaded::Compliance(c) => c,
            Loaded::Dialect(d) => d.as_ref(),
        }
    }

    /// Run every case of a fixture file. `Err` when the file cannot be run as a whole: a key
    /// that is neither a section nor a setting (a misspelt section would otherwise never
    /// run), or a section this plugin does not answer.
    pub fn run(&self, fixtures: &Value) -> Result<Vec<CaseReport>, String> {
        let Value::Object(map) = fixtures else {
            return Err("a fixture file is a JSON object".into());
        };
        let sections = self.sections();
        for key in map.keys() {
            // Settings, and `_…` keys: comments.
            if testing::SETTINGS.contains(&key.as_str()) || key.starts_with('_') {
                continue;
            }
            if !testing::ALL.contains(&key.as_str()) {
                return Err(format!(
                    "unknown key `{key}`: a fixture file has the sections {}, the settings {} and `_…` comments",
                    testing::ALL.join(", "),
                    testing::SETTINGS.join(", ")
                ));
            }
            if !sections.contains(&key.as_str()) {
                return Err(format!(
                    "section `{key}` is not for this plugin, a {} (its sections: {})",
                    self.describe(),
                    sections.join(", ")
                ));
            }
        }
        testing::evaluate(fixtures, self.harness(), &sections)
    }
}

fn typed<T: DeserializeOwned>(value: Value) -> Result<T, Value> {
    serde_json::from_value(value)
        .map_err(|e| testing::call_error(format!("fixture input does not match the contract: {e}")))
}

fn json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or_else(testing::call_error)
}

/// A call's answer as JSON, or the failure as [`testing::call_error`].
fn answer<T: serde::Serialize>(call: Result<T, PluginFailure>) -> Value {
    match call {
        Ok(v) => json(&v),
        Err(failure) => testing::call_error(failure),
    }
}

/// An `Ok`/`Err` answer (`parse`, `encode`, `route`), with a failed call as `Err`.
fn either<T: serde::Serialize, E: serde::Serialize>(
    call: Result<Result<T, E>, PluginFailure>,
) -> Result<Value, Value> {
    match call {
        Ok(Ok(v)) => Ok(json(&v)),
        Ok(Err(e)) => Err(json(&e)),
        Err(failure) => Err(testing::call_error(failure)),
    }
}

/// Runs `f` on the typed inputs, or answers the conversion error.
macro_rules! inputs {
    ($($name:ident: $ty:ty = $value:expr),+ => $body:expr) => {
        (|| -> Result<_, Value> {
            $(let $name: $ty = typed($value)?;)+
            Ok($body)
        })()
    };
}

impl Harness for DialectPlugin {
    fn parse(&self, request: Value) -> Result<Value, Value> {
        inputs!(request: HttpRequest = request => either(DialectPlugin::parse(self, &request).map(|got| match got {
            Ok(Call::Payment(call)) => Ok(json(&call.payment)),
            Ok(other) => Ok(json(&other)),
            Err(r) => Err(r),
        })))?
    }
    fn is_storefront(&self) -> bool {
        self.storefront_contract() == Some("0.4.0")
    }
    fn parse_call(&self, request: Value) -> Result<Value, Value> {
        inputs!(request: HttpRequest = request => either(DialectPlugin::parse(self, &request)))?
    }
    fn render(
        &self,
        payment: Value,
        outcome: Value,
        payment_id: &str,
        annotations: Value,
    ) -> Value {
        inputs!(payment: Payment = payment, outcome: _ = outcome, annotations: Vec<Annotation> = annotations
            => answer(DialectPlugin::render_outcome(self, &payment, &outcome, payment_id, &annotations)))
        .unwrap_or_else(|e| e)
    }
    fn refusal(&self, refusal: Value) -> Value {
        inputs!(refusal: _ = refusal => answer(DialectPlugin::render_refusal(self, &refusal)))
            .unwrap_or_else(|e| e)
    }
    fn render_payment(&self, record: Value) -> Value {
        inputs!(record: PaymentRecord = record => answer(DialectPlugin::render_payment(self, &record)))
            .unwrap_or_else(|e| e)
    }
    fn render_list(&self, records: Value, has_more: bool, url: &str) -> Value {
        inputs!(records: Vec<PaymentRecord> = records => answer(DialectPlugin::render_list(self, &records, has_more, url)))
            .unwrap_or_else(|e| e)
    }
    fn forward_headers(&self, credentials: Value) -> Value {
        inputs!(credentials: Vec<(String, String)> = credentials => answer(DialectPlugin::forward_headers(self, &credentials)))
            .unwrap_or_else(|e| e)
    }
    fn card_lookup(&self, token: &str, credentials: Value) -> Value {
        inputs!(credentials: Vec<(String, String)> = credentials => answer(DialectPlugin::card_lookup(self, token, &credentials)))
            .unwrap_or_else(|e| e)
    }
    fn card_details(&self, response: Value) -> Value {
        inputs!(response: _ = response => answer(DialectPlugin::card_details(self, &response)))
            .unwrap_or_else(|e| e)
    }
    fn encode(&self, payment: Value, context: Value) -> Result<Value, Value> {
        inputs!(payment: Payment = payment, context: Context = context
            => either(DialectPlugin::encode_request(self, &payment, &context)))?
    }
    fn decode(&self, payment: Value, response: Value) -> Value {
        inputs!(payment: Payment = payment, response: _ = response
            => answer(DialectPlugin::decode_response(self, &payment, &response)))
        .unwrap_or_else(|e| e)
    }
}

impl Harness for CompliancePlugin {
    fn check(&self, payment: Value, card: Value) -> Value {
        inputs!(payment: Payment = payment, card: Option<CardDetails> = card
            => answer(CompliancePlugin::check(self, &payment, card.as_ref())))
        .unwrap_or_else(|e| e)
    }
}

impl Harness for RouterPlugin {
    fn route(
        &self,
        request: Value,
        payment: Value,
        providers: Value,
        seed: u64,
    ) -> Result<Value, Value> {
        inputs!(request: HttpRequest = request, payment: Option<Payment> = payment, providers: Vec<Provider> = providers
        => either(RouterPlugin::route(self, &request, payment.as_ref(), &providers, seed).map(|decision| match decision {
            RouteDecision::Providers(list) => Ok(list),
            RouteDecision::Reject { status, code, message } => Err(serde_json::json!({
                "status": status, "code": code, "message": message
            })),
        })))?
    }
}
