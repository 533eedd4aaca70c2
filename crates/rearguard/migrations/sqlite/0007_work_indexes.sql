-- The guard asks each tick which apps have a release to deploy or a rollback to perform,
-- for all apps in one query: these keep it from reading every release ever recorded.
CREATE INDEX releases_by_state ON releases (state);
CREATE INDEX rollbacks_by_status ON rollbacks (status);
