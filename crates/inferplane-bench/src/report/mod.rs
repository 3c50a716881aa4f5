//! Reports: a [`Summary`] of one run (throughput, TTFT / latency / per-token percentiles,
//! SLO attainment per class, errors by kind, utilisation, cost, prefix-cache hit rate,
//! load share), rendered as a markdown "before/after" table across runs (`markdown`) and
//! as JSON.

mod markdown;

pub use markdown::markdown;

use crate::record::RunRecords;
use crate::workload::WorkItem;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;

/// Percentiles of one latency, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    /// From a histogram of microseconds.
    pub fn from_us(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1e3;
        Percentiles {
            count: h.len(),
            mean: h.mean() / 1e3,
            p50: ms(h.value_at_quantile(0.5)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        }
    }
}

/// SLO attainment of one class.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClassSlo {
    /// Class name (`none` for requests without a class).
    pub class: String,
    /// Requests of the class.
    pub requests: u64,
    /// Of which with a TTFT or end-to-end target.
    pub with_slo: u64,
    /// Of which served within every target they had.
    pub met: u64,
    /// `met / with_slo`, when any had an SLO.
    pub attainment: Option<f64>,
    /// Served to the end.
    pub completed: u64,
    /// Turned away by the control plane.
    pub rejected: u64,
    /// TTFT percentiles of the class's served requests.
    pub ttft_ms: Percentiles,
    /// End-to-end percentiles of the class's served requests.
    pub e2e_ms: Percentiles,
}

/// One instance's share of the work.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InstanceShare {
    /// Instance id.
    pub id: String,
    /// Requests it served (or failed).
    pub requests: u64,
    /// Fraction of all placed requests.
    pub share: f64,
    /// Busy time over run time (simulation only).
    pub utilisation: Option<f64>,
}

/// Everything a report says about one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Run label.
    pub label: String,
    /// `live` or `simulated`.
    pub mode: String,
    /// Requests sent.
    pub requests: u64,
    /// Served to the end.
    pub completed: u64,
    /// Turned away by the control plane (queue full, timeouts, 429/503).
    pub rejected: u64,
    /// Failed otherwise.
    pub failed: u64,
    /// Failures and rejections by kind.
    pub errors: BTreeMap<String, u64>,
    /// Rejections by their reason.
    pub rejected_by: BTreeMap<String, u64>,
    /// Run length in (workload) seconds.
    pub duration_s: f64,
    /// Completed requests per second.
    pub throughput_rps: f64,
    /// Throughput at SLO: completed requests that met every target they had (requests
    /// without targets count when completed), per second.
    pub goodput_rps: f64,
    /// Output tokens per second.
    pub output_tokens_per_s: f64,
    /// Time to first token.
    pub ttft_ms: Percentiles,
    /// End to end, served requests.
    pub e2e_ms: Percentiles,
    /// Time per output token after the first, per request.
    pub tpot_ms: Percentiles,
    /// Inter-token gaps (live streaming only).
    pub itl_ms: Option<Percentiles>,
    /// SLO attainment over every request with an SLO.
    pub slo_attainment: Option<f64>,
    /// Per class.
    pub classes: Vec<ClassSlo>,
    /// GPU-weighted busy fraction (simulation only).
    pub utilisation: Option<f64>,
    /// Cluster cost over the run, US dollars (when prices are known).
    pub cost_usd: Option<f64>,
    /// Prompt tokens served from prefix caches over all prompt tokens.
    pub prefix_hit_rate: Option<f64>,
    /// Per-instance load share.
    pub instances: Vec<InstanceShare>,
}

fn hist() -> Histogram<u64> {
    // 1 us .. 1e12 us with 3 significant digits; `new_with_bounds` only fails on bad bounds.
    Histogram::new_with_bounds(1, 1_000_000_000_000, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures are valid"))
    })
}

fn rec(h: &mut Histogram<u64>, secs: f64) {
    h.saturating_record((secs * 1e6).max(1.0) as u64);
}

impl Summary {
    /// Summarises a run of `items`.
    pub fn new(run: &RunRecords, items: &[WorkItem]) -> Self {
        let (mut ttft, mut e2e, mut tpot) = (hist(), hist(), hist());
        let mut s = Summary {
            label: run.label.clone(),
            mode: run.mode.clone(),
            duration_s: run.duration,
            ..Summary::default()
        };
        let mut classes: BTreeMap<String, (ClassSlo, Histogram<u64>, Histogram<u64>)> =
            BTreeMap::new();
        let mut good = 0u64;
        let mut per_inst = vec![0u64; run.instances.len()];
        let (mut out_tokens, mut prompt_seen, mut cached) = (0u64, 0u64, 0u64);
        for r in &run.records {
            s.requests += 1;
            let item = items.get(r.item as usize);
            if let Some(ix) = r.instance.and_then(|i| per_inst.get_mut(i as usize)) {
                *ix += 1;
            }
            let name = item
                .and_then(|i| i.class.clone())
                .unwrap_or_else(|| "none".into());
            let (c, ch, ce) = classes.entry(name.clone()).or_insert_with(|| {
                (
                    ClassSlo {
                        class: name,
                        ..ClassSlo::default()
                    },
                    hist(),
                    hist(),
                )
            });
            c.requests += 1;
            let has_slo = item.is_some_and(|i| i.ttft_ms.is_some() || i.e2e_ms.is_some());
            if has_slo {
                c.with_slo += 1;
            }
            match r.failure {
                Some(f) => {
                    if f.is_rejection() {
                        s.rejected += 1;
                        c.rejected += 1;
                        *s.rejected_by.entry(f.label()).or_default() += 1;
                    } else {
                        s.failed += 1;
                    }
                    *s.errors.entry(f.label()).or_default() += 1;
                }
                None => {
                    s.completed += 1;
                    c.completed += 1;
                    out_tokens += u64::from(r.output_tokens);
                    rec(&mut e2e, r.e2e);
                    rec(ce, r.e2e);
                    if let Some(t) = r.ttft {
                        rec(&mut ttft, t);
                        rec(ch, t);
                        if r.output_tokens > 1 {
                            rec(&mut tpot, (r.e2e - t) / f64::from(r.output_tokens - 1));
                        }
                    }
                    if let (Some(c), Some(i)) = (r.cached_tokens, item) {
                        cached += u64::from(c);
                        prompt_seen += u64::from(i.prompt_tokens);
                    }
                    let met = item.is_some_and(|i| {
                        i.ttft_ms
                            .is_none_or(|ms| r.ttft.is_some_and(|t| t * 1e3 <= ms as f64))
                            && i.e2e_ms.is_none_or(|ms| r.e2e * 1e3 <= ms as f64)
                    });
                    if has_slo && met {
                        c.met += 1;
                    }
                    if !has_slo || met {
                        good += 1;
                    }
                }
            }
        }
        let dur = run.duration.max(1e-9);
        s.throughput_rps = s.completed as f64 / dur;
        s.goodput_rps = good as f64 / dur;
        s.output_tokens_per_s = out_tokens as f64 / dur;
        s.ttft_ms = Percentiles::from_us(&ttft);
        s.e2e_ms = Percentiles::from_us(&e2e);
        s.tpot_ms = Percentiles::from_us(&tpot);
        s.itl_ms = run.itl_us.as_ref().map(Percentiles::from_us);
        let (with, met) = classes
            .values()
            .fold((0, 0), |(w, m), (c, _, _)| (w + c.with_slo, m + c.met));
        s.slo_attainment = (with > 0).then(|| met as f64 / with as f64);
        s.classes = classes
            .into_values()
            .map(|(mut c, h, e)| {
                c.attainment = (c.with_slo > 0).then(|| c.met as f64 / c.with_slo as f64);
                c.ttft_ms = Percentiles::from_us(&h);
                c.e2e_ms = Percentiles::from_us(&e);
                c
            })
            .collect();
        let placed: u64 = per_inst.iter().sum();
        s.instances = run
            .instances
            .iter()
            .zip(&per_inst)
            .map(|(i, &n)| InstanceShare {
                id: i.id.clone(),
                requests: n,
                share: n as f64 / placed.max(1) as f64,
                utilisation: i.busy_secs.map(|b| b / dur),
            })
            .collect();
        let gpus: f64 = run.instances.iter().map(|i| f64::from(i.gpus)).sum();
        if run.instances.iter().all(|i| i.busy_secs.is_some()) && gpus > 0.0 {
            let busy: f64 = run
                .instances
                .iter()
                .map(|i| i.busy_secs.unwrap_or(0.0) * f64::from(i.gpus))
                .sum();
            s.utilisation = Some(busy / (gpus * dur));
        }
        if !run.instances.is_empty() && run.instances.iter().all(|i| i.price_per_gpu_hour.is_some())
        {
            s.cost_usd = Some(
                run.instances
                    .iter()
                    .map(|i| i.price_per_gpu_hour.unwrap_or(0.0) * f64::from(i.gpus) * dur / 3600.0)
                    .sum(),
            );
        }
        let (q, h) = run.instances.iter().fold((0u64, 0u64), |(q, h), i| {
            (
                q + i.prefix_queries.unwrap_or(0),
                h + i.prefix_hits.unwrap_or(0),
            )
        });
        s.prefix_hit_rate = if q > 0 {
            Some(h as f64 / q as f64)
        } else if prompt_seen > 0 {
            Some(cached as f64 / prompt_seen as f64)
        } else {
            None
        };
        s
    }
}

/// The summaries as pretty JSON, for tools.
pub fn json(runs: &[Summary]) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(runs)
}

#[cfg(test)]
mod tests;
