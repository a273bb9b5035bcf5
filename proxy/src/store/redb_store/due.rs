//! The redb store's purge indexes (see `store::purge`): one table per purged table, keyed
//! `(stamp_ms, key)`, so a purge reads the oldest entries first and stops at the cutoff; and
//! the purge and the one-time backfill over them.

use redb::{Database, ReadableTable, TableDefinition, TableHandle, WriteTransaction};
use serde::Deserialize;

use super::tables::TableWrite;
use super::{
    idempotency, Context, IDEMPOTENCY_TABLE, OWNERS_TABLE, PAYMENTS_TABLE, PAYMENT_INDEX_TABLE,
    REFERENCES_TABLE,
};
use crate::store::payments::{PaymentEntry, PAYMENTS};
use crate::store::purge::{self, Cutoffs, Purged, Stamped, StoredOwner};
use crate::store::record::{self, Record, IDEMPOTENCY, OWNERS};
use crate::store::StoreError;

/// Finished idempotency records by expiry.
pub(super) const IDEMPOTENCY_DUE: TableDefinition<(u64, &str), ()> =
    TableDefinition::new("idempotency_due");
/// Payment records by creation time.
pub(super) const PAYMENTS_DUE: TableDefinition<(u64, &str), ()> =
    TableDefinition::new("payments_due");
/// Owners by time of last write.
pub(super) const OWNERS_DUE: TableDefinition<(u64, &str), ()> = TableDefinition::new("owners_due");

/// Moves `key`'s index entry from `old` to `new` (`None`: not indexed).
pub(super) fn restamp(
    index: &mut impl TableWrite<(u64, &'static str), ()>,
    key: &str,
    old: Option<u64>,
    new: Option<u64>,
) -> Result<(), redb::StorageError> {
    if old == new {
        return Ok(());
    }
    if let Some(old) = old {
        index.remove((old, key))?;
    }
    if let Some(new) = new {
        index.insert((new, key), ())?;
    }
    Ok(())
}

/// Whether the file already has purge indexes (written by a version that keeps them).
pub(super) fn indexed(txn: &WriteTransaction) -> Result<bool, redb::StorageError> {
    Ok(txn
        .list_tables()?
        .any(|table| table.name() == IDEMPOTENCY_DUE.name()))
}

/// Builds the purge indexes of a file written before they existed, in the opening
/// transaction. Owners from then have no stamp: they are indexed at `now_ms`, so they are
/// kept one full retention from the upgrade.
pub(super) fn backfill(txn: &WriteTransaction, now_ms: u64) -> Result<(), StoreError> {
    let (op, all) = ("open", "*");
    fn each<T: for<'de> Deserialize<'de>>(
        txn: &WriteTransaction,
        name: &'static str,
        table: TableDefinition<&str, &[u8]>,
        index: TableDefinition<(u64, &str), ()>,
        stamp: impl Fn(&T) -> Option<u64>,
    ) -> Result<(), StoreError> {
        let (op, all) = ("open", "*");
        let table = txn.open_table(table).context(op, all)?;
        let mut index = txn.open_table(index).context(op, all)?;
        for item in table.iter().context(op, all)? {
            let (key, value) = item.context(op, all)?;
            let key = key.value();
            match record::decode::<T>(name, key, value.value()) {
                Ok(decoded) => {
                    if let Some(stamp) = stamp(&decoded) {
                        index.insert((stamp, key), ()).context(op, key)?;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "store: an undecodable record is never purged")
                }
            }
        }
        Ok(())
    }
    each::<Record>(
        txn,
        IDEMPOTENCY,
        IDEMPOTENCY_TABLE,
        IDEMPOTENCY_DUE,
        Stamped::stamp_ms,
    )?;
    each::<PaymentEntry>(
        txn,
        PAYMENTS,
        PAYMENTS_TABLE,
        PAYMENTS_DUE,
        Stamped::stamp_ms,
    )?;
    each::<StoredOwner>(txn, OWNERS, OWNERS_TABLE, OWNERS_DUE, |o| {
        Some(o.written_ms.unwrap_or(now_ms))
    })?;
    tracing::info!(
        op,
        all,
        "store: purge indexes built for a file from an earlier version"
    );
    Ok(())
}

/// One purge call (see `Store::purge_expired`): one write transaction, at most `limit`
/// index entries, idempotency records first, then payments, then owners. Each entry is
/// checked against its record before anything is deleted, so an index entry left behind
/// (an owner rewritten without its old stamp, an undecodable record) only drops the entry.
pub(super) fn purge(
    db: &Database,
    now_ms: u64,
    retention_ms: u64,
    limit: usize,
) -> Result<Purged, StoreError> {
    let (op, all) = ("purge_expired", "*");
    let cutoffs = Cutoffs::new(now_ms, retention_ms);
    let txn = db.begin_write().context(op, all)?;
    let mut purged = Purged::default();
    let mut left = limit;
    {
        let taken = take(&txn, IDEMPOTENCY_DUE, Some(cutoffs.idempotency), left)?;
        left -= taken.len();
        let mut table = txn.open_table(IDEMPOTENCY_TABLE).context(op, all)?;
        let mut records = txn.open_table(idempotency::RECORDS).context(op, all)?;
        for (_, key) in &taken {
            let found = match idempotency::get(&table, &records, op, key) {
                Err(error @ StoreError::Decode { .. }) => {
                    tracing::warn!(%error, "store: purge keeps an undecodable record");
                    None
                }
                found => found?,
            };
            if let Some((_, place)) = found.filter(|(record, _)| record.expired(now_ms)) {
                idempotency::remove(&mut table, &mut records, op, key, place)?;
                purged.idempotency += 1;
            }
        }
    }
    {
        let taken = take(&txn, PAYMENTS_DUE, cutoffs.retained, left)?;
        left -= taken.len();
        let mut table = txn.open_table(PAYMENTS_TABLE).context(op, all)?;
        let mut list = txn.open_table(PAYMENT_INDEX_TABLE).context(op, all)?;
        let mut references = txn.open_table(REFERENCES_TABLE).context(op, all)?;
        for (_, id) in &taken {
            let Some(entry) = read::<PaymentEntry>(&table, PAYMENTS, id)? else {
                continue;
            };
            if purge::due(entry.created_ms, cutoffs.retained) {
                table.remove(id.as_str()).context(op, id)?;
                list.remove(entry.index_key().as_str()).context(op, id)?;
                for key in entry.reference_keys() {
                    super::unindex(&mut references, &key, id).context(op, id)?;
                }
                purged.payments += 1;
            }
        }
    }
    {
        let taken = take(&txn, OWNERS_DUE, cutoffs.retained, left)?;
        left -= taken.len();
        let mut table = txn.open_table(OWNERS_TABLE).context(op, all)?;
        for (stamp, id) in &taken {
            let Some(owner) = read::<StoredOwner>(&table, OWNERS, id)? else {
                continue;
            };
            if purge::due(owner.written_ms.unwrap_or(*stamp), cutoffs.retained) {
                table.remove(id.as_str()).context(op, id)?;
                purged.owners += 1;
            }
        }
    }
    purged.more = left == 0;
    if left < limit {
        txn.commit().context(op, all)?;
    } else {
        txn.abort().context(op, all)?;
    }
    Ok(purged)
}

/// Removes and returns up to `limit` entries of `index` due under `cutoff`, oldest first.
fn take(
    txn: &WriteTransaction,
    index: TableDefinition<(u64, &str), ()>,
    cutoff: Option<u64>,
    limit: usize,
) -> Result<Vec<(u64, String)>, StoreError> {
    let (op, all) = ("purge_expired", "*");
    let mut index = txn.open_table(index).context(op, all)?;
    let mut taken = Vec::new();
    for item in index.iter().context(op, all)? {
        let (key, _) = item.context(op, all)?;
        let (stamp, key) = key.value();
        if taken.len() == limit || !purge::due(stamp, cutoff) {
            break;
        }
        taken.push((stamp, key.to_string()));
    }
    for (stamp, key) in &taken {
        index.remove((*stamp, key.as_str())).context(op, key)?;
    }
    Ok(taken)
}

/// The record under `key`, or `None` when it is absent or does not decode (kept, and said).
fn read<T: for<'de> Deserialize<'de>>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &'static str,
    key: &str,
) -> Result<Option<T>, StoreError> {
    let Some(value) = table.get(key).context("purge_expired", key)? else {
        return Ok(None);
    };
    match record::decode(name, key, value.value()) {
        Ok(decoded) => Ok(Some(decoded)),
        Err(error) => {
            tracing::warn!(%error, "store: purge keeps an undecodable record");
            Ok(None)
        }
    }
}
