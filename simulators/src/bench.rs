//! `streetgate-sim bench`: the gateway's figures, measured in one go on one machine through its
//! public API only ([`app::start`] with a [`Config`]), so the command keeps working whatever the
//! broker and pipeline look like inside.
//!
//! 1. **Ingest against the broker's own delivery rate**, per broker (the embedded one; an
//!    external Mosquitto with `--mqtt-url` or `--mosquitto-bin`) and per encoding (JSON,
//!    binary): P QoS 1 publishers send N telemetry messages for a fleet of bins, first to a
//!    counting subscriber on the broker alone, then to a gateway on the same kind of broker;
//!    the two rates and their ratio, and whether every message was stored (each device's
//!    sequence state, committed with its readings, must show all its messages accepted and
//!    none missing). The gateway phase also reports the process's peak RSS.
//! 2. **Alarm → case latency** under a steady telemetry load: an alarm's publish to its case
//!    being committed (the store is polled every millisecond).
//! 3. **Normaliser** alone on one core (decode, validation, sequence check).
//! 4. **Lighting rate** of 1,000,000 lamps, recomputed.
//! 5. **Modbus polling**: units polled per second across 1,000 simulated units behind 32 TCP
//!    converters.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use streetgate_gateway::app::{self, Running};
use streetgate_gateway::config::Config;
use streetgate_gateway::lighting::{LampView, LightingConfig, LightingHistory, LightingReport};
use streetgate_gateway::model::RoadClass;
use streetgate_protocols::codec::encode_binary;
use streetgate_protocols::{BinTelemetry, DeviceId, DeviceKind, Telemetry, TelemetryData};

use crate::modbus::{Converter, ConverterConfig, Unit};

/// What to measure and how much.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Messages per ingest run.
    pub messages: usize,
    /// Concurrent publishers.
    pub publishers: usize,
    /// Devices (bins) the messages are spread over.
    pub devices: usize,
    /// An external broker already running, `mqtt://host:port`.
    pub mqtt_url: Option<String>,
    /// A Mosquitto binary to start with `deploy/mosquitto/streetgate.conf`.
    pub mosquitto_bin: Option<PathBuf>,
    /// Steady telemetry load during the latency run, messages per second.
    pub load_rate: u32,
    /// Alarms measured in the latency run.
    pub alarms: usize,
    /// Lamps for the lighting-rate run.
    pub lamps: usize,
    /// Modbus units and converters.
    pub modbus_units: usize,
    /// TCP converters the units are spread over.
    pub converters: usize,
    /// Seconds the Modbus polling is counted.
    pub modbus_secs: u64,
    /// Poll interval of each Modbus unit, ms (caps the rate at units ÷ interval).
    pub modbus_poll_ms: u64,
    /// Readings of history kept per device in the ingest runs (`None`: the store's default).
    pub history_per_device: Option<u32>,
    /// Sections to run: `ingest`, `latency`, `normaliser`, `lighting`, `modbus`.
    pub sections: Vec<String>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            messages: 200_000,
            publishers: 4,
            devices: 10_000,
            mqtt_url: None,
            mosquitto_bin: None,
            load_rate: 10_000,
            alarms: 200,
            lamps: 1_000_000,
            modbus_units: 1000,
            converters: 32,
            modbus_secs: 10,
            modbus_poll_ms: 100,
            history_per_device: None,
            sections: ["ingest", "latency", "normaliser", "lighting", "modbus"]
                .map(str::to_owned)
                .to_vec(),
        }
    }
}

/// Payload encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Json,
    Binary,
}

impl Encoding {
    fn name(self) -> &'static str {
        match self {
            Self::Json => "JSON",
            Self::Binary => "binary",
        }
    }
}

fn bin_id(i: usize) -> String {
    format!("BN-{i:05}")
}

fn telemetry_payload(encoding: Encoding, id: &str, seq: u32) -> Vec<u8> {
    match encoding {
        Encoding::Json => format!(
            r#"{{"device_id":"{id}","seq":{seq},"data":{{"bin":{{"fill_pct":42.5,"temperature_c":21.5,"battery_pct":88}}}}}}"#
        )
        .into_bytes(),
        Encoding::Binary => {
            let Ok(device_id) = DeviceId::new(id) else {
                return Vec::new();
            };
            let msg = Telemetry {
                device_id,
                seq,
                ts_ms: None,
                data: TelemetryData::Bin(BinTelemetry {
                    fill_pct: 42.5,
                    distance_mm: Some(690),
                    temperature_c: 21.5,
                    tilt_deg: None,
                    battery_pct: 88,
                }),
            };
            let mut buf = [0u8; 256];
            encode_binary(&msg, &mut buf).map_or_else(|_| Vec::new(), |n| buf[..n].to_vec())
        }
    }
}

fn topic(id: &str, channel: &str) -> String {
    format!("streetgate/v1/{id}/{channel}")
}

/// Which broker a run uses.
#[derive(Debug, Clone)]
enum Broker {
    /// The gateway's own.
    Embedded,
    /// An external broker at host:port.
    External {
        name: String,
        host: String,
        port: u16,
    },
}

impl Broker {
    fn name(&self) -> &str {
        match self {
            Self::Embedded => "embedded",
            Self::External { name, .. } => name,
        }
    }
}

/// Peak resident set of this process since the last [`reset_peak_rss`], KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Reset the kernel's peak-RSS mark of this process (Linux ≥ 4.0); false if not possible.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn mib(kib: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let k = kib as f64;
    k / 1024.0
}

fn rate(n: u64, d: Duration) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let n = n as f64;
    n / d.as_secs_f64().max(1e-9)
}

/// A QoS 1 client whose event loop runs on its own task.
struct Client {
    client: AsyncClient,
    acked: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    last_received: Arc<std::sync::Mutex<Option<Instant>>>,
    connected: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    async fn connect(id: &str, host: &str, port: u16, clean: bool) -> anyhow::Result<Self> {
        let mut opts = MqttOptions::new(id, host, port);
        opts.set_inflight(1000);
        opts.set_clean_session(clean);
        opts.set_keep_alive(Duration::from_secs(60));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, 10_000);
        let acked = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let last_received = Arc::new(std::sync::Mutex::new(None));
        let connected = Arc::new(AtomicBool::new(false));
        let task = {
            let (acked, received, last, connected) = (
                Arc::clone(&acked),
                Arc::clone(&received),
                Arc::clone(&last_received),
                Arc::clone(&connected),
            );
            tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::PubAck(_))) => {
                            acked.fetch_add(1, Relaxed);
                        }
                        Ok(Event::Incoming(Packet::Publish(_))) => {
                            received.fetch_add(1, Relaxed);
                            if let Ok(mut l) = last.lock() {
                                *l = Some(Instant::now());
                            }
                        }
                        Ok(Event::Incoming(Packet::ConnAck(_))) => connected.store(true, Relaxed),
                        Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                        Ok(_) => {}
                        Err(_) => {
                            connected.store(false, Relaxed);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            })
        };
        let c = Self {
            client,
            acked,
            received,
            last_received,
            connected,
            task,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !c.connected.load(Relaxed) {
            if Instant::now() > deadline {
                bail!("MQTT client {id} could not connect to {host}:{port}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(c)
    }

    async fn subscribe(&self, filter: &str) -> anyhow::Result<()> {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .context("subscribing")?;
        // No SubAck event counter: give the broker a moment to install the subscription.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(())
    }

    async fn stop(self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

/// Send `per_publisher` messages from each of `publishers` clients as fast as the broker takes
/// them; each publisher owns its own devices, so each device's numbers stay in order. Returns
/// when every message is acknowledged, with the time of the first publish and the per-device
/// message counts and last sequence numbers.
async fn publish_burst(
    host: &str,
    port: u16,
    opts: &BenchOptions,
    encoding: Encoding,
    tag: &str,
) -> anyhow::Result<(Instant, HashMap<String, (u64, u32)>)> {
    let publishers = opts.publishers.max(1);
    let per_publisher = opts.messages / publishers;
    let own = (opts.devices / publishers).max(1);
    let mut clients = Vec::new();
    for p in 0..publishers {
        clients.push(Client::connect(&format!("bench-{tag}-pub-{p}"), host, port, true).await?);
    }
    let mut expected: HashMap<String, (u64, u32)> = HashMap::new();
    for p in 0..publishers {
        for i in 0..per_publisher {
            let id = bin_id(p * own + i % own);
            let seq = u32::try_from(i / own + 1).unwrap_or(u32::MAX);
            let e = expected.entry(id).or_default();
            e.0 += 1;
            e.1 = e.1.max(seq);
        }
    }
    let start = Instant::now();
    let mut senders = Vec::new();
    for (p, c) in clients.iter().enumerate() {
        let client = c.client.clone();
        senders.push(tokio::spawn(async move {
            for i in 0..per_publisher {
                let id = bin_id(p * own + i % own);
                let seq = u32::try_from(i / own + 1).unwrap_or(u32::MAX);
                let payload = telemetry_payload(encoding, &id, seq);
                if client
                    .publish(topic(&id, "telemetry"), QoS::AtLeastOnce, false, payload)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }));
    }
    for s in senders {
        let _ = s.await;
    }
    let total = (per_publisher * publishers) as u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    while clients.iter().map(|c| c.acked.load(Relaxed)).sum::<u64>() < total {
        if Instant::now() > deadline {
            bail!("the broker did not acknowledge every publish within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for c in clients {
        c.stop().await;
    }
    Ok((start, expected))
}

/// The inventory CSV of `bins` bins plus `covers` manholes, all on MQTT.
fn fleet_csv(bins: usize, covers: usize) -> String {
    let mut csv = String::from("id,kind,lat,lon,grid\n");
    for i in 0..bins {
        let _ = writeln!(csv, "{},bin,31.3,120.6,G{}", bin_id(i), i % 85);
    }
    for i in 0..covers {
        let _ = writeln!(csv, "MH-{i:05},manhole,31.3,120.6,G{}", i % 85);
    }
    csv
}

fn gateway_config(dir: &Path, broker: &Broker, csv: &str, tag: &str) -> anyhow::Result<Config> {
    let inventory = dir.join("inventory.csv");
    std::fs::write(&inventory, csv).context("writing the inventory")?;
    let mut c = Config::default();
    c.http.listen = "127.0.0.1:0".parse().context("address")?;
    c.broker.listen = "127.0.0.1:0".parse().context("address")?;
    c.store.path = dir.join("streetgate.db");
    // The bench's publishers each send for many devices: device authentication is measured
    // apart (it costs only at connect).
    c.broker.auth = streetgate_gateway::broker::AuthMode::Open;
    c.inventory.import_csv = Some(inventory);
    c.mqtt.client_id = format!("streetgate-bench-{tag}-{}", std::process::id());
    c.mqtt.reconnect_min_ms = 50;
    c.mqtt.reconnect_max_ms = 1000;
    c.broker.max_inflight = 1000;
    c.mqtt.inflight = 1000;
    if let Broker::External { host, port, .. } = broker {
        c.broker.embedded = Some(false);
        c.mqtt.url = Some(format!("mqtt://{host}:{port}"));
    }
    Ok(c)
}

/// The broker address to publish to for a running gateway (or the external broker).
fn broker_addr(broker: &Broker, running: &Running) -> anyhow::Result<(String, u16)> {
    match broker {
        Broker::External { host, port, .. } => Ok((host.clone(), *port)),
        Broker::Embedded => {
            let a: SocketAddr = running
                .broker_addr
                .context("the embedded broker is not running")?;
            Ok((a.ip().to_string(), a.port()))
        }
    }
}

/// Wait until the gateway reports its MQTT subscriptions in place (up to 10 s; a gateway whose
/// consumer is attached in another way may never report it: the stored-message check still
/// tells whether anything was lost).
async fn wait_subscribed(running: &Running) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while running.state.metrics.mqtt_subscribed.load(Relaxed) != 1 {
        if Instant::now() > deadline {
            eprintln!(
                "note: the gateway did not report its MQTT subscriptions within 10 s; going on"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// One ingest comparison's figures.
struct IngestFigures {
    complete: bool,
    broker_rate: f64,
    gateway_rate: f64,
    stored: u64,
    total: u64,
    check: String,
    peak_rss_kib: Option<u64>,
}

/// The broker alone: publishers → broker → a counting subscriber.
async fn broker_alone(
    broker: &Broker,
    opts: &BenchOptions,
    encoding: Encoding,
) -> anyhow::Result<f64> {
    // For the embedded broker: the same broker with no gateway attached, serving only the
    // bench's clients.
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut alone = None;
    let (host, port) = match broker {
        Broker::Embedded => {
            let cfg = streetgate_gateway::config::BrokerConfig {
                listen: "127.0.0.1:0".parse().context("address")?,
                max_inflight: 1000,
                // The counting subscriber is an ordinary client: let the broker queue the
                // whole burst for it rather than drop what it has not read yet.
                max_queued_messages: opts.messages + 1000,
                ..Default::default()
            };
            let b = streetgate_gateway::broker::start(
                &cfg,
                None,
                None,
                Arc::default(),
                Arc::new(streetgate_gateway::broker::ClientAuth::open()),
                cancel.clone(),
            )
            .await
            .context("starting the embedded broker")?;
            let addr = (b.addr.ip().to_string(), b.addr.port());
            alone = Some(b);
            addr
        }
        Broker::External { host, port, .. } => (host.clone(), *port),
    };
    let sub = Client::connect("bench-counting-subscriber", &host, port, true).await?;
    sub.subscribe("streetgate/v1/+/telemetry").await?;
    let (start, expected) = publish_burst(&host, port, opts, encoding, "alone").await?;
    let total: u64 = expected.values().map(|(n, _)| n).sum();
    let mut last_count = 0;
    let mut last_progress = Instant::now();
    while sub.received.load(Relaxed) < total {
        let now = sub.received.load(Relaxed);
        if now != last_count {
            last_count = now;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  broker alone: the subscriber received {now} of {total} (no progress for 10 s)"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let received = sub.received.load(Relaxed);
    let end = sub
        .last_received
        .lock()
        .ok()
        .and_then(|l| *l)
        .unwrap_or_else(Instant::now);
    sub.stop().await;
    cancel.cancel();
    if let Some(b) = alone {
        b.join().await;
    }
    Ok(rate(received, end.duration_since(start)))
}

/// The gateway on the broker: publishers → broker → gateway → store.
async fn gateway_ingest(
    broker: &Broker,
    opts: &BenchOptions,
    encoding: Encoding,
) -> anyhow::Result<(f64, u64, u64, String, Option<u64>)> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let tag = format!("ingest-{}", encoding.name().to_lowercase());
    let mut c = gateway_config(dir.path(), broker, &fleet_csv(opts.devices, 0), &tag)?;
    if let Some(keep) = opts.history_per_device {
        c.store.history_per_device = keep;
    }
    let client_id = c.mqtt.client_id.clone();
    let rss_reset = reset_peak_rss();
    let running = app::start(c).await.context("starting the gateway")?;
    wait_subscribed(&running).await?;
    let (host, port) = broker_addr(broker, &running)?;
    let metrics = Arc::clone(&running.state.metrics);
    let stored_before = metrics.store_readings.load(Relaxed);
    let batches_before = metrics.store_batches.load(Relaxed);
    let (start, expected) = publish_burst(&host, port, opts, encoding, "gw").await?;
    let total: u64 = expected.values().map(|(n, _)| n).sum();
    let mut last = 0;
    let mut last_progress = Instant::now();
    let mut end = Instant::now();
    loop {
        let stored = metrics.store_readings.load(Relaxed) - stored_before;
        if stored >= total {
            end = Instant::now();
            break;
        }
        if stored != last {
            last = stored;
            last_progress = Instant::now();
            end = last_progress;
        } else if last_progress.elapsed() > Duration::from_secs(15) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let stored = metrics.store_readings.load(Relaxed) - stored_before;
    let commits = metrics.store_batches.load(Relaxed) - batches_before;
    let gw_rate = rate(stored, end.duration_since(start));
    let peak = if rss_reset { peak_rss_kib() } else { None };
    // Every message stored: each device's sequence state is committed with its readings.
    let states = running.state.store.seq_states().await?;
    let mut short = 0usize;
    let mut missing_msgs = 0u64;
    for (id, (count, last_seq)) in &expected {
        let ok = DeviceId::new(id)
            .ok()
            .and_then(|d| states.get(&d))
            .is_some_and(|s| s.accepted == *count && s.last_seq == *last_seq && s.missing == 0);
        if !ok {
            short += 1;
            let got = DeviceId::new(id)
                .ok()
                .and_then(|d| states.get(&d))
                .map_or(0, |s| s.accepted);
            missing_msgs += count.saturating_sub(got);
        }
    }
    let check = if short == 0 {
        format!(
            "all {} devices: every message accepted and committed, none missing",
            expected.len()
        )
    } else {
        format!("{short} devices incomplete, {missing_msgs} messages not stored")
    };
    let check = format!(
        "{check} ({commits} commits, {} readings each on average)",
        stored / commits.max(1)
    );
    running.shutdown().await?;
    // Leave no persistent session behind on an external broker: it would queue every later
    // message (the next run's included) for a client that never comes back.
    if let Broker::External { host, port, .. } = broker {
        if let Ok(c) = Client::connect(&client_id, host, *port, true).await {
            c.stop().await;
        }
    }
    Ok((gw_rate, stored, total, check, peak))
}

async fn ingest_section(opts: &BenchOptions, brokers: &[Broker]) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    let history = match opts.history_per_device {
        None => "store defaults (history kept)".to_owned(),
        Some(0) => "latest readings only, no history".to_owned(),
        Some(n) => format!("history of {n} readings per device"),
    };
    println!(
        "\n== ingest: {} messages, {} QoS 1 publishers, {} bins, {history} ==",
        opts.messages, opts.publishers, opts.devices
    );
    println!(
        "{:<10} {:<7} {:>14} {:>14} {:>7} {:>10}  check",
        "broker", "payload", "broker msg/s", "gateway msg/s", "ratio", "peak RSS"
    );
    for broker in brokers {
        for encoding in [Encoding::Json, Encoding::Binary] {
            let broker_rate = broker_alone(broker, opts, encoding).await?;
            let (gateway_rate, stored, total, check, peak_rss_kib) =
                gateway_ingest(broker, opts, encoding).await?;
            let f = IngestFigures {
                complete: stored == total && check.starts_with("all "),
                broker_rate,
                gateway_rate,
                stored,
                total,
                check,
                peak_rss_kib,
            };
            println!(
                "{:<10} {:<7} {:>14.0} {:>14.0} {:>6.2}× {:>10}  stored {}/{}: {}",
                broker.name(),
                encoding.name(),
                f.broker_rate,
                f.gateway_rate,
                f.gateway_rate / f.broker_rate.max(1e-9),
                f.peak_rss_kib
                    .map_or_else(|| "n/a".to_owned(), |k| format!("{:.0} MiB", mib(k))),
                f.stored,
                f.total,
                f.check
            );
            if !f.complete {
                problems.push(format!(
                    "{} broker, {}: {}",
                    broker.name(),
                    encoding.name(),
                    f.check
                ));
            }
        }
    }
    println!(
        "(peak RSS: this process while the gateway ran in it, publishers and subscriber included)"
    );
    Ok(problems)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn latency_section(opts: &BenchOptions) -> anyhow::Result<Vec<String>> {
    let covers = opts.alarms;
    println!(
        "\n== alarm → case committed, under a steady {} msg/s telemetry load ({} bins, {} alarms on {covers} covers, embedded broker) ==",
        opts.load_rate, opts.devices, opts.alarms
    );
    let dir = tempfile::tempdir().context("temp dir")?;
    let c = gateway_config(
        dir.path(),
        &Broker::Embedded,
        &fleet_csv(opts.devices, covers),
        "latency",
    )?;
    let running = app::start(c).await.context("starting the gateway")?;
    wait_subscribed(&running).await?;
    let (host, port) = broker_addr(&Broker::Embedded, &running)?;

    // Steady load: each publisher keeps to its share of the rate, own devices, in order.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let publishers = opts.publishers.max(1);
    let own = (opts.devices / publishers).max(1);
    let share = f64::from(opts.load_rate) / publishers as f64;
    let mut load = Vec::new();
    for p in 0..publishers {
        let client = Client::connect(&format!("bench-load-{p}"), &host, port, true).await?;
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        load.push(tokio::spawn(async move {
            let start = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            let mut i = 0usize;
            while !stop.load(Relaxed) {
                tick.tick().await;
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let due = (start.elapsed().as_secs_f64() * share) as usize;
                while i < due {
                    let id = bin_id(p * own + i % own);
                    let seq = u32::try_from(i / own + 1).unwrap_or(u32::MAX);
                    let payload = telemetry_payload(Encoding::Json, &id, seq);
                    if client
                        .client
                        .publish(topic(&id, "telemetry"), QoS::AtLeastOnce, false, payload)
                        .await
                        .is_err()
                    {
                        return client;
                    }
                    sent.fetch_add(1, Relaxed);
                    i += 1;
                }
            }
            client
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let alarm = Client::connect("bench-alarms", &host, port, true).await?;
    let store = Arc::clone(&running.state.store);
    // One watcher follows the case events (the alert outbox) every millisecond: the first
    // event of a cover's case is its registration, committed with the case.
    let published: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
    let watcher = {
        let (store, published) = (Arc::clone(&store), Arc::clone(&published));
        let mut cursor = 0i64;
        let expected = opts.alarms;
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60 + expected as u64 / 10);
            while latencies.len() < expected && Instant::now() < deadline {
                if let Ok(events) = store.case_events_after(cursor, 1000).await {
                    let now = Instant::now();
                    for e in events {
                        cursor = cursor.max(e.event_id);
                        if e.entry.from.is_some() {
                            continue;
                        }
                        let id = e.case.subject_key.trim_start_matches("device:");
                        if let Some(t) = published.lock().ok().and_then(|mut p| p.remove(id)) {
                            latencies.push(now.duration_since(t));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            latencies
        })
    };
    let load_start = sent.load(Relaxed);
    let window_start = Instant::now();
    for i in 0..opts.alarms {
        let id = format!("MH-{i:05}");
        let payload = format!(
            r#"{{"device_id":"{id}","seq":1,"alarm":"cover_open","state":"raised","value":64.0}}"#
        );
        if let Ok(mut p) = published.lock() {
            p.insert(id.clone(), Instant::now());
        }
        alarm
            .client
            .publish(topic(&id, "event"), QoS::AtLeastOnce, false, payload)
            .await
            .context("publishing an alarm")?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut latencies = watcher.await.unwrap_or_default();
    let lost = opts.alarms - latencies.len();
    let achieved = rate(sent.load(Relaxed) - load_start, window_start.elapsed());
    stop.store(true, Relaxed);
    for l in load {
        if let Ok(c) = l.await {
            c.stop().await;
        }
    }
    alarm.stop().await;
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "load achieved {achieved:.0} msg/s; {} of {} cases committed: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (goal p99 ≤ 10 ms){}",
        latencies.len(),
        opts.alarms,
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
        if lost > 0 {
            format!("; {lost} alarms without a case in time")
        } else {
            String::new()
        }
    );
    println!(
        "(from the publish call to the case's registration event read back from the store, polled every 1 ms)"
    );
    running.shutdown().await?;
    Ok(if lost > 0 {
        vec![format!(
            "{lost} of {} alarms never became a case",
            opts.alarms
        )]
    } else {
        Vec::new()
    })
}

/// The decode workers' work alone, one core: topic, inventory lookup, decode, validation,
/// sequence check.
fn normaliser_section(opts: &BenchOptions) -> anyhow::Result<()> {
    use streetgate_gateway::ingest::{Normaliser, Outcome, RawUplink};
    use streetgate_gateway::inventory::{Inventory, parse_csv};
    use streetgate_gateway::metrics::Metrics;
    let devices = opts.devices.max(1);
    let total = opts.messages;
    println!(
        "\n== normaliser (decode + validate + sequence check), one core: {total} messages, {devices} bins =="
    );
    let inventory = Arc::new(Inventory::new(
        parse_csv(fleet_csv(devices, 0).as_bytes()).context("the bench inventory")?,
    ));
    for encoding in [Encoding::Json, Encoding::Binary] {
        let mut n = Normaliser::new(
            inventory.reader(),
            streetgate_protocols::codec::Limits::default(),
            Arc::new(Metrics::default()),
        );
        let msgs: Vec<RawUplink> = (0..total)
            .map(|i| {
                let id = bin_id(i % devices);
                let seq = u32::try_from(i / devices + 1).unwrap_or(u32::MAX);
                RawUplink {
                    topic: topic(&id, "telemetry"),
                    payload: telemetry_payload(encoding, &id, seq).into(),
                    retained: false,
                    received_ms: 0,
                    ack: Default::default(),
                }
            })
            .collect();
        let t = Instant::now();
        let accepted = msgs
            .iter()
            .filter(|m| matches!(n.normalise(m), Outcome::Accepted(_)))
            .count();
        let dt = t.elapsed();
        println!(
            "{:<7} {:>10.0} msg/s ({:.2} µs/msg; {accepted} of {total} accepted)",
            encoding.name(),
            rate(total as u64, dt),
            dt.as_secs_f64() * 1e6 / total.max(1) as f64
        );
    }
    Ok(())
}

fn lighting_section(opts: &BenchOptions) {
    let n = opts.lamps;
    println!("\n== lighting rate: {n} lamps, 30 per road segment, 1000 grids ==");
    let lamps: Vec<LampView> = (0..n)
        .filter_map(|i| {
            Some(LampView {
                device: DeviceId::new(&format!("SL-{i:07}")).ok()?,
                segment: Some(format!("S-{}", i / 30)),
                grid: format!("G{}", (i / 30) % 1000),
                road_class: Some(if i % 3 == 0 {
                    RoadClass::Main
                } else {
                    RoadClass::Secondary
                }),
                should_be_on: true,
                lit: i % 50 != 0,
            })
        })
        .collect();
    let config = LightingConfig::default();
    let mut best = Duration::MAX;
    let mut report = LightingReport::default();
    for _ in 0..3 {
        let t = Instant::now();
        report = LightingReport::compute(&lamps, &config);
        best = best.min(t.elapsed());
    }
    let mut history = LightingHistory::default();
    let t = Instant::now();
    history.accumulate(&lamps, 0, 1000);
    let accumulate = t.elapsed();
    println!(
        "LightingReport::compute: {:.1} ms (best of 3; {} segments, {} grids, city rate {:.3}); LightingHistory::accumulate: {:.1} ms",
        best.as_secs_f64() * 1000.0,
        report.segments.len(),
        report.grids.len(),
        report.city.as_ref().map_or(0.0, |c| c.rate),
        accumulate.as_secs_f64() * 1000.0
    );
}

async fn modbus_section(opts: &BenchOptions) -> anyhow::Result<Vec<String>> {
    let units = opts.modbus_units;
    let converters = opts.converters.max(1);
    let per = units.div_ceil(converters);
    println!(
        "\n== Modbus TCP polling: {units} units behind {converters} converters ({per} unit ids per port), poll interval {} ms ==",
        opts.modbus_poll_ms
    );
    anyhow::ensure!(per <= 247, "at most 247 units per converter");
    let mut bound = Vec::new();
    let mut csv = String::from("id,kind,lat,lon,grid,road_segment,transport\n");
    for c in 0..converters {
        let count = per.min(units.saturating_sub(c * per));
        if count == 0 {
            break;
        }
        let served: Vec<(u8, Arc<Unit>)> = (1..=count)
            .filter_map(|u| {
                let unit = Unit::new(DeviceKind::Streetlight);
                unit.set_answering(true);
                Some((u8::try_from(u).ok()?, unit))
            })
            .collect();
        let conv = Converter::bind(
            ([127, 0, 0, 1], 0).into(),
            served,
            ConverterConfig::default(),
        )
        .await
        .context("binding a converter")?;
        let addr = conv.local_addr();
        for u in 1..=count {
            let _ = writeln!(
                csv,
                "SL-M{c:02}-{u:03},streetlight,31.3,120.6,G1,S-{c},modbus-tcp {addr} {u}"
            );
        }
        bound.push(conv);
    }
    let dir = tempfile::tempdir().context("temp dir")?;
    let mut c = gateway_config(dir.path(), &Broker::Embedded, &csv, "modbus")?;
    c.modbus.poll_interval_ms = opts.modbus_poll_ms;
    c.modbus.request_timeout_ms = 1000;
    // The converters listen on loopback, which the gateway's defaults do not allow.
    c.modbus.allowed_endpoints = vec!["127.0.0.1/32".to_owned()];
    let running = app::start(c).await.context("starting the gateway")?;
    let metrics = Arc::clone(&running.state.metrics);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = metrics.ingested_total("modbus-tcp");
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(opts.modbus_secs)).await;
    let polled = metrics.ingested_total("modbus-tcp") - before;
    let per_s = rate(polled, t.elapsed());
    let answered: u64 = bound.iter().map(|c| c.stats.answered.load(Relaxed)).sum();
    println!(
        "{per_s:.0} units polled per second ({polled} readings in {} s; goal ≥ 1000/s; the poll interval caps it at {:.0}/s); converters answered {answered} requests in all",
        opts.modbus_secs,
        rate(
            units as u64,
            Duration::from_millis(opts.modbus_poll_ms.max(1))
        ),
    );
    running.shutdown().await?;
    drop(bound);
    Ok(if polled == 0 {
        vec!["no Modbus unit was polled".to_owned()]
    } else {
        Vec::new()
    })
}

/// A Mosquitto child started with the deploy configuration.
struct Mosquitto {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const DEPLOY_MOSQUITTO: &str = include_str!("../../deploy/mosquitto/streetgate.conf");

fn start_mosquitto(bin: &Path) -> anyhow::Result<Mosquitto> {
    let dir = tempfile::tempdir().context("temp dir")?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Started as root, Mosquitto drops to its own user, which must write here.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;
    }
    let free = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = free.local_addr()?.port();
    drop(free);
    let mut conf = String::new();
    for line in DEPLOY_MOSQUITTO.lines() {
        let key = line.split_whitespace().next().unwrap_or("");
        let line = match key {
            "listener" => format!("listener {port} 127.0.0.1"),
            "persistence_location" => format!("persistence_location {}/", dir.path().display()),
            "log_dest" => format!("log_dest file {}/mosquitto.log", dir.path().display()),
            "allow_anonymous" => "allow_anonymous true".to_owned(),
            // The bench's publishers are anonymous load generators, each sending for many
            // devices: no password file, ACL or user-name client ids.
            "password_file" | "acl_file" | "use_username_as_clientid" => continue,
            _ => line.to_owned(),
        };
        conf.push_str(&line);
        conf.push('\n');
    }
    let path = dir.path().join("mosquitto.conf");
    std::fs::write(&path, conf)?;
    let child = Command::new(bin)
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let m = Mosquitto {
        child,
        port,
        _dir: dir,
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(m);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{} did not listen on port {port}", bin.display())
}

fn parse_url(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .unwrap_or(url);
    let (host, port) = rest.rsplit_once(':').unwrap_or((rest, "1883"));
    let port = port
        .trim_end_matches('/')
        .parse()
        .with_context(|| format!("--mqtt-url {url}: bad port"))?;
    Ok((host.to_owned(), port))
}

/// Run the bench and print its figures; an error when any message was not stored, an alarm
/// never became a case or no Modbus unit was polled (after printing everything).
pub async fn run(opts: &BenchOptions) -> anyhow::Result<()> {
    let build = if cfg!(debug_assertions) {
        "DEBUG build (figures far below release)"
    } else {
        "release build"
    };
    println!(
        "streetgate bench: {build}, {} CPUs",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    );
    let wants = |s: &str| opts.sections.iter().any(|x| x == s);
    let mut mosquitto = None;
    let mut brokers = vec![Broker::Embedded];
    if let Some(url) = &opts.mqtt_url {
        let (host, port) = parse_url(url)?;
        brokers.push(Broker::External {
            name: "external".to_owned(),
            host,
            port,
        });
    } else if let Some(bin) = opts.mosquitto_bin.as_ref().filter(|_| wants("ingest")) {
        let m = start_mosquitto(bin)?;
        brokers.push(Broker::External {
            name: "mosquitto".to_owned(),
            host: "127.0.0.1".to_owned(),
            port: m.port,
        });
        mosquitto = Some(m);
    }
    let mut problems = Vec::new();
    if wants("ingest") {
        problems.extend(ingest_section(opts, &brokers).await?);
    }
    if wants("latency") {
        problems.extend(latency_section(opts).await?);
    }
    if wants("normaliser") {
        normaliser_section(opts)?;
    }
    if wants("lighting") {
        lighting_section(opts);
    }
    if wants("modbus") {
        problems.extend(modbus_section(opts).await?);
    }
    drop(mosquitto);
    if !problems.is_empty() {
        bail!(
            "messages were lost or work not done:\n  {}",
            problems.join("\n  ")
        );
    }
    Ok(())
}
