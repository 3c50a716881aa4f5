//! What a client received, classified: a complete answer, a stream that ended with an
//! OpenAI-shaped error event, or an OpenAI-shaped error; anything else fails the test.

use std::time::Duration;

/// One client's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Whether it asked for a stream.
    pub stream: bool,
    /// The HTTP status.
    pub status: u16,
    /// `x-inferplane-instance`, when an instance answered.
    pub instance: Option<String>,
    /// The whole body.
    pub body: String,
}

/// What an [`Answer`] amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A whole JSON completion, or a stream that ended with `data: [DONE]`.
    Complete,
    /// A 200 stream whose last event is an OpenAI-shaped error: its message.
    StreamError(String),
    /// An OpenAI-shaped error body: status and `error.code`.
    Error(u16, String),
}

impl Answer {
    /// Classifies the answer; panics (fails the test) on anything not OpenAI-shaped.
    pub fn seen(&self) -> Seen {
        let b = &self.body;
        if self.status != 200 {
            let v: serde_json::Value = serde_json::from_str(b)
                .unwrap_or_else(|_| panic!("an OpenAI-shaped error: {} {b}", self.status));
            assert!(v["error"]["message"].is_string(), "{v}");
            let code = v["error"]["code"].as_str().unwrap_or_default().to_string();
            return Seen::Error(self.status, code);
        }
        if !self.stream {
            let v: serde_json::Value =
                serde_json::from_str(b).unwrap_or_else(|_| panic!("a JSON completion: {b}"));
            assert!(v["choices"][0]["message"].is_object(), "{v}");
            return Seen::Complete;
        }
        if b.ends_with("data: [DONE]\n\n") {
            assert!(!b.contains("{\"error\""), "no error before [DONE]: {b}");
            return Seen::Complete;
        }
        let last = b.trim_end().rsplit("\n\n").next().unwrap_or_default();
        let data = last
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("a stream ends with [DONE] or an error event: {b}"));
        let v: serde_json::Value = serde_json::from_str(data)
            .unwrap_or_else(|_| panic!("an OpenAI-shaped error event: {last}"));
        let msg = v["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("an OpenAI-shaped error event: {last}"));
        Seen::StreamError(msg.to_string())
    }

    /// Content events relayed (streams).
    pub fn content_events(&self) -> usize {
        self.body.matches("\"content\"").count()
    }
}

/// Sends a chat request for `max_tokens` with `headers`; waits for its whole answer at
/// most `timeout` (past it the test fails: a client left hanging).
pub async fn send(
    http: &reqwest::Client,
    url: &str,
    max_tokens: u32,
    stream: bool,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Answer {
    let mut req = http
        .post(format!("{url}/v1/chat/completions"))
        .json(&super::chat(super::MODEL, max_tokens, stream))
        .timeout(timeout);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("an answer within {timeout:?}: {e}"));
    let status = r.status().as_u16();
    let instance = r
        .headers()
        .get("x-inferplane-instance")
        .map(|v| v.to_str().unwrap().to_string());
    let body = r
        .text()
        .await
        .unwrap_or_else(|e| panic!("a whole answer within {timeout:?}: {e}"));
    Answer {
        stream,
        status,
        instance,
        body,
    }
}

/// Sends `n` chat requests at once (even ones streamed) and collects every answer.
pub async fn send_all(
    http: &reqwest::Client,
    url: &str,
    n: u64,
    max_tokens: u32,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Vec<Answer> {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (http, url, headers) = (http.clone(), url.to_string(), headers.clone());
            tokio::spawn(async move {
                let h: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                send(&http, &url, max_tokens, i % 2 == 0, &h, timeout).await
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}
