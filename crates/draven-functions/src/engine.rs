//! The invocation engine (SPEC F2–F5, F10, F11): admission, bounded queues, the scheduler,
//! retries, the dead-letter queue, callbacks and drain.
//!
//! The path of an invocation:
//!
//! 1. **Admission** (on the caller's task): draining? payload size (413), tenant and function
//!    rate limits (429 + `Retry-After`), input schema (422), `Idempotency-Key` (same invocation
//!    for a repeat, 422 for another payload), then a place in the function's queue: a counter
//!    bounded by `queue_capacity` (429 + `Retry-After` when full). Nothing on this path buffers
//!    without bound: queues, waiting sync callers, records and dead letters are all capped.
//! 2. **Scheduling**: a function has `max_concurrency` slots (a FIFO semaphore shared by sync and
//!    async invocations). A sync invocation waits for a slot on its own task and runs inline
//!    (no hand-off, the lowest latency); an async one sits in the function's bounded channel
//!    until the function's dispatcher task gives it a slot and a task.
//! 3. **Execution**: the function's [`Deployed`] handle runs one attempt with a deadline.
//! 4. **Retries** (async): a retryable failure frees its slot, waits an exponential backoff with
//!    jitter and tries again, up to `retries`; the last failure goes to the dead-letter queue.
//!    Sync invocations are not retried: the caller is there to decide (as AWS Lambda).
//! 5. **Callback** (async, `X-Callback-Url`): the result is POSTed, signed, with retries.

use crate::callback::{check_url, AllowList, Deliverer, Delivery};
use crate::executor::{Deployed, Deployment, ExecError, ExecRequest, Executor, InstanceStats};
use crate::invocation::{
    CallbackReport, Cell, Claim, Failure, Invocation, InvocationStore, Mode, Output, State,
};
use crate::spec::{FunctionSpec, RateLimit, SpecLimits};
use bytes::Bytes;
use draven_core::{Error, ErrorCode, TraceContext};
use draven_store::crypto::KeyEncryptionKey;
use draven_store::Db;
use governor::{Quota, RateLimiter};
use metrics::{Counter, Gauge, Histogram};
use parking_lot::{Mutex, RwLock};
use rand::Rng;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};

type Limiter = governor::DefaultDirectRateLimiter;

/// Settings of the engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub limits: SpecLimits,
    /// Invocation records kept for status queries.
    pub invocation_capacity: usize,
    /// How long a finished invocation's record (and its idempotency key) is kept.
    pub invocation_ttl: Duration,
    /// Dead letters kept per function; beyond it the oldest is dropped (and counted).
    pub dlq_capacity: usize,
    /// Invocations per second per tenant, across its functions.
    pub tenant_rate: Option<RateLimit>,
    pub callback_allow: AllowList,
    pub callback_attempts: u32,
    pub callback_backoff: Duration,
    /// A result body larger than this is delivered but not kept on the record.
    pub max_kept_output: usize,
    /// How often definitions are compared with the database (changes through other servers).
    pub refresh_every: Duration,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            limits: SpecLimits::default(),
            invocation_capacity: 50_000,
            invocation_ttl: Duration::from_secs(3600),
            dlq_capacity: 10_000,
            tenant_rate: None,
            callback_allow: AllowList::default(),
            callback_attempts: 5,
            callback_backoff: Duration::from_secs(1),
            max_kept_output: 1024 * 1024,
            refresh_every: Duration::from_secs(5),
        }
    }
}

/// A refusal, with `Retry-After` seconds for backpressure (429).
#[derive(Debug)]
pub struct Refusal {
    pub error: Error,
    pub retry_after: Option<u64>,
}

impl From<Error> for Refusal {
    fn from(error: Error) -> Refusal {
        Refusal {
            error,
            retry_after: None,
        }
    }
}

impl From<draven_store::StoreError> for Refusal {
    fn from(e: draven_store::StoreError) -> Refusal {
        Refusal::from(Error::from(e))
    }
}

/// An invocation request, parsed by the HTTP edge.
pub struct InvokeRequest<'a> {
    pub tenant_id: &'a str,
    pub function: &'a str,
    pub payload: Bytes,
    pub content_type: Option<String>,
    pub idempotency_key: Option<String>,
    /// The caller's trace; the invocation is a child span of it.
    pub trace: TraceContext,
    /// Async only.
    pub callback_url: Option<String>,
}

/// What a sync caller gets.
pub enum SyncResult {
    Succeeded(Invocation, Output),
    /// The function answered with an error status: passed through.
    FunctionError(Invocation, Output),
    Failed(Invocation, Error),
}

/// One entry of a function's dead-letter queue.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub invocation_id: String,
    pub function: String,
    pub payload: Bytes,
    pub content_type: Option<String>,
    pub failure: Failure,
    pub attempts: u32,
    pub failed_ms: i64,
    pub trace_id: String,
    pub callback_url: Option<String>,
}

struct FnMetrics {
    succeeded: Counter,
    failed: Counter,
    timed_out: Counter,
    rejected_queue: Counter,
    rejected_rate: Counter,
    duration: Histogram,
    latency_sync: Histogram,
    latency_async: Histogram,
    queue_depth: Gauge,
    in_flight: Gauge,
    retries: Counter,
    dlq_size: Gauge,
    dlq_dropped: Counter,
    cold_starts: Counter,
    cold_start_seconds: Histogram,
    callbacks_ok: Counter,
    callbacks_failed: Counter,
}

impl FnMetrics {
    fn new(tenant: &str, function: &str, executor: &str) -> FnMetrics {
        let l = |extra: Option<(&'static str, &'static str)>| {
            let mut v = vec![
                ("tenant", tenant.to_owned()),
                ("function", function.to_owned()),
            ];
            if let Some((k, val)) = extra {
                v.push((k, val.to_owned()));
            }
            v
        };
        let outcome = |o: &'static str| {
            let mut v = l(Some(("outcome", o)));
            v.push(("executor", executor.to_owned()));
            metrics::counter!("draven_function_invocations_total", &v)
        };
        FnMetrics {
            succeeded: outcome("succeeded"),
            failed: outcome("failed"),
            timed_out: outcome("timed_out"),
            rejected_queue: metrics::counter!(
                "draven_function_rejections_total",
                &l(Some(("reason", "queue_full")))
            ),
            rejected_rate: metrics::counter!(
                "draven_function_rejections_total",
                &l(Some(("reason", "rate_limited")))
            ),
            duration: metrics::histogram!("draven_function_duration_seconds", &l(None)),
            latency_sync: metrics::histogram!(
                "draven_function_latency_seconds",
                &l(Some(("mode", "sync")))
            ),
            latency_async: metrics::histogram!(
                "draven_function_latency_seconds",
                &l(Some(("mode", "async")))
            ),
            queue_depth: metrics::gauge!("draven_function_queue_depth", &l(None)),
            in_flight: metrics::gauge!("draven_function_in_flight", &l(None)),
            retries: metrics::counter!("draven_function_retries_total", &l(None)),
            dlq_size: metrics::gauge!("draven_function_dlq_size", &l(None)),
            dlq_dropped: metrics::counter!("draven_function_dlq_dropped_total", &l(None)),
            cold_starts: metrics::counter!("draven_function_cold_starts_total", &l(None)),
            cold_start_seconds: metrics::histogram!("draven_function_cold_start_seconds", &l(None)),
            callbacks_ok: metrics::counter!(
                "draven_function_callbacks_total",
                &l(Some(("outcome", "delivered")))
            ),
            callbacks_failed: metrics::counter!(
                "draven_function_callbacks_total",
                &l(Some(("outcome", "failed")))
            ),
        }
    }
}

/// An async invocation waiting for (or between) attempts.
struct Job {
    cell: Arc<Cell>,
    payload: Bytes,
    content_type: Option<String>,
    trace: TraceContext,
    callback: Option<reqwest::Url>,
    accepted: Instant,
}

/// A queue place: given back when dropped (a caller that goes away mid-wait frees it).
struct Place<'a> {
    f: &'a Function,
    held: bool,
}

impl Place<'_> {
    /// The place now belongs to the function's channel (its dispatcher gives it back).
    fn hand_over(mut self) {
        self.held = false;
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if self.held {
            self.f.dequeued();
        }
    }
}

/// An accepted invocation in progress, counted for drain until dropped.
struct Active<'a>(&'a Engine);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.ended();
    }
}

/// A sync invocation whose caller may go away: if it is dropped unfinished (the client
/// disconnected, so the execution was dropped and stopped), the record says so instead of
/// staying `running` forever.
struct Abandoned<'a> {
    f: &'a Function,
    cell: &'a Cell,
    armed: bool,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.f.m.failed.increment(1);
            self.cell.update(|r| {
                r.state = State::Failed;
                r.finished_ms = Some(now_ms());
                r.failure = Some(Failure {
                    kind: "cancelled",
                    message: "the caller went away before the answer; the execution was stopped"
                        .into(),
                });
            });
        }
    }
}

/// An attempt executing: the running counters, given back however the attempt ends.
struct Running<'a>(&'a Function);

impl<'a> Running<'a> {
    fn start(f: &'a Function) -> Running<'a> {
        f.running.fetch_add(1, Ordering::Relaxed);
        f.m.in_flight.increment(1.0);
        Running(f)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.m.in_flight.decrement(1.0);
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A loaded function: its definition, executor handle, queue and counters.
pub struct Function {
    pub tenant_id: String,
    pub name: String,
    pub revision: i64,
    pub spec: FunctionSpec,
    executor: &'static str,
    deployed: Arc<dyn Deployed>,
    schema: Option<jsonschema::Validator>,
    limiter: Option<Limiter>,
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
    running: AtomicUsize,
    retrying: AtomicUsize,
    tx: mpsc::Sender<Job>,
    dlq: Mutex<VecDeque<DeadLetter>>,
    m: FnMetrics,
    callback_key: Option<Vec<u8>>,
}

/// Live counts of one function (API, UI and tests).
#[derive(Clone, Debug, serde::Serialize)]
pub struct FunctionStats {
    pub queued: usize,
    pub running: usize,
    pub retrying: usize,
    pub dead_letters: usize,
    pub queue_capacity: usize,
    pub max_concurrency: usize,
    pub executor: &'static str,
    pub instances: InstanceStats,
}

impl Function {
    pub fn stats(&self) -> FunctionStats {
        FunctionStats {
            queued: self.queued.load(Ordering::Relaxed),
            running: self.running.load(Ordering::Relaxed),
            retrying: self.retrying.load(Ordering::Relaxed),
            dead_letters: self.dlq.lock().len(),
            queue_capacity: self.spec.queue_capacity,
            max_concurrency: self.spec.max_concurrency,
            executor: self.executor,
            instances: self.deployed.stats(),
        }
    }

    fn busy(&self) -> bool {
        self.queued.load(Ordering::SeqCst) > 0
            || self.running.load(Ordering::SeqCst) > 0
            || self.retrying.load(Ordering::SeqCst) > 0
    }

    /// Takes a queue place, or says how long to wait.
    fn enqueue(&self) -> Result<Place<'_>, Refusal> {
        let cap = self.spec.queue_capacity;
        let mut cur = self.queued.load(Ordering::Relaxed);
        loop {
            if cur >= cap {
                self.m.rejected_queue.increment(1);
                return Err(Refusal {
                    error: Error::new(
                        ErrorCode::QueueFull,
                        format!(
                            "function {} has {cap} invocations waiting (its queue capacity); retry later",
                            self.name
                        ),
                    ),
                    retry_after: Some(self.retry_after_secs()),
                });
            }
            match self.queued.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.m.queue_depth.increment(1.0);
                    return Ok(Place {
                        f: self,
                        held: true,
                    });
                }
                Err(now) => cur = now,
            }
        }
    }

    fn dequeued(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
        self.m.queue_depth.decrement(1.0);
    }

    /// A rough wait for a queue place: the time to run one queue's worth at full concurrency,
    /// at least a second.
    fn retry_after_secs(&self) -> u64 {
        let per_slot = self.spec.queue_capacity as u64 / self.spec.max_concurrency.max(1) as u64;
        (per_slot * self.spec.timeout_ms / 1000 / 10).clamp(1, 60)
    }

    fn push_dead_letter(&self, dl: DeadLetter, cap: usize) {
        let mut q = self.dlq.lock();
        if q.len() >= cap {
            q.pop_front();
            self.m.dlq_dropped.increment(1);
            self.m.dlq_size.decrement(1.0);
        }
        q.push_back(dl);
        self.m.dlq_size.increment(1.0);
    }
}

struct Inner {
    db: Db,
    kek: Arc<dyn KeyEncryptionKey>,
    executors: Vec<Arc<dyn Executor>>,
    functions: RwLock<HashMap<String, HashMap<String, Arc<Function>>>>,
    loading: tokio::sync::Mutex<()>,
    store: InvocationStore,
    tenant_limiters: Mutex<HashMap<String, Arc<Limiter>>>,
    config: EngineConfig,
    draining: AtomicBool,
    /// Accepted invocations not yet finished (callbacks included).
    active: AtomicUsize,
    idle: Notify,
    deliverer: Deliverer,
}

/// The engine; cheap to clone.
#[derive(Clone)]
pub struct Engine(Arc<Inner>);

/// Exponential backoff with equal jitter: half of `initial · 2^(attempt-1)` (capped at `max`)
/// plus a random part up to the other half.
pub fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = initial
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(max);
    let half = exp / 2;
    half + rand::thread_rng().gen_range(Duration::ZERO..=half)
}

fn now_ms() -> i64 {
    draven_store::now_ms()
}

fn limiter(r: &RateLimit) -> Limiter {
    let per = NonZeroU32::new(r.per_second).unwrap_or(NonZeroU32::MIN);
    let burst = r.burst.and_then(NonZeroU32::new).unwrap_or(per);
    RateLimiter::direct(Quota::per_second(per).allow_burst(burst))
}

fn check_rate(l: &Limiter, what: &str) -> Result<(), Refusal> {
    l.check().map_err(|not_until| {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        Refusal {
            error: Error::new(
                ErrorCode::RateLimited,
                format!("{what} rate limit reached; retry later"),
            ),
            retry_after: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
        }
    })
}

fn new_span() -> [u8; 8] {
    let mut s = [0u8; 8];
    rand::thread_rng().fill(&mut s);
    if s == [0; 8] {
        s[7] = 1;
    }
    s
}

impl Engine {
    pub fn new(
        db: Db,
        kek: Arc<dyn KeyEncryptionKey>,
        executors: Vec<Arc<dyn Executor>>,
        config: EngineConfig,
    ) -> Engine {
        let deliverer = Deliverer::new(
            config.callback_allow.clone(),
            config.callback_attempts,
            config.callback_backoff,
        );
        Engine(Arc::new(Inner {
            store: InvocationStore::new(
                config.invocation_capacity,
                config.invocation_ttl.as_millis() as i64,
            ),
            db,
            kek,
            executors,
            functions: RwLock::new(HashMap::new()),
            loading: tokio::sync::Mutex::new(()),
            tenant_limiters: Mutex::new(HashMap::new()),
            config,
            draining: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            idle: Notify::new(),
            deliverer,
        }))
    }

    /// The executors' names, for validating definitions.
    pub fn executor_names(&self) -> Vec<&'static str> {
        self.0.executors.iter().map(|e| e.name()).collect()
    }

    /// Whether the executor takes `secrets` as references to its platform's secrets (no
    /// kernel secret is read).
    pub fn secrets_by_reference(&self, executor: &str) -> bool {
        self.0
            .executors
            .iter()
            .any(|e| e.name() == executor && e.secrets_by_reference())
    }

    /// Parses and validates a definition against this server's executors and limits.
    pub fn parse_spec(&self, json: &[u8]) -> Result<FunctionSpec, Error> {
        FunctionSpec::parse(json, &self.0.config.limits, &self.executor_names())
    }

    pub fn is_draining(&self) -> bool {
        self.0.draining.load(Ordering::SeqCst)
    }

    fn loaded(&self, tenant_id: &str, name: &str) -> Option<Arc<Function>> {
        self.0
            .functions
            .read()
            .get(tenant_id)
            .and_then(|m| m.get(name))
            .cloned()
    }

    /// The loaded function, loading it from the database on first use.
    pub async fn function(&self, tenant_id: &str, name: &str) -> Result<Arc<Function>, Error> {
        if let Some(f) = self.loaded(tenant_id, name) {
            return Ok(f);
        }
        let _guard = self.0.loading.lock().await;
        if let Some(f) = self.loaded(tenant_id, name) {
            return Ok(f);
        }
        let stored = self.0.db.get_function(tenant_id, name).await?;
        let f = self.build(stored).await?;
        self.0
            .functions
            .write()
            .entry(tenant_id.to_owned())
            .or_default()
            .insert(name.to_owned(), f.clone());
        Ok(f)
    }

    async fn build(
        &self,
        stored: draven_store::functions::StoredFunction,
    ) -> Result<Arc<Function>, Error> {
        let spec = self.parse_spec(stored.spec.as_bytes())?;
        let mut env: Vec<(String, String)> = spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let by_reference = self.secrets_by_reference(&spec.executor);
        for s in spec.secrets.iter().filter(|_| !by_reference) {
            let value = self
                .0
                .db
                .reveal_secret(self.0.kek.as_ref(), &stored.tenant_id, &s.secret)
                .await
                .map_err(|e| {
                    let e = Error::from(e);
                    if e.code == ErrorCode::NotFound {
                        Error::invalid(
                            "secrets",
                            format!("secret {:?} (for {}) does not exist", s.secret, s.env),
                        )
                    } else {
                        e
                    }
                })?;
            env.push((s.env.clone(), String::from_utf8_lossy(&value).into_owned()));
        }
        let callback_key = match &spec.callback_secret {
            Some(name) => Some(
                self.0
                    .db
                    .reveal_secret(self.0.kek.as_ref(), &stored.tenant_id, name)
                    .await?,
            ),
            None => None,
        };
        let executor = self
            .0
            .executors
            .iter()
            .find(|e| e.name() == spec.executor)
            .ok_or_else(|| Error::invalid("executor", "executor not available"))?
            .clone();
        let tenant_name = self.0.db.tenant_name(&stored.tenant_id).await?;
        let deployment = Arc::new(Deployment {
            tenant: stored.tenant_id.clone(),
            name: stored.name.clone(),
            revision: stored.revision,
            spec: spec.clone(),
            env,
        });
        let deployed = executor.deploy(deployment)?;
        let schema = match &spec.input_schema {
            Some(s) => Some(
                jsonschema::validator_for(s)
                    .map_err(|e| Error::invalid("input_schema", e.to_string()))?,
            ),
            None => None,
        };
        let (tx, rx) = mpsc::channel(spec.queue_capacity);
        let f = Arc::new(Function {
            m: FnMetrics::new(&tenant_name, &stored.name, executor.name()),
            tenant_id: stored.tenant_id,
            name: stored.name,
            revision: stored.revision,
            executor: executor.name(),
            deployed,
            schema,
            limiter: spec.rate_limit.as_ref().map(limiter),
            slots: Arc::new(Semaphore::new(spec.max_concurrency)),
            queued: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            retrying: AtomicUsize::new(0),
            tx,
            dlq: Mutex::new(VecDeque::new()),
            callback_key,
            spec,
        });
        tokio::spawn(dispatch(Arc::downgrade(&self.0), Arc::downgrade(&f), rx));
        Ok(f)
    }

    /// Forgets the loaded copy of a function (after a change): queued and running invocations
    /// finish on it, then its instances stop; the next invocation loads the new definition.
    pub fn unload(&self, tenant_id: &str, name: &str) {
        let old = self
            .0
            .functions
            .write()
            .get_mut(tenant_id)
            .and_then(|m| m.remove(name));
        if let Some(old) = old {
            tokio::spawn(retire(old));
        }
    }

    /// Compares loaded definitions with the database and unloads changed or removed ones
    /// (definitions changed through another server).
    pub async fn refresh(&self) -> Result<usize, Error> {
        let current: HashMap<(String, String), i64> = self
            .0
            .db
            .function_revisions()
            .await?
            .into_iter()
            .map(|(t, n, r)| ((t, n), r))
            .collect();
        let stale: Vec<(String, String)> = self
            .0
            .functions
            .read()
            .iter()
            .flat_map(|(t, m)| {
                m.values()
                    .filter(|f| current.get(&(t.clone(), f.name.clone())) != Some(&f.revision))
                    .map(|f| (t.clone(), f.name.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (t, n) in &stale {
            self.unload(t, n);
        }
        Ok(stale.len())
    }

    /// Runs [`refresh`](Self::refresh) periodically until the engine is dropped.
    pub fn spawn_refresher(&self) {
        let weak = Arc::downgrade(&self.0);
        let every = self.0.config.refresh_every;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(inner) = weak.upgrade() else { return };
                if let Err(e) = Engine(inner).refresh().await {
                    tracing::warn!(error = %e.message, "refreshing function definitions failed");
                }
            }
        });
    }

    fn tenant_limiter(&self, tenant_id: &str) -> Option<Arc<Limiter>> {
        let rate = self.0.config.tenant_rate.as_ref()?;
        let mut map = self.0.tenant_limiters.lock();
        if let Some(l) = map.get(tenant_id) {
            return Some(l.clone());
        }
        Some(
            map.entry(tenant_id.to_owned())
                .or_insert_with(|| Arc::new(limiter(rate)))
                .clone(),
        )
    }

    /// Checks everything that does not depend on the queue; returns the function and the
    /// payload digest (for idempotency).
    async fn admit(
        &self,
        req: &InvokeRequest<'_>,
    ) -> Result<(Arc<Function>, Option<[u8; 32]>), Refusal> {
        if self.is_draining() {
            return Err(Error::new(
                ErrorCode::Unavailable,
                "the server is shutting down and accepts no new invocations",
            )
            .into());
        }
        let f = self.function(req.tenant_id, req.function).await?;
        if req.payload.len() > f.spec.max_payload_bytes {
            return Err(Error::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "the payload is {} bytes; function {} accepts at most {}",
                    req.payload.len(),
                    f.name,
                    f.spec.max_payload_bytes
                ),
            )
            .into());
        }
        if let Some(l) = self.tenant_limiter(req.tenant_id) {
            if let Err(r) = check_rate(&l, "the tenant's invocation") {
                f.m.rejected_rate.increment(1);
                return Err(r);
            }
        }
        if let Some(l) = &f.limiter {
            if let Err(r) = check_rate(l, &format!("function {}'s", f.name)) {
                f.m.rejected_rate.increment(1);
                return Err(r);
            }
        }
        if let Some(schema) = &f.schema {
            let value: serde_json::Value = serde_json::from_slice(&req.payload).map_err(|e| {
                Error::new(
                    ErrorCode::MalformedBody,
                    format!("the payload is not JSON (the function has an input schema): {e}"),
                )
            })?;
            let first = schema
                .iter_errors(&value)
                .next()
                .map(|e| (e.instance_path.to_string(), e.to_string()));
            if let Some((path, message)) = first {
                let field = if path.is_empty() {
                    "/".to_owned()
                } else {
                    path
                };
                return Err(Error::invalid(&field, message).into());
            }
        }
        let digest = req.idempotency_key.as_ref().map(|_| {
            let mut h = Sha256::new();
            h.update(req.content_type.as_deref().unwrap_or_default());
            h.update([0]);
            h.update(&req.payload);
            h.finalize().into()
        });
        Ok((f, digest))
    }

    fn record(&self, f: &Function, req: &InvokeRequest<'_>, mode: Mode) -> Invocation {
        Invocation {
            id: uuid::Uuid::now_v7().to_string(),
            tenant_id: f.tenant_id.clone(),
            function: f.name.clone(),
            revision: f.revision,
            executor: f.executor.to_owned(),
            mode,
            state: State::Queued,
            attempts: 0,
            created_ms: now_ms(),
            started_ms: None,
            finished_ms: None,
            trace_id: req.trace.trace_id_hex(),
            idempotency_key: req.idempotency_key.clone(),
            output: None,
            failure: None,
            callback: req.callback_url.as_ref().map(|u| CallbackReport {
                url: u.clone(),
                ..CallbackReport::default()
            }),
            dead_lettered: false,
            redriven_from: None,
            cold_start_ms: None,
        }
    }

    /// Looks the key up; `Ok(None)` means a new invocation may be created.
    fn existing(
        &self,
        f: &Function,
        req: &InvokeRequest<'_>,
        digest: Option<[u8; 32]>,
    ) -> Result<Option<Arc<Cell>>, Refusal> {
        let (Some(key), Some(d)) = (&req.idempotency_key, digest) else {
            return Ok(None);
        };
        match self.0.store.claim((&f.tenant_id, &f.name, key), &d) {
            Claim::New => Ok(None),
            Claim::Existing(c) => Ok(Some(c)),
            Claim::Reused => Err(reused().into()),
        }
    }

    fn insert(
        &self,
        f: &Function,
        inv: Invocation,
        digest: Option<[u8; 32]>,
    ) -> Result<Result<Arc<Cell>, Arc<Cell>>, Refusal> {
        let key = inv
            .idempotency_key
            .clone()
            .zip(digest)
            .map(|(k, d)| ((f.tenant_id.clone(), f.name.clone(), k), d));
        match self.0.store.insert(inv, key, now_ms()) {
            Ok(c) => Ok(Ok(c)),
            Err(Claim::Existing(c)) => Ok(Err(c)),
            Err(_) => Err(reused().into()),
        }
    }

    fn started(&self) {
        self.0.active.fetch_add(1, Ordering::SeqCst);
    }

    fn ended(&self) {
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }

    /// A synchronous invocation: waits for a slot and the answer, within the function's timeout.
    pub async fn invoke_sync(&self, req: InvokeRequest<'_>) -> Result<SyncResult, Refusal> {
        let accepted = Instant::now();
        let (f, digest) = self.admit(&req).await?;
        if let Some(cell) = self.existing(&f, &req, digest)? {
            return Ok(sync_result(cell.finished().await));
        }
        let place = f.enqueue()?;
        let inv = self.record(&f, &req, Mode::Sync);
        let cell = match self.insert(&f, inv, digest) {
            Ok(Ok(c)) => c,
            Ok(Err(c)) => {
                drop(place);
                return Ok(sync_result(c.finished().await));
            }
            Err(r) => return Err(r),
        };
        self.started();
        let _active = Active(self);
        let mut abandoned = Abandoned {
            f: &f,
            cell: &cell,
            armed: true,
        };
        let deadline = accepted + Duration::from_millis(f.spec.timeout_ms);
        let deadline_unix =
            now_ms() + f.spec.timeout_ms as i64 - accepted.elapsed().as_millis() as i64;
        let permit = match f.slots.clone().try_acquire_owned() {
            Ok(p) => Ok(p),
            Err(_) => tokio::time::timeout_at(deadline.into(), f.slots.clone().acquire_owned())
                .await
                .map(|p| p.expect("the semaphore is never closed")),
        };
        drop(place);
        let outcome = match permit {
            Err(_) => Err(ExecError::Timeout),
            Ok(permit) => {
                let r = self
                    .attempt(
                        &f,
                        &cell,
                        &req.payload,
                        &req.content_type,
                        &req.trace,
                        deadline,
                        deadline_unix,
                    )
                    .await;
                drop(permit);
                r
            }
        };
        abandoned.armed = false;
        let inv = self.finish(&f, &cell, outcome, Mode::Sync, accepted);
        Ok(sync_result(inv))
    }

    /// One attempt on the function's executor; updates the record to running.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        f: &Function,
        cell: &Cell,
        payload: &Bytes,
        content_type: &Option<String>,
        trace: &TraceContext,
        deadline: Instant,
        deadline_unix_ms: i64,
    ) -> Result<crate::executor::ExecResponse, ExecError> {
        let now = now_ms();
        let id = {
            let mut r = cell.record.lock();
            r.state = State::Running;
            r.attempts += 1;
            r.started_ms.get_or_insert(now);
            r.id.clone()
        };
        let running = Running::start(f);
        let started = Instant::now();
        let r = f
            .deployed
            .invoke(ExecRequest {
                invocation_id: id,
                payload: payload.clone(),
                content_type: content_type.clone(),
                traceparent: trace.child(new_span()).to_string(),
                deadline,
                deadline_unix_ms,
            })
            .await;
        f.m.duration.record(started.elapsed().as_secs_f64());
        drop(running);
        if let Ok(resp) = &r {
            if let Some(cold) = resp.cold_start {
                f.m.cold_starts.increment(1);
                f.m.cold_start_seconds.record(cold.as_secs_f64());
                cell.record.lock().cold_start_ms = Some(cold.as_secs_f64() * 1000.0);
            }
        }
        r
    }

    /// Records the final outcome and counts it.
    fn finish(
        &self,
        f: &Function,
        cell: &Cell,
        outcome: Result<crate::executor::ExecResponse, ExecError>,
        mode: Mode,
        accepted: Instant,
    ) -> Invocation {
        let keep = self.0.config.max_kept_output;
        let mut snapshot = None;
        cell.update(|r| {
            r.finished_ms = Some(now_ms());
            match outcome {
                Ok(resp) => {
                    r.state = State::Succeeded;
                    r.output = Some(Output {
                        status: resp.status,
                        content_type: resp.content_type,
                        body: resp.body,
                    });
                    f.m.succeeded.increment(1);
                }
                Err(e) => {
                    r.state = if e == ExecError::Timeout {
                        f.m.timed_out.increment(1);
                        State::TimedOut
                    } else {
                        f.m.failed.increment(1);
                        State::Failed
                    };
                    r.failure = Some(Failure {
                        kind: e.kind(),
                        message: e.message(),
                    });
                    if let ExecError::Failed {
                        status,
                        content_type,
                        body,
                    } = e
                    {
                        r.output = Some(Output {
                            status,
                            content_type,
                            body,
                        });
                    }
                }
            }
            snapshot = Some(r.clone());
            // What the caller gets is the snapshot; the kept record drops a large body.
            if r.output.as_ref().is_some_and(|o| o.body.len() > keep) {
                if let Some(o) = r.output.as_mut() {
                    o.body = Bytes::from_static(b"(the result was larger than the kept-output limit and was delivered but not kept)");
                }
            }
        });
        let elapsed = accepted.elapsed().as_secs_f64();
        match mode {
            Mode::Sync => f.m.latency_sync.record(elapsed),
            Mode::Async => f.m.latency_async.record(elapsed),
        }
        snapshot.expect("update ran")
    }

    /// An asynchronous invocation: queued, answered with its id at once.
    pub async fn invoke_async(&self, req: InvokeRequest<'_>) -> Result<Accepted, Refusal> {
        let (f, digest) = self.admit(&req).await?;
        if let Some(cell) = self.existing(&f, &req, digest)? {
            return Ok(Accepted {
                invocation: cell.snapshot(),
                repeated: true,
            });
        }
        let callback = match &req.callback_url {
            Some(url) => {
                if f.callback_key.is_none() {
                    return Err(Error::invalid(
                        "X-Callback-Url",
                        format!(
                            "function {} has no callback_secret to sign deliveries with; set one in its definition",
                            f.name
                        ),
                    )
                    .into());
                }
                Some(check_url(self.0.deliverer.allow_list(), url).await?)
            }
            None => None,
        };
        let place = f.enqueue()?;
        let inv = self.record(&f, &req, Mode::Async);
        let cell = match self.insert(&f, inv, digest) {
            Ok(Ok(c)) => c,
            Ok(Err(c)) => {
                return Ok(Accepted {
                    invocation: c.snapshot(),
                    repeated: true,
                });
            }
            Err(r) => return Err(r),
        };
        let invocation = cell.snapshot();
        self.started();
        let job = Job {
            cell,
            // A copy: the request's bytes may share a larger buffer a queued job would pin.
            payload: Bytes::copy_from_slice(&req.payload),
            content_type: req.content_type,
            trace: req.trace,
            callback,
            accepted: Instant::now(),
        };
        match f.tx.try_send(job) {
            Ok(()) => place.hand_over(),
            Err(e) => {
                // Cannot happen while the counter bounds the channel; fail it clearly if it does.
                drop(place);
                let job = e.into_inner();
                self.finish(
                    &f,
                    &job.cell,
                    Err(ExecError::Unavailable(
                        "the function's queue is closed".into(),
                    )),
                    Mode::Async,
                    job.accepted,
                );
                self.ended();
            }
        }
        Ok(Accepted {
            invocation,
            repeated: false,
        })
    }

    pub fn invocation(&self, tenant_id: &str, id: &str) -> Option<Invocation> {
        let inv = self.0.store.get(id)?.snapshot();
        (inv.tenant_id == tenant_id).then_some(inv)
    }

    /// Waits for an invocation to finish (tests, `?wait=`).
    pub async fn wait(&self, tenant_id: &str, id: &str, timeout: Duration) -> Option<Invocation> {
        let cell = self.0.store.get(id)?;
        if cell.record.lock().tenant_id != tenant_id {
            return None;
        }
        tokio::time::timeout(timeout, cell.finished()).await.ok()
    }

    pub fn dead_letters(&self, f: &Function) -> Vec<DeadLetter> {
        f.dlq.lock().iter().cloned().collect()
    }

    pub fn dead_letter(&self, f: &Function, id: &str) -> Option<DeadLetter> {
        f.dlq.lock().iter().find(|d| d.invocation_id == id).cloned()
    }

    /// Removes dead letters (`id` or all); returns how many.
    pub fn purge(&self, f: &Function, id: Option<&str>) -> usize {
        let mut q = f.dlq.lock();
        let before = q.len();
        match id {
            Some(id) => q.retain(|d| d.invocation_id != id),
            None => q.clear(),
        }
        let n = before - q.len();
        f.m.dlq_size.decrement(n as f64);
        n
    }

    /// Queues dead letters again as new async invocations (`id` or all, oldest first), as far as
    /// the queue has room. Returns the new invocations.
    pub async fn redrive(
        &self,
        f: &Arc<Function>,
        id: Option<&str>,
    ) -> Result<Vec<Invocation>, Refusal> {
        if self.is_draining() {
            return Err(Error::new(ErrorCode::Unavailable, "the server is shutting down").into());
        }
        let picked: Vec<DeadLetter> = {
            let q = f.dlq.lock();
            match id {
                Some(id) => q
                    .iter()
                    .filter(|d| d.invocation_id == id)
                    .cloned()
                    .collect(),
                None => q.iter().cloned().collect(),
            }
        };
        if id.is_some() && picked.is_empty() {
            return Err(Error::not_found("dead letter").into());
        }
        let mut out = Vec::new();
        for dl in picked {
            let place = match f.enqueue() {
                Ok(p) => p,
                Err(r) if out.is_empty() => return Err(r),
                Err(_) => break,
            };
            let trace =
                TraceContext::parse(&format!("00-{}-{}-01", dl.trace_id, "0000000000000001"))
                    .unwrap_or_else(|| TraceContext::root(rand::random(), new_span()));
            let callback = dl
                .callback_url
                .as_deref()
                .and_then(|u| reqwest::Url::parse(u).ok());
            let mut inv = self.record(
                f,
                &InvokeRequest {
                    tenant_id: &f.tenant_id,
                    function: &f.name,
                    payload: Bytes::new(),
                    content_type: None,
                    idempotency_key: None,
                    trace: trace.child(new_span()),
                    callback_url: dl.callback_url.clone(),
                },
                Mode::Async,
            );
            inv.redriven_from = Some(dl.invocation_id.clone());
            let cell = match self.insert(f, inv, None) {
                Ok(Ok(c)) => c,
                _ => continue,
            };
            out.push(cell.snapshot());
            self.started();
            let job = Job {
                cell,
                payload: dl.payload.clone(),
                content_type: dl.content_type.clone(),
                trace,
                callback,
                accepted: Instant::now(),
            };
            if f.tx.try_send(job).is_err() {
                drop(place);
                self.ended();
                break;
            }
            place.hand_over();
            self.purge(f, Some(&dl.invocation_id));
        }
        Ok(out)
    }

    /// Stops accepting invocations, lets queued and running ones finish within `grace`, then
    /// stops every function instance. Returns how many invocations were still unfinished.
    pub async fn drain(&self, grace: Duration) -> usize {
        self.0.draining.store(true, Ordering::SeqCst);
        let until = tokio::time::Instant::now() + grace;
        loop {
            let notified = self.0.idle.notified();
            if self.0.active.load(Ordering::SeqCst) == 0 {
                break;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                break;
            }
        }
        let left = self.0.active.load(Ordering::SeqCst);
        let all: Vec<Arc<Function>> = self
            .0
            .functions
            .write()
            .drain()
            .flat_map(|(_, m)| m.into_values())
            .collect();
        for f in all {
            f.deployed.shutdown().await;
        }
        left
    }

    /// Loaded functions of a tenant (for the API's live view).
    pub fn loaded_functions(&self, tenant_id: &str) -> Vec<Arc<Function>> {
        self.0
            .functions
            .read()
            .get(tenant_id)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Invocations accepted and not finished, across functions.
    pub fn active(&self) -> usize {
        self.0.active.load(Ordering::SeqCst)
    }

    /// A function's invocations still kept in memory, newest first (the UI's list and rates).
    pub fn recent_invocations(
        &self,
        tenant_id: &str,
        function: &str,
        limit: usize,
    ) -> Vec<Invocation> {
        self.0.store.recent(tenant_id, function, limit)
    }
}

/// An accepted async invocation.
pub struct Accepted {
    pub invocation: Invocation,
    /// The same `Idempotency-Key` and payload were seen before: this is that invocation.
    pub repeated: bool,
}

fn reused() -> Error {
    Error::new(
        ErrorCode::IdempotencyKeyReused,
        "this Idempotency-Key was used with a different payload",
    )
    .with_field("Idempotency-Key")
}

fn sync_result(inv: Invocation) -> SyncResult {
    match inv.state {
        State::Succeeded => {
            let out = inv.output.clone().unwrap_or(Output {
                status: 200,
                content_type: None,
                body: Bytes::new(),
            });
            SyncResult::Succeeded(inv, out)
        }
        State::TimedOut => {
            let e = Error::new(
                ErrorCode::InvocationTimedOut,
                format!(
                    "invocation {} of function {} timed out and was stopped",
                    inv.id, inv.function
                ),
            );
            SyncResult::Failed(inv, e)
        }
        _ => match (&inv.failure, inv.output.clone()) {
            (Some(f), Some(out)) if f.kind == "error" => SyncResult::FunctionError(inv, out),
            (f, _) => {
                let message = f
                    .as_ref()
                    .map(|f| f.message.clone())
                    .unwrap_or_else(|| "the invocation failed".into());
                let e = Error::new(
                    ErrorCode::FunctionFailed,
                    format!(
                        "invocation {} of function {}: {message}",
                        inv.id, inv.function
                    ),
                );
                SyncResult::Failed(inv, e)
            }
        },
    }
}

/// The function's scheduler: hands queued async invocations a slot and a task, in order.
async fn dispatch(engine: Weak<Inner>, f: Weak<Function>, mut rx: mpsc::Receiver<Job>) {
    while let Some(job) = rx.recv().await {
        let Some(func) = f.upgrade() else { return };
        let permit = func
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        func.dequeued();
        let Some(inner) = engine.upgrade() else {
            return;
        };
        tokio::spawn(run_async(Engine(inner), func, job, permit));
    }
}

async fn run_async(engine: Engine, f: Arc<Function>, job: Job, mut permit: OwnedSemaphorePermit) {
    let retries = f.spec.retries;
    let outcome = loop {
        let deadline = Instant::now() + Duration::from_millis(f.spec.timeout_ms);
        let deadline_unix = now_ms() + f.spec.timeout_ms as i64;
        let r = engine
            .attempt(
                &f,
                &job.cell,
                &job.payload,
                &job.content_type,
                &job.trace,
                deadline,
                deadline_unix,
            )
            .await;
        let attempts = job.cell.record.lock().attempts;
        match r {
            Err(e) if e.retryable() && attempts <= retries => {
                f.m.retries.increment(1);
                let wait = backoff(
                    Duration::from_millis(f.spec.backoff.initial_ms),
                    Duration::from_millis(f.spec.backoff.max_ms),
                    attempts,
                );
                tracing::info!(function = %f.name, invocation = %job.cell.record.lock().id, attempt = attempts, error = %e.message(), retry_in_ms = wait.as_millis() as u64, "invocation failed; retrying");
                job.cell.update(|r| {
                    r.state = State::Retrying;
                    r.failure = Some(Failure {
                        kind: e.kind(),
                        message: e.message(),
                    });
                });
                drop(permit);
                f.retrying.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(wait).await;
                permit = f
                    .slots
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed");
                f.retrying.fetch_sub(1, Ordering::SeqCst);
            }
            other => break other,
        }
    };
    drop(permit);
    let failed = outcome.is_err();
    let inv = engine.finish(&f, &job.cell, outcome, Mode::Async, job.accepted);
    if failed {
        job.cell.update(|r| r.dead_lettered = true);
        let failure = inv.failure.clone().unwrap_or(Failure {
            kind: "error",
            message: "failed".into(),
        });
        tracing::warn!(function = %f.name, invocation = %inv.id, attempts = inv.attempts, error = %failure.message, "invocation failed for good; moved to the dead-letter queue");
        f.push_dead_letter(
            DeadLetter {
                invocation_id: inv.id.clone(),
                function: f.name.clone(),
                payload: job.payload.clone(),
                content_type: job.content_type.clone(),
                failure,
                attempts: inv.attempts,
                failed_ms: now_ms(),
                trace_id: inv.trace_id.clone(),
                callback_url: job.callback.as_ref().map(|u| u.to_string()),
            },
            engine.0.config.dlq_capacity,
        );
    }
    if let (Some(url), Some(key)) = (&job.callback, &f.callback_key) {
        let out = inv.output.clone();
        let (status, content_type, body) = match &out {
            Some(o) => (o.status, o.content_type.as_deref(), o.body.clone()),
            None => (
                0,
                Some("application/json"),
                Bytes::from(
                    serde_json::json!({"invocation_id": inv.id, "state": inv.state.as_str(), "failure": inv.failure})
                        .to_string(),
                ),
            ),
        };
        let (attempts, error) = engine
            .0
            .deliverer
            .deliver(&Delivery {
                url,
                invocation_id: &inv.id,
                function: &f.name,
                outcome: inv.state.as_str(),
                status,
                content_type,
                body,
                secret: key,
            })
            .await;
        if error.is_none() {
            f.m.callbacks_ok.increment(1);
        } else {
            f.m.callbacks_failed.increment(1);
        }
        job.cell.record.lock().callback = Some(CallbackReport {
            url: url.to_string(),
            attempts,
            delivered: error.is_none(),
            last_error: error,
        });
    }
    engine.ended();
}

/// Lets an unloaded function finish its queue, then stops its instances.
async fn retire(f: Arc<Function>) {
    while f.busy() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f.deployed.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_refuse_with_a_retry_after() {
        let l = limiter(&RateLimit {
            per_second: 1,
            burst: Some(2),
        });
        assert!(check_rate(&l, "tenant").is_ok());
        assert!(check_rate(&l, "tenant").is_ok());
        let refused = check_rate(&l, "the tenant's invocation").unwrap_err();
        assert_eq!(refused.error.code, ErrorCode::RateLimited);
        assert!(refused.retry_after.unwrap() >= 1);
    }

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_stays_capped() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_millis(1000));
        for attempt in 1..=8 {
            let exp = (100u64 << (attempt - 1)).min(1000);
            let d = backoff(initial, max, attempt).as_millis() as u64;
            assert!(d >= exp / 2 && d <= exp, "attempt {attempt}: {d} ms");
        }
    }
}
