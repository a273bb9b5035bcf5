//! `router-regional`: a rule table in the plugin's JSON config picks the providers.
//!
//! Rules are tried in order; the first whose conditions all match decides. A rule either
//! names providers (optionally weighted for a volume split) or rejects the request. When
//! no rule matches, `default` applies; without `default`, the route's own provider order.
//!
//! ```json
//! {
//!   "rules": [
//!     { "name": "nl-ideal",
//!       "match": { "headers": { "x-shopper-country": ["NL"] }, "body": { "method": ["ideal"] } },
//!       "providers": [ { "name": "adyen", "weight": 80 }, { "name": "stripe", "weight": 20 } ] },
//!     { "name": "sanctioned", "match": { "headers": { "x-shopper-country": ["KP"] } },
//!       "reject": { "status": 403, "code": "country_blocked", "message": "payments from this country are not accepted" } }
//!   ],
//!   "default": ["stripe"]
//! }
//! ```

mod config;
mod matcher;

use payproxy_plugin_sdk::{export_router, Provider, Rejection, Request, Router};

pub use config::{Action, Config, Rule, WeightedProvider};

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
        request: &Request,
        providers: &[Provider],
        seed: u64,
    ) -> Result<Vec<String>, Rejection> {
        let body = matcher::parse_body(request);
        let rule = self
            .config
            .rules
            .iter()
            .find(|rule| matcher::matches(&rule.conditions, request, body.as_ref()));
        let wanted: Vec<WeightedProvider> = match rule.map(|r| &r.action) {
            Some(Action::Reject(rejection)) => return Err(rejection.clone()),
            Some(Action::Providers(list)) => list.clone(),
            None => match &self.config.default {
                Some(names) => names.iter().map(WeightedProvider::unweighted).collect(),
                None => providers.iter().map(|p| WeightedProvider::unweighted(&p.name)).collect(),
            },
        };
        let order = order_by_weight(
            wanted.into_iter().filter(|w| providers.iter().any(|p| p.name == w.name)).collect(),
            seed,
        );
        if order.is_empty() {
            let rule_name = rule.map(|r| r.name.as_str()).unwrap_or("default");
            return Err(Rejection::new(
                503,
                "no_eligible_provider",
                format!("rule {rule_name} names no provider of this route"),
            ));
        }
        Ok(order)
    }
}

/// Put the weighted pick first, then the others by descending weight (config order on ties).
///
/// Without weights the config order stands. The pick is a weighted draw driven by `seed`,
/// so the same seed gives the same order.
fn order_by_weight(mut list: Vec<WeightedProvider>, seed: u64) -> Vec<String> {
    let total: u64 = list.iter().map(|w| u64::from(w.weight.unwrap_or(0))).sum();
    if total > 0 {
        let mut ticket = splitmix64(seed) % total;
        let first = list
            .iter()
            .position(|w| {
                let weight = u64::from(w.weight.unwrap_or(0));
                if ticket < weight {
                    true
                } else {
                    ticket -= weight;
                    false
                }
            })
            .unwrap_or(0);
        let picked = list.remove(first);
        // Stable sort keeps config order among equal weights.
        list.sort_by_key(|w| std::cmp::Reverse(w.weight.unwrap_or(0)));
        list.insert(0, picked);
    }
    list.into_iter().map(|w| w.name).collect()
}

/// Spread consecutive seeds over the whole range (the host may use a counter).
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

export_router!(Regional);

#[cfg(test)]
mod tests;
