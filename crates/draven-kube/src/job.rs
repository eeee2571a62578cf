//! `mode: job`: one `batch/v1` Job per attempt.
//!
//! The attempt creates the Job, then watches it (by name) and its pods (by the `job-name`
//! label) from the Job's resourceVersion — the watch API, never a polling loop — until the
//! pod ends, the Job fails, or the deadline passes. The result contract:
//!
//! - exit status 0: the pod's log (the container's output) is the answer, 200, JSON content
//!   type when it parses as JSON;
//! - non-zero exit: a failure (500, retried for async invocations) whose body is the
//!   termination message (`/dev/termination-log`, or the log's tail by
//!   `FallbackToLogsOnError`);
//! - `ErrImagePull`/`ImagePullBackOff`/`InvalidImageName`, `CreateContainerConfigError`
//!   (a missing Secret): the function cannot start — fails at once, not retried;
//! - `OOMKilled`, an eviction, a Job deleted by someone else: a crash (retried);
//! - the Job's `DeadlineExceeded` or Draven's own deadline: a timeout.
//!
//! Whatever happens — including the gateway dropping the attempt — the Job is deleted with
//! `propagationPolicy: Background` (its pods go with it); `ttlSecondsAfterFinished` is the
//! cluster's backstop.

use crate::objects::{self, JobInput, CONTAINER};
use crate::{api_failure, KubeConfig};
use bytes::Bytes;
use draven_functions::executor::{
    Deployed, Deployment, ExecError, ExecRequest, ExecResponse, InstanceStats,
};
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, LogParams, PostParams, WatchEvent, WatchParams};
use kube::Resource;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Waiting reasons that mean the container will never start by itself.
const CANNOT_START: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
];

pub struct JobRunner {
    jobs: Api<Job>,
    pods: Api<Pod>,
    config: Arc<KubeConfig>,
    deployment: Arc<Deployment>,
    running: Arc<AtomicUsize>,
}

impl JobRunner {
    pub fn new(
        client: kube::Client,
        config: Arc<KubeConfig>,
        deployment: Arc<Deployment>,
    ) -> JobRunner {
        JobRunner {
            jobs: Api::namespaced(client.clone(), &config.namespace),
            pods: Api::namespaced(client, &config.namespace),
            config,
            deployment,
            running: Arc::new(AtomicUsize::new(0)),
        }
    }

    async fn run(&self, req: ExecRequest) -> Result<ExecResponse, ExecError> {
        if req.payload.len() > self.config.max_job_payload_bytes {
            return Err(ExecError::Failed {
                status: 413,
                content_type: Some("text/plain".into()),
                body: Bytes::from(format!(
                    "the payload ({} bytes) exceeds the {} bytes a Kubernetes Job-mode function accepts (it travels in DRAVEN_PAYLOAD); use mode warm for larger payloads",
                    req.payload.len(),
                    self.config.max_job_payload_bytes
                )),
            });
        }
        let started = Instant::now();
        let name = objects::job_name(&self.deployment.name, &req.invocation_id);
        let left = req.deadline.saturating_duration_since(started);
        let job = objects::job(
            &self.deployment,
            &self.config,
            &JobInput {
                name: &name,
                req: &req,
                deadline_secs: left.as_millis().div_ceil(1000) as i64,
            },
        );
        let created = self
            .jobs
            .create(&PostParams::default(), &job)
            .await
            .map_err(|e| api_failure("creating the Job", e))?;
        let _running = Running::new(&self.running);
        // From here on the Job is deleted however this attempt ends (even dropped).
        let mut cleanup = Cleanup {
            jobs: self.jobs.clone(),
            name: name.clone(),
            armed: true,
        };
        let rv = created.meta().resource_version.clone().unwrap_or_default();
        let outcome = match tokio::time::timeout_at(req.deadline.into(), self.follow(&name, &rv))
            .await
        {
            Ok(o) => o,
            Err(_) => {
                tracing::warn!(function = %self.deployment.name, job = %name, invocation = %req.invocation_id, "invocation timed out: deleting its Job");
                Err(ExecError::Timeout)
            }
        };
        // The log is read before the Job goes: its pods are collected with it.
        let result = match outcome {
            Ok(pod) => self.answer(&pod, started).await,
            Err(e) => Err(e),
        };
        cleanup.now().await;
        result
    }

    /// The answer of a pod that exited 0: its log.
    async fn answer(&self, pod: &str, started: Instant) -> Result<ExecResponse, ExecError> {
        let log = self
            .pods
            .logs(
                pod,
                &LogParams {
                    container: Some(CONTAINER.into()),
                    limit_bytes: Some(self.config.max_answer_bytes as i64 + 1),
                    ..LogParams::default()
                },
            )
            .await
            .map_err(|e| api_failure("reading the pod's log", e))?;
        if log.len() > self.config.max_answer_bytes {
            return Err(ExecError::Failed {
                status: 502,
                content_type: None,
                body: Bytes::from_static(b"the answer exceeds the response size limit"),
            });
        }
        let body = Bytes::from(log);
        Ok(ExecResponse {
            status: 200,
            content_type: Some(sniff(&body).into()),
            body,
            // A Job is a cold start by nature: creation → answer.
            cold_start: Some(started.elapsed()),
        })
    }

    /// Watches the Job and its pods until an outcome: the name of the pod that succeeded, or
    /// the failure.
    async fn follow(&self, name: &str, rv: &str) -> Result<String, ExecError> {
        let mut events = futures::stream::select(
            watch(
                self.jobs.clone(),
                WatchParams::default().fields(&format!("metadata.name={name}")),
                rv.to_owned(),
            )
            .map(|e| e.map(|e| Seen::Job(Box::new(e))))
            .boxed(),
            watch(
                self.pods.clone(),
                WatchParams::default().labels(&format!("job-name={name}")),
                rv.to_owned(),
            )
            .map(|e| e.map(|e| Seen::Pod(Box::new(e))))
            .boxed(),
        );
        while let Some(seen) = events.next().await {
            let verdict = match seen? {
                Seen::Job(ev) => match *ev {
                    WatchEvent::Deleted(_) => Some(Err(ExecError::Crashed(format!(
                        "the Job {name} was deleted before it finished"
                    )))),
                    WatchEvent::Added(j) | WatchEvent::Modified(j) => job_verdict(&j),
                    _ => None,
                },
                Seen::Pod(ev) => match *ev {
                    WatchEvent::Added(p) | WatchEvent::Modified(p) | WatchEvent::Deleted(p) => {
                        pod_verdict(&p, &self.deployment)
                    }
                    _ => None,
                },
            };
            if let Some(v) = verdict {
                return v;
            }
        }
        Err(ExecError::Crashed(
            "the watch ended without an outcome".into(),
        ))
    }
}

enum Seen {
    Job(Box<WatchEvent<Job>>),
    Pod(Box<WatchEvent<Pod>>),
}

/// A watch that resumes from the last resourceVersion when the server ends it, and fails on
/// an error event (a 410 Gone cannot happen within one attempt's lifetime in practice; it is
/// reported rather than papered over).
fn watch<K>(
    api: Api<K>,
    params: WatchParams,
    rv: String,
) -> BoxStream<'static, Result<WatchEvent<K>, ExecError>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    type Inner<K> = BoxStream<'static, kube::Result<WatchEvent<K>>>;
    struct State<K> {
        api: Api<K>,
        params: WatchParams,
        rv: String,
        inner: Option<Inner<K>>,
    }
    let state = State {
        api,
        params,
        rv,
        inner: None,
    };
    futures::stream::unfold(Some(state), |state| async move {
        let mut s = state?;
        loop {
            let inner = match s.inner.as_mut() {
                Some(i) => i,
                None => match s.api.watch(&s.params, &s.rv).await {
                    Ok(stream) => s.inner.insert(stream.boxed()),
                    Err(e) => return Some((Err(api_failure("watching", e)), None)),
                },
            };
            match inner.next().await {
                None => s.inner = None,
                Some(Ok(WatchEvent::Error(e))) => {
                    let e =
                        ExecError::Crashed(format!("the watch failed: {} ({})", e.message, e.code));
                    return Some((Err(e), None));
                }
                Some(Ok(WatchEvent::Bookmark(b))) => s.rv = b.metadata.resource_version,
                Some(Ok(ev)) => {
                    if let WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) =
                        &ev
                    {
                        if let Some(v) = &o.meta().resource_version {
                            s.rv = v.clone();
                        }
                    }
                    return Some((Ok(ev), Some(s)));
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "watch interrupted; resuming");
                    s.inner = None;
                }
            }
        }
    })
    .boxed()
}

/// What a Job's conditions say: only a deadline or an unexplained failure decide here (a
/// pod's own state explains the rest).
fn job_verdict(job: &Job) -> Option<Result<String, ExecError>> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    let failed = conditions
        .iter()
        .find(|c| c.type_ == "Failed" && c.status == "True")?;
    match failed.reason.as_deref() {
        Some("DeadlineExceeded") => Some(Err(ExecError::Timeout)),
        // BackoffLimitExceeded and the like: the pod's terminated state says why.
        _ => None,
    }
}

/// What a pod's state says about the attempt.
pub fn pod_verdict(pod: &Pod, d: &Deployment) -> Option<Result<String, ExecError>> {
    let status = pod.status.as_ref()?;
    let name = pod.metadata.name.clone().unwrap_or_default();
    if status.reason.as_deref() == Some("Evicted") {
        return Some(Err(ExecError::Crashed(format!(
            "the pod {name} was evicted: {}",
            status.message.as_deref().unwrap_or("no message")
        ))));
    }
    let container = status
        .container_statuses
        .as_ref()
        .and_then(|cs| cs.iter().find(|c| c.name == CONTAINER));
    let state = container.and_then(|c| c.state.as_ref());
    if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
        let reason = w.reason.as_deref().unwrap_or("");
        if CANNOT_START.contains(&reason) {
            let image = container.map(|c| c.image.as_str()).unwrap_or("");
            let what = if reason.contains("Image") {
                format!("the image {image:?} cannot be pulled")
            } else {
                "the container cannot be created (a missing Secret or key?)".to_owned()
            };
            return Some(Err(ExecError::Unavailable(format!(
                "{what} ({reason}): {}",
                w.message.as_deref().unwrap_or("no message")
            ))));
        }
    }
    if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
        if t.exit_code == 0 {
            return Some(Ok(name));
        }
        if t.reason.as_deref() == Some("OOMKilled") {
            let limit = d
                .spec
                .resources
                .memory
                .as_deref()
                .unwrap_or("the node's memory");
            return Some(Err(ExecError::Crashed(format!(
                "out of memory: the container exceeded its memory limit ({limit}) and was OOMKilled"
            ))));
        }
        let message = t
            .message
            .clone()
            .filter(|m| !m.trim().is_empty())
            .unwrap_or_else(|| format!("exited with status {}", t.exit_code));
        return Some(Err(ExecError::Failed {
            status: 500,
            content_type: Some("text/plain".into()),
            body: Bytes::from(message),
        }));
    }
    if status.phase.as_deref() == Some("Failed") {
        return Some(Err(ExecError::Crashed(format!(
            "the pod {name} failed: {} {}",
            status.reason.as_deref().unwrap_or(""),
            status.message.as_deref().unwrap_or("")
        ))));
    }
    None
}

/// `application/json` when the output parses as JSON, else text.
fn sniff(body: &[u8]) -> &'static str {
    if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    }
}

/// Deletes the Job (and, in the background, its pods) when the attempt ends or is dropped.
struct Cleanup {
    jobs: Api<Job>,
    name: String,
    armed: bool,
}

impl Cleanup {
    async fn now(&mut self) {
        self.armed = false;
        delete(&self.jobs, &self.name).await;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.armed {
            let (jobs, name) = (self.jobs.clone(), std::mem::take(&mut self.name));
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { delete(&jobs, &name).await });
            }
        }
    }
}

async fn delete(jobs: &Api<Job>, name: &str) {
    match jobs.delete(name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => {
            tracing::warn!(job = %name, error = %e, "cannot delete a function's Job; ttlSecondsAfterFinished will")
        }
    }
}

/// Counts attempts in flight for [`InstanceStats`].
struct Running(Arc<AtomicUsize>);

impl Running {
    fn new(n: &Arc<AtomicUsize>) -> Running {
        n.fetch_add(1, Ordering::Relaxed);
        Running(n.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Deployed for JobRunner {
    fn invoke(&self, req: ExecRequest) -> BoxFuture<'_, Result<ExecResponse, ExecError>> {
        Box::pin(self.run(req))
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        // Nothing outlives an attempt: each one deletes its Job.
        Box::pin(async {})
    }

    fn stats(&self) -> InstanceStats {
        let n = self.running.load(Ordering::Relaxed);
        InstanceStats {
            instances: n,
            busy: n,
            pids: Vec::new(),
        }
    }
}
