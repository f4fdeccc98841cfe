//! Lamp commands: on, off, dim, resume schedule; for one lamp or a whole road segment.
//!
//! Each command is recorded (its row id is the `cmd_id` on the wire), sent over the lamp's own
//! transport and reported as acknowledged, rejected (with the device's reason), timed out, or
//! failed (not sendable). Over MQTT the command is published QoS 1 on
//! `streetgate/v1/{id}/command` and the answer is the device's `ack` message, which arrives
//! through the normal ingest pipeline and is handed to the waiting command here
//! ([`AckWaiters`]). Over Modbus the command block (holding registers 1100–1105) is written
//! through the endpoint's poller, serialised with its polls, and the acknowledgement block
//! (input registers 90–92) is read back.

mod config;

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use streetgate_protocols::codec::{EncodeError, MAX_ENCODED_LEN};
use streetgate_protocols::modbus::AckResult;
use streetgate_protocols::topic::Topic;
use streetgate_protocols::{Action, Channel, Command, DeviceId, DeviceKind};
use tokio::sync::oneshot;

pub use config::CommandsConfig;

use crate::clock::Clock;
use crate::ingest::modbus::{CommandError, Supervisor};
use crate::inventory::Inventory;
use crate::metrics::Metrics;
use crate::model::{Device, Transport};
use crate::publisher::Publisher;
use crate::store::{CommandRecord, CommandState, Store, StoreError};

/// A device's answer to a command: applied, or refused with a reason.
pub type AckAnswer = (bool, Option<String>);

/// Commands waiting for their device's acknowledgement, by (device, cmd_id).
#[derive(Debug, Default)]
pub struct AckWaiters {
    waiting: Mutex<HashMap<(DeviceId, u32), oneshot::Sender<AckAnswer>>>,
}

impl AckWaiters {
    fn register(&self, device: DeviceId, cmd_id: u32) -> oneshot::Receiver<AckAnswer> {
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((device, cmd_id), tx);
        rx
    }

    fn forget(&self, device: &DeviceId, cmd_id: u32) {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(device.clone(), cmd_id));
    }

    /// An `ack` from a device: complete the command waiting for it. `false` if none was (an
    /// answer to a config, or one that arrived after its command timed out).
    pub fn deliver(
        &self,
        device: &DeviceId,
        ref_id: u32,
        ok: bool,
        reason: Option<String>,
    ) -> bool {
        let waiter = self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(device.clone(), ref_id));
        waiter.is_some_and(|w| w.send((ok, reason)).is_ok())
    }
}

/// A lamp command as the API takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LampCommand {
    /// `on`, `off`, `dim` or `resume_schedule`.
    pub action: LampAction,
    /// Dimming level for `on` (optional) and `dim` (required), 0..=100 %.
    #[serde(default)]
    pub dim_pct: Option<u8>,
    /// Seconds until the override expires and the schedule resumes (1..=604800); permanent
    /// until `resume_schedule` when absent.
    #[serde(default)]
    pub expires_s: Option<u32>,
    /// Who asks (recorded).
    #[serde(default)]
    pub actor: Option<String>,
}

/// What to do with the lamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LampAction {
    /// Switch on (optionally dimmed).
    On,
    /// Switch off.
    Off,
    /// Set the dimming level.
    Dim,
    /// Drop any override and follow the astronomical schedule.
    ResumeSchedule,
}

impl LampCommand {
    /// The wire action, or what is wrong with the request.
    pub fn action(&self) -> Result<Action, String> {
        if let Some(p) = self.dim_pct
            && p > 100
        {
            return Err(format!("dim_pct: {p} must be 0..=100"));
        }
        if let Some(e) = self.expires_s
            && !(1..=604_800).contains(&e)
        {
            return Err(format!("expires_s: {e} must be 1..=604800 (one week)"));
        }
        Ok(match self.action {
            LampAction::On => Action::LampOn {
                dim_pct: self.dim_pct,
                expires_s: self.expires_s,
            },
            LampAction::Off => {
                if self.dim_pct.is_some() {
                    return Err("dim_pct: not allowed with action off".to_owned());
                }
                Action::LampOff {
                    expires_s: self.expires_s,
                }
            }
            LampAction::Dim => Action::Dim {
                pct: self
                    .dim_pct
                    .ok_or("dim_pct: required with action dim (0..=100)")?,
                expires_s: self.expires_s,
            },
            LampAction::ResumeSchedule => {
                if self.dim_pct.is_some() || self.expires_s.is_some() {
                    return Err(
                        "dim_pct, expires_s: not allowed with action resume_schedule".to_owned(),
                    );
                }
                Action::ResumeSchedule
            }
        })
    }
}

/// The outcome for one lamp.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandOutcome {
    /// The lamp.
    pub device_id: String,
    /// The command's id (`cmd_id` on the wire).
    pub command_id: i64,
    /// How it ended.
    pub state: CommandState,
    /// The device's reason for a rejection, or why it could not be sent.
    pub detail: String,
    /// Time from sending to the answer, ms (none when there was none).
    pub latency_ms: Option<u64>,
}

/// Sends commands and waits for their answers.
#[derive(Debug, Clone)]
pub struct Commander {
    /// Waiting commands, completed by the pipeline's `ack` readings.
    pub waiters: Arc<AckWaiters>,
    store: Arc<dyn Store>,
    inventory: Arc<Inventory>,
    publisher: Option<Arc<Publisher>>,
    modbus: Option<Arc<Supervisor>>,
    metrics: Arc<Metrics>,
    clock: Clock,
    timeout: Duration,
}

fn encode_json(cmd: &Command) -> Result<Vec<u8>, EncodeError> {
    let mut buf = [0u8; MAX_ENCODED_LEN];
    let n = streetgate_protocols::codec::encode_json(cmd, &mut buf)?;
    Ok(buf[..n].to_vec())
}

impl Commander {
    /// A commander. Without a publisher MQTT lamps cannot be commanded; without a supervisor
    /// Modbus lamps cannot.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        waiters: Arc<AckWaiters>,
        store: Arc<dyn Store>,
        inventory: Arc<Inventory>,
        publisher: Option<Arc<Publisher>>,
        modbus: Option<Arc<Supervisor>>,
        metrics: Arc<Metrics>,
        clock: Clock,
        timeout: Duration,
    ) -> Self {
        Self {
            waiters,
            store,
            inventory,
            publisher,
            modbus,
            metrics,
            clock,
            timeout,
        }
    }

    /// The lamps of a road segment, by id.
    pub fn segment_lamps(&self, segment: &str) -> Vec<Arc<Device>> {
        let mut lamps: Vec<Arc<Device>> = self
            .inventory
            .snapshot()
            .values()
            .filter(|d| {
                d.kind == DeviceKind::Streetlight && d.road_segment.as_deref() == Some(segment)
            })
            .cloned()
            .collect();
        lamps.sort_by(|a, b| a.id.cmp(&b.id));
        lamps
    }

    /// Send `action` to every lamp in `lamps` at once and wait for all the answers (each at
    /// most the acknowledgement timeout).
    pub async fn send_all(
        &self,
        lamps: &[Arc<Device>],
        action: Action,
        actor: &str,
    ) -> Result<Vec<CommandOutcome>, StoreError> {
        let sends = lamps.iter().map(|d| self.send(d, action, actor));
        futures::future::join_all(sends).await.into_iter().collect()
    }

    /// Send `action` to one lamp and wait for its answer.
    pub async fn send(
        &self,
        device: &Device,
        action: Action,
        actor: &str,
    ) -> Result<CommandOutcome, StoreError> {
        let transport = match device.transport {
            Transport::Mqtt => "mqtt",
            Transport::ModbusTcp { .. } => "modbus-tcp",
            Transport::ModbusRtu { .. } => "modbus-rtu",
        };
        let requested_ms = self.clock.now_ms();
        let mut record = CommandRecord {
            id: 0,
            device_id: device.id.to_string(),
            action: serde_json::to_value(action).unwrap_or(serde_json::Value::Null),
            actor: actor.to_owned(),
            transport: transport.to_owned(),
            state: CommandState::Sent,
            detail: String::new(),
            requested_ms,
            finished_ms: None,
        };
        record.id = self.store.insert_command(&record).await?;
        let cmd = Command {
            // Ids start at 1 and grow by one per command: they fit a u32 for billions of them;
            // the low 32 bits are what the device echoes.
            cmd_id: (record.id & 0xFFFF_FFFF) as u32,
            action,
        };
        let started = tokio::time::Instant::now();
        let (state, detail) = match &device.transport {
            Transport::Mqtt => self.over_mqtt(&device.id, &cmd).await,
            Transport::ModbusTcp { .. } | Transport::ModbusRtu { .. } => {
                self.over_modbus(device, cmd).await
            }
        };
        let latency_ms = matches!(state, CommandState::Acked | CommandState::Rejected)
            .then(|| u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
        match state {
            CommandState::Acked => self.metrics.commands_acked.fetch_add(1, Relaxed),
            _ => self.metrics.commands_failed.fetch_add(1, Relaxed),
        };
        tracing::info!(device = %device.id, command = record.id, ?action, ?state, %detail, %actor, "lamp command");
        self.store
            .finish_command(record.id, state, &detail, self.clock.now_ms())
            .await?;
        Ok(CommandOutcome {
            device_id: device.id.to_string(),
            command_id: record.id,
            state,
            detail,
            latency_ms,
        })
    }

    async fn over_mqtt(&self, id: &DeviceId, cmd: &Command) -> (CommandState, String) {
        let Some(publisher) = &self.publisher else {
            return (CommandState::Failed, "no MQTT publisher".to_owned());
        };
        let payload = match encode_json(cmd) {
            Ok(p) => p,
            Err(e) => return (CommandState::Failed, format!("encoding: {e:?}")),
        };
        let topic = Topic::new(id.clone(), Channel::Command).format();
        // Register before publishing: a fast device may answer before publish() returns.
        let answer = self.waiters.register(id.clone(), cmd.cmd_id);
        let deadline = tokio::time::Instant::now() + self.timeout;
        if let Err(e) = publisher
            .publish(topic.as_str(), payload, false, self.timeout)
            .await
        {
            self.waiters.forget(id, cmd.cmd_id);
            return (CommandState::Failed, e.to_string());
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok((true, _))) => (CommandState::Acked, String::new()),
            Ok(Ok((false, reason))) => (
                CommandState::Rejected,
                reason.unwrap_or_else(|| "rejected by the device".to_owned()),
            ),
            Ok(Err(_)) | Err(_) => {
                self.waiters.forget(id, cmd.cmd_id);
                (
                    CommandState::TimedOut,
                    format!("no acknowledgement within {} ms", self.timeout.as_millis()),
                )
            }
        }
    }

    async fn over_modbus(&self, device: &Device, cmd: Command) -> (CommandState, String) {
        let Some(modbus) = &self.modbus else {
            return (
                CommandState::Failed,
                "Modbus polling is not running".to_owned(),
            );
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        match modbus.command(device, cmd, deadline).await {
            Ok(AckResult::Applied(_)) => (CommandState::Acked, String::new()),
            Ok(AckResult::Rejected(_)) => (
                CommandState::Rejected,
                "rejected by the device (Modbus acknowledgement carries no reason)".to_owned(),
            ),
            Ok(AckResult::None) | Err(CommandError::Timeout) => (
                CommandState::TimedOut,
                format!("no acknowledgement within {} ms", self.timeout.as_millis()),
            ),
            Err(e @ (CommandError::NoPoller(_) | CommandError::Bus(_))) => {
                (CommandState::Failed, e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(action: LampAction, dim: Option<u8>, exp: Option<u32>) -> LampCommand {
        LampCommand {
            action,
            dim_pct: dim,
            expires_s: exp,
            actor: None,
        }
    }

    #[test]
    fn api_actions_map_to_wire_actions() {
        assert_eq!(
            cmd(LampAction::On, Some(60), Some(3600)).action(),
            Ok(Action::LampOn {
                dim_pct: Some(60),
                expires_s: Some(3600)
            })
        );
        assert_eq!(
            cmd(LampAction::Off, None, None).action(),
            Ok(Action::LampOff { expires_s: None })
        );
        assert_eq!(
            cmd(LampAction::Dim, Some(30), None).action(),
            Ok(Action::Dim {
                pct: 30,
                expires_s: None
            })
        );
        assert_eq!(
            cmd(LampAction::ResumeSchedule, None, None).action(),
            Ok(Action::ResumeSchedule)
        );
        for (bad, field) in [
            (cmd(LampAction::Dim, None, None), "dim_pct"),
            (cmd(LampAction::On, Some(101), None), "dim_pct"),
            (cmd(LampAction::Off, Some(10), None), "dim_pct"),
            (cmd(LampAction::Off, None, Some(0)), "expires_s"),
            (cmd(LampAction::On, None, Some(700_000)), "expires_s"),
            (cmd(LampAction::ResumeSchedule, None, Some(5)), "expires_s"),
        ] {
            let e = bad.action().unwrap_err();
            assert!(e.contains(field), "{bad:?}: {e}");
        }
    }

    #[test]
    fn waiters_complete_only_their_command() {
        let w = AckWaiters::default();
        let id = DeviceId::new("SL-1").unwrap();
        let mut rx = w.register(id.clone(), 7);
        assert!(!w.deliver(&id, 8, true, None), "another command id");
        assert!(!w.deliver(&DeviceId::new("SL-2").unwrap(), 7, true, None));
        assert!(rx.try_recv().is_err());
        assert!(w.deliver(&id, 7, false, Some("relay fault".into())));
        assert_eq!(rx.try_recv().unwrap(), (false, Some("relay fault".into())));
        // Delivered once only.
        assert!(!w.deliver(&id, 7, true, None));
    }
}
