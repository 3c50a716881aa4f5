//! Predictions: per-instance `Rates` (prefill speed, decode speed, fixed overhead) and the
//! time-to-first-token, completion and cost estimates built from them.
//!
//! Rates start from a rough default derived from the instance's layout
//! ([`Rates::for_layout`]), can be set by the caller (the gateway seeds them from the
//! planner's cost model through `Scheduler::set_rates`) and are then corrected by every
//! measured completion with an EWMA ([`Rates::observe`]).

use crate::instance::{InstanceSpec, Layout};
use crate::request::RequestMeta;
use std::time::Duration;

/// Weight of a new measurement in the rates' EWMA.
pub const RATE_EWMA_ALPHA: f64 = 0.2;

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
        }
    }

    /// Seconds from placement to the first token for `prompt_tokens`.
    pub fn ttft_secs(&self, prompt_tokens: u32) -> f64 {
        self.overhead_secs + f64::from(prompt_tokens) / self.prefill_tokens_per_sec.max(1e-9)
    }

    /// Seconds from placement to the last of `output_tokens`.
    pub fn service_secs(&self, prompt_tokens: u32, output_tokens: u32) -> f64 {
        self.ttft_secs(prompt_tokens) + f64::from(output_tokens) * self.decode_secs_per_token
    }

    /// Folds in one measured completion: `ttft_secs` from placement to the first token,
    /// `total_secs` from placement to the last. Implausible samples (zero or negative
    /// durations, no tokens) leave the rates untouched.
    pub fn observe(
        &mut self,
        prompt_tokens: u32,
        completion_tokens: u32,
        ttft_secs: f64,
        total_secs: f64,
    ) {
        let a = RATE_EWMA_ALPHA;
        let prefill_secs = ttft_secs - self.overhead_secs;
        if prompt_tokens > 0 && prefill_secs > 0.0 && prefill_secs.is_finite() {
            let sample = f64::from(prompt_tokens) / prefill_secs;
            self.prefill_tokens_per_sec = (1.0 - a) * self.prefill_tokens_per_sec + a * sample;
        }
        let decode_secs = total_secs - ttft_secs;
        if completion_tokens > 1 && decode_secs > 0.0 && decode_secs.is_finite() {
            let sample = decode_secs / f64::from(completion_tokens - 1);
            self.decode_secs_per_token = (1.0 - a) * self.decode_secs_per_token + a * sample;
        }
        self.samples += 1;
    }
}

/// What one request would see on one instance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Seconds from now to the first token.
    pub ttft_secs: f64,
    /// Seconds from now to completion.
    pub completion_secs: f64,
    /// Dollars, or 0 for an instance without a price.
    pub cost: f64,
}

/// Estimates `req` on an instance with `rates`, starting after `wait_secs` of waiting.
/// Output length is taken as `max_tokens`: the most it could take and cost.
pub fn estimate(
    req: &RequestMeta,
    spec: &InstanceSpec,
    rates: &Rates,
    inflight: u32,
    wait_secs: f64,
) -> Estimate {
    let ttft = wait_secs + rates.ttft_secs(req.prompt_tokens);
    let service = rates.service_secs(req.prompt_tokens, req.max_tokens);
    let cost = spec.price.map_or(0.0, |p| {
        p.cost(
            u64::from(req.prompt_tokens),
            u64::from(req.max_tokens),
            spec.gpu_count(),
            service,
            f64::from(inflight.saturating_add(1)),
        )
    });
    Estimate {
        ttft_secs: ttft,
        completion_secs: wait_secs + service,
        cost,
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
mod tests {
    use super::*;
    use crate::instance::Price;
    use crate::request::RequestId;
    use crate::time::Time;

    #[test]
    fn layout_seed_makes_tensor_parallel_faster_and_single_gpu_the_base() {
        let one = Rates::for_layout(&Layout::SINGLE);
        assert_eq!(one.prefill_tokens_per_sec, 8_000.0);
        assert_eq!(one.decode_secs_per_token, 0.025);
        let tp4 = Rates::for_layout(&Layout {
            tp: 4,
            ..Layout::SINGLE
        });
        // two doublings at 0.8 efficiency: 4 * 0.64 = 2.56x
        assert!((tp4.prefill_tokens_per_sec - 8_000.0 * 2.56).abs() < 1e-6);
        let dp4 = Rates::for_layout(&Layout {
            dp: 4,
            ..Layout::SINGLE
        });
        assert_eq!(dp4.prefill_tokens_per_sec, one.prefill_tokens_per_sec);
    }

    #[test]
    fn estimates_add_wait_prefill_and_decode_and_price_the_service_time() {
        let rates = Rates {
            prefill_tokens_per_sec: 1000.0,
            decode_secs_per_token: 0.01,
            overhead_secs: 0.0,
            samples: 0,
        };
        let mut spec = InstanceSpec::new("a", "u", "m", 4);
        spec.price = Some(Price::PerGpuHour(3600.0));
        let req = RequestMeta::new(RequestId(1), "m", 500, 100, Time::ZERO);
        let e = estimate(&req, &spec, &rates, 0, 1.0);
        assert!((e.ttft_secs - 1.5).abs() < 1e-9);
        assert!((e.completion_secs - 2.5).abs() < 1e-9);
        // $1 per GPU-second, 1.5 s of service, alone
        assert!((e.cost - 1.5).abs() < 1e-9);
        let shared = estimate(&req, &spec, &rates, 2, 0.0);
        assert!((shared.cost - 0.5).abs() < 1e-9);
    }

    #[test]
    fn observed_completions_move_rates_by_the_ewma_weight() {
        let mut r = Rates {
            prefill_tokens_per_sec: 1000.0,
            decode_secs_per_token: 0.01,
            overhead_secs: 0.0,
            samples: 0,
        };
        // 1000 tokens in 0.5 s = 2000 tok/s; 11 tokens over 1.0 s of decode = 0.1 s/token
        r.observe(1000, 11, 0.5, 1.5);
        assert!((r.prefill_tokens_per_sec - 1200.0).abs() < 1e-9);
        assert!((r.decode_secs_per_token - 0.028).abs() < 1e-12);
        assert_eq!(r.samples, 1);
        let before = r;
        r.observe(0, 0, -1.0, f64::NAN);
        assert_eq!(r.prefill_tokens_per_sec, before.prefill_tokens_per_sec);
        assert_eq!(r.decode_secs_per_token, before.decode_secs_per_token);
    }
}
