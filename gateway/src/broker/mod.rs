//! The embedded MQTT 3.1.1 broker, built for the one subscriber that matters: the gateway.
//!
//! A general-purpose broker acknowledges a device's PUBLISH once the message is in its own
//! queue, then delivers it to subscribers as fast as they read; when the gateway lags, the
//! queue overflows and acknowledged messages are dropped (or, right after a restart, a device
//! publishes before the gateway has subscribed). Here the gateway is not a network client: its
//! decode workers are attached as the broker's [`Consumer`] before the listener accepts the
//! first connection, and an uplink is handed to them in-process with its [`Ack`]. The device
//! gets its PUBACK only once the reading (and any case it caused) is committed, and a device
//! whose messages the gateway cannot take yet is simply not read from (TCP backpressure), so
//! memory stays bounded and nothing acknowledged is ever dropped.
//!
//! Everything else is ordinary MQTT 3.1.1 for the other clients (the gateway's own publisher of
//! alerts and commands, devices subscribing to their `config`/`command`, monitoring tools):
//! QoS 0 and 1 delivery (QoS 2 publishes are accepted and delivered at QoS 1), retained
//! messages, last wills, persistent sessions with a bounded offline queue, keep-alive, session
//! takeover. What it cannot hold for those subscribers is dropped and counted, never silently.
//!
//! ```text
//! device ─TCP─▶ connection task ─RawUplink + Ack─▶ decode workers ─▶ pipeline ─▶ store writer
//!                   ▲                                                                 │
//!                   └────────────────────────── PUBACK after commit ◀─────────────────┘
//! ```
//!
//! [`Ack`]: crate::ingest::ack::Ack

mod config;
mod conn;
mod router;
pub mod topic;

use std::hash::RandomState;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::ingest::{RawUplink, shard_for};

use router::Router;

pub use config::{BrokerConfig, DEFAULT_BROKER_LISTEN};

/// The embedded broker failed to start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The listen address is taken or not bindable.
    #[error(
        "{key} = {addr}: cannot listen there ({error}); another MQTT broker (Mosquitto?) may already use it: choose another address, or use that broker with mqtt.url = \"mqtt://{addr}\""
    )]
    Bind {
        /// Config key.
        key: &'static str,
        /// Address.
        addr: SocketAddr,
        /// The OS error.
        error: std::io::Error,
    },
}

/// The gateway's in-process subscription: messages matching `filters` are handed to the decode
/// worker owning the device (see [`shard_for`]), waiting while that worker's queue is full.
/// Messages the gateway publishes itself (its `own_clients`: alerts, commands, configs) are not
/// handed back to it.
#[derive(Debug)]
pub struct Consumer {
    /// Topic filters, e.g. `streetgate/v1/#`.
    pub filters: Vec<String>,
    /// Client ids of the gateway's own connections.
    pub own_clients: Vec<String>,
    /// Decode worker inputs.
    pub inputs: Vec<mpsc::Sender<RawUplink>>,
    /// Receive times are read from this clock.
    pub clock: Clock,
    hasher: RandomState,
}

impl Consumer {
    /// A consumer feeding `inputs` with what matches `filters`.
    pub fn new(
        filters: Vec<String>,
        own_clients: Vec<String>,
        inputs: Vec<mpsc::Sender<RawUplink>>,
        clock: Clock,
    ) -> Self {
        Self {
            filters,
            own_clients,
            inputs,
            clock,
            hasher: RandomState::new(),
        }
    }

    fn wants(&self, client: &str, topic: &str) -> bool {
        self.filters.iter().any(|f| topic::matches(f, topic))
            && !self.own_clients.iter().any(|c| c == client)
    }

    /// Hand one uplink over, waiting for room; `false` once the workers are gone.
    async fn deliver(&self, raw: RawUplink) -> bool {
        let shard = shard_for(&raw.topic, self.inputs.len(), &self.hasher);
        match self.inputs.get(shard) {
            Some(input) => input.send(raw).await.is_ok(),
            None => false,
        }
    }
}

/// Counters of the embedded broker (rendered with the gateway's metrics).
#[derive(Debug, Default)]
pub struct BrokerMetrics {
    /// Client connections open now.
    pub connections: AtomicUsize,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections refused: the connection cap was reached.
    pub refused_max_connections: AtomicU64,
    /// Connections closed for a protocol violation (bad packet, wildcard in a topic name, ...).
    pub protocol_errors: AtomicU64,
    /// Connections closed because no packet arrived within 1.5 × keep-alive.
    pub keepalive_timeouts: AtomicU64,
    /// Last wills published.
    pub wills: AtomicU64,
    /// Messages for other subscribers dropped because the subscriber's queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Retained messages not kept because `broker.max_retained` was reached.
    pub dropped_retained_full: AtomicU64,
    /// Failed `accept` calls (e.g. out of file descriptors).
    pub accept_errors: AtomicU64,
}

impl BrokerMetrics {
    /// Render in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let mut line = |name: &str, kind: &str, help: &str, labels: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{labels} {value}"
            );
        };
        line(
            "streetgate_broker_connections",
            "gauge",
            "Client connections open on the embedded broker.",
            "",
            self.connections.load(Relaxed) as u64,
        );
        line(
            "streetgate_broker_connections_total",
            "counter",
            "Client connections accepted by the embedded broker.",
            "",
            self.connections_total.load(Relaxed),
        );
        line(
            "streetgate_broker_wills_total",
            "counter",
            "Last wills published by the embedded broker.",
            "",
            self.wills.load(Relaxed),
        );
        line(
            "streetgate_broker_accept_errors_total",
            "counter",
            "Failed accepts on the embedded broker's listener (e.g. out of file descriptors).",
            "",
            self.accept_errors.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP streetgate_broker_refused_total Connections the embedded broker closed, by reason.\n# TYPE streetgate_broker_refused_total counter"
        );
        for (reason, c) in [
            ("max_connections", &self.refused_max_connections),
            ("protocol_error", &self.protocol_errors),
            ("keepalive_timeout", &self.keepalive_timeouts),
        ] {
            let _ = writeln!(
                out,
                "streetgate_broker_refused_total{{reason=\"{reason}\"}} {}",
                c.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP streetgate_broker_dropped_total Messages for subscribers other than the gateway that the embedded broker could not hold, by reason (device uplinks to the gateway are never dropped).\n# TYPE streetgate_broker_dropped_total counter"
        );
        for (reason, c) in [
            ("subscriber_queue_full", &self.dropped_queue_full),
            ("retained_full", &self.dropped_retained_full),
        ] {
            let _ = writeln!(
                out,
                "streetgate_broker_dropped_total{{reason=\"{reason}\"}} {}",
                c.load(Relaxed)
            );
        }
    }
}

/// Limits a connection works within.
#[derive(Debug, Clone)]
struct Limits {
    max_connections: usize,
    max_packet_bytes: usize,
    max_inflight: u16,
    max_queued: usize,
    max_retained: usize,
    connect_timeout: Duration,
}

impl Limits {
    fn from_config(cfg: &BrokerConfig) -> Self {
        Self {
            max_connections: cfg.max_connections,
            // A PUBLISH carries a topic (device topics are short) besides its payload.
            max_packet_bytes: cfg.max_payload_bytes + 1024,
            max_inflight: u16::try_from(cfg.max_inflight).unwrap_or(u16::MAX),
            max_queued: cfg.max_queued_messages,
            max_retained: cfg.max_retained,
            connect_timeout: Duration::from_millis(u64::from(cfg.connection_timeout_ms)),
        }
    }
}

/// State shared by the accept loop and every connection.
#[derive(Debug)]
struct Shared {
    limits: Limits,
    router: Router,
    consumer: Option<Consumer>,
    metrics: Arc<BrokerMetrics>,
    cancel: CancellationToken,
}

/// A running embedded broker.
#[derive(Debug)]
pub struct EmbeddedBroker {
    /// The MQTT 3.1.1 listener address.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl EmbeddedBroker {
    /// Wait for the accept loop to end (after the cancel token fired).
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

/// Start the broker: the consumer is attached before the listener accepts anything, so no
/// uplink can arrive before the gateway is there to take it. Stops on `cancel` (connections
/// are closed).
///
/// Persistent sessions (client id and subscriptions) are saved to `sessions_file` within about
/// half a second of changing and restored at start: a device reconnecting after a restart finds
/// its session present, so its MQTT client sends again what was not acknowledged instead of
/// discarding it (MQTT 3.1.1 §3.2.2.2). Offline queues are not saved.
pub async fn start(
    cfg: &BrokerConfig,
    consumer: Option<Consumer>,
    sessions_file: Option<PathBuf>,
    metrics: Arc<BrokerMetrics>,
    cancel: CancellationToken,
) -> Result<EmbeddedBroker, BrokerError> {
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|error| BrokerError::Bind {
            key: "broker.listen",
            addr: cfg.listen,
            error,
        })?;
    let addr = listener.local_addr().map_err(|error| BrokerError::Bind {
        key: "broker.listen",
        addr: cfg.listen,
        error,
    })?;
    let router = Router::default();
    if let Some(file) = &sessions_file {
        match load_sessions(file) {
            Ok(saved) => {
                tracing::info!(sessions = saved.len(), file = %file.display(), "persistent MQTT sessions restored");
                router.restore(saved);
            }
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "persistent MQTT sessions not restored")
            }
        }
    }
    let shared = Arc::new(Shared {
        limits: Limits::from_config(cfg),
        router,
        consumer,
        metrics,
        cancel,
    });
    if let Some(file) = sessions_file {
        tokio::spawn(save_sessions(Arc::clone(&shared), file));
    }
    let task = tokio::spawn(accept_loop(listener, shared));
    Ok(EmbeddedBroker { addr, task })
}

fn load_sessions(file: &Path) -> Result<Vec<router::SavedSession>, String> {
    match std::fs::read(file) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e.to_string()),
    }
}

/// Save the persistent sessions whenever they changed (checked every 500 ms, and at the end):
/// written to a temporary file, synced and renamed over the old one.
async fn save_sessions(shared: Arc<Shared>, file: PathBuf) {
    let save = |sessions: Vec<router::SavedSession>| {
        let file = file.clone();
        async move {
            let result = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                use std::io::Write;
                let tmp = file.with_extension("tmp");
                let json = serde_json::to_vec(&sessions).map_err(std::io::Error::other)?;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&json)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &file)
            })
            .await;
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "saving the persistent MQTT sessions failed")
                }
                Err(e) => tracing::warn!(error = %e, "saving the persistent MQTT sessions failed"),
            }
        }
    };
    loop {
        let stop = tokio::select! {
            () = shared.cancel.cancelled() => true,
            () = tokio::time::sleep(Duration::from_millis(500)) => false,
        };
        if let Some(sessions) = shared.router.take_changes() {
            save(sessions).await;
        }
        if stop {
            break;
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Failing accepts (out of descriptors) are retried after a pause and logged at most once
    // per interval: a busy loop logging each failure would fill the disk.
    let mut last_logged: Option<tokio::time::Instant> = None;
    let mut suppressed = 0u64;
    loop {
        let accepted = tokio::select! {
            () = shared.cancel.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let m = &shared.metrics;
                if m.connections.load(Relaxed) >= shared.limits.max_connections {
                    m.refused_max_connections.fetch_add(1, Relaxed);
                    drop(stream);
                    continue;
                }
                m.connections.fetch_add(1, Relaxed);
                m.connections_total.fetch_add(1, Relaxed);
                let _ = stream.set_nodelay(true);
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    conn::serve(&shared, stream, peer).await;
                    shared.metrics.connections.fetch_sub(1, Relaxed);
                });
            }
            Err(e) => {
                shared.metrics.accept_errors.fetch_add(1, Relaxed);
                let now = tokio::time::Instant::now();
                if last_logged.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10)) {
                    tracing::error!(error = %e, suppressed, "embedded broker cannot accept connections; retrying");
                    last_logged = Some(now);
                    suppressed = 0;
                } else {
                    suppressed += 1;
                }
                tokio::select! {
                    () = shared.cancel.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
    tracing::debug!("embedded broker stopped accepting");
}
