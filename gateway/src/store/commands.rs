//! Lamp commands sent through the API and their outcome.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreResult;
use crate::model::UnixMs;

/// State of a lamp command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandState {
    /// Sent, waiting for the device's acknowledgement.
    Sent,
    /// Applied by the device.
    Acked,
    /// Refused by the device (the detail says why).
    Rejected,
    /// No acknowledgement in time.
    TimedOut,
    /// Could not be sent (broker or device unreachable).
    Failed,
}

/// A lamp command as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandRecord {
    /// Row id; the command's `cmd_id` on the wire.
    pub id: i64,
    /// Target lamp.
    pub device_id: String,
    /// The action, as its wire JSON.
    pub action: serde_json::Value,
    /// Who asked.
    pub actor: String,
    /// `mqtt`, `modbus-tcp` or `modbus-rtu`.
    pub transport: String,
    /// Where it stands.
    pub state: CommandState,
    /// Rejection reason or failure.
    pub detail: String,
    /// Requested at.
    pub requested_ms: UnixMs,
    /// Acknowledged, rejected, timed out or failed at.
    pub finished_ms: Option<UnixMs>,
}

/// Lamp commands.
#[async_trait]
pub trait CommandStore: Send + Sync {
    /// Record a new command (state `sent`); returns its id (the wire `cmd_id`).
    async fn insert_command(&self, command: &CommandRecord) -> StoreResult<i64>;
    /// Set a command's final state.
    async fn finish_command(
        &self,
        id: i64,
        state: CommandState,
        detail: &str,
        at_ms: UnixMs,
    ) -> StoreResult<()>;
    /// Commands, newest first, optionally of one device.
    async fn list_commands(
        &self,
        device_id: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<CommandRecord>>;
}
