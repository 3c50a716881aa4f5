//! The dispatcher in paused time, through the library API (no HTTP, no probes): queued
//! requests time out, cancellations free slots, a caller that leaves the queue is removed,
//! run-time policy switching keeps every queued request, and every failure is a typed
//! `PlaneError` (unknown model, rejected with the core's reason, conflict, not found,
//! invalid setting, shutting down).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use inferplane_core::settings::InvalidSetting;
use inferplane_core::{
    DuplicateInstance, InstanceId, InstanceSpec, PolicyConfig, Priority, RejectReason, RequestId,
    RequestMeta, RoutingConfig,
};
use inferplane_gateway::dispatcher::PolicyChange;
use inferplane_gateway::telemetry::Route;
use inferplane_gateway::{ApiError, ControlPlane, NotReady, PlaneError, Unready};
use std::time::Duration;

const MODEL: &str = "m";

/// A control plane with one pool of one instance (max_inflight 1), probes off, made ready
/// by reporting health.
async fn control_plane(queue_timeout: &str, policy: &str) -> ControlPlane {
    control_plane_with(&format!(
        "queue_timeout = \"{queue_timeout}\"\npolicy = {{ kind = \"{policy}\" }}"
    ))
    .await
}

/// [`control_plane`] with the pool's other settings given as TOML lines.
async fn control_plane_with(pool_settings: &str) -> ControlPlane {
    let mut f = common::fast_config();
    f.health.active = false;
    f.scrape.active = false;
    f.pools.push(
        toml::from_str(&format!(
            "model = \"{MODEL}\"\nmax_inflight = 1\n{pool_settings}"
        ))
        .unwrap(),
    );
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
    assert!(
        matches!(
            err.reject_reason(),
            Some(RejectReason::QueueTimeout { timeout, .. }) if *timeout == Duration::from_secs(5)
        ),
        "{err:?}"
    );
    // ... which the HTTP edge answers as a 503 with the reason's code
    let err = ApiError::from(err);
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

#[tokio::test(start_paused = true)]
async fn an_unknown_model_is_a_typed_error_naming_the_models_served() {
    let cp = control_plane("60s", "fifo").await;
    let mut m = meta(&cp, Priority::Normal);
    m.model = "nope".into();
    let unknown = PlaneError::UnknownModel {
        model: "nope".into(),
        known: vec![MODEL.into()],
    };
    let err = cp.submit(m, Route::chat_completions).await.unwrap_err();
    assert_eq!(err, unknown);
    let change = PolicyChange {
        model: Some("nope".into()),
        policy: Some(PolicyConfig::Priority(Default::default())),
        ..Default::default()
    };
    assert_eq!(cp.set_policy(change).await.unwrap_err(), unknown);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_rejects_with_the_cores_reason_and_when_to_retry() {
    let cp = control_plane_with("max_queue = 1\nqueue_timeout = \"60s\"").await;
    let _held = cp
        .submit(meta(&cp, Priority::Normal), Route::chat_completions)
        .await
        .unwrap();
    let _waiting = {
        let cp = cp.clone();
        let m = meta(&cp, Priority::Normal);
        tokio::spawn(async move { cp.submit(m, Route::chat_completions).await })
    };
    wait_queued(&cp, 1).await;
    let err = cp
        .submit(meta(&cp, Priority::Normal), Route::chat_completions)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        PlaneError::Rejected {
            model: MODEL.into(),
            reason: RejectReason::QueueFull { max_queue: 1 },
            not_ready: None,
        }
    );
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
}

#[tokio::test(start_paused = true)]
async fn a_pool_without_a_ready_instance_rejects_saying_why_each_takes_no_work() {
    let cp = control_plane("60s", "fifo").await;
    cp.drain_instance(&InstanceId::new("i0")).await.unwrap();
    let err = cp
        .submit(meta(&cp, Priority::Normal), Route::chat_completions)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        PlaneError::Rejected {
            model: MODEL.into(),
            reason: RejectReason::NoneReady { registered: 1 },
            not_ready: Some(NotReady {
                instances: vec![(InstanceId::new("i0"), Unready::Draining)],
                more: 0,
            }),
        }
    );
}

#[tokio::test(start_paused = true)]
async fn registering_an_id_twice_conflicts_and_unknown_ids_are_not_found() {
    let cp = control_plane("60s", "fifo").await;
    let again = InstanceSpec::new("i0", "http://127.0.0.1:10", MODEL, 1);
    assert_eq!(
        cp.register_instance(again).await.unwrap_err(),
        PlaneError::Conflict(DuplicateInstance(InstanceId::new("i0")))
    );
    let ghost = InstanceId::new("ghost");
    let not_found = PlaneError::NotFound(ghost.clone());
    assert_eq!(cp.remove_instance(&ghost).await.unwrap_err(), not_found);
    assert_eq!(cp.drain_instance(&ghost).await.unwrap_err(), not_found);
    assert_eq!(cp.instances().await.unwrap().len(), 1, "nothing changed");
}

#[tokio::test(start_paused = true)]
async fn an_out_of_bounds_setting_changes_nothing_and_keeps_the_cores_error() {
    let cp = control_plane("60s", "fifo").await;
    let change = PolicyChange {
        policy: Some(PolicyConfig::Priority(Default::default())),
        routing: Some(RoutingConfig::Locality(
            inferplane_core::route::LocalityConfig {
                capacity: 0,
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    let err = cp.set_policy(change).await.unwrap_err();
    assert!(
        matches!(
            &err,
            PlaneError::InvalidSetting(InvalidSetting {
                field: "routing.capacity",
                ..
            })
        ),
        "{err:?}"
    );
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert!(source.is_some_and(|s| s.starts_with("routing.capacity: ")));
    assert_eq!(cp.policies().await.unwrap()[0].active_policy, "fifo");
}

#[tokio::test(start_paused = true)]
async fn a_stopped_control_plane_says_it_is_shutting_down() {
    let cp = control_plane("60s", "fifo").await;
    cp.shutdown();
    for _ in 0..100 {
        if !cp.is_alive() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let err = cp
        .submit(meta(&cp, Priority::Normal), Route::chat_completions)
        .await
        .unwrap_err();
    assert_eq!(err, PlaneError::ShuttingDown);
    assert_eq!(cp.instances().await.unwrap_err(), PlaneError::ShuttingDown);
}
