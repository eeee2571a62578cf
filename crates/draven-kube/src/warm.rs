//! `mode: warm`: a Deployment and a ClusterIP Service per function revision, serving the
//! function HTTP contract; the gateway calls the Service's cluster IP with the same kept-alive
//! connection stack as the local warm pool ([`draven_functions::executor::http::Conns`]).
//!
//! Draven is the autoscaler: before a call it raises `replicas` (through the `scale`
//! subresource) to the invocations in flight, within `min_replicas..=max_replicas` (at least
//! one); a keeper task scales back to `min_replicas` — zero by default — once the function has
//! been idle for `idle_timeout_ms`. After zero, the first call waits, by watching the
//! Deployment, until a replica is available (a cold start, counted as such).
//!
//! Architecture invariant: the objects are named per revision, so an old revision's shutdown
//! never deletes a newer revision's objects.

use crate::objects;
use crate::{api_failure, KubeConfig};
use bytes::Bytes;
use draven_functions::executor::http::{CallError, Conns};
use draven_functions::executor::{
    Deployed, Deployment as FnDeployment, ExecError, ExecRequest, ExecResponse, InstanceStats,
};
use draven_functions::spec::{Runtime, WarmSettings};
use futures::future::BoxFuture;
use futures::StreamExt;
use http::{HeaderName, HeaderValue, Request};
use http_body_util::Full;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

static X_INVOCATION_ID: HeaderName = HeaderName::from_static("x-invocation-id");
static X_DEADLINE: HeaderName = HeaderName::from_static("x-deadline");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

pub struct WarmFunction {
    deployments: Api<Deployment>,
    services: Api<Service>,
    config: Arc<KubeConfig>,
    deployment: Arc<FnDeployment>,
    warm: WarmSettings,
    name: String,
    /// The Service's address, once the objects exist.
    conns: tokio::sync::OnceCell<Conns>,
    /// The replicas last asked for.
    replicas: AtomicI32,
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` of the last call's end.
    last_used: AtomicU64,
    epoch: Instant,
    /// Serializes scaling decisions.
    scaling: tokio::sync::Mutex<()>,
    keeper: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl WarmFunction {
    pub fn start(
        client: kube::Client,
        config: Arc<KubeConfig>,
        deployment: Arc<FnDeployment>,
    ) -> Arc<WarmFunction> {
        let warm = match &deployment.spec.runtime {
            Runtime::Container { warm, .. } => warm.clone(),
            Runtime::Process { .. } => WarmSettings::default(),
        };
        let name = objects::warm_name(&deployment.tenant, &deployment.name, deployment.revision);
        let f = Arc::new(WarmFunction {
            deployments: Api::namespaced(client.clone(), &config.namespace),
            services: Api::namespaced(client, &config.namespace),
            config,
            deployment,
            warm,
            name,
            conns: tokio::sync::OnceCell::new(),
            replicas: AtomicI32::new(0),
            in_flight: AtomicUsize::new(0),
            last_used: AtomicU64::new(0),
            epoch: Instant::now(),
            scaling: tokio::sync::Mutex::new(()),
            keeper: parking_lot::Mutex::new(None),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            *f.keeper.lock() = Some(rt.spawn(keeper(Arc::downgrade(&f))));
        }
        f
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Creates the Service and Deployment (or adopts them), once; the Service's cluster IP is
    /// the address called.
    async fn ensure(&self) -> Result<&Conns, ExecError> {
        self.conns
            .get_or_try_init(|| async {
                let svc = objects::service(&self.deployment, &self.config, &self.warm);
                let svc = match self.services.create(&PostParams::default(), &svc).await {
                    Ok(s) => s,
                    Err(kube::Error::Api(s)) if s.code == 409 => self
                        .services
                        .get(&self.name)
                        .await
                        .map_err(|e| api_failure("reading the function's Service", e))?,
                    Err(e) => return Err(api_failure("creating the function's Service", e)),
                };
                let replicas = self.warm.min_replicas as i32;
                let dep = objects::deployment(&self.deployment, &self.config, &self.warm, replicas);
                match self.deployments.create(&PostParams::default(), &dep).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => return Err(api_failure("creating the function's Deployment", e)),
                }
                self.replicas.store(replicas, Ordering::SeqCst);
                let ip = svc
                    .spec
                    .as_ref()
                    .and_then(|s| s.cluster_ip.clone())
                    .filter(|ip| ip != "None" && !ip.is_empty())
                    .ok_or_else(|| {
                        ExecError::Unavailable(format!(
                            "the Service {} has no cluster IP",
                            self.name
                        ))
                    })?;
                let ip = ip.parse().map_err(|_| {
                    ExecError::Unavailable(format!(
                        "the Service's cluster IP {ip:?} is not an address"
                    ))
                })?;
                let addr = SocketAddr::new(ip, self.warm.port);
                Ok(Conns::new(addr, 64, self.config.max_answer_bytes))
            })
            .await
    }

    /// Sets `replicas` through the scale subresource.
    async fn scale(&self, replicas: i32) -> Result<(), ExecError> {
        let patch = serde_json::json!({"spec": {"replicas": replicas}});
        self.deployments
            .patch_scale(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| api_failure("scaling the function's Deployment", e))?;
        self.replicas.store(replicas, Ordering::SeqCst);
        tracing::info!(function = %self.deployment.name, deployment = %self.name, replicas, "scaled");
        Ok(())
    }

    /// Raises replicas to the load; after zero, waits until one is available. Returns whether
    /// this call had to wait for a replica (a cold start).
    async fn scale_up(&self, deadline: Instant) -> Result<bool, ExecError> {
        let want = (self.in_flight.load(Ordering::SeqCst) as i32)
            .max(self.warm.min_replicas as i32)
            .max(1)
            .min(self.warm.max_replicas as i32);
        if self.replicas.load(Ordering::SeqCst) >= want {
            return Ok(false);
        }
        let _guard = self.scaling.lock().await;
        let was = self.replicas.load(Ordering::SeqCst);
        if was < want {
            self.scale(want).await?;
        }
        if was > 0 {
            return Ok(false);
        }
        tokio::time::timeout_at(deadline.into(), self.available())
            .await
            .map_err(|_| ExecError::Timeout)??;
        Ok(true)
    }

    /// Waits (watching the Deployment) until at least one replica is available.
    async fn available(&self) -> Result<(), ExecError> {
        loop {
            let d = self
                .deployments
                .get(&self.name)
                .await
                .map_err(|e| api_failure("reading the function's Deployment", e))?;
            if ready(&d) {
                return Ok(());
            }
            let rv = d.metadata.resource_version.clone().unwrap_or_default();
            let params = WatchParams::default()
                .fields(&format!("metadata.name={}", self.name))
                .timeout(60);
            let mut events = self
                .deployments
                .watch(&params, &rv)
                .await
                .map_err(|e| api_failure("watching the function's Deployment", e))?
                .boxed();
            while let Some(ev) = events.next().await {
                match ev {
                    Ok(WatchEvent::Added(d) | WatchEvent::Modified(d)) if ready(&d) => {
                        return Ok(())
                    }
                    Ok(WatchEvent::Deleted(_)) => {
                        return Err(ExecError::Crashed(format!(
                            "the Deployment {} was deleted",
                            self.name
                        )))
                    }
                    Ok(WatchEvent::Error(e)) => {
                        return Err(ExecError::Crashed(format!(
                            "the watch failed: {}",
                            e.message
                        )))
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
    }

    async fn call(&self, req: ExecRequest) -> Result<ExecResponse, ExecError> {
        let started = Instant::now();
        let conns = self.ensure().await?;
        let cold = self.scale_up(req.deadline).await?;
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
        let answer = match tokio::time::timeout_at(req.deadline.into(), conns.call(http)).await {
            Err(_) => return Err(ExecError::Timeout),
            Ok(Err(CallError::TooLarge)) => {
                return Err(ExecError::Failed {
                    status: 502,
                    content_type: None,
                    body: Bytes::from_static(b"the answer exceeds the response size limit"),
                })
            }
            Ok(Err(e)) => {
                conns.clear();
                return Err(ExecError::Crashed(format!(
                    "calling the function's Service {}: {e}",
                    conns.addr()
                )));
            }
            Ok(Ok(a)) => a,
        };
        let content_type = answer
            .content_type
            .and_then(|v| v.to_str().ok().map(str::to_owned));
        if answer.status == http::StatusCode::GATEWAY_TIMEOUT {
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
            cold_start: cold.then(|| started.elapsed()),
        })
    }

    /// Scales down to `min_replicas` after `idle_timeout_ms` without calls.
    async fn keep(&self) {
        let min = self.warm.min_replicas as i32;
        let idle = self
            .now_ms()
            .saturating_sub(self.last_used.load(Ordering::SeqCst));
        if self.in_flight.load(Ordering::SeqCst) == 0
            && self.replicas.load(Ordering::SeqCst) > min
            && idle >= self.warm.idle_timeout_ms
        {
            let _guard = self.scaling.lock().await;
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                if let Err(e) = self.scale(min).await {
                    tracing::warn!(function = %self.deployment.name, error = %e.message(), "cannot scale down");
                }
                if let Some(c) = self.conns.get() {
                    c.clear();
                }
            }
        }
    }

    /// The replicas last asked for (tests and the API).
    pub fn replicas(&self) -> i32 {
        self.replicas.load(Ordering::SeqCst)
    }

    /// The Deployment's and Service's name.
    pub fn object_name(&self) -> &str {
        &self.name
    }
}

fn ready(d: &Deployment) -> bool {
    d.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
        > 0
}

async fn keeper(f: Weak<WarmFunction>) {
    let mut every = tokio::time::interval(Duration::from_millis(100));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(f) = f.upgrade() else { return };
        f.keep().await;
    }
}

/// Counts a call in flight and stamps its end.
struct InFlight<'a>(&'a WarmFunction);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.last_used.store(self.0.now_ms(), Ordering::SeqCst);
    }
}

impl Deployed for WarmFunction {
    fn invoke(&self, req: ExecRequest) -> BoxFuture<'_, Result<ExecResponse, ExecError>> {
        Box::pin(async move {
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            let _in_flight = InFlight(self);
            self.call(req).await
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(k) = self.keeper.lock().take() {
                k.abort();
            }
            if self.conns.get().is_none() {
                return;
            }
            let dp = DeleteParams::background();
            if let Err(e) = self.deployments.delete(&self.name, &dp).await {
                tracing::warn!(deployment = %self.name, error = %e, "cannot delete a function's Deployment");
            }
            if let Err(e) = self.services.delete(&self.name, &dp).await {
                tracing::warn!(service = %self.name, error = %e, "cannot delete a function's Service");
            }
        })
    }

    fn stats(&self) -> InstanceStats {
        InstanceStats {
            instances: self.replicas.load(Ordering::SeqCst).max(0) as usize,
            busy: self.in_flight.load(Ordering::SeqCst),
            pids: Vec::new(),
        }
    }
}
