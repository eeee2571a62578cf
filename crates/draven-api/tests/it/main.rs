//! The API over real HTTP: the app is served on a random port and driven with reqwest, each
//! test on SQLite and on PostgreSQL.

use draven_api::{ApiConfig, Draining, Services};
use draven_store::crypto::MasterKey;
use draven_store::testing::TestDb;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;

const ADMIN: &str = "test-bootstrap-admin-token";

mod deploy;
mod functions;
mod observability;
mod providers;
mod registry;
mod runner;
mod ui;

pub(crate) struct App {
    base: String,
    http: reqwest::Client,
    db: TestDb,
    draining: Draining,
    blobs: draven_blob::testing::TestBlobs,
    /// The key secrets are sealed with (the dispatcher and notifier of a test need it).
    kek: Arc<MasterKey>,
    _git_cache: tempfile::TempDir,
    engine: draven_functions::Engine,
    _fn_logs: tempfile::TempDir,
}

pub(crate) struct Resp {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
    text: String,
}

impl Resp {
    /// Reads a response whole: status, headers, text, and the text as JSON when it is JSON.
    async fn read(resp: reqwest::Response) -> Resp {
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
            text,
        }
    }

    #[allow(dead_code)]
    fn ok(&self) -> &Self {
        assert!(self.status.is_success(), "{} {}", self.status, self.text);
        self
    }

    fn problem(&self) -> (&str, Option<&str>) {
        (
            self.body["code"].as_str().unwrap_or(""),
            self.body["field"].as_str(),
        )
    }
}

impl App {
    async fn start(db: TestDb) -> App {
        Self::start_with(
            db,
            ApiConfig {
                max_body_bytes: 64 * 1024,
                ..ApiConfig::default()
            },
        )
        .await
    }

    async fn start_with(db: TestDb, config: ApiConfig) -> App {
        Self::start_full(db, config, None).await
    }

    /// With a per-tenant invocation rate limit.
    async fn start_with_tenant_rate(db: TestDb, rate: draven_functions::spec::RateLimit) -> App {
        let config = ApiConfig {
            max_body_bytes: 64 * 1024,
            ..ApiConfig::default()
        };
        Self::start_full(db, config, Some(rate)).await
    }

    async fn start_full(
        db: TestDb,
        config: ApiConfig,
        tenant_rate: Option<draven_functions::spec::RateLimit>,
    ) -> App {
        db.bootstrap(Some(ADMIN)).await.unwrap();
        // SQLite runs with a local directory, PostgreSQL with S3: each test meets both
        // databases and both object stores.
        let blobs = match db.backend() {
            draven_store::Backend::Postgres => {
                draven_blob::testing::s3().unwrap_or_else(draven_blob::testing::local)
            }
            draven_store::Backend::Sqlite => draven_blob::testing::local(),
        };
        blobs.blobs.init_probe().await.unwrap();
        let draining = Draining::default();
        let git_cache = tempfile::tempdir().unwrap();
        let kek = Arc::new(MasterKey::parse(&MasterKey::generate_hex()).unwrap());
        let fn_logs = tempfile::tempdir().unwrap();
        let engine = functions::engine(&db, kek.clone(), fn_logs.path(), tenant_rate);
        let app = draven_api::app(Services {
            db: db.db.clone(),
            blobs: blobs.blobs.clone(),
            kek: kek.clone(),
            config,
            draining: draining.clone(),
            git_cache: git_cache.path().to_owned(),
            functions: Some(engine.clone()),
            function_logs: Some(fn_logs.path().to_owned()),
        })
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        App {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            db,
            draining,
            blobs,
            kek,
            _git_cache: git_cache,
            engine,
            _fn_logs: fn_logs,
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Resp::read(req.send().await.unwrap()).await
    }

    /// A request with a raw body and content type (artifact payloads).
    async fn raw(
        &self,
        method: Method,
        path: &str,
        token: &str,
        content_type: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Resp::read(req.send().await.unwrap()).await
    }

    async fn get(&self, path: &str, token: &str) -> Resp {
        self.send(Method::GET, path, Some(token), None, &[]).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.send(Method::POST, path, Some(token), Some(body), &[])
            .await
    }

    /// A user with one grant and a token.
    async fn user_with(
        &self,
        name: &str,
        role: &str,
        project: Option<&str>,
        env: Option<&str>,
    ) -> String {
        let r = self
            .post("/api/v1/users", ADMIN, json!({"username": name}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let r = self
            .post(
                "/api/v1/grants",
                ADMIN,
                json!({"user": name, "role": role, "project": project, "environment": env}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let r = self
            .post(
                &format!("/api/v1/users/{name}/tokens"),
                ADMIN,
                json!({"name": "test"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["token"].as_str().unwrap().to_owned()
    }

    async fn audit(&self, query: &str) -> Vec<Value> {
        let r = self.get(&format!("/api/v1/audit?{query}"), ADMIN).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.body["items"].as_array().unwrap().clone()
    }
}

/// Fills `{param}` segments so a template becomes a requestable path.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|s| if s.starts_with('{') { "x" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

async fn every_route_declares_a_rule_and_requires_a_token(db: TestDb) {
    let app = App::start(db).await;
    let doc = app
        .send(Method::GET, "/api/v1/openapi.json", None, None, &[])
        .await;
    assert_eq!(doc.status, StatusCode::OK);
    assert_eq!(doc.body["openapi"], "3.1.0");
    let mut checked = 0;
    for (path, item) in doc.body["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let security = op["security"]
                .as_array()
                .unwrap_or_else(|| panic!("{method} {path} declares no access rule"));
            let public = security.iter().any(|r| r.as_object().unwrap().is_empty());
            if public {
                continue;
            }
            let m: Method = method.to_uppercase().parse().unwrap();
            let r = app
                .send(m.clone(), &concrete(path), None, Some(json!({})), &[])
                .await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{m} {path} without a token: {}",
                r.text
            );
            assert_eq!(r.headers["content-type"], "application/problem+json");
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} protected operations");
    // Each refusal is in the audit trail.
    let denied = app
        .audit("outcome=denied&action=auth.authenticate&limit=500&all_tenants=true")
        .await;
    assert_eq!(denied.len(), checked);
    assert_eq!(denied[0]["actor"], "anonymous");
}

async fn bad_tokens_are_refused(db: TestDb) {
    let app = App::start(db).await;
    for header in ["Bearer nope-not-a-token", "Basic dXNlcjpwYXNz", "Bearer "] {
        let r = app
            .send(
                Method::GET,
                "/api/v1/me",
                None,
                None,
                &[("authorization", header)],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{header}");
        assert_eq!(r.problem().0, "unauthenticated");
        assert_eq!(r.body["type"], "urn:draven:problem:unauthenticated");
        assert!(r.headers.contains_key("www-authenticate"));
    }
    let me = app.get("/api/v1/me", ADMIN).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["username"], "admin");
}

async fn roles_decide_and_denials_are_audited(db: TestDb) {
    let app = App::start(db).await;
    let viewer = app.user_with("vera", "viewer", None, None).await;
    assert_eq!(
        app.get("/api/v1/environments", &viewer).await.status,
        StatusCode::OK
    );
    let r = app
        .post("/api/v1/environments", &viewer, json!({"name": "prod"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(r.problem().0, "forbidden");
    let denied = app.audit("outcome=denied&actor=user:vera").await;
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["target"], "route:POST /api/v1/environments");
    assert!(denied[0]["reason"].as_str().unwrap().contains("Administer"));
    // Audit, secrets writes and tenant management are not for viewers either.
    assert_eq!(
        app.get("/api/v1/audit", &viewer).await.status,
        StatusCode::FORBIDDEN
    );
    let r = app
        .send(
            Method::PUT,
            "/api/v1/secrets/db",
            Some(&viewer),
            Some(json!({"value": "x"})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // A project-scoped grant gives no tenant-wide rights.
    let scoped = app.user_with("sam", "admin", Some("shop"), None).await;
    assert_eq!(
        app.post("/api/v1/environments", &scoped, json!({"name": "x1"}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // A tenant admin is not a system admin.
    let admin2 = app.user_with("ada", "admin", None, None).await;
    assert_eq!(
        app.post("/api/v1/environments", &admin2, json!({"name": "x2"}))
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(
        app.get("/api/v1/tenants", &admin2).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get("/api/v1/tenants", ADMIN).await.status,
        StatusCode::OK
    );
    // A user without any grant is authenticated but may read nothing.
    app.post("/api/v1/users", ADMIN, json!({"username": "nobody"}))
        .await;
    let t = app
        .post("/api/v1/users/nobody/tokens", ADMIN, json!({"name": "t"}))
        .await
        .body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.get("/api/v1/me", &t).await.status, StatusCode::OK);
    assert_eq!(
        app.get("/api/v1/environments", &t).await.status,
        StatusCode::FORBIDDEN
    );
}

async fn other_tenants_answer_404(db: TestDb) {
    let app = App::start(db).await;
    let created = app
        .post(
            "/api/v1/tenants",
            ADMIN,
            json!({"name": "beta", "admin_username": "bea"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let beta = created.body["admin_token"].as_str().unwrap().to_owned();
    assert_eq!(
        app.post("/api/v1/tenants", ADMIN, json!({"name": "beta"}))
            .await
            .status,
        StatusCode::CONFLICT
    );
    // Things of tenant "default".
    app.post("/api/v1/environments", ADMIN, json!({"name": "prod"}))
        .await;
    app.send(
        Method::PUT,
        "/api/v1/secrets/db",
        Some(ADMIN),
        Some(json!({"value": "v"})),
        &[],
    )
    .await;
    let me = app.get("/api/v1/me", ADMIN).await;
    let admin_id = me.body["user_id"].as_str().unwrap();
    let tokens = app.get("/api/v1/me/tokens", ADMIN).await;
    let token_id = tokens.body["items"][0]["id"].as_str().unwrap();
    let grants = app.get("/api/v1/grants", ADMIN).await;
    let grant_id = grants.body[0]["id"].as_str().unwrap();
    for (method, path) in [
        (Method::GET, format!("/api/v1/users/{admin_id}")),
        (Method::GET, "/api/v1/users/admin".to_string()),
        (Method::GET, "/api/v1/environments/prod".to_string()),
        (Method::GET, "/api/v1/secrets/db".to_string()),
        (Method::DELETE, format!("/api/v1/tokens/{token_id}")),
        (Method::DELETE, format!("/api/v1/grants/{grant_id}")),
        (Method::DELETE, "/api/v1/secrets/db".to_string()),
    ] {
        let r = app
            .send(method.clone(), &path, Some(&beta), None, &[])
            .await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {}",
            r.text
        );
        assert_eq!(r.problem().0, "not-found");
    }
    let r = app
        .post(
            "/api/v1/grants",
            &beta,
            json!({"user": admin_id, "role": "admin"}),
        )
        .await;
    assert_eq!(
        (r.status, r.problem().1),
        (StatusCode::NOT_FOUND, Some("user"))
    );
    // Lists show only the tenant's own.
    assert!(app
        .get("/api/v1/environments", &beta)
        .await
        .body
        .as_array()
        .unwrap()
        .is_empty());
    let users = app.get("/api/v1/users", &beta).await;
    assert_eq!(users.body["items"].as_array().unwrap().len(), 1);
    // And the default tenant's things are intact.
    assert_eq!(
        app.get("/api/v1/environments/prod", ADMIN).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.get(&format!("/api/v1/users/{admin_id}"), ADMIN)
            .await
            .status,
        StatusCode::OK
    );
}

async fn tokens_lifecycle(db: TestDb) {
    let app = App::start(db).await;
    app.post("/api/v1/users", ADMIN, json!({"username": "ci-bot"}))
        .await;
    let r = app
        .post(
            "/api/v1/users/ci-bot/tokens",
            ADMIN,
            json!({"name": "pipeline", "scopes": ["invoke"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let token = r.body["token"].as_str().unwrap().to_owned();
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert!(r.headers["location"].to_str().unwrap().ends_with(&id));
    // Shown once: lists carry metadata only.
    let list = app.get("/api/v1/tokens?user=ci-bot", ADMIN).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    assert!(!list.text.contains(&token));
    assert_eq!(list.body["items"][0]["prefix"], &token[..8]);
    // The bot has no grant yet; give it editor, and its invoke-scoped token still cannot read.
    app.post(
        "/api/v1/grants",
        ADMIN,
        json!({"user": "ci-bot", "role": "editor"}),
    )
    .await;
    let me = app.get("/api/v1/me", &token).await;
    assert_eq!(me.body["token_scopes"], json!(["invoke"]));
    assert_eq!(
        app.get("/api/v1/environments", &token).await.status,
        StatusCode::FORBIDDEN
    );
    // A narrowed token cannot mint a wider one, but can mint an equally narrow one.
    assert_eq!(
        app.post("/api/v1/me/tokens", &token, json!({"name": "wider"}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let r = app
        .post(
            "/api/v1/me/tokens",
            &token,
            json!({"name": "same", "scopes": ["invoke"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // Bad scopes and expiries name the field.
    let r = app
        .post(
            "/api/v1/me/tokens",
            ADMIN,
            json!({"name": "x", "scopes": ["read", "fly"]}),
        )
        .await;
    assert_eq!(
        (r.status, r.problem()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            ("validation-failed", Some("scopes/1"))
        )
    );
    let r = app
        .post(
            "/api/v1/me/tokens",
            ADMIN,
            json!({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(r.problem().1, Some("expires_at"));
    let r = app
        .post(
            "/api/v1/me/tokens",
            ADMIN,
            json!({"name": "x", "expires_at": "tomorrow"}),
        )
        .await;
    assert_eq!(r.problem().1, Some("expires_at"));
    // Revocation is immediate.
    let r = app
        .send(
            Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            Some(ADMIN),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/api/v1/me", &token).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Disabling a user stops their tokens; you cannot disable yourself.
    let vic = app.user_with("vic", "viewer", None, None).await;
    let r = app
        .send(
            Method::PATCH,
            "/api/v1/users/vic",
            Some(ADMIN),
            Some(json!({"disabled": true})),
            &[],
        )
        .await;
    assert_eq!(r.body["disabled"], true);
    assert_eq!(
        app.get("/api/v1/me", &vic).await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = app
        .send(
            Method::PATCH,
            "/api/v1/users/admin",
            Some(ADMIN),
            Some(json!({"disabled": true})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // The own-token route refuses someone else's token.
    let other = app.get("/api/v1/tokens?user=vic", ADMIN).await.body["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .send(
            Method::DELETE,
            &format!("/api/v1/me/tokens/{other}"),
            Some(ADMIN),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

async fn bad_input_gets_clear_problems(db: TestDb) {
    let app = App::start(db).await;
    let raw = |body: &'static str, ct: Option<&'static str>| {
        let mut req = app
            .http
            .post(format!("{}/api/v1/environments", app.base))
            .bearer_auth(ADMIN)
            .body(body);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        req
    };
    let check = |resp: reqwest::Response,
                 status: StatusCode,
                 code: &'static str,
                 field: Option<&'static str>| async move {
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let s = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(s, status, "{body}");
        assert_eq!(body["code"], code, "{body}");
        assert_eq!(body["field"].as_str(), field, "{body}");
        assert_eq!(body["status"], status.as_u16());
        assert!(body["request_id"].as_str().is_some());
        body
    };
    let b = check(
        raw("{\"name\": ", Some("application/json"))
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "malformed-body",
        None,
    )
    .await;
    assert!(b["detail"].as_str().unwrap().contains("line 1"));
    check(
        raw("{\"name\": 7}", Some("application/json"))
            .send()
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-failed",
        Some("/name"),
    )
    .await;
    check(
        raw("{\"name\": \"a\", \"colour\": 1}", Some("application/json"))
            .send()
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-failed",
        Some("/colour"),
    )
    .await;
    check(
        raw("{}", Some("application/json")).send().await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-failed",
        Some("/name"),
    )
    .await;
    check(
        raw("{\"name\": \"Not Valid\"}", Some("application/json"))
            .send()
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-failed",
        Some("name"),
    )
    .await;
    check(
        raw("{\"name\": \"a\"}", None).send().await.unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
        None,
    )
    .await;
    check(
        raw("{\"name\": \"a\"}", Some("text/plain"))
            .send()
            .await
            .unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
        None,
    )
    .await;
    let big = format!(
        "{{\"name\": \"a\", \"description\": \"{}\"}}",
        "x".repeat(100 * 1024)
    );
    let resp = app
        .http
        .post(format!("{}/api/v1/environments", app.base))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    check(
        resp,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
        None,
    )
    .await;
    // Same with an Idempotency-Key, where the body is read before the handler.
    let resp = app
        .http
        .post(format!("{}/api/v1/environments", app.base))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .header("idempotency-key", "k")
        .body(big)
        .send()
        .await
        .unwrap();
    check(
        resp,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
        None,
    )
    .await;
    // Query parameters.
    let r = app.get("/api/v1/users?limit=abc", ADMIN).await;
    assert_eq!(
        (r.status, r.problem()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            ("validation-failed", Some("query"))
        )
    );
    let r = app.get("/api/v1/users?limit=1000", ADMIN).await;
    assert_eq!(r.problem(), ("validation-failed", Some("limit")));
    let r = app.get("/api/v1/users?colour=red", ADMIN).await;
    assert_eq!(r.problem(), ("validation-failed", Some("colour")));
    let r = app.get("/api/v1/users?cursor=%%%", ADMIN).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app.get("/api/v1/audit?since=yesterday", ADMIN).await;
    assert_eq!(r.problem(), ("validation-failed", Some("since")));
    let r = app.get("/api/v1/audit?outcome=maybe", ADMIN).await;
    assert_eq!(r.problem(), ("validation-failed", Some("outcome")));
    // Unknown routes and methods.
    let r = app.get("/api/v1/nothing-here", ADMIN).await;
    assert_eq!(
        (r.status, r.problem().0),
        (StatusCode::NOT_FOUND, "not-found")
    );
    let r = app
        .send(
            Method::PUT,
            "/api/v1/users",
            Some(ADMIN),
            Some(json!({})),
            &[],
        )
        .await;
    assert_eq!(
        (r.status, r.problem().0),
        (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed")
    );
    assert_eq!(r.headers["allow"], "GET, POST");
    // Nothing above created anything.
    assert!(app
        .get("/api/v1/environments", ADMIN)
        .await
        .body
        .as_array()
        .unwrap()
        .is_empty());
}

async fn idempotency_keys_replay_creating_posts(db: TestDb) {
    let app = App::start(db).await;
    let body = json!({"username": "ivy", "display_name": "Ivy"});
    let first = app
        .send(
            Method::POST,
            "/api/v1/users",
            Some(ADMIN),
            Some(body.clone()),
            &[("idempotency-key", "create-ivy")],
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(!first.headers.contains_key("idempotent-replayed"));
    let again = app
        .send(
            Method::POST,
            "/api/v1/users",
            Some(ADMIN),
            Some(body.clone()),
            &[("idempotency-key", "create-ivy")],
        )
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers["location"], first.headers["location"]);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    let other = app
        .send(
            Method::POST,
            "/api/v1/users",
            Some(ADMIN),
            Some(json!({"username": "ivo"})),
            &[("idempotency-key", "create-ivy")],
        )
        .await;
    assert_eq!(
        (other.status, other.problem().0),
        (StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused")
    );
    let users = app.get("/api/v1/users", ADMIN).await;
    let names: Vec<&str> = users.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["admin", "ivy"]);
    // A 4xx is remembered too (the same request would fail the same way).
    let dup = app
        .send(
            Method::POST,
            "/api/v1/users",
            Some(ADMIN),
            Some(json!({"username": "ivy"})),
            &[("idempotency-key", "dup")],
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    let dup2 = app
        .send(
            Method::POST,
            "/api/v1/users",
            Some(ADMIN),
            Some(json!({"username": "ivy"})),
            &[("idempotency-key", "dup")],
        )
        .await;
    assert_eq!(
        (dup2.status, &dup2.headers["idempotent-replayed"]),
        (StatusCode::CONFLICT, &"true".parse().unwrap())
    );
    // Keys are per caller: another user's identical key is independent.
    let other_admin = app.user_with("oda", "admin", None, None).await;
    let r = app
        .send(
            Method::POST,
            "/api/v1/users",
            Some(&other_admin),
            Some(json!({"username": "olaf"})),
            &[("idempotency-key", "create-ivy")],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

async fn etags_guard_environment_changes(db: TestDb) {
    let app = App::start(db).await;
    let r = app
        .post(
            "/api/v1/environments",
            ADMIN,
            json!({"name": "prod", "protected": true}),
        )
        .await;
    assert_eq!(r.headers["etag"], "\"1\"");
    let r = app
        .send(
            Method::PATCH,
            "/api/v1/environments/prod",
            Some(ADMIN),
            Some(json!({"description": "Production"})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(
        (r.status, &r.headers["etag"]),
        (StatusCode::OK, &"\"2\"".parse().unwrap())
    );
    let r = app
        .send(
            Method::PATCH,
            "/api/v1/environments/prod",
            Some(ADMIN),
            Some(json!({"protected": false})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(
        (r.status, r.problem().0),
        (StatusCode::PRECONDITION_FAILED, "precondition-failed")
    );
    let r = app
        .send(
            Method::DELETE,
            "/api/v1/environments/prod",
            Some(ADMIN),
            None,
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    let got = app.get("/api/v1/environments/prod", ADMIN).await;
    assert_eq!(
        (
            got.body["protected"].as_bool(),
            got.body["description"].as_str()
        ),
        (Some(true), Some("Production"))
    );
    let r = app
        .send(
            Method::DELETE,
            "/api/v1/environments/prod",
            Some(ADMIN),
            None,
            &[("if-match", "\"2\"")],
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

async fn secrets_are_write_only(db: TestDb) {
    let app = App::start(db).await;
    let value = "pa55-word-never-to-be-seen";
    let r = app
        .send(
            Method::PUT,
            "/api/v1/secrets/github-token",
            Some(ADMIN),
            Some(json!({"value": value, "description": "CI"})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!(!r.text.contains(value));
    let r = app
        .send(
            Method::PUT,
            "/api/v1/secrets/github-token",
            Some(ADMIN),
            Some(json!({"value": "v2"})),
            &[],
        )
        .await;
    assert_eq!(
        (r.status, r.body["version"].as_i64()),
        (StatusCode::OK, Some(2))
    );
    for path in ["/api/v1/secrets/github-token", "/api/v1/secrets"] {
        let r = app.get(path, ADMIN).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(
            !r.text.contains(value) && !r.text.contains("v2\""),
            "{}",
            r.text
        );
        assert!(!r.text.contains("\"value\""));
    }
    let trail = app
        .send(Method::GET, "/api/v1/audit/export", Some(ADMIN), None, &[])
        .await;
    assert!(trail.text.contains("secret.create") && !trail.text.contains(value));
    let r = app
        .send(
            Method::PUT,
            "/api/v1/secrets/Bad Name",
            Some(ADMIN),
            Some(json!({"value": "x"})),
            &[],
        )
        .await;
    assert_eq!(r.problem(), ("validation-failed", Some("name")));
}

async fn audit_trail_api(db: TestDb) {
    let app = App::start(db).await;
    for env in ["a", "b", "c"] {
        app.post("/api/v1/environments", ADMIN, json!({"name": env}))
            .await;
    }
    let r = app
        .send(
            Method::GET,
            "/api/v1/me",
            None,
            None,
            &[("x-request-id", "my-req-42")],
        )
        .await;
    assert_eq!(r.headers["x-request-id"], "my-req-42");
    let envs = app.audit("action=environment.create").await;
    assert_eq!(envs.len(), 3);
    assert_eq!(envs[0]["target"], "environment:c");
    assert_eq!(envs[0]["actor"], "user:admin");
    assert_eq!(envs[0]["client_addr"], "127.0.0.1");
    assert!(envs[0]["request_id"].as_str().is_some());
    let by_prefix = app.audit("action=environment.").await;
    assert_eq!(by_prefix.len(), 3);
    // Unauthenticated refusals belong to no tenant: only the system-wide view shows them.
    assert!(app.audit("outcome=denied").await.is_empty());
    let denied = app.audit("outcome=denied&all_tenants=true").await;
    assert_eq!(denied[0]["request_id"], "my-req-42");
    let tenant_admin = app.user_with("tia", "admin", None, None).await;
    let r = app
        .get("/api/v1/audit?all_tenants=true", &tenant_admin)
        .await;
    assert_eq!(r.problem(), ("forbidden", Some("all_tenants")));
    // Paging.
    let mut seen = vec![];
    let mut cursor = String::new();
    loop {
        let r = app
            .get(&format!("/api/v1/audit?limit=2{cursor}"), ADMIN)
            .await;
        seen.extend(
            r.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["seq"].as_i64().unwrap()),
        );
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted);
    let export = app
        .send(Method::GET, "/api/v1/audit/export", Some(ADMIN), None, &[])
        .await;
    assert_eq!(export.headers["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = export
        .text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), seen.len());
    assert!(lines
        .windows(2)
        .all(|w| w[0]["hash"] == w[1]["prev_hash"] || w[1]["seq"].as_i64() > w[0]["seq"].as_i64()));
}

async fn last_admin_grant_is_kept(db: TestDb) {
    let app = App::start(db).await;
    let grants = app.get("/api/v1/grants?user=admin", ADMIN).await;
    let id = grants.body[0]["id"].as_str().unwrap();
    let r = app
        .send(
            Method::DELETE,
            &format!("/api/v1/grants/{id}"),
            Some(ADMIN),
            None,
            &[],
        )
        .await;
    assert_eq!(
        (r.status, r.problem().0),
        (StatusCode::CONFLICT, "conflict")
    );
    let r = app
        .post(
            "/api/v1/grants",
            ADMIN,
            json!({"user": "admin", "role": "boss"}),
        )
        .await;
    assert_eq!(r.problem(), ("validation-failed", Some("role")));
}

async fn health_readiness_metrics_docs(db: TestDb) {
    let app = App::start(db).await;
    let r = app.send(Method::GET, "/readyz", None, None, &[]).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (StatusCode::OK, Some("ready"))
    );
    app.get("/api/v1/users/admin", ADMIN).await;
    app.get("/api/v1/users/someone-else", ADMIN).await;
    for path in ["/metrics", "/actuator/prometheus"] {
        let m = app.send(Method::GET, path, None, None, &[]).await;
        assert_eq!(m.status, StatusCode::OK);
        assert!(m.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        // Real histogram buckets, labelled by route template (not the raw path).
        assert!(m.text.contains("draven_http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/v1/users/{user}\",le=\"0.005\"}"), "{}", m.text);
        assert!(m.text.contains("draven_http_requests_total{method=\"GET\",route=\"/api/v1/users/{user}\",status=\"404\"}"));
        assert!(!m.text.contains("someone-else"));
    }
    let docs = app.send(Method::GET, "/api/docs", None, None, &[]).await;
    assert_eq!(docs.status, StatusCode::OK);
    assert!(docs.text.contains("/api/v1/users/{user}") && docs.text.contains("tenant:admin"));
    app.draining.start();
    let r = app.send(Method::GET, "/readyz", None, None, &[]).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("draining"))
    );
    assert_eq!(
        app.send(Method::GET, "/healthz", None, None, &[])
            .await
            .status,
        StatusCode::OK
    );
}

draven_store::on_both_backends!(
    every_route_declares_a_rule_and_requires_a_token,
    bad_tokens_are_refused,
    roles_decide_and_denials_are_audited,
    other_tenants_answer_404,
    tokens_lifecycle,
    bad_input_gets_clear_problems,
    idempotency_keys_replay_creating_posts,
    etags_guard_environment_changes,
    secrets_are_write_only,
    audit_trail_api,
    last_admin_grant_is_kept,
    health_readiness_metrics_docs,
);

/// `traceparent` goes out on calls Draven makes while serving a request: same trace, new span.
#[tokio::test]
async fn trace_context_is_propagated_on_outgoing_http() {
    use axum::routing::get;
    let echo = axum::Router::new().route(
        "/",
        get(|headers: axum::http::HeaderMap| async move {
            headers
                .get("traceparent")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, echo).await.unwrap() });
    let incoming =
        draven_core::TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .unwrap();
    let sent = draven_api::telemetry::TRACE
        .scope(incoming, async {
            let b = reqwest::Client::new().get(format!("http://{addr}/"));
            draven_api::telemetry::outgoing::traced(b)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
        .await;
    let out = draven_core::TraceContext::parse(&sent).expect("a valid traceparent was sent");
    assert_eq!(out.trace_id, incoming.trace_id);
    assert_ne!(out.span_id, incoming.span_id);
}
