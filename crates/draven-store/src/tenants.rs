//! Tenants: the top of every ownership chain. Every other row carries a `tenant_id`.

use crate::audit::{append, Actor};
use crate::{cursor, new_id, now_ms, page_limit, paginate, rfc3339, Db, Page, Result};
use draven_core::{Error, Slug};
use sqlx::Row;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub display_name: String,
    pub created_at: String,
}

fn tenant(row: &sqlx::any::AnyRow) -> Result<Tenant> {
    Ok(Tenant {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        display_name: row.try_get("display_name")?,
        created_at: rfc3339(row.try_get("created_at")?),
    })
}

impl Db {
    pub async fn create_tenant(
        &self,
        actor: &Actor,
        name: &Slug,
        display_name: &str,
    ) -> Result<Tenant> {
        let mut tx = self.begin().await?;
        let t = create_tenant_in(&mut tx, actor, name, display_name).await?;
        tx.commit().await?;
        Ok(t)
    }

    pub async fn list_tenants(
        &self,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<Tenant>> {
        let limit = page_limit(limit)?;
        let after = after.map(cursor::decode).transpose()?.unwrap_or_default();
        let rows = sqlx::query("SELECT * FROM tenants WHERE name > $1 ORDER BY name LIMIT $2")
            .bind(after)
            .bind(limit + 1)
            .fetch_all(self.pool())
            .await?;
        let items = rows.iter().map(tenant).collect::<Result<Vec<_>>>()?;
        Ok(paginate(items, limit, |t| t.name.clone()))
    }

    pub async fn tenant_by_name(&self, name: &str) -> Result<Tenant> {
        let row = sqlx::query("SELECT * FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| Error::not_found("tenant"))?;
        tenant(&row)
    }
}

pub(crate) async fn create_tenant_in(
    tx: &mut crate::Tx,
    actor: &Actor,
    name: &Slug,
    display_name: &str,
) -> Result<Tenant> {
    let id = new_id();
    let display = if display_name.trim().is_empty() {
        name.as_str()
    } else {
        display_name.trim()
    };
    let inserted = sqlx::query("INSERT INTO tenants (id, name, display_name, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING")
        .bind(&id)
        .bind(name.as_str())
        .bind(display)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
    if inserted.rows_affected() == 0 {
        return Err(Error::conflict(format!("tenant {name} already exists"))
            .with_field("name")
            .into());
    }
    let row = sqlx::query("SELECT * FROM tenants WHERE id = $1")
        .bind(&id)
        .fetch_one(&mut **tx)
        .await?;
    let t = tenant(&row)?;
    let mut actor = actor.clone();
    actor.tenant_id = Some(t.id.clone());
    append(tx, actor.did("tenant.create", &format!("tenant:{name}"))).await?;
    Ok(t)
}
