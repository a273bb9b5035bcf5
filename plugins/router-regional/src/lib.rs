//! `router-regional`: a rule table in the plugin's JSON config picks the providers.
//!
//! Contract `payproxy:plugin@0.4.0` (`router-plugin`): the router gets every configured
//! provider once, at init, and per request the storefront request, the canonical payment when
//! the route has an ingress dialect (none on transparent routes), and the ids and health of
//! the route's providers. Every provider a rule or `default` names must be configured;
//! otherwise the config is refused at init.
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
//!     { "name": "domestic-br-cards", "match": { "card_country": ["BR"], "card_network": ["visa", "mastercard"] },
//!       "providers": [ { "name": "br-acquirer" }, { "name": "adyen" } ] },
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
//!   `cash_voucher`, `other`, or a wallet / scheme / card network name (`dana`, `ideal`,
//!   `pix`, `visa`), or the name of a method the contract has no record for (`mpesa`: an
//!   `other` method). Named apart from `method`, which stays the HTTP method;
//! - `card_country`: issuer countries of a card payment (ISO 3166-1 alpha-2), e.g. to send
//!   domestic cards to a local acquirer; `card_network`: card networks, lower case (`visa`,
//!   `mastercard`, `amex`, `jcb` …). Neither holds for a payment that is not a card, nor for
//!   a card whose issuer country or network is unknown. The storefront sends only a token:
//!   the host fills `Card.issuer_country` and `Card.network` from the home provider's
//!   payment-method object (the storefront dialect's card lookup, contract 0.4.0) before
//!   routing;
//! - `amount_min` / `amount_max`: inclusive bounds in minor units; they require `currency`
//!   with exactly one code, since minor units mean nothing without an exponent;
//! - `operation`: `authorize`, `capture`, `refund`, `void`, `status`.
//!
//! # Ordering the candidates
//!
//! 1. Providers the route does not have are dropped; none left → 503 `no_eligible_provider`.
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

use payproxy_plugin_sdk::export_router_v4;
use payproxy_plugin_sdk::payment::{Payment, Refusal};
use payproxy_plugin_sdk::routing::{Candidate, ProviderInfo, RequestView, Router};

pub use config::{Action, Conditions, Config, OperationName, Rule, WeightedProvider};

/// The plugin: its parsed config, with provider names resolved to ids.
pub struct Regional {
    config: Config,
    providers: Vec<ProviderInfo>,
}

impl Router for Regional {
    fn init(config: &str, providers: Vec<ProviderInfo>) -> Result<Self, String> {
        let mut config = Config::parse(config)?;
        config.resolve(&providers)?;
        Ok(Regional { config, providers })
    }

    fn route(
        &self,
        request: &RequestView,
        payment: Option<&Payment>,
        candidates: &[Candidate],
        seed: u64,
    ) -> Result<Vec<u32>, Refusal> {
        let headers = matcher::Headers::new(request, &self.config.header_names);
        let body = matcher::Body::new(request, &self.config.body_keys);
        let rule = self
            .config
            .rules
            .iter()
            .find(|rule| matcher::matches(&rule.conditions, request, &headers, &body, payment));
        let choices = match rule.map(|r| &r.action) {
            Some(Action::Reject(rejection)) => return Err(rejection.clone()),
            Some(Action::Providers(list)) => order::known(list, candidates, &self.providers),
            None => match &self.config.default {
                Some(list) => order::known(list, candidates, &self.providers),
                None => order::all(candidates, &self.providers),
            },
        };
        let choices = order::skip_open(choices);
        if choices.is_empty() {
            let rule_name = rule.map(|r| r.name.as_str()).unwrap_or("default");
            return Err(Refusal::unroutable(
                503,
                "no_eligible_provider",
                format!("rule {rule_name} names no provider of this route"),
            ));
        }
        if order::weighted(&choices) {
            let ordered = order::by_weight(choices, |c| c.weight, seed);
            return Ok(ordered.into_iter().map(|c| c.id).collect());
        }
        Ok(match self.config.prefer_cheaper_within {
            Some(tolerance) => order::by_cost(&choices, tolerance),
            None => choices.into_iter().map(|c| c.id).collect(),
        })
    }
}

// Calls allocate from a region reused whole after each call (payproxy_plugin_sdk::arena).
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: payproxy_plugin_sdk::arena::CallArena = payproxy_plugin_sdk::arena::CallArena;

export_router_v4!(Regional);

#[cfg(test)]
mod tests;
