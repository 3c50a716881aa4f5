//! `--tokenizer`: the simulator counts and caches a prompt by a real tokenizer's ids (a tiny
//! one written by the test), chats through its chat template, completions with its special
//! tokens; a template that cannot render falls back to the stand-in, never failing the
//! request.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::{MODEL, start_with};
use inferplane_tokenize::{PromptTokenizer, testing};
use serde_json::{Value, json};
use std::sync::Arc;

async fn prompt_tokens(url: String, body: Value) -> u64 {
    let resp = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    v["usage"]["prompt_tokens"].as_u64().unwrap()
}

#[tokio::test]
async fn prompts_are_counted_by_the_real_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let path = testing::write_tiny_tokenizer(dir.path()).unwrap();
    let tk = Arc::new(PromptTokenizer::load(&path, None).unwrap());
    let server = start_with(|c| c.tokenizer = Some(tk.clone())).await;
    let chat = json!({"model": MODEL, "max_tokens": 1,
        "messages": [{"role": "user", "content": testing::words(100)}]});
    // <s> <|im_start|> user w0..w99 <|im_end|> <|im_start|> assistant
    let url = format!("{}/v1/chat/completions", server.url());
    assert_eq!(prompt_tokens(url, chat.clone()).await, 106);
    let completion = json!({"model": MODEL, "max_tokens": 1, "prompt": "hello there w1"});
    let url = format!("{}/v1/completions", server.url());
    assert_eq!(prompt_tokens(url, completion).await, 3);

    let jinja = dir.path().join("raise.jinja");
    std::fs::write(&jinja, "{{ raise_exception('nope') }}").unwrap();
    let broken = Arc::new(PromptTokenizer::load(&path, Some(&jinja)).unwrap());
    let server = start_with(|c| c.tokenizer = Some(broken.clone())).await;
    let url = format!("{}/v1/chat/completions", server.url());
    let text = format!("user: {}\n", testing::words(100));
    let stand_in = u64::from(inferplane_sim::tokens::count_tokens(&text));
    assert_eq!(prompt_tokens(url, chat).await, stand_in, "the stand-in");
}
