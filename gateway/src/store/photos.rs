//! Photos attached to cases (处置照片).

use async_trait::async_trait;
use serde::Serialize;

use super::StoreResult;
use crate::model::UnixMs;

/// A stored photo, without its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhotoRecord {
    /// Photo id.
    pub id: i64,
    /// The case.
    pub case_id: i64,
    /// `image/jpeg`, `image/png` or `image/webp` (decided from the bytes).
    pub content_type: String,
    /// Size, bytes.
    pub size_bytes: i64,
    /// Who uploaded it.
    pub uploader: String,
    /// When (the gateway's clock).
    pub uploaded_ms: UnixMs,
}

/// Case photos.
#[async_trait]
pub trait PhotoStore: Send + Sync {
    /// Store a photo of a case; returns its id.
    async fn insert_photo(
        &self,
        case_id: i64,
        content_type: &str,
        bytes: &[u8],
        uploader: &str,
        at_ms: UnixMs,
    ) -> StoreResult<i64>;
    /// A case's photos, oldest first.
    async fn case_photos(&self, case_id: i64) -> StoreResult<Vec<PhotoRecord>>;
    /// One photo of a case with its bytes.
    async fn photo(
        &self,
        case_id: i64,
        photo_id: i64,
    ) -> StoreResult<Option<(PhotoRecord, Vec<u8>)>>;
}
