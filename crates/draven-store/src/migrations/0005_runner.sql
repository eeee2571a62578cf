-- Deploy job logs as the runner streams them, in order.
CREATE TABLE job_logs (
    job_id  TEXT NOT NULL REFERENCES deploy_jobs(id),
    seq     BIGINT NOT NULL,
    at      BIGINT NOT NULL,
    stream  TEXT NOT NULL,
    text    TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
