//! Bundles (immutable, content-addressed releases) and their publications onto environments.
//!
//! Creating a bundle publishes its draft versions in the same transaction: all or nothing, like
//! a Zeebe deployment. A publication on a protected environment waits for an approval; the
//! approval's decision moves it on ([`decide_publication_in`]).

use crate::approvals::{create_approval_in, Subject};
use crate::audit::{append, Actor};
use crate::{cursor, new_id, now_ms, page_limit, paginate, rfc3339, Db, Page, Result, Tx};
use draven_core::{Error, ErrorCode};
use sqlx::any::AnyRow;
use sqlx::Row;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    pub id: String,
    pub sha256: String,
    pub size: i64,
    pub object_key: String,
    pub manifest: String,
    pub created_by: String,
    pub created_at: String,
}

/// A version going into a bundle, with the revision it was validated at (drafts only).
#[derive(Clone, Debug)]
pub struct Member {
    pub version_id: String,
    pub key: String,
    pub number: i64,
    pub draft_revision: Option<i64>,
}

/// A bundle whose tar is stored, to record.
#[derive(Clone, Copy, Debug)]
pub struct NewBundle<'a> {
    pub sha256: &'a str,
    pub size: i64,
    pub object_key: &'a str,
    pub manifest: &'a str,
    pub members: &'a [Member],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    pub id: String,
    pub environment: String,
    pub bundle_sha256: String,
    /// `pending-approval`, `live`, `superseded` or `rejected`.
    pub state: String,
    pub requested_by: String,
    pub approval_id: Option<String>,
    pub created_at: String,
    pub live_at: Option<String>,
    pub ended_at: Option<String>,
}

fn bundle(row: &AnyRow) -> Result<Bundle> {
    Ok(Bundle {
        id: row.try_get("id")?,
        sha256: row.try_get("sha256")?,
        size: row.try_get("size")?,
        object_key: row.try_get("object_key")?,
        manifest: row.try_get("manifest")?,
        created_by: row.try_get("created_by")?,
        created_at: rfc3339(row.try_get("created_at")?),
    })
}

const PUBLICATION_SELECT: &str = "SELECT p.*, b.sha256 AS bundle_sha256 FROM publications p JOIN bundles b ON b.id = p.bundle_id";

fn publication(row: &AnyRow) -> Result<Publication> {
    Ok(Publication {
        id: row.try_get("id")?,
        environment: row.try_get("environment")?,
        bundle_sha256: row.try_get("bundle_sha256")?,
        state: row.try_get("state")?,
        requested_by: row.try_get("requested_by")?,
        approval_id: row.try_get("approval_id")?,
        created_at: rfc3339(row.try_get("created_at")?),
        live_at: row.try_get::<Option<i64>, _>("live_at")?.map(rfc3339),
        ended_at: row.try_get::<Option<i64>, _>("ended_at")?.map(rfc3339),
    })
}

async fn go_live(
    tx: &mut Tx,
    tenant_id: &str,
    publication_id: &str,
    environment: &str,
) -> Result<()> {
    let now = now_ms();
    sqlx::query("UPDATE publications SET state = 'superseded', ended_at = $1 WHERE tenant_id = $2 AND environment = $3 AND state = 'live'")
        .bind(now)
        .bind(tenant_id)
        .bind(environment)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE publications SET state = 'live', live_at = $1 WHERE id = $2")
        .bind(now)
        .bind(publication_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Moves a pending publication on after its approval was decided.
pub(crate) async fn decide_publication_in(
    tx: &mut Tx,
    actor: &Actor,
    tenant_id: &str,
    publication_id: &str,
    approved: bool,
) -> Result<()> {
    let row =
        sqlx::query("SELECT environment, state FROM publications WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(publication_id)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| Error::not_found("publication"))?;
    if row.try_get::<String, _>("state")? != "pending-approval" {
        return Ok(());
    }
    let environment: String = row.try_get("environment")?;
    if approved {
        go_live(tx, tenant_id, publication_id, &environment).await?;
        append(
            tx,
            actor
                .did("publication.live", &format!("environment:{environment}"))
                .ref_name(publication_id),
        )
        .await?;
    } else {
        sqlx::query("UPDATE publications SET state = 'rejected', ended_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(publication_id)
            .execute(&mut **tx)
            .await?;
        append(
            tx,
            actor
                .did("publication.reject", &format!("environment:{environment}"))
                .ref_name(publication_id),
        )
        .await?;
    }
    Ok(())
}

impl Db {
    /// Records a bundle whose tar is already stored, and publishes its draft members. An
    /// identical bundle (same sha256) is returned as it is (`false`). A draft that changed since
    /// it was validated makes the whole bundle fail (409), publishing nothing.
    pub async fn create_bundle(
        &self,
        actor: &Actor,
        tenant_id: &str,
        new: &NewBundle<'_>,
    ) -> Result<(Bundle, bool)> {
        let NewBundle {
            sha256,
            size,
            object_key,
            manifest,
            members,
        } = *new;
        let mut tx = self.begin().await?;
        if let Some(row) = sqlx::query("SELECT * FROM bundles WHERE tenant_id = $1 AND sha256 = $2")
            .bind(tenant_id)
            .bind(sha256)
            .fetch_optional(&mut *tx)
            .await?
        {
            let b = bundle(&row)?;
            tx.commit().await?;
            return Ok((b, false));
        }
        let now = now_ms();
        for m in members {
            let Some(rev) = m.draft_revision else {
                continue;
            };
            let done = sqlx::query(
                "UPDATE artifact_versions SET state = 'published', published_at = $1, updated_at = $1 WHERE id = $2 AND state = 'draft' AND revision = $3",
            )
            .bind(now)
            .bind(&m.version_id)
            .bind(rev)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != 1 {
                return Err(Error::new(
                    ErrorCode::Conflict,
                    format!("version {} of {} changed while the release was being built; nothing was published", m.number, m.key),
                )
                .into());
            }
            append(
                &mut tx,
                actor
                    .did("version.publish", &format!("artifact:{}", m.key))
                    .ref_name(&m.number.to_string()),
            )
            .await?;
        }
        let id = new_id();
        sqlx::query(
            "INSERT INTO bundles (id, tenant_id, sha256, size, object_key, manifest, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(sha256)
        .bind(size)
        .bind(object_key)
        .bind(manifest)
        .bind(&actor.name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for m in members {
            sqlx::query("INSERT INTO bundle_items (bundle_id, version_id) VALUES ($1, $2)")
                .bind(&id)
                .bind(&m.version_id)
                .execute(&mut *tx)
                .await?;
        }
        append(
            &mut tx,
            actor
                .did("bundle.create", &format!("bundle:{sha256}"))
                .detail(serde_json::json!({"items": members.len(), "size": size})),
        )
        .await?;
        let row = sqlx::query("SELECT * FROM bundles WHERE id = $1")
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        let b = bundle(&row)?;
        tx.commit().await?;
        Ok((b, true))
    }

    pub async fn get_bundle(&self, tenant_id: &str, sha256: &str) -> Result<Bundle> {
        let row = sqlx::query("SELECT * FROM bundles WHERE tenant_id = $1 AND sha256 = $2")
            .bind(tenant_id)
            .bind(sha256)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| Error::not_found("bundle"))?;
        bundle(&row)
    }

    pub async fn list_bundles(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<Bundle>> {
        let limit = page_limit(limit)?;
        let after = after.map(cursor::decode).transpose()?.unwrap_or_default();
        let rows = sqlx::query(
            "SELECT * FROM bundles WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(tenant_id)
        .bind(after)
        .bind(limit + 1)
        .fetch_all(self.pool())
        .await?;
        let items = rows.iter().map(bundle).collect::<Result<Vec<_>>>()?;
        Ok(paginate(items, limit, |b| b.id.clone()))
    }

    /// Publishes a bundle onto an environment: live at once, or pending an approval by
    /// `required_approvals` people other than the requester.
    pub async fn create_publication(
        &self,
        actor: &Actor,
        tenant_id: &str,
        environment: &str,
        bundle_sha256: &str,
        requester_user_id: &str,
        required_approvals: i64,
    ) -> Result<Publication> {
        let mut tx = self.begin().await?;
        let b = sqlx::query("SELECT id FROM bundles WHERE tenant_id = $1 AND sha256 = $2")
            .bind(tenant_id)
            .bind(bundle_sha256)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| Error::not_found("bundle").with_field("bundle"))?;
        let bundle_id: String = b.try_get("id")?;
        let id = new_id();
        let state = if required_approvals > 0 {
            "pending-approval"
        } else {
            "live"
        };
        sqlx::query(
            "INSERT INTO publications (id, tenant_id, environment, bundle_id, state, requested_by, created_at) VALUES ($1, $2, $3, $4, 'pending-approval', $5, $6)",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(environment)
        .bind(&bundle_id)
        .bind(&actor.name)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        append(
            &mut tx,
            actor
                .did("publication.request", &format!("environment:{environment}"))
                .ref_name(bundle_sha256)
                .detail(serde_json::json!({"publication_id": id, "needs_approvals": required_approvals})),
        )
        .await?;
        if state == "live" {
            go_live(&mut tx, tenant_id, &id, environment).await?;
            append(
                &mut tx,
                actor
                    .did("publication.live", &format!("environment:{environment}"))
                    .ref_name(&id),
            )
            .await?;
        } else {
            let subject = Subject {
                kind: "publication",
                id: &id,
                project: None,
                environment: Some(environment),
            };
            let approval = create_approval_in(
                &mut tx,
                actor,
                tenant_id,
                &subject,
                requester_user_id,
                required_approvals,
            )
            .await?;
            sqlx::query("UPDATE publications SET approval_id = $1 WHERE id = $2")
                .bind(&approval)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
        }
        let row = sqlx::query(&format!("{PUBLICATION_SELECT} WHERE p.id = $1"))
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        let p = publication(&row)?;
        tx.commit().await?;
        Ok(p)
    }

    pub async fn get_publication(&self, tenant_id: &str, id: &str) -> Result<Publication> {
        let row = sqlx::query(&format!(
            "{PUBLICATION_SELECT} WHERE p.tenant_id = $1 AND p.id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| Error::not_found("publication"))?;
        publication(&row)
    }

    /// Publications, newest first, optionally of one environment.
    pub async fn list_publications(
        &self,
        tenant_id: &str,
        environment: Option<&str>,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<Publication>> {
        let limit = page_limit(limit)?;
        let after = after.map(cursor::decode).transpose()?;
        let rows = sqlx::query(&format!(
            "{PUBLICATION_SELECT} WHERE p.tenant_id = $1 AND ($2 = '' OR p.environment = $2) AND ($3 = '' OR p.id < $3) ORDER BY p.id DESC LIMIT $4"
        ))
        .bind(tenant_id)
        .bind(environment.unwrap_or_default())
        .bind(after.unwrap_or_default())
        .bind(limit + 1)
        .fetch_all(self.pool())
        .await?;
        let items = rows.iter().map(publication).collect::<Result<Vec<_>>>()?;
        Ok(paginate(items, limit, |p| p.id.clone()))
    }

    /// What is live on each environment that has a live publication.
    pub async fn live_publications(&self, tenant_id: &str) -> Result<Vec<Publication>> {
        let rows = sqlx::query(&format!("{PUBLICATION_SELECT} WHERE p.tenant_id = $1 AND p.state = 'live' ORDER BY p.environment"))
            .bind(tenant_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(publication).collect()
    }

    /// The versions in a bundle: (artifact key, version number).
    pub async fn bundle_members(
        &self,
        tenant_id: &str,
        sha256: &str,
    ) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT a.artifact_key, v.number FROM bundle_items i JOIN bundles b ON b.id = i.bundle_id JOIN artifact_versions v ON v.id = i.version_id JOIN artifacts a ON a.id = v.artifact_id WHERE b.tenant_id = $1 AND b.sha256 = $2 ORDER BY a.artifact_key",
        )
        .bind(tenant_id)
        .bind(sha256)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("artifact_key")?, r.try_get("number")?)))
            .collect()
    }
}
