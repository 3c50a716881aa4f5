//! `power_of_two`: two distinct eligible instances drawn at random (seeded), the one with
//! the lower `load_score` wins (ties to the first drawn). O(1) per pick while eligible
//! instances are common.

use super::sample_eligible;
use crate::pool::{InstanceState, Slot};
use crate::request::RequestMeta;
use crate::route::{Allowed, PoolView, RoutingStrategy};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde::{Deserialize, Serialize};

/// The config tag.
pub const NAME: &str = "power_of_two";

/// Settings of `power_of_two` (none yet; the seed comes from the scheduler).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PowerOfTwoConfig {}

/// Power of two random choices.
#[derive(Debug)]
pub struct PowerOfTwo {
    rng: SmallRng,
}

impl PowerOfTwo {
    /// A new balancer with a seeded RNG.
    pub fn new(_config: PowerOfTwoConfig, seed: u64) -> Self {
        PowerOfTwo {
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// The two candidates drawn and the winner (the first twice when only one is eligible).
    pub fn choose(
        &mut self,
        view: &PoolView<'_>,
        allowed: Allowed<'_>,
    ) -> Option<(Slot, Slot, Slot)> {
        let a = sample_eligible(&mut self.rng, view, allowed, None)?;
        let b = sample_eligible(&mut self.rng, view, allowed, Some(a)).unwrap_or(a);
        let score = |ix| {
            view.get(ix)
                .map_or(f64::INFINITY, InstanceState::load_score)
        };
        let winner = if score(b) < score(a) { b } else { a };
        Some((a, b, winner))
    }
}

impl RoutingStrategy for PowerOfTwo {
    fn name(&self) -> &'static str {
        NAME
    }
    fn pick(
        &mut self,
        _req: &RequestMeta,
        view: &PoolView<'_>,
        allowed: Allowed<'_>,
    ) -> Option<Slot> {
        self.choose(view, allowed).map(|(_, _, w)| w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::testkit;

    #[test]
    fn power_of_two_never_picks_the_worse_of_its_two_candidates() {
        let slots: Vec<(u32, u32)> = (0..50).map(|i| (64, (i * 37) % 60)).collect();
        let st = testkit::states(&slots);
        let view = testkit::view(&st);
        let mut p = PowerOfTwo::new(PowerOfTwoConfig {}, 7);
        let mut distinct = 0;
        for _ in 0..2000 {
            let (a, b, w) = p.choose(&view, Allowed::All).unwrap();
            let (sa, sb) = (
                st[a].as_ref().unwrap().load_score(),
                st[b].as_ref().unwrap().load_score(),
            );
            assert!(w == a || w == b);
            assert!(st[w].as_ref().unwrap().load_score() <= sa.min(sb));
            distinct += usize::from(a != b);
        }
        assert_eq!(distinct, 2000, "the two candidates are always distinct");
    }

    #[test]
    fn power_of_two_is_reproducible_from_its_seed_and_only_picks_eligible_instances() {
        let st = testkit::states(&[(4, 4), (4, 1), (4, 4), (4, 2)]);
        let view = testkit::view(&st);
        let run = |seed| {
            let mut p = PowerOfTwo::new(PowerOfTwoConfig {}, seed);
            (0..20)
                .map(|i| {
                    p.pick(&testkit::req(i, None, None), &view, Allowed::All)
                        .unwrap()
                })
                .collect::<Vec<_>>()
        };
        let a = run(3);
        assert_eq!(a, run(3));
        // only 1 and 3 have room, so both are always drawn and the less loaded 1 wins
        assert!(a.iter().all(|&ix| ix == 1));
    }
}
