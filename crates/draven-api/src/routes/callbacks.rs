//! Pipeline callbacks (SPEC D7): the per-job API an executor of a job reports through —
//! Draven's runner or an external CI pipeline given the job's callback token. Each call is
//! authenticated by `Authorization: Bearer <callback token>`, which is valid for its own job
//! only (the routes are public at the gateway; the token check is here, and refusals are
//! audited like any other).

use crate::extract::{Json, Path};
use crate::problem::{problem_response, ApiResult};
use crate::routes::deploy::JobView;
use crate::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use draven_core::{Error, ErrorCode};
use draven_store::audit::Actor;
use draven_store::runner::Outcome;
use serde::Deserialize;
use utoipa::ToSchema;

/// The job a callback is for, after its token was checked.
struct JobCaller {
    tenant_id: String,
    runner: String,
    actor: Actor,
}

async fn caller(
    state: &AppState,
    headers: &HeaderMap,
    job_id: &str,
) -> Result<JobCaller, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .unwrap_or_default();
    let found = if token.is_empty() {
        Ok(None)
    } else {
        state.db.job_for_callback_token(job_id, token).await
    };
    match found {
        Ok(Some((tenant_id, runner))) => {
            let actor = Actor {
                tenant_id: Some(tenant_id.clone()),
                name: format!("job:{job_id}"),
                request_id: crate::problem::current_request_id(),
                client_addr: None,
            };
            Ok(JobCaller {
                tenant_id,
                runner,
                actor,
            })
        }
        Ok(None) => {
            let actor = Actor {
                name: "anonymous".into(),
                request_id: crate::problem::current_request_id(),
                ..Actor::default()
            };
            let _ = state
                .db
                .audit(actor.denied(
                    "callback.authenticate",
                    &format!("deploy:{job_id}"),
                    "no valid callback token for this job",
                ))
                .await;
            Err(problem_response(&Error::new(
                ErrorCode::Unauthenticated,
                "send the job's callback token: Authorization: Bearer <token>",
            )))
        }
        Err(e) => Err(problem_response(&Error::from(e))),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepBody {
    /// The pipeline step, e.g. `composer install`.
    pub name: String,
    /// started, succeeded, failed, skipped …
    pub status: String,
}

/// Reports that the pipeline started (a timeline event).
#[utoipa::path(post, path = "/api/v1/callbacks/{job}/start", tag = "callbacks", security(()),
    params(("job" = String, Path)), responses((status = 204), (status = 401, body = crate::problem::Problem), (status = 409, body = crate::problem::Problem)))]
pub async fn start(
    State(state): State<AppState>,
    Path(job): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let c = match caller(&state, &headers, &job).await {
        Ok(c) => c,
        Err(r) => return Ok(r),
    };
    state
        .db
        .job_step(&c.actor, &c.tenant_id, &job, &c.runner, "pipeline started")
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Reports a pipeline step (a timeline event).
#[utoipa::path(post, path = "/api/v1/callbacks/{job}/steps", tag = "callbacks", security(()),
    params(("job" = String, Path)), request_body = StepBody,
    responses((status = 204), (status = 401, body = crate::problem::Problem), (status = 409, body = crate::problem::Problem)))]
pub async fn step(
    State(state): State<AppState>,
    Path(job): Path<String>,
    headers: HeaderMap,
    Json(b): Json<StepBody>,
) -> ApiResult<Response> {
    let c = match caller(&state, &headers, &job).await {
        Ok(c) => c,
        Err(r) => return Ok(r),
    };
    if b.name.trim().is_empty() || b.name.len() > 200 || b.status.len() > 50 {
        return Err(Error::invalid(
            "name",
            "a step needs a name (at most 200 characters) and a status",
        )
        .into());
    }
    state
        .db
        .job_step(
            &c.actor,
            &c.tenant_id,
            &job,
            &c.runner,
            &format!("step {}: {}", b.name.trim(), b.status),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallbackLog {
    /// stdout or stderr
    pub stream: String,
    pub text: String,
}

/// Appends a log chunk.
#[utoipa::path(post, path = "/api/v1/callbacks/{job}/logs", tag = "callbacks", security(()),
    params(("job" = String, Path)), request_body = CallbackLog,
    responses((status = 204), (status = 401, body = crate::problem::Problem), (status = 409, body = crate::problem::Problem)))]
pub async fn logs(
    State(state): State<AppState>,
    Path(job): Path<String>,
    headers: HeaderMap,
    Json(b): Json<CallbackLog>,
) -> ApiResult<Response> {
    let c = match caller(&state, &headers, &job).await {
        Ok(c) => c,
        Err(r) => return Ok(r),
    };
    if b.stream != "stdout" && b.stream != "stderr" {
        return Err(Error::invalid("stream", "stream must be stdout or stderr").into());
    }
    if b.text.len() > 256 * 1024 {
        return Err(Error::invalid("text", "send at most 256 KiB per call").into());
    }
    state
        .db
        .append_job_log(&c.tenant_id, &job, &c.runner, &b.stream, &b.text)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallbackFinish {
    /// succeeded, failed, timed_out or cancelled
    pub result: String,
    #[serde(default)]
    pub exit_code: Option<i64>,
    /// The provider's page with the full log.
    #[serde(default)]
    pub log_url: Option<String>,
}

/// Reports how the job ended, with a link to the provider's log; frees the environment.
#[utoipa::path(post, path = "/api/v1/callbacks/{job}/finish", tag = "callbacks", security(()),
    params(("job" = String, Path)), request_body = CallbackFinish,
    responses((status = 200, body = JobView), (status = 401, body = crate::problem::Problem), (status = 409, body = crate::problem::Problem)))]
pub async fn finish(
    State(state): State<AppState>,
    Path(job): Path<String>,
    headers: HeaderMap,
    Json(b): Json<CallbackFinish>,
) -> ApiResult<Response> {
    let c = match caller(&state, &headers, &job).await {
        Ok(c) => c,
        Err(r) => return Ok(r),
    };
    let outcome = Outcome::parse(&b.result).ok_or_else(|| {
        Error::invalid(
            "result",
            "result must be succeeded, failed, timed_out or cancelled",
        )
    })?;
    if let Some(url) = &b.log_url {
        if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() > 2000 {
            return Err(Error::invalid("log_url", "log_url must be an http(s) URL").into());
        }
        state.db.set_job_log_url(&c.tenant_id, &job, url).await?;
    }
    let done = state
        .db
        .finish_job(
            &c.actor,
            &c.tenant_id,
            &job,
            &c.runner,
            outcome,
            b.exit_code,
        )
        .await?;
    Ok(axum::Json(JobView::from(done)).into_response())
}
