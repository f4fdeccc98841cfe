//! What the evaluation (考核) reads and keeps: the cases and history rows of a period, the
//! lighting figures per segment and night, and the monthly reports already written.

use async_trait::async_trait;

use super::{CaseHistoryEntry, CaseRecord, StoreResult};
use crate::model::UnixMs;

/// The cases a period touches, with their history up to the period's end.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeriodCases {
    /// Cases registered before the period's end and not closed or voided before its start, and
    /// cases with a history entry inside the period; by id.
    pub cases: Vec<CaseRecord>,
    /// Their history entries before the period's end: (case id, entry), by case id then in the
    /// order they were recorded. Only the notes the evaluation reads are filled in (a
    /// dispatch's, naming the team, and a supervision's, naming the level); the others are
    /// empty, which keeps a big city's month light to read.
    pub history: Vec<(i64, CaseHistoryEntry)>,
}

/// Lighting of one road segment over one UTC day (the night it holds, in the city's time zone
/// east of UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LightingDay {
    /// Road segment, or `grid:<code>` for lamps without one.
    pub segment: String,
    /// Days since the Unix epoch (UTC).
    pub day: i64,
    /// The segment's grid.
    pub grid: String,
    /// The segment's road class (`main`, `secondary`, `back`), when known.
    pub road_class: Option<String>,
    /// Lamp-seconds lit during switch-on hours.
    pub lit_s: i64,
    /// Lamp-seconds that should have been lit.
    pub expected_s: i64,
}

/// A monthly report the schedule has written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRecord {
    /// `YYYY-MM`.
    pub month: String,
    /// When it was written (the gateway's clock).
    pub written_ms: UnixMs,
    /// The files written, comma-separated.
    pub files: String,
}

/// Evaluation data.
#[async_trait]
pub trait EvaluationStore: Send + Sync {
    /// The cases touched by `[from_ms, to_ms)` and their history before `to_ms`.
    async fn period_cases(&self, from_ms: UnixMs, to_ms: UnixMs) -> StoreResult<PeriodCases>;
    /// Insert or replace lighting days (by segment and day).
    async fn save_lighting_days(&self, days: &[LightingDay]) -> StoreResult<()>;
    /// Lighting days with `from_day <= day < to_day`, by segment and day.
    async fn lighting_days(&self, from_day: i64, to_day: i64) -> StoreResult<Vec<LightingDay>>;
    /// Record a written monthly report; `false` when that month was already recorded.
    async fn record_report(&self, report: &ReportRecord) -> StoreResult<bool>;
    /// Monthly reports written, oldest first.
    async fn reports(&self) -> StoreResult<Vec<ReportRecord>>;
}
