//! Environments of the tenant. Updates use ETag / If-Match (the revision).

use crate::authz::Auth;
use crate::etag::{etag, if_match};
use crate::extract::{Json, Path};
use crate::problem::ApiResult;
use crate::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use draven_core::Slug;
use draven_store::environments::{Environment, EnvironmentPatch};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct EnvironmentView {
    pub id: String,
    pub name: String,
    pub description: String,
    /// Deploying to or approving on it needs a grant naming it.
    pub protected: bool,
    /// Also the ETag.
    pub revision: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Environment> for EnvironmentView {
    fn from(e: Environment) -> EnvironmentView {
        EnvironmentView {
            id: e.id,
            name: e.name,
            description: e.description,
            protected: e.protected,
            revision: e.revision,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

fn with_etag(status: StatusCode, e: Environment) -> Response {
    let tag = etag(e.revision);
    (
        status,
        [(header::ETAG, tag)],
        axum::Json(EnvironmentView::from(e)),
    )
        .into_response()
}

/// The tenant's environments.
#[utoipa::path(get, path = "/api/v1/environments", tag = "environments", security(("token" = ["tenant:read"])),
    responses((status = 200, body = Vec<EnvironmentView>)))]
pub async fn list_environments(
    State(state): State<AppState>,
    auth: Auth,
) -> ApiResult<axum::Json<Vec<EnvironmentView>>> {
    let envs = state.db.list_environments(auth.tenant_id()).await?;
    Ok(axum::Json(
        envs.into_iter().map(EnvironmentView::from).collect(),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnvironment {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub protected: bool,
}

/// Creates an environment.
#[utoipa::path(post, path = "/api/v1/environments", tag = "environments", security(("token" = ["tenant:admin"])), request_body = CreateEnvironment,
    responses((status = 201, body = EnvironmentView), (status = 409, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn create_environment(
    State(state): State<AppState>,
    auth: Auth,
    Json(body): Json<CreateEnvironment>,
) -> ApiResult<Response> {
    let name = Slug::parse("name", &body.name)?;
    let e = state
        .db
        .create_environment(
            &auth.actor,
            auth.tenant_id(),
            &name,
            &body.description,
            body.protected,
        )
        .await?;
    let location = format!("/api/v1/environments/{}", e.name);
    let mut resp = with_etag(StatusCode::CREATED, e);
    resp.headers_mut().insert(
        header::LOCATION,
        location.parse().expect("slug is a valid header value"),
    );
    Ok(resp)
}

/// One environment, with its ETag.
#[utoipa::path(get, path = "/api/v1/environments/{name}", tag = "environments", security(("token" = ["tenant:read"])),
    params(("name" = String, Path)), responses((status = 200, body = EnvironmentView), (status = 404, body = crate::problem::Problem)))]
pub async fn get_environment(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    Ok(with_etag(
        StatusCode::OK,
        state.db.get_environment(auth.tenant_id(), &name).await?,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEnvironment {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub protected: Option<bool>,
}

/// Changes an environment. With `If-Match`, only if it is still at that revision (else 412).
#[utoipa::path(patch, path = "/api/v1/environments/{name}", tag = "environments", security(("token" = ["tenant:admin"])),
    params(("name" = String, Path), ("If-Match" = Option<String>, Header, description = "ETag last read")), request_body = UpdateEnvironment,
    responses((status = 200, body = EnvironmentView), (status = 404, body = crate::problem::Problem), (status = 412, body = crate::problem::Problem)))]
pub async fn update_environment(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<UpdateEnvironment>,
) -> ApiResult<Response> {
    let expected = if_match(&headers, false)?;
    let patch = EnvironmentPatch {
        description: body.description,
        protected: body.protected,
    };
    let e = state
        .db
        .update_environment(&auth.actor, auth.tenant_id(), &name, expected, &patch)
        .await?;
    Ok(with_etag(StatusCode::OK, e))
}

/// Deletes an environment (with `If-Match`, only if unchanged).
#[utoipa::path(delete, path = "/api/v1/environments/{name}", tag = "environments", security(("token" = ["tenant:admin"])),
    params(("name" = String, Path), ("If-Match" = Option<String>, Header, description = "ETag last read")),
    responses((status = 204), (status = 404, body = crate::problem::Problem), (status = 412, body = crate::problem::Problem)))]
pub async fn delete_environment(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let expected = if_match(&headers, false)?;
    state
        .db
        .delete_environment(&auth.actor, auth.tenant_id(), &name, expected)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
