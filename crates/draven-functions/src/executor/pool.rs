//! The warm pool: long-lived function processes speaking the HTTP contract
//! (`POST /invoke`, `GET /healthz`; see `docs/functions.md`).
//!
//! - Instances start on demand, up to `ceil(max_concurrency / instance_concurrency)`, and each
//!   serves `instance_concurrency` invocations at once. An invocation takes the first instance
//!   with a free slot (oldest first), so load packs onto few instances and the rest go idle.
//! - `startup: socket` (default): Draven binds `127.0.0.1:0` and passes the listening socket as
//!   fd 3 (`LISTEN_FDS=1`); the first request is written at once and waits in the kernel's
//!   backlog until the process accepts, so a cold start costs exec + runtime start, with no
//!   readiness polling. `startup: port`: the process binds `PORT`; Draven polls until it accepts.
//! - An instance idle for `idle_timeout_ms` is stopped (down to `min_instances`, which are
//!   started ahead of demand).
//! - An instance that exits or breaks a connection is removed; its invocation fails as
//!   `Crashed` (retryable) and the next invocation starts a replacement.
//! - An invocation that reaches its deadline kills its instance (as AWS Lambda does): the
//!   execution really stops. Other invocations on that instance, if `instance_concurrency` > 1,
//!   fail as `Crashed`.

use super::http::{CallError, Conns};
use super::local::{command, kill_group, LocalConfig};
use super::{Deployed, Deployment, ExecError, ExecRequest, ExecResponse, InstanceStats};
use crate::spec::{PoolSettings, Runtime, Startup};
use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderName, HeaderValue, Request};
use http_body_util::Full;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

static X_INVOCATION_ID: HeaderName = HeaderName::from_static("x-invocation-id");
static X_DEADLINE: HeaderName = HeaderName::from_static("x-deadline");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

struct Instance {
    id: u64,
    pid: u32,
    conns: Conns,
    in_flight: AtomicUsize,
    /// Milliseconds since the pool's epoch.
    last_used: AtomicU64,
    alive: AtomicBool,
    /// Set once the instance answered: later invocations are warm.
    answered: AtomicBool,
    spawned: Instant,
}

impl Instance {
    fn kill(&self) {
        if self.alive.swap(false, Ordering::SeqCst) {
            kill_group(self.pid, libc::SIGKILL);
        }
        self.conns.clear();
    }
}

struct Slots {
    instances: Vec<Arc<Instance>>,
    /// Instances being started (they count towards the bound).
    starting: usize,
}

pub struct WarmPool {
    deployment: Arc<Deployment>,
    settings: PoolSettings,
    config: Arc<LocalConfig>,
    max_instances: usize,
    slots: Mutex<Slots>,
    freed: Notify,
    next_id: AtomicU64,
    epoch: Instant,
    closed: AtomicBool,
}

enum Pick {
    Warm(Arc<Instance>),
    Start,
    Wait,
}

impl WarmPool {
    pub fn start(deployment: Arc<Deployment>, config: Arc<LocalConfig>) -> Arc<PoolHandle> {
        let settings = match &deployment.spec.runtime {
            Runtime::Process { pool, .. } => pool.clone(),
            Runtime::Container { .. } => PoolSettings::default(),
        };
        let pool = Arc::new(WarmPool {
            max_instances: deployment.spec.max_instances(),
            deployment,
            settings,
            config,
            slots: Mutex::new(Slots {
                instances: Vec::new(),
                starting: 0,
            }),
            freed: Notify::new(),
            next_id: AtomicU64::new(1),
            epoch: Instant::now(),
            closed: AtomicBool::new(false),
        });
        tokio::spawn(keeper(Arc::downgrade(&pool)));
        Arc::new(PoolHandle(pool))
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn pick(&self) -> Pick {
        let mut slots = self.slots.lock();
        let limit = self.settings.instance_concurrency;
        for inst in &slots.instances {
            if inst.alive.load(Ordering::Relaxed) && inst.in_flight.load(Ordering::Relaxed) < limit
            {
                inst.in_flight.fetch_add(1, Ordering::Relaxed);
                return Pick::Warm(inst.clone());
            }
        }
        if slots.instances.len() + slots.starting < self.max_instances {
            slots.starting += 1;
            Pick::Start
        } else {
            Pick::Wait
        }
    }

    /// Starts an instance; it is returned with one invocation slot taken.
    async fn spawn(self: &Arc<Self>) -> Result<Arc<Instance>, ExecError> {
        let mut starting = Starting {
            pool: self,
            armed: true,
        };
        let r = self.spawn_inner().await;
        starting.armed = false;
        let mut slots = self.slots.lock();
        slots.starting -= 1;
        match r {
            Ok(inst) => {
                if self.closed.load(Ordering::SeqCst) {
                    inst.kill();
                    return Err(ExecError::Unavailable(
                        "the function is shutting down".into(),
                    ));
                }
                slots.instances.push(inst.clone());
                Ok(inst)
            }
            Err(e) => {
                drop(slots);
                self.freed.notify_one();
                Err(e)
            }
        }
    }

    async fn spawn_inner(self: &Arc<Self>) -> Result<Arc<Instance>, ExecError> {
        let unavailable = |e: std::io::Error| ExecError::Unavailable(e.to_string());
        let mut cmd = command(&self.deployment, &self.config).map_err(unavailable)?;
        let spawned = Instant::now();
        let (child, addr) = match self.settings.startup {
            Startup::Socket => {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(unavailable)?;
                let addr = listener.local_addr().map_err(unavailable)?;
                let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
                cmd.env("LISTEN_FDS", "1").env("LISTEN_FDNAMES", "http");
                // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
                unsafe {
                    cmd.pre_exec(move || {
                        if fd == 3 {
                            let flags = libc::fcntl(3, libc::F_GETFD);
                            if flags < 0
                                || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0
                            {
                                return Err(std::io::Error::last_os_error());
                            }
                        } else if libc::dup2(fd, 3) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                let child = cmd
                    .spawn()
                    .map_err(|e| ExecError::Unavailable(format!("{}: {e}", self.command_name())))?;
                drop(listener);
                (child, addr)
            }
            Startup::Port => {
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .map_err(unavailable)?
                    .port();
                cmd.env("PORT", port.to_string());
                let child = cmd
                    .spawn()
                    .map_err(|e| ExecError::Unavailable(format!("{}: {e}", self.command_name())))?;
                (child, SocketAddr::from(([127, 0, 0, 1], port)))
            }
        };
        let pid = child.id().unwrap_or(0);
        let inst = Arc::new(Instance {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            pid,
            conns: Conns::new(
                addr,
                self.settings.instance_concurrency,
                self.config.max_answer_bytes,
            ),
            in_flight: AtomicUsize::new(1),
            last_used: AtomicU64::new(self.now_ms()),
            alive: AtomicBool::new(true),
            answered: AtomicBool::new(false),
            spawned,
        });
        tokio::spawn(watch(Arc::downgrade(self), inst.clone(), child));
        // Until it is handed out, a caller going away must not leave the process running.
        let mut orphan = Orphan {
            inst: &inst,
            armed: true,
        };
        if self.settings.startup == Startup::Port {
            let until = Instant::now() + self.config.startup_timeout;
            loop {
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    break;
                }
                if !inst.alive.load(Ordering::SeqCst) {
                    return Err(ExecError::Unavailable(
                        "the process exited before accepting connections".into(),
                    ));
                }
                if Instant::now() > until {
                    inst.kill();
                    return Err(ExecError::Unavailable(format!(
                        "the process did not listen on PORT={} within {:?}",
                        addr.port(),
                        self.config.startup_timeout
                    )));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        orphan.armed = false;
        drop(orphan);
        tracing::debug!(function = %self.deployment.name, instance = inst.id, pid, "started a function instance");
        Ok(inst)
    }

    fn command_name(&self) -> String {
        match &self.deployment.spec.runtime {
            Runtime::Process { command, .. } => command.clone(),
            Runtime::Container { image, .. } => image.clone(),
        }
    }

    fn release(&self, inst: &Instance) {
        inst.last_used.store(self.now_ms(), Ordering::Relaxed);
        inst.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.freed.notify_one();
    }

    fn remove(&self, inst: &Instance) {
        inst.kill();
        self.slots.lock().instances.retain(|i| i.id != inst.id);
        self.freed.notify_one();
    }

    async fn acquire(self: &Arc<Self>, deadline: Instant) -> Result<Arc<Instance>, ExecError> {
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return Err(ExecError::Unavailable(
                    "the function is shutting down".into(),
                ));
            }
            let notified = self.freed.notified();
            match self.pick() {
                Pick::Warm(i) => return Ok(i),
                Pick::Start => return self.spawn().await,
                Pick::Wait => {
                    if tokio::time::timeout_at(deadline.into(), notified)
                        .await
                        .is_err()
                    {
                        return Err(ExecError::Timeout);
                    }
                }
            }
        }
    }

    async fn call(self: &Arc<Self>, req: ExecRequest) -> Result<ExecResponse, ExecError> {
        let inst = self.acquire(req.deadline).await?;
        // The slot is given back however this call ends (a dropped call included).
        let _lease = Lease {
            pool: self,
            inst: &inst,
        };
        let cold = !inst.answered.load(Ordering::Relaxed);
        let mut http = Request::post("/invoke");
        let headers = http.headers_mut().expect("fresh request");
        headers.insert(
            http::header::CONTENT_TYPE,
            req.content_type
                .as_deref()
                .and_then(|c| HeaderValue::from_str(c).ok())
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
        );
        if let Ok(v) = HeaderValue::from_str(&req.invocation_id) {
            headers.insert(X_INVOCATION_ID.clone(), v);
        }
        if let Ok(v) = HeaderValue::from_str(&req.traceparent) {
            headers.insert(TRACEPARENT.clone(), v);
        }
        headers.insert(X_DEADLINE.clone(), HeaderValue::from(req.deadline_unix_ms));
        let http = http
            .body(Full::new(req.payload.clone()))
            .expect("valid request");
        let answer = match tokio::time::timeout_at(req.deadline.into(), inst.conns.call(http)).await
        {
            Err(_) => {
                tracing::warn!(function = %self.deployment.name, instance = inst.id, invocation = %req.invocation_id, "invocation timed out: stopping its instance");
                self.remove(&inst);
                return Err(ExecError::Timeout);
            }
            Ok(Err(CallError::TooLarge)) => {
                return Err(ExecError::Failed {
                    status: 502,
                    content_type: None,
                    body: Bytes::from_static(b"the answer exceeds the response size limit"),
                });
            }
            Ok(Err(e)) => {
                let exited = !inst.alive.load(Ordering::SeqCst);
                tracing::warn!(function = %self.deployment.name, instance = inst.id, invocation = %req.invocation_id, error = %e, exited, "function instance failed mid-invocation");
                self.remove(&inst);
                return Err(ExecError::Crashed(e.to_string()));
            }
            Ok(Ok(a)) => a,
        };
        inst.answered.store(true, Ordering::Relaxed);
        let content_type = answer
            .content_type
            .and_then(|v| v.to_str().ok().map(str::to_owned));
        if answer.status == http::StatusCode::GATEWAY_TIMEOUT {
            // The contract: the function stopped its work at X-Deadline and says so.
            return Err(ExecError::Timeout);
        }
        if answer.status.as_u16() >= 400 {
            return Err(ExecError::Failed {
                status: answer.status.as_u16(),
                content_type,
                body: answer.body,
            });
        }
        Ok(ExecResponse {
            status: answer.status.as_u16(),
            content_type,
            body: answer.body,
            cold_start: cold.then(|| inst.spawned.elapsed()),
        })
    }

    /// Stops idle instances and keeps `min_instances` running.
    async fn keep(self: &Arc<Self>) {
        let idle = self.settings.idle_timeout_ms;
        let now = self.now_ms();
        let stale: Vec<Arc<Instance>> = {
            let slots = self.slots.lock();
            let mut keep = slots.instances.len();
            slots
                .instances
                .iter()
                .filter(|i| {
                    let stop = keep > self.settings.min_instances
                        && i.in_flight.load(Ordering::Relaxed) == 0
                        && now.saturating_sub(i.last_used.load(Ordering::Relaxed)) >= idle;
                    if stop {
                        keep -= 1;
                    }
                    stop
                })
                .cloned()
                .collect()
        };
        for inst in stale {
            tracing::debug!(function = %self.deployment.name, instance = inst.id, "stopping an idle function instance");
            if inst.alive.swap(false, Ordering::SeqCst) {
                kill_group(inst.pid, libc::SIGTERM);
            }
            self.slots.lock().instances.retain(|i| i.id != inst.id);
        }
        let missing = {
            let slots = self.slots.lock();
            self.settings
                .min_instances
                .saturating_sub(slots.instances.len() + slots.starting)
        };
        for _ in 0..missing {
            if !matches!(self.pick_for_warmup(), Some(())) {
                break;
            }
            match self.spawn().await {
                Ok(inst) => {
                    // A warm-up: call its health endpoint so it is ready, then free the slot.
                    let req = Request::get("/healthz")
                        .body(Full::new(Bytes::new()))
                        .expect("valid request");
                    let ok = inst.conns.call(req).await.is_ok();
                    inst.answered.store(ok, Ordering::Relaxed);
                    self.release(&inst);
                }
                Err(e) => {
                    tracing::warn!(function = %self.deployment.name, error = %e.message(), "cannot start a minimum instance");
                    break;
                }
            }
        }
    }

    fn pick_for_warmup(&self) -> Option<()> {
        let mut slots = self.slots.lock();
        (slots.instances.len() + slots.starting < self.max_instances).then(|| {
            slots.starting += 1;
        })
    }
}

/// An instance start in progress: counted in `starting` until it ends, however it ends.
struct Starting<'a> {
    pool: &'a WarmPool,
    armed: bool,
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.pool.slots.lock().starting -= 1;
            self.pool.freed.notify_one();
        }
    }
}

/// A started process not yet handed out: killed if its start is abandoned.
struct Orphan<'a> {
    inst: &'a Instance,
    armed: bool,
}

impl Drop for Orphan<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.inst.kill();
        }
    }
}

/// One invocation slot of an instance, given back on drop.
struct Lease<'a> {
    pool: &'a WarmPool,
    inst: &'a Instance,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.pool.release(self.inst);
    }
}

/// Waits for an instance's process to exit and takes it out of the pool.
async fn watch(pool: Weak<WarmPool>, inst: Arc<Instance>, mut child: tokio::process::Child) {
    let status = child.wait().await;
    let expected = !inst.alive.swap(false, Ordering::SeqCst);
    inst.conns.clear();
    // Whatever it started goes with it.
    kill_group(inst.pid, libc::SIGKILL);
    if let Some(pool) = pool.upgrade() {
        if !expected && !pool.closed.load(Ordering::SeqCst) {
            tracing::warn!(function = %pool.deployment.name, instance = inst.id, status = ?status, "function instance exited unexpectedly; it will be replaced on demand");
            metrics::counter!("draven_function_instance_crashes_total", "function" => pool.deployment.name.clone()).increment(1);
        }
        pool.slots.lock().instances.retain(|i| i.id != inst.id);
        pool.freed.notify_one();
    }
}

async fn keeper(pool: Weak<WarmPool>) {
    let period = match pool.upgrade() {
        Some(p) => Duration::from_millis((p.settings.idle_timeout_ms / 4).clamp(50, 5_000)),
        None => return,
    };
    loop {
        let Some(p) = pool.upgrade() else { return };
        if p.closed.load(Ordering::SeqCst) {
            return;
        }
        p.keep().await;
        drop(p);
        tokio::time::sleep(period).await;
    }
}

/// The pool as the engine holds it.
pub struct PoolHandle(Arc<WarmPool>);

impl Drop for WarmPool {
    fn drop(&mut self) {
        for i in self.slots.get_mut().instances.drain(..) {
            i.kill();
        }
    }
}

impl Deployed for PoolHandle {
    fn invoke(&self, req: ExecRequest) -> BoxFuture<'_, Result<ExecResponse, ExecError>> {
        Box::pin(self.0.call(req))
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        let this = &self.0;
        Box::pin(async move {
            this.closed.store(true, Ordering::SeqCst);
            let instances: Vec<_> = this.slots.lock().instances.drain(..).collect();
            for i in &instances {
                if i.alive.swap(false, Ordering::SeqCst) {
                    kill_group(i.pid, libc::SIGTERM);
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            for i in &instances {
                kill_group(i.pid, libc::SIGKILL);
                i.conns.clear();
            }
            this.freed.notify_waiters();
        })
    }

    fn stats(&self) -> InstanceStats {
        let slots = self.0.slots.lock();
        InstanceStats {
            instances: slots.instances.len(),
            busy: slots
                .instances
                .iter()
                .filter(|i| i.in_flight.load(Ordering::Relaxed) > 0)
                .count(),
            pids: slots.instances.iter().map(|i| i.pid).collect(),
        }
    }
}
