//! Plots as hand-written SVG (no plotting or font dependencies): latency CDFs, TTFT over
//! time and per-instance load share, one series per run.

use crate::record::RunRecords;
use crate::workload::WorkItem;
use std::fmt::Write as _;

const W: f64 = 1000.0;
const H: f64 = 420.0;
const L: f64 = 70.0;
const R: f64 = 330.0;
const T: f64 = 40.0;
const B: f64 = 50.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// A named polyline.
pub struct Series {
    /// Legend name.
    pub name: String,
    /// Points (x, y).
    pub points: Vec<(f64, f64)>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn header(title: &str, xlabel: &str, ylabel: &str) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="{W}" height="{H}" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>
<text x="{}" y="{}" text-anchor="middle">{}</text>
<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>
"#,
        (W - R + L) / 2.0,
        esc(title),
        (W - R + L) / 2.0,
        H - 10.0,
        esc(xlabel),
        (H - B + T) / 2.0,
        (H - B + T) / 2.0,
        esc(ylabel)
    );
    s
}

fn axes(s: &mut String, xmax: f64, ymax: f64) {
    let (pw, ph) = (W - L - R, H - T - B);
    let _ = writeln!(
        s,
        r##"<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
    );
    for k in 0..=5 {
        let f = f64::from(k) / 5.0;
        let x = L + f * pw;
        let y = T + ph - f * ph;
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{T}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            T + ph,
            T + ph + 16.0,
            tick(f * xmax)
        );
        let _ = writeln!(
            s,
            r##"<line x1="{L}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            L + pw,
            L - 6.0,
            y + 4.0,
            tick(f * ymax)
        );
    }
}

/// The smallest "nice" axis end (a round step of 1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times a
/// power of ten, times 5 ticks) at or
/// above `max`, so tick labels are round numbers.
fn nice_max(max: f64) -> f64 {
    if !(max.is_finite() && max > 0.0) {
        return 1.0;
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    step * 5.0
}

fn tick(v: f64) -> String {
    if v >= 100.0 || v == 0.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn legend(s: &mut String, names: &[String]) {
    for (k, n) in names.iter().enumerate() {
        let y = T + 10.0 + 18.0 * k as f64;
        let c = COLORS[k % COLORS.len()];
        let _ = writeln!(
            s,
            r#"<rect x="{}" y="{:.1}" width="12" height="12" fill="{c}"/><text x="{}" y="{:.1}">{}</text>"#,
            W - R + 12.0,
            y - 10.0,
            W - R + 30.0,
            y,
            esc(n)
        );
    }
}

/// A line chart of several series on shared axes starting at zero.
pub fn line_chart(title: &str, xlabel: &str, ylabel: &str, series: &[Series]) -> String {
    let mut s = header(title, xlabel, ylabel);
    let pts = series.iter().flat_map(|x| x.points.iter());
    let xmax = pts.clone().map(|p| p.0).fold(0.0, f64::max).max(1e-9);
    let ymax = pts.map(|p| p.1).fold(0.0, f64::max).max(1e-9);
    let (xmax, ymax) = (
        nice_max(xmax),
        if ymax <= 1.0 { 1.0 } else { nice_max(ymax) },
    );
    axes(&mut s, xmax, ymax);
    let (pw, ph) = (W - L - R, H - T - B);
    for (k, se) in series.iter().enumerate() {
        let mut d = String::new();
        for (x, y) in &se.points {
            let _ = write!(d, "{:.1},{:.1} ", L + x / xmax * pw, T + ph - y / ymax * ph);
        }
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.8" points="{}"/>"#,
            COLORS[k % COLORS.len()],
            d.trim_end()
        );
    }
    legend(
        &mut s,
        &series.iter().map(|x| x.name.clone()).collect::<Vec<_>>(),
    );
    s.push_str("</svg>\n");
    s
}

/// Grouped bars: one group per category, one bar per series (values per category).
pub fn bar_chart(title: &str, ylabel: &str, categories: &[String], series: &[Series]) -> String {
    let mut s = header(title, "", ylabel);
    let ymax = series
        .iter()
        .flat_map(|x| x.points.iter().map(|p| p.1))
        .fold(0.0, f64::max)
        .max(1e-9);
    let ymax = nice_max(ymax);
    let (pw, ph) = (W - L - R, H - T - B);
    axes(&mut s, 0.0, ymax);
    let groups = categories.len().max(1) as f64;
    let gw = pw / groups;
    let bw = gw * 0.8 / series.len().max(1) as f64;
    for (k, se) in series.iter().enumerate() {
        for (c, (_, y)) in se.points.iter().enumerate() {
            let x = L + gw * c as f64 + gw * 0.1 + bw * k as f64;
            let h = y / ymax * ph;
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{:.1}" width="{bw:.1}" height="{h:.1}" fill="{}"/>"#,
                T + ph - h,
                COLORS[k % COLORS.len()]
            );
        }
    }
    // Category labels replace the numeric x ticks.
    s = s.replace(
        "text-anchor=\"middle\">0</text>",
        "text-anchor=\"middle\"></text>",
    );
    for (c, name) in categories.iter().enumerate() {
        let x = L + gw * (c as f64 + 0.5);
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="end" font-size="10" transform="rotate(-30 {x:.1} {:.1})">{}</text>"#,
            T + ph + 14.0,
            T + ph + 14.0,
            esc(name)
        );
    }
    legend(
        &mut s,
        &series.iter().map(|x| x.name.clone()).collect::<Vec<_>>(),
    );
    s.push_str("</svg>\n");
    s
}

/// The empirical CDF of `values` in ms, up to the 99.5th percentile, at most 400 points.
fn cdf(mut values: Vec<f64>) -> Vec<(f64, f64)> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return Vec::new();
    }
    let top = ((n as f64 * 0.995) as usize).clamp(1, n);
    let step = top.div_ceil(400).max(1);
    (0..top)
        .step_by(step)
        .chain(std::iter::once(top - 1))
        .map(|i| (values[i], (i + 1) as f64 / n as f64))
        .collect()
}

/// Every plot of a set of runs: `(file name, SVG text)`.
pub fn all(runs: &[RunRecords], _items: &[WorkItem]) -> Vec<(String, String)> {
    let served = |r: &RunRecords, f: &dyn Fn(&crate::record::Record) -> Option<f64>| {
        r.records
            .iter()
            .filter(|x| x.failure.is_none())
            .filter_map(f)
            .map(|v| v * 1e3)
            .collect::<Vec<f64>>()
    };
    let ttft_cdf: Vec<Series> = runs
        .iter()
        .map(|r| Series {
            name: r.label.clone(),
            points: cdf(served(r, &|x| x.ttft)),
        })
        .collect();
    let e2e_cdf: Vec<Series> = runs
        .iter()
        .map(|r| Series {
            name: r.label.clone(),
            points: cdf(served(r, &|x| Some(x.e2e))),
        })
        .collect();
    // Median TTFT per time bucket (60 buckets over the run).
    let over_time: Vec<Series> = runs
        .iter()
        .map(|r| {
            let span = r.duration.max(1e-9);
            let mut buckets: Vec<Vec<f64>> = vec![Vec::new(); 60];
            for x in r.records.iter().filter(|x| x.failure.is_none()) {
                if let Some(t) = x.ttft {
                    let b = ((x.arrival / span) * 60.0) as usize;
                    buckets[b.min(59)].push(t * 1e3);
                }
            }
            let points = buckets
                .into_iter()
                .enumerate()
                .filter(|(_, v)| !v.is_empty())
                .map(|(b, mut v)| {
                    v.sort_by(f64::total_cmp);
                    ((b as f64 + 0.5) * span / 60.0, v[v.len() / 2])
                })
                .collect();
            Series {
                name: r.label.clone(),
                points,
            }
        })
        .collect();
    let mut names: Vec<String> = Vec::new();
    for r in runs {
        for i in &r.instances {
            if !names.contains(&i.id) {
                names.push(i.id.clone());
            }
        }
    }
    let share: Vec<Series> = runs
        .iter()
        .map(|r| {
            let mut per = vec![0u64; names.len()];
            let mut total = 0u64;
            for x in &r.records {
                if let Some(id) = x.instance.and_then(|i| r.instances.get(i as usize))
                    && let Some(k) = names.iter().position(|n| n == &id.id)
                {
                    per[k] += 1;
                    total += 1;
                }
            }
            Series {
                name: r.label.clone(),
                points: per
                    .iter()
                    .enumerate()
                    .map(|(k, &n)| (k as f64, 100.0 * n as f64 / total.max(1) as f64))
                    .collect(),
            }
        })
        .collect();
    vec![
        (
            "ttft_cdf.svg".into(),
            line_chart("TTFT CDF", "TTFT (ms)", "fraction of requests", &ttft_cdf),
        ),
        (
            "latency_cdf.svg".into(),
            line_chart(
                "End-to-end latency CDF",
                "latency (ms)",
                "fraction of requests",
                &e2e_cdf,
            ),
        ),
        (
            "ttft_over_time.svg".into(),
            line_chart(
                "Median TTFT over time",
                "arrival (s)",
                "TTFT p50 (ms)",
                &over_time,
            ),
        ),
        (
            "instance_load.svg".into(),
            bar_chart(
                "Load share per instance",
                "share of requests (%)",
                &names,
                &share,
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_well_formed_svg_with_a_polyline_per_series() {
        let series = vec![
            Series {
                name: "a<b".into(),
                points: vec![(0.0, 0.0), (1.0, 2.0)],
            },
            Series {
                name: "c".into(),
                points: vec![(0.5, 1.0)],
            },
        ];
        let svg = line_chart("t", "x", "y", &series);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("a&lt;b"));
        let bars = bar_chart("t", "y", &["i0".into(), "i1".into()], &series);
        assert_eq!(
            bars.matches("fill=\"#1f77b4\"").count(),
            3,
            "2 bars + legend"
        );
        let c = cdf((1..=1000).map(f64::from).collect());
        assert!(c.len() <= 402 && c.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
    }
}
