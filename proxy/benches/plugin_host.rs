//! Cost of one plugin call through the sandboxed host, per role, on a warm reused instance
//! (`reused`) against a fresh instance with `init` on every call (`fresh`), for a small and
//! a large input:
//!
//! - `router/{1k,64k}`: `router-regional` on a request view of 1 KiB or 64 KiB (12 headers,
//!   a JSON body padded to size) with 3 providers;
//! - `ingress/{1k,max}`: `dialect-stripe` parsing a `POST /v1/payment_intents` form of about
//!   1 KiB, or the largest Stripe accepts (50 metadata values of 500 characters, ~27 KiB:
//!   64 KiB would be refused by Stripe's own limits);
//! - `compliance/{1k,max}`: `compliance-psd2-sca`, `-kyc` and `-limits` (the demo's rules)
//!   on the payment that form parses to;
//! - `egress-encode/{1k,max}`: `dialect-adyen` encoding that payment;
//! - `egress-decode/{1k,64k}`: `dialect-adyen` decoding an authorisation of 1 KiB or 64 KiB
//!   (`additionalData` padded).
//!
//! Target (router): a reused call ≤ 5 µs median on the 1 KiB view.
//! Run: `cargo bench -p payproxy --bench plugin_host` (needs `scripts/build-plugins.sh`);
//! `cargo bench -p payproxy --bench plugin_host -- ingress` runs one group. criterion's
//! `time:` line is its slope estimate; the table printed last holds this run's medians and
//! the fresh ÷ reused ratios.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{criterion_group, BenchmarkGroup, BenchmarkId, Criterion};
use payproxy::config::{InstanceMode, PluginHostConfig};
use payproxy::metrics::Metrics;
use payproxy::plugin::storefront::Call;
use payproxy::plugin::types::{
    BreakerState, Health, HttpRequest, HttpResponse, OutcomeStatus, Payment, Provider,
};
use payproxy::plugin::{
    Compiled, CompliancePlugin, Context, DialectPlugin, PluginHost, ProviderInfo, RouteDecision,
    RouterPlugin, SandboxSettings, Verdict,
};
use serde_json::Value;

/// Total sizes of header names + values + body in the router's request views.
const REQUEST_VIEWS: [(&str, usize); 2] = [("1k", 1024), ("64k", 64 * 1024)];

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

/// How each instance mode is named in the bench ids.
const MODES: [(&str, InstanceMode); 2] = [
    ("reused", InstanceMode::Reuse),
    ("fresh", InstanceMode::Fresh),
];

fn settings(mode: InstanceMode, role: &'static str) -> SandboxSettings {
    SandboxSettings {
        mode,
        recycle_after: 10_000,
        deadline_ms: 20,
        memory_bytes: 32 << 20,
        identity: (role, String::new()),
    }
}

/// A first-party plugin, built by `scripts/build-plugins.sh`, compiled.
fn compiled(host: &Arc<PluginHost>, file: &str) -> Compiled {
    let path = plugins_dir()
        .join("target/wasm32-wasip2/release")
        .join(file);
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/build-plugins.sh)", path.display()));
    host.compile(&bytes)
        .unwrap_or_else(|e| panic!("compile {file}: {e}"))
}

/// The demo's rules file `name` (examples/config/rules), as a plugin config.
fn rules(name: &str) -> String {
    let path = plugins_dir().join("../examples/config/rules").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn load_router(host: &Arc<PluginHost>, mode: InstanceMode) -> RouterPlugin {
    let fixtures = fixtures();
    RouterPlugin::load(
        host,
        "router_regional",
        &compiled(host, "router_regional.wasm").component,
        fixtures["config"].to_string(),
        &catalogue(&fixtures),
        settings(mode, "router"),
        Arc::new(Metrics::new()),
    )
    .expect("load router_regional")
}

fn load_dialect(
    host: &Arc<PluginHost>,
    file: &str,
    config: Value,
    mode: InstanceMode,
) -> DialectPlugin {
    DialectPlugin::load(
        host,
        file,
        &compiled(host, file).component,
        config.to_string(),
        settings(mode, "dialect"),
        Arc::new(Metrics::new()),
    )
    .unwrap_or_else(|e| panic!("load {file}: {e}"))
}

fn load_compliance(host: &Arc<PluginHost>, mode: InstanceMode) -> Vec<CompliancePlugin> {
    [
        ("compliance_psd2_sca.wasm", "psd2-sca.json"),
        ("compliance_kyc.wasm", "kyc.json"),
        ("compliance_limits.wasm", "limits.json"),
    ]
    .into_iter()
    .map(|(file, config)| {
        CompliancePlugin::load(
            host,
            file,
            &compiled(host, file).component,
            rules(config),
            settings(mode, "compliance"),
            Arc::new(Metrics::new()),
        )
        .unwrap_or_else(|e| panic!("load {file}: {e}"))
    })
    .collect()
}

/// A storefront card payment in Stripe's form encoding: about 1 KiB (`1k`, a description
/// pads it), or the largest Stripe accepts (`max`: 50 metadata values of 500 characters
/// and a 1,000-character description).
fn stripe_form(size: &str) -> HttpRequest {
    let mut form = String::from(
        "amount=1000&currency=eur&confirm=true&payment_method_data[type]=card\
         &payment_method_data[card][token]=tok_visa&payment_method_data[card][bin]=424242\
         &payment_method_data[card][last4]=4242&payment_method_data[card][network]=visa\
         &payment_method_data[card][country]=NL\
         &payment_method_data[billing_details][address][country]=NL&metadata[order_id]=bench",
    );
    if size == "max" {
        for k in 0..49 {
            form += &format!("&metadata[k{k:02}]={}", "m".repeat(500));
        }
        form += &format!("&description={}", "d".repeat(1000));
    } else {
        let pad = 1024 - form.len() - "&description=".len();
        form += &format!("&description={}", "d".repeat(pad));
    }
    HttpRequest {
        method: "POST".into(),
        path: "/v1/payment_intents".into(),
        query: None,
        headers: vec![(
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        )],
        body: Some(form.into_bytes()),
    }
}

/// Adyen's answer to an authorisation: about 1 KiB, or 64 KiB (`additionalData` padded).
fn adyen_answer(size: usize) -> HttpResponse {
    let with = |pad: usize| {
        serde_json::json!({
            "pspReference": "PSPBENCH0000001",
            "resultCode": "Authorised",
            "amount": { "value": 1000, "currency": "EUR" },
            "merchantReference": "pi_bench",
            "additionalData": { "note": "x".repeat(pad) },
        })
        .to_string()
    };
    let body = with(size - with(0).len());
    assert_eq!(body.len(), size);
    HttpResponse {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.into_bytes(),
    }
}

/// Long runs with many samples: the machines are shared, and neighbours come and go on a
/// scale of seconds, so a short run's median says more about them than about the host.
fn group<'c>(c: &'c mut Criterion, name: &str) -> BenchmarkGroup<'c, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(100)
        .measurement_time(Duration::from_secs(6))
        .warm_up_time(Duration::from_secs(1));
    group
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
/// router: 12 headers and a JSON body, padded so headers + body are exactly `size` bytes
/// (1 KiB or 64 KiB). It walks the header rules and lands on the body rule `eur-split`.
fn request(size: usize) -> HttpRequest {
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
    // content-length is part of the header bytes: find the width its own value has.
    let header_bytes = |headers: &[(String, String)]| {
        headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
    };
    let mut headers = headers;
    let body = (1..=size.to_string().len())
        .rev()
        .find_map(|width| {
            headers[5].1 = "0".repeat(width);
            let pad = size - header_bytes(&headers) - body_with(0).len();
            let body = body_with(pad);
            (body.len().to_string().len() == width).then_some(body)
        })
        .expect("a content-length width that fits");
    headers[5].1 = body.len().to_string();
    assert_eq!(header_bytes(&headers) + body.len(), size);
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
    let providers = providers();
    let mut group = group(c, "router");
    for (size, bytes) in REQUEST_VIEWS {
        let request = request(bytes);
        for (mode_name, mode) in MODES {
            let plugin = load_router(&host, mode);
            // The same answer in both modes, so both measure the same work.
            let decision = plugin.route(&request, None, &providers, 42).expect("route");
            assert!(
                matches!(&decision, RouteDecision::Providers(p) if p.len() == 2),
                "{decision:?}"
            );
            group.bench_function(BenchmarkId::new(size, mode_name), |b| {
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
    }
    group.finish();
}

/// The Stripe dialect that turns the forms into the payments the other roles get.
fn stripe_parser(host: &Arc<PluginHost>) -> DialectPlugin {
    let config = serde_json::json!({});
    load_dialect(host, "dialect_stripe.wasm", config, InstanceMode::Reuse)
}

/// The payment `form` parses to.
fn parsed(stripe: &DialectPlugin, form: &HttpRequest) -> Payment {
    match stripe.parse(form).expect("parse") {
        Ok(Call::Payment(call)) => call.payment,
        other => panic!("not a payment: {other:?}"),
    }
}

fn ingress(c: &mut Criterion) {
    let host = PluginHost::new(&PluginHostConfig::default()).expect("plugin host");
    let config = serde_json::json!({ "server_errors": "answered_not_processed" });
    let mut group = group(c, "ingress");
    for size in ["1k", "max"] {
        let form = stripe_form(size);
        for (mode_name, mode) in MODES {
            let stripe = load_dialect(&host, "dialect_stripe.wasm", config.clone(), mode);
            parsed(&stripe, &form);
            group.bench_function(BenchmarkId::new(size, mode_name), |b| {
                b.iter(|| stripe.parse(black_box(&form)).expect("parse"))
            });
        }
    }
    group.finish();
}

fn compliance(c: &mut Criterion) {
    let host = PluginHost::new(&PluginHostConfig::default()).expect("plugin host");
    let stripe = stripe_parser(&host);
    let mut group = group(c, "compliance");
    for size in ["1k", "max"] {
        let payment = parsed(&stripe, &stripe_form(size));
        for (mode_name, mode) in MODES {
            let plugins = load_compliance(&host, mode);
            for plugin in &plugins {
                let decision = plugin.check(&payment, None).expect("check");
                assert!(
                    !matches!(decision.verdict, Verdict::Deny(_)),
                    "{}: {decision:?}",
                    plugin.name()
                );
            }
            // The three in a row, as a route runs them.
            group.bench_function(BenchmarkId::new(size, mode_name), |b| {
                b.iter(|| {
                    for plugin in &plugins {
                        black_box(plugin.check(black_box(&payment), None).expect("check"));
                    }
                })
            });
        }
    }
    group.finish();
}

fn egress(c: &mut Criterion) {
    let host = PluginHost::new(&PluginHostConfig::default()).expect("plugin host");
    let stripe = stripe_parser(&host);
    let config = serde_json::json!({ "merchant_account": "BenchECOM" });
    let context = Context {
        provider: "adyen".into(),
        credentials: vec![("api_key".into(), "bench_api_key".into())],
        now_ms: 1_780_000_000_000,
        idempotency_key: "pi_bench:adyen:1".into(),
    };
    let mut encode = group(c, "egress-encode");
    for size in ["1k", "max"] {
        let payment = parsed(&stripe, &stripe_form(size));
        for (mode_name, mode) in MODES {
            let adyen = load_dialect(&host, "dialect_adyen.wasm", config.clone(), mode);
            adyen
                .encode_request(&payment, &context)
                .expect("encode")
                .expect("not refused");
            encode.bench_function(BenchmarkId::new(size, mode_name), |b| {
                b.iter(|| {
                    adyen
                        .encode_request(black_box(&payment), &context)
                        .expect("encode")
                })
            });
        }
    }
    encode.finish();
    let payment = parsed(&stripe, &stripe_form("1k"));
    let mut decode = group(c, "egress-decode");
    for (size, bytes) in [("1k", 1024), ("64k", 64 * 1024)] {
        let answer = adyen_answer(bytes);
        for (mode_name, mode) in MODES {
            let adyen = load_dialect(&host, "dialect_adyen.wasm", config.clone(), mode);
            let outcome = adyen.decode_response(&payment, &answer).expect("decode");
            assert!(
                matches!(outcome.status, OutcomeStatus::Approved),
                "{outcome:?}"
            );
            decode.bench_function(BenchmarkId::new(size, mode_name), |b| {
                b.iter(|| {
                    adyen
                        .decode_response(black_box(&payment), black_box(&answer))
                        .expect("decode")
                })
            });
        }
    }
    decode.finish();
}

criterion_group!(benches, router, ingress, compliance, egress);

fn main() {
    let started = std::time::SystemTime::now();
    benches();
    Criterion::default().configure_from_args().final_summary();
    print_medians(started);
}

/// The medians criterion estimated in this run (it prints the slope), read from its
/// `estimates.json` under the target directory (written since `started`: a group a filter
/// left out is not shown with an older run's figures), as a table with the fresh ÷ reused
/// ratio.
fn print_medians(started: std::time::SystemTime) {
    let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("criterion")))
    else {
        return;
    };
    let median = |group: &str, size: &str, mode: &str| -> Option<f64> {
        let file = dir
            .join(group)
            .join(size)
            .join(mode)
            .join("new/estimates.json");
        if std::fs::metadata(&file).ok()?.modified().ok()? < started {
            return None;
        }
        let v: Value = serde_json::from_str(&std::fs::read_to_string(file).ok()?).ok()?;
        v["median"]["point_estimate"].as_f64()
    };
    println!("| call | input | reused µs | fresh µs | fresh ÷ reused |");
    println!("|---|---|---|---|---|");
    for (group, sizes) in [
        ("router", ["1k", "64k"]),
        ("ingress", ["1k", "max"]),
        ("compliance", ["1k", "max"]),
        ("egress-encode", ["1k", "max"]),
        ("egress-decode", ["1k", "64k"]),
    ] {
        for size in sizes {
            if let (Some(reused), Some(fresh)) =
                (median(group, size, "reused"), median(group, size, "fresh"))
            {
                println!(
                    "| {group} | {size} | {:.2} | {:.2} | {:.1}× |",
                    reused / 1e3,
                    fresh / 1e3,
                    fresh / reused
                );
            }
        }
    }
}
