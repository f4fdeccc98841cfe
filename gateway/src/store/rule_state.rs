//! The rule engine's snapshot (durations, offline timers, lighting windows), saved
//! periodically and loaded at start or on take-over.

use async_trait::async_trait;

use super::StoreResult;
use crate::model::UnixMs;

/// The rule-engine snapshot.
#[async_trait]
pub trait RuleStateStore: Send + Sync {
    /// Save the rule-engine snapshot (replaces the previous one).
    async fn save_rule_state(&self, state: &str, saved_ms: UnixMs) -> StoreResult<()>;
    /// The last rule-engine snapshot and when it was saved.
    async fn load_rule_state(&self) -> StoreResult<Option<(String, UnixMs)>>;
}
