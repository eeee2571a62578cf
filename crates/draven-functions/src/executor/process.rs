//! One process per invocation: the payload on stdin, the answer on stdout, exit status 0 for
//! success. The process gets `DRAVEN_INVOCATION_ID`, `TRACEPARENT` and `DRAVEN_DEADLINE`; at the
//! deadline its process group is killed.

use super::local::{command, kill_group, LocalConfig};
use super::{Deployed, Deployment, ExecError, ExecRequest, ExecResponse, InstanceStats};
use bytes::Bytes;
use futures::future::BoxFuture;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct ProcessRunner {
    deployment: Arc<Deployment>,
    config: Arc<LocalConfig>,
    running: AtomicUsize,
}

impl ProcessRunner {
    pub fn new(deployment: Arc<Deployment>, config: Arc<LocalConfig>) -> ProcessRunner {
        ProcessRunner {
            deployment,
            config,
            running: AtomicUsize::new(0),
        }
    }

    async fn run(&self, req: ExecRequest) -> Result<ExecResponse, ExecError> {
        let started = Instant::now();
        let mut cmd = command(&self.deployment, &self.config)
            .map_err(|e| ExecError::Unavailable(e.to_string()))?;
        cmd.env("DRAVEN_INVOCATION_ID", &req.invocation_id)
            .env("TRACEPARENT", &req.traceparent)
            .env("DRAVEN_DEADLINE", req.deadline_unix_ms.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some(ct) = &req.content_type {
            cmd.env("CONTENT_TYPE", ct);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| ExecError::Unavailable(format!("{}: {e}", self.command_name())))?;
        let pid = child.id().unwrap_or(0);
        // However the attempt ends (done, timed out, or dropped because its caller went away),
        // the program's whole process group goes with it.
        let _group = Group(pid);
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let limit = self.config.max_answer_bytes;
        let work = async {
            let payload = req.payload.clone();
            let writer = async move {
                // A program that does not read its input is not an error.
                let _ = stdin.write_all(&payload).await;
                drop(stdin);
            };
            let reader = async {
                let mut out = Vec::new();
                (&mut stdout)
                    .take(limit as u64 + 1)
                    .read_to_end(&mut out)
                    .await
                    .map(|_| out)
            };
            let ((), out) = tokio::join!(writer, reader);
            let out = out.map_err(|e| ExecError::Crashed(e.to_string()))?;
            let status = child
                .wait()
                .await
                .map_err(|e| ExecError::Crashed(e.to_string()))?;
            Ok::<_, ExecError>((status, out))
        };
        let (status, out) = match tokio::time::timeout_at(req.deadline.into(), work).await {
            Ok(r) => r?,
            Err(_) => return Err(ExecError::Timeout),
        };
        if out.len() > limit {
            return Err(ExecError::Failed {
                status: 502,
                content_type: None,
                body: Bytes::from_static(b"the answer exceeds the response size limit"),
            });
        }
        let body = Bytes::from(out);
        let content_type = Some(sniff(&body).to_owned());
        if status.success() {
            Ok(ExecResponse {
                status: 200,
                content_type,
                body,
                cold_start: Some(started.elapsed()),
            })
        } else if let Some(code) = status.code() {
            Err(ExecError::Failed {
                status: 500,
                content_type,
                body: if body.is_empty() {
                    Bytes::from(format!("exited with status {code}"))
                } else {
                    body
                },
            })
        } else {
            Err(ExecError::Crashed(format!("killed by a signal ({status})")))
        }
    }

    fn command_name(&self) -> String {
        match &self.deployment.spec.runtime {
            crate::spec::Runtime::Process { command, .. } => command.clone(),
            crate::spec::Runtime::Container { image, .. } => image.clone(),
        }
    }
}

/// JSON when the output parses as JSON, text otherwise.
fn sniff(body: &[u8]) -> &'static str {
    let trimmed = body.trim_ascii_start();
    if matches!(trimmed.first(), Some(b'{' | b'[' | b'"'))
        && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
    {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    }
}

/// Kills a process group when dropped.
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        kill_group(self.0, libc::SIGKILL);
    }
}

/// Counts a running process until dropped.
struct Counted<'a>(&'a AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Deployed for ProcessRunner {
    fn invoke(&self, req: ExecRequest) -> BoxFuture<'_, Result<ExecResponse, ExecError>> {
        Box::pin(async move {
            self.running.fetch_add(1, Ordering::Relaxed);
            let _counted = Counted(&self.running);
            self.run(req).await
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        // Running processes are killed when their invocation's future is dropped
        // (kill_on_drop); nothing else is held.
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
