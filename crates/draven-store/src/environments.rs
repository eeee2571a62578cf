//! Environments of a tenant (stage, demo, prod, …) and whether each is protected.
//!
//! Registry publications and deploys both target these. Updates are optimistic: every change
//! bumps `revision`, which the API exposes as the ETag and checks against `If-Match`.

use crate::audit::{append, Actor};
use crate::{flag, new_id, now_ms, rfc3339, Db, Result};
use draven_core::{Error, ErrorCode, Slug};
use sqlx::Row;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Environment {
    pub id: String,
    pub name: String,
    pub description: String,
    pub protected: bool,
    pub revision: i64,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Clone, Debug, Default)]
pub struct EnvironmentPatch {
    pub description: Option<String>,
    pub protected: Option<bool>,
}

fn environment(row: &sqlx::any::AnyRow) -> Result<Environment> {
    Ok(Environment {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        protected: flag(row, "protected")?,
        revision: row.try_get("revision")?,
        created_at: rfc3339(row.try_get("created_at")?),
        updated_at: rfc3339(row.try_get("updated_at")?),
    })
}

fn stale(current: i64) -> Error {
    Error::new(
        ErrorCode::PreconditionFailed,
        format!("the environment changed (now at revision {current}); re-read it and retry"),
    )
}

impl Db {
    pub async fn create_environment(
        &self,
        actor: &Actor,
        tenant_id: &str,
        name: &Slug,
        description: &str,
        protected: bool,
    ) -> Result<Environment> {
        let mut tx = self.begin().await?;
        let id = new_id();
        let now = now_ms();
        let done = sqlx::query(
            "INSERT INTO environments (id, tenant_id, name, description, protected, revision, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 1, $6, $6) ON CONFLICT (tenant_id, name) DO NOTHING",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(name.as_str())
        .bind(description)
        .bind(protected as i64)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(
                Error::conflict(format!("environment {name} already exists"))
                    .with_field("name")
                    .into(),
            );
        }
        let row = sqlx::query("SELECT * FROM environments WHERE id = $1")
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        let e = environment(&row)?;
        append(
            &mut tx,
            actor
                .did("environment.create", &format!("environment:{name}"))
                .detail(serde_json::json!({"protected": protected})),
        )
        .await?;
        tx.commit().await?;
        Ok(e)
    }

    pub async fn list_environments(&self, tenant_id: &str) -> Result<Vec<Environment>> {
        let rows = sqlx::query("SELECT * FROM environments WHERE tenant_id = $1 ORDER BY name")
            .bind(tenant_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(environment).collect()
    }

    pub async fn get_environment(&self, tenant_id: &str, name: &str) -> Result<Environment> {
        let row = sqlx::query("SELECT * FROM environments WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| Error::not_found("environment"))?;
        environment(&row)
    }

    /// Applies `patch` if the stored revision is `expected_revision` (when given); 412 otherwise.
    pub async fn update_environment(
        &self,
        actor: &Actor,
        tenant_id: &str,
        name: &str,
        expected_revision: Option<i64>,
        patch: &EnvironmentPatch,
    ) -> Result<Environment> {
        let mut tx = self.begin().await?;
        let row = sqlx::query("SELECT * FROM environments WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| Error::not_found("environment"))?;
        let current = environment(&row)?;
        if expected_revision.is_some_and(|r| r != current.revision) {
            return Err(stale(current.revision).into());
        }
        let description = patch
            .description
            .clone()
            .unwrap_or(current.description.clone());
        let protected = patch.protected.unwrap_or(current.protected);
        sqlx::query(
            "UPDATE environments SET description = $1, protected = $2, revision = revision + 1, updated_at = $3 WHERE id = $4 AND revision = $5",
        )
        .bind(&description)
        .bind(protected as i64)
        .bind(now_ms())
        .bind(&current.id)
        .bind(current.revision)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query("SELECT * FROM environments WHERE id = $1")
            .bind(&current.id)
            .fetch_one(&mut *tx)
            .await?;
        let updated = environment(&row)?;
        append(
            &mut tx,
            actor
                .did("environment.update", &format!("environment:{name}"))
                .detail(serde_json::json!({
                    "protected": {"from": current.protected, "to": updated.protected},
                    "revision": updated.revision,
                })),
        )
        .await?;
        tx.commit().await?;
        Ok(updated)
    }

    pub async fn delete_environment(
        &self,
        actor: &Actor,
        tenant_id: &str,
        name: &str,
        expected_revision: Option<i64>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let row =
            sqlx::query("SELECT revision FROM environments WHERE tenant_id = $1 AND name = $2")
                .bind(tenant_id)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| Error::not_found("environment"))?;
        let revision: i64 = row.try_get("revision")?;
        if expected_revision.is_some_and(|r| r != revision) {
            return Err(stale(revision).into());
        }
        sqlx::query("DELETE FROM environments WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        append(
            &mut tx,
            actor.did("environment.delete", &format!("environment:{name}")),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
