//! `router-regional`: a rule table in the plugin's JSON config picks the providers.
//!
//! Contract `payproxy:plugin@0.2.0` (`payment-router-plugin`): the router sees the storefront
//! request, the canonical payment when the route has an ingress dialect (none on transparent
//! routes), and the route's providers with their health and cost.
//!
//! Rules are tried in order; the first whose conditions all match decides. A rule either
//! names providers (optionally weighted for a volume split) or rejects the request. When
//! no rule matches, `default` applies; without `default`, the route's own provider order.
//!
//! ```json
//! {
//!   "rules": [
//!     { "name": "sanctioned", "match": { "headers": { "x-shopper-country": ["KP"] } },
//!       "reject": { "status": 403, "code": "country_blocked", "message": "payments from this country are not accepted" } },
//!     { "name": "id-wallets", "match": { "country": ["ID"], "payment_method": ["dana", "gopay"] },
//!       "providers": [ { "name": "dana" }, { "name": "sim-sea" } ] },
//!     { "name": "nl", "match": { "country": ["NL"], "operation": ["authorize"] },
//!       "providers": [ { "name": "ideal-psp" }, { "name": "adyen" } ] },
//!     { "name": "big-eur-cards", "match": { "payment_method": ["card"], "currency": ["EUR"], "amount_min": 100000 },
//!       "providers": [ { "name": "adyen", "weight": 80 }, { "name": "stripe", "weight": 20 } ] }
//!   ],
//!   "default": ["stripe"],
//!   "prefer_cheaper_within": 0.02
//! }
//! ```
//!
//! # Conditions (`match`; every one given must hold, list values are alternatives)
//!
//! On the HTTP request (as in contract 0.1.0):
//! - `method`: HTTP methods; `path_prefix`: path prefixes;
//! - `headers`: header name → values (ASCII case-insensitive);
//! - `body`: dotted JSON body path → values (strings case-insensitive, numbers by value).
//!
//! On the canonical payment (never hold without one, nor when the payment lacks the field):
//! - `country`: shopper countries (ISO 3166-1 alpha-2);
//! - `currency`: ISO 4217 codes;
//! - `payment_method`: kinds `card`, `ewallet`, `bank_redirect`, `instant_transfer`,
//!   `cash_voucher`, or a wallet / scheme / card network name (`dana`, `ideal`, `pix`,
//!   `visa`). Named apart from `method`, which stays the HTTP method;
//! - `amount_min` / `amount_max`: inclusive bounds in minor units; they require `currency`
//!   with exactly one code, since minor units mean nothing without an exponent;
//! - `operation`: `authorize`, `capture`, `refund`, `void`, `status`.
//!
//! # Ordering the candidates
//!
//! 1. Names the route does not have are dropped; none left → 503 `no_eligible_provider`.
//! 2. Health: providers whose breaker is `open` are dropped, unless all are open, in which
//!    case all stay (the host's breaker then decides; a rejection would hide which are down).
//!    `half-open` providers stay in place so the breaker gets its trial traffic.
//! 3. Weights (any candidate with a weight): a weighted draw driven by `seed` goes first, then
//!    the rest by descending weight. An open provider's share goes to the others.
//! 4. No weights and `prefer_cheaper_within` set: by success rate, but the cheapest `cost`
//!    (from the provider config, e.g. an iDEAL acquirer at 0.5 vs a card acquirer at 1.8)
//!    first among those within that tolerance of the best success rate (see
//!    [`order::by_cost`]).
//! 5. Otherwise the config order stands (`default`, or the route's order).

mod config;
mod matcher;
pub mod order;

use payproxy_plugin_sdk::export_payment_router;
use payproxy_plugin_sdk::payment::{HttpRequest, Payment, Provider, Rejection, Router};

pub use config::{Action, Conditions, Config, OperationName, Rule, WeightedProvider};

/// The plugin: its parsed config.
pub struct Regional {
    config: Config,
}

impl Router for Regional {
    fn init(config: &str) -> Result<Self, String> {
        Ok(Regional {
            config: Config::parse(config)?,
        })
    }

    fn route(
        &self,
        request: &HttpRequest,
        payment: Option<&Payment>,
        providers: &[Provider],
        seed: u64,
    ) -> Result<Vec<String>, Rejection> {
        let body = matcher::Body::new(request);
        let rule = self
            .config
            .rules
            .iter()
            .find(|rule| matcher::matches(&rule.conditions, request, &body, payment));
        let wanted: Vec<WeightedProvider> = match rule.map(|r| &r.action) {
            Some(Action::Reject(rejection)) => return Err(rejection.clone()),
            Some(Action::Providers(list)) => list.clone(),
            None => match &self.config.default {
                Some(names) => names.iter().map(WeightedProvider::unweighted).collect(),
                None => providers
                    .iter()
                    .map(|p| WeightedProvider::unweighted(&p.name))
                    .collect(),
            },
        };
        let candidates = order::skip_open(order::known(wanted, providers));
        if candidates.is_empty() {
            let rule_name = rule.map(|r| r.name.as_str()).unwrap_or("default");
            return Err(Rejection {
                status: 503,
                code: "no_eligible_provider".into(),
                message: format!("rule {rule_name} names no provider of this route"),
            });
        }
        if order::weighted(&candidates) {
            return Ok(order::by_weight(
                candidates.into_iter().map(|(w, _)| w).collect(),
                seed,
            ));
        }
        Ok(match self.config.prefer_cheaper_within {
            Some(tolerance) => {
                let list: Vec<&Provider> = candidates.iter().map(|(_, p)| *p).collect();
                order::by_cost(&list, tolerance)
            }
            None => candidates.into_iter().map(|(w, _)| w.name).collect(),
        })
    }
}

export_payment_router!(Regional);

#[cfg(test)]
mod tests;
