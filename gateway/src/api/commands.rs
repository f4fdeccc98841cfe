//! Lamp commands (`POST /api/devices/{id}/command`, `POST /api/segments/{segment}/command`,
//! `GET /api/commands`) and alert deliveries (`GET /api/alerts/deliveries`).

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};
use streetgate_protocols::{DeviceId, DeviceKind};

use super::{ApiError, ApiJson, ApiQuery, ApiResult, AppState};
use crate::commands::{CommandOutcome, LampCommand};
use crate::store::{CommandState, DeliveryStatus};

fn actor(cmd: &LampCommand) -> ApiResult<String> {
    let actor = cmd.actor.clone().unwrap_or_else(|| "api".to_owned());
    if actor.is_empty() || actor.len() > 64 {
        return Err(ApiError::bad_request(
            "invalid_actor",
            "actor: 1 to 64 characters naming who sends the command",
        ));
    }
    Ok(actor)
}

fn summary(outcomes: &[CommandOutcome]) -> Value {
    let count = |s: CommandState| outcomes.iter().filter(|o| o.state == s).count();
    json!({
        "total": outcomes.len(),
        "acked": count(CommandState::Acked),
        "rejected": count(CommandState::Rejected),
        "timed_out": count(CommandState::TimedOut),
        "failed": count(CommandState::Failed),
        "results": outcomes,
    })
}

/// One lamp: answers when the lamp acknowledged, refused, or the acknowledgement timed out.
pub(super) async fn device(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(cmd): ApiJson<LampCommand>,
) -> ApiResult<Json<Value>> {
    let action = cmd
        .action()
        .map_err(|e| ApiError::bad_request("invalid_command", e))?;
    let actor = actor(&cmd)?;
    let device = DeviceId::new(&id)
        .ok()
        .and_then(|id| state.inventory.get(&id))
        .ok_or_else(|| ApiError::not_found("device_not_found", format!("no device {id:?}")))?;
    if device.kind != DeviceKind::Streetlight {
        return Err(ApiError::bad_request(
            "not_a_lamp",
            format!(
                "{id} is a {}; only streetlights take lamp commands",
                device.kind.as_str()
            ),
        ));
    }
    let outcome = state.commander.send(&device, action, &actor).await?;
    Ok(Json(summary(std::slice::from_ref(&outcome))))
}

/// Every lamp of a road segment at once.
pub(super) async fn segment(
    State(state): State<AppState>,
    Path(segment): Path<String>,
    ApiJson(cmd): ApiJson<LampCommand>,
) -> ApiResult<Json<Value>> {
    let action = cmd
        .action()
        .map_err(|e| ApiError::bad_request("invalid_command", e))?;
    let actor = actor(&cmd)?;
    let lamps = state.commander.segment_lamps(&segment);
    if lamps.is_empty() {
        return Err(ApiError::not_found(
            "segment_not_found",
            format!("no streetlight on road segment {segment:?}"),
        ));
    }
    let outcomes = state.commander.send_all(&lamps, action, &actor).await?;
    let mut body = summary(&outcomes);
    if let Some(o) = body.as_object_mut() {
        o.insert("segment".to_owned(), json!(segment));
    }
    Ok(Json(body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CommandsQuery {
    device: Option<String>,
    #[serde(default = "default_limit")]
    limit: u32,
}

fn default_limit() -> u32 {
    100
}

/// Recent commands, newest first.
pub(super) async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<CommandsQuery>,
) -> ApiResult<Json<Value>> {
    let commands = state
        .store
        .list_commands(q.device.as_deref(), q.limit.min(1000))
        .await?;
    Ok(Json(json!({ "commands": commands })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeliveriesQuery {
    sink: Option<String>,
    status: Option<DeliveryStatus>,
    #[serde(default = "default_limit")]
    limit: u32,
}

/// Alert delivery records, newest first.
pub(super) async fn deliveries(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> ApiResult<Json<Value>> {
    let deliveries = state
        .store
        .list_deliveries(q.sink.as_deref(), q.status, q.limit.min(1000))
        .await?;
    Ok(Json(json!({ "deliveries": deliveries })))
}
