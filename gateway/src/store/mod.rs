//! Persistent storage, one trait per entity, each implemented by both backends:
//!
//! | trait | holds |
//! |---|---|
//! | [`DeviceStore`] | the inventory and the unregistered devices |
//! | [`ReadingStore`] | latest readings, history, sequence state, rejection counters |
//! | [`CaseStore`] | cases, their history, the case events |
//! | [`DeliveryStore`] | alert sinks' cursors and delivery records |
//! | [`CommandStore`] | lamp commands |
//! | [`RuleStateStore`] | the rule engine's snapshot |
//! | [`LeaseStore`] | the active gateway's lease (`[ha]`) |
//! | [`UserStore`] | users, sign-in sessions, API tokens, the audit log |
//! | [`PhotoStore`] | photos attached to cases |
//! | [`EvaluationStore`] | a period's cases and history, lighting per segment and night, reports written |
//!
//! [`Store`] is all of them. [`sql::SqlStore`] implements them once, in SQL both databases
//! accept, for SQLite ([`SqliteStore`], the embedded default: one file in WAL mode) and
//! PostgreSQL ([`PgStore`]); migrations are in `migrations_sqlite/` and `migrations_postgres/`.

pub mod cases;
pub mod commands;
pub mod config;
pub mod deliveries;
pub mod devices;
pub mod evaluation;
pub mod lease;
pub mod photos;
pub mod readings;
pub mod rule_state;
pub mod sql;
pub mod users;

use async_trait::async_trait;

pub use cases::{
    CaseEvent, CaseFilter, CaseHistoryEntry, CaseInsert, CaseRecord, CaseStore, UNRESOLVED_STATES,
};
pub use commands::{CommandRecord, CommandState, CommandStore};
pub use config::{StoreBackend, StoreConfig};
pub use deliveries::{DeliveryRecord, DeliveryStatus, DeliveryStore};
pub use devices::{DeviceStore, UnregisteredDevice};
pub use evaluation::{EvaluationStore, LightingDay, PeriodCases, ReportRecord};
pub use lease::{LeaseHeld, LeaseState, LeaseStore};
pub use photos::{PhotoRecord, PhotoStore};
pub use readings::{
    ReadingRecord, ReadingStore, SeqSummary, StoredReading, UnregisteredSighting, WriteBatch,
    reading_json, reading_type,
};
pub use rule_state::RuleStateStore;
pub use sql::{PgStore, SqlStore, SqliteStore};
pub use users::{AuditEntry, AuditFilter, SessionRecord, TokenRecord, UserRecord, UserStore};

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("database: {0}")]
    Database(sqlx::Error),
    /// A migration failed.
    #[error("database migration: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    /// The database directory could not be created.
    #[error("cannot create {path}: {error}")]
    Io {
        /// The directory.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A stored row could not be read back.
    #[error("corrupt row in {table}: {detail}")]
    Corrupt {
        /// Table.
        table: &'static str,
        /// What was wrong.
        detail: String,
    },
}

// Manual conversions (not `#[from]`): the message already includes the cause, so it must not
// also be reported as a `source` (anyhow's `{:#}` would print it twice).
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Migrate(e)
    }
}

impl StoreError {
    /// Whether trying again later can succeed (the database is away, read-only, locked or out
    /// of space), as opposed to a write the database will always refuse (a constraint, a row
    /// that cannot be read).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Database(sqlx::Error::Database(e)) => !matches!(
                e.kind(),
                sqlx::error::ErrorKind::UniqueViolation
                    | sqlx::error::ErrorKind::ForeignKeyViolation
                    | sqlx::error::ErrorKind::NotNullViolation
                    | sqlx::error::ErrorKind::CheckViolation
            ),
            Self::Database(_) | Self::Io { .. } => true,
            Self::Migrate(_) | Self::Corrupt { .. } => false,
        }
    }
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// The persistent store: every entity's store, and the connection itself.
#[async_trait]
pub trait Store:
    DeviceStore
    + ReadingStore
    + CaseStore
    + DeliveryStore
    + CommandStore
    + RuleStateStore
    + LeaseStore
    + UserStore
    + PhotoStore
    + EvaluationStore
    + std::fmt::Debug
    + 'static
{
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Check the database answers.
    async fn ping(&self) -> StoreResult<()>;
    /// Flush and close.
    async fn close(&self);
}
