//! The Kubernetes objects the executor creates, built from a function's definition: the
//! per-invocation `batch/v1` Job, and the warm mode's `apps/v1` Deployment and `v1` Service.
//! Pure functions from a definition to typed `k8s-openapi` objects, so that every field is
//! checked against the API schema (the tests also reject unknown fields by a round trip).
//!
//! Architecture invariant: no I/O here, and never a secret's value — secrets are
//! `env.valueFrom.secretKeyRef` references that the kubelet resolves.

use crate::KubeConfig;
use draven_functions::executor::{Deployment as FnDeployment, ExecRequest};
use draven_functions::spec::{Runtime, WarmSettings};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Service;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The container's name in every pod Draven creates.
pub const CONTAINER: &str = "function";
/// Label keys Draven sets on everything it creates.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_FUNCTION: &str = "draven.dev/function";
pub const LABEL_TENANT: &str = "draven.dev/tenant";
pub const LABEL_INVOCATION: &str = "draven.dev/invocation";
pub const LABEL_MODE: &str = "draven.dev/mode";
/// The key of a Kubernetes Secret read when a secret reference names none.
pub const DEFAULT_SECRET_KEY: &str = "value";

/// A valid label value (≤ 63 characters of `[A-Za-z0-9._-]`, alphanumeric at both ends; may be
/// empty): other characters become `_`, the ends are trimmed.
pub fn label_value(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut v = mapped
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned();
    v.truncate(63);
    v.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

/// A DNS-1035 label fragment (lowercase alphanumerics and `-`, starting with a letter) of at
/// most `max` characters.
fn dns_part(s: &str, max: usize) -> String {
    let mut v: String = s
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    v = v
        .trim_start_matches(|c: char| !c.is_ascii_lowercase())
        .to_owned();
    v.truncate(max);
    let v = v.trim_end_matches('-').to_owned();
    if v.is_empty() {
        "fn".into()
    } else {
        v
    }
}

/// A short hash of a string as lowercase hex (to keep names unique after truncation).
fn short_hash(s: &str) -> String {
    // FNV-1a: stable across releases, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:08x}", h as u32)
}

/// The Job of one attempt: `dfn-<function>-<end of the invocation id>-<random>`, ≤ 57
/// characters so its pods' `job-name` label stays a valid label value.
pub fn job_name(function: &str, invocation_id: &str) -> String {
    let id: String = invocation_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let tail = &id[id.len().saturating_sub(12)..];
    let random: String = uuid::Uuid::new_v4().simple().to_string()[..5].to_owned();
    format!("dfn-{}-{tail}-{random}", dns_part(function, 30))
}

/// The Deployment and Service of a warm function revision: `dfw-<function>-r<revision>-<hash
/// of tenant and function>` (a DNS-1035 label, as Service names must be).
pub fn warm_name(tenant: &str, function: &str, revision: i64) -> String {
    format!(
        "dfw-{}-r{revision}-{}",
        dns_part(function, 30),
        short_hash(&format!("{tenant}/{function}"))
    )
}

/// The labels every object of a function carries (the selector of its warm pods).
pub fn function_labels(d: &FnDeployment) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_owned(), "draven".to_owned()),
        (LABEL_FUNCTION.to_owned(), label_value(&d.name)),
        (LABEL_TENANT.to_owned(), label_value(&d.tenant)),
    ])
}

/// The selector of a function's objects (`key=value,…`).
pub fn selector(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn container_parts(d: &FnDeployment) -> (&str, &[String], &[String]) {
    match &d.spec.runtime {
        Runtime::Container {
            image,
            command,
            args,
            ..
        } => (image, command, args),
        Runtime::Process { .. } => ("", &[], &[]),
    }
}

fn env_var(name: &str, value: impl Into<String>) -> Value {
    json!({"name": name, "value": value.into()})
}

/// The definition's `env`, then its secrets as references to Kubernetes Secrets.
fn definition_env(d: &FnDeployment) -> Vec<Value> {
    let mut env: Vec<Value> = d
        .spec
        .env
        .iter()
        .map(|(k, v)| env_var(k, v.clone()))
        .collect();
    env.push(env_var("DRAVEN_FUNCTION", d.name.clone()));
    for s in &d.spec.secrets {
        env.push(json!({
            "name": s.env,
            "valueFrom": {"secretKeyRef": {
                "name": s.secret,
                "key": s.key.as_deref().unwrap_or(DEFAULT_SECRET_KEY),
            }},
        }));
    }
    env
}

/// The container, without the per-invocation environment.
fn container(d: &FnDeployment, config: &KubeConfig, env: Vec<Value>) -> Map<String, Value> {
    let (image, command, args) = container_parts(d);
    let mut c = Map::new();
    c.insert("name".into(), CONTAINER.into());
    c.insert("image".into(), image.into());
    if !command.is_empty() {
        c.insert("command".into(), json!(command));
    }
    if !args.is_empty() {
        c.insert("args".into(), json!(args));
    }
    if let Some(p) = &config.image_pull_policy {
        c.insert("imagePullPolicy".into(), p.clone().into());
    }
    c.insert("env".into(), Value::Array(env));
    let mut quantities = Map::new();
    if let Some(cpu) = &d.spec.resources.cpu {
        quantities.insert("cpu".into(), cpu.clone().into());
    }
    if let Some(memory) = &d.spec.resources.memory {
        quantities.insert("memory".into(), memory.clone().into());
    }
    if !quantities.is_empty() {
        // Requests equal limits: the function gets what it asked for (Guaranteed QoS when
        // both are set) and an OOM kill means the definition's memory was too small.
        c.insert(
            "resources".into(),
            json!({"requests": quantities.clone(), "limits": quantities}),
        );
    }
    c.insert(
        "terminationMessagePolicy".into(),
        "FallbackToLogsOnError".into(),
    );
    c
}

/// What one Job-mode attempt needs besides the definition.
pub struct JobInput<'a> {
    pub name: &'a str,
    pub req: &'a ExecRequest,
    /// Seconds left until the attempt's deadline (≥ 1).
    pub deadline_secs: i64,
}

/// The `batch/v1` Job of one attempt. The payload travels base64-encoded in `DRAVEN_PAYLOAD`.
pub fn job(d: &FnDeployment, config: &KubeConfig, input: &JobInput<'_>) -> Job {
    use base64::Engine as _;
    let req = input.req;
    let mut env = definition_env(d);
    env.push(env_var("DRAVEN_INVOCATION_ID", req.invocation_id.clone()));
    env.push(env_var("TRACEPARENT", req.traceparent.clone()));
    env.push(env_var("DRAVEN_DEADLINE", req.deadline_unix_ms.to_string()));
    env.push(env_var(
        "CONTENT_TYPE",
        req.content_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into()),
    ));
    env.push(env_var(
        "DRAVEN_PAYLOAD",
        base64::engine::general_purpose::STANDARD.encode(&req.payload),
    ));
    let mut labels = function_labels(d);
    labels.insert(LABEL_INVOCATION.into(), label_value(&req.invocation_id));
    labels.insert(LABEL_MODE.into(), "job".into());
    let value = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": input.name,
            "namespace": config.namespace,
            "labels": labels,
            "annotations": {"draven.dev/traceparent": req.traceparent},
        },
        "spec": {
            // Draven owns retries: Kubernetes never starts a second pod.
            "backoffLimit": 0,
            "activeDeadlineSeconds": input.deadline_secs.max(1),
            "ttlSecondsAfterFinished": config.job_ttl_secs,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "containers": [Value::Object(container(d, config, env))],
                },
            },
        },
    });
    serde_json::from_value(value).expect("the Job matches the batch/v1 schema (tested)")
}

/// The warm mode's Deployment: `replicas` pods serving the HTTP contract on `warm.port`, ready
/// when `GET /healthz` answers.
pub fn deployment(
    d: &FnDeployment,
    config: &KubeConfig,
    warm: &WarmSettings,
    replicas: i32,
) -> Deployment {
    let name = warm_name(&d.tenant, &d.name, d.revision);
    let mut env = definition_env(d);
    env.push(env_var("PORT", warm.port.to_string()));
    let mut c = container(d, config, env);
    c.insert(
        "ports".into(),
        json!([{"name": "http", "containerPort": warm.port, "protocol": "TCP"}]),
    );
    let probe = |period: u32| {
        json!({"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": period,
               "timeoutSeconds": 1, "failureThreshold": 3})
    };
    c.insert("readinessProbe".into(), probe(1));
    c.insert("livenessProbe".into(), probe(10));
    let labels = function_labels(d);
    let mut pod_labels = labels.clone();
    pod_labels.insert(LABEL_MODE.into(), "warm".into());
    let value = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": config.namespace, "labels": pod_labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    // The contract's SIGTERM drain: finish what runs within the timeout.
                    "terminationGracePeriodSeconds": (d.spec.timeout_ms.div_ceil(1000) + 5) as i64,
                    "containers": [Value::Object(c)],
                },
            },
        },
    });
    serde_json::from_value(value).expect("the Deployment matches the apps/v1 schema (tested)")
}

/// The warm mode's Service: a ClusterIP in front of the function's ready pods.
pub fn service(d: &FnDeployment, config: &KubeConfig, warm: &WarmSettings) -> Service {
    let labels = function_labels(d);
    let value = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": warm_name(&d.tenant, &d.name, d.revision), "namespace": config.namespace,
                     "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "selector": labels,
            "ports": [{"name": "http", "port": warm.port, "targetPort": "http", "protocol": "TCP"}],
        },
    });
    serde_json::from_value(value).expect("the Service matches the v1 schema (tested)")
}
