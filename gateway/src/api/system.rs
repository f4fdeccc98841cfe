//! Health, metrics, unregistered devices and rejection counters.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::{Identity, MaybeIdentity};
use super::{ApiError, ApiQuery, ApiResult, AppState};
use crate::auth::Permission;
use crate::metrics::StoreGauges;

/// Liveness for anyone (`status` only); the details (versions, paths, counters) for a caller
/// with `system_read`.
pub(super) async fn health(
    State(state): State<AppState>,
    MaybeIdentity(id): MaybeIdentity,
) -> impl IntoResponse {
    let store = state.store.ping().await;
    let sequence = state.store.seq_summary().await.unwrap_or_default();
    let mqtt_connected = state.metrics.mqtt_connected.load(Relaxed) == 1;
    let outage = state.metrics.fleet_outage_devices.load(Relaxed);
    let role = state.runtime.role.get();
    // A standby has no broker connection by design: its health is the store's.
    let ingesting = role == crate::ha::Role::Standby || (mqtt_connected && outage == 0);
    // A store that answers but refuses writes (read-only, full) holds ingest back.
    let write_error = state.metrics.store_write_error();
    let status = match (&store, ingesting) {
        (Err(_), _) => "unavailable",
        _ if write_error.is_some() => "unavailable",
        (Ok(()), false) => "degraded",
        (Ok(()), true) => "ok",
    };
    let code = if store.is_ok() && write_error.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let rt = &state.runtime;
    if !id.is_some_and(|id| id.role.allows(Permission::SystemRead)) {
        return (code, Json(json!({ "status": status })));
    }
    (
        code,
        Json(json!({
            "role": role,
            "node": rt.node,
            "status": status,
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": rt.started.elapsed().as_secs(),
            "devices": state.inventory.len(),
            "fleet_outage_devices": outage,
            "sequence": sequence,
            "mqtt": {
                "connected": mqtt_connected,
                "subscribed": state.metrics.mqtt_subscribed.load(Relaxed) == 1,
                "broker": rt.mqtt_broker,
                "embedded_broker": rt.embedded_broker.map(|a| a.to_string()),
            },
            "store": {
                "ok": store.is_ok() && write_error.is_none(),
                "writable": write_error.is_none(),
                "backend": state.store.backend(),
                "path": rt.store_path,
                "error": store.err().map(|e| e.to_string()).or(write_error),
            },
        })),
    )
}

/// Prometheus exposition: `system_read`, or anyone with `auth.metrics_public`.
pub(super) async fn metrics(
    State(state): State<AppState>,
    MaybeIdentity(id): MaybeIdentity,
) -> ApiResult<impl IntoResponse> {
    if !state.auth.metrics_public {
        match id {
            Some(id) => id.require(Permission::SystemRead)?,
            None => {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "GET /metrics takes a bearer token with system_read (or set auth.metrics_public)",
                ));
            }
        }
    }
    // Gauges that live in the store; a failing store shows as zeros plus the error counter.
    let gauges = StoreGauges {
        devices: state.inventory.len() as u64,
        unregistered_devices: state.store.count_unregistered().await.unwrap_or(0),
        open_cases: state.store.open_case_counts().await.unwrap_or_default(),
    };
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&gauges),
    ))
}

/// `GET /api/unregistered?limit=`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UnregisteredQuery {
    #[serde(default = "default_limit")]
    limit: u32,
}

fn default_limit() -> u32 {
    1000
}

pub(super) async fn unregistered(
    State(state): State<AppState>,
    id: Identity,
    ApiQuery(q): ApiQuery<UnregisteredQuery>,
) -> ApiResult<Json<Value>> {
    id.require(Permission::SystemRead)?;
    let total = state.store.count_unregistered().await?;
    let devices = state.store.list_unregistered(q.limit.min(100_000)).await?;
    Ok(Json(json!({ "total": total, "devices": devices })))
}

pub(super) async fn rejections(
    State(state): State<AppState>,
    id: Identity,
) -> ApiResult<Json<Value>> {
    id.require(Permission::SystemRead)?;
    let since_start: BTreeMap<&str, u64> = state
        .metrics
        .rejections()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    let all_time: BTreeMap<String, u64> =
        state.store.rejection_totals().await?.into_iter().collect();
    Ok(Json(
        json!({ "since_start": since_start, "all_time": all_time }),
    ))
}
