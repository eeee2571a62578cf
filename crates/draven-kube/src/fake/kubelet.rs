//! The fake's controllers and kubelet: Jobs get a pod and a deadline, Deployments keep their
//! replicas, Services get a cluster IP and a proxy, and pods run as local processes whose exit
//! becomes the container status.

use super::{meta_str, Image, Res, Shared, Store};
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Fields the API server fills in on create.
pub(super) fn defaults(res: Res, obj: &mut Value, store: &mut Store) {
    let name = meta_str(obj, "name").to_owned();
    let uid = obj["metadata"]["uid"].clone();
    match res {
        Res::Jobs => {
            let spec = &mut obj["spec"];
            spec["completions"] = json!(1);
            spec["parallelism"] = json!(1);
            spec["completionMode"] = json!("NonIndexed");
            spec["suspend"] = json!(false);
            spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
            let labels = &mut spec["template"]["metadata"]["labels"];
            if !labels.is_object() {
                *labels = json!({});
            }
            labels["batch.kubernetes.io/controller-uid"] = uid.clone();
            labels["controller-uid"] = uid;
            labels["batch.kubernetes.io/job-name"] = name.clone().into();
            labels["job-name"] = name.into();
            obj["status"] = json!({});
        }
        Res::Services => {
            store.next_ip = store.next_ip.wrapping_add(1).max(1);
            let (a, b) = store.ip_prefix;
            obj["spec"]["clusterIP"] = format!("127.{a}.{b}.{}", store.next_ip).into();
            obj["spec"]["clusterIPs"] = json!([obj["spec"]["clusterIP"]]);
            obj["status"] = json!({"loadBalancer": {}});
        }
        Res::Deployments => {
            if obj["spec"]["replicas"].is_null() {
                obj["spec"]["replicas"] = json!(1);
            }
            obj["status"] = json!({"observedGeneration": 1, "replicas": 0, "availableReplicas": 0});
        }
        Res::Pods => {
            obj["status"] = json!({"phase": "Pending"});
        }
        Res::Secrets => {}
    }
}

/// Controllers reacting to a new object.
pub(super) fn created(shared: &Arc<Shared>, res: Res, ns: &str, obj: &Value) {
    match res {
        Res::Jobs => start_job(shared, ns, obj),
        Res::Deployments => reconcile_deployment(shared, ns, meta_str(obj, "name")),
        Res::Services => start_proxy(shared, ns, obj),
        Res::Pods => {
            let (shared, ns, name) = (
                shared.clone(),
                ns.to_owned(),
                meta_str(obj, "name").to_owned(),
            );
            tokio::spawn(async move { run_pod(shared, ns, name).await });
        }
        Res::Secrets => {}
    }
}

/// Garbage collection: what an object owned goes with it (background propagation).
pub(super) fn deleted(shared: &Arc<Shared>, res: Res, ns: &str, obj: &Value) {
    let name = meta_str(obj, "name");
    let kind = match res {
        Res::Jobs => "Job",
        Res::Deployments => "ReplicaSet",
        _ => return,
    };
    let owner = if res == Res::Deployments {
        format!("{name}-fake")
    } else {
        name.to_owned()
    };
    for pod in shared.owned_pods(ns, kind, &owner) {
        let _ = shared.delete(Res::Pods, ns, meta_str(&pod, "name"));
    }
}

fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..5].to_owned()
}

fn pod_from_template(template: &Value, name: &str, owner: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": template["metadata"]["labels"],
                     "ownerReferences": [owner]},
        "spec": template["spec"],
    })
}

fn start_job(shared: &Arc<Shared>, ns: &str, job: &Value) {
    let name = meta_str(job, "name").to_owned();
    let owner = json!({"apiVersion": "batch/v1", "kind": "Job", "name": name,
                       "uid": job["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true});
    let pod = pod_from_template(
        &job["spec"]["template"],
        &format!("{name}-{}", suffix()),
        owner,
    );
    let _ = shared.update(Res::Jobs, ns, &name, |j| {
        j["status"] = json!({"active": 1, "ready": 0, "startTime": super::now()});
    });
    if shared.create(Res::Pods, ns, pod).is_err() {
        return;
    }
    let image = job["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let immediate = matches!(
        shared.images.lock().get(&image),
        Some(Image::DeadlineExceeded)
    );
    let deadline = job["spec"]["activeDeadlineSeconds"].as_u64();
    let (shared, ns) = (shared.clone(), ns.to_owned());
    if let Some(secs) = deadline {
        tokio::spawn(async move {
            let wait = if immediate {
                Duration::from_millis(50)
            } else {
                Duration::from_secs(secs)
            };
            tokio::time::sleep(wait).await;
            let Ok(j) = shared.get(Res::Jobs, &ns, &name) else {
                return;
            };
            if j["status"]["conditions"].is_array() {
                return;
            }
            for pod in shared.owned_pods(&ns, "Job", &name) {
                let _ = shared.delete(Res::Pods, &ns, meta_str(&pod, "name"));
            }
            let _ = shared.update(Res::Jobs, &ns, &name, |j| {
                j["status"]["active"] = json!(0);
                j["status"]["failed"] = json!(1);
                j["status"]["conditions"] = json!([
                    {"type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded",
                     "message": "Job was active longer than specified deadline",
                     "lastTransitionTime": super::now(), "lastProbeTime": super::now()},
                    {"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                     "message": "Job was active longer than specified deadline",
                     "lastTransitionTime": super::now(), "lastProbeTime": super::now()}]);
            });
        });
    }
}

/// Brings a Deployment's pods to `spec.replicas` and its status up to date.
pub(super) fn reconcile_deployment(shared: &Arc<Shared>, ns: &str, name: &str) {
    let Ok(d) = shared.get(Res::Deployments, ns, name) else {
        return;
    };
    let rs = format!("{name}-fake");
    let want = d["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
    let pods = shared.owned_pods(ns, "ReplicaSet", &rs);
    if pods.len() < want {
        let owner = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs,
                           "uid": d["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true});
        let mut template = d["spec"]["template"].clone();
        template["metadata"]["labels"]["pod-template-hash"] = json!("fake");
        for _ in pods.len()..want {
            let pod = pod_from_template(&template, &format!("{rs}-{}", suffix()), owner.clone());
            let _ = shared.create(Res::Pods, ns, pod);
        }
    } else {
        for pod in pods.iter().skip(want) {
            let _ = shared.delete(Res::Pods, ns, meta_str(pod, "name"));
        }
    }
    deployment_status(shared, ns, name);
}

fn pod_ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn deployment_status(shared: &Arc<Shared>, ns: &str, name: &str) {
    let pods = shared.owned_pods(ns, "ReplicaSet", &format!("{name}-fake"));
    let ready = pods.iter().filter(|p| pod_ready(p)).count();
    let _ = shared.update(Res::Deployments, ns, name, |d| {
        d["status"]["observedGeneration"] = d["metadata"]["generation"].clone();
        d["status"]["replicas"] = json!(pods.len());
        d["status"]["readyReplicas"] = json!(ready);
        d["status"]["availableReplicas"] = json!(ready);
        d["status"]["updatedReplicas"] = json!(pods.len());
    });
}

/// The Service's cluster IP listens; each connection goes to a ready pod of its selector.
fn start_proxy(shared: &Arc<Shared>, ns: &str, svc: &Value) {
    let ip = svc["spec"]["clusterIP"].as_str().unwrap_or("").to_owned();
    let port = svc["spec"]["ports"][0]["port"].as_u64().unwrap_or(80) as u16;
    let selector: Vec<(String, String)> = svc["spec"]["selector"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let (s, ns2) = (shared.clone(), ns.to_owned());
    let task = tokio::spawn(async move {
        let Ok(listener) = tokio::net::TcpListener::bind((ip.as_str(), port)).await else {
            tracing::warn!(%ip, port, "the fake cannot bind a Service's cluster IP");
            return;
        };
        let mut turn = 0usize;
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let sel = selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            let ready: Vec<u16> = {
                let pods = s.list(Res::Pods, &ns2, Some(&sel), None).1;
                let store = s.store.lock();
                pods.iter()
                    .filter(|p| pod_ready(p))
                    .filter_map(|p| {
                        store
                            .ports
                            .get(&(ns2.clone(), meta_str(p, "name").to_owned()))
                            .copied()
                    })
                    .collect()
            };
            if ready.is_empty() {
                continue; // no endpoint: the connection is closed, as with no endpoints
            }
            turn = turn.wrapping_add(1);
            let target = ready[turn % ready.len()];
            tokio::spawn(async move {
                if let Ok(mut out) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    shared
        .store
        .lock()
        .proxies
        .insert((ns.to_owned(), meta_str(svc, "name").to_owned()), task);
}

fn set_container(
    shared: &Arc<Shared>,
    ns: &str,
    pod: &str,
    image: &str,
    phase: &str,
    state: Value,
    extra: Value,
) {
    let _ = shared.update(Res::Pods, ns, pod, |p| {
        p["status"]["phase"] = phase.into();
        p["status"]["containerStatuses"] = json!([{
            "name": p["spec"]["containers"][0]["name"], "image": image, "imageID": "",
            "ready": extra["ready"].as_bool().unwrap_or(false), "restartCount": 0,
            "started": state.get("running").is_some(), "state": state,
        }]);
        if let Some(m) = extra.as_object() {
            for (k, v) in m {
                if k != "ready" {
                    p["status"][k] = v.clone();
                }
            }
        }
    });
}

/// The environment of a container, `secretKeyRef`s resolved from stored Secrets.
fn resolve_env(
    shared: &Shared,
    ns: &str,
    container: &Value,
) -> Result<Vec<(String, String)>, String> {
    use base64::Engine as _;
    let mut out = Vec::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or("").to_owned();
        if let Some(v) = e["value"].as_str() {
            out.push((name, v.to_owned()));
        } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
            let secret = r["name"].as_str().unwrap_or("");
            let key = r["key"].as_str().unwrap_or("");
            let s = shared
                .get(Res::Secrets, ns, secret)
                .map_err(|_| format!("secret \"{secret}\" not found"))?;
            let v = s["data"][key]
                .as_str()
                .ok_or_else(|| format!("couldn't find key {key} in Secret {ns}/{secret}"))?;
            let v = base64::engine::general_purpose::STANDARD
                .decode(v)
                .map_err(|e| e.to_string())?;
            out.push((name, String::from_utf8_lossy(&v).into_owned()));
        } else {
            out.push((name, String::new()));
        }
    }
    Ok(out)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// The tail of a log as a termination message (`FallbackToLogsOnError`: 80 lines, 2 KiB).
fn tail(log: &[u8]) -> String {
    let text = String::from_utf8_lossy(&log[log.len().saturating_sub(2048)..]).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(80)..].join("\n")
}

async fn run_pod(shared: Arc<Shared>, ns: String, name: String) {
    let Ok(pod) = shared.get(Res::Pods, &ns, &name) else {
        return;
    };
    let container = pod["spec"]["containers"][0].clone();
    let image = container["image"].as_str().unwrap_or("").to_owned();
    let behaviour = shared.images.lock().get(&image).cloned();
    // This pod's container status, as the kubelet reports it.
    let set = |phase: &str, state: Value, extra: Value| {
        set_container(&shared, &ns, &name, &image, phase, state, extra)
    };
    let running = || json!({"running": {"startedAt": super::now()}});
    let waiting =
        |reason: &str, message: String| json!({"waiting": {"reason": reason, "message": message}});
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (entrypoint, cmd) = match behaviour {
        None | Some(Image::PullError) => {
            let msg = format!("rpc error: code = Unknown desc = failed to pull and unpack image \"{image}\": pull access denied, repository does not exist or may require authorization");
            set("Pending", waiting("ErrImagePull", msg.clone()), json!({}));
            tokio::time::sleep(Duration::from_millis(50)).await;
            set(
                "Pending",
                waiting(
                    "ImagePullBackOff",
                    format!("Back-off pulling image \"{image}\""),
                ),
                json!({}),
            );
            return;
        }
        Some(Image::Evicted) => {
            set("Running", running(), json!({}));
            tokio::time::sleep(Duration::from_millis(30)).await;
            set(
                "Failed",
                json!({"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown", "message": "The container could not be located when the pod was terminated"}}),
                json!({"reason": "Evicted", "message": "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki."}),
            );
            finish_job(&shared, &ns, &pod, false);
            return;
        }
        Some(Image::OomKilled) => {
            set("Running", running(), json!({}));
            tokio::time::sleep(Duration::from_millis(30)).await;
            set(
                "Failed",
                json!({"terminated": {"exitCode": 137, "reason": "OOMKilled", "startedAt": super::now(), "finishedAt": super::now()}}),
                json!({}),
            );
            finish_job(&shared, &ns, &pod, false);
            return;
        }
        Some(Image::DeadlineExceeded) => {
            set("Running", running(), json!({}));
            return; // the Job controller's deadline ends it
        }
        Some(Image::Run { entrypoint, cmd }) => (entrypoint, cmd),
    };
    let env = match resolve_env(&shared, &ns, &container) {
        Ok(e) => e,
        Err(message) => {
            set(
                "Pending",
                waiting("CreateContainerConfigError", message),
                json!({}),
            );
            return;
        }
    };
    let strings = |v: &Value| -> Option<Vec<String>> {
        v.as_array().map(|a| {
            a.iter()
                .map(|s| s.as_str().unwrap_or("").to_owned())
                .collect()
        })
    };
    let argv: Vec<String> = match (strings(&container["command"]), strings(&container["args"])) {
        (Some(c), a) => c.into_iter().chain(a.unwrap_or_default()).collect(),
        (None, Some(a)) => entrypoint.into_iter().chain(a).collect(),
        (None, None) => entrypoint.into_iter().chain(cmd).collect(),
    };
    let Some((program, args)) = argv.split_first() else {
        set(
            "Pending",
            waiting("CreateContainerError", "no command specified".into()),
            json!({}),
        );
        return;
    };
    let has_port = container["ports"].as_array().is_some_and(|p| !p.is_empty());
    let port = if has_port { free_port() } else { 0 };
    let mut command = tokio::process::Command::new(program);
    command.args(args).env_clear();
    for var in ["PATH", "HOME", "LANG"] {
        if let Some(v) = std::env::var_os(var) {
            command.env(var, v);
        }
    }
    command.env("HOSTNAME", &name);
    command.envs(env);
    if has_port {
        // Pods share the host's network here: each gets a free port instead of containerPort.
        command.env("PORT", port.to_string());
    }
    command
        .process_group(0)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            set(
                "Failed",
                json!({"terminated": {"exitCode": 128, "reason": "StartError", "message": e.to_string()}}),
                json!({}),
            );
            finish_job(&shared, &ns, &pod, false);
            return;
        }
    };
    let pid = child.id().unwrap_or(0);
    let log = Arc::new(Mutex::new(Vec::new()));
    let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
    {
        let mut store = shared.store.lock();
        store.logs.insert((ns.clone(), name.clone()), log.clone());
        store.kills.insert((ns.clone(), name.clone()), kill_tx);
    }
    let started = super::now();
    set(
        "Running",
        json!({"running": {"startedAt": started}}),
        json!({"podIP": "127.0.0.1", "startTime": started}),
    );
    let readers = {
        let (out, err) = (child.stdout.take(), child.stderr.take());
        let (l1, l2) = (log.clone(), log.clone());
        async move {
            let copy = |mut r: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                        l: Arc<Mutex<Vec<u8>>>| async move {
                let mut buf = [0u8; 8192];
                while let Ok(n) = r.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    l.lock().extend_from_slice(&buf[..n]);
                }
            };
            let a = async {
                if let Some(o) = out {
                    copy(Box::new(o), l1).await
                }
            };
            let b = async {
                if let Some(e) = err {
                    copy(Box::new(e), l2).await
                }
            };
            tokio::join!(a, b);
        }
    };
    if has_port {
        let (s, ns2, name2) = (shared.clone(), ns.clone(), name.clone());
        tokio::spawn(async move { probe(s, ns2, name2, port).await });
    }
    let exit = tokio::select! {
        r = async { readers.await; child.wait().await } => r.ok(),
        _ = kill_rx => None,
    };
    kill_group(pid);
    let Some(status) = exit else {
        return; // deleted: the pod is gone already
    };
    let code = status.code().unwrap_or(137);
    let log = log.lock().clone();
    let mut terminated = json!({"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                                "startedAt": started, "finishedAt": super::now()});
    if code != 0 && container["terminationMessagePolicy"] == "FallbackToLogsOnError" {
        terminated["message"] = tail(&log).into();
    }
    shared
        .store
        .lock()
        .kills
        .remove(&(ns.clone(), name.clone()));
    set(
        if code == 0 { "Succeeded" } else { "Failed" },
        json!({"terminated": terminated}),
        json!({}),
    );
    finish_job(&shared, &ns, &pod, code == 0);
}

/// A warm pod's readiness probe: `GET /healthz` until it answers 200, then Ready.
async fn probe(shared: Arc<Shared>, ns: String, name: String, port: u16) {
    for _ in 0..400 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        if shared.get(Res::Pods, &ns, &name).is_err() {
            return;
        }
        let ok = async {
            use tokio::io::AsyncWriteExt;
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()?;
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut buf = vec![0u8; 64];
            let n = s.read(&mut buf).await.ok()?;
            Some(buf[..n].starts_with(b"HTTP/1.1 200"))
        }
        .await
        .unwrap_or(false);
        if ok {
            shared
                .store
                .lock()
                .ports
                .insert((ns.clone(), name.clone()), port);
            let _ = shared.update(Res::Pods, &ns, &name, |p| {
                p["status"]["conditions"] = json!([{"type": "Ready", "status": "True",
                                                    "lastTransitionTime": super::now()}]);
                p["status"]["containerStatuses"][0]["ready"] = json!(true);
            });
            if let Some(owner) = shared.get(Res::Pods, &ns, &name).ok().and_then(|p| {
                p["metadata"]["ownerReferences"][0]["name"]
                    .as_str()
                    .map(str::to_owned)
            }) {
                if let Some(dep) = owner.strip_suffix("-fake") {
                    deployment_status(&shared, &ns, dep);
                }
            }
            return;
        }
    }
}

/// The Job controller's view of its pod's end.
fn finish_job(shared: &Arc<Shared>, ns: &str, pod: &Value, succeeded: bool) {
    let owner = &pod["metadata"]["ownerReferences"][0];
    if owner["kind"] != "Job" {
        if let Some(dep) = owner["name"].as_str().and_then(|n| n.strip_suffix("-fake")) {
            deployment_status(shared, ns, dep);
        }
        return;
    }
    let job = owner["name"].as_str().unwrap_or("");
    let _ = shared.update(Res::Jobs, ns, job, |j| {
        if j["status"]["conditions"].is_array() {
            return;
        }
        let now = super::now();
        j["status"]["active"] = json!(0);
        if succeeded {
            j["status"]["succeeded"] = json!(1);
            j["status"]["completionTime"] = now.clone().into();
            j["status"]["conditions"] = json!([
                {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now, "lastProbeTime": now},
                {"type": "Complete", "status": "True", "lastTransitionTime": now, "lastProbeTime": now}]);
        } else {
            j["status"]["failed"] = json!(1);
            j["status"]["conditions"] = json!([
                {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit", "lastTransitionTime": now, "lastProbeTime": now},
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit", "lastTransitionTime": now, "lastProbeTime": now}]);
        }
    });
}

fn kill_group(pid: u32) {
    if pid > 0 {
        // SAFETY: killpg has no memory-safety preconditions; a stale pid only fails with ESRCH.
        unsafe {
            libc::killpg(pid as libc::pid_t, libc::SIGKILL);
        }
    }
}
