//! [`CaseStore`] in SQL. Deduplication is the partial unique index `cases_open_key` (one open
//! case per subject and condition): two writers racing to open the same case, in one process or
//! two, end with one case.

use async_trait::async_trait;
use sqlx::{
    ColumnIndex, Decode, Encode, Executor, IntoArguments, QueryBuilder, Row, Transaction, Type,
};

use super::{Dialect, SqlStore, corrupt, count, enum_text, text_enum};
use crate::model::{CaseState, UnixMs};
use crate::store::{
    CaseEvent, CaseFilter, CaseHistoryEntry, CaseInsert, CaseRecord, CaseStore, StoreResult,
    UNRESOLVED_STATES,
};

pub(super) fn case_from_row<R: Row>(row: &R) -> StoreResult<CaseRecord>
where
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    let id: i64 = row.try_get("id")?;
    let bad =
        |field: &str, e: &dyn std::fmt::Display| corrupt("cases", format!("{id}.{field}: {e}"));
    let case_type: String = row.try_get("case_type")?;
    let source: String = row.try_get("source")?;
    let state: String = row.try_get("state")?;
    let devices: String = row.try_get("devices")?;
    let rework: i64 = row.try_get("rework_count")?;
    let returned: i64 = row.try_get("returned_count")?;
    let level: i64 = row.try_get("supervision_level")?;
    Ok(CaseRecord {
        id,
        case_type: text_enum(&case_type).map_err(|e| bad("case_type", &e))?,
        source: text_enum(&source).map_err(|e| bad("source", &e))?,
        subject_key: row.try_get("subject_key")?,
        condition_key: row.try_get("condition_key")?,
        grid: row.try_get("grid")?,
        team: row.try_get("team")?,
        state: text_enum(&state).map_err(|e| bad("state", &e))?,
        urgent: row.try_get("urgent")?,
        devices: serde_json::from_str(&devices).map_err(|e| bad("devices", &e))?,
        detail: row.try_get("detail")?,
        opened_ms: row.try_get("opened_ms")?,
        due_ms: row.try_get("due_ms")?,
        updated_ms: row.try_get("updated_ms")?,
        closed_ms: row.try_get("closed_ms")?,
        condition_active: row.try_get("condition_active")?,
        clear_since_ms: row.try_get("clear_since_ms")?,
        rework_count: u32::try_from(rework).map_err(|e| bad("rework_count", &e))?,
        returned_count: u32::try_from(returned).map_err(|e| bad("returned_count", &e))?,
        supervision_level: u32::try_from(level).map_err(|e| bad("supervision_level", &e))?,
        on_site_due_ms: row.try_get("on_site_due_ms")?,
        on_site_ms: row.try_get("on_site_ms")?,
    })
}

pub(super) fn history_from_row<R: Row>(r: &R) -> StoreResult<CaseHistoryEntry>
where
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let from: Option<String> = r.try_get("from_state")?;
    let to: String = r.try_get("to_state")?;
    Ok(CaseHistoryEntry {
        action: r.try_get("action")?,
        at_ms: r.try_get("at_ms")?,
        actor: r.try_get("actor")?,
        from: from
            .map(|f| text_enum(&f))
            .transpose()
            .map_err(|e| corrupt("case_history", e))?,
        to: text_enum(&to).map_err(|e| corrupt("case_history", e))?,
        note: r.try_get("note")?,
    })
}

fn state_text(s: CaseState) -> String {
    enum_text(&s).unwrap_or_default()
}

fn push_case_filter<DB: sqlx::Database>(q: &mut QueryBuilder<DB>, f: &CaseFilter)
where
    for<'r> String: Encode<'r, DB> + Type<DB>,
    for<'r> i64: Encode<'r, DB> + Type<DB>,
{
    q.push(" WHERE 1 = 1");
    if let Some(s) = f.state {
        q.push(" AND state = ").push_bind(state_text(s));
    }
    match f.open {
        Some(true) => {
            q.push(" AND state NOT IN ('closed', 'voided')");
        }
        Some(false) => {
            q.push(" AND state IN ('closed', 'voided')");
        }
        None => {}
    }
    if let Some(t) = f.case_type {
        q.push(" AND case_type = ")
            .push_bind(enum_text(&t).unwrap_or_default());
    }
    if let Some(g) = &f.grid {
        q.push(" AND grid = ").push_bind(g.clone());
    }
    if let Some(t) = &f.team {
        q.push(" AND team = ").push_bind(t.clone());
    }
    if let Some(level) = f.supervision_below {
        q.push(" AND supervision_level < ")
            .push_bind(i64::from(level));
    }
    if let Some(now) = f.on_site_late_at {
        q.push(" AND state = 'accepted' AND on_site_ms IS NULL AND on_site_due_ms IS NOT NULL")
            .push(" AND on_site_due_ms < ")
            .push_bind(now);
    }
    if let Some(urgent) = f.urgent {
        q.push(if urgent {
            " AND urgent = TRUE"
        } else {
            " AND urgent = FALSE"
        });
    }
    if let Some(now) = f.overdue_at {
        q.push(" AND due_ms IS NOT NULL AND due_ms < ")
            .push_bind(now);
        q.push(" AND state IN (");
        let mut list = q.separated(", ");
        for s in UNRESOLVED_STATES {
            list.push_bind(state_text(s));
        }
        q.push(")");
    }
}

impl<DB: Dialect> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'r> String: Encode<'r, DB> + Type<DB>,
    for<'r> i64: Encode<'r, DB> + Type<DB>,
    for<'r> bool: Encode<'r, DB> + Type<DB>,
    for<'r> Option<String>: Encode<'r, DB>,
    for<'r> Option<i64>: Encode<'r, DB>,
{
    async fn insert_history(
        tx: &mut Transaction<'static, DB>,
        case_id: i64,
        e: &CaseHistoryEntry,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO case_history (case_id, action, at_ms, actor, from_state, to_state, note)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(case_id)
        .bind(e.action.as_str())
        .bind(e.at_ms)
        .bind(e.actor.as_str())
        .bind(e.from.map(state_text))
        .bind(state_text(e.to))
        .bind(e.note.as_str())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Store a changed case if it is still in `expected_state`, its supervision level is not
    /// above the new one, and, when `read` is given, its sensor fields (`condition_active`,
    /// `clear_since_ms`) and supervision (`supervision_level`, `on_site_ms`) are still those.
    /// Without `read` (the automation's own updates) an on-site report stored meanwhile is kept
    /// while the state stays the same.
    async fn update_case_guarded(
        &self,
        case: &CaseRecord,
        expected_state: CaseState,
        read: Option<&CaseRecord>,
        entries: &[CaseHistoryEntry],
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let devices = serde_json::to_string(&case.devices).map_err(|e| corrupt("cases", e))?;
        let updated = sqlx::query(
            "UPDATE cases SET case_type = $1, team = $2, state = $3, urgent = $4, devices = $5,
                 detail = $6, due_ms = $7, updated_ms = $8, closed_ms = $9,
                 condition_active = $10, clear_since_ms = $11, rework_count = $12,
                 returned_count = $13, supervision_level = $19, on_site_due_ms = $20,
                 on_site_ms = CASE WHEN $16 AND $3 = $15 THEN COALESCE(on_site_ms, $21)
                     ELSE $21 END
             WHERE id = $14 AND state = $15 AND supervision_level <= $19
               AND ($16 OR (condition_active = $17 AND clear_since_ms IS NOT DISTINCT FROM $18
                   AND supervision_level = $22 AND on_site_ms IS NOT DISTINCT FROM $23))",
        )
        .bind(enum_text(&case.case_type))
        .bind(case.team.clone())
        .bind(state_text(case.state))
        .bind(case.urgent)
        .bind(devices)
        .bind(case.detail.as_str())
        .bind(case.due_ms)
        .bind(case.updated_ms)
        .bind(case.closed_ms)
        .bind(case.condition_active)
        .bind(case.clear_since_ms)
        .bind(i64::from(case.rework_count))
        .bind(i64::from(case.returned_count))
        .bind(case.id)
        .bind(state_text(expected_state))
        .bind(read.is_none())
        .bind(read.is_some_and(|r| r.condition_active))
        .bind(read.and_then(|r| r.clear_since_ms))
        .bind(i64::from(case.supervision_level))
        .bind(case.on_site_due_ms)
        .bind(case.on_site_ms)
        .bind(read.map_or(0, |r| i64::from(r.supervision_level)))
        .bind(read.and_then(|r| r.on_site_ms))
        .execute(&mut *tx)
        .await?;
        if DB::rows_affected(&updated) == 0 {
            return Ok(false);
        }
        for e in entries {
            Self::insert_history(&mut tx, case.id, e).await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}

#[async_trait]
impl<DB: Dialect> CaseStore for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB> + ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    for<'r> String: Encode<'r, DB> + Decode<'r, DB> + Type<DB>,
    for<'r> i64: Encode<'r, DB> + Decode<'r, DB> + Type<DB>,
    for<'r> bool: Encode<'r, DB> + Decode<'r, DB> + Type<DB>,
    for<'r> Option<String>: Encode<'r, DB>,
    for<'r> Option<i64>: Encode<'r, DB>,
{
    async fn open_case_counts(&self) -> StoreResult<Vec<(String, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT case_type, COUNT(*) FROM cases WHERE state NOT IN ('closed', 'voided')
             GROUP BY case_type ORDER BY case_type",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(t, n)| (t, count(n))).collect())
    }

    async fn insert_case(
        &self,
        case: &CaseRecord,
        entry: &CaseHistoryEntry,
    ) -> StoreResult<CaseInsert> {
        let mut tx = self.pool.begin().await?;
        let devices = serde_json::to_string(&case.devices).map_err(|e| corrupt("cases", e))?;
        let inserted: Result<i64, sqlx::Error> = sqlx::query_scalar(
            "INSERT INTO cases (case_type, source, subject_key, condition_key, grid, team, state,
                 urgent, devices, detail, opened_ms, due_ms, updated_ms, closed_ms,
                 condition_active, clear_since_ms, rework_count, returned_count,
                 supervision_level, on_site_due_ms, on_site_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                 $18, $19, $20, $21)
             RETURNING id",
        )
        .bind(enum_text(&case.case_type))
        .bind(enum_text(&case.source))
        .bind(case.subject_key.as_str())
        .bind(case.condition_key.clone())
        .bind(case.grid.as_str())
        .bind(case.team.clone())
        .bind(state_text(case.state))
        .bind(case.urgent)
        .bind(devices)
        .bind(case.detail.as_str())
        .bind(case.opened_ms)
        .bind(case.due_ms)
        .bind(case.updated_ms)
        .bind(case.closed_ms)
        .bind(case.condition_active)
        .bind(case.clear_since_ms)
        .bind(i64::from(case.rework_count))
        .bind(i64::from(case.returned_count))
        .bind(i64::from(case.supervision_level))
        .bind(case.on_site_due_ms)
        .bind(case.on_site_ms)
        .fetch_one(&mut *tx)
        .await;
        match inserted {
            Ok(id) => {
                Self::insert_history(&mut tx, id, entry).await?;
                tx.commit().await?;
                Ok(CaseInsert::Created(id))
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                drop(tx);
                let condition = case.condition_key.as_deref().unwrap_or_default();
                let existing = self
                    .open_case(&case.subject_key, condition)
                    .await?
                    .map(|c| c.id)
                    .ok_or_else(|| corrupt("cases", "unique violation without an open case"))?;
                Ok(CaseInsert::AlreadyOpen(existing))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn update_case(
        &self,
        case: &CaseRecord,
        expected_state: CaseState,
        entries: &[CaseHistoryEntry],
    ) -> StoreResult<bool> {
        self.update_case_guarded(case, expected_state, None, entries)
            .await
    }

    async fn update_case_from(
        &self,
        case: &CaseRecord,
        read: &CaseRecord,
        entries: &[CaseHistoryEntry],
    ) -> StoreResult<bool> {
        self.update_case_guarded(case, read.state, Some(read), entries)
            .await
    }

    async fn get_case(&self, id: i64) -> StoreResult<Option<CaseRecord>> {
        sqlx::query("SELECT * FROM cases WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(case_from_row)
            .transpose()
    }

    async fn open_case(
        &self,
        subject_key: &str,
        condition_key: &str,
    ) -> StoreResult<Option<CaseRecord>> {
        sqlx::query(
            "SELECT * FROM cases WHERE subject_key = $1 AND condition_key = $2
             AND state NOT IN ('closed', 'voided')",
        )
        .bind(subject_key)
        .bind(condition_key)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(case_from_row)
        .transpose()
    }

    async fn recently_closed_case(
        &self,
        subject_key: &str,
        condition_key: &str,
        since_ms: UnixMs,
    ) -> StoreResult<Option<CaseRecord>> {
        sqlx::query(
            "SELECT * FROM cases WHERE subject_key = $1 AND condition_key = $2
             AND state = 'closed' AND closed_ms >= $3 ORDER BY closed_ms DESC, id DESC LIMIT 1",
        )
        .bind(subject_key)
        .bind(condition_key)
        .bind(since_ms)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(case_from_row)
        .transpose()
    }

    async fn list_cases(&self, filter: &CaseFilter) -> StoreResult<(u64, Vec<CaseRecord>)> {
        let mut count_q = QueryBuilder::<DB>::new("SELECT COUNT(*) FROM cases");
        push_case_filter(&mut count_q, filter);
        let total: i64 = count_q.build_query_scalar().fetch_one(&self.pool).await?;
        let mut q = QueryBuilder::<DB>::new("SELECT * FROM cases");
        push_case_filter(&mut q, filter);
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(filter.limit))
            .push(" OFFSET ")
            .push_bind(i64::from(filter.offset));
        let rows = q.build().fetch_all(&self.pool).await?;
        let cases = rows.iter().map(case_from_row).collect::<StoreResult<_>>()?;
        Ok((count(total), cases))
    }

    async fn open_cases(&self) -> StoreResult<Vec<CaseRecord>> {
        sqlx::query("SELECT * FROM cases WHERE state NOT IN ('closed', 'voided') ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(case_from_row)
            .collect()
    }

    async fn case_history(&self, id: i64) -> StoreResult<Vec<CaseHistoryEntry>> {
        let rows = sqlx::query(
            "SELECT action, at_ms, actor, from_state, to_state, note FROM case_history
             WHERE case_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(history_from_row).collect()
    }

    async fn case_events_after(&self, after_id: i64, limit: u32) -> StoreResult<Vec<CaseEvent>> {
        let rows = sqlx::query(
            "SELECT h.id AS event_id, h.action, h.at_ms, h.actor, h.from_state, h.to_state, h.note, c.*
             FROM case_history h JOIN cases c ON c.id = h.case_id
             WHERE h.id > $1 ORDER BY h.id LIMIT $2",
        )
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(CaseEvent {
                    event_id: r.try_get("event_id")?,
                    entry: history_from_row(r)?,
                    case: case_from_row(r)?,
                })
            })
            .collect()
    }

    async fn last_case_event_id(&self) -> StoreResult<i64> {
        let (id,): (Option<i64>,) = sqlx::query_as("SELECT MAX(id) FROM case_history")
            .fetch_one(&self.pool)
            .await?;
        Ok(id.unwrap_or(0))
    }
}
