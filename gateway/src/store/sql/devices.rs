//! [`DeviceStore`] in SQL.

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Row, Type};
use streetgate_protocols::{ComponentCode, DeviceId, DeviceKind};

use super::{Dialect, SqlStore, corrupt, count, enum_text, text_enum};
use crate::model::{Device, UnixMs};
use crate::store::{DeviceStore, StoreResult, UnregisteredDevice};

fn device_from_row<R: Row>(row: &R) -> StoreResult<Device>
where
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> f64: Decode<'r, R::Database> + Type<R::Database>,
{
    let id: String = row.try_get("id")?;
    let bad =
        |field: &str, e: &dyn std::fmt::Display| corrupt("devices", format!("{id}.{field}: {e}"));
    let kind: String = row.try_get("kind")?;
    let component_code: Option<String> = row.try_get("component_code")?;
    let road_class: Option<String> = row.try_get("road_class")?;
    let toilet_class: Option<String> = row.try_get("toilet_class")?;
    let bin_depth_mm: Option<i64> = row.try_get("bin_depth_mm")?;
    let transport: String = row.try_get("transport")?;
    let overrides: String = row.try_get("overrides")?;
    Ok(Device {
        id: DeviceId::new(&id).map_err(|e| bad("id", &e))?,
        kind: DeviceKind::from_str(&kind).map_err(|e| bad("kind", &e))?,
        component_code: component_code
            .map(|c| ComponentCode::new(&c))
            .transpose()
            .map_err(|e| bad("component_code", &e))?,
        lat: row.try_get("lat")?,
        lon: row.try_get("lon")?,
        grid: row.try_get("grid")?,
        road_segment: row.try_get("road_segment")?,
        road_class: road_class
            .map(|s| text_enum(&s))
            .transpose()
            .map_err(|e| bad("road_class", &e))?,
        toilet_class: toilet_class
            .map(|s| text_enum(&s))
            .transpose()
            .map_err(|e| bad("toilet_class", &e))?,
        bin_depth_mm: bin_depth_mm
            .map(u16::try_from)
            .transpose()
            .map_err(|e| bad("bin_depth_mm", &e))?,
        overrides: serde_json::from_str(&overrides).map_err(|e| bad("overrides", &e))?,
        transport: serde_json::from_str(&transport).map_err(|e| bad("transport", &e))?,
    })
}

#[async_trait]
impl<DB: Dialect> DeviceStore for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB> + ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    for<'r> String: Encode<'r, DB> + Decode<'r, DB> + Type<DB>,
    for<'r> i64: Encode<'r, DB> + Decode<'r, DB> + Type<DB>,
    for<'r> f64: Encode<'r, DB> + Decode<'r, DB> + Type<DB>,
    for<'r> Option<String>: Encode<'r, DB>,
    for<'r> Option<i64>: Encode<'r, DB>,
{
    async fn list_devices(&self) -> StoreResult<Vec<Device>> {
        sqlx::query("SELECT * FROM devices ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(device_from_row)
            .collect()
    }

    async fn get_device(&self, id: &str) -> StoreResult<Option<Device>> {
        sqlx::query("SELECT * FROM devices WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(device_from_row)
            .transpose()
    }

    async fn upsert_devices(&self, devices: &[Device], now_ms: UnixMs) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for d in devices {
            let transport =
                serde_json::to_string(&d.transport).map_err(|e| corrupt("devices", e))?;
            let overrides =
                serde_json::to_string(&d.overrides).map_err(|e| corrupt("devices", e))?;
            sqlx::query(
                "INSERT INTO devices (id, kind, component_code, lat, lon, grid, road_segment,
                     road_class, toilet_class, bin_depth_mm, transport, overrides, updated_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 ON CONFLICT (id) DO UPDATE SET
                     kind = excluded.kind, component_code = excluded.component_code,
                     lat = excluded.lat, lon = excluded.lon, grid = excluded.grid,
                     road_segment = excluded.road_segment, road_class = excluded.road_class,
                     toilet_class = excluded.toilet_class, bin_depth_mm = excluded.bin_depth_mm,
                     transport = excluded.transport, overrides = excluded.overrides,
                     updated_ms = excluded.updated_ms",
            )
            .bind(d.id.as_str())
            .bind(d.kind.as_str())
            .bind(d.component_code.map(|c| c.to_string()))
            .bind(d.lat)
            .bind(d.lon)
            .bind(&d.grid)
            .bind(&d.road_segment)
            .bind(d.road_class.and_then(|r| enum_text(&r)))
            .bind(d.toilet_class.and_then(|t| enum_text(&t)))
            .bind(d.bin_depth_mm.map(i64::from))
            .bind(transport)
            .bind(overrides)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM unregistered_devices WHERE id = $1")
                .bind(d.id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn delete_device(&self, id: &str) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM devices WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        for table in [
            "latest_readings",
            "reading_history",
            "device_sequences",
            "device_credentials",
        ] {
            let sql = format!("DELETE FROM {table} WHERE device_id = $1");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(DB::rows_affected(&deleted) > 0)
    }

    async fn set_device_credentials(
        &self,
        credentials: &[(String, String)],
        now_ms: UnixMs,
    ) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        let mut stored = 0;
        for (id, hash) in credentials {
            let done = sqlx::query(
                "INSERT INTO device_credentials (device_id, secret_hash, issued_ms)
                 SELECT id, $2, $3 FROM devices WHERE id = $1
                 ON CONFLICT (device_id) DO UPDATE SET
                     secret_hash = excluded.secret_hash, issued_ms = excluded.issued_ms",
            )
            .bind(id.as_str())
            .bind(hash.as_str())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            stored += DB::rows_affected(&done);
        }
        tx.commit().await?;
        Ok(stored)
    }

    async fn device_credentials(&self) -> StoreResult<Vec<(String, String)>> {
        let rows =
            sqlx::query("SELECT device_id, secret_hash FROM device_credentials ORDER BY device_id")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("device_id")?, r.try_get("secret_hash")?)))
            .collect()
    }

    async fn count_devices(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices")
            .fetch_one(&self.pool)
            .await?;
        Ok(count(n))
    }

    async fn list_unregistered(&self, limit: u32) -> StoreResult<Vec<UnregisteredDevice>> {
        let rows = sqlx::query(
            "SELECT id, claimed_kind, first_seen_ms, last_seen_ms, last_topic, message_count
             FROM unregistered_devices ORDER BY last_seen_ms DESC, id LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UnregisteredDevice {
                    id: r.try_get("id")?,
                    claimed_kind: r.try_get("claimed_kind")?,
                    first_seen_ms: r.try_get("first_seen_ms")?,
                    last_seen_ms: r.try_get("last_seen_ms")?,
                    last_topic: r.try_get("last_topic")?,
                    message_count: count(r.try_get("message_count")?),
                })
            })
            .collect()
    }

    async fn count_unregistered(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM unregistered_devices")
            .fetch_one(&self.pool)
            .await?;
        Ok(count(n))
    }

    async fn trim_unregistered(&self, keep: u64, seen_before_ms: UnixMs) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        let expired = sqlx::query("DELETE FROM unregistered_devices WHERE last_seen_ms < $1")
            .bind(seen_before_ms)
            .execute(&mut *tx)
            .await?;
        let over = sqlx::query(
            "DELETE FROM unregistered_devices WHERE id NOT IN (
                 SELECT id FROM unregistered_devices ORDER BY last_seen_ms DESC, id LIMIT $1
             )",
        )
        .bind(i64::try_from(keep).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(DB::rows_affected(&expired) + DB::rows_affected(&over))
    }
}
