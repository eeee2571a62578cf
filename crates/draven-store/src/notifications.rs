//! Notification channels of a project's environment and the outbox of deliveries.
//!
//! A job's state change that people care about (approval requested, started, succeeded,
//! failed) puts one outbox row per matching channel in the same transaction as the change, so
//! no notification is lost or invented; the notifier (`draven-deploy::notify`) delivers them
//! with retries. The store never sends anything and never fails a job because of a channel.

use crate::audit::{append, Actor};
use crate::deploy::Project;
use crate::{new_id, now_ms, Db, Result, Tx};
use draven_core::job::JobState;
use sqlx::Row;

/// The notification event a job state stands for, if any.
pub fn event_of(state: JobState) -> Option<&'static str> {
    Some(match state {
        JobState::AwaitingApproval => "approval_requested",
        JobState::Running => "started",
        JobState::Succeeded => "succeeded",
        JobState::Failed | JobState::TimedOut => "failed",
        JobState::Cancelled => "cancelled",
        _ => return None,
    })
}

/// The events a channel gets when it does not list its own.
pub const DEFAULT_EVENTS: [&str; 4] = ["approval_requested", "started", "succeeded", "failed"];

/// One delivery to make.
#[derive(Clone, Debug)]
pub struct OutboxItem {
    pub id: String,
    pub tenant_id: String,
    pub job_id: String,
    pub event: String,
    /// The channel's configuration (JSON object).
    pub channel: String,
    pub attempts: i64,
    pub next_at: i64,
}

/// Inside a job transition: queue the notifications of the job's new state.
pub(crate) async fn enqueue_in(
    tx: &mut Tx,
    tenant_id: &str,
    job_id: &str,
    to: JobState,
) -> Result<()> {
    let Some(event) = event_of(to) else {
        return Ok(());
    };
    let row = sqlx::query(
        "SELECT pe.notifications FROM deploy_jobs j JOIN project_environments pe ON pe.project_id = j.project_id AND pe.environment = j.environment WHERE j.id = $1",
    )
    .bind(job_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(()) };
    let text: String = row.try_get("notifications")?;
    let channels: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap_or_default();
    let now = now_ms();
    for channel in channels {
        let wanted = match channel.get("events").and_then(|e| e.as_array()) {
            Some(list) => list.iter().any(|e| e.as_str() == Some(event)),
            None => DEFAULT_EVENTS.contains(&event),
        };
        if !wanted {
            continue;
        }
        sqlx::query(
            "INSERT INTO notification_outbox (id, tenant_id, job_id, event, channel, state, attempts, next_at, created_at) VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6)",
        )
        .bind(new_id())
        .bind(tenant_id)
        .bind(job_id)
        .bind(event)
        .bind(channel.to_string())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl Db {
    /// Sets the notification channels (a JSON array, validated by the caller) of a project's
    /// environment, which must have its policy set. Audited without secrets (channels hold only
    /// secret names).
    pub async fn set_environment_notifications(
        &self,
        actor: &Actor,
        tenant_id: &str,
        project: &Project,
        environment: &str,
        channels: &str,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE project_environments SET notifications = $1, revision = revision + 1, updated_at = $2 WHERE tenant_id = $3 AND project_id = $4 AND environment = $5",
        )
        .bind(channels)
        .bind(now_ms())
        .bind(tenant_id)
        .bind(&project.id)
        .bind(environment)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(draven_core::Error::not_found("environment of this project")
                .with_field("environment")
                .into());
        }
        append(
            &mut tx,
            actor
                .did(
                    "project.notifications.set",
                    &format!("project:{}", project.key),
                )
                .ref_name(environment)
                .detail(serde_json::from_str(channels).unwrap_or_default()),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The notification channels of a project's environment (a JSON array).
    pub async fn environment_notifications(
        &self,
        project: &Project,
        environment: &str,
    ) -> Result<String> {
        let row = sqlx::query(
            "SELECT notifications FROM project_environments WHERE project_id = $1 AND environment = $2",
        )
        .bind(&project.id)
        .bind(environment)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| {
            draven_core::Error::not_found("environment of this project").with_field("environment")
        })?;
        Ok(row.try_get("notifications")?)
    }

    /// Deliveries due now, oldest first.
    pub async fn due_notifications(&self, limit: i64) -> Result<Vec<OutboxItem>> {
        let rows = sqlx::query(
            "SELECT * FROM notification_outbox WHERE state = 'pending' AND next_at <= $1 ORDER BY next_at, id LIMIT $2",
        )
        .bind(now_ms())
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OutboxItem {
                    id: r.try_get("id")?,
                    tenant_id: r.try_get("tenant_id")?,
                    job_id: r.try_get("job_id")?,
                    event: r.try_get("event")?,
                    channel: r.try_get("channel")?,
                    attempts: r.try_get("attempts")?,
                    next_at: r.try_get("next_at")?,
                })
            })
            .collect()
    }

    /// Takes a delivery for `until` (another notifier skips it meanwhile); `false` when taken.
    pub async fn take_notification(&self, item: &OutboxItem, until: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE notification_outbox SET next_at = $1 WHERE id = $2 AND next_at = $3 AND state = 'pending'",
        )
        .bind(until)
        .bind(&item.id)
        .bind(item.next_at)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a delivery's result: `sent`, or a failure retried at `retry_at` (`None`: given
    /// up, state `failed`).
    pub async fn notification_result(
        &self,
        item: &OutboxItem,
        error: Option<&str>,
        retry_at: Option<i64>,
    ) -> Result<()> {
        let state = match (error, retry_at) {
            (None, _) => "sent",
            (Some(_), Some(_)) => "pending",
            (Some(_), None) => "failed",
        };
        sqlx::query(
            "UPDATE notification_outbox SET state = $1, attempts = attempts + 1, next_at = $2, last_error = $3 WHERE id = $4",
        )
        .bind(state)
        .bind(retry_at.unwrap_or(item.next_at))
        .bind(error.unwrap_or_default())
        .bind(&item.id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The outbox of a job: (event, channel type, state, attempts), for tests and support.
    pub async fn job_notifications(
        &self,
        job_id: &str,
    ) -> Result<Vec<(String, String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT event, channel, state, attempts FROM notification_outbox WHERE job_id = $1 ORDER BY created_at, id",
        )
        .bind(job_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let channel: String = r.try_get("channel")?;
                let kind = serde_json::from_str::<serde_json::Value>(&channel)
                    .ok()
                    .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
                    .unwrap_or_default();
                Ok((
                    r.try_get("event")?,
                    kind,
                    r.try_get("state")?,
                    r.try_get("attempts")?,
                ))
            })
            .collect()
    }
}
