//! Who am I, users, API tokens and grants of the caller's tenant.

use super::{Page, PageQuery};
use crate::authz::Auth;
use crate::extract::{Json, Path, Query};
use crate::problem::ApiResult;
use crate::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use draven_core::{Error, Grant, Role, TokenScope};
use draven_store::identity::{GrantRecord, NewUser, TokenMeta, User};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub email: String,
    pub system_admin: bool,
    pub disabled: bool,
    pub created_at: String,
}

impl From<User> for UserView {
    fn from(u: User) -> UserView {
        UserView {
            id: u.id,
            username: u.username,
            display_name: u.display_name,
            email: u.email,
            system_admin: u.system_admin,
            disabled: u.disabled,
            created_at: u.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    pub user_id: String,
    pub name: String,
    /// The token's first characters, to recognise it.
    pub prefix: String,
    /// Empty when the token can do all its user may.
    pub scopes: Vec<String>,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
    pub created_at: String,
}

impl From<TokenMeta> for TokenView {
    fn from(t: TokenMeta) -> TokenView {
        TokenView {
            id: t.id,
            user_id: t.user_id,
            name: t.name,
            prefix: t.prefix,
            scopes: t.scopes,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
            last_used_at: t.last_used_at,
            created_at: t.created_at,
        }
    }
}

/// A new token. `token` is shown this once and never again.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    pub token: String,
    #[serde(flatten)]
    pub meta: TokenView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GrantView {
    pub id: String,
    pub user_id: String,
    pub role: String,
    pub project: Option<String>,
    pub environment: Option<String>,
    pub created_at: String,
}

impl From<GrantRecord> for GrantView {
    fn from(g: GrantRecord) -> GrantView {
        GrantView {
            id: g.id,
            user_id: g.user_id,
            role: g.role,
            project: g.project,
            environment: g.environment,
            created_at: g.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoleGrant {
    pub role: String,
    pub project: Option<String>,
    pub environment: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub user_id: String,
    pub username: String,
    pub tenant: String,
    pub system_admin: bool,
    pub grants: Vec<RoleGrant>,
    /// `null` when the token is not narrowed.
    pub token_scopes: Option<Vec<String>>,
}

/// The caller: user, tenant, grants and the token's scopes.
#[utoipa::path(get, path = "/api/v1/me", tag = "identity", security(("token" = ["authenticated"])),
    responses((status = 200, body = Me), (status = 401, body = crate::problem::Problem)))]
pub async fn me(auth: Auth) -> axum::Json<Me> {
    let p = &auth.principal;
    axum::Json(Me {
        user_id: p.user_id.clone(),
        username: p.username.clone(),
        tenant: p.tenant.clone(),
        system_admin: p.system_admin,
        grants: p
            .grants
            .iter()
            .map(|g| RoleGrant {
                role: g.role.to_string(),
                project: g.project.clone(),
                environment: g.environment.clone(),
            })
            .collect(),
        token_scopes: p
            .token_scopes
            .as_ref()
            .map(|s| s.iter().map(|s| s.as_str().to_owned()).collect()),
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// What the token is for (1-100 characters).
    pub name: String,
    /// Narrow the token to these scopes: read, write, deploy, approve, invoke, admin.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// RFC 3339 time after which the token stops working.
    #[serde(default)]
    pub expires_at: Option<String>,
}

fn parse_scopes(scopes: &Option<Vec<String>>) -> Result<Option<Vec<TokenScope>>, Error> {
    match scopes {
        None => Ok(None),
        Some(list) if list.is_empty() => Err(Error::invalid(
            "scopes",
            "omit scopes for an unrestricted token, or name at least one",
        )),
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.parse::<TokenScope>()
                    .map_err(|e| e.with_field(&format!("scopes/{i}")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
    }
}

fn parse_expiry(expires_at: &Option<String>) -> Result<Option<i64>, Error> {
    expires_at
        .as_deref()
        .map(|s| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.timestamp_millis())
                .map_err(|_| {
                    Error::invalid(
                        "expires_at",
                        "expires_at must be an RFC 3339 time, e.g. 2027-01-31T00:00:00Z",
                    )
                })
        })
        .transpose()
}

fn created_token(meta: TokenMeta, token: String) -> Response {
    let location = format!("/api/v1/tokens/{}", meta.id);
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(CreatedToken {
            token,
            meta: meta.into(),
        }),
    )
        .into_response()
}

/// The caller's own tokens.
#[utoipa::path(get, path = "/api/v1/me/tokens", tag = "identity", security(("token" = ["authenticated"])), params(PageQuery),
    responses((status = 200, body = Page<TokenView>)))]
pub async fn my_tokens(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<TokenView>>> {
    let page = state
        .db
        .list_tokens(
            auth.tenant_id(),
            Some(&auth.principal.user_id),
            q.cursor.as_deref(),
            q.limit,
        )
        .await?;
    Ok(axum::Json(Page::from_store(page, TokenView::from)))
}

/// Creates a token for the caller. A narrowed token can only create tokens narrowed at least
/// as much, so a token can never mint a more powerful one.
#[utoipa::path(post, path = "/api/v1/me/tokens", tag = "identity", security(("token" = ["authenticated"])), request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 422, body = crate::problem::Problem)))]
pub async fn create_my_token(
    State(state): State<AppState>,
    auth: Auth,
    Json(body): Json<CreateToken>,
) -> ApiResult<Response> {
    let scopes = parse_scopes(&body.scopes)?;
    if let Some(mine) = &auth.principal.token_scopes {
        if !mine.contains(&TokenScope::Admin) {
            let ok = scopes
                .as_ref()
                .is_some_and(|wanted| wanted.iter().all(|s| mine.contains(s)));
            if !ok {
                return Err(Error::forbidden(
                    "a narrowed token can only create tokens with a subset of its own scopes",
                )
                .into());
            }
        }
    }
    let p = &auth.principal;
    let (meta, token) = state
        .db
        .create_token(
            &auth.actor,
            &p.tenant_id,
            &p.user_id,
            &body.name,
            scopes.as_deref(),
            parse_expiry(&body.expires_at)?,
        )
        .await?;
    Ok(created_token(meta, token))
}

/// Revokes one of the caller's tokens.
#[utoipa::path(delete, path = "/api/v1/me/tokens/{id}", tag = "identity", security(("token" = ["authenticated"])),
    params(("id" = String, Path, description = "token id")),
    responses((status = 204), (status = 404, body = crate::problem::Problem)))]
pub async fn revoke_my_token(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let meta = state.db.token_meta(auth.tenant_id(), &id).await?;
    if meta.user_id != auth.principal.user_id {
        return Err(Error::not_found("token").into());
    }
    state
        .db
        .revoke_token(&auth.actor, auth.tenant_id(), &id)
        .await?;
    state.principals.clear();
    Ok(StatusCode::NO_CONTENT)
}

/// Users of the tenant.
#[utoipa::path(get, path = "/api/v1/users", tag = "identity", security(("token" = ["tenant:read"])), params(PageQuery),
    responses((status = 200, body = Page<UserView>)))]
pub async fn list_users(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<UserView>>> {
    let page = state
        .db
        .list_users(auth.tenant_id(), q.cursor.as_deref(), q.limit)
        .await?;
    Ok(axum::Json(Page::from_store(page, UserView::from)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// 1-63 characters of a-z, 0-9 and '-', starting with a letter.
    pub username: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub email: String,
    /// For signing in to the web UI; at least 8 characters. Omit for API-only users.
    #[serde(default)]
    pub password: Option<String>,
}

/// Creates a user (no grants yet: add some with `POST /api/v1/grants`).
#[utoipa::path(post, path = "/api/v1/users", tag = "identity", security(("token" = ["tenant:admin"])), request_body = CreateUser,
    responses((status = 201, body = UserView), (status = 409, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn create_user(
    State(state): State<AppState>,
    auth: Auth,
    Json(body): Json<CreateUser>,
) -> ApiResult<Response> {
    let new = NewUser {
        username: body.username,
        display_name: body.display_name,
        email: body.email,
        password: body.password,
        system_admin: false,
    };
    let u = state
        .db
        .create_user(&auth.actor, auth.tenant_id(), &new)
        .await?;
    let location = format!("/api/v1/users/{}", u.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(UserView::from(u)),
    )
        .into_response())
}

/// One user, by id or username.
#[utoipa::path(get, path = "/api/v1/users/{user}", tag = "identity", security(("token" = ["tenant:read"])),
    params(("user" = String, Path, description = "user id or username")),
    responses((status = 200, body = UserView), (status = 404, body = crate::problem::Problem)))]
pub async fn get_user(
    State(state): State<AppState>,
    auth: Auth,
    Path(user): Path<String>,
) -> ApiResult<axum::Json<UserView>> {
    Ok(axum::Json(
        state.db.get_user(auth.tenant_id(), &user).await?.into(),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// Disabling stops all the user's tokens at once.
    #[serde(default)]
    pub disabled: Option<bool>,
    #[serde(default)]
    pub password: Option<String>,
}

/// Disables/enables a user or sets their password.
#[utoipa::path(patch, path = "/api/v1/users/{user}", tag = "identity", security(("token" = ["tenant:admin"])),
    params(("user" = String, Path, description = "user id or username")), request_body = UpdateUser,
    responses((status = 200, body = UserView), (status = 404, body = crate::problem::Problem), (status = 409, body = crate::problem::Problem)))]
pub async fn update_user(
    State(state): State<AppState>,
    auth: Auth,
    Path(user): Path<String>,
    Json(body): Json<UpdateUser>,
) -> ApiResult<axum::Json<UserView>> {
    let u = state.db.get_user(auth.tenant_id(), &user).await?;
    if body.disabled == Some(true) && u.id == auth.principal.user_id {
        return Err(Error::conflict("you cannot disable yourself")
            .with_field("disabled")
            .into());
    }
    if let Some(pw) = &body.password {
        state
            .db
            .set_password(&auth.actor, auth.tenant_id(), &u.id, pw)
            .await?;
    }
    let u = match body.disabled {
        Some(d) if d != u.disabled => {
            state
                .db
                .set_user_disabled(&auth.actor, auth.tenant_id(), &u.id, d)
                .await?
        }
        _ => u,
    };
    state.principals.clear();
    Ok(axum::Json(u.into()))
}

/// Creates a token for a user (service accounts, CI).
#[utoipa::path(post, path = "/api/v1/users/{user}/tokens", tag = "identity", security(("token" = ["tenant:admin"])),
    params(("user" = String, Path, description = "user id or username")), request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 404, body = crate::problem::Problem)))]
pub async fn create_user_token(
    State(state): State<AppState>,
    auth: Auth,
    Path(user): Path<String>,
    Json(body): Json<CreateToken>,
) -> ApiResult<Response> {
    let u = state.db.get_user(auth.tenant_id(), &user).await?;
    let scopes = parse_scopes(&body.scopes)?;
    let (meta, token) = state
        .db
        .create_token(
            &auth.actor,
            auth.tenant_id(),
            &u.id,
            &body.name,
            scopes.as_deref(),
            parse_expiry(&body.expires_at)?,
        )
        .await?;
    Ok(created_token(meta, token))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// Only this user's tokens (id or username).
    pub user: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// Resolves an optional `?user=` (id or username) in the caller's tenant.
async fn user_filter(
    state: &AppState,
    auth: &Auth,
    user: Option<&str>,
) -> ApiResult<Option<String>> {
    match user {
        Some(u) => {
            let found = state
                .db
                .get_user(auth.tenant_id(), u)
                .await
                .map_err(|e| Error::from(e).with_field("user"))?;
            Ok(Some(found.id))
        }
        None => Ok(None),
    }
}

/// All tokens of the tenant (metadata only).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "identity", security(("token" = ["tenant:admin"])), params(TokenQuery),
    responses((status = 200, body = Page<TokenView>)))]
pub async fn list_tokens(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<TokenQuery>,
) -> ApiResult<axum::Json<Page<TokenView>>> {
    let user_id = user_filter(&state, &auth, q.user.as_deref()).await?;
    let page = state
        .db
        .list_tokens(
            auth.tenant_id(),
            user_id.as_deref(),
            q.cursor.as_deref(),
            q.limit,
        )
        .await?;
    Ok(axum::Json(Page::from_store(page, TokenView::from)))
}

/// Revokes any token of the tenant.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "identity", security(("token" = ["tenant:admin"])),
    params(("id" = String, Path, description = "token id")),
    responses((status = 204), (status = 404, body = crate::problem::Problem)))]
pub async fn revoke_token(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .db
        .revoke_token(&auth.actor, auth.tenant_id(), &id)
        .await?;
    state.principals.clear();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GrantQuery {
    /// Only this user's grants (id or username).
    pub user: Option<String>,
}

/// Grants of the tenant.
#[utoipa::path(get, path = "/api/v1/grants", tag = "identity", security(("token" = ["tenant:read"])), params(GrantQuery),
    responses((status = 200, body = Vec<GrantView>)))]
pub async fn list_grants(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<GrantQuery>,
) -> ApiResult<axum::Json<Vec<GrantView>>> {
    let user_id = user_filter(&state, &auth, q.user.as_deref()).await?;
    let grants = state
        .db
        .list_grants(auth.tenant_id(), user_id.as_deref())
        .await?;
    Ok(axum::Json(
        grants.into_iter().map(GrantView::from).collect(),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGrant {
    /// User id or username.
    pub user: String,
    /// viewer, editor, deployer, approver or admin.
    pub role: String,
    /// Narrow to one project.
    #[serde(default)]
    pub project: Option<String>,
    /// Narrow to one environment. Deploying to or approving on a protected environment needs a
    /// grant that names it.
    #[serde(default)]
    pub environment: Option<String>,
}

/// Grants a role to a user.
#[utoipa::path(post, path = "/api/v1/grants", tag = "identity", security(("token" = ["tenant:admin"])), request_body = CreateGrant,
    responses((status = 201, body = GrantView), (status = 409, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn create_grant(
    State(state): State<AppState>,
    auth: Auth,
    Json(body): Json<CreateGrant>,
) -> ApiResult<Response> {
    let role: Role = body.role.parse()?;
    let u = state
        .db
        .get_user(auth.tenant_id(), &body.user)
        .await
        .map_err(|e| Error::from(e).with_field("user"))?;
    let grant = Grant {
        role,
        project: body.project,
        environment: body.environment,
    };
    let g = state
        .db
        .add_grant(&auth.actor, auth.tenant_id(), &u.id, &grant)
        .await?;
    state.principals.clear();
    let location = format!("/api/v1/grants/{}", g.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(GrantView::from(g)),
    )
        .into_response())
}

/// Removes a grant. The tenant's last tenant-wide admin grant cannot be removed.
#[utoipa::path(delete, path = "/api/v1/grants/{id}", tag = "identity", security(("token" = ["tenant:admin"])),
    params(("id" = String, Path, description = "grant id")),
    responses((status = 204), (status = 404, body = crate::problem::Problem), (status = 409, body = crate::problem::Problem)))]
pub async fn delete_grant(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .db
        .remove_grant(&auth.actor, auth.tenant_id(), &id)
        .await?;
    state.principals.clear();
    Ok(StatusCode::NO_CONTENT)
}
