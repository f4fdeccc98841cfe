//! People's access: roles and what they permit, password hashing (Argon2id, PHC strings),
//! session and API tokens (random 32 bytes, stored as their SHA-256), name and text checks, and
//! the first administrator. The HTTP side (sign-in, the `Identity` extractor, audit) is in
//! `api::access`; the roles table is in docs/access.md.

mod config;

use std::fmt;
use std::str::FromStr;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use config::AuthConfig;

use crate::model::UnixMs;
use crate::store::{Store, StoreError, TokenRecord, UserRecord};

/// What a user (or a token) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything: users, tokens, audit, inventory.
    Admin,
    /// The operations centre: reports, dispatches and closes cases, commands lamps.
    Dispatcher,
    /// A maintenance team's member: sees and works the cases of their team only.
    TeamMember,
    /// Switches and dims lamps.
    LampOperator,
    /// Reads; optionally only one grid.
    Viewer,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Dispatcher,
        Role::TeamMember,
        Role::LampOperator,
        Role::Viewer,
    ];

    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Dispatcher => "dispatcher",
            Role::TeamMember => "team_member",
            Role::LampOperator => "lamp_operator",
            Role::Viewer => "viewer",
        }
    }

    /// What the role may do.
    pub fn permissions(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Role::Admin => &Permission::ALL,
            Role::Dispatcher => &[
                SystemRead,
                DevicesRead,
                CasesRead,
                CasesReport,
                CasesTransition,
                LightingRead,
                LampCommand,
                CommandsRead,
                EvaluationRead,
            ],
            Role::TeamMember => &[DevicesRead, CasesRead, CasesTransition, LightingRead],
            Role::LampOperator => &[
                DevicesRead,
                CasesRead,
                LightingRead,
                LampCommand,
                CommandsRead,
            ],
            Role::Viewer => &[
                SystemRead,
                DevicesRead,
                CasesRead,
                LightingRead,
                CommandsRead,
                EvaluationRead,
            ],
        }
    }

    /// Whether the role permits `p`.
    pub fn allows(self, p: Permission) -> bool {
        self.permissions().contains(&p)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown role {s:?}; one of admin, dispatcher, team_member, lamp_operator, viewer"
                )
            })
    }
}

/// One thing an identity may do; each route requires one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Full health, metrics, unregistered devices, rejections, alert deliveries.
    SystemRead,
    /// Inventory, readings, export.
    DevicesRead,
    /// Upsert, import and delete devices.
    DevicesWrite,
    /// List and read cases (a team member: their team's; a grid viewer: their grid's).
    CasesRead,
    /// Report a case (patrol, hotline).
    CasesReport,
    /// Act on a case (a team member: their team's cases, the team's actions only).
    CasesTransition,
    /// Lighting rates.
    LightingRead,
    /// Switch and dim lamps.
    LampCommand,
    /// The lamp command log.
    CommandsRead,
    /// Users and API tokens.
    UsersManage,
    /// The audit log.
    AuditRead,
    /// Evaluation figures, rankings, CSV export and the bulletin (a grid viewer: their grid's).
    EvaluationRead,
}

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 12] = [
        Permission::SystemRead,
        Permission::DevicesRead,
        Permission::DevicesWrite,
        Permission::CasesRead,
        Permission::CasesReport,
        Permission::CasesTransition,
        Permission::LightingRead,
        Permission::LampCommand,
        Permission::CommandsRead,
        Permission::UsersManage,
        Permission::AuditRead,
        Permission::EvaluationRead,
    ];

    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::SystemRead => "system_read",
            Permission::DevicesRead => "devices_read",
            Permission::DevicesWrite => "devices_write",
            Permission::CasesRead => "cases_read",
            Permission::CasesReport => "cases_report",
            Permission::CasesTransition => "cases_transition",
            Permission::LightingRead => "lighting_read",
            Permission::LampCommand => "lamp_command",
            Permission::CommandsRead => "commands_read",
            Permission::UsersManage => "users_manage",
            Permission::AuditRead => "audit_read",
            Permission::EvaluationRead => "evaluation_read",
        }
    }
}

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest password accepted (hashing cost is bounded).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Argon2id with the parameters OWASP recommends (19 MiB, 2 passes, 1 lane).
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Why a password or name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Hash a password as an Argon2id PHC string (`$argon2id$v=19$m=...`).
pub fn hash_password(password: &str) -> Result<String, Invalid> {
    check_password(password)?;
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|e| Invalid(format!("cannot make a salt: {e}")))?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Invalid(format!("cannot hash the password: {e}")))
}

/// Whether `password` matches a stored PHC string (any Argon2 variant and parameters).
pub fn verify_password(password: &str, phc: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    PasswordHash::new(phc).is_ok_and(|h| argon2().verify_password(password.as_bytes(), &h).is_ok())
}

/// Spend the time of one verification (for a user that does not exist: the answer must not
/// come sooner than for a wrong password).
pub fn dummy_verify(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let phc = DUMMY.get_or_init(|| hash_password("not-a-real-password").unwrap_or_default());
    let _ = verify_password(password, phc);
}

/// A password is 10 characters or more, at most 1024 bytes, and no control characters.
pub fn check_password(password: &str) -> Result<(), Invalid> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Invalid(format!(
            "password: at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Invalid(format!(
            "password: at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    if password.chars().any(char::is_control) {
        return Err(Invalid("password: no control characters".to_owned()));
    }
    Ok(())
}

/// A random password: 20 characters from an alphabet without look-alikes (~115 bits).
pub fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let bytes: [u8; 20] = rand::random();
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

/// A new random token (32 bytes, hex) and the hash it is stored and looked up by.
pub fn new_token(prefix: &str) -> (String, String) {
    let bytes: [u8; 32] = rand::random();
    let token = format!("{prefix}{}", hex(&bytes));
    let hash = token_hash(&token);
    (token, hash)
}

/// Hex SHA-256 of a token, as stored.
pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// The CSRF token of a session: derived from the session token (so it is never stored), and
/// useless without it. Sent back in `X-CSRF-Token` on every mutating cookie request.
pub fn csrf_token(session_token: &str) -> String {
    hex(&Sha256::digest(
        format!("streetgate-csrf:{session_token}").as_bytes(),
    ))
}

/// Compare without an early exit (for the CSRF header).
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A user name: 1 to 64 characters, letters, digits and `.`, `_`, `-`, `@` only (so never
/// markup, whitespace or control characters).
pub fn check_user_name(name: &str) -> Result<(), Invalid> {
    let n = name.chars().count();
    if n == 0 || n > 64 {
        return Err(Invalid(format!("name: 1 to 64 characters, not {n}")));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')))
    {
        return Err(Invalid(format!(
            "name: {c:?} is not allowed; letters, digits and . _ - @ only"
        )));
    }
    Ok(())
}

/// A free-text field (a note, a detail, a token's name): at most `max` characters, no control
/// characters but newlines and tabs. The API returns it as JSON data, never as markup.
pub fn check_text(field: &str, text: &str, max: usize) -> Result<(), Invalid> {
    if text.chars().count() > max {
        return Err(Invalid(format!("{field}: at most {max} characters")));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(Invalid(format!(
            "{field}: control characters are not allowed"
        )));
    }
    Ok(())
}

/// A team or grid scope: the same characters as a user name, and it must fit the role (a
/// team for a team member, no team for anyone else).
pub fn check_scope(role: Role, team: Option<&str>, grid: Option<&str>) -> Result<(), Invalid> {
    match (role, team) {
        (Role::TeamMember, None) => {
            return Err(Invalid(
                "team: a team member belongs to a team (the cases they see and work)".to_owned(),
            ));
        }
        (Role::TeamMember, Some(t)) => {
            check_user_name(t).map_err(|e| Invalid(e.0.replacen("name", "team", 1)))?;
        }
        (_, Some(_)) => {
            return Err(Invalid(format!(
                "team: only a team member has a team, not a {role}"
            )));
        }
        (_, None) => {}
    }
    if let Some(g) = grid {
        if role != Role::Viewer {
            return Err(Invalid(format!(
                "grid: only a viewer is scoped to a grid, not a {role}"
            )));
        }
        check_user_name(g).map_err(|e| Invalid(e.0.replacen("name", "grid", 1)))?;
    }
    Ok(())
}

/// Why a user or token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// A field was refused.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The name is taken.
    #[error("a user named {0:?} exists already")]
    Exists(String),
    /// No such user.
    #[error("no user named {0:?}")]
    NoUser(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Add a user; with no password, a random one is made. Returns the user and the password
/// (to show once).
pub async fn add_user(
    store: &dyn Store,
    name: &str,
    role: Role,
    team: Option<String>,
    grid: Option<String>,
    password: Option<String>,
    now_ms: UnixMs,
) -> Result<(UserRecord, String), AccessError> {
    check_user_name(name)?;
    check_scope(role, team.as_deref(), grid.as_deref())?;
    let password = password.unwrap_or_else(random_password);
    let mut user = UserRecord {
        id: 0,
        name: name.to_owned(),
        role,
        team,
        grid,
        password_hash: hash_password(&password)?,
        disabled: false,
        created_ms: now_ms,
        password_changed_ms: now_ms,
    };
    user.id = store
        .insert_user(&user)
        .await?
        .ok_or_else(|| AccessError::Exists(name.to_owned()))?;
    Ok((user, password))
}

/// Issue an API token acting as `user` with the user's role and scope (or the ones given).
/// Returns the record and the token (shown once; only its hash is stored).
#[allow(clippy::too_many_arguments)]
pub async fn issue_token(
    store: &dyn Store,
    user: &str,
    name: &str,
    role: Option<Role>,
    team: Option<String>,
    grid: Option<String>,
    expires_ms: Option<UnixMs>,
    created_by: &str,
    now_ms: UnixMs,
) -> Result<(TokenRecord, String), AccessError> {
    let owner = store
        .user_by_name(user)
        .await?
        .ok_or_else(|| AccessError::NoUser(user.to_owned()))?;
    check_text("name", name, 64)?;
    if name.trim().is_empty() {
        return Err(Invalid("name: what the token is for".to_owned()).into());
    }
    let role = role.unwrap_or(owner.role);
    let (team, grid) = if role == owner.role && team.is_none() && grid.is_none() {
        (owner.team.clone(), owner.grid.clone())
    } else {
        (team, grid)
    };
    check_scope(role, team.as_deref(), grid.as_deref())?;
    let (token, token_hash) = new_token("sgt_");
    let mut record = TokenRecord {
        id: 0,
        token_hash,
        name: name.trim().to_owned(),
        user_id: owner.id,
        user: owner.name,
        role,
        team,
        grid,
        created_by: created_by.to_owned(),
        created_ms: now_ms,
        expires_ms,
        last_used_ms: None,
        revoked_ms: None,
    };
    record.id = store.insert_token(&record).await?;
    Ok((record, token))
}

/// Name of the first administrator.
pub const FIRST_ADMIN: &str = "admin";

/// On a store without users: create the administrator `admin` with a random password, and
/// return that password (to print once). `None` when there are users already.
pub async fn bootstrap_admin(
    store: &dyn Store,
    now_ms: UnixMs,
) -> Result<Option<String>, AccessError> {
    if store.count_users().await? > 0 {
        return Ok(None);
    }
    match add_user(store, FIRST_ADMIN, Role::Admin, None, None, None, now_ms).await {
        Ok((_, password)) => Ok(Some(password)),
        // Another process created it in between.
        Err(AccessError::Exists(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn passwords_hash_as_argon2id_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        assert!(!h.contains("correct horse"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse battery!", &h));
        assert!(!verify_password("x", "not a phc string"));
        assert!(hash_password("short").is_err());
    }

    #[test]
    fn names_refuse_markup_and_control_characters() {
        assert!(check_user_name("li.wei").is_ok());
        assert!(check_user_name("王伟").is_ok());
        for bad in ["<script>", "a b", "", "x\u{7}", "a\"b", &"x".repeat(65)] {
            assert!(check_user_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_text("note", "line\nline", 10).is_ok());
        assert!(check_text("note", "bell\u{7}", 10).is_err());
    }

    #[test]
    fn roles_round_trip_and_scopes_fit() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!(Role::Admin.allows(Permission::AuditRead));
        assert!(!Role::Viewer.allows(Permission::CasesTransition));
        assert!(Role::LampOperator.allows(Permission::LampCommand));
        assert!(!Role::Viewer.allows(Permission::LampCommand));
        assert!(check_scope(Role::TeamMember, None, None).is_err());
        assert!(check_scope(Role::Viewer, Some("t"), None).is_err());
        assert!(check_scope(Role::Viewer, None, Some("320508001001001")).is_ok());
        assert!(check_scope(Role::Dispatcher, None, Some("g")).is_err());
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, ha) = new_token("sgt_");
        let (b, _) = new_token("sgt_");
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 64);
        assert_eq!(token_hash(&a), ha);
        assert_ne!(csrf_token(&a), ha);
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
