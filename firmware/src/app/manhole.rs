//! Manhole-cover node: tilt from the installed pose, cover open, water in the well, battery.
//!
//! The accelerometer is sampled every second through a vibration filter; tilt is the angle
//! between the filtered gravity vector and the one calibrated at installation. An alarm is
//! raised only after the condition has held for `hold_s` (default 5 s, traffic passing over a
//! cover never holds that long) and is sent at once, together with fresh telemetry (GB/T 41401:
//! alarm at the platform within 30 s).

use streetgate_protocols::{AlarmKind, ManholeTelemetry, TelemetryData};

use super::{Application, Node, battery_limit, round_to};
use crate::filter::{Alarm, Limit, ReportPolicy, VibrationFilter, angle_deg};
use crate::platform::Now;
use crate::sensors::{Accelerometer, Battery, Ranger};

/// Gravity when no calibration is stored: sensor Z axis up.
pub const DEFAULT_INSTALLED_G: [f32; 3] = [0.0, 0.0, 1000.0];

/// Manhole application over an accelerometer, an optional water-level ranger (mounted under
/// the cover, looking down) and a battery gauge.
#[derive(Debug)]
pub struct Manhole<A, W, B> {
    accel: A,
    water: Option<W>,
    battery: B,
    /// Distance from the ranger to the well bottom, mm (water level = depth − distance).
    pub well_depth_mm: u16,
    /// Accelerometer sampling period, ms.
    pub sample_ms: u64,
    filter: VibrationFilter,
    tilted: Alarm,
    open: Alarm,
    water_high: Alarm,
    low_battery: Alarm,
    report: ReportPolicy,
    next_sample_ms: u64,
    next_battery_ms: u64,
    tilt_deg: f32,
    water_cm: Option<f32>,
}

impl<A: Accelerometer, W: Ranger, B: Battery> Manhole<A, W, B> {
    /// Assemble the application.
    pub fn new(accel: A, water: Option<W>, battery: B, well_depth_mm: u16) -> Self {
        Self {
            accel,
            water,
            battery,
            well_depth_mm,
            sample_ms: 1_000,
            filter: VibrationFilter::default(),
            tilted: Alarm::default(),
            open: Alarm::default(),
            water_high: Alarm::default(),
            low_battery: Alarm::default(),
            report: ReportPolicy::default(),
            next_sample_ms: 0,
            next_battery_ms: 0,
            tilt_deg: 0.0,
            water_cm: None,
        }
    }

    /// Store the present (filtered) pose as the installed one; persist the settings afterwards.
    pub fn calibrate(&mut self, node: &mut Node) -> bool {
        match self.filter.value() {
            Some(g) => {
                node.settings.installed_g = Some(g);
                true
            }
            None => false,
        }
    }

    /// Latest tilt, degrees.
    pub fn tilt_deg(&self) -> f32 {
        self.tilt_deg
    }

    fn edge(
        node: &mut Node,
        alarm: &mut Alarm,
        kind: AlarmKind,
        value: f32,
        limit: &Limit,
        now: Now,
        report: &mut ReportPolicy,
    ) {
        if let Some(edge) = alarm.update(value, limit, now.mono_ms) {
            node.event(kind, edge, Some(value), now);
            report.force();
        }
    }
}

impl<A: Accelerometer, W: Ranger, B: Battery> Application for Manhole<A, W, B> {
    fn sample(&mut self, node: &mut Node, now: Now) {
        if now.mono_ms < self.next_sample_ms {
            return;
        }
        self.next_sample_ms = now.mono_ms + self.sample_ms;
        let Ok(raw) = self.accel.read_mg() else {
            node.sensor_error();
            return;
        };
        #[allow(clippy::cast_precision_loss)] // milli-g values are small
        let g = self.filter.update(raw.map(|v| v as f32));
        let installed = node.settings.installed_g.unwrap_or(DEFAULT_INSTALLED_G);
        self.tilt_deg = angle_deg(g, installed);

        if now.mono_ms >= self.next_battery_ms {
            self.next_battery_ms = now.mono_ms + 60_000;
            match self.battery.level_pct() {
                Ok(pct) => node.battery_pct = Some(pct),
                Err(_) => node.sensor_error(),
            }
        }
        if let Some(w) = self.water.as_mut() {
            match w.distance_mm() {
                Ok(Some(d)) => {
                    self.water_cm = Some(f32::from(self.well_depth_mm.saturating_sub(d)) / 10.0);
                }
                Ok(None) => self.water_cm = Some(0.0), // no surface in range: dry well
                Err(_) => node.sensor_error(),
            }
        }

        let s = &node.settings;
        let hold = node.hold_ms();
        let tilt_limit = Limit::new(s.tilt_alarm_deg, s.tilt_hysteresis_deg, hold);
        let open_limit = Limit::new(s.tilt_open_deg, s.tilt_hysteresis_deg, hold);
        let water_limit = Limit::new(s.water_high_cm, 5.0, hold);
        let battery = battery_limit(s, 0);
        let tilt = self.tilt_deg;
        Self::edge(
            node,
            &mut self.tilted,
            AlarmKind::CoverTilted,
            tilt,
            &tilt_limit,
            now,
            &mut self.report,
        );
        Self::edge(
            node,
            &mut self.open,
            AlarmKind::CoverOpen,
            tilt,
            &open_limit,
            now,
            &mut self.report,
        );
        if let Some(w) = self.water_cm {
            Self::edge(
                node,
                &mut self.water_high,
                AlarmKind::WaterHigh,
                w,
                &water_limit,
                now,
                &mut self.report,
            );
        }
        if let Some(pct) = node.battery_pct {
            if let Some(edge) = self
                .low_battery
                .update(-f32::from(pct), &battery, now.mono_ms)
            {
                node.event(AlarmKind::LowBattery, edge, Some(f32::from(pct)), now);
            }
        }

        let data = TelemetryData::Manhole(ManholeTelemetry {
            tilt_deg: round_to(tilt, 100.0),
            water_level_cm: self.water_cm,
            temperature_c: None,
            battery_pct: node.battery_pct.unwrap_or(0),
        });
        node.report(&mut self.report, tilt, data, now);
    }

    fn request_report(&mut self) {
        self.report.force();
        self.next_sample_ms = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::test_support::*;
    use crate::app::{Device, NoSensor};
    use crate::sensors::AccelMg;
    use std::cell::Cell;
    use std::rc::Rc;
    use streetgate_protocols::codec::Encoding;
    use streetgate_protocols::{AlarmState, Config, DeviceId, DeviceKind};

    /// An accelerometer whose pose the test sets.
    #[derive(Clone, Default)]
    struct Pose(Rc<Cell<f32>>);
    impl Accelerometer for Pose {
        type Error = ();
        fn read_mg(&mut self) -> Result<AccelMg, ()> {
            let a = self.0.get().to_radians();
            #[allow(clippy::cast_possible_truncation)]
            Ok([
                0,
                (1000.0 * libm::sinf(a)) as i32,
                (1000.0 * libm::cosf(a)) as i32,
            ])
        }
    }

    fn device(pose: &Pose) -> Device<Manhole<Pose, NoSensor, NoSensor>> {
        let node = Node::new(
            DeviceId::new("MH-1").unwrap(),
            DeviceKind::Manhole,
            Encoding::Binary,
        );
        Device::new(node, Manhole::new(pose.clone(), None, NoSensor, 2000))
    }

    fn run(
        dev: &mut Device<Manhole<Pose, NoSensor, NoSensor>>,
        link: &mut Link,
        from: u64,
        to: u64,
    ) {
        for s in from..to {
            dev.tick(at(s), link);
        }
    }

    #[test]
    fn tilt_raises_after_hold_and_clears_with_hysteresis() {
        let pose = Pose::default();
        let mut dev = device(&pose);
        let mut link = Link::default();
        run(&mut dev, &mut link, 0, 10);
        assert!(events(&link.take("MH-1")).is_empty());
        pose.0.set(25.0);
        run(&mut dev, &mut link, 10, 14); // filter settles, hold not yet reached
        assert!(events(&link.take("MH-1")).is_empty());
        run(&mut dev, &mut link, 14, 30);
        let msgs = link.take("MH-1");
        assert_eq!(
            events(&msgs),
            [(AlarmKind::CoverTilted, AlarmState::Raised)]
        );
        assert!(
            !telemetry(&msgs).is_empty(),
            "fresh telemetry goes with the alarm"
        );
        pose.0.set(9.0); // inside the 8..10° hysteresis band: stays raised
        run(&mut dev, &mut link, 30, 50);
        assert!(events(&link.take("MH-1")).is_empty());
        pose.0.set(2.0);
        run(&mut dev, &mut link, 50, 60);
        assert_eq!(
            events(&link.take("MH-1")),
            [(AlarmKind::CoverTilted, AlarmState::Cleared)]
        );
    }

    #[test]
    fn vibration_does_not_alarm_but_open_cover_does() {
        let pose = Pose::default();
        let mut dev = device(&pose);
        let mut link = Link::default();
        for s in 0..60 {
            pose.0.set(if s % 3 == 0 { 30.0 } else { 0.0 }); // a truck every 3 s
            dev.tick(at(s), &mut link);
        }
        assert!(events(&link.take("MH-1")).is_empty());
        pose.0.set(90.0);
        run(&mut dev, &mut link, 60, 80);
        assert_eq!(
            events(&link.take("MH-1")),
            [
                (AlarmKind::CoverTilted, AlarmState::Raised),
                (AlarmKind::CoverOpen, AlarmState::Raised)
            ]
        );
    }

    #[test]
    fn calibration_makes_the_installed_pose_zero() {
        let pose = Pose::default();
        pose.0.set(20.0); // installed on a slope
        let mut dev = device(&pose);
        let mut link = Link::default();
        run(&mut dev, &mut link, 0, 20);
        assert!(dev.app.calibrate(&mut dev.node));
        run(&mut dev, &mut link, 20, 40);
        assert!(dev.app.tilt_deg() < 1.0);
        let msgs = link.take("MH-1");
        assert_eq!(
            events(&msgs),
            [
                (AlarmKind::CoverTilted, AlarmState::Raised),
                (AlarmKind::CoverTilted, AlarmState::Cleared)
            ]
        );
    }

    #[test]
    fn alarms_survive_a_link_outage_in_order() {
        let pose = Pose::default();
        let mut dev = device(&pose);
        let mut link = Link::default();
        run(&mut dev, &mut link, 0, 5);
        link.take("MH-1");
        link.down = true;
        pose.0.set(30.0);
        run(&mut dev, &mut link, 5, 20);
        pose.0.set(0.0);
        run(&mut dev, &mut link, 20, 40);
        assert!(link.sent.is_empty());
        assert!(dev.node.outbox().len() >= 2);
        link.down = false;
        dev.tick(at(40), &mut link);
        let msgs = link.take("MH-1");
        assert_eq!(
            events(&msgs),
            [
                (AlarmKind::CoverTilted, AlarmState::Raised),
                (AlarmKind::CoverTilted, AlarmState::Cleared)
            ]
        );
        let seqs: std::vec::Vec<u32> = msgs.iter().map(streetgate_protocols::Uplink::seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    }

    #[test]
    fn a_board_clock_drives_the_device() {
        use crate::platform::{Clock, Now};
        struct Rtc(std::cell::Cell<u64>);
        impl Clock for Rtc {
            fn now(&self) -> Now {
                Now {
                    mono_ms: self.0.get(),
                    unix_ms: Some(1_700_000_000_000 + self.0.get()),
                }
            }
        }
        let pose = Pose::default();
        let mut dev = device(&pose);
        let mut link = Link::default();
        let rtc = Rtc(std::cell::Cell::new(0));
        dev.tick_with(&rtc, &mut link);
        pose.0.set(40.0);
        for s in 1..20 {
            rtc.0.set(s * 1000);
            dev.tick_with(&rtc, &mut link);
        }
        let msgs = link.take("MH-1");
        assert!(events(&msgs).contains(&(AlarmKind::CoverTilted, AlarmState::Raised)));
        assert!(
            msgs.iter()
                .all(|m| m.ts_ms().is_some_and(|t| t >= 1_700_000_000_000))
        );
    }

    #[test]
    fn config_is_validated_applied_and_acknowledged() {
        let pose = Pose::default();
        let mut dev = device(&pose);
        let mut link = Link::default();
        link.config(&Config {
            config_id: 7,
            tilt_alarm_deg: Some(20.0),
            ..Config::default()
        });
        link.config(&Config {
            config_id: 8,
            tilt_alarm_deg: Some(75.0),
            ..Config::default()
        });
        dev.tick(at(0), &mut link);
        let acks = acks(&link.take("MH-1"));
        assert_eq!(acks.len(), 2);
        assert!(acks[0].ok && acks[0].ref_id == 7);
        assert!(!acks[1].ok && acks[1].ref_id == 8);
        assert!(
            acks[1]
                .reason
                .as_deref()
                .unwrap_or("")
                .starts_with("tilt_open_deg"),
            "{:?}",
            acks[1].reason
        );
        assert_eq!(dev.node.settings.tilt_alarm_deg, 20.0);
        pose.0.set(15.0); // below the new threshold
        run(&mut dev, &mut link, 1, 20);
        assert!(events(&link.take("MH-1")).is_empty());
    }
}
