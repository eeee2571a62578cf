//! Draven's Kubernetes executor (SPEC F8): functions with a `container` runtime run in a
//! cluster, through kube-rs' client.
//!
//! - [`objects`]: the Job, Deployment and Service built from a definition (pure, schema-typed);
//! - [`job`]: `mode: job` — one `batch/v1` Job per attempt, watched to completion, its result
//!   read from the pod's log, its failures mapped to [`ExecError`]s, deleted afterwards;
//! - [`warm`]: `mode: warm` — a Deployment and a Service per function that the gateway calls
//!   over the HTTP contract, scaled between `min_replicas` and `max_replicas` (to zero when
//!   idle) by patching `replicas`;
//! - `fake` (feature `testing`): a fake API server speaking the Kubernetes REST API whose
//!   kubelet runs containers as local processes, so all of the above is tested without a
//!   cluster.
//!
//! Architecture invariant: this crate talks to the Kubernetes API only through `kube::Client`
//! and never reads or copies a secret's value; secrets are references the kubelet resolves.

pub mod job;
pub mod objects;
pub mod warm;

#[cfg(feature = "testing")]
pub mod fake;

use draven_core::{Error, ErrorCode};
use draven_functions::executor::{Deployed, Deployment, ExecError, Executor};
use draven_functions::spec::{ContainerMode, Runtime};
use std::path::PathBuf;
use std::sync::Arc;

/// How the executor behaves, whatever the credentials.
#[derive(Clone, Debug)]
pub struct KubeConfig {
    /// Where functions' objects are created.
    pub namespace: String,
    /// `ttlSecondsAfterFinished` of Jobs: the cluster's own clean-up should Draven die before
    /// deleting one.
    pub job_ttl_secs: i32,
    /// `imagePullPolicy` of function containers (`Always`, `IfNotPresent`, `Never`); unset:
    /// Kubernetes' default.
    pub image_pull_policy: Option<String>,
    /// Largest payload a Job-mode invocation accepts (it travels in an environment variable,
    /// base64-encoded; Linux caps one at 128 KiB).
    pub max_job_payload_bytes: usize,
    /// Largest answer read from a function (pod log or HTTP answer).
    pub max_answer_bytes: usize,
}

/// The default Job payload limit: 64 KiB (≈ 87 KiB of base64 in `DRAVEN_PAYLOAD`).
pub const DEFAULT_MAX_JOB_PAYLOAD: usize = 64 * 1024;

impl KubeConfig {
    pub fn new(namespace: impl Into<String>) -> KubeConfig {
        KubeConfig {
            namespace: namespace.into(),
            job_ttl_secs: 300,
            image_pull_policy: None,
            max_job_payload_bytes: DEFAULT_MAX_JOB_PAYLOAD,
            max_answer_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Where the API server and its credentials come from.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// kube's inference: `$KUBECONFIG` or `~/.kube/config`, else the in-cluster service
    /// account (`KUBERNETES_SERVICE_HOST` and the mounted token).
    Infer,
    /// An explicit kubeconfig file, with an optional context.
    Kubeconfig {
        path: PathBuf,
        context: Option<String>,
    },
}

/// Builds a client from the given credentials.
pub async fn client(credentials: &Credentials) -> Result<kube::Client, Error> {
    let config = match credentials {
        Credentials::Infer => kube::Config::infer()
            .await
            .map_err(|e| unavailable(format!("no Kubernetes configuration found: {e}")))?,
        Credentials::Kubeconfig { path, context } => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| unavailable(format!("kubeconfig {}: {e}", path.display())))?;
            let options = kube::config::KubeConfigOptions {
                context: context.clone(),
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| unavailable(format!("kubeconfig {}: {e}", path.display())))?
        }
    };
    kube::Client::try_from(config)
        .map_err(|e| unavailable(format!("cannot build the Kubernetes client: {e}")))
}

fn unavailable(message: String) -> Error {
    Error::new(ErrorCode::Unavailable, message)
}

/// The executor named `kubernetes`.
pub struct KubeExecutor {
    client: kube::Client,
    config: Arc<KubeConfig>,
}

impl KubeExecutor {
    pub fn new(client: kube::Client, config: KubeConfig) -> KubeExecutor {
        KubeExecutor {
            client,
            config: Arc::new(config),
        }
    }
}

impl Executor for KubeExecutor {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn secrets_by_reference(&self) -> bool {
        true
    }

    fn deploy(&self, deployment: Arc<Deployment>) -> Result<Arc<dyn Deployed>, Error> {
        match &deployment.spec.runtime {
            Runtime::Container {
                mode: ContainerMode::Job,
                ..
            } => Ok(Arc::new(job::JobRunner::new(
                self.client.clone(),
                self.config.clone(),
                deployment,
            ))),
            Runtime::Container {
                mode: ContainerMode::Warm,
                ..
            } => Ok(warm::WarmFunction::start(
                self.client.clone(),
                self.config.clone(),
                deployment,
            )),
            Runtime::Process { .. } => Err(Error::invalid(
                "runtime.kind",
                "the kubernetes executor runs container images, not local processes",
            )),
        }
    }
}

/// A Kubernetes API error as an invocation failure.
pub(crate) fn api_failure(what: &str, e: kube::Error) -> ExecError {
    match e {
        kube::Error::Api(s) if s.code == 403 => ExecError::Unavailable(format!(
            "{what}: forbidden by the cluster's RBAC ({}); see deploy/kubernetes/rbac.yaml",
            s.message
        )),
        kube::Error::Api(s) if s.code == 422 || s.code == 400 => {
            ExecError::Unavailable(format!("{what}: the cluster refused it: {}", s.message))
        }
        kube::Error::Api(s) => ExecError::Crashed(format!("{what}: {} ({})", s.message, s.code)),
        other => ExecError::Crashed(format!(
            "{what}: the Kubernetes API is unreachable: {other}"
        )),
    }
}
