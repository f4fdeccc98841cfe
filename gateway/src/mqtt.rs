//! The gateway's MQTT client side, for an external broker: `[mqtt]`, broker URLs, connection
//! settings and options for its two clients (ingest and publisher), and the reconnect back-off
//! they share. The ingest ([`crate::ingest::mqtt`]) and the publisher ([`crate::publisher`])
//! build their connections here.

mod config;

use std::time::Duration;

use rumqttc::MqttOptions;

pub use config::{MqttConfig, MqttUrl};

/// The publisher's MQTT client id: `{mqtt.client_id}-pub`.
pub fn publisher_client_id(mqtt: &MqttConfig) -> String {
    format!("{}-pub", mqtt.client_id)
}

/// Exponential back-off with jitter: `min·2ⁿ` capped at `max`, each delay drawn uniformly from
/// its upper half so that many gateways do not reconnect in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A back-off between `min` and `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(30));
        self.attempt = self.attempt.saturating_add(1);
        let ceiling = self.min.saturating_mul(factor).min(self.max);
        let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        let half = ms / 2;
        Duration::from_millis(half + rand::random_range(0..=ms - half))
    }

    /// After a successful connection.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client options from the config.
    pub config: MqttConfig,
}

impl MqttSettings {
    /// Settings for an `mqtt://` URL.
    pub fn from_url(url: &str, config: &MqttConfig) -> Result<Self, String> {
        let parsed = MqttUrl::parse(url)?;
        let mut config = config.clone();
        if config.username.is_none() {
            config.username = parsed.username;
        }
        if config.password.is_none() {
            config.password = parsed.password;
        }
        Ok(Self {
            host: parsed.host,
            port: parsed.port,
            config,
        })
    }

    /// Options for the given client id, with the configured keep-alive and credentials.
    fn base_options(&self, client_id: String) -> MqttOptions {
        let c = &self.config;
        let mut o = MqttOptions::new(client_id, self.host.clone(), self.port);
        o.set_keep_alive(Duration::from_secs(c.keep_alive_s));
        if let Some(user) = &c.username {
            o.set_credentials(user.clone(), c.password.clone().unwrap_or_default());
        }
        o
    }

    /// The ingest client: `mqtt.client_id`, a persistent session (the broker keeps what the
    /// gateway has not taken, across restarts and a standby's take-over), manual
    /// acknowledgements sent after the commit, `mqtt.inflight` messages in flight.
    pub fn ingest_options(&self) -> MqttOptions {
        let c = &self.config;
        let mut o = self.base_options(c.client_id.clone());
        o.set_clean_session(false)
            .set_max_packet_size(c.max_packet_bytes, 64 * 1024)
            .set_inflight(c.inflight)
            .set_manual_acks(true);
        o
    }

    /// The publisher's client (alerts, commands): [`publisher_client_id`], a clean session
    /// (nothing is queued for it), packets up to `mqtt.max_packet_bytes` both ways.
    pub fn publisher_options(&self) -> MqttOptions {
        let c = &self.config;
        let mut o = self.base_options(publisher_client_id(c));
        if let Some(user) = &c.publisher_username {
            o.set_credentials(user.clone(), c.password.clone().unwrap_or_default());
        }
        o.set_clean_session(true)
            .set_max_packet_size(c.max_packet_bytes, c.max_packet_bytes);
        o
    }
}
