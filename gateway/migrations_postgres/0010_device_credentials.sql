-- MQTT credentials of devices on the embedded broker: the SHA-256 (hex) of each device's
-- secret. The secret itself is shown once, when it is issued, and never stored. A device row's
-- deletion deletes its credential.
CREATE TABLE device_credentials (
    device_id       TEXT PRIMARY KEY NOT NULL,
    secret_hash     TEXT NOT NULL,
    issued_ms       BIGINT NOT NULL
);
