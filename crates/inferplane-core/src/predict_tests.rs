use super::*;
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
fn measurements_replace_the_seed_then_average_then_move_rates_by_the_ewma_weight() {
    let mut r = Rates {
        prefill_tokens_per_sec: 1000.0,
        decode_secs_per_token: 0.01,
        overhead_secs: 0.0,
        samples: 0,
        decode: DecodeModel::default(),
    };
    // 1000 tokens in 0.5 s = 2000 tok/s: prefill moves by the EWMA weight; 11 tokens
    // over 1.0 s of decode = 0.1 s/token: the first decode measurement replaces the seed
    r.observe_prefill(1000, 0.5);
    r.observe_decode(11, Some(1.0));
    assert!((r.prefill_tokens_per_sec - 1200.0).abs() < 1e-9);
    assert!((r.decode_secs_per_token - 0.1).abs() < 1e-12);
    assert_eq!(r.samples, 1);
    // the second is averaged in (0.2 s/token: the mean is 0.15)
    r.observe_decode(11, Some(2.0));
    assert!((r.decode_secs_per_token - 0.15).abs() < 1e-12);
    // after five, each moves the estimate by the EWMA weight
    for _ in 0..3 {
        r.observe_decode(11, Some(1.5));
    }
    assert_eq!(r.samples, 5);
    r.observe_decode(11, Some(2.5));
    let ewma = 0.15 + RATE_EWMA_ALPHA * (0.25 - 0.15);
    assert!((r.decode_secs_per_token - ewma).abs() < 1e-12);
    let before = r;
    r.observe_prefill(0, 1.0);
    r.observe_prefill(10, -1.0);
    r.observe_decode(0, Some(f64::NAN));
    r.observe_decode(5, None);
    assert_eq!(r.prefill_tokens_per_sec, before.prefill_tokens_per_sec);
    assert_eq!(r.decode_secs_per_token, before.decode_secs_per_token);
}

#[test]
fn output_lengths_start_at_max_tokens_then_follow_the_class_mean_capped_by_max_tokens() {
    let mut o = OutputLengths::EMPTY;
    let mut req = RequestMeta::new(RequestId(1), "m", 10, 1000, Time::ZERO);
    assert_eq!(
        o.predict(&req),
        1000,
        "nothing learned: the most it could take"
    );
    for _ in 0..OUTPUT_MIN_SAMPLES {
        o.observe(Priority::Low, 100);
    }
    assert_eq!(
        o.predict(&req),
        100,
        "the pool-wide mean stands in for the class"
    );
    for _ in 0..OUTPUT_MIN_SAMPLES {
        o.observe(Priority::Normal, 300);
    }
    assert_eq!(o.predict(&req), 300);
    req.max_tokens = 50;
    assert_eq!(o.predict(&req), 50, "never beyond the cap");
    req.priority = Priority::Low;
    req.max_tokens = 1000;
    assert_eq!(o.predict(&req), 100);
    assert_eq!(o.samples(), 2 * OUTPUT_MIN_SAMPLES);
}

#[test]
fn the_decode_model_learns_its_scale_and_answers_the_batch_for_a_time_per_token() {
    let mut d = DecodeModel::new(0.01, 0.001);
    assert!((d.tpot(10.0) - 0.02).abs() < 1e-12);
    assert_eq!(d.max_batch_for(0.05), Some(40));
    // measured twice as slow at batch 10: the same shape, scaled
    d.observe(10.0, 0.04);
    assert!((d.tpot(10.0) - 0.04).abs() < 1e-12);
    assert_eq!(d.max_batch_for(0.05), Some(15));
    assert_eq!(d.max_batch_for(0.001), Some(0));
    let unknown = DecodeModel::default();
    assert_eq!(
        unknown.max_batch_for(0.05),
        None,
        "no shape, no measurement"
    );
}

#[test]
fn long_outputs_are_a_high_quantile_of_the_class_capped_by_max_tokens() {
    let mut o = OutputLengths::EMPTY;
    let mut req = RequestMeta::new(RequestId(1), "m", 10, 2000, Time::ZERO);
    assert_eq!(o.predict_long(&req), 2000);
    for i in 0..1000u32 {
        o.observe(Priority::Normal, if i < 995 { 100 } else { 1000 });
    }
    let long = o.predict_long(&req);
    assert!((100..=130).contains(&long), "99% are 100 tokens: {long}");
    for _ in 0..100 {
        o.observe(Priority::Normal, 1000);
    }
    assert!(o.predict_long(&req) >= 1000, "now 9% are 1000");
    req.max_tokens = 500;
    assert_eq!(o.predict_long(&req), 500);
}

#[test]
fn cost_is_the_gpu_time_of_one_request_at_full_batch_or_the_token_price() {
    let rates = Rates {
        prefill_tokens_per_sec: 1000.0,
        decode_secs_per_token: 0.01,
        overhead_secs: 0.0,
        samples: 0,
        decode: DecodeModel::default(),
    };
    let mut spec = InstanceSpec::new("a", "u", "m", 4);
    assert_eq!(cost_estimate(&spec, &rates, 4, 500, 100), 0.0);
    spec.price = Some(Price::PerGpuHour(3600.0));
    spec.layout.tp = 2;
    // 1.5 s of service at $2 per second (two GPUs), shared by a batch of 4
    let c = cost_estimate(&spec, &rates, 4, 500, 100);
    assert!((c - 0.75).abs() < 1e-9, "{c}");
    spec.price = Some(Price::PerMillionTokens {
        input: 1.0,
        output: 2.0,
    });
    let t = cost_estimate(&spec, &rates, 1, 1_000_000, 500_000);
    assert!((t - 2.0).abs() < 1e-9);
}
