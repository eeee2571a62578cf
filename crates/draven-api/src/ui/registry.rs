//! Registry pages: artifacts with search and filters, an artifact's versions with validation
//! findings shown at their line, the dependency graph, a diff between two versions, publishing
//! to an environment and what is live where.

use super::diff::{self, Line};
use super::{
    badge, enc, form_alert, input, items, notice, page, query, s, see_other, select, when, Ctx,
    Nav, Problem, UiResult, UiState,
};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use draven_core::{Action, Target};
use maud::{html, Markup};
use serde_json::{json, Value};
use std::collections::HashMap;

type Params = Query<HashMap<String, String>>;

fn param<'a>(q: &'a HashMap<String, String>, k: &str) -> &'a str {
    q.get(k).map(|v| v.trim()).unwrap_or("")
}

fn opts(values: &[&str], any: &str) -> Vec<(String, String)> {
    std::iter::once((String::new(), any.to_owned()))
        .chain(values.iter().map(|v| (v.to_string(), v.to_string())))
        .collect()
}

/// Artifacts: search by text, filter by kind, state and label.
pub async fn list(State(ui): State<UiState>, ctx: Ctx, Query(q): Params) -> UiResult {
    let (text, kind, state, label, cursor) = (
        param(&q, "q"),
        param(&q, "kind"),
        param(&q, "state"),
        param(&q, "label"),
        param(&q, "cursor"),
    );
    let api = format!(
        "/api/v1/artifacts{}",
        query(&[
            ("q", text),
            ("kind", kind),
            ("state", state),
            ("label", label),
            ("cursor", cursor)
        ])
    );
    let (found, err) = match ui.get(&ctx, &api).await {
        Ok(v) => (v, None),
        Err(e) => (Value::Null, Some(e)),
    };
    let next = found["next_cursor"].as_str().map(|c| {
        format!(
            "/ui/registry{}",
            query(&[
                ("q", text),
                ("kind", kind),
                ("state", state),
                ("label", label),
                ("cursor", c)
            ])
        )
    });
    let body = html! {
        p.actions { a.button href="/ui/registry/publications" { "Bundles and publications" } }
        form.filters method="get" action="/ui/registry" role="search" {
            (input("Search", "q", text, err.as_ref(), ""))
            (select("Kind", "kind", &opts(&["bpmn", "dmn", "form", "request"], "any kind"), kind, err.as_ref()))
            (select("State", "state", &opts(&["draft", "published", "deprecated"], "any state"), state, err.as_ref()))
            (input("Label", "label", label, err.as_ref(), ""))
            button type="submit" { "Search" }
        }
        (form_alert(err.as_ref()))
        div.table-wrap {
            table #artifacts {
                thead { tr { th scope="col" { "Key" } th scope="col" { "Kind" } th scope="col" { "Name" } th scope="col" { "Labels" } th scope="col" { "Latest" } th scope="col" { "Published" } th scope="col" { "Updated" } } }
                tbody {
                    @for a in items(&found) {
                        tr {
                            td { a href={"/ui/registry/" (enc(&s(&a, "key")))} { (s(&a, "key")) } }
                            td { (s(&a, "kind")) } td { (s(&a, "name")) }
                            td { @for l in a["labels"].as_array().cloned().unwrap_or_default() { span.badge.plain { (l.as_str().unwrap_or("")) } " " } }
                            td { (s(&a, "latest_version")) } td { (s(&a, "latest_published")) }
                            td { (when(&s(&a, "updated_at"))) }
                        }
                    }
                }
            }
        }
        @if let Some(n) = next { p { a href=(n) rel="next" { "More →" } } }
    };
    Ok(page(&ctx, "Registry", Nav::Registry, body))
}

/// The payload with line numbers, each finding under the line it names.
fn payload_with_findings(text: &str, findings: &[Value]) -> Markup {
    let mut at_line: HashMap<u64, Vec<&Value>> = HashMap::new();
    let mut elsewhere = Vec::new();
    for f in findings {
        match f["line"].as_u64() {
            Some(l) => at_line.entry(l).or_default().push(f),
            None => elsewhere.push(f),
        }
    }
    let finding = |f: &Value| {
        html! {
            div class={"finding " (s(f, "severity"))} role="note" {
                strong { (s(f, "severity")) " " code { (s(f, "rule")) } }
                @if !f["column"].is_null() { " (column " (s(f, "column")) ")" }
                @if let Some(p) = f["pointer"].as_str() { " at " code { (p) } }
                ": " (s(f, "message"))
            }
        }
    };
    html! {
        @if !elsewhere.is_empty() {
            ul.findings { @for f in &elsewhere { li { (finding(f)) } } }
        }
        ol.code #payload {
            @for (i, line) in text.lines().enumerate() {
                @let n = (i + 1) as u64;
                li id={"L" (n)} class=[at_line.contains_key(&n).then_some("flagged")] {
                    code { (line) }
                    @if let Some(fs) = at_line.get(&n) { @for f in fs { (finding(f)) } }
                }
            }
        }
    }
}

fn graph(g: &Value) -> Markup {
    let nodes = g["nodes"].as_array().cloned().unwrap_or_default();
    let edges = g["edges"].as_array().cloned().unwrap_or_default();
    let missing = g["missing"].as_array().cloned().unwrap_or_default();
    let cycles = g["cycles"].as_array().cloned().unwrap_or_default();
    html! {
        @if edges.is_empty() && missing.is_empty() { p.muted { "No dependencies." } }
        ul.graph #graph {
            @for e in &edges {
                li {
                    a href={"/ui/registry/" (enc(s(e, "from").split('@').next().unwrap_or("")))} { code { (s(e, "from")) } }
                    " —" (s(e, "kind")) " " code { (s(e, "id")) } "→ "
                    a href={"/ui/registry/" (enc(s(e, "to").split('@').next().unwrap_or("")))} { code { (s(e, "to")) } }
                    @if !s(e, "element").is_empty() { small.muted { " (element " (s(e, "element")) ")" } }
                }
            }
            @for m in &missing {
                li.bad { code { (s(m, "from")) } " needs " (s(m, "kind")) " " code { (s(m, "id")) } ": " strong { "missing" } }
            }
        }
        @if !cycles.is_empty() { p.alert.error { "Cycles: " @for c in &cycles { code { (c.to_string()) } " " } } }
        p.muted { (nodes.len()) " artifact version(s) in the closure." }
    }
}

/// Which environments have a live bundle containing `key`: (environment, version, bundle).
async fn live_for(
    ui: &UiState,
    ctx: &Ctx,
    key: &str,
) -> Result<Vec<(String, String, String)>, Problem> {
    let live = items(&ui.get(ctx, "/api/v1/publications/live").await?);
    let mut out = Vec::new();
    for p in &live {
        let sha = s(p, "bundle");
        let b = ui
            .get(ctx, &format!("/api/v1/bundles/{}", enc(&sha)))
            .await?;
        for it in b["manifest"]["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            if s(&it, "key") == key {
                out.push((s(p, "environment"), s(&it, "version"), sha.clone()));
            }
        }
    }
    Ok(out)
}

async fn env_options(
    ui: &UiState,
    ctx: &Ctx,
) -> Result<(Vec<(String, String)>, HashMap<String, bool>), Problem> {
    let envs = items(&ui.get(ctx, "/api/v1/environments").await?);
    let protected: HashMap<String, bool> = envs
        .iter()
        .map(|e| (s(e, "name"), e["protected"].as_bool().unwrap_or(true)))
        .collect();
    let opts = envs
        .iter()
        .filter(|e| {
            ctx.may(
                Action::Deploy,
                &Target {
                    project: None,
                    environment: Some(&s(e, "name")),
                    environment_protected: e["protected"].as_bool().unwrap_or(true),
                },
            )
        })
        .map(|e| (s(e, "name"), s(e, "name")))
        .collect();
    Ok((opts, protected))
}

/// One artifact: versions, the chosen version's payload with its findings, its dependency
/// graph, where it is live, a diff form and a publish form.
pub async fn artifact(
    State(ui): State<UiState>,
    ctx: Ctx,
    Path(key): Path<String>,
    Query(q): Params,
) -> UiResult {
    let a = ui
        .get(&ctx, &format!("/api/v1/artifacts/{}", enc(&key)))
        .await?;
    let versions = items(
        &ui.get(&ctx, &format!("/api/v1/artifacts/{}/versions", enc(&key)))
            .await?,
    );
    let chosen = param(&q, "v")
        .parse::<i64>()
        .ok()
        .or_else(|| versions.iter().filter_map(|v| v["number"].as_i64()).max());
    let version = versions
        .iter()
        .find(|v| v["number"].as_i64() == chosen)
        .cloned();
    let (payload, graph_v) = match &version {
        Some(v) => {
            let n = s(v, "number");
            let text = ui
                .text(
                    &ctx,
                    &format!("/api/v1/artifacts/{}/versions/{n}/payload", enc(&key)),
                )
                .await
                .unwrap_or_default();
            let g = ui
                .get(
                    &ctx,
                    &format!("/api/v1/artifacts/{}/versions/{n}/graph", enc(&key)),
                )
                .await
                .unwrap_or(Value::Null);
            (text, g)
        }
        None => (String::new(), Value::Null),
    };
    let live = live_for(&ui, &ctx, &key).await?;
    let (env_opts, _) = env_options(&ui, &ctx).await?;
    let version_opts: Vec<(String, String)> = versions
        .iter()
        .map(|v| {
            (
                s(v, "number"),
                format!("v{} ({})", s(v, "number"), s(v, "state")),
            )
        })
        .collect();
    let numbers: Vec<i64> = versions
        .iter()
        .filter_map(|v| v["number"].as_i64())
        .collect();
    let prev = chosen.and_then(|c| numbers.iter().copied().filter(|n| *n < c).max());
    let body = html! {
        (notice(param(&q, "notice")))
        p { (s(&a, "kind")) " · " (s(&a, "description")) }
        section.card aria-labelledby="live-h" {
            h2 #live-h { "Live" }
            @if live.is_empty() { p.muted #live { "Not live anywhere." } }
            @else {
                ul #live { @for (env, v, sha) in &live { li { strong { (env) } ": v" (v) " in bundle " code { (&sha[..12.min(sha.len())]) } } } }
            }
        }
        section.card aria-labelledby="versions-h" {
            h2 #versions-h { "Versions" }
            div.table-wrap {
                table #versions {
                    thead { tr { th scope="col" { "Version" } th scope="col" { "State" } th scope="col" { "Tag" } th scope="col" { "Errors" } th scope="col" { "sha256" } th scope="col" { "Created" } } }
                    tbody {
                        @for v in &versions {
                            tr aria-current=[(v["number"].as_i64() == chosen).then_some("true")] {
                                td { a href={"/ui/registry/" (enc(&key)) "?v=" (s(v, "number"))} { "v" (s(v, "number")) } }
                                td { (badge(&s(v, "state"))) } td { (s(v, "version_tag")) }
                                td { (s(v, "errors")) } td { code { (&s(v, "sha256")[..12.min(s(v, "sha256").len())]) } }
                                td { (when(&s(v, "created_at"))) " by " (s(v, "created_by")) }
                            }
                        }
                    }
                }
            }
            @if versions.len() > 1 {
                form.filters method="get" action={"/ui/registry/" (enc(&key)) "/diff"} {
                    (select("From", "a", &version_opts, &prev.map(|p| p.to_string()).unwrap_or_default(), None))
                    (select("To", "b", &version_opts, &chosen.map(|c| c.to_string()).unwrap_or_default(), None))
                    button type="submit" { "Compare" }
                }
            }
        }
        @if let Some(v) = &version {
            section.card aria-labelledby="payload-h" {
                h2 #payload-h { "v" (s(v, "number")) " " (badge(&s(v, "state"))) }
                @if !env_opts.is_empty() && s(v, "errors") == "0" {
                    form.filters method="post" action="/ui/registry/publish" #publish-form {
                        (ctx.csrf_field())
                        input type="hidden" name="artifact" value=(key);
                        input type="hidden" name="version" value=(s(v, "number"));
                        (select("Publish to", "environment", &env_opts, "", None))
                        button.primary type="submit" #publish { "Publish v" (s(v, "number")) }
                    }
                }
                h3 { "Dependencies" }
                (graph(&graph_v))
                h3 { "Payload and findings" }
                (payload_with_findings(&payload, &v["findings"].as_array().cloned().unwrap_or_default()))
            }
        }
    };
    Ok(page(&ctx, &format!("Artifact {key}"), Nav::Registry, body))
}

/// Two versions' payloads side by side as a line diff.
pub async fn diff(
    State(ui): State<UiState>,
    ctx: Ctx,
    Path(key): Path<String>,
    Query(q): Params,
) -> UiResult {
    let (a, b) = (param(&q, "a"), param(&q, "b"));
    let fetch = |n: &str| {
        format!(
            "/api/v1/artifacts/{}/versions/{}/payload",
            enc(&key),
            enc(n)
        )
    };
    let left = ui.text(&ctx, &fetch(a)).await.map_err(|mut e| {
        e.field = Some("a".into());
        e
    })?;
    let right = ui.text(&ctx, &fetch(b)).await.map_err(|mut e| {
        e.field = Some("b".into());
        e
    })?;
    let lines = diff::lines(&left, &right);
    let changed = lines.iter().filter(|l| !matches!(l, Line::Same(_))).count();
    let body = html! {
        p { a href={"/ui/registry/" (enc(&key))} { "← " (key) } " · " (changed) " changed line(s)" }
        pre.diff #diff tabindex="0" aria-label={"Changes from v" (a) " to v" (b)} {
            @for l in &lines {
                @match l {
                    Line::Same(t) => { span.same { "  " (t) "\n" } }
                    Line::Removed(t) => { del { "- " (t) "\n" } }
                    Line::Added(t) => { ins { "+ " (t) "\n" } }
                }
            }
        }
    };
    Ok(page(
        &ctx,
        &format!("{key}: v{a} → v{b}"),
        Nav::Registry,
        body,
    ))
}

/// Publishes: an artifact version (a bundle of it and its closure is made first) or an
/// existing bundle, onto an environment. Protected environments wait for approval.
pub async fn publish(State(ui): State<UiState>, ctx: Ctx) -> UiResult {
    let f = ctx.form.clone();
    let environment = f.get("environment");
    let bundle = if !f.get("bundle").is_empty() {
        f.get("bundle").to_owned()
    } else {
        let version: i64 = f.get("version").parse().map_err(|_| {
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("version"),
                "choose a version",
            )
        })?;
        let b = ui
            .post(
                &ctx,
                "/api/v1/bundles",
                json!({"items": [{"artifact": f.get("artifact"), "version": version}]}),
            )
            .await?;
        s(&b, "sha256")
    };
    let p = ui
        .post(
            &ctx,
            "/api/v1/publications",
            json!({"bundle": bundle, "environment": environment}),
        )
        .await?;
    let msg = if s(&p, "state") == "live" {
        format!(
            "Bundle {} is live on {environment}",
            &bundle[..12.min(bundle.len())]
        )
    } else {
        format!("Publication to {environment} awaits approval")
    };
    Ok(see_other(&format!(
        "/ui/registry/publications{}",
        query(&[("notice", &msg)])
    )))
}

/// What is live where, the bundles (with a publish form) and the publication history.
pub async fn publications(State(ui): State<UiState>, ctx: Ctx, Query(q): Params) -> UiResult {
    let env = param(&q, "environment");
    let live = items(&ui.get(&ctx, "/api/v1/publications/live").await?);
    let bundles = items(&ui.get(&ctx, "/api/v1/bundles?limit=50").await?);
    let history = items(
        &ui.get(
            &ctx,
            &format!(
                "/api/v1/publications{}",
                query(&[("environment", env), ("limit", "50")])
            ),
        )
        .await?,
    );
    let (env_opts, _) = env_options(&ui, &ctx).await?;
    let body = html! {
        (notice(param(&q, "notice")))
        section.card aria-labelledby="live-h" {
            h2 #live-h { "Live now" }
            @if live.is_empty() { p.muted { "Nothing is live yet." } }
            ul #live-list {
                @for p in &live { li { strong { (s(p, "environment")) } ": bundle " code { (&s(p, "bundle")[..12.min(s(p, "bundle").len())]) } " since " (when(&s(p, "live_at"))) " (" (s(p, "requested_by")) ")" } }
            }
        }
        section.card aria-labelledby="bundles-h" {
            h2 #bundles-h { "Bundles" }
            div.table-wrap {
                table #bundles {
                    thead { tr { th scope="col" { "Bundle" } th scope="col" { "Contents" } th scope="col" { "Created" } th scope="col" { span.sr-only { "Publish" } } } }
                    tbody {
                        @for b in &bundles {
                            tr {
                                td { a href=(s(b, "download_url")) { code { (&s(b, "sha256")[..12.min(s(b, "sha256").len())]) } } }
                                td { @for it in b["manifest"]["items"].as_array().cloned().unwrap_or_default() { (s(&it, "key")) " v" (s(&it, "version")) "; " } }
                                td { (when(&s(b, "created_at"))) " by " (s(b, "created_by")) }
                                td {
                                    @if !env_opts.is_empty() {
                                        form.inline method="post" action="/ui/registry/publish" {
                                            (ctx.csrf_field())
                                            input type="hidden" name="bundle" value=(s(b, "sha256"));
                                            label.sr-only for={"env-" (s(b, "sha256"))} { "Environment" }
                                            select id={"env-" (s(b, "sha256"))} name="environment" {
                                                @for (v, l) in &env_opts { option value=(v) { (l) } }
                                            }
                                            button type="submit" { "Publish" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.card aria-labelledby="hist-h" {
            h2 #hist-h { "Publication history" }
            div.table-wrap {
                table #publications {
                    thead { tr { th scope="col" { "Environment" } th scope="col" { "Bundle" } th scope="col" { "State" } th scope="col" { "By" } th scope="col" { "When" } } }
                    tbody {
                        @for p in &history {
                            tr {
                                td { (s(p, "environment")) } td { code { (&s(p, "bundle")[..12.min(s(p, "bundle").len())]) } }
                                td { (badge(&s(p, "state"))) } td { (s(p, "requested_by")) } td { (when(&s(p, "created_at"))) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page(&ctx, "Bundles and publications", Nav::Registry, body))
}
