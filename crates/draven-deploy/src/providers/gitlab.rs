//! GitLab CI: a pipeline started with a pipeline trigger token (`POST
//! /projects/:id/trigger/pipeline`, `variables[JOB_ID]`…) or with the pipelines API
//! (`POST /projects/:id/pipeline` with variables), followed by pipeline webhooks checked with
//! `X-Gitlab-Token` (or, when a signing token is configured, the newer `webhook-signature`:
//! HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}`) and by polling
//! `GET /projects/:id/pipelines/:pipeline_id`; cancelled with `…/cancel`.

use super::{
    check_url, header, json, malformed, require, send, unsigned, webhook_secret, ProviderError,
    RemoteStatus, RunInfo, Secrets, TriggerRequest, Triggered, WebhookEvent,
};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use draven_core::Error;
use futures::future::BoxFuture;
use http::HeaderMap;
use serde::Deserialize;
use std::collections::BTreeMap;

pub const DEFAULT_API: &str = "https://gitlab.com/api/v4";

/// How a pipeline is started.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum GitlabTrigger {
    /// A pipeline trigger token (`trigger_token_secret`).
    #[default]
    TriggerToken,
    /// The pipelines API with an access token (`token_secret`).
    PipelinesApi,
}

/// `integration` of a `gitlab` project.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitlabIntegration {
    /// Numeric id or `group/project` path.
    pub project: String,
    /// API base, default `https://gitlab.com/api/v4`.
    #[serde(default)]
    pub api_url: Option<String>,
    #[serde(default)]
    pub trigger: GitlabTrigger,
    /// Secret holding the pipeline trigger token.
    #[serde(default)]
    pub trigger_token_secret: Option<String>,
    /// Secret holding an access token (`api` scope): polling, cancel, and the pipelines API.
    #[serde(default)]
    pub token_secret: Option<String>,
    /// Secret holding the webhook's secret token (`X-Gitlab-Token`).
    #[serde(default)]
    pub webhook_token_secret: Option<String>,
    /// Secret holding the webhook's signing token (`whsec_…`), when the newer signing is used.
    #[serde(default)]
    pub webhook_signing_secret: Option<String>,
    /// Environment → the ref the pipeline runs on; default: the job's ref.
    #[serde(default)]
    pub refs: BTreeMap<String, String>,
}

impl GitlabIntegration {
    pub fn validate(&self) -> Result<(), Error> {
        require("project", &self.project)?;
        check_url("api_url", self.api_url.as_deref())?;
        match self.trigger {
            GitlabTrigger::TriggerToken => match &self.trigger_token_secret {
                Some(s) => require("trigger_token_secret", s),
                None => Err(Error::invalid(
                    "integration/trigger_token_secret",
                    "trigger \"trigger_token\" needs integration/trigger_token_secret",
                )),
            },
            GitlabTrigger::PipelinesApi => match &self.token_secret {
                Some(s) => require("token_secret", s),
                None => Err(Error::invalid(
                    "integration/token_secret",
                    "trigger \"pipelines_api\" needs integration/token_secret",
                )),
            },
        }
    }
}

/// Every documented pipeline status. `manual` and `scheduled` wait (until the job's timeout);
/// `skipped` ran nothing, so the deploy did not happen.
pub fn map_status(status: &str) -> RemoteStatus {
    match status {
        "success" => RemoteStatus::Succeeded,
        "failed" | "skipped" => RemoteStatus::Failed,
        "canceled" => RemoteStatus::Cancelled,
        "running" | "canceling" => RemoteStatus::Running,
        // created, waiting_for_resource, preparing, pending, manual, scheduled
        _ => RemoteStatus::Pending,
    }
}

fn pipeline_info(v: &serde_json::Value) -> Option<RunInfo> {
    let id = v.get("id")?.as_i64()?.to_string();
    let status = v
        .get("status")
        .and_then(|s| s.as_str())
        .unwrap_or("created");
    Some(RunInfo {
        id,
        number: v.get("iid").and_then(|i| i.as_i64()).map(|i| i.to_string()),
        url: v
            .get("web_url")
            .or_else(|| v.get("url"))
            .and_then(|u| u.as_str())
            .map(str::to_owned),
        status: map_status(status),
        raw: status.to_owned(),
    })
}

pub struct GitLab {
    http: reqwest::Client,
    api: String,
    cfg: GitlabIntegration,
    trigger_token: Option<String>,
    token: Option<String>,
}

impl std::fmt::Debug for GitLab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitLab")
            .field("api", &self.api)
            .field("project", &self.cfg.project)
            .finish()
    }
}

impl GitLab {
    pub async fn connect(
        http: &reqwest::Client,
        cfg: GitlabIntegration,
        secrets: &Secrets<'_>,
    ) -> Result<GitLab, ProviderError> {
        let trigger_token = match &cfg.trigger_token_secret {
            Some(n) => Some(secrets.get("trigger_token_secret", n).await?),
            None => None,
        };
        let token = match &cfg.token_secret {
            Some(n) => Some(secrets.get("token_secret", n).await?),
            None => None,
        };
        Ok(GitLab {
            http: http.clone(),
            api: cfg
                .api_url
                .clone()
                .unwrap_or_else(|| DEFAULT_API.to_owned())
                .trim_end_matches('/')
                .to_owned(),
            cfg,
            trigger_token,
            token,
        })
    }

    fn project_path(&self) -> String {
        format!(
            "{}/projects/{}",
            self.api,
            self.cfg.project.replace('/', "%2F")
        )
    }

    fn api_token(&self, what: &str) -> Result<&str, ProviderError> {
        self.token.as_deref().ok_or_else(|| {
            ProviderError::Permanent(format!(
                "{what} needs an access token: set integration/token_secret"
            ))
        })
    }

    fn variables(req: &TriggerRequest) -> Vec<(&'static str, String)> {
        vec![
            ("JOB_ID", req.job_id.clone()),
            ("ENV", req.environment.clone()),
            ("REF", req.ref_name.clone()),
            ("DRAVEN_TASK", req.kind.clone()),
            ("DRAVEN_COMMIT", req.commit_sha.clone()),
            ("DRAVEN_CALLBACK_URL", req.callback_url.clone()),
            ("DRAVEN_CALLBACK_TOKEN", req.callback_token.clone()),
        ]
    }
}

impl super::Provider for GitLab {
    fn name(&self) -> &'static str {
        "gitlab"
    }

    fn trigger<'a>(
        &'a self,
        req: &'a TriggerRequest,
    ) -> BoxFuture<'a, Result<Triggered, ProviderError>> {
        Box::pin(async move {
            let git_ref = self
                .cfg
                .refs
                .get(&req.environment)
                .cloned()
                .unwrap_or_else(|| req.ref_name.clone());
            let what = "GitLab pipeline trigger";
            let request = match self.cfg.trigger {
                GitlabTrigger::TriggerToken => {
                    let token = self.trigger_token.as_deref().ok_or_else(|| {
                        ProviderError::Permanent("integration names no trigger_token_secret".into())
                    })?;
                    let mut form: Vec<(String, String)> =
                        vec![("token".into(), token.to_owned()), ("ref".into(), git_ref)];
                    for (k, v) in Self::variables(req) {
                        form.push((format!("variables[{k}]"), v));
                    }
                    self.http
                        .post(format!("{}/trigger/pipeline", self.project_path()))
                        .form(&form)
                }
                GitlabTrigger::PipelinesApi => {
                    let vars: Vec<serde_json::Value> = Self::variables(req)
                        .into_iter()
                        .map(|(k, v)| serde_json::json!({"key": k, "value": v, "variable_type": "env_var"}))
                        .collect();
                    self.http
                        .post(format!("{}/pipeline", self.project_path()))
                        .header("private-token", self.api_token("the pipelines API")?)
                        .json(&serde_json::json!({"ref": git_ref, "variables": vars}))
                }
            };
            let (_, _, body) = send(request, what).await?;
            let info = pipeline_info(&json(&body, what)?)
                .ok_or_else(|| ProviderError::Transient(format!("{what}: no pipeline id")))?;
            Ok(Triggered::Run(info))
        })
    }

    fn status<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, Result<RunInfo, ProviderError>> {
        Box::pin(async move {
            let what = "GitLab pipeline";
            let (_, _, body) = send(
                self.http
                    .get(format!("{}/pipelines/{run_id}", self.project_path()))
                    .header("private-token", self.api_token("polling a pipeline")?),
                what,
            )
            .await?;
            pipeline_info(&json(&body, what)?)
                .ok_or_else(|| ProviderError::Transient(format!("{what}: unexpected answer")))
        })
    }

    fn cancel<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            send(
                self.http
                    .post(format!("{}/pipelines/{run_id}/cancel", self.project_path()))
                    .header("private-token", self.api_token("cancelling a pipeline")?),
                "GitLab cancel pipeline",
            )
            .await
            .map(|_| ())
        })
    }
}

/// Parses a pipeline hook; other event kinds are ignored.
pub fn parse_webhook(headers: &HeaderMap, body: &[u8]) -> Result<WebhookEvent, Error> {
    let event =
        header(headers, "x-gitlab-event").ok_or_else(|| malformed("X-Gitlab-Event is missing"))?;
    // Idempotency-Key (= webhook-id) stays the same across GitLab's retries of one delivery.
    let delivery_id = header(headers, "idempotency-key")
        .or_else(|| header(headers, "webhook-id"))
        .or_else(|| header(headers, "x-gitlab-event-uuid"))
        .ok_or_else(|| malformed("Idempotency-Key / X-Gitlab-Event-UUID is missing"))?
        .to_owned();
    if header(headers, "x-gitlab-token").is_none() && header(headers, "webhook-signature").is_none()
    {
        return Err(unsigned("X-Gitlab-Token (or webhook-signature) is missing"));
    }
    if event != "Pipeline Hook" {
        return Ok(WebhookEvent {
            delivery_id,
            ignored: Some(format!("event {event} is not followed")),
            ..WebhookEvent::default()
        });
    }
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| malformed("the body is not JSON"))?;
    let attrs = v
        .get("object_attributes")
        .filter(|a| a.is_object())
        .ok_or_else(|| malformed("object_attributes is missing"))?;
    let mut info =
        pipeline_info(attrs).ok_or_else(|| malformed("object_attributes.id is missing"))?;
    if info.url.is_none() {
        info.url = v
            .get("project")
            .and_then(|p| p.get("web_url"))
            .and_then(|u| u.as_str())
            .map(|u| format!("{u}/-/pipelines/{}", info.id));
    }
    let job_id = attrs
        .get("variables")
        .and_then(|vs| vs.as_array())
        .into_iter()
        .flatten()
        .find(|var| var.get("key").and_then(|k| k.as_str()) == Some("JOB_ID"))
        .and_then(|var| var.get("value").and_then(|x| x.as_str()))
        .map(str::to_owned);
    Ok(WebhookEvent {
        delivery_id,
        run_id: Some(info.id),
        run_number: None,
        job_id,
        status: Some(info.status),
        raw_status: info.raw,
        url: info.url,
        ignored: None,
        repository: None,
    })
}

/// `v1,<base64>` signatures of the Standard Webhooks scheme GitLab's signing token uses.
pub fn standard_webhook_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = secret_key(secret);
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    format!("v1,{}", STANDARD.encode(super::hmac_sha256(&key, &signed)))
}

fn secret_key(secret: &str) -> Vec<u8> {
    match secret.strip_prefix("whsec_") {
        Some(b64) => STANDARD
            .decode(b64)
            .unwrap_or_else(|_| b64.as_bytes().to_vec()),
        None => secret.as_bytes().to_vec(),
    }
}

/// Deliveries older or newer than this are refused (a captured delivery cannot be replayed
/// later under the signing scheme).
pub const SIGNATURE_TOLERANCE_SECS: i64 = 300;

pub async fn verify_webhook(
    cfg: &GitlabIntegration,
    secrets: &Secrets<'_>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), String> {
    use subtle::ConstantTimeEq;
    if cfg.webhook_signing_secret.is_some() {
        let secret = webhook_secret(
            secrets,
            "webhook_signing_secret",
            cfg.webhook_signing_secret.as_deref(),
        )
        .await?;
        let (Some(id), Some(ts), Some(sigs)) = (
            header(headers, "webhook-id"),
            header(headers, "webhook-timestamp"),
            header(headers, "webhook-signature"),
        ) else {
            return Err("webhook-id, webhook-timestamp and webhook-signature are required".into());
        };
        let at: i64 = ts
            .parse()
            .map_err(|_| "webhook-timestamp is not a number")?;
        if (chrono::Utc::now().timestamp() - at).abs() > SIGNATURE_TOLERANCE_SECS {
            return Err("webhook-timestamp is too far from now".into());
        }
        let expected = standard_webhook_signature(&secret, id, ts, body);
        let ok = sigs
            .split_whitespace()
            .any(|s| bool::from(s.as_bytes().ct_eq(expected.as_bytes())));
        return if ok {
            Ok(())
        } else {
            Err("webhook-signature does not match".into())
        };
    }
    let secret = webhook_secret(
        secrets,
        "webhook_token_secret",
        cfg.webhook_token_secret.as_deref(),
    )
    .await?;
    let given = header(headers, "x-gitlab-token").unwrap_or_default();
    if bool::from(given.as_bytes().ct_eq(secret.as_bytes())) {
        Ok(())
    } else {
        Err("X-Gitlab-Token does not match".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_status_maps() {
        for (s, want) in [
            ("created", RemoteStatus::Pending),
            ("waiting_for_resource", RemoteStatus::Pending),
            ("preparing", RemoteStatus::Pending),
            ("pending", RemoteStatus::Pending),
            ("running", RemoteStatus::Running),
            ("success", RemoteStatus::Succeeded),
            ("failed", RemoteStatus::Failed),
            ("canceling", RemoteStatus::Running),
            ("canceled", RemoteStatus::Cancelled),
            ("skipped", RemoteStatus::Failed),
            ("manual", RemoteStatus::Pending),
            ("scheduled", RemoteStatus::Pending),
        ] {
            assert_eq!(map_status(s), want, "{s}");
        }
    }

    #[test]
    fn standard_webhooks_signature_is_stable() {
        // whsec_ + base64 of 32 bytes "0123…" ; computed independently with Python's hmac.
        let secret = "whsec_MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=";
        let sig = standard_webhook_signature(secret, "msg_1", "1700000000", b"{\"a\":1}");
        assert_eq!(sig, EXPECTED_STANDARD_SIG);
    }

    const EXPECTED_STANDARD_SIG: &str = "v1,1l34d9U9bSaAVQFy2uVdg3CHHT+o7pMzi59Vrub2gOE=";
}
