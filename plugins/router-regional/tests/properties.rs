//! Property tests: whatever the health snapshot, the order is a subset of the route's
//! providers without duplicates, open breakers are skipped unless all are open, and the
//! same seed gives the same order.

use payproxy_plugin_sdk::payment::{
    BreakerState, Health, HttpRequest, Money, Operation, Payment, Provider, Router,
};
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

fn provider(name: &str, (rate, cost, breaker): (f64, f64, u8)) -> Provider {
    Provider {
        name: name.into(),
        region: "eu".into(),
        tags: Vec::new(),
        cost,
        dialect: "stripe".into(),
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

fn request() -> HttpRequest {
    HttpRequest {
        method: "POST".into(),
        path: "/v1/payment_intents".into(),
        query: None,
        headers: Vec::new(),
        body: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn orders_are_sane(
        health in proptest::collection::vec((0.0f64..=1.0, 0.0f64..5.0, 0u8..4), 4),
        usd: bool,
        seed: u64,
    ) {
        let plugin = Regional::init(CONFIG).unwrap();
        let providers: Vec<Provider> = ["a", "b", "c", "d"].iter().zip(&health).map(|(n, h)| provider(n, *h)).collect();
        let mut payment = Payment::new(Operation::Authorize);
        let currency = if usd { "USD" } else { "EUR" };
        payment.amount = Some(Money { minor: 1000, currency: currency.into() });
        let names = plugin.route(&request(), Some(&payment), &providers, seed).unwrap();
        let again = plugin.route(&request(), Some(&payment), &providers, seed).unwrap();
        prop_assert_eq!(&names, &again);

        let rule: &[&str] = if usd { &["a", "b", "c"] } else { &["a", "b", "c", "d"] };
        let open = |n: &str| providers.iter().any(|p| p.name == n && p.health.breaker == BreakerState::Open);
        let all_open = rule.iter().all(|n| open(n));
        let mut expected: Vec<&str> = rule.iter().copied().filter(|n| all_open || !open(n)).collect();
        let mut got: Vec<&str> = names.iter().map(String::as_str).collect();
        expected.sort_unstable();
        got.sort_unstable();
        prop_assert_eq!(got, expected);
    }
}
