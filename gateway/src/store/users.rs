//! People's access in the store: users, sign-in sessions, API tokens and the audit log
//! (migration `0004_users.sql`). No secret is stored: passwords are Argon2id PHC strings,
//! session and API tokens the hex SHA-256 of the token handed out once (see [`crate::auth`]).

use async_trait::async_trait;
use serde::Serialize;

use super::StoreResult;
use crate::auth::Role;
use crate::model::UnixMs;

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserRecord {
    /// Row id (0 before insertion).
    pub id: i64,
    /// Sign-in name, unique.
    pub name: String,
    /// What the user may do.
    pub role: Role,
    /// A team member's team: the cases they see and act on.
    pub team: Option<String>,
    /// A viewer's grid: the devices and cases they see.
    pub grid: Option<String>,
    /// Argon2id PHC string; never served.
    #[serde(skip)]
    pub password_hash: String,
    /// Disabled users cannot sign in, and their sessions and tokens stop working.
    pub disabled: bool,
    /// Created at.
    pub created_ms: UnixMs,
    /// Password last set at.
    pub password_changed_ms: UnixMs,
}

/// A sign-in session as stored (the cookie's token only as its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Hex SHA-256 of the session token.
    pub token_hash: String,
    /// Whose.
    pub user_id: i64,
    /// Signed in at.
    pub created_ms: UnixMs,
    /// Last request at (updated at most once a minute).
    pub last_seen_ms: UnixMs,
    /// Where the sign-in came from.
    pub peer: Option<String>,
}

/// An API token as stored (the token only as its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    /// Row id (0 before insertion).
    pub id: i64,
    /// Hex SHA-256 of the token; never served.
    #[serde(skip)]
    pub token_hash: String,
    /// What it is for (`scada-export`).
    pub name: String,
    /// The user it acts as (actions are recorded under the user's name).
    pub user_id: i64,
    /// The owner's name (filled in when read back).
    pub user: String,
    /// What the token may do.
    pub role: Role,
    /// Team scope.
    pub team: Option<String>,
    /// Grid scope.
    pub grid: Option<String>,
    /// Who created it.
    pub created_by: String,
    /// Created at.
    pub created_ms: UnixMs,
    /// Stops working at.
    pub expires_ms: Option<UnixMs>,
    /// Last used at (updated at most once a minute).
    pub last_used_ms: Option<UnixMs>,
    /// Revoked at.
    pub revoked_ms: Option<UnixMs>,
}

/// One audited call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Row id (0 before insertion).
    pub id: i64,
    /// When (wall clock).
    pub at_ms: UnixMs,
    /// Who: the signed-in user's name (the user a token acts as), or none.
    pub actor: Option<String>,
    /// How they were signed in: `session`, `token`, or none.
    pub auth: Option<String>,
    /// HTTP method.
    pub method: String,
    /// The route template (`/api/cases/{id}/transitions`), or the path when no route matched.
    pub route: String,
    /// The id in the path (case number, device id, segment, user name, token id).
    pub target: Option<String>,
    /// The client's address (`ip:port`).
    pub peer: Option<String>,
    /// The answer's HTTP status.
    pub status: u16,
}

/// Filters of the audit log; all optional, combined with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Exact actor.
    pub actor: Option<String>,
    /// Exact method.
    pub method: Option<String>,
    /// Exact route template.
    pub route: Option<String>,
    /// Exact target.
    pub target: Option<String>,
    /// Only answers with a status of at least this.
    pub min_status: Option<u16>,
    /// At or after.
    pub from_ms: Option<UnixMs>,
    /// Before.
    pub to_ms: Option<UnixMs>,
    /// Page size.
    pub limit: u32,
    /// Rows skipped.
    pub offset: u32,
}

/// Users, sessions, API tokens and the audit log.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Number of users (disabled ones included).
    async fn count_users(&self) -> StoreResult<u64>;
    /// Add a user; `None` when the name is taken.
    async fn insert_user(&self, user: &UserRecord) -> StoreResult<Option<i64>>;
    /// One user by name.
    async fn user_by_name(&self, name: &str) -> StoreResult<Option<UserRecord>>;
    /// One user by id.
    async fn user_by_id(&self, id: i64) -> StoreResult<Option<UserRecord>>;
    /// Every user, by name.
    async fn list_users(&self) -> StoreResult<Vec<UserRecord>>;
    /// Replace a user's password hash; `false` if there is no such user.
    async fn set_password(
        &self,
        user_id: i64,
        password_hash: &str,
        at_ms: UnixMs,
    ) -> StoreResult<bool>;
    /// Enable or disable a user. Disabling also ends their sessions and revokes their tokens,
    /// in one transaction. `false` if there is no such user.
    async fn set_user_disabled(
        &self,
        user_id: i64,
        disabled: bool,
        at_ms: UnixMs,
    ) -> StoreResult<bool>;

    /// Record a new session.
    async fn insert_session(&self, session: &SessionRecord) -> StoreResult<()>;
    /// A session by its token hash.
    async fn session_by_hash(&self, token_hash: &str) -> StoreResult<Option<SessionRecord>>;
    /// Note that a session was used.
    async fn touch_session(&self, token_hash: &str, at_ms: UnixMs) -> StoreResult<()>;
    /// End a session; `false` if there was none.
    async fn delete_session(&self, token_hash: &str) -> StoreResult<bool>;
    /// End every session of a user but `keep` (the one changing the password); returns how many.
    async fn delete_user_sessions(&self, user_id: i64, keep: Option<&str>) -> StoreResult<u64>;
    /// Forget sessions idle since before `idle_before_ms` or signed in before
    /// `created_before_ms`; returns how many.
    async fn delete_expired_sessions(
        &self,
        idle_before_ms: UnixMs,
        created_before_ms: UnixMs,
    ) -> StoreResult<u64>;

    /// Record a new API token; returns its id.
    async fn insert_token(&self, token: &TokenRecord) -> StoreResult<i64>;
    /// A token by its hash (revoked and expired ones included), with its owner's name.
    async fn token_by_hash(&self, token_hash: &str) -> StoreResult<Option<TokenRecord>>;
    /// Every token, newest first, with its owner's name.
    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>>;
    /// Note that a token was used.
    async fn touch_token(&self, id: i64, at_ms: UnixMs) -> StoreResult<()>;
    /// Revoke a token; `false` if there is no such token or it was revoked already.
    async fn revoke_token(&self, id: i64, at_ms: UnixMs) -> StoreResult<bool>;

    /// Append to the audit log.
    async fn insert_audit(&self, entry: &AuditEntry) -> StoreResult<()>;
    /// Remove audit entries recorded before `before_ms`; returns how many.
    async fn trim_audit(&self, before_ms: UnixMs) -> StoreResult<u64>;
    /// Audit entries matching a filter, newest first, with the total count.
    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<(u64, Vec<AuditEntry>)>;
}
