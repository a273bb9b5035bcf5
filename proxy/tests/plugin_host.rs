//! The plugin host against real components: the router-regional fixtures through wasm,
//! contract checks at load, and hostile plugins contained by the sandbox.

mod common;

use std::sync::Arc;

use common::*;
use payproxy::config::InstanceMode;
use payproxy::metrics::Metrics;
use payproxy::plugin::{RouteDecision, RouterPlugin};
use serde_json::Value;

fn fixtures() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../plugins/router-regional/fixtures/cases.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The fixture file's case count when this was written (8); fewer means cases were lost.
const MIN_CASES: usize = 8;

#[test]
fn router_regional_shared_fixtures_through_wasm() {
    let host = host();
    let metrics = Arc::new(Metrics::new());
    let f = fixtures();
    let cases = f["cases"].as_array().expect("a `cases` list");
    assert!(
        cases.len() >= MIN_CASES,
        "{} router-regional cases, want ≥ {MIN_CASES}",
        cases.len()
    );
    for mode in [InstanceMode::Reuse, InstanceMode::Fresh] {
        let plugin = load_router(
            &host,
            "router_regional",
            &f["config"].to_string(),
            mode,
            &metrics,
        )
        .unwrap();
        let providers: Vec<_> = f["providers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| payproxy::plugin::types::Provider {
                name: p["name"].as_str().unwrap().into(),
                region: p["region"].as_str().unwrap().into(),
                tags: serde_json::from_value(p["tags"].clone()).unwrap(),
                cost: p["cost"].as_f64().unwrap(),
                dialect: String::new(),
                health: healthy(),
            })
            .collect();
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let r = &case["request"];
            let headers: Vec<(String, String)> =
                serde_json::from_value(r.get("headers").cloned().unwrap_or(Value::Array(vec![])))
                    .unwrap();
            let req = payproxy::plugin::types::HttpRequest {
                method: r["method"].as_str().unwrap().into(),
                path: r["path"].as_str().unwrap().into(),
                query: None,
                headers,
                body: r
                    .get("body")
                    .map(|b| b.as_str().unwrap().as_bytes().to_vec()),
            };
            let seed = case.get("seed").and_then(Value::as_u64).unwrap_or(0);
            let got = plugin.route(&req, None, &providers, seed).expect(name);
            let expect = &case["expect"];
            match got {
                RouteDecision::Reject { status, code, .. } => {
                    assert_eq!(
                        u64::from(status),
                        expect["reject"]["status"].as_u64().expect(name),
                        "{name}"
                    );
                    assert_eq!(code, expect["reject"]["code"].as_str().unwrap(), "{name}");
                }
                RouteDecision::Providers(list) => {
                    // Exact orders only: a case without one is a broken fixture, not a pass.
                    let want: Vec<String> = serde_json::from_value(expect["providers"].clone())
                        .unwrap_or_else(|e| panic!("{name}: no exact `providers` order: {e}"));
                    assert_eq!(list, want, "{name}");
                }
            }
        }
    }
}

fn hostile(
    host: &Arc<payproxy::plugin::PluginHost>,
    mode: &str,
    instance_mode: InstanceMode,
    metrics: &Arc<Metrics>,
) -> payproxy::plugin::RouterPlugin {
    load_router(
        host,
        "fixture_hostile",
        &format!(r#"{{"mode": "{mode}"}}"#),
        instance_mode,
        metrics,
    )
    .expect("hostile fixture loads")
}

fn failures(metrics: &Metrics, plugin: &str, kind: &str) -> u64 {
    metrics
        .plugin_failures
        .with_label_values(&[plugin, kind])
        .get()
}

#[test]
fn hostile_plugins_fail_only_their_call_with_the_right_kind() {
    let providers = vec![provider("a", "eu"), provider("b", "us")];
    let req = request("POST", "/v1/payment_intents", &[], None);
    for (mode, kind) in [
        ("loop", "deadline"),
        ("memory", "memory"),
        ("trap", "trap"),
        ("output", "bad_output"),
        ("garbage", "bad_output"),
    ] {
        for instance_mode in [InstanceMode::Reuse, InstanceMode::Fresh] {
            let metrics = Arc::new(Metrics::new());
            let plugin = hostile(&host(), mode, instance_mode, &metrics);
            let started = std::time::Instant::now();
            let failure = plugin.route(&req, None, &providers, 7).expect_err(mode);
            assert_eq!(failure.kind.as_str(), kind, "{mode}: {failure}");
            // Contained: the 50 ms deadline holds (generous bound for a loaded machine).
            assert!(
                started.elapsed() < std::time::Duration::from_secs(2),
                "{mode} took {:?}",
                started.elapsed()
            );
            assert_eq!(failures(&metrics, "fixture_hostile", kind), 1, "{mode}");
            // The next call gets a new instance and fails the same way: nothing leaks across.
            let again = plugin.route(&req, None, &providers, 8).expect_err(mode);
            assert_eq!(again.kind.as_str(), kind);
            assert_eq!(failures(&metrics, "fixture_hostile", kind), 2, "{mode}");
        }
    }
}

/// Context switches of one of this process's threads so far, from the kernel's count.
fn switches(tid: u64) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status"))
        .unwrap_or_else(|e| panic!("status of thread {tid}: {e}"));
    status
        .lines()
        .filter(|l| {
            l.starts_with("voluntary_ctxt_switches") || l.starts_with("nonvoluntary_ctxt_switches")
        })
        .map(|l| l.split(':').nth(1).unwrap().trim().parse::<u64>().unwrap())
        .sum()
}

/// Waits until the epoch thread has not run for a whole `window` (it parked), at most 10 s.
fn wait_until_parked(tid: u64) {
    let window = std::time::Duration::from_millis(150);
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let before = switches(tid);
        std::thread::sleep(window);
        if switches(tid) == before {
            return;
        }
        assert!(
            std::time::Instant::now() < give_up,
            "the epoch thread kept waking with no plugin call for 10 s"
        );
    }
}

#[test]
fn the_epoch_thread_sleeps_while_no_plugin_runs_and_a_runaway_call_still_stops() {
    let host = host();
    let metrics = Arc::new(Metrics::new());
    let plugin = hostile(&host, "loop", InstanceMode::Reuse, &metrics);
    let tid = host.ticker_tid();
    assert_ne!(tid, 0, "the epoch thread has started");
    // Idle: it parks (before, it woke every millisecond for as long as the process lived).
    wait_until_parked(tid);
    let parked = switches(tid);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(switches(tid), parked, "a parked epoch thread stays asleep");

    // A call that never ends on its own is still stopped at its deadline: starting it woke
    // the thread (were it asleep, the call would loop for ever). It runs on a thread of its
    // own, so that a call nothing stops fails this test instead of hanging it.
    let started = std::time::Instant::now();
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let providers = vec![provider("a", "eu")];
        let req = request("POST", "/v1/payment_intents", &[], None);
        let _ = done.send(plugin.route(&req, None, &providers, 7));
    });
    let failure = outcome
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the runaway call was still running after 10 s: nothing woke the epoch thread")
        .expect_err("loops");
    assert_eq!(failure.kind.as_str(), "deadline", "{failure}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "the 50 ms deadline took {:?}",
        started.elapsed()
    );
    assert!(switches(tid) > parked, "the call woke the epoch thread");
    // And once calls stop, it parks again.
    wait_until_parked(tid);
}

#[test]
fn well_behaved_fixture_still_answers_after_hostile_neighbours() {
    let metrics = Arc::new(Metrics::new());
    let host = host();
    let bad = load_router(
        &host,
        "fixture_hostile",
        r#"{"mode": "memory"}"#,
        InstanceMode::Reuse,
        &metrics,
    )
    .unwrap();
    let good = load_router(
        &host,
        "fixture_hostile",
        r#"{"mode": "ok"}"#,
        InstanceMode::Reuse,
        &metrics,
    )
    .unwrap();
    let providers = vec![provider("a", "eu")];
    let req = request("GET", "/", &[], None);
    for _ in 0..20 {
        assert!(bad.route(&req, None, &providers, 1).is_err());
        assert_eq!(
            good.route(&req, None, &providers, 1).unwrap(),
            RouteDecision::Providers(vec!["a".into()])
        );
    }
}

#[test]
fn a_component_built_for_another_contract_version_is_refused_with_both_names() {
    let metrics = Arc::new(Metrics::new());
    let err = load_router(
        &host(),
        "fixture_wrong_world",
        "{}",
        InstanceMode::Reuse,
        &metrics,
    )
    .err()
    .expect("must be refused");
    assert!(err.contains("payproxy:plugin/router@0.1.0"), "{err}");
    assert!(err.contains("payproxy:plugin/router@0.2.0"), "{err}");
    assert!(err.contains("payproxy:plugin/router@0.3.0"), "{err}");
    assert!(err.contains("payproxy:plugin/router@9.0.0"), "{err}");
}

#[test]
fn a_plugin_that_rejects_its_config_is_refused_at_load() {
    let metrics = Arc::new(Metrics::new());
    let err = load_router(
        &host(),
        "fixture_hostile",
        r#"{"mode": "init-error"}"#,
        InstanceMode::Reuse,
        &metrics,
    )
    .err()
    .expect("must be refused");
    assert!(
        err.contains("config rejected by the plugin: hostile fixture refuses this config"),
        "{err}"
    );
    let err = load_router(
        &host(),
        "router_regional",
        r#"{"rules": 5}"#,
        InstanceMode::Reuse,
        &metrics,
    )
    .err()
    .expect("must be refused");
    assert!(err.contains("router-regional config"), "{err}");
}

#[test]
fn bytes_that_are_not_a_component_are_refused() {
    let host = host();
    let err = host
        .compile(b"\0asm\x01\0\0\0garbage")
        .err()
        .expect("refused");
    assert!(
        err.contains("is a core WebAssembly module, not a component"),
        "{err}"
    );
    let err = host
        .compile(b"\0asm\x0d\0\x01\0garbage")
        .err()
        .expect("refused");
    assert!(err.contains("not a valid WebAssembly component"), "{err}");
    let err = host.compile(b"{\"json\": true}").err().expect("refused");
    assert!(err.contains("not a WebAssembly file"), "{err}");
}

#[test]
fn reused_instances_are_recycled_and_fresh_mode_instantiates_every_call() {
    let metrics = Arc::new(Metrics::new());
    let host = host();
    let f = fixtures();
    let bytes = std::fs::read(wasm("router_regional")).unwrap();
    let compiled = host.compile(&bytes).unwrap();
    let mut s = settings(InstanceMode::Reuse);
    s.recycle_after = 3;
    let plugin = payproxy::plugin::RouterPlugin::load(
        &host,
        "rr",
        &compiled.component,
        f["config"].to_string(),
        &catalogue(CONFIGURED),
        s,
        metrics.clone(),
    )
    .unwrap();
    let providers = vec![provider("sim-us", "us"), provider("sim-eu", "eu")];
    let req = request("GET", "/", &[], None);
    for _ in 0..10 {
        assert_eq!(
            plugin.route(&req, None, &providers, 0).unwrap(),
            RouteDecision::Providers(vec!["sim-us".into(), "sim-eu".into()])
        );
    }
    assert_eq!(
        plugin.instances_created(),
        4,
        "10 calls at 3 per instance, the first made at load"
    );
}

#[test]
fn contract_0_2_0_routers_still_load_and_see_payment_and_health() {
    let metrics = Arc::new(Metrics::new());
    let plugin = load_router(
        &host(),
        "fixture_router_v2",
        "{}",
        InstanceMode::Reuse,
        &metrics,
    )
    .expect("a 0.2.0 router loads");
    assert_eq!(plugin.contract(), "0.2.0");
    let mut sick = provider("a", "eu");
    sick.health.success_rate = 0.5;
    let providers = vec![sick, provider("b", "us")];
    // Healthiest first: the health the host passes reaches the plugin.
    assert_eq!(
        plugin
            .route(&request("GET", "/", &[], None), None, &providers, 0)
            .unwrap(),
        RouteDecision::Providers(vec!["b".into(), "a".into()])
    );
    // The SDK's builder, carried over as JSON: both sides derive serde for the same type.
    let mut payment = payproxy_plugin_sdk::payment::Payment::new(
        payproxy_plugin_sdk::payment::Operation::Authorize,
    );
    payment.amount = Some(payproxy_plugin_sdk::payment::Money {
        minor: 1000,
        currency: "EUR".into(),
    });
    let payment: payproxy::plugin::types::Payment =
        serde_json::from_value(serde_json::to_value(&payment).unwrap()).unwrap();
    let rejected = plugin
        .route(
            &request("GET", "/", &[("x-reject", "echo-currency")], None),
            Some(&payment),
            &providers,
            0,
        )
        .unwrap();
    assert_eq!(
        rejected,
        RouteDecision::Reject {
            status: 403,
            code: "echo-currency".into(),
            message: "currency EUR".into()
        }
    );
}

fn router_v3(mode: &str, configured: &[&str], metrics: &Arc<Metrics>) -> RouterPlugin {
    let plugin = load_router_with(
        &host(),
        "fixture_router_v3",
        &format!(r#"{{"mode": "{mode}"}}"#),
        &catalogue(configured),
        InstanceMode::Reuse,
        metrics,
    )
    .expect("the 0.3.0 fixture loads");
    assert_eq!(plugin.contract(), "0.3.0");
    plugin
}

#[test]
fn contract_0_3_0_routers_get_the_configured_providers_once_and_headers_as_a_block() {
    let metrics = Arc::new(Metrics::new());
    let configured = ["a", "b", "c"];
    // The route has c and a (in that order); b is configured for other routes.
    let providers = vec![provider("c", "eu"), provider("a", "us")];
    let plugin = router_v3("reverse", &configured, &metrics);
    assert_eq!(
        plugin
            .route(&request("GET", "/", &[], None), None, &providers, 0)
            .unwrap(),
        RouteDecision::Providers(vec!["a".into(), "c".into()])
    );

    let plugin = router_v3("catalogue", &configured, &metrics);
    let req = request(
        "GET",
        "/",
        &[("x-shopper-country", "NL"), ("accept", "a/b, c/d")],
        None,
    );
    match plugin.route(&req, None, &providers, 0).unwrap() {
        RouteDecision::Reject { message, .. } => assert_eq!(
            message, "a,b,c | x-shopper-country: NL\naccept: a/b, c/d\n",
            "every configured provider at init, in order; the headers packed one per line"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_0_3_0_router_answering_an_id_that_is_not_a_candidate_is_bad_output() {
    let providers = vec![provider("a", "eu")];
    let req = request("GET", "/", &[], None);
    for mode in ["unknown-id", "not-candidate"] {
        let metrics = Arc::new(Metrics::new());
        let plugin = router_v3(mode, &["a", "b"], &metrics);
        let failure = plugin.route(&req, None, &providers, 0).expect_err(mode);
        assert_eq!(failure.kind.as_str(), "bad_output", "{mode}: {failure}");
        assert!(
            failure.detail.contains("not a candidate of this route"),
            "{mode}: {}",
            failure.detail
        );
        assert_eq!(
            failures(&metrics, "fixture_router_v3", "bad_output"),
            1,
            "{mode}"
        );
    }
}

#[test]
fn a_0_3_0_router_answer_is_checked_like_names_are() {
    let providers = vec![provider("a", "eu"), provider("b", "us")];
    let req = request("GET", "/", &[], None);
    let metrics = Arc::new(Metrics::new());
    // Repeated ids keep their first place.
    assert_eq!(
        router_v3("dupes", &["a", "b"], &metrics)
            .route(&req, None, &providers, 0)
            .unwrap(),
        RouteDecision::Providers(vec!["a".into(), "b".into()])
    );
    for (mode, detail) in [
        ("many", "returned 65 provider ids"),
        ("empty", "returned 0 provider names"),
    ] {
        let failure = router_v3(mode, &["a", "b"], &metrics)
            .route(&req, None, &providers, 0)
            .expect_err(mode);
        assert_eq!(failure.kind.as_str(), "bad_output", "{mode}");
        assert!(
            failure.detail.contains(detail),
            "{mode}: {}",
            failure.detail
        );
    }
}

/// The compile cache's entries in `dir`: (file name, bytes).
fn cache_entries(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    entries.sort();
    entries
}

#[test]
fn the_compile_cache_serves_intact_entries_and_recompiles_torn_or_corrupt_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = payproxy::config::PluginHostConfig::default();
    let host = || payproxy::plugin::PluginHost::with_cache(&config, Some(dir.path())).unwrap();
    let router = std::fs::read(wasm("router_regional")).unwrap();
    let cases = fixtures();
    let config_json = cases["config"].to_string();
    // A component from the cache works like a compiled one.
    let routes = |host: &Arc<payproxy::plugin::PluginHost>,
                  compiled: &payproxy::plugin::Compiled| {
        let plugin = RouterPlugin::load(
            host,
            "router_regional",
            &compiled.component,
            config_json.clone(),
            &catalogue(CONFIGURED),
            settings(InstanceMode::Reuse),
            Arc::new(Metrics::new()),
        );
        assert!(plugin.is_ok(), "{:?}", plugin.err());
    };

    // First start: compiled, and one entry written, named by the file's digest.
    let first = host();
    let compiled = first.compile(&router).unwrap();
    assert!(!compiled.cached);
    let entries = cache_entries(dir.path());
    assert_eq!(
        entries.len(),
        1,
        "{:?}",
        entries.iter().map(|e| &e.0).collect::<Vec<_>>()
    );
    let (name, intact) = entries[0].clone();
    assert!(name.starts_with(&compiled.sha256), "{name}");

    // Next start: loaded from the entry, and it runs.
    let warm = host();
    let loaded = warm.compile(&router).unwrap();
    assert!(loaded.cached, "an intact entry is used");
    routes(&warm, &loaded);

    // A torn entry (a crash mid-write by something else) and a flipped bit: compiled again,
    // never run, and the entry rewritten whole.
    let path = dir.path().join(&name);
    let mut flipped = intact.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    for (what, bytes) in [
        ("truncated", intact[..intact.len() / 2].to_vec()),
        ("corrupt", flipped),
        ("empty", Vec::new()),
    ] {
        std::fs::write(&path, &bytes).unwrap();
        let host = host();
        let compiled = host.compile(&router).unwrap();
        assert!(!compiled.cached, "{what} entry used");
        routes(&host, &compiled);
        assert_eq!(
            cache_entries(dir.path()),
            vec![(name.clone(), intact.clone())],
            "{what} entry rewritten"
        );
    }

    // Another plugin file gets an entry of its own; the first is still served.
    let other = std::fs::read(wasm("dialect_stripe")).unwrap();
    assert!(!host().compile(&other).unwrap().cached);
    assert_eq!(cache_entries(dir.path()).len(), 2);
    assert!(host().compile(&router).unwrap().cached);
}

/// A payment with a method contract 0.2.0 has no record for (`other`).
fn m_pesa_payment() -> payproxy::plugin::types::Payment {
    use payproxy::plugin::types::{Money, Operation, OtherMethod, PaymentMethod};
    let mut payment = payproxy::plugin::blank_payment(Operation::Authorize);
    payment.amount = Some(Money {
        minor: 150_000,
        currency: "KES".into(),
    });
    payment.method = Some(PaymentMethod::Other(OtherMethod {
        name: "mpesa".into(),
        fields: vec![("phone".into(), "+254712345678".into())],
    }));
    payment
}

#[test]
fn a_0_2_0_compliance_plugin_that_cannot_see_a_new_method_denies_it_instead_of_allowing() {
    use payproxy::plugin::{CompliancePlugin, Verdict};
    let host = host();
    let bytes = std::fs::read(wasm("fixture_hostile_compliance")).expect("fixture");
    let compiled = host.compile(&bytes).expect("compiles");
    let plugin = CompliancePlugin::load(
        &host,
        "old-compliance",
        &compiled.component,
        r#"{"mode": "allow"}"#.into(),
        settings(InstanceMode::Reuse),
        Arc::new(Metrics::new()),
    )
    .expect("loads");
    assert_eq!(plugin.contract(), "0.2.0");
    // A card it can see: its own verdict.
    let mut card = m_pesa_payment();
    card.method = None;
    let allowed = plugin.check(&card, None).expect("checks");
    assert_eq!(allowed.verdict, Verdict::Allow);
    // A method it cannot see: denied, whatever it would have said.
    let denied = plugin.check(&m_pesa_payment(), None).expect("decides");
    match denied.verdict {
        Verdict::Deny(refusal) => {
            assert_eq!(
                (refusal.status, refusal.code.as_str()),
                (402, "payment_method_unchecked")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(denied.rule, "contract-0.2.0-cannot-see-method");
}

#[test]
fn a_0_2_0_provider_side_is_never_asked_to_encode_a_method_it_cannot_carry() {
    use payproxy::plugin::{Context, DialectPlugin};
    let host = host();
    let bytes = std::fs::read(wasm("fixture_stripe_v2")).expect("fixture");
    let compiled = host.compile(&bytes).expect("compiles");
    let plugin = DialectPlugin::load(
        &host,
        "stripe-v2",
        &compiled.component,
        "{}".into(),
        settings(InstanceMode::Reuse),
        Arc::new(Metrics::new()),
    )
    .expect("loads");
    let context = Context {
        provider: "old".into(),
        credentials: vec![("api_key".into(), "sk_test".into())],
        now_ms: 0,
        idempotency_key: "k".into(),
    };
    let refused = plugin
        .encode_request(&m_pesa_payment(), &context)
        .expect("no plugin failure")
        .expect_err("refused before anything is built");
    assert_eq!(
        (refused.status, refused.code.as_str()),
        (400, "payment_method_type_unsupported")
    );
    assert!(
        !refused.message.contains("stripe-v2"),
        "{}",
        refused.message
    );
}

/// A plugin on the SDK's per-call region allocator (`arena::CallArena`) that calls into
/// wasi-libc on every check: libc gets random bytes from the host as a list the component
/// model allocates in the plugin's memory through the import realloc, and frees that list
/// with `free()`; from the region, that corrupted libc's heap. And with a value kept from
/// every call, none is ever overwritten. 3,000 checks on one instance each way.
#[test]
fn the_call_region_allocator_survives_libc_and_values_kept_between_calls() {
    use payproxy::plugin::{CompliancePlugin, Verdict};
    let host = host();
    let bytes = std::fs::read(wasm("fixture_arena_compliance")).expect("fixture");
    let compiled = host.compile(&bytes).expect("compiles");
    for (config, keeps) in [(r#"{"keep": false}"#, false), (r#"{"keep": true}"#, true)] {
        let mut s = settings(InstanceMode::Reuse);
        s.recycle_after = 10_000;
        let plugin = CompliancePlugin::load(
            &host,
            "arena",
            &compiled.component,
            config.into(),
            s,
            Arc::new(Metrics::new()),
        )
        .expect("loads");
        let mut payment = m_pesa_payment();
        payment.merchant_reference = Some("order-1234".into());
        for call in 1..=3_000usize {
            let decision = plugin
                .check(&payment, None)
                .unwrap_or_else(|f| panic!("{config}: call {call} failed: {f:?}"));
            assert_eq!(decision.verdict, Verdict::Allow, "{config}: call {call}");
            let kept = if keeps { call } else { 0 };
            assert_eq!(decision.rule, format!("kept-{kept}-20-10"), "{config}");
        }
    }
}

/// A plugin whose component imports `wasi:filesystem` and `wasi:sockets` (Rust's `std::fs`
/// and `std::net`, as the runtimes of other languages import them whatever the plugin does)
/// loads: those interfaces are linked as traps. A check that does not touch them allows; one
/// that reads a file or opens a socket traps, naming the call, and nothing is read or sent
/// (the fixture would deny with what it got if the call returned). The instance that
/// trapped is replaced, and the next check allows again.
#[test]
fn filesystem_and_sockets_are_traps_not_load_failures() {
    use payproxy::error::PluginFailureKind;
    use payproxy::plugin::{CompliancePlugin, Verdict};
    let host = host();
    let bytes = std::fs::read(wasm("fixture_fs_compliance")).expect("fixture");
    let compiled = host.compile(&bytes).expect("compiles");
    let plugin = CompliancePlugin::load(
        &host,
        "fs",
        &compiled.component,
        "{}".into(),
        settings(InstanceMode::Reuse),
        Arc::new(Metrics::new()),
    )
    .expect("loads with filesystem and sockets imported");
    let mut payment = m_pesa_payment();
    let allowed = plugin
        .check(&payment, None)
        .expect("a check that touches neither");
    assert_eq!(allowed.verdict, Verdict::Allow);
    for (wanted, interface) in [("read", "wasi:filesystem/"), ("connect", "wasi:sockets/")] {
        payment.metadata = vec![("try".into(), wanted.into())];
        let failure = plugin
            .check(&payment, None)
            .expect_err("the call traps, it returns nothing");
        assert_eq!(
            failure.kind,
            PluginFailureKind::Trap,
            "{wanted}: {failure:?}"
        );
        assert!(
            failure.detail.contains(interface) && failure.detail.contains("is not available"),
            "{wanted}: {}",
            failure.detail
        );
        payment.metadata.clear();
        let again = plugin.check(&payment, None).expect("the next check");
        assert_eq!(again.verdict, Verdict::Allow, "after {wanted}");
    }
}
