//! Case routes: list with filters, detail with history.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiQuery, ApiResult, AppState};
use crate::clock::now_ms;
use crate::model::{CaseState, CaseType};
use crate::store::CaseFilter;

/// Filters of `GET /api/cases`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CaseQuery {
    state: Option<CaseState>,
    open: Option<bool>,
    #[serde(rename = "type")]
    case_type: Option<CaseType>,
    grid: Option<String>,
    team: Option<String>,
    /// `true`: only cases past their handling deadline and not yet resolved.
    #[serde(default)]
    overdue: bool,
    #[serde(default = "default_limit")]
    limit: u32,
    #[serde(default)]
    offset: u32,
}

fn default_limit() -> u32 {
    100
}

pub(super) async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<CaseQuery>,
) -> ApiResult<Json<Value>> {
    let now = now_ms();
    let filter = CaseFilter {
        state: q.state,
        open: q.open,
        case_type: q.case_type,
        grid: q.grid,
        team: q.team,
        overdue_at: q.overdue.then_some(now),
        limit: q.limit.min(10_000),
        offset: q.offset,
    };
    let (total, cases) = state.store.list_cases(&filter).await?;
    let cases: Vec<Value> = cases.iter().map(|c| case_json(c, now)).collect();
    Ok(Json(
        json!({ "total": total, "offset": q.offset, "cases": cases }),
    ))
}

/// A case as served: the record plus the derived `overdue` flag.
pub(super) fn case_json(c: &crate::store::CaseRecord, now: i64) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
    let overdue =
        c.due_ms.is_some_and(|d| d < now) && crate::store::UNRESOLVED_STATES.contains(&c.state);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("overdue".to_owned(), Value::Bool(overdue));
    }
    v
}

pub(super) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id: i64 = id.parse().map_err(|_| {
        ApiError::bad_request("invalid_case_id", format!("{id:?} is not a case number"))
    })?;
    let case = state
        .store
        .get_case(id)
        .await?
        .ok_or_else(|| ApiError::not_found("case_not_found", format!("no case {id}")))?;
    let history = state.store.case_history(id).await?;
    let mut body = case_json(&case, now_ms());
    if let Some(obj) = body.as_object_mut() {
        obj.insert(
            "history".to_owned(),
            serde_json::to_value(history).unwrap_or(Value::Null),
        );
    }
    Ok(Json(body))
}
