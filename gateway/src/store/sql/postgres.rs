//! PostgreSQL (`store.backend = "postgres"`, `store.url`): migrations from
//! `migrations_postgres/`.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgQueryResult};

use super::{Dialect, SqlStore};
use crate::store::StoreResult;

/// The PostgreSQL store.
pub type PgStore = SqlStore<sqlx::Postgres>;

impl Dialect for sqlx::Postgres {
    const NAME: &'static str = "postgres";
    const NOW_MS: &'static str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }
}

/// The PostgreSQL migrations, compiled in.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations_postgres");

impl SqlStore<sqlx::Postgres> {
    /// Connect (`postgres://user:password@host:port/database`) and migrate.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        let store = Self::connect_unmigrated(url, max_connections).await?;
        MIGRATOR.run(&store.pool).await?;
        Ok(store)
    }

    /// Connect without migrating.
    pub async fn connect_unmigrated(url: &str, max_connections: u32) -> StoreResult<Self> {
        let options: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.application_name("streetgate"))
            .await?;
        Ok(Self {
            writer: pool.clone(),
            pool,
        })
    }
}

/// Scratch databases for tests and tools: a fresh, empty database on a server, dropped when
/// done.
pub mod scratch {
    use sqlx::postgres::PgConnectOptions;
    use sqlx::{ConnectOptions, Connection};

    use crate::store::StoreResult;

    /// The test server's URL from `STREETGATE_TEST_PG_URL`, if set.
    pub fn server_url() -> Option<String> {
        std::env::var("STREETGATE_TEST_PG_URL")
            .ok()
            .filter(|u| !u.is_empty())
    }

    /// A database created on a server for one test.
    #[derive(Debug)]
    pub struct ScratchDatabase {
        server: PgConnectOptions,
        name: String,
        /// URL of the new database.
        pub url: String,
    }

    impl ScratchDatabase {
        /// Create an empty database with a unique name on the server at `server_url`.
        pub async fn create(server_url: &str) -> StoreResult<Self> {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let server: PgConnectOptions = server_url.parse()?;
            let name = format!(
                "streetgate_test_{}_{}_{}",
                std::process::id(),
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                rand::random::<u32>()
            );
            let mut conn = server.connect().await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await?;
            conn.close().await?;
            let url = server.clone().database(&name).to_url_lossy().to_string();
            Ok(Self { server, name, url })
        }

        /// Drop the database (closing any connection still open on it).
        pub async fn drop_database(self) -> StoreResult<()> {
            let mut conn = self.server.connect().await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&mut conn)
            .await?;
            conn.close().await?;
            Ok(())
        }
    }
}
