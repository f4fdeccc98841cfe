//! [`UserStore`] in SQL: users, sessions, API tokens, audit log (`0004_users.sql`).

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, QueryBuilder, Row, Type};

use super::{Dialect, SqlStore, corrupt, count};
use crate::auth::Role;
use crate::model::UnixMs;
use crate::store::{
    AuditEntry, AuditFilter, SessionRecord, StoreResult, TokenRecord, UserRecord, UserStore,
};

fn role_of(table: &'static str, id: i64, text: &str) -> StoreResult<Role> {
    text.parse()
        .map_err(|e: String| corrupt(table, format!("{id}.role: {e}")))
}

macro_rules! user_select {
    () => {
        "SELECT id, name, role, team, grid, password_hash, disabled, created_ms, \
         password_changed_ms FROM users"
    };
}

fn user_from_row<R: Row>(row: &R) -> StoreResult<UserRecord>
where
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    let id: i64 = row.try_get("id")?;
    let role: String = row.try_get("role")?;
    Ok(UserRecord {
        id,
        name: row.try_get("name")?,
        role: role_of("users", id, &role)?,
        team: row.try_get("team")?,
        grid: row.try_get("grid")?,
        password_hash: row.try_get("password_hash")?,
        disabled: row.try_get("disabled")?,
        created_ms: row.try_get("created_ms")?,
        password_changed_ms: row.try_get("password_changed_ms")?,
    })
}

macro_rules! token_select {
    () => {
        "SELECT t.id, t.token_hash, t.name, t.user_id, u.name AS user_name, \
     t.role, t.team, t.grid, t.created_by, t.created_ms, t.expires_ms, t.last_used_ms, \
     t.revoked_ms FROM api_tokens t JOIN users u ON u.id = t.user_id"
    };
}

fn token_from_row<R: Row>(row: &R) -> StoreResult<TokenRecord>
where
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    let id: i64 = row.try_get("id")?;
    let role: String = row.try_get("role")?;
    Ok(TokenRecord {
        id,
        token_hash: row.try_get("token_hash")?,
        name: row.try_get("name")?,
        user_id: row.try_get("user_id")?,
        user: row.try_get("user_name")?,
        role: role_of("api_tokens", id, &role)?,
        team: row.try_get("team")?,
        grid: row.try_get("grid")?,
        created_by: row.try_get("created_by")?,
        created_ms: row.try_get("created_ms")?,
        expires_ms: row.try_get("expires_ms")?,
        last_used_ms: row.try_get("last_used_ms")?,
        revoked_ms: row.try_get("revoked_ms")?,
    })
}

fn session_from_row<R: Row>(row: &R) -> StoreResult<SessionRecord>
where
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(SessionRecord {
        token_hash: row.try_get("token_hash")?,
        user_id: row.try_get("user_id")?,
        created_ms: row.try_get("created_ms")?,
        last_seen_ms: row.try_get("last_seen_ms")?,
        peer: row.try_get("peer")?,
    })
}

fn audit_from_row<R: Row>(row: &R) -> StoreResult<AuditEntry>
where
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    let id: i64 = row.try_get("id")?;
    let status: i64 = row.try_get("status")?;
    Ok(AuditEntry {
        id,
        at_ms: row.try_get("at_ms")?,
        actor: row.try_get("actor")?,
        auth: row.try_get("auth")?,
        method: row.try_get("method")?,
        route: row.try_get("route")?,
        target: row.try_get("target")?,
        peer: row.try_get("peer")?,
        status: u16::try_from(status)
            .map_err(|e| corrupt("audit_log", format!("{id}.status: {e}")))?,
    })
}

fn push_audit_filter<DB: sqlx::Database>(q: &mut QueryBuilder<DB>, f: &AuditFilter)
where
    for<'r> String: Encode<'r, DB> + Type<DB>,
    for<'r> i64: Encode<'r, DB> + Type<DB>,
{
    q.push(" WHERE 1 = 1");
    for (column, value) in [
        ("actor", &f.actor),
        ("method", &f.method),
        ("route", &f.route),
        ("target", &f.target),
    ] {
        if let Some(v) = value {
            q.push(format!(" AND {column} = ")).push_bind(v.clone());
        }
    }
    if let Some(s) = f.min_status {
        q.push(" AND status >= ").push_bind(i64::from(s));
    }
    if let Some(t) = f.from_ms {
        q.push(" AND at_ms >= ").push_bind(t);
    }
    if let Some(t) = f.to_ms {
        q.push(" AND at_ms < ").push_bind(t);
    }
}

#[async_trait]
impl<DB: Dialect> UserStore for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB> + ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    for<'r> String: Encode<'r, DB> + Decode<'r, DB> + Type<DB>,
    for<'r> i64: Encode<'r, DB> + Decode<'r, DB> + Type<DB>,
    for<'r> bool: Encode<'r, DB> + Decode<'r, DB> + Type<DB>,
    for<'r> Option<String>: Encode<'r, DB>,
    for<'r> Option<i64>: Encode<'r, DB>,
{
    async fn count_users(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(self.pool())
            .await?;
        Ok(count(n))
    }

    async fn insert_user(&self, u: &UserRecord) -> StoreResult<Option<i64>> {
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO users (name, role, team, grid, password_hash, disabled, created_ms, \
             password_changed_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (name) DO NOTHING RETURNING id",
        )
        .bind(&u.name)
        .bind(u.role.as_str())
        .bind(&u.team)
        .bind(&u.grid)
        .bind(&u.password_hash)
        .bind(u.disabled)
        .bind(u.created_ms)
        .bind(u.password_changed_ms)
        .fetch_optional(self.pool())
        .await?;
        Ok(id)
    }

    async fn user_by_name(&self, name: &str) -> StoreResult<Option<UserRecord>> {
        sqlx::query(concat!(user_select!(), " WHERE name = $1"))
            .bind(name)
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn user_by_id(&self, id: i64) -> StoreResult<Option<UserRecord>> {
        sqlx::query(concat!(user_select!(), " WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
        sqlx::query(concat!(user_select!(), " ORDER BY name"))
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(user_from_row)
            .collect()
    }

    async fn set_password(
        &self,
        user_id: i64,
        password_hash: &str,
        at_ms: UnixMs,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE users SET password_hash = $1, password_changed_ms = $2 WHERE id = $3",
        )
        .bind(password_hash)
        .bind(at_ms)
        .bind(user_id)
        .execute(self.pool())
        .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn set_user_disabled(
        &self,
        user_id: i64,
        disabled: bool,
        at_ms: UnixMs,
    ) -> StoreResult<bool> {
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query("UPDATE users SET disabled = $1 WHERE id = $2")
            .bind(disabled)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if disabled {
            sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE api_tokens SET revoked_ms = $1 WHERE user_id = $2 AND revoked_ms IS NULL",
            )
            .bind(at_ms)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn insert_session(&self, s: &SessionRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, created_ms, last_seen_ms, peer) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&s.token_hash)
        .bind(s.user_id)
        .bind(s.created_ms)
        .bind(s.last_seen_ms)
        .bind(&s.peer)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn session_by_hash(&self, token_hash: &str) -> StoreResult<Option<SessionRecord>> {
        sqlx::query(
            "SELECT token_hash, user_id, created_ms, last_seen_ms, peer FROM sessions \
             WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?
        .as_ref()
        .map(session_from_row)
        .transpose()
    }

    async fn touch_session(&self, token_hash: &str, at_ms: UnixMs) -> StoreResult<()> {
        sqlx::query("UPDATE sessions SET last_seen_ms = $1 WHERE token_hash = $2")
            .bind(at_ms)
            .bind(token_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn delete_session(&self, token_hash: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(self.pool())
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn delete_user_sessions(&self, user_id: i64, keep: Option<&str>) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND token_hash <> $2")
            .bind(user_id)
            .bind(keep.unwrap_or(""))
            .execute(self.pool())
            .await?;
        Ok(DB::rows_affected(&done))
    }

    async fn delete_expired_sessions(
        &self,
        idle_before_ms: UnixMs,
        created_before_ms: UnixMs,
    ) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM sessions WHERE last_seen_ms < $1 OR created_ms < $2")
            .bind(idle_before_ms)
            .bind(created_before_ms)
            .execute(self.pool())
            .await?;
        Ok(DB::rows_affected(&done))
    }

    async fn insert_token(&self, t: &TokenRecord) -> StoreResult<i64> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO api_tokens (token_hash, name, user_id, role, team, grid, created_by, \
             created_ms, expires_ms, last_used_ms, revoked_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL) RETURNING id",
        )
        .bind(&t.token_hash)
        .bind(&t.name)
        .bind(t.user_id)
        .bind(t.role.as_str())
        .bind(&t.team)
        .bind(&t.grid)
        .bind(&t.created_by)
        .bind(t.created_ms)
        .bind(t.expires_ms)
        .fetch_one(self.pool())
        .await?;
        Ok(id)
    }

    async fn token_by_hash(&self, token_hash: &str) -> StoreResult<Option<TokenRecord>> {
        sqlx::query(concat!(token_select!(), " WHERE t.token_hash = $1"))
            .bind(token_hash)
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(token_from_row)
            .transpose()
    }

    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        sqlx::query(concat!(token_select!(), " ORDER BY t.id DESC"))
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(token_from_row)
            .collect()
    }

    async fn touch_token(&self, id: i64, at_ms: UnixMs) -> StoreResult<()> {
        sqlx::query("UPDATE api_tokens SET last_used_ms = $1 WHERE id = $2")
            .bind(at_ms)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn revoke_token(&self, id: i64, at_ms: UnixMs) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_ms = $1 WHERE id = $2 AND revoked_ms IS NULL",
        )
        .bind(at_ms)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn insert_audit(&self, e: &AuditEntry) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_log (at_ms, actor, auth, method, route, target, peer, status) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(e.at_ms)
        .bind(&e.actor)
        .bind(&e.auth)
        .bind(&e.method)
        .bind(&e.route)
        .bind(&e.target)
        .bind(&e.peer)
        .bind(i64::from(e.status))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn trim_audit(&self, before_ms: UnixMs) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM audit_log WHERE at_ms < $1")
            .bind(before_ms)
            .execute(self.pool())
            .await?;
        Ok(DB::rows_affected(&done))
    }

    async fn list_audit(&self, f: &AuditFilter) -> StoreResult<(u64, Vec<AuditEntry>)> {
        let mut q = QueryBuilder::<DB>::new("SELECT COUNT(*) FROM audit_log");
        push_audit_filter(&mut q, f);
        let total: i64 = q.build_query_scalar().fetch_one(self.pool()).await?;
        let mut q = QueryBuilder::<DB>::new(
            "SELECT id, at_ms, actor, auth, method, route, target, peer, status FROM audit_log",
        );
        push_audit_filter(&mut q, f);
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(f.limit))
            .push(" OFFSET ")
            .push_bind(i64::from(f.offset));
        let rows = q.build().fetch_all(self.pool()).await?;
        let entries = rows
            .iter()
            .map(audit_from_row)
            .collect::<StoreResult<_>>()?;
        Ok((count(total), entries))
    }
}
