-- People's access: users with a role, sign-in sessions, API tokens and the audit log.
-- Secrets are never stored: passwords as Argon2id PHC strings, session and API tokens as the
-- hex SHA-256 of the random token handed out once.

-- role: admin, dispatcher, team_member, lamp_operator or viewer. team scopes a team member to
-- the cases of that team; grid scopes a viewer (or a token) to one unit grid.
CREATE TABLE users (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    name                TEXT NOT NULL UNIQUE,
    role                TEXT NOT NULL,
    team                TEXT,
    grid                TEXT,
    password_hash       TEXT NOT NULL,
    disabled            BOOLEAN NOT NULL DEFAULT FALSE,
    created_ms          BIGINT NOT NULL,
    password_changed_ms BIGINT NOT NULL
);

-- Sign-in sessions (cookie). Expire after auth.session_idle_s without use, and
-- auth.session_absolute_s after sign-in whatever the use.
CREATE TABLE sessions (
    token_hash      TEXT PRIMARY KEY NOT NULL,
    user_id         BIGINT NOT NULL REFERENCES users (id),
    created_ms      BIGINT NOT NULL,
    last_seen_ms    BIGINT NOT NULL,
    peer            TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);

-- Bearer API tokens for integrations, owned by a user, with their own role and scope.
CREATE TABLE api_tokens (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash      TEXT NOT NULL UNIQUE,
    name            TEXT NOT NULL,
    user_id         BIGINT NOT NULL REFERENCES users (id),
    role            TEXT NOT NULL,
    team            TEXT,
    grid            TEXT,
    created_by      TEXT NOT NULL,
    created_ms      BIGINT NOT NULL,
    expires_ms      BIGINT,
    last_used_ms    BIGINT,
    revoked_ms      BIGINT
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);

-- Every mutating API call: who (NULL when not signed in), what (method, route template and
-- the target id from the path), when, from where (peer address) and the answer's status.
CREATE TABLE audit_log (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms           BIGINT NOT NULL,
    actor           TEXT,
    auth            TEXT,
    method          TEXT NOT NULL,
    route           TEXT NOT NULL,
    target          TEXT,
    peer            TEXT,
    status          INTEGER NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at_ms);
CREATE INDEX audit_log_actor ON audit_log (actor, id);
