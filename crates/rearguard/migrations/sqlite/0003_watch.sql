-- What the guard saw, so a restarted guard judges exactly as an uninterrupted one would.

-- Per-second traffic of each version, as counted: the baseline's history and the
-- candidate's evidence are rebuilt from these rows.
CREATE TABLE steps (
    app TEXT NOT NULL,
    version TEXT NOT NULL,
    -- epoch seconds; the counts cover the second ending at t
    t BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    -- requests at or below each latency bound in milliseconds (Prometheus' default
    -- bounds; le_inf is requests), as in the scenario CSV format
    le_5 BIGINT NOT NULL,
    le_10 BIGINT NOT NULL,
    le_25 BIGINT NOT NULL,
    le_50 BIGINT NOT NULL,
    le_100 BIGINT NOT NULL,
    le_250 BIGINT NOT NULL,
    le_500 BIGINT NOT NULL,
    le_1000 BIGINT NOT NULL,
    le_2500 BIGINT NOT NULL,
    le_5000 BIGINT NOT NULL,
    le_10000 BIGINT NOT NULL,
    PRIMARY KEY (app, version, t)
);

-- How a release is judged: in which mode, against which version's record, from when.
ALTER TABLE releases ADD COLUMN watch_mode TEXT;
ALTER TABLE releases ADD COLUMN baseline_version TEXT;
ALTER TABLE releases ADD COLUMN judged_from BIGINT;
-- Time its watch was interrupted (no guard running): it does not count towards the bake.
ALTER TABLE releases ADD COLUMN unwatched_ms BIGINT NOT NULL DEFAULT 0;
