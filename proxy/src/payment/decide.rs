//! Route: the router plugin's order over the route's providers that can charge the
//! payment's instrument (the static order without a router).
//!
//! Instruments are scoped: a card token the storefront sends was issued by its home account
//! (the storefront created it through its own API, which payproxy forwards to the home
//! provider), so only providers of the home provider's `issuer` can charge it. Local methods
//! (redirects, QR codes, wallets, vouchers) carry no token and go to any provider.

use super::*;
use crate::config::OnError;
use crate::plugin::types::{PaymentMethod, Provider};
use crate::plugin::RouteDecision;

impl Payments {
    /// The providers to try, in order.
    pub(super) fn decide(&self, ctx: &Ctx<'_>, payment: &Payment) -> Result<Vec<String>, Refusal> {
        let eligible = eligible(ctx, payment);
        if eligible.is_empty() {
            return Err(refusal(
                RefusalKind::Unavailable,
                503,
                "no_eligible_provider",
                "no provider of this route can charge this payment method",
            ));
        }
        let Some((router, on_error)) = &ctx.route.router else {
            note(ctx, "static", "static", &eligible);
            return Ok(eligible);
        };
        let views: Vec<Provider> = self
            .provider_views(ctx.route)
            .into_iter()
            .filter(|p| eligible.contains(&p.name))
            .collect();
        match router.route(&ctx.view, Some(payment), &views, rand::random()) {
            Ok(RouteDecision::Providers(order)) => {
                // The router sees only eligible providers; keep it honest anyway.
                let order: Vec<String> =
                    order.into_iter().filter(|p| eligible.contains(p)).collect();
                note(ctx, router.name(), "ordered", &order);
                Ok(order)
            }
            Ok(RouteDecision::Reject {
                status,
                code,
                message,
            }) => {
                note(ctx, router.name(), "rejected", &[]);
                // A 4xx is a policy refusal (permanent); only a 5xx means "try later".
                let kind = if status < 500 {
                    RefusalKind::ComplianceDenied
                } else {
                    RefusalKind::Unavailable
                };
                Err(refusal(kind, status, &code, &message))
            }
            Err(failure) => {
                tracing::warn!(route = %ctx.route.name, plugin = %failure.plugin, kind = failure.kind.as_str(), detail = %failure.detail, "router plugin failed");
                match on_error {
                    OnError::FailOpen => {
                        note(ctx, router.name(), "failed_open", &eligible);
                        Ok(eligible)
                    }
                    OnError::FailClosed => {
                        note(ctx, router.name(), "failed_closed", &[]);
                        Err(refusal(
                            RefusalKind::Unavailable,
                            503,
                            "plugin_failed",
                            "no route for this payment right now",
                        ))
                    }
                }
            }
        }
    }

    /// The route's providers as routers see them, with their current health.
    fn provider_views(&self, route: &Route) -> Vec<Provider> {
        let now = Instant::now();
        route
            .provider_views
            .iter()
            .map(|p| {
                let mut p = p.clone();
                p.health = (&self.health.snapshot(&p.name, now)).into();
                p
            })
            .collect()
    }
}

/// Note the router's decision for the audit line.
fn note(ctx: &Ctx<'_>, plugin: &str, decision: &'static str, order: &[String]) {
    let sha256 = ctx.snapshot.plugins.get(plugin).map(|p| p.sha256.clone());
    ctx.note(|d| {
        d.router = Some(audit::RouterNote {
            plugin: plugin.to_string(),
            sha256,
            decision,
            order: order.to_vec(),
        })
    });
}

/// The route's providers (static order) that can charge `payment`'s instrument.
pub(super) fn eligible(ctx: &Ctx<'_>, payment: &Payment) -> Vec<String> {
    let issuer = |provider: &str| -> String {
        ctx.snapshot
            .config
            .providers
            .get(provider)
            .and_then(|p| p.issuer.clone())
            .unwrap_or_else(|| provider.to_string())
    };
    scoped(
        &ctx.route.providers,
        ctx.route.home.as_deref(),
        payment.method.as_ref(),
        issuer,
    )
}

/// `providers` that can charge `method`: for a card token, those of the home provider's
/// issuer (`issuer` names a provider's, its own name by default); anything else, all.
fn scoped(
    providers: &[String],
    home: Option<&str>,
    method: Option<&PaymentMethod>,
    issuer: impl Fn(&str) -> String,
) -> Vec<String> {
    let wanted = match (method, home) {
        (Some(PaymentMethod::Card(_)), Some(home)) => Some(issuer(home)),
        _ => None,
    };
    providers
        .iter()
        .filter(|p| wanted.as_ref().is_none_or(|w| issuer(p) == *w))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::types::{BankRedirect, Card};

    fn card() -> PaymentMethod {
        PaymentMethod::Card(Card {
            token: "pm_1".into(),
            bin: None,
            last4: None,
            network: None,
            issuer_country: None,
        })
    }

    #[test]
    fn card_tokens_go_only_to_the_home_issuer_local_methods_anywhere() {
        let providers: Vec<String> = ["adyen", "stripe-eu", "stripe-us", "ideal"]
            .map(String::from)
            .to_vec();
        // stripe-eu and stripe-us are two endpoints of one account.
        let issuer = |p: &str| match p {
            "stripe-eu" | "stripe-us" => "acct_1".to_string(),
            other => other.to_string(),
        };
        assert_eq!(
            scoped(&providers, Some("stripe-eu"), Some(&card()), issuer),
            ["stripe-eu", "stripe-us"]
        );
        let ideal = PaymentMethod::BankRedirect(BankRedirect {
            scheme: "ideal".into(),
            iban: None,
            bic: None,
        });
        assert_eq!(
            scoped(&providers, Some("stripe-eu"), Some(&ideal), issuer),
            providers
        );
        // No home: the route predates scoping, nothing is filtered.
        assert_eq!(scoped(&providers, None, Some(&card()), issuer), providers);
        // A home with no other endpoint: only itself.
        assert_eq!(
            scoped(&providers, Some("ideal"), Some(&card()), issuer),
            ["ideal"]
        );
    }
}
