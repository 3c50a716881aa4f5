//! Engine facts over real HTTP, as vLLM reports them: `max_model_len` on the `/v1/models`
//! card, `vllm:cache_config_info` and `vllm:num_preemptions_total` on `/metrics`; and the
//! simulator's `min_tokens` convention (exact output length), streaming and not.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::{MODEL, metric, start_with};
use futures_util::StreamExt;
use serde_json::{Value, json};

async fn get_text(url: String) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

async fn post(url: &str, body: &Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// A streamed answer: content chunks, finish reason, usage's completion tokens.
async fn post_stream(url: &str, body: &Value) -> (u32, String, u64) {
    let resp = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let (mut chunks, mut finish, mut usage) = (0, String::new(), 0);
    for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
            usage = n;
        }
        for c in v["choices"].as_array().unwrap() {
            let piece = c["delta"]["content"].as_str().or(c["text"].as_str());
            if piece.is_some_and(|t| !t.is_empty()) {
                chunks += 1;
            }
            if let Some(f) = c["finish_reason"].as_str() {
                finish = f.to_string();
            }
        }
    }
    (chunks, finish, usage)
}

fn chat(max_tokens: u32, min_tokens: Value, stream: bool) -> Value {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "how long is this answer?"}],
        "max_tokens": max_tokens,
        "min_tokens": min_tokens,
        "stream": stream,
        "stream_options": {"include_usage": true},
    })
}

fn completion(max_tokens: u32, min_tokens: Value, stream: bool) -> Value {
    json!({
        "model": MODEL,
        "prompt": "once upon a time",
        "max_tokens": max_tokens,
        "min_tokens": min_tokens,
        "stream": stream,
        "stream_options": {"include_usage": true},
    })
}

#[tokio::test]
async fn models_card_carries_the_profile_max_model_len_in_vllm_shape() {
    let server = start_with(|c| {
        c.profile.max_model_len = 4321;
        c.instance_id = "sim-7".into();
    })
    .await;
    let v: Value = reqwest::get(format!("{}/v1/models", server.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    let card = &v["data"][0];
    assert_eq!(card["max_model_len"], 4321);
    assert_eq!(card["id"], MODEL);
    assert_eq!(card["root"], MODEL);
    assert_eq!(card["object"], "model");
    assert!(
        card["owned_by"].is_string() && card["created"].is_u64(),
        "{v}"
    );
    assert!(card["parent"].is_null(), "{v}");
    let perm = &card["permission"][0];
    assert_eq!(perm["object"], "model_permission");
    assert_eq!(perm["id"], "modelperm-sim-7");
    assert_eq!(perm["allow_sampling"], true);
}

#[tokio::test]
async fn cache_config_info_reports_block_size_and_the_profile_block_count() {
    let server = start_with(|c| c.profile.kv_blocks = 1234).await;
    let text = get_text(format!("{}/metrics", server.url())).await;
    let line = "vllm:cache_config_info{block_size=\"16\",cache_dtype=\"auto\",\
                enable_prefix_caching=\"True\",num_gpu_blocks=\"1234\"}";
    assert_eq!(metric(&text, line), 1.0);
    assert!(
        text.contains("# TYPE vllm:cache_config_info gauge"),
        "{text}"
    );
}

#[tokio::test]
async fn min_tokens_gives_exactly_that_many_tokens_and_stop_below_max_tokens() {
    // A stop seed would cut answers short at a seeded length: min_tokens overrides it.
    let server = start_with(|c| c.stop_seed = Some(3)).await;
    let chat_url = format!("{}/v1/chat/completions", server.url());
    let completions_url = format!("{}/v1/completions", server.url());
    for (min, max, finish) in [(5, 40, "stop"), (40, 40, "length"), (1, 1, "length")] {
        let (status, v) = post(&chat_url, &chat(max, json!(min), false)).await;
        assert_eq!(status, 200, "{v}");
        let text = v["choices"][0]["message"]["content"].as_str().unwrap();
        assert_eq!(text.split_whitespace().count(), min as usize, "{v}");
        assert_eq!(v["usage"]["completion_tokens"], min, "{v}");
        assert_eq!(v["choices"][0]["finish_reason"], finish, "{v}");

        let (status, v) = post(&completions_url, &completion(max, json!(min), false)).await;
        assert_eq!(status, 200, "{v}");
        let text = v["choices"][0]["text"].as_str().unwrap();
        assert_eq!(text.split_whitespace().count(), min as usize, "{v}");
        assert_eq!(v["usage"]["completion_tokens"], min, "{v}");
        assert_eq!(v["choices"][0]["finish_reason"], finish, "{v}");

        for (url, body) in [
            (&chat_url, chat(max, json!(min), true)),
            (&completions_url, completion(max, json!(min), true)),
        ] {
            let got = post_stream(url, &body).await;
            assert_eq!(got, (min, finish.to_string(), u64::from(min)), "{body}");
        }
    }
}

#[tokio::test]
async fn zero_or_null_min_tokens_means_no_minimum() {
    let server = start_with(|_| {}).await;
    let url = format!("{}/v1/chat/completions", server.url());
    for min in [json!(0), json!(null)] {
        let (status, v) = post(&url, &chat(9, min, false)).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["usage"]["completion_tokens"], 9);
        assert_eq!(v["choices"][0]["finish_reason"], "length");
    }
}

#[tokio::test]
async fn bad_min_tokens_gets_a_400_naming_the_field() {
    let server = start_with(|_| {}).await;
    let chat_url = format!("{}/v1/chat/completions", server.url());
    let completions_url = format!("{}/v1/completions", server.url());
    let cases = [
        (
            chat(10, json!(-1), false),
            "greater than or equal to 0, got -1",
        ),
        (chat(10, json!(2.5), false), "must be an integer"),
        (chat(10, json!("3"), true), "must be an integer"),
        (
            chat(10, json!(11), true),
            "min_tokens must be less than or equal to max_tokens=10, got 11",
        ),
        (
            completion(4, json!(5), false),
            "min_tokens must be less than or equal to max_tokens=4",
        ),
        (completion(4, json!(-3), true), "greater than or equal to 0"),
        // Without max_tokens, legacy completions default to 16.
        (
            json!({"model": MODEL, "prompt": "x", "min_tokens": 17}),
            "max_tokens=16, got 17",
        ),
    ];
    for (body, needle) in cases {
        let url = if body.get("messages").is_some() {
            &chat_url
        } else {
            &completions_url
        };
        let (status, v) = post(url, &body).await;
        assert_eq!(status, 400, "{body} -> {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert_eq!(v["error"]["param"], "min_tokens", "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{body}: {msg:?} lacks {needle:?}");
    }
}

#[tokio::test]
async fn preemption_counter_moves_when_the_kv_cache_is_too_small_for_two_requests() {
    // 8 blocks = 128 tokens. Each request (16 prompt + 100 output = 116 tokens) fits alone
    // but needs all 8 blocks at its end, so any overlap forces a recompute preemption.
    // 20 ms per step: the first request decodes for 2 s, a window wide enough for the
    // second to overlap it however loaded the machine is.
    let server = start_with(|c| {
        c.profile.kv_blocks = 8;
        c.profile.decode_step_base_secs = 0.02;
    })
    .await;
    let url = format!("{}/v1/completions", server.url());
    let body = json!({"model": MODEL, "prompt": "a".repeat(64), "max_tokens": 100, "stream": true});
    let metrics_url = format!("{}/metrics", server.url());
    let label = format!("{{model_name=\"{MODEL}\"}}");
    let before = get_text(metrics_url.clone()).await;
    assert_eq!(
        metric(&before, &format!("vllm:num_preemptions_total{label}")),
        0.0
    );

    let http = reqwest::Client::new();
    let first = http.post(&url).json(&body).send().await.unwrap();
    let mut first = first.bytes_stream();
    first.next().await.unwrap().unwrap(); // its first token is out: it holds blocks now
    let second = post_stream(&url, &body);
    let rest_of_first = async { while first.next().await.is_some() {} };
    let ((chunks, finish, usage), ()) = tokio::join!(second, rest_of_first);
    assert_eq!((chunks, finish.as_str(), usage), (100, "length", 0));

    let after = get_text(metrics_url).await;
    assert!(
        metric(&after, &format!("vllm:num_preemptions_total{label}")) >= 1.0,
        "{after}"
    );
    assert_eq!(
        metric(&after, &format!("vllm:generation_tokens_total{label}")),
        200.0,
        "a preempted request is recomputed, not re-streamed"
    );
}
