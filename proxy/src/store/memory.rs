//! In-memory store: the same semantics as the durable one, lost on exit. For tests and for
//! `store: {"kind": "memory"}`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use super::outbox::{Attempted, EventCounts, EventKey, EventState, NewEvent, OutboxEvent};
use super::payments::{self, Page, PaymentEntry};
use super::purge::{self, Cutoffs, Purged, Stamped, StoredOwner};
use super::record::{self, Record};
use super::{Attempt, Begin, HeldNotice, Owner, Store, StoreError, StoredResponse};
use crate::plugin::storefront::ListQuery;

mod outbox;

/// A [`Store`] in process memory.
#[derive(Debug)]
pub struct MemoryStore {
    incarnation: u64,
    records: Mutex<Keyed<Record>>,
    owners: Mutex<Keyed<StoredOwner>>,
    payments: Mutex<Payments>,
    outbox: Mutex<outbox::Outbox>,
}

/// A map and its purge index (see `purge`), updated together.
#[derive(Debug)]
struct Keyed<T> {
    map: HashMap<String, T>,
    due: BTreeSet<(u64, String)>,
}

#[derive(Debug, Default)]
struct Payments {
    /// Boxed: a record is about 1 KB, and the map moves every value each time it grows.
    by_id: Keyed<Box<PaymentEntry>>,
    /// List index (see `payments::index_key`).
    index: BTreeSet<String>,
    /// Provider-reference index (see `notices::reference_key`): payment ids.
    references: HashMap<String, String>,
    /// Held notifications by key.
    held: HashMap<String, HeldNotice>,
}

/// Drop `key` from the reference index if it still names payment `id` (another payment
/// with the same merchant reference may have taken it since).
fn unindex(references: &mut HashMap<String, String>, key: &str, id: &str) {
    if references.get(key).is_some_and(|found| found == id) {
        references.remove(key);
    }
}

impl<T> Default for Keyed<T> {
    fn default() -> Self {
        Keyed {
            map: HashMap::new(),
            due: BTreeSet::new(),
        }
    }
}

impl<T: Stamped> Keyed<T> {
    /// Insert or replace, moving the purge index entry; returns the old value.
    fn insert(&mut self, key: &str, value: T) -> Option<T> {
        if let Some(stamp) = value.stamp_ms() {
            self.due.insert((stamp, key.to_string()));
        }
        let old = self.map.insert(key.to_string(), value)?;
        let new_stamp = self.map.get(key).and_then(Stamped::stamp_ms);
        if let Some(stamp) = old.stamp_ms().filter(|s| Some(*s) != new_stamp) {
            self.due.remove(&(stamp, key.to_string()));
        }
        Some(old)
    }

    fn remove(&mut self, key: &str) -> Option<T> {
        let old = self.map.remove(key)?;
        if let Some(stamp) = old.stamp_ms() {
            self.due.remove(&(stamp, key.to_string()));
        }
        Some(old)
    }

    /// Remove up to `limit` values due under `cutoff`, oldest first.
    fn purge(&mut self, cutoff: Option<u64>, limit: usize) -> Vec<T> {
        purge::take_due(&mut self.due, cutoff, limit)
            .into_iter()
            .filter_map(|(_, key)| self.map.remove(&key))
            .collect()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore {
            incarnation: record::incarnation(),
            records: Mutex::default(),
            owners: Mutex::default(),
            payments: Mutex::default(),
            outbox: Mutex::default(),
        }
    }

    /// The same contents under a new incarnation, as if a process had restarted and kept
    /// them (a memory store never does): for tests of how records held by an earlier
    /// process are taken over.
    pub fn restarted(self) -> Self {
        MemoryStore {
            incarnation: record::incarnation(),
            ..self
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

/// Every critical section below leaves its map and index consistent before anything that
/// could panic, so a poisoned lock is safe to keep using.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MemoryStore {
    /// Reads the record for `key`, lets `decide` compute the new one, writes it.
    fn update(
        &self,
        key: &str,
        decide: impl FnOnce(Option<Record>) -> Result<Record, StoreError>,
    ) -> Result<(), StoreError> {
        let mut records = lock(&self.records);
        let new = decide(records.map.get(key).cloned())?;
        records.insert(key, new);
        Ok(())
    }
}

impl Store for MemoryStore {
    fn blocks(&self) -> bool {
        false
    }

    fn begin(
        &self,
        key: &str,
        fingerprint: &str,
        now_ms: u64,
        stale_after_ms: u64,
    ) -> Result<Begin, StoreError> {
        let mut records = lock(&self.records);
        let existing = records.map.get(key).cloned();
        let (answer, write) = record::begin(
            existing,
            fingerprint,
            now_ms,
            stale_after_ms,
            self.incarnation,
        );
        if let Some(new) = write {
            records.insert(key, new);
        }
        Ok(answer)
    }

    fn note_attempt(&self, key: &str, attempt: &Attempt) -> Result<(), StoreError> {
        self.update(key, |existing| record::note_attempt(existing, key, attempt))
    }

    fn finish(
        &self,
        key: &str,
        response: &StoredResponse,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        self.update(key, |existing| {
            record::finish(existing, key, response, now_ms, ttl_ms)
        })
    }

    fn release(&self, key: &str) -> Result<(), StoreError> {
        let mut records = lock(&self.records);
        if records.map.get(key).is_some_and(record::releasable) {
            records.remove(key);
        }
        Ok(())
    }

    fn park(&self, key: &str) -> Result<(), StoreError> {
        self.update(key, |existing| record::park(existing, key))
    }

    fn owner(&self, payment_id: &str) -> Result<Option<Owner>, StoreError> {
        let owners = lock(&self.owners);
        Ok(owners
            .map
            .get(payment_id)
            .map(|stored| stored.owner.clone()))
    }

    fn set_owner(&self, payment_id: &str, owner: &Owner) -> Result<(), StoreError> {
        let stored = StoredOwner {
            owner: owner.clone(),
            written_ms: Some(purge::wall_ms()),
        };
        lock(&self.owners).insert(payment_id, stored);
        Ok(())
    }

    fn purge_expired(
        &self,
        now_ms: u64,
        retention_ms: u64,
        limit: usize,
    ) -> Result<Purged, StoreError> {
        let cutoffs = Cutoffs::new(now_ms, retention_ms);
        let mut left = limit;
        let idempotency = lock(&self.records)
            .purge(Some(cutoffs.idempotency), left)
            .len();
        left -= idempotency;
        let payments = {
            let mut payments = lock(&self.payments);
            let gone = payments.by_id.purge(cutoffs.retained, left);
            for entry in &gone {
                payments.index.remove(&entry.index_key());
                for key in entry.reference_keys() {
                    unindex(&mut payments.references, &key, &entry.record.id);
                }
            }
            gone.len()
        };
        left -= payments;
        let owners = lock(&self.owners).purge(cutoffs.retained, left).len();
        left -= owners;
        Ok(Purged {
            idempotency,
            payments,
            owners,
            more: left == 0,
        })
    }

    fn payment(&self, id: &str) -> Result<Option<PaymentEntry>, StoreError> {
        Ok(lock(&self.payments)
            .by_id
            .map
            .get(id)
            .map(|e| (**e).clone()))
    }

    fn put_payment(&self, entry: &PaymentEntry, events: &[NewEvent]) -> Result<(), StoreError> {
        let mut payments = lock(&self.payments);
        lock(&self.outbox).insert(events);
        let key = entry.index_key();
        if let Some(old) = payments
            .by_id
            .insert(&entry.record.id, Box::new(entry.clone()))
        {
            payments.index.remove(&old.index_key());
            for key in old.reference_keys() {
                unindex(&mut payments.references, &key, &old.record.id);
            }
        }
        payments.index.insert(key);
        for key in entry.reference_keys() {
            payments.references.insert(key, entry.record.id.clone());
        }
        Ok(())
    }

    fn payment_by_reference(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(lock(&self.payments).references.get(key).cloned())
    }

    fn hold_notice(&self, notice: &HeldNotice) -> Result<(), StoreError> {
        lock(&self.payments)
            .held
            .entry(notice.key.clone())
            .or_insert_with(|| notice.clone());
        Ok(())
    }

    fn held_notices(&self, limit: usize) -> Result<Vec<HeldNotice>, StoreError> {
        let mut held: Vec<HeldNotice> = lock(&self.payments).held.values().cloned().collect();
        held.sort_by(|a, b| (a.received_ms, &a.key).cmp(&(b.received_ms, &b.key)));
        held.truncate(limit);
        Ok(held)
    }

    fn drop_notice(&self, key: &str) -> Result<(), StoreError> {
        lock(&self.payments).held.remove(key);
        Ok(())
    }

    fn list_payments(&self, route: &str, query: &ListQuery) -> Result<Page, StoreError> {
        let payments = lock(&self.payments);
        let by_id = &payments.by_id.map;
        let anchor = |id: &str| Ok(by_id.get(id).map(|e| e.index_key()));
        let Some(scan) = payments::scan(route, query, anchor)? else {
            return Ok((Vec::new(), false));
        };
        let range = payments
            .index
            .range::<String, _>((scan.lower.clone(), scan.upper.clone()));
        let ids: Box<dyn Iterator<Item = &String>> = if scan.ascending {
            Box::new(range)
        } else {
            Box::new(range.rev())
        };
        let ids = ids.map(|key| Ok(payments::id_of(key).to_string()));
        payments::collect(ids, query, scan.ascending, |id| {
            Ok(by_id.get(id).map(|e| (**e).clone()))
        })
    }

    fn next_event_seq(&self, payment_id: &str) -> Result<u64, StoreError> {
        Ok(lock(&self.outbox).next_seq(payment_id))
    }

    fn claim_events(
        &self,
        now_ms: u64,
        lease_ms: u64,
        limit: usize,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        let holder = format!("{:016x}", self.incarnation);
        Ok(lock(&self.outbox).claim(now_ms, lease_ms, limit, &holder))
    }

    fn event_attempted(&self, key: &EventKey, outcome: &Attempted) -> Result<(), StoreError> {
        lock(&self.outbox).attempted(key, outcome);
        Ok(())
    }

    fn list_events(&self, state: EventState, limit: usize) -> Result<Vec<OutboxEvent>, StoreError> {
        Ok(lock(&self.outbox).list(state, limit))
    }

    fn redeliver_event(&self, id: &str, now_ms: u64) -> Result<usize, StoreError> {
        Ok(lock(&self.outbox).redeliver(id, now_ms))
    }

    fn event_counts(&self) -> Result<EventCounts, StoreError> {
        Ok(lock(&self.outbox).counts())
    }

    fn purge_events(&self, delivered_before_ms: u64, limit: usize) -> Result<usize, StoreError> {
        Ok(lock(&self.outbox).purge(delivered_before_ms, limit))
    }
}
