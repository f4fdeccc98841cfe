//! Physical faults, seen through the real drivers and firmware, become the right alarm events.
#![allow(clippy::unwrap_used)]

use streetgate_firmware::platform::{LinkDown, Now, Transport};
use streetgate_protocols::codec::{self, Encoding, Limits};
use streetgate_protocols::{
    AlarmKind, AlarmState, Channel, Config, DeviceId, DeviceKind, LampSchedule, Topic, Uplink,
};
use streetgate_simulators::node::{SimNode, World};

#[derive(Default)]
struct Capture(Vec<(Channel, Vec<u8>)>);

impl Transport for Capture {
    fn send(&mut self, channel: Channel, payload: &[u8]) -> Result<(), LinkDown> {
        self.0.push((channel, payload.to_vec()));
        Ok(())
    }
    fn poll_downlink(&mut self, _buf: &mut [u8]) -> Option<(Channel, usize)> {
        None
    }
}

impl Capture {
    fn events(&mut self, id: &str) -> Vec<(AlarmKind, AlarmState)> {
        let id = DeviceId::new(id).unwrap();
        self.0
            .drain(..)
            .filter_map(|(c, p)| {
                match codec::decode_uplink(&Topic::new(id.clone(), c), &p, &Limits::default())
                    .unwrap()
                {
                    Uplink::Event(e) => Some((e.alarm, e.state)),
                    _ => None,
                }
            })
            .collect()
    }
}

// 2024-12-21 12:00 UTC: 20:00 in Beijing.
const NIGHT_UNIX_MS: u64 = 1_734_782_400_000;

fn run(node: &mut SimNode, link: &mut Capture, from_s: u64, to_s: u64, step_s: u64) {
    for s in (from_s..to_s).step_by(usize::try_from(step_s).unwrap()) {
        node.tick(
            Now {
                mono_ms: s * 1000,
                unix_ms: Some(NIGHT_UNIX_MS + s * 1000),
            },
            link,
        );
    }
}

#[test]
fn a_lifted_cover_raises_tilt_and_open() {
    let mut node = SimNode::new(
        DeviceId::new("MH-1").unwrap(),
        DeviceKind::Manhole,
        7,
        Encoding::Binary,
    );
    let World::Cover(cover) = node.world.clone() else {
        panic!()
    };
    cover.borrow_mut().vibration_mg = 150.0; // busy street
    let mut link = Capture::default();
    run(&mut node, &mut link, 0, 120, 1);
    assert!(
        link.events("MH-1").is_empty(),
        "traffic alone raises nothing"
    );
    cover.borrow_mut().lifted = true;
    run(&mut node, &mut link, 120, 140, 1);
    let e = link.events("MH-1");
    assert!(
        e.contains(&(AlarmKind::CoverTilted, AlarmState::Raised))
            && e.contains(&(AlarmKind::CoverOpen, AlarmState::Raised)),
        "{e:?}"
    );
    cover.borrow_mut().lifted = false;
    cover.borrow_mut().water_cm = 180.0; // flooding well
    run(&mut node, &mut link, 140, 170, 1);
    let e = link.events("MH-1");
    assert!(
        e.contains(&(AlarmKind::CoverOpen, AlarmState::Cleared)),
        "{e:?}"
    );
    assert!(
        e.contains(&(AlarmKind::WaterHigh, AlarmState::Raised)),
        "{e:?}"
    );
}

#[test]
fn lamp_faults_at_night() {
    let mut node = SimNode::new(
        DeviceId::new("SL-1").unwrap(),
        DeviceKind::Streetlight,
        3,
        Encoding::Json,
    );
    node.node_mut()
        .settings
        .apply(&Config {
            config_id: 1,
            schedule: Some(LampSchedule {
                lat_deg: 39.9,
                lon_deg: 116.4,
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
    let World::Lamp(lamp) = node.world.clone() else {
        panic!()
    };
    let mut link = Capture::default();
    run(&mut node, &mut link, 0, 60, 10);
    assert!(lamp.borrow().relay_cmd, "the schedule switched the lamp on");
    assert!(link.events("SL-1").is_empty());
    lamp.borrow_mut().burnt_out = true;
    run(&mut node, &mut link, 60, 120, 10);
    assert_eq!(
        link.events("SL-1"),
        [(AlarmKind::LampFailure, AlarmState::Raised)]
    );
    lamp.borrow_mut().burnt_out = false;
    lamp.borrow_mut().leakage_ma = 60.0;
    run(&mut node, &mut link, 120, 180, 10);
    let e = link.events("SL-1");
    assert!(
        e.contains(&(AlarmKind::LampFailure, AlarmState::Cleared))
            && e.contains(&(AlarmKind::Leakage, AlarmState::Raised)),
        "{e:?}"
    );
    lamp.borrow_mut().leakage_ma = 0.5;
    lamp.borrow_mut().supply_v = 0.0; // the feeder loses supply
    run(&mut node, &mut link, 180, 240, 10);
    let e = link.events("SL-1");
    assert!(
        e.contains(&(AlarmKind::SupplyLoss, AlarmState::Raised)),
        "{e:?}"
    );
    assert!(
        !e.contains(&(AlarmKind::LampFailure, AlarmState::Raised)),
        "no supply is not a lamp failure: {e:?}"
    );
}

#[test]
fn a_filling_bin_and_a_fire() {
    let mut node = SimNode::new(
        DeviceId::new("BN-1").unwrap(),
        DeviceKind::Bin,
        5,
        Encoding::Binary,
    );
    let World::Bin(bin) = node.world.clone() else {
        panic!()
    };
    bin.borrow_mut().rate_pct_h = 20.0;
    let mut link = Capture::default();
    run(&mut node, &mut link, 0, 3 * 3600, 60);
    assert!(link.events("BN-1").is_empty());
    run(&mut node, &mut link, 3 * 3600, 4 * 3600 + 1800, 60);
    assert_eq!(
        link.events("BN-1"),
        [(AlarmKind::BinFull, AlarmState::Raised)]
    );
    bin.borrow_mut().collect();
    bin.borrow_mut().on_fire = true;
    run(&mut node, &mut link, 4 * 3600 + 1800, 5 * 3600 + 1800, 60);
    let e = link.events("BN-1");
    assert!(
        e.contains(&(AlarmKind::BinFull, AlarmState::Cleared))
            && e.contains(&(AlarmKind::FireRisk, AlarmState::Raised)),
        "{e:?}"
    );
}

#[test]
fn a_failed_fan_raises_odour() {
    let mut node = SimNode::new(
        DeviceId::new("WC-1").unwrap(),
        DeviceKind::Toilet,
        9,
        Encoding::Json,
    );
    let World::Toilet(air) = node.world.clone() else {
        panic!()
    };
    let mut link = Capture::default();
    run(&mut node, &mut link, 0, 3600, 30);
    assert!(
        link.events("WC-1").is_empty(),
        "ventilated toilet: NH3 {}",
        air.borrow().nh3_mg_m3
    );
    air.borrow_mut().fan_ok = false;
    air.borrow_mut().usage_per_h = 40.0;
    run(&mut node, &mut link, 3600, 4 * 3600, 30);
    assert!(
        link.events("WC-1")
            .contains(&(AlarmKind::OdourNh3, AlarmState::Raised)),
        "NH3 {}",
        air.borrow().nh3_mg_m3
    );
}

#[test]
fn batteries_drain_with_messages() {
    let mut node = SimNode::new(
        DeviceId::new("MH-2").unwrap(),
        DeviceKind::Manhole,
        1,
        Encoding::Binary,
    );
    let mut link = Capture::default();
    run(&mut node, &mut link, 0, 3600, 1);
    let used = node.battery.borrow().used_mah;
    assert!(used > 0.0);
    let days = node.battery.borrow().projected_days(used * 24.0);
    // Sampling every second drains a D cell within years, not decades.
    assert!(days > 100.0 && days < 20_000.0, "{days}");
}

#[test]
fn a_lifted_cover_with_coarse_ticks() {
    let mut node = SimNode::new(
        DeviceId::new("MH-5").unwrap(),
        DeviceKind::Manhole,
        5,
        Encoding::Binary,
    );
    let World::Cover(cover) = node.world.clone() else {
        panic!()
    };
    let mut link = Capture::default();
    run(&mut node, &mut link, 0, 600, 10);
    cover.borrow_mut().lifted = true;
    run(&mut node, &mut link, 600, 700, 10);
    let e = link.events("MH-5");
    assert!(
        e.contains(&(AlarmKind::CoverOpen, AlarmState::Raised)),
        "{e:?}"
    );
}
