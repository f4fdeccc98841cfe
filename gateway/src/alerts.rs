//! Alerts: every case event goes to every sink, in order, at least once.
//!
//! The outbox is the case history itself: a transition is committed together with its case,
//! so an event can never be lost between the case store and the alert sinks, whatever crashes.
//! Each sink (the MQTT alerts topic, each webhook) runs its own task with its own cursor in the
//! store. It reads the events after its cursor, delivers each one with retries and exponential
//! back-off, and records the delivery (delivered, or failed after the last attempt) together
//! with the cursor's move, in one transaction. A gateway stopped mid-retry delivers that event
//! again after the restart: receivers deduplicate on `event_id`.

pub mod chat;
mod config;
pub mod message;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{AlertsConfig, EmailConfig, Language, SmtpSecurity, WebhookConfig, WebhookKind};

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::mqtt::Backoff;
use crate::publisher::{PublishError, Publisher};
use crate::store::{CaseEvent, DeliveryRecord, DeliveryStatus, Store};

/// Name of the MQTT sink in delivery records.
pub const MQTT_SINK: &str = "mqtt";

/// Events read from the store per round.
const BATCH: u32 = 100;

/// The alerts topic of a case event: `streetgate/v1/_alerts/{grid}/{case_type}`.
pub fn topic(event: &CaseEvent) -> String {
    format!(
        "{}/{}/{}",
        streetgate_protocols::topic::ALERTS_PREFIX,
        event.case.grid,
        serde_json::to_value(event.case.case_type)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "other".to_owned())
    )
}

/// The JSON document of a case event, as published and POSTed.
pub fn payload(event: &CaseEvent) -> serde_json::Value {
    let c = &event.case;
    json!({
        "event_id": event.event_id,
        "case_id": c.id,
        "at_ms": event.entry.at_ms,
        "actor": event.entry.actor,
        "from": event.entry.from,
        "to": event.entry.to,
        "note": event.entry.note,
        "case": {
            "id": c.id,
            "type": c.case_type,
            "source": c.source,
            "subject": c.subject_key,
            "condition": c.condition_key,
            "grid": c.grid,
            "team": c.team,
            "state": c.state,
            "urgent": c.urgent,
            "devices": c.devices,
            "detail": c.detail,
            "opened_ms": c.opened_ms,
            "due_ms": c.due_ms,
            "rework_count": c.rework_count,
        },
    })
}

/// Why one delivery attempt failed.
#[derive(Debug)]
enum AttemptError {
    /// Worth another attempt (network, timeout, 408/429/5xx).
    Retry { error: String, status: Option<u16> },
    /// Will not succeed by retrying (other 4xx; an MQTT message that can never be published).
    Permanent { error: String, status: Option<u16> },
}

/// Where events go.
#[derive(Debug, Clone)]
enum Sink {
    Mqtt(Arc<Publisher>),
    Webhook {
        config: WebhookConfig,
        http: reqwest::Client,
        /// For the times in messages for people.
        utc_offset_min: i32,
    },
    Email {
        config: EmailConfig,
        transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
        utc_offset_min: i32,
    },
}

impl Sink {
    fn name(&self) -> &str {
        match self {
            Self::Mqtt(_) => MQTT_SINK,
            Self::Webhook { config, .. } => &config.name,
            Self::Email { config, .. } => &config.name,
        }
    }

    async fn deliver(
        &self,
        event: &CaseEvent,
        timeout: Duration,
    ) -> Result<Option<u16>, AttemptError> {
        let body = payload(event).to_string();
        match self {
            Self::Mqtt(publisher) => publisher
                .publish(&topic(event), body.into_bytes(), false, timeout)
                .await
                .map(|()| None)
                .map_err(|e| match e {
                    PublishError::Invalid(_) => AttemptError::Permanent {
                        error: e.to_string(),
                        status: None,
                    },
                    _ => AttemptError::Retry {
                        error: e.to_string(),
                        status: None,
                    },
                }),
            Self::Webhook {
                config,
                http,
                utc_offset_min,
            } if config.kind != WebhookKind::Generic => {
                let message = message::render(
                    event,
                    config.language,
                    config.console_url.as_deref(),
                    *utc_offset_min,
                );
                let chat =
                    chat::request(config, &message, crate::clock::wall_ms()).map_err(|error| {
                        AttemptError::Permanent {
                            error,
                            status: None,
                        }
                    })?;
                let response = http
                    .post(&chat.url)
                    .timeout(timeout)
                    .json(&chat.body)
                    .send()
                    .await
                    .map_err(|e| AttemptError::Retry {
                        error: error_chain(&e),
                        status: None,
                    })?;
                let status = response.status().as_u16();
                match status {
                    200..=299 => {}
                    408 | 429 | 500..=599 => {
                        return Err(AttemptError::Retry {
                            error: format!("HTTP {status}"),
                            status: Some(status),
                        });
                    }
                    _ => {
                        return Err(AttemptError::Permanent {
                            error: format!("HTTP {status}"),
                            status: Some(status),
                        });
                    }
                }
                let body = response.text().await.map_err(|e| AttemptError::Retry {
                    error: error_chain(&e),
                    status: Some(status),
                })?;
                match chat::answer(config.kind, &body) {
                    chat::Answer::Ok => Ok(Some(status)),
                    chat::Answer::RateLimited(error) => Err(AttemptError::Retry {
                        error,
                        status: Some(status),
                    }),
                    chat::Answer::Refused(error) => Err(AttemptError::Permanent {
                        error,
                        status: Some(status),
                    }),
                }
            }
            Self::Email {
                config,
                transport,
                utc_offset_min,
            } => {
                use lettre::AsyncTransport as _;
                let message = message::render(
                    event,
                    config.language,
                    config.console_url.as_deref(),
                    *utc_offset_min,
                );
                let mail = email(config, &message).map_err(|error| AttemptError::Permanent {
                    error,
                    status: None,
                })?;
                match tokio::time::timeout(timeout, transport.send(mail)).await {
                    Err(_) => Err(AttemptError::Retry {
                        error: format!("the SMTP server did not finish within {timeout:?}"),
                        status: None,
                    }),
                    Ok(Ok(response)) => Ok(Some(u16::from(response.code()))),
                    Ok(Err(e)) if e.is_permanent() => Err(AttemptError::Permanent {
                        error: error_chain(&e),
                        status: e.status().map(u16::from),
                    }),
                    Ok(Err(e)) => Err(AttemptError::Retry {
                        error: error_chain(&e),
                        status: e.status().map(u16::from),
                    }),
                }
            }
            Self::Webhook { config, http, .. } => {
                let mut request = http
                    .post(&config.url)
                    .timeout(timeout)
                    .header("content-type", "application/json")
                    .header("x-streetgate-event", event.event_id.to_string())
                    .body(body);
                if let Some(auth) = &config.authorization {
                    request = request.header("authorization", auth);
                }
                match request.send().await {
                    Err(e) => Err(AttemptError::Retry {
                        error: error_chain(&e),
                        status: None,
                    }),
                    Ok(response) => {
                        let status = response.status().as_u16();
                        match status {
                            200..=299 => Ok(Some(status)),
                            408 | 429 | 500..=599 => Err(AttemptError::Retry {
                                error: format!("HTTP {status}"),
                                status: Some(status),
                            }),
                            _ => Err(AttemptError::Permanent {
                                error: format!("HTTP {status}"),
                                status: Some(status),
                            }),
                        }
                    }
                }
            }
        }
    }
}

/// The e-mail for a message: subject the title, the markdown as plain text (UTF-8).
fn email(config: &EmailConfig, message: &message::Message) -> Result<lettre::Message, String> {
    let from: lettre::message::Mailbox = config
        .from
        .parse()
        .map_err(|e| format!("from {}: {e}", config.from))?;
    let mut builder = lettre::Message::builder()
        .from(from)
        .subject(message.title.clone());
    for to in &config.to {
        builder = builder.to(to.parse().map_err(|e| format!("to {to}: {e}"))?);
    }
    builder
        .header(lettre::message::header::ContentType::TEXT_PLAIN)
        .body(message.markdown.clone())
        .map_err(|e| e.to_string())
}

/// An SMTP transport for an e-mail sink.
fn smtp_transport(
    config: &EmailConfig,
    timeout: Duration,
) -> Result<lettre::AsyncSmtpTransport<lettre::Tokio1Executor>, String> {
    use lettre::AsyncSmtpTransport as T;
    let builder = match config.security {
        SmtpSecurity::None => T::<lettre::Tokio1Executor>::builder_dangerous(&config.server),
        SmtpSecurity::Starttls => T::<lettre::Tokio1Executor>::starttls_relay(&config.server)
            .map_err(|e| e.to_string())?,
        SmtpSecurity::Tls => {
            T::<lettre::Tokio1Executor>::relay(&config.server).map_err(|e| e.to_string())?
        }
    };
    let mut builder = builder.port(config.port).timeout(Some(timeout));
    if let Some(user) = &config.username {
        builder = builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
            user.clone(),
            config.password.clone().unwrap_or_default(),
        ));
    }
    Ok(builder.build())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// Start one task per sink: the MQTT alerts topic (when `alerts.mqtt` and a publisher is
/// given) and each webhook. They stop on `cancel`.
pub fn spawn(
    config: &AlertsConfig,
    publisher: Option<Arc<Publisher>>,
    store: &Arc<dyn Store>,
    metrics: &Arc<Metrics>,
    clock: Clock,
    cancel: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut sinks = Vec::new();
    if config.mqtt {
        if let Some(p) = publisher {
            sinks.push(Sink::Mqtt(p));
        }
    }
    if !config.webhooks.is_empty() {
        match reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.timeout_ms))
            .build()
        {
            Ok(http) => sinks.extend(config.webhooks.iter().map(|w| Sink::Webhook {
                config: w.clone(),
                http: http.clone(),
                utc_offset_min: config.utc_offset_min,
            })),
            Err(e) => {
                tracing::error!(error = %e, "cannot build the webhook HTTP client; webhooks disabled");
            }
        }
    }
    for e in &config.email {
        match smtp_transport(e, Duration::from_millis(config.timeout_ms)) {
            Ok(transport) => sinks.push(Sink::Email {
                config: e.clone(),
                transport,
                utc_offset_min: config.utc_offset_min,
            }),
            Err(error) => {
                tracing::error!(sink = %e.name, %error, "cannot set up the e-mail sink; disabled");
            }
        }
    }
    sinks
        .into_iter()
        .map(|sink| {
            tokio::spawn(run_sink(
                sink,
                config.clone(),
                Arc::clone(store),
                Arc::clone(metrics),
                clock,
                cancel.clone(),
            ))
        })
        .collect()
}

async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = cancel.cancelled() => false,
    }
}

async fn run_sink(
    sink: Sink,
    config: AlertsConfig,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    clock: Clock,
    cancel: CancellationToken,
) {
    let name = sink.name().to_owned();
    let poll = Duration::from_millis(config.poll_interval_ms);
    let timeout = Duration::from_millis(config.timeout_ms);
    let mut cursor = loop {
        match store.alert_cursor(&name).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::error!(sink = %name, error = %e, "reading the alert cursor");
                if !sleep_or_cancel(poll * 10, &cancel).await {
                    return;
                }
            }
        }
    };
    tracing::info!(sink = %name, after_event = cursor, "alert sink started");
    'rounds: loop {
        if cancel.is_cancelled() {
            break;
        }
        let events = match store.case_events_after(cursor, BATCH).await {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(sink = %name, error = %e, "reading case events");
                if !sleep_or_cancel(poll * 10, &cancel).await {
                    break;
                }
                continue;
            }
        };
        if events.is_empty() {
            if !sleep_or_cancel(poll, &cancel).await {
                break;
            }
            continue;
        }
        for event in events {
            let first_attempt_ms = clock.now_ms();
            let mut backoff = Backoff::new(
                Duration::from_millis(config.retry_min_ms),
                Duration::from_millis(config.retry_max_ms),
            );
            let mut attempts = 0u32;
            let (status, response_status, last_error) = loop {
                attempts += 1;
                match sink.deliver(&event, timeout).await {
                    Ok(code) => break (DeliveryStatus::Delivered, code, None),
                    Err(AttemptError::Permanent { error, status }) => {
                        break (DeliveryStatus::Failed, status, Some(error));
                    }
                    Err(AttemptError::Retry { error, status })
                        if attempts >= config.max_attempts =>
                    {
                        break (DeliveryStatus::Failed, status, Some(error));
                    }
                    Err(AttemptError::Retry { error, .. }) => {
                        metrics.alert_retries.fetch_add(1, Relaxed);
                        let delay = backoff.next_delay();
                        tracing::warn!(sink = %name, event = event.event_id, attempt = attempts, %error, retry_in_ms = delay.as_millis() as u64, "alert delivery failed; retrying");
                        // Stopping mid-retry records nothing: the event is delivered after the
                        // restart.
                        if !sleep_or_cancel(delay, &cancel).await {
                            break 'rounds;
                        }
                    }
                }
            };
            match status {
                DeliveryStatus::Delivered => metrics.alerts_delivered.fetch_add(1, Relaxed),
                DeliveryStatus::Failed => {
                    tracing::error!(sink = %name, event = event.event_id, case = event.case.id, attempts, error = ?last_error, "alert delivery failed; given up");
                    metrics.alerts_failed.fetch_add(1, Relaxed)
                }
            };
            let record = DeliveryRecord {
                id: 0,
                sink: name.clone(),
                event_id: event.event_id,
                case_id: event.case.id,
                status,
                attempts,
                response_status,
                last_error,
                first_attempt_ms,
                finished_ms: clock.now_ms(),
            };
            // The record and the cursor move together; if the store refuses, retry rather than
            // skip (a delivered event recorded late is better than a silent gap).
            loop {
                match store.record_delivery(&record).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::error!(sink = %name, error = %e, "recording an alert delivery");
                        if !sleep_or_cancel(poll * 10, &cancel).await {
                            break 'rounds;
                        }
                    }
                }
            }
            cursor = event.event_id;
        }
    }
    tracing::info!(sink = %name, "alert sink stopped");
}
