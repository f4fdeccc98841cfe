//! The HTTP API (axum). Every error is JSON `{"code": "...", "message": "..."}` with a fitting
//! status code.
//!
//! Every route but `/api/health` (anonymous callers: status only), `/api/openapi.json` and
//! `POST /api/session` (sign-in) takes an [`access::Identity`]: a bearer API token, or the
//! session cookie (with `X-CSRF-Token` on mutating requests). Anonymous → 401, a role without
//! the route's permission → 403. Every mutating call is recorded in the audit log.
//!
//! | route | |
//! |---|---|
//! | `GET /api/health` | liveness; store and MQTT status when signed in |
//! | `GET /metrics` | Prometheus text exposition (`system_read`, or `auth.metrics_public`) |
//! | `POST /api/session` | sign in (sets the session cookie, returns the CSRF token) |
//! | `GET /api/session` | who am I, with my permissions |
//! | `DELETE /api/session` | sign out |
//! | `POST /api/session/password` | change my password |
//! | `GET /api/users`, `POST /api/users` | users (admin) |
//! | `DELETE /api/users/{name}` | disable a user (admin) |
//! | `POST /api/users/{name}/password` | set a user's password (admin) |
//! | `GET /api/tokens`, `POST /api/tokens` | API tokens (admin; a new token is shown once) |
//! | `DELETE /api/tokens/{id}` | revoke a token (admin) |
//! | `GET /api/audit` | the audit log of mutating calls (admin) |
//! | `GET /api/devices` | inventory (filters `kind`, `grid`, `segment`, `q` (id contains); `limit`, `offset`) |
//! | `POST /api/devices` | upsert one device or an array (JSON) |
//! | `POST /api/devices/import` | CSV import, all or nothing |
//! | `GET /api/devices/export` | the inventory as CSV |
//! | `GET /api/devices/{id}` | one device |
//! | `DELETE /api/devices/{id}` | remove a device and its readings |
//! | `POST /api/devices/{id}/credentials` | a new MQTT secret for a device (shown once) |
//! | `GET /api/devices/{id}/latest` | latest reading of each type |
//! | `GET /api/devices/{id}/history` | recent readings (`limit`; `from_ms`, `to_ms`) |
//! | `GET /api/unregistered` | devices that published but are not inventoried |
//! | `GET /api/rejections` | rejected messages by reason (since start and all time) |
//! | `GET /api/cases` | cases (filters `state`, `open`, `type`, `grid`, `team`, `urgent`, `overdue`) |
//! | `POST /api/cases` | a case reported by a patrol or the hotline, dispatched by `[routing]` |
//! | `GET /api/cases/{id}` | one case with its history |
//! | `POST /api/cases/{id}/transitions` | act on a case (accept, return, resolve...); the actor is the caller |
//! | `POST /api/cases/{id}/photos` | attach a photo (JPEG, PNG or WebP, the raw bytes) |
//! | `GET /api/cases/{id}/photos/{photo_id}` | one photo of a case |
//! | `GET /api/lighting` | lighting rate per segment, grid and city; over a period with `from_ms`/`to_ms` |
//! | `GET /api/lighting/nights` | lighting rate night by night per segment, grid and city against the road-class target |
//! | `GET /api/events` | live case events and device state (server-sent events), scoped like the case list |
//! | `GET /api/map` | the overview map: per grid when zoomed out, devices and open cases in a box when zoomed in |
//! | `GET /api/evaluation` | figures per grid, team and case type of a period, rankings, lighting compliance |
//! | `GET /api/evaluation.csv` | the same by team, grid or case type as CSV |
//! | `GET /api/reports/bulletin` | the monthly bulletin (通报) as printable HTML |

pub mod access;
mod cases;
mod commands;
mod config;
mod devices;
mod evaluation;
mod events;
mod lighting;
pub mod listener;
pub mod map;
pub mod photos;
mod system;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;

pub use config::{DEFAULT_HTTP_LISTEN, HttpConfig};

use crate::inventory::Inventory;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Lamp commands.
    pub commander: crate::commands::Commander,
    /// The gateway's clock (wall, or a simulation's).
    pub clock: crate::clock::Clock,
    /// Persistent store.
    pub store: Arc<dyn Store>,
    /// In-memory inventory (mirrors the store's devices).
    pub inventory: Arc<Inventory>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Facts about this process for `/api/health`.
    pub runtime: Arc<RuntimeInfo>,
    /// Registers, routes and transitions cases (time limits `[cases]`, routing `[routing]`).
    pub cases: crate::cases::CaseService,
    /// Evaluation figures, rankings and the bulletin (`[evaluation]`).
    pub evaluation: crate::evaluation::Evaluator,
    /// Lighting rate, refreshed by the automation's tick.
    pub lighting: tokio::sync::watch::Receiver<crate::lighting::LightingSnapshot>,
    /// Sessions and cookies (`[auth]`).
    pub auth: Arc<crate::config::AuthConfig>,
    /// Failed sign-ins by user name.
    pub sign_in_throttle: Arc<access::SignInThrottle>,
    /// Where Modbus devices may be (`modbus.allowed_endpoints`, `modbus.allowed_serial`):
    /// devices elsewhere are refused at upsert and import.
    pub modbus_access: Arc<crate::ingest::modbus::ModbusAccess>,
    /// CSV imports that may run at once (`inventory.max_concurrent_imports`).
    pub import_slots: Arc<tokio::sync::Semaphore>,
    /// Their number.
    pub import_slots_max: usize,
    /// Devices' MQTT credentials (issued on registration; checked by the embedded broker).
    pub device_auth: Arc<crate::broker::ClientAuth>,
    /// Photo limits (`cases.photo_max_bytes`, `cases.photos_per_case`).
    pub photo_limits: photos::PhotoLimits,
    /// The web console's settings and page policy (`[console]`).
    pub console: crate::console::Console,
}

/// Facts about the running gateway.
#[derive(Debug, Clone)]
pub struct RuntimeInfo {
    /// Process start.
    pub started: Instant,
    /// Broker the ingest connects to (`host:port`).
    pub mqtt_broker: String,
    /// The embedded broker's listener, when it runs.
    pub embedded_broker: Option<SocketAddr>,
    /// Database file, or the PostgreSQL URL with its password masked.
    pub store_path: String,
    /// Standalone, active or standby (`[ha]`).
    pub role: Arc<crate::ha::RoleCell>,
    /// Name in the lease (`[ha]`).
    pub node: Option<String>,
}

/// On a standby, changes go to the active gateway: everything but GET, HEAD and signing in or
/// out is refused with 503 `standby`.
pub async fn refuse_changes_on_standby(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // Reads, and signing in and out (sessions live in the shared store), pass.
    if req.method() == axum::http::Method::GET
        || req.method() == axum::http::Method::HEAD
        || req.uri().path().starts_with("/api/session")
    {
        return next.run(req).await;
    }
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "standby",
        "this gateway is the standby of an active/standby pair and answers reads only; send changes to the active gateway",
    )
    .into_response()
}

/// An API error: status, stable code and a message saying what to fix.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code (`device_not_found`).
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// Extra structured detail (import problems).
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    /// An error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    /// 404.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// Attach structured details.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "code": self.code, "message": self.message });
        if let (Some(d), Some(obj)) = (self.details, body.as_object_mut()) {
            obj.insert("details".to_owned(), d);
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store error in API request");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_error",
            e.to_string(),
        )
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// `Json` whose rejection is an [`ApiError`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(rej) => Err(json_rejection(&rej)),
        }
    }
}

fn json_rejection(rej: &JsonRejection) -> ApiError {
    let code = match rej {
        JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
        JsonRejection::JsonSyntaxError(_) => "invalid_json",
        JsonRejection::JsonDataError(_) => "invalid_body",
        _ => "bad_request",
    };
    ApiError::new(rej.status(), code, rej.body_text())
}

/// `Query` whose rejection is an [`ApiError`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(rej) => Err(query_rejection(&rej)),
        }
    }
}

fn query_rejection(rej: &QueryRejection) -> ApiError {
    ApiError::new(rej.status(), "invalid_query", rej.body_text())
}

/// The OpenAPI 3.1 document of this API (`gateway/openapi.json`; a test keeps it and the
/// router in step).
pub const OPENAPI: &str = include_str!("../../openapi.json");

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

/// No answer is ever read as markup: JSON, CSV and text stay what their content type says
/// (browsers do not sniff them into HTML), and nothing is cached that carries a session.
async fn no_sniff(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    headers
        .entry(axum::http::header::CACHE_CONTROL)
        .or_insert(axum::http::HeaderValue::from_static("no-store"));
    response
}

/// The router with every route.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/api/health", get(system::health))
        .route("/api/openapi.json", get(openapi))
        .route("/metrics", get(system::metrics))
        .route("/api/unregistered", get(system::unregistered))
        .route("/api/rejections", get(system::rejections))
        .route("/api/devices", get(devices::list).post(devices::upsert))
        .route("/api/devices/import", axum::routing::post(devices::import))
        .route("/api/devices/export", get(devices::export))
        .route(
            "/api/devices/{id}",
            get(devices::get).delete(devices::delete),
        )
        .route(
            "/api/devices/{id}/credentials",
            axum::routing::post(devices::reissue_credentials),
        )
        .route("/api/devices/{id}/latest", get(devices::latest))
        .route("/api/devices/{id}/history", get(devices::history))
        .route("/api/cases", get(cases::list).post(cases::create))
        .route("/api/cases/{id}", get(cases::get))
        .route(
            "/api/cases/{id}/transitions",
            axum::routing::post(cases::transition),
        )
        .route(
            "/api/cases/{id}/photos",
            axum::routing::post(photos::upload),
        )
        .route("/api/cases/{id}/photos/{photo_id}", get(photos::get))
        .route("/api/lighting", get(lighting::rates))
        .route("/api/lighting/nights", get(lighting::nights))
        .route("/api/events", get(events::stream))
        .route("/api/map", get(map::map))
        .route("/api/evaluation", get(evaluation::report))
        .route("/api/evaluation.csv", get(evaluation::csv))
        .route("/api/reports/bulletin", get(evaluation::bulletin))
        .route(
            "/api/devices/{id}/command",
            axum::routing::post(commands::device),
        )
        .route(
            "/api/segments/{segment}/command",
            axum::routing::post(commands::segment),
        )
        .route("/api/commands", get(commands::list))
        .route("/api/alerts/deliveries", get(commands::deliveries))
        .route(
            "/api/session",
            get(access::whoami)
                .post(access::sign_in)
                .delete(access::sign_out),
        )
        .route(
            "/api/session/password",
            axum::routing::post(access::change_password),
        )
        .route("/api/users", get(access::list_users).post(access::add_user))
        .route(
            "/api/users/{name}",
            axum::routing::delete(access::disable_user),
        )
        .route(
            "/api/users/{name}/enable",
            axum::routing::post(access::enable_user),
        )
        .route(
            "/api/users/{name}/password",
            axum::routing::post(access::reset_password),
        )
        .route(
            "/api/tokens",
            get(access::list_tokens).post(access::create_token),
        )
        .route(
            "/api/tokens/{id}",
            axum::routing::delete(access::revoke_token),
        )
        .route("/api/audit", get(access::audit_log))
        .merge(crate::console::routes())
        // After every route: the audit sees the matched route template.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::audit,
        ))
        .fallback(|| async {
            ApiError::not_found(
                "no_route",
                "no such route; see GET /api/health and the API list in the README",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept that method",
            )
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::map_response(no_sniff))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
