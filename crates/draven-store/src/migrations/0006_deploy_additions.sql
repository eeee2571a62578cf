-- A finished job's log moved to object storage (when larger than the inline limit).
ALTER TABLE deploy_jobs ADD COLUMN log_object TEXT;
-- Scheduled deploys: a queued job is not started before this time.
ALTER TABLE deploy_jobs ADD COLUMN not_before BIGINT;
-- The per-job token an executor (runner or external pipeline) uses for callbacks; sha256 only.
ALTER TABLE deploy_jobs ADD COLUMN callback_token_hash TEXT;
-- Runners a tenant has seen: registered by their first claim, refreshed by every claim and
-- heartbeat.
CREATE TABLE runners (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    first_seen  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
