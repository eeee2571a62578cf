//! Registry tables: artifacts, their labels and versions, what each version provides and
//! requires, bundles and publications.
//!
//! A published version never changes: the functions here refuse it with 409 and the database
//! triggers refuse it again for anything that bypasses them. Payload bytes live in object
//! storage; rows here carry their key and digest, and are written only after the object is.

use crate::audit::{append, Actor};
use crate::{cursor, new_id, now_ms, page_limit, paginate, rfc3339, Db, Page, Result, Tx};
use draven_core::{Error, ErrorCode};
use sqlx::any::AnyRow;
use sqlx::Row;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    pub id: String,
    pub key: String,
    pub kind: String,
    pub name: String,
    pub description: String,
    pub labels: Vec<String>,
    pub created_by: String,
    pub revision: i64,
    pub created_at: String,
    pub updated_at: String,
    /// Highest version number, if any.
    pub latest_version: Option<i64>,
    /// Highest published (or deprecated) version number, if any.
    pub latest_published: Option<i64>,
}

#[derive(Clone, Debug, Default)]
pub struct NewArtifact {
    pub key: String,
    pub kind: String,
    pub name: String,
    pub description: String,
    pub labels: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct ArtifactPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub labels: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default)]
pub struct ArtifactFilter {
    pub kind: Option<String>,
    pub label: Option<String>,
    /// Artifacts having at least one version in this state.
    pub state: Option<String>,
    /// Case-insensitive text in key, name or description.
    pub text: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// A dependency edge of a version: found in its content, or declared by a user.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Requirement {
    pub kind: String,
    pub id: String,
    pub from: String,
    pub declared: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub id: String,
    pub artifact_id: String,
    pub artifact_key: String,
    pub kind: String,
    pub number: i64,
    pub state: String,
    pub version_tag: String,
    pub sha256: String,
    pub size: i64,
    pub payload_key: String,
    pub content_type: String,
    /// The validator's findings, as JSON.
    pub findings: String,
    pub errors: i64,
    pub revision: i64,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
    pub published_at: Option<String>,
    pub provides: Vec<(String, String)>,
    pub requires: Vec<Requirement>,
}

/// A draft's metadata to change (`None`: unchanged).
#[derive(Clone, Copy, Debug, Default)]
pub struct VersionMeta<'a> {
    pub version_tag: Option<&'a str>,
    /// Declared dependencies (kind, id); replaces the declared list.
    pub declared: Option<&'a [(String, String)]>,
}

/// The stored content of a version (payload already written to object storage).
#[derive(Clone, Debug, Default)]
pub struct Content {
    pub sha256: String,
    pub size: i64,
    pub payload_key: String,
    pub content_type: String,
    pub findings: String,
    pub errors: i64,
    pub provides: Vec<(String, String)>,
    /// Extracted from the content (not declared).
    pub requires: Vec<(String, String, String)>,
}

pub const DRAFT: &str = "draft";
pub const PUBLISHED: &str = "published";
pub const DEPRECATED: &str = "deprecated";

fn immutable(key: &str, number: i64, state: &str) -> Error {
    Error::new(
        ErrorCode::Conflict,
        format!("version {number} of {key} is {state}: published versions never change"),
    )
}

fn stale(current: i64) -> Error {
    Error::new(
        ErrorCode::PreconditionFailed,
        format!("it changed (now at revision {current}); re-read it and retry"),
    )
}

const ARTIFACT_SELECT: &str = "SELECT a.*, \
    (SELECT MAX(v.number) FROM artifact_versions v WHERE v.artifact_id = a.id) AS latest_version, \
    (SELECT MAX(v.number) FROM artifact_versions v WHERE v.artifact_id = a.id AND v.state <> 'draft') AS latest_published \
    FROM artifacts a";

fn artifact(row: &AnyRow) -> Result<Artifact> {
    let labels: String = row.try_get("labels")?;
    let labels = serde_json::from_str(&labels)
        .map_err(|_| crate::StoreError::Corrupt("artifact labels are not a JSON array".into()))?;
    Ok(Artifact {
        id: row.try_get("id")?,
        key: row.try_get("artifact_key")?,
        kind: row.try_get("kind")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        labels,
        created_by: row.try_get("created_by")?,
        revision: row.try_get("revision")?,
        created_at: rfc3339(row.try_get("created_at")?),
        updated_at: rfc3339(row.try_get("updated_at")?),
        latest_version: row.try_get("latest_version")?,
        latest_published: row.try_get("latest_published")?,
    })
}

async fn load_artifact(
    conn: &mut sqlx::AnyConnection,
    tenant_id: &str,
    key: &str,
) -> Result<Artifact> {
    let row = sqlx::query(&format!(
        "{ARTIFACT_SELECT} WHERE a.tenant_id = $1 AND a.artifact_key = $2"
    ))
    .bind(tenant_id)
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| Error::not_found("artifact"))?;
    artifact(&row)
}

async fn set_labels(
    tx: &mut Tx,
    tenant_id: &str,
    artifact_id: &str,
    labels: &[String],
) -> Result<()> {
    sqlx::query("UPDATE artifacts SET labels = $1 WHERE id = $2")
        .bind(serde_json::to_string(labels).unwrap_or_else(|_| "[]".into()))
        .bind(artifact_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM artifact_labels WHERE artifact_id = $1")
        .bind(artifact_id)
        .execute(&mut **tx)
        .await?;
    for l in labels {
        sqlx::query("INSERT INTO artifact_labels (tenant_id, artifact_id, label) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(tenant_id)
            .bind(artifact_id)
            .bind(l)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn version_from_row(conn: &mut sqlx::AnyConnection, row: &AnyRow) -> Result<Version> {
    let id: String = row.try_get("id")?;
    let provides = sqlx::query("SELECT ref_kind, ref_id FROM version_provides WHERE version_id = $1 ORDER BY ref_kind, ref_id")
        .bind(&id)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("ref_kind")?, r.try_get("ref_id")?)))
        .collect::<Result<Vec<_>>>()?;
    let requires = sqlx::query(
        "SELECT ref_kind, ref_id, from_element, declared FROM version_requires WHERE version_id = $1 ORDER BY ref_kind, ref_id, from_element",
    )
    .bind(&id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        Ok(Requirement {
            kind: r.try_get("ref_kind")?,
            id: r.try_get("ref_id")?,
            from: r.try_get("from_element")?,
            declared: r.try_get::<i64, _>("declared")? != 0,
        })
    })
    .collect::<Result<Vec<_>>>()?;
    Ok(Version {
        id,
        artifact_id: row.try_get("artifact_id")?,
        artifact_key: row.try_get("artifact_key")?,
        kind: row.try_get("kind")?,
        number: row.try_get("number")?,
        state: row.try_get("state")?,
        version_tag: row.try_get("version_tag")?,
        sha256: row.try_get("sha256")?,
        size: row.try_get("size")?,
        payload_key: row.try_get("payload_key")?,
        content_type: row.try_get("content_type")?,
        findings: row.try_get("findings")?,
        errors: row.try_get("errors")?,
        revision: row.try_get("revision")?,
        created_by: row.try_get("created_by")?,
        created_at: rfc3339(row.try_get("created_at")?),
        updated_at: rfc3339(row.try_get("updated_at")?),
        published_at: row.try_get::<Option<i64>, _>("published_at")?.map(rfc3339),
        provides,
        requires,
    })
}

const VERSION_SELECT: &str =
    "SELECT v.*, a.artifact_key, a.kind FROM artifact_versions v JOIN artifacts a ON a.id = v.artifact_id";

async fn load_version(
    conn: &mut sqlx::AnyConnection,
    tenant_id: &str,
    key: &str,
    number: i64,
) -> Result<Version> {
    let row = sqlx::query(&format!(
        "{VERSION_SELECT} WHERE v.tenant_id = $1 AND a.artifact_key = $2 AND v.number = $3"
    ))
    .bind(tenant_id)
    .bind(key)
    .bind(number)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| Error::not_found("version"))?;
    version_from_row(conn, &row).await
}

async fn write_content(tx: &mut Tx, tenant_id: &str, version_id: &str, c: &Content) -> Result<()> {
    sqlx::query("DELETE FROM version_provides WHERE version_id = $1")
        .bind(version_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM version_requires WHERE version_id = $1 AND declared = 0")
        .bind(version_id)
        .execute(&mut **tx)
        .await?;
    for (kind, id) in &c.provides {
        sqlx::query("INSERT INTO version_provides (tenant_id, version_id, ref_kind, ref_id) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
            .bind(tenant_id)
            .bind(version_id)
            .bind(kind)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    for (kind, id, from) in &c.requires {
        sqlx::query(
            "INSERT INTO version_requires (tenant_id, version_id, ref_kind, ref_id, from_element, declared) VALUES ($1, $2, $3, $4, $5, 0) ON CONFLICT DO NOTHING",
        )
        .bind(tenant_id)
        .bind(version_id)
        .bind(kind)
        .bind(id)
        .bind(from)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl Db {
    pub async fn create_artifact(
        &self,
        actor: &Actor,
        tenant_id: &str,
        new: &NewArtifact,
    ) -> Result<Artifact> {
        let mut tx = self.begin().await?;
        let id = new_id();
        let now = now_ms();
        let done = sqlx::query(
            "INSERT INTO artifacts (id, tenant_id, artifact_key, kind, name, description, created_by, revision, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $8) ON CONFLICT (tenant_id, artifact_key) DO NOTHING",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(&new.key)
        .bind(&new.kind)
        .bind(&new.name)
        .bind(&new.description)
        .bind(&actor.name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(
                Error::conflict(format!("artifact {} already exists", new.key))
                    .with_field("key")
                    .into(),
            );
        }
        set_labels(&mut tx, tenant_id, &id, &new.labels).await?;
        let a = load_artifact(&mut tx, tenant_id, &new.key).await?;
        append(
            &mut tx,
            actor
                .did("artifact.create", &format!("artifact:{}", new.key))
                .detail(serde_json::json!({"kind": new.kind})),
        )
        .await?;
        tx.commit().await?;
        Ok(a)
    }

    pub async fn get_artifact(&self, tenant_id: &str, key: &str) -> Result<Artifact> {
        let mut conn = self.pool().acquire().await?;
        load_artifact(&mut conn, tenant_id, key).await
    }

    pub async fn list_artifacts(
        &self,
        tenant_id: &str,
        f: &ArtifactFilter,
    ) -> Result<Page<Artifact>> {
        let limit = page_limit(f.limit)?;
        let after = f
            .cursor
            .as_deref()
            .map(cursor::decode)
            .transpose()?
            .unwrap_or_default();
        let text = f
            .text
            .as_deref()
            .map(|t| format!("%{}%", t.to_lowercase().replace(['%', '_'], "")))
            .unwrap_or_default();
        let rows = sqlx::query(&format!(
            "{ARTIFACT_SELECT} WHERE a.tenant_id = $1 AND a.artifact_key > $2 \
             AND ($3 = '' OR a.kind = $3) \
             AND ($4 = '' OR EXISTS (SELECT 1 FROM artifact_labels l WHERE l.artifact_id = a.id AND l.label = $4)) \
             AND ($5 = '' OR EXISTS (SELECT 1 FROM artifact_versions v WHERE v.artifact_id = a.id AND v.state = $5)) \
             AND ($6 = '' OR LOWER(a.artifact_key) LIKE $6 OR LOWER(a.name) LIKE $6 OR LOWER(a.description) LIKE $6) \
             ORDER BY a.artifact_key LIMIT $7"
        ))
        .bind(tenant_id)
        .bind(after)
        .bind(f.kind.clone().unwrap_or_default())
        .bind(f.label.clone().unwrap_or_default())
        .bind(f.state.clone().unwrap_or_default())
        .bind(text)
        .bind(limit + 1)
        .fetch_all(self.pool())
        .await?;
        let items = rows.iter().map(artifact).collect::<Result<Vec<_>>>()?;
        Ok(paginate(items, limit, |a| a.key.clone()))
    }

    pub async fn update_artifact(
        &self,
        actor: &Actor,
        tenant_id: &str,
        key: &str,
        expected_revision: Option<i64>,
        patch: &ArtifactPatch,
    ) -> Result<Artifact> {
        let mut tx = self.begin().await?;
        let current = load_artifact(&mut tx, tenant_id, key).await?;
        if expected_revision.is_some_and(|r| r != current.revision) {
            return Err(stale(current.revision).into());
        }
        sqlx::query("UPDATE artifacts SET name = $1, description = $2, revision = revision + 1, updated_at = $3 WHERE id = $4")
            .bind(patch.name.as_ref().unwrap_or(&current.name))
            .bind(patch.description.as_ref().unwrap_or(&current.description))
            .bind(now_ms())
            .bind(&current.id)
            .execute(&mut *tx)
            .await?;
        if let Some(labels) = &patch.labels {
            set_labels(&mut tx, tenant_id, &current.id, labels).await?;
        }
        let updated = load_artifact(&mut tx, tenant_id, key).await?;
        append(
            &mut tx,
            actor.did("artifact.update", &format!("artifact:{key}")),
        )
        .await?;
        tx.commit().await?;
        Ok(updated)
    }

    /// Deletes an artifact that has only drafts; returns their payload keys for cleanup.
    pub async fn delete_artifact(
        &self,
        actor: &Actor,
        tenant_id: &str,
        key: &str,
    ) -> Result<Vec<String>> {
        let mut tx = self.begin().await?;
        let a = load_artifact(&mut tx, tenant_id, key).await?;
        if let Some(n) = a.latest_published {
            return Err(Error::conflict(format!(
                "{key} has published version {n}; published versions are kept forever"
            ))
            .into());
        }
        let keys: Vec<String> =
            sqlx::query("SELECT payload_key FROM artifact_versions WHERE artifact_id = $1")
                .bind(&a.id)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.try_get("payload_key"))
                .collect::<Result<_, _>>()?;
        for table in ["version_provides", "version_requires"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE version_id IN (SELECT id FROM artifact_versions WHERE artifact_id = $1)"))
                .bind(&a.id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM artifact_versions WHERE artifact_id = $1")
            .bind(&a.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM artifact_labels WHERE artifact_id = $1")
            .bind(&a.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM artifacts WHERE id = $1")
            .bind(&a.id)
            .execute(&mut *tx)
            .await?;
        append(
            &mut tx,
            actor.did("artifact.delete", &format!("artifact:{key}")),
        )
        .await?;
        tx.commit().await?;
        Ok(keys)
    }

    /// Adds a version with `content` (whose payload is already stored). If the latest version
    /// has byte-identical content, returns it instead (`false`: nothing created).
    pub async fn create_version(
        &self,
        actor: &Actor,
        tenant_id: &str,
        key: &str,
        content: &Content,
        version_tag: &str,
    ) -> Result<(Version, bool)> {
        let mut tx = self.begin().await?;
        let a = load_artifact(&mut tx, tenant_id, key).await?;
        if let Some(latest) = a.latest_version {
            let same: Option<AnyRow> = sqlx::query(
                "SELECT sha256 FROM artifact_versions WHERE artifact_id = $1 AND number = $2",
            )
            .bind(&a.id)
            .bind(latest)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = same {
                if row.try_get::<String, _>("sha256")? == content.sha256 {
                    let v = load_version(&mut tx, tenant_id, key, latest).await?;
                    tx.commit().await?;
                    return Ok((v, false));
                }
            }
        }
        let number = a.latest_version.unwrap_or(0) + 1;
        let id = new_id();
        let now = now_ms();
        sqlx::query(
            "INSERT INTO artifact_versions (id, tenant_id, artifact_id, number, state, version_tag, sha256, size, payload_key, content_type, findings, errors, revision, created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, 'draft', $5, $6, $7, $8, $9, $10, $11, 1, $12, $13, $13)",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(&a.id)
        .bind(number)
        .bind(version_tag)
        .bind(&content.sha256)
        .bind(content.size)
        .bind(&content.payload_key)
        .bind(&content.content_type)
        .bind(&content.findings)
        .bind(content.errors)
        .bind(&actor.name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        write_content(&mut tx, tenant_id, &id, content).await?;
        let v = load_version(&mut tx, tenant_id, key, number).await?;
        append(
            &mut tx,
            actor
                .did("version.create", &format!("artifact:{key}"))
                .ref_name(&number.to_string())
                .detail(serde_json::json!({"sha256": content.sha256, "errors": content.errors})),
        )
        .await?;
        tx.commit().await?;
        Ok((v, true))
    }

    pub async fn get_version(&self, tenant_id: &str, key: &str, number: i64) -> Result<Version> {
        let mut conn = self.pool().acquire().await?;
        load_version(&mut conn, tenant_id, key, number).await
    }

    pub async fn list_versions(&self, tenant_id: &str, key: &str) -> Result<Vec<Version>> {
        let mut conn = self.pool().acquire().await?;
        let a = load_artifact(&mut conn, tenant_id, key).await?;
        let rows = sqlx::query(&format!(
            "{VERSION_SELECT} WHERE v.artifact_id = $1 ORDER BY v.number"
        ))
        .bind(&a.id)
        .fetch_all(&mut *conn)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(version_from_row(&mut conn, row).await?);
        }
        Ok(out)
    }

    /// Replaces a draft's content. Returns the new version and the payload key it no longer uses.
    pub async fn update_draft_content(
        &self,
        actor: &Actor,
        tenant_id: &str,
        key: &str,
        number: i64,
        expected_revision: Option<i64>,
        content: &Content,
    ) -> Result<(Version, String)> {
        let mut tx = self.begin().await?;
        let v = load_version(&mut tx, tenant_id, key, number).await?;
        if v.state != DRAFT {
            return Err(immutable(key, number, &v.state).into());
        }
        if expected_revision.is_some_and(|r| r != v.revision) {
            return Err(stale(v.revision).into());
        }
        sqlx::query(
            "UPDATE artifact_versions SET sha256 = $1, size = $2, payload_key = $3, content_type = $4, findings = $5, errors = $6, revision = revision + 1, updated_at = $7 WHERE id = $8 AND state = 'draft'",
        )
        .bind(&content.sha256)
        .bind(content.size)
        .bind(&content.payload_key)
        .bind(&content.content_type)
        .bind(&content.findings)
        .bind(content.errors)
        .bind(now_ms())
        .bind(&v.id)
        .execute(&mut *tx)
        .await?;
        write_content(&mut tx, tenant_id, &v.id, content).await?;
        let updated = load_version(&mut tx, tenant_id, key, number).await?;
        append(
            &mut tx,
            actor
                .did("version.update", &format!("artifact:{key}"))
                .ref_name(&number.to_string())
                .detail(serde_json::json!({"sha256": content.sha256, "errors": content.errors})),
        )
        .await?;
        tx.commit().await?;
        Ok((updated, v.payload_key))
    }

    /// Changes a draft's tag and declared dependencies (`None`: unchanged).
    pub async fn update_draft_meta(
        &self,
        actor: &Actor,
        tenant_id: &str,
        key: &str,
        number: i64,
        expected_revision: Option<i64>,
        meta: &VersionMeta<'_>,
    ) -> Result<Version> {
        let VersionMeta {
            version_tag,
            declared,
        } = *meta;
        let mut tx = self.begin().await?;
        let v = load_version(&mut tx, tenant_id, key, number).await?;
        if v.state != DRAFT {
            return Err(immutable(key, number, &v.state).into());
        }
        if expected_revision.is_some_and(|r| r != v.revision) {
            return Err(stale(v.revision).into());
        }
        sqlx::query("UPDATE artifact_versions SET version_tag = $1, revision = revision + 1, updated_at = $2 WHERE id = $3")
            .bind(version_tag.unwrap_or(&v.version_tag))
            .bind(now_ms())
            .bind(&v.id)
            .execute(&mut *tx)
            .await?;
        if let Some(declared) = declared {
            sqlx::query("DELETE FROM version_requires WHERE version_id = $1 AND declared = 1")
                .bind(&v.id)
                .execute(&mut *tx)
                .await?;
            for (kind, id) in declared {
                sqlx::query(
                    "INSERT INTO version_requires (tenant_id, version_id, ref_kind, ref_id, from_element, declared) VALUES ($1, $2, $3, $4, 'declared', 1) ON CONFLICT DO NOTHING",
                )
                .bind(tenant_id)
                .bind(&v.id)
                .bind(kind)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
        }
        let updated = load_version(&mut tx, tenant_id, key, number).await?;
        append(
            &mut tx,
            actor
                .did("version.update", &format!("artifact:{key}"))
                .ref_name(&number.to_string()),
        )
        .await?;
        tx.commit().await?;
        Ok(updated)
    }

    /// Deletes a draft; returns its payload key for cleanup.
    pub async fn delete_draft(
        &self,
        actor: &Actor,
        tenant_id: &str,
        key: &str,
        number: i64,
        expected_revision: Option<i64>,
    ) -> Result<String> {
        let mut tx = self.begin().await?;
        let v = load_version(&mut tx, tenant_id, key, number).await?;
        if v.state != DRAFT {
            return Err(immutable(key, number, &v.state).into());
        }
        if expected_revision.is_some_and(|r| r != v.revision) {
            return Err(stale(v.revision).into());
        }
        sqlx::query("DELETE FROM version_provides WHERE version_id = $1")
            .bind(&v.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM version_requires WHERE version_id = $1")
            .bind(&v.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM artifact_versions WHERE id = $1 AND state = 'draft'")
            .bind(&v.id)
            .execute(&mut *tx)
            .await?;
        append(
            &mut tx,
            actor
                .did("version.delete", &format!("artifact:{key}"))
                .ref_name(&number.to_string()),
        )
        .await?;
        tx.commit().await?;
        Ok(v.payload_key)
    }

    /// Published → deprecated (still immutable; kept; excluded from dependency resolution).
    pub async fn deprecate_version(
        &self,
        actor: &Actor,
        tenant_id: &str,
        key: &str,
        number: i64,
    ) -> Result<Version> {
        let mut tx = self.begin().await?;
        let v = load_version(&mut tx, tenant_id, key, number).await?;
        if v.state != PUBLISHED {
            return Err(Error::conflict(format!(
                "only a published version can be deprecated; version {number} is {}",
                v.state
            ))
            .into());
        }
        sqlx::query(
            "UPDATE artifact_versions SET state = 'deprecated', updated_at = $1 WHERE id = $2",
        )
        .bind(now_ms())
        .bind(&v.id)
        .execute(&mut *tx)
        .await?;
        let updated = load_version(&mut tx, tenant_id, key, number).await?;
        append(
            &mut tx,
            actor
                .did("version.deprecate", &format!("artifact:{key}"))
                .ref_name(&number.to_string()),
        )
        .await?;
        tx.commit().await?;
        Ok(updated)
    }

    /// The newest published version providing (kind, id), if any.
    pub async fn provider_of(
        &self,
        tenant_id: &str,
        kind: &str,
        id: &str,
    ) -> Result<Option<Version>> {
        let mut conn = self.pool().acquire().await?;
        let row = sqlx::query(&format!(
            "{VERSION_SELECT} JOIN version_provides p ON p.version_id = v.id \
             WHERE v.tenant_id = $1 AND p.ref_kind = $2 AND p.ref_id = $3 AND v.state = 'published' \
             ORDER BY v.published_at DESC, v.number DESC LIMIT 1"
        ))
        .bind(tenant_id)
        .bind(kind)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
        match row {
            Some(r) => Ok(Some(version_from_row(&mut conn, &r).await?)),
            None => Ok(None),
        }
    }

    /// Every payload key a version row points at (for orphan cleanup).
    pub async fn referenced_payloads(
        &self,
        tenant_id: &str,
    ) -> Result<std::collections::HashSet<String>> {
        let rows = sqlx::query("SELECT payload_key FROM artifact_versions WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|r| Ok(r.try_get("payload_key")?)).collect()
    }

    pub async fn payload_referenced(&self, tenant_id: &str, payload_key: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 AS one FROM artifact_versions WHERE tenant_id = $1 AND payload_key = $2 LIMIT 1")
            .bind(tenant_id)
            .bind(payload_key)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.is_some())
    }

    pub async fn all_tenant_ids(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM tenants ORDER BY id")
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }
}
