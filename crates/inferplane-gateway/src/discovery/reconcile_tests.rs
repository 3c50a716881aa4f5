//! The reconciler's rules: ready registers, terminating and not ready drain, ready again
//! undrains, gone removes, a re-list replaces only at its end, errors change nothing.

use super::*;
use crate::discovery::PodMeta;
use std::sync::Arc;

fn ep(id: &str, ip: &str, state: EndpointState) -> Endpoint {
    Endpoint {
        id: InstanceId::new(id),
        url: crate::discovery::endpoint_url(ip, 8000),
        state,
        meta: Meta::Defaults,
    }
}

use EndpointState::{NotReady, Ready, Terminating};

/// Carries out every planned action as if the control plane accepted it; returns them.
fn settle(r: &mut Reconciler) -> Vec<Action> {
    let plan = r.plan();
    for a in &plan {
        match a {
            Action::Register(e) => r.registered(e.clone()),
            Action::Drain(id) => r.drained(id, true),
            Action::Undrain(id) => r.drained(id, false),
            Action::Remove(id) => r.removed(id),
        }
    }
    assert!(r.plan().is_empty(), "a settled reconciler plans nothing");
    plan
}

fn id(s: &str) -> InstanceId {
    InstanceId::new(s)
}

#[test]
fn ready_registers_terminating_drains_ready_again_undrains_and_deletion_removes() {
    let mut r = Reconciler::new();
    r.apply(
        "slice-1",
        vec![ep("a", "10.0.0.1", Ready), ep("b", "10.0.0.2", NotReady)],
    );
    let plan = settle(&mut r);
    assert_eq!(plan, [Action::Register(ep("a", "10.0.0.1", Ready))]);
    r.apply(
        "slice-1",
        vec![ep("a", "10.0.0.1", Terminating), ep("b", "10.0.0.2", Ready)],
    );
    assert_eq!(
        settle(&mut r),
        [
            Action::Drain(id("a")),
            Action::Register(ep("b", "10.0.0.2", Ready))
        ]
    );
    r.apply(
        "slice-1",
        vec![ep("a", "10.0.0.1", Ready), ep("b", "10.0.0.2", NotReady)],
    );
    assert_eq!(
        settle(&mut r),
        [Action::Undrain(id("a")), Action::Drain(id("b"))]
    );
    r.delete("slice-1");
    assert_eq!(
        settle(&mut r),
        [Action::Remove(id("a")), Action::Remove(id("b"))]
    );
    assert_eq!(r.counts(), Counts::default());
}

#[test]
fn a_relist_replaces_the_set_only_when_done_and_keeps_what_is_still_there() {
    let mut r = Reconciler::new();
    r.init();
    r.init_apply("s1", vec![ep("a", "10.0.0.1", Ready)]);
    assert!(r.plan().is_empty(), "nothing before the list is complete");
    r.init_apply("s2", vec![ep("b", "10.0.0.2", Ready)]);
    r.init_done();
    assert_eq!(settle(&mut r).len(), 2);
    // the watch broke with 410: a re-list that no longer has b
    r.init();
    assert!(r.relisting());
    assert!(r.plan().is_empty(), "a re-list under way removes nothing");
    r.init_apply("s1", vec![ep("a", "10.0.0.1", Ready)]);
    assert!(r.plan().is_empty());
    r.init_done();
    assert_eq!(
        settle(&mut r),
        [Action::Remove(id("b"))],
        "a, listed before and after, is untouched"
    );
    // a re-list that ends with the same set plans nothing at all
    r.init();
    r.init_apply("s1", vec![ep("a", "10.0.0.1", Ready)]);
    r.init_done();
    assert!(settle(&mut r).is_empty());
}

#[test]
fn a_relist_that_fails_and_starts_again_keeps_everything() {
    let mut r = Reconciler::new();
    r.apply("s1", vec![ep("a", "10.0.0.1", Ready)]);
    settle(&mut r);
    // Init, then the list request fails (an error: nothing changes), then Init again
    r.init();
    r.init_apply("s-partial", vec![]);
    r.init();
    assert!(r.plan().is_empty());
    r.init_apply("s1", vec![ep("a", "10.0.0.1", Ready)]);
    r.init_done();
    assert!(settle(&mut r).is_empty());
    assert!(r.is_registered(&id("a")));
}

#[test]
fn a_pod_recreated_under_its_name_is_registered_anew() {
    let mut r = Reconciler::new();
    let meta = |uid: &str| {
        Meta::Known(Arc::new(PodMeta {
            uid: Some(uid.into()),
            ..PodMeta::default()
        }))
    };
    let mut a = ep("web-0", "10.0.0.1", Ready);
    a.meta = meta("u1");
    r.apply("s1", vec![a.clone()]);
    settle(&mut r);
    let mut moved = ep("web-0", "10.0.0.9", Ready);
    moved.meta = meta("u2");
    r.apply("s1", vec![moved.clone()]);
    assert_eq!(
        settle(&mut r),
        [Action::Remove(id("web-0")), Action::Register(moved.clone())]
    );
    // its pod cannot be read for a while: the instance stays as it is
    let mut unknown = moved.clone();
    unknown.meta = Meta::Unknown;
    r.apply("s1", vec![unknown.clone()]);
    assert!(r.plan().is_empty());
    // a new endpoint whose pod cannot be read is not registered yet
    let mut fresh = ep("web-1", "10.0.0.3", Ready);
    fresh.meta = Meta::Unknown;
    r.apply("s2", vec![fresh]);
    assert!(r.plan().is_empty());
}

#[test]
fn a_failed_registration_is_planned_again() {
    let mut r = Reconciler::new();
    r.apply("p", vec![ep("a", "10.0.0.1", Ready)]);
    let first = r.plan();
    assert_eq!(first.len(), 1);
    // not confirmed (the engine did not answer): the next plan has it again
    assert_eq!(r.plan(), first);
}

#[test]
fn an_id_in_two_slices_counts_once_and_the_readier_entry_wins() {
    let mut r = Reconciler::new();
    r.apply("s1", vec![ep("a", "10.0.0.1", Terminating)]);
    r.apply("s2", vec![ep("a", "10.0.0.1", Ready)]);
    assert_eq!(
        settle(&mut r),
        [Action::Register(ep("a", "10.0.0.1", Ready))]
    );
    assert_eq!(
        r.counts(),
        Counts {
            ready: 1,
            terminating: 0,
            not_ready: 0
        }
    );
    r.delete("s2");
    assert_eq!(settle(&mut r), [Action::Drain(id("a"))]);
    assert_eq!(r.counts().get(Terminating), 1);
}

#[test]
fn an_endpoint_that_never_was_ready_is_never_registered() {
    let mut r = Reconciler::new();
    r.apply("s1", vec![ep("a", "10.0.0.1", NotReady)]);
    r.apply("s1", vec![ep("a", "10.0.0.1", Terminating)]);
    assert!(r.plan().is_empty());
    r.delete("s1");
    assert!(r.plan().is_empty());
}
