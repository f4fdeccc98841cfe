//! Battery life a configuration implies: run the real firmware of a battery-powered kind over
//! its simulated sensors for some simulated days, count what it samples and sends, and project
//! the cell's life from the charge used.

use streetgate_firmware::platform::{LinkDown, Now, Transport};
use streetgate_protocols::codec::Encoding;
use streetgate_protocols::{Channel, Config, DeviceId, DeviceKind};

use crate::node::SimNode;

/// What a run found for one kind.
#[derive(Debug, Clone, PartialEq)]
pub struct BatteryReport {
    /// Device kind.
    pub kind: DeviceKind,
    /// Heartbeat used, s (the firmware default when not set).
    pub heartbeat_s: Option<u32>,
    /// Simulated days run.
    pub days: f64,
    /// Messages the firmware sent per day.
    pub messages_per_day: f64,
    /// Charge used per day, mAh.
    pub mah_per_day: f64,
    /// Projected life of a full cell, days.
    pub life_days: f64,
}

/// A link that is always up and takes everything.
struct Sink;

impl Transport for Sink {
    fn send(&mut self, _channel: Channel, _payload: &[u8]) -> Result<(), LinkDown> {
        Ok(())
    }
    fn poll_downlink(&mut self, _buf: &mut [u8]) -> Option<(Channel, usize)> {
        None
    }
}

/// Run one `kind` device for `days` simulated days, ticking every `tick_s` seconds.
pub fn run(kind: DeviceKind, heartbeat_s: Option<u32>, days: u32, tick_s: u64) -> BatteryReport {
    let id = DeviceId::new("BATTERY-1").unwrap_or_else(|_| unreachable!("a valid literal id"));
    let mut node = SimNode::new(id, kind, 7, Encoding::Binary);
    if heartbeat_s.is_some() {
        let config = Config {
            config_id: 0,
            heartbeat_interval_s: heartbeat_s,
            ..Config::default()
        };
        // Values come from the caller's flags; an invalid one leaves the default (reported).
        let _ = node.node_mut().settings.apply(&config);
    }
    let start_unix_ms = 1_734_775_200_000u64;
    let total_s = u64::from(days) * 86_400;
    let tick_s = tick_s.max(1);
    let mut t = 0;
    while t <= total_s {
        let now = Now {
            mono_ms: t * 1000,
            unix_ms: Some(start_unix_ms + t * 1000),
        };
        node.tick(now, &mut Sink);
        t += tick_s;
    }
    let days = f64::from(days.max(1));
    let battery = node.battery.borrow().clone();
    let mah_per_day = battery.used_mah / days;
    #[allow(clippy::cast_precision_loss)]
    let messages_per_day = node.messages_sent() as f64 / days;
    BatteryReport {
        kind,
        heartbeat_s,
        days,
        messages_per_day,
        mah_per_day,
        life_days: battery.capacity_mah / mah_per_day.max(f64::MIN_POSITIVE),
    }
}

impl BatteryReport {
    /// One line for a terminal.
    pub fn render(&self) -> String {
        format!(
            "{:<9} heartbeat {:>6}  {:>7.1} msg/day  {:>6.2} mAh/day  life {:>6.0} days ({:.1} years)",
            self.kind.as_str(),
            self.heartbeat_s
                .map_or("default".to_owned(), |h| format!("{h} s")),
            self.messages_per_day,
            self.mah_per_day,
            self.life_days,
            self.life_days / 365.0
        )
    }
}
