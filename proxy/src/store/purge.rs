//! What a purge may delete and when, shared by every store so they cannot disagree.
//!
//! Each table a purge reads has an index of `(stamp_ms, key)`, oldest first, next to it: a
//! finished idempotency record is indexed at its expiry, a payment record at its creation,
//! an owner at its last write; in-flight idempotency records are not indexed at all (never
//! purged). A purge call walks the indexes from the oldest entry up to each table's cutoff,
//! at most `limit` entries, so its cost follows what is due, not the size of the store.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::record::Record;
use super::{Owner, PaymentEntry};

/// What one [`Store::purge_expired`](super::Store::purge_expired) call deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Finished idempotency records past their TTL.
    pub idempotency: usize,
    /// Payment records (and their list entries) past the retention.
    pub payments: usize,
    /// Owner records past the retention.
    pub owners: usize,
    /// The call stopped at its limit: more may be due.
    pub more: bool,
}

impl Purged {
    /// Records deleted, all tables together.
    pub fn total(&self) -> usize {
        self.idempotency + self.payments + self.owners
    }
}

/// How an owner is stored: the owner, and when it was written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct StoredOwner {
    #[serde(flatten)]
    pub owner: Owner,
    /// Unix milliseconds of the last write. Absent in owners written before retention
    /// existed: a durable store indexes those at the time it first opened the file with
    /// retention, so they are kept one full retention from the upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_ms: Option<u64>,
}

/// A stored value and its purge-index stamp (`None`: not indexed, never purged).
pub(super) trait Stamped {
    fn stamp_ms(&self) -> Option<u64>;
}

impl Stamped for Record {
    fn stamp_ms(&self) -> Option<u64> {
        self.expires_ms()
    }
}

impl Stamped for PaymentEntry {
    fn stamp_ms(&self) -> Option<u64> {
        Some(self.created_ms)
    }
}

impl<T: Stamped> Stamped for Box<T> {
    fn stamp_ms(&self) -> Option<u64> {
        (**self).stamp_ms()
    }
}

impl Stamped for StoredOwner {
    fn stamp_ms(&self) -> Option<u64> {
        self.written_ms
    }
}

/// The cutoffs of one purge call: entries stamped at or before them are due.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cutoffs {
    /// Idempotency records: expired at `now_ms`.
    pub idempotency: u64,
    /// Payments and owners: stamped at least `retention_ms` ago (`None`: nothing is that old).
    pub retained: Option<u64>,
}

impl Cutoffs {
    pub fn new(now_ms: u64, retention_ms: u64) -> Cutoffs {
        Cutoffs {
            idempotency: now_ms,
            retained: now_ms.checked_sub(retention_ms),
        }
    }
}

/// Whether an entry stamped `stamp_ms` is due under `cutoff`.
pub(super) fn due(stamp_ms: u64, cutoff: Option<u64>) -> bool {
    cutoff.is_some_and(|cutoff| stamp_ms <= cutoff)
}

/// Removes and returns up to `limit` entries of `index` due under `cutoff`, oldest first.
pub(super) fn take_due(
    index: &mut BTreeSet<(u64, String)>,
    cutoff: Option<u64>,
    limit: usize,
) -> Vec<(u64, String)> {
    let mut taken = Vec::new();
    while taken.len() < limit {
        match index.first() {
            Some((stamp, _)) if due(*stamp, cutoff) => taken.extend(index.pop_first()),
            _ => break,
        }
    }
    taken
}

/// The wall clock, Unix milliseconds: the stamp of an owner write.
pub(super) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_due_stops_at_the_cutoff_and_the_limit() {
        let mut index: BTreeSet<(u64, String)> = [(5, "c"), (1, "b"), (1, "a"), (9, "d")]
            .into_iter()
            .map(|(t, k)| (t, k.to_string()))
            .collect();
        assert_eq!(take_due(&mut index, None, 10), vec![]);
        let first = take_due(&mut index, Some(5), 2);
        assert_eq!(first, vec![(1, "a".into()), (1, "b".into())]);
        assert_eq!(take_due(&mut index, Some(5), 2), vec![(5, "c".into())]);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn retention_before_the_epoch_cuts_nothing() {
        assert_eq!(Cutoffs::new(10, 20).retained, None);
        assert_eq!(Cutoffs::new(30, 20).retained, Some(10));
        assert!(!due(0, None));
        assert!(due(10, Some(10)));
    }

    #[test]
    fn owners_without_a_stamp_decode() {
        let old = r#"{"provider":"a","reference":"r","currency":null}"#;
        let owner: StoredOwner = serde_json::from_str(old).unwrap();
        assert_eq!(owner.written_ms, None);
        assert_eq!(owner.owner.provider, "a");
        let new = serde_json::to_string(&StoredOwner {
            written_ms: Some(3),
            ..owner
        })
        .unwrap();
        let plain: Owner = serde_json::from_str(&new).unwrap();
        assert_eq!(plain.reference, "r", "an older binary still reads it");
    }
}
