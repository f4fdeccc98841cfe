//! `GET /api/evaluation`, `GET /api/evaluation.csv` and `GET /api/reports/bulletin`: the
//! evaluation (考核) of a period, its CSV export and the monthly bulletin (通报).

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Deserialize;

use super::access::Identity;
use super::{ApiError, ApiQuery, ApiResult, AppState};
use crate::auth::Permission;
use crate::evaluation::render::{self, By};
use crate::evaluation::{Period, Report};

/// The period (`period` + `at`, or `from` + `to`), an optional grid, and for the CSV `by`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EvaluationQuery {
    period: Option<String>,
    at: Option<String>,
    from: Option<String>,
    to: Option<String>,
    grid: Option<String>,
    by: Option<String>,
}

/// `month=YYYY-MM`, an optional grid.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BulletinQuery {
    month: Option<String>,
    grid: Option<String>,
}

/// The grid the caller may see: a grid-scoped viewer's own (another is refused), or the one
/// asked for.
fn scope(id: &Identity, asked: Option<String>) -> ApiResult<Option<String>> {
    match (&id.grid, asked) {
        (Some(own), Some(g)) if *own != g => {
            Err(super::access::out_of_scope(&format!("grid {own}")))
        }
        (Some(own), _) => Ok(Some(own.clone())),
        (None, asked) => Ok(asked.filter(|g| !g.is_empty())),
    }
}

fn invalid_period(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_period", message)
}

async fn evaluate(state: &AppState, id: &Identity, q: EvaluationQuery) -> ApiResult<Report> {
    id.require(Permission::EvaluationRead)?;
    let grid = scope(id, q.grid)?;
    let period = Period::parse(
        q.period.as_deref(),
        q.at.as_deref(),
        q.from.as_deref(),
        q.to.as_deref(),
        state.evaluation.utc_offset_min(),
    )
    .map_err(|e| invalid_period(e.0))?;
    Ok(state.evaluation.report(period, grid.as_deref()).await?)
}

pub(super) async fn report(
    State(state): State<AppState>,
    id: Identity,
    ApiQuery(mut q): ApiQuery<EvaluationQuery>,
) -> ApiResult<Json<Report>> {
    if q.by.take().is_some() {
        return Err(ApiError::bad_request(
            "invalid_query",
            "by applies to /api/evaluation.csv only (team, grid or type)",
        ));
    }
    Ok(Json(evaluate(&state, &id, q).await?))
}

pub(super) async fn csv(
    State(state): State<AppState>,
    id: Identity,
    ApiQuery(mut q): ApiQuery<EvaluationQuery>,
) -> ApiResult<impl IntoResponse> {
    let by = match q.by.take() {
        None => By::Team,
        Some(b) => By::parse(&b).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                format!("by = {b:?}: expected team, grid or type"),
            )
        })?,
    };
    let report = evaluate(&state, &id, q).await?;
    let text = render::csv(&report, by).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "csv_error",
            e.to_string(),
        )
    })?;
    let disposition = format!(
        "attachment; filename=\"evaluation-{}-{}.csv\"",
        report.period.label.replace("..", "_"),
        by.as_str()
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        text,
    ))
}

pub(super) async fn bulletin(
    State(state): State<AppState>,
    id: Identity,
    ApiQuery(q): ApiQuery<BulletinQuery>,
) -> ApiResult<impl IntoResponse> {
    id.require(Permission::EvaluationRead)?;
    let Some(month) = q.month else {
        return Err(invalid_period(
            "month is required, as YYYY-MM (e.g. month=2026-11)",
        ));
    };
    let report = evaluate(
        &state,
        &id,
        EvaluationQuery {
            period: Some("month".to_owned()),
            at: Some(month),
            from: None,
            to: None,
            grid: q.grid,
            by: None,
        },
    )
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // The document carries its own styles and inline SVG, nothing else.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
            ),
        ],
        render::bulletin(&report),
    ))
}
