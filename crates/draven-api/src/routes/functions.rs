//! Functions (SPEC F1–F5): definitions, the invocation gateway, invocation status, logs and
//! the dead-letter queue. The engine (`draven-functions`) decides; this module maps HTTP to it.
//!
//! Invoke permission is checked per function: a grant whose `project` names the function (or
//! a tenant-wide grant) with a role that may invoke, and a token with the `invoke` scope.

use crate::authz::Auth;
use crate::etag::{etag, if_match};
use crate::extract::{Path, Query, RawBody};
use crate::problem::{problem_response, ApiError, ApiResult};
use crate::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use draven_core::access::{Action, Target};
use draven_core::{Error, ErrorCode, Slug};
use draven_functions::engine::{DeadLetter, FunctionStats, InvokeRequest, Refusal, SyncResult};
use draven_functions::invocation::Invocation;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

static X_INVOCATION_ID: HeaderName = HeaderName::from_static("x-invocation-id");
static X_CALLBACK_URL: HeaderName = HeaderName::from_static("x-callback-url");
static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

fn refusal(r: Refusal) -> Response {
    let mut resp = problem_response(&r.error);
    if let Some(s) = r.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    resp
}

fn engine(state: &AppState) -> Result<&draven_functions::Engine, ApiError> {
    state.functions.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unavailable,
            "functions are not enabled on this server",
        )
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FunctionView {
    pub name: String,
    pub revision: i64,
    /// The definition (see `docs/functions.md`).
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
    /// Live counts, when the function is loaded on this server.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub live: Option<FunctionStats>,
}

fn view(state: &AppState, f: draven_store::functions::StoredFunction) -> FunctionView {
    let live = state
        .functions
        .as_ref()
        .and_then(|e| {
            e.loaded_functions(&f.tenant_id)
                .into_iter()
                .find(|l| l.name == f.name)
        })
        .map(|l| l.stats());
    FunctionView {
        spec: serde_json::from_str(&f.spec).unwrap_or(serde_json::Value::Null),
        name: f.name,
        revision: f.revision,
        created_by: f.created_by,
        created_at: f.created_at,
        updated_at: f.updated_at,
        live,
    }
}

/// The tenant's functions, with live counts where loaded.
#[utoipa::path(get, path = "/api/v1/functions", tag = "functions", security(("token" = ["tenant:read"])),
    responses((status = 200, body = Vec<FunctionView>)))]
pub async fn list_functions(
    State(state): State<AppState>,
    auth: Auth,
) -> ApiResult<axum::Json<Vec<FunctionView>>> {
    let all = state.db.list_functions(auth.tenant_id()).await?;
    Ok(axum::Json(
        all.into_iter().map(|f| view(&state, f)).collect(),
    ))
}

/// One function's definition (ETag: its revision) and live counts.
#[utoipa::path(get, path = "/api/v1/functions/{name}", tag = "functions", security(("token" = ["tenant:read"])),
    params(("name" = String, Path)), responses((status = 200, body = FunctionView)))]
pub async fn get_function(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let f = state.db.get_function(auth.tenant_id(), &name).await?;
    let tag = etag(f.revision);
    let mut resp = axum::Json(view(&state, f)).into_response();
    resp.headers_mut().insert(header::ETAG, tag);
    Ok(resp)
}

/// Creates or replaces a function's definition (`If-Match` with the revision to replace
/// safely). Running and queued invocations finish on the old definition.
#[utoipa::path(put, path = "/api/v1/functions/{name}", tag = "functions", security(("token" = ["tenant:write"])),
    params(("name" = String, Path)), request_body(content = Object, description = "The definition"),
    responses((status = 201, body = FunctionView), (status = 200, body = FunctionView), (status = 412, body = crate::problem::Problem)))]
pub async fn put_function(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: RawBody,
) -> ApiResult<Response> {
    let engine = engine(&state)?;
    let name = Slug::parse("name", &name)?;
    let m = body.media_type.as_str();
    if m != "application/json" {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the definition as Content-Type: application/json",
        ));
    }
    let spec = engine.parse_spec(&body.bytes)?;
    let kernel_secrets = spec
        .secrets
        .iter()
        .filter(|_| !engine.secrets_by_reference(&spec.executor));
    for s in kernel_secrets
        .map(|s| &s.secret)
        .chain(&spec.callback_secret)
    {
        if let Err(e) = state.db.secret_meta(auth.tenant_id(), s).await {
            let e = Error::from(e);
            return Err(if e.code == ErrorCode::NotFound {
                ApiError(Error::invalid(
                    "secrets",
                    format!("secret {s:?} does not exist"),
                ))
            } else {
                ApiError(e)
            });
        }
    }
    let text = serde_json::to_string(&spec).map_err(|_| ApiError(Error::internal()))?;
    let expected = if_match(&headers, false)?;
    let (stored, created) = state
        .db
        .put_function(
            &auth.actor,
            auth.tenant_id(),
            name.as_str(),
            &text,
            expected,
        )
        .await?;
    engine.unload(auth.tenant_id(), name.as_str());
    let tag = etag(stored.revision);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut resp = (status, axum::Json(view(&state, stored))).into_response();
    resp.headers_mut().insert(header::ETAG, tag);
    Ok(resp)
}

/// Deletes a function; its queued and running invocations finish first.
#[utoipa::path(delete, path = "/api/v1/functions/{name}", tag = "functions", security(("token" = ["tenant:write"])),
    params(("name" = String, Path)), responses((status = 204)))]
pub async fn delete_function(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let engine = engine(&state)?;
    state
        .db
        .delete_function(&auth.actor, auth.tenant_id(), &name)
        .await?;
    engine.unload(auth.tenant_id(), &name);
    Ok(StatusCode::NO_CONTENT)
}

fn header_text(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn may_invoke(state: &AppState, auth: &Auth, name: &str) -> Result<(), ApiError> {
    let target = Target {
        project: Some(name),
        environment: None,
        environment_protected: false,
    };
    // The common case decides without building the audit target.
    if matches!(
        auth.principal.decide(Action::Invoke, &target),
        draven_core::access::Decision::Allow
    ) {
        return Ok(());
    }
    auth.require(
        state,
        Action::Invoke,
        &Target {
            project: Some(name),
            environment: None,
            environment_protected: false,
        },
        &format!("function:{name}"),
    )
    .await
}

fn request<'a>(
    auth: &'a Auth,
    name: &'a str,
    headers: &HeaderMap,
    payload: Bytes,
) -> Result<InvokeRequest<'a>, ApiError> {
    let key = header_text(headers, &IDEMPOTENCY_KEY);
    if key.as_ref().is_some_and(|k| k.is_empty() || k.len() > 255) {
        return Err(ApiError(Error::invalid(
            "Idempotency-Key",
            "Idempotency-Key must be 1-255 visible ASCII characters",
        )));
    }
    Ok(InvokeRequest {
        tenant_id: auth.tenant_id(),
        function: name,
        payload,
        content_type: header_text(headers, &header::CONTENT_TYPE),
        idempotency_key: key,
        trace: crate::telemetry::TRACE
            .try_with(|t| *t)
            .unwrap_or_else(|_| draven_core::TraceContext::root(rand::random(), rand::random())),
        callback_url: header_text(headers, &X_CALLBACK_URL),
    })
}

/// The payload, whole (the header map is not cloned, as the `HeaderMap` extractor would).
async fn read_payload(body: axum::body::Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    "the request body exceeds the configured limit",
                );
            }
            source = s.source();
        }
        ApiError::new(
            ErrorCode::MalformedBody,
            "the request body could not be read",
        )
    })
}

fn with_id(mut resp: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert(X_INVOCATION_ID.clone(), v);
    }
    resp
}

/// Invokes a function and waits for its answer, which is returned as the function gave it
/// (status, content type, body) with `X-Invocation-Id`. Past the function's timeout: 504 with a
/// problem naming the invocation; the execution is stopped.
#[utoipa::path(post, path = "/api/v1/functions/{name}/invoke", tag = "functions", security(("token" = ["scoped:invoke"])),
    params(("name" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key: the same invocation is answered for a repeat")),
    request_body(content = Vec<u8>, description = "The payload, any media type", content_type = "*/*"),
    responses((status = 200, description = "The function's answer"), (status = 429, body = crate::problem::Problem), (status = 502, body = crate::problem::Problem), (status = 504, body = crate::problem::Problem)))]
pub async fn invoke(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
    request_in: axum::extract::Request,
) -> Response {
    let (parts, body) = request_in.into_parts();
    let body = match read_payload(body, state.config.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let headers = &parts.headers;
    let engine = match engine(&state) {
        Ok(e) => e,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = may_invoke(&state, &auth, &name).await {
        return e.into_response();
    }
    let req = match request(&auth, &name, headers, body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if req.callback_url.is_some() {
        return ApiError(Error::invalid(
            "X-Callback-Url",
            "X-Callback-Url is for asynchronous invocations (POST …/invoke-async)",
        ))
        .into_response();
    }
    match engine.invoke_sync(req).await {
        Err(r) => refusal(r),
        Ok(SyncResult::Succeeded(inv, out)) | Ok(SyncResult::FunctionError(inv, out)) => {
            let mut resp = Response::new(axum::body::Body::from(out.body));
            *resp.status_mut() = StatusCode::from_u16(out.status).unwrap_or(StatusCode::OK);
            if let Some(ct) = out
                .content_type
                .and_then(|c| HeaderValue::from_str(&c).ok())
            {
                resp.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            with_id(resp, &inv.id)
        }
        Ok(SyncResult::Failed(inv, e)) => with_id(problem_response(&e), &inv.id),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedView {
    pub invocation_id: String,
    pub status_url: String,
    pub state: String,
}

/// Queues an invocation and answers 202 at once with its id and `Location`. With
/// `X-Callback-Url`, the result is POSTed there when done (signed; see `docs/functions.md`).
#[utoipa::path(post, path = "/api/v1/functions/{name}/invoke-async", tag = "functions", security(("token" = ["scoped:invoke"])),
    params(("name" = String, Path), ("Idempotency-Key" = Option<String>, Header), ("X-Callback-Url" = Option<String>, Header)),
    request_body(content = Vec<u8>, description = "The payload, any media type", content_type = "*/*"),
    responses((status = 202, body = AcceptedView), (status = 429, body = crate::problem::Problem)))]
pub async fn invoke_async(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
    request_in: axum::extract::Request,
) -> Response {
    let (parts, body) = request_in.into_parts();
    let body = match read_payload(body, state.config.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let headers = &parts.headers;
    let engine = match engine(&state) {
        Ok(e) => e,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = may_invoke(&state, &auth, &name).await {
        return e.into_response();
    }
    let req = match request(&auth, &name, headers, body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match engine.invoke_async(req).await {
        Err(r) => refusal(r),
        Ok(a) => {
            let url = format!("/api/v1/invocations/{}", a.invocation.id);
            let body = AcceptedView {
                invocation_id: a.invocation.id.clone(),
                status_url: url.clone(),
                state: a.invocation.state.as_str().to_owned(),
            };
            let mut resp = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
            if let Ok(v) = HeaderValue::from_str(&url) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            with_id(resp, &a.invocation.id)
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvocationView {
    pub id: String,
    pub function: String,
    pub revision: i64,
    /// Where it ran (`local`, `kubernetes`).
    pub executor: String,
    /// `sync` or `async`.
    pub mode: String,
    /// `queued`, `running`, `retrying`, `succeeded`, `failed`, `timed_out`.
    pub state: String,
    pub attempts: u32,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    pub trace_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<ResultView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub failure: Option<draven_functions::invocation::Failure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub callback: Option<draven_functions::invocation::CallbackReport>,
    pub dead_lettered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redriven_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cold_start_ms: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResultView {
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The body: JSON when it is JSON, else text when UTF-8, else base64 in `body_base64`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub body: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
}

impl From<Invocation> for InvocationView {
    fn from(i: Invocation) -> InvocationView {
        use base64::Engine as _;
        let result = i.output.map(|o| {
            let json = serde_json::from_slice::<serde_json::Value>(&o.body).ok();
            let (body, b64) = match (json, std::str::from_utf8(&o.body)) {
                (Some(v), _) => (Some(v), None),
                (None, Ok(t)) => (Some(serde_json::Value::String(t.to_owned())), None),
                (None, Err(_)) => (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(&o.body)),
                ),
            };
            ResultView {
                status: o.status,
                content_type: o.content_type,
                body,
                body_base64: b64,
            }
        });
        InvocationView {
            duration_ms: i.started_ms.zip(i.finished_ms).map(|(s, f)| f - s),
            id: i.id,
            function: i.function,
            revision: i.revision,
            executor: i.executor,
            mode: match i.mode {
                draven_functions::invocation::Mode::Sync => "sync".into(),
                draven_functions::invocation::Mode::Async => "async".into(),
            },
            state: i.state.as_str().to_owned(),
            attempts: i.attempts,
            created_at: draven_store::rfc3339(i.created_ms),
            started_at: i.started_ms.map(draven_store::rfc3339),
            finished_at: i.finished_ms.map(draven_store::rfc3339),
            trace_id: i.trace_id,
            idempotency_key: i.idempotency_key,
            result,
            failure: i.failure,
            callback: i.callback,
            dead_lettered: i.dead_lettered,
            redriven_from: i.redriven_from,
            cold_start_ms: i.cold_start_ms,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Wait up to this many seconds (at most 60) for the invocation to finish.
    pub wait: Option<u64>,
}

/// An invocation's state and result. Readable by whoever may read the tenant or invoke the
/// function. Records are kept in memory for `DRAVEN_INVOCATION_TTL` after they finish.
#[utoipa::path(get, path = "/api/v1/invocations/{id}", tag = "functions", security(("token" = ["authenticated"])),
    params(("id" = String, Path), WaitQuery), responses((status = 200, body = InvocationView), (status = 404, body = crate::problem::Problem)))]
pub async fn get_invocation(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> ApiResult<axum::Json<InvocationView>> {
    let engine = engine(&state)?;
    let inv = engine
        .invocation(auth.tenant_id(), &id)
        .ok_or_else(|| ApiError(Error::not_found("invocation")))?;
    let target = Target {
        project: Some(&inv.function),
        environment: None,
        environment_protected: false,
    };
    let may_read = matches!(
        auth.principal.decide(Action::Read, &target),
        draven_core::access::Decision::Allow
    );
    if !may_read {
        may_invoke(&state, &auth, &inv.function).await?;
    }
    let inv = match q.wait {
        Some(s) if !inv.state.finished() => engine
            .wait(
                auth.tenant_id(),
                &id,
                std::time::Duration::from_secs(s.min(60)),
            )
            .await
            .unwrap_or_else(|| engine.invocation(auth.tenant_id(), &id).unwrap_or(inv)),
        _ => inv,
    };
    Ok(axum::Json(inv.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Only lines mentioning this invocation id.
    pub invocation: Option<String>,
    /// The last N matching lines (default 200, at most 5000).
    pub tail: Option<usize>,
}

/// The function processes' output (local executor): the last lines of its log file.
#[utoipa::path(get, path = "/api/v1/functions/{name}/logs", tag = "functions", security(("token" = ["tenant:read"])),
    params(("name" = String, Path), LogQuery), responses((status = 200, description = "Log lines", content_type = "text/plain")))]
pub async fn function_logs(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Response> {
    state.db.get_function(auth.tenant_id(), &name).await?;
    let Some(dir) = &state.function_logs else {
        return Ok((StatusCode::OK, "").into_response());
    };
    let path = draven_functions::executor::local::log_path(dir, auth.tenant_id(), &name);
    let text = tokio::fs::read_to_string(&path).await.unwrap_or_default();
    let tail = q.tail.unwrap_or(200).min(5000);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| q.invocation.as_deref().is_none_or(|id| l.contains(id)))
        .collect();
    let out = lines[lines.len().saturating_sub(tail)..].join("\n");
    let mut resp = (StatusCode::OK, out).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterView {
    pub invocation_id: String,
    pub function: String,
    pub attempts: u32,
    pub failed_at: String,
    #[schema(value_type = Object)]
    pub failure: draven_functions::invocation::Failure,
    pub trace_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    pub payload_bytes: usize,
    /// The payload, when inspecting one dead letter (UTF-8 text, else base64).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
}

fn dead_letter_view(d: DeadLetter, with_payload: bool) -> DeadLetterView {
    use base64::Engine as _;
    let (payload, b64) = if with_payload {
        match std::str::from_utf8(&d.payload) {
            Ok(t) => (Some(t.to_owned()), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(&d.payload)),
            ),
        }
    } else {
        (None, None)
    };
    DeadLetterView {
        payload_bytes: d.payload.len(),
        invocation_id: d.invocation_id,
        function: d.function,
        attempts: d.attempts,
        failed_at: draven_store::rfc3339(d.failed_ms),
        failure: d.failure,
        trace_id: d.trace_id,
        content_type: d.content_type,
        payload,
        payload_base64: b64,
    }
}

async fn loaded(
    state: &AppState,
    auth: &Auth,
    name: &str,
) -> Result<std::sync::Arc<draven_functions::engine::Function>, ApiError> {
    Ok(engine(state)?.function(auth.tenant_id(), name).await?)
}

/// The function's dead-letter queue: async invocations that failed after their retries.
#[utoipa::path(get, path = "/api/v1/functions/{name}/dead-letters", tag = "functions", security(("token" = ["tenant:read"])),
    params(("name" = String, Path)), responses((status = 200, body = Vec<DeadLetterView>)))]
pub async fn list_dead_letters(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<Vec<DeadLetterView>>> {
    let f = loaded(&state, &auth, &name).await?;
    let all = engine(&state)?.dead_letters(&f);
    Ok(axum::Json(
        all.into_iter()
            .map(|d| dead_letter_view(d, false))
            .collect(),
    ))
}

/// One dead letter, with its payload.
#[utoipa::path(get, path = "/api/v1/functions/{name}/dead-letters/{id}", tag = "functions", security(("token" = ["tenant:read"])),
    params(("name" = String, Path), ("id" = String, Path)), responses((status = 200, body = DeadLetterView)))]
pub async fn get_dead_letter(
    State(state): State<AppState>,
    auth: Auth,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<axum::Json<DeadLetterView>> {
    let f = loaded(&state, &auth, &name).await?;
    let d = engine(&state)?
        .dead_letter(&f, &id)
        .ok_or_else(|| ApiError(Error::not_found("dead letter")))?;
    Ok(axum::Json(dead_letter_view(d, true)))
}

/// Removes one dead letter.
#[utoipa::path(delete, path = "/api/v1/functions/{name}/dead-letters/{id}", tag = "functions", security(("token" = ["tenant:write"])),
    params(("name" = String, Path), ("id" = String, Path)), responses((status = 204)))]
pub async fn delete_dead_letter(
    State(state): State<AppState>,
    auth: Auth,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let f = loaded(&state, &auth, &name).await?;
    if engine(&state)?.purge(&f, Some(&id)) == 0 {
        return Err(ApiError(Error::not_found("dead letter")));
    }
    state
        .db
        .audit(
            auth.actor
                .did("function.dead-letter.delete", &format!("function:{name}"))
                .detail(serde_json::json!({"invocation": id})),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PurgeView {
    pub purged: usize,
}

/// Purges the whole dead-letter queue.
#[utoipa::path(delete, path = "/api/v1/functions/{name}/dead-letters", tag = "functions", security(("token" = ["tenant:write"])),
    params(("name" = String, Path)), responses((status = 200, body = PurgeView)))]
pub async fn purge_dead_letters(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<PurgeView>> {
    let f = loaded(&state, &auth, &name).await?;
    let purged = engine(&state)?.purge(&f, None);
    state
        .db
        .audit(
            auth.actor
                .did("function.dead-letter.purge", &format!("function:{name}"))
                .detail(serde_json::json!({"purged": purged})),
        )
        .await?;
    Ok(axum::Json(PurgeView { purged }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RedriveView {
    /// The new invocations, one per re-driven dead letter.
    pub invocations: Vec<InvocationView>,
    /// Dead letters left (the queue had no room for them).
    pub remaining: usize,
}

async fn redrive(
    state: &AppState,
    auth: &Auth,
    name: &str,
    id: Option<&str>,
) -> Result<Response, ApiError> {
    may_invoke(state, auth, name).await?;
    let engine = engine(state)?;
    let f = engine.function(auth.tenant_id(), name).await?;
    let invs = match engine.redrive(&f, id).await {
        Ok(i) => i,
        Err(r) => return Ok(refusal(r)),
    };
    state
        .db
        .audit(
            auth.actor
                .did("function.dead-letter.redrive", &format!("function:{name}"))
                .detail(serde_json::json!({"redriven": invs.len(), "invocation": id})),
        )
        .await?;
    let remaining = f.stats().dead_letters;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(RedriveView {
            invocations: invs.into_iter().map(Into::into).collect(),
            remaining,
        }),
    )
        .into_response())
}

/// Queues one dead letter again as a new async invocation (`redriven_from` names it).
#[utoipa::path(post, path = "/api/v1/functions/{name}/dead-letters/{id}/redrive", tag = "functions", security(("token" = ["scoped:invoke"])),
    params(("name" = String, Path), ("id" = String, Path)), responses((status = 202, body = RedriveView)))]
pub async fn redrive_dead_letter(
    State(state): State<AppState>,
    auth: Auth,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    redrive(&state, &auth, &name, Some(&id)).await
}

/// Queues every dead letter again, oldest first, as far as the queue has room.
#[utoipa::path(post, path = "/api/v1/functions/{name}/dead-letters/redrive", tag = "functions", security(("token" = ["scoped:invoke"])),
    params(("name" = String, Path)), responses((status = 202, body = RedriveView)))]
pub async fn redrive_all(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    redrive(&state, &auth, &name, None).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RecentQuery {
    /// At most this many (1-500, default 50).
    pub limit: Option<usize>,
}

/// The function's invocations still kept in memory on this server, newest first (records
/// live `DRAVEN_INVOCATION_TTL` after they finish).
#[utoipa::path(get, path = "/api/v1/functions/{name}/invocations", tag = "functions", security(("token" = ["tenant:read"])),
    params(("name" = String, Path), RecentQuery), responses((status = 200, body = Vec<InvocationView>)))]
pub async fn list_invocations(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
    Query(q): Query<RecentQuery>,
) -> ApiResult<axum::Json<Vec<InvocationView>>> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(Error::invalid("limit", "limit must be 1-500").into());
    }
    state.db.get_function(auth.tenant_id(), &name).await?;
    let items = engine(&state)?.recent_invocations(auth.tenant_id(), &name, limit);
    Ok(axum::Json(
        items.into_iter().map(InvocationView::from).collect(),
    ))
}
