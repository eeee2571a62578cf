//! The local executor (SPEC F7): functions as processes on this server, either a warm pool of
//! long-lived processes speaking the HTTP contract ([`super::pool`]) or one process per
//! invocation with the payload on stdin ([`super::process`]).
//!
//! Every process gets a clean environment (`PATH`, `HOME`, `LANG`, the definition's `env` and
//! resolved secrets, `DRAVEN_FUNCTION`), its own process group (so a timeout kills it and its
//! children), and its stdout/stderr appended to `<log_dir>/<tenant>/<function>.log`.

use super::{Deployed, Deployment, Executor};
use crate::spec::{ProcessMode, Runtime};
use draven_core::Error;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct LocalConfig {
    /// Where function processes' output goes.
    pub log_dir: PathBuf,
    /// How long a `port`-startup instance may take to accept connections.
    pub startup_timeout: Duration,
    /// Largest answer read from a function.
    pub max_answer_bytes: usize,
    /// A log file larger than this is rotated (to `.1`) when an instance starts.
    pub max_log_bytes: u64,
}

impl LocalConfig {
    pub fn new(log_dir: PathBuf) -> LocalConfig {
        LocalConfig {
            log_dir,
            startup_timeout: Duration::from_secs(10),
            max_answer_bytes: 16 * 1024 * 1024,
            max_log_bytes: 16 * 1024 * 1024,
        }
    }
}

pub struct LocalExecutor {
    config: Arc<LocalConfig>,
}

impl LocalExecutor {
    pub fn new(config: LocalConfig) -> LocalExecutor {
        LocalExecutor {
            config: Arc::new(config),
        }
    }
}

impl Executor for LocalExecutor {
    fn name(&self) -> &'static str {
        "local"
    }

    fn deploy(&self, deployment: Arc<Deployment>) -> Result<Arc<dyn Deployed>, Error> {
        match &deployment.spec.runtime {
            Runtime::Process {
                mode: ProcessMode::Pool,
                ..
            } => Ok(super::pool::WarmPool::start(
                deployment,
                self.config.clone(),
            )),
            Runtime::Process {
                mode: ProcessMode::Process,
                ..
            } => Ok(Arc::new(super::process::ProcessRunner::new(
                deployment,
                self.config.clone(),
            ))),
            Runtime::Container { .. } => Err(Error::invalid(
                "runtime.kind",
                "the local executor runs processes, not container images",
            )),
        }
    }
}

/// The command of a process runtime, with its environment, process group and log file.
pub(crate) fn command(
    deployment: &Deployment,
    config: &LocalConfig,
) -> std::io::Result<tokio::process::Command> {
    let Runtime::Process { command, args, .. } = &deployment.spec.runtime else {
        return Err(std::io::Error::other("not a process runtime"));
    };
    let mut cmd = tokio::process::Command::new(command);
    cmd.args(args).env_clear();
    for var in ["PATH", "HOME", "LANG", "TZ"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd.envs(deployment.env.iter().map(|(k, v)| (k, v)));
    cmd.env("DRAVEN_FUNCTION", &deployment.name);
    cmd.process_group(0).kill_on_drop(true).stdin(Stdio::null());
    // SAFETY: prctl is async-signal-safe. The kernel kills the function if Draven's thread
    // that started it dies (a crash or SIGKILL of Draven leaves no orphans behind).
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let log = log_file(deployment, config)?;
    cmd.stdout(log.try_clone()?).stderr(log);
    Ok(cmd)
}

fn log_file(deployment: &Deployment, config: &LocalConfig) -> std::io::Result<std::fs::File> {
    let path = log_path(&config.log_dir, &deployment.tenant, &deployment.name);
    let dir = path.parent().expect("a log path has a directory");
    std::fs::create_dir_all(dir)?;
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > config.max_log_bytes) {
        std::fs::rename(&path, dir.join(format!("{}.log.1", deployment.name))).ok();
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// The log file of a function under a log directory (also read by
/// `GET /functions/{name}/logs`).
pub fn log_path(log_dir: &std::path::Path, tenant: &str, function: &str) -> PathBuf {
    log_dir.join(tenant).join(format!("{function}.log"))
}

/// Signals a process group (the function and anything it started).
pub(crate) fn kill_group(pid: u32, signal: i32) {
    if pid > 0 {
        // SAFETY: killpg has no memory-safety preconditions; a stale pid only fails with ESRCH.
        unsafe {
            libc::killpg(pid as libc::pid_t, signal);
        }
    }
}
