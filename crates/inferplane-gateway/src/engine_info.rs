//! What an engine says about itself ([`EngineInfo`]: its batch limit, its context length
//! and its KV-cache capacity), read from the engine's own endpoints each time the instance
//! becomes healthy: at its first passing health check, and again after an
//! unhealthy-to-healthy transition, since a restarted engine may run with other settings.
//!
//! Sources and field names, checked against each engine's source:
//!
//! - **vLLM and SGLang `GET /v1/models`**: `data[].max_model_len` of the entry whose `id`
//!   is the instance's model (or of the only entry). vLLM's `ModelCard.max_model_len`;
//!   SGLang fills the same field from `model_config.context_len`
//!   (`sgl-project/sglang`, `python/sglang/srt/entrypoints/http_server.py`).
//! - **SGLang `GET /get_server_info`** (same file: the server arguments, merged with the
//!   scheduler's ready message and `internal_states`, one entry per data-parallel rank):
//!   the batch limit is `internal_states[].effective_max_running_requests_per_dp` times
//!   `dp_size`, else the `max_running_requests` argument; the context is the
//!   `context_length` argument (null unless given on the command line); the KV capacity
//!   is `max_total_num_tokens`, which the scheduler (or the data-parallel controller,
//!   from rank 0) reports per rank, times `dp_size`.
//! - **llama.cpp `GET /props`** (`ggml-org/llama.cpp`, `tools/server/server-context.cpp`,
//!   `get_props`): `total_slots` is `--parallel`, the most requests it runs at once;
//!   `default_generation_settings.n_ctx` is `slots[0].n_ctx`, **one slot's** context
//!   (`llama_n_ctx_seq`: the `-c` total divided by the slots unless the KV cache is
//!   unified, capped at the training context). A request longer than its slot is refused,
//!   so that figure is the `max_model_len`. The total KV capacity is left unknown: with a
//!   unified cache the slots share one pool and the per-slot figure does not add up.
//! - **`GET /metrics`**: `vllm:cache_config_info{block_size,num_gpu_blocks}` (the
//!   CacheConfig as labels, one series per engine core, told apart by `engine`) and
//!   `sglang:cache_config_info{page_size,num_pages}` (both named by the GIE model-server
//!   protocol); newer SGLang exports plain gauges instead, of which `sglang:page_size`,
//!   `sglang:num_pages`, `sglang:max_total_num_tokens` and `sglang:context_len` are read
//!   (`python/sglang/srt/observability/metrics_collector.py`), as is the
//!   `sglang:max_running_requests` gauge of older SGLang. Series of one data-parallel rank
//!   (`dp_rank`, or vLLM's `engine`) repeat the same figure on every tensor-parallel rank,
//!   so the first series of each rank counts, and ranks are added up.
//!
//! vLLM exposes no batch limit (`max_num_seqs` is in none of its answers), so for vLLM
//! `max_batch` stays unknown unless configured or planned.
//!
//! All four are asked at once, each bounded by the probe's timeout and with its body read
//! as a stream and abandoned past [`MAX_BODY`]. A 404 just means "not this engine". The
//! answers merge field by field, the first known value winning in the order above. A
//! failed or garbage answer leaves its fields unknown: never zero, never a panic.
//!
//! `/metrics` is read here, once per discovery, rather than on every load scrape: the
//! cache configuration is fixed for the life of an engine process and changes only when
//! it restarts, which the health checks see and which triggers a new discovery; parsing
//! labels on every scrape (each second, per instance) would redo that work for nothing.

use crate::config::Secret;
use crate::dispatcher::{Backend, Ctl};
use inferplane_core::EngineInfo;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Largest answer read from any discovery endpoint, in bytes.
pub const MAX_BODY: usize = 1 << 20;

/// Why one discovery endpoint gave nothing. Only logged: the fields stay unknown.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// No response (connect error, reset, ...).
    #[error("GET {url}: {source}")]
    Request {
        /// The endpoint.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The response broke while its body was read.
    #[error("GET {url}: reading the body: {source}")]
    Body {
        /// The endpoint.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// An error status (404: the engine has no such endpoint).
    #[error("GET {url}: status {status}")]
    Status {
        /// The endpoint.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The body was larger than [`MAX_BODY`].
    #[error("GET {url}: body larger than {limit} bytes")]
    TooLarge {
        /// The endpoint.
        url: String,
        /// The cap.
        limit: usize,
    },
    /// No complete answer within the timeout.
    #[error("GET {url}: no answer within {timeout:?}")]
    Timeout {
        /// The endpoint.
        url: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The body is not JSON.
    #[error("GET {url}: not JSON: {source}")]
    Json {
        /// The endpoint.
        url: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
}

/// Field by field, `first` where known, else `then`.
pub fn or(first: EngineInfo, then: EngineInfo) -> EngineInfo {
    EngineInfo {
        max_batch: first.max_batch.or(then.max_batch),
        max_model_len: first.max_model_len.or(then.max_model_len),
        kv_capacity_tokens: first.kv_capacity_tokens.or(then.kv_capacity_tokens),
    }
}

/// Asks the engine at `base_url` about itself (see the module documentation).
pub async fn discover(
    http: &reqwest::Client,
    base_url: &str,
    model: &str,
    api_key: Option<&Secret>,
    timeout: Duration,
) -> EngineInfo {
    let get = |path: &str| {
        let url = format!("{base_url}{path}");
        async move {
            let res = get_capped(http, &url, api_key, timeout, MAX_BODY).await;
            if let Err(e) = &res {
                tracing::debug!(error = %e, "engine info: no answer");
            }
            res.ok().map(|body| (url, body))
        }
    };
    let (models, server_info, props, metrics) = tokio::join!(
        get("/v1/models"),
        get("/get_server_info"),
        get("/props"),
        get("/metrics"),
    );
    let json = |answer: Option<(String, Vec<u8>)>, parse: &dyn Fn(&Value) -> EngineInfo| {
        let (url, body) = answer?;
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) => Some(parse(&v)),
            Err(source) => {
                tracing::debug!(error = %DiscoveryError::Json { url, source }, "engine info: garbage");
                None
            }
        }
    };
    let found = [
        json(models, &|v| from_models(v, model)),
        json(server_info, &from_sglang_server_info),
        json(props, &from_llamacpp_props),
        metrics.map(|(_, body)| from_metrics(&String::from_utf8_lossy(&body))),
    ];
    found.into_iter().flatten().fold(EngineInfo::default(), or)
}

/// Runs [`discover`] for `backend` in its own task and reports the result to the
/// dispatcher as [`Ctl::EngineInfo`].
pub fn spawn(
    backend: Arc<Backend>,
    http: reqwest::Client,
    timeout: Duration,
    ctl: mpsc::UnboundedSender<Ctl>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let spec = &backend.spec;
        let info = discover(
            &http,
            &spec.url,
            &spec.model,
            backend.api_key.as_ref(),
            timeout,
        )
        .await;
        let _ = ctl.send(Ctl::EngineInfo {
            instance: spec.id.clone(),
            info,
        });
    })
}

/// `GET url`, a success status, and at most `limit` body bytes, all within `timeout`. The
/// body is read chunk by chunk and the connection dropped as soon as it passes the cap.
pub async fn get_capped(
    http: &reqwest::Client,
    url: &str,
    api_key: Option<&Secret>,
    timeout: Duration,
    limit: usize,
) -> Result<Vec<u8>, DiscoveryError> {
    let fetch = async {
        let mut req = http.get(url);
        if let Some(key) = api_key {
            req = req.bearer_auth(key.expose());
        }
        let mut resp = req.send().await.map_err(|source| DiscoveryError::Request {
            url: url.to_string(),
            source,
        })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(DiscoveryError::Status {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        let too_large = || DiscoveryError::TooLarge {
            url: url.to_string(),
            limit,
        };
        if resp
            .content_length()
            .is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX))
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|source| DiscoveryError::Body {
            url: url.to_string(),
            source,
        })? {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| DiscoveryError::Timeout {
            url: url.to_string(),
            timeout,
        })?
}

/// A JSON number that is a whole number from 1 up (integers, or floats with no fraction
/// as some servers write them); anything else is unknown.
fn positive(v: &Value) -> Option<u64> {
    match v.as_u64() {
        Some(n) => (n > 0).then_some(n),
        None => whole(v.as_f64()?),
    }
}

/// A float that is a whole number from 1 up to 2^53 (beyond it floats skip integers).
fn whole(f: f64) -> Option<u64> {
    const MAX_EXACT: f64 = 9_007_199_254_740_992.0;
    (f.is_finite() && f >= 1.0 && f.fract() == 0.0 && f <= MAX_EXACT).then_some(f as u64)
}

fn positive_u32(v: &Value) -> Option<u32> {
    positive(v).and_then(|n| u32::try_from(n).ok())
}

/// vLLM's and SGLang's `GET /v1/models`: the context of `model`'s entry, or of the only
/// entry.
pub fn from_models(v: &Value, model: &str) -> EngineInfo {
    let Some(data) = v.get("data").and_then(Value::as_array) else {
        return EngineInfo::default();
    };
    let entry = data
        .iter()
        .find(|m| m.get("id").and_then(Value::as_str) == Some(model))
        .or(match data.as_slice() {
            [only] => Some(only),
            _ => None,
        });
    EngineInfo {
        max_model_len: entry
            .and_then(|m| m.get("max_model_len"))
            .and_then(positive_u32),
        ..EngineInfo::default()
    }
}

/// SGLang's `GET /get_server_info`.
pub fn from_sglang_server_info(v: &Value) -> EngineInfo {
    let dp = v.get("dp_size").and_then(positive).unwrap_or(1);
    let per_dp = v
        .get("internal_states")
        .and_then(Value::as_array)
        .and_then(|states| {
            states
                .iter()
                .filter_map(|s| s.get("effective_max_running_requests_per_dp"))
                .filter_map(positive)
                .max()
        });
    let max_batch = match per_dp {
        Some(n) => n.checked_mul(dp).and_then(|n| u32::try_from(n).ok()),
        None => v.get("max_running_requests").and_then(positive_u32),
    };
    EngineInfo {
        max_batch,
        max_model_len: v.get("context_length").and_then(positive_u32),
        kv_capacity_tokens: v
            .get("max_total_num_tokens")
            .and_then(positive)
            .and_then(|n| n.checked_mul(dp)),
    }
}

/// llama.cpp's `GET /props`.
pub fn from_llamacpp_props(v: &Value) -> EngineInfo {
    EngineInfo {
        max_batch: v.get("total_slots").and_then(positive_u32),
        max_model_len: v
            .pointer("/default_generation_settings/n_ctx")
            .and_then(positive_u32),
        kv_capacity_tokens: None,
    }
}

/// What one data-parallel rank's series say; the first series of a rank wins.
#[derive(Debug, Default, Clone, Copy)]
struct RankFacts {
    cache_info_tokens: Option<u64>,
    page_size: Option<u64>,
    num_pages: Option<u64>,
    max_total_tokens: Option<u64>,
    context_len: Option<u64>,
    max_running: Option<u64>,
}

/// The cache configuration and limits in Prometheus `/metrics` text (vLLM and SGLang
/// names). Lines it does not know, or cannot read, are skipped.
pub fn from_metrics(text: &str) -> EngineInfo {
    let mut ranks: HashMap<String, RankFacts> = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        if !WANTED.contains(&name) {
            continue;
        }
        let (labels, rest) = match line[name_end..].strip_prefix('{') {
            Some(after) => match parse_labels(after) {
                Some(parsed) => parsed,
                None => continue,
            },
            None => (Vec::new(), &line[name_end..]),
        };
        let label = |k: &str| {
            labels
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.as_str())
        };
        let rank = label("dp_rank")
            .or(label("engine"))
            .unwrap_or("")
            .to_string();
        let facts = ranks.entry(rank).or_default();
        let value = || {
            rest.split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .and_then(whole)
        };
        let label_num = |k: &str| {
            label(k)
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|n| *n > 0)
        };
        let first = |slot: &mut Option<u64>, v: Option<u64>| {
            if slot.is_none() {
                *slot = v;
            }
        };
        match name {
            "vllm:cache_config_info" => first(
                &mut facts.cache_info_tokens,
                label_num("block_size")
                    .zip(label_num("num_gpu_blocks"))
                    .and_then(|(b, n)| b.checked_mul(n)),
            ),
            "sglang:cache_config_info" => first(
                &mut facts.cache_info_tokens,
                label_num("page_size")
                    .zip(label_num("num_pages"))
                    .and_then(|(p, n)| p.checked_mul(n)),
            ),
            "sglang:page_size" => first(&mut facts.page_size, value()),
            "sglang:num_pages" => first(&mut facts.num_pages, value()),
            "sglang:max_total_num_tokens" => first(&mut facts.max_total_tokens, value()),
            "sglang:context_len" => first(&mut facts.context_len, value()),
            "sglang:max_running_requests" => first(&mut facts.max_running, value()),
            _ => {}
        }
    }
    // Each source is added up over the ranks on its own, so that two sources of one
    // figure are never mixed (nor counted twice).
    let sum = |f: &dyn Fn(&RankFacts) -> Option<u64>| {
        ranks
            .values()
            .filter_map(f)
            .try_fold(None::<u64>, |acc, n| {
                Some(Some(acc.unwrap_or(0).checked_add(n)?))
            })
            .flatten()
    };
    let pages = |r: &RankFacts| {
        r.page_size
            .zip(r.num_pages)
            .and_then(|(p, n)| p.checked_mul(n))
    };
    EngineInfo {
        max_batch: sum(&|r| r.max_running).and_then(|n| u32::try_from(n).ok()),
        // Every rank accepts the same context; the smallest is the safe one.
        max_model_len: ranks
            .values()
            .filter_map(|r| r.context_len)
            .min()
            .and_then(|n| u32::try_from(n).ok()),
        kv_capacity_tokens: sum(&|r| r.cache_info_tokens)
            .or_else(|| sum(&pages))
            .or_else(|| sum(&|r| r.max_total_tokens)),
    }
}

const WANTED: [&str; 7] = [
    "vllm:cache_config_info",
    "sglang:cache_config_info",
    "sglang:page_size",
    "sglang:num_pages",
    "sglang:max_total_num_tokens",
    "sglang:context_len",
    "sglang:max_running_requests",
];

/// Reads `k="v",...}` (the text after `{`) into label pairs, undoing `\"`, `\\` and `\n`
/// escapes; returns them with the text after `}`. `None` for malformed labels.
fn parse_labels(mut s: &str) -> Option<(Vec<(&str, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim();
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()? {
                    (_, 'n') => value.push('\n'),
                    (_, c) => value.push(c),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        s = &s[end + 1..];
        labels.push((key, value));
    }
}

#[cfg(test)]
#[path = "engine_info_tests.rs"]
mod tests;
