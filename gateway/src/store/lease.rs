//! The active gateway's lease (`[ha]`): one row that a gateway holds by renewing it, on the
//! database's clock so that the gateways' clocks need not agree.

use async_trait::async_trait;
use serde::Serialize;

use super::StoreResult;
use crate::model::UnixMs;

/// A lease as held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseHeld {
    /// Who holds it (`ha.node`).
    pub holder: String,
    /// Increases with every new holder.
    pub epoch: i64,
    /// Until when (database clock, Unix ms).
    pub expires_ms: UnixMs,
}

/// The active gateway's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseState {
    /// The current holder, if any ever took it.
    pub held: Option<LeaseHeld>,
    /// The database's clock now.
    pub now_ms: UnixMs,
}

/// The lease row.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Take the lease for `ttl_ms` if it is free, expired or already `holder`'s; returns the
    /// new epoch, or `None` when someone else holds it.
    async fn acquire_lease(&self, holder: &str, ttl_ms: i64) -> StoreResult<Option<i64>>;
    /// Extend the lease held as (`holder`, `epoch`) to `ttl_ms` from now; `false` when it is no
    /// longer held that way (it expired and someone else took it).
    async fn renew_lease(&self, holder: &str, epoch: i64, ttl_ms: i64) -> StoreResult<bool>;
    /// Give the lease up at once (an orderly stop: the standby need not wait for the expiry).
    async fn release_lease(&self, holder: &str, epoch: i64) -> StoreResult<()>;
    /// Who holds the lease, and the database's clock.
    async fn lease_state(&self) -> StoreResult<LeaseState>;
}
