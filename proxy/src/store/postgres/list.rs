//! `list_payments` on Postgres: a page is one range query over the list index
//! (`payments.list_key`, the same keys as the embedded stores' index), newest first.

use std::collections::HashMap;

use deadpool_postgres::{GenericClient, Pool};

use super::pg;
use crate::plugin::storefront::ListQuery;
use crate::store::payments::{self, Page, PaymentEntry, PAYMENTS};
use crate::store::record;
use crate::store::StoreError;

/// A page of `route_`'s payments for `query_` (see `payments::scan` for the paging rules).
pub(super) async fn page(
    pool: Pool,
    route_: String,
    query_: ListQuery,
) -> Result<Page, StoreError> {
    let op = "list_payments";
    let client = pool.get().await.map_err(pg(op, &route_))?;
    // The anchor's list key, read first (a page is not a snapshot, as on redb).
    let mut anchor_key = None;
    if let Some(anchor) = query_
        .starting_after
        .as_ref()
        .or(query_.ending_before.as_ref())
    {
        let row = client
            .query_opt(
                "SELECT list_key FROM payments WHERE id = $1",
                &[&anchor.as_bytes()],
            )
            .await
            .map_err(pg(op, &route_))?;
        anchor_key = row.map(|r| String::from_utf8_lossy(r.get(0)).into_owned());
    }
    let Some(scan) = payments::scan(&route_, &query_, |_| Ok(anchor_key.clone()))? else {
        return Ok((Vec::new(), false));
    };
    let limit = i64::from(query_.limit.clamp(1, 100)) + 1;
    let rows = list_rows(&client, &scan, query_.customer.as_deref(), limit)
        .await
        .map_err(pg(op, &route_))?;
    let mut entries = HashMap::new();
    let mut ids = Vec::new();
    for row in rows {
        let id = String::from_utf8_lossy(row.get(0)).into_owned();
        let entry: PaymentEntry = record::decode(PAYMENTS, &id, row.get(1))?;
        ids.push(id.clone());
        entries.insert(id, entry);
    }
    payments::collect(ids.into_iter().map(Ok), &query_, scan.ascending, |id| {
        Ok(entries.get(id).cloned())
    })
}

/// One range query over the list index, in scan order, at most `limit` rows.
async fn list_rows(
    client: &impl GenericClient,
    scan: &payments::Scan,
    customer: Option<&str>,
    limit: i64,
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    use std::ops::Bound;
    let bound = |b: &Bound<String>, inclusive: &'static str, exclusive: &'static str| match b {
        Bound::Included(k) => (Some(k.as_bytes().to_vec()), inclusive),
        Bound::Excluded(k) => (Some(k.as_bytes().to_vec()), exclusive),
        Bound::Unbounded => (None, inclusive),
    };
    let (lower, lower_op) = bound(&scan.lower, ">=", ">");
    let (upper, upper_op) = bound(&scan.upper, "<=", "<");
    let order = if scan.ascending { "ASC" } else { "DESC" };
    let sql = format!(
        "SELECT id, entry FROM payments
          WHERE ($1::bytea IS NULL OR list_key {lower_op} $1)
            AND ($2::bytea IS NULL OR list_key {upper_op} $2)
            AND ($3::bytea IS NULL OR customer = $3)
          ORDER BY list_key {order} LIMIT $4"
    );
    let customer = customer.map(|c| c.as_bytes().to_vec());
    client
        .query(&sql, &[&lower, &upper, &customer, &limit])
        .await
}
