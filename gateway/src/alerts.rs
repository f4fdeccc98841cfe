//! Alerts: every case event goes to every sink, in order, at least once.
//!
//! The outbox is the case history itself: a transition is committed together with its case,
//! so an event can never be lost between the case store and the alert sinks, whatever crashes.
//! Each sink (the MQTT alerts topic, each webhook) runs its own task with its own cursor in the
//! store. It reads the events after its cursor, delivers each one with retries and exponential
//! back-off, and records the delivery (delivered, or failed after the last attempt) together
//! with the cursor's move, in one transaction. A gateway stopped mid-retry delivers that event
//! again after the restart: receivers deduplicate on `event_id`.
//!
//! Each sink runs two lanes, each with its own cursor: one for the events of urgent cases and
//! one for the rest, so an urgent alarm never waits behind an ordinary event being retried.
//! Both record deliveries under the sink's name, and neither delivers what the other recorded.

pub mod chat;
mod config;
pub mod message;
pub mod routing;

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
use routing::{QuietHours, SinkFilter, Suppression};

/// Name of the MQTT sink in delivery records.
pub const MQTT_SINK: &str = "mqtt";

/// Events read from the store per round.
const BATCH: u32 = 100;

/// Events a sink holds in memory during its quiet hours; past it, it stops reading until they
/// end.
const MAX_HELD: usize = 10_000;

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
        "action": event.entry.action,
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
            "supervision_level": c.supervision_level,
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
        config: Box<WebhookConfig>,
        http: reqwest::Client,
        /// For the times in messages for people.
        utc_offset_min: i32,
    },
    Email {
        config: Box<EmailConfig>,
        transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
        utc_offset_min: i32,
    },
}

/// Which events a sink gets, and when.
#[derive(Debug, Clone, Default)]
struct SinkRoute {
    filter: SinkFilter,
    recipient: Option<crate::cases::Recipient>,
    quiet_hours: Option<QuietHours>,
}

impl Sink {
    fn route(&self, config: &AlertsConfig) -> SinkRoute {
        match self {
            Self::Mqtt(_) => SinkRoute {
                filter: config.mqtt_filter.clone(),
                ..SinkRoute::default()
            },
            Self::Webhook { config: w, .. } => SinkRoute {
                filter: w.filter.clone(),
                recipient: w.recipient,
                quiet_hours: w.quiet_hours,
            },
            Self::Email { config: e, .. } => SinkRoute {
                filter: e.filter.clone(),
                recipient: e.recipient,
                quiet_hours: e.quiet_hours,
            },
        }
    }

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
                config: Box::new(w.clone()),
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
                config: Box::new(e.clone()),
                transport,
                utc_offset_min: config.utc_offset_min,
            }),
            Err(error) => {
                tracing::error!(sink = %e.name, %error, "cannot set up the e-mail sink; disabled");
            }
        }
    }
    // Each sink has two lanes: urgent events never wait behind ordinary ones being retried.
    sinks
        .into_iter()
        .flat_map(|sink| {
            [(sink.clone(), Lane::Urgent), (sink, Lane::Ordinary)].map(|(sink, lane)| {
                tokio::spawn(run_sink(
                    sink,
                    lane,
                    config.clone(),
                    Arc::clone(store),
                    Arc::clone(metrics),
                    clock,
                    cancel.clone(),
                ))
            })
        })
        .collect()
}

/// Which events of a sink a task delivers. Both lanes record deliveries under the sink's name;
/// each has its own cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// Events of urgent cases (cursor `{sink}#urgent`), never held by quiet hours, never behind
    /// an ordinary event that is being retried.
    Urgent,
    /// Every other event (cursor `{sink}`), and an urgent case's event that the urgent lane
    /// passed while the case was not urgent yet.
    Ordinary,
}

impl Lane {
    fn cursor_name(self, sink: &str) -> String {
        match self {
            Self::Urgent => format!("{sink}#urgent"),
            Self::Ordinary => sink.to_owned(),
        }
    }
}

/// Whether `lane` delivers `event` (its other conditions aside). A case's urgency only ever
/// goes up, so an event the urgent lane has not reached yet and sees urgent now, it will see
/// urgent too: the ordinary lane leaves it alone. An event of an urgent case the urgent lane
/// has passed without recording it (the case was not urgent then) is the ordinary lane's. An
/// event recorded already (by the other lane) is skipped.
async fn lane_takes(
    lane: Lane,
    event: &CaseEvent,
    sink: &str,
    store: &dyn Store,
) -> crate::store::StoreResult<bool> {
    let id = event.event_id;
    match lane {
        Lane::Urgent => Ok(event.case.urgent && !recorded(store, sink, id).await?),
        Lane::Ordinary if !event.case.urgent => Ok(true),
        Lane::Ordinary => {
            let urgent_cursor = store.alert_cursor(&Lane::Urgent.cursor_name(sink)).await?;
            Ok(urgent_cursor >= id && !recorded(store, sink, id).await?)
        }
    }
}

/// Whether `sink` has a delivery record of event `id`.
async fn recorded(store: &dyn Store, sink: &str, id: i64) -> crate::store::StoreResult<bool> {
    store.delivery_recorded(sink, id).await
}

async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = cancel.cancelled() => false,
    }
}

async fn run_sink(
    sink: Sink,
    lane: Lane,
    config: AlertsConfig,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    clock: Clock,
    cancel: CancellationToken,
) {
    let name = sink.name().to_owned();
    let cursor_name = lane.cursor_name(&name);
    let poll = Duration::from_millis(config.poll_interval_ms);
    let timeout = Duration::from_millis(config.timeout_ms);
    let mut cursor = loop {
        match store.alert_cursor(&cursor_name).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::error!(sink = %name, error = %e, "reading the alert cursor");
                if !sleep_or_cancel(poll * 10, &cancel).await {
                    return;
                }
            }
        }
    };
    // Events after the cursor already recorded: delivered while an earlier event was held.
    let mut done_ahead: std::collections::BTreeSet<i64> = loop {
        match store.recorded_events_after(&name, cursor).await {
            Ok(ids) => break ids.into_iter().collect(),
            Err(e) => {
                tracing::error!(sink = %name, error = %e, "reading the sink's deliveries");
                if !sleep_or_cancel(poll * 10, &cancel).await {
                    return;
                }
            }
        }
    };
    tracing::info!(sink = %name, ?lane, after_event = cursor, "alert sink started");
    let route = sink.route(&config);
    // Everything up to `cursor` is done; `read_upto` is the last event read; `held` are events
    // of cases that are not urgent, read in quiet hours, in order: the cursor stays before the
    // first of them until they are sent.
    let mut read_upto = cursor;
    let mut held: std::collections::VecDeque<CaseEvent> = std::collections::VecDeque::new();
    let mut suppression = Suppression::default();
    let mut persisted = cursor;
    'rounds: loop {
        if cancel.is_cancelled() {
            break;
        }
        let quiet = lane == Lane::Ordinary
            && route
                .quiet_hours
                .is_some_and(|q| q.contains(clock.now_ms(), config.utc_offset_min));
        if quiet && held.len() >= MAX_HELD {
            // Holding more would only grow memory: the rest waits in the store, read in order
            // after the quiet hours (the cursor is before the first event held).
            if !sleep_or_cancel(poll * 10, &cancel).await {
                break;
            }
            continue;
        }
        let mut work: Vec<CaseEvent> = Vec::new();
        if !quiet && !held.is_empty() {
            tracing::info!(sink = %name, events = held.len(), "quiet hours over: sending the events held");
            work.extend(held.drain(..));
        }
        match store.case_events_after(read_upto, BATCH).await {
            Ok(events) => {
                if let Some(last) = events.last() {
                    read_upto = last.event_id;
                }
                work.extend(events);
            }
            Err(e) => {
                tracing::error!(sink = %name, error = %e, "reading case events");
                if !sleep_or_cancel(poll * 10, &cancel).await {
                    break;
                }
                continue;
            }
        }
        if work.is_empty() {
            if !sleep_or_cancel(poll, &cancel).await {
                break;
            }
            continue;
        }
        for event in work {
            let id = event.event_id;
            let takes = loop {
                match lane_takes(lane, &event, &name, store.as_ref()).await {
                    Ok(takes) => break takes,
                    Err(e) => {
                        tracing::error!(sink = %name, error = %e, "reading the sink's deliveries");
                        if !sleep_or_cancel(poll * 10, &cancel).await {
                            break 'rounds;
                        }
                    }
                }
            };
            let wanted = !done_ahead.remove(&id)
                && takes
                && route.filter.passes(&event)
                && routing::reaches(route.recipient, &event);
            if wanted && quiet && !event.case.urgent {
                held.push_back(event);
                continue;
            }
            let next_cursor = held.front().map_or(id, |h| h.event_id - 1);
            if !wanted || suppression.repeated(&event) {
                cursor = cursor.max(next_cursor);
                continue;
            }
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
            // skip (a delivered event recorded late is better than a silent gap). The urgent
            // lane's cursor moves after its record: an event recorded but not passed is skipped
            // as recorded.
            loop {
                let recorded = match lane {
                    Lane::Ordinary => store.record_delivery_at(&record, next_cursor).await,
                    Lane::Urgent => match store.record_delivery_at(&record, 0).await {
                        Ok(()) => store.set_alert_cursor(&cursor_name, next_cursor).await,
                        Err(e) => Err(e),
                    },
                };
                match recorded {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::error!(sink = %name, error = %e, "recording an alert delivery");
                        if !sleep_or_cancel(poll * 10, &cancel).await {
                            break 'rounds;
                        }
                    }
                }
            }
            cursor = cursor.max(next_cursor);
            persisted = persisted.max(next_cursor);
        }
        // Events passed over (not for this sink) move the stored cursor once per round.
        if cursor > persisted {
            match store.set_alert_cursor(&cursor_name, cursor).await {
                Ok(()) => persisted = cursor,
                Err(e) => tracing::warn!(sink = %name, error = %e, "moving the alert cursor"),
            }
        }
    }
    tracing::info!(sink = %name, "alert sink stopped");
}
