//! [`DeliveryStore`] in SQL.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, QueryBuilder, Row, Type};

use super::{Dialect, SqlStore, corrupt, enum_text, text_enum};
use crate::store::{DeliveryRecord, DeliveryStatus, DeliveryStore, StoreResult};

#[async_trait]
impl<DB: Dialect> DeliveryStore for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB> + ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    for<'r> String: Encode<'r, DB> + Decode<'r, DB> + Type<DB>,
    for<'r> i64: Encode<'r, DB> + Decode<'r, DB> + Type<DB>,
    for<'r> Option<String>: Encode<'r, DB>,
    for<'r> Option<i64>: Encode<'r, DB>,
{
    async fn alert_cursor(&self, sink: &str) -> StoreResult<i64> {
        sqlx::query(
            "INSERT INTO alert_cursors (sink, last_event_id)
             SELECT $1, COALESCE(MAX(id), 0) FROM case_history WHERE true
             ON CONFLICT (sink) DO NOTHING",
        )
        .bind(sink)
        .execute(&self.pool)
        .await?;
        let cursor: i64 =
            sqlx::query_scalar("SELECT last_event_id FROM alert_cursors WHERE sink = $1")
                .bind(sink)
                .fetch_one(&self.pool)
                .await?;
        Ok(cursor)
    }

    async fn record_delivery_at(&self, d: &DeliveryRecord, cursor: i64) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO alert_deliveries (sink, event_id, case_id, status, attempts,
                 response_status, last_error, first_attempt_ms, finished_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(d.sink.as_str())
        .bind(d.event_id)
        .bind(d.case_id)
        .bind(enum_text(&d.status))
        .bind(i64::from(d.attempts))
        .bind(d.response_status.map(i64::from))
        .bind(d.last_error.clone())
        .bind(d.first_attempt_ms)
        .bind(d.finished_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO alert_cursors (sink, last_event_id) VALUES ($1, $2)
             ON CONFLICT (sink) DO UPDATE SET last_event_id = CASE
                 WHEN excluded.last_event_id > alert_cursors.last_event_id
                 THEN excluded.last_event_id ELSE alert_cursors.last_event_id END",
        )
        .bind(d.sink.as_str())
        .bind(cursor)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_alert_cursor(&self, sink: &str, cursor: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO alert_cursors (sink, last_event_id) VALUES ($1, $2)
             ON CONFLICT (sink) DO UPDATE SET last_event_id = CASE
                 WHEN excluded.last_event_id > alert_cursors.last_event_id
                 THEN excluded.last_event_id ELSE alert_cursors.last_event_id END",
        )
        .bind(sink)
        .bind(cursor)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn recorded_events_after(&self, sink: &str, after: i64) -> StoreResult<Vec<i64>> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT event_id FROM alert_deliveries WHERE sink = $1 AND event_id > $2
             ORDER BY event_id",
        )
        .bind(sink)
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    async fn delivery_recorded(&self, sink: &str, event_id: i64) -> StoreResult<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM alert_deliveries WHERE sink = $1 AND event_id = $2",
        )
        .bind(sink)
        .bind(event_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    async fn list_deliveries(
        &self,
        sink: Option<&str>,
        status: Option<DeliveryStatus>,
        limit: u32,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        let mut q = QueryBuilder::<DB>::new("SELECT * FROM alert_deliveries WHERE 1 = 1");
        if let Some(s) = sink {
            q.push(" AND sink = ").push_bind(s.to_owned());
        }
        if let Some(s) = status {
            q.push(" AND status = ").push_bind(enum_text(&s));
        }
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(limit));
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let status: String = r.try_get("status")?;
                let attempts: i64 = r.try_get("attempts")?;
                let code: Option<i64> = r.try_get("response_status")?;
                Ok(DeliveryRecord {
                    id: r.try_get("id")?,
                    sink: r.try_get("sink")?,
                    event_id: r.try_get("event_id")?,
                    case_id: r.try_get("case_id")?,
                    status: text_enum(&status).map_err(|e| corrupt("alert_deliveries", e))?,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    response_status: code.and_then(|c| u16::try_from(c).ok()),
                    last_error: r.try_get("last_error")?,
                    first_attempt_ms: r.try_get("first_attempt_ms")?,
                    finished_ms: r.try_get("finished_ms")?,
                })
            })
            .collect()
    }
}
