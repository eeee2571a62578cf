//! Tenants, for system administrators. Creating one also creates its first administrator.

use super::{Page, PageQuery};
use crate::authz::Auth;
use crate::extract::{Json, Query};
use crate::problem::ApiResult;
use crate::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use draven_core::Slug;
use draven_store::tenants::Tenant;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    pub id: String,
    pub name: String,
    pub display_name: String,
    pub created_at: String,
}

impl From<Tenant> for TenantView {
    fn from(t: Tenant) -> TenantView {
        TenantView {
            id: t.id,
            name: t.name,
            display_name: t.display_name,
            created_at: t.created_at,
        }
    }
}

/// All tenants.
#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants", security(("token" = ["system"])), params(PageQuery),
    responses((status = 200, body = Page<TenantView>), (status = 403, body = crate::problem::Problem)))]
pub async fn list_tenants(
    State(state): State<AppState>,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<TenantView>>> {
    let page = state.db.list_tenants(q.cursor.as_deref(), q.limit).await?;
    Ok(axum::Json(Page::from_store(page, TenantView::from)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// 1-63 characters of a-z, 0-9 and '-', starting with a letter.
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    /// Username of the tenant's first administrator (default `admin`).
    #[serde(default)]
    pub admin_username: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedTenant {
    pub tenant: TenantView,
    pub admin_username: String,
    /// The first administrator's token, shown this once.
    pub admin_token: String,
}

/// Creates a tenant and its first administrator.
#[utoipa::path(post, path = "/api/v1/tenants", tag = "tenants", security(("token" = ["system"])), request_body = CreateTenant,
    responses((status = 201, body = CreatedTenant), (status = 409, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn create_tenant(
    State(state): State<AppState>,
    auth: Auth,
    Json(body): Json<CreateTenant>,
) -> ApiResult<Response> {
    let name = Slug::parse("name", &body.name)?;
    let admin = body.admin_username.unwrap_or_else(|| "admin".into());
    let (tenant, user, token) = state
        .db
        .create_tenant_with_admin(&auth.actor, &name, &body.display_name, &admin)
        .await?;
    let location = format!("/api/v1/tenants/{}", tenant.name);
    let body = CreatedTenant {
        tenant: tenant.into(),
        admin_username: user.username,
        admin_token: token,
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(body),
    )
        .into_response())
}
