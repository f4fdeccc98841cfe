//! [`UserStore`] on SQLite: users, sessions, API tokens, audit log (`0004_users.sql`). The SQL
//! is kept portable (`?` parameters become `$n`, no SQLite-only functions) for the PostgreSQL store.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::sqlite::SqliteStore;
use super::users::{AuditEntry, AuditFilter, SessionRecord, TokenRecord, UserRecord, UserStore};
use super::{StoreError, StoreResult};
use crate::auth::Role;
use crate::model::UnixMs;

fn corrupt(table: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        table,
        detail: detail.to_string(),
    }
}

fn role_of(table: &'static str, id: i64, text: &str) -> StoreResult<Role> {
    text.parse()
        .map_err(|e: String| corrupt(table, format!("{id}.role: {e}")))
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

macro_rules! user_select {
    () => {
        "SELECT id, name, role, team, grid, password_hash, disabled, created_ms, \
         password_changed_ms FROM users"
    };
}

fn user_from_row(row: &SqliteRow) -> StoreResult<UserRecord> {
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

fn token_from_row(row: &SqliteRow) -> StoreResult<TokenRecord> {
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

fn session_from_row(row: &SqliteRow) -> StoreResult<SessionRecord> {
    Ok(SessionRecord {
        token_hash: row.try_get("token_hash")?,
        user_id: row.try_get("user_id")?,
        created_ms: row.try_get("created_ms")?,
        last_seen_ms: row.try_get("last_seen_ms")?,
        peer: row.try_get("peer")?,
    })
}

fn audit_from_row(row: &SqliteRow) -> StoreResult<AuditEntry> {
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

fn push_audit_filter(q: &mut QueryBuilder<Sqlite>, f: &AuditFilter) {
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
impl UserStore for SqliteStore {
    async fn count_users(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(self.pool())
            .await?;
        Ok(count(n))
    }

    async fn insert_user(&self, u: &UserRecord) -> StoreResult<Option<i64>> {
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO users (name, role, team, grid, password_hash, disabled, created_ms, \
             password_changed_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
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
        sqlx::query(concat!(user_select!(), " WHERE name = ?"))
            .bind(name)
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn user_by_id(&self, id: i64) -> StoreResult<Option<UserRecord>> {
        sqlx::query(concat!(user_select!(), " WHERE id = ?"))
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
        let done =
            sqlx::query("UPDATE users SET password_hash = ?, password_changed_ms = ? WHERE id = ?")
                .bind(password_hash)
                .bind(at_ms)
                .bind(user_id)
                .execute(self.pool())
                .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_user_disabled(
        &self,
        user_id: i64,
        disabled: bool,
        at_ms: UnixMs,
    ) -> StoreResult<bool> {
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query("UPDATE users SET disabled = ? WHERE id = ?")
            .bind(disabled)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if disabled {
            sqlx::query("DELETE FROM sessions WHERE user_id = ?")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE api_tokens SET revoked_ms = ? WHERE user_id = ? AND revoked_ms IS NULL",
            )
            .bind(at_ms)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_session(&self, s: &SessionRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, created_ms, last_seen_ms, peer) \
             VALUES (?, ?, ?, ?, ?)",
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
             WHERE token_hash = ?",
        )
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?
        .as_ref()
        .map(session_from_row)
        .transpose()
    }

    async fn touch_session(&self, token_hash: &str, at_ms: UnixMs) -> StoreResult<()> {
        sqlx::query("UPDATE sessions SET last_seen_ms = ? WHERE token_hash = ?")
            .bind(at_ms)
            .bind(token_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn delete_session(&self, token_hash: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM sessions WHERE token_hash = ?")
            .bind(token_hash)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_user_sessions(&self, user_id: i64, keep: Option<&str>) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM sessions WHERE user_id = ? AND token_hash <> ?")
            .bind(user_id)
            .bind(keep.unwrap_or(""))
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    async fn delete_expired_sessions(
        &self,
        idle_before_ms: UnixMs,
        created_before_ms: UnixMs,
    ) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM sessions WHERE last_seen_ms < ? OR created_ms < ?")
            .bind(idle_before_ms)
            .bind(created_before_ms)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    async fn insert_token(&self, t: &TokenRecord) -> StoreResult<i64> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO api_tokens (token_hash, name, user_id, role, team, grid, created_by, \
             created_ms, expires_ms, last_used_ms, revoked_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL) RETURNING id",
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
        sqlx::query(concat!(token_select!(), " WHERE t.token_hash = ?"))
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
        sqlx::query("UPDATE api_tokens SET last_used_ms = ? WHERE id = ?")
            .bind(at_ms)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn revoke_token(&self, id: i64, at_ms: UnixMs) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE api_tokens SET revoked_ms = ? WHERE id = ? AND revoked_ms IS NULL")
                .bind(at_ms)
                .bind(id)
                .execute(self.pool())
                .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_audit(&self, e: &AuditEntry) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_log (at_ms, actor, auth, method, route, target, peer, status) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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

    async fn list_audit(&self, f: &AuditFilter) -> StoreResult<(u64, Vec<AuditEntry>)> {
        let mut q = QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM audit_log");
        push_audit_filter(&mut q, f);
        let total: i64 = q.build_query_scalar().fetch_one(self.pool()).await?;
        let mut q = QueryBuilder::<Sqlite>::new(
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
        (dir, s)
    }

    fn user(name: &str) -> UserRecord {
        UserRecord {
            id: 0,
            name: name.to_owned(),
            role: Role::TeamMember,
            team: Some("lighting".to_owned()),
            grid: None,
            password_hash: "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA".to_owned(),
            disabled: false,
            created_ms: 1,
            password_changed_ms: 1,
        }
    }

    #[tokio::test]
    async fn users_sessions_tokens_and_disabling() {
        let (_d, s) = store().await;
        assert_eq!(s.count_users().await.unwrap(), 0);
        let id = s.insert_user(&user("li.wei")).await.unwrap().unwrap();
        assert_eq!(s.insert_user(&user("li.wei")).await.unwrap(), None);
        let back = s.user_by_name("li.wei").await.unwrap().unwrap();
        assert_eq!(
            (back.id, back.role, back.team.as_deref()),
            (id, Role::TeamMember, Some("lighting"))
        );
        assert!(s.set_password(id, "$argon2id$new", 5).await.unwrap());
        assert_eq!(
            s.user_by_id(id).await.unwrap().unwrap().password_changed_ms,
            5
        );

        for (hash, created, seen) in [("a", 100, 100), ("b", 100, 900), ("c", 10, 950)] {
            s.insert_session(&SessionRecord {
                token_hash: hash.to_owned(),
                user_id: id,
                created_ms: created,
                last_seen_ms: seen,
                peer: Some("127.0.0.1:1".to_owned()),
            })
            .await
            .unwrap();
        }
        // Idle since before 500, or signed in before 50: a and c.
        assert_eq!(s.delete_expired_sessions(500, 50).await.unwrap(), 2);
        assert!(s.session_by_hash("b").await.unwrap().is_some());
        s.touch_session("b", 999).await.unwrap();
        assert_eq!(
            s.session_by_hash("b").await.unwrap().unwrap().last_seen_ms,
            999
        );

        let token = TokenRecord {
            id: 0,
            token_hash: "th".to_owned(),
            name: "app".to_owned(),
            user_id: id,
            user: String::new(),
            role: Role::TeamMember,
            team: Some("lighting".to_owned()),
            grid: None,
            created_by: "admin".to_owned(),
            created_ms: 1,
            expires_ms: None,
            last_used_ms: None,
            revoked_ms: None,
        };
        let tid = s.insert_token(&token).await.unwrap();
        let t = s.token_by_hash("th").await.unwrap().unwrap();
        assert_eq!((t.id, t.user.as_str()), (tid, "li.wei"));
        s.touch_token(tid, 7).await.unwrap();
        assert_eq!(s.list_tokens().await.unwrap()[0].last_used_ms, Some(7));

        // Disabling ends the sessions and revokes the tokens.
        assert!(s.set_user_disabled(id, true, 20).await.unwrap());
        assert!(s.session_by_hash("b").await.unwrap().is_none());
        assert_eq!(
            s.token_by_hash("th").await.unwrap().unwrap().revoked_ms,
            Some(20)
        );
        assert!(!s.revoke_token(tid, 30).await.unwrap(), "revoked already");
        assert!(s.user_by_name("li.wei").await.unwrap().unwrap().disabled);
    }

    #[tokio::test]
    async fn audit_filters_and_pages_newest_first() {
        let (_d, s) = store().await;
        for (i, (actor, status)) in [
            (Some("a"), 200u16),
            (Some("b"), 403),
            (None, 401),
            (Some("a"), 409),
        ]
        .into_iter()
        .enumerate()
        {
            s.insert_audit(&AuditEntry {
                id: 0,
                at_ms: i64::try_from(i).unwrap() * 10,
                actor: actor.map(str::to_owned),
                auth: actor.map(|_| "token".to_owned()),
                method: "POST".to_owned(),
                route: "/api/cases/{id}/transitions".to_owned(),
                target: Some(i.to_string()),
                peer: Some("127.0.0.1:9".to_owned()),
                status,
            })
            .await
            .unwrap();
        }
        let page = |f: AuditFilter| {
            let s = s.clone();
            async move {
                s.list_audit(&AuditFilter { limit: 100, ..f })
                    .await
                    .unwrap()
            }
        };
        let (total, all) = page(AuditFilter::default()).await;
        assert_eq!(total, 4);
        assert_eq!(all[0].target.as_deref(), Some("3"), "newest first");
        let (n, _) = page(AuditFilter {
            actor: Some("a".into()),
            ..AuditFilter::default()
        })
        .await;
        assert_eq!(n, 2);
        let (n, _) = page(AuditFilter {
            min_status: Some(400),
            ..AuditFilter::default()
        })
        .await;
        assert_eq!(n, 3);
        let (n, _) = page(AuditFilter {
            from_ms: Some(10),
            to_ms: Some(30),
            ..AuditFilter::default()
        })
        .await;
        assert_eq!(n, 2);
        let (total, one) = s
            .list_audit(&AuditFilter {
                limit: 1,
                offset: 2,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(
            (total, one.len(), one[0].target.as_deref()),
            (4, 1, Some("1"))
        );
    }
}
