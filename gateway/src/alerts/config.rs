//! `[alerts]` and its webhooks.

use serde::{Deserialize, Serialize};

use crate::settings::{Checked, invalid};

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

impl AlertsConfig {
    /// Check the section.
    pub fn validate(&self) -> Checked {
        let a = self;
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
            if !name_ok || w.name == super::MQTT_SINK {
                return Err(invalid(
                    format!("{key}.name"),
                    &w.name,
                    "1 to 64 letters, digits, '-' or '_', not \"mqtt\"",
                ));
            }
            if !names.insert(w.name.as_str()) {
                return Err(invalid(
                    format!("{key}.name"),
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
                    format!("{key}.url"),
                    &w.url,
                    "an http:// or https:// URL",
                ));
            }
        }
        Ok(())
    }
}
