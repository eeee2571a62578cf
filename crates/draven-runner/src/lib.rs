//! The runner agent (`draven runner`): takes deploy jobs from a Draven server over HTTP, checks
//! the repository out at the job's commit with real git, runs `deploy/run.sh deploy` with
//! `ENV`, `REF`, `JOB_ID` and `DRAVEN_*`, streams its output as it comes, keeps its lease with
//! heartbeats, honours cancel and the job's timeout by killing the script's process group, and
//! reports the exit status. A report not yet acknowledged is kept in a file in the work
//! directory and sent again after a restart, so a runner restart never loses a job's outcome.

use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("server: {0}")]
    Http(#[from] reqwest::Error),
    #[error("server answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("git: {0}")]
    Git(#[from] draven_deploy::git::GitError),
}

#[derive(Clone, Debug)]
pub struct RunnerConfig {
    pub server: String,
    pub token: String,
    pub name: String,
    pub work_dir: PathBuf,
}

#[derive(Debug, Deserialize)]
struct ClaimedJob {
    job: JobInfo,
    repo: String,
    heartbeat_secs: u64,
}

#[derive(Debug, Deserialize)]
struct JobInfo {
    id: String,
    /// `deploy` or `rollback`: the task run.sh is given.
    kind: String,
    project: String,
    environment: String,
    #[serde(rename = "ref")]
    ref_name: String,
    commit_sha: String,
    timeout_secs: u64,
}

/// An outcome waiting for the server's acknowledgement.
#[derive(Debug, Serialize, Deserialize)]
struct PendingFinish {
    job_id: String,
    result: String,
    exit_code: Option<i32>,
}

struct Client {
    http: reqwest::Client,
    config: RunnerConfig,
}

impl Client {
    async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<(u16, serde_json::Value), RunnerError> {
        let resp = self
            .http
            .post(format!(
                "{}{path}",
                self.config.server.trim_end_matches('/')
            ))
            .bearer_auth(&self.config.token)
            .json(&body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        if status >= 400 {
            return Err(RunnerError::Status { status, body: text });
        }
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        ))
    }
}

fn pending_path(work_dir: &Path) -> PathBuf {
    work_dir.join("pending-finish.json")
}

/// Sends the kept outcome until the server takes it (or says the job is not ours any more).
async fn flush_pending(client: &Client) -> Result<(), RunnerError> {
    let path = pending_path(&client.config.work_dir);
    let Ok(text) = tokio::fs::read_to_string(&path).await else {
        return Ok(());
    };
    let Ok(p) = serde_json::from_str::<PendingFinish>(&text) else {
        tokio::fs::remove_file(&path).await?;
        return Ok(());
    };
    let mut delay = Duration::from_millis(200);
    loop {
        let body =
            json!({"runner": client.config.name, "result": p.result, "exit_code": p.exit_code});
        match client
            .post(&format!("/api/v1/runner/jobs/{}/finish", p.job_id), body)
            .await
        {
            Ok(_)
            | Err(RunnerError::Status {
                status: 400..=499, ..
            }) => break,
            Err(e) => {
                tracing::warn!(error = %e, "could not report a job's outcome; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
    tokio::fs::remove_file(&path).await?;
    Ok(())
}

/// Runs until `stop` resolves: claim, execute, report, repeat.
pub async fn run(
    config: RunnerConfig,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), RunnerError> {
    tokio::fs::create_dir_all(&config.work_dir).await?;
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?,
        config,
    };
    tokio::pin!(stop);
    loop {
        flush_pending(&client).await?;
        let claim = client.post(
            "/api/v1/runner/claim",
            json!({"runner": client.config.name, "wait_secs": 20}),
        );
        let claimed = tokio::select! {
            _ = &mut stop => return Ok(()),
            c = claim => c,
        };
        match claimed {
            Ok((200, body)) => match serde_json::from_value::<ClaimedJob>(body) {
                Ok(job) => execute(&client, job).await?,
                Err(e) => tracing::error!(error = %e, "unreadable claim answer"),
            },
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "claim failed; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

async fn checkout(work_dir: &Path, job: &ClaimedJob) -> Result<PathBuf, RunnerError> {
    use draven_deploy::git::git;
    let dir = work_dir.join("checkouts").join(&job.job.project);
    if !dir.join(".git").exists() {
        tokio::fs::create_dir_all(&dir).await?;
        git(Some(&dir), &["init", "--quiet"]).await?;
    }
    // Fetch only when the commit is not here yet (repeat deploys of one commit skip the network).
    let commit = format!("{}^{{commit}}", job.job.commit_sha);
    if git(Some(&dir), &["cat-file", "-e", &commit]).await.is_err() {
        git(
            Some(&dir),
            &[
                "fetch",
                "--quiet",
                "--no-tags",
                "--",
                &job.repo,
                &job.job.commit_sha,
            ],
        )
        .await?;
    }
    git(
        Some(&dir),
        &[
            "checkout",
            "--quiet",
            "--force",
            "--detach",
            &job.job.commit_sha,
        ],
    )
    .await?;
    git(Some(&dir), &["clean", "-fdxq"]).await?;
    Ok(dir)
}

fn kill_group(pid: Option<u32>, signal: i32) {
    if let Some(pid) = pid {
        // The script runs in its own process group: signal the whole group, children included.
        unsafe {
            libc::kill(-(pid as i32), signal);
        }
    }
}

async fn execute(client: &Client, claimed: ClaimedJob) -> Result<(), RunnerError> {
    let job_id = claimed.job.id.clone();
    let log_path = format!("/api/v1/runner/jobs/{job_id}/logs");
    let logs = |stream: &'static str, text: String| {
        let body = json!({"runner": client.config.name, "stream": stream, "text": text});
        client.post(&log_path, body)
    };
    let dir = match checkout(&client.config.work_dir, &claimed).await {
        Ok(d) => d,
        Err(e) => {
            let _ = logs("stderr", format!("draven runner: checkout failed: {e}\n")).await;
            return finish(client, &job_id, "failed", None).await;
        }
    };
    if claimed.job.kind != "rollback" {
        match run_task(client, &claimed, &dir, "deploy:info").await? {
            Some(("succeeded", _)) => {}
            Some((outcome, code)) => {
                let _ = logs(
                    "stderr",
                    "draven runner: preflight deploy:info did not succeed; not deploying\n"
                        .to_owned(),
                )
                .await;
                return finish(client, &job_id, outcome, code).await;
            }
            None => return Ok(()),
        }
    }
    let task = if claimed.job.kind == "rollback" {
        "rollback"
    } else {
        "deploy"
    };
    match run_task(client, &claimed, &dir, task).await? {
        Some((outcome, code)) => finish(client, &job_id, outcome, code).await,
        None => Ok(()),
    }
}

/// Runs one task of the repository contract, streaming its output. `None` when the lease was
/// lost (the server already failed the job); else the outcome and exit code.
async fn run_task(
    client: &Client,
    claimed: &ClaimedJob,
    dir: &Path,
    task: &str,
) -> Result<Option<(&'static str, Option<i32>)>, RunnerError> {
    let job_id = claimed.job.id.clone();
    let log_path = format!("/api/v1/runner/jobs/{job_id}/logs");
    let logs = |stream: &'static str, text: String| {
        let body = json!({"runner": client.config.name, "stream": stream, "text": text});
        client.post(&log_path, body)
    };
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg("deploy/run.sh")
        .arg(task)
        .current_dir(dir)
        .env("ENV", &claimed.job.environment)
        .env("REF", &claimed.job.ref_name)
        .env("JOB_ID", &job_id)
        .env("DRAVEN_JOB_ID", &job_id)
        .env("DRAVEN_PROJECT", &claimed.job.project)
        .env("DRAVEN_COMMIT", &claimed.job.commit_sha)
        .env("DRAVEN_SERVER", &client.config.server)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = logs(
                "stderr",
                format!("draven runner: cannot start deploy/run.sh: {e}\n"),
            )
            .await;
            return Ok(Some(("failed", None)));
        }
    };
    let pid = child.id();
    // Output lines go through a bounded channel and are sent in batches, in order.
    let (tx, mut rx) = mpsc::channel::<(&'static str, String)>(1024);
    for (stream, reader) in [
        (
            "stdout",
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ),
        (
            "stderr",
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ),
    ] {
        let Some(reader) = reader else { continue };
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(reader).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send((stream, format!("{line}\n"))).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(claimed.job.timeout_secs.max(1));
    let mut heartbeat = tokio::time::interval(Duration::from_secs(claimed.heartbeat_secs.max(1)));
    let mut result: Option<&'static str> = None;
    let mut output_open = true;
    let status = loop {
        tokio::select! {
            line = rx.recv(), if output_open => match line {
                Some((stream, mut text)) => {
                    // Whatever else is already waiting goes in the same request.
                    while text.len() < 64 * 1024 {
                        match rx.try_recv() {
                            Ok((s, t)) if s == stream => text.push_str(&t),
                            Ok((s, t)) => { let _ = logs(s, t).await; break; }
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = logs(stream, text).await {
                        tracing::warn!(error = %e, "could not send output");
                    }
                }
                None => output_open = false,
            },
            _ = heartbeat.tick() => {
                let hb = client.post(&format!("/api/v1/runner/jobs/{job_id}/heartbeat"), json!({"runner": client.config.name})).await;
                match hb {
                    Ok((_, b)) if b["cancel"] == true => {
                        result = Some("cancelled");
                        kill_group(pid, libc::SIGTERM);
                    }
                    Err(RunnerError::Status { status: 409, .. }) => {
                        // The lease is gone: the server failed the job; stop working on it.
                        kill_group(pid, libc::SIGKILL);
                        let _ = child.wait().await;
                        return Ok(None);
                    }
                    _ => {}
                }
            },
            _ = tokio::time::sleep_until(deadline), if result.is_none() => {
                result = Some("timed_out");
                kill_group(pid, libc::SIGTERM);
                let _ = logs("stderr", format!("draven runner: timed out after {} s; stopping\n", claimed.job.timeout_secs)).await;
            },
            status = child.wait(), if !output_open => break status?,
        }
    };
    kill_group(pid, libc::SIGKILL);
    let outcome = result.unwrap_or(if status.success() {
        "succeeded"
    } else {
        "failed"
    });
    Ok(Some((outcome, status.code())))
}

async fn finish(
    client: &Client,
    job_id: &str,
    result: &str,
    exit_code: Option<i32>,
) -> Result<(), RunnerError> {
    let pending = PendingFinish {
        job_id: job_id.to_owned(),
        result: result.to_owned(),
        exit_code,
    };
    tokio::fs::write(
        pending_path(&client.config.work_dir),
        serde_json::to_vec(&pending).unwrap_or_default(),
    )
    .await?;
    flush_pending(client).await
}
