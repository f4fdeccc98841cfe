//! `GET /api/events`: the live stream the console listens to (server-sent events).
//!
//! Each case event (a new row of a case's history: registered, dispatched, accepted, resolved,
//! verified, closed...) is sent as `event: case` with the history row's id as the SSE `id`, and
//! the entry with the case as it is now as `data`. The stream is scoped like the case list: a
//! team member gets their team's cases, a grid viewer their grid's. A client that reconnects
//! sends `Last-Event-ID` (browsers do so by themselves) and gets what it missed; a new stream
//! starts from now, or after `?after=` when given. The stream starts with `event: ready`
//! (`data: {"after": <id>}`) and sends a comment every 15 s so that proxies keep it open.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use serde_json::json;

use super::access::Identity;
use super::{ApiError, ApiQuery, ApiResult, AppState};
use crate::auth::Permission;

/// How often the store is asked for new case events. A case raised by a device reaches an
/// open console within this plus the time to commit it.
const POLL: Duration = Duration::from_millis(400);
/// Events read from the store at once.
const BATCH: u32 = 500;

/// Query of `GET /api/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    /// Start after this event id (as `Last-Event-ID` does; the header wins).
    after: Option<i64>,
}

struct Cursor {
    state: AppState,
    who: Identity,
    after: i64,
    pending: VecDeque<Event>,
    started: bool,
}

pub(super) async fn stream(
    State(state): State<AppState>,
    who: Identity,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    who.require(Permission::CasesRead)?;
    let header = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_last_event_id",
                        "Last-Event-ID: expected the id of an event this stream sent (a number)",
                    )
                })?,
        ),
        None => None,
    };
    let after = match header.or(q.after) {
        Some(id) => id.max(0),
        None => state.store.last_case_event_id().await?,
    };
    let cursor = Cursor {
        state,
        who,
        after,
        pending: VecDeque::new(),
        started: false,
    };
    let events = futures::stream::unfold(cursor, |mut c| async move {
        if !c.started {
            c.started = true;
            let ready = Event::default()
                .event("ready")
                .data(json!({ "after": c.after }).to_string());
            return Some((Ok(ready), c));
        }
        loop {
            if let Some(e) = c.pending.pop_front() {
                return Some((Ok(e), c));
            }
            tokio::time::sleep(POLL).await;
            c.fill().await;
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

impl Cursor {
    /// Read the case events after the cursor that the caller may see.
    async fn fill(&mut self) {
        let found = match self.state.store.case_events_after(self.after, BATCH).await {
            Ok(found) => found,
            Err(e) => {
                // The client keeps its stream; the next poll tries again.
                tracing::warn!(error = %e, "cannot read case events for a live stream");
                return;
            }
        };
        let now = self.state.clock.now_ms();
        for e in found {
            self.after = self.after.max(e.event_id);
            if !self.who.sees_case(&e.case) {
                continue;
            }
            let data = json!({
                "event_id": e.event_id,
                "action": e.entry.action,
                "actor": e.entry.actor,
                "at_ms": e.entry.at_ms,
                "from": e.entry.from,
                "to": e.entry.to,
                "note": e.entry.note,
                "case": super::cases::case_json(&e.case, now),
            });
            self.pending.push_back(
                Event::default()
                    .id(e.event_id.to_string())
                    .event("case")
                    .data(data.to_string()),
            );
        }
    }
}
