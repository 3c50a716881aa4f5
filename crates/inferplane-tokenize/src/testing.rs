//! A tiny tokenizer for tests (nothing fetched): a `WordLevel` model over a small vocabulary
//! with a whitespace pre-tokenizer, ChatML special tokens, and a `tokenizer_config.json`
//! beside it with a ChatML chat template that starts with `bos_token`.

use std::path::{Path, PathBuf};

/// Words of the tiny vocabulary besides `w0` .. `w499` (ids from 1; `[UNK]` is 0).
pub const WORDS: [&str; 8] = [
    "system",
    "user",
    "assistant",
    "hello",
    "there",
    "shared",
    "prompt",
    "the",
];

/// Id of `<s>`, the tiny tokenizer's BOS.
pub const BOS_ID: u32 = 1000;
/// Id of `<|im_start|>`.
pub const IM_START_ID: u32 = 1001;
/// Id of `<|im_end|>`.
pub const IM_END_ID: u32 = 1002;

/// The ChatML template the tiny tokenizer's `tokenizer_config.json` carries.
pub const CHATML: &str = "{{ bos_token }}{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Writes `tokenizer.json` and `tokenizer_config.json` into `dir`; answers the path of
/// `tokenizer.json`.
pub fn write_tiny_tokenizer(dir: &Path) -> std::io::Result<PathBuf> {
    let mut vocab = serde_json::Map::new();
    vocab.insert("[UNK]".into(), 0.into());
    let words = WORDS
        .iter()
        .map(|w| w.to_string())
        .chain((0..500).map(|i| format!("w{i}")));
    for (w, id) in words.zip(1u32..) {
        vocab.insert(w, id.into());
    }
    let special = |id: u32, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    for (id, t) in [
        (BOS_ID, "<s>"),
        (IM_START_ID, "<|im_start|>"),
        (IM_END_ID, "<|im_end|>"),
    ] {
        vocab.insert(t.into(), id.into());
    }
    let tokenizer = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(BOS_ID, "<s>"), special(IM_START_ID, "<|im_start|>"),
            special(IM_END_ID, "<|im_end|>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    });
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, tokenizer.to_string())?;
    let config = serde_json::json!({
        "chat_template": CHATML,
        "bos_token": "<s>",
        "eos_token": {"content": "<|im_end|>"},
    });
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string())?;
    Ok(path)
}

/// `n` words of the tiny vocabulary (`w0 w1 ...`, cycling), separated by spaces.
pub fn words(n: usize) -> String {
    (0..n)
        .map(|i| format!("w{}", i % 500))
        .collect::<Vec<_>>()
        .join(" ")
}
