//! Durable state: storefront idempotency records and provider affinity (payment owners).
//!
//! # Idempotency (Stripe semantics)
//!
//! A storefront request carrying an `Idempotency-Key` is run at most once. [`Store::begin`] looks
//! the key up and, in one atomic step, either claims it or says why not:
//!
//! - no record, or a finished one past its TTL → an in-flight record (fingerprint, start time) is
//!   written and the caller executes ([`Begin::Started`]);
//! - a record whose request fingerprint differs → [`Begin::Mismatch`], answered like Stripe's
//!   `400 idempotency_error` (checked first, whatever state the record is in: a key is bound to
//!   one request for its whole life);
//! - a finished record → [`Begin::Replay`] of the stored response, byte for byte;
//! - an in-flight record younger than `stale_after_ms` → [`Begin::InFlight`], answered `409`;
//! - an in-flight record older than that → its proxy died mid-request and the caller takes it
//!   over ([`Begin::Resume`]). The takeover restarts the record's clock, so a second retry
//!   arriving right after sees `InFlight`, not a second takeover.
//!
//! While executing, the caller journals each provider attempt with [`Store::note_attempt`]
//! *before* the request leaves, and `Resume` hands the last one back: after a crash the payment
//! may already be charged at that provider, so the resumed request must go to the same provider
//! with the same provider idempotency key, never to a new one. The request ends with
//! [`Store::finish`] (response stored before the storefront sees it, kept for a TTL) or, when
//! nothing can have been charged, [`Store::release`] (the key may be retried as new).
//! [`Store::purge_expired`] deletes finished records past their TTL; in-flight records are never
//! purged, since they are the only evidence of a possibly charged, unanswered payment.
//!
//! # Affinity
//!
//! [`Store::set_owner`] maps a storefront-visible payment id to the provider that owns it, so
//! follow-ups (capture, refund, void, status) go there.
//!
//! # Payment records
//!
//! [`Store::put_payment`] keeps what a payment route knows of each payment ([`PaymentEntry`]:
//! the canonical payment, its state, owner and amounts), [`Store::payment`] reads it back for
//! follow-ups, and [`Store::list_payments`] pages through a route's payments newest first.
//!
//! # Implementations
//!
//! [`RedbStore`] is the embedded default: every write is one redb transaction committed with
//! `Durability::Immediate` (fsync), so a `kill -9` loses nothing a call returned `Ok` for, and
//! write transactions are serialized, which makes `begin` atomic across threads. [`MemoryStore`]
//! has the same semantics without durability, for tests. Both share the decision logic in
//! `record`, so a Redis store added later only has to provide the atomic read-modify-write.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod memory;
mod payments;
mod record;
mod redb_store;

use crate::plugin::storefront::ListQuery;
pub use memory::MemoryStore;
pub use payments::{Page, PaymentEntry};
pub use redb_store::RedbStore;

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
    /// Another request with this key is executing now (started less than `stale_after_ms` ago):
    /// refuse (409).
    InFlight,
    /// An in-flight record older than `stale_after_ms` (its proxy died mid-request): the caller
    /// takes it over. `attempt` is the last attempt journaled for it, if any (provider + provider
    /// idempotency key), so the caller resends to the SAME provider with the SAME provider key
    /// instead of trying a new one.
    Resume {
        /// The last journaled attempt, if one was sent (or about to be) before the crash.
        attempt: Option<Attempt>,
    },
}

/// A store failure. None of these means "the key is free": callers must fail the request.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The blocking task running a store call failed (panicked or was cancelled).
    #[error("store call failed: {0}")]
    Task(String),
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
    /// `note_attempt` or `finish` for a key that has no in-flight record (never begun, released,
    /// or already finished): the caller lost its claim on the key.
    #[error("store: {op} {key:?}: no in-flight record ({found})")]
    NotInFlight {
        /// `note_attempt` or `finish`.
        op: &'static str,
        /// The idempotency key.
        key: String,
        /// What was there instead: `absent` or `finished`.
        found: &'static str,
    },
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
    /// Who owns `payment_id`, if known.
    fn owner(&self, payment_id: &str) -> Result<Option<Owner>, StoreError>;
    /// Remember (or replace) who owns `payment_id`.
    fn set_owner(&self, payment_id: &str, owner: &Owner) -> Result<(), StoreError>;
    /// Delete finished idempotency records past their TTL; returns how many.
    fn purge_expired(&self, now_ms: u64) -> Result<usize, StoreError>;
    /// The payment record with storefront-visible id `id`, if payproxy has one.
    fn payment(&self, id: &str) -> Result<Option<PaymentEntry>, StoreError>;
    /// Write (or replace) a payment record. Its creation time must not change once written.
    fn put_payment(&self, entry: &PaymentEntry) -> Result<(), StoreError>;
    /// A page of `route`'s payments, newest first, and whether more match beyond it.
    fn list_payments(&self, route: &str, query: &ListQuery) -> Result<Page, StoreError>;
}
