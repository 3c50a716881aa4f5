//! # inferplane-kv-events
//!
//! vLLM's KV cache events (`--kv-events-config`), on the wire as vLLM sends them:
//!
//! - [`event`]: `KVEventBatch{ts, events, data_parallel_rank?}` with `BlockStored`,
//!   `BlockRemoved` and `AllBlocksCleared`, msgpack in msgspec's layouts
//!   ([`decode_batch`] reads both, [`encode_batch`] writes the `array_like` one).
//! - [`publisher`]: the `ZmqEventPublisher` protocol: a PUB socket sending
//!   `[topic, seq as 8-byte big-endian, payload]`, and a ROUTER replay socket that answers
//!   `["", start seq]` with `["", seq, payload]` per buffered batch from `start` on, then
//!   the end marker `["", -1 as 8-byte big-endian, ""]`.
//! - [`subscriber`]: connects to an engine, tracks sequence numbers, replays missed
//!   batches, and reports what it could not recover ([`SubscriberEvent::Gap`],
//!   [`SubscriberEvent::Restarted`]), so a consumer knows when to drop an engine's entries.

pub mod event;
pub mod publisher;
pub mod subscriber;

pub use event::{
    BlockHash, BlockRemoved, BlockStored, DecodeError, EncodeError, KvEvent, KvEventBatch,
    decode_batch, encode_batch,
};
pub use publisher::{Publisher, PublisherConfig};
pub use subscriber::{Subscriber, SubscriberConfig, SubscriberEvent, UndecodableError};

/// The replay answer's end marker: sequence number -1 as a signed 8-byte big-endian int.
pub const END_SEQ: [u8; 8] = (-1i64).to_be_bytes();

/// A socket could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Binding a publisher socket failed (address in use, bad endpoint).
    #[error("cannot bind KV event socket {endpoint}")]
    Bind {
        /// The endpoint asked for.
        endpoint: String,
        /// Why.
        #[source]
        source: zeromq::ZmqError,
    },
    /// Connecting or subscribing to an engine's PUB socket failed.
    #[error("cannot connect to KV event endpoint {endpoint}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// Why.
        #[source]
        source: zeromq::ZmqError,
    },
    /// A replay request to the engine failed.
    #[error("KV event replay from {endpoint} failed")]
    Replay {
        /// The replay endpoint.
        endpoint: String,
        /// Why.
        #[source]
        source: zeromq::ZmqError,
    },
    /// The peer broke the protocol.
    #[error("KV event protocol violation: {0}")]
    Protocol(&'static str),
}
