//! A simulated node: the firmware's application and real drivers over simulated chips, with
//! the physical model it measures and the battery it drains.

use std::cell::Cell;
use std::rc::Rc;

use streetgate_firmware::app::bin::Bin;
use streetgate_firmware::app::manhole::Manhole;
use streetgate_firmware::app::streetlight::Streetlight;
use streetgate_firmware::app::toilet::Toilet;
use streetgate_firmware::app::{Device, NoSensor, Node, TickOutcome};
use streetgate_firmware::drivers::a02yyuw::A02yyuw;
use streetgate_firmware::drivers::ads1115::{self, Ads1115, Channel, Gain};
use streetgate_firmware::drivers::battery::{AdcInput, BatteryGauge, LI_SOCL2};
use streetgate_firmware::drivers::bl0942::{Bl0942, Calibration};
use streetgate_firmware::drivers::gas::{DEFAULT_H2S, DEFAULT_NH3, GasFrontEnd};
use streetgate_firmware::drivers::lamp::{AdcLeakage, LampController};
use streetgate_firmware::drivers::lis3dh::{self, Lis3dh};
use streetgate_firmware::drivers::tmp102::Tmp102;
use streetgate_firmware::platform::{LinkDown, Now, Transport};
use streetgate_firmware::sensors::{
    AccelMg, Accelerometer, GasSample, GasSensor, LampDriver, Metering, Thermometer,
};
use streetgate_protocols::codec::Encoding;
use streetgate_protocols::{Channel as MqttChannel, DeviceId, DeviceKind, Downlink};

use crate::chips::{
    A02yyuwChip, Ads1115Chip, Bl0942Chip, DimPwm, Lis3dhChip, NoDelay, RelayPin, SimI2c,
    Tmp102Chip, battery_volts,
};
use crate::physics::{BatteryModel, BinModel, Cover, LampModel, Shared, ToiletAir, shared};

type Adc = Ads1115<SimI2c<Ads1115Chip>, NoDelay>;
type Gauge = BatteryGauge<AdcInput<SimI2c<Ads1115Chip>, NoDelay>>;
type Accel = Lis3dh<SimI2c<Lis3dhChip>>;

/// Leakage sensing: 100 mA per volt of burden voltage.
const LEAKAGE_MA_PER_V: f32 = 100.0;

/// The physical world of one node.
#[derive(Debug, Clone)]
pub enum World {
    /// A lamp.
    Lamp(Shared<LampModel>),
    /// A cover.
    Cover(Shared<Cover>),
    /// A bin.
    Bin(Shared<BinModel>),
    /// A toilet.
    Toilet(Shared<ToiletAir>),
}

type LampStage =
    LampController<RelayPin, DimPwm, Bl0942Chip, AdcLeakage<SimI2c<Ads1115Chip>, NoDelay>>;
type Ranger = A02yyuw<A02yyuwChip>;
type Thermo = Tmp102<SimI2c<Tmp102Chip>>;
type Gas = GasFrontEnd<SimI2c<Ads1115Chip>, NoDelay>;
type BinApp = Bin<Ranger, Sampled<Thermo>, NoSensor, Gauge>;

/// The firmware device, boxed: the kinds differ in size and nodes live in large fleets.
enum App {
    Streetlight(Box<Device<Streetlight<Sampled<LampStage>>>>),
    Manhole(Box<Device<Manhole<Sampled<Accel>, Ranger, Gauge>>>),
    Bin(Box<Device<BinApp>>),
    Toilet(Box<Device<Toilet<Sampled<Gas>, NoSensor>>>),
}

/// The sensor a kind's application reads exactly once per sampling wake (a cover's
/// accelerometer, a bin's thermometer, a toilet's gas cells, a lamp's metering), its reads
/// counted: what the firmware actually sampled, not what a formula expects.
struct Sampled<S> {
    sensor: S,
    count: Rc<Cell<u64>>,
}

impl<S> Sampled<S> {
    fn new(sensor: S, count: &Rc<Cell<u64>>) -> Self {
        Self {
            sensor,
            count: count.clone(),
        }
    }

    fn tally(&self) {
        self.count.set(self.count.get() + 1);
    }
}

impl<S: Accelerometer> Accelerometer for Sampled<S> {
    type Error = S::Error;
    fn read_mg(&mut self) -> Result<AccelMg, S::Error> {
        self.tally();
        self.sensor.read_mg()
    }
}

impl<S: Thermometer> Thermometer for Sampled<S> {
    type Error = S::Error;
    fn temperature_c(&mut self) -> Result<f32, S::Error> {
        self.tally();
        self.sensor.temperature_c()
    }
}

impl<S: GasSensor> GasSensor for Sampled<S> {
    type Error = S::Error;
    fn read(&mut self) -> Result<GasSample, S::Error> {
        self.tally();
        self.sensor.read()
    }
}

impl<S: LampDriver> LampDriver for Sampled<S> {
    type Error = S::Error;
    fn set_relay(&mut self, on: bool) -> Result<(), S::Error> {
        self.sensor.set_relay(on)
    }
    fn set_dim_pct(&mut self, pct: u8) -> Result<(), S::Error> {
        self.sensor.set_dim_pct(pct)
    }
    fn measure(&mut self) -> Result<Metering, S::Error> {
        self.tally();
        self.sensor.measure()
    }
}

/// A simulated node.
pub struct SimNode {
    app: App,
    /// What it measures; scenarios change it to inject faults.
    pub world: World,
    /// Its battery (mains-powered lamps and toilets keep a full one).
    pub battery: Shared<BatteryModel>,
    /// Powered: a node without power stops and its connection dies without a DISCONNECT (the
    /// broker publishes its last will).
    pub powered: bool,
    /// Its MQTT connection is cut (a broker or carrier outage): the firmware keeps running and
    /// holds its messages in its outbox until the link is back. A Modbus line is not affected.
    pub link_cut: bool,
    /// Malformed payloads still to send on its topics (a node with broken firmware).
    pub malformed: u32,
    last_ms: Option<u64>,
    sent: u64,
    samples: Rc<Cell<u64>>,
}

impl std::fmt::Debug for SimNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimNode")
            .field("id", self.node().id())
            .field("world", &self.world)
            .finish_non_exhaustive()
    }
}

fn gauge(battery: &Shared<BatteryModel>) -> Gauge {
    let b = battery.clone();
    let chip = Ads1115Chip::new(
        0x49,
        [
            None,
            None,
            Some(Box::new(move || battery_volts(&b.borrow(), LI_SOCL2) / 2.0)),
            None,
        ],
    );
    BatteryGauge::new(
        AdcInput::new(
            Ads1115::new(
                SimI2c::new(chip),
                NoDelay,
                ads1115::Config {
                    address: 0x49,
                    ..ads1115::Config::default()
                },
            ),
            Channel::Ain2,
            Gain::Fs4_096,
        ),
        2.0,
        LI_SOCL2,
    )
}

fn accelerometer(cover: &Shared<Cover>) -> Accel {
    let mut acc = Lis3dh::new(
        SimI2c::new(Lis3dhChip::new(cover.clone())),
        lis3dh::Config::default(),
    );
    // The simulated part always answers WHO_AM_I; a failure here is a simulator bug.
    let _ = acc.init();
    acc
}

impl SimNode {
    /// A healthy node of `kind`, its noise seeded by `seed`.
    pub fn new(id: DeviceId, kind: DeviceKind, seed: u64, encoding: Encoding) -> Self {
        let node = Node::new(id, kind, encoding);
        let battery = shared(BatteryModel::d_cell());
        let samples = Rc::new(Cell::new(0));
        let (app, world) = match kind {
            DeviceKind::Streetlight => {
                let lamp = shared(LampModel::new(seed));
                let leak = lamp.clone();
                let leakage_chip = Ads1115Chip::new(
                    0x48,
                    [
                        Some(Box::new(move || {
                            leak.borrow().leakage_ma / f64::from(LEAKAGE_MA_PER_V)
                        })),
                        None,
                        None,
                        None,
                    ],
                );
                let leakage = AdcLeakage::new(
                    Adc::new(
                        SimI2c::new(leakage_chip),
                        NoDelay,
                        ads1115::Config::default(),
                    ),
                    Channel::Ain0,
                    Gain::Fs2_048,
                    LEAKAGE_MA_PER_V,
                );
                let stage = LampController::new(
                    RelayPin(lamp.clone()),
                    DimPwm(lamp.clone()),
                    Bl0942::new(Bl0942Chip::new(lamp.clone()), Calibration::default()),
                    leakage,
                );
                (
                    App::Streetlight(Box::new(Device::new(
                        node,
                        Streetlight::new(Sampled::new(stage, &samples)),
                    ))),
                    World::Lamp(lamp),
                )
            }
            DeviceKind::Manhole => {
                let cover = shared(Cover::new(seed));
                let depth = cover.borrow().well_depth_mm;
                let water = A02yyuw::new(A02yyuwChip::for_well(cover.clone()));
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let app = Manhole::new(
                    Sampled::new(accelerometer(&cover), &samples),
                    Some(water),
                    gauge(&battery),
                    depth as u16,
                );
                (
                    App::Manhole(Box::new(Device::new(node, app))),
                    World::Cover(cover),
                )
            }
            DeviceKind::Bin => {
                let bin = shared(BinModel::new(seed, 1000.0, 2.0));
                let t = bin.clone();
                let thermo = Tmp102::new(
                    SimI2c::new(Tmp102Chip::new(
                        0x48,
                        Box::new(move || t.borrow().temperature_c),
                    )),
                    0x48,
                );
                let app = Bin::new(
                    A02yyuw::new(A02yyuwChip::for_bin(bin.clone())),
                    Sampled::new(thermo, &samples),
                    None::<NoSensor>,
                    gauge(&battery),
                );
                (App::Bin(Box::new(Device::new(node, app))), World::Bin(bin))
            }
            DeviceKind::Toilet => {
                let air = shared(ToiletAir::new(seed));
                let (a, b) = (air.clone(), air.clone());
                let chip = Ads1115Chip::new(
                    0x48,
                    [
                        Some(Box::new(move || {
                            f64::from(DEFAULT_NH3.volts(a.borrow_mut().sample().0 as f32))
                        })),
                        Some(Box::new(move || {
                            f64::from(DEFAULT_H2S.volts(b.borrow_mut().sample().1 as f32))
                        })),
                        None,
                        None,
                    ],
                );
                let gas = GasFrontEnd::new(
                    Adc::new(SimI2c::new(chip), NoDelay, ads1115::Config::default()),
                    DEFAULT_NH3,
                    DEFAULT_H2S,
                );
                (
                    App::Toilet(Box::new(Device::new(
                        node,
                        Toilet::new(Sampled::new(gas, &samples), None::<NoSensor>),
                    ))),
                    World::Toilet(air),
                )
            }
        };
        Self {
            app,
            world,
            battery,
            powered: true,
            link_cut: false,
            malformed: 0,
            last_ms: None,
            sent: 0,
            samples,
        }
    }

    /// The firmware node (id, settings, outbox, counters).
    pub fn node(&self) -> &Node {
        match &self.app {
            App::Streetlight(d) => &d.node,
            App::Manhole(d) => &d.node,
            App::Bin(d) => &d.node,
            App::Toilet(d) => &d.node,
        }
    }

    /// The firmware node, mutable (to apply settings before a run).
    pub fn node_mut(&mut self) -> &mut Node {
        match &mut self.app {
            App::Streetlight(d) => &mut d.node,
            App::Manhole(d) => &mut d.node,
            App::Bin(d) => &mut d.node,
            App::Toilet(d) => &mut d.node,
        }
    }

    /// Messages this node has handed to its transport.
    pub fn messages_sent(&self) -> u64 {
        self.sent
    }

    /// Samples the firmware has taken (reads of the sensor its application reads once per
    /// sampling wake).
    pub fn samples_taken(&self) -> u64 {
        self.samples.get()
    }

    /// Whether the node runs on its battery (covers and bins; lamps and toilets are on mains).
    pub fn battery_powered(&self) -> bool {
        matches!(self.app, App::Manhole(_) | App::Bin(_))
    }

    /// The application's sampling period, ms (a firmware constant of each kind, not a
    /// downlink setting).
    pub fn sample_period_ms(&self) -> u64 {
        match &self.app {
            App::Streetlight(d) => d.app.sample_ms,
            App::Manhole(d) => d.app.sample_ms,
            App::Bin(d) => d.app.sample_ms,
            App::Toilet(d) => d.app.sample_ms,
        }
    }

    /// Change the sampling period, ms (at least 1).
    pub fn set_sample_period_ms(&mut self, ms: u64) {
        let ms = ms.max(1);
        match &mut self.app {
            App::Streetlight(d) => d.app.sample_ms = ms,
            App::Manhole(d) => d.app.sample_ms = ms,
            App::Bin(d) => d.app.sample_ms = ms,
            App::Toilet(d) => d.app.sample_ms = ms,
        }
    }

    /// Hand the firmware a decoded config or command that arrived some other way than its
    /// transport's downlink (a Modbus holding-register write): the firmware's own
    /// [`Device::apply_downlink`] validates, applies and acknowledges it, as it does for MQTT.
    pub fn apply_downlink(&mut self, downlink: Downlink, now: Now) -> TickOutcome {
        match &mut self.app {
            App::Streetlight(d) => d.apply_downlink(downlink, now),
            App::Manhole(d) => d.apply_downlink(downlink, now),
            App::Bin(d) => d.apply_downlink(downlink, now),
            App::Toilet(d) => d.apply_downlink(downlink, now),
        }
    }

    /// Advance the world to `now` and run one firmware tick.
    pub fn tick(&mut self, now: Now, transport: &mut impl Transport) -> TickOutcome {
        let dt_s = self
            .last_ms
            .map_or(0.0, |t| now.mono_ms.saturating_sub(t) as f64 / 1000.0);
        self.last_ms = Some(now.mono_ms);
        match &self.world {
            World::Lamp(l) => l.borrow_mut().advance(dt_s),
            World::Bin(b) => b.borrow_mut().advance(dt_s),
            World::Toilet(t) => t.borrow_mut().advance(dt_s),
            World::Cover(_) => {}
        }
        let mut counting = Counting {
            inner: transport,
            sent: 0,
        };
        let samples_before = self.samples.get();
        let outcome = match &mut self.app {
            App::Streetlight(d) => d.tick(now, &mut counting),
            App::Manhole(d) => d.tick(now, &mut counting),
            App::Bin(d) => d.tick(now, &mut counting),
            App::Toilet(d) => d.tick(now, &mut counting),
        };
        let sent = counting.sent;
        self.sent += sent;
        if !matches!(self.world, World::Lamp(_)) {
            // The drain model is per event: the samples this tick actually took (the firmware
            // samples at most once per tick, when its period is due) and the messages it sent.
            let sampled = self.samples.get() - samples_before;
            self.battery.borrow_mut().drain(dt_s, sampled, sent);
        }
        outcome
    }
}

/// Counts what the firmware sends (each message costs battery).
struct Counting<'a, T> {
    inner: &'a mut T,
    sent: u64,
}

impl<T: Transport> Transport for Counting<'_, T> {
    fn send(&mut self, channel: MqttChannel, payload: &[u8]) -> Result<(), LinkDown> {
        self.inner.send(channel, payload)?;
        self.sent += 1;
        Ok(())
    }
    fn poll_downlink(&mut self, buf: &mut [u8]) -> Option<(MqttChannel, usize)> {
        self.inner.poll_downlink(buf)
    }
    fn take_connected(&mut self) -> bool {
        self.inner.take_connected()
    }
}
