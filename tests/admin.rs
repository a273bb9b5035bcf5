//! The admin listener's token rules and its status document.

use http::{Method, StatusCode};
use payproxy_e2e::{base_config, wasm, write_config, Env, HttpClient, Simulator};
use serde_json::{json, Value};

const TOKEN: &str = "s3cret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_loopback_admin_without_token_refuses_to_start() {
    let sim = Simulator::start(&["a"]).await.unwrap();
    let mut config = base_config(&sim, &["a"]);
    // A variable nobody sets, so the environment cannot supply a token.
    let token_env = "PAYPROXY_E2E_ADMIN_TOKEN_NEVER_SET_7D1F";
    assert!(std::env::var_os(token_env).is_none());
    config["admin"] = json!({ "addr": "0.0.0.0:0", "token_env": token_env });
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &config);

    let message = match payproxy::server::start(&path).await {
        Ok(_) => panic!("started with an open admin listener on 0.0.0.0"),
        Err(e) => format!("{e:#}"),
    };
    assert!(message.contains("refusing to start"), "{message}");
    assert!(
        message.contains(token_env),
        "says where a token could come from: {message}"
    );
}

/// One route through the regional router plugin, admin on loopback with a token.
fn config_with_token(sim: &Simulator, providers: &[&str]) -> Value {
    let mut config = base_config(sim, providers);
    config["admin"] = json!({ "addr": "127.0.0.1:0", "token": TOKEN });
    config["plugins"] = json!({
        "regional": {
            "path": wasm("router_regional"),
            "role": "router",
            "config": { "rules": [], "default": providers },
        }
    });
    config["routes"][0]["plugins"] = json!(["regional"]);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_needs_the_bearer_token() {
    let sim = Simulator::start(&["a"]).await.unwrap();
    let env = Env::start(config_with_token(&sim, &["a"])).await;
    let client = HttpClient::default();
    let reload = env.admin_url("/admin/reload");

    for headers in [
        vec![],
        vec![("authorization", "Bearer wrong")],
        vec![("authorization", "Bearer s3cret-and-more")],
        vec![("authorization", "s3cret")],
        vec![("authorization", "Basic s3cret")],
    ] {
        let reply = client.send(Method::POST, &reload, &headers, "").await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{headers:?}: {reply:?}"
        );
        assert_eq!(reply.json()["error"]["code"], "unauthorized", "{headers:?}");
    }
    assert_eq!(
        env.proxy.reloader.snapshot().version,
        1,
        "refused reloads change nothing"
    );

    let bearer = format!("Bearer {TOKEN}");
    let reply = client
        .send(Method::POST, &reload, &[("authorization", &bearer)], "")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.json(), json!({ "result": "ok", "version": 2 }));
    assert_eq!(env.proxy.reloader.snapshot().version, 2);
}

/// SHA-256 of `bytes`, computed by the simulator's echo (it hashes every body it receives),
/// so the expected digest does not come from the proxy under test.
async fn sha256_via_echo(sim: &Simulator, bytes: Vec<u8>) -> String {
    let url = format!("{}/hash", sim.base_url("a"));
    let reply = HttpClient::default()
        .send(Method::POST, &url, &[], bytes)
        .await;
    reply.json()["body_sha256"].as_str().unwrap().to_string()
}

fn is_sha256_hex(value: &Value) -> bool {
    value.as_str().is_some_and(|s| {
        s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_describes_the_running_config_without_the_token() {
    let sim = Simulator::start(&["a", "b"]).await.unwrap();
    let env = Env::start(config_with_token(&sim, &["a"])).await;
    let client = HttpClient::default();
    let plugin_sha = sha256_via_echo(&sim, std::fs::read(wasm("router_regional")).unwrap()).await;

    let reply = client.get(&env.admin_url("/admin/status")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let status = reply.json();
    assert_eq!(status["config"]["version"], 1);
    assert!(is_sha256_hex(&status["config"]["hash"]), "{status}");
    let first_hash = status["config"]["hash"].clone();
    assert_eq!(status["last_reload"]["result"], "ok");
    assert_eq!(status["last_reload"]["trigger"], "startup");
    assert_eq!(status["plugins"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(status["plugins"][0]["name"], "regional");
    assert_eq!(status["plugins"][0]["role"], "router");
    assert_eq!(status["plugins"][0]["sha256"], plugin_sha.as_str());
    assert_eq!(status["plugins"][0]["contract"], "0.4.0");
    assert_eq!(status["plugins"][0]["deprecated"], Value::Null);
    assert_eq!(status["routes"][0]["name"], "all");
    assert_eq!(status["routes"][0]["providers"], json!(["a"]));
    assert_eq!(status["routes"][0]["router"], "regional");
    assert_eq!(
        status["providers"],
        json!([{
            "name": "a", "url": sim.base_url("a"), "region": "test", "tags": [], "cost": 1.0,
            "dialect": null, "credentials": [],
            "health": { "breaker": "closed", "consecutive_failures": 0, "latency_p50_ms": 0,
                        "latency_p99_ms": 0, "samples": 0, "success_rate": 1.0 },
        }])
    );
    assert!(
        !reply
            .body
            .windows(TOKEN.len())
            .any(|w| w == TOKEN.as_bytes()),
        "token leaked: {status}"
    );

    // After a reload to a changed config, the document follows it.
    env.rewrite(&config_with_token(&sim, &["a", "b"]));
    let bearer = format!("Bearer {TOKEN}");
    let reply = client
        .send(
            Method::POST,
            &env.admin_url("/admin/reload"),
            &[("authorization", &bearer)],
            "",
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");

    let reply = client.get(&env.admin_url("/admin/status")).await;
    let status = reply.json();
    assert_eq!(status["config"]["version"], 2);
    assert!(is_sha256_hex(&status["config"]["hash"]), "{status}");
    assert_ne!(
        status["config"]["hash"], first_hash,
        "a different config has a different hash"
    );
    assert_eq!(status["last_reload"]["result"], "ok");
    assert_eq!(status["last_reload"]["trigger"], "admin");
    assert_eq!(status["last_reload"]["ok_total"], 1);
    assert_eq!(status["routes"][0]["providers"], json!(["a", "b"]));
    let names: Vec<&str> = status["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert!(
        !reply
            .body
            .windows(TOKEN.len())
            .any(|w| w == TOKEN.as_bytes()),
        "token leaked: {status}"
    );
}
