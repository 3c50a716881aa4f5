//! Metrics of the state shared by gateway replicas (`[shared]`), each a series labelled
//! `store="redis"` that exists only when a store is configured:
//! `inferplane_shared_store_up` (1 while the fleet-wide counts are in use, 0 while this
//! replica schedules on its own after losing the store), `inferplane_shared_store_syncs_total`
//! and `..._sync_failures_total`, `..._fallbacks_total` (times it fell back to local
//! counts) and `inferplane_fleet_replicas` (live replicas at the last good sync, this one
//! included).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct StoreLabel {
    store: &'static str,
}

const REDIS: StoreLabel = StoreLabel { store: "redis" };

/// The families (no series until a store is configured).
#[derive(Debug, Clone, Default)]
pub(super) struct SharedFamilies {
    up: Family<StoreLabel, Gauge>,
    syncs: Family<StoreLabel, Counter>,
    failures: Family<StoreLabel, Counter>,
    fallbacks: Family<StoreLabel, Counter>,
    replicas: Family<StoreLabel, Gauge>,
}

impl SharedFamilies {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "inferplane_shared_store_up",
            "1 while fleet-wide counts from the shared store are in use, 0 while on local counts",
            self.up.clone(),
        );
        r.register(
            "inferplane_shared_store_syncs",
            "Good syncs with the shared store",
            self.syncs.clone(),
        );
        r.register(
            "inferplane_shared_store_sync_failures",
            "Syncs with the shared store that failed or timed out",
            self.failures.clone(),
        );
        r.register(
            "inferplane_shared_store_fallbacks",
            "Times this replica fell back to its own counts after losing the shared store",
            self.fallbacks.clone(),
        );
        r.register(
            "inferplane_fleet_replicas",
            "Live gateway replicas at the last good sync, this one included",
            self.replicas.clone(),
        );
    }

    pub(super) fn handle(&self) -> SharedMetrics {
        SharedMetrics {
            up: self.up.get_or_create(&REDIS).clone(),
            syncs: self.syncs.get_or_create(&REDIS).clone(),
            failures: self.failures.get_or_create(&REDIS).clone(),
            fallbacks: self.fallbacks.get_or_create(&REDIS).clone(),
            replicas: self.replicas.get_or_create(&REDIS).clone(),
        }
    }
}

/// The shared store's metric handles (see the module docs).
#[derive(Debug, Clone)]
pub struct SharedMetrics {
    /// 1 while the fleet-wide counts are in use.
    pub up: Gauge,
    /// Good syncs.
    pub syncs: Counter,
    /// Failed or timed-out syncs.
    pub failures: Counter,
    /// Fallbacks to local counts.
    pub fallbacks: Counter,
    /// Live replicas at the last good sync.
    pub replicas: Gauge,
}
