//! Store administration: which migrations a database has (`streetgate migrate`), applying them,
//! and moving a deployment from SQLite to PostgreSQL (`streetgate store copy`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::TryStreamExt;
use serde::Serialize;
use sqlx::migrate::{Migrate, Migrator};
use sqlx::{Connection, QueryBuilder, Row};

use super::{PgStore, SqliteStore, corrupt, postgres, sqlite};
use crate::store::{Store, StoreResult};
use crate::store::{StoreBackend, StoreConfig};

/// A store opened without applying its migrations.
#[derive(Debug, Clone)]
pub enum OpenedStore {
    /// SQLite.
    Sqlite(SqliteStore),
    /// PostgreSQL.
    Postgres(PgStore),
}

/// One migration and whether the database has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationStatus {
    /// Version (the file's number).
    pub version: i64,
    /// What it does (from its file name).
    pub description: String,
    /// Applied to this database.
    pub applied: bool,
}

const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

async fn status_of<C: Migrate + ?Sized>(
    conn: &mut C,
    migrator: &Migrator,
) -> StoreResult<Vec<MigrationStatus>> {
    conn.ensure_migrations_table(MIGRATIONS_TABLE).await?;
    let applied: BTreeSet<i64> = conn
        .list_applied_migrations(MIGRATIONS_TABLE)
        .await?
        .into_iter()
        .map(|m| m.version)
        .collect();
    Ok(migrator
        .iter()
        .map(|m| MigrationStatus {
            version: m.version,
            description: m.description.to_string(),
            applied: applied.contains(&m.version),
        })
        .collect())
}

impl OpenedStore {
    /// Open the configured store without migrating it.
    pub async fn open(config: &StoreConfig) -> StoreResult<Self> {
        Ok(match config.backend {
            StoreBackend::Sqlite => Self::Sqlite(SqliteStore::open_unmigrated(&config.path).await?),
            StoreBackend::Postgres => Self::Postgres(
                PgStore::connect_unmigrated(
                    config.url.as_deref().unwrap_or_default(),
                    config.max_connections,
                )
                .await?,
            ),
        })
    }

    /// Every migration the gateway knows, and whether this database has it.
    pub async fn migrations(&self) -> StoreResult<Vec<MigrationStatus>> {
        match self {
            Self::Sqlite(s) => {
                let mut conn = s.pool().acquire().await?;
                status_of(&mut *conn, &sqlite::MIGRATOR).await
            }
            Self::Postgres(s) => {
                let mut conn = s.pool().acquire().await?;
                status_of(&mut *conn, &postgres::MIGRATOR).await
            }
        }
    }

    /// Apply the migrations the database does not have yet.
    pub async fn migrate(&self) -> StoreResult<()> {
        match self {
            Self::Sqlite(s) => sqlite::MIGRATOR.run(s.pool()).await?,
            Self::Postgres(s) => postgres::MIGRATOR.run(s.pool()).await?,
        }
        Ok(())
    }

    /// The store behind the traits.
    pub fn into_store(self) -> Arc<dyn Store> {
        match self {
            Self::Sqlite(s) => Arc::new(s),
            Self::Postgres(s) => Arc::new(s),
        }
    }
}

/// Rows copied, by table.
pub type CopyReport = BTreeMap<String, u64>;

/// The type of a PostgreSQL column, as far as the copy needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColumnType {
    Int,
    Float,
    Bool,
    Text,
    Bytes,
}

/// One value read from SQLite.
#[derive(Debug, Clone)]
enum Value {
    Int(Option<i64>),
    Float(Option<f64>),
    Bool(Option<bool>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

/// Rows per INSERT during the copy (PostgreSQL allows 65,535 parameters a statement).
const COPY_ROWS_PER_STATEMENT: usize = 500;

/// Copy every table of a migrated SQLite store into a migrated, empty PostgreSQL store, in one
/// PostgreSQL transaction (all or nothing), keeping ids; the id sequences then continue after
/// the copied ids. Tables are taken from PostgreSQL's schema, parents before the tables that
/// refer to them.
pub async fn copy_sqlite_to_postgres(from: &SqliteStore, to: &PgStore) -> StoreResult<CopyReport> {
    let mut pg = to.pool().acquire().await?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::TEXT FROM information_schema.tables
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'
           AND table_name NOT LIKE '\\_sqlx%' ORDER BY table_name",
    )
    .fetch_all(&mut *pg)
    .await?;
    let references: Vec<(String, String)> = sqlx::query_as(
        "SELECT conrelid::regclass::TEXT, confrelid::regclass::TEXT FROM pg_constraint
         WHERE contype = 'f' AND connamespace = current_schema()::regnamespace",
    )
    .fetch_all(&mut *pg)
    .await?;
    let tables = parents_first(tables, &references);

    let mut tx = pg.begin().await?;
    let mut report = CopyReport::new();
    for table in &tables {
        let existing: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(&mut *tx)
                .await?;
        if existing > 0 {
            return Err(corrupt(
                "copy",
                format!(
                    "the PostgreSQL table {table} is not empty ({existing} rows): copy only into a new database"
                ),
            ));
        }
        let columns: Vec<(String, String)> = sqlx::query_as(
            "SELECT column_name::TEXT, data_type::TEXT FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(&mut *tx)
        .await?;
        let columns: Vec<(String, ColumnType)> = columns
            .into_iter()
            .map(|(name, ty)| {
                let ty = match ty.as_str() {
                    "bigint" | "integer" | "smallint" => ColumnType::Int,
                    "double precision" | "real" => ColumnType::Float,
                    "boolean" => ColumnType::Bool,
                    "text" | "character varying" => ColumnType::Text,
                    "bytea" => ColumnType::Bytes,
                    other => {
                        return Err(corrupt(
                            "copy",
                            format!("{table}.{name}: column type {other} is not copied"),
                        ));
                    }
                };
                Ok((name, ty))
            })
            .collect::<StoreResult<_>>()?;
        let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
        let list = names.join(", ");
        let select = format!("SELECT {list} FROM {table}");
        let mut rows = sqlx::query(sqlx::AssertSqlSafe(select)).fetch(from.pool());
        let mut pending: Vec<Vec<Value>> = Vec::with_capacity(COPY_ROWS_PER_STATEMENT);
        let mut copied = 0u64;
        while let Some(row) = rows.try_next().await? {
            let mut values = Vec::with_capacity(columns.len());
            for (i, (_, ty)) in columns.iter().enumerate() {
                values.push(match ty {
                    ColumnType::Int => Value::Int(row.try_get(i)?),
                    ColumnType::Float => Value::Float(row.try_get(i)?),
                    ColumnType::Bool => Value::Bool(row.try_get(i)?),
                    ColumnType::Text => Value::Text(row.try_get(i)?),
                    ColumnType::Bytes => Value::Bytes(row.try_get(i)?),
                });
            }
            pending.push(values);
            if pending.len() == COPY_ROWS_PER_STATEMENT {
                insert_rows(&mut tx, table, &list, &pending).await?;
                copied += pending.len() as u64;
                pending.clear();
            }
        }
        if !pending.is_empty() {
            insert_rows(&mut tx, table, &list, &pending).await?;
            copied += pending.len() as u64;
        }
        // Let BIGSERIAL ids continue after the copied ones.
        if columns
            .iter()
            .any(|(name, ty)| name == "id" && *ty == ColumnType::Int)
        {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), MAX(id))
                 FROM {table} WHERE pg_get_serial_sequence('{table}', 'id') IS NOT NULL
                 HAVING MAX(id) IS NOT NULL"
            )))
            .execute(&mut *tx)
            .await?;
        }
        report.insert(table.clone(), copied);
    }
    tx.commit().await?;
    Ok(report)
}

async fn insert_rows(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    table: &str,
    columns: &str,
    rows: &[Vec<Value>],
) -> StoreResult<()> {
    let mut q = QueryBuilder::<sqlx::Postgres>::new(format!("INSERT INTO {table} ({columns}) "));
    q.push_values(rows, |mut b, row| {
        for v in row {
            match v {
                Value::Int(v) => b.push_bind(*v),
                Value::Float(v) => b.push_bind(*v),
                Value::Bool(v) => b.push_bind(*v),
                Value::Text(v) => b.push_bind(v.clone()),
                Value::Bytes(v) => b.push_bind(v.clone()),
            };
        }
    });
    q.build().execute(&mut **tx).await?;
    Ok(())
}

/// `tables` ordered so that a table comes after every table it refers to.
fn parents_first(tables: Vec<String>, references: &[(String, String)]) -> Vec<String> {
    let mut ordered: Vec<String> = Vec::with_capacity(tables.len());
    let mut left = tables;
    while !left.is_empty() {
        let before = left.len();
        let (ready, waiting): (Vec<String>, Vec<String>) = left.into_iter().partition(|t| {
            references
                .iter()
                .all(|(child, parent)| child != t || parent == t || ordered.contains(parent))
        });
        ordered.extend(ready);
        left = waiting;
        if left.len() == before {
            // A reference cycle (none in the schema): copy the rest in name order.
            ordered.append(&mut left);
        }
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::parents_first;

    #[test]
    fn parents_come_first() {
        let tables = ["case_history", "cases", "devices", "sessions", "users"]
            .map(String::from)
            .to_vec();
        let refs = [("case_history", "cases"), ("sessions", "users")]
            .map(|(a, b)| (a.to_owned(), b.to_owned()));
        let order = parents_first(tables, &refs);
        let pos = |t: &str| order.iter().position(|x| x == t).unwrap();
        assert!(pos("cases") < pos("case_history"));
        assert!(pos("users") < pos("sessions"));
        assert_eq!(order.len(), 5);
    }
}
