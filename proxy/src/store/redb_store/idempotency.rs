//! Where the redb store keeps idempotency records: the key's entry holds only the number of
//! its record, and the record lives in a table ordered by that number, given out in claim
//! order. A payment writes its record three times, in three writer batches (claim, attempt,
//! outcome). Keyed by the storefront's random key, each of those writes copied a leaf of
//! its own somewhere in the table and wrote it out with the batch's commit; numbered, the
//! records of payments claimed together sit in the same few leaves, so the attempt and the
//! outcome rewrite pages the whole batch shares, and only the claim touches a random leaf
//! (of a table of small entries). Page writes are most of what a durable commit costs.
//!
//! A file from before keeps a record in its entry (JSON, starting with `{`) until the
//! record's next write, which moves it; both are read alike.

use std::sync::atomic::{AtomicU64, Ordering};

use redb::{ReadableTable, TableDefinition};

use super::tables::TableWrite;
use super::Context;
use crate::store::record::{self, Record, IDEMPOTENCY};
use crate::store::StoreError;

/// Record number → JSON [`Record`].
pub(super) const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("idempotency_records");

/// First byte of an entry that holds a record's number (a JSON record starts with `{`).
const NUMBERED: u8 = 0;

/// Where a key's record is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Place {
    /// In the key's entry, as a file from before keeps it.
    Entry,
    /// In [`RECORDS`] under this number.
    Numbered(u64),
}

/// What a key's entry holds to point at record `number`.
fn entry(number: u64) -> [u8; 9] {
    let mut bytes = [NUMBERED; 9];
    bytes[1..].copy_from_slice(&number.to_be_bytes());
    bytes
}

fn place(entry: &[u8]) -> Place {
    match entry {
        [NUMBERED, number @ ..] if number.len() == 8 => {
            let mut be = [0; 8];
            be.copy_from_slice(number);
            Place::Numbered(u64::from_be_bytes(be))
        }
        _ => Place::Entry,
    }
}

/// The next record numbers, given out in claim order; after a restart they go on from the
/// highest stored.
#[derive(Debug)]
pub(super) struct Numbers(AtomicU64);

impl Numbers {
    pub(super) fn after(
        records: &impl ReadableTable<u64, &'static [u8]>,
    ) -> Result<Self, StoreError> {
        let last = records.last().context("open", "*")?;
        Ok(Numbers(AtomicU64::new(
            last.map_or(0, |(n, _)| n.value()) + 1,
        )))
    }

    fn take(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// `key`'s record and where it is.
pub(super) fn get(
    keys: &impl ReadableTable<&'static str, &'static [u8]>,
    records: &impl ReadableTable<u64, &'static [u8]>,
    op: &'static str,
    key: &str,
) -> Result<Option<(Record, Place)>, StoreError> {
    let Some(found) = keys.get(key).context(op, key)? else {
        return Ok(None);
    };
    let found = found.value();
    match place(found) {
        Place::Entry => Ok(Some((
            record::decode(IDEMPOTENCY, key, found)?,
            Place::Entry,
        ))),
        Place::Numbered(number) => {
            let Some(stored) = records.get(number).context(op, key)? else {
                let why = format!("its record {number} is missing");
                return Err(StoreError::Decode {
                    table: IDEMPOTENCY,
                    key: key.to_string(),
                    source: serde::de::Error::custom(why),
                });
            };
            let decoded = record::decode(IDEMPOTENCY, key, stored.value())?;
            Ok(Some((decoded, Place::Numbered(number))))
        }
    }
}

/// Store `bytes` as `key`'s record, in place when it has a number already; a new record,
/// or one still in its entry, gets the next number.
pub(super) fn put(
    keys: &mut impl TableWrite<&'static str, &'static [u8]>,
    records: &mut impl TableWrite<u64, &'static [u8]>,
    numbers: &Numbers,
    op: &'static str,
    key: &str,
    was: Option<Place>,
    bytes: &[u8],
) -> Result<(), StoreError> {
    let number = match was {
        Some(Place::Numbered(number)) => number,
        None | Some(Place::Entry) => {
            let number = numbers.take();
            keys.insert(key, entry(number).as_slice())
                .context(op, key)?;
            number
        }
    };
    records.insert(number, bytes).context(op, key)?;
    Ok(())
}

/// Delete `key`'s entry and its record.
pub(super) fn remove(
    keys: &mut impl TableWrite<&'static str, &'static [u8]>,
    records: &mut impl TableWrite<u64, &'static [u8]>,
    op: &'static str,
    key: &str,
    was: Place,
) -> Result<(), StoreError> {
    keys.remove(key).context(op, key)?;
    if let Place::Numbered(number) = was {
        records.remove(number).context(op, key)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_a_number_or_a_record_from_before() {
        assert_eq!(place(&entry(0)), Place::Numbered(0));
        assert_eq!(place(&entry(u64::MAX)), Place::Numbered(u64::MAX));
        assert_eq!(place(br#"{"state":"done"}"#), Place::Entry);
        assert_eq!(
            place(&[NUMBERED; 8]),
            Place::Entry,
            "too short for a number"
        );
    }
}
