//! Process metrics as plain atomics, rendered in the Prometheus text exposition format.
//!
//! Counters are incremented on the hot path without locks: the label sets are fixed arrays
//! (transports, [`RejectReason`]s, [`ModbusErrorKind`]s).

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

pub use crate::ingest::reject::{ModbusErrorKind, RejectReason};

/// Transports counted by `streetgate_ingest_total`.
pub const TRANSPORTS: [&str; 3] = ["mqtt", "modbus-tcp", "modbus-rtu"];

/// Upper bounds of the rule-latency histogram buckets, seconds.
pub const LATENCY_BUCKETS_S: [f64; 10] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.01, 0.1,
];

/// A cumulative histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_S.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Record one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS_S.iter().position(|b| s <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_ns
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, bound) in self.buckets.iter().zip(LATENCY_BUCKETS_S) {
            cumulative += b.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_ns.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Every counter and gauge the gateway keeps in memory.
#[derive(Debug, Default)]
pub struct Metrics {
    ingest: [AtomicU64; TRANSPORTS.len()],
    rejected: [AtomicU64; RejectReason::ALL.len()],
    modbus_errors: [AtomicU64; ModbusErrorKind::ALL.len()],
    /// The embedded broker's counters.
    pub broker: std::sync::Arc<crate::broker::BrokerMetrics>,
    /// The time-series output's counters.
    pub timeseries: std::sync::Arc<crate::outputs::influx::TimeseriesMetrics>,
    /// Messages lost between two accepted sequence numbers.
    pub seq_gaps: AtomicU64,
    /// Device counters that restarted (reboots), told apart from losses.
    pub seq_restarts: AtomicU64,
    /// Messages from devices not in the inventory.
    pub unregistered_messages: AtomicU64,
    /// 1 while the MQTT client is connected.
    pub mqtt_connected: AtomicI64,
    /// 1 once the broker granted every subscription of the current connection.
    pub mqtt_subscribed: AtomicI64,
    /// MQTT connections established (first one included).
    pub mqtt_connections: AtomicU64,
    /// MQTT connection failures.
    pub mqtt_connection_errors: AtomicU64,
    /// Readings committed to the store (coalesced to the newest per device when no history is
    /// kept, so this counts readings handled, not rows written).
    pub store_readings: AtomicU64,
    /// Store transactions committed by the writer.
    pub store_batches: AtomicU64,
    /// Store writes that failed.
    pub store_errors: AtomicU64,
    /// The store is refusing writes now (1): readings and the cases they cause are held and
    /// retried, not acknowledged.
    pub store_write_failing: AtomicU64,
    /// Why the last store write failed, while it is failing.
    pub store_write_error: std::sync::Mutex<Option<String>>,
    /// Time spent in the rules per reading.
    pub rule_latency: Histogram,
    /// Condition events the rules emitted.
    pub condition_events: AtomicU64,
    /// Devices waiting out a last will in the fleet-wide outage in progress (0: none), during
    /// which no device is judged offline.
    pub fleet_outage_devices: AtomicU64,
    /// Fleet-wide outages recognised.
    pub fleet_outages: AtomicU64,
    /// What the automation did to cases (registered, supervised, ...), as of its last tick.
    pub automation: std::sync::Mutex<crate::automation::AutomationStats>,
    /// Modbus devices of the inventory not polled because `modbus.allowed_endpoints` or
    /// `modbus.allowed_serial` does not allow where they are.
    pub modbus_not_allowed: AtomicU64,
    /// Case events delivered to an alert sink.
    pub alerts_delivered: AtomicU64,
    /// Case events given up on by an alert sink.
    pub alerts_failed: AtomicU64,
    /// Alert delivery attempts that failed and were retried.
    pub alert_retries: AtomicU64,
    /// Lamp commands acknowledged by the device.
    pub commands_acked: AtomicU64,
    /// Lamp commands refused by the device, timed out or not sendable.
    pub commands_failed: AtomicU64,
}

/// Values read from the store at scrape time.
#[derive(Debug, Clone, Default)]
pub struct StoreGauges {
    /// Inventoried devices.
    pub devices: u64,
    /// Distinct unregistered devices seen.
    pub unregistered_devices: u64,
    /// Open cases by case type label.
    pub open_cases: Vec<(String, u64)>,
}

impl Metrics {
    /// A store write failed (it will be retried).
    pub fn store_write_failed(&self, error: &dyn std::fmt::Display) {
        self.store_errors.fetch_add(1, Relaxed);
        self.store_write_failing.store(1, Relaxed);
        *self
            .store_write_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error.to_string());
    }

    /// A store write succeeded.
    pub fn store_write_ok(&self) {
        if self.store_write_failing.swap(0, Relaxed) == 1 {
            *self
                .store_write_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
            tracing::info!("the store takes writes again");
        }
    }

    /// Why the store refuses writes, while it does.
    pub fn store_write_error(&self) -> Option<String> {
        if self.store_write_failing.load(Relaxed) == 0 {
            return None;
        }
        self.store_write_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A reading accepted from `transport` (`mqtt`, `modbus-tcp`, `modbus-rtu`).
    pub fn ingested(&self, transport: &str) {
        if let Some(i) = TRANSPORTS.iter().position(|t| *t == transport) {
            self.ingest[i].fetch_add(1, Relaxed);
        }
    }

    /// Readings accepted so far from `transport`.
    pub fn ingested_total(&self, transport: &str) -> u64 {
        TRANSPORTS
            .iter()
            .position(|t| *t == transport)
            .map_or(0, |i| self.ingest[i].load(Relaxed))
    }

    /// A message rejected for `reason`.
    pub fn rejected(&self, reason: RejectReason) {
        self.rejected[reason.index()].fetch_add(1, Relaxed);
    }

    /// Rejections so far, by reason (every reason, zeros included).
    pub fn rejections(&self) -> Vec<(&'static str, u64)> {
        RejectReason::ALL
            .iter()
            .zip(&self.rejected)
            .map(|(r, c)| (r.as_str(), c.load(Relaxed)))
            .collect()
    }

    /// A Modbus transport failure (not a rejection: no message arrived).
    pub fn modbus_error(&self, kind: ModbusErrorKind) {
        if let Some(i) = ModbusErrorKind::ALL.iter().position(|k| *k == kind) {
            self.modbus_errors[i].fetch_add(1, Relaxed);
        }
    }

    /// Modbus transport failures so far, by kind.
    pub fn modbus_errors(&self) -> Vec<(&'static str, u64)> {
        ModbusErrorKind::ALL
            .iter()
            .zip(&self.modbus_errors)
            .map(|(k, c)| (k.as_str(), c.load(Relaxed)))
            .collect()
    }

    /// Modbus transport failures so far, all kinds.
    pub fn modbus_errors_total(&self) -> u64 {
        self.modbus_errors.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// Prometheus text exposition of everything, plus the store gauges.
    pub fn render(&self, store: &StoreGauges) -> String {
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let gauge = |out: &mut String, name: &str, help: &str, v: i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };

        let _ = writeln!(
            out,
            "# HELP streetgate_ingest_total Readings accepted, by transport.\n# TYPE streetgate_ingest_total counter"
        );
        for (t, c) in TRANSPORTS.iter().zip(&self.ingest) {
            let _ = writeln!(
                out,
                "streetgate_ingest_total{{transport=\"{t}\"}} {}",
                c.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP streetgate_rejected_total Messages rejected, by reason.\n# TYPE streetgate_rejected_total counter"
        );
        for (r, c) in self.rejections() {
            let _ = writeln!(out, "streetgate_rejected_total{{reason=\"{r}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "# HELP streetgate_modbus_errors_total Modbus requests that failed (timeout, connection, exception), by kind.\n# TYPE streetgate_modbus_errors_total counter"
        );
        for (k, c) in self.modbus_errors() {
            let _ = writeln!(out, "streetgate_modbus_errors_total{{kind=\"{k}\"}} {c}");
        }
        gauge(
            &mut out,
            "streetgate_modbus_not_allowed_devices",
            "Modbus devices of the inventory not polled: modbus.allowed_endpoints or modbus.allowed_serial does not allow where they are.",
            i64::try_from(self.modbus_not_allowed.load(Relaxed)).unwrap_or(i64::MAX),
        );
        counter(
            &mut out,
            "streetgate_seq_gaps_total",
            "Messages missing between accepted sequence numbers.",
            self.seq_gaps.load(Relaxed),
        );
        counter(
            &mut out,
            "streetgate_seq_restarts_total",
            "Device sequence counters that restarted (a reboot), not counted as missing.",
            self.seq_restarts.load(Relaxed),
        );
        counter(
            &mut out,
            "streetgate_unregistered_messages_total",
            "Messages from devices not in the inventory.",
            self.unregistered_messages.load(Relaxed),
        );
        gauge(
            &mut out,
            "streetgate_unregistered_devices",
            "Distinct devices seen that are not in the inventory.",
            i64::try_from(store.unregistered_devices).unwrap_or(i64::MAX),
        );
        gauge(
            &mut out,
            "streetgate_devices",
            "Devices in the inventory.",
            i64::try_from(store.devices).unwrap_or(i64::MAX),
        );
        let _ = writeln!(
            out,
            "# HELP streetgate_open_cases Cases not closed or voided, by type.\n# TYPE streetgate_open_cases gauge"
        );
        let total: u64 = store.open_cases.iter().map(|(_, n)| n).sum();
        for (t, n) in &store.open_cases {
            let _ = writeln!(out, "streetgate_open_cases{{type=\"{t}\"}} {n}");
        }
        let _ = writeln!(out, "streetgate_open_cases{{type=\"all\"}} {total}");
        self.broker.render(&mut out);
        self.timeseries.render(&mut out);
        gauge(
            &mut out,
            "streetgate_mqtt_connected",
            "1 while the MQTT client is connected to the broker.",
            self.mqtt_connected.load(Relaxed),
        );
        gauge(
            &mut out,
            "streetgate_mqtt_subscribed",
            "1 once the broker granted every subscription of the current connection.",
            self.mqtt_subscribed.load(Relaxed),
        );
        counter(
            &mut out,
            "streetgate_mqtt_connections_total",
            "MQTT connections established.",
            self.mqtt_connections.load(Relaxed),
        );
        counter(
            &mut out,
            "streetgate_mqtt_connection_errors_total",
            "MQTT connection failures.",
            self.mqtt_connection_errors.load(Relaxed),
        );
        counter(
            &mut out,
            "streetgate_store_readings_total",
            "Readings committed to the store (latest and history).",
            self.store_readings.load(Relaxed),
        );
        counter(
            &mut out,
            "streetgate_store_batches_total",
            "Store transactions committed by the writer.",
            self.store_batches.load(Relaxed),
        );
        counter(
            &mut out,
            "streetgate_store_errors_total",
            "Store writes that failed.",
            self.store_errors.load(Relaxed),
        );
        gauge(
            &mut out,
            "streetgate_store_write_failing",
            "1 while the store refuses writes (readings and cases are held and retried, not acknowledged).",
            i64::try_from(self.store_write_failing.load(Relaxed)).unwrap_or(1),
        );
        counter(
            &mut out,
            "streetgate_condition_events_total",
            "Condition raised/cleared events emitted by the rules.",
            self.condition_events.load(Relaxed),
        );
        gauge(
            &mut out,
            "streetgate_fleet_outage_devices",
            "Devices cut off in the fleet-wide outage in progress (0: none); offline judgement is suspended while it lasts.",
            i64::try_from(self.fleet_outage_devices.load(Relaxed)).unwrap_or(i64::MAX),
        );
        counter(
            &mut out,
            "streetgate_fleet_outages_total",
            "Fleet-wide outages recognised (many last wills at once).",
            self.fleet_outages.load(Relaxed),
        );
        let a = self
            .automation
            .lock()
            .map(|a| *a)
            .unwrap_or_else(|e| *e.into_inner());
        let _ = writeln!(
            out,
            "# HELP streetgate_automation_cases_total What the gateway did to cases by itself: registered, deduplicated (an edge that found its case open), self_recovered, verified (by the sensor), reopened (rework), supervised (a supervision level reached, 督办), second_dispatch (二次派遣).\n# TYPE streetgate_automation_cases_total counter"
        );
        for (what, n) in [
            ("registered", a.registered),
            ("deduplicated", a.deduplicated),
            ("self_recovered", a.self_recovered),
            ("verified", a.verified),
            ("reopened", a.reopened),
            ("supervised", a.supervised),
            ("second_dispatch", a.second_dispatches),
        ] {
            let _ = writeln!(
                out,
                "streetgate_automation_cases_total{{event=\"{what}\"}} {n}"
            );
        }
        counter(
            &mut out,
            "streetgate_alerts_delivered_total",
            "Case events delivered to an alert sink (MQTT topic or webhook).",
            self.alerts_delivered.load(Relaxed),
        );
        counter(
            &mut out,
            "streetgate_alerts_failed_total",
            "Case events an alert sink gave up on after its last attempt.",
            self.alerts_failed.load(Relaxed),
        );
        counter(
            &mut out,
            "streetgate_alert_retries_total",
            "Alert delivery attempts that failed and were retried.",
            self.alert_retries.load(Relaxed),
        );
        counter(
            &mut out,
            "streetgate_commands_acked_total",
            "Lamp commands acknowledged by the device.",
            self.commands_acked.load(Relaxed),
        );
        counter(
            &mut out,
            "streetgate_commands_failed_total",
            "Lamp commands refused, timed out or not sendable.",
            self.commands_failed.load(Relaxed),
        );
        self.rule_latency.render(
            &mut out,
            "streetgate_rule_latency_seconds",
            "Time the rules spend on one reading.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        m.ingested("mqtt");
        m.ingested("mqtt");
        m.ingested("modbus-tcp");
        m.rejected(RejectReason::Malformed);
        m.modbus_error(ModbusErrorKind::Timeout);
        m.rule_latency.observe(Duration::from_micros(7));
        m.rule_latency.observe(Duration::from_millis(2));
        let text = m.render(&StoreGauges {
            devices: 3,
            unregistered_devices: 1,
            open_cases: vec![("bin_full".into(), 2)],
        });
        assert!(text.contains("streetgate_ingest_total{transport=\"mqtt\"} 2"));
        assert!(text.contains("streetgate_ingest_total{transport=\"modbus-tcp\"} 1"));
        assert!(text.contains("streetgate_rejected_total{reason=\"malformed\"} 1"));
        assert!(text.contains("streetgate_modbus_errors_total{kind=\"timeout\"} 1"));
        assert!(!text.contains("reason=\"modbus_error\""));
        assert!(text.contains("streetgate_rejected_total{reason=\"too_large\"} 0"));
        assert!(text.contains("streetgate_unregistered_devices 1"));
        assert!(text.contains("streetgate_open_cases{type=\"all\"} 2"));
        assert!(text.contains("streetgate_rule_latency_seconds_bucket{le=\"0.00001\"} 1"));
        assert!(text.contains("streetgate_rule_latency_seconds_bucket{le=\"0.01\"} 2"));
        assert!(text.contains("streetgate_rule_latency_seconds_count 2"));
    }
}
