//! `[http]`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::settings::{Checked, invalid, parse_default, socket_addr};

/// Default HTTP listen address.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:8080";

/// `[http]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address; port 0 picks a free port.
    #[serde(deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
    /// Largest request body accepted (CSV imports), bytes.
    pub max_body_bytes: usize,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed (idle keep-alive, headers or a
    /// body that never finish), ms.
    pub idle_timeout_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: parse_default(DEFAULT_HTTP_LISTEN),
            max_body_bytes: 64 * 1024 * 1024,
            max_connections: 1024,
            idle_timeout_ms: 60_000,
        }
    }
}

impl HttpConfig {
    /// Check the section.
    pub fn validate(&self) -> Checked {
        if self.max_connections == 0 {
            return Err(invalid("http.max_connections", 0, "at least 1"));
        }
        if self.idle_timeout_ms < 100 {
            return Err(invalid(
                "http.idle_timeout_ms",
                self.idle_timeout_ms,
                "at least 100 ms",
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(invalid(
                "http.max_body_bytes",
                self.max_body_bytes,
                "at least 1024 bytes",
            ));
        }
        Ok(())
    }
}
