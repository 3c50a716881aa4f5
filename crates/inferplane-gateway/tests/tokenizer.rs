//! Prompt tokenization at the edge: block hashes only for pools routed by blocks (switched
//! at run time), a pool's real tokenizer (a tiny one written by the test), its config
//! errors, and the same blocks as the simulator's for the same chat.

#![allow(clippy::unwrap_used)]

mod common;

use common::{MODEL, add_pool, fast_config, gateway, sim};
use inferplane_gateway::meta::BodyMeta;
use inferplane_gateway::prompt::{BlockRouting, facts};
use inferplane_tokenize::testing;
use serde_json::{Value, json};

fn long_chat(words: usize) -> Value {
    json!({"model": MODEL, "max_tokens": 2, "messages": [
        {"role": "system", "content": testing::words(words)},
        {"role": "user", "content": "hello there"}]})
}

#[tokio::test]
async fn blocks_are_hashed_only_while_the_pool_routes_by_blocks() {
    let a = sim("a", MODEL).await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("a", &a)], 4);
    let gw = gateway(f, 1).await;
    let http = reqwest::Client::new();
    let blocks = gw.control_plane().pool(MODEL).unwrap().blocks.clone();
    let post = || async {
        let r = http
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(&long_chat(200))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    };
    let policy = |routing: &'static str| {
        http.put(format!("{}/admin/policy", gw.url()))
            .json(&json!({"routing": {"kind": routing}}))
            .send()
    };
    assert!(!blocks.enabled(), "load_balanced by default");
    post().await;
    assert_eq!(blocks.hashed(), 0, "load_balanced: no hashing");
    assert_eq!(policy("prefix").await.unwrap().status(), 200);
    assert!(blocks.enabled());
    post().await;
    assert_eq!(blocks.hashed(), 1, "prefix: hashed");
    assert_eq!(policy("round_robin").await.unwrap().status(), 200);
    post().await;
    assert_eq!(blocks.hashed(), 1, "switched back: no hashing");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_pool_configured_with_prefix_routing_hashes_from_the_start() {
    let a = sim("a", MODEL).await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("a", &a)], 4);
    f.pools[0].routing = Some(inferplane_core::RoutingConfig::Prefix(Default::default()));
    let gw = gateway(f, 1).await;
    assert!(gw.control_plane().pool(MODEL).unwrap().blocks.enabled());
    gw.shutdown().await;
}

#[test]
fn a_pools_tokenizer_gives_real_ids_counts_and_the_simulators_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let path = testing::write_tiny_tokenizer(dir.path()).unwrap();
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[], 4);
    f.pools[0].tokenizer = Some(path.clone());
    let cfg = f.validate().unwrap();
    let tk = cfg.tokenizer_for(MODEL).unwrap();
    let sim_tk = inferplane_tokenize::PromptTokenizer::load(&path, None).unwrap();
    let on = BlockRouting::default();
    on.set(true);
    for words in [40, 300, 9000] {
        let body = serde_json::to_vec(&long_chat(words)).unwrap();
        let bm = BodyMeta::parse(&body).unwrap();
        let gw = facts(MODEL, &bm, Some(tk), Some(&on));
        let sim = inferplane_sim::prompt::chat(Some(&sim_tk), &body).unwrap();
        // <s> <|im_start|> system w.. <|im_end|> <|im_start|> user hello there <|im_end|>
        // <|im_start|> assistant
        assert_eq!(sim.prompt_tokens as usize, words + 11);
        assert!(!sim.block_hashes.is_empty());
        // the KV events' token_ids hash back to the same chain
        assert_eq!(
            inferplane_core::prefix::block_hashes_of_ids(&sim.block_tokens),
            sim.block_hashes
        );
        if words < 9000 {
            assert_eq!(gw.prompt_tokens, sim.prompt_tokens, "exact below the bound");
            assert_eq!(&gw.blocks[..], &sim.block_hashes[..], "{words} words");
        } else {
            // beyond the bound: the leading blocks, the count extrapolated
            assert!(gw.blocks.len() < sim.block_hashes.len());
            assert_eq!(&sim.block_hashes[..gw.blocks.len()], &gw.blocks[..]);
            assert!(gw.prompt_tokens.abs_diff(sim.prompt_tokens) < 500);
        }
        // the stand-in would have hashed different blocks
        assert_ne!(&bm.prefix_blocks()[..], &gw.blocks[..]);
        // not routed by blocks: no tokenizing (about 1 ms a chat), the stand-in's count
        let off = facts(MODEL, &bm, Some(tk), Some(&BlockRouting::default()));
        assert!(off.blocks.is_empty());
        assert_eq!(off.prompt_tokens, bm.prompt_tokens_estimate());
    }
    // a template that cannot render: the stand-in, the request goes on
    let jinja = dir.path().join("raise.jinja");
    std::fs::write(&jinja, "{{ raise_exception('nope') }}").unwrap();
    let broken = inferplane_tokenize::PromptTokenizer::load(&path, Some(&jinja)).unwrap();
    let body = serde_json::to_vec(&long_chat(300)).unwrap();
    let bm = BodyMeta::parse(&body).unwrap();
    let fallback = facts(MODEL, &bm, Some(&broken), Some(&on));
    assert_eq!(&fallback.blocks[..], &bm.prefix_blocks()[..]);
    assert_eq!(fallback.prompt_tokens, bm.prompt_tokens_estimate());
}

#[test]
fn a_bad_tokenizer_is_a_config_error_naming_the_pool_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("tokenizer.json");
    std::fs::write(&bad, "{ not json").unwrap();
    for (path, needle) in [
        (dir.path().join("missing.json"), "missing.json"),
        (bad, "tokenizer.json"),
    ] {
        let mut f = fast_config();
        add_pool(&mut f, MODEL, &[], 4);
        f.pools[0].tokenizer = Some(path);
        let e = f.validate().unwrap_err();
        assert_eq!(e.path, "pools[0].tokenizer");
        assert!(
            e.message.contains(MODEL) && e.message.contains(needle),
            "{e}"
        );
    }
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[], 4);
    f.pools[0].chat_template = Some(dir.path().join("t.jinja"));
    assert_eq!(f.validate().unwrap_err().path, "pools[0].chat_template");
    let toml = format!(
        "[[pools]]\nmodel = \"m\"\ntokenizer = {:?}\n",
        dir.path().join("nope.json")
    );
    let e = inferplane_gateway::config::FileConfig::parse(&toml, "t.toml")
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(e.to_string().contains("nope.json"), "{e}");
}
