//! The background purge: at start and then every `state.purge_interval_ms`, one pass deletes
//! what is due from the store (see [`Store::purge_expired`]) in batches, each one short
//! transaction run off the async workers, yielding between batches so writers waiting for
//! the store go first.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::purge::{self, Purged};
use super::Store;
use crate::metrics::Metrics;

/// Records per purge transaction: a writer waiting behind one waits milliseconds, and a
/// pass still deletes a thousand records per commit (one fsync).
pub const BATCH: usize = 1_000;

/// Most batches in one pass (a million records); what is left waits for the next pass. A
/// bound on the loop, not a rate anyone should reach.
const MAX_BATCHES: usize = 1_000;

/// When and what the sweeper purges.
#[derive(Debug, Clone, Copy)]
pub struct Sweep {
    /// Time between passes.
    pub interval: Duration,
    /// Payment and owner retention (`state.payment_retention_ms`).
    pub retention_ms: u64,
}

/// Runs passes until `shutdown` turns true (or its sender is dropped). A pass in progress
/// stops after its current batch.
pub async fn run(
    store: Arc<dyn Store>,
    sweep: Sweep,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(sweep.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() || shutdown.has_changed().is_err() {
            return;
        }
        pass(&store, sweep.retention_ms, &metrics, &shutdown).await;
    }
}

/// One pass: batches until nothing more is due, a batch fails, or shutdown.
async fn pass(
    store: &Arc<dyn Store>,
    retention_ms: u64,
    metrics: &Metrics,
    shutdown: &watch::Receiver<bool>,
) {
    let mut total = Purged::default();
    for _ in 0..MAX_BATCHES {
        if *shutdown.borrow() {
            break;
        }
        let s = store.clone();
        let now = purge::wall_ms();
        let batch = tokio::task::spawn_blocking(move || s.purge_expired(now, retention_ms, BATCH));
        let purged = match batch.await {
            Ok(Ok(purged)) => purged,
            Ok(Err(error)) => {
                tracing::warn!(%error, "store purge failed; retrying at the next pass");
                metrics.store_purge_failures.inc();
                break;
            }
            Err(error) => {
                tracing::warn!(%error, "store purge task failed; retrying at the next pass");
                metrics.store_purge_failures.inc();
                break;
            }
        };
        for (table, n) in [
            ("idempotency", purged.idempotency),
            ("payments", purged.payments),
            ("owners", purged.owners),
        ] {
            metrics
                .store_purged
                .with_label_values(&[table])
                .inc_by(n as u64);
        }
        total.idempotency += purged.idempotency;
        total.payments += purged.payments;
        total.owners += purged.owners;
        if !purged.more {
            break;
        }
        tokio::task::yield_now().await;
    }
    if total.total() > 0 {
        tracing::debug!(
            idempotency = total.idempotency,
            payments = total.payments,
            owners = total.owners,
            "store purge pass"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Begin, MemoryStore, StoredResponse};

    #[tokio::test]
    async fn passes_purge_in_batches_and_stop_on_shutdown() {
        let store = Arc::new(MemoryStore::new());
        let response = StoredResponse {
            status: 200,
            headers: Vec::new(),
            body: b"{}".to_vec(),
        };
        let n = BATCH * 2 + 5;
        for i in 0..n {
            let key = format!("k{i}");
            assert_eq!(store.begin(&key, "fp", 0, 1).unwrap(), Begin::Started);
            store.finish(&key, &response, 0, 1).unwrap();
        }
        assert_eq!(store.begin("flight", "fp", 0, 1).unwrap(), Begin::Started);
        let metrics = Arc::new(Metrics::new());
        let (stop, stopped) = watch::channel(false);
        let sweep = Sweep {
            interval: Duration::from_secs(3600),
            retention_ms: u64::MAX,
        };
        let task = tokio::spawn(run(store.clone(), sweep, metrics.clone(), stopped));
        // The first pass runs at start and empties what is due, over three batches.
        for _ in 0..500 {
            if metrics
                .store_purged
                .with_label_values(&["idempotency"])
                .get()
                == n as u64
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let purged = metrics
            .store_purged
            .with_label_values(&["idempotency"])
            .get();
        assert_eq!(purged, n as u64);
        assert_eq!(store.begin("k0", "other", 1, 1).unwrap(), Begin::Started);
        assert_eq!(
            store.begin("flight", "other", 1, 1).unwrap(),
            Begin::Mismatch
        );
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the sweeper stops on shutdown")
            .unwrap();
    }
}
