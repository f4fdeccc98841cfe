//! Device applications: one state machine per kind over a shared [`Node`] core, run by
//! [`Device::tick`].
//!
//! A tick handles received downlinks (config → validate, apply, ack; command → act, ack),
//! lets the application sample and decide (alarms, report-on-change, heartbeat), and flushes
//! the store-and-forward outbox through the transport. Nothing blocks and nothing allocates.

pub mod bin;
pub mod manhole;
pub mod streetlight;
pub mod toilet;

use core::fmt::Write;

use serde::Serialize;
use streetgate_protocols::codec::{self, Encoding, Limits, MAX_ENCODED_LEN};
use streetgate_protocols::message::ShortText;
use streetgate_protocols::{
    Ack, Action, AlarmKind, AlarmState, Channel, DeviceId, DeviceKind, Downlink, Event, Status,
    Telemetry, TelemetryData,
};

use crate::filter::{Edge, ReportPolicy};
use crate::platform::{Clock, Now, SettingsStore, Transport};
use crate::queue::Outbox;
use crate::settings::Settings;

/// Outbox capacity, messages.
pub const OUTBOX_LEN: usize = 32;

/// Firmware version reported in status messages and the Modbus identification block.
pub const FW_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the platform should do after a tick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickOutcome {
    /// Settings changed: persist them ([`Device::save_settings`]).
    pub settings_changed: bool,
    /// A reboot was commanded (the ack is already queued; flush, then reset).
    pub reboot_requested: bool,
}

/// Counters a node keeps for diagnosis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Downlinks that could not be decoded (no id to acknowledge).
    pub bad_downlinks: u32,
    /// Sensor reads that failed.
    pub sensor_errors: u32,
    /// Messages that could not be encoded (should never happen).
    pub encode_errors: u32,
}

/// The part every application shares: identity, sequence numbers, encoding, outbox, settings.
#[derive(Debug)]
pub struct Node {
    id: DeviceId,
    kind: DeviceKind,
    seq: u32,
    encoding: Encoding,
    outbox: Outbox<OUTBOX_LEN>,
    boot_ms: Option<u64>,
    last_status_ms: Option<u64>,
    /// Effective settings.
    pub settings: Settings,
    /// Latest battery level, for status messages.
    pub battery_pct: Option<u8>,
    /// Diagnostic counters.
    pub counters: Counters,
    current: Option<TelemetryData>,
    last_ack: Option<(u32, bool)>,
}

impl Node {
    /// A node with default settings for its kind.
    pub fn new(id: DeviceId, kind: DeviceKind, encoding: Encoding) -> Self {
        Self {
            id,
            kind,
            seq: 0,
            encoding,
            outbox: Outbox::new(),
            boot_ms: None,
            last_status_ms: None,
            settings: Settings::defaults(kind),
            battery_pct: None,
            counters: Counters::default(),
            current: None,
            last_ack: None,
        }
    }

    /// Record the readings of the latest sample (kept for the Modbus register image), whether
    /// or not they are reported.
    pub fn observe(&mut self, data: &TelemetryData) {
        self.current = Some(data.clone());
    }

    /// Readings of the latest sample.
    pub fn current(&self) -> Option<&TelemetryData> {
        self.current.as_ref()
    }

    /// Id and result of the last config or command handled.
    pub fn last_ack(&self) -> Option<(u32, bool)> {
        self.last_ack
    }

    /// Device id.
    pub fn id(&self) -> &DeviceId {
        &self.id
    }

    /// Device kind.
    pub fn kind(&self) -> DeviceKind {
        self.kind
    }

    /// The store-and-forward outbox.
    pub fn outbox(&self) -> &Outbox<OUTBOX_LEN> {
        &self.outbox
    }

    /// The last sequence number used.
    pub fn seq(&self) -> u32 {
        self.seq
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn enqueue<T: Serialize>(&mut self, channel: Channel, msg: &T) {
        let mut buf = [0u8; MAX_ENCODED_LEN];
        match codec::encode(msg, self.encoding, &mut buf) {
            // A full outbox is counted inside it.
            Ok(n) => drop(self.outbox.push(channel, &buf[..n])),
            Err(_) => self.counters.encode_errors = self.counters.encode_errors.saturating_add(1),
        }
    }

    /// Queue telemetry.
    pub fn telemetry(&mut self, data: TelemetryData, now: Now) {
        let msg = Telemetry {
            device_id: self.id.clone(),
            seq: self.next_seq(),
            ts_ms: now.unix_ms,
            data,
        };
        self.enqueue(Channel::Telemetry, &msg);
    }

    /// Queue an alarm event for an edge.
    pub fn event(&mut self, alarm: AlarmKind, edge: Edge, value: Option<f32>, now: Now) {
        let state = match edge {
            Edge::Raised => AlarmState::Raised,
            Edge::Cleared => AlarmState::Cleared,
        };
        let msg = Event {
            device_id: self.id.clone(),
            seq: self.next_seq(),
            ts_ms: now.unix_ms,
            alarm,
            state,
            value,
        };
        self.enqueue(Channel::Event, &msg);
    }

    /// Queue a status message (birth, heartbeat or orderly shutdown).
    pub fn status(&mut self, online: bool, now: Now) {
        let mut fw = ShortText::new();
        let _ = fw.push_str(FW_VERSION);
        let uptime = self.boot_ms.map(|b| now.mono_ms.saturating_sub(b) / 1000);
        let msg = Status {
            device_id: self.id.clone(),
            seq: self.next_seq(),
            ts_ms: now.unix_ms,
            kind: self.kind,
            online,
            fw_version: Some(fw),
            uptime_s: uptime.map(|u| u32::try_from(u).unwrap_or(u32::MAX)),
            rssi_dbm: None,
            battery_pct: self.battery_pct,
            dropped: Some(self.outbox.dropped_telemetry()),
        };
        self.last_status_ms = Some(now.mono_ms);
        self.enqueue(Channel::Status, &msg);
    }

    /// The retained last will a transport registers at connect time (`online: false`).
    pub fn last_will(&self, buf: &mut [u8]) -> Option<usize> {
        let msg = Status {
            device_id: self.id.clone(),
            seq: self.seq,
            ts_ms: None,
            kind: self.kind,
            online: false,
            fw_version: None,
            uptime_s: None,
            rssi_dbm: None,
            battery_pct: None,
            dropped: None,
        };
        codec::encode(&msg, self.encoding, buf).ok()
    }

    /// Queue an ack.
    pub fn ack(&mut self, ref_id: u32, result: Result<(), ShortText>, now: Now) {
        let (ok, reason) = match result {
            Ok(()) => (true, None),
            Err(r) => (false, Some(r)),
        };
        self.last_ack = Some((ref_id, ok));
        let msg = Ack {
            device_id: self.id.clone(),
            seq: self.next_seq(),
            ts_ms: now.unix_ms,
            ref_id,
            ok,
            reason,
        };
        self.enqueue(Channel::Ack, &msg);
    }

    /// Record a sample's readings and send them when the report policy says so: a change of
    /// `value` (the kind's main quantity) beyond the deadband, or the heartbeat.
    pub fn report(&mut self, policy: &mut ReportPolicy, value: f32, data: TelemetryData, now: Now) {
        self.observe(&data);
        let s = &self.settings;
        if policy.due(
            value,
            now.mono_ms,
            s.deadband,
            self.report_ms(),
            self.heartbeat_ms(),
        ) {
            policy.reported(value, now.mono_ms);
            self.telemetry(data, now);
        }
    }

    /// Heartbeat interval in ms.
    pub fn heartbeat_ms(&self) -> u64 {
        u64::from(self.settings.heartbeat_interval_s) * 1000
    }

    /// Minimum spacing of on-change reports in ms.
    pub fn report_ms(&self) -> u64 {
        u64::from(self.settings.report_interval_s) * 1000
    }

    /// Minimum alarm duration in ms.
    pub fn hold_ms(&self) -> u64 {
        u64::from(self.settings.hold_s) * 1000
    }

    /// Count a failed sensor read.
    pub fn sensor_error(&mut self) {
        self.counters.sensor_errors = self.counters.sensor_errors.saturating_add(1);
    }
}

/// Round to a resolution of `1 / per_unit` (e.g. 10.0 for 0.1).
pub fn round_to(v: f32, per_unit: f32) -> f32 {
    libm::roundf(v * per_unit) / per_unit
}

/// A reason text for a refused command.
pub fn reason(text: &str) -> ShortText {
    let mut r = ShortText::new();
    for c in text.chars() {
        if r.push(c).is_err() {
            break;
        }
    }
    r
}

/// Format a reason.
pub fn reason_fmt(args: core::fmt::Arguments<'_>) -> ShortText {
    let mut r = ShortText::new();
    let _ = r.write_fmt(args);
    r
}

/// A kind's device logic.
pub trait Application {
    /// Take samples when due and decide: alarms, telemetry.
    fn sample(&mut self, node: &mut Node, now: Now);
    /// Act on a command (other than request-report and reboot, which the runner handles).
    fn command(&mut self, node: &mut Node, action: Action, now: Now) -> Result<(), ShortText> {
        let _ = (node, action, now);
        Err(reason("action: not supported by this device kind"))
    }
    /// Send telemetry at the next sample regardless of change.
    fn request_report(&mut self);
}

/// An application with its node: what a board runs.
#[derive(Debug)]
pub struct Device<A> {
    /// Shared core.
    pub node: Node,
    /// Kind logic.
    pub app: A,
    born: bool,
}

impl<A: Application> Device<A> {
    /// Assemble; settings start at the kind's defaults.
    pub fn new(node: Node, app: A) -> Self {
        Self {
            node,
            app,
            born: false,
        }
    }

    /// Load persisted settings, if any valid ones are stored.
    pub fn load_settings(&mut self, store: &mut impl SettingsStore) -> bool {
        match Settings::load(store) {
            Some(s) => {
                self.node.settings = s;
                true
            }
            None => false,
        }
    }

    /// Persist the current settings.
    pub fn save_settings(&self, store: &mut impl SettingsStore) -> bool {
        self.node.settings.save(store)
    }

    /// One step at the board clock's time (see [`Device::tick`]).
    pub fn tick_with(&mut self, clock: &impl Clock, transport: &mut impl Transport) -> TickOutcome {
        self.tick(clock.now(), transport)
    }

    /// One step: downlinks, sampling and decisions, outbox flush.
    pub fn tick(&mut self, now: Now, transport: &mut impl Transport) -> TickOutcome {
        let mut outcome = TickOutcome::default();
        let reconnected = transport.take_connected();
        if !self.born {
            self.born = true;
            self.node.boot_ms = Some(now.mono_ms);
            self.node.status(true, now);
        } else if reconnected {
            // Birth again after a reconnection: the broker may have published our last will.
            self.node.status(true, now);
        }
        let mut buf = [0u8; MAX_ENCODED_LEN];
        // Bounded: a flood of downlinks cannot starve sampling.
        for _ in 0..4 {
            let Some((channel, n)) = transport.poll_downlink(&mut buf) else {
                break;
            };
            let payload = buf.get(..n).unwrap_or(&[]);
            self.downlink(channel, payload, now, &mut outcome);
        }
        self.app.sample(&mut self.node, now);
        if self
            .node
            .last_status_ms
            .is_none_or(|t| now.mono_ms.saturating_sub(t) >= self.node.heartbeat_ms())
        {
            self.node.status(true, now);
        }
        // Link down: messages stay queued for the next tick.
        let _ = self.node.outbox.flush(transport);
        outcome
    }

    fn downlink(&mut self, channel: Channel, payload: &[u8], now: Now, outcome: &mut TickOutcome) {
        match codec::decode_downlink(channel, payload, &Limits::default()) {
            Ok(downlink) => {
                let o = self.apply_downlink(downlink, now);
                outcome.settings_changed |= o.settings_changed;
                outcome.reboot_requested |= o.reboot_requested;
            }
            Err(_) => {
                self.node.counters.bad_downlinks =
                    self.node.counters.bad_downlinks.saturating_add(1)
            }
        }
    }

    /// Handle a decoded config or command (from the transport, or from Modbus holding-register
    /// writes): validate, apply, acknowledge.
    pub fn apply_downlink(&mut self, downlink: Downlink, now: Now) -> TickOutcome {
        let mut outcome = TickOutcome::default();
        match downlink {
            Downlink::Config(config) => {
                let result = self.node.settings.apply(&config);
                outcome.settings_changed = result.is_ok();
                if result.is_ok() {
                    self.app.request_report();
                }
                self.node.ack(config.config_id, result, now);
            }
            Downlink::Command(cmd) => {
                let result = match cmd.action {
                    Action::RequestReport => {
                        self.app.request_report();
                        self.node.last_status_ms = None;
                        Ok(())
                    }
                    Action::Reboot => {
                        outcome.reboot_requested = true;
                        Ok(())
                    }
                    action => self.app.command(&mut self.node, action, now),
                };
                self.node.ack(cmd.cmd_id, result, now);
            }
        }
        outcome
    }
}

/// Stand-in for a sensor a node does not have.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSensor;

impl crate::sensors::Ranger for NoSensor {
    type Error = core::convert::Infallible;
    fn distance_mm(&mut self) -> Result<Option<u16>, Self::Error> {
        Ok(None)
    }
}

impl crate::sensors::Battery for NoSensor {
    type Error = core::convert::Infallible;
    fn level_pct(&mut self) -> Result<u8, Self::Error> {
        Ok(100)
    }
}

impl crate::sensors::Accelerometer for NoSensor {
    type Error = core::convert::Infallible;
    fn read_mg(&mut self) -> Result<crate::sensors::AccelMg, Self::Error> {
        Ok([0, 0, 1000])
    }
}

/// Low-battery decision shared by battery-powered kinds: raised below the threshold, cleared
/// 5 points above it.
pub(crate) fn battery_limit(settings: &Settings, hold_ms: u64) -> crate::filter::Limit {
    let low = f32::from(settings.battery_low_pct);
    // Alarm on the *shortfall*, so the generic "at or above" decision applies.
    crate::filter::Limit {
        raise_at: -(low - 0.5),
        clear_below: -(low + 5.0),
        hold_ms,
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! A transport and clock for application tests.
    use super::*;
    use std::collections::VecDeque;
    use std::vec::Vec;

    use streetgate_protocols::topic::Topic;
    use streetgate_protocols::{Command, Config, Uplink};

    use crate::platform::LinkDown;

    #[derive(Default)]
    pub(crate) struct Link {
        pub(crate) down: bool,
        pub(crate) sent: Vec<(Channel, Vec<u8>)>,
        pub(crate) downlinks: VecDeque<(Channel, Vec<u8>)>,
    }

    impl Transport for Link {
        fn send(&mut self, channel: Channel, payload: &[u8]) -> Result<(), LinkDown> {
            if self.down {
                return Err(LinkDown);
            }
            self.sent.push((channel, payload.to_vec()));
            Ok(())
        }
        fn poll_downlink(&mut self, buf: &mut [u8]) -> Option<(Channel, usize)> {
            let (c, p) = self.downlinks.pop_front()?;
            buf[..p.len()].copy_from_slice(&p);
            Some((c, p.len()))
        }
    }

    impl Link {
        /// Decode and take everything sent so far.
        pub(crate) fn take(&mut self, id: &str) -> Vec<Uplink> {
            let id = DeviceId::new(id).unwrap();
            self.sent
                .drain(..)
                .map(|(c, p)| {
                    codec::decode_uplink(&Topic::new(id.clone(), c), &p, &Limits::default())
                        .unwrap()
                })
                .collect()
        }

        pub(crate) fn config(&mut self, c: &Config) {
            let mut buf = [0u8; 512];
            let n = codec::encode_json(c, &mut buf).unwrap();
            self.downlinks
                .push_back((Channel::Config, buf[..n].to_vec()));
        }

        pub(crate) fn command(&mut self, c: &Command) {
            let mut buf = [0u8; 512];
            let n = codec::encode_json(c, &mut buf).unwrap();
            self.downlinks
                .push_back((Channel::Command, buf[..n].to_vec()));
        }
    }

    pub(crate) fn at(s: u64) -> Now {
        Now {
            mono_ms: s * 1000,
            unix_ms: None,
        }
    }

    /// Alarm events in a batch of uplinks.
    pub(crate) fn events(msgs: &[Uplink]) -> Vec<(AlarmKind, AlarmState)> {
        msgs.iter()
            .filter_map(|m| match m {
                Uplink::Event(e) => Some((e.alarm, e.state)),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn acks(msgs: &[Uplink]) -> Vec<Ack> {
        msgs.iter()
            .filter_map(|m| match m {
                Uplink::Ack(a) => Some(a.clone()),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn telemetry(msgs: &[Uplink]) -> Vec<TelemetryData> {
        msgs.iter()
            .filter_map(|m| match m {
                Uplink::Telemetry(t) => Some(t.data.clone()),
                _ => None,
            })
            .collect()
    }
}
