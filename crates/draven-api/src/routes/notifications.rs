//! Notification channels of a project's environment (SPEC D11):
//! `GET/PUT /api/v1/projects/{key}/environments/{environment}/notifications`. Channels name
//! kernel secrets for their credentials; delivery is `draven_deploy::notify`.

use crate::authz::Auth;
use crate::extract::{Json, Path};
use crate::problem::ApiResult;
use crate::AppState;
use axum::extract::State;
use draven_core::Error;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationChannels {
    /// Each: `{"type": "slack"|"teams", "webhook_url_secret", "events"?}` or
    /// `{"type": "email", "to": [..], "from", "smtp": {"host", "port"?, "tls": "starttls"|"tls"|"none", "username"?, "password_secret"?}, "events"?}`.
    /// Events: approval_requested, started, succeeded, failed (default), cancelled.
    #[schema(value_type = Vec<Object>)]
    pub channels: serde_json::Value,
}

/// The notification channels of a project's environment.
#[utoipa::path(get, path = "/api/v1/projects/{key}/environments/{environment}/notifications", tag = "deploy", security(("token" = ["tenant:read"])),
    params(("key" = String, Path), ("environment" = String, Path)),
    responses((status = 200, body = NotificationChannels), (status = 404, body = crate::problem::Problem)))]
pub async fn get_notifications(
    State(state): State<AppState>,
    auth: Auth,
    Path((key, environment)): Path<(String, String)>,
) -> ApiResult<axum::Json<NotificationChannels>> {
    let p = state.db.get_project(auth.tenant_id(), &key).await?;
    let text = state.db.environment_notifications(&p, &environment).await?;
    Ok(axum::Json(NotificationChannels {
        channels: serde_json::from_str(&text).unwrap_or_default(),
    }))
}

/// Sets the notification channels of a project's environment (its policy must be set).
#[utoipa::path(put, path = "/api/v1/projects/{key}/environments/{environment}/notifications", tag = "deploy", security(("token" = ["tenant:admin"])),
    params(("key" = String, Path), ("environment" = String, Path)), request_body = NotificationChannels,
    responses((status = 200, body = NotificationChannels), (status = 404, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn set_notifications(
    State(state): State<AppState>,
    auth: Auth,
    Path((key, environment)): Path<(String, String)>,
    Json(b): Json<NotificationChannels>,
) -> ApiResult<axum::Json<NotificationChannels>> {
    draven_deploy::notify::validate_channels(&b.channels)?;
    let p = state.db.get_project(auth.tenant_id(), &key).await?;
    let text = serde_json::to_string(&b.channels).map_err(|_| Error::internal())?;
    state
        .db
        .set_environment_notifications(&auth.actor, auth.tenant_id(), &p, &environment, &text)
        .await?;
    Ok(axum::Json(b))
}
