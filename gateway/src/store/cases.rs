//! Cases (案件), their history, and the case events the alert sinks read.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use streetgate_protocols::DeviceId;

use super::StoreResult;
use crate::model::{CaseSource, CaseState, CaseType, GridCode, UnixMs};

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
    /// Highest supervision (督办) level reached (0: none); never goes down.
    #[serde(default)]
    pub supervision_level: u32,
    /// The crew of an urgent accepted case must report on site by then.
    #[serde(default)]
    pub on_site_due_ms: Option<UnixMs>,
    /// The crew reported on site (since the last acceptance) at.
    #[serde(default)]
    pub on_site_ms: Option<UnixMs>,
}

/// One recorded transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseHistoryEntry {
    /// What happened (see [`Transition::action`](crate::cases::Transition::action)).
    pub action: String,
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
    /// Urgent (`true`) or not.
    pub urgent: Option<bool>,
    /// Overdue at this time: past `due_ms` and not yet resolved (registered, dispatched,
    /// accepted or returned).
    pub overdue_at: Option<UnixMs>,
    /// Below this supervision level (cases that can still climb).
    pub supervision_below: Option<u32>,
    /// Accepted, urgent, and not reported on site by their on-site time limit at this time.
    pub on_site_late_at: Option<UnixMs>,
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

/// Cases and their history.
#[async_trait]
pub trait CaseStore: Send + Sync {
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
    /// [`CaseStore::update_case`] for a transition someone made on the case as `read`: refused
    /// as well when the sensor's fields (`condition_active`, `clear_since_ms`) changed since, so
    /// a team's transition never writes back a sensor state the gateway has moved on from (a
    /// recovery lost that way fails verification: rework nobody earned), and when its
    /// supervision (`supervision_level`, `on_site_ms`) changed since, so an escalation and an
    /// on-site report made meanwhile are kept. Either update refuses to lower
    /// `supervision_level`.
    async fn update_case_from(
        &self,
        case: &CaseRecord,
        read: &CaseRecord,
        entries: &[CaseHistoryEntry],
    ) -> StoreResult<bool>;
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
    /// The newest case event's id (0 when there is none): where a live stream that wants only
    /// what happens from now on starts.
    async fn last_case_event_id(&self) -> StoreResult<i64>;
}
