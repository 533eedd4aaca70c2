-- The ledger: releases, which one serves, rollbacks, the audit trail and guard leases.
-- Times are milliseconds since the Unix epoch.

CREATE TABLE releases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    version TEXT NOT NULL,
    -- deploying | watching | stable | rolled_back | failed
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    -- when it took traffic; the bake time counts from here
    watch_started_at BIGINT,
    -- when it passed its bake time (known-good from then on)
    stable_at BIGINT,
    note TEXT
);
CREATE INDEX releases_by_app ON releases (app, id);

-- Which release serves each app (or must, after a restart).
CREATE TABLE app_state (
    app TEXT PRIMARY KEY,
    current_release_id BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE rollbacks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    from_release_id BIGINT NOT NULL,
    to_release_id BIGINT NOT NULL,
    -- auto | manual
    trigger_kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    -- the judge's finding or check result, JSON
    evidence TEXT,
    requested_by TEXT NOT NULL,
    requested_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    -- requested | started | done | failed
    status TEXT NOT NULL,
    -- 1 once its line is in the rollback log
    logged INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX rollbacks_by_app ON rollbacks (app, id);

CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    release_id BIGINT,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX events_by_app ON events (app, id);

-- One guard acts per app: whoever holds the unexpired lease. `epoch` grows with each new
-- holder (a fencing token).
CREATE TABLE leases (
    app TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    epoch BIGINT NOT NULL
);

-- The guard's latest view of each app (state, live signals), for `rearguard status`.
CREATE TABLE snapshots (
    app TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    body TEXT NOT NULL
);
