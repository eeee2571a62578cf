//! Audit and administration pages: the searchable audit trail, users (create, disable, set a
//! password), tokens (a new one is shown once), grants and environments. The API decides who
//! may (tenant administrators); these pages only show its answers.

use super::{
    badge, enc, form_alert, input, items, notice, page, query, s, see_other, select, when, Ctx,
    Nav, Problem, UiResult, UiState,
};
use axum::extract::{Path, Query, State};
use axum::http::Method;
use maud::{html, Markup};
use serde_json::{json, Value};
use std::collections::HashMap;

type Params = Query<HashMap<String, String>>;

fn param<'a>(q: &'a HashMap<String, String>, k: &str) -> &'a str {
    q.get(k).map(|v| v.trim()).unwrap_or("")
}

fn tabs(current: &str) -> Markup {
    let tab = |href: &str, label: &str| {
        html! { li { a href=(href) aria-current=[(label == current).then_some("page")] { (label) } } }
    };
    html! {
        nav.tabs aria-label="Administration" {
            ul {
                (tab("/ui/admin/users", "Users"))
                (tab("/ui/admin/tokens", "Tokens"))
                (tab("/ui/admin/grants", "Grants"))
                (tab("/ui/admin/environments", "Environments"))
            }
        }
    }
}

/// The audit trail with filters (actor, action, target, outcome, time range).
pub async fn audit(State(ui): State<UiState>, ctx: Ctx, Query(q): Params) -> UiResult {
    let keys = [
        "actor", "action", "target", "outcome", "since", "until", "cursor",
    ];
    let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (*k, param(&q, k))).collect();
    let (found, err) = match ui
        .get(&ctx, &format!("/api/v1/audit{}", query(&pairs)))
        .await
    {
        Ok(v) => (v, None),
        Err(e) if e.field.is_some() => (Value::Null, Some(e)),
        Err(e) => return Err(e.into()),
    };
    let next = found["next_cursor"].as_str().map(|c| {
        let mut p = pairs.clone();
        p.retain(|(k, _)| *k != "cursor");
        p.push(("cursor", c));
        format!("/ui/audit{}", query(&p))
    });
    let outcomes = vec![
        (String::new(), "any".to_owned()),
        ("success".to_owned(), "success".to_owned()),
        ("denied".to_owned(), "denied".to_owned()),
    ];
    let body = html! {
        form.filters method="get" action="/ui/audit" role="search" {
            (input("Actor", "actor", param(&q, "actor"), err.as_ref(), ""))
            (input("Action", "action", param(&q, "action"), err.as_ref(), ""))
            (input("Target", "target", param(&q, "target"), err.as_ref(), ""))
            (select("Outcome", "outcome", &outcomes, param(&q, "outcome"), err.as_ref()))
            (input("Since (RFC 3339)", "since", param(&q, "since"), err.as_ref(), ""))
            (input("Until (RFC 3339)", "until", param(&q, "until"), err.as_ref(), ""))
            button type="submit" { "Search" }
        }
        (form_alert(err.as_ref()))
        div.table-wrap {
            table #audit {
                thead { tr { th scope="col" { "#" } th scope="col" { "When" } th scope="col" { "Actor" } th scope="col" { "Action" } th scope="col" { "Target" } th scope="col" { "Outcome" } th scope="col" { "Reason" } th scope="col" { "Client" } } }
                tbody {
                    @for e in items(&found) {
                        tr {
                            td.num { (s(&e, "seq")) } td { (when(&s(&e, "at"))) } td { (s(&e, "actor")) }
                            td { code { (s(&e, "action")) } } td { (s(&e, "target")) }
                            td { (badge(&s(&e, "outcome"))) } td { (s(&e, "reason")) } td { (s(&e, "client_addr")) }
                        }
                    }
                }
            }
        }
        @if let Some(n) = next { p { a href=(n) rel="next" { "Older records →" } } }
    };
    Ok(page(&ctx, "Audit trail", Nav::Audit, body))
}

async fn users_page(
    ui: &UiState,
    ctx: &Ctx,
    q: &HashMap<String, String>,
    err: Option<&Problem>,
) -> UiResult {
    let users = items(&ui.get(ctx, "/api/v1/users?limit=500").await?);
    let f = &ctx.form;
    let body = html! {
        (tabs("Users"))
        (notice(param(q, "notice")))
        div.table-wrap {
            table #users {
                thead { tr { th scope="col" { "User" } th scope="col" { "Name" } th scope="col" { "Status" } th scope="col" { span.sr-only { "Actions" } } } }
                tbody {
                    @for u in &users {
                        @let name = s(u, "username");
                        @let disabled = u["disabled"].as_bool() == Some(true);
                        tr {
                            th scope="row" { (name) }
                            td { (s(u, "display_name")) } td { @if disabled { span.badge.bad { "disabled" } } @else { span.badge.ok { "active" } } }
                            td.actions {
                                form.inline method="post" action={"/ui/admin/users/" (enc(&name))} {
                                    (ctx.csrf_field())
                                    input type="hidden" name="disabled" value=(if disabled { "false" } else { "true" });
                                    button type="submit" { @if disabled { "Enable" } @else { "Disable" } }
                                }
                                form.inline method="post" action={"/ui/admin/users/" (enc(&name))} {
                                    (ctx.csrf_field())
                                    label.sr-only for={"pw-" (name)} { "New password for " (name) }
                                    input id={"pw-" (name)} type="password" name="password" placeholder="new password" autocomplete="new-password" minlength="8";
                                    button type="submit" { "Set password" }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.card aria-labelledby="new-user-h" {
            h2 #new-user-h { "New user" }
            (form_alert(err))
            form method="post" action="/ui/admin/users" #new-user {
                (ctx.csrf_field())
                (input("Username", "username", f.get("username"), err, "required"))
                (input("Display name", "display_name", f.get("display_name"), err, ""))
                (input("Email", "email", f.get("email"), err, ""))
                (input("Password (at least 8 characters)", "password", "", err, "password"))
                button.primary type="submit" { "Create user" }
            }
        }
    };
    let mut resp = page(ctx, "Users", Nav::Admin, body);
    if let Some(e) = err {
        *resp.status_mut() = e.status;
    }
    Ok(resp)
}

pub async fn users(State(ui): State<UiState>, ctx: Ctx, Query(q): Params) -> UiResult {
    users_page(&ui, &ctx, &q, None).await
}

pub async fn create_user(State(ui): State<UiState>, ctx: Ctx) -> UiResult {
    let f = ctx.form.clone();
    let mut body = json!({"username": f.get("username"), "display_name": f.get("display_name"), "email": f.get("email")});
    if !f.get("password").is_empty() {
        body["password"] = json!(f.get("password"));
    }
    match ui.post(&ctx, "/api/v1/users", body).await {
        Ok(u) => Ok(see_other(&format!(
            "/ui/admin/users?notice=Created+user+{}",
            enc(&s(&u, "username"))
        ))),
        Err(e) => users_page(&ui, &ctx, &HashMap::new(), Some(&e)).await,
    }
}

pub async fn update_user(
    State(ui): State<UiState>,
    ctx: Ctx,
    Path(user): Path<String>,
) -> UiResult {
    let f = ctx.form.clone();
    let body = if !f.get("password").is_empty() {
        json!({"password": f.get("password")})
    } else {
        json!({"disabled": f.get("disabled") == "true"})
    };
    match ui
        .call(
            &ctx,
            Method::PATCH,
            &format!("/api/v1/users/{}", enc(&user)),
            Some(body),
        )
        .await
    {
        Ok(_) => Ok(see_other("/ui/admin/users?notice=Saved")),
        Err(e) => users_page(&ui, &ctx, &HashMap::new(), Some(&e)).await,
    }
}

async fn tokens_page(
    ui: &UiState,
    ctx: &Ctx,
    shown: Option<&str>,
    err: Option<&Problem>,
) -> UiResult {
    let tokens = items(&ui.get(ctx, "/api/v1/tokens?limit=500").await?);
    let users = items(&ui.get(ctx, "/api/v1/users?limit=500").await?);
    let names: HashMap<String, String> = users
        .iter()
        .map(|u| (s(u, "id"), s(u, "username")))
        .collect();
    let user_opts: Vec<(String, String)> = users
        .iter()
        .map(|u| (s(u, "username"), s(u, "username")))
        .collect();
    let f = &ctx.form;
    let body = html! {
        (tabs("Tokens"))
        @if let Some(t) = shown {
            div.alert.ok role="status" #new-token {
                p { strong { "Copy this token now; it is shown only once:" } }
                p { code.secret { (t) } }
            }
        }
        div.table-wrap {
            table #tokens {
                thead { tr { th scope="col" { "Name" } th scope="col" { "User" } th scope="col" { "Prefix" } th scope="col" { "Scopes" } th scope="col" { "Last used" } th scope="col" { "Status" } th scope="col" { span.sr-only { "Actions" } } } }
                tbody {
                    @for t in &tokens {
                        tr {
                            td { (s(t, "name")) } td { (names.get(&s(t, "user_id")).cloned().unwrap_or_default()) }
                            td { code { (s(t, "prefix")) "…" } }
                            td { @if let Some(sc) = t["scopes"].as_array() { @for x in sc { (x.as_str().unwrap_or("")) " " } } }
                            td { (when(&s(t, "last_used_at"))) }
                            td { @if t["revoked_at"].is_null() { span.badge.ok { "active" } } @else { span.badge.bad { "revoked" } } }
                            td {
                                @if t["revoked_at"].is_null() {
                                    form.inline method="post" action={"/ui/admin/tokens/" (enc(&s(t, "id"))) "/revoke"} {
                                        (ctx.csrf_field())
                                        button.danger type="submit" { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.card aria-labelledby="new-token-h" {
            h2 #new-token-h { "New token" }
            (form_alert(err))
            form method="post" action="/ui/admin/tokens" {
                (ctx.csrf_field())
                (select("User", "user", &user_opts, f.get("user"), err))
                (input("Name", "name", f.get("name"), err, "required"))
                (input("Scopes (comma-separated: read, write, deploy, approve, invoke, admin, runner; empty for all)", "scopes", f.get("scopes"), err, ""))
                button.primary type="submit" { "Create token" }
            }
        }
    };
    let mut resp = page(ctx, "Tokens", Nav::Admin, body);
    if let Some(e) = err {
        *resp.status_mut() = e.status;
    }
    Ok(resp)
}

pub async fn tokens(State(ui): State<UiState>, ctx: Ctx) -> UiResult {
    tokens_page(&ui, &ctx, None, None).await
}

/// Creates a token and shows it once, in this response (never in a URL or a redirect).
pub async fn create_token(State(ui): State<UiState>, ctx: Ctx) -> UiResult {
    let f = ctx.form.clone();
    let scopes: Vec<&str> = f
        .get("scopes")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let mut body = json!({"name": f.get("name")});
    if !scopes.is_empty() {
        body["scopes"] = json!(scopes);
    }
    match ui
        .post(
            &ctx,
            &format!("/api/v1/users/{}/tokens", enc(f.get("user"))),
            body,
        )
        .await
    {
        Ok(t) => {
            let mut resp = tokens_page(&ui, &ctx, Some(&s(&t, "token")), None).await?;
            resp.headers_mut().insert(
                axum::http::header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static("no-store"),
            );
            Ok(resp)
        }
        Err(mut e) => {
            if e.field.as_deref() == Some("scopes") || e.field.is_none() && e.status.as_u16() == 404
            {
                e.field = Some(if e.status.as_u16() == 404 {
                    "user".into()
                } else {
                    "scopes".into()
                });
            }
            tokens_page(&ui, &ctx, None, Some(&e)).await
        }
    }
}

pub async fn revoke_token(State(ui): State<UiState>, ctx: Ctx, Path(id): Path<String>) -> UiResult {
    ui.call(
        &ctx,
        Method::DELETE,
        &format!("/api/v1/tokens/{}", enc(&id)),
        None,
    )
    .await?;
    Ok(see_other("/ui/admin/tokens"))
}

async fn grants_page(ui: &UiState, ctx: &Ctx, err: Option<&Problem>) -> UiResult {
    let grants = items(&ui.get(ctx, "/api/v1/grants").await?);
    let users = items(&ui.get(ctx, "/api/v1/users?limit=500").await?);
    let names: HashMap<String, String> = users
        .iter()
        .map(|u| (s(u, "id"), s(u, "username")))
        .collect();
    let user_opts: Vec<(String, String)> = users
        .iter()
        .map(|u| (s(u, "username"), s(u, "username")))
        .collect();
    let roles: Vec<(String, String)> = ["viewer", "editor", "deployer", "approver", "admin"]
        .iter()
        .map(|r| (r.to_string(), r.to_string()))
        .collect();
    let f = &ctx.form;
    let body = html! {
        (tabs("Grants"))
        div.table-wrap {
            table #grants {
                thead { tr { th scope="col" { "User" } th scope="col" { "Role" } th scope="col" { "Project" } th scope="col" { "Environment" } th scope="col" { span.sr-only { "Actions" } } } }
                tbody {
                    @for g in &grants {
                        tr {
                            td { (names.get(&s(g, "user_id")).cloned().unwrap_or_else(|| s(g, "user_id"))) }
                            td { (s(g, "role")) } td { (s(g, "project")) } td { (s(g, "environment")) }
                            td {
                                form.inline method="post" action={"/ui/admin/grants/" (enc(&s(g, "id"))) "/delete"} {
                                    (ctx.csrf_field())
                                    button.danger type="submit" { "Remove" }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.card aria-labelledby="new-grant-h" {
            h2 #new-grant-h { "New grant" }
            (form_alert(err))
            form method="post" action="/ui/admin/grants" {
                (ctx.csrf_field())
                (select("User", "user", &user_opts, f.get("user"), err))
                (select("Role", "role", &roles, f.get("role"), err))
                (input("Project (empty: every project)", "project", f.get("project"), err, ""))
                (input("Environment (empty: every environment)", "environment", f.get("environment"), err, ""))
                button.primary type="submit" { "Grant" }
            }
        }
    };
    let mut resp = page(ctx, "Grants", Nav::Admin, body);
    if let Some(e) = err {
        *resp.status_mut() = e.status;
    }
    Ok(resp)
}

pub async fn grants(State(ui): State<UiState>, ctx: Ctx) -> UiResult {
    grants_page(&ui, &ctx, None).await
}

pub async fn create_grant(State(ui): State<UiState>, ctx: Ctx) -> UiResult {
    let f = ctx.form.clone();
    let opt = |k: &str| (!f.get(k).is_empty()).then(|| f.get(k).to_owned());
    let body = json!({"user": f.get("user"), "role": f.get("role"), "project": opt("project"), "environment": opt("environment")});
    match ui.post(&ctx, "/api/v1/grants", body).await {
        Ok(_) => Ok(see_other("/ui/admin/grants")),
        Err(e) => grants_page(&ui, &ctx, Some(&e)).await,
    }
}

pub async fn delete_grant(State(ui): State<UiState>, ctx: Ctx, Path(id): Path<String>) -> UiResult {
    match ui
        .call(
            &ctx,
            Method::DELETE,
            &format!("/api/v1/grants/{}", enc(&id)),
            None,
        )
        .await
    {
        Ok(_) => Ok(see_other("/ui/admin/grants")),
        Err(e) => grants_page(&ui, &ctx, Some(&e)).await,
    }
}

async fn environments_page(ui: &UiState, ctx: &Ctx, err: Option<&Problem>) -> UiResult {
    let envs = items(&ui.get(ctx, "/api/v1/environments").await?);
    let f = &ctx.form;
    let body = html! {
        (tabs("Environments"))
        div.table-wrap {
            table #environments {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Description" } th scope="col" { "Protection" } th scope="col" { span.sr-only { "Actions" } } } }
                tbody {
                    @for e in &envs {
                        @let protected = e["protected"].as_bool() == Some(true);
                        tr {
                            th scope="row" { (s(e, "name")) } td { (s(e, "description")) }
                            td { @if protected { span.badge.wait { "protected" } } @else { "open" } }
                            td {
                                form.inline method="post" action={"/ui/admin/environments/" (enc(&s(e, "name")))} {
                                    (ctx.csrf_field())
                                    input type="hidden" name="protected" value=(if protected { "false" } else { "true" });
                                    button type="submit" { @if protected { "Unprotect" } @else { "Protect" } }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.card aria-labelledby="new-env-h" {
            h2 #new-env-h { "New environment" }
            (form_alert(err))
            form method="post" action="/ui/admin/environments" {
                (ctx.csrf_field())
                (input("Name", "name", f.get("name"), err, "required"))
                (input("Description", "description", f.get("description"), err, ""))
                div.field {
                    label { input type="checkbox" name="protected" value="true" checked[f.checked("protected")]; " Protected (deploys and approvals need a grant naming it)" }
                }
                button.primary type="submit" { "Create environment" }
            }
        }
    };
    let mut resp = page(ctx, "Environments", Nav::Admin, body);
    if let Some(e) = err {
        *resp.status_mut() = e.status;
    }
    Ok(resp)
}

pub async fn environments(State(ui): State<UiState>, ctx: Ctx) -> UiResult {
    environments_page(&ui, &ctx, None).await
}

pub async fn create_environment(State(ui): State<UiState>, ctx: Ctx) -> UiResult {
    let f = ctx.form.clone();
    let body = json!({"name": f.get("name"), "description": f.get("description"), "protected": f.get("protected") == "true"});
    match ui.post(&ctx, "/api/v1/environments", body).await {
        Ok(_) => Ok(see_other("/ui/admin/environments")),
        Err(e) => environments_page(&ui, &ctx, Some(&e)).await,
    }
}

pub async fn update_environment(
    State(ui): State<UiState>,
    ctx: Ctx,
    Path(name): Path<String>,
) -> UiResult {
    let body = json!({"protected": ctx.form.get("protected") == "true"});
    match ui
        .call(
            &ctx,
            Method::PATCH,
            &format!("/api/v1/environments/{}", enc(&name)),
            Some(body),
        )
        .await
    {
        Ok(_) => Ok(see_other("/ui/admin/environments")),
        Err(e) => environments_page(&ui, &ctx, Some(&e)).await,
    }
}
