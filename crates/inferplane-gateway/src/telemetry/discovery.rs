//! Instance discovery's metrics: `inferplane_discovery_events_total{kind}` (watch events
//! by kind: `apply`, `delete`, `init`, `init_apply`, `init_done`, `error`) and
//! `inferplane_discovery_instances{state}` (discovered endpoints by state: `ready`,
//! `terminating`, `not_ready`). Both families have no series until discovery runs.

use crate::discovery::{Counts, EndpointState};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A watch event's kind, the `kind` of `inferplane_discovery_events_total`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum DiscoveryEventKind {
    /// An object added or changed.
    apply,
    /// An object deleted.
    delete,
    /// A (re-)list started.
    init,
    /// An object of a list.
    init_apply,
    /// A list complete.
    init_done,
    /// A watch or list error (nothing changes; the watch resumes or re-lists).
    error,
}

impl DiscoveryEventKind {
    /// All values, for pre-resolving handles.
    pub const ALL: [DiscoveryEventKind; 6] = [
        DiscoveryEventKind::apply,
        DiscoveryEventKind::delete,
        DiscoveryEventKind::init,
        DiscoveryEventKind::init_apply,
        DiscoveryEventKind::init_done,
        DiscoveryEventKind::error,
    ];
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: DiscoveryEventKind,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// The families.
#[derive(Debug, Clone, Default)]
pub(super) struct DiscoveryFamilies {
    events: Family<KindLabel, Counter>,
    instances: Family<StateLabel, Gauge>,
}

impl DiscoveryFamilies {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "inferplane_discovery_events",
            "Kubernetes watch events seen by instance discovery, by kind",
            self.events.clone(),
        );
        r.register(
            "inferplane_discovery_instances",
            "Endpoints discovery sees now, by state",
            self.instances.clone(),
        );
    }

    pub(super) fn handle(&self) -> DiscoveryMetrics {
        DiscoveryMetrics {
            events: DiscoveryEventKind::ALL
                .map(|kind| self.events.get_or_create(&KindLabel { kind }).clone()),
            instances: EndpointState::ALL.map(|s| {
                self.instances
                    .get_or_create(&StateLabel { state: s.as_str() })
                    .clone()
            }),
        }
    }
}

/// Discovery's handles, resolved once.
#[derive(Debug, Clone)]
pub struct DiscoveryMetrics {
    events: [Counter; 6],
    instances: [Gauge; 3],
}

impl DiscoveryMetrics {
    /// Counts a watch event.
    pub fn event(&self, kind: DiscoveryEventKind) {
        self.events[kind as usize].inc();
    }

    /// Sets the endpoints by state.
    pub fn set(&self, counts: Counts) {
        for (i, s) in EndpointState::ALL.into_iter().enumerate() {
            self.instances[i].set(i64::try_from(counts.get(s)).unwrap_or(i64::MAX));
        }
    }
}
