//! [`ReadingStore`] in SQL: the store writer's group commit and the reads behind the API.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::{
    ColumnIndex, Decode, Encode, Executor, IntoArguments, QueryBuilder, Row, Transaction, Type,
};
use streetgate_protocols::DeviceId;

use super::{Dialect, SqlStore, corrupt, count, db_count, statement_chunks};
use crate::model::{SeqState, UnixMs};
use crate::store::{
    ReadingRecord, ReadingStore, SeqSummary, StoreResult, StoredReading, WriteBatch,
};

fn reading_from_row<R: Row>(row: &R) -> StoreResult<StoredReading>
where
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let body: String = row.try_get("body")?;
    Ok(StoredReading {
        reading_type: row.try_get("reading_type")?,
        received_ms: row.try_get("received_ms")?,
        body: serde_json::from_str(&body).map_err(|e| corrupt("readings", e))?,
    })
}

/// A 64-bit window stored in a signed BIGINT (bit pattern kept).
fn bits_to_db(bits: u64) -> i64 {
    i64::from_ne_bytes(bits.to_ne_bytes())
}

fn bits_from_db(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}

fn seq_from_row<R: Row>(row: &R) -> StoreResult<SeqState>
where
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let last: i64 = row.try_get("last_seq")?;
    Ok(SeqState {
        last_seq: u32::try_from(last).map_err(|e| corrupt("device_sequences", e))?,
        seen: bits_from_db(row.try_get("seen_bits")?),
        valid: bits_from_db(row.try_get("valid_bits")?),
        missing: count(row.try_get("missing")?),
        restarts: count(row.try_get("restarts")?),
        accepted: count(row.try_get("accepted")?),
    })
}

impl<DB: Dialect> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'r> i64: Encode<'r, DB> + Type<DB>,
    for<'r> Option<&'r str>: Encode<'r, DB>,
{
    async fn write_readings(
        tx: &mut Transaction<'static, DB>,
        readings: &[ReadingRecord],
        keep_history: bool,
    ) -> StoreResult<()> {
        if keep_history {
            for chunk in statement_chunks(readings) {
                let mut q = QueryBuilder::<DB>::new(
                    "INSERT INTO reading_history (device_id, reading_type, received_ms, body) ",
                );
                q.push_values(chunk, |mut row, r| {
                    row.push_bind(r.device_id.as_str())
                        .push_bind(r.reading_type)
                        .push_bind(r.received_ms)
                        .push_bind(r.body.as_str());
                });
                q.build().execute(&mut **tx).await?;
            }
        }
        // Only the newest reading per (device, type) needs to reach latest_readings; one row per
        // key also keeps a multi-row upsert from touching the same row twice (which PostgreSQL
        // refuses).
        let mut newest: HashMap<(&str, &str), &ReadingRecord> = HashMap::new();
        for r in readings {
            newest.insert((r.device_id.as_str(), r.reading_type), r);
        }
        let rows: Vec<&ReadingRecord> = newest.into_values().collect();
        for chunk in statement_chunks(&rows) {
            let mut q = QueryBuilder::<DB>::new(
                "INSERT INTO latest_readings (device_id, reading_type, received_ms, body) ",
            );
            q.push_values(chunk, |mut row, r| {
                row.push_bind(r.device_id.as_str())
                    .push_bind(r.reading_type)
                    .push_bind(r.received_ms)
                    .push_bind(r.body.as_str());
            });
            q.push(
                " ON CONFLICT (device_id, reading_type) DO UPDATE
                 SET received_ms = excluded.received_ms, body = excluded.body
                 WHERE excluded.received_ms >= latest_readings.received_ms",
            );
            q.build().execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Store each device's newest sequence state among the readings (the one that accepted the
    /// most messages), never going back to an older one.
    async fn write_seq_states(
        tx: &mut Transaction<'static, DB>,
        readings: &[ReadingRecord],
    ) -> StoreResult<()> {
        let mut newest: HashMap<&str, (SeqState, UnixMs)> = HashMap::new();
        for r in readings {
            let Some(s) = r.seq_state else { continue };
            let id = r.device_id.as_str();
            if newest
                .get(id)
                .is_none_or(|(old, _)| s.accepted > old.accepted)
            {
                newest.insert(id, (s, r.received_ms));
            }
        }
        let rows: Vec<(&str, (SeqState, UnixMs))> = newest.into_iter().collect();
        // 8 parameters a row.
        for chunk in statement_chunks(&rows) {
            let mut q = QueryBuilder::<DB>::new(
                "INSERT INTO device_sequences (device_id, last_seq, seen_bits, valid_bits, missing,
                     restarts, accepted, updated_ms) ",
            );
            q.push_values(chunk, |mut row, (id, (s, at))| {
                row.push_bind(*id)
                    .push_bind(i64::from(s.last_seq))
                    .push_bind(bits_to_db(s.seen))
                    .push_bind(bits_to_db(s.valid))
                    .push_bind(db_count(s.missing))
                    .push_bind(db_count(s.restarts))
                    .push_bind(db_count(s.accepted))
                    .push_bind(*at);
            });
            q.push(
                " ON CONFLICT (device_id) DO UPDATE SET
                     last_seq = excluded.last_seq, seen_bits = excluded.seen_bits,
                     valid_bits = excluded.valid_bits, missing = excluded.missing,
                     restarts = excluded.restarts, accepted = excluded.accepted,
                     updated_ms = excluded.updated_ms
                 WHERE excluded.accepted >= device_sequences.accepted",
            );
            q.build().execute(&mut **tx).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl<DB: Dialect> ReadingStore for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB> + ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    for<'r> String: Encode<'r, DB> + Decode<'r, DB> + Type<DB>,
    for<'r> i64: Encode<'r, DB> + Decode<'r, DB> + Type<DB>,
    for<'r> Option<&'r str>: Encode<'r, DB>,
{
    async fn write_batch(&self, batch: &WriteBatch) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer.begin().await?;
        Self::write_readings(&mut tx, &batch.readings, batch.keep_history).await?;
        Self::write_seq_states(&mut tx, &batch.readings).await?;
        for u in &batch.unregistered {
            sqlx::query(
                "INSERT INTO unregistered_devices (id, claimed_kind, first_seen_ms, last_seen_ms,
                     last_topic, message_count)
                 VALUES ($1, $2, $3, $3, $4, $5)
                 ON CONFLICT (id) DO UPDATE SET
                     claimed_kind = COALESCE(excluded.claimed_kind,
                         unregistered_devices.claimed_kind),
                     last_seen_ms = CASE
                         WHEN excluded.last_seen_ms > unregistered_devices.last_seen_ms
                         THEN excluded.last_seen_ms ELSE unregistered_devices.last_seen_ms END,
                     last_topic = excluded.last_topic,
                     message_count = unregistered_devices.message_count + excluded.message_count",
            )
            .bind(u.device_id.as_str())
            .bind(u.claimed_kind)
            .bind(u.at_ms)
            .bind(u.topic.as_str())
            .bind(db_count(u.count))
            .execute(&mut *tx)
            .await?;
        }
        for (reason, delta) in &batch.rejection_deltas {
            sqlx::query(
                "INSERT INTO rejection_counters (reason, total) VALUES ($1, $2)
                 ON CONFLICT (reason) DO UPDATE
                 SET total = rejection_counters.total + excluded.total",
            )
            .bind(reason.as_str())
            .bind(db_count(*delta))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn latest_readings(&self, device_id: &str) -> StoreResult<Vec<StoredReading>> {
        sqlx::query(
            "SELECT reading_type, received_ms, body FROM latest_readings
             WHERE device_id = $1 ORDER BY received_ms DESC, reading_type",
        )
        .bind(device_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(reading_from_row)
        .collect()
    }

    async fn reading_history_between(
        &self,
        device_id: &str,
        from_ms: UnixMs,
        to_ms: UnixMs,
        limit: u32,
    ) -> StoreResult<Vec<StoredReading>> {
        sqlx::query(
            "SELECT reading_type, received_ms, body FROM reading_history
             WHERE device_id = $1 AND received_ms >= $2 AND received_ms <= $3
             ORDER BY id DESC LIMIT $4",
        )
        .bind(device_id)
        .bind(from_ms)
        .bind(to_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(reading_from_row)
        .collect()
    }

    async fn seq_states(&self) -> StoreResult<HashMap<DeviceId, SeqState>> {
        let rows = sqlx::query("SELECT * FROM device_sequences")
            .fetch_all(&self.pool)
            .await?;
        let mut states = HashMap::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("device_id")?;
            let id = DeviceId::new(&id).map_err(|e| corrupt("device_sequences", e))?;
            states.insert(id, seq_from_row(row)?);
        }
        Ok(states)
    }

    async fn seq_state(&self, device_id: &str) -> StoreResult<Option<SeqState>> {
        sqlx::query("SELECT * FROM device_sequences WHERE device_id = $1")
            .bind(device_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(seq_from_row)
            .transpose()
    }

    async fn seq_summary(&self) -> StoreResult<SeqSummary> {
        // SUM of BIGINT is NUMERIC on PostgreSQL: cast back.
        let (devices, missing, restarts): (i64, Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(CASE WHEN missing > 0 THEN 1 END), CAST(SUM(missing) AS BIGINT),
                 CAST(SUM(restarts) AS BIGINT)
             FROM device_sequences",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(SeqSummary {
            devices_with_gaps: count(devices),
            missing: count(missing.unwrap_or(0)),
            restarts: count(restarts.unwrap_or(0)),
        })
    }

    async fn trim_history(&self, keep: u32) -> StoreResult<u64> {
        let result = sqlx::query(
            "DELETE FROM reading_history WHERE id IN (
                 SELECT id FROM (
                     SELECT id, ROW_NUMBER() OVER (PARTITION BY device_id ORDER BY id DESC) AS rn
                     FROM reading_history
                 ) ranked WHERE rn > $1
             )",
        )
        .bind(i64::from(keep))
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&result))
    }

    async fn rejection_totals(&self) -> StoreResult<Vec<(String, u64)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT reason, total FROM rejection_counters ORDER BY reason")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(r, n)| (r, count(n))).collect())
    }
}
