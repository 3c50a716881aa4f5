//! # inferplane-bench
//!
//! Measures inferplane's policies two ways that share one workload model and one report:
//!
//! - **live** ([`load`]): an open-loop streaming HTTP client drives any OpenAI-compatible
//!   endpoint (the gateway, a simulator, a peer router) and measures TTFT, inter-token
//!   latency, end-to-end latency, errors by kind and throughput;
//! - **simulated** ([`des`]): a discrete-event simulation runs the very same
//!   `inferplane_core::Scheduler` over `inferplane_sim::Engine`s in virtual time;
//!   [`des_cache`] says what a `prefix` strategy is told of the engines' caches
//!   (approximate, precise through KV-cache events after a delay, or an oracle).
//!
//! [`workload`] generates seeded open-loop workloads (Poisson or bursty gamma arrivals,
//! long-tailed lengths, priority and SLO classes, cost budgets, multi-turn sessions, shared
//! system-prompt prefixes); [`trace`] reads and writes JSONL traces and reads the Azure LLM
//! inference trace CSV; [`report`] turns runs into markdown, JSON and SVG plots; [`compare`]
//! runs one workload under several policy choices; [`matrix`] runs every policy and two
//! baselines over clusters, workloads and loads and [`matrix_report`] holds the default to
//! its targets, [`matrix_prefix`] the prefix-cache routing section; [`source`] is where every command's requests come from.

pub mod cluster;
pub mod compare;
pub mod des;
pub mod des_cache;
#[cfg(test)]
mod des_fair_tests;
pub mod dist;
pub mod error;
pub mod load;
pub mod matrix;
pub mod matrix_prefix;
pub mod matrix_report;
pub mod plot;
pub mod prompt;
pub mod record;
pub mod report;
pub mod source;
pub mod trace;
pub mod workload;

pub use error::BenchError;
pub use record::{Failure, Record, RunRecords};
pub use workload::{WorkItem, WorkloadSpec};
