//! [`PhotoStore`] in SQL.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Row, Type};

use super::{Dialect, SqlStore};
use crate::model::UnixMs;
use crate::store::{PhotoRecord, PhotoStore, StoreResult};

fn photo_from_row<R: Row>(r: &R) -> StoreResult<PhotoRecord>
where
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(PhotoRecord {
        id: r.try_get("id")?,
        case_id: r.try_get("case_id")?,
        content_type: r.try_get("content_type")?,
        size_bytes: r.try_get("size_bytes")?,
        uploader: r.try_get("uploader")?,
        uploaded_ms: r.try_get("uploaded_ms")?,
    })
}

#[async_trait]
impl<DB: Dialect> PhotoStore for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB> + ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    for<'a> &'a [u8]: Encode<'a, DB> + Type<DB>,
    for<'r> Vec<u8>: Decode<'r, DB> + Type<DB>,
    for<'r> String: Encode<'r, DB> + Decode<'r, DB> + Type<DB>,
    for<'r> i64: Encode<'r, DB> + Decode<'r, DB> + Type<DB>,
{
    async fn insert_photo(
        &self,
        case_id: i64,
        content_type: &str,
        bytes: &[u8],
        uploader: &str,
        at_ms: UnixMs,
    ) -> StoreResult<i64> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO case_photos (case_id, content_type, size_bytes, bytes, uploader, uploaded_ms)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(case_id)
        .bind(content_type)
        .bind(i64::try_from(bytes.len()).unwrap_or(i64::MAX))
        .bind(bytes)
        .bind(uploader)
        .bind(at_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    async fn case_photos(&self, case_id: i64) -> StoreResult<Vec<PhotoRecord>> {
        sqlx::query(
            "SELECT id, case_id, content_type, size_bytes, uploader, uploaded_ms
             FROM case_photos WHERE case_id = $1 ORDER BY id",
        )
        .bind(case_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(photo_from_row)
        .collect()
    }

    async fn photo(
        &self,
        case_id: i64,
        photo_id: i64,
    ) -> StoreResult<Option<(PhotoRecord, Vec<u8>)>> {
        let Some(row) = sqlx::query("SELECT * FROM case_photos WHERE case_id = $1 AND id = $2")
            .bind(case_id)
            .bind(photo_id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let bytes: Vec<u8> = row.try_get("bytes")?;
        Ok(Some((photo_from_row(&row)?, bytes)))
    }
}
