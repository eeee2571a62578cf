//! Faithful local fakes of GitHub, GitLab and Bitbucket Cloud for tests: real HTTP servers
//! (axum on a random port) that implement the endpoints the adapters use, with the documented
//! request and answer shapes, authentication, status sequences, cancel, rate-limit and outage
//! answers, and webhook deliveries with the documented payloads and signature headers.
//!
//! A run advances one step through its script each time it is read (polling), or is set by the
//! test; `delivery` builds the webhook the provider would send for a run's current state.
//! These fakes are what the adapters are proven against; the real services may differ in
//! details the fakes do not model (pagination, permissions, eventual consistency).

use crate::providers::{gitlab::standard_webhook_signature, sign_sha256_header};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    GitHub,
    GitLab,
    Bitbucket,
}

/// One run (GitHub run, GitLab pipeline, Bitbucket pipeline).
#[derive(Clone, Debug)]
pub struct FakeRun {
    pub id: i64,
    pub uuid: String,
    pub job_id: String,
    pub env: String,
    pub git_ref: String,
    /// The trigger as received (JSON body, or the form as an object).
    pub trigger: Value,
    /// Index into `script`.
    pub step: usize,
    pub script: Vec<String>,
    pub cancelled: bool,
}

impl FakeRun {
    /// The provider's status words now (`completed/success`, `running`, `COMPLETED/SUCCESSFUL`).
    pub fn status(&self) -> String {
        self.script[self.step.min(self.script.len() - 1)].clone()
    }
}

#[derive(Debug)]
pub struct FakeState {
    pub kind: Kind,
    /// The credential API calls must carry.
    pub token: String,
    /// GitLab: the pipeline trigger token.
    pub trigger_token: String,
    /// Status sequence of new runs.
    pub script: Vec<String>,
    pub runs: Vec<FakeRun>,
    /// GitHub: whether the server knows `return_run_details` (older GHES does not).
    pub run_details: bool,
    /// Answer the next N API calls with a rate limit.
    pub rate_limit_next: u32,
    /// Answer the next N API calls with 503.
    pub outage_next: u32,
    /// Every API call: "METHOD path".
    pub calls: Vec<String>,
    pub cancels: Vec<String>,
    /// GitHub App: the installation token handed out, and JWTs seen.
    pub app_jwts: Vec<String>,
}

/// A running fake.
#[derive(Clone, Debug)]
pub struct Fake {
    /// API base URL (what `api_url` in the integration names).
    pub api_url: String,
    pub state: Arc<Mutex<FakeState>>,
}

type Shared = Arc<Mutex<FakeState>>;

fn gate(st: &mut FakeState, method: &str, path: &str, headers: &HeaderMap) -> Option<Response> {
    st.calls.push(format!("{method} {path}"));
    if st.rate_limit_next > 0 {
        st.rate_limit_next -= 1;
        let reset = chrono::Utc::now().timestamp() + 1;
        return Some(match st.kind {
            // GitHub: primary rate limit, 403 with x-ratelimit-* headers.
            Kind::GitHub => (
                StatusCode::FORBIDDEN,
                [
                    ("x-ratelimit-limit", "5000".to_owned()),
                    ("x-ratelimit-remaining", "0".to_owned()),
                    ("x-ratelimit-reset", reset.to_string()),
                ],
                Json(json!({"message": "API rate limit exceeded", "documentation_url": "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting"})),
            )
                .into_response(),
            // GitLab: 429 with RateLimit-* and Retry-After.
            Kind::GitLab => (
                StatusCode::TOO_MANY_REQUESTS,
                [
                    ("ratelimit-limit", "600".to_owned()),
                    ("ratelimit-remaining", "0".to_owned()),
                    ("ratelimit-reset", reset.to_string()),
                    ("retry-after", "1".to_owned()),
                ],
                "Retry later",
            )
                .into_response(),
            Kind::Bitbucket => (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1".to_owned())],
                Json(json!({"type": "error", "error": {"message": "Rate limit for this resource has been exceeded"}})),
            )
                .into_response(),
        });
    }
    if st.outage_next > 0 {
        st.outage_next -= 1;
        return Some((StatusCode::SERVICE_UNAVAILABLE, "upstream unavailable").into_response());
    }
    let auth = match st.kind {
        Kind::GitLab => headers
            .get("private-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        _ => headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned),
    };
    if auth.as_deref() != Some(st.token.as_str()) {
        return Some(match st.kind {
            Kind::GitHub => (
                StatusCode::UNAUTHORIZED,
                Json(json!({"message": "Bad credentials"})),
            )
                .into_response(),
            Kind::GitLab => (
                StatusCode::UNAUTHORIZED,
                Json(json!({"message": "401 Unauthorized"})),
            )
                .into_response(),
            Kind::Bitbucket => (
                StatusCode::UNAUTHORIZED,
                Json(json!({"type": "error", "error": {"message": "Unauthorized"}})),
            )
                .into_response(),
        });
    }
    None
}

fn new_run(st: &mut FakeState, job_id: &str, env: &str, git_ref: &str, trigger: Value) -> FakeRun {
    let n = st.runs.len() as i64 + 1;
    let run = FakeRun {
        id: 9000 + n,
        uuid: format!("{{{}}}", uuid::Uuid::new_v4()),
        job_id: job_id.to_owned(),
        env: env.to_owned(),
        git_ref: git_ref.to_owned(),
        trigger,
        step: 0,
        script: st.script.clone(),
        cancelled: false,
    };
    st.runs.push(run.clone());
    run
}

// ---------------------------------------------------------------------------------- GitHub

fn gh_run_json(r: &FakeRun, owner: &str, repo: &str) -> Value {
    let status = r.status();
    let (status, conclusion) = match status.split_once('/') {
        Some((s, c)) => (s.to_owned(), Value::String(c.to_owned())),
        None => (status, Value::Null),
    };
    json!({
        "id": r.id,
        "name": "Draven deploy",
        "display_title": format!("Deploy {} {} {}", r.env, r.git_ref, crate::providers::job_marker(&r.job_id)),
        "run_number": r.id - 9000,
        "event": "workflow_dispatch",
        "status": status,
        "conclusion": conclusion,
        "head_branch": r.git_ref,
        "html_url": format!("https://github.com/{owner}/{repo}/actions/runs/{}", r.id),
        "url": format!("https://api.github.com/repos/{owner}/{repo}/actions/runs/{}", r.id),
    })
}

async fn gh_dispatch(
    State(st): State<Shared>,
    Path((owner, repo, _wf)): Path<(String, String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut st = st.lock().unwrap();
    if let Some(r) = gate(&mut st, "POST", "dispatches", &headers) {
        return r;
    }
    let wants_details = body.get("return_run_details").is_some();
    if wants_details && !st.run_details {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"message": "Invalid request.\n\n\"return_run_details\" is not a permitted key.", "status": "422"})),
        )
            .into_response();
    }
    let inputs = &body["inputs"];
    let (Some(job), Some(env), Some(git_ref), Some(_), Some(_)) = (
        inputs["job_id"].as_str(),
        inputs["env"].as_str(),
        inputs["ref"].as_str(),
        inputs["callback_url"].as_str(),
        inputs["callback_token"].as_str(),
    ) else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"message": "Required input missing"})),
        )
            .into_response();
    };
    let run = new_run(&mut st, job, env, git_ref, body.clone());
    if wants_details {
        (
            StatusCode::OK,
            Json(json!({
                "workflow_run_id": run.id,
                "run_url": format!("https://api.github.com/repos/{owner}/{repo}/actions/runs/{}", run.id),
                "html_url": format!("https://github.com/{owner}/{repo}/actions/runs/{}", run.id),
            })),
        )
            .into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

async fn gh_get_run(
    State(st): State<Shared>,
    Path((owner, repo, id)): Path<(String, String, i64)>,
    headers: HeaderMap,
) -> Response {
    let mut st = st.lock().unwrap();
    if let Some(r) = gate(&mut st, "GET", "runs/{id}", &headers) {
        return r;
    }
    match st.runs.iter_mut().find(|r| r.id == id) {
        Some(r) => {
            if !r.cancelled {
                r.step += 1;
            }
            Json(gh_run_json(r, &owner, &repo)).into_response()
        }
        None => (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))).into_response(),
    }
}

async fn gh_list_runs(
    State(st): State<Shared>,
    Path((owner, repo, _wf)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut st = st.lock().unwrap();
    if let Some(r) = gate(&mut st, "GET", "workflow runs", &headers) {
        return r;
    }
    if q.get("event").map(String::as_str) != Some("workflow_dispatch") || !q.contains_key("created")
    {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"message": "expected event and created filters"})),
        )
            .into_response();
    }
    let runs: Vec<Value> = st
        .runs
        .iter()
        .rev()
        .map(|r| gh_run_json(r, &owner, &repo))
        .collect();
    Json(json!({"total_count": runs.len(), "workflow_runs": runs})).into_response()
}

async fn gh_cancel(
    State(st): State<Shared>,
    Path((_owner, _repo, id)): Path<(String, String, i64)>,
    headers: HeaderMap,
) -> Response {
    let mut st = st.lock().unwrap();
    if let Some(r) = gate(&mut st, "POST", "cancel", &headers) {
        return r;
    }
    st.cancels.push(id.to_string());
    let Some(run) = st.runs.iter_mut().find(|r| r.id == id) else {
        return (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))).into_response();
    };
    if run.status().starts_with("completed") {
        return (
            StatusCode::CONFLICT,
            Json(json!({"message": "Cannot cancel a workflow run that is completed."})),
        )
            .into_response();
    }
    run.cancelled = true;
    run.script = vec!["completed/cancelled".into()];
    run.step = 0;
    (StatusCode::ACCEPTED, Json(json!({}))).into_response()
}

async fn gh_app_token(
    State(st): State<Shared>,
    Path(_installation): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut st = st.lock().unwrap();
    let jwt = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    if jwt.split('.').count() != 3 {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "A JSON web token could not be decoded"})),
        )
            .into_response();
    }
    st.app_jwts.push(jwt);
    (
        StatusCode::CREATED,
        Json(json!({"token": st.token, "expires_at": "2099-01-01T00:00:00Z", "permissions": {"actions": "write"}})),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------- GitLab

fn gl_pipeline_json(r: &FakeRun, project: &str) -> Value {
    json!({
        "id": r.id,
        "iid": r.id - 9000,
        "project_id": 42,
        "status": r.status(),
        "source": "trigger",
        "ref": r.git_ref,
        "sha": "0000000000000000000000000000000000000000",
        "web_url": format!("https://gitlab.example.com/{project}/-/pipelines/{}", r.id),
    })
}

async fn gl_trigger(
    State(st): State<Shared>,
    Path(project): Path<String>,
    axum::extract::Form(form): axum::extract::Form<HashMap<String, String>>,
) -> Response {
    let mut st = st.lock().unwrap();
    st.calls.push("POST trigger/pipeline".into());
    if st.rate_limit_next > 0 || st.outage_next > 0 {
        // The gate answers rate limits and outages the same way for every endpoint.
        let token = st.token.clone();
        let mut h = HeaderMap::new();
        h.insert("private-token", token.parse().unwrap());
        if let Some(r) = gate(&mut st, "POST", "trigger/pipeline", &h) {
            return r;
        }
    }
    if form.get("token") != Some(&st.trigger_token) {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "404 Not Found"})),
        )
            .into_response();
    }
    let (Some(job), Some(env), Some(git_ref)) = (
        form.get("variables[JOB_ID]"),
        form.get("variables[ENV]"),
        form.get("ref"),
    ) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "ref is missing"})),
        )
            .into_response();
    };
    let trigger = json!(form);
    let run = new_run(
        &mut st,
        &job.clone(),
        &env.clone(),
        &git_ref.clone(),
        trigger,
    );
    (StatusCode::CREATED, Json(gl_pipeline_json(&run, &project))).into_response()
}

async fn gl_create_pipeline(
    State(st): State<Shared>,
    Path(project): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut st = st.lock().unwrap();
    if let Some(r) = gate(&mut st, "POST", "pipeline", &headers) {
        return r;
    }
    let var = |k: &str| {
        body["variables"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["key"] == k)
            .and_then(|v| v["value"].as_str())
            .map(str::to_owned)
    };
    let (Some(job), Some(env), Some(git_ref)) = (var("JOB_ID"), var("ENV"), body["ref"].as_str())
    else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"message": "ref is missing"})),
        )
            .into_response();
    };
    let run = new_run(&mut st, &job, &env, git_ref, body.clone());
    (StatusCode::CREATED, Json(gl_pipeline_json(&run, &project))).into_response()
}

async fn gl_get_pipeline(
    State(st): State<Shared>,
    Path((project, id)): Path<(String, i64)>,
    headers: HeaderMap,
) -> Response {
    let mut st = st.lock().unwrap();
    if let Some(r) = gate(&mut st, "GET", "pipelines/{id}", &headers) {
        return r;
    }
    match st.runs.iter_mut().find(|r| r.id == id) {
        Some(r) => {
            if !r.cancelled {
                r.step += 1;
            }
            Json(gl_pipeline_json(r, &project)).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "404 Not found"})),
        )
            .into_response(),
    }
}

async fn gl_cancel(
    State(st): State<Shared>,
    Path((project, id)): Path<(String, i64)>,
    headers: HeaderMap,
) -> Response {
    let mut st = st.lock().unwrap();
    if let Some(r) = gate(&mut st, "POST", "cancel", &headers) {
        return r;
    }
    st.cancels.push(id.to_string());
    match st.runs.iter_mut().find(|r| r.id == id) {
        Some(r) => {
            r.cancelled = true;
            r.script = vec!["canceled".into()];
            r.step = 0;
            Json(gl_pipeline_json(r, &project)).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "404 Not found"})),
        )
            .into_response(),
    }
}

// ------------------------------------------------------------------------------- Bitbucket

fn bb_pipeline_json(r: &FakeRun) -> Value {
    let status = r.status();
    let (name, result) = match status.split_once('/') {
        Some((n, res)) => (n.to_owned(), Some(res.to_owned())),
        None => (status, None),
    };
    let mut state =
        json!({"name": name, "type": format!("pipeline_state_{}", name.to_lowercase())});
    if let Some(res) = result {
        state["result"] = json!({"name": res, "type": format!("pipeline_state_completed_{}", res.to_lowercase())});
    }
    if name == "IN_PROGRESS" {
        state["stage"] = json!({"name": "RUNNING", "type": "pipeline_state_in_progress_running"});
    }
    json!({
        "type": "pipeline",
        "uuid": r.uuid,
        "build_number": r.id - 9000,
        "state": state,
        "target": r.trigger["target"],
        "created_on": "2026-01-01T00:00:00Z",
    })
}

async fn bb_create(
    State(st): State<Shared>,
    Path((_ws, _repo)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut st = st.lock().unwrap();
    if let Some(r) = gate(&mut st, "POST", "pipelines/", &headers) {
        return r;
    }
    let t = &body["target"];
    if t["type"] != "pipeline_ref_target"
        || t["selector"]["type"] != "custom"
        || t["ref_name"].as_str().is_none()
    {
        return (StatusCode::BAD_REQUEST, Json(json!({"type": "error", "error": {"message": "target must be a pipeline_ref_target with a custom selector"}}))).into_response();
    }
    let var = |k: &str| {
        body["variables"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["key"] == k)
            .and_then(|v| v["value"].as_str())
            .map(str::to_owned)
    };
    let (Some(job), Some(env)) = (var("JOB_ID"), var("ENV")) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"type": "error", "error": {"message": "variables missing"}})),
        )
            .into_response();
    };
    let git_ref = t["ref_name"].as_str().unwrap_or_default().to_owned();
    let run = new_run(&mut st, &job, &env, &git_ref, body.clone());
    (StatusCode::CREATED, Json(bb_pipeline_json(&run))).into_response()
}

async fn bb_get(
    State(st): State<Shared>,
    Path((_ws, _repo, uuid)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut st = st.lock().unwrap();
    if let Some(r) = gate(&mut st, "GET", "pipelines/{uuid}", &headers) {
        return r;
    }
    match st.runs.iter_mut().find(|r| r.uuid == uuid) {
        Some(r) => {
            if !r.cancelled {
                r.step += 1;
            }
            Json(bb_pipeline_json(r)).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"type": "error", "error": {"message": "Not found"}})),
        )
            .into_response(),
    }
}

async fn bb_stop(
    State(st): State<Shared>,
    Path((_ws, _repo, uuid)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut st = st.lock().unwrap();
    if let Some(r) = gate(&mut st, "POST", "stopPipeline", &headers) {
        return r;
    }
    st.cancels.push(uuid.clone());
    match st.runs.iter_mut().find(|r| r.uuid == uuid) {
        Some(r) if r.status().starts_with("COMPLETED") => (
            StatusCode::BAD_REQUEST,
            Json(json!({"type": "error", "error": {"message": "pipeline already completed"}})),
        )
            .into_response(),
        Some(r) => {
            r.cancelled = true;
            r.script = vec!["COMPLETED/STOPPED".into()];
            r.step = 0;
            StatusCode::NO_CONTENT.into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"type": "error", "error": {"message": "Not found"}})),
        )
            .into_response(),
    }
}

// ------------------------------------------------------------------------------ the servers

/// A webhook delivery as the provider sends it.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Delivery {
    /// POSTs it to `url`; the answer's status and body.
    pub async fn send(&self, url: &str) -> (u16, Value) {
        let mut req = reqwest::Client::new().post(url).body(self.body.clone());
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let resp = req.send().await.expect("webhook delivery");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

impl Fake {
    pub async fn start(kind: Kind, token: &str) -> Fake {
        let script: Vec<String> = match kind {
            Kind::GitHub => vec!["queued", "in_progress", "completed/success"],
            Kind::GitLab => vec!["created", "pending", "running", "success"],
            Kind::Bitbucket => vec!["PENDING", "IN_PROGRESS", "COMPLETED/SUCCESSFUL"],
        }
        .into_iter()
        .map(str::to_owned)
        .collect();
        let state = Arc::new(Mutex::new(FakeState {
            kind,
            token: token.to_owned(),
            trigger_token: format!("{token}-trigger"),
            script,
            runs: Vec::new(),
            run_details: true,
            rate_limit_next: 0,
            outage_next: 0,
            calls: Vec::new(),
            cancels: Vec::new(),
            app_jwts: Vec::new(),
        }));
        let router: Router<Shared> = match kind {
            Kind::GitHub => Router::new()
                .route(
                    "/repos/{owner}/{repo}/actions/workflows/{wf}/dispatches",
                    post(gh_dispatch),
                )
                .route(
                    "/repos/{owner}/{repo}/actions/workflows/{wf}/runs",
                    get(gh_list_runs),
                )
                .route("/repos/{owner}/{repo}/actions/runs/{id}", get(gh_get_run))
                .route(
                    "/repos/{owner}/{repo}/actions/runs/{id}/cancel",
                    post(gh_cancel),
                )
                .route("/app/installations/{id}/access_tokens", post(gh_app_token)),
            Kind::GitLab => Router::new()
                .route(
                    "/api/v4/projects/{project}/trigger/pipeline",
                    post(gl_trigger),
                )
                .route(
                    "/api/v4/projects/{project}/pipeline",
                    post(gl_create_pipeline),
                )
                .route(
                    "/api/v4/projects/{project}/pipelines/{id}",
                    get(gl_get_pipeline),
                )
                .route(
                    "/api/v4/projects/{project}/pipelines/{id}/cancel",
                    post(gl_cancel),
                ),
            Kind::Bitbucket => Router::new()
                .route("/2.0/repositories/{ws}/{repo}/pipelines/", post(bb_create))
                .route(
                    "/2.0/repositories/{ws}/{repo}/pipelines/{uuid}",
                    get(bb_get),
                )
                .route(
                    "/2.0/repositories/{ws}/{repo}/pipelines/{uuid}/stopPipeline",
                    post(bb_stop),
                ),
        };
        let app = router.with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake");
        let addr = listener.local_addr().expect("fake addr");
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake server");
        });
        let api_url = match kind {
            Kind::GitHub => format!("http://{addr}"),
            Kind::GitLab => format!("http://{addr}/api/v4"),
            Kind::Bitbucket => format!("http://{addr}/2.0"),
        };
        Fake { api_url, state }
    }

    pub fn run(&self, i: usize) -> FakeRun {
        self.state.lock().unwrap().runs[i].clone()
    }

    pub fn runs(&self) -> Vec<FakeRun> {
        self.state.lock().unwrap().runs.clone()
    }

    /// Sets run `i` to a status (in the provider's words).
    pub fn set_status(&self, i: usize, status: &str) {
        let mut st = self.state.lock().unwrap();
        let r = &mut st.runs[i];
        r.script = vec![status.to_owned()];
        r.step = 0;
    }

    pub fn with(&self, f: impl FnOnce(&mut FakeState)) {
        f(&mut self.state.lock().unwrap());
    }

    /// The webhook the provider sends for run `i`'s current state, signed with `secret`.
    pub fn delivery(&self, i: usize, secret: &str) -> Delivery {
        let (kind, run) = {
            let st = self.state.lock().unwrap();
            (st.kind, st.runs[i].clone())
        };
        let delivery_id = uuid::Uuid::new_v4().to_string();
        match kind {
            Kind::GitHub => {
                let run_json = gh_run_json(&run, "acme", "shop");
                let action = match run_json["status"].as_str() {
                    Some("completed") => "completed",
                    Some("in_progress") => "in_progress",
                    _ => "requested",
                };
                let body = serde_json::to_vec(&json!({
                    "action": action,
                    "workflow_run": run_json,
                    "workflow": {"id": 161335, "name": "Draven deploy", "path": ".github/workflows/draven-deploy.yml"},
                    "repository": {"id": 1296269, "full_name": "acme/shop"},
                    "sender": {"login": "octocat"},
                }))
                .unwrap();
                Delivery {
                    headers: vec![
                        ("content-type".into(), "application/json".into()),
                        ("user-agent".into(), "GitHub-Hookshot/044aadd".into()),
                        ("x-github-event".into(), "workflow_run".into()),
                        ("x-github-delivery".into(), delivery_id),
                        ("x-github-hook-id".into(), "292430182".into()),
                        (
                            "x-hub-signature-256".into(),
                            sign_sha256_header(secret.as_bytes(), &body),
                        ),
                    ],
                    body,
                }
            }
            Kind::GitLab => {
                let status = run.status();
                let body = serde_json::to_vec(&json!({
                    "object_kind": "pipeline",
                    "object_attributes": {
                        "id": run.id, "iid": run.id - 9000, "ref": run.git_ref, "tag": false,
                        "sha": "0000000000000000000000000000000000000000",
                        "status": status, "detailed_status": status, "source": "trigger",
                        "stages": ["deploy"], "created_at": "2026-01-01 00:00:00 UTC",
                        "url": format!("https://gitlab.example.com/acme/shop/-/pipelines/{}", run.id),
                        "variables": [{"key": "JOB_ID", "value": run.job_id}, {"key": "ENV", "value": run.env}],
                    },
                    "project": {"id": 42, "path_with_namespace": "acme/shop", "web_url": "https://gitlab.example.com/acme/shop"},
                    "builds": [],
                }))
                .unwrap();
                Delivery {
                    headers: vec![
                        ("content-type".into(), "application/json".into()),
                        ("user-agent".into(), "GitLab/18.0.0".into()),
                        ("x-gitlab-event".into(), "Pipeline Hook".into()),
                        ("x-gitlab-token".into(), secret.to_owned()),
                        (
                            "x-gitlab-event-uuid".into(),
                            uuid::Uuid::new_v4().to_string(),
                        ),
                        (
                            "x-gitlab-webhook-uuid".into(),
                            "7f2a5c0e-0000-4000-8000-000000000001".into(),
                        ),
                        ("idempotency-key".into(), delivery_id),
                    ],
                    body,
                }
            }
            Kind::Bitbucket => {
                let status = run.status();
                let state = match status.as_str() {
                    "COMPLETED/SUCCESSFUL" => "SUCCESSFUL",
                    "COMPLETED/STOPPED" => "STOPPED",
                    s if s.starts_with("COMPLETED") => "FAILED",
                    _ => "INPROGRESS",
                };
                let body = serde_json::to_vec(&json!({
                    "repository": {"type": "repository", "full_name": "acme/shop", "name": "shop"},
                    "actor": {"type": "user", "display_name": "Pipelines"},
                    "commit_status": {
                        "type": "build", "key": format!("pipeline-{}", run.uuid), "state": state,
                        "name": format!("Pipeline #{} for {}", run.id - 9000, run.git_ref),
                        "refname": run.git_ref,
                        "url": format!("https://bitbucket.org/acme/shop/addon/pipelines/home#!/results/{}", run.id - 9000),
                        "commit": {"type": "commit", "hash": "0000000000000000000000000000000000000000"},
                        "created_on": "2026-01-01T00:00:00Z", "updated_on": "2026-01-01T00:01:00Z",
                    },
                }))
                .unwrap();
                Delivery {
                    headers: vec![
                        ("content-type".into(), "application/json".into()),
                        ("user-agent".into(), "Bitbucket-Webhooks/2.0".into()),
                        ("x-event-key".into(), "repo:commit_status_updated".into()),
                        ("x-request-uuid".into(), delivery_id),
                        (
                            "x-hook-uuid".into(),
                            "{b9d5c0f2-0000-4000-8000-000000000002}".into(),
                        ),
                        (
                            "x-hub-signature".into(),
                            sign_sha256_header(secret.as_bytes(), &body),
                        ),
                    ],
                    body,
                }
            }
        }
    }

    /// GitLab with a signing token: the same delivery with `webhook-id`, `webhook-timestamp`
    /// and `webhook-signature` instead of `X-Gitlab-Token`.
    pub fn signed_gitlab_delivery(&self, i: usize, signing_secret: &str) -> Delivery {
        let mut d = self.delivery(i, "unused");
        d.headers.retain(|(k, _)| k != "x-gitlab-token");
        let id = d
            .headers
            .iter()
            .find(|(k, _)| k == "idempotency-key")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let ts = chrono::Utc::now().timestamp().to_string();
        let sig = standard_webhook_signature(signing_secret, &id, &ts, &d.body);
        d.headers.push(("webhook-id".into(), id));
        d.headers.push(("webhook-timestamp".into(), ts));
        d.headers.push(("webhook-signature".into(), sig));
        d
    }
}
