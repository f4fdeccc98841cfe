//! Case routes: list with filters, detail with history.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiQuery, ApiResult, AppState};
use crate::cases::service::ActError;
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
    let now = state.clock.now_ms();
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
    let mut body = case_json(&case, state.clock.now_ms());
    if let Some(obj) = body.as_object_mut() {
        obj.insert(
            "history".to_owned(),
            serde_json::to_value(history).unwrap_or(Value::Null),
        );
    }
    Ok(Json(body))
}

fn parse_id(id: &str) -> ApiResult<i64> {
    id.parse().map_err(|_| {
        ApiError::bad_request("invalid_case_id", format!("{id:?} is not a case number"))
    })
}

/// Body of `POST /api/cases/{id}/transitions`: who acts, and the action with its fields, e.g.
/// `{"actor":"li.wei","action":"accept"}` or `{"actor":"centre","action":"dispatch","team":"lighting"}`.
#[derive(Debug, Deserialize)]
pub(super) struct TransitionBody {
    actor: String,
    #[serde(flatten)]
    action: crate::cases::CaseAction,
}

pub(super) async fn transition(
    State(state): State<AppState>,
    Path(id): Path<String>,
    super::ApiJson(body): super::ApiJson<TransitionBody>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&id)?;
    if body.actor.trim().is_empty() {
        return Err(ApiError::bad_request(
            "actor_required",
            "actor: who performs the transition",
        ));
    }
    let actor = body.actor.trim();
    let now = state.clock.now_ms();
    state
        .cases
        .act(id, body.action, actor, now)
        .await
        .map_err(act_error)?;
    get(State(state), Path(id.to_string())).await
}

/// Body of `POST /api/cases`: a case reported by a patrol or the hotline.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewCase {
    actor: String,
    source: crate::model::CaseSource,
    #[serde(rename = "type")]
    case_type: CaseType,
    grid: String,
    detail: String,
    /// The device concerned, if any.
    device_id: Option<String>,
    /// Where, when there is no device (street and number, landmark).
    location: Option<String>,
    #[serde(default)]
    urgent: bool,
}

pub(super) async fn create(
    State(state): State<AppState>,
    super::ApiJson(body): super::ApiJson<NewCase>,
) -> ApiResult<Json<Value>> {
    use crate::cases::{Case, Opened};
    use crate::model::{CaseSource, Subject};
    if body.source == CaseSource::Sensor {
        return Err(ApiError::bad_request(
            "invalid_source",
            "source: patrol or hotline (sensor cases are raised by the gateway)",
        ));
    }
    if body.actor.trim().is_empty() || body.detail.trim().is_empty() || body.grid.trim().is_empty()
    {
        return Err(ApiError::bad_request(
            "missing_field",
            "actor, detail and grid are required",
        ));
    }
    let subject = match (&body.device_id, &body.location) {
        (Some(d), _) => {
            Subject::Device(streetgate_protocols::DeviceId::new(d).map_err(|e| {
                ApiError::bad_request("invalid_device_id", format!("device_id: {e}"))
            })?)
        }
        (None, Some(l)) if !l.trim().is_empty() => Subject::Segment(format!("place:{}", l.trim())),
        _ => {
            return Err(ApiError::bad_request(
                "missing_field",
                "device_id or location is required",
            ));
        }
    };
    let now = state.clock.now_ms();
    let case = Case::register(
        body.case_type,
        body.source,
        subject,
        None,
        body.grid,
        body.urgent,
        Vec::new(),
        body.detail,
        state.cases.policy(),
        body.actor.trim(),
        now,
    );
    let id = match state.cases.open(case, now).await? {
        Opened::Created(case) => case.id,
        Opened::AlreadyOpen(id) => id,
    };
    get(State(state), Path(id.to_string())).await
}

fn act_error(e: ActError) -> ApiError {
    use axum::http::StatusCode;
    match e {
        ActError::NotFound(id) => ApiError::not_found("case_not_found", format!("no case {id}")),
        ActError::Unreadable(_) => ApiError::bad_request("case_unreadable", e.to_string()),
        ActError::Refused(_) => {
            ApiError::new(StatusCode::CONFLICT, "transition_refused", e.to_string())
        }
        ActError::Changed(_) => ApiError::new(StatusCode::CONFLICT, "case_changed", e.to_string()),
        ActError::Store(e) => e.into(),
    }
}
