-- Each notification's delivery to each channel: queued with the notification (one
-- transaction), then marked delivered or failed by the sender. A guard that dies with
-- deliveries queued sends them after its restart.
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id BIGINT NOT NULL,
    event TEXT NOT NULL,
    level BIGINT NOT NULL,
    channel TEXT NOT NULL,
    -- queued | delivered | failed
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    queued_at BIGINT NOT NULL,
    finished_at BIGINT,
    error TEXT
);
CREATE INDEX deliveries_by_incident ON deliveries (incident_id, status);
