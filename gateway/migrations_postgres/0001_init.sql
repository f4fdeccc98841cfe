-- streetgate schema, PostgreSQL: the same tables as migrations_sqlite/, every integer a BIGINT
-- (the store reads them all as i64). Times are Unix milliseconds.

-- Inventory. transport and overrides are JSON (model::Transport, model::ThresholdOverrides).
CREATE TABLE devices (
    id              TEXT PRIMARY KEY NOT NULL,
    kind            TEXT NOT NULL,
    component_code  TEXT,
    lat             DOUBLE PRECISION NOT NULL,
    lon             DOUBLE PRECISION NOT NULL,
    grid            TEXT NOT NULL,
    road_segment    TEXT,
    road_class      TEXT,
    toilet_class    TEXT,
    bin_depth_mm    BIGINT,
    transport       TEXT NOT NULL,
    overrides       TEXT NOT NULL,
    updated_ms      BIGINT NOT NULL
);
CREATE INDEX devices_grid ON devices (grid);
CREATE INDEX devices_segment ON devices (road_segment);

-- Latest reading of each type (telemetry, alarm, status, ack) per device, as JSON.
CREATE TABLE latest_readings (
    device_id       TEXT NOT NULL,
    reading_type    TEXT NOT NULL,
    received_ms     BIGINT NOT NULL,
    body            TEXT NOT NULL,
    PRIMARY KEY (device_id, reading_type)
);

-- Recent readings, trimmed to store.history_per_device per device.
CREATE TABLE reading_history (
    id              BIGSERIAL PRIMARY KEY,
    device_id       TEXT NOT NULL,
    reading_type    TEXT NOT NULL,
    received_ms     BIGINT NOT NULL,
    body            TEXT NOT NULL
);
CREATE INDEX reading_history_device ON reading_history (device_id, id);

-- Devices that published but are not in the inventory.
CREATE TABLE unregistered_devices (
    id              TEXT PRIMARY KEY NOT NULL,
    claimed_kind    TEXT,
    first_seen_ms   BIGINT NOT NULL,
    last_seen_ms    BIGINT NOT NULL,
    last_topic      TEXT NOT NULL,
    message_count   BIGINT NOT NULL
);

-- Rejected messages by reason, cumulative over restarts.
CREATE TABLE rejection_counters (
    reason          TEXT PRIMARY KEY NOT NULL,
    total           BIGINT NOT NULL
);

-- Cases (案件). subject_key/condition_key are model::Subject::key() / model::Condition::key();
-- condition_key is NULL for patrol/hotline cases (NULLs never collide in the unique index).
CREATE TABLE cases (
    id              BIGSERIAL PRIMARY KEY,
    case_type       TEXT NOT NULL,
    source          TEXT NOT NULL,
    subject_key     TEXT NOT NULL,
    condition_key   TEXT,
    grid            TEXT NOT NULL,
    team            TEXT,
    state           TEXT NOT NULL,
    urgent          BOOLEAN NOT NULL DEFAULT FALSE,
    devices         TEXT NOT NULL DEFAULT '[]',
    detail          TEXT NOT NULL DEFAULT '',
    opened_ms       BIGINT NOT NULL,
    due_ms          BIGINT,
    updated_ms      BIGINT NOT NULL,
    closed_ms       BIGINT,
    condition_active BOOLEAN NOT NULL DEFAULT FALSE,
    clear_since_ms  BIGINT,
    rework_count    BIGINT NOT NULL DEFAULT 0,
    returned_count  BIGINT NOT NULL DEFAULT 0
);
-- At most one open case per (subject, condition): deduplication is atomic in the database.
CREATE UNIQUE INDEX cases_open_key ON cases (subject_key, condition_key)
    WHERE state NOT IN ('closed', 'voided');
CREATE INDEX cases_state ON cases (state, case_type, grid, team);
CREATE INDEX cases_due ON cases (due_ms);

-- Every transition of every case.
CREATE TABLE case_history (
    id              BIGSERIAL PRIMARY KEY,
    case_id         BIGINT NOT NULL REFERENCES cases (id),
    at_ms           BIGINT NOT NULL,
    actor           TEXT NOT NULL,
    from_state      TEXT,
    to_state        TEXT NOT NULL,
    note            TEXT NOT NULL DEFAULT ''
);
CREATE INDEX case_history_case ON case_history (case_id, id);

-- Rule-engine state (durations, offline timers, lighting windows): one JSON blob.
CREATE TABLE rule_state (
    id              BIGINT PRIMARY KEY CHECK (id = 1),
    saved_ms        BIGINT NOT NULL,
    state           TEXT NOT NULL
);
