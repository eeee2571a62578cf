//! Secrets of the tenant: write-only. Values go in; only metadata ever comes out.

use super::{Page, PageQuery};
use crate::authz::Auth;
use crate::extract::{Json, Path, Query};
use crate::problem::ApiResult;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use draven_core::Slug;
use draven_store::secrets::SecretMeta;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct SecretView {
    pub name: String,
    pub description: String,
    /// Increases with every write.
    pub version: i64,
    /// The key that wraps this secret's data key.
    pub key_id: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<SecretMeta> for SecretView {
    fn from(m: SecretMeta) -> SecretView {
        SecretView {
            name: m.name,
            description: m.description,
            version: m.version,
            key_id: m.key_id,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

/// The tenant's secrets (metadata only).
#[utoipa::path(get, path = "/api/v1/secrets", tag = "secrets", security(("token" = ["tenant:read"])), params(PageQuery),
    responses((status = 200, body = Page<SecretView>)))]
pub async fn list_secrets(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<SecretView>>> {
    let page = state
        .db
        .list_secrets(auth.tenant_id(), q.cursor.as_deref(), q.limit)
        .await?;
    Ok(axum::Json(Page::from_store(page, SecretView::from)))
}

/// One secret's metadata. The value is never returned.
#[utoipa::path(get, path = "/api/v1/secrets/{name}", tag = "secrets", security(("token" = ["tenant:read"])),
    params(("name" = String, Path)), responses((status = 200, body = SecretView), (status = 404, body = crate::problem::Problem)))]
pub async fn get_secret(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<SecretView>> {
    Ok(axum::Json(
        state.db.secret_meta(auth.tenant_id(), &name).await?.into(),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSecret {
    /// The value (UTF-8, at most 64 KiB). Stored encrypted, never returned.
    pub value: String,
    #[serde(default)]
    pub description: String,
}

impl std::fmt::Debug for PutSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutSecret")
            .field("value", &"<redacted>")
            .field("description", &self.description)
            .finish()
    }
}

/// Creates (201) or replaces (200) a secret's value.
#[utoipa::path(put, path = "/api/v1/secrets/{name}", tag = "secrets", security(("token" = ["tenant:secrets"])),
    params(("name" = String, Path)), request_body = PutSecret,
    responses((status = 201, body = SecretView), (status = 200, body = SecretView), (status = 422, body = crate::problem::Problem)))]
pub async fn put_secret(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
    Json(body): Json<PutSecret>,
) -> ApiResult<Response> {
    let name = Slug::parse("name", &name)?;
    let (meta, created) = state
        .db
        .put_secret(
            &auth.actor,
            state.kek.as_ref(),
            auth.tenant_id(),
            &name,
            &body.description,
            body.value.as_bytes(),
        )
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(SecretView::from(meta))).into_response())
}

/// Deletes a secret.
#[utoipa::path(delete, path = "/api/v1/secrets/{name}", tag = "secrets", security(("token" = ["tenant:secrets"])),
    params(("name" = String, Path)), responses((status = 204), (status = 404, body = crate::problem::Problem)))]
pub async fn delete_secret(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .db
        .delete_secret(&auth.actor, auth.tenant_id(), &name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
