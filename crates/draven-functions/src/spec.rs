//! Function definitions (SPEC F1): the JSON document a tenant stores per function, parsed and
//! validated here so that every rule names the offending field.

use draven_core::{Error, ErrorCode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Limits the server puts on every definition.
#[derive(Clone, Copy, Debug)]
pub struct SpecLimits {
    /// The largest payload any function may accept (the HTTP body limit).
    pub max_payload_bytes: usize,
    pub max_timeout_ms: u64,
    pub max_queue_capacity: usize,
    pub max_concurrency: usize,
}

impl Default for SpecLimits {
    fn default() -> SpecLimits {
        SpecLimits {
            max_payload_bytes: 10 * 1024 * 1024,
            max_timeout_ms: 15 * 60 * 1000,
            max_queue_capacity: 1_000_000,
            max_concurrency: 1024,
        }
    }
}

/// A function definition as stored and returned by the API.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FunctionSpec {
    #[serde(default)]
    pub description: String,
    pub runtime: Runtime,
    /// Where it runs: `local` (processes on this server) or `kubernetes`.
    #[serde(default = "default_executor")]
    pub executor: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Environment variables whose values come from the tenant's kernel secrets.
    #[serde(default)]
    pub secrets: Vec<SecretRef>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Retries of a failed asynchronous invocation (retryable failures only).
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default)]
    pub backoff: Backoff,
    /// Executions at once, across sync and async.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// Invocations waiting for a slot; full → 429.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Largest payload accepted (413 above); default 6 MiB or the server's body limit.
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
    /// Invocations per second allowed for this function (429 above); absent: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// JSON Schema the payload must satisfy (422 naming the failing field otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<serde_json::Value>,
    /// Kernel secret whose value signs `X-Callback-Url` deliveries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_secret: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Runtime {
    /// A program on the server. `mode` `pool` keeps warm processes that speak the HTTP contract;
    /// `process` starts one per invocation with the payload on stdin and the result on stdout.
    Process {
        command: String,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default)]
        mode: ProcessMode,
        #[serde(default)]
        pool: PoolSettings,
    },
    /// An image (for the Kubernetes executor).
    Container {
        image: String,
        #[serde(default)]
        command: Vec<String>,
        #[serde(default)]
        args: Vec<String>,
        /// `job`: a Kubernetes Job per invocation; `warm`: a Deployment and Service serving the
        /// HTTP contract, scaled by Draven.
        #[serde(default)]
        mode: ContainerMode,
        #[serde(default)]
        warm: WarmSettings,
    },
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ContainerMode {
    #[default]
    Job,
    Warm,
}

/// How a `warm` container function is scaled.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WarmSettings {
    /// Replicas kept even when idle (0: scale to zero).
    #[serde(default)]
    pub min_replicas: u32,
    #[serde(default = "default_max_replicas")]
    pub max_replicas: u32,
    /// Idle this long, the function scales down to `min_replicas`.
    #[serde(default = "default_idle_ms")]
    pub idle_timeout_ms: u64,
    /// The container port serving the HTTP contract (`PORT`).
    #[serde(default = "default_warm_port")]
    pub port: u16,
}

impl Default for WarmSettings {
    fn default() -> WarmSettings {
        WarmSettings {
            min_replicas: 0,
            max_replicas: default_max_replicas(),
            idle_timeout_ms: default_idle_ms(),
            port: default_warm_port(),
        }
    }
}

fn default_max_replicas() -> u32 {
    4
}
fn default_warm_port() -> u16 {
    8080
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProcessMode {
    #[default]
    Pool,
    Process,
}

/// How the warm pool of a `pool` function behaves.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PoolSettings {
    /// Instances kept even when idle.
    #[serde(default)]
    pub min_instances: usize,
    /// Invocations one instance serves at once (1: one at a time, as AWS Lambda).
    #[serde(default = "one")]
    pub instance_concurrency: usize,
    /// An instance idle this long is stopped.
    #[serde(default = "default_idle_ms")]
    pub idle_timeout_ms: u64,
    /// `socket`: Draven binds the listening socket and hands it to the process as fd 3
    /// (`LISTEN_FDS=1`), so the first request needs no readiness polling. `port`: the process
    /// binds `PORT` itself and Draven waits until it accepts connections.
    #[serde(default)]
    pub startup: Startup,
}

impl Default for PoolSettings {
    fn default() -> PoolSettings {
        PoolSettings {
            min_instances: 0,
            instance_concurrency: 1,
            idle_timeout_ms: default_idle_ms(),
            startup: Startup::Socket,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Startup {
    #[default]
    Socket,
    Port,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// The environment variable the function sees.
    pub env: String,
    /// The kernel secret's name; on the Kubernetes executor, the Kubernetes Secret's name.
    pub secret: String,
    /// Kubernetes executor: the key within the Secret (default `value`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Kubernetes quantities (`500m`, `256Mi`); the local executor records them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    #[serde(default = "default_backoff_initial")]
    pub initial_ms: u64,
    #[serde(default = "default_backoff_max")]
    pub max_ms: u64,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            initial_ms: default_backoff_initial(),
            max_ms: default_backoff_max(),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: u32,
    #[serde(default)]
    pub burst: Option<u32>,
}

fn default_executor() -> String {
    "local".into()
}
fn default_timeout_ms() -> u64 {
    30_000
}
fn default_retries() -> u32 {
    3
}
fn default_max_concurrency() -> usize {
    16
}
fn default_queue_capacity() -> usize {
    1000
}
/// 0 stands for "the server's default": 6 MiB or the body limit, whichever is smaller.
fn default_max_payload() -> usize {
    0
}

const DEFAULT_MAX_PAYLOAD: usize = 6 * 1024 * 1024;
fn default_idle_ms() -> u64 {
    5 * 60 * 1000
}
fn default_backoff_initial() -> u64 {
    200
}
fn default_backoff_max() -> u64 {
    30_000
}
fn one() -> usize {
    1
}

/// Environment variables the executors set themselves.
const RESERVED_ENV: &[&str] = &[
    "PORT",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "LISTEN_PID",
    "DRAVEN_FUNCTION",
    "DRAVEN_INVOCATION_ID",
    "DRAVEN_DEADLINE",
    "TRACEPARENT",
];

fn env_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl FunctionSpec {
    /// Parses and validates a definition; the first problem names its field.
    pub fn parse(
        json: &[u8],
        limits: &SpecLimits,
        executors: &[&str],
    ) -> Result<FunctionSpec, Error> {
        let mut de = serde_json::Deserializer::from_slice(json);
        let spec: FunctionSpec = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let mut field = if path == "." { String::new() } else { path };
            let inner = e.into_inner();
            // serde names an unknown field only in its message: name it as the field too.
            let text = inner.to_string();
            if let Some(rest) = text.strip_prefix("unknown field `") {
                if let Some(name) = rest.split('`').next() {
                    // The path may already end at the unknown field.
                    field = if field == name || field.ends_with(&format!(".{name}")) {
                        field
                    } else if field.is_empty() {
                        name.to_owned()
                    } else {
                        format!("{field}.{name}")
                    };
                }
            }
            if inner.is_syntax() || inner.is_eof() {
                Error::new(ErrorCode::MalformedBody, format!("not valid JSON: {inner}"))
            } else {
                Error::invalid(&field, inner.to_string())
            }
        })?;
        let mut spec = spec;
        if spec.max_payload_bytes == 0 {
            spec.max_payload_bytes = DEFAULT_MAX_PAYLOAD.min(limits.max_payload_bytes);
        }
        spec.validate(limits, executors)?;
        Ok(spec)
    }

    pub fn validate(&self, limits: &SpecLimits, executors: &[&str]) -> Result<(), Error> {
        if !executors.contains(&self.executor.as_str()) {
            return Err(Error::invalid(
                "executor",
                format!(
                    "executor {:?} is not available on this server (available: {})",
                    self.executor,
                    executors.join(", ")
                ),
            ));
        }
        match &self.runtime {
            Runtime::Process {
                command,
                args,
                pool,
                ..
            } => {
                if command.trim().is_empty() {
                    return Err(Error::invalid(
                        "runtime.command",
                        "command must not be empty",
                    ));
                }
                if command.contains('\0') || args.iter().any(|a| a.contains('\0')) {
                    return Err(Error::invalid(
                        "runtime.args",
                        "arguments must not contain NUL",
                    ));
                }
                if self.executor != "local" {
                    return Err(Error::invalid(
                        "runtime.kind",
                        "a process runtime runs on the local executor; give a container image for kubernetes",
                    ));
                }
                if pool.instance_concurrency == 0 || pool.instance_concurrency > 1024 {
                    return Err(Error::invalid(
                        "runtime.pool.instance_concurrency",
                        "instance_concurrency must be 1-1024",
                    ));
                }
                if pool.min_instances > self.max_concurrency {
                    return Err(Error::invalid(
                        "runtime.pool.min_instances",
                        "min_instances must not exceed max_concurrency",
                    ));
                }
                if pool.idle_timeout_ms < 100 {
                    return Err(Error::invalid(
                        "runtime.pool.idle_timeout_ms",
                        "idle_timeout_ms must be at least 100",
                    ));
                }
            }
            Runtime::Container { image, warm, .. } => {
                if image.trim().is_empty() || image.contains(char::is_whitespace) {
                    return Err(Error::invalid(
                        "runtime.image",
                        "image must be an image reference",
                    ));
                }
                if warm.max_replicas == 0 || warm.min_replicas > warm.max_replicas {
                    return Err(Error::invalid(
                        "runtime.warm.max_replicas",
                        "max_replicas must be at least 1 and at least min_replicas",
                    ));
                }
                if warm.port == 0 {
                    return Err(Error::invalid("runtime.warm.port", "port must be 1-65535"));
                }
                if warm.idle_timeout_ms < 100 {
                    return Err(Error::invalid(
                        "runtime.warm.idle_timeout_ms",
                        "idle_timeout_ms must be at least 100",
                    ));
                }
                if self.executor == "local" {
                    return Err(Error::invalid(
                        "runtime.kind",
                        "the local executor runs processes; a container runtime needs executor kubernetes",
                    ));
                }
            }
        }
        for name in self.env.keys() {
            if !env_name_ok(name) {
                return Err(Error::invalid(
                    &format!("env.{name}"),
                    "environment variable names are letters, digits and _ (not starting with a digit)",
                ));
            }
            if RESERVED_ENV.contains(&name.as_str()) {
                return Err(Error::invalid(
                    &format!("env.{name}"),
                    format!("{name} is set by Draven"),
                ));
            }
        }
        for (i, s) in self.secrets.iter().enumerate() {
            if !env_name_ok(&s.env) || RESERVED_ENV.contains(&s.env.as_str()) {
                return Err(Error::invalid(
                    &format!("secrets[{i}].env"),
                    "not a usable environment variable name",
                ));
            }
            draven_core::Slug::parse(&format!("secrets[{i}].secret"), &s.secret)?;
            if let Some(key) = &s.key {
                let ok = !key.is_empty()
                    && key.len() <= 253
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                if !ok {
                    return Err(Error::invalid(
                        &format!("secrets[{i}].key"),
                        "a Secret key is letters, digits, '-', '_' and '.'",
                    ));
                }
            }
        }
        if self.timeout_ms == 0 || self.timeout_ms > limits.max_timeout_ms {
            return Err(Error::invalid(
                "timeout_ms",
                format!("timeout_ms must be 1-{}", limits.max_timeout_ms),
            ));
        }
        if self.retries > 10 {
            return Err(Error::invalid("retries", "retries must be 0-10"));
        }
        if self.backoff.initial_ms == 0 || self.backoff.max_ms < self.backoff.initial_ms {
            return Err(Error::invalid(
                "backoff",
                "backoff needs initial_ms ≥ 1 and max_ms ≥ initial_ms",
            ));
        }
        if self.max_concurrency == 0 || self.max_concurrency > limits.max_concurrency {
            return Err(Error::invalid(
                "max_concurrency",
                format!("max_concurrency must be 1-{}", limits.max_concurrency),
            ));
        }
        if self.queue_capacity == 0 || self.queue_capacity > limits.max_queue_capacity {
            return Err(Error::invalid(
                "queue_capacity",
                format!("queue_capacity must be 1-{}", limits.max_queue_capacity),
            ));
        }
        if self.max_payload_bytes == 0 || self.max_payload_bytes > limits.max_payload_bytes {
            return Err(Error::invalid(
                "max_payload_bytes",
                format!(
                    "max_payload_bytes must be 1-{} (the server's body limit)",
                    limits.max_payload_bytes
                ),
            ));
        }
        if let Some(r) = &self.rate_limit {
            if r.per_second == 0 || r.burst == Some(0) {
                return Err(Error::invalid(
                    "rate_limit",
                    "per_second and burst must be at least 1",
                ));
            }
        }
        if let Some(schema) = &self.input_schema {
            jsonschema::validator_for(schema).map_err(|e| {
                Error::invalid("input_schema", format!("not a usable JSON Schema: {e}"))
            })?;
        }
        if let Some(s) = &self.callback_secret {
            draven_core::Slug::parse("callback_secret", s)?;
        }
        Ok(())
    }

    /// The warm pool's size bound: enough instances for `max_concurrency`.
    pub fn max_instances(&self) -> usize {
        match &self.runtime {
            Runtime::Process { pool, .. } => {
                self.max_concurrency.div_ceil(pool.instance_concurrency)
            }
            Runtime::Container { .. } => self.max_concurrency,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str, field: Option<&str>) {
        let r = FunctionSpec::parse(json.as_bytes(), &SpecLimits::default(), &["local"]);
        match (r, field) {
            (Ok(_), None) => {}
            (Err(e), Some(f)) => assert_eq!(e.field.as_deref(), Some(f), "{json}: {e:?}"),
            (r, f) => panic!("{json}: expected field {f:?}, got {r:?}"),
        }
    }

    #[test]
    fn definitions_are_checked_field_by_field() {
        check(
            r#"{"runtime":{"kind":"process","command":"/bin/cat"}}"#,
            None,
        );
        check(
            r#"{"runtime":{"kind":"process","command":""}}"#,
            Some("runtime.command"),
        );
        // Inside the tagged runtime serde reports the runtime as a whole (the message names `fork`).
        check(
            r#"{"runtime":{"kind":"process","command":"x","mode":"fork"}}"#,
            Some("runtime"),
        );
        check(
            r#"{"runtime":{"kind":"container","image":"a/b:1"}}"#,
            Some("runtime.kind"),
        );
        check(
            r#"{"runtime":{"kind":"process","command":"x"},"executor":"kubernetes"}"#,
            Some("executor"),
        );
        check(
            r#"{"runtime":{"kind":"process","command":"x"},"timeout_ms":0}"#,
            Some("timeout_ms"),
        );
        check(
            r#"{"runtime":{"kind":"process","command":"x"},"retries":11}"#,
            Some("retries"),
        );
        check(
            r#"{"runtime":{"kind":"process","command":"x"},"env":{"PORT":"1"}}"#,
            Some("env.PORT"),
        );
        check(
            r#"{"runtime":{"kind":"process","command":"x"},"env":{"1A":"1"}}"#,
            Some("env.1A"),
        );
        check(
            r#"{"runtime":{"kind":"process","command":"x"},"secrets":[{"env":"A","secret":"Bad Name"}]}"#,
            Some("secrets[0].secret"),
        );
        check(
            r#"{"runtime":{"kind":"process","command":"x"},"input_schema":{"type":"nope"}}"#,
            Some("input_schema"),
        );
        check(
            r#"{"runtime":{"kind":"process","command":"x"},"queue_capacity":0}"#,
            Some("queue_capacity"),
        );
        check(
            r#"{"runtime":{"kind":"process","command":"x"},"colour":"red"}"#,
            Some("colour"),
        );
        check(
            r#"{"runtime":{"kind":"process","command":"x","pool":{"instance_concurrency":0}}}"#,
            Some("runtime.pool.instance_concurrency"),
        );
    }

    #[test]
    fn defaults_follow_the_spec() {
        let s = FunctionSpec::parse(
            br#"{"runtime":{"kind":"process","command":"x"}}"#,
            &SpecLimits::default(),
            &["local"],
        )
        .unwrap();
        assert_eq!(s.retries, 3);
        assert_eq!(s.executor, "local");
        assert_eq!(s.max_instances(), 16);
    }
}
