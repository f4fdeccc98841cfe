//! `GET /api/events`: the live stream the console listens to (server-sent events).
//!
//! Each case event (a new row of a case's history: registered, dispatched, accepted, resolved,
//! verified, closed...) is sent as `event: case` with the history row's id as the SSE `id`, and
//! the entry with the case as it is now as `data`. The stream is scoped like the case list: a
//! team member gets their team's cases, a grid viewer their grid's. A client that reconnects
//! sends `Last-Event-ID` (browsers do so by themselves) and gets what it missed; a new stream
//! starts from now, or after `?after=` when given. The stream starts with `event: ready`
//! (`data: {"after": <id>}`) and sends a comment every 15 s so that proxies keep it open.
//!
//! Device state is sent as `event: device` (no id: missed device events are not replayed, the
//! next one carries the state as it is) to callers with `devices_read` who are not team
//! members, for the devices of the grids they see: online or offline (status messages, last
//! wills), battery, sequence numbers and gaps, and the newest reading, at most one per device
//! per second ([`crate::console::live`]). `?devices=false` leaves them out.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;

use super::access::Identity;
use super::{ApiError, ApiQuery, ApiResult, AppState};
use crate::auth::Permission;
use crate::console::live::DeviceEvent;

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
    /// Send device state events too (default: yes, when the caller may read devices).
    devices: Option<bool>,
}

struct Cursor {
    state: AppState,
    who: Identity,
    after: i64,
    pending: VecDeque<Event>,
    started: bool,
    devices: Option<broadcast::Receiver<Arc<Vec<DeviceEvent>>>>,
    next_poll: tokio::time::Instant,
}

/// What woke a waiting stream.
enum Wake {
    Poll,
    Devices(Arc<Vec<DeviceEvent>>),
    Lagged,
    Closed,
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
    let devices = (q.devices.unwrap_or(true)
        && who.team.is_none()
        && who.require(Permission::DevicesRead).is_ok())
    .then(|| state.console.device_states.subscribe());
    let cursor = Cursor {
        state,
        who,
        after,
        pending: VecDeque::new(),
        started: false,
        devices,
        next_poll: tokio::time::Instant::now() + POLL,
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
            let sleep = tokio::time::sleep_until(c.next_poll);
            let wake = match c.devices.as_mut() {
                Some(rx) => tokio::select! {
                    () = sleep => Wake::Poll,
                    got = rx.recv() => match got {
                        Ok(batch) => Wake::Devices(batch),
                        Err(broadcast::error::RecvError::Lagged(_)) => Wake::Lagged,
                        Err(broadcast::error::RecvError::Closed) => Wake::Closed,
                    },
                },
                None => {
                    sleep.await;
                    Wake::Poll
                }
            };
            match wake {
                Wake::Poll => {
                    c.next_poll = tokio::time::Instant::now() + POLL;
                    c.fill().await;
                }
                Wake::Devices(batch) => c.push_devices(&batch),
                // A slow client skips device events; the next ones carry the state.
                Wake::Lagged => {}
                Wake::Closed => c.devices = None,
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

impl Cursor {
    /// The device events of the grids the caller sees.
    fn push_devices(&mut self, batch: &[DeviceEvent]) {
        for e in batch.iter().filter(|e| self.who.sees_grid(&e.grid)) {
            match serde_json::to_string(e) {
                Ok(data) => self
                    .pending
                    .push_back(Event::default().event("device").data(data)),
                Err(err) => tracing::warn!(error = %err, "cannot encode a device event"),
            }
        }
    }

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
