//! The event types, as vLLM's `vllm/distributed/kv_events.py` declares them, and their
//! msgpack form.
//!
//! vLLM encodes with msgspec. A `KVEventBatch` is `{ts, events, data_parallel_rank?}` and
//! each event a tagged union member (`tag=True`: the tag is the class name). Releases up to
//! mid-2025 declare the structs `array_like=True`, so a batch travels as an array
//! `[ts, [event, ...]]` (plus `data_parallel_rank` when set) and an event as
//! `["BlockStored", block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium]`;
//! later releases drop `array_like`, so the same structs travel as maps keyed by field name
//! with the tag under `"type"`. With `omit_defaults`, fields left at their default
//! (`data_parallel_rank = None`, the newer optional `BlockStored` fields) are omitted.
//! [`decode_batch`] reads both layouts and ignores fields it does not know (newer vLLM adds
//! `lora_name`, `extra_keys`, `group_idx`, ...); [`encode_batch`] writes the array layout.
//!
//! Block hashes were Python ints (64-bit, possibly negative) and became
//! `ExternalBlockHash = bytes | int` once vLLM hashed with SHA-256: [`BlockHash`] holds
//! either.

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt;

/// One engine block's hash as the engine reports it: an integer (older vLLM, or its
/// 64-bit hash modes) or raw bytes (SHA-256 digests in newer vLLM). Opaque to a consumer:
/// engines may salt it, so a router hashes the events' `token_ids` itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BlockHash {
    /// An integer hash (msgpack int, signed or unsigned 64-bit).
    Int(i128),
    /// A byte-string hash (msgpack bin).
    Bytes(Vec<u8>),
}

/// Full blocks entered the engine's prefix cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockStored {
    /// The stored blocks' hashes, in prompt order.
    pub block_hashes: Vec<BlockHash>,
    /// The hash of the block before the first one (`None` at the start of a prompt).
    pub parent_block_hash: Option<BlockHash>,
    /// The token ids of all stored blocks, concatenated (`block_size` per block).
    pub token_ids: Vec<u32>,
    /// Tokens per block.
    pub block_size: u32,
    /// The LoRA adapter the blocks were computed with (`None`: the base model).
    pub lora_id: Option<i64>,
    /// Where the blocks live (`"GPU"`, `"CPU"`, ...); absent in the oldest releases.
    pub medium: Option<String>,
}

impl BlockStored {
    /// Each stored block's engine hash with its `block_size` token ids, in order; `None`
    /// when `token_ids` does not hold exactly `block_size` ids per hash (then a consumer
    /// cannot hash the blocks itself).
    pub fn blocks(&self) -> Option<impl Iterator<Item = (&BlockHash, &[u32])>> {
        let size = usize::try_from(self.block_size).ok().filter(|s| *s > 0)?;
        if self.token_ids.len() != self.block_hashes.len().checked_mul(size)? {
            return None;
        }
        Some(
            self.block_hashes
                .iter()
                .zip(self.token_ids.chunks_exact(size)),
        )
    }
}

/// Blocks left the engine's prefix cache (evicted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRemoved {
    /// The removed blocks' hashes.
    pub block_hashes: Vec<BlockHash>,
    /// Where the blocks lived; absent in the oldest releases.
    pub medium: Option<String>,
}

/// One change to an engine's prefix cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvEvent {
    /// Blocks stored.
    BlockStored(BlockStored),
    /// Blocks removed.
    BlockRemoved(BlockRemoved),
    /// The whole prefix cache was reset.
    AllBlocksCleared,
}

/// The events of one engine step, published as one message.
#[derive(Debug, Clone, PartialEq)]
pub struct KvEventBatch {
    /// When the batch was made: seconds since the Unix epoch, as the engine's clock says.
    pub ts: f64,
    /// The events, in the order they happened.
    pub events: Vec<KvEvent>,
    /// The data-parallel rank that produced them (newer vLLM; `None`: not reported).
    pub data_parallel_rank: Option<u32>,
}

/// A payload that is not a `KVEventBatch`.
#[derive(Debug, thiserror::Error)]
#[error("not a vLLM KV event batch")]
pub struct DecodeError(#[source] rmp_serde::decode::Error);

/// A batch that could not be encoded (not expected: every field has a msgpack form).
#[derive(Debug, thiserror::Error)]
#[error("cannot encode a KV event batch")]
pub struct EncodeError(#[source] rmp_serde::encode::Error);

/// Decodes one published payload, in either of vLLM's layouts (see the module docs).
pub fn decode_batch(payload: &[u8]) -> Result<KvEventBatch, DecodeError> {
    rmp_serde::from_slice(payload).map_err(DecodeError)
}

/// Encodes a batch in vLLM's `array_like` layout, as its `ZmqEventPublisher` sends it.
pub fn encode_batch(batch: &KvEventBatch) -> Result<Vec<u8>, EncodeError> {
    rmp_serde::to_vec(batch).map_err(EncodeError)
}

const BLOCK_STORED: &str = "BlockStored";
const BLOCK_REMOVED: &str = "BlockRemoved";
const ALL_BLOCKS_CLEARED: &str = "AllBlocksCleared";
/// msgspec's default tag field for tagged structs encoded as maps.
const TAG_FIELD: &str = "type";

// ---- encoding (array layout) ----

impl Serialize for BlockHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            BlockHash::Int(v) => match (u64::try_from(*v), i64::try_from(*v)) {
                (Ok(u), _) => s.serialize_u64(u),
                (_, Ok(i)) => s.serialize_i64(i),
                _ => Err(serde::ser::Error::custom("block hash outside 64 bits")),
            },
            BlockHash::Bytes(b) => s.serialize_bytes(b),
        }
    }
}

impl Serialize for KvEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            KvEvent::BlockStored(e) => {
                let mut t = s.serialize_tuple(7)?;
                t.serialize_element(BLOCK_STORED)?;
                t.serialize_element(&e.block_hashes)?;
                t.serialize_element(&e.parent_block_hash)?;
                t.serialize_element(&e.token_ids)?;
                t.serialize_element(&e.block_size)?;
                t.serialize_element(&e.lora_id)?;
                t.serialize_element(&e.medium)?;
                t.end()
            }
            KvEvent::BlockRemoved(e) => {
                let mut t = s.serialize_tuple(3)?;
                t.serialize_element(BLOCK_REMOVED)?;
                t.serialize_element(&e.block_hashes)?;
                t.serialize_element(&e.medium)?;
                t.end()
            }
            KvEvent::AllBlocksCleared => {
                let mut t = s.serialize_tuple(1)?;
                t.serialize_element(ALL_BLOCKS_CLEARED)?;
                t.end()
            }
        }
    }
}

impl Serialize for KvEventBatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // omit_defaults: a trailing field at its default is left out.
        let len = if self.data_parallel_rank.is_some() {
            3
        } else {
            2
        };
        let mut t = s.serialize_tuple(len)?;
        t.serialize_element(&self.ts)?;
        t.serialize_element(&self.events)?;
        if let Some(rank) = self.data_parallel_rank {
            t.serialize_element(&rank)?;
        }
        t.end()
    }
}

// ---- decoding (array or map layout) ----

struct BlockHashVisitor;

impl<'de> Visitor<'de> for BlockHashVisitor {
    type Value = BlockHash;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a block hash (int or bytes)")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<BlockHash, E> {
        Ok(BlockHash::Int(i128::from(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<BlockHash, E> {
        Ok(BlockHash::Int(i128::from(v)))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<BlockHash, E> {
        Ok(BlockHash::Bytes(v.to_vec()))
    }
    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<BlockHash, E> {
        Ok(BlockHash::Bytes(v))
    }
}

impl<'de> Deserialize<'de> for BlockHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(BlockHashVisitor)
    }
}

/// Drains the elements of an array beyond the ones this version knows.
fn skip_rest<'de, A: SeqAccess<'de>>(seq: &mut A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn next_required<'de, A: SeqAccess<'de>, T: Deserialize<'de>>(
    seq: &mut A,
    field: &'static str,
) -> Result<T, A::Error> {
    seq.next_element()?
        .ok_or_else(|| de::Error::missing_field(field))
}

/// A field that is the last one some releases send: absent reads as `None`.
fn next_optional<'de, A: SeqAccess<'de>, T: Deserialize<'de>>(
    seq: &mut A,
) -> Result<Option<T>, A::Error> {
    Ok(seq.next_element::<Option<T>>()?.flatten())
}

/// The fields of any event, gathered from a map before its tag decides which are needed.
#[derive(Default)]
struct EventFields {
    tag: Option<String>,
    block_hashes: Option<Vec<BlockHash>>,
    parent_block_hash: Option<Option<BlockHash>>,
    token_ids: Option<Vec<u32>>,
    block_size: Option<u32>,
    lora_id: Option<Option<i64>>,
    medium: Option<Option<String>>,
}

fn required<T, E: de::Error>(v: Option<T>, field: &'static str) -> Result<T, E> {
    v.ok_or_else(|| E::missing_field(field))
}

impl EventFields {
    fn build<E: de::Error>(self) -> Result<KvEvent, E> {
        let tag = required(self.tag, TAG_FIELD)?;
        match tag.as_str() {
            BLOCK_STORED => Ok(KvEvent::BlockStored(BlockStored {
                block_hashes: required(self.block_hashes, "block_hashes")?,
                parent_block_hash: required(self.parent_block_hash, "parent_block_hash")?,
                token_ids: required(self.token_ids, "token_ids")?,
                block_size: required(self.block_size, "block_size")?,
                lora_id: required(self.lora_id, "lora_id")?,
                medium: self.medium.flatten(),
            })),
            BLOCK_REMOVED => Ok(KvEvent::BlockRemoved(BlockRemoved {
                block_hashes: required(self.block_hashes, "block_hashes")?,
                medium: self.medium.flatten(),
            })),
            ALL_BLOCKS_CLEARED => Ok(KvEvent::AllBlocksCleared),
            other => Err(E::unknown_variant(
                other,
                &[BLOCK_STORED, BLOCK_REMOVED, ALL_BLOCKS_CLEARED],
            )),
        }
    }
}

struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = KvEvent;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a tagged KV cache event (array or map)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KvEvent, A::Error> {
        let tag: String = next_required(&mut seq, TAG_FIELD)?;
        let event = match tag.as_str() {
            BLOCK_STORED => KvEvent::BlockStored(BlockStored {
                block_hashes: next_required(&mut seq, "block_hashes")?,
                parent_block_hash: next_required(&mut seq, "parent_block_hash")?,
                token_ids: next_required(&mut seq, "token_ids")?,
                block_size: next_required(&mut seq, "block_size")?,
                lora_id: next_required(&mut seq, "lora_id")?,
                medium: next_optional(&mut seq)?,
            }),
            BLOCK_REMOVED => KvEvent::BlockRemoved(BlockRemoved {
                block_hashes: next_required(&mut seq, "block_hashes")?,
                medium: next_optional(&mut seq)?,
            }),
            ALL_BLOCKS_CLEARED => KvEvent::AllBlocksCleared,
            other => {
                return Err(de::Error::unknown_variant(
                    other,
                    &[BLOCK_STORED, BLOCK_REMOVED, ALL_BLOCKS_CLEARED],
                ));
            }
        };
        skip_rest(&mut seq)?;
        Ok(event)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KvEvent, A::Error> {
        let mut f = EventFields::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                TAG_FIELD => f.tag = Some(map.next_value()?),
                "block_hashes" => f.block_hashes = Some(map.next_value()?),
                "parent_block_hash" => f.parent_block_hash = Some(map.next_value()?),
                "token_ids" => f.token_ids = Some(map.next_value()?),
                "block_size" => f.block_size = Some(map.next_value()?),
                "lora_id" => f.lora_id = Some(map.next_value()?),
                "medium" => f.medium = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        f.build()
    }
}

impl<'de> Deserialize<'de> for KvEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(EventVisitor)
    }
}

struct BatchVisitor;

impl<'de> Visitor<'de> for BatchVisitor {
    type Value = KvEventBatch;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a KVEventBatch (array or map)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KvEventBatch, A::Error> {
        let batch = KvEventBatch {
            ts: next_required(&mut seq, "ts")?,
            events: next_required(&mut seq, "events")?,
            data_parallel_rank: next_optional(&mut seq)?,
        };
        skip_rest(&mut seq)?;
        Ok(batch)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KvEventBatch, A::Error> {
        let (mut ts, mut events, mut rank) = (None, None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "ts" => ts = Some(map.next_value()?),
                "events" => events = Some(map.next_value()?),
                "data_parallel_rank" => rank = map.next_value()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(KvEventBatch {
            ts: required(ts, "ts")?,
            events: required(events, "events")?,
            data_parallel_rank: rank,
        })
    }
}

impl<'de> Deserialize<'de> for KvEventBatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(BatchVisitor)
    }
}

#[cfg(test)]
#[path = "event_tests.rs"]
mod tests;
