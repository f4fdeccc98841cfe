//! SQLite, the embedded default: one file in WAL mode, migrations from `migrations_sqlite/`.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};

use super::{Dialect, SqlStore};
use crate::store::{StoreError, StoreResult};

/// The SQLite store.
pub type SqliteStore = SqlStore<sqlx::Sqlite>;

impl Dialect for sqlx::Sqlite {
    const NAME: &'static str = "sqlite";
    const NOW_MS: &'static str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
}

/// The SQLite migrations, compiled in.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations_sqlite");

impl SqlStore<sqlx::Sqlite> {
    /// Open (creating the file and its directory if missing) and migrate.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let store = Self::open_unmigrated(path).await?;
        MIGRATOR.run(&store.pool).await?;
        Ok(store)
    }

    /// Open (creating the file and its directory if missing) without migrating.
    pub async fn open_unmigrated(path: &Path) -> StoreResult<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|error| StoreError::Io {
                path: dir.display().to_string(),
                error,
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL: a committed transaction survives a process crash (kill -9); only an
            // OS crash or power loss can lose the last few.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // 32 MiB page cache per connection (SQLite's default is 2 MiB): the latest-reading
            // upserts of a large fleet otherwise spill and re-read pages in every batch.
            .pragma("cache_size", "-32768")
            .pragma("temp_store", "memory")
            // Checkpoint every ~40 MiB of WAL instead of SQLite's 4 MiB: the latest-reading
            // pages change in every batch, and a rarer checkpoint copies each page once for
            // many batches.
            .pragma("wal_autocheckpoint", "10000");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(options.clone())
            .await?;
        // The store writer's own connection (see `SqlStore::writer`), kept open.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        Ok(Self { pool, writer })
    }
}

/// Fold the WAL back into the main file so the database is one self-contained file, then close.
pub(super) async fn close(pool: &SqlitePool) {
    if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(pool)
        .await
    {
        tracing::warn!(error = %e, "WAL checkpoint on close failed");
    }
    pool.close().await;
}
