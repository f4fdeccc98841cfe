//! `[auth]`.

use serde::{Deserialize, Serialize};

use crate::settings::{Checked, invalid};

/// `[auth]`: sign-in sessions and the cookie. Users, roles and API tokens live in the store
/// (`streetgate user ...`, `/api/users`, `/api/tokens`); see docs/access.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// A session unused for this long ends, s (wall time, whatever the clock's speed).
    pub session_idle_s: u64,
    /// A session ends this long after sign-in however much it is used, s.
    pub session_absolute_s: u64,
    /// Mark the session cookie `Secure` (sent over HTTPS only). Turn it on when a reverse
    /// proxy serves the API over TLS; always on when the gateway serves HTTPS itself
    /// (`http.tls_cert`); off by default because the embedded defaults serve plain HTTP on
    /// 127.0.0.1.
    pub cookie_secure: bool,
    /// Serve `GET /metrics` without signing in (a Prometheus on a trusted network). Off by
    /// default: it then takes a bearer token with the `system_read` permission (a viewer's).
    pub metrics_public: bool,
    /// Audit entries older than this are removed, days (0: kept for ever). The default keeps
    /// a year and a month: a whole year of monthly evaluations can be traced back.
    pub audit_retention_days: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            session_idle_s: 12 * 3600,
            session_absolute_s: 24 * 3600,
            cookie_secure: false,
            metrics_public: false,
            audit_retention_days: 400,
        }
    }
}

impl AuthConfig {
    /// Check the section.
    pub fn validate(&self) -> Checked {
        for (key, value) in [
            ("auth.session_idle_s", self.session_idle_s),
            ("auth.session_absolute_s", self.session_absolute_s),
        ] {
            if !(1..=366 * 86_400).contains(&value) {
                return Err(invalid(key, value, "1..=31622400 s (at most a year)"));
            }
        }
        Ok(())
    }
}
