//! `[broker]`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::settings::{Checked, invalid, parse_default, socket_addr};

/// Default embedded-broker listen address (MQTT 3.1.1).
pub const DEFAULT_BROKER_LISTEN: &str = "127.0.0.1:1883";

/// `[broker]`: the embedded MQTT 3.1.1 broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Run the embedded broker. Unset: embedded unless `mqtt.url` names an external broker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedded: Option<bool>,
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
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            embedded: None,
            listen: parse_default(DEFAULT_BROKER_LISTEN),
            max_connections: 10_000,
            max_payload_bytes: 64 * 1024,
            max_inflight: 100,
            max_queued_messages: 1000,
            max_retained: 1_000_000,
            connection_timeout_ms: 10_000,
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
        Ok(())
    }
}
