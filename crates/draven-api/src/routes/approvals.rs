//! Approval requests and votes (two-person rule), for publications now and deploys later.

use super::Page;
use crate::authz::Auth;
use crate::extract::{Json, Path, Query};
use crate::problem::ApiResult;
use crate::AppState;
use axum::extract::State;
use draven_core::approval::{ApprovalState, Verdict};
use draven_core::{Action, Error, Target};
use draven_store::approvals::{Approval, Ballot, VoteRecord};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Serialize, ToSchema)]
pub struct VoteView {
    pub user_id: String,
    pub username: String,
    /// approve or reject
    pub verdict: String,
    pub comment: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalView {
    pub id: String,
    /// publication or deploy
    pub subject_kind: String,
    pub subject_id: String,
    pub project: Option<String>,
    pub environment: Option<String>,
    /// User id of the requester (who cannot vote).
    pub requested_by: String,
    /// Distinct approvals needed.
    pub required: i64,
    /// pending, approved, rejected or withdrawn
    pub state: String,
    pub created_at: String,
    pub decided_at: Option<String>,
    pub votes: Vec<VoteView>,
}

impl From<Approval> for ApprovalView {
    fn from(a: Approval) -> ApprovalView {
        ApprovalView {
            id: a.id,
            subject_kind: a.subject_kind,
            subject_id: a.subject_id,
            project: a.project,
            environment: a.environment,
            requested_by: a.requested_by,
            required: a.required,
            state: a.state,
            created_at: a.created_at,
            decided_at: a.decided_at,
            votes: a
                .votes
                .into_iter()
                .map(|v: VoteRecord| VoteView {
                    user_id: v.user_id,
                    username: v.username,
                    verdict: v.verdict,
                    comment: v.comment,
                    created_at: v.created_at,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ApprovalQuery {
    /// pending, approved, rejected or withdrawn
    pub state: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// Approval requests of the tenant.
#[utoipa::path(get, path = "/api/v1/approvals", tag = "approvals", security(("token" = ["tenant:read"])), params(ApprovalQuery),
    responses((status = 200, body = Page<ApprovalView>)))]
pub async fn list_approvals(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<ApprovalQuery>,
) -> ApiResult<axum::Json<Page<ApprovalView>>> {
    if let Some(s) = &q.state {
        ApprovalState::parse(s).ok_or_else(|| {
            Error::invalid(
                "state",
                "state must be pending, approved, rejected or withdrawn",
            )
        })?;
    }
    let page = state
        .db
        .list_approvals(
            auth.tenant_id(),
            q.state.as_deref(),
            q.cursor.as_deref(),
            q.limit,
        )
        .await?;
    Ok(axum::Json(Page::from_store(page, ApprovalView::from)))
}

/// One approval request with its votes.
#[utoipa::path(get, path = "/api/v1/approvals/{id}", tag = "approvals", security(("token" = ["tenant:read"])), params(("id" = String, Path)),
    responses((status = 200, body = ApprovalView), (status = 404, body = crate::problem::Problem)))]
pub async fn get_approval(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<ApprovalView>> {
    Ok(axum::Json(
        state.db.get_approval(auth.tenant_id(), &id).await?.into(),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CastVote {
    /// approve or reject
    pub verdict: String,
    #[serde(default)]
    pub comment: String,
}

/// Votes on a request. The requester cannot vote, each person votes once, one rejection ends
/// the request; on a protected environment the voter needs an approver grant naming it.
#[utoipa::path(post, path = "/api/v1/approvals/{id}/votes", tag = "approvals", security(("token" = ["scoped:approve"])),
    params(("id" = String, Path)), request_body = CastVote,
    responses((status = 200, body = ApprovalView), (status = 403, body = crate::problem::Problem), (status = 409, body = crate::problem::Problem)))]
pub async fn vote(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Json(b): Json<CastVote>,
) -> ApiResult<axum::Json<ApprovalView>> {
    let verdict = Verdict::parse(&b.verdict)?;
    if b.comment.chars().count() > 2000 {
        return Err(Error::invalid("comment", "comment may have at most 2000 characters").into());
    }
    let a = state.db.get_approval(auth.tenant_id(), &id).await?;
    let protected = match &a.environment {
        Some(e) => state
            .db
            .get_environment(auth.tenant_id(), e)
            .await
            .map(|e| e.protected)
            .unwrap_or(true),
        None => false,
    };
    let target = Target {
        project: a.project.as_deref(),
        environment: a.environment.as_deref(),
        environment_protected: protected,
    };
    auth.require(
        &state,
        Action::Approve,
        &target,
        &format!("{}:{}", a.subject_kind, a.subject_id),
    )
    .await?;
    let p = &auth.principal;
    let ballot = Ballot {
        voter_id: &p.user_id,
        voter_name: &p.username,
        verdict,
        comment: &b.comment,
    };
    let updated = state
        .db
        .vote(&auth.actor, auth.tenant_id(), &id, &ballot)
        .await?;
    Ok(axum::Json(updated.into()))
}
