//! Who is calling: the [`Identity`] extractor every protected handler takes (a bearer API
//! token, or the session cookie plus `X-CSRF-Token` on mutating requests), sign-in and
//! sign-out (`/api/session`), users (`/api/users`), API tokens (`/api/tokens`) and the audit log
//! of every mutating call (`/api/audit`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::listener::ClientAddr;
use super::{ApiError, ApiJson, ApiQuery, ApiResult, AppState};
use crate::auth::{self, AccessError, Permission, Role};
use crate::clock::wall_ms;
use crate::model::UnixMs;
use crate::store::{AuditEntry, AuditFilter, CaseRecord, SessionRecord};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "streetgate_session";
/// Header that must carry the session's CSRF token on a mutating cookie request.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The session cookie.
    Session {
        /// Hash of the session token (the session's key in the store).
        token_hash: String,
        /// The session's CSRF token.
        csrf: String,
        /// Signed in at.
        created_ms: UnixMs,
    },
    /// A bearer API token.
    Token {
        /// The token's id.
        id: i64,
        /// What it is for.
        name: String,
    },
}

/// The signed-in caller: a user through a session, or a user's API token (with the token's
/// role and scope). Taking it in a handler makes the route refuse anonymous calls (401).
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user's id.
    pub user_id: i64,
    /// The user's name: the actor recorded for whatever this call does.
    pub name: String,
    /// What the caller may do.
    pub role: Role,
    /// A team member's team.
    pub team: Option<String>,
    /// A viewer's grid.
    pub grid: Option<String>,
    /// Session or token.
    pub via: Via,
}

fn unauthorized(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

impl Identity {
    /// 403 unless the role has `p`.
    pub fn require(&self, p: Permission) -> ApiResult<()> {
        if self.role.allows(p) {
            Ok(())
        } else {
            Err(forbidden(format!(
                "this needs the {} permission, which a {} does not have",
                p.as_str(),
                self.role
            )))
        }
    }

    /// Whether the caller's scope includes this grid (no grid scope: every grid).
    pub fn sees_grid(&self, grid: &str) -> bool {
        self.grid.as_deref().is_none_or(|g| g == grid)
    }

    /// Whether the caller's scope includes this case (their team's, their grid's).
    pub fn sees_case(&self, case: &CaseRecord) -> bool {
        self.sees_grid(&case.grid)
            && self
                .team
                .as_deref()
                .is_none_or(|t| case.team.as_deref() == Some(t))
    }

    /// `session` or `token`.
    pub fn via_name(&self) -> &'static str {
        match self.via {
            Via::Session { .. } => "session",
            Via::Token { .. } => "token",
        }
    }

    /// What `GET /api/session` says about the caller.
    fn describe(&self, state: &AppState) -> Value {
        let (csrf, expires_ms, token) = match &self.via {
            Via::Session {
                csrf, created_ms, ..
            } => (
                Some(csrf.clone()),
                Some(created_ms.saturating_add(secs_ms(state.auth.session_absolute_s))),
                None,
            ),
            Via::Token { id, name } => (None, None, Some(json!({ "id": id, "name": name }))),
        };
        json!({
            "user": self.name,
            "role": self.role,
            "team": self.team,
            "grid": self.grid,
            "permissions": self.role.permissions().iter().map(|p| p.as_str()).collect::<Vec<_>>(),
            "via": self.via_name(),
            "csrf_token": csrf,
            "expires_ms": expires_ms,
            "token": token,
        })
    }
}

fn secs_ms(s: u64) -> i64 {
    i64::try_from(s)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000)
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The session token from the `Cookie` header(s), if any.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Who signs in, for the audit record (set by the extractor and by sign-in).
#[derive(Debug, Clone, Default)]
pub(super) struct AuditSlot(Arc<Mutex<Option<(String, &'static str)>>>);

impl AuditSlot {
    fn set(&self, name: &str, auth: &'static str) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some((name.to_owned(), auth));
    }

    fn get(&self) -> Option<(String, &'static str)> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

const ENDED: &str = "the session has ended (signed out, expired or its user disabled); sign in again with POST /api/session";
const BAD_TOKEN: &str = "the API token is unknown, revoked or expired";

async fn token_identity(state: &AppState, token: &str, now: UnixMs) -> ApiResult<Identity> {
    let record = state
        .store
        .token_by_hash(&auth::token_hash(token))
        .await?
        .ok_or_else(|| unauthorized("invalid_token", BAD_TOKEN))?;
    if record.revoked_ms.is_some() || record.expires_ms.is_some_and(|e| e <= now) {
        return Err(unauthorized("invalid_token", BAD_TOKEN));
    }
    let user = state
        .store
        .user_by_id(record.user_id)
        .await?
        .filter(|u| !u.disabled)
        .ok_or_else(|| unauthorized("invalid_token", BAD_TOKEN))?;
    if record.last_used_ms.is_none_or(|t| now - t >= 60_000) {
        state.store.touch_token(record.id, now).await?;
    }
    Ok(Identity {
        user_id: user.id,
        name: user.name,
        role: record.role,
        team: record.team,
        grid: record.grid,
        via: Via::Token {
            id: record.id,
            name: record.name,
        },
    })
}

async fn session_identity(state: &AppState, token: &str, now: UnixMs) -> ApiResult<Identity> {
    let hash = auth::token_hash(token);
    let session = state
        .store
        .session_by_hash(&hash)
        .await?
        .ok_or_else(|| unauthorized("session_ended", ENDED))?;
    let idle = secs_ms(state.auth.session_idle_s);
    let absolute = secs_ms(state.auth.session_absolute_s);
    if now - session.last_seen_ms > idle || now - session.created_ms > absolute {
        state.store.delete_session(&hash).await?;
        return Err(unauthorized("session_ended", ENDED));
    }
    let user = state
        .store
        .user_by_id(session.user_id)
        .await?
        .filter(|u| !u.disabled)
        .ok_or_else(|| unauthorized("session_ended", ENDED))?;
    if now - session.last_seen_ms >= (idle / 4).min(60_000) {
        state.store.touch_session(&hash, now).await?;
    }
    Ok(Identity {
        user_id: user.id,
        name: user.name,
        role: user.role,
        team: user.team,
        grid: user.grid,
        via: Via::Session {
            token_hash: hash,
            csrf: auth::csrf_token(token),
            created_ms: session.created_ms,
        },
    })
}

/// Resolve the caller, if they present any credential; `Ok(None)` when they present none.
async fn resolve(parts: &Parts, state: &AppState) -> ApiResult<Option<Identity>> {
    let now = wall_ms();
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                unauthorized(
                    "invalid_authorization",
                    "Authorization: expected \"Bearer <API token>\"",
                )
            })?;
        return token_identity(state, token, now).await.map(Some);
    }
    let Some(token) = session_cookie(&parts.headers) else {
        return Ok(None);
    };
    let id = session_identity(state, &token, now).await?;
    if let Some(slot) = parts.extensions.get::<AuditSlot>() {
        slot.set(&id.name, "session");
    }
    if !is_safe(&parts.method) {
        // A cookie is sent by the browser whatever page made the request; the CSRF token only
        // by a page of ours that read it from the sign-in answer (or GET /api/session).
        let sent = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let Via::Session { csrf, .. } = &id.via else {
            return Ok(Some(id));
        };
        if !auth::same(sent, csrf) {
            return Err(forbidden(
                "a signed-in request that changes something must carry the session's csrf_token (from POST or GET /api/session) in the X-CSRF-Token header",
            )
            .with_code("csrf_token_required"));
        }
    }
    Ok(Some(id))
}

impl ApiError {
    fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }
}

impl FromRequestParts<AppState> for Identity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let id = resolve(parts, state).await?.ok_or_else(|| {
            unauthorized(
                "unauthenticated",
                "sign in first (POST /api/session) or send Authorization: Bearer <API token>",
            )
        })?;
        if let Some(slot) = parts.extensions.get::<AuditSlot>() {
            slot.set(&id.name, id.via_name());
        }
        Ok(id)
    }
}

/// The caller if signed in, for routes that serve anonymous callers less (`/api/health`,
/// `/metrics`). A credential that does not hold (an expired cookie) counts as none: liveness
/// answers whatever the caller sends.
#[derive(Debug, Clone)]
pub struct MaybeIdentity(pub Option<Identity>);

impl FromRequestParts<AppState> for MaybeIdentity {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(resolve(parts, state).await.ok().flatten()))
    }
}

/// The client's address, when the server records it.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<ClientAddr>>()
                .map(|c| c.0.0),
        ))
    }
}

/// The audit slot of this request (mutating requests have one).
#[derive(Debug, Clone)]
pub(super) struct SlotOf(Option<AuditSlot>);

impl<S: Send + Sync> FromRequestParts<S> for SlotOf {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.extensions.get::<AuditSlot>().cloned()))
    }
}

/// Middleware: every mutating call (not GET, HEAD, OPTIONS) that reached a route is recorded
/// with who, what, when, from where and the answer's status.
pub(super) async fn audit(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if is_safe(req.method()) {
        return next.run(req).await;
    }
    let slot = AuditSlot::default();
    req.extensions_mut().insert(slot.clone());
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| path.clone(), |m| m.as_str().to_owned());
    let peer = req
        .extensions()
        .get::<ConnectInfo<ClientAddr>>()
        .map(|c| c.0.0.to_string());
    let response = next.run(req).await;
    // The path's parameters: the segments where the template has `{...}`.
    let target: Vec<&str> = route
        .split('/')
        .zip(path.split('/'))
        .filter(|(t, _)| t.starts_with('{'))
        .map(|(_, p)| p)
        .collect();
    let who = slot.get();
    let entry = AuditEntry {
        id: 0,
        at_ms: wall_ms(),
        actor: who.as_ref().map(|(n, _)| n.clone()),
        auth: who.map(|(_, a)| a.to_owned()),
        method,
        route,
        target: (!target.is_empty()).then(|| target.join("/")),
        peer,
        status: response.status().as_u16(),
    };
    if let Err(e) = state.store.insert_audit(&entry).await {
        tracing::error!(error = %e, route = %entry.route, "cannot record the audit entry");
    }
    response
}

fn cookie(state: &AppState, value: &str, max_age_s: u64) -> ApiResult<HeaderValue> {
    let secure = if state.auth.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"
    ))
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

fn access_error(e: AccessError) -> ApiError {
    match e {
        AccessError::Invalid(e) => ApiError::bad_request("invalid_field", e.0),
        AccessError::Exists(_) => ApiError::new(StatusCode::CONFLICT, "user_exists", e.to_string()),
        AccessError::NoUser(_) => ApiError::not_found("user_not_found", e.to_string()),
        AccessError::Store(e) => e.into(),
    }
}

/// Argon2 takes tens of milliseconds of CPU: off the async workers.
async fn verify_blocking(password: String, phc: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || match phc {
        Some(phc) => auth::verify_password(&password, &phc),
        None => {
            auth::dummy_verify(&password);
            false
        }
    })
    .await
    .unwrap_or(false)
}

async fn hash_blocking(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| ApiError::bad_request("weak_password", e.0))
}

/// Failed sign-ins per user name: after [`MAX_FAILURES`] within [`FAILURE_WINDOW_MS`] the name
/// is refused (429) until the window has passed since the first of them, whatever the password
/// (unknown names count alike, so the answer does not tell whether a user exists).
#[derive(Debug, Default)]
pub struct SignInThrottle(Mutex<std::collections::HashMap<String, (u32, UnixMs)>>);

/// Failed sign-ins allowed per name and window.
pub const MAX_FAILURES: u32 = 10;
/// The window, ms (15 minutes).
pub const FAILURE_WINDOW_MS: UnixMs = 15 * 60_000;

impl SignInThrottle {
    fn key(name: &str) -> String {
        name.chars().take(64).collect::<String>().to_lowercase()
    }

    /// Seconds to wait before this name may try again, if it may not now.
    fn blocked(&self, name: &str, now: UnixMs) -> Option<i64> {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (count, first) = map.get(&Self::key(name))?;
        let left = first + FAILURE_WINDOW_MS - now;
        (*count >= MAX_FAILURES && left > 0).then(|| (left + 999) / 1000)
    }

    fn failed(&self, name: &str, now: UnixMs) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() > 100_000 {
            map.retain(|_, (_, first)| now - *first < FAILURE_WINDOW_MS);
        }
        let entry = map.entry(Self::key(name)).or_insert((0, now));
        if now - entry.1 >= FAILURE_WINDOW_MS {
            *entry = (0, now);
        }
        entry.0 += 1;
    }

    fn succeeded(&self, name: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&Self::key(name));
    }
}

/// Body of `POST /api/session`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SignIn {
    username: String,
    password: String,
}

/// `POST /api/session`: sign in; sets the session cookie and returns the CSRF token.
pub(super) async fn sign_in(
    State(state): State<AppState>,
    Peer(peer): Peer,
    SlotOf(slot): SlotOf,
    ApiJson(body): ApiJson<SignIn>,
) -> ApiResult<Response> {
    let refused = || {
        unauthorized(
            "invalid_credentials",
            "wrong user name or password (or the user is disabled)",
        )
    };
    let now = wall_ms();
    if let Some(wait_s) = state.sign_in_throttle.blocked(&body.username, now) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            format!(
                "{MAX_FAILURES} failed sign-ins for this name in {} minutes; try again in {wait_s} s",
                FAILURE_WINDOW_MS / 60_000
            ),
        ));
    }
    let user = if auth::check_user_name(&body.username).is_ok() {
        if let Some(slot) = &slot {
            slot.set(&body.username, "password");
        }
        state.store.user_by_name(&body.username).await?
    } else {
        None
    };
    let user = user.filter(|u| !u.disabled);
    let ok = verify_blocking(
        body.password,
        user.as_ref().map(|u| u.password_hash.clone()),
    )
    .await;
    let Some(user) = user.filter(|_| ok) else {
        state.sign_in_throttle.failed(&body.username, now);
        return Err(refused());
    };
    state.sign_in_throttle.succeeded(&body.username);
    let idle_before = now - secs_ms(state.auth.session_idle_s);
    let created_before = now - secs_ms(state.auth.session_absolute_s);
    if let Err(e) = state
        .store
        .delete_expired_sessions(idle_before, created_before)
        .await
    {
        tracing::warn!(error = %e, "cannot forget expired sessions");
    }
    let (token, token_hash) = auth::new_token("");
    state
        .store
        .insert_session(&SessionRecord {
            token_hash: token_hash.clone(),
            user_id: user.id,
            created_ms: now,
            last_seen_ms: now,
            peer: peer.map(|p| p.to_string()),
        })
        .await?;
    tracing::info!(user = %user.name, peer = ?peer, "signed in");
    let identity = Identity {
        user_id: user.id,
        name: user.name,
        role: user.role,
        team: user.team,
        grid: user.grid,
        via: Via::Session {
            token_hash,
            csrf: auth::csrf_token(&token),
            created_ms: now,
        },
    };
    let set = cookie(&state, &token, state.auth.session_absolute_s)?;
    let mut response = Json(identity.describe(&state)).into_response();
    response.headers_mut().insert(header::SET_COOKIE, set);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /api/session`: who am I, with my permissions.
pub(super) async fn whoami(State(state): State<AppState>, id: Identity) -> Json<Value> {
    Json(id.describe(&state))
}

/// `DELETE /api/session`: sign out (ends the session and clears the cookie).
pub(super) async fn sign_out(State(state): State<AppState>, id: Identity) -> ApiResult<Response> {
    if let Via::Session { token_hash, .. } = &id.via {
        state.store.delete_session(token_hash).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(&state, "", 0)?);
    Ok(response)
}

/// Body of `POST /api/session/password`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChangePassword {
    current_password: String,
    new_password: String,
}

/// `POST /api/session/password`: change my own password; my other sessions end.
pub(super) async fn change_password(
    State(state): State<AppState>,
    id: Identity,
    ApiJson(body): ApiJson<ChangePassword>,
) -> ApiResult<StatusCode> {
    let user = state
        .store
        .user_by_id(id.user_id)
        .await?
        .ok_or_else(|| unauthorized("session_ended", ENDED))?;
    if !verify_blocking(body.current_password, Some(user.password_hash)).await {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong_password",
            "current_password is not your password",
        ));
    }
    let hash = hash_blocking(body.new_password).await?;
    state
        .store
        .set_password(id.user_id, &hash, wall_ms())
        .await?;
    let keep = match &id.via {
        Via::Session { token_hash, .. } => Some(token_hash.as_str()),
        Via::Token { .. } => None,
    };
    state.store.delete_user_sessions(id.user_id, keep).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /api/users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewUser {
    name: String,
    role: Role,
    team: Option<String>,
    grid: Option<String>,
    /// None: a random one, returned once.
    password: Option<String>,
}

/// `GET /api/users`.
pub(super) async fn list_users(
    State(state): State<AppState>,
    id: Identity,
) -> ApiResult<Json<Value>> {
    id.require(Permission::UsersManage)?;
    let users = state.store.list_users().await?;
    Ok(Json(json!({ "users": users })))
}

/// `POST /api/users`: add a user; the password (given, or made) is in the answer once.
pub(super) async fn add_user(
    State(state): State<AppState>,
    id: Identity,
    ApiJson(body): ApiJson<NewUser>,
) -> ApiResult<Json<Value>> {
    id.require(Permission::UsersManage)?;
    if let Some(p) = &body.password {
        auth::check_password(p).map_err(|e| ApiError::bad_request("weak_password", e.0))?;
    }
    let generated = body.password.is_none();
    let store = std::sync::Arc::clone(&state.store);
    let (user, password) = auth::add_user(
        store.as_ref(),
        &body.name,
        body.role,
        body.team,
        body.grid,
        body.password,
        wall_ms(),
    )
    .await
    .map_err(access_error)?;
    tracing::info!(user = %user.name, role = %user.role, by = %id.name, "user added");
    Ok(Json(json!({
        "user": user,
        "password": generated.then_some(password),
    })))
}

async fn user_named(state: &AppState, name: &str) -> ApiResult<crate::store::UserRecord> {
    state
        .store
        .user_by_name(name)
        .await?
        .ok_or_else(|| ApiError::not_found("user_not_found", format!("no user named {name:?}")))
}

/// `DELETE /api/users/{name}`: disable a user (their sessions end, their tokens are revoked).
pub(super) async fn disable_user(
    State(state): State<AppState>,
    id: Identity,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    id.require(Permission::UsersManage)?;
    let user = user_named(&state, &name).await?;
    if user.id == id.user_id {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "cannot_disable_self",
            "you cannot disable yourself; another administrator can",
        ));
    }
    state
        .store
        .set_user_disabled(user.id, true, wall_ms())
        .await?;
    tracing::info!(user = %user.name, by = %id.name, "user disabled");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/users/{name}/enable`: a disabled user may sign in again (with their password;
/// their old sessions and tokens stay ended).
pub(super) async fn enable_user(
    State(state): State<AppState>,
    id: Identity,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    id.require(Permission::UsersManage)?;
    let user = user_named(&state, &name).await?;
    state
        .store
        .set_user_disabled(user.id, false, wall_ms())
        .await?;
    tracing::info!(user = %user.name, by = %id.name, "user enabled");
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /api/users/{name}/password`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResetPassword {
    password: Option<String>,
}

/// `POST /api/users/{name}/password`: set a user's password (a random one when none is given,
/// returned once); their sessions end.
pub(super) async fn reset_password(
    State(state): State<AppState>,
    id: Identity,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<ResetPassword>,
) -> ApiResult<Json<Value>> {
    id.require(Permission::UsersManage)?;
    let user = user_named(&state, &name).await?;
    let generated = body.password.is_none();
    let password = body.password.unwrap_or_else(auth::random_password);
    let hash = hash_blocking(password.clone()).await?;
    state.store.set_password(user.id, &hash, wall_ms()).await?;
    state.store.delete_user_sessions(user.id, None).await?;
    Ok(Json(json!({
        "user": user.name,
        "password": generated.then_some(password),
    })))
}

/// Body of `POST /api/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewToken {
    /// The user the token acts as.
    user: String,
    /// What it is for.
    name: String,
    /// Default: the user's role (and scope).
    role: Option<Role>,
    team: Option<String>,
    grid: Option<String>,
    /// Lifetime; none: until revoked.
    expires_in_s: Option<u64>,
}

/// `GET /api/tokens`.
pub(super) async fn list_tokens(
    State(state): State<AppState>,
    id: Identity,
) -> ApiResult<Json<Value>> {
    id.require(Permission::UsersManage)?;
    let tokens = state.store.list_tokens().await?;
    Ok(Json(json!({ "tokens": tokens })))
}

/// `POST /api/tokens`: the token is in the answer, once.
pub(super) async fn create_token(
    State(state): State<AppState>,
    id: Identity,
    ApiJson(body): ApiJson<NewToken>,
) -> ApiResult<Json<Value>> {
    id.require(Permission::UsersManage)?;
    let now = wall_ms();
    let expires_ms = match body.expires_in_s {
        Some(0) => {
            return Err(ApiError::bad_request(
                "invalid_field",
                "expires_in_s: at least 1 (leave it out for a token that lasts until revoked)",
            ));
        }
        Some(s) => Some(now.saturating_add(secs_ms(s))),
        None => None,
    };
    let (record, token) = auth::issue_token(
        state.store.as_ref(),
        &body.user,
        &body.name,
        body.role,
        body.team,
        body.grid,
        expires_ms,
        &id.name,
        now,
    )
    .await
    .map_err(access_error)?;
    let mut v = serde_json::to_value(&record).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("token".to_owned(), Value::String(token));
    }
    Ok(Json(v))
}

/// `DELETE /api/tokens/{id}`: revoke.
pub(super) async fn revoke_token(
    State(state): State<AppState>,
    id: Identity,
    Path(token_id): Path<String>,
) -> ApiResult<StatusCode> {
    id.require(Permission::UsersManage)?;
    let token_id: i64 = token_id.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_token_id",
            format!("{token_id:?} is not a token id"),
        )
    })?;
    if state.store.revoke_token(token_id, wall_ms()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            "token_not_found",
            format!("no token {token_id} that is not revoked already"),
        ))
    }
}

/// Filters of `GET /api/audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    actor: Option<String>,
    method: Option<String>,
    route: Option<String>,
    target: Option<String>,
    min_status: Option<u16>,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    #[serde(default = "default_limit")]
    limit: u32,
    #[serde(default)]
    offset: u32,
}

fn default_limit() -> u32 {
    100
}

/// `GET /api/audit`: newest first.
pub(super) async fn audit_log(
    State(state): State<AppState>,
    id: Identity,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Value>> {
    id.require(Permission::AuditRead)?;
    let filter = AuditFilter {
        actor: q.actor,
        method: q.method.map(|m| m.to_ascii_uppercase()),
        route: q.route,
        target: q.target,
        min_status: q.min_status,
        from_ms: q.from_ms,
        to_ms: q.to_ms,
        limit: q.limit.min(10_000),
        offset: q.offset,
    };
    let (total, entries) = state.store.list_audit(&filter).await?;
    Ok(Json(
        json!({ "total": total, "offset": q.offset, "entries": entries }),
    ))
}

/// 403 for a resource outside the caller's team or grid.
pub(super) fn out_of_scope(scope: &str) -> ApiError {
    forbidden(format!("outside your scope: you see {scope} only"))
}
