//! Deploy pages: projects × environments at a glance, the deploy form with the policy shown
//! before submitting, a job's timeline with its live log (SSE), approve / reject, cancel,
//! rollback, and the history with filters. Every action is the API's (see `super`).

use super::{
    badge, enc, form_alert, input, items, notice, page, query, s, see_other, select, when, Ctx,
    Nav, Problem, UiResult, UiState,
};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use draven_core::{Action, Target};
use maud::{html, Markup};
use serde_json::{json, Value};
use std::collections::HashMap;

type Params = Query<HashMap<String, String>>;

fn param<'a>(q: &'a HashMap<String, String>, k: &str) -> &'a str {
    q.get(k).map(|v| v.trim()).unwrap_or("")
}

/// The tenant's environments by name → protected.
async fn protection(ui: &UiState, ctx: &Ctx) -> Result<HashMap<String, bool>, Problem> {
    let envs = ui.get(ctx, "/api/v1/environments").await?;
    Ok(items(&envs)
        .iter()
        .map(|e| (s(e, "name"), e["protected"].as_bool().unwrap_or(true)))
        .collect())
}

fn target<'a>(
    project: &'a str,
    environment: &'a str,
    protected: &HashMap<String, bool>,
) -> Target<'a> {
    Target {
        project: Some(project),
        environment: Some(environment),
        environment_protected: protected.get(environment).copied().unwrap_or(true),
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(10)]
}

/// Projects and their environments: what is deployed where, the latest job, the lock holder.
pub async fn overview(State(ui): State<UiState>, ctx: Ctx, Query(q): Params) -> UiResult {
    let protected = protection(&ui, &ctx).await?;
    let projects = items(&ui.get(&ctx, "/api/v1/projects?limit=500").await?);
    let pending = items(
        &ui.get(&ctx, "/api/v1/approvals?state=pending&limit=50")
            .await?,
    );
    let mut cards = Vec::new();
    for p in &projects {
        let key = s(p, "key");
        let envs = items(
            &ui.get(
                &ctx,
                &format!("/api/v1/projects/{}/environments", enc(&key)),
            )
            .await?,
        );
        let mut rows = Vec::new();
        for e in &envs {
            let env = s(e, "environment");
            let base = format!(
                "/api/v1/deploys?project={}&environment={}",
                enc(&key),
                enc(&env)
            );
            let latest = items(&ui.get(&ctx, &format!("{base}&limit=1")).await?)
                .into_iter()
                .next();
            let live = items(
                &ui.get(&ctx, &format!("{base}&state=SUCCEEDED&limit=1"))
                    .await?,
            )
            .into_iter()
            .next();
            let lock = ui
                .get(
                    &ctx,
                    &format!(
                        "/api/v1/projects/{}/environments/{}/lock",
                        enc(&key),
                        enc(&env)
                    ),
                )
                .await
                .ok();
            let may_deploy = ctx.may(Action::Deploy, &target(&key, &env, &protected));
            rows.push(html! {
                tr {
                    th scope="row" {
                        (env)
                        @if protected.get(&env).copied().unwrap_or(false) { " " span.badge.plain title="protected" { "protected" } }
                    }
                    td {
                        @if let Some(j) = &live {
                            a href={"/ui/deploys/" (s(j, "id"))} { code { (s(j, "ref")) } }
                            " @ " code { (short(&s(j, "commit_sha"))) }
                            br; small { (when(&s(j, "finished_at"))) " by " (s(j, "requested_by")) }
                        } @else { span.muted { "nothing yet" } }
                    }
                    td {
                        @if let Some(j) = &latest {
                            a href={"/ui/deploys/" (s(j, "id"))} { (badge(&s(j, "state"))) }
                            " " code { (s(j, "ref")) }
                        } @else { span.muted { "—" } }
                    }
                    td {
                        @if let Some(l) = &lock {
                            "held by " a href={"/ui/deploys/" (s(l, "holder_job"))} { "job" } " (" (s(l, "holder")) ")"
                        } @else { span.muted { "free" } }
                    }
                    td {
                        @if may_deploy {
                            a.button href={"/ui/deploys/new" (query(&[("project", &key), ("environment", &env)]))}
                                aria-label={"Deploy " (key) " to " (env)} { "Deploy" }
                        }
                    }
                }
            });
        }
        cards.push(html! {
            section.card aria-labelledby={"p-" (key)} {
                h2 id={"p-" (key)} { (s(p, "name")) " " small.muted { (key) " · " (s(p, "provider")) } }
                @if rows.is_empty() {
                    p.muted { "No environment is configured for this project yet." }
                } @else {
                    div.table-wrap {
                        table {
                            thead { tr { th scope="col" { "Environment" } th scope="col" { "Deployed" } th scope="col" { "Latest job" } th scope="col" { "Lock" } th scope="col" { span.sr-only { "Actions" } } } }
                            tbody { @for r in &rows { (r) } }
                        }
                    }
                }
            }
        });
    }
    let any_deploy = projects.iter().any(|p| {
        protected
            .keys()
            .any(|e| ctx.may(Action::Deploy, &target(&s(p, "key"), e, &protected)))
    });
    let body = html! {
        (notice(param(&q, "notice")))
        p.actions {
            @if any_deploy { a.button.primary #new-deploy href="/ui/deploys/new" { "New deploy" } }
            a.button href="/ui/deploys/history" { "History" }
        }
        @if !pending.is_empty() {
            section.card aria-labelledby="pending-h" {
                h2 #pending-h { "Awaiting approval" }
                ul {
                    @for a in &pending {
                        li {
                            @if s(a, "subject_kind") == "deploy" {
                                a href={"/ui/deploys/" (s(a, "subject_id"))} { (s(a, "project")) " → " (s(a, "environment")) }
                            } @else {
                                a href="/ui/registry/publications" { "publication to " (s(a, "environment")) }
                            }
                            " · " (a["votes"].as_array().map(Vec::len).unwrap_or(0)) " of " (s(a, "required")) " approvals"
                        }
                    }
                }
            }
        }
        @if cards.is_empty() { p.muted { "No projects yet. An administrator creates them through the API (POST /api/v1/projects)." } }
        @for c in &cards { (c) }
    };
    Ok(page(&ctx, "Deploys", Nav::Deploys, body))
}

struct DeployForm<'a> {
    project: &'a str,
    environment: &'a str,
    git_ref: &'a str,
    error: Option<&'a Problem>,
}

fn policy_text(p: &Value) -> Markup {
    let branches: Vec<String> = p["allowed_branches"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| b.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let windows = p["freeze_windows"].as_array().cloned().unwrap_or_default();
    html! {
        dl.policy {
            dt { "Refs" }
            dd {
                @if p["tags_only"].as_bool() == Some(true) { "tags only" } @else if branches.is_empty() { "any branch or tag" } @else { "branches " (branches.join(", ")) " and tags" }
                @if let Some(t) = p["tag_pattern"].as_str() { "; tags matching " code { (t) } }
                @if p["signed_tags_only"].as_bool() == Some(true) { "; signed tags only" }
            }
            dt { "Approvals" }
            dd { (p["required_approvals"].as_u64().unwrap_or(0)) " (the requester never counts)" }
            dt { "Freeze windows" }
            dd {
                @if windows.is_empty() { "none" }
                @for w in &windows { code { (s(w, "cron")) } " for " (s(w, "duration_minutes")) " min " (s(w, "reason")) "; " }
            }
            dt { "Timeout" }
            dd { @match p["timeout_secs"].as_u64().unwrap_or(0) { 0 => "30 minutes", n => (format!("{n} s")) } }
        }
    }
}

async fn deploy_form(ui: &UiState, ctx: &Ctx, f: DeployForm<'_>) -> UiResult {
    let protected = protection(ui, ctx).await?;
    let projects = items(&ui.get(ctx, "/api/v1/projects?limit=500").await?);
    let mut policies = Vec::new();
    let mut envs: Vec<String> = Vec::new();
    for p in &projects {
        let key = s(p, "key");
        for e in items(
            &ui.get(ctx, &format!("/api/v1/projects/{}/environments", enc(&key)))
                .await?,
        ) {
            let env = s(&e, "environment");
            if !envs.contains(&env) {
                envs.push(env.clone());
            }
            policies.push((key.clone(), env, e["policy"].clone()));
        }
    }
    let project_opts: Vec<(String, String)> = projects
        .iter()
        .map(|p| (s(p, "key"), format!("{} ({})", s(p, "name"), s(p, "key"))))
        .collect();
    let env_opts: Vec<(String, String)> = envs
        .iter()
        .map(|e| {
            let label = if protected.get(e).copied().unwrap_or(false) {
                format!("{e} (protected)")
            } else {
                e.clone()
            };
            (e.clone(), label)
        })
        .collect();
    let chosen_project = if f.project.is_empty() {
        project_opts.first().map(|p| p.0.as_str()).unwrap_or("")
    } else {
        f.project
    };
    let body = html! {
        (form_alert(f.error))
        form.card #deploy-form method="post" action="/ui/deploys/new" {
            (ctx.csrf_field())
            (select("Project", "project", &project_opts, chosen_project, f.error))
            (select("Environment", "environment", &env_opts, f.environment, f.error))
            (input("Ref (branch or tag)", "ref", f.git_ref, f.error, "required"))
            section aria-labelledby="policy-h" {
                h2 #policy-h { "Policy" }
                p.muted { "What the environment's policy requires before this deploy runs:" }
                @for (p, e, pol) in &policies {
                    div.policy-for data-for={(p) "/" (e)} hidden[(p != chosen_project || e != f.environment) && !f.environment.is_empty()] {
                        h3 { (p) " → " (e) }
                        (policy_text(pol))
                    }
                }
            }
            button.primary type="submit" #request-deploy { "Request deploy" }
        }
    };
    let mut resp = page(ctx, "New deploy", Nav::Deploys, body);
    if let Some(e) = f.error {
        *resp.status_mut() = e.status;
    }
    Ok(resp)
}

pub async fn new_form(State(ui): State<UiState>, ctx: Ctx, Query(q): Params) -> UiResult {
    deploy_form(
        &ui,
        &ctx,
        DeployForm {
            project: param(&q, "project"),
            environment: param(&q, "environment"),
            git_ref: param(&q, "ref"),
            error: None,
        },
    )
    .await
}

/// Requests the deploy; shows the form again with the refused field marked.
pub async fn request(State(ui): State<UiState>, ctx: Ctx) -> UiResult {
    let form = ctx.form.clone();
    let (project, environment, git_ref) = (
        form.get("project"),
        form.get("environment"),
        form.get("ref"),
    );
    let result = if project.is_empty() {
        Err(Problem::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            Some("project"),
            "Choose a project.",
        ))
    } else {
        ui.post(
            &ctx,
            &format!("/api/v1/projects/{}/deploys", enc(project)),
            json!({"environment": environment, "ref": git_ref}),
        )
        .await
    };
    match result {
        Ok(job) => Ok(see_other(&format!("/ui/deploys/{}", s(&job, "id")))),
        Err(mut e) => {
            if e.status == axum::http::StatusCode::NOT_FOUND && e.field.is_none() {
                e.field = Some("project".into());
            }
            deploy_form(
                &ui,
                &ctx,
                DeployForm {
                    project,
                    environment,
                    git_ref,
                    error: Some(&e),
                },
            )
            .await
        }
    }
}

/// One job: state, timeline, approval, live log, and the actions the caller may take.
pub async fn job(
    State(ui): State<UiState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(q): Params,
) -> UiResult {
    let j = ui
        .get(&ctx, &format!("/api/v1/deploys/{}", enc(&id)))
        .await?;
    let log = ui
        .get(&ctx, &format!("/api/v1/deploys/{}/logs", enc(&id)))
        .await?;
    let approval = match j["approval_id"].as_str() {
        Some(a) => Some(
            ui.get(&ctx, &format!("/api/v1/approvals/{}", enc(a)))
                .await?,
        ),
        None => None,
    };
    let protected = protection(&ui, &ctx).await?;
    let (project, env, state) = (s(&j, "project"), s(&j, "environment"), s(&j, "state"));
    let t = target(&project, &env, &protected);
    let terminal =
        ["SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "REJECTED"].contains(&state.as_str());
    let may_deploy = ctx.may(Action::Deploy, &t);
    let may_vote = approval.as_ref().is_some_and(|a| {
        s(a, "state") == "pending"
            && s(a, "requested_by") != ctx.principal.user_id
            && !a["votes"]
                .as_array()
                .is_some_and(|v| v.iter().any(|v| s(v, "user_id") == ctx.principal.user_id))
            && ctx.may(Action::Approve, &t)
    });
    let chunks = log["chunks"].as_array().cloned().unwrap_or_default();
    let last_seq = chunks
        .last()
        .map(|c| s(c, "seq"))
        .unwrap_or_else(|| "0".into());
    let title = format!("{} {} → {}", s(&j, "kind"), project, env);
    let body = html! {
        (notice(param(&q, "notice")))
        dl.facts {
            dt { "State" } dd { span #job-state data-state=(state) { (badge(&state)) } }
            dt { "Ref" } dd { code { (s(&j, "ref")) } " (" (s(&j, "ref_kind")) ")" }
            dt { "Commit" } dd { code { (s(&j, "commit_sha")) } }
            dt { "Requested by" } dd { (s(&j, "requested_by")) " at " (when(&s(&j, "created_at"))) }
            @if !s(&j, "reason").is_empty() { dt { "Reason" } dd { (s(&j, "reason")) } }
            @if let Some(r) = j["refused_rule"].as_str() { dt { "Refused by rule" } dd { code { (r) } } }
            @if !j["exit_code"].is_null() { dt { "Exit code" } dd { (s(&j, "exit_code")) } }
        }
        div.actions {
            @if may_deploy && !terminal {
                form method="post" action={"/ui/deploys/" (enc(&id)) "/cancel"} {
                    (ctx.csrf_field())
                    button.danger type="submit" #cancel { "Cancel job" }
                }
            }
            @if may_deploy && terminal {
                form method="post" action="/ui/deploys/rollback" {
                    (ctx.csrf_field())
                    input type="hidden" name="project" value=(project);
                    input type="hidden" name="environment" value=(env);
                    button type="submit" #rollback { "Roll back " (env) }
                }
            }
        }
        @if let Some(a) = &approval {
            section.card aria-labelledby="approval-h" #approval {
                h2 #approval-h { "Approval " (badge(&s(a, "state"))) }
                p { (a["votes"].as_array().map(Vec::len).unwrap_or(0)) " vote(s); " (s(a, "required")) " approval(s) required." }
                @if let Some(votes) = a["votes"].as_array() {
                    ul { @for v in votes { li { strong { (s(v, "username")) } " " (s(v, "verdict")) "d" @if !s(v, "comment").is_empty() { ": “" (s(v, "comment")) "”" } } } }
                }
                @if may_vote {
                    form method="post" action={"/ui/approvals/" (s(a, "id")) "/vote"} #vote-form {
                        (ctx.csrf_field())
                        input type="hidden" name="back" value={"/ui/deploys/" (id)};
                        div.field {
                            label for="f-comment" { "Comment" }
                            textarea #f-comment name="comment" rows="2" {}
                        }
                        button.primary type="submit" name="verdict" value="approve" #approve { "Approve" }
                        " "
                        button.danger type="submit" name="verdict" value="reject" #reject { "Reject" }
                    }
                } @else if s(a, "state") == "pending" && s(a, "requested_by") == ctx.principal.user_id {
                    p.muted { "You requested this deploy, so someone else must approve it." }
                }
            }
        }
        section.card aria-labelledby="log-h" {
            h2 #log-h { "Log" }
            p.muted #log-status aria-live="polite" { @if terminal { "The job is over." } @else { "Following the runner's output…" } }
            pre #log tabindex="0" aria-label="Job log"
                data-stream=[(!terminal).then(|| format!("/ui/deploys/{}/log?after={last_seq}", enc(&id)))] {
                @for c in &chunks {
                    span class=(if s(c, "stream") == "stderr" { "stderr" } else { "stdout" }) { (s(c, "text")) }
                }
            }
        }
        section.card aria-labelledby="timeline-h" {
            h2 #timeline-h { "Timeline" }
            ol.timeline #timeline {
                @for e in j["timeline"].as_array().cloned().unwrap_or_default() {
                    li { time { (when(&s(&e, "at"))) } " " (badge(&s(&e, "state"))) " " (s(&e, "message")) }
                }
            }
        }
    };
    Ok(page(&ctx, &title, Nav::Deploys, body))
}

/// The job's log as server-sent events: the API's stream, resumed after `?after=`.
pub async fn log_stream(
    State(ui): State<UiState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    let after = param(&q, "after").parse::<i64>().unwrap_or(0).to_string();
    let mut resp = ui
        .raw(
            &ctx,
            Method::GET,
            &format!("/api/v1/deploys/{}/logs/stream", enc(&id)),
            None,
            &[("last-event-id", after)],
        )
        .await;
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp.into_response()
}

pub async fn cancel(State(ui): State<UiState>, ctx: Ctx, Path(id): Path<String>) -> UiResult {
    ui.post(
        &ctx,
        &format!("/api/v1/deploys/{}/cancel", enc(&id)),
        json!(null),
    )
    .await
    .map_err(|e| e.into())
    .map(|_| see_other(&format!("/ui/deploys/{}?notice=Cancelled", enc(&id))))
}

pub async fn rollback(State(ui): State<UiState>, ctx: Ctx) -> UiResult {
    let (p, e) = (ctx.form.get("project"), ctx.form.get("environment"));
    let job = ui
        .post(
            &ctx,
            &format!(
                "/api/v1/projects/{}/environments/{}/rollback",
                enc(p),
                enc(e)
            ),
            json!({}),
        )
        .await?;
    Ok(see_other(&format!("/ui/deploys/{}", s(&job, "id"))))
}

pub async fn vote(State(ui): State<UiState>, ctx: Ctx, Path(id): Path<String>) -> UiResult {
    let f = ctx.form.clone();
    ui.post(
        &ctx,
        &format!("/api/v1/approvals/{}/votes", enc(&id)),
        json!({"verdict": f.get("verdict"), "comment": f.get("comment")}),
    )
    .await?;
    let back = f.get("back");
    let back = if back.starts_with("/ui/") && !back.starts_with("//") {
        back
    } else {
        "/ui/"
    };
    let verdict = if f.get("verdict") == "approve" {
        "Approved"
    } else {
        "Rejected"
    };
    Ok(see_other(&format!("{back}?notice={verdict}")))
}

/// Jobs, newest first, filtered by project, environment and state.
pub async fn history(State(ui): State<UiState>, ctx: Ctx, Query(q): Params) -> UiResult {
    let (project, env, state, cursor) = (
        param(&q, "project"),
        param(&q, "environment"),
        param(&q, "state"),
        param(&q, "cursor"),
    );
    let api = format!(
        "/api/v1/deploys{}",
        query(&[
            ("project", project),
            ("environment", env),
            ("state", state),
            ("cursor", cursor),
            ("limit", "50")
        ])
    );
    let (page_v, err) = match ui.get(&ctx, &api).await {
        Ok(v) => (v, None),
        Err(e) => (Value::Null, Some(e)),
    };
    let states: Vec<(String, String)> = std::iter::once((String::new(), "any".to_owned()))
        .chain(
            [
                "PENDING",
                "AWAITING_APPROVAL",
                "QUEUED",
                "RUNNING",
                "SUCCEEDED",
                "FAILED",
                "CANCELLED",
                "TIMED_OUT",
                "REJECTED",
            ]
            .iter()
            .map(|s| (s.to_string(), s.to_string())),
        )
        .collect();
    let next = page_v["next_cursor"].as_str().map(|c| {
        format!(
            "/ui/deploys/history{}",
            query(&[
                ("project", project),
                ("environment", env),
                ("state", state),
                ("cursor", c)
            ])
        )
    });
    let body = html! {
        form.filters method="get" action="/ui/deploys/history" role="search" {
            (input("Project", "project", project, err.as_ref(), ""))
            (input("Environment", "environment", env, err.as_ref(), ""))
            (select("State", "state", &states, state, err.as_ref()))
            button type="submit" { "Filter" }
        }
        (form_alert(err.as_ref()))
        div.table-wrap {
            table #history {
                thead { tr { th scope="col" { "Job" } th scope="col" { "Project" } th scope="col" { "Environment" } th scope="col" { "Ref" } th scope="col" { "State" } th scope="col" { "By" } th scope="col" { "When" } } }
                tbody {
                    @for j in items(&page_v) {
                        tr {
                            td { a href={"/ui/deploys/" (s(&j, "id"))} { (s(&j, "kind")) " " code { (&s(&j, "id")[..8.min(s(&j, "id").len())]) } } }
                            td { (s(&j, "project")) } td { (s(&j, "environment")) }
                            td { code { (s(&j, "ref")) } } td { (badge(&s(&j, "state"))) }
                            td { (s(&j, "requested_by")) } td { (when(&s(&j, "created_at"))) }
                        }
                    }
                }
            }
        }
        @if let Some(n) = next { p { a href=(n) rel="next" { "Older jobs →" } } }
    };
    Ok(page(&ctx, "Deploy history", Nav::Deploys, body))
}
