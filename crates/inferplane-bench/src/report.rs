//! Reports: a [`Summary`] of one run (throughput, TTFT / latency / per-token percentiles,
//! SLO attainment per class, errors by kind, utilisation, cost, prefix-cache hit rate,
//! load share), rendered as a markdown "before/after" table across runs and as JSON.

use crate::record::RunRecords;
use crate::workload::WorkItem;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

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

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".into(), |v| format!("{:.1}%", v * 100.0))
}

fn delta(base: f64, v: f64) -> String {
    if base.abs() < 1e-12 {
        return String::new();
    }
    format!(" ({:+.0}%)", (v - base) / base * 100.0)
}

/// The markdown report: the before/after table (first run is the baseline), per-class SLO
/// attainment, errors and load share. `command` is printed so the table can be remade.
pub fn markdown(title: &str, runs: &[Summary], command: Option<&str>) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# {title}\n");
    if let Some(c) = command {
        let _ = writeln!(m, "Made with:\n\n```sh\n{c}\n```\n");
    }
    let _ = write!(m, "| metric |");
    for r in runs {
        let _ = write!(m, " {} ({}) |", r.label, r.mode);
    }
    let _ = write!(m, "\n|---|");
    for _ in runs {
        let _ = write!(m, "---:|");
    }
    m.push('\n');
    type Row = (&'static str, fn(&Summary) -> Option<f64>, bool);
    let rows: [Row; 17] = [
        ("requests", |s| Some(s.requests as f64), false),
        ("completed", |s| Some(s.completed as f64), false),
        (
            "rejected + failed",
            |s| Some((s.rejected + s.failed) as f64),
            true,
        ),
        ("throughput (req/s)", |s| Some(s.throughput_rps), true),
        ("goodput (req/s at SLO)", |s| Some(s.goodput_rps), true),
        ("output tokens/s", |s| Some(s.output_tokens_per_s), true),
        ("TTFT p50 (ms)", |s| Some(s.ttft_ms.p50), true),
        ("TTFT p95 (ms)", |s| Some(s.ttft_ms.p95), true),
        ("TTFT p99 (ms)", |s| Some(s.ttft_ms.p99), true),
        ("latency p50 (ms)", |s| Some(s.e2e_ms.p50), true),
        ("latency p95 (ms)", |s| Some(s.e2e_ms.p95), true),
        ("latency p99 (ms)", |s| Some(s.e2e_ms.p99), true),
        ("TPOT p50 (ms)", |s| Some(s.tpot_ms.p50), true),
        (
            "SLO attainment (%)",
            |s| s.slo_attainment.map(|v| v * 100.0),
            true,
        ),
        (
            "GPU utilisation (%)",
            |s| s.utilisation.map(|v| v * 100.0),
            true,
        ),
        ("cost (USD)", |s| s.cost_usd, true),
        (
            "prefix-cache hit rate (%)",
            |s| s.prefix_hit_rate.map(|v| v * 100.0),
            true,
        ),
    ];
    for (name, f, show_delta) in rows {
        let _ = write!(m, "| {name} |");
        let base = runs.first().and_then(f);
        for (i, r) in runs.iter().enumerate() {
            match f(r) {
                Some(v) => {
                    let d = match (i > 0 && show_delta, base) {
                        (true, Some(b)) => delta(b, v),
                        _ => String::new(),
                    };
                    let digits = if v.abs() >= 100.0 || v.fract() == 0.0 {
                        0
                    } else {
                        2
                    };
                    let _ = write!(m, " {v:.digits$}{d} |");
                }
                None => m.push_str(" n/a |"),
            }
        }
        m.push('\n');
    }
    let _ = writeln!(m, "\n## SLO attainment by class\n");
    let _ = writeln!(
        m,
        "| run | class | requests | completed | rejected | with SLO | met | attainment | TTFT p50 (ms) | TTFT p99 (ms) | e2e p99 (ms) |"
    );
    let _ = writeln!(m, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        for c in &r.classes {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} |",
                r.label,
                c.class,
                c.requests,
                c.completed,
                c.rejected,
                c.with_slo,
                c.met,
                pct(c.attainment),
                c.ttft_ms.p50,
                c.ttft_ms.p99,
                c.e2e_ms.p99
            );
        }
    }
    let _ = writeln!(m, "\n## Load share\n");
    let _ = writeln!(m, "| run | instance | requests | share | utilisation |");
    let _ = writeln!(m, "|---|---|---:|---:|---:|");
    for r in runs {
        for i in &r.instances {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {:.1}% | {} |",
                r.label,
                i.id,
                i.requests,
                i.share * 100.0,
                pct(i.utilisation)
            );
        }
    }
    if runs.iter().any(|r| !r.errors.is_empty()) {
        let _ = writeln!(m, "\n## Errors by kind\n");
        let _ = writeln!(m, "| run | kind | count |\n|---|---|---:|");
        for r in runs {
            for (k, n) in &r.errors {
                let _ = writeln!(m, "| {} | {k} | {n} |", r.label);
            }
        }
    }
    m
}

/// The summaries as pretty JSON, for tools.
pub fn json(runs: &[Summary]) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(runs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Failure, InstanceUsage, Record};

    #[test]
    fn summary_counts_percentiles_slo_and_share() {
        let mut items: Vec<WorkItem> = (0..4).map(|i| WorkItem::plain(i as f64, 10, 11)).collect();
        for it in &mut items {
            it.class = Some("c".into());
            it.ttft_ms = Some(150);
        }
        let ok = |item: u32, ttft: f64, inst: u32| Record {
            item,
            arrival: f64::from(item),
            failure: None,
            instance: Some(inst),
            ttft: Some(ttft),
            e2e: ttft + 1.0,
            output_tokens: 11,
            cached_tokens: Some(5),
        };
        let mut rejected = ok(3, 0.0, 0);
        rejected.failure = Some(Failure::Rejected(inferplane_core::RejectKind::QueueFull));
        rejected.instance = None;
        let run = RunRecords {
            label: "x".into(),
            mode: "simulated".into(),
            duration: 10.0,
            records: vec![ok(0, 0.1, 0), ok(1, 0.1, 1), ok(2, 0.2, 1), rejected],
            instances: vec![
                InstanceUsage {
                    id: "a".into(),
                    gpus: 1,
                    busy_secs: Some(5.0),
                    price_per_gpu_hour: Some(3.6),
                    ..Default::default()
                },
                InstanceUsage {
                    id: "b".into(),
                    gpus: 1,
                    busy_secs: Some(10.0),
                    price_per_gpu_hour: Some(3.6),
                    ..Default::default()
                },
            ],
            itl_us: None,
        };
        let s = Summary::new(&run, &items);
        assert_eq!(
            (s.requests, s.completed, s.rejected, s.failed),
            (4, 3, 1, 0)
        );
        assert_eq!(s.errors.get("queue_full"), Some(&1));
        assert_eq!(s.rejected_by.get("queue_full"), Some(&1));
        assert_eq!(s.classes[0].completed + s.classes[0].rejected, 4);
        assert!(
            (s.goodput_rps - 0.2).abs() < 1e-9,
            "2 served within 150 ms over 10 s"
        );
        assert!((s.throughput_rps - 0.3).abs() < 1e-9);
        assert!((s.ttft_ms.p50 - 100.0).abs() < 0.5, "{:?}", s.ttft_ms);
        assert!((s.tpot_ms.p50 - 100.0).abs() < 0.5, "1 s over 10 tokens");
        assert_eq!(
            s.slo_attainment,
            Some(0.5),
            "2 of 4 met 150 ms; the rejected one missed"
        );
        assert_eq!(s.instances[1].requests, 2);
        assert!((s.utilisation.unwrap() - 0.75).abs() < 1e-9);
        assert!((s.cost_usd.unwrap() - 0.02).abs() < 1e-9);
        assert!((s.prefix_hit_rate.unwrap() - 0.5).abs() < 1e-9);
        let md = markdown("t", &[s.clone(), s], Some("inferplane bench"));
        assert!(
            md.contains("| TTFT p99 (ms) |") && md.contains("(+0%)"),
            "{md}"
        );
        assert!(md.contains("queue_full"));
    }
}
