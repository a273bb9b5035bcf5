//! Durable state: storefront idempotency records, provider affinity (payment owners) and
//! payment records, kept for a bounded time.
//!
//! # Idempotency (Stripe semantics)
//!
//! A storefront request carrying an `Idempotency-Key` is run at most once. [`Store::begin`] looks
//! the key up and, in one atomic step, either claims it or says why not:
//!
//! - no record, or a finished one past its TTL → an in-flight record (fingerprint, start time,
//!   holder) is written and the caller executes ([`Begin::Started`]);
//! - a record whose request fingerprint differs → [`Begin::Mismatch`], answered like Stripe's
//!   `400 idempotency_error` (checked first, whatever state the record is in: a key is bound to
//!   one request for its whole life);
//! - a finished record → [`Begin::Replay`] of the stored response, byte for byte;
//! - an in-flight record this store instance holds, younger than `stale_after_ms` →
//!   [`Begin::InFlight`], answered `409`: its request may still be running;
//! - any other in-flight record is taken over ([`Begin::Resume`], with the [`Takeover`] reason):
//!   one held by an earlier incarnation of the store (a process that stopped: a durable store
//!   is opened by one process at a time, so another holder cannot be running), one parked by
//!   [`Store::park`], or one of this instance's own past `stale_after_ms` (a safety net for a
//!   request that never settled). The takeover holds the record again and restarts its clock,
//!   so a second retry arriving right after sees `InFlight`, not a second takeover.
//!
//! Each store instance has its own random incarnation id, written into the records it claims;
//! callers never pass it. A store shared by several live processes ([`PostgresStore`]) cannot
//! use this rule as is: there, another holder may be alive, so its claims carry a lease and a
//! fencing token. A record another instance holds is [`Begin::InFlight`] while that lease is
//! renewed, and is taken over ([`Takeover::LeaseExpired`]) once it lapsed; the instance that
//! lost it can write nothing more for the key ([`StoreError::Fenced`]).
//!
//! # Never charged twice
//!
//! The rule that makes a takeover safe, on one instance or several: an attempt is journaled
//! (durably, and on a shared store only while the claim is still this request's) *before* it
//! is sent, and a takeover resends the journaled attempt to the same provider with the same
//! provider idempotency key. Whatever a stalled or dead holder had sent, the provider sees
//! one idempotency key and charges once; whatever it had not sent yet, it can no longer
//! journal, so it never sends it (the payment path refuses to send after a failed
//! `note_attempt`).
//!
//! While executing, the caller journals each provider attempt with [`Store::note_attempt`]
//! *before* the request leaves, and `Resume` hands the last one back: after a crash the payment
//! may already be charged at that provider, so the resumed request must go to the same provider
//! with the same provider idempotency key, never to a new one. The request ends with
//! [`Store::finish`] (response stored before the storefront sees it, kept for a TTL), with
//! [`Store::release`] when nothing can have been charged (the key may be retried as new), or
//! with [`Store::park`] when the outcome is unknown (the record stays in flight with its
//! attempt, and the storefront's retry resumes it at once).
//!
//! # Affinity
//!
//! [`Store::set_owner`] maps a storefront-visible payment id to the provider that owns it, so
//! follow-ups (capture, refund, void, status) go there. The store stamps each owner with the
//! time it was written (its own clock).
//!
//! # Payment records
//!
//! [`Store::put_payment`] keeps what a payment route knows of each payment ([`PaymentEntry`]:
//! the canonical payment, its state, owner and amounts), [`Store::payment`] reads it back for
//! follow-ups, and [`Store::list_payments`] pages through a route's payments newest first.
//!
//! # Bounded state
//!
//! [`Store::purge_expired`] deletes, in one short step of at most `limit` records, oldest
//! first: finished idempotency records past their TTL, payment records (with their list entry)
//! created more than a retention ago, and owners written more than that retention ago. In-flight
//! idempotency records are never purged: they are the only evidence of a possibly charged,
//! unanswered payment. Each store keeps a purge index (due time, key) per table, so a call reads
//! only what is due instead of scanning. The proxy runs it from a background task (`sweeper`).
//! Once a payment and its owner are purged, follow-ups naming it go to the home provider, like
//! any id payproxy has never seen: the retention must cover the merchant's refund and dispute
//! windows.
//!
//! # Implementations
//!
//! [`RedbStore`] is the embedded default: every write is one redb transaction committed with
//! `Durability::Immediate` (fsync), so a `kill -9` loses nothing a call returned `Ok` for, and
//! write transactions are serialized, which makes `begin` atomic across threads. A redb file
//! is not compacted, but pages freed by a purge are reused (and a free tail trimmed), so under
//! steady traffic it stops growing. [`MemoryStore`] has the same semantics without
//! durability, for tests. Both share the decision logic in `record` and `purge`.
//!
//! [`PostgresStore`] (`state.kind: "postgres"`) is shared by several instances: claims are
//! an atomic `INSERT … ON CONFLICT` or a row read `FOR UPDATE`, each with a lease (on the
//! database's clock) and a fencing token; payment records, owners and journaled attempts are
//! rows every instance reads; a page of `list_payments` is one indexed range query; the
//! sweeper purges it like the others (any instance may run it; concurrent purges skip each
//! other's rows). Not Redis: asynchronous replication loses acknowledged writes on failover,
//! which is how duplicate charges happen.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod memory;
pub mod notices;
mod outbox;
mod payments;
mod postgres;
mod purge;
mod record;
mod redb_store;
pub(crate) mod sweeper;
mod writer;

use crate::plugin::storefront::ListQuery;
pub use memory::MemoryStore;
pub use notices::HeldNotice;
pub use outbox::{Attempted, EventCounts, EventKey, EventState, NewEvent, OutboxEvent};
pub use payments::{LateCharge, Page, PassedOver, PaymentEntry, NOTICES_KEPT};
pub use postgres::{PostgresOptions, PostgresStore};
pub use purge::Purged;
pub use redb_store::RedbStore;
pub use writer::{deliver_answers_here, Writer};

/// A response as the storefront saw it, kept for replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredResponse {
    /// HTTP status code.
    pub status: u16,
    /// Response headers in order (end-to-end headers only; the caller filters).
    pub headers: Vec<(String, String)>,
    /// Response body. Stored as a JSON string when it is UTF-8, as a byte array otherwise.
    #[serde(with = "record::body")]
    pub body: Vec<u8>,
}

/// The provider that owns a payment, and the payment's reference there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Provider name (as in the config).
    pub provider: String,
    /// The provider's own id for the payment.
    pub reference: String,
    /// Currency of the payment, for follow-ups whose protocol omits it (Stripe captures).
    pub currency: Option<String>,
}

/// One provider attempt, journaled before it is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// Provider name (as in the config).
    pub provider: String,
    /// The idempotency key sent to that provider.
    pub provider_key: String,
}

/// What `begin` found for an idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub enum Begin {
    /// No record (or an expired one): a new in-flight record was written; the caller executes.
    Started,
    /// A finished record with the same fingerprint: replay this response.
    Replay(StoredResponse),
    /// A record with a different fingerprint (same key, different request): refuse (Stripe: 400
    /// idempotency_error).
    Mismatch,
    /// Another request with this key is executing now: on this store instance, started less
    /// than `stale_after_ms` ago; on another instance sharing the store, holding a live
    /// lease. Refuse (409).
    InFlight,
    /// An in-flight record nobody is executing (see [`Takeover`]): the caller takes it over.
    /// `attempt` is the last attempt journaled for it, if any (provider + provider idempotency
    /// key), so the caller resends to the SAME provider with the SAME provider key instead of
    /// trying a new one.
    Resume {
        /// The last journaled attempt, if one was sent (or about to be) before it stopped.
        attempt: Option<Attempt>,
        /// Why nobody is executing it.
        reason: Takeover,
    },
}

/// Why an in-flight record could be taken over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takeover {
    /// Its request ended with the outcome unknown and parked it ([`Store::park`]).
    Parked,
    /// An earlier process held it (another store incarnation, or a record from before
    /// holders were recorded): that process stopped mid-request.
    PreviousProcess,
    /// This process held it past `stale_after_ms` without settling it.
    PastDeadline,
    /// Another live-or-not instance sharing the store (PostgreSQL) held it, and its lease
    /// lapsed without renewal: that instance stopped, stalled or lost the database.
    LeaseExpired,
}

/// A store failure. None of these means "the key is free": callers must fail the request.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The blocking task running a store call failed (panicked or was cancelled).
    #[error("store call failed: {0}")]
    Task(String),
    /// The settle that was to make a batch of calls durable failed (its flush or commit
    /// failed, or a write of the batch failed halfway): none of them is acknowledged (after a
    /// failed flush, a write may or may not have reached the disk).
    #[error("store: flushing to disk failed: {0}")]
    Flush(String),
    /// The directory for the database file could not be created.
    #[error("store {path}: cannot create directory: {source}", path = path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The database file could not be opened or created.
    #[error("store {path}: cannot open: {source}", path = path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// redb's reason.
        source: Box<redb::Error>,
    },
    /// A database operation failed (I/O, full disk, corruption detected).
    #[error("store: {op} {key:?}: {source}")]
    Db {
        /// The store operation (`begin`, `finish`, …).
        op: &'static str,
        /// The idempotency key or payment id.
        key: String,
        /// redb's reason.
        source: Box<redb::Error>,
    },
    /// A stored value is not a record this version understands.
    #[error("store: {table} {key:?}: undecodable record: {source}")]
    Decode {
        /// `idempotency` or `owners`.
        table: &'static str,
        /// The idempotency key or payment id.
        key: String,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// A value could not be encoded.
    #[error("store: {table} {key:?}: cannot encode record: {source}")]
    Encode {
        /// `idempotency` or `owners`.
        table: &'static str,
        /// The idempotency key or payment id.
        key: String,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// `note_attempt`, `finish` or `park` for a key that has no in-flight record (never begun,
    /// released, or already finished): the caller lost its claim on the key.
    #[error("store: {op} {key:?}: no in-flight record ({found})")]
    NotInFlight {
        /// `note_attempt`, `finish` or `park`.
        op: &'static str,
        /// The idempotency key.
        key: String,
        /// What was there instead: `absent` or `finished`.
        found: &'static str,
    },
    /// A write by a request whose claim on `key` was taken over by another request (its lease
    /// lapsed while it stalled): this request lost the claim and must not send anything more.
    #[error("store: {op} {key:?}: claim lost to a takeover (fenced)")]
    Fenced {
        /// `note_attempt`, `finish`, `park` or `release`.
        op: &'static str,
        /// The idempotency key.
        key: String,
    },
    /// The PostgreSQL store's settings are unusable (the URL is never part of the message).
    #[error("state.postgres.{field}: {message}")]
    PostgresConfig {
        /// The field under `state.postgres`.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A PostgreSQL call failed (connection refused or lost, timeout, server error). The
    /// database may or may not have applied a write whose answer was lost; callers fail the
    /// request, which is what a retry is for.
    #[error("store: {op} {key:?}: postgres: {reason}")]
    Postgres {
        /// The store operation.
        op: &'static str,
        /// The idempotency key or payment id.
        key: String,
        /// The driver's or the server's reason (never the connection URL).
        reason: String,
    },
}

/// The key of payment `id`'s operation lock: an in-flight record like an idempotency
/// record (`begin`, `note_attempt`, `park`, `release`), so instances sharing a store take
/// turns on a payment, a lock whose holder stopped is taken over (with the attempt it
/// journaled), and a stalled holder's writes are fenced. Idempotency record keys are
/// `route \0 key`, and an HTTP header value (the key) never holds a NUL, so the two
/// never meet.
pub fn payment_lock_key(id: &str) -> String {
    format!("\u{0}payment\u{0}{id}")
}

/// The claim a payment-record write is fenced by ([`Store::put_payment_fenced`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence<'a> {
    /// The payment's operation lock (its key, [`payment_lock_key`]): the write also drops
    /// the attempt journaled on it.
    Lock(&'a str),
    /// The request's idempotency claim (its key): only checked; its journaled attempt stays
    /// for the retry that would resume it.
    Claim(&'a str),
}

/// Durable state behind the proxy. Every call is short and synchronous (one transaction); async
/// callers may call it directly or through `spawn_blocking`, never holding it across an await.
pub trait Store: Send + Sync + 'static {
    /// Atomically: look up `key`; if absent/expired write an in-flight record (fingerprint, now)
    /// and return Started. See [`Begin`] for the other answers.
    fn begin(
        &self,
        key: &str,
        fingerprint: &str,
        now_ms: u64,
        stale_after_ms: u64,
    ) -> Result<Begin, StoreError>;
    /// Journal the attempt about to be sent (durable BEFORE the request goes out). Fails with
    /// [`StoreError::NotInFlight`] unless `key` is in flight.
    fn note_attempt(&self, key: &str, attempt: &Attempt) -> Result<(), StoreError>;
    /// Store the final response for `key` (durable before the storefront sees it); keeps it for
    /// `ttl_ms`. Fails with [`StoreError::NotInFlight`] unless `key` is in flight.
    fn finish(
        &self,
        key: &str,
        response: &StoredResponse,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<(), StoreError>;
    /// Drop the in-flight record (nothing was charged: the request may be retried as new).
    /// A finished record is kept (its response must still replay); an absent key is fine.
    fn release(&self, key: &str) -> Result<(), StoreError>;
    /// Keep the in-flight record, with its journaled attempt, but held by nobody: its request
    /// ended with the outcome unknown, and the next request with the key resumes it at once.
    /// Fails with [`StoreError::NotInFlight`] unless `key` is in flight.
    fn park(&self, key: &str) -> Result<(), StoreError>;
    /// Who owns `payment_id`, if known.
    fn owner(&self, payment_id: &str) -> Result<Option<Owner>, StoreError>;
    /// Remember (or replace) who owns `payment_id`, stamped with the time of writing.
    fn set_owner(&self, payment_id: &str, owner: &Owner) -> Result<(), StoreError>;
    /// Delete at most `limit` records that are due, oldest first, in one short step: finished
    /// idempotency records expired at `now_ms`, payment records created and owners written at
    /// or before `now_ms - retention_ms`. Never an in-flight idempotency record. Call again
    /// while [`Purged::more`] says the limit was reached.
    fn purge_expired(
        &self,
        now_ms: u64,
        retention_ms: u64,
        limit: usize,
    ) -> Result<Purged, StoreError>;
    /// The payment record with storefront-visible id `id`, if payproxy has one.
    fn payment(&self, id: &str) -> Result<Option<PaymentEntry>, StoreError>;
    /// Write (or replace) a payment record. Its creation time must not change once written.
    /// `events` (the storefront events of this change, see `outbox`) are written to the
    /// outbox in the same transaction; one already there (same key) is left as it is.
    fn put_payment(&self, entry: &PaymentEntry, events: &[NewEvent]) -> Result<(), StoreError>;
    /// [`put_payment`](Store::put_payment) by the holder of `fence`, a claim this store
    /// holds, atomically with a check that it still does: fails with
    /// [`StoreError::Fenced`] otherwise (another instance took it over, or this store gave
    /// up renewing it), so a stalled instance never overwrites what the one that took over
    /// recorded, nor emits its events. Under the payment's lock the write also drops the
    /// attempt journaled on the lock (its outcome is what this record says). On one process
    /// (redb, memory) nobody else can take a held claim: a plain `put_payment`.
    fn put_payment_fenced(
        &self,
        fence: Fence<'_>,
        entry: &PaymentEntry,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let _ = fence;
        self.put_payment(entry, events)
    }
    /// The id of the payment under `key` in the provider-reference index
    /// ([`PaymentEntry::reference_keys`]: [`notices::reference_key`] for the payment a
    /// provider owns, [`notices::passed_over_key`] for one it was passed over for), if any.
    /// The index is written with the payment record and purged with it.
    fn payment_by_reference(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Keep a notification whose payment is not known yet; one already held under the same
    /// key is left as it is (its first arrival time counts).
    fn hold_notice(&self, notice: &HeldNotice) -> Result<(), StoreError>;
    /// Up to `limit` held notifications, oldest first.
    fn held_notices(&self, limit: usize) -> Result<Vec<HeldNotice>, StoreError>;
    /// Forget a held notification (applied, or reported after waiting too long).
    fn drop_notice(&self, key: &str) -> Result<(), StoreError>;
    /// A page of `route`'s payments, newest first, and whether more match beyond it.
    fn list_payments(&self, route: &str, query: &ListQuery) -> Result<Page, StoreError>;

    /// Whether a call may wait on the disk or the network, so async callers run it on the
    /// blocking pool. A store whose every call is a short in-memory step says `false`, and
    /// the request path calls it in place (a blocking-pool round trip costs more than the
    /// call).
    fn blocks(&self) -> bool {
        true
    }

    /// The store's own writer thread, when it has one: async callers hand it their calls
    /// instead of the blocking pool, and it answers them in batches, each once it is durable
    /// ([`Writer`]).
    fn writer(&self) -> Option<&Writer> {
        None
    }

    /// The sequence number the next event of `payment_id` gets (0 for its first).
    fn next_event_seq(&self, payment_id: &str) -> Result<u64, StoreError>;
    /// Claim up to `limit` events due at `now_ms` for delivery, leased until
    /// `now_ms + lease_ms`: only the oldest pending event of each (payment, endpoint), so
    /// delivery stays in order per payment; never one under another live lease.
    fn claim_events(
        &self,
        now_ms: u64,
        lease_ms: u64,
        limit: usize,
    ) -> Result<Vec<OutboxEvent>, StoreError>;
    /// Record a delivery attempt of a claimed event: delivered, rescheduled or given up.
    /// An event no longer pending is left as it is.
    fn event_attempted(&self, key: &EventKey, outcome: &Attempted) -> Result<(), StoreError>;
    /// Up to `limit` undelivered events in `state` (pending or failed), in key order.
    fn list_events(&self, state: EventState, limit: usize) -> Result<Vec<OutboxEvent>, StoreError>;
    /// Queue event `id` again at `now_ms` (each endpoint's row that is not pending); how many
    /// rows were queued.
    fn redeliver_event(&self, id: &str, now_ms: u64) -> Result<usize, StoreError>;
    /// Undelivered events per route.
    fn event_counts(&self) -> Result<EventCounts, StoreError>;
    /// Delete at most `limit` events delivered at or before `delivered_before_ms`, oldest
    /// first; each payment's last event row is kept (it carries the payment's sequence).
    /// Failed and pending events are never deleted. Returns how many were.
    fn purge_events(&self, delivered_before_ms: u64, limit: usize) -> Result<usize, StoreError>;
}
