-- A finished job's log moved to object storage (when larger than the inline limit).
ALTER TABLE deploy_jobs ADD COLUMN log_object TEXT;
