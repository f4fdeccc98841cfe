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
//! Devices may connect over TLS on a second listener (`broker.tls_listen`), and with
//! `broker.tls_client_ca` must present a certificate of that CA naming the client id they
//! connect with (mutual TLS); the connection task is the same for both listeners.
//!
//! ```text
//! device ─TCP─▶ connection task ─RawUplink + Ack─▶ decode workers ─▶ pipeline ─▶ store writer
//!                   ▲                                                                 │
//!                   └────────────────────────── PUBACK after commit ◀─────────────────┘
//! ```
//!
//! [`Ack`]: crate::ingest::ack::Ack

pub mod auth;
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

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::ingest::{RawUplink, shard_for};

use router::Router;

pub use auth::{AuthMode, ClientAuth};
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
    /// A TLS setting is wrong (a file missing or not what it should be).
    #[error("{0}")]
    Tls(#[from] crate::settings::Invalid),
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
    /// TLS connections closed before their handshake completed: failed (no client
    /// certificate, or one the CA did not sign; not TLS at all) or not done within
    /// `broker.connection_timeout_ms`.
    pub tls_handshake_failures: AtomicU64,
    /// CONNECTs refused with "not authorized": the client certificate names another client
    /// id, a client took one of the gateway's own client ids, or a device's will names a topic
    /// that is not its own status.
    pub refused_not_authorized: AtomicU64,
    /// CONNECTs refused with "bad user name or password" (`broker.auth = "devices"`): a wrong
    /// or missing secret, a user name other than the client id, or a client id without
    /// credentials.
    pub refused_bad_credentials: AtomicU64,
    /// PUBLISHes refused (the connection closed, nothing acknowledged): a device publishing
    /// outside its own uplink topics.
    pub denied_publish: AtomicU64,
    /// Subscriptions refused (SUBACK failure): a device subscribing outside its own `config`
    /// and `command`.
    pub denied_subscribe: AtomicU64,
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
            ("tls_handshake", &self.tls_handshake_failures),
            ("not_authorized", &self.refused_not_authorized),
            ("bad_credentials", &self.refused_bad_credentials),
        ] {
            let _ = writeln!(
                out,
                "streetgate_broker_refused_total{{reason=\"{reason}\"}} {}",
                c.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP streetgate_broker_denied_total Publishes and subscriptions the embedded broker refused because a device went outside its own topics.\n# TYPE streetgate_broker_denied_total counter"
        );
        for (action, c) in [
            ("publish", &self.denied_publish),
            ("subscribe", &self.denied_subscribe),
        ] {
            let _ = writeln!(
                out,
                "streetgate_broker_denied_total{{action=\"{action}\"}} {}",
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
    auth: Arc<ClientAuth>,
    /// Refused connections, publishes and subscriptions are logged at most every 10 s.
    refusal_log: LogGate,
    cancel: CancellationToken,
}

/// Lets a log line through at most once per interval, counting the ones it held back.
#[derive(Debug)]
struct LogGate {
    interval: Duration,
    last: std::sync::Mutex<Option<std::time::Instant>>,
    suppressed: AtomicU64,
}

impl LogGate {
    fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: std::sync::Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` when a line may be logged now.
    fn allow(&self) -> Option<u64> {
        let now = std::time::Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < self.interval) {
            self.suppressed.fetch_add(1, Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Relaxed))
    }
}

/// A running embedded broker.
#[derive(Debug)]
pub struct EmbeddedBroker {
    /// The MQTT 3.1.1 listener address.
    pub addr: SocketAddr,
    /// The MQTT-over-TLS listener address (`broker.tls_listen`), when configured.
    pub tls_addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Wait for the accept loops to end (after the cancel token fired).
    pub async fn join(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// What the TLS listener asks of its clients.
#[derive(Clone)]
struct TlsListener {
    acceptor: tokio_rustls::TlsAcceptor,
    /// `broker.tls_client_ca` is set: the certificate must name the client id.
    client_certificates: bool,
}

/// Bind `addr` (named by `key` in errors).
async fn bind(
    key: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), BrokerError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|error| BrokerError::Bind { key, addr, error })?;
    let bound = listener
        .local_addr()
        .map_err(|error| BrokerError::Bind { key, addr, error })?;
    Ok((listener, bound))
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
    auth: Arc<ClientAuth>,
    cancel: CancellationToken,
) -> Result<EmbeddedBroker, BrokerError> {
    let tls = cfg.tls()?.map(|config| TlsListener {
        acceptor: tokio_rustls::TlsAcceptor::from(config),
        client_certificates: cfg.tls_client_ca.is_some(),
    });
    let (listener, addr) = bind("broker.listen", cfg.listen).await?;
    let tls = match (cfg.tls_listen, tls) {
        (Some(tls_listen), Some(tls)) => Some((bind("broker.tls_listen", tls_listen).await?, tls)),
        _ => None,
    };
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
        auth,
        refusal_log: LogGate::new(Duration::from_secs(10)),
        cancel,
    });
    if let Some(file) = sessions_file {
        tokio::spawn(save_sessions(Arc::clone(&shared), file));
    }
    let mut tasks = vec![tokio::spawn(accept_loop(
        listener,
        Arc::clone(&shared),
        None,
    ))];
    let tls_addr = tls.map(|((listener, tls_addr), tls)| {
        tasks.push(tokio::spawn(accept_loop(listener, shared, Some(tls))));
        tls_addr
    });
    Ok(EmbeddedBroker {
        addr,
        tls_addr,
        tasks,
    })
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

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, tls: Option<TlsListener>) {
    // Failing accepts (out of descriptors) are retried after a pause and logged at most once
    // per interval: a busy loop logging each failure would fill the disk.
    let accept_log = LogGate::new(Duration::from_secs(10));
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
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => conn::serve(&shared, stream, peer, conn::Identity::Any).await,
                        Some(tls) => serve_tls(&shared, &tls, stream, peer).await,
                    }
                    shared.metrics.connections.fetch_sub(1, Relaxed);
                });
            }
            Err(e) => {
                shared.metrics.accept_errors.fetch_add(1, Relaxed);
                if let Some(suppressed) = accept_log.allow() {
                    tracing::error!(error = %e, suppressed, "embedded broker cannot accept connections; retrying");
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

/// The TLS handshake (within `broker.connection_timeout_ms`, like CONNECT), then the
/// connection as over TCP; with client certificates, the name in the verified certificate is
/// the only client id it may connect with.
async fn serve_tls(shared: &Shared, tls: &TlsListener, stream: TcpStream, peer: SocketAddr) {
    let handshake = tokio::select! {
        () = shared.cancel.cancelled() => return,
        h = tokio::time::timeout(shared.limits.connect_timeout, tls.acceptor.accept(stream)) => h,
    };
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            shared.metrics.tls_handshake_failures.fetch_add(1, Relaxed);
            tracing::debug!(%peer, error = %e, "MQTT TLS handshake failed; connection closed");
            return;
        }
        Err(_) => {
            shared.metrics.tls_handshake_failures.fetch_add(1, Relaxed);
            tracing::debug!(%peer, "MQTT TLS handshake not done within broker.connection_timeout_ms; connection closed");
            return;
        }
    };
    let identity = if tls.client_certificates {
        let name = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(crate::tls::certificate_name);
        conn::Identity::Certificate(name)
    } else {
        conn::Identity::Any
    };
    conn::serve(shared, stream, peer, identity).await;
}
