//! # inferplane-sim
//!
//! A simulated LLM engine that stands in for a vLLM server, so the whole control plane
//! runs, is tested and is benchmarked without a GPU.
//!
//! - [`engine`]: the pure engine model over virtual time (continuous batching, chunked
//!   prefill, KV-cache budget with recompute preemption, prefix cache) driven by an
//!   [`profile::EngineProfile`] step-time model.
//! - [`kv`]: the block budget and prefix cache.
//! - [`kv_events`]: vLLM's KV cache events (`--kv-events-config`) from the real prefix
//!   cache: the engine records, the driver publishes over ZMQ with a replay socket.
//! - [`tokens`]: the stand-in tokenizer, prompt block hashes and deterministic pseudo-text;
//!   [`prompt`]: a prompt's blocks by the stand-in or a real tokenizer (`--tokenizer`).
//! - [`server`]: the vLLM-compatible HTTP face ([`SimServer`]), with [`driver`] (the task
//!   that runs the engine in scaled real time), [`respond`] (JSON and SSE answers),
//!   [`openai`] (wire shapes and errors), [`metrics`] (vLLM metric names), [`faults`] and
//!   [`listener`] (scripted faults).
//!
//! It reports the engine facts vLLM reports: `max_model_len` on each `/v1/models` card,
//! and `vllm:cache_config_info` (`block_size`, `num_gpu_blocks`, ...) and
//! `vllm:num_preemptions_total` on `/metrics`. One simulator convention goes beyond vLLM:
//! a request's `min_tokens = m` (vLLM's sampling parameter) makes the simulated model end
//! its answer right at `m` tokens, so a benchmark client can state a request's true
//! output length while the gateway sees only `max_tokens` (see [`engine`]).

pub mod driver;
pub mod engine;
pub mod fasthash;
pub mod faults;
mod handlers;
pub mod kv;
pub mod kv_events;
pub mod listener;
pub mod metrics;
pub mod openai;
pub mod profile;
pub mod prompt;
pub mod respond;
pub mod server;
pub mod tokens;

pub use engine::{
    AddError, CacheEvent, Engine, EngineStats, Event, FinishReason, SeqId, SeqInput, StepInfo,
};
pub use faults::{FaultConfig, InvalidSetting};
pub use kv_events::KvEventsConfig;
pub use profile::{BLOCK_SIZE, EngineProfile, FromPlannerError};
pub use server::{SimConfig, SimServer, StartError};
