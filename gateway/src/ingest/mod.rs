//! Ingest: raw messages from the transports become [`Reading`]s with the device's context.
//!
//! ```text
//! mqtt event loop ──RawUplink──▶ decode workers (sharded by device) ──Reading──▶ pipeline
//! modbus pollers  ──────────────────────────────────────────────────Reading──▶ pipeline
//! ```
//!
//! A decode worker owns its shard's sequence trackers and an [`InventoryReader`], so the hot
//! path takes no lock: decode, one hash lookup, one sequence check. Every message that reaches a
//! decode worker is accepted or counted under exactly one [`RejectReason`], and logged with the
//! device and the error; messages from devices not in the inventory are recorded as
//! unregistered and never become readings.

pub mod ack;
pub mod modbus;
pub mod mqtt;
pub mod reject;

pub use reject::RejectReason;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use streetgate_protocols::codec::{self, Limits};
use streetgate_protocols::{AlarmState, Channel, DeviceId, Topic, Uplink};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::inventory::{Inventory, InventoryReader};
use crate::metrics::Metrics;
use crate::model::{Reading, ReadingBody, SeqState, UnixMs};
use crate::pipeline::WriteOp;
use crate::store::UnregisteredSighting;
use ack::Ack;

/// What a transport hands to ingest before anything is checked.
#[derive(Debug)]
pub struct RawUplink {
    /// MQTT topic.
    pub topic: String,
    /// Payload bytes.
    pub payload: Bytes,
    /// Delivered as a retained message (stale: sent before we subscribed).
    pub retained: bool,
    /// Gateway receive time.
    pub received_ms: UnixMs,
    /// Owed to the sender once the message is committed (or refused).
    pub ack: Ack,
}

/// An accepted MQTT reading with the acknowledgement its sender is owed after the commit.
pub type AckedReading = (Reading, Ack);

/// Everything a transport task needs to feed the pipeline (Modbus pollers use this too).
#[derive(Debug, Clone)]
pub struct IngestContext {
    /// Accepted readings, to the pipeline (bounded: `send().await` applies backpressure).
    pub readings: mpsc::Sender<Reading>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The device inventory.
    pub inventory: Arc<Inventory>,
    /// Cancelled on shutdown: stop polling, return, and the channels drain.
    pub cancel: CancellationToken,
}

/// The result of normalising one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A valid message from a registered device.
    Accepted(Reading),
    /// Refused; counted under `reason`.
    Rejected {
        /// Why.
        reason: RejectReason,
        /// The device, when the topic named one.
        device: Option<DeviceId>,
        /// What was wrong.
        error: String,
    },
    /// From a device not in the inventory.
    Unregistered(UnregisteredSighting),
}

/// Verdict of a sequence check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    /// First message seen from the device, or a newer one.
    InOrder,
    /// Older than the newest but not seen yet: accepted (MQTT keeps order per topic only, so a
    /// device's event and telemetry may overtake each other).
    Late,
    /// Accepted; this many earlier messages left the window without ever arriving.
    Gap(u32),
    /// Already seen, or too old to tell: drop.
    Duplicate,
    /// Far from the newest: the device restarted its counter; accepted.
    Restarted,
}

/// Sequence states loaded from the store at start, shared by the decode workers: a device's
/// window resumes where the last committed reading left it.
pub type SeqSeeds = Arc<HashMap<DeviceId, SeqState>>;

/// A window starting at `seq`, keeping the device's counters.
fn fresh(seq: u32, prior: &SeqState) -> SeqState {
    SeqState {
        last_seq: seq,
        seen: 1,
        valid: 1,
        ..*prior
    }
}

/// Move the newest to `last_seq + ahead`; returns how many valid, unseen positions fell out
/// (anti-replay style window: bit `i` of `seen` is `last_seq - i`).
fn advance(w: &mut SeqState, ahead: u32) -> u32 {
    let dropped_mask = if ahead >= 64 {
        u64::MAX
    } else {
        !(u64::MAX >> ahead)
    };
    let mut lost = (w.valid & !w.seen & dropped_mask).count_ones();
    if ahead >= 64 {
        // The numbers jumped over entirely (never valid in the window) are missing too.
        lost += ahead - 64;
        w.seen = 1;
        w.valid = u64::MAX;
    } else {
        w.seen = (w.seen << ahead) | 1;
        w.valid = (w.valid << ahead) | 1 | ((1u64 << ahead) - 1);
    }
    w.last_seq = w.last_seq.wrapping_add(ahead);
    lost
}

/// Per-device sequence numbers (wrapping `u32`), with each device's losses and restarts.
#[derive(Debug, Default)]
pub struct SeqTracker {
    states: HashMap<DeviceId, SeqState>,
    seeds: SeqSeeds,
}

impl SeqTracker {
    /// How far back a sequence number counts as a late duplicate rather than a restart.
    pub const WINDOW: u32 = 1024;
    /// Largest jump forward counted as lost messages; beyond it the counter restarted.
    pub const MAX_GAP: u32 = 1 << 20;

    /// A tracker that resumes devices from stored states.
    pub fn seeded(seeds: SeqSeeds) -> Self {
        Self {
            states: HashMap::new(),
            seeds,
        }
    }

    fn window(&mut self, device: &DeviceId) -> Option<&mut SeqState> {
        if !self.states.contains_key(device) {
            let seed = self.seeds.get(device).copied()?;
            self.states.insert(device.clone(), seed);
        }
        self.states.get_mut(device)
    }

    fn first(&mut self, device: &DeviceId, seq: u32) -> SeqVerdict {
        let mut w = fresh(seq, &SeqState::default());
        w.accepted = 1;
        self.states.insert(device.clone(), w);
        SeqVerdict::InOrder
    }

    /// Check and record `seq` for `device`.
    pub fn check(&mut self, device: &DeviceId, seq: u32) -> SeqVerdict {
        let Some(w) = self.window(device) else {
            return self.first(device, seq);
        };
        let ahead = seq.wrapping_sub(w.last_seq);
        let behind = w.last_seq.wrapping_sub(seq);
        if ahead == 0 {
            return SeqVerdict::Duplicate;
        }
        let verdict = if ahead <= Self::MAX_GAP {
            match advance(w, ahead) {
                0 => SeqVerdict::InOrder,
                lost => {
                    w.missing += u64::from(lost);
                    SeqVerdict::Gap(lost)
                }
            }
        } else if behind < 64 {
            let bit = 1u64 << behind;
            if w.seen & bit != 0 {
                return SeqVerdict::Duplicate;
            }
            w.seen |= bit;
            SeqVerdict::Late
        } else if behind < Self::WINDOW {
            return SeqVerdict::Duplicate;
        } else {
            *w = fresh(seq, w);
            w.restarts += 1;
            SeqVerdict::Restarted
        };
        w.accepted += 1;
        verdict
    }

    /// A live status (birth or heartbeat): newer numbers advance the window as usual (losses
    /// before it count); an older one means the device rebooted and restarted its counter, so
    /// the window restarts there and the restart is counted, not the numbers in between (the
    /// status may also have overtaken telemetry). Never rejects: the status is always accepted.
    pub fn reset(&mut self, device: &DeviceId, seq: u32) -> SeqVerdict {
        let Some(w) = self.window(device) else {
            return self.first(device, seq);
        };
        let ahead = seq.wrapping_sub(w.last_seq);
        let verdict = if ahead == 0 {
            // The same status again (a QoS 1 redelivery).
            return SeqVerdict::Duplicate;
        } else if ahead <= Self::MAX_GAP {
            match advance(w, ahead) {
                0 => SeqVerdict::InOrder,
                lost => {
                    w.missing += u64::from(lost);
                    SeqVerdict::Gap(lost)
                }
            }
        } else {
            *w = fresh(seq, w);
            w.restarts += 1;
            SeqVerdict::Restarted
        };
        w.accepted += 1;
        verdict
    }

    /// A device's current state.
    pub fn state(&self, device: &DeviceId) -> Option<SeqState> {
        self.states
            .get(device)
            .or_else(|| self.seeds.get(device))
            .copied()
    }

    /// Forget a device.
    pub fn forget(&mut self, device: &DeviceId) {
        self.states.remove(device);
    }
}

/// Turns raw MQTT messages into readings: topic, inventory, decode, kind and sequence checks.
#[derive(Debug)]
pub struct Normaliser {
    inventory: InventoryReader,
    limits: Limits,
    seq: SeqTracker,
    metrics: Arc<Metrics>,
}

impl Normaliser {
    /// A normaliser over an inventory.
    pub fn new(inventory: InventoryReader, limits: Limits, metrics: Arc<Metrics>) -> Self {
        Self {
            inventory,
            limits,
            seq: SeqTracker::default(),
            metrics,
        }
    }

    /// Resume devices from stored sequence states.
    #[must_use]
    pub fn with_seeds(mut self, seeds: SeqSeeds) -> Self {
        self.seq = SeqTracker::seeded(seeds);
        self
    }

    /// Normalise one message.
    pub fn normalise(&mut self, raw: &RawUplink) -> Outcome {
        let topic = match Topic::parse(&raw.topic) {
            Ok(t) if t.channel.is_uplink() => t,
            Ok(t) => {
                return Outcome::Rejected {
                    reason: RejectReason::WrongDirection,
                    error: format!("channel {} is downlink", t.channel),
                    device: Some(t.device_id),
                };
            }
            Err(e) => {
                return Outcome::Rejected {
                    reason: RejectReason::BadTopic,
                    device: None,
                    error: format!("{:?}: {e}", raw.topic),
                };
            }
        };
        let Some(device) = self.inventory.get(&topic.device_id).cloned() else {
            let claimed_kind = match topic.channel {
                Channel::Status => match codec::decode_uplink(&topic, &raw.payload, &self.limits) {
                    Ok(Uplink::Status(s)) => Some(s.kind.as_str()),
                    _ => None,
                },
                _ => None,
            };
            return Outcome::Unregistered(UnregisteredSighting {
                device_id: topic.device_id.to_string(),
                claimed_kind,
                at_ms: raw.received_ms,
                topic: raw.topic.clone(),
                count: 1,
            });
        };
        let reject = |reason, error: String| Outcome::Rejected {
            reason,
            device: Some(topic.device_id.clone()),
            error,
        };
        let msg = match codec::decode_uplink(&topic, &raw.payload, &self.limits) {
            Ok(m) => m,
            Err(e) => return reject(RejectReason::from(&e), e.to_string()),
        };
        let seq = msg.seq();
        let device_ts_ms = msg.ts_ms().and_then(|t| i64::try_from(t).ok());
        let kind_mismatch = |what: &str| {
            reject(
                RejectReason::KindMismatch,
                format!("{what} does not fit the inventoried kind {}", device.kind),
            )
        };
        let body = match msg {
            Uplink::Telemetry(t) => {
                if t.data.kind() != device.kind {
                    return kind_mismatch(&format!("{} telemetry", t.data.kind()));
                }
                ReadingBody::Telemetry(t.data)
            }
            Uplink::Event(e) => {
                if !e.alarm.applies_to(device.kind) {
                    return kind_mismatch(&format!("alarm {}", e.alarm));
                }
                ReadingBody::Alarm {
                    alarm: e.alarm,
                    raised: e.state == AlarmState::Raised,
                    value: e.value,
                }
            }
            Uplink::Status(s) => {
                if s.kind != device.kind {
                    return kind_mismatch(&format!("status of a {}", s.kind));
                }
                ReadingBody::Status {
                    online: s.online,
                    battery_pct: s.battery_pct,
                    fw_version: s.fw_version.map(|v| v.as_str().to_owned()),
                }
            }
            Uplink::Ack(a) => ReadingBody::Ack {
                ref_id: a.ref_id,
                ok: a.ok,
                reason: a.reason.map(|r| r.as_str().to_owned()),
            },
        };
        // Status is never dropped: the last will carries the sequence number of connect time. A
        // live birth/heartbeat re-bases the counter (it also covers reboots).
        let verdict = match &body {
            ReadingBody::Status { online, .. } if *online && !raw.retained => {
                self.seq.reset(&topic.device_id, seq)
            }
            ReadingBody::Status { .. } => SeqVerdict::InOrder,
            _ => self.seq.check(&topic.device_id, seq),
        };
        match verdict {
            SeqVerdict::Duplicate if !matches!(body, ReadingBody::Status { .. }) => {
                return reject(
                    RejectReason::Duplicate,
                    format!("sequence number {seq} already seen or older than the last accepted"),
                );
            }
            SeqVerdict::Gap(n) => {
                self.metrics.seq_gaps.fetch_add(u64::from(n), Relaxed);
                tracing::info!(device = %topic.device_id, missing = n, seq, "sequence gap: messages lost");
            }
            SeqVerdict::Restarted => {
                self.metrics.seq_restarts.fetch_add(1, Relaxed);
                tracing::info!(device = %topic.device_id, seq, "sequence counter restarted (device reboot)");
            }
            SeqVerdict::Duplicate | SeqVerdict::InOrder | SeqVerdict::Late => {}
        }
        let seq_state = self.seq.state(&topic.device_id);
        Outcome::Accepted(Reading {
            device_id: topic.device_id,
            kind: device.kind,
            received_ms: raw.received_ms,
            device_ts_ms,
            seq,
            transport: "mqtt",
            body,
            seq_state,
        })
    }
}

/// The device level of a topic without validating it, for sharding.
fn device_level(topic: &str) -> &str {
    let mut levels = topic.split('/');
    levels.nth(2).unwrap_or(topic)
}

/// Which decode worker handles a topic: all messages of one device go to the same worker, so
/// each device stays in order and its sequence tracker has a single owner.
pub fn shard_for(topic: &str, workers: usize, hasher: &impl BuildHasher) -> usize {
    if workers <= 1 {
        return 0;
    }
    usize::try_from(hasher.hash_one(device_level(topic)) % workers as u64).unwrap_or(0)
}

/// At most `per_second` warnings a second; the rest are counted and summarised.
#[derive(Debug)]
pub struct LogLimiter {
    per_second: u32,
    window_start: Instant,
    in_window: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// A limiter.
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            window_start: Instant::now(),
            in_window: 0,
            suppressed: 0,
        }
    }

    /// Whether to log now; when a window closes with suppressed lines, returns their count too.
    pub fn allow(&mut self) -> (bool, u64) {
        let now = Instant::now();
        let mut reported = 0;
        if now.duration_since(self.window_start) >= Duration::from_secs(1) {
            reported = std::mem::take(&mut self.suppressed);
            self.window_start = now;
            self.in_window = 0;
        }
        if self.in_window < self.per_second {
            self.in_window += 1;
            (true, reported)
        } else {
            self.suppressed += 1;
            (false, reported)
        }
    }
}

/// Spawn `n` decode workers; returns their inputs (index with [`shard_for`]) and handles.
/// `seeds` are the devices' sequence states as last committed ([`ReadingStore::seq_states`]).
///
/// [`ReadingStore::seq_states`]: crate::store::ReadingStore::seq_states
///
/// A worker ends when its input closes (the transport stopped) after draining it.
#[allow(clippy::too_many_arguments)] // wiring: each argument is a separate piece of app state
pub fn spawn_decode_workers(
    n: usize,
    capacity: usize,
    limits: Limits,
    inventory: &Arc<Inventory>,
    metrics: &Arc<Metrics>,
    readings: &mpsc::Sender<AckedReading>,
    writes: &mpsc::Sender<WriteOp>,
    seeds: &SeqSeeds,
) -> (Vec<mpsc::Sender<RawUplink>>, Vec<JoinHandle<()>>) {
    let mut inputs = Vec::with_capacity(n);
    let mut handles = Vec::with_capacity(n);
    for worker in 0..n {
        let (tx, mut rx) = mpsc::channel::<RawUplink>(capacity);
        inputs.push(tx);
        let mut normaliser = Normaliser::new(inventory.reader(), limits, Arc::clone(metrics))
            .with_seeds(Arc::clone(seeds));
        let metrics = Arc::clone(metrics);
        let readings = readings.clone();
        let writes = writes.clone();
        handles.push(tokio::spawn(async move {
            let mut limiter = LogLimiter::new(20);
            while let Some(mut raw) = rx.recv().await {
                let ack = std::mem::take(&mut raw.ack);
                match normaliser.normalise(&raw) {
                    Outcome::Accepted(reading) => {
                        metrics.ingested(reading.transport);
                        // Settled by the store writer once the reading is committed.
                        if readings.send((reading, ack)).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    Outcome::Rejected {
                        reason,
                        device,
                        error,
                    } => {
                        metrics.rejected(reason);
                        let (log, suppressed) = limiter.allow();
                        if suppressed > 0 {
                            tracing::warn!(worker, suppressed, "rejected messages not logged individually in the last second");
                        }
                        if log {
                            let device = device.as_ref().map_or("-", DeviceId::as_str);
                            let reason = reason.as_str();
                            tracing::warn!(%device, topic = %raw.topic, reason, %error, "message rejected");
                        }
                    }
                    Outcome::Unregistered(sighting) => {
                        metrics.rejected(RejectReason::UnknownDevice);
                        metrics.unregistered_messages.fetch_add(1, Relaxed);
                        let (log, _) = limiter.allow();
                        if log {
                            tracing::info!(device = %sighting.device_id, topic = %raw.topic, "message from an unregistered device");
                        }
                        if writes.send(WriteOp::Unregistered(sighting)).await.is_err() {
                            break;
                        }
                    }
                }
                // Refused (counted) or not a reading: a redelivery would be refused again.
                ack.settle();
            }
            tracing::debug!(worker, "decode worker stopped");
        }));
    }
    (inputs, handles)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::parse_csv;

    fn normaliser() -> Normaliser {
        let csv = "id,kind,lat,lon,grid\nBN-1,bin,31,120,G1\nSL-1,streetlight,31,120,G1\n";
        let inv = Arc::new(Inventory::new(parse_csv(csv.as_bytes()).unwrap()));
        Normaliser::new(
            inv.reader(),
            Limits::default(),
            Arc::new(Metrics::default()),
        )
    }

    fn raw(topic: &str, payload: &str) -> RawUplink {
        RawUplink {
            topic: topic.into(),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            retained: false,
            received_ms: 1000,
            ack: Ack::none(),
        }
    }

    fn bin(seq: u32) -> String {
        format!(
            r#"{{"device_id":"BN-1","seq":{seq},"data":{{"bin":{{"fill_pct":50,"temperature_c":20,"battery_pct":90}}}}}}"#
        )
    }

    fn reason(o: Outcome) -> &'static str {
        match o {
            Outcome::Rejected { reason, .. } => reason.as_str(),
            other => panic!("not rejected: {other:?}"),
        }
    }

    #[test]
    fn accepts_and_converts() {
        let mut n = normaliser();
        match n.normalise(&raw("streetgate/v1/BN-1/telemetry", &bin(1))) {
            Outcome::Accepted(r) => {
                assert_eq!(r.device_id.as_str(), "BN-1");
                assert_eq!(r.seq, 1);
                assert!(matches!(r.body, ReadingBody::Telemetry(_)));
            }
            o => panic!("{o:?}"),
        }
        let ev = r#"{"device_id":"BN-1","seq":2,"alarm":"bin_full","state":"raised","value":85}"#;
        assert!(matches!(
            n.normalise(&raw("streetgate/v1/BN-1/event", ev)),
            Outcome::Accepted(Reading {
                body: ReadingBody::Alarm { raised: true, .. },
                ..
            })
        ));
    }

    #[test]
    fn rejects_by_reason() {
        let mut n = normaliser();
        assert_eq!(reason(n.normalise(&raw("other/topic", "{}"))), "bad_topic");
        assert_eq!(
            reason(n.normalise(&raw("streetgate/v1/BN-1/telemetry", "garbage"))),
            "unknown_encoding"
        );
        assert_eq!(
            reason(n.normalise(&raw("streetgate/v1/BN-1/telemetry", "{\"x\":1}"))),
            "malformed"
        );
        assert_eq!(
            reason(n.normalise(&raw("streetgate/v1/BN-1/telemetry", ""))),
            "empty"
        );
        assert_eq!(
            reason(n.normalise(&raw(
                "streetgate/v1/SL-1/telemetry",
                &bin(1).replace("BN-1", "SL-1")
            ))),
            "kind_mismatch"
        );
        assert_eq!(
            reason(n.normalise(&raw("streetgate/v1/SL-1/telemetry", &bin(1)))),
            "device_mismatch"
        );
        assert_eq!(
            reason(n.normalise(&raw("streetgate/v1/BN-1/command", "{}"))),
            "wrong_direction"
        );
        // Reserved device levels (the gateway's alert tree) are no device, registered or not.
        assert_eq!(
            reason(n.normalise(&raw(
                "streetgate/v1/_alerts/telemetry",
                &bin(1).replace("BN-1", "_alerts")
            ))),
            "bad_topic"
        );
        assert_eq!(
            reason(n.normalise(&raw("streetgate/v1/BN-1/telemetry/extra", &bin(1)))),
            "bad_topic"
        );
        assert_eq!(
            reason(n.normalise(&raw("streetgate/v1/BN-1/nonsense", &bin(1)))),
            "bad_topic"
        );
        match n.normalise(&raw("streetgate/v1/ZZ-9/telemetry", &bin(1))) {
            Outcome::Unregistered(s) => assert_eq!(s.device_id, "ZZ-9"),
            o => panic!("{o:?}"),
        }
        let status = r#"{"device_id":"ZZ-9","seq":1,"kind":"manhole","online":true}"#;
        match n.normalise(&raw("streetgate/v1/ZZ-9/status", status)) {
            Outcome::Unregistered(s) => assert_eq!(s.claimed_kind, Some("manhole")),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn duplicates_dropped_gaps_counted_status_exempt() {
        let mut n = normaliser();
        let t = "streetgate/v1/BN-1/telemetry";
        assert!(matches!(
            n.normalise(&raw(t, &bin(5))),
            Outcome::Accepted(_)
        ));
        assert_eq!(reason(n.normalise(&raw(t, &bin(5)))), "duplicate");
        // Older but unseen: overtaken on another topic, accepted once.
        assert!(matches!(
            n.normalise(&raw(t, &bin(4))),
            Outcome::Accepted(_)
        ));
        assert_eq!(reason(n.normalise(&raw(t, &bin(4)))), "duplicate");
        assert!(matches!(
            n.normalise(&raw(t, &bin(9))),
            Outcome::Accepted(_)
        ));
        // 6..8 may still arrive: not lost until they leave the window.
        assert_eq!(n.metrics.seq_gaps.load(Relaxed), 0);
        // A last will carries an old sequence number and is still accepted.
        let will = r#"{"device_id":"BN-1","seq":1,"kind":"bin","online":false}"#;
        assert!(matches!(
            n.normalise(&raw("streetgate/v1/BN-1/status", will)),
            Outcome::Accepted(_)
        ));
        // After a reboot the birth message re-bases the counter.
        let birth = r#"{"device_id":"BN-1","seq":1,"kind":"bin","online":true}"#;
        assert!(matches!(
            n.normalise(&raw("streetgate/v1/BN-1/status", birth)),
            Outcome::Accepted(_)
        ));
        assert!(matches!(
            n.normalise(&raw(t, &bin(2))),
            Outcome::Accepted(_)
        ));
        assert_eq!(n.metrics.seq_gaps.load(Relaxed), 0);
    }

    #[test]
    fn seq_wraps() {
        let mut s = SeqTracker::default();
        let id = DeviceId::new("A").unwrap();
        assert_eq!(s.check(&id, u32::MAX), SeqVerdict::InOrder);
        assert_eq!(s.check(&id, 0), SeqVerdict::InOrder);
        assert_eq!(s.check(&id, u32::MAX), SeqVerdict::Duplicate);
        assert_eq!(s.check(&id, 3), SeqVerdict::InOrder);
        assert_eq!(s.check(&id, 3_000_000_000), SeqVerdict::Restarted);
        assert_eq!(s.check(&id, 3_000_000_001), SeqVerdict::InOrder);
    }

    #[test]
    fn channels_may_overtake_each_other_but_duplicates_drop_and_losses_count() {
        let mut s = SeqTracker::default();
        let id = DeviceId::new("A").unwrap();
        assert_eq!(s.check(&id, 10), SeqVerdict::InOrder);
        assert_eq!(s.check(&id, 13), SeqVerdict::InOrder); // 11 and 12 still in flight
        assert_eq!(s.check(&id, 11), SeqVerdict::Late); // an event overtaken by telemetry
        assert_eq!(s.check(&id, 11), SeqVerdict::Duplicate); // QoS 1 redelivery
        assert_eq!(s.check(&id, 13), SeqVerdict::Duplicate);
        // 12 never arrives: counted once it leaves the 64-message window.
        for seq in 14..76 {
            assert_eq!(s.check(&id, seq), SeqVerdict::InOrder, "{seq}");
        }
        assert_eq!(s.check(&id, 76), SeqVerdict::Gap(1));
        assert_eq!(s.check(&id, 12), SeqVerdict::Duplicate, "too old to tell");
        // A jump: the skipped numbers count as lost when they leave the window.
        assert_eq!(s.check(&id, 86), SeqVerdict::InOrder);
        // 77..85 leave the window; 87..136 were jumped over entirely; 137..199 are still in it.
        assert_eq!(s.check(&id, 200), SeqVerdict::Gap(9 + 50));
        // A live status overtaking telemetry never makes the telemetry a duplicate (137 and
        // 138 leave the window with it).
        assert_eq!(s.reset(&id, 202), SeqVerdict::Gap(2));
        assert_eq!(s.check(&id, 201), SeqVerdict::Late);
        let st = s.state(&id).unwrap();
        assert_eq!((st.last_seq, st.missing, st.restarts), (202, 1 + 59 + 2, 0));
    }

    #[test]
    fn a_reboot_restarts_the_counter_without_a_loss_and_a_seeded_tracker_resumes() {
        let mut s = SeqTracker::default();
        let id = DeviceId::new("A").unwrap();
        for seq in 1..=100 {
            assert_eq!(s.check(&id, seq), SeqVerdict::InOrder);
        }
        // Birth after a reboot: the counter starts again.
        assert_eq!(s.reset(&id, 1), SeqVerdict::Restarted);
        assert_eq!(
            s.reset(&id, 1),
            SeqVerdict::Duplicate,
            "a redelivered status"
        );
        for seq in 2..=80 {
            assert_eq!(s.check(&id, seq), SeqVerdict::InOrder, "{seq}");
        }
        let st = s.state(&id).unwrap();
        assert_eq!((st.last_seq, st.missing, st.restarts), (80, 0, 1));
        assert_eq!(st.accepted, 100 + 1 + 79);

        // 82 never arrives; the state is stored; a new tracker resumes from it.
        assert_eq!(s.check(&id, 81), SeqVerdict::InOrder);
        assert_eq!(s.check(&id, 83), SeqVerdict::InOrder);
        let stored = s.state(&id).unwrap();
        let mut resumed = SeqTracker::seeded(Arc::new(HashMap::from([(id.clone(), stored)])));
        assert_eq!(resumed.state(&id), Some(stored));
        assert_eq!(resumed.check(&id, 83), SeqVerdict::Duplicate, "redelivered");
        assert_eq!(resumed.check(&id, 82), SeqVerdict::Late);
        // 84..=136 jumped over (137..=199 still in the window).
        assert_eq!(resumed.check(&id, 200), SeqVerdict::Gap(53));
        let st = resumed.state(&id).unwrap();
        assert_eq!((st.missing, st.restarts), (53, 1));
    }

    #[test]
    fn sharding_is_per_device() {
        let h = std::hash::RandomState::new();
        let a = shard_for("streetgate/v1/BN-1/telemetry", 4, &h);
        assert_eq!(a, shard_for("streetgate/v1/BN-1/status", 4, &h));
        assert_eq!(shard_for("x", 1, &h), 0);
    }
}
