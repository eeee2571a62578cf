//! Executors (SPEC F6–F8): where an invocation runs. An [`Executor`] binds a function
//! definition into a [`Deployed`] handle (a warm pool, a process spawner, a Kubernetes
//! Deployment) that the scheduler calls once per attempt. The engine never knows which kind it
//! holds: routing is the definition's `executor` name, recorded on every invocation.

pub mod http;
pub mod local;
pub mod pool;
pub mod process;

use crate::spec::FunctionSpec;
use bytes::Bytes;
use draven_core::Error;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a function is, as an executor needs it.
#[derive(Clone, Debug)]
pub struct Deployment {
    pub tenant: String,
    pub name: String,
    pub revision: i64,
    pub spec: FunctionSpec,
    /// `env` plus secrets resolved to their values (only `env` when the executor takes
    /// secrets by reference).
    pub env: Vec<(String, String)>,
}

/// One attempt of one invocation.
#[derive(Clone, Debug)]
pub struct ExecRequest {
    pub invocation_id: String,
    pub payload: Bytes,
    pub content_type: Option<String>,
    /// W3C `traceparent` of the invocation's span.
    pub traceparent: String,
    /// When the attempt must be over.
    pub deadline: Instant,
    /// The same, as Unix milliseconds (the `X-Deadline` header).
    pub deadline_unix_ms: i64,
}

/// What the function answered.
#[derive(Clone, Debug)]
pub struct ExecResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
    /// Set when this attempt had to start an instance: how long from spawn to the answer.
    pub cold_start: Option<Duration>,
}

/// Why an attempt did not produce an answer the caller should get as success.
#[derive(Clone, Debug, PartialEq)]
pub enum ExecError {
    /// The deadline passed; the execution was stopped.
    Timeout,
    /// The process died or the connection broke mid-invocation.
    Crashed(String),
    /// The function could not be started (bad command, spawn failure).
    Unavailable(String),
    /// The function answered with an error status (≥ 400) or exited non-zero.
    Failed {
        status: u16,
        content_type: Option<String>,
        body: Bytes,
    },
}

impl ExecError {
    /// Whether another attempt may help: crashes, timeouts and server-side (5xx) errors; not a
    /// 4xx (the input was refused) nor a function that cannot start.
    pub fn retryable(&self) -> bool {
        match self {
            ExecError::Timeout | ExecError::Crashed(_) => true,
            ExecError::Unavailable(_) => false,
            ExecError::Failed { status, .. } => *status >= 500 || *status == 429,
        }
    }

    /// A stable name for metrics and the invocation record.
    pub fn kind(&self) -> &'static str {
        match self {
            ExecError::Timeout => "timeout",
            ExecError::Crashed(_) => "crashed",
            ExecError::Unavailable(_) => "unavailable",
            ExecError::Failed { .. } => "error",
        }
    }

    pub fn message(&self) -> String {
        match self {
            ExecError::Timeout => "the invocation reached its deadline and was stopped".into(),
            ExecError::Crashed(m) => format!("the function instance crashed: {m}"),
            ExecError::Unavailable(m) => format!("the function could not be started: {m}"),
            ExecError::Failed { status, body, .. } => {
                let text = String::from_utf8_lossy(&body[..body.len().min(512)]);
                format!("the function answered {status}: {text}")
            }
        }
    }
}

/// Counts an executor reports about one function (for the API and the UI).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct InstanceStats {
    /// Instances running (warm pool) or processes alive.
    pub instances: usize,
    /// Of which serving an invocation now.
    pub busy: usize,
    /// Process ids of local instances (for operators: `kill`, `ps`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pids: Vec<u32>,
}

/// A function bound to an executor.
pub trait Deployed: Send + Sync + 'static {
    /// Runs one attempt. Must return by `req.deadline` (with [`ExecError::Timeout`]) and stop
    /// the execution when it does.
    fn invoke(&self, req: ExecRequest) -> BoxFuture<'_, Result<ExecResponse, ExecError>>;
    /// Stops everything it started.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
    fn stats(&self) -> InstanceStats;
}

/// A place functions run.
pub trait Executor: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Whether the definition's `secrets` name secrets of the executor's own platform, passed
    /// by reference (Kubernetes Secrets), rather than kernel secrets whose values the engine
    /// resolves into [`Deployment::env`].
    fn secrets_by_reference(&self) -> bool {
        false
    }
    /// Binds a definition. Cheap: instances start on demand.
    fn deploy(&self, deployment: Arc<Deployment>) -> Result<Arc<dyn Deployed>, Error>;
}
