//! Modbus ingest: TCP and RTU masters polling each device's register map.
//!
//! One task per endpoint (a TCP host:port, or a serial port) owns its connection; the unit ids
//! behind it (an RS-485 line behind a serial server) share it with requests serialised. Every
//! request runs under a timeout; after a failure a unit backs off exponentially, and when its
//! retry comes due it is tried only in the slack before the next poll of a unit that answers
//! (see [`slack_for_failing`]), so a dead unit does not delay the live ones on its line (at most
//! one `request_timeout` per `max_backoff` on a line whose polls leave no gap); different
//! endpoints poll concurrently. On first contact (and after every reconnection) the
//! identification block is read: a unit whose kind or map version differs from the inventory is
//! reported and never misread. The telemetry block is read in one request per poll.

mod access;
mod config;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use streetgate_protocols::Command;
use streetgate_protocols::modbus::{self, AckResult, ModbusError, TELEMETRY_START};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_modbus::client::{Context, Reader, Writer};

pub use access::ModbusAccess;
pub use config::{DEFAULT_ALLOWED_ENDPOINTS, DEFAULT_ALLOWED_SERIAL, ModbusConfig};
use tokio_modbus::prelude::{Slave, SlaveContext};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::inventory::Inventory;
use crate::metrics::{Metrics, ModbusErrorKind, RejectReason};
use crate::model::{Device, Reading, ReadingBody, Transport};

/// Polling settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ModbusSettings {
    /// Interval between polls of one unit.
    pub poll_interval: Duration,
    /// Timeout of one request (and of connecting).
    pub request_timeout: Duration,
    /// Consecutive failures before a unit is reported offline.
    pub offline_after: u32,
    /// Longest back-off of a failing unit or endpoint.
    pub max_backoff: Duration,
    /// Time stamps of the readings.
    pub clock: Clock,
    /// Where devices may be polled (`modbus.allowed_endpoints`, `modbus.allowed_serial`); a
    /// device elsewhere is not polled.
    pub access: Arc<ModbusAccess>,
}

impl Default for ModbusSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(10),
            request_timeout: Duration::from_secs(1),
            offline_after: 3,
            max_backoff: Duration::from_secs(60),
            clock: Clock::WALL,
            access: Arc::new(
                ModbusAccess::new(
                    &DEFAULT_ALLOWED_ENDPOINTS.map(str::to_owned),
                    &DEFAULT_ALLOWED_SERIAL.map(str::to_owned),
                )
                .unwrap_or_default(),
            ),
        }
    }
}

/// What an endpoint task is asked to do besides polling.
#[derive(Debug)]
enum Control {
    /// The units behind the endpoint changed (inventory edit); empty = stop.
    Units(Vec<(Arc<Device>, u8)>),
    /// Write a command block to a unit and read its acknowledgement.
    Command {
        unit: u8,
        command: Command,
        deadline: Instant,
        reply: oneshot::Sender<Result<AckResult, String>>,
    },
}

/// Why a Modbus command did not get through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The device is not polled over Modbus (or not yet: the poller picks up new devices within
    /// a second).
    #[error("no Modbus poller serves {0}")]
    NoPoller(String),
    /// The endpoint could not write or read.
    #[error("{0}")]
    Bus(String),
    /// The device did not acknowledge before the deadline.
    #[error("no acknowledgement before the deadline")]
    Timeout,
}

/// Where a unit is reached.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Endpoint {
    Tcp(String, u16),
    Rtu(String, u32),
}

impl Endpoint {
    fn label(&self) -> &'static str {
        match self {
            Self::Tcp(..) => "modbus-tcp",
            Self::Rtu(..) => "modbus-rtu",
        }
    }

    async fn connect(&self) -> std::io::Result<Context> {
        match self {
            Self::Tcp(host, port) => {
                let addr = tokio::net::lookup_host((host.as_str(), *port))
                    .await?
                    .next()
                    .ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            format!("{host}: no address"),
                        )
                    })?;
                tokio_modbus::client::tcp::connect_slave(addr, Slave(1)).await
            }
            Self::Rtu(path, baud) => {
                let port = tokio_serial::SerialStream::open(&tokio_serial::new(path, *baud))?;
                Ok(tokio_modbus::client::rtu::attach_slave(port, Slave(1)))
            }
        }
    }
}

/// One unit's polling state.
#[derive(Debug)]
struct Unit {
    device: Arc<Device>,
    unit: u8,
    identified: bool,
    mismatch: Option<String>,
    failures: u32,
    offline: bool,
    next_poll: Instant,
    /// A failing unit due since then, waiting for slack between the live units' polls.
    deferred_since: Option<Instant>,
    seq: u32,
}

/// Why a poll failed.
#[derive(Debug)]
enum PollError {
    /// Connection-level: drop the connection.
    Io(String),
    /// The unit did not answer in time.
    Timeout,
    /// The unit answered with a Modbus exception.
    Exception(String),
    /// The registers decode to nothing valid.
    Decode(ModbusError),
}

async fn read_input(
    ctx: &mut Context,
    timeout: Duration,
    addr: u16,
    count: u16,
) -> Result<Vec<u16>, PollError> {
    match tokio::time::timeout(timeout, ctx.read_input_registers(addr, count)).await {
        Err(_) => Err(PollError::Timeout),
        Ok(Err(e)) => Err(PollError::Io(e.to_string())),
        Ok(Ok(Err(exception))) => Err(PollError::Exception(format!("{exception:?}"))),
        Ok(Ok(Ok(regs))) => Ok(regs),
    }
}

/// Poll one unit once: identification when needed, then the telemetry block.
async fn poll(
    ctx: &mut Context,
    unit: &mut Unit,
    settings: &ModbusSettings,
) -> Result<Option<ReadingBody>, PollError> {
    ctx.set_slave(Slave(unit.unit));
    if !unit.identified {
        let regs = read_input(
            ctx,
            settings.request_timeout,
            modbus::IDENT_START,
            modbus::IDENT_LEN,
        )
        .await?;
        let check = modbus::decode_identification(&regs).and_then(|id| id.check(unit.device.kind));
        match check {
            Ok(()) => {
                unit.identified = true;
                unit.mismatch = None;
            }
            Err(e) => {
                unit.mismatch = Some(e.to_string());
                return Err(PollError::Decode(e));
            }
        }
    }
    let len = modbus::map(unit.device.kind).telemetry_len();
    let regs = read_input(ctx, settings.request_timeout, TELEMETRY_START, len).await?;
    let data = modbus::decode_telemetry(unit.device.kind, &regs).map_err(PollError::Decode)?;
    Ok(Some(ReadingBody::Telemetry(data)))
}

fn new_unit(device: Arc<Device>, unit: u8) -> Unit {
    Unit {
        device,
        unit,
        identified: false,
        mismatch: None,
        failures: 0,
        offline: false,
        next_poll: Instant::now(),
        deferred_since: None,
        seq: 0,
    }
}

/// Whether a failing unit may be tried now, and if not, when to look again. A unit that failed
/// its last request is likely to cost a whole `request_timeout`; it is tried only when that
/// much slack remains before the next poll of a unit that answers, so the live units keep their
/// schedule. If there is no such slack for `max_backoff` (a line so busy that polls leave no
/// gap), it is tried anyway: a dead unit then delays the live ones by at most one
/// `request_timeout` per `max_backoff`.
fn slack_for_failing(
    units: &[Unit],
    failing: usize,
    settings: &ModbusSettings,
    now: Instant,
) -> Result<(), Instant> {
    let next_live = units
        .iter()
        .filter(|u| u.failures == 0)
        .map(|u| u.next_poll)
        .min();
    let Some(next_live) = next_live else {
        return Ok(());
    };
    if now + settings.request_timeout <= next_live {
        return Ok(());
    }
    let waiting = units[failing]
        .deferred_since
        .is_some_and(|since| now.duration_since(since) >= settings.max_backoff);
    if waiting {
        return Ok(());
    }
    // Right after that live poll.
    Err(next_live.max(now) + Duration::from_millis(1))
}

/// Replace the unit list, keeping the polling state of units that stay.
fn merge_units(units: &mut Vec<Unit>, wanted: Vec<(Arc<Device>, u8)>) {
    let mut old: Vec<Unit> = std::mem::take(units);
    for (device, unit) in wanted {
        match old
            .iter()
            .position(|u| u.device.id == device.id && u.unit == unit)
        {
            Some(i) => {
                let mut u = old.swap_remove(i);
                if u.device.kind != device.kind {
                    u.identified = false;
                }
                u.device = device;
                units.push(u);
            }
            None => units.push(new_unit(device, unit)),
        }
    }
}

async fn connect(endpoint: &Endpoint, settings: &ModbusSettings) -> Result<Context, String> {
    match tokio::time::timeout(settings.request_timeout, endpoint.connect()).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("connection timed out".to_owned()),
    }
}

/// Write a command block, then read the acknowledgement block until it names the command.
async fn command(
    ctx: &mut Context,
    unit: u8,
    cmd: &Command,
    deadline: Instant,
    settings: &ModbusSettings,
) -> Result<AckResult, String> {
    let regs = modbus::encode_command(cmd).map_err(|e| e.to_string())?;
    ctx.set_slave(Slave(unit));
    match tokio::time::timeout(
        settings.request_timeout,
        ctx.write_multiple_registers(modbus::COMMAND_START, &regs),
    )
    .await
    {
        Err(_) => return Err("write timed out".to_owned()),
        Ok(Err(e)) => return Err(format!("write failed: {e}")),
        Ok(Ok(Err(exception))) => return Err(format!("write refused: {exception:?}")),
        Ok(Ok(Ok(()))) => {}
    }
    loop {
        let regs = read_input(
            ctx,
            settings.request_timeout,
            modbus::ACK_START,
            modbus::ACK_LEN,
        )
        .await
        .map_err(|e| format!("reading the acknowledgement: {e:?}"))?;
        match modbus::decode_ack(&regs).map_err(|e| e.to_string())? {
            r @ (AckResult::Applied(id) | AckResult::Rejected(id)) if id == cmd.cmd_id => {
                return Ok(r);
            }
            _ => {}
        }
        if Instant::now() + Duration::from_millis(100) >= deadline {
            return Err("no acknowledgement before the deadline".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Poll every unit behind one endpoint until cancelled (or, with a control channel, until
/// its unit list becomes empty).
async fn run_endpoint(
    endpoint: Endpoint,
    mut units: Vec<Unit>,
    mut control: Option<mpsc::Receiver<Control>>,
    tx: mpsc::Sender<Reading>,
    metrics: Arc<Metrics>,
    settings: ModbusSettings,
    cancel: CancellationToken,
) {
    let transport = endpoint.label();
    let mut ctx: Option<Context> = None;
    let mut connect_backoff = settings.request_timeout;
    loop {
        // The unit due first.
        let next = units.iter().map(|u| u.next_poll).min();
        if next.is_none() && control.is_none() {
            return;
        }
        let far = Instant::now() + Duration::from_secs(3600);
        let ctl = async {
            match control.as_mut() {
                Some(c) => c.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            msg = ctl => match msg {
                None => return,
                Some(Control::Units(wanted)) => {
                    if wanted.is_empty() {
                        tracing::info!(?endpoint, "no units left; Modbus poller stopped");
                        return;
                    }
                    merge_units(&mut units, wanted);
                    continue;
                }
                Some(Control::Command { unit, command: cmd, deadline, reply }) => {
                    if ctx.is_none() {
                        match connect(&endpoint, &settings).await {
                            Ok(c) => {
                                ctx = Some(c);
                                for u in &mut units {
                                    u.identified = false;
                                }
                            }
                            Err(e) => {
                                let _ = reply.send(Err(format!("{endpoint:?} unreachable: {e}")));
                                continue;
                            }
                        }
                    }
                    let Some(c) = ctx.as_mut() else { continue };
                    let result = command(c, unit, &cmd, deadline, &settings).await;
                    if result.as_ref().is_err_and(|e| e.contains("failed")) {
                        ctx = None;
                    }
                    let _ = reply.send(result);
                    continue;
                }
            },
            () = tokio::time::sleep_until(next.unwrap_or(far)) => {}
        }
        if next.is_none() {
            continue;
        }
        if ctx.is_none() {
            match tokio::time::timeout(settings.request_timeout, endpoint.connect()).await {
                Ok(Ok(c)) => {
                    ctx = Some(c);
                    connect_backoff = settings.request_timeout;
                    // A new connection may reach a replaced device: identify again.
                    for u in &mut units {
                        u.identified = false;
                    }
                }
                failed => {
                    metrics.modbus_error(ModbusErrorKind::Connection);
                    let error = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no connection within {:?}", settings.request_timeout),
                    };
                    tracing::warn!(
                        ?endpoint,
                        %error,
                        "Modbus endpoint unreachable; retrying in {connect_backoff:?}"
                    );
                    for u in units.iter_mut().filter(|u| u.next_poll <= Instant::now()) {
                        fail(u, &tx, transport, &settings).await;
                    }
                    tokio::time::sleep(connect_backoff).await;
                    connect_backoff = (connect_backoff * 2).min(settings.max_backoff);
                    continue;
                }
            }
        }
        let now = Instant::now();
        // Units that answer first; failing ones only in the slack they leave.
        let mut due: Vec<usize> = (0..units.len())
            .filter(|&i| units[i].next_poll <= now)
            .collect();
        due.sort_by_key(|&i| units[i].failures > 0);
        for i in due {
            if units[i].failures > 0 {
                let now = Instant::now();
                if let Err(retry_at) = slack_for_failing(&units, i, &settings, now) {
                    units[i].deferred_since.get_or_insert(now);
                    units[i].next_poll = retry_at;
                    continue;
                }
                units[i].deferred_since = None;
            }
            let unit = &mut units[i];
            let Some(c) = ctx.as_mut() else { break };
            match poll(c, unit, &settings).await {
                Ok(body) => {
                    unit.failures = 0;
                    unit.next_poll = Instant::now() + settings.poll_interval;
                    if unit.offline {
                        unit.offline = false;
                        send(
                            &tx,
                            unit,
                            transport,
                            ReadingBody::Status {
                                online: true,
                                battery_pct: None,
                                fw_version: None,
                            },
                            settings.clock,
                        )
                        .await;
                    }
                    if let Some(body) = body {
                        metrics.ingested(transport);
                        send(&tx, unit, transport, body, settings.clock).await;
                    }
                }
                Err(PollError::Io(e)) => {
                    tracing::warn!(device = %unit.device.id, error = %e, "Modbus connection lost");
                    metrics.modbus_error(ModbusErrorKind::Connection);
                    fail(unit, &tx, transport, &settings).await;
                    ctx = None;
                }
                Err(PollError::Decode(
                    e @ (ModbusError::KindMismatch { .. }
                    | ModbusError::MapVersion { .. }
                    | ModbusError::UnknownKind(_)),
                )) => {
                    tracing::error!(device = %unit.device.id, error = %e, "Modbus identification differs from the inventory; not read");
                    metrics.rejected(RejectReason::ModbusIdentification);
                    unit.next_poll = Instant::now() + settings.max_backoff;
                    // Unreadable: one cause, one case (the device is offline to the city), not
                    // a dark lamp or a missing reading besides.
                    if !unit.offline {
                        unit.offline = true;
                        let offline = ReadingBody::Status {
                            online: false,
                            battery_pct: None,
                            fw_version: None,
                        };
                        send(&tx, unit, transport, offline, settings.clock).await;
                    }
                }
                Err(PollError::Decode(e)) => {
                    tracing::warn!(device = %unit.device.id, error = %e, "Modbus registers refused");
                    metrics.rejected(RejectReason::InvalidValue);
                    unit.next_poll = Instant::now() + settings.poll_interval;
                }
                Err(PollError::Timeout) => {
                    tracing::debug!(device = %unit.device.id, "Modbus unit timed out");
                    metrics.modbus_error(ModbusErrorKind::Timeout);
                    fail(unit, &tx, transport, &settings).await;
                }
                Err(PollError::Exception(exception)) => {
                    tracing::debug!(device = %unit.device.id, %exception, "Modbus exception");
                    metrics.modbus_error(ModbusErrorKind::Exception);
                    fail(unit, &tx, transport, &settings).await;
                }
            }
        }
    }
}

/// Count a failure; back off; report offline after repeated failures.
async fn fail(
    unit: &mut Unit,
    tx: &mpsc::Sender<Reading>,
    transport: &'static str,
    settings: &ModbusSettings,
) {
    unit.failures += 1;
    let backoff = settings
        .poll_interval
        .saturating_mul(1 << unit.failures.min(6))
        .min(settings.max_backoff);
    unit.next_poll = Instant::now() + backoff;
    if unit.failures >= settings.offline_after && !unit.offline {
        unit.offline = true;
        send(
            tx,
            unit,
            transport,
            ReadingBody::Status {
                online: false,
                battery_pct: None,
                fw_version: None,
            },
            settings.clock,
        )
        .await;
    }
}

async fn send(
    tx: &mpsc::Sender<Reading>,
    unit: &mut Unit,
    transport: &'static str,
    body: ReadingBody,
    clock: Clock,
) {
    unit.seq = unit.seq.wrapping_add(1);
    let reading = Reading {
        device_id: unit.device.id.clone(),
        kind: unit.device.kind,
        received_ms: clock.now_ms(),
        device_ts_ms: None,
        seq: unit.seq,
        transport,
        body,
        // A gateway-side counter: nothing to lose between polls.
        seq_state: None,
    };
    // Backpressure: wait for the pipeline rather than drop the reading.
    let _ = tx.send(reading).await;
}

fn endpoint_of(device: &Device) -> Option<(Endpoint, u8)> {
    match &device.transport {
        Transport::Mqtt => None,
        Transport::ModbusTcp { host, port, unit } => {
            Some((Endpoint::Tcp(host.clone(), *port), *unit))
        }
        Transport::ModbusRtu { path, baud, unit } => {
            Some((Endpoint::Rtu(path.clone(), *baud), *unit))
        }
    }
}

type Grouped = BTreeMap<Endpoint, Vec<(Arc<Device>, u8)>>;

/// The devices not polled because their endpoint is not allowed, each with why.
type Refused = BTreeMap<(String, Endpoint), String>;

fn group<'a>(
    devices: impl IntoIterator<Item = &'a Arc<Device>>,
    access: &ModbusAccess,
) -> (Grouped, Refused) {
    let mut endpoints: Grouped = BTreeMap::new();
    let mut refused = Refused::new();
    for device in devices {
        if let Some((endpoint, unit)) = endpoint_of(device) {
            if let Err(why) = access.check(&device.transport) {
                refused.insert((device.id.to_string(), endpoint), why);
                continue;
            }
            endpoints
                .entry(endpoint)
                .or_default()
                .push((Arc::clone(device), unit));
        }
    }
    (endpoints, refused)
}

/// Log the devices newly refused (once each, until they change or leave) and count them.
fn report_refused(refused: &Refused, logged: &mut BTreeSet<(String, Endpoint)>, metrics: &Metrics) {
    logged.retain(|k| refused.contains_key(k));
    for (key, why) in refused {
        if logged.insert(key.clone()) {
            tracing::warn!(device = %key.0, endpoint = ?key.1, "Modbus device not polled: {why}");
        }
    }
    metrics.modbus_not_allowed.store(
        u64::try_from(refused.len()).unwrap_or(u64::MAX),
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// Start one polling task per endpoint for the Modbus devices among `devices` (a fixed set;
/// [`Supervisor`] follows the inventory instead).
pub fn spawn<'a>(
    devices: impl IntoIterator<Item = &'a Arc<Device>>,
    tx: &mpsc::Sender<Reading>,
    metrics: &Arc<Metrics>,
    settings: ModbusSettings,
    cancel: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let (grouped, refused) = group(devices, &settings.access);
    report_refused(&refused, &mut BTreeSet::new(), metrics);
    grouped
        .into_iter()
        .map(|(endpoint, units)| {
            tracing::info!(?endpoint, units = units.len(), "polling Modbus endpoint");
            let units = units.into_iter().map(|(d, u)| new_unit(d, u)).collect();
            tokio::spawn(run_endpoint(
                endpoint,
                units,
                None,
                tx.clone(),
                Arc::clone(metrics),
                settings.clone(),
                cancel.clone(),
            ))
        })
        .collect()
}

/// The Modbus pollers of an inventory: one task per endpoint, started, changed and stopped as
/// devices are added, edited and removed, and the way to send a command to a Modbus device.
#[derive(Debug)]
pub struct Supervisor {
    endpoints: Mutex<BTreeMap<Endpoint, mpsc::Sender<Control>>>,
}

impl Supervisor {
    /// Follow `inventory` (checked every second) until `cancel`; the returned task ends after
    /// every poller it started.
    pub fn start(
        inventory: Arc<Inventory>,
        tx: mpsc::Sender<Reading>,
        metrics: Arc<Metrics>,
        settings: ModbusSettings,
        cancel: CancellationToken,
    ) -> (Arc<Self>, JoinHandle<()>) {
        let me = Arc::new(Self {
            endpoints: Mutex::new(BTreeMap::new()),
        });
        let sup = Arc::clone(&me);
        let task = tokio::spawn(async move {
            let mut tasks: Vec<JoinHandle<()>> = Vec::new();
            let mut seen_version = None;
            let mut current: Grouped = BTreeMap::new();
            let mut logged = BTreeSet::new();
            loop {
                let version = inventory.version();
                if seen_version != Some(version) {
                    seen_version = Some(version);
                    let (wanted, refused) = group(inventory.snapshot().values(), &settings.access);
                    report_refused(&refused, &mut logged, &metrics);
                    sup.apply(
                        &mut current,
                        wanted,
                        &mut tasks,
                        &tx,
                        &metrics,
                        &settings,
                        &cancel,
                    )
                    .await;
                }
                tasks.retain(|t| !t.is_finished());
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            drop(tx);
            for t in tasks {
                let _ = t.await;
            }
        });
        (me, task)
    }

    #[allow(clippy::too_many_arguments)]
    async fn apply(
        &self,
        current: &mut Grouped,
        wanted: Grouped,
        tasks: &mut Vec<JoinHandle<()>>,
        tx: &mpsc::Sender<Reading>,
        metrics: &Arc<Metrics>,
        settings: &ModbusSettings,
        cancel: &CancellationToken,
    ) {
        let same = |a: &[(Arc<Device>, u8)], b: &[(Arc<Device>, u8)]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.1 == y.1 && *x.0 == *y.0)
        };
        let mut sends = Vec::new();
        {
            let mut endpoints = self
                .endpoints
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            endpoints.retain(|_, s| !s.is_closed());
            for (endpoint, units) in current.iter() {
                if !wanted.contains_key(endpoint) {
                    if let Some(s) = endpoints.remove(endpoint) {
                        sends.push((s, Vec::new()));
                    }
                    tracing::info!(
                        ?endpoint,
                        units = units.len(),
                        "Modbus endpoint left the inventory"
                    );
                }
            }
            for (endpoint, units) in &wanted {
                match endpoints.get(endpoint) {
                    Some(s) => {
                        if !current.get(endpoint).is_some_and(|c| same(c, units)) {
                            sends.push((s.clone(), units.clone()));
                        }
                    }
                    None => {
                        tracing::info!(?endpoint, units = units.len(), "polling Modbus endpoint");
                        let (ctl_tx, ctl_rx) = mpsc::channel(16);
                        let first = units
                            .iter()
                            .map(|(d, u)| new_unit(Arc::clone(d), *u))
                            .collect();
                        tasks.push(tokio::spawn(run_endpoint(
                            endpoint.clone(),
                            first,
                            Some(ctl_rx),
                            tx.clone(),
                            Arc::clone(metrics),
                            settings.clone(),
                            cancel.clone(),
                        )));
                        endpoints.insert(endpoint.clone(), ctl_tx);
                    }
                }
            }
        }
        for (s, units) in sends {
            let _ = s.send(Control::Units(units)).await;
        }
        *current = wanted;
    }

    /// Write `command` to a Modbus device and wait for its acknowledgement until `deadline`.
    pub async fn command(
        &self,
        device: &Device,
        command: Command,
        deadline: Instant,
    ) -> Result<AckResult, CommandError> {
        let not_served = || CommandError::NoPoller(device.id.to_string());
        let (endpoint, unit) = endpoint_of(device).ok_or_else(not_served)?;
        let sender = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&endpoint)
            .cloned()
            .ok_or_else(not_served)?;
        let (reply, answer) = oneshot::channel();
        sender
            .send(Control::Command {
                unit,
                command,
                deadline,
                reply,
            })
            .await
            .map_err(|_| not_served())?;
        match tokio::time::timeout_at(deadline, answer).await {
            Err(_) => Err(CommandError::Timeout),
            Ok(Err(_)) => Err(not_served()),
            Ok(Ok(Err(e))) => Err(CommandError::Bus(e)),
            Ok(Ok(Ok(r))) => Ok(r),
        }
    }
}
