//! The real `draven` binary: started as a process, driven over HTTP and signals.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod kube;
mod ui_browser;

const BIN: &str = env!("CARGO_BIN_EXE_draven");

/// A command with no inherited DRAVEN_* configuration.
fn draven(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("DRAVEN_") || k.starts_with("AWS_") {
            c.env_remove(k);
        }
    }
    c.env("DRAVEN_LOG_FORMAT", "json");
    c
}

struct Server {
    child: Child,
    base: String,
    stdout: Vec<String>,
    stderr_path: std::path::PathBuf,
    _stderr_dir: tempfile::TempDir,
}

impl Server {
    /// Starts `cmd` (a `draven serve …`) and waits for its "listening on" line.
    fn start(mut cmd: Command) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let stderr_path = dir.path().join("stderr.log");
        cmd.stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap());
        let mut child = cmd.spawn().expect("spawn draven");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = vec![];
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => {
                    let done = line.contains("listening on http://");
                    lines.push(line);
                    if done {
                        break;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "draven did not start: stdout {lines:?}\nstderr {}",
                        std::fs::read_to_string(&stderr_path).unwrap_or_default()
                    );
                }
            }
        }
        let base = lines
            .last()
            .unwrap()
            .split("listening on ")
            .nth(1)
            .unwrap()
            .trim()
            .to_owned();
        Server {
            child,
            base,
            stdout: lines,
            stderr_path,
            _stderr_dir: dir,
        }
    }

    fn printed_token(&self) -> Option<String> {
        self.stdout.iter().find_map(|l| {
            l.split("(shown once, store it now): ")
                .nth(1)
                .map(str::to_owned)
        })
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    fn signal(&self, sig: i32) {
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// SIGTERM, then the exit code.
    fn stop(mut self) -> i32 {
        self.signal(libc::SIGTERM);
        self.wait()
    }

    fn wait(&mut self) -> i32 {
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("draven did not exit within 15 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn call(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn get(url: &str, token: Option<&str>) -> (u16, Value) {
    call(reqwest::Method::GET, url, token, None).await
}

fn data_dir_args(dir: &Path) -> Vec<String> {
    vec![
        "serve".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        dir.display().to_string(),
    ]
}

fn serve_in(dir: &Path) -> Command {
    let args = data_dir_args(dir);
    draven(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[tokio::test]
async fn first_start_bootstraps_prints_the_token_once_and_restarts_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve_in(dir.path()));
    let token = server
        .printed_token()
        .expect("first start prints the admin token");
    assert!(token.starts_with("drv_"));
    let (status, me) = get(&format!("{}/api/v1/me", server.base), Some(&token)).await;
    assert_eq!(
        (
            status,
            me["username"].as_str(),
            me["system_admin"].as_bool()
        ),
        (200, Some("admin"), Some(true))
    );
    assert_eq!(get(&format!("{}/readyz", server.base), None).await.0, 200);
    // Embedded defaults: SQLite file, local objects, a 0600 key file.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("master.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(dir.path().join("draven.db").exists());
    assert!(dir.path().join("objects/.draven/probe").exists());
    let key_before = std::fs::read(dir.path().join("master.key")).unwrap();
    assert_eq!(server.stop(), 0);

    let server = Server::start(serve_in(dir.path()));
    assert_eq!(
        server.printed_token(),
        None,
        "the token is printed only on first start"
    );
    assert_eq!(
        get(&format!("{}/api/v1/me", server.base), Some(&token))
            .await
            .0,
        200
    );
    assert_eq!(
        std::fs::read(dir.path().join("master.key")).unwrap(),
        key_before
    );
    assert_eq!(server.stop(), 0);
}

#[tokio::test]
async fn logs_are_json_with_trace_ids() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve_in(dir.path()));
    reqwest::Client::new()
        .get(format!("{}/healthz", server.base))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .unwrap();
    let stderr = server.stderr();
    assert_eq!(server.stop(), 0);
    let served: Vec<Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "request served")
        .collect();
    let line = served
        .iter()
        .find(|v| v["route"] == "/healthz")
        .expect("a JSON log line for the request");
    assert_eq!(line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    let span_id = line["span_id"].as_str().unwrap();
    assert_eq!(span_id.len(), 16);
    assert_ne!(
        span_id, "00f067aa0ba902b7",
        "our span is a child of the caller's"
    );
}

#[tokio::test]
async fn environment_variables_configure_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = draven(&["serve"]);
    cmd.env("DRAVEN_LISTEN", "127.0.0.1:0")
        .env("DRAVEN_DATA_DIR", dir.path())
        .env("DRAVEN_BOOTSTRAP_TOKEN", "my-own-bootstrap-token-123")
        .env("DRAVEN_MASTER_KEY", "ab".repeat(32))
        .env("DRAVEN_LISTN", "typo");
    let server = Server::start(cmd);
    assert_eq!(server.printed_token(), None, "a chosen token is not echoed");
    assert!(server
        .stdout
        .iter()
        .any(|l| l.contains("DRAVEN_BOOTSTRAP_TOKEN")));
    assert_eq!(
        get(
            &format!("{}/api/v1/me", server.base),
            Some("my-own-bootstrap-token-123")
        )
        .await
        .0,
        200
    );
    assert!(
        !dir.path().join("master.key").exists(),
        "DRAVEN_MASTER_KEY replaces the key file"
    );
    let stderr = server.stderr();
    assert_eq!(server.stop(), 0);
    assert!(
        stderr.contains("DRAVEN_LISTN") && stderr.contains("unknown DRAVEN_"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_config_file_is_read_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("draven.toml");
    std::fs::write(&file, format!("data_dir = {:?}\nbootstrap_token = \"token-from-the-file-0001\"\nlisten = \"127.0.0.1:1\"\n", dir.path().join("d"))).unwrap();
    let server = Server::start(draven(&[
        "serve",
        "--config",
        file.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]));
    assert_eq!(
        get(
            &format!("{}/api/v1/me", server.base),
            Some("token-from-the-file-0001")
        )
        .await
        .0,
        200
    );
    assert!(dir.path().join("d/draven.db").exists());
    assert_eq!(server.stop(), 0);
    std::fs::write(&file, "listen = 8080\n").unwrap();
    let out = draven(&["serve", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("listen"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = serve_in(dir.path());
    cmd.args(["--shutdown-delay-secs", "1"])
        .env("DRAVEN_BOOTSTRAP_TOKEN", "drain-test-admin-token");
    let mut server = Server::start(cmd);
    let addr = server.base.trim_start_matches("http://").to_owned();
    // A request whose body is still arriving when the signal comes.
    let body = br#"{"name": "drained", "description": "sent across a SIGTERM"}"#;
    let mut conn = TcpStream::connect(&addr).unwrap();
    write!(
        conn,
        "POST /api/v1/environments HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer drain-test-admin-token\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    conn.write_all(&body[..10]).unwrap();
    conn.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    server.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    // Readiness turns false at once, while liveness stays true.
    let (status, ready) = get(&format!("{}/readyz", server.base), None).await;
    assert_eq!((status, ready["status"].as_str()), (503, Some("draining")));
    assert_eq!(get(&format!("{}/healthz", server.base), None).await.0, 200);
    std::thread::sleep(Duration::from_millis(1200));
    // The listener is closed now, but the in-flight request completes.
    conn.write_all(&body[10..]).unwrap();
    let mut response = String::new();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = conn.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert_eq!(server.wait(), 0);
    // Nothing accepted was lost.
    let server = Server::start(serve_in(dir.path()));
    let (status, env) = get(
        &format!("{}/api/v1/environments/drained", server.base),
        Some("drain-test-admin-token"),
    )
    .await;
    assert_eq!(
        (status, env["description"].as_str()),
        (200, Some("sent across a SIGTERM"))
    );
    assert_eq!(server.stop(), 0);
}

fn admin(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["admin", "--data-dir", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = draven(&all).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn admin_stdin(dir: &Path, args: &[&str], input: &str) -> (i32, String) {
    let (code, out, err) = admin_stdin_err(dir, args, input);
    (code, out + &err)
}

#[tokio::test]
async fn admin_cli_manages_identity_and_audit_verify_catches_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (code, out, err) = admin(d, &["tenants", "create", "acme", "--admin", "root"]);
    assert_eq!(code, 0, "{err}");
    let acme_admin = out
        .lines()
        .find_map(|l| l.strip_prefix("admin token (shown once): "))
        .unwrap()
        .to_owned();
    let (code, out) = admin_stdin(
        d,
        &[
            "users",
            "create",
            "--tenant",
            "acme",
            "bob",
            "--password-stdin",
        ],
        "a-long-password\n",
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        admin(
            d,
            &["grants", "add", "--tenant", "acme", "--user", "bob", "--role", "viewer"]
        )
        .0,
        0
    );
    let (code, out, _) = admin(
        d,
        &[
            "tokens", "create", "--tenant", "acme", "--user", "bob", "--name", "laptop", "--scope",
            "read",
        ],
    );
    assert_eq!(code, 0);
    let bob = out
        .lines()
        .find_map(|l| l.strip_prefix("token (shown once): "))
        .unwrap()
        .to_owned();
    let (_, users, _) = admin(d, &["users", "list", "--tenant", "acme"]);
    assert!(users.contains("bob") && users.contains("root"));
    let (code, _, err) = admin(
        d,
        &[
            "grants", "add", "--tenant", "acme", "--user", "bob", "--role", "king",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("unknown role"), "{err}");
    let (code, _, err) = admin(d, &["users", "list", "--tenant", "nope"]);
    assert_ne!(code, 0);
    assert!(err.contains("tenant \"nope\""), "{err}");

    let (code, out, err) = admin(
        d,
        &[
            "environments",
            "create",
            "--tenant",
            "acme",
            "prod",
            "--protected",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(protected)"));
    assert_eq!(
        admin(d, &["environments", "create", "--tenant", "acme", "stage"]).0,
        0
    );
    assert_eq!(
        admin(
            d,
            &["environments", "unprotect", "--tenant", "acme", "prod"]
        )
        .0,
        0
    );
    assert_eq!(
        admin(d, &["environments", "protect", "--tenant", "acme", "prod"]).0,
        0
    );
    let (_, list, _) = admin(d, &["environments", "list", "--tenant", "acme"]);
    assert!(
        list.contains("prod\tprotected") && list.contains("stage\t-"),
        "{list}"
    );
    let (code, _, err) = admin(
        d,
        &["environments", "create", "--tenant", "acme", "Bad Name"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("name"), "{err}");

    // The server sees what the CLI made.
    let server = Server::start(serve_in(d));
    assert_eq!(
        get(&format!("{}/api/v1/environments", server.base), Some(&bob))
            .await
            .0,
        200
    );
    let (status, _) = call(
        reqwest::Method::POST,
        &format!("{}/api/v1/environments", server.base),
        Some(&bob),
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(
        reqwest::Method::POST,
        &format!("{}/api/v1/environments", server.base),
        Some(&acme_admin),
        Some(json!({"name": "demo"})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, prod) = get(
        &format!("{}/api/v1/environments/prod", server.base),
        Some(&bob),
    )
    .await;
    assert_eq!((status, prod["protected"].as_bool()), (200, Some(true)));
    assert_eq!(server.stop(), 0);

    let (code, out, _) = admin(d, &["audit", "verify"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("audit trail intact"), "{out}");
    let export = d.join("audit.jsonl");
    let (code, out, _) = admin(
        d,
        &[
            "audit",
            "export",
            "--tenant",
            "acme",
            "--output",
            export.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}");
    let records: Vec<Value> = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(records.iter().any(
        |r| r["action"] == "tenant.create" && r["actor"].as_str().unwrap().starts_with("cli:")
    ));
    assert!(records
        .iter()
        .any(|r| r["outcome"] == "denied" && r["actor"] == "user:bob"));
    assert!(records.iter().any(|r| r["action"] == "environment.create"));

    // Tamper with one record the way someone with database access would.
    let url = format!("sqlite://{}/draven.db", d.display());
    {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::raw_sql("DROP TRIGGER audit_events_no_update; UPDATE audit_events SET actor = 'user:mallory' WHERE seq = 3;")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    let (code, _, err) = admin(d, &["audit", "verify"]);
    assert_eq!(code, 1);
    assert!(err.contains("BROKEN at record 3"), "{err}");
}

#[tokio::test]
async fn migrate_applies_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = draven(&["migrate", "--data-dir", d]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("applied 0001_kernel"));
    let out = draven(&["migrate", "--data-dir", d]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"));
    let out = draven(&["migrate", "--database-url", "mysql://x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported database URL"));
}

/// PostgreSQL and S3, both chosen by environment variables, on the real binary.
#[tokio::test]
async fn postgres_and_s3_by_environment() {
    let Some(db_url) = draven_store::testing::postgres_url().await else {
        return;
    };
    let Some(s3) = draven_blob::testing::s3() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = draven(&["serve"]);
    cmd.env("DRAVEN_LISTEN", "127.0.0.1:0")
        .env("DRAVEN_DATA_DIR", dir.path())
        .env("DRAVEN_DATABASE_URL", &db_url)
        .env("DRAVEN_OBJECT_STORE", &s3.spec)
        .env("DRAVEN_S3_ENDPOINT", s3.s3.endpoint.as_deref().unwrap())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("DRAVEN_BOOTSTRAP_TOKEN", "postgres-s3-admin-token");
    let server = Server::start(cmd);
    let (status, ready) = get(&format!("{}/readyz", server.base), None).await;
    assert_eq!(
        (
            status,
            ready["database"].as_str(),
            ready["object_store"].as_str()
        ),
        (200, Some("ok"), Some("ok"))
    );
    assert_eq!(
        get(
            &format!("{}/api/v1/me", server.base),
            Some("postgres-s3-admin-token")
        )
        .await
        .0,
        200
    );
    // The probe object went to S3, not the data dir.
    assert!(s3.blobs.size(".draven/probe").await.unwrap().is_some());
    assert!(!dir.path().join("objects").exists());
    assert!(!dir.path().join("draven.db").exists());
    assert_eq!(server.stop(), 0);
    let out = draven(&["migrate", "--database-url", &db_url])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"));
}

#[test]
fn serve_help_documents_every_knob() {
    let out = draven(&["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "DRAVEN_CONFIG",
        "DRAVEN_DATA_DIR",
        "DRAVEN_DATABASE_URL",
        "DRAVEN_OBJECT_STORE",
        "DRAVEN_S3_ENDPOINT",
        "DRAVEN_LISTEN",
        "DRAVEN_MASTER_KEY",
        "DRAVEN_BOOTSTRAP_TOKEN",
        "DRAVEN_LOG_FORMAT",
        "DRAVEN_LOG",
        "DRAVEN_MAX_BODY_BYTES",
        "DRAVEN_IDEMPOTENCY_TTL_SECS",
        "DRAVEN_SHUTDOWN_DELAY_SECS",
        "DRAVEN_SHUTDOWN_GRACE_SECS",
        "DRAVEN_UI_SESSION_TTL_SECS",
        "DRAVEN_UI_SECURE_COOKIES",
        "DRAVEN_CALLBACK_ALLOW",
        "DRAVEN_TENANT_INVOKE_RATE",
        "DRAVEN_INVOCATION_RETENTION",
        "DRAVEN_INVOCATION_TTL_SECS",
        "DRAVEN_DLQ_CAPACITY",
        "DRAVEN_PUBLIC_URL",
        "DRAVEN_PROVIDER_POLL_SECS",
    ] {
        assert!(
            help.contains(&format!("[env: {var}")),
            "serve --help does not mention {var}"
        );
    }
    let out = draven(&["version"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("draven 0."));
}

/// Every Rust file says what it owns in a `//!` paragraph (STYLE.md).
#[test]
fn every_module_starts_with_a_doc_paragraph() {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = vec![];
    walk(crates, &mut files);
    assert!(files.len() > 20);
    let missing: Vec<_> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap().starts_with("//!"))
        .map(|f| f.strip_prefix(crates).unwrap().display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a //! doc paragraph: {missing:?}"
    );
}

/// A git repository made from `examples/shop`: branch `develop`, and branch `slow` whose deploy
/// sleeps (to cancel it, or to kill its runner mid-job).
fn shop_repository(dir: &Path) -> String {
    let repo = dir.join("shop");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop");
    std::fs::create_dir_all(repo.join("deploy")).unwrap();
    for f in ["README.md", "deploy/run.sh"] {
        std::fs::copy(examples.join(f), repo.join(f)).unwrap();
    }
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(&repo)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "Ann")
            .env("GIT_AUTHOR_EMAIL", "ann@example.com")
            .env("GIT_COMMITTER_NAME", "Ann")
            .env("GIT_COMMITTER_EMAIL", "ann@example.com")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "--quiet", "-b", "main"]);
    git(&["add", "."]);
    git(&["commit", "--quiet", "-m", "shop"]);
    git(&["branch", "develop"]);
    git(&["checkout", "--quiet", "-b", "slow"]);
    std::fs::write(repo.join("deploy/sleep"), "30").unwrap();
    git(&["add", "."]);
    git(&["commit", "--quiet", "-m", "slow deploy"]);
    git(&["checkout", "--quiet", "main"]);
    git(&["tag", "-a", "v1.0.0", "-m", "release 1.0.0"]);
    repo.display().to_string()
}

async fn wait_for_state(base: &str, token: &str, job: &str, want: &str, secs: u64) -> Value {
    let mut last = Value::Null;
    for _ in 0..secs * 10 {
        let (_, j) = get(&format!("{base}/api/v1/deploys/{job}"), Some(token)).await;
        if j["state"] == want {
            return j;
        }
        last = j;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {job} did not reach {want} in {secs} s: {last}");
}

fn start_runner(base: &str, token: &str, work: &Path) -> Child {
    let mut cmd = draven(&[
        "runner",
        "--server",
        base,
        "--token",
        token,
        "--name",
        "r1",
        "--work-dir",
        work.to_str().unwrap(),
    ]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    cmd.spawn().unwrap()
}

/// The whole path with real processes: server, runner, git, deploy/run.sh; cancel kills the
/// script; a runner killed mid-job loses its job (FAILED) and frees the environment.
#[tokio::test]
async fn runner_deploys_the_example_repository() {
    let dir = tempfile::tempdir().unwrap();
    let repo = shop_repository(dir.path());
    let admin_token = "runner-e2e-admin-token-0001";
    let mut cmd = serve_in(&dir.path().join("data"));
    cmd.args(["--runner-lease-secs", "2"])
        .env("DRAVEN_BOOTSTRAP_TOKEN", admin_token);
    let server = Server::start(cmd);
    let base = server.base.clone();
    let post = |path: String, body: Value| {
        let base = base.clone();
        async move {
            call(
                reqwest::Method::POST,
                &format!("{base}{path}"),
                Some(admin_token),
                Some(body),
            )
            .await
        }
    };
    assert_eq!(
        post("/api/v1/environments".into(), json!({"name": "demo"}))
            .await
            .0,
        201
    );
    assert_eq!(
        post(
            "/api/v1/projects".into(),
            json!({"key": "shop", "provider": "local", "repo": repo})
        )
        .await
        .0,
        201
    );
    let (s, _) = call(
        reqwest::Method::PUT,
        &format!("{base}/api/v1/projects/shop/environments/demo"),
        Some(admin_token),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 200);
    post("/api/v1/users".into(), json!({"username": "agent"})).await;
    post(
        "/api/v1/grants".into(),
        json!({"user": "agent", "role": "deployer"}),
    )
    .await;
    let (_, t) = post(
        "/api/v1/users/agent/tokens".into(),
        json!({"name": "r1", "scopes": ["runner"]}),
    )
    .await;
    let runner_token = t["token"].as_str().unwrap().to_owned();
    let (s, nothing) = post(
        "/api/v1/projects/shop/environments/demo/rollback".into(),
        json!({}),
    )
    .await;
    assert_eq!(
        (s, nothing["code"].as_str()),
        (409, Some("conflict")),
        "nothing to roll back to yet"
    );
    let work = dir.path().join("runner");
    let mut runner = start_runner(&base, &runner_token, &work);

    // A deploy runs deploy/run.sh at the resolved commit with ENV, REF and JOB_ID.
    let (_, job) = post(
        "/api/v1/projects/shop/deploys".into(),
        json!({"environment": "demo", "ref": "develop"}),
    )
    .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let done = wait_for_state(&base, admin_token, &id, "SUCCEEDED", 60).await;
    assert_eq!(done["exit_code"], 0);
    let (_, log) = get(
        &format!("{base}/api/v1/deploys/{id}/logs"),
        Some(admin_token),
    )
    .await;
    let text: String = log["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    let sha = job["commit_sha"].as_str().unwrap();
    assert!(
        text.contains(&format!(
            "shop: deploying develop ({sha}) to demo as job {id}"
        )),
        "{text}"
    );
    assert!(
        text.contains("a warning on stderr") && text.contains("shop: done"),
        "{text}"
    );
    let preflight = text
        .find("shop: would deploy develop")
        .expect("deploy:info ran first");
    assert!(preflight < text.find("shop: deploying").unwrap(), "{text}");

    // The environment's timeout: the runner stops the script and reports TIMED_OUT.
    assert_eq!(
        post("/api/v1/environments".into(), json!({"name": "stage"}))
            .await
            .0,
        201
    );
    let (s, _) = call(
        reqwest::Method::PUT,
        &format!("{base}/api/v1/projects/shop/environments/stage"),
        Some(admin_token),
        Some(json!({"timeout_secs": 1})),
    )
    .await;
    assert_eq!(s, 200);
    let (_, job) = post(
        "/api/v1/projects/shop/deploys".into(),
        json!({"environment": "stage", "ref": "slow"}),
    )
    .await;
    let timed_out = wait_for_state(
        &base,
        admin_token,
        job["id"].as_str().unwrap(),
        "TIMED_OUT",
        30,
    )
    .await;
    assert_eq!(timed_out["timeout_secs"], 1);
    assert!(log["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["stream"] == "stderr"));

    // Cancel while it runs: the script's process group is killed.
    let (_, job) = post(
        "/api/v1/projects/shop/deploys".into(),
        json!({"environment": "demo", "ref": "slow"}),
    )
    .await;
    let id = job["id"].as_str().unwrap().to_owned();
    wait_for_state(&base, admin_token, &id, "RUNNING", 30).await;
    post(format!("/api/v1/deploys/{id}/cancel"), json!({})).await;
    wait_for_state(&base, admin_token, &id, "CANCELLED", 5).await;
    // The lock stays until the runner has stopped the script and reported.
    let lock_url = format!("{base}/api/v1/projects/shop/environments/demo/lock");
    let mut freed = false;
    for _ in 0..100 {
        if get(&lock_url, Some(admin_token)).await.0 == 404 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        freed,
        "cancel frees the environment once the runner stops the script"
    );

    // A runner killed mid-job: its lease lapses, the job fails, the environment is free.
    let (_, job) = post(
        "/api/v1/projects/shop/deploys".into(),
        json!({"environment": "demo", "ref": "slow"}),
    )
    .await;
    let id = job["id"].as_str().unwrap().to_owned();
    wait_for_state(&base, admin_token, &id, "RUNNING", 30).await;
    unsafe { libc::kill(runner.id() as i32, libc::SIGKILL) };
    runner.wait().unwrap();
    let failed = wait_for_state(&base, admin_token, &id, "FAILED", 20).await;
    let last = failed["timeline"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert!(
        last["message"].as_str().unwrap().contains("runner lost"),
        "{last}"
    );

    // A new runner takes the next job.
    let mut runner = start_runner(&base, &runner_token, &work);
    let (_, job) = post(
        "/api/v1/projects/shop/deploys".into(),
        json!({"environment": "demo", "ref": "develop"}),
    )
    .await;
    wait_for_state(
        &base,
        admin_token,
        job["id"].as_str().unwrap(),
        "SUCCEEDED",
        60,
    )
    .await;
    // prod: only tags v*, two approvers other than the requester, and the lock while it runs.
    assert_eq!(
        post(
            "/api/v1/environments".into(),
            json!({"name": "prod", "protected": true})
        )
        .await
        .0,
        201
    );
    let prod = json!({"tags_only": true, "tag_pattern": "v*", "required_approvals": 2});
    let (s, _) = call(
        reqwest::Method::PUT,
        &format!("{base}/api/v1/projects/shop/environments/prod"),
        Some(admin_token),
        Some(prod),
    )
    .await;
    assert_eq!(s, 200);
    for (user, role) in [
        ("rel", "deployer"),
        ("amy", "approver"),
        ("bob", "approver"),
    ] {
        post("/api/v1/users".into(), json!({"username": user})).await;
        post(
            "/api/v1/grants".into(),
            json!({"user": user, "role": role, "environment": "prod"}),
        )
        .await;
    }
    let token_of = |user: &'static str| async move {
        post(format!("/api/v1/users/{user}/tokens"), json!({"name": "t"}))
            .await
            .1["token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (rel, amy, bob) = (
        token_of("rel").await,
        token_of("amy").await,
        token_of("bob").await,
    );
    let as_user = |token: String, path: String, body: Value| {
        let base = base.clone();
        async move {
            call(
                reqwest::Method::POST,
                &format!("{base}{path}"),
                Some(&token),
                Some(body),
            )
            .await
        }
    };
    let (_, refused) = as_user(
        rel.clone(),
        "/api/v1/projects/shop/deploys".into(),
        json!({"environment": "prod", "ref": "develop"}),
    )
    .await;
    assert_eq!(refused["refused_rule"], "policy-tags-only");
    let (_, job) = as_user(
        rel.clone(),
        "/api/v1/projects/shop/deploys".into(),
        json!({"environment": "prod", "ref": "v1.0.0"}),
    )
    .await;
    assert_eq!(job["state"], "AWAITING_APPROVAL", "{job}");
    let prod_id = job["id"].as_str().unwrap().to_owned();
    let votes = format!(
        "/api/v1/approvals/{}/votes",
        job["approval_id"].as_str().unwrap()
    );
    assert_eq!(
        as_user(rel.clone(), votes.clone(), json!({"verdict": "approve"}))
            .await
            .0,
        403,
        "the requester never counts"
    );
    as_user(
        amy,
        votes.clone(),
        json!({"verdict": "approve", "comment": "looks good"}),
    )
    .await;
    let (_, pending) = get(
        &format!("{base}/api/v1/deploys/{prod_id}"),
        Some(admin_token),
    )
    .await;
    assert_eq!(pending["state"], "AWAITING_APPROVAL", "one approval of two");
    as_user(bob, votes, json!({"verdict": "approve"})).await;
    let done = wait_for_state(&base, admin_token, &prod_id, "SUCCEEDED", 60).await;
    let states: Vec<&str> = done["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        vec![
            "PENDING",
            "AWAITING_APPROVAL",
            "QUEUED",
            "RUNNING",
            "SUCCEEDED"
        ]
    );
    let (_, log) = get(
        &format!("{base}/api/v1/deploys/{prod_id}/logs"),
        Some(admin_token),
    )
    .await;
    let text: String = log["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert!(text.contains("shop: deploying v1.0.0"), "{text}");

    // Roll back: the successful deploy before the latest one, with the `rollback` task.
    let (s, rb) = post(
        "/api/v1/projects/shop/environments/demo/rollback".into(),
        json!({}),
    )
    .await;
    assert_eq!(
        (s, rb["kind"].as_str(), rb["ref"].as_str()),
        (201, Some("rollback"), Some("develop")),
        "{rb}"
    );
    let rb_id = rb["id"].as_str().unwrap().to_owned();
    wait_for_state(&base, admin_token, &rb_id, "SUCCEEDED", 60).await;
    let (_, log) = get(
        &format!("{base}/api/v1/deploys/{rb_id}/logs"),
        Some(admin_token),
    )
    .await;
    let text: String = log["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert!(
        text.contains("shop: rolling back demo to develop"),
        "{text}"
    );
    unsafe { libc::kill(runner.id() as i32, libc::SIGTERM) };
    runner.wait().unwrap();
    assert_eq!(server.stop(), 0);
}

/// A runner that died after the script ended but before the server had its report sends the
/// kept report when it starts again: the job's outcome is not lost.
#[tokio::test]
async fn a_restarted_runner_delivers_the_outcome_it_kept() {
    let dir = tempfile::tempdir().unwrap();
    let repo = shop_repository(dir.path());
    let admin = "restart-admin-token-000001";
    let mut cmd = serve_in(&dir.path().join("data"));
    cmd.env("DRAVEN_BOOTSTRAP_TOKEN", admin);
    let server = Server::start(cmd);
    let base = server.base.clone();
    let post = |path: String, body: Value| {
        let base = base.clone();
        async move {
            call(
                reqwest::Method::POST,
                &format!("{base}{path}"),
                Some(admin),
                Some(body),
            )
            .await
        }
    };
    post("/api/v1/environments".into(), json!({"name": "demo"})).await;
    post(
        "/api/v1/projects".into(),
        json!({"key": "shop", "provider": "local", "repo": repo}),
    )
    .await;
    call(
        reqwest::Method::PUT,
        &format!("{base}/api/v1/projects/shop/environments/demo"),
        Some(admin),
        Some(json!({})),
    )
    .await;
    let (_, job) = post(
        "/api/v1/projects/shop/deploys".into(),
        json!({"environment": "demo", "ref": "develop"}),
    )
    .await;
    let id = job["id"].as_str().unwrap().to_owned();
    // The job ran under runner r1, which wrote its report and died before sending it.
    let (s, _) = post("/api/v1/runner/claim".into(), json!({"runner": "r1"})).await;
    assert_eq!(s, 200);
    let work = dir.path().join("runner");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(
        work.join("pending-finish.json"),
        json!({"job_id": id, "result": "succeeded", "exit_code": 0}).to_string(),
    )
    .unwrap();
    let mut runner = start_runner(&base, admin, &work);
    let done = wait_for_state(&base, admin, &id, "SUCCEEDED", 30).await;
    assert_eq!(done["exit_code"], 0);
    for _ in 0..50 {
        if !work.join("pending-finish.json").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !work.join("pending-finish.json").exists(),
        "the delivered report is forgotten"
    );
    unsafe { libc::kill(runner.id() as i32, libc::SIGTERM) };
    runner.wait().unwrap();
    assert_eq!(server.stop(), 0);
}

/// Two `draven serve` processes on one PostgreSQL database: runners claiming through either
/// never run two jobs of one environment at once, and queue order holds.
#[tokio::test]
async fn two_servers_share_the_environment_locks() {
    let Some(db_url) = draven_store::testing::postgres_url().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let repo = shop_repository(dir.path());
    let admin = "two-servers-admin-token-0001";
    let start = |name: &str| {
        let mut cmd = draven(&["serve"]);
        cmd.env("DRAVEN_LISTEN", "127.0.0.1:0")
            .env("DRAVEN_DATA_DIR", dir.path().join(name))
            .env("DRAVEN_DATABASE_URL", &db_url)
            .env("DRAVEN_MASTER_KEY", "cd".repeat(32))
            .env("DRAVEN_BOOTSTRAP_TOKEN", admin);
        Server::start(cmd)
    };
    let a = start("a");
    let b = start("b");
    let post = |base: String, path: &'static str, body: Value, token: String| async move {
        call(
            reqwest::Method::POST,
            &format!("{base}{path}"),
            Some(&token),
            Some(body),
        )
        .await
    };
    let admin_s = admin.to_string();
    for env in ["e1", "e2", "e3"] {
        assert_eq!(
            post(
                a.base.clone(),
                "/api/v1/environments",
                json!({"name": env}),
                admin_s.clone()
            )
            .await
            .0,
            201
        );
    }
    post(
        b.base.clone(),
        "/api/v1/projects",
        json!({"key": "shop", "provider": "local", "repo": repo}),
        admin_s.clone(),
    )
    .await;
    for env in ["e1", "e2", "e3"] {
        let (s, _) = call(
            reqwest::Method::PUT,
            &format!("{}/api/v1/projects/shop/environments/{env}", a.base),
            Some(admin),
            Some(json!({})),
        )
        .await;
        assert_eq!(s, 200);
    }
    let mut first_of = std::collections::HashMap::new();
    for round in 0..2 {
        for env in ["e1", "e2", "e3"] {
            let base = if round == 0 {
                a.base.clone()
            } else {
                b.base.clone()
            };
            let (_, j) = post(
                base,
                "/api/v1/projects/shop/deploys",
                json!({"environment": env, "ref": "develop"}),
                admin_s.clone(),
            )
            .await;
            assert_eq!(j["state"], "QUEUED", "{j}");
            first_of
                .entry(env)
                .or_insert_with(|| j["id"].as_str().unwrap().to_owned());
        }
    }
    // Eight runners claim at once, half through each server.
    let mut claims = vec![];
    for i in 0..8 {
        let base = if i % 2 == 0 {
            a.base.clone()
        } else {
            b.base.clone()
        };
        claims.push(tokio::spawn(post(
            base,
            "/api/v1/runner/claim",
            json!({"runner": format!("r{i}")}),
            admin_s.clone(),
        )));
    }
    let mut running = vec![];
    for c in claims {
        let (status, body) = c.await.unwrap();
        if status == 200 {
            running.push((
                body["job"]["environment"].as_str().unwrap().to_owned(),
                body["job"]["id"].as_str().unwrap().to_owned(),
            ));
        }
    }
    let mut envs: Vec<&str> = running.iter().map(|(e, _)| e.as_str()).collect();
    envs.sort_unstable();
    assert_eq!(
        envs,
        vec!["e1", "e2", "e3"],
        "one job per environment, whichever server was asked"
    );
    for (env, id) in &running {
        assert_eq!(
            first_of[env.as_str()],
            *id,
            "the oldest job of {env} runs first"
        );
    }
    let (_, list) = get(
        &format!("{}/api/v1/deploys?state=RUNNING", b.base),
        Some(admin),
    )
    .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
    assert_eq!(a.stop(), 0);
    assert_eq!(b.stop(), 0);
}

/// F11 with a real process and a real signal: after SIGTERM no invocation is accepted, and the
/// queued and running ones finish (their callbacks arrive) before the server exits 0.
// Multi-threaded: the callback receiver must answer while the test blocks waiting for exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_function_queues() {
    let hello = draven_functions::testing::binary("draven-examples", "hello");
    let (hook, got) = callback_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = serve_in(dir.path());
    cmd.args(["--shutdown-delay-secs", "1"])
        .env("DRAVEN_BOOTSTRAP_TOKEN", "drain-fn-admin-token")
        .env("DRAVEN_CALLBACK_ALLOW", "127.0.0.1/32");
    let mut server = Server::start(cmd);
    let token = Some("drain-fn-admin-token");
    let base = server.base.clone();
    let (s, _) = call(
        reqwest::Method::PUT,
        &format!("{base}/api/v1/secrets/hook"),
        token,
        Some(json!({"value": "s3cret"})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, body) = call(
        reqwest::Method::PUT,
        &format!("{base}/api/v1/functions/hello"),
        token,
        Some(json!({"runtime": {"kind": "process", "command": hello}, "max_concurrency": 1, "callback_secret": "hook"})),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let client = reqwest::Client::new();
    let invoke = |payload: Value| {
        client
            .post(format!("{base}/api/v1/functions/hello/invoke-async"))
            .bearer_auth("drain-fn-admin-token")
            .header("x-callback-url", hook.as_str())
            .json(&payload)
            .send()
    };
    for _ in 0..4 {
        let r = invoke(json!({"sleep_ms": 300})).await.unwrap();
        assert_eq!(r.status(), 202);
    }
    server.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    let r = invoke(json!({})).await.unwrap();
    assert_eq!(r.status(), 503, "no new invocations while draining");
    assert_eq!(server.wait(), 0);
    let delivered = got.lock().await;
    assert_eq!(
        delivered.len(),
        4,
        "every accepted invocation finished and called back"
    );
    assert!(delivered
        .iter()
        .all(|h| h["x-draven-outcome"] == "succeeded"));
    assert!(server.stderr().contains("function queues drained"));
}

type Deliveries = std::sync::Arc<tokio::sync::Mutex<Vec<axum::http::HeaderMap>>>;

async fn callback_receiver() -> (String, Deliveries) {
    let got: Deliveries = Default::default();
    let store = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let store = store.clone();
            async move {
                store.lock().await.push(headers);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), got)
}

#[test]
fn admin_cli_manages_functions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve_in(dir.path()));
    assert_eq!(server.stop(), 0);
    let (code, _, err) = admin_stdin_err(
        dir.path(),
        &["functions", "put", "hello", "-"],
        r#"{"runtime": {"kind": "process", "command": ""}}"#,
    );
    assert_ne!(code, 0);
    assert!(err.contains("runtime.command"), "{err}");
    let (code, out, _) = admin_stdin_err(
        dir.path(),
        &["functions", "put", "hello", "-"],
        r#"{"runtime": {"kind": "process", "command": "/bin/cat", "mode": "process"}}"#,
    );
    assert_eq!(code, 0);
    assert!(out.contains("created function hello (revision 1)"), "{out}");
    let (_, out, _) = admin(dir.path(), &["functions", "list"]);
    assert!(out.starts_with("hello\trevision 1"), "{out}");
    let (_, out, _) = admin(dir.path(), &["functions", "show", "hello"]);
    let spec: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(spec["retries"], 3);
    let (code, out, _) = admin(dir.path(), &["functions", "delete", "hello"]);
    assert_eq!((code, out.trim()), (0, "deleted function hello"));
}

fn admin_stdin_err(dir: &Path, args: &[&str], input: &str) -> (i32, String, String) {
    let mut all = vec!["admin", "--data-dir", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    let mut child = draven(&all)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `draven serve` runs the provider dispatcher: a job of a github project is triggered on the
/// (fake) GitHub with the callback URL under DRAVEN_PUBLIC_URL and followed by polling to its
/// end.
#[tokio::test]
async fn serve_hands_provider_jobs_to_their_pipelines() {
    use draven_deploy::fakes::{Fake, Kind};
    let fake = Fake::start(Kind::GitHub, "ghp_fake_token").await;
    let repo = draven_deploy::testing::fixture();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = serve_in(dir.path());
    cmd.env("DRAVEN_BOOTSTRAP_TOKEN", "provider-test-admin-token")
        .env("DRAVEN_PUBLIC_URL", "https://draven.example.com/")
        .env("DRAVEN_PROVIDER_POLL_SECS", "1");
    let server = Server::start(cmd);
    let token = Some("provider-test-admin-token");
    let url = |p: &str| format!("{}{p}", server.base);
    let post = |p: &str, body: Value| {
        let u = url(p);
        async move { call(reqwest::Method::POST, &u, token, Some(body)).await }
    };
    assert_eq!(
        post("/api/v1/environments", json!({"name": "demo"}))
            .await
            .0,
        201
    );
    let (s, _) = call(
        reqwest::Method::PUT,
        &url("/api/v1/secrets/gh-token"),
        token,
        Some(json!({"value": "ghp_fake_token"})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, b) = post(
        "/api/v1/projects",
        json!({"key": "shop", "provider": "github", "repo": repo.repo,
               "integration": {"repository": "acme/shop", "api_url": fake.api_url, "workflows": {"*": "deploy.yml"}, "token_secret": "gh-token"}}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let (s, _) = call(
        reqwest::Method::PUT,
        &url("/api/v1/projects/shop/environments/demo"),
        token,
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, job) = post(
        "/api/v1/projects/shop/deploys",
        json!({"environment": "demo", "ref": "develop"}),
    )
    .await;
    assert_eq!(s, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    let mut last = Value::Null;
    for _ in 0..100 {
        last = get(&url(&format!("/api/v1/deploys/{id}")), token).await.1;
        if last["state"] == "SUCCEEDED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last["state"], "SUCCEEDED", "{last}");
    assert_eq!(
        last["provider_url"],
        "https://github.com/acme/shop/actions/runs/9001"
    );
    let run = fake.run(0);
    assert_eq!(
        run.trigger["inputs"]["callback_url"].as_str().unwrap(),
        format!("https://draven.example.com/api/v1/callbacks/{id}")
    );
    assert_eq!(server.stop(), 0);
}
