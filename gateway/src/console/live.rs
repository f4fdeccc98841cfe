//! Device state for the live stream (`GET /api/events`, `event: device`).
//!
//! [`DeviceStates`] is one of the store writer's outputs: it sees every reading once its batch
//! is committed, never waits, and keeps
//!
//! - the devices whose last word was "offline" (a status message with `online: false`, the
//!   broker's last will, a Modbus device that stopped answering), until the device is heard
//!   from again. The map greys them out together with the devices of open offline cases;
//! - while a console listens, what changed per device since the last flush. Once a second
//!   [`DeviceStates::flush`] turns that into one event per device (so at most one event per
//!   device per second, however chatty it is) and broadcasts them; each stream passes on those
//!   of the grids its caller sees.
//!
//! Nothing is kept for devices that report normally, so a city of a million devices costs a
//! set of its offline devices, plus the changes of one second while a console is open.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use streetgate_protocols::DeviceId;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::inventory::Inventory;
use crate::model::{Reading, ReadingBody, UnixMs};
use crate::outputs::ReadingOutput;

/// How often pending changes are sent: at most one event per device per this period.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Flushes a slow stream may fall behind before it skips ahead.
const CHANNEL: usize = 16;

/// One device's state as the console shows it, sent as `event: device`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeviceEvent {
    /// Device id.
    pub device_id: String,
    /// Device kind.
    pub kind: &'static str,
    /// Its grid (the stream's scope).
    pub grid: String,
    /// Receive time of its newest message in this period.
    pub at_ms: UnixMs,
    /// Online, as far as the gateway knows: `false` after an offline status or last will until
    /// the device is heard from again.
    pub online: bool,
    /// Whether this period had a status message (online/offline said by the device or its will).
    pub status_changed: bool,
    /// Battery, % (status or telemetry), when a message of this period carried it.
    pub battery_pct: Option<u8>,
    /// Newest sequence number accepted.
    pub last_seq: Option<u32>,
    /// Messages that never arrived, since the device was first seen.
    pub seq_gaps: Option<u64>,
    /// Counter restarts.
    pub seq_restarts: Option<u64>,
    /// The newest telemetry or alarm of this period, as `GET /api/devices/{id}/latest` shows a
    /// reading (`type`, `received_ms`, `data`...).
    pub reading: Option<serde_json::Value>,
}

/// What one period changed for one device.
#[derive(Debug, Clone)]
struct Pending {
    at_ms: UnixMs,
    kind: &'static str,
    status_changed: bool,
    /// Battery of the newest status message, with its time.
    status_battery: Option<(UnixMs, u8)>,
    seq: Option<crate::model::SeqState>,
    /// The newest telemetry or alarm (its battery is read at the flush, once).
    reading: Option<Reading>,
}

impl Pending {
    /// The newest battery figure of the period: a status message's or the telemetry's.
    fn battery_pct(&self) -> Option<u8> {
        let telemetry = self
            .reading
            .as_ref()
            .and_then(|r| battery_of(r).map(|b| (r.received_ms, b)));
        match (self.status_battery, telemetry) {
            (Some(s), Some(t)) => Some(if t.0 > s.0 { t.1 } else { s.1 }),
            (s, t) => s.or(t).map(|(_, b)| b),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    offline: HashSet<DeviceId>,
    pending: HashMap<DeviceId, Pending>,
}

/// Live device state: offline devices, and the per-second device events of the live stream.
#[derive(Debug)]
pub struct DeviceStates {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Vec<DeviceEvent>>>,
}

impl Default for DeviceStates {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            tx: broadcast::channel(CHANNEL).0,
        }
    }
}

/// The battery figure of a telemetry reading.
fn battery_of(r: &Reading) -> Option<u8> {
    match &r.body {
        ReadingBody::Telemetry(t) => serde_json::to_value(t)
            .ok()?
            .get(r.kind.as_str())?
            .get("battery_pct")?
            .as_u64()
            .and_then(|b| u8::try_from(b).ok()),
        _ => None,
    }
}

impl DeviceStates {
    /// Take readings the store has committed (in arrival order).
    pub fn take(&self, readings: &[Reading]) {
        let listening = self.tx.receiver_count() > 0;
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        for r in readings {
            let status = match &r.body {
                ReadingBody::Status { online, .. } => Some(*online),
                _ => None,
            };
            match status {
                Some(false) => {
                    if !inner.offline.contains(&r.device_id) {
                        inner.offline.insert(r.device_id.clone());
                    }
                }
                // A birth, or any message: the device is alive.
                _ => {
                    if !inner.offline.is_empty() {
                        inner.offline.remove(&r.device_id);
                    }
                }
            }
            if !listening {
                continue;
            }
            let p = inner
                .pending
                .entry(r.device_id.clone())
                .or_insert_with(|| Pending {
                    at_ms: r.received_ms,
                    kind: r.kind.as_str(),
                    status_changed: false,
                    status_battery: None,
                    seq: None,
                    reading: None,
                });
            p.at_ms = p.at_ms.max(r.received_ms);
            p.status_changed |= status.is_some();
            if let ReadingBody::Status {
                battery_pct: Some(b),
                ..
            } = &r.body
            {
                p.status_battery = Some((r.received_ms, *b));
            }
            if r.seq_state.is_some() {
                p.seq = r.seq_state;
            }
            if matches!(
                r.body,
                ReadingBody::Telemetry(_) | ReadingBody::Alarm { .. }
            ) {
                p.reading = Some(r.clone());
            }
        }
        if !listening {
            inner.pending.clear();
        }
    }

    /// Whether the device's last word was "offline".
    pub fn is_offline(&self, id: &DeviceId) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .offline
            .contains(id)
    }

    /// The devices whose last word was "offline".
    pub fn offline(&self) -> HashSet<DeviceId> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .offline
            .clone()
    }

    /// Device events from now on (one batch per flush).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Vec<DeviceEvent>>> {
        self.tx.subscribe()
    }

    /// Send what changed since the last flush, one event per device; devices no longer in the
    /// inventory are left out. Returns how many events were sent.
    pub fn flush(&self, inventory: &Inventory) -> usize {
        let (pending, offline) = {
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            if inner.pending.is_empty() {
                return 0;
            }
            let pending = std::mem::take(&mut inner.pending);
            let offline: HashSet<DeviceId> = pending
                .keys()
                .filter(|id| inner.offline.contains(*id))
                .cloned()
                .collect();
            (pending, offline)
        };
        let devices = inventory.snapshot();
        let mut events: Vec<DeviceEvent> = pending
            .into_iter()
            .filter_map(|(id, p)| {
                let grid = devices.get(&id)?.grid.clone();
                Some(DeviceEvent {
                    online: !offline.contains(&id),
                    device_id: id.to_string(),
                    kind: p.kind,
                    grid,
                    at_ms: p.at_ms,
                    status_changed: p.status_changed,
                    battery_pct: p.battery_pct(),
                    last_seq: p.seq.map(|s| s.last_seq),
                    seq_gaps: p.seq.map(|s| s.missing),
                    seq_restarts: p.seq.map(|s| s.restarts),
                    reading: p.reading.as_ref().map(crate::store::reading_json),
                })
            })
            .collect();
        events.sort_by_key(|e| e.at_ms);
        let n = events.len();
        if n > 0 {
            // No receiver: nobody listens any more, nothing to do.
            let _ = self.tx.send(Arc::new(events));
        }
        n
    }

    /// Flush every [`FLUSH_EVERY`] until `cancel` fires.
    pub async fn run(self: Arc<Self>, inventory: Arc<Inventory>, cancel: CancellationToken) {
        let mut every = tokio::time::interval(FLUSH_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = every.tick() => {
                    self.flush(&inventory);
                }
            }
        }
    }
}

/// The store writer's handle on the device states.
#[derive(Debug, Clone)]
pub struct DeviceStateOutput(pub Arc<DeviceStates>);

impl ReadingOutput for DeviceStateOutput {
    fn name(&self) -> &'static str {
        "device-states"
    }

    fn offer(&self, readings: &Arc<[Reading]>) {
        self.0.take(readings);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Device, SeqState, Transport};
    use streetgate_protocols::DeviceKind;

    fn reading(id: &str, body: ReadingBody, at: UnixMs, seq: u32, missing: u64) -> Reading {
        Reading {
            device_id: DeviceId::new(id).unwrap(),
            kind: DeviceKind::Manhole,
            received_ms: at,
            device_ts_ms: None,
            seq,
            transport: "mqtt",
            body,
            seq_state: Some(SeqState {
                last_seq: seq,
                missing,
                ..SeqState::default()
            }),
        }
    }

    fn status(online: bool) -> ReadingBody {
        ReadingBody::Status {
            online,
            battery_pct: Some(77),
            fw_version: None,
        }
    }

    fn inventory() -> Inventory {
        let d = |id: &str, grid: &str| Device {
            id: DeviceId::new(id).unwrap(),
            kind: DeviceKind::Manhole,
            component_code: None,
            lat: 35.0,
            lon: 114.0,
            grid: grid.to_owned(),
            road_segment: None,
            road_class: None,
            toilet_class: None,
            bin_depth_mm: None,
            overrides: Default::default(),
            transport: Transport::Mqtt,
        };
        Inventory::new(vec![d("MH-1", "G1"), d("MH-2", "G2")])
    }

    #[test]
    fn offline_until_heard_from_and_one_event_per_device_per_flush() {
        let states = DeviceStates::default();
        let inv = inventory();
        // Nobody listens: the offline set is kept, nothing else.
        states.take(&[reading("MH-1", status(false), 1_000, 5, 0)]);
        assert!(states.is_offline(&DeviceId::new("MH-1").unwrap()));
        assert_eq!(states.flush(&inv), 0);

        let mut rx = states.subscribe();
        states.take(&[
            reading("MH-1", status(true), 2_000, 1, 0),
            reading("MH-1", status(false), 2_500, 2, 3),
            reading("MH-2", status(true), 2_600, 9, 0),
            reading("NOT-IN-INVENTORY", status(true), 2_700, 1, 0),
        ]);
        assert_eq!(states.flush(&inv), 2);
        let batch = rx.try_recv().unwrap();
        let one = batch.iter().find(|e| e.device_id == "MH-1").unwrap();
        assert!(!one.online && one.status_changed);
        assert_eq!(
            (one.last_seq, one.seq_gaps, one.battery_pct, one.at_ms),
            (Some(2), Some(3), Some(77), 2_500)
        );
        assert_eq!(one.grid, "G1");
        assert!(batch.iter().any(|e| e.device_id == "MH-2" && e.online));
        // Nothing new: no event.
        assert_eq!(states.flush(&inv), 0);
        assert!(rx.try_recv().is_err());
        assert_eq!(states.offline().len(), 1);
    }
}
