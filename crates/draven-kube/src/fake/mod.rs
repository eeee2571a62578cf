//! A fake Kubernetes API server for tests (feature `testing`): axum over real HTTP, speaking the
//! REST API as far as the executor uses it, so the executor runs with kube-rs' own client.
//!
//! - resources: `batch/v1` Jobs, `v1` Pods (with `/log`), `apps/v1` Deployments (with
//!   `/scale`), `v1` Services and Secrets, namespaced; create, get, list, watch, delete, merge
//!   patch;
//! - one global resourceVersion counter; `?watch=true` streams JSON lines `{"type": "ADDED" |
//!   "MODIFIED" | "DELETED", "object": …}` from the given resourceVersion (or, without one,
//!   synthetic ADDED events for what exists), filtered by `labelSelector` (equality) and
//!   `fieldSelector` (`metadata.name`), ending after `timeoutSeconds`;
//! - errors are `Status` objects: 404 NotFound, 409 AlreadyExists, 422 Invalid (unknown fields —
//!   checked by a round trip through the `k8s-openapi` type —, bad names, labels, quantities,
//!   a Deployment selector that does not match its template);
//! - controllers: a Job gets one pod (`job-name` label, owner reference) and fails with
//!   `DeadlineExceeded` after `activeDeadlineSeconds`; a Deployment keeps `replicas` pods and
//!   reports `availableReplicas` once their readiness probe (`GET /healthz`) answers; a Service
//!   gets a cluster IP of its own on the loopback network (127.a.b.x) where a proxy forwards
//!   connections to a ready pod;
//! - the kubelet runs a container as a local process: the test maps each image to a program
//!   ([`Image::Run`]; `command` replaces its entrypoint and `args` its default arguments, as
//!   with OCI images), resolves `secretKeyRef`s from stored Secrets, gives warm pods a free
//!   port in `PORT` (pods share the host's network here), keeps stdout and stderr as the pod's
//!   log, and reports the exit in `containerStatuses` (termination message from the log's tail
//!   when `FallbackToLogsOnError`). [`Image::PullError`], [`Image::OomKilled`],
//!   [`Image::Evicted`] and [`Image::DeadlineExceeded`] simulate those failures; an unknown
//!   image fails to pull.
//!
//! What it does not model (so what is proven only against it is named in docs/functions.md):
//! scheduling, nodes, admission, RBAC, real networking, image pulls, garbage-collection delays.

mod kubelet;
mod server;
pub mod validate;

use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::broadcast;

/// What the fake kubelet does with an image.
#[derive(Clone, Debug)]
pub enum Image {
    /// Runs a local program: the image's entrypoint and default arguments.
    Run {
        entrypoint: Vec<String>,
        cmd: Vec<String>,
    },
    /// The pull fails: `ErrImagePull`, then `ImagePullBackOff`.
    PullError,
    /// The container starts and is killed for exceeding its memory limit.
    OomKilled,
    /// The pod is evicted (node pressure).
    Evicted,
    /// The Job's `activeDeadlineSeconds` passes at once.
    DeadlineExceeded,
}

impl Image {
    /// A program as the image's entrypoint.
    pub fn run<S: AsRef<str>>(entrypoint: &[S]) -> Image {
        Image::Run {
            entrypoint: entrypoint.iter().map(|s| s.as_ref().to_owned()).collect(),
            cmd: Vec::new(),
        }
    }
}

/// A resource type the fake serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Res {
    Jobs,
    Pods,
    Deployments,
    Services,
    Secrets,
}

impl Res {
    fn parse(group_version: &str, plural: &str) -> Option<Res> {
        Some(match (group_version, plural) {
            ("batch/v1", "jobs") => Res::Jobs,
            ("v1", "pods") => Res::Pods,
            ("apps/v1", "deployments") => Res::Deployments,
            ("v1", "services") => Res::Services,
            ("v1", "secrets") => Res::Secrets,
            _ => return None,
        })
    }
    pub fn kind(self) -> &'static str {
        match self {
            Res::Jobs => "Job",
            Res::Pods => "Pod",
            Res::Deployments => "Deployment",
            Res::Services => "Service",
            Res::Secrets => "Secret",
        }
    }
    fn api_version(self) -> &'static str {
        match self {
            Res::Jobs => "batch/v1",
            Res::Deployments => "apps/v1",
            _ => "v1",
        }
    }
    fn plural(self) -> &'static str {
        match self {
            Res::Jobs => "jobs",
            Res::Pods => "pods",
            Res::Deployments => "deployments",
            Res::Services => "services",
            Res::Secrets => "secrets",
        }
    }
    fn group(self) -> &'static str {
        match self {
            Res::Jobs => "batch",
            Res::Deployments => "apps",
            _ => "",
        }
    }
}

type Key = (Res, String, String);

/// One change, as watches see it.
#[derive(Clone, Debug)]
struct Event {
    rv: u64,
    res: Res,
    namespace: String,
    kind: &'static str,
    object: Value,
}

/// An API error, rendered as a `Status`.
#[derive(Clone, Debug)]
pub struct Failure {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl Failure {
    fn not_found(res: Res, name: &str) -> Failure {
        Failure {
            code: 404,
            reason: "NotFound",
            message: format!("{}.{} \"{name}\" not found", res.plural(), res.group())
                .replace(". \"", " \""),
        }
    }
    fn invalid(res: Res, name: &str, why: impl std::fmt::Display) -> Failure {
        Failure {
            code: 422,
            reason: "Invalid",
            message: format!("{} \"{name}\" is invalid: {why}", res.kind()),
        }
    }
    fn status(&self, res: Option<Res>, name: &str) -> Value {
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason,
            "details": {"name": name, "kind": res.map(|r| r.plural()).unwrap_or("")},
            "code": self.code,
        })
    }
}

#[derive(Default)]
struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<Event>,
    /// Every object as a client sent it (before the server filled anything in).
    created: Vec<(Res, Value)>,
    logs: HashMap<(String, String), Arc<Mutex<Vec<u8>>>>,
    /// Running pods' kill switches.
    kills: HashMap<(String, String), tokio::sync::oneshot::Sender<()>>,
    /// Ready warm pods: host port by pod.
    ports: HashMap<(String, String), u16>,
    proxies: HashMap<(String, String), tokio::task::JoinHandle<()>>,
    next_ip: u8,
    /// The middle octets of this cluster's Service addresses (`127.a.b.x`), random so that
    /// fakes running at once do not collide.
    ip_prefix: (u8, u8),
    deleted: Vec<(Res, String)>,
}

pub(crate) struct Shared {
    store: Mutex<Store>,
    events: broadcast::Sender<Event>,
    images: Mutex<HashMap<String, Image>>,
}

/// A running fake API server.
pub struct FakeCluster {
    url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        self.server.abort();
        let mut store = self.shared.store.lock();
        store.kills.clear();
        for (_, p) in store.proxies.drain() {
            p.abort();
        }
    }
}

impl FakeCluster {
    /// Serves the fake on a free loopback port.
    pub async fn start() -> FakeCluster {
        FakeCluster::spawn()
    }

    /// The same, from synchronous code inside a Tokio runtime.
    pub fn spawn() -> FakeCluster {
        let shared = Arc::new(Shared {
            store: Mutex::new(Store {
                ip_prefix: {
                    let b = uuid::Uuid::new_v4().into_bytes();
                    (b[0].max(1), b[1])
                },
                ..Store::default()
            }),
            events: broadcast::channel(8192).0,
            images: Mutex::new(HashMap::new()),
        });
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("binding the fake API server");
        std_listener
            .set_nonblocking(true)
            .expect("a non-blocking socket");
        let url = format!("http://{}", std_listener.local_addr().expect("bound"));
        let listener =
            tokio::net::TcpListener::from_std(std_listener).expect("inside a Tokio runtime");
        let app = server::router(shared.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        FakeCluster {
            url,
            shared,
            server,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A kube-rs client for this server, its default namespace set.
    pub fn client(&self, namespace: &str) -> kube::Client {
        let mut config = kube::Config::new(self.url.parse().expect("the fake's URL"));
        config.default_namespace = namespace.to_owned();
        kube::Client::try_from(config).expect("a client for the fake")
    }

    /// What the kubelet does with `image`.
    pub fn image(&self, image: &str, behaviour: Image) {
        self.shared
            .images
            .lock()
            .insert(image.to_owned(), behaviour);
    }

    /// Stores a Secret (`data` given in clear, stored base64 as the API does).
    pub fn secret(&self, namespace: &str, name: &str, data: &[(&str, &str)]) {
        use base64::Engine as _;
        let data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    base64::engine::general_purpose::STANDARD.encode(v).into(),
                )
            })
            .collect();
        let obj = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                         "metadata": {"name": name}, "data": data});
        self.shared
            .create(Res::Secrets, namespace, obj)
            .expect("a valid Secret");
    }

    /// The objects of a kind that exist now.
    pub fn objects(&self, res: Res, namespace: &str) -> Vec<Value> {
        self.shared.list(res, namespace, None, None).1
    }

    /// Every object of a kind ever created, as the client sent it.
    pub fn created(&self, res: Res) -> Vec<Value> {
        let store = self.shared.store.lock();
        store
            .created
            .iter()
            .filter(|(r, _)| *r == res)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Names of objects of a kind that were deleted through the API or by a controller.
    pub fn deleted(&self, res: Res) -> Vec<String> {
        let store = self.shared.store.lock();
        store
            .deleted
            .iter()
            .filter(|(r, _)| *r == res)
            .map(|(_, n)| n.clone())
            .collect()
    }

    /// Waits until no object of a kind exists in the namespace (cleanup is asynchronous for
    /// dropped attempts).
    pub async fn wait_until_empty(&self, res: Res, namespace: &str) -> bool {
        for _ in 0..200 {
            if self.objects(res, namespace).is_empty() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        false
    }
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj["metadata"][field].as_str().unwrap_or("")
}

fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let (h, m, s) = ((secs % 86_400) / 3600, (secs % 3600) / 60, secs % 60);
    let (y, mo, d) = civil(days as i64);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

/// Days since 1970-01-01 as a civil date (H. Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Whether an object's labels satisfy an equality selector (`a=b,c==d,e!=f`).
fn labels_match(obj: &Value, selector: &str) -> bool {
    let labels = &obj["metadata"]["labels"];
    selector
        .split(',')
        .filter(|t| !t.trim().is_empty())
        .all(|term| {
            if let Some((k, v)) = term.split_once("!=") {
                labels[k.trim()].as_str() != Some(v.trim())
            } else if let Some((k, v)) = term.split_once('=') {
                let v = v.trim_start_matches('=');
                labels[k.trim()].as_str() == Some(v.trim())
            } else {
                labels.get(term.trim()).is_some()
            }
        })
}

fn fields_match(obj: &Value, selector: &str) -> bool {
    selector
        .split(',')
        .filter(|t| !t.trim().is_empty())
        .all(|term| match term.split_once('=') {
            Some(("metadata.name", v)) => meta_str(obj, "name") == v.trim_start_matches('='),
            Some(("metadata.namespace", v)) => {
                meta_str(obj, "namespace") == v.trim_start_matches('=')
            }
            _ => false,
        })
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("an object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

impl Shared {
    fn emit(store: &mut Store, events: &broadcast::Sender<Event>, ev: Event) {
        store.history.push(ev.clone());
        let _ = events.send(ev);
    }

    /// Creates an object (validated as the API server would), emitting ADDED; then runs the
    /// controllers that react to it.
    pub(crate) fn create(
        self: &Arc<Self>,
        res: Res,
        namespace: &str,
        mut obj: Value,
    ) -> Result<Value, Failure> {
        let sent = obj.clone();
        validate::object(res, namespace, &mut obj)?;
        let name = meta_str(&obj, "name").to_owned();
        let out = {
            let mut store = self.store.lock();
            let key = (res, namespace.to_owned(), name.clone());
            if store.objects.contains_key(&key) {
                return Err(Failure {
                    code: 409,
                    reason: "AlreadyExists",
                    message: format!("{} \"{name}\" already exists", res.plural()),
                });
            }
            store.rv += 1;
            let rv = store.rv;
            let meta = obj["metadata"].as_object_mut().expect("validated metadata");
            meta.insert("namespace".into(), namespace.into());
            meta.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
            meta.insert("resourceVersion".into(), rv.to_string().into());
            meta.insert("creationTimestamp".into(), now().into());
            meta.insert("generation".into(), 1.into());
            obj["apiVersion"] = res.api_version().into();
            obj["kind"] = res.kind().into();
            kubelet::defaults(res, &mut obj, &mut store);
            store.created.push((res, sent));
            store.objects.insert(key, obj.clone());
            let ev = Event {
                rv,
                res,
                namespace: namespace.to_owned(),
                kind: "ADDED",
                object: obj.clone(),
            };
            Self::emit(&mut store, &self.events, ev);
            obj
        };
        kubelet::created(self, res, namespace, &out);
        Ok(out)
    }

    pub(crate) fn get(&self, res: Res, namespace: &str, name: &str) -> Result<Value, Failure> {
        self.store
            .lock()
            .objects
            .get(&(res, namespace.to_owned(), name.to_owned()))
            .cloned()
            .ok_or_else(|| Failure::not_found(res, name))
    }

    /// Changes an object in place, emitting MODIFIED (a no-op change emits nothing).
    pub(crate) fn update(
        &self,
        res: Res,
        namespace: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Result<Value, Failure> {
        let mut store = self.store.lock();
        let key = (res, namespace.to_owned(), name.to_owned());
        let Some(current) = store.objects.get(&key) else {
            return Err(Failure::not_found(res, name));
        };
        let mut obj = current.clone();
        f(&mut obj);
        if &obj == current {
            return Ok(obj);
        }
        store.rv += 1;
        let rv = store.rv;
        obj["metadata"]["resourceVersion"] = rv.to_string().into();
        store.objects.insert(key, obj.clone());
        let ev = Event {
            rv,
            res,
            namespace: namespace.to_owned(),
            kind: "MODIFIED",
            object: obj.clone(),
        };
        Self::emit(&mut store, &self.events, ev);
        Ok(obj)
    }

    /// Deletes an object, emitting DELETED; dependents go too (background propagation).
    pub(crate) fn delete(
        self: &Arc<Self>,
        res: Res,
        namespace: &str,
        name: &str,
    ) -> Result<Value, Failure> {
        let obj = {
            let mut store = self.store.lock();
            let key = (res, namespace.to_owned(), name.to_owned());
            let Some(mut obj) = store.objects.remove(&key) else {
                return Err(Failure::not_found(res, name));
            };
            store.rv += 1;
            let rv = store.rv;
            obj["metadata"]["resourceVersion"] = rv.to_string().into();
            store.deleted.push((res, name.to_owned()));
            let pod = (namespace.to_owned(), name.to_owned());
            if res == Res::Pods {
                store.kills.remove(&pod);
                store.ports.remove(&pod);
                store.logs.remove(&pod);
            }
            if res == Res::Services {
                if let Some(p) = store.proxies.remove(&pod) {
                    p.abort();
                }
            }
            let ev = Event {
                rv,
                res,
                namespace: namespace.to_owned(),
                kind: "DELETED",
                object: obj.clone(),
            };
            Self::emit(&mut store, &self.events, ev);
            obj
        };
        kubelet::deleted(self, res, namespace, &obj);
        Ok(obj)
    }

    /// The resourceVersion now and the matching objects.
    pub(crate) fn list(
        &self,
        res: Res,
        namespace: &str,
        labels: Option<&str>,
        fields: Option<&str>,
    ) -> (u64, Vec<Value>) {
        let store = self.store.lock();
        let items = store
            .objects
            .iter()
            .filter(|((r, ns, _), _)| *r == res && ns == namespace)
            .map(|(_, v)| v)
            .filter(|v| labels.is_none_or(|s| labels_match(v, s)))
            .filter(|v| fields.is_none_or(|s| fields_match(v, s)))
            .cloned()
            .collect();
        (store.rv, items)
    }

    /// The pods owned by an object (by owner reference name and kind).
    pub(crate) fn owned_pods(&self, namespace: &str, owner_kind: &str, owner: &str) -> Vec<Value> {
        self.list(Res::Pods, namespace, None, None)
            .1
            .into_iter()
            .filter(|p| {
                p["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|o| {
                        o.iter()
                            .any(|r| r["kind"] == owner_kind && r["name"] == owner)
                    })
            })
            .collect()
    }
}
