//! Persistent storage behind one trait: devices, latest readings and their history,
//! unregistered devices, rejection counters, cases with their history and the rule-state
//! snapshot.
//!
//! [`sqlite::SqliteStore`] is the implementation (WAL, migrations in `migrations_sqlite/`);
//! the SQL is kept portable so a PostgreSQL store (`migrations_postgres/`) can follow.

pub mod sqlite;
mod sqlite_users;
pub mod users;

pub use users::{AuditEntry, AuditFilter, SessionRecord, TokenRecord, UserRecord, UserStore};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use streetgate_protocols::DeviceId;

use crate::model::{
    CaseSource, CaseState, CaseType, Device, GridCode, Reading, ReadingBody, SeqState, UnixMs,
};

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("database: {0}")]
    Database(sqlx::Error),
    /// A migration failed.
    #[error("database migration: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    /// The database directory could not be created.
    #[error("cannot create {path}: {error}")]
    Io {
        /// The directory.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A stored row could not be read back.
    #[error("corrupt row in {table}: {detail}")]
    Corrupt {
        /// Table.
        table: &'static str,
        /// What was wrong.
        detail: String,
    },
}

// Manual conversions (not `#[from]`): the message already includes the cause, so it must not
// also be reported as a `source` (anyhow's `{:#}` would print it twice).
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Migrate(e)
    }
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

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
            body: reading_json(r).to_string(),
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

/// An unregistered device as listed by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnregisteredDevice {
    /// Device id.
    pub id: String,
    /// Kind claimed by its status message.
    pub claimed_kind: Option<String>,
    /// First message.
    pub first_seen_ms: UnixMs,
    /// Latest message.
    pub last_seen_ms: UnixMs,
    /// Topic of the latest message.
    pub last_topic: String,
    /// Messages received.
    pub message_count: u64,
}

/// A case as stored. `id` is assigned by the store (0 before insertion).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseRecord {
    /// Case number.
    pub id: i64,
    /// Classification.
    pub case_type: CaseType,
    /// Where it came from.
    pub source: CaseSource,
    /// [`Subject::key`](crate::model::Subject::key).
    pub subject_key: String,
    /// [`Condition::key`](crate::model::Condition::key); none for patrol/hotline cases.
    pub condition_key: Option<String>,
    /// Unit grid.
    pub grid: GridCode,
    /// Team it is dispatched to.
    pub team: Option<String>,
    /// Current state.
    pub state: CaseState,
    /// Urgent handling.
    pub urgent: bool,
    /// Devices involved.
    pub devices: Vec<DeviceId>,
    /// Description.
    pub detail: String,
    /// Registered at.
    pub opened_ms: UnixMs,
    /// Handling deadline.
    pub due_ms: Option<UnixMs>,
    /// Last change.
    pub updated_ms: UnixMs,
    /// Closed or voided at.
    pub closed_ms: Option<UnixMs>,
    /// The sensor condition is still active (sensor cases).
    pub condition_active: bool,
    /// The condition has been clear since (verification window).
    pub clear_since_ms: Option<UnixMs>,
    /// Times verification failed (返工).
    pub rework_count: u32,
    /// Times the team handed it back (退单).
    pub returned_count: u32,
}

/// One recorded transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseHistoryEntry {
    /// When.
    pub at_ms: UnixMs,
    /// Who (`system`, `sensor`, a user name).
    pub actor: String,
    /// State before (none when the case was registered).
    pub from: Option<CaseState>,
    /// State after.
    pub to: CaseState,
    /// Reason, feedback or remark.
    pub note: String,
}

/// Result of inserting a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseInsert {
    /// Stored under this id.
    Created(i64),
    /// An open case with the same subject and condition exists: nothing was stored.
    AlreadyOpen(i64),
}

/// Filters for listing cases; all optional, combined with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaseFilter {
    /// Exact state.
    pub state: Option<CaseState>,
    /// Only open (not closed or voided) cases.
    pub open: Option<bool>,
    /// Case type.
    pub case_type: Option<CaseType>,
    /// Grid.
    pub grid: Option<String>,
    /// Team.
    pub team: Option<String>,
    /// Overdue at this time: past `due_ms` and not yet resolved (registered, dispatched,
    /// accepted or returned).
    pub overdue_at: Option<UnixMs>,
    /// Page size.
    pub limit: u32,
    /// Rows skipped.
    pub offset: u32,
}

/// Open states for the overdue test: the handling deadline ends with the team's feedback.
pub const UNRESOLVED_STATES: [CaseState; 4] = [
    CaseState::Registered,
    CaseState::Dispatched,
    CaseState::Accepted,
    CaseState::Returned,
];

/// A case event: one recorded transition with the case as it is now. `event_id` is the history
/// row's id: increasing, unique, and the alert sinks' cursor.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseEvent {
    /// History row id.
    pub event_id: i64,
    /// The transition.
    pub entry: CaseHistoryEntry,
    /// The case (current state).
    pub case: CaseRecord,
}

/// Outcome of delivering one case event to one sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Acknowledged by the sink (PUBACK, or an HTTP 2xx).
    Delivered,
    /// Given up on after the last attempt (or refused for good).
    Failed,
}

/// A delivery record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryRecord {
    /// Row id (0 before insertion).
    pub id: i64,
    /// Sink name (`mqtt` or the webhook's name).
    pub sink: String,
    /// The case event.
    pub event_id: i64,
    /// Its case.
    pub case_id: i64,
    /// Outcome.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: u32,
    /// HTTP status of the last answer (webhooks).
    pub response_status: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// First attempt.
    pub first_attempt_ms: UnixMs,
    /// Delivered, or given up.
    pub finished_ms: UnixMs,
}

/// State of a lamp command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandState {
    /// Sent, waiting for the device's acknowledgement.
    Sent,
    /// Applied by the device.
    Acked,
    /// Refused by the device (the detail says why).
    Rejected,
    /// No acknowledgement in time.
    TimedOut,
    /// Could not be sent (broker or device unreachable).
    Failed,
}

/// A lamp command as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandRecord {
    /// Row id; the command's `cmd_id` on the wire.
    pub id: i64,
    /// Target lamp.
    pub device_id: String,
    /// The action, as its wire JSON.
    pub action: serde_json::Value,
    /// Who asked.
    pub actor: String,
    /// `mqtt`, `modbus-tcp` or `modbus-rtu`.
    pub transport: String,
    /// Where it stands.
    pub state: CommandState,
    /// Rejection reason or failure.
    pub detail: String,
    /// Requested at.
    pub requested_ms: UnixMs,
    /// Acknowledged, rejected, timed out or failed at.
    pub finished_ms: Option<UnixMs>,
}

/// The persistent store.
#[async_trait]
pub trait Store: UserStore + Send + Sync + std::fmt::Debug + 'static {
    /// Check the database answers.
    async fn ping(&self) -> StoreResult<()>;

    /// Every device, by id.
    async fn list_devices(&self) -> StoreResult<Vec<Device>>;
    /// One device.
    async fn get_device(&self, id: &str) -> StoreResult<Option<Device>>;
    /// Insert or replace devices in one transaction; they leave the unregistered list.
    async fn upsert_devices(&self, devices: &[Device], now_ms: UnixMs) -> StoreResult<()>;
    /// Delete a device and its readings; `false` if it did not exist.
    async fn delete_device(&self, id: &str) -> StoreResult<bool>;
    /// Number of devices.
    async fn count_devices(&self) -> StoreResult<u64>;

    /// Commit a batch of writes in one transaction.
    async fn write_batch(&self, batch: &WriteBatch) -> StoreResult<()>;
    /// Latest reading of each type for a device, newest first.
    async fn latest_readings(&self, device_id: &str) -> StoreResult<Vec<StoredReading>>;
    /// Recent readings of a device, newest first.
    async fn reading_history(&self, device_id: &str, limit: u32)
    -> StoreResult<Vec<StoredReading>>;
    /// Every device's committed sequence state (to seed the trackers at start).
    async fn seq_states(&self) -> StoreResult<std::collections::HashMap<DeviceId, SeqState>>;
    /// One device's committed sequence state.
    async fn seq_state(&self, device_id: &str) -> StoreResult<Option<SeqState>>;
    /// Losses over the fleet.
    async fn seq_summary(&self) -> StoreResult<SeqSummary>;
    /// Keep only the newest `keep` history rows per device; returns rows deleted.
    async fn trim_history(&self, keep: u32) -> StoreResult<u64>;

    /// Unregistered devices, most recently seen first.
    async fn list_unregistered(&self, limit: u32) -> StoreResult<Vec<UnregisteredDevice>>;
    /// Number of distinct unregistered devices.
    async fn count_unregistered(&self) -> StoreResult<u64>;
    /// Forget unregistered devices last seen before `seen_before_ms`, then all but the `keep`
    /// most recently seen; returns how many were removed.
    async fn trim_unregistered(&self, keep: u64, seen_before_ms: UnixMs) -> StoreResult<u64>;
    /// Cumulative rejections by reason.
    async fn rejection_totals(&self) -> StoreResult<Vec<(String, u64)>>;

    /// Open cases (not closed or voided) by case type.
    async fn open_case_counts(&self) -> StoreResult<Vec<(String, u64)>>;
    /// Register a case with its first history entry, unless an open case with the same
    /// subject and condition exists (decided atomically by the database).
    async fn insert_case(
        &self,
        case: &CaseRecord,
        entry: &CaseHistoryEntry,
    ) -> StoreResult<CaseInsert>;
    /// Store a changed case and its new history entries, only if it is still in
    /// `expected_state` (optimistic concurrency); `false` if someone changed it first.
    async fn update_case(
        &self,
        case: &CaseRecord,
        expected_state: CaseState,
        entries: &[CaseHistoryEntry],
    ) -> StoreResult<bool>;
    /// [`Store::update_case`] for a transition someone made on the case as `read`: refused as
    /// well when the sensor's fields (`condition_active`, `clear_since_ms`) changed since, so a
    /// team's transition never writes back a sensor state the gateway has moved on from (a
    /// recovery lost that way fails verification: rework nobody earned).
    async fn update_case_from(
        &self,
        case: &CaseRecord,
        read: &CaseRecord,
        entries: &[CaseHistoryEntry],
    ) -> StoreResult<bool> {
        self.update_case(case, read.state, entries).await
    }
    /// One case.
    async fn get_case(&self, id: i64) -> StoreResult<Option<CaseRecord>>;
    /// The open case for a subject and condition.
    async fn open_case(
        &self,
        subject_key: &str,
        condition_key: &str,
    ) -> StoreResult<Option<CaseRecord>>;
    /// The most recently closed case for a subject and condition closed at or after `since_ms`
    /// (recurrence within the reopen window).
    async fn recently_closed_case(
        &self,
        subject_key: &str,
        condition_key: &str,
        since_ms: UnixMs,
    ) -> StoreResult<Option<CaseRecord>>;
    /// Cases matching a filter, newest first, with the total count.
    async fn list_cases(&self, filter: &CaseFilter) -> StoreResult<(u64, Vec<CaseRecord>)>;
    /// Every open case (to rebuild in-memory state after a restart).
    async fn open_cases(&self) -> StoreResult<Vec<CaseRecord>>;
    /// History of a case, oldest first.
    async fn case_history(&self, id: i64) -> StoreResult<Vec<CaseHistoryEntry>>;

    /// Case events after `after_id`, oldest first, at most `limit`.
    async fn case_events_after(&self, after_id: i64, limit: u32) -> StoreResult<Vec<CaseEvent>>;
    /// The last case event a sink is done with. A sink seen for the first time starts at the
    /// newest event: a new webhook is not flooded with the past.
    async fn alert_cursor(&self, sink: &str) -> StoreResult<i64>;
    /// Record a delivery and move the sink's cursor to its event, in one transaction.
    async fn record_delivery(&self, delivery: &DeliveryRecord) -> StoreResult<()>;
    /// Delivery records, newest first, optionally of one sink and/or status.
    async fn list_deliveries(
        &self,
        sink: Option<&str>,
        status: Option<DeliveryStatus>,
        limit: u32,
    ) -> StoreResult<Vec<DeliveryRecord>>;

    /// Record a new command (state `sent`); returns its id (the wire `cmd_id`).
    async fn insert_command(&self, command: &CommandRecord) -> StoreResult<i64>;
    /// Set a command's final state.
    async fn finish_command(
        &self,
        id: i64,
        state: CommandState,
        detail: &str,
        at_ms: UnixMs,
    ) -> StoreResult<()>;
    /// Commands, newest first, optionally of one device.
    async fn list_commands(
        &self,
        device_id: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<CommandRecord>>;

    /// Save the rule-engine snapshot (replaces the previous one).
    async fn save_rule_state(&self, state: &str, saved_ms: UnixMs) -> StoreResult<()>;
    /// The last rule-engine snapshot and when it was saved.
    async fn load_rule_state(&self) -> StoreResult<Option<(String, UnixMs)>>;

    /// Flush and close.
    async fn close(&self);
}
