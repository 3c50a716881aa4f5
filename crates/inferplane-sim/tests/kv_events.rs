//! The simulator publishes vLLM's KV cache events from its real prefix cache; our
//! subscriber decodes them over loopback TCP.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use inferplane_kv_events::{BlockHash, KvEvent, Subscriber, SubscriberConfig, SubscriberEvent};
use inferplane_sim::KvEventsConfig;
use inferplane_sim::kv_events::published_hash;
use inferplane_sim::tokens::block_hashes_of_ids;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn events_config() -> KvEventsConfig {
    KvEventsConfig::from_json(
        r#"{"enable_kv_cache_events": true, "publisher": "zmq",
            "endpoint": "tcp://127.0.0.1:0", "replay_endpoint": "tcp://127.0.0.1:0",
            "topic": "kv-events"}"#,
    )
    .unwrap()
}

async fn chat(client: &reqwest::Client, url: &str, content: &str) {
    let body = serde_json::json!({
        "model": common::MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 2,
    });
    let resp = client
        .post(format!("{url}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    resp.bytes().await.unwrap();
}

/// Collects events until `done` says so (bounded by `WAIT`).
async fn collect(sub: &mut Subscriber, mut done: impl FnMut(&[KvEvent]) -> bool) -> Vec<KvEvent> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done(&got) {
        let ev = tokio::time::timeout_at(deadline, sub.recv())
            .await
            .expect("events in time")
            .expect("subscriber running");
        match ev {
            SubscriberEvent::Batch { batch, .. } => got.extend(batch.events),
            SubscriberEvent::Connected => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    got
}

fn int(h: &BlockHash) -> u64 {
    match h {
        BlockHash::Int(v) => u64::try_from(*v).unwrap(),
        BlockHash::Bytes(_) => panic!("the simulator sends int hashes"),
    }
}

#[tokio::test]
async fn sim_publishes_stores_evictions_and_clears_that_our_subscriber_decodes() {
    let server = common::start_with(|c| {
        c.kv_events = Some(events_config());
        c.profile.kv_blocks = 64;
    })
    .await;
    let mut sub = Subscriber::spawn(SubscriberConfig {
        topic: "kv-events".into(),
        replay_endpoint: server.kv_events_replay_endpoint().map(str::to_owned),
        ..SubscriberConfig::new(server.kv_events_endpoint().unwrap())
    });
    let client = reqwest::Client::new();
    let prompt = "a shared system prompt that is long enough to fill blocks. ".repeat(20);
    chat(&client, &server.url(), &prompt).await;
    // Joining late is fine: the subscriber replays from 0 out of the sim's buffer.
    let got = collect(&mut sub, |g| {
        g.iter().any(|e| matches!(e, KvEvent::BlockStored(_)))
    })
    .await;
    let KvEvent::BlockStored(stored) = got
        .iter()
        .find(|e| matches!(e, KvEvent::BlockStored(_)))
        .unwrap()
    else {
        unreachable!()
    };
    assert_eq!(stored.block_size, 16);
    assert_eq!(stored.parent_block_hash, None, "a prompt's first blocks");
    assert_eq!(stored.token_ids.len(), stored.block_hashes.len() * 16);
    assert!(
        stored.blocks().is_some(),
        "one block_size of token ids per hash"
    );
    let hashes: Vec<u64> = stored.block_hashes.iter().map(int).collect();
    let own = block_hashes_of_ids(&stored.token_ids);
    assert_eq!(
        own.iter().copied().map(published_hash).collect::<Vec<_>>(),
        hashes,
        "the published hashes are the token ids' chain, salted"
    );
    assert!(
        own.iter().zip(&hashes).all(|(o, h)| o != h),
        "salted: a consumer cannot key on the engine's hashes"
    );
    assert!(!hashes.is_empty());

    // Fill the 64-block cache with other prompts: the first one's blocks are evicted.
    for i in 0..6 {
        chat(
            &client,
            &server.url(),
            &format!("{i} other prompt text. ").repeat(60),
        )
        .await;
    }
    let first = hashes[0];
    let got = collect(&mut sub, |g| {
        g.iter().any(|e| matches!(e, KvEvent::BlockRemoved(r) if r.block_hashes.iter().any(|h| int(h) == first)))
    })
    .await;
    assert!(got.iter().any(|e| matches!(e, KvEvent::BlockStored(_))));

    let resp = client
        .post(format!("{}/reset_prefix_cache", server.url()))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    collect(&mut sub, |g| g.contains(&KvEvent::AllBlocksCleared)).await;
    sub.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn sim_without_the_flag_publishes_nothing() {
    let server = common::start_with(|_| {}).await;
    assert!(server.kv_events_endpoint().is_none());
    server.shutdown().await;
}
