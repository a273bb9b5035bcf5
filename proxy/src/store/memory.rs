//! In-memory store: the same semantics as the durable one, lost on exit. For tests and for
//! `store: {"kind": "memory"}`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use super::payments::{self, Page, PaymentEntry};
use super::record::{self, Record};
use super::{Attempt, Begin, Owner, Store, StoreError, StoredResponse};
use crate::plugin::storefront::ListQuery;

/// A [`Store`] in process memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<HashMap<String, Record>>,
    owners: Mutex<HashMap<String, Owner>>,
    payments: Mutex<Payments>,
}

#[derive(Debug, Default)]
struct Payments {
    by_id: HashMap<String, PaymentEntry>,
    index: BTreeSet<String>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Every critical section below is a single map operation on owned values, so a panic
/// elsewhere cannot leave a map half-updated: a poisoned lock is safe to keep using.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Store for MemoryStore {
    fn begin(
        &self,
        key: &str,
        fingerprint: &str,
        now_ms: u64,
        stale_after_ms: u64,
    ) -> Result<Begin, StoreError> {
        let mut records = lock(&self.records);
        let existing = records.get(key).cloned();
        let (answer, write) = record::begin(existing, fingerprint, now_ms, stale_after_ms);
        if let Some(new) = write {
            records.insert(key.to_string(), new);
        }
        Ok(answer)
    }

    fn note_attempt(&self, key: &str, attempt: &Attempt) -> Result<(), StoreError> {
        let mut records = lock(&self.records);
        let new = record::note_attempt(records.get(key).cloned(), key, attempt)?;
        records.insert(key.to_string(), new);
        Ok(())
    }

    fn finish(
        &self,
        key: &str,
        response: &StoredResponse,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        let mut records = lock(&self.records);
        let new = record::finish(records.get(key).cloned(), key, response, now_ms, ttl_ms)?;
        records.insert(key.to_string(), new);
        Ok(())
    }

    fn release(&self, key: &str) -> Result<(), StoreError> {
        let mut records = lock(&self.records);
        if records.get(key).is_some_and(record::releasable) {
            records.remove(key);
        }
        Ok(())
    }

    fn owner(&self, payment_id: &str) -> Result<Option<Owner>, StoreError> {
        Ok(lock(&self.owners).get(payment_id).cloned())
    }

    fn set_owner(&self, payment_id: &str, owner: &Owner) -> Result<(), StoreError> {
        lock(&self.owners).insert(payment_id.to_string(), owner.clone());
        Ok(())
    }

    fn purge_expired(&self, now_ms: u64) -> Result<usize, StoreError> {
        let mut records = lock(&self.records);
        let before = records.len();
        records.retain(|_, record| !record.expired(now_ms));
        Ok(before - records.len())
    }

    fn payment(&self, id: &str) -> Result<Option<PaymentEntry>, StoreError> {
        Ok(lock(&self.payments).by_id.get(id).cloned())
    }

    fn put_payment(&self, entry: &PaymentEntry) -> Result<(), StoreError> {
        let mut payments = lock(&self.payments);
        if let Some(old) = payments.by_id.get(&entry.record.id) {
            let key = old.index_key();
            payments.index.remove(&key);
        }
        payments.index.insert(entry.index_key());
        payments
            .by_id
            .insert(entry.record.id.clone(), entry.clone());
        Ok(())
    }

    fn list_payments(&self, route: &str, query: &ListQuery) -> Result<Page, StoreError> {
        let payments = lock(&self.payments);
        let anchor = |id: &str| Ok(payments.by_id.get(id).map(PaymentEntry::index_key));
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
            Ok(payments.by_id.get(id).cloned())
        })
    }
}
