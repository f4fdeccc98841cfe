//! Battery life a configuration implies: run the real firmware of a battery-powered kind over
//! its simulated sensors for some simulated days, count the samples it actually takes and the
//! messages it actually sends, and project the life of a full cell from the charge they and
//! the time asleep used ([`BatteryModel`]).

use streetgate_firmware::platform::{LinkDown, Now, Transport};
use streetgate_firmware::settings::Settings;
use streetgate_protocols::codec::Encoding;
use streetgate_protocols::{Channel, Config, DeviceId, DeviceKind};

use crate::node::SimNode;
use crate::physics::BatteryModel;

/// The kinds that run on a battery (lamps and toilets are on mains).
pub const BATTERY_KINDS: [DeviceKind; 2] = [DeviceKind::Manhole, DeviceKind::Bin];

/// What to run. Unset fields take the kind's firmware default.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BatteryConfig {
    /// Minimum spacing of on-change telemetry, s (`report_interval_s`).
    pub report_interval_s: Option<u32>,
    /// Longest silence, s (`heartbeat_interval_s`).
    pub heartbeat_s: Option<u32>,
    /// Sampling period, ms (a firmware constant of each kind).
    pub sample_period_ms: Option<u64>,
}

/// What a run found for one kind.
#[derive(Debug, Clone, PartialEq)]
pub struct BatteryReport {
    /// Device kind.
    pub kind: DeviceKind,
    /// Report interval used, s.
    pub report_interval_s: u32,
    /// Heartbeat used, s.
    pub heartbeat_s: u32,
    /// Sampling period used, ms.
    pub sample_period_ms: u64,
    /// Simulated days run.
    pub days: f64,
    /// Samples the firmware took per day.
    pub samples_per_day: f64,
    /// Messages the firmware sent per day.
    pub messages_per_day: f64,
    /// Charge used per day, mAh.
    pub mah_per_day: f64,
    /// Projected life of a full cell, days.
    pub life_days: f64,
}

/// A link that is always up and takes everything (no broker).
struct Sink;

impl Transport for Sink {
    fn send(&mut self, _channel: Channel, _payload: &[u8]) -> Result<(), LinkDown> {
        Ok(())
    }
    fn poll_downlink(&mut self, _buf: &mut [u8]) -> Option<(Channel, usize)> {
        None
    }
}

/// Run one `kind` device with `config` for `days` simulated days, as fast as it goes. The
/// firmware is woken as often as the shortest of its sampling period, report interval and
/// heartbeat (a board sleeps between its timers); it samples only when its period is due.
/// Refused: a kind without a battery, zero days, a configuration the firmware rejects.
pub fn run(kind: DeviceKind, config: &BatteryConfig, days: u32) -> Result<BatteryReport, String> {
    if !BATTERY_KINDS.contains(&kind) {
        return Err(format!("{kind} nodes are mains-powered"));
    }
    if days == 0 {
        return Err("days: at least 1".to_owned());
    }
    let id = DeviceId::new("BATTERY-1").map_err(|e| format!("{e:?}"))?;
    let mut node = SimNode::new(id, kind, 7, Encoding::Binary);
    node.node_mut()
        .settings
        .apply(&Config {
            config_id: 0,
            report_interval_s: config.report_interval_s,
            heartbeat_interval_s: config.heartbeat_s,
            ..Config::default()
        })
        .map_err(|reason| format!("{kind}: configuration refused: {}", reason.as_str()))?;
    if let Some(ms) = config.sample_period_ms {
        if ms == 0 {
            return Err("sample period: more than 0".to_owned());
        }
        node.set_sample_period_ms(ms);
    }
    let Settings {
        report_interval_s,
        heartbeat_interval_s,
        ..
    } = node.node().settings;
    let sample_period_ms = node.sample_period_ms();
    let step_ms = sample_period_ms
        .min(u64::from(report_interval_s) * 1000)
        .min(u64::from(heartbeat_interval_s) * 1000)
        .max(1);

    let start_unix_ms = 1_734_775_200_000u64;
    let total_ms = u64::from(days) * 86_400_000;
    let mut t = 0;
    while t < total_ms {
        let now = Now {
            mono_ms: t,
            unix_ms: Some(start_unix_ms + t),
        };
        node.tick(now, &mut Sink);
        t += step_ms;
    }
    let used = node.battery.borrow().clone();
    let days = f64::from(days);
    #[allow(clippy::cast_precision_loss)]
    let per_day = |n: u64| n as f64 / days;
    let mah_per_day = used.used_mah / days;
    Ok(BatteryReport {
        kind,
        report_interval_s,
        heartbeat_s: heartbeat_interval_s,
        sample_period_ms,
        days,
        samples_per_day: per_day(node.samples_taken()),
        messages_per_day: per_day(node.messages_sent()),
        mah_per_day,
        // From a full cell of the same model.
        life_days: BatteryModel {
            used_mah: 0.0,
            ..used
        }
        .projected_days(mah_per_day),
    })
}

impl BatteryReport {
    /// The column heads of [`BatteryReport::render`].
    pub fn header() -> &'static str {
        "kind     report  heartbeat   sample   samples/day  msg/day  mAh/day   life, full cell"
    }

    /// One line for a terminal.
    pub fn render(&self) -> String {
        #[allow(clippy::cast_precision_loss)]
        let sample_s = self.sample_period_ms as f64 / 1000.0;
        format!(
            "{:<8} {:>5} s  {:>7} s  {:>6} s  {:>11.0}  {:>7.1}  {:>7.2}  {:>6.0} days ({:.1} years)",
            self.kind.as_str(),
            self.report_interval_s,
            self.heartbeat_s,
            sample_s,
            self.samples_per_day,
            self.messages_per_day,
            self.mah_per_day,
            self.life_days,
            self.life_days / 365.25
        )
    }
}
