//! The queue between batching and sending: sealed batches in memory while the server keeps up,
//! on disk once it does not, always sent oldest first.
//!
//! Each batch has a sequence number given when it is sealed. A few batches wait in memory; when
//! more are waiting (the server is away or slow), every waiting batch is written to the spool
//! directory as one file, `{seq:020}-{lines}.lp.gz` (the request body as sent: gzipped line
//! protocol), and later batches follow them there until the spool has drained, so the order
//! never changes. At shutdown what is still in memory is written out too, and at start the
//! files found are queued again, oldest first.
//!
//! The spool is bounded in bytes: past the bound the oldest files are deleted (never the batch
//! being sent), their lines counted as dropped, with one log line until the spool empties again.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use tokio::sync::{Mutex, Notify};

use super::influx::TimeseriesMetrics;

/// One sealed batch: gzipped line protocol and how many lines it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Order of sealing (sent in this order).
    pub seq: u64,
    /// Lines in the batch.
    pub lines: u64,
    /// The gzipped body.
    pub body: Bytes,
}

/// Where a spool file's batch is, and what it holds.
#[derive(Debug, Clone, Copy)]
struct OnDisk {
    lines: u64,
    bytes: u64,
}

#[derive(Debug, Default)]
struct State {
    memory: VecDeque<Batch>,
    disk: BTreeMap<u64, OnDisk>,
    disk_bytes: u64,
    next_seq: u64,
    /// The batch the sender holds now (never dropped for room).
    in_flight: Option<u64>,
    /// The "spool full" line has been logged since the spool was last empty.
    full_logged: bool,
    closed: bool,
}

/// Sealed batches waiting to be sent, in memory or in the spool directory.
#[derive(Debug)]
pub struct Queue {
    dir: PathBuf,
    max_memory: usize,
    max_bytes: u64,
    state: Mutex<State>,
    ready: Notify,
    metrics: Arc<TimeseriesMetrics>,
}

fn file_name(seq: u64, lines: u64) -> String {
    format!("{seq:020}-{lines}.lp.gz")
}

fn parse_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".lp.gz")?;
    let (seq, lines) = stem.split_once('-')?;
    Some((seq.parse().ok()?, lines.parse().ok()?))
}

impl Queue {
    /// Open the spool directory (created when missing) and queue the batches found there.
    pub async fn open(
        dir: &Path,
        max_memory: usize,
        max_bytes: u64,
        metrics: Arc<TimeseriesMetrics>,
    ) -> std::io::Result<Self> {
        tokio::fs::create_dir_all(dir).await?;
        let mut state = State::default();
        let mut entries = tokio::fs::read_dir(dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") {
                // A write cut short by a crash: never complete, never acknowledged as spooled.
                let _ = tokio::fs::remove_file(entry.path()).await;
                continue;
            }
            let Some((seq, lines)) = parse_name(name) else {
                tracing::warn!(file = %entry.path().display(), "not a spool file; left alone");
                continue;
            };
            let bytes = entry.metadata().await?.len();
            state.disk.insert(seq, OnDisk { lines, bytes });
            state.disk_bytes += bytes;
            state.next_seq = state.next_seq.max(seq + 1);
        }
        if !state.disk.is_empty() {
            let lines: u64 = state.disk.values().map(|d| d.lines).sum();
            tracing::info!(
                dir = %dir.display(),
                batches = state.disk.len(),
                lines,
                "time-series spool found; replaying it"
            );
            metrics.queued_lines.fetch_add(lines, Relaxed);
        }
        metrics.spool_bytes.store(state.disk_bytes, Relaxed);
        let queue = Self {
            dir: dir.to_owned(),
            max_memory: max_memory.max(1),
            max_bytes,
            state: Mutex::new(state),
            ready: Notify::new(),
            metrics,
        };
        Ok(queue)
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The number the next sealed batch gets.
    pub async fn next_seq(&self) -> u64 {
        let mut s = self.state.lock().await;
        let seq = s.next_seq;
        s.next_seq += 1;
        seq
    }

    /// Queue a sealed batch (its lines are already counted as queued).
    pub async fn push(&self, batch: Batch) {
        let mut s = self.state.lock().await;
        if s.disk.is_empty() && s.memory.len() < self.max_memory {
            s.memory.push_back(batch);
        } else {
            let mut waiting: Vec<Batch> = s.memory.drain(..).collect();
            waiting.push(batch);
            for b in waiting {
                self.write(&mut s, b).await;
            }
            self.bound(&mut s).await;
        }
        drop(s);
        self.ready.notify_one();
    }

    /// Write every batch still in memory to the spool (shutdown), and stop handing out batches.
    pub async fn spill(&self) {
        let mut s = self.state.lock().await;
        s.closed = true;
        let waiting: Vec<Batch> = s.memory.drain(..).collect();
        let n = waiting.len();
        for b in waiting {
            self.write(&mut s, b).await;
        }
        self.bound(&mut s).await;
        if !s.disk.is_empty() {
            let lines: u64 = s.disk.values().map(|d| d.lines).sum();
            tracing::info!(
                dir = %self.dir.display(),
                batches = s.disk.len(),
                lines,
                written_now = n,
                "time-series batches not sent yet are kept in the spool"
            );
        }
        drop(s);
        self.ready.notify_waiters();
    }

    async fn write(&self, s: &mut State, batch: Batch) {
        let name = file_name(batch.seq, batch.lines);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let result = async {
            tokio::fs::write(&tmp, &batch.body).await?;
            tokio::fs::rename(&tmp, &path).await
        }
        .await;
        match result {
            Ok(()) => {
                let bytes = batch.body.len() as u64;
                s.disk.insert(
                    batch.seq,
                    OnDisk {
                        lines: batch.lines,
                        bytes,
                    },
                );
                s.disk_bytes += bytes;
                self.metrics.spooled_batches.fetch_add(1, Relaxed);
                self.metrics.spooled_lines.fetch_add(batch.lines, Relaxed);
                self.metrics.spool_bytes.store(s.disk_bytes, Relaxed);
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                // Kept in memory instead, at its place in the order (oldest first).
                tracing::error!(
                    file = %path.display(),
                    error = %e,
                    "cannot write to the time-series spool (timeseries.spool_dir); the batch stays in memory"
                );
                self.metrics.spool_errors.fetch_add(1, Relaxed);
                let at = s.memory.partition_point(|b| b.seq < batch.seq);
                s.memory.insert(at, batch);
            }
        }
    }

    /// Delete the oldest spool files (never the one in flight) until the spool fits its bound.
    async fn bound(&self, s: &mut State) {
        while s.disk_bytes > self.max_bytes {
            let Some((&seq, &d)) = s.disk.iter().find(|(seq, _)| Some(**seq) != s.in_flight) else {
                break;
            };
            if !s.full_logged {
                s.full_logged = true;
                tracing::warn!(
                    dir = %self.dir.display(),
                    max_bytes = self.max_bytes,
                    "time-series spool full (timeseries.spool_max_bytes): dropping its oldest batches until the server takes them again (counted in streetgate_timeseries_dropped_lines_total)"
                );
            }
            self.remove_file(s, seq, d).await;
            self.metrics.dropped_spool_full.fetch_add(d.lines, Relaxed);
            self.metrics.queued_lines.fetch_sub(d.lines, Relaxed);
        }
    }

    async fn remove_file(&self, s: &mut State, seq: u64, d: OnDisk) {
        let path = self.dir.join(file_name(seq, d.lines));
        if let Err(e) = tokio::fs::remove_file(&path).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(file = %path.display(), error = %e, "cannot delete a time-series spool file");
        }
        s.disk.remove(&seq);
        s.disk_bytes = s.disk_bytes.saturating_sub(d.bytes);
        if s.disk.is_empty() {
            s.full_logged = false;
        }
        self.metrics.spool_bytes.store(s.disk_bytes, Relaxed);
    }

    /// The oldest batch, waiting for one; `None` once closed. The batch stays queued until
    /// [`Queue::done`].
    pub async fn next(&self) -> Option<Batch> {
        loop {
            let notified = self.ready.notified();
            {
                let mut s = self.state.lock().await;
                if s.closed {
                    return None;
                }
                let oldest = s.disk.iter().next().map(|(seq, d)| (*seq, *d));
                if let Some((seq, d)) = oldest {
                    let path = self.dir.join(file_name(seq, d.lines));
                    match tokio::fs::read(&path).await {
                        Ok(body) => {
                            s.in_flight = Some(seq);
                            return Some(Batch {
                                seq,
                                lines: d.lines,
                                body: Bytes::from(body),
                            });
                        }
                        Err(e) => {
                            tracing::error!(file = %path.display(), error = %e, "cannot read a time-series spool file; its lines are lost");
                            self.metrics.dropped_unreadable.fetch_add(d.lines, Relaxed);
                            self.metrics.queued_lines.fetch_sub(d.lines, Relaxed);
                            self.remove_file(&mut s, seq, d).await;
                            continue;
                        }
                    }
                }
                if let Some(b) = s.memory.front().cloned() {
                    s.in_flight = Some(b.seq);
                    return Some(b);
                }
            }
            notified.await;
        }
    }

    /// The batch `seq` was sent or refused for good: forget it.
    pub async fn done(&self, seq: u64) {
        let mut s = self.state.lock().await;
        if s.in_flight == Some(seq) {
            s.in_flight = None;
        }
        if s.memory.front().is_some_and(|b| b.seq == seq) {
            s.memory.pop_front();
        } else if let Some(d) = s.disk.get(&seq).copied() {
            self.remove_file(&mut s, seq, d).await;
        }
    }

    /// Batches and bytes in the spool directory now.
    pub async fn spooled(&self) -> (usize, u64) {
        let s = self.state.lock().await;
        (s.disk.len(), s.disk_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seq: u64, lines: u64, size: usize) -> Batch {
        Batch {
            seq,
            lines,
            body: Bytes::from(vec![b'x'; size]),
        }
    }

    #[tokio::test]
    async fn full_spool_drops_the_oldest_and_keeps_the_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let metrics = Arc::new(TimeseriesMetrics::default());
        // One batch in memory, at most 3 × 100 bytes on disk.
        let q = Queue::open(dir.path(), 1, 300, Arc::clone(&metrics))
            .await
            .expect("open");
        metrics.queued_lines.fetch_add(60, Relaxed);
        for i in 0..6 {
            let seq = q.next_seq().await;
            assert_eq!(seq, i);
            q.push(batch(seq, 10, 100)).await;
        }
        // Batches 0..=5 went to disk once the second arrived; 0, 1 and 2 were dropped for room.
        assert_eq!(q.spooled().await, (3, 300));
        assert_eq!(metrics.dropped_spool_full.load(Relaxed), 30);
        assert_eq!(metrics.queued_lines.load(Relaxed), 30);
        let mut order = Vec::new();
        for _ in 0..3 {
            let b = q.next().await.expect("a batch");
            order.push(b.seq);
            q.done(b.seq).await;
        }
        assert_eq!(order, [3, 4, 5]);
        assert_eq!(q.spooled().await, (0, 0));
    }

    #[tokio::test]
    async fn the_batch_in_flight_is_never_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let metrics = Arc::new(TimeseriesMetrics::default());
        // Room for two batches on disk.
        let q = Queue::open(dir.path(), 1, 250, Arc::clone(&metrics))
            .await
            .expect("open");
        q.push(batch(q.next_seq().await, 1, 100)).await;
        q.push(batch(q.next_seq().await, 1, 100)).await;
        let first = q.next().await.expect("a batch");
        assert_eq!(first.seq, 0);
        q.push(batch(q.next_seq().await, 1, 100)).await;
        // 0 is in flight: 1 went instead.
        assert_eq!(metrics.dropped_spool_full.load(Relaxed), 1);
        q.done(0).await;
        let next = q.next().await.expect("a batch");
        assert_eq!(next.seq, 2);
    }

    #[tokio::test]
    async fn spilled_batches_come_back_after_a_restart_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let metrics = Arc::new(TimeseriesMetrics::default());
        let q = Queue::open(dir.path(), 8, 1 << 20, Arc::clone(&metrics))
            .await
            .expect("open");
        for lines in [3, 4, 5] {
            q.push(batch(q.next_seq().await, lines, 10)).await;
        }
        assert_eq!(q.spooled().await, (0, 0));
        q.spill().await;
        assert_eq!(q.spooled().await, (3, 30));
        assert!(q.next().await.is_none(), "closed after the spill");
        drop(q);

        let metrics = Arc::new(TimeseriesMetrics::default());
        let q = Queue::open(dir.path(), 8, 1 << 20, Arc::clone(&metrics))
            .await
            .expect("reopen");
        assert_eq!(metrics.queued_lines.load(Relaxed), 12);
        assert_eq!(q.next_seq().await, 3);
        let mut lines = Vec::new();
        for _ in 0..3 {
            let b = q.next().await.expect("a batch");
            lines.push(b.lines);
            q.done(b.seq).await;
        }
        assert_eq!(lines, [3, 4, 5]);
    }
}
