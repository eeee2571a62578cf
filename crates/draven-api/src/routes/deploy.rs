//! Deploy control plane: projects with their repository integration, per-environment
//! policies, and deploy jobs (request, follow, cancel). Approvals go through
//! `/api/v1/approvals`.

use super::{Page, PageQuery};
use crate::authz::Auth;
use crate::extract::{Json, Path, Query};
use crate::problem::{ApiError, ApiResult};
use crate::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use draven_core::job::{JobEvent, JobState};
use draven_core::{Action, Error, Slug, Target};
use draven_deploy::policy::{FreezeWindow, Policy};
use draven_store::deploy::{Job, NewProject, Project, ProjectEnvironment};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub const PROVIDERS: [&str; 4] = ["local", "github", "gitlab", "bitbucket"];

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectView {
    pub key: String,
    pub name: String,
    pub description: String,
    /// local, github, gitlab or bitbucket
    pub provider: String,
    /// Repository URL (what `git` clones).
    pub repo: String,
    /// Provider integration: trigger method, environment → pipeline mapping, credential secret names.
    #[schema(value_type = Object)]
    pub integration: serde_json::Value,
    /// ssh-keygen allowed-signers lines used to verify signed tags.
    pub allowed_signers: String,
    pub revision: i64,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Project> for ProjectView {
    fn from(p: Project) -> ProjectView {
        ProjectView {
            integration: serde_json::from_str(&p.integration).unwrap_or_default(),
            key: p.key,
            name: p.name,
            description: p.description,
            provider: p.provider,
            repo: p.repo,
            allowed_signers: p.allowed_signers,
            revision: p.revision,
            created_by: p.created_by,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    pub key: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// local, github, gitlab or bitbucket
    pub provider: String,
    pub repo: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub integration: serde_json::Value,
    #[serde(default)]
    pub allowed_signers: String,
}

/// Projects of the tenant.
#[utoipa::path(get, path = "/api/v1/projects", tag = "deploy", security(("token" = ["tenant:read"])), params(PageQuery),
    responses((status = 200, body = Page<ProjectView>)))]
pub async fn list_projects(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<ProjectView>>> {
    let page = state
        .db
        .list_projects(auth.tenant_id(), q.cursor.as_deref(), q.limit)
        .await?;
    Ok(axum::Json(Page::from_store(page, ProjectView::from)))
}

/// Creates a project with its repository integration.
#[utoipa::path(post, path = "/api/v1/projects", tag = "deploy", security(("token" = ["tenant:admin"])), request_body = CreateProject,
    responses((status = 201, body = ProjectView), (status = 409, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn create_project(
    State(state): State<AppState>,
    auth: Auth,
    Json(b): Json<CreateProject>,
) -> ApiResult<Response> {
    let key = Slug::parse("key", &b.key)?;
    if !PROVIDERS.contains(&b.provider.as_str()) {
        return Err(Error::invalid(
            "provider",
            "provider must be local, github, gitlab or bitbucket",
        )
        .into());
    }
    if b.repo.trim().is_empty() || b.repo.len() > 2000 || b.repo.starts_with('-') {
        return Err(Error::invalid("repo", "repo must be a repository URL").into());
    }
    let integration = integration_json(&b.provider, &b.integration)?;
    let new = NewProject {
        name: if b.name.trim().is_empty() {
            key.to_string()
        } else {
            b.name.trim().to_owned()
        },
        key: key.into_string(),
        description: b.description,
        provider: b.provider,
        repo: b.repo.trim().to_owned(),
        integration,
        allowed_signers: b.allowed_signers,
    };
    let p = state
        .db
        .create_project(&auth.actor, auth.tenant_id(), &new)
        .await?;
    let location = format!("/api/v1/projects/{}", p.key);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(ProjectView::from(p)),
    )
        .into_response())
}

/// Checks a project's provider and integration; the integration as stored.
fn integration_json(provider: &str, integration: &serde_json::Value) -> Result<String, Error> {
    if !PROVIDERS.contains(&provider) {
        return Err(Error::invalid(
            "provider",
            "provider must be local, github, gitlab or bitbucket",
        ));
    }
    let value = match integration {
        serde_json::Value::Null => serde_json::json!({}),
        v @ serde_json::Value::Object(_) => v.clone(),
        _ => {
            return Err(Error::invalid(
                "integration",
                "integration must be an object",
            ))
        }
    };
    draven_deploy::providers::validate_integration(provider, &value)?;
    Ok(value.to_string())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetIntegration {
    /// local, github, gitlab or bitbucket
    pub provider: String,
    /// Repository URL (what `git` resolves refs on); unchanged when absent.
    #[serde(default)]
    pub repo: Option<String>,
    /// Provider integration (see docs/providers.md).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub integration: serde_json::Value,
}

/// Moves a project to a provider (or changes its integration): only these fields change.
/// Jobs already handed to a pipeline keep following it.
#[utoipa::path(put, path = "/api/v1/projects/{key}/integration", tag = "deploy", security(("token" = ["tenant:admin"])),
    params(("key" = String, Path)), request_body = SetIntegration,
    responses((status = 200, body = ProjectView), (status = 404, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn set_integration(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
    Json(b): Json<SetIntegration>,
) -> ApiResult<axum::Json<ProjectView>> {
    let current = state.db.get_project(auth.tenant_id(), &key).await?;
    let integration = integration_json(&b.provider, &b.integration)?;
    let repo = match b.repo {
        Some(r) if r.trim().is_empty() || r.len() > 2000 || r.starts_with('-') => {
            return Err(Error::invalid("repo", "repo must be a repository URL").into())
        }
        Some(r) => r.trim().to_owned(),
        None => current.repo,
    };
    let p = state
        .db
        .update_project_integration(
            &auth.actor,
            auth.tenant_id(),
            &key,
            &b.provider,
            &repo,
            &integration,
        )
        .await?;
    Ok(axum::Json(p.into()))
}

/// One project.
#[utoipa::path(get, path = "/api/v1/projects/{key}", tag = "deploy", security(("token" = ["tenant:read"])), params(("key" = String, Path)),
    responses((status = 200, body = ProjectView), (status = 404, body = crate::problem::Problem)))]
pub async fn get_project(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
) -> ApiResult<axum::Json<ProjectView>> {
    Ok(axum::Json(
        state.db.get_project(auth.tenant_id(), &key).await?.into(),
    ))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FreezeWindowBody {
    /// 5-field cron, UTC: when a window starts, e.g. `0 18 * * FRI`.
    pub cron: String,
    pub duration_minutes: u32,
    #[serde(default)]
    pub reason: String,
}

/// An environment's deploy policy.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyBody {
    /// Glob patterns of deployable branches; empty: any.
    pub allowed_branches: Vec<String>,
    pub tags_only: bool,
    /// Glob pattern tags must match, e.g. `v*`.
    pub tag_pattern: Option<String>,
    /// Tags must be SSH-signed by one of the project's allowed signers.
    pub signed_tags_only: bool,
    /// Distinct approvers other than the requester.
    pub required_approvals: u32,
    pub freeze_windows: Vec<FreezeWindowBody>,
    /// Seconds a job may run before the runner stops it (0: 30 minutes).
    pub timeout_secs: u32,
}

impl From<PolicyBody> for Policy {
    fn from(b: PolicyBody) -> Policy {
        Policy {
            allowed_branches: b.allowed_branches,
            tags_only: b.tags_only,
            tag_pattern: b.tag_pattern,
            signed_tags_only: b.signed_tags_only,
            required_approvals: b.required_approvals,
            freeze_windows: b
                .freeze_windows
                .into_iter()
                .map(|w| FreezeWindow {
                    cron: w.cron,
                    duration_minutes: w.duration_minutes,
                    reason: w.reason,
                })
                .collect(),
            timeout_secs: b.timeout_secs,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectEnvironmentView {
    pub environment: String,
    pub policy: PolicyBody,
    pub revision: i64,
    pub updated_at: String,
}

impl From<ProjectEnvironment> for ProjectEnvironmentView {
    fn from(e: ProjectEnvironment) -> ProjectEnvironmentView {
        ProjectEnvironmentView {
            policy: serde_json::from_str(&e.policy).unwrap_or_default(),
            environment: e.environment,
            revision: e.revision,
            updated_at: e.updated_at,
        }
    }
}

/// The project's environments and their policies.
#[utoipa::path(get, path = "/api/v1/projects/{key}/environments", tag = "deploy", security(("token" = ["tenant:read"])), params(("key" = String, Path)),
    responses((status = 200, body = Vec<ProjectEnvironmentView>), (status = 404, body = crate::problem::Problem)))]
pub async fn list_project_environments(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
) -> ApiResult<axum::Json<Vec<ProjectEnvironmentView>>> {
    let p = state.db.get_project(auth.tenant_id(), &key).await?;
    Ok(axum::Json(
        state
            .db
            .project_environments(&p)
            .await?
            .into_iter()
            .map(ProjectEnvironmentView::from)
            .collect(),
    ))
}

/// Sets the project's policy for an environment (the environment must exist in the tenant).
#[utoipa::path(put, path = "/api/v1/projects/{key}/environments/{environment}", tag = "deploy", security(("token" = ["tenant:admin"])),
    params(("key" = String, Path), ("environment" = String, Path)), request_body = PolicyBody,
    responses((status = 200, body = ProjectEnvironmentView), (status = 404, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn set_project_environment(
    State(state): State<AppState>,
    auth: Auth,
    Path((key, environment)): Path<(String, String)>,
    Json(b): Json<PolicyBody>,
) -> ApiResult<axum::Json<ProjectEnvironmentView>> {
    let p = state.db.get_project(auth.tenant_id(), &key).await?;
    state
        .db
        .get_environment(auth.tenant_id(), &environment)
        .await
        .map_err(|e| Error::from(e).with_field("environment"))?;
    let policy: Policy = b.into();
    policy.validate()?;
    let json = serde_json::to_string(&policy).map_err(|_| Error::internal())?;
    let e = state
        .db
        .set_project_environment(&auth.actor, auth.tenant_id(), &p, &environment, &json)
        .await?;
    Ok(axum::Json(e.into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobEventView {
    pub seq: i64,
    pub at: String,
    pub state: String,
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub id: String,
    pub project: String,
    pub environment: String,
    /// deploy or rollback
    pub kind: String,
    #[serde(rename = "ref")]
    pub ref_name: String,
    /// branch or tag
    pub ref_kind: String,
    /// The commit the ref named when the job was requested.
    pub commit_sha: String,
    /// PENDING, AWAITING_APPROVAL, QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, TIMED_OUT or REJECTED
    pub state: String,
    pub requested_by: String,
    pub approval_id: Option<String>,
    /// The policy rule that refused the job, when one did.
    pub refused_rule: Option<String>,
    pub reason: String,
    pub timeout_secs: i64,
    pub exit_code: Option<i64>,
    pub log_url: Option<String>,
    /// The provider's run following the job (GitHub run id, GitLab pipeline id, Bitbucket
    /// pipeline uuid), its page and its last reported status.
    pub provider_run_id: Option<String>,
    pub provider_url: Option<String>,
    pub provider_status: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// A scheduled job does not start before this time.
    pub scheduled_at: Option<String>,
    /// Every state the job went through, with when and why.
    pub timeline: Vec<JobEventView>,
}

impl From<Job> for JobView {
    fn from(j: Job) -> JobView {
        JobView {
            id: j.id,
            project: j.project,
            environment: j.environment,
            kind: j.kind,
            ref_name: j.ref_name,
            ref_kind: j.ref_kind,
            commit_sha: j.commit_sha,
            state: j.state,
            requested_by: j.requested_by_name,
            approval_id: j.approval_id,
            refused_rule: j.refused_rule,
            reason: j.reason,
            timeout_secs: j.timeout_secs,
            exit_code: j.exit_code,
            log_url: j.log_url,
            provider_run_id: j.provider_run_id,
            provider_url: j.provider_url,
            provider_status: j.provider_status,
            created_at: j.created_at,
            updated_at: j.updated_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
            scheduled_at: j.not_before,
            timeline: j
                .events
                .into_iter()
                .map(|e| JobEventView {
                    seq: e.seq,
                    at: e.at,
                    state: e.state,
                    message: e.message,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestDeploy {
    pub environment: String,
    /// Branch or tag (`develop`, `v1.4.0`, or `refs/heads/…`, `refs/tags/…`).
    #[serde(rename = "ref")]
    pub ref_name: String,
    /// Administrators only: deploy during a freeze window (audited).
    #[serde(default)]
    pub override_freeze: bool,
    /// Scheduled deploy: an RFC 3339 time (within 30 days) before which the job does not start.
    #[serde(default)]
    pub scheduled_at: Option<String>,
}

async fn environment_target<'a>(
    state: &AppState,
    tenant: &str,
    project: &'a str,
    environment: &'a str,
) -> ApiResult<Target<'a>> {
    let env = state
        .db
        .get_environment(tenant, environment)
        .await
        .map_err(|e| Error::from(e).with_field("environment"))?;
    Ok(Target {
        project: Some(project),
        environment: Some(environment),
        environment_protected: env.protected,
    })
}

/// Requests a deploy. The ref is resolved to a commit, the environment's policy decides, and the
/// job is created QUEUED, AWAITING_APPROVAL (see its `approval_id`) or REJECTED (see
/// `refused_rule`).
#[utoipa::path(post, path = "/api/v1/projects/{key}/deploys", tag = "deploy", security(("token" = ["scoped:deploy"])),
    params(("key" = String, Path)), request_body = RequestDeploy,
    responses((status = 201, body = JobView), (status = 403, body = crate::problem::Problem), (status = 404, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn request_deploy(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
    Json(b): Json<RequestDeploy>,
) -> ApiResult<Response> {
    let project = state.db.get_project(auth.tenant_id(), &key).await?;
    let target = environment_target(&state, auth.tenant_id(), &project.key, &b.environment).await?;
    auth.require(
        &state,
        Action::Deploy,
        &target,
        &format!("project:{}/{}", project.key, b.environment),
    )
    .await?;
    if b.override_freeze {
        auth.require(
            &state,
            Action::Administer,
            &Target {
                environment_protected: false,
                ..target.clone()
            },
            &format!("project:{}/{}", project.key, b.environment),
        )
        .await?;
    }
    let not_before = match &b.scheduled_at {
        None => None,
        Some(t) => {
            let at = draven_store::parse_rfc3339_ms(t).ok_or_else(|| {
                Error::invalid("scheduled_at", "scheduled_at must be an RFC 3339 time")
            })?;
            let now = draven_store::now_ms();
            if at <= now || at > now + 30 * 24 * 3600 * 1000 {
                return Err(Error::invalid(
                    "scheduled_at",
                    "scheduled_at must be in the next 30 days",
                )
                .into());
            }
            Some(at)
        }
    };
    let p = &auth.principal;
    let who = draven_deploy::service::Requester {
        actor: &auth.actor,
        user_id: &p.user_id,
        username: &p.username,
        override_freeze: b.override_freeze,
    };
    let job = state
        .deploys
        .request(
            auth.tenant_id(),
            &who,
            &project,
            &b.environment,
            &b.ref_name,
            not_before,
        )
        .await
        .map_err(|e| ApiError(e.into()))?;
    let location = format!("/api/v1/deploys/{}", job.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(JobView::from(job)),
    )
        .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobQuery {
    pub project: Option<String>,
    pub environment: Option<String>,
    pub state: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// Deploy jobs, newest first.
#[utoipa::path(get, path = "/api/v1/deploys", tag = "deploy", security(("token" = ["tenant:read"])), params(JobQuery),
    responses((status = 200, body = Page<JobView>), (status = 422, body = crate::problem::Problem)))]
pub async fn list_deploys(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<JobQuery>,
) -> ApiResult<axum::Json<Page<JobView>>> {
    if let Some(s) = &q.state {
        JobState::parse(s).ok_or_else(|| Error::invalid("state", "state must be one of PENDING, AWAITING_APPROVAL, QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, TIMED_OUT, REJECTED"))?;
    }
    let page = state
        .db
        .list_jobs(
            auth.tenant_id(),
            q.project.as_deref(),
            q.environment.as_deref(),
            q.state.as_deref(),
            q.cursor.as_deref(),
            q.limit,
        )
        .await?;
    Ok(axum::Json(Page::from_store(page, JobView::from)))
}

/// One deploy job with its timeline.
#[utoipa::path(get, path = "/api/v1/deploys/{id}", tag = "deploy", security(("token" = ["tenant:read"])), params(("id" = String, Path)),
    responses((status = 200, body = JobView), (status = 404, body = crate::problem::Problem)))]
pub async fn get_deploy(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<JobView>> {
    Ok(axum::Json(
        state.db.get_job(auth.tenant_id(), &id).await?.into(),
    ))
}

/// Cancels a job that has not finished (a pending approval is withdrawn).
#[utoipa::path(post, path = "/api/v1/deploys/{id}/cancel", tag = "deploy", security(("token" = ["scoped:deploy"])), params(("id" = String, Path)),
    responses((status = 200, body = JobView), (status = 403, body = crate::problem::Problem), (status = 409, body = crate::problem::Problem)))]
pub async fn cancel_deploy(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<JobView>> {
    let job = state.db.get_job(auth.tenant_id(), &id).await?;
    let target =
        environment_target(&state, auth.tenant_id(), &job.project, &job.environment).await?;
    auth.require(&state, Action::Deploy, &target, &format!("deploy:{id}"))
        .await?;
    let message = format!("cancelled by {}", auth.principal.username);
    Ok(axum::Json(
        state
            .db
            .transition_job(
                &auth.actor,
                auth.tenant_id(),
                &id,
                JobEvent::Cancel,
                &message,
            )
            .await?
            .into(),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LockView {
    pub project: String,
    pub environment: String,
    /// The job holding the lock.
    pub holder_job: String,
    /// The runner or process holding it.
    pub holder: String,
    pub acquired_at: String,
    /// When the lease lapses unless its holder renews it.
    pub expires_at: String,
}

impl From<draven_store::locks::Lock> for LockView {
    fn from(l: draven_store::locks::Lock) -> LockView {
        LockView {
            project: l.project,
            environment: l.environment,
            holder_job: l.holder_job,
            holder: l.holder,
            acquired_at: l.acquired_at,
            expires_at: draven_store::rfc3339(l.expires_at_ms),
        }
    }
}

/// Who holds the environment's deploy lock (404 when nobody does).
#[utoipa::path(get, path = "/api/v1/projects/{key}/environments/{environment}/lock", tag = "deploy", security(("token" = ["tenant:read"])),
    params(("key" = String, Path), ("environment" = String, Path)),
    responses((status = 200, body = LockView), (status = 404, body = crate::problem::Problem)))]
pub async fn get_lock(
    State(state): State<AppState>,
    auth: Auth,
    Path((key, environment)): Path<(String, String)>,
) -> ApiResult<axum::Json<LockView>> {
    let p = state.db.get_project(auth.tenant_id(), &key).await?;
    let lock_key = draven_store::locks::LockKey {
        tenant_id: auth.tenant_id(),
        project: &p.key,
        environment: &environment,
    };
    let lock = state
        .db
        .environment_lock(lock_key)
        .await?
        .ok_or_else(|| Error::not_found("lock"))?;
    Ok(axum::Json(lock.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UnlockQuery {
    /// Why (recorded in the audit trail).
    pub reason: String,
}

/// Administrators: removes the environment's deploy lock whoever holds it (audited with the
/// holder it removed and the reason).
#[utoipa::path(delete, path = "/api/v1/projects/{key}/environments/{environment}/lock", tag = "deploy", security(("token" = ["tenant:admin"])),
    params(("key" = String, Path), ("environment" = String, Path), UnlockQuery),
    responses((status = 200, body = LockView), (status = 404, body = crate::problem::Problem)))]
pub async fn force_unlock(
    State(state): State<AppState>,
    auth: Auth,
    Path((key, environment)): Path<(String, String)>,
    Query(q): Query<UnlockQuery>,
) -> ApiResult<axum::Json<LockView>> {
    if q.reason.trim().is_empty() || q.reason.len() > 500 {
        return Err(Error::invalid("reason", "say why, in 1-500 characters").into());
    }
    let p = state.db.get_project(auth.tenant_id(), &key).await?;
    let lock_key = draven_store::locks::LockKey {
        tenant_id: auth.tenant_id(),
        project: &p.key,
        environment: &environment,
    };
    Ok(axum::Json(
        state
            .db
            .force_unlock_environment(&auth.actor, lock_key, q.reason.trim())
            .await?
            .into(),
    ))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RequestRollback {
    /// Administrators only: roll back during a freeze window (audited).
    pub override_freeze: bool,
}

/// Rolls an environment back: a `rollback` job for the ref and commit of the successful deploy
/// before the latest one (the runner runs `deploy/run.sh rollback` there). Approvals and freeze
/// windows of the environment's policy apply; 409 when there is nothing to go back to.
#[utoipa::path(post, path = "/api/v1/projects/{key}/environments/{environment}/rollback", tag = "deploy", security(("token" = ["scoped:deploy"])),
    params(("key" = String, Path), ("environment" = String, Path)), request_body = RequestRollback,
    responses((status = 201, body = JobView), (status = 403, body = crate::problem::Problem), (status = 409, body = crate::problem::Problem)))]
pub async fn request_rollback(
    State(state): State<AppState>,
    auth: Auth,
    Path((key, environment)): Path<(String, String)>,
    Json(b): Json<RequestRollback>,
) -> ApiResult<Response> {
    let project = state.db.get_project(auth.tenant_id(), &key).await?;
    let target = environment_target(&state, auth.tenant_id(), &project.key, &environment).await?;
    let what = format!("project:{}/{environment}", project.key);
    auth.require(&state, Action::Deploy, &target, &what).await?;
    if b.override_freeze {
        auth.require(
            &state,
            Action::Administer,
            &Target {
                environment_protected: false,
                ..target.clone()
            },
            &what,
        )
        .await?;
    }
    let p = &auth.principal;
    let who = draven_deploy::service::Requester {
        actor: &auth.actor,
        user_id: &p.user_id,
        username: &p.username,
        override_freeze: b.override_freeze,
    };
    let job = state
        .deploys
        .rollback(auth.tenant_id(), &who, &project, &environment)
        .await
        .map_err(|e| ApiError(e.into()))?;
    let location = format!("/api/v1/deploys/{}", job.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(JobView::from(job)),
    )
        .into_response())
}
