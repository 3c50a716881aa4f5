//! Upload handling and hyper's own answers, over raw TCP on loopback: a body over
//! `max_body_bytes` gets its 413 although the client keeps sending (no broken pipe),
//! `Expect: 100-continue` gets a 413 at once when the declared length is too large and a
//! `100 Continue` then the answer when it is not, and requests hyper cannot parse get
//! OpenAI-shaped 400, 414 and 431 answers instead of empty ones.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes (bounded at 5 s): what it sent, or the read error.
async fn read_to_close(tcp: &mut TcpStream) -> Result<String, std::io::Error> {
    let mut out = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out)).await {
        Ok(Ok(_)) | Err(_) => Ok(String::from_utf8_lossy(&out).into_owned()),
        Ok(Err(e)) => Err(e),
    }
}

/// Reads until the end of one answer's head (bounded at 5 s).
async fn read_head(tcp: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    let read = async {
        while !out.ends_with(b"\r\n\r\n") {
            if tcp.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            out.push(byte[0]);
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

async fn small_limit_gateway() -> (inferplane_sim::SimServer, inferplane_gateway::Gateway) {
    let a = sim("a", MODEL).await;
    let mut f = fast_config();
    f.server.max_body_bytes = 64 << 10;
    add_pool(&mut f, MODEL, &[("a", &a)], 4);
    let gw = gateway(f, 1).await;
    (a, gw)
}

#[tokio::test]
async fn an_oversized_body_gets_its_413_while_the_client_is_still_sending() {
    let (_a, gw) = small_limit_gateway().await;
    let total = 4 << 20; // 64 times the limit
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {total}\r\n\r\n"
    );
    let mut tcp = TcpStream::connect(gw.addr()).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    // as many clients do: send the whole body first, read the answer after
    let chunk = vec![b' '; 64 << 10];
    for _ in 0..total / chunk.len() {
        tcp.write_all(&chunk)
            .await
            .expect("the gateway keeps reading while the client sends");
    }
    let answer = read_to_close(&mut tcp)
        .await
        .expect("the answer arrives, not a reset");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("\"code\":\"request_too_large\""),
        "{answer}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn expect_100_continue_is_refused_at_once_when_too_large_and_honoured_otherwise() {
    let (_a, gw) = small_limit_gateway().await;
    // too large: the 413 comes before any of the body is sent
    let mut big = TcpStream::connect(gw.addr()).await.unwrap();
    big.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nexpect: 100-continue\r\ncontent-length: 10000000\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut big).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    // within the limit: 100 Continue, then the body, then the answer
    let body = serde_json::to_vec(&chat(MODEL, 2, false)).unwrap();
    let mut ok = TcpStream::connect(gw.addr()).await.unwrap();
    ok.write_all(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nexpect: 100-continue\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let interim = read_head(&mut ok).await;
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    ok.write_all(&body).await.unwrap();
    let answer = read_to_close(&mut ok).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("chat.completion"), "{answer}");
    gw.shutdown().await;
}

#[tokio::test]
async fn requests_hyper_cannot_parse_get_openai_shaped_answers() {
    let (_a, gw) = small_limit_gateway().await;
    let long_uri = format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(70_000));
    let big_header = format!(
        "GET /health HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(500_000)
    );
    for (request, status, code) in [
        ("GARBAGE\r\n\r\n".to_string(), 400, "invalid_http"),
        (
            "GET /health HTTP/1.1\r\nhost: x\r\nno colon here\r\n\r\n".to_string(),
            400,
            "invalid_http",
        ),
        (long_uri, 414, "uri_too_long"),
        (big_header, 431, "headers_too_large"),
    ] {
        let mut tcp = TcpStream::connect(gw.addr()).await.unwrap();
        // hyper may answer before it has read everything
        let _ = tcp.write_all(request.as_bytes()).await;
        let answer = read_to_close(&mut tcp).await.unwrap();
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{status}: {answer}"
        );
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("content-type: application/json"), "{head}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], code, "{v}");
    }
    // the gateway still serves
    let http = reqwest::Client::new();
    let (status, _, body) = post_chat(&http, &gw, &chat(MODEL, 2, false)).await;
    assert_eq!(status, 200, "{body}");
    gw.shutdown().await;
}
