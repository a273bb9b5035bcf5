//! The embedded durable store, on redb: one file, ACID, crash-safe. Every mutation is a single
//! write transaction committed with redb's default `Durability::Immediate` (fsync before
//! `commit` returns); redb serializes write transactions, which is what makes the
//! read-check-write of `begin` atomic across threads.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::payments::{self, Page, PaymentEntry, PAYMENTS, PAYMENT_INDEX};
use super::record::{self, Record, IDEMPOTENCY, OWNERS};
use super::{Attempt, Begin, Owner, Store, StoreError, StoredResponse};
use crate::plugin::storefront::ListQuery;

/// Idempotency key → JSON [`Record`].
const IDEMPOTENCY_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new(IDEMPOTENCY);
/// Storefront payment id → JSON [`Owner`].
const OWNERS_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new(OWNERS);
/// Storefront payment id → JSON [`PaymentEntry`].
const PAYMENTS_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new(PAYMENTS);
/// List index: `route \0 created_ms \0 id` → nothing (see `payments::index_key`).
const PAYMENT_INDEX_TABLE: TableDefinition<&str, ()> = TableDefinition::new(PAYMENT_INDEX);

/// A [`Store`] in a redb database file.
pub struct RedbStore {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// What a read-modify-write does to the idempotency record.
enum Write {
    Nothing,
    Put(Record),
    Delete,
}

/// Attaches the operation and key to a redb error.
trait Context<T> {
    fn context(self, op: &'static str, key: &str) -> Result<T, StoreError>;
}

impl<T, E: Into<redb::Error>> Context<T> for Result<T, E> {
    fn context(self, op: &'static str, key: &str) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::Db {
            op,
            key: key.to_string(),
            source: Box::new(e.into()),
        })
    }
}

fn open_error<E: Into<redb::Error>>(path: &Path) -> impl FnOnce(E) -> StoreError + '_ {
    move |e| StoreError::Open {
        path: path.to_path_buf(),
        source: Box::new(e.into()),
    }
}

impl RedbStore {
    /// Opens the database at `path`, creating it, its parent directory and its tables if
    /// missing. After a crash, redb repairs the file here before the first transaction.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let db = Database::create(path).map_err(open_error(path))?;
        let txn = db.begin_write().map_err(open_error(path))?;
        txn.open_table(IDEMPOTENCY_TABLE)
            .map_err(open_error(path))?;
        txn.open_table(OWNERS_TABLE).map_err(open_error(path))?;
        txn.open_table(PAYMENTS_TABLE).map_err(open_error(path))?;
        txn.open_table(PAYMENT_INDEX_TABLE)
            .map_err(open_error(path))?;
        txn.commit().map_err(open_error(path))?;
        Ok(RedbStore {
            db,
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the record for `key`, lets `decide` choose, applies its write, all in one write
    /// transaction. Commits (and fsyncs) only when something changed.
    fn update<T>(
        &self,
        op: &'static str,
        key: &str,
        decide: impl FnOnce(Option<Record>) -> Result<(T, Write), StoreError>,
    ) -> Result<T, StoreError> {
        let txn = self.db.begin_write().context(op, key)?;
        let (out, changed) = {
            let mut table = txn.open_table(IDEMPOTENCY_TABLE).context(op, key)?;
            let existing = match table.get(key).context(op, key)? {
                Some(value) => Some(record::decode(IDEMPOTENCY, key, value.value())?),
                None => None,
            };
            let (out, write) = decide(existing)?;
            let changed = match write {
                Write::Nothing => false,
                Write::Put(new) => {
                    let bytes = record::encode(IDEMPOTENCY, key, &new)?;
                    table.insert(key, bytes.as_slice()).context(op, key)?;
                    true
                }
                Write::Delete => {
                    table.remove(key).context(op, key)?;
                    true
                }
            };
            (out, changed)
        };
        if changed {
            txn.commit().context(op, key)?;
        } else {
            txn.abort().context(op, key)?;
        }
        Ok(out)
    }
}

impl Store for RedbStore {
    fn begin(
        &self,
        key: &str,
        fingerprint: &str,
        now_ms: u64,
        stale_after_ms: u64,
    ) -> Result<Begin, StoreError> {
        self.update("begin", key, |existing| {
            let (answer, write) = record::begin(existing, fingerprint, now_ms, stale_after_ms);
            Ok((answer, write.map_or(Write::Nothing, Write::Put)))
        })
    }

    fn note_attempt(&self, key: &str, attempt: &Attempt) -> Result<(), StoreError> {
        self.update("note_attempt", key, |existing| {
            Ok((
                (),
                Write::Put(record::note_attempt(existing, key, attempt)?),
            ))
        })
    }

    fn finish(
        &self,
        key: &str,
        response: &StoredResponse,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        self.update("finish", key, |existing| {
            let new = record::finish(existing, key, response, now_ms, ttl_ms)?;
            Ok(((), Write::Put(new)))
        })
    }

    fn release(&self, key: &str) -> Result<(), StoreError> {
        self.update("release", key, |existing| {
            let write = match existing {
                Some(record) if record::releasable(&record) => Write::Delete,
                _ => Write::Nothing,
            };
            Ok(((), write))
        })
    }

    fn owner(&self, payment_id: &str) -> Result<Option<Owner>, StoreError> {
        let op = "owner";
        let txn = self.db.begin_read().context(op, payment_id)?;
        let table = txn.open_table(OWNERS_TABLE).context(op, payment_id)?;
        match table.get(payment_id).context(op, payment_id)? {
            Some(value) => Ok(Some(record::decode(OWNERS, payment_id, value.value())?)),
            None => Ok(None),
        }
    }

    fn set_owner(&self, payment_id: &str, owner: &Owner) -> Result<(), StoreError> {
        let op = "set_owner";
        let bytes = record::encode(OWNERS, payment_id, owner)?;
        let txn = self.db.begin_write().context(op, payment_id)?;
        {
            let mut table = txn.open_table(OWNERS_TABLE).context(op, payment_id)?;
            table
                .insert(payment_id, bytes.as_slice())
                .context(op, payment_id)?;
        }
        txn.commit().context(op, payment_id)
    }

    fn purge_expired(&self, now_ms: u64) -> Result<usize, StoreError> {
        let op = "purge_expired";
        let txn = self.db.begin_write().context(op, "*")?;
        let mut removed = 0;
        {
            let mut table = txn.open_table(IDEMPOTENCY_TABLE).context(op, "*")?;
            table
                .retain(|key, value| {
                    match record::decode::<Record>(IDEMPOTENCY, key, value) {
                        Ok(record) if record.expired(now_ms) => {
                            removed += 1;
                            false
                        }
                        Ok(_) => true,
                        // Housekeeping must not stop at one bad record, nor delete what it
                        // cannot read: keep it and say so.
                        Err(error) => {
                            tracing::warn!(%error, "store: keeping an undecodable record");
                            true
                        }
                    }
                })
                .context(op, "*")?;
        }
        if removed > 0 {
            txn.commit().context(op, "*")?;
        } else {
            txn.abort().context(op, "*")?;
        }
        Ok(removed)
    }

    fn payment(&self, id: &str) -> Result<Option<PaymentEntry>, StoreError> {
        let op = "payment";
        let txn = self.db.begin_read().context(op, id)?;
        let table = txn.open_table(PAYMENTS_TABLE).context(op, id)?;
        match table.get(id).context(op, id)? {
            Some(value) => Ok(Some(record::decode(PAYMENTS, id, value.value())?)),
            None => Ok(None),
        }
    }

    fn put_payment(&self, entry: &PaymentEntry) -> Result<(), StoreError> {
        let op = "put_payment";
        let id = entry.record.id.as_str();
        let bytes = record::encode(PAYMENTS, id, entry)?;
        let txn = self.db.begin_write().context(op, id)?;
        {
            let mut table = txn.open_table(PAYMENTS_TABLE).context(op, id)?;
            let old = match table.get(id).context(op, id)? {
                Some(value) => Some(record::decode::<PaymentEntry>(PAYMENTS, id, value.value())?),
                None => None,
            };
            table.insert(id, bytes.as_slice()).context(op, id)?;
            let mut index = txn.open_table(PAYMENT_INDEX_TABLE).context(op, id)?;
            if let Some(old) = old {
                index.remove(old.index_key().as_str()).context(op, id)?;
            }
            index
                .insert(entry.index_key().as_str(), ())
                .context(op, id)?;
        }
        txn.commit().context(op, id)
    }

    fn list_payments(&self, route: &str, query: &ListQuery) -> Result<Page, StoreError> {
        let op = "list_payments";
        let txn = self.db.begin_read().context(op, route)?;
        let payments_table = txn.open_table(PAYMENTS_TABLE).context(op, route)?;
        let index = txn.open_table(PAYMENT_INDEX_TABLE).context(op, route)?;
        let load = |id: &str| -> Result<Option<PaymentEntry>, StoreError> {
            match payments_table.get(id).context(op, id)? {
                Some(value) => Ok(Some(record::decode(PAYMENTS, id, value.value())?)),
                None => Ok(None),
            }
        };
        let anchor = |id: &str| Ok(load(id)?.map(|e| e.index_key()));
        let Some(scan) = payments::scan(route, query, anchor)? else {
            return Ok((Vec::new(), false));
        };
        let range = index
            .range::<&str>((
                scan.lower.as_ref().map(String::as_str),
                scan.upper.as_ref().map(String::as_str),
            ))
            .context(op, route)?;
        let keys = |item: Result<
            (redb::AccessGuard<'_, &str>, redb::AccessGuard<'_, ()>),
            redb::StorageError,
        >| {
            item.context(op, route)
                .map(|(key, _)| payments::id_of(key.value()).to_string())
        };
        if scan.ascending {
            payments::collect(range.map(keys), query, true, load)
        } else {
            payments::collect(range.rev().map(keys), query, false, load)
        }
    }
}
