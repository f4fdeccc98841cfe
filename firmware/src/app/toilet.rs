//! Public-toilet odour node: NH3 and H2S judged on a moving average against the toilet-class
//! limit (GB/T 17217), with hysteresis, never on single samples.

use streetgate_protocols::{AlarmKind, TelemetryData, ToiletTelemetry};

use super::{Application, Node, battery_limit, round_to};
use crate::filter::{Alarm, Limit, MovingAverage, ReportPolicy};
use crate::platform::Now;
use crate::sensors::{Battery, GasSensor};

/// Samples the moving-average window holds at most.
pub const WINDOW_SAMPLES: usize = 64;

/// Toilet application.
#[derive(Debug)]
pub struct Toilet<G, B> {
    gas: G,
    battery: Option<B>,
    /// Sampling period, ms.
    pub sample_ms: u64,
    nh3: MovingAverage<WINDOW_SAMPLES>,
    h2s: MovingAverage<WINDOW_SAMPLES>,
    nh3_alarm: Alarm,
    h2s_alarm: Alarm,
    low_battery: Alarm,
    report: ReportPolicy,
    next_sample_ms: u64,
}

impl<G: GasSensor, B: Battery> Toilet<G, B> {
    /// Assemble; `battery` is `None` for mains-powered units.
    pub fn new(gas: G, battery: Option<B>) -> Self {
        Self {
            gas,
            battery,
            sample_ms: 30_000,
            nh3: MovingAverage::default(),
            h2s: MovingAverage::default(),
            nh3_alarm: Alarm::default(),
            h2s_alarm: Alarm::default(),
            low_battery: Alarm::default(),
            report: ReportPolicy::default(),
            next_sample_ms: 0,
        }
    }
}

impl<G: GasSensor, B: Battery> Application for Toilet<G, B> {
    fn sample(&mut self, node: &mut Node, now: Now) {
        if now.mono_ms < self.next_sample_ms {
            return;
        }
        self.next_sample_ms = now.mono_ms + self.sample_ms;
        let Ok(sample) = self.gas.read() else {
            node.sensor_error();
            return;
        };
        let window_ms = u64::from(node.settings.odour_window_s) * 1000;
        self.nh3.push(now.mono_ms, sample.nh3_mg_m3, window_ms);
        self.h2s.push(now.mono_ms, sample.h2s_mg_m3, window_ms);
        if let Some(b) = self.battery.as_mut() {
            match b.level_pct() {
                Ok(p) => node.battery_pct = Some(p),
                Err(_) => node.sensor_error(),
            }
        }
        let s = &node.settings;
        let hold = node.hold_ms();
        let limit = |l: f32| Limit::new(l, l * s.odour_hysteresis_pct / 100.0, hold);
        let (nh3_limit, h2s_limit) = (limit(s.nh3_limit_mg_m3), limit(s.h2s_limit_mg_m3));
        let battery = battery_limit(s, 0);
        let (nh3_avg, h2s_avg) = (self.nh3.average(), self.h2s.average());
        for (alarm, kind, avg, limit) in [
            (&mut self.nh3_alarm, AlarmKind::OdourNh3, nh3_avg, nh3_limit),
            (&mut self.h2s_alarm, AlarmKind::OdourH2s, h2s_avg, h2s_limit),
        ] {
            if let Some(v) = avg {
                if let Some(e) = alarm.update(v, &limit, now.mono_ms) {
                    node.event(kind, e, Some(v), now);
                    self.report.force();
                }
            }
        }
        if let (Some(_), Some(p)) = (self.battery.as_ref(), node.battery_pct) {
            if let Some(e) = self
                .low_battery
                .update(-f32::from(p), &battery, now.mono_ms)
            {
                node.event(AlarmKind::LowBattery, e, Some(f32::from(p)), now);
            }
        }
        let main = nh3_avg.unwrap_or(sample.nh3_mg_m3);
        let r3 = |v: f32| round_to(v, 1000.0);
        let data = TelemetryData::Toilet(ToiletTelemetry {
            nh3_mg_m3: r3(sample.nh3_mg_m3),
            h2s_mg_m3: r3(sample.h2s_mg_m3),
            nh3_avg_mg_m3: nh3_avg.map(r3),
            h2s_avg_mg_m3: h2s_avg.map(r3),
            temperature_c: None,
            humidity_pct: None,
            battery_pct: self.battery.as_ref().and(node.battery_pct),
        });
        node.report(&mut self.report, main, data, now);
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
    use crate::sensors::GasSample;
    use std::cell::Cell;
    use std::rc::Rc;
    use streetgate_protocols::codec::Encoding;
    use streetgate_protocols::{AlarmState, Config, DeviceId, DeviceKind};

    #[derive(Clone, Default)]
    struct Air(Rc<Cell<f32>>);
    impl GasSensor for Air {
        type Error = ();
        fn read(&mut self) -> Result<GasSample, ()> {
            Ok(GasSample {
                nh3_mg_m3: self.0.get(),
                h2s_mg_m3: 0.002,
            })
        }
    }

    #[test]
    fn moving_average_against_class_limit() {
        let air = Air::default();
        air.0.set(0.2);
        let node = Node::new(
            DeviceId::new("WC-1").unwrap(),
            DeviceKind::Toilet,
            Encoding::Json,
        );
        let mut dev = Device::new(node, Toilet::new(air.clone(), None::<NoSensor>));
        let mut link = Link::default();
        // Class 1 toilet: 0.3 mg/m³.
        link.config(&Config {
            config_id: 1,
            nh3_limit_mg_m3: Some(0.3),
            ..Config::default()
        });
        let mut t = 0;
        let mut step = |dev: &mut Device<Toilet<Air, NoSensor>>, link: &mut Link, secs: u64| {
            for _ in 0..secs / 30 {
                dev.tick(at(t), link);
                t += 30;
            }
        };
        step(&mut dev, &mut link, 1200);
        assert!(events(&link.take("WC-1")).is_empty());
        // A single spike is averaged away.
        air.0.set(2.0);
        step(&mut dev, &mut link, 30);
        air.0.set(0.2);
        step(&mut dev, &mut link, 600);
        assert!(events(&link.take("WC-1")).is_empty());
        // Sustained odour raises once the 10-minute average passes the limit.
        air.0.set(0.6);
        step(&mut dev, &mut link, 900);
        assert_eq!(
            events(&link.take("WC-1")),
            [(AlarmKind::OdourNh3, AlarmState::Raised)]
        );
        air.0.set(0.1);
        step(&mut dev, &mut link, 900);
        assert_eq!(
            events(&link.take("WC-1")),
            [(AlarmKind::OdourNh3, AlarmState::Cleared)]
        );
    }
}
