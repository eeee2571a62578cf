//! The dispatcher: hands queued jobs of github/gitlab/bitbucket projects to their pipelines
//! and follows them to the end. A level-triggered loop started by `draven serve`:
//!
//! 1. claim the oldest runnable queued job of each environment (the environment lock lease,
//!    as a runner's claim takes it), job RUNNING, phase `trigger`;
//! 2. for every job it still owes something: renew the lease, enforce the job's timeout, and
//!    when its turn is due, trigger (with a fresh callback token), find the run (GitHub without
//!    run details), or poll the run's status;
//! 3. a job that ended elsewhere (pipeline callback, cancel, reaper) frees its environment; a
//!    cancelled or timed-out one also has its remote run cancelled where the provider allows.
//!
//! Provider failures are retried with exponential backoff (a rate limit waits at least as long
//! as the provider asked); after `max_attempts` failures in a row, or at once for a refusal no
//! retry fixes, the job fails with the reason. Webhooks ([`receive_webhook`]) apply a run's
//! state as soon as the provider reports it; polling is the fallback. Nothing here keeps state
//! in memory: each turn is taken with a conditional update, so several servers can run it.

use crate::providers::{
    self, ProviderError, RemoteStatus, RunInfo, Secrets, TriggerRequest, Triggered,
};
use draven_core::job::JobState;
use draven_core::{Error, ErrorCode};
use draven_store::audit::Actor;
use draven_store::crypto::KeyEncryptionKey;
use draven_store::locks::LockKey;
use draven_store::remote::{Phase, RemoteJob, RunRecord};
use draven_store::runner::Outcome;
use draven_store::{now_ms, Db, StoreError};
use std::sync::Arc;
use std::time::Duration;

/// How the dispatcher paces itself.
#[derive(Clone, Debug)]
pub struct DispatchConfig {
    /// Draven's public base URL, as pipelines reach it (callback URLs).
    pub public_url: String,
    /// How often the loop runs.
    pub tick: Duration,
    /// How often a running job's run is polled (webhooks usually come first).
    pub poll_interval: Duration,
    /// The environment lock lease, renewed every tick.
    pub lease: Duration,
    /// Failures in a row before a job fails.
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How long a triggered run may stay unfound (GitHub without run details).
    pub find_timeout: Duration,
    /// Per HTTP request to a provider.
    pub request_timeout: Duration,
}

impl Default for DispatchConfig {
    fn default() -> DispatchConfig {
        DispatchConfig {
            public_url: "http://127.0.0.1:8080".into(),
            tick: Duration::from_secs(1),
            poll_interval: Duration::from_secs(15),
            lease: Duration::from_secs(30),
            max_attempts: 6,
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(300),
            find_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(20),
        }
    }
}

/// The holder name of environment locks taken for pipelines.
pub const HOLDER: &str = "draven-dispatcher";

#[derive(Clone)]
pub struct Dispatcher {
    pub db: Db,
    kek: Arc<dyn KeyEncryptionKey>,
    http: reqwest::Client,
    pub config: Arc<DispatchConfig>,
    wake: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("config", &self.config)
            .finish()
    }
}

/// Exponential backoff: base × 2^(failures-1), capped.
pub fn backoff(base: Duration, max: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(20);
    base.saturating_mul(factor).min(max)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn outcome_of(status: RemoteStatus) -> Option<Outcome> {
    Some(match status {
        RemoteStatus::Succeeded => Outcome::Succeeded,
        RemoteStatus::Failed => Outcome::Failed,
        RemoteStatus::Cancelled => Outcome::Cancelled,
        RemoteStatus::TimedOut => Outcome::TimedOut,
        RemoteStatus::Pending | RemoteStatus::Running => return None,
    })
}

/// Applies a run's reported state to its job: a status change is noted on the timeline; an
/// ended run ends the job. Returns the job's state afterwards.
pub async fn apply_run_status(
    db: &Db,
    job: &RemoteJob,
    run: &RunInfo,
    source: &str,
) -> Result<JobState, StoreError> {
    let actor = Actor::system();
    if job.state != JobState::Running {
        return Ok(job.state);
    }
    match outcome_of(run.status) {
        None => {
            db.note_remote_status(&actor, job, &run.raw, run.url.as_deref(), source)
                .await?;
            Ok(JobState::Running)
        }
        Some(outcome) => {
            let message = format!(
                "{} run {} ended: {} ({source})",
                job.provider, run.id, run.raw
            );
            db.finish_remote_job(&actor, job, outcome, Some(&run.raw), &message)
                .await
        }
    }
}

impl Dispatcher {
    pub fn new(db: Db, kek: Arc<dyn KeyEncryptionKey>, config: DispatchConfig) -> Dispatcher {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .user_agent("draven")
            .build()
            .unwrap_or_default();
        Dispatcher {
            db,
            kek,
            http,
            config: Arc::new(config),
            wake: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Runs the loop in the background until the process ends.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                if let Err(e) = self.tick().await {
                    tracing::warn!(error = %e, "deploy dispatcher: tick failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(self.config.tick) => {}
                    _ = self.wake.notified() => {}
                }
            }
        })
    }

    /// Makes the loop run now (a job was queued, a webhook arrived).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// One pass: claim what can start, then act on every job owed something.
    pub async fn tick(&self) -> Result<(), StoreError> {
        let actor = Actor::system();
        for _ in 0..100 {
            match self
                .db
                .claim_remote_job(&actor, HOLDER, ms(self.config.lease))
                .await?
            {
                Some(job) => {
                    tracing::info!(job = %job.id, provider = %job.provider, "deploy job handed to its provider")
                }
                None => break,
            }
        }
        let jobs = self.db.active_remote_jobs().await?;
        let steps = jobs.into_iter().map(|job| async move {
            let id = job.id.clone();
            if let Err(e) = self.step(job).await {
                tracing::warn!(job = %id, error = %e, "deploy dispatcher: step failed");
            }
        });
        futures::future::join_all(steps).await;
        Ok(())
    }

    fn secrets<'a>(&'a self, job: &'a RemoteJob) -> Secrets<'a> {
        Secrets {
            db: &self.db,
            kek: self.kek.as_ref(),
            tenant_id: &job.tenant_id,
        }
    }

    async fn connect(
        &self,
        job: &RemoteJob,
    ) -> Result<Box<dyn providers::Provider>, ProviderError> {
        providers::connect(
            &self.http,
            &job.provider,
            &job.integration,
            &self.secrets(job),
        )
        .await
    }

    async fn step(&self, job: RemoteJob) -> Result<(), StoreError> {
        let now = now_ms();
        if job.state.is_terminal() {
            return self.wind_down(job).await;
        }
        if job.state != JobState::Running {
            return Ok(());
        }
        let key = LockKey {
            tenant_id: &job.tenant_id,
            project: &job.project,
            environment: &job.environment,
        };
        if !self
            .db
            .renew_environment_lock(key, &job.id, ms(self.config.lease))
            .await?
        {
            let state = self
                .fail(
                    &job,
                    "the environment lock was taken from the job (force unlock or lapsed lease)",
                )
                .await?;
            return self.cancel_remote_after(&job, state).await;
        }
        if let Some(started) = job.started_at_ms {
            if now > started + job.timeout_secs.saturating_mul(1000) {
                let state = self
                    .db
                    .finish_remote_job(
                        &Actor::system(),
                        &job,
                        Outcome::TimedOut,
                        None,
                        &format!("no result within the job's timeout ({}s)", job.timeout_secs),
                    )
                    .await?;
                return self.cancel_remote_after(&job, state).await;
            }
        }
        if now < job.next_at {
            return Ok(());
        }
        // Hold the turn for the longest a provider call may take.
        let hold = now + ms(self.config.request_timeout) * 3;
        if !self.db.take_remote_turn(&job.id, job.next_at, hold).await? {
            return Ok(());
        }
        let provider = match self.connect(&job).await {
            Ok(p) => p,
            Err(e) => return self.failed_attempt(&job, "connect", e).await,
        };
        match job.phase {
            Phase::Trigger => self.trigger(&job, provider.as_ref()).await,
            Phase::Find => self.find(&job, provider.as_ref()).await,
            Phase::Follow => self.poll(&job, provider.as_ref()).await,
            Phase::Done => Ok(()),
        }
    }

    async fn trigger(
        &self,
        job: &RemoteJob,
        provider: &dyn providers::Provider,
    ) -> Result<(), StoreError> {
        let token = self.db.issue_callback_token(&job.id).await?;
        let req = TriggerRequest {
            job_id: job.id.clone(),
            environment: job.environment.clone(),
            ref_name: job.ref_name.clone(),
            ref_kind: job.ref_kind.clone(),
            commit_sha: job.commit_sha.clone(),
            kind: job.kind.clone(),
            callback_url: format!(
                "{}/api/v1/callbacks/{}",
                self.config.public_url.trim_end_matches('/'),
                job.id
            ),
            callback_token: token,
        };
        let now = now_ms();
        match provider.trigger(&req).await {
            Ok(Triggered::Run(run)) => {
                let record = RunRecord {
                    run_id: Some(&run.id),
                    run_number: run.number.as_deref(),
                    url: run.url.as_deref(),
                    status: Some(&run.raw),
                };
                self.db
                    .record_trigger(
                        &Actor::system(),
                        job,
                        &record,
                        Phase::Follow,
                        now + ms(self.config.poll_interval),
                    )
                    .await
            }
            Ok(Triggered::Unnamed) => {
                self.db
                    .record_trigger(
                        &Actor::system(),
                        job,
                        &RunRecord::default(),
                        Phase::Find,
                        now + ms(self.config.backoff_base),
                    )
                    .await
            }
            Err(e) => self.failed_attempt(job, "trigger", e).await,
        }
    }

    async fn find(
        &self,
        job: &RemoteJob,
        provider: &dyn providers::Provider,
    ) -> Result<(), StoreError> {
        let since = job.triggered_at_ms.unwrap_or_else(now_ms);
        match provider.find_run(&job.id, &job.environment, since).await {
            Ok(Some(run)) => {
                let record = RunRecord {
                    run_id: Some(&run.id),
                    run_number: run.number.as_deref(),
                    url: run.url.as_deref(),
                    status: None,
                };
                self.db
                    .record_found_run(
                        &Actor::system(),
                        job,
                        &record,
                        now_ms() + ms(self.config.poll_interval),
                    )
                    .await?;
                if let Some(j) = self.db.remote_job(&job.id).await? {
                    apply_run_status(&self.db, &j, &run, "poll").await?;
                }
                Ok(())
            }
            Ok(None) if now_ms() - since > ms(self.config.find_timeout) => self
                .fail(
                    job,
                    &format!(
                        "{} accepted the trigger but no run carrying {} appeared within {}s (is run-name set as in templates/?)",
                        job.provider,
                        providers::job_marker(&job.id),
                        self.config.find_timeout.as_secs()
                    ),
                )
                .await
                .map(|_| ()),
            Ok(None) => {
                self.db
                    .schedule_remote(
                        &job.id,
                        Phase::Find,
                        now_ms() + ms(self.config.backoff_base),
                        job.failures,
                    )
                    .await
            }
            Err(e) => self.failed_attempt(job, "finding the run", e).await,
        }
    }

    async fn poll(
        &self,
        job: &RemoteJob,
        provider: &dyn providers::Provider,
    ) -> Result<(), StoreError> {
        let Some(run_id) = job.run_id.as_deref() else {
            return self.fail(job, "the job follows no run").await.map(|_| ());
        };
        match provider.status(run_id).await {
            Ok(run) => {
                let state = apply_run_status(&self.db, job, &run, "poll").await?;
                if state == JobState::Running {
                    self.db
                        .schedule_remote(
                            &job.id,
                            Phase::Follow,
                            now_ms() + ms(self.config.poll_interval),
                            0,
                        )
                        .await?;
                }
                Ok(())
            }
            Err(e) => self.failed_attempt(job, "polling the run", e).await,
        }
    }

    /// A failed provider call: retry later with backoff, or fail the job.
    async fn failed_attempt(
        &self,
        job: &RemoteJob,
        what: &str,
        err: ProviderError,
    ) -> Result<(), StoreError> {
        let failures = job.failures + 1;
        let (wait, retry) = match &err {
            ProviderError::Permanent(_) => (Duration::ZERO, false),
            ProviderError::RateLimited { wait, .. } => (*wait, true),
            ProviderError::Transient(_) => (Duration::ZERO, true),
        };
        if !retry || failures >= i64::from(self.config.max_attempts) {
            let reason = if retry {
                format!(
                    "{} {what} failed {failures} times in a row; giving up. Last error: {err}",
                    job.provider
                )
            } else {
                format!("{} {what} refused: {err}", job.provider)
            };
            tracing::warn!(job = %job.id, %reason, "deploy job failed at its provider");
            self.fail(job, &reason).await?;
            return Ok(());
        }
        let delay = backoff(
            self.config.backoff_base,
            self.config.backoff_max,
            u32::try_from(failures).unwrap_or(u32::MAX),
        )
        .max(wait);
        tracing::info!(job = %job.id, error = %err, retry_in_ms = ms(delay), "provider call failed; retrying");
        self.db
            .remote_job_event(
                &Actor::system(),
                job,
                "deploy.provider-retry",
                &format!(
                    "{} {what} failed ({err}); retry {failures} of {} in {}s",
                    job.provider,
                    self.config.max_attempts - 1,
                    delay.as_secs_f64().ceil()
                ),
            )
            .await?;
        self.db
            .schedule_remote(&job.id, job.phase, now_ms() + ms(delay), failures)
            .await
    }

    async fn fail(&self, job: &RemoteJob, reason: &str) -> Result<JobState, StoreError> {
        self.db
            .finish_remote_job(&Actor::system(), job, Outcome::Failed, None, reason)
            .await
    }

    /// After the job ended on Draven's side (timeout, lost lock): stop its remote run.
    async fn cancel_remote_after(
        &self,
        job: &RemoteJob,
        _state: JobState,
    ) -> Result<(), StoreError> {
        if let Some(j) = self.db.remote_job(&job.id).await? {
            self.cancel_remote(&j).await?;
        }
        Ok(())
    }

    /// A job that ended elsewhere: cancel its remote run if the job was cancelled or timed
    /// out while the run may still be going, then free the environment.
    async fn wind_down(&self, job: RemoteJob) -> Result<(), StoreError> {
        if matches!(job.state, JobState::Cancelled | JobState::TimedOut) {
            self.cancel_remote(&job).await?;
        }
        self.db.release_remote(&job).await
    }

    async fn cancel_remote(&self, job: &RemoteJob) -> Result<(), StoreError> {
        let Some(run_id) = job.run_id.as_deref() else {
            return Ok(());
        };
        let ended = job.provider_status.as_deref().is_some_and(|s| {
            s.starts_with("completed")
                || s.starts_with("COMPLETED")
                || ["success", "failed", "canceled", "skipped"].contains(&s)
        });
        if ended {
            return Ok(());
        }
        let result = match self.connect(job).await {
            Ok(p) => p.cancel(run_id).await,
            Err(e) => Err(e),
        };
        let message = match &result {
            Ok(()) => format!("{} run {run_id}: cancel requested", job.provider),
            Err(e) => format!("{} run {run_id} could not be cancelled: {e}", job.provider),
        };
        self.db
            .remote_job_event(&Actor::system(), job, "deploy.remote-cancel", &message)
            .await
    }
}

/// What a webhook delivery did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// Answered, nothing to do (ping, an event kind not followed, a job that already ended).
    Ignored(String),
    /// The job's state after the delivery.
    Applied { job_id: String, state: String },
}

/// A webhook delivery to a provider's receiver.
#[derive(Debug)]
pub struct WebhookDelivery<'a> {
    pub provider: &'a str,
    pub headers: &'a http::HeaderMap,
    pub body: &'a [u8],
    /// The caller's request id and address, for the audit trail.
    pub actor: Actor,
}

/// Receives a webhook: parse, find the job, verify the signature with the job's project
/// secret, refuse a replayed delivery, then apply the run's state. Every refusal is audited
/// (`webhook.receive` denied) and changes nothing.
pub async fn receive_webhook(
    db: &Db,
    kek: &dyn KeyEncryptionKey,
    delivery: &WebhookDelivery<'_>,
) -> Result<WebhookOutcome, Error> {
    let provider = delivery.provider;
    let target = format!("webhook:{provider}");
    let deny = |tenant: Option<String>, reason: String, err: Error| {
        let actor = Actor {
            tenant_id: tenant,
            ..delivery.actor.clone()
        };
        async move {
            if let Err(e) = db
                .audit(actor.denied("webhook.receive", &target, &reason))
                .await
            {
                tracing::warn!(error = %e, "auditing a refused webhook failed");
            }
            err
        }
    };
    let event = match providers::parse_webhook(provider, delivery.headers, delivery.body) {
        Ok(e) => e,
        Err(e) => return Err(deny(None, e.message.clone(), e).await),
    };
    if let Some(why) = event.ignored {
        return Ok(WebhookOutcome::Ignored(why));
    }
    let mut job = db
        .jobs_by_provider_run(
            provider,
            event.run_id.as_deref(),
            event.run_number.as_deref(),
        )
        .await?
        .into_iter()
        .find(|j| match &event.repository {
            Some(repo) => providers::integration_repository(&j.provider, &j.integration)
                .is_some_and(|r| r.eq_ignore_ascii_case(repo)),
            None => true,
        });
    if job.is_none() {
        // A run not recorded yet (GitHub without run details): the job id it carries.
        if let Some(id) = &event.job_id {
            job = db
                .remote_job(id)
                .await?
                .filter(|j| j.provider == provider && j.run_id.is_none());
        }
    }
    let Some(mut job) = job else {
        let reason = format!(
            "no deploy job follows this {provider} run ({})",
            event.run_id.or(event.run_number).unwrap_or_default()
        );
        return Err(deny(
            None,
            reason.clone(),
            Error::not_found("deploy job for this run"),
        )
        .await);
    };
    let secrets = Secrets {
        db,
        kek,
        tenant_id: &job.tenant_id,
    };
    if let Err(reason) = providers::verify_webhook(
        provider,
        &job.integration,
        &secrets,
        delivery.headers,
        delivery.body,
    )
    .await
    {
        return Err(deny(
            Some(job.tenant_id.clone()),
            format!("deploy:{}: {reason}", job.id),
            Error::new(ErrorCode::WebhookSignatureInvalid, reason),
        )
        .await);
    }
    if !db
        .record_webhook_delivery(provider, &event.delivery_id, &job.id)
        .await?
    {
        return Err(deny(
            Some(job.tenant_id.clone()),
            format!("deploy:{}: delivery {} replayed", job.id, event.delivery_id),
            Error::new(
                ErrorCode::WebhookReplayed,
                format!("delivery {} was already received", event.delivery_id),
            ),
        )
        .await);
    }
    let actor = Actor {
        tenant_id: Some(job.tenant_id.clone()),
        ..delivery.actor.clone()
    };
    db.audit(
        actor
            .did("webhook.receive", &format!("deploy:{}", job.id))
            .detail(serde_json::json!({"provider": provider, "delivery": event.delivery_id, "status": event.raw_status})),
    )
    .await?;
    if job.state != JobState::Running {
        return Ok(WebhookOutcome::Ignored(format!(
            "the job is {}",
            job.state.as_str()
        )));
    }
    let run_id = event
        .run_id
        .clone()
        .or_else(|| job.run_id.clone())
        .unwrap_or_default();
    if job.run_id.is_none() && !run_id.is_empty() {
        let record = RunRecord {
            run_id: Some(&run_id),
            run_number: event.run_number.as_deref(),
            url: event.url.as_deref(),
            status: None,
        };
        db.record_found_run(&Actor::system(), &job, &record, now_ms())
            .await?;
        job = db.remote_job(&job.id).await?.unwrap_or(job);
    }
    let state = match event.status {
        Some(status) => {
            let run = RunInfo {
                id: run_id,
                number: event.run_number,
                url: event.url,
                status,
                raw: event.raw_status,
            };
            apply_run_status(db, &job, &run, "webhook").await?
        }
        None => {
            // A hint: poll the run at the next tick.
            db.schedule_remote(&job.id, job.phase, now_ms(), job.failures)
                .await?;
            job.state
        }
    };
    Ok(WebhookOutcome::Applied {
        job_id: job.id,
        state: state.as_str().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = |n| backoff(Duration::from_secs(2), Duration::from_secs(60), n);
        assert_eq!(b(1), Duration::from_secs(2));
        assert_eq!(b(2), Duration::from_secs(4));
        assert_eq!(b(3), Duration::from_secs(8));
        assert_eq!(b(10), Duration::from_secs(60));
        assert_eq!(b(99), Duration::from_secs(60));
    }
}
