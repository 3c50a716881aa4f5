//! Chaos, bounded in count and time: a pool where one engine fails every request, one
//! hangs before its first token, one is slowed 10x and one is healthy, under concurrent
//! streamed and whole requests, with an engine killed midway. Every client gets an answer
//! (a success or an OpenAI-shaped error), nothing hangs past its timeouts, and every
//! accepted request is accounted for: completed + rejected + failed + cancelled = sent.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::*;
use inferplane_sim::FaultConfig;
use std::time::Duration;

#[tokio::test]
async fn every_request_is_answered_and_accounted_for_under_mixed_faults() {
    let good = sim("good", MODEL).await;
    let failing = sim_with("failing", MODEL, |c| c.faults.fail_all = true).await;
    let hung = sim_with("hung", MODEL, |c| c.faults.hang_before_first_token = true).await;
    let slow = sim_with("slow", MODEL, |c| c.faults.slowdown = 10.0).await;
    let dying = sim("dying", MODEL).await;
    let mut f = fast_config();
    f.timeouts.first_byte = Duration::from_millis(400);
    f.timeouts.total = Duration::from_secs(10);
    f.retry.max_attempts = 3;
    add_pool(
        &mut f,
        MODEL,
        &[
            ("good", &good),
            ("failing", &failing),
            ("hung", &hung),
            ("slow", &slow),
            ("dying", &dying),
        ],
        8,
    );
    let gw = gateway(f, 5).await;
    let http = reqwest::Client::new();
    let sent = 60u64;
    let tasks: Vec<_> = (0..sent)
        .map(|i| {
            let (http, url) = (http.clone(), gw.url());
            tokio::spawn(async move {
                let r = http
                    .post(format!("{url}/v1/chat/completions"))
                    .json(&chat(MODEL, 4, i % 2 == 0))
                    .timeout(Duration::from_secs(20))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let body = r.text().await.unwrap();
                (status, body)
            })
        })
        .collect();
    // an engine dies while requests are in flight
    tokio::time::sleep(Duration::from_millis(100)).await;
    dying.faults().set(FaultConfig {
        refuse_connections: true,
        ..FaultConfig::default()
    });
    let mut ok = 0;
    for t in tasks {
        let (status, body) = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("no client is left hanging")
            .unwrap();
        if status == 200 {
            ok += 1;
        } else {
            let v: serde_json::Value = serde_json::from_str(&body)
                .unwrap_or_else(|_| panic!("an OpenAI-shaped error: {status} {body}"));
            assert!(v["error"]["message"].is_string(), "{v}");
        }
    }
    // retries land on the good and the slow engines
    assert!(ok >= sent * 3 / 4, "{ok} of {sent} served");
    let m = gw.control_plane().metrics().await.unwrap();
    let t = &m.total;
    assert_eq!(
        t.completed + t.rejected + t.failed + t.cancelled,
        sent,
        "every request accounted for: {t:?}"
    );
    gw.shutdown().await;
}
