//! `Scheduler`: the pure state machine of one pool (all instances serving one model and
//! that model's queue). It admits requests, orders the queue, places requests on
//! instances with room, and accounts for completions, cancellations, expiry and instance
//! changes. The gateway's dispatcher task and the discrete-event simulation drive the very
//! same code; it never reads a clock (`now` is an argument) and never blocks.
//!
//! In-flight accounting is the scheduler's: an instance's slot is taken at placement (not
//! when the response starts) and given back by `complete` or `cancel`, so a burst can never
//! pile onto one instance between two load reports.

use crate::instance::{InstanceId, InstanceSpec};
use crate::request::{RequestId, RequestMeta};
use crate::time::Time;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// Index of an instance in the scheduler's table. Stable until the instance is removed.
pub type InstanceIx = usize;

/// Pool-level limits.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// Most requests waiting in the queue; beyond it new requests are rejected.
    pub max_queue: usize,
    /// Longest a request may wait in the queue before it is rejected.
    pub queue_timeout: Option<Duration>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_queue: 10_000,
            queue_timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// Engine-reported load of an instance; `None` means unknown (never read as zero).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EngineLoad {
    /// Requests running in the engine.
    pub running: Option<f64>,
    /// Requests waiting inside the engine.
    pub waiting: Option<f64>,
    /// KV-cache usage, 0..=1.
    pub kv_usage: Option<f64>,
}

/// Why a request was not (or no longer) queued.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RejectReason {
    /// The queue is at `max_queue`.
    #[error("the queue for this model is full ({max_queue} waiting)")]
    QueueFull {
        /// The configured limit.
        max_queue: usize,
    },
    /// The pool has no instances at all.
    #[error("no instance serves this model")]
    NoInstances,
    /// Waited longer than the queue timeout.
    #[error("waited {waited:?} in the queue without an instance with room (timeout {timeout:?})")]
    QueueTimeout {
        /// How long it waited.
        waited: Duration,
        /// The configured timeout.
        timeout: Duration,
    },
    /// Its end-to-end deadline passed while it was queued.
    #[error("its deadline passed after {waited:?} in the queue")]
    DeadlineMissed {
        /// How long it waited.
        waited: Duration,
    },
}

/// A request handed back with the reason it left the queue.
#[derive(Debug)]
pub struct Rejected<T> {
    /// The request.
    pub meta: RequestMeta,
    /// The caller's payload, returned untouched.
    pub payload: T,
    /// Why.
    pub reason: RejectReason,
}

/// A request placed on an instance: the caller now executes it there.
#[derive(Debug)]
pub struct Placement<T> {
    /// The request.
    pub meta: RequestMeta,
    /// The caller's payload.
    pub payload: T,
    /// The chosen instance.
    pub instance: InstanceId,
    /// Its index in the table.
    pub ix: InstanceIx,
    /// How long it waited in the queue.
    pub queued_for: Duration,
}

/// How a placed request ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// Served; tokens and timings as measured by the caller.
    Success {
        /// Prompt tokens (engine-reported when known).
        prompt_tokens: u32,
        /// Generated tokens.
        completion_tokens: u32,
        /// Time from arrival to the first token.
        ttft: Option<Duration>,
    },
    /// Failed at or after the instance.
    Failure,
    /// The client went away.
    Cancelled,
}

/// One instance as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct InstanceState {
    /// Its spec.
    pub spec: InstanceSpec,
    /// Requests placed and not yet completed.
    pub inflight: u32,
    /// Healthy and circuit closed: may receive work.
    pub ready: bool,
    /// Draining: receives nothing new, in-flight work finishes.
    pub draining: bool,
    /// Last engine-reported load.
    pub load: EngineLoad,
    /// Placements made on it.
    pub placed_total: u64,
}

impl InstanceState {
    /// Whether it can take one more request now.
    pub fn has_room(&self) -> bool {
        self.ready && !self.draining && self.inflight < self.spec.max_inflight
    }

    /// Comparable busyness, lower is better: gateway in-flight plus engine-reported
    /// waiting, relative to capacity.
    pub fn load_score(&self) -> f64 {
        let waiting = self.load.waiting.unwrap_or(0.0);
        (f64::from(self.inflight) + waiting) / f64::from(self.spec.max_inflight.max(1))
    }
}

struct Queued<T> {
    meta: RequestMeta,
    payload: T,
    enqueued: Time,
    avoid: Option<InstanceIx>,
}

/// The scheduler of one pool. `T` is the caller's payload (a reply channel in the gateway,
/// a request record in the simulation).
pub struct Scheduler<T> {
    config: SchedulerConfig,
    queue: VecDeque<Queued<T>>,
    instances: Vec<Option<InstanceState>>,
    index: HashMap<InstanceId, InstanceIx>,
    inflight: HashMap<RequestId, InstanceIx>,
}

/// Error for an instance id that is already registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("instance {0} is already registered")]
pub struct DuplicateInstance(pub InstanceId);

impl<T> Scheduler<T> {
    /// An empty pool.
    pub fn new(config: SchedulerConfig) -> Self {
        Scheduler {
            config,
            queue: VecDeque::new(),
            instances: Vec::new(),
            index: HashMap::new(),
            inflight: HashMap::new(),
        }
    }

    /// Admits a request to the queue, or rejects it at once with the reason.
    pub fn submit(
        &mut self,
        meta: RequestMeta,
        payload: T,
        now: Time,
    ) -> Result<(), Box<Rejected<T>>> {
        if self.index.is_empty() {
            return Err(Box::new(Rejected {
                meta,
                payload,
                reason: RejectReason::NoInstances,
            }));
        }
        if self.queue.len() >= self.config.max_queue {
            return Err(Box::new(Rejected {
                meta,
                payload,
                reason: RejectReason::QueueFull {
                    max_queue: self.config.max_queue,
                },
            }));
        }
        self.queue.push_back(Queued {
            meta,
            payload,
            enqueued: now,
            avoid: None,
        });
        Ok(())
    }

    /// Puts a request whose attempt failed before any byte reached the client back at the
    /// head of the queue, preferring any instance but `avoid`. Call `complete` for the
    /// failed attempt first.
    pub fn requeue(&mut self, meta: RequestMeta, payload: T, avoid: &InstanceId, now: Time) {
        let avoid = self.index.get(avoid).copied();
        self.queue.push_front(Queued {
            meta,
            payload,
            enqueued: now,
            avoid,
        });
    }

    /// Places as many queued requests as instances have room for, in queue order.
    pub fn dispatch(&mut self, now: Time, out: &mut Vec<Placement<T>>) {
        while let Some(head) = self.queue.front() {
            let Some(ix) = self.pick(head.avoid) else {
                break;
            };
            let Some(q) = self.queue.pop_front() else {
                break;
            };
            let Some(inst) = self.instances[ix].as_mut() else {
                break;
            };
            inst.inflight += 1;
            inst.placed_total += 1;
            self.inflight.insert(q.meta.id, ix);
            out.push(Placement {
                instance: inst.spec.id.clone(),
                ix,
                queued_for: now.saturating_since(q.enqueued),
                meta: q.meta,
                payload: q.payload,
            });
        }
    }

    /// The least-loaded instance with room, preferring any but `avoid`.
    fn pick(&self, avoid: Option<InstanceIx>) -> Option<InstanceIx> {
        let mut best: Option<(InstanceIx, f64)> = None;
        let mut fallback = None;
        for (ix, inst) in self.instances.iter().enumerate() {
            let Some(inst) = inst else { continue };
            if !inst.has_room() {
                continue;
            }
            if Some(ix) == avoid {
                fallback = Some(ix);
                continue;
            }
            let score = inst.load_score();
            if best.is_none_or(|(_, s)| score < s) {
                best = Some((ix, score));
            }
        }
        best.map(|(ix, _)| ix).or(fallback)
    }

    /// Gives back the slot of a placed request. Unknown ids are ignored (returns false).
    pub fn complete(&mut self, id: RequestId, _outcome: Outcome, _now: Time) -> bool {
        let Some(ix) = self.inflight.remove(&id) else {
            return false;
        };
        if let Some(inst) = self.instances.get_mut(ix).and_then(Option::as_mut) {
            inst.inflight = inst.inflight.saturating_sub(1);
        }
        true
    }

    /// Removes a queued request and returns its payload; a placed one is completed as
    /// cancelled (returns `None`).
    pub fn cancel(&mut self, id: RequestId, now: Time) -> Option<T> {
        if let Some(pos) = self.queue.iter().position(|q| q.meta.id == id) {
            return self.queue.remove(pos).map(|q| q.payload);
        }
        self.complete(id, Outcome::Cancelled, now);
        None
    }

    /// Rejects queued requests that waited past the queue timeout or their deadline.
    pub fn expire(&mut self, now: Time, out: &mut Vec<Rejected<T>>) {
        let timeout = self.config.queue_timeout;
        let mut i = 0;
        while i < self.queue.len() {
            let q = &self.queue[i];
            let waited = now.saturating_since(q.enqueued);
            let reason = if timeout.is_some_and(|t| waited >= t) {
                timeout.map(|timeout| RejectReason::QueueTimeout { waited, timeout })
            } else if q.meta.deadline_at().is_some_and(|d| now >= d) {
                Some(RejectReason::DeadlineMissed { waited })
            } else {
                None
            };
            match reason {
                Some(reason) => {
                    if let Some(q) = self.queue.remove(i) {
                        out.push(Rejected {
                            meta: q.meta,
                            payload: q.payload,
                            reason,
                        });
                    }
                }
                None => i += 1,
            }
        }
    }

    /// The earliest time at which `expire` could reject something.
    pub fn next_expiry(&self) -> Option<Time> {
        self.queue
            .iter()
            .filter_map(|q| {
                let t = self.config.queue_timeout.map(|t| q.enqueued + t);
                match (t, q.meta.deadline_at()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            })
            .min()
    }

    /// Registers an instance (not ready until `set_ready`).
    pub fn add_instance(&mut self, spec: InstanceSpec) -> Result<InstanceIx, DuplicateInstance> {
        if self.index.contains_key(&spec.id) {
            return Err(DuplicateInstance(spec.id));
        }
        let ix = match self.instances.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.instances.push(None);
                self.instances.len() - 1
            }
        };
        self.index.insert(spec.id.clone(), ix);
        self.instances[ix] = Some(InstanceState {
            spec,
            inflight: 0,
            ready: false,
            draining: false,
            load: EngineLoad::default(),
            placed_total: 0,
        });
        Ok(ix)
    }

    /// Removes an instance; its in-flight requests finish on their own and their
    /// completions are ignored. Returns whether it existed.
    pub fn remove_instance(&mut self, id: &InstanceId) -> bool {
        let Some(ix) = self.index.remove(id) else {
            return false;
        };
        self.instances[ix] = None;
        self.inflight.retain(|_, i| *i != ix);
        for q in &mut self.queue {
            if q.avoid == Some(ix) {
                q.avoid = None;
            }
        }
        true
    }

    fn state_mut(&mut self, id: &InstanceId) -> Option<&mut InstanceState> {
        let ix = *self.index.get(id)?;
        self.instances.get_mut(ix)?.as_mut()
    }

    /// Stops (or resumes) sending new work to an instance. Returns whether it exists.
    pub fn set_draining(&mut self, id: &InstanceId, draining: bool) -> bool {
        self.state_mut(id).map(|s| s.draining = draining).is_some()
    }

    /// Marks an instance ready (healthy, circuit closed) or not. Returns whether it exists.
    pub fn set_ready(&mut self, id: &InstanceId, ready: bool) -> bool {
        self.state_mut(id).map(|s| s.ready = ready).is_some()
    }

    /// Records the engine's reported load. Returns whether the instance exists.
    pub fn update_load(&mut self, id: &InstanceId, load: EngineLoad) -> bool {
        self.state_mut(id).map(|s| s.load = load).is_some()
    }

    /// Requests waiting in the queue.
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// Requests placed and not completed.
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// The instances, in table order.
    pub fn instances(&self) -> impl Iterator<Item = &InstanceState> {
        self.instances.iter().flatten()
    }

    /// One instance.
    pub fn instance(&self, id: &InstanceId) -> Option<&InstanceState> {
        self.instances.get(*self.index.get(id)?)?.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: u64, now: Time) -> RequestMeta {
        RequestMeta::new(RequestId(id), "m", 10, 10, now)
    }

    fn pool(limits: &[u32]) -> Scheduler<u64> {
        let mut s = Scheduler::new(SchedulerConfig::default());
        for (i, l) in limits.iter().enumerate() {
            let id = InstanceId::new(format!("i{i}"));
            s.add_instance(InstanceSpec::new(id.as_str(), "http://x", "m", *l))
                .unwrap();
            s.set_ready(&id, true);
        }
        s
    }

    #[test]
    fn placements_never_exceed_max_inflight_and_the_rest_wait_in_order() {
        let mut s = pool(&[2, 1]);
        for i in 0..5 {
            s.submit(meta(i, Time::ZERO), i, Time::ZERO).unwrap();
        }
        let mut out = Vec::new();
        s.dispatch(Time::ZERO, &mut out);
        assert_eq!(out.iter().map(|p| p.payload).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(s.queue_len(), 2);
        assert!(s.instances().all(|i| i.inflight <= i.spec.max_inflight));
        s.complete(RequestId(1), Outcome::Failure, Time::ZERO);
        out.clear();
        s.dispatch(Time::ZERO, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].payload, 3, "FIFO: the oldest waiting goes next");
    }

    #[test]
    fn unready_and_draining_instances_get_nothing() {
        let mut s = pool(&[4, 4]);
        s.set_ready(&InstanceId::new("i0"), false);
        s.set_draining(&InstanceId::new("i1"), true);
        s.submit(meta(1, Time::ZERO), 1, Time::ZERO).unwrap();
        let mut out = Vec::new();
        s.dispatch(Time::ZERO, &mut out);
        assert!(out.is_empty());
        s.set_ready(&InstanceId::new("i0"), true);
        s.dispatch(Time::ZERO, &mut out);
        assert_eq!(out[0].instance.as_str(), "i0");
    }

    #[test]
    fn queue_timeout_and_deadlines_expire_waiting_requests() {
        let mut s = Scheduler::new(SchedulerConfig {
            max_queue: 2,
            queue_timeout: Some(Duration::from_secs(5)),
        });
        s.add_instance(InstanceSpec::new("a", "u", "m", 1)).unwrap(); // never ready
        let mut m = meta(1, Time::ZERO);
        m.deadline = Some(Duration::from_secs(1));
        s.submit(m, 1, Time::ZERO).unwrap();
        s.submit(meta(2, Time::ZERO), 2, Time::ZERO).unwrap();
        let full = s.submit(meta(3, Time::ZERO), 3, Time::ZERO).unwrap_err();
        assert_eq!(full.reason, RejectReason::QueueFull { max_queue: 2 });
        assert_eq!(s.next_expiry(), Some(Time::from_millis(1000)));
        let mut out = Vec::new();
        s.expire(Time::from_millis(1000), &mut out);
        assert_eq!(out.len(), 1);
        assert!(matches!(out[0].reason, RejectReason::DeadlineMissed { .. }));
        s.expire(Time::from_millis(5000), &mut out);
        assert!(matches!(out[1].reason, RejectReason::QueueTimeout { .. }));
        assert_eq!(s.queue_len(), 0);
    }

    #[test]
    fn cancel_removes_queued_requests_and_frees_placed_ones() {
        let mut s = pool(&[1]);
        s.submit(meta(1, Time::ZERO), 1, Time::ZERO).unwrap();
        s.submit(meta(2, Time::ZERO), 2, Time::ZERO).unwrap();
        let mut out = Vec::new();
        s.dispatch(Time::ZERO, &mut out);
        assert_eq!(s.cancel(RequestId(2), Time::ZERO), Some(2));
        assert_eq!(s.cancel(RequestId(1), Time::ZERO), None);
        assert_eq!(s.inflight_len(), 0);
        assert_eq!(s.instances().next().unwrap().inflight, 0);
    }

    #[test]
    fn requeued_request_goes_first_and_avoids_the_failed_instance() {
        let mut s = pool(&[1, 1]);
        s.submit(meta(1, Time::ZERO), 1, Time::ZERO).unwrap();
        let mut out = Vec::new();
        s.dispatch(Time::ZERO, &mut out);
        let first = out.pop().unwrap();
        s.complete(first.meta.id, Outcome::Failure, Time::ZERO);
        s.submit(meta(2, Time::ZERO), 2, Time::ZERO).unwrap();
        s.requeue(first.meta, first.payload, &first.instance, Time::ZERO);
        s.dispatch(Time::ZERO, &mut out);
        assert_eq!(out[0].payload, 1);
        assert_ne!(out[0].instance, first.instance);
    }

    #[test]
    fn an_empty_pool_rejects_at_once_and_removed_instances_forget_their_requests() {
        let mut s: Scheduler<u64> = Scheduler::new(SchedulerConfig::default());
        let r = s.submit(meta(1, Time::ZERO), 1, Time::ZERO).unwrap_err();
        assert_eq!(r.reason, RejectReason::NoInstances);
        let mut s = pool(&[1]);
        s.submit(meta(1, Time::ZERO), 1, Time::ZERO).unwrap();
        let mut out = Vec::new();
        s.dispatch(Time::ZERO, &mut out);
        assert!(s.remove_instance(&InstanceId::new("i0")));
        assert!(!s.complete(RequestId(1), Outcome::Failure, Time::ZERO));
        assert!(s.add_instance(InstanceSpec::new("i0", "u", "m", 1)).is_ok());
        assert_eq!(
            s.add_instance(InstanceSpec::new("i0", "u", "m", 1)),
            Err(DuplicateInstance(InstanceId::new("i0")))
        );
    }
}
