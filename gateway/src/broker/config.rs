//! `[broker]`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::settings::{Checked, Invalid, invalid, opt_socket_addr, parse_default, socket_addr};
use crate::tls::PemFile;

/// Default embedded-broker listen address (MQTT 3.1.1).
pub const DEFAULT_BROKER_LISTEN: &str = "127.0.0.1:1883";

/// `[broker]`: the embedded MQTT 3.1.1 broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Run the embedded broker. Unset: embedded unless `mqtt.url` names an external broker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedded: Option<bool>,
    /// Who may connect: `devices` (each device with its own id and secret, confined to its own
    /// topics; see docs/access.md) or `open` (anyone, anywhere: a trusted test network only).
    /// The gateway's own client ids are reserved either way.
    pub auth: super::AuthMode,
    /// MQTT 3.1.1 listener; port 0 picks a free port.
    #[serde(deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
    /// Most simultaneous client connections.
    pub max_connections: usize,
    /// Largest PUBLISH payload the broker accepts, bytes.
    pub max_payload_bytes: usize,
    /// Unacknowledged QoS 1 messages the broker sends to one subscriber before waiting for its
    /// PUBACKs.
    pub max_inflight: usize,
    /// Messages held for one subscriber: queued while a persistent session is offline, or
    /// waiting to be written to a slow one. Beyond it the oldest is dropped and counted
    /// (`streetgate_broker_dropped_total`). Uplinks to the gateway itself are never dropped:
    /// the device is slowed down instead.
    pub max_queued_messages: usize,
    /// Retained messages kept; a new retained topic beyond it is not retained (counted).
    pub max_retained: usize,
    /// Time a new connection has to send CONNECT, ms.
    pub connection_timeout_ms: u16,
    /// A second listener serving MQTT over TLS (e.g. `0.0.0.0:8883`), with `tls_cert` and
    /// `tls_key`; port 0 picks a free port. The plain `listen` stays (the gateway's own
    /// publisher connects there): keep it on loopback when devices use TLS.
    #[serde(
        default,
        deserialize_with = "opt_socket_addr",
        skip_serializing_if = "Option::is_none"
    )]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain of the TLS listener (the broker's certificate first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// PEM certificate(s) of the CA that signs device certificates: when set, a client of the
    /// TLS listener must present a certificate it signed, whose common name (or, without one,
    /// first DNS name) equals the client id it connects with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            embedded: None,
            auth: super::AuthMode::Devices,
            listen: parse_default(DEFAULT_BROKER_LISTEN),
            max_connections: 10_000,
            max_payload_bytes: 64 * 1024,
            max_inflight: 100,
            max_queued_messages: 1000,
            max_retained: 1_000_000,
            connection_timeout_ms: 10_000,
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
        }
    }
}

impl BrokerConfig {
    /// Check the section.
    pub fn validate(&self) -> Checked {
        if self.max_connections == 0 {
            return Err(invalid("broker.max_connections", 0, "at least 1"));
        }
        if self.max_payload_bytes == 0 {
            return Err(invalid("broker.max_payload_bytes", 0, "at least 1 byte"));
        }
        if !(1..=65_535).contains(&self.max_inflight) {
            return Err(invalid(
                "broker.max_inflight",
                self.max_inflight,
                "1..=65535",
            ));
        }
        if self.max_queued_messages == 0 {
            return Err(invalid("broker.max_queued_messages", 0, "at least 1"));
        }
        if self.connection_timeout_ms < 100 {
            return Err(invalid(
                "broker.connection_timeout_ms",
                self.connection_timeout_ms,
                "100..=65535 ms",
            ));
        }
        self.tls()?;
        Ok(())
    }

    /// The TLS listener's server configuration when `tls_listen` is set, with its files read
    /// and checked (`tls_cert` and `tls_key` are then required; without `tls_listen` no TLS
    /// key may be set).
    pub fn tls(&self) -> Result<Option<Arc<tokio_rustls::rustls::ServerConfig>>, Invalid> {
        let Some(listen) = self.tls_listen else {
            for (key, set) in [
                ("broker.tls_cert", self.tls_cert.is_some()),
                ("broker.tls_key", self.tls_key.is_some()),
                ("broker.tls_client_ca", self.tls_client_ca.is_some()),
            ] {
                if set {
                    return Err(invalid(
                        "broker.tls_listen",
                        "(unset)",
                        format!(
                            "the MQTT-over-TLS listen address, e.g. 0.0.0.0:8883 ({key} is set)"
                        ),
                    ));
                }
            }
            return Ok(None);
        };
        if listen == self.listen && listen.port() != 0 {
            return Err(invalid(
                "broker.tls_listen",
                listen,
                "another address than broker.listen",
            ));
        }
        let required = |key: &str, value: &Option<PathBuf>, what: &str| match value {
            Some(path) => Ok(path.clone()),
            None => Err(invalid(
                key,
                "(unset)",
                format!("{what} (required with broker.tls_listen)"),
            )),
        };
        let cert = required(
            "broker.tls_cert",
            &self.tls_cert,
            "the PEM certificate chain of the TLS listener",
        )?;
        let key = required(
            "broker.tls_key",
            &self.tls_key,
            "the PEM private key of broker.tls_cert",
        )?;
        crate::tls::server_config(crate::tls::ServerFiles {
            cert: PemFile::new("broker.tls_cert", &cert),
            key: PemFile::new("broker.tls_key", &key),
            client_ca: self
                .tls_client_ca
                .as_deref()
                .map(|ca| PemFile::new("broker.tls_client_ca", ca)),
            alpn: &[],
        })
        .map(Some)
    }
}
