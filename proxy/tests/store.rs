//! The store's contract, run against every implementation (`RedbStore`, `MemoryStore`), plus
//! durability for the redb store: reopen after close, and `kill -9` mid-write.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Barrier};
use std::time::{Duration, Instant};

use payproxy::plugin::storefront::{ListQuery, PaymentRecord, PaymentState};
use payproxy::store::{
    Attempt, Begin, MemoryStore, Owner, PaymentEntry, RedbStore, Store, StoreError, StoredResponse,
};

const STALE: u64 = 30_000;
const TTL: u64 = 86_400_000;

fn response(body: &str) -> StoredResponse {
    StoredResponse {
        status: 200,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("request-id".into(), "req_1".into()),
        ],
        body: body.as_bytes().to_vec(),
    }
}

fn attempt(provider: &str) -> Attempt {
    Attempt {
        provider: provider.into(),
        provider_key: format!("{provider}-idem-1"),
    }
}

fn owner(provider: &str, reference: &str) -> Owner {
    Owner {
        provider: provider.into(),
        reference: reference.into(),
        currency: Some("EUR".into()),
    }
}

// ---- the contract, one function per behaviour, each run against both stores ----

fn replay_after_finish(s: &dyn Store) {
    assert_eq!(s.begin("k", "fp", 0, STALE).unwrap(), Begin::Started);
    let binary = StoredResponse {
        body: vec![0, 159, 146, 150, 255],
        ..response("")
    };
    s.finish("k", &response(r#"{"id":"pi_1"}"#), 10, TTL)
        .unwrap();
    for now in [11, 1_000_000] {
        assert_eq!(
            s.begin("k", "fp", now, STALE).unwrap(),
            Begin::Replay(response(r#"{"id":"pi_1"}"#))
        );
    }
    assert_eq!(s.begin("bin", "fp", 0, STALE).unwrap(), Begin::Started);
    s.finish("bin", &binary, 0, TTL).unwrap();
    assert_eq!(
        s.begin("bin", "fp", 1, STALE).unwrap(),
        Begin::Replay(binary)
    );
}

fn mismatch_on_other_fingerprint(s: &dyn Store) {
    assert_eq!(s.begin("k", "fp-a", 0, STALE).unwrap(), Begin::Started);
    // While in flight, fresh or stale: the key belongs to request A.
    assert_eq!(s.begin("k", "fp-b", 1, STALE).unwrap(), Begin::Mismatch);
    assert_eq!(
        s.begin("k", "fp-b", STALE * 2, STALE).unwrap(),
        Begin::Mismatch
    );
    s.finish("k", &response("{}"), 2, TTL).unwrap();
    assert_eq!(s.begin("k", "fp-b", 3, STALE).unwrap(), Begin::Mismatch);
    assert_eq!(
        s.begin("k", "fp-a", 4, STALE).unwrap(),
        Begin::Replay(response("{}"))
    );
}

fn in_flight_while_fresh(s: &dyn Store) {
    assert_eq!(s.begin("k", "fp", 1_000, STALE).unwrap(), Begin::Started);
    for now in [1_000, 1_001, 1_000 + STALE - 1, 0] {
        assert_eq!(
            s.begin("k", "fp", now, STALE).unwrap(),
            Begin::InFlight,
            "at {now}"
        );
    }
}

fn resume_stale_with_journaled_attempt(s: &dyn Store) {
    assert_eq!(s.begin("k", "fp", 0, STALE).unwrap(), Begin::Started);
    s.note_attempt("k", &attempt("adyen")).unwrap();
    s.note_attempt("k", &attempt("stripe")).unwrap();
    let resumed = Begin::Resume {
        attempt: Some(attempt("stripe")),
    };
    assert_eq!(s.begin("k", "fp", STALE, STALE).unwrap(), resumed);
    // The takeover restarted the clock: the next retry waits for the new owner.
    assert_eq!(
        s.begin("k", "fp", STALE + 1, STALE).unwrap(),
        Begin::InFlight
    );
    // The new owner dies too: the attempt is still there.
    assert_eq!(s.begin("k", "fp", STALE * 2, STALE).unwrap(), resumed);

    // No attempt journaled (died before sending): resume with none.
    assert_eq!(s.begin("k2", "fp", 0, STALE).unwrap(), Begin::Started);
    assert_eq!(
        s.begin("k2", "fp", STALE, STALE).unwrap(),
        Begin::Resume { attempt: None }
    );
    s.finish("k2", &response("{}"), STALE + 1, TTL).unwrap();
    assert_eq!(
        s.begin("k2", "fp", STALE * 9, STALE).unwrap(),
        Begin::Replay(response("{}"))
    );
}

fn release_frees_the_key(s: &dyn Store) {
    assert_eq!(s.begin("k", "fp-a", 0, STALE).unwrap(), Begin::Started);
    s.note_attempt("k", &attempt("adyen")).unwrap();
    s.release("k").unwrap();
    // Free for any request, and the old attempt is gone.
    assert_eq!(s.begin("k", "fp-b", 1, STALE).unwrap(), Begin::Started);
    assert_eq!(
        s.begin("k", "fp-b", 1 + STALE, STALE).unwrap(),
        Begin::Resume { attempt: None }
    );
    // Releasing a finished record keeps it; releasing an absent key is fine.
    s.finish("k", &response("{}"), 2, TTL).unwrap();
    s.release("k").unwrap();
    s.release("never-seen").unwrap();
    assert_eq!(
        s.begin("k", "fp-b", 3, STALE).unwrap(),
        Begin::Replay(response("{}"))
    );
}

fn ttl_expiry_and_purge(s: &dyn Store) {
    for key in ["a", "b", "c", "live", "flight"] {
        assert_eq!(s.begin(key, "fp", 0, STALE).unwrap(), Begin::Started);
    }
    for key in ["a", "b", "c"] {
        s.finish(key, &response("{}"), 1_000, 500).unwrap();
    }
    s.finish("live", &response("{}"), 1_000, 10_000).unwrap();
    // Expiry alone frees the key, purge or not, even for another request.
    assert_eq!(
        s.begin("a", "fp", 1_499, STALE).unwrap(),
        Begin::Replay(response("{}"))
    );
    assert_eq!(s.begin("a", "other", 1_500, STALE).unwrap(), Begin::Started);
    assert_eq!(s.purge_expired(1_499).unwrap(), 0);
    // "a" is in flight again, "flight" never finished: only "b" and "c" go.
    assert_eq!(s.purge_expired(1_500).unwrap(), 2);
    assert_eq!(s.purge_expired(1_500).unwrap(), 0);
    assert_eq!(s.begin("b", "fp", 1_500, STALE).unwrap(), Begin::Started);
    assert_eq!(
        s.begin("live", "fp", 1_500, STALE).unwrap(),
        Begin::Replay(response("{}"))
    );
    assert_eq!(s.begin("flight", "fp", 1, STALE).unwrap(), Begin::InFlight);
}

fn journal_and_finish_need_an_in_flight_record(s: &dyn Store) {
    let not_in_flight = |r: Result<(), StoreError>, want: &str| match r {
        Err(e @ StoreError::NotInFlight { found, .. }) => {
            assert_eq!(found, want);
            assert!(e.to_string().contains("\"k\""), "{e}");
        }
        other => panic!("expected NotInFlight({want}), got {other:?}"),
    };
    not_in_flight(s.note_attempt("k", &attempt("adyen")), "absent");
    not_in_flight(s.finish("k", &response("{}"), 0, TTL), "absent");
    assert_eq!(s.begin("k", "fp", 0, STALE).unwrap(), Begin::Started);
    s.finish("k", &response("first"), 0, TTL).unwrap();
    not_in_flight(s.note_attempt("k", &attempt("adyen")), "finished");
    not_in_flight(s.finish("k", &response("second"), 1, TTL), "finished");
    assert_eq!(
        s.begin("k", "fp", 2, STALE).unwrap(),
        Begin::Replay(response("first"))
    );
}

fn owners_round_trip(s: &dyn Store) {
    assert_eq!(s.owner("pi_1").unwrap(), None);
    s.set_owner("pi_1", &owner("adyen", "PSP123")).unwrap();
    s.set_owner(
        "pi_2",
        &Owner {
            currency: None,
            ..owner("stripe", "pi_x")
        },
    )
    .unwrap();
    assert_eq!(s.owner("pi_1").unwrap(), Some(owner("adyen", "PSP123")));
    assert_eq!(s.owner("pi_2").unwrap().unwrap().currency, None);
    s.set_owner("pi_1", &owner("stripe", "pi_9")).unwrap();
    assert_eq!(s.owner("pi_1").unwrap(), Some(owner("stripe", "pi_9")));
    // Owners are not idempotency records.
    assert_eq!(s.purge_expired(u64::MAX).unwrap(), 0);
    assert_eq!(s.begin("pi_1", "fp", 0, STALE).unwrap(), Begin::Started);
}

fn racing_begin_starts_once(s: &dyn Store) {
    const THREADS: usize = 8;
    for round in 0..20 {
        let key = format!("race-{round}");
        let barrier = Barrier::new(THREADS);
        let answers: Vec<Begin> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        s.begin(&key, "fp", 0, STALE).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let started = answers.iter().filter(|a| **a == Begin::Started).count();
        let in_flight = answers.iter().filter(|a| **a == Begin::InFlight).count();
        assert_eq!(
            (started, in_flight),
            (1, THREADS - 1),
            "round {round}: {answers:?}"
        );
    }
}

fn entry(route: &str, id: &str, created_ms: u64, customer: Option<&str>) -> PaymentEntry {
    let payment = serde_json::from_value(serde_json::json!({
        "operation": "Authorize",
        "amount": { "minor": 1000, "currency": "EUR" },
        "customer": { "id": customer, "phone_verified": false },
        "metadata": [["order_id", id]],
        "strong_auth": { "authenticated": false },
        "manual_capture": false,
    }))
    .unwrap();
    PaymentEntry {
        route: route.into(),
        created_ms,
        owner: None,
        record: PaymentRecord {
            id: id.into(),
            payment,
            state: PaymentState::RequiresConfirmation,
            created: (created_ms / 1000) as i64,
            amount_captured: 0,
            amount_refunded: 0,
            last_outcome: None,
        },
        card: None,
    }
}

fn query(limit: u32) -> ListQuery {
    ListQuery {
        limit,
        starting_after: None,
        ending_before: None,
        created_gte: None,
        created_lte: None,
        customer: None,
    }
}

fn ids(page: &(Vec<PaymentEntry>, bool)) -> (Vec<&str>, bool) {
    (
        page.0.iter().map(|e| e.record.id.as_str()).collect(),
        page.1,
    )
}

fn payments_round_trip(s: &dyn Store) {
    assert_eq!(s.payment("pi_1").unwrap(), None);
    let mut e = entry("r", "pi_1", 5_000, Some("cus_1"));
    s.put_payment(&e).unwrap();
    assert_eq!(s.payment("pi_1").unwrap(), Some(e.clone()));
    // A later state replaces the record, and the list holds it once.
    e.record.state = PaymentState::Succeeded;
    e.record.amount_captured = 1000;
    e.owner = Some(owner("adyen", "PSP1"));
    s.put_payment(&e).unwrap();
    assert_eq!(s.payment("pi_1").unwrap(), Some(e.clone()));
    let page = s.list_payments("r", &query(10)).unwrap();
    assert_eq!(page.0, vec![e]);
    assert!(!page.1);
}

fn payments_list_newest_first_in_pages(s: &dyn Store) {
    // pi_0 … pi_9, one second apart; another route's payment in between.
    for n in 0..10u64 {
        let customer = if n % 2 == 0 { "cus_even" } else { "cus_odd" };
        s.put_payment(&entry(
            "r",
            &format!("pi_{n}"),
            1_000 * (n + 1),
            Some(customer),
        ))
        .unwrap();
    }
    s.put_payment(&entry("other", "pi_x", 5_500, None)).unwrap();
    let list = |q: &ListQuery| s.list_payments("r", q).unwrap();

    let first = list(&query(3));
    assert_eq!(ids(&first), (vec!["pi_9", "pi_8", "pi_7"], true));
    let next = list(&ListQuery {
        starting_after: Some("pi_7".into()),
        ..query(3)
    });
    assert_eq!(ids(&next), (vec!["pi_6", "pi_5", "pi_4"], true));
    let last = list(&ListQuery {
        starting_after: Some("pi_1".into()),
        ..query(3)
    });
    assert_eq!(ids(&last), (vec!["pi_0"], false));
    // The page before pi_4, newest first, and more beyond it.
    let back = list(&ListQuery {
        ending_before: Some("pi_4".into()),
        ..query(2)
    });
    assert_eq!(ids(&back), (vec!["pi_6", "pi_5"], true));
    let top = list(&ListQuery {
        ending_before: Some("pi_7".into()),
        ..query(5)
    });
    assert_eq!(ids(&top), (vec!["pi_9", "pi_8"], false));
    // created bounds are whole seconds, inclusive: pi_2 (3 s) … pi_4 (5 s).
    let window = list(&ListQuery {
        created_gte: Some(3),
        created_lte: Some(5),
        ..query(10)
    });
    assert_eq!(ids(&window), (vec!["pi_4", "pi_3", "pi_2"], false));
    let combined = list(&ListQuery {
        created_lte: Some(5),
        starting_after: Some("pi_3".into()),
        ..query(10)
    });
    assert_eq!(ids(&combined), (vec!["pi_2", "pi_1", "pi_0"], false));
    let customer = list(&ListQuery {
        customer: Some("cus_odd".into()),
        ..query(2)
    });
    assert_eq!(ids(&customer), (vec!["pi_9", "pi_7"], true));
    // Bounds that cross select nothing (and never panic).
    let crossed = list(&ListQuery {
        created_gte: Some(8),
        created_lte: Some(3),
        ..query(10)
    });
    assert_eq!(ids(&crossed), (vec![], false));
    let anchor_below = list(&ListQuery {
        created_gte: Some(5),
        starting_after: Some("pi_1".into()),
        ..query(10)
    });
    assert_eq!(ids(&anchor_below), (vec![], false));
    let anchor_above = list(&ListQuery {
        created_lte: Some(3),
        ending_before: Some("pi_8".into()),
        ..query(10)
    });
    assert_eq!(ids(&anchor_above), (vec![], false));
    // An unknown anchor is an empty page, not the first one.
    let unknown = list(&ListQuery {
        starting_after: Some("pi_nope".into()),
        ..query(3)
    });
    assert_eq!(ids(&unknown), (vec![], false));
    assert_eq!(
        ids(&s.list_payments("other", &query(10)).unwrap()),
        (vec!["pi_x"], false)
    );
    assert_eq!(
        ids(&s.list_payments("none", &query(10)).unwrap()),
        (vec![], false)
    );
}

macro_rules! for_each_store {
    ($($case:ident),* $(,)?) => {
        mod redb {
            $(#[test]
            fn $case() {
                let dir = tempfile::tempdir().unwrap();
                let store = super::RedbStore::open(&dir.path().join("state.redb")).unwrap();
                super::$case(&store);
            })*
        }
        mod memory {
            $(#[test]
            fn $case() {
                super::$case(&super::MemoryStore::new());
            })*
        }
    };
}

for_each_store!(
    replay_after_finish,
    mismatch_on_other_fingerprint,
    in_flight_while_fresh,
    resume_stale_with_journaled_attempt,
    release_frees_the_key,
    ttl_expiry_and_purge,
    journal_and_finish_need_an_in_flight_record,
    owners_round_trip,
    racing_begin_starts_once,
    payments_round_trip,
    payments_list_newest_first_in_pages,
);

// ---- durability of the redb store ----

#[test]
fn redb_open_creates_directories_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/state.redb");
    {
        let s = RedbStore::open(&path).unwrap();
        assert_eq!(s.begin("done", "fp", 0, STALE).unwrap(), Begin::Started);
        s.finish("done", &response("{}"), 0, TTL).unwrap();
        assert_eq!(s.begin("busy", "fp", 0, STALE).unwrap(), Begin::Started);
        s.note_attempt("busy", &attempt("adyen")).unwrap();
        s.set_owner("pi_1", &owner("adyen", "PSP1")).unwrap();
    }
    let s = RedbStore::open(&path).unwrap();
    assert_eq!(
        s.begin("done", "fp", 1, STALE).unwrap(),
        Begin::Replay(response("{}"))
    );
    assert_eq!(
        s.begin("busy", "fp", STALE, STALE).unwrap(),
        Begin::Resume {
            attempt: Some(attempt("adyen"))
        }
    );
    assert_eq!(s.owner("pi_1").unwrap(), Some(owner("adyen", "PSP1")));
}

#[test]
fn redb_open_reports_the_path_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let err = RedbStore::open(&file.join("state.redb")).unwrap_err();
    assert!(matches!(err, StoreError::CreateDir { .. }), "{err:?}");
    assert!(err.to_string().contains("a-file"), "{err}");
    let err = RedbStore::open(&file).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
}

/// Environment of the crash child: the database path, and the first key number to write.
const CHILD_DB: &str = "STORE_CRASH_CHILD";
const CHILD_START: &str = "STORE_CRASH_START";
/// Upper bounds on the child's work, in case the parent never kills it.
const CHILD_MAX_KEYS: u64 = 5_000;
const CHILD_MAX_TIME: Duration = Duration::from_secs(60);

fn crash_key(n: u64) -> (String, String, StoredResponse) {
    let body = format!(r#"{{"id":"pi_{n}","padding":"{}"}}"#, "x".repeat(200));
    (format!("idem-{n}"), format!("pi_{n}"), response(&body))
}

/// Not a test of its own: the body of the child process that `redb_kill_9_loses_nothing_acknowledged`
/// re-executes this binary into. Without `STORE_CRASH_CHILD` it returns at once.
#[test]
fn crash_child() {
    let Some(path) = std::env::var_os(CHILD_DB) else {
        return;
    };
    let start: u64 = std::env::var(CHILD_START).unwrap().parse().unwrap();
    let store = RedbStore::open(Path::new(&path)).unwrap();
    let started = Instant::now();
    for n in start..start + CHILD_MAX_KEYS {
        if started.elapsed() > CHILD_MAX_TIME {
            break;
        }
        let (key, payment, resp) = crash_key(n);
        assert_eq!(store.begin(&key, "fp", 0, STALE).unwrap(), Begin::Started);
        store.note_attempt(&key, &attempt("adyen")).unwrap();
        store
            .set_owner(&payment, &owner("adyen", &format!("PSP{n}")))
            .unwrap();
        store.finish(&key, &resp, 0, TTL).unwrap();
        // Only now is the key acknowledged; stdout is line-buffered, so the parent sees it
        // right away.
        println!("acked {n}");
    }
}

/// Runs one child writing keys from `start`, SIGKILLs it once it has acknowledged `kill_after`
/// keys, and returns every key it acknowledged (including lines still in the pipe).
fn run_and_kill_child(db: &Path, start: u64, kill_after: usize) -> Vec<u64> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DB, db)
        .env(CHILD_START, start.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(n) = line.strip_prefix("acked ") {
                if tx.send(n.parse::<u64>().unwrap()).is_err() {
                    break;
                }
            }
        }
    });
    let deadline = Instant::now() + CHILD_MAX_TIME;
    let mut acked = Vec::new();
    while acked.len() < kill_after {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(n) => acked.push(n),
            Err(_) => {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "child acknowledged {} keys before stopping: {}",
                    acked.len(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The pipe closes with the child: collect what it acknowledged between our read and the kill.
    reader.join().unwrap();
    acked.extend(rx.try_iter());
    acked
}

#[test]
fn redb_kill_9_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.redb");
    let mut all = Vec::new();
    // Several crashes into the same file, at different points.
    for (round, kill_after) in [3usize, 40, 15].into_iter().enumerate() {
        let acked = run_and_kill_child(&db, round as u64 * 100_000, kill_after);
        assert!(acked.len() >= kill_after, "round {round}: {acked:?}");
        all.extend(acked);

        let store = RedbStore::open(&db).unwrap();
        for &n in &all {
            let (key, payment, resp) = crash_key(n);
            assert_eq!(
                store.begin(&key, "fp", 1, STALE).unwrap(),
                Begin::Replay(resp),
                "{key}"
            );
            let expected = owner("adyen", &format!("PSP{n}"));
            assert_eq!(store.owner(&payment).unwrap(), Some(expected), "{payment}");
        }
        // The key the kill interrupted is absent, in flight or finished, but readable.
        let next = all.iter().max().unwrap() + 1;
        let answer = store.begin(&crash_key(next).0, "fp", 1, STALE).unwrap();
        assert_ne!(answer, Begin::Mismatch, "{next}");
        assert_eq!(store.purge_expired(TTL - 1).unwrap(), 0);
        // The file takes new writes after the crash.
        let probe = format!("probe-{round}");
        assert_eq!(store.begin(&probe, "fp", 0, STALE).unwrap(), Begin::Started);
        store.finish(&probe, &response("{}"), 0, TTL).unwrap();
    }
}
