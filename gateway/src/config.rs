//! Configuration: one serde tree with defaults for every key, loaded from TOML and overridden by
//! `STREETGATE_*` environment variables.
//!
//! With no file at all the gateway runs on embedded defaults: an embedded MQTT broker on
//! 127.0.0.1:1883, SQLite under `./streetgate-data/`, HTTP on 127.0.0.1:8080. Every key is
//! documented in `gateway/streetgate.sample.toml`.
//!
//! Environment overrides are named after the key: `http.listen` → `STREETGATE_HTTP_LISTEN`,
//! `mqtt.shared_group` → `STREETGATE_MQTT_SHARED_GROUP` (see [`ENV_KEYS`]). An error always names
//! the key, the value and what is allowed, and says when the value came from the environment.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, Unexpected};
use serde::{Deserialize, Serialize};

use crate::cases::{CasePolicy, Router};
use crate::ingest::modbus::ModbusSettings;
use crate::model::CaseType;
use crate::rules::RulesConfig;

/// Prefix of every environment override.
pub const ENV_PREFIX: &str = "STREETGATE_";

/// Default HTTP listen address.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:8080";
/// Default embedded-broker listen address (MQTT 3.1.1).
pub const DEFAULT_BROKER_LISTEN: &str = "127.0.0.1:1883";

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{origin} is not valid TOML: {message}")]
    Syntax {
        /// The file (or `<string>`).
        origin: String,
        /// Parser message, with line and column.
        message: String,
    },
    /// A key has a value of the wrong type or an unknown name.
    #[error("{key}: {message}{}", from_env_hint(.env_var))]
    Value {
        /// Dotted key path (`http.listen`), or `.` for the root.
        key: String,
        /// What was wrong and what is expected.
        message: String,
        /// The environment variable the value came from, if any.
        env_var: Option<String>,
    },
    /// A key has a well-typed value outside what is allowed.
    #[error("{key} = {value}: expected {allowed}{}", from_env_hint(.env_var))]
    Invalid {
        /// Dotted key path.
        key: String,
        /// The value given.
        value: String,
        /// What is allowed.
        allowed: String,
        /// The environment variable the value came from, if any.
        env_var: Option<String>,
    },
}

fn from_env_hint(var: &Option<String>) -> String {
    var.as_ref()
        .map(|v| format!(" (value from environment variable {v})"))
        .unwrap_or_default()
}

/// The whole configuration tree.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP API.
    pub http: HttpConfig,
    /// Embedded MQTT broker.
    pub broker: BrokerConfig,
    /// MQTT client (ingest).
    pub mqtt: MqttConfig,
    /// Persistent store.
    pub store: StoreConfig,
    /// Device inventory.
    pub inventory: InventoryConfig,
    /// Internal pipeline sizing.
    pub pipeline: PipelineConfig,
    /// Modbus polling.
    pub modbus: ModbusConfig,
    /// Rule thresholds and timings (defaults from docs/domain.md).
    pub rules: RulesConfig,
    /// Case time limits and windows.
    pub cases: CasesConfig,
    /// Dispatch routing: grid + case type → team.
    pub routing: RoutingConfig,
    /// Case events on the MQTT alerts topic and to webhooks.
    pub alerts: AlertsConfig,
    /// Lamp commands sent through the API.
    pub commands: CommandsConfig,
    /// The clock: wall time, or a simulation's faster clock.
    pub clock: ClockConfig,
    /// Sign-in sessions, cookies, and what is served without signing in.
    pub auth: AuthConfig,
}

/// `[auth]`: sign-in sessions and the cookie. Users, roles and API tokens live in the store
/// (`streetgate user ...`, `/api/users`, `/api/tokens`); see docs/access.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// A session unused for this long ends, s (wall time, whatever the clock's speed).
    pub session_idle_s: u64,
    /// A session ends this long after sign-in however much it is used, s.
    pub session_absolute_s: u64,
    /// Mark the session cookie `Secure` (sent over HTTPS only). Turn it on when the API is
    /// served over TLS (a reverse proxy in front of it); off by default because the embedded
    /// defaults serve plain HTTP on 127.0.0.1.
    pub cookie_secure: bool,
    /// Serve `GET /metrics` without signing in (a Prometheus on a trusted network). Off by
    /// default: it then takes a bearer token with the `system_read` permission (a viewer's).
    pub metrics_public: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            session_idle_s: 12 * 3600,
            session_absolute_s: 24 * 3600,
            cookie_secure: false,
            metrics_public: false,
        }
    }
}

/// `[alerts]`: every case event (each recorded transition) is delivered to each sink in order,
/// at least once, with a delivery record per event and sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Publish case events on `streetgate/v1/_alerts/{grid}/{case_type}` (QoS 1).
    pub mqtt: bool,
    /// How often the sinks look for new case events, ms.
    pub poll_interval_ms: u64,
    /// First retry delay of a failed delivery, ms (doubles per attempt, with jitter).
    pub retry_min_ms: u64,
    /// Longest retry delay, ms.
    pub retry_max_ms: u64,
    /// Attempts per event and sink before the delivery is recorded as failed.
    pub max_attempts: u32,
    /// Timeout of one delivery attempt, ms.
    pub timeout_ms: u64,
    /// Webhooks: each receives every case event as a JSON POST.
    pub webhooks: Vec<WebhookConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            mqtt: true,
            poll_interval_ms: 500,
            retry_min_ms: 1000,
            retry_max_ms: 60_000,
            max_attempts: 8,
            timeout_ms: 5000,
            webhooks: Vec::new(),
        }
    }
}

/// `[[alerts.webhooks]]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Name, unique among the sinks (delivery records and metrics use it).
    pub name: String,
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// Value of the `Authorization` header, if the receiver wants one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<String>,
}

/// `[commands]`: lamp commands through the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommandsConfig {
    /// How long a command waits for the device's acknowledgement before it is reported as
    /// timed out, ms.
    pub ack_timeout_ms: u64,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        Self {
            ack_timeout_ms: 10_000,
        }
    }
}

/// `[clock]`: the gateway's time. The defaults are the wall clock; a simulation sets `speed`
/// (and the simulated start) so that holds, offline timers and time limits follow its clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClockConfig {
    /// Clock seconds per wall second (1 = real time).
    pub speed: f64,
    /// Clock time at the anchor, Unix ms. Unset: the wall time at the anchor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<i64>,
    /// Wall time (Unix ms) at which the clock reads `start_ms`. Unset: the gateway's start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anchor_wall_ms: Option<i64>,
}

impl Default for ClockConfig {
    fn default() -> Self {
        Self {
            speed: 1.0,
            start_ms: None,
            anchor_wall_ms: None,
        }
    }
}

impl ClockConfig {
    /// The clock, anchored now unless an anchor is configured.
    pub fn clock(&self) -> crate::clock::Clock {
        #[allow(clippy::float_cmp)]
        if self.speed == 1.0 && self.start_ms.is_none() {
            return crate::clock::Clock::WALL;
        }
        let anchor = self.anchor_wall_ms.unwrap_or_else(crate::clock::wall_ms);
        crate::clock::Clock::scaled(anchor, self.start_ms.unwrap_or(anchor), self.speed)
    }
}

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

/// Store backends compiled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    /// SQLite file (WAL).
    Sqlite,
}

/// `[store]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Backend.
    pub backend: StoreBackend,
    /// SQLite database file; its directory is created if missing.
    pub path: PathBuf,
    /// Readings kept per device in the history table (0 = none).
    pub history_per_device: u32,
    /// Most writes in one transaction.
    pub batch_max: usize,
    /// How often the history is trimmed to `history_per_device`, s.
    pub trim_interval_s: u64,
    /// How often the rule state is snapshotted, s.
    pub snapshot_interval_s: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Sqlite,
            path: PathBuf::from("./streetgate-data/streetgate.db"),
            history_per_device: 100,
            batch_max: 2000,
            trim_interval_s: 60,
            snapshot_interval_s: 30,
        }
    }
}

/// `[inventory]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InventoryConfig {
    /// CSV file imported (upserted) at start-up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import_csv: Option<PathBuf>,
    /// Unregistered devices kept in the list (the most recently seen); trimmed every
    /// `store.trim_interval_s`, so a flood of made-up ids cannot grow the store without bound.
    pub max_unregistered: u64,
    /// An unregistered device not seen for this long leaves the list, s.
    pub unregistered_ttl_s: u64,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        Self {
            import_csv: None,
            max_unregistered: 10_000,
            unregistered_ttl_s: 7 * 86_400,
        }
    }
}

/// `[pipeline]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Capacity of each bounded channel between tasks.
    pub channel_capacity: usize,
    /// Decode workers (messages are sharded by device, so each device stays in order).
    pub decode_workers: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            channel_capacity: 8192,
            decode_workers: 2,
        }
    }
}

/// `[modbus]`: polling of Modbus TCP/RTU devices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModbusConfig {
    /// Interval between two polls of one unit, ms.
    pub poll_interval_ms: u64,
    /// Timeout of one request (and of connecting), ms.
    pub request_timeout_ms: u64,
    /// Consecutive failures before a unit is reported offline.
    pub offline_after: u32,
    /// Longest back-off of a failing unit or endpoint, ms.
    pub max_backoff_ms: u64,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Default for ModbusConfig {
    fn default() -> Self {
        let d = ModbusSettings::default();
        Self {
            poll_interval_ms: ms(d.poll_interval),
            request_timeout_ms: ms(d.request_timeout),
            offline_after: d.offline_after,
            max_backoff_ms: ms(d.max_backoff),
        }
    }
}

impl ModbusConfig {
    /// The poller's settings.
    pub fn settings(&self) -> ModbusSettings {
        ModbusSettings {
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            offline_after: self.offline_after,
            max_backoff: Duration::from_millis(self.max_backoff_ms),
            clock: crate::clock::Clock::WALL,
        }
    }
}

/// `[cases]`: time limits (处置时限) and the sensor windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CasesConfig {
    /// Handling limits per case type, minutes; only the types listed change, the others keep
    /// their docs/domain.md defaults.
    pub limits_min: BTreeMap<CaseType, i64>,
    /// Limit for urgent cases of any type, minutes.
    pub urgent_limit_min: i64,
    /// The condition must stay clear this long after `resolved` before the sensor verifies, s.
    pub verify_window_s: i64,
    /// A recurrence this soon after closure reopens the case as rework, s.
    pub reopen_window_s: i64,
}

impl Default for CasesConfig {
    fn default() -> Self {
        let p = CasePolicy::default();
        Self {
            limits_min: BTreeMap::new(),
            urgent_limit_min: p.urgent_limit_min,
            verify_window_s: p.verify_window_ms / 1000,
            reopen_window_s: p.reopen_window_ms / 1000,
        }
    }
}

impl CasesConfig {
    /// The case machine's policy: the defaults with these changes.
    pub fn policy(&self) -> CasePolicy {
        let mut p = CasePolicy::default();
        p.limits_min
            .extend(self.limits_min.iter().map(|(t, m)| (*t, *m)));
        p.urgent_limit_min = self.urgent_limit_min;
        p.verify_window_ms = self.verify_window_s.saturating_mul(1000);
        p.reopen_window_ms = self.reopen_window_s.saturating_mul(1000);
        p
    }
}

/// `[routing]`: which team a case goes to. Keys are grid codes, or `*` for every grid; values
/// map case types to teams. Entries here override the built-in `*` defaults (lighting,
/// municipal, sanitation, facilities, grid-chief) one (grid, type) at a time.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// Grid (or `*`) → case type → team.
    pub teams: BTreeMap<String, BTreeMap<CaseType, String>>,
}

impl RoutingConfig {
    /// The dispatch router: the default teams with these routes on top.
    pub fn router(&self) -> Router {
        let mut r = Router::default_teams();
        for (grid, types) in &self.teams {
            r.routes
                .entry(grid.clone())
                .or_default()
                .extend(types.iter().map(|(t, team)| (*t, team.clone())));
        }
        r
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

/// How an environment value is turned into a TOML value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvValueKind {
    /// Taken verbatim as a string.
    Text,
    /// Parsed as a TOML literal (number, boolean).
    Literal,
}

/// Every key that can be overridden from the environment.
pub const ENV_KEYS: &[(&str, EnvValueKind)] = &[
    ("http.listen", EnvValueKind::Text),
    ("http.max_body_bytes", EnvValueKind::Literal),
    ("http.max_connections", EnvValueKind::Literal),
    ("http.idle_timeout_ms", EnvValueKind::Literal),
    ("broker.embedded", EnvValueKind::Literal),
    ("broker.listen", EnvValueKind::Text),
    ("broker.max_connections", EnvValueKind::Literal),
    ("broker.max_payload_bytes", EnvValueKind::Literal),
    ("broker.max_inflight", EnvValueKind::Literal),
    ("broker.max_queued_messages", EnvValueKind::Literal),
    ("broker.max_retained", EnvValueKind::Literal),
    ("broker.connection_timeout_ms", EnvValueKind::Literal),
    ("mqtt.url", EnvValueKind::Text),
    ("mqtt.client_id", EnvValueKind::Text),
    ("mqtt.username", EnvValueKind::Text),
    ("mqtt.password", EnvValueKind::Text),
    ("mqtt.shared_group", EnvValueKind::Text),
    ("mqtt.keep_alive_s", EnvValueKind::Literal),
    ("mqtt.reconnect_min_ms", EnvValueKind::Literal),
    ("mqtt.reconnect_max_ms", EnvValueKind::Literal),
    ("mqtt.max_payload_bytes", EnvValueKind::Literal),
    ("mqtt.max_packet_bytes", EnvValueKind::Literal),
    ("mqtt.inflight", EnvValueKind::Literal),
    ("store.backend", EnvValueKind::Text),
    ("store.path", EnvValueKind::Text),
    ("store.history_per_device", EnvValueKind::Literal),
    ("store.batch_max", EnvValueKind::Literal),
    ("store.trim_interval_s", EnvValueKind::Literal),
    ("store.snapshot_interval_s", EnvValueKind::Literal),
    ("inventory.import_csv", EnvValueKind::Text),
    ("inventory.max_unregistered", EnvValueKind::Literal),
    ("inventory.unregistered_ttl_s", EnvValueKind::Literal),
    ("pipeline.channel_capacity", EnvValueKind::Literal),
    ("pipeline.decode_workers", EnvValueKind::Literal),
    ("alerts.mqtt", EnvValueKind::Literal),
    ("alerts.poll_interval_ms", EnvValueKind::Literal),
    ("alerts.retry_min_ms", EnvValueKind::Literal),
    ("alerts.retry_max_ms", EnvValueKind::Literal),
    ("alerts.max_attempts", EnvValueKind::Literal),
    ("alerts.timeout_ms", EnvValueKind::Literal),
    ("commands.ack_timeout_ms", EnvValueKind::Literal),
    ("clock.speed", EnvValueKind::Literal),
    ("clock.start_ms", EnvValueKind::Literal),
    ("clock.anchor_wall_ms", EnvValueKind::Literal),
    ("auth.session_idle_s", EnvValueKind::Literal),
    ("auth.session_absolute_s", EnvValueKind::Literal),
    ("auth.cookie_secure", EnvValueKind::Literal),
    ("auth.metrics_public", EnvValueKind::Literal),
];

/// The environment variable that overrides `key` (`http.listen` → `STREETGATE_HTTP_LISTEN`).
pub fn env_var_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "_").to_ascii_uppercase())
}

impl Config {
    /// Load from an optional file plus the process environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let text = match path {
            Some(p) => Some(
                std::fs::read_to_string(p).map_err(|error| ConfigError::Read {
                    path: p.to_owned(),
                    error,
                })?,
            ),
            None => None,
        };
        let origin = path.map_or_else(|| "<defaults>".to_owned(), |p| p.display().to_string());
        Self::from_parts(text.as_deref(), &origin, std::env::vars())
    }

    /// Build from TOML text (`None` = all defaults) and environment pairs; validates the result.
    pub fn from_parts(
        text: Option<&str>,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table = match text {
            Some(t) => toml::from_str(t).map_err(|e| ConfigError::Syntax {
                origin: origin.to_owned(),
                message: e.to_string().trim_end().to_owned(),
            })?,
            None => toml::Table::new(),
        };
        let mut from_env: Vec<(String, String)> = Vec::new();
        for (var, value) in env {
            if !var.starts_with(ENV_PREFIX) {
                continue;
            }
            let Some((key, kind)) = ENV_KEYS.iter().find(|(k, _)| env_var_name(k) == var) else {
                if !var.starts_with("STREETGATE_TEST_") {
                    tracing::warn!(variable = %var, "ignoring unknown STREETGATE_ environment variable");
                }
                continue;
            };
            let parsed = match kind {
                EnvValueKind::Text => toml::Value::String(value.clone()),
                EnvValueKind::Literal => {
                    parse_literal(&value).ok_or_else(|| ConfigError::Invalid {
                        key: (*key).to_owned(),
                        value: value.clone(),
                        allowed: "a number or true/false".to_owned(),
                        env_var: Some(var.clone()),
                    })?
                }
            };
            set_path(&mut table, key, parsed);
            from_env.push(((*key).to_owned(), var));
        }
        let env_for = |key: &str| {
            from_env
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                ConfigError::Value {
                    env_var: env_for(&key),
                    message: e.into_inner().message().to_owned(),
                    key,
                }
            })?;
        config.validate().map_err(|mut e| {
            if let ConfigError::Invalid { key, env_var, .. } = &mut e {
                *env_var = env_for(key);
            }
            e
        })?;
        Ok(config)
    }

    /// Whether the embedded broker runs.
    pub fn broker_embedded(&self) -> bool {
        self.broker.embedded.unwrap_or(self.mqtt.url.is_none())
    }

    /// Check relations and ranges serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &str, value: impl fmt::Display, allowed: &str) -> ConfigError {
            ConfigError::Invalid {
                key: key.to_owned(),
                value: value.to_string(),
                allowed: allowed.to_owned(),
                env_var: None,
            }
        }
        let topic_safe = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && !s.contains(['/', '+', '#', '$'])
                && !s.chars().any(char::is_whitespace)
        };
        match &self.mqtt.url {
            Some(url) => {
                MqttUrl::parse(url).map_err(|allowed| invalid("mqtt.url", url, &allowed))?;
            }
            None if !self.broker_embedded() => {
                return Err(invalid(
                    "mqtt.url",
                    "(unset)",
                    "the external broker's address, e.g. mqtt://127.0.0.1:1883 (required when broker.embedded = false)",
                ));
            }
            None => {}
        }
        if !topic_safe(&self.mqtt.client_id) {
            return Err(invalid(
                "mqtt.client_id",
                &self.mqtt.client_id,
                "1 to 64 characters without '/', '+', '#', '$' or spaces",
            ));
        }
        if let Some(g) = &self.mqtt.shared_group
            && !topic_safe(g)
        {
            return Err(invalid(
                "mqtt.shared_group",
                g,
                "1 to 64 characters without '/', '+', '#', '$' or spaces",
            ));
        }
        if !(5..=65_535).contains(&self.mqtt.keep_alive_s) {
            return Err(invalid(
                "mqtt.keep_alive_s",
                self.mqtt.keep_alive_s,
                "5..=65535 seconds",
            ));
        }
        if self.mqtt.reconnect_min_ms == 0 {
            return Err(invalid("mqtt.reconnect_min_ms", 0, "at least 1 ms"));
        }
        if self.mqtt.reconnect_max_ms < self.mqtt.reconnect_min_ms {
            return Err(invalid(
                "mqtt.reconnect_max_ms",
                self.mqtt.reconnect_max_ms,
                &format!(
                    "at least mqtt.reconnect_min_ms ({})",
                    self.mqtt.reconnect_min_ms
                ),
            ));
        }
        if self.mqtt.max_payload_bytes == 0 {
            return Err(invalid("mqtt.max_payload_bytes", 0, "at least 1 byte"));
        }
        if self.mqtt.max_packet_bytes < self.mqtt.max_payload_bytes + 512 {
            return Err(invalid(
                "mqtt.max_packet_bytes",
                self.mqtt.max_packet_bytes,
                &format!(
                    "at least mqtt.max_payload_bytes + 512 ({}), so an oversized payload is rejected rather than dropping the connection",
                    self.mqtt.max_payload_bytes + 512
                ),
            ));
        }
        if self.mqtt.inflight == 0 {
            return Err(invalid("mqtt.inflight", 0, "1..=65535"));
        }
        if self.broker.max_connections == 0 {
            return Err(invalid("broker.max_connections", 0, "at least 1"));
        }
        if self.broker.max_payload_bytes == 0 {
            return Err(invalid("broker.max_payload_bytes", 0, "at least 1 byte"));
        }
        if !(1..=65_535).contains(&self.broker.max_inflight) {
            return Err(invalid(
                "broker.max_inflight",
                self.broker.max_inflight,
                "1..=65535",
            ));
        }
        if self.broker.max_queued_messages == 0 {
            return Err(invalid("broker.max_queued_messages", 0, "at least 1"));
        }
        if self.broker.connection_timeout_ms < 100 {
            return Err(invalid(
                "broker.connection_timeout_ms",
                self.broker.connection_timeout_ms,
                "100..=65535 ms",
            ));
        }
        if self.http.max_connections == 0 {
            return Err(invalid("http.max_connections", 0, "at least 1"));
        }
        if self.http.idle_timeout_ms < 100 {
            return Err(invalid(
                "http.idle_timeout_ms",
                self.http.idle_timeout_ms,
                "at least 100 ms",
            ));
        }
        if self.http.max_body_bytes < 1024 {
            return Err(invalid(
                "http.max_body_bytes",
                self.http.max_body_bytes,
                "at least 1024 bytes",
            ));
        }
        if self.store.path.as_os_str().is_empty() {
            return Err(invalid("store.path", "\"\"", "a file path"));
        }
        if self.store.batch_max == 0 {
            return Err(invalid("store.batch_max", 0, "at least 1"));
        }
        if self.store.trim_interval_s == 0 {
            return Err(invalid("store.trim_interval_s", 0, "at least 1 s"));
        }
        if self.store.snapshot_interval_s == 0 {
            return Err(invalid("store.snapshot_interval_s", 0, "at least 1 s"));
        }
        if self.pipeline.channel_capacity == 0 {
            return Err(invalid("pipeline.channel_capacity", 0, "at least 1"));
        }
        if !(1..=64).contains(&self.pipeline.decode_workers) {
            return Err(invalid(
                "pipeline.decode_workers",
                self.pipeline.decode_workers,
                "1..=64",
            ));
        }
        self.validate_automation()
    }

    fn validate_services(&self) -> Result<(), ConfigError> {
        fn invalid(key: &str, value: impl fmt::Display, allowed: &str) -> ConfigError {
            ConfigError::Invalid {
                key: key.to_owned(),
                value: value.to_string(),
                allowed: allowed.to_owned(),
                env_var: None,
            }
        }
        let a = &self.alerts;
        if !(50..=60_000).contains(&a.poll_interval_ms) {
            return Err(invalid(
                "alerts.poll_interval_ms",
                a.poll_interval_ms,
                "50..=60000 ms",
            ));
        }
        if a.retry_min_ms == 0 || a.retry_max_ms < a.retry_min_ms {
            return Err(invalid(
                "alerts.retry_max_ms",
                format!("{} (retry_min_ms {})", a.retry_max_ms, a.retry_min_ms),
                "retry_min_ms at least 1 and retry_max_ms at least retry_min_ms",
            ));
        }
        if !(1..=100).contains(&a.max_attempts) {
            return Err(invalid("alerts.max_attempts", a.max_attempts, "1..=100"));
        }
        if !(100..=120_000).contains(&a.timeout_ms) {
            return Err(invalid(
                "alerts.timeout_ms",
                a.timeout_ms,
                "100..=120000 ms",
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, w) in a.webhooks.iter().enumerate() {
            let key = format!("alerts.webhooks[{i}]");
            let name_ok = !w.name.is_empty()
                && w.name.len() <= 64
                && w.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !name_ok || w.name == crate::alerts::MQTT_SINK {
                return Err(invalid(
                    &format!("{key}.name"),
                    &w.name,
                    "1 to 64 letters, digits, '-' or '_', not \"mqtt\"",
                ));
            }
            if !names.insert(w.name.as_str()) {
                return Err(invalid(
                    &format!("{key}.name"),
                    &w.name,
                    "a name no other webhook has",
                ));
            }
            let scheme_ok = w
                .url
                .split_once("://")
                .is_some_and(|(s, rest)| matches!(s, "http" | "https") && !rest.is_empty());
            if !scheme_ok {
                return Err(invalid(
                    &format!("{key}.url"),
                    &w.url,
                    "an http:// or https:// URL",
                ));
            }
        }
        if !(100..=600_000).contains(&self.commands.ack_timeout_ms) {
            return Err(invalid(
                "commands.ack_timeout_ms",
                self.commands.ack_timeout_ms,
                "100..=600000 ms",
            ));
        }
        let c = &self.clock;
        if !(c.speed.is_finite() && c.speed > 0.0 && c.speed <= 100_000.0) {
            return Err(invalid(
                "clock.speed",
                c.speed,
                "above 0 and at most 100000 (clock seconds per wall second)",
            ));
        }
        for (key, value) in [
            ("auth.session_idle_s", self.auth.session_idle_s),
            ("auth.session_absolute_s", self.auth.session_absolute_s),
        ] {
            if !(1..=366 * 86_400).contains(&value) {
                return Err(invalid(key, value, "1..=31622400 s (at most a year)"));
            }
        }
        Ok(())
    }

    fn validate_automation(&self) -> Result<(), ConfigError> {
        fn invalid(key: &str, value: impl fmt::Display, allowed: &str) -> ConfigError {
            ConfigError::Invalid {
                key: key.to_owned(),
                value: value.to_string(),
                allowed: allowed.to_owned(),
                env_var: None,
            }
        }
        self.validate_services()?;
        let m = &self.modbus;
        if m.poll_interval_ms < 100 {
            return Err(invalid(
                "modbus.poll_interval_ms",
                m.poll_interval_ms,
                "at least 100 ms",
            ));
        }
        if !(10..=60_000).contains(&m.request_timeout_ms) {
            return Err(invalid(
                "modbus.request_timeout_ms",
                m.request_timeout_ms,
                "10..=60000 ms",
            ));
        }
        if m.offline_after == 0 {
            return Err(invalid("modbus.offline_after", 0, "at least 1"));
        }
        if m.max_backoff_ms < m.request_timeout_ms {
            return Err(invalid(
                "modbus.max_backoff_ms",
                m.max_backoff_ms,
                &format!(
                    "at least modbus.request_timeout_ms ({})",
                    m.request_timeout_ms
                ),
            ));
        }
        let r = &self.rules;
        if !(r.tilt_alarm_deg > 0.0
            && r.tilt_alarm_deg < r.tilt_open_deg
            && r.tilt_open_deg <= 180.0)
        {
            return Err(invalid(
                "rules.tilt_alarm_deg",
                r.tilt_alarm_deg,
                &format!(
                    "above 0 and below rules.tilt_open_deg ({}), which is at most 180",
                    r.tilt_open_deg
                ),
            ));
        }
        if !(r.full_pct > 0.0 && r.full_pct < r.overflow_pct && r.overflow_pct <= 150.0) {
            return Err(invalid(
                "rules.full_pct",
                r.full_pct,
                &format!(
                    "above 0 and below rules.overflow_pct ({}), which is at most 150",
                    r.overflow_pct
                ),
            ));
        }
        if r.nh3_limit_mg_m3.iter().any(|l| *l <= 0.0) || r.h2s_limit_mg_m3 <= 0.0 {
            return Err(invalid(
                "rules.nh3_limit_mg_m3",
                format!("{:?} / h2s {}", r.nh3_limit_mg_m3, r.h2s_limit_mg_m3),
                "positive limits (mg/m³)",
            ));
        }
        if r.report_interval_s.contains(&0) || r.offline_missed == 0 {
            return Err(invalid(
                "rules.report_interval_s",
                format!("{:?} × {}", r.report_interval_s, r.offline_missed),
                "positive intervals per kind (streetlight, manhole, bin, toilet) and rules.offline_missed ≥ 1",
            ));
        }
        if !(r.outage_fraction > 0.0 && r.outage_fraction <= 1.0) {
            return Err(invalid(
                "rules.outage_fraction",
                r.outage_fraction,
                "a fraction above 0 and at most 1 (0.2 = a fifth of the devices heard from)",
            ));
        }
        if r.leakage_limit_ma.is_nan() || r.leakage_limit_ma <= 0.0 {
            return Err(invalid(
                "rules.leakage_limit_ma",
                r.leakage_limit_ma,
                "a positive current, mA (30 = a typical residual-current limit)",
            ));
        }
        if r.outage_min_devices == 0 {
            return Err(invalid(
                "rules.outage_min_devices",
                r.outage_min_devices,
                "at least 1",
            ));
        }
        for (key, target) in [
            ("rules.lighting.target_main", r.lighting.target_main),
            (
                "rules.lighting.target_secondary",
                r.lighting.target_secondary,
            ),
            ("rules.lighting.target_back", r.lighting.target_back),
        ] {
            if !(0.0..=1.0).contains(&target) {
                return Err(invalid(key, target, "a fraction 0..=1 (0.99 = 99 %)"));
            }
        }
        let c = &self.cases;
        for (t, minutes) in &c.limits_min {
            if *minutes <= 0 {
                let key = format!(
                    "cases.limits_min.{}",
                    serde_json::to_value(t)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                );
                return Err(invalid(&key, minutes, "a positive number of minutes"));
            }
        }
        if c.urgent_limit_min <= 0 {
            return Err(invalid(
                "cases.urgent_limit_min",
                c.urgent_limit_min,
                "a positive number of minutes",
            ));
        }
        if c.verify_window_s < 0 || c.reopen_window_s < 0 {
            return Err(invalid(
                "cases.verify_window_s",
                format!("{} / reopen {}", c.verify_window_s, c.reopen_window_s),
                "non-negative seconds",
            ));
        }
        for (grid, types) in &self.routing.teams {
            for (t, team) in types {
                if team.trim().is_empty() {
                    return Err(invalid(
                        &format!("routing.teams.{grid}"),
                        format!("{t:?} = \"\""),
                        "a team name",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML, with the password masked.
    pub fn to_toml_redacted(&self) -> String {
        let mut shown = self.clone();
        if shown.mqtt.password.is_some() {
            shown.mqtt.password = Some("***".to_owned());
        }
        toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

fn parse_literal(raw: &str) -> Option<toml::Value> {
    let table: toml::Table = toml::from_str(&format!("v = {raw}")).ok()?;
    table
        .get("v")
        .filter(|v| !matches!(v, toml::Value::Table(_) | toml::Value::Array(_)))
        .cloned()
}

fn set_path(table: &mut toml::Table, key: &str, value: toml::Value) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let Some(leaf) = parts.pop() else { return };
    let mut cur = table;
    for part in parts {
        let entry = cur
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(t) = entry else { return };
        cur = t;
    }
    cur.insert(leaf.to_owned(), value);
}

fn parse_default(s: &str) -> SocketAddr {
    // Invariant: the defaults are literal, valid socket addresses (checked by a unit test).
    s.parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
}

const ADDR_EXPECTED: &str =
    "an IP address and port such as 127.0.0.1:8080 (port 0 picks a free port)";

fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse()
        .map_err(|_| de::Error::invalid_value(Unexpected::Str(&s), &ADDR_EXPECTED))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_parts(
            Some(text),
            "test.toml",
            env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
    }

    #[test]
    fn defaults_are_embedded() {
        let c = load("", &[]).unwrap();
        assert_eq!(c, Config::default());
        assert!(c.broker_embedded());
        assert_eq!(c.http.listen.to_string(), DEFAULT_HTTP_LISTEN);
        assert_eq!(c.broker.listen.to_string(), DEFAULT_BROKER_LISTEN);
    }

    #[test]
    fn external_broker_is_one_line() {
        let c = load("mqtt.url = \"mqtt://10.0.0.5:1883\"", &[]).unwrap();
        assert!(!c.broker_embedded());
        let c = load("[broker]\nembedded = false\n", &[]).unwrap_err();
        assert!(c.to_string().contains("mqtt.url"), "{c}");
    }

    #[test]
    fn env_overrides_file() {
        let c = load(
            "[http]\nlisten = \"127.0.0.1:9000\"\n",
            &[
                ("STREETGATE_HTTP_LISTEN", "127.0.0.1:0"),
                ("STREETGATE_MQTT_URL", "mqtt://broker:1884"),
                ("STREETGATE_PIPELINE_DECODE_WORKERS", "4"),
                ("STREETGATE_BROKER_EMBEDDED", "true"),
            ],
        )
        .unwrap();
        assert_eq!(c.http.listen.port(), 0);
        assert_eq!(c.mqtt.url.as_deref(), Some("mqtt://broker:1884"));
        assert_eq!(c.pipeline.decode_workers, 4);
        assert!(c.broker_embedded());
    }

    #[test]
    fn bad_values_name_key_value_and_allowed() {
        let e = load("[http]\nlisten = \"localhost-8080\"\n", &[]).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("http.listen"), "{s}");
        assert!(s.contains("localhost-8080"), "{s}");
        assert!(s.contains("127.0.0.1:8080"), "{s}");

        let e = load("[mqtt]\nkeep_alive_s = \"often\"\n", &[]).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("mqtt.keep_alive_s") && s.contains("often"),
            "{s}"
        );

        let e = load("[store]\nbackend = \"oracle\"\n", &[]).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("store.backend") && s.contains("oracle") && s.contains("sqlite"),
            "{s}"
        );

        let e = load("[http]\nlisen = \"127.0.0.1:1\"\n", &[]).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("lisen") && s.contains("listen"), "{s}");

        let e = load("[mqtt]\nurl = \"mqtts://x\"\n", &[]).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("mqtt.url") && s.contains("mqtts://x") && s.contains("mqtt://host"),
            "{s}"
        );

        let e = load(
            "[mqtt]\nreconnect_min_ms = 1000\nreconnect_max_ms = 10\n",
            &[],
        )
        .unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("mqtt.reconnect_max_ms = 10") && s.contains("1000"),
            "{s}"
        );

        let e = load("", &[("STREETGATE_PIPELINE_DECODE_WORKERS", "0")]).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("pipeline.decode_workers = 0")
                && s.contains("1..=64")
                && s.contains("STREETGATE_PIPELINE_DECODE_WORKERS"),
            "{s}"
        );

        let e = load("", &[("STREETGATE_HTTP_LISTEN", "nope")]).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("http.listen") && s.contains("nope") && s.contains("STREETGATE_HTTP_LISTEN"),
            "{s}"
        );

        let e = load("[http\n", &[]).unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e}");
        assert!(e.to_string().contains("test.toml"));
    }

    #[test]
    fn every_env_key_exists() {
        for (key, kind) in ENV_KEYS {
            let value = match (kind, *key) {
                (_, "store.backend") => "sqlite",
                (_, "mqtt.url") => "mqtt://h:1",
                (_, k) if k.ends_with("listen") => "127.0.0.1:1",
                (EnvValueKind::Text, _) => "x",
                (
                    EnvValueKind::Literal,
                    "broker.embedded"
                    | "alerts.mqtt"
                    | "auth.cookie_secure"
                    | "auth.metrics_public",
                ) => "true",
                (EnvValueKind::Literal, "alerts.poll_interval_ms" | "alerts.retry_max_ms") => {
                    "5000"
                }
                (EnvValueKind::Literal, "alerts.timeout_ms" | "commands.ack_timeout_ms") => "1000",
                (EnvValueKind::Literal, "clock.speed") => "60.5",
                (EnvValueKind::Literal, "mqtt.max_packet_bytes") => "100000",
                (EnvValueKind::Literal, "broker.connection_timeout_ms") => "1000",
                (EnvValueKind::Literal, "mqtt.keep_alive_s") => "10",
                (EnvValueKind::Literal, "mqtt.reconnect_max_ms") => "60000",
                (EnvValueKind::Literal, "http.max_body_bytes") => "100000",
                (EnvValueKind::Literal, "http.idle_timeout_ms") => "1000",
                (EnvValueKind::Literal, _) => "2",
            };
            let var = env_var_name(key);
            let r = load("", &[(var.as_str(), value)]);
            assert!(r.is_ok(), "{var}={value}: {:?}", r.err());
        }
    }

    #[test]
    fn urls() {
        let u = MqttUrl::parse("mqtt://user:pw@broker.local:1884").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.username.as_deref()),
            ("broker.local", 1884, Some("user"))
        );
        assert_eq!(u.password.as_deref(), Some("pw"));
        assert_eq!(MqttUrl::parse("tcp://h").unwrap().port, 1883);
        assert_eq!(MqttUrl::parse("mqtt://[::1]:2000").unwrap().host, "::1");
        assert!(MqttUrl::parse("http://h").is_err());
        assert!(MqttUrl::parse("mqtt://").is_err());
        assert!(MqttUrl::parse("mqtt://h:notaport").is_err());
    }

    #[test]
    fn sample_config_is_the_defaults() {
        let text = include_str!("../streetgate.sample.toml");
        let c = load(text, &[]).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn automation_sections() {
        let c = load(
            "[rules]\nfull_pct = 75.0\n[rules.lighting]\ntarget_back = 0.96\n\
             [cases.limits_min]\nbin_full = 120\n\
             [routing.teams.\"320508001001001\"]\nbin_full = \"sanitation-team-3\"\n\
             [modbus]\npoll_interval_ms = 2000\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.rules.full_pct, 75.0);
        assert_eq!(c.rules.lighting.target_back, 0.96);
        let p = c.cases.policy();
        assert_eq!(p.limits_min[&CaseType::BinFull], 120);
        // Types not listed keep their defaults.
        assert_eq!(
            p.limits_min[&CaseType::ManholeCover],
            CasePolicy::default().limits_min[&CaseType::ManholeCover]
        );
        let r = c.routing.router();
        assert_eq!(
            r.route("320508001001001", CaseType::BinFull),
            Some("sanitation-team-3")
        );
        assert_eq!(
            r.route("320508001001001", CaseType::LampFault),
            Some("lighting")
        );
        assert_eq!(r.route("elsewhere", CaseType::BinFull), Some("sanitation"));
        assert_eq!(c.modbus.settings().poll_interval, Duration::from_secs(2));

        let e = load("[rules]\nfull_pct = 120.0\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("rules.full_pct = 120") && e.contains("overflow_pct"),
            "{e}"
        );
        let e = load("[cases.limits_min]\nbin_fire = 0\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("cases.limits_min.bin_fire = 0"), "{e}");
        let e = load("[cases.limits_min]\nbin_burning = 5\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("bin_burning") && e.contains("bin_fire"), "{e}");
        let e = load("[rules.lighting]\ntarget_main = 99\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("rules.lighting.target_main = 99") && e.contains("0.99"),
            "{e}"
        );
    }

    #[test]
    fn redacted_round_trip() {
        let mut c = Config::default();
        c.mqtt.password = Some("secret".to_owned());
        let text = c.to_toml_redacted();
        assert!(!text.contains("secret"));
        let back = load(&text, &[]).unwrap();
        assert_eq!(back.http, c.http);
    }
}
