//! Which free slots a tenant above its share leaves to the others
//! ([`crate::schedule::headroom`]): the ones that give a first token soonest. The
//! scheduler keeps the tenant off the best-ranked instances with room until their free
//! slots cover the count to keep.

use crate::pool::{CandidateSet, PoolView, Slot};
use crate::time::Time;

/// Takes off `allowed` the instances with room whose free slots are the `slots` to keep
/// for the other tenants, ranked by predicted TTFT for a prompt of `prompt` tokens at
/// `now` (`ranked` is scratch space). Returns whether another instance remains allowed;
/// if none does, `allowed` is left as it was (the caller decides whether the tenant
/// waits or takes a kept slot).
pub(super) fn leave_kept(
    ranked: &mut Vec<(f64, Slot)>,
    allowed: &mut CandidateSet,
    v: &PoolView<'_>,
    slots: u64,
    prompt: u32,
    now: Time,
) -> bool {
    ranked.clear();
    ranked.extend(
        v.with_room_iter()
            .map(|(slot, inst)| (inst.ttft_secs(prompt, now), slot)),
    );
    // each instance with room has a free slot, so at most `slots` of them are kept and
    // one more ends the walk: only those need sorting (ties by slot, the order a stable
    // sort of the slots gives)
    let head = usize::try_from(slots)
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    let order = |a: &(f64, Slot), b: &(f64, Slot)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
    if ranked.len() > head {
        ranked.select_nth_unstable_by(head - 1, order);
        ranked.truncate(head);
    }
    ranked.sort_unstable_by(order);
    // an instance with more free slots than are still to keep can take one
    let mut need = slots;
    let mut cut = 0;
    for &(_, slot) in ranked.iter() {
        let Some(inst) = v.get(slot) else { break };
        let free_here = u64::from(inst.limit().saturating_sub(inst.fleet_inflight()));
        if need == 0 || free_here > need {
            break;
        }
        need -= free_here;
        cut += 1;
    }
    let kept = &ranked[..cut];
    let other = allowed.iter().any(|s| !kept.iter().any(|&(_, k)| k == s));
    if other {
        for &(_, slot) in kept {
            allowed.remove(slot);
        }
    }
    other
}
