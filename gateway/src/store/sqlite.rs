//! SQLite store: one file in WAL mode, migrations embedded from `migrations_sqlite/`.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};
use streetgate_protocols::{ComponentCode, DeviceId, DeviceKind};

use super::{
    CaseEvent, CaseFilter, CaseHistoryEntry, CaseInsert, CaseRecord, CommandRecord, CommandState,
    DeliveryRecord, DeliveryStatus, ReadingRecord, SeqSummary, Store, StoreError, StoreResult,
    StoredReading, UNRESOLVED_STATES, UnregisteredDevice, WriteBatch,
};
use crate::model::{CaseState, Device, SeqState, UnixMs};

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Open (creating the file and its directory if missing) and migrate.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|error| StoreError::Io {
                path: dir.display().to_string(),
                error,
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL: a committed transaction survives a process crash (kill -9); only an
            // OS crash or power loss can lose the last few.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // 32 MiB page cache per connection (SQLite's default is 2 MiB): the latest-reading
            // upserts of a large fleet otherwise spill and re-read pages in every batch.
            .pragma("cache_size", "-32768")
            .pragma("temp_store", "memory")
            // Checkpoint every ~40 MiB of WAL instead of SQLite's 4 MiB: the latest-reading
            // pages change in every batch, and a rarer checkpoint copies each page once for
            // many batches.
            .pragma("wal_autocheckpoint", "10000");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations_sqlite").run(&pool).await?;
        Ok(Self { pool })
    }

    /// The connection pool (for the case store and tests).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

fn corrupt(table: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        table,
        detail: detail.to_string(),
    }
}

fn enum_text<T: serde::Serialize>(v: &T) -> Option<String> {
    match serde_json::to_value(v).ok()? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    }
}

fn text_enum<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, serde_json::Error> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
}

fn device_from_row(row: &SqliteRow) -> StoreResult<Device> {
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

fn reading_from_row(row: &SqliteRow) -> StoreResult<StoredReading> {
    let body: String = row.try_get("body")?;
    Ok(StoredReading {
        reading_type: row.try_get("reading_type")?,
        received_ms: row.try_get("received_ms")?,
        body: serde_json::from_str(&body).map_err(|e| corrupt("readings", e))?,
    })
}

fn case_from_row(row: &SqliteRow) -> StoreResult<CaseRecord> {
    let id: i64 = row.try_get("id")?;
    let bad =
        |field: &str, e: &dyn std::fmt::Display| corrupt("cases", format!("{id}.{field}: {e}"));
    let case_type: String = row.try_get("case_type")?;
    let source: String = row.try_get("source")?;
    let state: String = row.try_get("state")?;
    let devices: String = row.try_get("devices")?;
    let rework: i64 = row.try_get("rework_count")?;
    let returned: i64 = row.try_get("returned_count")?;
    Ok(CaseRecord {
        id,
        case_type: text_enum(&case_type).map_err(|e| bad("case_type", &e))?,
        source: text_enum(&source).map_err(|e| bad("source", &e))?,
        subject_key: row.try_get("subject_key")?,
        condition_key: row.try_get("condition_key")?,
        grid: row.try_get("grid")?,
        team: row.try_get("team")?,
        state: text_enum(&state).map_err(|e| bad("state", &e))?,
        urgent: row.try_get("urgent")?,
        devices: serde_json::from_str(&devices).map_err(|e| bad("devices", &e))?,
        detail: row.try_get("detail")?,
        opened_ms: row.try_get("opened_ms")?,
        due_ms: row.try_get("due_ms")?,
        updated_ms: row.try_get("updated_ms")?,
        closed_ms: row.try_get("closed_ms")?,
        condition_active: row.try_get("condition_active")?,
        clear_since_ms: row.try_get("clear_since_ms")?,
        rework_count: u32::try_from(rework).map_err(|e| bad("rework_count", &e))?,
        returned_count: u32::try_from(returned).map_err(|e| bad("returned_count", &e))?,
    })
}

fn history_from_row(r: &SqliteRow) -> StoreResult<CaseHistoryEntry> {
    let from: Option<String> = r.try_get("from_state")?;
    let to: String = r.try_get("to_state")?;
    Ok(CaseHistoryEntry {
        at_ms: r.try_get("at_ms")?,
        actor: r.try_get("actor")?,
        from: from
            .map(|f| text_enum(&f))
            .transpose()
            .map_err(|e| corrupt("case_history", e))?,
        to: text_enum(&to).map_err(|e| corrupt("case_history", e))?,
        note: r.try_get("note")?,
    })
}

fn state_text(s: CaseState) -> String {
    enum_text(&s).unwrap_or_default()
}

async fn insert_history(
    tx: &mut Transaction<'_, Sqlite>,
    case_id: i64,
    e: &CaseHistoryEntry,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO case_history (case_id, at_ms, actor, from_state, to_state, note)
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(case_id)
    .bind(e.at_ms)
    .bind(&e.actor)
    .bind(e.from.map(state_text))
    .bind(state_text(e.to))
    .bind(&e.note)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn push_case_filter(q: &mut QueryBuilder<Sqlite>, f: &CaseFilter) {
    q.push(" WHERE 1 = 1");
    if let Some(s) = f.state {
        q.push(" AND state = ").push_bind(state_text(s));
    }
    match f.open {
        Some(true) => {
            q.push(" AND state NOT IN ('closed', 'voided')");
        }
        Some(false) => {
            q.push(" AND state IN ('closed', 'voided')");
        }
        None => {}
    }
    if let Some(t) = f.case_type {
        q.push(" AND case_type = ")
            .push_bind(enum_text(&t).unwrap_or_default());
    }
    if let Some(g) = &f.grid {
        q.push(" AND grid = ").push_bind(g.clone());
    }
    if let Some(t) = &f.team {
        q.push(" AND team = ").push_bind(t.clone());
    }
    if let Some(now) = f.overdue_at {
        q.push(" AND due_ms IS NOT NULL AND due_ms < ")
            .push_bind(now);
        q.push(" AND state IN (");
        let mut list = q.separated(", ");
        for s in UNRESOLVED_STATES {
            list.push_bind(state_text(s));
        }
        q.push(")");
    }
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Rows per multi-row INSERT (4 parameters each, well under SQLite's 32766-parameter limit).
const ROWS_PER_STATEMENT: usize = 256;

/// `rows` cut into multi-row statements of a few fixed sizes (256, 64, 16, 4, 1 rows), so that
/// each table needs at most five distinct statements and every batch reuses them from the
/// connection's statement cache instead of parsing a statement of a new size.
fn statement_chunks<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if rows.is_empty() {
            return None;
        }
        let mut size = ROWS_PER_STATEMENT;
        while size > rows.len() {
            size /= 4;
        }
        let (chunk, rest) = rows.split_at(size.max(1));
        rows = rest;
        Some(chunk)
    })
}

async fn write_readings(
    tx: &mut Transaction<'_, Sqlite>,
    readings: &[ReadingRecord],
    keep_history: bool,
) -> StoreResult<()> {
    if keep_history {
        for chunk in statement_chunks(readings) {
            let mut q = QueryBuilder::<Sqlite>::new(
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
    // key also keeps a multi-row upsert from touching the same row twice.
    let mut newest: HashMap<(&str, &str), &ReadingRecord> = HashMap::new();
    for r in readings {
        newest.insert((r.device_id.as_str(), r.reading_type), r);
    }
    let rows: Vec<&ReadingRecord> = newest.into_values().collect();
    for chunk in statement_chunks(&rows) {
        let mut q = QueryBuilder::<Sqlite>::new(
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

/// A 64-bit window stored in a signed BIGINT (bit pattern kept).
fn bits_to_db(bits: u64) -> i64 {
    i64::from_ne_bytes(bits.to_ne_bytes())
}

fn bits_from_db(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}

fn seq_from_row(row: &SqliteRow) -> StoreResult<SeqState> {
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

fn db_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Store each device's newest sequence state among the readings (the one that accepted the
/// most messages), never going back to an older one.
async fn write_seq_states(
    tx: &mut Transaction<'_, Sqlite>,
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
        let mut q = QueryBuilder::<Sqlite>::new(
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

impl SqliteStore {
    /// Store a changed case if it is still in `expected_state` and, when `sensor` is given,
    /// its (`condition_active`, `clear_since_ms`) are still those.
    async fn update_case_guarded(
        &self,
        case: &CaseRecord,
        expected_state: CaseState,
        sensor: Option<(bool, Option<UnixMs>)>,
        entries: &[CaseHistoryEntry],
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;

        let devices = serde_json::to_string(&case.devices).map_err(|e| corrupt("cases", e))?;
        let n = sqlx::query(
            "UPDATE cases SET case_type = ?, team = ?, state = ?, urgent = ?, devices = ?,
                 detail = ?, due_ms = ?, updated_ms = ?, closed_ms = ?, condition_active = ?,
                 clear_since_ms = ?, rework_count = ?, returned_count = ?
             WHERE id = ? AND state = ?
               AND (? OR (condition_active = ? AND clear_since_ms IS ?))",
        )
        .bind(enum_text(&case.case_type))
        .bind(&case.team)
        .bind(state_text(case.state))
        .bind(case.urgent)
        .bind(devices)
        .bind(&case.detail)
        .bind(case.due_ms)
        .bind(case.updated_ms)
        .bind(case.closed_ms)
        .bind(case.condition_active)
        .bind(case.clear_since_ms)
        .bind(i64::from(case.rework_count))
        .bind(i64::from(case.returned_count))
        .bind(case.id)
        .bind(state_text(expected_state))
        .bind(sensor.is_none())
        .bind(sensor.is_some_and(|(active, _)| active))
        .bind(sensor.and_then(|(_, clear)| clear))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        for e in entries {
            insert_history(&mut tx, case.id, e).await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn list_devices(&self) -> StoreResult<Vec<Device>> {
        sqlx::query("SELECT * FROM devices ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(device_from_row)
            .collect()
    }

    async fn get_device(&self, id: &str) -> StoreResult<Option<Device>> {
        sqlx::query("SELECT * FROM devices WHERE id = ?")
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
                "INSERT INTO devices (id, kind, component_code, lat, lon, grid, road_segment, road_class,
                     toilet_class, bin_depth_mm, transport, overrides, updated_ms)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
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
            sqlx::query("DELETE FROM unregistered_devices WHERE id = ?")
                .bind(d.id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn delete_device(&self, id: &str) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("DELETE FROM devices WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM latest_readings WHERE device_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM reading_history WHERE device_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM device_sequences WHERE device_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn count_devices(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices")
            .fetch_one(&self.pool)
            .await?;
        Ok(count(n))
    }

    async fn write_batch(&self, batch: &WriteBatch) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        write_readings(&mut tx, &batch.readings, batch.keep_history).await?;
        write_seq_states(&mut tx, &batch.readings).await?;
        for u in &batch.unregistered {
            sqlx::query(
                "INSERT INTO unregistered_devices (id, claimed_kind, first_seen_ms, last_seen_ms, last_topic, message_count)
                 VALUES (?, ?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET
                     claimed_kind = COALESCE(excluded.claimed_kind, unregistered_devices.claimed_kind),
                     last_seen_ms = MAX(excluded.last_seen_ms, unregistered_devices.last_seen_ms),
                     last_topic = excluded.last_topic,
                     message_count = unregistered_devices.message_count + excluded.message_count",
            )
            .bind(&u.device_id)
            .bind(u.claimed_kind)
            .bind(u.at_ms)
            .bind(u.at_ms)
            .bind(&u.topic)
            .bind(i64::try_from(u.count).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        }
        for (reason, delta) in &batch.rejection_deltas {
            sqlx::query(
                "INSERT INTO rejection_counters (reason, total) VALUES (?, ?)
                 ON CONFLICT (reason) DO UPDATE SET total = rejection_counters.total + excluded.total",
            )
            .bind(reason)
            .bind(i64::try_from(*delta).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn latest_readings(&self, device_id: &str) -> StoreResult<Vec<StoredReading>> {
        sqlx::query(
            "SELECT reading_type, received_ms, body FROM latest_readings
             WHERE device_id = ? ORDER BY received_ms DESC, reading_type",
        )
        .bind(device_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(reading_from_row)
        .collect()
    }

    async fn reading_history(
        &self,
        device_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<StoredReading>> {
        sqlx::query(
            "SELECT reading_type, received_ms, body FROM reading_history
             WHERE device_id = ? ORDER BY id DESC LIMIT ?",
        )
        .bind(device_id)
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
        sqlx::query("SELECT * FROM device_sequences WHERE device_id = ?")
            .bind(device_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(seq_from_row)
            .transpose()
    }

    async fn seq_summary(&self) -> StoreResult<SeqSummary> {
        let (devices, missing, restarts): (i64, Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(CASE WHEN missing > 0 THEN 1 END), SUM(missing), SUM(restarts)
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
        let n = sqlx::query(
            "DELETE FROM reading_history WHERE id IN (
                 SELECT id FROM (
                     SELECT id, ROW_NUMBER() OVER (PARTITION BY device_id ORDER BY id DESC) AS rn
                     FROM reading_history
                 ) ranked WHERE rn > ?
             )",
        )
        .bind(i64::from(keep))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n)
    }

    async fn list_unregistered(&self, limit: u32) -> StoreResult<Vec<UnregisteredDevice>> {
        let rows = sqlx::query(
            "SELECT id, claimed_kind, first_seen_ms, last_seen_ms, last_topic, message_count
             FROM unregistered_devices ORDER BY last_seen_ms DESC, id LIMIT ?",
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
        let expired = sqlx::query("DELETE FROM unregistered_devices WHERE last_seen_ms < ?")
            .bind(seen_before_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let over = sqlx::query(
            "DELETE FROM unregistered_devices WHERE id IN (
                 SELECT id FROM unregistered_devices ORDER BY last_seen_ms DESC, id
                 LIMIT -1 OFFSET ?
             )",
        )
        .bind(i64::try_from(keep).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(expired + over)
    }

    async fn rejection_totals(&self) -> StoreResult<Vec<(String, u64)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT reason, total FROM rejection_counters ORDER BY reason")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(r, n)| (r, count(n))).collect())
    }

    async fn open_case_counts(&self) -> StoreResult<Vec<(String, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT case_type, COUNT(*) FROM cases WHERE state NOT IN ('closed', 'voided')
             GROUP BY case_type ORDER BY case_type",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(t, n)| (t, count(n))).collect())
    }

    async fn insert_case(
        &self,
        case: &CaseRecord,
        entry: &CaseHistoryEntry,
    ) -> StoreResult<CaseInsert> {
        let mut tx = self.pool.begin().await?;
        let devices = serde_json::to_string(&case.devices).map_err(|e| corrupt("cases", e))?;
        let inserted = sqlx::query(
            "INSERT INTO cases (case_type, source, subject_key, condition_key, grid, team, state,
                 urgent, devices, detail, opened_ms, due_ms, updated_ms, closed_ms,
                 condition_active, clear_since_ms, rework_count, returned_count)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(enum_text(&case.case_type))
        .bind(enum_text(&case.source))
        .bind(&case.subject_key)
        .bind(&case.condition_key)
        .bind(&case.grid)
        .bind(&case.team)
        .bind(state_text(case.state))
        .bind(case.urgent)
        .bind(devices)
        .bind(&case.detail)
        .bind(case.opened_ms)
        .bind(case.due_ms)
        .bind(case.updated_ms)
        .bind(case.closed_ms)
        .bind(case.condition_active)
        .bind(case.clear_since_ms)
        .bind(i64::from(case.rework_count))
        .bind(i64::from(case.returned_count))
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(r) => {
                let id = r.last_insert_rowid();
                insert_history(&mut tx, id, entry).await?;
                tx.commit().await?;
                Ok(CaseInsert::Created(id))
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                drop(tx);
                let condition = case.condition_key.as_deref().unwrap_or_default();
                let existing = self
                    .open_case(&case.subject_key, condition)
                    .await?
                    .map(|c| c.id)
                    .ok_or_else(|| corrupt("cases", "unique violation without an open case"))?;
                Ok(CaseInsert::AlreadyOpen(existing))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn update_case(
        &self,
        case: &CaseRecord,
        expected_state: CaseState,
        entries: &[CaseHistoryEntry],
    ) -> StoreResult<bool> {
        self.update_case_guarded(case, expected_state, None, entries)
            .await
    }

    async fn update_case_from(
        &self,
        case: &CaseRecord,
        read: &CaseRecord,
        entries: &[CaseHistoryEntry],
    ) -> StoreResult<bool> {
        self.update_case_guarded(
            case,
            read.state,
            Some((read.condition_active, read.clear_since_ms)),
            entries,
        )
        .await
    }

    async fn get_case(&self, id: i64) -> StoreResult<Option<CaseRecord>> {
        sqlx::query("SELECT * FROM cases WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(case_from_row)
            .transpose()
    }

    async fn open_case(
        &self,
        subject_key: &str,
        condition_key: &str,
    ) -> StoreResult<Option<CaseRecord>> {
        sqlx::query(
            "SELECT * FROM cases WHERE subject_key = ? AND condition_key = ?
             AND state NOT IN ('closed', 'voided')",
        )
        .bind(subject_key)
        .bind(condition_key)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(case_from_row)
        .transpose()
    }

    async fn recently_closed_case(
        &self,
        subject_key: &str,
        condition_key: &str,
        since_ms: UnixMs,
    ) -> StoreResult<Option<CaseRecord>> {
        sqlx::query(
            "SELECT * FROM cases WHERE subject_key = ? AND condition_key = ? AND state = 'closed'
             AND closed_ms >= ? ORDER BY closed_ms DESC, id DESC LIMIT 1",
        )
        .bind(subject_key)
        .bind(condition_key)
        .bind(since_ms)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(case_from_row)
        .transpose()
    }

    async fn list_cases(&self, filter: &CaseFilter) -> StoreResult<(u64, Vec<CaseRecord>)> {
        let mut count_q = QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM cases");
        push_case_filter(&mut count_q, filter);
        let total: i64 = count_q.build_query_scalar().fetch_one(&self.pool).await?;
        let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM cases");
        push_case_filter(&mut q, filter);
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(filter.limit))
            .push(" OFFSET ")
            .push_bind(i64::from(filter.offset));
        let rows = q.build().fetch_all(&self.pool).await?;
        let cases = rows.iter().map(case_from_row).collect::<StoreResult<_>>()?;
        Ok((count(total), cases))
    }

    async fn open_cases(&self) -> StoreResult<Vec<CaseRecord>> {
        sqlx::query("SELECT * FROM cases WHERE state NOT IN ('closed', 'voided') ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(case_from_row)
            .collect()
    }

    async fn case_history(&self, id: i64) -> StoreResult<Vec<CaseHistoryEntry>> {
        let rows = sqlx::query(
            "SELECT at_ms, actor, from_state, to_state, note FROM case_history
             WHERE case_id = ? ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(history_from_row).collect()
    }

    async fn case_events_after(&self, after_id: i64, limit: u32) -> StoreResult<Vec<CaseEvent>> {
        let rows = sqlx::query(
            "SELECT h.id AS event_id, h.at_ms, h.actor, h.from_state, h.to_state, h.note, c.*
             FROM case_history h JOIN cases c ON c.id = h.case_id
             WHERE h.id > ? ORDER BY h.id LIMIT ?",
        )
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(CaseEvent {
                    event_id: r.try_get("event_id")?,
                    entry: history_from_row(r)?,
                    case: case_from_row(r)?,
                })
            })
            .collect()
    }

    async fn alert_cursor(&self, sink: &str) -> StoreResult<i64> {
        sqlx::query(
            "INSERT INTO alert_cursors (sink, last_event_id)
             SELECT ?, COALESCE(MAX(id), 0) FROM case_history WHERE true
             ON CONFLICT (sink) DO NOTHING",
        )
        .bind(sink)
        .execute(&self.pool)
        .await?;
        let cursor: i64 =
            sqlx::query_scalar("SELECT last_event_id FROM alert_cursors WHERE sink = ?")
                .bind(sink)
                .fetch_one(&self.pool)
                .await?;
        Ok(cursor)
    }

    async fn record_delivery(&self, d: &DeliveryRecord) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO alert_deliveries (sink, event_id, case_id, status, attempts,
             response_status, last_error, first_attempt_ms, finished_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&d.sink)
        .bind(d.event_id)
        .bind(d.case_id)
        .bind(enum_text(&d.status))
        .bind(i64::from(d.attempts))
        .bind(d.response_status.map(i64::from))
        .bind(&d.last_error)
        .bind(d.first_attempt_ms)
        .bind(d.finished_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO alert_cursors (sink, last_event_id) VALUES (?, ?)
             ON CONFLICT (sink) DO UPDATE SET last_event_id = MAX(last_event_id, excluded.last_event_id)",
        )
        .bind(&d.sink)
        .bind(d.event_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_deliveries(
        &self,
        sink: Option<&str>,
        status: Option<DeliveryStatus>,
        limit: u32,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM alert_deliveries WHERE 1 = 1");
        if let Some(s) = sink {
            q.push(" AND sink = ").push_bind(s.to_owned());
        }
        if let Some(s) = status {
            q.push(" AND status = ").push_bind(enum_text(&s));
        }
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(limit));
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let status: String = r.try_get("status")?;
                let attempts: i64 = r.try_get("attempts")?;
                let code: Option<i64> = r.try_get("response_status")?;
                Ok(DeliveryRecord {
                    id: r.try_get("id")?,
                    sink: r.try_get("sink")?,
                    event_id: r.try_get("event_id")?,
                    case_id: r.try_get("case_id")?,
                    status: text_enum(&status).map_err(|e| corrupt("alert_deliveries", e))?,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    response_status: code.and_then(|c| u16::try_from(c).ok()),
                    last_error: r.try_get("last_error")?,
                    first_attempt_ms: r.try_get("first_attempt_ms")?,
                    finished_ms: r.try_get("finished_ms")?,
                })
            })
            .collect()
    }

    async fn insert_command(&self, c: &CommandRecord) -> StoreResult<i64> {
        let id = sqlx::query(
            "INSERT INTO lamp_commands (device_id, action, actor, transport, state, detail,
             requested_ms, finished_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&c.device_id)
        .bind(c.action.to_string())
        .bind(&c.actor)
        .bind(&c.transport)
        .bind(enum_text(&c.state))
        .bind(&c.detail)
        .bind(c.requested_ms)
        .bind(c.finished_ms)
        .execute(&self.pool)
        .await?
        .last_insert_rowid();
        Ok(id)
    }

    async fn finish_command(
        &self,
        id: i64,
        state: CommandState,
        detail: &str,
        at_ms: UnixMs,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE lamp_commands SET state = ?, detail = ?, finished_ms = ? WHERE id = ?")
            .bind(enum_text(&state))
            .bind(detail)
            .bind(at_ms)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn list_commands(
        &self,
        device_id: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<CommandRecord>> {
        let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM lamp_commands WHERE 1 = 1");
        if let Some(d) = device_id {
            q.push(" AND device_id = ").push_bind(d.to_owned());
        }
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(limit));
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let action: String = r.try_get("action")?;
                let state: String = r.try_get("state")?;
                Ok(CommandRecord {
                    id: r.try_get("id")?,
                    device_id: r.try_get("device_id")?,
                    action: serde_json::from_str(&action)
                        .map_err(|e| corrupt("lamp_commands", e))?,
                    actor: r.try_get("actor")?,
                    transport: r.try_get("transport")?,
                    state: text_enum(&state).map_err(|e| corrupt("lamp_commands", e))?,
                    detail: r.try_get("detail")?,
                    requested_ms: r.try_get("requested_ms")?,
                    finished_ms: r.try_get("finished_ms")?,
                })
            })
            .collect()
    }

    async fn save_rule_state(&self, state: &str, saved_ms: UnixMs) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO rule_state (id, saved_ms, state) VALUES (1, ?, ?)
             ON CONFLICT (id) DO UPDATE SET saved_ms = excluded.saved_ms, state = excluded.state",
        )
        .bind(saved_ms)
        .bind(state)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn load_rule_state(&self) -> StoreResult<Option<(String, UnixMs)>> {
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT state, saved_ms FROM rule_state WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?;
        Ok(row)
    }

    async fn close(&self) {
        // Fold the WAL back into the main file so the database is one self-contained file.
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await
        {
            tracing::warn!(error = %e, "WAL checkpoint on close failed");
        }
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn statements_come_in_a_few_fixed_sizes() {
        let rows: Vec<u32> = (0..600).collect();
        let sizes: Vec<usize> = super::statement_chunks(&rows).map(<[u32]>::len).collect();
        assert_eq!(sizes, [256, 256, 64, 16, 4, 4]);
        assert_eq!(super::statement_chunks::<u32>(&[]).count(), 0);
        let sizes: Vec<usize> = super::statement_chunks(&rows[..7])
            .map(<[u32]>::len)
            .collect();
        assert_eq!(sizes, [4, 1, 1, 1]);
    }

    use super::*;
    use crate::inventory::parse_csv;
    use crate::model::{CaseSource, CaseType};
    use crate::store::UnregisteredSighting;

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("sub/dir/db.sqlite"))
            .await
            .unwrap();
        (dir, s)
    }

    #[tokio::test]
    async fn unregistered_devices_are_capped_and_expire() {
        let (_dir, s) = store().await;
        let unregistered = (0..20)
            .map(|i| UnregisteredSighting {
                device_id: format!("X-{i:02}"),
                claimed_kind: None,
                at_ms: 1000 + i,
                topic: format!("streetgate/v1/X-{i:02}/telemetry"),
                count: 1,
            })
            .collect();
        s.write_batch(&WriteBatch {
            unregistered,
            ..WriteBatch::default()
        })
        .await
        .unwrap();
        // Seen before 1005: X-00..X-04 expire; then the 10 most recent of the rest stay.
        assert_eq!(s.trim_unregistered(10, 1005).await.unwrap(), 10);
        let left: Vec<String> = s
            .list_unregistered(100)
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.id)
            .collect();
        assert_eq!(left.len(), 10);
        assert_eq!(left.first().map(String::as_str), Some("X-19"));
        assert_eq!(left.last().map(String::as_str), Some("X-10"));
        assert_eq!(s.trim_unregistered(10, 0).await.unwrap(), 0);
    }

    const CSV: &str = "\
id,kind,component_code,lat,lon,grid,road_segment,road_class,toilet_class,bin_depth_mm,transport,overrides
SL-1,streetlight,3205080118000001,31.30,120.60,G1,S-1,main,,,mqtt,min_current_a=0.2
BN-1,bin,,31.32,120.62,G2,,,,1200,modbus-rtu /dev/ttyUSB0 9600 7,
";

    #[tokio::test]
    async fn devices_round_trip() {
        let (_d, s) = store().await;
        let devices = parse_csv(CSV.as_bytes()).unwrap();
        s.upsert_devices(&devices, 1).await.unwrap();
        let mut back = s.list_devices().await.unwrap();
        back.sort_by(|a, b| b.id.cmp(&a.id));
        assert_eq!(back, devices);
        assert_eq!(
            s.get_device("BN-1").await.unwrap().as_ref(),
            Some(&devices[1])
        );
        assert!(s.delete_device("BN-1").await.unwrap());
        assert!(!s.delete_device("BN-1").await.unwrap());
        assert_eq!(s.count_devices().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn sequence_states_are_committed_with_readings_and_never_go_back() {
        let (_d, s) = store().await;
        let state = |last_seq, accepted| SeqState {
            last_seq,
            seen: u64::MAX - 4,
            valid: u64::MAX,
            missing: 2,
            restarts: 1,
            accepted,
        };
        let rec = |id: &str, st: Option<SeqState>| ReadingRecord {
            device_id: id.into(),
            reading_type: "telemetry",
            received_ms: 5,
            body: "{}".into(),
            seq_state: st,
        };
        s.write_batch(&WriteBatch {
            readings: vec![
                rec("MH-1", Some(state(9, 9))),
                rec("MH-1", Some(state(u32::MAX, 10))),
                rec("MH-1", Some(state(8, 8))),
                rec("MB-1", None),
            ],
            ..WriteBatch::default()
        })
        .await
        .unwrap();
        let mh = DeviceId::new("MH-1").unwrap();
        let all = s.seq_states().await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[&mh], state(u32::MAX, 10));
        // An older state (a batch written late) does not overwrite a newer one.
        s.write_batch(&WriteBatch {
            readings: vec![rec("MH-1", Some(state(3, 4)))],
            ..WriteBatch::default()
        })
        .await
        .unwrap();
        assert_eq!(
            s.seq_state("MH-1").await.unwrap(),
            Some(state(u32::MAX, 10))
        );
        assert_eq!(
            s.seq_summary().await.unwrap(),
            SeqSummary {
                devices_with_gaps: 1,
                missing: 2,
                restarts: 1
            }
        );
        assert_eq!(s.seq_state("MB-1").await.unwrap(), None);
    }

    #[tokio::test]
    async fn batches_latest_history_unregistered() {
        let (_d, s) = store().await;
        let rec = |t: i64, ty: &'static str| ReadingRecord {
            device_id: "SL-1".into(),
            reading_type: ty,
            received_ms: t,
            body: format!("{{\"t\":{t}}}"),
            seq_state: None,
        };
        let sighting = |id: &str, at: i64| UnregisteredSighting {
            device_id: id.into(),
            claimed_kind: None,
            at_ms: at,
            topic: format!("streetgate/v1/{id}/telemetry"),
            count: 2,
        };
        s.write_batch(&WriteBatch {
            readings: vec![rec(1, "telemetry"), rec(2, "telemetry"), rec(3, "status")],
            unregistered: vec![sighting("X-1", 5)],
            rejection_deltas: vec![("malformed".into(), 3)],
            keep_history: true,
        })
        .await
        .unwrap();
        s.write_batch(&WriteBatch {
            readings: vec![rec(4, "telemetry")],
            unregistered: vec![sighting("X-1", 9)],
            rejection_deltas: vec![("malformed".into(), 1)],
            keep_history: true,
        })
        .await
        .unwrap();
        let latest = s.latest_readings("SL-1").await.unwrap();
        assert_eq!(latest.len(), 2);
        assert_eq!(latest[0].received_ms, 4);
        assert_eq!(latest[0].body["t"], 4);
        assert_eq!(s.reading_history("SL-1", 10).await.unwrap().len(), 4);
        assert_eq!(s.trim_history(2).await.unwrap(), 2);
        assert_eq!(s.reading_history("SL-1", 10).await.unwrap().len(), 2);
        let u = s.list_unregistered(10).await.unwrap();
        assert_eq!(
            (u[0].message_count, u[0].first_seen_ms, u[0].last_seen_ms),
            (4, 5, 9)
        );
        assert_eq!(
            s.rejection_totals().await.unwrap(),
            vec![("malformed".to_owned(), 4)]
        );
        // Registering the device removes it from the unregistered list.
        let mut d = parse_csv(CSV.as_bytes()).unwrap().remove(0);
        d.id = DeviceId::new("X-1").unwrap();
        s.upsert_devices(&[d], 10).await.unwrap();
        assert_eq!(s.count_unregistered().await.unwrap(), 0);
    }

    fn case(subject: &str, condition: &str, state: CaseState) -> CaseRecord {
        CaseRecord {
            id: 0,
            case_type: CaseType::BinFull,
            source: CaseSource::Sensor,
            subject_key: subject.into(),
            condition_key: Some(condition.into()),
            grid: "G1".into(),
            team: Some("sanitation-G1".into()),
            state,
            urgent: false,
            devices: vec![DeviceId::new("BN-1").unwrap()],
            detail: "fill 85 % ≥ 80 %".into(),
            opened_ms: 1_000,
            due_ms: Some(5_000),
            updated_ms: 1_000,
            closed_ms: None,
            condition_active: true,
            clear_since_ms: None,
            rework_count: 0,
            returned_count: 0,
        }
    }

    fn entry(at: i64, from: Option<CaseState>, to: CaseState) -> CaseHistoryEntry {
        CaseHistoryEntry {
            at_ms: at,
            actor: "system".into(),
            from,
            to,
            note: String::new(),
        }
    }

    #[tokio::test]
    async fn cases_dedup_update_history_filters() {
        let (_d, s) = store().await;
        let c = case("device:BN-1", "alarm:bin_full", CaseState::Dispatched);
        let first = s
            .insert_case(&c, &entry(1_000, None, CaseState::Dispatched))
            .await
            .unwrap();
        let CaseInsert::Created(id) = first else {
            panic!("{first:?}")
        };
        assert_eq!(
            s.insert_case(&c, &entry(1_001, None, CaseState::Dispatched))
                .await
                .unwrap(),
            CaseInsert::AlreadyOpen(id)
        );
        // Concurrent inserts of the same key: exactly one wins.
        let results = futures::future::join_all((0..8).map(|i| {
            let s = s.clone();
            let c = case("device:MH-1", "alarm:cover_open", CaseState::Registered);
            async move {
                s.insert_case(&c, &entry(i, None, CaseState::Registered))
                    .await
                    .unwrap()
            }
        }))
        .await;
        let created = results
            .iter()
            .filter(|r| matches!(r, CaseInsert::Created(_)))
            .count();
        assert_eq!(created, 1, "{results:?}");

        let mut stored = s.get_case(id).await.unwrap().unwrap();
        assert_eq!(stored.devices, c.devices);
        stored.state = CaseState::Accepted;
        stored.updated_ms = 2_000;
        let e = entry(2_000, Some(CaseState::Dispatched), CaseState::Accepted);
        assert!(
            s.update_case(&stored, CaseState::Dispatched, std::slice::from_ref(&e))
                .await
                .unwrap()
        );
        // A stale writer loses.
        assert!(
            !s.update_case(&stored, CaseState::Dispatched, &[e])
                .await
                .unwrap()
        );
        // A team's transition made on a case read before the sensor cleared loses too, in
        // the same state: it must not write the old condition back.
        let read = s.get_case(id).await.unwrap().unwrap();
        let mut cleared = read.clone();
        cleared.condition_active = false;
        cleared.clear_since_ms = Some(2_500);
        assert!(
            s.update_case(&cleared, CaseState::Accepted, &[])
                .await
                .unwrap()
        );
        let mut resolved = read.clone();
        resolved.state = CaseState::Resolved;
        let e = entry(3_000, Some(CaseState::Accepted), CaseState::Resolved);
        assert!(
            !s.update_case_from(&resolved, &read, std::slice::from_ref(&e))
                .await
                .unwrap(),
            "the sensor's news is not overwritten"
        );
        let fresh = s.get_case(id).await.unwrap().unwrap();
        assert!(!fresh.condition_active);
        let mut resolved = fresh.clone();
        resolved.state = CaseState::Resolved;
        assert!(s.update_case_from(&resolved, &fresh, &[]).await.unwrap());
        let mut back = s.get_case(id).await.unwrap().unwrap();
        back.state = CaseState::Accepted;
        assert!(
            s.update_case(&back, CaseState::Resolved, &[])
                .await
                .unwrap()
        );
        let history = s.case_history(id).await.unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(history[1].from, Some(CaseState::Dispatched));

        let f = |f: CaseFilter| {
            let s = s.clone();
            async move {
                s.list_cases(&CaseFilter { limit: 100, ..f })
                    .await
                    .unwrap()
                    .0
            }
        };
        assert_eq!(f(CaseFilter::default()).await, 2);
        assert_eq!(
            f(CaseFilter {
                state: Some(CaseState::Accepted),
                ..Default::default()
            })
            .await,
            1
        );
        assert_eq!(
            f(CaseFilter {
                case_type: Some(CaseType::BinFull),
                grid: Some("G1".into()),
                ..Default::default()
            })
            .await,
            2
        );
        assert_eq!(
            f(CaseFilter {
                team: Some("nobody".into()),
                ..Default::default()
            })
            .await,
            0
        );
        assert_eq!(
            f(CaseFilter {
                overdue_at: Some(4_000),
                ..Default::default()
            })
            .await,
            0
        );
        assert_eq!(
            f(CaseFilter {
                overdue_at: Some(6_000),
                ..Default::default()
            })
            .await,
            2
        );

        // Closing frees the key; the closed case is found for the reopen window.
        stored.state = CaseState::Closed;
        stored.closed_ms = Some(3_000);
        assert!(
            s.update_case(&stored, CaseState::Accepted, &[])
                .await
                .unwrap()
        );
        assert_eq!(
            f(CaseFilter {
                open: Some(true),
                ..Default::default()
            })
            .await,
            1
        );
        assert_eq!(
            s.recently_closed_case("device:BN-1", "alarm:bin_full", 2_500)
                .await
                .unwrap()
                .map(|c| c.id),
            Some(id)
        );
        assert!(
            s.recently_closed_case("device:BN-1", "alarm:bin_full", 3_500)
                .await
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            s.insert_case(&c, &entry(4_000, None, CaseState::Dispatched))
                .await
                .unwrap(),
            CaseInsert::Created(_)
        ));
        assert_eq!(s.open_cases().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn rule_state_and_dedup_index() {
        let (_d, s) = store().await;
        assert!(s.load_rule_state().await.unwrap().is_none());
        s.save_rule_state("{\"a\":1}", 5).await.unwrap();
        s.save_rule_state("{\"a\":2}", 6).await.unwrap();
        assert_eq!(
            s.load_rule_state().await.unwrap(),
            Some(("{\"a\":2}".to_owned(), 6))
        );
        let open = "INSERT INTO cases (case_type, source, subject_key, condition_key, grid, state, opened_ms, updated_ms)
                    VALUES ('bin_full', 'sensor', 'device:BN-1', 'alarm:bin_full', 'G', ?, 1, 1)";
        sqlx::query(open)
            .bind("dispatched")
            .execute(s.pool())
            .await
            .unwrap();
        let dup = sqlx::query(open).bind("registered").execute(s.pool()).await;
        assert!(
            dup.is_err(),
            "second open case for the same key must be refused"
        );
        sqlx::query("UPDATE cases SET state = 'closed'")
            .execute(s.pool())
            .await
            .unwrap();
        sqlx::query(open)
            .bind("registered")
            .execute(s.pool())
            .await
            .unwrap();
        assert_eq!(
            s.open_case_counts().await.unwrap(),
            vec![("bin_full".to_owned(), 1)]
        );
    }
}
