//! The Kubernetes executor against the fake API server, over real HTTP with kube-rs' client:
//! Job mode (results, failure mapping, secrets by reference, limits, cleanup), warm mode
//! (scale from zero, scale to zero) and the fake's own API faithfulness (404/409/422 as
//! `Status`, watch events from a resourceVersion).

use bytes::Bytes;
use draven_functions::executor::{Deployment, ExecError, ExecRequest, Executor};
use draven_functions::spec::{FunctionSpec, SpecLimits};
use draven_kube::fake::{FakeCluster, Image, Res};
use draven_kube::{KubeConfig, KubeExecutor};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NS: &str = "functions";

fn wc_script() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/functions/wc.sh")
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

/// A cluster whose images are the test programs.
async fn cluster() -> FakeCluster {
    let fake = FakeCluster::start().await;
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
        "example/fail:1",
        Image::run(&[
            "/bin/sh",
            "-c",
            "echo \"bad input: $(printf %s \"$DRAVEN_PAYLOAD\" | base64 -d)\" >&2; exit 3",
        ]),
    );
    fake.image(
        "example/env:1",
        Image::run(&["/bin/sh", "-c", "printf '{\"token\":\"%s\",\"function\":\"%s\",\"trace\":\"%s\"}' \"$TOKEN\" \"$DRAVEN_FUNCTION\" \"$TRACEPARENT\""]),
    );
    fake.image("example/slow:1", Image::run(&["/bin/sh", "-c", "sleep 30"]));
    fake.image("example/oom:1", Image::OomKilled);
    fake.image("example/evicted:1", Image::Evicted);
    fake.image("example/private:1", Image::PullError);
    fake.image("example/deadline:1", Image::DeadlineExceeded);
    fake
}

fn executor(fake: &FakeCluster) -> KubeExecutor {
    let mut config = KubeConfig::new(NS);
    config.image_pull_policy = Some("IfNotPresent".into());
    config.max_job_payload_bytes = 1024;
    KubeExecutor::new(fake.client(NS), config)
}

fn function(name: &str, spec: Value) -> Arc<Deployment> {
    let spec = FunctionSpec::parse(
        spec.to_string().as_bytes(),
        &SpecLimits::default(),
        &["kubernetes"],
    )
    .unwrap();
    Arc::new(Deployment {
        tenant: "0195f1d2-tenant".into(),
        name: name.into(),
        revision: 1,
        spec,
        env: Vec::new(),
    })
}

fn container(image: &str, extra: Value) -> Value {
    let mut spec = json!({"executor": "kubernetes",
                          "runtime": {"kind": "container", "image": image},
                          "resources": {"cpu": "250m", "memory": "64Mi"},
                          "env": {"GREETING": "hi"}});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            spec[k] = v;
        }
    }
    spec
}

fn request(payload: &[u8], within: Duration) -> ExecRequest {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    ExecRequest {
        invocation_id: uuid::Uuid::now_v7().to_string(),
        payload: Bytes::copy_from_slice(payload),
        content_type: Some("text/plain".into()),
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        deadline: Instant::now() + within,
        deadline_unix_ms: now_ms + within.as_millis() as i64,
    }
}

#[tokio::test]
async fn a_job_per_invocation_answers_and_is_deleted() {
    let fake = cluster().await;
    let exec = executor(&fake);
    let f = exec
        .deploy(function("wc", container("example/wc:1", json!({}))))
        .unwrap();
    let req = request(b"one two three", Duration::from_secs(20));
    let id = req.invocation_id.clone();
    let r = f.invoke(req).await.expect("the Job succeeds");
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["words"], 3, "{body}");
    assert_eq!(body["invocation_id"], id.as_str());
    assert!(r.cold_start.is_some());

    // The Job as sent: Draven's contract with Kubernetes.
    let sent = fake.created(Res::Jobs);
    assert_eq!(sent.len(), 1);
    let job = &sent[0];
    let spec = &job["spec"];
    assert_eq!(spec["backoffLimit"], 0);
    assert_eq!(spec["ttlSecondsAfterFinished"], 300);
    let deadline = spec["activeDeadlineSeconds"].as_i64().unwrap();
    assert!((19..=20).contains(&deadline), "{deadline}");
    let labels = &job["metadata"]["labels"];
    assert_eq!(labels["draven.dev/function"], "wc");
    assert_eq!(labels["draven.dev/tenant"], "0195f1d2-tenant");
    assert_eq!(labels["draven.dev/invocation"], id.as_str());
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "example/wc:1");
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(c["terminationMessagePolicy"], "FallbackToLogsOnError");
    assert_eq!(c["resources"]["limits"]["memory"], "64Mi");
    assert_eq!(c["resources"]["requests"]["cpu"], "250m");
    let env: Vec<&str> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for var in [
        "GREETING",
        "DRAVEN_FUNCTION",
        "DRAVEN_INVOCATION_ID",
        "TRACEPARENT",
        "DRAVEN_DEADLINE",
        "DRAVEN_PAYLOAD",
    ] {
        assert!(env.contains(&var), "{var} in {env:?}");
    }
    // Deleted with its pod.
    assert!(fake.objects(Res::Jobs, NS).is_empty());
    assert!(fake.wait_until_empty(Res::Pods, NS).await);
    assert_eq!(fake.deleted(Res::Jobs).len(), 1);
}

#[tokio::test]
async fn failures_become_clear_invocation_errors() {
    let fake = cluster().await;
    let exec = executor(&fake);
    let run = |image: &str, within: Duration| {
        let f = exec
            .deploy(function("f", container(image, json!({}))))
            .unwrap();
        async move { f.invoke(request(b"xyz", within)).await }
    };
    // Non-zero exit: a 500 whose body is the termination message (the log's tail).
    match run("example/fail:1", Duration::from_secs(20)).await {
        Err(ExecError::Failed {
            status: 500, body, ..
        }) => {
            assert_eq!(String::from_utf8_lossy(&body), "bad input: xyz")
        }
        other => panic!("{other:?}"),
    }
    // OOM kill and eviction: crashes, retried.
    let e = run("example/oom:1", Duration::from_secs(20))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ExecError::Crashed(m) if m.contains("OOMKilled") && m.contains("64Mi")),
        "{e:?}"
    );
    assert!(e.retryable());
    let e = run("example/evicted:1", Duration::from_secs(20))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ExecError::Crashed(m) if m.contains("evicted") && m.contains("low on resource")),
        "{e:?}"
    );
    // An image that cannot be pulled fails at once and is not retried.
    let started = Instant::now();
    let e = run("example/private:1", Duration::from_secs(20))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ExecError::Unavailable(m) if m.contains("ErrImagePull") && m.contains("example/private:1")),
        "{e:?}"
    );
    assert!(!e.retryable());
    assert!(started.elapsed() < Duration::from_secs(5));
    let e = run("example/unknown:1", Duration::from_secs(20))
        .await
        .unwrap_err();
    assert!(matches!(e, ExecError::Unavailable(_)), "{e:?}");
    // The Job's deadline, and Draven's own.
    assert_eq!(
        run("example/deadline:1", Duration::from_secs(20))
            .await
            .unwrap_err(),
        ExecError::Timeout
    );
    let started = Instant::now();
    assert_eq!(
        run("example/slow:1", Duration::from_millis(700))
            .await
            .unwrap_err(),
        ExecError::Timeout
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    // Every Job went, whatever its end.
    assert!(fake.objects(Res::Jobs, NS).is_empty());
    assert_eq!(fake.deleted(Res::Jobs).len(), 7);
    assert!(fake.wait_until_empty(Res::Pods, NS).await);
}

#[tokio::test]
async fn secrets_are_references_and_limits_are_clear() {
    let fake = cluster().await;
    fake.secret(NS, "api-token", &[("value", "s3cr3t"), ("other", "x")]);
    let exec = executor(&fake);
    let f = exec
        .deploy(function(
            "env",
            container(
                "example/env:1",
                json!({"secrets": [{"env": "TOKEN", "secret": "api-token"}]}),
            ),
        ))
        .unwrap();
    let r = f
        .invoke(request(b"", Duration::from_secs(20)))
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["token"], "s3cr3t");
    assert_eq!(body["function"], "env");
    assert!(body["trace"]
        .as_str()
        .unwrap()
        .starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
    let sent = fake.created(Res::Jobs)[0].to_string();
    assert!(
        !sent.contains("s3cr3t"),
        "the value never leaves the cluster"
    );
    assert!(
        sent.contains(r#""secretKeyRef":{"key":"value","name":"api-token"}"#),
        "{sent}"
    );
    // An explicit key; a missing Secret fails at once.
    let f = exec
        .deploy(function(
            "env",
            container(
                "example/env:1",
                json!({"secrets": [{"env": "TOKEN", "secret": "api-token", "key": "other"}]}),
            ),
        ))
        .unwrap();
    let r = f
        .invoke(request(b"", Duration::from_secs(20)))
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body).unwrap()["token"],
        "x"
    );
    let f = exec
        .deploy(function(
            "env",
            container(
                "example/env:1",
                json!({"secrets": [{"env": "TOKEN", "secret": "missing"}]}),
            ),
        ))
        .unwrap();
    let e = f
        .invoke(request(b"", Duration::from_secs(20)))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ExecError::Unavailable(m) if m.contains("CreateContainerConfigError") && m.contains("\"missing\" not found")),
        "{e:?}"
    );
    // The payload travels in an environment variable: above the limit, a 413.
    let f = exec
        .deploy(function("wc", container("example/wc:1", json!({}))))
        .unwrap();
    match f
        .invoke(request(&[b'a'; 2000], Duration::from_secs(20)))
        .await
    {
        Err(ExecError::Failed {
            status: 413, body, ..
        }) => {
            assert!(String::from_utf8_lossy(&body).contains("DRAVEN_PAYLOAD"))
        }
        other => panic!("{other:?}"),
    }
    assert!(fake.objects(Res::Jobs, NS).is_empty());
}

#[tokio::test]
async fn an_abandoned_attempt_deletes_its_job() {
    let fake = cluster().await;
    let exec = executor(&fake);
    let f = exec
        .deploy(function("slow", container("example/slow:1", json!({}))))
        .unwrap();
    let attempt = f.invoke(request(b"", Duration::from_secs(20)));
    // The gateway gives up (client gone) while the pod runs.
    let r = tokio::time::timeout(Duration::from_millis(500), attempt).await;
    assert!(r.is_err());
    assert!(
        fake.wait_until_empty(Res::Jobs, NS).await,
        "the dropped attempt's Job is deleted"
    );
    assert!(fake.wait_until_empty(Res::Pods, NS).await);
}

#[tokio::test]
async fn warm_functions_scale_from_and_to_zero() {
    let fake = cluster().await;
    let hello = draven_functions::testing::binary("draven-examples", "hello");
    fake.image(
        "example/hello:1",
        Image::run(&[hello.display().to_string()]),
    );
    let exec = executor(&fake);
    let spec = container(
        "example/hello:1",
        json!({"runtime": {"kind": "container", "image": "example/hello:1", "mode": "warm",
                           "warm": {"min_replicas": 0, "max_replicas": 2, "idle_timeout_ms": 300, "port": 8080}}}),
    );
    let f = exec.deploy(function("hello", spec)).unwrap();
    let r = f
        .invoke(request(br#"{"name":"Ada"}"#, Duration::from_secs(20)))
        .await
        .expect("a warm answer");
    assert_eq!(r.status, 200);
    assert!(
        String::from_utf8_lossy(&r.body).contains("Ada"),
        "{:?}",
        r.body
    );
    assert!(
        r.cold_start.is_some(),
        "the first call after zero waits for a replica"
    );
    let r = f
        .invoke(request(br#"{"name":"Bo"}"#, Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(r.cold_start.is_none());
    assert_eq!(f.stats().instances, 1);
    // Under load Draven scales up, within max_replicas (2).
    let burst = futures::future::join_all(
        (0..3).map(|_| f.invoke(request(br#"{"sleep_ms": 300}"#, Duration::from_secs(20)))),
    )
    .await;
    assert!(burst.iter().all(|r| r.is_ok()), "{burst:?}");
    assert_eq!(f.stats().instances, 2);
    assert_eq!(fake.objects(Res::Deployments, NS)[0]["spec"]["replicas"], 2);
    let deps = fake.objects(Res::Deployments, NS);
    assert_eq!(deps.len(), 1);
    assert_eq!(deps[0]["spec"]["replicas"], 2);
    let svc = &fake.objects(Res::Services, NS)[0];
    assert_eq!(svc["spec"]["ports"][0]["port"], 8080);
    let c = &fake.created(Res::Deployments)[0]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/healthz");
    // Idle: back to zero replicas, pods gone; the next call scales up again.
    let mut zero = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if fake.objects(Res::Deployments, NS)[0]["spec"]["replicas"] == 0
            && fake.objects(Res::Pods, NS).is_empty()
        {
            zero = true;
            break;
        }
    }
    assert!(zero, "scaled to zero after idle");
    let r = f
        .invoke(request(br#"{"name":"Cy"}"#, Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&r.body).contains("Cy"));
    assert!(r.cold_start.is_some());
    // Failures keep their status.
    let e = f
        .invoke(request(br#"{"fail":true}"#, Duration::from_secs(20)))
        .await
        .unwrap_err();
    assert!(matches!(e, ExecError::Failed { status: 500, .. }), "{e:?}");
    f.shutdown().await;
    assert!(fake.objects(Res::Deployments, NS).is_empty());
    assert!(fake.objects(Res::Services, NS).is_empty());
    assert!(fake.wait_until_empty(Res::Pods, NS).await);
}

#[tokio::test]
async fn the_fake_speaks_the_kubernetes_api() {
    let fake = FakeCluster::start().await;
    let client = fake.client(NS);
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    // 404 as a Status.
    match jobs.get("nope").await {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
            assert_eq!(s.message, "jobs.batch \"nope\" not found");
        }
        other => panic!("{other:?}"),
    }
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "one", "labels": {"a": "b"}},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
                 "containers": [{"name": "c", "image": "example/slow:1"}]}}}
    }))
    .unwrap();
    let list = jobs.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let mut events = jobs
        .watch(&WatchParams::default().labels("a=b").timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    // 409 on a second create.
    match jobs.create(&PostParams::default(), &job).await {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists")),
        other => panic!("{other:?}"),
    }
    // 422 for an unknown field or a bad label value, checked against the schema.
    let raw = |body: Value| {
        http::Request::post(format!("/apis/batch/v1/namespaces/{NS}/jobs"))
            .header("content-type", "application/json")
            .body(body.to_string().into_bytes())
            .unwrap()
    };
    let mut bad = serde_json::to_value(&job).unwrap();
    bad["metadata"]["name"] = json!("two");
    bad["spec"]["backofLimit"] = json!(0);
    match client.request::<Value>(raw(bad.clone())).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
            assert!(s.message.contains("spec.backofLimit"), "{}", s.message);
        }
        other => panic!("{other:?}"),
    }
    bad["spec"].as_object_mut().unwrap().remove("backofLimit");
    bad["metadata"]["labels"]["a"] = json!("-not valid-");
    match client.request::<Value>(raw(bad)).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 422, "{}", s.message),
        other => panic!("{other:?}"),
    }
    jobs.delete("one", &DeleteParams::background())
        .await
        .unwrap();
    // The watch saw it come, change (its pod started) and go, in order.
    let mut kinds = Vec::new();
    while let Some(ev) = events.next().await {
        match ev.unwrap() {
            WatchEvent::Added(_) => kinds.push("ADDED"),
            WatchEvent::Modified(_) => kinds.push("MODIFIED"),
            WatchEvent::Deleted(_) => {
                kinds.push("DELETED");
                break;
            }
            _ => {}
        }
    }
    assert_eq!(kinds.first(), Some(&"ADDED"));
    assert_eq!(kinds.last(), Some(&"DELETED"));
    assert!(kinds.contains(&"MODIFIED"), "{kinds:?}");
}
