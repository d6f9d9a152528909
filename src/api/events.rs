//! Node history and the live event stream (server-sent events).
//!
//! The stream reads from the events table, so it shows what every racklift
//! process sharing the database did, and a client reconnecting with
//! `Last-Event-ID` (or `?after=`) misses nothing. On PostgreSQL an event id can
//! become visible after a higher one (transactions commit out of order), so the
//! stream holds its cursor at a gap for a short grace period before moving on.

use super::views::EventRow;
use super::{ApiError, AppState};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::time::{Duration, Instant};
use utoipa::IntoParams;
use uuid::Uuid;

/// Paging of a node's events.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct EventParams {
    /// Only events with a larger id.
    after: Option<i64>,
    /// At most this many (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/v1/nodes/{id}/events", params(("id" = String, Path, description = "UUID or name; a deleted node's UUID still works"), EventParams),
    responses((status = 200, body = Vec<EventRow>), (status = 400, body = super::error::ErrorBody, description = "A bad page (invalid_query)"),
        (status = 404, body = super::error::ErrorBody, description = "No node has that name")), security(("bearer" = [])))]
pub(super) async fn node_events(
    State(app): State<AppState>,
    Path(id): Path<String>,
    params: Result<Query<EventParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<EventRow>>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be between 1 and 1000",
        ));
    }
    let node_id = match Uuid::parse_str(&id) {
        Ok(u) => u,
        Err(_) => app.store.get_node(&id).await?.id,
    };
    Ok(Json(
        app.store
            .node_events(node_id, p.after.unwrap_or(0), limit)
            .await?,
    ))
}

/// Where the live stream starts.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct StreamParams {
    /// Replay events after this id first (default: only new events).
    after: Option<i64>,
}

/// How long the stream waits for a missing event id before skipping it.
const GAP_GRACE: Duration = Duration::from_secs(2);

struct Cursor {
    /// Every event with an id up to here has been sent (or given up on).
    upto: i64,
    /// Ids above `upto` already sent.
    sent: BTreeSet<i64>,
    /// When the lowest gap was first seen.
    gap_since: Option<Instant>,
}

impl Cursor {
    fn advance(&mut self) {
        while self.upto < i64::MAX && self.sent.remove(&(self.upto + 1)) {
            self.upto += 1;
            self.gap_since = None;
        }
        if self.sent.is_empty() {
            self.gap_since = None;
        } else if self.gap_since.is_some_and(|t| t.elapsed() > GAP_GRACE) {
            // The missing id was a rolled-back transaction: skip it.
            self.upto = self.upto.saturating_add(1);
            self.gap_since = None;
            self.advance();
        } else if self.gap_since.is_none() {
            self.gap_since = Some(Instant::now());
        }
    }
}

#[utoipa::path(get, path = "/v1/events/stream", params(StreamParams),
    responses((status = 200, description = "text/event-stream of EventRow objects; the SSE id is the event id", content_type = "text/event-stream"),
        (status = 400, body = super::error::ErrorBody, description = "A bad start (invalid_query)")), security(("bearer" = [])))]
pub(super) async fn stream(
    State(app): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<StreamParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    let start = match last_id.or(p.after) {
        Some(id) => id,
        None => app.store.last_event_id().await?,
    };
    let cursor = Cursor {
        upto: start,
        sent: BTreeSet::new(),
        gap_since: None,
    };
    // One receiver for the stream's whole life: a fresh clone would inherit
    // the sender's last version as unseen and wake at once, every time.
    let head = app.events_head.clone();
    let state = (app, head, cursor, Vec::<EventRow>::new());
    let s = futures::stream::unfold(state, |(app, mut head, mut cur, mut pending)| async move {
        loop {
            if let Some(ev) = pending.pop() {
                let data = serde_json::to_string(&ev).unwrap_or_default();
                let sse = SseEvent::default()
                    .id(ev.id.to_string())
                    .event(ev.kind.clone())
                    .data(data);
                return Some((Ok(sse), (app, head, cur, pending)));
            }
            // Seen before reading: an event committed after this point wakes
            // the wait below, one committed before it is in the read.
            head.borrow_and_update();
            app.metrics.count("event_stream_reads");
            match app.store.events_after(cur.upto, 500).await {
                Ok(rows) => {
                    let fresh: Vec<EventRow> = rows
                        .into_iter()
                        .filter(|r| !cur.sent.contains(&r.id))
                        .collect();
                    for r in &fresh {
                        cur.sent.insert(r.id);
                    }
                    cur.advance();
                    if !fresh.is_empty() {
                        pending = fresh.into_iter().rev().collect();
                        continue;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "event stream read failed"),
            }
            let wait = if cur.gap_since.is_some() {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(5)
            };
            tokio::select! {
                changed = head.changed() => {
                    if changed.is_err() {
                        // The event pump is gone (shutting down): poll on the timer.
                        tokio::time::sleep(wait).await;
                    }
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
    });
    Ok(Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_waits_at_a_gap_then_skips_it() {
        let mut c = Cursor {
            upto: 10,
            sent: BTreeSet::new(),
            gap_since: None,
        };
        c.sent.extend([11, 12, 14]);
        c.advance();
        assert_eq!(c.upto, 12);
        assert!(c.gap_since.is_some());
        c.gap_since = Some(Instant::now() - GAP_GRACE * 2);
        c.advance();
        assert_eq!(c.upto, 14);
        assert!(c.sent.is_empty() && c.gap_since.is_none());
    }

    #[test]
    fn cursor_at_the_largest_id_does_not_overflow() {
        let mut c = Cursor {
            upto: i64::MAX,
            sent: BTreeSet::from([i64::MAX - 1]),
            gap_since: Some(Instant::now() - GAP_GRACE * 2),
        };
        c.advance();
        assert_eq!(c.upto, i64::MAX);
    }
}
