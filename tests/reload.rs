//! Hot reload end to end: 100+ reloads under continuous traffic with zero failed
//! requests, broken configs rejected while the old snapshot serves, file-watch and SIGHUP
//! triggers, and in-flight requests finishing on the snapshot they started with.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use payproxy_e2e::chaos::{eventually, ChildProxy, ReservedPort};
use payproxy_e2e::*;
use serde_json::{json, Value};

/// The route's router sends everything to `target`.
fn routed_to(sim: &Simulator, target: &str) -> Value {
    let mut config = base_config(sim, &["a", "b"]);
    config["plugins"] = json!({
        "router": { "path": wasm("router_regional"), "role": "router", "config": { "default": [target] } }
    });
    config["routes"][0]["plugins"] = json!(["router"]);
    config
}

/// Valid JSON whose plugin config the plugin itself refuses: only a full build catches it.
fn broken(sim: &Simulator) -> Value {
    let mut config = routed_to(sim, "a");
    config["plugins"]["router"]["config"] = json!({ "rules": "not a list" });
    config
}

/// The provider a payment on `url` is routed to.
async fn provider_of_a_payment(client: &HttpClient, url: &str) -> Option<String> {
    let reply = client.post_form(url, &[], "amount=1&currency=eur").await;
    reply.provider().map(str::to_string)
}

async fn admin_reload(client: &HttpClient, env: &Env) -> Reply {
    client
        .send(http::Method::POST, &env.admin_url("/admin/reload"), &[], "")
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_reloads_under_traffic_fail_no_request() {
    let sim = Simulator::start(&["a", "b"]).await.unwrap();
    let env = Env::start(routed_to(&sim, "a")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let served = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let deadline = Instant::now() + Duration::from_secs(60);

    let mut clients = Vec::new();
    for c in 0..3 {
        let (stop, failures, served, url) = (
            stop.clone(),
            failures.clone(),
            served.clone(),
            env.url("/v1/payment_intents"),
        );
        clients.push(tokio::spawn(async move {
            let client = HttpClient::default();
            let mut n = 0u64;
            // Bounded in count and time.
            while !stop.load(Ordering::Relaxed) && n < 50_000 && Instant::now() < deadline {
                n += 1;
                let form = format!("amount=100&currency=eur&metadata[order_id]=c{c}-{n}");
                match client
                    .try_send(
                        http::Method::POST,
                        &url,
                        &[("content-type", "application/x-www-form-urlencoded")],
                        form,
                    )
                    .await
                {
                    Ok(r) if r.status == 200 && r.provider() == Some("a") => {
                        served[0].fetch_add(1, Ordering::Relaxed)
                    }
                    Ok(r) if r.status == 200 && r.provider() == Some("b") => {
                        served[1].fetch_add(1, Ordering::Relaxed)
                    }
                    Ok(r) => {
                        failures.lock().unwrap().push(format!(
                            "{} {:?} {}",
                            r.status,
                            r.provider(),
                            String::from_utf8_lossy(&r.body)
                        ));
                        0
                    }
                    Err(e) => {
                        failures.lock().unwrap().push(e);
                        0
                    }
                };
            }
        }));
    }

    let admin = HttpClient::default();
    let (mut ok, mut rejected) = (0, 0);
    for i in 0..120 {
        let (config, valid) = match i % 3 {
            0 => (routed_to(&sim, "b"), true),
            1 => (broken(&sim), false),
            _ => (routed_to(&sim, "a"), true),
        };
        env.rewrite(&config);
        let reply = admin_reload(&admin, &env).await;
        if valid {
            assert_eq!(
                reply.status,
                200,
                "reload {i}: {}",
                String::from_utf8_lossy(&reply.body)
            );
            ok += 1;
        } else {
            assert_eq!(reply.status, 422, "reload {i} must be rejected");
            let error = reply.json()["error"].as_str().unwrap().to_string();
            assert!(error.contains("config rejected by the plugin"), "{error}");
            rejected += 1;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }

    {
        let failures = failures.lock().unwrap();
        assert!(
            failures.is_empty(),
            "{} failed requests, first: {:?}",
            failures.len(),
            failures.first()
        );
    }
    let (a, b) = (
        served[0].load(Ordering::Relaxed),
        served[1].load(Ordering::Relaxed),
    );
    assert!(
        a > 50 && b > 50,
        "both snapshots served traffic: a={a} b={b}"
    );
    assert_eq!(
        sim.ledger("a").len() as u64 + sim.ledger("b").len() as u64,
        a + b,
        "one charge per answered request"
    );
    assert_eq!((ok, rejected), (80, 40));
    let status = admin.get(&env.admin_url("/admin/status")).await.json();
    assert_eq!(
        status["config"]["version"], 81,
        "startup + 80 successful reloads"
    );
    assert_eq!(status["last_reload"]["ok_total"], 80);
    assert_eq!(status["last_reload"]["error_total"], 40);
    let metrics =
        String::from_utf8(admin.get(&env.admin_url("/metrics")).await.body.to_vec()).unwrap();
    assert!(
        metrics.contains("payproxy_reloads_total{result=\"ok\"} 80"),
        "{metrics}"
    );
    assert!(metrics.contains("payproxy_reloads_total{result=\"error\"} 40"));
    eprintln!("reload soak: {a} requests on snapshot a, {b} on b, 0 failures, 120 reloads");
    env.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_reload_keeps_the_old_snapshot_and_says_why() {
    let sim = Simulator::start(&["a", "b"]).await.unwrap();
    let env = Env::start(routed_to(&sim, "a")).await;
    let client = HttpClient::default();
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({ "listeners": [] }),
            "providers: missing field `providers`",
        ),
        (
            {
                let mut c = routed_to(&sim, "b");
                c["routes"][0]["providers"] = json!(["a", "ghost"]);
                c
            },
            "unknown provider \"ghost\"",
        ),
        (
            {
                let mut c = routed_to(&sim, "b");
                c["plugins"]["router"]["path"] = json!("/nonexistent/x.wasm");
                c
            },
            "cannot read",
        ),
        (
            {
                let mut c = routed_to(&sim, "b");
                c["plugins"]["router"]["path"] = json!(wasm("fixture_wrong_world"));
                c
            },
            "payproxy:plugin/router@0.1.0",
        ),
        (
            {
                let mut c = routed_to(&sim, "b");
                c["surprise"] = json!(1);
                c
            },
            "unknown field `surprise`",
        ),
    ];
    for (config, reason) in cases {
        env.rewrite(&config);
        let reply = admin_reload(&client, &env).await;
        assert_eq!(reply.status, 422);
        let status = client.get(&env.admin_url("/admin/status")).await.json();
        assert_eq!(status["last_reload"]["result"], "error");
        let error = status["last_reload"]["error"].as_str().unwrap();
        assert!(error.contains(reason), "{error} should mention {reason}");
        assert_eq!(
            status["config"]["version"], 1,
            "old snapshot still in force"
        );
        assert_eq!(
            provider_of_a_payment(&client, &env.url("/v1/payment_intents"))
                .await
                .as_deref(),
            Some("a"),
            "old snapshot still serving"
        );
    }
    // Syntax errors carry line and column.
    std::fs::write(&env.config_path, "{\n  \"listeners\": [\n}").unwrap();
    let reply = admin_reload(&client, &env).await;
    assert!(
        reply.json()["error"]
            .as_str()
            .unwrap()
            .contains(":3:1: JSON syntax error"),
        "{:?}",
        reply.json()
    );
    env.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_plugin_config_file_changes_routing_without_restart() {
    let sim = Simulator::start(&["a", "b"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.json");
    write_atomic(&rules, br#"{"default": ["a"]}"#);
    let mut config = routed_to(&sim, "a");
    config["plugins"]["router"] =
        json!({ "path": wasm("router_regional"), "role": "router", "config_file": "rules.json" });
    config["reload"] = json!({ "watch": true, "debounce_ms": 50 });
    let config_path = write_config(dir.path(), &config);
    let proxy = payproxy::server::start(&config_path).await.unwrap();
    let url = format!("http://{}/v1/payment_intents", proxy.listen_addrs[0]);
    let client = HttpClient::default();
    assert_eq!(
        client
            .post_form(&url, &[], "amount=1&currency=eur")
            .await
            .provider(),
        Some("a")
    );

    write_atomic(&rules, br#"{"default": ["b"]}"#);
    eventually(
        Duration::from_secs(15),
        "routing follows the edited rules file",
        async || {
            client
                .post_form(&url, &[], "amount=1&currency=eur")
                .await
                .provider()
                == Some("b")
        },
    )
    .await;

    // A broken edit is rejected by the watcher's reload; routing stays on b.
    write_atomic(&rules, br#"{"default": []}"#);
    eventually(
        Duration::from_secs(15),
        "the broken edit is reported",
        async || proxy.reloader.status().result == "error",
    )
    .await;
    assert!(proxy
        .reloader
        .status()
        .error
        .unwrap()
        .contains("default: must not be empty"));
    assert_eq!(
        client
            .post_form(&url, &[], "amount=1&currency=eur")
            .await
            .provider(),
        Some("b")
    );
    proxy.shutdown().await;
}

/// SIGHUP goes to a payproxy child process, by its pid: a signal to this test process would
/// reach every proxy it runs, and under `cargo test` (one process, tests in parallel) it
/// would reload the proxies of other tests that count their reloads exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config_file() {
    let sim = Simulator::start(&["a", "b"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin) = (ReservedPort::new(), ReservedPort::new());
    let on_ports = |target: &str| {
        let mut config = routed_to(&sim, target);
        config["listeners"][0]["addr"] = json!(listen.addr());
        config["admin"]["addr"] = json!(admin.addr());
        config
    };
    let (to_a, to_b) = (on_ports("a"), on_ports("b"));
    let config_path = write_config(dir.path(), &to_a);
    // Info for payproxy::server: its "payproxy serving" line comes after the SIGHUP handler
    // is installed (the admin listener may answer a moment before); until then the signal's
    // default action would kill the proxy.
    let proxy = ChildProxy::start_logging(
        &config_path,
        &dir.path().join("payproxy.log"),
        listen,
        admin,
        "warn,payproxy::server=info",
    )
    .await;
    proxy
        .wait_for_log("payproxy serving", Duration::from_secs(30))
        .await;
    let client = HttpClient::default();
    let status_url = format!("http://{}/admin/status", proxy.admin);
    let pay = async || {
        client
            .post_form(&proxy.url("/v1/x"), &[], "amount=1&currency=eur")
            .await
    };
    assert_eq!(pay().await.provider(), Some("a"));

    write_config(dir.path(), &to_b);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &proxy.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    eventually(Duration::from_secs(15), "SIGHUP reload", async || {
        client.get(&status_url).await.json()["config"]["version"] == 2
    })
    .await;
    let status = client.get(&status_url).await.json();
    assert_eq!(status["last_reload"]["trigger"], "sighup", "{status}");
    assert_eq!(status["last_reload"]["result"], "ok", "{status}");
    assert_eq!(pay().await.provider(), Some("b"));
}

/// The slow request is held at its provider until the reload is done, so it is in flight
/// across the reload by construction, and the test checks that it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_flight_request_finishes_on_its_own_snapshot() {
    let sim = Simulator::start(&["a", "b"]).await.unwrap();
    let held = Recorder::start_held(200, "application/json", r#"{"held":true}"#).await;
    let mut config = routed_to(&sim, "a");
    config["providers"]["a"]["url"] = held.url().into();
    let env = Env::start(config).await;
    let url = env.url("/v1/payment_intents");
    let slow = tokio::spawn(async move {
        HttpClient::default()
            .post_form(&url, &[], "amount=7&currency=eur")
            .await
    });
    eventually(
        Duration::from_secs(15),
        "request reached provider a",
        async || held.requests().len() == 1,
    )
    .await;
    // The new snapshot no longer has provider a at all.
    let mut only_b = base_config(&sim, &["b"]);
    only_b["routes"][0]["providers"] = json!(["b"]);
    env.rewrite(&only_b);
    assert_eq!(admin_reload(&HttpClient::default(), &env).await.status, 200);
    assert!(
        !slow.is_finished(),
        "the request was answered before the reload finished: nothing was in flight"
    );
    held.release();
    let reply = slow.await.unwrap();
    assert_eq!((reply.status.as_u16(), reply.provider()), (200, Some("a")));
    assert_eq!(&reply.body[..], br#"{"held":true}"#);
    assert_eq!(&held.requests()[0].body[..], b"amount=7&currency=eur");
    let next = HttpClient::default()
        .post_form(
            &env.url("/v1/payment_intents"),
            &[],
            "amount=8&currency=eur",
        )
        .await;
    assert_eq!(next.provider(), Some("b"));
    assert_eq!(held.requests().len(), 1, "nothing else went to a");
    env.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_plugin_whose_file_does_not_match_is_refused_at_start_and_reload() {
    use sha2::Digest as _;
    let sim = Simulator::start(&["a", "b"]).await.unwrap();
    let router = std::fs::read(wasm("router_regional")).unwrap();
    let digest = hex::encode(sha2::Sha256::digest(&router));
    let wrong = hex::encode(sha2::Sha256::digest(b"another build"));
    let pinned = |target: &str, pin: &str| {
        let mut c = routed_to(&sim, target);
        c["plugins"]["router"]["sha256"] = json!(pin);
        c
    };

    // Start: a wrong pin is refused, naming both digests.
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &pinned("a", &wrong));
    let error = payproxy::server::start(&path)
        .await
        .err()
        .expect("a wrong pin is refused at start")
        .to_string();
    assert!(error.contains(&digest) && error.contains(&wrong), "{error}");

    // The right pin serves; a reload to a wrong pin (or a malformed one) is refused and the
    // pinned snapshot keeps serving.
    let env = Env::start(pinned("a", &digest)).await;
    let client = HttpClient::default();
    for (pin, reason) in [
        (wrong.as_str(), "pins"),
        ("ABC", "64 lower-case hex digits"),
    ] {
        env.rewrite(&pinned("b", pin));
        let reply = admin_reload(&client, &env).await;
        assert_eq!(reply.status, 422);
        let error = reply.json()["error"].as_str().unwrap().to_string();
        assert!(error.contains(reason), "{error} should mention {reason}");
        assert_eq!(
            provider_of_a_payment(&client, &env.url("/v1/payment_intents"))
                .await
                .as_deref(),
            Some("a"),
            "the pinned snapshot still serves"
        );
    }
    env.rewrite(&pinned("b", &digest));
    admin_reload(&client, &env).await.assert_status(200);
    assert_eq!(
        provider_of_a_payment(&client, &env.url("/v1/payment_intents"))
            .await
            .as_deref(),
        Some("b")
    );
    env.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_directory_switched_by_symlink_is_one_change_set() {
    let sim = Simulator::start(&["a", "b", "c"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Two releases; each has the main config and the router's rules file. v2 adds provider
    // `c` and a rule naming it: v2's rules next to v1's config would be refused.
    let release = |name: &str, providers: &[&str], target: &str| {
        let root = dir.path().join("releases").join(name);
        std::fs::create_dir_all(&root).unwrap();
        let mut config = base_config(&sim, providers);
        config["plugins"] = json!({
            "router": { "path": wasm("router_regional"), "role": "router", "config_file": "rules.json" }
        });
        config["routes"][0]["plugins"] = json!(["router"]);
        write_atomic(
            &root.join("rules.json"),
            json!({ "default": [target] }).to_string().as_bytes(),
        );
        write_atomic(&root.join("payproxy.json"), config.to_string().as_bytes());
    };
    release("v1", &["a", "b"], "a");
    release("v2", &["a", "b", "c"], "c");
    let current = dir.path().join("current");
    let switch_to = |name: &str| {
        // Atomic: a new symlink renamed over the old one.
        let tmp = dir.path().join("current.tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(Path::new("releases").join(name), &tmp).unwrap();
        std::fs::rename(&tmp, &current).unwrap();
    };
    switch_to("v1");
    let running = payproxy::server::start(&current.join("payproxy.json"))
        .await
        .expect("v1 starts");
    let client = HttpClient::default();
    let url = format!("http://{}/v1/payment_intents", running.listen_addrs[0]);
    let admin = format!("http://{}/admin/reload", running.admin_addr);
    let pay = || provider_of_a_payment(&client, &url);
    assert_eq!(pay().await.as_deref(), Some("a"));

    // One switch, one reload: both files change together.
    switch_to("v2");
    let reply = client.send(http::Method::POST, &admin, &[], "").await;
    reply.assert_status(200);
    assert_eq!(pay().await.as_deref(), Some("c"));
    // And back.
    switch_to("v1");
    client
        .send(http::Method::POST, &admin, &[], "")
        .await
        .assert_status(200);
    assert_eq!(pay().await.as_deref(), Some("a"));
    running.shutdown().await;
}
