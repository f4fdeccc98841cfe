use proptest::prelude::*;
use streetgate_protocols::{BinTelemetry, ManholeTelemetry, StreetlightTelemetry, ToiletTelemetry};

use super::*;
use crate::lighting::LightingConfig;
use crate::model::{RoadClass, ThresholdOverrides, Transport};

fn device(id: &str, kind: DeviceKind) -> Device {
    Device {
        id: DeviceId::new(id).unwrap(),
        kind,
        component_code: None,
        lat: 39.9042,
        lon: 116.4074,
        grid: "110101001001001".into(),
        road_segment: None,
        road_class: None,
        toilet_class: None,
        bin_depth_mm: None,
        overrides: ThresholdOverrides::default(),
        transport: Transport::Mqtt,
    }
}

fn reading(d: &Device, at_s: i64, body: ReadingBody) -> Reading {
    Reading {
        device_id: d.id.clone(),
        kind: d.kind,
        received_ms: at_s * 1000,
        device_ts_ms: None,
        seq: 0,
        transport: "mqtt",
        body,
        seq_state: None,
    }
}

fn tilt(d: &Device, at_s: i64, deg: f32) -> Reading {
    reading(
        d,
        at_s,
        ReadingBody::Telemetry(TelemetryData::Manhole(ManholeTelemetry {
            tilt_deg: deg,
            battery_pct: 90,
            ..Default::default()
        })),
    )
}

fn edges(evs: &[ConditionEvent]) -> Vec<(Condition, bool)> {
    evs.iter().map(|e| (e.condition, e.raised)).collect()
}

const TILTED: Condition = Condition::Alarm(AlarmKind::CoverTilted);

#[test]
fn tilt_needs_its_hold_and_clears_past_hysteresis() {
    let mh = device("MH-1", DeviceKind::Manhole);
    let mut e = RulesEngine::new(RulesConfig::default());
    assert!(e.on_reading(&mh, &tilt(&mh, 0, 20.0)).is_empty());
    assert!(e.on_reading(&mh, &tilt(&mh, 3, 20.0)).is_empty());
    assert_eq!(
        edges(&e.on_reading(&mh, &tilt(&mh, 5, 20.0))),
        [(TILTED, true)]
    );
    assert!(
        e.on_reading(&mh, &tilt(&mh, 10, 9.0)).is_empty(),
        "inside the 8–10° band"
    );
    assert_eq!(
        edges(&e.on_reading(&mh, &tilt(&mh, 11, 7.0))),
        [(TILTED, false)]
    );
    // A bump shorter than the hold never raises.
    assert!(e.on_reading(&mh, &tilt(&mh, 20, 30.0)).is_empty());
    assert!(e.on_reading(&mh, &tilt(&mh, 22, 1.0)).is_empty());
    assert!(e.on_tick(40_000, [&mh]).is_empty());
}

#[test]
fn a_hold_completes_on_tick_without_a_new_reading() {
    let mh = device("MH-1", DeviceKind::Manhole);
    let mut e = RulesEngine::new(RulesConfig::default());
    assert!(e.on_reading(&mh, &tilt(&mh, 0, 70.0)).is_empty());
    let evs = e.on_tick(6_000, [&mh]);
    let mut got = edges(&evs);
    got.sort();
    assert_eq!(
        got,
        [
            (TILTED, true),
            (Condition::Alarm(AlarmKind::CoverOpen), true)
        ]
    );
    assert!(evs.iter().any(|ev| ev.urgent), "an open cover is urgent");
}

#[test]
fn per_device_overrides() {
    let mut mh = device("MH-2", DeviceKind::Manhole);
    mh.overrides.tilt_alarm_deg = Some(25.0);
    let mut e = RulesEngine::new(RulesConfig::default());
    e.on_reading(&mh, &tilt(&mh, 0, 20.0));
    assert!(e.on_reading(&mh, &tilt(&mh, 10, 20.0)).is_empty());
}

#[test]
fn device_alarms_and_inference_share_one_condition() {
    let mh = device("MH-1", DeviceKind::Manhole);
    let mut e = RulesEngine::new(RulesConfig::default());
    let alarm = |at, raised| {
        reading(
            &mh,
            at,
            ReadingBody::Alarm {
                alarm: AlarmKind::CoverTilted,
                raised,
                value: Some(20.0),
            },
        )
    };
    assert_eq!(edges(&e.on_reading(&mh, &alarm(0, true))), [(TILTED, true)]);
    assert!(e.on_reading(&mh, &tilt(&mh, 1, 20.0)).is_empty());
    assert!(e.on_reading(&mh, &tilt(&mh, 8, 20.0)).is_empty());
    assert!(
        e.on_reading(&mh, &alarm(9, true)).is_empty(),
        "duplicate alarm"
    );
    assert_eq!(
        edges(&e.on_reading(&mh, &alarm(10, false))),
        [(TILTED, false)]
    );
}

#[test]
fn offline_after_three_missed_intervals_and_on_last_will() {
    let mut mh = device("MH-1", DeviceKind::Manhole);
    mh.overrides.report_interval_s = Some(60);
    let mut e = RulesEngine::new(RulesConfig::default());
    e.on_reading(&mh, &tilt(&mh, 0, 1.0));
    assert!(e.on_tick(180_000, [&mh]).is_empty());
    assert_eq!(
        edges(&e.on_tick(181_000, [&mh])),
        [(Condition::Offline, true)]
    );
    assert!(e.on_tick(500_000, [&mh]).is_empty(), "raised once");
    assert_eq!(
        edges(&e.on_reading(&mh, &tilt(&mh, 600, 1.0))),
        [(Condition::Offline, false)]
    );
    let will = reading(
        &mh,
        601,
        ReadingBody::Status {
            online: false,
            battery_pct: None,
            fw_version: None,
        },
    );
    // The last will starts a hold: back within it, nothing happens.
    assert!(e.on_reading(&mh, &will).is_empty());
    assert!(e.on_tick(601_000 + 60_000, [&mh]).is_empty());
    assert!(
        e.on_reading(&mh, &tilt(&mh, 700, 1.0)).is_empty(),
        "never raised"
    );
    assert!(
        e.on_tick(601_000 + 200_000, [&mh]).is_empty(),
        "hold cancelled"
    );
    // Not back within the hold: offline.
    let will = reading(
        &mh,
        1000,
        ReadingBody::Status {
            online: false,
            battery_pct: None,
            fw_version: None,
        },
    );
    assert!(e.on_reading(&mh, &will).is_empty());
    assert!(e.on_tick(1_000_000 + 119_000, [&mh]).is_empty());
    assert_eq!(
        edges(&e.on_tick(1_000_000 + 120_000, [&mh])),
        [(Condition::Offline, true)]
    );
    // With no hold, at once.
    let mut e = RulesEngine::new(RulesConfig {
        offline_will_hold_s: 0,
        ..RulesConfig::default()
    });
    e.on_reading(&mh, &tilt(&mh, 900, 1.0));
    assert_eq!(
        edges(&e.on_reading(&mh, &will)),
        [(Condition::Offline, true)]
    );
    // Never heard from: not offline.
    let other = device("MH-9", DeviceKind::Manhole);
    assert!(
        e.on_tick(10_000_000, [&other])
            .iter()
            .all(|ev| ev.subject != Subject::Device(other.id.clone()))
    );
}

#[test]
fn odour_is_judged_on_the_moving_average_against_the_class_limit() {
    let mut wc = device("WC-1", DeviceKind::Toilet);
    wc.toilet_class = Some(ToiletClass::Class1);
    let mut e = RulesEngine::new(RulesConfig::default());
    let gas = |at, nh3: f32| {
        reading(
            &wc,
            at,
            ReadingBody::Telemetry(TelemetryData::Toilet(ToiletTelemetry {
                nh3_mg_m3: nh3,
                h2s_mg_m3: 0.001,
                ..Default::default()
            })),
        )
    };
    let nh3 = Condition::Alarm(AlarmKind::OdourNh3);
    let mut run = |from: i64, to: i64, v: f32| -> Vec<(Condition, bool)> {
        let mut out = Vec::new();
        for t in (from..to).step_by(60) {
            out.extend(e.on_reading(&wc, &gas(t, v)));
        }
        edges(&out)
    };
    assert!(run(0, 600, 0.2).is_empty());
    // A single spike is averaged away: (9 × 0.2 + 0.5) / 10 = 0.23 < 0.3.
    assert!(run(600, 660, 0.5).is_empty());
    assert!(run(660, 1200, 0.2).is_empty());
    // Sustained odour raises once the 10-minute average passes 0.3 (and holds).
    assert_eq!(run(1200, 1800, 0.6), [(nh3, true)]);
    // Cleared once the average falls below 0.3 − 20 % = 0.24.
    assert_eq!(run(1800, 2400, 0.1), [(nh3, false)]);
    // Sustained odour in a class-3 toilet stays below its 3 mg/m³ limit.
    let mut wc3 = device("WC-3", DeviceKind::Toilet);
    wc3.toilet_class = Some(ToiletClass::Class3);
    let gas3 = |at, nh3: f32| {
        reading(
            &wc3,
            at,
            ReadingBody::Telemetry(TelemetryData::Toilet(ToiletTelemetry {
                nh3_mg_m3: nh3,
                h2s_mg_m3: 0.0,
                ..Default::default()
            })),
        )
    };
    for t in (0..1200).step_by(60) {
        assert!(e.on_reading(&wc3, &gas3(t, 2.0)).is_empty());
    }
    let mut raised = Vec::new();
    for t in (1200..2400).step_by(60) {
        raised.extend(e.on_reading(&wc3, &gas3(t, 4.0)));
    }
    assert_eq!(
        edges(&raised),
        [(Condition::Alarm(AlarmKind::OdourNh3), true)]
    );
}

/// The integrators' finding: a toilet's own `odour_nh3` alarm was cleared within a second by the
/// gateway's moving average of the raw samples, still low from before the odour built up, while
/// every reading was 1.8 mg/m³ against the class-2 limit of 1.0.
#[test]
fn a_device_asserted_odour_alarm_is_not_cleared_by_the_gateways_own_average() {
    let mut wc = device("WC-2", DeviceKind::Toilet);
    wc.toilet_class = Some(ToiletClass::Class2);
    let mut e = RulesEngine::new(RulesConfig::default());
    let nh3 = Condition::Alarm(AlarmKind::OdourNh3);
    let gas = |at, sample: f32, avg: Option<f32>| {
        reading(
            &wc,
            at,
            ReadingBody::Telemetry(TelemetryData::Toilet(ToiletTelemetry {
                nh3_mg_m3: sample,
                h2s_mg_m3: 0.0,
                nh3_avg_mg_m3: avg,
                ..Default::default()
            })),
        )
    };
    let alarm = |at, raised| {
        reading(
            &wc,
            at,
            ReadingBody::Alarm {
                alarm: AlarmKind::OdourNh3,
                raised,
                value: Some(1.8),
            },
        )
    };
    // A clean toilet for ten minutes: the gateway's window fills with 0.2.
    for t in (0..600).step_by(60) {
        assert!(e.on_reading(&wc, &gas(t, 0.2, None)).is_empty());
    }
    assert_eq!(edges(&e.on_reading(&wc, &alarm(600, true))), [(nh3, true)]);
    // Samples of 1.8 without an average: the gateway's own average (≈ 0.3 at first) must not
    // clear what the device asserts.
    for t in 601..700 {
        let evs = e.on_reading(&wc, &gas(t, 1.8, None));
        assert!(evs.is_empty(), "at {t} s: {:?}", edges(&evs));
    }
    // Only the device clears it: its own clear event ...
    assert_eq!(
        edges(&e.on_reading(&wc, &alarm(700, false))),
        [(nh3, false)]
    );

    // ... or its own reported average going below limit − hysteresis (1.0 − 20 % = 0.8).
    let mut e = RulesEngine::new(RulesConfig::default());
    for t in (0..600).step_by(60) {
        e.on_reading(&wc, &gas(t, 0.2, Some(0.2)));
    }
    assert_eq!(edges(&e.on_reading(&wc, &alarm(600, true))), [(nh3, true)]);
    for t in 601..700 {
        assert!(e.on_reading(&wc, &gas(t, 1.8, Some(1.2))).is_empty());
    }
    assert!(
        e.on_reading(&wc, &gas(700, 0.5, Some(0.9))).is_empty(),
        "0.9 is inside the hysteresis band"
    );
    assert_eq!(
        edges(&e.on_reading(&wc, &gas(701, 0.5, Some(0.7)))),
        [(nh3, false)]
    );

    // Without a device alarm, the device's reported average is what is judged, not the samples.
    let mut e = RulesEngine::new(RulesConfig::default());
    let mut got = Vec::new();
    for t in 0..20 {
        got.extend(e.on_reading(&wc, &gas(t, 5.0, Some(0.4))));
    }
    assert!(got.is_empty(), "a spike the device averages away: {got:?}");
}

/// The documents say "≥ 100 % = overflowing" (docs/domain.md, protocols/README.md): a fill of
/// exactly `overflow_pct` overflows, just below does not.
#[test]
fn a_bin_overflows_at_exactly_its_threshold() {
    let bn = device("BN-9", DeviceKind::Bin);
    let mut e = RulesEngine::new(RulesConfig {
        hold_s: 0,
        ..RulesConfig::default()
    });
    let fill = |at, pct: f32| {
        reading(
            &bn,
            at,
            ReadingBody::Telemetry(TelemetryData::Bin(BinTelemetry {
                fill_pct: pct,
                temperature_c: 20.0,
                battery_pct: 90,
                ..Default::default()
            })),
        )
    };
    let overflow = (Condition::Alarm(AlarmKind::BinOverflow), true);
    assert!(!edges(&e.on_reading(&bn, &fill(0, 99.9))).contains(&overflow));
    assert_eq!(edges(&e.on_reading(&bn, &fill(1, 100.0))), [overflow]);
}

#[test]
fn bins_and_battery() {
    let bn = device("BN-1", DeviceKind::Bin);
    let mut e = RulesEngine::new(RulesConfig::default());
    let fill = |at, pct: f32, temp: f32, batt: u8| {
        reading(
            &bn,
            at,
            ReadingBody::Telemetry(TelemetryData::Bin(BinTelemetry {
                fill_pct: pct,
                temperature_c: temp,
                battery_pct: batt,
                ..Default::default()
            })),
        )
    };
    e.on_reading(&bn, &fill(0, 85.0, 20.0, 50));
    assert_eq!(
        edges(&e.on_reading(&bn, &fill(10, 85.0, 20.0, 50))),
        [(Condition::Alarm(AlarmKind::BinFull), true)]
    );
    e.on_reading(&bn, &fill(20, 105.0, 70.0, 15));
    let mut got = edges(&e.on_reading(&bn, &fill(30, 105.0, 70.0, 15)));
    got.sort();
    let mut want = [
        (Condition::Alarm(AlarmKind::BinOverflow), true),
        (Condition::Alarm(AlarmKind::FireRisk), true),
        (Condition::Alarm(AlarmKind::LowBattery), true),
    ];
    want.sort();
    // Low battery has no hold: it raised at 20 s already.
    assert!(got.iter().all(|g| want.contains(g)), "{got:?}");
    let mut cleared = edges(&e.on_reading(&bn, &fill(40, 5.0, 20.0, 100)));
    cleared.sort();
    assert_eq!(cleared.len(), 4, "{cleared:?}");
}

fn no_grace() -> RulesConfig {
    RulesConfig {
        lighting: LightingConfig {
            startup_grace_s: 0,
            ..LightingConfig::default()
        },
        ..RulesConfig::default()
    }
}

fn lamp(id: &str, seg: &str) -> Device {
    let mut d = device(id, DeviceKind::Streetlight);
    d.road_segment = Some(seg.into());
    d.road_class = Some(RoadClass::Main);
    d
}

fn metering(d: &Device, at_ms: i64, on: bool, current: f32) -> Reading {
    Reading {
        device_id: d.id.clone(),
        kind: d.kind,
        received_ms: at_ms,
        device_ts_ms: None,
        seq: 0,
        transport: "mqtt",
        body: ReadingBody::Telemetry(TelemetryData::Streetlight(StreetlightTelemetry {
            lamp_on: on,
            dim_pct: 100,
            voltage_v: 228.0,
            current_a: current,
            power_w: current * 220.0,
            ..Default::default()
        })),
        seq_state: None,
    }
}

// 2024-12-21 12:00 UTC = 20:00 in Beijing (night); 04:00 UTC = noon.
const NIGHT_MS: i64 = 1_734_782_400_000;
const NOON_MS: i64 = 1_734_753_600_000;

#[test]
fn lamp_failure_day_burner_and_segment_lighting() {
    let lamps: Vec<Device> = (0..10).map(|i| lamp(&format!("SL-{i}"), "S-1")).collect();
    let mut e = RulesEngine::new(no_grace());
    for l in &lamps {
        e.on_reading(l, &metering(l, NIGHT_MS, true, 0.4));
    }
    assert!(e.on_tick(NIGHT_MS + 1000, &lamps).is_empty());
    let report = e.lighting_now(NIGHT_MS + 1000, &lamps);
    assert_eq!(report.segments[0].rate, 1.0);
    // One lamp burns out: lamp failure after the hold, and the segment (1 of 10 dark) falls
    // below 99 %.
    e.on_reading(&lamps[3], &metering(&lamps[3], NIGHT_MS + 2000, true, 0.0));
    let evs = e.on_tick(NIGHT_MS + 8000, &lamps);
    let got = edges(&evs);
    assert!(
        got.contains(&(Condition::Alarm(AlarmKind::LampFailure), true)),
        "{got:?}"
    );
    let dark = evs
        .iter()
        .find(|ev| ev.condition == Condition::SegmentDark)
        .expect("segment dark");
    assert!(dark.raised && dark.urgent);
    assert_eq!(dark.devices, [lamps[3].id.clone()]);
    assert_eq!(dark.subject, Subject::Segment("S-1".into()));
    // Repaired.
    let evs = e.on_reading(&lamps[3], &metering(&lamps[3], NIGHT_MS + 9000, true, 0.4));
    assert_eq!(
        edges(&evs),
        [(Condition::Alarm(AlarmKind::LampFailure), false)]
    );
    assert_eq!(
        edges(&e.on_tick(NIGHT_MS + 10_000, &lamps)),
        [(Condition::SegmentDark, false)]
    );
    // By day a lit lamp is a day burner; the segment is not evaluated.
    let mut e = RulesEngine::new(RulesConfig::default());
    e.on_reading(&lamps[0], &metering(&lamps[0], NOON_MS, true, 0.4));
    let evs = e.on_reading(&lamps[0], &metering(&lamps[0], NOON_MS + 6000, true, 0.4));
    assert_eq!(
        edges(&evs),
        [(Condition::Alarm(AlarmKind::DayBurner), true)]
    );
    assert!(e.lighting_now(NOON_MS, &lamps).segments.is_empty());
}

#[test]
fn offline_lamps_count_as_dark() {
    let lamps: Vec<Device> = (0..4).map(|i| lamp(&format!("SL-{i}"), "S-2")).collect();
    let mut e = RulesEngine::new(RulesConfig::default());
    for l in &lamps[..3] {
        e.on_reading(l, &metering(l, NIGHT_MS, true, 0.4));
    }
    // Just started: lamps get one report interval before segments are judged.
    assert!(e.on_tick(NIGHT_MS + 1000, &lamps).is_empty());
    assert!(e.on_tick(NIGHT_MS + 800_000, &lamps).is_empty());
    // SL-3 never reported: unknown counts as dark.
    let evs = e.on_tick(NIGHT_MS + 901_000, &lamps);
    let dark = evs
        .iter()
        .find(|ev| ev.condition == Condition::SegmentDark)
        .expect("dark");
    assert_eq!(dark.devices, [lamps[3].id.clone()]);
    assert_eq!(dark.value, Some(0.75));
}

/// One cause, one case: a lamp whose controller is offline has its device_offline case; it
/// counts as dark in the rate, but raises no segment lamp_fault case of its own and is not
/// listed in one.
#[test]
fn an_offline_lamp_gets_no_lamp_fault_case_besides_its_offline_case() {
    let lamps: Vec<Device> = (0..4).map(|i| lamp(&format!("SL-{i}"), "S-3")).collect();
    let mut e = RulesEngine::new(no_grace());
    for l in &lamps {
        e.on_reading(l, &metering(l, NIGHT_MS, true, 0.4));
    }
    assert!(e.on_tick(NIGHT_MS + 1000, &lamps).is_empty());
    // SL-0's controller dies: its last will, then offline after the hold.
    e.on_reading(&lamps[0], &will(&lamps[0], NIGHT_MS / 1000 + 2));
    let mut got = edges(&e.on_tick(NIGHT_MS + 3000, &lamps));
    got.extend(edges(&e.on_tick(NIGHT_MS + 200_000, &lamps)));
    assert_eq!(got, [(Condition::Offline, true)]);
    let report = e.lighting_now(NIGHT_MS + 200_000, &lamps);
    assert_eq!(report.segments[0].rate, 0.75, "still dark in the rate");
    // A real lamp failure on the same segment raises the segment case, listing only it.
    e.on_reading(
        &lamps[1],
        &metering(&lamps[1], NIGHT_MS + 201_000, true, 0.0),
    );
    let evs = e.on_tick(NIGHT_MS + 210_000, &lamps);
    let dark = evs
        .iter()
        .find(|ev| ev.condition == Condition::SegmentDark)
        .expect("segment dark");
    assert_eq!(dark.devices, [lamps[1].id.clone()]);
    // Repaired: the segment case clears although the offline lamp still darkens the rate.
    e.on_reading(
        &lamps[1],
        &metering(&lamps[1], NIGHT_MS + 211_000, true, 0.4),
    );
    assert!(
        edges(&e.on_tick(NIGHT_MS + 212_000, &lamps)).contains(&(Condition::SegmentDark, false))
    );
}

#[test]
fn snapshot_restores_pending_holds() {
    let mh = device("MH-1", DeviceKind::Manhole);
    let mut e = RulesEngine::new(RulesConfig::default());
    e.on_reading(&mh, &tilt(&mh, 0, 20.0));
    let json = serde_json::to_string(&e.snapshot()).unwrap();
    let mut restored = RulesEngine::new(RulesConfig::default());
    restored.restore(serde_json::from_str(&json).unwrap());
    assert_eq!(edges(&restored.on_tick(5_000, [&mh])), [(TILTED, true)]);
    assert_eq!(restored.active_conditions(&mh.id), [TILTED]);
}

proptest! {
    #[test]
    fn edges_alternate_and_everything_clears(
        steps in proptest::collection::vec((0usize..3, 0.0f32..90.0, 0u8..100, any::<bool>(), 1i64..20), 1..120)
    ) {
        let devices = [device("MH-1", DeviceKind::Manhole), device("MH-2", DeviceKind::Manhole), device("BN-1", DeviceKind::Bin)];
        let mut e = RulesEngine::new(RulesConfig::default());
        let mut active: BTreeMap<(String, String), bool> = BTreeMap::new();
        let mut t = 0i64;
        let check = |evs: Vec<ConditionEvent>, active: &mut BTreeMap<(String, String), bool>| -> Result<(), TestCaseError> {
            for ev in evs {
                let key = (ev.subject.key(), ev.condition.key());
                let was = active.insert(key.clone(), ev.raised).unwrap_or(false);
                prop_assert_ne!(was, ev.raised, "{:?} repeated", key);
            }
            Ok(())
        };
        for (which, value, battery, tick, dt) in steps {
            t += dt;
            let d = &devices[which];
            let body = match d.kind {
                DeviceKind::Bin => TelemetryData::Bin(BinTelemetry { fill_pct: value, temperature_c: value, battery_pct: battery, ..Default::default() }),
                _ => TelemetryData::Manhole(ManholeTelemetry { tilt_deg: value, battery_pct: battery, ..Default::default() }),
            };
            let evs = if tick { e.on_tick(t * 1000, &devices) } else { e.on_reading(d, &reading(d, t, ReadingBody::Telemetry(body))) };
            check(evs, &mut active)?;
        }
        // Back to normal for long enough: everything clears.
        for step in 0..3 {
            t += 10;
            for d in &devices {
                let body = match d.kind {
                    DeviceKind::Bin => TelemetryData::Bin(BinTelemetry { fill_pct: 0.0, temperature_c: 20.0, battery_pct: 100, ..Default::default() }),
                    _ => TelemetryData::Manhole(ManholeTelemetry { tilt_deg: 0.0, battery_pct: 100, ..Default::default() }),
                };
                check(e.on_reading(d, &reading(d, t + step, ReadingBody::Telemetry(body))), &mut active)?;
            }
        }
        prop_assert!(active.values().all(|a| !a), "{:?}", active);
    }
}

fn will(d: &Device, at_s: i64) -> Reading {
    reading(
        d,
        at_s,
        ReadingBody::Status {
            online: false,
            battery_pct: None,
            fw_version: None,
        },
    )
}

#[test]
fn a_fleet_wide_outage_suspends_offline_judgement_until_the_fleet_is_back() {
    let covers: Vec<Device> = (0..30)
        .map(|i| device(&format!("MH-{i}"), DeviceKind::Manhole))
        .collect();
    let mut e = RulesEngine::new(RulesConfig::default());
    for d in &covers {
        e.on_reading(d, &tilt(d, 0, 1.0));
    }
    // Every cover's last will at t = 100 s: the network, not 30 broken covers.
    for d in &covers {
        assert!(e.on_reading(d, &will(d, 100)).is_empty());
    }
    // One event for the whole fleet, not thirty: one case, one notification.
    let began = e.on_tick(101_000, &covers);
    assert_eq!(began.len(), 1, "{began:?}");
    let fleet = &began[0];
    assert_eq!(
        (&fleet.subject, fleet.condition, fleet.raised, fleet.urgent),
        (&Subject::Fleet, Condition::Offline, true, true)
    );
    assert_eq!(fleet.grid, "city");
    assert_eq!(fleet.devices.len(), 30);
    assert!(
        fleet
            .detail
            .starts_with("fleet-wide outage: 30 of 30 devices lost their connection at once (grids: 110101001001001 30)"),
        "{}",
        fleet.detail
    );
    assert_eq!(e.outage().0.map(|o| o.devices), Some(30));
    // Long past the 120 s hold, nothing is raised while the outage lasts.
    assert!(e.on_tick(400_000, &covers).is_empty());
    // 27 come back; three never do (one of them really died during the outage).
    for d in &covers[3..] {
        e.on_reading(d, &tilt(d, 500, 1.0));
    }
    let over = e.on_tick(501_000, &covers);
    assert_eq!(over.len(), 1, "outage over: {over:?}");
    assert_eq!((&over[0].subject, over[0].raised), (&Subject::Fleet, false));
    assert!(
        over[0]
            .detail
            .contains("over after 400 s (at most 30 devices cut off); 3 still missing"),
        "{}",
        over[0].detail
    );
    let (outage, seen) = e.outage();
    assert_eq!((outage, seen), (None, 1));
    // The three missing get their whole hold from the end of the outage.
    assert!(e.on_tick(501_000 + 119_000, &covers).is_empty());
    let raised = e.on_tick(501_000 + 120_000, &covers);
    assert_eq!(
        raised
            .iter()
            .filter(|ev| ev.condition == Condition::Offline && ev.raised)
            .count(),
        3
    );
    assert!(raised.iter().all(|ev| {
        covers[..3]
            .iter()
            .any(|d| ev.subject == Subject::Device(d.id.clone()))
    }));
}

#[test]
fn a_few_last_wills_are_judged_one_by_one_and_an_endless_outage_expires() {
    let covers: Vec<Device> = (0..30)
        .map(|i| device(&format!("MH-{i}"), DeviceKind::Manhole))
        .collect();
    let mut e = RulesEngine::new(RulesConfig {
        outage_max_s: 600,
        ..RulesConfig::default()
    });
    for d in &covers {
        e.on_reading(d, &tilt(d, 0, 1.0));
    }
    // Five of thirty: below rules.outage_min_devices (10), each its own case.
    for d in &covers[..5] {
        e.on_reading(d, &will(d, 100));
    }
    assert_eq!(e.on_tick(220_000, &covers).len(), 5);
    assert_eq!(e.outage().0, None);
    // Then all the others at once, and they never come back: suspended for outage_max_s,
    // then judged one by one.
    for d in &covers[5..] {
        e.on_reading(d, &will(d, 300));
    }
    let began = e.on_tick(301_000, &covers);
    assert_eq!(
        began.iter().map(|ev| &ev.subject).collect::<Vec<_>>(),
        [&Subject::Fleet]
    );
    assert!(e.on_tick(900_000, &covers).is_empty());
    let judged = e.on_tick(902_000, &covers);
    assert_eq!(judged.len(), 25);
    assert!(judged.iter().all(|ev| ev.subject != Subject::Fleet));
    assert!(e.outage().0.is_some_and(|o| o.expired));
}

#[test]
fn a_message_sent_before_the_last_will_is_no_sign_of_life() {
    let mh = device("MH-1", DeviceKind::Manhole);
    let mut e = RulesEngine::new(RulesConfig::default());
    e.on_reading(&mh, &tilt(&mh, 0, 1.0));
    assert!(e.on_reading(&mh, &will(&mh, 1000)).is_empty());
    // Telemetry stamped at 900 s, delivered after the will: the link died after sending it.
    let late = Reading {
        device_ts_ms: Some(900_000),
        ..tilt(&mh, 1005, 1.0)
    };
    assert!(e.on_reading(&mh, &late).is_empty());
    assert_eq!(
        edges(&e.on_tick(1_000_000 + 120_000, [&mh])),
        [(Condition::Offline, true)],
        "the hold was not cancelled"
    );
    // Another old one does not clear it either; a fresh one does.
    assert!(e.on_reading(&mh, &late).is_empty());
    let fresh = Reading {
        device_ts_ms: Some(1_200_000),
        ..tilt(&mh, 1200, 1.0)
    };
    assert_eq!(
        edges(&e.on_reading(&mh, &fresh)),
        [(Condition::Offline, false)]
    );
    // Its store-and-forward backlog after a reconnection comes with the birth status, which
    // always counts: stamped times before the will are fine then.
    assert!(e.on_reading(&mh, &will(&mh, 2000)).is_empty());
    let birth = reading(
        &mh,
        2050,
        ReadingBody::Status {
            online: true,
            battery_pct: Some(90),
            fw_version: None,
        },
    );
    e.on_reading(&mh, &birth);
    let backlog = Reading {
        device_ts_ms: Some(1_990_000),
        ..tilt(&mh, 2051, 1.0)
    };
    e.on_reading(&mh, &backlog);
    assert!(e.on_tick(2_000_000 + 500_000, [&mh]).is_empty());
}

#[test]
fn no_device_is_judged_offline_before_its_start_up_grace() {
    // A lamp reports every 900 s: offline after three missed intervals (2,700 s).
    let lamp = device("SL-1", DeviceKind::Streetlight);
    let mut before = RulesEngine::new(RulesConfig::default());
    before.on_reading(&lamp, &reading(&lamp, 0, status(true)));
    // The gateway is down for a day; the restarted one resumes the persisted state, in which
    // the lamp was last heard from a day ago. It is not offline at once: it has 2,700 s from
    // the restart to speak.
    let mut e = RulesEngine::new(RulesConfig::default());
    e.restore(before.snapshot());
    let restart = 86_400_000;
    assert!(e.on_tick(restart, [&lamp]).is_empty());
    assert_eq!(e.started_ms(), Some(restart));
    assert!(e.on_tick(restart + 2_700_000, [&lamp]).is_empty());
    assert_eq!(
        edges(&e.on_tick(restart + 2_701_000, [&lamp])),
        [(Condition::Offline, true)],
        "silent for three intervals since the restart"
    );
    // Had it spoken within the grace, nothing.
    let mut e = RulesEngine::new(RulesConfig::default());
    e.restore(before.snapshot());
    assert!(e.on_tick(restart, [&lamp]).is_empty());
    e.on_reading(&lamp, &reading(&lamp, 86_400 + 1_000, status(true)));
    assert!(e.on_tick(restart + 2_701_000, [&lamp]).is_empty());
}

fn status(online: bool) -> ReadingBody {
    ReadingBody::Status {
        online,
        battery_pct: None,
        fw_version: None,
    }
}

#[test]
fn a_last_will_before_the_devices_birth_is_a_start_up_storm_not_an_offline_device() {
    let covers: Vec<Device> = (0..5)
        .map(|i| device(&format!("MH-{i}"), DeviceKind::Manhole))
        .collect();
    let mut e = RulesEngine::new(RulesConfig::default());
    assert!(e.on_tick(0, &covers).is_empty());
    // The fleet connects all at once; the broker gives up on some half-open first
    // connections and publishes their last wills before the devices' births arrive.
    for d in &covers {
        assert!(e.on_reading(d, &will(d, 10)).is_empty());
    }
    // The births (and the telemetry queued since) arrive long after the 120 s hold.
    assert!(e.on_tick(200_000, &covers).is_empty());
    for d in &covers[..4] {
        assert!(e.on_reading(d, &reading(d, 300, status(true))).is_empty());
        assert!(e.on_reading(d, &tilt(d, 301, 1.0)).is_empty());
    }
    assert!(e.on_tick(600_000, &covers).is_empty(), "no false alarm");
    // Born, a device's last will counts: not back within the hold, offline.
    assert!(
        e.on_reading(&covers[0], &will(&covers[0], 1_000))
            .is_empty()
    );
    assert_eq!(
        edges(&e.on_tick(1_120_000, &covers)),
        [(Condition::Offline, true)]
    );
    // The one never born is judged by its silence, once the start-up grace (three report
    // intervals of a cover: 36 h) has passed since it was last heard of (its will at 10 s).
    let grace = 10_000 + 3 * 43_200_000;
    assert!(e.on_tick(grace, &covers[4..]).is_empty());
    assert_eq!(
        edges(&e.on_tick(grace + 1_000, &covers[4..])),
        [(Condition::Offline, true)]
    );
}

#[test]
fn an_old_reading_delivered_late_does_not_undo_a_newer_one() {
    let lamp = device("SL-1", DeviceKind::Streetlight);
    let mut e = RulesEngine::new(RulesConfig::default());
    let lamp_reading = |seq: u32, ts_s: i64, at_s: i64, current_a: f32| Reading {
        seq,
        device_ts_ms: Some(ts_s * 1000),
        ..reading(
            &lamp,
            at_s,
            ReadingBody::Telemetry(TelemetryData::Streetlight(StreetlightTelemetry {
                lamp_on: true,
                current_a,
                voltage_v: 230.0,
                ..Default::default()
            })),
        )
    };
    // A backlog flushed after a reconnection, topic by topic: the alarm (seq 4, stamped 610 s)
    // overtakes the telemetry of the lamp still lit at dusk (seq 2, stamped 0 s).
    let alarm = Reading {
        seq: 4,
        device_ts_ms: Some(610_000),
        ..reading(
            &lamp,
            901,
            ReadingBody::Alarm {
                alarm: AlarmKind::LampFailure,
                raised: true,
                value: Some(0.0),
            },
        )
    };
    assert_eq!(
        edges(&e.on_reading(&lamp, &alarm)),
        [(Condition::Alarm(AlarmKind::LampFailure), true)]
    );
    assert!(
        e.on_reading(&lamp, &lamp_reading(2, 0, 916, 0.45))
            .is_empty(),
        "the old telemetry does not clear the newer alarm"
    );
    assert!(
        e.on_reading(&lamp, &lamp_reading(5, 610, 938, 0.0))
            .is_empty()
    );
    // The lamp repaired: a newer telemetry clears it.
    assert_eq!(
        edges(&e.on_reading(&lamp, &lamp_reading(9, 2_090, 2_091, 0.45))),
        [(Condition::Alarm(AlarmKind::LampFailure), false)]
    );
    // After a reboot the sequence starts again, with a later time: news again.
    assert_eq!(
        edges(&e.on_reading(&lamp, &lamp_reading(1, 3_000, 3_001, 0.0))),
        []
    );
    assert_eq!(
        edges(&e.on_reading(&lamp, &lamp_reading(2, 3_010, 3_011, 0.0))),
        [(Condition::Alarm(AlarmKind::LampFailure), true)]
    );
}
