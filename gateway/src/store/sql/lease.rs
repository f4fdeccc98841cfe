//! [`LeaseStore`] in SQL, on the database's clock ([`Dialect::NOW_MS`]).

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Type};

use super::{Dialect, SqlStore};
use crate::store::{LeaseHeld, LeaseState, LeaseStore, StoreResult};

#[async_trait]
impl<DB: Dialect> LeaseStore for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> i64: Encode<'r, DB> + Decode<'r, DB> + Type<DB>,
    for<'r> Option<String>: Decode<'r, DB>,
    for<'r> Option<i64>: Decode<'r, DB>,
{
    async fn acquire_lease(&self, holder: &str, ttl_ms: i64) -> StoreResult<Option<i64>> {
        let now = DB::NOW_MS;
        let sql = format!(
            "INSERT INTO gateway_lease (name, holder, epoch, acquired_ms, expires_ms)
             VALUES ('active', $1, 1, {now}, {now} + $2)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
                 epoch = gateway_lease.epoch + 1, acquired_ms = excluded.acquired_ms,
                 expires_ms = excluded.expires_ms
             WHERE gateway_lease.expires_ms < excluded.acquired_ms
                OR gateway_lease.holder = excluded.holder
             RETURNING epoch"
        );
        let epoch: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(holder)
            .bind(ttl_ms)
            .fetch_optional(&self.pool)
            .await?;
        Ok(epoch)
    }

    async fn renew_lease(&self, holder: &str, epoch: i64, ttl_ms: i64) -> StoreResult<bool> {
        let now = DB::NOW_MS;
        let sql = format!(
            "UPDATE gateway_lease SET expires_ms = {now} + $3
             WHERE name = 'active' AND holder = $1 AND epoch = $2 AND expires_ms >= {now}"
        );
        let result = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(holder)
            .bind(epoch)
            .bind(ttl_ms)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&result) == 1)
    }

    async fn release_lease(&self, holder: &str, epoch: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE gateway_lease SET expires_ms = 0
             WHERE name = 'active' AND holder = $1 AND epoch = $2",
        )
        .bind(holder)
        .bind(epoch)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn lease_state(&self) -> StoreResult<LeaseState> {
        let now = DB::NOW_MS;
        let sql = format!(
            "SELECT {now}, l.holder, l.epoch, l.expires_ms
             FROM (SELECT 1 AS one) AS x
             LEFT JOIN gateway_lease l ON l.name = 'active'"
        );
        let (now_ms, holder, epoch, expires_ms): (i64, Option<String>, Option<i64>, Option<i64>) =
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_one(&self.pool)
                .await?;
        let held = match (holder, epoch, expires_ms) {
            (Some(holder), Some(epoch), Some(expires_ms)) => Some(LeaseHeld {
                holder,
                epoch,
                expires_ms,
            }),
            _ => None,
        };
        Ok(LeaseState { held, now_ms })
    }
}
