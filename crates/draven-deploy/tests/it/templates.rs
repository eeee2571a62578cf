//! The shipped pipeline templates honour the contract: the YAML files parse and pass JOB_ID /
//! ENV / REF and the callback to `deploy/run.sh`; `run.sh` is valid bash, drives Deployer
//! (`deploy:info`, `deploy stage=ENV --revision=REF`, `rollback`, `deploy:unlock` after a failed
//! deploy) and reports start, logs and finish (with result and log link) to the callback URL.

use serde_yaml::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

fn templates() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates")
}

fn yaml(rel: &str) -> Value {
    let text = std::fs::read_to_string(templates().join(rel)).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn text(rel: &str) -> String {
    std::fs::read_to_string(templates().join(rel)).unwrap()
}

#[test]
fn github_workflow_takes_the_contract_inputs_and_carries_the_job_marker() {
    let wf = yaml("github/draven-deploy.yml");
    let inputs = &wf["on"]["workflow_dispatch"]["inputs"];
    for input in ["job_id", "env", "ref", "callback_url", "callback_token"] {
        assert_eq!(
            inputs[input]["required"],
            Value::Bool(true),
            "input {input}"
        );
    }
    let run_name = wf["run-name"].as_str().unwrap();
    // What draven_deploy::providers::job_marker looks for.
    assert!(
        run_name.contains("[draven-job ${{ inputs.job_id }}]"),
        "{run_name}"
    );
    let steps = wf["jobs"]["deploy"]["steps"].as_sequence().unwrap();
    let deploy = steps
        .iter()
        .find(|s| {
            s["run"]
                .as_str()
                .is_some_and(|r| r.contains("deploy/run.sh deploy"))
        })
        .expect("a step runs deploy/run.sh");
    for var in [
        "JOB_ID",
        "ENV",
        "REF",
        "DRAVEN_CALLBACK_URL",
        "DRAVEN_CALLBACK_TOKEN",
        "DRAVEN_LOG_URL",
    ] {
        assert!(deploy["env"][var].as_str().is_some(), "{var}");
    }
    assert!(text("github/draven-deploy.yml").contains("::add-mask::"));
}

#[test]
fn gitlab_job_runs_for_draven_pipelines_only() {
    let ci = yaml("gitlab/.gitlab-ci.yml");
    let job = &ci["draven-deploy"];
    let rule = job["rules"][0]["if"].as_str().unwrap();
    for var in ["$JOB_ID", "$ENV", "$REF"] {
        assert!(rule.contains(var), "{rule}");
    }
    assert_eq!(
        job["variables"]["DRAVEN_LOG_URL"],
        Value::String("$CI_PIPELINE_URL".into())
    );
    let script: Vec<&str> = job["script"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    assert!(
        script.iter().any(|s| s.contains("deploy/run.sh")),
        "{script:?}"
    );
}

#[test]
fn bitbucket_custom_pipelines_declare_the_variables() {
    let p = yaml("bitbucket/bitbucket-pipelines.yml");
    let custom = p["pipelines"]["custom"].as_mapping().unwrap();
    assert!(custom.len() >= 2);
    for (name, steps) in custom {
        let vars: Vec<&str> = steps[0]["variables"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        for var in [
            "JOB_ID",
            "ENV",
            "REF",
            "DRAVEN_CALLBACK_URL",
            "DRAVEN_CALLBACK_TOKEN",
        ] {
            assert!(vars.contains(&var), "{name:?}: {var}");
        }
    }
    assert!(text("bitbucket/bitbucket-pipelines.yml").contains("bash deploy/run.sh"));
}

/// A stand-in `dep` that logs its arguments and fails `deploy` when FAIL_DEPLOY=1.
fn fake_dep(dir: &Path) -> PathBuf {
    let path = dir.join("dep");
    std::fs::write(
        &path,
        "#!/usr/bin/env bash\necho \"$*\" >> \"$DEP_LOG\"\necho \"dep $*\"\nif [ \"$1\" = deploy ] && [ \"${FAIL_DEPLOY:-}\" = 1 ]; then echo 'boom' >&2; exit 3; fi\n",
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    path
}

struct RunSh {
    status: i32,
    dep_calls: Vec<String>,
}

fn run_sh(task: &str, extra: &[(&str, &str)]) -> RunSh {
    let dir = tempfile::tempdir().unwrap();
    let dep = fake_dep(dir.path());
    let log = dir.path().join("dep.log");
    let mut cmd = Command::new("bash");
    cmd.arg(templates().join("deploy/run.sh"))
        .arg(task)
        .current_dir(dir.path())
        .env("ENV", "demo")
        .env("REF", "v1.2.0")
        .env("JOB_ID", "job-1")
        .env("DEP", &dep)
        .env("DEP_LOG", &log)
        .env_remove("DRAVEN_CALLBACK_URL")
        .env_remove("DRAVEN_CALLBACK_TOKEN");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    RunSh {
        status: out.status.code().unwrap_or(-1),
        dep_calls: std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect(),
    }
}

#[test]
fn run_sh_is_valid_bash_and_drives_deployer() {
    let check = Command::new("bash")
        .arg("-n")
        .arg(templates().join("deploy/run.sh"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let r = run_sh("deploy", &[]);
    assert_eq!(r.status, 0);
    assert_eq!(
        r.dep_calls,
        vec![
            "deploy:info stage=demo",
            "deploy stage=demo --revision=v1.2.0"
        ]
    );
    // A failed deploy releases Deployer's lock and fails with deploy's status.
    let r = run_sh("deploy", &[("FAIL_DEPLOY", "1")]);
    assert_eq!(r.status, 3);
    assert_eq!(
        r.dep_calls,
        vec![
            "deploy:info stage=demo",
            "deploy stage=demo --revision=v1.2.0",
            "deploy:unlock stage=demo"
        ]
    );
    assert_eq!(
        run_sh("rollback", &[]).dep_calls,
        vec!["rollback stage=demo"]
    );
    assert_eq!(
        run_sh("deploy:info", &[]).dep_calls,
        vec!["deploy:info stage=demo"]
    );
    assert_eq!(run_sh("explode", &[]).status, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn run_sh_reports_to_the_callbacks() {
    if Command::new("curl").arg("--version").output().is_err() {
        panic!("curl is needed by deploy/run.sh");
    }
    use axum::extract::Path as AxPath;
    use axum::http::HeaderMap;
    let seen: Arc<Mutex<Vec<(String, String, serde_json::Value)>>> = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/api/v1/callbacks/job-1/{what}",
        axum::routing::post(
            move |AxPath(what): AxPath<String>, headers: HeaderMap, body: axum::body::Bytes| {
                let s = s.clone();
                async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let v = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                    s.lock().unwrap().push((what, auth, v));
                    axum::http::StatusCode::NO_CONTENT
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let url = format!("http://{addr}/api/v1/callbacks/job-1");
    let r = tokio::task::spawn_blocking(move || {
        run_sh(
            "deploy",
            &[
                ("FAIL_DEPLOY", "1"),
                ("DRAVEN_CALLBACK_URL", url.as_str()),
                ("DRAVEN_CALLBACK_TOKEN", "drv_cb_token"),
                ("DRAVEN_LOG_URL", "https://ci.example.com/runs/7"),
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(r.status, 3);
    let seen = seen.lock().unwrap().clone();
    let kinds: Vec<&str> = seen.iter().map(|(w, _, _)| w.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"start"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"finish"), "{kinds:?}");
    assert!(
        kinds.iter().filter(|k| **k == "logs").count() >= 3,
        "{kinds:?}"
    );
    assert!(seen
        .iter()
        .all(|(_, auth, _)| auth == "Bearer drv_cb_token"));
    let logs: String = seen
        .iter()
        .filter(|(w, _, _)| w == "logs")
        .map(|(_, _, v)| v["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        logs.contains("dep deploy stage=demo --revision=v1.2.0") && logs.contains("boom"),
        "{logs}"
    );
    let finish = &seen.last().unwrap().2;
    assert_eq!(finish["result"], "failed");
    assert_eq!(finish["exit_code"], 3);
    assert_eq!(finish["log_url"], "https://ci.example.com/runs/7");
}
