//! Configuration of the optional Kubernetes executor (SPEC F8): the `DRAVEN_KUBE_*` flags and
//! the executor they build. With none of them set, nothing here runs and `draven serve` starts
//! exactly as without Kubernetes.

use anyhow::{bail, Context, Result};
use clap::Args;
use draven_functions::executor::Executor;
use std::path::PathBuf;
use std::sync::Arc;

/// Flags of `draven serve` for the Kubernetes executor.
#[derive(Args, Debug, Clone, Default)]
pub struct KubeArgs {
    /// Register the `kubernetes` executor [default: true when a namespace or kubeconfig is set]
    #[arg(long, env = "DRAVEN_KUBE_ENABLED")]
    pub kube_enabled: Option<bool>,
    /// Namespace functions run in [default: the kubeconfig context's, or the service
    /// account's in a cluster]
    #[arg(long, env = "DRAVEN_KUBE_NAMESPACE")]
    pub kube_namespace: Option<String>,
    /// A kubeconfig file [default: $KUBECONFIG, ~/.kube/config, else in-cluster credentials]
    #[arg(long, env = "DRAVEN_KUBE_KUBECONFIG")]
    pub kube_kubeconfig: Option<PathBuf>,
    /// The kubeconfig context [default: its current context]
    #[arg(long, env = "DRAVEN_KUBE_CONTEXT")]
    pub kube_context: Option<String>,
    /// ttlSecondsAfterFinished of function Jobs [default: 300]
    #[arg(long, env = "DRAVEN_KUBE_JOB_TTL_SECS")]
    pub kube_job_ttl_secs: Option<i32>,
    /// imagePullPolicy of function containers: Always, IfNotPresent or Never [default:
    /// Kubernetes' own]
    #[arg(long, env = "DRAVEN_KUBE_IMAGE_PULL_POLICY")]
    pub kube_image_pull_policy: Option<String>,
    /// Largest payload of a Job-mode invocation (it travels in DRAVEN_PAYLOAD) [default: 65536]
    #[arg(long, env = "DRAVEN_KUBE_MAX_JOB_PAYLOAD_BYTES")]
    pub kube_max_job_payload_bytes: Option<usize>,
}

impl KubeArgs {
    pub fn enabled(&self) -> bool {
        self.kube_enabled
            .unwrap_or(self.kube_namespace.is_some() || self.kube_kubeconfig.is_some())
    }
}

/// The Kubernetes executor, when enabled; its credentials are checked now so that a bad
/// configuration stops the start with a clear message.
pub async fn executor(args: &KubeArgs) -> Result<Option<Arc<dyn Executor>>> {
    if !args.enabled() {
        return Ok(None);
    }
    let credentials = match &args.kube_kubeconfig {
        Some(path) => draven_kube::Credentials::Kubeconfig {
            path: path.clone(),
            context: args.kube_context.clone(),
        },
        None => draven_kube::Credentials::Infer,
    };
    let client = draven_kube::client(&credentials)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))
        .context("DRAVEN_KUBE_*: the Kubernetes executor is enabled")?;
    let namespace = args
        .kube_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let mut config = draven_kube::KubeConfig::new(namespace);
    if let Some(ttl) = args.kube_job_ttl_secs {
        config.job_ttl_secs = ttl.max(0);
    }
    if let Some(p) = &args.kube_image_pull_policy {
        if !["Always", "IfNotPresent", "Never"].contains(&p.as_str()) {
            bail!("DRAVEN_KUBE_IMAGE_PULL_POLICY must be Always, IfNotPresent or Never, not {p:?}");
        }
        config.image_pull_policy = Some(p.clone());
    }
    if let Some(n) = args.kube_max_job_payload_bytes {
        config.max_job_payload_bytes = n.clamp(1, 96 * 1024);
    }
    tracing::info!(namespace = %config.namespace, "Kubernetes executor enabled");
    Ok(Some(Arc::new(draven_kube::KubeExecutor::new(
        client, config,
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn off_unless_configured_and_kubeconfig_is_honoured() {
        assert!(executor(&KubeArgs::default()).await.unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\ncurrent-context: test\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:1\ncontexts:\n- name: test\n  context:\n    cluster: c\n    user: u\n    namespace: fns\nusers:\n- name: u\n  user:\n    token: abc\n",
        )
        .unwrap();
        let args = KubeArgs {
            kube_kubeconfig: Some(path),
            ..KubeArgs::default()
        };
        let e = executor(&args)
            .await
            .unwrap()
            .expect("enabled by the kubeconfig");
        assert_eq!(e.name(), "kubernetes");
        let bad = KubeArgs {
            kube_enabled: Some(true),
            kube_kubeconfig: Some(dir.path().join("missing")),
            ..KubeArgs::default()
        };
        let err = format!("{:#}", executor(&bad).await.err().unwrap());
        assert!(err.contains("DRAVEN_KUBE_"), "{err}");
        let bad = KubeArgs {
            kube_image_pull_policy: Some("Sometimes".into()),
            ..args
        };
        assert!(executor(&bad).await.is_err());
    }
}
