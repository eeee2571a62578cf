//! What the runner agent does with deploy jobs: claim the oldest queued job whose environment
//! lock it can take, keep the lease with heartbeats, stream log lines, report the outcome. And
//! the reaper: a running job whose lease lapsed (its runner died) fails and frees the lock.
//!
//! Each claim attempt is its own transaction (take the lease, then QUEUED → RUNNING), so two
//! runners racing for one job cannot both start it: the second one's state change finds the
//! job already RUNNING and rolls back.

use crate::audit::Actor;
use crate::deploy::{transition_in, Job};
use crate::locks::{try_lock_in, LockKey};
use crate::{now_ms, rfc3339, Db, Result};
use draven_core::job::{JobEvent, JobState};
use draven_core::{Error, ErrorCode};
use sqlx::Row;

/// Most bytes of log one job keeps; past this, lines are dropped and a marker says so.
pub const MAX_LOG_BYTES: i64 = 16 * 1024 * 1024;

/// A job handed to a runner, with what it needs to execute it.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub job: Job,
    pub repo: String,
    /// The per-job token for `/api/v1/callbacks/{job}/…` (shown here only; stored hashed).
    pub callback_token: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogChunk {
    pub seq: i64,
    pub at: String,
    pub stream: String,
    pub text: String,
}

/// How a runner says a job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

impl Outcome {
    pub fn parse(s: &str) -> Option<Outcome> {
        Some(match s {
            "succeeded" => Outcome::Succeeded,
            "failed" => Outcome::Failed,
            "timed_out" => Outcome::TimedOut,
            "cancelled" => Outcome::Cancelled,
            _ => return None,
        })
    }

    fn event(self) -> JobEvent {
        match self {
            Outcome::Succeeded => JobEvent::Finished { success: true },
            Outcome::Failed => JobEvent::Finished { success: false },
            Outcome::TimedOut => JobEvent::TimedOut,
            Outcome::Cancelled => JobEvent::Cancel,
        }
    }
}

fn not_yours() -> Error {
    Error::new(
        ErrorCode::Conflict,
        "this runner does not hold this job (its lease lapsed or another runner took it)",
    )
}

/// A runner as the server knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunnerInfo {
    pub name: String,
    pub first_seen: String,
    pub last_seen: String,
    /// The job it is running, if any.
    pub running_job: Option<String>,
}

impl Db {
    /// Registers a runner (first contact) or notes that it is alive.
    pub async fn touch_runner(&self, tenant_id: &str, name: &str) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO runners (tenant_id, name, first_seen, last_seen) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (tenant_id, name) DO UPDATE SET last_seen = excluded.last_seen",
        )
        .bind(tenant_id)
        .bind(name)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The tenant's runners, most recently seen first.
    pub async fn list_runners(&self, tenant_id: &str) -> Result<Vec<RunnerInfo>> {
        let rows = sqlx::query(
            "SELECT r.name, r.first_seen, r.last_seen, (SELECT j.id FROM deploy_jobs j WHERE j.tenant_id = r.tenant_id AND j.runner = r.name AND j.state = 'RUNNING' LIMIT 1) AS running_job \
             FROM runners r WHERE r.tenant_id = $1 ORDER BY r.last_seen DESC, r.name",
        )
        .bind(tenant_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RunnerInfo {
                    name: r.try_get("name")?,
                    first_seen: rfc3339(r.try_get("first_seen")?),
                    last_seen: rfc3339(r.try_get("last_seen")?),
                    running_job: r.try_get("running_job")?,
                })
            })
            .collect()
    }

    /// Claims the oldest queued job of the tenant's `local` projects whose environment lock is
    /// free, in queue order per environment. `None` when there is nothing to run.
    pub async fn claim_job(
        &self,
        actor: &Actor,
        tenant_id: &str,
        runner: &str,
        lease_ms: i64,
    ) -> Result<Option<Claimed>> {
        let rows = sqlx::query(
            "SELECT j.id, j.environment, p.project_key, p.repo FROM deploy_jobs j JOIN projects p ON p.id = j.project_id \
             WHERE j.tenant_id = $1 AND j.state = 'QUEUED' AND p.provider = 'local' AND (j.not_before IS NULL OR j.not_before <= $2) ORDER BY j.created_at, j.id LIMIT 100",
        )
        .bind(tenant_id)
        .bind(now_ms())
        .fetch_all(self.pool())
        .await?;
        let mut seen = std::collections::HashSet::new();
        for r in rows {
            let (id, env, project, repo): (String, String, String, String) = (
                r.try_get("id")?,
                r.try_get("environment")?,
                r.try_get("project_key")?,
                r.try_get("repo")?,
            );
            // Only the oldest queued job of an environment may start: later ones wait their turn.
            if !seen.insert((project.clone(), env.clone())) {
                continue;
            }
            let mut tx = self.begin().await?;
            let key = LockKey {
                tenant_id,
                project: &project,
                environment: &env,
            };
            if !try_lock_in(&mut tx, key, &id, runner, lease_ms).await? {
                continue;
            }
            match transition_in(
                &mut tx,
                actor,
                tenant_id,
                &id,
                JobEvent::Started,
                &format!("started by runner {runner}"),
            )
            .await
            {
                Ok(_) => {}
                Err(crate::StoreError::Domain(e)) if e.code == ErrorCode::Conflict => continue,
                Err(e) => return Err(e),
            }
            let callback_token = crate::identity::generate_token();
            sqlx::query(
                "UPDATE deploy_jobs SET runner = $1, callback_token_hash = $2 WHERE id = $3",
            )
            .bind(runner)
            .bind(crate::identity::hash_token(&callback_token))
            .bind(&id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            let job = self.get_job(tenant_id, &id).await?;
            return Ok(Some(Claimed {
                job,
                repo,
                callback_token,
            }));
        }
        Ok(None)
    }

    async fn running_job_of(
        &self,
        tenant_id: &str,
        job_id: &str,
        runner: &str,
    ) -> Result<(String, String, String)> {
        let row = sqlx::query(
            "SELECT j.state, j.environment, j.runner, p.project_key FROM deploy_jobs j JOIN projects p ON p.id = j.project_id WHERE j.tenant_id = $1 AND j.id = $2",
        )
        .bind(tenant_id)
        .bind(job_id)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| Error::not_found("deploy job"))?;
        if row.try_get::<Option<String>, _>("runner")?.as_deref() != Some(runner) {
            return Err(not_yours().into());
        }
        Ok((
            row.try_get("state")?,
            row.try_get("project_key")?,
            row.try_get("environment")?,
        ))
    }

    /// The job a per-job callback token belongs to: (tenant id, job id, runner). `None` for an
    /// unknown token or one of another job.
    pub async fn job_for_callback_token(
        &self,
        job_id: &str,
        token: &str,
    ) -> Result<Option<(String, String)>> {
        let row = sqlx::query(
            "SELECT tenant_id, runner, callback_token_hash FROM deploy_jobs WHERE id = $1",
        )
        .bind(job_id)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let stored: Option<String> = row.try_get("callback_token_hash")?;
        let given = crate::identity::hash_token(token);
        let matches = stored.is_some_and(|s| {
            use subtle::ConstantTimeEq;
            s.as_bytes().ct_eq(given.as_bytes()).into()
        });
        if !matches {
            return Ok(None);
        }
        Ok(Some((
            row.try_get("tenant_id")?,
            row.try_get::<Option<String>, _>("runner")?
                .unwrap_or_default(),
        )))
    }

    /// Adds a step to a running job's timeline (external pipelines report their steps).
    pub async fn job_step(
        &self,
        actor: &Actor,
        tenant_id: &str,
        job_id: &str,
        runner: &str,
        message: &str,
    ) -> Result<()> {
        let (state, _, _) = self.running_job_of(tenant_id, job_id, runner).await?;
        if state != JobState::Running.as_str() {
            return Err(Error::new(ErrorCode::Conflict, format!("the job is {state}")).into());
        }
        let mut tx = self.begin().await?;
        crate::deploy::add_event(&mut tx, job_id, JobState::Running, message, now_ms()).await?;
        crate::audit::append(
            &mut tx,
            actor
                .did("deploy.step", &format!("deploy:{job_id}"))
                .detail(serde_json::json!({"step": message})),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Keeps the provider's link to the full log of a job.
    pub async fn set_job_log_url(&self, tenant_id: &str, job_id: &str, url: &str) -> Result<()> {
        sqlx::query("UPDATE deploy_jobs SET log_url = $1 WHERE tenant_id = $2 AND id = $3")
            .bind(url)
            .bind(tenant_id)
            .bind(job_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Renews the runner's lease on a job and tells it the job's state (CANCELLED: stop now).
    pub async fn heartbeat_job(
        &self,
        tenant_id: &str,
        job_id: &str,
        runner: &str,
        lease_ms: i64,
    ) -> Result<JobState> {
        let (state, project, env) = self.running_job_of(tenant_id, job_id, runner).await?;
        let state = JobState::parse(&state).unwrap_or(JobState::Failed);
        if state == JobState::Running {
            let key = LockKey {
                tenant_id,
                project: &project,
                environment: &env,
            };
            if !self.renew_environment_lock(key, job_id, lease_ms).await? {
                return Err(not_yours().into());
            }
        }
        Ok(state)
    }

    /// Appends log text of a running job, in order.
    pub async fn append_job_log(
        &self,
        tenant_id: &str,
        job_id: &str,
        runner: &str,
        stream: &str,
        text: &str,
    ) -> Result<()> {
        let (state, _, _) = self.running_job_of(tenant_id, job_id, runner).await?;
        if state != JobState::Running.as_str() {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!("the job is {state}; logs are taken while it runs"),
            )
            .into());
        }
        let mut tx = self.begin().await?;
        let used: i64 = sqlx::query(
            "SELECT COALESCE(SUM(LENGTH(text)), 0) AS n FROM job_logs WHERE job_id = $1",
        )
        .bind(job_id)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        let text = if used >= MAX_LOG_BYTES {
            return Ok(());
        } else if used + text.len() as i64 > MAX_LOG_BYTES {
            "[draven: log limit reached; further output dropped]\n"
        } else {
            text
        };
        sqlx::query(
            "INSERT INTO job_logs (job_id, seq, at, stream, text) VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM job_logs WHERE job_id = $1), $2, $3, $4)",
        )
        .bind(job_id)
        .bind(now_ms())
        .bind(stream)
        .bind(text)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Log chunks after `after_seq`, in order.
    pub async fn job_log(
        &self,
        tenant_id: &str,
        job_id: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<LogChunk>> {
        self.get_job(tenant_id, job_id).await?;
        let rows = sqlx::query("SELECT seq, at, stream, text FROM job_logs WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3")
            .bind(job_id)
            .bind(after_seq)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(LogChunk {
                    seq: r.try_get("seq")?,
                    at: rfc3339(r.try_get("at")?),
                    stream: r.try_get("stream")?,
                    text: r.try_get("text")?,
                })
            })
            .collect()
    }

    /// The total size of a job's log kept in the database.
    pub async fn job_log_size(&self, job_id: &str) -> Result<i64> {
        Ok(sqlx::query(
            "SELECT COALESCE(SUM(LENGTH(text)), 0) AS n FROM job_logs WHERE job_id = $1",
        )
        .bind(job_id)
        .fetch_one(self.pool())
        .await?
        .try_get("n")?)
    }

    /// Where a finished job's log was moved in object storage, if it was.
    pub async fn job_log_object(&self, tenant_id: &str, job_id: &str) -> Result<Option<String>> {
        let row =
            sqlx::query("SELECT log_object FROM deploy_jobs WHERE tenant_id = $1 AND id = $2")
                .bind(tenant_id)
                .bind(job_id)
                .fetch_optional(self.pool())
                .await?
                .ok_or_else(|| Error::not_found("deploy job"))?;
        Ok(row.try_get("log_object")?)
    }

    /// Records that a finished job's log now lives at `object_key` and drops the database copy.
    /// Call after the object is written.
    pub async fn move_job_log(
        &self,
        tenant_id: &str,
        job_id: &str,
        object_key: &str,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("UPDATE deploy_jobs SET log_object = $1 WHERE tenant_id = $2 AND id = $3 AND log_object IS NULL")
            .bind(object_key)
            .bind(tenant_id)
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 1 {
            sqlx::query("DELETE FROM job_logs WHERE job_id = $1")
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records how a job ended and frees its environment. Repeating the same report (a runner
    /// that restarted before it heard the answer) is accepted.
    pub async fn finish_job(
        &self,
        actor: &Actor,
        tenant_id: &str,
        job_id: &str,
        runner: &str,
        outcome: Outcome,
        exit_code: Option<i64>,
    ) -> Result<Job> {
        let (state, project, env) = self.running_job_of(tenant_id, job_id, runner).await?;
        let release = "DELETE FROM environment_locks WHERE tenant_id = $1 AND project = $2 AND environment = $3 AND holder_job = $4";
        if JobState::parse(&state).is_some_and(JobState::is_terminal) {
            // Already decided (a repeated report, or a job cancelled while it ran): just make
            // sure the environment is free.
            sqlx::query(release)
                .bind(tenant_id)
                .bind(&project)
                .bind(&env)
                .bind(job_id)
                .execute(self.pool())
                .await?;
            return self.get_job(tenant_id, job_id).await;
        }
        let mut tx = self.begin().await?;
        let message = match exit_code {
            Some(c) => format!("deploy/run.sh exited with {c}"),
            None => "no exit status".to_owned(),
        };
        transition_in(&mut tx, actor, tenant_id, job_id, outcome.event(), &message).await?;
        sqlx::query("UPDATE deploy_jobs SET exit_code = $1 WHERE id = $2")
            .bind(exit_code)
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(release)
            .bind(tenant_id)
            .bind(&project)
            .bind(&env)
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.get_job(tenant_id, job_id).await
    }

    /// Fails running jobs whose lease lapsed (their runner is gone) and frees their locks.
    /// Returns how many it reaped.
    pub async fn reap_lost_jobs(&self, actor: &Actor) -> Result<usize> {
        let now = now_ms();
        let rows = sqlx::query(
            "SELECT j.id, j.tenant_id, p.project_key, j.environment FROM deploy_jobs j JOIN projects p ON p.id = j.project_id \
             LEFT JOIN environment_locks l ON l.tenant_id = j.tenant_id AND l.project = p.project_key AND l.environment = j.environment AND l.holder_job = j.id \
             WHERE j.state = 'RUNNING' AND (l.holder_job IS NULL OR l.expires_at < $1)",
        )
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        let mut reaped = 0;
        for r in rows {
            let (id, tenant, project, env): (String, String, String, String) = (
                r.try_get("id")?,
                r.try_get("tenant_id")?,
                r.try_get("project_key")?,
                r.try_get("environment")?,
            );
            let mut tx = self.begin().await?;
            let actor = Actor {
                tenant_id: Some(tenant.clone()),
                ..actor.clone()
            };
            match transition_in(
                &mut tx,
                &actor,
                &tenant,
                &id,
                JobEvent::Finished { success: false },
                "runner lost: its lease lapsed without a heartbeat",
            )
            .await
            {
                Ok(_) => {}
                Err(crate::StoreError::Domain(e)) if e.code == ErrorCode::Conflict => continue,
                Err(e) => return Err(e),
            }
            sqlx::query("DELETE FROM environment_locks WHERE tenant_id = $1 AND project = $2 AND environment = $3 AND holder_job = $4 AND expires_at < $5")
                .bind(&tenant)
                .bind(&project)
                .bind(&env)
                .bind(&id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            reaped += 1;
        }
        Ok(reaped)
    }
}
