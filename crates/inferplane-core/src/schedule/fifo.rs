//! `fifo`: first come, first served. One deque of keys in admission order.

use super::{Entry, Live, QueueKey, SchedulingPolicy};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The config tag.
pub const NAME: &str = "fifo";

/// Settings of `fifo` (none yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FifoConfig {}

/// First come, first served: O(1) push and pop.
#[derive(Debug, Default)]
pub struct Fifo {
    queue: VecDeque<QueueKey>,
}

impl Fifo {
    /// An empty queue.
    pub fn new(_config: FifoConfig) -> Self {
        Fifo::default()
    }
}

impl SchedulingPolicy for Fifo {
    fn name(&self) -> &'static str {
        NAME
    }
    fn push(&mut self, entry: Entry<'_>) {
        self.queue.push_back(entry.key);
    }
    fn peek(&mut self, live: Live<'_>) -> Option<QueueKey> {
        while let Some(&k) = self.queue.front() {
            if live.contains(k) {
                return Some(k);
            }
            self.queue.pop_front();
        }
        None
    }
    fn pop_head(&mut self) {
        self.queue.pop_front();
    }
    fn stored(&self) -> usize {
        self.queue.len()
    }
    fn compact(&mut self, live: Live<'_>) {
        self.queue.retain(|k| live.contains(*k));
    }
    fn clear(&mut self) {
        self.queue.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{RequestId, RequestMeta};
    use crate::time::Time;

    #[test]
    fn fifo_serves_in_admission_order_and_skips_removed_keys() {
        let mut f = Fifo::new(FifoConfig {});
        let meta = RequestMeta::new(RequestId(0), "m", 1, 1, Time::ZERO);
        for slot in 0..4u32 {
            f.push(Entry {
                key: QueueKey {
                    slot,
                    seq: u64::from(slot) + 1,
                },
                meta: &meta,
                enqueued: Time::ZERO,
            });
        }
        // slot 1 cancelled (seq 0), slot 0 reused by a newer request (seq 9)
        let seqs = [9, 0, 3, 4];
        let live = Live(&seqs);
        assert_eq!(f.peek(live), Some(QueueKey { slot: 2, seq: 3 }));
        f.pop_head();
        assert_eq!(f.peek(live), Some(QueueKey { slot: 3, seq: 4 }));
        f.compact(live);
        assert_eq!(f.stored(), 1);
    }
}
