//! The memory store as it fills, as on a benchmark run or a demo left running: the store
//! keeps every record until retention purges it, so its maps grow and rehash all along, each
//! time under the lock every payment's store calls take. Each payment has its owner (so the
//! provider-reference index grows too).
//!
//! - `fill 100k`: `put_payment` of 100,000 new payments into an empty `MemoryStore`;
//! - `the payment that grows the map`: the one `put_payment` after 114,688 (7/8 of 2^17,
//!   where the map of payments doubles, and with it the provider-reference index, which
//!   holds one key per payment here): how long every other store call on payments (they
//!   take the same lock) waits behind it.
//!
//! Each iteration drops a filled store before the next: jemalloc may hand its pages out
//! again, so a table's pages are not always freshly faulted here as in a growing process.
//!
//! Run: `cargo bench -p payproxy --bench memory_store`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BatchSize, Criterion};
use payproxy::plugin::storefront::{PaymentRecord, PaymentState};
use payproxy::store::{MemoryStore, Owner, PaymentEntry, Store};

// The allocator the payproxy binary runs with (`src/main.rs`): what a growing map costs
// depends on how it hands out and takes back the large tables.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const PAYMENTS: usize = 100_000;
/// Payments a map of 2^17 buckets holds before it doubles (hashbrown keeps 1/8 free).
const BEFORE_GROWTH: usize = (1 << 17) / 8 * 7;

fn entries(count: usize) -> Vec<PaymentEntry> {
    let payment: payproxy::plugin::types::Payment = serde_json::from_value(serde_json::json!({
        "operation": "Authorize",
        "amount": { "minor": 1000, "currency": "EUR" },
        "customer": { "id": "cus_bench", "phone_verified": false },
        "metadata": [["order_id", "ord_1"]],
        "strong_auth": { "authenticated": false },
        "manual_capture": false,
    }))
    .expect("a payment");
    (0..count)
        .map(|i| {
            let mut entry = PaymentEntry::new(
                "payments",
                1_700_000_000_000 + i as u64,
                PaymentRecord {
                    id: format!("pi_bench{i:08}"),
                    payment: black_box(&payment).clone(),
                    state: PaymentState::Succeeded,
                    created: 1_700_000_000,
                    amount_captured: 1000,
                    amount_refunded: 0,
                    last_outcome: None,
                },
            );
            entry.owner = Some(Owner {
                provider: "adyen".into(),
                reference: format!("psp{i:08}"),
                currency: Some("EUR".into()),
            });
            entry
        })
        .collect()
}

fn fill(c: &mut Criterion) {
    let entries = entries(BEFORE_GROWTH + 1);
    let mut group = c.benchmark_group("memory_store");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("fill 100k", |b| {
        b.iter_batched(
            MemoryStore::new,
            |store| {
                for entry in &entries[..PAYMENTS] {
                    store.put_payment(entry, &[]).expect("stored");
                }
                store
            },
            BatchSize::PerIteration,
        )
    });
    // Each iteration fills a store to the brink untimed (a few hundred ms), then times the
    // one payment that makes it grow.
    group.measurement_time(Duration::from_secs(1));
    group.warm_up_time(Duration::from_millis(500));
    group.bench_function("the payment that grows the map", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let store = MemoryStore::new();
                for entry in &entries[..BEFORE_GROWTH] {
                    store.put_payment(entry, &[]).expect("stored");
                }
                let started = Instant::now();
                store
                    .put_payment(&entries[BEFORE_GROWTH], &[])
                    .expect("stored");
                total += started.elapsed();
                drop(black_box(store));
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, fill);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
