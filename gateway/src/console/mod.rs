//! The operations console: the web UI under `dashboards/console/` (hand-written HTML, CSS and
//! ES modules, no build step), embedded in the binary and served at `/` and `/console/...`.
//!
//! Every file is served with its content type, a strong ETag (a hash of its bytes; the browser
//! revalidates with `If-None-Match` and gets `304`), `Cache-Control: no-cache` (always
//! revalidated, so an upgraded gateway is never shown with stale scripts), and a strict
//! Content-Security-Policy: scripts and styles from the gateway only, no inline code, images
//! from the gateway and the configured tile server, connections to the gateway only. The
//! console reads the server's data through the API with the session cookie like any client and
//! builds its pages with DOM nodes and `textContent`, never markup from data.

pub mod config;
pub mod live;

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use sha2::{Digest, Sha256};

pub use config::{ConsoleConfig, MapCoordinates};

use crate::api::AppState;

/// One embedded file.
#[derive(Debug)]
struct Asset {
    /// Path under `dashboards/console/`.
    path: &'static str,
    bytes: &'static [u8],
}

macro_rules! assets {
    ($($path:literal),* $(,)?) => {
        &[$(Asset {
            path: $path,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../dashboards/console/", $path)),
        }),*]
    };
}

/// Every file of the console.
static ASSETS: &[Asset] = assets![
    "index.html",
    "console.css",
    "icon.svg",
    "js/main.js",
    "js/api.js",
    "js/dom.js",
    "js/i18n.js",
    "js/time.js",
    "js/chart.js",
    "js/live.js",
    "js/cases.js",
    "js/case-detail.js",
    "js/field.js",
    "js/map.js",
    "js/devices.js",
    "js/lighting.js",
    "vendor/leaflet/leaflet.js",
    "vendor/leaflet/leaflet.css",
];

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

fn etag(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// ETags, computed once.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| ASSETS.iter().map(|a| etag(a.bytes)).collect())
}

/// What the console serves besides its files: the settings page scripts read, and the
/// Content-Security-Policy of its pages.
#[derive(Debug, Clone)]
pub struct Console {
    settings: Arc<serde_json::Value>,
    csp: HeaderValue,
    /// Grid outlines for the map, computed once per inventory change.
    pub grid_cache: Arc<crate::api::map::GridCache>,
    /// Offline devices and the live stream's device events (an output of the store writer).
    pub device_states: Arc<live::DeviceStates>,
}

impl Console {
    /// From `[console]`, with `alerts.utc_offset_min` as the city's offset unless the console
    /// sets its own.
    pub fn new(config: &ConsoleConfig, alerts_utc_offset_min: i32) -> Self {
        let tiles = config::tile_origin(&config.tile_url)
            .map(|o| format!(" {o}"))
            .unwrap_or_default();
        let csp = format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:{tiles}; \
             connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        );
        let settings = json!({
            "tile_url": config.tile_url,
            "tile_attribution": config.tile_attribution,
            "coordinates": config.coordinates,
            "center": [config.center_lat, config.center_lon],
            "zoom": config.zoom,
            "utc_offset_min": config.utc_offset_min.unwrap_or(alerts_utc_offset_min),
            "version": env!("CARGO_PKG_VERSION"),
        });
        Self {
            settings: Arc::new(settings),
            // Built from validated parts only (`tile_origin` refuses quotes and separators).
            csp: HeaderValue::from_str(&csp)
                .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'")),
            grid_cache: Arc::default(),
            device_states: Arc::default(),
        }
    }
}

impl Default for Console {
    fn default() -> Self {
        Self::new(&ConsoleConfig::default(), 8 * 60)
    }
}

/// The console's routes (merged into the API router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/console/settings.json", get(settings))
        .route("/console/{*path}", get(file))
}

async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    serve(&state.console, "index.html", &headers)
}

async fn file(
    State(state): State<AppState>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    serve(&state.console, &path, &headers)
}

/// Public: nothing in it is secret (the map's tile server and centre, the city's UTC offset),
/// and the sign-in page needs the offset before anyone is signed in.
async fn settings(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.console.settings.to_string(),
    )
        .into_response()
}

fn serve(console: &Console, path: &str, headers: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.path == path) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "no such console file",
        )
            .into_response();
    };
    let asset = &ASSETS[i];
    let tag = &etags()[i];
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"))
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, content_type(asset.path))],
            asset.bytes,
        )
            .into_response()
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(tag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, console.csp.clone());
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_known_type_and_the_index_loads_only_listed_files() {
        for a in ASSETS {
            assert_ne!(
                content_type(a.path),
                "application/octet-stream",
                "{}",
                a.path
            );
        }
        let index = std::str::from_utf8(ASSETS[0].bytes).expect("utf-8");
        for part in index.split("/console/").skip(1) {
            let path = part.split('"').next().unwrap_or_default();
            assert!(
                path == "settings.json" || ASSETS.iter().any(|a| a.path == path),
                "index.html loads {path}, which is not embedded"
            );
        }
        // Every module a script imports is embedded too.
        for a in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let text = std::str::from_utf8(a.bytes).expect("utf-8");
            for part in text.split(" from \"./").skip(1) {
                let path = format!("js/{}", part.split('"').next().unwrap_or_default());
                assert!(
                    ASSETS.iter().any(|b| b.path == path),
                    "{} imports {path}, which is not embedded",
                    a.path
                );
            }
        }
    }

    #[test]
    fn the_policy_admits_the_tile_server_only() {
        let mut c = ConsoleConfig::default();
        let plain = Console::new(&c, 480);
        let csp = plain.csp.to_str().unwrap_or_default().to_owned();
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        c.tile_url = "https://tiles.example.org/{z}/{x}/{y}.png".into();
        let tiled = Console::new(&c, 480);
        assert!(
            tiled
                .csp
                .to_str()
                .unwrap_or_default()
                .contains("img-src 'self' data: blob: https://tiles.example.org;")
        );
        assert_eq!(plain.settings["utc_offset_min"], 480);
    }
}
