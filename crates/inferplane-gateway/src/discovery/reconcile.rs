//! The [`Reconciler`]: what the watch says (the endpoints of every watched object, by the
//! object's key) against what the control plane was told (registered instances, drained
//! or not), and the [`Action`]s that bring the second to the first. Level-triggered: the
//! plan is the difference, recomputed after every event and on a timer, so an action that
//! failed (an engine that did not say its model, a Secret not there yet) is tried again.
//!
//! - An event for an object replaces that object's endpoints; a deleted object's go.
//! - A re-list (`Init`, `InitApply`..., `InitDone`) is buffered and replaces the whole set
//!   only at `InitDone`: instances present before and after are untouched, only those
//!   absent after it go. A watch error changes nothing.
//! - Ready endpoints become instances; terminating and not-ready ones are drained (no new
//!   work, in-flight requests finish), and taken back when ready again; removed ones go.
//!   An endpoint whose URL or pod changed (a StatefulSet pod re-created under its name) is
//!   removed and registered anew.
//!
//! No I/O and no clock: the Kubernetes part feeds it and carries out its plan.

use super::{Counts, Endpoint, EndpointState, Meta};
use inferplane_core::InstanceId;
use std::collections::{BTreeMap, HashMap};

/// What to do on the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Register a ready endpoint (its model from its pod, else from the engine).
    Register(Endpoint),
    /// Stop sending it new work (terminating or not ready).
    Drain(InstanceId),
    /// Send it work again (ready again after a drain).
    Undrain(InstanceId),
    /// Remove it (gone from the watch, or changed and registered anew next).
    Remove(InstanceId),
}

/// An instance discovery registered.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Applied {
    endpoint: Endpoint,
    drained: bool,
}

/// The watched endpoints and the instances registered for them.
#[derive(Debug, Default)]
pub struct Reconciler {
    /// Endpoints by watched object (an EndpointSlice's or a Pod's name).
    objects: BTreeMap<String, Vec<Endpoint>>,
    /// A re-list under way: the objects listed so far.
    relist: Option<BTreeMap<String, Vec<Endpoint>>>,
    /// What the control plane was told.
    applied: HashMap<InstanceId, Applied>,
}

impl Reconciler {
    /// Nothing watched, nothing registered.
    pub fn new() -> Self {
        Reconciler::default()
    }

    /// An object was added or changed (watch `ADDED`/`MODIFIED`): its endpoints now.
    pub fn apply(&mut self, key: &str, endpoints: Vec<Endpoint>) {
        self.objects.insert(key.to_string(), endpoints);
    }

    /// An object was deleted: its endpoints go.
    pub fn delete(&mut self, key: &str) {
        self.objects.remove(key);
    }

    /// A (re-)list starts: what it lists is buffered until [`init_done`](Self::init_done).
    pub fn init(&mut self) {
        self.relist = Some(BTreeMap::new());
    }

    /// An object of the list under way.
    pub fn init_apply(&mut self, key: &str, endpoints: Vec<Endpoint>) {
        match &mut self.relist {
            Some(list) => {
                list.insert(key.to_string(), endpoints);
            }
            // a list item without a list start: an update like any other
            None => self.apply(key, endpoints),
        }
    }

    /// The list is complete: it replaces the watched set.
    pub fn init_done(&mut self) {
        if let Some(list) = self.relist.take() {
            self.objects = list;
        }
    }

    /// Whether a re-list is under way.
    pub fn relisting(&self) -> bool {
        self.relist.is_some()
    }

    /// The watched objects' keys (to bound caches kept beside it).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.objects.keys().map(String::as_str)
    }

    /// The ids of the endpoints watched now.
    pub fn ids(&self) -> impl Iterator<Item = &InstanceId> {
        self.objects.values().flatten().map(|e| &e.id)
    }

    /// The endpoints watched now, one per instance id: when an id is in two objects (a
    /// pod moving between EndpointSlices), the readier entry wins.
    fn desired(&self) -> BTreeMap<&InstanceId, &Endpoint> {
        let mut out: BTreeMap<&InstanceId, &Endpoint> = BTreeMap::new();
        for ep in self.objects.values().flatten() {
            match out.get(&ep.id) {
                Some(have) if have.state <= ep.state => {}
                _ => {
                    out.insert(&ep.id, ep);
                }
            }
        }
        out
    }

    /// The actions that bring the control plane to the watched set, in order (a Remove
    /// comes before the Register of the same id).
    pub fn plan(&self) -> Vec<Action> {
        let desired = self.desired();
        let mut actions = Vec::new();
        for (id, ep) in &desired {
            let servable = ep.state == EndpointState::Ready && ep.meta != Meta::Unknown;
            match self.applied.get(*id) {
                None => {
                    if servable {
                        actions.push(Action::Register((*ep).clone()));
                    }
                }
                Some(a) => {
                    let changed = a.endpoint.url != ep.url
                        || (ep.meta != Meta::Unknown && a.endpoint.meta != ep.meta);
                    if changed {
                        actions.push(Action::Remove((*id).clone()));
                        if servable {
                            actions.push(Action::Register((*ep).clone()));
                        }
                    } else if ep.state == EndpointState::Ready && a.drained {
                        actions.push(Action::Undrain((*id).clone()));
                    } else if ep.state != EndpointState::Ready && !a.drained {
                        actions.push(Action::Drain((*id).clone()));
                    }
                }
            }
        }
        let mut gone: Vec<&InstanceId> = self
            .applied
            .keys()
            .filter(|id| !desired.contains_key(id))
            .collect();
        gone.sort();
        actions.extend(gone.into_iter().cloned().map(Action::Remove));
        actions
    }

    /// An endpoint was registered.
    pub fn registered(&mut self, endpoint: Endpoint) {
        self.applied.insert(
            endpoint.id.clone(),
            Applied {
                endpoint,
                drained: false,
            },
        );
    }

    /// An instance was drained (`true`) or taken back (`false`).
    pub fn drained(&mut self, id: &InstanceId, drained: bool) {
        if let Some(a) = self.applied.get_mut(id) {
            a.drained = drained;
        }
    }

    /// An instance was removed (or was found gone).
    pub fn removed(&mut self, id: &InstanceId) {
        self.applied.remove(id);
    }

    /// Whether discovery registered `id`.
    pub fn is_registered(&self, id: &InstanceId) -> bool {
        self.applied.contains_key(id)
    }

    /// The watched endpoints by state.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for ep in self.desired().values() {
            match ep.state {
                EndpointState::Ready => c.ready += 1,
                EndpointState::Terminating => c.terminating += 1,
                EndpointState::NotReady => c.not_ready += 1,
            }
        }
        c
    }
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
