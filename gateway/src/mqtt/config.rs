//! `[mqtt]` and `mqtt://` URLs.

use serde::{Deserialize, Serialize};

use crate::settings::{Checked, TOPIC_SAFE, invalid, topic_safe};

/// `[mqtt]`: the gateway's MQTT client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// External broker, `mqtt://host[:port]`. Unset: the embedded broker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Client id; stable so that the persistent session survives restarts. Each gateway
    /// instance of a shared-subscription group needs its own.
    pub client_id: String,
    /// User name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// User name of the publisher's connection (alerts, commands; same password); unset:
    /// `username`. A broker that makes the user name the client id (Mosquitto's
    /// `use_username_as_clientid`, as in deploy/mosquitto) needs a user of its own for it,
    /// e.g. `streetgate-pub`, or the gateway's two connections would take each other over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publisher_username: Option<String>,
    /// Shared-subscription group: subscribe to `$share/<group>/streetgate/v1/+/...`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_group: Option<String>,
    /// Keep-alive, s.
    pub keep_alive_s: u64,
    /// First reconnect delay, ms (doubles per failed attempt, with jitter).
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay, ms.
    pub reconnect_max_ms: u64,
    /// Largest payload decoded; longer ones are rejected as `too_large`.
    pub max_payload_bytes: usize,
    /// Largest MQTT packet read from the broker, bytes. Larger than any payload a device
    /// may send, so that an oversized message is rejected, not a reason to drop the connection.
    pub max_packet_bytes: usize,
    /// Unacknowledged QoS 1 messages in flight.
    pub inflight: u16,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            url: None,
            client_id: "streetgate-gateway".to_owned(),
            username: None,
            password: None,
            publisher_username: None,
            shared_group: None,
            keep_alive_s: 30,
            reconnect_min_ms: 500,
            reconnect_max_ms: 30_000,
            max_payload_bytes: streetgate_protocols::codec::DEFAULT_MAX_PAYLOAD,
            max_packet_bytes: 1024 * 1024,
            inflight: 100,
        }
    }
}

/// A parsed `mqtt://host:port` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttUrl {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// User name from the URL's user info.
    pub username: Option<String>,
    /// Password from the URL's user info.
    pub password: Option<String>,
}

impl MqttUrl {
    const ALLOWED: &'static str = "mqtt://host[:port] or tcp://host[:port], optionally with user:password@ (TLS is not built in: terminate it in front of the broker)";

    /// Parse `mqtt://[user[:password]@]host[:port]` (also `tcp://`); the port defaults to 1883.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("mqtt://")
            .or_else(|| url.strip_prefix("tcp://"))
            .ok_or_else(|| Self::ALLOWED.to_owned())?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') {
            return Err(Self::ALLOWED.to_owned());
        }
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (username, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => (Some(user.to_owned()), Some(pass.to_owned())),
                None => (Some(u.to_owned()), None),
            },
            None => (None, None),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| Self::ALLOWED.to_owned())?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| Self::ALLOWED.to_owned())?,
                None if after.is_empty() => 1883,
                None => return Err(Self::ALLOWED.to_owned()),
            };
            (h.to_owned(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_owned(),
                    p.parse().map_err(|_| Self::ALLOWED.to_owned())?,
                ),
                None => (hostport.to_owned(), 1883),
            }
        };
        if host.is_empty() {
            return Err(Self::ALLOWED.to_owned());
        }
        Ok(Self {
            host,
            port,
            username,
            password,
        })
    }
}

impl MqttConfig {
    /// Check the section (whether a URL is needed at all is the configuration's question:
    /// only without the embedded broker).
    pub fn validate(&self) -> Checked {
        if let Some(url) = &self.url {
            MqttUrl::parse(url).map_err(|allowed| invalid("mqtt.url", url, allowed))?;
        }
        if !topic_safe(&self.client_id) {
            return Err(invalid("mqtt.client_id", &self.client_id, TOPIC_SAFE));
        }
        if let Some(g) = &self.shared_group
            && !topic_safe(g)
        {
            return Err(invalid("mqtt.shared_group", g, TOPIC_SAFE));
        }
        if !(5..=65_535).contains(&self.keep_alive_s) {
            return Err(invalid(
                "mqtt.keep_alive_s",
                self.keep_alive_s,
                "5..=65535 seconds",
            ));
        }
        if self.reconnect_min_ms == 0 {
            return Err(invalid("mqtt.reconnect_min_ms", 0, "at least 1 ms"));
        }
        if self.reconnect_max_ms < self.reconnect_min_ms {
            return Err(invalid(
                "mqtt.reconnect_max_ms",
                self.reconnect_max_ms,
                format!("at least mqtt.reconnect_min_ms ({})", self.reconnect_min_ms),
            ));
        }
        if self.max_payload_bytes == 0 {
            return Err(invalid("mqtt.max_payload_bytes", 0, "at least 1 byte"));
        }
        if self.max_packet_bytes < self.max_payload_bytes + 512 {
            return Err(invalid(
                "mqtt.max_packet_bytes",
                self.max_packet_bytes,
                format!(
                    "at least mqtt.max_payload_bytes + 512 ({}), so an oversized payload is rejected rather than dropping the connection",
                    self.max_payload_bytes + 512
                ),
            ));
        }
        if self.inflight == 0 {
            return Err(invalid("mqtt.inflight", 0, "1..=65535"));
        }
        Ok(())
    }
}
