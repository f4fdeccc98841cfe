//! Waste-bin node: fill level from an ultrasonic/ToF ranger, fire risk from temperature,
//! knocked over from an accelerometer, battery.
//!
//! Each measurement is the median of a burst of ranger reads (single echoes off a bag's edge
//! or the bin wall are common); fill % = (depth − distance) ÷ depth, clamped to 0..=150 %. A
//! jump of more than [`CONFIRM_JUMP_PCT`] from the last level is confirmed by a second burst at
//! once before it is believed: a level reported is held by the gateway until the next report,
//! so one burst that met more wall echoes than refuse must not become a full bin.

use streetgate_protocols::{AlarmKind, BinTelemetry, TelemetryData};

use super::{Application, Node, battery_limit, round_to};
use crate::filter::{Alarm, Limit, Median, ReportPolicy, angle_deg};
use crate::platform::Now;
use crate::sensors::{Accelerometer, Battery, Ranger, Thermometer};

/// Ranger reads per measurement.
pub const BURST: usize = 9;
/// A change of fill larger than this (percentage points) is measured again before it counts.
pub const CONFIRM_JUMP_PCT: f32 = 15.0;
/// Fill reported when the refuse reaches the sensor (inside its blind zone), %.
pub const OVERFLOWING_PCT: f32 = 110.0;
/// Tilt from upright at which a bin counts as knocked over, °.
pub const TIPPED_DEG: f32 = 45.0;

/// Fill level for a measured distance.
pub fn fill_pct(depth_mm: u16, distance_mm: f32) -> f32 {
    if depth_mm == 0 {
        return 0.0;
    }
    ((f32::from(depth_mm) - distance_mm) / f32::from(depth_mm) * 100.0).clamp(0.0, 150.0)
}

/// Bin application.
#[derive(Debug)]
pub struct Bin<R, T, A, B> {
    ranger: R,
    thermometer: T,
    accel: Option<A>,
    battery: B,
    /// Measurement period, ms.
    pub sample_ms: u64,
    median: Median<BURST>,
    full: Alarm,
    overflow: Alarm,
    fire: Alarm,
    tipped: Alarm,
    low_battery: Alarm,
    report: ReportPolicy,
    next_sample_ms: u64,
    fill: Option<f32>,
    distance: Option<u16>,
    temperature: f32,
    tilt: Option<f32>,
}

impl<R: Ranger, T: Thermometer, A: Accelerometer, B: Battery> Bin<R, T, A, B> {
    /// Assemble the application.
    pub fn new(ranger: R, thermometer: T, accel: Option<A>, battery: B) -> Self {
        Self {
            ranger,
            thermometer,
            accel,
            battery,
            sample_ms: 60_000,
            median: Median::default(),
            full: Alarm::default(),
            overflow: Alarm::default(),
            fire: Alarm::default(),
            tipped: Alarm::default(),
            low_battery: Alarm::default(),
            report: ReportPolicy::default(),
            next_sample_ms: 0,
            fill: None,
            distance: None,
            temperature: 20.0,
            tilt: None,
        }
    }

    /// Latest fill level, %.
    pub fn fill(&self) -> Option<f32> {
        self.fill
    }

    /// One burst: the median distance as (fill %, mm), if any read answered.
    fn measure(&mut self, node: &mut Node, depth_mm: u16) -> Option<(f32, u16)> {
        self.median.clear();
        for _ in 0..BURST {
            match self.ranger.distance_mm() {
                Ok(Some(d)) => self.median.push(f32::from(d)),
                Ok(None) => {}
                Err(_) => node.sensor_error(),
            }
        }
        let d = self.median.median()?;
        // Refuse up to the sensor reads as the blind zone: overflowing, whatever the depth.
        let at_sensor = d <= f32::from(R::BLIND_ZONE_MM);
        let fill = fill_pct(depth_mm, d);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // ≤ 65535 mm
        let mm = d as u16;
        Some((
            if at_sensor {
                fill.max(OVERFLOWING_PCT)
            } else {
                fill
            },
            mm,
        ))
    }
}

impl<R: Ranger, T: Thermometer, A: Accelerometer, B: Battery> Application for Bin<R, T, A, B> {
    fn sample(&mut self, node: &mut Node, now: Now) {
        if now.mono_ms < self.next_sample_ms {
            return;
        }
        self.next_sample_ms = now.mono_ms + self.sample_ms;
        let depth = node.settings.bin_depth_mm;
        if let Some((fill, mm)) = self.measure(node, depth) {
            let jump = self
                .fill
                .is_some_and(|last| libm::fabsf(fill - last) > CONFIRM_JUMP_PCT);
            // A jump is believed only if a second burst agrees; otherwise the last level stands
            // and the next period measures again.
            let confirmed = !jump
                || self
                    .measure(node, depth)
                    .is_some_and(|(again, _)| libm::fabsf(again - fill) <= CONFIRM_JUMP_PCT);
            if confirmed {
                self.fill = Some(fill);
                self.distance = Some(mm);
            }
        }
        match self.thermometer.temperature_c() {
            Ok(t) => self.temperature = t,
            Err(_) => node.sensor_error(),
        }
        if let Some(a) = self.accel.as_mut() {
            match a.read_mg() {
                #[allow(clippy::cast_precision_loss)]
                Ok(g) => self.tilt = Some(angle_deg(g.map(|v| v as f32), [0.0, 0.0, 1000.0])),
                Err(_) => node.sensor_error(),
            }
        }
        match self.battery.level_pct() {
            Ok(p) => node.battery_pct = Some(p),
            Err(_) => node.sensor_error(),
        }

        let s = &node.settings;
        let hold = node.hold_ms();
        let mut edge = |alarm: &mut Alarm, kind, value: f32, limit: Limit, node: &mut Node| {
            if let Some(e) = alarm.update(value, &limit, now.mono_ms) {
                node.event(kind, e, Some(value), now);
                self.report.force();
            }
        };
        let full = Limit::new(s.full_pct, s.fill_hysteresis_pct, hold);
        let overflow = Limit::new(s.overflow_pct, s.fill_hysteresis_pct, hold);
        let fire = Limit::new(s.fire_temp_c, 5.0, hold);
        let tipped = Limit::new(TIPPED_DEG, 10.0, hold);
        let battery = battery_limit(s, 0);
        if let Some(f) = self.fill {
            edge(&mut self.full, AlarmKind::BinFull, f, full, node);
            edge(
                &mut self.overflow,
                AlarmKind::BinOverflow,
                f,
                overflow,
                node,
            );
        }
        edge(
            &mut self.fire,
            AlarmKind::FireRisk,
            self.temperature,
            fire,
            node,
        );
        if let Some(t) = self.tilt {
            edge(&mut self.tipped, AlarmKind::BinTipped, t, tipped, node);
        }
        if let Some(p) = node.battery_pct {
            if let Some(e) = self
                .low_battery
                .update(-f32::from(p), &battery, now.mono_ms)
            {
                node.event(AlarmKind::LowBattery, e, Some(f32::from(p)), now);
            }
        }

        let fill = self.fill.unwrap_or(0.0);
        let data = TelemetryData::Bin(BinTelemetry {
            fill_pct: round_to(fill, 10.0),
            distance_mm: self.distance,
            temperature_c: self.temperature.clamp(-50.0, 300.0),
            tilt_deg: self.tilt,
            battery_pct: node.battery_pct.unwrap_or(0),
        });
        node.report(&mut self.report, fill, data, now);
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
    use std::cell::Cell;
    use std::rc::Rc;
    use streetgate_protocols::codec::Encoding;
    use streetgate_protocols::{AlarmState, DeviceId, DeviceKind};

    #[derive(Clone, Default)]
    struct World {
        distance: Rc<Cell<u16>>,
        temp: Rc<Cell<f32>>,
        echo_noise: Rc<Cell<u32>>,
    }
    impl Ranger for World {
        type Error = ();
        fn distance_mm(&mut self) -> Result<Option<u16>, ()> {
            let n = self.echo_noise.get();
            self.echo_noise.set(n + 1);
            // Every fifth echo bounces off the bin wall at 50 mm.
            Ok(Some(if n.is_multiple_of(5) {
                50
            } else {
                self.distance.get()
            }))
        }
    }
    impl Thermometer for World {
        type Error = ();
        fn temperature_c(&mut self) -> Result<f32, ()> {
            Ok(self.temp.get())
        }
    }

    type Dev = Device<Bin<World, World, NoSensor, NoSensor>>;

    fn device(w: &World) -> Dev {
        let node = Node::new(
            DeviceId::new("BN-1").unwrap(),
            DeviceKind::Bin,
            Encoding::Json,
        );
        let mut bin = Bin::new(w.clone(), w.clone(), None, NoSensor);
        bin.sample_ms = 10_000;
        Device::new(node, bin)
    }

    fn run(dev: &mut Dev, link: &mut Link, from: u64, to: u64) {
        for s in (from..to).step_by(10) {
            dev.tick(at(s), link);
        }
    }

    #[test]
    fn fill_levels() {
        assert_eq!(fill_pct(1000, 1000.0), 0.0);
        assert_eq!(fill_pct(1000, 200.0), 80.0);
        assert_eq!(fill_pct(1000, 2000.0), 0.0);
        assert_eq!(fill_pct(1000, -1000.0), 150.0);
        assert_eq!(fill_pct(0, 10.0), 0.0);
    }

    #[test]
    fn full_then_overflow_then_collected() {
        let w = World::default();
        w.distance.set(900);
        w.temp.set(20.0);
        let mut dev = device(&w);
        let mut link = Link::default();
        run(&mut dev, &mut link, 0, 60);
        assert!(events(&link.take("BN-1")).is_empty());
        assert!(
            (dev.app.fill().unwrap() - 10.0).abs() < 0.5,
            "median ignores the wall echo"
        );
        w.distance.set(150); // 85 %
        run(&mut dev, &mut link, 60, 120);
        assert_eq!(
            events(&link.take("BN-1")),
            [(AlarmKind::BinFull, AlarmState::Raised)]
        );
        w.distance.set(0); // heaped above the rim... clamps at 100 %
        run(&mut dev, &mut link, 120, 180);
        assert_eq!(
            events(&link.take("BN-1")),
            [(AlarmKind::BinOverflow, AlarmState::Raised)]
        );
        w.distance.set(950); // collected
        run(&mut dev, &mut link, 180, 240);
        assert_eq!(
            events(&link.take("BN-1")),
            [
                (AlarmKind::BinFull, AlarmState::Cleared),
                (AlarmKind::BinOverflow, AlarmState::Cleared)
            ]
        );
    }

    #[test]
    fn a_burst_of_wall_echoes_is_not_a_full_bin() {
        let w = World::default();
        w.temp.set(20.0);
        let mut ranger = SplitRanger {
            world: w.clone(),
            first: 0,
        };
        // The ranger's next burst bounces off the bin wall entirely (89 % full).
        let mut bin = Bin::new(ranger.clone(), w.clone(), None::<NoSensor>, NoSensor);
        let mut node = Node::new(
            DeviceId::new("BN-2").unwrap(),
            DeviceKind::Bin,
            Encoding::Json,
        );
        w.distance.set(900);
        bin.sample(&mut node, at(0));
        assert!((bin.fill().unwrap() - 10.0).abs() < 0.5);
        ranger.first = BURST as u32;
        bin.ranger = ranger;
        bin.next_sample_ms = 0;
        bin.sample(&mut node, at(60));
        assert!(
            (bin.fill().unwrap() - 10.0).abs() < 0.5,
            "unconfirmed jump ignored: {:?}",
            bin.fill()
        );
        // A real change is confirmed by the second burst and believed at once.
        w.distance.set(150);
        bin.ranger.first = 0;
        bin.next_sample_ms = 0;
        bin.sample(&mut node, at(120));
        assert!((bin.fill().unwrap() - 85.0).abs() < 0.5, "{:?}", bin.fill());
    }

    /// Answers the wall (50 mm) for its first `first` reads, then the world's distance.
    #[derive(Clone)]
    struct SplitRanger {
        world: World,
        first: u32,
    }
    impl Ranger for SplitRanger {
        type Error = ();
        fn distance_mm(&mut self) -> Result<Option<u16>, ()> {
            if self.first > 0 {
                self.first -= 1;
                return Ok(Some(50));
            }
            Ok(Some(self.world.distance.get()))
        }
    }

    #[test]
    fn fire_risk() {
        let w = World::default();
        w.distance.set(900);
        w.temp.set(25.0);
        let mut dev = device(&w);
        let mut link = Link::default();
        run(&mut dev, &mut link, 0, 30);
        w.temp.set(75.0);
        run(&mut dev, &mut link, 30, 60);
        let msgs = link.take("BN-1");
        assert_eq!(events(&msgs), [(AlarmKind::FireRisk, AlarmState::Raised)]);
        w.temp.set(58.0); // within the 5 °C hysteresis
        run(&mut dev, &mut link, 60, 90);
        assert!(events(&link.take("BN-1")).is_empty());
        w.temp.set(30.0);
        run(&mut dev, &mut link, 90, 120);
        assert_eq!(
            events(&link.take("BN-1")),
            [(AlarmKind::FireRisk, AlarmState::Cleared)]
        );
    }
}
