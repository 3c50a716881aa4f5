//! The distributions workloads draw from: arrival gaps (Poisson or bursty gamma) and
//! token lengths (fixed, uniform, long-tailed log-normal), on a seeded `SmallRng`.

use crate::error::BenchError;
use rand::Rng;
use rand::rngs::SmallRng;
use serde::{Deserialize, Serialize};

/// How requests arrive (open loop: arrivals never wait for responses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Arrival {
    /// Exponential inter-arrival times.
    Poisson,
    /// Gamma inter-arrival times with coefficient of variation `cv` (> 1 is bursty).
    Gamma {
        /// Standard deviation over mean of the inter-arrival time.
        cv: f64,
    },
}

/// A token-length distribution; draws are clamped to at least 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "snake_case", deny_unknown_fields)]
pub enum LengthDist {
    /// Always `tokens`.
    Fixed {
        /// The length.
        tokens: u32,
    },
    /// Uniform in `min..=max`.
    Uniform {
        /// Smallest length.
        min: u32,
        /// Largest length.
        max: u32,
    },
    /// Log-normal with the given median and log-space sigma, clamped to `min..=max`:
    /// long-tailed, like ShareGPT conversation lengths.
    LogNormal {
        /// Median length.
        median: f64,
        /// Standard deviation of the natural log of the length.
        sigma: f64,
        /// Smallest length.
        min: u32,
        /// Largest length.
        max: u32,
    },
}

impl LengthDist {
    /// One draw.
    pub fn sample(&self, rng: &mut SmallRng) -> u32 {
        match *self {
            LengthDist::Fixed { tokens } => tokens.max(1),
            LengthDist::Uniform { min, max } => rng.random_range(min.max(1)..=max.max(min.max(1))),
            LengthDist::LogNormal {
                median,
                sigma,
                min,
                max,
            } => {
                let x = median * (sigma * standard_normal(rng)).exp();
                (x.round() as u32).clamp(min.max(1), max.max(min.max(1)))
            }
        }
    }

    pub(crate) fn validate(&self, what: &str) -> Result<(), BenchError> {
        let ok = match *self {
            LengthDist::Fixed { tokens } => tokens >= 1,
            LengthDist::Uniform { min, max } => min >= 1 && min <= max,
            LengthDist::LogNormal {
                median,
                sigma,
                min,
                max,
            } => median > 0.0 && sigma >= 0.0 && sigma.is_finite() && min >= 1 && min <= max,
        };
        if ok {
            Ok(())
        } else {
            Err(BenchError::Workload(format!(
                "{what}: lengths must be at least 1 with min <= max, median > 0, sigma >= 0"
            )))
        }
    }
}

/// A standard normal draw (Box-Muller).
pub fn standard_normal(rng: &mut SmallRng) -> f64 {
    let u1: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A Gamma(shape, 1) draw (Marsaglia and Tsang; boosted for shape < 1).
pub fn gamma(rng: &mut SmallRng, shape: f64) -> f64 {
    if shape < 1.0 {
        let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
        return gamma(rng, shape + 1.0) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = standard_normal(rng);
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

impl Arrival {
    /// One inter-arrival gap in seconds at mean rate `rate`.
    pub fn gap(&self, rng: &mut SmallRng, rate: f64) -> f64 {
        match *self {
            Arrival::Poisson => {
                let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
                -u.ln() / rate
            }
            Arrival::Gamma { cv } => {
                let shape = 1.0 / (cv * cv);
                gamma(rng, shape) / (shape * rate)
            }
        }
    }
}
