//! Readings as written by the store writer (latest per device and type, history, sequence
//! state, unregistered sightings and rejection counters in one transaction) and read back.

use std::collections::HashMap;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::json;
use streetgate_protocols::DeviceId;

use super::StoreResult;
use crate::model::{Reading, ReadingBody, SeqState, UnixMs};

/// One reading ready to be written: its type and JSON form.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadingRecord {
    /// Device id.
    pub device_id: String,
    /// `telemetry`, `alarm`, `status` or `ack`.
    pub reading_type: &'static str,
    /// Gateway receive time.
    pub received_ms: UnixMs,
    /// The reading as JSON text (see [`reading_json`]).
    pub body: String,
    /// The device's sequence state after this reading, committed with it.
    pub seq_state: Option<SeqState>,
}

impl ReadingRecord {
    /// Serialise a reading for the store.
    pub fn from_reading(r: &Reading) -> Self {
        Self {
            device_id: r.device_id.to_string(),
            reading_type: reading_type(&r.body),
            received_ms: r.received_ms,
            body: reading_json_string(r),
            seq_state: r.seq_state,
        }
    }
}

/// The type label of a reading body.
pub fn reading_type(body: &ReadingBody) -> &'static str {
    match body {
        ReadingBody::Telemetry(_) => "telemetry",
        ReadingBody::Alarm { .. } => "alarm",
        ReadingBody::Status { .. } => "status",
        ReadingBody::Ack { .. } => "ack",
    }
}

/// The JSON form of a reading, as stored and served by the API.
pub fn reading_json(r: &Reading) -> serde_json::Value {
    let data = match &r.body {
        ReadingBody::Telemetry(t) => serde_json::to_value(t).unwrap_or(serde_json::Value::Null),
        ReadingBody::Alarm {
            alarm,
            raised,
            value,
        } => json!({ "alarm": alarm.as_str(), "raised": raised, "value": value }),
        ReadingBody::Status {
            online,
            battery_pct,
            fw_version,
        } => json!({ "online": online, "battery_pct": battery_pct, "fw_version": fw_version }),
        ReadingBody::Ack { ref_id, ok, reason } => {
            json!({ "ref_id": ref_id, "ok": ok, "reason": reason })
        }
    };
    json!({
        "device_id": r.device_id.as_str(),
        "kind": r.kind.as_str(),
        "type": reading_type(&r.body),
        "transport": r.transport,
        "received_ms": r.received_ms,
        "device_ts_ms": r.device_ts_ms,
        "seq": r.seq,
        "data": data,
    })
}

/// The `data` member of [`reading_json`], borrowed from the reading.
#[derive(Serialize)]
#[serde(untagged)]
enum DataJson<'a> {
    Telemetry(&'a streetgate_protocols::TelemetryData),
    Alarm {
        alarm: &'static str,
        raised: bool,
        value: &'a Option<f32>,
    },
    Status {
        online: bool,
        battery_pct: &'a Option<u8>,
        fw_version: &'a Option<String>,
    },
    Ack {
        ref_id: u32,
        ok: bool,
        reason: &'a Option<String>,
    },
}

/// [`reading_json`] as a borrowed, directly serialisable document.
#[derive(Serialize)]
struct ReadingJson<'a> {
    device_id: &'a str,
    kind: &'static str,
    #[serde(rename = "type")]
    reading_type: &'static str,
    transport: &'static str,
    received_ms: UnixMs,
    device_ts_ms: Option<UnixMs>,
    seq: u32,
    data: DataJson<'a>,
}

/// [`reading_json`] as text, written straight from the reading (no intermediate
/// `serde_json::Value`: this runs once per stored reading).
pub fn reading_json_string(r: &Reading) -> String {
    let data = match &r.body {
        ReadingBody::Telemetry(t) => DataJson::Telemetry(t),
        ReadingBody::Alarm {
            alarm,
            raised,
            value,
        } => DataJson::Alarm {
            alarm: alarm.as_str(),
            raised: *raised,
            value,
        },
        ReadingBody::Status {
            online,
            battery_pct,
            fw_version,
        } => DataJson::Status {
            online: *online,
            battery_pct,
            fw_version,
        },
        ReadingBody::Ack { ref_id, ok, reason } => DataJson::Ack {
            ref_id: *ref_id,
            ok: *ok,
            reason,
        },
    };
    let doc = ReadingJson {
        device_id: r.device_id.as_str(),
        kind: r.kind.as_str(),
        reading_type: reading_type(&r.body),
        transport: r.transport,
        received_ms: r.received_ms,
        device_ts_ms: r.device_ts_ms,
        seq: r.seq,
        data,
    };
    // Serialising plain fields cannot fail; the Value form is the fallback all the same.
    serde_json::to_string(&doc).unwrap_or_else(|_| reading_json(r).to_string())
}

/// Sequence losses over the whole fleet, for the health summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SeqSummary {
    /// Devices with at least one message missing.
    pub devices_with_gaps: u64,
    /// Messages missing, all devices.
    pub missing: u64,
    /// Counter restarts (reboots), all devices.
    pub restarts: u64,
}

/// A message from a device that is not in the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnregisteredSighting {
    /// Device id from the topic.
    pub device_id: String,
    /// Kind the device claims in its status message, if one was seen.
    pub claimed_kind: Option<&'static str>,
    /// When.
    pub at_ms: UnixMs,
    /// Topic it published on.
    pub topic: String,
    /// How many messages this sighting stands for.
    pub count: u64,
}

/// What the store writer commits in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    /// Readings, in arrival order (the latest per device and type wins).
    pub readings: Vec<ReadingRecord>,
    /// Unregistered-device sightings (coalesced per device).
    pub unregistered: Vec<UnregisteredSighting>,
    /// Rejections since the previous batch, by reason.
    pub rejection_deltas: Vec<(String, u64)>,
    /// Keep reading history (false = latest only).
    pub keep_history: bool,
}

impl WriteBatch {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.readings.is_empty() && self.unregistered.is_empty() && self.rejection_deltas.is_empty()
    }
}

/// A stored reading, as read back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredReading {
    /// `telemetry`, `alarm`, `status` or `ack`.
    pub reading_type: String,
    /// Receive time.
    pub received_ms: UnixMs,
    /// The reading JSON.
    pub body: serde_json::Value,
}

/// Readings, sequence state and rejection counters.
#[async_trait]
pub trait ReadingStore: Send + Sync {
    /// Commit a batch of writes in one transaction.
    async fn write_batch(&self, batch: &WriteBatch) -> StoreResult<()>;
    /// Latest reading of each type for a device, newest first.
    async fn latest_readings(&self, device_id: &str) -> StoreResult<Vec<StoredReading>>;
    /// Recent readings of a device, newest first.
    async fn reading_history(
        &self,
        device_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<StoredReading>> {
        self.reading_history_between(device_id, UnixMs::MIN, UnixMs::MAX, limit)
            .await
    }
    /// Readings of a device received from `from_ms` to `to_ms` (both included), newest first.
    async fn reading_history_between(
        &self,
        device_id: &str,
        from_ms: UnixMs,
        to_ms: UnixMs,
        limit: u32,
    ) -> StoreResult<Vec<StoredReading>>;
    /// Every device's committed sequence state (to seed the trackers at start).
    async fn seq_states(&self) -> StoreResult<HashMap<DeviceId, SeqState>>;
    /// One device's committed sequence state.
    async fn seq_state(&self, device_id: &str) -> StoreResult<Option<SeqState>>;
    /// Losses over the fleet.
    async fn seq_summary(&self) -> StoreResult<SeqSummary>;
    /// Keep only the newest `keep` history rows per device; returns rows deleted.
    async fn trim_history(&self, keep: u32) -> StoreResult<u64>;
    /// Cumulative rejections by reason.
    async fn rejection_totals(&self) -> StoreResult<Vec<(String, u64)>>;
}
