//! Draven's HTTP edge: the axum router, authentication and authorization, problem+json,
//! idempotency, OpenAPI, metrics and tracing middleware.
//!
//! This crate parses and authorizes; it holds no business rules. Handlers turn a request into
//! a call on a domain or store function and its result into JSON. The path of a request:
//! `observe` (request id, trace, metrics) → routing → `tag_route` → `authorize` (the route's
//! declared rule) → `idempotent` (creating POSTs) → handler.

pub mod authz;
pub mod docs;
pub mod etag;
pub mod extract;
pub mod idempotency;
pub mod problem;
pub mod read_cache;
pub mod routes;
pub mod telemetry;
pub mod ui;

use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::Router;
use draven_blob::Blobs;
use draven_store::crypto::KeyEncryptionKey;
use draven_store::Db;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Settings of the HTTP edge.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Largest accepted request body, in bytes (413 above).
    pub max_body_bytes: usize,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_ttl: Duration,
    /// A runner's lease on a job's environment lock; runners heartbeat at a third of it.
    pub runner_lease: Duration,
    /// A finished job's log larger than this moves to object storage.
    pub log_inline_max_bytes: i64,
    /// How long a web UI session lasts after sign-in.
    pub session_ttl: Duration,
    /// `Secure` on the UI's cookies: `None` decides per request (HTTPS as seen through
    /// `X-Forwarded-Proto`), `Some` forces it on or off.
    pub secure_cookies: Option<bool>,
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            max_body_bytes: 10 * 1024 * 1024,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            runner_lease: Duration::from_secs(30),
            log_inline_max_bytes: 1024 * 1024,
            session_ttl: Duration::from_secs(12 * 3600),
            secure_cookies: None,
        }
    }
}

/// Set when shutdown begins: readiness turns false and new work is refused.
#[derive(Clone, Debug, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    pub fn start(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What every handler can reach: one pointer, so the per-request clones axum makes (one per
/// middleware and extractor) are a single reference-count increment.
#[derive(Clone)]
pub struct AppState(Arc<AppCore>);

impl std::ops::Deref for AppState {
    type Target = AppCore;

    fn deref(&self) -> &AppCore {
        &self.0
    }
}

/// The shared parts behind [`AppState`].
pub struct AppCore {
    pub db: Db,
    pub blobs: Blobs,
    pub registry: draven_registry::Registry,
    pub deploys: draven_deploy::service::Deploys,
    pub kek: Arc<dyn KeyEncryptionKey>,
    pub config: Arc<ApiConfig>,
    pub draining: Draining,
    pub metrics: PrometheusHandle,
    pub policy: Arc<authz::RoutePolicy>,
    pub principals: Arc<authz::PrincipalCache>,
    pub reads: Arc<read_cache::ReadCache>,
    /// Wakes runners waiting in a claim when a job may have become runnable.
    pub jobs_changed: Arc<tokio::sync::Notify>,
    pub openapi_json: Arc<String>,
    pub docs_html: Arc<String>,
    /// The functions engine, when functions are enabled.
    pub functions: Option<draven_functions::Engine>,
    /// Where the local executor writes function output (for `GET /functions/{name}/logs`).
    pub function_logs: Option<std::path::PathBuf>,
}

/// The parts the binary provides.
pub struct Services {
    pub db: Db,
    pub blobs: Blobs,
    pub kek: Arc<dyn KeyEncryptionKey>,
    pub config: ApiConfig,
    pub draining: Draining,
    /// Where bare repositories for tag-signature checks are kept.
    pub git_cache: std::path::PathBuf,
    pub functions: Option<draven_functions::Engine>,
    pub function_logs: Option<std::path::PathBuf>,
}

/// Builds the whole HTTP application. Fails if a route's declared access rule is invalid.
pub fn app(services: Services) -> Result<Router, String> {
    let (router, mut doc) = routes::api().split_for_parts();
    routes::finish_document(&mut doc);
    let policy = authz::RoutePolicy::from_openapi(&doc)?;
    let openapi_json = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    let docs_html = docs::render(&doc);
    let state = AppState(Arc::new(AppCore {
        registry: draven_registry::Registry::new(services.db.clone(), services.blobs.clone()),
        deploys: draven_deploy::service::Deploys::new(
            services.db.clone(),
            services.git_cache.clone(),
            services.blobs.clone(),
        ),
        db: services.db,
        blobs: services.blobs,
        kek: services.kek,
        config: Arc::new(services.config.clone()),
        draining: services.draining,
        metrics: telemetry::metrics_handle(),
        policy: Arc::new(policy),
        principals: Arc::new(authz::PrincipalCache::default()),
        reads: Arc::new(read_cache::ReadCache::default()),
        jobs_changed: Arc::new(tokio::sync::Notify::new()),
        openapi_json: Arc::new(openapi_json),
        docs_html: Arc::new(docs_html),
        functions: services.functions,
        function_logs: services.function_logs,
    }));
    let api = router
        .route_layer(from_fn_with_state(state.clone(), retire_cached_reads))
        .route_layer(from_fn_with_state(state.clone(), idempotency::idempotent))
        .route_layer(from_fn_with_state(state.clone(), authz::authorize))
        .route_layer(from_fn(telemetry::tag_route));
    // The web UI calls the API in-process, through the same middleware (see `ui`).
    let in_process = api
        .clone()
        .fallback(routes::system::not_found)
        .with_state(state.clone());
    Ok(api
        .merge(ui::router(state.clone(), in_process))
        .fallback(routes::system::not_found)
        .layer(DefaultBodyLimit::max(services.config.max_body_bytes))
        .layer(from_fn(telemetry::observe))
        .with_state(state))
}

/// After any state-changing request of a tenant, retires the tenant's cached reads.
async fn retire_cached_reads(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let writes = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    ) && !is_gateway(&req);
    let tenant = req
        .extensions()
        .get::<authz::Auth>()
        .map(|a| a.principal.tenant_id.clone());
    let resp = next.run(req).await;
    if let (true, Some(t)) = (writes, tenant) {
        state.reads.invalidate(&t);
        // Any write may have made a job runnable (queued, approved, a lock freed).
        state.jobs_changed.notify_waiters();
    }
    resp
}

/// The invocation gateway's routes: they keep their own (in-memory) idempotency and change
/// nothing a cached read shows, so the generic idempotency and cache layers skip them.
pub fn is_gateway(req: &axum::extract::Request) -> bool {
    req.extensions()
        .get::<axum::extract::MatchedPath>()
        .is_some_and(|p| {
            let p = p.as_str();
            p.starts_with("/api/v1/functions/")
                && (p.ends_with("/invoke") || p.ends_with("/invoke-async"))
        })
}

/// The OpenAPI document alone (for `draven openapi` and tests).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = routes::api().split_for_parts().1;
    routes::finish_document(&mut doc);
    doc
}
