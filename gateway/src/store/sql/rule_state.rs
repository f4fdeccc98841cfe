//! [`RuleStateStore`] in SQL: one row, replaced.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Type};

use super::{Dialect, SqlStore};
use crate::model::UnixMs;
use crate::store::{RuleStateStore, StoreResult};

#[async_trait]
impl<DB: Dialect> RuleStateStore for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> i64: Encode<'r, DB> + Decode<'r, DB> + Type<DB>,
{
    async fn save_rule_state(&self, state: &str, saved_ms: UnixMs) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO rule_state (id, saved_ms, state) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET saved_ms = excluded.saved_ms, state = excluded.state",
        )
        .bind(saved_ms)
        .bind(state)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn load_rule_state(&self) -> StoreResult<Option<(String, UnixMs)>> {
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT state, saved_ms FROM rule_state WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?;
        Ok(row)
    }
}
