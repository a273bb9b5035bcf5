//! The writer's batch: every write of one writer batch ([`crate::store::Writer`]) goes into
//! one redb write transaction, committed durably once when the batch settles.
//!
//! A write is split in two: `decide` reads (inside the batch's transaction, so it sees the
//! batch's earlier writes: a second claim of a key claimed earlier in the batch is refused)
//! and chooses, and may fail without having changed anything; `mutate` only stores what
//! was decided. A call that fails in `decide` fails alone. A `mutate` that fails or panics
//! halfway breaks the batch: its transaction is dropped at the settle, so nothing of the
//! batch is written, and every call of the batch is answered with the error (the writer
//! fails a whole batch whose settle fails). No call of a batch is answered before its
//! transaction is durable, exactly as when each call committed and flushed on its own.
//!
//! Point reads on the writer (`payment`, `owner`, `payment_by_reference`, `next_event_seq`)
//! also run in the batch's transaction when one is open: a call that reads what an earlier
//! call of the batch wrote sees it, as it would had that call committed on its own.

use std::sync::{Mutex, MutexGuard};

use redb::Database;

use super::group::GroupCommit;
use super::journal::{self, Journal};
use super::tables::{OpenTransaction, Tables};
use super::Context;
use crate::store::StoreError;

#[derive(Default)]
struct State {
    /// The batch's transaction, begun by its first write, with the tables its calls
    /// opened: each is opened once a batch, not once a call.
    txn: Option<OpenTransaction>,
    /// Why the batch cannot be committed: a write failed halfway.
    broken: Option<String>,
    /// A `mutate` is running; still set at the settle when it panicked.
    mutating: bool,
}

impl State {
    /// Why the batch's transaction must not be committed: a write failed halfway, or one
    /// panicked halfway (`mutating` still set).
    fn broken(&self) -> Option<String> {
        self.broken.clone().or_else(|| {
            self.mutating
                .then(|| "a write of the same batch panicked halfway".to_string())
        })
    }
}

/// The open batch of one store's writer. Only the writer thread touches it.
#[derive(Default)]
pub(super) struct Batch {
    state: Mutex<State>,
    /// Where batches are made durable ([`journal`]); without one (or once it failed), each
    /// batch commits redb durably.
    journal: Mutex<Option<Journal>>,
}

impl Batch {
    /// A batch made durable through `journal`.
    pub(super) fn with_journal(journal: Journal) -> Batch {
        Batch {
            state: Mutex::default(),
            journal: Mutex::new(Some(journal)),
        }
    }

    /// The journal, for the tests to inspect or tune.
    #[cfg(test)]
    pub(super) fn journal(&self) -> MutexGuard<'_, Option<Journal>> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in `decide` leaves nothing half done; one in `mutate` leaves `mutating`
        // set, which breaks the batch at the settle.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run one write in the batch's transaction (see the module documentation).
    pub(super) fn write<D, T>(
        &self,
        db: &Database,
        op: &'static str,
        key: &str,
        decide: impl FnOnce(&Tables<'_>) -> Result<(T, Option<D>), StoreError>,
        mutate: impl FnOnce(&Tables<'_>, D) -> Result<(), StoreError>,
    ) -> Result<T, StoreError> {
        let mut state = self.lock();
        if let Some(why) = state.broken() {
            return Err(StoreError::Flush(why));
        }
        if state.txn.is_none() {
            let txn = db.begin_write().context(op, key)?;
            state.txn = Some(OpenTransaction::begin(txn));
        }
        let State { txn, mutating, .. } = &mut *state;
        let txn = txn.as_ref().expect("begun above");
        let (out, decided) = txn.with_dependent(|_, tables| decide(tables))?;
        let Some(decided) = decided else {
            return Ok(out);
        };
        *mutating = true;
        let mutated = txn.with_dependent(|_, tables| mutate(tables, decided));
        *mutating = false;
        if let Err(e) = mutated {
            state.broken = Some(format!("a write of the same batch failed halfway: {e}"));
            return Err(e);
        }
        Ok(out)
    }

    /// Whether the batch can no longer be committed (a write of it failed or panicked
    /// halfway): its settle will fail every call of it.
    pub(super) fn doomed(&self) -> bool {
        self.lock().broken().is_some()
    }

    /// Run `read` in the batch's transaction when one is open, so it sees the batch's own
    /// writes; `None` when none is (the caller reads in a transaction of its own).
    pub(super) fn read<T>(
        &self,
        read: impl FnOnce(&Tables<'_>) -> Result<T, StoreError>,
    ) -> Option<Result<T, StoreError>> {
        let state = self.lock();
        if let Some(why) = state.broken() {
            return Some(Err(StoreError::Flush(why)));
        }
        let txn = state.txn.as_ref()?;
        Some(txn.with_dependent(|_, tables| read(tables)))
    }

    /// Commit the batch so far durably, before a write that needs a transaction of its
    /// own (the batch's holds redb's only write slot). The batch goes on; if this commit
    /// fails, so does the batch's settle.
    pub(super) fn commit_early(&self, group: &GroupCommit) -> Result<(), StoreError> {
        let mut state = self.lock();
        if let Some(why) = state.broken() {
            return Err(StoreError::Flush(why));
        }
        let Some(txn) = state.txn.take() else {
            return Ok(());
        };
        let committed = group.commit_durably(txn.close().0).context("commit", "");
        if let Err(e) = &committed {
            state.broken = Some(format!("committing the batch failed: {e}"));
        }
        committed
    }

    /// End the batch: commit its transaction durably (which also makes every commit before
    /// it durable), or, when no call wrote, make sure what its reads saw is durable. A broken
    /// batch is dropped and fails.
    pub(super) fn settle(&self, db: &Database, group: &GroupCommit) -> Result<(), StoreError> {
        let (txn, broken) = {
            let mut state = self.lock();
            let broken = state.broken();
            state.broken = None;
            state.mutating = false;
            (state.txn.take(), broken)
        };
        if let Some(why) = broken {
            if let Some(txn) = txn {
                // Rolled back: nothing of the batch is written.
                txn.close().0.abort().context("settle", "")?;
            }
            return Err(StoreError::Flush(why));
        }
        let Some(txn) = txn else {
            return group.settle(db).context("flush", "");
        };
        let (txn, writes) = txn.close();
        let mut journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        // Journaled only on top of a durable state (see `journal`): a write of another
        // thread still waiting for its flush goes durable with this batch's commit instead.
        let Some(open) = journal.as_mut().filter(|_| group.all_durable()) else {
            return group.commit_durably(txn).context("commit", "");
        };
        if writes.is_empty() {
            // Nothing written, and what the batch read is durable already.
            return txn.abort().context("settle", "");
        }
        journal::set_applied(&txn, open.next_number()).context("commit", "")?;
        let number = group.commit_unflushed(txn).context("commit", "")?;
        if let Err(error) = open.append(&writes) {
            tracing::error!(
                journal = %open.path().display(),
                %error,
                "store: writing the journal failed; every batch commits the store durably from now on"
            );
            *journal = None;
            // The batch is committed (not durably): a durable commit makes it durable.
            let flush = db.begin_write().context("commit", "")?;
            return group.commit_durably(flush).context("commit", "");
        }
        group.journaled(number);
        Ok(())
    }

    /// After a batch is answered: when the journal holds [`journal::CHECKPOINT_BYTES`] of
    /// entries, commit redb durably (every entry so far goes into its file) and start the
    /// journal again; `true` when it did. A failure loses nothing (the entries stay in the
    /// journal and are applied at the next open); the journal then grows until a checkpoint
    /// succeeds.
    pub(super) fn checkpoint_if_due(&self, db: &Database, group: &GroupCommit) -> bool {
        let mut journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        let Some(open) = journal.as_mut().filter(|open| open.checkpoint_due()) else {
            return false;
        };
        let checkpoint = db
            .begin_write()
            .map_err(redb::Error::from)
            .and_then(|flush| group.commit_durably(flush));
        match checkpoint {
            Ok(()) => open.restart(),
            Err(error) => tracing::error!(%error, "store: a checkpoint of the journal failed"),
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redb_store::tables::TableWrite;
    use crate::store::redb_store::HELD_TABLE as T;
    use redb::{ReadableDatabase, ReadableTable};

    fn open() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("db")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(T).unwrap();
        txn.commit().unwrap();
        (dir, db)
    }

    /// Put `key` unless it is there (then `Ok(false)`), as a batch write.
    fn put(batch: &Batch, db: &Database, key: &str, value: u64) -> Result<bool, StoreError> {
        batch.write(
            db,
            "put",
            key,
            |tables| {
                let there = tables.held.open("put", key)?.get(key).unwrap().is_some();
                Ok((!there, (!there).then_some(value)))
            },
            |tables, value| {
                let value = value.to_string();
                tables
                    .held
                    .open("put", key)?
                    .insert(key, value.as_bytes())
                    .unwrap();
                Ok(())
            },
        )
    }

    fn stored(db: &Database) -> Vec<(String, u64)> {
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(T).unwrap();
        let rows = table.iter().unwrap().map(|row| {
            let (k, v) = row.unwrap();
            let value = std::str::from_utf8(v.value()).unwrap().parse().unwrap();
            (k.value().to_string(), value)
        });
        rows.collect()
    }

    #[test]
    fn a_batch_sees_its_own_writes_and_commits_them_once_at_the_settle() {
        let (_dir, db) = open();
        let (batch, group) = (Batch::default(), GroupCommit::default());
        assert!(put(&batch, &db, "a", 1).unwrap());
        assert!(
            !put(&batch, &db, "a", 2).unwrap(),
            "the second put saw the first"
        );
        assert!(put(&batch, &db, "b", 3).unwrap());
        assert!(
            stored(&db).is_empty(),
            "nothing is visible before the settle"
        );
        batch.settle(&db, &group).unwrap();
        assert_eq!(stored(&db), [("a".into(), 1), ("b".into(), 3)]);
        // A batch of reads only flushes (nothing to commit).
        batch.settle(&db, &group).unwrap();
    }

    #[test]
    fn a_call_failing_before_it_writes_fails_alone() {
        let (_dir, db) = open();
        let (batch, group) = (Batch::default(), GroupCommit::default());
        put(&batch, &db, "a", 1).unwrap();
        let refused: Result<(), _> = batch.write(
            &db,
            "refuse",
            "x",
            |_| Err::<((), Option<()>), _>(StoreError::Task("refused".into())),
            |_, ()| unreachable!(),
        );
        assert!(matches!(refused, Err(StoreError::Task(_))));
        put(&batch, &db, "b", 2).unwrap();
        batch.settle(&db, &group).unwrap();
        assert_eq!(stored(&db), [("a".into(), 1), ("b".into(), 2)]);
    }

    #[test]
    fn a_write_failing_or_panicking_halfway_drops_the_whole_batch() {
        let (_dir, db) = open();
        let (batch, group) = (Batch::default(), GroupCommit::default());
        for panics in [false, true] {
            put(&batch, &db, "before", 1).unwrap();
            let halfway = || {
                batch.write(
                    &db,
                    "halfway",
                    "h",
                    |_| Ok(((), Some(()))),
                    |tables, ()| {
                        let mut held = tables.held.open("halfway", "h")?;
                        held.insert("half", &b"9"[..]).unwrap();
                        if panics {
                            panic!("a bug halfway");
                        }
                        Err(StoreError::Task("the disk is full".into()))
                    },
                )
            };
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(halfway)) {
                Ok(result) => assert!(result.is_err()),
                Err(_) => assert!(panics),
            }
            // Later calls of a broken batch fail at once, and an early commit refuses to
            // commit the half-done write.
            assert!(matches!(
                put(&batch, &db, "after", 2),
                Err(StoreError::Flush(_))
            ));
            assert!(matches!(
                batch.commit_early(&group),
                Err(StoreError::Flush(_))
            ));
            assert!(batch.doomed(), "panics: {panics}");
            let settled = batch.settle(&db, &group);
            assert!(matches!(settled, Err(StoreError::Flush(_))), "{settled:?}");
            assert!(!batch.doomed(), "the next batch starts clean");
            assert!(
                stored(&db).is_empty(),
                "panics: {panics}: {:?}",
                stored(&db)
            );
        }
        // The next batch starts clean.
        put(&batch, &db, "next", 3).unwrap();
        batch.settle(&db, &group).unwrap();
        assert_eq!(stored(&db), [("next".into(), 3)]);
    }

    #[test]
    fn an_early_commit_keeps_the_batch_going_and_frees_the_write_slot() {
        let (_dir, db) = open();
        let (batch, group) = (Batch::default(), GroupCommit::default());
        put(&batch, &db, "a", 1).unwrap();
        batch.commit_early(&group).unwrap();
        // redb's write slot is free: a transaction of its own begins (and does not block).
        let own = db.begin_write().unwrap();
        own.open_table(T).unwrap().insert("own", &b"7"[..]).unwrap();
        own.commit().unwrap();
        put(&batch, &db, "b", 2).unwrap();
        batch.settle(&db, &group).unwrap();
        let expected = [("a".into(), 1), ("b".into(), 2), ("own".into(), 7)];
        assert_eq!(stored(&db), expected);
    }
}
