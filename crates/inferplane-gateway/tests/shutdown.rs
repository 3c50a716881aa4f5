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
