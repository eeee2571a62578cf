//! Deploy requests over HTTP against a real git repository: policies (branches, tags, signed
//! tags, freeze windows), the two-person rule, cancel, timelines and tenant isolation. On
//! SQLite and PostgreSQL.

use super::{App, ADMIN};
use draven_deploy::testing::{fixture, GitFixture};
use draven_store::testing::TestDb;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// The seed's set-up: project `shop`, `demo` deploys `develop` without approval, `prod`
/// (protected) takes only `v*` tags signed by an allowed signer, with two approvers.
async fn shop(app: &App, f: &GitFixture) {
    app.post("/api/v1/environments", ADMIN, json!({"name": "demo"}))
        .await
        .ok();
    app.post(
        "/api/v1/environments",
        ADMIN,
        json!({"name": "prod", "protected": true}),
    )
    .await
    .ok();
    let r = app
        .post("/api/v1/projects", ADMIN, json!({"key": "shop", "provider": "local", "repo": f.repo, "allowed_signers": f.ann_signers}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = app
        .send(
            Method::PUT,
            "/api/v1/projects/shop/environments/demo",
            Some(ADMIN),
            Some(json!({"allowed_branches": ["develop"]})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let prod = json!({"tags_only": true, "tag_pattern": "v*", "signed_tags_only": true, "required_approvals": 2});
    let r = app
        .send(
            Method::PUT,
            "/api/v1/projects/shop/environments/prod",
            Some(ADMIN),
            Some(prod),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

async fn deploy(app: &App, token: &str, env: &str, r: &str) -> super::Resp {
    app.post(
        "/api/v1/projects/shop/deploys",
        token,
        json!({"environment": env, "ref": r}),
    )
    .await
}

fn states(job: &Value) -> Vec<String> {
    job["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap().to_owned())
        .collect()
}

async fn policies_decide_deploys(db: TestDb) {
    let app = App::start(db).await;
    let f = fixture();
    shop(&app, &f).await;
    let dev = app.user_with("dev", "deployer", Some("shop"), None).await;
    let ok = deploy(&app, &dev, "demo", "develop").await;
    assert_eq!(
        (ok.status, ok.body["state"].as_str()),
        (StatusCode::CREATED, Some("QUEUED")),
        "{}",
        ok.text
    );
    assert_eq!(ok.body["commit_sha"], f.main_sha.as_str());
    assert_eq!(ok.body["ref_kind"], "branch");
    assert_eq!(states(&ok.body), vec!["PENDING", "QUEUED"]);
    let refused = deploy(&app, &dev, "demo", "feature/x").await;
    assert_eq!(
        (
            refused.body["state"].as_str(),
            refused.body["refused_rule"].as_str()
        ),
        (Some("REJECTED"), Some("policy-branch-not-allowed"))
    );
    assert!(refused.body["reason"]
        .as_str()
        .unwrap()
        .contains("feature/x"));
    // A deployer scoped to the project has no grant naming prod: refused before any job.
    assert_eq!(
        deploy(&app, &dev, "prod", "v1.0.0").await.status,
        StatusCode::FORBIDDEN
    );
    let rel = app
        .user_with("rel", "deployer", Some("shop"), Some("prod"))
        .await;
    for (r, rule) in [
        ("develop", "policy-tags-only"),
        ("light", "policy-tag-pattern"),
        ("v0.9.0", "policy-tag-not-signed"),
        ("v1.0.1", "policy-tag-not-signed"),
    ] {
        let j = deploy(&app, &rel, "prod", r).await;
        assert_eq!(
            (j.body["state"].as_str(), j.body["refused_rule"].as_str()),
            (Some("REJECTED"), Some(rule)),
            "{r}: {}",
            j.text
        );
    }
    // Unknown refs, environments without a policy, and ambiguous names are clear 4xx.
    let r = deploy(&app, &dev, "demo", "nope").await;
    assert_eq!(
        (r.status, r.problem()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            ("validation-failed", Some("ref"))
        )
    );
    let r = deploy(&app, &dev, "demo", "both").await;
    assert!(r.body["detail"]
        .as_str()
        .unwrap()
        .contains("both a branch and a tag"));
    app.post("/api/v1/environments", ADMIN, json!({"name": "stage"}))
        .await;
    let r = deploy(&app, &dev, "stage", "develop").await;
    assert_eq!(
        (r.status, r.problem().1),
        (StatusCode::NOT_FOUND, Some("environment"))
    );
    let r = deploy(&app, &dev, "mars", "develop").await;
    assert_eq!(
        (r.status, r.problem().1),
        (StatusCode::NOT_FOUND, Some("environment"))
    );
    // Listing and filtering.
    let rejected = app
        .get("/api/v1/deploys?state=REJECTED&project=shop", ADMIN)
        .await;
    assert_eq!(rejected.body["items"].as_array().unwrap().len(), 5);
    assert_eq!(
        app.get("/api/v1/deploys?state=DONE", ADMIN).await.problem(),
        ("validation-failed", Some("state"))
    );
}

async fn prod_needs_two_other_people(db: TestDb) {
    let app = App::start(db).await;
    let f = fixture();
    shop(&app, &f).await;
    let rel = app
        .user_with("rel", "deployer", Some("shop"), Some("prod"))
        .await;
    let job = deploy(&app, &rel, "prod", "v1.0.0").await;
    assert_eq!(
        (job.status, job.body["state"].as_str()),
        (StatusCode::CREATED, Some("AWAITING_APPROVAL")),
        "{}",
        job.text
    );
    let id = job.body["id"].as_str().unwrap().to_owned();
    let votes = format!(
        "/api/v1/approvals/{}/votes",
        job.body["approval_id"].as_str().unwrap()
    );
    // The requester never counts, even with an approver grant.
    app.post(
        "/api/v1/grants",
        ADMIN,
        json!({"user": "rel", "role": "approver", "environment": "prod"}),
    )
    .await;
    assert_eq!(
        app.post(&votes, &rel, json!({"verdict": "approve"}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let amy = app.user_with("amy", "approver", None, Some("prod")).await;
    let bob = app.user_with("bob", "approver", None, Some("prod")).await;
    let r = app
        .post(&votes, &amy, json!({"verdict": "approve", "comment": "ok"}))
        .await;
    assert_eq!(r.body["state"], "pending", "one of two");
    assert_eq!(
        app.post(&votes, &amy, json!({"verdict": "approve"}))
            .await
            .status,
        StatusCode::CONFLICT,
        "one vote per person"
    );
    assert_eq!(
        app.get(&format!("/api/v1/deploys/{id}"), ADMIN).await.body["state"],
        "AWAITING_APPROVAL"
    );
    let r = app
        .post(
            &votes,
            &bob,
            json!({"verdict": "approve", "comment": "ship it"}),
        )
        .await;
    assert_eq!(r.body["state"], "approved");
    let j = app.get(&format!("/api/v1/deploys/{id}"), ADMIN).await;
    assert_eq!(
        states(&j.body),
        vec!["PENDING", "AWAITING_APPROVAL", "QUEUED"]
    );
    // A rejection ends the next one.
    let job = deploy(&app, &rel, "prod", "v1.0.0").await;
    let votes = format!(
        "/api/v1/approvals/{}/votes",
        job.body["approval_id"].as_str().unwrap()
    );
    app.post(
        &votes,
        &amy,
        json!({"verdict": "reject", "comment": "not today"}),
    )
    .await;
    let j = app
        .get(
            &format!("/api/v1/deploys/{}", job.body["id"].as_str().unwrap()),
            ADMIN,
        )
        .await;
    assert_eq!(j.body["state"], "REJECTED");
    // Cancel withdraws a pending approval; a finished job cannot be cancelled.
    let job = deploy(&app, &rel, "prod", "v1.0.0").await;
    let id = job.body["id"].as_str().unwrap().to_owned();
    let c = app
        .post(&format!("/api/v1/deploys/{id}/cancel"), &rel, json!({}))
        .await;
    assert_eq!(c.body["state"], "CANCELLED", "{}", c.text);
    let a = app
        .get(
            &format!(
                "/api/v1/approvals/{}",
                job.body["approval_id"].as_str().unwrap()
            ),
            ADMIN,
        )
        .await;
    assert_eq!(a.body["state"], "withdrawn");
    assert_eq!(
        app.post(&format!("/api/v1/deploys/{id}/cancel"), &rel, json!({}))
            .await
            .status,
        StatusCode::CONFLICT
    );
    let trail = app.audit("action=deploy.").await;
    assert!(trail
        .iter()
        .any(|e| e["action"] == "deploy.queued" && e["ref"] == "v1.0.0"));
    assert!(trail.iter().any(|e| e["action"] == "deploy.cancelled"));
}

async fn freeze_windows_and_their_override(db: TestDb) {
    let app = App::start(db).await;
    let f = fixture();
    shop(&app, &f).await;
    // A window that is always open: starts every minute, lasts two.
    let frozen = json!({"freeze_windows": [{"cron": "* * * * *", "duration_minutes": 2, "reason": "release freeze"}]});
    let r = app
        .send(
            Method::PUT,
            "/api/v1/projects/shop/environments/demo",
            Some(ADMIN),
            Some(frozen),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let dev = app.user_with("dev", "deployer", Some("shop"), None).await;
    let j = deploy(&app, &dev, "demo", "develop").await;
    assert_eq!(
        (j.body["state"].as_str(), j.body["refused_rule"].as_str()),
        (Some("REJECTED"), Some("policy-freeze-window"))
    );
    assert!(j.body["reason"]
        .as_str()
        .unwrap()
        .contains("release freeze"));
    let r = app
        .post(
            "/api/v1/projects/shop/deploys",
            &dev,
            json!({"environment": "demo", "ref": "develop", "override_freeze": true}),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "only administrators override"
    );
    let r = app
        .post(
            "/api/v1/projects/shop/deploys",
            ADMIN,
            json!({"environment": "demo", "ref": "develop", "override_freeze": true}),
        )
        .await;
    assert_eq!(r.body["state"], "QUEUED", "{}", r.text);
    assert!(r.body["timeline"][1]["message"]
        .as_str()
        .unwrap()
        .contains("overridden"));
    let bad = json!({"freeze_windows": [{"cron": "whenever", "duration_minutes": 5}]});
    let r = app
        .send(
            Method::PUT,
            "/api/v1/projects/shop/environments/demo",
            Some(ADMIN),
            Some(bad),
            &[],
        )
        .await;
    assert_eq!(
        r.problem(),
        ("validation-failed", Some("freeze_windows/0/cron"))
    );
}

async fn deploys_are_tenant_scoped(db: TestDb) {
    let app = App::start(db).await;
    let f = fixture();
    shop(&app, &f).await;
    let job = deploy(&app, ADMIN, "demo", "develop").await;
    let id = job.body["id"].as_str().unwrap().to_owned();
    let beta = app
        .post("/api/v1/tenants", ADMIN, json!({"name": "beta"}))
        .await
        .body["admin_token"]
        .as_str()
        .unwrap()
        .to_owned();
    app.post("/api/v1/environments", &beta, json!({"name": "demo"}))
        .await;
    assert_eq!(
        app.get("/api/v1/projects/shop", &beta).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&format!("/api/v1/deploys/{id}"), &beta)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.post(&format!("/api/v1/deploys/{id}/cancel"), &beta, json!({}))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        deploy(&app, &beta, "demo", "develop").await.status,
        StatusCode::NOT_FOUND
    );
    assert!(app.get("/api/v1/deploys", &beta).await.body["items"]
        .as_array()
        .unwrap()
        .is_empty());
    let r = app
        .post(
            "/api/v1/projects",
            ADMIN,
            json!({"key": "x", "provider": "svn", "repo": "r"}),
        )
        .await;
    assert_eq!(r.problem(), ("validation-failed", Some("provider")));
}

async fn locks_are_visible_and_force_unlockable(db: TestDb) {
    let app = App::start(db).await;
    let f = fixture();
    shop(&app, &f).await;
    assert_eq!(
        app.get("/api/v1/projects/shop/environments/prod/lock", ADMIN)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let tenant: String = sqlx::query_scalar("SELECT id FROM tenants WHERE name = 'default'")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    let key = draven_store::locks::LockKey {
        tenant_id: &tenant,
        project: "shop",
        environment: "prod",
    };
    let actor = draven_store::audit::Actor::system();
    app.db
        .acquire_environment_lock(&actor, key, "job-1", "runner-a", 60_000)
        .await
        .unwrap();
    let l = app
        .get("/api/v1/projects/shop/environments/prod/lock", ADMIN)
        .await;
    assert_eq!(
        (l.body["holder_job"].as_str(), l.body["holder"].as_str()),
        (Some("job-1"), Some("runner-a"))
    );
    let dev = app.user_with("dev", "deployer", Some("shop"), None).await;
    let path = "/api/v1/projects/shop/environments/prod/lock?reason=runner%20host%20died";
    assert_eq!(
        app.send(Method::DELETE, path, Some(&dev), None, &[])
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let r = app
        .send(
            Method::DELETE,
            "/api/v1/projects/shop/environments/prod/lock?reason=",
            Some(ADMIN),
            None,
            &[],
        )
        .await;
    assert_eq!(r.problem(), ("validation-failed", Some("reason")));
    let r = app.send(Method::DELETE, path, Some(ADMIN), None, &[]).await;
    assert_eq!(
        (r.status, r.body["holder_job"].as_str()),
        (StatusCode::OK, Some("job-1"))
    );
    assert_eq!(
        app.get("/api/v1/projects/shop/environments/prod/lock", ADMIN)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let trail = app.audit("action=lock.force-unlock").await;
    assert_eq!(trail[0]["detail"]["reason"], "runner host died");
    assert_eq!(trail[0]["actor"], "user:admin");
}

draven_store::on_both_backends!(
    locks_are_visible_and_force_unlockable,
    policies_decide_deploys,
    prod_needs_two_other_people,
    freeze_windows_and_their_override,
    deploys_are_tenant_scoped,
);
