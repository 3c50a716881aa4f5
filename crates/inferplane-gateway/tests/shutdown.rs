//! Graceful shutdown: new connections are refused, an in-flight stream finishes.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::*;
use futures_util::StreamExt;

#[tokio::test]
async fn shutdown_lets_an_in_flight_stream_finish_and_refuses_new_connections() {
    let a = sim("a", MODEL).await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("a", &a)], 4);
    let gw = gateway(f, 1).await;
    let url = gw.url();
    let resp = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .json(&chat(MODEL, 100, true))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("content"));
    let shutdown = tokio::spawn(gw.shutdown());
    let mut text = String::from_utf8_lossy(&first).to_string();
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert_eq!(
        text.matches("\"content\"").count(),
        100,
        "every token arrived"
    );
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert!(shutdown.await.unwrap(), "finished within the grace period");
    let after = reqwest::Client::new()
        .get(format!("{url}/health"))
        .send()
        .await;
    assert!(after.is_err(), "no new connections after shutdown");
}

#[tokio::test]
async fn a_stream_still_running_when_the_grace_runs_out_ends_with_an_error_event() {
    // a stream of 200 tokens at a crawl outlives a 300 ms grace
    let a = sim_with("a", MODEL, |c| c.faults.slowdown = 100.0).await;
    let mut f = fast_config();
    f.server.shutdown_grace = std::time::Duration::from_millis(300);
    add_pool(&mut f, MODEL, &[("a", &a)], 4);
    let gw = gateway(f, 1).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(&chat(MODEL, 200, true))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    let shutdown = tokio::spawn(gw.shutdown());
    let mut text = String::from_utf8_lossy(&first).to_string();
    let read = async {
        while let Some(Ok(chunk)) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .unwrap();
    assert!(!shutdown.await.unwrap(), "the grace ran out");
    assert!(!text.contains("[DONE]"), "it did not finish");
    assert!(
        text.trim_end().ends_with('}')
            && text.contains("\"error\"")
            && text.contains("shutting down"),
        "{}",
        &text[text.len().saturating_sub(300)..]
    );
}
