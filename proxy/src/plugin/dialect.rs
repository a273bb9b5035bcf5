//! The dialect role: the storefront side (`ingress`: parse requests, render outcomes and
//! refusals) and the provider side (`egress`: encode requests, decode answers). A component
//! may export one side or both; the config says which side a route or provider uses.

use std::sync::Arc;

use wasmtime::component::{Component, InstancePre};
use wasmtime::Store;

use super::bindings::exports::{EGRESS, INGRESS};
use super::bindings::v2::dialect::exports::payproxy::plugin::{egress, ingress};
use super::sandbox::{Binding, Sandbox, SandboxSettings};
use super::types::{Annotation, HttpRequest, HttpResponse, Outcome, Payment, Refusal};
use super::{CallState, PluginHost};
use crate::error::PluginFailure;
use crate::metrics::Metrics;

pub use egress::{Capabilities, Context};

/// Largest HTTP body a dialect may produce.
const MAX_BODY: usize = 1 << 20;

/// Export indices found in the component, with its pre-instantiation.
pub struct DialectPre {
    instance_pre: InstancePre<CallState>,
    ingress: Option<ingress::GuestIndices>,
    egress: Option<egress::GuestIndices>,
}

/// A dialect instance: whichever sides the component exports.
pub struct DialectInst {
    ingress: Option<ingress::Guest>,
    egress: Option<egress::Guest>,
}

impl Binding for DialectInst {
    type Pre = DialectPre;
    fn prepare(instance_pre: InstancePre<CallState>) -> wasmtime::Result<Self::Pre> {
        let ingress = ingress::GuestIndices::new(&instance_pre).ok();
        let egress = egress::GuestIndices::new(&instance_pre).ok();
        if ingress.is_none() && egress.is_none() {
            wasmtime::bail!("exports neither {INGRESS} nor {EGRESS}");
        }
        Ok(DialectPre {
            instance_pre,
            ingress,
            egress,
        })
    }
    fn instantiate(pre: &Self::Pre, store: &mut Store<CallState>) -> wasmtime::Result<Self> {
        let instance = pre.instance_pre.instantiate(&mut *store)?;
        let ingress = match &pre.ingress {
            Some(i) => Some(i.load(&mut *store, &instance)?),
            None => None,
        };
        let egress = match &pre.egress {
            Some(e) => Some(e.load(&mut *store, &instance)?),
            None => None,
        };
        Ok(DialectInst { ingress, egress })
    }
    fn init(
        &self,
        store: &mut Store<CallState>,
        config: &str,
    ) -> wasmtime::Result<Result<(), String>> {
        if let Some(i) = &self.ingress {
            if let Err(e) = i.call_init(&mut *store, config)? {
                return Ok(Err(e));
            }
        }
        if let Some(e) = &self.egress {
            return e.call_init(&mut *store, config);
        }
        Ok(Ok(()))
    }
}

/// A loaded dialect plugin.
pub struct DialectPlugin {
    sandbox: Sandbox<DialectInst>,
    ingress: bool,
    egress: bool,
    capabilities: Capabilities,
}

fn missing(side: &str) -> wasmtime::Error {
    wasmtime::format_err!("this dialect has no {side} side")
}

impl DialectPlugin {
    /// Bind a compiled component to the dialect role and validate its config.
    pub fn load(
        host: &Arc<PluginHost>,
        name: &str,
        component: &Component,
        config_json: String,
        settings: SandboxSettings,
        metrics: Arc<Metrics>,
    ) -> Result<DialectPlugin, String> {
        let exports = host.export_names(component);
        let ingress = exports.iter().any(|e| e == INGRESS);
        let egress = exports.iter().any(|e| e == EGRESS);
        if !ingress && !egress {
            return Err(format!(
                "does not implement the dialect role: expected export {INGRESS} and/or {EGRESS}, found [{}]",
                exports.join(", ")
            ));
        }
        let sandbox =
            Sandbox::<DialectInst>::load(host, name, component, config_json, settings, metrics)?;
        let capabilities = if egress {
            sandbox
                .call("describe", |b, store| {
                    b.egress
                        .as_ref()
                        .ok_or_else(|| missing("egress"))?
                        .call_describe(store)
                })
                .map_err(|f| f.to_string())?
        } else {
            Capabilities {
                idempotent_resend: false,
                status_query: false,
            }
        };
        Ok(DialectPlugin {
            sandbox,
            ingress,
            egress,
            capabilities,
        })
    }

    /// Whether the storefront side exists.
    pub fn has_ingress(&self) -> bool {
        self.ingress
    }

    /// Whether the provider side exists.
    pub fn has_egress(&self) -> bool {
        self.egress
    }

    /// What the provider protocol supports.
    pub fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    /// Parse a storefront request.
    pub fn parse_request(
        &self,
        request: &HttpRequest,
    ) -> Result<Result<Payment, Refusal>, PluginFailure> {
        self.sandbox.call("parse-request", |b, store| {
            b.ingress
                .as_ref()
                .ok_or_else(|| missing("ingress"))?
                .call_parse_request(store, request)
        })
    }

    /// Render an outcome for the storefront.
    pub fn render_outcome(
        &self,
        payment: &Payment,
        outcome: &Outcome,
        payment_id: &str,
        annotations: &[Annotation],
    ) -> Result<HttpResponse, PluginFailure> {
        let response = self.sandbox.call("render-outcome", |b, store| {
            b.ingress
                .as_ref()
                .ok_or_else(|| missing("ingress"))?
                .call_render_outcome(store, payment, outcome, payment_id, annotations)
        })?;
        self.check_response(response)
    }

    /// Render a refusal for the storefront.
    pub fn render_refusal(&self, refusal: &Refusal) -> Result<HttpResponse, PluginFailure> {
        let response = self.sandbox.call("render-refusal", |b, store| {
            b.ingress
                .as_ref()
                .ok_or_else(|| missing("ingress"))?
                .call_render_refusal(store, refusal)
        })?;
        self.check_response(response)
    }

    /// The payment id a storefront request refers to.
    pub fn request_id(&self, request: &HttpRequest) -> Result<Option<String>, PluginFailure> {
        self.sandbox.call("request-id", |b, store| {
            b.ingress
                .as_ref()
                .ok_or_else(|| missing("ingress"))?
                .call_request_id(store, request)
        })
    }

    /// Build a provider request.
    pub fn encode_request(
        &self,
        payment: &Payment,
        context: &Context,
    ) -> Result<Result<HttpRequest, Refusal>, PluginFailure> {
        let request = self.sandbox.call("encode-request", |b, store| {
            b.egress
                .as_ref()
                .ok_or_else(|| missing("egress"))?
                .call_encode_request(store, payment, context)
        })?;
        if let Ok(r) = &request {
            let body = r.body.as_ref().map(Vec::len).unwrap_or(0);
            if !r.path.starts_with('/')
                || http::Method::from_bytes(r.method.as_bytes()).is_err()
                || body > MAX_BODY
            {
                return Err(self.sandbox.bad_output(format!(
                    "encoded an invalid request (method {:?}, path starting {:?}, body of {body} bytes)",
                    super::sandbox::truncate(&r.method, 16),
                    super::sandbox::truncate(&r.path, 16)
                )));
            }
        }
        Ok(request)
    }

    /// Decode a provider's answer.
    pub fn decode_response(
        &self,
        payment: &Payment,
        response: &HttpResponse,
    ) -> Result<Outcome, PluginFailure> {
        self.sandbox.call("decode-response", |b, store| {
            b.egress
                .as_ref()
                .ok_or_else(|| missing("egress"))?
                .call_decode_response(store, payment, response)
        })
    }

    fn check_response(&self, response: HttpResponse) -> Result<HttpResponse, PluginFailure> {
        if !(100..=599).contains(&response.status) || response.body.len() > MAX_BODY {
            return Err(self.sandbox.bad_output(format!(
                "rendered an invalid response (status {}, body of {} bytes)",
                response.status,
                response.body.len()
            )));
        }
        Ok(response)
    }

    /// Plugin name.
    pub fn name(&self) -> &str {
        self.sandbox.name()
    }
}
