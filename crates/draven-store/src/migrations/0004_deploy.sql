-- Deploy control plane: projects with their repository integration, per-environment policies,
-- deploy jobs and the timeline of each job's states.

CREATE TABLE projects (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    project_key      TEXT NOT NULL,
    name             TEXT NOT NULL,
    description      TEXT NOT NULL DEFAULT '',
    provider         TEXT NOT NULL,
    repo             TEXT NOT NULL,
    -- Provider-specific integration as JSON: trigger method, environment -> pipeline mapping,
    -- names of the kernel secrets holding credentials (never the credentials themselves).
    integration      TEXT NOT NULL DEFAULT '{}',
    -- ssh-keygen allowed-signers lines for signed-tag verification.
    allowed_signers  TEXT NOT NULL DEFAULT '',
    revision         BIGINT NOT NULL DEFAULT 1,
    created_by       TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    UNIQUE (tenant_id, project_key)
);

CREATE TABLE project_environments (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    project_id   TEXT NOT NULL REFERENCES projects(id),
    environment  TEXT NOT NULL,
    policy       TEXT NOT NULL,
    revision     BIGINT NOT NULL DEFAULT 1,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (project_id, environment)
);

CREATE TABLE deploy_jobs (
    id                 TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL REFERENCES tenants(id),
    project_id         TEXT NOT NULL REFERENCES projects(id),
    environment        TEXT NOT NULL,
    kind               TEXT NOT NULL,
    ref_name           TEXT NOT NULL,
    ref_kind           TEXT NOT NULL,
    commit_sha         TEXT NOT NULL,
    state              TEXT NOT NULL,
    requested_by       TEXT NOT NULL,
    requested_by_name  TEXT NOT NULL,
    approval_id        TEXT,
    refused_rule       TEXT,
    reason             TEXT NOT NULL DEFAULT '',
    timeout_secs       BIGINT NOT NULL,
    runner             TEXT,
    exit_code          BIGINT,
    log_url            TEXT,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    started_at         BIGINT,
    finished_at        BIGINT
);
CREATE INDEX deploy_jobs_env ON deploy_jobs (tenant_id, project_id, environment, created_at);
CREATE INDEX deploy_jobs_state ON deploy_jobs (state, created_at);

CREATE TABLE job_events (
    job_id   TEXT NOT NULL REFERENCES deploy_jobs(id),
    seq      BIGINT NOT NULL,
    at       BIGINT NOT NULL,
    state    TEXT NOT NULL,
    message  TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, seq)
);
