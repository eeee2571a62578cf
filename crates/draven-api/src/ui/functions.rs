//! Function pages: the list with live invocation rate, error rate, latency and queue depth
//! (refreshed in place by `ui.js`), a function's recent invocations and invoke form, an
//! invocation's detail, and the dead-letter queue with redrive and purge.
//!
//! Rates are computed over the last minute from the invocation records the engine keeps.

use super::{
    badge, enc, form_alert, items, notice, page, query, s, see_other, when, Ctx, Nav, Problem,
    UiResult, UiState,
};
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{Html, IntoResponse};
use draven_core::{Action, Target};
use maud::{html, Markup};
use serde_json::Value;
use std::collections::HashMap;

type Params = Query<HashMap<String, String>>;

fn param<'a>(q: &'a HashMap<String, String>, k: &str) -> &'a str {
    q.get(k).map(|v| v.trim()).unwrap_or("")
}

/// Rates over the last minute, from kept invocation records.
#[derive(Debug, Default, PartialEq)]
pub struct Rates {
    pub per_minute: usize,
    pub error_percent: Option<f64>,
    pub p50_ms: Option<i64>,
    pub p95_ms: Option<i64>,
}

/// `now_ms` and records as the API lists them (`finished_at` RFC 3339, `duration_ms`).
pub fn rates(invocations: &[Value], now_ms: i64) -> Rates {
    let recent: Vec<&Value> = invocations
        .iter()
        .filter(|i| {
            i["finished_at"]
                .as_str()
                .and_then(draven_store::parse_rfc3339_ms)
                .is_some_and(|t| now_ms - t <= 60_000)
        })
        .collect();
    if recent.is_empty() {
        return Rates::default();
    }
    let errors = recent
        .iter()
        .filter(|i| matches!(i["state"].as_str(), Some("failed" | "timed_out")))
        .count();
    let mut durations: Vec<i64> = recent
        .iter()
        .filter_map(|i| i["duration_ms"].as_i64())
        .collect();
    durations.sort_unstable();
    let pct = |p: usize| -> Option<i64> {
        (!durations.is_empty()).then(|| durations[((durations.len() - 1) * p) / 100])
    };
    Rates {
        per_minute: recent.len(),
        error_percent: Some(100.0 * errors as f64 / recent.len() as f64),
        p50_ms: pct(50),
        p95_ms: pct(95),
    }
}

fn ms(v: Option<i64>) -> String {
    v.map(|v| format!("{v} ms")).unwrap_or_else(|| "—".into())
}

async fn rows(ui: &UiState, ctx: &Ctx) -> Result<Markup, Problem> {
    let fns = items(&ui.get(ctx, "/api/v1/functions").await?);
    let now = draven_store::now_ms();
    let mut out = Vec::new();
    for f in &fns {
        let name = s(f, "name");
        let inv = items(
            &ui.get(
                ctx,
                &format!("/api/v1/functions/{}/invocations?limit=500", enc(&name)),
            )
            .await
            .unwrap_or(Value::Null),
        );
        let r = rates(&inv, now);
        let live = &f["live"];
        out.push(html! {
            tr data-function=(name) {
                th scope="row" { a href={"/ui/functions/" (enc(&name))} { (name) } }
                td { (live["executor"].as_str().unwrap_or(f["spec"]["executor"].as_str().unwrap_or("local"))) }
                td.num { (r.per_minute) "/min" }
                td.num { @match r.error_percent { Some(p) => (format!("{p:.0} %")), None => "—" } }
                td.num { (ms(r.p50_ms)) " / " (ms(r.p95_ms)) }
                td.num { @if live.is_null() { "—" } @else { (s(live, "queued")) " / " (s(live, "queue_capacity")) } }
                td.num { @if live.is_null() { "—" } @else { (s(live, "running")) } }
                td.num { @if live.is_null() { "—" } @else { (s(live, "dead_letters")) } }
            }
        });
    }
    Ok(html! { @for r in &out { (r) } })
}

/// The tenant's functions with live counts; `?fragment=rows` gives just the table rows (for
/// the in-place refresh).
pub async fn list(State(ui): State<UiState>, ctx: Ctx, Query(q): Params) -> UiResult {
    let rows = rows(&ui, &ctx).await?;
    if param(&q, "fragment") == "rows" {
        return Ok(Html(rows.into_string()).into_response());
    }
    let body = html! {
        p.muted { "Rates and latency over the last minute; queue is queued / capacity. " span #live-note aria-live="polite" {} }
        div.table-wrap {
            table #functions data-refresh="/ui/functions?fragment=rows" {
                thead { tr {
                    th scope="col" { "Function" } th scope="col" { "Executor" } th scope="col" { "Invocations" }
                    th scope="col" { "Errors" } th scope="col" { "Latency p50 / p95" } th scope="col" { "Queue" }
                    th scope="col" { "Running" } th scope="col" { "Dead letters" }
                } }
                tbody { (rows) }
            }
        }
    };
    Ok(page(&ctx, "Functions", Nav::Functions, body))
}

fn fn_target(name: &str) -> Target<'_> {
    Target {
        project: Some(name),
        environment: None,
        environment_protected: false,
    }
}

/// One function: counts, invoke form, recent invocations, dead letters.
pub async fn function(
    State(ui): State<UiState>,
    ctx: Ctx,
    Path(name): Path<String>,
    Query(q): Params,
) -> UiResult {
    let f = ui
        .get(&ctx, &format!("/api/v1/functions/{}", enc(&name)))
        .await?;
    let inv = items(
        &ui.get(
            &ctx,
            &format!("/api/v1/functions/{}/invocations?limit=100", enc(&name)),
        )
        .await?,
    );
    let dlq = items(
        &ui.get(
            &ctx,
            &format!("/api/v1/functions/{}/dead-letters", enc(&name)),
        )
        .await?,
    );
    let r = rates(&inv, draven_store::now_ms());
    let may_invoke = ctx.may(Action::Invoke, &fn_target(&name));
    let may_purge = ctx.may(Action::Write, &Target::tenant());
    let live = &f["live"];
    let err = (!param(&q, "error").is_empty()).then(|| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("payload"),
            param(&q, "error"),
        )
    });
    let body = html! {
        (notice(param(&q, "notice")))
        dl.facts {
            dt { "Revision" } dd { (s(&f, "revision")) }
            dt { "Executor" } dd { (f["spec"]["executor"].as_str().unwrap_or("local")) }
            dt { "Last minute" } dd { (r.per_minute) " invocations, " @match r.error_percent { Some(p) => (format!("{p:.0} %")), None => "—" } " errors, p50 " (ms(r.p50_ms)) ", p95 " (ms(r.p95_ms)) }
            @if !live.is_null() {
                dt { "Now" } dd { (s(live, "queued")) " queued of " (s(live, "queue_capacity")) ", " (s(live, "running")) " running, " (s(live, "retrying")) " retrying" }
            }
        }
        @if may_invoke {
            section.card aria-labelledby="invoke-h" {
                h2 #invoke-h { "Invoke" }
                (form_alert(err.as_ref()))
                form method="post" action={"/ui/functions/" (enc(&name)) "/invoke"} #invoke-form {
                    (ctx.csrf_field())
                    div.field.invalid[err.is_some()] {
                        label for="f-payload" { "Payload (JSON)" }
                        textarea #f-payload name="payload" rows="4" aria-invalid=[err.as_ref().map(|_| "true")] { "{}" }
                    }
                    fieldset {
                        legend { "Mode" }
                        label { input type="radio" name="mode" value="async" checked; " asynchronous (queued, retried)" }
                        label { input type="radio" name="mode" value="sync"; " synchronous (wait for the answer)" }
                    }
                    button.primary type="submit" #invoke { "Invoke" }
                }
            }
        }
        section.card aria-labelledby="inv-h" {
            h2 #inv-h { "Recent invocations" }
            div.table-wrap {
                table #invocations {
                    thead { tr { th scope="col" { "Invocation" } th scope="col" { "State" } th scope="col" { "Mode" } th scope="col" { "Attempts" } th scope="col" { "Duration" } th scope="col" { "Created" } } }
                    tbody {
                        @for i in &inv {
                            tr {
                                td { a href={"/ui/invocations/" (s(i, "id"))} { code { (s(i, "id")) } } }
                                td { (badge(&s(i, "state"))) } td { (s(i, "mode")) } td.num { (s(i, "attempts")) }
                                td.num { (ms(i["duration_ms"].as_i64())) } td { (when(&s(i, "created_at"))) }
                            }
                        }
                    }
                }
            }
            @if inv.is_empty() { p.muted { "No invocations kept on this server." } }
        }
        section.card aria-labelledby="dlq-h" {
            h2 #dlq-h { "Dead letters (" (dlq.len()) ")" }
            @if !dlq.is_empty() {
                div.actions {
                    @if may_invoke { (dlq_button(&ctx, &name, "redrive", "", "Redrive all")) }
                    @if may_purge { (dlq_button(&ctx, &name, "purge", "", "Purge all")) }
                }
            }
            div.table-wrap {
                table #dead-letters {
                    thead { tr { th scope="col" { "Invocation" } th scope="col" { "Attempts" } th scope="col" { "Failure" } th scope="col" { "Failed" } th scope="col" { span.sr-only { "Actions" } } } }
                    tbody {
                        @for d in &dlq {
                            tr {
                                td { code { (s(d, "invocation_id")) } } td.num { (s(d, "attempts")) }
                                td { (s(&d["failure"], "kind")) ": " (s(&d["failure"], "message")) }
                                td { (when(&s(d, "failed_at"))) }
                                td.actions {
                                    @if may_invoke { (dlq_button(&ctx, &name, "redrive", &s(d, "invocation_id"), "Redrive")) }
                                    @if may_purge { (dlq_button(&ctx, &name, "purge", &s(d, "invocation_id"), "Purge")) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page(
        &ctx,
        &format!("Function {name}"),
        Nav::Functions,
        body,
    ))
}

fn dlq_button(ctx: &Ctx, name: &str, what: &str, id: &str, label: &str) -> Markup {
    html! {
        form.inline method="post" action={"/ui/functions/" (enc(name)) "/" (what)} {
            (ctx.csrf_field())
            input type="hidden" name="id" value=(id);
            button type="submit" class=(if what == "purge" { "danger" } else { "" }) { (label) }
        }
    }
}

/// Invokes with the form's payload: async goes back to the list of invocations, sync shows
/// the invocation with its answer.
pub async fn invoke(State(ui): State<UiState>, ctx: Ctx, Path(name): Path<String>) -> UiResult {
    let payload = ctx.form.get("payload");
    let payload = if payload.is_empty() { "{}" } else { payload };
    let back = format!("/ui/functions/{}", enc(&name));
    if serde_json::from_str::<Value>(payload).is_err() {
        return Ok(see_other(&format!(
            "{back}{}",
            query(&[("error", "The payload is not valid JSON.")])
        )));
    }
    let sync = ctx.form.get("mode") == "sync";
    let path = format!(
        "/api/v1/functions/{}/{}",
        enc(&name),
        if sync { "invoke" } else { "invoke-async" }
    );
    let resp = ui
        .raw(
            &ctx,
            Method::POST,
            &path,
            Some(("application/json", payload.as_bytes().to_vec())),
            &[],
        )
        .await;
    let id = resp
        .headers()
        .get("x-invocation-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let id = id.or_else(|| json["id"].as_str().map(str::to_owned));
    match (id, status.is_success() || sync) {
        (Some(id), true) if sync => Ok(see_other(&format!("/ui/invocations/{}", enc(&id)))),
        (Some(id), true) => Ok(see_other(&format!(
            "{back}{}",
            query(&[("notice", &format!("Invocation {id} accepted"))])
        ))),
        _ => {
            let msg = json["detail"]
                .as_str()
                .unwrap_or("the invocation was refused");
            Ok(see_other(&format!("{back}{}", query(&[("error", msg)]))))
        }
    }
}

pub async fn redrive(State(ui): State<UiState>, ctx: Ctx, Path(name): Path<String>) -> UiResult {
    let id = ctx.form.get("id");
    let path = if id.is_empty() {
        format!("/api/v1/functions/{}/dead-letters/redrive", enc(&name))
    } else {
        format!(
            "/api/v1/functions/{}/dead-letters/{}/redrive",
            enc(&name),
            enc(id)
        )
    };
    ui.call(&ctx, Method::POST, &path, None).await?;
    Ok(see_other(&format!(
        "/ui/functions/{}?notice=Redriven",
        enc(&name)
    )))
}

pub async fn purge(State(ui): State<UiState>, ctx: Ctx, Path(name): Path<String>) -> UiResult {
    let id = ctx.form.get("id");
    let path = if id.is_empty() {
        format!("/api/v1/functions/{}/dead-letters", enc(&name))
    } else {
        format!("/api/v1/functions/{}/dead-letters/{}", enc(&name), enc(id))
    };
    ui.call(&ctx, Method::DELETE, &path, None).await?;
    Ok(see_other(&format!(
        "/ui/functions/{}?notice=Purged",
        enc(&name)
    )))
}

/// One invocation: state, timing, result or failure.
pub async fn invocation(State(ui): State<UiState>, ctx: Ctx, Path(id): Path<String>) -> UiResult {
    let i = ui
        .get(&ctx, &format!("/api/v1/invocations/{}", enc(&id)))
        .await?;
    let result = &i["result"];
    let body = html! {
        p { a href={"/ui/functions/" (enc(&s(&i, "function")))} { "← " (s(&i, "function")) } }
        dl.facts {
            dt { "State" } dd #invocation-state { (badge(&s(&i, "state"))) }
            dt { "Mode" } dd { (s(&i, "mode")) }
            dt { "Executor" } dd { (s(&i, "executor")) }
            dt { "Attempts" } dd { (s(&i, "attempts")) }
            dt { "Created" } dd { (when(&s(&i, "created_at"))) }
            dt { "Duration" } dd { (ms(i["duration_ms"].as_i64())) }
            dt { "Trace" } dd { code { (s(&i, "trace_id")) } }
            @if i["dead_lettered"].as_bool() == Some(true) { dt { "Dead-lettered" } dd { "yes" } }
        }
        @if !i["failure"].is_null() {
            div.alert.error role="status" { p { strong { (s(&i["failure"], "kind")) } ": " (s(&i["failure"], "message")) } }
        }
        @if !result.is_null() {
            section.card aria-labelledby="result-h" {
                h2 #result-h { "Result (HTTP " (s(result, "status")) ")" }
                pre #result tabindex="0" { (match &result["body"] { Value::String(t) => t.clone(), Value::Null => s(result, "body_base64"), v => serde_json::to_string_pretty(v).unwrap_or_default() }) }
            }
        }
    };
    Ok(page(
        &ctx,
        &format!("Invocation {id}"),
        Nav::Functions,
        body,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rates_count_the_last_minute() {
        let now = draven_store::parse_rfc3339_ms("2025-01-01T00:10:00.000Z").unwrap();
        let inv = |at: &str, state: &str, d: i64| json!({"finished_at": at, "state": state, "duration_ms": d});
        let list = vec![
            inv("2025-01-01T00:09:30.000Z", "succeeded", 10),
            inv("2025-01-01T00:09:40.000Z", "failed", 30),
            inv("2025-01-01T00:09:50.000Z", "succeeded", 20),
            inv("2025-01-01T00:05:00.000Z", "failed", 999),
            json!({"state": "running"}),
        ];
        let r = rates(&list, now);
        assert_eq!(r.per_minute, 3);
        assert_eq!(r.p50_ms, Some(20));
        assert_eq!(r.p95_ms, Some(20));
        assert!((r.error_percent.unwrap() - 33.33).abs() < 0.1);
        assert_eq!(rates(&[], now), Rates::default());
    }
}
