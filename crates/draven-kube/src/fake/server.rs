//! The fake's HTTP surface: Kubernetes REST paths (`/api/v1/…`, `/apis/{group}/{version}/…`)
//! mapped onto the store, with list, watch streams, logs and the scale subresource.

use super::{merge_patch, meta_str, Failure, Res, Shared};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

type Params = Query<HashMap<String, String>>;

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/api/{version}/namespaces/{ns}/{plural}",
            get(core_collection).post(core_create),
        )
        .route(
            "/api/{version}/namespaces/{ns}/{plural}/{name}",
            get(core_get).delete(core_delete).patch(core_patch),
        )
        .route(
            "/api/{version}/namespaces/{ns}/{plural}/{name}/{sub}",
            get(core_sub),
        )
        .route(
            "/apis/{group}/{version}/namespaces/{ns}/{plural}",
            get(group_collection).post(group_create),
        )
        .route(
            "/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}",
            get(group_get).delete(group_delete).patch(group_patch),
        )
        .route(
            "/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}/{sub}",
            get(group_sub_get).patch(group_sub_patch),
        )
        .with_state(shared)
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn failure(f: Failure, res: Option<Res>, name: &str) -> Response {
    json_response(
        StatusCode::from_u16(f.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &f.status(res, name),
    )
}

fn unknown(path: &str) -> Response {
    failure(
        Failure {
            code: 404,
            reason: "NotFound",
            message: format!("the server could not find the requested resource ({path})"),
        },
        None,
        "",
    )
}

fn res_of(gv: &str, plural: &str) -> Result<Res, Box<Response>> {
    Res::parse(gv, plural).ok_or_else(|| Box::new(unknown(&format!("{gv}/{plural}"))))
}

async fn core_collection(
    State(s): State<Arc<Shared>>,
    Path((v, ns, plural)): Path<(String, String, String)>,
    q: Params,
) -> Response {
    collection(s, &v, ns, plural, q.0).await
}
async fn group_collection(
    State(s): State<Arc<Shared>>,
    Path((g, v, ns, plural)): Path<(String, String, String, String)>,
    q: Params,
) -> Response {
    collection(s, &format!("{g}/{v}"), ns, plural, q.0).await
}

async fn core_create(
    State(s): State<Arc<Shared>>,
    Path((v, ns, plural)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    create(s, &v, ns, plural, body)
}
async fn group_create(
    State(s): State<Arc<Shared>>,
    Path((g, v, ns, plural)): Path<(String, String, String, String)>,
    body: Bytes,
) -> Response {
    create(s, &format!("{g}/{v}"), ns, plural, body)
}

async fn core_get(
    State(s): State<Arc<Shared>>,
    Path((v, ns, plural, name)): Path<(String, String, String, String)>,
) -> Response {
    one(s, &v, ns, plural, name)
}
async fn group_get(
    State(s): State<Arc<Shared>>,
    Path((g, v, ns, plural, name)): Path<(String, String, String, String, String)>,
) -> Response {
    one(s, &format!("{g}/{v}"), ns, plural, name)
}

async fn core_delete(
    State(s): State<Arc<Shared>>,
    Path((v, ns, plural, name)): Path<(String, String, String, String)>,
) -> Response {
    delete(s, &v, ns, plural, name)
}
async fn group_delete(
    State(s): State<Arc<Shared>>,
    Path((g, v, ns, plural, name)): Path<(String, String, String, String, String)>,
) -> Response {
    delete(s, &format!("{g}/{v}"), ns, plural, name)
}

async fn core_patch(
    State(s): State<Arc<Shared>>,
    Path((v, ns, plural, name)): Path<(String, String, String, String)>,
    body: Bytes,
) -> Response {
    patch(s, &v, ns, plural, name, body)
}
async fn group_patch(
    State(s): State<Arc<Shared>>,
    Path((g, v, ns, plural, name)): Path<(String, String, String, String, String)>,
    body: Bytes,
) -> Response {
    patch(s, &format!("{g}/{v}"), ns, plural, name, body)
}

async fn core_sub(
    State(s): State<Arc<Shared>>,
    Path((v, ns, plural, name, sub)): Path<(String, String, String, String, String)>,
    q: Params,
) -> Response {
    let res = match res_of(&v, &plural) {
        Ok(r) => r,
        Err(e) => return *e,
    };
    if res != Res::Pods || sub != "log" {
        return unknown(&sub);
    }
    if let Err(f) = s.get(res, &ns, &name) {
        return failure(f, Some(res), &name);
    }
    let log = s
        .store
        .lock()
        .logs
        .get(&(ns.clone(), name.clone()))
        .map(|l| l.lock().clone())
        .unwrap_or_default();
    let limit = q
        .get("limitBytes")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(usize::MAX);
    let log = log[..log.len().min(limit)].to_vec();
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], log).into_response()
}

/// The `autoscaling/v1` Scale of a Deployment.
fn scale_of(d: &Value) -> Value {
    let selector = d["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": d["metadata"]["name"], "namespace": d["metadata"]["namespace"],
                     "uid": d["metadata"]["uid"], "resourceVersion": d["metadata"]["resourceVersion"],
                     "creationTimestamp": d["metadata"]["creationTimestamp"]},
        "spec": {"replicas": d["spec"]["replicas"]},
        "status": {"replicas": d["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

async fn group_sub_get(
    State(s): State<Arc<Shared>>,
    Path((g, v, ns, plural, name, sub)): Path<(String, String, String, String, String, String)>,
) -> Response {
    match (res_of(&format!("{g}/{v}"), &plural), sub.as_str()) {
        (Ok(Res::Deployments), "scale") => match s.get(Res::Deployments, &ns, &name) {
            Ok(d) => json_response(StatusCode::OK, &scale_of(&d)),
            Err(f) => failure(f, Some(Res::Deployments), &name),
        },
        (Err(e), _) => *e,
        _ => unknown(&sub),
    }
}

async fn group_sub_patch(
    State(s): State<Arc<Shared>>,
    Path((g, v, ns, plural, name, sub)): Path<(String, String, String, String, String, String)>,
    body: Bytes,
) -> Response {
    match (res_of(&format!("{g}/{v}"), &plural), sub.as_str()) {
        (Ok(Res::Deployments), "scale") => {
            let Ok(p) = serde_json::from_slice::<Value>(&body) else {
                return failure(bad_request("the patch is not JSON"), None, &name);
            };
            let Some(replicas) = p["spec"]["replicas"].as_i64() else {
                return failure(
                    Failure::invalid(Res::Deployments, &name, "spec.replicas: Required value"),
                    Some(Res::Deployments),
                    &name,
                );
            };
            if replicas < 0 {
                return failure(
                    Failure::invalid(
                        Res::Deployments,
                        &name,
                        "spec.replicas: Invalid value: must be greater than or equal to 0",
                    ),
                    Some(Res::Deployments),
                    &name,
                );
            }
            let r = s.update(Res::Deployments, &ns, &name, |d| {
                d["spec"]["replicas"] = replicas.into();
                let g = d["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                d["metadata"]["generation"] = g.into();
            });
            match r {
                Ok(d) => {
                    super::kubelet::reconcile_deployment(&s, &ns, &name);
                    json_response(StatusCode::OK, &scale_of(&d))
                }
                Err(f) => failure(f, Some(Res::Deployments), &name),
            }
        }
        (Err(e), _) => *e,
        _ => unknown(&sub),
    }
}

fn bad_request(message: &str) -> Failure {
    Failure {
        code: 400,
        reason: "BadRequest",
        message: message.to_owned(),
    }
}

fn create(s: Arc<Shared>, gv: &str, ns: String, plural: String, body: Bytes) -> Response {
    let res = match res_of(gv, &plural) {
        Ok(r) => r,
        Err(e) => return *e,
    };
    let obj: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return failure(
                bad_request(&format!("the body is not JSON: {e}")),
                Some(res),
                "",
            )
        }
    };
    let name = meta_str(&obj, "name").to_owned();
    match s.create(res, &ns, obj) {
        Ok(v) => json_response(StatusCode::CREATED, &v),
        Err(f) => failure(f, Some(res), &name),
    }
}

fn one(s: Arc<Shared>, gv: &str, ns: String, plural: String, name: String) -> Response {
    let res = match res_of(gv, &plural) {
        Ok(r) => r,
        Err(e) => return *e,
    };
    match s.get(res, &ns, &name) {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(f) => failure(f, Some(res), &name),
    }
}

fn delete(s: Arc<Shared>, gv: &str, ns: String, plural: String, name: String) -> Response {
    let res = match res_of(gv, &plural) {
        Ok(r) => r,
        Err(e) => return *e,
    };
    match s.delete(res, &ns, &name) {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(f) => failure(f, Some(res), &name),
    }
}

fn patch(
    s: Arc<Shared>,
    gv: &str,
    ns: String,
    plural: String,
    name: String,
    body: Bytes,
) -> Response {
    let res = match res_of(gv, &plural) {
        Ok(r) => r,
        Err(e) => return *e,
    };
    let Ok(p) = serde_json::from_slice::<Value>(&body) else {
        return failure(bad_request("the patch is not JSON"), Some(res), &name);
    };
    let mut invalid = None;
    let r = s.update(res, &ns, &name, |obj| {
        let mut next = obj.clone();
        merge_patch(&mut next, &p);
        // Identity and status are the server's.
        next["metadata"]["name"] = obj["metadata"]["name"].clone();
        next["metadata"]["uid"] = obj["metadata"]["uid"].clone();
        next["status"] = obj["status"].clone();
        if let Err(f) = super::validate::object(res, &ns, &mut next.clone()) {
            invalid = Some(f);
            return;
        }
        if next["spec"] != obj["spec"] {
            let g = obj["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            next["metadata"]["generation"] = g.into();
        }
        *obj = next;
    });
    if let Some(f) = invalid {
        return failure(f, Some(res), &name);
    }
    match r {
        Ok(v) => {
            if res == Res::Deployments {
                super::kubelet::reconcile_deployment(&s, &ns, &name);
            }
            json_response(StatusCode::OK, &v)
        }
        Err(f) => failure(f, Some(res), &name),
    }
}

async fn collection(
    s: Arc<Shared>,
    gv: &str,
    ns: String,
    plural: String,
    q: HashMap<String, String>,
) -> Response {
    let res = match res_of(gv, &plural) {
        Ok(r) => r,
        Err(e) => return *e,
    };
    let labels = q.get("labelSelector").cloned();
    let fields = q.get("fieldSelector").cloned();
    if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return watch(s, res, ns, labels, fields, &q);
    }
    let (rv, items) = s.list(res, &ns, labels.as_deref(), fields.as_deref());
    json_response(
        StatusCode::OK,
        &json!({
            "apiVersion": res.api_version(), "kind": format!("{}List", res.kind()),
            "metadata": {"resourceVersion": rv.to_string()},
            "items": items,
        }),
    )
}

/// A watch: replays the history after `resourceVersion` (or synthetic ADDED events for what
/// exists when none is given), then streams live events, one JSON object per line.
fn watch(
    s: Arc<Shared>,
    res: Res,
    ns: String,
    labels: Option<String>,
    fields: Option<String>,
    q: &HashMap<String, String>,
) -> Response {
    let from: Option<u64> = q
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
        .and_then(|v| v.parse().ok());
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(300);
    let matches = {
        let (ns, labels, fields) = (ns.clone(), labels.clone(), fields.clone());
        move |r: Res, namespace: &str, obj: &Value| {
            r == res
                && namespace == ns
                && labels
                    .as_deref()
                    .is_none_or(|l| super::labels_match(obj, l))
                && fields
                    .as_deref()
                    .is_none_or(|f| super::fields_match(obj, f))
        }
    };
    let (backlog, rx) = {
        let store = s.store.lock();
        let rx = s.events.subscribe();
        let backlog: Vec<(String, Value)> = match from {
            Some(rv) => store
                .history
                .iter()
                .filter(|e| e.rv > rv && matches(e.res, &e.namespace, &e.object))
                .map(|e| (e.kind.to_owned(), e.object.clone()))
                .collect(),
            None => store
                .objects
                .iter()
                .filter(|((r, n, _), v)| matches(*r, n, v))
                .map(|(_, v)| ("ADDED".to_owned(), v.clone()))
                .collect(),
        };
        let last = store.rv;
        (backlog, (rx, last))
    };
    let (rx, last) = rx;
    let line = |kind: &str, obj: &Value| {
        let mut l = json!({"type": kind, "object": obj}).to_string();
        l.push('\n');
        Ok::<_, std::convert::Infallible>(Bytes::from(l))
    };
    let backlog = futures::stream::iter(
        backlog
            .into_iter()
            .map(move |(k, o)| line(&k, &o))
            .collect::<Vec<_>>(),
    );
    let end = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let live = futures::stream::unfold(rx, move |mut rx| {
        let matches = matches.clone();
        async move {
            loop {
                let ev = match tokio::time::timeout_at(end, rx.recv()).await {
                    Err(_) => return None,
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => return None,
                    Ok(Err(_)) => return None,
                    Ok(Ok(ev)) => ev,
                };
                if ev.rv > last && matches(ev.res, &ev.namespace, &ev.object) {
                    return Some((line(ev.kind, &ev.object), rx));
                }
            }
        }
    });
    use futures::StreamExt;
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(backlog.chain(live)))
        .expect("a response")
}
