//! The Postgres store's outbox (see `store::outbox`, migration 2). Claims select the oldest
//! pending row of each (payment, endpoint) that is due and not under a live lease, `FOR
//! UPDATE SKIP LOCKED` so instances claiming at once skip each other's rows instead of
//! waiting, and lease them: a dead instance's claims are retaken once the lease lapses.

use deadpool_postgres::{GenericClient, Pool};

use super::{ms, pg};
use crate::store::outbox::{
    self, Attempted, EventCounts, EventKey, EventState, NewEvent, OutboxEvent, OUTBOX,
};
use crate::store::record;
use crate::store::StoreError;

/// Writes `events` with the client (inside the payment's transaction); a key already there is
/// kept as it is.
pub(super) async fn insert(
    client: &impl GenericClient,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    let op = "put_payment";
    for event in events {
        let row = OutboxEvent::new(event.clone());
        let bytes = record::encode(OUTBOX, &event.id, &row)?;
        client
            .execute(
                "INSERT INTO outbox (payment_id, seq, endpoint, id, route, state,
                     next_attempt_ms, lease_until_ms, event)
                 VALUES ($1, $2, $3, $4, $5, 'pending', $6, 0, $7)
                 ON CONFLICT DO NOTHING",
                &[
                    &event.payment_id.as_bytes(),
                    &ms(event.seq),
                    &event.endpoint,
                    &event.id,
                    &event.route,
                    &ms(row.next_attempt_ms),
                    &bytes,
                ],
            )
            .await
            .map_err(pg(op, &event.id))?;
    }
    Ok(())
}

/// Writes a changed row back (its key columns never change).
async fn update(
    client: &impl GenericClient,
    row: &OutboxEvent,
    op: &'static str,
) -> Result<(), StoreError> {
    let bytes = record::encode(OUTBOX, &row.event.id, row)?;
    client
        .execute(
            "UPDATE outbox SET state = $4, next_attempt_ms = $5, lease_until_ms = $6, event = $7,
                    delivered_ms = $8
              WHERE payment_id = $1 AND seq = $2 AND endpoint = $3",
            &[
                &row.event.payment_id.as_bytes(),
                &ms(row.event.seq),
                &row.event.endpoint,
                &row.state.as_str(),
                &ms(row.next_attempt_ms),
                &ms(row.lease_until_ms),
                &bytes,
                &row.delivered_ms.map(ms),
            ],
        )
        .await
        .map_err(pg(op, &row.event.id))?;
    Ok(())
}

fn decode_rows(rows: &[tokio_postgres::Row]) -> Result<Vec<OutboxEvent>, StoreError> {
    rows.iter()
        .map(|r| record::decode(OUTBOX, "outbox", r.get::<_, &[u8]>(0)))
        .collect()
}

pub(super) async fn next_seq(pool: Pool, payment_id: String) -> Result<u64, StoreError> {
    let op = "next_event_seq";
    let client = pool.get().await.map_err(pg(op, &payment_id))?;
    let row = client
        .query_one(
            "SELECT COALESCE(MAX(seq) + 1, 0) FROM outbox WHERE payment_id = $1",
            &[&payment_id.as_bytes()],
        )
        .await
        .map_err(pg(op, &payment_id))?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

pub(super) async fn claim(
    pool: Pool,
    now_ms: u64,
    lease_ms: u64,
    limit: usize,
    holder: String,
) -> Result<Vec<OutboxEvent>, StoreError> {
    let op = "claim_events";
    let mut client = pool.get().await.map_err(pg(op, ""))?;
    let txn = client.transaction().await.map_err(pg(op, ""))?;
    let rows = txn
        .query(
            "SELECT o.event FROM outbox o
              WHERE o.state = 'pending' AND o.next_attempt_ms <= $1 AND o.lease_until_ms <= $1
                AND NOT EXISTS (SELECT 1 FROM outbox p
                                 WHERE p.payment_id = o.payment_id AND p.endpoint = o.endpoint
                                   AND p.state = 'pending' AND p.seq < o.seq)
              ORDER BY o.next_attempt_ms, o.payment_id, o.seq
              LIMIT $2
              FOR UPDATE SKIP LOCKED",
            &[&ms(now_ms), &ms(limit as u64)],
        )
        .await
        .map_err(pg(op, ""))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in decode_rows(&rows)? {
        let row = outbox::claimed(row, now_ms, lease_ms, &holder);
        update(&txn, &row, op).await?;
        out.push(row);
    }
    txn.commit().await.map_err(pg(op, ""))?;
    Ok(out)
}

pub(super) async fn attempted(
    pool: Pool,
    key: EventKey,
    outcome: Attempted,
) -> Result<(), StoreError> {
    let op = "event_attempted";
    let mut client = pool.get().await.map_err(pg(op, &key.payment_id))?;
    let txn = client
        .transaction()
        .await
        .map_err(pg(op, &key.payment_id))?;
    let rows = txn
        .query(
            "SELECT event FROM outbox WHERE payment_id = $1 AND seq = $2 AND endpoint = $3
               FOR UPDATE",
            &[&key.payment_id.as_bytes(), &ms(key.seq), &key.endpoint],
        )
        .await
        .map_err(pg(op, &key.payment_id))?;
    let changed = decode_rows(&rows)?
        .into_iter()
        .next()
        .and_then(|row| outbox::attempted(row, &outcome));
    if let Some(row) = changed {
        update(&txn, &row, op).await?;
    }
    txn.commit().await.map_err(pg(op, &key.payment_id))
}

pub(super) async fn list(
    pool: Pool,
    state: EventState,
    limit: usize,
) -> Result<Vec<OutboxEvent>, StoreError> {
    let op = "list_events";
    let client = pool.get().await.map_err(pg(op, ""))?;
    let rows = client
        .query(
            "SELECT event FROM outbox WHERE state = $1
              ORDER BY payment_id, seq, endpoint LIMIT $2",
            &[&state.as_str(), &ms(limit as u64)],
        )
        .await
        .map_err(pg(op, ""))?;
    decode_rows(&rows)
}

pub(super) async fn redeliver(pool: Pool, id: String, now_ms: u64) -> Result<usize, StoreError> {
    let op = "redeliver_event";
    let mut client = pool.get().await.map_err(pg(op, &id))?;
    let txn = client.transaction().await.map_err(pg(op, &id))?;
    let rows = txn
        .query("SELECT event FROM outbox WHERE id = $1 FOR UPDATE", &[&id])
        .await
        .map_err(pg(op, &id))?;
    let mut queued = 0;
    for row in decode_rows(&rows)? {
        if let Some(row) = outbox::requeued(row, now_ms) {
            update(&txn, &row, op).await?;
            queued += 1;
        }
    }
    txn.commit().await.map_err(pg(op, &id))?;
    Ok(queued)
}

pub(super) async fn counts(pool: Pool) -> Result<EventCounts, StoreError> {
    let op = "event_counts";
    let client = pool.get().await.map_err(pg(op, ""))?;
    let rows = client
        .query(
            "SELECT route, state, COUNT(*) FROM outbox WHERE state <> 'delivered'
              GROUP BY route, state",
            &[],
        )
        .await
        .map_err(pg(op, ""))?;
    let mut counts = EventCounts::new();
    for row in rows {
        let (route, state, n): (String, &str, i64) = (row.get(0), row.get(1), row.get(2));
        let slot = counts.entry(route).or_default();
        let n = u64::try_from(n).unwrap_or(0);
        match state {
            "pending" => slot.0 += n,
            _ => slot.1 += n,
        }
    }
    Ok(counts)
}

pub(super) async fn purge(
    pool: Pool,
    delivered_before_ms: u64,
    limit: usize,
) -> Result<usize, StoreError> {
    let op = "purge_events";
    let client = pool.get().await.map_err(pg(op, ""))?;
    // Oldest deliveries first; a payment's last row stays (it carries the sequence); rows
    // another instance's purge holds are skipped, not waited for.
    let n = client
        .execute(
            "DELETE FROM outbox WHERE (payment_id, seq, endpoint) IN (
                 SELECT o.payment_id, o.seq, o.endpoint FROM outbox o
                  WHERE o.state = 'delivered' AND o.delivered_ms <= $1
                    AND EXISTS (SELECT 1 FROM outbox n WHERE n.payment_id = o.payment_id
                                  AND (n.seq, n.endpoint) > (o.seq, o.endpoint))
                  ORDER BY o.delivered_ms LIMIT $2 FOR UPDATE SKIP LOCKED)",
            &[&ms(delivered_before_ms), &ms(limit as u64)],
        )
        .await
        .map_err(pg(op, ""))?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}
