//! The store's contract, run against every implementation (`RedbStore`, `MemoryStore`,
//! `PostgresStore`), plus durability for the redb store: reopen after close, and `kill -9`
//! mid-write.
//!
//! The postgres cases need a server: `PAYPROXY_TEST_POSTGRES_URL` names it (scripts/test.sh
//! starts one). Each case creates its own database, so cases run in parallel. With the
//! variable unset they are skipped with a loud message (a developer running nextest alone);
//! with it set, an unreachable server fails them.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use payproxy::plugin::storefront::{ListQuery, PaymentRecord, PaymentState};
use payproxy::plugin::types::{Operation, Outcome, OutcomeStatus};
use payproxy::plugin::Notification;
use payproxy::store::{
    payment_lock_key, Attempt, Attempted, Begin, EventState, Fence, HeldNotice, MemoryStore,
    NewEvent, Owner, PassedOver, PaymentEntry, PostgresStore, Purged, RedbStore, Store, StoreError,
    StoredResponse, Takeover,
};

const STALE: u64 = 30_000;
const TTL: u64 = 86_400_000;
/// Payment and owner retention in the contract cases.
const RETAIN: u64 = 1_000_000;
/// A purge limit no case reaches.
const ALL: usize = 1_000;

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

/// Finished idempotency records one purge at `now_ms` deleted.
fn purged(s: &dyn Store, now_ms: u64) -> usize {
    let purged = s.purge_expired(now_ms, RETAIN, ALL).unwrap();
    assert!(!purged.more, "{purged:?}");
    purged.idempotency
}

/// The wall clock, Unix milliseconds (owners are stamped with it).
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
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
        reason: Takeover::PastDeadline,
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
        Begin::Resume {
            attempt: None,
            reason: Takeover::PastDeadline
        }
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
        Begin::Resume {
            attempt: None,
            reason: Takeover::PastDeadline
        }
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
    assert_eq!(purged(s, 1_499), 0);
    // "a" is in flight again, "flight" never finished: only "b" and "c" go.
    assert_eq!(purged(s, 1_500), 2);
    assert_eq!(purged(s, 1_500), 0);
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
    // Owners are not idempotency records, and are kept for their retention.
    assert_eq!(
        s.purge_expired(u64::MAX, u64::MAX, ALL).unwrap(),
        Purged::default()
    );
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
    PaymentEntry::new(
        route,
        created_ms,
        PaymentRecord {
            id: id.into(),
            payment,
            state: PaymentState::RequiresConfirmation,
            created: (created_ms / 1000) as i64,
            amount_captured: 0,
            amount_refunded: 0,
            last_outcome: None,
        },
    )
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
    s.put_payment(&e, &[]).unwrap();
    assert_eq!(s.payment("pi_1").unwrap(), Some(e.clone()));
    // A later state replaces the record, and the list holds it once.
    e.record.state = PaymentState::Succeeded;
    e.record.amount_captured = 1000;
    e.owner = Some(owner("adyen", "PSP1"));
    s.put_payment(&e, &[]).unwrap();
    assert_eq!(s.payment("pi_1").unwrap(), Some(e.clone()));
    let page = s.list_payments("r", &query(10)).unwrap();
    assert_eq!(page.0, vec![e]);
    assert!(!page.1);
}

fn payments_list_newest_first_in_pages(s: &dyn Store) {
    // pi_0 … pi_9, one second apart; another route's payment in between.
    for n in 0..10u64 {
        let customer = if n % 2 == 0 { "cus_even" } else { "cus_odd" };
        s.put_payment(
            &entry("r", &format!("pi_{n}"), 1_000 * (n + 1), Some(customer)),
            &[],
        )
        .unwrap();
    }
    s.put_payment(&entry("other", "pi_x", 5_500, None), &[])
        .unwrap();
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

fn parked_records_resume_at_once_with_their_attempt(s: &dyn Store) {
    assert_eq!(s.begin("k", "fp", 0, STALE).unwrap(), Begin::Started);
    s.note_attempt("k", &attempt("adyen")).unwrap();
    // Its request ended with the outcome unknown: parked, not released.
    s.park("k").unwrap();
    assert_eq!(s.begin("k", "other", 1, STALE).unwrap(), Begin::Mismatch);
    assert_eq!(
        s.begin("k", "fp", 1, STALE).unwrap(),
        Begin::Resume {
            attempt: Some(attempt("adyen")),
            reason: Takeover::Parked
        }
    );
    // The resumed request holds it: the next retry waits for it.
    assert_eq!(s.begin("k", "fp", 2, STALE).unwrap(), Begin::InFlight);
    // Parked again (still unknown), then finished by the next resume.
    s.park("k").unwrap();
    assert!(matches!(
        s.begin("k", "fp", 3, STALE).unwrap(),
        Begin::Resume {
            reason: Takeover::Parked,
            ..
        }
    ));
    s.finish("k", &response("{}"), 4, TTL).unwrap();
    assert_eq!(
        s.begin("k", "fp", 5, STALE).unwrap(),
        Begin::Replay(response("{}"))
    );
    // Only an in-flight record can be parked; nothing is written otherwise.
    for (key, found) in [("k", "finished"), ("absent", "absent")] {
        match s.park(key) {
            Err(StoreError::NotInFlight { found: f, op, .. }) => {
                assert_eq!((f, op), (found, "park"));
            }
            other => panic!("park {key}: {other:?}"),
        }
    }
    assert_eq!(s.begin("absent", "fp", 6, STALE).unwrap(), Begin::Started);
    // Parked records are evidence of a possibly charged payment: never purged.
    s.park("absent").unwrap();
    assert_eq!(purged(s, u64::MAX), 1, "only the finished record");
    assert!(matches!(
        s.begin("absent", "fp", 7, STALE).unwrap(),
        Begin::Resume { .. }
    ));
}

/// Restart cases: `restart` stops the store and opens it again under a new incarnation.
fn records_held_by_a_previous_process_resume_at_once<S: Store>(s: S, restart: impl Fn(S) -> S) {
    for key in ["crashed", "mine", "no-attempt"] {
        assert_eq!(s.begin(key, "fp", 0, STALE).unwrap(), Begin::Started);
    }
    s.note_attempt("crashed", &attempt("stripe")).unwrap();
    s.note_attempt("mine", &attempt("adyen")).unwrap();
    // Held by this instance: its requests may still be running.
    assert_eq!(s.begin("crashed", "fp", 1, STALE).unwrap(), Begin::InFlight);

    // The process stops mid-request and starts again at once (long before STALE).
    let s = restart(s);
    assert_eq!(
        s.begin("crashed", "fp", 2, STALE).unwrap(),
        Begin::Resume {
            attempt: Some(attempt("stripe")),
            reason: Takeover::PreviousProcess
        }
    );
    assert_eq!(
        s.begin("no-attempt", "fp", 2, STALE).unwrap(),
        Begin::Resume {
            attempt: None,
            reason: Takeover::PreviousProcess
        }
    );
    // The new process holds what it resumed: a second retry is refused, not a second takeover.
    assert_eq!(s.begin("crashed", "fp", 3, STALE).unwrap(), Begin::InFlight);
    // Its own records still fall back to the deadline rule.
    assert_eq!(
        s.begin("crashed", "fp", 2 + STALE, STALE).unwrap(),
        Begin::Resume {
            attempt: Some(attempt("stripe")),
            reason: Takeover::PastDeadline
        }
    );
    // A key the new process claims is its own.
    assert_eq!(s.begin("new", "fp", 3, STALE).unwrap(), Begin::Started);
    assert_eq!(s.begin("new", "fp", 4, STALE).unwrap(), Begin::InFlight);
    // Restarted again: everything in flight was the previous process's, "mine" included.
    let s = restart(s);
    for (key, journaled) in [("mine", Some("adyen")), ("new", None)] {
        assert_eq!(
            s.begin(key, "fp", 5, STALE).unwrap(),
            Begin::Resume {
                attempt: journaled.map(attempt),
                reason: Takeover::PreviousProcess
            },
            "{key}"
        );
    }
}

fn purge_deletes_expired_idempotency_records_in_batches(s: &dyn Store) {
    for n in 0..5u64 {
        let key = format!("done-{n}");
        assert_eq!(s.begin(&key, "fp", 0, STALE).unwrap(), Begin::Started);
        s.finish(&key, &response("{}"), n, 100).unwrap();
    }
    assert_eq!(s.begin("flight", "fp", 0, STALE).unwrap(), Begin::Started);
    // Due at 100 … 104. At 102, three are; a limit of 2 takes the two oldest.
    let batch = |now, limit| s.purge_expired(now, RETAIN, limit).unwrap();
    assert_eq!(
        batch(102, 2),
        Purged {
            idempotency: 2,
            more: true,
            ..Purged::default()
        }
    );
    assert_eq!(
        s.begin("done-0", "other", 102, STALE).unwrap(),
        Begin::Started
    );
    assert_eq!(
        s.begin("done-3", "fp", 102, STALE).unwrap(),
        Begin::Replay(response("{}"))
    );
    assert_eq!(batch(102, 2).idempotency, 1);
    assert_eq!(batch(102, 2), Purged::default());
    assert_eq!(batch(u64::MAX, 10).idempotency, 2, "done-3, done-4");
    // A record finished again moves to its new expiry; in-flight ones never go.
    assert_eq!(s.begin("done-4", "fp", 200, STALE).unwrap(), Begin::Started);
    s.finish("done-4", &response("again"), 200, 100).unwrap();
    assert_eq!(batch(299, 10), Purged::default());
    assert_eq!(batch(300, 10).idempotency, 1);
    assert_eq!(batch(u64::MAX, 10), Purged::default());
    assert_eq!(s.begin("flight", "fp", 1, STALE).unwrap(), Begin::InFlight);
    assert_eq!(s.begin("done-0", "fp", 1, STALE).unwrap(), Begin::Mismatch);
}

fn purge_deletes_payments_and_owners_past_their_retention(s: &dyn Store) {
    // Payments are kept RETAIN after their creation.
    for (n, created) in [(1, 1_000), (2, 2_000), (3, 3_000)] {
        s.put_payment(&entry("r", &format!("pi_{n}"), created, None), &[])
            .unwrap();
    }
    // A later write of a payment keeps its creation time, and one purge entry.
    let mut updated = entry("r", "pi_1", 1_000, None);
    updated.record.state = PaymentState::Succeeded;
    s.put_payment(&updated, &[]).unwrap();
    assert_eq!(
        s.purge_expired(1_999 + RETAIN, RETAIN, ALL)
            .unwrap()
            .payments,
        1
    );
    assert_eq!(s.payment("pi_1").unwrap(), None);
    assert_eq!(
        ids(&s.list_payments("r", &query(10)).unwrap()),
        (vec!["pi_3", "pi_2"], false)
    );
    let batch = s.purge_expired(u64::MAX, RETAIN, 1).unwrap();
    assert_eq!((batch.payments, batch.more), (1, true));
    assert_eq!(
        s.purge_expired(u64::MAX, RETAIN, 1).unwrap().payments,
        1,
        "pi_3"
    );
    assert_eq!(
        ids(&s.list_payments("r", &query(10)).unwrap()),
        (vec![], false)
    );

    // Owners are kept RETAIN after their last write (stamped by the store's clock).
    let before = wall_ms();
    s.set_owner("pi_a", &owner("adyen", "A")).unwrap();
    s.set_owner("pi_b", &owner("adyen", "B")).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let between = wall_ms();
    std::thread::sleep(Duration::from_millis(5));
    // Rewritten later: its retention starts again.
    s.set_owner("pi_b", &owner("stripe", "B2")).unwrap();
    let after = wall_ms();
    assert_eq!(
        s.purge_expired(before - 1 + RETAIN, RETAIN, ALL).unwrap(),
        Purged::default()
    );
    assert_eq!(
        s.purge_expired(between + RETAIN, RETAIN, ALL)
            .unwrap()
            .owners,
        1
    );
    assert_eq!(s.owner("pi_a").unwrap(), None);
    assert_eq!(s.owner("pi_b").unwrap(), Some(owner("stripe", "B2")));
    assert_eq!(
        s.purge_expired(after + RETAIN, RETAIN, ALL).unwrap().owners,
        1
    );
    assert_eq!(s.owner("pi_b").unwrap(), None);
    // Nothing is older than a retention longer than the clock.
    s.set_owner("pi_c", &owner("adyen", "C")).unwrap();
    assert_eq!(
        s.purge_expired(u64::MAX - 1, u64::MAX, ALL).unwrap(),
        Purged::default()
    );
}

// ---- provider notifications: the reference index and held notifications ----

fn owned(id: &str, provider: &str, reference: &str, created_ms: u64) -> PaymentEntry {
    let mut e = entry("r", id, created_ms, None);
    e.owner = Some(owner(provider, reference));
    e
}

fn references_find_payments_by_owner_and_passed_over_provider(s: &dyn Store) {
    use payproxy::store::notices::{passed_over_key, reference_key, unsure_key};
    let by = |key: String| s.payment_by_reference(&key).unwrap();
    // Not sent anywhere yet: not indexed.
    s.put_payment(&entry("r", "pi_1", 1_000, None), &[])
        .unwrap();
    assert_eq!(by(reference_key("adyen", "")), None);
    // Owned: found by the owner's reference; passed over: by what that provider was sent.
    let mut first = owned("pi_1", "stripe", "pi_S1", 1_000);
    first.passed_over.push(PassedOver {
        provider: "adyen".into(),
        sent: vec!["order-1".into(), "pp-key-1".into()],
    });
    s.put_payment(&first, &[]).unwrap();
    assert_eq!(by(reference_key("stripe", "pi_S1")), Some("pi_1".into()));
    assert_eq!(by(reference_key("adyen", "pi_S1")), None, "per provider");
    assert_eq!(by(passed_over_key("adyen", "order-1")), Some("pi_1".into()));
    assert_eq!(
        by(passed_over_key("adyen", "pp-key-1")),
        Some("pi_1".into())
    );
    assert_eq!(
        by(reference_key("adyen", "order-1")),
        None,
        "not an owner key"
    );
    // Another payment sent with the same merchant reference takes that key; rewriting the
    // first does not take it back from it.
    let mut second = owned("pi_2", "stripe", "pi_S2", 2_000);
    second.passed_over.push(PassedOver {
        provider: "adyen".into(),
        sent: vec!["order-1".into()],
    });
    s.put_payment(&second, &[]).unwrap();
    assert_eq!(by(passed_over_key("adyen", "order-1")), Some("pi_2".into()));
    // A record whose owner changes is found under the new reference only.
    let mut moved = first.clone();
    moved.owner = Some(owner("stripe", "pi_S1b"));
    moved.passed_over.clear();
    s.put_payment(&moved, &[]).unwrap();
    assert_eq!(by(reference_key("stripe", "pi_S1")), None);
    assert_eq!(by(reference_key("stripe", "pi_S1b")), Some("pi_1".into()));
    assert_eq!(by(passed_over_key("adyen", "pp-key-1")), None);
    assert_eq!(by(passed_over_key("adyen", "order-1")), Some("pi_2".into()));
    // A payment a provider may hold under a reference payproxy does not know (owner without
    // one; an unresolved attempt): found by what that provider was sent, as unsure.
    let mut ambiguous = entry("r", "pi_3", 3_000, None);
    ambiguous.owner = Some(owner("adyen", ""));
    s.put_payment(&ambiguous, &[]).unwrap();
    assert_eq!(by(unsure_key("adyen", "pi_3")), Some("pi_3".into()));
    assert_eq!(by(reference_key("adyen", "")), None);
    ambiguous.owner = Some(owner("adyen", "psp-3"));
    ambiguous.unresolved = Some(attempt("stripe"));
    s.put_payment(&ambiguous, &[]).unwrap();
    assert_eq!(by(unsure_key("adyen", "pi_3")), None);
    assert_eq!(by(unsure_key("stripe", "pi_3")), Some("pi_3".into()));
    assert_eq!(by(reference_key("adyen", "psp-3")), Some("pi_3".into()));
    // Forwarded in its own dialect, a payment has the provider's id: its reference is its
    // own id.
    let mut own = owned("pi_own", "stripe", "pi_own", 4_000);
    own.passed_over.push(PassedOver {
        provider: "adyen".into(),
        sent: vec!["pi_own".into()],
    });
    s.put_payment(&own, &[]).unwrap();
    assert_eq!(by(reference_key("stripe", "pi_own")), Some("pi_own".into()));
    assert_eq!(by(reference_key("adyen", "pi_own")), None, "per provider");
    assert_eq!(
        by(passed_over_key("adyen", "pi_own")),
        Some("pi_own".into())
    );
    assert_eq!(
        by(passed_over_key("stripe", "pi_own")),
        None,
        "not a passed-over key"
    );
    assert_eq!(by(unsure_key("stripe", "pi_own")), None, "not unsure");
    // Moved to another provider (a failover): found under the new reference only, and back.
    own.owner = Some(owner("adyen", "psp-own"));
    s.put_payment(&own, &[]).unwrap();
    assert_eq!(by(reference_key("stripe", "pi_own")), None);
    assert_eq!(by(reference_key("adyen", "psp-own")), Some("pi_own".into()));
    own.owner = Some(owner("stripe", "pi_own"));
    s.put_payment(&own, &[]).unwrap();
    assert_eq!(by(reference_key("stripe", "pi_own")), Some("pi_own".into()));
    assert_eq!(by(reference_key("adyen", "psp-own")), None);
    // A payment whose id is another payment's reference at a provider that does not own it
    // is not found by that key.
    s.put_payment(&owned("pi_S2", "adyen", "psp-x", 4_000), &[])
        .unwrap();
    assert_eq!(by(reference_key("stripe", "pi_S2")), Some("pi_2".into()));
    assert_eq!(by(reference_key("adyen", "pi_S2")), None);
    // Purged with its payment.
    s.purge_expired(1_500 + RETAIN, RETAIN, ALL).unwrap();
    assert_eq!(by(reference_key("stripe", "pi_S1b")), None);
    assert_eq!(by(reference_key("stripe", "pi_S2")), Some("pi_2".into()));
    s.purge_expired(4_000 + RETAIN + 1, RETAIN, ALL).unwrap();
    assert_eq!(by(reference_key("stripe", "pi_own")), None);
    assert_eq!(by(passed_over_key("adyen", "pi_own")), None);
}

fn notice(reference: &str, event: &str) -> Notification {
    Notification {
        event_id: event.into(),
        operation: Operation::Status,
        outcome: Outcome {
            status: OutcomeStatus::Approved,
            provider_reference: Some(reference.into()),
            amount: None,
        },
        merchant_reference: None,
    }
}

fn held_notices_are_kept_once_oldest_first_until_dropped(s: &dyn Store) {
    let late = HeldNotice::new("pix", notice("tx-2", "e2"), 2_000);
    let early = HeldNotice::new("pix", notice("tx-1", "e1"), 1_000);
    s.hold_notice(&late).unwrap();
    s.hold_notice(&early).unwrap();
    // A redelivery keeps the first arrival.
    s.hold_notice(&HeldNotice::new("pix", notice("tx-1", "e1"), 9_000))
        .unwrap();
    assert_eq!(
        s.held_notices(10).unwrap(),
        vec![early.clone(), late.clone()]
    );
    assert_eq!(s.held_notices(1).unwrap(), vec![early.clone()]);
    s.drop_notice(&early.key).unwrap();
    s.drop_notice("absent").unwrap();
    assert_eq!(s.held_notices(10).unwrap(), vec![late]);
}

// ---- the webhook outbox ----

fn event(payment: &str, seq: u64, endpoint: &str) -> NewEvent {
    NewEvent {
        id: format!("evt_{payment}_{seq}"),
        payment_id: payment.into(),
        seq,
        route: "r".into(),
        endpoint: endpoint.into(),
        event_type: "payment_intent.succeeded".into(),
        content_type: "application/json".into(),
        body: format!(r#"{{"id":"evt_{payment}_{seq}"}}"#).into_bytes(),
        created_ms: 100,
    }
}

/// (payment, seq, endpoint) of claimed or listed rows, sorted.
fn keys(rows: &[payproxy::store::OutboxEvent]) -> Vec<(String, u64, String)> {
    let mut keys: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.event.payment_id.clone(),
                r.event.seq,
                r.event.endpoint.clone(),
            )
        })
        .collect();
    keys.sort();
    keys
}

fn k(payment: &str, seq: u64, endpoint: &str) -> (String, u64, String) {
    (payment.into(), seq, endpoint.into())
}

fn delivered(s: &dyn Store, row: (String, u64, String), at_ms: u64) {
    let key = payproxy::store::EventKey {
        payment_id: row.0,
        seq: row.1,
        endpoint: row.2,
    };
    s.event_attempted(&key, &Attempted::Delivered { at_ms })
        .unwrap();
}

fn outbox_claims_in_order_per_payment_and_endpoint_under_leases(s: &dyn Store) {
    let e = entry("r", "pi_1", 100, None);
    assert_eq!(s.next_event_seq("pi_1").unwrap(), 0);
    s.put_payment(&e, &[event("pi_1", 0, "a"), event("pi_1", 0, "b")])
        .unwrap();
    s.put_payment(&e, &[event("pi_1", 1, "a"), event("pi_1", 1, "b")])
        .unwrap();
    s.put_payment(&entry("r", "pi_2", 101, None), &[event("pi_2", 0, "a")])
        .unwrap();
    // Written again (a resumed request): kept once.
    s.put_payment(&e, &[event("pi_1", 1, "a")]).unwrap();
    assert_eq!(
        s.payment("pi_1").unwrap(),
        Some(e.clone()),
        "the record too"
    );
    assert_eq!(s.next_event_seq("pi_1").unwrap(), 2);
    assert_eq!(s.next_event_seq("pi_2").unwrap(), 1);
    assert_eq!(s.next_event_seq("pi_3").unwrap(), 0);
    assert_eq!(s.list_events(EventState::Pending, 100).unwrap().len(), 5);
    assert_eq!(s.event_counts().unwrap().get("r"), Some(&(5, 0)));

    // Only the oldest pending event of each (payment, endpoint) is due; not before its time.
    assert!(s.claim_events(99, 1_000, 10).unwrap().is_empty());
    let claimed = s.claim_events(100, 1_000, 10).unwrap();
    assert_eq!(
        keys(&claimed),
        [k("pi_1", 0, "a"), k("pi_1", 0, "b"), k("pi_2", 0, "a")]
    );
    assert!(claimed.iter().all(|r| r.lease_until_ms == 1_100));
    assert_eq!(claimed[0].event.body, event("pi_1", 0, "a").body);
    // Leased: nobody claims them, and what follows them waits.
    assert!(s.claim_events(200, 1_000, 10).unwrap().is_empty());
    delivered(s, k("pi_1", 0, "a"), 300);
    assert_eq!(
        keys(&s.claim_events(300, 1_000, 10).unwrap()),
        [k("pi_1", 1, "a")]
    );
    // A claimer that died: its leases lapse and the rows are claimed again.
    assert_eq!(
        keys(&s.claim_events(1_100, 1_000, 10).unwrap()),
        [k("pi_1", 0, "b"), k("pi_2", 0, "a")]
    );
    // The limit holds.
    delivered(s, k("pi_1", 0, "b"), 1_200);
    delivered(s, k("pi_2", 0, "a"), 1_200);
    delivered(s, k("pi_1", 1, "a"), 1_200);
    assert_eq!(s.claim_events(1_200, 1_000, 0).unwrap().len(), 0);
    assert_eq!(
        keys(&s.claim_events(1_200, 1_000, 10).unwrap()),
        [k("pi_1", 1, "b")]
    );
    delivered(s, k("pi_1", 1, "b"), 1_300);
    assert!(s.claim_events(5_000, 1_000, 10).unwrap().is_empty());
    assert!(s.list_events(EventState::Pending, 100).unwrap().is_empty());
    assert_eq!(
        s.event_counts()
            .unwrap()
            .get("r")
            .copied()
            .unwrap_or_default(),
        (0, 0)
    );
}

fn outbox_reschedules_gives_up_and_redelivers(s: &dyn Store) {
    let e = entry("r", "pi_1", 100, None);
    s.put_payment(&e, &[event("pi_1", 0, "a")]).unwrap();
    s.put_payment(&e, &[event("pi_1", 1, "a")]).unwrap();
    let first = k("pi_1", 0, "a");
    let key = payproxy::store::EventKey {
        payment_id: first.0.clone(),
        seq: 0,
        endpoint: "a".into(),
    };
    assert_eq!(
        keys(&s.claim_events(100, 1_000, 10).unwrap()),
        [k("pi_1", 0, "a")]
    );
    s.event_attempted(
        &key,
        &Attempted::Failed {
            error: "endpoint answered 500".into(),
            retry_at_ms: Some(500),
        },
    )
    .unwrap();
    // Rescheduled: not due before 500, and its successor still waits.
    assert!(s.claim_events(400, 1_000, 10).unwrap().is_empty());
    let again = s.claim_events(500, 1_000, 10).unwrap();
    assert_eq!(keys(&again), [k("pi_1", 0, "a")]);
    assert_eq!(again[0].attempts, 1);
    assert_eq!(
        again[0].last_error.as_deref(),
        Some("endpoint answered 500")
    );
    // Given up: failed, listed, counted; it no longer holds the next one back.
    s.event_attempted(
        &key,
        &Attempted::Failed {
            error: "connection refused".into(),
            retry_at_ms: None,
        },
    )
    .unwrap();
    let failed = s.list_events(EventState::Failed, 10).unwrap();
    assert_eq!(keys(&failed), [k("pi_1", 0, "a")]);
    assert_eq!(failed[0].attempts, 2);
    assert_eq!(failed[0].state, EventState::Failed);
    assert_eq!(s.event_counts().unwrap().get("r"), Some(&(1, 1)));
    assert_eq!(
        keys(&s.claim_events(600, 1_000, 10).unwrap()),
        [k("pi_1", 1, "a")]
    );
    delivered(s, k("pi_1", 1, "a"), 700);
    // A late result for a row no longer pending changes nothing.
    s.event_attempted(&key, &Attempted::Delivered { at_ms: 710 })
        .unwrap();
    assert_eq!(s.list_events(EventState::Failed, 10).unwrap().len(), 1);
    // Redelivered: pending again, due at once, its give-up age restarting.
    assert_eq!(s.redeliver_event("evt_pi_1_0", 800).unwrap(), 1);
    assert_eq!(
        s.redeliver_event("evt_pi_1_0", 800).unwrap(),
        0,
        "pending already"
    );
    assert_eq!(s.redeliver_event("evt_unknown", 800).unwrap(), 0);
    let requeued = s.claim_events(800, 1_000, 10).unwrap();
    assert_eq!(keys(&requeued), [k("pi_1", 0, "a")]);
    assert_eq!(
        (requeued[0].since_ms, requeued[0].next_attempt_ms),
        (800, 800)
    );
    s.event_attempted(&key, &Attempted::Delivered { at_ms: 900 })
        .unwrap();
    assert!(s.list_events(EventState::Failed, 10).unwrap().is_empty());
    // A delivered event can be redelivered too (the merchant lost it).
    assert_eq!(s.redeliver_event("evt_pi_1_1", 1_000).unwrap(), 1);
    assert_eq!(
        keys(&s.list_events(EventState::Pending, 10).unwrap()),
        [k("pi_1", 1, "a")]
    );
}

fn outbox_purge_keeps_each_payments_last_event_and_the_undelivered(s: &dyn Store) {
    let e = entry("r", "pi_1", 100, None);
    for seq in 0..3 {
        s.put_payment(&e, &[event("pi_1", seq, "a"), event("pi_1", seq, "b")])
            .unwrap();
    }
    s.put_payment(&entry("r", "pi_2", 100, None), &[event("pi_2", 0, "a")])
        .unwrap();
    // Delivered at 1000 + n, in order; pi_1's last event to `b` stays pending.
    let order = [
        k("pi_1", 0, "a"),
        k("pi_1", 0, "b"),
        k("pi_1", 1, "a"),
        k("pi_1", 1, "b"),
        k("pi_1", 2, "a"),
        k("pi_2", 0, "a"),
    ];
    for (at, key) in (1_000..).zip(order) {
        // Recorded as a claimer would (recording needs no live claim).
        delivered(s, key, at);
    }
    // Nothing delivered that early.
    assert_eq!(s.purge_events(999, ALL).unwrap(), 0);
    // Oldest first, bounded.
    assert_eq!(s.purge_events(10_000, 1).unwrap(), 1);
    // The rest: pi_1's delivered rows except its last row in order (seq 2 to `b`, pending
    // anyway); pi_2's only row is its last and stays.
    assert_eq!(s.purge_events(10_000, ALL).unwrap(), 4);
    assert_eq!(s.purge_events(10_000, ALL).unwrap(), 0);
    assert_eq!(
        s.next_event_seq("pi_1").unwrap(),
        3,
        "the sequence survives"
    );
    assert_eq!(s.next_event_seq("pi_2").unwrap(), 1);
    assert_eq!(
        keys(&s.list_events(EventState::Pending, 10).unwrap()),
        [k("pi_1", 2, "b")]
    );
    assert_eq!(
        s.redeliver_event("evt_pi_1_0", 20_000).unwrap(),
        0,
        "purged"
    );
    assert_eq!(s.redeliver_event("evt_pi_2_0", 20_000).unwrap(), 1, "kept");
}

/// Each case against both stores; `restart:` cases also get a way to restart the store (redb:
/// close and reopen the file; memory: the same contents under a new incarnation).
macro_rules! for_each_store {
    ($($case:ident),* $(,)?; restart: $($restart_case:ident),* $(,)?) => {
        mod redb {
            use super::RedbStore;
            $(#[test]
            fn $case() {
                let dir = tempfile::tempdir().unwrap();
                let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
                super::$case(&store);
            })*
            $(#[test]
            fn $restart_case() {
                let dir = tempfile::tempdir().unwrap();
                let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
                super::$restart_case(store, |old: RedbStore| {
                    let path = old.path().to_path_buf();
                    drop(old);
                    RedbStore::open(&path).unwrap()
                });
            })*
        }
        mod postgres {
            $(#[test]
            fn $case() {
                let Some(store) = super::pg::store() else { return };
                super::$case(&store);
            })*
            $(#[test]
            fn $restart_case() {
                let Some(store) = super::pg::store() else { return };
                // Dropping the store hands its claims back, as a process stopping does.
                super::$restart_case(store, super::pg::reopen);
            })*
        }
        mod memory {
            use super::MemoryStore;
            $(#[test]
            fn $case() {
                super::$case(&MemoryStore::new());
            })*
            $(#[test]
            fn $restart_case() {
                super::$restart_case(MemoryStore::new(), MemoryStore::restarted);
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
    parked_records_resume_at_once_with_their_attempt,
    purge_deletes_expired_idempotency_records_in_batches,
    purge_deletes_payments_and_owners_past_their_retention,
    outbox_claims_in_order_per_payment_and_endpoint_under_leases,
    outbox_reschedules_gives_up_and_redelivers,
    outbox_purge_keeps_each_payments_last_event_and_the_undelivered,
    references_find_payments_by_owner_and_passed_over_provider,
    held_notices_are_kept_once_oldest_first_until_dropped;
    restart: records_held_by_a_previous_process_resume_at_once,
);

// ---- durability of the redb store ----

#[test]
fn redb_claims_of_a_previous_process_are_retaken_at_once_and_outbox_rows_survive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let store = RedbStore::open(&path).unwrap();
    let e = entry("r", "pi_1", 100, None);
    store
        .put_payment(&e, &[event("pi_1", 0, "a"), event("pi_1", 1, "a")])
        .unwrap();
    assert_eq!(store.claim_events(100, 60_000, 10).unwrap().len(), 1);
    // This process holds the lease: it does not claim it twice.
    assert!(store.claim_events(200, 60_000, 10).unwrap().is_empty());
    drop(store);
    // The next process on the file: the claim was its predecessor's, whose lease has not
    // lapsed, and is retaken at once (one process opens the file at a time).
    let store = RedbStore::open(&path).unwrap();
    let again = store.claim_events(300, 60_000, 10).unwrap();
    assert_eq!(keys(&again), [k("pi_1", 0, "a")]);
    assert_eq!(again[0].event, event("pi_1", 0, "a"), "written durably");
    assert_eq!(store.next_event_seq("pi_1").unwrap(), 2);
    assert!(store.claim_events(400, 60_000, 10).unwrap().is_empty());
}

/// A payment whose provider reference is its own id (forwarded in its own dialect) writes no
/// row of the reference index, which finds it through the payments table; any other
/// reference is a row. Read from the file, after a reopen.
#[test]
fn redb_indexes_no_reference_that_is_the_payments_own_id() {
    use payproxy::store::notices::reference_key;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let store = RedbStore::open(&path).unwrap();
    for n in 0..50 {
        let id = format!("pi_own{n}");
        store
            .put_payment(&owned(&id, "stripe", &id, 1_000), &[])
            .unwrap();
    }
    store
        .put_payment(&owned("pi_other", "adyen", "psp-other", 1_000), &[])
        .unwrap();
    drop(store);
    let counts = row_counts(&path);
    let rows = |table: &str| counts.iter().find(|(name, _)| name == table).map(|c| c.1);
    assert_eq!(rows("payments"), Some(51), "{counts:?}");
    assert_eq!(rows("payment_references"), Some(1), "{counts:?}");
    let store = RedbStore::open(&path).unwrap();
    for n in [0, 49] {
        let id = format!("pi_own{n}");
        assert_eq!(
            store
                .payment_by_reference(&reference_key("stripe", &id))
                .unwrap(),
            Some(id)
        );
    }
    assert_eq!(
        store
            .payment_by_reference(&reference_key("adyen", "psp-other"))
            .unwrap(),
        Some("pi_other".into())
    );
    // A file from before this change holds the row: the payment is found all the same, and
    // the row goes when the payment's owner moves.
    drop(store);
    {
        let db = ::redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let references: ::redb::TableDefinition<&str, &str> =
            ::redb::TableDefinition::new("payment_references");
        txn.open_table(references)
            .unwrap()
            .insert(reference_key("stripe", "pi_own0").as_str(), "pi_own0")
            .unwrap();
        txn.commit().unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
    let by = |key: String| store.payment_by_reference(&key).unwrap();
    assert_eq!(
        by(reference_key("stripe", "pi_own0")),
        Some("pi_own0".into())
    );
    store
        .put_payment(&owned("pi_own0", "adyen", "psp-own0", 1_000), &[])
        .unwrap();
    assert_eq!(by(reference_key("stripe", "pi_own0")), None);
    assert_eq!(
        by(reference_key("adyen", "psp-own0")),
        Some("pi_own0".into())
    );
    drop(store);
    let counts = row_counts(&path);
    let rows = |table: &str| counts.iter().find(|(name, _)| name == table).map(|c| c.1);
    assert_eq!(rows("payment_references"), Some(2), "{counts:?}");
    // An id that starts with another kind's mark is indexed like any reference.
    let store = RedbStore::open(&path).unwrap();
    store
        .put_payment(&owned("\u{1}odd", "stripe", "\u{1}odd", 1_000), &[])
        .unwrap();
    assert_eq!(
        store
            .payment_by_reference(&reference_key("stripe", "\u{1}odd"))
            .unwrap(),
        Some("\u{1}odd".into())
    );
}

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
    // Held by the closed instance: resumed at once, not after STALE.
    assert_eq!(
        s.begin("busy", "fp", 1, STALE).unwrap(),
        Begin::Resume {
            attempt: Some(attempt("adyen")),
            reason: Takeover::PreviousProcess
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
/// Set: the child's calls go through the store's writer ([`RedbStore::writer`]).
const CHILD_VIA_WRITER: &str = "STORE_CRASH_VIA_WRITER";
/// Writers in the child, each on its own keys (`start + writer * WRITER_KEYS + i`), so their
/// writes share flushes (group commit) when the kill comes.
const CHILD_WRITERS: u64 = 8;
const WRITER_KEYS: u64 = 10_000;
/// Upper bounds on the child's work, in case the parent never kills it.
const CHILD_MAX_KEYS: u64 = 1_000;
const CHILD_MAX_TIME: Duration = Duration::from_secs(60);

fn crash_key(n: u64) -> (String, String, StoredResponse) {
    let body = format!(r#"{{"id":"pi_{n}","padding":"{}"}}"#, "x".repeat(200));
    (format!("idem-{n}"), format!("pi_{n}"), response(&body))
}

/// Not a test of its own: the body of the child process that `redb_kill_9_loses_nothing_acknowledged`
/// re-executes this binary into (`--ignored --exact crash_child`). Ignored so a normal run
/// never reports it as a pass; run without `STORE_CRASH_CHILD` it fails.
#[test]
#[ignore = "the child process of redb_kill_9_loses_nothing_acknowledged, which runs it"]
fn crash_child() {
    let path = std::env::var_os(CHILD_DB)
        .expect("crash_child runs only as the child of redb_kill_9_loses_nothing_acknowledged");
    let start: u64 = std::env::var(CHILD_START).unwrap().parse().unwrap();
    let via_writer = std::env::var_os(CHILD_VIA_WRITER).is_some();
    let store = Arc::new(RedbStore::open(Path::new(&path)).unwrap());
    let started = Instant::now();
    let writers: Vec<_> = (0..CHILD_WRITERS)
        .map(|writer| {
            let store = store.clone();
            std::thread::spawn(move || {
                let runtime = via_writer.then(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap()
                });
                let first = start + writer * WRITER_KEYS;
                for n in first..first + CHILD_MAX_KEYS {
                    if started.elapsed() > CHILD_MAX_TIME {
                        break;
                    }
                    if let Some(runtime) = &runtime {
                        // As the request path calls it: each call handed to the store's
                        // writer and awaited.
                        runtime.block_on(write_through_writer(store.clone(), n));
                    } else {
                        let (key, payment, resp) = crash_key(n);
                        assert_eq!(store.begin(&key, "fp", 0, STALE).unwrap(), Begin::Started);
                        store.note_attempt(&key, &attempt("adyen")).unwrap();
                        store
                            .set_owner(&payment, &owner("adyen", &format!("PSP{n}")))
                            .unwrap();
                        store.finish(&key, &resp, 0, TTL).unwrap();
                    }
                    // Only now is the key acknowledged; one write per line, so the parent
                    // sees whole lines right away.
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "acked {n}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
}

/// A call to run on a store's writer.
type OnStore<T> = Box<dyn FnOnce(&RedbStore) -> Result<T, StoreError> + Send>;

/// One key's calls, each through the store's writer, each awaited before the next.
async fn write_through_writer(store: Arc<RedbStore>, n: u64) {
    let (key, payment, resp) = crash_key(n);
    let run = |call: OnStore<()>| {
        let s = store.clone();
        store.writer().unwrap().run(move || call(&s))
    };
    let k = key.clone();
    run(Box::new(move |s| {
        assert_eq!(s.begin(&k, "fp", 0, STALE)?, Begin::Started);
        Ok(())
    }))
    .await
    .unwrap();
    let k = key.clone();
    run(Box::new(move |s| s.note_attempt(&k, &attempt("adyen"))))
        .await
        .unwrap();
    run(Box::new(move |s| {
        s.set_owner(&payment, &owner("adyen", &format!("PSP{n}")))
    }))
    .await
    .unwrap();
    run(Box::new(move |s| s.finish(&key, &resp, 0, TTL)))
        .await
        .unwrap();
}

/// Calls queued together on the redb writer run in one write transaction: a key claimed
/// earlier in the batch is seen by a later claim of it (the idempotency check holds inside a
/// batch), a payment and its events written in the batch are one write, an outbox claim in
/// the middle of the batch (a transaction of its own) does not wait on the batch's, point
/// reads see what the batch wrote before them, and everything answered is in the file after
/// a reopen.
#[tokio::test(flavor = "current_thread")]
async fn redb_writer_batch_claims_a_key_once_and_keeps_every_answered_call() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let store = Arc::new(RedbStore::open(&path).unwrap());
    let writer = store.writer().unwrap();
    // Hold the writer until every call below is queued: they are one batch.
    let gate = Arc::new(Barrier::new(2));
    let held = {
        let gate = gate.clone();
        writer.run(move || {
            gate.wait();
            Ok(())
        })
    };
    let call = |f: OnStore<Begin>| {
        let s = store.clone();
        writer.run(move || f(&s))
    };
    let first = call(Box::new(|s| s.begin("k1", "fp", 0, STALE)));
    let second = call(Box::new(|s| s.begin("k1", "fp", 0, STALE)));
    let other = call(Box::new(|s| s.begin("k2", "other-fp", 0, STALE)));
    let paid = call(Box::new(|s| {
        s.put_payment(
            &entry("r", "pi_batch", 1_000, None),
            &[event("pi_batch", 1, "e")],
        )?;
        s.set_owner("pi_batch", &owner("adyen", "PSP-batch"))?;
        // A write of its own in the middle of the batch commits the batch so far first.
        assert_eq!(s.claim_events(100, 60_000, 10)?.len(), 1);
        Ok(Begin::Started)
    }));
    let mismatch = call(Box::new(|s| s.begin("k2", "fp", 0, STALE)));
    // Point reads later in the batch see what the batch wrote before them.
    let read = {
        let s = store.clone();
        writer.run(move || {
            s.put_payment(
                &owned("pi_read", "stripe", "pi_S9", 2_000),
                &[event("pi_read", 1, "e")],
            )?;
            s.set_owner("pi_read", &owner("stripe", "pi_S9"))?;
            Ok((
                s.payment("pi_read")?.map(|e| e.record.id),
                s.owner("pi_read")?,
                s.payment_by_reference(&payproxy::store::notices::reference_key(
                    "stripe", "pi_S9",
                ))?,
                s.next_event_seq("pi_read")?,
            ))
        })
    };
    gate.wait();
    held.await.unwrap();
    assert_eq!(first.await.unwrap(), Begin::Started);
    assert_eq!(
        second.await.unwrap(),
        Begin::InFlight,
        "the batch saw its own claim"
    );
    assert_eq!(other.await.unwrap(), Begin::Started);
    assert_eq!(paid.await.unwrap(), Begin::Started);
    assert_eq!(mismatch.await.unwrap(), Begin::Mismatch);
    let (payment, read_owner, by_reference, next_seq) = read.await.unwrap();
    assert_eq!(payment.as_deref(), Some("pi_read"));
    assert_eq!(read_owner, Some(owner("stripe", "pi_S9")));
    assert_eq!(by_reference.as_deref(), Some("pi_read"));
    assert_eq!(next_seq, 2, "the batch's own event was seen");

    drop(store);
    // The batch's two claims got numbers in their order, each pointing at its own record.
    let (entries, records) = idempotency_rows(&path);
    let numbered: Vec<u64> = ["k1", "k2"]
        .iter()
        .map(|key| {
            let (_, bytes) = entries.iter().find(|(k, _)| k == key).unwrap();
            assert_eq!(bytes.len(), 9, "{key}: a number, not a record");
            u64::from_be_bytes(bytes[1..].try_into().unwrap())
        })
        .collect();
    assert!(numbered[0] < numbered[1], "{numbered:?}");
    assert!(record_of(&records, numbered[0]).contains(r#""fp""#));
    assert!(record_of(&records, numbered[1]).contains(r#""other-fp""#));
    let store = RedbStore::open(&path).unwrap();
    for key in ["k1", "k2"] {
        let after = store.begin(key, "fp", 0, STALE).unwrap();
        assert!(
            matches!(after, Begin::Resume { .. } | Begin::Mismatch),
            "{key}: {after:?}"
        );
    }
    let paid = store.payment("pi_batch").unwrap().expect("the payment");
    assert_eq!(paid.record.id, "pi_batch");
    assert_eq!(
        store.owner("pi_batch").unwrap(),
        Some(owner("adyen", "PSP-batch"))
    );
    let claimed = store.list_events(EventState::Pending, 10).unwrap();
    assert_eq!(
        keys(&claimed),
        [
            ("pi_batch".into(), 1, "e".into()),
            ("pi_read".into(), 1, "e".into())
        ]
    );
}

/// Runs one child writing keys from `start`, SIGKILLs it once it has acknowledged `kill_after`
/// keys, and returns every key it acknowledged (including lines still in the pipe).
fn run_and_kill_child(db: &Path, start: u64, kill_after: usize, via_writer: bool) -> Vec<u64> {
    let mut command = Command::new(std::env::current_exe().unwrap());
    if via_writer {
        command.env(CHILD_VIA_WRITER, "1");
    }
    let mut child = command
        .args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
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
    kill_9_rounds(false);
}

/// The same through the store's writer, as the request path calls it: a call is answered
/// only after the flush covering its batch.
#[test]
fn redb_kill_9_loses_nothing_acknowledged_through_the_writer() {
    kill_9_rounds(true);
}

fn kill_9_rounds(via_writer: bool) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.redb");
    let mut all = Vec::new();
    // Several crashes into the same file, at different points.
    for (round, kill_after) in [3usize, 200, 60].into_iter().enumerate() {
        let acked = run_and_kill_child(&db, round as u64 * 100_000, kill_after, via_writer);
        assert!(acked.len() >= kill_after, "round {round}: {acked:?}");
        all.extend(acked.iter().copied());

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
        // The key each writer's kill interrupted is absent, in flight or finished, but
        // readable.
        for writer in 0..CHILD_WRITERS {
            let first = round as u64 * 100_000 + writer * WRITER_KEYS;
            let done = acked
                .iter()
                .filter(|&&n| (first..first + WRITER_KEYS).contains(&n));
            let next = done.max().map_or(first, |n| n + 1);
            let answer = store.begin(&crash_key(next).0, "fp", 1, STALE).unwrap();
            assert_ne!(answer, Begin::Mismatch, "{next}");
        }
        assert_eq!(
            store.purge_expired(TTL - 1, u64::MAX, ALL).unwrap().total(),
            0
        );
        // The file takes new writes after the crash.
        let probe = format!("probe-{round}");
        assert_eq!(store.begin(&probe, "fp", 0, STALE).unwrap(), Begin::Started);
        store.finish(&probe, &response("{}"), 0, TTL).unwrap();
    }
}

// ---- bounded state (redb) ----

/// A file written before holders, owner stamps and purge indexes existed: the tables of that
/// version, with records as it wrote them.
fn write_legacy_file(path: &Path) {
    use ::redb::TableDefinition;
    let db = ::redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let text: [TableDefinition<&str, &[u8]>; 3] = [
            TableDefinition::new("idempotency"),
            TableDefinition::new("owners"),
            TableDefinition::new("payments"),
        ];
        let mut records = txn.open_table(text[0]).unwrap();
        let done = r#"{"fingerprint":"fp","state":{"state":"finished",
            "response":{"status":200,"headers":[],"body":"{}"},"expires_ms":100}}"#;
        let flight = r#"{"fingerprint":"fp","state":{"state":"in_flight","started_ms":0,
            "attempt":{"provider":"adyen","provider_key":"adyen-idem-1"}}}"#;
        records.insert("old-done", done.as_bytes()).unwrap();
        records.insert("old-flight", flight.as_bytes()).unwrap();
        let mut owners = txn.open_table(text[1]).unwrap();
        let old_owner = serde_json::to_vec(&owner("adyen", "PSP1")).unwrap();
        owners.insert("pi_old", old_owner.as_slice()).unwrap();
        let mut payments = txn.open_table(text[2]).unwrap();
        let e = entry("r", "pi_old", 1_000, None);
        let bytes = serde_json::to_vec(&e).unwrap();
        payments.insert("pi_old", bytes.as_slice()).unwrap();
        let index: TableDefinition<&str, ()> = TableDefinition::new("payment_index");
        let mut index = txn.open_table(index).unwrap();
        index.insert(e.index_key().as_str(), ()).unwrap();
    }
    txn.commit().unwrap();
}

#[test]
fn redb_file_from_an_earlier_version_is_indexed_and_purged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    write_legacy_file(&path);
    let before = wall_ms();
    let s = RedbStore::open(&path).unwrap();
    let after = wall_ms();
    // An in-flight record without a holder was held by the old process: resumed at once.
    assert_eq!(
        s.begin("old-flight", "fp", 1, STALE).unwrap(),
        Begin::Resume {
            attempt: Some(attempt("adyen")),
            reason: Takeover::PreviousProcess
        }
    );
    assert_eq!(s.owner("pi_old").unwrap(), Some(owner("adyen", "PSP1")));
    // The finished record and the payment were indexed from their own times; the owner,
    // which has none, from the upgrade.
    let expired = s.purge_expired(100, RETAIN, ALL).unwrap();
    assert_eq!((expired.idempotency, expired.total()), (1, 1));
    let payments = s
        .purge_expired(before - 1, before - 1 - 1_000, ALL)
        .unwrap();
    assert_eq!((payments.payments, payments.total()), (1, 1));
    assert_eq!(s.list_payments("r", &query(10)).unwrap().0, vec![]);
    assert_eq!(
        s.purge_expired(before - 1 + RETAIN, RETAIN, ALL)
            .unwrap()
            .owners,
        0
    );
    assert_eq!(
        s.purge_expired(after + RETAIN, RETAIN, ALL).unwrap().owners,
        1
    );
    assert_eq!(s.owner("pi_old").unwrap(), None);
    // Indexed once: a second open does not index again, and finds nothing left to purge.
    drop(s);
    let s = RedbStore::open(&path).unwrap();
    assert_eq!(
        s.purge_expired(u64::MAX, 0, ALL).unwrap(),
        Purged::default()
    );
    assert!(matches!(
        s.begin("old-flight", "fp", 2, STALE).unwrap(),
        Begin::Resume { .. }
    ));
}

/// Raw rows of a redb table: key, value bytes.
type Rows<K> = Vec<(K, Vec<u8>)>;

/// The raw idempotency entries and numbered records of a closed redb store file.
fn idempotency_rows(path: &Path) -> (Rows<String>, Rows<u64>) {
    use ::redb::{ReadableDatabase, ReadableTable, TableDefinition};
    let keys: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency");
    let records: TableDefinition<u64, &[u8]> = TableDefinition::new("idempotency_records");
    let db = ::redb::Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let (keys, records) = (
        txn.open_table(keys).unwrap(),
        txn.open_table(records).unwrap(),
    );
    let keys = keys.iter().unwrap().map(|row| {
        let (k, v) = row.unwrap();
        (k.value().to_string(), v.value().to_vec())
    });
    let records = records.iter().unwrap().map(|row| {
        let (k, v) = row.unwrap();
        (k.value(), v.value().to_vec())
    });
    (keys.collect(), records.collect())
}

/// A key's entry holds its record's number, given in claim order (and after a restart,
/// after the highest stored); the attempt and the outcome rewrite the numbered record, and
/// the key's entry keeps its number. A record a file from before keeps in its entry is
/// moved to a number at its next write. Each key's fingerprint is its own, so a record
/// reached through the wrong number shows.
#[test]
fn redb_idempotency_records_are_numbered_in_claim_order_and_rewritten_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    write_legacy_file(&path);
    let s = RedbStore::open(&path).unwrap();
    for key in ["k-c", "k-a", "k-b"] {
        let fingerprint = format!("fp-{key}");
        assert_eq!(
            s.begin(key, &fingerprint, 1, STALE).unwrap(),
            Begin::Started
        );
    }
    drop(s);
    let number = |n: u64| [&[0u8][..], &n.to_be_bytes()].concat();
    let (entries, records) = idempotency_rows(&path);
    let entry = |key: &str| entries.iter().find(|(k, _)| k == key).unwrap().1.clone();
    assert_eq!(
        [entry("k-c"), entry("k-a"), entry("k-b")],
        [number(1), number(2), number(3)]
    );
    assert_eq!(records.len(), 3);
    for (n, key) in [(1, "k-c"), (2, "k-a"), (3, "k-b")] {
        assert!(record_of(&records, n).contains(&format!(r#""fp-{key}""#)));
    }
    assert!(
        entry("old-done").starts_with(b"{"),
        "untouched: still in its entry"
    );

    let s = RedbStore::open(&path).unwrap();
    s.note_attempt("k-a", &attempt("adyen")).unwrap();
    s.finish("k-a", &response(r#"{"id":"pi_a"}"#), 2, 60_000)
        .unwrap();
    // The old process's in-flight record is taken over: written, so moved to a number.
    assert!(matches!(
        s.begin("old-flight", "fp", 3, STALE).unwrap(),
        Begin::Resume { .. }
    ));
    // The highest number released, and the lowest: after a restart the numbers go on after
    // the highest left (4 again, never 3, which k-b still holds).
    s.release("old-flight").unwrap();
    s.release("k-c").unwrap();
    drop(s);
    let (after, records) = idempotency_rows(&path);
    assert_eq!(after.len(), 3, "k-a, k-b, old-done: {after:?}");
    let entry = |key: &str| after.iter().find(|(k, _)| k == key).unwrap().1.clone();
    assert_eq!(entry("k-a"), number(2), "the key keeps its number");
    assert!(record_of(&records, 2).contains("pi_a"));
    assert!(record_of(&records, 2).contains(r#""finished""#));
    assert_eq!(
        records.len(),
        2,
        "the released records went with their entries"
    );

    let s = RedbStore::open(&path).unwrap();
    assert_eq!(s.begin("k-d", "fp-k-d", 4, STALE).unwrap(), Begin::Started);
    assert_eq!(s.begin("k-e", "fp-k-e", 4, STALE).unwrap(), Begin::Started);
    // Replays from a numbered record and from one still in its entry, each its own answer.
    let Begin::Replay(replayed) = s.begin("k-a", "fp-k-a", 4, STALE).unwrap() else {
        panic!("k-a replays");
    };
    assert_eq!(replayed.body, br#"{"id":"pi_a"}"#);
    let Begin::Replay(replayed) = s.begin("old-done", "fp", 4, STALE).unwrap() else {
        panic!("old-done replays");
    };
    assert_eq!(replayed.body, b"{}");
    // k-b, claimed by an earlier process, is taken over in place, then released.
    assert!(matches!(
        s.begin("k-b", "fp-k-b", 4, STALE).unwrap(),
        Begin::Resume { attempt: None, .. }
    ));
    s.release("k-b").unwrap();
    drop(s);
    let (after, records) = idempotency_rows(&path);
    let entry = |key: &str| after.iter().find(|(k, _)| k == key).unwrap().1.clone();
    assert_eq!([entry("k-d"), entry("k-e")], [number(4), number(5)]);
    assert!(record_of(&records, 4).contains(r#""fp-k-d""#));
    assert!(record_of(&records, 5).contains(r#""fp-k-e""#));
    assert!(after.iter().all(|(k, _)| k != "k-b"));
    assert!(
        records.iter().all(|(n, _)| *n != 3),
        "k-b's record went with it"
    );
}

/// Numbered record `n` as text.
fn record_of(records: &Rows<u64>, n: u64) -> String {
    let (_, bytes) = records.iter().find(|(k, _)| *k == n).unwrap();
    String::from_utf8(bytes.clone()).unwrap()
}

/// Rows in every table of a closed redb store file, by table name.
fn row_counts(path: &Path) -> Vec<(String, u64)> {
    use ::redb::{ReadableDatabase, ReadableTableMetadata, TableHandle};
    let db = ::redb::Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let mut counts = Vec::new();
    for handle in txn.list_tables().unwrap() {
        let name = handle.name().to_string();
        let table = txn.open_untyped_table(handle).unwrap();
        counts.push((name, table.len().unwrap()));
    }
    counts.sort();
    counts
}

/// 20,000 keyed payments (idempotency record, payment record, owner, finished answer of ~1 KB)
/// against a redb file with a 200 ms TTL and retention, purged every `PURGE_EVERY` payments
/// as the sweeper would: the file stays under a constant while the traffic grows, and once
/// everything has expired every table is empty.
///
/// The clock is the wall clock, but advancing at least 1 ms per payment, so a TTL's worth of
/// payments (the live set) is at most 200 whatever the machine's speed.
#[test]
fn redb_file_levels_off_under_steady_keyed_traffic() {
    const PAYMENTS: u64 = 20_000;
    const SHORT: u64 = 200;
    const PURGE_EVERY: u64 = 250;
    // redb reuses the pages a purge frees; within its first region it grows the file by
    // doubling when a transaction needs more than is free and trims half of a free tail, so
    // the length jumps up to ×2 either way around what the live set (≤ 200 payments) and one
    // purge batch (250 payments) need: 1.4–2.6 MB measured, over 60,000 payments too. Kept
    // forever (no purge), these payments take 87 MB, past this bound after ~2,250 of them.
    const BUDGET: u64 = 8 << 20;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let s = RedbStore::open(&path).unwrap();
    let body = format!(
        r#"{{"id":"pi_x","object":"payment_intent","pad":"{}"}}"#,
        "x".repeat(900)
    );
    let mut clock = wall_ms();
    let mut tick = || {
        clock = wall_ms().max(clock + 1);
        clock
    };
    let purge = |s: &RedbStore, now: u64| {
        for _ in 0..PAYMENTS {
            if !s.purge_expired(now, SHORT, 1_000).unwrap().more {
                return;
            }
        }
    };
    // The file size after every PURGE_EVERY payments.
    let mut sizes = Vec::new();
    for n in 1..=PAYMENTS {
        let (key, id) = (format!("route\0idem-{n}"), format!("pi_{n}"));
        let now = tick();
        assert_eq!(s.begin(&key, "fp", now, STALE).unwrap(), Begin::Started);
        s.put_payment(&entry("r", &id, now, Some("cus_1")), &[])
            .unwrap();
        s.set_owner(&id, &owner("adyen", &format!("PSP{n}")))
            .unwrap();
        s.finish(&key, &response(&body), now, SHORT).unwrap();
        if n % PURGE_EVERY == 0 {
            purge(&s, now);
            sizes.push(std::fs::metadata(&path).unwrap().len());
        }
    }
    let quarter = sizes.len() / 4;
    let at: Vec<u64> = sizes.chunks(quarter).map(|q| q[q.len() - 1]).collect();
    let high: Vec<u64> = sizes
        .chunks(quarter)
        .map(|q| *q.iter().max().unwrap())
        .collect();
    eprintln!(
        "redb file after 5k, 10k, 15k, 20k payments: {at:?} bytes; largest per quarter: {high:?}"
    );
    assert!(
        sizes.iter().all(|&size| size <= BUDGET),
        "the file grows with traffic: {sizes:?}"
    );
    // Once everything has expired, a purge leaves every table empty, indexes included.
    // (The clock is never behind the wall clock that stamped the owners.)
    let later = tick() + SHORT + 1;
    purge(&s, later);
    let key = "route\0idem-1";
    assert_eq!(s.begin(key, "other", later, STALE).unwrap(), Begin::Started);
    s.release(key).unwrap();
    drop(s);
    let mut counts = row_counts(&path);
    // The journal's bookkeeping (the store's salt, the last entry applied) is not data:
    // these calls ran off the writer, so it holds the salt alone.
    let journal = counts.iter().position(|(name, _)| name == "journal");
    let journal = counts.remove(journal.expect("the journal table"));
    assert_eq!(journal.1, 1, "{journal:?}");
    assert!(counts.len() >= 7, "{counts:?}");
    assert!(counts.iter().all(|(_, rows)| *rows == 0), "{counts:?}");
}

// ---- the postgres store: shared by several instances ----

mod pg {
    use std::time::Duration;

    use payproxy::store::{PostgresOptions, PostgresStore};

    /// The test server's URL; `None` (with a loud message) when unset.
    pub fn url() -> Option<String> {
        match std::env::var("PAYPROXY_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => Some(url),
            _ => {
                eprintln!(
                    "SKIPPED: PAYPROXY_TEST_POSTGRES_URL is not set; the postgres store is \
                     not tested (scripts/test.sh starts a server and sets it)"
                );
                None
            }
        }
    }

    /// A fresh database on the test server, as store options (lease 10 s). Panics when the
    /// server is unreachable: with the variable set, that is a failure, not a skip.
    pub fn fresh() -> Option<PostgresOptions> {
        let url = url()?;
        let options = PostgresOptions::from_url(&url).unwrap();
        let name = format!("t_{:016x}", rand_u64());
        let admin = options.config.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (client, conn) = admin
                .connect(tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("PAYPROXY_TEST_POSTGRES_URL is unreachable: {e}"));
            tokio::spawn(conn);
            client
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap();
        });
        let mut options = options;
        options.config.dbname(&name);
        Some(options)
    }

    fn rand_u64() -> u64 {
        use std::hash::{BuildHasher, RandomState};
        RandomState::new().hash_one(std::time::SystemTime::now())
    }

    pub fn store() -> Option<PostgresStore> {
        Some(PostgresStore::open(fresh()?).unwrap())
    }

    pub fn reopen(old: PostgresStore) -> PostgresStore {
        let options = old.options().clone();
        drop(old);
        PostgresStore::open(options).unwrap()
    }

    pub fn with_lease(mut options: PostgresOptions, lease_ms: u64) -> PostgresStore {
        options.lease = Duration::from_millis(lease_ms);
        PostgresStore::open(options).unwrap()
    }

    /// Locks `key`'s idempotency row from a connection of its own (as another transaction
    /// would) and holds it for `hold`; returns once the lock is held. Writes to the row queue
    /// behind the lock meanwhile, in the order they arrive.
    pub fn lock_row(
        options: &PostgresOptions,
        key: &str,
        hold: Duration,
    ) -> std::thread::JoinHandle<()> {
        let (config, key) = (options.config.clone(), key.as_bytes().to_vec());
        let (locked, held) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let (mut client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(conn);
                let txn = client.transaction().await.unwrap();
                let row = txn
                    .query_opt(
                        "SELECT 1 FROM idempotency WHERE key = $1 FOR UPDATE",
                        &[&key],
                    )
                    .await
                    .unwrap();
                assert!(row.is_some(), "no row to lock");
                locked.send(()).unwrap();
                tokio::time::sleep(hold).await;
                txn.commit().await.unwrap();
            });
        });
        held.recv().expect("the row was locked");
        holder
    }
}

/// Waits until `f` returns `Some`, polling; panics after `within`.
fn until<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn postgres_instances_wait_for_a_live_lease_and_fence_a_stalled_holder() {
    let Some(options) = pg::fresh() else { return };
    // `a` renews its claim only for the 50 ms given as its deadline, then stalls (as a
    // paused process would): its 3 s lease lapses and `b` takes the payment over. (3 s, not
    // less: on a loaded machine each step must fit well inside a live lease.)
    let a = pg::with_lease(options.clone(), 3_000);
    let b = pg::with_lease(options, 3_000);
    assert_eq!(a.begin("k", "fp", 0, 50).unwrap(), Begin::Started);
    a.note_attempt("k", &attempt("adyen")).unwrap();
    assert_eq!(b.begin("k", "fp", 0, STALE).unwrap(), Begin::InFlight);
    assert_eq!(b.begin("k", "other", 0, STALE).unwrap(), Begin::Mismatch);
    let resumed = until(Duration::from_secs(10), "the lease to lapse", || {
        match b.begin("k", "fp", 1, STALE).unwrap() {
            Begin::InFlight => None,
            other => Some(other),
        }
    });
    assert_eq!(
        resumed,
        Begin::Resume {
            attempt: Some(attempt("adyen")),
            reason: Takeover::LeaseExpired
        }
    );
    // `b` holds it now, renewing its lease: `a` waits like anyone else.
    assert_eq!(a.begin("k", "fp", 2, STALE).unwrap(), Begin::InFlight);
    // `a` comes back: every late write of its own is fenced; nothing it says is kept.
    let fenced = |r: Result<(), StoreError>, op: &str| match r {
        Err(StoreError::Fenced { op: o, .. }) => assert_eq!(o, op),
        other => panic!("{op}: expected Fenced, got {other:?}"),
    };
    fenced(a.note_attempt("k", &attempt("stripe")), "note_attempt");
    fenced(a.finish("k", &response("late"), 3, TTL), "finish");
    fenced(a.release("k"), "release");
    fenced(a.park("k"), "park");
    b.finish("k", &response("once"), 4, TTL).unwrap();
    for s in [&a, &b] {
        assert_eq!(
            s.begin("k", "fp", 5, STALE).unwrap(),
            Begin::Replay(response("once"))
        );
    }
    // A released key is claimed again under a new token: `a`'s old one stays fenced.
    assert_eq!(b.begin("r", "fp", 6, STALE).unwrap(), Begin::Started);
    b.release("r").unwrap();
    assert_eq!(b.begin("r", "fp", 7, STALE).unwrap(), Begin::Started);
    fenced(a.note_attempt("r", &attempt("x")), "note_attempt");
}

#[test]
fn postgres_a_claim_past_its_renewal_deadline_is_judged_by_the_database() {
    let Some(options) = pg::fresh() else { return };
    // `a` renews its claim only for 50 ms, then its request runs long. Nobody took the claim
    // over: its late writes go through (the database's token check decides), rather than
    // being refused because this store stopped renewing.
    let a = pg::with_lease(options, 3_000);
    assert_eq!(a.begin("k", "fp", 0, 50).unwrap(), Begin::Started);
    // Several renewal ticks (a third of the lease each) past its 50 ms deadline.
    std::thread::sleep(Duration::from_millis(2_500));
    let mut e = entry("r", "pi_1", 1_000, None);
    e.record.state = PaymentState::Succeeded;
    a.put_payment_fenced(Fence::Claim("k"), &e, &[]).unwrap();
    a.finish("k", &response("late but still ours"), 1, TTL)
        .unwrap();
    assert_eq!(
        a.begin("k", "fp", 2, STALE).unwrap(),
        Begin::Replay(response("late but still ours"))
    );
    assert_eq!(a.payment("pi_1").unwrap(), Some(e));
}

#[test]
fn postgres_payment_records_written_under_a_lost_lock_are_fenced() {
    let Some(options) = pg::fresh() else { return };
    // `a` takes payment pi_1's operation lock and renews it for 1.5 s (its deadline), then
    // stalls; `b` takes the lock over once the lease lapsed and records the payment. `a`'s
    // late record write must not replace `b`'s.
    let a = pg::with_lease(options.clone(), 3_000);
    let b = pg::with_lease(options, 3_000);
    let lock = payment_lock_key("pi_1");
    let mut created = entry("r", "pi_1", 1_000, None);
    a.put_payment(&created, &[]).unwrap();
    // Without the lock, a locked write is refused: it never falls back to an unfenced one.
    match a.put_payment_fenced(Fence::Lock(&lock), &created, &[event("pi_1", 0, "a")]) {
        Err(StoreError::Fenced { op, .. }) => assert_eq!(op, "put_payment"),
        other => panic!("expected Fenced without the lock, got {other:?}"),
    }
    assert_eq!(
        a.next_event_seq("pi_1").unwrap(),
        0,
        "a refused write emits no event"
    );
    assert_eq!(
        a.begin(&lock, "operation", 0, 1_500).unwrap(),
        Begin::Started
    );
    a.note_attempt(&lock, &attempt("adyen")).unwrap();
    // While `a` holds the lock its writes go through, and the attempt journaled on the lock
    // is dropped with the record that says its outcome.
    created.record.state = PaymentState::Processing;
    a.put_payment_fenced(Fence::Lock(&lock), &created, &[event("pi_1", 0, "a")])
        .unwrap();
    assert_eq!(a.next_event_seq("pi_1").unwrap(), 1, "its event, with it");
    a.note_attempt(&lock, &attempt("stripe")).unwrap();
    let resumed = until(
        Duration::from_secs(15),
        "the lock's lease to lapse",
        || match b.begin(&lock, "operation", 1, STALE).unwrap() {
            Begin::InFlight => None,
            other => Some(other),
        },
    );
    assert_eq!(
        resumed,
        Begin::Resume {
            attempt: Some(attempt("stripe")),
            reason: Takeover::LeaseExpired
        }
    );
    let mut by_b = created.clone();
    by_b.unresolved = Some(attempt("stripe"));
    b.put_payment_fenced(Fence::Lock(&lock), &by_b, &[])
        .unwrap();
    let mut late = created.clone();
    late.record.state = PaymentState::Succeeded;
    match a.put_payment_fenced(Fence::Lock(&lock), &late, &[event("pi_1", 1, "a")]) {
        Err(StoreError::Fenced { op, .. }) => assert_eq!(op, "put_payment"),
        other => panic!("expected Fenced, got {other:?}"),
    }
    assert_eq!(
        a.list_events(EventState::Pending, 10).unwrap().len(),
        1,
        "the late write's event is not in the outbox"
    );
    assert_eq!(b.payment("pi_1").unwrap(), Some(by_b.clone()));
    // `b`'s recorded write dropped the attempt from the lock: handed back and taken again,
    // the lock carries none.
    b.park(&lock).unwrap();
    assert_eq!(
        a.begin(&lock, "operation", 2, STALE).unwrap(),
        Begin::Resume {
            attempt: None,
            reason: Takeover::Parked
        }
    );
}

#[test]
fn postgres_payment_records_written_under_a_lost_idempotency_claim_are_fenced() {
    let Some(options) = pg::fresh() else { return };
    // A create: `a` claims key k, journals its attempt and records the payment under the
    // claim, then stalls; `b` takes k over and records the payment. `a`'s late write must
    // not replace it. Unlike the lock, the claim keeps its journaled attempt after a write.
    let a = pg::with_lease(options.clone(), 3_000);
    let b = pg::with_lease(options, 3_000);
    let mut created = entry("r", "pi_1", 1_000, None);
    match a.put_payment_fenced(Fence::Claim("k"), &created, &[event("pi_1", 0, "a")]) {
        Err(StoreError::Fenced { op, .. }) => assert_eq!(op, "put_payment"),
        other => panic!("expected Fenced without the claim, got {other:?}"),
    }
    assert_eq!(a.payment("pi_1").unwrap(), None);
    assert_eq!(a.begin("k", "fp", 0, 1_500).unwrap(), Begin::Started);
    a.note_attempt("k", &attempt("adyen")).unwrap();
    created.record.state = PaymentState::Processing;
    a.put_payment_fenced(Fence::Claim("k"), &created, &[event("pi_1", 0, "a")])
        .unwrap();
    let resumed = until(
        Duration::from_secs(15),
        "the claim's lease to lapse",
        || match b.begin("k", "fp", 1, STALE).unwrap() {
            Begin::InFlight => None,
            other => Some(other),
        },
    );
    assert_eq!(
        resumed,
        Begin::Resume {
            attempt: Some(attempt("adyen")),
            reason: Takeover::LeaseExpired
        },
        "the claim's journal survives a record write"
    );
    let mut by_b = created.clone();
    by_b.record.state = PaymentState::Succeeded;
    b.put_payment_fenced(Fence::Claim("k"), &by_b, &[event("pi_1", 1, "a")])
        .unwrap();
    let mut late = created.clone();
    late.record.state = PaymentState::Failed;
    match a.put_payment_fenced(Fence::Claim("k"), &late, &[event("pi_1", 2, "a")]) {
        Err(StoreError::Fenced { op, .. }) => assert_eq!(op, "put_payment"),
        other => panic!("expected Fenced, got {other:?}"),
    }
    assert_eq!(b.payment("pi_1").unwrap(), Some(by_b));
    assert_eq!(
        b.next_event_seq("pi_1").unwrap(),
        2,
        "the late write emitted no event"
    );
}

#[test]
fn postgres_instances_racing_for_a_key_start_it_once() {
    let Some(options) = pg::fresh() else { return };
    let stores: Vec<PostgresStore> = (0..3)
        .map(|_| PostgresStore::open(options.clone()).unwrap())
        .collect();
    for round in 0..10 {
        let key = format!("race-{round}");
        let barrier = Barrier::new(6);
        let answers: Vec<Begin> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..6)
                .map(|i| {
                    let (s, key, barrier) = (&stores[i % 3], &key, &barrier);
                    scope.spawn(move || {
                        barrier.wait();
                        s.begin(key, "fp", 0, STALE).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let started = answers.iter().filter(|a| **a == Begin::Started).count();
        let in_flight = answers.iter().filter(|a| **a == Begin::InFlight).count();
        assert_eq!((started, in_flight), (1, 5), "round {round}: {answers:?}");
    }
}

#[test]
fn postgres_instances_starting_together_migrate_once() {
    let Some(options) = pg::fresh() else { return };
    let stores: Vec<PostgresStore> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let options = options.clone();
                scope.spawn(move || PostgresStore::open(options).unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Each sees the others' records: one schema.
    assert_eq!(
        stores[0].begin("k", "fp", 0, STALE).unwrap(),
        Begin::Started
    );
    assert_eq!(
        stores[1].begin("k", "fp", 0, STALE).unwrap(),
        Begin::InFlight
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let versions: Vec<i32> = runtime.block_on(async {
        let (client, conn) = options.config.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client
            .query(
                "SELECT version FROM schema_migrations ORDER BY version",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    });
    assert_eq!(versions, vec![1, 2, 3]);
}

#[test]
fn postgres_connection_errors_say_why_and_never_show_the_password() {
    let Some(url) = pg::url() else { return };
    let mut options = payproxy::store::PostgresOptions::from_url(&url).unwrap();
    options.config.user("nosuchuser").password("topsecret-pw");
    let error = PostgresStore::open(options).unwrap_err().to_string();
    assert!(error.contains("nosuchuser"), "{error}");
    assert!(!error.contains("topsecret-pw"), "{error}");
}

#[test]
fn postgres_claims_handed_back_on_drop_are_not_renewed_after() {
    let Some(options) = pg::fresh() else { return };
    // A 600 ms lease is renewed every 200 ms. Another transaction holds the claimed row
    // locked while the store is dropped, so the hand-back waits on the lock and the
    // renewals that fall due meanwhile queue behind it. When the lock goes, the hand-back
    // must stay: a renewal applied after it would arm the lease again, and the next process
    // would wait for it (InFlight) or see it lapse (LeaseExpired) instead of resuming at once.
    let s = pg::with_lease(options.clone(), 600);
    assert_eq!(s.begin("k", "fp", 0, STALE).unwrap(), Begin::Started);
    s.note_attempt("k", &attempt("stripe")).unwrap();
    let holder = pg::lock_row(&options, "k", Duration::from_millis(700));
    drop(s);
    holder.join().unwrap();
    let s = pg::with_lease(options, 600);
    assert_eq!(
        s.begin("k", "fp", 1, STALE).unwrap(),
        Begin::Resume {
            attempt: Some(attempt("stripe")),
            reason: Takeover::PreviousProcess
        }
    );
}
