-- The active gateway's lease: with [ha] enabled, gateways on one database compete for the row
-- named 'active'; the holder renews it before expires_ms, a standby takes it once it has
-- expired. epoch grows with every new holder. Times are the database's clock, Unix ms.
CREATE TABLE gateway_lease (
    name            TEXT PRIMARY KEY NOT NULL,
    holder          TEXT NOT NULL,
    epoch           BIGINT NOT NULL,
    acquired_ms     BIGINT NOT NULL,
    expires_ms      BIGINT NOT NULL
);
