//! The compliance role: one decision per payment. Compliance always fails closed: a plugin
//! that traps, times out or answers garbage blocks the payment (the caller refuses it).

use std::sync::Arc;

use wasmtime::component::{Component, InstancePre};
use wasmtime::Store;

use super::bindings::exports::COMPLIANCE;
use super::bindings::v2::compliance as world;
use super::sandbox::{Binding, Sandbox, SandboxSettings};
use super::types::Payment;
use super::{CallState, PluginHost};
use crate::error::PluginFailure;
use crate::metrics::Metrics;

pub use world::exports::payproxy::plugin::compliance::{Decision, Denial, Verdict};

/// A compliance instance.
pub struct ComplianceInst(world::CompliancePlugin);

impl Binding for ComplianceInst {
    type Pre = world::CompliancePluginPre<CallState>;
    fn prepare(instance_pre: InstancePre<CallState>) -> wasmtime::Result<Self::Pre> {
        world::CompliancePluginPre::new(instance_pre)
    }
    fn instantiate(pre: &Self::Pre, store: &mut Store<CallState>) -> wasmtime::Result<Self> {
        pre.instantiate(store).map(ComplianceInst)
    }
    fn init(
        &self,
        store: &mut Store<CallState>,
        config: &str,
    ) -> wasmtime::Result<Result<(), String>> {
        self.0.payproxy_plugin_compliance().call_init(store, config)
    }
}

/// A loaded compliance plugin.
pub struct CompliancePlugin(Sandbox<ComplianceInst>);

impl CompliancePlugin {
    /// Bind a compiled component to the compliance role and validate its config.
    pub fn load(
        host: &Arc<PluginHost>,
        name: &str,
        component: &Component,
        config_json: String,
        settings: SandboxSettings,
        metrics: Arc<Metrics>,
    ) -> Result<CompliancePlugin, String> {
        let exports = host.export_names(component);
        if !exports.iter().any(|e| e == COMPLIANCE) {
            return Err(format!(
                "does not implement the compliance role: expected export {COMPLIANCE} (world compliance-plugin), found [{}]",
                exports.join(", ")
            ));
        }
        Sandbox::load(host, name, component, config_json, settings, metrics).map(CompliancePlugin)
    }

    /// The plugin's decision on `payment`.
    pub fn check(&self, payment: &Payment) -> Result<Decision, PluginFailure> {
        let decision = self.0.call("check", |b, store| {
            b.0.payproxy_plugin_compliance().call_check(store, payment)
        })?;
        let text_ok = |s: &str, max: usize| s.len() <= max;
        let verdict_ok = match &decision.verdict {
            Verdict::Deny(d) => {
                !d.code.is_empty() && text_ok(&d.code, 64) && text_ok(&d.message, 1024)
            }
            _ => true,
        };
        if !verdict_ok || !text_ok(&decision.rule, 128) || decision.annotations.len() > 32 {
            return Err(self
                .0
                .bad_output("returned an oversized or empty decision".into()));
        }
        Ok(decision)
    }

    /// Plugin name.
    pub fn name(&self) -> &str {
        self.0.name()
    }
}
