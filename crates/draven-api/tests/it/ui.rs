//! The web UI over plain HTTP: sign-in and its audit, the session cookie's attributes, CSRF
//! refusal on every form, sign-out and expiry, errors shown on the offending field, and RBAC
//! hiding the buttons a user may not use (and refusing them when forced). On SQLite and
//! PostgreSQL. The browser test is in `crates/draven/tests/it/ui_browser.rs`.

use super::{App, ADMIN};
use draven_api::ApiConfig;
use draven_deploy::testing::fixture;
use draven_store::testing::TestDb;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::collections::HashMap;

/// A cookie-keeping client that does not follow redirects, signed in as one user.
struct Browser {
    base: String,
    http: reqwest::Client,
    cookies: HashMap<String, String>,
    /// The last `Set-Cookie` headers seen.
    set_cookies: Vec<String>,
}

struct Page {
    status: StatusCode,
    location: String,
    text: String,
}

impl Page {
    /// The CSRF token of the first form on the page.
    fn csrf(&self) -> String {
        let at = self
            .text
            .find(r#"name="_csrf" value=""#)
            .expect("a form with _csrf");
        let rest = &self.text[at + r#"name="_csrf" value=""#.len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }
}

impl Browser {
    fn new(app: &App) -> Browser {
        Browser {
            base: app.base.clone(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
            set_cookies: vec![],
        }
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Page {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if !self.cookies.is_empty() {
            let c: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            req = req.header("cookie", c.join("; "));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if method == Method::POST {
            req = req
                .header("content-type", "application/x-www-form-urlencoded")
                .body(serde_urlencoded::to_string(form).unwrap());
        }
        let resp = req.send().await.unwrap();
        self.set_cookies = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        for c in &self.set_cookies {
            let (kv, _) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            if v.is_empty() {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        let status = resp.status();
        let location = resp
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        Page {
            status,
            location,
            text: resp.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        self.send(Method::GET, path, &[], &[]).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        self.send(Method::POST, path, form, &[]).await
    }

    /// Signs in through the form; returns the redirect.
    async fn sign_in(&mut self, user: &str, password: &str) -> Page {
        let login = self.get("/ui/login").await;
        assert_eq!(login.status, StatusCode::OK);
        let csrf = login.csrf();
        self.post(
            "/ui/login",
            &[
                ("_csrf", &csrf),
                ("tenant", "default"),
                ("username", user),
                ("password", password),
                ("next", "/ui/"),
            ],
        )
        .await
    }
}

async fn set_password(app: &App, user: &str, password: &str) {
    let r = app
        .send(
            Method::PATCH,
            &format!("/api/v1/users/{user}"),
            Some(ADMIN),
            Some(json!({"password": password})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

async fn sign_in_csrf_and_sign_out(db: TestDb) {
    let app = App::start(db).await;
    let mut b = Browser::new(&app);
    let r = b.get("/").await;
    assert_eq!(
        (r.status, r.location.as_str()),
        (StatusCode::SEE_OTHER, "/ui/")
    );
    let r = b.get("/ui/deploys").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(
        r.location.starts_with("/ui/login?next=%2Fui%2Fdeploys"),
        "{}",
        r.location
    );

    // The sign-in form is protected by a double-submit cookie.
    let login = b.get("/ui/login").await;
    assert!(b.set_cookies[0].contains("HttpOnly") && b.set_cookies[0].contains("SameSite=Strict"));
    let r = b
        .post(
            "/ui/login",
            &[
                ("_csrf", "forged"),
                ("tenant", "default"),
                ("username", "admin"),
                ("password", "x"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        login.text.contains(r#"for="f-password""#),
        "labelled inputs"
    );

    // The bootstrap admin has no password yet: nobody signs in with one.
    let r = b.sign_in("admin", "correct horse battery").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text.contains("Wrong tenant, username or password"));
    assert!(r.text.contains(r#"id="f-password" type="password" name="password" value="" required autocomplete="current-password" aria-invalid="true""#), "{}", r.text);
    set_password(&app, "admin", "correct horse battery").await;
    let r = b.sign_in("admin", "wrong horse battery").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let denied = app.audit("action=auth.authenticate&outcome=denied").await;
    assert!(
        denied
            .iter()
            .any(|e| e["target"] == "ui:login default/admin"),
        "{denied:?}"
    );

    let r = b.sign_in("admin", "correct horse battery").await;
    assert_eq!(
        (r.status, r.location.as_str()),
        (StatusCode::SEE_OTHER, "/ui/")
    );
    let session = b
        .set_cookies
        .iter()
        .find(|c| c.starts_with("draven_session="))
        .unwrap()
        .clone();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/ui", "Max-Age="] {
        assert!(session.contains(attr), "{session}");
    }
    assert!(
        !session.contains("Secure"),
        "plain HTTP: no Secure flag unless configured"
    );
    assert_eq!(app.audit("action=session.create").await.len(), 1);

    let home = b.get("/ui/").await;
    assert_eq!(home.status, StatusCode::OK, "{}", home.text);
    assert!(home.text.contains("admin @ default"));
    let csrf = home.csrf();

    // Every POST needs the session's CSRF token; refusals are audited and change nothing.
    for token in ["", "wrong-token"] {
        let r = b
            .post(
                "/ui/admin/environments",
                &[("_csrf", token), ("name", "stage")],
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(r.text.contains("security token"), "{}", r.text);
    }
    let refused = app.audit("action=ui.csrf&outcome=denied").await;
    assert_eq!(refused.len(), 2);
    assert_eq!(refused[0]["actor"], "user:admin");
    let envs = app.get("/api/v1/environments", ADMIN).await;
    assert!(envs
        .body
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["name"] != "stage"));

    // With it, the change is made through the API and audited as the user.
    let r = b
        .post(
            "/ui/admin/environments",
            &[("_csrf", &csrf), ("name", "stage")],
        )
        .await;
    assert_eq!(
        (r.status, r.location.as_str()),
        (StatusCode::SEE_OTHER, "/ui/admin/environments")
    );
    let created = app.audit("action=environment.create").await;
    assert_eq!(created[0]["actor"], "user:admin");

    // A refused form comes back with the offending field marked.
    let r = b
        .post(
            "/ui/admin/environments",
            &[("_csrf", &csrf), ("name", "Not A Slug")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.text.contains(r#"id="f-name-error""#) && r.text.contains(r#"aria-invalid="true""#),
        "{}",
        r.text
    );
    assert!(
        r.text.contains(r#"value="Not A Slug""#),
        "what was typed is kept"
    );

    // Sign-out ends the session on the server: the old cookie no longer works.
    let old = b.cookies.get("draven_session").unwrap().clone();
    let r = b.post("/ui/logout", &[("_csrf", &csrf)]).await;
    assert_eq!(
        (r.status, r.location.as_str()),
        (StatusCode::SEE_OTHER, "/ui/login?signed_out=1")
    );
    assert!(b
        .set_cookies
        .iter()
        .any(|c| c.starts_with("draven_session=;") && c.contains("Max-Age=0")));
    assert_eq!(app.audit("action=session.delete").await.len(), 1);
    b.cookies.insert("draven_session".into(), old);
    let r = b.get("/ui/").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.location.contains("expired=1"), "{}", r.location);

    // Behind an HTTPS proxy the session cookie is Secure.
    let mut b = Browser::new(&app);
    let login = b.get("/ui/login").await;
    let csrf = login.csrf();
    b.send(
        Method::POST,
        "/ui/login",
        &[
            ("_csrf", &csrf),
            ("tenant", "default"),
            ("username", "admin"),
            ("password", "correct horse battery"),
        ],
        &[("x-forwarded-proto", "https")],
    )
    .await;
    assert!(b
        .set_cookies
        .iter()
        .any(|c| c.starts_with("draven_session=") && c.contains("; Secure")));
}

async fn sessions_expire(db: TestDb) {
    let app = App::start_with(
        db,
        ApiConfig {
            session_ttl: std::time::Duration::from_millis(1500),
            ..ApiConfig::default()
        },
    )
    .await;
    set_password(&app, "admin", "correct horse battery").await;
    let mut b = Browser::new(&app);
    assert_eq!(
        b.sign_in("admin", "correct horse battery").await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(b.get("/ui/registry").await.status, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    let r = b.get("/ui/registry").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(
        r.location
            .starts_with("/ui/login?next=%2Fui%2Fregistry&expired=1"),
        "{}",
        r.location
    );
}

async fn rbac_hides_buttons_and_refuses_forced_actions(db: TestDb) {
    let app = App::start(db).await;
    let f = fixture();
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
            "/api/v1/projects/shop/environments/prod",
            Some(ADMIN),
            Some(json!({"tags_only": true, "required_approvals": 1})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    app.user_with("vic", "viewer", None, None).await;
    app.user_with("dee", "deployer", Some("shop"), Some("prod"))
        .await;
    app.user_with("amy", "approver", None, Some("prod")).await;
    for u in ["vic", "dee", "amy"] {
        set_password(&app, u, "password-of-some-length").await;
    }

    // A viewer sees the deploys but no deploy button, and a forced request is refused (and
    // audited like any API refusal).
    let mut vic = Browser::new(&app);
    vic.sign_in("vic", "password-of-some-length").await;
    let page = vic.get("/ui/deploys").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(page.text.contains("prod"));
    assert!(
        !page.text.contains(">Deploy<") && !page.text.contains("new-deploy"),
        "{}",
        page.text
    );
    assert!(
        !page.text.contains(r#"href="/ui/audit""#),
        "no admin navigation"
    );
    let csrf = page.csrf();
    let r = vic
        .post(
            "/ui/deploys/new",
            &[
                ("_csrf", &csrf),
                ("project", "shop"),
                ("environment", "prod"),
                ("ref", "v1.0.0"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(app
        .audit("actor=user:vic&outcome=denied")
        .await
        .iter()
        .any(|e| e["action"] == "auth.authorize"));

    // The deployer sees the button; the form shows the policy before submitting.
    let mut dee = Browser::new(&app);
    dee.sign_in("dee", "password-of-some-length").await;
    let page = dee.get("/ui/deploys").await;
    assert!(
        page.text.contains("new-deploy") && page.text.contains(">Deploy<"),
        "{}",
        page.text
    );
    let form = dee
        .get("/ui/deploys/new?project=shop&environment=prod")
        .await;
    assert!(
        form.text.contains("tags only") && form.text.contains("1 (the requester never counts)"),
        "{}",
        form.text
    );
    let csrf = form.csrf();
    // A branch is refused by the policy: the job exists, REJECTED with the rule.
    let r = dee
        .post(
            "/ui/deploys/new",
            &[
                ("_csrf", &csrf),
                ("project", "shop"),
                ("environment", "prod"),
                ("ref", "no-such-ref"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(
        r.text.contains(r#"id="f-ref-error""#),
        "the ref field is marked: {}",
        r.text
    );
    let r = dee
        .post(
            "/ui/deploys/new",
            &[
                ("_csrf", &csrf),
                ("project", "shop"),
                ("environment", "prod"),
                ("ref", "v1.0.0"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let job_page = r.location.clone();
    let page = dee.get(&job_page).await;
    assert!(page.text.contains("AWAITING_APPROVAL"), "{}", page.text);
    assert!(
        !page.text.contains(r#"id="approve""#),
        "no approve button on one's own job"
    );
    assert!(page.text.contains("someone else must approve"));
    assert!(
        page.text.contains(r#"id="cancel""#),
        "the requester may cancel"
    );

    // The approver sees approve / reject; the viewer sees neither, nor cancel.
    let page = vic.get(&job_page).await;
    assert!(!page.text.contains(r#"id="approve""#) && !page.text.contains(r#"id="cancel""#));
    let mut amy = Browser::new(&app);
    amy.sign_in("amy", "password-of-some-length").await;
    let page = amy.get(&job_page).await;
    assert!(
        page.text.contains(r#"id="approve""#) && page.text.contains(r#"id="reject""#),
        "{}",
        page.text
    );
    assert!(
        !page.text.contains(r#"id="cancel""#),
        "an approver may not cancel"
    );
    let action = {
        let at = page.text.find(r#"action="/ui/approvals/"#).unwrap() + r#"action=""#.len();
        page.text[at..at + page.text[at..].find('"').unwrap()].to_owned()
    };
    let csrf = page.csrf();
    let r = amy
        .post(
            &action,
            &[
                ("_csrf", &csrf),
                ("verdict", "approve"),
                ("comment", "ship it"),
                ("back", &job_page),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let page = amy.get(&r.location).await;
    assert!(
        page.text.contains("QUEUED") && page.text.contains("ship it"),
        "{}",
        page.text
    );
    assert!(!page.text.contains(r#"id="approve""#), "voted once");
}

draven_store::on_both_backends!(
    sign_in_csrf_and_sign_out,
    sessions_expire,
    rbac_hides_buttons_and_refuses_forced_actions,
);
