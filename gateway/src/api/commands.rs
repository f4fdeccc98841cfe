//! Lamp commands (`POST /api/devices/{id}/command`, `POST /api/segments/{segment}/command`,
//! `GET /api/commands`) and alert deliveries (`GET /api/alerts/deliveries`).

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};
use streetgate_protocols::{DeviceId, DeviceKind};

use super::access::Identity;
use super::{ApiError, ApiJson, ApiQuery, ApiResult, AppState};
use crate::auth::Permission;
use crate::commands::{CommandOutcome, LampCommand};
use crate::store::{CommandState, DeliveryStatus};

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
/// The command's `actor` is the caller (an `actor` in the body is ignored).
pub(super) async fn device(
    State(state): State<AppState>,
    who: Identity,
    Path(id): Path<String>,
    ApiJson(cmd): ApiJson<LampCommand>,
) -> ApiResult<Json<Value>> {
    who.require(Permission::LampCommand)?;
    let action = cmd
        .action()
        .map_err(|e| ApiError::bad_request("invalid_command", e))?;
    let actor = who.name.clone();
    let device = DeviceId::new(&id)
        .ok()
        .and_then(|id| state.inventory.get(&id))
        .ok_or_else(|| ApiError::not_found("device_not_found", format!("no device {id:?}")))?;
    if !who.sees_grid(&device.grid) {
        return Err(super::access::out_of_scope(&format!(
            "grid {}",
            who.grid.as_deref().unwrap_or_default()
        )));
    }
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
    who: Identity,
    Path(segment): Path<String>,
    ApiJson(cmd): ApiJson<LampCommand>,
) -> ApiResult<Json<Value>> {
    who.require(Permission::LampCommand)?;
    let action = cmd
        .action()
        .map_err(|e| ApiError::bad_request("invalid_command", e))?;
    let actor = who.name.clone();
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
    id: Identity,
    ApiQuery(q): ApiQuery<CommandsQuery>,
) -> ApiResult<Json<Value>> {
    id.require(Permission::CommandsRead)?;
    let mut commands = state
        .store
        .list_commands(q.device.as_deref(), q.limit.min(1000))
        .await?;
    // A grid's viewer sees the commands to its grid's lamps only.
    if id.grid.is_some() {
        commands.retain(|c| {
            streetgate_protocols::DeviceId::new(&c.device_id)
                .ok()
                .and_then(|d| state.inventory.get(&d))
                .is_some_and(|d| id.sees_grid(&d.grid))
        });
    }
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
    id: Identity,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> ApiResult<Json<Value>> {
    id.require(Permission::SystemRead)?;
    let mut deliveries = state
        .store
        .list_deliveries(q.sink.as_deref(), q.status, q.limit.min(1000))
        .await?;
    // A grid's viewer sees the deliveries of its grid's cases only.
    if id.grid.is_some() {
        let mut kept = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            let case = state.store.get_case(d.case_id).await?;
            if case.is_some_and(|c| id.sees_grid(&c.grid)) {
                kept.push(d);
            }
        }
        deliveries = kept;
    }
    Ok(Json(json!({ "deliveries": deliveries })))
}
