//! Fair share between tenants inside one priority class: a virtual token counter (VTC,
//! Sheng et al., "Fairness in Serving Large Language Models", OSDI 2024).
//!
//! Each tenant has a counter per class: the tokens it has been served there (prompt plus
//! output, charged at placement with the predicted output and corrected by what it really
//! used when it ends), divided by its weight. Whenever two or more tenants wait in the class
//! whose turn it is, the next request is the oldest of the tenant with the lowest counter; a
//! tenant that floods the queue then gets its weighted share of the class and no more while
//! others wait. A tenant that starts waiting again has its counter lifted to the lowest
//! counter of those waiting (to the last one served when none waits), so a tenant that was
//! idle saves no credit to burst with later.
//!
//! The classes and aging between them stay the policy's: this only chooses among the
//! tenants of the class the policy's order picked, and when the policy's own head belongs
//! to the tenant whose turn it is, that head stands (so a policy's order inside one tenant,
//! urgency say, is kept). With one tenant (or none known), nothing changes at all.
//!
//! Overload control reads it too (`scheduler/overload.rs`): a tenant's request is
//! predicted to wait for its own queued requests and, of every other tenant waiting, as
//! many as its weight earns in that time ([`Fair::ahead`]), not for the whole class ahead
//! of it; and the request shed first is the newest of the tenant most queued for its
//! weight ([`Fair::newest_of_most_queued`]). So under overload the flooding tenant is shed,
//! not the light one whose requests would have been served in their turn.
//!
//! Each tenant of a class has a *lane*: its queued keys in entry order, removed lazily like
//! the other orders' (a key whose slot moved on is stale and dropped when it reaches a
//! front).

use super::{Live, QueueKey};
use crate::request::{Priority, TenantId};
use std::collections::VecDeque;

/// One tenant's queued requests in one class, and its counter there.
#[derive(Debug, Clone)]
struct Lane {
    tenant: Option<TenantId>,
    keys: VecDeque<QueueKey>,
    /// Served tokens over the tenant's weight.
    counter: f64,
}

/// A queued key's class and lane, by slot.
#[derive(Debug, Clone, Copy)]
struct SlotLane {
    seq: u64,
    class: u8,
    lane: u32,
}

/// The lanes of every class and the tenants' weights.
#[derive(Debug, Default)]
pub struct Fair {
    lanes: [Vec<Lane>; 4],
    /// Lanes holding keys (stale ones included) per class: at most one means no choice.
    waiting: [usize; 4],
    /// The counter of the last request placed per class: where a tenant that waits alone
    /// starts.
    floor: [f64; 4],
    slots: Vec<SlotLane>,
    weights: Vec<(TenantId, u32)>,
    /// Tenants held back for the rest of one dispatch (see `super::headroom`): their
    /// lanes are passed over while another tenant's waits.
    held: Vec<TenantId>,
}

impl Fair {
    /// Sets a tenant's weight (default 1; 0 is taken as 1): with weights 2 and 1 two
    /// waiting tenants are served tokens 2:1.
    pub fn set_weight(&mut self, tenant: TenantId, weight: u32) {
        let w = weight.max(1);
        match self.weights.iter_mut().find(|(t, _)| *t == tenant) {
            Some(e) => e.1 = w,
            None => self.weights.push((tenant, w)),
        }
    }

    fn weight(&self, tenant: Option<TenantId>) -> f64 {
        tenant
            .and_then(|t| self.weights.iter().find(|(x, _)| *x == t))
            .map_or(1.0, |(_, w)| f64::from(*w))
    }

    fn lane_of(&mut self, class: usize, tenant: Option<TenantId>) -> usize {
        if let Some(i) = self.lanes[class].iter().position(|l| l.tenant == tenant) {
            return i;
        }
        self.lanes[class].push(Lane {
            tenant,
            keys: VecDeque::new(),
            counter: 0.0,
        });
        self.lanes[class].len() - 1
    }

    /// Drops stale keys at a lane's front; true if a live key is left.
    fn purge(&mut self, class: usize, lane: usize, live: Live<'_>) -> bool {
        let l = &mut self.lanes[class][lane];
        let had = !l.keys.is_empty();
        while let Some(&k) = l.keys.front() {
            if live.contains(k) {
                return true;
            }
            l.keys.pop_front();
        }
        if had {
            self.waiting[class] -= 1;
        }
        false
    }

    /// Adds a queued request to its tenant's lane, lifting the counter of a tenant that
    /// starts waiting.
    pub fn push(
        &mut self,
        key: QueueKey,
        class: Priority,
        tenant: Option<TenantId>,
        live: Live<'_>,
    ) {
        let c = class.index();
        let lane = self.lane_of(c, tenant);
        let waiting = self.purge(c, lane, live);
        if !waiting {
            let others = (0..self.lanes[c].len())
                .filter(|&i| i != lane && !self.lanes[c][i].keys.is_empty())
                .map(|i| self.lanes[c][i].counter)
                .reduce(f64::min);
            let lift = others.unwrap_or(self.floor[c]);
            let l = &mut self.lanes[c][lane];
            l.counter = l.counter.max(lift);
            self.waiting[c] += 1;
        }
        self.lanes[c][lane].keys.push_back(key);
        let slot = key.slot as usize;
        if self.slots.len() <= slot {
            self.slots.resize(
                slot + 1,
                SlotLane {
                    seq: 0,
                    class: 0,
                    lane: 0,
                },
            );
        }
        self.slots[slot] = SlotLane {
            seq: key.seq,
            class: c as u8,
            lane: lane as u32,
        };
    }

    /// The request to serve instead of `head` (the policy's choice, live): the oldest of the
    /// class's tenant with the lowest counter, when that is another tenant than `head`'s.
    /// Returns its class, lane and key.
    pub fn instead_of(
        &mut self,
        head: QueueKey,
        live: Live<'_>,
    ) -> Option<(usize, usize, QueueKey)> {
        let at = *self.slots.get(head.slot as usize)?;
        if at.seq != head.seq {
            return None;
        }
        let c = at.class as usize;
        if self.waiting[c] < 2 {
            return None;
        }
        let mut best: Option<(f64, u64, usize)> = None;
        let mut alive = 0;
        for lane in 0..self.lanes[c].len() {
            if self.lanes[c][lane].keys.is_empty() || !self.purge(c, lane, live) {
                continue;
            }
            alive += 1;
            let l = &self.lanes[c][lane];
            if l.tenant.is_some_and(|t| self.held.contains(&t)) {
                continue;
            }
            let front = l.keys[0];
            let cand = (l.counter, front.seq, lane);
            if best.is_none_or(|b| (cand.0, cand.1) < (b.0, b.1)) {
                best = Some(cand);
            }
        }
        let (_, _, lane) = best.filter(|_| alive >= 2)?;
        if lane == at.lane as usize {
            return None;
        }
        Some((c, lane, self.lanes[c][lane].keys[0]))
    }

    /// Passes over `tenant`'s lanes until [`Fair::release`].
    pub fn hold(&mut self, tenant: TenantId) {
        if !self.held.contains(&tenant) {
            self.held.push(tenant);
        }
    }

    /// Ends every [`Fair::hold`].
    pub fn release(&mut self) {
        self.held.clear();
    }

    /// Removes the front of a lane (a head [`Fair::instead_of`] just gave).
    pub fn pop(&mut self, class: usize, lane: usize) {
        let l = &mut self.lanes[class][lane];
        l.keys.pop_front();
        if l.keys.is_empty() {
            self.waiting[class] -= 1;
        }
    }

    /// Puts a popped front back.
    pub fn restore(&mut self, class: usize, lane: usize, key: QueueKey) {
        let l = &mut self.lanes[class][lane];
        if l.keys.is_empty() {
            self.waiting[class] += 1;
        }
        l.keys.push_front(key);
    }

    /// Charges `tokens` served (negative: a correction) to a tenant in a class.
    pub fn charge(&mut self, class: Priority, tenant: Option<TenantId>, tokens: f64) {
        let c = class.index();
        let w = self.weight(tenant);
        let lane = self.lane_of(c, tenant);
        let l = &mut self.lanes[c][lane];
        l.counter = (l.counter + tokens / w).max(0.0);
        if tokens > 0.0 {
            self.floor[c] = self.floor[c].max(l.counter);
        }
    }

    /// A tenant's counter in a class (served tokens over its weight).
    pub fn counter(&self, class: Priority, tenant: Option<TenantId>) -> f64 {
        self.lanes[class.index()]
            .iter()
            .find(|l| l.tenant == tenant)
            .map_or(0.0, |l| l.counter)
    }

    /// How many requests of `class` the fair share serves before the one of `tenant` with
    /// `own` of its own requests ahead of it in its lane (stale keys counted, so an upper
    /// estimate): its own, and of every other waiting tenant as many as its weight earns
    /// in that time, never more than it has queued. `None` when fewer than two tenants wait
    /// in the class: the policy's order alone decides then.
    pub fn ahead(&self, class: Priority, tenant: Option<TenantId>, own: usize) -> Option<usize> {
        let c = class.index();
        let others = self.lanes[c]
            .iter()
            .filter(|l| l.tenant != tenant && !l.keys.is_empty());
        let mut n = 0;
        let mut ahead = own;
        let turns = (own + 1) as f64 / self.weight(tenant);
        for l in others {
            n += 1;
            let earned = (turns * self.weight(l.tenant)).ceil() as usize;
            ahead += l.keys.len().min(earned);
        }
        (n > 0).then_some(ahead)
    }

    /// Requests of `tenant` queued in `class` (stale keys included).
    pub fn queued(&self, class: Priority, tenant: Option<TenantId>) -> usize {
        self.lanes[class.index()]
            .iter()
            .find(|l| l.tenant == tenant)
            .map_or(0, |l| l.keys.len())
    }

    /// The newest live request of the tenant that the fair share would serve last in
    /// `class` (the most queued for its weight), and how many of its own wait ahead of it:
    /// the first to shed when the class is overloaded. `None` when fewer than two tenants
    /// wait there.
    pub fn newest_of_most_queued(
        &mut self,
        class: Priority,
        live: Live<'_>,
    ) -> Option<(QueueKey, Option<TenantId>, usize)> {
        let c = class.index();
        if self.waiting[c] < 2 {
            return None;
        }
        loop {
            let lane = (0..self.lanes[c].len())
                .filter(|&i| !self.lanes[c][i].keys.is_empty())
                .max_by(|&a, &b| {
                    let score = |i: usize| {
                        let l = &self.lanes[c][i];
                        l.keys.len() as f64 / self.weight(l.tenant)
                    };
                    score(a).total_cmp(&score(b))
                })?;
            let l = &mut self.lanes[c][lane];
            while let Some(&k) = l.keys.back() {
                if live.contains(k) {
                    return Some((k, l.tenant, l.keys.len() - 1));
                }
                l.keys.pop_back();
            }
            // the lane was all stale
            self.waiting[c] -= 1;
            if self.waiting[c] < 2 {
                return None;
            }
        }
    }

    /// Keys held, stale ones included.
    pub fn stored(&self) -> usize {
        self.lanes.iter().flatten().map(|l| l.keys.len()).sum()
    }

    /// Drops every stale key.
    pub fn compact(&mut self, live: Live<'_>) {
        for (c, lanes) in self.lanes.iter_mut().enumerate() {
            for l in lanes.iter_mut() {
                l.keys.retain(|k| live.contains(*k));
            }
            self.waiting[c] = lanes.iter().filter(|l| !l.keys.is_empty()).count();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(slot: u32) -> QueueKey {
        QueueKey {
            slot,
            seq: u64::from(slot) + 1,
        }
    }

    const A: Option<TenantId> = Some(TenantId(0));
    const B: Option<TenantId> = Some(TenantId(1));

    #[test]
    fn one_tenant_never_substitutes() {
        let mut f = Fair::default();
        let seqs: Vec<u64> = (1..=4).collect();
        for s in 0..4 {
            f.push(key(s), Priority::Normal, A, Live(&seqs));
        }
        f.charge(Priority::Normal, A, 1e6);
        assert_eq!(f.instead_of(key(2), Live(&seqs)), None);
    }

    #[test]
    fn the_less_served_tenant_goes_first_by_weight() {
        let mut f = Fair::default();
        f.set_weight(TenantId(1), 2);
        // a floods: slots 0..8; b waits with slots 8..10
        let seqs: Vec<u64> = (1..=10).collect();
        for s in 0..8 {
            f.push(key(s), Priority::Normal, A, Live(&seqs));
        }
        for s in 8..10 {
            f.push(key(s), Priority::Normal, B, Live(&seqs));
        }
        // equal counters: the older front (a's) stands
        assert_eq!(f.instead_of(key(0), Live(&seqs)), None);
        f.charge(Priority::Normal, A, 100.0);
        // b is behind: its oldest instead
        assert_eq!(f.instead_of(key(0), Live(&seqs)), Some((2, 1, key(8))));
        // b served 150 tokens at weight 2 counts 75 < 100: still b's turn
        f.pop(2, 1);
        f.charge(Priority::Normal, B, 150.0);
        assert_eq!(f.instead_of(key(0), Live(&seqs)), Some((2, 1, key(9))));
        f.charge(Priority::Normal, B, 100.0);
        assert_eq!(f.instead_of(key(0), Live(&seqs)), None);
    }

    #[test]
    fn a_tenant_that_starts_waiting_is_lifted_and_saves_no_credit() {
        let mut f = Fair::default();
        let mut seqs: Vec<u64> = (1..=4).collect();
        f.push(key(0), Priority::Low, A, Live(&seqs));
        f.charge(Priority::Low, A, 1000.0);
        f.push(key(1), Priority::Low, A, Live(&seqs));
        // b arrives while a waits: lifted to a's counter
        f.push(key(2), Priority::Low, B, Live(&seqs));
        assert_eq!(f.counter(Priority::Low, B), 1000.0);
        // a's first key was served (stale): b's lone key and a's second compete
        seqs[0] = 0;
        assert_eq!(f.instead_of(key(1), Live(&seqs)), None, "tie: older front");
    }

    #[test]
    fn restore_and_compact_keep_the_waiting_count_true() {
        let mut f = Fair::default();
        let mut seqs: Vec<u64> = (1..=3).collect();
        f.push(key(0), Priority::High, A, Live(&seqs));
        f.push(key(1), Priority::High, B, Live(&seqs));
        f.charge(Priority::High, A, 10.0);
        let (c, lane, k) = f.instead_of(key(0), Live(&seqs)).unwrap();
        f.pop(c, lane);
        assert_eq!(f.instead_of(key(0), Live(&seqs)), None);
        f.restore(c, lane, k);
        assert_eq!(f.instead_of(key(0), Live(&seqs)), Some((c, lane, k)));
        seqs[1] = 0;
        f.compact(Live(&seqs));
        assert_eq!(f.stored(), 1);
        assert_eq!(f.instead_of(key(0), Live(&seqs)), None);
    }
}
