-- Jobs handed to GitHub, GitLab or Bitbucket (issue 5). What the dispatcher owes a job is its
-- provider_phase: 'trigger' (start the pipeline), 'find' (started, but the provider did not say
-- which run: look for the job's marker), 'follow' (poll / take webhooks until the run ends),
-- 'done'. NULL for jobs of local projects. provider_next_at is when the dispatcher acts next
-- (backoff after failures); a dispatcher takes its turn by moving it forward conditionally.
ALTER TABLE deploy_jobs ADD COLUMN provider_phase TEXT;
ALTER TABLE deploy_jobs ADD COLUMN provider_next_at BIGINT;
ALTER TABLE deploy_jobs ADD COLUMN provider_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE deploy_jobs ADD COLUMN provider_triggered_at BIGINT;
-- The provider's run (GitHub run id, GitLab pipeline id, Bitbucket pipeline uuid), its number
-- where the provider shows one (Bitbucket build number), its page, and its last raw status.
ALTER TABLE deploy_jobs ADD COLUMN provider_run_id TEXT;
ALTER TABLE deploy_jobs ADD COLUMN provider_run_number TEXT;
ALTER TABLE deploy_jobs ADD COLUMN provider_url TEXT;
ALTER TABLE deploy_jobs ADD COLUMN provider_status TEXT;
CREATE INDEX deploy_jobs_provider_run ON deploy_jobs (provider_run_id);
CREATE INDEX deploy_jobs_provider_phase ON deploy_jobs (provider_phase);

-- Webhook deliveries already taken, per provider: a replayed delivery id is refused.
CREATE TABLE webhook_deliveries (
    provider     TEXT NOT NULL,
    delivery_id  TEXT NOT NULL,
    job_id       TEXT NOT NULL,
    received_at  BIGINT NOT NULL,
    PRIMARY KEY (provider, delivery_id)
);

-- Notification channels of a project's environment (JSON array; see docs/notifications.md).
ALTER TABLE project_environments ADD COLUMN notifications TEXT NOT NULL DEFAULT '[]';

-- One row per (job event, channel) to deliver; retried with backoff, never blocking a job.
CREATE TABLE notification_outbox (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    job_id      TEXT NOT NULL,
    event       TEXT NOT NULL,
    channel     TEXT NOT NULL,
    state       TEXT NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,
    next_at     BIGINT NOT NULL,
    last_error  TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL
);
CREATE INDEX notification_outbox_due ON notification_outbox (state, next_at);
