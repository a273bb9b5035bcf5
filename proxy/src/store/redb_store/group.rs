//! Group commit: many writes, one fsync.
//!
//! Each write transaction commits with `Durability::None` (visible at once, nothing flushed)
//! and its caller then waits until a durable commit covers it. The first waiter that finds
//! no flush under way leads one: an empty transaction committed with
//! `Durability::Immediate`, which makes every commit before it durable (redb's contract for
//! non-durable commits). Waiters that arrived meanwhile are covered by that flush or lead the
//! next, so under load one fsync acknowledges every write that queued behind the last one,
//! and an idle store still pays exactly one fsync per write.
//!
//! Writes are numbered while their transaction is open: redb runs one write transaction at
//! a time, so numbers follow commit order, and a flush that starts after reading the
//! highest number waits (in `begin_write`) for that write to commit before it runs. A
//! write is acknowledged only after the flush covering its number returned, so every
//! acknowledged write survives `kill -9` or power loss exactly as with one fsync per write.
//!
//! Calls on the store's writer thread ([`crate::store::Writer`]) do not come here: they write
//! in the writer's batch, which ends with [`GroupCommit::commit_durably`].

use std::panic::AssertUnwindSafe;
use std::sync::{Condvar, Mutex, MutexGuard};

use redb::{Database, Durability, WriteTransaction};

/// Numbers of writes committed and made durable, and the flush in progress.
#[derive(Debug, Default)]
struct State {
    /// The number of the last write that began committing.
    numbered: u64,
    /// Every write numbered up to this one is durable.
    durable: u64,
    /// A waiter is flushing now.
    flushing: bool,
    /// The last flush that failed: the writes it covered, and why.
    failed: Option<(u64, String)>,
    /// Flushes run (the tests count them against writes).
    flushes: u64,
}

/// The group-commit state of one database.
#[derive(Debug, Default)]
pub(super) struct GroupCommit {
    state: Mutex<State>,
    flushed: Condvar,
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Commit `txn`, then return once it is durable.
    pub(super) fn commit(&self, db: &Database, txn: WriteTransaction) -> Result<(), redb::Error> {
        let number = self.commit_unflushed(txn)?;
        self.wait(db, number)
    }

    /// Return once every write committed so far is durable: a read settles before it answers,
    /// so nothing is ever decided on a write that a crash could still undo.
    pub(super) fn settle(&self, db: &Database) -> Result<(), redb::Error> {
        let number = self.lock().numbered;
        self.wait(db, number)
    }

    /// Commit `txn` durably (an fsync before this returns): it and every write committed
    /// before it are on disk. The writer's batch ends with this instead of a commit and a
    /// flush of its own.
    pub(super) fn commit_durably(&self, mut txn: WriteTransaction) -> Result<(), redb::Error> {
        // `txn` holds redb's only write slot, so every write numbered so far has committed.
        let through = self.lock().numbered;
        txn.set_durability(Durability::Immediate)?;
        txn.commit()?;
        let mut state = self.lock();
        state.durable = state.durable.max(through);
        state.flushes += 1;
        self.flushed.notify_all();
        Ok(())
    }

    /// Whether every write committed so far is durable (none waits for its flush, none lost
    /// with a failed one).
    pub(super) fn all_durable(&self) -> bool {
        let state = self.lock();
        state.durable >= state.numbered
    }

    /// Commit `txn` without a flush, numbered: a write waiting for its flush, or the writer's
    /// batch, made durable by its journal entry, after which the writer passes the number to
    /// [`GroupCommit::journaled`].
    pub(super) fn commit_unflushed(&self, mut txn: WriteTransaction) -> Result<u64, redb::Error> {
        txn.set_durability(Durability::None)?;
        let number = {
            let mut state = self.lock();
            state.numbered += 1;
            state.numbered
        };
        txn.commit()?;
        Ok(number)
    }

    /// Write `number` (and, as it was committed on top of a durable state, every one before
    /// it) is durable: its journal entry is synced.
    pub(super) fn journaled(&self, number: u64) {
        let mut state = self.lock();
        state.durable = state.durable.max(number);
        self.flushed.notify_all();
    }

    /// Flushes run so far.
    #[cfg(test)]
    fn flushes(&self) -> u64 {
        self.lock().flushes
    }

    fn wait(&self, db: &Database, number: u64) -> Result<(), redb::Error> {
        let mut state = self.lock();
        loop {
            if state.durable >= number {
                return Ok(());
            }
            if let Some((through, why)) = &state.failed {
                if number <= *through {
                    let why = format!("flushing to disk failed: {why}");
                    return Err(redb::Error::Io(std::io::Error::other(why)));
                }
            }
            if state.flushing {
                state = self.flushed.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            state.flushing = true;
            drop(state);
            // A panic inside redb must not leave `flushing` set: every later call would wait
            // for a flush nobody runs. It fails the writes it was to cover instead.
            let flushed = std::panic::catch_unwind(AssertUnwindSafe(|| self.flush(db)));
            state = self.lock();
            state.flushing = false;
            state.flushes += 1;
            match flushed {
                Ok((through, Ok(()))) => state.durable = state.durable.max(through),
                Ok((through, Err(e))) => state.failed = Some((through, e.to_string())),
                Err(_) => state.failed = Some((state.numbered, "the flush panicked".into())),
            }
            self.flushed.notify_all();
        }
    }

    /// An empty transaction committed durably: everything committed before it reaches the
    /// disk. Returns the last write it covers: read once it holds redb's write slot, when
    /// every write numbered so far has committed (or failed).
    fn flush(&self, db: &Database) -> (u64, Result<(), redb::Error>) {
        let mut txn = match db.begin_write() {
            Ok(txn) => txn,
            Err(e) => return (self.lock().numbered, Err(e.into())),
        };
        let through = self.lock().numbered;
        let committed = txn
            .set_durability(Durability::Immediate)
            .map_err(redb::Error::from)
            .and_then(|()| txn.commit().map_err(redb::Error::from));
        (through, committed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition};
    use std::sync::Arc;

    const T: TableDefinition<u64, u64> = TableDefinition::new("t");

    fn write(db: &Database, group: &GroupCommit, k: u64) {
        let txn = db.begin_write().unwrap();
        txn.open_table(T).unwrap().insert(k, k).unwrap();
        group.commit(db, txn).unwrap();
    }

    #[test]
    fn alone_each_write_is_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("db")).unwrap();
        let group = GroupCommit::default();
        for k in 0..5 {
            write(&db, &group, k);
        }
        assert_eq!(group.flushes(), 5);
        group.settle(&db).unwrap();
        assert_eq!(group.flushes(), 5, "nothing left to flush");
    }

    #[test]
    fn concurrent_writes_share_flushes_and_all_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let db = Arc::new(Database::create(&path).unwrap());
        let group = Arc::new(GroupCommit::default());
        let threads: Vec<_> = (0..32u64)
            .map(|t| {
                let (db, group) = (db.clone(), group.clone());
                std::thread::spawn(move || {
                    for i in 0..20 {
                        write(&db, &group, t * 100 + i);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let flushes = group.flushes();
        assert!(flushes < 640, "640 writes took {flushes} flushes");
        drop(db);
        let db = Database::create(&path).unwrap();
        let txn = db.begin_read().unwrap();
        assert_eq!(txn.open_table(T).unwrap().len().unwrap(), 640);
    }
}
