use super::testing::{self, BOS_ID, IM_END_ID, IM_START_ID};
use super::*;
use inferplane_core::prefix::block_hashes_of_ids;
use serde_json::json;

fn tiny() -> (tempfile::TempDir, PromptTokenizer) {
    let dir = tempfile::tempdir().unwrap();
    let path = testing::write_tiny_tokenizer(dir.path()).unwrap();
    let tk = PromptTokenizer::load(&path, None).unwrap();
    (dir, tk)
}

#[test]
fn a_tiny_word_level_tokenizer_gives_its_vocabulary_ids() {
    let (_dir, tk) = tiny();
    // ids: [UNK] 0, system 1, user 2, assistant 3, hello 4, there 5, ..., w0 9
    assert_eq!(tk.completion_ids("hello there w0").unwrap(), vec![4, 5, 9]);
    assert_eq!(tk.completion_ids("hello nonsense").unwrap(), vec![4, 0]);
}

#[test]
fn the_chat_template_from_tokenizer_config_is_applied_as_the_engine_would() {
    let (_dir, tk) = tiny();
    let messages = json!([{"role": "user", "content": [{"type": "text", "text": "hello"},
        {"type": "image_url"}, {"type": "text", "text": "there"}]}]);
    assert_eq!(
        tk.chat_text(&messages).unwrap(),
        "<s><|im_start|>user\nhello\nthere<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(
        tk.chat_ids(&messages).unwrap(),
        vec![BOS_ID, IM_START_ID, 2, 4, 5, IM_END_ID, IM_START_ID, 3]
    );
}

#[test]
fn a_cut_prompt_keeps_only_leading_tokens_of_the_whole_encoding() {
    let (_dir, tk) = tiny();
    let text = testing::words(6000);
    let whole = tk.completion_ids(&text).unwrap();
    let cut = tk.completion_prefix(&text, 8 * 1024).unwrap();
    assert!(cut.truncated);
    assert!(cut.ids.len() > 1000 && cut.ids.len() < whole.len());
    assert_eq!(&whole[..cut.ids.len()], &cut.ids[..]);
    let (a, b) = (block_hashes_of_ids(&whole), block_hashes_of_ids(&cut.ids));
    assert_eq!(&a[..b.len()], &b[..], "only trailing blocks are lost");
    let err = cut.prompt_tokens.abs_diff(6000);
    assert!(err < 300, "extrapolated count {}", cut.prompt_tokens);
    let short = tk.completion_prefix("hello there", 8 * 1024).unwrap();
    assert_eq!(
        (short.ids.len(), short.prompt_tokens, short.truncated),
        (2, 2, false)
    );
}

#[test]
fn a_template_that_raises_or_is_missing_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = testing::write_tiny_tokenizer(dir.path()).unwrap();
    std::fs::remove_file(dir.path().join("tokenizer_config.json")).unwrap();
    let tk = PromptTokenizer::load(&path, None).unwrap();
    let m = json!([{"role": "user", "content": "hello"}]);
    assert!(matches!(
        tk.chat_ids(&m),
        Err(TokenizeError::NoChatTemplate)
    ));
    let jinja = dir.path().join("t.jinja");
    std::fs::write(&jinja, "{{ raise_exception('no system role') }}").unwrap();
    let tk = PromptTokenizer::load(&path, Some(&jinja)).unwrap();
    assert!(matches!(tk.chat_ids(&m), Err(TokenizeError::Render(_))));
    assert!(matches!(
        tk.chat_ids(&json!({"a": 1})),
        Err(TokenizeError::Messages)
    ));
    assert!(tk.first_failure());
    assert!(!tk.first_failure(), "once");
}

#[test]
fn bad_files_are_load_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    let e = PromptTokenizer::load(&missing, None).unwrap_err();
    assert!(e.to_string().contains("nope.json"), "{e}");
    let bad = dir.path().join("tokenizer.json");
    std::fs::write(&bad, "{ not json").unwrap();
    let e = PromptTokenizer::load(&bad, None).unwrap_err();
    assert!(matches!(e, LoadError::Tokenizer { .. }) && e.to_string().contains("tokenizer.json"));
    let path = testing::write_tiny_tokenizer(dir.path()).unwrap();
    let jinja = dir.path().join("broken.jinja");
    std::fs::write(&jinja, "{% for %}").unwrap();
    let e = PromptTokenizer::load(&path, Some(&jinja)).unwrap_err();
    assert!(matches!(e, LoadError::Template { .. }) && e.to_string().contains("broken.jinja"));
}
