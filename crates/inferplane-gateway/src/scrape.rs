//! Reading an engine's load from its Prometheus `/metrics` text.
//!
//! Names by engine (see the GIE model-server protocol): running requests
//! `vllm:num_requests_running` / `sglang:num_running_reqs` / `llamacpp:requests_processing`,
//! waiting `vllm:num_requests_waiting` / `sglang:num_queue_reqs` /
//! `llamacpp:requests_deferred`, KV usage `vllm:kv_cache_usage_perc` (older
//! `vllm:gpu_cache_usage_perc`) / `sglang:token_usage`. Series with several label sets
//! (data-parallel ranks, several models) are summed for counts and averaged for usage. A
//! name that is missing stays unknown: it is never read as zero load. A value that is not
//! a finite number at least zero is ignored.

use inferplane_core::EngineLoad;

const RUNNING: [&str; 3] = [
    "vllm:num_requests_running",
    "sglang:num_running_reqs",
    "llamacpp:requests_processing",
];
const WAITING: [&str; 3] = [
    "vllm:num_requests_waiting",
    "sglang:num_queue_reqs",
    "llamacpp:requests_deferred",
];
const KV: [&str; 3] = [
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
    "sglang:token_usage",
];

#[derive(Default, Clone, Copy)]
struct Acc {
    sum: f64,
    n: u32,
}

/// Parses the exposition text into the load figures it contains.
pub fn parse_load(text: &str) -> EngineLoad {
    // One accumulator per candidate name, so that the first name that is present wins.
    let mut running = [Acc::default(); 3];
    let mut waiting = [Acc::default(); 3];
    let mut kv = [Acc::default(); 3];
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        let slot = if let Some(i) = RUNNING.iter().position(|n| *n == name) {
            &mut running[i]
        } else if let Some(i) = WAITING.iter().position(|n| *n == name) {
            &mut waiting[i]
        } else if let Some(i) = KV.iter().position(|n| *n == name) {
            &mut kv[i]
        } else {
            continue;
        };
        // The value follows the labels (which may contain spaces inside quotes).
        let rest = match line[name_end..].strip_prefix('{') {
            Some(after) => after.rfind('}').map(|e| &after[e + 1..]).unwrap_or(""),
            None => &line[name_end..],
        };
        let Some(value) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        // a count or a usage below zero is no reading, like NaN
        if value.is_finite() && value >= 0.0 {
            slot.sum += value;
            slot.n += 1;
        }
    }
    // (a sum of huge readings that overflows is no reading either)
    let first = |accs: &[Acc; 3], mean: bool| {
        accs.iter()
            .find(|a| a.n > 0)
            .map(|a| if mean { a.sum / f64::from(a.n) } else { a.sum })
            .filter(|v| v.is_finite())
    };
    EngineLoad {
        running: first(&running, false),
        waiting: first(&waiting, false),
        kv_usage: first(&kv, true).map(|k| k.clamp(0.0, 1.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vllm_v1_names_with_labels() {
        let text = "# HELP vllm:num_requests_running x\n# TYPE vllm:num_requests_running gauge\n\
            vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 3.0\n\
            vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 7\n\
            vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.42\n\
            vllm:prompt_tokens_total{model_name=\"m\"} 100\n";
        let l = parse_load(text);
        assert_eq!(l.running, Some(3.0));
        assert_eq!(l.waiting, Some(7.0));
        assert_eq!(l.kv_usage, Some(0.42));
    }

    #[test]
    fn falls_back_to_older_vllm_and_sglang_names() {
        let l = parse_load("vllm:gpu_cache_usage_perc{model_name=\"m\"} 0.5\n");
        assert_eq!(l.kv_usage, Some(0.5));
        assert_eq!(l.running, None, "absent means unknown, never zero");
        let s = parse_load(
            "sglang:num_running_reqs{x=\"a b\"} 2\nsglang:num_queue_reqs 1\nsglang:token_usage 0.25\n",
        );
        assert_eq!(
            (s.running, s.waiting, s.kv_usage),
            (Some(2.0), Some(1.0), Some(0.25))
        );
    }

    #[test]
    fn data_parallel_ranks_sum_counts_and_average_usage() {
        let text = "vllm:num_requests_running{engine=\"0\"} 2\nvllm:num_requests_running{engine=\"1\"} 5\n\
            vllm:kv_cache_usage_perc{engine=\"0\"} 0.2\nvllm:kv_cache_usage_perc{engine=\"1\"} 0.6\n";
        let l = parse_load(text);
        assert_eq!(l.running, Some(7.0));
        assert!((l.kv_usage.unwrap() - 0.4).abs() < 1e-12);
    }

    #[test]
    fn garbage_is_ignored_not_fatal() {
        let l = parse_load(
            "vllm:num_requests_running{ 1\nvllm:num_requests_waiting NaN\nrandom text\n",
        );
        assert_eq!(l, EngineLoad::default());
    }

    #[test]
    fn negative_and_overflowing_readings_are_ignored() {
        // found by the scrape fuzz target: `llamacpp:requests_deferred -5` read as -5
        // waiting requests
        let l = parse_load(
            "llamacpp:requests_deferred -5\nllamacpp:requests_processing 2\n\
             vllm:kv_cache_usage_perc -0.5\n",
        );
        assert_eq!((l.waiting, l.running, l.kv_usage), (None, Some(2.0), None));
        let l = parse_load(
            "vllm:num_requests_running{engine=\"0\"} 1e308\n\
             vllm:num_requests_running{engine=\"1\"} 1e308\n\
             vllm:num_requests_waiting{engine=\"0\"} -1\nvllm:num_requests_waiting{engine=\"1\"} 3\n",
        );
        assert_eq!((l.running, l.waiting), (None, Some(3.0)));
    }
}
