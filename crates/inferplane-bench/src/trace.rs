//! Traces: JSONL (one [`WorkItem`] per line) written by `bench workload --out` and read
//! back for replay, and the Azure LLM inference trace CSV
//! (`TIMESTAMP,ContextTokens,GeneratedTokens`), read directly. Both can be rescaled to a
//! target arrival rate, and the Azure trace decorated with the spec's priority/SLO classes.

use crate::error::BenchError;
use crate::workload::{ClassSpec, WorkItem};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

/// Writes items as JSONL.
pub fn write_jsonl(path: &Path, items: &[WorkItem]) -> Result<(), BenchError> {
    let file = std::fs::File::create(path).map_err(|e| BenchError::io(path, e))?;
    let mut w = BufWriter::new(file);
    for it in items {
        serde_json::to_writer(&mut w, it)?;
        w.write_all(b"\n").map_err(|e| BenchError::io(path, e))?;
    }
    w.flush().map_err(|e| BenchError::io(path, e))
}

/// Reads a trace: JSONL, or the Azure CSV when the first line is its header.
pub fn read(path: &Path) -> Result<Vec<WorkItem>, BenchError> {
    let file = std::fs::File::open(path).map_err(|e| BenchError::io(path, e))?;
    let mut lines = BufReader::new(file).lines();
    let mut items = Vec::new();
    let mut first_ts: Option<f64> = None;
    let mut csv = false;
    let mut n = 0;
    while let Some(line) = lines
        .next()
        .transpose()
        .map_err(|e| BenchError::io(path, e))?
    {
        n += 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let err = |msg: String| BenchError::Trace {
            path: path.to_path_buf(),
            line: n,
            msg,
        };
        if n == 1 && line.starts_with("TIMESTAMP") {
            csv = true;
            continue;
        }
        if csv {
            let mut f = line.split(',');
            let (Some(ts), Some(ctx), Some(gen_tokens)) = (f.next(), f.next(), f.next()) else {
                return Err(err(
                    "expected TIMESTAMP,ContextTokens,GeneratedTokens".into()
                ));
            };
            let ts = parse_timestamp(ts).ok_or_else(|| err(format!("bad timestamp {ts:?}")))?;
            let num = |s: &str| {
                s.trim()
                    .parse::<u32>()
                    .map_err(|_| err(format!("bad token count {s:?}")))
            };
            let t0 = *first_ts.get_or_insert(ts);
            items.push(WorkItem::plain(
                ((ts - t0).max(0.0) * 1e6).round() / 1e6,
                num(ctx)?.max(1),
                num(gen_tokens)?.max(1),
            ));
        } else {
            let it: WorkItem = serde_json::from_str(line).map_err(|e| err(e.to_string()))?;
            items.push(it);
        }
    }
    items.sort_by(|a, b| a.t.total_cmp(&b.t));
    Ok(items)
}

/// Seconds since 1970 of `YYYY-MM-DD HH:MM:SS[.fffffff]` (UTC, no zone).
fn parse_timestamp(s: &str) -> Option<f64> {
    let s = s.trim();
    let (date, time) = s.split_once([' ', 'T'])?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (hh, mm, ss) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + hh * 3600.0 + mm * 60.0 + ss)
}

/// Mean arrival rate of a trace, requests per second.
pub fn mean_rate(items: &[WorkItem]) -> f64 {
    match (items.first(), items.last()) {
        (Some(a), Some(b)) if b.t > a.t => (items.len() - 1) as f64 / (b.t - a.t),
        _ => 0.0,
    }
}

/// Rescales arrival times so the mean rate becomes `rate` (lengths untouched).
pub fn scale_to_rate(items: &mut [WorkItem], rate: f64) -> Result<(), BenchError> {
    let now = mean_rate(items);
    if !(rate.is_finite() && rate > 0.0) || now <= 0.0 {
        return Err(BenchError::Workload(
            "cannot rescale: need a positive target rate and a trace spanning some time".into(),
        ));
    }
    let factor = now / rate;
    let t0 = items.first().map_or(0.0, |i| i.t);
    for it in items.iter_mut() {
        it.t = (((it.t - t0) * factor) * 1e6).round() / 1e6; // exact through JSONL
    }
    Ok(())
}

/// The cap clients of a trace that records only true output lengths (Azure's) send as
/// `max_tokens`, unless told otherwise.
pub const TRACE_MAX_TOKENS: u32 = 2048;

/// Sets the `max_tokens` clients send for items that carry none: `cap`, or the item's
/// own output length where that is longer (the trace says it generated that much).
pub fn cap_max_tokens(items: &mut [WorkItem], cap: u32) {
    for it in items.iter_mut().filter(|i| i.max_tokens.is_none()) {
        it.max_tokens = Some(cap.max(it.output_tokens).max(1));
    }
}

/// Gives each item a class drawn by weight (for traces that carry none, like Azure's).
pub fn assign_classes(items: &mut [WorkItem], classes: &[ClassSpec], seed: u64) {
    let total: f64 = classes.iter().map(|c| c.weight).sum();
    if classes.is_empty() || total <= 0.0 {
        return;
    }
    let mut rng = SmallRng::seed_from_u64(seed);
    for it in items.iter_mut() {
        let mut x = rng.random::<f64>() * total;
        let c = classes
            .iter()
            .find(|c| {
                let hit = x < c.weight;
                x -= c.weight;
                hit
            })
            .unwrap_or(&classes[classes.len() - 1]);
        it.priority = c.priority;
        it.class = Some(c.name.clone());
        it.ttft_ms = c.ttft_ms;
        it.e2e_ms = c.e2e_ms;
        it.cost_budget = c.cost_budget;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::WorkloadSpec;

    #[test]
    fn jsonl_round_trips_every_field() {
        let dir = std::env::temp_dir().join(format!("ipb-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.jsonl");
        let items = WorkloadSpec {
            requests: 300,
            ..WorkloadSpec::default()
        }
        .generate()
        .unwrap();
        write_jsonl(&path, &items).unwrap();
        assert_eq!(read(&path).unwrap(), items);
        std::fs::write(&path, "{\"t\":1.0,\"prompt_tokens\":5}\n").unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains(":1:") && e.contains("output_tokens"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn azure_csv_is_read_relative_to_its_first_request_and_rescaled() {
        let dir = std::env::temp_dir().join(format!("ipb-azure-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("azure.csv");
        std::fs::write(
            &path,
            "TIMESTAMP,ContextTokens,GeneratedTokens\n\
             2023-11-16 23:59:59.5000000,374,44\n\
             2023-11-17 00:00:00.5000000,396,109\n\
             2023-11-17 00:00:02.5000000,10,0\n",
        )
        .unwrap();
        let mut items = read(&path).unwrap();
        assert_eq!(items.len(), 3);
        assert!((items[1].t - 1.0).abs() < 1e-6, "{}", items[1].t);
        assert!((items[2].t - 3.0).abs() < 1e-6);
        assert_eq!((items[0].prompt_tokens, items[0].output_tokens), (374, 44));
        assert_eq!(items[2].output_tokens, 1, "zero outputs become one token");
        assert!((mean_rate(&items) - 2.0 / 3.0).abs() < 1e-9);
        scale_to_rate(&mut items, 2.0).unwrap();
        assert!((items[2].t - 1.0).abs() < 1e-9);
        assert!((mean_rate(&items) - 2.0).abs() < 1e-9);
        assign_classes(&mut items, &crate::workload::default_classes(), 1);
        assert!(items.iter().all(|i| i.class.is_some()));
        std::fs::write(
            &path,
            "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,1\n",
        )
        .unwrap();
        assert!(
            read(&path)
                .unwrap_err()
                .to_string()
                .contains(":2: bad timestamp")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
