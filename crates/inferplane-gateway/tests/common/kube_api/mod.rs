//! A stand-in Kubernetes API server for the discovery tests (no control plane can run on
//! the test machines). It is not Kubernetes: it keeps EndpointSlices, Pods and Secrets of
//! any namespace in memory and answers the calls discovery makes, in the shapes of the
//! Kubernetes API reference (`kubernetes.io/docs/reference/kubernetes-api/` and
//! "API Concepts: efficient detection of changes"):
//!
//! - `GET /apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices` and
//!   `GET /api/v1/namespaces/{ns}/pods`: a list (`EndpointSliceList`/`PodList`,
//!   `metadata.resourceVersion`, `items` without `kind`/`apiVersion`, all in one page),
//!   filtered by `labelSelector` (equality terms `k=v`, `k==v`, `k!=v`, `k`, `!k`);
//!   with `watch=true&resourceVersion=R`: a chunked stream of JSON lines
//!   `{"type":"ADDED"|"MODIFIED"|"DELETED"|"BOOKMARK"|"ERROR","object":...}` of the changes
//!   after R, then live ones; `BOOKMARK`s (an object with only
//!   `metadata.resourceVersion`) when asked (`allowWatchBookmarks=true`) and the test
//!   calls [`KubeApi::bookmark`]; an `ERROR` with a `Status` of code 410, reason
//!   `Expired`, when R is older than the history it keeps ([`KubeApi::compact`]).
//! - `GET .../pods/{name}`, `GET /api/v1/namespaces/{ns}/secrets/{name}`: the object, or
//!   a `Status` 404 `NotFound`.
//!
//! Faults a test can inject: lists answering 500 ([`KubeApi::fail_lists`]), watch
//! requests answering 500 ([`KubeApi::fail_watches`]), and live watch connections cut
//! mid-stream ([`KubeApi::drop_watches`]). Every request is recorded.

#![allow(clippy::disallowed_types)] // a std Mutex for the stand-in's bookkeeping, not a hot path

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

mod objects;
pub use objects::{endpoint_slice, pod, secret};

/// The kinds it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `discovery.k8s.io/v1` EndpointSlice.
    EndpointSlice,
    /// `v1` Pod.
    Pod,
    /// `v1` Secret.
    Secret,
}

impl Kind {
    fn api_version(self) -> &'static str {
        match self {
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::Pod | Kind::Secret => "v1",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Pod => "Pod",
            Kind::Secret => "Secret",
        }
    }
    fn plural(self) -> &'static str {
        match self {
            Kind::EndpointSlice => "endpointslices",
            Kind::Pod => "pods",
            Kind::Secret => "secrets",
        }
    }
}

/// One change, as a watch sends it.
#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    kind: Kind,
    ns: String,
    kind_of_event: &'static str,
    object: Value,
}

#[derive(Debug, Default)]
struct Store {
    rv: u64,
    /// Objects without `kind`/`apiVersion` (as list items are).
    objects: BTreeMap<(Kind, String, String), Value>,
    history: Vec<Change>,
    /// A watch from a resourceVersion older than this gets 410 Expired.
    oldest: u64,
    fail_lists: u32,
    fail_watches: u32,
    requests: Vec<String>,
    uid: u64,
}

#[derive(Debug, Clone)]
enum Live {
    Change(Change),
    Bookmark(u64),
    Drop,
}

#[derive(Clone)]
struct Shared {
    store: Arc<Mutex<Store>>,
    live: broadcast::Sender<Live>,
}

/// The running stand-in.
pub struct KubeApi {
    addr: SocketAddr,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl KubeApi {
    /// Starts it on 127.0.0.1 with an OS-chosen port.
    pub async fn start() -> KubeApi {
        let shared = Shared {
            store: Arc::new(Mutex::new(Store {
                rv: 100,
                ..Store::default()
            })),
            live: broadcast::channel(1024).0,
        };
        let app = Router::new()
            .route(
                "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
                get(list_slices),
            )
            .route("/api/v1/namespaces/{ns}/pods", get(list_pods))
            .route("/api/v1/namespaces/{ns}/pods/{name}", get(get_pod))
            .route("/api/v1/namespaces/{ns}/secrets/{name}", get(get_secret))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        KubeApi { addr, shared, task }
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates or replaces an object (`metadata.name` given; `resourceVersion`, `uid`,
    /// `namespace` and `creationTimestamp` filled in) and sends `ADDED`/`MODIFIED` to
    /// the watches. Returns the new resourceVersion.
    pub fn put(&self, kind: Kind, ns: &str, mut object: Value) -> u64 {
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let mut s = self.shared.store.lock().unwrap();
        s.rv += 1;
        let rv = s.rv;
        let key = (kind, ns.to_string(), name);
        let old = s.objects.get(&key).cloned();
        let uid = match &old {
            Some(o) => o["metadata"]["uid"].clone(),
            None => {
                s.uid += 1;
                json!(format!("00000000-0000-4000-8000-{:012}", s.uid))
            }
        };
        let m = &mut object["metadata"];
        m["namespace"] = json!(ns);
        m["resourceVersion"] = json!(rv.to_string());
        if m["uid"].is_null() {
            m["uid"] = uid;
        }
        if m["creationTimestamp"].is_null() {
            m["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        s.objects.insert(key, object.clone());
        let change = Change {
            rv,
            kind,
            ns: ns.to_string(),
            kind_of_event: if old.is_some() { "MODIFIED" } else { "ADDED" },
            object,
        };
        s.history.push(change.clone());
        let _ = self.shared.live.send(Live::Change(change));
        rv
    }

    /// Deletes an object and sends `DELETED` (the object as last seen, at a new
    /// resourceVersion).
    pub fn delete(&self, kind: Kind, ns: &str, name: &str) {
        let mut s = self.shared.store.lock().unwrap();
        let Some(mut object) = s.objects.remove(&(kind, ns.to_string(), name.to_string())) else {
            return;
        };
        s.rv += 1;
        object["metadata"]["resourceVersion"] = json!(s.rv.to_string());
        let change = Change {
            rv: s.rv,
            kind,
            ns: ns.to_string(),
            kind_of_event: "DELETED",
            object,
        };
        s.history.push(change.clone());
        let _ = self.shared.live.send(Live::Change(change));
    }

    /// Forgets the history up to now: a watch from an older resourceVersion gets 410.
    pub fn compact(&self) {
        let mut s = self.shared.store.lock().unwrap();
        s.oldest = s.rv;
        let oldest = s.oldest;
        s.history.retain(|c| c.rv > oldest);
    }

    /// Sends a BOOKMARK at the current resourceVersion to the watches that allow them.
    pub fn bookmark(&self) -> u64 {
        let rv = self.shared.store.lock().unwrap().rv;
        let _ = self.shared.live.send(Live::Bookmark(rv));
        rv
    }

    /// Cuts every live watch connection mid-stream.
    pub fn drop_watches(&self) {
        let _ = self.shared.live.send(Live::Drop);
    }

    /// The next `n` list requests answer 500.
    pub fn fail_lists(&self, n: u32) {
        self.shared.store.lock().unwrap().fail_lists = n;
    }

    /// The next `n` watch requests answer 500.
    pub fn fail_watches(&self, n: u32) {
        self.shared.store.lock().unwrap().fail_watches = n;
    }

    /// Every request so far, `path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.shared.store.lock().unwrap().requests.clone()
    }

    /// Live watch connections.
    pub fn watchers(&self) -> usize {
        self.shared.live.receiver_count()
    }
}

/// A `Status` object, as the API answers errors.
fn status(code: u16, reason: &str, message: String) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn status_response(code: u16, reason: &str, message: String) -> Response {
    let body = status(code, reason, message);
    (
        StatusCode::from_u16(code).unwrap(),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Whether `labels` match an equality-based selector.
fn matches(selector: Option<&String>, labels: &Value) -> bool {
    let Some(sel) = selector else { return true };
    sel.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .all(|term| {
            let label = |k: &str| labels.get(k.trim()).and_then(Value::as_str);
            if let Some((k, v)) = term.split_once("!=") {
                label(k) != Some(v.trim())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                label(k) == Some(v.trim())
            } else if let Some(k) = term.strip_prefix('!') {
                label(k).is_none()
            } else {
                label(term).is_some()
            }
        })
}

fn with_type(kind: Kind, mut object: Value) -> Value {
    object["kind"] = json!(kind.name());
    object["apiVersion"] = json!(kind.api_version());
    object
}

async fn list_slices(
    State(sh): State<Shared>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    list_or_watch(sh, Kind::EndpointSlice, ns, q)
}

async fn list_pods(
    State(sh): State<Shared>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    list_or_watch(sh, Kind::Pod, ns, q)
}

fn record(s: &mut Store, kind: Kind, ns: &str, q: &HashMap<String, String>) {
    let mut q: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
    q.sort();
    let path = match kind {
        Kind::EndpointSlice => format!("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"),
        _ => format!("/api/v1/namespaces/{ns}/{}", kind.plural()),
    };
    s.requests.push(format!("{path}?{}", q.join("&")));
}

fn list_or_watch(sh: Shared, kind: Kind, ns: String, q: HashMap<String, String>) -> Response {
    let selector = q.get("labelSelector").cloned();
    let watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    let mut s = sh.store.lock().unwrap();
    record(&mut s, kind, &ns, &q);
    if !watch {
        if s.fail_lists > 0 {
            s.fail_lists -= 1;
            return status_response(
                500,
                "InternalError",
                "stand-in: injected list failure".into(),
            );
        }
        let items: Vec<Value> = s
            .objects
            .iter()
            .filter(|((k, n, _), o)| {
                *k == kind && *n == ns && matches(selector.as_ref(), &o["metadata"]["labels"])
            })
            .map(|(_, o)| o.clone())
            .collect();
        let body = json!({
            "kind": format!("{}List", kind.name()),
            "apiVersion": kind.api_version(),
            "metadata": {"resourceVersion": s.rv.to_string()},
            "items": items,
        });
        return ([("content-type", "application/json")], body.to_string()).into_response();
    }
    if s.fail_watches > 0 {
        s.fail_watches -= 1;
        return status_response(
            500,
            "InternalError",
            "stand-in: injected watch failure".into(),
        );
    }
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|r| r.parse().ok())
        .unwrap_or(s.rv);
    let line = |v: Value| Ok::<_, std::io::Error>(bytes::Bytes::from(format!("{v}\n")));
    let relevant = {
        let ns = ns.clone();
        let selector = selector.clone();
        move |c: &Change| {
            c.kind == kind
                && c.ns == ns
                && matches(selector.as_ref(), &c.object["metadata"]["labels"])
        }
    };
    if from < s.oldest {
        let err = json!({"type": "ERROR", "object": status(410, "Expired",
            format!("too old resource version: {from} ({})", s.oldest))});
        let body = Body::from_stream(futures_util::stream::iter([line(err)]));
        return ([("content-type", "application/json")], body).into_response();
    }
    let backlog: Vec<Value> = s
        .history
        .iter()
        .filter(|c| c.rv > from && relevant(c))
        .map(|c| json!({"type": c.kind_of_event, "object": with_type(kind, c.object.clone())}))
        .collect();
    let mut rx = sh.live.subscribe();
    drop(s);
    let stream = async_stream(move |tx| async move {
        for v in backlog {
            if tx.send(line(v)).await.is_err() {
                return;
            }
        }
        loop {
            let item = match rx.recv().await {
                Ok(Live::Change(c)) if relevant(&c) => {
                    line(json!({"type": c.kind_of_event, "object": with_type(kind, c.object)}))
                }
                Ok(Live::Change(_)) => continue,
                Ok(Live::Bookmark(rv)) if bookmarks => line(json!({"type": "BOOKMARK", "object": {
                    "kind": kind.name(), "apiVersion": kind.api_version(),
                    "metadata": {"resourceVersion": rv.to_string()}}})),
                Ok(Live::Bookmark(_)) => continue,
                Ok(Live::Drop) | Err(_) => {
                    // a cut connection: the body ends in an error, not a clean end
                    let _ = tx
                        .send(Err(std::io::Error::other("stand-in: connection dropped")))
                        .await;
                    return;
                }
            };
            if tx.send(item).await.is_err() {
                return;
            }
        }
    });
    (
        [("content-type", "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

type Chunk = Result<bytes::Bytes, std::io::Error>;

/// A stream fed by a task through a channel (what the watch body reads).
fn async_stream<F, Fut>(f: F) -> impl futures_util::Stream<Item = Chunk> + Send + 'static
where
    F: FnOnce(tokio::sync::mpsc::Sender<Chunk>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn get_pod(State(sh): State<Shared>, Path((ns, name)): Path<(String, String)>) -> Response {
    get_one(sh, Kind::Pod, ns, name)
}

async fn get_secret(
    State(sh): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    get_one(sh, Kind::Secret, ns, name)
}

fn get_one(sh: Shared, kind: Kind, ns: String, name: String) -> Response {
    let mut s = sh.store.lock().unwrap();
    s.requests
        .push(format!("/api/v1/namespaces/{ns}/{}/{name}", kind.plural()));
    match s.objects.get(&(kind, ns, name.clone())) {
        Some(o) => (
            [("content-type", "application/json")],
            with_type(kind, o.clone()).to_string(),
        )
            .into_response(),
        None => status_response(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", kind.plural()),
        ),
    }
}
