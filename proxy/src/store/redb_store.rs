//! The embedded durable store, on redb: one file, ACID, crash-safe. Every mutation is
//! acknowledged only once it is on disk: calls on the store's writer thread write in their
//! batch's transaction, committed durably once per batch ([`batch`]); writes from other
//! threads are a transaction each and share their fsyncs through [`group`] commit; the
//! outbox and purge steps commit with redb's `Durability::Immediate` (fsync before `commit`
//! returns). redb serializes write
//! transactions, which is what makes the read-check-write of `begin` atomic across threads.
//! The purge indexes (`due`) are written in the same transaction as the records they index.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use super::notices::{owner_reference, plain_reference, reference_key, HELD, REFERENCES};
use super::outbox::{Attempted, EventCounts, EventKey, EventState, NewEvent, OutboxEvent};
use super::payments::{self, Page, PaymentEntry, PAYMENTS, PAYMENT_INDEX};
use super::purge::{self, Purged, Stamped, StoredOwner};
use super::record::{self, Record, IDEMPOTENCY, OWNERS};
use super::writer::Writer;
use super::{Attempt, Begin, HeldNotice, Owner, Store, StoreError, StoredResponse};
use crate::plugin::storefront::ListQuery;
use idempotency::Place;
use tables::{Slot, TableWrite, Tables, Writes};

mod batch;
mod due;
mod group;
mod idempotency;
mod journal;
mod outbox;
mod tables;

/// Idempotency key → its record's number in `idempotency::RECORDS` (or, written by a version
/// from before, the JSON [`Record`] itself).
const IDEMPOTENCY_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new(IDEMPOTENCY);
/// Storefront payment id → JSON [`Owner`].
const OWNERS_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new(OWNERS);
/// Storefront payment id → JSON [`PaymentEntry`].
const PAYMENTS_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new(PAYMENTS);
/// List index: `route \0 created_ms \0 id` → nothing (see `payments::index_key`).
const PAYMENT_INDEX_TABLE: TableDefinition<&str, ()> = TableDefinition::new(PAYMENT_INDEX);
/// Provider-reference index (`notices::reference_key`) → payment id.
pub(super) const REFERENCES_TABLE: TableDefinition<&str, &str> = TableDefinition::new(REFERENCES);
/// Held notifications (`HeldNotice::key` → JSON).
const HELD_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new(HELD);

/// Drop `key` from the reference index if it still names payment `id` (another payment
/// with the same merchant reference may have taken it since).
fn unindex(
    references: &mut impl TableWrite<&'static str, &'static str>,
    key: &str,
    id: &str,
) -> Result<(), redb::StorageError> {
    let ours = references
        .read()
        .get(key)?
        .is_some_and(|found| found.value() == id);
    if ours {
        references.remove(key)?;
    }
    Ok(())
}

/// The reference key the index does not hold for `entry`: its owner's, when the provider's
/// reference is the payment's own id, as for every payment forwarded in its own dialect
/// (the storefront gets the provider's id). Its payment is found through the payments
/// table by that id instead ([`RedbStore::own_reference`]), which saves a write of the
/// index per payment: a random leaf of a growing table, copied at the payment's commit and
/// written again at the next checkpoint.
fn own_key(entry: &PaymentEntry) -> Option<String> {
    let owner = entry.owner.as_ref()?;
    // Only a key no other kind can spell is left out: the others' bytes may be another
    // kind's key.
    (owner.reference == entry.record.id && plain_reference(&owner.reference))
        .then(|| reference_key(&owner.provider, &owner.reference))
}

/// What the point reads need of a table, one of the batch's write transaction or of a read
/// transaction alike.
trait Lookup<V: redb::Value + 'static> {
    /// The value under `key`.
    fn lookup(&self, key: &str) -> Result<Option<redb::AccessGuard<'_, V>>, redb::StorageError>;
    /// The last key in `lo..hi`.
    fn last_key_in(&self, lo: &str, hi: &str) -> Result<Option<String>, redb::StorageError>;
}

impl<V: redb::Value + 'static, T: ReadableTable<&'static str, V>> Lookup<V> for T {
    fn lookup(&self, key: &str) -> Result<Option<redb::AccessGuard<'_, V>>, redb::StorageError> {
        self.get(key)
    }

    fn last_key_in(&self, lo: &str, hi: &str) -> Result<Option<String>, redb::StorageError> {
        let last = self.range::<&str>(lo..hi)?.next_back().transpose()?;
        Ok(last.map(|(key, _)| key.value().to_string()))
    }
}

/// A [`Store`] in a redb database file.
pub struct RedbStore {
    db: Arc<Database>,
    path: PathBuf,
    /// This instance's id in the records it holds. redb locks the file for one `Database` at
    /// a time, so a record held by another id was held by an instance that is gone.
    incarnation: u64,
    /// Request-path writes share fsyncs ([`group`]).
    group: Arc<group::GroupCommit>,
    /// The writer's open batch: its writes share one transaction ([`batch`]).
    batch: Arc<batch::Batch>,
    /// Runs the request path's calls in batches, one durable commit each.
    writer: Writer,
    /// The next idempotency record numbers.
    numbers: idempotency::Numbers,
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

/// The writer's journal of the store at `path`: the same name with `.journal` added.
fn journal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

/// Open the journal at `path` and apply, in `txn`, the entries the store does not hold yet
/// (written before a crash): see [`journal`].
fn recover(txn: &redb::WriteTransaction, path: &Path) -> Result<journal::Journal, StoreError> {
    let salt = journal::salt(txn).map_err(open_error(path))?;
    let applied = journal::applied(txn).map_err(open_error(path))?;
    let (journal, entries) = journal::Journal::open(path, salt, applied)
        .map_err(|e| open_error(path)(redb::Error::Io(e)))?;
    let Some((last, _)) = entries.last() else {
        return Ok(journal);
    };
    let writes = Writes::default();
    let tables = Tables::new(txn, &writes);
    for (_, entry) in &entries {
        tables.replay(entry)?;
    }
    drop(tables);
    journal::set_applied(txn, *last).map_err(open_error(path))?;
    tracing::info!(
        journal = %path.display(),
        entries = entries.len(),
        "store: applied the journal's entries the store did not hold yet"
    );
    Ok(journal)
}

impl RedbStore {
    /// Opens the database at `path`, creating it, its parent directory and its tables if
    /// missing, under a new incarnation. After a crash, redb repairs the file here before the
    /// first transaction. A file from before the purge indexes gets them built here, once.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let db = Database::create(path).map_err(open_error(path))?;
        let txn = db.begin_write().map_err(open_error(path))?;
        let journal = recover(&txn, &journal_path(path))?;
        let indexed = due::indexed(&txn).map_err(open_error(path))?;
        txn.open_table(IDEMPOTENCY_TABLE)
            .map_err(open_error(path))?;
        let numbers = idempotency::Numbers::after(
            &txn.open_table(idempotency::RECORDS)
                .map_err(open_error(path))?,
        )?;
        txn.open_table(OWNERS_TABLE).map_err(open_error(path))?;
        txn.open_table(PAYMENTS_TABLE).map_err(open_error(path))?;
        txn.open_table(PAYMENT_INDEX_TABLE)
            .map_err(open_error(path))?;
        txn.open_table(REFERENCES_TABLE).map_err(open_error(path))?;
        txn.open_table(HELD_TABLE).map_err(open_error(path))?;
        outbox::create(&txn).map_err(open_error(path))?;
        if !indexed {
            due::backfill(&txn, purge::wall_ms())?;
        }
        // Durable (redb's default): the replayed entries are in the file before the journal
        // is written over.
        txn.commit().map_err(open_error(path))?;
        let db = Arc::new(db);
        let group = Arc::new(group::GroupCommit::default());
        let batch = Arc::new(batch::Batch::with_journal(journal));
        let settle = {
            let (db, group, batch) = (db.clone(), group.clone(), batch.clone());
            Box::new(move || batch.settle(&db, &group))
        };
        let doomed = {
            let batch = batch.clone();
            Box::new(move || batch.doomed())
        };
        let tidy = {
            let (db, group, batch) = (db.clone(), group.clone(), batch.clone());
            Box::new(move || batch.checkpoint_if_due(&db, &group))
        };
        let writer = Writer::start("payproxy-store", settle, doomed, tidy).map_err(|e| {
            StoreError::Open {
                path: path.to_path_buf(),
                source: Box::new(redb::Error::Io(e)),
            }
        })?;
        Ok(RedbStore {
            db,
            path: path.to_path_buf(),
            incarnation: record::incarnation(),
            group,
            batch,
            writer,
            numbers,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The payment an owner reference key names when the provider's reference is the
    /// payment's own id ([`own_key`]: not in the index). Such a payment comes first, as its
    /// key is its own: a provider names one payment by one reference.
    fn own_reference(&self, key: &str) -> Result<Option<String>, StoreError> {
        let Some(reference) = owner_reference(key) else {
            return Ok(None);
        };
        let Some(entry) = Store::payment(self, reference)? else {
            return Ok(None);
        };
        Ok((own_key(&entry).as_deref() == Some(key)).then(|| reference.to_string()))
    }

    /// `read`, once every write it may have seen is durable: nothing is answered or decided
    /// on a write that a crash could still undo. On this store's writer the batch's settle
    /// does that before any call of it is answered.
    fn settled<T>(&self, op: &'static str, key: &str, read: T) -> Result<T, StoreError> {
        if !self.writer.is_current() {
            self.group.settle(&self.db).context(op, key)?;
        }
        Ok(read)
    }

    /// Drop a write transaction that changed nothing, once what it read is durable: its
    /// answer may rest on a write still waiting for its flush.
    fn abandon(
        &self,
        txn: redb::WriteTransaction,
        op: &'static str,
        key: &str,
    ) -> Result<(), StoreError> {
        txn.abort().context(op, key)?;
        self.group.settle(&self.db).context(op, key)
    }

    /// One write: `decide` reads and chooses what to store (or nothing), and may fail
    /// without having changed anything; `mutate` stores it. On the writer this runs in the
    /// batch's transaction ([`batch`]); elsewhere in a transaction of its own, committed
    /// through group commit (and only once something changed).
    fn write<D, T>(
        &self,
        op: &'static str,
        key: &str,
        decide: impl FnOnce(&Tables<'_>) -> Result<(T, Option<D>), StoreError>,
        mutate: impl FnOnce(&Tables<'_>, D) -> Result<(), StoreError>,
    ) -> Result<T, StoreError> {
        if self.writer.is_current() {
            return self.batch.write(&self.db, op, key, decide, mutate);
        }
        let txn = self.db.begin_write().context(op, key)?;
        // The tables close at the end of this block, before the commit or the abandon.
        let decided = {
            let writes = Writes::default();
            let tables = Tables::new(&txn, &writes);
            decide(&tables).map(|(out, decided)| (out, decided.map(|d| mutate(&tables, d))))
        };
        let (out, mutated) = match decided {
            Ok(decided) => decided,
            Err(e) => {
                self.abandon(txn, op, key)?;
                return Err(e);
            }
        };
        match mutated {
            Some(mutated) => {
                mutated?;
                self.group.commit(&self.db, txn).context(op, key)?;
            }
            None => self.abandon(txn, op, key)?,
        }
        Ok(out)
    }

    /// A point read of `table`: on the writer, in the open batch's transaction when there is
    /// one (through `slot`, the same table among the batch's open ones), so it sees the
    /// batch's own writes; else in a read transaction of its own, settled (nothing is
    /// answered on a write that a crash could still undo).
    fn read<V: redb::Value + 'static, T>(
        &self,
        op: &'static str,
        key: &str,
        table: TableDefinition<&'static str, V>,
        slot: for<'a, 't> fn(&'a Tables<'t>) -> &'a Slot<'t, &'static str, V>,
        read: impl Fn(&dyn Lookup<V>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.writer.is_current() {
            let in_batch = self.batch.read(|tables| {
                let slot = slot(tables);
                debug_assert_eq!(slot.definition().name(), table.name(), "one table");
                read(&*slot.open(op, key)?)
            });
            if let Some(found) = in_batch {
                return found;
            }
        }
        let txn = self.db.begin_read().context(op, key)?;
        let found = read(&txn.open_table(table).context(op, key)?)?;
        self.settled(op, key, found)
    }

    /// Before a write that runs in a transaction of its own (the outbox's and the purge's):
    /// on the writer, commit the open batch first, since it holds redb's only write slot.
    /// A failed commit fails the whole batch at its settle too.
    fn unbatched(&self) -> Result<(), StoreError> {
        if self.writer.is_current() {
            self.batch.commit_early(&self.group)?;
        }
        Ok(())
    }

    /// Reads the record for `key`, lets `decide` choose, applies its write and moves the
    /// record's purge index entry, all in one write transaction ([`RedbStore::write`]).
    fn update<T>(
        &self,
        op: &'static str,
        key: &str,
        decide: impl FnOnce(Option<Record>) -> Result<(T, Write), StoreError>,
    ) -> Result<T, StoreError> {
        // What to store: the encoded record (`None`: delete it), where the record was, and
        // the index stamps.
        type Decided = (Option<Vec<u8>>, Option<Place>, Option<u64>, Option<u64>);
        self.write(
            op,
            key,
            |tables| {
                let found = {
                    let keys = tables.idempotency.open(op, key)?;
                    let records = tables.idempotency_records.open(op, key)?;
                    idempotency::get(&*keys, &*records, op, key)?
                };
                let was = found.as_ref().map(|(_, place)| *place);
                let existing = found.map(|(record, _)| record);
                let old_stamp = existing.as_ref().and_then(Stamped::stamp_ms);
                let (out, write) = decide(existing)?;
                let decided: Option<Decided> = match write {
                    Write::Nothing => None,
                    Write::Put(new) => Some((
                        Some(record::encode(IDEMPOTENCY, key, &new)?),
                        was,
                        old_stamp,
                        new.stamp_ms(),
                    )),
                    Write::Delete => Some((None, was, old_stamp, None)),
                };
                Ok((out, decided))
            },
            |tables, (bytes, was, old_stamp, new_stamp): Decided| {
                {
                    let mut keys = tables.idempotency.open(op, key)?;
                    let mut records = tables.idempotency_records.open(op, key)?;
                    let (keys, records) = (&mut keys, &mut records);
                    match (bytes, was) {
                        (Some(bytes), was) => {
                            idempotency::put(keys, records, &self.numbers, op, key, was, &bytes)?
                        }
                        (None, Some(was)) => idempotency::remove(keys, records, op, key, was)?,
                        (None, None) => {}
                    }
                }
                let mut index = tables.idempotency_due.open(op, key)?;
                due::restamp(&mut index, key, old_stamp, new_stamp).context(op, key)
            },
        )
    }
}

impl Store for RedbStore {
    fn writer(&self) -> Option<&Writer> {
        Some(&self.writer)
    }

    fn begin(
        &self,
        key: &str,
        fingerprint: &str,
        now_ms: u64,
        stale_after_ms: u64,
    ) -> Result<Begin, StoreError> {
        self.update("begin", key, |existing| {
            let (answer, write) = record::begin(
                existing,
                fingerprint,
                now_ms,
                stale_after_ms,
                self.incarnation,
            );
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

    fn park(&self, key: &str) -> Result<(), StoreError> {
        self.update("park", key, |existing| {
            Ok(((), Write::Put(record::park(existing, key)?)))
        })
    }

    fn owner(&self, payment_id: &str) -> Result<Option<Owner>, StoreError> {
        let op = "owner";
        self.read(
            op,
            payment_id,
            OWNERS_TABLE,
            |t| &t.owners,
            |table| match table.lookup(payment_id).context(op, payment_id)? {
                Some(value) => {
                    let stored: StoredOwner = record::decode(OWNERS, payment_id, value.value())?;
                    Ok(Some(stored.owner))
                }
                None => Ok(None),
            },
        )
    }

    fn set_owner(&self, payment_id: &str, owner: &Owner) -> Result<(), StoreError> {
        let op = "set_owner";
        let stored = StoredOwner {
            owner: owner.clone(),
            written_ms: Some(purge::wall_ms()),
        };
        let bytes = record::encode(OWNERS, payment_id, &stored)?;
        self.write(
            op,
            payment_id,
            |tables| {
                // The old stamp, to move its index entry. An owner that does not decode (or
                // has no stamp) leaves its entry behind; the purge drops such entries when it
                // meets them.
                let table = tables.owners.open(op, payment_id)?;
                let old_stamp = table
                    .get(payment_id)
                    .context(op, payment_id)?
                    .and_then(|v| record::decode::<StoredOwner>(OWNERS, payment_id, v.value()).ok())
                    .and_then(|old| old.written_ms);
                Ok(((), Some(old_stamp)))
            },
            |tables, old_stamp| {
                tables
                    .owners
                    .open(op, payment_id)?
                    .insert(payment_id, bytes.as_slice())
                    .context(op, payment_id)?;
                let mut index = tables.owners_due.open(op, payment_id)?;
                due::restamp(&mut index, payment_id, old_stamp, stored.written_ms)
                    .context(op, payment_id)
            },
        )
    }

    fn purge_expired(
        &self,
        now_ms: u64,
        retention_ms: u64,
        limit: usize,
    ) -> Result<Purged, StoreError> {
        self.unbatched()?;
        due::purge(&self.db, now_ms, retention_ms, limit)
    }

    fn payment(&self, id: &str) -> Result<Option<PaymentEntry>, StoreError> {
        let op = "payment";
        self.read(
            op,
            id,
            PAYMENTS_TABLE,
            |t| &t.payments,
            |table| match table.lookup(id).context(op, id)? {
                Some(value) => Ok(Some(record::decode(PAYMENTS, id, value.value())?)),
                None => Ok(None),
            },
        )
    }

    fn put_payment(&self, entry: &PaymentEntry, events: &[NewEvent]) -> Result<(), StoreError> {
        let op = "put_payment";
        let id = entry.record.id.as_str();
        let bytes = record::encode(PAYMENTS, id, entry)?;
        self.write(
            op,
            id,
            |tables| {
                let table = tables.payments.open(op, id)?;
                let old = match table.get(id).context(op, id)? {
                    Some(value) => {
                        Some(record::decode::<PaymentEntry>(PAYMENTS, id, value.value())?)
                    }
                    None => None,
                };
                drop(table);
                let new_events = outbox::new_rows(&tables.outbox, events)?;
                Ok(((), Some((old, new_events))))
            },
            |tables, (old, new_events)| {
                tables
                    .payments
                    .open(op, id)?
                    .insert(id, bytes.as_slice())
                    .context(op, id)?;
                let mut index = tables.payment_index.open(op, id)?;
                if let Some(old) = &old {
                    index.remove(old.index_key().as_str()).context(op, id)?;
                }
                index
                    .insert(entry.index_key().as_str(), ())
                    .context(op, id)?;
                let mut references = tables.references.open(op, id)?;
                for key in old.iter().flat_map(PaymentEntry::reference_keys) {
                    unindex(&mut references, &key, id).context(op, id)?;
                }
                let own = own_key(entry);
                for key in entry.reference_keys() {
                    if own.as_ref() != Some(&key) {
                        references.insert(key.as_str(), id).context(op, id)?;
                    }
                }
                let mut due_index = tables.payments_due.open(op, id)?;
                let old_stamp = old.as_ref().and_then(Stamped::stamp_ms);
                due::restamp(&mut due_index, id, old_stamp, entry.stamp_ms()).context(op, id)?;
                outbox::insert(&tables.outbox, new_events)
            },
        )
    }

    fn payment_by_reference(&self, key: &str) -> Result<Option<String>, StoreError> {
        let op = "payment_by_reference";
        if let Some(id) = self.own_reference(key)? {
            return Ok(Some(id));
        }
        self.read(
            op,
            key,
            REFERENCES_TABLE,
            |t| &t.references,
            |table| {
                let found = table.lookup(key).context(op, key)?;
                Ok(found.map(|id| id.value().to_string()))
            },
        )
    }

    fn hold_notice(&self, notice: &HeldNotice) -> Result<(), StoreError> {
        let op = "hold_notice";
        let key = notice.key.as_str();
        let bytes = record::encode(HELD, key, notice)?;
        self.write(
            op,
            key,
            |tables| {
                let table = tables.held.open(op, key)?;
                let held = table.get(key).context(op, key)?.is_some();
                Ok(((), (!held).then_some(())))
            },
            |tables, ()| {
                tables
                    .held
                    .open(op, key)?
                    .insert(key, bytes.as_slice())
                    .context(op, key)?;
                Ok(())
            },
        )
    }

    fn held_notices(&self, limit: usize) -> Result<Vec<HeldNotice>, StoreError> {
        let op = "held_notices";
        let txn = self.db.begin_read().context(op, "")?;
        let table = txn.open_table(HELD_TABLE).context(op, "")?;
        let mut held = Vec::new();
        for row in table.iter().context(op, "")? {
            let (key, value) = row.context(op, "")?;
            held.push(record::decode::<HeldNotice>(
                HELD,
                key.value(),
                value.value(),
            )?);
        }
        held.sort_by(|a, b| (a.received_ms, &a.key).cmp(&(b.received_ms, &b.key)));
        held.truncate(limit);
        self.settled(op, "", held)
    }

    fn drop_notice(&self, key: &str) -> Result<(), StoreError> {
        let op = "drop_notice";
        self.write(
            op,
            key,
            |_| Ok(((), Some(()))),
            |tables, ()| {
                tables.held.open(op, key)?.remove(key).context(op, key)?;
                Ok(())
            },
        )
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
            // Decided on the anchor read: settled like any read.
            return self.settled(op, route, (Vec::new(), false));
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
        let page = if scan.ascending {
            payments::collect(range.map(keys), query, true, load)?
        } else {
            payments::collect(range.rev().map(keys), query, false, load)?
        };
        self.settled(op, route, page)
    }

    fn next_event_seq(&self, payment_id: &str) -> Result<u64, StoreError> {
        let op = "next_event_seq";
        let (lo, hi) = crate::store::outbox::payment_range(payment_id);
        let last = self.read(
            op,
            payment_id,
            outbox::ROWS,
            |t| &t.outbox.rows,
            |rows| rows.last_key_in(&lo, &hi).context(op, payment_id),
        )?;
        Ok(crate::store::outbox::next_seq(last.as_deref()))
    }

    fn claim_events(
        &self,
        now_ms: u64,
        lease_ms: u64,
        limit: usize,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        let holder = format!("{:016x}", self.incarnation);
        self.unbatched()?;
        outbox::claim(&self.db, now_ms, lease_ms, limit, &holder)
    }

    fn event_attempted(&self, key: &EventKey, outcome: &Attempted) -> Result<(), StoreError> {
        self.unbatched()?;
        outbox::attempted(&self.db, key, outcome)
    }

    fn list_events(&self, state: EventState, limit: usize) -> Result<Vec<OutboxEvent>, StoreError> {
        let events = outbox::list(&self.db, state, limit)?;
        self.settled("list_events", "*", events)
    }

    fn redeliver_event(&self, id: &str, now_ms: u64) -> Result<usize, StoreError> {
        self.unbatched()?;
        outbox::redeliver(&self.db, id, now_ms)
    }

    fn event_counts(&self) -> Result<EventCounts, StoreError> {
        let counts = outbox::counts(&self.db)?;
        self.settled("event_counts", "*", counts)
    }

    fn purge_events(&self, delivered_before_ms: u64, limit: usize) -> Result<usize, StoreError> {
        self.unbatched()?;
        outbox::purge(&self.db, delivered_before_ms, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(n: u32) -> Owner {
        Owner {
            provider: "adyen".into(),
            reference: format!("PSP{n}"),
            currency: Some("EUR".into()),
        }
    }

    /// A store in a new directory (its file, `state.redb`), and a runtime to await its
    /// writer on.
    fn journaled() -> (
        tempfile::TempDir,
        PathBuf,
        Arc<RedbStore>,
        tokio::runtime::Runtime,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let store = Arc::new(RedbStore::open(&path).unwrap());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        (dir, path, store, runtime)
    }

    /// `set_owner` for payment `n` on the store's writer, as the request path calls it;
    /// returns once it is acknowledged.
    fn acknowledged(store: &Arc<RedbStore>, runtime: &tokio::runtime::Runtime, n: u32) {
        let on_writer = store.clone();
        let call = move || on_writer.set_owner(&format!("pi_{n}"), &owner(n));
        runtime.block_on(store.writer.run(call)).unwrap();
    }

    /// A copy of the store's files as they are on disk now, as a crash would leave them, in
    /// a new directory: redb's file, and its journal when `with_journal`.
    fn crash_image(path: &Path, with_journal: bool) -> (tempfile::TempDir, PathBuf) {
        let to = tempfile::tempdir().unwrap();
        let copy = to.path().join("copy.redb");
        std::fs::copy(path, &copy).unwrap();
        if with_journal {
            std::fs::copy(journal_path(path), journal_path(&copy)).unwrap();
        }
        (to, copy)
    }

    fn held(path: &Path, keys: u32) -> Vec<u32> {
        let store = RedbStore::open(path).unwrap();
        (0..keys)
            .filter(|&n| store.owner(&format!("pi_{n}")).unwrap() == Some(owner(n)))
            .collect()
    }

    #[test]
    fn the_writer_journals_its_batches_checkpoints_and_a_crash_keeps_every_acknowledged_write() {
        let (_dir, path, store, runtime) = journaled();
        store
            .batch
            .journal()
            .as_mut()
            .unwrap()
            .set_checkpoint_bytes(1000);
        let (mut checkpoints, mut last_end, mut keys) = (0, 0, 0);
        // Until at least two checkpoints are behind, and some acknowledged writes only in
        // the journal after the last one.
        // (A checkpoint runs after a batch is answered: stopping only below the threshold,
        // none is under way while the files are copied.)
        while checkpoints < 2 || last_end == 0 || last_end >= 1000 {
            acknowledged(&store, &runtime, keys);
            keys += 1;
            let end = store.batch.journal().as_ref().unwrap().end();
            if end < last_end {
                checkpoints += 1;
            }
            last_end = end;
            assert!(keys < 1000, "no checkpoint after {keys} writes");
        }

        // What redb's file holds alone: the writes up to the last checkpoint, not after.
        let (_alone, alone) = crash_image(&path, false);
        let in_redb = held(&alone, keys);
        assert!(
            !in_redb.is_empty(),
            "the checkpoints made writes durable in redb"
        );
        assert!(
            in_redb.len() < keys as usize,
            "the last writes are in the journal only"
        );
        assert_eq!(in_redb, (0..in_redb.len() as u32).collect::<Vec<_>>());

        // With the journal: every acknowledged write, its later entries written over the
        // entries from before the checkpoints (which end the reading).
        let (_image, copy) = crash_image(&path, true);
        assert_eq!(held(&copy, keys), (0..keys).collect::<Vec<_>>());
        // Opened again after the replay: nothing applied twice or lost, and it takes writes.
        let reopened = Arc::new(RedbStore::open(&copy).unwrap());
        acknowledged(&reopened, &runtime, keys);
        drop(reopened);
        assert_eq!(held(&copy, keys + 1), (0..=keys).collect::<Vec<_>>());
    }

    #[test]
    fn a_clean_close_leaves_the_redb_file_complete_without_its_journal() {
        let (_dir, path, store, runtime) = journaled();
        for n in 0..5 {
            acknowledged(&store, &runtime, n);
        }
        let (_image, image) = crash_image(&path, false);
        let before = held(&image, 5);
        assert!(
            before.len() < 5,
            "journaled, not yet in redb's file: {before:?}"
        );
        drop(store);
        let (_closed, closed) = crash_image(&path, false);
        assert_eq!(held(&closed, 5), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_journal_whose_entries_the_store_lacks_refuses_to_open() {
        let (_dir, path, store, runtime) = journaled();
        for n in 0..3 {
            acknowledged(&store, &runtime, n);
        }
        let (_image, copy) = crash_image(&path, true);
        // The first entry lost: the journal starts at entry 2 while the store holds none.
        let journal = journal_path(&copy);
        let bytes = std::fs::read(&journal).unwrap();
        let first = journal::HEADER + u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        std::fs::write(&journal, &bytes[first..]).unwrap();
        let error = RedbStore::open(&copy).unwrap_err().to_string();
        assert!(error.contains("missing"), "{error}");
    }
}
