//! Secrets: write-only values, stored only as envelopes (see [`crate::crypto`]).
//!
//! Listing and reading return metadata; the plaintext leaves this module only through
//! [`Db::reveal_secret`], which the API never exposes (providers and executors call it).

use crate::audit::{append, Actor};
use crate::crypto::{open_envelope, seal_envelope, Envelope, KeyEncryptionKey};
use crate::{cursor, new_id, now_ms, page_limit, paginate, rfc3339, Db, Page, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use draven_core::{Error, Slug};
use sqlx::Row;

pub const MAX_SECRET_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretMeta {
    pub name: String,
    pub description: String,
    pub version: i64,
    pub key_id: String,
    pub created_at: String,
    pub updated_at: String,
}

fn aad(tenant_id: &str, name: &str) -> Vec<u8> {
    format!("draven-secret:{tenant_id}/{name}").into_bytes()
}

fn meta(row: &sqlx::any::AnyRow) -> Result<SecretMeta> {
    Ok(SecretMeta {
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        version: row.try_get("version")?,
        key_id: row.try_get("key_id")?,
        created_at: rfc3339(row.try_get("created_at")?),
        updated_at: rfc3339(row.try_get("updated_at")?),
    })
}

impl Db {
    /// Creates or replaces a secret's value (new version). Returns its metadata and whether it
    /// was created.
    pub async fn put_secret(
        &self,
        actor: &Actor,
        kek: &dyn KeyEncryptionKey,
        tenant_id: &str,
        name: &Slug,
        description: &str,
        value: &[u8],
    ) -> Result<(SecretMeta, bool)> {
        if value.len() > MAX_SECRET_BYTES {
            return Err(Error::invalid(
                "value",
                format!("a secret value may be at most {MAX_SECRET_BYTES} bytes"),
            )
            .into());
        }
        let env = seal_envelope(kek, value, &aad(tenant_id, name.as_str())).await?;
        let now = now_ms();
        let mut tx = self.begin().await?;
        let existing =
            sqlx::query("SELECT version FROM secrets WHERE tenant_id = $1 AND name = $2")
                .bind(tenant_id)
                .bind(name.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let created = existing.is_none();
        match existing {
            None => {
                sqlx::query(
                    "INSERT INTO secrets (id, tenant_id, name, description, key_id, wrapped_key, ciphertext, version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $8)",
                )
                .bind(new_id())
                .bind(tenant_id)
                .bind(name.as_str())
                .bind(description)
                .bind(&env.key_id)
                .bind(B64.encode(&env.wrapped_key))
                .bind(B64.encode(&env.ciphertext))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            Some(_) => {
                sqlx::query(
                    "UPDATE secrets SET description = $1, key_id = $2, wrapped_key = $3, ciphertext = $4, version = version + 1, updated_at = $5 WHERE tenant_id = $6 AND name = $7",
                )
                .bind(description)
                .bind(&env.key_id)
                .bind(B64.encode(&env.wrapped_key))
                .bind(B64.encode(&env.ciphertext))
                .bind(now)
                .bind(tenant_id)
                .bind(name.as_str())
                .execute(&mut *tx)
                .await?;
            }
        }
        let row = sqlx::query("SELECT * FROM secrets WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name.as_str())
            .fetch_one(&mut *tx)
            .await?;
        let m = meta(&row)?;
        // The audit record names the secret and its version, never the value.
        append(
            &mut tx,
            actor
                .did(
                    if created {
                        "secret.create"
                    } else {
                        "secret.update"
                    },
                    &format!("secret:{name}"),
                )
                .detail(serde_json::json!({"version": m.version})),
        )
        .await?;
        tx.commit().await?;
        Ok((m, created))
    }

    pub async fn secret_meta(&self, tenant_id: &str, name: &str) -> Result<SecretMeta> {
        let row = sqlx::query("SELECT * FROM secrets WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| Error::not_found("secret"))?;
        meta(&row)
    }

    pub async fn list_secrets(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<SecretMeta>> {
        let limit = page_limit(limit)?;
        let after = after.map(cursor::decode).transpose()?.unwrap_or_default();
        let rows = sqlx::query(
            "SELECT * FROM secrets WHERE tenant_id = $1 AND name > $2 ORDER BY name LIMIT $3",
        )
        .bind(tenant_id)
        .bind(after)
        .bind(limit + 1)
        .fetch_all(self.pool())
        .await?;
        let items = rows.iter().map(meta).collect::<Result<Vec<_>>>()?;
        Ok(paginate(items, limit, |m| m.name.clone()))
    }

    pub async fn delete_secret(&self, actor: &Actor, tenant_id: &str, name: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("DELETE FROM secrets WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("secret").into());
        }
        append(
            &mut tx,
            actor.did("secret.delete", &format!("secret:{name}")),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The plaintext, for internal consumers only (provider credentials, function env).
    pub async fn reveal_secret(
        &self,
        kek: &dyn KeyEncryptionKey,
        tenant_id: &str,
        name: &str,
    ) -> Result<Vec<u8>> {
        let row = sqlx::query("SELECT key_id, wrapped_key, ciphertext FROM secrets WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| Error::not_found("secret"))?;
        let decode = |col: &str| -> Result<Vec<u8>> {
            let text: String = row.try_get(col)?;
            B64.decode(text).map_err(|_| {
                crate::StoreError::Corrupt(format!("secret {name}: {col} is not base64"))
            })
        };
        let env = Envelope {
            key_id: row.try_get("key_id")?,
            wrapped_key: decode("wrapped_key")?,
            ciphertext: decode("ciphertext")?,
        };
        Ok(open_envelope(kek, &env, &aad(tenant_id, name)).await?)
    }
}
