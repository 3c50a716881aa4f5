//! The simulator's `/metrics`: Prometheus text with vLLM's metric names and labels, so
//! anything that scrapes vLLM (the gateway, dashboards) works against the simulator.
//!
//! Names follow vLLM V1 (`vllm:num_requests_running`, `vllm:kv_cache_usage_perc`, ...).
//! With `legacy_names` the KV gauge is published under vLLM V0's
//! `vllm:gpu_cache_usage_perc` instead, to exercise scrapers' fallbacks.
//!
//! Engine facts are published as vLLM publishes them, so a scraper can discover the KV
//! capacity: `vllm:cache_config_info` is an info gauge (value 1) whose labels are vLLM's
//! `CacheConfig` fields the simulator can fill truthfully (`block_size`, `cache_dtype`
//! `"auto"`, `enable_prefix_caching` `"True"`, `num_gpu_blocks`, all strings, Python's
//! spelling of booleans), with no `model_name` label, as in vLLM.
//! `vllm:num_preemptions_total` counts recompute preemptions. One gauge is the
//! simulator's own, not vLLM's: `inferplane_sim_peak_requests`, the most requests in the
//! engine at once since it started.

use crate::engine::{EngineStats, FinishReason};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::sync::atomic::AtomicU64;

/// `finished_reason` label of `vllm:request_success_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FinishedLabel {
    /// `length` or `stop`.
    pub finished_reason: &'static str,
}

/// Labels of `vllm:cache_config_info`: the subset of vLLM's `CacheConfig.metrics_info()`
/// that the simulator can fill truthfully.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheConfigLabels {
    /// Tokens per KV block.
    pub block_size: String,
    /// KV-cache data type; `auto` (the model's dtype), as vLLM's default.
    pub cache_dtype: &'static str,
    /// The simulator's prefix cache is always on: `True`.
    pub enable_prefix_caching: &'static str,
    /// KV blocks in the cache.
    pub num_gpu_blocks: String,
}

impl CacheConfigLabels {
    /// The labels for a cache of `kv_blocks` blocks of [`crate::profile::BLOCK_SIZE`] tokens.
    pub fn new(kv_blocks: u32) -> Self {
        CacheConfigLabels {
            block_size: crate::profile::BLOCK_SIZE.to_string(),
            cache_dtype: "auto",
            enable_prefix_caching: "True",
            num_gpu_blocks: kv_blocks.to_string(),
        }
    }
}

/// Latency buckets in seconds, close to vLLM's TTFT buckets.
const LATENCY_BUCKETS: [f64; 20] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0,
];

/// Metric handles of one simulated engine.
#[derive(Debug)]
pub struct SimMetrics {
    registry: Registry,
    running: Gauge,
    waiting: Gauge,
    kv_usage: Gauge<f64, AtomicU64>,
    prompt_tokens: Counter,
    generation_tokens: Counter,
    prefix_queries: Counter,
    prefix_hits: Counter,
    preemptions: Counter,
    success: Family<FinishedLabel, Counter>,
    peak: Gauge,
    /// Time to first token, seconds (observed by the HTTP handler).
    pub ttft: Histogram,
    /// End-to-end latency, seconds (observed by the HTTP handler).
    pub e2e: Histogram,
}

impl SimMetrics {
    /// Registers every metric under the `model_name` label.
    pub fn new(model: &str, kv_blocks: u32, legacy_names: bool) -> Self {
        let mut root = Registry::default();
        // Engine-wide, without the model label, as vLLM's info gauges.
        let info = Family::<CacheConfigLabels, Gauge>::default();
        info.get_or_create(&CacheConfigLabels::new(kv_blocks))
            .set(1);
        root.register(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig",
            info,
        );
        let reg = root
            .sub_registry_with_label((Cow::Borrowed("model_name"), Cow::Owned(model.to_string())));
        let running = Gauge::default();
        let waiting = Gauge::default();
        let kv_usage = Gauge::<f64, AtomicU64>::default();
        let m = SimMetrics {
            running: running.clone(),
            waiting: waiting.clone(),
            kv_usage: kv_usage.clone(),
            prompt_tokens: Counter::default(),
            generation_tokens: Counter::default(),
            prefix_queries: Counter::default(),
            prefix_hits: Counter::default(),
            preemptions: Counter::default(),
            success: Family::default(),
            peak: Gauge::default(),
            ttft: Histogram::new(LATENCY_BUCKETS),
            e2e: Histogram::new(LATENCY_BUCKETS),
            registry: Registry::default(),
        };
        reg.register(
            "vllm:num_requests_running",
            "Requests in the running batch",
            running,
        );
        reg.register(
            "vllm:num_requests_waiting",
            "Requests waiting for admission",
            waiting,
        );
        let kv_name = if legacy_names {
            "vllm:gpu_cache_usage_perc"
        } else {
            "vllm:kv_cache_usage_perc"
        };
        reg.register(
            kv_name,
            "Fraction of KV-cache blocks in use (0..1)",
            kv_usage,
        );
        reg.register(
            "vllm:prompt_tokens",
            "Prompt tokens processed",
            m.prompt_tokens.clone(),
        );
        reg.register(
            "vllm:generation_tokens",
            "Generation tokens produced",
            m.generation_tokens.clone(),
        );
        reg.register(
            "vllm:prefix_cache_queries",
            "Prompt tokens looked up in the prefix cache",
            m.prefix_queries.clone(),
        );
        reg.register(
            "vllm:prefix_cache_hits",
            "Prompt tokens found in the prefix cache",
            m.prefix_hits.clone(),
        );
        reg.register(
            "vllm:num_preemptions",
            "Cumulative number of recompute preemptions",
            m.preemptions.clone(),
        );
        // not one of vLLM's: the simulator's own, for tests that count at the engine
        reg.register(
            "inferplane_sim_peak_requests",
            "Most requests in the engine at once (running and waiting) since it started",
            m.peak.clone(),
        );
        reg.register(
            "vllm:request_success",
            "Finished requests by finish reason",
            m.success.clone(),
        );
        reg.register(
            "vllm:time_to_first_token_seconds",
            "Time to first token",
            m.ttft.clone(),
        );
        reg.register(
            "vllm:e2e_request_latency_seconds",
            "End-to-end request latency",
            m.e2e.clone(),
        );
        SimMetrics {
            registry: root,
            ..m
        }
    }

    /// Publishes the engine's current gauges, and the counters' increase from `last` to
    /// `stats`.
    pub fn update(
        &self,
        running: usize,
        waiting: usize,
        kv_usage: f64,
        stats: EngineStats,
        last: EngineStats,
    ) {
        self.running.set(running as i64);
        self.waiting.set(waiting as i64);
        self.kv_usage.set(kv_usage);
        self.peak
            .set(i64::try_from(stats.peak_requests).unwrap_or(i64::MAX));
        let d = |now: u64, before: u64| now.saturating_sub(before);
        self.prompt_tokens
            .inc_by(d(stats.prompt_tokens, last.prompt_tokens));
        self.generation_tokens
            .inc_by(d(stats.generation_tokens, last.generation_tokens));
        self.prefix_queries
            .inc_by(d(stats.prefix_cache_queries, last.prefix_cache_queries));
        self.prefix_hits
            .inc_by(d(stats.prefix_cache_hits, last.prefix_cache_hits));
        self.preemptions
            .inc_by(d(stats.preemptions, last.preemptions));
    }

    /// Counts a finished request.
    pub fn finished(&self, reason: FinishReason) {
        self.success
            .get_or_create(&FinishedLabel {
                finished_reason: reason.as_str(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_uses_vllm_names_with_the_model_label() {
        let m = SimMetrics::new("m1", 100, false);
        m.update(
            3,
            2,
            0.25,
            EngineStats {
                prompt_tokens: 40,
                generation_tokens: 7,
                preemptions: 2,
                ..EngineStats::default()
            },
            EngineStats::default(),
        );
        m.finished(FinishReason::Length);
        m.ttft.observe(0.02);
        let text = m.encode();
        for needle in [
            "vllm:num_requests_running{model_name=\"m1\"} 3",
            "vllm:num_requests_waiting{model_name=\"m1\"} 2",
            "vllm:kv_cache_usage_perc{model_name=\"m1\"} 0.25",
            "vllm:prompt_tokens_total{model_name=\"m1\"} 40",
            "vllm:generation_tokens_total{model_name=\"m1\"} 7",
            "vllm:request_success_total{model_name=\"m1\",finished_reason=\"length\"} 1",
            "vllm:time_to_first_token_seconds_count{model_name=\"m1\"} 1",
            "vllm:prefix_cache_hits_total",
            "vllm:e2e_request_latency_seconds_bucket",
            "vllm:num_preemptions_total{model_name=\"m1\"} 2",
            "# TYPE vllm:cache_config_info gauge",
            "vllm:cache_config_info{block_size=\"16\",cache_dtype=\"auto\",enable_prefix_caching=\"True\",num_gpu_blocks=\"100\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        let legacy = SimMetrics::new("m1", 100, true).encode();
        assert!(legacy.contains("vllm:gpu_cache_usage_perc"));
        assert!(!legacy.contains("vllm:kv_cache_usage_perc"));
    }
}
