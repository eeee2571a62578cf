//! The deployment kit is checked like code: every manifest in `deploy/kubernetes/` parses and
//! matches its `k8s-openapi` type exactly (no unknown fields); the Role grants exactly the
//! verbs the executor uses; the Deployment probes `/healthz` and `/readyz` and its grace
//! period covers the drain; configuration names only variables Draven reads; the objects the
//! executor builds match the API schema; the Dockerfiles are multi-stage and non-root.

use draven_functions::executor::{Deployment as FnDeployment, ExecRequest};
use draven_functions::spec::{FunctionSpec, Runtime, SpecLimits};
use draven_kube::fake::validate::strict;
use draven_kube::objects;
use draven_kube::KubeConfig;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every document of every manifest, by kind and name.
fn manifests() -> BTreeMap<(String, String), Value> {
    let dir = root().join("deploy/kubernetes");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let kind = value["kind"].as_str().unwrap_or("").to_owned();
            let name = value["metadata"]["name"].as_str().unwrap_or("").to_owned();
            let checked = match kind.as_str() {
                "Namespace" => strict::<Namespace>(&value).map(|_| ()),
                "ServiceAccount" => strict::<ServiceAccount>(&value).map(|_| ()),
                "Role" => strict::<Role>(&value).map(|_| ()),
                "RoleBinding" => strict::<RoleBinding>(&value).map(|_| ()),
                "ConfigMap" => strict::<ConfigMap>(&value).map(|_| ()),
                "Secret" => strict::<Secret>(&value).map(|_| ()),
                "Deployment" => strict::<Deployment>(&value).map(|_| ()),
                "Service" => strict::<Service>(&value).map(|_| ()),
                "Kustomization" => Ok(()),
                other => Err(format!("unexpected kind {other}")),
            };
            checked.unwrap_or_else(|e| panic!("{} ({kind} {name}): {e}", path.display()));
            out.insert((kind, name), value);
        }
    }
    out
}

fn get<'a>(m: &'a BTreeMap<(String, String), Value>, kind: &str, name: &str) -> &'a Value {
    m.get(&(kind.to_owned(), name.to_owned()))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn manifests_are_valid_and_minimal() {
    let m = manifests();
    let kinds: BTreeSet<&str> = m.keys().map(|(k, _)| k.as_str()).collect();
    for k in [
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
    ] {
        assert!(kinds.contains(k), "missing {k}");
    }
    // Every file is listed in the kustomization.
    let listed: BTreeSet<String> = get(&m, "Kustomization", "")["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    for entry in std::fs::read_dir(root().join("deploy/kubernetes")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name != "kustomization.yaml" {
            assert!(listed.contains(&name), "{name} not in kustomization.yaml");
        }
    }

    // The Role: exactly what the executor calls, in the functions namespace, never secrets.
    let role = get(&m, "Role", "draven-executor");
    let functions_ns = role["metadata"]["namespace"].as_str().unwrap();
    let mut granted = BTreeMap::new();
    for rule in role["rules"].as_array().unwrap() {
        for r in rule["resources"].as_array().unwrap() {
            let verbs: BTreeSet<String> = rule["verbs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect();
            granted.insert(r.as_str().unwrap().to_owned(), verbs);
        }
    }
    let expected: BTreeMap<String, BTreeSet<String>> = [
        ("jobs", &["create", "watch", "delete"][..]),
        ("pods", &["watch"]),
        ("pods/log", &["get"]),
        ("deployments", &["create", "get", "watch", "delete"]),
        ("deployments/scale", &["patch"]),
        ("services", &["create", "get", "delete"]),
    ]
    .into_iter()
    .map(|(r, v)| (r.to_owned(), v.iter().map(|s| s.to_string()).collect()))
    .collect();
    assert_eq!(granted, expected);
    let binding = get(&m, "RoleBinding", "draven-executor");
    assert_eq!(binding["metadata"]["namespace"], functions_ns);
    assert_eq!(binding["roleRef"]["name"], "draven-executor");
    let subject = &binding["subjects"][0];
    let sa = get(&m, "ServiceAccount", subject["name"].as_str().unwrap());
    assert_eq!(sa["metadata"]["namespace"], subject["namespace"]);
    get(&m, "Namespace", functions_ns);

    // The control plane: probes, drain, configuration, non-root.
    let d = get(&m, "Deployment", "draven");
    let ns = d["metadata"]["namespace"].as_str().unwrap();
    get(&m, "Namespace", ns);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);
    let c = &pod["containers"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let config = get(
        &m,
        "ConfigMap",
        c["envFrom"][0]["configMapRef"]["name"].as_str().unwrap(),
    );
    let secret = get(
        &m,
        "Secret",
        c["envFrom"][1]["secretRef"]["name"].as_str().unwrap(),
    );
    let secs = |k: &str| -> i64 { config["data"][k].as_str().unwrap().parse().unwrap() };
    let drain = secs("DRAVEN_SHUTDOWN_DELAY_SECS") + secs("DRAVEN_SHUTDOWN_GRACE_SECS");
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap();
    assert!(
        (drain..=drain + 10).contains(&grace),
        "terminationGracePeriodSeconds {grace} vs drain {drain}"
    );
    assert_eq!(config["data"]["DRAVEN_KUBE_NAMESPACE"], functions_ns);
    let port = c["ports"][0]["containerPort"].as_i64().unwrap();
    assert!(config["data"]["DRAVEN_LISTEN"]
        .as_str()
        .unwrap()
        .ends_with(&format!(":{port}")));
    // PostgreSQL and S3 settings, and only variables Draven knows.
    let known = std::fs::read_to_string(root().join("crates/draven/src/config.rs")).unwrap();
    let mut names: Vec<String> = config["data"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    names.extend(secret["stringData"].as_object().unwrap().keys().cloned());
    for n in &names {
        if n.starts_with("DRAVEN_") {
            assert!(
                known.contains(&format!("\"{n}\"")),
                "{n} is not a variable Draven reads"
            );
        }
    }
    for n in [
        "DRAVEN_DATABASE_URL",
        "DRAVEN_OBJECT_STORE",
        "DRAVEN_S3_ENDPOINT",
        "AWS_ACCESS_KEY_ID",
        "DRAVEN_MASTER_KEY",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} not configured");
    }
    assert!(secret["stringData"]["DRAVEN_DATABASE_URL"]
        .as_str()
        .unwrap()
        .starts_with("postgres://"));
    let svc = get(&m, "Service", "draven");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(
        svc["spec"]["selector"],
        d["spec"]["selector"]["matchLabels"]
    );
}

fn function(spec: Value) -> FnDeployment {
    let spec = FunctionSpec::parse(
        spec.to_string().as_bytes(),
        &SpecLimits::default(),
        &["kubernetes"],
    )
    .unwrap();
    FnDeployment {
        tenant: "0195f1d2-7b7e-7c2a-9d7e-2f1a0b3c4d5e".into(),
        name: "a-rather-long-function-name-that-goes-on-and-on".into(),
        revision: 12,
        spec,
        env: Vec::new(),
    }
}

/// Every object the executor creates matches the schema, with valid names and labels.
#[test]
fn executor_objects_match_the_api_schema() {
    let mut config = KubeConfig::new("draven-functions");
    config.image_pull_policy = Some("Always".into());
    let d = function(json!({
        "executor": "kubernetes",
        "runtime": {"kind": "container", "image": "registry.example.com/fn:1", "command": ["/f"], "args": ["-v"],
                    "mode": "warm", "warm": {"min_replicas": 1, "max_replicas": 3, "port": 9000}},
        "env": {"A": "1"}, "secrets": [{"env": "TOKEN", "secret": "tok", "key": "t"}],
        "resources": {"cpu": "500m", "memory": "128Mi"}, "timeout_ms": 90000,
    }));
    let req = ExecRequest {
        invocation_id: "0195f1d2-7b7e-7c2a-9d7e-2f1a0b3c4d5e".into(),
        payload: bytes::Bytes::from_static(b"{\"x\":1}"),
        content_type: Some("application/json".into()),
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        deadline: std::time::Instant::now(),
        deadline_unix_ms: 0,
    };
    let name = objects::job_name(&d.name, &req.invocation_id);
    assert!(
        name.len() <= 57 && draven_kube::fake::validate::dns_label(&name),
        "{name}"
    );
    let job = objects::job(
        &d,
        &config,
        &objects::JobInput {
            name: &name,
            req: &req,
            deadline_secs: 90,
        },
    );
    let Runtime::Container { warm, .. } = &d.spec.runtime else {
        unreachable!()
    };
    let values = [
        serde_json::to_value(&job).unwrap(),
        serde_json::to_value(objects::deployment(&d, &config, warm, 1)).unwrap(),
        serde_json::to_value(objects::service(&d, &config, warm)).unwrap(),
    ];
    strict::<Job>(&values[0]).unwrap();
    strict::<Deployment>(&values[1]).unwrap();
    strict::<Service>(&values[2]).unwrap();
    let warm_name = values[2]["metadata"]["name"].as_str().unwrap();
    assert!(
        draven_kube::fake::validate::dns_label(warm_name) && warm_name.starts_with("dfw-"),
        "{warm_name}"
    );
    for v in &values {
        for labels in [
            &v["metadata"]["labels"],
            &v["spec"]["template"]["metadata"]["labels"],
        ] {
            for (k, l) in labels.as_object().into_iter().flatten() {
                assert!(draven_kube::fake::validate::label_key_ok(k), "{k}");
                assert!(
                    draven_kube::fake::validate::label_value_ok(l.as_str().unwrap()),
                    "{k}={l}"
                );
            }
        }
    }
    let spec = &values[0]["spec"];
    assert_eq!(spec["activeDeadlineSeconds"], 90);
    assert_eq!(spec["backoffLimit"], 0);
    let c = &spec["template"]["spec"]["containers"][0];
    assert_eq!(c["command"], json!(["/f"]));
    assert_eq!(c["args"], json!(["-v"]));
    assert_eq!(c["imagePullPolicy"], "Always");
    let dep = &values[1]["spec"]["template"]["spec"];
    assert_eq!(dep["terminationGracePeriodSeconds"], 95);
    assert_eq!(dep["containers"][0]["ports"][0]["containerPort"], 9000);
    assert_eq!(
        values[1]["spec"]["selector"]["matchLabels"]["draven.dev/function"],
        d.name.as_str()
    );
    // Label values are made valid, whatever the input.
    assert_eq!(objects::label_value("-Weird name!-"), "Weird_name");
    assert_eq!(objects::label_value(&"x".repeat(80)).len(), 63);
    // The fake's schema check catches a stray field.
    let mut bad = values[0].clone();
    bad["spec"]["template"]["spec"]["containers"][0]["imagePolicy"] = json!("Always");
    let e = strict::<Job>(&bad).unwrap_err();
    assert!(
        e.contains("spec.template.spec.containers[0].imagePolicy"),
        "{e}"
    );
}

#[test]
fn dockerfiles_are_multi_stage_and_non_root() {
    for (file, base) in [
        ("Dockerfile.control-plane", "debian:bookworm-slim"),
        (
            "Dockerfile.function",
            "gcr.io/distroless/static-debian12:nonroot",
        ),
    ] {
        let text = std::fs::read_to_string(root().join("deploy/docker").join(file)).unwrap();
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .collect();
        let froms: Vec<&&str> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
        assert!(froms.len() >= 2, "{file}: multi-stage");
        assert!(
            froms.last().unwrap().contains(base),
            "{file}: runs on {base}"
        );
        let last_from = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
        let user = lines[last_from..]
            .iter()
            .rfind(|l| l.starts_with("USER "))
            .unwrap_or_else(|| panic!("{file}: the runtime stage sets USER"));
        let uid = user.trim_start_matches("USER ").split(':').next().unwrap();
        assert!(uid != "root" && uid != "0", "{file}: non-root");
        assert!(
            lines[last_from..]
                .iter()
                .any(|l| l.starts_with("COPY --from=build")),
            "{file}"
        );
        assert!(
            lines.iter().any(|l| l.contains("--locked")),
            "{file}: the lock file is honoured"
        );
    }
}
