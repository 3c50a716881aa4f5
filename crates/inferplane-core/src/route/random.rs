//! `random`: a uniformly random eligible instance from a seeded RNG (reproducible runs).

use super::balance::sample_eligible;
use super::{Allowed, PoolView, RoutingStrategy};
use crate::pool::Slot;
use crate::request::RequestMeta;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde::{Deserialize, Serialize};

/// The config tag.
pub const NAME: &str = "random";

/// Settings of `random` (none yet; the seed comes from the scheduler).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RandomConfig {}

/// Seeded uniform choice.
#[derive(Debug)]
pub struct Random {
    rng: SmallRng,
}

impl Random {
    /// A new strategy.
    pub fn new(_config: RandomConfig, seed: u64) -> Self {
        Random {
            rng: SmallRng::seed_from_u64(seed),
        }
    }
}

impl RoutingStrategy for Random {
    fn name(&self) -> &'static str {
        NAME
    }
    fn pick(
        &mut self,
        _req: &RequestMeta,
        view: &PoolView<'_>,
        allowed: Allowed<'_>,
    ) -> Option<Slot> {
        sample_eligible(&mut self.rng, view, allowed, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::testkit;

    #[test]
    fn random_is_reproducible_uniform_and_only_picks_eligible_instances() {
        let st = testkit::states(&[(4, 0), (4, 4), (4, 0), (4, 0)]);
        let view = testkit::view(&st);
        let run = |seed| {
            let mut r = Random::new(RandomConfig {}, seed);
            (0..3000)
                .map(|i| {
                    r.pick(&testkit::req(i, None, None), &view, Allowed::All)
                        .unwrap()
                })
                .collect::<Vec<_>>()
        };
        let picks = run(11);
        assert_eq!(picks, run(11));
        assert_ne!(picks, run(12));
        let mut counts = [0; 4];
        picks.iter().for_each(|&ix| counts[ix] += 1);
        assert_eq!(counts[1], 0);
        for c in [counts[0], counts[2], counts[3]] {
            assert!((900..1100).contains(&c), "{counts:?}");
        }
    }
}
