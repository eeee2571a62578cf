//! Configuration: one typed struct, layered defaults → TOML file → `DRAVEN_*` environment →
//! flags. Clap reads a flag or, failing that, its environment variable; the file fills what
//! both left unset; defaults fill the rest.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where state lives: shared by `serve`, `migrate` and `admin`.
#[derive(Args, Debug, Clone, Default)]
pub struct StoreArgs {
    /// TOML configuration file (keys as the long flags with '_' for '-').
    #[arg(long, env = "DRAVEN_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Directory for the SQLite database, local objects and the master key file [default: ./data]
    #[arg(long, env = "DRAVEN_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// sqlite://PATH or postgres://USER@HOST:PORT/DB [default: sqlite://<data-dir>/draven.db]
    #[arg(
        long,
        env = "DRAVEN_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// A directory, or s3://bucket/prefix [default: <data-dir>/objects]
    #[arg(long, env = "DRAVEN_OBJECT_STORE", global = true)]
    pub object_store: Option<String>,
    /// S3 endpoint for S3-compatible stores (MinIO, Garage, …); credentials come from
    /// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, the region from AWS_REGION.
    #[arg(long, env = "DRAVEN_S3_ENDPOINT", global = true)]
    pub s3_endpoint: Option<String>,
}

/// Flags of `draven serve`.
#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "DRAVEN_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// 32-byte master key (64 hex chars or base64) that wraps secrets' data keys
    /// [default: <data-dir>/master.key, created with mode 0600 on first start]
    #[arg(long, env = "DRAVEN_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
    /// Token for the bootstrap admin created on first start, instead of a random one (≥ 16 chars)
    #[arg(long, env = "DRAVEN_BOOTSTRAP_TOKEN", hide_env_values = true)]
    pub bootstrap_token: Option<String>,
    /// Log format: json or text [default: json]
    #[arg(long, env = "DRAVEN_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Log filter, e.g. info or draven=debug,sqlx=warn [default: info]
    #[arg(long, env = "DRAVEN_LOG")]
    pub log: Option<String>,
    /// Largest request body in bytes [default: 10485760]
    #[arg(long, env = "DRAVEN_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Seconds an Idempotency-Key is remembered [default: 86400]
    #[arg(long, env = "DRAVEN_IDEMPOTENCY_TTL_SECS")]
    pub idempotency_ttl_secs: Option<u64>,
    /// Seconds between SIGTERM and closing the listener, while /readyz already says draining,
    /// so load balancers stop sending traffic [default: 0]
    #[arg(long, env = "DRAVEN_SHUTDOWN_DELAY_SECS")]
    pub shutdown_delay_secs: Option<u64>,
    /// Seconds in-flight requests get to finish after the listener closes [default: 30]
    #[arg(long, env = "DRAVEN_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// Seconds a runner's lease on a running job lasts without a heartbeat [default: 30]
    #[arg(long, env = "DRAVEN_RUNNER_LEASE_SECS")]
    pub runner_lease_secs: Option<u64>,
    /// Seconds a web UI session lasts after sign-in [default: 43200]
    #[arg(long, env = "DRAVEN_UI_SESSION_TTL_SECS")]
    pub ui_session_ttl_secs: Option<u64>,
    /// `Secure` on the web UI's cookies: true or false [default: only when the request came over
    /// HTTPS, as `X-Forwarded-Proto: https` says]
    #[arg(long, env = "DRAVEN_UI_SECURE_COOKIES")]
    pub ui_secure_cookies: Option<bool>,
    /// Where X-Callback-Url deliveries may go: comma-separated CIDRs and host patterns
    /// (`10.0.0.0/8,hooks.example.com,*.example.org`) [default: any public address]
    #[arg(long, env = "DRAVEN_CALLBACK_ALLOW")]
    pub callback_allow: Option<String>,
    /// Invocations per second per tenant, across its functions [default: unlimited]
    #[arg(long, env = "DRAVEN_TENANT_INVOKE_RATE")]
    pub tenant_invoke_rate: Option<u32>,
    /// Invocation records kept in memory for status queries [default: 50000]
    #[arg(long, env = "DRAVEN_INVOCATION_RETENTION")]
    pub invocation_retention: Option<usize>,
    /// Seconds a finished invocation's record (and Idempotency-Key) is kept [default: 3600]
    #[arg(long, env = "DRAVEN_INVOCATION_TTL_SECS")]
    pub invocation_ttl_secs: Option<u64>,
    /// Dead letters kept per function [default: 10000]
    #[arg(long, env = "DRAVEN_DLQ_CAPACITY")]
    pub dlq_capacity: Option<usize>,
    /// Draven's public base URL as pipelines and people reach it (callback URLs, links in
    /// notifications) [default: http://<listen>]
    #[arg(long, env = "DRAVEN_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Seconds between polls of a provider run (webhooks usually arrive first) [default: 15]
    #[arg(long, env = "DRAVEN_PROVIDER_POLL_SECS")]
    pub provider_poll_secs: Option<u64>,
    /// The Kubernetes executor (off unless configured).
    #[command(flatten)]
    pub kube: crate::kube::KubeArgs,
}

/// Flags of `draven runner`.
#[derive(Args, Debug, Clone)]
pub struct RunnerArgs {
    /// The Draven server's URL
    #[arg(long, env = "DRAVEN_SERVER")]
    pub server: String,
    /// A token allowed to run jobs (narrow it with the `runner` scope)
    #[arg(long, env = "DRAVEN_RUNNER_TOKEN", hide_env_values = true)]
    pub token: String,
    /// This runner's name (a-z, 0-9, '-')
    #[arg(long, env = "DRAVEN_RUNNER_NAME", default_value = "runner")]
    pub name: String,
    /// Where checkouts and the runner's state live
    #[arg(long, env = "DRAVEN_RUNNER_WORK_DIR", default_value = "./runner-work")]
    pub work_dir: PathBuf,
}

/// The TOML file: every key optional, unknown keys refused.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub object_store: Option<String>,
    pub s3_endpoint: Option<String>,
    pub master_key: Option<String>,
    pub bootstrap_token: Option<String>,
    pub log_format: Option<String>,
    pub log: Option<String>,
    pub max_body_bytes: Option<usize>,
    pub idempotency_ttl_secs: Option<u64>,
    pub shutdown_delay_secs: Option<u64>,
    pub shutdown_grace_secs: Option<u64>,
    pub runner_lease_secs: Option<u64>,
    pub ui_session_ttl_secs: Option<u64>,
    pub ui_secure_cookies: Option<bool>,
    pub callback_allow: Option<String>,
    pub tenant_invoke_rate: Option<u32>,
    pub invocation_retention: Option<usize>,
    pub invocation_ttl_secs: Option<u64>,
    pub dlq_capacity: Option<usize>,
    pub public_url: Option<String>,
    pub provider_poll_secs: Option<u64>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub object_store: String,
    pub s3_endpoint: Option<String>,
    pub master_key: Option<String>,
    pub bootstrap_token: Option<String>,
    pub log_json: bool,
    pub log: String,
    pub max_body_bytes: usize,
    pub idempotency_ttl: Duration,
    pub shutdown_delay: Duration,
    pub shutdown_grace: Duration,
    pub runner_lease: Duration,
    pub ui_session_ttl: Duration,
    pub ui_secure_cookies: Option<bool>,
    pub callback_allow: String,
    pub tenant_invoke_rate: Option<u32>,
    pub invocation_retention: usize,
    pub invocation_ttl: Duration,
    pub dlq_capacity: usize,
    pub public_url: String,
    pub provider_poll: Duration,
}

/// Every `DRAVEN_*` variable Draven reads; others are warned about (likely typos).
pub const KNOWN_ENV: &[&str] = &[
    "DRAVEN_CONFIG",
    "DRAVEN_DATA_DIR",
    "DRAVEN_DATABASE_URL",
    "DRAVEN_OBJECT_STORE",
    "DRAVEN_S3_ENDPOINT",
    "DRAVEN_LISTEN",
    "DRAVEN_MASTER_KEY",
    "DRAVEN_BOOTSTRAP_TOKEN",
    "DRAVEN_LOG_FORMAT",
    "DRAVEN_LOG",
    "DRAVEN_MAX_BODY_BYTES",
    "DRAVEN_IDEMPOTENCY_TTL_SECS",
    "DRAVEN_SHUTDOWN_DELAY_SECS",
    "DRAVEN_SHUTDOWN_GRACE_SECS",
    "DRAVEN_RUNNER_LEASE_SECS",
    "DRAVEN_UI_SESSION_TTL_SECS",
    "DRAVEN_UI_SECURE_COOKIES",
    "DRAVEN_CALLBACK_ALLOW",
    "DRAVEN_TENANT_INVOKE_RATE",
    "DRAVEN_INVOCATION_RETENTION",
    "DRAVEN_INVOCATION_TTL_SECS",
    "DRAVEN_DLQ_CAPACITY",
    "DRAVEN_PUBLIC_URL",
    "DRAVEN_PROVIDER_POLL_SECS",
    "DRAVEN_SERVER",
    "DRAVEN_RUNNER_TOKEN",
    "DRAVEN_RUNNER_NAME",
    "DRAVEN_RUNNER_WORK_DIR",
    "DRAVEN_KUBE_ENABLED",
    "DRAVEN_KUBE_NAMESPACE",
    "DRAVEN_KUBE_KUBECONFIG",
    "DRAVEN_KUBE_CONTEXT",
    "DRAVEN_KUBE_JOB_TTL_SECS",
    "DRAVEN_KUBE_IMAGE_PULL_POLICY",
    "DRAVEN_KUBE_MAX_JOB_PAYLOAD_BYTES",
    // Read by the test suite, not the server.
    "DRAVEN_TEST_DATABASE_URL",
    "DRAVEN_TEST_S3_ENDPOINT",
    "DRAVEN_TEST_S3_BUCKET",
    "DRAVEN_TEST_SMTP",
    "DRAVEN_TEST_SMTP_MAILDIR",
    "DRAVEN_BIN",
];

pub fn unknown_env_vars() -> Vec<String> {
    std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("DRAVEN_") && !KNOWN_ENV.contains(&k.as_str()))
        .collect()
}

fn load_file(path: Option<&Path>) -> Result<FileConfig> {
    let Some(path) = path else {
        return Ok(FileConfig::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
}

impl Config {
    pub fn resolve(args: &ServeArgs) -> Result<Config> {
        let file = load_file(args.store.config.as_deref())?;
        let data_dir = args
            .store
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./data"));
        let database_url = args
            .store
            .database_url
            .clone()
            .or(file.database_url)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("draven.db").display()));
        let object_store = args
            .store
            .object_store
            .clone()
            .or(file.object_store)
            .unwrap_or_else(|| data_dir.join("objects").display().to_string());
        let log_format = args
            .log_format
            .clone()
            .or(file.log_format)
            .unwrap_or_else(|| "json".into());
        let log_json = match log_format.as_str() {
            "json" => true,
            "text" => false,
            other => bail!("log format {other:?}: use json or text"),
        };
        let bootstrap_token = args
            .bootstrap_token
            .clone()
            .or(file.bootstrap_token)
            .filter(|t| !t.is_empty());
        if let Some(t) = &bootstrap_token {
            if t.len() < draven_store::identity::MIN_TOKEN_LEN {
                bail!(
                    "DRAVEN_BOOTSTRAP_TOKEN must have at least {} characters",
                    draven_store::identity::MIN_TOKEN_LEN
                );
            }
        }
        let listen = args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".parse().expect("valid address"));
        let public_url = args
            .public_url
            .clone()
            .or(file.public_url)
            .unwrap_or_else(|| format!("http://{listen}"));
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            bail!("DRAVEN_PUBLIC_URL must be an http(s) URL, not {public_url:?}");
        }
        Ok(Config {
            listen,
            data_dir,
            database_url,
            object_store,
            s3_endpoint: args.store.s3_endpoint.clone().or(file.s3_endpoint),
            master_key: args
                .master_key
                .clone()
                .or(file.master_key)
                .filter(|k| !k.is_empty()),
            bootstrap_token,
            log_json,
            log: args
                .log
                .clone()
                .or(file.log)
                .unwrap_or_else(|| "info".into()),
            max_body_bytes: args
                .max_body_bytes
                .or(file.max_body_bytes)
                .unwrap_or(10 * 1024 * 1024),
            idempotency_ttl: Duration::from_secs(
                args.idempotency_ttl_secs
                    .or(file.idempotency_ttl_secs)
                    .unwrap_or(86_400),
            ),
            shutdown_delay: Duration::from_secs(
                args.shutdown_delay_secs
                    .or(file.shutdown_delay_secs)
                    .unwrap_or(0),
            ),
            shutdown_grace: Duration::from_secs(
                args.shutdown_grace_secs
                    .or(file.shutdown_grace_secs)
                    .unwrap_or(30),
            ),
            runner_lease: Duration::from_secs(
                args.runner_lease_secs
                    .or(file.runner_lease_secs)
                    .unwrap_or(30)
                    .max(1),
            ),
            ui_session_ttl: Duration::from_secs(
                args.ui_session_ttl_secs
                    .or(file.ui_session_ttl_secs)
                    .unwrap_or(12 * 3600)
                    .max(60),
            ),
            ui_secure_cookies: args.ui_secure_cookies.or(file.ui_secure_cookies),
            callback_allow: args
                .callback_allow
                .clone()
                .or(file.callback_allow)
                .unwrap_or_default(),
            tenant_invoke_rate: args
                .tenant_invoke_rate
                .or(file.tenant_invoke_rate)
                .filter(|r| *r > 0),
            invocation_retention: args
                .invocation_retention
                .or(file.invocation_retention)
                .unwrap_or(50_000)
                .max(100),
            invocation_ttl: Duration::from_secs(
                args.invocation_ttl_secs
                    .or(file.invocation_ttl_secs)
                    .unwrap_or(3600)
                    .max(1),
            ),
            dlq_capacity: args
                .dlq_capacity
                .or(file.dlq_capacity)
                .unwrap_or(10_000)
                .max(1),
            public_url: public_url.trim_end_matches('/').to_owned(),
            provider_poll: Duration::from_secs(
                args.provider_poll_secs
                    .or(file.provider_poll_secs)
                    .unwrap_or(15)
                    .max(1),
            ),
        })
    }

    /// For commands that only need storage (`migrate`, `admin`).
    pub fn resolve_store(store: &StoreArgs) -> Result<Config> {
        Config::resolve(&ServeArgs {
            store: store.clone(),
            ..ServeArgs::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layering_flags_over_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("draven.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\ndata_dir = \"/srv/draven\"\nlog_format = \"text\"\n",
        )
        .unwrap();
        let mut args = ServeArgs {
            store: StoreArgs {
                config: Some(file.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.database_url, "sqlite:///srv/draven/draven.db");
        assert_eq!(c.object_store, "/srv/draven/objects");
        assert!(!c.log_json);
        assert_eq!(c.public_url, "http://127.0.0.1:9000");
        assert_eq!(c.provider_poll, Duration::from_secs(15));
        args.listen = Some("127.0.0.1:9100".parse().unwrap());
        args.store.data_dir = Some("/var/lib/draven".into());
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.listen.port(), 9100);
        assert_eq!(c.database_url, "sqlite:///var/lib/draven/draven.db");
    }

    #[test]
    fn file_errors_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("draven.toml");
        std::fs::write(&file, "lisen = \"x\"\n").unwrap();
        let args = ServeArgs {
            store: StoreArgs {
                config: Some(file),
                ..Default::default()
            },
            ..Default::default()
        };
        let err = format!("{:#}", Config::resolve(&args).unwrap_err());
        assert!(err.contains("unknown field `lisen`"), "{err}");
        let args = ServeArgs {
            bootstrap_token: Some("short".into()),
            ..Default::default()
        };
        assert!(Config::resolve(&args).is_err());
    }
}
