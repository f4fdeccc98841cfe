//! Device routes: inventory list/get/upsert/delete, CSV import/export, readings.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use streetgate_protocols::{DeviceId, DeviceKind};

use super::access::{Identity, out_of_scope};
use super::{ApiError, ApiJson, ApiQuery, ApiResult, AppState};
use crate::auth::Permission;
use crate::inventory::credentials::{self, IssuedCredential};
use crate::inventory::{parse_csv_checked, to_csv, validate_device};
use crate::model::Device;

/// The error code of a body that could not be read.
fn body_code(status: StatusCode) -> &'static str {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        "body_too_large"
    } else {
        "bad_request"
    }
}

fn device_id(id: &str) -> ApiResult<DeviceId> {
    DeviceId::new(id)
        .map_err(|e| ApiError::bad_request("invalid_device_id", format!("{id:?}: {e}")))
}

/// A device of the inventory that the caller may read (in their grid, if they have one).
fn known(state: &AppState, who: &Identity, id: &str) -> ApiResult<DeviceId> {
    who.require(Permission::DevicesRead)?;
    let id = device_id(id)?;
    let Some(device) = state.inventory.get(&id) else {
        return Err(ApiError::not_found(
            "device_not_found",
            format!("device {id} is not in the inventory"),
        ));
    };
    if !who.sees_grid(&device.grid) {
        return Err(out_of_scope(&format!(
            "grid {}",
            who.grid.as_deref().unwrap_or_default()
        )));
    }
    Ok(id)
}

/// Filters of `GET /api/devices`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    kind: Option<DeviceKind>,
    grid: Option<String>,
    segment: Option<String>,
    /// Devices whose id contains this text (any case).
    q: Option<String>,
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    offset: usize,
}

fn default_limit() -> usize {
    1000
}

#[derive(Debug, Serialize)]
pub(super) struct DeviceList {
    total: usize,
    offset: usize,
    devices: Vec<Device>,
    /// The devices of this page whose last word was "offline" (an offline status message or
    /// a last will, until they are heard from again).
    offline: Vec<String>,
}

pub(super) async fn list(
    State(state): State<AppState>,
    who: Identity,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<DeviceList>> {
    who.require(Permission::DevicesRead)?;
    let needle = q.q.as_deref().map(str::to_lowercase);
    let snapshot = state.inventory.snapshot();
    let mut matching: Vec<&Device> = snapshot
        .values()
        .map(AsRef::as_ref)
        // Ids are ASCII: compared in place, without a lower-case copy of each.
        .filter(|d| {
            needle
                .as_ref()
                .is_none_or(|n| contains_ignore_ascii_case(d.id.as_str(), n))
        })
        .filter(|d| who.sees_grid(&d.grid))
        .filter(|d| q.kind.is_none_or(|k| d.kind == k))
        .filter(|d| q.grid.as_ref().is_none_or(|g| &d.grid == g))
        .filter(|d| {
            q.segment
                .as_ref()
                .is_none_or(|s| d.road_segment.as_ref() == Some(s))
        })
        .collect();
    matching.sort_unstable_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
    let total = matching.len();
    let devices: Vec<Device> = matching
        .into_iter()
        .skip(q.offset)
        .take(q.limit.min(100_000))
        .cloned()
        .collect();
    let states = &state.console.device_states;
    let offline = devices
        .iter()
        .filter(|d| states.is_offline(&d.id))
        .map(|d| d.id.to_string())
        .collect();
    Ok(Json(DeviceList {
        total,
        offset: q.offset,
        devices,
        offline,
    }))
}

/// Whether `needle` (lower case) occurs in `hay`, ignoring ASCII case.
fn contains_ignore_ascii_case(hay: &str, needle: &str) -> bool {
    let (hay, needle) = (hay.as_bytes(), needle.as_bytes());
    needle.is_empty()
        || hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// `GET /api/devices/{id}`: the inventory entry and its sequence numbers as committed.
#[derive(Debug, Serialize)]
pub(super) struct DeviceView {
    #[serde(flatten)]
    device: Device,
    /// Newest sequence number accepted (none before the first MQTT message).
    last_seq: Option<u32>,
    /// Messages that never arrived.
    seq_gaps: u64,
    /// Counter restarts (reboots), not counted as gaps.
    seq_restarts: u64,
    /// Its last word was "offline" (an offline status message or a last will), and it has not
    /// been heard from since.
    offline: bool,
}

pub(super) async fn get(
    State(state): State<AppState>,
    who: Identity,
    Path(id): Path<String>,
) -> ApiResult<Json<DeviceView>> {
    let id = known(&state, &who, &id)?;
    let device = state
        .inventory
        .get(&id)
        .map(|d| Device::clone(&d))
        .ok_or_else(|| {
            ApiError::not_found(
                "device_not_found",
                format!("device {id} is not in the inventory"),
            )
        })?;
    let seq = state.store.seq_state(id.as_str()).await?;
    Ok(Json(DeviceView {
        device,
        last_seq: seq.map(|s| s.last_seq),
        seq_gaps: seq.map_or(0, |s| s.missing),
        seq_restarts: seq.map_or(0, |s| s.restarts),
        offline: state.console.device_states.is_offline(&id),
    }))
}

/// The body of `POST /api/devices`: one device object or an array of them. Each device is
/// read on its own so that an error names the device and the field, and says what is allowed
/// (an untagged enum could only say that nothing matched).
fn devices_of(body: Value) -> ApiResult<Vec<Device>> {
    let one = |i: Option<usize>, v: Value| -> ApiResult<Device> {
        serde_path_to_error::deserialize::<_, Device>(v).map_err(|e| {
            let field = e.path().to_string();
            let which = i.map_or_else(String::new, |i| format!("device {i}: "));
            let at = if field == "." {
                String::new()
            } else {
                format!("{field}: ")
            };
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_device",
                format!("{which}{at}{}", e.inner()),
            )
            .with_details(json!({ "device": i, "field": field }))
        })
    };
    match body {
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| one(Some(i), v))
            .collect(),
        v @ Value::Object(_) => one(None, v).map(|d| vec![d]),
        other => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_device",
            format!(
                "the body must be a device object or an array of them, not {}",
                match other {
                    Value::Null => "null",
                    Value::Bool(_) => "a boolean",
                    Value::Number(_) => "a number",
                    _ => "a string",
                }
            ),
        )),
    }
}

pub(super) async fn upsert(
    State(state): State<AppState>,
    who: Identity,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    who.require(Permission::DevicesWrite)?;
    let devices = devices_of(body)?;
    let mut seen = HashSet::new();
    for (i, d) in devices.iter().enumerate() {
        if let Err((field, message)) = validate_device(d) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_device",
                format!("device {i} ({}): {field}: {message}", d.id),
            ));
        }
        if let Err(message) = state.modbus_access.check(&d.transport) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_device",
                format!("device {i} ({}): transport: {message}", d.id),
            )
            .with_details(json!({ "device": i, "field": "transport" })));
        }
        if !seen.insert(d.id.clone()) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_device",
                format!("device {i}: id {} appears twice", d.id),
            ));
        }
    }
    state
        .store
        .upsert_devices(&devices, state.clock.now_ms())
        .await?;
    let credentials = issue_missing(&state, &devices).await?;
    let n = devices.len();
    state.inventory.upsert(devices);
    Ok((
        StatusCode::OK,
        Json(json!({ "upserted": n, "credentials": credentials })),
    ))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    who: Identity,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    who.require(Permission::DevicesWrite)?;
    let id = device_id(&id)?;
    let existed = state.store.delete_device(id.as_str()).await?;
    state.device_auth.remove(id.as_str());
    state.inventory.remove(&HashSet::from([id.clone()]));
    if existed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            "device_not_found",
            format!("device {id} is not in the inventory"),
        ))
    }
}

pub(super) async fn import(
    State(state): State<AppState>,
    who: Identity,
    request: Request,
) -> ApiResult<impl IntoResponse> {
    who.require(Permission::DevicesWrite)?;
    // The slot is taken before the upload is read: an import holds up to http.max_body_bytes
    // and then a store transaction, and only so many of them run at once.
    let Ok(_slot) = Arc::clone(&state.import_slots).try_acquire_owned() else {
        let n = state.import_slots_max;
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_imports",
            format!(
                "{n} inventory import{} already running (inventory.max_concurrent_imports = {n}); \
                 try again when one has finished",
                if n == 1 { " is" } else { "s are" }
            ),
        ));
    };
    let body = Bytes::from_request(request, &state)
        .await
        .map_err(|rej| ApiError::new(rej.status(), body_code(rej.status()), rej.body_text()))?;
    let devices = parse_csv_checked(&body, |t| state.modbus_access.check(t)).map_err(|e| {
        let details = serde_json::to_value(&e).unwrap_or(Value::Null);
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_inventory",
            e.to_string(),
        )
        .with_details(details)
    })?;
    state
        .store
        .upsert_devices(&devices, state.clock.now_ms())
        .await?;
    let credentials = issue_missing(&state, &devices).await?;
    let n = devices.len();
    state.inventory.upsert(devices);
    tracing::info!(
        devices = n,
        credentials_issued = credentials.len(),
        "inventory imported"
    );
    Ok(Json(json!({ "imported": n, "credentials": credentials })))
}

/// Credentials for the MQTT devices among `devices` that have none yet: shown once, in the
/// answer that registered them.
async fn issue_missing(state: &AppState, devices: &[Device]) -> ApiResult<Vec<IssuedCredential>> {
    let ids: Vec<String> = credentials::without_credentials(&state.device_auth, devices)
        .into_iter()
        .map(|d| d.id.to_string())
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(credentials::issue(
        state.store.as_ref(),
        &state.device_auth,
        &ids,
        state.clock.now_ms(),
    )
    .await?)
}

/// `POST /api/devices/{id}/credentials`: a new secret for one device (the old one stops
/// working at once; the device's open connection stays until it reconnects).
pub(super) async fn reissue_credentials(
    State(state): State<AppState>,
    who: Identity,
    Path(id): Path<String>,
) -> ApiResult<Json<IssuedCredential>> {
    who.require(Permission::DevicesWrite)?;
    let id = device_id(&id)?;
    if state.inventory.get(&id).is_none() {
        return Err(ApiError::not_found(
            "device_not_found",
            format!("device {id} is not in the inventory"),
        ));
    }
    let issued = credentials::issue(
        state.store.as_ref(),
        &state.device_auth,
        &[id.to_string()],
        state.clock.now_ms(),
    )
    .await?;
    issued.into_iter().next().map(Json).ok_or_else(|| {
        ApiError::not_found(
            "device_not_found",
            format!("device {id} is not in the inventory"),
        )
    })
}

pub(super) async fn export(
    State(state): State<AppState>,
    who: Identity,
) -> ApiResult<impl IntoResponse> {
    who.require(Permission::DevicesRead)?;
    let snapshot = state.inventory.snapshot();
    let mut devices: Vec<Device> = snapshot
        .values()
        .filter(|d| who.sees_grid(&d.grid))
        .map(|d| Device::clone(d))
        .collect();
    devices.sort_by(|a, b| a.id.cmp(&b.id));
    Ok((
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        to_csv(&devices),
    ))
}

pub(super) async fn latest(
    State(state): State<AppState>,
    who: Identity,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = known(&state, &who, &id)?;
    let readings = state.store.latest_readings(id.as_str()).await?;
    let Some(newest) = readings.first() else {
        return Err(ApiError::not_found(
            "no_reading",
            format!("device {id} has not sent an accepted message yet"),
        ));
    };
    let newest = newest.body.clone();
    let by_type: BTreeMap<String, Value> = readings
        .into_iter()
        .map(|r| (r.reading_type, r.body))
        .collect();
    Ok(Json(
        json!({ "device_id": id.as_str(), "latest": newest, "by_type": by_type }),
    ))
}

/// `GET /api/devices/{id}/history?limit=&from_ms=&to_ms=`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    #[serde(default = "default_history")]
    limit: u32,
    /// Only readings received at or after this time (the readings around a case's fault).
    from_ms: Option<i64>,
    /// Only readings received at or before this time.
    to_ms: Option<i64>,
}

fn default_history() -> u32 {
    100
}

pub(super) async fn history(
    State(state): State<AppState>,
    who: Identity,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<Value>> {
    let id = known(&state, &who, &id)?;
    let from = q.from_ms.unwrap_or(i64::MIN);
    let to = q.to_ms.unwrap_or(i64::MAX);
    if from > to {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("from_ms ({from}) is after to_ms ({to})"),
        ));
    }
    let readings = state
        .store
        .reading_history_between(id.as_str(), from, to, q.limit.min(10_000))
        .await?;
    let readings: Vec<Value> = readings.into_iter().map(|r| r.body).collect();
    Ok(Json(
        json!({ "device_id": id.as_str(), "readings": readings }),
    ))
}
