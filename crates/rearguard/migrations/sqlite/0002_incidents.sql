-- Incidents: opened with a rollback (or a failed deploy), kept with their timeline.

CREATE TABLE incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    rollback_id BIGINT,
    from_version TEXT NOT NULL,
    to_version TEXT,
    -- P1 .. P4
    severity TEXT NOT NULL,
    -- detected | mitigating | mitigated | resolved
    status TEXT NOT NULL,
    title TEXT NOT NULL,
    -- when the release started being bad (the judge's evidence window), if known
    onset_at BIGINT,
    detected_at BIGINT NOT NULL,
    mitigated_at BIGINT,
    acknowledged_at BIGINT,
    acknowledged_by TEXT,
    resolved_at BIGINT,
    resolved_by TEXT,
    root_cause TEXT,
    -- the decision's evidence, JSON
    evidence TEXT
);
CREATE INDEX incidents_by_app ON incidents (app, id);
CREATE UNIQUE INDEX incidents_by_rollback ON incidents (rollback_id);

CREATE TABLE incident_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id BIGINT NOT NULL,
    at BIGINT NOT NULL,
    -- deploy_started | first_bad_signal | decision | rollback_started | rollback_finished |
    -- rollback_failed | verification | acknowledged | note | severity | root_cause | resolved
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX incident_events_by_incident ON incident_events (incident_id, id);

-- Notifications sent for an incident (event and escalation level), so each goes out once.
CREATE TABLE incident_notifications (
    incident_id BIGINT NOT NULL,
    event TEXT NOT NULL,
    level BIGINT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (incident_id, event, level)
);
