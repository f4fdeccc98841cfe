//! `[alerts]` and its webhooks.

use serde::{Deserialize, Serialize};

use super::routing::{QuietHours, SinkFilter};
use crate::cases::Recipient;
use crate::settings::{Checked, invalid};

/// `[alerts]`: every case event (each recorded transition) is delivered to each sink in order,
/// at least once, with a delivery record per event and sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Publish case events on `streetgate/v1/_alerts/{grid}/{case_type}` (QoS 1).
    pub mqtt: bool,
    /// Which events the MQTT alerts topic gets (none set: every event).
    #[serde(skip_serializing_if = "SinkFilter::is_empty")]
    pub mqtt_filter: SinkFilter,
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
    /// Offset of the city's time zone from UTC, minutes (480: China Standard Time), for the
    /// times in messages for people.
    pub utc_offset_min: i32,
    /// Webhooks: each receives every case event as a JSON POST.
    pub webhooks: Vec<WebhookConfig>,
    /// E-mail: each sends every case event to its recipients over SMTP.
    pub email: Vec<EmailConfig>,
}

/// `[[alerts.email]]`: case events by e-mail.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// Name, unique among the sinks.
    pub name: String,
    /// SMTP server host name.
    pub server: String,
    /// Port (587 for STARTTLS, 465 for TLS, 25 plain).
    pub port: u16,
    /// How the connection is protected.
    #[serde(default)]
    pub security: SmtpSecurity,
    /// User name, when the server wants one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Sender, `streetgate@city.example` or `Streetgate <streetgate@city.example>`.
    pub from: String,
    /// Recipients (a team's list).
    pub to: Vec<String>,
    /// Language of the messages.
    #[serde(default)]
    pub language: Language,
    /// Base URL of the console, for the case link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_url: Option<String>,
    /// Which events this sink gets (none set: every event).
    #[serde(default, skip_serializing_if = "SinkFilter::is_empty")]
    pub filter: SinkFilter,
    /// Whom this sink reaches (`team`, `supervisor`, `centre`): it gets the supervision (督办)
    /// events whose level tells them. Unset: every supervision event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<Recipient>,
    /// Quiet hours in the city's time (`alerts.utc_offset_min`), `"22:00-07:00"`: events of
    /// cases that are not urgent are held and sent, in order, when they end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
}

/// Protection of an SMTP connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// STARTTLS required (port 587).
    #[default]
    Starttls,
    /// TLS from the start (port 465).
    Tls,
    /// None: only for a relay on the same host or a test server.
    None,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            mqtt: true,
            mqtt_filter: SinkFilter::default(),
            poll_interval_ms: 500,
            retry_min_ms: 1000,
            retry_max_ms: 60_000,
            max_attempts: 8,
            timeout_ms: 5000,
            utc_offset_min: 480,
            webhooks: Vec::new(),
            email: Vec::new(),
        }
    }
}

/// `[[alerts.webhooks]]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Name, unique among the sinks (delivery records and metrics use it).
    pub name: String,
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// Value of the `Authorization` header, if the receiver wants one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<String>,
    /// What the receiver is: `generic` (the event's JSON), or a chat group robot that gets a
    /// readable message: `wecom` (企业微信), `dingtalk` (钉钉), `feishu` (飞书 / Lark).
    #[serde(default)]
    pub kind: WebhookKind,
    /// The robot's signing secret (`dingtalk`: 加签, `feishu`: 签名校验).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// A DingTalk robot's keyword (自定义关键词): every message carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyword: Option<String>,
    /// Language of the robots' messages.
    #[serde(default)]
    pub language: Language,
    /// Base URL of the console, for the case link in the robots' messages
    /// (`{console_url}/cases/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_url: Option<String>,
    /// Which events this sink gets (none set: every event).
    #[serde(default, skip_serializing_if = "SinkFilter::is_empty")]
    pub filter: SinkFilter,
    /// Whom this sink reaches (`team`, `supervisor`, `centre`): it gets the supervision (督办)
    /// events whose level tells them. Unset: every supervision event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<Recipient>,
    /// Quiet hours in the city's time (`alerts.utc_offset_min`), `"22:00-07:00"`: events of
    /// cases that are not urgent are held and sent, in order, when they end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
}

/// A webhook receiver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookKind {
    /// The event's JSON document, as on the MQTT alerts topic.
    #[default]
    Generic,
    /// A WeCom (企业微信) group robot: markdown message.
    Wecom,
    /// A DingTalk (钉钉) robot: markdown message, signed when `secret` is set.
    Dingtalk,
    /// A Feishu / Lark (飞书) bot: card with markdown, signed when `secret` is set.
    Feishu,
}

/// Language of a message for people.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    /// 简体中文.
    #[default]
    Zh,
    /// English.
    En,
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
        if !(-720..=840).contains(&a.utc_offset_min) {
            return Err(invalid(
                "alerts.utc_offset_min",
                a.utc_offset_min,
                "-720..=840 minutes (480 for China)",
            ));
        }
        a.mqtt_filter.validate("alerts.mqtt_filter")?;
        let mut names = std::collections::BTreeSet::new();
        for (i, w) in a.webhooks.iter().enumerate() {
            let key = format!("alerts.webhooks[{i}]");
            w.filter.validate(&format!("{key}.filter"))?;
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
            if w.secret.is_some() && !matches!(w.kind, WebhookKind::Dingtalk | WebhookKind::Feishu)
            {
                return Err(invalid(
                    format!("{key}.secret"),
                    "(hidden)",
                    "a signing secret only for kind = \"dingtalk\" or \"feishu\"",
                ));
            }
            if w.secret
                .as_deref()
                .is_some_and(|s| s.is_empty() || s.chars().any(char::is_control))
            {
                return Err(invalid(
                    format!("{key}.secret"),
                    "(hidden)",
                    "a non-empty secret without control characters",
                ));
            }
            if let Some(k) = &w.keyword
                && (w.kind != WebhookKind::Dingtalk || k.trim().is_empty() || k.len() > 64)
            {
                return Err(invalid(
                    format!("{key}.keyword"),
                    k,
                    "1 to 64 characters, for kind = \"dingtalk\" only",
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
        for (i, e) in a.email.iter().enumerate() {
            let key = format!("alerts.email[{i}]");
            e.filter.validate(&format!("{key}.filter"))?;
            let name_ok = !e.name.is_empty()
                && e.name.len() <= 64
                && e.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !name_ok || e.name == super::MQTT_SINK || !names.insert(e.name.as_str()) {
                return Err(invalid(
                    format!("{key}.name"),
                    &e.name,
                    "1 to 64 letters, digits, '-' or '_', not \"mqtt\", no other sink's name",
                ));
            }
            if e.server.trim().is_empty() || e.port == 0 {
                return Err(invalid(
                    format!("{key}.server"),
                    format!("{}:{}", e.server, e.port),
                    "the SMTP server's host name and port",
                ));
            }
            for (field, address) in
                std::iter::once(("from", &e.from)).chain(e.to.iter().map(|t| ("to", t)))
            {
                if address.parse::<lettre::message::Mailbox>().is_err() {
                    return Err(invalid(
                        format!("{key}.{field}"),
                        address,
                        "an e-mail address, name@host or Name <name@host>",
                    ));
                }
            }
            if e.to.is_empty() {
                return Err(invalid(format!("{key}.to"), "[]", "at least one recipient"));
            }
            if e.password.is_some() && e.username.is_none() {
                return Err(invalid(
                    format!("{key}.username"),
                    "(unset)",
                    "a user name with the password",
                ));
            }
        }
        Ok(())
    }
}
