//! Approval requests and votes: the two-person rule's records, shared by registry publications
//! and deploys. [`draven_core::approval::decide_vote`] decides; this module records, audits and,
//! when a request is decided, moves its subject on in the same transaction.

use crate::audit::{append, Actor};
use crate::{
    cursor, new_id, now_ms, opt_from_db, page_limit, paginate, rfc3339, Db, Page, Result, Tx,
};
use draven_core::approval::{decide_vote, ApprovalState, CastVote, Verdict};
use draven_core::Error;
use sqlx::Row;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoteRecord {
    pub user_id: String,
    pub username: String,
    pub verdict: String,
    pub comment: String,
    pub created_at: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approval {
    pub id: String,
    /// `publication` (registry) or `deploy`.
    pub subject_kind: String,
    pub subject_id: String,
    pub project: Option<String>,
    pub environment: Option<String>,
    /// User id of the requester, who can never vote.
    pub requested_by: String,
    pub required: i64,
    pub state: String,
    pub created_at: String,
    pub decided_at: Option<String>,
    pub votes: Vec<VoteRecord>,
}

/// One person's vote.
#[derive(Clone, Copy, Debug)]
pub struct Ballot<'a> {
    pub voter_id: &'a str,
    pub voter_name: &'a str,
    pub verdict: Verdict,
    pub comment: &'a str,
}

/// What is being approved.
#[derive(Clone, Debug)]
pub struct Subject<'a> {
    pub kind: &'a str,
    pub id: &'a str,
    pub project: Option<&'a str>,
    pub environment: Option<&'a str>,
}

pub(crate) async fn create_approval_in(
    tx: &mut Tx,
    actor: &Actor,
    tenant_id: &str,
    subject: &Subject<'_>,
    requested_by: &str,
    required: i64,
) -> Result<String> {
    let id = new_id();
    sqlx::query(
        "INSERT INTO approval_requests (id, tenant_id, subject_kind, subject_id, project, environment, requested_by, required, state, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9)",
    )
    .bind(&id)
    .bind(tenant_id)
    .bind(subject.kind)
    .bind(subject.id)
    .bind(subject.project.unwrap_or_default())
    .bind(subject.environment.unwrap_or_default())
    .bind(requested_by)
    .bind(required)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    append(
        tx,
        actor
            .did("approval.request", &format!("{}:{}", subject.kind, subject.id))
            .detail(serde_json::json!({"approval_id": id, "required": required, "environment": subject.environment})),
    )
    .await?;
    Ok(id)
}

async fn load(conn: &mut sqlx::AnyConnection, tenant_id: &str, id: &str) -> Result<Approval> {
    let row = sqlx::query("SELECT * FROM approval_requests WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| Error::not_found("approval request"))?;
    let votes = sqlx::query(
        "SELECT * FROM approval_votes WHERE request_id = $1 ORDER BY created_at, user_id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        Ok(VoteRecord {
            user_id: r.try_get("user_id")?,
            username: r.try_get("username")?,
            verdict: r.try_get("verdict")?,
            comment: r.try_get("comment")?,
            created_at: rfc3339(r.try_get("created_at")?),
        })
    })
    .collect::<Result<Vec<_>>>()?;
    Ok(Approval {
        id: row.try_get("id")?,
        subject_kind: row.try_get("subject_kind")?,
        subject_id: row.try_get("subject_id")?,
        project: opt_from_db(row.try_get("project")?),
        environment: opt_from_db(row.try_get("environment")?),
        requested_by: row.try_get("requested_by")?,
        required: row.try_get("required")?,
        state: row.try_get("state")?,
        created_at: rfc3339(row.try_get("created_at")?),
        decided_at: row.try_get::<Option<i64>, _>("decided_at")?.map(rfc3339),
        votes,
    })
}

impl Db {
    pub async fn get_approval(&self, tenant_id: &str, id: &str) -> Result<Approval> {
        let mut conn = self.pool().acquire().await?;
        load(&mut conn, tenant_id, id).await
    }

    pub async fn list_approvals(
        &self,
        tenant_id: &str,
        state: Option<&str>,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<Approval>> {
        let limit = page_limit(limit)?;
        let after = after.map(cursor::decode).transpose()?.unwrap_or_default();
        let rows = sqlx::query("SELECT id FROM approval_requests WHERE tenant_id = $1 AND ($2 = '' OR state = $2) AND id > $3 ORDER BY id LIMIT $4")
            .bind(tenant_id)
            .bind(state.unwrap_or_default())
            .bind(after)
            .bind(limit + 1)
            .fetch_all(self.pool())
            .await?;
        let mut conn = self.pool().acquire().await?;
        let mut items = Vec::with_capacity(rows.len());
        for r in &rows {
            items.push(load(&mut conn, tenant_id, &r.try_get::<String, _>("id")?).await?);
        }
        Ok(paginate(items, limit, |a| a.id.clone()))
    }

    /// Records `voter`'s vote. When it decides the request, the subject moves on in the same
    /// transaction (a publication goes live or is rejected).
    pub async fn vote(
        &self,
        actor: &Actor,
        tenant_id: &str,
        id: &str,
        ballot: &Ballot<'_>,
    ) -> Result<Approval> {
        let Ballot {
            voter_id,
            voter_name,
            verdict,
            comment,
        } = *ballot;
        let mut tx = self.begin().await?;
        // Take the row lock first, so concurrent votes are decided one after the other.
        sqlx::query("UPDATE approval_requests SET state = state WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let a = load(&mut tx, tenant_id, id).await?;
        let state = ApprovalState::parse(&a.state).unwrap_or(ApprovalState::Withdrawn);
        let cast: Vec<CastVote> = a
            .votes
            .iter()
            .map(|v| CastVote {
                user_id: v.user_id.clone(),
                verdict: Verdict::parse(&v.verdict).unwrap_or(Verdict::Reject),
            })
            .collect();
        let target = format!("{}:{}", a.subject_kind, a.subject_id);
        let next = match decide_vote(
            state,
            &a.requested_by,
            a.required as u32,
            &cast,
            voter_id,
            verdict,
        ) {
            Ok(next) => next,
            Err(e) => {
                drop(tx);
                self.audit(actor.denied("approval.vote", &target, &e.message))
                    .await?;
                return Err(e.into());
            }
        };
        let now = now_ms();
        sqlx::query("INSERT INTO approval_votes (request_id, user_id, username, verdict, comment, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(id)
            .bind(voter_id)
            .bind(voter_name)
            .bind(verdict.as_str())
            .bind(comment)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        append(
            &mut tx,
            actor
                .did("approval.vote", &target)
                .detail(serde_json::json!({"approval_id": id, "verdict": verdict.as_str(), "comment": comment, "state": next.as_str()})),
        )
        .await?;
        if next != ApprovalState::Pending {
            sqlx::query("UPDATE approval_requests SET state = $1, decided_at = $2 WHERE id = $3")
                .bind(next.as_str())
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            if a.subject_kind == "publication" {
                crate::registry_release::decide_publication_in(
                    &mut tx,
                    actor,
                    tenant_id,
                    &a.subject_id,
                    next == ApprovalState::Approved,
                )
                .await?;
            }
            if a.subject_kind == "deploy" {
                crate::deploy::decide_deploy_in(
                    &mut tx,
                    actor,
                    tenant_id,
                    &a.subject_id,
                    next == ApprovalState::Approved,
                )
                .await?;
            }
        }
        let updated = load(&mut tx, tenant_id, id).await?;
        tx.commit().await?;
        Ok(updated)
    }
}
