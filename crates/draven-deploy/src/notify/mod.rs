//! Notifications (SPEC D11): Slack incoming webhooks ([`slack`], blocks), Microsoft Teams
//! Workflows webhooks ([`teams`], an Adaptive Card in a message envelope) and email over SMTP
//! ([`email`], lettre; STARTTLS / TLS / plain, optional auth) on approval requested, started,
//! succeeded and failed, per project and environment.
//!
//! The store queues one outbox row per (job event, channel) in the job's own transition; the
//! [`Notifier`] loop delivers them, retrying with exponential backoff. A delivery that keeps
//! failing is logged and counted (`draven_notifications_total{channel,outcome}`) and given up;
//! it never touches the job. Channel credentials (webhook URLs, SMTP passwords) are kernel
//! secrets named by the channel.

pub mod email;
pub mod slack;
pub mod teams;

use crate::providers::{ProviderError, Secrets};
use draven_core::Error;
use draven_store::crypto::KeyEncryptionKey;
use draven_store::deploy::Job;
use draven_store::notifications::OutboxItem;
use draven_store::{now_ms, Db, StoreError};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// Events a channel may ask for.
pub const EVENTS: [&str; 5] = [
    "approval_requested",
    "started",
    "succeeded",
    "failed",
    "cancelled",
];

/// One channel of a project's environment.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Channel {
    Slack {
        /// Secret holding the incoming-webhook URL.
        webhook_url_secret: String,
        #[serde(default)]
        events: Option<Vec<String>>,
    },
    Teams {
        /// Secret holding the Workflows webhook URL.
        webhook_url_secret: String,
        #[serde(default)]
        events: Option<Vec<String>>,
    },
    Email {
        to: Vec<String>,
        from: String,
        smtp: email::SmtpSettings,
        #[serde(default)]
        events: Option<Vec<String>>,
    },
}

impl Channel {
    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Slack { .. } => "slack",
            Channel::Teams { .. } => "teams",
            Channel::Email { .. } => "email",
        }
    }

    fn events(&self) -> Option<&Vec<String>> {
        match self {
            Channel::Slack { events, .. }
            | Channel::Teams { events, .. }
            | Channel::Email { events, .. } => events.as_ref(),
        }
    }
}

/// Checks a channel list (the body of `PUT …/notifications`), naming the offending field.
pub fn validate_channels(v: &serde_json::Value) -> Result<Vec<Channel>, Error> {
    let list = v
        .as_array()
        .ok_or_else(|| Error::invalid("channels", "channels must be an array"))?;
    let mut out = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let c: Channel = serde_path_to_error::deserialize(item.clone()).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                format!("channels/{i}")
            } else {
                format!("channels/{i}/{}", path.replace('.', "/"))
            };
            Error::invalid(&field, format!("{field}: {}", e.inner()))
        })?;
        if let Some(events) = c.events() {
            if let Some((j, bad)) = events
                .iter()
                .enumerate()
                .find(|(_, e)| !EVENTS.contains(&e.as_str()))
            {
                return Err(Error::invalid(
                    &format!("channels/{i}/events/{j}"),
                    format!("unknown event {bad:?}: use one of {}", EVENTS.join(", ")),
                ));
            }
        }
        if let Channel::Email { to, from, smtp, .. } = &c {
            if to.is_empty() || to.iter().any(|a| !a.contains('@')) {
                return Err(Error::invalid(
                    &format!("channels/{i}/to"),
                    "to must list one or more email addresses",
                ));
            }
            if !from.contains('@') {
                return Err(Error::invalid(
                    &format!("channels/{i}/from"),
                    "from must be an email address",
                ));
            }
            if smtp.host.trim().is_empty() {
                return Err(Error::invalid(
                    &format!("channels/{i}/smtp/host"),
                    "smtp/host must not be empty",
                ));
            }
        }
        out.push(c);
    }
    Ok(out)
}

/// What a notification says, whatever the channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub event: String,
    pub title: String,
    pub text: String,
    pub facts: Vec<(String, String)>,
    /// The job in Draven's API.
    pub job_url: String,
    /// The provider's run page, when there is one.
    pub log_url: Option<String>,
}

pub fn message(job: &Job, event: &str, public_url: &str) -> Message {
    let what = if job.kind == "rollback" {
        "Rollback"
    } else {
        "Deploy"
    };
    let verb = match event {
        "approval_requested" => "is waiting for approval",
        "started" => "started",
        "succeeded" => "succeeded",
        "failed" => "failed",
        "cancelled" => "was cancelled",
        other => other,
    };
    let short = job.commit_sha.get(..12).unwrap_or(&job.commit_sha);
    Message {
        event: event.to_owned(),
        title: format!(
            "{what} of {} {} to {} {verb}",
            job.project, job.ref_name, job.environment
        ),
        text: format!(
            "{what} of {} `{}` ({short}) to {}: {} — requested by {}",
            job.project, job.ref_name, job.environment, job.state, job.requested_by_name
        ),
        facts: vec![
            ("Project".into(), job.project.clone()),
            ("Environment".into(), job.environment.clone()),
            ("Ref".into(), format!("{} ({short})", job.ref_name)),
            ("State".into(), job.state.clone()),
            ("Requested by".into(), job.requested_by_name.clone()),
        ],
        job_url: format!(
            "{}/api/v1/deploys/{}",
            public_url.trim_end_matches('/'),
            job.id
        ),
        log_url: job.log_url.clone().or_else(|| job.provider_url.clone()),
    }
}

/// How the notifier paces itself.
#[derive(Clone, Debug)]
pub struct NotifyConfig {
    pub public_url: String,
    pub tick: Duration,
    /// Attempts per delivery before it is given up.
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub request_timeout: Duration,
}

impl Default for NotifyConfig {
    fn default() -> NotifyConfig {
        NotifyConfig {
            public_url: "http://127.0.0.1:8080".into(),
            tick: Duration::from_secs(1),
            max_attempts: 5,
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(600),
            request_timeout: Duration::from_secs(15),
        }
    }
}

#[derive(Clone)]
pub struct Notifier {
    db: Db,
    kek: Arc<dyn KeyEncryptionKey>,
    http: reqwest::Client,
    pub config: Arc<NotifyConfig>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("config", &self.config)
            .finish()
    }
}

fn count(channel: &str, outcome: &'static str) {
    metrics::counter!("draven_notifications_total", "channel" => channel.to_owned(), "outcome" => outcome)
        .increment(1);
}

impl Notifier {
    pub fn new(db: Db, kek: Arc<dyn KeyEncryptionKey>, config: NotifyConfig) -> Notifier {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .user_agent("draven")
            .build()
            .unwrap_or_default();
        Notifier {
            db,
            kek,
            http,
            config: Arc::new(config),
        }
    }

    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                if let Err(e) = self.tick().await {
                    tracing::warn!(error = %e, "notifier: tick failed");
                }
                tokio::time::sleep(self.config.tick).await;
            }
        })
    }

    /// Delivers what is due.
    pub async fn tick(&self) -> Result<(), StoreError> {
        let items = self.db.due_notifications(50).await?;
        let hold =
            now_ms() + i64::try_from(self.config.request_timeout.as_millis()).unwrap_or(0) * 3;
        let mut work = Vec::new();
        for item in items {
            if self.db.take_notification(&item, hold).await? {
                work.push(self.deliver(item));
            }
        }
        for r in futures::future::join_all(work).await {
            r?;
        }
        Ok(())
    }

    async fn deliver(&self, item: OutboxItem) -> Result<(), StoreError> {
        let channel: Result<Channel, _> = serde_json::from_str(&item.channel);
        let kind = channel.as_ref().map(Channel::kind).unwrap_or("unknown");
        let result = match &channel {
            Ok(c) => self.send(&item, c).await,
            Err(e) => Err(format!("the channel is unreadable: {e}")),
        };
        match result {
            Ok(()) => {
                count(kind, "sent");
                self.db.notification_result(&item, None, None).await
            }
            Err(error) => {
                let attempts = u32::try_from(item.attempts + 1).unwrap_or(u32::MAX);
                if attempts >= self.config.max_attempts {
                    tracing::warn!(job = %item.job_id, channel = kind, event = %item.event, %error, attempts, "notification given up");
                    count(kind, "failed");
                    self.db.notification_result(&item, Some(&error), None).await
                } else {
                    let delay = crate::dispatch::backoff(
                        self.config.backoff_base,
                        self.config.backoff_max,
                        attempts,
                    );
                    tracing::info!(job = %item.job_id, channel = kind, %error, attempts, "notification failed; retrying");
                    count(kind, "retried");
                    let at = now_ms() + i64::try_from(delay.as_millis()).unwrap_or(0);
                    self.db
                        .notification_result(&item, Some(&error), Some(at))
                        .await
                }
            }
        }
    }

    async fn send(&self, item: &OutboxItem, channel: &Channel) -> Result<(), String> {
        let job = self
            .db
            .get_job(&item.tenant_id, &item.job_id)
            .await
            .map_err(|e| format!("reading the job: {e}"))?;
        let msg = message(&job, &item.event, &self.config.public_url);
        let secrets = Secrets {
            db: &self.db,
            kek: self.kek.as_ref(),
            tenant_id: &item.tenant_id,
        };
        let secret = |field: &'static str, name: String| async move {
            secrets
                .get(field, &name)
                .await
                .map_err(|e: ProviderError| e.to_string().replace("integration/", "channel "))
        };
        match channel {
            Channel::Slack {
                webhook_url_secret, ..
            } => {
                let url = secret("webhook_url_secret", webhook_url_secret.clone()).await?;
                post_json(&self.http, &url, &slack::payload(&msg)).await
            }
            Channel::Teams {
                webhook_url_secret, ..
            } => {
                let url = secret("webhook_url_secret", webhook_url_secret.clone()).await?;
                post_json(&self.http, &url, &teams::payload(&msg)).await
            }
            Channel::Email { to, from, smtp, .. } => {
                let password = match &smtp.password_secret {
                    Some(name) => Some(secret("smtp/password_secret", name.clone()).await?),
                    None => None,
                };
                email::send(smtp, password.as_deref(), from, to, &msg).await
            }
        }
    }
}

async fn post_json(
    http: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> Result<(), String> {
    let resp = http.post(url).json(body).send().await.map_err(|e| {
        if e.is_timeout() {
            "timed out".to_owned()
        } else {
            "request failed".to_owned()
        }
    })?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", resp.status().as_u16()))
    }
}
