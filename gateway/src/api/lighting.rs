//! `GET /api/lighting`: lighting rate (亮灯率) per segment, grid and city, now and over a period.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::Identity;
use super::{ApiError, ApiQuery, ApiResult, AppState};
use crate::auth::Permission;

/// Filters: one segment or grid; a period `[from_ms, to_ms)` for the time-weighted rate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LightingQuery {
    segment: Option<String>,
    grid: Option<String>,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
}

pub(super) async fn rates(
    State(state): State<AppState>,
    id: Identity,
    ApiQuery(mut q): ApiQuery<LightingQuery>,
) -> ApiResult<Json<Value>> {
    id.require(Permission::LightingRead)?;
    // A grid-scoped viewer sees their grid (and not the city's figure).
    if let Some(g) = &id.grid {
        if q.grid.as_ref().is_some_and(|x| x != g) {
            return Err(super::access::out_of_scope(&format!("grid {g}")));
        }
        q.grid = Some(g.clone());
    }
    let snapshot_grid_of = |segment: &str| {
        state
            .lighting
            .borrow()
            .now
            .segments
            .iter()
            .find(|s| s.segment == segment)
            .map(|s| s.grid.clone())
    };
    if let (Some(g), Some(segment)) = (&id.grid, &q.segment) {
        if snapshot_grid_of(segment).as_ref() != Some(g) {
            return Err(super::access::out_of_scope(&format!("grid {g}")));
        }
    }
    let snapshot = state.lighting.borrow().clone();
    let segments: Vec<_> = snapshot
        .now
        .segments
        .iter()
        .filter(|s| q.segment.as_ref().is_none_or(|x| *x == s.segment))
        .filter(|s| q.grid.as_ref().is_none_or(|g| *g == s.grid))
        .collect();
    let grids: Vec<_> = snapshot
        .now
        .grids
        .iter()
        .filter(|g| q.grid.as_ref().is_none_or(|x| *x == g.grid))
        .collect();
    let period = match (q.from_ms, q.to_ms) {
        (Some(from), Some(to)) if from < to => {
            json!({ "from_ms": from, "to_ms": to, "rate": snapshot.history.rate(q.segment.as_deref(), from, to) })
        }
        (None, None) => Value::Null,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_period",
                "from_ms and to_ms go together, with from_ms < to_ms (Unix milliseconds)",
            ));
        }
    };
    Ok(Json(json!({
        "at_ms": snapshot.at_ms,
        "in_switch_on_hours": snapshot.now.city.is_some(),
        "city": if id.grid.is_some() { None } else { snapshot.now.city },
        "grids": grids,
        "segments": segments,
        "period": period,
    })))
}

/// `GET /api/lighting/nights`: a period (`from`/`to` dates, or `period` + `at` as for the
/// evaluation; by default the last 14 nights), one grid or segment.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NightsQuery {
    period: Option<String>,
    at: Option<String>,
    from: Option<String>,
    to: Option<String>,
    grid: Option<String>,
    segment: Option<String>,
}

/// Nights shown when no period is asked for.
const DEFAULT_NIGHTS: i64 = 14;

pub(super) async fn nights(
    State(state): State<AppState>,
    id: Identity,
    ApiQuery(mut q): ApiQuery<NightsQuery>,
) -> ApiResult<Json<Value>> {
    use crate::evaluation::{Period, PeriodKind};
    id.require(Permission::LightingRead)?;
    // A grid-scoped viewer: their grid only.
    if let Some(g) = &id.grid {
        if q.grid.as_ref().is_some_and(|x| x != g) {
            return Err(super::access::out_of_scope(&format!("grid {g}")));
        }
        q.grid = Some(g.clone());
    }
    let offset = state.evaluation.utc_offset_min();
    let period = if q.period.is_none() && q.at.is_none() && q.from.is_none() && q.to.is_none() {
        let today = (state.clock.now_ms() + i64::from(offset) * 60_000).div_euclid(86_400_000);
        Period {
            kind: PeriodKind::Range,
            first_day: today - DEFAULT_NIGHTS + 1,
            end_day: today + 1,
            utc_offset_min: offset,
        }
    } else {
        Period::parse(
            q.period.as_deref(),
            q.at.as_deref(),
            q.from.as_deref(),
            q.to.as_deref(),
            offset,
        )
        .map_err(|e| ApiError::bad_request("invalid_period", e.0))?
    };
    let scope = crate::evaluation::lighting::NightsScope {
        grid: q.grid.as_deref().filter(|g| !g.is_empty()),
        segment: q.segment.as_deref().filter(|s| !s.is_empty()),
    };
    // Both filters apply: a grid viewer asking for a segment of another grid gets nothing.
    let found = state.evaluation.lighting_nights(&period, scope).await?;
    let (from, to) = period.dates();
    Ok(Json(json!({
        "from": from,
        "to": to,
        "utc_offset_min": offset,
        "city": found.city,
        "grids": found.grids,
        "segments": found.segments,
    })))
}
