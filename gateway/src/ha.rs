//! Active and standby (`[ha]`): two gateways on one PostgreSQL and one external broker. The
//! active holds a lease in the store ([`LeaseStore`](crate::store::LeaseStore)) and renews it; the standby serves the API
//! for reading, holds no device state, and takes the lease once it has expired: then it starts
//! as the active, loading the rule state and taking over the broker session (same
//! `mqtt.client_id`, persistent), whose unacknowledged messages the broker delivers again.
//!
//! Times follow from `ha.takeover_s` (T): the lease lasts 0.8 T and is renewed every 0.2 T; the
//! standby tries every 0.1 T, so it holds the lease at most 0.9 T after the active last renewed
//! it. An active that cannot renew for 0.6 T stops (exit status 1), 0.2 T before the lease can
//! expire: the two are never active at once while their clocks run at about the same rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// `[ha]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HaConfig {
    /// Run as one of an active/standby pair (needs PostgreSQL and an external broker).
    pub enabled: bool,
    /// This gateway's name in the lease; empty = `<host name>-<process id>`.
    pub node: String,
    /// Longest time from the active's death to the standby taking over, s.
    pub takeover_s: u64,
}

impl Default for HaConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            node: String::new(),
            takeover_s: 15,
        }
    }
}

/// A setting that is wrong: key, value, what is allowed.
pub type Invalid = (&'static str, String, &'static str);

impl HaConfig {
    /// Check the section against the rest of the configuration.
    pub fn validate(&self, postgres: bool, embedded_broker: bool) -> Result<(), Invalid> {
        if !self.enabled {
            return Ok(());
        }
        if !postgres {
            return Err((
                "ha.enabled",
                "true".into(),
                "store.backend = \"postgres\" (the gateways share one database)",
            ));
        }
        if embedded_broker {
            return Err((
                "ha.enabled",
                "true".into(),
                "an external broker: mqtt.url and broker.embedded = false (the gateways share its session)",
            ));
        }
        if !(2..=3600).contains(&self.takeover_s) {
            return Err(("ha.takeover_s", self.takeover_s.to_string(), "2 to 3600 s"));
        }
        if self.node.len() > 128 || self.node.chars().any(char::is_control) {
            return Err((
                "ha.node",
                format!("{:?}", self.node),
                "at most 128 characters, no control characters",
            ));
        }
        Ok(())
    }

    /// This gateway's name in the lease.
    pub fn node_name(&self) -> String {
        if !self.node.is_empty() {
            return self.node.clone();
        }
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "gateway".to_owned());
        format!("{host}-{}", std::process::id())
    }

    /// The lease's timing.
    pub fn timing(&self) -> Timing {
        let t = Duration::from_secs(self.takeover_s);
        Timing {
            ttl: t.mul_f64(0.8),
            renew_every: t.mul_f64(0.2),
            give_up_after: t.mul_f64(0.6),
            poll_every: t.mul_f64(0.1),
        }
    }
}

/// How the lease is held and watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a renewal holds.
    pub ttl: Duration,
    /// How often the active renews.
    pub renew_every: Duration,
    /// An active that has not renewed for this long stops.
    pub give_up_after: Duration,
    /// How often the standby tries to take the lease.
    pub poll_every: Duration,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// This process's part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// No `[ha]`: the only gateway on its store.
    Standalone,
    /// Holds the lease: ingests, raises cases, alerts.
    Active,
    /// Waits for the lease; serves the API for reading.
    Standby,
}

/// The role, shared with `/api/health`.
#[derive(Debug, Default)]
pub struct RoleCell(AtomicU8);

impl RoleCell {
    /// A cell holding `role`.
    pub fn new(role: Role) -> Self {
        let cell = Self::default();
        cell.set(role);
        cell
    }

    /// Change the role.
    pub fn set(&self, role: Role) {
        self.0.store(role as u8, Ordering::Relaxed);
    }

    /// The role now.
    pub fn get(&self) -> Role {
        match self.0.load(Ordering::Relaxed) {
            1 => Role::Active,
            2 => Role::Standby,
            _ => Role::Standalone,
        }
    }
}

/// Wait until this node holds the lease (or `cancel` fires: `None`). Store errors are logged
/// and retried: a standby outlives a database outage.
pub async fn acquire(
    store: &Arc<dyn Store>,
    node: &str,
    timing: Timing,
    cancel: &CancellationToken,
) -> Option<i64> {
    let mut holder_seen: Option<String> = None;
    loop {
        match store.acquire_lease(node, millis(timing.ttl)).await {
            Ok(Some(epoch)) => {
                tracing::info!(node, epoch, "lease taken: this gateway is the active one");
                return Some(epoch);
            }
            Ok(None) => {
                if let Ok(state) = store.lease_state().await {
                    let holder = state.held.map(|h| h.holder);
                    if holder != holder_seen {
                        tracing::info!(node, active = ?holder, "standby: another gateway is active");
                        holder_seen = holder;
                    }
                }
            }
            Err(e) => tracing::warn!(node, error = %e, "standby: cannot reach the lease"),
        }
        tokio::select! {
            () = cancel.cancelled() => return None,
            () = tokio::time::sleep(timing.poll_every) => {}
        }
    }
}

/// The lease as held by the active gateway: renewed by a task until [`ActiveLease::release`].
#[derive(Debug)]
pub struct ActiveLease {
    store: Arc<dyn Store>,
    node: String,
    epoch: i64,
    keeper: JoinHandle<()>,
    stop: CancellationToken,
    lost: Arc<std::sync::atomic::AtomicBool>,
}

impl ActiveLease {
    /// Renew the lease every `timing.renew_every`; when it cannot be renewed for
    /// `timing.give_up_after` (or someone else took it), cancel `fence` so that this gateway
    /// stops before the standby starts.
    pub fn keep(
        store: Arc<dyn Store>,
        node: String,
        epoch: i64,
        timing: Timing,
        fence: CancellationToken,
    ) -> Self {
        let stop = CancellationToken::new();
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let keeper = tokio::spawn(renew(
            Arc::clone(&store),
            node.clone(),
            epoch,
            timing,
            fence,
            stop.clone(),
            Arc::clone(&lost),
        ));
        Self {
            store,
            node,
            epoch,
            keeper,
            stop,
            lost,
        }
    }

    /// The lease was lost (the gateway was fenced out).
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Stop renewing and give the lease up, so the standby takes over at once.
    pub async fn release(self) {
        self.stop.cancel();
        let _ = self.keeper.await;
        if self.lost.load(Ordering::Relaxed) {
            return;
        }
        match self.store.release_lease(&self.node, self.epoch).await {
            Ok(()) => tracing::info!(node = %self.node, "lease released"),
            Err(e) => {
                tracing::warn!(error = %e, "releasing the lease failed; it expires by itself")
            }
        }
    }
}

async fn renew(
    store: Arc<dyn Store>,
    node: String,
    epoch: i64,
    timing: Timing,
    fence: CancellationToken,
    stop: CancellationToken,
    lost: Arc<std::sync::atomic::AtomicBool>,
) {
    // When the last renewal was sent (the database's expiry counts from a moment after it).
    let mut renewed_at = Instant::now();
    let mut wait = timing.renew_every;
    let reason = loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let deadline = renewed_at + timing.give_up_after;
        let sent = Instant::now();
        let renewal = store.renew_lease(&node, epoch, millis(timing.ttl));
        match tokio::time::timeout_at(deadline.into(), renewal).await {
            Ok(Ok(true)) => {
                renewed_at = sent;
                wait = timing.renew_every;
            }
            Ok(Ok(false)) => break "another gateway holds the lease".to_owned(),
            Ok(Err(e)) if Instant::now() < deadline => {
                tracing::warn!(error = %e, "renewing the lease failed; retrying");
                wait = timing.poll_every;
            }
            Ok(Err(e)) => {
                break format!(
                    "the lease could not be renewed for {:?}: {e}",
                    timing.give_up_after
                );
            }
            Err(_) => {
                break format!(
                    "the lease could not be renewed for {:?}: the store did not answer",
                    timing.give_up_after
                );
            }
        }
    };
    tracing::error!(
        node,
        epoch,
        reason,
        "lease lost: stopping so that the standby takes over"
    );
    lost.store(true, Ordering::Relaxed);
    fence.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_keeps_the_takeover_bound() {
        let t = HaConfig::default().timing();
        assert_eq!(t.ttl, Duration::from_secs(12));
        // The standby holds the lease at most ttl + one poll after the last renewal…
        assert!(t.ttl + t.poll_every <= Duration::from_secs(15));
        // …and the active gives up well before the lease it last renewed can expire.
        assert!(t.give_up_after + t.poll_every < t.ttl);
    }

    /// An active whose lease was taken stops (its token is cancelled) at the next renewal, and
    /// does not release the lease it no longer holds.
    #[tokio::test]
    async fn an_active_that_lost_its_lease_is_fenced() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = crate::store::SqliteStore::open(&dir.path().join("db.sqlite"))
            .await
            .unwrap();
        let store: Arc<dyn Store> = Arc::new(sqlite.clone());
        let timing = Timing {
            ttl: Duration::from_millis(800),
            renew_every: Duration::from_millis(50),
            give_up_after: Duration::from_millis(600),
            poll_every: Duration::from_millis(50),
        };
        let epoch = store.acquire_lease("a", 800).await.unwrap().unwrap();
        let fence = CancellationToken::new();
        let lease = ActiveLease::keep(Arc::clone(&store), "a".into(), epoch, timing, fence.clone());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!fence.is_cancelled(), "renewals keep it");
        sqlx::query("UPDATE gateway_lease SET holder = 'b', epoch = epoch + 1")
            .execute(sqlite.pool())
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(2), fence.cancelled())
            .await
            .expect("fenced");
        assert!(lease.lost());
        lease.release().await;
        let held = store.lease_state().await.unwrap().held.unwrap();
        assert_eq!(held.holder, "b", "b's lease is left alone");
        assert!(held.expires_ms > 0);
    }

    #[test]
    fn needs_postgres_and_an_external_broker() {
        let on = HaConfig {
            enabled: true,
            ..HaConfig::default()
        };
        assert_eq!(on.validate(false, false).unwrap_err().0, "ha.enabled");
        assert_eq!(on.validate(true, true).unwrap_err().0, "ha.enabled");
        assert!(on.validate(true, false).is_ok());
        let quick = HaConfig {
            takeover_s: 1,
            ..on.clone()
        };
        assert_eq!(quick.validate(true, false).unwrap_err().0, "ha.takeover_s");
        assert!(HaConfig::default().validate(false, true).is_ok());
        assert_eq!(RoleCell::new(Role::Standby).get(), Role::Standby);
    }
}
