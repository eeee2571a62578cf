//! The web UI (SPEC K12): server-rendered pages under `/ui/` for deploys, the registry,
//! functions, audit and administration, with maud templates compiled into the binary, one CSS
//! file and a little progressive-enhancement JavaScript (live log, live function counts).
//!
//! The UI is another edge beside the JSON API, and it holds no business rules: every read and
//! every change is a request to the API router itself, made in-process with the session's
//! principal attached ([`crate::authz::SessionPrincipal`]). So the route's declared rule, the
//! handler's own checks, validation, audit records (refusals included) and cache invalidation
//! are exactly the API's. What the UI adds is sessions, CSRF protection, HTML, and hiding the
//! buttons the principal may not use (decided by the same `Principal::decide`).

mod admin;
mod deploys;
pub mod diff;
mod functions;
mod registry;
mod session;

use crate::AppState;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use draven_core::{Action, Decision, Principal, Target};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use tower::ServiceExt;

pub use session::{LOGIN_CSRF_COOKIE, SESSION_COOKIE};

const CSS: &str = include_str!("assets/ui.css");
const JS: &str = include_str!("assets/ui.js");

/// What UI handlers reach: the application state and the API router to call in-process.
#[derive(Clone)]
pub struct UiState {
    pub app: AppState,
    api: Router,
}

/// The UI's routes; `api` is the API router (with its middleware) the pages call.
pub fn router(app: AppState, api: Router) -> Router<AppState> {
    let ui = UiState { app, api };
    let signed_in = Router::new()
        .route("/ui/", get(deploys::overview))
        .route("/ui/deploys", get(deploys::overview))
        .route(
            "/ui/deploys/new",
            get(deploys::new_form).post(deploys::request),
        )
        .route("/ui/deploys/history", get(deploys::history))
        .route("/ui/deploys/rollback", post(deploys::rollback))
        .route("/ui/deploys/{id}", get(deploys::job))
        .route("/ui/deploys/{id}/log", get(deploys::log_stream))
        .route("/ui/deploys/{id}/cancel", post(deploys::cancel))
        .route("/ui/approvals/{id}/vote", post(deploys::vote))
        .route("/ui/registry", get(registry::list))
        .route("/ui/registry/publications", get(registry::publications))
        .route("/ui/registry/publish", post(registry::publish))
        .route("/ui/registry/{key}", get(registry::artifact))
        .route("/ui/registry/{key}/diff", get(registry::diff))
        .route("/ui/functions", get(functions::list))
        .route("/ui/functions/{name}", get(functions::function))
        .route("/ui/functions/{name}/invoke", post(functions::invoke))
        .route("/ui/functions/{name}/redrive", post(functions::redrive))
        .route("/ui/functions/{name}/purge", post(functions::purge))
        .route("/ui/invocations/{id}", get(functions::invocation))
        .route("/ui/audit", get(admin::audit))
        .route(
            "/ui/admin/users",
            get(admin::users).post(admin::create_user),
        )
        .route("/ui/admin/users/{user}", post(admin::update_user))
        .route(
            "/ui/admin/tokens",
            get(admin::tokens).post(admin::create_token),
        )
        .route("/ui/admin/tokens/{id}/revoke", post(admin::revoke_token))
        .route(
            "/ui/admin/grants",
            get(admin::grants).post(admin::create_grant),
        )
        .route("/ui/admin/grants/{id}/delete", post(admin::delete_grant))
        .route(
            "/ui/admin/environments",
            get(admin::environments).post(admin::create_environment),
        )
        .route(
            "/ui/admin/environments/{name}",
            post(admin::update_environment),
        )
        .route("/ui/logout", post(session::logout))
        .route_layer(from_fn_with_state(ui.clone(), session::gate));
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/login", get(session::login_form).post(session::login))
        .route(
            "/ui/assets/ui.css",
            get(|| async { asset(CSS, "text/css") }),
        )
        .route(
            "/ui/assets/ui.js",
            get(|| async { asset(JS, "text/javascript") }),
        )
        .merge(signed_in)
        .route_layer(from_fn(crate::telemetry::tag_route))
        .layer(from_fn(security_headers))
        .with_state(ui)
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Pages are not framed, sniffed or given scripts from elsewhere.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (k, v) in [
        (
            "content-security-policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    resp
}

/// A submitted form (`application/x-www-form-urlencoded`), read by the session gate.
#[derive(Clone, Debug, Default)]
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(bytes: &[u8]) -> Form {
        Form(serde_urlencoded::from_bytes(bytes).unwrap_or_default())
    }

    /// The field's first value, trimmed; `""` when absent.
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .unwrap_or("")
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn checked(&self, name: &str) -> bool {
        !self.get(name).is_empty()
    }
}

/// The signed-in caller of a UI request (set by the session gate).
#[derive(Clone)]
pub struct Ctx {
    pub principal: Arc<Principal>,
    pub csrf: String,
    pub client: Option<ConnectInfo<SocketAddr>>,
    pub form: Arc<Form>,
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Ctx, Response> {
        parts
            .extensions
            .get::<Ctx>()
            .cloned()
            .ok_or_else(|| Redirect::to("/ui/login").into_response())
    }
}

/// What the API answered when it refused: the problem's code, message and field.
#[derive(Clone, Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// The offending form field (the first segment of the problem's `field`).
    pub field: Option<String>,
}

impl Problem {
    fn from_response(status: StatusCode, body: &Value) -> Problem {
        let mut message = body["detail"].as_str().unwrap_or("").to_owned();
        if let Some(errors) = body["errors"].as_array() {
            for e in errors {
                message.push_str(&format!(
                    "; {}: {}",
                    e["field"].as_str().unwrap_or(""),
                    e["message"].as_str().unwrap_or("")
                ));
            }
        }
        if message.is_empty() {
            message = status
                .canonical_reason()
                .unwrap_or("the request failed")
                .to_owned();
        }
        Problem {
            status,
            code: body["code"].as_str().unwrap_or("error").to_owned(),
            message,
            field: body["field"].as_str().map(|f| {
                f.trim_start_matches('/')
                    .split('/')
                    .next()
                    .unwrap_or("")
                    .to_owned()
            }),
        }
    }

    pub fn new(status: StatusCode, field: Option<&str>, message: impl Into<String>) -> Problem {
        Problem {
            status,
            code: "validation-failed".into(),
            message: message.into(),
            field: field.map(str::to_owned),
        }
    }

    /// The message when `name` is the field to blame.
    pub fn on(&self, name: &str) -> Option<&str> {
        (self.field.as_deref() == Some(name)).then_some(self.message.as_str())
    }
}

/// A page that could not be shown: rendered as a readable error page.
pub struct UiError(pub Problem);

impl From<Problem> for UiError {
    fn from(p: Problem) -> UiError {
        UiError(p)
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let p = self.0;
        let body = html! {
            (DOCTYPE)
            html lang="en" {
                head { (head_tags("Error")) }
                body {
                    main #main .narrow {
                        h1 { "Something went wrong" }
                        div.alert.error role="alert" {
                            p { strong { (p.status.as_u16()) " " (p.code) } ": " (p.message) }
                        }
                        p { a href="/ui/" { "Back to Draven" } }
                    }
                }
            }
        };
        (p.status, Html(body.into_string())).into_response()
    }
}

pub type UiResult = Result<Response, UiError>;

impl UiState {
    /// Sends a request to the API in-process as the signed-in principal; the raw response.
    pub async fn raw(
        &self,
        ctx: &Ctx,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(&str, String)],
    ) -> Response {
        let mut builder = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            builder = builder.header(*k, v);
        }
        let body = match body {
            Some((content_type, bytes)) => {
                builder = builder.header(header::CONTENT_TYPE, content_type);
                Body::from(bytes)
            }
            None => Body::empty(),
        };
        let Ok(mut req) = builder.body(body) else {
            return StatusCode::BAD_REQUEST.into_response();
        };
        req.extensions_mut()
            .insert(crate::authz::SessionPrincipal(ctx.principal.clone()));
        if let Some(c) = &ctx.client {
            req.extensions_mut().insert(*c);
        }
        match self.api.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }

    /// Sends a request to the API and reads its JSON answer; a refusal becomes a [`Problem`].
    pub async fn call(
        &self,
        ctx: &Ctx,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Problem> {
        let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
        let resp = self.raw(ctx, method, path, body, &[]).await;
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 * 1024 * 1024)
            .await
            .unwrap_or_default();
        let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            Ok(json)
        } else {
            Err(Problem::from_response(status, &json))
        }
    }

    pub async fn get(&self, ctx: &Ctx, path: &str) -> Result<Value, Problem> {
        self.call(ctx, Method::GET, path, None).await
    }

    pub async fn post(&self, ctx: &Ctx, path: &str, body: Value) -> Result<Value, Problem> {
        self.call(ctx, Method::POST, path, Some(body)).await
    }

    /// The API's text answer (payloads), or its refusal.
    pub async fn text(&self, ctx: &Ctx, path: &str) -> Result<String, Problem> {
        let resp = self.raw(ctx, Method::GET, path, None, &[]).await;
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 * 1024 * 1024)
            .await
            .unwrap_or_default();
        if status.is_success() {
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        } else {
            let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            Err(Problem::from_response(status, &json))
        }
    }
}

impl Ctx {
    /// Whether the principal may do `action` on `target`: what decides which buttons show.
    /// The API decides again when the button is used.
    pub fn may(&self, action: Action, target: &Target) -> bool {
        matches!(self.principal.decide(action, target), Decision::Allow)
    }

    pub fn is_admin(&self) -> bool {
        self.may(Action::Administer, &Target::tenant())
    }

    pub fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name="_csrf" value=(self.csrf); }
    }
}

/// Percent-encodes a path segment or query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `?a=1&b=2` from the non-empty pairs (`""` when none).
pub fn query(pairs: &[(&str, &str)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// A JSON field as text (`""` when absent; numbers and booleans rendered).
pub fn s(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(t) => t.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub fn items(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        _ => v["items"].as_array().cloned().unwrap_or_default(),
    }
}

/// `2025-01-02T03:04:05.678Z` → `2025-01-02 03:04:05` (UTC), for tables.
pub fn when(t: &str) -> String {
    if t.len() >= 19 {
        format!("{} {}", &t[..10], &t[11..19])
    } else {
        t.to_owned()
    }
}

/// Which section of the navigation a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Deploys,
    Registry,
    Functions,
    Audit,
    Admin,
}

fn head_tags(title: &str) -> Markup {
    html! {
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        title { (title) " · Draven" }
        link rel="stylesheet" href="/ui/assets/ui.css";
        script src="/ui/assets/ui.js" defer {}
    }
}

/// The page frame: skip link, navigation, who is signed in, sign-out, the content.
pub fn page(ctx: &Ctx, title: &str, nav: Nav, content: Markup) -> Response {
    let link = |n: Nav, href: &str, label: &str| {
        html! {
            li { a href=(href) aria-current=[(n == nav).then_some("page")] { (label) } }
        }
    };
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            head { (head_tags(title)) }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/ui/" { "Draven" }
                    nav aria-label="Main" {
                        ul {
                            (link(Nav::Deploys, "/ui/deploys", "Deploys"))
                            (link(Nav::Registry, "/ui/registry", "Registry"))
                            (link(Nav::Functions, "/ui/functions", "Functions"))
                            @if ctx.is_admin() {
                                (link(Nav::Audit, "/ui/audit", "Audit"))
                                (link(Nav::Admin, "/ui/admin/users", "Admin"))
                            }
                        }
                    }
                    div.who {
                        span #whoami { (ctx.principal.username) " @ " (ctx.principal.tenant) }
                        form method="post" action="/ui/logout" {
                            (ctx.csrf_field())
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (content)
                }
            }
        }
    };
    Html(body.into_string()).into_response()
}

/// A labelled text input that shows the problem when it names this field.
pub fn input(label: &str, name: &str, value: &str, err: Option<&Problem>, attrs: &str) -> Markup {
    let id = format!("f-{name}");
    let bad = err.and_then(|e| e.on(name));
    let err_id = format!("{id}-error");
    let kind = if attrs.contains("password") {
        "password"
    } else {
        "text"
    };
    html! {
        div.field.invalid[bad.is_some()] {
            label for=(id) { (label) }
            input id=(id) type=(kind) name=(name) value=(value)
                required[attrs.contains("required")]
                autocomplete=[attrs.contains("password").then_some("current-password")]
                aria-invalid=[bad.map(|_| "true")]
                aria-describedby=[bad.map(|_| err_id.as_str())];
            @if let Some(m) = bad { p.field-error id=(err_id) { (m) } }
        }
    }
}

/// A labelled select; `options` are (value, label).
pub fn select(
    label: &str,
    name: &str,
    options: &[(String, String)],
    chosen: &str,
    err: Option<&Problem>,
) -> Markup {
    let id = format!("f-{name}");
    let bad = err.and_then(|e| e.on(name));
    let err_id = format!("{id}-error");
    html! {
        div.field.invalid[bad.is_some()] {
            label for=(id) { (label) }
            select id=(id) name=(name) aria-invalid=[bad.map(|_| "true")]
                aria-describedby=[bad.map(|_| err_id.as_str())] {
                @for (v, l) in options {
                    option value=(v) selected[v == chosen] { (l) }
                }
            }
            @if let Some(m) = bad { p.field-error id=(err_id) { (m) } }
        }
    }
}

/// The problem of a refused form, above it (the field itself is marked too).
pub fn form_alert(err: Option<&Problem>) -> Markup {
    html! {
        @if let Some(e) = err {
            div.alert.error role="alert" #form-error {
                p { strong { "Not done: " } (e.message) }
            }
        }
    }
}

/// A notice carried in the query string after a redirect (`?notice=…`).
pub fn notice(text: &str) -> Markup {
    html! {
        @if !text.is_empty() {
            div.alert.ok role="status" { p { (text) } }
        }
    }
}

/// A state as a coloured badge (colour plus text, never colour alone).
pub fn badge(state: &str) -> Markup {
    let class = match state {
        "SUCCEEDED" | "succeeded" | "approved" | "live" | "published" => "ok",
        "FAILED" | "failed" | "TIMED_OUT" | "timed_out" | "REJECTED" | "rejected" => "bad",
        "AWAITING_APPROVAL" | "pending" | "QUEUED" | "queued" | "draft" | "retrying" => "wait",
        "RUNNING" | "running" => "run",
        _ => "plain",
    };
    html! { span class={"badge " (class)} { (state) } }
}

/// A 303 to `to` (after a POST).
pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

pub fn raw_html(s: &str) -> PreEscaped<String> {
    PreEscaped(s.to_owned())
}
