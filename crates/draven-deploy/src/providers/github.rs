//! GitHub Actions: `workflow_dispatch` with inputs `job_id`, `env`, `ref`, `callback_url`,
//! `callback_token`, asking for the run (`return_run_details`); when the server refuses or
//! omits it (older GitHub Enterprise Server), the run is found by the job marker its
//! `run-name` carries. Runs are followed by `workflow_run` / `workflow_job` webhooks
//! (`X-Hub-Signature-256`) and by polling `GET /repos/{repo}/actions/runs/{id}`.
//! Auth by a token or a GitHub App installation token (a JWT signed with the App's key).

use super::{
    check_url, for_environment, header, job_marker, json, malformed, require, send, unsigned,
    verify_sha256_header, webhook_secret, ProviderError, RemoteStatus, RunInfo, Secrets,
    TriggerRequest, Triggered, WebhookEvent,
};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use draven_core::Error;
use futures::future::BoxFuture;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use std::collections::BTreeMap;

pub const DEFAULT_API: &str = "https://api.github.com";

/// `integration` of a `github` project.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubIntegration {
    /// `owner/name`.
    pub repository: String,
    /// REST API base; GitHub Enterprise Server: `https://HOST/api/v3`.
    #[serde(default)]
    pub api_url: Option<String>,
    /// Environment → workflow file (or id); `*` for every other environment.
    pub workflows: BTreeMap<String, String>,
    /// The ref the workflow runs on (where its file is); default: the job's ref.
    #[serde(default)]
    pub dispatch_ref: Option<String>,
    /// Secret holding a token (fine-grained: Actions read/write).
    #[serde(default)]
    pub token_secret: Option<String>,
    /// Or a GitHub App installation.
    #[serde(default)]
    pub app: Option<GithubApp>,
    /// Secret holding the webhook secret.
    #[serde(default)]
    pub webhook_secret: Option<String>,
    /// Ask for the run in the dispatch answer (default true; false for servers that lack it).
    #[serde(default = "yes")]
    pub return_run_details: bool,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubApp {
    pub app_id: String,
    pub installation_id: String,
    /// Secret holding the App's private key (PEM).
    pub private_key_secret: String,
}

impl GithubIntegration {
    pub fn validate(&self) -> Result<(), Error> {
        let parts: Vec<&str> = self.repository.split('/').collect();
        if parts.len() != 2 || parts.iter().any(|p| p.trim().is_empty()) {
            return Err(Error::invalid(
                "integration/repository",
                "integration/repository must be owner/name",
            ));
        }
        check_url("api_url", self.api_url.as_deref())?;
        if self.workflows.is_empty() {
            return Err(Error::invalid(
                "integration/workflows",
                "integration/workflows must map environments (or \"*\") to a workflow file",
            ));
        }
        for (env, wf) in &self.workflows {
            require(&format!("workflows/{env}"), wf)?;
        }
        match (&self.token_secret, &self.app) {
            (Some(t), None) => require("token_secret", t),
            (None, Some(app)) => {
                require("app/app_id", &app.app_id)?;
                require("app/installation_id", &app.installation_id)?;
                require("app/private_key_secret", &app.private_key_secret)
            }
            _ => Err(Error::invalid(
                "integration/token_secret",
                "name either integration/token_secret or integration/app (a GitHub App installation)",
            )),
        }
    }
}

enum Auth {
    Token(String),
    App {
        app_id: String,
        installation_id: String,
        key: Box<ring::signature::RsaKeyPair>,
    },
}

pub struct GitHub {
    http: reqwest::Client,
    api: String,
    cfg: GithubIntegration,
    auth: Auth,
    /// An installation token fetched for this connection.
    token: tokio::sync::Mutex<Option<String>>,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHub")
            .field("api", &self.api)
            .field("repository", &self.cfg.repository)
            .finish()
    }
}

/// An RSA private key from PEM (PKCS#1 `RSA PRIVATE KEY`, as GitHub issues them, or PKCS#8).
pub fn rsa_key_from_pem(pem: &str) -> Result<ring::signature::RsaKeyPair, String> {
    let label = if pem.contains("BEGIN RSA PRIVATE KEY") {
        "RSA PRIVATE KEY"
    } else {
        "PRIVATE KEY"
    };
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = pem
        .split_once(&begin)
        .and_then(|(_, rest)| rest.split_once(&end))
        .map(|(b, _)| b)
        .ok_or("not a PEM private key")?;
    let der = STANDARD
        .decode(body.split_whitespace().collect::<String>())
        .map_err(|_| "the PEM body is not base64")?;
    let key = if label == "RSA PRIVATE KEY" {
        ring::signature::RsaKeyPair::from_der(&der)
    } else {
        ring::signature::RsaKeyPair::from_pkcs8(&der)
    };
    key.map_err(|e| format!("not a usable RSA key: {e}"))
}

/// The App's JWT (RS256, valid 9 minutes, issued a minute in the past for clock drift).
pub fn app_jwt(
    app_id: &str,
    key: &ring::signature::RsaKeyPair,
    now_secs: i64,
) -> Result<String, String> {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(
        serde_json::json!({"iat": now_secs - 60, "exp": now_secs + 540, "iss": app_id}).to_string(),
    );
    let signing_input = format!("{header}.{claims}");
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| "signing the App JWT failed".to_owned())?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

/// status/conclusion → Draven's view. Only `success` counts as success.
pub fn map_status(status: &str, conclusion: Option<&str>) -> RemoteStatus {
    match status {
        "completed" => match conclusion.unwrap_or_default() {
            "success" => RemoteStatus::Succeeded,
            "cancelled" => RemoteStatus::Cancelled,
            "timed_out" => RemoteStatus::TimedOut,
            // failure, startup_failure, action_required, neutral, skipped, stale
            _ => RemoteStatus::Failed,
        },
        "in_progress" => RemoteStatus::Running,
        // requested, queued, pending, waiting
        _ => RemoteStatus::Pending,
    }
}

fn raw_status(status: &str, conclusion: Option<&str>) -> String {
    match conclusion {
        Some(c) if !c.is_empty() => format!("{status}/{c}"),
        _ => status.to_owned(),
    }
}

fn run_info(run: &serde_json::Value) -> Option<RunInfo> {
    let id = run.get("id")?.as_i64()?.to_string();
    let status = run
        .get("status")
        .and_then(|s| s.as_str())
        .unwrap_or("queued");
    let conclusion = run.get("conclusion").and_then(|c| c.as_str());
    Some(RunInfo {
        id,
        number: None,
        url: run
            .get("html_url")
            .and_then(|u| u.as_str())
            .map(str::to_owned),
        status: map_status(status, conclusion),
        raw: raw_status(status, conclusion),
    })
}

impl GitHub {
    pub async fn connect(
        http: &reqwest::Client,
        cfg: GithubIntegration,
        secrets: &Secrets<'_>,
    ) -> Result<GitHub, ProviderError> {
        let auth = match (&cfg.token_secret, &cfg.app) {
            (Some(name), _) => Auth::Token(secrets.get("token_secret", name).await?),
            (None, Some(app)) => {
                let pem = secrets
                    .get("app/private_key_secret", &app.private_key_secret)
                    .await?;
                Auth::App {
                    app_id: app.app_id.clone(),
                    installation_id: app.installation_id.clone(),
                    key: Box::new(rsa_key_from_pem(&pem).map_err(|e| {
                        ProviderError::Permanent(format!("integration/app/private_key_secret: {e}"))
                    })?),
                }
            }
            (None, None) => {
                return Err(ProviderError::Permanent(
                    "integration names no token_secret or app".into(),
                ))
            }
        };
        Ok(GitHub {
            http: http.clone(),
            api: cfg
                .api_url
                .clone()
                .unwrap_or_else(|| DEFAULT_API.to_owned())
                .trim_end_matches('/')
                .to_owned(),
            cfg,
            auth,
            token: tokio::sync::Mutex::new(None),
        })
    }

    async fn token(&self) -> Result<String, ProviderError> {
        match &self.auth {
            Auth::Token(t) => Ok(t.clone()),
            Auth::App {
                app_id,
                installation_id,
                key,
            } => {
                let mut cached = self.token.lock().await;
                if let Some(t) = cached.as_ref() {
                    return Ok(t.clone());
                }
                let jwt = app_jwt(app_id, key, chrono::Utc::now().timestamp())
                    .map_err(ProviderError::Permanent)?;
                let what = "GitHub App installation token";
                let (_, _, body) = send(
                    self.request(
                        reqwest::Method::POST,
                        &format!("/app/installations/{installation_id}/access_tokens"),
                    )
                    .bearer_auth(jwt),
                    what,
                )
                .await?;
                let token = json(&body, what)?
                    .get("token")
                    .and_then(|t| t.as_str())
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        ProviderError::Transient(format!("{what}: no token in the answer"))
                    })?;
                *cached = Some(token.clone());
                Ok(token)
            }
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.api))
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .header("user-agent", "draven")
    }

    async fn authed(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        Ok(self.request(method, path).bearer_auth(self.token().await?))
    }

    fn repo_path(&self) -> String {
        format!("/repos/{}", self.cfg.repository)
    }

    async fn dispatch(
        &self,
        req: &TriggerRequest,
        workflow: &str,
        details: bool,
    ) -> Result<(StatusCode, bytes::Bytes), ProviderError> {
        let mut body = serde_json::json!({
            "ref": self.cfg.dispatch_ref.clone().unwrap_or_else(|| req.ref_name.clone()),
            "inputs": {
                "job_id": req.job_id,
                "env": req.environment,
                "ref": req.ref_name,
                "callback_url": req.callback_url,
                "callback_token": req.callback_token,
            }
        });
        if details {
            body["return_run_details"] = serde_json::Value::Bool(true);
        }
        let path = format!(
            "{}/actions/workflows/{workflow}/dispatches",
            self.repo_path()
        );
        let (status, _, bytes) = send(
            self.authed(reqwest::Method::POST, &path).await?.json(&body),
            "GitHub workflow dispatch",
        )
        .await?;
        Ok((status, bytes))
    }
}

impl super::Provider for GitHub {
    fn name(&self) -> &'static str {
        "github"
    }

    fn trigger<'a>(
        &'a self,
        req: &'a TriggerRequest,
    ) -> BoxFuture<'a, Result<Triggered, ProviderError>> {
        Box::pin(async move {
            let workflow = for_environment(&self.cfg.workflows, &req.environment, "workflows")?;
            let result = self
                .dispatch(req, workflow, self.cfg.return_run_details)
                .await;
            let (status, body) = match result {
                // Servers without return_run_details refuse the unknown key: dispatch without it
                // and find the run by its marker.
                Err(ProviderError::Permanent(m))
                    if self.cfg.return_run_details && m.contains("return_run_details") =>
                {
                    self.dispatch(req, workflow, false).await?
                }
                other => other?,
            };
            if status == StatusCode::NO_CONTENT || body.is_empty() {
                return Ok(Triggered::Unnamed);
            }
            let v = json(&body, "GitHub workflow dispatch")?;
            let Some(id) = v.get("workflow_run_id").and_then(|i| i.as_i64()) else {
                return Ok(Triggered::Unnamed);
            };
            Ok(Triggered::Run(RunInfo {
                id: id.to_string(),
                number: None,
                url: v
                    .get("html_url")
                    .and_then(|u| u.as_str())
                    .map(str::to_owned),
                status: RemoteStatus::Pending,
                raw: "queued".into(),
            }))
        })
    }

    fn find_run<'a>(
        &'a self,
        job_id: &'a str,
        environment: &'a str,
        since_ms: i64,
    ) -> BoxFuture<'a, Result<Option<RunInfo>, ProviderError>> {
        Box::pin(async move {
            let workflow = for_environment(&self.cfg.workflows, environment, "workflows")?;
            // A minute of slack for clock differences.
            let since = chrono::DateTime::from_timestamp_millis(since_ms - 60_000)
                .unwrap_or_default()
                .format("%Y-%m-%dT%H:%M:%SZ");
            let path = format!(
                "{}/actions/workflows/{workflow}/runs?event=workflow_dispatch&created=%3E%3D{since}&per_page=100",
                self.repo_path()
            );
            let what = "GitHub workflow runs";
            let (_, _, body) = send(self.authed(reqwest::Method::GET, &path).await?, what).await?;
            let v = json(&body, what)?;
            let marker = job_marker(job_id);
            Ok(v.get("workflow_runs")
                .and_then(|r| r.as_array())
                .into_iter()
                .flatten()
                .find(|r| {
                    r.get("display_title")
                        .and_then(|t| t.as_str())
                        .is_some_and(|t| t.contains(&marker))
                })
                .and_then(run_info))
        })
    }

    fn status<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, Result<RunInfo, ProviderError>> {
        Box::pin(async move {
            let what = "GitHub workflow run";
            let path = format!("{}/actions/runs/{run_id}", self.repo_path());
            let (_, _, body) = send(self.authed(reqwest::Method::GET, &path).await?, what).await?;
            run_info(&json(&body, what)?)
                .ok_or_else(|| ProviderError::Transient(format!("{what}: unexpected answer")))
        })
    }

    fn cancel<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let path = format!("{}/actions/runs/{run_id}/cancel", self.repo_path());
            match send(
                self.authed(reqwest::Method::POST, &path).await?,
                "GitHub cancel run",
            )
            .await
            {
                Ok(_) => Ok(()),
                // 409: the run is already completed.
                Err(ProviderError::Permanent(m)) if m.contains("HTTP 409") => Ok(()),
                Err(e) => Err(e),
            }
        })
    }
}

/// Parses a GitHub delivery: `workflow_run` (the run's state) and `workflow_job` (a hint to
/// look at the run); `ping` and other events are ignored.
pub fn parse_webhook(headers: &HeaderMap, body: &[u8]) -> Result<WebhookEvent, Error> {
    let event =
        header(headers, "x-github-event").ok_or_else(|| malformed("X-GitHub-Event is missing"))?;
    let delivery_id = header(headers, "x-github-delivery")
        .ok_or_else(|| malformed("X-GitHub-Delivery is missing"))?
        .to_owned();
    if event == "ping" {
        return Ok(WebhookEvent {
            delivery_id,
            ignored: Some("ping".into()),
            ..WebhookEvent::default()
        });
    }
    if header(headers, "x-hub-signature-256").is_none() {
        return Err(unsigned("X-Hub-Signature-256 is missing"));
    }
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| malformed("the body is not JSON"))?;
    match event {
        "workflow_run" => {
            let run = v
                .get("workflow_run")
                .filter(|r| r.is_object())
                .ok_or_else(|| malformed("workflow_run is missing"))?;
            let info = run_info(run).ok_or_else(|| malformed("workflow_run.id is missing"))?;
            let job_id = run
                .get("display_title")
                .and_then(|t| t.as_str())
                .and_then(|t| t.split("[draven-job ").nth(1))
                .and_then(|rest| rest.split(']').next())
                .map(str::to_owned);
            Ok(WebhookEvent {
                delivery_id,
                run_id: Some(info.id),
                job_id,
                status: Some(info.status),
                raw_status: info.raw,
                url: info.url,
                ..WebhookEvent::default()
            })
        }
        "workflow_job" => {
            let job = v
                .get("workflow_job")
                .filter(|r| r.is_object())
                .ok_or_else(|| malformed("workflow_job is missing"))?;
            let run_id = job
                .get("run_id")
                .and_then(|i| i.as_i64())
                .ok_or_else(|| malformed("workflow_job.run_id is missing"))?;
            let status = job.get("status").and_then(|s| s.as_str()).unwrap_or("");
            // A job of the run started: the run runs. Its end is the run's to say.
            let (status, raw) = match status {
                "in_progress" => (Some(RemoteStatus::Running), "in_progress".to_owned()),
                other => (None, other.to_owned()),
            };
            Ok(WebhookEvent {
                delivery_id,
                run_id: Some(run_id.to_string()),
                status,
                raw_status: raw,
                ..WebhookEvent::default()
            })
        }
        other => Ok(WebhookEvent {
            delivery_id,
            ignored: Some(format!("event {other} is not followed")),
            ..WebhookEvent::default()
        }),
    }
}

pub async fn verify_webhook(
    cfg: &GithubIntegration,
    secrets: &Secrets<'_>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), String> {
    let secret = webhook_secret(secrets, "webhook_secret", cfg.webhook_secret.as_deref()).await?;
    let sig = header(headers, "x-hub-signature-256").unwrap_or_default();
    if verify_sha256_header(secret.as_bytes(), body, sig) {
        Ok(())
    } else {
        Err("X-Hub-Signature-256 does not match the body".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map() {
        assert_eq!(map_status("queued", None), RemoteStatus::Pending);
        assert_eq!(map_status("waiting", None), RemoteStatus::Pending);
        assert_eq!(map_status("in_progress", None), RemoteStatus::Running);
        assert_eq!(
            map_status("completed", Some("success")),
            RemoteStatus::Succeeded
        );
        assert_eq!(
            map_status("completed", Some("failure")),
            RemoteStatus::Failed
        );
        assert_eq!(
            map_status("completed", Some("startup_failure")),
            RemoteStatus::Failed
        );
        assert_eq!(
            map_status("completed", Some("cancelled")),
            RemoteStatus::Cancelled
        );
        assert_eq!(
            map_status("completed", Some("timed_out")),
            RemoteStatus::TimedOut
        );
        assert_eq!(
            map_status("completed", Some("skipped")),
            RemoteStatus::Failed
        );
    }

    fn openssl_key(args: &[&str]) -> String {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl is needed to make a test RSA key");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// GitHub App auth over real HTTP: a JWT signed with the App's key (PKCS#1 as GitHub issues
    /// keys, and PKCS#8) buys an installation token, which then authorizes the dispatch.
    #[tokio::test]
    async fn github_app_installation_token() {
        use crate::fakes::{Fake, Kind};
        use crate::providers::Provider;
        for pem in [
            openssl_key(&["genrsa", "-traditional", "2048"]),
            openssl_key(&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ]),
        ] {
            let key = rsa_key_from_pem(&pem).unwrap();
            let jwt = app_jwt("12345", &key, 1_700_000_000).unwrap();
            let parts: Vec<&str> = jwt.split('.').collect();
            let claims: serde_json::Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
            assert_eq!(
                (
                    claims["iss"].as_str(),
                    claims["iat"].as_i64(),
                    claims["exp"].as_i64()
                ),
                (Some("12345"), Some(1_699_999_940), Some(1_700_000_540))
            );
            let public = ring::signature::UnparsedPublicKey::new(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                ring::signature::KeyPair::public_key(&key).as_ref().to_vec(),
            );
            public
                .verify(
                    format!("{}.{}", parts[0], parts[1]).as_bytes(),
                    &URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
                )
                .expect("the JWT verifies with the App's public key");

            let fake = Fake::start(Kind::GitHub, "ghs_installation_token").await;
            let cfg: GithubIntegration = serde_json::from_value(serde_json::json!({
                "repository": "acme/shop", "api_url": fake.api_url, "workflows": {"*": "deploy.yml"},
                "app": {"app_id": "12345", "installation_id": "678", "private_key_secret": "k"}
            }))
            .unwrap();
            let gh = GitHub {
                http: reqwest::Client::new(),
                api: fake.api_url.clone(),
                cfg,
                auth: Auth::App {
                    app_id: "12345".into(),
                    installation_id: "678".into(),
                    key: Box::new(key),
                },
                token: tokio::sync::Mutex::new(None),
            };
            let req = TriggerRequest {
                job_id: "job-1".into(),
                environment: "demo".into(),
                ref_name: "main".into(),
                ref_kind: "branch".into(),
                commit_sha: "abc".into(),
                kind: "deploy".into(),
                callback_url: "http://draven/api/v1/callbacks/job-1".into(),
                callback_token: "t".into(),
            };
            let triggered = gh.trigger(&req).await.unwrap();
            assert!(
                matches!(triggered, Triggered::Run(ref r) if r.id == "9001"),
                "{triggered:?}"
            );
            assert_eq!(fake.state.lock().unwrap().app_jwts.len(), 1);
            // The installation token is reused by the same connection.
            gh.status("9001").await.unwrap();
            assert_eq!(fake.state.lock().unwrap().app_jwts.len(), 1);
        }
    }
}
