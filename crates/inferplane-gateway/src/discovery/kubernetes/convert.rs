//! Kubernetes objects to [`Endpoint`]s, as the API reference defines their fields.
//!
//! - EndpointSlice (`discovery.k8s.io/v1`): each `endpoints[]` entry with an address; its
//!   `conditions`: `terminating: true` is Terminating; else `ready` true or unset (the API
//!   says to read an unknown state as ready) is Ready; else NotReady. The port is the
//!   `ports[]` entry of the configured name (or the configured number). The id is
//!   `targetRef.name` (a Pod, read once and cached for its annotations), else the address.
//! - Pod: `status.podIP`, the container port of the configured name (or the number);
//!   `metadata.deletionTimestamp` set is Terminating; the `Ready` condition `True` is
//!   Ready; else NotReady. Pods that ended (`Succeeded`, `Failed`) or have no IP yet are
//!   not endpoints.

use super::Driver;
use crate::config::{KubernetesDiscovery, PortRef};
use crate::discovery::annotations::PREFIX;
use crate::discovery::{Endpoint, EndpointState, Meta, PodMeta, endpoint_url};
use inferplane_core::InstanceId;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::sync::Arc;

/// The parts of a pod's metadata discovery reads (the model label, `inferplane.io/*`
/// annotations), so that other changes to it do not look like a new pod.
pub(super) fn pod_meta(m: &ObjectMeta, model_label: &str) -> PodMeta {
    let labels = m
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| k.as_str() == model_label)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let annotations = m
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.as_str() == model_label || k.starts_with(PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    PodMeta {
        uid: m.uid.clone(),
        labels,
        annotations,
    }
}

/// A pod's endpoint, if it has one; an error when the configured port name is not among
/// its containers' ports.
pub(super) fn pod_endpoint(p: &Pod, cfg: &KubernetesDiscovery) -> Result<Option<Endpoint>, String> {
    let Some(name) = p.metadata.name.as_deref() else {
        return Ok(None);
    };
    let status = p.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return Ok(None);
    }
    let Some(ip) = status
        .and_then(|s| s.pod_ip.as_deref())
        .filter(|ip| !ip.is_empty())
    else {
        return Ok(None);
    };
    let port = match &cfg.port {
        PortRef::Number(n) => *n,
        PortRef::Name(want) => {
            let found = p
                .spec
                .iter()
                .flat_map(|s| &s.containers)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|cp| cp.name.as_deref() == Some(want.as_str()))
                .and_then(|cp| u16::try_from(cp.container_port).ok());
            found.ok_or_else(|| format!("no container port named {want:?}"))?
        }
    };
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let state = if p.metadata.deletion_timestamp.is_some() {
        EndpointState::Terminating
    } else if ready {
        EndpointState::Ready
    } else {
        EndpointState::NotReady
    };
    Ok(Some(Endpoint {
        id: InstanceId::new(name),
        url: endpoint_url(ip, port),
        state,
        meta: Meta::Known(Arc::new(pod_meta(&p.metadata, &cfg.model_label))),
    }))
}

/// An EndpointSlice endpoint's state from its conditions.
fn slice_state(c: Option<&k8s_openapi::api::discovery::v1::EndpointConditions>) -> EndpointState {
    let (ready, terminating) = c.map_or((None, None), |c| (c.ready, c.terminating));
    if terminating == Some(true) {
        EndpointState::Terminating
    } else if ready != Some(false) {
        EndpointState::Ready
    } else {
        EndpointState::NotReady
    }
}

impl Driver {
    /// The endpoints of an EndpointSlice, with their pods' metadata (read once per pod).
    pub(super) async fn slice_endpoints(&mut self, s: &EndpointSlice) -> Vec<Endpoint> {
        let slice = s.metadata.name.clone().unwrap_or_default();
        let port = match &self.cfg.port {
            PortRef::Number(n) => *n,
            PortRef::Name(want) => {
                let found = s
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(want.as_str()))
                    .and_then(|p| p.port)
                    .and_then(|p| u16::try_from(p).ok());
                match found {
                    Some(p) => p,
                    None => {
                        self.warn_once(
                            &slice,
                            "port",
                            &format!("EndpointSlice {slice:?} has no port named {want:?}"),
                        );
                        return Vec::new();
                    }
                }
            }
        };
        let mut out = Vec::with_capacity(s.endpoints.len());
        for e in &s.endpoints {
            let Some(address) = e.addresses.first() else {
                continue;
            };
            let pod = e
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref().is_none_or(|k| k == "Pod"))
                .and_then(|r| r.name.clone().map(|n| (n, r.uid.clone())));
            let (id, meta) = match pod {
                Some((name, uid)) => {
                    let meta = self.pod_meta_of(&name, uid.as_deref()).await;
                    (name, meta)
                }
                None => (address.clone(), Meta::Defaults),
            };
            out.push(Endpoint {
                id: InstanceId::new(id),
                url: endpoint_url(address, port),
                state: slice_state(e.conditions.as_ref()),
                meta,
            });
        }
        out
    }

    /// A pod's metadata, from the cache or read once (`Unknown` when it cannot be read).
    async fn pod_meta_of(&mut self, name: &str, uid: Option<&str>) -> Meta {
        if let Some(m) = self.pod_cache.get(name)
            && (uid.is_none() || m.uid.as_deref() == uid)
        {
            return Meta::Known(m.clone());
        }
        match tokio::time::timeout(super::API_TIMEOUT, self.pods.get(name)).await {
            Ok(Ok(pod)) => {
                let meta = Arc::new(pod_meta(&pod.metadata, &self.cfg.model_label));
                self.pod_cache.insert(name.to_string(), meta.clone());
                self.warned
                    .remove(&(InstanceId::new(name), "pod".to_string()));
                Meta::Known(meta)
            }
            Ok(Err(e)) => {
                self.warn_once(
                    name,
                    "pod",
                    &format!(
                        "cannot read the pod: {}; not registered until it can be read",
                        super::chain(&e)
                    ),
                );
                Meta::Unknown
            }
            Err(_) => {
                self.warn_once(
                    name,
                    "pod",
                    "reading the pod timed out; not registered until it can be read",
                );
                Meta::Unknown
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::EndpointConditions;

    #[test]
    fn slice_conditions_map_as_the_api_reference_says() {
        let c = |ready, serving, terminating| EndpointConditions {
            ready,
            serving,
            terminating,
        };
        assert_eq!(
            slice_state(None),
            EndpointState::Ready,
            "unknown reads as ready"
        );
        assert_eq!(
            slice_state(Some(&c(None, None, None))),
            EndpointState::Ready
        );
        assert_eq!(
            slice_state(Some(&c(Some(false), Some(true), Some(true)))),
            EndpointState::Terminating
        );
        assert_eq!(
            slice_state(Some(&c(Some(false), None, None))),
            EndpointState::NotReady
        );
    }

    fn cfg(port: PortRef) -> KubernetesDiscovery {
        KubernetesDiscovery {
            namespace: None,
            target: crate::config::Target::Selector("app=x".into()),
            port,
            model_label: "inferplane.io/model".into(),
            api_server: None,
        }
    }

    #[test]
    fn a_pod_becomes_an_endpoint_by_its_ip_port_and_conditions() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p0", "uid": "u", "labels": {"inferplane.io/model": "m", "app": "x"},
                         "annotations": {"inferplane.io/gpu": "a100", "other": "1"}},
            "spec": {"containers": [{"name": "engine", "ports": [{"name": "http", "containerPort": 8001}]}]},
            "status": {"podIP": "10.1.2.3", "phase": "Running",
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        let ep = pod_endpoint(&pod, &cfg(PortRef::Name("http".into())))
            .unwrap()
            .unwrap();
        assert_eq!(ep.url, "http://10.1.2.3:8001");
        assert_eq!(ep.state, EndpointState::Ready);
        let Meta::Known(m) = &ep.meta else {
            panic!("pods carry their metadata")
        };
        assert_eq!(m.labels.len(), 1, "only the model label is kept");
        assert_eq!(
            m.annotations.len(),
            1,
            "only inferplane.io/* annotations are kept"
        );
        assert!(pod_endpoint(&pod, &cfg(PortRef::Name("grpc".into()))).is_err());
        let mut gone = pod.clone();
        gone.metadata.deletion_timestamp =
            serde_json::from_value(serde_json::json!("2026-01-01T00:00:00Z")).unwrap();
        let ep = pod_endpoint(&gone, &cfg(PortRef::Number(9000)))
            .unwrap()
            .unwrap();
        assert_eq!(
            (ep.state, ep.url.as_str()),
            (EndpointState::Terminating, "http://10.1.2.3:9000")
        );
        let mut pending = pod;
        pending.status.as_mut().unwrap().pod_ip = None;
        assert_eq!(
            pod_endpoint(&pending, &cfg(PortRef::Number(1))).unwrap(),
            None
        );
    }
}
