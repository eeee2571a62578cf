//! Jobs executed by a provider's pipeline (GitHub Actions, GitLab CI, Bitbucket Pipelines): the
//! dispatcher's side of the job table. Claiming takes the environment lock and starts the job
//! like a runner's claim; afterwards `provider_phase` says what the dispatcher still owes the
//! job (trigger, find the run, follow it) and `provider_next_at` when it acts next. A
//! dispatcher takes its turn with a conditional update of `provider_next_at`, so two servers on
//! one database never trigger or poll the same job at once.
//!
//! Webhook deliveries are remembered per provider so a replayed delivery is refused.

use crate::audit::{append, Actor};
use crate::deploy::{add_event, transition_in};
use crate::locks::{try_lock_in, LockKey};
use crate::runner::Outcome;
use crate::{now_ms, Db, Result};
use draven_core::job::{JobEvent, JobState};
use draven_core::ErrorCode;
use sqlx::any::AnyRow;
use sqlx::Row;

/// What the dispatcher still has to do for a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Start the pipeline.
    Trigger,
    /// Started, but the provider did not say which run: look for the job's marker.
    Find,
    /// Follow the run (webhooks, polling) until it ends.
    Follow,
    Done,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Trigger => "trigger",
            Phase::Find => "find",
            Phase::Follow => "follow",
            Phase::Done => "done",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Some(match s {
            "trigger" => Phase::Trigger,
            "find" => Phase::Find,
            "follow" => Phase::Follow,
            "done" => Phase::Done,
            _ => return None,
        })
    }
}

/// A job of a github/gitlab/bitbucket project, with what the dispatcher needs.
#[derive(Clone, Debug)]
pub struct RemoteJob {
    pub id: String,
    pub tenant_id: String,
    pub project: String,
    pub provider: String,
    /// The project's integration (JSON object).
    pub integration: String,
    pub repo: String,
    pub environment: String,
    pub kind: String,
    pub ref_name: String,
    pub ref_kind: String,
    pub commit_sha: String,
    pub state: JobState,
    pub timeout_secs: i64,
    pub started_at_ms: Option<i64>,
    pub phase: Phase,
    pub next_at: i64,
    pub failures: i64,
    pub triggered_at_ms: Option<i64>,
    pub run_id: Option<String>,
    pub run_number: Option<String>,
    pub provider_url: Option<String>,
    pub provider_status: Option<String>,
}

const REMOTE_SELECT: &str = "SELECT j.id, j.tenant_id, j.environment, j.kind, j.ref_name, j.ref_kind, j.commit_sha, j.state, j.timeout_secs, j.started_at, \
     j.provider_phase, j.provider_next_at, j.provider_failures, j.provider_triggered_at, j.provider_run_id, j.provider_run_number, j.provider_url, j.provider_status, \
     p.project_key, p.provider, p.integration, p.repo FROM deploy_jobs j JOIN projects p ON p.id = j.project_id";

fn remote_job(row: &AnyRow) -> Result<RemoteJob> {
    let state: String = row.try_get("state")?;
    let phase: Option<String> = row.try_get("provider_phase")?;
    Ok(RemoteJob {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        project: row.try_get("project_key")?,
        provider: row.try_get("provider")?,
        integration: row.try_get("integration")?,
        repo: row.try_get("repo")?,
        environment: row.try_get("environment")?,
        kind: row.try_get("kind")?,
        ref_name: row.try_get("ref_name")?,
        ref_kind: row.try_get("ref_kind")?,
        commit_sha: row.try_get("commit_sha")?,
        state: JobState::parse(&state)
            .ok_or_else(|| crate::StoreError::Corrupt(format!("job state {state:?}")))?,
        timeout_secs: row.try_get("timeout_secs")?,
        started_at_ms: row.try_get("started_at")?,
        phase: phase
            .as_deref()
            .and_then(Phase::parse)
            .unwrap_or(Phase::Done),
        next_at: row
            .try_get::<Option<i64>, _>("provider_next_at")?
            .unwrap_or(0),
        failures: row.try_get("provider_failures")?,
        triggered_at_ms: row.try_get("provider_triggered_at")?,
        run_id: row.try_get("provider_run_id")?,
        run_number: row.try_get("provider_run_number")?,
        provider_url: row.try_get("provider_url")?,
        provider_status: row.try_get("provider_status")?,
    })
}

/// The run a trigger started, as far as the provider said.
#[derive(Clone, Debug, Default)]
pub struct RunRecord<'a> {
    pub run_id: Option<&'a str>,
    pub run_number: Option<&'a str>,
    pub url: Option<&'a str>,
    pub status: Option<&'a str>,
}

fn job_actor(actor: &Actor, tenant: &str) -> Actor {
    Actor {
        tenant_id: Some(tenant.to_owned()),
        ..actor.clone()
    }
}

impl Db {
    /// Claims the oldest runnable queued job of a github/gitlab/bitbucket project (any tenant):
    /// takes its environment lock for `holder`, starts it and sets its phase to `trigger`.
    /// Strictly in queue order per environment, like the runner's claim.
    pub async fn claim_remote_job(
        &self,
        actor: &Actor,
        holder: &str,
        lease_ms: i64,
    ) -> Result<Option<RemoteJob>> {
        let rows = sqlx::query(
            "SELECT j.id, j.tenant_id, j.environment, p.project_key, p.provider FROM deploy_jobs j JOIN projects p ON p.id = j.project_id \
             WHERE j.state = 'QUEUED' AND (j.not_before IS NULL OR j.not_before <= $1) ORDER BY j.created_at, j.id LIMIT 200",
        )
        .bind(now_ms())
        .fetch_all(self.pool())
        .await?;
        let mut seen = std::collections::HashSet::new();
        for r in rows {
            let (id, tenant, env, project, provider): (String, String, String, String, String) = (
                r.try_get("id")?,
                r.try_get("tenant_id")?,
                r.try_get("environment")?,
                r.try_get("project_key")?,
                r.try_get("provider")?,
            );
            // Only the oldest queued job of an environment may start, whoever executes it.
            if !seen.insert((tenant.clone(), project.clone(), env.clone())) || provider == "local" {
                continue;
            }
            let mut tx = self.begin().await?;
            let key = LockKey {
                tenant_id: &tenant,
                project: &project,
                environment: &env,
            };
            if !try_lock_in(&mut tx, key, &id, holder, lease_ms).await? {
                continue;
            }
            let actor = job_actor(actor, &tenant);
            match transition_in(
                &mut tx,
                &actor,
                &tenant,
                &id,
                JobEvent::Started,
                &format!("handed to {provider}"),
            )
            .await
            {
                Ok(_) => {}
                Err(crate::StoreError::Domain(e)) if e.code == ErrorCode::Conflict => continue,
                Err(e) => return Err(e),
            }
            sqlx::query(
                "UPDATE deploy_jobs SET runner = $1, provider_phase = 'trigger', provider_next_at = $2, provider_failures = 0 WHERE id = $3",
            )
            .bind(format!("provider:{provider}"))
            .bind(now_ms())
            .bind(&id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return self.remote_job(&id).await;
        }
        Ok(None)
    }

    pub async fn remote_job(&self, id: &str) -> Result<Option<RemoteJob>> {
        let row = sqlx::query(&format!("{REMOTE_SELECT} WHERE j.id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(remote_job).transpose()
    }

    /// Jobs the dispatcher still owes something (any state, phase not done).
    pub async fn active_remote_jobs(&self) -> Result<Vec<RemoteJob>> {
        let rows = sqlx::query(&format!(
            "{REMOTE_SELECT} WHERE j.provider_phase IN ('trigger', 'find', 'follow') ORDER BY j.id LIMIT 500"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(remote_job).collect()
    }

    /// Takes the dispatcher's turn on a job: moves `provider_next_at` from `seen` (what this
    /// dispatcher read) to `until`. `false` when another dispatcher took it first.
    pub async fn take_remote_turn(&self, job_id: &str, seen: i64, until: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE deploy_jobs SET provider_next_at = $1 WHERE id = $2 AND provider_next_at = $3",
        )
        .bind(until)
        .bind(job_id)
        .bind(seen)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Schedules the dispatcher's next action on a job: `phase`, when, and the count of
    /// failures in a row (0 after a success).
    pub async fn schedule_remote(
        &self,
        job_id: &str,
        phase: Phase,
        next_at: i64,
        failures: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE deploy_jobs SET provider_phase = $1, provider_next_at = $2, provider_failures = $3 WHERE id = $4 AND state = 'RUNNING'",
        )
        .bind(phase.as_str())
        .bind(next_at)
        .bind(failures)
        .bind(job_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A new callback token for a job about to be triggered (stored hashed; the previous
    /// attempt's token stops working). Returns the token.
    pub async fn issue_callback_token(&self, job_id: &str) -> Result<String> {
        let token = crate::identity::generate_token();
        sqlx::query("UPDATE deploy_jobs SET callback_token_hash = $1 WHERE id = $2")
            .bind(crate::identity::hash_token(&token))
            .bind(job_id)
            .execute(self.pool())
            .await?;
        Ok(token)
    }

    /// Records that the pipeline was triggered (and the run, when the provider named it),
    /// with a timeline event and an audit record.
    pub async fn record_trigger(
        &self,
        actor: &Actor,
        job: &RemoteJob,
        run: &RunRecord<'_>,
        next_phase: Phase,
        next_at: i64,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let now = now_ms();
        sqlx::query(
            "UPDATE deploy_jobs SET provider_phase = $1, provider_next_at = $2, provider_failures = 0, provider_triggered_at = $3, \
             provider_run_id = COALESCE($4, provider_run_id), provider_run_number = COALESCE($5, provider_run_number), \
             provider_url = COALESCE($6, provider_url), provider_status = COALESCE($7, provider_status), log_url = COALESCE($6, log_url) WHERE id = $8",
        )
        .bind(next_phase.as_str())
        .bind(next_at)
        .bind(now)
        .bind(run.run_id)
        .bind(run.run_number)
        .bind(run.url)
        .bind(run.status)
        .bind(&job.id)
        .execute(&mut *tx)
        .await?;
        let message = match (run.run_id, run.url) {
            (Some(id), Some(url)) => format!("{} run {id} triggered: {url}", job.provider),
            (Some(id), None) => format!("{} run {id} triggered", job.provider),
            _ => format!(
                "{} pipeline triggered; looking for its run by the job marker",
                job.provider
            ),
        };
        add_event(&mut tx, &job.id, JobState::Running, &message, now).await?;
        append(
            &mut tx,
            job_actor(actor, &job.tenant_id)
                .did("deploy.trigger", &format!("deploy:{}", job.id))
                .ref_name(&job.ref_name)
                .detail(serde_json::json!({"provider": job.provider, "run_id": run.run_id, "url": run.url})),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records the run found for a job (GitHub without run details: found by its marker).
    pub async fn record_found_run(
        &self,
        actor: &Actor,
        job: &RemoteJob,
        run: &RunRecord<'_>,
        next_at: i64,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let now = now_ms();
        sqlx::query(
            "UPDATE deploy_jobs SET provider_phase = 'follow', provider_next_at = $1, provider_failures = 0, provider_run_id = $2, \
             provider_run_number = COALESCE($3, provider_run_number), provider_url = COALESCE($4, provider_url), log_url = COALESCE($4, log_url) WHERE id = $5",
        )
        .bind(next_at)
        .bind(run.run_id)
        .bind(run.run_number)
        .bind(run.url)
        .bind(&job.id)
        .execute(&mut *tx)
        .await?;
        add_event(
            &mut tx,
            &job.id,
            JobState::Running,
            &format!(
                "{} run {} found by the job marker{}",
                job.provider,
                run.run_id.unwrap_or("?"),
                run.url.map(|u| format!(": {u}")).unwrap_or_default()
            ),
            now,
        )
        .await?;
        append(
            &mut tx,
            job_actor(actor, &job.tenant_id)
                .did("deploy.run-found", &format!("deploy:{}", job.id))
                .detail(serde_json::json!({"provider": job.provider, "run_id": run.run_id})),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Notes the provider's status of a running job when it changed (a timeline event and an
    /// audit record); `source` says how it was learnt (poll, webhook).
    pub async fn note_remote_status(
        &self,
        actor: &Actor,
        job: &RemoteJob,
        status: &str,
        url: Option<&str>,
        source: &str,
    ) -> Result<()> {
        if job.provider_status.as_deref() == Some(status) && url.is_none() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        let changed = sqlx::query(
            "UPDATE deploy_jobs SET provider_status = $1, provider_url = COALESCE($2, provider_url), log_url = COALESCE($2, log_url) \
             WHERE id = $3 AND state = 'RUNNING' AND (provider_status IS NULL OR provider_status <> $1)",
        )
        .bind(status)
        .bind(url)
        .bind(&job.id)
        .execute(&mut *tx)
        .await?;
        if changed.rows_affected() == 1 {
            add_event(
                &mut tx,
                &job.id,
                JobState::Running,
                &format!("{} reports {status} ({source})", job.provider),
                now_ms(),
            )
            .await?;
            append(
                &mut tx,
                job_actor(actor, &job.tenant_id)
                    .did("deploy.provider-status", &format!("deploy:{}", job.id))
                    .detail(serde_json::json!({"provider": job.provider, "status": status, "source": source})),
            )
            .await?;
        } else if let Some(u) = url {
            sqlx::query("UPDATE deploy_jobs SET provider_url = $1, log_url = COALESCE(log_url, $1) WHERE id = $2")
                .bind(u)
                .bind(&job.id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Ends a running remote job (the run ended, or the dispatcher gave up) and frees its
    /// environment; the dispatcher owes it nothing more. A job that ended meanwhile (a
    /// pipeline callback, a cancel) is left as it is. Returns the state it ended in.
    pub async fn finish_remote_job(
        &self,
        actor: &Actor,
        job: &RemoteJob,
        outcome: Outcome,
        provider_status: Option<&str>,
        message: &str,
    ) -> Result<JobState> {
        let mut tx = self.begin().await?;
        let actor = job_actor(actor, &job.tenant_id);
        let event = match outcome {
            Outcome::Succeeded => JobEvent::Finished { success: true },
            Outcome::Failed => JobEvent::Finished { success: false },
            Outcome::TimedOut => JobEvent::TimedOut,
            Outcome::Cancelled => JobEvent::Cancel,
        };
        let state =
            match transition_in(&mut tx, &actor, &job.tenant_id, &job.id, event, message).await {
                Ok(s) => s,
                Err(crate::StoreError::Domain(e)) if e.code == ErrorCode::Conflict => {
                    drop(tx);
                    self.release_remote(job).await?;
                    return Ok(self
                        .remote_job(&job.id)
                        .await?
                        .map(|j| j.state)
                        .unwrap_or(job.state));
                }
                Err(e) => return Err(e),
            };
        sqlx::query("UPDATE deploy_jobs SET provider_phase = 'done', provider_status = COALESCE($1, provider_status) WHERE id = $2")
            .bind(provider_status)
            .bind(&job.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM environment_locks WHERE tenant_id = $1 AND project = $2 AND environment = $3 AND holder_job = $4")
            .bind(&job.tenant_id)
            .bind(&job.project)
            .bind(&job.environment)
            .bind(&job.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(state)
    }

    /// The dispatcher is done with a job that already ended: phase done, environment freed.
    pub async fn release_remote(&self, job: &RemoteJob) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE deploy_jobs SET provider_phase = 'done' WHERE id = $1")
            .bind(&job.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM environment_locks WHERE tenant_id = $1 AND project = $2 AND environment = $3 AND holder_job = $4")
            .bind(&job.tenant_id)
            .bind(&job.project)
            .bind(&job.environment)
            .bind(&job.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Adds a timeline event to a remote job (remote cancel, retries) with an audit record.
    pub async fn remote_job_event(
        &self,
        actor: &Actor,
        job: &RemoteJob,
        action: &str,
        message: &str,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let state = JobState::parse(
            &sqlx::query("SELECT state FROM deploy_jobs WHERE id = $1")
                .bind(&job.id)
                .fetch_one(&mut *tx)
                .await?
                .try_get::<String, _>("state")?,
        )
        .unwrap_or(job.state);
        add_event(&mut tx, &job.id, state, message, now_ms()).await?;
        append(
            &mut tx,
            job_actor(actor, &job.tenant_id)
                .did(action, &format!("deploy:{}", job.id))
                .detail(serde_json::json!({"provider": job.provider, "message": message})),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The jobs following a provider's run, newest first: by run id, or by run number where
    /// the provider's webhooks only carry that (numbers repeat across repositories: the caller
    /// picks by repository).
    pub async fn jobs_by_provider_run(
        &self,
        provider: &str,
        run_id: Option<&str>,
        run_number: Option<&str>,
    ) -> Result<Vec<RemoteJob>> {
        let rows = sqlx::query(&format!(
            "{REMOTE_SELECT} WHERE p.provider = $1 AND (($2 <> '' AND j.provider_run_id = $2) OR ($3 <> '' AND j.provider_run_number = $3)) ORDER BY j.id DESC LIMIT 50"
        ))
        .bind(provider)
        .bind(run_id.unwrap_or_default())
        .bind(run_number.unwrap_or_default())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(remote_job).collect()
    }

    /// Remembers a webhook delivery; `false` when it was received before (a replay).
    pub async fn record_webhook_delivery(
        &self,
        provider: &str,
        delivery_id: &str,
        job_id: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO webhook_deliveries (provider, delivery_id, job_id, received_at) VALUES ($1, $2, $3, $4) ON CONFLICT (provider, delivery_id) DO NOTHING",
        )
        .bind(provider)
        .bind(delivery_id)
        .bind(job_id)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Changes a project's provider, repository and integration (moving it to another
    /// provider changes only these). Audited.
    pub async fn update_project_integration(
        &self,
        actor: &Actor,
        tenant_id: &str,
        key: &str,
        provider: &str,
        repo: &str,
        integration: &str,
    ) -> Result<crate::deploy::Project> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE projects SET provider = $1, repo = $2, integration = $3, revision = revision + 1, updated_at = $4 WHERE tenant_id = $5 AND project_key = $6",
        )
        .bind(provider)
        .bind(repo)
        .bind(integration)
        .bind(now_ms())
        .bind(tenant_id)
        .bind(key)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(draven_core::Error::not_found("project").into());
        }
        append(
            &mut tx,
            actor
                .did("project.integration.set", &format!("project:{key}"))
                .detail(serde_json::json!({"provider": provider, "repo": repo})),
        )
        .await?;
        tx.commit().await?;
        self.get_project(tenant_id, key).await
    }
}
