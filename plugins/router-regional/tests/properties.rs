//! Property tests: whatever the health snapshot, the order is a subset of the route's
//! providers without duplicates, open breakers are skipped unless all are open, and the
//! same seed gives the same order.

use payproxy_plugin_sdk::payment::{BreakerState, Health, Money, Operation, Payment};
use payproxy_plugin_sdk::routing::{Candidate, ProviderInfo, RequestView, Router};
use proptest::prelude::*;
use router_regional::Regional;

const CONFIG: &str = r#"{
  "rules": [
    { "name": "eur", "match": { "currency": ["EUR"] },
      "providers": [ { "name": "a" }, { "name": "b" }, { "name": "c" }, { "name": "d" } ] },
    { "name": "usd", "match": { "currency": ["USD"] },
      "providers": [ { "name": "a", "weight": 50 }, { "name": "b", "weight": 30 }, { "name": "c", "weight": 20 } ] }
  ],
  "prefer_cheaper_within": 0.02
}"#;

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

fn providers(costs: &[f64]) -> Vec<ProviderInfo> {
    NAMES
        .iter()
        .zip(costs)
        .map(|(name, cost)| ProviderInfo {
            name: (*name).into(),
            region: "eu".into(),
            tags: Vec::new(),
            cost: *cost,
            dialect: "stripe".into(),
        })
        .collect()
}

fn candidate(id: u32, (rate, _cost, breaker): (f64, f64, u8)) -> Candidate {
    Candidate {
        id,
        health: Health {
            success_rate: rate,
            latency_p50_ms: 100,
            latency_p99_ms: 500,
            breaker: match breaker {
                0 => BreakerState::Open,
                1 => BreakerState::HalfOpen,
                _ => BreakerState::Closed,
            },
        },
    }
}

fn request() -> RequestView {
    RequestView::new("POST", "/v1/payment_intents", None, &[], None)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn orders_are_sane(
        health in proptest::collection::vec((0.0f64..=1.0, 0.0f64..5.0, 0u8..4), 4),
        usd: bool,
        seed: u64,
    ) {
        let costs: Vec<f64> = health.iter().map(|h| h.1).collect();
        let plugin = Regional::init(CONFIG, providers(&costs)).unwrap();
        let candidates: Vec<Candidate> = health.iter().enumerate().map(|(i, h)| candidate(i as u32, *h)).collect();
        let mut payment = Payment::new(Operation::Authorize);
        let currency = if usd { "USD" } else { "EUR" };
        payment.amount = Some(Money { minor: 1000, currency: currency.into() });
        let ids = plugin.route(&request(), Some(&payment), &candidates, seed).unwrap();
        let again = plugin.route(&request(), Some(&payment), &candidates, seed).unwrap();
        prop_assert_eq!(&ids, &again);
        let names: Vec<&str> = ids.iter().map(|id| NAMES[*id as usize]).collect();

        let rule: &[&str] = if usd { &["a", "b", "c"] } else { &["a", "b", "c", "d"] };
        let open = |n: &str| NAMES.iter().zip(&candidates).any(|(name, c)| *name == n && c.health.breaker == BreakerState::Open);
        let all_open = rule.iter().all(|n| open(n));
        let mut expected: Vec<&str> = rule.iter().copied().filter(|n| all_open || !open(n)).collect();
        let mut got = names;
        expected.sort_unstable();
        got.sort_unstable();
        prop_assert_eq!(got, expected);
    }
}
