//! Function definitions (SPEC F1): one JSON document per (tenant, name), with a revision for
//! `If-Match`. The document is validated by `draven-functions` before it gets here; the store
//! keeps it as text. Every change is audited.

use crate::audit::{append, Actor};
use crate::{new_id, now_ms, rfc3339, Db, Result};
use draven_core::{Error, ErrorCode};
use sqlx::Row;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredFunction {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// The definition as JSON text.
    pub spec: String,
    pub revision: i64,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
}

fn stored(row: &sqlx::any::AnyRow) -> Result<StoredFunction> {
    Ok(StoredFunction {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        spec: row.try_get("spec")?,
        revision: row.try_get("revision")?,
        created_by: row.try_get("created_by")?,
        created_at: rfc3339(row.try_get("created_at")?),
        updated_at: rfc3339(row.try_get("updated_at")?),
    })
}

/// (tenant id, name, revision) of every definition: what a server compares to notice changes
/// made through another server.
pub type FunctionRevision = (String, String, i64);

impl Db {
    /// Creates the definition, or replaces it when `replace` is set (then `expected_revision`,
    /// when given, must match: 412 otherwise). Returns the stored row and whether it was new.
    pub async fn put_function(
        &self,
        actor: &Actor,
        tenant_id: &str,
        name: &str,
        spec: &str,
        expected_revision: Option<i64>,
    ) -> Result<(StoredFunction, bool)> {
        let mut tx = self.begin().await?;
        let now = now_ms();
        let current =
            sqlx::query("SELECT revision FROM functions WHERE tenant_id = $1 AND name = $2")
                .bind(tenant_id)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get::<i64, _>("revision"))
                .transpose()?;
        let created = match (current, expected_revision) {
            (Some(cur), Some(exp)) if cur != exp => {
                return Err(Error::new(
                    ErrorCode::PreconditionFailed,
                    format!(
                        "function {name} changed (now at revision {cur}); re-read it and retry"
                    ),
                )
                .into())
            }
            (None, Some(_)) => return Err(Error::not_found("function").into()),
            (Some(_), _) => {
                sqlx::query("UPDATE functions SET spec = $1, revision = revision + 1, updated_at = $2 WHERE tenant_id = $3 AND name = $4")
                    .bind(spec)
                    .bind(now)
                    .bind(tenant_id)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                false
            }
            (None, None) => {
                sqlx::query("INSERT INTO functions (id, tenant_id, name, spec, revision, created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, 1, $5, $6, $6)")
                    .bind(new_id())
                    .bind(tenant_id)
                    .bind(name)
                    .bind(spec)
                    .bind(&actor.name)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                true
            }
        };
        let row = sqlx::query("SELECT * FROM functions WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        let f = stored(&row)?;
        let action = if created {
            "function.create"
        } else {
            "function.update"
        };
        append(
            &mut tx,
            actor
                .did(action, &format!("function:{name}"))
                .detail(serde_json::json!({"revision": f.revision})),
        )
        .await?;
        tx.commit().await?;
        Ok((f, created))
    }

    pub async fn get_function(&self, tenant_id: &str, name: &str) -> Result<StoredFunction> {
        let row = sqlx::query("SELECT * FROM functions WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| Error::not_found("function"))?;
        stored(&row)
    }

    pub async fn list_functions(&self, tenant_id: &str) -> Result<Vec<StoredFunction>> {
        let rows = sqlx::query("SELECT * FROM functions WHERE tenant_id = $1 ORDER BY name")
            .bind(tenant_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(stored).collect()
    }

    pub async fn delete_function(&self, actor: &Actor, tenant_id: &str, name: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("DELETE FROM functions WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("function").into());
        }
        append(
            &mut tx,
            actor.did("function.delete", &format!("function:{name}")),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A tenant's name (functions' metrics are labelled with it).
    pub async fn tenant_name(&self, tenant_id: &str) -> Result<String> {
        let row = sqlx::query("SELECT name FROM tenants WHERE id = $1")
            .bind(tenant_id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| Error::not_found("tenant"))?;
        Ok(row.try_get("name")?)
    }

    /// Every definition's revision, across tenants.
    pub async fn function_revisions(&self) -> Result<Vec<FunctionRevision>> {
        let rows = sqlx::query("SELECT tenant_id, name, revision FROM functions")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("tenant_id")?,
                    r.try_get("name")?,
                    r.try_get("revision")?,
                ))
            })
            .collect()
    }
}
