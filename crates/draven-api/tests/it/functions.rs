//! Functions over HTTP with real function processes (the examples, the watchdog, a shell
//! script): definitions, sync and async invocation, errors, idempotency, callbacks, retries,
//! the dead-letter queue, bounded queues under load, crashes, routing and logs.

use super::{App, Resp, ADMIN};
use draven_functions::executor::local::{LocalConfig, LocalExecutor};
use draven_functions::executor::Executor;
use draven_store::testing::TestDb;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// The Kubernetes executor against a fake API server (its kubelet runs the images below as
/// local processes): `example/wc:1` counts the payload's words, `example/boxed:1` answers a
/// fixed text, `example/oom:1` is OOM-killed, `example/private:1` cannot be pulled.
fn kubernetes() -> Arc<dyn Executor> {
    use draven_kube::fake::{FakeCluster, Image};
    let fake = FakeCluster::spawn();
    let decode = "printf %s \"$DRAVEN_PAYLOAD\" | base64 -d";
    fake.image(
        "example/wc:1",
        Image::run(&[
            "/bin/sh",
            "-c",
            &format!("{decode} | /bin/sh {}", wc_script()),
        ]),
    );
    fake.image(
        "example/boxed:1",
        Image::run(&["/bin/sh", "-c", "printf 'ran on the kubernetes executor'"]),
    );
    fake.image("example/oom:1", Image::OomKilled);
    fake.image("example/private:1", Image::PullError);
    let client = fake.client("functions");
    // The fake serves on this test's runtime and goes with it.
    std::mem::forget(fake);
    Arc::new(draven_kube::KubeExecutor::new(
        client,
        draven_kube::KubeConfig::new("functions"),
    ))
}

pub(crate) fn engine(
    db: &TestDb,
    kek: Arc<dyn draven_store::crypto::KeyEncryptionKey>,
    logs: &std::path::Path,
    tenant_rate: Option<draven_functions::spec::RateLimit>,
) -> draven_functions::Engine {
    let config = draven_functions::EngineConfig {
        tenant_rate,
        callback_allow: draven_functions::callback::AllowList::parse("127.0.0.1/32").unwrap(),
        callback_backoff: Duration::from_millis(20),
        callback_attempts: 3,
        limits: draven_functions::spec::SpecLimits {
            max_payload_bytes: 64 * 1024,
            ..Default::default()
        },
        ..Default::default()
    };
    draven_functions::Engine::new(
        db.db.clone(),
        kek,
        vec![
            Arc::new(LocalExecutor::new(LocalConfig::new(logs.to_owned()))),
            kubernetes(),
        ],
        config,
    )
}

fn hello() -> String {
    draven_functions::testing::binary("draven-examples", "hello")
        .display()
        .to_string()
}

fn report() -> String {
    draven_functions::testing::binary("draven-examples", "report")
        .display()
        .to_string()
}

fn wc_script() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/functions/wc.sh")
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

impl App {
    async fn define(&self, name: &str, spec: Value) -> Resp {
        self.send(
            Method::PUT,
            &format!("/api/v1/functions/{name}"),
            Some(ADMIN),
            Some(spec),
            &[],
        )
        .await
    }

    async fn invoke(&self, name: &str, token: &str, body: Value, headers: &[(&str, &str)]) -> Resp {
        self.raw(
            Method::POST,
            &format!("/api/v1/functions/{name}/invoke"),
            token,
            "application/json",
            body.to_string().into_bytes(),
            headers,
        )
        .await
    }

    async fn invoke_async(
        &self,
        name: &str,
        token: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> Resp {
        self.raw(
            Method::POST,
            &format!("/api/v1/functions/{name}/invoke-async"),
            token,
            "application/json",
            body.to_string().into_bytes(),
            headers,
        )
        .await
    }

    async fn finished(&self, id: &str) -> Value {
        let r = self
            .get(&format!("/api/v1/invocations/{id}?wait=30"), ADMIN)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.body
    }
}

fn pool(command: &str, extra: Value) -> Value {
    let mut spec = json!({"runtime": {"kind": "process", "command": command}});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            spec[k] = v;
        }
    }
    spec
}

async fn definitions_are_validated_and_versioned(db: TestDb) {
    let app = App::start(db).await;
    let r = app
        .define(
            "hello",
            json!({"runtime": {"kind": "process", "command": ""}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.problem(), ("validation-failed", Some("runtime.command")));
    let r = app
        .define(
            "hello",
            pool(
                &hello(),
                json!({"secrets": [{"env": "TOKEN", "secret": "missing"}]}),
            ),
        )
        .await;
    assert_eq!(r.problem(), ("validation-failed", Some("secrets")));
    let r = app.define("Bad Name", pool(&hello(), json!({}))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app.define("hello", pool(&hello(), json!({}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.headers["etag"], "\"1\"");
    assert_eq!(r.body["spec"]["retries"], 3, "defaults are filled in");
    let r = app
        .send(
            Method::PUT,
            "/api/v1/functions/hello",
            Some(ADMIN),
            Some(pool(&hello(), json!({"timeout_ms": 5000}))),
            &[("if-match", "\"7\"")],
        )
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{}", r.text);
    let r = app
        .send(
            Method::PUT,
            "/api/v1/functions/hello",
            Some(ADMIN),
            Some(pool(&hello(), json!({"timeout_ms": 5000}))),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["revision"], 2);
    let r = app.get("/api/v1/functions", ADMIN).await;
    assert_eq!(r.body.as_array().unwrap().len(), 1);
    let r = app
        .send(
            Method::DELETE,
            "/api/v1/functions/hello",
            Some(ADMIN),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app.invoke("hello", ADMIN, json!({}), &[]).await;
    assert_eq!(r.problem().0, "not-found");
    let trail = app.audit("action=function.create").await;
    assert_eq!(trail.len(), 1);
}

async fn sync_invocations_reach_a_warm_process(db: TestDb) {
    let app = App::start(db).await;
    app.define("hello", pool(&hello(), json!({}))).await.ok();
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = app
        .invoke(
            "hello",
            ADMIN,
            json!({"name": "Ada"}),
            &[("traceparent", trace)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["greeting"], "Hello, Ada!");
    let id = r.headers["x-invocation-id"].to_str().unwrap().to_owned();
    let inv = app.finished(&id).await;
    assert_eq!(inv["state"], "succeeded");
    assert_eq!(inv["executor"], "local");
    assert_eq!(inv["mode"], "sync");
    assert_eq!(inv["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(inv["cold_start_ms"].as_f64().unwrap() > 0.0, "{inv}");
    // The second call reuses the instance.
    let r = app.invoke("hello", ADMIN, json!({"name": "Bo"}), &[]).await;
    let inv = app
        .finished(r.headers["x-invocation-id"].to_str().unwrap())
        .await;
    assert!(inv.get("cold_start_ms").is_none(), "{inv}");
    // The function logged with the invocation id and the trace id.
    let logs = app
        .get(
            &format!("/api/v1/functions/hello/logs?invocation={id}"),
            ADMIN,
        )
        .await;
    let line: Value = serde_json::from_str(logs.text.lines().next().unwrap()).unwrap();
    assert_eq!(line["invocation_id"], id.as_str());
    assert_eq!(line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(line["function"], "hello");
    let live = app.get("/api/v1/functions/hello", ADMIN).await;
    assert_eq!(
        live.body["live"]["instances"]["instances"], 1,
        "{}",
        live.text
    );
    let metrics = app.get("/metrics", ADMIN).await.text;
    for name in [
        "draven_function_invocations_total",
        "draven_function_duration_seconds_bucket",
        "draven_function_latency_seconds_bucket",
        "draven_function_cold_starts_total",
        "draven_function_cold_start_seconds_bucket",
        "draven_function_queue_depth",
        "draven_function_in_flight",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
}

async fn bad_invocations_get_clear_errors(db: TestDb) {
    let app = App::start(db).await;
    app.define(
        "hello",
        pool(
            &hello(),
            json!({"timeout_ms": 300, "max_payload_bytes": 200,
                   "input_schema": {"type": "object", "properties": {"name": {"type": "string"}}}}),
        ),
    )
    .await
    .ok();
    let r = app.invoke("nope", ADMIN, json!({}), &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .invoke("hello", ADMIN, json!({"name": "x".repeat(300)}), &[])
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
    let r = app.invoke("hello", ADMIN, json!({"name": 5}), &[]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.problem(), ("validation-failed", Some("/name")));
    // The deadline: 504 naming the invocation, which is recorded as timed out.
    let r = app
        .invoke("hello", ADMIN, json!({"sleep_ms": 5000}), &[])
        .await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.text);
    assert_eq!(r.problem().0, "invocation-timed-out");
    let id = r.headers["x-invocation-id"].to_str().unwrap().to_owned();
    assert!(r.body["detail"].as_str().unwrap().contains(&id));
    assert_eq!(app.finished(&id).await["state"], "timed_out");
    // The function stopped at the deadline (the SDK drops the handler); the next call works.
    let r = app.invoke("hello", ADMIN, json!({}), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    // The function's own error answer is passed through.
    let r = app.invoke("hello", ADMIN, json!({"fail": true}), &[]).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.body["error"], "failing as asked");
    // Idempotency: another payload under the same key is refused.
    let key = [("idempotency-key", "k-1")];
    let r = app.invoke("hello", ADMIN, json!({"name": "a"}), &key).await;
    assert_eq!(r.status, StatusCode::OK);
    let first = r.headers["x-invocation-id"].clone();
    let r = app.invoke("hello", ADMIN, json!({"name": "a"}), &key).await;
    assert_eq!(
        r.headers["x-invocation-id"], first,
        "a repeat is the same invocation"
    );
    let r = app.invoke("hello", ADMIN, json!({"name": "b"}), &key).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        r.problem(),
        ("idempotency-key-reused", Some("Idempotency-Key"))
    );
    // Permissions: a viewer may not invoke; a grant naming another function does not help.
    let viewer = app.user_with("vera", "viewer", None, None).await;
    let r = app.invoke("hello", &viewer, json!({}), &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let other = app
        .user_with("otto", "editor", Some("other-fn"), None)
        .await;
    let r = app.invoke("hello", &other, json!({}), &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let scoped = app.user_with("ivy", "editor", Some("hello"), None).await;
    let r = app.invoke("hello", &scoped, json!({}), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // An invoke-scoped token may invoke and nothing more; a read-scoped one may not invoke.
    let mut scoped_tokens = Vec::new();
    for scope in ["invoke", "read"] {
        let r = app
            .post(
                "/api/v1/users/ivy/tokens",
                ADMIN,
                json!({"name": format!("only-{scope}"), "scopes": [scope]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        scoped_tokens.push(r.body["token"].as_str().unwrap().to_owned());
    }
    let r = app.invoke("hello", &scoped_tokens[0], json!({}), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app
        .send(
            Method::PUT,
            "/api/v1/functions/hello",
            Some(&scoped_tokens[0]),
            Some(pool(&hello(), json!({}))),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = app.invoke("hello", &scoped_tokens[1], json!({}), &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    // Rate limit per function.
    app.define(
        "limited",
        pool(
            &hello(),
            json!({"rate_limit": {"per_second": 1, "burst": 2}}),
        ),
    )
    .await
    .ok();
    let mut codes = Vec::new();
    for _ in 0..4 {
        let r = app.invoke("limited", ADMIN, json!({}), &[]).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(r.problem().0, "rate-limited");
            assert!(r.headers.contains_key("retry-after"));
        }
        codes.push(r.status.as_u16());
    }
    assert_eq!(codes, [200, 200, 429, 429]);
}

/// A local HTTP receiver for callbacks: records (headers, body).
async fn receiver() -> (
    String,
    Arc<tokio::sync::Mutex<Vec<(reqwest::header::HeaderMap, bytes::Bytes)>>>,
) {
    let got = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let store = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: bytes::Bytes| {
            let store = store.clone();
            async move {
                store.lock().await.push((headers, body));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), got)
}

async fn async_invocations_call_back_signed(db: TestDb) {
    let app = App::start(db).await;
    app.send(
        Method::PUT,
        "/api/v1/secrets/report-hook",
        Some(ADMIN),
        Some(json!({"value": "hook-secret"})),
        &[],
    )
    .await
    .ok();
    app.define(
        "report",
        pool(&report(), json!({"callback_secret": "report-hook"})),
    )
    .await
    .ok();
    let (url, got) = receiver().await;
    let headers = [
        ("x-callback-url", url.as_str()),
        ("idempotency-key", "report-1"),
    ];
    let payload = json!({"numbers": [3, 1, 2], "work_ms": 100});
    let r = app
        .invoke_async("report", ADMIN, payload.clone(), &headers)
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let id = r.body["invocation_id"].as_str().unwrap().to_owned();
    assert_eq!(
        r.headers["location"],
        format!("/api/v1/invocations/{id}").as_str()
    );
    // A repeat, even while it runs, is the same invocation.
    let again = app.invoke_async("report", ADMIN, payload, &headers).await;
    assert_eq!(again.body["invocation_id"], id.as_str());
    let inv = app.finished(&id).await;
    assert_eq!(inv["state"], "succeeded", "{inv}");
    assert_eq!(inv["result"]["body"]["sorted"], json!([1.0, 2.0, 3.0]));
    // The callback arrives once, signed (Standard Webhooks).
    let mut delivered = None;
    for _ in 0..100 {
        if let Some(d) = got.lock().await.first().cloned() {
            delivered = Some(d);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (h, body) = delivered.expect("callback delivered");
    assert_eq!(h["webhook-id"], id.as_str());
    assert_eq!(h["x-draven-outcome"], "succeeded");
    let ts: i64 = h["webhook-timestamp"].to_str().unwrap().parse().unwrap();
    let expected = draven_functions::callback::sign(b"hook-secret", &id, ts, &body);
    assert_eq!(h["webhook-signature"], expected.as_str());
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["count"], 3);
    let inv = app.finished(&id).await;
    assert_eq!(inv["callback"]["delivered"], true, "{inv}");
    // Internal targets are refused unless allowed; a function without a secret cannot call back.
    let r = app
        .invoke_async(
            "report",
            ADMIN,
            json!({"numbers": []}),
            &[("x-callback-url", "http://10.0.0.1/x")],
        )
        .await;
    assert_eq!(r.problem(), ("validation-failed", Some("X-Callback-Url")));
    app.define("hello", pool(&hello(), json!({}))).await.ok();
    let r = app
        .invoke_async(
            "hello",
            ADMIN,
            json!({}),
            &[("x-callback-url", url.as_str())],
        )
        .await;
    assert_eq!(r.problem(), ("validation-failed", Some("X-Callback-Url")));
}

async fn failures_retry_then_dead_letter(db: TestDb) {
    let app = App::start(db).await;
    app.define(
        "hello",
        pool(
            &hello(),
            json!({"retries": 2, "backoff": {"initial_ms": 10, "max_ms": 50}}),
        ),
    )
    .await
    .ok();
    // An error answer (500) is retried; so is a crash mid-invocation.
    let failing = app
        .invoke_async("hello", ADMIN, json!({"fail": true}), &[])
        .await;
    let crashing = app
        .invoke_async("hello", ADMIN, json!({"exit": true}), &[])
        .await;
    for (r, kind) in [(failing, "error"), (crashing, "crashed")] {
        let id = r.body["invocation_id"].as_str().unwrap().to_owned();
        let inv = app.finished(&id).await;
        assert_eq!(inv["state"], "failed", "{inv}");
        assert_eq!(inv["attempts"], 3, "{inv}");
        assert_eq!(inv["failure"]["kind"], kind, "{inv}");
        assert_eq!(inv["dead_lettered"], true);
    }
    // A function process killed from outside mid-invocation: the attempt fails as a crash and
    // the retry, on a new instance, succeeds.
    app.define(
        "victim",
        pool(&hello(), json!({"max_concurrency": 1, "retries": 2, "backoff": {"initial_ms": 10, "max_ms": 50}})),
    )
    .await
    .ok();
    let r = app
        .invoke_async("victim", ADMIN, json!({"name": "k", "sleep_ms": 700}), &[])
        .await;
    let id = r.body["invocation_id"].as_str().unwrap().to_owned();
    let mut pid = None;
    for _ in 0..200 {
        let live = app.get("/api/v1/functions/victim", ADMIN).await;
        if live.body["live"]["running"] == 1 {
            pid = live.body["live"]["instances"]["pids"][0].as_u64();
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = pid.expect("a running instance") as i32;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let inv = app.finished(&id).await;
    assert_eq!(inv["state"], "succeeded", "{inv}");
    assert_eq!(inv["attempts"], 2, "{inv}");
    // A bad input (4xx) is not retried.
    let r = app
        .raw(
            Method::POST,
            "/api/v1/functions/hello/invoke-async",
            ADMIN,
            "application/json",
            b"not json".to_vec(),
            &[],
        )
        .await;
    let inv = app
        .finished(r.body["invocation_id"].as_str().unwrap())
        .await;
    assert_eq!(inv["attempts"], 1, "{inv}");
    // The crashed instance was replaced.
    let r = app
        .invoke("hello", ADMIN, json!({"name": "again"}), &[])
        .await;
    assert_eq!(r.status, StatusCode::OK);

    let dlq = app.get("/api/v1/functions/hello/dead-letters", ADMIN).await;
    let items = dlq.body.as_array().unwrap().clone();
    assert_eq!(items.len(), 3, "{}", dlq.text);
    let id = items
        .iter()
        .find(|d| d["failure"]["kind"] == "error" && d["attempts"] == 3)
        .expect("the failing invocation's dead letter")["invocation_id"]
        .as_str()
        .unwrap();
    let one = app
        .get(&format!("/api/v1/functions/hello/dead-letters/{id}"), ADMIN)
        .await;
    assert_eq!(one.body["payload"], json!({"fail": true}).to_string());
    let r = app
        .send(
            Method::POST,
            &format!("/api/v1/functions/hello/dead-letters/{id}/redrive"),
            Some(ADMIN),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let new_id = r.body["invocations"][0]["id"].as_str().unwrap().to_owned();
    let inv = app.finished(&new_id).await;
    assert_eq!(inv["redriven_from"], id);
    assert_eq!(
        inv["state"], "failed",
        "it fails again and returns to the queue"
    );
    let dlq = app.get("/api/v1/functions/hello/dead-letters", ADMIN).await;
    assert_eq!(dlq.body.as_array().unwrap().len(), 3);
    let r = app
        .send(
            Method::DELETE,
            "/api/v1/functions/hello/dead-letters",
            Some(ADMIN),
            None,
            &[],
        )
        .await;
    assert_eq!(r.body["purged"], 3);
    let metrics = app.get("/metrics", ADMIN).await.text;
    assert!(metrics.contains("draven_function_retries_total"));
    assert!(metrics.contains("draven_function_dlq_size"));
    assert_eq!(
        app.audit("action=function.dead-letter.purge").await.len(),
        1
    );
}

async fn queues_are_bounded_and_lose_nothing(db: TestDb) {
    let app = App::start(db).await;
    app.define(
        "slow",
        pool(&hello(), json!({"max_concurrency": 2, "queue_capacity": 10,
                              "runtime": {"kind": "process", "command": hello(), "pool": {"instance_concurrency": 1}}})),
    )
    .await
    .ok();
    // Two invocations take both slots...
    let mut accepted = Vec::new();
    for _ in 0..2 {
        let r = app
            .invoke_async("slow", ADMIN, json!({"sleep_ms": 400}), &[])
            .await;
        accepted.push(r.body["invocation_id"].as_str().unwrap().to_owned());
    }
    for _ in 0..100 {
        let live = app.get("/api/v1/functions/slow", ADMIN).await;
        if live.body["live"]["running"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ...then 10× the queue's capacity arrives at once: exactly the capacity is accepted.
    let burst = futures::future::join_all(
        (0..100).map(|_| app.invoke_async("slow", ADMIN, json!({"sleep_ms": 20}), &[])),
    )
    .await;
    let mut rejected = 0;
    for r in burst {
        match r.status {
            StatusCode::ACCEPTED => {
                accepted.push(r.body["invocation_id"].as_str().unwrap().to_owned())
            }
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(r.problem().0, "queue-full");
                assert!(r.headers.contains_key("retry-after"));
                rejected += 1;
            }
            other => panic!("unexpected {other}: {}", r.text),
        }
    }
    assert_eq!(accepted.len(), 12, "2 running + a queue of 10");
    assert_eq!(rejected, 90);
    for id in &accepted {
        assert_eq!(app.finished(id).await["state"], "succeeded");
    }
    let metrics = app.get("/metrics", ADMIN).await.text;
    // (The recorder is shared by the tests of this process: at least this test's 90.)
    let line = metrics
        .lines()
        .find(|l| l.starts_with("draven_function_rejections_total{tenant=\"default\",function=\"slow\",reason=\"queue_full\"}"))
        .expect("rejections counted");
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 90.0, "{line}");
}

async fn processes_watchdog_and_routing(db: TestDb) {
    let app = App::start(db).await;
    // A process per invocation: stdin → stdout.
    app.define(
        "wc",
        json!({"runtime": {"kind": "process", "command": "/bin/sh", "args": [wc_script()], "mode": "process"}}),
    )
    .await
    .ok();
    let r = app
        .raw(
            Method::POST,
            "/api/v1/functions/wc/invoke",
            ADMIN,
            "text/plain",
            b"one two three".to_vec(),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["words"], 3);
    assert_eq!(
        r.body["invocation_id"],
        r.headers["x-invocation-id"].to_str().unwrap()
    );
    // A process-mode timeout kills the process group.
    app.define(
        "sleeper",
        json!({"runtime": {"kind": "process", "command": "/bin/sh", "args": ["-c", "sleep 5; echo late"], "mode": "process"}, "timeout_ms": 200}),
    )
    .await
    .ok();
    let started = std::time::Instant::now();
    let r = app.invoke("sleeper", ADMIN, json!({}), &[]).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(3));
    // The same script behind the watchdog, as a warm pool.
    let watchdog = draven_functions::testing::binary("draven-fn", "draven-watchdog");
    app.define(
        "wc-warm",
        json!({"runtime": {"kind": "process", "command": watchdog, "args": ["--", "/bin/sh", wc_script()]}}),
    )
    .await
    .ok();
    let r = app
        .raw(
            Method::POST,
            "/api/v1/functions/wc-warm/invoke",
            ADMIN,
            "text/plain",
            b"a b".to_vec(),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(serde_json::from_str::<Value>(&r.text).unwrap()["words"], 2);
    // Routing: a container function goes to the other executor, and the invocation says so.
    app.define(
        "boxed",
        json!({"runtime": {"kind": "container", "image": "example/boxed:1"}, "executor": "kubernetes"}),
    )
    .await
    .ok();
    let r = app.invoke("boxed", ADMIN, json!({}), &[]).await;
    assert_eq!(r.text, "ran on the kubernetes executor");
    let inv = app
        .finished(r.headers["x-invocation-id"].to_str().unwrap())
        .await;
    assert_eq!(inv["executor"], "kubernetes");
    let r = app
        .define(
            "bad",
            json!({"runtime": {"kind": "process", "command": "x"}, "executor": "nomad"}),
        )
        .await;
    assert_eq!(r.problem(), ("validation-failed", Some("executor")));
}

async fn kubernetes_jobs_through_the_api(db: TestDb) {
    let app = App::start(db).await;
    let container = |image: &str, extra: Value| {
        let mut spec = json!({"executor": "kubernetes",
                              "runtime": {"kind": "container", "image": image},
                              "retries": 2, "backoff": {"initial_ms": 10, "max_ms": 50}});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                spec[k] = v;
            }
        }
        spec
    };
    // A Kubernetes Secret is a reference: no kernel secret of that name is needed.
    let r = app
        .define(
            "wc",
            container(
                "example/wc:1",
                json!({"secrets": [{"env": "TOKEN", "secret": "api-token", "key": "token"}]}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["spec"]["runtime"]["mode"], "job");
    assert_eq!(r.body["spec"]["secrets"][0]["key"], "token");
    app.define("wc", container("example/wc:1", json!({})))
        .await
        .ok();
    // Sync: a Job runs, its log is the answer.
    let r = app
        .raw(
            Method::POST,
            "/api/v1/functions/wc/invoke",
            ADMIN,
            "text/plain",
            b"one two three four".to_vec(),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["words"], 4);
    let inv = app
        .finished(r.headers["x-invocation-id"].to_str().unwrap())
        .await;
    assert_eq!(inv["executor"], "kubernetes");
    assert_eq!(inv["state"], "succeeded");
    // Async.
    let r = app.invoke_async("wc", ADMIN, json!("a b"), &[]).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let inv = app
        .finished(r.body["invocation_id"].as_str().unwrap())
        .await;
    assert_eq!(inv["state"], "succeeded", "{inv}");
    // An OOM kill is a crash: retried, then dead-lettered.
    app.define("oom", container("example/oom:1", json!({})))
        .await
        .ok();
    let r = app.invoke_async("oom", ADMIN, json!({}), &[]).await;
    let inv = app
        .finished(r.body["invocation_id"].as_str().unwrap())
        .await;
    assert_eq!(inv["state"], "failed", "{inv}");
    assert_eq!(inv["attempts"], 3, "{inv}");
    assert_eq!(inv["failure"]["kind"], "crashed");
    assert!(
        inv["failure"]["message"]
            .as_str()
            .unwrap()
            .contains("OOMKilled"),
        "{inv}"
    );
    assert_eq!(inv["dead_lettered"], true);
    let dlq = app.get("/api/v1/functions/oom/dead-letters", ADMIN).await;
    assert_eq!(dlq.body.as_array().unwrap().len(), 1, "{}", dlq.text);
    // An image that cannot be pulled is not retried.
    app.define("private", container("example/private:1", json!({})))
        .await
        .ok();
    let r = app.invoke_async("private", ADMIN, json!({}), &[]).await;
    let inv = app
        .finished(r.body["invocation_id"].as_str().unwrap())
        .await;
    assert_eq!(inv["attempts"], 1, "{inv}");
    assert_eq!(inv["failure"]["kind"], "unavailable");
    assert!(
        inv["failure"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot be pulled"),
        "{inv}"
    );
    let r = app.invoke("private", ADMIN, json!({}), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text);
    // Definitions of the new fields are checked.
    let r = app
        .define("w", container("example/wc:1", json!({"runtime": {"kind": "container", "image": "x/y:1", "mode": "warm", "warm": {"max_replicas": 0}}})))
        .await;
    assert_eq!(
        r.problem(),
        ("validation-failed", Some("runtime.warm.max_replicas"))
    );
    let metrics = app.get("/metrics", ADMIN).await.text;
    assert!(
        metrics.contains("executor=\"kubernetes\""),
        "invocations are counted per executor"
    );
}

async fn draining_refuses_new_invocations(db: TestDb) {
    let app = App::start(db).await;
    app.define("hello", pool(&hello(), json!({"max_concurrency": 1})))
        .await
        .ok();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = app
            .invoke_async("hello", ADMIN, json!({"sleep_ms": 100}), &[])
            .await;
        ids.push(r.body["invocation_id"].as_str().unwrap().to_owned());
    }
    let engine = app.engine.clone();
    let drain = tokio::spawn(async move { engine.drain(Duration::from_secs(10)).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let r = app.invoke_async("hello", ADMIN, json!({}), &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(
        drain.await.unwrap(),
        0,
        "queued and running invocations finished"
    );
    for id in ids {
        assert_eq!(app.finished(&id).await["state"], "succeeded");
    }
}

async fn a_caller_going_away_frees_everything(db: TestDb) {
    let app = App::start(db).await;
    app.define("hello", pool(&hello(), json!({"max_concurrency": 1})))
        .await
        .ok();
    app.invoke("hello", ADMIN, json!({}), &[]).await.ok();
    // Two callers give up: one while running, one while queued behind it.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let url = format!("{}/api/v1/functions/hello/invoke", app.base);
    let send = || {
        impatient
            .post(&url)
            .bearer_auth(ADMIN)
            .json(&json!({"sleep_ms": 1500}))
            .send()
    };
    let (a, b) = tokio::join!(send(), send());
    assert!(
        a.is_err() && b.is_err(),
        "both timed out on the client side"
    );
    let mut live = Value::Null;
    for _ in 0..100 {
        live = app.get("/api/v1/functions/hello", ADMIN).await.body["live"].clone();
        if live["running"] == 0 && live["queued"] == 0 && app.engine.active() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        (live["running"].clone(), live["queued"].clone()),
        (json!(0), json!(0)),
        "{live}"
    );
    assert_eq!(app.engine.active(), 0, "nothing left for drain to wait on");
    // The slot is free again.
    let r = app
        .invoke("hello", ADMIN, json!({"name": "next"}), &[])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

async fn idle_instances_stop_and_minimum_instances_start_ahead(db: TestDb) {
    let app = App::start(db).await;
    let short = json!({"kind": "process", "command": hello(), "pool": {"idle_timeout_ms": 200}});
    app.define("idle", json!({"runtime": short})).await.ok();
    app.invoke("idle", ADMIN, json!({}), &[]).await.ok();
    let instances = |v: &Value| v["live"]["instances"]["instances"].as_u64().unwrap_or(99);
    assert_eq!(
        instances(&app.get("/api/v1/functions/idle", ADMIN).await.body),
        1
    );
    let mut left = 99;
    for _ in 0..100 {
        left = instances(&app.get("/api/v1/functions/idle", ADMIN).await.body);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(left, 0, "the idle instance was stopped");
    let warm = json!({"kind": "process", "command": hello(), "pool": {"idle_timeout_ms": 200, "min_instances": 1}});
    app.define("warm", json!({"runtime": warm})).await.ok();
    // Loading the function (any call that needs it) starts the minimum ahead of demand.
    app.get("/api/v1/functions/warm/dead-letters", ADMIN)
        .await
        .ok();
    let mut up = 0;
    for _ in 0..100 {
        up = instances(&app.get("/api/v1/functions/warm", ADMIN).await.body);
        if up == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(up, 1, "min_instances started before any invocation");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        instances(&app.get("/api/v1/functions/warm", ADMIN).await.body),
        1,
        "the minimum is kept while idle"
    );
    let r = app.invoke("warm", ADMIN, json!({}), &[]).await;
    let inv = app
        .finished(r.headers["x-invocation-id"].to_str().unwrap())
        .await;
    assert!(inv.get("cold_start_ms").is_none(), "served warm: {inv}");
}

async fn the_tenant_rate_limit_spans_its_functions(db: TestDb) {
    let app = App::start_with_tenant_rate(
        db,
        draven_functions::spec::RateLimit {
            per_second: 1,
            burst: Some(3),
        },
    )
    .await;
    app.define("a", pool(&hello(), json!({}))).await.ok();
    app.define("b", pool(&hello(), json!({}))).await.ok();
    let mut codes = Vec::new();
    for name in ["a", "b", "a", "b"] {
        let r = app.invoke(name, ADMIN, json!({}), &[]).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(r.problem().0, "rate-limited");
            assert!(
                r.body["detail"].as_str().unwrap().contains("tenant"),
                "{}",
                r.text
            );
            assert!(r.headers.contains_key("retry-after"));
        }
        codes.push(r.status.as_u16());
    }
    assert_eq!(
        codes,
        [200, 200, 200, 429],
        "one budget for all the tenant's functions"
    );
}

draven_store::on_both_backends!(
    the_tenant_rate_limit_spans_its_functions,
    idle_instances_stop_and_minimum_instances_start_ahead,
    a_caller_going_away_frees_everything,
    definitions_are_validated_and_versioned,
    sync_invocations_reach_a_warm_process,
    bad_invocations_get_clear_errors,
    async_invocations_call_back_signed,
    failures_retry_then_dead_letter,
    queues_are_bounded_and_lose_nothing,
    processes_watchdog_and_routing,
    kubernetes_jobs_through_the_api,
    draining_refuses_new_invocations,
);
