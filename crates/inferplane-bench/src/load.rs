//! Live load: an open-loop streaming client for any OpenAI-compatible endpoint.
//!
//! Each request of the workload is sent at its arrival time whether or not earlier ones
//! have answered (open loop, so a slow server cannot slow the offered load down and hide
//! its own queueing). Requests stream (`stream: true`, with `include_usage`); the client
//! times the first token (TTFT), the gaps between tokens (ITL, into an HDR histogram) and
//! the last byte (end to end), all from the request's scheduled arrival. Failures are kept
//! by kind: connect, timeout, HTTP status, broken stream, error event. The run is bounded
//! by a request count and a wall-clock duration, and shows a progress bar on stderr.
//!
//! Against simulators that run `time_scale` times faster than real time, arrivals are
//! compressed by the same factor and every measured time is multiplied back, so reports
//! are in the workload's (virtual) seconds and comparable with the simulation's.

use crate::error::BenchError;
use crate::prompt::prompt_text;
use crate::record::{Failure, InstanceUsage, Record, RunRecords};
use crate::workload::WorkItem;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Which OpenAI API to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Api {
    /// `POST /v1/completions` with a text prompt (exact token counts on the simulator).
    #[default]
    Completions,
    /// `POST /v1/chat/completions` with one user message.
    Chat,
}

/// How to run a live load.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Base URL of the endpoint, e.g. `http://127.0.0.1:8080`.
    pub target: String,
    /// Model name for requests whose item names none.
    pub model: String,
    /// API to call.
    pub api: Api,
    /// Send at most this many requests.
    pub max_requests: Option<usize>,
    /// Send no request later than this (wall clock) after the start.
    pub max_duration: Option<Duration>,
    /// Give up on one request after this long (wall clock).
    pub request_timeout: Duration,
    /// Virtual seconds per wall second of the target (1 for real engines).
    pub time_scale: f64,
    /// Salt for the unique part of prompts, so reruns do not hit a warm prefix cache.
    pub salt: u64,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// A label for reports.
    pub label: String,
}

impl LoadConfig {
    /// Defaults: completions API, no bounds but the workload, 60 s timeout, real time.
    pub fn new(target: impl Into<String>, model: impl Into<String>) -> Self {
        LoadConfig {
            target: target.into(),
            model: model.into(),
            api: Api::Completions,
            max_requests: None,
            max_duration: None,
            request_timeout: Duration::from_secs(60),
            time_scale: 1.0,
            salt: 0,
            progress: false,
            label: "live".into(),
        }
    }
}

/// What one request task reports back.
struct Outcome {
    record: Record,
    instance: Option<String>,
    gaps_us: Vec<u64>,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
}

/// Runs the workload against `cfg.target` and returns what it measured.
pub async fn run(cfg: &LoadConfig, items: &[WorkItem]) -> Result<RunRecords, BenchError> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .build()?;
    let path = match cfg.api {
        Api::Completions => "/v1/completions",
        Api::Chat => "/v1/chat/completions",
    };
    let url: Arc<str> = Arc::from(format!("{}{path}", cfg.target.trim_end_matches('/')));
    let scale = if cfg.time_scale.is_finite() && cfg.time_scale > 0.0 {
        cfg.time_scale
    } else {
        1.0
    };
    let limit = cfg.max_requests.unwrap_or(usize::MAX).min(items.len());
    let t_first = items.first().map_or(0.0, |i| i.t);
    let counters = Arc::new(Counters::default());
    let start = Instant::now();
    let progress = cfg.progress.then(|| {
        let c = counters.clone();
        let total = limit as u64;
        tokio::spawn(async move {
            loop {
                draw_progress(&c, total, start.elapsed());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    });

    let mut tasks = Vec::with_capacity(limit);
    for (ix, item) in items.iter().take(limit).enumerate() {
        let offset = Duration::from_secs_f64(((item.t - t_first) / scale).max(0.0));
        if cfg.max_duration.is_some_and(|d| offset > d) {
            break;
        }
        let at = start + offset;
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
        let body = body(cfg, item, ix as u64);
        let headers = headers(item);
        let (http, url, c) = (http.clone(), url.clone(), counters.clone());
        let timeout = cfg.request_timeout;
        let virtual_arrival = item.t - t_first;
        c.sent.fetch_add(1, Ordering::Relaxed);
        tasks.push(tokio::spawn(async move {
            let mut out = send(&http, &url, headers, body, at, timeout).await;
            out.record.item = ix as u32;
            out.record.arrival = virtual_arrival;
            scale_record(&mut out.record, scale);
            c.done.fetch_add(1, Ordering::Relaxed);
            if out.record.failure.is_some() {
                c.failed.fetch_add(1, Ordering::Relaxed);
            }
            out
        }));
    }

    let mut names: HashMap<String, u32> = HashMap::new();
    let mut instances = Vec::new();
    let mut records = Vec::with_capacity(tasks.len());
    let mut itl = hdrhistogram::Histogram::<u64>::new(3).ok();
    let mut end = 0.0f64;
    for t in tasks {
        let Ok(out) = t.await else { continue };
        let mut rec = out.record;
        if let Some(name) = out.instance {
            let next = names.len() as u32;
            let ix = *names.entry(name.clone()).or_insert_with(|| {
                instances.push(InstanceUsage {
                    id: name,
                    gpus: 1,
                    ..InstanceUsage::default()
                });
                next
            });
            rec.instance = Some(ix);
        }
        if let Some(h) = itl.as_mut() {
            for g in out.gaps_us {
                let _ = h.record((g as f64 * scale) as u64);
            }
        }
        end = end.max(rec.arrival + rec.e2e);
        records.push(rec);
    }
    if let Some(p) = progress {
        p.abort();
        draw_progress(&counters, limit as u64, start.elapsed());
        eprintln!();
    }
    Ok(RunRecords {
        label: cfg.label.clone(),
        mode: "live".into(),
        duration: end,
        records,
        instances,
        itl_us: itl,
    })
}

fn draw_progress(c: &Counters, total: u64, elapsed: Duration) {
    let (sent, done, failed) = (
        c.sent.load(Ordering::Relaxed),
        c.done.load(Ordering::Relaxed),
        c.failed.load(Ordering::Relaxed),
    );
    let width = 30u64;
    let filled = (done * width)
        .checked_div(total)
        .unwrap_or(width)
        .min(width) as usize;
    let bar: String = "#".repeat(filled) + &".".repeat(width as usize - filled);
    eprint!(
        "\r[{bar}] {done}/{total} done  sent {sent}  in flight {}  failed {failed}  {:.1}s ",
        sent.saturating_sub(done),
        elapsed.as_secs_f64()
    );
    let _ = std::io::stderr().flush();
}

fn scale_record(r: &mut Record, scale: f64) {
    r.e2e *= scale;
    r.ttft = r.ttft.map(|t| t * scale);
}

fn body(cfg: &LoadConfig, item: &WorkItem, ix: u64) -> serde_json::Value {
    let model = item.model.as_deref().unwrap_or(&cfg.model);
    let text = prompt_text(item, ix ^ cfg.salt.rotate_left(32));
    // The gateway sees the client's cap (`max_tokens`); the true length travels as vLLM's
    // `min_tokens`, which the simulator takes as its end of sequence (a real vLLM then
    // generates at least that many, stopping at its end of sequence or the cap).
    let mut body = serde_json::json!({
        "model": model,
        "max_tokens": item.cap(),
        "min_tokens": item.output_tokens.max(1),
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    match cfg.api {
        Api::Completions => body["prompt"] = serde_json::Value::String(text),
        Api::Chat => body["messages"] = serde_json::json!([{"role": "user", "content": text}]),
    }
    body
}

/// The control plane's request metadata headers for an item.
fn headers(item: &WorkItem) -> Vec<(&'static str, String)> {
    let mut h = vec![("x-priority", item.priority.as_str().to_string())];
    if let Some(ms) = item.e2e_ms {
        h.push(("x-slo-ms", ms.to_string()));
    }
    if let Some(ms) = item.ttft_ms {
        h.push(("x-slo-ttft-ms", ms.to_string()));
    }
    if let Some(b) = item.cost_budget {
        h.push(("x-cost-budget", b.to_string()));
    }
    if let Some(s) = item.session {
        h.push(("x-session-id", format!("session-{s}")));
    }
    h
}

fn failed(at: Instant, f: Failure, instance: Option<String>) -> Outcome {
    Outcome {
        record: Record {
            item: 0,
            arrival: 0.0,
            failure: Some(f),
            instance: None,
            ttft: None,
            e2e: at.elapsed().as_secs_f64(),
            output_tokens: 0,
            cached_tokens: None,
        },
        instance,
        gaps_us: Vec::new(),
    }
}

async fn send(
    http: &reqwest::Client,
    url: &str,
    headers: Vec<(&'static str, String)>,
    body: serde_json::Value,
    at: Instant,
    timeout: Duration,
) -> Outcome {
    match tokio::time::timeout(timeout, stream_one(http, url, headers, body, at)).await {
        Ok(out) => out,
        Err(_) => failed(at, Failure::Timeout, None),
    }
}

async fn stream_one(
    http: &reqwest::Client,
    url: &str,
    headers: Vec<(&'static str, String)>,
    body: serde_json::Value,
    at: Instant,
) -> Outcome {
    let mut req = http.post(url).json(&body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return failed(at, Failure::Timeout, None),
        Err(_) => return failed(at, Failure::Connect, None),
    };
    let instance = resp
        .headers()
        .get("x-inferplane-instance")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if !resp.status().is_success() {
        let status = resp.status().as_u16();
        // an error answer is small; read a bounded prefix for its OpenAI error code
        let body = resp.bytes().await.unwrap_or_default();
        let head = &body[..body.len().min(64 * 1024)];
        return failed(at, Failure::from_http(status, head), instance);
    }
    let mut sse = SseState::default();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => sse.feed(&bytes, at),
            Err(_) => {
                sse.failure = Some(Failure::Stream);
                break;
            }
        }
    }
    if !sse.done && sse.failure.is_none() {
        sse.failure = Some(Failure::Stream);
    }
    let output_tokens = sse.usage_tokens.unwrap_or(sse.tokens);
    Outcome {
        record: Record {
            item: 0,
            arrival: 0.0,
            failure: sse.failure,
            instance: None,
            ttft: sse.first.map(|d| d.as_secs_f64()),
            e2e: at.elapsed().as_secs_f64(),
            output_tokens,
            cached_tokens: sse.cached,
        },
        instance,
        gaps_us: sse.gaps_us,
    }
}

/// Incremental server-sent-events parser that times token chunks.
#[derive(Default)]
struct SseState {
    buf: Vec<u8>,
    first: Option<Duration>,
    last: Option<Duration>,
    tokens: u32,
    gaps_us: Vec<u64>,
    usage_tokens: Option<u32>,
    cached: Option<u32>,
    done: bool,
    failure: Option<Failure>,
}

impl SseState {
    fn feed(&mut self, bytes: &[u8], at: Instant) {
        self.buf.extend_from_slice(bytes);
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            self.line(&line, at);
        }
    }

    fn line(&mut self, line: &[u8], at: Instant) {
        let line = line.trim_ascii();
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let data = data.trim_ascii();
        if data == b"[DONE]" {
            self.done = true;
            return;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
            return;
        };
        if v.get("error").is_some() {
            self.failure = Some(Failure::ErrorEvent);
            return;
        }
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            self.usage_tokens = u["completion_tokens"].as_u64().map(|n| n as u32);
            self.cached = u["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .map(|n| n as u32);
        }
        let choice = &v["choices"][0];
        let text = choice["text"]
            .as_str()
            .or_else(|| choice["delta"]["content"].as_str());
        if text.is_some_and(|t| !t.is_empty()) {
            let now = at.elapsed();
            match self.last {
                None => self.first = Some(now),
                Some(prev) => self
                    .gaps_us
                    .push(now.saturating_sub(prev).as_micros() as u64),
            }
            self.last = Some(now);
            self.tokens += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_parser_times_tokens_reads_usage_and_spots_errors_across_chunk_boundaries() {
        let at = Instant::now();
        let mut s = SseState::default();
        let stream = concat!(
            "data: {\"choices\":[{\"text\":\"a \"}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"completion_tokens\":2,\"prompt_tokens_details\":{\"cached_tokens\":32}}}\n\n",
            "data: [DONE]\n\n"
        );
        for piece in stream.as_bytes().chunks(7) {
            s.feed(piece, at);
        }
        assert!(s.done);
        assert_eq!(s.tokens, 2);
        assert_eq!(s.gaps_us.len(), 1);
        assert!(s.first.is_some());
        assert_eq!((s.usage_tokens, s.cached), (Some(2), Some(32)));
        assert_eq!(s.failure, None);
        let mut e = SseState::default();
        e.feed(b"data: {\"error\":{\"message\":\"x\"}}\n\n", at);
        assert_eq!(e.failure, Some(Failure::ErrorEvent));
    }

    #[test]
    fn headers_carry_the_items_metadata() {
        let mut it = WorkItem::plain(0.0, 10, 5);
        it.ttft_ms = Some(100);
        it.e2e_ms = Some(900);
        it.session = Some(4);
        let h = headers(&it);
        assert!(h.contains(&("x-slo-ttft-ms", "100".into())));
        assert!(h.contains(&("x-slo-ms", "900".into())));
        assert!(h.contains(&("x-session-id", "session-4".into())));
        let b = body(&LoadConfig::new("http://x", "m"), &it, 0);
        assert_eq!(
            b["max_tokens"], 5,
            "no cap given: the true length is the cap"
        );
        assert_eq!(b["prompt"].as_str().map(str::len), Some(40));
        it.max_tokens = Some(1024);
        let b = body(&LoadConfig::new("http://x", "m"), &it, 0);
        assert_eq!(
            (b["max_tokens"].as_u64(), b["min_tokens"].as_u64()),
            (Some(1024), Some(5)),
            "the gateway sees the cap, the engine stops at the true length"
        );
    }

    #[test]
    fn an_error_answer_with_a_rejection_code_counts_as_that_rejection() {
        let shed = br#"{"error":{"message":"m","type":"server_error","param":null,"code":"shed"}}"#;
        assert_eq!(
            Failure::from_http(429, shed),
            Failure::Rejected(inferplane_core::RejectKind::Shed)
        );
        assert_eq!(Failure::from_http(502, b"not json"), Failure::Status(502));
        let other = br#"{"error":{"code":"upstream_error"}}"#;
        assert_eq!(Failure::from_http(502, other), Failure::Status(502));
    }
}
