-- What the platform looked like when a release went bad, kept with its incident: the state
-- (instances, containers) and the last log lines of each component of the bad version,
-- secrets redacted. One per incident.
CREATE TABLE captures (
    incident_id BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    version TEXT NOT NULL,
    -- JSON
    state TEXT NOT NULL,
    -- JSON: component -> text
    logs TEXT NOT NULL
);
