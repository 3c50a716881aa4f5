//! Engines that misbehave (stand-ins on loopback that speak just enough HTTP to do it): a
//! 200 that is not JSON becomes a 502 (or is retried on a good engine), an endless SSE
//! line without a delimiter ends the stream with an error event instead of growing the
//! gateway's memory, a request written on a connection the engine was closing is sent
//! again on a fresh one without counting against the engine, and every request is
//! accounted for.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;
#[path = "engine_info/standins.rs"]
#[allow(dead_code)] // this binary uses a few of the stand-ins
mod standins;

use axum::Router;
use axum::routing::get;
use common::engines::{endless_line_engine, garbage_engine, pool_of};
use common::*;
use serde_json::json;

#[tokio::test]
async fn a_success_status_with_a_body_that_is_not_json_is_a_502_not_a_success() {
    let bad = standins::serve(garbage_engine()).await;
    let mut f = fast_config();
    f.retry.max_attempts = 1;
    pool_of(&mut f, &[("bad", &bad)]);
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    let (status, _, body) = post_chat(&http, &gw, &chat(MODEL, 2, false)).await;
    assert_eq!(status, 502, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "upstream_error");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("not JSON"),
        "{v}"
    );
    let m = gw.control_plane().metrics().await.unwrap();
    assert_eq!((m.total.completed, m.total.failed), (0, 1));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_garbage_answer_is_retried_on_a_good_engine() {
    let bad = standins::serve(garbage_engine()).await;
    let good = sim("good", MODEL).await;
    let mut f = fast_config();
    f.retry.max_attempts = 2;
    let good_url = good.url();
    pool_of(&mut f, &[("bad", &bad), ("good", &good_url)]);
    let gw = gateway(f, 2).await;
    let http = reqwest::Client::new();
    for _ in 0..6 {
        let (status, inst, body) = post_chat(&http, &gw, &chat(MODEL, 2, false)).await;
        assert_eq!((status, inst.as_deref()), (200, Some("good")), "{body}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn an_endless_event_ends_the_stream_with_an_error_event() {
    let bad = standins::serve(endless_line_engine()).await;
    let mut f = fast_config();
    f.retry.max_attempts = 1;
    pool_of(&mut f, &[("bad", &bad)]);
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(&json!({"model": MODEL, "stream": true, "max_tokens": 4,
            "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await.unwrap();
    // the gateway relays nothing of the endless event: only its error event
    assert!(body.len() < 4096, "{} bytes relayed", body.len());
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.starts_with("data: {\"error\"") && text.contains("longer than"),
        "{text}"
    );
    let m = gw.control_plane().metrics().await.unwrap();
    assert_eq!(m.total.completed, 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn an_oversized_or_slow_metrics_page_costs_neither_memory_nor_health_checks() {
    // a 5 MiB /metrics page that is also slow to start; the engine serves requests fine
    let engine = standins::engine(Router::new().route(
        "/metrics",
        get(|| async {
            tokio::time::sleep(std::time::Duration::from_millis(400)).await;
            let mut page = String::from("vllm:num_requests_running 3\n");
            page.push_str(&"# filler\n".repeat((5 << 20) / 9));
            page
        }),
    ));
    let url = standins::serve(engine).await;
    let mut f = fast_config();
    f.scrape.timeout = std::time::Duration::from_secs(2);
    pool_of(&mut f, &[("big", &url)]);
    let gw = gateway(f, 1).await;
    // health checks every 50 ms are not held up by the slow scrape
    wait_instance(&gw, "big", |v| v.ready).await;
    let http = reqwest::Client::new();
    let (status, _, body) = post_chat(&http, &gw, &chat(MODEL, 2, false)).await;
    assert_eq!(status, 200, "{body}");
    // the page was refused: its load is unknown, not the 3 it claims
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let views = gw.control_plane().instances().await.unwrap();
    assert_eq!(views[0].engine_running, None);
    gw.shutdown().await;
}

/// A raw HTTP/1.1 engine that closes each keep-alive connection when a second chat
/// request arrives on it, without answering: what a client sees when an engine closes an
/// idle connection just as a request is written on it. Health checks are answered.
async fn closing_engine() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chats = 0;
                loop {
                    // one request: head, then its content-length of body
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let mut chunk = [0u8; 4096];
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < end + 4 + len {
                        let mut chunk = [0u8; 4096];
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + 4 + len);
                    let body = if head.starts_with("post /v1/chat/completions") {
                        chats += 1;
                        if chats == 2 {
                            return; // closed with the request unanswered
                        }
                        r#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#
                    } else {
                        "ok"
                    };
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if tcp.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_request_on_a_connection_the_engine_closed_is_resent_without_blaming_the_engine() {
    let engine = closing_engine().await;
    let mut f = fast_config();
    f.retry.max_attempts = 1; // the resend is not a retry
    pool_of(&mut f, &[("closing", &engine)]);
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    for _ in 0..6 {
        let (status, inst, body) = post_chat(&http, &gw, &chat(MODEL, 2, false)).await;
        assert_eq!((status, inst.as_deref()), (200, Some("closing")), "{body}");
    }
    let text = metrics_text(&gw).await;
    let failures: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("inferplane_instance_requests_total") && l.contains("failure"))
        .filter(|l| !l.ends_with(" 0"))
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
    let m = gw.control_plane().metrics().await.unwrap();
    assert_eq!((m.total.completed, m.total.failed), (6, 0));
    gw.shutdown().await;
}
