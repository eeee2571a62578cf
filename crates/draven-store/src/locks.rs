//! Environment locks (SPEC D5): one running deploy per (project, environment), held as a lease.
//!
//! The holder renews the lease with its heartbeat; a lease that is not renewed expires, and the
//! next job takes the lock over (audited), so a crashed runner or server never holds an
//! environment forever. Taking a lock is one conditional upsert, correct under concurrency on
//! both backends: PostgreSQL re-checks the upsert's condition under the row lock, and SQLite has
//! one writer.

use crate::audit::{append, Actor};
use crate::{now_ms, rfc3339, Db, Result};
use draven_core::Error;
use sqlx::any::AnyRow;
use sqlx::Row;

/// Which lock: a tenant's (project, environment).
#[derive(Clone, Copy, Debug)]
pub struct LockKey<'a> {
    pub tenant_id: &'a str,
    pub project: &'a str,
    pub environment: &'a str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lock {
    pub project: String,
    pub environment: String,
    pub holder_job: String,
    /// The runner or server process holding it.
    pub holder: String,
    pub acquired_at: String,
    pub expires_at_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acquire {
    Acquired,
    /// Someone else holds a live lease.
    HeldBy(Lock),
}

fn lock(row: &AnyRow) -> Result<Lock> {
    Ok(Lock {
        project: row.try_get("project")?,
        environment: row.try_get("environment")?,
        holder_job: row.try_get("holder_job")?,
        holder: row.try_get("holder")?,
        acquired_at: rfc3339(row.try_get("acquired_at")?),
        expires_at_ms: row.try_get("expires_at")?,
    })
}

/// The conditional upsert that takes a free or expired lease (or renews `job`'s own), inside
/// the caller's transaction. `true` when `job` holds the lock afterwards.
pub(crate) async fn try_lock_in(
    tx: &mut crate::Tx,
    key: LockKey<'_>,
    job: &str,
    holder: &str,
    ttl_ms: i64,
) -> Result<bool> {
    let now = now_ms();
    let done = sqlx::query(
        "INSERT INTO environment_locks (tenant_id, project, environment, holder_job, holder, acquired_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (tenant_id, project, environment) DO UPDATE SET holder_job = excluded.holder_job, holder = excluded.holder, acquired_at = excluded.acquired_at, expires_at = excluded.expires_at \
         WHERE environment_locks.expires_at < $6 OR environment_locks.holder_job = excluded.holder_job",
    )
    .bind(key.tenant_id)
    .bind(key.project)
    .bind(key.environment)
    .bind(job)
    .bind(holder)
    .bind(now)
    .bind(now + ttl_ms)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

impl Db {
    /// Takes the lock for `job` (or renews it if `job` already holds it). An expired lease is
    /// taken over and the takeover audited.
    pub async fn acquire_environment_lock(
        &self,
        actor: &Actor,
        key: LockKey<'_>,
        job: &str,
        holder: &str,
        ttl_ms: i64,
    ) -> Result<Acquire> {
        let mut tx = self.begin().await?;
        let previous = self.current_lock_in(&mut tx, key).await?;
        if !try_lock_in(&mut tx, key, job, holder, ttl_ms).await? {
            let current = self
                .current_lock_in(&mut tx, key)
                .await?
                .ok_or_else(|| crate::StoreError::Corrupt("lock vanished".into()))?;
            tx.commit().await?;
            return Ok(Acquire::HeldBy(current));
        }
        let target = format!("environment:{}/{}", key.project, key.environment);
        match previous {
            Some(p) if p.holder_job != job => {
                append(
                    &mut tx,
                    actor.did("lock.takeover", &target).ref_name(job).detail(serde_json::json!({
                        "expired_holder_job": p.holder_job, "expired_holder": p.holder, "expired_at_ms": p.expires_at_ms
                    })),
                )
                .await?;
            }
            Some(_) => {}
            None => {
                append(&mut tx, actor.did("lock.acquire", &target).ref_name(job)).await?;
            }
        }
        tx.commit().await?;
        Ok(Acquire::Acquired)
    }

    async fn current_lock_in(
        &self,
        conn: &mut sqlx::AnyConnection,
        key: LockKey<'_>,
    ) -> Result<Option<Lock>> {
        let row = sqlx::query("SELECT * FROM environment_locks WHERE tenant_id = $1 AND project = $2 AND environment = $3")
            .bind(key.tenant_id)
            .bind(key.project)
            .bind(key.environment)
            .fetch_optional(&mut *conn)
            .await?;
        row.as_ref().map(lock).transpose()
    }

    /// Extends `job`'s lease; `false` when `job` no longer holds the lock (it was taken over or
    /// released), and so must stop.
    pub async fn renew_environment_lock(
        &self,
        key: LockKey<'_>,
        job: &str,
        ttl_ms: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE environment_locks SET expires_at = $1 WHERE tenant_id = $2 AND project = $3 AND environment = $4 AND holder_job = $5",
        )
        .bind(now_ms() + ttl_ms)
        .bind(key.tenant_id)
        .bind(key.project)
        .bind(key.environment)
        .bind(job)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Releases the lock if `job` holds it.
    pub async fn release_environment_lock(
        &self,
        actor: &Actor,
        key: LockKey<'_>,
        job: &str,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("DELETE FROM environment_locks WHERE tenant_id = $1 AND project = $2 AND environment = $3 AND holder_job = $4")
            .bind(key.tenant_id)
            .bind(key.project)
            .bind(key.environment)
            .bind(job)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 1 {
            append(
                &mut tx,
                actor
                    .did(
                        "lock.release",
                        &format!("environment:{}/{}", key.project, key.environment),
                    )
                    .ref_name(job),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// An administrator's unlock, whoever holds it; audited with the holder it removed.
    pub async fn force_unlock_environment(
        &self,
        actor: &Actor,
        key: LockKey<'_>,
        reason: &str,
    ) -> Result<Lock> {
        let mut tx = self.begin().await?;
        let current = self
            .current_lock_in(&mut tx, key)
            .await?
            .ok_or_else(|| Error::not_found("lock"))?;
        sqlx::query("DELETE FROM environment_locks WHERE tenant_id = $1 AND project = $2 AND environment = $3")
            .bind(key.tenant_id)
            .bind(key.project)
            .bind(key.environment)
            .execute(&mut *tx)
            .await?;
        append(
            &mut tx,
            actor
                .did(
                    "lock.force-unlock",
                    &format!("environment:{}/{}", key.project, key.environment),
                )
                .ref_name(&current.holder_job)
                .detail(serde_json::json!({"holder": current.holder, "reason": reason})),
        )
        .await?;
        tx.commit().await?;
        Ok(current)
    }

    pub async fn environment_lock(&self, key: LockKey<'_>) -> Result<Option<Lock>> {
        let mut conn = self.pool().acquire().await?;
        self.current_lock_in(&mut conn, key).await
    }
}
