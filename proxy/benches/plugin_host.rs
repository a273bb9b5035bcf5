//! Cost of one router plugin call through the sandboxed host: a warm reused instance
//! (`router/reused`) against a fresh instance with `init` on every call (`router/fresh`).
//!
//! Target: a reused call ≤ 5 µs median on a ~1 KiB request view with 3 providers.
//! Run: `cargo bench -p payproxy --bench plugin_host` (needs `scripts/build-plugins.sh`).
//! criterion's `time:` line is its slope estimate; the last lines printed are the medians of
//! this run and their ratio, which is the figure the target is about.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, Criterion};
use payproxy::config::{InstanceMode, PluginHostConfig};
use payproxy::metrics::Metrics;
use payproxy::plugin::types::{BreakerState, Health, HttpRequest, Provider};
use payproxy::plugin::{PluginHost, ProviderInfo, RouteDecision, RouterPlugin, SandboxSettings};
use serde_json::Value;

/// Total size of header names + values + body in the request view.
const REQUEST_VIEW_BYTES: usize = 1024;

fn plugins_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins")
}

/// The fixtures shared with the plugin's tests: the rule config and the configured providers.
fn fixtures() -> Value {
    let path = plugins_dir().join("router-regional/fixtures/cases.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("read cases.json"))
        .expect("cases.json is JSON")
}

/// Every configured provider: the route's three and the one on other routes.
fn catalogue(fixtures: &Value) -> Vec<ProviderInfo> {
    fixtures["providers"]
        .as_array()
        .into_iter()
        .chain(fixtures["elsewhere"].as_array())
        .flatten()
        .map(|p| ProviderInfo {
            name: p["name"].as_str().expect("name").into(),
            region: p["region"].as_str().expect("region").into(),
            tags: serde_json::from_value(p["tags"].clone()).expect("tags"),
            cost: p["cost"].as_f64().expect("cost"),
            dialect: String::new(),
        })
        .collect()
}

fn load(host: &Arc<PluginHost>, mode: InstanceMode) -> RouterPlugin {
    let path = plugins_dir().join("target/wasm32-wasip2/release/router_regional.wasm");
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/build-plugins.sh)", path.display()));
    let compiled = host.compile(&bytes).expect("compile router_regional");
    let settings = SandboxSettings {
        mode,
        recycle_after: 10_000,
        deadline_ms: 20,
        memory_bytes: 32 << 20,
        identity: ("router", String::new()),
    };
    let fixtures = fixtures();
    RouterPlugin::load(
        host,
        "router_regional",
        &compiled.component,
        fixtures["config"].to_string(),
        &catalogue(&fixtures),
        settings,
        Arc::new(Metrics::new()),
    )
    .expect("load router_regional")
}

fn providers() -> Vec<Provider> {
    [
        ("sim-eu", "eu", 1.8),
        ("sim-us", "us", 2.0),
        ("sim-sea", "sea", 1.2),
    ]
    .into_iter()
    .map(|(name, region, cost)| Provider {
        name: name.into(),
        region: region.into(),
        tags: vec!["card".into()],
        cost,
        dialect: String::new(),
        health: Health {
            success_rate: 1.0,
            latency_p50_ms: 120,
            latency_p99_ms: 480,
            breaker: BreakerState::Closed,
        },
    })
    .collect()
}

/// A storefront `POST /v1/payment_intents` as a route with `plugin_body` hands it to the
/// router: 12 headers and a JSON body, padded so headers + body are exactly 1 KiB. It walks
/// the header rules and lands on the body rule `eur-split`.
fn request() -> HttpRequest {
    let headers: Vec<(String, String)> = [
        ("host", "pay.shop.example"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, br"),
        ("content-type", "application/json"),
        ("content-length", "0"), // fixed below
        ("authorization", "Bearer sk_test_51Hx2eYbK0mP7cQ9rT4uV6wX8yZ"),
        ("idempotency-key", "7f9c2ba4-e88f-4b2a-9d3c-1e5f6a7b8c9d"),
        ("x-shopper-country", "DE"),
        ("x-request-id", "req_01J2Z8K4M6N8P0Q2R4S6T8V0W2"),
        ("x-forwarded-for", "203.0.113.7"),
        ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();

    let body_with = |pad: usize| {
        format!(
            r#"{{"amount":4599,"currency":"eur","capture_method":"automatic","customer":"cus_Q2x8LmN4pR7s","payment_method":{{"type":"card","card":{{"brand":"visa","last4":"4242","exp_month":12,"exp_year":2030}}}},"description":"Order 100234 {}","metadata":{{"order_id":"100234","cart_id":"c_88213"}}}}"#,
            "x".repeat(pad)
        )
    };
    // content-length is part of the header bytes, so settle its width first (3 digits).
    let header_bytes = |headers: &[(String, String)]| {
        headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
    };
    let mut headers = headers;
    headers[5].1 = "000".into();
    let pad = REQUEST_VIEW_BYTES - header_bytes(&headers) - body_with(0).len();
    let body = body_with(pad);
    headers[5].1 = body.len().to_string();
    assert_eq!(headers[5].1.len(), 3);
    assert_eq!(header_bytes(&headers) + body.len(), REQUEST_VIEW_BYTES);
    assert!(serde_json::from_str::<Value>(&body).is_ok());

    HttpRequest {
        method: "POST".into(),
        path: "/v1/payment_intents".into(),
        query: None,
        headers,
        body: Some(body.into_bytes()),
    }
}

fn router(c: &mut Criterion) {
    let host = PluginHost::new(&PluginHostConfig::default()).expect("plugin host");
    let request = request();
    let providers = providers();
    let mut group = c.benchmark_group("router");
    // Long runs with many samples: the machines are shared, and neighbours come and go on a
    // scale of seconds, so a short run's median says more about them than about the host.
    group
        .sample_size(100)
        .measurement_time(Duration::from_secs(12))
        .warm_up_time(Duration::from_secs(2));

    for (id, mode) in [
        ("reused", InstanceMode::Reuse),
        ("fresh", InstanceMode::Fresh),
    ] {
        let plugin = load(&host, mode);
        // The same answer in both modes, so both measure the same work.
        let decision = plugin.route(&request, None, &providers, 42).expect("route");
        assert!(
            matches!(&decision, RouteDecision::Providers(p) if p.len() == 2),
            "{decision:?}"
        );
        group.bench_function(id, |b| {
            b.iter(|| {
                plugin
                    .route(
                        black_box(&request),
                        None,
                        black_box(&providers),
                        black_box(42),
                    )
                    .expect("route")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, router);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    print_medians();
}

/// The medians criterion estimated in this run (it prints the slope), read from its
/// `estimates.json` next to the bench binary's target directory.
fn print_medians() {
    let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("criterion/router")))
    else {
        return;
    };
    let median = |id: &str| -> Option<f64> {
        let text = std::fs::read_to_string(dir.join(id).join("new/estimates.json")).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        v["median"]["point_estimate"].as_f64()
    };
    let fastest = |id: &str| -> Option<f64> {
        let text = std::fs::read_to_string(dir.join(id).join("new/sample.json")).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        let (iters, times) = (v["iters"].as_array()?, v["times"].as_array()?);
        iters
            .iter()
            .zip(times)
            .filter_map(|(i, t)| Some(t.as_f64()? / i.as_f64()?))
            .reduce(f64::min)
    };
    if let Some(floor) = fastest("reused") {
        println!("fastest sample: reused {:.2} µs per call", floor / 1e3);
    }
    if let (Some(reused), Some(fresh)) = (median("reused"), median("fresh")) {
        println!(
            "median: reused {:.2} µs, fresh {:.2} µs, fresh ÷ reused {:.1}×",
            reused / 1e3,
            fresh / 1e3,
            fresh / reused
        );
    }
}
