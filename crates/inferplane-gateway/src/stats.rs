//! Request accounting behind `GET /admin/metrics`: the seed's `PerformanceMetrics`
//! (totals, completed, failed, active, queued; latency avg/p50/p95/p99; tokens/s and
//! requests/s; SLO violations and compliance rate), for the whole gateway, per pool and
//! per instance. Owned by the dispatcher task; no locks.

use hdrhistogram::Histogram;
use inferplane_core::Outcome;
use serde::Serialize;
use std::time::Duration;

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Mean.
    pub avg: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Samples.
    pub count: u64,
}

/// One accumulator of finished requests.
#[derive(Debug, Clone)]
pub struct Stats {
    requests: u64,
    completed: u64,
    failed: u64,
    rejected: u64,
    cancelled: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    slo_tracked: u64,
    slo_violations: u64,
    cost_usd: f64,
    latency_us: Histogram<u64>,
    ttft_us: Histogram<u64>,
}

/// How one request ended, for accounting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Finished {
    /// Served.
    Completed {
        /// End-to-end latency.
        latency: Duration,
        /// Time to the first streamed token (`None` for a whole, non-streamed answer).
        ttft: Option<Duration>,
        /// Prompt tokens.
        prompt_tokens: u64,
        /// Completion tokens.
        completion_tokens: u64,
        /// Estimated cost.
        cost_usd: f64,
        /// `Some(met)` when the request had an SLO.
        slo_met: Option<bool>,
    },
    /// Failed (upstream errors, broken stream, engine 4xx).
    Failed {
        /// `Some(false)` when the request had an SLO (a failure misses it).
        slo_met: Option<bool>,
    },
    /// Refused or expired by the scheduler.
    Rejected {
        /// `Some(false)` when the request had an SLO.
        slo_met: Option<bool>,
    },
    /// The client went away.
    Cancelled,
}

impl Finished {
    /// How the request ended, from its ending attempt's outcome (with the SLO verdict and
    /// cost computed once): `None` for an attempt being retried.
    pub fn of(outcome: &Outcome, slo_met: Option<bool>, cost_usd: f64) -> Option<Finished> {
        match *outcome {
            Outcome::Success {
                prompt_tokens,
                completion_tokens,
                first_token,
                latency,
                ..
            } => Some(Finished::Completed {
                latency,
                // a whole (non-streamed) answer has no first token the client saw
                ttft: first_token,
                prompt_tokens: u64::from(prompt_tokens),
                completion_tokens: u64::from(completion_tokens),
                cost_usd,
                slo_met,
            }),
            Outcome::Failed { retrying: true } => None,
            Outcome::Cancelled => Some(Finished::Cancelled),
            Outcome::ClientError | Outcome::Failed { .. } | Outcome::StreamBroken => {
                Some(Finished::Failed { slo_met })
            }
        }
    }
}

fn histogram() -> Histogram<u64> {
    // 1 us .. 1 hour at 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, h.high());
    h.saturating_record(us);
}

fn summary(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Percentiles {
        avg: h.mean() / 1000.0,
        p50: ms(h.value_at_quantile(0.50)),
        p95: ms(h.value_at_quantile(0.95)),
        p99: ms(h.value_at_quantile(0.99)),
        count: h.len(),
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            requests: 0,
            completed: 0,
            failed: 0,
            rejected: 0,
            cancelled: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            slo_tracked: 0,
            slo_violations: 0,
            cost_usd: 0.0,
            latency_us: histogram(),
            ttft_us: histogram(),
        }
    }
}

impl Stats {
    /// Accounts one finished request.
    pub fn record(&mut self, f: Finished) {
        self.requests += 1;
        let slo = match f {
            Finished::Completed {
                latency,
                ttft,
                prompt_tokens,
                completion_tokens,
                cost_usd,
                slo_met,
            } => {
                self.completed += 1;
                self.prompt_tokens += prompt_tokens;
                self.completion_tokens += completion_tokens;
                self.cost_usd += cost_usd;
                record(&mut self.latency_us, latency);
                if let Some(t) = ttft {
                    record(&mut self.ttft_us, t);
                }
                slo_met
            }
            Finished::Failed { slo_met } => {
                self.failed += 1;
                slo_met
            }
            Finished::Rejected { slo_met } => {
                self.rejected += 1;
                slo_met
            }
            Finished::Cancelled => {
                self.cancelled += 1;
                None
            }
        };
        if let Some(met) = slo {
            self.slo_tracked += 1;
            if !met {
                self.slo_violations += 1;
            }
        }
    }

    /// The JSON view, with rates over `elapsed` and the live gauges given.
    pub fn view(&self, elapsed: Duration, active: u64, queued: u64) -> PerformanceMetrics {
        let secs = elapsed.as_secs_f64().max(1e-9);
        PerformanceMetrics {
            requests_total: self.requests + active + queued,
            completed: self.completed,
            failed: self.failed,
            rejected: self.rejected,
            cancelled: self.cancelled,
            active,
            queued,
            latency_ms: summary(&self.latency_us),
            ttft_ms: summary(&self.ttft_us),
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            tokens_per_sec: (self.prompt_tokens + self.completion_tokens) as f64 / secs,
            completion_tokens_per_sec: self.completion_tokens as f64 / secs,
            requests_per_sec: self.completed as f64 / secs,
            slo_tracked: self.slo_tracked,
            slo_violations: self.slo_violations,
            slo_compliance_rate: (self.slo_tracked > 0)
                .then(|| 1.0 - self.slo_violations as f64 / self.slo_tracked as f64),
            cost_usd: self.cost_usd,
        }
    }
}

/// The seed's `PerformanceMetrics`, as JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerformanceMetrics {
    /// Every request seen (finished, active and queued).
    pub requests_total: u64,
    /// Served completely.
    pub completed: u64,
    /// Failed.
    pub failed: u64,
    /// Refused or expired by the scheduler.
    pub rejected: u64,
    /// Clients that went away.
    pub cancelled: u64,
    /// In flight now.
    pub active: u64,
    /// Waiting in the queue now.
    pub queued: u64,
    /// End-to-end latency of completed requests.
    pub latency_ms: Percentiles,
    /// Time to first token of completed requests.
    pub ttft_ms: Percentiles,
    /// Prompt tokens served.
    pub prompt_tokens: u64,
    /// Completion tokens served.
    pub completion_tokens: u64,
    /// Prompt plus completion tokens per second since start.
    pub tokens_per_sec: f64,
    /// Completion tokens per second since start.
    pub completion_tokens_per_sec: f64,
    /// Completed requests per second since start.
    pub requests_per_sec: f64,
    /// Requests that had an SLO.
    pub slo_tracked: u64,
    /// Of those, how many missed it.
    pub slo_violations: u64,
    /// `1 - violations / tracked`, when any request had an SLO.
    pub slo_compliance_rate: Option<f64>,
    /// Estimated cost in US dollars.
    pub cost_usd: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_rates_and_slo_compliance_add_up() {
        let mut s = Stats::default();
        for ms in 1..=100u64 {
            s.record(Finished::Completed {
                latency: Duration::from_millis(ms),
                ttft: Some(Duration::from_millis(1)),
                prompt_tokens: 10,
                completion_tokens: 5,
                cost_usd: 0.001,
                slo_met: Some(ms <= 90),
            });
        }
        s.record(Finished::Failed {
            slo_met: Some(false),
        });
        s.record(Finished::Rejected { slo_met: None });
        s.record(Finished::Cancelled);
        let v = s.view(Duration::from_secs(10), 2, 3);
        assert_eq!(v.requests_total, 103 + 5);
        assert_eq!(
            (v.completed, v.failed, v.rejected, v.cancelled),
            (100, 1, 1, 1)
        );
        assert!((v.latency_ms.p50 - 50.0).abs() < 0.1, "{:?}", v.latency_ms);
        assert!((v.latency_ms.p99 - 99.0).abs() < 0.1);
        assert!((v.latency_ms.avg - 50.5).abs() < 0.1);
        assert_eq!(v.completion_tokens, 500);
        assert!((v.completion_tokens_per_sec - 50.0).abs() < 1e-9);
        assert!((v.requests_per_sec - 10.0).abs() < 1e-9);
        assert_eq!((v.slo_tracked, v.slo_violations), (101, 11));
        assert!((v.slo_compliance_rate.unwrap() - 90.0 / 101.0).abs() < 1e-12);
        assert!((v.cost_usd - 0.1).abs() < 1e-9);
        assert_eq!(
            Stats::default()
                .view(Duration::ZERO, 0, 0)
                .slo_compliance_rate,
            None
        );
    }
}
