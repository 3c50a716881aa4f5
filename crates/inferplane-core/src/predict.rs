//! Predictions: per-instance [`Rates`] (prefill speed, decode speed, fixed overhead), the
//! output length of a request ([`OutputLengths`], learned per priority class, never read
//! from the request's true answer), and the time-to-first-token, completion and cost
//! estimates built from them.
//!
//! Rates start from a rough default derived from the instance's layout
//! ([`Rates::for_layout`]), can be set by the caller (the gateway and the simulation seed
//! them from the planner's cost model) and are then corrected by every measured
//! completion with an EWMA ([`Rates::observe_prefill`], [`Rates::observe_decode`]).
//!
//! Cost ([`cost_estimate`]) is what a request would cost on an instance at that
//! instance's real throughput: its price times the GPU time one request takes when the
//! instance runs a full batch, so instances of one kind cost the same whatever their
//! momentary load, and a cheap instance fills first without taking everything.

use crate::instance::{InstanceSpec, Layout, Price};
use crate::request::{Priority, RequestMeta};
use std::time::Duration;

/// Weight of a new measurement in the rates' EWMA.
pub const RATE_EWMA_ALPHA: f64 = 0.2;

/// Time per output token as a function of the running batch: `scale * (base + per_seq *
/// batch)`. The shape (`base`, `per_seq`) comes from the planner's step model for a known
/// GPU (`per_seq` includes each sequence's KV reads at a typical context), else is
/// proportional to the batch; `scale` is learned from measured completions (their mean
/// time per token against the mean batch they decoded in), so a wrong shape still lands
/// on the measured operating point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeModel {
    /// Seconds of a step at an empty batch.
    pub base: f64,
    /// Seconds each running sequence adds to a step.
    pub per_seq: f64,
    /// Measured over modelled time per token (1 until measured).
    pub scale: f64,
    /// Completions learned from.
    pub samples: u64,
}

impl Default for DecodeModel {
    fn default() -> Self {
        DecodeModel {
            base: 0.0,
            per_seq: 1.0,
            scale: 1.0,
            samples: 0,
        }
    }
}

impl DecodeModel {
    /// A model of this shape, not measured yet.
    pub fn new(base: f64, per_seq: f64) -> Self {
        DecodeModel {
            base: base.max(0.0),
            per_seq: per_seq.max(1e-12),
            scale: 1.0,
            samples: 0,
        }
    }

    fn shape(&self, batch: f64) -> f64 {
        self.base + self.per_seq * batch.max(1.0)
    }

    /// Predicted seconds per output token at `batch` running sequences (meaningful once
    /// measured, or when the shape came from the planner).
    pub fn tpot(&self, batch: f64) -> f64 {
        self.scale * self.shape(batch)
    }

    /// Folds in a completion that decoded at `tpot` seconds per token among `batch`
    /// sequences on average.
    pub fn observe(&mut self, batch: f64, tpot: f64) {
        if !(batch.is_finite() && batch > 0.0 && tpot.is_finite() && tpot > 0.0) {
            return;
        }
        let ratio = tpot / self.shape(batch);
        self.scale = if self.samples == 0 {
            ratio
        } else {
            self.scale + 0.1 * (ratio - self.scale)
        };
        self.samples += 1;
    }

    /// The largest batch whose predicted time per token is at most `tpot` (0 when even
    /// one sequence is slower); `None` before any measurement of a proportional model
    /// (its scale means nothing yet).
    pub fn max_batch_for(&self, tpot: f64) -> Option<u32> {
        if self.samples == 0 && self.base == 0.0 {
            return None;
        }
        let b = (tpot / self.scale.max(1e-12) - self.base) / self.per_seq;
        Some(if b.is_finite() && b > 0.0 {
            b.floor().min(f64::from(u32::MAX)) as u32
        } else {
            0
        })
    }
}

/// How fast an instance serves one request, at its usual batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// Prompt tokens prefilled per second for one request.
    pub prefill_tokens_per_sec: f64,
    /// Seconds between two generated tokens of one request (inter-token latency at the
    /// instance's usual batch).
    pub decode_secs_per_token: f64,
    /// Fixed seconds per request (network, tokenizer, scheduling inside the engine).
    pub overhead_secs: f64,
    /// Completions measured so far (0 means the rates are still a seed).
    pub samples: u64,
    /// Time per output token by batch size.
    pub decode: DecodeModel,
}

impl Default for Rates {
    fn default() -> Self {
        Rates::for_layout(&Layout::SINGLE)
    }
}

impl Rates {
    /// A rough seed from the layout alone, used until the caller or measurements say
    /// better: one GPU prefills 8,000 tokens/s and decodes a token every 25 ms; tensor and
    /// expert parallelism speed both up sub-linearly (efficiency 0.8 per doubling), pipeline
    /// stages add 2 ms of latency each, and data-parallel replicas inside one instance do not
    /// speed up a single request.
    pub fn for_layout(layout: &Layout) -> Self {
        let shard = f64::from(layout.tp.max(1)) * f64::from(layout.ep.max(1)).sqrt();
        let speedup = shard.powf(0.8_f64.log2() + 1.0);
        Rates {
            prefill_tokens_per_sec: 8_000.0 * speedup,
            decode_secs_per_token: 0.025 / speedup,
            overhead_secs: 0.005 + 0.002 * f64::from(layout.pp.max(1) - 1),
            samples: 0,
            decode: DecodeModel::default(),
        }
    }

    /// Seconds to prefill `prompt_tokens`, without the fixed overhead.
    pub fn prefill_secs(&self, prompt_tokens: u32) -> f64 {
        f64::from(prompt_tokens) / self.prefill_tokens_per_sec.max(1e-9)
    }

    /// Seconds from the start of its prefill to the first token for `prompt_tokens`.
    pub fn ttft_secs(&self, prompt_tokens: u32) -> f64 {
        self.overhead_secs + self.prefill_secs(prompt_tokens)
    }

    /// Seconds from the start of its prefill to the last of `output_tokens`.
    pub fn service_secs(&self, prompt_tokens: u32, output_tokens: u32) -> f64 {
        self.ttft_secs(prompt_tokens) + f64::from(output_tokens) * self.decode_secs_per_token
    }

    /// The weight of a new decode measurement: the plain mean of the measurements so far
    /// until there are `1 / RATE_EWMA_ALPHA`, the EWMA after; so the first one replaces the
    /// seed (a guess from the layout, or the planner's forecast) and a seed far off costs
    /// one answer, not dozens. (Prefill samples move by the EWMA weight from the start: a
    /// first token measures prefill mixed with whatever the engine was decoding then, so a
    /// single one says less about the instance than the seed does.)
    fn weight(&self) -> f64 {
        RATE_EWMA_ALPHA.max(1.0 / (self.samples as f64 + 1.0))
    }

    /// Folds in one measured first token: the engine prefilled `tokens` (the prompts
    /// pending ahead of it and its own) in `secs` (from placement to its first token).
    /// Implausible samples (no tokens, zero or negative durations) leave the rate alone.
    pub fn observe_prefill(&mut self, tokens: u64, secs: f64) {
        let secs = secs - self.overhead_secs;
        if tokens > 0 && secs > 0.0 && secs.is_finite() {
            let sample = tokens as f64 / secs;
            self.prefill_tokens_per_sec += RATE_EWMA_ALPHA * (sample - self.prefill_tokens_per_sec);
        }
    }

    /// Folds in one measured completion: `completion_tokens` generated over `decode_secs`
    /// from the first token to the last. Implausible samples leave the rate alone.
    pub fn observe_decode(&mut self, completion_tokens: u32, decode_secs: Option<f64>) {
        if let Some(d) = decode_secs
            && completion_tokens > 1
            && d > 0.0
            && d.is_finite()
        {
            let sample = d / f64::from(completion_tokens - 1);
            self.decode_secs_per_token += self.weight() * (sample - self.decode_secs_per_token);
        }
        self.samples += 1;
    }
}

/// Completions of a class before its own mean is trusted (until then the pool-wide mean,
/// and before that `max_tokens`).
pub const OUTPUT_MIN_SAMPLES: u64 = 16;

/// The quantile of a class's output lengths that deadline-aware admission plans for.
pub const LONG_QUANTILE: f64 = 0.99;

/// Weight of a new completion in the output-length EWMA once warmed up.
pub const OUTPUT_EWMA_ALPHA: f64 = 0.02;

/// Buckets of the output-length histogram: bucket `i` holds lengths up to `1.25^(i+1)`.
const BUCKETS: usize = 48;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Mean {
    mean: f64,
    samples: u64,
    buckets: [u32; BUCKETS],
}

impl Default for Mean {
    fn default() -> Self {
        Mean::EMPTY
    }
}

impl Mean {
    const EMPTY: Mean = Mean {
        mean: 0.0,
        samples: 0,
        buckets: [0; BUCKETS],
    };

    fn observe(&mut self, x: f64) {
        self.samples += 1;
        // A running average while warming up, then an EWMA that follows drift.
        let w = (1.0 / self.samples as f64).max(OUTPUT_EWMA_ALPHA);
        self.mean += w * (x - self.mean);
        let b = (x.max(1.0).ln() / 1.25f64.ln()).floor() as usize;
        let b = b.min(BUCKETS - 1);
        self.buckets[b] = self.buckets[b].saturating_add(1);
        if self.buckets[b] == u32::MAX {
            self.buckets.iter_mut().for_each(|n| *n /= 2);
        }
    }

    fn get(&self) -> Option<f64> {
        (self.samples >= OUTPUT_MIN_SAMPLES).then_some(self.mean)
    }

    /// The `q` quantile (upper bucket bound), once warmed up.
    fn quantile(&self, q: f64) -> Option<f64> {
        if self.samples < OUTPUT_MIN_SAMPLES {
            return None;
        }
        let total: u64 = self.buckets.iter().map(|&n| u64::from(n)).sum();
        let want = (q.clamp(0.0, 1.0) * total as f64).ceil() as u64;
        let mut seen = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += u64::from(n);
            if seen >= want.max(1) {
                return Some(1.25f64.powi(i as i32 + 1));
            }
        }
        None
    }
}

/// Predicted output lengths, learned online from completions per priority class. A
/// request's prediction is `min(max_tokens, mean of its class)`, falling back to the
/// pool-wide mean and, before any completion, to `max_tokens` itself (the most it could
/// take). The request's true length is never an input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutputLengths {
    classes: [Mean; 4],
    all: Mean,
}

impl Default for OutputLengths {
    fn default() -> Self {
        OutputLengths::EMPTY
    }
}

impl OutputLengths {
    /// Nothing learned yet.
    pub const EMPTY: OutputLengths = OutputLengths {
        classes: [Mean::EMPTY; 4],
        all: Mean::EMPTY,
    };

    /// Learns from one completed request.
    pub fn observe(&mut self, class: Priority, completion_tokens: u32) {
        let x = f64::from(completion_tokens);
        self.classes[class.index()].observe(x);
        self.all.observe(x);
    }

    /// The predicted output length of `req`.
    pub fn predict(&self, req: &RequestMeta) -> u32 {
        let learned = self.classes[req.priority.index()]
            .get()
            .or_else(|| self.all.get());
        match learned {
            Some(m) => (m.round().max(1.0) as u32).min(req.max_tokens.max(1)),
            None => req.max_tokens.max(1),
        }
    }

    /// A long output for `req`: the [`LONG_QUANTILE`] of its class (else of the pool), at
    /// most `max_tokens`; `max_tokens` before anything is learned. What deadline-aware
    /// admission plans for, so that most answers, not just the typical one, arrive in time.
    pub fn predict_long(&self, req: &RequestMeta) -> u32 {
        let learned = self.classes[req.priority.index()]
            .quantile(LONG_QUANTILE)
            .or_else(|| self.all.quantile(LONG_QUANTILE));
        match learned {
            Some(q) => (q.round().max(1.0) as u32).min(req.max_tokens.max(1)),
            None => req.max_tokens.max(1),
        }
    }

    /// The pool-wide mean output length, once warmed up.
    pub fn mean(&self) -> Option<f64> {
        self.all.get()
    }

    /// Completions learned from.
    pub fn samples(&self) -> u64 {
        self.all.samples
    }
}

/// Dollars `req` is predicted to cost on an instance (`spec`, `rates`, running at most
/// `batch` requests at once) with `output_tokens` of output: a GPU-hour price times the GPU
/// time one request takes at the instance's full-batch throughput (service time over the
/// batch), a token price times the tokens. An instance without a price costs 0.
pub fn cost_estimate(
    spec: &InstanceSpec,
    rates: &Rates,
    batch: u32,
    prompt_tokens: u32,
    output_tokens: u32,
) -> f64 {
    match spec.price {
        None => 0.0,
        Some(Price::PerGpuHour(per_hour)) => {
            let service = rates.service_secs(prompt_tokens, output_tokens);
            per_hour * f64::from(spec.gpu_count().max(1)) * service
                / 3600.0
                / f64::from(batch.max(1))
        }
        Some(Price::PerMillionTokens { input, output }) => {
            (input * f64::from(prompt_tokens) + output * f64::from(output_tokens)) / 1e6
        }
    }
}

/// Seconds as a `Duration`, clamping negatives and non-finite values.
pub fn secs(d: f64) -> Duration {
    if d.is_finite() && d > 0.0 {
        Duration::from_secs_f64(d.min(1e9))
    } else if d.is_finite() {
        Duration::ZERO
    } else {
        Duration::from_secs(1_000_000_000)
    }
}

#[cfg(test)]
#[path = "predict_tests.rs"]
mod tests;
