//! Wiring: start every task of the gateway from a [`Config`], and stop them in order.
//!
//! Start: store (migrations) → inventory (+ optional CSV import) → store writer → pipeline →
//! decode workers → embedded broker with the workers attached (or the MQTT client of an external
//! broker) → publisher → housekeeping → HTTP.
//! Stop ([`Running::shutdown`]): cancel → the broker closes its connections (or the client
//! disconnects) and drops the worker inputs → workers, pipeline and writer drain in turn (each
//! committed message is acknowledged) → HTTP finishes in-flight requests → store closes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use streetgate_protocols::codec::Limits;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{AppState, RuntimeInfo};
use crate::commands::{AckWaiters, Commander};
use crate::config::{Config, StoreBackend};
use crate::ingest::modbus::ModbusSettings;
use crate::ingest::mqtt::MqttSettings;
use crate::ingest::{self, IngestContext};
use crate::inventory::{Inventory, parse_csv};
use crate::metrics::Metrics;
use crate::model::Reading;
use crate::pipeline::{self, StoreWriter, WriteOp, WriterSettings};
use crate::publisher::Publisher;
use crate::store::Store;
use crate::store::sqlite::SqliteStore;
use crate::{alerts, api, broker};

/// How long shutdown waits for the pipeline to drain before giving up on it.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A running gateway.
#[derive(Debug)]
pub struct Running {
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// Where the embedded broker listens, when it runs.
    pub broker_addr: Option<SocketAddr>,
    /// The broker the ingest connects to, `host:port`.
    pub mqtt_broker: String,
    /// Shared state (store, inventory, metrics).
    pub state: AppState,
    /// The first start on an empty store created the administrator `admin` with this random
    /// password (printed once; change it with `POST /api/session/password`).
    pub first_admin_password: Option<String>,
    ingest: IngestContext,
    cancel: CancellationToken,
    mqtt: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
    pipeline: JoinHandle<()>,
    writer: JoinHandle<()>,
    housekeeping: JoinHandle<()>,
    services: Vec<JoinHandle<()>>,
    http: JoinHandle<()>,
}

/// The address to connect to for a listener bound to `addr` (unspecified → loopback).
fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// Start the gateway.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    config.validate().context("invalid configuration")?;
    let started = Instant::now();
    let clock = config.clock.clock();
    if !clock.is_wall() {
        tracing::info!(
            speed = clock.speed(),
            now_ms = clock.now_ms(),
            "running on a simulated clock"
        );
    }
    let cancel = CancellationToken::new();
    let metrics = Arc::new(Metrics::default());

    // Store and inventory.
    let StoreBackend::Sqlite = config.store.backend;
    let store_path = config.store.path.clone();
    let sqlite = SqliteStore::open(&store_path).await.with_context(|| {
        format!(
            "opening the SQLite store at {} (store.path)",
            store_path.display()
        )
    })?;
    let store: Arc<dyn Store> = Arc::new(sqlite);
    // Secure by default: no user, no access; the first start creates the administrator.
    let first_admin_password =
        crate::auth::bootstrap_admin(store.as_ref(), crate::clock::wall_ms())
            .await
            .context("creating the first administrator")?;
    if let Some(password) = &first_admin_password {
        tracing::warn!(
            user = crate::auth::FIRST_ADMIN,
            password = %password,
            "no user in the store: created the administrator; sign in with POST /api/session and change this password (shown only now)"
        );
    }
    let devices = store
        .list_devices()
        .await
        .context("loading the inventory")?;
    let inventory = Arc::new(Inventory::new(devices));
    if let Some(csv) = &config.inventory.import_csv {
        let data = std::fs::read(csv)
            .with_context(|| format!("reading inventory.import_csv {}", csv.display()))?;
        let devices = parse_csv(&data).with_context(|| format!("importing {}", csv.display()))?;
        store
            .upsert_devices(&devices, clock.now_ms())
            .await
            .context("storing the imported inventory")?;
        tracing::info!(file = %csv.display(), devices = devices.len(), "inventory imported");
        inventory.upsert(devices);
    }

    // Pipeline, from the store backwards.
    let capacity = config.pipeline.channel_capacity;
    let (write_tx, write_rx) = mpsc::channel::<WriteOp>(capacity);
    let (reading_tx, reading_rx) = mpsc::channel::<Reading>(capacity);
    let (acked_tx, acked_rx) = mpsc::channel::<ingest::AckedReading>(capacity);
    let writer = tokio::spawn(
        StoreWriter::new(
            Arc::clone(&store),
            Arc::clone(&metrics),
            WriterSettings {
                batch_max: config.store.batch_max,
                keep_history: config.store.history_per_device > 0,
            },
        )
        .run(write_rx),
    );
    let (lighting_tx, lighting_rx) =
        tokio::sync::watch::channel(crate::lighting::LightingSnapshot::default());
    let automation = crate::automation::Automation::new(
        Arc::clone(&store),
        Arc::clone(&inventory),
        config.rules.clone(),
        config.cases.policy(),
        config.routing.router(),
        lighting_tx,
    )
    .await
    .context("loading the rule state")?;
    let acks = Arc::new(AckWaiters::default());
    let pipeline = tokio::spawn(pipeline::run_pipeline(
        acked_rx,
        reading_rx,
        write_tx.clone(),
        Arc::clone(&metrics),
        automation,
        Duration::from_secs(config.store.snapshot_interval_s),
        Arc::clone(&acks),
        clock,
    ));
    let limits = Limits {
        max_payload: config.mqtt.max_payload_bytes,
    };
    let seq_seeds = Arc::new(
        store
            .seq_states()
            .await
            .context("loading sequence states")?,
    );
    let (worker_inputs, mut workers) = ingest::spawn_decode_workers(
        config.pipeline.decode_workers,
        capacity,
        limits,
        &inventory,
        &metrics,
        &acked_tx,
        &write_tx,
        &seq_seeds,
    );
    drop(write_tx);
    drop(acked_tx);

    // MQTT: the embedded broker with the decode workers attached before it accepts anyone, or
    // the client of an external broker.
    let (broker_addr, settings, mqtt) = if config.broker_embedded() {
        // In-process, the gateway takes every device publish under the prefix: what is not an
        // uplink (a downlink channel, an unknown channel, extra levels) is refused and counted
        // instead of vanishing. Its own publisher's messages are not handed back to it.
        let consumer = broker::Consumer::new(
            vec![format!("{}/#", streetgate_protocols::topic::PREFIX)],
            vec![crate::publisher::client_id(&config.mqtt)],
            worker_inputs,
            clock,
        );
        let b = broker::start(
            &config.broker,
            Some(consumer),
            Some(store_path.with_file_name("broker-sessions.json")),
            Arc::clone(&metrics.broker),
            cancel.clone(),
        )
        .await
        .context("starting the embedded MQTT broker")?;
        tracing::info!(listen = %b.addr, "embedded MQTT broker started");
        // The gateway is the broker's consumer: subscribed from the first connection on.
        metrics
            .mqtt_connected
            .store(1, std::sync::atomic::Ordering::Relaxed);
        metrics
            .mqtt_subscribed
            .store(1, std::sync::atomic::Ordering::Relaxed);
        metrics
            .mqtt_connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let addr = connectable(b.addr);
        let settings = MqttSettings {
            host: addr.ip().to_string(),
            port: addr.port(),
            config: config.mqtt.clone(),
        };
        let task = tokio::spawn(b.join());
        (Some(addr), settings, task)
    } else {
        let Some(url) = &config.mqtt.url else {
            bail!("mqtt.url is required when broker.embedded = false");
        };
        let settings = MqttSettings::from_url(url, &config.mqtt)
            .map_err(|e| anyhow::anyhow!("mqtt.url = {url}: {e}"))?;
        let task = tokio::spawn(ingest::mqtt::run(
            settings.clone(),
            worker_inputs,
            Arc::clone(&metrics),
            clock,
            cancel.clone(),
        ));
        (None, settings, task)
    };
    let mqtt_broker = format!("{}:{}", settings.host, settings.port);
    // Modbus pollers following the inventory (joined like the decode workers: they stop on
    // cancel and drop their senders).
    let (modbus, modbus_task) = ingest::modbus::Supervisor::start(
        Arc::clone(&inventory),
        reading_tx.clone(),
        Arc::clone(&metrics),
        ModbusSettings {
            clock,
            ..config.modbus.settings()
        },
        cancel.clone(),
    );
    workers.push(modbus_task);
    // The publisher (alerts, commands) has its own connection and stops with everything else.
    // The embedded broker closes a connection that sends more than it accepts.
    let max_publish = if config.broker_embedded() {
        config.broker.max_payload_bytes
    } else {
        config.mqtt.max_packet_bytes
    };
    let (publisher, publisher_task) = Publisher::start(&settings, max_publish, cancel.clone());
    let mut services = vec![publisher_task];
    services.extend(alerts::spawn(
        &config.alerts,
        Some(Arc::clone(&publisher)),
        &store,
        &metrics,
        clock,
        &cancel,
    ));
    let commander = Commander::new(
        acks,
        Arc::clone(&store),
        Arc::clone(&inventory),
        Some(publisher),
        Some(modbus),
        Arc::clone(&metrics),
        clock,
        Duration::from_millis(config.commands.ack_timeout_ms),
    );
    let ingest = IngestContext {
        readings: reading_tx,
        metrics: Arc::clone(&metrics),
        inventory: Arc::clone(&inventory),
        cancel: cancel.clone(),
    };
    let housekeeping = tokio::spawn(housekeeping(
        Arc::clone(&store),
        Trim {
            history_per_device: config.store.history_per_device,
            max_unregistered: config.inventory.max_unregistered,
            unregistered_ttl_ms: i64::try_from(config.inventory.unregistered_ttl_s)
                .unwrap_or(i64::MAX / 1000)
                .saturating_mul(1000),
        },
        clock,
        Duration::from_secs(config.store.trim_interval_s),
        cancel.clone(),
    ));

    // HTTP.
    let state = AppState {
        commander,
        clock,
        lighting: lighting_rx,
        case_policy: Arc::new(config.cases.policy()),
        router: Arc::new(config.routing.router()),
        auth: Arc::new(config.auth.clone()),
        sign_in_throttle: Arc::default(),
        store: Arc::clone(&store),
        inventory: Arc::clone(&inventory),
        metrics: Arc::clone(&metrics),
        runtime: Arc::new(RuntimeInfo {
            started,
            mqtt_broker: mqtt_broker.clone(),
            embedded_broker: broker_addr,
            store_path: store_path.display().to_string(),
        }),
    };
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("http.listen = {}: cannot listen there", config.http.listen))?;
    let http_addr = listener.local_addr().context("reading the HTTP address")?;
    let router = api::router(state.clone(), config.http.max_body_bytes);
    let http_cancel = cancel.clone();
    let http_limits = (config.http.max_connections, config.http.idle_timeout_ms);
    let http = tokio::spawn(async move {
        let stop = http_cancel.clone();
        let listener = api::listener::LimitedListener::new(
            listener,
            http_limits.0,
            Duration::from_millis(http_limits.1),
        );
        // With the peer address of each connection (the audit log records it).
        let app = router.into_make_service_with_connect_info::<api::listener::ClientAddr>();
        let serve = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "HTTP server failed");
            http_cancel.cancel();
        }
    });

    tracing::info!(
        http = %http_addr,
        mqtt = %mqtt_broker,
        embedded_broker = ?broker_addr,
        store = %store_path.display(),
        devices = inventory.len(),
        "streetgate started"
    );
    Ok(Running {
        http_addr,
        broker_addr,
        mqtt_broker,
        state,
        first_admin_password,
        ingest,
        cancel,
        mqtt,
        workers,
        pipeline,
        writer,
        housekeeping,
        services,
        http,
    })
}

/// What housekeeping keeps.
#[derive(Debug, Clone, Copy)]
struct Trim {
    history_per_device: u32,
    max_unregistered: u64,
    unregistered_ttl_ms: i64,
}

async fn housekeeping(
    store: Arc<dyn Store>,
    trim: Trim,
    clock: crate::clock::Clock,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        match store.trim_history(trim.history_per_device).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(rows = n, "reading history trimmed"),
            Err(e) => tracing::warn!(error = %e, "trimming the reading history failed"),
        }
        let seen_before = clock.now_ms().saturating_sub(trim.unregistered_ttl_ms);
        match store
            .trim_unregistered(trim.max_unregistered, seen_before)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                devices = n,
                "unregistered devices forgotten (inventory.max_unregistered, unregistered_ttl_s)"
            ),
            Err(e) => tracing::warn!(error = %e, "trimming the unregistered devices failed"),
        }
    }
}

impl Running {
    /// What a transport task (Modbus) needs to feed the pipeline. Tasks holding it must return
    /// when its `cancel` fires, or shutdown waits for them.
    pub fn ingest_context(&self) -> IngestContext {
        self.ingest.clone()
    }

    /// The token that stops everything.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stop ingest, drain the pipeline, flush and close the store.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let Self {
            state,
            ingest,
            cancel,
            mqtt,
            workers,
            pipeline,
            writer,
            housekeeping,
            services,
            http,
            ..
        } = self;
        tracing::info!("shutting down: stopping ingest");
        cancel.cancel();
        drop(ingest);
        let drain = async {
            let _ = mqtt.await;
            for w in workers {
                let _ = w.await;
            }
            let _ = pipeline.await;
            let _ = writer.await;
        };
        if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
            tracing::error!(
                timeout_s = DRAIN_TIMEOUT.as_secs(),
                "pipeline did not drain in time; closing anyway"
            );
        }
        let _ = housekeeping.await;
        for s in services {
            let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
        }
        if tokio::time::timeout(Duration::from_secs(10), http)
            .await
            .is_err()
        {
            tracing::warn!("HTTP requests still running after 10 s; closing anyway");
        }
        state.store.close().await;
        tracing::info!("shutdown complete");
        Ok(())
    }
}
