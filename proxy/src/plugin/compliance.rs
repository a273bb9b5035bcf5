//! The compliance role: one decision per payment. Compliance always fails closed: a plugin
//! that traps, times out or answers garbage blocks the payment (the caller refuses it).
//!
//! Contract 0.4.0 plugins also get the card's details from the home provider (funding, 3-D
//! Secure support …); 0.2.0 plugins get the payment only. Both answer the same decision.

use std::sync::Arc;

use wasmtime::component::{Component, InstancePre};
use wasmtime::Store;

use super::bindings::exports::{COMPLIANCE, COMPLIANCE_V4};
use super::bindings::v2::compliance as v2;
use super::bindings::v4::compliance as v4;
use super::convert;
use super::sandbox::{Binding, Sandbox, SandboxSettings};
use super::types::{CardDetails, Payment, PaymentMethod, Refusal, RefusalKind};
use super::{CallState, PluginHost};
use crate::error::PluginFailure;
use crate::metrics::Metrics;

pub use v4::exports::payproxy::plugin::compliance::{Decision, Verdict};

/// Pre-instantiation by contract version (0.4.0 wins when a component has both).
pub enum CompliancePre {
    V4(v4::CompliancePluginPre<CallState>),
    V2(v2::CompliancePluginPre<CallState>),
}

/// A compliance instance.
pub enum ComplianceInst {
    V4(v4::CompliancePlugin),
    V2(v2::CompliancePlugin),
}

impl Binding for ComplianceInst {
    type Pre = CompliancePre;
    fn prepare(instance_pre: InstancePre<CallState>) -> wasmtime::Result<Self::Pre> {
        match v4::CompliancePluginPre::new(instance_pre.clone()) {
            Ok(pre) => Ok(CompliancePre::V4(pre)),
            Err(_) => v2::CompliancePluginPre::new(instance_pre).map(CompliancePre::V2),
        }
    }
    fn instantiate(pre: &Self::Pre, store: &mut Store<CallState>) -> wasmtime::Result<Self> {
        match pre {
            CompliancePre::V4(pre) => pre.instantiate(store).map(ComplianceInst::V4),
            CompliancePre::V2(pre) => pre.instantiate(store).map(ComplianceInst::V2),
        }
    }
    fn init(
        &self,
        store: &mut Store<CallState>,
        config: &str,
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            ComplianceInst::V4(p) => p.payproxy_plugin_compliance().call_init(store, config),
            ComplianceInst::V2(p) => p.payproxy_plugin_compliance().call_init(store, config),
        }
    }
}

/// A loaded compliance plugin.
pub struct CompliancePlugin {
    sandbox: Sandbox<ComplianceInst>,
    contract: &'static str,
}

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
        let contract = if exports.iter().any(|e| e == COMPLIANCE_V4) {
            "0.4.0"
        } else if exports.iter().any(|e| e == COMPLIANCE) {
            "0.2.0"
        } else {
            return Err(format!(
                "does not implement the compliance role: expected export {COMPLIANCE_V4} or {COMPLIANCE} (world compliance-plugin), found [{}]",
                exports.join(", ")
            ));
        };
        let sandbox = Sandbox::load(host, name, component, config_json, settings, metrics)?;
        Ok(CompliancePlugin { sandbox, contract })
    }

    /// The contract version the plugin implements.
    pub fn contract(&self) -> &'static str {
        self.contract
    }

    /// The plugin's decision on `payment`, with the card's details when they are known
    /// (0.2.0 plugins get the payment only).
    pub fn check(
        &self,
        payment: &Payment,
        card: Option<&CardDetails>,
    ) -> Result<Decision, PluginFailure> {
        if self.contract == "0.2.0" && matches!(payment.method, Some(PaymentMethod::Other(_))) {
            // 0.2.0 cannot carry the method, so this plugin could not check it: compliance
            // fails closed. (Its rules by method would silently not apply.)
            return Ok(Decision {
                verdict: Verdict::Deny(Refusal {
                    kind: RefusalKind::ComplianceDenied,
                    status: 402,
                    code: "payment_method_unchecked".into(),
                    message: "This payment method is not available.".into(),
                }),
                rule: "contract-0.2.0-cannot-see-method".into(),
                annotations: Vec::new(),
            });
        }
        let decision = self.sandbox.call("check", |b, store| match b {
            ComplianceInst::V4(p) => p
                .payproxy_plugin_compliance()
                .call_check(store, payment, card),
            ComplianceInst::V2(p) => p
                .payproxy_plugin_compliance()
                .call_check(store, &convert::payment_to_v2(payment)?)
                .and_then(from_v2),
        })?;
        let text_ok = |s: &str, max: usize| s.len() <= max;
        let verdict_ok = match &decision.verdict {
            Verdict::Deny(d) => {
                !d.code.is_empty()
                    && text_ok(&d.code, 64)
                    && text_ok(&d.message, 1024)
                    && (400..=499).contains(&d.status)
            }
            _ => true,
        };
        if !verdict_ok || !text_ok(&decision.rule, 128) || decision.annotations.len() > 32 {
            return Err(self
                .sandbox
                .bad_output("returned an oversized or empty decision".into()));
        }
        Ok(decision)
    }

    /// Plugin name.
    pub fn name(&self) -> &str {
        self.sandbox.name()
    }
}

/// A 0.2.0 decision in the host's (0.4.0) shape: a denial is a compliance refusal, 402.
fn from_v2(d: v2::exports::payproxy::plugin::compliance::Decision) -> wasmtime::Result<Decision> {
    use v2::exports::payproxy::plugin::compliance::Verdict as V2;
    Ok(Decision {
        verdict: match d.verdict {
            V2::Allow => Verdict::Allow,
            V2::Deny(denial) => Verdict::Deny(Refusal {
                kind: RefusalKind::ComplianceDenied,
                status: 402,
                code: denial.code,
                message: denial.message,
            }),
            V2::Challenge(kind) => Verdict::Challenge(convert::challenge_from_v2(kind)),
        },
        rule: d.rule,
        annotations: convert::annotations_from_v2(&d.annotations)?,
    })
}
