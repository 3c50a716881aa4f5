//! `priority`: strict priority classes with aging, and shedding of the lowest class when
//! the queue is full.
//!
//! # The aging bound
//!
//! Each request gets a virtual start `enqueued + rank * aging_step`, where `rank` is 0 for
//! `critical`, 1 for `high`, 2 for `normal` and 3 for `low`; the queue is served in order
//! of virtual start (ties by admission order). Hence:
//!
//! > A request of rank `r` that entered the queue at `t` is served before every request,
//! > of any class, that enters the queue after `t + r * aging_step` (and before those
//! > entering exactly then, which were admitted later).
//!
//! So a `low` request can be overtaken only by requests that arrive within
//! `3 * aging_step` of it; once the ones already ahead of it and those are served, it goes.
//! Within that window the classes are strict. The default step is 5 s.
//!
//! Four deques, one per class, each in virtual-start order: push, peek and pop are O(1).

use super::{Entry, Live, QueueKey, SchedulingPolicy};
use crate::request::{Priority, RequestMeta};
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Duration;

/// The config tag.
pub const NAME: &str = "priority";

/// Settings of `priority`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PriorityConfig {
    /// Head start of each class over the class below it (see the module's aging bound).
    #[serde(with = "humantime_serde")]
    pub aging_step: Duration,
    /// Whether a higher-class newcomer evicts the newest request of the lowest queued class
    /// when the queue is full (otherwise the newcomer is rejected).
    pub shed: bool,
}

impl Default for PriorityConfig {
    fn default() -> Self {
        PriorityConfig {
            aging_step: Duration::from_secs(5),
            shed: true,
        }
    }
}

/// Strict classes with aging: O(1) push, peek and pop.
#[derive(Debug)]
pub struct PriorityPolicy {
    config: PriorityConfig,
    classes: [VecDeque<(Time, QueueKey)>; 4],
    head: Option<usize>,
}

impl PriorityPolicy {
    /// An empty queue.
    pub fn new(config: PriorityConfig) -> Self {
        PriorityPolicy {
            config,
            classes: Default::default(),
            head: None,
        }
    }

    /// The virtual start of a request of `class` entering the queue at `enqueued`.
    pub fn virtual_start(&self, class: Priority, enqueued: Time) -> Time {
        let rank = class.index() as u32;
        enqueued + self.config.aging_step.saturating_mul(rank)
    }
}

impl SchedulingPolicy for PriorityPolicy {
    fn name(&self) -> &'static str {
        NAME
    }
    fn push(&mut self, entry: Entry<'_>) {
        let class = entry.meta.priority;
        let start = self.virtual_start(class, entry.enqueued);
        self.classes[class.index()].push_back((start, entry.key));
    }
    fn peek(&mut self, live: Live<'_>) -> Option<QueueKey> {
        let mut best: Option<(Time, QueueKey, usize)> = None;
        for (c, q) in self.classes.iter_mut().enumerate() {
            while let Some(&(start, k)) = q.front() {
                if live.contains(k) {
                    if best.is_none_or(|(bs, bk, _)| (start, k.seq) < (bs, bk.seq)) {
                        best = Some((start, k, c));
                    }
                    break;
                }
                q.pop_front();
            }
        }
        self.head = best.map(|(_, _, c)| c);
        best.map(|(_, k, _)| k)
    }
    fn pop_head(&mut self) {
        if let Some(c) = self.head.take() {
            self.classes[c].pop_front();
        }
    }
    fn stored(&self) -> usize {
        self.classes.iter().map(VecDeque::len).sum()
    }
    fn compact(&mut self, live: Live<'_>) {
        for q in &mut self.classes {
            q.retain(|(_, k)| live.contains(*k));
        }
        self.head = None;
    }
    fn clear(&mut self) {
        self.classes.iter_mut().for_each(VecDeque::clear);
        self.head = None;
    }
    fn shed_victim(&mut self, incoming: &RequestMeta, live: Live<'_>) -> Option<QueueKey> {
        if !self.config.shed {
            return None;
        }
        self.head = None;
        for c in (incoming.priority.index() + 1..4).rev() {
            let q = &mut self.classes[c];
            while let Some((_, k)) = q.pop_back() {
                if live.contains(k) {
                    return Some(k);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::RequestId;

    fn push(p: &mut PriorityPolicy, seqs: &mut Vec<u64>, class: Priority, at_ms: u64) {
        let seq = seqs.len() as u64 + 1;
        let key = QueueKey {
            slot: seqs.len() as u32,
            seq,
        };
        seqs.push(seq);
        let mut meta = RequestMeta::new(RequestId(seq), "m", 1, 1, Time::from_millis(at_ms));
        meta.priority = class;
        p.push(Entry {
            key,
            meta: &meta,
            enqueued: Time::from_millis(at_ms),
        });
    }

    fn drain(p: &mut PriorityPolicy, seqs: &mut [u64]) -> Vec<u64> {
        let mut order = Vec::new();
        while let Some(k) = p.peek(Live(seqs)) {
            order.push(k.seq);
            p.pop_head();
            seqs[k.slot as usize] = 0;
        }
        order
    }

    #[test]
    fn priority_serves_higher_classes_first_and_fifo_within_a_class() {
        let mut p = PriorityPolicy::new(PriorityConfig::default());
        let mut seqs = Vec::new();
        push(&mut p, &mut seqs, Priority::Low, 0); // 1
        push(&mut p, &mut seqs, Priority::Normal, 1); // 2
        push(&mut p, &mut seqs, Priority::Critical, 2); // 3
        push(&mut p, &mut seqs, Priority::High, 3); // 4
        push(&mut p, &mut seqs, Priority::Critical, 4); // 5
        assert_eq!(drain(&mut p, &mut seqs), [3, 5, 4, 2, 1]);
    }

    #[test]
    fn priority_never_starves_low_class_beyond_aging_bound() {
        // aging step 1 s: a low request entering at 0 is overtaken by critical requests
        // entering up to 3 s (exclusive of ties: at 3 s the low one, admitted first, wins),
        // and by nothing entering later.
        let mut p = PriorityPolicy::new(PriorityConfig {
            aging_step: Duration::from_secs(1),
            shed: true,
        });
        let mut seqs = Vec::new();
        push(&mut p, &mut seqs, Priority::Low, 0); // seq 1
        for ms in (100..=5000).step_by(100) {
            push(&mut p, &mut seqs, Priority::Critical, ms);
        }
        let order = drain(&mut p, &mut seqs);
        let low_pos = order.iter().position(|&s| s == 1).unwrap();
        // critical at 100..=2900 ms (29 of them) go first, then the low one, then 3000 ms on.
        assert_eq!(low_pos, 29);
        // seq 30 entered at 2900 ms: last to overtake; seq 31 entered at 3000 ms: after it.
        assert_eq!(order[low_pos - 1], 30);
        assert_eq!(order[low_pos + 1], 31);
    }

    #[test]
    fn shedding_evicts_the_newest_request_of_the_lowest_class_below_the_newcomer() {
        let mut p = PriorityPolicy::new(PriorityConfig::default());
        let mut seqs = Vec::new();
        push(&mut p, &mut seqs, Priority::Low, 0); // 1
        push(&mut p, &mut seqs, Priority::Normal, 1); // 2
        push(&mut p, &mut seqs, Priority::Low, 2); // 3
        let mut high = RequestMeta::new(RequestId(9), "m", 1, 1, Time::ZERO);
        high.priority = Priority::High;
        assert_eq!(p.shed_victim(&high, Live(&seqs)).map(|k| k.seq), Some(3));
        seqs[2] = 0;
        assert_eq!(p.shed_victim(&high, Live(&seqs)).map(|k| k.seq), Some(1));
        seqs[0] = 0;
        assert_eq!(p.shed_victim(&high, Live(&seqs)).map(|k| k.seq), Some(2));
        seqs[1] = 0;
        assert_eq!(p.shed_victim(&high, Live(&seqs)), None);
        let mut p = PriorityPolicy::new(PriorityConfig::default());
        let mut seqs = Vec::new();
        push(&mut p, &mut seqs, Priority::Normal, 0);
        let mut normal = RequestMeta::new(RequestId(9), "m", 1, 1, Time::ZERO);
        normal.priority = Priority::Normal;
        assert_eq!(
            p.shed_victim(&normal, Live(&seqs)),
            None,
            "never its own class"
        );
    }
}
