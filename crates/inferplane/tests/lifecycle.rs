//! The replica lifecycle an orchestrator drives, on the real `inferplane serve` in front
//! of a real `inferplane sim`: `/ready` fails until an instance is ready; on SIGTERM it
//! fails at once while the gateway keeps serving for `shutdown_delay` (so a load balancer
//! can take the replica out first), then the gateway drains: the stream in flight
//! finishes, new connections are refused, and the process exits 0.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{gateway, sim};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const MODEL: &str = "m";

/// `GET /ready`: its status and `error.code` (or "ready").
async fn ready(http: &reqwest::Client, url: &str) -> Option<(u16, String)> {
    let r = http
        .get(format!("{url}/ready"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    let body: Value = r.json().await.ok()?;
    let code = if body["ready"] == true {
        "ready".to_string()
    } else {
        body["error"]["code"].as_str().unwrap_or("?").to_string()
    };
    Some((status, code))
}

/// Polls `/ready` (every 20 ms, up to `limit`) until `want` holds.
async fn ready_until(
    http: &reqwest::Client,
    url: &str,
    limit: Duration,
    want: impl Fn(&(u16, String)) -> bool,
) -> (u16, String) {
    let until = Instant::now() + limit;
    let mut last = None;
    while Instant::now() < until {
        last = ready(http, url).await;
        if last.as_ref().is_some_and(&want) {
            return last.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("/ready never became what was wanted; last: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_fails_ready_first_serves_through_the_delay_then_drains_and_exits_zero() {
    let (sim, urls) = sim(&["--model", MODEL, "--port", "0", "--unhealthy"], 1);
    let sim_url = urls[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_delay = \"3s\"\n\
             shutdown_grace = \"20s\"\n[health]\ninterval = \"50ms\"\nhealthy_after = 1\n\
             [[pools]]\nmodel = \"{MODEL}\"\n[[pools.instances]]\nid = \"sim-0\"\n\
             url = \"{sim_url}\"\n"
        ),
    )
    .unwrap();
    let (mut gw, url) = gateway(&config);
    let http = reqwest::Client::new();

    // the engine answers its health checks with 503: not ready, saying why
    let (status, code) = ready_until(&http, &url, Duration::from_secs(10), |_| true).await;
    assert_eq!((status, code.as_str()), (503, "no_ready_instance"));
    let healthy = http
        .delete(format!("{sim_url}/sim/faults"))
        .send()
        .await
        .unwrap();
    assert!(healthy.status().is_success());
    ready_until(&http, &url, Duration::from_secs(10), |(s, _)| *s == 200).await;

    // a long stream in flight when the signal comes (the sim decodes a few ms a token)
    let stream = {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            let r = http
                .post(format!("{url}/v1/chat/completions"))
                .json(&json!({"model": MODEL, "stream": true, "max_tokens": 600,
                    "messages": [{"role": "user", "content": "a long answer"}]}))
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    gw.signal("TERM");

    let (status, code) = ready_until(&http, &url, Duration::from_secs(1), |(s, _)| *s == 503).await;
    assert_eq!((status, code.as_str()), (503, "shutting_down"));
    // still serving during the delay: a load balancer that has not noticed loses nothing
    let r = http
        .post(format!("{url}/v1/chat/completions"))
        .json(&json!({"model": MODEL, "max_tokens": 4,
            "messages": [{"role": "user", "content": "still there?"}]}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "served during the shutdown delay");

    let body = stream.await.unwrap();
    assert!(
        body.trim_end().ends_with("data: [DONE]"),
        "the stream in flight finished: {}",
        &body[body.len().saturating_sub(200)..]
    );
    let status = gw
        .wait_for_exit(Duration::from_secs(25))
        .expect("the gateway exited after draining");
    assert!(status.success(), "exit status {status}");
    assert!(
        http.get(format!("{url}/health"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_err(),
        "nothing listens after the exit"
    );
    drop(sim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_replica_loses_nothing_that_had_not_started_streaming() {
    let (_sim, urls) = sim(&["--model", MODEL, "--port", "0"], 1);
    let dir = tempfile::tempdir().unwrap();
    let mut gws = Vec::new();
    for r in 0..2 {
        let config = dir.path().join(format!("gateway-{r}.toml"));
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n[health]\ninterval = \"50ms\"\n\
                 healthy_after = 1\n[[pools]]\nmodel = \"{MODEL}\"\n\
                 [[pools.instances]]\nid = \"sim-0\"\nurl = \"{}\"\n",
                urls[0]
            ),
        )
        .unwrap();
        gws.push(gateway(&config));
    }
    let http = reqwest::Client::new();
    for (_, url) in &gws {
        ready_until(&http, url, Duration::from_secs(10), |(s, _)| *s == 200).await;
    }
    let targets: Vec<String> = gws.iter().map(|(_, u)| u.clone()).collect();
    // clients that go to either replica and, on an error before any answer, to the other
    let clients: Vec<_> = (0..6)
        .map(|c| {
            let (http, targets) = (http.clone(), targets.clone());
            tokio::spawn(async move {
                let (mut ok, mut cut, mut retried) = (0u32, 0u32, 0u32);
                for i in 0..30usize {
                    let stream = i % 2 == 0;
                    let mut done = false;
                    for attempt in 0..4usize {
                        let url = &targets[(c + i + attempt) % targets.len()];
                        let sent = http
                            .post(format!("{url}/v1/chat/completions"))
                            .json(&json!({"model": MODEL, "stream": stream, "max_tokens": 40,
                                "messages": [{"role": "user", "content": "hi"}]}))
                            .timeout(Duration::from_secs(20))
                            .send()
                            .await;
                        let Ok(r) = sent else {
                            retried += 1; // nothing came back: safe to send elsewhere
                            continue;
                        };
                        assert_eq!(r.status(), 200);
                        match r.text().await {
                            Ok(body) if !stream || body.trim_end().ends_with("data: [DONE]") => {
                                ok += 1
                            }
                            // the stream had started on the replica that died: lost
                            _ if stream => cut += 1,
                            Ok(body) => panic!("a whole answer was cut: {body}"),
                            Err(_) => {
                                retried += 1;
                                continue;
                            }
                        }
                        done = true;
                        break;
                    }
                    assert!(done, "a request found no replica in 4 attempts");
                }
                (ok, cut, retried)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    gws[0].0.signal("KILL");
    let (mut ok, mut cut, mut retried) = (0, 0, 0);
    for c in clients {
        let (o, x, r) = c.await.unwrap();
        (ok, cut, retried) = (ok + o, cut + x, retried + r);
    }
    eprintln!("{ok} served, {cut} streams cut mid-way by the kill, {retried} retried elsewhere");
    assert_eq!(
        ok + cut,
        180,
        "every request was served or was a stream already under way"
    );
    assert!(
        cut <= 6,
        "only the streams open on the killed replica were lost: {cut}"
    );
}
