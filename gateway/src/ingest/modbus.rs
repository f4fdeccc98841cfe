//! Modbus ingest: TCP and RTU masters polling each device's register map.
//!
//! One task per endpoint (a TCP host:port, or a serial port) owns its connection; the unit ids
//! behind it (an RS-485 line behind a serial server) share it with requests serialised. Every
//! request runs under a timeout, so a dead unit costs only its own timeout; after a failure a
//! unit backs off exponentially and is skipped while it does, so it never delays the others;
//! different endpoints poll concurrently. On first contact (and after every reconnection) the
//! identification block is read: a unit whose kind or map version differs from the inventory is
//! reported and never misread. The telemetry block is read in one request per poll.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use streetgate_protocols::modbus::{self, ModbusError, TELEMETRY_START};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::prelude::{Slave, SlaveContext};
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::metrics::Metrics;
use crate::model::{Device, Reading, ReadingBody, Transport};

/// Polling settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModbusSettings {
    /// Interval between polls of one unit.
    pub poll_interval: Duration,
    /// Timeout of one request (and of connecting).
    pub request_timeout: Duration,
    /// Consecutive failures before a unit is reported offline.
    pub offline_after: u32,
    /// Longest back-off of a failing unit or endpoint.
    pub max_backoff: Duration,
}

impl Default for ModbusSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(10),
            request_timeout: Duration::from_secs(1),
            offline_after: 3,
            max_backoff: Duration::from_secs(60),
        }
    }
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

/// Poll every unit behind one endpoint until cancelled.
async fn run_endpoint(
    endpoint: Endpoint,
    mut units: Vec<Unit>,
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
        let Some(next) = units.iter().map(|u| u.next_poll).min() else {
            return;
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep_until(next) => {}
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
                _ => {
                    metrics.rejected("modbus_error");
                    tracing::warn!(
                        ?endpoint,
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
        for unit in units.iter_mut().filter(|u| u.next_poll <= now) {
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
                        )
                        .await;
                    }
                    if let Some(body) = body {
                        metrics.ingested(transport);
                        send(&tx, unit, transport, body).await;
                    }
                }
                Err(PollError::Io(e)) => {
                    tracing::warn!(device = %unit.device.id, error = %e, "Modbus connection lost");
                    metrics.rejected("modbus_error");
                    fail(unit, &tx, transport, &settings).await;
                    ctx = None;
                }
                Err(PollError::Decode(
                    e @ (ModbusError::KindMismatch { .. }
                    | ModbusError::MapVersion { .. }
                    | ModbusError::UnknownKind(_)),
                )) => {
                    tracing::error!(device = %unit.device.id, error = %e, "Modbus identification differs from the inventory; not read");
                    metrics.rejected("modbus_identification");
                    unit.next_poll = Instant::now() + settings.max_backoff;
                }
                Err(PollError::Decode(e)) => {
                    tracing::warn!(device = %unit.device.id, error = %e, "Modbus registers refused");
                    metrics.rejected("invalid_value");
                    unit.next_poll = Instant::now() + settings.poll_interval;
                }
                Err(PollError::Timeout) => {
                    tracing::debug!(device = %unit.device.id, "Modbus unit timed out");
                    metrics.rejected("modbus_error");
                    fail(unit, &tx, transport, &settings).await;
                }
                Err(PollError::Exception(exception)) => {
                    tracing::debug!(device = %unit.device.id, %exception, "Modbus exception");
                    metrics.rejected("modbus_error");
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
        )
        .await;
    }
}

async fn send(
    tx: &mpsc::Sender<Reading>,
    unit: &mut Unit,
    transport: &'static str,
    body: ReadingBody,
) {
    unit.seq = unit.seq.wrapping_add(1);
    let reading = Reading {
        device_id: unit.device.id.clone(),
        kind: unit.device.kind,
        received_ms: now_ms(),
        device_ts_ms: None,
        seq: unit.seq,
        transport,
        body,
    };
    // Backpressure: wait for the pipeline rather than drop the reading.
    let _ = tx.send(reading).await;
}

/// Start one polling task per endpoint for the Modbus devices among `devices`.
pub fn spawn<'a>(
    devices: impl IntoIterator<Item = &'a Arc<Device>>,
    tx: &mpsc::Sender<Reading>,
    metrics: &Arc<Metrics>,
    settings: ModbusSettings,
    cancel: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut endpoints: BTreeMap<Endpoint, Vec<Unit>> = BTreeMap::new();
    for device in devices {
        let (endpoint, unit) = match &device.transport {
            Transport::Mqtt => continue,
            Transport::ModbusTcp { host, port, unit } => {
                (Endpoint::Tcp(host.clone(), *port), *unit)
            }
            Transport::ModbusRtu { path, baud, unit } => {
                (Endpoint::Rtu(path.clone(), *baud), *unit)
            }
        };
        endpoints.entry(endpoint).or_default().push(Unit {
            device: Arc::clone(device),
            unit,
            identified: false,
            mismatch: None,
            failures: 0,
            offline: false,
            next_poll: Instant::now(),
            seq: 0,
        });
    }
    endpoints
        .into_iter()
        .map(|(endpoint, units)| {
            tracing::info!(?endpoint, units = units.len(), "polling Modbus endpoint");
            tokio::spawn(run_endpoint(
                endpoint,
                units,
                tx.clone(),
                Arc::clone(metrics),
                settings,
                cancel.clone(),
            ))
        })
        .collect()
}
