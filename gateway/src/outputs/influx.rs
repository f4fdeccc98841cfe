//! `[timeseries]`: readings as line protocol to a time-series database over the InfluxDB v2
//! write API (InfluxDB 2.x, InfluxDB 3, VictoriaMetrics and others that accept
//! `POST /api/v2/write`).
//!
//! ```text
//! store writer ─offer─▶ bounded channel ─▶ collector ─sealed batch─▶ queue (memory, then spool)
//!                                           ▲  (lines, batched by         │
//!              lighting rate, open cases ───┘   size and time, gzipped)   ▼
//!                                                                     sender ─POST─▶ server
//! ```
//!
//! One line per reading: the measurement is the reading's kind (`streetlight`, `manhole`, `bin`,
//! `toilet`) for telemetry, `status`, `alarm` or `command_ack` otherwise; tags `device`, `kind`,
//! `grid` and `segment` (when the device has a road segment); fields the values the reading
//! carries (absent ones are left out); the timestamp is the device's clock, or the time the
//! gateway received it, at the configured precision. Every `series_interval_s` the collector
//! adds `lighting_segment`, `lighting_grid` and `open_cases` lines.
//!
//! A batch the server answers with 2xx is done; 429, 5xx and network errors are retried with
//! exponential back-off (a `Retry-After`, in seconds or as a date, is honoured) while later
//! batches wait in the spool; any other 4xx refuses that batch for good: it is counted as failed
//! and logged with the server's answer, and the next batch goes.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use influxdb_line_protocol::builder::{AfterField, LineProtocolBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::spool::{Batch, Queue};
use super::{OutputContext, ReadingOutput, Started};
use crate::model::{CaseType, Device, Reading, ReadingBody, UnixMs};
use streetgate_protocols::TelemetryData;

/// Timestamp precision of the lines (the write API's `precision` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Precision {
    /// Seconds.
    #[serde(rename = "s")]
    Seconds,
    /// Milliseconds (the readings' own resolution).
    #[default]
    #[serde(rename = "ms")]
    Milliseconds,
    /// Microseconds.
    #[serde(rename = "us")]
    Microseconds,
    /// Nanoseconds.
    #[serde(rename = "ns")]
    Nanoseconds,
}

impl Precision {
    /// The write API's name for it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Seconds => "s",
            Self::Milliseconds => "ms",
            Self::Microseconds => "us",
            Self::Nanoseconds => "ns",
        }
    }

    /// A Unix-millisecond time in this precision.
    pub fn from_ms(self, ms: UnixMs) -> i64 {
        match self {
            Self::Seconds => ms.div_euclid(1000),
            Self::Milliseconds => ms,
            Self::Microseconds => ms.saturating_mul(1000),
            Self::Nanoseconds => ms.saturating_mul(1_000_000),
        }
    }
}

/// `[timeseries]`: off unless `url` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeseriesConfig {
    /// Base URL of the server, e.g. `http://127.0.0.1:8086` (InfluxDB) or
    /// `http://127.0.0.1:8428` (VictoriaMetrics); the output is off while unset.
    pub url: Option<String>,
    /// Organisation (InfluxDB 2; ignored by VictoriaMetrics).
    pub org: String,
    /// Bucket (InfluxDB 2; VictoriaMetrics adds it as a `db` label).
    pub bucket: String,
    /// API token, sent as `Authorization: Token ...` (none: no header).
    pub token: Option<String>,
    /// Timestamp precision: `s`, `ms`, `us` or `ns`.
    pub precision: Precision,
    /// Lines per request at most.
    pub batch_lines: usize,
    /// A batch that has not filled is sent after this long, ms.
    pub flush_interval_ms: u64,
    /// Batches of readings waiting between the store writer and this output; past it readings
    /// are dropped and counted (`reason="queue_full"`), never waited for.
    pub channel_capacity: usize,
    /// Sealed batches kept in memory; more go to the spool directory.
    pub memory_batches: usize,
    /// Spool directory (default: `timeseries-spool` next to the store file).
    pub spool_dir: Option<PathBuf>,
    /// Most bytes the spool keeps; past it the oldest batches are dropped and counted.
    pub spool_max_bytes: u64,
    /// First retry delay of a failed request, ms (doubles per attempt).
    pub retry_min_ms: u64,
    /// Longest retry delay, ms.
    pub retry_max_ms: u64,
    /// Timeout of one request, ms.
    pub timeout_ms: u64,
    /// How often the lighting rate and open case counts are written, s (0: never).
    pub series_interval_s: u64,
}

impl Default for TimeseriesConfig {
    fn default() -> Self {
        Self {
            url: None,
            org: "streetgate".to_owned(),
            bucket: "streetgate".to_owned(),
            token: None,
            precision: Precision::Milliseconds,
            batch_lines: 5000,
            flush_interval_ms: 1000,
            channel_capacity: 1024,
            memory_batches: 16,
            spool_dir: None,
            spool_max_bytes: 256 * 1024 * 1024,
            retry_min_ms: 500,
            retry_max_ms: 30_000,
            timeout_ms: 10_000,
            series_interval_s: 60,
        }
    }
}

impl TimeseriesConfig {
    /// Whether the output runs.
    pub fn enabled(&self) -> bool {
        self.url.is_some()
    }

    /// Check ranges and relations; errors name the key (`timeseries.url`).
    pub fn validate(&self) -> crate::settings::Checked {
        fn invalid(
            key: &str,
            value: impl std::fmt::Display,
            allowed: &str,
        ) -> crate::settings::Invalid {
            crate::settings::invalid(format!("timeseries.{key}"), value, allowed)
        }
        let Some(url) = &self.url else {
            return Ok(());
        };
        match reqwest::Url::parse(url) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.query().is_none() => {}
            _ => {
                return Err(invalid(
                    "url",
                    url,
                    "the server's base URL, http:// or https://, without a query (e.g. http://127.0.0.1:8086)",
                ));
            }
        }
        if self.org.trim().is_empty() {
            return Err(invalid("org", "\"\"", "the organisation's name"));
        }
        if self.bucket.trim().is_empty() {
            return Err(invalid("bucket", "\"\"", "the bucket's name"));
        }
        if self
            .token
            .as_deref()
            .is_some_and(|t| t.is_empty() || t.chars().any(char::is_control))
        {
            return Err(invalid(
                "token",
                "(hidden)",
                "a non-empty token without control characters (or no token at all)",
            ));
        }
        if !(1..=100_000).contains(&self.batch_lines) {
            return Err(invalid("batch_lines", self.batch_lines, "1..=100000"));
        }
        if !(10..=600_000).contains(&self.flush_interval_ms) {
            return Err(invalid(
                "flush_interval_ms",
                self.flush_interval_ms,
                "10..=600000 ms",
            ));
        }
        if self.channel_capacity == 0 {
            return Err(invalid("channel_capacity", 0, "at least 1"));
        }
        if self.memory_batches == 0 {
            return Err(invalid("memory_batches", 0, "at least 1"));
        }
        if self
            .spool_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            return Err(invalid("spool_dir", "\"\"", "a directory path"));
        }
        if self.spool_max_bytes < 64 * 1024 {
            return Err(invalid(
                "spool_max_bytes",
                self.spool_max_bytes,
                "at least 65536 bytes",
            ));
        }
        if self.retry_min_ms == 0 || self.retry_max_ms < self.retry_min_ms {
            return Err(invalid(
                "retry_max_ms",
                format!("{} (retry_min_ms {})", self.retry_max_ms, self.retry_min_ms),
                "retry_min_ms at least 1 and retry_max_ms at least retry_min_ms",
            ));
        }
        if !(100..=300_000).contains(&self.timeout_ms) {
            return Err(invalid("timeout_ms", self.timeout_ms, "100..=300000 ms"));
        }
        Ok(())
    }

    /// The write endpoint: `{url}/api/v2/write?org=..&bucket=..&precision=..`.
    pub fn write_url(&self) -> Result<reqwest::Url, String> {
        let base = self.url.as_deref().ok_or("timeseries.url is not set")?;
        let mut url = reqwest::Url::parse(base).map_err(|e| format!("timeseries.url: {e}"))?;
        let path = format!("{}/api/v2/write", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url.query_pairs_mut()
            .append_pair("org", &self.org)
            .append_pair("bucket", &self.bucket)
            .append_pair("precision", self.precision.as_str());
        Ok(url)
    }
}

/// Counters of the time-series output (rendered with the gateway's metrics).
#[derive(Debug, Default)]
pub struct TimeseriesMetrics {
    /// Lines waiting to be sent (being batched, in memory or in the spool).
    pub queued_lines: AtomicU64,
    /// Lines the server accepted.
    pub sent_lines: AtomicU64,
    /// Requests the server accepted.
    pub sent_batches: AtomicU64,
    /// Lines in batches the server refused for good (4xx other than 429).
    pub failed_lines: AtomicU64,
    /// Batches the server refused for good.
    pub failed_batches: AtomicU64,
    /// Requests that failed and were retried (429, 5xx, network).
    pub retries: AtomicU64,
    /// Batches written to the spool directory.
    pub spooled_batches: AtomicU64,
    /// Lines written to the spool directory.
    pub spooled_lines: AtomicU64,
    /// Bytes in the spool directory now.
    pub spool_bytes: AtomicU64,
    /// Spool writes that failed (the batch stayed in memory).
    pub spool_errors: AtomicU64,
    /// Lines dropped because the spool was full (oldest first).
    pub dropped_spool_full: AtomicU64,
    /// Readings dropped because the hand-off from the store writer was full.
    pub dropped_queue_full: AtomicU64,
    /// Lines lost with a spool file that could not be read back.
    pub dropped_unreadable: AtomicU64,
}

impl TimeseriesMetrics {
    /// Prometheus text of these counters.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let mut line = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        line(
            "streetgate_timeseries_queued_lines",
            "gauge",
            "Lines waiting for the time-series server (being batched, in memory or spooled).",
            self.queued_lines.load(Relaxed),
        );
        line(
            "streetgate_timeseries_sent_lines_total",
            "counter",
            "Lines the time-series server accepted.",
            self.sent_lines.load(Relaxed),
        );
        line(
            "streetgate_timeseries_sent_batches_total",
            "counter",
            "Write requests the time-series server accepted.",
            self.sent_batches.load(Relaxed),
        );
        line(
            "streetgate_timeseries_failed_lines_total",
            "counter",
            "Lines in batches the time-series server refused for good (4xx other than 429).",
            self.failed_lines.load(Relaxed),
        );
        line(
            "streetgate_timeseries_failed_batches_total",
            "counter",
            "Batches the time-series server refused for good (4xx other than 429).",
            self.failed_batches.load(Relaxed),
        );
        line(
            "streetgate_timeseries_retries_total",
            "counter",
            "Write requests that failed (429, 5xx, network) and were retried.",
            self.retries.load(Relaxed),
        );
        line(
            "streetgate_timeseries_spooled_batches_total",
            "counter",
            "Batches written to the spool directory while the server was away or slow.",
            self.spooled_batches.load(Relaxed),
        );
        line(
            "streetgate_timeseries_spooled_lines_total",
            "counter",
            "Lines written to the spool directory.",
            self.spooled_lines.load(Relaxed),
        );
        line(
            "streetgate_timeseries_spool_bytes",
            "gauge",
            "Bytes in the spool directory now.",
            self.spool_bytes.load(Relaxed),
        );
        line(
            "streetgate_timeseries_spool_errors_total",
            "counter",
            "Spool writes that failed (the batch stayed in memory).",
            self.spool_errors.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP streetgate_timeseries_dropped_lines_total Lines or readings given up on before reaching the server, by reason.\n# TYPE streetgate_timeseries_dropped_lines_total counter"
        );
        for (reason, c) in [
            ("spool_full", &self.dropped_spool_full),
            ("queue_full", &self.dropped_queue_full),
            ("spool_unreadable", &self.dropped_unreadable),
        ] {
            let _ = writeln!(
                out,
                "streetgate_timeseries_dropped_lines_total{{reason=\"{reason}\"}} {}",
                c.load(Relaxed)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Line protocol

#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    Float(f64),
    Int(i64),
    Bool(bool),
}

/// A float field: the f32 as written (0.1, not 0.10000000149011612); none when not finite (line
/// protocol has no NaN or infinity).
fn float(x: f32) -> Option<Value> {
    x.is_finite()
        .then(|| Value::Float(x.to_string().parse().unwrap_or(f64::from(x))))
}

fn int(x: impl Into<i64>) -> Option<Value> {
    Some(Value::Int(x.into()))
}

/// A tag value as line protocol can carry it: none when empty, control characters (a line
/// break would end the line) replaced by `_`; commas, spaces and `=` are escaped by the builder.
fn tag_value(s: &str) -> Option<std::borrow::Cow<'_, str>> {
    if s.is_empty() {
        None
    } else if s.chars().any(char::is_control) {
        Some(
            s.chars()
                .map(|c| if c.is_control() { '_' } else { c })
                .collect::<String>()
                .into(),
        )
    } else {
        Some(s.into())
    }
}

/// The measurement and fields of a reading.
fn reading_fields(body: &ReadingBody) -> (&'static str, Vec<(&'static str, Option<Value>)>) {
    match body {
        ReadingBody::Telemetry(TelemetryData::Streetlight(t)) => (
            "streetlight",
            vec![
                ("lamp_on", Some(Value::Bool(t.lamp_on))),
                ("dim_pct", int(t.dim_pct)),
                ("voltage_v", float(t.voltage_v)),
                ("current_a", float(t.current_a)),
                ("power_w", float(t.power_w)),
                ("energy_wh", int(t.energy_wh)),
                ("leakage_ma", float(t.leakage_ma)),
                ("operating_h", int(t.operating_h)),
                ("switch_count", int(t.switch_count)),
            ],
        ),
        ReadingBody::Telemetry(TelemetryData::Manhole(t)) => (
            "manhole",
            vec![
                ("tilt_deg", float(t.tilt_deg)),
                ("water_level_cm", t.water_level_cm.and_then(float)),
                ("temperature_c", t.temperature_c.and_then(float)),
                ("battery_pct", int(t.battery_pct)),
            ],
        ),
        ReadingBody::Telemetry(TelemetryData::Bin(t)) => (
            "bin",
            vec![
                ("fill_pct", float(t.fill_pct)),
                ("distance_mm", t.distance_mm.and_then(int)),
                ("temperature_c", float(t.temperature_c)),
                ("tilt_deg", t.tilt_deg.and_then(float)),
                ("battery_pct", int(t.battery_pct)),
            ],
        ),
        ReadingBody::Telemetry(TelemetryData::Toilet(t)) => (
            "toilet",
            vec![
                ("nh3_mg_m3", float(t.nh3_mg_m3)),
                ("h2s_mg_m3", float(t.h2s_mg_m3)),
                ("nh3_avg_mg_m3", t.nh3_avg_mg_m3.and_then(float)),
                ("h2s_avg_mg_m3", t.h2s_avg_mg_m3.and_then(float)),
                ("temperature_c", t.temperature_c.and_then(float)),
                ("humidity_pct", t.humidity_pct.and_then(float)),
                ("battery_pct", t.battery_pct.and_then(int)),
            ],
        ),
        ReadingBody::Alarm { raised, value, .. } => (
            "alarm",
            vec![
                ("raised", Some(Value::Bool(*raised))),
                ("value", value.and_then(float)),
            ],
        ),
        ReadingBody::Status {
            online,
            battery_pct,
            ..
        } => (
            "status",
            vec![
                ("online", Some(Value::Bool(*online))),
                ("battery_pct", battery_pct.and_then(int)),
            ],
        ),
        ReadingBody::Ack { ref_id, ok, .. } => (
            "command_ack",
            vec![("ok", Some(Value::Bool(*ok))), ("ref_id", int(*ref_id))],
        ),
    }
}

fn add_field<B: bytes::BufMut>(
    b: LineProtocolBuilder<B, AfterField>,
    key: &str,
    v: Value,
) -> LineProtocolBuilder<B, AfterField> {
    match v {
        Value::Float(x) => b.field(key, x),
        Value::Int(x) => b.field(key, x),
        Value::Bool(x) => b.field(key, x),
    }
}

/// Append one line: `measurement,tags fields timestamp`. Nothing is written without fields.
fn write_line(
    buf: &mut Vec<u8>,
    measurement: &str,
    tags: &[(&str, &str)],
    fields: &[(&'static str, Option<Value>)],
    ts: i64,
) -> bool {
    let mut present = fields
        .iter()
        .filter_map(|(k, v)| v.map(|v| (*k, v)))
        .peekable();
    let Some((first_key, first)) = present.next() else {
        return false;
    };
    let mut b = LineProtocolBuilder::new_with(std::mem::take(buf)).measurement(measurement);
    for (k, v) in tags {
        if let Some(v) = tag_value(v) {
            b = b.tag(k, &v);
        }
    }
    let mut b = match first {
        Value::Float(x) => b.field(first_key, x),
        Value::Int(x) => b.field(first_key, x),
        Value::Bool(x) => b.field(first_key, x),
    };
    for (k, v) in present {
        b = add_field(b, k, v);
    }
    *buf = b.timestamp(ts).close_line().build();
    true
}

/// Append a reading's line to `buf`; `false` when it carries no value to write.
pub fn reading_line(
    buf: &mut Vec<u8>,
    reading: &Reading,
    device: Option<&Device>,
    precision: Precision,
) -> bool {
    let (measurement, fields) = reading_fields(&reading.body);
    let mut tags: Vec<(&str, &str)> = Vec::with_capacity(5);
    if let ReadingBody::Alarm { alarm, .. } = &reading.body {
        tags.push(("alarm", alarm.as_str()));
    }
    tags.push(("device", reading.device_id.as_str()));
    if let Some(d) = device {
        tags.push(("grid", d.grid.as_str()));
        if let Some(seg) = &d.road_segment {
            tags.push(("segment", seg.as_str()));
        }
    }
    tags.push(("kind", reading.kind.as_str()));
    // Tags sorted by key, as InfluxDB stores them (cheaper for the server).
    tags.sort_by_key(|(k, _)| *k);
    let ts = precision.from_ms(reading.device_ts_ms.unwrap_or(reading.received_ms));
    write_line(buf, measurement, &tags, &fields, ts)
}

/// Append the periodic series: lighting rate per segment and grid, open cases per type.
/// Returns the lines written.
pub fn series_lines(
    buf: &mut Vec<u8>,
    lighting: &crate::lighting::LightingSnapshot,
    open_cases: Option<&[(String, u64)]>,
    now_ms: UnixMs,
    precision: Precision,
) -> u64 {
    let ts = precision.from_ms(now_ms);
    let mut n = 0;
    #[allow(clippy::cast_possible_wrap)]
    let rate_fields = |r: &crate::lighting::Rate| {
        vec![
            ("rate", Some(Value::Float(r.rate))),
            ("lit", int(r.lit as i64)),
            ("expected", int(r.expected as i64)),
            ("target", Some(Value::Float(r.target))),
            ("below_target", Some(Value::Bool(r.below_target))),
        ]
    };
    if lighting.at_ms > 0 {
        for r in &lighting.now.segments {
            let class = r.road_class.map(|c| match c {
                crate::model::RoadClass::Main => "main",
                crate::model::RoadClass::Secondary => "secondary",
                crate::model::RoadClass::Back => "back",
            });
            let mut tags = vec![("grid", r.grid.as_str())];
            if let Some(c) = class {
                tags.push(("road_class", c));
            }
            tags.push(("segment", r.segment.as_str()));
            n += u64::from(write_line(
                buf,
                "lighting_segment",
                &tags,
                &rate_fields(r),
                ts,
            ));
        }
        for r in &lighting.now.grids {
            n += u64::from(write_line(
                buf,
                "lighting_grid",
                &[("grid", r.grid.as_str())],
                &rate_fields(r),
                ts,
            ));
        }
    }
    if let Some(counts) = open_cases {
        for t in CaseType::ALL {
            let c = counts
                .iter()
                .find(|(name, _)| name == t.as_str())
                .map_or(0, |(_, c)| *c);
            n += u64::from(write_line(
                buf,
                "open_cases",
                &[("type", t.as_str())],
                &[("count", int(i64::try_from(c).unwrap_or(i64::MAX)))],
                ts,
            ));
        }
    }
    n
}

// ---------------------------------------------------------------------------------------------
// The output: hand-off, collector, sender

/// The hand-off from the store writer: a bounded channel, never waited on.
#[derive(Debug)]
pub struct InfluxOutput {
    tx: mpsc::Sender<Arc<[Reading]>>,
    metrics: Arc<TimeseriesMetrics>,
    /// When the last "hand-off full" line was logged (Unix ms of the wall clock).
    last_full_log: AtomicI64,
}

impl ReadingOutput for InfluxOutput {
    fn name(&self) -> &'static str {
        "timeseries"
    }

    fn offer(&self, readings: &Arc<[Reading]>) {
        if let Err(e) = self.tx.try_send(Arc::clone(readings)) {
            let n = readings.len() as u64;
            self.metrics.dropped_queue_full.fetch_add(n, Relaxed);
            let now = crate::clock::wall_ms();
            let last = self.last_full_log.load(Relaxed);
            if now - last >= 10_000
                && self
                    .last_full_log
                    .compare_exchange(last, now, Relaxed, Relaxed)
                    .is_ok()
            {
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => {
                        "the time-series output is behind (timeseries.channel_capacity)"
                    }
                    mpsc::error::TrySendError::Closed(_) => "the time-series output has stopped",
                };
                tracing::warn!(
                    readings = n,
                    "{why}: readings dropped for it, not for the store (counted in streetgate_timeseries_dropped_lines_total{{reason=\"queue_full\"}}; logged at most every 10 s)"
                );
            }
        }
    }
}

/// Start the output: open the spool (replaying what it holds), then the collector and sender.
pub async fn start(
    config: &TimeseriesConfig,
    default_spool_dir: PathBuf,
    ctx: OutputContext,
    metrics: Arc<TimeseriesMetrics>,
) -> anyhow::Result<Started> {
    use anyhow::Context;
    let url = config
        .write_url()
        .map_err(|e| anyhow::anyhow!("timeseries.url: {e}"))?;
    let spool_dir = config.spool_dir.clone().unwrap_or(default_spool_dir);
    let queue = Arc::new(
        Queue::open(
            &spool_dir,
            config.memory_batches,
            config.spool_max_bytes,
            Arc::clone(&metrics),
        )
        .await
        .with_context(|| {
            format!(
                "opening the time-series spool at {} (timeseries.spool_dir)",
                spool_dir.display()
            )
        })?,
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(config.timeout_ms))
        .build()
        .context("building the HTTP client of the time-series output")?;
    let (tx, rx) = mpsc::channel(config.channel_capacity);
    let output = Arc::new(InfluxOutput {
        tx,
        metrics: Arc::clone(&metrics),
        last_full_log: AtomicI64::new(0),
    });
    tracing::info!(
        url = %url,
        spool = %queue.dir().display(),
        batch_lines = config.batch_lines,
        "time-series output started"
    );
    let collector: JoinHandle<()> = tokio::spawn(collect(
        rx,
        Arc::clone(&queue),
        ctx.clone(),
        config.clone(),
        Arc::clone(&metrics),
    ));
    let sender = tokio::spawn(send(
        queue,
        client,
        url,
        config.token.clone(),
        Backoff {
            min: Duration::from_millis(config.retry_min_ms),
            max: Duration::from_millis(config.retry_max_ms),
        },
        metrics,
        ctx.cancel,
    ));
    Ok(Started {
        outputs: super::Outputs::new(vec![output]),
        tasks: vec![collector, sender],
    })
}

/// Lines being gathered into the next batch.
struct Pending {
    buf: Vec<u8>,
    lines: u64,
}

async fn seal(pending: &mut Pending, queue: &Queue) {
    use std::io::Write;
    if pending.lines == 0 {
        return;
    }
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(pending.buf.len() / 4),
        flate2::Compression::fast(),
    );
    // Writing to a Vec cannot fail.
    let body = match gz.write_all(&pending.buf).and_then(|()| gz.finish()) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "compressing a time-series batch");
            return;
        }
    };
    let batch = Batch {
        seq: queue.next_seq().await,
        lines: pending.lines,
        body: Bytes::from(body),
    };
    pending.buf.clear();
    pending.lines = 0;
    queue.push(batch).await;
}

async fn collect(
    mut rx: mpsc::Receiver<Arc<[Reading]>>,
    queue: Arc<Queue>,
    ctx: OutputContext,
    config: TimeseriesConfig,
    metrics: Arc<TimeseriesMetrics>,
) {
    let mut pending = Pending {
        buf: Vec::with_capacity(64 * 1024),
        lines: 0,
    };
    let batch_lines = config.batch_lines as u64;
    let mut flush = tokio::time::interval(Duration::from_millis(config.flush_interval_ms));
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Wall time: the series describe the gateway's state, sampled however fast its clock runs.
    let series_every = Duration::from_secs(config.series_interval_s.max(1));
    let mut series =
        tokio::time::interval_at(tokio::time::Instant::now() + series_every, series_every);
    series.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reader = ctx.inventory.reader();
    loop {
        tokio::select! {
            next = rx.recv() => {
                let Some(readings) = next else { break };
                for r in readings.iter() {
                    let device = reader.get(&r.device_id).cloned();
                    if reading_line(&mut pending.buf, r, device.as_deref(), config.precision) {
                        pending.lines += 1;
                        metrics.queued_lines.fetch_add(1, Relaxed);
                    }
                    if pending.lines >= batch_lines {
                        seal(&mut pending, &queue).await;
                    }
                }
            }
            _ = flush.tick() => seal(&mut pending, &queue).await,
            _ = series.tick(), if config.series_interval_s > 0 => {
                let open = (ctx.open_cases)().await;
                // Written under the watch's borrow (no await): the snapshot is not copied.
                let n = series_lines(
                    &mut pending.buf,
                    &ctx.lighting.borrow(),
                    open.as_deref(),
                    ctx.clock.now_ms(),
                    config.precision,
                );
                pending.lines += n;
                metrics.queued_lines.fetch_add(n, Relaxed);
                if pending.lines >= batch_lines {
                    seal(&mut pending, &queue).await;
                }
            }
        }
    }
    seal(&mut pending, &queue).await;
    queue.spill().await;
    tracing::debug!("time-series collector stopped");
}

/// Retry delays.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    min: Duration,
    max: Duration,
}

/// What became of one request.
#[derive(Debug)]
enum Outcome {
    Sent,
    /// 4xx other than 429: this batch will never be taken.
    Refused(u16, String),
    /// 429, 5xx, network: try again (after the server's `Retry-After` when it gave one).
    Retry(String, Option<Duration>),
}

/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// A `Retry-After` value: seconds, or an HTTP date (RFC 9110 §10.2.3); at most
/// [`MAX_RETRY_AFTER`].
fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(s) => Duration::from_secs(s),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

async fn post(
    client: &reqwest::Client,
    url: &reqwest::Url,
    token: Option<&str>,
    body: Bytes,
) -> Outcome {
    let mut req = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(reqwest::header::CONTENT_ENCODING, "gzip")
        .body(body);
    if let Some(t) = token {
        req = req.header(reqwest::header::AUTHORIZATION, format!("Token {t}"));
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return Outcome::Retry(format!("request failed: {e}"), None),
    };
    let status = resp.status();
    if status.is_success() {
        return Outcome::Sent;
    }
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry_after(v, std::time::SystemTime::now()));
    let text = resp.text().await.unwrap_or_default();
    let excerpt: String = text.chars().take(300).collect();
    if status.as_u16() == 429 || status.is_server_error() {
        Outcome::Retry(format!("HTTP {status}: {excerpt}"), retry_after)
    } else {
        Outcome::Refused(status.as_u16(), excerpt)
    }
}

async fn send(
    queue: Arc<Queue>,
    client: reqwest::Client,
    url: reqwest::Url,
    token: Option<String>,
    backoff: Backoff,
    metrics: Arc<TimeseriesMetrics>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut failing_since: Option<std::time::Instant> = None;
    loop {
        let batch = tokio::select! {
            () = cancel.cancelled() => break,
            b = queue.next() => match b { Some(b) => b, None => break },
        };
        let mut delay = backoff.min;
        loop {
            let outcome = tokio::select! {
                () = cancel.cancelled() => return,
                o = post(&client, &url, token.as_deref(), batch.body.clone()) => o,
            };
            match outcome {
                Outcome::Sent => {
                    if let Some(since) = failing_since.take() {
                        tracing::info!(
                            after_s = since.elapsed().as_secs(),
                            "time-series server takes writes again; sending what was kept"
                        );
                    }
                    metrics.sent_lines.fetch_add(batch.lines, Relaxed);
                    metrics.sent_batches.fetch_add(1, Relaxed);
                    metrics.queued_lines.fetch_sub(batch.lines, Relaxed);
                    queue.done(batch.seq).await;
                    break;
                }
                Outcome::Refused(status, answer) => {
                    tracing::error!(
                        status,
                        lines = batch.lines,
                        answer = %answer,
                        "time-series server refused a batch for good (not retried; counted in streetgate_timeseries_failed_lines_total)"
                    );
                    metrics.failed_lines.fetch_add(batch.lines, Relaxed);
                    metrics.failed_batches.fetch_add(1, Relaxed);
                    metrics.queued_lines.fetch_sub(batch.lines, Relaxed);
                    queue.done(batch.seq).await;
                    break;
                }
                Outcome::Retry(why, retry_after) => {
                    metrics.retries.fetch_add(1, Relaxed);
                    let wait = retry_after.unwrap_or_else(|| jitter(delay));
                    if failing_since.is_none() {
                        failing_since = Some(std::time::Instant::now());
                        tracing::warn!(
                            error = %why,
                            retry_in_ms = wait.as_millis() as u64,
                            "time-series server not taking writes; batches are kept (spooled) and retried"
                        );
                    } else {
                        tracing::debug!(error = %why, retry_in_ms = wait.as_millis() as u64, "time-series write retried");
                    }
                    delay = (delay * 2).min(backoff.max);
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
}

/// Between half and all of `d`, so that many gateways do not retry in step.
fn jitter(d: Duration) -> Duration {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
    let half = ms / 2;
    Duration::from_millis(half + rand::random_range(0..=ms - half))
}

#[cfg(test)]
mod tests {
    use super::*;
    use streetgate_protocols::{
        AlarmKind, BinTelemetry, DeviceId, DeviceKind, StreetlightTelemetry,
    };

    fn reading(id: &str, kind: DeviceKind, body: ReadingBody) -> Reading {
        Reading {
            device_id: DeviceId::new(id).expect("id"),
            kind,
            received_ms: 1_700_000_000_123,
            device_ts_ms: None,
            seq: 1,
            transport: "mqtt",
            body,
            seq_state: None,
        }
    }

    fn lamp_device() -> Device {
        Device {
            id: DeviceId::new("SL-1").expect("id"),
            kind: DeviceKind::Streetlight,
            component_code: None,
            lat: 0.0,
            lon: 0.0,
            grid: "320508001001001".into(),
            road_segment: Some("S 1,a=b".into()),
            road_class: None,
            toilet_class: None,
            bin_depth_mm: None,
            overrides: Default::default(),
            transport: crate::model::Transport::Mqtt,
        }
    }

    fn line(r: &Reading, d: Option<&Device>, p: Precision) -> String {
        let mut buf = Vec::new();
        assert!(reading_line(&mut buf, r, d, p));
        String::from_utf8(buf).expect("utf-8")
    }

    #[test]
    fn telemetry_line_has_tags_fields_and_time() {
        let mut r = reading(
            "SL-1",
            DeviceKind::Streetlight,
            ReadingBody::Telemetry(TelemetryData::Streetlight(StreetlightTelemetry {
                lamp_on: true,
                dim_pct: 80,
                voltage_v: 229.9,
                current_a: 0.1,
                power_w: f32::NAN,
                energy_wh: 12,
                ..Default::default()
            })),
        );
        r.device_ts_ms = Some(1_700_000_000_000);
        assert_eq!(
            line(&r, Some(&lamp_device()), Precision::Milliseconds),
            "streetlight,device=SL-1,grid=320508001001001,kind=streetlight,segment=S\\ 1\\,a\\=b \
             lamp_on=true,dim_pct=80i,voltage_v=229.9,current_a=0.1,energy_wh=12i,leakage_ma=0,\
             operating_h=0i,switch_count=0i 1700000000000\n"
        );
    }

    #[test]
    fn absent_values_are_left_out_and_receive_time_is_the_fallback() {
        let r = reading(
            "BN-1",
            DeviceKind::Bin,
            ReadingBody::Telemetry(TelemetryData::Bin(BinTelemetry {
                fill_pct: 55.5,
                distance_mm: None,
                temperature_c: 21.0,
                tilt_deg: None,
                battery_pct: 90,
            })),
        );
        assert_eq!(
            line(&r, None, Precision::Seconds),
            "bin,device=BN-1,kind=bin fill_pct=55.5,temperature_c=21,battery_pct=90i 1700000000\n"
        );
        assert!(line(&r, None, Precision::Nanoseconds).ends_with(" 1700000000123000000\n"));
        assert!(line(&r, None, Precision::Microseconds).ends_with(" 1700000000123000\n"));
    }

    #[test]
    fn alarms_status_and_acks() {
        let a = reading(
            "MH-1",
            DeviceKind::Manhole,
            ReadingBody::Alarm {
                alarm: AlarmKind::ALL[0],
                raised: true,
                value: None,
            },
        );
        let l = line(&a, None, Precision::Milliseconds);
        assert!(l.starts_with(&format!(
            "alarm,alarm={},device=MH-1,kind=manhole raised=true 1700000000123",
            AlarmKind::ALL[0].as_str()
        )));
        let s = reading(
            "MH-1",
            DeviceKind::Manhole,
            ReadingBody::Status {
                online: false,
                battery_pct: None,
                fw_version: Some("1.0".into()),
            },
        );
        assert_eq!(
            line(&s, None, Precision::Milliseconds),
            "status,device=MH-1,kind=manhole online=false 1700000000123\n"
        );
    }

    #[test]
    fn control_characters_cannot_break_a_line() {
        let mut d = lamp_device();
        d.road_segment = Some("a\nb".into());
        d.grid = String::new();
        let r = reading(
            "SL-1",
            DeviceKind::Streetlight,
            ReadingBody::Ack {
                ref_id: 7,
                ok: true,
                reason: None,
            },
        );
        assert_eq!(
            line(&r, Some(&d), Precision::Milliseconds),
            "command_ack,device=SL-1,kind=streetlight,segment=a_b ok=true,ref_id=7i 1700000000123\n"
        );
    }

    #[test]
    fn lines_parse_back_with_the_line_protocol_parser() {
        let r = reading(
            "SL-1",
            DeviceKind::Streetlight,
            ReadingBody::Telemetry(TelemetryData::Streetlight(StreetlightTelemetry::default())),
        );
        let text = line(&r, Some(&lamp_device()), Precision::Milliseconds);
        let parsed: Vec<_> = influxdb_line_protocol::parse_lines(&text)
            .collect::<Result<_, _>>()
            .expect("valid line protocol");
        assert_eq!(parsed.len(), 1);
        let tags = parsed[0].series.tag_set.as_ref().expect("tags");
        let seg = tags
            .iter()
            .find(|(k, _)| k.as_str() == "segment")
            .map(|(_, v)| v.to_string());
        assert_eq!(seg.as_deref(), Some("S 1,a=b"));
        assert_eq!(parsed[0].timestamp, Some(1_700_000_000_123));
    }

    #[test]
    fn series_lines_include_every_case_type() {
        let mut buf = Vec::new();
        let snapshot = crate::lighting::LightingSnapshot::default();
        let n = series_lines(
            &mut buf,
            &snapshot,
            Some(&[("bin_full".to_owned(), 3)]),
            1000,
            Precision::Milliseconds,
        );
        assert_eq!(n, CaseType::ALL.len() as u64);
        let text = String::from_utf8(buf).expect("utf-8");
        assert!(text.contains("open_cases,type=bin_full count=3i 1000\n"));
        assert!(text.contains("open_cases,type=lamp_fault count=0i 1000\n"));
    }

    #[test]
    fn lighting_series_per_segment_and_grid() {
        let rate = |segment: &str, class| crate::lighting::Rate {
            segment: segment.into(),
            grid: "320508001001001".into(),
            road_class: class,
            lit: 49,
            expected: 50,
            rate: 0.98,
            target: 0.99,
            below_target: true,
            dark: vec![],
        };
        let snapshot = crate::lighting::LightingSnapshot {
            at_ms: 5000,
            now: crate::lighting::LightingReport {
                segments: vec![rate("S-1", Some(crate::model::RoadClass::Main))],
                grids: vec![rate("320508001001001", None)],
                city: None,
            },
            history: Default::default(),
        };
        let mut buf = Vec::new();
        let n = series_lines(&mut buf, &snapshot, None, 7000, Precision::Seconds);
        assert_eq!(n, 2);
        assert_eq!(
            String::from_utf8(buf).expect("utf-8"),
            "lighting_segment,grid=320508001001001,road_class=main,segment=S-1 rate=0.98,lit=49i,\
             expected=50i,target=0.99,below_target=true 7\n\
             lighting_grid,grid=320508001001001 rate=0.98,lit=49i,expected=50i,target=0.99,\
             below_target=true 7\n"
        );
        // Not computed yet: no lighting lines.
        let mut buf = Vec::new();
        let empty = crate::lighting::LightingSnapshot::default();
        assert_eq!(
            series_lines(&mut buf, &empty, None, 7000, Precision::Seconds),
            0
        );
    }

    #[test]
    fn a_full_hand_off_counts_instead_of_waiting() {
        let metrics = Arc::new(TimeseriesMetrics::default());
        let (tx, mut rx) = mpsc::channel(1);
        let output = InfluxOutput {
            tx,
            metrics: Arc::clone(&metrics),
            last_full_log: AtomicI64::new(0),
        };
        let r = reading(
            "MH-1",
            DeviceKind::Manhole,
            ReadingBody::Status {
                online: true,
                battery_pct: None,
                fw_version: None,
            },
        );
        let batch: Arc<[Reading]> = vec![r.clone(), r].into();
        output.offer(&batch);
        output.offer(&batch);
        assert_eq!(metrics.dropped_queue_full.load(Relaxed), 2);
        assert_eq!(rx.try_recv().expect("the first batch").len(), 2);
        drop(rx);
        output.offer(&batch);
        assert_eq!(
            metrics.dropped_queue_full.load(Relaxed),
            4,
            "closed: counted too"
        );
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(retry_after(&later, now), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(retry_after("99999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn config_checks_name_the_key() {
        let c = TimeseriesConfig {
            url: Some("ftp://x".into()),
            ..Default::default()
        };
        let e = c.validate().expect_err("refused").to_string();
        assert!(e.starts_with("timeseries.url = ftp://x"), "{e}");
        let c = TimeseriesConfig {
            url: Some("http://127.0.0.1:8086/".into()),
            org: "o o".into(),
            bucket: "b&c".into(),
            ..Default::default()
        };
        c.validate().expect("valid");
        assert_eq!(
            c.write_url().expect("url").as_str(),
            "http://127.0.0.1:8086/api/v2/write?org=o+o&bucket=b%26c&precision=ms"
        );
        let c = TimeseriesConfig {
            url: Some("http://h".into()),
            batch_lines: 0,
            ..Default::default()
        };
        assert!(
            c.validate()
                .expect_err("refused")
                .to_string()
                .starts_with("timeseries.batch_lines = 0")
        );
        // Off by default: nothing to check.
        TimeseriesConfig::default().validate().expect("off");
    }
}
