//! The pipeline after ingest: readings → rules → store writes, each step its own task joined by
//! bounded channels.
//!
//! ```text
//! decode workers ─(Reading, Ack)─▶ pipeline task ─WriteOp─▶ store writer (group commit) ─▶ acks
//! modbus pollers ─Reading────────────▲                              ▲
//!         └──────────────── unregistered sightings ─────────────────┘
//! ```
//!
//! A reading's [`Ack`] rides along: the pipeline task writes any case the reading causes before
//! passing it on, and the writer settles the acks of a batch only after its transaction
//! committed, so an acknowledged message is always in the store. After a commit the writer hands
//! the batch's readings to the [`Outputs`] (a time-series database), which never wait.
//!
//! Shutdown needs no signal here: when the transports stop, their senders drop, each task drains
//! its input and ends, and the writer commits what is left.

mod config;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::automation::Automation;
use crate::clock::Clock;
use crate::commands::AckWaiters;
use crate::ingest::AckedReading;
use crate::ingest::ack::Ack;
use crate::metrics::Metrics;
use crate::model::{Reading, ReadingBody};
use crate::outputs::Outputs;
use crate::store::{ReadingRecord, Store, UnregisteredSighting, WriteBatch, reading_type};
use streetgate_protocols::DeviceId;

pub use config::PipelineConfig;

/// A write for the store writer.
#[derive(Debug)]
pub enum WriteOp {
    /// An accepted reading (latest + history), with the acknowledgement owed once committed.
    Reading(Box<Reading>, Ack),
    /// A message from a device not in the inventory.
    Unregistered(UnregisteredSighting),
}

/// How often the rules' timers, the lighting evaluation and case verification run.
pub const TICK: Duration = Duration::from_secs(1);

/// Run readings through the rules and cases, then forward them to the store writer; tick the
/// automation between readings. The automation is owned by this task: no lock on the hot path.
#[allow(clippy::too_many_arguments)]
pub async fn run_pipeline(
    mut acked: mpsc::Receiver<AckedReading>,
    mut readings: mpsc::Receiver<Reading>,
    writes: mpsc::Sender<WriteOp>,
    metrics: Arc<Metrics>,
    mut automation: Automation,
    snapshot_interval: Duration,
    acks: Arc<AckWaiters>,
    clock: Clock,
) {
    // On a fast simulated clock, tick more often (down to 100 ms of wall time) so that timers
    // keep their resolution in simulated time.
    let tick_every = clock
        .wall_duration(TICK)
        .clamp(Duration::from_millis(100), TICK);
    // Rule-state snapshots every `snapshot_interval` (`store.snapshot_interval_s`, wall time),
    // and at the end.
    let persist_every_ticks =
        u32::try_from(snapshot_interval.as_millis() / tick_every.as_millis().max(1))
            .unwrap_or(u32::MAX)
            .max(1);
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u32;
    let (mut acked_closed, mut readings_closed) = (false, false);
    loop {
        tokio::select! {
            next = acked.recv(), if !acked_closed => {
                let Some((reading, ack)) = next else {
                    acked_closed = true;
                    if readings_closed { break }
                    continue;
                };
                if !on_reading(&mut automation, &metrics, &acks, &writes, reading, ack).await {
                    break;
                }
            }
            next = readings.recv(), if !readings_closed => {
                let Some(reading) = next else {
                    readings_closed = true;
                    if acked_closed { break }
                    continue;
                };
                if !on_reading(&mut automation, &metrics, &acks, &writes, reading, Ack::none()).await {
                    break;
                }
            }
            _ = tick.tick() => {
                let now = clock.now_ms();
                if let Err(e) = automation.tick(now).await {
                    tracing::error!(error = %e, "rules/cases tick: store error");
                }
                let (outage, outages) = automation.rules().outage();
                metrics.fleet_outage_devices.store(
                    outage.filter(|o| !o.expired).map_or(0, |o| o.devices),
                    Relaxed,
                );
                metrics.fleet_outages.store(outages, Relaxed);
                if let Ok(mut a) = metrics.automation.lock() {
                    *a = automation.stats;
                }
                ticks += 1;
                if ticks.is_multiple_of(persist_every_ticks) {
                    if let Err(e) = automation.persist(now).await {
                        tracing::error!(error = %e, "saving the rule state");
                    }
                }
            }
        }
    }
    if let Err(e) = automation.persist(clock.now_ms()).await {
        tracing::error!(error = %e, "saving the rule state at shutdown");
    }
    tracing::debug!("pipeline task stopped");
}

/// Rules and cases for one reading, then on to the store writer; `false` when the writer is
/// gone.
async fn on_reading(
    automation: &mut Automation,
    metrics: &Metrics,
    acks: &AckWaiters,
    writes: &mpsc::Sender<WriteOp>,
    reading: Reading,
    ack: Ack,
) -> bool {
    if let ReadingBody::Ack { ref_id, ok, reason } = &reading.body {
        acks.deliver(&reading.device_id, *ref_id, *ok, reason.clone());
    }
    let started = std::time::Instant::now();
    let conditions_before = automation.stats.conditions;
    let mut result = automation.on_reading(&reading).await;
    metrics.rule_latency.observe(started.elapsed());
    // A case the reading causes is written before the reading is passed on (and acknowledged):
    // while the store refuses it, the reading waits here, and so does ingest behind it.
    let mut backoff = StoreBackoff::default();
    while let Err(e) = result {
        if !e.is_transient() {
            metrics.store_errors.fetch_add(1, Relaxed);
            tracing::error!(device = %reading.device_id, error = %e, "rules/cases: the store refused a case for good");
            break;
        }
        metrics.store_write_failed(&e);
        backoff
            .wait(
                &e,
                "writing a case failed; the reading waits until it is written",
            )
            .await;
        result = automation.write_pending().await;
    }
    metrics
        .condition_events
        .fetch_add(automation.stats.conditions - conditions_before, Relaxed);
    writes
        .send(WriteOp::Reading(Box::new(reading), ack))
        .await
        .is_ok()
}

/// Waiting between attempts at a store that refuses writes: 100 ms doubling to 5 s, logged
/// at the first failure and then once per 30 s.
#[derive(Debug)]
struct StoreBackoff {
    delay: Duration,
    logged: Option<std::time::Instant>,
}

impl Default for StoreBackoff {
    fn default() -> Self {
        Self {
            delay: Duration::from_millis(100),
            logged: None,
        }
    }
}

impl StoreBackoff {
    async fn wait(&mut self, error: &crate::store::StoreError, what: &str) {
        if self
            .logged
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(30))
        {
            tracing::error!(error = %error, retry_in_ms = self.delay.as_millis() as u64, "{what}");
            self.logged = Some(std::time::Instant::now());
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Duration::from_secs(5));
    }
}

/// Batching settings of the store writer.
#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    /// Most operations per transaction.
    pub batch_max: usize,
    /// Keep reading history.
    pub keep_history: bool,
}

/// Commits writes in batches (group commit, at most `batch_max` per transaction) and settles
/// their acknowledgements after each commit. Rejection counters are folded in as deltas at least once a second.
#[derive(Debug)]
pub struct StoreWriter {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    settings: WriterSettings,
    flushed_rejections: HashMap<&'static str, u64>,
    outputs: Outputs,
}

impl StoreWriter {
    /// A writer.
    pub fn new(store: Arc<dyn Store>, metrics: Arc<Metrics>, settings: WriterSettings) -> Self {
        Self {
            store,
            metrics,
            settings,
            flushed_rejections: HashMap::new(),
            outputs: Outputs::default(),
        }
    }

    /// Hand every committed reading to these outputs too (never waiting on them).
    pub fn with_outputs(mut self, outputs: Outputs) -> Self {
        self.outputs = outputs;
        self
    }

    /// Run until the input closes, then commit what is left.
    ///
    /// Group commit: wait for the first operation, take whatever else is already queued (up
    /// to `batch_max`), commit, repeat. Under load, batches grow by themselves while a commit
    /// runs; when idle, a single reading is committed (and acknowledged) at once. With
    /// acknowledgement after commit, waiting for a batch to fill would only hold the senders'
    /// in-flight windows.
    pub async fn run(mut self, mut rx: mpsc::Receiver<WriteOp>) {
        let mut ops: Vec<WriteOp> = Vec::with_capacity(self.settings.batch_max);
        let mut closed = false;
        while !closed {
            // Wait for the first operation, waking at least once a second for the counters.
            match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
                Ok(Some(op)) => ops.push(op),
                Ok(None) => closed = true,
                Err(_) => {}
            }
            while ops.len() < self.settings.batch_max {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            self.flush(&mut ops).await;
        }
        tracing::debug!("store writer stopped");
    }

    fn rejection_deltas(&self) -> Vec<(&'static str, u64)> {
        self.metrics
            .rejections()
            .into_iter()
            .filter_map(|(reason, total)| {
                let before = self.flushed_rejections.get(reason).copied().unwrap_or(0);
                (total > before).then(|| (reason, total - before))
            })
            .collect()
    }

    async fn flush(&mut self, ops: &mut Vec<WriteOp>) {
        let deltas = self.rejection_deltas();
        if ops.is_empty() && deltas.is_empty() {
            return;
        }
        let reading_ops = ops
            .iter()
            .filter(|op| matches!(op, WriteOp::Reading(..)))
            .count() as u64;
        let mut acks: Vec<Ack> = Vec::with_capacity(ops.len());
        let mut batch = WriteBatch {
            keep_history: self.settings.keep_history,
            rejection_deltas: deltas.iter().map(|(r, d)| ((*r).to_owned(), *d)).collect(),
            ..WriteBatch::default()
        };
        let mut unregistered: HashMap<String, UnregisteredSighting> = HashMap::new();
        // Without history only the newest reading per (device, type) is stored: pick those
        // before serialising, so a chatty device costs one JSON document per batch. Every
        // reading is kept for the outputs.
        let mut newest: HashMap<(DeviceId, &'static str), usize> = HashMap::new();
        let mut stored: Vec<usize> = Vec::new();
        let mut readings: Vec<Box<Reading>> = Vec::with_capacity(reading_ops as usize);
        for op in ops.drain(..) {
            match op {
                WriteOp::Reading(r, ack) if self.settings.keep_history => {
                    acks.push(ack);
                    batch.readings.push(ReadingRecord::from_reading(&r));
                    readings.push(r);
                }
                WriteOp::Reading(r, ack) => {
                    acks.push(ack);
                    let key = (r.device_id.clone(), reading_type(&r.body));
                    match newest.get(&key) {
                        Some(&i) => stored[i] = readings.len(),
                        None => {
                            newest.insert(key, stored.len());
                            stored.push(readings.len());
                        }
                    }
                    readings.push(r);
                }
                WriteOp::Unregistered(s) => match unregistered.get_mut(&s.device_id) {
                    Some(u) => {
                        u.count += s.count;
                        u.at_ms = u.at_ms.max(s.at_ms);
                        u.topic = s.topic;
                        u.claimed_kind = s.claimed_kind.or(u.claimed_kind);
                    }
                    None => {
                        unregistered.insert(s.device_id.clone(), s);
                    }
                },
            }
        }
        batch.readings.extend(
            stored
                .iter()
                .map(|&i| ReadingRecord::from_reading(&readings[i])),
        );
        batch.unregistered = unregistered.into_values().collect();

        let mut backoff = StoreBackoff::default();
        loop {
            match self.store.write_batch(&batch).await {
                Ok(()) => {
                    self.metrics.store_write_ok();
                    for ack in acks {
                        ack.settle();
                    }
                    self.metrics.store_batches.fetch_add(1, Relaxed);
                    self.metrics.store_readings.fetch_add(reading_ops, Relaxed);
                    for (reason, delta) in deltas {
                        *self.flushed_rejections.entry(reason).or_default() += delta;
                    }
                    self.outputs.offer(readings);
                    return;
                }
                // Held and retried: nothing is acknowledged meanwhile, and the queues in front
                // of the writer fill up, so devices are slowed down rather than dropped.
                Err(e) if e.is_transient() => {
                    self.metrics.store_write_failed(&e);
                    backoff
                        .wait(&e, "store write failed; the batch is held and retried")
                        .await;
                }
                Err(e) => {
                    self.metrics.store_errors.fetch_add(1, Relaxed);
                    // Not acknowledged: the senders keep these messages and deliver them again.
                    tracing::error!(error = %e, readings = batch.readings.len(), "the store refused the batch for good; not acknowledged");
                    return;
                }
            }
        }
    }
}
