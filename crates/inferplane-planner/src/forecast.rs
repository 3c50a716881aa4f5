//! What the planner predicts about one running engine instance, in the control plane's
//! own terms: the [`Rates`] its scheduler starts from and the [`EngineInfo`] (batch limit,
//! context, KV capacity) an engine of that kind would report. The gateway and the
//! discrete-event simulation seed an instance that names its GPU from this one function,
//! so both know the same before the first measurement.

use crate::{CostModel, EngineOptions, find_gpu, find_model};
use inferplane_core::predict::DecodeModel;
use inferplane_core::{EngineInfo, InstanceSpec, Rates};

/// The planner's prediction for one instance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Forecast {
    /// Predicted speeds at about half its batch limit (measured completions refine them).
    pub rates: Rates,
    /// Predicted batch limit, context and KV capacity (the engine's defaults).
    pub info: EngineInfo,
}

/// The forecast for `spec`, when the planner knows its model and its GPU.
pub fn forecast(spec: &InstanceSpec) -> Option<Forecast> {
    let model = find_model(&spec.model)?;
    let gpu = find_gpu(spec.gpu.as_deref()?)?;
    let opts = EngineOptions::default();
    let est = CostModel::default()
        .engine_estimate(&model, &gpu, spec.layout, &opts)
        .ok()?;
    let batch = est.max_num_seqs.max(1);
    let limit = spec.max_inflight.map_or(batch, |m| m.clamp(1, batch));
    let conc = f64::from(limit.div_ceil(2).max(1));
    let (input, output) = (
        f64::from(opts.typical_input_tokens),
        f64::from(opts.typical_output_tokens),
    );
    Some(Forecast {
        rates: Rates {
            prefill_tokens_per_sec: 1.0 / est.prefill_secs_per_token.max(1e-9),
            decode_secs_per_token: est.tpot_secs(conc, input, output),
            overhead_secs: est.decode_step_base_secs,
            samples: 0,
            decode: DecodeModel::new(
                est.decode_step_base_secs,
                est.decode_secs_per_seq + (input + output / 2.0) * est.decode_secs_per_kv_token,
            ),
        },
        info: EngineInfo {
            max_batch: Some(batch),
            max_model_len: Some(est.max_model_len),
            kv_capacity_tokens: Some(est.kv_capacity_tokens),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use inferplane_core::Layout;

    fn spec(model: &str, gpu: Option<&str>, tp: u32) -> InstanceSpec {
        let mut s = InstanceSpec::new("a", "http://127.0.0.1:1", model, 32);
        s.max_inflight = None;
        s.gpu = gpu.map(str::to_string);
        s.layout = Layout {
            tp,
            ..Layout::SINGLE
        };
        s
    }

    #[test]
    fn an_instance_with_a_known_gpu_gets_rates_and_limits_from_the_cost_model() {
        let tp1 = forecast(&spec("llama-3.1-8b", Some("h100-sxm"), 1)).unwrap();
        let tp2 = forecast(&spec(
            "meta-llama/Llama-3.1-8B-Instruct",
            Some("h100-sxm"),
            2,
        ))
        .unwrap();
        assert_eq!(tp1.rates.samples, 0, "a prediction, not a measurement");
        assert!(tp2.rates.prefill_tokens_per_sec > tp1.rates.prefill_tokens_per_sec);
        // Plausible for an 8B model on an H100: thousands of prefill tokens/s, a few to a
        // few tens of ms per output token.
        assert!(tp1.rates.prefill_tokens_per_sec > 5_000.0, "{tp1:?}");
        assert!(
            (0.002..0.1).contains(&tp1.rates.decode_secs_per_token),
            "{tp1:?}"
        );
        let a10g = forecast(&spec("llama-3.1-8b", Some("a10g"), 1)).unwrap();
        assert!(a10g.info.max_batch < tp1.info.max_batch, "{a10g:?}");
        assert!(a10g.info.kv_capacity_tokens < tp1.info.kv_capacity_tokens);
        assert!(tp1.info.max_model_len.unwrap() >= 8192);
    }

    #[test]
    fn unknown_gpu_or_model_gives_no_forecast() {
        assert!(forecast(&spec("llama-3.1-8b", None, 1)).is_none());
        assert!(forecast(&spec("llama-3.1-8b", Some("tpu-v9"), 1)).is_none());
        assert!(forecast(&spec("my-finetune", Some("h100-sxm"), 1)).is_none());
    }
}
