//! The tenant's audit trail: filtered, cursor-paged, and exported as JSON lines.

use super::Page;
use crate::authz::Auth;
use crate::extract::Query;
use crate::problem::ApiResult;
use crate::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use draven_core::Error;
use draven_store::audit::{AuditFilter, AuditRecord, Outcome};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// One audit record, as the API and `draven admin audit export` show it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub seq: i64,
    pub id: String,
    pub at: String,
    pub tenant_id: Option<String>,
    /// `user:<name>`, `cli:<os user>`, `system` or `anonymous`.
    pub actor: String,
    pub action: String,
    pub target: String,
    #[serde(rename = "ref")]
    pub ref_name: Option<String>,
    /// success, denied or failure.
    pub outcome: String,
    pub reason: Option<String>,
    pub request_id: Option<String>,
    pub client_addr: Option<String>,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

impl From<AuditRecord> for AuditView {
    fn from(r: AuditRecord) -> AuditView {
        AuditView {
            seq: r.seq,
            id: r.id,
            at: r.at,
            tenant_id: r.tenant_id,
            actor: r.actor,
            action: r.action,
            target: r.target,
            ref_name: r.ref_name,
            outcome: r.outcome,
            reason: r.reason,
            request_id: r.request_id,
            client_addr: r.client_addr,
            detail: r.detail,
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// e.g. `user:ann`
    pub actor: Option<String>,
    /// An action (`user.create`) or a prefix ending in `.` (`user.`).
    pub action: Option<String>,
    /// e.g. `environment:prod`
    pub target: Option<String>,
    /// success, denied or failure
    pub outcome: Option<String>,
    /// RFC 3339; records at or after.
    pub since: Option<String>,
    /// RFC 3339; records before.
    pub until: Option<String>,
    /// System administrators only: the whole trail, including records that belong to no
    /// tenant (refused unauthenticated requests, which name no tenant).
    pub all_tenants: Option<bool>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

fn time(field: &str, v: &Option<String>) -> Result<Option<i64>, Error> {
    v.as_deref()
        .map(|s| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.timestamp_millis())
                .map_err(|_| Error::invalid(field, format!("{field} must be an RFC 3339 time")))
        })
        .transpose()
}

/// The tenant's audit records, newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", security(("token" = ["tenant:admin"])), params(AuditQuery),
    responses((status = 200, body = Page<AuditView>), (status = 422, body = crate::problem::Problem)))]
pub async fn list_audit(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<AuditQuery>,
) -> ApiResult<axum::Json<Page<AuditView>>> {
    let all = q.all_tenants.unwrap_or(false);
    if all && !auth.principal.system_admin {
        return Err(
            Error::forbidden("all_tenants=true is for system administrators")
                .with_field("all_tenants")
                .into(),
        );
    }
    let filter = AuditFilter {
        tenant_id: if all {
            None
        } else {
            Some(auth.tenant_id().to_owned())
        },
        actor: q.actor,
        action: q.action,
        target: q.target,
        outcome: q.outcome.as_deref().map(Outcome::parse).transpose()?,
        since_ms: time("since", &q.since)?,
        until_ms: time("until", &q.until)?,
        cursor: q.cursor,
        limit: q.limit,
    };
    let page = state.db.list_audit(&filter).await?;
    Ok(axum::Json(Page::from_store(page, AuditView::from)))
}

/// The tenant's whole trail, oldest first, as JSON lines (streamed).
#[utoipa::path(get, path = "/api/v1/audit/export", tag = "audit", security(("token" = ["tenant:admin"])),
    responses((status = 200, content_type = "application/x-ndjson")))]
pub async fn export_audit(State(state): State<AppState>, auth: Auth) -> Response {
    let tenant = auth.tenant_id().to_owned();
    let stream = futures::stream::unfold(Some(0i64), move |after| {
        let db = state.db.clone();
        let tenant = tenant.clone();
        async move {
            let after = after?;
            match db.audit_batch(Some(&tenant), after, 500).await {
                Ok(batch) if batch.is_empty() => None,
                Ok(batch) => {
                    let next = batch.last().map(|r| r.seq);
                    let mut out = Vec::new();
                    for r in batch {
                        out.extend(serde_json::to_vec(&AuditView::from(r)).unwrap_or_default());
                        out.push(b'\n');
                    }
                    Some((Ok::<_, std::io::Error>(bytes::Bytes::from(out)), next))
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit export failed midway");
                    Some((Err(std::io::Error::other("audit export failed")), None))
                }
            }
        }
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}
