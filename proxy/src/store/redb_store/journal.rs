//! The writer's journal: what makes a writer batch durable without a durable redb commit.
//!
//! A durable redb commit writes every page the batch changed, each at its own place in the
//! file, and syncs them: under load that was about 1.9 ms a batch, while every payment of
//! the batch waited. Instead, a batch now commits to redb without an fsync
//! (`Durability::None`: visible at once, its pages kept in memory) and appends the writes it
//! made (each insert and remove, with its table, key and value) as one entry to this file,
//! then syncs the file: one sequential write. Its calls are answered after that sync, so an
//! acknowledged write is on disk exactly as before.
//!
//! Every so often ([`CHECKPOINT_BYTES`] of entries), once a batch's calls are answered, the
//! writer commits redb durably, which writes the pages of every batch since the last
//! checkpoint once (a page several batches changed is written once, not once per batch),
//! and starts the journal again from its beginning. The batch's transaction also stores its entry's number in redb
//! ([`APPLIED`]), so the durable redb file always says which entries it already holds.
//!
//! At open, after redb's own recovery, the entries after that number are applied again, in
//! order, in one durable transaction ([`super::RedbStore::open`]). An entry is a length, a
//! CRC-32 of the store's salt, its number and writes, its number and the writes; reading
//! stops at the first entry that is torn (a crash during its append: it was never
//! acknowledged), fails its checksum (a journal of another store never passes it), or does
//! not carry the next number. Entries left from before the last restart of the file carry
//! lower numbers, so they end the reading too. Entries the store lacks that cannot be
//! applied (missing, damaged with later ones after them, unreadable) fail the open ([`after`]). Writes are applied by
//! value (the key and the bytes stored), so applying an entry twice, or one redb already
//! holds, leaves the same state.
//!
//! A batch journals only when every commit before it is durable or journaled: a write from
//! another thread (its own transaction, waiting for its flush) that is not durable yet makes
//! the batch commit durably as before ([`super::batch`]), so an entry is always applied on
//! top of exactly the state it was made on.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use redb::{ReadableTable, TableDefinition, WriteTransaction};

/// The journal table: [`APPLIED`] → the number of the last entry this redb state holds, and
/// the store's salt.
const JOURNAL_TABLE: TableDefinition<&str, u64> = TableDefinition::new("journal");
const APPLIED: &str = "applied";
/// → the store's salt ([`salt`]).
const SALT: &str = "salt";

/// How many bytes of entries the writer lets the journal hold before it commits redb
/// durably and starts the journal again (a checkpoint). Larger lets more batches share the
/// pages a checkpoint writes, and makes each checkpoint (while the writer waits) longer and
/// the replay after a crash longer: 4 MiB is a few thousand payments, written in tens of
/// milliseconds.
pub(super) const CHECKPOINT_BYTES: u64 = 4 << 20;

/// An entry's header: its length (u32), the CRC-32 of the store's salt, its number and
/// writes (u32), its number (u64); all little-endian.
pub(super) const HEADER: usize = 16;

/// The most bytes one entry's writes may take: a batch writes far less (redb refuses values
/// above 3 GiB; a batch of 1,024 calls with 64 KiB bodies stays under 200 MiB).
const MAX_ENTRY: usize = 1 << 30;

/// A write of a batch: an insert (with its value) or a remove, of `key` in table `table`
/// (the number [`super::tables::Tables`] gives it).
#[derive(Debug, PartialEq)]
pub(super) struct Op<'a> {
    pub table: u8,
    pub key: &'a [u8],
    /// `None`: a remove.
    pub value: Option<&'a [u8]>,
}

const INSERT: u8 = 1;
const REMOVE: u8 = 2;

/// Append one write to a batch's writes.
pub(super) fn record(writes: &mut Vec<u8>, table: u8, key: &[u8], value: Option<&[u8]>) {
    writes.push(table);
    writes.push(if value.is_some() { INSERT } else { REMOVE });
    writes.extend_from_slice(&(key.len() as u32).to_le_bytes());
    writes.extend_from_slice(key);
    if let Some(value) = value {
        writes.extend_from_slice(&(value.len() as u32).to_le_bytes());
        writes.extend_from_slice(value);
    }
}

/// The writes of one entry, in the order they were made.
pub(super) fn ops(writes: &[u8]) -> impl Iterator<Item = Result<Op<'_>, String>> {
    let mut rest = writes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let op = next_op(&mut rest);
        if op.is_err() {
            rest = &[];
        }
        Some(op)
    })
}

fn next_op<'a>(rest: &mut &'a [u8]) -> Result<Op<'a>, String> {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if rest.len() < n {
            return Err("a journal entry ends inside a write".into());
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Ok(head)
    }
    fn len(rest: &mut &[u8]) -> Result<usize, String> {
        let bytes = take(rest, 4)?;
        Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")) as usize)
    }
    let kind = take(rest, 2)?;
    let (table, kind) = (kind[0], kind[1]);
    let key_len = len(rest)?;
    let key = take(rest, key_len)?;
    let value = match kind {
        INSERT => {
            let value_len = len(rest)?;
            Some(take(rest, value_len)?)
        }
        REMOVE => None,
        other => {
            return Err(format!(
                "a journal entry holds an unknown write kind {other}"
            ))
        }
    };
    Ok(Op { table, key, value })
}

fn checksum(salt: u64, number: u64, writes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&salt.to_le_bytes());
    hasher.update(&number.to_le_bytes());
    hasher.update(writes);
    hasher.finalize()
}

/// The journal file, appended to by the writer.
#[derive(Debug)]
pub(super) struct Journal {
    file: File,
    path: PathBuf,
    /// Where the next entry goes.
    end: u64,
    /// The next entry's number.
    next: u64,
    /// A checkpoint is due once `end` reaches this.
    checkpoint_bytes: u64,
    /// The store's own number, in every entry's checksum ([`salt`]).
    salt: u64,
}

/// The entries a journal file holds after `applied`, in order: (number, writes).
pub(super) type Entries = Vec<(u64, Vec<u8>)>;

impl Journal {
    /// Open (or create) the journal at `path` and read the entries after `applied`, the
    /// last one the redb file holds. The journal then starts again from its beginning, once
    /// the caller has made them durable in redb; the next entry is numbered after the last
    /// one read (or after `applied`).
    pub(super) fn open(
        path: &Path,
        salt: u64,
        applied: u64,
    ) -> std::io::Result<(Journal, Entries)> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // The file's name must survive a power loss too, or the entries synced into it are
        // lost with it. Synced at every open, not only when this one created it: an earlier
        // process may have been killed between creating it and syncing.
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let entries = after(&bytes, salt, applied).map_err(std::io::Error::other)?;
        let last = entries.last().map_or(applied, |(number, _)| *number);
        let journal = Journal {
            file,
            path: path.to_path_buf(),
            end: 0,
            next: last + 1,
            checkpoint_bytes: CHECKPOINT_BYTES,
            salt,
        };
        Ok((journal, entries))
    }

    /// The journal file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The number the next entry will carry: the batch stores it as [`APPLIED`].
    pub(super) fn next_number(&self) -> u64 {
        self.next
    }

    /// Append `writes` as the next entry and sync the file: once this returns, the entry
    /// survives a crash.
    pub(super) fn append(&mut self, writes: &[u8]) -> std::io::Result<()> {
        if writes.len() > MAX_ENTRY {
            return Err(std::io::Error::other("a journal entry above 1 GiB"));
        }
        let number = self.next;
        let mut entry = Vec::with_capacity(HEADER + writes.len());
        entry.extend_from_slice(&(writes.len() as u32).to_le_bytes());
        entry.extend_from_slice(&checksum(self.salt, number, writes).to_le_bytes());
        entry.extend_from_slice(&number.to_le_bytes());
        entry.extend_from_slice(writes);
        self.file.write_all_at(&entry, self.end)?;
        self.file.sync_data()?;
        self.end += entry.len() as u64;
        self.next += 1;
        Ok(())
    }

    /// Whether the entries since the last checkpoint reached [`CHECKPOINT_BYTES`].
    pub(super) fn checkpoint_due(&self) -> bool {
        self.end >= self.checkpoint_bytes
    }

    /// Start again from the file's beginning, once redb durably holds every entry written.
    /// The file keeps its length: overwriting blocks it already has syncs no metadata, and
    /// the entries left beyond the new ones carry lower numbers, which end a reading.
    pub(super) fn restart(&mut self) {
        self.end = 0;
    }

    #[cfg(test)]
    pub(super) fn set_checkpoint_bytes(&mut self, bytes: u64) {
        self.checkpoint_bytes = bytes;
    }

    /// Where the next entry goes: 0 right after a checkpoint.
    #[cfg(test)]
    pub(super) fn end(&self) -> u64 {
        self.end
    }
}

/// The entries of `bytes` numbered `applied + 1`, `applied + 2` … in order, up to the first
/// one that is torn, fails its checksum or breaks the sequence. Entries numbered `applied`
/// or below before them (a checkpoint was made but the file not restarted) are skipped.
///
/// Two cases are errors, since acknowledged writes would be missing: a first entry numbered
/// beyond `applied + 1` (the redb file lacks entries the journal no longer has), and an
/// entry of this store numbered after the last one read, somewhere beyond the place the
/// reading stopped (an entry in the middle was damaged: only the last one can be torn by a
/// crash, since each is synced before the next is written). Entries of another store (a
/// journal left beside a new file) fail their checksum, which holds the store's salt.
fn after(bytes: &[u8], salt: u64, applied: u64) -> Result<Entries, String> {
    let mut entries = Vec::new();
    let mut at = 0usize;
    // The number the next entry to apply must carry; `first`: none applied yet.
    let (mut next, mut first) = (applied + 1, true);
    while let Some((number, writes)) = entry_at(bytes, at, salt) {
        if number == next {
            entries.push((number, writes.to_vec()));
            (next, first) = (number + 1, false);
        } else if first && number > next {
            return Err(format!(
                "its first entry after the store's last one ({applied}) is number {number}: \
                 the entries between are missing"
            ));
        } else if !first {
            break;
        }
        at += HEADER + writes.len();
    }
    // At most one entry per header's bytes could follow: a number beyond that is not one of
    // this journal's, and its checksum is not worth computing.
    let most = next.saturating_add((bytes.len() / HEADER) as u64);
    let plausible = |from: usize| {
        let number = bytes.get(from + 8..from + HEADER)?;
        let number = u64::from_le_bytes(number.try_into().expect("8 bytes"));
        (next..=most).contains(&number).then_some(from)
    };
    // From the place the reading stopped: an entry there numbered beyond the next is one.
    if let Some(later) = (at..bytes.len())
        .filter_map(plausible)
        .filter_map(|from| entry_at(bytes, from, salt))
        .find(|(number, _)| *number >= next)
    {
        return Err(format!(
            "entry number {next} is damaged, and entry number {} follows it: acknowledged \
             writes would be lost",
            later.0
        ));
    }
    Ok(entries)
}

/// The entry starting at `at`, when a whole one with a matching checksum does: its number
/// and writes.
fn entry_at(bytes: &[u8], at: usize, salt: u64) -> Option<(u64, &[u8])> {
    let header = bytes.get(at..at.checked_add(HEADER)?)?;
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let number = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    let start = at + HEADER;
    let writes = bytes.get(start..start.checked_add(len)?)?;
    (checksum(salt, number, writes) == crc).then_some((number, writes))
}

/// The store's salt, stored in its `journal` table: made at random when the store has none
/// (a new file, or one from before the journal).
pub(super) fn salt(txn: &WriteTransaction) -> Result<u64, redb::Error> {
    let mut table = txn.open_table(JOURNAL_TABLE)?;
    if let Some(found) = table.get(SALT)? {
        return Ok(found.value());
    }
    let salt = rand::random::<u64>();
    table.insert(SALT, salt)?;
    Ok(salt)
}

/// The number of the last entry the state of `txn` holds (0: none).
pub(super) fn applied(txn: &WriteTransaction) -> Result<u64, redb::Error> {
    let table = txn.open_table(JOURNAL_TABLE)?;
    let applied = table.get(APPLIED)?.map_or(0, |found| found.value());
    Ok(applied)
}

/// Store `number` as the last entry the state of `txn` holds.
pub(super) fn set_applied(txn: &WriteTransaction, number: u64) -> Result<(), redb::Error> {
    txn.open_table(JOURNAL_TABLE)?.insert(APPLIED, number)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(n: u8) -> Vec<u8> {
        let mut writes = Vec::new();
        record(&mut writes, 3, &[n, n], Some(b"value"));
        record(&mut writes, 4, b"gone", None);
        writes
    }

    const SALT: u64 = 0x5eed;

    fn read(path: &Path, applied: u64) -> Vec<u64> {
        let (_, entries) = Journal::open(path, SALT, applied).unwrap();
        entries.into_iter().map(|(number, _)| number).collect()
    }

    #[test]
    fn writes_read_back_in_order() {
        let writes = writes(7);
        let read: Vec<Op<'_>> = ops(&writes).map(Result::unwrap).collect();
        assert_eq!(
            read,
            [
                Op {
                    table: 3,
                    key: &[7, 7],
                    value: Some(b"value")
                },
                Op {
                    table: 4,
                    key: b"gone",
                    value: None
                },
            ]
        );
        let torn = &writes[..writes.len() - 1];
        assert!(
            ops(torn).any(|op| op.is_err()),
            "a write cut short is an error"
        );
    }

    #[test]
    fn entries_after_the_applied_one_are_read_until_a_torn_or_stale_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let (mut journal, entries) = Journal::open(&path, SALT, 0).unwrap();
        assert!(entries.is_empty());
        for n in 1..=5 {
            journal.append(&writes(n)).unwrap();
        }
        assert_eq!(read(&path, 0), [1, 2, 3, 4, 5]);
        assert_eq!(read(&path, 3), [4, 5], "redb holds up to 3");
        assert_eq!(read(&path, 5), Vec::<u64>::new());
        let (journal_at_5, _) = Journal::open(&path, SALT, 5).unwrap();
        assert_eq!(journal_at_5.next_number(), 6);

        // A checkpoint at 5, then two entries over the old ones: the rest of the old ones
        // (numbered 3 to 5) end the reading.
        journal.restart();
        journal.append(&writes(6)).unwrap();
        journal.append(&writes(7)).unwrap();
        assert_eq!(read(&path, 5), [6, 7]);

        // An entry torn by a crash during its append: the reading stops before it.
        let bytes = std::fs::read(&path).unwrap();
        let first = HEADER + writes(6).len();
        let torn = dir.path().join("torn");
        std::fs::write(&torn, &bytes[..first + HEADER + 3]).unwrap();
        assert_eq!(read(&torn, 5), [6]);
        // The last entry damaged: the same, nothing of this store follows it.
        let mut last = bytes.clone();
        last[first + HEADER] ^= 1;
        let damaged_last = dir.path().join("damaged-last");
        std::fs::write(&damaged_last, &last).unwrap();
        assert_eq!(read(&damaged_last, 5), [6]);
        // An entry in the middle damaged, an acknowledged one after it: refused.
        journal.append(&writes(8)).unwrap();
        let mut middle = std::fs::read(&path).unwrap();
        middle[first + HEADER] ^= 1;
        std::fs::write(&path, &middle).unwrap();
        let error = Journal::open(&path, SALT, 5).unwrap_err().to_string();
        assert!(
            error.contains("entry number 7 is damaged, and entry number 8"),
            "{error}"
        );
        // The entry after 6 numbered 8, not 7 (7 lost, 8 acknowledged): refused.
        let mut skipped = bytes[..first].to_vec();
        let mut eight = Journal::open(&dir.path().join("eight"), SALT, 7).unwrap().0;
        eight.append(&writes(8)).unwrap();
        skipped.extend(std::fs::read(dir.path().join("eight")).unwrap());
        std::fs::write(&damaged_last, &skipped).unwrap();
        let error = Journal::open(&damaged_last, SALT, 5)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("entry number 7 is damaged, and entry number 8"),
            "{error}"
        );
        // A journal of another store: nothing of it is read.
        let (_, foreign) = Journal::open(&damaged_last, SALT + 1, 0).unwrap();
        assert!(foreign.is_empty());
        // A gap between the store and the journal: writes are missing, and the open fails.
        let gap = Journal::open(&torn, SALT, 4).unwrap_err().to_string();
        assert!(gap.contains("number 6"), "{gap}");
    }
}
