//! Deploy tables: projects, their per-environment policies, deploy jobs and each job's
//! timeline. Every state change goes through [`draven_core::job::JobState::apply`], is written
//! with the state it came from as a condition (so two writers cannot both move a job), gets a
//! timeline event and an audit record, in one transaction.

use crate::approvals::{create_approval_in, Subject};
use crate::audit::{append, Actor};
use crate::{cursor, new_id, now_ms, page_limit, paginate, rfc3339, Db, Page, Result, Tx};
use draven_core::job::{JobEvent, JobState};
use draven_core::{Error, ErrorCode};
use sqlx::any::AnyRow;
use sqlx::Row;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Project {
    pub id: String,
    pub key: String,
    pub name: String,
    pub description: String,
    pub provider: String,
    pub repo: String,
    /// JSON object.
    pub integration: String,
    pub allowed_signers: String,
    pub revision: i64,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Clone, Debug, Default)]
pub struct NewProject {
    pub key: String,
    pub name: String,
    pub description: String,
    pub provider: String,
    pub repo: String,
    pub integration: String,
    pub allowed_signers: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectEnvironment {
    pub environment: String,
    /// The policy as JSON (its shape belongs to `draven-deploy`).
    pub policy: String,
    pub revision: i64,
    pub updated_at: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobEventRecord {
    pub seq: i64,
    pub at: String,
    pub state: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    pub project: String,
    pub environment: String,
    /// `deploy` or `rollback`.
    pub kind: String,
    pub ref_name: String,
    /// `branch` or `tag`.
    pub ref_kind: String,
    pub commit_sha: String,
    pub state: String,
    pub requested_by: String,
    pub requested_by_name: String,
    pub approval_id: Option<String>,
    pub refused_rule: Option<String>,
    pub reason: String,
    pub timeout_secs: i64,
    pub runner: Option<String>,
    pub exit_code: Option<i64>,
    pub log_url: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Not started before this time (scheduled deploys).
    pub not_before: Option<String>,
    /// The provider's run following this job (GitHub run id, GitLab pipeline id, Bitbucket
    /// pipeline uuid) and its page; none for local projects.
    pub provider_run_id: Option<String>,
    pub provider_url: Option<String>,
    pub provider_status: Option<String>,
    pub events: Vec<JobEventRecord>,
}

/// A job to create, with the policy's verdict already taken.
#[derive(Clone, Debug)]
pub struct NewJob<'a> {
    pub project: &'a Project,
    pub environment: &'a str,
    pub kind: &'a str,
    pub ref_name: &'a str,
    pub ref_kind: &'a str,
    pub commit_sha: &'a str,
    pub requested_by: &'a str,
    pub requested_by_name: &'a str,
    pub timeout_secs: i64,
    /// Scheduled deploys: not started before this time (epoch ms).
    pub not_before: Option<i64>,
    pub verdict: Verdict<'a>,
}

/// What the policy said.
#[derive(Clone, Debug)]
pub enum Verdict<'a> {
    /// Allowed; `approvals` distinct approvers needed (0: straight to the queue).
    Allowed {
        approvals: i64,
        note: &'a str,
    },
    Refused {
        rule: &'a str,
        reason: &'a str,
    },
}

fn project(row: &AnyRow) -> Result<Project> {
    Ok(Project {
        id: row.try_get("id")?,
        key: row.try_get("project_key")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        provider: row.try_get("provider")?,
        repo: row.try_get("repo")?,
        integration: row.try_get("integration")?,
        allowed_signers: row.try_get("allowed_signers")?,
        revision: row.try_get("revision")?,
        created_by: row.try_get("created_by")?,
        created_at: rfc3339(row.try_get("created_at")?),
        updated_at: rfc3339(row.try_get("updated_at")?),
    })
}

const JOB_SELECT: &str =
    "SELECT j.*, p.project_key FROM deploy_jobs j JOIN projects p ON p.id = j.project_id";

async fn job_from_row(conn: &mut sqlx::AnyConnection, row: &AnyRow) -> Result<Job> {
    let id: String = row.try_get("id")?;
    let events = sqlx::query(
        "SELECT seq, at, state, message FROM job_events WHERE job_id = $1 ORDER BY seq",
    )
    .bind(&id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        Ok(JobEventRecord {
            seq: r.try_get("seq")?,
            at: rfc3339(r.try_get("at")?),
            state: r.try_get("state")?,
            message: r.try_get("message")?,
        })
    })
    .collect::<Result<Vec<_>>>()?;
    let opt_time =
        |c: &str| -> Result<Option<String>> { Ok(row.try_get::<Option<i64>, _>(c)?.map(rfc3339)) };
    Ok(Job {
        id,
        project: row.try_get("project_key")?,
        environment: row.try_get("environment")?,
        kind: row.try_get("kind")?,
        ref_name: row.try_get("ref_name")?,
        ref_kind: row.try_get("ref_kind")?,
        commit_sha: row.try_get("commit_sha")?,
        state: row.try_get("state")?,
        requested_by: row.try_get("requested_by")?,
        requested_by_name: row.try_get("requested_by_name")?,
        approval_id: row.try_get("approval_id")?,
        refused_rule: row.try_get("refused_rule")?,
        reason: row.try_get("reason")?,
        timeout_secs: row.try_get("timeout_secs")?,
        runner: row.try_get("runner")?,
        exit_code: row.try_get("exit_code")?,
        log_url: row.try_get("log_url")?,
        created_at: rfc3339(row.try_get("created_at")?),
        updated_at: rfc3339(row.try_get("updated_at")?),
        started_at: opt_time("started_at")?,
        finished_at: opt_time("finished_at")?,
        not_before: opt_time("not_before")?,
        provider_run_id: row.try_get("provider_run_id")?,
        provider_url: row.try_get("provider_url")?,
        provider_status: row.try_get("provider_status")?,
        events,
    })
}

async fn load_job(conn: &mut sqlx::AnyConnection, tenant_id: &str, id: &str) -> Result<Job> {
    let row = sqlx::query(&format!(
        "{JOB_SELECT} WHERE j.tenant_id = $1 AND j.id = $2"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| Error::not_found("deploy job"))?;
    job_from_row(conn, &row).await
}

pub(crate) async fn add_event(
    tx: &mut Tx,
    job_id: &str,
    state: JobState,
    message: &str,
    at: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO job_events (job_id, seq, at, state, message) VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM job_events WHERE job_id = $1), $2, $3, $4)",
    )
    .bind(job_id)
    .bind(at)
    .bind(state.as_str())
    .bind(message)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Applies `event` to a job inside `tx`: checks the transition, writes it conditionally on the
/// state it came from, adds the timeline event and the audit record.
pub(crate) async fn transition_in(
    tx: &mut Tx,
    actor: &Actor,
    tenant_id: &str,
    job_id: &str,
    event: JobEvent,
    message: &str,
) -> Result<JobState> {
    let row = sqlx::query("SELECT state, environment, ref_name, project_id FROM deploy_jobs WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(job_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| Error::not_found("deploy job"))?;
    let from_text: String = row.try_get("state")?;
    let from = JobState::parse(&from_text).ok_or_else(|| {
        crate::StoreError::Corrupt(format!("job {job_id} has state {from_text:?}"))
    })?;
    let to = from.apply(event)?;
    let now = now_ms();
    let done = sqlx::query(
        "UPDATE deploy_jobs SET state = $1, updated_at = $2, \
         started_at = CASE WHEN $1 = 'RUNNING' THEN $2 ELSE started_at END, \
         finished_at = CASE WHEN $3 = 1 THEN $2 ELSE finished_at END \
         WHERE id = $4 AND state = $5",
    )
    .bind(to.as_str())
    .bind(now)
    .bind(to.is_terminal() as i64)
    .bind(job_id)
    .bind(from.as_str())
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(
            Error::new(ErrorCode::Conflict, "the job changed meanwhile; re-read it").into(),
        );
    }
    add_event(tx, job_id, to, message, now).await?;
    crate::notifications::enqueue_in(tx, tenant_id, job_id, to).await?;
    let environment: String = row.try_get("environment")?;
    append(
        tx,
        actor
            .did(&format!("deploy.{}", to.as_str().to_lowercase()), &format!("deploy:{job_id}"))
            .ref_name(&row.try_get::<String, _>("ref_name")?)
            .detail(serde_json::json!({"from": from.as_str(), "to": to.as_str(), "environment": environment, "message": message})),
    )
    .await?;
    Ok(to)
}

/// Moves a job awaiting approval on after its approval was decided.
pub(crate) async fn decide_deploy_in(
    tx: &mut Tx,
    actor: &Actor,
    tenant_id: &str,
    job_id: &str,
    approved: bool,
) -> Result<()> {
    let (event, message) = if approved {
        (JobEvent::Approved, "approved")
    } else {
        (JobEvent::ApprovalRejected, "approval rejected")
    };
    match transition_in(tx, actor, tenant_id, job_id, event, message).await {
        // A job cancelled meanwhile stays cancelled.
        Err(crate::StoreError::Domain(e)) if e.code == ErrorCode::Conflict => Ok(()),
        other => other.map(|_| ()),
    }
}

impl Db {
    pub async fn create_project(
        &self,
        actor: &Actor,
        tenant_id: &str,
        new: &NewProject,
    ) -> Result<Project> {
        let mut tx = self.begin().await?;
        let id = new_id();
        let now = now_ms();
        let done = sqlx::query(
            "INSERT INTO projects (id, tenant_id, project_key, name, description, provider, repo, integration, allowed_signers, revision, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $11, $11) ON CONFLICT (tenant_id, project_key) DO NOTHING",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(&new.key)
        .bind(&new.name)
        .bind(&new.description)
        .bind(&new.provider)
        .bind(&new.repo)
        .bind(&new.integration)
        .bind(&new.allowed_signers)
        .bind(&actor.name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(
                Error::conflict(format!("project {} already exists", new.key))
                    .with_field("key")
                    .into(),
            );
        }
        let row = sqlx::query("SELECT * FROM projects WHERE id = $1")
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        let p = project(&row)?;
        append(
            &mut tx,
            actor
                .did("project.create", &format!("project:{}", new.key))
                .detail(serde_json::json!({"provider": new.provider, "repo": new.repo})),
        )
        .await?;
        tx.commit().await?;
        Ok(p)
    }

    pub async fn get_project(&self, tenant_id: &str, key: &str) -> Result<Project> {
        let row = sqlx::query("SELECT * FROM projects WHERE tenant_id = $1 AND project_key = $2")
            .bind(tenant_id)
            .bind(key)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| Error::not_found("project"))?;
        project(&row)
    }

    pub async fn list_projects(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<Project>> {
        let limit = page_limit(limit)?;
        let after = after.map(cursor::decode).transpose()?.unwrap_or_default();
        let rows = sqlx::query("SELECT * FROM projects WHERE tenant_id = $1 AND project_key > $2 ORDER BY project_key LIMIT $3")
            .bind(tenant_id)
            .bind(after)
            .bind(limit + 1)
            .fetch_all(self.pool())
            .await?;
        let items = rows.iter().map(project).collect::<Result<Vec<_>>>()?;
        Ok(paginate(items, limit, |p| p.key.clone()))
    }

    /// Sets (creates or replaces) a project's policy for an environment.
    pub async fn set_project_environment(
        &self,
        actor: &Actor,
        tenant_id: &str,
        project: &Project,
        environment: &str,
        policy: &str,
    ) -> Result<ProjectEnvironment> {
        let mut tx = self.begin().await?;
        let now = now_ms();
        sqlx::query(
            "INSERT INTO project_environments (tenant_id, project_id, environment, policy, revision, updated_at) VALUES ($1, $2, $3, $4, 1, $5) \
             ON CONFLICT (project_id, environment) DO UPDATE SET policy = excluded.policy, revision = project_environments.revision + 1, updated_at = excluded.updated_at",
        )
        .bind(tenant_id)
        .bind(&project.id)
        .bind(environment)
        .bind(policy)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        append(
            &mut tx,
            actor
                .did(
                    "project.environment.set",
                    &format!("project:{}", project.key),
                )
                .ref_name(environment)
                .detail(serde_json::from_str(policy).unwrap_or_default()),
        )
        .await?;
        let row = sqlx::query(
            "SELECT * FROM project_environments WHERE project_id = $1 AND environment = $2",
        )
        .bind(&project.id)
        .bind(environment)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        project_environment(&row)
    }

    pub async fn project_environments(&self, project: &Project) -> Result<Vec<ProjectEnvironment>> {
        let rows = sqlx::query(
            "SELECT * FROM project_environments WHERE project_id = $1 ORDER BY environment",
        )
        .bind(&project.id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(project_environment).collect()
    }

    pub async fn project_environment(
        &self,
        project: &Project,
        environment: &str,
    ) -> Result<ProjectEnvironment> {
        let row = sqlx::query(
            "SELECT * FROM project_environments WHERE project_id = $1 AND environment = $2",
        )
        .bind(&project.id)
        .bind(environment)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| Error::not_found("environment of this project").with_field("environment"))?;
        project_environment(&row)
    }

    /// Creates a job in PENDING and applies the policy's verdict in the same transaction: the
    /// job ends up REJECTED (naming the rule), AWAITING_APPROVAL (with its approval request) or
    /// QUEUED.
    pub async fn create_job(
        &self,
        actor: &Actor,
        tenant_id: &str,
        new: &NewJob<'_>,
    ) -> Result<Job> {
        let mut tx = self.begin().await?;
        let id = new_id();
        let now = now_ms();
        sqlx::query(
            "INSERT INTO deploy_jobs (id, tenant_id, project_id, environment, kind, ref_name, ref_kind, commit_sha, state, requested_by, requested_by_name, timeout_secs, created_at, updated_at, not_before) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'PENDING', $9, $10, $11, $12, $12, $13)",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(&new.project.id)
        .bind(new.environment)
        .bind(new.kind)
        .bind(new.ref_name)
        .bind(new.ref_kind)
        .bind(new.commit_sha)
        .bind(new.requested_by)
        .bind(new.requested_by_name)
        .bind(new.timeout_secs)
        .bind(now)
        .bind(new.not_before)
        .execute(&mut *tx)
        .await?;
        add_event(
            &mut tx,
            &id,
            JobState::Pending,
            &format!(
                "{} {} ({}) requested by {}",
                new.ref_kind, new.ref_name, new.commit_sha, new.requested_by_name
            ),
            now,
        )
        .await?;
        append(
            &mut tx,
            actor
                .did("deploy.request", &format!("deploy:{id}"))
                .ref_name(new.ref_name)
                .detail(serde_json::json!({"project": new.project.key, "environment": new.environment, "commit": new.commit_sha, "kind": new.kind})),
        )
        .await?;
        match &new.verdict {
            Verdict::Refused { rule, reason } => {
                sqlx::query("UPDATE deploy_jobs SET refused_rule = $1, reason = $2 WHERE id = $3")
                    .bind(*rule)
                    .bind(*reason)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                transition_in(
                    &mut tx,
                    actor,
                    tenant_id,
                    &id,
                    JobEvent::PolicyRefused,
                    &format!("{rule}: {reason}"),
                )
                .await?;
            }
            Verdict::Allowed { approvals, note } => {
                let needs = *approvals > 0;
                transition_in(
                    &mut tx,
                    actor,
                    tenant_id,
                    &id,
                    JobEvent::PolicyPassed {
                        needs_approval: needs,
                    },
                    note,
                )
                .await?;
                if needs {
                    let subject = Subject {
                        kind: "deploy",
                        id: &id,
                        project: Some(&new.project.key),
                        environment: Some(new.environment),
                    };
                    let approval = create_approval_in(
                        &mut tx,
                        actor,
                        tenant_id,
                        &subject,
                        new.requested_by,
                        *approvals,
                    )
                    .await?;
                    sqlx::query("UPDATE deploy_jobs SET approval_id = $1 WHERE id = $2")
                        .bind(&approval)
                        .bind(&id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        let job = load_job(&mut tx, tenant_id, &id).await?;
        tx.commit().await?;
        Ok(job)
    }

    pub async fn get_job(&self, tenant_id: &str, id: &str) -> Result<Job> {
        let mut conn = self.pool().acquire().await?;
        load_job(&mut conn, tenant_id, id).await
    }

    /// Jobs newest first, optionally of one project, environment or state.
    pub async fn list_jobs(
        &self,
        tenant_id: &str,
        project: Option<&str>,
        environment: Option<&str>,
        state: Option<&str>,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<Job>> {
        let limit = page_limit(limit)?;
        let after = after.map(cursor::decode).transpose()?.unwrap_or_default();
        let rows = sqlx::query(&format!(
            "{JOB_SELECT} WHERE j.tenant_id = $1 AND ($2 = '' OR p.project_key = $2) AND ($3 = '' OR j.environment = $3) AND ($4 = '' OR j.state = $4) AND ($5 = '' OR j.id < $5) ORDER BY j.id DESC LIMIT $6"
        ))
        .bind(tenant_id)
        .bind(project.unwrap_or_default())
        .bind(environment.unwrap_or_default())
        .bind(state.unwrap_or_default())
        .bind(after)
        .bind(limit + 1)
        .fetch_all(self.pool())
        .await?;
        let mut conn = self.pool().acquire().await?;
        let mut items = Vec::with_capacity(rows.len());
        for r in &rows {
            items.push(job_from_row(&mut conn, r).await?);
        }
        Ok(paginate(items, limit, |j| j.id.clone()))
    }

    /// The successful deploy before the latest successful one of (project, environment): what a
    /// rollback goes back to. `None` when there is no such earlier success.
    pub async fn rollback_target(
        &self,
        tenant_id: &str,
        project: &Project,
        environment: &str,
    ) -> Result<Option<Job>> {
        let rows = sqlx::query(&format!(
            "{JOB_SELECT} WHERE j.tenant_id = $1 AND j.project_id = $2 AND j.environment = $3 AND j.state = 'SUCCEEDED' ORDER BY j.finished_at DESC, j.id DESC LIMIT 2"
        ))
        .bind(tenant_id)
        .bind(&project.id)
        .bind(environment)
        .fetch_all(self.pool())
        .await?;
        let Some(row) = rows.get(1) else {
            return Ok(None);
        };
        let mut conn = self.pool().acquire().await?;
        Ok(Some(job_from_row(&mut conn, row).await?))
    }

    /// Applies `event` to a job (cancel, start, finish, …). A cancelled job's pending approval is
    /// withdrawn.
    pub async fn transition_job(
        &self,
        actor: &Actor,
        tenant_id: &str,
        id: &str,
        event: JobEvent,
        message: &str,
    ) -> Result<Job> {
        let mut tx = self.begin().await?;
        let to = transition_in(&mut tx, actor, tenant_id, id, event, message).await?;
        if to == JobState::Cancelled {
            sqlx::query("UPDATE approval_requests SET state = 'withdrawn', decided_at = $1 WHERE subject_kind = 'deploy' AND subject_id = $2 AND state = 'pending'")
                .bind(now_ms())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let job = load_job(&mut tx, tenant_id, id).await?;
        tx.commit().await?;
        Ok(job)
    }
}

fn project_environment(row: &AnyRow) -> Result<ProjectEnvironment> {
    Ok(ProjectEnvironment {
        environment: row.try_get("environment")?,
        policy: row.try_get("policy")?,
        revision: row.try_get("revision")?,
        updated_at: rfc3339(row.try_get("updated_at")?),
    })
}
