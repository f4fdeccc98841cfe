//! Alert deliveries: each sink's cursor through the case events and the record of every
//! delivery.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreResult;
use crate::model::UnixMs;

/// Outcome of delivering one case event to one sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Acknowledged by the sink (PUBACK, or an HTTP 2xx).
    Delivered,
    /// Given up on after the last attempt (or refused for good).
    Failed,
}

/// A delivery record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryRecord {
    /// Row id (0 before insertion).
    pub id: i64,
    /// Sink name (`mqtt` or the webhook's name).
    pub sink: String,
    /// The case event.
    pub event_id: i64,
    /// Its case.
    pub case_id: i64,
    /// Outcome.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: u32,
    /// HTTP status of the last answer (webhooks).
    pub response_status: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// First attempt.
    pub first_attempt_ms: UnixMs,
    /// Delivered, or given up.
    pub finished_ms: UnixMs,
}

/// Alert sinks' cursors and delivery records.
#[async_trait]
pub trait DeliveryStore: Send + Sync {
    /// The last case event a sink is done with. A sink seen for the first time starts at the
    /// newest event: a new webhook is not flooded with the past.
    async fn alert_cursor(&self, sink: &str) -> StoreResult<i64>;
    /// Record a delivery and move the sink's cursor to its event, in one transaction.
    async fn record_delivery(&self, delivery: &DeliveryRecord) -> StoreResult<()> {
        self.record_delivery_at(delivery, delivery.event_id).await
    }
    /// Record a delivery and move the sink's cursor to `cursor` (never back), in one
    /// transaction. A sink holding earlier events (quiet hours) keeps its cursor before the
    /// first one it holds while it delivers later, urgent ones.
    async fn record_delivery_at(&self, delivery: &DeliveryRecord, cursor: i64) -> StoreResult<()>;
    /// Move a sink's cursor to `cursor` (never back) without a delivery: the events up to it
    /// were not for this sink (its filters), or are recorded already.
    async fn set_alert_cursor(&self, sink: &str, cursor: i64) -> StoreResult<()>;
    /// The events after `after` that a sink has a delivery record of: done, although its cursor
    /// is still before them (it held an earlier event).
    async fn recorded_events_after(&self, sink: &str, after: i64) -> StoreResult<Vec<i64>>;
    /// Whether a sink has a delivery record of an event.
    async fn delivery_recorded(&self, sink: &str, event_id: i64) -> StoreResult<bool>;
    /// Delivery records, newest first, optionally of one sink and/or status.
    async fn list_deliveries(
        &self,
        sink: Option<&str>,
        status: Option<DeliveryStatus>,
        limit: u32,
    ) -> StoreResult<Vec<DeliveryRecord>>;
}
