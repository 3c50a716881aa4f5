//! State shared by gateway replicas (`[shared]`): every `period` each replica publishes
//! what it has in flight on every instance to Redis, reserves its share of each
//! instance's room there, and reads what the others have in flight, so the scheduler
//! judges room and load on the fleet's total (`inferplane_core::fleet`: reservations are
//! made one replica at a time, so together they stay within each instance's limit).
//!
//! The store is optional and never a single point of failure: a sync that fails or takes
//! longer than `period` is skipped; after `fallback_after` without a good sync the replica
//! forgets the others' counts and schedules on its own (a log line, and
//! `inferplane_shared_store_up` 0), and recovers by itself at the next good sync.
//!
//! Choices that must agree across replicas need no store: session affinity hashes
//! sessions onto a ring of instance ids, the same on every replica with the same
//! instances (instance ids must then be the same everywhere: the same config, or
//! Kubernetes discovery, which names instances by pod).

mod fallback;
mod store;
mod sync;

pub use fallback::{Fallback, Transition};
pub use store::{RedisFleet, StoreError};
pub(crate) use sync::spawn;

use inferplane_core::InstanceId;
use inferplane_core::fleet::{FleetDemand, FleetShare};
use std::collections::HashMap;
use std::time::Duration;

/// The validated `[shared]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedSettings {
    /// The Redis URL (`redis://[user:password@]host:port[/db]`); never logged.
    pub redis: crate::config::Secret,
    /// This replica's name in the store (default: `HOSTNAME`, a pod's name in Kubernetes).
    pub replica_id: String,
    /// How often counts are exchanged.
    pub period: Duration,
    /// How long without a good sync before the replica schedules on its own counts.
    pub fallback_after: Duration,
    /// Prefix of every key (in braces, a Redis Cluster hash tag: one slot for all).
    pub key_prefix: String,
}

/// What the other replicas have in flight and this replica's reservation, by instance,
/// and how many replicas are live (this one included), as one sync found it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetView {
    /// Per instance: the others' attempts in flight and this replica's reservation.
    pub shares: HashMap<InstanceId, FleetShare>,
    /// Live replicas, this one included (at least 1).
    pub replicas: u32,
}

impl FleetView {
    /// A replica on its own: no other counts.
    pub fn alone() -> FleetView {
        FleetView {
            shares: HashMap::new(),
            replicas: 1,
        }
    }
}

/// What the sync task asks of the dispatcher.
#[derive(Debug)]
pub enum FleetMsg {
    /// This replica's demand per instance (in flight, limit, wants more).
    Counts(tokio::sync::oneshot::Sender<Vec<FleetDemand>>),
    /// Use these counts of the other replicas until the next one.
    Apply(FleetView),
}
