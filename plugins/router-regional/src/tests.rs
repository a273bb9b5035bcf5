//! Native tests over the shared fixtures (`fixtures/cases.json`); the proxy's host tests run
//! the same fixtures through the wasm build.

use payproxy_plugin_sdk::payment::{BreakerState, Health};
use payproxy_plugin_sdk::routing::{Candidate, ProviderInfo, RequestView, Router};
use serde_json::Value;

use crate::order::by_weight;
use crate::{Regional, WeightedProvider};

fn fixtures() -> Value {
    serde_json::from_str(include_str!("../fixtures/cases.json")).expect("fixtures parse")
}

fn provider(v: &Value) -> ProviderInfo {
    ProviderInfo {
        name: v["name"].as_str().unwrap().into(),
        region: v["region"].as_str().unwrap().into(),
        tags: serde_json::from_value(v["tags"].clone()).unwrap(),
        cost: v["cost"].as_f64().unwrap(),
        // cases.json predates contract 0.2.0: no dialect.
        dialect: String::new(),
    }
}

fn request(v: &Value) -> RequestView {
    let headers: Vec<(String, String)> =
        serde_json::from_value(v.get("headers").cloned().unwrap_or(Value::Array(vec![]))).unwrap();
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    RequestView::new(
        v["method"].as_str().unwrap(),
        v["path"].as_str().unwrap(),
        None,
        &headers,
        v.get("body").map(|b| b.as_str().unwrap().as_bytes()),
    )
}

/// Healthy candidates for every provider of the list.
fn healthy(providers: &[ProviderInfo]) -> Vec<Candidate> {
    (0..providers.len() as u32)
        .map(|id| Candidate {
            id,
            health: Health {
                success_rate: 1.0,
                latency_p50_ms: 0,
                latency_p99_ms: 0,
                breaker: BreakerState::Closed,
            },
        })
        .collect()
}

fn catalogue(names: &[&str]) -> Vec<ProviderInfo> {
    names
        .iter()
        .map(|name| ProviderInfo {
            name: (*name).into(),
            region: String::new(),
            tags: Vec::new(),
            cost: 1.0,
            dialect: String::new(),
        })
        .collect()
}

#[test]
fn shared_fixtures() {
    let f = fixtures();
    // The route has `providers`; the configuration also has the `elsewhere` ones.
    let on_route = f["providers"].as_array().unwrap().len();
    let providers: Vec<ProviderInfo> = f["providers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(f["elsewhere"].as_array().unwrap())
        .map(provider)
        .collect();
    let plugin = Regional::init(&f["config"].to_string(), providers.clone()).expect("config valid");
    let candidates = healthy(&providers[..on_route]);
    let cases = f["cases"].as_array().unwrap();
    // The proxy's host test runs the same file: a truncated file must not pass quietly.
    assert!(cases.len() >= 8, "only {} cases", cases.len());
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let seed = case.get("seed").and_then(Value::as_u64).unwrap_or(0);
        // Transparent-route view: no canonical payment.
        let got = plugin
            .route(&request(&case["request"]), None, &candidates, seed)
            .map(|ids| {
                ids.iter()
                    .map(|id| providers[*id as usize].name.clone())
                    .collect::<Vec<_>>()
            });
        let expect = &case["expect"];
        if let Some(reject) = expect.get("reject") {
            let r = got.expect_err(name);
            assert_eq!(
                u64::from(r.status),
                reject["status"].as_u64().unwrap(),
                "{name}"
            );
            assert_eq!(r.code, reject["code"].as_str().unwrap(), "{name}");
        } else if let Some(list) = expect.get("providers") {
            let want: Vec<String> = serde_json::from_value(list.clone()).unwrap();
            assert_eq!(got.expect(name), want, "{name}");
        } else {
            let got = got.expect(name);
            let first_of: Vec<String> = serde_json::from_value(expect["first_of"].clone()).unwrap();
            assert!(first_of.contains(&got[0]), "{name}: {got:?}");
            assert_eq!(got.len() as u64, expect["len"].as_u64().unwrap(), "{name}");
        }
    }
}

/// The names in the order `by_weight` puts them.
fn order_by_weight(list: Vec<WeightedProvider>, seed: u64) -> Vec<String> {
    by_weight(list, |w| w.weight, seed)
        .into_iter()
        .map(|w| w.name)
        .collect()
}

#[test]
fn weights_split_volume_in_proportion() {
    let list = vec![
        WeightedProvider {
            weight: Some(80),
            ..WeightedProvider::unweighted("a")
        },
        WeightedProvider {
            weight: Some(20),
            ..WeightedProvider::unweighted("b")
        },
    ];
    let firsts_a = (0..10_000u64)
        .filter(|seed| order_by_weight(list.clone(), *seed)[0] == "a")
        .count();
    // 80% ± 2% over 10k deterministic seeds.
    assert!(
        (7_800..=8_200).contains(&firsts_a),
        "a first {firsts_a} times"
    );
    // The other provider always follows as fallback.
    for seed in 0..100 {
        let mut order = order_by_weight(list.clone(), seed);
        order.sort();
        assert_eq!(order, ["a", "b"], "seed {seed}");
    }
}

#[test]
fn zero_weight_is_never_first() {
    let list = vec![
        WeightedProvider {
            weight: Some(0),
            ..WeightedProvider::unweighted("a")
        },
        WeightedProvider {
            weight: Some(5),
            ..WeightedProvider::unweighted("b")
        },
    ];
    assert!((0..1000u64).all(|s| order_by_weight(list.clone(), s) == ["b", "a"]));
}

#[test]
fn bad_configs_are_rejected_with_the_rule_named() {
    let cases = [
        (
            r#"{"rules":[{"name":"x","providers":[]}]}"#,
            "rules[0] (x): providers must not be empty",
        ),
        (
            r#"{"rules":[{"name":"x"}]}"#,
            "exactly one of providers or reject",
        ),
        (
            r#"{"rules":[{"name":"x","reject":{"status":200,"code":"c","message":"m"}}]}"#,
            "not 400..=599",
        ),
        (r#"{"rulez":[]}"#, "unknown field"),
        (r#"{"default":[]}"#, "default: must not be empty"),
        ("not json", "router-regional config"),
        (
            r#"{"rules":[{"name":"x","match":{"country":["NLD"]},"providers":[{"name":"a"}]}]}"#,
            "rules[0] (x): match.country[0]: must be an ISO 3166-1 alpha-2",
        ),
        (
            r#"{"rules":[{"name":"x","match":{"currency":["EUR","XYZ"]},"providers":[{"name":"a"}]}]}"#,
            "rules[0] (x): match.currency[1]: not an ISO 4217",
        ),
        (
            r#"{"rules":[{"name":"x","match":{"payment_method":["e wallet"]},"providers":[{"name":"a"}]}]}"#,
            "rules[0] (x): match.payment_method[0]: must be one of card",
        ),
        (
            r#"{"rules":[{"name":"x","match":{"operation":["charge"]},"providers":[{"name":"a"}]}]}"#,
            "rules[0].match.operation[0]: unknown variant `charge`",
        ),
        (
            r#"{"rules":[{"name":"x","match":{"amount_min":100},"providers":[{"name":"a"}]}]}"#,
            "rules[0] (x): match.amount_min/amount_max: need match.currency with exactly one",
        ),
        (
            r#"{"rules":[{"name":"x","match":{"amount_max":1,"currency":["EUR","USD"]},"providers":[{"name":"a"}]}]}"#,
            "need match.currency with exactly one",
        ),
        (
            r#"{"rules":[{"name":"x","match":{"amount_min":5,"amount_max":4,"currency":["EUR"]},"providers":[{"name":"a"}]}]}"#,
            "rules[0] (x): match.amount_min: 5 is more than amount_max 4",
        ),
        (
            r#"{"rules":[{"name":"x","match":{"country":[]},"providers":[{"name":"a"}]}]}"#,
            "rules[0] (x): match.country: must not be empty",
        ),
        (
            r#"{"rules":[{"name":"x","match":{"card_country":["DEU"]},"providers":[{"name":"a"}]}]}"#,
            "rules[0] (x): match.card_country[0]: must be an ISO 3166-1 alpha-2",
        ),
        (
            r#"{"rules":[{"name":"x","match":{"card_country":[]},"providers":[{"name":"a"}]}]}"#,
            "rules[0] (x): match.card_country: must not be empty",
        ),
        (
            r#"{"rules":[{"name":"x","match":{"card_network":["master card"]},"providers":[{"name":"a"}]}]}"#,
            "rules[0] (x): match.card_network[0]: must be a card network name",
        ),
        (
            r#"{"rules":[{"name":"x","match":{"card_network":[]},"providers":[{"name":"a"}]}]}"#,
            "rules[0] (x): match.card_network: must not be empty",
        ),
        (
            r#"{"prefer_cheaper_within":1.5}"#,
            "router-regional config: prefer_cheaper_within: must be between 0 and 1",
        ),
        (
            r#"{"prefer_cheaper_within":"2%"}"#,
            "router-regional config: prefer_cheaper_within: invalid type",
        ),
        (
            r#"{"rules":[{"name":"x","providers":[{"name":"a"},{"name":"typo"}]}]}"#,
            "rules[0] (x).providers[1]: provider \"typo\" is not configured",
        ),
        (
            r#"{"default":["a","gone"]}"#,
            "default[1]: provider \"gone\" is not configured",
        ),
    ];
    for (config, want) in cases {
        let err = Regional::init(config, catalogue(&["a", "b"]))
            .err()
            .expect(config);
        assert!(err.contains(want), "{config}: {err}");
        assert!(err.starts_with("router-regional config: "), "{err}");
    }
}

/// `card_country` and `card_network` match the card's issuer country and network (filled by
/// the host from the home provider), case-insensitively, and never a payment that is not a
/// card or a card without them.
#[test]
fn card_country_and_network_conditions() {
    use payproxy_plugin_sdk::payment::{Card, Ewallet, Operation, Payment, PaymentMethod};
    let config = r#"{"rules":[
        {"name":"jp-jcb","match":{"card_country":["jp"],"card_network":["JCB"]},"providers":[{"name":"b"}]},
        {"name":"eea","match":{"card_country":["DE","FR"]},"providers":[{"name":"b"},{"name":"a"}]},
        {"name":"amex","match":{"card_network":["amex"]},"providers":[{"name":"b"}]}
    ],"default":["a"]}"#;
    let providers = catalogue(&["a", "b"]);
    let router = Regional::init(config, providers.clone()).expect("config");
    let candidates = healthy(&providers);
    let route = |method: Option<PaymentMethod>| -> Vec<String> {
        let mut payment = Payment::new(Operation::Authorize);
        payment.method = method;
        let view = RequestView::new("POST", "/v1/payment_intents", None, &[], None);
        let ids = router
            .route(&view, Some(&payment), &candidates, 0)
            .expect("routed");
        ids.iter()
            .map(|id| providers[*id as usize].name.clone())
            .collect()
    };
    let card = |country: Option<&str>, network: Option<&str>| {
        Some(PaymentMethod::Card(Card {
            token: "pm_1".into(),
            bin: None,
            last4: None,
            network: network.map(str::to_string),
            issuer_country: country.map(str::to_string),
        }))
    };
    assert_eq!(route(card(Some("JP"), Some("jcb"))), ["b"]);
    assert_eq!(
        route(card(Some("JP"), Some("visa"))),
        ["a"],
        "both conditions must hold"
    );
    assert_eq!(route(card(Some("de"), Some("visa"))), ["b", "a"]);
    assert_eq!(route(card(Some("US"), Some("Amex"))), ["b"]);
    assert_eq!(
        route(card(None, None)),
        ["a"],
        "unknown details match nothing"
    );
    let wallet = Some(PaymentMethod::Ewallet(Ewallet {
        wallet: "dana".into(),
        phone: None,
    }));
    assert_eq!(route(wallet), ["a"], "not a card");
    assert_eq!(route(None), ["a"]);
    let transparent = RequestView::new("POST", "/v1/payment_intents", None, &[], None);
    assert_eq!(
        router
            .route(&transparent, None, &candidates, 0)
            .expect("routed"),
        [0],
        "no payment: card conditions never hold"
    );
}
