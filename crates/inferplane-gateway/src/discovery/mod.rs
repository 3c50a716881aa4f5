//! Instance discovery beyond the file and the admin API.
//!
//! The pure part, compiled in every build and tested without Kubernetes: [`reconcile`]
//! (the [`Reconciler`](reconcile::Reconciler): the endpoints a watch reports, what the
//! control plane was told, and the actions that bring the two together; a re-list replaces
//! the set only when it is complete, and a watch error changes nothing) and
//! [`annotations`] (a pod's `inferplane.io/*` overrides, each checked on its own). The
//! Kubernetes part (`kubernetes`, behind the cargo feature of that name) watches
//! EndpointSlices or Pods with kube-rs, turns each object into [`Endpoint`]s and carries
//! out the reconciler's actions on the [`ControlPlane`](crate::ControlPlane).

pub mod annotations;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod reconcile;

use inferplane_core::InstanceId;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What the watched object says of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndpointState {
    /// Ready: an instance taking work.
    Ready,
    /// Terminating (EndpointSlice `terminating`, or a pod with a `deletionTimestamp`):
    /// drained, its in-flight requests finish.
    Terminating,
    /// Not ready (EndpointSlice `ready: false`, or a pod whose `Ready` condition is not
    /// `True`): drained, not removed.
    NotReady,
}

impl EndpointState {
    /// The `state` label of `inferplane_discovery_instances`.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointState::Ready => "ready",
            EndpointState::Terminating => "terminating",
            EndpointState::NotReady => "not_ready",
        }
    }

    /// Every state, in the order of [`Counts`].
    pub const ALL: [EndpointState; 3] = [
        EndpointState::Ready,
        EndpointState::Terminating,
        EndpointState::NotReady,
    ];
}

/// The parts of a pod's metadata discovery reads: its uid, labels and annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodMeta {
    /// `metadata.uid` (a pod re-created under the same name has another).
    pub uid: Option<String>,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
}

/// Where an endpoint's model and overrides come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Meta {
    /// No pod behind it (an EndpointSlice endpoint without `targetRef`): the defaults.
    Defaults,
    /// Its pod's metadata.
    Known(Arc<PodMeta>),
    /// Its pod could not be read yet: not registered until it is, and an instance already
    /// registered for it is left as it is.
    Unknown,
}

/// One discovered endpoint: an engine pod's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The instance id: the pod's name, else the address.
    pub id: InstanceId,
    /// `http://address:port`.
    pub url: String,
    /// Ready, terminating or not ready.
    pub state: EndpointState,
    /// Its pod's metadata, if any.
    pub meta: Meta,
}

/// Discovered endpoints by state (the gauge `inferplane_discovery_instances{state}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Ready.
    pub ready: usize,
    /// Terminating.
    pub terminating: usize,
    /// Not ready.
    pub not_ready: usize,
}

impl Counts {
    /// The count of `state`.
    pub fn get(&self, state: EndpointState) -> usize {
        match state {
            EndpointState::Ready => self.ready,
            EndpointState::Terminating => self.terminating,
            EndpointState::NotReady => self.not_ready,
        }
    }
}

/// `http://address:port`, with an IPv6 address in brackets.
pub fn endpoint_url(address: &str, port: u16) -> String {
    if address.contains(':') && !address.starts_with('[') {
        format!("http://[{address}]:{port}")
    } else {
        format!("http://{address}:{port}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ipv6_addresses_are_bracketed() {
        assert_eq!(
            super::endpoint_url("10.0.0.5", 8000),
            "http://10.0.0.5:8000"
        );
        assert_eq!(super::endpoint_url("fd00::5", 80), "http://[fd00::5]:80");
    }
}
