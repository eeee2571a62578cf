//! The web UI in a real browser: headless Chromium driven over WebDriver (chromedriver), against
//! the real `draven` binary, a real runner process and a real git repository. One person signs
//! in and requests a prod deploy, sees it await approval (without an approve button); a second
//! person signs in, approves, and watches the live log reach SUCCEEDED. Then a registry version
//! is published and a function invoked. Screenshots of the main pages go to
//! `target/ui-screenshots/`.
//!
//! The WebDriver client is the few W3C endpoints the test needs, over reqwest. Without
//! chromedriver the test is skipped, except with `CI=true`, where it fails.

use super::{call, shop_repository, start_runner, Server};
use base64::Engine as _;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    child: Child,
    http: reqwest::Client,
    session: String,
    base: String,
    shots: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start(shots: PathBuf) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let mut d = Driver {
            child,
            http,
            session: String::new(),
            base,
            shots,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while d
            .http
            .get(format!("{}/status", d.base))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"]
            }
        }}});
        let v = d.raw(reqwest::Method::POST, "/session", Some(caps)).await;
        d.session = v["sessionId"]
            .as_str()
            .expect("a WebDriver session")
            .to_owned();
        d
    }

    async fn raw(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("WebDriver request");
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "WebDriver {path}: {status} {v}");
        v["value"].clone()
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.raw(method, &path, body).await
    }

    async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn url(&self) -> String {
        self.cmd(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{e}/clear"),
            Some(json!({})),
        )
        .await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// The text of the first element matching `css` (`""` when none).
    async fn text(&self, css: &str) -> String {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
            json!([css]),
        )
        .await
        .as_str()
        .unwrap_or("")
        .to_owned()
    }

    async fn exists(&self, css: &str) -> bool {
        self.js(
            "return !!document.querySelector(arguments[0]);",
            json!([css]),
        )
        .await
        .as_bool()
        .unwrap_or(false)
    }

    /// Chooses an option of a select by value, as a person would (a change event fires).
    async fn choose(&self, css: &str, value: &str) {
        self.js(
            "const s = document.querySelector(arguments[0]); s.value = arguments[1]; s.dispatchEvent(new Event('change'));",
            json!([css, value]),
        )
        .await;
    }

    /// Waits until `script` returns true.
    async fn wait_for(&self, what: &str, script: &str, args: Value, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if self.js(script, args.clone()).await.as_bool() == Some(true) {
                return;
            }
            if Instant::now() > deadline {
                let body = self.text("body").await;
                panic!(
                    "timed out waiting for {what} on {}: {body}",
                    self.url().await
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn screenshot(&self, name: &str) {
        let v = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 PNG"))
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    async fn resize(&self, width: u32, height: u32) {
        self.cmd(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    async fn sign_in(&self, site: &str, user: &str, password: &str) {
        self.goto(&format!("{site}/ui/login")).await;
        self.type_into("#f-username", user).await;
        self.type_into("#f-password", password).await;
        self.click("button[type=submit]").await;
        self.wait_for(
            "the signed-in page",
            "return !!document.getElementById('whoami');",
            json!([]),
            10,
        )
        .await;
    }

    async fn sign_out(&self) {
        self.click(".who button").await;
        self.wait_for(
            "the sign-in page",
            "return location.pathname === '/ui/login';",
            json!([]),
            10,
        )
        .await;
    }
}

fn browser_available() -> bool {
    let ok = Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists();
    if !ok {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI=true: the browser test needs {CHROMEDRIVER} and {CHROMIUM} (apt-get install chromium chromium-driver; scripts/test.sh does it)"
        );
        eprintln!("SKIPPED: no {CHROMEDRIVER} / {CHROMIUM}; scripts/test.sh installs them");
    }
    ok
}

const PASSWORD: &str = "a-long-enough-password";

/// Creates the world through the API: environments, the shop project, people, a runner
/// token, a form artifact with a version, and the hello function.
async fn set_up(base: &str, token: &str, repo: &str) -> String {
    let send = |method: reqwest::Method, path: String, body: Value| async move {
        let (s, v) = call(method, &format!("{base}{path}"), Some(token), Some(body)).await;
        assert!(s < 300, "{path}: {s} {v}");
        v
    };
    let post = |path: &str, body: Value| send(reqwest::Method::POST, path.to_owned(), body);
    post("/api/v1/environments", json!({"name": "demo"})).await;
    post(
        "/api/v1/environments",
        json!({"name": "prod", "protected": true}),
    )
    .await;
    post(
        "/api/v1/projects",
        json!({"key": "shop", "name": "Shop", "provider": "local", "repo": repo}),
    )
    .await;
    send(
        reqwest::Method::PUT,
        "/api/v1/projects/shop/environments/demo".into(),
        json!({}),
    )
    .await;
    send(
        reqwest::Method::PUT,
        "/api/v1/projects/shop/environments/prod".into(),
        json!({"required_approvals": 1}),
    )
    .await;
    for (user, role, env) in [("ann", "deployer", "prod"), ("bob", "approver", "prod")] {
        post(
            "/api/v1/users",
            json!({"username": user, "password": PASSWORD}),
        )
        .await;
        post(
            "/api/v1/grants",
            json!({"user": user, "role": role, "project": "shop", "environment": env}),
        )
        .await;
    }
    send(
        reqwest::Method::PATCH,
        "/api/v1/users/admin".into(),
        json!({"password": PASSWORD}),
    )
    .await;
    post("/api/v1/users", json!({"username": "agent"})).await;
    post(
        "/api/v1/grants",
        json!({"user": "agent", "role": "deployer"}),
    )
    .await;
    post(
        "/api/v1/grants",
        json!({"user": "agent", "role": "deployer", "environment": "prod"}),
    )
    .await;
    let t = post(
        "/api/v1/users/agent/tokens",
        json!({"name": "r1", "scopes": ["runner"]}),
    )
    .await;
    post(
        "/api/v1/artifacts",
        json!({"key": "apply", "kind": "form", "name": "Loan application", "labels": ["loans"]}),
    )
    .await;
    let form = |label: &str| {
        format!(
            r#"{{"id": "apply", "type": "default", "schemaVersion": 16, "components": [{{"type": "textfield", "key": "name", "label": "{label}"}}]}}"#
        )
    };
    for label in ["Name", "Full name"] {
        let resp = reqwest::Client::new()
            .post(format!("{base}/api/v1/artifacts/apply/versions"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(form(label))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }
    let hello = draven_functions::testing::binary("draven-examples", "hello");
    send(
        reqwest::Method::PUT,
        "/api/v1/functions/hello".into(),
        json!({"runtime": {"kind": "process", "command": hello}}),
    )
    .await;
    t["token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_in_a_real_browser() {
    if !browser_available() {
        return;
    }
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let repo = shop_repository(dir.path());
    let admin_token = "ui-browser-admin-token-0001";
    let mut cmd = super::serve_in(&dir.path().join("data"));
    cmd.env("DRAVEN_BOOTSTRAP_TOKEN", admin_token);
    let server = Server::start(cmd);
    let site = server.base.clone();
    let runner_token = set_up(&site, admin_token, &repo).await;
    let mut runner = start_runner(&site, &runner_token, &dir.path().join("runner"));

    let b = Driver::start(shots).await;
    // Ann signs in and requests a prod deploy; the policy is shown before she submits.
    b.goto(&format!("{site}/ui/")).await;
    b.wait_for(
        "the sign-in form",
        "return !!document.getElementById('f-password');",
        json!([]),
        10,
    )
    .await;
    b.type_into("#f-username", "ann").await;
    b.screenshot("01-sign-in").await;
    b.sign_in(&site, "ann", PASSWORD).await;
    b.screenshot("02-deploys").await;
    b.click("#new-deploy").await;
    b.wait_for(
        "the deploy form",
        "return !!document.getElementById('deploy-form');",
        json!([]),
        10,
    )
    .await;
    b.choose("#f-project", "shop").await;
    b.choose("#f-environment", "prod").await;
    b.type_into("#f-ref", "develop").await;
    let policy = b
        .js("return [...document.querySelectorAll('.policy-for')].filter(d => !d.hidden).map(d => d.textContent).join('|');", json!([]))
        .await;
    assert!(
        policy.as_str().unwrap().contains("shop → prod")
            && policy
                .as_str()
                .unwrap()
                .contains("1 (the requester never counts)"),
        "only prod's policy is shown: {policy}"
    );
    b.screenshot("03-deploy-form").await;
    b.click("#request-deploy").await;
    b.wait_for(
        "the job to await approval",
        "const s = document.getElementById('job-state'); return !!s && s.dataset.state === 'AWAITING_APPROVAL';",
        json!([]),
        20,
    )
    .await;
    let job_url = b.url().await;
    assert!(
        !b.exists("#approve").await,
        "no approve button on one's own job"
    );
    b.screenshot("04-awaiting-approval").await;
    b.sign_out().await;

    // Bob signs in, approves with a comment, and follows the runner's output live.
    b.sign_in(&site, "bob", PASSWORD).await;
    b.goto(&job_url).await;
    b.type_into("#f-comment", "looks good").await;
    b.click("#approve").await;
    b.wait_for(
        "the job page after the vote",
        "return !!document.getElementById('log') && location.search.includes('notice=Approved');",
        json!([]),
        20,
    )
    .await;
    let streaming = b
        .js(
            "return !!document.getElementById('log').dataset.stream;",
            json!([]),
        )
        .await
        .as_bool()
        .unwrap_or(false);
    b.wait_for(
        "the live log to reach SUCCEEDED",
        "const s = document.getElementById('job-state'); return s.dataset.state === 'SUCCEEDED' && document.getElementById('log').textContent.includes('shop: done');",
        json!([]),
        90,
    )
    .await;
    let log = b.text("#log").await;
    assert!(log.contains("shop: deploying develop"), "{log}");
    if streaming {
        assert!(
            b.text("#log-status").await.contains("SUCCEEDED"),
            "the stream's end event arrived"
        );
    }
    assert!(b.text("#approval").await.contains("looks good"));
    b.screenshot("05-job-succeeded").await;
    b.goto(&format!("{site}/ui/deploys")).await;
    assert!(
        b.text("main").await.contains("develop"),
        "the overview shows what is deployed"
    );
    b.screenshot("06-deploys-after").await;
    b.goto(&format!("{site}/ui/deploys/history?environment=prod"))
        .await;
    assert!(b.text("#history").await.contains("SUCCEEDED"));
    b.screenshot("07-history").await;
    b.sign_out().await;

    // The admin publishes a form version to demo and sees what is live where.
    b.sign_in(&site, "admin", PASSWORD).await;
    b.goto(&format!("{site}/ui/registry?q=loan")).await;
    assert!(b.text("#artifacts").await.contains("apply"));
    b.screenshot("08-registry").await;
    b.click("#artifacts a").await;
    b.wait_for(
        "the artifact page",
        "return !!document.getElementById('versions');",
        json!([]),
        10,
    )
    .await;
    b.screenshot("09-artifact").await;
    b.click("form[action$='/diff'] button").await;
    b.wait_for(
        "the diff",
        "return !!document.getElementById('diff');",
        json!([]),
        10,
    )
    .await;
    assert!(
        b.text("#diff ins").await.contains("Full name"),
        "{}",
        b.text("#diff").await
    );
    b.screenshot("10-diff").await;
    b.goto(&format!("{site}/ui/registry/apply")).await;
    b.choose("#publish-form select", "demo").await;
    b.click("#publish").await;
    b.wait_for(
        "the publication",
        "const l = document.getElementById('live-list'); return !!l && l.textContent.includes('demo');",
        json!([]),
        20,
    )
    .await;
    b.screenshot("11-publications").await;
    b.goto(&format!("{site}/ui/registry/apply")).await;
    assert!(
        b.text("#live").await.contains("demo"),
        "the artifact page says where it is live"
    );

    // Invoke a function and see the invocation in the list, with its rate.
    b.goto(&format!("{site}/ui/functions/hello")).await;
    b.type_into("#f-payload", r#"{"name": "browser"}"#).await;
    b.click("#invoke").await;
    b.wait_for(
        "the accepted notice",
        "return document.body.textContent.includes('accepted');",
        json!([]),
        20,
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !b.text("#invocations").await.contains("succeeded") {
        assert!(
            Instant::now() < deadline,
            "the invocation did not succeed: {}",
            b.text("#invocations").await
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.goto(&format!("{site}/ui/functions/hello")).await;
    }
    b.screenshot("12-function").await;
    b.click("#invocations a").await;
    b.wait_for(
        "the invocation",
        "return !!document.getElementById('invocation-state');",
        json!([]),
        10,
    )
    .await;
    assert!(
        b.text("#result").await.contains("browser"),
        "{}",
        b.text("main").await
    );
    b.screenshot("13-invocation").await;
    b.goto(&format!("{site}/ui/functions")).await;
    b.wait_for(
        "the live counts",
        "const r = document.querySelector('#functions tr[data-function=hello]'); return !!r && r.textContent.includes('1/min');",
        json!([]),
        10,
    )
    .await;
    b.screenshot("14-functions").await;
    b.goto(&format!("{site}/ui/audit?action=deploy")).await;
    b.screenshot("15-audit").await;
    b.goto(&format!("{site}/ui/admin/users")).await;
    b.screenshot("16-admin-users").await;

    // On a phone.
    b.resize(390, 844).await;
    b.goto(&format!("{site}/ui/deploys")).await;
    b.screenshot("17-phone-deploys").await;
    b.goto(&job_url).await;
    b.screenshot("18-phone-job").await;
    b.cmd(reqwest::Method::DELETE, "", None).await;
    let _ = runner.kill();
    let _ = runner.wait();
}

/// `draven admin users password` sets the password the UI's sign-in checks.
#[tokio::test]
async fn admin_cli_sets_a_password_for_the_ui() {
    let dir = tempfile::tempdir().unwrap();
    drop(Server::start(super::serve_in(dir.path())));
    let (code, out) = super::admin_stdin(dir.path(), &["users", "password", "admin"], "short\n");
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("at least 8 characters"), "{out}");
    let (code, out) = super::admin_stdin(
        dir.path(),
        &["users", "password", "admin"],
        "correct horse battery\n",
    );
    assert_eq!((code, out.trim()), (0, "set the password of admin"));
    let server = Server::start(super::serve_in(dir.path()));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = http
        .get(format!("{}/ui/login", server.base))
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = login.text().await.unwrap();
    let at = page.find(r#"name="_csrf" value=""#).unwrap() + r#"name="_csrf" value=""#.len();
    let csrf = &page[at..at + page[at..].find('"').unwrap()];
    let signed_in = http
        .post(format!("{}/ui/login", server.base))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "_csrf={csrf}&tenant=default&username=admin&password=correct+horse+battery"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    assert!(signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .starts_with("draven_session="));
}
