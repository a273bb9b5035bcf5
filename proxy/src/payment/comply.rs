//! Comply: the route's compliance plugins, in chain order, on the completed payment and the
//! card's details from the home provider (0.4.0 plugins). Compliance fails closed.

use super::*;
use crate::plugin::storefront::CardDetails;
use crate::plugin::types::Annotation;
use crate::plugin::Verdict;

impl Payments {
    /// Every plugin allows: their annotations. A deny, a challenge or a failing plugin: the
    /// refusal to answer. Each verdict is noted for the audit line.
    pub(super) fn comply(
        &self,
        ctx: &Ctx<'_>,
        payment: &Payment,
        card: Option<&CardDetails>,
    ) -> Result<Vec<Annotation>, Refusal> {
        let mut annotations = Vec::new();
        for plugin in &ctx.route.compliance {
            let decision = plugin.check(payment, card).map_err(|failure| {
                ctx.note(|d| {
                    d.plugins.push(audit::PluginNote {
                        name: plugin.name().to_string(),
                        sha256: digest(ctx, plugin.name()),
                        verdict: "failed",
                        rule: failure.kind.as_str().to_string(),
                    })
                });
                tracing::warn!(route = %ctx.route.name, plugin = %failure.plugin, kind = failure.kind.as_str(), detail = %failure.detail, "compliance plugin failed");
                refusal(
                    RefusalKind::Unavailable,
                    503,
                    "compliance_unavailable",
                    "the payment cannot be checked right now",
                )
            })?;
            let verdict = match &decision.verdict {
                Verdict::Allow => "allow",
                Verdict::Deny(_) => "deny",
                Verdict::Challenge(_) => "challenge",
            };
            self.metrics
                .compliance_verdict(plugin.name(), &decision.rule, verdict);
            ctx.note(|d| {
                d.plugins.push(audit::PluginNote {
                    name: plugin.name().to_string(),
                    sha256: digest(ctx, plugin.name()),
                    verdict,
                    rule: decision.rule.clone(),
                })
            });
            match decision.verdict {
                Verdict::Allow => annotations.extend(decision.annotations),
                Verdict::Deny(denial) => {
                    return Err(refusal(
                        RefusalKind::ComplianceDenied,
                        denial.status,
                        &denial.code,
                        &denial.message,
                    ))
                }
                Verdict::Challenge(kind) => return Err(challenge(kind)),
            }
        }
        Ok(annotations)
    }
}

/// The sha256 of the running plugin `name`.
pub(super) fn digest(ctx: &Ctx<'_>, name: &str) -> String {
    ctx.snapshot
        .plugins
        .get(name)
        .map(|p| p.sha256.clone())
        .unwrap_or_default()
}
