//! The battery report runs the real firmware and counts what it does: a shorter heartbeat
//! sends more messages and shortens the projected life, a longer sampling period takes fewer
//! samples and lengthens it; the figures are finite and positive.

use streetgate_protocols::DeviceKind;
use streetgate_simulators::battery::{self, BATTERY_KINDS, BatteryConfig, BatteryReport};

fn sane(r: &BatteryReport) {
    for v in [
        r.samples_per_day,
        r.messages_per_day,
        r.mah_per_day,
        r.life_days,
    ] {
        assert!(v.is_finite() && v > 0.0, "{}", r.render());
    }
}

#[test]
fn heartbeat_drives_messages_and_life() {
    for kind in BATTERY_KINDS {
        let default = battery::run(kind, &BatteryConfig::default(), 2).unwrap();
        let chatty = battery::run(
            kind,
            &BatteryConfig {
                heartbeat_s: Some(600),
                ..BatteryConfig::default()
            },
            2,
        )
        .unwrap();
        sane(&default);
        sane(&chatty);
        assert_eq!(default.heartbeat_s, 43_200, "firmware default");
        // A heartbeat every 10 minutes: a status and a telemetry message each time, 288 a day.
        assert!(
            chatty.messages_per_day >= 288.0
                && chatty.messages_per_day > default.messages_per_day + 200.0,
            "{}\n{}",
            default.render(),
            chatty.render()
        );
        assert!(
            chatty.life_days < default.life_days,
            "{}\n{}",
            default.render(),
            chatty.render()
        );
        // Same sampling either way: the samples are counted, not assumed.
        assert_eq!(chatty.samples_per_day, default.samples_per_day);
    }
}

#[test]
fn samples_are_what_the_firmware_takes() {
    // Firmware defaults: a cover's accelerometer every second, a bin's ranger every minute.
    let cover = battery::run(DeviceKind::Manhole, &BatteryConfig::default(), 1).unwrap();
    assert_eq!(cover.sample_period_ms, 1000);
    assert!(
        (cover.samples_per_day - 86_400.0).abs() <= 1.0,
        "{}",
        cover.render()
    );
    let bin = battery::run(DeviceKind::Bin, &BatteryConfig::default(), 1).unwrap();
    assert!(
        (bin.samples_per_day - 1_440.0).abs() <= 1.0,
        "{}",
        bin.render()
    );
    // A cover sampling every 10 s takes a tenth of the samples and lives longer.
    let slow = battery::run(
        DeviceKind::Manhole,
        &BatteryConfig {
            sample_period_ms: Some(10_000),
            ..BatteryConfig::default()
        },
        1,
    )
    .unwrap();
    assert!(
        (slow.samples_per_day - 8_640.0).abs() <= 1.0,
        "{}",
        slow.render()
    );
    assert!(slow.life_days > cover.life_days);
}

#[test]
fn refusals() {
    assert!(battery::run(DeviceKind::Streetlight, &BatteryConfig::default(), 1).is_err());
    // The firmware's own validation: the heartbeat may not be shorter than the report interval.
    let bad = BatteryConfig {
        report_interval_s: Some(900),
        heartbeat_s: Some(600),
        ..BatteryConfig::default()
    };
    assert!(battery::run(DeviceKind::Bin, &bad, 1).is_err());
}
