//! The redb store's outbox (see `store::outbox`): rows by encoded key, an index of the
//! undelivered ones (what claims, lists and counts read), and event id → payment id. New
//! events are written in the payment record's write transaction.

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::tables::{self, Slot, TableWrite, Writes};
use super::Context;
use crate::store::outbox::{
    self, Attempted, EventCounts, EventKey, EventState, NewEvent, OutboxEvent, OUTBOX, OUTBOX_IDS,
    OUTBOX_UNDELIVERED,
};
use crate::store::record;
use crate::store::StoreError;

/// Encoded key → JSON [`OutboxEvent`].
pub(super) const ROWS: TableDefinition<&str, &[u8]> = TableDefinition::new(OUTBOX);
/// Encoded keys of pending and failed rows.
const UNDELIVERED: TableDefinition<&str, ()> = TableDefinition::new(OUTBOX_UNDELIVERED);
/// Event id → payment id.
const IDS: TableDefinition<&str, &str> = TableDefinition::new(OUTBOX_IDS);
/// Delivered rows by time of delivery, for the purge: `(delivered_ms, encoded key)`.
const DELIVERED: TableDefinition<(u64, &str), ()> = TableDefinition::new("outbox_delivered");

/// The outbox's tables in a write transaction (see [`super::tables`]).
pub(super) struct Tables<'txn> {
    pub(super) rows: Slot<'txn, &'static str, &'static [u8]>,
    pub(super) undelivered: Slot<'txn, &'static str, ()>,
    pub(super) ids: Slot<'txn, &'static str, &'static str>,
    pub(super) delivered: Slot<'txn, (u64, &'static str), ()>,
}

impl<'txn> Tables<'txn> {
    pub(super) fn new(txn: &'txn WriteTransaction, writes: &'txn Writes) -> Tables<'txn> {
        Tables {
            rows: Slot::new(txn, writes, tables::OUTBOX_ROWS, ROWS),
            undelivered: Slot::new(txn, writes, tables::OUTBOX_UNDELIVERED, UNDELIVERED),
            ids: Slot::new(txn, writes, tables::OUTBOX_IDS, IDS),
            delivered: Slot::new(txn, writes, tables::OUTBOX_DELIVERED, DELIVERED),
        }
    }
}

/// Creates the tables (in the opening transaction).
pub(super) fn create(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(ROWS)?;
    txn.open_table(UNDELIVERED)?;
    txn.open_table(IDS)?;
    txn.open_table(DELIVERED)?;
    Ok(())
}

fn put(txn: &WriteTransaction, row: &OutboxEvent, op: &'static str) -> Result<(), StoreError> {
    let key = row.key().encoded();
    let bytes = record::encode(OUTBOX, &key, row)?;
    // The delivered index follows the row's delivery time.
    let rows = txn.open_table(ROWS).context(op, &key)?;
    let old_delivered = get(&rows, &key, op)?.and_then(|old| old.delivered_ms);
    drop(rows);
    if old_delivered != row.delivered_ms {
        let mut delivered = txn.open_table(DELIVERED).context(op, &key)?;
        if let Some(at) = old_delivered {
            delivered.remove((at, key.as_str())).context(op, &key)?;
        }
        if let Some(at) = row.delivered_ms {
            delivered.insert((at, key.as_str()), ()).context(op, &key)?;
        }
    }
    txn.open_table(ROWS)
        .context(op, &key)?
        .insert(key.as_str(), bytes.as_slice())
        .context(op, &key)?;
    let mut undelivered = txn.open_table(UNDELIVERED).context(op, &key)?;
    match row.state {
        EventState::Delivered => undelivered.remove(key.as_str()).context(op, &key)?,
        _ => undelivered.insert(key.as_str(), ()).context(op, &key)?,
    };
    Ok(())
}

fn get(
    rows: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
    op: &'static str,
) -> Result<Option<OutboxEvent>, StoreError> {
    let value = rows.get(key).context(op, key)?;
    match value {
        Some(v) => Ok(Some(record::decode(OUTBOX, key, v.value())?)),
        None => Ok(None),
    }
}

/// Rows for the events not in the outbox yet, encoded (a key already there, or twice in
/// `events`, is kept as it was first written). Reads only: [`insert`] writes them.
pub(super) fn new_rows(
    tables: &Tables<'_>,
    events: &[NewEvent],
) -> Result<Vec<NewRow>, StoreError> {
    let op = "put_payment";
    let mut rows: Vec<NewRow> = Vec::with_capacity(events.len());
    for event in events {
        let row = OutboxEvent::new(event.clone());
        let key = row.key().encoded();
        if rows.iter().any(|r| r.key == key)
            || get(&*tables.rows.open(op, &key)?, &key, op)?.is_some()
        {
            continue;
        }
        rows.push(NewRow {
            bytes: record::encode(OUTBOX, &key, &row)?,
            key,
            pending: row.state != EventState::Delivered,
            delivered_ms: row.delivered_ms,
            id: event.id.clone(),
            payment_id: event.payment_id.clone(),
        });
    }
    Ok(rows)
}

/// A new outbox row, encoded by [`new_rows`].
pub(super) struct NewRow {
    key: String,
    bytes: Vec<u8>,
    pending: bool,
    delivered_ms: Option<u64>,
    id: String,
    payment_id: String,
}

/// Writes the rows [`new_rows`] chose, in `tables`' transaction: storage writes only.
pub(super) fn insert(tables: &Tables<'_>, rows: Vec<NewRow>) -> Result<(), StoreError> {
    let op = "put_payment";
    for row in rows {
        let key = row.key.as_str();
        if let Some(at) = row.delivered_ms {
            tables
                .delivered
                .open(op, key)?
                .insert((at, key), ())
                .context(op, key)?;
        }
        tables
            .rows
            .open(op, key)?
            .insert(key, row.bytes.as_slice())
            .context(op, key)?;
        if row.pending {
            tables
                .undelivered
                .open(op, key)?
                .insert(key, ())
                .context(op, key)?;
        }
        tables
            .ids
            .open(op, &row.id)?
            .insert(row.id.as_str(), row.payment_id.as_str())
            .context(op, &row.id)?;
    }
    Ok(())
}

/// Every undelivered row, in key order.
fn undelivered<
    T: ReadableTable<&'static str, ()>,
    R: ReadableTable<&'static str, &'static [u8]>,
>(
    index: &T,
    rows: &R,
    op: &'static str,
) -> Result<Vec<OutboxEvent>, StoreError> {
    let mut out = Vec::new();
    for item in index.iter().context(op, "*")? {
        let (key, _) = item.context(op, "*")?;
        let key = key.value();
        if let Some(v) = rows.get(key).context(op, key)? {
            out.push(record::decode(OUTBOX, key, v.value())?);
        }
    }
    Ok(out)
}

/// The undelivered rows a claim needs, in key order: each (payment, endpoint)'s failed rows up
/// to and including its oldest pending one. Rows behind that one are never decoded, so a
/// backlog of a payment's events costs one decode, not one per event.
fn heads<T: ReadableTable<&'static str, ()>, R: ReadableTable<&'static str, &'static [u8]>>(
    index: &T,
    rows: &R,
    op: &'static str,
) -> Result<Vec<OutboxEvent>, StoreError> {
    let mut headed = std::collections::HashSet::new();
    let mut out = Vec::new();
    for item in index.iter().context(op, "*")? {
        let (key, _) = item.context(op, "*")?;
        let key = key.value();
        let group = EventKey::decode(key).map(|k| (k.payment_id, k.endpoint));
        if group.as_ref().is_some_and(|g| headed.contains(g)) {
            continue;
        }
        let Some(v) = rows.get(key).context(op, key)? else {
            continue;
        };
        let row: OutboxEvent = record::decode(OUTBOX, key, v.value())?;
        if row.state == EventState::Pending {
            headed.extend(group);
        }
        out.push(row);
    }
    Ok(out)
}

pub(super) fn claim(
    db: &Database,
    now_ms: u64,
    lease_ms: u64,
    limit: usize,
    holder: &str,
) -> Result<Vec<OutboxEvent>, StoreError> {
    let op = "claim_events";
    let txn = db.begin_write().context(op, "*")?;
    let due = {
        let index = txn.open_table(UNDELIVERED).context(op, "*")?;
        let rows = txn.open_table(ROWS).context(op, "*")?;
        let claimer = outbox::Claimer {
            holder,
            exclusive: true,
        };
        outbox::claimable(
            heads(&index, &rows, op)?.into_iter(),
            now_ms,
            limit,
            &claimer,
        )
    };
    if due.is_empty() {
        txn.abort().context(op, "*")?;
        return Ok(due);
    }
    let mut out = Vec::with_capacity(due.len());
    for row in due {
        let row = outbox::claimed(row, now_ms, lease_ms, holder);
        put(&txn, &row, op)?;
        out.push(row);
    }
    txn.commit().context(op, "*")?;
    Ok(out)
}

pub(super) fn attempted(
    db: &Database,
    key: &EventKey,
    outcome: &Attempted,
) -> Result<(), StoreError> {
    let op = "event_attempted";
    let encoded = key.encoded();
    let txn = db.begin_write().context(op, &encoded)?;
    let found = get(&txn.open_table(ROWS).context(op, &encoded)?, &encoded, op)?;
    match found.and_then(|row| outbox::attempted(row, outcome)) {
        Some(new) => {
            put(&txn, &new, op)?;
            txn.commit().context(op, &encoded)
        }
        None => txn.abort().context(op, &encoded),
    }
}

pub(super) fn list(
    db: &Database,
    state: EventState,
    limit: usize,
) -> Result<Vec<OutboxEvent>, StoreError> {
    let op = "list_events";
    let txn = db.begin_read().context(op, "*")?;
    let index = txn.open_table(UNDELIVERED).context(op, "*")?;
    let rows = txn.open_table(ROWS).context(op, "*")?;
    Ok(undelivered(&index, &rows, op)?
        .into_iter()
        .filter(|r| r.state == state)
        .take(limit)
        .collect())
}

pub(super) fn redeliver(db: &Database, id: &str, now_ms: u64) -> Result<usize, StoreError> {
    let op = "redeliver_event";
    let txn = db.begin_write().context(op, id)?;
    let payment = {
        let ids = txn.open_table(IDS).context(op, id)?;
        let found = ids.get(id).context(op, id)?;
        found.map(|p| p.value().to_string())
    };
    let Some(payment) = payment else {
        return txn.abort().context(op, id).map(|()| 0);
    };
    let (lo, hi) = outbox::payment_range(&payment);
    let mut rows_of_event = Vec::new();
    {
        let rows = txn.open_table(ROWS).context(op, id)?;
        for item in rows
            .range::<&str>(lo.as_str()..hi.as_str())
            .context(op, id)?
        {
            let (key, value) = item.context(op, id)?;
            let row: OutboxEvent = record::decode(OUTBOX, key.value(), value.value())?;
            if row.event.id == id {
                rows_of_event.push(row);
            }
        }
    }
    let mut queued = 0;
    for row in rows_of_event {
        if let Some(new) = outbox::requeued(row, now_ms) {
            put(&txn, &new, op)?;
            queued += 1;
        }
    }
    txn.commit().context(op, id)?;
    Ok(queued)
}

pub(super) fn counts(db: &Database) -> Result<EventCounts, StoreError> {
    let op = "event_counts";
    let txn = db.begin_read().context(op, "*")?;
    let index = txn.open_table(UNDELIVERED).context(op, "*")?;
    let rows = txn.open_table(ROWS).context(op, "*")?;
    let mut counts = EventCounts::new();
    for row in undelivered(&index, &rows, op)? {
        outbox::count(&mut counts, &row);
    }
    Ok(counts)
}

pub(super) fn purge(
    db: &Database,
    delivered_before_ms: u64,
    limit: usize,
) -> Result<usize, StoreError> {
    let op = "purge_events";
    let txn = db.begin_write().context(op, "*")?;
    // Oldest deliveries first, up to the cutoff; a payment's last row stays (its sequence).
    let mut doomed = Vec::new();
    {
        let delivered = txn.open_table(DELIVERED).context(op, "*")?;
        let rows = txn.open_table(ROWS).context(op, "*")?;
        let range = delivered
            .range((0, "")..=(delivered_before_ms, "\u{10ffff}"))
            .context(op, "*")?;
        for item in range {
            if doomed.len() == limit {
                break;
            }
            let (entry, _) = item.context(op, "*")?;
            let (at, key) = entry.value();
            let Some(parsed) = EventKey::decode(key) else {
                continue;
            };
            let (_, hi) = outbox::payment_range(&parsed.payment_id);
            let later = rows
                .range::<&str>((
                    std::ops::Bound::Excluded(key),
                    std::ops::Bound::Excluded(hi.as_str()),
                ))
                .context(op, key)?
                .next()
                .is_some();
            if later {
                doomed.push((at, key.to_string()));
            }
        }
    }
    if doomed.is_empty() {
        txn.abort().context(op, "*")?;
        return Ok(0);
    }
    {
        let mut delivered = txn.open_table(DELIVERED).context(op, "*")?;
        let mut rows = txn.open_table(ROWS).context(op, "*")?;
        let mut ids = txn.open_table(IDS).context(op, "*")?;
        for (at, key) in &doomed {
            delivered.remove((*at, key.as_str())).context(op, key)?;
            let gone: Option<OutboxEvent> = {
                let removed = rows.remove(key.as_str()).context(op, key)?;
                match removed {
                    Some(v) => Some(record::decode(OUTBOX, key, v.value())?),
                    None => None,
                }
            };
            let Some(gone) = gone else { continue };
            // The id's entry goes with the event's last row (other endpoints share it).
            let (lo, hi) = outbox::payment_range(&gone.event.payment_id);
            let mut shared = false;
            for item in rows
                .range::<&str>(lo.as_str()..hi.as_str())
                .context(op, key)?
            {
                let (k, _) = item.context(op, key)?;
                if EventKey::decode(k.value()).is_some_and(|k| k.seq == gone.event.seq) {
                    shared = true;
                    break;
                }
            }
            if !shared {
                ids.remove(gone.event.id.as_str()).context(op, key)?;
            }
        }
    }
    txn.commit().context(op, "*")?;
    Ok(doomed.len())
}
