//! Unit tests of the `Scheduler` state machine: limits, ordering, expiry, cancellation,
//! retries, instance changes, runtime switching and the metrics it keeps.

use super::*;
use crate::instance::InstanceSpec;
use crate::request::RequestId;
use crate::time::Time;

fn meta(id: u64, now: Time) -> RequestMeta {
    RequestMeta::new(RequestId(id), "m", 10, 10, now)
}

fn pool(limits: &[u32]) -> Scheduler<u64> {
    let mut s = Scheduler::new(SchedulerConfig::default());
    for (i, l) in limits.iter().enumerate() {
        let id = InstanceId::new(format!("i{i}"));
        s.add_instance(InstanceSpec::new(id.as_str(), "http://x", "m", *l))
            .unwrap();
        s.set_ready(&id, true);
    }
    s
}

#[test]
fn placements_never_exceed_max_inflight_and_the_rest_wait_in_order() {
    let mut s = pool(&[2, 1]);
    for i in 0..5 {
        s.submit(meta(i, Time::ZERO), i, Time::ZERO).unwrap();
    }
    let mut out = Vec::new();
    s.dispatch(Time::ZERO, &mut out);
    assert_eq!(out.iter().map(|p| p.payload).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(s.queue_len(), 2);
    assert!(s.instances().all(|i| i.inflight <= i.spec.max_inflight));
    s.complete(RequestId(1), Outcome::Failure, Time::ZERO);
    out.clear();
    s.dispatch(Time::ZERO, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].payload, 3, "FIFO: the oldest waiting goes next");
}

#[test]
fn unready_and_draining_instances_get_nothing() {
    let mut s = pool(&[4, 4]);
    s.set_ready(&InstanceId::new("i0"), false);
    s.set_draining(&InstanceId::new("i1"), true);
    s.submit(meta(1, Time::ZERO), 1, Time::ZERO).unwrap();
    let mut out = Vec::new();
    s.dispatch(Time::ZERO, &mut out);
    assert!(out.is_empty());
    s.set_ready(&InstanceId::new("i0"), true);
    s.dispatch(Time::ZERO, &mut out);
    assert_eq!(out[0].instance.as_str(), "i0");
}

#[test]
fn queue_timeout_and_deadlines_expire_waiting_requests() {
    let mut s = Scheduler::new(SchedulerConfig {
        max_queue: 2,
        queue_timeout: Some(Duration::from_secs(5)),
        ..SchedulerConfig::default()
    });
    s.add_instance(InstanceSpec::new("a", "u", "m", 1)).unwrap(); // never ready
    let mut m = meta(1, Time::ZERO);
    m.deadline = Some(Duration::from_secs(1));
    s.submit(m, 1, Time::ZERO).unwrap();
    s.submit(meta(2, Time::ZERO), 2, Time::ZERO).unwrap();
    let full = s.submit(meta(3, Time::ZERO), 3, Time::ZERO).unwrap_err();
    assert_eq!(full.reason, RejectReason::QueueFull { max_queue: 2 });
    assert_eq!(s.next_expiry(), Some(Time::from_millis(1000)));
    let mut out = Vec::new();
    s.expire(Time::from_millis(1000), &mut out);
    assert_eq!(out.len(), 1);
    assert!(matches!(out[0].reason, RejectReason::DeadlineMissed { .. }));
    s.expire(Time::from_millis(5000), &mut out);
    assert!(matches!(out[1].reason, RejectReason::QueueTimeout { .. }));
    assert_eq!(s.queue_len(), 0);
}

#[test]
fn cancel_removes_queued_requests_and_frees_placed_ones() {
    let mut s = pool(&[1]);
    s.submit(meta(1, Time::ZERO), 1, Time::ZERO).unwrap();
    s.submit(meta(2, Time::ZERO), 2, Time::ZERO).unwrap();
    let mut out = Vec::new();
    s.dispatch(Time::ZERO, &mut out);
    assert_eq!(s.cancel(RequestId(2), Time::ZERO), Some(2));
    assert_eq!(s.cancel(RequestId(1), Time::ZERO), None);
    assert_eq!(s.inflight_len(), 0);
    assert_eq!(s.instances().next().unwrap().inflight, 0);
}

#[test]
fn requeued_request_goes_first_and_avoids_the_failed_instance() {
    let mut s = pool(&[1, 1]);
    s.submit(meta(1, Time::ZERO), 1, Time::ZERO).unwrap();
    let mut out = Vec::new();
    s.dispatch(Time::ZERO, &mut out);
    let first = out.pop().unwrap();
    s.complete(first.meta.id, Outcome::Failure, Time::ZERO);
    s.submit(meta(2, Time::ZERO), 2, Time::ZERO).unwrap();
    s.requeue(first.meta, first.payload, &first.instance, Time::ZERO);
    s.dispatch(Time::ZERO, &mut out);
    assert_eq!(out[0].payload, 1);
    assert_ne!(out[0].instance, first.instance);
}

#[test]
fn an_empty_pool_rejects_at_once_and_removed_instances_forget_their_requests() {
    let mut s: Scheduler<u64> = Scheduler::new(SchedulerConfig::default());
    let r = s.submit(meta(1, Time::ZERO), 1, Time::ZERO).unwrap_err();
    assert_eq!(r.reason, RejectReason::NoInstances);
    let mut s = pool(&[1]);
    s.submit(meta(1, Time::ZERO), 1, Time::ZERO).unwrap();
    let mut out = Vec::new();
    s.dispatch(Time::ZERO, &mut out);
    assert!(s.remove_instance(&InstanceId::new("i0")));
    assert!(!s.complete(RequestId(1), Outcome::Failure, Time::ZERO));
    assert!(s.add_instance(InstanceSpec::new("i0", "u", "m", 1)).is_ok());
    assert_eq!(
        s.add_instance(InstanceSpec::new("i0", "u", "m", 1)),
        Err(DuplicateInstance(InstanceId::new("i0")))
    );
}
