//! Simulated nodes as Modbus slaves, against real sockets on ephemeral ports: several units
//! behind one converter port read back what their physical models imply; an unknown or dead
//! unit stalls nobody; register writes reach the firmware through its downlink path and the
//! acknowledgement block shows the result; RTU on a virtual serial pair answers the same way;
//! a city's Modbus lines get converters whose ports the inventory names, and the gateway's own
//! poller and command path work against them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::process::{Command as Process, Stdio};
use std::sync::Arc;
use std::time::Duration;

use streetgate_firmware::platform::Now;
use streetgate_gateway::ingest::modbus::{ModbusAccess, ModbusSettings, Supervisor};
use streetgate_gateway::inventory::{self, Inventory};
use streetgate_gateway::metrics::Metrics;
use streetgate_gateway::model::{Device, Reading, ReadingBody, Transport};
use streetgate_protocols::codec::Encoding;
use streetgate_protocols::modbus::{self as map, AckResult};
use streetgate_protocols::{
    Action, Command, Config, DeviceId, DeviceKind, LampSchedule, TelemetryData,
};
use streetgate_simulators::city::{City, CityConfig, RTU_BAUD, UNITS_PER_LINE, Wiring};
use streetgate_simulators::fleet::{Fleet, FleetConfig};
use streetgate_simulators::modbus::{
    Converter, ConverterConfig, Converters, ModbusLink, RtuLine, Unit,
};
use streetgate_simulators::node::{SimNode, World};
use tokio::sync::mpsc;
use tokio_modbus::client::{Context, Reader, Writer};
use tokio_modbus::prelude::{ExceptionCode, Slave, SlaveContext};
use tokio_util::sync::CancellationToken;

/// 2024-12-21 18:00 Beijing: after dusk, lamps on their schedule are lit.
const DUSK_MS: u64 = 1_734_775_200_000;

fn at(s: u64) -> Now {
    Now {
        mono_ms: s * 1000,
        unix_ms: Some(DUSK_MS + s * 1000),
    }
}

/// A lamp on its astronomical schedule in Hebi, and a cover tilted by 20°.
fn lamp_and_cover() -> (SimNode, SimNode) {
    let mut lamp = SimNode::new(
        DeviceId::new("SL-1").unwrap(),
        DeviceKind::Streetlight,
        1,
        Encoding::Binary,
    );
    lamp.node_mut()
        .settings
        .apply(&Config {
            config_id: 0,
            schedule: Some(LampSchedule {
                lat_deg: 35.7476,
                lon_deg: 114.2975,
                on_offset_min: 0,
                off_offset_min: 0,
                night_dim_pct: None,
                dim_from_min: None,
                dim_to_min: None,
                utc_offset_min: 480,
            }),
            ..Config::default()
        })
        .unwrap();
    let cover = SimNode::new(
        DeviceId::new("MH-2").unwrap(),
        DeviceKind::Manhole,
        2,
        Encoding::Binary,
    );
    let World::Cover(c) = &cover.world else {
        panic!("a manhole node measures a cover")
    };
    c.borrow_mut().tilt_deg = 20.0;
    (lamp, cover)
}

/// Run nodes on their links from `from` to `to` simulated seconds, one tick per second.
fn run(nodes: &mut [(&mut SimNode, &mut ModbusLink)], from: u64, to: u64) {
    for s in from..to {
        for (node, link) in nodes.iter_mut() {
            link.tick(node, at(s));
        }
    }
}

async fn telemetry(ctx: &mut Context, kind: DeviceKind) -> TelemetryData {
    let len = map::map(kind).telemetry_len();
    let regs = ctx
        .read_input_registers(map::TELEMETRY_START, len)
        .await
        .unwrap()
        .unwrap();
    map::decode_telemetry(kind, &regs).unwrap()
}

async fn identify(ctx: &mut Context, kind: DeviceKind) {
    let regs = ctx
        .read_input_registers(map::IDENT_START, map::IDENT_LEN)
        .await
        .unwrap()
        .unwrap();
    let id = map::decode_identification(&regs).unwrap();
    assert_eq!(id.check(kind), Ok(()), "{id:?}");
}

async fn ack(ctx: &mut Context) -> AckResult {
    let regs = ctx
        .read_input_registers(map::ACK_START, map::ACK_LEN)
        .await
        .unwrap()
        .unwrap();
    map::decode_ack(&regs).unwrap()
}

fn lamp_model(
    node: &SimNode,
) -> std::rc::Rc<std::cell::RefCell<streetgate_simulators::physics::LampModel>> {
    match &node.world {
        World::Lamp(l) => l.clone(),
        _ => panic!("not a lamp"),
    }
}

/// Both the lamp and the cover read back as their models imply.
async fn check_both(ctx: &mut Context) {
    ctx.set_slave(Slave(1));
    identify(ctx, DeviceKind::Streetlight).await;
    let TelemetryData::Streetlight(t) = telemetry(ctx, DeviceKind::Streetlight).await else {
        panic!("kind")
    };
    // 100 W LED at full duty on a 230 V feeder, lit after dusk.
    assert!(t.lamp_on, "{t:?}");
    assert!((t.voltage_v - 230.0).abs() < 5.0, "{t:?}");
    assert!((t.power_w - 100.0).abs() < 5.0, "{t:?}");
    ctx.set_slave(Slave(2));
    identify(ctx, DeviceKind::Manhole).await;
    let TelemetryData::Manhole(t) = telemetry(ctx, DeviceKind::Manhole).await else {
        panic!("kind")
    };
    assert!((t.tilt_deg - 20.0).abs() < 1.0, "{t:?}");
    assert!(t.battery_pct >= 95, "{t:?}");
}

#[tokio::test]
async fn units_behind_one_converter_port() {
    let (mut lamp, mut cover) = lamp_and_cover();
    let (lamp_unit, cover_unit) = (
        Unit::new(DeviceKind::Streetlight),
        Unit::new(DeviceKind::Manhole),
    );
    let converter = Converter::bind(
        "127.0.0.1:0".parse().unwrap(),
        [(1, lamp_unit.clone()), (2, cover_unit.clone())],
        ConverterConfig::default(),
    )
    .await
    .unwrap();
    let mut ctx = tokio_modbus::client::tcp::connect_slave(converter.local_addr(), Slave(1))
        .await
        .unwrap();

    // Not booted yet: the converter waits for the unit and gives up (0x0B).
    let r = ctx.read_input_registers(0, 8).await.unwrap();
    assert_eq!(r, Err(ExceptionCode::GatewayTargetDevice));

    let (mut lamp_link, mut cover_link) = (ModbusLink::new(lamp_unit), ModbusLink::new(cover_unit));
    run(
        &mut [(&mut lamp, &mut lamp_link), (&mut cover, &mut cover_link)],
        0,
        30,
    );
    check_both(&mut ctx).await;

    // A unit id the converter has no route for: 0x0A at once; the others answer as before.
    ctx.set_slave(Slave(99));
    let started = std::time::Instant::now();
    let r = ctx.read_input_registers(0, 8).await.unwrap();
    assert_eq!(r, Err(ExceptionCode::GatewayPathUnavailable));
    assert!(started.elapsed() < Duration::from_millis(50));
    check_both(&mut ctx).await;

    // Out of the map: illegal data address; quantities past the limit: illegal data value;
    // functions the map does not use: illegal function.
    ctx.set_slave(Slave(2));
    let len = map::map(DeviceKind::Manhole).telemetry_len();
    for (addr, count) in [(map::TELEMETRY_START, len + 1), (50, 1), (7, 2), (1, 8)] {
        assert_eq!(
            ctx.read_input_registers(addr, count).await.unwrap(),
            Err(ExceptionCode::IllegalDataAddress),
            "input {addr}+{count}"
        );
    }
    assert_eq!(
        ctx.read_holding_registers(map::COMMAND_START + 6, 1)
            .await
            .unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        ctx.write_single_register(2000, 1).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        ctx.read_input_registers(0, 126).await.unwrap(),
        Err(ExceptionCode::IllegalDataValue)
    );
    assert_eq!(
        ctx.read_coils(0, 1).await.unwrap(),
        Err(ExceptionCode::IllegalFunction)
    );
    let config = ctx
        .read_holding_registers(map::CONFIG_START, map::CONFIG_LEN)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(config.len(), usize::from(map::CONFIG_LEN));

    // Lamp off, written as the gateway writes it: one request for the whole command block.
    ctx.set_slave(Slave(1));
    let model = lamp_model(&lamp);
    assert!(
        model.borrow().relay_cmd && model.borrow().contacts_closed(),
        "lit before the command"
    );
    let off = map::encode_command(&Command {
        cmd_id: 42,
        action: Action::LampOff { expires_s: None },
    })
    .unwrap();
    ctx.write_multiple_registers(map::COMMAND_START, &off)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ack(&mut ctx).await,
        AckResult::None,
        "not handled until the node runs"
    );
    run(
        &mut [(&mut lamp, &mut lamp_link), (&mut cover, &mut cover_link)],
        30,
        32,
    );
    assert!(!model.borrow().relay_cmd && !model.borrow().contacts_closed());
    assert_eq!(ack(&mut ctx).await, AckResult::Applied(42));
    let TelemetryData::Streetlight(t) = telemetry(&mut ctx, DeviceKind::Streetlight).await else {
        panic!("kind")
    };
    assert!(!t.lamp_on && t.power_w < 1.0, "{t:?}");

    // A block that does not decode is refused on the wire; a command the kind cannot do is
    // accepted on the wire and rejected by the firmware, as over MQTT.
    assert_eq!(
        ctx.write_multiple_registers(map::COMMAND_START, &[0, 1, 99, 0, 0, 0])
            .await
            .unwrap(),
        Err(ExceptionCode::IllegalDataValue)
    );
    ctx.set_slave(Slave(2));
    let on = map::encode_command(&Command {
        cmd_id: 43,
        action: Action::LampOn {
            dim_pct: None,
            expires_s: None,
        },
    })
    .unwrap();
    ctx.write_multiple_registers(map::COMMAND_START, &on)
        .await
        .unwrap()
        .unwrap();
    // A config block: the cover's tilt alarm, applied and acknowledged.
    let mut regs = [0u16; map::CONFIG_LEN as usize];
    map::encode_config(
        &Config {
            config_id: 44,
            tilt_alarm_deg: Some(25.0),
            ..Config::default()
        },
        &mut regs,
    )
    .unwrap();
    ctx.write_multiple_registers(map::CONFIG_START, &regs)
        .await
        .unwrap()
        .unwrap();
    run(
        &mut [(&mut lamp, &mut lamp_link), (&mut cover, &mut cover_link)],
        32,
        33,
    );
    assert_eq!(ack(&mut ctx).await, AckResult::Applied(44));
    assert_eq!(cover.node().settings.tilt_alarm_deg, 25.0);
    assert_eq!(cover.node().last_ack(), Some((44, true)));

    // A dead unit (power lost) costs the converter's serial timeout, then 0x0B; its
    // neighbour answers.
    lamp.powered = false;
    run(
        &mut [(&mut lamp, &mut lamp_link), (&mut cover, &mut cover_link)],
        33,
        34,
    );
    ctx.set_slave(Slave(1));
    let started = std::time::Instant::now();
    assert_eq!(
        ctx.read_input_registers(0, 8).await.unwrap(),
        Err(ExceptionCode::GatewayTargetDevice)
    );
    assert!(started.elapsed() >= ConverterConfig::default().response_timeout);
    ctx.set_slave(Slave(2));
    identify(&mut ctx, DeviceKind::Manhole).await;
    assert!(
        converter
            .stats
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
            > 20
    );
}

struct Socat(std::process::Child);

impl Drop for Socat {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn rtu_units_on_a_virtual_serial_pair() {
    // CI installs socat and sets the variable: then a missing or failing socat fails the test.
    let required = std::env::var_os("STREETGATE_TEST_SOCAT").is_some();
    let present = Process::new("socat")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        assert!(
            !required,
            "STREETGATE_TEST_SOCAT is set but socat is not installed (or does not run)"
        );
        eprintln!("skipped: socat is not installed (set STREETGATE_TEST_SOCAT=1 to require it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (master, line) = (dir.path().join("gateway"), dir.path().join("line"));
    let _socat = Socat(
        Process::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", master.display()))
            .arg(format!("pty,raw,echo=0,link={}", line.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat did not start"),
    );
    for _ in 0..150 {
        if master.exists() && line.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(master.exists() && line.exists(), "socat made no pty pair");

    let (mut lamp, mut cover) = lamp_and_cover();
    let (lamp_unit, cover_unit) = (
        Unit::new(DeviceKind::Streetlight),
        Unit::new(DeviceKind::Manhole),
    );
    let rtu = RtuLine::open(
        &line,
        9600,
        [(1, lamp_unit.clone()), (2, cover_unit.clone())],
    )
    .expect("opening the slave end");
    let (mut lamp_link, mut cover_link) = (ModbusLink::new(lamp_unit), ModbusLink::new(cover_unit));
    run(
        &mut [(&mut lamp, &mut lamp_link), (&mut cover, &mut cover_link)],
        0,
        30,
    );
    let port =
        tokio_serial::SerialStream::open(&tokio_serial::new(master.display().to_string(), 9600))
            .expect("opening the master end");
    let mut ctx = tokio_modbus::client::rtu::attach_slave(port, Slave(1));
    check_both(&mut ctx).await;

    // Nobody on the line answers for unit 9: the master times out, then reads the others.
    ctx.set_slave(Slave(9));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), ctx.read_input_registers(0, 8))
            .await
            .is_err(),
        "an absent unit must stay silent"
    );
    check_both(&mut ctx).await;

    ctx.set_slave(Slave(2));
    assert_eq!(
        ctx.read_input_registers(map::TELEMETRY_START, 40)
            .await
            .unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );

    ctx.set_slave(Slave(1));
    let off = map::encode_command(&Command {
        cmd_id: 7,
        action: Action::LampOff { expires_s: None },
    })
    .unwrap();
    ctx.write_multiple_registers(map::COMMAND_START, &off)
        .await
        .unwrap()
        .unwrap();
    run(
        &mut [(&mut lamp, &mut lamp_link), (&mut cover, &mut cover_link)],
        30,
        32,
    );
    assert!(!lamp_model(&lamp).borrow().contacts_closed());
    assert_eq!(ack(&mut ctx).await, AckResult::Applied(7));
    assert!(
        rtu.stats
            .unanswered
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}

#[test]
fn a_city_wires_lamps_and_toilets_to_lines_of_at_most_32_units() {
    let city = City::generate(&CityConfig {
        devices: 1000,
        modbus_tcp_fraction: 0.5,
        ..CityConfig::default()
    });
    let mains = city
        .devices
        .iter()
        .filter(|d| matches!(d.kind, DeviceKind::Streetlight | DeviceKind::Toilet))
        .count();
    let wired: Vec<_> = city
        .devices
        .iter()
        .filter_map(|d| match d.wiring {
            Wiring::ModbusTcp { line, unit } => Some((d, line, unit)),
            Wiring::Mqtt | Wiring::ModbusRtu { .. } => None,
        })
        .collect();
    assert_eq!(wired.len(), mains / 2);
    assert!(
        wired
            .iter()
            .all(|(d, _, _)| matches!(d.kind, DeviceKind::Streetlight | DeviceKind::Toilet))
    );
    assert!(
        wired
            .iter()
            .all(|(_, _, u)| (1..=UNITS_PER_LINE).contains(u))
    );
    let slots: HashSet<(usize, u8)> = wired.iter().map(|(_, l, u)| (*l, *u)).collect();
    assert_eq!(slots.len(), wired.len(), "one device per unit id per line");
    assert_eq!(city.modbus_lines(), wired.len().div_ceil(32));
    // Without bound converters there is no port to write.
    assert!(city.to_csv_with(&[], &[]).is_err());
    // The default city is all MQTT, as before.
    let plain = City::generate(&CityConfig::default());
    assert_eq!(plain.modbus_lines(), 0);
    assert!(
        inventory::parse_csv(plain.to_csv().as_bytes())
            .unwrap()
            .iter()
            .all(|d| d.transport == Transport::Mqtt)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_on_modbus_lines_is_polled_and_commanded_by_the_gateway() {
    let city = City::generate(&CityConfig {
        devices: 120,
        modbus_tcp_fraction: 1.0,
        ..CityConfig::default()
    });
    let converters = Converters::bind(&city, ConverterConfig::default())
        .await
        .unwrap();
    let addrs = converters.addrs();
    assert_eq!(addrs.len(), city.modbus_lines());
    assert!(addrs.len() >= 2, "{addrs:?}");
    assert_eq!(
        addrs.iter().map(|a| a.port()).collect::<HashSet<_>>().len(),
        addrs.len(),
        "one port per converter"
    );

    // The inventory names the bound ports.
    let devices = inventory::parse_csv(city.to_csv_with(&addrs, &[]).unwrap().as_bytes()).unwrap();
    let mut modbus = Vec::new();
    for (d, placed) in devices.iter().zip(&city.devices) {
        match (&d.transport, placed.wiring) {
            (Transport::Mqtt, Wiring::Mqtt) => {}
            (Transport::ModbusTcp { host, port, unit }, Wiring::ModbusTcp { line, unit: u }) => {
                assert_eq!(
                    (host.as_str(), *port, *unit),
                    ("127.0.0.1", addrs[line].port(), u)
                );
                modbus.push(d.clone());
            }
            other => panic!("{}: {other:?}", d.id),
        }
    }
    let lamps = city.count(DeviceKind::Streetlight);
    assert_eq!(modbus.len(), lamps + city.count(DeviceKind::Toilet));

    // A closed port for the MQTT devices (covers, bins): they retry in the background.
    let fleet = start_fleet(&city, converters);

    // The gateway's own Modbus poller, following an inventory of just these devices.
    let (supervisor, task, mut rx, cancel) = start_poller(&modbus);
    let latest = poll_every_device(&mut rx, modbus.len()).await;
    for (id, (transport, _)) in &latest {
        assert_eq!(transport, "modbus-tcp", "{id}");
    }
    for (id, (_, data)) in &latest {
        match data {
            TelemetryData::Streetlight(t) => {
                assert!(t.lamp_on && (t.power_w - 100.0).abs() < 5.0, "{id}: {t:?}");
            }
            TelemetryData::Toilet(t) => assert!(t.nh3_mg_m3 < 1.0, "{id}: {t:?}"),
            other => panic!("{id}: {other:?}"),
        }
    }

    // A lamp command through the gateway's Modbus command path: written to the unit's command
    // block, applied by the firmware at its next tick, acknowledged in registers 90–92.
    let lamp = modbus
        .iter()
        .rev()
        .find(|d| d.kind == DeviceKind::Streetlight)
        .unwrap();
    switch_off(&supervisor, &mut rx, lamp, 900).await;

    cancel.cancel();
    drop(rx);
    task.await.unwrap();
    fleet.stop();
}

/// The latest telemetry of each device, with the transport it came over, once `n` devices
/// have reported (30 s at most).
async fn poll_every_device(
    rx: &mut mpsc::Receiver<Reading>,
    n: usize,
) -> HashMap<String, (String, TelemetryData)> {
    let mut latest = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while latest.len() < n && tokio::time::Instant::now() < deadline {
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            if let ReadingBody::Telemetry(data) = r.body {
                latest.insert(r.device_id.to_string(), (r.transport.to_string(), data));
            }
        }
    }
    assert_eq!(latest.len(), n, "every Modbus device polled");
    latest
}

/// Switch `lamp` off through the gateway's Modbus command path and wait for its telemetry to
/// show the relay open.
async fn switch_off(
    supervisor: &Arc<Supervisor>,
    rx: &mut mpsc::Receiver<Reading>,
    lamp: &Device,
    cmd_id: u32,
) {
    let result = supervisor
        .command(
            lamp,
            Command {
                cmd_id,
                action: Action::LampOff { expires_s: None },
            },
            tokio::time::Instant::now() + Duration::from_secs(5),
        )
        .await;
    assert_eq!(result, Ok(AckResult::Applied(cmd_id)), "{}", lamp.id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut dark = false;
    while !dark && tokio::time::Instant::now() < deadline {
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            if let (true, ReadingBody::Telemetry(TelemetryData::Streetlight(t))) =
                (r.device_id == lamp.id, &r.body)
            {
                dark = !t.lamp_on;
            }
        }
    }
    assert!(
        dark,
        "{}: the commanded lamp reports its relay open",
        lamp.id
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_city_on_tcp_and_rtu_lines_is_polled_over_both_and_commanded_over_rtu() {
    // Every lamp and toilet on a Modbus line: a third on RTU lines (pseudo-terminal pairs,
    // no socat needed), the rest behind TCP converters.
    let city = City::generate(&CityConfig {
        devices: 150,
        modbus_tcp_fraction: 0.66,
        modbus_rtu_fraction: 0.34,
        ..CityConfig::default()
    });
    assert!(city.rtu_lines() >= 1 && city.modbus_lines() >= 1);
    let converters = Converters::bind(&city, ConverterConfig::default())
        .await
        .unwrap();
    let serial = converters.serial_paths();
    assert_eq!(serial.len(), city.rtu_lines());
    assert!(
        serial.iter().all(|p| std::path::Path::new(p).exists()),
        "{serial:?}"
    );
    let devices = inventory::parse_csv(
        city.to_csv_with(&converters.addrs(), &serial)
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    let mut modbus = Vec::new();
    for (d, placed) in devices.iter().zip(&city.devices) {
        match (&d.transport, placed.wiring) {
            (Transport::Mqtt, Wiring::Mqtt) => {}
            (Transport::ModbusTcp { .. }, Wiring::ModbusTcp { .. }) => modbus.push(d.clone()),
            (Transport::ModbusRtu { path, baud, unit }, Wiring::ModbusRtu { line, unit: u }) => {
                assert_eq!((path, *baud, *unit), (&serial[line], RTU_BAUD, u));
                modbus.push(d.clone());
            }
            other => panic!("{}: {other:?}", d.id),
        }
    }
    let fleet = start_fleet(&city, converters);
    let (supervisor, task, mut rx, cancel) = start_poller(&modbus);
    let latest = poll_every_device(&mut rx, modbus.len()).await;
    let over = |t: &str| latest.values().filter(|(tr, _)| tr == t).count();
    let on_rtu = city
        .devices
        .iter()
        .filter(|d| matches!(d.wiring, Wiring::ModbusRtu { .. }))
        .count();
    assert_eq!(over("modbus-rtu"), on_rtu);
    assert_eq!(over("modbus-tcp"), modbus.len() - on_rtu);
    // A lamp on an RTU line, switched off over the serial line.
    let lamp = devices
        .iter()
        .zip(&city.devices)
        .find(|(d, p)| {
            d.kind == DeviceKind::Streetlight && matches!(p.wiring, Wiring::ModbusRtu { .. })
        })
        .map(|(d, _)| d)
        .unwrap();
    switch_off(&supervisor, &mut rx, lamp, 901).await;
    cancel.cancel();
    drop(rx);
    task.await.unwrap();
    fleet.stop();
}

/// The fleet of `city` on 100x time, its MQTT devices pointed at a closed port (they retry in
/// the background), its Modbus devices served by `converters`.
fn start_fleet(city: &City, converters: Converters) -> Fleet {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let broker_port = closed.local_addr().unwrap().port();
    drop(closed);
    Fleet::start_wired(
        city,
        FleetConfig {
            broker_port,
            speed: 100.0,
            tick_s: 10,
            ..FleetConfig::default()
        },
        tokio::runtime::Handle::current(),
        Box::new(|_, _| {}),
        converters,
    )
}

/// The gateway's own Modbus poller, following an inventory of just `devices`.
fn start_poller(
    devices: &[Device],
) -> (
    Arc<Supervisor>,
    tokio::task::JoinHandle<()>,
    mpsc::Receiver<Reading>,
    CancellationToken,
) {
    let inv = Arc::new(Inventory::new(devices.iter().cloned()));
    let (tx, rx) = mpsc::channel::<Reading>(4096);
    let cancel = CancellationToken::new();
    let settings = ModbusSettings {
        poll_interval: Duration::from_millis(300),
        request_timeout: Duration::from_millis(500),
        offline_after: 3,
        max_backoff: Duration::from_secs(2),
        // The simulators are on loopback or a temporary path, which the defaults refuse.
        access: Arc::new(ModbusAccess::allow_all()),
        ..ModbusSettings::default()
    };
    let (supervisor, task) = Supervisor::start(
        inv,
        tx,
        Arc::new(Metrics::default()),
        settings,
        cancel.clone(),
    );
    (supervisor, task, rx, cancel)
}
