//! Case photos (处置照片): `POST /api/cases/{id}/photos` attaches one (the raw bytes of a
//! JPEG, PNG or WebP picture, or a `multipart/form-data` form with one file field, as a plain
//! HTML form sends it; whatever the request's content types say, the type is decided from the
//! bytes), `GET /api/cases/{id}/photos/{photo_id}` serves it. The case detail lists them.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::access::Identity;
use super::cases::{parse_id, visible_case};
use super::{ApiError, ApiResult, AppState};
use crate::auth::Permission;

/// How large and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhotoLimits {
    /// Largest photo, bytes.
    pub max_bytes: usize,
    /// Photos per case.
    pub per_case: u32,
}

impl From<&crate::cases::CasesConfig> for PhotoLimits {
    fn from(c: &crate::cases::CasesConfig) -> Self {
        Self {
            max_bytes: c.photo_max_bytes,
            per_case: c.photos_per_case,
        }
    }
}

/// The picture type of `bytes` from its magic number: JPEG, PNG or WebP.
pub fn sniff_image(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

pub(super) async fn upload(
    State(state): State<AppState>,
    who: Identity,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Json<Value>> {
    who.require(Permission::CasesTransition)?;
    let id = parse_id(&id)?;
    let case = visible_case(&state, &who, id).await?;
    if case.state.is_terminal() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "case_closed",
            format!("case {id} is {:?}: photos go with an open case", case.state).to_lowercase(),
        ));
    }
    let max = state.photo_limits.max_bytes;
    let form_boundary = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(multipart_boundary);
    // A form carries its part headers and boundaries besides the photo.
    let limit = if form_boundary.is_some() {
        max.saturating_add(FORM_OVERHEAD)
    } else {
        max
    };
    let body = axum::body::to_bytes(req.into_body(), limit.saturating_add(1))
        .await
        .map_err(|_| too_large(max))?;
    let bytes = match &form_boundary {
        Some(boundary) => match form_file(&body, boundary) {
            Ok(file) => body.slice_ref(file),
            Err(message) => return Err(ApiError::bad_request("invalid_form", message)),
        },
        None => body,
    };
    if bytes.len() > max {
        return Err(too_large(max));
    }
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "empty_body",
            "send the photo's bytes as the request body",
        ));
    }
    let Some(content_type) = sniff_image(&bytes) else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a photo must be a JPEG, PNG or WebP picture (decided from its first bytes)",
        ));
    };
    let existing = state.store.case_photos(id).await?;
    if existing.len() >= state.photo_limits.per_case as usize {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_photos",
            format!(
                "case {id} has {} photos, the most cases.photos_per_case allows",
                existing.len()
            ),
        ));
    }
    let now = state.clock.now_ms();
    let photo_id = state
        .store
        .insert_photo(id, content_type, &bytes, &who.name, now)
        .await?;
    tracing::info!(case = id, photo = photo_id, bytes = bytes.len(), user = %who.name, "photo attached");
    Ok(Json(json!({
        "id": photo_id,
        "case_id": id,
        "content_type": content_type,
        "size_bytes": bytes.len(),
        "uploader": who.name,
        "uploaded_ms": now,
    })))
}

/// Room for a form's boundaries and part headers around the photo, bytes.
const FORM_OVERHEAD: usize = 16 * 1024;

/// The boundary of a `multipart/form-data` content type.
fn multipart_boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    if !params
        .next()?
        .trim()
        .eq_ignore_ascii_case("multipart/form-data")
    {
        return None;
    }
    params.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
            .filter(|b| !b.is_empty() && b.len() <= 70)
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The content of the one file field (a part with a `filename`) of a form. A form with no
/// file, or more than one, is refused: one photo per request.
fn form_file<'a>(body: &'a [u8], boundary: &str) -> Result<&'a [u8], String> {
    let delimiter = format!("--{boundary}");
    let bad = |what: &str| format!("multipart/form-data: {what}");
    let start = find(body, delimiter.as_bytes()).ok_or_else(|| bad("no boundary in the body"))?;
    let mut rest = &body[start + delimiter.len()..];
    let next = format!("\r\n--{boundary}");
    let mut file: Option<&[u8]> = None;
    loop {
        if rest.starts_with(b"--") {
            break;
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .ok_or_else(|| bad("a boundary is not followed by a line break"))?;
        let head_end =
            find(rest, b"\r\n\r\n").ok_or_else(|| bad("a part has no end of headers"))?;
        let head = String::from_utf8_lossy(&rest[..head_end]).to_ascii_lowercase();
        let content = &rest[head_end + 4..];
        let end = find(content, next.as_bytes())
            .ok_or_else(|| bad("a part is not closed by the boundary"))?;
        let is_file = head
            .lines()
            .any(|l| l.starts_with("content-disposition:") && l.contains("filename="));
        if is_file {
            if file.is_some() {
                return Err(bad(
                    "send one photo per request (this form has several files)",
                ));
            }
            file = Some(&content[..end]);
        }
        rest = &content[end + next.len()..];
    }
    file.ok_or_else(|| bad("no file field (a part with a filename)"))
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "photo_too_large",
        format!("a photo may be at most {max} bytes (cases.photo_max_bytes)"),
    )
}

pub(super) async fn get(
    State(state): State<AppState>,
    who: Identity,
    Path((id, photo_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    who.require(Permission::CasesRead)?;
    let id = parse_id(&id)?;
    let photo_id: i64 = photo_id.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_photo_id",
            format!("{photo_id:?} is not a photo number"),
        )
    })?;
    visible_case(&state, &who, id).await?;
    let Some((photo, bytes)) = state.store.photo(id, photo_id).await? else {
        return Err(ApiError::not_found(
            "photo_not_found",
            format!("case {id} has no photo {photo_id}"),
        ));
    };
    let mut response = Body::from(bytes).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&photo.content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    // A photo never changes; it is private to those who may read the case.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=86400, immutable"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::{form_file, multipart_boundary, sniff_image};

    #[test]
    fn pictures_are_known_by_their_first_bytes() {
        assert_eq!(
            sniff_image(&[0xFF, 0xD8, 0xFF, 0xE0, 0]),
            Some("image/jpeg")
        );
        assert_eq!(sniff_image(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(sniff_image(b"RIFF\x10\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff_image(b"RIFF\x10\0\0\0WAVEfmt "), None);
        assert_eq!(sniff_image(b"<svg xmlns="), None);
        assert_eq!(sniff_image(b"GIF89a"), None);
        assert_eq!(sniff_image(b""), None);
    }

    #[test]
    fn a_form_gives_its_one_file() {
        assert_eq!(
            multipart_boundary("multipart/form-data; boundary=\"----x1\""),
            Some("----x1".to_owned())
        );
        assert_eq!(multipart_boundary("image/jpeg"), None);
        let body = b"preamble\r\n------x1\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nfixed\r\n------x1\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"a.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n\xFF\xD8\xFF\r\n--\r\n------x1--\r\n";
        assert_eq!(form_file(body, "----x1").unwrap(), b"\xFF\xD8\xFF\r\n--");
        let none =
            b"------x1\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nx\r\n------x1--";
        assert!(form_file(none, "----x1").unwrap_err().contains("no file"));
        let two = b"--b\r\nContent-Disposition: form-data; name=\"a\"; filename=\"1\"\r\n\r\n1\r\n--b\r\nContent-Disposition: form-data; name=\"b\"; filename=\"2\"\r\n\r\n2\r\n--b--";
        assert!(form_file(two, "b").unwrap_err().contains("one photo"));
        assert!(form_file(b"--b\r\nno end", "b").is_err());
    }
}
