//! Chaos, one fault at a time, each with the accounting identity (completed + rejected +
//! failed + cancelled = sent, in the gateway's totals and on `/metrics`): an engine hung
//! mid-stream, one that starts refusing connections under load, engines answering
//! garbage (not JSON under a success status, the wrong content type, an endless event, an
//! oversized event, a stream that never ends), clients that leave mid-stream (the
//! engine's work is cancelled too), a shutdown during streams, an instance re-registered
//! under streams, and a hung engine next to a healthy one costing interactive requests
//! nothing but one first-byte timeout. Every client gets a complete answer, an
//! OpenAI-shaped error, or a stream that ends with an OpenAI-shaped error event.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::engines::*;
use common::*;
use futures_util::StreamExt;
use inferplane_sim::FaultConfig;
use serde_json::json;
use std::time::Duration;

/// A client's patience: far above every timeout configured here, so only a hang hits it.
const PATIENCE: Duration = Duration::from_secs(15);

#[tokio::test]
async fn an_engine_hung_mid_stream_breaks_its_streams_and_whole_requests_go_elsewhere() {
    let hung = sim_with("hung", MODEL, |c| c.faults.hang_after_tokens = Some(3)).await;
    let good = sim("good", MODEL).await;
    let mut f = fast_config();
    f.timeouts.first_byte = Duration::from_millis(300);
    f.timeouts.idle = Duration::from_millis(300);
    f.retry.max_attempts = 2;
    f.circuit.failures_to_open = 1000; // keep `hung` in rotation: it meets half the work
    add_pool(&mut f, MODEL, &[("hung", &hung), ("good", &good)], 8);
    let gw = gateway(f, 2).await;
    let http = reqwest::Client::new();
    let sent = 24;
    let answers = send_all(&http, &gw.url(), sent, 8, &[], PATIENCE).await;
    let mut broken = 0;
    for a in &answers {
        match (a.stream, a.seen(), a.instance.as_deref()) {
            (_, Seen::Complete, Some("good")) => {}
            // a stream that had started on `hung`: its 3 tokens, then an error event
            (true, Seen::StreamError(msg), Some("hung")) => {
                assert!(msg.contains("stalled"), "{msg}");
                assert_eq!(a.content_events(), 3, "{}", a.body);
                broken += 1;
            }
            // whole requests never reach the client from `hung`: retried after first_byte
            (stream, seen, inst) => panic!("stream {stream}: {seen:?} from {inst:?}"),
        }
    }
    assert!(broken > 0, "some streams met the hung engine");
    let counted = assert_accounted(&gw, sent).await;
    assert_eq!(counted.status("stream_broken"), broken, "{counted:?}");
    assert_eq!(counted.status("success"), sent - broken, "{counted:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn with_only_a_hung_engine_whole_requests_fail_with_a_timeout_error_and_streams_break() {
    let hung = sim_with("hung", MODEL, |c| c.faults.hang_after_tokens = Some(2)).await;
    let mut f = fast_config();
    f.timeouts.first_byte = Duration::from_millis(250);
    f.timeouts.idle = Duration::from_millis(250);
    f.retry.max_attempts = 2;
    f.circuit.failures_to_open = 1000;
    add_pool(&mut f, MODEL, &[("hung", &hung)], 16);
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    let sent = 12;
    let answers = send_all(&http, &gw.url(), sent, 8, &[], PATIENCE).await;
    for a in &answers {
        match (a.stream, a.seen()) {
            (true, Seen::StreamError(msg)) => {
                assert!(msg.contains("stalled"), "{msg}");
                assert_eq!(a.content_events(), 2, "{}", a.body);
            }
            (false, Seen::Error(504, code)) => assert_eq!(code, "upstream_timeout"),
            (stream, seen) => panic!("stream {stream}: {seen:?}"),
        }
    }
    let counted = assert_accounted(&gw, sent).await;
    assert_eq!(counted.status("success"), 0, "{counted:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_engine_refusing_connections_under_load_loses_nothing_that_had_not_started() {
    let slow = |c: &mut inferplane_sim::SimConfig| c.faults.slowdown = 5.0;
    let a = sim_with("a", MODEL, slow).await;
    let b = sim_with("b", MODEL, slow).await;
    let c = sim_with("c", MODEL, slow).await;
    let mut f = fast_config();
    f.retry.max_attempts = 3;
    add_pool(&mut f, MODEL, &[("a", &a), ("b", &b), ("c", &c)], 4);
    let gw = gateway(f, 3).await;
    let http = reqwest::Client::new();
    // six clients, six requests each, one after the other
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let (http, url) = (http.clone(), gw.url());
            tokio::spawn(async move {
                let mut out = Vec::new();
                for i in 0..6 {
                    out.push(send(&http, &url, 10, (w + i) % 2 == 0, &[], PATIENCE).await);
                }
                out
            })
        })
        .collect();
    // `b` goes away while it has work in flight
    wait_instance(&gw, "b", |v| v.inflight >= 2).await;
    b.faults().set(FaultConfig {
        refuse_connections: true,
        ..FaultConfig::default()
    });
    let mut broken = 0;
    let mut after_b = 0;
    for w in workers {
        for a in w.await.unwrap() {
            match (a.stream, a.seen(), a.instance.as_deref()) {
                (_, Seen::Complete, Some(_)) => {
                    after_b += u64::from(a.instance.as_deref() != Some("b"))
                }
                // only a stream that had started on `b` may be lost
                (true, Seen::StreamError(_), Some("b")) => broken += 1,
                (stream, seen, inst) => panic!("stream {stream}: {seen:?} from {inst:?}"),
            }
        }
    }
    assert!(after_b > 0);
    let counted = assert_accounted(&gw, 36).await;
    assert_eq!(counted.status("success"), 36 - broken, "{counted:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn garbage_answers_are_retried_on_a_good_engine_and_every_client_is_served() {
    // one hostile engine next to a good one at a time: a retry avoids the instances that
    // failed the request before, so one retry always lands on the good engine
    for (name, engine) in [
        ("garbage", garbage_engine as fn() -> axum::Router),
        ("wrong_type", wrong_type_engine),
    ] {
        let bad = serve(engine()).await;
        let good = sim("good", MODEL).await;
        let mut f = fast_config();
        f.retry.max_attempts = 2;
        f.circuit.failures_to_open = 1000; // the bad engine stays in rotation
        pool_of(&mut f, &[(name, &bad), ("good", &good.url())]);
        let gw = gateway(f, 2).await;
        let http = reqwest::Client::new();
        let sent = 16;
        for a in send_all(&http, &gw.url(), sent, 4, &[], PATIENCE).await {
            let seen = (a.seen(), a.instance.as_deref());
            assert_eq!(seen, (Seen::Complete, Some("good")), "{name}");
        }
        let counted = assert_accounted(&gw, sent).await;
        assert_eq!(counted.status("success"), sent, "{name}: {counted:?}");
        let text = metrics_text(&gw).await;
        assert!(
            !text.contains("inferplane_retries_total{model=\"sim-model\"} 0"),
            "{name}: the bad engine met requests and they were retried: {text}"
        );
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn a_whole_answer_stalled_after_its_headers_is_retried_elsewhere_after_the_idle_timeout() {
    let bad = serve(stalled_body_engine()).await;
    let good = sim("good", MODEL).await;
    let mut f = fast_config();
    f.retry.max_attempts = 2;
    f.timeouts.idle = Duration::from_millis(200);
    f.circuit.failures_to_open = 1000; // the stalled engine stays in rotation
    pool_of(&mut f, &[("stalled", &bad), ("good", &good.url())]);
    let gw = gateway(f, 2).await;
    let http = reqwest::Client::new();
    let sent = 8;
    for i in 0..sent {
        let (status, inst, body) = post_chat(&http, &gw, &chat(MODEL, 3, false)).await;
        assert_eq!(
            (status, inst.as_deref()),
            (200, Some("good")),
            "request {i}: {body}"
        );
    }
    let counted = assert_accounted(&gw, sent).await;
    assert_eq!(counted.status("success"), sent, "{counted:?}");
    let text = metrics_text(&gw).await;
    assert!(
        !text.contains("inferplane_retries_total{model=\"sim-model\"} 0"),
        "the stalled engine met requests and they were retried: {text}"
    );
    gw.shutdown().await;
}

/// What a client asking for a stream, and one asking for a whole answer, get from a
/// lone hostile engine.
struct Hostile {
    name: &'static str,
    engine: fn() -> axum::Router,
    stream: fn(&Seen) -> bool,
    whole: fn(&Seen) -> bool,
    /// The request's total timeout (what ends a stream that never ends).
    total: Duration,
}

fn stream_error(s: &Seen, needle: &str) -> bool {
    matches!(s, Seen::StreamError(m) if m.contains(needle))
}

fn not_json(s: &Seen) -> bool {
    *s == Seen::Error(502, "upstream_error".into())
}

/// A total timeout no case here reaches (reading 16 MiB of an endless event included).
const LONG: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_lone_engine_answering_garbage_gives_every_client_an_openai_shaped_error() {
    let cases = [
        Hostile {
            name: "invalid JSON",
            engine: garbage_engine,
            stream: not_json,
            whole: not_json,
            total: LONG,
        },
        Hostile {
            name: "wrong content type",
            engine: wrong_type_engine,
            stream: not_json,
            whole: not_json,
            total: LONG,
        },
        Hostile {
            name: "endless event",
            engine: endless_line_engine,
            stream: |s| stream_error(s, "longer than"),
            whole: not_json,
            total: LONG,
        },
        Hostile {
            name: "oversized event",
            engine: oversized_event_engine,
            stream: |s| stream_error(s, "longer than"),
            whole: not_json,
            total: LONG,
        },
        Hostile {
            name: "endless stream",
            engine: endless_stream_engine,
            stream: |s| matches!(s, Seen::StreamError(_)),
            whole: |s| *s == Seen::Error(504, "upstream_timeout".into()),
            total: Duration::from_millis(600),
        },
    ];
    let http = reqwest::Client::new();
    for case in cases {
        let url = serve((case.engine)()).await;
        let mut f = fast_config();
        f.retry.max_attempts = 1;
        f.circuit.failures_to_open = 1000;
        f.timeouts.total = case.total;
        pool_of(&mut f, &[("bad", &url)]);
        let gw = gateway(f, 1).await;
        let sent = 4;
        for a in send_all(&http, &gw.url(), sent, 4, &[], PATIENCE).await {
            let seen = a.seen();
            let ok = if a.stream {
                (case.stream)(&seen)
            } else {
                (case.whole)(&seen)
            };
            assert!(ok, "{}: stream {}: {seen:?}", case.name, a.stream);
        }
        let counted = assert_accounted(&gw, sent).await;
        assert_eq!(counted.status("success"), 0, "{}: {counted:?}", case.name);
        gw.shutdown().await;
    }
}

/// A simulator's `/metrics` samples of `name` (every label set), summed.
async fn sim_metric(url: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[tokio::test]
async fn clients_leaving_mid_request_cancel_the_engines_work_and_are_counted_cancelled() {
    // 200 tokens at a crawl: seconds of work each, unless cancelled
    let a = sim_with("a", MODEL, |c| c.faults.slowdown = 50.0).await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("a", &a)], 16);
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    let streams = 6;
    let wholes = 4;
    let mut readers = Vec::new();
    for _ in 0..streams {
        let resp = http
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(&chat(MODEL, 200, true))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.bytes_stream();
        let first = body.next().await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&first).contains("content"));
        readers.push(body);
    }
    let whole: Vec<_> = (0..wholes)
        .map(|_| {
            let (http, url) = (http.clone(), gw.url());
            tokio::spawn(async move {
                http.post(format!("{url}/v1/chat/completions"))
                    .json(&chat(MODEL, 200, false))
                    .timeout(Duration::from_millis(300))
                    .send()
                    .await
            })
        })
        .collect();
    wait_instance(&gw, "a", |v| v.inflight == streams + wholes).await;
    let url = a.url();
    let running = f64::from(streams + wholes);
    eventually("the engine runs them all", || {
        let url = url.clone();
        async move { sim_metric(&url, "vllm:num_requests_running").await == running }
    })
    .await;
    drop(readers); // the stream clients hang up
    for w in whole {
        assert!(
            w.await.unwrap().unwrap_err().is_timeout(),
            "the whole clients gave up"
        );
    }
    // the engine stops working on them (it would take seconds to finish them)
    eventually("the engine's requests are aborted", || {
        let url = url.clone();
        async move { sim_metric(&url, "vllm:num_requests_running").await == 0.0 }
    })
    .await;
    assert_eq!(
        sim_metric(&a.url(), "vllm:request_success_total").await,
        0.0
    );
    let counted = assert_accounted(&gw, u64::from(streams + wholes)).await;
    assert_eq!(
        counted.status("cancelled"),
        u64::from(streams + wholes),
        "{counted:?}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_shutdown_during_streams_lets_them_finish_and_accounts_for_all() {
    let a = sim_with("a", MODEL, |c| c.faults.slowdown = 10.0).await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("a", &a)], 16);
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    let sent = 12;
    let clients = {
        let (http, url) = (http.clone(), gw.url());
        tokio::spawn(async move { send_all(&http, &url, sent, 30, &[], PATIENCE).await })
    };
    wait_instance(&gw, "a", |v| v.inflight == sent as u32).await;
    let cp = gw.control_plane().clone();
    let url = gw.url();
    assert!(gw.shutdown().await, "finished within the grace period");
    for a in clients.await.unwrap() {
        assert_eq!(a.seen(), Seen::Complete);
        if a.stream {
            assert_eq!(a.content_events(), 30, "every token arrived");
        }
    }
    let counted = assert_accounted_after_shutdown(&cp, sent);
    assert_eq!(counted.status("success"), sent, "{counted:?}");
    assert!(
        http.get(format!("{url}/health")).send().await.is_err(),
        "no new connections"
    );
}

#[tokio::test]
async fn a_shutdown_whose_grace_runs_out_ends_every_request_with_an_openai_shaped_error() {
    let a = sim_with("a", MODEL, |c| c.faults.slowdown = 100.0).await;
    let mut f = fast_config();
    f.server.shutdown_grace = Duration::from_millis(300);
    add_pool(&mut f, MODEL, &[("a", &a)], 16);
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    let sent = 8;
    let clients = {
        let (http, url) = (http.clone(), gw.url());
        tokio::spawn(async move { send_all(&http, &url, sent, 200, &[], PATIENCE).await })
    };
    wait_instance(&gw, "a", |v| v.inflight == sent as u32).await;
    let cp = gw.control_plane().clone();
    assert!(!gw.shutdown().await, "the grace ran out");
    for a in clients.await.unwrap() {
        match a.seen() {
            Seen::StreamError(msg) => assert!(msg.contains("shutting down"), "{msg}"),
            Seen::Error(503, code) => assert!(!a.stream && code == "shutting_down"),
            seen => panic!("stream {}: {seen:?}", a.stream),
        }
    }
    // the streams broke, the whole requests failed: none is left uncounted
    let counted = assert_accounted_after_shutdown(&cp, sent);
    assert_eq!(counted.status("stream_broken"), sent / 2, "{counted:?}");
    assert_eq!(counted.status("upstream_error"), sent / 2, "{counted:?}");
}

#[tokio::test]
async fn re_registering_an_instance_under_streams_finishes_them_and_loses_nothing() {
    let a = sim_with("a", MODEL, |c| c.faults.slowdown = 20.0).await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("a", &a)], 16);
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    let first = 8;
    let clients = {
        let (http, url) = (http.clone(), gw.url());
        tokio::spawn(async move { send_all(&http, &url, first, 20, &[], PATIENCE).await })
    };
    wait_instance(&gw, "a", |v| v.inflight == first as u32).await;
    let admin = format!("{}/admin/instances", gw.url());
    let resp = http.delete(format!("{admin}/a")).send().await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let resp = http
        .post(&admin)
        .json(&json!({"id": "a", "model": MODEL, "url": a.url()}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    wait_ready(&gw, 1).await;
    // new work goes to the new registration while the old streams run
    let later = 8;
    let after = send_all(&http, &gw.url(), later, 4, &[], PATIENCE).await;
    for a in clients.await.unwrap().into_iter().chain(after) {
        assert_eq!(
            (a.seen(), a.instance.as_deref()),
            (Seen::Complete, Some("a"))
        );
    }
    let counted = assert_accounted(&gw, first + later).await;
    assert_eq!(counted.status("success"), first + later, "{counted:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_hung_engine_costs_interactive_requests_one_first_byte_timeout_then_is_ejected() {
    let hung = sim_with("hung", MODEL, |c| c.faults.hang_before_first_token = true).await;
    let good = sim("good", MODEL).await;
    let mut f = fast_config();
    f.timeouts.first_byte = Duration::from_millis(200);
    f.retry.max_attempts = 2; // the one retry
    f.circuit.open_for = Duration::from_secs(60);
    add_pool(&mut f, MODEL, &[("hung", &hung), ("good", &good)], 8);
    let gw = gateway(f, 2).await;
    let http = reqwest::Client::new();
    let sent = 20;
    let interactive = [("x-priority", "high")];
    for i in 0..sent {
        let a = send(&http, &gw.url(), 4, i % 2 == 0, &interactive, PATIENCE).await;
        assert_eq!(
            (a.seen(), a.instance.as_deref()),
            (Seen::Complete, Some("good")),
            "request {i}"
        );
    }
    // at most one first-byte timeout per request, and the circuit took `hung` out after
    // `failures_to_open` of them
    wait_instance(&gw, "hung", |v| v.circuit == "open" && !v.ready).await;
    let text = metrics_text(&gw).await;
    let retries = text
        .lines()
        .find(|l| l.starts_with("inferplane_retries_total{model=\"sim-model\"}"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(retries, 3, "one retry per request that met `hung`: {text}");
    let counted = assert_accounted(&gw, sent).await;
    assert_eq!(counted.status("success"), sent, "{counted:?}");
    gw.shutdown().await;
}
