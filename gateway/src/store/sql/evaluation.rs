//! [`EvaluationStore`] in SQL. A period's cases are found through the indexes of migration
//! 0009: `cases (opened_ms)`, `cases (closed_ms)` and `case_history (at_ms, case_id)`.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, QueryBuilder, Row, Type};

use super::cases::{case_from_row, history_from_row};
use super::{Dialect, SqlStore, statement_chunks};
use crate::model::UnixMs;
use crate::store::{EvaluationStore, LightingDay, PeriodCases, ReportRecord, StoreResult};

/// The ids of the cases a period `[$1, $2)` touches.
const TOUCHED: &str = "SELECT id FROM cases WHERE opened_ms < $2
         AND (closed_ms IS NULL OR closed_ms >= $1)
     UNION SELECT case_id FROM case_history WHERE at_ms >= $1 AND at_ms < $2";

#[async_trait]
impl<DB: Dialect> EvaluationStore for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB> + ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    for<'r> String: Encode<'r, DB> + Decode<'r, DB> + Type<DB>,
    for<'r> i64: Encode<'r, DB> + Decode<'r, DB> + Type<DB>,
    for<'r> bool: Encode<'r, DB> + Decode<'r, DB> + Type<DB>,
    for<'r> Option<String>: Encode<'r, DB> + Decode<'r, DB>,
    for<'r> Option<i64>: Encode<'r, DB>,
{
    async fn period_cases(&self, from_ms: UnixMs, to_ms: UnixMs) -> StoreResult<PeriodCases> {
        let mut tx = self.pool.begin().await?;
        let cases = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM cases WHERE id IN ({TOUCHED}) ORDER BY id"
        )))
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(case_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT case_id, action, at_ms, actor, from_state, to_state,
                 CASE WHEN action IN ('dispatch', 'supervise') THEN note ELSE '' END AS note
             FROM case_history
             WHERE case_id IN ({TOUCHED}) AND at_ms < $2 ORDER BY case_id, id"
        )))
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let history = rows
            .iter()
            .map(|r| Ok((r.try_get("case_id")?, history_from_row(r)?)))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(PeriodCases { cases, history })
    }

    async fn save_lighting_days(&self, days: &[LightingDay]) -> StoreResult<()> {
        if days.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for chunk in statement_chunks(days) {
            let mut q = QueryBuilder::<DB>::new(
                "INSERT INTO lighting_days (segment, day, grid, road_class, lit_s, expected_s) ",
            );
            q.push_values(chunk, |mut b, d| {
                b.push_bind(d.segment.clone())
                    .push_bind(d.day)
                    .push_bind(d.grid.clone())
                    .push_bind(d.road_class.clone())
                    .push_bind(d.lit_s)
                    .push_bind(d.expected_s);
            });
            q.push(
                " ON CONFLICT (segment, day) DO UPDATE SET grid = excluded.grid,
                 road_class = excluded.road_class, lit_s = excluded.lit_s,
                 expected_s = excluded.expected_s",
            );
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn lighting_days(&self, from_day: i64, to_day: i64) -> StoreResult<Vec<LightingDay>> {
        let rows = sqlx::query(
            "SELECT segment, day, grid, road_class, lit_s, expected_s FROM lighting_days
             WHERE day >= $1 AND day < $2 ORDER BY segment, day",
        )
        .bind(from_day)
        .bind(to_day)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LightingDay {
                    segment: r.try_get("segment")?,
                    day: r.try_get("day")?,
                    grid: r.try_get("grid")?,
                    road_class: r.try_get("road_class")?,
                    lit_s: r.try_get("lit_s")?,
                    expected_s: r.try_get("expected_s")?,
                })
            })
            .collect()
    }

    async fn record_report(&self, report: &ReportRecord) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO evaluation_reports (month, written_ms, files) VALUES ($1, $2, $3)
             ON CONFLICT (month) DO NOTHING",
        )
        .bind(report.month.as_str())
        .bind(report.written_ms)
        .bind(report.files.as_str())
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    async fn reports(&self) -> StoreResult<Vec<ReportRecord>> {
        let rows: Vec<(String, i64, String)> = sqlx::query_as(
            "SELECT month, written_ms, files FROM evaluation_reports ORDER BY month",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(month, written_ms, files)| ReportRecord {
                month,
                written_ms,
                files,
            })
            .collect())
    }
}
