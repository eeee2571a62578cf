//! SCM pipeline providers (SPEC D6): one [`Provider`] trait and an implementation per provider
//! — [`github`] (Actions `workflow_dispatch`), [`gitlab`] (pipeline triggers / pipelines API),
//! [`bitbucket`] (Pipelines with a custom selector). A project's `integration` JSON says which
//! repository, which workflow or pipeline per environment and which kernel secrets hold the
//! credentials; moving a project to another provider changes only that.
//!
//! Each provider: triggers a run passing `JOB_ID`, `ENV`, `REF`, the callback URL and the
//! per-job token; reads a run's status (polling); cancels a run; parses its webhook deliveries
//! and verifies their signature. HTTP failures are classified once ([`ProviderError`]): rate
//! limits with the wait the provider asked for, transient outages, and refusals that no retry
//! will fix. This module never touches job state; `crate::dispatch` does.

pub mod bitbucket;
pub mod github;
pub mod gitlab;

use draven_core::{Error, ErrorCode};
use draven_store::crypto::KeyEncryptionKey;
use draven_store::{Db, StoreError};
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use sha2::Sha256;
use std::time::Duration;

/// The providers a project may name besides `local`.
pub const REMOTE_PROVIDERS: [&str; 3] = ["github", "gitlab", "bitbucket"];

/// A run's state as Draven understands it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

impl RemoteStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RemoteStatus::Succeeded
                | RemoteStatus::Failed
                | RemoteStatus::Cancelled
                | RemoteStatus::TimedOut
        )
    }
}

/// A provider's run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunInfo {
    /// GitHub run id, GitLab pipeline id, Bitbucket pipeline uuid.
    pub id: String,
    /// Bitbucket's build number (its webhooks name runs by it).
    pub number: Option<String>,
    /// The run's page (its log).
    pub url: Option<String>,
    pub status: RemoteStatus,
    /// The provider's own words, e.g. `completed/failure`, `waiting_for_resource`.
    pub raw: String,
}

/// What a pipeline is started with.
#[derive(Clone, Debug)]
pub struct TriggerRequest {
    pub job_id: String,
    pub environment: String,
    pub ref_name: String,
    /// `branch` or `tag`.
    pub ref_kind: String,
    pub commit_sha: String,
    /// `deploy` or `rollback`.
    pub kind: String,
    /// `<public url>/api/v1/callbacks/<job>`.
    pub callback_url: String,
    pub callback_token: String,
}

/// What a trigger returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Triggered {
    Run(RunInfo),
    /// Accepted without naming the run (GitHub without `return_run_details`): find it by the
    /// job marker.
    Unnamed,
}

/// Why a provider call failed, classified for the retry decision.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// 403/429 with rate-limit headers: retry after `wait`.
    #[error("rate limited (retry in {}s): {message}", wait.as_secs())]
    RateLimited { wait: Duration, message: String },
    /// An outage: 5xx, timeouts, connection errors. Retry with backoff.
    #[error("{0}")]
    Transient(String),
    /// Refused for good (credentials, missing workflow, invalid configuration).
    #[error("{0}")]
    Permanent(String),
}

/// One provider, connected with a project's integration and credentials.
pub trait Provider: Send + Sync {
    fn name(&self) -> &'static str;
    fn trigger<'a>(
        &'a self,
        req: &'a TriggerRequest,
    ) -> BoxFuture<'a, Result<Triggered, ProviderError>>;
    /// Finds the run of a job the trigger did not name (started after `since_ms`).
    fn find_run<'a>(
        &'a self,
        _job_id: &'a str,
        _environment: &'a str,
        _since_ms: i64,
    ) -> BoxFuture<'a, Result<Option<RunInfo>, ProviderError>> {
        Box::pin(async { Ok(None) })
    }
    fn status<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, Result<RunInfo, ProviderError>>;
    /// Cancels a run; a run that already ended is not an error.
    fn cancel<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, Result<(), ProviderError>>;
}

/// A webhook delivery, parsed before its signature is checked (to find the job whose secret
/// checks it). Nothing in it may change state until [`verify_webhook`] passed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebhookEvent {
    /// The provider's delivery id (replay protection).
    pub delivery_id: String,
    pub run_id: Option<String>,
    pub run_number: Option<String>,
    /// The job id the run carries (GitHub run-name marker, GitLab `JOB_ID` variable).
    pub job_id: Option<String>,
    /// The run's state, when the event tells it; `None`: a hint to poll now.
    pub status: Option<RemoteStatus>,
    pub raw_status: String,
    pub url: Option<String>,
    /// Events Draven does not act on (ping, other event kinds): answered, nothing else.
    pub ignored: Option<String>,
    /// The repository the delivery is about (`workspace/repo`), where run numbers are only
    /// unique per repository (Bitbucket).
    pub repository: Option<String>,
}

/// The repository an integration names, as webhooks name it (Bitbucket: `workspace/repo`).
pub fn integration_repository(provider: &str, integration: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(integration).ok()?;
    match provider {
        "bitbucket" => Some(format!(
            "{}/{}",
            v.get("workspace")?.as_str()?,
            v.get("repo_slug")?.as_str()?
        )),
        "github" => Some(v.get("repository")?.as_str()?.to_owned()),
        "gitlab" => Some(v.get("project")?.as_str()?.to_owned()),
        _ => None,
    }
}

/// The marker a GitHub run's `run-name` carries so Draven can find the run of a job.
pub fn job_marker(job_id: &str) -> String {
    format!("[draven-job {job_id}]")
}

/// Reads kernel secrets named by an integration.
#[derive(Clone, Copy)]
pub struct Secrets<'a> {
    pub db: &'a Db,
    pub kek: &'a dyn KeyEncryptionKey,
    pub tenant_id: &'a str,
}

impl std::fmt::Debug for Secrets<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("tenant_id", &self.tenant_id)
            .finish()
    }
}

impl Secrets<'_> {
    /// The secret `name`, named by the integration's `field`.
    pub async fn get(&self, field: &str, name: &str) -> Result<String, ProviderError> {
        match self.db.reveal_secret(self.kek, self.tenant_id, name).await {
            Ok(v) => String::from_utf8(v)
                .map(|s| s.trim().to_owned())
                .map_err(|_| {
                    ProviderError::Permanent(format!(
                        "the secret {name:?} ({field}) is not UTF-8 text"
                    ))
                }),
            Err(StoreError::Domain(e)) if e.code == ErrorCode::NotFound => {
                Err(ProviderError::Permanent(format!(
                    "the secret {name:?} named by integration/{field} does not exist"
                )))
            }
            Err(e) => Err(ProviderError::Transient(format!(
                "reading secret {name:?}: {e}"
            ))),
        }
    }
}

/// Connects a project's provider: its integration parsed, its credentials read.
pub async fn connect(
    http: &reqwest::Client,
    provider: &str,
    integration: &str,
    secrets: &Secrets<'_>,
) -> Result<Box<dyn Provider>, ProviderError> {
    let value: serde_json::Value = serde_json::from_str(integration)
        .map_err(|_| ProviderError::Permanent("the integration is not JSON".into()))?;
    let bad = |e: Error| ProviderError::Permanent(e.to_string());
    Ok(match provider {
        "github" => Box::new(
            github::GitHub::connect(http, parse_integration(&value).map_err(bad)?, secrets).await?,
        ),
        "gitlab" => Box::new(
            gitlab::GitLab::connect(http, parse_integration(&value).map_err(bad)?, secrets).await?,
        ),
        "bitbucket" => Box::new(
            bitbucket::Bitbucket::connect(http, parse_integration(&value).map_err(bad)?, secrets)
                .await?,
        ),
        other => {
            return Err(ProviderError::Permanent(format!(
                "provider {other:?} has no pipeline adapter"
            )))
        }
    })
}

/// Checks a project's integration for its provider; the error names the field
/// (`integration/workflows`). `local` projects take any object.
pub fn validate_integration(provider: &str, integration: &serde_json::Value) -> Result<(), Error> {
    match provider {
        "github" => parse_integration::<github::GithubIntegration>(integration)?.validate(),
        "gitlab" => parse_integration::<gitlab::GitlabIntegration>(integration)?.validate(),
        "bitbucket" => {
            parse_integration::<bitbucket::BitbucketIntegration>(integration)?.validate()
        }
        _ => Ok(()),
    }
}

/// Deserializes an integration, naming the offending field on failure.
pub fn parse_integration<T: DeserializeOwned>(v: &serde_json::Value) -> Result<T, Error> {
    serde_path_to_error::deserialize(v.clone()).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "integration".to_owned()
        } else {
            format!("integration/{}", path.replace('.', "/"))
        };
        Error::invalid(&field, format!("{field}: {}", e.inner()))
    })
}

/// A required, non-empty text field of an integration.
pub(crate) fn require(field: &str, value: &str) -> Result<(), Error> {
    if value.trim().is_empty() {
        return Err(Error::invalid(
            &format!("integration/{field}"),
            format!("integration/{field} must not be empty"),
        ));
    }
    Ok(())
}

/// Checks an optional base URL of an integration.
pub(crate) fn check_url(field: &str, value: Option<&str>) -> Result<(), Error> {
    match value {
        Some(u) if !(u.starts_with("https://") || u.starts_with("http://")) => Err(Error::invalid(
            &format!("integration/{field}"),
            format!("integration/{field} must be an http(s) URL"),
        )),
        _ => Ok(()),
    }
}

/// The workflow / pipeline an environment maps to (`*` is the fallback).
pub(crate) fn for_environment<'a>(
    map: &'a std::collections::BTreeMap<String, String>,
    environment: &str,
    field: &str,
) -> Result<&'a str, ProviderError> {
    map.get(environment)
        .or_else(|| map.get("*"))
        .map(String::as_str)
        .ok_or_else(|| {
            ProviderError::Permanent(format!(
                "integration/{field} maps no pipeline for environment {environment:?} (add it or a \"*\" entry)"
            ))
        })
}

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Constant-time check of a `sha256=<hex>` signature header over `body`.
pub fn verify_sha256_header(secret: &[u8], body: &[u8], header: &str) -> bool {
    use subtle::ConstantTimeEq;
    let Some(hex_sig) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(given) = hex::decode(hex_sig) else {
        return false;
    };
    let expected = hmac_sha256(secret, body);
    given.len() == expected.len() && bool::from(given.as_slice().ct_eq(&expected))
}

/// `sha256=<hex>` of `body`, as GitHub and Bitbucket send it.
pub fn sign_sha256_header(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac_sha256(secret, body)))
}

pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

pub(crate) fn malformed(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::MalformedBody, message)
}

pub(crate) fn unsigned(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::WebhookSignatureInvalid, message)
}

/// How long a rate-limited response asks us to wait: `Retry-After` (seconds),
/// `x-ratelimit-reset` (GitHub, epoch seconds) or `RateLimit-Reset` (GitLab: epoch seconds;
/// the IETF draft: seconds from now). `None` when the response is not a rate limit.
pub fn rate_limit_wait(status: StatusCode, headers: &HeaderMap, now_secs: i64) -> Option<Duration> {
    let num = |name: &str| header(headers, name).and_then(|v| v.parse::<i64>().ok());
    let limited = status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN
            && (num("x-ratelimit-remaining") == Some(0)
                || num("retry-after").is_some()
                || num("ratelimit-remaining") == Some(0)));
    if !limited {
        return None;
    }
    let until = |v: i64| {
        // Epoch seconds are large; small values are a delay.
        if v > 1_000_000_000 {
            (v - now_secs).max(0)
        } else {
            v.max(0)
        }
    };
    let secs = num("retry-after")
        .or_else(|| num("x-ratelimit-reset").map(until))
        .or_else(|| num("ratelimit-reset").map(until))
        .unwrap_or(60);
    Some(Duration::from_secs(secs as u64))
}

/// Sends a request and classifies the failure; returns the status, headers and body of a
/// success (2xx).
pub(crate) async fn send(
    req: reqwest::RequestBuilder,
    what: &str,
) -> Result<(StatusCode, HeaderMap, bytes::Bytes), ProviderError> {
    let resp = req.send().await.map_err(|e| {
        ProviderError::Transient(format!(
            "{what}: {}",
            if e.is_timeout() {
                "timed out".to_owned()
            } else if e.is_connect() {
                "cannot connect".to_owned()
            } else {
                "request failed".to_owned()
            }
        ))
    })?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .bytes()
        .await
        .map_err(|_| ProviderError::Transient(format!("{what}: reading the answer failed")))?;
    if status.is_success() {
        return Ok((status, headers, body));
    }
    Err(classify(status, &headers, &body, what))
}

/// Classifies a failed response.
pub(crate) fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    what: &str,
) -> ProviderError {
    let snippet: String = String::from_utf8_lossy(body).chars().take(300).collect();
    let message = format!("{what}: HTTP {} {}", status.as_u16(), snippet.trim());
    if let Some(wait) = rate_limit_wait(status, headers, chrono::Utc::now().timestamp()) {
        return ProviderError::RateLimited { wait, message };
    }
    if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        ProviderError::Transient(message)
    } else {
        ProviderError::Permanent(message)
    }
}

pub(crate) fn json(body: &[u8], what: &str) -> Result<serde_json::Value, ProviderError> {
    serde_json::from_slice(body)
        .map_err(|_| ProviderError::Transient(format!("{what}: the answer is not JSON")))
}

/// Verifies a parsed delivery with the project's webhook secret(s). `Err` is the reason.
pub async fn verify_webhook(
    provider: &str,
    integration: &str,
    secrets: &Secrets<'_>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_str(integration).map_err(|_| "the integration is not JSON".to_owned())?;
    let bad = |e: Error| e.to_string();
    match provider {
        "github" => {
            github::verify_webhook(
                &parse_integration(&value).map_err(bad)?,
                secrets,
                headers,
                body,
            )
            .await
        }
        "gitlab" => {
            gitlab::verify_webhook(
                &parse_integration(&value).map_err(bad)?,
                secrets,
                headers,
                body,
            )
            .await
        }
        "bitbucket" => {
            bitbucket::verify_webhook(
                &parse_integration(&value).map_err(bad)?,
                secrets,
                headers,
                body,
            )
            .await
        }
        other => Err(format!("provider {other:?} takes no webhooks")),
    }
}

/// Parses a delivery for `provider` (no secret needed yet).
pub fn parse_webhook(
    provider: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<WebhookEvent, Error> {
    match provider {
        "github" => github::parse_webhook(headers, body),
        "gitlab" => gitlab::parse_webhook(headers, body),
        "bitbucket" => bitbucket::parse_webhook(headers, body),
        _ => Err(Error::not_found("webhook receiver")),
    }
}

/// A secret from its `error` reason when the integration names none.
pub(crate) async fn webhook_secret(
    secrets: &Secrets<'_>,
    field: &str,
    name: Option<&str>,
) -> Result<String, String> {
    let Some(name) = name else {
        return Err(format!(
            "the project's integration names no {field}: webhooks cannot be verified"
        ));
    };
    secrets.get(field, name).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of GitHub's "Validating webhook deliveries".
    #[test]
    fn github_published_signature_vector() {
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign_sha256_header(secret, body), expected);
        assert!(verify_sha256_header(secret, body, expected));
        assert!(!verify_sha256_header(secret, b"Hello, World?", expected));
        assert!(!verify_sha256_header(b"another secret", body, expected));
        assert!(!verify_sha256_header(secret, body, "sha1=757107ea"));
        assert!(!verify_sha256_header(secret, body, "sha256=zz"));
        assert!(!verify_sha256_header(secret, body, "sha256=757107ea"));
    }

    #[test]
    fn rate_limit_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(
            rate_limit_wait(StatusCode::FORBIDDEN, &h, 1_700_000_000),
            None
        );
        assert_eq!(
            rate_limit_wait(StatusCode::TOO_MANY_REQUESTS, &h, 1_700_000_000),
            Some(Duration::from_secs(60))
        );
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(
            rate_limit_wait(StatusCode::FORBIDDEN, &h, 1_700_000_000),
            Some(Duration::from_secs(7))
        );
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining", "0".parse().unwrap());
        h.insert("x-ratelimit-reset", "1700000042".parse().unwrap());
        assert_eq!(
            rate_limit_wait(StatusCode::FORBIDDEN, &h, 1_700_000_000),
            Some(Duration::from_secs(42))
        );
        let mut h = HeaderMap::new();
        h.insert("ratelimit-reset", "1700000010".parse().unwrap());
        assert_eq!(
            rate_limit_wait(StatusCode::TOO_MANY_REQUESTS, &h, 1_700_000_000),
            Some(Duration::from_secs(10))
        );
        // A 403 without rate-limit headers is a refusal, not a rate limit.
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining", "4999".parse().unwrap());
        assert_eq!(rate_limit_wait(StatusCode::FORBIDDEN, &h, 0), None);
        assert!(matches!(
            classify(
                StatusCode::FORBIDDEN,
                &h,
                b"Resource not accessible",
                "trigger"
            ),
            ProviderError::Permanent(_)
        ));
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, &h, b"", "trigger"),
            ProviderError::Transient(_)
        ));
    }

    #[test]
    fn integrations_are_validated_naming_the_field() {
        let check = |provider: &str, v: serde_json::Value| {
            validate_integration(provider, &v).map_err(|e| e.field.unwrap_or_default())
        };
        assert_eq!(
            check(
                "github",
                serde_json::json!({"repository": "acme/shop", "workflows": {"*": "deploy.yml"}, "token_secret": "gh"})
            ),
            Ok(())
        );
        assert_eq!(
            check(
                "github",
                serde_json::json!({"repository": "shop", "workflows": {"*": "deploy.yml"}, "token_secret": "gh"})
            ),
            Err("integration/repository".into())
        );
        assert_eq!(
            check(
                "github",
                serde_json::json!({"repository": "acme/shop", "workflows": {}, "token_secret": "gh"})
            ),
            Err("integration/workflows".into())
        );
        assert_eq!(
            check(
                "github",
                serde_json::json!({"repository": "acme/shop", "workflows": {"*": 3}, "token_secret": "gh"})
            ),
            Err("integration/workflows/*".into())
        );
        assert_eq!(
            check(
                "github",
                serde_json::json!({"repository": "acme/shop", "workflows": {"*": "d.yml"}})
            ),
            Err("integration/token_secret".into())
        );
        assert_eq!(
            check(
                "gitlab",
                serde_json::json!({"project": "acme/shop", "trigger": "trigger_token"})
            ),
            Err("integration/trigger_token_secret".into())
        );
        assert_eq!(
            check(
                "gitlab",
                serde_json::json!({"project": "acme/shop", "trigger": "magic", "token_secret": "t"})
            ),
            Err("integration/trigger".into())
        );
        assert_eq!(
            check(
                "bitbucket",
                serde_json::json!({"workspace": "acme", "repo_slug": "shop", "pipelines": {"*": "deploy"}, "token_secret": "bb", "colour": 1})
            ),
            Err("integration/colour".into())
        );
        assert_eq!(check("local", serde_json::json!({"anything": 1})), Ok(()));
    }
}
