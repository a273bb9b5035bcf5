//! End to end: the wasm router plugin decides the provider; rejections, hostile plugins
//! and their failure policies, and the Prometheus exposition, all over real sockets.

use payproxy_e2e::*;
use serde_json::{json, Value};

fn with_router(sim: &Simulator, providers: &[&str], plugin: Value, route_extra: Value) -> Value {
    let mut config = base_config(sim, providers);
    config["plugins"] = json!({ "router": plugin });
    let route = &mut config["routes"][0];
    route["plugins"] = json!(["router"]);
    if let Value::Object(extra) = route_extra {
        for (k, v) in extra {
            route[k] = v;
        }
    }
    config
}

fn regional(rules: Value) -> Value {
    json!({
        "path": wasm("router_regional"),
        "role": "router",
        "config": rules,
    })
}

fn rules() -> Value {
    json!({
        "rules": [
            { "name": "blocked", "match": { "headers": { "x-shopper-country": ["KP"] } },
              "reject": { "status": 403, "code": "country_blocked", "message": "payments from this country are not accepted" } },
            { "name": "sea", "match": { "headers": { "x-shopper-country": ["ID", "SG"] } },
              "providers": [ { "name": "sea" }, { "name": "us" } ] },
            { "name": "eur", "match": { "body": { "currency": ["eur"] } },
              "providers": [ { "name": "eu" } ] }
        ],
        "default": ["us"]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wasm_router_picks_the_provider_per_request() {
    let sim = Simulator::start(&["eu", "us", "sea"]).await.unwrap();
    let env = Env::start(with_router(
        &sim,
        &["eu", "us", "sea"],
        regional(rules()),
        json!({ "plugin_body": true }),
    ))
    .await;
    let client = HttpClient::default();
    let url = env.url("/v1/payment_intents");

    let id = client
        .post_form(
            &url,
            &[("x-shopper-country", "ID")],
            "amount=15000&currency=idr",
        )
        .await;
    assert_eq!(id.status, 200, "{:?}", id.body);
    assert_eq!(id.provider(), Some("sea"));
    assert_eq!(
        id.json()["provider"],
        "sea",
        "the simulator itself says who charged"
    );

    let json_body = client
        .send(
            http::Method::POST,
            &env.url("/echo"),
            &[("content-type", "application/json")],
            r#"{"currency":"EUR","amount":100}"#,
        )
        .await;
    assert_eq!(json_body.provider(), Some("eu"));
    assert_eq!(
        json_body.json()["body_len"],
        31,
        "the buffered body is forwarded unchanged"
    );

    let us = client
        .post_form(
            &url,
            &[("x-shopper-country", "US")],
            "amount=100&currency=usd",
        )
        .await;
    assert_eq!(us.provider(), Some("us"));

    assert_eq!(sim.ledger("sea").len(), 1);
    assert_eq!(sim.ledger("us").len(), 1);
    env.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_rejection_is_json_and_contacts_no_provider() {
    let sim = Simulator::start(&["eu", "us", "sea"]).await.unwrap();
    let env = Env::start(with_router(
        &sim,
        &["eu", "us", "sea"],
        regional(rules()),
        json!({}),
    ))
    .await;
    let reply = HttpClient::default()
        .post_form(
            &env.url("/v1/payment_intents"),
            &[("x-shopper-country", "KP")],
            "amount=1&currency=usd",
        )
        .await;
    assert_eq!(reply.status, 403);
    let error = &reply.json()["error"];
    assert_eq!(error["type"], "payment_rejected");
    assert_eq!(error["code"], "country_blocked");
    assert_eq!(
        error["message"],
        "payments from this country are not accepted"
    );
    for p in ["eu", "us", "sea"] {
        assert_eq!(sim.request_count(p), 0, "{p} must not be contacted");
    }
    env.proxy.shutdown().await;
}

/// One route per hostile behaviour, each with its own policy, plus a healthy route.
fn hostile_config(sim: &Simulator) -> Value {
    let mut config = base_config(sim, &["primary", "backup"]);
    let mut plugins = serde_json::Map::new();
    let mut routes = Vec::new();
    for (mode, on_error) in [
        ("loop", "fail-open"),
        ("memory", "fail-closed"),
        ("trap", "fail-closed"),
        ("output", "fail-open"),
    ] {
        // Only `loop` is meant to hit its deadline. The others get a generous one: the wall
        // clock cap (10× the deadline, at least 1 s) must not beat the memory cap or the
        // output check on a starved, loaded machine (it did once in a full-suite run).
        let deadline_ms = if mode == "loop" { 30 } else { 1000 };
        plugins.insert(
            mode.into(),
            json!({ "path": wasm("fixture_hostile"), "role": "router", "config": { "mode": mode },
                    "on_error": on_error, "deadline_ms": deadline_ms, "memory_mb": 8 }),
        );
        routes.push(json!({ "name": mode, "path_prefix": format!("/{mode}"), "plugins": [mode], "providers": ["primary", "backup"] }));
    }
    routes.push(json!({ "name": "healthy", "path_prefix": "/", "providers": ["backup"] }));
    config["plugins"] = Value::Object(plugins);
    config["routes"] = Value::Array(routes);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_fail_only_their_step_and_are_counted() {
    let sim = Simulator::start(&["primary", "backup"]).await.unwrap();
    let env = Env::start(hostile_config(&sim)).await;
    let client = HttpClient::default();
    for round in 0..3 {
        // fail-open: the route's static order, so the first provider answers.
        let r = client.get(&env.url("/loop/echo")).await;
        assert_eq!(
            (r.status.as_u16(), r.provider()),
            (200, Some("primary")),
            "loop round {round}"
        );
        let r = client.get(&env.url("/output/echo")).await;
        assert_eq!(
            (r.status.as_u16(), r.provider()),
            (200, Some("primary")),
            "output round {round}"
        );
        // fail-closed: JSON 503, no provider contacted for these.
        for mode in ["memory", "trap"] {
            let r = client.get(&env.url(&format!("/{mode}/echo"))).await;
            assert_eq!(r.status, 503, "{mode}");
            assert_eq!(r.json()["error"]["code"], "plugin_failed");
            assert_eq!(r.json()["error"]["type"], "plugin_error");
            assert!(!String::from_utf8_lossy(&r.body).contains("backtrace"));
        }
        // Everything else keeps serving.
        let r = client.get(&env.url("/fine")).await;
        assert_eq!((r.status.as_u16(), r.provider()), (200, Some("backup")));
    }
    assert_eq!(
        sim.request_count("primary"),
        6,
        "only the fail-open routes reached a provider"
    );

    let metrics = scrape(&client, &env).await;
    for (plugin, kind) in [
        ("loop", "deadline"),
        ("memory", "memory"),
        ("trap", "trap"),
        ("output", "bad_output"),
    ] {
        assert_eq!(
            sample(
                &metrics,
                "payproxy_plugin_failures_total",
                &[("plugin", plugin), ("kind", kind)]
            ),
            Some(3.0),
            "{plugin}/{kind}"
        );
    }
    // These are 0.1.0 routers: they load, and the status page says the contract is
    // deprecated and when it stops loading.
    let status = client.get(&env.admin_url("/admin/status")).await.json();
    let loop_plugin = status["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "loop")
        .unwrap();
    assert_eq!(loop_plugin["contract"], "0.1.0");
    assert_eq!(
        loop_plugin["deprecated"],
        "will no longer load from payproxy 0.3.0"
    );
    env.proxy.shutdown().await;
}

async fn scrape(client: &HttpClient, env: &Env) -> prometheus_parse::Scrape {
    let reply = client.get(&env.admin_url("/metrics")).await;
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(reply.body.to_vec()).unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("valid Prometheus text format")
}

fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.last().map(|b| b.count).unwrap_or(0.0)
            }
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_carry_the_traffic() {
    let sim = Simulator::start(&["eu", "us", "sea"]).await.unwrap();
    let env = Env::start(with_router(
        &sim,
        &["eu", "us", "sea"],
        regional(rules()),
        json!({}),
    ))
    .await;
    let client = HttpClient::default();
    for _ in 0..4 {
        client
            .post_form(
                &env.url("/v1/payment_intents"),
                &[("x-shopper-country", "SG")],
                "amount=5&currency=sgd",
            )
            .await;
    }
    client
        .post_form(
            &env.url("/v1/payment_intents"),
            &[("x-shopper-country", "KP")],
            "amount=5&currency=usd",
        )
        .await;
    let bad = client
        .post_form(
            &env.url("/v1/payment_intents"),
            &[("x-shopper-country", "SG")],
            "currency=sgd",
        )
        .await;
    assert_eq!(
        bad.status, 400,
        "the simulator refuses a missing amount; the proxy relays it"
    );

    let m = scrape(&client, &env).await;
    assert_eq!(
        sample(
            &m,
            "payproxy_requests_total",
            &[
                ("route", "all"),
                ("provider", "sea"),
                ("status_class", "2xx")
            ]
        ),
        Some(4.0)
    );
    assert_eq!(
        sample(
            &m,
            "payproxy_requests_total",
            &[
                ("route", "all"),
                ("provider", "sea"),
                ("status_class", "4xx")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "payproxy_requests_total",
            &[
                ("route", "all"),
                ("provider", "none"),
                ("status_class", "4xx")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "payproxy_request_duration_seconds", &[("route", "all")]),
        Some(6.0),
        "histogram count"
    );
    let digest = env.proxy.reloader.snapshot().plugins["router"]
        .sha256
        .clone();
    assert_eq!(digest.len(), 64);
    assert_eq!(
        sample(
            &m,
            "payproxy_plugin_info",
            &[
                ("plugin", "router"),
                ("role", "router"),
                ("sha256", &digest)
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "payproxy_plugin_call_duration_seconds",
            &[("plugin", "router"), ("function", "route")]
        ),
        Some(6.0)
    );
    assert_eq!(
        sample(
            &m,
            "payproxy_upstream_duration_seconds",
            &[("provider", "sea")]
        ),
        Some(5.0)
    );
    env.proxy.shutdown().await;
}
