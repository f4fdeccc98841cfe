-- Evaluation (考核): reading a period's case history by time, the lighting figures kept per
-- segment and night for the monthly compliance, and the monthly reports already written.

-- Cases touched in a period: registered before its end and not finished before its start, or
-- with history inside it.
CREATE INDEX case_history_at ON case_history (at_ms, case_id);
CREATE INDEX cases_opened ON cases (opened_ms);
CREATE INDEX cases_closed ON cases (closed_ms);

-- Lamp-seconds lit and expected per road segment (or `grid:<code>` for lamps without one) and
-- UTC day (days since the epoch), with the segment's grid and road class when it was recorded.
CREATE TABLE lighting_days (
    segment         TEXT NOT NULL,
    day             BIGINT NOT NULL,
    grid            TEXT NOT NULL,
    road_class      TEXT,
    lit_s           BIGINT NOT NULL,
    expected_s      BIGINT NOT NULL,
    PRIMARY KEY (segment, day)
);
CREATE INDEX lighting_days_day ON lighting_days (day);

-- Monthly reports written by the schedule (`YYYY-MM`), so a restart neither redoes nor skips one.
CREATE TABLE evaluation_reports (
    month           TEXT PRIMARY KEY NOT NULL,
    written_ms      BIGINT NOT NULL,
    files           TEXT NOT NULL
);
