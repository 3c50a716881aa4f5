//! The dispatcher in paused time, through the library API (no HTTP, no probes): queued
//! requests time out, cancellations free slots, a caller that leaves the queue is removed,
//! and run-time policy switching keeps every queued request.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use inferplane_core::{
    InstanceId, InstanceSpec, PolicyConfig, Priority, RequestId, RequestMeta, RoutingConfig,
};
use inferplane_gateway::ControlPlane;
use inferplane_gateway::dispatcher::PolicyChange;
use inferplane_gateway::telemetry::Route;
use std::time::Duration;

const MODEL: &str = "m";

/// A control plane with one pool of one instance (max_inflight 1), probes off, made ready
/// by reporting health.
async fn control_plane(queue_timeout: &str, policy: &str) -> ControlPlane {
    let mut f = common::fast_config();
    f.health.active = false;
    f.scrape.active = false;
    f.pools.push(toml::from_str(&format!(
        "model = \"{MODEL}\"\nmax_inflight = 1\nqueue_timeout = \"{queue_timeout}\"\npolicy = {{ kind = \"{policy}\" }}"
    )).unwrap());
    let cp = ControlPlane::start(f.validate().unwrap()).unwrap();
    let spec = InstanceSpec::new("i0", "http://127.0.0.1:9", MODEL, 1);
    cp.register_instance(spec).await.unwrap();
    cp.report_health(&InstanceId::new("i0"), true);
    // Wait (bounded) until the dispatcher has seen it.
    for _ in 0..100 {
        if cp.instances().await.unwrap()[0].ready {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(cp.instances().await.unwrap()[0].ready);
    cp
}

fn meta(cp: &ControlPlane, priority: Priority) -> RequestMeta {
    let mut m = RequestMeta::new(cp.next_request_id(), MODEL, 16, 16, cp.now());
    m.priority = priority;
    m
}

async fn queued(cp: &ControlPlane) -> usize {
    cp.policies().await.unwrap()[0]
        .queued_by_priority
        .iter()
        .sum()
}

async fn wait_queued(cp: &ControlPlane, n: usize) {
    for _ in 0..1000 {
        if queued(cp).await == n {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("queue never reached {n} (is {})", queued(cp).await);
}

#[tokio::test(start_paused = true)]
async fn a_queued_request_times_out_with_a_clear_reason() {
    let cp = control_plane("5s", "fifo").await;
    let _held = cp
        .submit(meta(&cp, Priority::Normal), Route::chat_completions)
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let err = cp
        .submit(meta(&cp, Priority::Normal), Route::chat_completions)
        .await
        .unwrap_err();
    assert_eq!(err.code, "queue_timeout");
    assert_eq!(err.status, 503);
    assert!(err.message.contains("timeout"), "{}", err.message);
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "virtual time advanced to the timeout"
    );
}

#[tokio::test(start_paused = true)]
async fn a_finished_or_dropped_placement_frees_its_slot_for_the_next_request() {
    let cp = control_plane("60s", "fifo").await;
    let first = cp
        .submit(meta(&cp, Priority::Normal), Route::chat_completions)
        .await
        .unwrap();
    let cp2 = cp.clone();
    let m2 = meta(&cp, Priority::Normal);
    let second = tokio::spawn(async move { cp2.submit(m2, Route::chat_completions).await });
    wait_queued(&cp, 1).await;
    drop(first); // a client disconnect: the guard reports the attempt as cancelled
    let second = second.await.unwrap().unwrap();
    assert_eq!(second.backend.spec.id.as_str(), "i0");
    second.guard.finish(inferplane_core::Outcome::Success {
        prompt_tokens: 16,
        completion_tokens: 16,
        cached_tokens: None,
        first_token: Some(Duration::from_millis(5)),
        latency: Duration::from_millis(50),
    });
    let m = cp.metrics().await.unwrap();
    assert_eq!(
        (m.total.completed, m.total.cancelled, m.total.active),
        (1, 1, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_stops_waiting_leaves_the_queue() {
    let cp = control_plane("60s", "fifo").await;
    let _held = cp
        .submit(meta(&cp, Priority::Normal), Route::chat_completions)
        .await
        .unwrap();
    let waiting = {
        let cp = cp.clone();
        let m = meta(&cp, Priority::Normal);
        tokio::spawn(async move { cp.submit(m, Route::chat_completions).await })
    };
    wait_queued(&cp, 1).await;
    waiting.abort();
    wait_queued(&cp, 0).await;
    assert_eq!(cp.metrics().await.unwrap().total.cancelled, 1);
}

#[tokio::test(start_paused = true)]
async fn switching_policy_routing_and_balancing_at_run_time_keeps_every_queued_request() {
    let cp = control_plane("60s", "fifo").await;
    let held = cp
        .submit(meta(&cp, Priority::Normal), Route::chat_completions)
        .await
        .unwrap();
    let classes = [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Low,
        Priority::Critical,
        Priority::Normal,
    ];
    let mut waiters = Vec::new();
    for p in classes {
        let cp2 = cp.clone();
        let m = meta(&cp, p);
        let id = m.id;
        waiters.push((
            id,
            p,
            tokio::spawn(async move { cp2.submit(m, Route::chat_completions).await }),
        ));
        wait_queued(&cp, waiters.len()).await;
    }
    for change in [
        PolicyChange {
            policy: Some(PolicyConfig::SloAware(Default::default())),
            ..Default::default()
        },
        PolicyChange {
            routing: Some(RoutingConfig::RoundRobin(Default::default())),
            ..Default::default()
        },
        PolicyChange {
            balancing: Some(inferplane_core::BalanceConfig::PowerOfTwo(
                Default::default(),
            )),
            ..Default::default()
        },
        PolicyChange {
            model: Some(MODEL.into()),
            policy: Some(PolicyConfig::Priority(Default::default())),
            ..Default::default()
        },
    ] {
        cp.set_policy(change).await.unwrap();
        assert_eq!(
            queued(&cp).await,
            classes.len(),
            "no queued request lost by a switch"
        );
    }
    let view = &cp.policies().await.unwrap()[0];
    assert_eq!(view.active_policy, "priority");
    assert_eq!(view.balancing, Some("power_of_two"));
    // Serve them one at a time: all six come out, highest class first.
    drop(held);
    let mut order: Vec<Priority> = Vec::new();
    let mut pending: Vec<(RequestId, Priority, _)> = waiters;
    while !pending.is_empty() {
        let mut next = None;
        for _ in 0..1000 {
            if let Some(i) = pending.iter().position(|(_, _, h)| h.is_finished()) {
                next = Some(i);
                break;
            }
            tokio::task::yield_now().await;
        }
        let (_, p, h) = pending.remove(next.expect("one placement at a time"));
        let a = h.await.unwrap().unwrap();
        order.push(p);
        drop(a);
    }
    assert_eq!(
        order,
        [
            Priority::Critical,
            Priority::High,
            Priority::Normal,
            Priority::Normal,
            Priority::Low,
            Priority::Low
        ]
    );
}
