//! What every configuration section shares: how a section says a setting is wrong, and the
//! checks and serde helpers several sections use. Each module owns its section (`[mqtt]` in
//! [`crate::mqtt`], `[store]` in [`crate::store`], …) and validates it; [`crate::config`] puts
//! them together, applies the environment and checks what spans sections.

use std::fmt;
use std::net::SocketAddr;

use serde::Deserialize;
use serde::de::{self, Deserializer, Unexpected};

/// A setting that is wrong: its key, the value found, and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Full key, `mqtt.keep_alive_s`.
    pub key: String,
    /// The value as found.
    pub value: String,
    /// What would be accepted.
    pub allowed: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} = {}: expected {}",
            self.key, self.value, self.allowed
        )
    }
}

impl std::error::Error for Invalid {}

/// A section's verdict.
pub type Checked = Result<(), Invalid>;

/// `key` = `value` is wrong; `allowed` says what is right.
pub fn invalid(
    key: impl Into<String>,
    value: impl fmt::Display,
    allowed: impl Into<String>,
) -> Invalid {
    Invalid {
        key: key.into(),
        value: value.to_string(),
        allowed: allowed.into(),
    }
}

/// A client id or group name that is a safe MQTT topic level: 1 to 64 characters without
/// `/`, `+`, `#`, `$` or white space.
pub fn topic_safe(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.contains(['/', '+', '#', '$'])
        && !s.chars().any(char::is_whitespace)
}

/// What [`topic_safe`] allows, for error messages.
pub const TOPIC_SAFE: &str = "1 to 64 characters without '/', '+', '#', '$' or spaces";

/// A URL with its password masked (`postgres://user:***@host/db`).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// A default listen address written as a literal.
pub fn parse_default(s: &str) -> SocketAddr {
    // Invariant: the defaults are literal, valid socket addresses (checked by a unit test).
    s.parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
}

const ADDR_EXPECTED: &str =
    "an IP address and port such as 127.0.0.1:8080 (port 0 picks a free port)";

/// Deserialize a listen address, naming what is expected when it is not one.
pub fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse()
        .map_err(|_| de::Error::invalid_value(Unexpected::Str(&s), &ADDR_EXPECTED))
}

/// Deserialize an optional listen address (a key that is unset by default).
pub fn opt_socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    socket_addr(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            redact_url("postgres://sg:s3cret@db:5432/city"),
            "postgres://sg:***@db:5432/city"
        );
        assert_eq!(redact_url("postgres://db/city"), "postgres://db/city");
        assert_eq!(redact_url("postgres://u@db/x:y@z"), "postgres://u@db/x:y@z");
    }
}
