//! Hostile engines: small raw axum servers on 127.0.0.1:0 that answer health checks and
//! get chat requests wrong in one way each (garbage with a success status, the wrong
//! content type, an event that never ends, an oversized event, a stream that never ends, a
//! body that stalls after its headers).

use super::MODEL;
use axum::Router;
use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use axum::routing::{get, post};
use bytes::Bytes;
use futures_util::StreamExt;
use std::time::Duration;

/// Serves `app` on 127.0.0.1:0 for the rest of the test; returns its base URL.
pub async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// An engine whose every chat answer is `respond()`; `/health` is fine.
fn answering(respond: fn() -> Response) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/v1/chat/completions",
            post(move || async move { respond() }),
        )
}

/// Answers every chat request with `200 application/json` whose body is HTML.
pub fn garbage_engine() -> Router {
    answering(|| {
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("<html>502 Bad Gateway</html>"))
            .unwrap()
    })
}

/// Answers every chat request, streamed or not, with a well-formed event stream sent as
/// `200 text/html`: the right bytes under the wrong content type.
pub fn wrong_type_engine() -> Router {
    answering(|| {
        let chunk = format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"{MODEL}\",\
             \"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"hi\"}}}}]}}\n\ndata: [DONE]\n\n"
        );
        Response::builder()
            .header(header::CONTENT_TYPE, "text/html")
            .body(Body::from(chunk))
            .unwrap()
    })
}

/// Streams one `data:` line that never ends: 64 KiB chunks, up to 16 MiB, no newline.
pub fn endless_line_engine() -> Router {
    answering(|| {
        let first = futures_util::stream::once(async {
            Ok::<_, std::io::Error>(Bytes::from_static(b"data: {\"x\":\""))
        });
        let rest =
            futures_util::stream::iter((0..256).map(|_| Ok(Bytes::from(vec![b'a'; 64 << 10]))));
        sse(Body::from_stream(first.chain(rest)))
    })
}

/// One content event, then an event of 5 MiB (over the gateway's 4 MiB limit for one
/// event) with its blank line, then `[DONE]`.
pub fn oversized_event_engine() -> Router {
    answering(|| {
        let mut big = b"data: {\"x\":\"".to_vec();
        big.extend(std::iter::repeat_n(b'a', 5 << 20));
        big.extend_from_slice(b"\"}\n\n");
        let parts = vec![
            Ok::<_, std::io::Error>(Bytes::from(content_event(0))),
            Ok(Bytes::from(big)),
            Ok(Bytes::from_static(b"data: [DONE]\n\n")),
        ];
        sse(Body::from_stream(futures_util::stream::iter(parts)))
    })
}

/// A stream that never ends: a well-formed content event every 5 ms, forever.
pub fn endless_stream_engine() -> Router {
    answering(|| {
        let events = futures_util::stream::unfold(0u64, |i| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Some((
                Ok::<_, std::io::Error>(Bytes::from(content_event(i))),
                i + 1,
            ))
        });
        sse(Body::from_stream(events))
    })
}

/// Answers `200 application/json` at once with the start of a body, then stalls forever
/// (an engine hung after its headers).
pub fn stalled_body_engine() -> Router {
    answering(|| {
        let first = futures_util::stream::once(async {
            Ok::<_, std::io::Error>(Bytes::from_static(b"{\"id\":\"c\","))
        });
        let never = futures_util::stream::pending();
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(first.chain(never)))
            .unwrap()
    })
}

/// A chat chunk carrying one word of content.
fn content_event(i: u64) -> String {
    format!(
        "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"{MODEL}\",\
         \"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"w{i} \"}}}}]}}\n\n"
    )
}

fn sse(body: Body) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(body)
        .unwrap()
}

/// Adds a pool of `instances` (id, base URL) for [`MODEL`] to `f`.
pub fn pool_of(f: &mut inferplane_gateway::FileConfig, instances: &[(&str, &str)]) {
    let mut text = format!("model = \"{MODEL}\"\n");
    for (id, url) in instances {
        text.push_str(&format!("[[instances]]\nid = \"{id}\"\nurl = \"{url}\"\n"));
    }
    f.pools.push(toml::from_str(&text).unwrap());
}
