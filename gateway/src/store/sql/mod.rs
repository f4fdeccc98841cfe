//! The SQL store: every entity store implemented once over sqlx, for SQLite and PostgreSQL.
//!
//! The SQL is written for both: numbered parameters (`$1`, which SQLite accepts too),
//! `RETURNING id` instead of a last-insert id, `CASE` instead of two-argument `MAX`,
//! `IS NOT DISTINCT FROM`, and `BIGINT` for every integer column on PostgreSQL. What differs
//! between the databases — opening, pragmas, migrations, closing — is in [`sqlite`] and
//! [`postgres`].
//!
//! The implementations are generic over the sqlx [`Database`]; the bounds they need are
//! spelled out once per entity file (Rust does not carry such bounds through a trait).

pub mod admin;
mod cases;
mod commands;
mod deliveries;
mod devices;
mod evaluation;
mod lease;
mod photos;
pub mod postgres;
mod readings;
mod rule_state;
pub mod sqlite;
#[cfg(test)]
mod tests;
mod users;

use async_trait::async_trait;
use sqlx::{Database, Pool};

use super::{Store, StoreError, StoreResult};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// A store on one SQL database.
#[derive(Debug)]
pub struct SqlStore<DB: Database> {
    pool: Pool<DB>,
    /// Where the store writer's batches go. SQLite: a pool of one connection of its own, so
    /// its page cache stays warm from one batch to the next (in WAL mode a connection drops
    /// its whole cache when another connection committed since its last transaction, and
    /// taking turns over the shared pool made every batch read the latest-reading and
    /// sequence pages back). PostgreSQL: the shared pool.
    writer: Pool<DB>,
}

impl<DB: Database> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            writer: self.writer.clone(),
        }
    }
}

impl<DB: Database> SqlStore<DB> {
    /// The connection pool (for tests and tools).
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }
}

/// What the generic implementation needs from a database that sqlx does not say in common.
pub trait Dialect: Database {
    /// `sqlite` or `postgres`.
    const NAME: &'static str;
    /// SQL for the database's clock now, Unix milliseconds, as a BIGINT.
    const NOW_MS: &'static str;
    /// Rows a statement changed.
    fn rows_affected(result: &Self::QueryResult) -> u64;
}

#[async_trait]
impl Store for SqlStore<sqlx::Sqlite> {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.writer.close().await;
        sqlite::close(&self.pool).await;
    }
}

#[async_trait]
impl Store for SqlStore<sqlx::Postgres> {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

fn corrupt(table: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        table,
        detail: detail.to_string(),
    }
}

/// A unit enum's serde name (`CaseState::Dispatched` → `dispatched`).
fn enum_text<T: serde::Serialize>(v: &T) -> Option<String> {
    match serde_json::to_value(v).ok()? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    }
}

fn text_enum<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, serde_json::Error> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn db_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Rows per multi-row INSERT (at most 8 parameters each: well under SQLite's 32766 and
/// PostgreSQL's 65535 parameters).
const ROWS_PER_STATEMENT: usize = 256;

/// `rows` cut into multi-row statements of a few fixed sizes (256, 64, 16, 4, 1 rows), so that
/// each table needs at most five distinct statements and every batch reuses them from the
/// connection's statement cache instead of parsing a statement of a new size.
fn statement_chunks<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if rows.is_empty() {
            return None;
        }
        let mut size = ROWS_PER_STATEMENT;
        while size > rows.len() {
            size /= 4;
        }
        let (chunk, rest) = rows.split_at(size.max(1));
        rows = rest;
        Some(chunk)
    })
}

#[cfg(test)]
mod chunk_tests {
    #[test]
    fn statements_come_in_a_few_fixed_sizes() {
        let rows: Vec<u32> = (0..600).collect();
        let sizes: Vec<usize> = super::statement_chunks(&rows).map(<[u32]>::len).collect();
        assert_eq!(sizes, [256, 256, 64, 16, 4, 4]);
        assert_eq!(super::statement_chunks::<u32>(&[]).count(), 0);
        let sizes: Vec<usize> = super::statement_chunks(&rows[..7])
            .map(<[u32]>::len)
            .collect();
        assert_eq!(sizes, [4, 1, 1, 1]);
    }
}
