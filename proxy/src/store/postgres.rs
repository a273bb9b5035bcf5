//! The shared store, on PostgreSQL: several payproxy instances keep their idempotency
//! records, payment records and owners in one database (strongly consistent, transactional).
//!
//! # Claims across instances
//!
//! `begin` claims a key with `INSERT … ON CONFLICT DO NOTHING`, or, when a row exists, reads
//! it `FOR UPDATE` and decides ([`decide`]) inside the same transaction, so two instances
//! racing for a key serialize on its row. A claim writes the holder (this store's instance
//! id), a lease (`lease_until`, on the database's clock, so instances' clocks never matter)
//! and a fencing token drawn from a sequence (never reused, not even after a release deleted
//! the row). The store remembers the tokens it holds; `note_attempt`, `finish`, `park` and
//! `release` write only `WHERE key = $1 AND token = $2` and fail with
//! [`StoreError::Fenced`] when another instance took the key over. A background task renews
//! the leases of the keys this store holds, in one `UPDATE`, every third of the lease.
//!
//! A record in flight on another instance is [`Begin::InFlight`] while its lease lives,
//! and is taken over ([`Takeover::LeaseExpired`]) once it lapsed; one whose holder stopped
//! cleanly (its store was dropped and handed its claims back) is taken over at once
//! ([`Takeover::PreviousProcess`]).
//!
//! # Why this never charges twice
//!
//! A stalled instance (paused VM or process, partition) may come back after another took
//! its payment over. Either it had journaled its attempt (`note_attempt` commits before the
//! request leaves), and the takeover resends to that provider with that provider
//! idempotency key, so the provider answers both with the one charge; or it had not, and its
//! own `note_attempt` is now fenced, so it sends nothing. Its late `finish` is fenced too:
//! the answer stored is the takeover's.
//!
//! # The bridge
//!
//! The [`Store`] trait is synchronous. Each call runs its future on this store's own small
//! tokio runtime and waits for the result on a channel, so it works from any thread — a
//! `spawn_blocking` thread (how the proxy calls it), a plain thread, even an async worker
//! (which it would block, like any store call, but never panics).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::types::ToSql;

use super::outbox::{Attempted, EventCounts, EventKey, EventState, NewEvent, OutboxEvent};
use super::payments::{Page, PaymentEntry, PAYMENTS};
use super::purge::{self, Cutoffs, Purged, StoredOwner};
use super::record::{self, IDEMPOTENCY, OWNERS};
use super::{notices, Attempt, Begin, Fence, HeldNotice, Owner, Store, StoreError, StoredResponse};
use crate::plugin::storefront::ListQuery;

mod claim;
mod connect;
mod list;
mod outbox;
mod schema;

pub use connect::PostgresOptions;

use claim::{Decision, Found, Lease};

/// A key this store holds: its fencing token, and until when its lease is renewed.
#[derive(Debug, Clone, Copy)]
struct Held {
    token: i64,
    /// The lease is renewed only until then (the `stale_after_ms` given to `begin`): a
    /// request that never settles stops holding its key, as `PastDeadline` does on one
    /// instance.
    renew_until: Instant,
}

type HeldKeys = Arc<Mutex<HashMap<String, Held>>>;

fn lock(held: &Mutex<HashMap<String, Held>>) -> MutexGuard<'_, HashMap<String, Held>> {
    // Every critical section leaves the map consistent: a poisoned lock is safe to use.
    held.lock().unwrap_or_else(|p| p.into_inner())
}

/// A [`Store`] in a PostgreSQL database shared by several instances.
pub struct PostgresStore {
    /// Owned so dropping the store stops its tasks; `None` only during drop.
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    /// This store's id in the records it holds (random per process).
    instance: String,
    lease: Duration,
    held: HeldKeys,
    options: PostgresOptions,
    /// Longest a store call may take (pool wait + queries).
    call_timeout: Duration,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("instance", &self.instance)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Attaches the operation and key to a driver or pool error.
pub(super) fn pg<'a, E: std::error::Error>(
    op: &'static str,
    key: &'a str,
) -> impl FnOnce(E) -> StoreError + 'a {
    move |e| {
        // The pool's and the driver's errors wrap the cause ("connection refused", the
        // server's message): keep the whole chain. None of them carries the URL.
        let mut reason = e.to_string();
        let mut source = e.source();
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !reason.contains(&cause_text) {
                reason = format!("{reason}: {cause_text}");
            }
            source = cause.source();
        }
        StoreError::Postgres {
            op,
            key: key.to_string(),
            reason,
        }
    }
}

/// Writes a payment record; the creation time (and so the list key) of a known payment
/// never changes.
const UPSERT_PAYMENT: &str = "INSERT INTO payments (id, list_key, customer, created_ms, entry)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (id) DO UPDATE SET list_key = EXCLUDED.list_key,
         customer = EXCLUDED.customer, created_ms = EXCLUDED.created_ms,
         entry = EXCLUDED.entry";

/// Rewrites a payment's keys in the provider-reference index (`$1` payment id, `$2` its
/// keys, `$3` its creation time); a key another payment has is taken over.
const INDEX_REFERENCES: &str = "WITH gone AS (
         DELETE FROM payment_references WHERE payment_id = $1 AND NOT (key = ANY($2)))
     INSERT INTO payment_references (key, payment_id, created_ms)
     SELECT k, $1, $3 FROM unnest($2::bytea[]) AS k
     ON CONFLICT (key) DO UPDATE SET payment_id = EXCLUDED.payment_id,
         created_ms = EXCLUDED.created_ms";

/// A payment record as its row, with the outbox events written beside it.
struct PaymentRow {
    id: String,
    list_key: Vec<u8>,
    customer: Option<Vec<u8>>,
    created: i64,
    entry: Vec<u8>,
    references: Vec<Vec<u8>>,
    events: Vec<NewEvent>,
}

impl PaymentRow {
    fn new(entry: &PaymentEntry, events: &[NewEvent]) -> Result<Self, StoreError> {
        let id = entry.record.id.clone();
        Ok(Self {
            entry: record::encode(PAYMENTS, &id, entry)?,
            id,
            list_key: entry.index_key().into_bytes(),
            customer: (entry.record.payment.customer.id.as_ref()).map(|c| c.as_bytes().to_vec()),
            created: ms(entry.created_ms),
            references: entry
                .reference_keys()
                .into_iter()
                .map(String::into_bytes)
                .collect(),
            events: events.to_vec(),
        })
    }

    /// Upsert the record and insert its events, in `txn`.
    async fn write(&self, txn: &deadpool_postgres::Transaction<'_>) -> Result<(), StoreError> {
        let id = self.id.as_bytes();
        let params: [&(dyn ToSql + Sync); 5] = [
            &id,
            &self.list_key,
            &self.customer,
            &self.created,
            &self.entry,
        ];
        txn.execute(UPSERT_PAYMENT, &params)
            .await
            .map_err(pg("put_payment", &self.id))?;
        txn.execute(INDEX_REFERENCES, &[&id, &self.references, &self.created])
            .await
            .map_err(pg("put_payment", &self.id))?;
        outbox::insert(txn, &self.events).await
    }
}

/// Milliseconds as the database stores them (bigint); beyond i64 saturates.
fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn unms(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// How many leases past its renewal deadline a claim's token is kept (see `spawn_renewal`).
const FORGET_AFTER_LEASES: u32 = 30;

impl PostgresStore {
    /// Connects, creates or migrates the schema (under an advisory lock, so instances
    /// starting together do not race), and starts renewing leases.
    pub fn open(options: PostgresOptions) -> Result<PostgresStore, StoreError> {
        let pool = connect::pool(&options)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("payproxy-postgres")
            .enable_all()
            .build()
            .map_err(pg("open", ""))?;
        let store = PostgresStore {
            runtime: Some(runtime),
            pool,
            instance: format!("{:016x}", record::incarnation()),
            lease: options.lease,
            held: HeldKeys::default(),
            call_timeout: options.connect_timeout.saturating_mul(2),
            options,
        };
        let pool = store.pool.clone();
        store.run("migrate", "", async move {
            let mut client = pool.get().await.map_err(pg("migrate", ""))?;
            schema::migrate(&mut client).await
        })?;
        store.spawn_renewal();
        Ok(store)
    }

    /// This store's instance id (written as the holder of its claims).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The options it was opened with (to open it again, in tests of restarts).
    pub fn options(&self) -> &PostgresOptions {
        &self.options
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        // Only `drop` takes it.
        self.runtime.as_ref().expect("runtime present until drop")
    }

    /// Runs `fut` on the store's runtime and waits for it (see the module docs), at most
    /// the call timeout.
    fn run<T: Send + 'static>(
        &self,
        op: &'static str,
        key: &str,
        fut: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let timeout = self.call_timeout;
        self.runtime().spawn(async move {
            let out = match tokio::time::timeout(timeout, fut).await {
                Ok(out) => out,
                Err(_) => Err(StoreError::Postgres {
                    op,
                    key: String::new(),
                    reason: format!("no answer within {timeout:?}"),
                }),
            };
            let _ = tx.send(out);
        });
        match rx.recv() {
            Ok(Err(StoreError::Postgres { op, reason, .. })) => Err(StoreError::Postgres {
                op,
                key: key.to_string(),
                reason,
            }),
            Ok(out) => out,
            Err(_) => Err(StoreError::Task("postgres store task ended".into())),
        }
    }

    /// Renews the leases of held keys every third of the lease, in one statement.
    fn spawn_renewal(&self) {
        let (pool, held, instance) = (self.pool.clone(), self.held.clone(), self.instance.clone());
        let lease = self.lease;
        self.runtime().spawn(async move {
            let mut ticks = tokio::time::interval(lease / 3);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let (keys, tokens): (Vec<Vec<u8>>, Vec<i64>) = {
                    let now = Instant::now();
                    let mut held = lock(&held);
                    // Past its renewal deadline a claim is no longer renewed, so it lapses and
                    // may be taken over; its token is kept a while longer, so a late write of
                    // its request is judged by the database (refused if taken over, done if
                    // not) rather than refused blind. Forgotten after that: a request that
                    // never handed its claim back does not hold memory forever.
                    held.retain(|_, h| h.renew_until + lease * FORGET_AFTER_LEASES > now);
                    held.iter()
                        .filter(|(_, h)| h.renew_until > now)
                        .map(|(k, h)| (k.as_bytes().to_vec(), h.token))
                        .unzip()
                };
                if keys.is_empty() {
                    continue;
                }
                // Bounded: a renewal stuck on a dead connection must not hold up the next.
                let renewal = renew(&pool, &instance, lease, &keys, &tokens);
                match tokio::time::timeout(lease / 3, renewal).await {
                    Ok(Ok(_)) => {}
                    // The next tick tries again; a lease that lapses meanwhile is taken
                    // over, and this instance's late writes are fenced.
                    Ok(Err(error)) => tracing::warn!(%error, "could not renew postgres claims"),
                    Err(_) => tracing::warn!("postgres claim renewal timed out; retrying"),
                }
            }
        });
    }

    /// The fencing token this store holds for `key`, if it holds it.
    fn token(&self, key: &str) -> Option<i64> {
        lock(&self.held).get(key).map(|h| h.token)
    }

    /// A write on an in-flight record this store holds: `statement` with `$1` = key and
    /// `$2` = token; `more` are `$3…`. Zero rows under a token this store held: another
    /// instance took the key over (`Fenced`, whatever it did with it since). Without a
    /// token: the record is absent or finished (`NotInFlight`), or held by another
    /// instance (`Fenced`).
    fn fenced_write(
        &self,
        op: &'static str,
        key: &str,
        statement: &'static str,
        more: Vec<Box<dyn ToSql + Sync + Send>>,
        forget: bool,
    ) -> Result<(), StoreError> {
        let token = self.token(key);
        let pool = self.pool.clone();
        let k = key.to_string();
        let written = self.run(op, key, async move {
            let client = pool.get().await.map_err(pg(op, &k))?;
            let written = match token {
                Some(token) => {
                    let kb = k.as_bytes();
                    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&kb, &token];
                    params.extend(more.iter().map(|p| &**p as &(dyn ToSql + Sync)));
                    client
                        .execute(statement, &params)
                        .await
                        .map_err(pg(op, &k))?
                        == 1
                }
                None => false,
            };
            if written {
                return Ok(None);
            }
            if token.is_some() {
                // Held until now and written by nobody else of this store: another
                // instance took it over (and may have settled or released it since).
                return Ok(Some(Some("taken over".to_string())));
            }
            let row = client
                .query_opt(
                    "SELECT state FROM idempotency WHERE key = $1",
                    &[&k.as_bytes()],
                )
                .await
                .map_err(pg(op, &k))?;
            Ok(Some(row.map(|r| r.get::<_, String>(0))))
        })?;
        if forget || written.is_some() {
            lock(&self.held).remove(key);
        }
        match written {
            None => Ok(()),
            Some(None) => Err(not_in_flight(op, key, "absent")),
            Some(Some(state)) if state == "finished" => Err(not_in_flight(op, key, "finished")),
            Some(Some(_)) => Err(StoreError::Fenced {
                op,
                key: key.to_string(),
            }),
        }
    }
}

fn not_in_flight(op: &'static str, key: &str, found: &'static str) -> StoreError {
    StoreError::NotInFlight {
        op,
        key: key.to_string(),
        found,
    }
}

async fn renew(
    pool: &Pool,
    instance: &str,
    lease: Duration,
    keys: &[Vec<u8>],
    tokens: &[i64],
) -> Result<u64, StoreError> {
    let client = pool.get().await.map_err(pg("renew", ""))?;
    let lease_ms = ms(lease.as_millis() as u64);
    // Never a lease handed back (`lease_until` NULL, by `drop`): a renewal that reaches the
    // database after the hand-back would arm it again, and the next process would wait a
    // whole lease for claims it should resume at once.
    client
        .execute(
            "UPDATE idempotency AS i
                SET lease_until = clock_timestamp() + $4::bigint * interval '1 millisecond'
               FROM unnest($1::bytea[], $2::bigint[]) AS h(key, token)
              WHERE i.key = h.key AND i.token = h.token AND i.holder = $3
                AND i.state = 'in_flight' AND i.lease_until IS NOT NULL",
            &[&keys, &tokens, &instance, &lease_ms],
        )
        .await
        .map_err(pg("renew", ""))
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Hand this instance's claims back: another instance resumes them at once instead
        // of waiting for their leases (a process killed outright cannot; its leases lapse).
        // Taken out of `held` first, so no renewal starts on them after; one already under
        // way may still reach the database after the hand-back, and `renew` leaves a lease
        // handed back alone.
        let keys: Vec<Vec<u8>> = std::mem::take(&mut *lock(&self.held))
            .into_keys()
            .map(String::into_bytes)
            .collect();
        if !keys.is_empty() {
            let (pool, instance) = (self.pool.clone(), self.instance.clone());
            let _ = self.run("drop", "", async move {
                let client = pool.get().await.map_err(pg("drop", ""))?;
                client
                    .execute(
                        "UPDATE idempotency SET lease_until = NULL
                          WHERE key = ANY($1) AND holder = $2 AND state = 'in_flight'",
                        &[&keys, &instance],
                    )
                    .await
                    .map_err(pg("drop", ""))
            });
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Store for PostgresStore {
    fn begin(
        &self,
        key: &str,
        fingerprint: &str,
        now_ms: u64,
        stale_after_ms: u64,
    ) -> Result<Begin, StoreError> {
        let (pool, k, fp) = (self.pool.clone(), key.to_string(), fingerprint.to_string());
        let (instance, lease_ms) = (self.instance.clone(), ms(self.lease.as_millis() as u64));
        let (answer, token) = self.run("begin", key, async move {
            let mut client = pool.get().await.map_err(pg("begin", &k))?;
            // A row deleted between the insert and the read (a release) is claimed again.
            for _ in 0..3 {
                let txn = client.transaction().await.map_err(pg("begin", &k))?;
                let inserted = txn
                    .query_opt(
                        "INSERT INTO idempotency
                             (key, fingerprint, state, holder, token, lease_until, started_ms)
                         VALUES ($1, $2, 'in_flight', $3, nextval('idempotency_token'),
                                 clock_timestamp() + $4::bigint * interval '1 millisecond', $5)
                         ON CONFLICT (key) DO NOTHING
                         RETURNING token",
                        &[&k.as_bytes(), &fp, &instance, &lease_ms, &ms(now_ms)],
                    )
                    .await
                    .map_err(pg("begin", &k))?;
                if let Some(row) = inserted {
                    txn.commit().await.map_err(pg("begin", &k))?;
                    return Ok((Begin::Started, Some(row.get::<_, i64>(0))));
                }
                let row = txn
                    .query_opt(
                        "SELECT fingerprint, state, holder, started_ms, attempt, response,
                                expires_ms,
                                CASE WHEN lease_until IS NULL THEN 0
                                     WHEN lease_until > clock_timestamp() THEN 1
                                     ELSE 2 END
                           FROM idempotency WHERE key = $1 FOR UPDATE",
                        &[&k.as_bytes()],
                    )
                    .await
                    .map_err(pg("begin", &k))?;
                let Some(row) = row else {
                    txn.rollback().await.map_err(pg("begin", &k))?;
                    continue;
                };
                let found = Found {
                    fingerprint: row.get(0),
                    finished: match row.get::<_, String>(1).as_str() {
                        "finished" => {
                            let response: StoredResponse = record::decode(
                                IDEMPOTENCY,
                                &k,
                                row.get::<_, Option<&[u8]>>(5).unwrap_or_default(),
                            )?;
                            Some((response, unms(row.get::<_, Option<i64>>(6).unwrap_or(0))))
                        }
                        _ => None,
                    },
                    holder: row.get(2),
                    started_ms: unms(row.get::<_, Option<i64>>(3).unwrap_or(0)),
                    attempt: match row.get::<_, Option<&[u8]>>(4) {
                        Some(bytes) => Some(record::decode(IDEMPOTENCY, &k, bytes)?),
                        None => None,
                    },
                    lease: match row.get::<_, i32>(7) {
                        0 => Lease::Dropped,
                        1 => Lease::Live,
                        _ => Lease::Lapsed,
                    },
                };
                let decision = claim::decide(found, &fp, now_ms, stale_after_ms, &instance);
                let (answer, attempt) = match decision {
                    Decision::Claim { answer, attempt } => (answer, attempt),
                    Decision::Answer(answer) => {
                        txn.rollback().await.map_err(pg("begin", &k))?;
                        return Ok((answer, None));
                    }
                };
                let attempt = match &attempt {
                    Some(a) => Some(record::encode(IDEMPOTENCY, &k, a)?),
                    None => None,
                };
                let row = txn
                    .query_one(
                        "UPDATE idempotency
                            SET fingerprint = $2, state = 'in_flight', holder = $3,
                                token = nextval('idempotency_token'),
                                lease_until = clock_timestamp() + $4::bigint * interval '1 millisecond',
                                started_ms = $5, attempt = $6, response = NULL,
                                expires_ms = NULL
                          WHERE key = $1
                          RETURNING token",
                        &[
                            &k.as_bytes(),
                            &fp,
                            &instance,
                            &lease_ms,
                            &ms(now_ms),
                            &attempt,
                        ],
                    )
                    .await
                    .map_err(pg("begin", &k))?;
                txn.commit().await.map_err(pg("begin", &k))?;
                return Ok((answer, Some(row.get::<_, i64>(0))));
            }
            Err(StoreError::Postgres {
                op: "begin",
                key: k.clone(),
                reason: "the record kept changing under the claim".into(),
            })
        })?;
        if let Some(token) = token {
            let renew_until = Instant::now() + Duration::from_millis(stale_after_ms);
            lock(&self.held).insert(key.to_string(), Held { token, renew_until });
        }
        Ok(answer)
    }

    fn note_attempt(&self, key: &str, attempt: &Attempt) -> Result<(), StoreError> {
        let bytes = record::encode(IDEMPOTENCY, key, attempt)?;
        self.fenced_write(
            "note_attempt",
            key,
            "UPDATE idempotency SET attempt = $3
              WHERE key = $1 AND token = $2 AND state = 'in_flight'",
            vec![Box::new(bytes)],
            false,
        )
    }

    fn finish(
        &self,
        key: &str,
        response: &StoredResponse,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        let bytes = record::encode(IDEMPOTENCY, key, response)?;
        self.fenced_write(
            "finish",
            key,
            "UPDATE idempotency
                SET state = 'finished', response = $3, expires_ms = $4, holder = NULL,
                    lease_until = NULL, attempt = NULL
              WHERE key = $1 AND token = $2 AND state = 'in_flight'",
            vec![Box::new(bytes), Box::new(ms(now_ms.saturating_add(ttl_ms)))],
            true,
        )
    }

    fn release(&self, key: &str) -> Result<(), StoreError> {
        match self.fenced_write(
            "release",
            key,
            "DELETE FROM idempotency WHERE key = $1 AND token = $2 AND state = 'in_flight'",
            Vec::new(),
            true,
        ) {
            // Absent or finished: nothing to release (a finished record keeps replaying).
            Err(StoreError::NotInFlight { .. }) => Ok(()),
            other => other,
        }
    }

    fn park(&self, key: &str) -> Result<(), StoreError> {
        self.fenced_write(
            "park",
            key,
            "UPDATE idempotency SET holder = NULL, lease_until = NULL
              WHERE key = $1 AND token = $2 AND state = 'in_flight'",
            Vec::new(),
            true,
        )
    }

    fn owner(&self, payment_id: &str) -> Result<Option<Owner>, StoreError> {
        let (pool, id) = (self.pool.clone(), payment_id.to_string());
        self.run("owner", payment_id, async move {
            let client = pool.get().await.map_err(pg("owner", &id))?;
            let row = client
                .query_opt(
                    "SELECT owner FROM owners WHERE payment_id = $1",
                    &[&id.as_bytes()],
                )
                .await
                .map_err(pg("owner", &id))?;
            match row {
                Some(row) => {
                    let stored: StoredOwner = record::decode(OWNERS, &id, row.get(0))?;
                    Ok(Some(stored.owner))
                }
                None => Ok(None),
            }
        })
    }

    fn set_owner(&self, payment_id: &str, owner: &Owner) -> Result<(), StoreError> {
        let written_ms = purge::wall_ms();
        let stored = StoredOwner {
            owner: owner.clone(),
            written_ms: Some(written_ms),
        };
        let bytes = record::encode(OWNERS, payment_id, &stored)?;
        let (pool, id) = (self.pool.clone(), payment_id.to_string());
        self.run("set_owner", payment_id, async move {
            let client = pool.get().await.map_err(pg("set_owner", &id))?;
            client
                .execute(
                    "INSERT INTO owners (payment_id, owner, written_ms) VALUES ($1, $2, $3)
                     ON CONFLICT (payment_id)
                     DO UPDATE SET owner = EXCLUDED.owner, written_ms = EXCLUDED.written_ms",
                    &[&id.as_bytes(), &bytes, &ms(written_ms)],
                )
                .await
                .map_err(pg("set_owner", &id))?;
            Ok(())
        })
    }

    fn purge_expired(
        &self,
        now_ms: u64,
        retention_ms: u64,
        limit: usize,
    ) -> Result<Purged, StoreError> {
        let cutoffs = Cutoffs::new(now_ms, retention_ms);
        let pool = self.pool.clone();
        self.run("purge_expired", "", async move {
            let mut client = pool.get().await.map_err(pg("purge_expired", ""))?;
            let txn = client
                .transaction()
                .await
                .map_err(pg("purge_expired", ""))?;
            let mut left = limit;
            // Oldest first per table, through the indexes on each stamp; rows another
            // instance's purge is deleting right now are skipped, not waited for.
            let mut delete = async |table: &str, stamp: &str, extra: &str, key: &str, cutoff| {
                if left == 0 {
                    return Ok(0);
                }
                let sql = format!(
                    "DELETE FROM {table} WHERE {key} IN (
                         SELECT {key} FROM {table} WHERE {extra} {stamp} <= $1
                          ORDER BY {stamp} LIMIT $2 FOR UPDATE SKIP LOCKED)"
                );
                let n = txn
                    .execute(&sql, &[&ms(cutoff), &ms(left as u64)])
                    .await
                    .map_err(pg("purge_expired", table))? as usize;
                left = left.saturating_sub(n);
                Ok::<usize, StoreError>(n)
            };
            let idempotency = delete(
                "idempotency",
                "expires_ms",
                "state = 'finished' AND",
                "key",
                cutoffs.idempotency,
            )
            .await?;
            let (payments, owners) = match cutoffs.retained {
                Some(cutoff) => {
                    let payments = delete(PAYMENTS, "created_ms", "", "id", cutoff).await?;
                    let owners = delete("owners", "written_ms", "", "payment_id", cutoff).await?;
                    // Not counted: at most a few per payment, purged alongside.
                    delete("payment_references", "created_ms", "", "key", cutoff).await?;
                    (payments, owners)
                }
                None => (0, 0),
            };
            let more = left == 0;
            txn.commit().await.map_err(pg("purge_expired", ""))?;
            Ok(Purged {
                idempotency,
                payments,
                owners,
                more,
            })
        })
    }

    fn payment(&self, id: &str) -> Result<Option<PaymentEntry>, StoreError> {
        let (pool, id_) = (self.pool.clone(), id.to_string());
        self.run("payment", id, async move {
            let client = pool.get().await.map_err(pg("payment", &id_))?;
            let row = client
                .query_opt(
                    "SELECT entry FROM payments WHERE id = $1",
                    &[&id_.as_bytes()],
                )
                .await
                .map_err(pg("payment", &id_))?;
            match row {
                Some(row) => Ok(Some(record::decode(PAYMENTS, &id_, row.get(0))?)),
                None => Ok(None),
            }
        })
    }

    fn put_payment(&self, entry: &PaymentEntry, events: &[NewEvent]) -> Result<(), StoreError> {
        let row = PaymentRow::new(entry, events)?;
        let pool = self.pool.clone();
        self.run("put_payment", &entry.record.id, async move {
            let mut client = pool.get().await.map_err(pg("put_payment", &row.id))?;
            // The record and its events in one transaction: an event is never lost or
            // written without its change.
            let txn = client
                .transaction()
                .await
                .map_err(pg("put_payment", &row.id))?;
            row.write(&txn).await?;
            txn.commit().await.map_err(pg("put_payment", &row.id))
        })
    }

    fn put_payment_fenced(
        &self,
        fence: Fence<'_>,
        entry: &PaymentEntry,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let (key, drop_attempt) = match fence {
            Fence::Lock(key) => (key.to_string(), true),
            Fence::Claim(key) => (key.to_string(), false),
        };
        // Without a token this store no longer holds the claim (fenced before, or it gave
        // up renewing it past its deadline): refused, never written unconditionally.
        let Some(token) = self.token(&key) else {
            return Err(StoreError::Fenced {
                op: "put_payment",
                key: entry.record.id.clone(),
            });
        };
        let row = PaymentRow::new(entry, events)?;
        let pool = self.pool.clone();
        let k = key.clone();
        let written = self.run("put_payment", &entry.record.id, async move {
            let id = &row.id;
            let mut client = pool.get().await.map_err(pg("put_payment", id))?;
            let txn = client.transaction().await.map_err(pg("put_payment", id))?;
            // Locks the claim's row: a takeover (which updates it) waits for this write,
            // then reads it.
            let held = txn
                .execute(
                    "UPDATE idempotency SET attempt = CASE WHEN $3 THEN NULL ELSE attempt END
                      WHERE key = $1 AND token = $2 AND state = 'in_flight'",
                    &[&k.as_bytes(), &token, &drop_attempt],
                )
                .await
                .map_err(pg("put_payment", id))?;
            if held != 1 {
                txn.rollback().await.map_err(pg("put_payment", id))?;
                return Ok(false);
            }
            row.write(&txn).await?;
            txn.commit().await.map_err(pg("put_payment", id))?;
            Ok(true)
        })?;
        if written {
            return Ok(());
        }
        lock(&self.held).remove(&key);
        Err(StoreError::Fenced {
            op: "put_payment",
            key: entry.record.id.clone(),
        })
    }

    fn payment_by_reference(&self, key: &str) -> Result<Option<String>, StoreError> {
        let op = "payment_by_reference";
        let (pool, key) = (self.pool.clone(), key.to_string());
        self.run(op, &key.clone(), async move {
            let client = pool.get().await.map_err(pg(op, &key))?;
            let row = client
                .query_opt(
                    "SELECT payment_id FROM payment_references WHERE key = $1",
                    &[&key.as_bytes()],
                )
                .await
                .map_err(pg(op, &key))?;
            Ok(row.map(|row| String::from_utf8_lossy(row.get::<_, &[u8]>(0)).into_owned()))
        })
    }

    fn hold_notice(&self, notice: &HeldNotice) -> Result<(), StoreError> {
        let op = "hold_notice";
        let bytes = record::encode(notices::HELD, &notice.key, notice)?;
        let (pool, key, received) = (
            self.pool.clone(),
            notice.key.clone(),
            ms(notice.received_ms),
        );
        self.run(op, &notice.key, async move {
            let client = pool.get().await.map_err(pg(op, &key))?;
            client
                .execute(
                    "INSERT INTO held_notices (key, received_ms, notice) VALUES ($1, $2, $3)
                     ON CONFLICT (key) DO NOTHING",
                    &[&key.as_bytes(), &received, &bytes],
                )
                .await
                .map_err(pg(op, &key))?;
            Ok(())
        })
    }

    fn held_notices(&self, limit: usize) -> Result<Vec<HeldNotice>, StoreError> {
        let op = "held_notices";
        let pool = self.pool.clone();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(op, "", async move {
            let client = pool.get().await.map_err(pg(op, ""))?;
            let rows = client
                .query(
                    "SELECT key, notice FROM held_notices ORDER BY received_ms, key LIMIT $1",
                    &[&limit],
                )
                .await
                .map_err(pg(op, ""))?;
            rows.iter()
                .map(|row| {
                    let key = String::from_utf8_lossy(row.get::<_, &[u8]>(0)).into_owned();
                    record::decode(notices::HELD, &key, row.get(1))
                })
                .collect()
        })
    }

    fn drop_notice(&self, key: &str) -> Result<(), StoreError> {
        let op = "drop_notice";
        let (pool, key_) = (self.pool.clone(), key.to_string());
        self.run(op, key, async move {
            let client = pool.get().await.map_err(pg(op, &key_))?;
            client
                .execute(
                    "DELETE FROM held_notices WHERE key = $1",
                    &[&key_.as_bytes()],
                )
                .await
                .map_err(pg(op, &key_))?;
            Ok(())
        })
    }

    fn list_payments(&self, route: &str, query: &ListQuery) -> Result<Page, StoreError> {
        let (pool, route_, query_) = (self.pool.clone(), route.to_string(), query.clone());
        self.run("list_payments", route, list::page(pool, route_, query_))
    }

    fn next_event_seq(&self, payment_id: &str) -> Result<u64, StoreError> {
        let fut = outbox::next_seq(self.pool.clone(), payment_id.to_string());
        self.run("next_event_seq", payment_id, fut)
    }

    fn claim_events(
        &self,
        now_ms: u64,
        lease_ms: u64,
        limit: usize,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        let holder = self.instance.clone();
        let fut = outbox::claim(self.pool.clone(), now_ms, lease_ms, limit, holder);
        self.run("claim_events", "", fut)
    }

    fn event_attempted(&self, key: &EventKey, outcome: &Attempted) -> Result<(), StoreError> {
        let fut = outbox::attempted(self.pool.clone(), key.clone(), outcome.clone());
        self.run("event_attempted", &key.payment_id, fut)
    }

    fn list_events(&self, state: EventState, limit: usize) -> Result<Vec<OutboxEvent>, StoreError> {
        let fut = outbox::list(self.pool.clone(), state, limit);
        self.run("list_events", "", fut)
    }

    fn redeliver_event(&self, id: &str, now_ms: u64) -> Result<usize, StoreError> {
        let fut = outbox::redeliver(self.pool.clone(), id.to_string(), now_ms);
        self.run("redeliver_event", id, fut)
    }

    fn event_counts(&self) -> Result<EventCounts, StoreError> {
        let fut = outbox::counts(self.pool.clone());
        self.run("event_counts", "", fut)
    }

    fn purge_events(&self, delivered_before_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let fut = outbox::purge(self.pool.clone(), delivered_before_ms, limit);
        self.run("purge_events", "", fut)
    }
}
