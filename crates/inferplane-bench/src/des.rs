//! Discrete-event simulation: the core [`Scheduler`] and simulated [`Engine`]s in virtual
//! time, driven exactly the way the gateway's dispatcher drives them, and told only what
//! the gateway would know.
//!
//! One `Scheduler` per model pool, one `Engine` per instance (its profile from the
//! planner's cost model or a preset). Events sit in a binary heap ordered by virtual
//! [`Time`] (ties by insertion order, so a run is deterministic). After every event the
//! pool is polled ([`Scheduler::poll`]) and its placements go to their engines, its
//! rejections are recorded with their real reason, and a wake-up is scheduled for
//! `wake_at`:
//!
//! - **arrival**: `submit`;
//! - **step end**: the step's token events take effect at its end: a first token is
//!   reported with `first_token`, a finish with `complete`;
//! - **reading**: every [`Limits::reading_interval`](crate::cluster::Limits::reading_interval) (the gateway's scrape interval), each
//!   engine's running and waiting requests and KV usage are reported with `update_load`,
//!   never more often: the scheduler sees the engines as the gateway would;
//! - **wake**: a poll due (an expiry, a budget running out);
//! - **cache**: with `prefix` routing in precise mode, one engine step's KV-cache changes
//!   reach the strategy (oracle mode delivers them at the step's end; see
//!   [`crate::des_cache`]).
//!
//! What the scheduler is told about a request is what the gateway would read from it: the
//! client's `max_tokens` (or the gateway's default), never the true output length, which
//! only the engine knows (it stops there, as a model emits its end of sequence). Instances
//! that name their GPU start with the planner's forecast, as in the gateway.
//!
//! Prompts are the same text the live client sends ([`crate::prompt`]), hashed into blocks
//! the same way the simulator's HTTP face does, so prefix-cache hits agree too.
//! Every request ends exactly once: served, failed (engine refusal) or rejected.

use crate::cluster::{Cluster, scheduler_config};
use crate::des_cache::CacheFeed;
use crate::error::BenchError;
use crate::prompt::prompt_text;
use crate::record::{Failure, InstanceUsage, Record, RunRecords};
use crate::workload::WorkItem;
use inferplane_core::{
    AttemptId, Effects, EngineInfo, EngineLoad, InstanceId, InstanceIx, Outcome, RequestId,
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
    Wake(u32),
    Reading,
    Cache(u32),
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
    wake_at: Option<Time>,
}

struct Sim<'a> {
    items: &'a [WorkItem],
    /// The tenants named in `items`, sorted: a tenant's id is its index.
    tenants: Vec<String>,
    t0: f64,
    pools: Vec<Pool>,
    insts: Vec<Inst>,
    heap: BinaryHeap<Reverse<(Time, u64, Ev)>>,
    seq: u64,
    ttft: Vec<Option<Time>>,
    attempts: Vec<Option<AttemptId>>,
    records: Vec<Option<Record>>,
    fx: Effects<u32>,
    remaining: usize,
    reading: Duration,
    end: Time,
    cache: CacheFeed,
}

/// Runs `items` through `cluster` in virtual time and returns one record per item.
pub fn simulate(
    cluster: &Cluster,
    items: &[WorkItem],
    label: &str,
) -> Result<RunRecords, BenchError> {
    let sim = run(cluster, items)?;
    Ok(sim.into_records(cluster, label))
}

/// The whole run, its state kept for [`Sim::into_records`] (and for tests to inspect).
fn run<'a>(cluster: &Cluster, items: &'a [WorkItem]) -> Result<Sim<'a>, BenchError> {
    if items.len() > u32::MAX as usize {
        return Err(BenchError::Workload("more than 2^32 requests".into()));
    }
    let mut pools: Vec<Pool> = Vec::new();
    let mut insts = Vec::with_capacity(cluster.instances.len());
    let cache = CacheFeed::new(
        cluster.policy.prefix_mode,
        cluster.limits.kv_event_delay,
        cluster.instances.len(),
    );
    for (g, si) in cluster.instances.iter().enumerate() {
        let p = match pools.iter().position(|p| p.model == si.spec.model) {
            Some(p) => p,
            None => {
                pools.push(Pool {
                    model: si.spec.model.clone(),
                    sched: Scheduler::new(scheduler_config(&cluster.policy, &cluster.limits)?),
                    by_ix: HashMap::new(),
                    wake_at: None,
                });
                pools.len() - 1
            }
        };
        let pool = &mut pools[p];
        let ix = pool
            .sched
            .add_instance(si.spec.clone())
            .map_err(|e| BenchError::Cluster(e.to_string()))?;
        // What the gateway would know: the planner's forecast for a named GPU (vLLM does
        // not report its batch limit), the context and KV capacity the engine reports.
        let forecast = inferplane_planner::forecast(&si.spec);
        if let Some(f) = forecast {
            pool.sched.set_rates(&si.spec.id, f.rates);
        }
        pool.sched.set_engine_info(
            &si.spec.id,
            EngineInfo {
                max_batch: forecast.and_then(|f| f.info.max_batch),
                max_model_len: Some(si.profile.max_model_len),
                kv_capacity_tokens: Some(si.profile.kv_capacity_tokens()),
            },
        );
        pool.sched.set_ready(&si.spec.id, true);
        pool.by_ix.insert(ix, g);
        let mut engine = Engine::new(si.profile.clone(), None);
        cache.prepare(&mut engine);
        insts.push(Inst {
            engine,
            pool: p,
            id: si.spec.id.clone(),
            pending: Vec::new(),
            seqs: HashMap::new(),
            stepping: false,
            busy: Duration::ZERO,
        });
    }
    let mut tenants: Vec<String> = items.iter().filter_map(|i| i.tenant.clone()).collect();
    tenants.sort_unstable();
    tenants.dedup();
    let mut sim = Sim {
        items,
        tenants,
        t0: items.first().map_or(0.0, |i| i.t),
        pools,
        insts,
        heap: BinaryHeap::with_capacity(items.len().min(1 << 20) + 1024),
        seq: 0,
        ttft: vec![None; items.len()],
        attempts: vec![None; items.len()],
        records: vec![None; items.len()],
        fx: Effects::default(),
        remaining: items.len(),
        reading: cluster
            .limits
            .reading_interval
            .max(Duration::from_millis(1)),
        end: Time::ZERO,
        cache,
    };
    // Arrivals are pushed lazily (one ahead) to keep the heap small.
    if !items.is_empty() {
        sim.push(sim.arrival_of(0), Ev::Arrival(0));
        sim.push(Time::ZERO + sim.reading, Ev::Reading);
    }
    while let Some(Reverse((now, _, ev))) = sim.heap.pop() {
        match ev {
            Ev::Arrival(i) => {
                if (i as usize + 1) < items.len() {
                    sim.push(sim.arrival_of(i + 1), Ev::Arrival(i + 1));
                }
                sim.arrive(i, now);
            }
            Ev::StepEnd(g) => sim.step_end(g as usize, now),
            Ev::Wake(p) => {
                if sim.pools[p as usize].wake_at == Some(now) {
                    sim.pools[p as usize].wake_at = None;
                    sim.poll(p as usize, now);
                }
            }
            Ev::Reading => sim.read_loads(now),
            Ev::Cache(g) => {
                let inst = &sim.insts[g as usize];
                let sched = &mut sim.pools[inst.pool].sched;
                sim.cache.deliver(g as usize, sched, &inst.id, now);
            }
        }
    }
    Ok(sim)
}

impl Sim<'_> {
    /// The run's records and per-instance usage.
    fn into_records(self, cluster: &Cluster, label: &str) -> RunRecords {
        let items = self.items;
        let sim = self;
        let duration = sim.end.as_secs_f64();
        let records = sim
            .records
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                // Unreachable when the scheduler and engines conserve requests; kept explicit.
                r.unwrap_or(Record {
                    item: i as u32,
                    arrival: items[i].t - sim.t0,
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
        RunRecords {
            label: label.to_string(),
            mode: "simulated".into(),
            duration,
            records,
            instances,
            itl_us: None,
        }
    }

    fn push(&mut self, at: Time, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, ev)));
    }

    fn arrival_of(&self, i: u32) -> Time {
        Time::from_secs_f64(self.items[i as usize].t - self.t0)
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
        self.remaining = self.remaining.saturating_sub(1);
        self.end = self.end.max(now);
    }

    /// What the gateway would build from the request: the `max_tokens` the client sends,
    /// never the true output length.
    fn meta(&self, i: u32, model: &str, now: Time) -> RequestMeta {
        let item = &self.items[i as usize];
        let cap = item.cap();
        let mut meta =
            RequestMeta::new(RequestId(u64::from(i)), model, item.prompt_tokens, cap, now);
        meta.max_tokens_requested = Some(cap);
        meta.priority = item.priority;
        meta.deadline = item.e2e_ms.map(Duration::from_millis);
        meta.ttft_target = item.ttft_ms.map(Duration::from_millis);
        meta.cost_budget = item.cost_budget;
        meta.tenant = item
            .tenant
            .as_ref()
            .and_then(|t| self.tenants.binary_search(t).ok())
            .map(|ix| inferplane_core::TenantId(ix as u32));
        meta.session = item.session.map(|s| format!("session-{s}"));
        meta.prefix_hash = item
            .prefix_group
            .map(|g| u64::from(g) | 1 << 63)
            .or(item.session);
        // the very text the simulated engine is sent (see `poll`), so the router's blocks
        // are the engine's
        meta.prefix_blocks =
            inferplane_sim::tokens::block_hashes(&prompt_text(item, u64::from(i))).into();
        meta
    }

    fn arrive(&mut self, i: u32, now: Time) {
        let item = &self.items[i as usize];
        let pool = match &item.model {
            Some(m) => self.pools.iter().position(|p| &p.model == m),
            None => Some(0),
        };
        let Some(p) = pool else {
            let failure = Failure::Rejected(inferplane_core::RejectKind::NoInstances);
            self.finish(i, now, Some(failure), |_| {});
            return;
        };
        let meta = self.meta(i, &self.pools[p].model, now);
        self.pools[p].sched.submit(meta, i, now);
        self.poll(p, now);
    }

    /// Polls pool `p` and carries out what it decided.
    fn poll(&mut self, p: usize, now: Time) {
        let mut fx = std::mem::take(&mut self.fx);
        self.pools[p].sched.poll(now, &mut fx);
        for r in fx.rejections.drain(..) {
            self.finish(
                r.payload,
                now,
                Some(Failure::from_reject(&r.reason)),
                |_| {},
            );
        }
        for pl in fx.placements.drain(..) {
            let Some(&g) = self.pools[p].by_ix.get(&pl.ix) else {
                continue;
            };
            let i = pl.payload;
            self.attempts[i as usize] = Some(pl.attempt);
            let item = &self.items[i as usize];
            let output = item.output_tokens.max(1);
            let input = SeqInput {
                prompt_tokens: item.prompt_tokens.max(1),
                // the blocks of `prompt_text(item, i)`, hashed once in `meta`
                block_hashes: pl.meta.prefix_blocks.to_vec(),
                // the engine gets the client's cap and stops at the true length
                max_tokens: item.cap(),
                content_hash: u64::from(i),
                block_tokens: Vec::new(),
            };
            match self.insts[g].engine.add_with_min_tokens(input, output) {
                Ok(seq) => {
                    self.insts[g].seqs.insert(seq, i);
                    if !self.insts[g].stepping {
                        self.start_step(g, now);
                    }
                }
                Err(_) => {
                    self.pools[p]
                        .sched
                        .complete(pl.attempt, Outcome::ClientError, now);
                    self.finish(i, now, Some(Failure::Engine), |r| {
                        r.instance = Some(g as u32)
                    });
                }
            }
        }
        if let Some(at) = fx.wake_at {
            let at = at.max(now);
            let pool = &mut self.pools[p];
            if pool.wake_at.is_none_or(|w| at < w || w < now) {
                pool.wake_at = Some(at);
                self.push(at, Ev::Wake(p as u32));
            }
        }
        self.fx = fx;
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
                        if let Some(a) = self.attempts[i as usize] {
                            self.pools[p].sched.first_token(a, now);
                        }
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
                    let arrival = self.arrival_of(i);
                    let first_token = self.ttft[i as usize].map(|t| t.saturating_since(arrival));
                    if let Some(a) = self.attempts[i as usize] {
                        let outcome = Outcome::Success {
                            prompt_tokens: self.items[i as usize].prompt_tokens,
                            completion_tokens,
                            cached_tokens: Some(cached_tokens),
                            first_token,
                            latency: now.saturating_since(arrival),
                        };
                        self.pools[p].sched.complete(a, outcome, now);
                    }
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
        let inst = &mut self.insts[g];
        let sched = &mut self.pools[p].sched;
        if let Some(at) = self
            .cache
            .after_step(g, &mut inst.engine, sched, &inst.id, now)
        {
            self.push(at, Ev::Cache(g as u32));
        }
        self.start_step(g, now);
        if freed {
            self.poll(p, now);
        }
    }

    /// Reports every engine's load, as the gateway's scrape would, then polls every pool.
    fn read_loads(&mut self, now: Time) {
        for g in 0..self.insts.len() {
            let inst = &self.insts[g];
            let load = EngineLoad {
                running: Some(inst.engine.num_running() as f64),
                waiting: Some(inst.engine.num_waiting() as f64),
                kv_usage: Some(inst.engine.kv_usage()),
            };
            let id = inst.id.clone();
            let p = inst.pool;
            self.pools[p].sched.update_load(&id, load, now);
        }
        for p in 0..self.pools.len() {
            self.poll(p, now);
        }
        if self.remaining > 0 {
            self.push(now + self.reading, Ev::Reading);
        }
    }
}

#[cfg(test)]
#[path = "des_tests.rs"]
mod tests;
