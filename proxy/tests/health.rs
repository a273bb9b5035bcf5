//! Provider health and circuit breakers, driven with explicit instants (no sleeps), and the
//! active health checker against a local HTTP server that can be switched between 200 and 500.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use payproxy::health::{
    run_active_checks, ActiveCheck, Admission, BreakerConfig, BreakerState, CheckClient,
    HealthBook, HealthMetrics, HealthSnapshot,
};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio::sync::watch;

const P: &str = "acme";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn book(config: BreakerConfig) -> (HealthBook, Registry) {
    let registry = Registry::new();
    let metrics = HealthMetrics::register(&registry);
    (HealthBook::new(config, metrics), registry)
}

fn state(book: &HealthBook, now: Instant) -> BreakerState {
    book.snapshot(P, now).breaker
}

/// `n` results at `at`, all successes or all failures, none of them probes.
fn results(book: &HealthBook, n: usize, success: bool, at: Instant) {
    for _ in 0..n {
        book.record(P, success, ms(10), false, at);
    }
}

/// Opens `P`'s breaker at `t0` with five failures in a row (the default streak).
fn open_at(book: &HealthBook, t0: Instant) {
    results(book, 5, false, t0);
    assert_eq!(state(book, t0), BreakerState::Open);
}

/// The value of one sample in the registry's text exposition. Fails when the series is
/// absent: a missing gauge must not read as 0 (closed).
fn metric(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut text = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut text)
        .expect("encode metrics");
    let text = String::from_utf8(text).expect("utf-8");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("valid Prometheus text format");
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
            _ => f64::NAN,
        })
        .unwrap_or_else(|| panic!("no sample {name}{labels:?} in:\n{text}"))
}

fn transitions(registry: &Registry, from: &str, to: &str) -> f64 {
    metric(
        registry,
        "payproxy_breaker_transitions_total",
        &[("provider", P), ("from", from), ("to", to)],
    )
}

#[test]
fn opens_after_consecutive_failures() {
    let (book, _) = book(BreakerConfig::default());
    let t0 = Instant::now();
    results(&book, 4, false, t0);
    assert_eq!(state(&book, t0), BreakerState::Closed);
    assert_eq!(book.snapshot(P, t0).consecutive_failures, 4);
    // A success breaks the streak.
    results(&book, 1, true, t0);
    results(&book, 4, false, t0);
    assert_eq!(state(&book, t0), BreakerState::Closed);
    assert_eq!(book.admit(P, t0), Admission::Allowed);
    results(&book, 1, false, t0);
    let snap = book.snapshot(P, t0);
    assert_eq!(snap.breaker, BreakerState::Open);
    assert_eq!(snap.consecutive_failures, 5);
    assert_eq!(book.admit(P, t0), Admission::Rejected);
}

#[test]
fn opens_on_failure_rate_only_from_min_volume() {
    let (book, _) = book(BreakerConfig::default());
    let t0 = Instant::now();
    // 19 samples, every fourth a failure: 21 % failures, but below the minimum volume of 20.
    for i in 1..=19 {
        book.record(P, i % 4 != 0, ms(10), false, t0);
    }
    assert_eq!(book.snapshot(P, t0).samples, 19);
    assert_eq!(state(&book, t0), BreakerState::Closed);
    // The 20th sample reaches the volume: 4 / 20 = 20 % > 5 %.
    book.record(P, true, ms(10), false, t0);
    assert_eq!(state(&book, t0), BreakerState::Open);
}

#[test]
fn active_checks_alone_never_make_up_a_failure_rate_window() {
    // Consecutive failures off: only the failure-rate rule could open the breaker.
    let config = BreakerConfig {
        consecutive_failures: 0,
        ..BreakerConfig::default()
    };
    let (book, _) = book(config);
    let t0 = Instant::now();
    // 40 failing checks and 19 successful requests: 40 / 59 failures, but 19 requests are
    // below the minimum volume of 20, so there is no window to judge yet.
    for _ in 0..40 {
        book.record_active_check(P, false, ms(10), t0);
    }
    results(&book, 19, true, t0);
    assert_eq!(state(&book, t0), BreakerState::Closed);
    // The 20th request makes a window; the failing checks in it count.
    results(&book, 1, true, t0);
    assert_eq!(state(&book, t0), BreakerState::Open);
}

#[test]
fn failure_rate_must_exceed_the_threshold() {
    let (book, _) = book(BreakerConfig::default());
    let t0 = Instant::now();
    results(&book, 19, true, t0);
    results(&book, 1, false, t0);
    // 1 / 20 = 5 %: not above 5 %.
    assert_eq!(state(&book, t0), BreakerState::Closed);
    results(&book, 1, false, t0);
    // 2 / 21 = 9.5 %.
    assert_eq!(state(&book, t0), BreakerState::Open);
}

#[test]
fn stays_open_for_open_ms_then_admits_exactly_half_open_probes() {
    let (book, _) = book(BreakerConfig {
        half_open_probes: 2,
        ..Default::default()
    });
    let t0 = Instant::now();
    open_at(&book, t0);
    assert_eq!(book.admit(P, t0 + ms(4_999)), Admission::Rejected);
    assert_eq!(state(&book, t0 + ms(4_999)), BreakerState::Open);
    let t1 = t0 + ms(5_000);
    assert_eq!(state(&book, t1), BreakerState::HalfOpen);
    assert_eq!(book.admit(P, t1), Admission::Probe);
    assert_eq!(book.admit(P, t1), Admission::Probe);
    assert_eq!(book.admit(P, t1), Admission::Rejected);
    assert_eq!(book.admit(P, t1), Admission::Rejected);
    // A probe's result frees its slot.
    book.record(P, true, ms(10), true, t1 + ms(1));
    assert_eq!(book.admit(P, t1 + ms(1)), Admission::Probe);
    assert_eq!(book.admit(P, t1 + ms(1)), Admission::Rejected);
}

#[test]
fn concurrent_admissions_get_exactly_half_open_probes() {
    let (book, _) = book(BreakerConfig {
        half_open_probes: 3,
        ..Default::default()
    });
    let t0 = Instant::now();
    open_at(&book, t0);
    let t1 = t0 + ms(5_000);
    let threads = 16;
    let barrier = Barrier::new(threads);
    let admissions: Vec<Admission> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    book.admit(P, t1)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("admit thread"))
            .collect()
    });
    let probes = admissions
        .iter()
        .filter(|a| **a == Admission::Probe)
        .count();
    let rejected = admissions
        .iter()
        .filter(|a| **a == Admission::Rejected)
        .count();
    assert_eq!((probes, rejected), (3, threads - 3));
}

#[test]
fn failed_probe_reopens_for_a_new_period() {
    let (book, _) = book(BreakerConfig::default());
    let t0 = Instant::now();
    open_at(&book, t0);
    let t1 = t0 + ms(5_000);
    assert_eq!(book.admit(P, t1), Admission::Probe);
    let t2 = t1 + ms(100);
    book.record(P, false, ms(10), true, t2);
    assert_eq!(state(&book, t2), BreakerState::Open);
    // The new period runs from the failed probe, not from the first opening.
    assert_eq!(book.admit(P, t2 + ms(4_999)), Admission::Rejected);
    assert_eq!(book.admit(P, t2 + ms(5_000)), Admission::Probe);
}

#[test]
fn successful_probes_close_and_clear_the_window() {
    let (book, _) = book(BreakerConfig {
        min_volume: 5,
        ..Default::default()
    });
    let t0 = Instant::now();
    open_at(&book, t0);
    let mut t = t0 + ms(5_000);
    for n in 1..=3 {
        assert_eq!(book.admit(P, t), Admission::Probe, "probe {n}");
        book.record(P, true, ms(10), true, t);
        let expected = if n < 3 {
            BreakerState::HalfOpen
        } else {
            BreakerState::Closed
        };
        assert_eq!(state(&book, t), expected, "after probe {n}");
        t += ms(10);
    }
    let snap = book.snapshot(P, t);
    assert_eq!(
        (snap.samples, snap.success_rate, snap.consecutive_failures),
        (0, 1.0, 0)
    );
    // With the old five failures still counted, 6 / 9 failures would reopen at once.
    book.record(P, false, ms(10), false, t);
    assert_eq!(state(&book, t), BreakerState::Closed);
    assert_eq!(book.admit(P, t), Admission::Allowed);
}

#[test]
fn late_non_probe_results_do_not_move_a_half_open_breaker() {
    let (book, _) = book(BreakerConfig::default());
    let t0 = Instant::now();
    open_at(&book, t0);
    let t1 = t0 + ms(5_000);
    assert_eq!(book.admit(P, t1), Admission::Probe);
    // Requests admitted before the breaker opened finish now: neither closes nor reopens it,
    // and neither frees the probe slot.
    results(&book, 3, true, t1);
    results(&book, 1, false, t1);
    assert_eq!(state(&book, t1), BreakerState::HalfOpen);
    assert_eq!(book.admit(P, t1), Admission::Rejected);
}

#[test]
fn unreported_probe_slot_is_reclaimed_after_the_window() {
    let (book, _) = book(BreakerConfig::default());
    let t0 = Instant::now();
    open_at(&book, t0);
    let t1 = t0 + ms(5_000);
    assert_eq!(book.admit(P, t1), Admission::Probe);
    assert_eq!(book.admit(P, t1 + ms(30_000)), Admission::Rejected);
    assert_eq!(book.admit(P, t1 + ms(30_001)), Admission::Probe);
}

#[test]
fn window_expiry_forgets_old_samples() {
    let (book, _) = book(BreakerConfig {
        window_ms: 1_000,
        consecutive_failures: 0,
        ..Default::default()
    });
    let t0 = Instant::now();
    results(&book, 10, false, t0);
    assert_eq!(book.snapshot(P, t0 + ms(1_000)).samples, 10);
    let later = book.snapshot(P, t0 + ms(1_001));
    assert_eq!(
        (later.samples, later.success_rate, later.latency_p99_ms),
        (0, 1.0, 0)
    );
    // Had the ten failures been kept, 11 / 30 would open the breaker.
    let t1 = t0 + ms(1_500);
    results(&book, 20, true, t1);
    results(&book, 1, false, t1);
    assert_eq!(state(&book, t1), BreakerState::Closed);
}

#[test]
fn window_keeps_at_most_max_samples() {
    let (book, _) = book(BreakerConfig {
        window_max_samples: 50,
        ..Default::default()
    });
    let t0 = Instant::now();
    results(&book, 300, true, t0);
    assert_eq!(book.snapshot(P, t0).samples, 50);
}

#[test]
fn percentiles_are_nearest_rank_over_the_window() {
    let (book, _) = book(BreakerConfig::default());
    let t0 = Instant::now();
    // 1..=100 ms in a scrambled order (37 is coprime with 100).
    for i in 0..100u64 {
        book.record(P, true, ms(i * 37 % 100 + 1), false, t0);
    }
    let snap = book.snapshot(P, t0);
    assert_eq!((snap.latency_p50_ms, snap.latency_p99_ms), (50, 99));
    assert_eq!(snap.success_rate, 1.0);

    let q = "small";
    for latency in [30, 10, 20] {
        book.record(q, true, ms(latency), false, t0);
    }
    book.record(q, false, ms(40), false, t0);
    let snap = book.snapshot(q, t0);
    // 4 samples: p50 is the 2nd smallest, p99 the largest; failures count too.
    assert_eq!((snap.latency_p50_ms, snap.latency_p99_ms), (20, 40));
    assert_eq!(snap.success_rate, 0.75);
    assert_eq!(snap.samples, 4);
}

#[test]
fn transitions_are_counted_and_the_state_gauge_follows() {
    let (book, registry) = book(BreakerConfig::default());
    let gauge = || metric(&registry, "payproxy_breaker_state", &[("provider", P)]);
    let t0 = Instant::now();
    results(&book, 1, true, t0);
    assert_eq!(gauge(), 0.0);
    open_at(&book, t0);
    assert_eq!(gauge(), 2.0);
    // Half-open, a failed probe, half-open again, three good probes.
    let t1 = t0 + ms(5_000);
    assert_eq!(book.admit(P, t1), Admission::Probe);
    assert_eq!(gauge(), 1.0);
    book.record(P, false, ms(10), true, t1);
    assert_eq!(gauge(), 2.0);
    let t2 = t1 + ms(5_000);
    for _ in 0..3 {
        assert_eq!(book.admit(P, t2), Admission::Probe);
        book.record(P, true, ms(10), true, t2);
    }
    assert_eq!(gauge(), 0.0);
    assert_eq!(transitions(&registry, "closed", "open"), 1.0);
    assert_eq!(transitions(&registry, "open", "half_open"), 2.0);
    assert_eq!(transitions(&registry, "half_open", "open"), 1.0);
    assert_eq!(transitions(&registry, "half_open", "closed"), 1.0);
}

#[test]
fn unknown_provider_is_healthy_and_all_lists_known_ones_by_name() {
    let (book, _) = book(BreakerConfig::default());
    let t0 = Instant::now();
    assert_eq!(book.snapshot("nobody", t0), HealthSnapshot::UNKNOWN);
    assert_eq!(HealthSnapshot::UNKNOWN.success_rate, 1.0);
    assert_eq!(HealthSnapshot::UNKNOWN.breaker, BreakerState::Closed);
    assert!(book.all(t0).is_empty());
    book.record("zeta", true, ms(5), false, t0);
    assert_eq!(book.admit("alpha", t0), Admission::Allowed);
    let names: Vec<String> = book.all(t0).into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["alpha", "zeta"]);
    assert_eq!(BreakerState::HalfOpen.as_str(), "half_open");
}

#[test]
fn set_config_keeps_state_and_applies_new_settings() {
    let (book, _) = book(BreakerConfig::default());
    let t0 = Instant::now();
    open_at(&book, t0);
    book.set_config(BreakerConfig {
        open_ms: 1_000,
        ..Default::default()
    });
    assert_eq!(state(&book, t0 + ms(999)), BreakerState::Open);
    assert_eq!(book.admit(P, t0 + ms(1_000)), Admission::Probe);
}

/// A local HTTP server answering every request with the status in the returned cell.
async fn switchable_server() -> (SocketAddr, Arc<AtomicU16>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let status = Arc::new(AtomicU16::new(200));
    let cell = status.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let cell = cell.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let status = cell.load(Ordering::SeqCst);
                    async move {
                        let response = http::Response::builder()
                            .status(status)
                            .body(Empty::<Bytes>::new())
                            .expect("response");
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, status)
}

fn client() -> CheckClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn check(addr: SocketAddr, timeout: Duration) -> ActiveCheck {
    ActiveCheck {
        provider: P.to_string(),
        url: format!("http://{addr}/health").parse().expect("uri"),
        interval: ms(20),
        timeout,
    }
}

/// A bound for things that happen within milliseconds when the machine is idle: generous,
/// so a loaded machine does not fail a test that proves an event happens, not how fast.
const WITHIN: Duration = Duration::from_secs(10);

/// Polls the book until `pred` holds, for at most [`WITHIN`].
async fn until(book: &HealthBook, what: &str, pred: impl Fn(&HealthSnapshot) -> bool) {
    let deadline = Instant::now() + WITHIN;
    loop {
        let snap = book.snapshot(P, Instant::now());
        if pred(&snap) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {snap:?}"
        );
        tokio::time::sleep(ms(5)).await;
    }
}

#[tokio::test]
async fn active_checks_open_half_open_and_reopen_then_stop_on_shutdown() {
    let (addr, status) = switchable_server().await;
    let (book, registry) = book(BreakerConfig {
        consecutive_failures: 3,
        // Long enough that only an active check can end the open period in this test.
        open_ms: 60_000,
        ..Default::default()
    });
    let book = Arc::new(book);
    let (stop, shutdown) = watch::channel(false);
    // Timeouts are not under test here: a loaded machine must not turn a 200 into a failure.
    let target = check(addr, ms(5_000));
    let client = client();
    let task = tokio::spawn(run_active_checks(
        book.clone(),
        move || vec![(target.clone(), client.clone())],
        shutdown,
    ));

    until(&book, "successful checks", |s| s.samples >= 2).await;
    assert_eq!(book.snapshot(P, Instant::now()).success_rate, 1.0);

    status.store(500, Ordering::SeqCst);
    until(&book, "open", |s| s.breaker == BreakerState::Open).await;
    assert_eq!(transitions(&registry, "closed", "open"), 1.0);

    status.store(200, Ordering::SeqCst);
    until(&book, "half-open", |s| s.breaker == BreakerState::HalfOpen).await;
    assert_eq!(transitions(&registry, "open", "half_open"), 1.0);
    // Real traffic may probe now, well before open_ms.
    assert_eq!(book.admit(P, Instant::now()), Admission::Probe);
    book.record(P, true, ms(5), true, Instant::now());

    status.store(500, Ordering::SeqCst);
    until(&book, "reopened", |s| s.breaker == BreakerState::Open).await;
    assert_eq!(transitions(&registry, "half_open", "open"), 1.0);

    stop.send(true).expect("checker still running");
    tokio::time::timeout(WITHIN, task)
        .await
        .expect("checker stops on shutdown")
        .expect("checker did not panic");
}

#[tokio::test]
async fn active_check_timeout_is_a_failure_and_dropped_sender_stops_the_checker() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let (book, _) = book(BreakerConfig {
        consecutive_failures: 2,
        ..Default::default()
    });
    let book = Arc::new(book);
    let (stop, shutdown) = watch::channel(false);
    let target = check(addr, ms(30));
    let client = client();
    let task = tokio::spawn(run_active_checks(
        book.clone(),
        move || vec![(target.clone(), client.clone())],
        shutdown,
    ));
    until(&book, "open after timeouts", |s| {
        s.breaker == BreakerState::Open && s.success_rate == 0.0
    })
    .await;
    drop(stop);
    tokio::time::timeout(WITHIN, task)
        .await
        .expect("checker stops when the sender is gone")
        .expect("checker did not panic");
    silent.abort();
}

#[test]
fn providers_removed_by_a_reload_are_forgotten_with_their_state_gauge() {
    let (book, registry) = book(BreakerConfig::default());
    let t0 = Instant::now();
    open_at(&book, t0);
    book.record("kept", true, ms(10), false, t0);
    assert_eq!(
        metric(&registry, "payproxy_breaker_state", &[("provider", P)]),
        2.0
    );
    book.retain(|name| name == "kept");
    let names: Vec<String> = book.all(t0).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["kept"]);
    let mut text = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut text)
        .unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(
        !text.contains(&format!("payproxy_breaker_state{{provider=\"{P}\"}}")),
        "{text}"
    );
    assert!(
        text.contains("payproxy_breaker_state{provider=\"kept\"} 0"),
        "{text}"
    );
    // Back in a later config: a fresh provider, closed.
    assert_eq!(state(&book, t0), BreakerState::Closed);
}
