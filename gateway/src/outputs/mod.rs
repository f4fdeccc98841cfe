//! Outputs: where committed readings go besides the store, one module per output.
//!
//! The store writer hands every batch it has committed to [`Outputs::offer`], which passes it to
//! each output without waiting: an output keeps a bounded queue of its own, and what does not fit
//! is counted as dropped by that output, never held against ingest. Each output runs its own
//! tasks (batching, sending, retrying) and stops after the writer, when its input closes.
//!
//! - [`influx`]: readings and periodic series (lighting rate, open cases) as line protocol to a
//!   time-series database over the InfluxDB v2 write API (`[timeseries]`).

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::inventory::Inventory;
use crate::lighting::LightingSnapshot;
use crate::model::Reading;

pub mod influx;
pub mod spool;

/// A destination for committed readings.
pub trait ReadingOutput: Send + Sync + fmt::Debug {
    /// Short name for logs.
    fn name(&self) -> &'static str;

    /// Take a batch of readings the store has committed. Must return at once: an output that
    /// cannot keep up counts what it drops instead of waiting.
    fn offer(&self, readings: &Arc<[Reading]>);
}

/// Every output the pipeline fans readings out to.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    outputs: Vec<Arc<dyn ReadingOutput>>,
}

impl Outputs {
    /// These outputs.
    pub fn new(outputs: Vec<Arc<dyn ReadingOutput>>) -> Self {
        Self { outputs }
    }

    /// These outputs and one more.
    #[must_use]
    pub fn with(mut self, output: Arc<dyn ReadingOutput>) -> Self {
        self.outputs.push(output);
        self
    }

    /// No output configured.
    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty()
    }

    /// Hand committed readings to every output (never waits).
    pub fn offer(&self, readings: Vec<Box<Reading>>) {
        if self.outputs.is_empty() || readings.is_empty() {
            return;
        }
        let shared: Arc<[Reading]> = readings.into_iter().map(|r| *r).collect();
        for o in &self.outputs {
            o.offer(&shared);
        }
    }
}

/// The open cases by type now (type label, count), or `None` when they cannot be read.
pub type OpenCaseCounts =
    Arc<dyn Fn() -> BoxFuture<'static, Option<Vec<(String, u64)>>> + Send + Sync>;

/// What the outputs read besides the readings themselves.
#[derive(Clone)]
pub struct OutputContext {
    /// Devices, for the tags of a reading (grid, road segment).
    pub inventory: Arc<Inventory>,
    /// The lighting rate, as the automation last computed it.
    pub lighting: watch::Receiver<LightingSnapshot>,
    /// Open cases by type.
    pub open_cases: OpenCaseCounts,
    /// The gateway's clock (simulated or wall).
    pub clock: Clock,
    /// Stops the senders (what is not sent stays spooled).
    pub cancel: CancellationToken,
}

impl fmt::Debug for OutputContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutputContext")
            .field("devices", &self.inventory.len())
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// Outputs started, and their tasks (joined at shutdown after the store writer).
#[derive(Debug, Default)]
pub struct Started {
    /// For the store writer.
    pub outputs: Outputs,
    /// Their tasks.
    pub tasks: Vec<JoinHandle<()>>,
}
