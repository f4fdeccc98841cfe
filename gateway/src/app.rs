//! Wiring: start every task of the gateway from a [`Config`], and stop them in order.
//!
//! Start: store (migrations) → inventory (+ optional CSV import) → outputs (time-series, replaying
//! its spool) → store writer → pipeline → decode workers → embedded broker with the workers
//! attached (or the MQTT client of an external broker) → publisher → housekeeping → HTTP.
//! Stop ([`Running::shutdown`]): cancel → the broker closes its connections (or the client
//! disconnects) and drops the worker inputs → workers, pipeline and writer drain in turn (each
//! committed message is acknowledged) → the outputs spool what they have not sent → HTTP
//! finishes in-flight requests → store closes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use streetgate_protocols::codec::Limits;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{AppState, RuntimeInfo};
use crate::cases::CaseService;
use crate::commands::{AckWaiters, Commander};
use crate::config::{Config, StoreBackend};
use crate::ha::{self, ActiveLease, Role, RoleCell};
use crate::ingest::modbus::ModbusSettings;
use crate::ingest::{self, IngestContext};
use crate::inventory::{Inventory, parse_csv_checked};
use crate::metrics::Metrics;
use crate::model::Reading;
use crate::mqtt::MqttSettings;
use crate::pipeline::{self, StoreWriter, WriteOp, WriterSettings};
use crate::publisher::Publisher;
use crate::store::Store;
use crate::store::{PgStore, SqliteStore};
use crate::{alerts, api, broker};

/// Open the configured store and apply its migrations.
pub async fn open_store(config: &crate::config::StoreConfig) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match config.backend {
        StoreBackend::Sqlite => {
            let store = SqliteStore::open(&config.path).await.with_context(|| {
                format!(
                    "opening the SQLite store at {} (store.path)",
                    config.path.display()
                )
            })?;
            Arc::new(store)
        }
        StoreBackend::Postgres => {
            let url = config.url.as_deref().unwrap_or_default();
            let store = PgStore::connect(url, config.max_connections)
                .await
                .with_context(|| {
                    format!(
                        "opening the PostgreSQL store at {} (store.url)",
                        crate::settings::redact_url(url)
                    )
                })?;
            Arc::new(store)
        }
    })
}

/// How long shutdown waits for the pipeline to drain before giving up on it.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A running gateway.
#[derive(Debug)]
pub struct Running {
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// Where the embedded broker listens, when it runs.
    pub broker_addr: Option<SocketAddr>,
    /// Where the embedded broker serves MQTT over TLS (`broker.tls_listen`), when it does.
    pub broker_tls_addr: Option<SocketAddr>,
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
    outputs: Vec<JoinHandle<()>>,
    http: JoinHandle<()>,
    lease: Option<ActiveLease>,
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

/// Start the gateway (standalone: without `[ha]`).
pub async fn start(config: Config) -> anyhow::Result<Running> {
    start_as(config, None).await
}

/// A standby that has taken the lease and starts as the active gateway.
#[derive(Debug)]
pub struct Promotion {
    /// The store it waited on.
    pub store: Arc<dyn Store>,
    /// Its name in the lease.
    pub node: String,
    /// The lease's epoch.
    pub epoch: i64,
    /// The lease's timing.
    pub timing: ha::Timing,
    /// Its role, shared with the API.
    pub role: Arc<RoleCell>,
}

/// Run as one of an active/standby pair (`[ha]`): serve the API for reading as the standby
/// until the lease is free, then start as the active gateway. `None` when `shutdown` came
/// first.
pub async fn start_ha(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Option<Running>> {
    config.validate().context("invalid configuration")?;
    let store = open_store(&config.store).await?;
    // A standby that starts first on a new database creates the administrator.
    if let Some(password) = bootstrap_admin(&store).await? {
        println!(
            "first administrator: {} / {password}",
            crate::auth::FIRST_ADMIN
        );
    }
    let node = config.ha.node_name();
    let timing = config.ha.timing();
    let role = Arc::new(RoleCell::new(Role::Standby));
    let standby = serve_standby(&config, &store, &role, &node).await?;
    tracing::info!(node, http = %standby.0, "standby: serving reads, waiting for the lease");
    let stop = CancellationToken::new();
    let epoch = tokio::select! {
        epoch = ha::acquire(&store, &node, timing, &stop) => epoch,
        () = shutdown => None,
    };
    standby.1.cancel();
    let _ = standby.2.await;
    let Some(epoch) = epoch else {
        store.close().await;
        return Ok(None);
    };
    let promotion = Promotion {
        store,
        node,
        epoch,
        timing,
        role,
    };
    start_as(config, Some(promotion)).await.map(Some)
}

/// The API on a standby: reads answered from the shared store, changes refused with 503.
async fn serve_standby(
    config: &Config,
    store: &Arc<dyn Store>,
    role: &Arc<RoleCell>,
    node: &str,
) -> anyhow::Result<(SocketAddr, CancellationToken, JoinHandle<()>)> {
    let clock = config.clock.clock();
    let metrics = Arc::new(Metrics::default());
    let devices = store
        .list_devices()
        .await
        .context("loading the inventory")?;
    let inventory = Arc::new(Inventory::new(devices));
    let (_, lighting) = tokio::sync::watch::channel(crate::lighting::LightingSnapshot::default());
    let state = AppState {
        commander: Commander::new(
            Arc::new(AckWaiters::default()),
            Arc::clone(store),
            Arc::clone(&inventory),
            None,
            None,
            Arc::clone(&metrics),
            clock,
            Duration::from_millis(config.commands.ack_timeout_ms),
        ),
        clock,
        lighting,
        cases: case_service(config, store),
        evaluation: evaluator(config, store, clock),
        auth: Arc::new(auth_config(config)),
        sign_in_throttle: Arc::default(),
        modbus_access: Arc::new(config.modbus.access().map_err(anyhow::Error::msg)?),
        import_slots: Arc::new(tokio::sync::Semaphore::new(
            config.inventory.max_concurrent_imports,
        )),
        import_slots_max: config.inventory.max_concurrent_imports,
        // A standby refuses changes: nothing is issued here.
        device_auth: Arc::new(broker::ClientAuth::new(config.broker.auth, Vec::new())),
        console: crate::console::Console::new(&config.console, config.alerts.utc_offset_min),
        photo_limits: api::photos::PhotoLimits::from(&config.cases),
        store: Arc::clone(store),
        inventory,
        metrics,
        runtime: Arc::new(RuntimeInfo {
            started: Instant::now(),
            mqtt_broker: String::new(),
            embedded_broker: None,
            store_path: store_location(config),
            role: Arc::clone(role),
            node: Some(node.to_owned()),
        }),
    };
    let router = api::router(state, config.http.max_body_bytes)
        .layer(axum::middleware::from_fn(api::refuse_changes_on_standby));
    let stop = CancellationToken::new();
    let (addr, task) = serve_http(config, router, stop.clone()).await?;
    Ok((addr, stop, task))
}

/// Serve `router` on `http.listen` with the connection limits until `cancel` fires; a failure
/// of the server cancels it.
async fn serve_http(
    config: &Config,
    router: axum::Router,
    cancel: CancellationToken,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("http.listen = {}: cannot listen there", config.http.listen))?;
    let addr = listener.local_addr().context("reading the HTTP address")?;
    let tls = config.http.tls()?;
    let mut listener = api::listener::LimitedListener::new(
        listener,
        config.http.max_connections,
        Duration::from_millis(config.http.idle_timeout_ms),
    );
    if let Some(tls) = tls {
        listener = listener.with_tls(tls);
    }
    let task = tokio::spawn(async move {
        let stop = cancel.clone();
        // With the peer address of each connection (the audit log records it).
        let app = router.into_make_service_with_connect_info::<api::listener::ClientAddr>();
        let serve = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "HTTP server failed");
            cancel.cancel();
        }
    });
    Ok((addr, task))
}

/// `[auth]` as the API applies it: with HTTPS the session cookie is always `Secure` (the
/// listener serves nothing else, so it never travels in clear).
fn auth_config(config: &Config) -> crate::auth::AuthConfig {
    let mut auth = config.auth.clone();
    auth.cookie_secure |= config.http.tls_enabled();
    auth
}

/// Create the administrator on a store without users; the one-time password, when created.
async fn bootstrap_admin(store: &Arc<dyn Store>) -> anyhow::Result<Option<String>> {
    let password = crate::auth::bootstrap_admin(store.as_ref(), crate::clock::wall_ms())
        .await
        .context("creating the first administrator")?;
    if password.is_some() {
        // The password goes to standard output once, not into logs that are kept.
        tracing::warn!(
            user = crate::auth::FIRST_ADMIN,
            "no user in the store: created the administrator; its one-time password is printed on standard output"
        );
    }
    Ok(password)
}

/// The case service with the configuration's time limits and routing table.
fn case_service(config: &Config, store: &Arc<dyn Store>) -> CaseService {
    CaseService::new(
        Arc::clone(store),
        Arc::new(config.cases.policy()),
        Arc::new(config.routing.router()),
        Arc::new(config.supervision.clone()),
    )
}

/// Where the store is, for health and logs (the PostgreSQL password masked).
fn store_location(config: &Config) -> String {
    match config.store.backend {
        StoreBackend::Sqlite => config.store.path.display().to_string(),
        StoreBackend::Postgres => {
            crate::settings::redact_url(config.store.url.as_deref().unwrap_or_default())
        }
    }
}

/// Start the gateway, standalone or (with a promotion) as the active one of a pair.
async fn start_as(config: Config, promotion: Option<Promotion>) -> anyhow::Result<Running> {
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

    // Store, lease and inventory.
    let store_path = config.store.path.clone();
    let (store, role, lease) = match promotion {
        Some(p) => {
            p.role.set(Role::Active);
            let lease = ActiveLease::keep(
                Arc::clone(&p.store),
                p.node.clone(),
                p.epoch,
                p.timing,
                cancel.clone(),
            );
            (p.store, p.role, Some((lease, p.node)))
        }
        None => (
            open_store(&config.store).await?,
            Arc::new(RoleCell::new(Role::Standalone)),
            None,
        ),
    };
    // Secure by default: no user, no access; the first start creates the administrator.
    let first_admin_password = bootstrap_admin(&store).await?;
    let devices = store
        .list_devices()
        .await
        .context("loading the inventory")?;
    let inventory = Arc::new(Inventory::new(devices));
    if let Some(csv) = &config.inventory.import_csv {
        let data = std::fs::read(csv)
            .with_context(|| format!("reading inventory.import_csv {}", csv.display()))?;
        let access = config.modbus.access().map_err(anyhow::Error::msg)?;
        let devices = parse_csv_checked(&data, |t| access.check(t))
            .with_context(|| format!("importing {}", csv.display()))?;
        store
            .upsert_devices(&devices, clock.now_ms())
            .await
            .context("storing the imported inventory")?;
        tracing::info!(file = %csv.display(), devices = devices.len(), "inventory imported");
        inventory.upsert(devices);
    }

    // Outputs: committed readings to a time-series database.
    let (lighting_tx, lighting_rx) =
        tokio::sync::watch::channel(crate::lighting::LightingSnapshot::default());
    let outputs = if config.timeseries.enabled() {
        let cases_store = Arc::clone(&store);
        let open_cases: crate::outputs::OpenCaseCounts = Arc::new(move || {
            let store = Arc::clone(&cases_store);
            Box::pin(async move {
                store
                    .open_case_counts()
                    .await
                    .map_err(|e| tracing::warn!(error = %e, "reading open cases for the time-series output"))
                    .ok()
            })
        });
        crate::outputs::influx::start(
            &config.timeseries,
            store_path.with_file_name("timeseries-spool"),
            crate::outputs::OutputContext {
                inventory: Arc::clone(&inventory),
                lighting: lighting_rx.clone(),
                open_cases,
                clock,
                cancel: cancel.clone(),
            },
            Arc::clone(&metrics.timeseries),
        )
        .await?
    } else {
        crate::outputs::Started::default()
    };

    // The console's live device states: fed by the store writer, flushed once a second.
    let console = crate::console::Console::new(&config.console, config.alerts.utc_offset_min);
    let device_states_task = tokio::spawn(
        Arc::clone(&console.device_states).run(Arc::clone(&inventory), cancel.clone()),
    );

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
        .with_outputs(
            outputs
                .outputs
                .with(Arc::new(crate::console::live::DeviceStateOutput(
                    Arc::clone(&console.device_states),
                ))),
        )
        .run(write_rx),
    );
    let automation = crate::automation::Automation::new(
        Arc::clone(&store),
        Arc::clone(&inventory),
        config.rules.clone(),
        case_service(&config, &store),
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

    // Device credentials: checked by the embedded broker, issued through the API and the CLI
    // (also for an external broker's password file). The gateway's own client ids are reserved.
    let publisher_id = crate::publisher::client_id(&config.mqtt);
    let device_auth = Arc::new(broker::ClientAuth::new(
        config.broker.auth,
        vec![publisher_id.clone(), config.mqtt.client_id.clone()],
    ));
    device_auth.load(
        store
            .device_credentials()
            .await
            .context("loading device credentials")?,
    );

    // MQTT: the embedded broker with the decode workers attached before it accepts anyone, or
    // the client of an external broker.
    let (broker_addr, broker_tls_addr, settings, mqtt) = if config.broker_embedded() {
        // In-process, the gateway takes every device publish under the prefix: what is not an
        // uplink (a downlink channel, an unknown channel, extra levels) is refused and counted
        // instead of vanishing. Its own publisher's messages are not handed back to it.
        let consumer = broker::Consumer::new(
            vec![format!("{}/#", streetgate_protocols::topic::PREFIX)],
            vec![publisher_id.clone()],
            worker_inputs,
            clock,
        );
        let b = broker::start(
            &config.broker,
            Some(consumer),
            Some(store_path.with_file_name("broker-sessions.json")),
            Arc::clone(&metrics.broker),
            Arc::clone(&device_auth),
            cancel.clone(),
        )
        .await
        .context("starting the embedded MQTT broker")?;
        tracing::info!(listen = %b.addr, tls_listen = ?b.tls_addr, "embedded MQTT broker started");
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
        let tls_addr = b.tls_addr.map(connectable);
        // The publisher signs in with the secret only this process knows.
        let mut mqtt = config.mqtt.clone();
        mqtt.username = Some(publisher_id.clone());
        mqtt.publisher_username = None;
        mqtt.password = Some(device_auth.gateway_secret().to_owned());
        let settings = MqttSettings {
            host: addr.ip().to_string(),
            port: addr.port(),
            config: mqtt,
        };
        let task = tokio::spawn(b.join());
        (Some(addr), tls_addr, settings, task)
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
        (None, None, settings, task)
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
    let mut services = vec![publisher_task, device_states_task];
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
            unregistered_ttl_ms: seconds_ms(config.inventory.unregistered_ttl_s),
            session_idle_ms: seconds_ms(config.auth.session_idle_s),
            session_absolute_ms: seconds_ms(config.auth.session_absolute_s),
            audit_retention_ms: seconds_ms(u64::from(config.auth.audit_retention_days) * 86_400),
        },
        clock,
        Duration::from_secs(config.store.trim_interval_s),
        cancel.clone(),
    ));

    // Lighting days for the evaluation, and the monthly reports.
    services.push(tokio::spawn(crate::evaluation::schedule::run(
        evaluator(&config, &store, clock),
        lighting_rx.clone(),
        Arc::clone(&inventory),
        clock,
        cancel.clone(),
    )));

    // HTTP.
    let state = AppState {
        commander,
        clock,
        lighting: lighting_rx.clone(),
        cases: case_service(&config, &store),
        evaluation: evaluator(&config, &store, clock),
        auth: Arc::new(auth_config(&config)),
        sign_in_throttle: Arc::default(),
        modbus_access: Arc::new(config.modbus.access().map_err(anyhow::Error::msg)?),
        import_slots: Arc::new(tokio::sync::Semaphore::new(
            config.inventory.max_concurrent_imports,
        )),
        import_slots_max: config.inventory.max_concurrent_imports,
        device_auth,
        console,
        photo_limits: api::photos::PhotoLimits::from(&config.cases),
        store: Arc::clone(&store),
        inventory: Arc::clone(&inventory),
        metrics: Arc::clone(&metrics),
        runtime: Arc::new(RuntimeInfo {
            started,
            mqtt_broker: mqtt_broker.clone(),
            embedded_broker: broker_addr,
            store_path: store_location(&config),
            role,
            node: lease.as_ref().map(|(_, node)| node.clone()),
        }),
    };
    let router = api::router(state.clone(), config.http.max_body_bytes);
    let (http_addr, http) = serve_http(&config, router, cancel.clone()).await?;

    tracing::info!(
        http = %http_addr,
        https = config.http.tls_enabled(),
        mqtt = %mqtt_broker,
        embedded_broker = ?broker_addr,
        store = %state.runtime.store_path,
        devices = inventory.len(),
        "streetgate started"
    );
    Ok(Running {
        http_addr,
        broker_addr,
        broker_tls_addr,
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
        outputs: outputs.tasks,
        http,
        lease: lease.map(|(lease, _)| lease),
    })
}

/// The evaluation on the store, with the lighting targets and the city's time zone.
fn evaluator(
    config: &Config,
    store: &Arc<dyn Store>,
    clock: crate::clock::Clock,
) -> crate::evaluation::Evaluator {
    crate::evaluation::Evaluator::new(
        Arc::clone(store),
        config.evaluation.clone(),
        config.rules.lighting.clone(),
        config.alerts.utc_offset_min,
        clock,
    )
}

fn seconds_ms(s: u64) -> i64 {
    i64::try_from(s)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000)
}

/// What housekeeping keeps.
#[derive(Debug, Clone, Copy)]
struct Trim {
    history_per_device: u32,
    max_unregistered: u64,
    unregistered_ttl_ms: i64,
    /// Sign-in sessions: idle and absolute lifetimes, ms (wall time).
    session_idle_ms: i64,
    session_absolute_ms: i64,
    /// Audit entries kept, ms (0: for ever; wall time).
    audit_retention_ms: i64,
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
        // Sessions and the audit log run on wall time, whatever the clock's speed.
        let wall = crate::clock::wall_ms();
        if let Err(e) = store
            .delete_expired_sessions(
                wall.saturating_sub(trim.session_idle_ms),
                wall.saturating_sub(trim.session_absolute_ms),
            )
            .await
        {
            tracing::warn!(error = %e, "removing expired sign-in sessions failed");
        }
        if trim.audit_retention_ms > 0 {
            match store
                .trim_audit(wall.saturating_sub(trim.audit_retention_ms))
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    entries = n,
                    "audit entries past auth.audit_retention_days removed"
                ),
                Err(e) => tracing::warn!(error = %e, "trimming the audit log failed"),
            }
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

    /// The active gateway lost its lease and stopped (the standby takes over).
    pub fn lease_lost(&self) -> bool {
        self.lease.as_ref().is_some_and(ActiveLease::lost)
    }

    /// Stop ingest, drain the pipeline, give up the lease (if any), flush and close the store.
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
            outputs,
            http,
            lease,
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
        // Everything taken is committed and acknowledged: the standby may take over.
        if let Some(lease) = lease {
            lease.release().await;
        }
        // The writer has handed over its last readings: the outputs seal and spool the rest.
        for o in outputs {
            if tokio::time::timeout(Duration::from_secs(10), o)
                .await
                .is_err()
            {
                tracing::warn!("an output did not stop within 10 s; closing anyway");
            }
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
