//! Client limits over raw TCP on loopback: a connection that never finishes its headers
//! (slowloris) or sits idle is closed after the header-read timeout; beyond the connection
//! cap a newcomer gets an immediate OpenAI-shaped 503; a body shorter than its
//! Content-Length is a 400 and one that stalls a 408, not a hang.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn limited() -> inferplane_gateway::FileConfig {
    let mut f = fast_config();
    f.server.header_read_timeout = Duration::from_millis(300);
    f.server.body_read_timeout = Duration::from_millis(300);
    f.server.max_connections = Some(3);
    f
}

/// Reads until the peer closes (bounded at 5 s): what it sent.
async fn read_to_close(tcp: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn addr(gw: &inferplane_gateway::Gateway) -> std::net::SocketAddr {
    gw.addr()
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed_after_the_header_timeout() {
    let a = sim("a", MODEL).await;
    let mut f = limited();
    add_pool(&mut f, MODEL, &[("a", &a)], 4);
    let gw = gateway(f, 1).await;
    // slowloris: half a request line, then nothing
    let mut slow = TcpStream::connect(addr(&gw)).await.unwrap();
    slow.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let t0 = tokio::time::Instant::now();
    read_to_close(&mut slow).await;
    assert!(t0.elapsed() < Duration::from_secs(4), "closed, not held");
    // idle after a served request (keep-alive): closed too
    let mut idle = TcpStream::connect(addr(&gw)).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    gw.shutdown().await;
}

#[tokio::test]
async fn beyond_the_connection_cap_a_newcomer_gets_a_503_at_once() {
    let a = sim("a", MODEL).await;
    let mut f = limited();
    f.server.header_read_timeout = Duration::from_secs(5);
    add_pool(&mut f, MODEL, &[("a", &a)], 4);
    let gw = gateway(f, 1).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(addr(&gw)).await.unwrap());
    }
    // the three are accepted (a request on one is served)...
    held[0]
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 12];
    held[0].read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
    // ...a fourth is told, not left hanging
    let mut extra = TcpStream::connect(addr(&gw)).await.unwrap();
    let answer = read_to_close(&mut extra).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(
        answer.contains("\"code\":\"too_many_connections\""),
        "{answer}"
    );
    drop(held);
    // once they close, newcomers are served again
    let http = reqwest::Client::new();
    let mut ok = false;
    for _ in 0..100 {
        if let Ok(r) = http.get(format!("{}/health", gw.url())).send().await
            && r.status() == 200
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ok);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_short_body_is_a_400_and_a_stalled_one_a_408() {
    let a = sim("a", MODEL).await;
    let mut f = limited();
    add_pool(&mut f, MODEL, &[("a", &a)], 4);
    let gw = gateway(f, 1).await;
    let head = "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n";
    // shorter than announced, then the client stops sending
    let mut short = TcpStream::connect(addr(&gw)).await.unwrap();
    short.write_all(head.as_bytes()).await.unwrap();
    short.write_all(b"{\"model\":").await.unwrap();
    short.shutdown().await.unwrap();
    let answer = read_to_close(&mut short).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"error\""), "{answer}");
    // announced, partly sent, then silence with the connection open
    let mut stalled = TcpStream::connect(addr(&gw)).await.unwrap();
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(b"{\"model\":").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    let m = gw.control_plane().metrics().await.unwrap();
    assert_eq!(m.total.completed, 0);
    gw.shutdown().await;
}
