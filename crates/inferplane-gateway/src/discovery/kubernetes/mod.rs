//! Kubernetes discovery (cargo feature `kubernetes`): one task watches the EndpointSlices
//! of a Service (`kubernetes.io/service-name=<service>`) or the Pods of a label selector
//! with `kube::runtime::watcher` (which lists, then watches from the list's
//! resourceVersion with bookmarks, resumes from the last resourceVersion after a broken
//! connection and re-lists after `410 Gone`), paced by its default backoff after errors.
//! Each object becomes [`Endpoint`](super::Endpoint)s (`convert.rs`), the
//! [`Reconciler`] plans, and `actions.rs` carries the plan out
//! on the [`ControlPlane`]: register (model from the pod, else the engine's `/v1/models`;
//! overrides from its annotations; API key from a Secret), drain, take back, remove.
//! Every few seconds the plan is made again, so a registration that failed is retried.

mod actions;
mod convert;

use super::reconcile::Reconciler;
use super::{Meta, PodMeta};
use crate::config::{KubernetesDiscovery, Target};
use crate::control_plane::ControlPlane;
use crate::telemetry::{DiscoveryEventKind, DiscoveryMetrics};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use inferplane_core::InstanceId;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How often the plan is made again without an event (failed registrations retried).
pub const RESYNC: Duration = Duration::from_secs(5);

/// Longest wait for one API call discovery makes itself (a Pod, a Secret).
const API_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a pod's own namespace is, inside a cluster.
const NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Why discovery could not start.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// `api_server` is not a URL.
    #[error("discovery.kubernetes.api_server: {url:?} is not a URL")]
    ApiServer {
        /// The value.
        url: String,
        /// The parser's error.
        #[source]
        source: hyper::http::uri::InvalidUri,
    },
    /// Neither an in-cluster configuration nor a kubeconfig was found.
    #[error(
        "cannot find the Kubernetes API: not in a cluster and no kubeconfig (set discovery.kubernetes.api_server)"
    )]
    Infer(#[source] kube::config::InferConfigError),
    /// The client could not be built.
    #[error("cannot build the Kubernetes client")]
    Client(#[source] kube::Error),
}

/// The running discovery task; dropping it (or [`stop`](Self::stop)) ends it.
#[derive(Debug)]
pub struct Discovery {
    task: JoinHandle<()>,
}

impl Discovery {
    /// Ends the watch.
    pub fn stop(self) {
        self.task.abort();
    }

    /// Whether the task still runs.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects to the API server and starts watching; instances go to `cp`.
pub async fn start(
    cp: ControlPlane,
    cfg: KubernetesDiscovery,
) -> Result<Discovery, DiscoveryError> {
    let config = match &cfg.api_server {
        Some(url) => {
            let uri = url
                .parse::<hyper::Uri>()
                .map_err(|source| DiscoveryError::ApiServer {
                    url: url.clone(),
                    source,
                })?;
            kube::Config::new(uri)
        }
        None => kube::Config::infer().await.map_err(DiscoveryError::Infer)?,
    };
    let client = Client::try_from(config).map_err(DiscoveryError::Client)?;
    let namespace = cfg.namespace.clone().unwrap_or_else(own_namespace);
    let stream: BoxStream<'static, WatchItem> = match &cfg.target {
        Target::Service(svc) => {
            let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &namespace);
            let wc =
                watcher::Config::default().labels(&format!("kubernetes.io/service-name={svc}"));
            watcher(api, wc)
                .default_backoff()
                .map(|r| r.map(|e| map_event(e, Object::Slice)))
                .boxed()
        }
        Target::Selector(sel) => {
            let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
            watcher(api, watcher::Config::default().labels(sel))
                .default_backoff()
                .map(|r| r.map(|e| map_event(e, Object::Pod)))
                .boxed()
        }
    };
    tracing::info!(
        namespace = %namespace,
        target = ?cfg.target,
        "kubernetes discovery watching"
    );
    let metrics = cp.telemetry().discovery();
    metrics.set(super::Counts::default());
    let driver = Driver {
        pods: Api::namespaced(client.clone(), &namespace),
        secrets: Api::namespaced(client, &namespace),
        cp,
        cfg,
        rec: Reconciler::new(),
        metrics,
        pod_cache: HashMap::new(),
        unresolved: BTreeMap::new(),
        warned: HashSet::new(),
    };
    Ok(Discovery {
        task: tokio::spawn(driver.run(stream)),
    })
}

/// The pod's own namespace (its service account's), else `default`.
fn own_namespace() -> String {
    std::fs::read_to_string(NAMESPACE_FILE)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// A watched object.
#[derive(Debug, Clone)]
enum Object {
    Slice(Box<EndpointSlice>),
    Pod(Box<Pod>),
}

impl Object {
    fn key(&self) -> String {
        let meta = match self {
            Object::Slice(s) => &s.metadata,
            Object::Pod(p) => &p.metadata,
        };
        meta.name.clone().unwrap_or_default()
    }
}

type WatchItem = Result<watcher::Event<Object>, watcher::Error>;

fn map_event<K>(e: watcher::Event<K>, f: fn(Box<K>) -> Object) -> watcher::Event<Object> {
    use watcher::Event as E;
    match e {
        E::Apply(k) => E::Apply(f(Box::new(k))),
        E::Delete(k) => E::Delete(f(Box::new(k))),
        E::Init => E::Init,
        E::InitApply(k) => E::InitApply(f(Box::new(k))),
        E::InitDone => E::InitDone,
    }
}

/// The task's state.
struct Driver {
    cp: ControlPlane,
    cfg: KubernetesDiscovery,
    pods: Api<Pod>,
    secrets: Api<k8s_openapi::api::core::v1::Secret>,
    rec: Reconciler,
    metrics: DiscoveryMetrics,
    /// Service mode: the pods behind endpoints, read once each (by name).
    pod_cache: HashMap<String, Arc<PodMeta>>,
    /// EndpointSlices with an endpoint whose pod could not be read yet, to derive again.
    unresolved: BTreeMap<String, Box<EndpointSlice>>,
    /// (instance, what) already warned about, so a retry every few seconds does not
    /// repeat it.
    warned: HashSet<(InstanceId, String)>,
}

impl Driver {
    async fn run(mut self, mut stream: BoxStream<'static, WatchItem>) {
        let mut resync = tokio::time::interval(RESYNC);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                item = stream.next() => match item {
                    Some(item) => self.event(item).await,
                    None => {
                        tracing::error!("the kubernetes watch ended; discovered instances stay as they are");
                        return;
                    }
                },
                _ = resync.tick() => self.resync().await,
            }
            if !self.cp.is_alive() {
                return;
            }
        }
    }

    async fn event(&mut self, item: WatchItem) {
        use watcher::Event as E;
        match item {
            Ok(E::Apply(o)) => {
                self.metrics.event(DiscoveryEventKind::apply);
                let (key, eps) = self.endpoints(o).await;
                self.rec.apply(&key, eps);
            }
            Ok(E::Delete(o)) => {
                self.metrics.event(DiscoveryEventKind::delete);
                let key = o.key();
                self.unresolved.remove(&key);
                self.rec.delete(&key);
            }
            Ok(E::Init) => {
                self.metrics.event(DiscoveryEventKind::init);
                tracing::info!("kubernetes discovery listing");
                self.rec.init();
            }
            Ok(E::InitApply(o)) => {
                self.metrics.event(DiscoveryEventKind::init_apply);
                let (key, eps) = self.endpoints(o).await;
                self.rec.init_apply(&key, eps);
            }
            Ok(E::InitDone) => {
                self.metrics.event(DiscoveryEventKind::init_done);
                self.rec.init_done();
                let keys: HashSet<&str> = self.rec.keys().collect();
                self.unresolved.retain(|k, _| keys.contains(k.as_str()));
                tracing::info!(endpoints = ?self.rec.counts(), "kubernetes discovery listed");
            }
            Err(e) => {
                self.metrics.event(DiscoveryEventKind::error);
                let gone = matches!(&e, watcher::Error::WatchError(s) if s.code == 410);
                if gone {
                    tracing::info!(error = %chain(&e), "kubernetes watch expired (410 Gone): re-listing; instances kept");
                } else {
                    tracing::warn!(error = %chain(&e), "kubernetes watch error: instances kept; the watch resumes after a backoff");
                }
            }
        }
        if !self.rec.relisting() {
            self.reconcile().await;
        }
    }

    /// Derives again the EndpointSlices whose pods could not be read, forgets pods no
    /// longer watched, and reconciles.
    async fn resync(&mut self) {
        if self.rec.relisting() {
            return;
        }
        let pending: Vec<Box<EndpointSlice>> = self.unresolved.values().cloned().collect();
        for slice in pending {
            let (key, eps) = self.endpoints(Object::Slice(slice)).await;
            self.rec.apply(&key, eps);
        }
        let ids: HashSet<&str> = self.rec.ids().map(InstanceId::as_str).collect();
        self.pod_cache.retain(|name, _| ids.contains(name.as_str()));
        self.warned.retain(|(id, _)| ids.contains(id.as_str()));
        self.reconcile().await;
    }

    /// The object's key and endpoints.
    async fn endpoints(&mut self, o: Object) -> (String, Vec<super::Endpoint>) {
        let key = o.key();
        match o {
            Object::Slice(s) => {
                let eps = self.slice_endpoints(&s).await;
                if eps.iter().any(|e| e.meta == Meta::Unknown) {
                    self.unresolved.insert(key.clone(), s);
                } else {
                    self.unresolved.remove(&key);
                }
                (key, eps)
            }
            Object::Pod(p) => {
                let eps = convert::pod_endpoint(&p, &self.cfg)
                    .map_err(|why| self.warn_once(&key, "port", &why))
                    .ok()
                    .flatten()
                    .into_iter()
                    .collect();
                (key, eps)
            }
        }
    }

    /// Logs a problem with `id` once (until it is fixed and comes back, or goes).
    fn warn_once(&mut self, id: &str, what: &str, message: &str) {
        if self.warned.insert((InstanceId::new(id), what.to_string())) {
            tracing::warn!(pod = %id, what, problem = %message, "kubernetes discovery");
        }
    }

    /// Carries out the reconciler's plan and updates the gauges.
    async fn reconcile(&mut self) {
        for action in self.rec.plan() {
            if !self.act(action).await {
                break;
            }
        }
        self.metrics.set(self.rec.counts());
    }
}

/// An error and its sources, `a: b: c`.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(api_server: &str) -> KubernetesDiscovery {
        KubernetesDiscovery {
            namespace: Some("llm".into()),
            target: Target::Service("vllm".into()),
            port: crate::config::PortRef::Number(8000),
            model_label: crate::config::DEFAULT_MODEL_LABEL.into(),
            api_server: Some(api_server.into()),
        }
    }

    #[tokio::test]
    async fn an_https_api_server_gets_a_rustls_client_and_a_bad_url_a_clear_error() {
        let cp = ControlPlane::builder()
            .health_checks(false)
            .scrape_engines(false)
            .start()
            .unwrap();
        // building the TLS connector picks the one crypto provider compiled in (ring);
        // nothing listens there: the watch only backs off
        let d = start(cp.clone(), cfg("https://127.0.0.1:1")).await.unwrap();
        assert!(d.is_running());
        d.stop();
        let e = start(cp, cfg("http://bad host")).await.unwrap_err();
        assert!(matches!(e, DiscoveryError::ApiServer { .. }), "{e}");
        assert!(e.to_string().contains("api_server"), "{e}");
    }
}
