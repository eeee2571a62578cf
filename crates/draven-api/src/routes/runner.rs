//! The runner agent's side of the API: claim a queued job (long poll), heartbeat it, stream
//! its log, report how it ended. A runner authenticates with a token whose user may `run` in
//! the tenant (a deployer or admin grant; narrow the token with the `runner` scope).

use crate::authz::Auth;
use crate::extract::{Json, Path, Query};
use crate::problem::ApiResult;
use crate::routes::deploy::JobView;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use draven_core::job::JobState;
use draven_core::{Error, Slug};
use draven_store::runner::Outcome;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// Longest a claim waits for a job.
pub const MAX_WAIT_SECS: u64 = 30;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// The runner's name (1-63 of a-z, 0-9, '-').
    pub runner: String,
    /// Seconds to wait for a job when none is ready (0-30, default 0).
    #[serde(default)]
    pub wait_secs: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimedJob {
    pub job: JobView,
    /// What to clone.
    pub repo: String,
    /// The per-job token for `/api/v1/callbacks/{job}/…` (pass it to an external pipeline).
    pub callback_token: String,
    /// Send a heartbeat at least this often, or lose the job.
    pub heartbeat_secs: u64,
}

fn runner_name(s: &str) -> Result<Slug, Error> {
    Slug::parse("runner", s)
}

/// Claims the oldest queued job whose environment lock is free (204 when none within
/// `wait_secs`). The job is RUNNING and its environment locked by this runner's lease.
#[utoipa::path(post, path = "/api/v1/runner/claim", tag = "runner", security(("token" = ["tenant:run"])), request_body = ClaimRequest,
    responses((status = 200, body = ClaimedJob), (status = 204, description = "nothing to run")))]
pub async fn claim(
    State(state): State<AppState>,
    auth: Auth,
    Json(b): Json<ClaimRequest>,
) -> ApiResult<Response> {
    let runner = runner_name(&b.runner)?;
    if b.wait_secs > MAX_WAIT_SECS {
        return Err(
            Error::invalid("wait_secs", format!("wait at most {MAX_WAIT_SECS} seconds")).into(),
        );
    }
    let lease = state.config.runner_lease;
    state
        .db
        .touch_runner(auth.tenant_id(), runner.as_str())
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(b.wait_secs);
    loop {
        // Registered before looking, so a job queued right after the look still wakes us.
        let wake = state.jobs_changed.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        if state.draining.is_draining() {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        state
            .db
            .reap_lost_jobs(&draven_store::audit::Actor::system())
            .await?;
        if let Some(c) = state
            .db
            .claim_job(
                &auth.actor,
                auth.tenant_id(),
                runner.as_str(),
                lease.as_millis() as i64,
            )
            .await?
        {
            let body = ClaimedJob {
                job: c.job.into(),
                repo: c.repo,
                callback_token: c.callback_token,
                heartbeat_secs: (lease.as_secs() / 3).max(1),
            };
            return Ok((StatusCode::OK, axum::Json(body)).into_response());
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        // Woken at once by a change on this server; the short poll covers other servers and
        // scheduled times.
        tokio::select! {
            _ = wake => {}
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunnerRef {
    pub runner: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Heartbeat {
    pub state: String,
    /// Stop the job now (kill the process group) and report `cancelled`.
    pub cancel: bool,
}

/// Keeps the runner's lease on a job; says whether the job was cancelled meanwhile.
#[utoipa::path(post, path = "/api/v1/runner/jobs/{id}/heartbeat", tag = "runner", security(("token" = ["tenant:run"])),
    params(("id" = String, Path)), request_body = RunnerRef,
    responses((status = 200, body = Heartbeat), (status = 409, body = crate::problem::Problem)))]
pub async fn heartbeat(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Json(b): Json<RunnerRef>,
) -> ApiResult<axum::Json<Heartbeat>> {
    let lease = state.config.runner_lease.as_millis() as i64;
    state.db.touch_runner(auth.tenant_id(), &b.runner).await?;
    let s = state
        .db
        .heartbeat_job(auth.tenant_id(), &id, &b.runner, lease)
        .await?;
    Ok(axum::Json(Heartbeat {
        state: s.as_str().to_owned(),
        cancel: s == JobState::Cancelled,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogBody {
    pub runner: String,
    /// stdout or stderr
    pub stream: String,
    /// Output as it came (at most 256 KiB per call).
    pub text: String,
}

/// Appends output of a running job.
#[utoipa::path(post, path = "/api/v1/runner/jobs/{id}/logs", tag = "runner", security(("token" = ["tenant:run"])),
    params(("id" = String, Path)), request_body = LogBody, responses((status = 204), (status = 409, body = crate::problem::Problem)))]
pub async fn append_log(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Json(b): Json<LogBody>,
) -> ApiResult<StatusCode> {
    if b.stream != "stdout" && b.stream != "stderr" {
        return Err(Error::invalid("stream", "stream must be stdout or stderr").into());
    }
    if b.text.len() > 256 * 1024 {
        return Err(Error::invalid("text", "send at most 256 KiB per call").into());
    }
    state
        .db
        .append_job_log(auth.tenant_id(), &id, &b.runner, &b.stream, &b.text)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishBody {
    pub runner: String,
    /// succeeded, failed, timed_out or cancelled
    pub result: String,
    #[serde(default)]
    pub exit_code: Option<i64>,
}

/// Reports how a job ended; frees its environment. Repeating the report is harmless.
#[utoipa::path(post, path = "/api/v1/runner/jobs/{id}/finish", tag = "runner", security(("token" = ["tenant:run"])),
    params(("id" = String, Path)), request_body = FinishBody,
    responses((status = 200, body = JobView), (status = 409, body = crate::problem::Problem)))]
pub async fn finish(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Json(b): Json<FinishBody>,
) -> ApiResult<axum::Json<JobView>> {
    let outcome = Outcome::parse(&b.result).ok_or_else(|| {
        Error::invalid(
            "result",
            "result must be succeeded, failed, timed_out or cancelled",
        )
    })?;
    let job = state
        .db
        .finish_job(
            &auth.actor,
            auth.tenant_id(),
            &id,
            &b.runner,
            outcome,
            b.exit_code,
        )
        .await?;
    // A large log moves to object storage; if that fails it simply stays in the database.
    if let Err(e) = state
        .deploys
        .archive_log_if_large(auth.tenant_id(), &id, state.config.log_inline_max_bytes)
        .await
    {
        tracing::warn!(error = %e, job = %id, "job log not archived");
    }
    Ok(axum::Json(job.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Only chunks after this sequence number (the `next` of the previous answer).
    pub after: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LogChunkView {
    pub seq: i64,
    pub at: String,
    pub stream: String,
    pub text: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobLog {
    pub chunks: Vec<LogChunkView>,
    /// Pass as `after` to get what follows.
    pub next: i64,
    /// The job has ended: no more output will come.
    pub done: bool,
}

/// A job's log, in order, from `after` (poll with `next` to follow a running job).
#[utoipa::path(get, path = "/api/v1/deploys/{id}/logs", tag = "deploy", security(("token" = ["tenant:read"])),
    params(("id" = String, Path), LogQuery), responses((status = 200, body = JobLog), (status = 404, body = crate::problem::Problem)))]
pub async fn job_log(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> ApiResult<axum::Json<JobLog>> {
    let after = q.after.unwrap_or(0);
    let job = state.db.get_job(auth.tenant_id(), &id).await?;
    let chunks = state
        .deploys
        .log_chunks(auth.tenant_id(), &id, after, 1000)
        .await
        .map_err(|e| crate::problem::ApiError(e.into()))?;
    let next = chunks.last().map(|c| c.seq).unwrap_or(after);
    let done =
        JobState::parse(&job.state).is_some_and(JobState::is_terminal) && chunks.len() < 1000;
    Ok(axum::Json(JobLog {
        chunks: chunks
            .into_iter()
            .map(|c| LogChunkView {
                seq: c.seq,
                at: c.at,
                stream: c.stream,
                text: c.text,
            })
            .collect(),
        next,
        done,
    }))
}

/// Follows a job's log live as server-sent events: `log` events (`{seq, stream, text}`, the
/// event id is `seq`, so a reconnect with `Last-Event-ID` resumes), a `state` event when the
/// job's state changes, and `end` once the job is over and all its output was sent.
#[utoipa::path(get, path = "/api/v1/deploys/{id}/logs/stream", tag = "deploy", security(("token" = ["tenant:read"])),
    params(("id" = String, Path), ("Last-Event-ID" = Option<String>, Header, description = "resume after this log sequence number")),
    responses((status = 200, content_type = "text/event-stream"), (status = 404, body = crate::problem::Problem)))]
pub async fn stream_log(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let tenant = auth.tenant_id().to_owned();
    state.db.get_job(&tenant, &id).await?;
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    struct Cursor {
        after: i64,
        last_state: String,
        ended: bool,
    }
    let start = Cursor {
        after,
        last_state: String::new(),
        ended: false,
    };
    let db = state.db.clone();
    let deploys = state.deploys.clone();
    let stream = futures::stream::unfold(start, move |mut c| {
        let db = db.clone();
        let deploys = deploys.clone();
        let tenant = tenant.clone();
        let id = id.clone();
        async move {
            if c.ended {
                return None;
            }
            loop {
                let job = db.get_job(&tenant, &id).await.ok()?;
                let chunks = deploys.log_chunks(&tenant, &id, c.after, 500).await.ok()?;
                let mut events: Vec<Result<Event, std::convert::Infallible>> = Vec::new();
                if job.state != c.last_state {
                    c.last_state = job.state.clone();
                    events.push(Ok(Event::default().event("state").data(job.state.clone())));
                }
                for ch in &chunks {
                    c.after = ch.seq;
                    let data =
                        serde_json::json!({"seq": ch.seq, "stream": ch.stream, "text": ch.text})
                            .to_string();
                    events.push(Ok(Event::default()
                        .event("log")
                        .id(ch.seq.to_string())
                        .data(data)));
                }
                let over = JobState::parse(&job.state).is_some_and(JobState::is_terminal)
                    && chunks.len() < 500;
                if over {
                    events.push(Ok(Event::default().event("end").data(job.state)));
                    c.ended = true;
                }
                if !events.is_empty() {
                    return Some((futures::stream::iter(events), c));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    use futures::StreamExt;
    Ok(Sse::new(stream.flatten())
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunnerView {
    pub name: String,
    /// Its first claim.
    pub first_seen: String,
    /// Its latest claim or heartbeat.
    pub last_seen: String,
    /// The job it is running, if any.
    pub running_job: Option<String>,
}

/// The runners that have contacted the server, most recently seen first.
#[utoipa::path(get, path = "/api/v1/runners", tag = "runner", security(("token" = ["tenant:read"])),
    responses((status = 200, body = Vec<RunnerView>)))]
pub async fn list_runners(
    State(state): State<AppState>,
    auth: Auth,
) -> ApiResult<axum::Json<Vec<RunnerView>>> {
    let runners = state.db.list_runners(auth.tenant_id()).await?;
    Ok(axum::Json(
        runners
            .into_iter()
            .map(|r| RunnerView {
                name: r.name,
                first_seen: r.first_seen,
                last_seen: r.last_seen,
                running_job: r.running_job,
            })
            .collect(),
    ))
}
