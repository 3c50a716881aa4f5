//! The markdown rendering of run summaries: the before/after table (first run is the
//! baseline), SLO attainment by class, load share and errors by kind.

use super::Summary;
use std::fmt::Write as _;

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
