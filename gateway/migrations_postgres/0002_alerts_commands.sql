-- Alert delivery (outbox = case_history) and lamp commands.

-- How far each alert sink has got through case_history (ids delivered or given up on).
CREATE TABLE alert_cursors (
    sink            TEXT PRIMARY KEY NOT NULL,
    last_event_id   BIGINT NOT NULL
);

-- One row per case event and sink: delivered, or failed after the last attempt.
CREATE TABLE alert_deliveries (
    id              BIGSERIAL PRIMARY KEY,
    sink            TEXT NOT NULL,
    event_id        BIGINT NOT NULL,
    case_id         BIGINT NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    response_status BIGINT,
    last_error      TEXT,
    first_attempt_ms BIGINT NOT NULL,
    finished_ms     BIGINT NOT NULL
);
CREATE INDEX alert_deliveries_sink ON alert_deliveries (sink, status, id);

-- Lamp commands sent through the API. id is the command's cmd_id on the wire.
CREATE TABLE lamp_commands (
    id              BIGSERIAL PRIMARY KEY,
    device_id       TEXT NOT NULL,
    action          TEXT NOT NULL,
    actor           TEXT NOT NULL,
    transport       TEXT NOT NULL,
    state           TEXT NOT NULL,
    detail          TEXT NOT NULL DEFAULT '',
    requested_ms    BIGINT NOT NULL,
    finished_ms     BIGINT
);
CREATE INDEX lamp_commands_device ON lamp_commands (device_id, id);
