//! The tables a write transaction uses, each opened at its first use and kept open until
//! the transaction ends. Opening a redb table looks its root up in the table tree and
//! closing it stages the new root: a payment's writes touch a dozen tables, and a writer
//! batch holds many payments, so the batch opens each table once instead of once per use.
//!
//! Every write of a transaction that has [`Tables`] goes through them: redb refuses to open
//! a table twice at once, and so does a [`Slot`] (with redb's own error, never a panic).

use std::cell::{Cell, RefCell, RefMut};
use std::panic::Location;

use redb::{Key, Table, TableDefinition, TableHandle, Value, WriteTransaction};

use super::{due, idempotency, outbox, Context};
use super::{
    HELD_TABLE, IDEMPOTENCY_TABLE, OWNERS_TABLE, PAYMENTS_TABLE, PAYMENT_INDEX_TABLE,
    REFERENCES_TABLE,
};
use crate::store::StoreError;

/// One table of a write transaction, open from its first use.
pub(super) struct Slot<'txn, K: Key + 'static, V: Value + 'static> {
    txn: &'txn WriteTransaction,
    definition: TableDefinition<'static, K, V>,
    table: RefCell<Option<Table<'txn, K, V>>>,
    /// Where the handle last given out was taken, for the error of an `open` while it lives.
    taken_at: Cell<Option<&'static Location<'static>>>,
}

impl<'txn, K: Key + 'static, V: Value + 'static> Slot<'txn, K, V> {
    pub(super) fn new(
        txn: &'txn WriteTransaction,
        definition: TableDefinition<'static, K, V>,
    ) -> Self {
        Slot {
            txn,
            definition,
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
    ) -> Result<RefMut<'_, Table<'txn, K, V>>, StoreError> {
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
        Ok(RefMut::map(table, |open| {
            open.as_mut().expect("opened just above")
        }))
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

impl<'txn> Tables<'txn> {
    /// None open yet.
    pub(super) fn new(txn: &'txn WriteTransaction) -> Tables<'txn> {
        Tables {
            idempotency: Slot::new(txn, IDEMPOTENCY_TABLE),
            idempotency_records: Slot::new(txn, idempotency::RECORDS),
            idempotency_due: Slot::new(txn, due::IDEMPOTENCY_DUE),
            owners: Slot::new(txn, OWNERS_TABLE),
            owners_due: Slot::new(txn, due::OWNERS_DUE),
            payments: Slot::new(txn, PAYMENTS_TABLE),
            payments_due: Slot::new(txn, due::PAYMENTS_DUE),
            payment_index: Slot::new(txn, PAYMENT_INDEX_TABLE),
            references: Slot::new(txn, REFERENCES_TABLE),
            held: Slot::new(txn, HELD_TABLE),
            outbox: outbox::Tables::new(txn),
        }
    }
}

self_cell::self_cell!(
    /// A write transaction with its [`Tables`]: what a writer batch keeps open between its
    /// calls.
    pub(super) struct OpenTransaction {
        owner: WriteTransaction,
        #[not_covariant]
        dependent: Tables,
    }
);

impl OpenTransaction {
    /// `txn`, no table open yet.
    pub(super) fn begin(txn: WriteTransaction) -> OpenTransaction {
        OpenTransaction::new(txn, |txn| Tables::new(txn))
    }

    /// The transaction, every table closed (their new roots staged), ready to commit or
    /// abort.
    pub(super) fn close(self) -> WriteTransaction {
        self.into_owner()
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
        let tables = Tables::new(&txn);
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
        open.close().commit().unwrap();
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
