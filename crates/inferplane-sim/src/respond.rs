//! Building OpenAI responses from engine outputs: the non-streaming JSON body, and the
//! server-sent-event stream (one chunk per token, a final chunk with `finish_reason`, an
//! optional `usage` chunk, then `data: [DONE]`), for both chat and legacy completions.

use crate::driver::{EngineHandle, Output};
use crate::engine::{FinishReason, SeqId};
use crate::metrics::SimMetrics;
use crate::openai::Usage;
use crate::tokens::token_text;
use bytes::Bytes;
use futures_util::Stream;
use serde_json::json;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Which API shape to answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completions,
}

/// Everything needed to answer one admitted request.
#[derive(Debug)]
pub struct Answer {
    /// API shape.
    pub api: Api,
    /// Response id (`chatcmpl-...` or `cmpl-...`).
    pub id: String,
    /// Model name.
    pub model: Arc<str>,
    /// Unix seconds for `created`.
    pub created: u64,
    /// Prompt tokens, for `usage`.
    pub prompt_tokens: u32,
    /// Seeds the pseudo-text.
    pub content_hash: u64,
    /// Send a final `usage` chunk when streaming.
    pub include_usage: bool,
    /// Stall after this many tokens (fault injection).
    pub hang_after: Option<u32>,
    /// When the request arrived, for TTFT and latency metrics.
    pub started: Instant,
    /// Metrics to record into.
    pub metrics: Arc<SimMetrics>,
    /// Aborts the request in the engine if the answer is dropped before it finishes.
    pub guard: AbortGuard,
}

/// Aborts an engine request on drop unless disarmed.
#[derive(Debug)]
pub struct AbortGuard {
    engine: EngineHandle,
    id: SeqId,
    armed: bool,
}

impl AbortGuard {
    /// Guards request `id`.
    pub fn new(engine: EngineHandle, id: SeqId) -> Self {
        AbortGuard {
            engine,
            id,
            armed: true,
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if self.armed {
            self.engine.abort(self.id);
        }
    }
}

impl Answer {
    fn object(&self, streaming: bool) -> &'static str {
        match (self.api, streaming) {
            (Api::Chat, false) => "chat.completion",
            (Api::Chat, true) => "chat.completion.chunk",
            (Api::Completions, _) => "text_completion",
        }
    }

    fn choice(
        &self,
        text: Option<&str>,
        finish: Option<FinishReason>,
        first: bool,
    ) -> serde_json::Value {
        let finish = finish.map(FinishReason::as_str);
        match self.api {
            Api::Chat => {
                let delta = match (text, first) {
                    (Some(t), true) => json!({"role": "assistant", "content": t}),
                    (Some(t), false) => json!({"content": t}),
                    (None, _) => json!({}),
                };
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            Api::Completions => {
                json!({"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish})
            }
        }
    }

    fn chunk(&self, choices: serde_json::Value, usage: Option<Usage>) -> Bytes {
        let mut v = json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": &*self.model,
            "choices": choices,
        });
        if let Some(u) = usage {
            v["usage"] = json!(u);
        }
        Bytes::from(format!("data: {v}\n\n"))
    }

    fn record_first_token(&self) {
        self.metrics
            .ttft
            .observe(self.started.elapsed().as_secs_f64());
    }

    fn record_finish(&self, reason: FinishReason) {
        self.metrics
            .e2e
            .observe(self.started.elapsed().as_secs_f64());
        self.metrics.finished(reason);
    }

    /// Collects every token and returns the non-streaming JSON body; `None` if the engine
    /// stopped first or a hang fault swallows the answer (the caller then waits forever).
    pub async fn collect(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Output>,
    ) -> Option<serde_json::Value> {
        let mut text = String::new();
        while let Some(out) = rx.recv().await {
            match out {
                Output::Token { index } => {
                    if index == 0 {
                        self.record_first_token();
                    }
                    if self.hang_after.is_some_and(|k| index >= k) {
                        return None;
                    }
                    text.push_str(token_text(self.content_hash, index));
                    text.push(' ');
                }
                Output::Finished {
                    reason,
                    cached_tokens,
                    completion_tokens,
                } => {
                    self.guard.disarm();
                    self.record_finish(reason);
                    let usage = Usage::new(self.prompt_tokens, completion_tokens, cached_tokens);
                    let choice = match self.api {
                        Api::Chat => json!({
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "logprobs": null,
                            "finish_reason": reason.as_str(),
                        }),
                        Api::Completions => json!({
                            "index": 0, "text": text, "logprobs": null,
                            "finish_reason": reason.as_str(),
                        }),
                    };
                    return Some(json!({
                        "id": self.id,
                        "object": self.object(false),
                        "created": self.created,
                        "model": &*self.model,
                        "choices": [choice],
                        "usage": usage,
                    }));
                }
            }
        }
        None
    }

    /// The SSE body: a stream of `data:` frames.
    pub fn stream(
        self,
        rx: mpsc::UnboundedReceiver<Output>,
    ) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + 'static {
        struct St {
            answer: Answer,
            rx: Option<mpsc::UnboundedReceiver<Output>>,
            tail: Vec<Bytes>,
            done: bool,
        }
        let st = St {
            answer: self,
            rx: Some(rx),
            tail: Vec::new(),
            done: false,
        };
        futures_util::stream::unfold(st, |mut st| async move {
            if let Some(b) = st.tail.pop() {
                return Some((Ok(b), st));
            }
            if st.done {
                return None;
            }
            let rx = st.rx.as_mut()?;
            match rx.recv().await {
                Some(Output::Token { index }) => {
                    let a = &st.answer;
                    if a.hang_after.is_some_and(|k| index >= k) {
                        // Stall forever; dropping the receiver lets the engine abort.
                        drop(st.rx.take());
                        std::future::pending::<()>().await;
                        return None;
                    }
                    if index == 0 {
                        a.record_first_token();
                    }
                    let mut word = String::from(token_text(a.content_hash, index));
                    word.push(' ');
                    let frame = a.chunk(json!([a.choice(Some(&word), None, index == 0)]), None);
                    Some((Ok(frame), st))
                }
                Some(Output::Finished {
                    reason,
                    cached_tokens,
                    completion_tokens,
                }) => {
                    st.answer.guard.disarm();
                    st.answer.record_finish(reason);
                    let a = &st.answer;
                    let last = a.chunk(json!([a.choice(None, Some(reason), false)]), None);
                    // `tail` is popped from the back.
                    st.tail.push(Bytes::from_static(b"data: [DONE]\n\n"));
                    if a.include_usage {
                        let usage = Usage::new(a.prompt_tokens, completion_tokens, cached_tokens);
                        st.tail.push(a.chunk(json!([]), Some(usage)));
                    }
                    st.done = true;
                    Some((Ok(last), st))
                }
                None => None,
            }
        })
    }
}
