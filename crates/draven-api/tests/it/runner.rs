//! The runner protocol over HTTP: claim in queue order under the environment lock, logs,
//! heartbeats with cancel, finish (repeatable), and the reaper failing a job whose runner died.

use super::{App, ADMIN};
use draven_api::ApiConfig;
use draven_deploy::testing::fixture;
use draven_store::testing::TestDb;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;

/// Environment `demo` with project `shop` (a real git repository) and an open policy.
async fn demo_shop(app: &App) -> draven_deploy::testing::GitFixture {
    let f = fixture();
    app.post("/api/v1/environments", ADMIN, json!({"name": "demo"}))
        .await;
    app.post(
        "/api/v1/projects",
        ADMIN,
        json!({"key": "shop", "provider": "local", "repo": f.repo}),
    )
    .await;
    app.send(
        Method::PUT,
        "/api/v1/projects/shop/environments/demo",
        Some(ADMIN),
        Some(json!({})),
        &[],
    )
    .await;
    f
}

async fn runner_token(app: &App) -> String {
    app.post("/api/v1/users", ADMIN, json!({"username": "runner-1"}))
        .await;
    app.post(
        "/api/v1/grants",
        ADMIN,
        json!({"user": "runner-1", "role": "deployer"}),
    )
    .await;
    let r = app
        .post(
            "/api/v1/users/runner-1/tokens",
            ADMIN,
            json!({"name": "agent", "scopes": ["runner"]}),
        )
        .await;
    r.body["token"].as_str().unwrap().to_owned()
}

async fn runner_protocol(db: TestDb) {
    let lease = Duration::from_millis(700);
    let app = App::start_with(
        db,
        ApiConfig {
            runner_lease: lease,
            ..ApiConfig::default()
        },
    )
    .await;
    let f = demo_shop(&app).await;
    let deploy = || {
        app.post(
            "/api/v1/projects/shop/deploys",
            ADMIN,
            json!({"environment": "demo", "ref": "develop"}),
        )
    };
    let a = deploy().await.body["id"].as_str().unwrap().to_owned();
    let b = deploy().await.body["id"].as_str().unwrap().to_owned();
    let runner = runner_token(&app).await;
    // A runner token can do nothing else; other users cannot claim.
    assert_eq!(
        app.get("/api/v1/deploys", &runner).await.status,
        StatusCode::FORBIDDEN
    );
    let viewer = app.user_with("vic", "viewer", None, None).await;
    assert_eq!(
        app.post("/api/v1/runner/claim", &viewer, json!({"runner": "r1"}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    // The oldest job starts; the next one of the same environment waits for the lock.
    let c = app
        .post("/api/v1/runner/claim", &runner, json!({"runner": "r1"}))
        .await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.text);
    assert_eq!(
        (
            c.body["job"]["id"].as_str(),
            c.body["job"]["state"].as_str()
        ),
        (Some(a.as_str()), Some("RUNNING"))
    );
    assert_eq!(c.body["repo"], f.repo.as_str());
    assert_eq!(c.body["job"]["commit_sha"], f.main_sha.as_str());
    assert_eq!(
        app.post("/api/v1/runner/claim", &runner, json!({"runner": "r2"}))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let lock = app
        .get("/api/v1/projects/shop/environments/demo/lock", ADMIN)
        .await;
    assert_eq!(
        (
            lock.body["holder_job"].as_str(),
            lock.body["holder"].as_str()
        ),
        (Some(a.as_str()), Some("r1"))
    );

    // Logs in order; only the holding runner may write them.
    async fn log_call(
        app: &App,
        token: &str,
        job: &str,
        runner_name: &str,
        stream: &str,
        text: &str,
    ) -> super::Resp {
        let path = format!("/api/v1/runner/jobs/{job}/logs");
        app.post(
            &path,
            token,
            json!({"runner": runner_name, "stream": stream, "text": text}),
        )
        .await
    }

    assert_eq!(
        log_call(&app, &runner, &a, "r1", "stdout", "deploying develop\n")
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        log_call(&app, &runner, &a, "r1", "stderr", "a warning\n")
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        log_call(&app, &runner, &a, "r2", "stdout", "not mine\n")
            .await
            .status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        log_call(&app, &runner, &a, "r1", "video", "x")
            .await
            .problem(),
        ("validation-failed", Some("stream"))
    );
    let l = app.get(&format!("/api/v1/deploys/{a}/logs"), ADMIN).await;
    let texts: Vec<&str> = l.body["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, vec!["deploying develop\n", "a warning\n"]);
    assert_eq!(
        (l.body["done"].as_bool(), l.body["next"].as_i64()),
        (Some(false), Some(2))
    );
    assert!(app
        .get(&format!("/api/v1/deploys/{a}/logs?after=2"), ADMIN)
        .await
        .body["chunks"]
        .as_array()
        .unwrap()
        .is_empty());
    let hb = app
        .post(
            &format!("/api/v1/runner/jobs/{a}/heartbeat"),
            &runner,
            json!({"runner": "r1"}),
        )
        .await;
    let runners = app.get("/api/v1/runners", ADMIN).await;
    let r1 = runners
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "r1")
        .expect("r1 registered by its claim")
        .clone();
    assert_eq!(r1["running_job"].as_str(), Some(a.as_str()));
    assert!(runners
        .body
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "r2" && r["running_job"].is_null()));
    assert_eq!(
        (hb.body["state"].as_str(), hb.body["cancel"].as_bool()),
        (Some("RUNNING"), Some(false))
    );

    // Finish frees the environment; the report can be repeated (a restarted runner).
    async fn finish_call(app: &App, token: &str, job: &str, result: &str) -> super::Resp {
        let path = format!("/api/v1/runner/jobs/{job}/finish");
        app.post(
            &path,
            token,
            json!({"runner": "r1", "result": result, "exit_code": 0}),
        )
        .await
    }
    let done = finish_call(&app, &runner, &a, "succeeded").await;
    assert_eq!(done.body["state"], "SUCCEEDED", "{}", done.text);
    let timeline: Vec<&str> = done.body["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(timeline, vec!["PENDING", "QUEUED", "RUNNING", "SUCCEEDED"]);
    assert_eq!(
        finish_call(&app, &runner, &a, "succeeded").await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.get(&format!("/api/v1/deploys/{a}/logs"), ADMIN)
            .await
            .body["done"],
        true
    );
    assert_eq!(
        log_call(&app, &runner, &a, "r1", "stdout", "late\n")
            .await
            .status,
        StatusCode::CONFLICT
    );

    // Next in line; cancelled while it runs: the heartbeat says stop.
    let c = app
        .post(
            "/api/v1/runner/claim",
            &runner,
            json!({"runner": "r1", "wait_secs": 1}),
        )
        .await;
    assert_eq!(c.body["job"]["id"].as_str(), Some(b.as_str()));
    app.post(&format!("/api/v1/deploys/{b}/cancel"), ADMIN, json!({}))
        .await;
    let hb = app
        .post(
            &format!("/api/v1/runner/jobs/{b}/heartbeat"),
            &runner,
            json!({"runner": "r1"}),
        )
        .await;
    assert_eq!(hb.body["cancel"], true);
    assert_eq!(
        finish_call(&app, &runner, &b, "cancelled").await.body["state"],
        "CANCELLED"
    );
    assert_eq!(
        app.get("/api/v1/projects/shop/environments/demo/lock", ADMIN)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // A runner that dies: no heartbeat, the lease lapses, the job fails and the lock is free.
    let c_id = deploy().await.body["id"].as_str().unwrap().to_owned();
    let c = app
        .post("/api/v1/runner/claim", &runner, json!({"runner": "doomed"}))
        .await;
    assert_eq!(c.body["job"]["id"].as_str(), Some(c_id.as_str()));
    tokio::time::sleep(lease + Duration::from_millis(300)).await;
    assert_eq!(
        app.post("/api/v1/runner/claim", &runner, json!({"runner": "r1"}))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let j = app.get(&format!("/api/v1/deploys/{c_id}"), ADMIN).await;
    assert_eq!(j.body["state"], "FAILED");
    assert!(
        j.body["timeline"].as_array().unwrap().last().unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("runner lost")
    );
    assert_eq!(
        app.get("/api/v1/projects/shop/environments/demo/lock", ADMIN)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let hb = app
        .post(
            &format!("/api/v1/runner/jobs/{c_id}/heartbeat"),
            &runner,
            json!({"runner": "doomed"}),
        )
        .await;
    assert_eq!(
        (hb.status, hb.body["state"].as_str()),
        (StatusCode::OK, Some("FAILED")),
        "the late runner learns the job is over"
    );
    assert_eq!(
        app.post(
            "/api/v1/runner/claim",
            &runner,
            json!({"runner": "r1", "wait_secs": 31})
        )
        .await
        .problem(),
        ("validation-failed", Some("wait_secs"))
    );
}

async fn live_log_stream(db: TestDb) {
    use futures::StreamExt;
    let app = App::start(db).await;
    let _repo = demo_shop(&app).await;
    let id = app
        .post(
            "/api/v1/projects/shop/deploys",
            ADMIN,
            json!({"environment": "demo", "ref": "develop"}),
        )
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let runner = runner_token(&app).await;
    app.post("/api/v1/runner/claim", &runner, json!({"runner": "r1"}))
        .await;
    // Follow the log while the job runs.
    let resp = app
        .http
        .get(format!("{}/api/v1/deploys/{id}/logs/stream", app.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let reader = tokio::spawn(async move {
        let mut body = String::new();
        let mut stream = resp.bytes_stream();
        while let Some(Ok(chunk)) = stream.next().await {
            body.push_str(&String::from_utf8_lossy(&chunk));
            if body.contains("event: end") {
                break;
            }
        }
        body
    });
    for line in ["step 1\n", "step 2\n"] {
        let r = app
            .post(
                &format!("/api/v1/runner/jobs/{id}/logs"),
                &runner,
                json!({"runner": "r1", "stream": "stdout", "text": line}),
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    app.post(
        &format!("/api/v1/runner/jobs/{id}/finish"),
        &runner,
        json!({"runner": "r1", "result": "succeeded", "exit_code": 0}),
    )
    .await;
    let body = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the stream ends with the job")
        .unwrap();
    let step1 = body.find("step 1").expect("first line streamed");
    let step2 = body.find("step 2").expect("second line streamed");
    assert!(step1 < step2);
    assert!(
        body.contains("event: state\ndata: RUNNING")
            && body.contains("event: end\ndata: SUCCEEDED"),
        "{body}"
    );
    assert!(body.contains("id: 2"));
    // Resuming after the first chunk replays only what follows.
    let resumed = app
        .http
        .get(format!("{}/api/v1/deploys/{id}/logs/stream", app.base))
        .bearer_auth(ADMIN)
        .header("last-event-id", "1")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !resumed.contains("step 1") && resumed.contains("step 2"),
        "{resumed}"
    );
}

async fn large_logs_move_to_object_storage(db: TestDb) {
    let app = App::start_with(
        db,
        ApiConfig {
            log_inline_max_bytes: 20,
            ..ApiConfig::default()
        },
    )
    .await;
    let _repo = demo_shop(&app).await;
    let id = app
        .post(
            "/api/v1/projects/shop/deploys",
            ADMIN,
            json!({"environment": "demo", "ref": "develop"}),
        )
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let runner = runner_token(&app).await;
    app.post("/api/v1/runner/claim", &runner, json!({"runner": "r1"}))
        .await;
    let lines = [
        "first line of output\n",
        "second line\n",
        "third and last\n",
    ];
    for (i, line) in lines.iter().enumerate() {
        let stream = if i == 1 { "stderr" } else { "stdout" };
        app.post(
            &format!("/api/v1/runner/jobs/{id}/logs"),
            &runner,
            json!({"runner": "r1", "stream": stream, "text": line}),
        )
        .await;
    }
    app.post(
        &format!("/api/v1/runner/jobs/{id}/finish"),
        &runner,
        json!({"runner": "r1", "result": "succeeded", "exit_code": 0}),
    )
    .await;
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM job_logs WHERE job_id = $1")
        .bind(&id)
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(left, 0, "the database copy is gone");
    let tenant: String = sqlx::query_scalar("SELECT id FROM tenants WHERE name = 'default'")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert!(app
        .blobs
        .blobs
        .size(&format!("tenants/{tenant}/jobs/{id}/log.jsonl"))
        .await
        .unwrap()
        .is_some());
    let l = app.get(&format!("/api/v1/deploys/{id}/logs"), ADMIN).await;
    let got: Vec<(&str, &str)> = l.body["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["stream"].as_str().unwrap(), c["text"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("stdout", lines[0]),
            ("stderr", lines[1]),
            ("stdout", lines[2])
        ]
    );
    assert_eq!(l.body["done"], true);
    let after = app
        .get(&format!("/api/v1/deploys/{id}/logs?after=2"), ADMIN)
        .await;
    assert_eq!(after.body["chunks"].as_array().unwrap().len(), 1);
    let sse = app
        .http
        .get(format!("{}/api/v1/deploys/{id}/logs/stream", app.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        sse.contains("third and last") && sse.contains("event: end"),
        "{sse}"
    );
}

async fn scheduled_deploys_wait_for_their_time(db: TestDb) {
    let app = App::start(db).await;
    let _repo = demo_shop(&app).await;
    let at = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let at = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let r = app
        .post(
            "/api/v1/projects/shop/deploys",
            ADMIN,
            json!({"environment": "demo", "ref": "develop", "scheduled_at": at}),
        )
        .await;
    assert_eq!(
        (
            r.status,
            r.body["state"].as_str(),
            r.body["scheduled_at"].as_str()
        ),
        (StatusCode::CREATED, Some("QUEUED"), Some(at.as_str()))
    );
    let runner = runner_token(&app).await;
    assert_eq!(
        app.post("/api/v1/runner/claim", &runner, json!({"runner": "r1"}))
            .await
            .status,
        StatusCode::NO_CONTENT,
        "not yet"
    );
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let c = app
        .post("/api/v1/runner/claim", &runner, json!({"runner": "r1"}))
        .await;
    assert_eq!(c.body["job"]["id"], r.body["id"]);
    for bad in ["2001-01-01T00:00:00Z", "tomorrow", "2099-01-01T00:00:00Z"] {
        let r = app
            .post(
                "/api/v1/projects/shop/deploys",
                ADMIN,
                json!({"environment": "demo", "ref": "develop", "scheduled_at": bad}),
            )
            .await;
        assert_eq!(
            r.problem(),
            ("validation-failed", Some("scheduled_at")),
            "{bad}"
        );
    }
}

async fn pipeline_callbacks_with_the_job_token(db: TestDb) {
    let app = App::start(db).await;
    let f = fixture();
    app.post("/api/v1/environments", ADMIN, json!({"name": "demo"}))
        .await;
    app.post("/api/v1/environments", ADMIN, json!({"name": "stage"}))
        .await;
    app.post(
        "/api/v1/projects",
        ADMIN,
        json!({"key": "shop", "provider": "local", "repo": f.repo}),
    )
    .await;
    for env in ["demo", "stage"] {
        app.send(
            Method::PUT,
            &format!("/api/v1/projects/shop/environments/{env}"),
            Some(ADMIN),
            Some(json!({})),
            &[],
        )
        .await;
    }
    let a = app
        .post(
            "/api/v1/projects/shop/deploys",
            ADMIN,
            json!({"environment": "demo", "ref": "develop"}),
        )
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = app
        .post(
            "/api/v1/projects/shop/deploys",
            ADMIN,
            json!({"environment": "stage", "ref": "develop"}),
        )
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let runner = runner_token(&app).await;
    let claim_a = app
        .post(
            "/api/v1/runner/claim",
            &runner,
            json!({"runner": "gh-actions"}),
        )
        .await;
    let token_a = claim_a.body["callback_token"].as_str().unwrap().to_owned();
    let claim_b = app
        .post(
            "/api/v1/runner/claim",
            &runner,
            json!({"runner": "gh-actions"}),
        )
        .await;
    assert_eq!(claim_b.body["job"]["id"].as_str(), Some(b.as_str()));
    let cb = |job: &str, what: &str| format!("/api/v1/callbacks/{job}/{what}");
    assert_eq!(
        app.post(&cb(&a, "start"), &token_a, json!({})).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.post(
            &cb(&a, "steps"),
            &token_a,
            json!({"name": "composer install", "status": "succeeded"})
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.post(
            &cb(&a, "logs"),
            &token_a,
            json!({"stream": "stdout", "text": "dep deploy demo\n"})
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    // The token is for its own job only; no token, a wrong one, or another job's: 401, audited.
    let r = app
        .post(
            &cb(&b, "logs"),
            &token_a,
            json!({"stream": "stdout", "text": "x"}),
        )
        .await;
    assert_eq!(
        (r.status, r.problem().0),
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    );
    assert_eq!(
        app.post(
            &cb(&a, "logs"),
            "drv_not-the-token-at-all",
            json!({"stream": "stdout", "text": "x"})
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.send(Method::POST, &cb(&a, "start"), None, Some(json!({})), &[])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.post(
            &cb(&a, "steps"),
            &runner,
            json!({"name": "x", "status": "y"})
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED,
        "an API token is not a callback token"
    );
    let r = app.post(&cb(&a, "finish"), &token_a, json!({"result": "succeeded", "exit_code": 0, "log_url": "https://github.com/acme/shop/actions/runs/42"})).await;
    assert_eq!(r.body["state"], "SUCCEEDED", "{}", r.text);
    assert_eq!(
        r.body["log_url"],
        "https://github.com/acme/shop/actions/runs/42"
    );
    let messages: Vec<&str> = r.body["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(
        messages.contains(&"pipeline started")
            && messages.contains(&"step composer install: succeeded"),
        "{messages:?}"
    );
    let l = app.get(&format!("/api/v1/deploys/{a}/logs"), ADMIN).await;
    assert_eq!(l.body["chunks"][0]["text"], "dep deploy demo\n");
    assert!(!app
        .audit("action=callback.authenticate&all_tenants=true")
        .await
        .is_empty());
    let bad = app
        .post(
            &cb(&b, "finish"),
            claim_b.body["callback_token"].as_str().unwrap(),
            json!({"result": "great"}),
        )
        .await;
    assert_eq!(bad.problem(), ("validation-failed", Some("result")));
}

draven_store::on_both_backends!(
    pipeline_callbacks_with_the_job_token,
    runner_protocol,
    live_log_stream,
    large_logs_move_to_object_storage,
    scheduled_deploys_wait_for_their_time,
);
