//! The webhook outbox: storefront events waiting for delivery to the merchant's endpoints.
//!
//! Each state change of a payment that the storefront dialect renders an event for is one
//! event (one id), written with the payment record in the same transaction
//! ([`Store::put_payment`](super::Store::put_payment)), once per configured endpoint: a row
//! keyed by (payment id, per-payment sequence, endpoint URL). Rows sort by that key, so a
//! payment's events for one endpoint are in the order they happened.
//!
//! Delivery ([`Store::claim_events`](super::Store::claim_events)) takes only the oldest
//! pending row of each (payment, endpoint): the next one waits until it is delivered or given
//! up, which keeps delivery **in order per payment**. A claim is a lease: while it runs no one
//! else claims the row, and once it lapses (the claimer died) anyone may. A store that one
//! process opens at a time (redb, memory) retakes its predecessor's claims at once. Every store applies
//! the same rules (the functions below), so they cannot disagree.

use serde::{Deserialize, Serialize};

/// Table name for errors and redb.
pub(super) const OUTBOX: &str = "outbox";
/// Table name of the index of undelivered (pending or failed) rows.
pub(super) const OUTBOX_UNDELIVERED: &str = "outbox_undelivered";
/// Table name of the index event id → payment id.
pub(super) const OUTBOX_IDS: &str = "outbox_ids";

/// An event to write with a payment record, for one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Event id (`evt_…`), the same for every endpoint of the change.
    pub id: String,
    /// The payment (storefront-visible id).
    pub payment_id: String,
    /// The change's place in the payment's sequence (0, 1, …).
    pub seq: u64,
    /// The route the payment was made on (its webhooks config).
    pub route: String,
    /// The endpoint URL it goes to.
    pub endpoint: String,
    /// The storefront's event type (`payment_intent.succeeded` …).
    pub event_type: String,
    /// The body's media type.
    pub content_type: String,
    /// The rendered body, delivered as is.
    #[serde(with = "super::record::body")]
    pub body: Vec<u8>,
    /// When it was written, Unix milliseconds.
    pub created_ms: u64,
}

/// Where an event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventState {
    /// Not delivered yet; retried.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Given up on (past the give-up age); kept for the admin list and redelivery.
    Failed,
}

impl EventState {
    /// The name used in the admin API and in Postgres.
    pub fn as_str(self) -> &'static str {
        match self {
            EventState::Pending => "pending",
            EventState::Delivered => "delivered",
            EventState::Failed => "failed",
        }
    }

    /// The state named `s`.
    pub fn parse(s: &str) -> Option<EventState> {
        match s {
            "pending" => Some(EventState::Pending),
            "delivered" => Some(EventState::Delivered),
            "failed" => Some(EventState::Failed),
            _ => None,
        }
    }
}

/// An event in the outbox, for one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEvent {
    /// What was written.
    pub event: NewEvent,
    /// Where it stands.
    pub state: EventState,
    /// Delivery attempts made.
    pub attempts: u32,
    /// Not before this time (Unix ms) is it attempted again.
    pub next_attempt_ms: u64,
    /// Claimed for delivery until this time (Unix ms); 0 when not claimed.
    pub lease_until_ms: u64,
    /// The store instance that claimed it last (its lease may have lapsed).
    #[serde(default)]
    pub claimed_by: Option<String>,
    /// Why the last attempt failed (status or transport error; never the body).
    pub last_error: Option<String>,
    /// Since when it has been tried (its creation, or its last redelivery): the give-up age
    /// counts from here.
    pub since_ms: u64,
    /// When it was delivered.
    pub delivered_ms: Option<u64>,
}

/// An outbox row's key: (payment, sequence, endpoint).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventKey {
    /// The payment.
    pub payment_id: String,
    /// The change's place in the payment's sequence.
    pub seq: u64,
    /// The endpoint URL.
    pub endpoint: String,
}

impl OutboxEvent {
    /// A pending row for a new event, due now.
    pub fn new(event: NewEvent) -> OutboxEvent {
        OutboxEvent {
            state: EventState::Pending,
            attempts: 0,
            next_attempt_ms: event.created_ms,
            lease_until_ms: 0,
            claimed_by: None,
            last_error: None,
            since_ms: event.created_ms,
            delivered_ms: None,
            event,
        }
    }

    /// This row's key.
    pub fn key(&self) -> EventKey {
        EventKey {
            payment_id: self.event.payment_id.clone(),
            seq: self.event.seq,
            endpoint: self.event.endpoint.clone(),
        }
    }
}

impl EventKey {
    /// `payment \0 seq (20 digits) \0 endpoint`: sorts by payment, sequence, endpoint.
    pub(super) fn encoded(&self) -> String {
        format!(
            "{}\u{0}{:020}\u{0}{}",
            self.payment_id, self.seq, self.endpoint
        )
    }

    /// The key of an encoded key.
    pub(super) fn decode(s: &str) -> Option<EventKey> {
        let mut parts = s.splitn(3, '\u{0}');
        let payment_id = parts.next()?.to_string();
        let seq = parts.next()?.parse().ok()?;
        let endpoint = parts.next()?.to_string();
        Some(EventKey {
            payment_id,
            seq,
            endpoint,
        })
    }
}

/// The range of encoded keys of one payment's events.
pub(super) fn payment_range(payment_id: &str) -> (String, String) {
    (format!("{payment_id}\u{0}"), format!("{payment_id}\u{1}"))
}

/// The sequence number after the last event of a payment (`last`: the highest encoded key of
/// its events, if any).
pub(super) fn next_seq(last: Option<&str>) -> u64 {
    last.and_then(EventKey::decode).map_or(0, |k| k.seq + 1)
}

/// Who claims, for [`claimable`].
pub(super) struct Claimer<'a> {
    /// This store instance's id.
    pub holder: &'a str,
    /// The store is opened by one process at a time (redb, memory): a claim another
    /// incarnation holds belongs to a process that is gone, so its lease need not lapse.
    pub exclusive: bool,
}

/// From undelivered rows in key order, the ones to claim now: the oldest pending row of each
/// (payment, endpoint), when it is due and not claimed by a live lease (of a live holder);
/// at most `limit`. Failed rows (given up) hold nothing back.
pub(super) fn claimable(
    undelivered: impl Iterator<Item = OutboxEvent>,
    now_ms: u64,
    limit: usize,
    claimer: &Claimer<'_>,
) -> Vec<OutboxEvent> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for row in undelivered.filter(|r| r.state == EventState::Pending) {
        if out.len() >= limit {
            break;
        }
        let first = seen.insert((row.event.payment_id.clone(), row.event.endpoint.clone()));
        let gone = claimer.exclusive && row.claimed_by.as_deref() != Some(claimer.holder);
        if first && row.next_attempt_ms <= now_ms && (row.lease_until_ms <= now_ms || gone) {
            out.push(row);
        }
    }
    out
}

/// The row after a claim by `holder` until `now_ms + lease_ms`.
pub(super) fn claimed(
    mut row: OutboxEvent,
    now_ms: u64,
    lease_ms: u64,
    holder: &str,
) -> OutboxEvent {
    row.lease_until_ms = now_ms.saturating_add(lease_ms);
    row.claimed_by = Some(holder.to_string());
    row
}

/// What a finished delivery attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempted {
    /// 2xx at `at_ms`.
    Delivered {
        /// When.
        at_ms: u64,
    },
    /// Failed with `error`; retried at `retry_at_ms`, or given up when `None`.
    Failed {
        /// Why (status or transport error).
        error: String,
        /// When to try again; `None`: give up (the row becomes `failed`).
        retry_at_ms: Option<u64>,
    },
}

/// The row after an attempt. A row no longer pending (redelivered, given up, delivered by a
/// claimer whose lease had lapsed) is left as it is: `None`.
pub(super) fn attempted(mut row: OutboxEvent, outcome: &Attempted) -> Option<OutboxEvent> {
    if row.state != EventState::Pending {
        return None;
    }
    row.attempts = row.attempts.saturating_add(1);
    row.lease_until_ms = 0;
    match outcome {
        Attempted::Delivered { at_ms } => {
            row.state = EventState::Delivered;
            row.delivered_ms = Some(*at_ms);
        }
        Attempted::Failed { error, retry_at_ms } => {
            row.last_error = Some(error.clone());
            match retry_at_ms {
                Some(at) => row.next_attempt_ms = *at,
                None => row.state = EventState::Failed,
            }
        }
    }
    Some(row)
}

/// The row queued again at `now_ms` (an admin's redelivery): pending, due now, its give-up
/// age restarting. `None` when it is pending already.
pub(super) fn requeued(mut row: OutboxEvent, now_ms: u64) -> Option<OutboxEvent> {
    if row.state == EventState::Pending {
        return None;
    }
    row.state = EventState::Pending;
    row.next_attempt_ms = now_ms;
    row.lease_until_ms = 0;
    row.since_ms = now_ms;
    row.delivered_ms = None;
    Some(row)
}

/// Undelivered events per route: (pending, failed).
pub type EventCounts = std::collections::BTreeMap<String, (u64, u64)>;

/// Add `row` to `counts`.
pub(super) fn count(counts: &mut EventCounts, row: &OutboxEvent) {
    let slot = counts.entry(row.event.route.clone()).or_default();
    match row.state {
        EventState::Pending => slot.0 += 1,
        EventState::Failed => slot.1 += 1,
        EventState::Delivered => {}
    }
}
