//! The memory store's outbox: rows in key order, with the same rules as the durable stores
//! (`store::outbox`).

use std::collections::{BTreeMap, HashMap};

use super::super::outbox::{
    self, Attempted, EventCounts, EventKey, EventState, NewEvent, OutboxEvent,
};

/// Outbox rows by encoded key, and event id → payment id.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    rows: BTreeMap<String, OutboxEvent>,
    ids: HashMap<String, String>,
}

impl Outbox {
    /// Write new events; a key already there is kept as it is.
    pub fn insert(&mut self, events: &[NewEvent]) {
        for event in events {
            let row = OutboxEvent::new(event.clone());
            self.ids.insert(event.id.clone(), event.payment_id.clone());
            self.rows.entry(row.key().encoded()).or_insert(row);
        }
    }

    pub fn next_seq(&self, payment_id: &str) -> u64 {
        let (lo, hi) = outbox::payment_range(payment_id);
        outbox::next_seq(self.rows.range(lo..hi).next_back().map(|(k, _)| k.as_str()))
    }

    pub fn claim(
        &mut self,
        now_ms: u64,
        lease_ms: u64,
        limit: usize,
        holder: &str,
    ) -> Vec<OutboxEvent> {
        let claimer = outbox::Claimer {
            holder,
            exclusive: true,
        };
        let due = outbox::claimable(self.rows.values().cloned(), now_ms, limit, &claimer);
        due.into_iter()
            .map(|row| {
                let row = outbox::claimed(row, now_ms, lease_ms, holder);
                self.rows.insert(row.key().encoded(), row.clone());
                row
            })
            .collect()
    }

    pub fn attempted(&mut self, key: &EventKey, outcome: &Attempted) {
        let encoded = key.encoded();
        if let Some(new) = self
            .rows
            .get(&encoded)
            .cloned()
            .and_then(|row| outbox::attempted(row, outcome))
        {
            self.rows.insert(encoded, new);
        }
    }

    pub fn list(&self, state: EventState, limit: usize) -> Vec<OutboxEvent> {
        self.rows
            .values()
            .filter(|r| r.state == state)
            .take(limit)
            .cloned()
            .collect()
    }

    pub fn redeliver(&mut self, id: &str, now_ms: u64) -> usize {
        let Some(payment) = self.ids.get(id) else {
            return 0;
        };
        let (lo, hi) = outbox::payment_range(payment);
        let mut queued = 0;
        for row in self.rows.range_mut(lo..hi).map(|(_, r)| r) {
            if row.event.id == id {
                if let Some(new) = outbox::requeued(row.clone(), now_ms) {
                    *row = new;
                    queued += 1;
                }
            }
        }
        queued
    }

    pub fn counts(&self) -> EventCounts {
        let mut counts = EventCounts::new();
        for row in self.rows.values() {
            outbox::count(&mut counts, row);
        }
        counts
    }

    pub fn purge(&mut self, delivered_before_ms: u64, limit: usize) -> usize {
        let mut due: Vec<(u64, String)> = self
            .rows
            .iter()
            .filter(|(_, r)| r.delivered_ms.is_some_and(|at| at <= delivered_before_ms))
            .filter(|(_, r)| r.state == EventState::Delivered)
            .map(|(k, r)| (r.delivered_ms.unwrap_or(0), k.clone()))
            .collect();
        due.sort();
        let mut purged = 0;
        for (_, key) in due {
            if purged == limit {
                break;
            }
            let Some(row) = self.rows.get(&key) else {
                continue;
            };
            let (_, hi) = outbox::payment_range(&row.event.payment_id);
            let later = self
                .rows
                .range::<String, _>((
                    std::ops::Bound::Excluded(key.clone()),
                    std::ops::Bound::Excluded(hi),
                ))
                .next()
                .is_some();
            if !later {
                continue;
            }
            if let Some(gone) = self.rows.remove(&key) {
                let (lo, hi) = outbox::payment_range(&gone.event.payment_id);
                let id = gone.event.id;
                if !self.rows.range(lo..hi).any(|(_, r)| r.event.id == id) {
                    self.ids.remove(&id);
                }
                purged += 1;
            }
        }
        purged
    }
}
