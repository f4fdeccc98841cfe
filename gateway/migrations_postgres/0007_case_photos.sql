-- Photos of a case (处置照片): the proof a team attaches when it reports a case resolved, kept
-- with the case. The type is decided from the bytes at upload (JPEG, PNG or WebP).
CREATE TABLE case_photos (
    id              BIGSERIAL PRIMARY KEY,
    case_id         BIGINT NOT NULL REFERENCES cases (id) ON DELETE CASCADE,
    content_type    TEXT NOT NULL,
    size_bytes      BIGINT NOT NULL,
    bytes           BYTEA NOT NULL,
    uploader        TEXT NOT NULL,
    uploaded_ms     BIGINT NOT NULL
);
CREATE INDEX case_photos_case ON case_photos (case_id, id);
