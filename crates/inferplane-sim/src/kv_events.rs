//! The simulator's KV cache events, published as vLLM publishes them (`--kv-events-config`).
//!
//! The engine records its prefix-cache changes ([`CacheEvent`]); the driver drains them after
//! every step and this module turns them into one vLLM `KVEventBatch` (consecutive stores of
//! one prompt become one `BlockStored`, consecutive evictions one `BlockRemoved`), which the
//! [`Publisher`] sends on its PUB socket and keeps for replay. Published block hashes are
//! the simulator's chained xxh3 hashes salted with [`HASH_SALT`] and mixed (as vLLM salts
//! its hashes with a per-process seed), so they are not the hashes a consumer computes
//! from the tokens: a consumer that keyed on them would be caught. `token_ids` are its
//! stand-in token ids ([`crate::tokens::block_token_ids`]), so a consumer can hash them
//! itself.

use crate::engine::CacheEvent;
use crate::profile::BLOCK_SIZE;
use inferplane_kv_events::{
    BlockHash, BlockRemoved, BlockStored, KvEvent, KvEventBatch, Publisher, PublisherConfig,
    TransportError,
};
use serde::Deserialize;

/// vLLM's `KVEventsConfig`, as `--kv-events-config` takes it in JSON (same field names and
/// defaults).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvEventsConfig {
    /// Publish at all.
    #[serde(default)]
    pub enable_kv_cache_events: bool,
    /// `"zmq"` publishes; `"null"` records nothing. Absent: `"zmq"` when enabled.
    #[serde(default)]
    pub publisher: Option<PublisherKind>,
    /// PUB endpoint to bind.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// ROUTER endpoint for replay requests (none: no replay).
    #[serde(default)]
    pub replay_endpoint: Option<String>,
    /// Batches kept for replay.
    #[serde(default = "default_buffer_steps")]
    pub buffer_steps: usize,
    /// vLLM's PUB high-water mark. Accepted so vLLM configs parse; the pure-Rust socket
    /// has none, and `max_queue_size` bounds what waits to be sent instead.
    #[serde(default = "default_hwm")]
    pub hwm: usize,
    /// Batches waiting to be sent; beyond it a batch is dropped (subscribers see a gap).
    #[serde(default = "default_max_queue_size")]
    pub max_queue_size: usize,
    /// First frame of every message.
    #[serde(default)]
    pub topic: String,
}

/// vLLM's `publisher` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublisherKind {
    /// No publishing.
    Null,
    /// ZMQ PUB plus optional ROUTER replay.
    Zmq,
}

fn default_endpoint() -> String {
    "tcp://*:5557".into()
}
fn default_buffer_steps() -> usize {
    10_000
}
fn default_hwm() -> usize {
    100_000
}
fn default_max_queue_size() -> usize {
    100_000
}

impl KvEventsConfig {
    /// Parses the `--kv-events-config` JSON.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// Whether events are published: enabled, with the ZMQ publisher.
    pub fn publishes(&self) -> bool {
        self.enable_kv_cache_events
            && self.publisher.unwrap_or(PublisherKind::Zmq) == PublisherKind::Zmq
    }

    /// Binds the publisher's sockets.
    pub async fn bind(&self) -> Result<Publisher, TransportError> {
        Publisher::bind(PublisherConfig {
            endpoint: self.endpoint.clone(),
            replay_endpoint: self.replay_endpoint.clone(),
            topic: self.topic.clone(),
            buffer_steps: self.buffer_steps,
            queue_capacity: self.max_queue_size,
        })
        .await
    }
}

/// The salt mixed into every published block hash (non-zero, like vLLM's per-process
/// hash seed): published hashes are `mix(own ^ HASH_SALT)`, a bijection, so distinct
/// blocks keep distinct hashes and a child's `parent_block_hash` is its parent's.
pub const HASH_SALT: u64 = 0x5bd1_e995_9e37_79b9;

/// The hash published for the simulator's own block hash `h`.
pub fn published_hash(h: u64) -> u64 {
    // splitmix64's finaliser: a bijection of u64
    let mut z = h ^ HASH_SALT;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn hash(h: u64) -> BlockHash {
    BlockHash::Int(i128::from(published_hash(h)))
}

/// Turns one step's cache changes into vLLM events, in order: a run of stores that chain
/// (each block's parent the block before) is one `BlockStored`, a run of evictions one
/// `BlockRemoved`.
pub fn to_vllm_events(changes: &[CacheEvent]) -> Vec<KvEvent> {
    let mut out: Vec<KvEvent> = Vec::new();
    for change in changes {
        match change {
            CacheEvent::Stored {
                hash: h,
                parent,
                tokens,
            } => {
                if let Some(KvEvent::BlockStored(last)) = out.last_mut()
                    && parent.map(hash).as_ref() == last.block_hashes.last()
                {
                    last.block_hashes.push(hash(*h));
                    last.token_ids.extend_from_slice(tokens);
                    continue;
                }
                out.push(KvEvent::BlockStored(BlockStored {
                    block_hashes: vec![hash(*h)],
                    parent_block_hash: parent.map(hash),
                    token_ids: tokens.clone(),
                    block_size: BLOCK_SIZE,
                    lora_id: None,
                    medium: Some("GPU".into()),
                }));
            }
            CacheEvent::Removed { hash: h } => {
                if let Some(KvEvent::BlockRemoved(last)) = out.last_mut() {
                    last.block_hashes.push(hash(*h));
                    continue;
                }
                out.push(KvEvent::BlockRemoved(BlockRemoved {
                    block_hashes: vec![hash(*h)],
                    medium: Some("GPU".into()),
                }));
            }
            CacheEvent::Cleared => out.push(KvEvent::AllBlocksCleared),
        }
    }
    out
}

/// The batch for one step's changes, stamped `ts` (seconds since the Unix epoch); `None`
/// when nothing changed.
pub fn to_batch(changes: &[CacheEvent], ts: f64) -> Option<KvEventBatch> {
    if changes.is_empty() {
        return None;
    }
    Some(KvEventBatch {
        ts,
        events: to_vllm_events(changes),
        data_parallel_rank: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vllm_field_names_and_defaults() {
        let c = KvEventsConfig::from_json(
            r#"{"enable_kv_cache_events": true, "publisher": "zmq",
                "endpoint": "tcp://*:5557", "replay_endpoint": "tcp://*:5558",
                "topic": "kv-events", "buffer_steps": 100, "hwm": 10}"#,
        )
        .unwrap();
        assert!(c.publishes());
        assert_eq!(c.replay_endpoint.as_deref(), Some("tcp://*:5558"));
        assert_eq!(c.buffer_steps, 100);
        let d = KvEventsConfig::from_json(r#"{"enable_kv_cache_events": true}"#).unwrap();
        assert!(d.publishes(), "publisher defaults to zmq when enabled");
        assert_eq!(d.endpoint, "tcp://*:5557");
        assert_eq!(d.max_queue_size, 100_000);
        let null =
            KvEventsConfig::from_json(r#"{"enable_kv_cache_events": true, "publisher": "null"}"#)
                .unwrap();
        assert!(!null.publishes());
        assert!(!KvEventsConfig::from_json("{}").unwrap().publishes());
        assert!(
            KvEventsConfig::from_json(r#"{"endpont": "x"}"#).is_err(),
            "typos rejected"
        );
        assert!(KvEventsConfig::from_json(r#"{"publisher": "kafka"}"#).is_err());
    }

    #[test]
    fn chained_stores_become_one_block_stored_and_evictions_one_block_removed() {
        let t = |n: u32| vec![n; BLOCK_SIZE as usize];
        let changes = vec![
            CacheEvent::Removed { hash: 7 },
            CacheEvent::Removed { hash: 8 },
            CacheEvent::Stored {
                hash: 1,
                parent: None,
                tokens: t(1),
            },
            CacheEvent::Stored {
                hash: 2,
                parent: Some(1),
                tokens: t(2),
            },
            CacheEvent::Stored {
                hash: 5,
                parent: Some(4),
                tokens: t(5),
            },
            CacheEvent::Cleared,
        ];
        let events = to_vllm_events(&changes);
        assert_eq!(events.len(), 4);
        assert_eq!(
            events[0],
            KvEvent::BlockRemoved(BlockRemoved {
                block_hashes: vec![hash(7), hash(8)],
                medium: Some("GPU".into())
            })
        );
        let KvEvent::BlockStored(s) = &events[1] else {
            panic!("stored")
        };
        assert_eq!(s.block_hashes, vec![hash(1), hash(2)]);
        assert_eq!(s.parent_block_hash, None);
        assert_eq!(s.token_ids.len(), 2 * BLOCK_SIZE as usize);
        let KvEvent::BlockStored(s) = &events[2] else {
            panic!("stored")
        };
        assert_eq!(
            s.parent_block_hash,
            Some(hash(4)),
            "another prompt's run starts anew"
        );
        assert_eq!(events[3], KvEvent::AllBlocksCleared);
        assert!(to_batch(&[], 0.0).is_none());
    }
}
