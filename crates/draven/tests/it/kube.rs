//! `draven serve` with the Kubernetes executor configured by `DRAVEN_KUBE_*` (a kubeconfig
//! pointing at the fake API server): a container function runs as a Job end to end through
//! the real binary, and the variables are known (no typo warning) and documented.

use super::{call, draven, Server};
use draven_kube::fake::{FakeCluster, Image, Res};
use serde_json::json;

#[tokio::test]
async fn serve_runs_container_functions_on_kubernetes_when_configured() {
    let fake = FakeCluster::start().await;
    let wc = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/functions/wc.sh")
        .canonicalize()
        .unwrap();
    let script = format!(
        "printf %s \"$DRAVEN_PAYLOAD\" | base64 -d | /bin/sh {}",
        wc.display()
    );
    fake.image("example/wc:1", Image::run(&["/bin/sh", "-c", &script]));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: u\n    namespace: fns\nusers:\n- name: u\n  user:\n    token: t\n",
            fake.url()
        ),
    )
    .unwrap();
    let token = "kube-test-admin-token";
    let mut cmd = draven(&["serve", "--listen", "127.0.0.1:0", "--data-dir"]);
    cmd.arg(dir.path().join("data"))
        .env("DRAVEN_BOOTSTRAP_TOKEN", token)
        .env("DRAVEN_KUBE_KUBECONFIG", &kubeconfig)
        .env("DRAVEN_KUBE_JOB_TTL_SECS", "60");
    let server = Server::start(cmd);
    let (status, body) = call(
        reqwest::Method::PUT,
        &format!("{}/api/v1/functions/wc", server.base),
        Some(token),
        Some(json!({"executor": "kubernetes", "runtime": {"kind": "container", "image": "example/wc:1"}})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = call(
        reqwest::Method::POST,
        &format!("{}/api/v1/functions/wc/invoke", server.base),
        Some(token),
        Some(json!("one two three")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["words"], 3);
    // The Job went to the kubeconfig's namespace with the configured TTL, and is gone.
    let jobs = fake.created(Res::Jobs);
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["metadata"]["namespace"], "fns");
    assert_eq!(jobs[0]["spec"]["ttlSecondsAfterFinished"], 60);
    assert!(fake.objects(Res::Jobs, "fns").is_empty());
    let stderr = std::fs::read_to_string(&server.stderr_path).unwrap();
    assert!(!stderr.contains("unknown DRAVEN_"), "{stderr}");
    assert!(stderr.contains("Kubernetes executor enabled"), "{stderr}");

    let help = draven(&["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for var in [
        "DRAVEN_KUBE_ENABLED",
        "DRAVEN_KUBE_NAMESPACE",
        "DRAVEN_KUBE_KUBECONFIG",
        "DRAVEN_KUBE_CONTEXT",
        "DRAVEN_KUBE_JOB_TTL_SECS",
        "DRAVEN_KUBE_IMAGE_PULL_POLICY",
        "DRAVEN_KUBE_MAX_JOB_PAYLOAD_BYTES",
    ] {
        assert!(help.contains(&format!("[env: {var}")), "{var}");
    }
}
