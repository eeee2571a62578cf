//! Stored outcomes of creating requests sent with an `Idempotency-Key`.
//!
//! The first request with a key claims it (a row without a status); when it completes, its
//! response is stored. A repeat with the same request gets the stored response; a repeat with a
//! different request is refused; a repeat while the first is still running is told so. Keys are
//! per tenant and principal, and expire after a TTL.

use crate::{now_ms, Db, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sqlx::Row;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub location: Option<String>,
    pub body: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key is ours: run the request, then `complete` or `release`.
    Claimed,
    Replay(StoredResponse),
    /// Same key, different request.
    Mismatch,
    /// Same key and request, still running.
    InFlight,
}

/// Identifies one key.
#[derive(Clone, Debug)]
pub struct IdempotencyKey<'a> {
    pub tenant_id: &'a str,
    pub principal: &'a str,
    pub key: &'a str,
}

impl Db {
    pub async fn claim_idempotency_key(
        &self,
        k: &IdempotencyKey<'_>,
        method: &str,
        path: &str,
        request_hash: &str,
        ttl_ms: i64,
    ) -> Result<Claim> {
        let now = now_ms();
        // An expired key is forgotten before anything else.
        sqlx::query("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND principal = $2 AND idem_key = $3 AND created_at < $4")
            .bind(k.tenant_id)
            .bind(k.principal)
            .bind(k.key)
            .bind(now - ttl_ms)
            .execute(self.pool())
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (tenant_id, principal, idem_key, method, path, request_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, principal, idem_key) DO NOTHING",
        )
        .bind(k.tenant_id)
        .bind(k.principal)
        .bind(k.key)
        .bind(method)
        .bind(path)
        .bind(request_hash)
        .bind(now)
        .execute(self.pool())
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(Claim::Claimed);
        }
        let row = sqlx::query(
            "SELECT request_hash, status, content_type, location, body FROM idempotency_keys WHERE tenant_id = $1 AND principal = $2 AND idem_key = $3",
        )
        .bind(k.tenant_id)
        .bind(k.principal)
        .bind(k.key)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            // Released between our insert and select: try once more from the top.
            return Box::pin(self.claim_idempotency_key(k, method, path, request_hash, ttl_ms))
                .await;
        };
        if row.try_get::<String, _>("request_hash")? != request_hash {
            return Ok(Claim::Mismatch);
        }
        let Some(status) = row.try_get::<Option<i64>, _>("status")? else {
            return Ok(Claim::InFlight);
        };
        let body: String = row
            .try_get::<Option<String>, _>("body")?
            .unwrap_or_default();
        Ok(Claim::Replay(StoredResponse {
            status: status as u16,
            content_type: row.try_get("content_type")?,
            location: row.try_get("location")?,
            body: B64.decode(body).unwrap_or_default(),
        }))
    }

    pub async fn complete_idempotency_key(
        &self,
        k: &IdempotencyKey<'_>,
        response: &StoredResponse,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE idempotency_keys SET status = $1, content_type = $2, location = $3, body = $4 WHERE tenant_id = $5 AND principal = $6 AND idem_key = $7",
        )
        .bind(response.status as i64)
        .bind(&response.content_type)
        .bind(&response.location)
        .bind(B64.encode(&response.body))
        .bind(k.tenant_id)
        .bind(k.principal)
        .bind(k.key)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Forgets a claim whose request failed on our side (5xx), so the client may retry.
    pub async fn release_idempotency_key(&self, k: &IdempotencyKey<'_>) -> Result<()> {
        sqlx::query("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND principal = $2 AND idem_key = $3 AND status IS NULL")
            .bind(k.tenant_id)
            .bind(k.principal)
            .bind(k.key)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
