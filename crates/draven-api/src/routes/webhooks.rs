//! Webhook receivers of the pipeline providers: `POST /api/v1/webhooks/{github|gitlab|bitbucket}`.
//! Public at the gateway (providers hold no Draven token); each delivery is verified with the
//! secret of the project whose job it concerns (`X-Hub-Signature-256`, `X-Gitlab-Token` or
//! `webhook-signature`, `X-Hub-Signature`). Unknown job, bad or missing signature, replayed
//! delivery or malformed body: a 4xx problem with a stable type, audited, nothing changed. The
//! logic is `draven_deploy::dispatch::receive_webhook`; this module only maps HTTP.

use crate::problem::ApiResult;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use draven_deploy::dispatch::{receive_webhook, WebhookDelivery, WebhookOutcome};
use draven_store::audit::Actor;
use serde::Serialize;
use utoipa::ToSchema;

/// What Draven did with a delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAnswer {
    /// `applied` or `ignored`.
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The job's state after the delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

async fn receive(
    state: &AppState,
    provider: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let delivery = WebhookDelivery {
        provider,
        headers,
        body,
        actor: Actor {
            name: format!("webhook:{provider}"),
            request_id: crate::problem::current_request_id(),
            ..Actor::default()
        },
    };
    let outcome = receive_webhook(&state.db, state.kek.as_ref(), &delivery).await?;
    let (status, answer) = match outcome {
        WebhookOutcome::Applied { job_id, state } => (
            StatusCode::OK,
            WebhookAnswer {
                result: "applied".into(),
                job: Some(job_id),
                state: Some(state),
                reason: None,
            },
        ),
        WebhookOutcome::Ignored(reason) => (
            StatusCode::ACCEPTED,
            WebhookAnswer {
                result: "ignored".into(),
                job: None,
                state: None,
                reason: Some(reason),
            },
        ),
    };
    // A finished job may free an environment for the next queued one.
    state.jobs_changed.notify_waiters();
    Ok((status, axum::Json(answer)).into_response())
}

/// GitHub `workflow_run` / `workflow_job` deliveries (`X-Hub-Signature-256`).
#[utoipa::path(post, path = "/api/v1/webhooks/github", tag = "webhooks", security(()),
    request_body(content = String, content_type = "application/json"),
    responses((status = 200, body = WebhookAnswer), (status = 202, body = WebhookAnswer),
        (status = 400, body = crate::problem::Problem), (status = 401, body = crate::problem::Problem),
        (status = 404, body = crate::problem::Problem), (status = 409, body = crate::problem::Problem)))]
pub async fn github(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    receive(&state, "github", &headers, &body).await
}

/// GitLab pipeline hooks (`X-Gitlab-Token`, or `webhook-signature` with a signing token).
#[utoipa::path(post, path = "/api/v1/webhooks/gitlab", tag = "webhooks", security(()),
    request_body(content = String, content_type = "application/json"),
    responses((status = 200, body = WebhookAnswer), (status = 202, body = WebhookAnswer),
        (status = 400, body = crate::problem::Problem), (status = 401, body = crate::problem::Problem),
        (status = 404, body = crate::problem::Problem), (status = 409, body = crate::problem::Problem)))]
pub async fn gitlab(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    receive(&state, "gitlab", &headers, &body).await
}

/// Bitbucket build-status deliveries (`repo:commit_status_*`, `X-Hub-Signature`).
#[utoipa::path(post, path = "/api/v1/webhooks/bitbucket", tag = "webhooks", security(()),
    request_body(content = String, content_type = "application/json"),
    responses((status = 200, body = WebhookAnswer), (status = 202, body = WebhookAnswer),
        (status = 400, body = crate::problem::Problem), (status = 401, body = crate::problem::Problem),
        (status = 404, body = crate::problem::Problem), (status = 409, body = crate::problem::Problem)))]
pub async fn bitbucket(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    receive(&state, "bitbucket", &headers, &body).await
}
