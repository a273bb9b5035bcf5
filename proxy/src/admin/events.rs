//! `GET /admin/events?state=pending|failed[&limit=N]`: undelivered storefront events (ids,
//! payment, type, endpoint, attempts, next attempt, last error, lease), never their bodies;
//! `POST /admin/events/{id}/redeliver`: queue an event again (each endpoint's row that is not
//! pending), due at once, its give-up age restarting.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

use super::{error, redact_userinfo};
use crate::error::json_response;
use crate::store::{EventState, OutboxEvent, Store, StoreError};

/// Most events one list answers.
const MAX_LIST: usize = 1_000;
/// Events a list answers unless `limit` says otherwise.
const DEFAULT_LIST: usize = 100;

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One row as the admin API shows it.
fn view(row: &OutboxEvent, now_ms: u64) -> Value {
    let e = &row.event;
    let claimed = row.lease_until_ms > now_ms;
    json!({
        "id": e.id,
        "payment": e.payment_id,
        "route": e.route,
        "type": e.event_type,
        "endpoint": redact_userinfo(&e.endpoint),
        "state": row.state.as_str(),
        "attempts": row.attempts,
        "created_ms": e.created_ms,
        "next_attempt_ms": row.next_attempt_ms,
        "last_error": row.last_error,
        "claimed_by": if claimed { row.claimed_by.clone() } else { None },
        "lease_until_ms": if claimed { Some(row.lease_until_ms) } else { None },
    })
}

/// A query parameter's value.
fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

async fn blocking<T: Send + 'static>(
    store: &Arc<dyn Store>,
    f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, String> {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || f(&*store)).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

fn store_failed(e: &str) -> Response<Full<Bytes>> {
    tracing::warn!(error = %e, "admin: outbox store call failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the state store did not answer",
    )
}

/// `GET /admin/events`.
pub(super) async fn list(store: &Arc<dyn Store>, query: &str) -> Response<Full<Bytes>> {
    let state = match param(query, "state").unwrap_or("pending") {
        "pending" => EventState::Pending,
        "failed" => EventState::Failed,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_state",
                "state must be pending or failed",
            )
        }
    };
    let limit = match param(query, "limit").map(str::parse::<usize>) {
        None => DEFAULT_LIST,
        Some(Ok(n)) if (1..=MAX_LIST).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_limit",
                "limit must be 1..=1000",
            )
        }
    };
    let listed = blocking(store, move |s| {
        Ok((s.list_events(state, limit)?, s.event_counts()?))
    })
    .await;
    match listed {
        Ok((rows, counts)) => {
            let now = wall_ms();
            let counts: serde_json::Map<String, Value> = counts
                .into_iter()
                .map(|(route, (pending, failed))| {
                    (route, json!({ "pending": pending, "failed": failed }))
                })
                .collect();
            json_response(
                StatusCode::OK,
                &json!({
                    "state": state.as_str(),
                    "events": rows.iter().map(|r| view(r, now)).collect::<Vec<_>>(),
                    "counts": counts,
                }),
            )
        }
        Err(e) => store_failed(&e),
    }
}

/// `POST /admin/events/{id}/redeliver`.
pub(super) async fn redeliver(store: &Arc<dyn Store>, id: &str) -> Response<Full<Bytes>> {
    if id.is_empty() || id.len() > 255 {
        return error(StatusCode::NOT_FOUND, "not_found", "no such event");
    }
    let event = id.to_string();
    match blocking(store, move |s| s.redeliver_event(&event, wall_ms())).await {
        Ok(0) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such event, or it is pending already",
        ),
        Ok(n) => {
            tracing::info!(event = %id, rows = n, "admin: event queued for redelivery");
            json_response(StatusCode::OK, &json!({ "id": id, "requeued": n }))
        }
        Err(e) => store_failed(&e),
    }
}

/// The event id of a `/admin/events/{id}/redeliver` path.
pub(super) fn redeliver_id(path: &str) -> Option<&str> {
    path.strip_prefix("/admin/events/")?
        .strip_suffix("/redeliver")
        .filter(|id| !id.contains('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_params() {
        assert_eq!(redeliver_id("/admin/events/evt_1/redeliver"), Some("evt_1"));
        assert_eq!(redeliver_id("/admin/events/a/b/redeliver"), None);
        assert_eq!(redeliver_id("/admin/events/evt_1"), None);
        assert_eq!(param("state=failed&limit=5", "limit"), Some("5"));
        assert_eq!(param("state=failed", "limit"), None);
    }
}
