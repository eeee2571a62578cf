//! Bitbucket Cloud Pipelines: `POST /2.0/repositories/{workspace}/{repo}/pipelines/` with a
//! `pipeline_ref_target` (branch or tag), a custom selector per environment and variables;
//! followed by build-status webhooks (`repo:commit_status_created` / `_updated`, verified with
//! `X-Hub-Signature: sha256=…`) and by polling `GET …/pipelines/{uuid}`; cancelled with
//! `POST …/pipelines/{uuid}/stopPipeline`.

use super::{
    check_url, for_environment, header, json, malformed, require, send, unsigned,
    verify_sha256_header, webhook_secret, ProviderError, RemoteStatus, RunInfo, Secrets,
    TriggerRequest, Triggered, WebhookEvent,
};
use draven_core::Error;
use futures::future::BoxFuture;
use http::HeaderMap;
use serde::Deserialize;
use std::collections::BTreeMap;

pub const DEFAULT_API: &str = "https://api.bitbucket.org/2.0";
pub const DEFAULT_WEB: &str = "https://bitbucket.org";

/// `integration` of a `bitbucket` project.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BitbucketIntegration {
    pub workspace: String,
    pub repo_slug: String,
    #[serde(default)]
    pub api_url: Option<String>,
    /// Where run pages live (default `https://bitbucket.org`).
    #[serde(default)]
    pub web_url: Option<String>,
    /// Environment → custom pipeline name in `bitbucket-pipelines.yml`; `*` for the others.
    pub pipelines: BTreeMap<String, String>,
    /// Secret holding an access token (Bearer), or the app password when `username` is set.
    pub token_secret: String,
    #[serde(default)]
    pub username: Option<String>,
    /// Secret holding the webhook secret.
    #[serde(default)]
    pub webhook_secret: Option<String>,
}

impl BitbucketIntegration {
    pub fn validate(&self) -> Result<(), Error> {
        require("workspace", &self.workspace)?;
        require("repo_slug", &self.repo_slug)?;
        check_url("api_url", self.api_url.as_deref())?;
        check_url("web_url", self.web_url.as_deref())?;
        require("token_secret", &self.token_secret)?;
        if self.pipelines.is_empty() {
            return Err(Error::invalid(
                "integration/pipelines",
                "integration/pipelines must map environments (or \"*\") to a custom pipeline",
            ));
        }
        for (env, p) in &self.pipelines {
            require(&format!("pipelines/{env}"), p)?;
        }
        Ok(())
    }
}

/// `state.name` (+ `state.result.name`) → Draven's view.
pub fn map_state(state: &str, result: Option<&str>) -> RemoteStatus {
    match state {
        "COMPLETED" => match result.unwrap_or_default() {
            "SUCCESSFUL" => RemoteStatus::Succeeded,
            "STOPPED" => RemoteStatus::Cancelled,
            // FAILED, ERROR, EXPIRED
            _ => RemoteStatus::Failed,
        },
        "IN_PROGRESS" => RemoteStatus::Running,
        _ => RemoteStatus::Pending,
    }
}

/// Build-status webhook states → Draven's view.
pub fn map_build_state(state: &str) -> Option<RemoteStatus> {
    Some(match state {
        "INPROGRESS" => RemoteStatus::Running,
        "SUCCESSFUL" => RemoteStatus::Succeeded,
        "FAILED" => RemoteStatus::Failed,
        "STOPPED" => RemoteStatus::Cancelled,
        _ => return None,
    })
}

/// The build number in a Pipelines result link (`…/pipelines/results/42`, `…#!/results/42`).
pub fn build_number_of(url: &str) -> Option<String> {
    let rest = url.rsplit_once("/results/")?.1;
    let n: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    (!n.is_empty()).then_some(n)
}

pub struct Bitbucket {
    http: reqwest::Client,
    api: String,
    web: String,
    cfg: BitbucketIntegration,
    token: String,
}

impl std::fmt::Debug for Bitbucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bitbucket")
            .field("api", &self.api)
            .field("repo", &self.cfg.repo_slug)
            .finish()
    }
}

impl Bitbucket {
    pub async fn connect(
        http: &reqwest::Client,
        cfg: BitbucketIntegration,
        secrets: &Secrets<'_>,
    ) -> Result<Bitbucket, ProviderError> {
        let token = secrets.get("token_secret", &cfg.token_secret).await?;
        let trim = |s: Option<&String>, d: &str| {
            s.map_or(d, |v| v.as_str()).trim_end_matches('/').to_owned()
        };
        Ok(Bitbucket {
            http: http.clone(),
            api: trim(cfg.api_url.as_ref(), DEFAULT_API),
            web: trim(cfg.web_url.as_ref(), DEFAULT_WEB),
            cfg,
            token,
        })
    }

    fn pipelines_path(&self) -> String {
        format!(
            "{}/repositories/{}/{}/pipelines",
            self.api, self.cfg.workspace, self.cfg.repo_slug
        )
    }

    fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.cfg.username {
            Some(user) => req.basic_auth(user, Some(&self.token)),
            None => req.bearer_auth(&self.token),
        }
    }

    fn info(&self, v: &serde_json::Value) -> Option<RunInfo> {
        let uuid = v.get("uuid")?.as_str()?.to_owned();
        let number = v.get("build_number").and_then(|n| n.as_i64());
        let state = v.get("state");
        let name = state
            .and_then(|s| s.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or("PENDING");
        let result = state
            .and_then(|s| s.get("result"))
            .and_then(|r| r.get("name"))
            .and_then(|n| n.as_str());
        Some(RunInfo {
            id: uuid,
            number: number.map(|n| n.to_string()),
            url: number.map(|n| {
                format!(
                    "{}/{}/{}/pipelines/results/{n}",
                    self.web, self.cfg.workspace, self.cfg.repo_slug
                )
            }),
            status: map_state(name, result),
            raw: match result {
                Some(r) => format!("{name}/{r}"),
                None => name.to_owned(),
            },
        })
    }
}

/// A pipeline uuid (`{…}`) as a path segment.
fn uuid_segment(uuid: &str) -> String {
    uuid.replace('{', "%7B").replace('}', "%7D")
}

fn plain_ref(name: &str) -> &str {
    name.strip_prefix("refs/heads/")
        .or_else(|| name.strip_prefix("refs/tags/"))
        .unwrap_or(name)
}

impl super::Provider for Bitbucket {
    fn name(&self) -> &'static str {
        "bitbucket"
    }

    fn trigger<'a>(
        &'a self,
        req: &'a TriggerRequest,
    ) -> BoxFuture<'a, Result<Triggered, ProviderError>> {
        Box::pin(async move {
            let pattern = for_environment(&self.cfg.pipelines, &req.environment, "pipelines")?;
            let var = |k: &str, v: &str, secured: bool| serde_json::json!({"key": k, "value": v, "secured": secured});
            let body = serde_json::json!({
                "target": {
                    "type": "pipeline_ref_target",
                    "ref_type": if req.ref_kind == "tag" { "tag" } else { "branch" },
                    "ref_name": plain_ref(&req.ref_name),
                    "selector": {"type": "custom", "pattern": pattern},
                },
                "variables": [
                    var("JOB_ID", &req.job_id, false),
                    var("ENV", &req.environment, false),
                    var("REF", &req.ref_name, false),
                    var("DRAVEN_TASK", &req.kind, false),
                    var("DRAVEN_COMMIT", &req.commit_sha, false),
                    var("DRAVEN_CALLBACK_URL", &req.callback_url, false),
                    var("DRAVEN_CALLBACK_TOKEN", &req.callback_token, true),
                ],
            });
            let what = "Bitbucket pipeline trigger";
            let (_, _, bytes) = send(
                self.authed(self.http.post(format!("{}/", self.pipelines_path())))
                    .json(&body),
                what,
            )
            .await?;
            let info = self
                .info(&json(&bytes, what)?)
                .ok_or_else(|| ProviderError::Transient(format!("{what}: no pipeline uuid")))?;
            Ok(Triggered::Run(info))
        })
    }

    fn status<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, Result<RunInfo, ProviderError>> {
        Box::pin(async move {
            let what = "Bitbucket pipeline";
            let (_, _, bytes) = send(
                self.authed(self.http.get(format!(
                    "{}/{}",
                    self.pipelines_path(),
                    uuid_segment(run_id)
                ))),
                what,
            )
            .await?;
            self.info(&json(&bytes, what)?)
                .ok_or_else(|| ProviderError::Transient(format!("{what}: unexpected answer")))
        })
    }

    fn cancel<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            match send(
                self.authed(self.http.post(format!(
                    "{}/{}/stopPipeline",
                    self.pipelines_path(),
                    uuid_segment(run_id)
                ))),
                "Bitbucket stopPipeline",
            )
            .await
            {
                Ok(_) => Ok(()),
                // 400: the pipeline already completed.
                Err(ProviderError::Permanent(m)) if m.contains("HTTP 400") => Ok(()),
                Err(e) => Err(e),
            }
        })
    }
}

/// Parses a build-status delivery; other event kinds are ignored.
pub fn parse_webhook(headers: &HeaderMap, body: &[u8]) -> Result<WebhookEvent, Error> {
    let event =
        header(headers, "x-event-key").ok_or_else(|| malformed("X-Event-Key is missing"))?;
    let delivery_id = header(headers, "x-request-uuid")
        .or_else(|| header(headers, "x-hook-uuid"))
        .ok_or_else(|| malformed("X-Request-UUID is missing"))?
        .to_owned();
    if event == "diagnostics:ping" {
        return Ok(WebhookEvent {
            delivery_id,
            ignored: Some("ping".into()),
            ..WebhookEvent::default()
        });
    }
    if header(headers, "x-hub-signature").is_none() {
        return Err(unsigned("X-Hub-Signature is missing"));
    }
    if event != "repo:commit_status_created" && event != "repo:commit_status_updated" {
        return Ok(WebhookEvent {
            delivery_id,
            ignored: Some(format!("event {event} is not followed")),
            ..WebhookEvent::default()
        });
    }
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| malformed("the body is not JSON"))?;
    let cs = v
        .get("commit_status")
        .filter(|c| c.is_object())
        .ok_or_else(|| malformed("commit_status is missing"))?;
    let url = cs
        .get("url")
        .and_then(|u| u.as_str())
        .ok_or_else(|| malformed("commit_status.url is missing"))?;
    let number = build_number_of(url)
        .ok_or_else(|| malformed("commit_status.url names no pipeline result"))?;
    let state = cs.get("state").and_then(|s| s.as_str()).unwrap_or_default();
    let repository = v
        .get("repository")
        .and_then(|r| r.get("full_name"))
        .and_then(|n| n.as_str())
        .map(str::to_owned)
        .ok_or_else(|| malformed("repository.full_name is missing"))?;
    Ok(WebhookEvent {
        delivery_id,
        run_id: None,
        run_number: Some(number),
        job_id: None,
        status: map_build_state(state),
        raw_status: state.to_owned(),
        url: Some(url.to_owned()),
        ignored: None,
        repository: Some(repository),
    })
}

pub async fn verify_webhook(
    cfg: &BitbucketIntegration,
    secrets: &Secrets<'_>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), String> {
    let secret = webhook_secret(secrets, "webhook_secret", cfg.webhook_secret.as_deref()).await?;
    let sig = header(headers, "x-hub-signature").unwrap_or_default();
    if verify_sha256_header(secret.as_bytes(), body, sig) {
        Ok(())
    } else {
        Err("X-Hub-Signature does not match the body".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_map() {
        assert_eq!(map_state("PENDING", None), RemoteStatus::Pending);
        assert_eq!(map_state("IN_PROGRESS", None), RemoteStatus::Running);
        assert_eq!(
            map_state("COMPLETED", Some("SUCCESSFUL")),
            RemoteStatus::Succeeded
        );
        assert_eq!(map_state("COMPLETED", Some("FAILED")), RemoteStatus::Failed);
        assert_eq!(map_state("COMPLETED", Some("ERROR")), RemoteStatus::Failed);
        assert_eq!(
            map_state("COMPLETED", Some("STOPPED")),
            RemoteStatus::Cancelled
        );
        assert_eq!(map_build_state("INPROGRESS"), Some(RemoteStatus::Running));
        assert_eq!(map_build_state("STOPPED"), Some(RemoteStatus::Cancelled));
        assert_eq!(
            build_number_of("https://bitbucket.org/acme/shop/addon/pipelines/home#!/results/42"),
            Some("42".into())
        );
        assert_eq!(
            build_number_of("https://bitbucket.org/acme/shop/pipelines/results/7/steps/x"),
            Some("7".into())
        );
        assert_eq!(build_number_of("https://bitbucket.org/acme/shop"), None);
    }
}
