//! Ordering a rule's candidates: breaker state, weighted volume split, cost.

use payproxy_plugin_sdk::payment::{BreakerState, Provider};

use crate::config::WeightedProvider;

/// Floating-point slack when comparing success rates against the tolerance, so that
/// 0.97 − 0.02 counts as "within" 0.95.
const EPSILON: f64 = 1e-9;

/// Keep the candidates the route has, with their health records, in config order.
pub fn known(
    wanted: Vec<WeightedProvider>,
    providers: &[Provider],
) -> Vec<(WeightedProvider, &Provider)> {
    wanted
        .into_iter()
        .filter_map(|w| {
            let p = providers.iter().find(|p| p.name == w.name)?;
            Some((w, p))
        })
        .collect()
}

/// Drop providers whose breaker is open: the host would refuse to send to them anyway, and
/// a weighted split should give their share to the healthy ones. When every candidate is
/// open, keep them all (the host's breaker decides; answering "no provider" here would only
/// hide which ones are down).
pub fn skip_open(list: Vec<(WeightedProvider, &Provider)>) -> Vec<(WeightedProvider, &Provider)> {
    if list
        .iter()
        .all(|(_, p)| p.health.breaker == BreakerState::Open)
    {
        return list;
    }
    list.into_iter()
        .filter(|(_, p)| p.health.breaker != BreakerState::Open)
        .collect()
}

/// Put the weighted pick first, then the others by descending weight (config order on ties).
///
/// Without weights the list is returned as given. The pick is a weighted draw driven by
/// `seed`, so the same seed gives the same order.
pub fn by_weight(mut list: Vec<WeightedProvider>, seed: u64) -> Vec<String> {
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

/// True when any candidate has a weight: the volume split decides, not cost.
pub fn weighted(list: &[(WeightedProvider, &Provider)]) -> bool {
    list.iter().any(|(w, _)| w.weight.is_some())
}

/// Order by success rate, preferring the cheaper provider when rates are comparable.
///
/// Repeatedly: among the remaining candidates whose success rate is within `tolerance` of the
/// best remaining one, take the cheapest (config order on equal cost). So a provider at
/// 96% costing 0.5 goes before one at 97% costing 1.8 with a tolerance of 0.02, but one at
/// 90% does not. This is a well-defined order even though "within tolerance" is not
/// transitive. A missing (NaN) success rate counts as 0 and a NaN cost as the most expensive.
pub fn by_cost(list: &[&Provider], tolerance: f64) -> Vec<String> {
    let rate = |p: &Provider| {
        let r = p.health.success_rate;
        if r.is_nan() {
            0.0
        } else {
            r
        }
    };
    let cost = |p: &Provider| {
        if p.cost.is_nan() {
            f64::INFINITY
        } else {
            p.cost
        }
    };
    let mut remaining: Vec<&Provider> = list.to_vec();
    let mut order = Vec::with_capacity(remaining.len());
    while !remaining.is_empty() {
        let best = remaining
            .iter()
            .map(|p| rate(p))
            .fold(f64::NEG_INFINITY, f64::max);
        let mut pick: Option<usize> = None;
        for (i, p) in remaining.iter().enumerate() {
            if rate(p) + tolerance + EPSILON < best {
                continue;
            }
            if pick.is_none_or(|j| cost(p) < cost(remaining[j])) {
                pick = Some(i);
            }
        }
        // `best` comes from `remaining`, so some candidate is always within tolerance.
        let chosen = remaining.remove(pick.unwrap_or(0));
        order.push(chosen.name.clone());
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
    use payproxy_plugin_sdk::payment::Health;

    fn p(name: &str, rate: f64, cost: f64) -> Provider {
        Provider {
            name: name.into(),
            region: String::new(),
            tags: Vec::new(),
            cost,
            dialect: String::new(),
            health: Health {
                success_rate: rate,
                latency_p50_ms: 0,
                latency_p99_ms: 0,
                breaker: BreakerState::Closed,
            },
        }
    }

    #[test]
    fn cheaper_first_only_within_tolerance_of_the_best() {
        let (a, b, c) = (p("a", 0.99, 3.0), p("b", 0.975, 2.0), p("c", 0.96, 1.0));
        // c is within 0.02 of b but not of a: b (cheapest near the best) first, then a.
        assert_eq!(by_cost(&[&a, &b, &c], 0.02), ["b", "a", "c"]);
        assert_eq!(by_cost(&[&a, &b, &c], 0.0), ["a", "b", "c"]);
        assert_eq!(by_cost(&[&a, &b, &c], 1.0), ["c", "b", "a"]);
    }

    #[test]
    fn ties_keep_config_order_and_nan_sorts_last() {
        let (a, b) = (p("a", 0.9, 1.0), p("b", 0.9, 1.0));
        assert_eq!(by_cost(&[&a, &b], 0.02), ["a", "b"]);
        assert_eq!(by_cost(&[&b, &a], 0.02), ["b", "a"]);
        let (n, m) = (p("nan-rate", f64::NAN, 0.1), p("nan-cost", 0.9, f64::NAN));
        assert_eq!(by_cost(&[&n, &m, &a], 0.02), ["a", "nan-cost", "nan-rate"]);
    }

    #[test]
    fn open_breakers_are_skipped_unless_all_are_open() {
        let mut open = p("open", 0.99, 1.0);
        open.health.breaker = BreakerState::Open;
        let closed = p("closed", 0.5, 9.0);
        fn list<'a>(ps: &[&'a Provider]) -> Vec<(WeightedProvider, &'a Provider)> {
            ps.iter()
                .map(|p| (WeightedProvider::unweighted(&p.name), *p))
                .collect()
        }
        fn names(l: Vec<(WeightedProvider, &Provider)>) -> Vec<String> {
            l.into_iter().map(|(w, _)| w.name).collect()
        }
        assert_eq!(names(skip_open(list(&[&open, &closed]))), ["closed"]);
        assert_eq!(names(skip_open(list(&[&open]))), ["open"]);
    }
}
