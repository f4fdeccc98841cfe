//! Streetlight controller: astronomical-clock schedule, operator overrides with expiry, night
//! dimming, metering and lamp-fault detection.
//!
//! The schedule runs locally, so lamps switch at dusk and dawn with the gateway unreachable.
//! Faults, each held for `hold_s` before it is raised:
//! * **lamp failure** — relay closed, supply present, current below `min_current_a`;
//! * **relay failure** — relay open but current flowing (welded contact);
//! * **day burner** — current flowing while the schedule says off and no operator override asks
//!   for light (the symptom; a welded relay in daytime raises both);
//! * **supply loss** — voltage below `supply_min_v`;
//! * **leakage** — leakage current at or above `leakage_limit_ma`;
//! * **cycling** — the lamp going out and relighting while the relay stays closed
//!   ([`CYCLING_TRANSITIONS`] changes within [`CYCLING_WINDOW_MS`]), typical of a failing ballast.

use streetgate_protocols::astro;
use streetgate_protocols::message::ShortText;
use streetgate_protocols::{Action, AlarmKind, StreetlightTelemetry, TelemetryData};

use super::{Application, Node, reason, round_to};
use crate::filter::{Alarm, ReportPolicy};
use crate::platform::Now;
use crate::sensors::{LampDriver, Metering};

/// Lit-state changes within the window that count as cycling.
pub const CYCLING_TRANSITIONS: usize = 6;
/// Cycling window, ms.
pub const CYCLING_WINDOW_MS: u64 = 600_000;

/// An operator override from a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Override {
    on: Option<bool>,
    dim: Option<u8>,
    until_ms: Option<u64>,
}

/// Streetlight application over a lamp power stage.
#[derive(Debug)]
pub struct Streetlight<L> {
    lamp: L,
    /// Sampling period, ms.
    pub sample_ms: u64,
    relay_on: bool,
    dim_pct: u8,
    /// Outputs written at least once (the power stage state is unknown at boot).
    synced: bool,
    overridden: Option<Override>,
    lamp_failure: Alarm,
    relay_failure: Alarm,
    day_burner: Alarm,
    supply_loss: Alarm,
    leakage: Alarm,
    cycling: Alarm,
    lit: bool,
    transitions: heapless::Deque<u64, 16>,
    operating_ms: u64,
    switch_count: u32,
    last_sample_ms: Option<u64>,
    next_sample_ms: u64,
    report: ReportPolicy,
    last: Metering,
}

impl<L: LampDriver> Streetlight<L> {
    /// Assemble; the lamp starts off until the schedule or a command says otherwise.
    pub fn new(lamp: L) -> Self {
        Self {
            lamp,
            sample_ms: 10_000,
            relay_on: false,
            dim_pct: 100,
            synced: false,
            overridden: None,
            lamp_failure: Alarm::default(),
            relay_failure: Alarm::default(),
            day_burner: Alarm::default(),
            supply_loss: Alarm::default(),
            leakage: Alarm::default(),
            cycling: Alarm::default(),
            lit: false,
            transitions: heapless::Deque::new(),
            operating_ms: 0,
            switch_count: 0,
            last_sample_ms: None,
            next_sample_ms: 0,
            report: ReportPolicy::default(),
            last: Metering::default(),
        }
    }

    /// Whether the relay is closed.
    pub fn relay_on(&self) -> bool {
        self.relay_on
    }

    /// Present dimming level.
    pub fn dim_pct(&self) -> u8 {
        self.dim_pct
    }

    /// The power stage (for simulators injecting faults).
    pub fn lamp_mut(&mut self) -> &mut L {
        &mut self.lamp
    }

    /// What the schedule says at `now`: `Some(on)` when there is a schedule and a clock.
    fn scheduled(node: &Node, now: Now) -> Option<bool> {
        let s = node.settings.schedule?;
        let unix_s = i64::try_from(now.unix_ms? / 1000).ok()?;
        Some(astro::lamps_should_be_on(
            unix_s,
            s.lat_deg,
            s.lon_deg,
            s.on_offset_min,
            s.off_offset_min,
        ))
    }

    /// Night dimming level at `now`, if the schedule defines one and it applies.
    fn night_dim(node: &Node, now: Now) -> Option<u8> {
        let s = node.settings.schedule?;
        let (pct, from, to) = (s.night_dim_pct?, s.dim_from_min?, s.dim_to_min?);
        let local_min = (i64::try_from(now.unix_ms? / 60_000).ok()? + i64::from(s.utc_offset_min))
            .rem_euclid(1440);
        let (from, to) = (i64::from(from), i64::from(to));
        let inside = if from <= to {
            (from..to).contains(&local_min)
        } else {
            local_min >= from || local_min < to
        };
        inside.then_some(pct)
    }

    fn drive(&mut self, node: &mut Node, now: Now) {
        if self
            .overridden
            .is_some_and(|o| o.until_ms.is_some_and(|u| now.mono_ms >= u))
        {
            self.overridden = None;
        }
        let scheduled = Self::scheduled(node, now);
        let want_on = self
            .overridden
            .and_then(|o| o.on)
            .or(scheduled)
            .unwrap_or(self.relay_on);
        let want_dim = self
            .overridden
            .and_then(|o| o.dim)
            .or_else(|| Self::night_dim(node, now))
            .unwrap_or(100);
        if want_on != self.relay_on || !self.synced {
            match self.lamp.set_relay(want_on) {
                Ok(()) => {
                    if want_on != self.relay_on {
                        self.switch_count = self.switch_count.saturating_add(1);
                    }
                    self.relay_on = want_on;
                    self.report.force();
                }
                Err(_) => node.sensor_error(),
            }
        }
        if want_dim != self.dim_pct || !self.synced {
            match self.lamp.set_dim_pct(want_dim) {
                Ok(()) => self.dim_pct = want_dim,
                Err(_) => node.sensor_error(),
            }
        }
        self.synced = true;
    }
}

impl<L: LampDriver> Application for Streetlight<L> {
    fn sample(&mut self, node: &mut Node, now: Now) {
        if now.mono_ms < self.next_sample_ms {
            return;
        }
        self.next_sample_ms = now.mono_ms + self.sample_ms;
        self.drive(node, now);
        let Ok(m) = self.lamp.measure() else {
            node.sensor_error();
            return;
        };
        self.last = m;
        let s = &node.settings;
        let lit = m.current_a >= s.min_current_a;
        if let Some(prev) = self.last_sample_ms {
            if lit {
                self.operating_ms += now.mono_ms.saturating_sub(prev);
            }
        }
        self.last_sample_ms = Some(now.mono_ms);
        if lit != self.lit {
            self.lit = lit;
            if self.relay_on {
                if self.transitions.is_full() {
                    self.transitions.pop_front();
                }
                let _ = self.transitions.push_back(now.mono_ms);
            }
        }
        while self
            .transitions
            .front()
            .is_some_and(|t| now.mono_ms.saturating_sub(*t) > CYCLING_WINDOW_MS)
        {
            self.transitions.pop_front();
        }
        if !self.relay_on {
            self.transitions.clear();
        }

        let hold = node.hold_ms();
        let supply_lost = m.voltage_v < s.supply_min_v;
        let scheduled_off = Self::scheduled(node, now) == Some(false);
        let operator_wants_light = self.overridden.is_some_and(|o| o.on == Some(true));
        // (alarm, active, observable now, value, hold). A lamp failure can only be seen while the
        // relay is closed and the supply is there, a welded relay only while the relay is open:
        // otherwise the alarm keeps its state (a lamp that burnt out at night is still out at
        // noon, when the schedule has opened the relay; it clears when it next lights).
        let conditions = [
            (AlarmKind::SupplyLoss, supply_lost, true, m.voltage_v, hold),
            (
                AlarmKind::LampFailure,
                !lit,
                self.relay_on && !supply_lost,
                m.current_a,
                hold,
            ),
            (
                AlarmKind::RelayFailure,
                lit,
                !self.relay_on,
                m.current_a,
                hold,
            ),
            (
                AlarmKind::DayBurner,
                lit && scheduled_off && !operator_wants_light,
                true,
                m.current_a,
                hold,
            ),
            (
                AlarmKind::Leakage,
                m.leakage_ma >= s.leakage_limit_ma,
                true,
                m.leakage_ma,
                hold,
            ),
            #[allow(clippy::cast_precision_loss)]
            (
                AlarmKind::Cycling,
                self.transitions.len() >= CYCLING_TRANSITIONS,
                true,
                self.transitions.len() as f32,
                0,
            ),
        ];
        for (kind, active, observable, value, hold_ms) in conditions {
            if !observable {
                continue;
            }
            let alarm = match kind {
                AlarmKind::SupplyLoss => &mut self.supply_loss,
                AlarmKind::LampFailure => &mut self.lamp_failure,
                AlarmKind::RelayFailure => &mut self.relay_failure,
                AlarmKind::DayBurner => &mut self.day_burner,
                AlarmKind::Leakage => &mut self.leakage,
                _ => &mut self.cycling,
            };
            if let Some(edge) = alarm.update_bool(active, hold_ms, now.mono_ms) {
                node.event(kind, edge, Some(value), now);
                self.report.force();
            }
        }

        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let energy_wh = m.energy_wh.max(0.0) as u32;
        let r = round_to;
        let data = TelemetryData::Streetlight(StreetlightTelemetry {
            lamp_on: self.relay_on,
            dim_pct: self.dim_pct,
            voltage_v: r(m.voltage_v, 10.0).clamp(0.0, 500.0),
            current_a: r(m.current_a, 1000.0).clamp(0.0, 50.0),
            power_w: r(m.power_w, 10.0).clamp(0.0, 10_000.0),
            energy_wh,
            leakage_ma: r(m.leakage_ma, 10.0).clamp(0.0, 10_000.0),
            operating_h: u32::try_from(self.operating_ms / 3_600_000).unwrap_or(u32::MAX),
            switch_count: self.switch_count,
        });
        node.report(&mut self.report, m.power_w, data, now);
    }

    fn command(&mut self, _node: &mut Node, action: Action, now: Now) -> Result<(), ShortText> {
        let until = |e: Option<u32>| e.map(|s| now.mono_ms + u64::from(s) * 1000);
        self.overridden = match action {
            Action::LampOn { dim_pct, expires_s } => Some(Override {
                on: Some(true),
                dim: dim_pct,
                until_ms: until(expires_s),
            }),
            Action::LampOff { expires_s } => Some(Override {
                on: Some(false),
                dim: None,
                until_ms: until(expires_s),
            }),
            Action::Dim { pct, expires_s } => Some(Override {
                on: None,
                dim: Some(pct),
                until_ms: until(expires_s),
            }),
            Action::ResumeSchedule => None,
            Action::RequestReport | Action::Reboot => {
                return Err(reason("action: handled by the node"));
            }
        };
        // Act now, not at the next sampling period.
        self.next_sample_ms = 0;
        self.report.force();
        Ok(())
    }

    fn request_report(&mut self) {
        self.report.force();
        self.next_sample_ms = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Device;
    use crate::app::test_support::*;
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::vec::Vec;
    use streetgate_protocols::codec::Encoding;
    use streetgate_protocols::{
        AlarmState, Command, Config, DeviceId, DeviceKind, LampSchedule, Uplink,
    };

    /// A lamp whose electrical behaviour the test scripts.
    #[derive(Default)]
    struct Lamp {
        relay: bool,
        dim: u8,
        burnt_out: bool,
        welded: bool,
        no_supply: bool,
        leakage_ma: f32,
        flicker: bool,
        tick: u32,
    }

    #[derive(Clone, Default)]
    struct Stage(Rc<RefCell<Lamp>>);

    impl LampDriver for Stage {
        type Error = ();
        fn set_relay(&mut self, on: bool) -> Result<(), ()> {
            self.0.borrow_mut().relay = on;
            Ok(())
        }
        fn set_dim_pct(&mut self, pct: u8) -> Result<(), ()> {
            self.0.borrow_mut().dim = pct;
            Ok(())
        }
        fn measure(&mut self) -> Result<Metering, ()> {
            let mut l = self.0.borrow_mut();
            l.tick += 1;
            let closed = l.relay || l.welded;
            let mut current = if closed && !l.burnt_out && !l.no_supply {
                0.45 * f32::from(l.dim) / 100.0
            } else {
                0.0
            };
            if l.flicker && l.tick.is_multiple_of(2) {
                current = 0.0;
            }
            Ok(Metering {
                voltage_v: if l.no_supply { 0.0 } else { 228.0 },
                current_a: current,
                power_w: current * 220.0,
                energy_wh: 0.0,
                leakage_ma: l.leakage_ma,
            })
        }
    }

    type Dev = Device<Streetlight<Stage>>;

    // 2024-12-21 at Beijing: sunset ≈ 08:53 UTC, sunrise ≈ 23:33 UTC.
    const NOON_UTC_MS: u64 = 1_734_782_400_000; // 2024-12-21 12:00 UTC = 20:00 CST (night)
    const DAY_UTC_MS: u64 = 1_734_753_600_000; // 2024-12-21 04:00 UTC = 12:00 CST (day)

    fn device(stage: &Stage) -> Dev {
        let node = Node::new(
            DeviceId::new("SL-1").unwrap(),
            DeviceKind::Streetlight,
            Encoding::Binary,
        );
        let mut d = Device::new(node, Streetlight::new(stage.clone()));
        d.node
            .settings
            .apply(&Config {
                config_id: 1,
                schedule: Some(LampSchedule {
                    lat_deg: 39.9042,
                    lon_deg: 116.4074,
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
        d
    }

    fn run(dev: &mut Dev, link: &mut Link, base_unix_ms: u64, from: u64, to: u64) {
        for s in (from..to).step_by(10) {
            dev.tick(
                Now {
                    mono_ms: s * 1000,
                    unix_ms: Some(base_unix_ms + s * 1000),
                },
                link,
            );
        }
    }

    fn ev(link: &mut Link) -> Vec<(AlarmKind, AlarmState)> {
        events(&link.take("SL-1"))
    }

    #[test]
    fn follows_the_astronomical_clock() {
        let stage = Stage::default();
        let mut dev = device(&stage);
        let mut link = Link::default();
        run(&mut dev, &mut link, DAY_UTC_MS, 0, 30);
        assert!(!dev.app.relay_on());
        // From 16:00 CST the lamp switches on at sunset (≈ 16:53) without any gateway.
        let four_pm = DAY_UTC_MS + 4 * 3600 * 1000;
        run(&mut dev, &mut link, four_pm, 30, 50 * 60);
        assert!(!dev.app.relay_on());
        run(&mut dev, &mut link, four_pm, 50 * 60, 60 * 60);
        assert!(dev.app.relay_on());
        assert!(ev(&mut link).is_empty());
    }

    #[test]
    fn lamp_failure_and_recovery() {
        let stage = Stage::default();
        let mut dev = device(&stage);
        let mut link = Link::default();
        run(&mut dev, &mut link, NOON_UTC_MS, 0, 30);
        assert!(dev.app.relay_on());
        stage.0.borrow_mut().burnt_out = true;
        run(&mut dev, &mut link, NOON_UTC_MS, 30, 60);
        assert_eq!(
            ev(&mut link),
            [(AlarmKind::LampFailure, AlarmState::Raised)]
        );
        stage.0.borrow_mut().burnt_out = false; // lamp replaced
        run(&mut dev, &mut link, NOON_UTC_MS, 60, 90);
        assert_eq!(
            ev(&mut link),
            [(AlarmKind::LampFailure, AlarmState::Cleared)]
        );
    }

    #[test]
    fn a_lamp_failure_is_kept_while_the_relay_is_open_and_clears_when_it_lights() {
        let stage = Stage::default();
        let mut dev = device(&stage);
        let mut link = Link::default();
        run(&mut dev, &mut link, NOON_UTC_MS, 0, 30);
        stage.0.borrow_mut().burnt_out = true;
        run(&mut dev, &mut link, NOON_UTC_MS, 30, 60);
        assert_eq!(
            ev(&mut link),
            [(AlarmKind::LampFailure, AlarmState::Raised)]
        );
        // Day: the schedule opens the relay. Nothing can be seen, nothing is cleared.
        run(&mut dev, &mut link, DAY_UTC_MS, 60, 3600);
        assert!(!dev.app.relay_on());
        assert!(ev(&mut link).is_empty(), "still failed, not recovered");
        // Repaired by day; at dusk (NOON_UTC_MS is 20:00 local) it lights and clears.
        stage.0.borrow_mut().burnt_out = false;
        run(&mut dev, &mut link, NOON_UTC_MS, 3600, 3700);
        assert!(dev.app.relay_on());
        assert_eq!(
            ev(&mut link),
            [(AlarmKind::LampFailure, AlarmState::Cleared)]
        );
    }

    #[test]
    fn welded_relay_by_day_is_a_day_burner_and_relay_failure() {
        let stage = Stage::default();
        stage.0.borrow_mut().welded = true;
        let mut dev = device(&stage);
        let mut link = Link::default();
        run(&mut dev, &mut link, DAY_UTC_MS, 0, 60);
        let mut e = ev(&mut link);
        e.sort_by_key(|(k, _)| *k);
        assert_eq!(
            e,
            [
                (AlarmKind::DayBurner, AlarmState::Raised),
                (AlarmKind::RelayFailure, AlarmState::Raised)
            ]
        );
    }

    #[test]
    fn supply_loss_is_not_a_lamp_failure() {
        let stage = Stage::default();
        let mut dev = device(&stage);
        let mut link = Link::default();
        run(&mut dev, &mut link, NOON_UTC_MS, 0, 30);
        stage.0.borrow_mut().no_supply = true;
        run(&mut dev, &mut link, NOON_UTC_MS, 30, 60);
        assert_eq!(ev(&mut link), [(AlarmKind::SupplyLoss, AlarmState::Raised)]);
    }

    #[test]
    fn leakage_and_cycling() {
        let stage = Stage::default();
        let mut dev = device(&stage);
        let mut link = Link::default();
        run(&mut dev, &mut link, NOON_UTC_MS, 0, 30);
        stage.0.borrow_mut().leakage_ma = 45.0;
        run(&mut dev, &mut link, NOON_UTC_MS, 30, 60);
        assert_eq!(ev(&mut link), [(AlarmKind::Leakage, AlarmState::Raised)]);
        stage.0.borrow_mut().leakage_ma = 0.0;
        stage.0.borrow_mut().flicker = true;
        run(&mut dev, &mut link, NOON_UTC_MS, 60, 200);
        let e = ev(&mut link);
        assert!(
            e.contains(&(AlarmKind::Leakage, AlarmState::Cleared)),
            "{e:?}"
        );
        assert!(
            e.contains(&(AlarmKind::Cycling, AlarmState::Raised)),
            "{e:?}"
        );
    }

    #[test]
    fn commands_override_and_expire() {
        let stage = Stage::default();
        let mut dev = device(&stage);
        let mut link = Link::default();
        run(&mut dev, &mut link, DAY_UTC_MS, 0, 20);
        link.command(&Command {
            cmd_id: 9,
            action: Action::LampOn {
                dim_pct: Some(40),
                expires_s: Some(60),
            },
        });
        run(&mut dev, &mut link, DAY_UTC_MS, 20, 30);
        assert!(dev.app.relay_on());
        assert_eq!(dev.app.dim_pct(), 40);
        let msgs = link.take("SL-1");
        let acks = acks(&msgs);
        assert!(acks.len() == 1 && acks[0].ok && acks[0].ref_id == 9);
        // Lit by day on operator request: not a day burner.
        assert!(events(&msgs).is_empty());
        run(&mut dev, &mut link, DAY_UTC_MS, 30, 100);
        assert!(!dev.app.relay_on(), "override expired, schedule says off");
        assert_eq!(dev.app.dim_pct(), 100);
        assert!(ev(&mut link).is_empty());
    }

    #[test]
    fn telemetry_reports_metering_on_change() {
        let stage = Stage::default();
        let mut dev = device(&stage);
        let mut link = Link::default();
        run(&mut dev, &mut link, NOON_UTC_MS, 0, 30);
        let msgs = link.take("SL-1");
        let t = telemetry(&msgs);
        let Some(TelemetryData::Streetlight(first)) = t.first() else {
            panic!("{msgs:?}")
        };
        assert!(first.lamp_on && (first.current_a - 0.45).abs() < 1e-3);
        assert_eq!(first.switch_count, 1);
        assert!(
            msgs.iter()
                .any(|m| matches!(m, Uplink::Status(s) if s.online))
        );
        // No change, no heartbeat yet: quiet.
        run(&mut dev, &mut link, NOON_UTC_MS, 30, 300);
        assert!(telemetry(&link.take("SL-1")).is_empty());
    }
}
