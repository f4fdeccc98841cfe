-- Each device's sequence numbers as last committed with its readings, so that a restarted
-- gateway resumes the window and counts messages lost across the restart. seen_bits and
-- valid_bits are the 64-message window (bit i = last_seq - i) as signed 64-bit integers.
CREATE TABLE device_sequences (
    device_id       TEXT PRIMARY KEY NOT NULL,
    last_seq        BIGINT NOT NULL,
    seen_bits       BIGINT NOT NULL,
    valid_bits      BIGINT NOT NULL,
    missing         BIGINT NOT NULL,
    restarts        BIGINT NOT NULL,
    accepted        BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL
);
