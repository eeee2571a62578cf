//! Sign-in, sign-out and the session gate in front of every other UI page.
//!
//! A session is a random id in an `HttpOnly`, `SameSite=Lax` cookie scoped to `/ui` (`Secure`
//! over HTTPS or when configured); the store keeps only its hash, with an absolute expiry and
//! the session's CSRF token. Every POST behind the gate must carry that token in `_csrf`
//! (compared in constant time) or it is refused and audited; the sign-in form, which has no
//! session yet, uses a double-submit cookie instead. Wrong passwords are audited like a bad
//! API token, without saying which part was wrong.

use super::{form_alert, input, Ctx, Form, Problem, UiError, UiState};
use crate::problem::current_request_id;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use draven_store::audit::Actor;
use maud::{html, DOCTYPE};
use rand::Rng;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq;

pub const SESSION_COOKIE: &str = "draven_session";
pub const LOGIN_CSRF_COOKIE: &str = "draven_login_csrf";
const MAX_FORM_BYTES: usize = 2 * 1024 * 1024;

pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

fn secure(ui: &UiState, headers: &HeaderMap) -> bool {
    ui.app.config.secure_cookies.unwrap_or_else(|| {
        headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"))
    })
}

fn set_cookie(name: &str, value: &str, path: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let same_site = if name == LOGIN_CSRF_COOKIE {
        "Strict"
    } else {
        "Lax"
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite={same_site}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

fn ct_eq(a: &str, b: &str) -> bool {
    !a.is_empty() && a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn client(req: &Request) -> Option<ConnectInfo<SocketAddr>> {
    req.extensions().get::<ConnectInfo<SocketAddr>>().cloned()
}

fn anonymous(client: &Option<ConnectInfo<SocketAddr>>) -> Actor {
    Actor {
        tenant_id: None,
        name: "anonymous".into(),
        request_id: current_request_id(),
        client_addr: client.as_ref().map(|c| c.0.ip().to_string()),
    }
}

fn user_actor(ctx: &Ctx) -> Actor {
    Actor {
        tenant_id: Some(ctx.principal.tenant_id.clone()),
        name: format!("user:{}", ctx.principal.username),
        request_id: current_request_id(),
        client_addr: ctx.client.as_ref().map(|c| c.0.ip().to_string()),
    }
}

fn safe_next(next: &str) -> &str {
    if next.starts_with("/ui/") && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/ui/"
    }
}

/// Resolves the session cookie; refuses POSTs without the session's CSRF token.
pub async fn gate(State(ui): State<UiState>, req: Request, next: Next) -> Response {
    let session = match cookie(req.headers(), SESSION_COOKIE) {
        Some(id) => match ui.app.db.session(id).await {
            Ok(s) => s,
            Err(e) => return UiError(internal(e)).into_response(),
        },
        None => None,
    };
    let Some(session) = session else {
        if req.method() == Method::GET {
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/ui/");
            let expired = cookie(req.headers(), SESSION_COOKIE).is_some();
            let to = format!(
                "/ui/login{}",
                super::query(&[("next", path), ("expired", if expired { "1" } else { "" })])
            );
            return Redirect::to(&to).into_response();
        }
        return Redirect::to("/ui/login?expired=1").into_response();
    };
    let client = client(&req);
    let (mut parts, body) = req.into_parts();
    let mut form = Form::default();
    let mut body = body;
    if parts.method == Method::POST {
        let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
            return UiError(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                None,
                "the form is too large",
            ))
            .into_response();
        };
        form = Form::parse(&bytes);
        if !ct_eq(form.get("_csrf"), &session.csrf_token) {
            let ctx = Ctx {
                principal: Arc::new(session.principal.clone()),
                csrf: String::new(),
                client,
                form: Arc::new(Form::default()),
            };
            let target = format!("ui:POST {}", parts.uri.path());
            let audit = user_actor(&ctx).denied("ui.csrf", &target, "missing or wrong CSRF token");
            if let Err(e) = ui.app.db.audit(audit).await {
                return UiError(internal(e)).into_response();
            }
            metrics::counter!("draven_auth_denials_total", "reason" => "csrf").increment(1);
            return UiError(Problem {
                status: StatusCode::FORBIDDEN,
                code: "csrf".into(),
                message: "This form could not be accepted: it did not carry this session's \
                          security token. Reload the page and submit it again."
                    .into(),
                field: None,
            })
            .into_response();
        }
        body = axum::body::Body::from(bytes);
    }
    parts.extensions.insert(Ctx {
        principal: Arc::new(session.principal),
        csrf: session.csrf_token,
        client,
        form: Arc::new(form),
    });
    next.run(Request::from_parts(parts, body)).await
}

fn internal(e: draven_store::StoreError) -> Problem {
    let e = draven_core::Error::from(e);
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, None, e.message)
}

struct LoginPage<'a> {
    csrf: &'a str,
    tenant: &'a str,
    username: &'a str,
    next: &'a str,
    note: &'a str,
    error: Option<&'a Problem>,
}

fn login_page(p: LoginPage<'_>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Sign in · Draven" }
                link rel="stylesheet" href="/ui/assets/ui.css";
            }
            body {
                main #main .narrow {
                    h1 { "Sign in to Draven" }
                    @if !p.note.is_empty() { div.alert.ok role="status" { p { (p.note) } } }
                    (form_alert(p.error))
                    form.card method="post" action="/ui/login" {
                        input type="hidden" name="_csrf" value=(p.csrf);
                        input type="hidden" name="next" value=(p.next);
                        (input("Tenant", "tenant", p.tenant, p.error, "required"))
                        (input("Username", "username", p.username, p.error, "required"))
                        (input("Password", "password", "", p.error, "required password"))
                        button.primary type="submit" { "Sign in" }
                    }
                }
            }
        }
    }
}

use maud::Markup;

fn with_login_cookie(
    ui: &UiState,
    headers: &HeaderMap,
    status: StatusCode,
    m: Markup,
    csrf: &str,
) -> Response {
    let mut resp = (status, Html(m.into_string())).into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            LOGIN_CSRF_COOKIE,
            csrf,
            "/ui/login",
            3600,
            secure(ui, headers),
        ),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn fresh_secret() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..32)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The sign-in form.
pub async fn login_form(
    State(ui): State<UiState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let csrf = fresh_secret();
    let note = if q.contains_key("expired") {
        "Your session has ended. Sign in again."
    } else if q.contains_key("signed_out") {
        "You are signed out."
    } else {
        ""
    };
    let next = q.get("next").map(String::as_str).unwrap_or("/ui/");
    let page = login_page(LoginPage {
        csrf: &csrf,
        tenant: "default",
        username: "",
        next: safe_next(next),
        note,
        error: None,
    });
    with_login_cookie(&ui, &headers, StatusCode::OK, page, &csrf)
}

/// Checks the password and opens a session.
pub async fn login(State(ui): State<UiState>, req: Request) -> Response {
    let client = client(&req);
    let headers = req.headers().clone();
    let cookie_csrf = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or("").to_owned();
    let Ok(bytes) = axum::body::to_bytes(req.into_body(), 64 * 1024).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let form = Form::parse(&bytes);
    let (tenant, username, password) = (
        form.get("tenant"),
        form.get("username"),
        form.get("password"),
    );
    let next = safe_next(form.get("next")).to_owned();
    let again = |status: StatusCode, err: Problem| {
        let csrf = fresh_secret();
        let page = login_page(LoginPage {
            csrf: &csrf,
            tenant,
            username,
            next: &next,
            note: "",
            error: Some(&err),
        });
        with_login_cookie(&ui, &headers, status, page, &csrf)
    };
    if !ct_eq(form.get("_csrf"), &cookie_csrf) {
        return again(
            StatusCode::FORBIDDEN,
            Problem::new(
                StatusCode::FORBIDDEN,
                None,
                "The sign-in form expired or did not come from this site; try again.",
            ),
        );
    }
    for (name, v) in [
        ("tenant", tenant),
        ("username", username),
        ("password", password),
    ] {
        if v.is_empty() {
            return again(
                StatusCode::UNPROCESSABLE_ENTITY,
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Some(name),
                    format!("Enter your {name}."),
                ),
            );
        }
    }
    let user = match ui.app.db.check_password(tenant, username, password).await {
        Ok(u) => u,
        Err(e) => return UiError(internal(e)).into_response(),
    };
    let Some(user) = user else {
        // Recorded in the named tenant's trail when it exists, so its admins see it.
        let tenant_id = ui.app.db.tenant_by_name(tenant).await.ok().map(|t| t.id);
        let audit = Actor {
            tenant_id,
            ..anonymous(&client)
        }
        .denied(
            "auth.authenticate",
            &format!("ui:login {tenant}/{username}"),
            "wrong tenant, username or password",
        );
        if let Err(e) = ui.app.db.audit(audit).await {
            return UiError(internal(e)).into_response();
        }
        metrics::counter!("draven_auth_denials_total", "reason" => "unauthenticated").increment(1);
        return again(
            StatusCode::UNAUTHORIZED,
            Problem::new(
                StatusCode::UNAUTHORIZED,
                Some("password"),
                "Wrong tenant, username or password.",
            ),
        );
    };
    let tenant_id = match ui.app.db.get_user_tenant(&user.id).await {
        Ok(t) => t,
        Err(e) => return UiError(internal(e)).into_response(),
    };
    let actor = Actor {
        tenant_id: Some(tenant_id.clone()),
        name: format!("user:{}", user.username),
        ..anonymous(&client)
    };
    let ttl = ui.app.config.session_ttl;
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
    let session = match ui
        .app
        .db
        .create_session(&actor, &tenant_id, &user.id, ttl_ms)
        .await
    {
        Ok(s) => s,
        Err(e) => return UiError(internal(e)).into_response(),
    };
    let secure = secure(&ui, &headers);
    let mut resp = Redirect::to(&next).into_response();
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(
            SESSION_COOKIE,
            &session.id,
            "/ui",
            (ttl_ms / 1000).max(1),
            secure,
        ),
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(LOGIN_CSRF_COOKIE, "", "/ui/login", 0, secure),
    );
    resp
}

/// Ends the session.
pub async fn logout(State(ui): State<UiState>, ctx: Ctx, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        if let Err(e) = ui.app.db.delete_session(&user_actor(&ctx), id).await {
            return UiError(internal(e)).into_response();
        }
    }
    let mut resp = Redirect::to("/ui/login?signed_out=1").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", "/ui", 0, secure(&ui, &headers)),
    );
    resp
}
