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

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::alerts::{AlertsConfig, WebhookConfig};
pub use crate::api::{DEFAULT_HTTP_LISTEN, HttpConfig};
pub use crate::auth::AuthConfig;
pub use crate::broker::{BrokerConfig, DEFAULT_BROKER_LISTEN};
pub use crate::cases::{CasesConfig, RoutingConfig};
pub use crate::clock::ClockConfig;
pub use crate::commands::CommandsConfig;
pub use crate::evaluation::EvaluationConfig;
pub use crate::ingest::modbus::ModbusConfig;
pub use crate::inventory::InventoryConfig;
pub use crate::mqtt::{MqttConfig, MqttUrl};
pub use crate::pipeline::PipelineConfig;
use crate::rules::RulesConfig;
pub use crate::settings::redact_url;
use crate::settings::{Invalid, invalid};
pub use crate::store::{StoreBackend, StoreConfig};

/// Prefix of every environment override.
pub const ENV_PREFIX: &str = "STREETGATE_";

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

impl From<Invalid> for ConfigError {
    fn from(i: Invalid) -> Self {
        Self::Invalid {
            key: i.key,
            value: i.value,
            allowed: i.allowed,
            env_var: None,
        }
    }
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
    /// Active/standby pair.
    pub ha: crate::ha::HaConfig,
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
    /// Dispatch routing: grid + case type → team, and the second dispatch's teams.
    pub routing: RoutingConfig,
    /// Supervision (督办) of late cases, on-site time limits of urgent cases.
    pub supervision: crate::cases::SupervisionConfig,
    /// Case events on the MQTT alerts topic and to webhooks.
    pub alerts: AlertsConfig,
    /// Lamp commands sent through the API.
    pub commands: CommandsConfig,
    /// The clock: wall time, or a simulation's faster clock.
    pub clock: ClockConfig,
    /// Readings to a time-series database (InfluxDB v2 write API); off unless `url` is set.
    pub timeseries: crate::outputs::influx::TimeseriesConfig,
    /// Sign-in sessions, cookies, and what is served without signing in.
    pub auth: AuthConfig,
    /// The web console: map tiles and centre, the city's time zone.
    pub console: crate::console::ConsoleConfig,
    /// The monthly evaluation: ranking, and the bulletin written each month.
    pub evaluation: EvaluationConfig,
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
    ("inventory.max_concurrent_imports", EnvValueKind::Literal),
    ("http.idle_timeout_ms", EnvValueKind::Literal),
    ("http.tls_cert", EnvValueKind::Text),
    ("http.tls_key", EnvValueKind::Text),
    ("broker.embedded", EnvValueKind::Literal),
    ("broker.auth", EnvValueKind::Text),
    ("broker.listen", EnvValueKind::Text),
    ("broker.max_connections", EnvValueKind::Literal),
    ("broker.max_payload_bytes", EnvValueKind::Literal),
    ("broker.max_inflight", EnvValueKind::Literal),
    ("broker.max_queued_messages", EnvValueKind::Literal),
    ("broker.max_retained", EnvValueKind::Literal),
    ("broker.connection_timeout_ms", EnvValueKind::Literal),
    ("broker.tls_listen", EnvValueKind::Text),
    ("broker.tls_cert", EnvValueKind::Text),
    ("broker.tls_key", EnvValueKind::Text),
    ("broker.tls_client_ca", EnvValueKind::Text),
    ("mqtt.url", EnvValueKind::Text),
    ("mqtt.client_id", EnvValueKind::Text),
    ("mqtt.username", EnvValueKind::Text),
    ("mqtt.password", EnvValueKind::Text),
    ("mqtt.publisher_username", EnvValueKind::Text),
    ("mqtt.shared_group", EnvValueKind::Text),
    ("mqtt.keep_alive_s", EnvValueKind::Literal),
    ("mqtt.reconnect_min_ms", EnvValueKind::Literal),
    ("mqtt.reconnect_max_ms", EnvValueKind::Literal),
    ("mqtt.max_payload_bytes", EnvValueKind::Literal),
    ("mqtt.max_packet_bytes", EnvValueKind::Literal),
    ("mqtt.inflight", EnvValueKind::Literal),
    ("store.backend", EnvValueKind::Text),
    ("store.path", EnvValueKind::Text),
    ("store.url", EnvValueKind::Text),
    ("ha.enabled", EnvValueKind::Literal),
    ("ha.node", EnvValueKind::Text),
    ("ha.takeover_s", EnvValueKind::Literal),
    ("store.max_connections", EnvValueKind::Literal),
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
    ("alerts.utc_offset_min", EnvValueKind::Literal),
    ("commands.ack_timeout_ms", EnvValueKind::Literal),
    ("clock.speed", EnvValueKind::Literal),
    ("clock.start_ms", EnvValueKind::Literal),
    ("clock.anchor_wall_ms", EnvValueKind::Literal),
    ("auth.session_idle_s", EnvValueKind::Literal),
    ("auth.session_absolute_s", EnvValueKind::Literal),
    ("auth.cookie_secure", EnvValueKind::Literal),
    ("auth.metrics_public", EnvValueKind::Literal),
    ("auth.audit_retention_days", EnvValueKind::Literal),
    ("timeseries.url", EnvValueKind::Text),
    ("timeseries.org", EnvValueKind::Text),
    ("timeseries.bucket", EnvValueKind::Text),
    ("timeseries.token", EnvValueKind::Text),
    ("console.tile_url", EnvValueKind::Text),
    ("evaluation.report_dir", EnvValueKind::Text),
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
        // Each section checks itself…
        self.http.validate()?;
        self.broker.validate()?;
        self.mqtt.validate()?;
        self.store.validate()?;
        self.pipeline.validate()?;
        self.modbus.validate()?;
        self.inventory.validate()?;
        self.rules.validate()?;
        self.cases.validate()?;
        self.routing.validate()?;
        self.supervision.validate()?;
        self.alerts.validate()?;
        self.commands.validate()?;
        self.clock.validate()?;
        self.timeseries.validate()?;
        self.auth.validate()?;
        self.console.validate()?;
        self.evaluation.validate()?;
        // …and what spans sections is checked here.
        if self.mqtt.url.is_none() && !self.broker_embedded() {
            return Err(invalid(
                "mqtt.url",
                "(unset)",
                "the external broker's address, e.g. mqtt://127.0.0.1:1883 (required when broker.embedded = false)",
            )
            .into());
        }
        self.ha
            .validate(
                self.store.backend == StoreBackend::Postgres,
                self.broker_embedded(),
            )
            .map_err(|(key, value, allowed)| invalid(key, value, allowed))?;
        Ok(())
    }

    /// The effective configuration as TOML, with the password masked.
    pub fn to_toml_redacted(&self) -> String {
        let mut shown = self.clone();
        if shown.mqtt.password.is_some() {
            shown.mqtt.password = Some("***".to_owned());
        }
        if let Some(url) = &shown.store.url {
            shown.store.url = Some(redact_url(url));
        }
        if shown.timeseries.token.is_some() {
            shown.timeseries.token = Some("***".to_owned());
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cases::CasePolicy;
    use crate::model::CaseType;

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
    fn postgres_needs_a_url_and_its_password_is_never_shown() {
        let e = load("[store]\nbackend = \"postgres\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("store.url"), "{e}");
        let c = load(
            "[store]\nbackend = \"postgres\"\n",
            &[("STREETGATE_STORE_URL", "postgres://sg:s3cret@db:5432/city")],
        )
        .unwrap();
        assert_eq!(c.store.backend, StoreBackend::Postgres);
        let shown = c.to_toml_redacted();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("postgres://sg:***@db:5432/city"), "{shown}");
        assert_eq!(redact_url("postgres://db/city"), "postgres://db/city");
        assert_eq!(redact_url("postgres://u@db/x:y@z"), "postgres://u@db/x:y@z");
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

    /// A CA and a certificate for 127.0.0.1 signed by it, as PEM files in `dir`:
    /// (ca.pem, cert.pem, key.pem).
    fn tls_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let files = (
            dir.join("ca.pem"),
            dir.join("cert.pem"),
            dir.join("key.pem"),
        );
        std::fs::write(&files.0, ca_cert.pem()).unwrap();
        std::fs::write(&files.1, cert.pem()).unwrap();
        std::fs::write(&files.2, key.serialize_pem()).unwrap();
        files
    }

    #[test]
    fn tls_files_are_checked_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = tls_files(dir.path());
        let (ca, cert, key) = (ca.display(), cert.display(), key.display());
        let c = load(
            &format!("[http]\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n"),
            &[],
        )
        .unwrap();
        assert!(c.http.tls_enabled());
        let e = load(&format!("[http]\ntls_cert = \"{cert}\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("http.tls_key = (unset)") && e.contains("both"),
            "{e}"
        );
        let e = load(
            &format!("[http]\ntls_cert = \"{cert}\"\ntls_key = \"/nonexistent/key.pem\"\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("http.tls_key = /nonexistent/key.pem") && e.contains("cannot read"),
            "{e}"
        );
        // A key in place of the certificate, a certificate in place of the key.
        let e = load(
            &format!("[http]\ntls_cert = \"{key}\"\ntls_key = \"{cert}\"\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("http.tls_cert") && e.contains("no CERTIFICATE"),
            "{e}"
        );
        // The CA's certificate with the server's key: they do not match.
        let e = load(
            &format!("[http]\ntls_cert = \"{ca}\"\ntls_key = \"{key}\"\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("http.tls_key") && e.contains("private key of"),
            "{e}"
        );

        let broker = format!(
            "[broker]\ntls_listen = \"127.0.0.1:0\"\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n"
        );
        load(&broker, &[]).unwrap();
        load(&format!("{broker}tls_client_ca = \"{ca}\"\n"), &[]).unwrap();
        let e = load(&format!("{broker}tls_client_ca = \"{key}\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("broker.tls_client_ca") && e.contains("no CERTIFICATE"),
            "{e}"
        );
        let e = load("[broker]\ntls_listen = \"127.0.0.1:8883\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("broker.tls_cert = (unset)"), "{e}");
        let e = load(&format!("[broker]\ntls_cert = \"{cert}\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("broker.tls_listen = (unset)"), "{e}");
        let e = load("", &[("STREETGATE_BROKER_TLS_LISTEN", "8883")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("broker.tls_listen") && e.contains("STREETGATE_BROKER_TLS_LISTEN"),
            "{e}"
        );
    }

    #[test]
    fn every_env_key_exists() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = tls_files(dir.path());
        let (ca, cert, key) = (
            ca.display().to_string(),
            cert.display().to_string(),
            key.display().to_string(),
        );
        for (key_name, kind) in ENV_KEYS {
            // TLS keys go with the others of their listener.
            let mut env: Vec<(String, String)> = match key_name.split_once(".tls_") {
                Some((section, _)) => {
                    let mut env = vec![
                        (env_var_name(&format!("{section}.tls_cert")), cert.clone()),
                        (env_var_name(&format!("{section}.tls_key")), key.clone()),
                    ];
                    if section == "broker" {
                        env.push((env_var_name("broker.tls_listen"), "127.0.0.1:0".into()));
                    }
                    env
                }
                None => Vec::new(),
            };
            let value = match (kind, *key_name) {
                (_, "http.tls_cert" | "broker.tls_cert") => cert.as_str(),
                (_, "http.tls_key" | "broker.tls_key") => key.as_str(),
                (_, "broker.tls_client_ca") => ca.as_str(),
                (_, "store.backend") => "sqlite",
                (_, "broker.auth") => "open",
                (_, "mqtt.url") => "mqtt://h:1",
                (_, "timeseries.url") => "http://h:1",
                (_, "console.tile_url") => "https://h/{z}/{x}/{y}.png",
                (_, k) if k.ends_with("listen") => "127.0.0.1:1",
                (EnvValueKind::Text, _) => "x",
                (
                    EnvValueKind::Literal,
                    "broker.embedded"
                    | "alerts.mqtt"
                    | "auth.cookie_secure"
                    | "auth.metrics_public",
                ) => "true",
                // [ha] needs PostgreSQL and an external broker: off here.
                (EnvValueKind::Literal, "ha.enabled") => "false",
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
            let var = env_var_name(key_name);
            env.retain(|(v, _)| *v != var);
            env.push((var.clone(), value.to_owned()));
            let r = Config::from_parts(Some(""), "test.toml", env);
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
