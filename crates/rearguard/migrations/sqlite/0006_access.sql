-- Who may use the HTTP API (bearer tokens, stored as SHA-256 hashes: a token is 256 random
-- bits, so a fast hash is as good as a slow one), and the audit log of every write from any
-- edge (CLI or API).
CREATE TABLE tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    -- viewer | operator | admin
    role TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    -- user@host (CLI) or token:<name> (API)
    actor TEXT NOT NULL,
    -- cli, or the client's address
    source TEXT NOT NULL,
    -- what was asked: record_release, request_rollback, incident_ack, token_create, ...
    action TEXT NOT NULL,
    -- what it was asked of: an app, an incident, a token's name
    target TEXT NOT NULL,
    -- ok | refused | failed
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_by_time ON audit (at, id);
