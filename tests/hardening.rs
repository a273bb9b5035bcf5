//! Hardening, end to end: card numbers stop at payproxy whatever their form or place, a
//! payment route accepts only its storefront keys, and a payment that outlives the request
//! timeout is answered `processing` with its id and never charged twice.

use std::net::SocketAddr;

use http::Method;
use payproxy_e2e::chaos::{
    charges_for, dialect_plugins, metric, payment_route, provider, router_plugin, ChildProxy,
    ReservedPort,
};
use payproxy_e2e::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------
// Card numbers
// ---------------------------------------------------------------------------------------

/// The canary: a Visa test number, in digits.
const CANARY: &str = "4000056655665556";

/// The canary with `sep` between its four groups.
fn grouped(sep: &str) -> String {
    [
        &CANARY[0..4],
        &CANARY[4..8],
        &CANARY[8..12],
        &CANARY[12..16],
    ]
    .join(sep)
}

/// The canary in full-width digits.
fn full_width() -> String {
    CANARY
        .chars()
        .map(|c| char::from_u32(0xFF10 + c.to_digit(10).unwrap()).unwrap())
        .collect()
}

/// Every digit of `text` in order, other scripts' digits as ASCII: a canary hidden by
/// separators or encodings shows up here.
fn digits(text: &str) -> String {
    text.chars()
        .filter_map(|c| {
            let code = c as u32;
            match c {
                '0'..='9' => Some(c),
                _ if (0xFF10..0xFF1A).contains(&code) => char::from_digit(code - 0xFF10, 10),
                _ => None,
            }
        })
        .collect()
}

/// Whether `bytes` carry the canary in any form the tests send.
fn carries_canary(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let decoded = percent_encoding::percent_decode(bytes).decode_utf8_lossy();
    [text.as_ref(), decoded.as_ref()].iter().any(|t| {
        t.contains(CANARY)
            || t.contains(&full_width())
            || [" ", "-", ".", "/", "_"]
                .iter()
                .any(|sep| t.contains(&grouped(sep)))
    })
}

/// One way of carrying the canary: extra query, headers and body (form, unless `json`).
struct Placement {
    name: &'static str,
    query: String,
    headers: Vec<(String, String)>,
    body: String,
    json: bool,
}

fn placements() -> Vec<Placement> {
    let form = |name: &'static str, body: String| Placement {
        name,
        query: String::new(),
        headers: vec![],
        body,
        json: false,
    };
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    vec![
        Placement {
            query: format!("card_number={CANARY}"),
            ..form("query value", String::new())
        },
        Placement {
            query: format!("{CANARY}=x"),
            ..form("query name", String::new())
        },
        Placement {
            query: format!("n={}", encode(&grouped(" "))),
            ..form("query value, spaced and encoded", String::new())
        },
        Placement {
            headers: vec![("x-card-number".into(), CANARY.into())],
            ..form("header value", String::new())
        },
        Placement {
            headers: vec![(format!("x-{CANARY}"), "1".into())],
            ..form("header name", String::new())
        },
        Placement {
            headers: vec![("x-note".into(), grouped("."))],
            ..form("header value, dotted", String::new())
        },
        form("form value", format!("metadata[note]={CANARY}")),
        form("form name", format!("metadata[{CANARY}]=x")),
        form("dots", format!("metadata[n]={}", grouped("."))),
        form("slashes", format!("metadata[n]={}", encode(&grouped("/")))),
        form("dashes", format!("metadata[n]={}", grouped("-"))),
        form("spaces", format!("metadata[n]={}", encode(&grouped(" ")))),
        form(
            "full-width",
            format!("description={}", encode(&full_width())),
        ),
        form(
            "split across two fields",
            format!(
                "metadata[a]={}&metadata[b]={}",
                &CANARY[..10],
                &CANARY[10..]
            ),
        ),
        form(
            "split in four boxes",
            format!(
                "cc1={}&cc2={}&cc3={}&cc4={}",
                &CANARY[0..4],
                &CANARY[4..8],
                &CANARY[8..12],
                &CANARY[12..16]
            ),
        ),
        Placement {
            json: true,
            ..form(
                "JSON value",
                format!(r#"{{"card":{{"n":"{}"}}}}"#, grouped(" ")),
            )
        },
        Placement {
            json: true,
            ..form("JSON number", format!(r#"{{"n":{CANARY}}}"#))
        },
        Placement {
            json: true,
            ..form("JSON key", format!(r#"{{"{CANARY}":true}}"#))
        },
        Placement {
            json: true,
            ..form(
                "JSON escape",
                r#"{"n":"\u0034000056655665556"}"#.to_string(),
            )
        },
    ]
}

/// A payment route (`/v1`, Stripe storefront, home provider `home`), a transparent route
/// (`/plain`) and a router-plugin route (`/routed`), every provider a recorder.
fn canary_config(
    listen: SocketAddr,
    admin: SocketAddr,
    home: &Recorder,
    plain: &Recorder,
) -> Value {
    let mut plugins = dialect_plugins();
    plugins.insert("router".into(), router_plugin(json!({ "rules": [] })));
    let mut payments = payment_route(&["home"], &[], json!({}));
    payments["home"] = "home".into();
    json!({
        "listeners": [{ "addr": listen.to_string() }],
        "admin": { "addr": admin.to_string() },
        "reload": { "watch": false },
        "state": { "kind": "redb", "path": "state.redb" },
        "plugins": plugins,
        "providers": {
            "home": provider(&home.url(), "home", "stripe", "eu"),
            "plain": { "url": plain.url(), "region": "eu" },
        },
        "routes": [
            payments,
            { "name": "plain", "path_prefix": "/plain", "providers": ["plain"] },
            { "name": "routed", "path_prefix": "/routed", "plugins": ["router"],
              "plugin_body": true, "providers": ["plain"] },
        ],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_numbers_stop_at_payproxy_in_every_form_and_place() {
    const CUSTOMER: &str = r#"{"id":"cus_1","object":"customer"}"#;
    let home = Recorder::start(200, "application/json", CUSTOMER).await;
    let plain = Recorder::start(200, "application/json", r#"{"ok":true}"#).await;
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin) = (ReservedPort::new(), ReservedPort::new());
    let config = write_config(
        dir.path(),
        &canary_config(listen.addr(), admin.addr(), &home, &plain),
    );
    let log = dir.path().join("payproxy.log");
    // Debug logging: the most a log could ever carry.
    let proxy = ChildProxy::start_logging(&config, &log, listen, admin, "debug").await;
    let client = HttpClient::default();

    // Controls: clean requests on each route pass and are seen, with a phone number, an
    // amount and a UUID key that a careless detector would take for cards.
    let clean = "email=jan%40example.nl&phone=%2B62+812+3456+7899&amount=424242424242\
                 &metadata[order]=12345678-1234-1234-1234-123456789012";
    for path in ["/v1/customers", "/plain/x", "/routed/x"] {
        let reply = client
            .post_form(
                &proxy.url(path),
                &[("idempotency-key", "7d2c1c4e-2c1b-4c67-9d1b-1234567890ab")],
                clean,
            )
            .await;
        assert_eq!(
            reply.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&reply.body)
        );
    }
    assert_eq!(home.requests().len(), 1);
    assert_eq!(plain.requests().len(), 2);

    let mut tried = 0;
    for placement in placements() {
        for (route, path) in [
            ("payments", "/v1/payment_intents"),
            ("plain", "/plain/x"),
            ("routed", "/routed/x"),
        ] {
            let url = match placement.query.as_str() {
                "" => proxy.url(path),
                query => proxy.url(&format!("{path}?{query}")),
            };
            let mut headers: Vec<(&str, &str)> = placement
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let content_type = if placement.json {
                "application/json"
            } else {
                "application/x-www-form-urlencoded"
            };
            headers.push(("content-type", content_type));
            let reply = client
                .send(Method::POST, &url, &headers, placement.body.clone())
                .await;
            let body = String::from_utf8_lossy(&reply.body).into_owned();
            assert_eq!(reply.status, 400, "{} on {route}: {body}", placement.name);
            let code = &reply.json()["error"]["code"];
            assert_eq!(
                code, "card_number_not_accepted",
                "{} on {route}: {body}",
                placement.name
            );
            if route == "payments" {
                assert_eq!(
                    reply.json()["error"]["type"],
                    "invalid_request_error",
                    "Stripe's shape on the payment route: {body}"
                );
            }
            assert!(
                !digits(&body).contains(CANARY) && !carries_canary(&reply.body),
                "{} on {route}: the answer echoes the card number: {body}",
                placement.name
            );
            tried += 1;
        }
    }
    assert_eq!(tried, placements().len() * 3);
    assert_eq!(
        home.requests().len(),
        1,
        "nothing more reached the home provider"
    );
    assert_eq!(
        plain.requests().len(),
        2,
        "nothing more reached the plain provider"
    );

    // Nothing kept the canary: metrics, status page, log, store file.
    let metrics = client.get(&format!("http://{}/metrics", proxy.admin)).await;
    let refused = metrics_value(&metrics.body, "payproxy_storefront_refusals_total");
    assert_eq!(refused, tried as f64, "every refusal counted");
    let status = client
        .get(&format!("http://{}/admin/status", proxy.admin))
        .await;
    drop(proxy);
    let store = std::fs::read(dir.path().join("state.redb")).unwrap();
    let logged = std::fs::read(&log).unwrap();
    let log_text = String::from_utf8_lossy(&logged);
    assert!(
        log_text.contains("request carrying a card number refused"),
        "the refusals were logged (debug log is on)"
    );
    // Compiling seven plugins at debug level used to write tens of MB of cranelift output.
    assert!(
        !log_text.contains("cranelift") && !log_text.contains("regalloc"),
        "compiler internals flood the debug log"
    );
    assert!(
        logged.len() < 1 << 20,
        "debug log of {} bytes",
        logged.len()
    );
    for (what, bytes) in [
        ("/metrics", &metrics.body[..]),
        ("/admin/status", &status.body[..]),
        ("the log", &logged[..]),
        ("the store file", &store[..]),
    ] {
        assert!(!carries_canary(bytes), "{what} carries the card number");
        if what != "the store file" {
            assert!(
                !digits(&String::from_utf8_lossy(bytes)).contains(CANARY),
                "{what} carries the card number's digits"
            );
        }
    }
}

/// The sum of a counter's samples in Prometheus text.
fn metrics_value(text: &[u8], name: &str) -> f64 {
    String::from_utf8_lossy(text)
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

// ---------------------------------------------------------------------------------------
// Storefront keys
// ---------------------------------------------------------------------------------------

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_route_takes_only_its_storefront_keys() {
    const CUSTOMER: &str = r#"{"id":"cus_1","object":"customer"}"#;
    let sim = Simulator::start(PAYMENT_PROVIDERS).await.unwrap();
    let recorder = Recorder::start(200, "application/json", CUSTOMER).await;
    let mut config = payments_config(&sim);
    let route = config["routes"][0].as_object_mut().unwrap();
    route.remove("allow_unauthenticated");
    route.insert("home".into(), "stripe-like".into());
    route.insert(
        "storefront_keys".into(),
        json!([{ "sha256": sha256("sk_live_storefront_one") }, { "sha256": sha256("sk_live_storefront_two") }]),
    );
    config["providers"]["stripe-like"]["url"] = recorder.url().into();
    let env = Env::start(config).await;
    let client = HttpClient::default();
    let form = form_with(card_from("DE", "1000", "order-auth-1"), &[]);

    let basic = |key: &str| {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
        )
    };
    for (what, auth) in [
        ("no key", None),
        (
            "a wrong key",
            Some("Bearer sk_live_not_a_storefront".to_string()),
        ),
        (
            "a wrong key, Basic",
            Some(basic("sk_live_not_a_storefront")),
        ),
        (
            "a key's digest",
            Some(format!("Bearer {}", sha256("sk_live_storefront_one"))),
        ),
        (
            "another scheme",
            Some("Token sk_live_storefront_one".to_string()),
        ),
    ] {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let reply = client
            .post_form(&env.url("/v1/payment_intents"), &headers, &form)
            .await;
        let body = String::from_utf8_lossy(&reply.body).into_owned();
        assert_eq!(reply.status, 401, "{what}: {body}");
        let error = &reply.json()["error"];
        assert_eq!(
            error["type"], "invalid_request_error",
            "{what}: Stripe's shape: {body}"
        );
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(
            !body.contains("not_a_storefront"),
            "{what}: the key given was echoed"
        );
    }
    for name in PAYMENT_PROVIDERS {
        assert_eq!(
            sim.request_count(name),
            0,
            "{name} saw an unauthenticated payment"
        );
    }
    assert!(recorder.requests().is_empty());

    // Both keys work, as Bearer (Stripe's SDKs) and as Basic user name (`curl -u KEY:`).
    for (i, auth) in [
        "Bearer sk_live_storefront_one".to_string(),
        basic("sk_live_storefront_two"),
    ]
    .iter()
    .enumerate()
    {
        let form = form_with(card_from("DE", "1000", &format!("order-auth-ok-{i}")), &[]);
        let reply = client
            .post_form(
                &env.url("/v1/payment_intents"),
                &[
                    ("authorization", auth),
                    ("cookie", "session=storefront-cookie"),
                ],
                &form,
            )
            .await;
        // A Stripe token is the home account's to charge: forwarded there unchanged.
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        assert_eq!(reply.provider(), Some("stripe-like"));
    }

    // Also forwarded to the home provider: its own key, never the storefront's key or cookie.
    let reply = client
        .post_form(
            &env.url("/v1/customers"),
            &[
                ("authorization", "Bearer sk_live_storefront_one"),
                ("cookie", "session=storefront-cookie"),
            ],
            "email=jan%40example.nl",
        )
        .await;
    reply.assert_status(200);
    let seen = recorder.requests();
    let to = |prefix: &str| seen.iter().filter(|r| r.path.starts_with(prefix)).count();
    assert_eq!(to("/v1/payment_intents"), 2, "both payments reached home");
    assert_eq!(to("/v1/customers"), 1, "the customer reached home");
    for request in &seen {
        // The demo's stripe-like provider is configured with api_key sk_test_demo.
        assert_eq!(request.header("authorization"), Some("Bearer sk_test_demo"));
        assert_eq!(request.header("cookie"), None);
        let all = format!("{:?}", request.headers);
        assert!(!all.contains("storefront"), "{all}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_what_run_refuses() {
    let sim = Simulator::start(PAYMENT_PROVIDERS).await.unwrap();
    let mut config = payments_config(&sim);
    // A non-loopback admin address without a token: `run` refuses it, so `check` does.
    config["admin"] = json!({ "addr": "0.0.0.0:0", "token_env": "PAYPROXY_TEST_UNSET_TOKEN" });
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &config);
    let error = payproxy::server::check(&path).unwrap_err().to_string();
    assert!(error.contains("no admin token"), "{error}");
    let error = payproxy::server::start(&path)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("no admin token"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_route_without_keys_is_refused_at_load_and_by_check() {
    let sim = Simulator::start(PAYMENT_PROVIDERS).await.unwrap();
    let mut config = payments_config(&sim);
    config["routes"][0]
        .as_object_mut()
        .unwrap()
        .remove("allow_unauthenticated");
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &config);
    let error = payproxy::server::check(&path).unwrap_err().to_string();
    assert!(error.contains("storefront_keys"), "{error}");
    let error = payproxy::server::start(&path)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("storefront_keys"), "{error}");
    config["routes"][0]["storefront_keys"] = json!([{ "sha256": "not hex" }]);
    let path = write_config(dir.path(), &config);
    let error = payproxy::server::check(&path).unwrap_err().to_string();
    assert!(error.contains("64 hex digits"), "{error}");
}

// ---------------------------------------------------------------------------------------
// A payment that outlives the request timeout
// ---------------------------------------------------------------------------------------

/// One payment route over a translated provider `slow` (Adyen): payment deadline 1 s, request
/// timeout 2 s (the least that holds it), provider timeout 10 s.
fn slow_config(sim: &Simulator) -> Value {
    let mut adyen = provider(&sim.base_url("slow"), "slow", "adyen", "eu");
    adyen["timeout_ms"] = 10_000.into();
    json!({
        "listeners": [{ "addr": "127.0.0.1:0" }],
        "admin": { "addr": "127.0.0.1:0" },
        "reload": { "watch": false },
        "limits": { "request_timeout_ms": 2000 },
        "plugins": dialect_plugins(),
        "providers": { "slow": adyen },
        "routes": [payment_route(&["slow"], &[], json!({ "deadline_ms": 1000, "resend_attempts": 0 }))],
    })
}

async fn pay(client: &HttpClient, env: &Env, key: Option<&str>, order: &str) -> Reply {
    let form = form_with(card_from("DE", "1000", order), &[]);
    let headers: Vec<(&str, &str)> = key.iter().map(|k| ("idempotency-key", *k)).collect();
    client
        .post_form(&env.url("/v1/payment_intents"), &headers, &form)
        .await
}

/// The Stripe dialect's answer for a payment whose outcome is unknown: 502 `api_error`
/// (Stripe's SDKs retry it with the same key) carrying the PaymentIntent, `processing`, with
/// its payproxy id. Returns the id.
fn assert_processing_with_id(reply: &Reply) -> String {
    let body = String::from_utf8_lossy(&reply.body);
    assert_eq!(reply.status, 502, "not a bare timeout: {body}");
    let error = &reply.json()["error"];
    assert_eq!(error["type"], "api_error", "{body}");
    let intent = &error["payment_intent"];
    assert_eq!(intent["status"], "processing", "{body}");
    let id = intent["id"].as_str().unwrap_or_default().to_string();
    assert!(id.starts_with("pi_"), "{body}");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_answered_after_the_request_timeout_is_processing_with_its_id_and_never_charged_twice(
) {
    let sim = Simulator::start(&["slow"]).await.unwrap();
    let env = Env::start(slow_config(&sim)).await;
    let client = HttpClient::default();

    // With an idempotency key: the provider charges, then answers after 4 s, past the
    // request timeout.
    sim.set_faults("slow", Faults::timeout_after_charge(4000));
    let first = pay(&client, &env, Some("slow-key-1"), "order-slow-1").await;
    let id = assert_processing_with_id(&first);
    wait_for_charges(&sim, "order-slow-1", 1).await;
    sim.set_faults("slow", Faults::default());
    let retry = pay(&client, &env, Some("slow-key-1"), "order-slow-1").await;
    let body = String::from_utf8_lossy(&retry.body);
    assert_eq!(retry.status, 200, "{body}");
    assert_eq!(retry.json()["id"], id.as_str(), "the same payment: {body}");
    assert_eq!(retry.json()["status"], "succeeded", "{body}");
    assert_eq!(charges_for(&sim, "order-slow-1").len(), 1, "charged once");

    // Without a key, the same merchant reference: the provider gets the same key again.
    sim.set_faults("slow", Faults::timeout_after_charge(4000));
    let first = pay(&client, &env, None, "order-slow-2").await;
    assert_processing_with_id(&first);
    wait_for_charges(&sim, "order-slow-2", 1).await;
    sim.set_faults("slow", Faults::default());
    let retry = pay(&client, &env, None, "order-slow-2").await;
    assert_eq!(
        retry.status,
        200,
        "{}",
        String::from_utf8_lossy(&retry.body)
    );
    assert_eq!(retry.json()["status"], "succeeded");
    assert_eq!(charges_for(&sim, "order-slow-2").len(), 1, "charged once");
}

/// Review finding: a resumed payment whose provider is unreachable on the retry must stay
/// with that provider (its first run may have charged there), never be released for a fresh
/// start that the next retry would send to another provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_payment_stays_with_its_provider_while_that_provider_is_down() {
    let sim = Simulator::start(&["a", "b"]).await.unwrap();
    let gate = payproxy_e2e::chaos::Gate::start(sim.addr("a")).await;
    let mut a = provider(&gate.url(), "a", "adyen", "eu");
    a["timeout_ms"] = 10_000.into();
    let b = provider(&sim.base_url("b"), "b", "adyen", "eu");
    let config = json!({
        "listeners": [{ "addr": "127.0.0.1:0" }],
        "admin": { "addr": "127.0.0.1:0" },
        "reload": { "watch": false },
        "limits": { "request_timeout_ms": 2000 },
        "plugins": dialect_plugins(),
        "providers": { "a": a, "b": b },
        "routes": [payment_route(&["a", "b"], &[], json!({ "deadline_ms": 1000, "resend_attempts": 0 }))],
    });
    let env = Env::start(config).await;
    let client = HttpClient::default();

    // a charges, then answers too late: the outcome is unknown.
    sim.set_faults("a", Faults::timeout_after_charge(4000));
    let first = pay(&client, &env, Some("resume-down-1"), "order-resume-down").await;
    assert_processing_with_id(&first);
    wait_for_charges(&sim, "order-resume-down", 1).await;
    sim.set_faults("a", Faults::default());

    // a is down now: each retry goes back to a only, and fails there; b is never tried.
    gate.close();
    for _ in 0..3 {
        let retry = pay(&client, &env, Some("resume-down-1"), "order-resume-down").await;
        assert_ne!(
            retry.status,
            200,
            "{}",
            String::from_utf8_lossy(&retry.body)
        );
        assert_eq!(
            sim.ledger("b").len(),
            0,
            "the payment moved to b: charged twice"
        );
    }

    // a is back: the retry resumes there, under the same provider key, and is charged once.
    gate.open().await;
    let last = pay(&client, &env, Some("resume-down-1"), "order-resume-down").await;
    assert_eq!(last.status, 200, "{}", String::from_utf8_lossy(&last.body));
    assert_eq!(last.json()["status"], "succeeded");
    assert_eq!(
        charges_for(&sim, "order-resume-down").len(),
        1,
        "charged once"
    );
    assert_eq!(sim.ledger("b").len(), 0);
}

async fn wait_for_charges(sim: &Simulator, order: &str, n: usize) {
    payproxy_e2e::chaos::eventually(
        std::time::Duration::from_secs(10),
        "the provider recorded the charge",
        async || charges_for(sim, order).len() >= n,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_body_gets_408_under_its_route() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sim = Simulator::start(&["slow"]).await.unwrap();
    let env = Env::start(slow_config(&sim)).await;
    let addr = env.proxy.listen_addrs[0];
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Headers promise 100 bytes; 10 arrive, then nothing.
    stream
        .write_all(
            b"POST /v1/payment_intents HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 100\r\n\r\namount=100",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer to a stalled body");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_body_timeout"), "{text}");
    assert_counted_under(&env, "payments", "4xx").await;
}

/// One request of `class` counted under `route`, none under `none` (its series absent or 0).
async fn assert_counted_under(env: &Env, route: &str, class: &str) {
    let metrics = HttpClient::default().get(&env.admin_url("/metrics")).await;
    let text = String::from_utf8_lossy(&metrics.body);
    let counted = |route| {
        metric(
            &text,
            "payproxy_requests_total",
            &[("route", route), ("status_class", class)],
        )
    };
    assert_eq!(counted(route), Some(1.0), "{text}");
    assert_eq!(counted("none").unwrap_or(0.0), 0.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transparent_route_timing_out_is_counted_under_its_route() {
    let sim = Simulator::start(&["slow"]).await.unwrap();
    let mut config = base_config(&sim, &["slow"]);
    config["limits"] = json!({ "request_timeout_ms": 300 });
    let env = Env::start(config).await;
    sim.set_faults("slow", Faults::latency(3000));
    let client = HttpClient::default();
    let reply = client.get(&env.url("/anything")).await;
    assert_eq!(
        reply.status,
        504,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json()["error"]["code"], "request_timeout");
    assert_counted_under(&env, "all", "5xx").await;
}

// ---------------------------------------------------------------------------------------
// Answers hyper gives by itself
// ---------------------------------------------------------------------------------------

/// Send `request` raw and read the whole answer (the connection closes after these errors).
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // A large request may be cut off by the answer: a failed write is fine, the answer counts.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await;
    assert!(
        read.is_ok(),
        "the connection was not closed after the answer"
    );
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_hyper_cannot_parse_get_json_answers_on_both_listeners() {
    let sim = Simulator::start(&["a"]).await.unwrap();
    let env = Env::start(base_config(&sim, &["a"])).await;
    let huge_header = format!(
        "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let many_headers = format!(
        "GET / HTTP/1.1\r\nhost: x\r\n{}\r\n",
        (0..300)
            .map(|i| format!("x-h{i}: v\r\n"))
            .collect::<String>()
    );
    for addr in [env.proxy.listen_addrs[0], env.proxy.admin_addr] {
        for (request, status, code) in [
            (&b"GARBAGE\r\n\r\n"[..], "400", "malformed_request"),
            (
                b"GET / HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n",
                "400",
                "malformed_request",
            ),
            (huge_header.as_bytes(), "431", "headers_too_large"),
            (many_headers.as_bytes(), "431", "headers_too_large"),
        ] {
            let answer = raw(addr, request).await;
            let what = String::from_utf8_lossy(&request[..request.len().min(40)]).into_owned();
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status} ")),
                "{what}: {answer}"
            );
            let (head, body) = answer.split_once("\r\n\r\n").unwrap();
            assert!(
                head.contains("content-type: application/json"),
                "{what}: {head}"
            );
            let json: Value =
                serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: {e}: {body}"));
            assert_eq!(json["error"]["code"], code, "{what}: {body}");
        }
    }
    // A request the proxy itself refuses is still its own JSON (not rewritten): 150 headers.
    let many = format!(
        "GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{}\r\n",
        (0..150)
            .map(|i| format!("x-h{i}: v\r\n"))
            .collect::<String>()
    );
    let answer = raw(env.proxy.listen_addrs[0], many.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    assert!(answer.contains("too_many_headers"), "{answer}");
}
