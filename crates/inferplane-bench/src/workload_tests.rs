//! Tests of the workload generator: seeded determinism, distribution moments, specs.

use super::*;

fn moments(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt() / mean)
}

#[test]
fn the_same_seed_gives_the_same_workload_and_another_seed_does_not() {
    let spec = WorkloadSpec {
        requests: 500,
        ..WorkloadSpec::default()
    };
    let a = spec.generate().unwrap();
    assert_eq!(a, spec.generate().unwrap());
    let b = WorkloadSpec { seed: 2, ..spec }.generate().unwrap();
    assert_ne!(a, b);
    assert!(a.windows(2).all(|w| w[0].t <= w[1].t));
}

#[test]
fn poisson_and_gamma_gaps_have_the_asked_mean_and_variation() {
    let mut rng = SmallRng::seed_from_u64(3);
    let gaps: Vec<f64> = (0..200_000)
        .map(|_| Arrival::Poisson.gap(&mut rng, 20.0))
        .collect();
    let (mean, cv) = moments(&gaps);
    assert!((mean - 0.05).abs() < 0.05 * 0.02, "{mean}");
    assert!((cv - 1.0).abs() < 0.02, "{cv}");
    for want in [0.5, 2.0, 4.0] {
        let g = Arrival::Gamma { cv: want };
        let gaps: Vec<f64> = (0..200_000).map(|_| g.gap(&mut rng, 20.0)).collect();
        let (mean, cv) = moments(&gaps);
        assert!((mean - 0.05).abs() < 0.05 * 0.04, "cv {want}: mean {mean}");
        assert!((cv - want).abs() < want * 0.06, "cv {want}: got {cv}");
    }
}

#[test]
fn lognormal_lengths_have_the_asked_median_and_a_long_tail() {
    let mut rng = SmallRng::seed_from_u64(5);
    let d = LengthDist::LogNormal {
        median: 200.0,
        sigma: 1.0,
        min: 1,
        max: 1_000_000,
    };
    let mut xs: Vec<u32> = (0..100_000).map(|_| d.sample(&mut rng)).collect();
    xs.sort_unstable();
    let median = f64::from(xs[xs.len() / 2]);
    assert!((median - 200.0).abs() < 6.0, "{median}");
    let mean = xs.iter().map(|&x| f64::from(x)).sum::<f64>() / xs.len() as f64;
    // E[X] = median * exp(sigma^2 / 2) = 329.7
    assert!((mean - 329.7).abs() < 10.0, "{mean}");
    assert!(
        f64::from(xs[xs.len() * 99 / 100]) > 4.0 * median,
        "long tail"
    );
}

#[test]
fn classes_sessions_and_prefixes_appear_in_their_shares() {
    let spec = WorkloadSpec {
        requests: 20_000,
        ..WorkloadSpec::default()
    };
    let items = spec.generate().unwrap();
    let n = items.len() as f64;
    let interactive = items
        .iter()
        .filter(|i| i.class.as_deref() == Some("interactive"))
        .count() as f64;
    assert!((interactive / n - 0.3).abs() < 0.03, "{}", interactive / n);
    let in_session = items.iter().filter(|i| i.session.is_some()).count() as f64;
    assert!((in_session / n - 0.3).abs() < 0.02);
    // A later turn's prompt contains the whole previous turn (prompt and output).
    let mut last: std::collections::HashMap<u64, &WorkItem> = Default::default();
    for it in &items {
        if let Some(s) = it.session {
            if let Some(prev) = last.get(&s) {
                assert!(it.prompt_tokens > prev.prompt_tokens + prev.output_tokens - 1);
                assert_eq!(it.prefix_group, prev.prefix_group);
                assert_eq!(it.class, prev.class);
            }
            last.insert(s, it);
        }
        if it.prefix_group.is_some() {
            assert_eq!(it.prefix_tokens, 512);
            assert!(it.prompt_tokens > 512);
        }
    }
    let grouped = items.iter().filter(|i| i.prefix_group.is_some()).count() as f64;
    assert!((grouped / n - 0.5).abs() < 0.03);
}

#[test]
fn invalid_specs_say_what_is_wrong() {
    let bad = WorkloadSpec {
        rate: 0.0,
        ..WorkloadSpec::default()
    };
    assert!(bad.generate().unwrap_err().to_string().contains("rate"));
    let bad = WorkloadSpec {
        prompt: LengthDist::Uniform { min: 5, max: 2 },
        ..WorkloadSpec::default()
    };
    assert!(bad.validate().unwrap_err().to_string().contains("prompt"));
    let spec: WorkloadSpec = toml::from_str(
        "requests = 10\nrate = 5.0\narrival = { kind = \"gamma\", cv = 3.0 }\nprompt = { dist = \"fixed\", tokens = 100 }\nclasses = []",
    )
    .unwrap();
    assert_eq!(spec.arrival, Arrival::Gamma { cv: 3.0 });
    assert_eq!(spec.generate().unwrap().len(), 10);
    assert!(toml::from_str::<WorkloadSpec>("bogus = 1").is_err());
}

#[test]
fn zipf_popularity_makes_the_first_prefixes_hot() {
    let spec = WorkloadSpec {
        requests: 4000,
        sessions: SessionSpec {
            share: 0.0,
            ..SessionSpec::default()
        },
        prefixes: PrefixSpec {
            share: 1.0,
            groups: 64,
            tokens: 16,
            zipf: 1.0,
        },
        ..WorkloadSpec::default()
    };
    let items = spec.generate().unwrap();
    let count = |g: u32| items.iter().filter(|i| i.prefix_group == Some(g)).count();
    // weight 1 vs 1/64 of a harmonic sum of ~4.74: ~840 vs ~13
    assert!(
        count(0) > 600 && count(63) < 40,
        "{} {}",
        count(0),
        count(63)
    );
    assert!(items.iter().all(|i| i.prefix_group.is_some_and(|g| g < 64)));
    let bad = WorkloadSpec {
        prefixes: PrefixSpec {
            zipf: -1.0,
            ..PrefixSpec::default()
        },
        ..WorkloadSpec::default()
    };
    assert!(bad.validate().is_err());
}
