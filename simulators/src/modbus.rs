//! Simulated nodes as Modbus slaves: each node's firmware register image
//! ([`RegisterImage`], laid out by `streetgate_protocols::modbus`) served over Modbus TCP behind
//! an RS-485-to-Ethernet converter, or over Modbus RTU on a serial line.
//!
//! * A [`Unit`] is one node's side of the bus: its register image, the register writes the
//!   master made that the node has not handled yet, and whether it answers at all (a node
//!   without power, or not booted yet, is silent).
//! * A [`ModbusLink`] is the node's transport: [`ModbusLink::tick`] hands the node the complete
//!   config and command blocks the master wrote, through the firmware's own downlink path
//!   ([`Device::apply_downlink`](streetgate_firmware::app::Device::apply_downlink): the same
//!   validation, application and acknowledgement as an MQTT config or command), runs the
//!   firmware and refreshes the image (telemetry from the latest sample, acknowledgement
//!   block 90–92). The firmware's own messages (telemetry, events, status) have nowhere to go
//!   on a Modbus line: the master reads the registers instead, so the link takes and drops
//!   them.
//! * A [`Converter`] is an RS-485-to-Ethernet converter: ONE TCP port, MANY unit ids, each the
//!   unit of one node. It answers like a Modbus TCP gateway with a slave-id map (a Moxa MGate,
//!   say): a unit id it has no route for gets exception 0x0A *gateway path unavailable* at once,
//!   without touching the line; a mapped unit that does not answer (no power) gets exception
//!   0x0B *gateway target device failed to respond* once the converter's serial response
//!   timeout ([`ConverterConfig::response_timeout`]) has passed, during which the line, and so
//!   the TCP connection, is busy — as on the real half-duplex bus. (A transparent converter
//!   would forward everything and stay silent; the gateway's poller treats silence, 0x0A and
//!   0x0B alike: a failure of that unit only, which backs off while the others are polled.)
//! * An [`RtuLine`] is the same units on a serial port (one end of a virtual serial pair in
//!   the tests): on a real RS-485 line nobody answers for a unit id that is absent or dead, so
//!   the master times out.
//!
//! Requests served: read input registers (0x04: identification 0–7, acknowledgement 90–92,
//! telemetry from 100), read holding registers (0x03: config 1000–1053, command 1100–1105),
//! write single register (0x06) and write multiple registers (0x10). Addresses outside the
//! map give exception 0x02 (illegal data address), quantities outside 1–125 (reads) or
//! 1–123 (writes) and blocks that do not decode or validate 0x03 (illegal data value), any
//! other function 0x01 (illegal function). A config or command block only takes effect when
//! written whole in one request (the firmware's rule).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use streetgate_firmware::app::{FW_VERSION, TickOutcome};
use streetgate_firmware::platform::{LinkDown, Now, Transport};
use streetgate_firmware::register_image::{Exception, RegisterImage};
use streetgate_protocols::{Channel, DeviceKind, Downlink};
use tokio::task::JoinHandle;
use tokio_modbus::prelude::{ExceptionCode, Request, Response, SlaveRequest};

use crate::city::{City, Wiring};
use crate::node::SimNode;

/// Most registers one read may ask for (Modbus application protocol, 0x03 / 0x04).
pub const MAX_READ: u16 = 125;
/// Most registers one write may carry (0x10).
pub const MAX_WRITE: usize = 123;
/// Complete blocks written but not yet handled by the node; beyond this a write gets
/// exception 0x06 (server device busy).
pub const MAX_PENDING_WRITES: usize = 8;

/// The firmware version as the identification block carries it.
fn fw_version() -> (u16, u16, u16) {
    let mut parts = FW_VERSION.split('.').map(|p| p.parse::<u16>().unwrap_or(0));
    let mut next = || parts.next().unwrap_or(0);
    (next(), next(), next())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn exception(e: Exception) -> ExceptionCode {
    match e {
        Exception::IllegalDataAddress => ExceptionCode::IllegalDataAddress,
        Exception::IllegalDataValue => ExceptionCode::IllegalDataValue,
    }
}

/// One node's side of a Modbus line, shared between the node's thread (which runs the
/// firmware and refreshes the image) and the server tasks (which answer the master).
#[derive(Debug)]
pub struct Unit {
    kind: DeviceKind,
    image: Mutex<RegisterImage>,
    writes: Mutex<VecDeque<Downlink>>,
    answering: AtomicBool,
}

impl Unit {
    /// The unit of a node of `kind`: silent until the node has run once
    /// ([`ModbusLink::tick`] or [`Unit::refresh`]).
    pub fn new(kind: DeviceKind) -> Arc<Self> {
        Arc::new(Self {
            kind,
            image: Mutex::new(RegisterImage::new(kind, fw_version())),
            writes: Mutex::new(VecDeque::new()),
            answering: AtomicBool::new(false),
        })
    }

    /// The node's kind (what its identification block says).
    pub fn kind(&self) -> DeviceKind {
        self.kind
    }

    /// Bring the image up to date with `node` (latest sample, last acknowledgement) and
    /// answer from now on.
    pub fn refresh(&self, node: &SimNode) {
        lock(&self.image).refresh(node.node());
        self.answering.store(true, Ordering::Release);
    }

    /// Whether the unit answers the master (powered and booted).
    pub fn is_answering(&self) -> bool {
        self.answering.load(Ordering::Acquire)
    }

    /// Stop (power lost) or resume answering.
    pub fn set_answering(&self, answering: bool) {
        self.answering.store(answering, Ordering::Release);
    }

    /// Complete config and command blocks written since the last call, oldest first.
    pub fn take_writes(&self) -> Vec<Downlink> {
        lock(&self.writes).drain(..).collect()
    }

    /// Serve one request addressed to this unit.
    fn answer(&self, request: Request<'_>) -> Result<Response, ExceptionCode> {
        let quantity = |count: u16| {
            if (1..=MAX_READ).contains(&count) {
                Ok(vec![0u16; usize::from(count)])
            } else {
                Err(ExceptionCode::IllegalDataValue)
            }
        };
        match request {
            Request::ReadInputRegisters(addr, count) => {
                let mut out = quantity(count)?;
                lock(&self.image)
                    .read_input(addr, count, &mut out)
                    .map_err(exception)?;
                Ok(Response::ReadInputRegisters(out))
            }
            Request::ReadHoldingRegisters(addr, count) => {
                let mut out = quantity(count)?;
                lock(&self.image)
                    .read_holding(addr, count, &mut out)
                    .map_err(exception)?;
                Ok(Response::ReadHoldingRegisters(out))
            }
            Request::WriteSingleRegister(addr, value) => {
                self.write(addr, &[value])?;
                Ok(Response::WriteSingleRegister(addr, value))
            }
            Request::WriteMultipleRegisters(addr, values) => {
                let n = u16::try_from(values.len())
                    .ok()
                    .filter(|n| (1..=MAX_WRITE).contains(&usize::from(*n)))
                    .ok_or(ExceptionCode::IllegalDataValue)?;
                self.write(addr, &values)?;
                Ok(Response::WriteMultipleRegisters(addr, n))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }

    fn write(&self, addr: u16, values: &[u16]) -> Result<(), ExceptionCode> {
        // Lock order: writes, then image (refresh takes only the image).
        let mut writes = lock(&self.writes);
        if writes.len() >= MAX_PENDING_WRITES {
            return Err(ExceptionCode::ServerDeviceBusy);
        }
        if let Some(downlink) = lock(&self.image)
            .write_holding(addr, values)
            .map_err(exception)?
        {
            writes.push_back(downlink);
        }
        Ok(())
    }
}

/// A node's transport on a Modbus line.
#[derive(Debug)]
pub struct ModbusLink {
    unit: Arc<Unit>,
    dropped: u64,
}

impl ModbusLink {
    /// The link of the node behind `unit`.
    pub fn new(unit: Arc<Unit>) -> Self {
        Self { unit, dropped: 0 }
    }

    /// The unit the master talks to.
    pub fn unit(&self) -> &Arc<Unit> {
        &self.unit
    }

    /// Messages the firmware queued that the line had no use for.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// One step of `node` at `now`: the blocks the master wrote go through the firmware's
    /// downlink path (validated, applied, acknowledged), the firmware ticks, and the image is
    /// refreshed from it. A node without power is not ticked and does not answer.
    pub fn tick(&mut self, node: &mut SimNode, now: Now) -> TickOutcome {
        if !node.powered {
            self.unit.set_answering(false);
            return TickOutcome::default();
        }
        let mut outcome = TickOutcome::default();
        for downlink in self.unit.take_writes() {
            let o = node.apply_downlink(downlink, now);
            outcome.settings_changed |= o.settings_changed;
            outcome.reboot_requested |= o.reboot_requested;
        }
        let o = node.tick(now, self);
        outcome.settings_changed |= o.settings_changed;
        outcome.reboot_requested |= o.reboot_requested;
        self.unit.refresh(node);
        outcome
    }
}

impl Transport for ModbusLink {
    fn send(&mut self, _channel: Channel, _payload: &[u8]) -> Result<(), LinkDown> {
        // No unsolicited uplink on a Modbus line: the master polls the register image.
        self.dropped += 1;
        Ok(())
    }

    fn poll_downlink(&mut self, _buf: &mut [u8]) -> Option<(Channel, usize)> {
        // Downlinks arrive as register writes (see `tick`).
        None
    }
}

/// Counters of one converter or line.
#[derive(Debug, Default)]
pub struct BusStats {
    /// Requests received.
    pub requests: AtomicU64,
    /// Requests answered with data or an acknowledgement.
    pub answered: AtomicU64,
    /// Requests answered with an exception.
    pub exceptions: AtomicU64,
    /// Requests nobody answered.
    pub unanswered: AtomicU64,
}

/// What the bus does with a request for a unit that is absent or does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Front {
    /// A Modbus TCP gateway: 0x0A for unmapped unit ids at once, 0x0B for a silent unit after
    /// the serial response timeout.
    Gateway { response_timeout: Duration },
    /// A serial line: silence.
    Line,
}

type Answer = Result<Option<Response>, ExceptionCode>;

/// The units of one bus, as a tokio-modbus service.
#[derive(Debug, Clone)]
struct Bus {
    units: Arc<BTreeMap<u8, Arc<Unit>>>,
    front: Front,
    stats: Arc<BusStats>,
}

impl tokio_modbus::server::Service for Bus {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let stats = self.stats.clone();
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let count = move |answer: Answer| {
            match &answer {
                Ok(Some(_)) => &stats.answered,
                Ok(None) => &stats.unanswered,
                Err(_) => &stats.exceptions,
            }
            .fetch_add(1, Ordering::Relaxed);
            answer
        };
        let unit = self.units.get(&req.slave);
        match (self.front, unit) {
            (_, Some(unit)) if unit.is_answering() => Box::pin(std::future::ready(count(
                unit.answer(req.request).map(Some),
            ))),
            (Front::Line, _) => Box::pin(std::future::ready(count(Ok(None)))),
            (Front::Gateway { .. }, None) => Box::pin(std::future::ready(count(Err(
                ExceptionCode::GatewayPathUnavailable,
            )))),
            (Front::Gateway { response_timeout }, Some(_)) => Box::pin(async move {
                // The converter sent the request down the line and waited for its timeout.
                tokio::time::sleep(response_timeout).await;
                count(Err(ExceptionCode::GatewayTargetDevice))
            }),
        }
    }
}

/// How a converter behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConverterConfig {
    /// How long the converter waits for a unit on its serial side before answering 0x0B
    /// (configure it below the master's request timeout, as on a real installation: a later
    /// answer reaches a master that has moved on).
    pub response_timeout: Duration,
}

impl Default for ConverterConfig {
    fn default() -> Self {
        Self {
            response_timeout: Duration::from_millis(100),
        }
    }
}

/// An RS-485-to-Ethernet converter: one TCP port, the units of one line behind it.
#[derive(Debug)]
pub struct Converter {
    addr: SocketAddr,
    /// Its counters.
    pub stats: Arc<BusStats>,
    units: usize,
    task: JoinHandle<()>,
}

impl Converter {
    /// Bind `addr` (`127.0.0.1:0` for an ephemeral port) and serve `units` (unit id → unit)
    /// on the current Tokio runtime until stopped or dropped.
    pub async fn bind(
        addr: SocketAddr,
        units: impl IntoIterator<Item = (u8, Arc<Unit>)>,
        config: ConverterConfig,
    ) -> io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let bus = Bus {
            units: Arc::new(units.into_iter().collect()),
            front: Front::Gateway {
                response_timeout: config.response_timeout,
            },
            stats: Arc::default(),
        };
        let (stats, units) = (bus.stats.clone(), bus.units.len());
        let task = tokio::spawn(async move {
            let server = tokio_modbus::server::tcp::Server::new(listener);
            let on_connected = move |stream, peer| {
                let bus = bus.clone();
                async move {
                    tokio_modbus::server::tcp::accept_tcp_connection(stream, peer, move |_| {
                        Ok(Some(bus.clone()))
                    })
                }
            };
            // Connection errors end that connection only (the master reconnects).
            let _ = server.serve(&on_connected, |_| {}).await;
        });
        Ok(Self {
            addr,
            stats,
            units,
            task,
        })
    }

    /// Where the converter listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Units behind it.
    pub fn units(&self) -> usize {
        self.units
    }

    /// Stop serving (open connections are closed).
    pub fn stop(self) {}
}

impl Drop for Converter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Units on a serial line (Modbus RTU), served from the slave side of a serial port.
#[derive(Debug)]
pub struct RtuLine {
    /// Its counters.
    pub stats: Arc<BusStats>,
    task: JoinHandle<()>,
}

impl RtuLine {
    /// Open `path` at `baud` and serve `units` on it, on the current Tokio runtime (call
    /// inside one) until stopped or dropped.
    pub fn open(
        path: &Path,
        baud: u32,
        units: impl IntoIterator<Item = (u8, Arc<Unit>)>,
    ) -> io::Result<Self> {
        let server = tokio_modbus::server::rtu::Server::new_from_path(path, baud)?;
        Ok(Self::serve(server, units, ()))
    }

    /// Serve `units` on `server` until stopped; `keep` lives as long as the line.
    fn serve(
        server: tokio_modbus::server::rtu::Server,
        units: impl IntoIterator<Item = (u8, Arc<Unit>)>,
        keep: impl Send + 'static,
    ) -> Self {
        let bus = Bus {
            units: Arc::new(units.into_iter().collect()),
            front: Front::Line,
            stats: Arc::default(),
        };
        let stats = bus.stats.clone();
        let task = tokio::spawn(async move {
            let _keep = keep;
            let _ = server.serve_forever(bus).await;
        });
        Self { stats, task }
    }

    /// A virtual serial line: a pseudo-terminal pair whose master side serves `units` (on the
    /// current Tokio runtime) and whose slave side, at the returned path, is the serial port
    /// the gateway opens, as it would a USB RS-485 adapter. Linux and other Unixes.
    #[cfg(unix)]
    pub fn virtual_pair(
        units: impl IntoIterator<Item = (u8, Arc<Unit>)>,
    ) -> io::Result<(Self, PathBuf)> {
        use tokio_serial::SerialPort as _;
        // The pair holds no lock and no TIOCEXCL (`set_exclusive(false)` would take a shared
        // flock, which the gateway's exclusive open then fails on): the gateway can open the
        // slave side by its path.
        let (master, slave) = tokio_serial::SerialStream::pair().map_err(io::Error::other)?;
        let path = slave
            .name()
            .map(PathBuf::from)
            .ok_or_else(|| io::Error::other("the pseudo-terminal has no name"))?;
        let server = tokio_modbus::server::rtu::Server::new(master);
        // The slave side stays open while the line is served: when its last descriptor
        // closes, reads of the master side fail (EIO) until it is opened again.
        Ok((Self::serve(server, units, slave), path))
    }

    /// Virtual serial lines need pseudo-terminals (Unix).
    #[cfg(not(unix))]
    pub fn virtual_pair(
        _units: impl IntoIterator<Item = (u8, Arc<Unit>)>,
    ) -> io::Result<(Self, PathBuf)> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "virtual serial lines need pseudo-terminals (Unix)",
        ))
    }

    /// Stop serving and release the port.
    pub fn stop(self) {}
}

impl Drop for RtuLine {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The converters of a city's Modbus lines, bound before anything else needs their ports (the
/// inventory CSV: [`City::to_csv_with`]) and serving the units the fleet's nodes keep current.
#[derive(Debug, Default)]
pub struct Converters {
    converters: Vec<Converter>,
    rtu: Vec<(RtuLine, PathBuf)>,
    units: HashMap<String, Arc<Unit>>,
}

impl Converters {
    /// No converters: a city without Modbus lines.
    pub fn none() -> Self {
        Self::default()
    }

    /// One converter per Modbus TCP line of `city`, each on its own ephemeral port of
    /// 127.0.0.1, and one virtual serial line ([`RtuLine::virtual_pair`]) per RTU line, serving
    /// on the current Tokio runtime.
    pub async fn bind(city: &City, config: ConverterConfig) -> io::Result<Self> {
        type Lines = BTreeMap<usize, Vec<(u8, String, Arc<Unit>)>>;
        let (mut tcp, mut rtu) = (Lines::new(), Lines::new());
        for d in &city.devices {
            let (lines, line, unit) = match d.wiring {
                Wiring::ModbusTcp { line, unit } => (&mut tcp, line, unit),
                Wiring::ModbusRtu { line, unit } => (&mut rtu, line, unit),
                Wiring::Mqtt => continue,
            };
            lines
                .entry(line)
                .or_default()
                .push((unit, d.id.clone(), Unit::new(d.kind)));
        }
        let numbered = |lines: &Lines, what: &str| match lines
            .keys()
            .enumerate()
            .find(|(i, line)| *i != **line)
        {
            Some((_, line)) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("Modbus {what} lines are numbered from 0 without gaps; line {line} found"),
            )),
            None => Ok(()),
        };
        numbered(&tcp, "TCP")?;
        numbered(&rtu, "RTU")?;
        let mut me = Self::default();
        for units in tcp.into_values() {
            let served = units.iter().map(|(u, _, unit)| (*u, unit.clone()));
            let converter = Converter::bind(([127, 0, 0, 1], 0).into(), served, config).await?;
            me.converters.push(converter);
            me.units
                .extend(units.into_iter().map(|(_, id, unit)| (id, unit)));
        }
        for units in rtu.into_values() {
            let served = units.iter().map(|(u, _, unit)| (*u, unit.clone()));
            me.rtu.push(RtuLine::virtual_pair(served)?);
            me.units
                .extend(units.into_iter().map(|(_, id, unit)| (id, unit)));
        }
        Ok(me)
    }

    /// The converters' addresses, by line.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.converters.iter().map(Converter::local_addr).collect()
    }

    /// The serial ports of the RTU lines (the slave sides of their pseudo-terminal pairs), by
    /// line.
    pub fn serial_paths(&self) -> Vec<String> {
        self.rtu
            .iter()
            .map(|(_, p)| p.to_string_lossy().into_owned())
            .collect()
    }

    /// The RTU lines, by line.
    pub fn rtu_lines(&self) -> impl Iterator<Item = &RtuLine> {
        self.rtu.iter().map(|(l, _)| l)
    }

    /// The converters, by line.
    pub fn converters(&self) -> &[Converter] {
        &self.converters
    }

    /// The unit of a device on a Modbus line.
    pub fn unit(&self, device_id: &str) -> Option<Arc<Unit>> {
        self.units.get(device_id).cloned()
    }
}
