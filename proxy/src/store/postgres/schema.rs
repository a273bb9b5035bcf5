//! The database schema, created and migrated by payproxy: numbered migrations, each applied
//! once and recorded in `schema_migrations`, all under one advisory lock so instances
//! starting together do not race (the others wait, then find nothing left to do).
//!
//! A released migration is never edited; a change is a new one appended here. Keys and
//! JSON values are `bytea`: keys contain NUL separators, which `text` refuses.

use deadpool_postgres::Object;

use super::pg;
use crate::store::StoreError;

/// The advisory lock key of migrations (any constant shared by all instances).
const LOCK: i64 = 0x7061_7970_726f_7879; // "payproxy"

/// (version, name, SQL), in order.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "idempotency, owners, payments",
        "CREATE SEQUENCE idempotency_token;
     CREATE TABLE idempotency (
         key          bytea PRIMARY KEY,
         fingerprint  text NOT NULL,
         state        text NOT NULL CHECK (state IN ('in_flight', 'finished')),
         holder       text,
         token        bigint NOT NULL,
         lease_until  timestamptz,
         started_ms   bigint,
         attempt      bytea,
         response     bytea,
         expires_ms   bigint
     );
     CREATE INDEX idempotency_due ON idempotency (expires_ms) WHERE state = 'finished';
     CREATE TABLE owners (
         payment_id  bytea PRIMARY KEY,
         owner       bytea NOT NULL,
         written_ms  bigint NOT NULL
     );
     CREATE INDEX owners_due ON owners (written_ms);
     CREATE TABLE payments (
         id          bytea PRIMARY KEY,
         list_key    bytea NOT NULL,
         customer    bytea,
         created_ms  bigint NOT NULL,
         entry       bytea NOT NULL
     );
     CREATE UNIQUE INDEX payments_list ON payments (list_key);
     CREATE INDEX payments_due ON payments (created_ms);",
    ),
    (
        2,
        "webhook outbox",
        // One row per (event, endpoint); `event` is the JSON row (`store::outbox`), the
        // columns are what claims, lists and counts select on. A claim is a lease
        // (`lease_until_ms`), taken with FOR UPDATE SKIP LOCKED.
        "CREATE TABLE outbox (
         payment_id       bytea NOT NULL,
         seq              bigint NOT NULL,
         endpoint         text NOT NULL,
         id               text NOT NULL,
         route            text NOT NULL,
         state            text NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
         next_attempt_ms  bigint NOT NULL,
         lease_until_ms   bigint NOT NULL DEFAULT 0,
         delivered_ms     bigint,
         event            bytea NOT NULL,
         PRIMARY KEY (payment_id, seq, endpoint)
     );
     CREATE INDEX outbox_undelivered ON outbox (payment_id, endpoint, seq)
         WHERE state <> 'delivered';
     CREATE INDEX outbox_ids ON outbox (id);
     CREATE INDEX outbox_delivered ON outbox (delivered_ms) WHERE state = 'delivered';",
    ),
    (
        3,
        "provider notifications",
        // The provider-reference index (`PaymentEntry::reference_keys`), written with the
        // payment and purged with it (by its creation time). Held notifications wait for a
        // payment that is not known yet.
        "CREATE TABLE payment_references (
         key          bytea PRIMARY KEY,
         payment_id   bytea NOT NULL,
         created_ms   bigint NOT NULL
     );
     CREATE INDEX payment_references_payment ON payment_references (payment_id);
     CREATE INDEX payment_references_due ON payment_references (created_ms);
     CREATE TABLE held_notices (
         key          bytea PRIMARY KEY,
         received_ms  bigint NOT NULL,
         notice       bytea NOT NULL
     );
     CREATE INDEX held_notices_age ON held_notices (received_ms);",
    ),
];

/// Applies the migrations this database lacks, in one transaction. A database migrated by a
/// newer payproxy is refused rather than used with a schema this version does not know.
pub(super) async fn migrate(client: &mut Object) -> Result<(), StoreError> {
    let op = "migrate";
    let txn = client.transaction().await.map_err(pg(op, ""))?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await
        .map_err(pg(op, ""))?;
    txn.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version     integer PRIMARY KEY,
             name        text NOT NULL,
             applied_at  timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(pg(op, ""))?;
    let applied: Vec<i32> = txn
        .query("SELECT version FROM schema_migrations", &[])
        .await
        .map_err(pg(op, ""))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if let Some(newer) = applied.iter().copied().filter(|v| *v > known).max() {
        return Err(StoreError::Postgres {
            op,
            key: String::new(),
            reason: format!(
                "the database schema is at version {newer}, newer than this payproxy knows \
                 ({known}): run a newer payproxy"
            ),
        });
    }
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        txn.batch_execute(sql).await.map_err(pg(op, name))?;
        txn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await
        .map_err(pg(op, name))?;
        tracing::info!(version, name, "postgres schema migrated");
    }
    txn.commit().await.map_err(pg(op, ""))
}
