-- Deploy locks (SPEC D5): at most one holder per (tenant, project, environment), as a lease
-- that its holder renews and that anyone may take over once it has expired.
CREATE TABLE environment_locks (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    project      TEXT NOT NULL,
    environment  TEXT NOT NULL,
    holder_job   TEXT NOT NULL,
    holder       TEXT NOT NULL,
    acquired_at  BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, project, environment)
);
CREATE INDEX environment_locks_job ON environment_locks (holder_job);
