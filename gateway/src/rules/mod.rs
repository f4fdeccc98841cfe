//! The rules engine: readings in, condition edges out. Pure code: no I/O, time is an argument.
//!
//! Per device it keeps, for every condition, whether it is active and since when it has been
//! over its threshold, so that a condition is raised only after holding for its minimum
//! duration (measured on reading times and completed by [`RulesEngine::on_tick`] when no new
//! reading arrives) and cleared past its hysteresis. Device-reported alarms and the engine's
//! own inferences drive the same per-(device, condition) state, so a condition is raised once
//! whichever source sees it first. A condition the device asserted with its own alarm is cleared
//! only by the device: its clear event, or a value it reports itself (for odour, its own moving
//! average `nh3_avg_mg_m3` / `h2s_avg_mg_m3`, which also rules over the gateway's average of the
//! raw samples whenever the device reports one). The whole state serialises ([`RulesSnapshot`]) so a restart
//! resumes durations, offline timers and lighting windows where they were.

mod validate;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use streetgate_protocols::{AlarmKind, DeviceId, DeviceKind, TelemetryData};

use crate::lighting::{LampView, LightingConfig, LightingHistory, LightingReport};
use crate::model::{
    Condition, ConditionEvent, Device, Reading, ReadingBody, Subject, ToiletClass, UnixMs,
};

/// Thresholds and timings, defaults from docs/domain.md; per-device overrides take precedence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesConfig {
    /// Minimum duration of a threshold condition before it is raised, s.
    pub hold_s: u32,
    /// Cover tilted, ° (vendors 5–15).
    pub tilt_alarm_deg: f32,
    /// Cover open or missing, °.
    pub tilt_open_deg: f32,
    /// Tilt hysteresis, °.
    pub tilt_hysteresis_deg: f32,
    /// Water high in the well, cm.
    pub water_high_cm: f32,
    /// Bin needs collection, %.
    pub full_pct: f32,
    /// Bin overflowing, %.
    pub overflow_pct: f32,
    /// Fill hysteresis, %.
    pub fill_hysteresis_pct: f32,
    /// Fire risk, °C.
    pub fire_temp_c: f32,
    /// Bin knocked over, °.
    pub tipped_deg: f32,
    /// NH3 limits for toilet classes 1, 2, 3, mg/m³ (GB/T 17217).
    pub nh3_limit_mg_m3: [f32; 3],
    /// H2S limit, mg/m³.
    pub h2s_limit_mg_m3: f32,
    /// Odour hysteresis, % of the limit.
    pub odour_hysteresis_pct: f32,
    /// Odour moving-average window, s.
    pub odour_window_s: u32,
    /// Leakage current of a lamp that is an electrical danger (urgent), mA: judged on the
    /// lamp's telemetry, so a lamp on a Modbus line (which sends no alarms) is judged too.
    pub leakage_limit_ma: f32,
    /// Low battery, %.
    pub battery_low_pct: u8,
    /// Expected report interval per kind (streetlight, manhole, bin, toilet), s; a device is
    /// offline after `offline_missed` of them without a message.
    pub report_interval_s: [u32; 4],
    /// Missed intervals before offline.
    pub offline_missed: u32,
    /// A last will (or offline status) makes a device offline only if it is not back within
    /// this long, s (a modem that reconnects at once, or a network blip that cut every device
    /// from the broker, is not a case). 0 = at once.
    pub offline_will_hold_s: u32,
    /// A fleet-wide outage: when at least this many devices ...
    pub outage_min_devices: u32,
    /// ... and at least this fraction of the devices heard from are waiting out a last will at
    /// once, the cause is the network or the broker, not each device. No device is judged
    /// offline while the outage lasts (at most `outage_max_s`); when it ends, every device still
    /// missing gets its hold again from then.
    pub outage_fraction: f32,
    /// Longest outage that suspends offline judgement, s; past it, devices still missing are
    /// judged one by one.
    pub outage_max_s: u32,
    /// Grid code of the one case a fleet-wide outage raises (subject `fleet`, type
    /// `device_offline`, urgent), routed like any case of that grid: the whole city, for the
    /// operations centre, by default.
    pub outage_grid: String,
    /// Lighting rate.
    pub lighting: LightingConfig,
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self {
            hold_s: 5,
            tilt_alarm_deg: 10.0,
            tilt_open_deg: 60.0,
            tilt_hysteresis_deg: 2.0,
            water_high_cm: 150.0,
            full_pct: 80.0,
            overflow_pct: 100.0,
            fill_hysteresis_pct: 10.0,
            fire_temp_c: 60.0,
            tipped_deg: 45.0,
            nh3_limit_mg_m3: [0.3, 1.0, 3.0],
            h2s_limit_mg_m3: 0.01,
            odour_hysteresis_pct: 20.0,
            odour_window_s: 600,
            leakage_limit_ma: 30.0,
            battery_low_pct: 20,
            report_interval_s: [900, 43_200, 43_200, 3_600],
            offline_missed: 3,
            offline_will_hold_s: 120,
            outage_min_devices: 10,
            outage_fraction: 0.2,
            outage_max_s: 3600,
            outage_grid: "city".to_owned(),
            lighting: LightingConfig::default(),
        }
    }
}

const fn kind_index(kind: DeviceKind) -> usize {
    match kind {
        DeviceKind::Streetlight => 0,
        DeviceKind::Manhole => 1,
        DeviceKind::Bin => 2,
        DeviceKind::Toilet => 3,
    }
}

/// A threshold check: over at `raise`, back under below `clear`.
#[derive(Debug, Clone, Copy)]
struct Check {
    condition: Condition,
    value: f64,
    raise: f64,
    clear: f64,
    hold_ms: i64,
    urgent: bool,
    /// The value is the device's own judgement of what its alarm is about (its measurement, or
    /// the moving average it reports), as opposed to the gateway's own moving average: only such
    /// a value may clear a condition the device asserted.
    device_value: bool,
}

/// One condition's state for one device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConditionState {
    /// Raised and not yet cleared.
    pub active: bool,
    /// Over the threshold since (pending hold), when not active.
    pub over_since_ms: Option<UnixMs>,
    /// Minimum duration that applies to the pending hold.
    pub hold_ms: i64,
    /// Last deciding value.
    pub value: Option<f64>,
    /// Urgency of the pending or active condition.
    pub urgent: bool,
    /// Raised (or confirmed) by the device's own alarm: cleared only by the device's clear
    /// event or by a value the device itself reports (never by the gateway's own average).
    #[serde(default)]
    pub asserted_by_device: bool,
}

/// What the engine remembers about one device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceState {
    /// Last message of any kind.
    pub last_seen_ms: Option<UnixMs>,
    /// Conditions by key.
    pub conditions: BTreeMap<String, ConditionState>,
    /// Odour samples in the moving-average window: (time, NH3, H2S).
    pub odour: VecDeque<(UnixMs, f64, f64)>,
    /// Latest lamp state: relay closed, current A.
    pub lamp: Option<(bool, f64)>,
    /// When its last will (or offline status) arrived, until a message shows it alive again.
    #[serde(default)]
    pub will_ms: Option<UnixMs>,
    /// Its birth: the first message that was not a last will. Until then a last will is not
    /// judged (the device's first connection never completed: a start-up storm, not a device
    /// gone); silence still is, once the start-up grace has passed.
    #[serde(default)]
    pub born_ms: Option<UnixMs>,
    /// (sequence number, device time) of the newest reading that drove its conditions.
    #[serde(default)]
    pub applied: Option<(u32, UnixMs)>,
}

/// A message the device stamped this long before its last will arrived is a late delivery
/// of something sent before the link died, not a sign of life (the broker delivers each topic
/// separately, so an old telemetry can overtake the will, or trail it). Allows for clock skew.
const STALE_BEFORE_WILL_MS: i64 = 30_000;

impl DeviceState {
    fn is_active(&self, c: Condition) -> bool {
        self.conditions.get(&c.key()).is_some_and(|s| s.active)
    }
}

/// Serialisable engine state, persisted by the store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RulesSnapshot {
    /// Per-device state.
    pub devices: BTreeMap<String, DeviceState>,
    /// Road segments currently below target.
    pub dark_segments: BTreeSet<String>,
    /// Lighting-rate history (lamp-seconds per segment and day).
    pub lighting: LightingHistory,
    /// Time of the last tick.
    pub last_tick_ms: Option<UnixMs>,
    /// First tick at which a lamp had been heard from (start of the lighting grace period).
    #[serde(default)]
    pub first_tick_ms: Option<UnixMs>,
    /// The fleet-wide outage in progress, if any.
    #[serde(default)]
    pub outage: Option<Outage>,
    /// Fleet-wide outages seen since the state was created.
    #[serde(default)]
    pub outages: u64,
}

/// A fleet-wide outage: many devices' last wills pending at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outage {
    /// When it was recognised.
    pub since_ms: UnixMs,
    /// Most devices waiting out a last will at one tick.
    pub peak_devices: u64,
    /// Devices waiting out a last will at the latest tick.
    pub devices: u64,
    /// It lasted longer than `outage_max_s`: devices are judged one by one again until it is
    /// over.
    #[serde(default)]
    pub expired: bool,
}

/// Devices named in a fleet-wide outage's case (the rest are counted in its detail).
const OUTAGE_DEVICES_LISTED: usize = 200;
/// Grids named in a fleet-wide outage's detail.
const OUTAGE_GRIDS_NAMED: usize = 5;

/// A fleet-wide outage began or ended at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutageEdge {
    Started { devices: u64, heard: u64 },
    Ended { outage: Outage, still_missing: u64 },
}

/// The rules engine.
#[derive(Debug, Default)]
pub struct RulesEngine {
    config: RulesConfig,
    state: RulesSnapshot,
    /// When this run of the engine started (its first reading or tick): the start of every
    /// device's start-up grace. Not persisted: a restarted gateway grants the grace again.
    started_ms: Option<UnixMs>,
}

fn event(
    device: &Device,
    condition: Condition,
    raised: bool,
    at_ms: UnixMs,
    value: Option<f64>,
    urgent: bool,
    detail: String,
) -> ConditionEvent {
    ConditionEvent {
        subject: Subject::Device(device.id.clone()),
        condition,
        raised,
        at_ms,
        grid: device.grid.clone(),
        value,
        detail,
        devices: vec![device.id.clone()],
        urgent,
    }
}

impl RulesEngine {
    /// An engine with no history.
    pub fn new(config: RulesConfig) -> Self {
        Self {
            config,
            state: RulesSnapshot::default(),
            started_ms: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RulesConfig {
        &self.config
    }

    /// The state to persist.
    pub fn snapshot(&self) -> RulesSnapshot {
        self.state.clone()
    }

    /// Resume from persisted state.
    pub fn restore(&mut self, snapshot: RulesSnapshot) {
        self.state = snapshot;
    }

    /// Conditions active for a device.
    pub fn active_conditions(&self, id: &DeviceId) -> Vec<Condition> {
        self.state
            .devices
            .get(id.as_str())
            .map(|d| {
                d.conditions
                    .iter()
                    .filter(|(_, s)| s.active)
                    .filter_map(|(k, _)| k.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// When this run started (its first reading or tick), the start of the start-up grace.
    pub fn started_ms(&self) -> Option<UnixMs> {
        self.started_ms
    }

    fn hold_ms(&self) -> i64 {
        i64::from(self.config.hold_s) * 1000
    }

    /// Expected report interval of a device, ms.
    pub fn report_interval_ms(&self, device: &Device) -> i64 {
        let s = device
            .overrides
            .report_interval_s
            .unwrap_or(self.config.report_interval_s[kind_index(device.kind)]);
        i64::from(s) * 1000
    }

    fn checks(
        &self,
        device: &Device,
        data: &TelemetryData,
        st: &mut DeviceState,
        now: UnixMs,
        device_time: UnixMs,
    ) -> Vec<Check> {
        let c = &self.config;
        let o = &device.overrides;
        let hold = self.hold_ms();
        let f = |v: f32| f64::from(v);
        let mut checks = Vec::new();
        let mut over =
            |condition, value: f64, raise: f64, hysteresis: f64, hold_ms: i64, urgent| {
                checks.push(Check {
                    condition,
                    value,
                    raise,
                    clear: raise - hysteresis,
                    hold_ms,
                    urgent,
                    device_value: true,
                });
            };
        // Conditions judged on the gateway's own moving average in this reading.
        let mut gateway_averaged: Vec<Condition> = Vec::new();
        let battery_low = f64::from(o.battery_low_pct.unwrap_or(c.battery_low_pct));
        match data {
            TelemetryData::Manhole(t) => {
                let tilt = f(t.tilt_deg);
                let hyst = f(c.tilt_hysteresis_deg);
                over(
                    Condition::Alarm(AlarmKind::CoverTilted),
                    tilt,
                    f(o.tilt_alarm_deg.unwrap_or(c.tilt_alarm_deg)),
                    hyst,
                    hold,
                    false,
                );
                over(
                    Condition::Alarm(AlarmKind::CoverOpen),
                    tilt,
                    f(o.tilt_open_deg.unwrap_or(c.tilt_open_deg)),
                    hyst,
                    hold,
                    true,
                );
                if let Some(w) = t.water_level_cm {
                    over(
                        Condition::Alarm(AlarmKind::WaterHigh),
                        f(w),
                        f(o.water_high_cm.unwrap_or(c.water_high_cm)),
                        5.0,
                        hold,
                        true,
                    );
                }
                // Battery is "over" when below the threshold: compare the shortfall.
                over(
                    Condition::Alarm(AlarmKind::LowBattery),
                    -f64::from(t.battery_pct),
                    -(battery_low - 0.5),
                    5.0,
                    0,
                    false,
                );
            }
            TelemetryData::Bin(t) => {
                let fill = f(t.fill_pct);
                let hyst = f(c.fill_hysteresis_pct);
                over(
                    Condition::Alarm(AlarmKind::BinFull),
                    fill,
                    f(o.full_pct.unwrap_or(c.full_pct)),
                    hyst,
                    hold,
                    false,
                );
                over(
                    Condition::Alarm(AlarmKind::BinOverflow),
                    fill,
                    f(o.overflow_pct.unwrap_or(c.overflow_pct)),
                    hyst,
                    hold,
                    true,
                );
                over(
                    Condition::Alarm(AlarmKind::FireRisk),
                    f(t.temperature_c),
                    f(o.fire_temp_c.unwrap_or(c.fire_temp_c)),
                    5.0,
                    hold,
                    true,
                );
                if let Some(tilt) = t.tilt_deg {
                    over(
                        Condition::Alarm(AlarmKind::BinTipped),
                        f(tilt),
                        f(c.tipped_deg),
                        10.0,
                        hold,
                        false,
                    );
                }
                over(
                    Condition::Alarm(AlarmKind::LowBattery),
                    -f64::from(t.battery_pct),
                    -(battery_low - 0.5),
                    5.0,
                    0,
                    false,
                );
            }
            TelemetryData::Toilet(t) => {
                // The device's own moving average rules when it reports one; otherwise the
                // gateway averages the device's samples over `odour_window_s`.
                let window = i64::from(c.odour_window_s) * 1000;
                st.odour.push_back((now, f(t.nh3_mg_m3), f(t.h2s_mg_m3)));
                while st
                    .odour
                    .front()
                    .is_some_and(|(ts, _, _)| now - ts >= window)
                {
                    st.odour.pop_front();
                }
                #[allow(clippy::cast_precision_loss)] // a window holds few samples
                let n = st.odour.len().max(1) as f64;
                let nh3 = match t.nh3_avg_mg_m3 {
                    Some(avg) => f(avg),
                    None => {
                        gateway_averaged.push(Condition::Alarm(AlarmKind::OdourNh3));
                        st.odour.iter().map(|s| s.1).sum::<f64>() / n
                    }
                };
                let h2s = match t.h2s_avg_mg_m3 {
                    Some(avg) => f(avg),
                    None => {
                        gateway_averaged.push(Condition::Alarm(AlarmKind::OdourH2s));
                        st.odour.iter().map(|s| s.2).sum::<f64>() / n
                    }
                };
                let class = match device.toilet_class {
                    Some(ToiletClass::Class1) => 0,
                    Some(ToiletClass::Class3) => 2,
                    _ => 1,
                };
                let nh3_limit = f(o.nh3_limit_mg_m3.unwrap_or(c.nh3_limit_mg_m3[class]));
                let h2s_limit = f(o.h2s_limit_mg_m3.unwrap_or(c.h2s_limit_mg_m3));
                let hyst = f(c.odour_hysteresis_pct) / 100.0;
                over(
                    Condition::Alarm(AlarmKind::OdourNh3),
                    nh3,
                    nh3_limit,
                    nh3_limit * hyst,
                    hold,
                    false,
                );
                over(
                    Condition::Alarm(AlarmKind::OdourH2s),
                    h2s,
                    h2s_limit,
                    h2s_limit * hyst,
                    hold,
                    false,
                );
                if let Some(b) = t.battery_pct {
                    over(
                        Condition::Alarm(AlarmKind::LowBattery),
                        -f64::from(b),
                        -(battery_low - 0.5),
                        5.0,
                        0,
                        false,
                    );
                }
            }
            TelemetryData::Streetlight(t) => {
                st.lamp = Some((t.lamp_on, f(t.current_a)));
                let min_current = f(o
                    .min_current_a
                    .unwrap_or(self.config.lighting.min_current_a));
                let supply_ok = f(t.voltage_v) >= 100.0;
                // A lamp failure shows only while the relay is closed and the supply is there:
                // otherwise it keeps its state (a lamp out at night is still out at noon, when
                // the schedule has opened the relay).
                if t.lamp_on && supply_ok {
                    let failed = f(t.current_a) < min_current;
                    over(
                        Condition::Alarm(AlarmKind::LampFailure),
                        if failed { 1.0 } else { 0.0 },
                        1.0,
                        0.5,
                        hold,
                        false,
                    );
                }
                let lit = f(t.current_a) >= min_current;
                // The device's own clock decides day or night when it has one: what matters is
                // when the lamp was lit, not when the message arrived.
                let should = self.config.lighting.should_be_on(device, device_time);
                let day_burning = lit && should == Some(false);
                over(
                    Condition::Alarm(AlarmKind::DayBurner),
                    if day_burning { 1.0 } else { 0.0 },
                    1.0,
                    0.5,
                    hold,
                    false,
                );
                over(
                    Condition::Alarm(AlarmKind::SupplyLoss),
                    if supply_ok { 0.0 } else { 1.0 },
                    1.0,
                    0.5,
                    hold,
                    false,
                );
                let limit = f(c.leakage_limit_ma);
                over(
                    Condition::Alarm(AlarmKind::Leakage),
                    f(t.leakage_ma),
                    limit,
                    (limit * 0.2).min(5.0),
                    hold,
                    true,
                );
            }
        }
        for check in &mut checks {
            if gateway_averaged.contains(&check.condition) {
                check.device_value = false;
            }
        }
        checks
    }

    fn device_state(&mut self, id: &DeviceId) -> &mut DeviceState {
        self.state
            .devices
            .entry(id.as_str().to_owned())
            .or_default()
    }

    /// Apply one threshold check to a device's condition state.
    fn apply_check(
        device: &Device,
        st: &mut DeviceState,
        check: Check,
        now: UnixMs,
        out: &mut Vec<ConditionEvent>,
    ) {
        let cs = st.conditions.entry(check.condition.key()).or_default();
        cs.value = Some(check.value);
        if cs.active {
            // The gateway's own average of a different quantity never overrules the device.
            let may_clear = check.device_value || !cs.asserted_by_device;
            if check.value < check.clear && may_clear {
                *cs = ConditionState {
                    value: Some(check.value),
                    ..ConditionState::default()
                };
                out.push(event(
                    device,
                    check.condition,
                    false,
                    now,
                    Some(check.value),
                    check.urgent,
                    format!("{} back to {:.2}", check.condition, check.value),
                ));
            }
            return;
        }
        if check.value < check.raise {
            cs.over_since_ms = None;
            return;
        }
        let since = *cs.over_since_ms.get_or_insert(now);
        cs.hold_ms = check.hold_ms;
        cs.urgent = check.urgent;
        if now - since >= check.hold_ms {
            cs.active = true;
            cs.over_since_ms = None;
            out.push(event(
                device,
                check.condition,
                true,
                now,
                Some(check.value),
                check.urgent,
                format!(
                    "{} at {:.2} (limit {:.2}) for {} s",
                    check.condition,
                    check.value,
                    check.raise,
                    (now - since) / 1000
                ),
            ));
        }
    }

    #[allow(clippy::too_many_arguments)] // one edge's fields, kept flat at the call sites
    fn set(
        device: &Device,
        st: &mut DeviceState,
        condition: Condition,
        active: bool,
        now: UnixMs,
        value: Option<f64>,
        urgent: bool,
        detail: &str,
        out: &mut Vec<ConditionEvent>,
    ) {
        let cs = st.conditions.entry(condition.key()).or_default();
        if cs.active == active {
            return;
        }
        *cs = ConditionState {
            active,
            value,
            urgent,
            ..ConditionState::default()
        };
        out.push(event(
            device,
            condition,
            active,
            now,
            value,
            urgent,
            detail.to_owned(),
        ));
    }

    /// Evaluate one reading of a registered device.
    pub fn on_reading(&mut self, device: &Device, reading: &Reading) -> Vec<ConditionEvent> {
        let now = reading.received_ms;
        self.started_ms.get_or_insert(now);
        let mut out = Vec::new();
        let mut st = std::mem::take(self.device_state(&device.id));
        st.last_seen_ms = Some(st.last_seen_ms.map_or(now, |t| t.max(now)));
        match &reading.body {
            // A last will from a device never born: its first connection did not complete (a
            // start-up or reconnect storm: the broker gave up on a half-open connection the
            // device is already retrying). Not a sign of a device gone; if it stays silent, the
            // silence rule judges it once its start-up grace has passed.
            ReadingBody::Status { online: false, .. } if st.born_ms.is_none() => {}
            ReadingBody::Status { online: false, .. } if self.config.offline_will_hold_s > 0 => {
                // Offline once the hold passes without another message (see `on_tick`).
                st.will_ms = Some(now);
                let cs = st.conditions.entry(Condition::Offline.key()).or_default();
                if !cs.active && cs.over_since_ms.is_none() {
                    cs.over_since_ms = Some(now);
                    cs.hold_ms = i64::from(self.config.offline_will_hold_s) * 1000;
                }
            }
            ReadingBody::Status { online: false, .. } => {
                st.will_ms = Some(now);
                Self::set(
                    device,
                    &mut st,
                    Condition::Offline,
                    true,
                    now,
                    None,
                    false,
                    "last will / offline status",
                    &mut out,
                );
            }
            _ if st.will_ms.is_some_and(|will| {
                !matches!(reading.body, ReadingBody::Status { online: true, .. })
                    && reading
                        .device_ts_ms
                        .is_some_and(|ts| ts + STALE_BEFORE_WILL_MS < will)
            }) =>
            {
                // Sent before the will: no sign of life; its content still counts below.
            }
            _ => {
                st.born_ms.get_or_insert(now);
                st.will_ms = None;
                if let Some(cs) = st.conditions.get_mut(&Condition::Offline.key()) {
                    cs.over_since_ms = None;
                }
                Self::set(
                    device,
                    &mut st,
                    Condition::Offline,
                    false,
                    now,
                    None,
                    false,
                    "back online",
                    &mut out,
                );
            }
        }
        // A reading older than one already applied (lower sequence number and earlier device
        // time: the same boot) is history, not news: a backlog flushed after a reconnection
        // reaches the gateway topic by topic, so an old telemetry can arrive after a newer
        // alarm, and must not clear (or raise) what the newer one said.
        let stamp = reading.device_ts_ms.map(|ts| (reading.seq, ts));
        let stale = stamp
            .zip(st.applied)
            .is_some_and(|((seq, ts), (seq0, ts0))| seq < seq0 && ts < ts0);
        if stale {
            *self.device_state(&device.id) = st;
            return out;
        }
        if stamp.is_some() && !matches!(reading.body, ReadingBody::Status { .. }) {
            st.applied = stamp;
        }
        match &reading.body {
            ReadingBody::Telemetry(data) => {
                let device_time = reading.device_ts_ms.unwrap_or(now);
                for check in self.checks(device, data, &mut st, now, device_time) {
                    Self::apply_check(device, &mut st, check, now, &mut out);
                }
            }
            ReadingBody::Alarm {
                alarm,
                raised,
                value,
            } => {
                let urgent = matches!(
                    alarm,
                    AlarmKind::CoverOpen
                        | AlarmKind::BinOverflow
                        | AlarmKind::FireRisk
                        | AlarmKind::WaterHigh
                        | AlarmKind::Leakage
                );
                let detail = format!(
                    "reported by the device: {alarm} {}",
                    if *raised { "raised" } else { "cleared" }
                );
                Self::set(
                    device,
                    &mut st,
                    Condition::Alarm(*alarm),
                    *raised,
                    now,
                    value.map(f64::from),
                    urgent,
                    &detail,
                    &mut out,
                );
                if *raised {
                    if let Some(cs) = st.conditions.get_mut(&Condition::Alarm(*alarm).key()) {
                        cs.asserted_by_device = true;
                    }
                }
            }
            ReadingBody::Status {
                battery_pct: Some(b),
                ..
            } if device.kind != DeviceKind::Streetlight => {
                let low = f64::from(
                    device
                        .overrides
                        .battery_low_pct
                        .unwrap_or(self.config.battery_low_pct),
                );
                let check = Check {
                    condition: Condition::Alarm(AlarmKind::LowBattery),
                    value: -f64::from(*b),
                    raise: -(low - 0.5),
                    clear: -(low + 4.5),
                    hold_ms: 0,
                    urgent: false,
                    device_value: true,
                };
                Self::apply_check(device, &mut st, check, now, &mut out);
            }
            ReadingBody::Status { .. } | ReadingBody::Ack { .. } => {}
        }
        *self.device_state(&device.id) = st;
        out
    }

    /// Recognise a fleet-wide outage (many last wills pending at once) and end it: whether
    /// offline judgement is suspended, and the outage's start or end at this tick.
    fn outage_tick(&mut self, now: UnixMs) -> (bool, Option<OutageEdge>) {
        let key = Condition::Offline.key();
        let (mut heard, mut pending) = (0u64, 0u64);
        for st in self.state.devices.values() {
            if st.last_seen_ms.is_none() {
                continue;
            }
            heard += 1;
            if st
                .conditions
                .get(&key)
                .is_some_and(|c| !c.active && c.over_since_ms.is_some())
            {
                pending += 1;
            }
        }
        #[allow(clippy::cast_precision_loss)]
        let wide = pending >= u64::from(self.config.outage_min_devices.max(1))
            && pending as f64 >= heard as f64 * f64::from(self.config.outage_fraction);
        let max_ms = i64::from(self.config.outage_max_s) * 1000;
        match (&mut self.state.outage, wide) {
            (None, false) => (false, None),
            (None, true) => {
                tracing::warn!(
                    devices = pending,
                    heard,
                    "fleet-wide outage: {pending} of {heard} devices lost their connection at once; \
                     offline judgement suspended until they are back"
                );
                self.state.outages += 1;
                self.state.outage = Some(Outage {
                    since_ms: now,
                    peak_devices: pending,
                    devices: pending,
                    expired: false,
                });
                (
                    true,
                    Some(OutageEdge::Started {
                        devices: pending,
                        heard,
                    }),
                )
            }
            (Some(o), true) => {
                o.devices = pending;
                o.peak_devices = o.peak_devices.max(pending);
                if !o.expired && now - o.since_ms > max_ms {
                    o.expired = true;
                    tracing::warn!(
                        devices = pending,
                        "fleet-wide outage longer than rules.outage_max_s ({} s): judging the \
                         {pending} missing devices one by one",
                        self.config.outage_max_s
                    );
                }
                (!o.expired, None)
            }
            (Some(o), false) => {
                let o = *o;
                self.state.outage = None;
                tracing::info!(
                    peak = o.peak_devices,
                    still_missing = pending,
                    lasted_s = (now - o.since_ms) / 1000,
                    "fleet-wide outage over"
                );
                if !o.expired {
                    // The devices still missing get their whole hold from now.
                    for st in self.state.devices.values_mut() {
                        if let Some(cs) = st.conditions.get_mut(&key) {
                            if let Some(since) = cs.over_since_ms.as_mut() {
                                *since = (*since).max(now);
                            }
                        }
                    }
                }
                (
                    false,
                    Some(OutageEdge::Ended {
                        outage: o,
                        still_missing: pending,
                    }),
                )
            }
        }
    }

    /// The one condition event of a fleet-wide outage's start or end: a case for the whole
    /// fleet (one notification), not one per device.
    fn outage_event(
        &self,
        edge: OutageEdge,
        now: UnixMs,
        cut_off: &mut [(DeviceId, String)],
    ) -> ConditionEvent {
        let (raised, detail, devices) = match edge {
            OutageEdge::Started { devices, heard } => {
                let mut per_grid: BTreeMap<&str, u64> = BTreeMap::new();
                for (_, grid) in cut_off.iter() {
                    *per_grid.entry(grid.as_str()).or_default() += 1;
                }
                let mut grids: Vec<(&str, u64)> = per_grid.into_iter().collect();
                grids.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
                let shown: Vec<String> = grids
                    .iter()
                    .take(OUTAGE_GRIDS_NAMED)
                    .map(|(g, n)| format!("{g} {n}"))
                    .collect();
                let more = grids.len().saturating_sub(OUTAGE_GRIDS_NAMED);
                let detail = format!(
                    "fleet-wide outage: {devices} of {heard} devices lost their connection at \
                     once (grids: {}{}); the network or the broker, not each device: no device \
                     is judged offline until they are back (at most {} s)",
                    shown.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    },
                    self.config.outage_max_s
                );
                cut_off.sort();
                let listed = cut_off
                    .iter()
                    .take(OUTAGE_DEVICES_LISTED)
                    .map(|(id, _)| id.clone())
                    .collect();
                (true, detail, listed)
            }
            OutageEdge::Ended {
                outage,
                still_missing,
            } => (
                false,
                format!(
                    "fleet-wide outage over after {} s (at most {} devices cut off); {} still \
                     missing, judged one by one",
                    (now - outage.since_ms) / 1000,
                    outage.peak_devices,
                    still_missing
                ),
                Vec::new(),
            ),
        };
        ConditionEvent {
            subject: Subject::Fleet,
            condition: Condition::Offline,
            raised,
            at_ms: now,
            grid: self.config.outage_grid.clone(),
            value: None,
            detail,
            devices,
            urgent: raised,
        }
    }

    /// The fleet-wide outage in progress and how many were seen.
    pub fn outage(&self) -> (Option<Outage>, u64) {
        (self.state.outage, self.state.outages)
    }

    /// Time passes: offline timers, holds completing without new readings, segment lighting.
    pub fn on_tick<'a>(
        &mut self,
        now: UnixMs,
        devices: impl IntoIterator<Item = &'a Device>,
    ) -> Vec<ConditionEvent> {
        let mut out = Vec::new();
        let dt = self
            .state
            .last_tick_ms
            .map_or(0, |t| (now - t).clamp(0, 3_600_000));
        self.state.last_tick_ms = Some(now);
        let started = *self.started_ms.get_or_insert(now);
        let (suspended, edge) = self.outage_tick(now);
        let offline_key = Condition::Offline.key();
        let outage_began = matches!(edge, Some(OutageEdge::Started { .. }));
        let mut cut_off = Vec::new();
        let mut lamps = Vec::new();
        let mut lamp_heard = false;
        for device in devices {
            let interval = self.report_interval_ms(device);
            let missed = i64::from(self.config.offline_missed);
            let st = self
                .state
                .devices
                .entry(device.id.as_str().to_owned())
                .or_default();
            if outage_began
                && st
                    .conditions
                    .get(&offline_key)
                    .is_some_and(|c| !c.active && c.over_since_ms.is_some())
            {
                cut_off.push((device.id.clone(), device.grid.clone()));
            }
            // A device never heard from is not offline (not yet installed), only dark if a lamp.
            // Start-up grace: silence is counted from this run's start at the earliest, so no
            // device is judged offline before it has had `offline_missed` report intervals to
            // speak since the gateway started (a restart after downtime, with the last messages
            // long ago in the persisted state, is not a storm of offline cases).
            if let Some(seen) = st.last_seen_ms.filter(|_| !suspended) {
                let silent_since = seen.max(started);
                if now - silent_since > interval * missed && !st.is_active(Condition::Offline) {
                    let detail = format!(
                        "no message for {} s ({} report intervals)",
                        (now - seen) / 1000,
                        missed
                    );
                    Self::set(
                        device,
                        st,
                        Condition::Offline,
                        true,
                        now,
                        None,
                        false,
                        &detail,
                        &mut out,
                    );
                }
            }
            for (key, cs) in &mut st.conditions {
                if suspended && *key == offline_key {
                    continue;
                }
                if let Some(since) = cs.over_since_ms {
                    if !cs.active && now - since >= cs.hold_ms {
                        let Ok(condition) = key.parse::<Condition>() else {
                            continue;
                        };
                        cs.active = true;
                        cs.over_since_ms = None;
                        out.push(event(
                            device,
                            condition,
                            true,
                            now,
                            cs.value,
                            cs.urgent,
                            format!("{condition} held for {} s", (now - since) / 1000),
                        ));
                    }
                }
            }
            if device.kind == DeviceKind::Streetlight {
                lamp_heard |= self
                    .state
                    .devices
                    .get(device.id.as_str())
                    .is_some_and(|s| s.last_seen_ms.is_some());
                lamps.push(self.lamp_view(device, now));
            }
        }
        if let Some(edge) = edge {
            out.push(self.outage_event(edge, now, &mut cut_off));
        }
        self.state.lighting.accumulate(&lamps, now, dt);
        let report = LightingReport::compute(&lamps, &self.config.lighting);
        // The grace starts when the first lamp is heard from (not at the gateway's start, which
        // may precede its devices by a long time, e.g. a simulated clock's lead-in).
        let first = if lamp_heard {
            Some(*self.state.first_tick_ms.get_or_insert(now))
        } else {
            self.state.first_tick_ms
        };
        let judging = first.is_some_and(|first| {
            now - first >= i64::from(self.config.lighting.startup_grace_s) * 1000
        });
        for seg in &report.segments {
            // One cause, one case: a lamp dark because its controller is offline (or waiting
            // out its last will; a Modbus unit that does not identify is reported so) has its
            // own device_offline case. It still counts as dark in the rate, but a segment case
            // is raised, and lists lamps, only for the lamps with no such explanation.
            let unexplained: Vec<DeviceId> = seg
                .dark
                .iter()
                .filter(|id| {
                    !self
                        .state
                        .devices
                        .get(id.as_str())
                        .is_some_and(|s| s.is_active(Condition::Offline) || s.will_ms.is_some())
                })
                .cloned()
                .collect();
            let dark = seg.below_target && judging && !unexplained.is_empty();
            let was = self.state.dark_segments.contains(&seg.segment);
            if dark == was {
                continue;
            }
            if dark {
                self.state.dark_segments.insert(seg.segment.clone());
            } else {
                self.state.dark_segments.remove(&seg.segment);
            }
            out.push(ConditionEvent {
                subject: Subject::Segment(seg.segment.clone()),
                condition: Condition::SegmentDark,
                raised: dark,
                at_ms: now,
                grid: seg.grid.clone(),
                value: Some(seg.rate),
                detail: format!(
                    "lighting rate {:.1} % ({} of {} lamps lit), target {:.0} %",
                    seg.rate * 100.0,
                    seg.lit,
                    seg.expected,
                    seg.target * 100.0
                ),
                devices: unexplained,
                urgent: dark,
            });
        }
        // Segments that left switch-on hours entirely clear too.
        let evaluated: BTreeSet<&String> = report.segments.iter().map(|s| &s.segment).collect();
        let stale: Vec<String> = self
            .state
            .dark_segments
            .iter()
            .filter(|s| !evaluated.contains(s))
            .cloned()
            .collect();
        for segment in stale {
            self.state.dark_segments.remove(&segment);
            let grid = lamps
                .iter()
                .find(|l| l.segment.as_deref() == Some(segment.as_str()))
                .map(|l| l.grid.clone())
                .unwrap_or_default();
            out.push(ConditionEvent {
                subject: Subject::Segment(segment),
                condition: Condition::SegmentDark,
                raised: false,
                at_ms: now,
                grid,
                value: None,
                detail: "switch-on hours ended".into(),
                devices: Vec::new(),
                urgent: false,
            });
        }
        out
    }

    fn lamp_view(&self, device: &Device, now: UnixMs) -> LampView {
        let st = self.state.devices.get(device.id.as_str());
        let should_be_on = self
            .config
            .lighting
            .should_be_on(device, now)
            .unwrap_or(false);
        let min_current = f64::from(
            device
                .overrides
                .min_current_a
                .unwrap_or(self.config.lighting.min_current_a),
        );
        let lit = st.is_some_and(|s| {
            !s.is_active(Condition::Offline)
                && !s.is_active(Condition::Alarm(AlarmKind::LampFailure))
                && s.lamp
                    .is_some_and(|(on, current)| on && current >= min_current)
        });
        LampView {
            device: device.id.clone(),
            segment: device.road_segment.clone(),
            grid: device.grid.clone(),
            road_class: device.road_class,
            should_be_on,
            lit,
        }
    }

    /// The lighting rate now, for the API.
    pub fn lighting_now<'a>(
        &self,
        now: UnixMs,
        devices: impl IntoIterator<Item = &'a Device>,
    ) -> LightingReport {
        let lamps: Vec<LampView> = devices
            .into_iter()
            .filter(|d| d.kind == DeviceKind::Streetlight)
            .map(|d| self.lamp_view(d, now))
            .collect();
        LightingReport::compute(&lamps, &self.config.lighting)
    }

    /// Lighting history (lamp-seconds lit / expected per segment and day).
    pub fn lighting_history(&self) -> &LightingHistory {
        &self.state.lighting
    }

    /// Ids of devices the engine has state for.
    pub fn known_devices(&self) -> HashMap<String, Option<UnixMs>> {
        self.state
            .devices
            .iter()
            .map(|(k, v)| (k.clone(), v.last_seen_ms))
            .collect()
    }
}

#[cfg(test)]
mod tests;
