//! Deploys of github, gitlab and bitbucket projects through the local fake providers, over
//! real HTTP: the dispatcher triggers the pipeline with the contract's variables, the job
//! follows the run by signed webhooks and by polling, states map, cancel and timeouts stop the
//! remote run, rate limits and outages are retried and then fail the job, and refused webhooks
//! (unknown run, bad or missing signature, replay, malformed body) change nothing.
//! Notifications go to local Slack/Teams receivers and to a real SMTP server.

use super::{App, ADMIN};
use draven_deploy::dispatch::{DispatchConfig, Dispatcher};
use draven_deploy::fakes::{Delivery, Fake, Kind};
use draven_deploy::notify::{Notifier, NotifyConfig};
use draven_store::testing::TestDb;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const HOOK_SECRET: &str = "It's a Secret to Everybody";

fn dispatcher(app: &App, poll: Duration) -> Dispatcher {
    Dispatcher::new(
        app.db.db.clone(),
        app.kek.clone(),
        DispatchConfig {
            public_url: app.base.clone(),
            tick: Duration::from_millis(20),
            poll_interval: poll,
            backoff_base: Duration::from_millis(5),
            backoff_max: Duration::from_millis(50),
            max_attempts: 3,
            find_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
            ..DispatchConfig::default()
        },
    )
}

async fn secret(app: &App, name: &str, value: &str) {
    let r = app
        .send(
            Method::PUT,
            &format!("/api/v1/secrets/{name}"),
            Some(ADMIN),
            Some(json!({"value": value})),
            &[],
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
}

/// Environment `demo`, project `shop` on `provider` with `integration`, an open policy.
async fn remote_shop(
    app: &App,
    provider: &str,
    integration: Value,
    policy: Value,
) -> draven_deploy::testing::GitFixture {
    let f = draven_deploy::testing::fixture();
    app.post("/api/v1/environments", ADMIN, json!({"name": "demo"}))
        .await;
    let r = app
        .post(
            "/api/v1/projects",
            ADMIN,
            json!({"key": "shop", "provider": provider, "repo": f.repo, "integration": integration}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = app
        .send(
            Method::PUT,
            "/api/v1/projects/shop/environments/demo",
            Some(ADMIN),
            Some(policy),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    f
}

async fn deploy(app: &App) -> String {
    let r = app
        .post(
            "/api/v1/projects/shop/deploys",
            ADMIN,
            json!({"environment": "demo", "ref": "develop"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.body["id"].as_str().unwrap().to_owned()
}

async fn job(app: &App, id: &str) -> Value {
    app.get(&format!("/api/v1/deploys/{id}"), ADMIN).await.body
}

/// Ticks the dispatcher until the job leaves RUNNING (bounded).
async fn tick_until_done(app: &App, d: &Dispatcher, id: &str) -> Value {
    for _ in 0..200 {
        d.tick().await.unwrap();
        let j = job(app, id).await;
        if !["QUEUED", "RUNNING"].contains(&j["state"].as_str().unwrap()) {
            // One more tick lets the dispatcher wind the job down (remote cancel, lock).
            d.tick().await.unwrap();
            return job(app, id).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("job {id} did not end: {}", job(app, id).await);
}

fn timeline(j: &Value) -> String {
    j["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {}\n",
                e["state"].as_str().unwrap(),
                e["message"].as_str().unwrap()
            )
        })
        .collect()
}

fn hook(app: &App, provider: &str) -> String {
    format!("{}/api/v1/webhooks/{provider}", app.base)
}

fn code(body: &Value) -> &str {
    body["code"].as_str().unwrap_or_default()
}

fn resign(d: &Delivery, body: Vec<u8>, secret: &str, header: &str) -> Delivery {
    let mut d = d.clone();
    d.headers.retain(|(k, _)| k != header);
    d.headers.push((
        header.to_owned(),
        draven_deploy::providers::sign_sha256_header(secret.as_bytes(), &body),
    ));
    d.body = body;
    d
}

async fn github_deploy_follows_signed_webhooks(db: TestDb) {
    let app = App::start(db).await;
    let fake = Fake::start(Kind::GitHub, "ghp_fake_token").await;
    secret(&app, "gh-token", "ghp_fake_token").await;
    secret(&app, "gh-hook", HOOK_SECRET).await;
    // Validation names the field.
    let r = app
        .post(
            "/api/v1/projects",
            ADMIN,
            json!({"key": "bad", "provider": "github", "repo": "x", "integration": {"repository": "shop", "workflows": {"*": "d.yml"}, "token_secret": "gh-token"}}),
        )
        .await;
    assert_eq!(
        r.problem(),
        ("validation-failed", Some("integration/repository"))
    );
    let _repo = remote_shop(
        &app,
        "github",
        json!({"repository": "acme/shop", "api_url": fake.api_url, "workflows": {"*": "draven-deploy.yml"},
               "token_secret": "gh-token", "webhook_secret": "gh-hook"}),
        json!({}),
    )
    .await;
    let id = deploy(&app).await;
    assert_eq!(job(&app, &id).await["state"], "QUEUED");
    // Webhooks only: polling is an hour away.
    let d = dispatcher(&app, Duration::from_secs(3600));
    d.tick().await.unwrap();
    let j = job(&app, &id).await;
    assert_eq!(j["state"], "RUNNING", "{j}");
    assert_eq!(j["provider_run_id"], "9001");
    assert_eq!(
        j["provider_url"],
        "https://github.com/acme/shop/actions/runs/9001"
    );
    assert_eq!(j["log_url"], j["provider_url"]);
    let lock = app
        .get("/api/v1/projects/shop/environments/demo/lock", ADMIN)
        .await;
    assert_eq!(
        (
            lock.body["holder_job"].as_str(),
            lock.body["holder"].as_str()
        ),
        (Some(id.as_str()), Some("draven-dispatcher"))
    );
    // The workflow got the contract's inputs, and its callback token works for this job.
    let run = fake.run(0);
    let inputs = &run.trigger["inputs"];
    assert_eq!(
        (
            inputs["job_id"].as_str(),
            inputs["env"].as_str(),
            inputs["ref"].as_str()
        ),
        (Some(id.as_str()), Some("demo"), Some("develop"))
    );
    assert_eq!(run.trigger["ref"], "develop");
    assert_eq!(run.trigger["return_run_details"], true);
    assert_eq!(
        inputs["callback_url"].as_str().unwrap(),
        format!("{}/api/v1/callbacks/{id}", app.base)
    );
    let token = inputs["callback_token"].as_str().unwrap();
    let r = app
        .send(
            Method::POST,
            &format!("/api/v1/callbacks/{id}/start"),
            Some(token),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);

    // in_progress by webhook.
    fake.set_status(0, "in_progress");
    let running = fake.delivery(0, HOOK_SECRET);
    let (status, body) = running.send(&hook(&app, "github")).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("RUNNING")),
        "{body}"
    );
    // Refusals: replay, wrong secret, no signature, malformed body, unknown run.
    let (status, body) = running.send(&hook(&app, "github")).await;
    assert_eq!((status, code(&body)), (409, "webhook-replayed"), "{body}");
    fake.set_status(0, "completed/success");
    let done = fake.delivery(0, HOOK_SECRET);
    let forged = resign(
        &done,
        done.body.clone(),
        "not the secret",
        "x-hub-signature-256",
    );
    let (status, body) = forged.send(&hook(&app, "github")).await;
    assert_eq!(
        (status, code(&body)),
        (401, "webhook-signature-invalid"),
        "{body}"
    );
    let mut unsigned = done.clone();
    unsigned.headers.retain(|(k, _)| k != "x-hub-signature-256");
    let (status, body) = unsigned.send(&hook(&app, "github")).await;
    assert_eq!(
        (status, code(&body)),
        (401, "webhook-signature-invalid"),
        "{body}"
    );
    let garbled = resign(
        &done,
        b"{not json".to_vec(),
        HOOK_SECRET,
        "x-hub-signature-256",
    );
    let (status, body) = garbled.send(&hook(&app, "github")).await;
    assert_eq!((status, code(&body)), (400, "malformed-body"), "{body}");
    let other_run = String::from_utf8(done.body.clone())
        .unwrap()
        .replace("\"id\":9001", "\"id\":777")
        .replace("[draven-job ", "[other ");
    let stranger = resign(
        &done,
        other_run.into_bytes(),
        HOOK_SECRET,
        "x-hub-signature-256",
    );
    let (status, body) = stranger.send(&hook(&app, "github")).await;
    assert_eq!((status, code(&body)), (404, "not-found"), "{body}");
    assert_eq!(job(&app, &id).await["state"], "RUNNING");
    let denied = app
        .audit("outcome=denied&action=webhook.receive&limit=50&all_tenants=true")
        .await;
    assert_eq!(denied.len(), 5, "{denied:?}");
    // A ping is answered and ignored.
    let mut ping = done.clone();
    for (k, v) in ping.headers.iter_mut() {
        if k == "x-github-event" {
            *v = "ping".into();
        }
    }
    assert_eq!(ping.send(&hook(&app, "github")).await.0, 202);

    // completed/success by webhook: the job succeeds and the environment is free.
    let (status, body) = done.send(&hook(&app, "github")).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("SUCCEEDED")),
        "{body}"
    );
    let j = job(&app, &id).await;
    assert_eq!(
        (j["state"].as_str(), j["provider_status"].as_str()),
        (Some("SUCCEEDED"), Some("completed/success"))
    );
    assert!(timeline(&j).contains("(webhook)"), "{}", timeline(&j));
    assert_eq!(
        app.get("/api/v1/projects/shop/environments/demo/lock", ADMIN)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    d.tick().await.unwrap();
    assert_eq!(fake.state.lock().unwrap().cancels.len(), 0);
}

async fn github_polling_finds_runs_maps_failures_and_cancels(db: TestDb) {
    let app = App::start(db).await;
    let fake = Fake::start(Kind::GitHub, "ghp_fake_token").await;
    // An older GitHub Enterprise Server: no return_run_details; the run is found by its marker.
    fake.with(|st| st.run_details = false);
    secret(&app, "gh-token", "ghp_fake_token").await;
    let _repo = remote_shop(
        &app,
        "github",
        json!({"repository": "acme/shop", "api_url": fake.api_url, "workflows": {"demo": "deploy.yml"}, "token_secret": "gh-token"}),
        json!({}),
    )
    .await;
    let d = dispatcher(&app, Duration::from_millis(1));
    let id = deploy(&app).await;
    let j = tick_until_done(&app, &d, &id).await;
    assert_eq!(j["state"], "SUCCEEDED", "{}", timeline(&j));
    assert_eq!(j["provider_run_id"], "9001");
    let t = timeline(&j);
    assert!(t.contains("found by the job marker"), "{t}");
    assert!(t.contains("reports in_progress (poll)"), "{t}");

    // A failing run fails the job.
    fake.with(|st| {
        st.script = vec![
            "queued".into(),
            "in_progress".into(),
            "completed/failure".into(),
        ]
    });
    let id = deploy(&app).await;
    let j = tick_until_done(&app, &d, &id).await;
    assert_eq!(
        (j["state"].as_str(), j["provider_status"].as_str()),
        (Some("FAILED"), Some("completed/failure")),
        "{}",
        timeline(&j)
    );

    // Cancel: the job is cancelled and so is its run.
    fake.with(|st| st.script = vec!["queued".into(), "in_progress".into()]);
    fake.with(|st| st.run_details = true);
    let slow = dispatcher(&app, Duration::from_secs(3600));
    let id = deploy(&app).await;
    slow.tick().await.unwrap();
    assert_eq!(job(&app, &id).await["state"], "RUNNING");
    let r = app
        .post(&format!("/api/v1/deploys/{id}/cancel"), ADMIN, json!({}))
        .await;
    assert_eq!(r.body["state"], "CANCELLED", "{}", r.text);
    slow.tick().await.unwrap();
    let run_id = job(&app, &id).await["provider_run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(fake.state.lock().unwrap().cancels, vec![run_id]);
    assert!(timeline(&job(&app, &id).await).contains("cancel requested"));
    assert_eq!(
        app.get("/api/v1/projects/shop/environments/demo/lock", ADMIN)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

async fn rate_limits_and_outages_retry_then_fail(db: TestDb) {
    let app = App::start(db).await;
    let fake = Fake::start(Kind::GitHub, "ghp_fake_token").await;
    secret(&app, "gh-token", "ghp_fake_token").await;
    let _repo = remote_shop(
        &app,
        "github",
        json!({"repository": "acme/shop", "api_url": fake.api_url, "workflows": {"*": "deploy.yml"}, "token_secret": "gh-token"}),
        json!({}),
    )
    .await;
    let d = dispatcher(&app, Duration::from_millis(1));
    // One 403 rate limit (x-ratelimit-reset) then the trigger goes through.
    fake.with(|st| st.rate_limit_next = 1);
    let id = deploy(&app).await;
    let j = tick_until_done(&app, &d, &id).await;
    assert_eq!(j["state"], "SUCCEEDED", "{}", timeline(&j));
    assert!(timeline(&j).contains("rate limited"), "{}", timeline(&j));

    // An outage longer than the retries: a clear failure, never a stuck job.
    fake.with(|st| st.outage_next = 100);
    let id = deploy(&app).await;
    let j = tick_until_done(&app, &d, &id).await;
    assert_eq!(j["state"], "FAILED");
    let t = timeline(&j);
    assert!(t.contains("failed 3 times in a row; giving up"), "{t}");
    assert!(t.contains("HTTP 503"), "{t}");
    fake.with(|st| st.outage_next = 0);

    // Wrong credentials are refused at once.
    secret(&app, "gh-token", "ghp_revoked").await;
    let id = deploy(&app).await;
    let j = tick_until_done(&app, &d, &id).await;
    assert_eq!(j["state"], "FAILED");
    assert!(timeline(&j).contains("refused"), "{}", timeline(&j));
    secret(&app, "gh-token", "ghp_fake_token").await;

    // A run that outlives the job's timeout: TIMED_OUT and the run is cancelled.
    app.send(
        Method::PUT,
        "/api/v1/projects/shop/environments/demo",
        Some(ADMIN),
        Some(json!({"timeout_secs": 1})),
        &[],
    )
    .await
    .ok();
    fake.with(|st| st.script = vec!["queued".into(), "in_progress".into()]);
    let slow = dispatcher(&app, Duration::from_secs(3600));
    let id = deploy(&app).await;
    slow.tick().await.unwrap();
    assert_eq!(job(&app, &id).await["state"], "RUNNING");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    slow.tick().await.unwrap();
    let j = job(&app, &id).await;
    assert_eq!(j["state"], "TIMED_OUT", "{}", timeline(&j));
    assert_eq!(fake.state.lock().unwrap().cancels.len(), 1);
}

async fn gitlab_trigger_token_webhooks_polling_and_provider_move(db: TestDb) {
    let app = App::start(db).await;
    let fake = Fake::start(Kind::GitLab, "glpat-fake").await;
    secret(&app, "gl-trigger", "glpat-fake-trigger").await;
    secret(&app, "gl-token", "glpat-fake").await;
    secret(&app, "gl-hook", "gitlab-hook-token").await;
    // The project starts on GitHub and moves to GitLab by changing its integration only.
    let _repo = remote_shop(
        &app,
        "github",
        json!({"repository": "acme/shop", "workflows": {"*": "deploy.yml"}, "token_secret": "gh-token"}),
        json!({}),
    )
    .await;
    let r = app
        .send(
            Method::PUT,
            "/api/v1/projects/shop/integration",
            Some(ADMIN),
            Some(json!({"provider": "gitlab", "integration": {"project": "acme/shop", "trigger": "trigger_token"}})),
            &[],
        )
        .await;
    assert_eq!(
        r.problem(),
        (
            "validation-failed",
            Some("integration/trigger_token_secret")
        )
    );
    let gitlab = json!({"project": "acme/shop", "api_url": fake.api_url, "trigger": "trigger_token",
        "trigger_token_secret": "gl-trigger", "token_secret": "gl-token", "webhook_token_secret": "gl-hook"});
    let r = app
        .send(
            Method::PUT,
            "/api/v1/projects/shop/integration",
            Some(ADMIN),
            Some(json!({"provider": "gitlab", "integration": gitlab})),
            &[],
        )
        .await;
    assert_eq!(
        (r.status, r.body["provider"].as_str()),
        (StatusCode::OK, Some("gitlab")),
        "{}",
        r.text
    );

    let d = dispatcher(&app, Duration::from_secs(3600));
    let id = deploy(&app).await;
    d.tick().await.unwrap();
    let j = job(&app, &id).await;
    assert_eq!(
        (j["state"].as_str(), j["provider_run_id"].as_str()),
        (Some("RUNNING"), Some("9001")),
        "{j}"
    );
    assert_eq!(
        j["provider_url"],
        "https://gitlab.example.com/acme/shop/-/pipelines/9001"
    );
    let form = fake.run(0).trigger;
    assert_eq!(form["token"], "glpat-fake-trigger");
    assert_eq!(form["ref"], "develop");
    assert_eq!(form["variables[JOB_ID]"], id.as_str());
    assert_eq!(form["variables[ENV]"], "demo");
    assert_eq!(form["variables[REF]"], "develop");
    assert_eq!(
        form["variables[DRAVEN_CALLBACK_URL]"].as_str().unwrap(),
        format!("{}/api/v1/callbacks/{id}", app.base)
    );
    fake.set_status(0, "running");
    let (status, body) = fake
        .delivery(0, "gitlab-hook-token")
        .send(&hook(&app, "gitlab"))
        .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("RUNNING")),
        "{body}"
    );
    fake.set_status(0, "success");
    let (status, body) = fake
        .delivery(0, "wrong-token")
        .send(&hook(&app, "gitlab"))
        .await;
    assert_eq!(
        (status, code(&body)),
        (401, "webhook-signature-invalid"),
        "{body}"
    );
    let done = fake.delivery(0, "gitlab-hook-token");
    let (status, body) = done.send(&hook(&app, "gitlab")).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("SUCCEEDED")),
        "{body}"
    );
    let (status, body) = done.send(&hook(&app, "gitlab")).await;
    assert_eq!((status, code(&body)), (409, "webhook-replayed"), "{body}");

    // The pipelines API, followed by polling; a failed pipeline fails the job.
    let mut api = gitlab.clone();
    api["trigger"] = json!("pipelines_api");
    api["webhook_signing_secret"] = json!("gl-signing");
    secret(
        &app,
        "gl-signing",
        "whsec_MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=",
    )
    .await;
    app.send(
        Method::PUT,
        "/api/v1/projects/shop/integration",
        Some(ADMIN),
        Some(json!({"provider": "gitlab", "integration": api})),
        &[],
    )
    .await
    .ok();
    let poll = dispatcher(&app, Duration::from_millis(1));
    // A 429 with RateLimit-Reset / Retry-After first: retried after the wait.
    fake.with(|st| st.rate_limit_next = 1);
    let id = deploy(&app).await;
    let j = tick_until_done(&app, &poll, &id).await;
    assert_eq!(j["state"], "SUCCEEDED", "{}", timeline(&j));
    assert!(timeline(&j).contains("rate limited"), "{}", timeline(&j));
    let vars = fake.run(1).trigger["variables"].clone();
    assert!(vars
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["key"] == "JOB_ID" && v["value"] == id.as_str()));
    fake.with(|st| st.script = vec!["pending".into(), "failed".into()]);
    let id = deploy(&app).await;
    let j = tick_until_done(&app, &poll, &id).await;
    assert_eq!(
        (j["state"].as_str(), j["provider_status"].as_str()),
        (Some("FAILED"), Some("failed"))
    );

    // With a signing token: the webhook-signature scheme is required.
    fake.with(|st| st.script = vec!["running".into()]);
    let id = deploy(&app).await;
    d.tick().await.unwrap();
    fake.set_status(3, "canceled");
    let (status, body) = fake
        .delivery(3, "gitlab-hook-token")
        .send(&hook(&app, "gitlab"))
        .await;
    assert_eq!(
        (status, code(&body)),
        (401, "webhook-signature-invalid"),
        "{body}"
    );
    let signed =
        fake.signed_gitlab_delivery(3, "whsec_MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=");
    let (status, body) = signed.send(&hook(&app, "gitlab")).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("CANCELLED")),
        "{body}"
    );
    assert_eq!(job(&app, &id).await["state"], "CANCELLED");
}

async fn bitbucket_custom_pipeline_webhooks_polling_and_stop(db: TestDb) {
    let app = App::start(db).await;
    let fake = Fake::start(Kind::Bitbucket, "bb-access-token").await;
    secret(&app, "bb-token", "bb-access-token").await;
    secret(&app, "bb-hook", HOOK_SECRET).await;
    let _repo = remote_shop(
        &app,
        "bitbucket",
        json!({"workspace": "acme", "repo_slug": "shop", "api_url": fake.api_url,
               "pipelines": {"demo": "deploy-demo", "*": "deploy"}, "token_secret": "bb-token", "webhook_secret": "bb-hook"}),
        json!({}),
    )
    .await;
    let d = dispatcher(&app, Duration::from_secs(3600));
    let id = deploy(&app).await;
    d.tick().await.unwrap();
    let j = job(&app, &id).await;
    assert_eq!(j["state"], "RUNNING", "{j}");
    let run = fake.run(0);
    assert_eq!(j["provider_run_id"].as_str(), Some(run.uuid.as_str()));
    assert_eq!(
        j["provider_url"],
        "https://bitbucket.org/acme/shop/pipelines/results/1"
    );
    let target = &run.trigger["target"];
    assert_eq!(
        (
            target["type"].as_str(),
            target["ref_type"].as_str(),
            target["ref_name"].as_str(),
            target["selector"]["pattern"].as_str()
        ),
        (
            Some("pipeline_ref_target"),
            Some("branch"),
            Some("develop"),
            Some("deploy-demo")
        )
    );
    let vars = run.trigger["variables"].as_array().unwrap().clone();
    assert!(vars
        .iter()
        .any(|v| v["key"] == "DRAVEN_CALLBACK_TOKEN" && v["secured"] == true));
    fake.set_status(0, "IN_PROGRESS");
    let (status, body) = fake
        .delivery(0, HOOK_SECRET)
        .send(&hook(&app, "bitbucket"))
        .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("RUNNING")),
        "{body}"
    );
    fake.set_status(0, "COMPLETED/SUCCESSFUL");
    let (status, body) = fake
        .delivery(0, "wrong")
        .send(&hook(&app, "bitbucket"))
        .await;
    assert_eq!(
        (status, code(&body)),
        (401, "webhook-signature-invalid"),
        "{body}"
    );
    // Build numbers repeat across repositories: another repository's build #1 is not this job's.
    let ours = fake.delivery(0, HOOK_SECRET);
    let theirs = String::from_utf8(ours.body.clone()).unwrap().replace(
        "\"full_name\":\"acme/shop\"",
        "\"full_name\":\"other/shop\"",
    );
    assert!(theirs.contains("other/shop"));
    let theirs = resign(&ours, theirs.into_bytes(), HOOK_SECRET, "x-hub-signature");
    let (status, body) = theirs.send(&hook(&app, "bitbucket")).await;
    assert_eq!((status, code(&body)), (404, "not-found"), "{body}");
    let (status, body) = fake
        .delivery(0, HOOK_SECRET)
        .send(&hook(&app, "bitbucket"))
        .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("SUCCEEDED")),
        "{body}"
    );

    // Polling (after a 429 and an outage, both retried); COMPLETED/ERROR fails the job.
    let poll = dispatcher(&app, Duration::from_millis(1));
    fake.with(|st| {
        st.rate_limit_next = 1;
        st.outage_next = 1;
    });
    let id = deploy(&app).await;
    let j = tick_until_done(&app, &poll, &id).await;
    assert_eq!(j["state"], "SUCCEEDED", "{}", timeline(&j));
    assert!(timeline(&j).contains("rate limited"), "{}", timeline(&j));
    assert!(timeline(&j).contains("HTTP 503"), "{}", timeline(&j));
    fake.with(|st| st.script = vec!["PENDING".into(), "COMPLETED/ERROR".into()]);
    let id = deploy(&app).await;
    let j = tick_until_done(&app, &poll, &id).await;
    assert_eq!(
        (j["state"].as_str(), j["provider_status"].as_str()),
        (Some("FAILED"), Some("COMPLETED/ERROR"))
    );

    // Cancel calls stopPipeline.
    fake.with(|st| st.script = vec!["IN_PROGRESS".into()]);
    let id = deploy(&app).await;
    d.tick().await.unwrap();
    let uuid = job(&app, &id).await["provider_run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.post(&format!("/api/v1/deploys/{id}/cancel"), ADMIN, json!({}))
        .await;
    d.tick().await.unwrap();
    assert_eq!(fake.state.lock().unwrap().cancels, vec![uuid]);
    assert!(fake.runs()[3].status().ends_with("STOPPED"));
}

/// A local HTTP receiver for Slack / Teams webhooks: records bodies; fails the first
/// `failures` requests with 500.
async fn receiver(failures: usize) -> (String, Arc<Mutex<Vec<Value>>>) {
    use axum::routing::post;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(Mutex::new(0usize));
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |axum::Json(v): axum::Json<Value>| {
            let s = s.clone();
            let calls = calls.clone();
            async move {
                let n = {
                    let mut c = calls.lock().unwrap();
                    *c += 1;
                    *c
                };
                if n <= failures {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                s.lock().unwrap().push(v);
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), seen)
}

/// The SMTP server scripts/test.sh starts (aiosmtpd); under CI=true its absence fails.
fn test_smtp() -> Option<(String, u16)> {
    match std::env::var("DRAVEN_TEST_SMTP") {
        Ok(v) => {
            let (host, port) = v.rsplit_once(':').expect("DRAVEN_TEST_SMTP=host:port");
            Some((host.to_owned(), port.parse().expect("port")))
        }
        Err(_) if draven_store::testing::in_ci() => {
            panic!("CI=true and DRAVEN_TEST_SMTP is not set: the SMTP test server did not start (run scripts/test.sh)")
        }
        Err(_) => {
            eprintln!("SKIPPED email part (no DRAVEN_TEST_SMTP; scripts/test.sh starts aiosmtpd and sets it)");
            None
        }
    }
}

async fn notifications_reach_slack_teams_and_email(db: TestDb) {
    let app = App::start(db).await;
    let fake = Fake::start(Kind::GitHub, "ghp_fake_token").await;
    secret(&app, "gh-token", "ghp_fake_token").await;
    let (slack_url, slack) = receiver(0).await;
    let (teams_url, teams) = receiver(2).await;
    secret(&app, "slack-url", &slack_url).await;
    secret(&app, "teams-url", &teams_url).await;
    secret(&app, "broken-url", "http://127.0.0.1:9/unreachable").await;
    let _repo = remote_shop(
        &app,
        "github",
        json!({"repository": "acme/shop", "api_url": fake.api_url, "workflows": {"*": "deploy.yml"}, "token_secret": "gh-token"}),
        json!({"required_approvals": 1}),
    )
    .await;
    let smtp = test_smtp();
    let mut channels = vec![
        json!({"type": "slack", "webhook_url_secret": "slack-url"}),
        json!({"type": "teams", "webhook_url_secret": "teams-url", "events": ["started", "succeeded", "failed"]}),
        json!({"type": "slack", "webhook_url_secret": "broken-url", "events": ["succeeded"]}),
    ];
    if let Some((host, port)) = &smtp {
        channels.push(
            json!({"type": "email", "to": ["ops@example.com"], "from": "draven@example.com",
            "smtp": {"host": host, "port": port, "tls": "none"}}),
        );
    }
    let path = "/api/v1/projects/shop/environments/demo/notifications";
    let bad = app
        .send(
            Method::PUT,
            path,
            Some(ADMIN),
            Some(json!({"channels": [{"type": "pager"}]})),
            &[],
        )
        .await;
    assert_eq!(bad.problem().0, "validation-failed");
    assert_eq!(bad.problem().1, Some("channels/0/type"));
    let bad = app
        .send(Method::PUT, path, Some(ADMIN), Some(json!({"channels": [{"type": "slack", "webhook_url_secret": "s", "events": ["exploded"]}]})), &[])
        .await;
    assert_eq!(bad.problem().1, Some("channels/0/events/0"));
    let r = app
        .send(
            Method::PUT,
            path,
            Some(ADMIN),
            Some(json!({"channels": channels})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // approval requested → approved → started → succeeded.
    let id = deploy(&app).await;
    let j = job(&app, &id).await;
    assert_eq!(j["state"], "AWAITING_APPROVAL");
    let approver = app.user_with("ann", "approver", None, None).await;
    let r = app
        .post(
            &format!(
                "/api/v1/approvals/{}/votes",
                j["approval_id"].as_str().unwrap()
            ),
            &approver,
            json!({"verdict": "approve"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let d = dispatcher(&app, Duration::from_millis(1));
    let j = tick_until_done(&app, &d, &id).await;
    assert_eq!(j["state"], "SUCCEEDED");

    let n = Notifier::new(
        app.db.db.clone(),
        app.kek.clone(),
        NotifyConfig {
            public_url: app.base.clone(),
            max_attempts: 4,
            backoff_base: Duration::from_millis(5),
            backoff_max: Duration::from_millis(20),
            request_timeout: Duration::from_secs(5),
            ..NotifyConfig::default()
        },
    );
    for _ in 0..100 {
        n.tick().await.unwrap();
        let outbox = app.db.job_notifications(&id).await.unwrap();
        if outbox.iter().all(|(_, _, state, _)| state != "pending") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let outbox = app.db.job_notifications(&id).await.unwrap();
    let states: Vec<(String, String, String)> = outbox
        .iter()
        .map(|(e, c, s, _)| (e.clone(), c.clone(), s.clone()))
        .collect();
    let expect = |e: &str, c: &str, s: &str| (e.to_owned(), c.to_owned(), s.to_owned());
    assert!(
        states.contains(&expect("approval_requested", "slack", "sent")),
        "{states:?}"
    );
    assert!(
        states.contains(&expect("started", "teams", "sent")),
        "{states:?}"
    );
    assert!(
        states.contains(&expect("succeeded", "teams", "sent")),
        "{states:?}"
    );
    // The broken channel was retried and given up; the job is untouched.
    let broken = outbox
        .iter()
        .find(|(e, c, s, _)| e == "succeeded" && c == "slack" && s == "failed");
    assert_eq!(broken.map(|b| b.3), Some(4), "{outbox:?}");
    assert_eq!(job(&app, &id).await["state"], "SUCCEEDED");

    let slack = slack.lock().unwrap().clone();
    assert_eq!(slack.len(), 3, "{slack:?}");
    assert!(slack.iter().all(
        |m| m["text"].as_str().unwrap().contains("shop") && m["blocks"][0]["type"] == "header"
    ));
    assert!(slack.iter().any(|m| m["blocks"][0]["text"]["text"]
        .as_str()
        .unwrap()
        .contains("waiting for approval")));
    let teams = teams.lock().unwrap().clone();
    assert_eq!(
        teams.len(),
        2,
        "the first two attempts failed and were retried: {teams:?}"
    );
    assert_eq!(teams[0]["type"], "message");
    let card = &teams[0]["attachments"][0];
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(card["content"]["type"], "AdaptiveCard");
    assert_eq!(
        card["content"]["actions"][0]["url"].as_str().unwrap(),
        format!("{}/api/v1/deploys/{id}", app.base)
    );
    if smtp.is_some() {
        let sent = outbox
            .iter()
            .filter(|(_, c, s, _)| c == "email" && s == "sent")
            .count();
        assert_eq!(sent, 3, "{outbox:?}");
        if let Ok(dir) = std::env::var("DRAVEN_TEST_SMTP_MAILDIR") {
            let mut found = 0;
            for entry in std::fs::read_dir(std::path::Path::new(&dir).join("new")).unwrap() {
                let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
                if text.contains(&id) {
                    assert!(text.contains("To: ops@example.com"), "{text}");
                    found += 1;
                }
            }
            assert_eq!(
                found, 3,
                "three emails about {id} in the SMTP server's maildir"
            );
        }
    }
    let metrics = app
        .send(Method::GET, "/metrics", None, None, &[])
        .await
        .text;
    assert!(
        metrics.contains("draven_notifications_total{channel=\"slack\",outcome=\"failed\"}"),
        "{metrics}"
    );
}

draven_store::on_both_backends!(
    github_deploy_follows_signed_webhooks,
    github_polling_finds_runs_maps_failures_and_cancels,
    rate_limits_and_outages_retry_then_fail,
    gitlab_trigger_token_webhooks_polling_and_provider_move,
    bitbucket_custom_pipeline_webhooks_polling_and_stop,
    notifications_reach_slack_teams_and_email,
);
