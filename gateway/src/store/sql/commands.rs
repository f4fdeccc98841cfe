//! [`CommandStore`] in SQL.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, QueryBuilder, Row, Type};

use super::{Dialect, SqlStore, corrupt, enum_text, text_enum};
use crate::model::UnixMs;
use crate::store::{CommandRecord, CommandState, CommandStore, StoreResult};

#[async_trait]
impl<DB: Dialect> CommandStore for SqlStore<DB>
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
    async fn insert_command(&self, c: &CommandRecord) -> StoreResult<i64> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO lamp_commands (device_id, action, actor, transport, state, detail,
                 requested_ms, finished_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             RETURNING id",
        )
        .bind(c.device_id.as_str())
        .bind(c.action.to_string())
        .bind(c.actor.as_str())
        .bind(c.transport.as_str())
        .bind(enum_text(&c.state))
        .bind(c.detail.as_str())
        .bind(c.requested_ms)
        .bind(c.finished_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    async fn finish_command(
        &self,
        id: i64,
        state: CommandState,
        detail: &str,
        at_ms: UnixMs,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE lamp_commands SET state = $1, detail = $2, finished_ms = $3 WHERE id = $4",
        )
        .bind(enum_text(&state))
        .bind(detail)
        .bind(at_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_commands(
        &self,
        device_id: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<CommandRecord>> {
        let mut q = QueryBuilder::<DB>::new("SELECT * FROM lamp_commands WHERE 1 = 1");
        if let Some(d) = device_id {
            q.push(" AND device_id = ").push_bind(d.to_owned());
        }
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(limit));
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let action: String = r.try_get("action")?;
                let state: String = r.try_get("state")?;
                Ok(CommandRecord {
                    id: r.try_get("id")?,
                    device_id: r.try_get("device_id")?,
                    action: serde_json::from_str(&action)
                        .map_err(|e| corrupt("lamp_commands", e))?,
                    actor: r.try_get("actor")?,
                    transport: r.try_get("transport")?,
                    state: text_enum(&state).map_err(|e| corrupt("lamp_commands", e))?,
                    detail: r.try_get("detail")?,
                    requested_ms: r.try_get("requested_ms")?,
                    finished_ms: r.try_get("finished_ms")?,
                })
            })
            .collect()
    }
}
