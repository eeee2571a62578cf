//! The observability kit speaks Draven's real metric names: after some traffic (sync and async
//! invocations, a retry into the dead-letter queue, a failed callback, a rate-limit refusal, a
//! crash, an authentication failure), every `draven_*` name in the Grafana dashboard, the alert
//! rules and the SLO document must appear in this app's `/metrics`.

use super::{App, ADMIN};
use draven_store::testing::TestDb;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `draven_*` names mentioned in a text.
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("draven_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

/// Every `expr` of the dashboard's panels.
fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "query", Value::String(s)) => out.push(s.clone()),
                    _ => exprs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| exprs(x, out)),
        _ => {}
    }
}

async fn metric_names(app: &App) -> BTreeSet<String> {
    app.get("/metrics", ADMIN)
        .await
        .text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

async fn put(app: &App, name: &str, spec: Value) -> super::Resp {
    let path = format!("/api/v1/functions/{name}");
    app.send(Method::PUT, &path, Some(ADMIN), Some(spec), &[])
        .await
}

async fn invoke(
    app: &App,
    name: &str,
    mode: &str,
    body: Value,
    headers: Vec<(&str, &str)>,
) -> super::Resp {
    let path = format!("/api/v1/functions/{name}/{mode}");
    let body = body.to_string().into_bytes();
    app.raw(
        Method::POST,
        &path,
        ADMIN,
        "application/json",
        body,
        &headers,
    )
    .await
}

async fn observability_kit_uses_exported_metrics(db: TestDb) {
    let app = App::start(db).await;
    let hello = draven_functions::testing::binary("draven-examples", "hello")
        .display()
        .to_string();
    app.send(
        Method::PUT,
        "/api/v1/secrets/hook",
        Some(ADMIN),
        Some(json!({"value": "k"})),
        &[],
    )
    .await
    .ok();
    put(
        &app,
        "hello",
        json!({"runtime": {"kind": "process", "command": hello}, "retries": 1,
                        "backoff": {"initial_ms": 10, "max_ms": 20}, "callback_secret": "hook"}),
    )
    .await
    .ok();
    put(
        &app,
        "limited",
        json!({"runtime": {"kind": "process", "command": hello},
                          "rate_limit": {"per_second": 1, "burst": 1}}),
    )
    .await
    .ok();
    // Sync (a cold start), async failing into a retry, the dead-letter queue and a callback
    // that cannot be delivered.
    assert_eq!(
        invoke(&app, "hello", "invoke", json!({"name": "a"}), vec![])
            .await
            .status,
        StatusCode::OK
    );
    let r = invoke(
        &app,
        "hello",
        "invoke-async",
        json!({"fail": true}),
        vec![("x-callback-url", "http://127.0.0.1:9/hook")],
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let id = r.body["invocation_id"].as_str().unwrap().to_owned();
    let inv = app
        .get(&format!("/api/v1/invocations/{id}?wait=30"), ADMIN)
        .await;
    assert_eq!(inv.body["state"], "failed");
    // A refusal, a crash, an authentication failure.
    invoke(&app, "limited", "invoke", json!({}), vec![]).await;
    assert_eq!(
        invoke(&app, "limited", "invoke", json!({}), vec![])
            .await
            .status,
        StatusCode::TOO_MANY_REQUESTS
    );
    invoke(&app, "hello", "invoke", json!({"exit": true}), vec![]).await;
    assert_eq!(
        app.get("/api/v1/functions", "not-a-token").await.status,
        StatusCode::UNAUTHORIZED
    );

    let mut referenced = BTreeSet::new();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/draven.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.iter().filter(|p| p["type"] == "timeseries").count() >= 15);
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    assert!(queries.len() >= 20);
    for q in &queries {
        referenced.extend(names(q));
    }
    let alerts: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("deploy/prometheus/alerts.yml")).unwrap(),
    )
    .expect("the alert rules are YAML");
    let mut rules = 0;
    for group in alerts["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            assert!(
                rule["alert"].as_str().is_some() && rule["labels"]["severity"].as_str().is_some()
            );
            referenced.extend(names(rule["expr"].as_str().expect("expr")));
            rules += 1;
        }
    }
    assert!(rules >= 10);
    let slo = std::fs::read_to_string(root().join("docs/slo.md")).unwrap();
    let in_slo = names(&slo);
    for required in [
        "draven_http_requests_total",
        "draven_function_latency_seconds_bucket",
    ] {
        assert!(in_slo.contains(required), "docs/slo.md maps to {required}");
    }
    referenced.extend(in_slo);

    // Callbacks are delivered in the background: wait for the failed one to be counted.
    let mut exported = metric_names(&app).await;
    for _ in 0..100 {
        if referenced.is_subset(&exported) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        exported = metric_names(&app).await;
    }
    let missing: Vec<&String> = referenced.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "referenced but not exported: {missing:?}"
    );
}

draven_store::on_both_backends!(observability_kit_uses_exported_metrics);
