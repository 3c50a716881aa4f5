//! Discrete-event simulation: the core [`Scheduler`] and simulated [`Engine`]s in virtual
//! time, driven the way the gateway's dispatcher drives them.
//!
//! One `Scheduler` per model pool, one `Engine` per instance (its profile from the
//! planner's cost model or a preset). Events sit in a binary heap ordered by virtual
//! [`Time`] (ties by insertion order, so a run is deterministic):
//!
//! - **arrival**: `submit`, then `dispatch`; each placement is `add`ed to its instance's
//!   engine, and an idle engine starts a step;
//! - **step end**: the step's token events take effect at its end: the first token sets
//!   TTFT, a finish `complete`s the request in the scheduler (freeing its slot), the
//!   engine's load is reported with `update_load`, the engine plans its next step, and the
//!   pool dispatches again;
//! - **expiry**: at `next_expiry`, `expire` rejects requests that waited too long.
//!
//! Prompts are the same text the live client sends ([`crate::prompt`]), hashed into blocks
//! the same way the simulator's HTTP face does, so prefix-cache hits agree too.
//! Every request ends exactly once: served, failed (engine refusal) or rejected.

use crate::cluster::{Cluster, scheduler_config};
use crate::error::BenchError;
use crate::prompt::prompt_text;
use crate::record::{Failure, InstanceUsage, Record, RunRecords};
use crate::workload::WorkItem;
use inferplane_core::{
    EngineLoad, InstanceId, InstanceIx, Outcome, Placement, RejectReason, Rejected, RequestId,
    RequestMeta, Scheduler, Time,
};
use inferplane_sim::{Engine, Event, SeqId, SeqInput};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Arrival(u32),
    StepEnd(u32),
    Expiry(u32),
}

struct Inst {
    engine: Engine,
    pool: usize,
    id: InstanceId,
    pending: Vec<Event>,
    seqs: HashMap<SeqId, u32>,
    stepping: bool,
    busy: Duration,
}

struct Pool {
    model: String,
    sched: Scheduler<u32>,
    /// Scheduler index -> global instance index.
    by_ix: HashMap<InstanceIx, usize>,
    expiry_at: Option<Time>,
    timeout: Option<Duration>,
}

struct Sim<'a> {
    items: &'a [WorkItem],
    pools: Vec<Pool>,
    insts: Vec<Inst>,
    heap: BinaryHeap<Reverse<(Time, u64, Ev)>>,
    seq: u64,
    ttft: Vec<Option<Time>>,
    records: Vec<Option<Record>>,
    placements: Vec<Placement<u32>>,
    rejected: Vec<Rejected<u32>>,
    end: Time,
}

/// Runs `items` through `cluster` in virtual time and returns one record per item.
pub fn simulate(
    cluster: &Cluster,
    items: &[WorkItem],
    label: &str,
) -> Result<RunRecords, BenchError> {
    if items.len() > u32::MAX as usize {
        return Err(BenchError::Workload("more than 2^32 requests".into()));
    }
    let mut pools: Vec<Pool> = Vec::new();
    let mut insts = Vec::with_capacity(cluster.instances.len());
    for (g, si) in cluster.instances.iter().enumerate() {
        let p = match pools.iter().position(|p| p.model == si.spec.model) {
            Some(p) => p,
            None => {
                pools.push(Pool {
                    model: si.spec.model.clone(),
                    sched: Scheduler::new(scheduler_config(&cluster.policy, &cluster.limits)?),
                    by_ix: HashMap::new(),
                    expiry_at: None,
                    timeout: cluster.limits.queue_timeout,
                });
                pools.len() - 1
            }
        };
        let pool = &mut pools[p];
        let ix = pool
            .sched
            .add_instance(si.spec.clone())
            .map_err(|e| BenchError::Cluster(e.to_string()))?;
        pool.sched.set_ready(&si.spec.id, true);
        pool.by_ix.insert(ix, g);
        insts.push(Inst {
            engine: Engine::new(si.profile.clone(), None),
            pool: p,
            id: si.spec.id.clone(),
            pending: Vec::new(),
            seqs: HashMap::new(),
            stepping: false,
            busy: Duration::ZERO,
        });
    }
    let mut sim = Sim {
        items,
        pools,
        insts,
        heap: BinaryHeap::with_capacity(items.len().min(1 << 20) + 1024),
        seq: 0,
        ttft: vec![None; items.len()],
        records: vec![None; items.len()],
        placements: Vec::new(),
        rejected: Vec::new(),
        end: Time::ZERO,
    };
    let t0 = items.first().map_or(0.0, |i| i.t);
    // Arrivals are pushed lazily (one ahead) to keep the heap small.
    if !items.is_empty() {
        sim.push(Time::from_secs_f64(items[0].t - t0), Ev::Arrival(0));
    }
    while let Some(Reverse((now, _, ev))) = sim.heap.pop() {
        match ev {
            Ev::Arrival(i) => {
                if let Some(next) = items.get(i as usize + 1) {
                    sim.push(Time::from_secs_f64(next.t - t0), Ev::Arrival(i + 1));
                }
                sim.arrive(i, now);
            }
            Ev::StepEnd(g) => sim.step_end(g as usize, now),
            Ev::Expiry(p) => sim.expire(p as usize, now),
        }
    }
    let duration = sim.end.as_secs_f64();
    let records = sim
        .records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            // Unreachable when the scheduler and engines conserve requests; kept explicit.
            r.unwrap_or(Record {
                item: i as u32,
                arrival: items[i].t - t0,
                failure: Some(Failure::Timeout),
                instance: None,
                ttft: None,
                e2e: 0.0,
                output_tokens: 0,
                cached_tokens: None,
            })
        })
        .collect();
    let instances = cluster
        .instances
        .iter()
        .zip(&sim.insts)
        .map(|(si, inst)| {
            let st = inst.engine.stats();
            InstanceUsage {
                id: si.spec.id.to_string(),
                gpus: si.spec.gpu_count(),
                price_per_gpu_hour: match si.spec.price {
                    Some(inferplane_core::Price::PerGpuHour(p)) => Some(p),
                    _ => None,
                },
                busy_secs: Some(inst.busy.as_secs_f64()),
                prefix_queries: Some(st.prefix_cache_queries),
                prefix_hits: Some(st.prefix_cache_hits),
            }
        })
        .collect();
    Ok(RunRecords {
        label: label.to_string(),
        mode: "simulated".into(),
        duration,
        records,
        instances,
        itl_us: None,
    })
}

impl Sim<'_> {
    fn push(&mut self, at: Time, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, ev)));
    }

    fn arrival_of(&self, i: u32) -> Time {
        let t0 = self.items.first().map_or(0.0, |x| x.t);
        Time::from_secs_f64(self.items[i as usize].t - t0)
    }

    fn finish(
        &mut self,
        i: u32,
        now: Time,
        failure: Option<Failure>,
        fill: impl FnOnce(&mut Record),
    ) {
        let arrival = self.arrival_of(i);
        let mut r = Record {
            item: i,
            arrival: arrival.as_secs_f64(),
            failure,
            instance: None,
            ttft: self.ttft[i as usize].map(|t| t.saturating_since(arrival).as_secs_f64()),
            e2e: now.saturating_since(arrival).as_secs_f64(),
            output_tokens: 0,
            cached_tokens: None,
        };
        fill(&mut r);
        debug_assert!(
            self.records[i as usize].is_none(),
            "request {i} ended twice"
        );
        self.records[i as usize] = Some(r);
        self.end = self.end.max(now);
    }

    fn arrive(&mut self, i: u32, now: Time) {
        let item = &self.items[i as usize];
        let pool = match &item.model {
            Some(m) => self.pools.iter().position(|p| &p.model == m),
            None => Some(0),
        };
        let Some(p) = pool else {
            self.finish(i, now, Some(Failure::NoInstances), |_| {});
            return;
        };
        let mut meta = RequestMeta::new(
            RequestId(u64::from(i)),
            self.pools[p].model.clone(),
            item.prompt_tokens,
            item.output_tokens,
            now,
        );
        meta.priority = item.priority;
        meta.deadline = item.e2e_ms.map(Duration::from_millis);
        meta.ttft_target = item.ttft_ms.map(Duration::from_millis);
        meta.cost_budget = item.cost_budget;
        meta.session = item.session.map(|s| format!("session-{s}"));
        meta.prefix_hash = item
            .prefix_group
            .map(|g| u64::from(g) | 1 << 63)
            .or(item.session);
        let expiry = meta
            .deadline_at()
            .into_iter()
            .chain(self.pools[p].timeout.map(|t| now + t))
            .min();
        if let Err(rej) = self.pools[p].sched.submit(meta, i, now) {
            self.finish(i, now, Some(reject_failure(&rej.reason)), |_| {});
            return;
        }
        if let Some(at) = expiry
            && self.pools[p].expiry_at.is_none_or(|e| at < e)
        {
            self.pools[p].expiry_at = Some(at);
            self.push(at, Ev::Expiry(p as u32));
        }
        self.dispatch(p, now);
    }

    fn dispatch(&mut self, p: usize, now: Time) {
        let mut placements = std::mem::take(&mut self.placements);
        self.pools[p].sched.dispatch(now, &mut placements);
        for pl in placements.drain(..) {
            let Some(&g) = self.pools[p].by_ix.get(&pl.ix) else {
                continue;
            };
            let i = pl.payload;
            let item = &self.items[i as usize];
            let text = prompt_text(item, u64::from(i));
            let input = SeqInput {
                prompt_tokens: item.prompt_tokens.max(1),
                block_hashes: inferplane_sim::tokens::block_hashes(&text),
                max_tokens: item.output_tokens.max(1),
                content_hash: u64::from(i),
            };
            match self.insts[g].engine.add(input) {
                Ok(seq) => {
                    self.insts[g].seqs.insert(seq, i);
                    if !self.insts[g].stepping {
                        self.start_step(g, now);
                    }
                }
                Err(_) => {
                    self.pools[p]
                        .sched
                        .complete(pl.meta.id, Outcome::Failure, now);
                    self.finish(i, now, Some(Failure::Engine), |r| {
                        r.instance = Some(g as u32)
                    });
                }
            }
        }
        self.placements = placements;
    }

    fn start_step(&mut self, g: usize, now: Time) {
        let inst = &mut self.insts[g];
        inst.pending.clear();
        match inst.engine.step(now, &mut inst.pending) {
            Some(info) => {
                inst.stepping = true;
                inst.busy += info.end.saturating_since(now);
                self.push(info.end, Ev::StepEnd(g as u32));
            }
            None => inst.stepping = false,
        }
    }

    fn step_end(&mut self, g: usize, now: Time) {
        let pending = std::mem::take(&mut self.insts[g].pending);
        let p = self.insts[g].pool;
        let mut freed = false;
        for ev in &pending {
            match *ev {
                Event::Token { id, index: 0 } => {
                    if let Some(&i) = self.insts[g].seqs.get(&id) {
                        self.ttft[i as usize] = Some(now);
                    }
                }
                Event::Token { .. } => {}
                Event::Finished {
                    id,
                    cached_tokens,
                    completion_tokens,
                    ..
                } => {
                    let Some(i) = self.insts[g].seqs.remove(&id) else {
                        continue;
                    };
                    let prompt_tokens = self.items[i as usize].prompt_tokens;
                    let arrival = self.arrival_of(i);
                    let ttft = self.ttft[i as usize].map(|t| t.saturating_since(arrival));
                    self.pools[p].sched.complete(
                        RequestId(u64::from(i)),
                        Outcome::Success {
                            prompt_tokens,
                            completion_tokens,
                            ttft,
                        },
                        now,
                    );
                    self.finish(i, now, None, |r| {
                        r.instance = Some(g as u32);
                        r.output_tokens = completion_tokens;
                        r.cached_tokens = Some(cached_tokens);
                    });
                    freed = true;
                }
            }
        }
        self.insts[g].pending = pending;
        self.start_step(g, now);
        let inst = &self.insts[g];
        let load = EngineLoad {
            running: Some(inst.engine.num_running() as f64),
            waiting: Some(inst.engine.num_waiting() as f64),
            kv_usage: Some(inst.engine.kv_usage()),
        };
        let id = inst.id.clone();
        self.pools[p].sched.update_load(&id, load);
        if freed {
            self.dispatch(p, now);
        }
    }

    fn expire(&mut self, p: usize, now: Time) {
        if self.pools[p].expiry_at != Some(now) {
            return; // superseded by an earlier one
        }
        let mut rejected = std::mem::take(&mut self.rejected);
        self.pools[p].sched.expire(now, &mut rejected);
        for r in rejected.drain(..) {
            self.finish(r.payload, now, Some(reject_failure(&r.reason)), |_| {});
        }
        self.rejected = rejected;
        self.pools[p].expiry_at = self.pools[p].sched.next_expiry();
        if let Some(at) = self.pools[p].expiry_at {
            self.push(at.max(now), Ev::Expiry(p as u32));
        }
    }
}

fn reject_failure(r: &RejectReason) -> Failure {
    #[allow(unreachable_patterns)] // reasons the scheduler may gain count as queue-full
    match r {
        RejectReason::QueueFull { .. } => Failure::QueueFull,
        RejectReason::NoInstances => Failure::NoInstances,
        RejectReason::QueueTimeout { .. } => Failure::QueueTimeout,
        RejectReason::DeadlineMissed { .. } => Failure::DeadlineMissed,
        _ => Failure::QueueFull,
    }
}

#[cfg(test)]
#[path = "des_tests.rs"]
mod tests;
