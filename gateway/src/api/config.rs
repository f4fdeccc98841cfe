//! `[http]`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::settings::{Checked, Invalid, invalid, parse_default, socket_addr};
use crate::tls::PemFile;

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
    /// PEM certificate chain (the server's certificate first): with `tls_key`, the listener
    /// serves HTTPS only, and the session cookie is `Secure`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: parse_default(DEFAULT_HTTP_LISTEN),
            max_body_bytes: 64 * 1024 * 1024,
            max_connections: 1024,
            idle_timeout_ms: 60_000,
            tls_cert: None,
            tls_key: None,
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
        self.tls()?;
        Ok(())
    }

    /// Whether the API is served over TLS.
    pub fn tls_enabled(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// The TLS server configuration when `tls_cert` and `tls_key` are set (both or neither),
    /// with its files read and checked.
    pub fn tls(&self) -> Result<Option<Arc<tokio_rustls::rustls::ServerConfig>>, Invalid> {
        let (cert, key) = match (&self.tls_cert, &self.tls_key) {
            (None, None) => return Ok(None),
            (Some(cert), Some(key)) => (cert, key),
            (Some(_), None) => {
                return Err(invalid(
                    "http.tls_key",
                    "(unset)",
                    "the PEM private key of http.tls_cert (set both, or neither for plain HTTP)",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "http.tls_cert",
                    "(unset)",
                    "the PEM certificate chain of http.tls_key (set both, or neither for plain HTTP)",
                ));
            }
        };
        crate::tls::server_config(crate::tls::ServerFiles {
            cert: PemFile::new("http.tls_cert", cert),
            key: PemFile::new("http.tls_key", key),
            client_ca: None,
            // axum serves HTTP/1.1 (HTTP/2 is not built in).
            alpn: &[b"http/1.1"],
        })
        .map(Some)
    }
}
