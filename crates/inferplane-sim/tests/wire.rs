//! Wire tests: a real third-party OpenAI client (async-openai) against the running
//! simulator over loopback, streaming and not, plus `/metrics` with vLLM's names.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, ChatCompletionStreamOptions,
    CreateChatCompletionRequestArgs, FinishReason,
};
use async_openai::types::completions::CreateCompletionRequestArgs;
use common::{MODEL, metric, openai, start};
use futures_util::StreamExt;

fn chat_request(
    content: &str,
    max_tokens: u32,
    stream: bool,
) -> async_openai::types::chat::CreateChatCompletionRequest {
    let mut b = CreateChatCompletionRequestArgs::default();
    b.model(MODEL).max_completion_tokens(max_tokens).messages([
        ChatCompletionRequestUserMessageArgs::default()
            .content(content)
            .build()
            .unwrap()
            .into(),
    ]);
    if stream {
        b.stream(true).stream_options(ChatCompletionStreamOptions {
            include_usage: Some(true),
            include_obfuscation: None,
        });
    }
    b.build().unwrap()
}

#[tokio::test]
async fn async_openai_non_streaming_chat_gets_text_and_exact_usage() {
    let server = start().await;
    let client = openai(&server);
    let prompt = "hello there, simulated engine"; // 29 bytes -> 8 tokens + role prefix
    let resp = client
        .chat()
        .create(chat_request(prompt, 7, false))
        .await
        .unwrap();
    let choice = &resp.choices[0];
    let text = choice.message.content.clone().unwrap();
    assert_eq!(text.split_whitespace().count(), 7, "{text:?}");
    assert_eq!(choice.finish_reason, Some(FinishReason::Length));
    let usage = resp.usage.unwrap();
    assert_eq!(usage.completion_tokens, 7);
    // "user: hello there, simulated engine\n" is 36 bytes = 9 tokens.
    assert_eq!(usage.prompt_tokens, 9);
    assert_eq!(usage.total_tokens, 16);
    assert_eq!(resp.model, MODEL);
}

#[tokio::test]
async fn async_openai_streaming_chat_gets_one_chunk_per_token_then_usage() {
    let server = start().await;
    let client = openai(&server);
    let mut stream = client
        .chat()
        .create_stream(chat_request("stream please", 12, true))
        .await
        .unwrap();
    let mut content = String::new();
    let mut content_chunks = 0;
    let mut finish = None;
    let mut usage = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        if let Some(u) = chunk.usage {
            usage = Some(u);
        }
        for c in chunk.choices {
            if let Some(t) = c.delta.content {
                content.push_str(&t);
                content_chunks += 1;
            }
            if c.finish_reason.is_some() {
                finish = c.finish_reason;
            }
        }
    }
    assert_eq!(content_chunks, 12);
    assert_eq!(content.split_whitespace().count(), 12);
    assert_eq!(finish, Some(FinishReason::Length));
    assert_eq!(usage.unwrap().completion_tokens, 12);
}

#[tokio::test]
async fn async_openai_legacy_completions_stream_and_not() {
    let server = start().await;
    let client = openai(&server);
    let req = CreateCompletionRequestArgs::default()
        .model(MODEL)
        .prompt("once upon a time")
        .max_tokens(5u32)
        .build()
        .unwrap();
    let resp = client.completions().create(req).await.unwrap();
    assert_eq!(resp.choices[0].text.split_whitespace().count(), 5);
    assert_eq!(resp.usage.unwrap().prompt_tokens, 4);

    let req = CreateCompletionRequestArgs::default()
        .model(MODEL)
        .prompt("once upon a time")
        .max_tokens(6u32)
        .stream(true)
        .build()
        .unwrap();
    let mut stream = client.completions().create_stream(req).await.unwrap();
    let mut words = 0;
    while let Some(chunk) = stream.next().await {
        words += chunk.unwrap().choices[0].text.split_whitespace().count();
    }
    assert_eq!(words, 6);
}

#[tokio::test]
async fn async_openai_lists_the_served_model() {
    let server = start().await;
    let models = openai(&server).models().list().await.unwrap();
    assert_eq!(models.data.len(), 1);
    assert_eq!(models.data[0].id, MODEL);
}

#[tokio::test]
async fn repeated_prompts_hit_the_prefix_cache_and_report_cached_tokens() {
    let server = start().await;
    let http = reqwest::Client::new();
    let body = serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "system", "content": "x".repeat(640)}],
        "max_tokens": 2,
    });
    let url = format!("{}/v1/chat/completions", server.url());
    let first: serde_json::Value = http
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let second: serde_json::Value = http
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(
        cached >= 144,
        "second identical prompt reuses cached blocks, got {cached}"
    );
}

#[tokio::test]
async fn metrics_use_vllm_names_and_move_with_traffic() {
    let server = start().await;
    let http = reqwest::Client::new();
    let scrape = || async {
        http.get(format!("{}/metrics", server.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = scrape().await;
    let label = format!("{{model_name=\"{MODEL}\"}}");
    assert_eq!(
        metric(&before, &format!("vllm:prompt_tokens_total{label}")),
        0.0
    );
    assert_eq!(
        metric(&before, &format!("vllm:num_requests_running{label}")),
        0.0
    );
    for name in [
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:generation_tokens_total",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:time_to_first_token_seconds_count",
        "vllm:e2e_request_latency_seconds_count",
    ] {
        metric(&before, &format!("{name}{label}"));
    }

    // A long request keeps running while we scrape.
    let url = format!("{}/v1/completions", server.url());
    let long = http
        .post(&url)
        .json(&serde_json::json!({"model": MODEL, "prompt": "abcd".repeat(50), "max_tokens": 400, "stream": true}))
        .send()
        .await
        .unwrap();
    let mut body = long.bytes_stream();
    body.next().await.unwrap().unwrap(); // first token arrived: it is running now
    let during = scrape().await;
    assert_eq!(
        metric(&during, &format!("vllm:num_requests_running{label}")),
        1.0
    );
    assert!(metric(&during, &format!("vllm:kv_cache_usage_perc{label}")) > 0.0);
    while body.next().await.is_some() {}

    let after = scrape().await;
    assert_eq!(
        metric(&after, &format!("vllm:prompt_tokens_total{label}")),
        50.0
    );
    assert_eq!(
        metric(&after, &format!("vllm:generation_tokens_total{label}")),
        400.0
    );
    assert_eq!(
        metric(&after, &format!("vllm:num_requests_running{label}")),
        0.0
    );
    assert_eq!(
        metric(
            &after,
            &format!("vllm:time_to_first_token_seconds_count{label}")
        ),
        1.0
    );
    assert_eq!(
        metric(
            &after,
            &format!("vllm:e2e_request_latency_seconds_count{label}")
        ),
        1.0
    );
    assert!(after.contains(&format!(
        "vllm:request_success_total{{model_name=\"{MODEL}\",finished_reason=\"length\"}} 1"
    )));
}
