//! Browser sessions of the web UI: a random id in an HttpOnly cookie, stored here only as its
//! SHA-256, with the session's CSRF token and an absolute expiry.
//!
//! A session resolves to the same [`Principal`] a token of its user would (the user's grants,
//! no token scopes), so the UI is held to exactly the API's rules. Signing in and out is
//! audited; a disabled user's sessions stop working at once. This module never sees a
//! password (that is `identity::check_password`) nor any HTTP.

use crate::audit::{append, Actor};
use crate::identity::hash_token;
use crate::{flag, now_ms, Db, Result};
use draven_core::Principal;
use rand::Rng;
use sqlx::Row;

/// A new session: the cookie value (shown once, to the browser) and its CSRF token.
#[derive(Clone, Debug)]
pub struct NewSession {
    pub id: String,
    pub csrf_token: String,
    pub expires_at_ms: i64,
}

/// A live session and whom it belongs to.
#[derive(Clone, Debug)]
pub struct Session {
    pub principal: Principal,
    pub csrf_token: String,
    pub expires_at_ms: i64,
}

fn random_secret() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..43)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

impl Db {
    /// Opens a session for a user who just proved their password; audited as `session.create`.
    pub async fn create_session(
        &self,
        actor: &Actor,
        tenant_id: &str,
        user_id: &str,
        ttl_ms: i64,
    ) -> Result<NewSession> {
        let id = random_secret();
        let csrf_token = random_secret();
        let now = now_ms();
        let expires_at_ms = now + ttl_ms.max(1);
        let mut tx = self.begin().await?;
        // Expired sessions leave whenever someone signs in: the table stays small.
        sqlx::query("DELETE FROM ui_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO ui_sessions (id_hash, tenant_id, user_id, csrf_token, client_addr, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(hash_token(&id))
        .bind(tenant_id)
        .bind(user_id)
        .bind(&csrf_token)
        .bind(actor.client_addr.clone().unwrap_or_default())
        .bind(now)
        .bind(expires_at_ms)
        .execute(&mut *tx)
        .await?;
        append(
            &mut tx,
            actor
                .did("session.create", &format!("user:{user_id}"))
                .detail(serde_json::json!({"expires_at_ms": expires_at_ms})),
        )
        .await?;
        tx.commit().await?;
        Ok(NewSession {
            id,
            csrf_token,
            expires_at_ms,
        })
    }

    /// The live session behind a cookie value: `None` when unknown, expired or its user is
    /// disabled.
    pub async fn session(&self, id: &str) -> Result<Option<Session>> {
        let row = sqlx::query(
            "SELECT s.csrf_token, s.expires_at, u.id AS user_id, u.username, u.system_admin, u.disabled, t.id AS tenant_id, t.name AS tenant
             FROM ui_sessions s JOIN users u ON u.id = s.user_id JOIN tenants t ON t.id = s.tenant_id
             WHERE s.id_hash = $1",
        )
        .bind(hash_token(id))
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let expires_at_ms: i64 = row.try_get("expires_at")?;
        if expires_at_ms <= now_ms() || flag(&row, "disabled")? {
            return Ok(None);
        }
        let user_id: String = row.try_get("user_id")?;
        let grants = self.grants_of(&user_id).await?;
        Ok(Some(Session {
            principal: Principal {
                tenant_id: row.try_get("tenant_id")?,
                tenant: row.try_get("tenant")?,
                user_id,
                username: row.try_get("username")?,
                system_admin: flag(&row, "system_admin")?,
                grants,
                token_scopes: None,
                token_id: None,
            },
            csrf_token: row.try_get("csrf_token")?,
            expires_at_ms,
        }))
    }

    /// The tenant a user belongs to (after `check_password`, which names it by its name).
    pub async fn get_user_tenant(&self, user_id: &str) -> Result<String> {
        let row = sqlx::query("SELECT tenant_id FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| draven_core::Error::not_found("user"))?;
        Ok(row.try_get("tenant_id")?)
    }

    /// Ends a session (sign-out); audited as `session.delete` when there was one.
    pub async fn delete_session(&self, actor: &Actor, id: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        let row = sqlx::query("SELECT user_id FROM ui_sessions WHERE id_hash = $1")
            .bind(hash_token(id))
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else { return Ok(false) };
        let user_id: String = row.try_get("user_id")?;
        sqlx::query("DELETE FROM ui_sessions WHERE id_hash = $1")
            .bind(hash_token(id))
            .execute(&mut *tx)
            .await?;
        append(
            &mut tx,
            actor.did("session.delete", &format!("user:{user_id}")),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}
