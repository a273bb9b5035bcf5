//! The tables a write transaction uses, each opened at its first use and kept open until
//! the transaction ends. Opening a redb table looks its root up in the table tree and
//! closing it stages the new root: a payment's writes touch a dozen tables, and a writer
//! batch holds many payments, so the batch opens each table once instead of once per use.
//!
//! Every write of a transaction that has [`Tables`] goes through them: redb refuses to open
//! a table twice at once, and so does a [`Slot`] (with redb's own error, never a panic).

use std::borrow::Borrow;
use std::cell::{Cell, RefCell, RefMut};
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, Location};

use redb::Value;
use redb::WriteTransaction;
use redb::{Key, ReadableTable, StorageError, Table, TableDefinition, TableHandle};

use super::{due, idempotency, journal, outbox, Context};
use super::{
    HELD_TABLE, IDEMPOTENCY_TABLE, OWNERS_TABLE, PAYMENTS_TABLE, PAYMENT_INDEX_TABLE,
    REFERENCES_TABLE,
};
use crate::store::StoreError;

/// The writes a transaction's tables made, in order, as the journal records them
/// ([`journal::record`]). A mutex (never contended: one thread uses a transaction) because a
/// writer batch's open transaction is kept in a `Mutex` shared with the settle.
pub(super) type Writes = std::sync::Mutex<Vec<u8>>;

fn record(writes: &Writes, table: u8, key: &[u8], value: Option<&[u8]>) {
    let mut writes = writes.lock().unwrap_or_else(|p| p.into_inner());
    journal::record(&mut writes, table, key, value);
}

/// One table of a write transaction, open from its first use.
pub(super) struct Slot<'txn, K: Key + 'static, V: Value + 'static> {
    txn: &'txn WriteTransaction,
    definition: TableDefinition<'static, K, V>,
    /// The table's number in the journal.
    id: u8,
    writes: &'txn Writes,
    table: RefCell<Option<Table<'txn, K, V>>>,
    /// Where the handle last given out was taken, for the error of an `open` while it lives.
    taken_at: Cell<Option<&'static Location<'static>>>,
}

impl<'txn, K: Key + 'static, V: Value + 'static> Slot<'txn, K, V> {
    pub(super) fn new(
        txn: &'txn WriteTransaction,
        writes: &'txn Writes,
        id: u8,
        definition: TableDefinition<'static, K, V>,
    ) -> Self {
        Slot {
            txn,
            definition,
            id,
            writes,
            table: RefCell::new(None),
            taken_at: Cell::new(None),
        }
    }

    /// Which table this is.
    pub(super) fn definition(&self) -> TableDefinition<'static, K, V> {
        self.definition
    }

    /// The table, opened now if this is its first use in the transaction. While the
    /// returned handle lives, another `open` of the same table fails with redb's
    /// `TableAlreadyOpen`, naming where the live handle was taken.
    #[track_caller]
    pub(super) fn open(
        &self,
        op: &'static str,
        key: &str,
    ) -> Result<Open<'_, 'txn, K, V>, StoreError> {
        let Ok(mut table) = self.table.try_borrow_mut() else {
            let name = self.definition.name().to_string();
            let taken_at = self.taken_at.get().unwrap_or(Location::caller());
            let error = redb::TableError::TableAlreadyOpen(name, taken_at);
            return Err(error).context(op, key);
        };
        self.taken_at.set(Some(Location::caller()));
        if table.is_none() {
            *table = Some(self.txn.open_table(self.definition).context(op, key)?);
        }
        let table = RefMut::map(table, |open| open.as_mut().expect("opened just above"));
        Ok(Open {
            table,
            id: self.id,
            writes: self.writes,
        })
    }

    /// Apply one journaled write to this table.
    fn replay(&self, key: &[u8], value: Option<&[u8]>) -> Result<(), StoreError> {
        let mut table = self.open("replay", "")?;
        let key = K::from_bytes(key);
        let stored = match value {
            Some(value) => table.table.insert(key, V::from_bytes(value)).map(drop),
            None => table.table.remove(key).map(drop),
        };
        stored.context("replay", "")
    }
}

/// A table of a write transaction, open: reads through `Deref`, and its writes
/// ([`TableWrite`]) recorded for the journal as they are made. It has no other way to write,
/// so a write cannot bypass the journal.
pub(super) struct Open<'s, 'txn, K: Key + 'static, V: Value + 'static> {
    table: RefMut<'s, Table<'txn, K, V>>,
    id: u8,
    writes: &'s Writes,
}

/// The writes the store's helpers make: on an [`Open`] table of a writer batch (recorded for
/// the journal) or on a table of a transaction of its own (the purge's, committed durably).
pub(super) trait TableWrite<K: Key + 'static, V: Value + 'static> {
    /// The table, to read.
    type Read: ReadableTable<K, V>;

    fn read(&self) -> &Self::Read;

    fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<(), StorageError>;

    fn remove<'k>(&mut self, key: impl Borrow<K::SelfType<'k>>) -> Result<(), StorageError>;
}

impl<'t, K: Key + 'static, V: Value + 'static> TableWrite<K, V> for Table<'t, K, V> {
    type Read = Table<'t, K, V>;

    fn read(&self) -> &Self::Read {
        self
    }

    fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<(), StorageError> {
        Table::insert(self, key, value).map(drop)
    }

    fn remove<'k>(&mut self, key: impl Borrow<K::SelfType<'k>>) -> Result<(), StorageError> {
        Table::remove(self, key).map(drop)
    }
}

impl<'txn, K: Key + 'static, V: Value + 'static> TableWrite<K, V> for Open<'_, 'txn, K, V> {
    type Read = Table<'txn, K, V>;

    fn read(&self) -> &Self::Read {
        &self.table
    }

    /// [`Table::insert`], recorded.
    fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<(), StorageError> {
        let (key, value) = (key.borrow(), value.borrow());
        let value_bytes = V::as_bytes(value);
        record(
            self.writes,
            self.id,
            K::as_bytes(key).as_ref(),
            Some(value_bytes.as_ref()),
        );
        self.table.insert(key, value).map(drop)
    }

    /// [`Table::remove`], recorded.
    fn remove<'k>(&mut self, key: impl Borrow<K::SelfType<'k>>) -> Result<(), StorageError> {
        record(
            self.writes,
            self.id,
            K::as_bytes(key.borrow()).as_ref(),
            None,
        );
        self.table.remove(key).map(drop)
    }
}

impl<'txn, K: Key + 'static, V: Value + 'static> Deref for Open<'_, 'txn, K, V> {
    type Target = Table<'txn, K, V>;

    fn deref(&self) -> &Table<'txn, K, V> {
        &self.table
    }
}

/// The tables the store's writes use, in one write transaction.
pub(super) struct Tables<'txn> {
    pub(super) idempotency: Slot<'txn, &'static str, &'static [u8]>,
    pub(super) idempotency_records: Slot<'txn, u64, &'static [u8]>,
    pub(super) idempotency_due: Slot<'txn, (u64, &'static str), ()>,
    pub(super) owners: Slot<'txn, &'static str, &'static [u8]>,
    pub(super) owners_due: Slot<'txn, (u64, &'static str), ()>,
    pub(super) payments: Slot<'txn, &'static str, &'static [u8]>,
    pub(super) payments_due: Slot<'txn, (u64, &'static str), ()>,
    pub(super) payment_index: Slot<'txn, &'static str, ()>,
    pub(super) references: Slot<'txn, &'static str, &'static str>,
    pub(super) held: Slot<'txn, &'static str, &'static [u8]>,
    pub(super) outbox: outbox::Tables<'txn>,
}

// Each table's number in the journal: never change or reuse one, a journal written by an
// earlier version must replay into the same tables.
const IDEMPOTENCY: u8 = 1;
const IDEMPOTENCY_RECORDS: u8 = 2;
const IDEMPOTENCY_DUE: u8 = 3;
const OWNERS: u8 = 4;
const OWNERS_DUE: u8 = 5;
const PAYMENTS: u8 = 6;
const PAYMENTS_DUE: u8 = 7;
const PAYMENT_INDEX: u8 = 8;
const REFERENCES: u8 = 9;
const HELD: u8 = 10;
pub(super) const OUTBOX_ROWS: u8 = 11;
pub(super) const OUTBOX_UNDELIVERED: u8 = 12;
pub(super) const OUTBOX_IDS: u8 = 13;
pub(super) const OUTBOX_DELIVERED: u8 = 14;

impl<'txn> Tables<'txn> {
    /// None open yet; their writes are recorded in `writes`.
    pub(super) fn new(txn: &'txn WriteTransaction, writes: &'txn Writes) -> Tables<'txn> {
        Tables {
            idempotency: Slot::new(txn, writes, IDEMPOTENCY, IDEMPOTENCY_TABLE),
            idempotency_records: Slot::new(txn, writes, IDEMPOTENCY_RECORDS, idempotency::RECORDS),
            idempotency_due: Slot::new(txn, writes, IDEMPOTENCY_DUE, due::IDEMPOTENCY_DUE),
            owners: Slot::new(txn, writes, OWNERS, OWNERS_TABLE),
            owners_due: Slot::new(txn, writes, OWNERS_DUE, due::OWNERS_DUE),
            payments: Slot::new(txn, writes, PAYMENTS, PAYMENTS_TABLE),
            payments_due: Slot::new(txn, writes, PAYMENTS_DUE, due::PAYMENTS_DUE),
            payment_index: Slot::new(txn, writes, PAYMENT_INDEX, PAYMENT_INDEX_TABLE),
            references: Slot::new(txn, writes, REFERENCES, REFERENCES_TABLE),
            held: Slot::new(txn, writes, HELD, HELD_TABLE),
            outbox: outbox::Tables::new(txn, writes),
        }
    }

    /// Apply the writes of one journal entry, in order.
    pub(super) fn replay(&self, writes: &[u8]) -> Result<(), StoreError> {
        for op in journal::ops(writes) {
            let op = op.map_err(|why| StoreError::Flush(format!("journal: {why}")))?;
            // redb decodes a key or value it cannot read with a panic (a `&str` that is not
            // UTF-8, a `u64` of other than 8 bytes): a damaged entry must fail the open with
            // an error instead.
            let applied = std::panic::catch_unwind(AssertUnwindSafe(|| self.apply(&op)));
            applied.unwrap_or_else(|_| {
                Err(StoreError::Flush(format!(
                    "journal: a write to table number {} holds a key or value that table \
                     cannot read",
                    op.table
                )))
            })?;
        }
        Ok(())
    }

    fn apply(&self, op: &journal::Op<'_>) -> Result<(), StoreError> {
        let (key, value) = (op.key, op.value);
        match op.table {
            IDEMPOTENCY => self.idempotency.replay(key, value),
            IDEMPOTENCY_RECORDS => self.idempotency_records.replay(key, value),
            IDEMPOTENCY_DUE => self.idempotency_due.replay(key, value),
            OWNERS => self.owners.replay(key, value),
            OWNERS_DUE => self.owners_due.replay(key, value),
            PAYMENTS => self.payments.replay(key, value),
            PAYMENTS_DUE => self.payments_due.replay(key, value),
            PAYMENT_INDEX => self.payment_index.replay(key, value),
            REFERENCES => self.references.replay(key, value),
            HELD => self.held.replay(key, value),
            OUTBOX_ROWS => self.outbox.rows.replay(key, value),
            OUTBOX_UNDELIVERED => self.outbox.undelivered.replay(key, value),
            OUTBOX_IDS => self.outbox.ids.replay(key, value),
            OUTBOX_DELIVERED => self.outbox.delivered.replay(key, value),
            other => Err(StoreError::Flush(format!(
                "journal: a write to table number {other}, which this version does not have"
            ))),
        }
    }
}

/// What a writer batch keeps open: its transaction and the writes its tables made.
pub(super) struct Owner {
    txn: WriteTransaction,
    writes: Writes,
}

self_cell::self_cell!(
    /// A write transaction with its [`Tables`]: what a writer batch keeps open between its
    /// calls.
    pub(super) struct OpenTransaction {
        owner: Owner,
        #[not_covariant]
        dependent: Tables,
    }
);

impl OpenTransaction {
    /// `txn`, no table open yet.
    pub(super) fn begin(txn: WriteTransaction) -> OpenTransaction {
        let owner = Owner {
            txn,
            writes: Writes::default(),
        };
        OpenTransaction::new(owner, |owner| Tables::new(&owner.txn, &owner.writes))
    }

    /// The transaction, every table closed (their new roots staged), ready to commit or
    /// abort, and the writes its tables made.
    pub(super) fn close(self) -> (WriteTransaction, Vec<u8>) {
        let owner = self.into_owner();
        let writes = owner.writes.into_inner().unwrap_or_else(|p| p.into_inner());
        (owner.txn, writes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

    #[test]
    fn a_table_opens_once_and_is_refused_while_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("db")).unwrap();
        let txn = db.begin_write().unwrap();
        let writes = Writes::default();
        let tables = Tables::new(&txn, &writes);
        tables
            .held
            .open("put", "a")
            .unwrap()
            .insert("a", &b"1"[..])
            .unwrap();
        {
            let (held, taken) = (tables.held.open("put", "b").unwrap(), line!());
            let again = tables.held.open("put", "c");
            let Err(StoreError::Db { op, key, source }) = again else {
                panic!("a second open while the first is in use")
            };
            assert_eq!((op, key.as_str()), ("put", "c"));
            assert!(
                matches!(
                    *source,
                    redb::Error::TableAlreadyOpen(ref name, at)
                        if name == "held_notices" && at.file() == file!() && at.line() == taken
                ),
                "names the table and where its live handle was taken: {source}"
            );
            // The open handle still works, and sees the write before it.
            assert!(held.get("a").unwrap().is_some());
        }
        tables
            .held
            .open("put", "b")
            .unwrap()
            .insert("b", &b"2"[..])
            .unwrap();
        // The raw transaction cannot open a table its Tables hold open.
        assert!(txn.open_table(HELD_TABLE).is_err());
        drop(tables);
        txn.commit().unwrap();
        let read = db.begin_read().unwrap();
        let held = read.open_table(HELD_TABLE).unwrap();
        assert_eq!(held.len().unwrap(), 2);
    }

    #[test]
    fn replaying_writes_a_table_cannot_read_fails_without_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("db")).unwrap();
        let txn = db.begin_write().unwrap();
        let writes = Writes::default();
        let tables = Tables::new(&txn, &writes);
        let replay = |table: u8, key: &[u8], value: &[u8]| {
            let mut entry = Vec::new();
            journal::record(&mut entry, table, key, Some(value));
            tables.replay(&entry).map_err(|e| e.to_string())
        };
        // A u64 key of 3 bytes; a `&str` key that is not UTF-8; a table this version lacks.
        let short = replay(IDEMPOTENCY_RECORDS, &[1, 2, 3], b"{}").unwrap_err();
        assert!(
            short.contains("table number 2 holds a key or value"),
            "{short}"
        );
        assert!(replay(HELD, &[0xff, 0xfe], b"{}").is_err());
        let unknown = replay(200, b"k", b"v").unwrap_err();
        assert!(unknown.contains("table number 200"), "{unknown}");
        // A readable one is applied.
        replay(HELD, b"k", b"v").unwrap();
        assert!(tables
            .held
            .open("get", "k")
            .unwrap()
            .get("k")
            .unwrap()
            .is_some());
    }

    #[test]
    fn a_transaction_kept_open_commits_what_its_tables_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("db")).unwrap();
        let open = OpenTransaction::begin(db.begin_write().unwrap());
        for key in ["a", "b", "c"] {
            open.with_dependent(|_, tables| {
                let mut held = tables.held.open("put", key).unwrap();
                held.insert(key, key.as_bytes()).unwrap();
            });
        }
        open.close().0.commit().unwrap();
        let read = db.begin_read().unwrap();
        let held = read.open_table(HELD_TABLE).unwrap();
        let keys: Vec<String> = held
            .iter()
            .unwrap()
            .map(|row| row.unwrap().0.value().to_string())
            .collect();
        assert_eq!(keys, ["a", "b", "c"]);
    }
}
