//! Case routes: list with filters, detail with history.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::{Identity, out_of_scope};
use super::{ApiError, ApiQuery, ApiResult, AppState};
use crate::auth::{Permission, Role};
use crate::cases::ActionKind;
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
    /// `true`: only urgent cases; `false`: only the others.
    urgent: Option<bool>,
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

/// Narrow a filter to the caller's scope: a team member lists their team's cases, a grid
/// viewer their grid's; asking for another team or grid is refused.
fn scoped(asked: Option<String>, mine: Option<&String>, what: &str) -> ApiResult<Option<String>> {
    match (asked, mine) {
        (Some(a), Some(m)) if a != *m => Err(out_of_scope(&format!("{what} {m}"))),
        (_, Some(m)) => Ok(Some(m.clone())),
        (a, None) => Ok(a),
    }
}

pub(super) async fn list(
    State(state): State<AppState>,
    who: Identity,
    ApiQuery(q): ApiQuery<CaseQuery>,
) -> ApiResult<Json<Value>> {
    who.require(Permission::CasesRead)?;
    let team = scoped(q.team, who.team.as_ref(), "team")?;
    let grid = scoped(q.grid, who.grid.as_ref(), "grid")?;
    let now = state.clock.now_ms();
    let filter = CaseFilter {
        state: q.state,
        open: q.open,
        case_type: q.case_type,
        grid,
        team,
        urgent: q.urgent,
        overdue_at: q.overdue.then_some(now),
        limit: q.limit.min(10_000),
        offset: q.offset,
        ..CaseFilter::default()
    };
    let (total, cases) = state.store.list_cases(&filter).await?;
    let cases: Vec<Value> = cases.iter().map(|c| case_json(c, now)).collect();
    Ok(Json(
        json!({ "total": total, "offset": q.offset, "now_ms": now, "cases": cases }),
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
    who: Identity,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    who.require(Permission::CasesRead)?;
    let id = parse_id(&id)?;
    let case = visible_case(&state, &who, id).await?;
    let history = state.store.case_history(id).await?;
    let now = state.clock.now_ms();
    let mut body = case_json(&case, now);
    if let Some(obj) = body.as_object_mut() {
        obj.insert("now_ms".to_owned(), json!(now));
        obj.insert(
            "history".to_owned(),
            serde_json::to_value(history).unwrap_or(Value::Null),
        );
        obj.insert("actions".to_owned(), json!(actions(&who, &case)));
        obj.insert(
            "photos".to_owned(),
            serde_json::to_value(state.store.case_photos(id).await?).unwrap_or(Value::Null),
        );
    }
    Ok(Json(body))
}

/// Whether the caller's role may take this kind of action on a case in their scope: the
/// `cases_transition` permission, and for a team member only the team's part (accept, return,
/// resolve).
fn may_act(who: &Identity, kind: ActionKind) -> bool {
    use ActionKind as K;
    who.role.allows(Permission::CasesTransition)
        && (who.role != Role::TeamMember
            || matches!(kind, K::Accept | K::OnSite | K::Return | K::Resolve))
}

/// The actions the caller may take on a case in `state` now: what the case machine allows from
/// the state, narrowed to the caller's role. The console shows a button for each and nothing
/// else, so it never has to know the rules.
fn actions(who: &Identity, case: &crate::store::CaseRecord) -> Vec<&'static str> {
    ActionKind::allowed(case.state)
        .iter()
        // On site is reported once per acceptance.
        .filter(|k| **k != ActionKind::OnSite || case.on_site_ms.is_none())
        .filter(|k| may_act(who, **k))
        .map(|k| k.as_str())
        .collect()
}

/// A case the caller may see: their team's (team member), their grid's (grid viewer).
pub(super) async fn visible_case(
    state: &AppState,
    who: &Identity,
    id: i64,
) -> ApiResult<crate::store::CaseRecord> {
    let case = state
        .store
        .get_case(id)
        .await?
        .ok_or_else(|| ApiError::not_found("case_not_found", format!("no case {id}")))?;
    if !who.sees_case(&case) {
        let scope = match (&who.team, &who.grid) {
            (Some(t), _) => format!("the cases of team {t}"),
            (None, Some(g)) => format!("the cases of grid {g}"),
            (None, None) => "every case".to_owned(),
        };
        return Err(out_of_scope(&scope));
    }
    Ok(case)
}

pub(super) fn parse_id(id: &str) -> ApiResult<i64> {
    id.parse().map_err(|_| {
        ApiError::bad_request("invalid_case_id", format!("{id:?} is not a case number"))
    })
}

/// Body of `POST /api/cases/{id}/transitions`: the action with its fields, e.g.
/// `{"action":"accept"}` or `{"action":"dispatch","team":"lighting"}`. The actor recorded is
/// the caller; an `actor` field is ignored.
#[derive(Debug, Deserialize)]
pub(super) struct TransitionBody {
    #[serde(flatten)]
    action: crate::cases::CaseAction,
}

/// The free text of an action (reason, note), checked like any text the API stores.
fn action_text(action: &crate::cases::CaseAction) -> ApiResult<()> {
    use crate::cases::CaseAction as A;
    let (field, text) = match action {
        A::Return { reason } | A::Void { reason } => ("reason", reason),
        A::Resolve { note }
        | A::Verify { note }
        | A::Rework { note }
        | A::Reopen { note }
        | A::OnSite { note }
        | A::Supervise { note } => ("note", note),
        A::Dispatch { team } => ("team", team),
        A::Accept | A::Close => return Ok(()),
    };
    crate::auth::check_text(field, text, 10_000)
        .map_err(|e| ApiError::bad_request("invalid_text", e.0))
}

pub(super) async fn transition(
    State(state): State<AppState>,
    who: Identity,
    Path(id): Path<String>,
    super::ApiJson(body): super::ApiJson<TransitionBody>,
) -> ApiResult<Json<Value>> {
    who.require(Permission::CasesTransition)?;
    let id = parse_id(&id)?;
    action_text(&body.action)?;
    // A team member does the team's part: accept, report on site, hand back, report fixed.
    if !may_act(&who, body.action.kind()) {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            "a team member may accept, report on site, return or resolve a case; the operations centre does the rest",
        ));
    }
    // Only a case the caller may see can be worked on.
    visible_case(&state, &who, id).await?;
    let now = state.clock.now_ms();
    let updated = state
        .cases
        .act(id, body.action, &who.name, now)
        .await
        .map_err(act_error)?;
    // A team member's second return sends the case to another team (二次派遣): the answer is
    // then the case as it now is, without the history they may no longer read.
    if !who.sees_case(&updated) {
        return Ok(Json(case_json(&updated, now)));
    }
    get(State(state), who, Path(id.to_string())).await
}

/// Body of `POST /api/cases`: a case reported by a patrol or the hotline.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewCase {
    /// Ignored: the reporter recorded is the caller.
    #[serde(default)]
    #[allow(dead_code)]
    actor: Option<String>,
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
    who: Identity,
    super::ApiJson(body): super::ApiJson<NewCase>,
) -> ApiResult<Json<Value>> {
    who.require(Permission::CasesReport)?;
    use crate::cases::{Case, Opened};
    use crate::model::{CaseSource, Subject};
    if body.source == CaseSource::Sensor {
        return Err(ApiError::bad_request(
            "invalid_source",
            "source: patrol or hotline (sensor cases are raised by the gateway)",
        ));
    }
    if body.detail.trim().is_empty() || body.grid.trim().is_empty() {
        return Err(ApiError::bad_request(
            "missing_field",
            "detail and grid are required",
        ));
    }
    // The detail's length is bounded by http.max_body_bytes only (a description may be long).
    for (field, text, max) in [
        ("detail", Some(&body.detail), usize::MAX),
        ("location", body.location.as_ref(), 200),
        ("grid", Some(&body.grid), 64),
    ] {
        if let Some(text) = text {
            crate::auth::check_text(field, text, max)
                .map_err(|e| ApiError::bad_request("invalid_text", e.0))?;
        }
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
        &who.name,
        now,
    );
    let id = match state.cases.open(case, now).await? {
        Opened::Created(case) => case.id,
        Opened::AlreadyOpen(id) => id,
    };
    get(State(state), who, Path(id.to_string())).await
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
