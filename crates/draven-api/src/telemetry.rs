//! Request ids, trace context, structured logs and HTTP metrics.
//!
//! The outermost middleware gives every request an id (the caller's `X-Request-Id` when it is
//! sane, else a new one) and a trace context (the caller's `traceparent`, else a new trace),
//! opens the request's span with both, echoes the id on the response and records the request
//! in the Prometheus histograms. [`outgoing`] carries the trace to whatever Draven calls.

use crate::problem::REQUEST_ID;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use draven_core::TraceContext;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use rand::RngCore;
use std::sync::OnceLock;
use std::time::Instant;
use tracing::Instrument;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

tokio::task_local! {
    /// The trace context of the request being served (our span, child of the caller's).
    pub static TRACE: TraceContext;
}

/// Latency buckets in seconds: fine below 10 ms (where the gateway lives), coarse above.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The process-wide Prometheus recorder (installed once; later calls share it).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Histograms keep raw samples until upkeep folds them into buckets: without it,
            // memory grows with every request between scrapes.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(std::time::Duration::from_secs(2));
                    upkeep.run_upkeep();
                })
                .expect("spawning the metrics upkeep thread");
            // Another recorder may already be installed in tests; ours still renders its own.
            let _ = metrics::set_global_recorder(recorder);
            describe_metrics();
            handle
        })
        .clone()
}

fn describe_metrics() {
    metrics::describe_counter!(
        "draven_http_requests_total",
        "HTTP requests by method, route and status"
    );
    metrics::describe_histogram!(
        "draven_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "HTTP request latency by method and route"
    );
    metrics::describe_gauge!(
        "draven_http_requests_in_flight",
        "HTTP requests being served"
    );
    metrics::describe_counter!(
        "draven_auth_denials_total",
        "Requests refused by authentication or authorization, by reason"
    );
}

fn random_trace() -> TraceContext {
    let mut t = [0u8; 16];
    let mut s = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut t);
    rand::thread_rng().fill_bytes(&mut s);
    TraceContext::root(t, s)
}

pub fn new_span_id() -> [u8; 8] {
    let mut s = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut s);
    s
}

fn sane_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    (1..=128).contains(&s.len()).then_some(())?;
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        .then(|| s.to_owned())
}

/// The outermost middleware: request id, trace, span, metrics.
pub async fn observe(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(sane_request_id)
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
    let trace = req
        .headers()
        .get(&TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse)
        .map(|parent| parent.child(new_span_id()))
        .unwrap_or_else(random_trace);
    let method = req.method().as_str().to_owned();
    let span = tracing::info_span!(
        "request",
        trace_id = %trace.trace_id_hex(),
        span_id = %trace.span_id_hex(),
        request_id = %request_id,
        method = %method,
        route = tracing::field::Empty,
    );
    let in_flight = metrics::gauge!("draven_http_requests_in_flight");
    in_flight.increment(1.0);
    let mut resp = REQUEST_ID
        .scope(request_id.clone(), TRACE.scope(trace, next.run(req)))
        .instrument(span.clone())
        .await;
    in_flight.decrement(1.0);
    // Unmatched requests (404s) are one label, so scanners cannot blow up the series count.
    let route = resp
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let elapsed = started.elapsed().as_secs_f64();
    let status = resp.status().as_u16();
    let (total, duration) = request_metrics(&method, &route, status);
    total.increment(1);
    duration.record(elapsed);
    span.in_scope(|| {
        tracing::info!(status = %status, duration_ms = elapsed * 1000.0, "request served");
    });
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    resp
}

type RequestMetrics = (metrics::Counter, metrics::Histogram);

/// The request counter and latency histogram of (method, route, status), registered once: the
/// recorder's lookup by label set (allocating the labels) is kept off the per-request path.
fn request_metrics(method: &str, route: &str, status: u16) -> RequestMetrics {
    use std::collections::HashMap;
    use std::fmt::Write;
    static CACHE: OnceLock<std::sync::RwLock<HashMap<String, RequestMetrics>>> = OnceLock::new();
    thread_local! {
        static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    let cache = CACHE.get_or_init(Default::default);
    KEY.with_borrow_mut(|key| {
        key.clear();
        let _ = write!(key, "{method} {route} {status}");
        if let Some(m) = cache.read().ok().and_then(|c| c.get(key.as_str()).cloned()) {
            return m;
        }
        let m = (
            metrics::counter!("draven_http_requests_total", "method" => method.to_owned(), "route" => route.to_owned(), "status" => status.to_string()),
            metrics::histogram!("draven_http_request_duration_seconds", "method" => method.to_owned(), "route" => route.to_owned()),
        );
        if let Ok(mut c) = cache.write() {
            // Bounded: routes are templates and statuses few; unmatched paths share one label.
            if c.len() < 10_000 {
                c.insert(key.clone(), m.clone());
            }
        }
        m
    })
}

/// Route-level middleware: hands the matched route template to [`observe`] (which runs before
/// routing and so cannot see it) and names it in the request span.
pub async fn tag_route(req: Request, next: Next) -> Response {
    let matched = req.extensions().get::<MatchedPath>().cloned();
    if let Some(m) = &matched {
        tracing::Span::current().record("route", m.as_str());
    }
    let mut resp = next.run(req).await;
    if let Some(m) = matched {
        resp.extensions_mut().insert(m);
    }
    resp
}

/// Outgoing HTTP: adds the current trace (as a new child span) and request id to a request.
pub mod outgoing {
    use super::*;

    /// The `traceparent` to send on an outgoing call made while serving a request (a child of
    /// our span), or a new trace outside any request.
    pub fn traceparent() -> String {
        TRACE
            .try_with(|t| t.child(new_span_id()))
            .unwrap_or_else(|_| random_trace())
            .to_string()
    }

    pub fn traced(builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let mut b = builder.header(TRACEPARENT.as_str(), traceparent());
        if let Some(id) = crate::problem::current_request_id() {
            b = b.header(X_REQUEST_ID.as_str(), id);
        }
        b
    }
}

/// Log output: JSON lines (default) or text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// JSON lines with the fields of the enclosing spans (`trace_id`, `span_id`, `request_id`,
/// `route`, …) at the top level of every line, beside the event's own fields, so a log
/// pipeline can index them without knowing span nesting.
struct FlatJson;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for FlatJson
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = serde_json::Map::new();
        line.insert(
            "timestamp".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        line.insert("level".into(), event.metadata().level().as_str().into());
        line.insert("target".into(), event.metadata().target().into());
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                let Some(fields) = ext.get::<tracing_subscriber::fmt::FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(serde_json::Value::Object(map)) =
                    serde_json::from_str::<serde_json::Value>(fields.fields.as_str())
                {
                    line.extend(map);
                }
            }
        }
        let mut visitor = JsonVisitor(&mut line);
        event.record(&mut visitor);
        writeln!(writer, "{}", serde_json::Value::Object(line))
    }
}

struct JsonVisitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

/// Installs the global subscriber once; `filter` is an env-filter directive (`info`,
/// `draven=debug,sqlx=warn`).
pub fn init_logging(format: LogFormat, filter: &str) {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                    .event_format(FlatJson)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
    let _ = result;
}
