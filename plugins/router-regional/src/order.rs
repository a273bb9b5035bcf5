//! Ordering a rule's candidates: breaker state, weighted volume split, cost.

use payproxy_plugin_sdk::payment::{BreakerState, Health};
use payproxy_plugin_sdk::routing::{Candidate, ProviderInfo};

use crate::config::WeightedProvider;

/// Floating-point slack when comparing success rates against the tolerance, so that
/// 0.97 − 0.02 counts as "within" 0.95.
const EPSILON: f64 = 1e-9;

/// A provider a rule named that the route has: its id, weight, attributes and health.
#[derive(Debug, Clone, Copy)]
pub struct Choice<'a> {
    /// Provider id.
    pub id: u32,
    /// Volume-split weight from the rule.
    pub weight: Option<u32>,
    /// Static attributes (cost).
    pub info: &'a ProviderInfo,
    /// Live health.
    pub health: &'a Health,
}

/// Keep the wanted providers the route has (the candidates), in config order.
pub fn known<'a>(
    wanted: &[WeightedProvider],
    candidates: &'a [Candidate],
    providers: &'a [ProviderInfo],
) -> Vec<Choice<'a>> {
    wanted
        .iter()
        .filter_map(|w| {
            let c = candidates.iter().find(|c| c.id == w.id)?;
            Some(Choice {
                id: w.id,
                weight: w.weight,
                info: providers.get(w.id as usize)?,
                health: &c.health,
            })
        })
        .collect()
}

/// Every candidate, unweighted, in the route's order.
pub fn all<'a>(candidates: &'a [Candidate], providers: &'a [ProviderInfo]) -> Vec<Choice<'a>> {
    candidates
        .iter()
        .filter_map(|c| {
            Some(Choice {
                id: c.id,
                weight: None,
                info: providers.get(c.id as usize)?,
                health: &c.health,
            })
        })
        .collect()
}

/// Drop providers whose breaker is open: the host would refuse to send to them anyway, and
/// a weighted split should give their share to the healthy ones. When every candidate is
/// open, keep them all (the host's breaker decides; answering "no provider" here would only
/// hide which ones are down).
pub fn skip_open(mut list: Vec<Choice<'_>>) -> Vec<Choice<'_>> {
    if !list.iter().all(|c| c.health.breaker == BreakerState::Open) {
        list.retain(|c| c.health.breaker != BreakerState::Open);
    }
    list
}

/// Put the weighted pick first, then the others by descending weight (config order on ties).
///
/// Without weights the list is returned as given. The pick is a weighted draw driven by
/// `seed`, so the same seed gives the same order.
pub fn by_weight<T>(mut list: Vec<T>, weight: impl Fn(&T) -> Option<u32>, seed: u64) -> Vec<T> {
    let weight = |item: &T| u64::from(weight(item).unwrap_or(0));
    let total: u64 = list.iter().map(weight).sum();
    if total > 0 {
        let mut ticket = splitmix64(seed) % total;
        let first = list
            .iter()
            .position(|item| {
                let w = weight(item);
                if ticket < w {
                    true
                } else {
                    ticket -= w;
                    false
                }
            })
            .unwrap_or(0);
        let picked = list.remove(first);
        // Stable sort keeps config order among equal weights.
        list.sort_by_key(|item| std::cmp::Reverse(weight(item)));
        list.insert(0, picked);
    }
    list
}

/// True when any candidate has a weight: the volume split decides, not cost.
pub fn weighted(list: &[Choice<'_>]) -> bool {
    list.iter().any(|c| c.weight.is_some())
}

/// Order by success rate, preferring the cheaper provider when rates are comparable.
///
/// Repeatedly: among the remaining candidates whose success rate is within `tolerance` of the
/// best remaining one, take the cheapest (config order on equal cost). So a provider at
/// 96% costing 0.5 goes before one at 97% costing 1.8 with a tolerance of 0.02, but one at
/// 90% does not. This is a well-defined order even though "within tolerance" is not
/// transitive. A missing (NaN) success rate counts as 0 and a NaN cost as the most expensive.
pub fn by_cost(list: &[Choice<'_>], tolerance: f64) -> Vec<u32> {
    let rate = |c: &Choice<'_>| {
        let r = c.health.success_rate;
        if r.is_nan() {
            0.0
        } else {
            r
        }
    };
    let cost = |c: &Choice<'_>| {
        if c.info.cost.is_nan() {
            f64::INFINITY
        } else {
            c.info.cost
        }
    };
    let mut remaining: Vec<&Choice<'_>> = list.iter().collect();
    let mut order = Vec::with_capacity(remaining.len());
    while !remaining.is_empty() {
        let best = remaining
            .iter()
            .map(|c| rate(c))
            .fold(f64::NEG_INFINITY, f64::max);
        let mut pick: Option<usize> = None;
        for (i, c) in remaining.iter().enumerate() {
            if rate(c) + tolerance + EPSILON < best {
                continue;
            }
            if pick.is_none_or(|j| cost(c) < cost(remaining[j])) {
                pick = Some(i);
            }
        }
        // `best` comes from `remaining`, so some candidate is always within tolerance.
        order.push(remaining.remove(pick.unwrap_or(0)).id);
    }
    order
}

/// Spread consecutive seeds over the whole range (the host may use a counter).
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, cost: f64) -> ProviderInfo {
        ProviderInfo {
            name: name.into(),
            region: String::new(),
            tags: Vec::new(),
            cost,
            dialect: String::new(),
        }
    }

    fn health(rate: f64, breaker: BreakerState) -> Health {
        Health {
            success_rate: rate,
            latency_p50_ms: 0,
            latency_p99_ms: 0,
            breaker,
        }
    }

    /// Choices with ids 0.. from (name, success rate, cost).
    fn order_of(list: &[(&str, f64, f64)], tolerance: f64) -> Vec<String> {
        let infos: Vec<ProviderInfo> = list.iter().map(|(n, _, c)| info(n, *c)).collect();
        let healths: Vec<Health> = list
            .iter()
            .map(|(_, r, _)| health(*r, BreakerState::Closed))
            .collect();
        let choices: Vec<Choice<'_>> = (0..list.len())
            .map(|i| Choice {
                id: i as u32,
                weight: None,
                info: &infos[i],
                health: &healths[i],
            })
            .collect();
        by_cost(&choices, tolerance)
            .into_iter()
            .map(|id| infos[id as usize].name.clone())
            .collect()
    }

    #[test]
    fn cheaper_first_only_within_tolerance_of_the_best() {
        let list = [("a", 0.99, 3.0), ("b", 0.975, 2.0), ("c", 0.96, 1.0)];
        // c is within 0.02 of b but not of a: b (cheapest near the best) first, then a.
        assert_eq!(order_of(&list, 0.02), ["b", "a", "c"]);
        assert_eq!(order_of(&list, 0.0), ["a", "b", "c"]);
        assert_eq!(order_of(&list, 1.0), ["c", "b", "a"]);
    }

    #[test]
    fn ties_keep_config_order_and_nan_sorts_last() {
        assert_eq!(
            order_of(&[("a", 0.9, 1.0), ("b", 0.9, 1.0)], 0.02),
            ["a", "b"]
        );
        assert_eq!(
            order_of(&[("b", 0.9, 1.0), ("a", 0.9, 1.0)], 0.02),
            ["b", "a"]
        );
        let list = [
            ("nan-rate", f64::NAN, 0.1),
            ("nan-cost", 0.9, f64::NAN),
            ("a", 0.9, 1.0),
        ];
        assert_eq!(order_of(&list, 0.02), ["a", "nan-cost", "nan-rate"]);
    }

    #[test]
    fn open_breakers_are_skipped_unless_all_are_open() {
        let infos = [info("open", 1.0), info("closed", 9.0)];
        let open = health(0.99, BreakerState::Open);
        let closed = health(0.5, BreakerState::Closed);
        let choice = |id: u32, health| Choice {
            id,
            weight: None,
            info: &infos[id as usize],
            health,
        };
        let ids = |l: Vec<Choice<'_>>| l.into_iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(
            ids(skip_open(vec![choice(0, &open), choice(1, &closed)])),
            [1]
        );
        assert_eq!(ids(skip_open(vec![choice(0, &open)])), [0]);
    }
}
