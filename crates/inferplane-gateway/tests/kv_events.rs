//! Precise prefix routing: the gateway subscribes to its engines' vLLM KV cache events,
//! translates them into its own block hashes and feeds the `prefix` strategy's index.
//! Real sockets over loopback (ports from the OS), bounded polls, no sleeps as
//! synchronisation.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::{MODEL, add_pool, eventually, fast_config, metrics_text, post_chat};
use inferplane_core::prefix::{block_hashes, block_hashes_of_ids};
use inferplane_core::{EngineInfo, InstanceId, RoutingConfig};
use inferplane_gateway::Gateway;
use inferplane_gateway::config::{FileConfig, KvEventsSection};
use inferplane_kv_events::{BlockHash, BlockStored, KvEvent, KvEventBatch, encode_batch};
use inferplane_sim::{KvEventsConfig, SimServer};
use std::time::Duration;
use zeromq::{PubSocket, Socket, SocketSend, ZmqMessage};

/// A hand-driven engine PUB socket: we choose every sequence number.
struct RawPub {
    socket: PubSocket,
    endpoint: String,
    seq: u64,
}

impl RawPub {
    async fn bind() -> RawPub {
        let mut socket = PubSocket::new();
        let endpoint = socket.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
        RawPub {
            socket,
            endpoint,
            seq: 0,
        }
    }

    /// Publishes `events` as the next batch (after skipping `skip` sequence numbers).
    async fn publish(&mut self, skip: u64, events: Vec<KvEvent>) {
        self.seq += skip;
        let payload = encode_batch(&KvEventBatch {
            ts: 0.0,
            events,
            data_parallel_rank: None,
        })
        .unwrap();
        let mut msg = ZmqMessage::from(Vec::<u8>::new());
        msg.push_back(self.seq.to_be_bytes().to_vec().into());
        msg.push_back(payload.into());
        self.socket.send(msg).await.unwrap();
        self.seq += 1;
    }

    fn section(&self) -> KvEventsSection {
        KvEventsSection {
            endpoint: self.endpoint.clone(),
            replay_endpoint: None,
            topic: String::new(),
        }
    }
}

/// The prompt's blocks as an engine stores them: salted hashes, the stand-in ids.
fn stored(ids: &[u32]) -> KvEvent {
    KvEvent::BlockStored(BlockStored {
        block_hashes: block_hashes_of_ids(ids)
            .into_iter()
            .map(|h| BlockHash::Int(i128::from(h ^ 0x1234_5678)))
            .collect(),
        parent_block_hash: None,
        token_ids: ids.to_vec(),
        block_size: 16,
        lora_id: None,
        medium: Some("GPU".into()),
    })
}

async fn prefix_blocks(gw: &Gateway, id: &str) -> Option<usize> {
    let views = gw.control_plane().instances().await.unwrap();
    views
        .iter()
        .find(|v| v.spec.id.as_str() == id)
        .and_then(|v| v.prefix_blocks)
}

/// The value of the first series of `name` whose labels contain `labels`.
fn metric(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

fn prefix_pool(f: &mut FileConfig) {
    f.pools[0].routing = Some(RoutingConfig::Prefix(Default::default()));
}

/// Publishes `ids`' blocks, a new batch each round, until the gateway's index holds them
/// (joining late, the subscriber first reports what it missed: those rounds are lost).
async fn feed_until_indexed(gw: &Gateway, engine: &mut RawPub, id: &str, ids: &[u32]) {
    let want = ids.len() / 16;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while prefix_blocks(gw, id).await != Some(want) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway never indexed the engine's blocks"
        );
        engine.publish(0, vec![stored(ids)]).await;
        tokio::time::sleep(Duration::from_millis(20)).await; // publishing rate, not a wait
    }
}

#[tokio::test]
async fn a_gap_that_replay_cannot_fill_drops_the_instances_blocks() {
    let sim = common::sim("e", MODEL).await;
    let mut engine = RawPub::bind().await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("e", &sim)], 8);
    prefix_pool(&mut f);
    f.pools[0].instances[0].kv_events = Some(engine.section());
    let gw = common::gateway(f, 1).await;
    let ids: Vec<u32> = (0..16 * 4).collect();
    feed_until_indexed(&gw, &mut engine, "e", &ids).await;
    let gaps = |t: &str| metric(t, "inferplane_kv_event_losses_total", "reason=\"gap\"");
    let before = gaps(&metrics_text(&gw).await).unwrap();

    // Batches 10 sequence numbers ahead: no replay endpoint, so they stay missing.
    engine.publish(10, Vec::new()).await;
    eventually("the instance's blocks dropped", || async {
        prefix_blocks(&gw, "e").await == Some(0)
    })
    .await;
    let text = metrics_text(&gw).await;
    assert!(gaps(&text).unwrap() > before, "the gap is counted");
    assert_eq!(
        metric(&text, "inferplane_kv_event_blocks", "instance=\"e\""),
        Some(0.0)
    );
    gw.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn removing_an_instance_stops_its_subscriber_and_a_new_registration_starts_empty() {
    let sim = common::sim("e", MODEL).await;
    let mut engine = RawPub::bind().await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("e", &sim)], 8);
    prefix_pool(&mut f);
    f.pools[0].instances[0].kv_events = Some(engine.section());
    let gw = common::gateway(f, 1).await;
    let subscribers = || async {
        metric(
            &metrics_text(&gw).await,
            "inferplane_kv_event_subscribers",
            "",
        )
        .unwrap()
    };
    assert_eq!(subscribers().await, 1.0);
    let ids: Vec<u32> = (100..100 + 16 * 3).collect();
    feed_until_indexed(&gw, &mut engine, "e", &ids).await;

    let cp = gw.control_plane();
    let id = InstanceId::new("e");
    let spec = cp.remove_instance(&id).await.unwrap().spec;
    eventually("the subscriber task ended", || async {
        subscribers().await == 0.0
    })
    .await;
    assert!(
        !metrics_text(&gw).await.contains("instance=\"e\""),
        "the removed instance's series are gone"
    );

    // The same id in the same slot: nothing of the old registration's blocks.
    let view = cp
        .register_instance_with_kv_events(spec, None, EngineInfo::default(), Some(engine.section()))
        .await
        .unwrap();
    assert_eq!(view.prefix_blocks, Some(0));
    assert_eq!(subscribers().await, 1.0);
    // and the new subscription is live: new events index again
    feed_until_indexed(&gw, &mut engine, "e", &ids).await;
    gw.shutdown().await;
    sim.shutdown().await;
}

fn sim_events() -> KvEventsConfig {
    KvEventsConfig::from_json(
        r#"{"enable_kv_cache_events": true, "publisher": "zmq",
            "endpoint": "tcp://127.0.0.1:0", "replay_endpoint": "tcp://127.0.0.1:0"}"#,
    )
    .unwrap()
}

fn section_of(sim: &SimServer) -> KvEventsSection {
    KvEventsSection {
        endpoint: sim.kv_events_endpoint().unwrap().to_owned(),
        replay_endpoint: sim.kv_events_replay_endpoint().map(str::to_owned),
        topic: String::new(),
    }
}

/// A conversation's messages so far.
fn conversation(c: usize, turns: usize) -> Vec<serde_json::Value> {
    let mut m = vec![serde_json::json!({"role": "system", "content":
        format!("conversation {c}: you answer questions about topic {c}. ").repeat(12)})];
    for t in 0..turns {
        m.push(serde_json::json!({"role": "user", "content": format!("question {t} of {c}, ").repeat(6)}));
        m.push(
            serde_json::json!({"role": "assistant", "content": format!("answer {t}. ").repeat(6)}),
        );
    }
    m.push(serde_json::json!({"role": "user", "content": format!("question {turns} of {c}?")}));
    m
}

fn body(messages: &[serde_json::Value]) -> serde_json::Value {
    serde_json::json!({"model": MODEL, "messages": messages, "max_tokens": 2})
}

/// The stand-in prompt text of a chat, as gateway and simulator both see it.
fn prompt_text(messages: &[serde_json::Value]) -> String {
    let mut text = String::new();
    for m in messages {
        inferplane_core::prefix::push_chat_message(
            &mut text,
            m["role"].as_str().unwrap(),
            [m["content"].as_str().unwrap()],
        );
    }
    text
}

#[tokio::test]
async fn follow_ups_go_where_the_engines_kv_events_say_the_conversation_is() {
    let a = common::sim_with("a", MODEL, |c| c.kv_events = Some(sim_events())).await;
    let b = common::sim_with("b", MODEL, |c| c.kv_events = Some(sim_events())).await;
    let mut f = fast_config();
    add_pool(&mut f, MODEL, &[("a", &a), ("b", &b)], 8);
    prefix_pool(&mut f);
    f.pools[0].instances[0].kv_events = Some(section_of(&a));
    f.pools[0].instances[1].kv_events = Some(section_of(&b));
    let gw = common::gateway(f, 2).await;
    let http = reqwest::Client::new();

    // Several conversations, each followed up over three turns: every follow-up goes to
    // the instance that served its first turn.
    let mut home = Vec::new();
    for c in 0..6 {
        let (status, first, _) = post_chat(&http, &gw, &body(&conversation(c, 0))).await;
        assert_eq!(status, 200);
        let first = first.unwrap();
        for turn in 1..=3 {
            let (status, at, _) = post_chat(&http, &gw, &body(&conversation(c, turn))).await;
            assert_eq!(status, 200);
            assert_eq!(
                at.as_deref(),
                Some(first.as_str()),
                "conversation {c} turn {turn}"
            );
        }
        home.push(first);
    }
    let text = metrics_text(&gw).await;
    for id in ["a", "b"] {
        let stored = metric(
            &text,
            "inferplane_kv_events_total",
            &format!("instance=\"{id}\",kind=\"stored\""),
        );
        assert!(
            home.iter().all(|h| h != id) || stored.is_some_and(|s| s > 0.0),
            "{id}'s events reached the gateway: {stored:?}"
        );
    }

    // Conversation 0 lives on `from`. The other engine computes its history too, asked
    // directly (the gateway places nothing there): only its events tell the gateway.
    let from = home[0].clone();
    let (from_sim, to_sim, to) = if from == "a" {
        (&a, &b, "b")
    } else {
        (&b, &a, "a")
    };
    let history = conversation(0, 3);
    let want = block_hashes(&prompt_text(&history)).len();
    let before = prefix_blocks(&gw, to).await.unwrap();
    let resp = http
        .post(format!("{}/v1/chat/completions", to_sim.url()))
        .json(&body(&history))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    resp.bytes().await.unwrap();
    eventually("the other engine's stores indexed", || async {
        prefix_blocks(&gw, to).await.unwrap() >= before + want / 2
    })
    .await;

    // Its home engine empties its cache: AllBlocksCleared, and the gateway forgets it.
    let resp = http
        .post(format!("{}/reset_prefix_cache", from_sim.url()))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    eventually("the cleared engine's entries dropped", || async {
        prefix_blocks(&gw, &from).await == Some(0)
    })
    .await;
    let cleared = metric(
        &metrics_text(&gw).await,
        "inferplane_kv_events_total",
        &format!("instance=\"{from}\",kind=\"cleared\""),
    );
    assert_eq!(cleared, Some(1.0));

    // The next turn goes where the events say its blocks are now.
    let (status, at, _) = post_chat(&http, &gw, &body(&conversation(0, 4))).await;
    assert_eq!(status, 200);
    assert_eq!(
        at.as_deref(),
        Some(to),
        "follows the events, not the old placement"
    );
    gw.shutdown().await;
    a.shutdown().await;
    b.shutdown().await;
}
