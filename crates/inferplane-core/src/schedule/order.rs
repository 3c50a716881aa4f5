//! The queue orders a scheduling policy serves from. The scheduler keeps every queued
//! request in all three at once, so a policy switch is O(1) and loses nothing:
//!
//! * [`OrderKind::Arrival`]: first come, first served (a deque).
//! * [`OrderKind::ClassAging`]: priority classes with aging relative to the classes' wait
//!   targets. A request of class rank `r` (0 critical .. 3 low) that entered the queue at
//!   `t` has the virtual start `t + r * step`, where `step` is the longest class wait target
//!   (see `scheduler::OverloadConfig`); the queue is served in order of virtual start (ties
//!   by admission order). So a request is served before every request, of any class, that
//!   enters the queue after `t + r * step`. While overload control sheds (a request waits at
//!   most its class's target, at most `step`), no request ages past a higher class that
//!   arrived after it: the classes are strict; with shedding off, aging bounds the wait.
//!   Four deques, one per class (the *bands*): O(1) push, peek and pop.
//! * [`OrderKind::Urgency`]: the same classes and aging between them (the class whose
//!   oldest request has the earliest virtual start goes first), and within a class the
//!   earliest latest start first: a request with a TTFT target by its TTFT deadline, else
//!   one with an end-to-end deadline by that deadline, else by its virtual start. One
//!   binary heap per class, O(log n).
//!
//! Inside the class an order picked, [`super::fair`] chooses between tenants (it keeps its
//! own lanes over the same requests); with one tenant it never does.
//!
//! Removal is lazy: a key whose slot no longer holds the same sequence number is stale
//! ([`Live`]) and is dropped when it reaches a head; [`Queues::compact`] drops them all
//! when stale keys outnumber live ones. The bands also serve the scheduler's overload
//! control: the newest live request of a class is its band's back, and the number of a
//! class's requests that entered before a time is a binary search in its band.

use super::{Live, QueueKey};
use crate::request::{Priority, TenantId};
use crate::time::Time;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// Which order a policy serves from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderKind {
    /// First come, first served.
    Arrival,
    /// Strict classes with aging relative to class wait targets.
    ClassAging,
    /// Earliest TTFT deadline (else end-to-end deadline, else class virtual start) first.
    Urgency,
}

/// One request entering the orders, with its precomputed keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Its key.
    pub key: QueueKey,
    /// Its class.
    pub class: Priority,
    /// When it entered the queue.
    pub enqueued: Time,
    /// `enqueued + offset(class)`.
    pub virtual_start: Time,
    /// Its urgency (see the module docs).
    pub urgency: Time,
    /// Its tenant, for the fair share inside its class.
    pub tenant: Option<TenantId>,
}

/// A band member: virtual start, entry time, key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Member {
    start: Time,
    enqueued: Time,
    key: QueueKey,
}

/// Where a head came from, to pop it or put it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// The arrival deque.
    Arrival(QueueKey),
    /// The band of a class.
    Band(usize, QueueKey, Time, Time),
    /// The urgency heap of a class.
    Urgency(usize, QueueKey, Time),
    /// A tenant's lane in a class (the fair share chose it over the order's own head):
    /// class, lane, key.
    Fair(usize, usize, QueueKey),
}

impl Head {
    /// The key at the head.
    pub fn key(&self) -> QueueKey {
        match *self {
            Head::Arrival(k)
            | Head::Band(_, k, _, _)
            | Head::Urgency(_, k, _)
            | Head::Fair(_, _, k) => k,
        }
    }
}

type UrgencyHeap = BinaryHeap<Reverse<(Time, u64, u32)>>;

/// The three orders over the same queued requests.
#[derive(Debug, Default)]
pub struct Queues {
    arrival: VecDeque<QueueKey>,
    bands: [VecDeque<Member>; 4],
    urgency: [UrgencyHeap; 4],
    fair: super::fair::Fair,
}

impl Queues {
    /// Adds a request to every order.
    pub fn push(&mut self, e: Entry, live: Live<'_>) {
        self.fair.push(e.key, e.class, e.tenant, live);
        self.arrival.push_back(e.key);
        self.bands[e.class.index()].push_back(Member {
            start: e.virtual_start,
            enqueued: e.enqueued,
            key: e.key,
        });
        self.urgency[e.class.index()].push(Reverse((e.urgency, e.key.seq, e.key.slot)));
    }

    /// Each band's oldest live request, dropping stale keys at the fronts.
    fn fronts(&mut self, live: Live<'_>) -> [Option<Member>; 4] {
        let mut out = [None; 4];
        for (c, band) in self.bands.iter_mut().enumerate() {
            while let Some(&m) = band.front() {
                if live.contains(m.key) {
                    out[c] = Some(m);
                    break;
                }
                band.pop_front();
            }
        }
        out
    }

    /// The band whose oldest live request has the earliest virtual start (ties to the
    /// earlier admission).
    fn first_band(&mut self, live: Live<'_>) -> Option<(usize, Member)> {
        let fronts = self.fronts(live);
        (0..4)
            .filter_map(|c| fronts[c].map(|m| (c, m)))
            .min_by_key(|(_, m)| (m.start, m.key.seq))
    }

    /// The fair share between tenants (weights, counters).
    pub fn fair(&mut self) -> &mut super::fair::Fair {
        &mut self.fair
    }

    /// The fair share between tenants, to read.
    pub fn fair_view(&self) -> &super::fair::Fair {
        &self.fair
    }

    /// `head`, or the request the fair share serves instead of it in its class.
    fn fair_head(&mut self, head: Option<Head>, live: Live<'_>) -> Option<Head> {
        let h = head?;
        match self.fair.instead_of(h.key(), live) {
            Some((c, lane, k)) => Some(Head::Fair(c, lane, k)),
            None => Some(h),
        }
    }

    /// The next request of `kind`, dropping stale keys on the way.
    pub fn peek(&mut self, kind: OrderKind, live: Live<'_>) -> Option<Head> {
        let head = self.order_head(kind, live);
        self.fair_head(head, live)
    }

    fn order_head(&mut self, kind: OrderKind, live: Live<'_>) -> Option<Head> {
        match kind {
            OrderKind::Arrival => {
                while let Some(&k) = self.arrival.front() {
                    if live.contains(k) {
                        return Some(Head::Arrival(k));
                    }
                    self.arrival.pop_front();
                }
                None
            }
            OrderKind::ClassAging => self
                .first_band(live)
                .map(|(c, m)| Head::Band(c, m.key, m.start, m.enqueued)),
            OrderKind::Urgency => self.urgency_head(4, live),
        }
    }

    /// The next request of `kind` among the `classes` highest classes only (1: critical;
    /// 4: all, as [`Queues::peek`]). Arrival order among them is their bands' entry order.
    pub fn peek_within(&mut self, kind: OrderKind, classes: usize, live: Live<'_>) -> Option<Head> {
        if classes >= 4 {
            return self.peek(kind, live);
        }
        let head = match kind {
            OrderKind::Arrival | OrderKind::ClassAging => {
                let fronts = self.fronts(live);
                (0..classes)
                    .filter_map(|c| fronts[c].map(|m| (c, m)))
                    .min_by_key(|(_, m)| {
                        let at = if kind == OrderKind::Arrival {
                            m.enqueued
                        } else {
                            m.start
                        };
                        (at, m.key.seq)
                    })
                    .map(|(c, m)| Head::Band(c, m.key, m.start, m.enqueued))
            }
            OrderKind::Urgency => self.urgency_head(classes, live),
        };
        self.fair_head(head, live)
    }

    /// The most urgent request of the class whose turn it is, among the `classes` highest.
    fn urgency_head(&mut self, classes: usize, live: Live<'_>) -> Option<Head> {
        // classes in the turn of their oldest request; a class whose heap holds no live key
        // (its requests were passed over this dispatch) gives way
        let fronts = self.fronts(live);
        let mut turn = [(Time::MAX, u64::MAX, 0usize); 4];
        let mut n = 0;
        for (c, f) in fronts.iter().enumerate().take(classes) {
            if let Some(m) = f {
                turn[n] = (m.start, m.key.seq, c);
                n += 1;
            }
        }
        turn[..n].sort_unstable();
        for &(_, _, c) in &turn[..n] {
            let heap = &mut self.urgency[c];
            while let Some(&Reverse((at, seq, slot))) = heap.peek() {
                let k = QueueKey { slot, seq };
                if live.contains(k) {
                    return Some(Head::Urgency(c, k, at));
                }
                heap.pop();
            }
        }
        None
    }

    /// Removes `head` (just returned by `peek`) from its order.
    pub fn pop(&mut self, head: Head) {
        match head {
            Head::Arrival(_) => {
                self.arrival.pop_front();
            }
            Head::Band(c, ..) => {
                self.bands[c].pop_front();
            }
            Head::Urgency(c, ..) => {
                self.urgency[c].pop();
            }
            // the other orders drop it lazily, once its slot moved on
            Head::Fair(c, lane, _) => self.fair.pop(c, lane),
        }
    }

    /// Puts back heads popped during one pass, which must be given in reverse pop order;
    /// each returns to the place it had.
    pub fn restore(&mut self, head: Head) {
        match head {
            Head::Arrival(k) => self.arrival.push_front(k),
            Head::Band(c, key, start, enqueued) => self.bands[c].push_front(Member {
                start,
                enqueued,
                key,
            }),
            Head::Urgency(c, k, at) => self.urgency[c].push(Reverse((at, k.seq, k.slot))),
            Head::Fair(c, lane, k) => self.fair.restore(c, lane, k),
        }
    }

    /// The newest live request of `class`, dropping stale keys at the back, with its entry
    /// time.
    pub fn newest(&mut self, class: Priority, live: Live<'_>) -> Option<(QueueKey, Time)> {
        let band = &mut self.bands[class.index()];
        while let Some(&m) = band.back() {
            if live.contains(m.key) {
                return Some((m.key, m.enqueued));
            }
            band.pop_back();
        }
        None
    }

    /// How many requests of `class` entered the queue at or before `t` (stale keys
    /// included, so an upper estimate until the next compaction).
    pub fn entered_by(&self, class: Priority, t: Time) -> usize {
        self.bands[class.index()].partition_point(|m| m.enqueued <= t)
    }

    /// Keys held in the largest order, stale ones included.
    pub fn stored(&self) -> usize {
        self.arrival
            .len()
            .max(self.urgency.iter().map(BinaryHeap::len).sum())
            .max(self.bands.iter().map(VecDeque::len).sum())
            .max(self.fair.stored())
    }

    /// Drops every stale key.
    pub fn compact(&mut self, live: Live<'_>) {
        self.fair.compact(live);
        self.arrival.retain(|k| live.contains(*k));
        for band in &mut self.bands {
            band.retain(|m| live.contains(m.key));
        }
        for heap in &mut self.urgency {
            heap.retain(|Reverse((_, seq, slot))| {
                live.contains(QueueKey {
                    slot: *slot,
                    seq: *seq,
                })
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        slot: u32,
        class: Priority,
        enqueued_ms: u64,
        offset_ms: u64,
        urgency_ms: u64,
    ) -> Entry {
        Entry {
            key: QueueKey {
                slot,
                seq: u64::from(slot) + 1,
            },
            class,
            enqueued: Time::from_millis(enqueued_ms),
            virtual_start: Time::from_millis(enqueued_ms + offset_ms),
            urgency: Time::from_millis(urgency_ms),
            tenant: None,
        }
    }

    fn drain(q: &mut Queues, kind: OrderKind, seqs: &mut [u64]) -> Vec<u32> {
        let mut out = Vec::new();
        while let Some(h) = q.peek(kind, Live(seqs)) {
            q.pop(h);
            out.push(h.key().slot);
            seqs[h.key().slot as usize] = 0;
        }
        out
    }

    fn queues() -> (Queues, Vec<u64>) {
        let mut q = Queues::default();
        // step 10 s: low at 0 (start 30 s), normal at 1 s (start 21 s), critical at 25 s,
        // high at 2 s (start 12 s), a second normal at 3 s (start 23 s, urgent)
        q.push(entry(0, Priority::Low, 0, 30_000, 9_000), Live(&[]));
        q.push(entry(1, Priority::Normal, 1_000, 20_000, 50_000), Live(&[]));
        q.push(entry(2, Priority::Critical, 25_000, 0, 26_000), Live(&[]));
        q.push(entry(3, Priority::High, 2_000, 10_000, 3_000), Live(&[]));
        q.push(entry(4, Priority::Normal, 3_000, 20_000, 4_000), Live(&[]));
        (q, vec![1, 2, 3, 4, 5])
    }

    #[test]
    fn each_order_serves_its_own_way_over_the_same_requests() {
        let order = |kind| {
            let (mut q, mut seqs) = queues();
            drain(&mut q, kind, &mut seqs)
        };
        assert_eq!(order(OrderKind::Arrival), [0, 1, 2, 3, 4]);
        // virtual starts: 30, 21, 25, 12, 23 s
        assert_eq!(order(OrderKind::ClassAging), [3, 1, 4, 2, 0]);
        // the same classes in the same turns, the urgent normal one first in its class
        assert_eq!(order(OrderKind::Urgency), [3, 4, 1, 2, 0]);
    }

    #[test]
    fn peek_within_serves_only_the_highest_classes_in_each_order() {
        for (kind, expected) in [
            // critical entered at 25 s, high at 2 s: arrival order among the two
            (OrderKind::Arrival, [3, 2]),
            (OrderKind::ClassAging, [3, 2]),
            (OrderKind::Urgency, [3, 2]),
        ] {
            let (mut q, mut seqs) = queues();
            let mut out = Vec::new();
            while let Some(h) = q.peek_within(kind, 2, Live(&seqs)) {
                q.pop(h);
                out.push(h.key().slot);
                seqs[h.key().slot as usize] = 0;
            }
            assert_eq!(out, expected, "{kind:?}");
            let (mut q, seqs) = queues();
            let only = q.peek_within(kind, 1, Live(&seqs)).map(|h| h.key().slot);
            assert_eq!(only, Some(2), "critical only: {kind:?}");
            let all = q.peek_within(kind, 4, Live(&seqs)).map(|h| h.key().slot);
            assert_eq!(all, q.peek(kind, Live(&seqs)).map(|h| h.key().slot));
        }
    }

    #[test]
    fn restored_heads_take_their_place_again_and_stale_keys_are_skipped() {
        for kind in [
            OrderKind::Arrival,
            OrderKind::ClassAging,
            OrderKind::Urgency,
        ] {
            let (mut fresh, seqs0) = queues();
            let expected = drain(&mut fresh, kind, &mut seqs0.clone());
            let (mut q, mut seqs) = queues();
            let mut popped = Vec::new();
            for _ in 0..2 {
                let h = q.peek(kind, Live(&seqs)).unwrap();
                q.pop(h);
                popped.push(h);
            }
            for h in popped.into_iter().rev() {
                q.restore(h);
            }
            seqs[expected[0] as usize] = 0;
            assert_eq!(drain(&mut q, kind, &mut seqs), expected[1..], "{kind:?}");
        }
    }

    #[test]
    fn bands_answer_the_newest_of_a_class_and_how_many_entered_by_a_time() {
        let mut q = Queues::default();
        q.push(entry(0, Priority::Low, 0, 0, 0), Live(&[]));
        q.push(entry(1, Priority::Low, 10, 0, 0), Live(&[]));
        q.push(entry(2, Priority::Low, 20, 0, 0), Live(&[]));
        let mut seqs = vec![1, 2, 3];
        assert_eq!(q.entered_by(Priority::Low, Time::from_millis(10)), 2);
        assert_eq!(
            q.newest(Priority::Low, Live(&seqs)).map(|(k, _)| k.slot),
            Some(2)
        );
        seqs[2] = 0;
        assert_eq!(
            q.newest(Priority::Low, Live(&seqs)).map(|(k, _)| k.slot),
            Some(1)
        );
        assert_eq!(q.newest(Priority::High, Live(&seqs)), None);
        q.compact(Live(&seqs));
        assert_eq!(q.stored(), 2);
    }
}
