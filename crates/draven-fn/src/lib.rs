//! Write a Draven function in a few lines.
//!
//! ```no_run
//! use draven_fn::{Request, Response};
//!
//! fn main() {
//!     draven_fn::run(|req: Request| async move {
//!         req.log("info", "saying hello");
//!         Response::json(&serde_json::json!({"hello": "world"}))
//!     })
//! }
//! ```
//!
//! The crate implements the function side of the HTTP contract (`docs/functions.md`):
//!
//! - it listens on the socket Draven hands over as fd 3 (`LISTEN_FDS=1`), else on `PORT`
//!   (default 8080) on all interfaces;
//! - `POST /invoke` calls the handler with the body and the `X-Invocation-Id`, `traceparent` and
//!   `X-Deadline` headers; at the deadline the handler is dropped (its work stops) and 504 is
//!   answered; `GET /healthz` answers 200;
//! - [`Request::log`] writes one JSON line to stderr with the function, invocation id and
//!   trace id, so logs correlate with Draven's own;
//! - SIGTERM stops accepting connections and lets running invocations finish (up to 10 s).
//!
//! It runs on a single-threaded Tokio runtime: a function process starts in about a
//! millisecond and serves its instance's share of invocations.

use bytes::Bytes;
use http::{header, HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One invocation.
#[derive(Clone, Debug)]
pub struct Request {
    pub body: Bytes,
    pub content_type: Option<String>,
    pub invocation_id: String,
    pub traceparent: Option<String>,
    /// When Draven stops waiting (from `X-Deadline`, Unix milliseconds).
    pub deadline: Option<SystemTime>,
}

impl Request {
    fn from_headers(headers: &HeaderMap, body: Bytes) -> Request {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Request {
            body,
            content_type: text("content-type"),
            invocation_id: text("x-invocation-id").unwrap_or_default(),
            traceparent: text("traceparent"),
            deadline: text("x-deadline")
                .and_then(|v| v.parse::<u64>().ok())
                .map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
        }
    }

    /// The body as JSON; on failure, a 400 answer naming the problem.
    #[allow(clippy::result_large_err)]
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Response> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Response::error(400, &format!("the payload is not the expected JSON: {e}"))
        })
    }

    /// The trace id of `traceparent`.
    pub fn trace_id(&self) -> Option<&str> {
        self.traceparent
            .as_deref()
            .and_then(|t| t.split('-').nth(1))
            .filter(|t| t.len() == 32)
    }

    /// Time left before the deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| {
            d.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        })
    }

    /// Writes a structured log line (JSON, one line, to stderr).
    pub fn log(&self, level: &str, message: &str) {
        log_line(level, message, Some(&self.invocation_id), self.trace_id());
    }
}

/// Writes one JSON log line to stderr: `ts` (RFC 3339 seconds-precision is avoided: Unix ms),
/// `level`, `function`, `invocation_id`, `trace_id`, `msg`.
pub fn log_line(level: &str, message: &str, invocation_id: Option<&str>, trace_id: Option<&str>) {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut line = serde_json::json!({
        "ts_ms": ts,
        "level": level,
        "function": std::env::var("DRAVEN_FUNCTION").unwrap_or_default(),
        "msg": message,
    });
    if let Some(i) = invocation_id.filter(|i| !i.is_empty()) {
        line["invocation_id"] = i.into();
    }
    if let Some(t) = trace_id {
        line["trace_id"] = t.into();
    }
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// What the function answers.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
}

impl Response {
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Response {
        match serde_json::to_vec(value) {
            Ok(v) => Response {
                status: 200,
                content_type: "application/json".into(),
                body: Bytes::from(v),
            },
            Err(e) => Response::error(500, &format!("cannot serialize the answer: {e}")),
        }
    }

    pub fn text(text: impl Into<String>) -> Response {
        Response {
            status: 200,
            content_type: "text/plain; charset=utf-8".into(),
            body: Bytes::from(text.into()),
        }
    }

    pub fn bytes(content_type: &str, body: impl Into<Bytes>) -> Response {
        Response {
            status: 200,
            content_type: content_type.into(),
            body: body.into(),
        }
    }

    /// An error answer: `{"error": message}` with `status` (4xx: not retried by Draven; 5xx:
    /// retried for async invocations).
    pub fn error(status: u16, message: &str) -> Response {
        Response {
            status,
            content_type: "application/json".into(),
            body: Bytes::from(serde_json::json!({ "error": message }).to_string()),
        }
    }

    pub fn with_status(mut self, status: u16) -> Response {
        self.status = status;
        self
    }
}

impl<E: std::fmt::Display> From<Result<Response, E>> for Response {
    fn from(r: Result<Response, E>) -> Response {
        r.unwrap_or_else(|e| Response::error(500, &e.to_string()))
    }
}

/// The listener Draven handed over (fd 3), else `0.0.0.0:$PORT`.
pub fn listener() -> std::io::Result<std::net::TcpListener> {
    if std::env::var("LISTEN_FDS").as_deref() == Ok("1") {
        use std::os::fd::FromRawFd;
        // SAFETY: the contract says fd 3 is a listening TCP socket given to this process
        // (LISTEN_FDS=1); nothing else in the process owns it.
        let l = unsafe { std::net::TcpListener::from_raw_fd(3) };
        // Not inherited further by anything this function starts.
        // SAFETY: fcntl on an fd we own.
        unsafe {
            let flags = libc::fcntl(3, libc::F_GETFD);
            libc::fcntl(3, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
        std::env::remove_var("LISTEN_FDS");
        l.set_nonblocking(true)?;
        return Ok(l);
    }
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let l = std::net::TcpListener::bind(("0.0.0.0", port))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Serves `handler` on a single-threaded runtime until SIGTERM. Never returns normally.
pub fn run<F, Fut>(handler: F)
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + 'static,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    if let Err(e) = local.block_on(&rt, serve(handler)) {
        log_line("error", &format!("cannot serve: {e}"), None, None);
        std::process::exit(1);
    }
}

/// Serves `handler` on the current (single-threaded) runtime, inside a `LocalSet`, until
/// SIGTERM.
pub async fn serve<F, Fut>(handler: F) -> std::io::Result<()>
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + 'static,
{
    let listener = tokio::net::TcpListener::from_std(listener()?)?;
    let handler = Arc::new(handler);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
            _ = term.recv() => break,
        };
        stream.set_nodelay(true).ok();
        let handler = handler.clone();
        let in_flight = in_flight.clone();
        tokio::task::spawn_local(async move {
            let service = hyper::service::service_fn(move |req| {
                let handler = handler.clone();
                let in_flight = in_flight.clone();
                async move { Ok::<_, Infallible>(route(req, handler.as_ref(), &in_flight).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
    // Drain: let running invocations answer.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while in_flight.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

async fn route<F, Fut>(
    req: http::Request<Incoming>,
    handler: &F,
    in_flight: &AtomicUsize,
) -> http::Response<Full<Bytes>>
where
    F: Fn(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/invoke") => {
            in_flight.fetch_add(1, Ordering::SeqCst);
            let (parts, body) = req.into_parts();
            let answer = match body.collect().await {
                Ok(b) => {
                    let request = Request::from_headers(&parts.headers, b.to_bytes());
                    match request.remaining() {
                        Some(left) => match tokio::time::timeout(left, handler(request)).await {
                            Ok(r) => r,
                            Err(_) => Response::error(504, "the invocation reached its deadline"),
                        },
                        None => handler(request).await,
                    }
                }
                Err(e) => Response::error(400, &format!("cannot read the request: {e}")),
            };
            in_flight.fetch_sub(1, Ordering::SeqCst);
            to_http(answer)
        }
        (&Method::GET, "/healthz") => to_http(Response::text("ok")),
        _ => to_http(Response::error(
            404,
            "not found: the contract is POST /invoke and GET /healthz",
        )),
    }
}

fn to_http(r: Response) -> http::Response<Full<Bytes>> {
    let mut resp = http::Response::new(Full::new(r.body));
    *resp.status_mut() =
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = header::HeaderValue::from_str(&r.content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_the_contract_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-invocation-id", "inv-1".parse().unwrap());
        h.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                .parse()
                .unwrap(),
        );
        h.insert("x-deadline", "4102444800000".parse().unwrap());
        let r = Request::from_headers(&h, Bytes::from_static(b"{\"a\":1}"));
        assert_eq!(r.invocation_id, "inv-1");
        assert_eq!(r.trace_id(), Some("0af7651916cd43dd8448eb211c80319c"));
        assert!(r.remaining().unwrap() > Duration::from_secs(3600));
        let v: serde_json::Value = r.json().unwrap();
        assert_eq!(v["a"], 1);
        let bad = Request::from_headers(&HeaderMap::new(), Bytes::from_static(b"nope"));
        assert_eq!(bad.json::<serde_json::Value>().unwrap_err().status, 400);
    }
}
