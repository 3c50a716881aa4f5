//! Decision-time benchmarks of every scheduling policy, routing strategy and balancing
//! algorithm at 1,000 instances and 100,000 queued requests.
//!
//! The pool is saturated (every instance at `max_inflight`, 100k waiting). One measured
//! decision is the steady-state cycle the gateway runs: `complete` one in-flight attempt
//! (freeing one place), `submit` one new request and `poll`, which places exactly one
//! request from the 100k queue on the one instance with room. That is the hardest case
//! for the strategies that scan: a single eligible instance among 1,000. A quarter of the
//! requests are critical with end-to-end deadlines, so deadline-aware batch limits,
//! protected lanes and the reserve (`inferplane_core::reserve`) are in play.
//!
//! The `tenants` group runs the same cycle with two tenants in every class, one sending
//! ten times the other's requests, so the fair share's lanes, the headroom's kept slots
//! and their ranking of free instances are in play. It costs more (measured 37-45 us a
//! cycle against 6-7 us; 43-54 us while the ranking sorted every instance with room, not
//! only the head it keeps): the light tenant's recent peak is hundreds in flight, so the
//! heavy one keeps hundreds of slots free, and each of its decisions ranks the instances
//! with room (O(those instances) to select, O(kept log kept) to sort).
//!
//! Criterion reports the mean; before each criterion run a plain loop of 20,000 cycles
//! prints p50 / p99 / max of the single decisions.

#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    clippy::unwrap_used
)]

use criterion::{Criterion, criterion_group, criterion_main};
use inferplane_core::route::{AffinityConfig, LoadBalancedConfig, LocalityConfig, PrefixConfig};
use inferplane_core::schedule::{
    AdaptiveConfig, CostOptimizedConfig, FifoConfig, PriorityConfig, SloAwareConfig,
};
use inferplane_core::{
    AttemptId, BalanceConfig, Effects, InstanceSpec, Layout, Outcome, OverloadConfig, PolicyConfig,
    Price, Priority, RequestId, RequestMeta, RoutingConfig, Scheduler, SchedulerConfig, TenantId,
    Time,
};
use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

const INSTANCES: usize = 1_000;
const MAX_INFLIGHT: u32 = 8;
const QUEUED: usize = 100_000;

struct Bench {
    s: Scheduler<u64>,
    inflight: VecDeque<AttemptId>,
    next: u64,
    now: Time,
    fx: Effects<u64>,
    /// Whether requests carry one of two tenants (1 in 11 the light one).
    tenants: bool,
}

fn request(id: u64, now: Time, tenants: bool) -> RequestMeta {
    let mut m = RequestMeta::new(RequestId(id), "m", 256 + (id % 512) as u32, 128, now);
    m.priority = Priority::ALL[(id % 4) as usize];
    m.deadline = Some(Duration::from_secs(3600 + id % 600));
    m.session = Some(format!("user-{}", id % 10_000));
    m.prefix_hash = Some(id % 1_000);
    if tenants {
        m.tenant = Some(TenantId(u32::from(id.is_multiple_of(11))));
    }
    m
}

impl Bench {
    fn new(policy: PolicyConfig, routing: RoutingConfig, tenants: bool) -> Self {
        let mut s = Scheduler::new(SchedulerConfig {
            max_queue: 2 * QUEUED,
            queue_timeout: None,
            policy,
            routing,
            seed: 1,
            // 100k queued at once would be shed by class (their predicted waits are long)
            overload: OverloadConfig {
                shed: false,
                ..OverloadConfig::default()
            },
            ..SchedulerConfig::default()
        });
        for i in 0..INSTANCES {
            let mut spec = InstanceSpec::new(format!("i{i}"), "http://x", "m", MAX_INFLIGHT);
            spec.layout = Layout {
                tp: 1 << (i % 3),
                ..Layout::SINGLE
            };
            spec.price = Some(Price::PerGpuHour(1.0 + (i % 7) as f64));
            let id = spec.id.clone();
            s.add_instance(spec).unwrap();
            s.set_ready(&id, true);
        }
        let mut b = Bench {
            s,
            inflight: VecDeque::new(),
            next: 0,
            now: Time::ZERO,
            fx: Effects::default(),
            tenants,
        };
        let total = INSTANCES * MAX_INFLIGHT as usize + QUEUED;
        for _ in 0..total {
            let id = b.next;
            b.next += 1;
            b.s.submit(request(id, b.now, tenants), id, b.now);
        }
        b.s.poll(b.now, &mut b.fx);
        b.inflight
            .extend(b.fx.placements.drain(..).map(|p| p.attempt));
        assert!(b.fx.rejections.is_empty(), "nothing is rejected");
        assert_eq!(b.s.queue_len(), QUEUED, "the queue holds 100k");
        assert_eq!(b.s.with_room(), 0, "the pool is saturated");
        b
    }

    /// One decision: a completion frees a slot, a request arrives, dispatch places one.
    fn cycle(&mut self) {
        self.now += Duration::from_micros(10);
        let done = self.inflight.pop_front().unwrap();
        let outcome = Outcome::Success {
            prompt_tokens: 256,
            completion_tokens: 128,
            cached_tokens: None,
            first_token: Some(Duration::from_millis(200)),
            latency: Duration::from_millis(2_000),
        };
        self.s.complete(done, outcome, self.now);
        let id = self.next;
        self.next += 1;
        self.s
            .submit(request(id, self.now, self.tenants), id, self.now);
        self.s.poll(self.now, &mut self.fx);
        for p in self.fx.placements.drain(..) {
            self.inflight.push_back(p.attempt);
        }
        self.fx.rejections.clear();
    }
}

fn percentiles(name: &str, b: &mut Bench) {
    let mut samples = Vec::with_capacity(20_000);
    for _ in 0..20_000 {
        let t = Instant::now();
        b.cycle();
        samples.push(t.elapsed());
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "{name:<48} p50 {:>8.2?}  p99 {:>8.2?}  max {:>8.2?}  (queue {}, active {})",
        at(0.5),
        at(0.99),
        samples[samples.len() - 1],
        b.s.queue_len(),
        b.s.active_policy()
    );
}

fn run(c: &mut Criterion, group: &str, name: &str, policy: PolicyConfig, routing: RoutingConfig) {
    let mut b = Bench::new(policy, routing, group == "tenants");
    percentiles(&format!("{group}/{name}"), &mut b);
    c.benchmark_group(group)
        .bench_function(name, |bench| bench.iter(|| black_box(&mut b).cycle()));
}

fn lb(algorithm: BalanceConfig) -> RoutingConfig {
    RoutingConfig::LoadBalanced(LoadBalancedConfig { algorithm })
}

fn policies(c: &mut Criterion) {
    let routing = RoutingConfig::default();
    let cases = [
        ("fifo", PolicyConfig::Fifo(FifoConfig::default())),
        (
            "priority",
            PolicyConfig::Priority(PriorityConfig::default()),
        ),
        (
            "slo_aware",
            PolicyConfig::SloAware(SloAwareConfig::default()),
        ),
        (
            "cost_optimized",
            PolicyConfig::CostOptimized(CostOptimizedConfig::default()),
        ),
        (
            "adaptive",
            PolicyConfig::Adaptive(AdaptiveConfig::default()),
        ),
    ];
    for (name, policy) in cases {
        run(c, "policy", name, policy, routing.clone());
    }
}

fn tenants(c: &mut Criterion) {
    let routing = RoutingConfig::default();
    run(
        c,
        "tenants",
        "fifo",
        PolicyConfig::Fifo(FifoConfig::default()),
        routing.clone(),
    );
    run(c, "tenants", "adaptive", PolicyConfig::default(), routing);
}

fn strategies(c: &mut Criterion) {
    let fifo = || PolicyConfig::Fifo(FifoConfig::default());
    let cases = [
        ("load_balanced", RoutingConfig::default()),
        ("round_robin", RoutingConfig::RoundRobin(Default::default())),
        ("random", RoutingConfig::Random(Default::default())),
        (
            "affinity",
            RoutingConfig::Affinity(AffinityConfig::default()),
        ),
        (
            "locality",
            RoutingConfig::Locality(LocalityConfig::default()),
        ),
        ("prefix", RoutingConfig::Prefix(PrefixConfig::default())),
    ];
    for (name, routing) in cases {
        run(c, "routing", name, fifo(), routing);
    }
    let algorithms = [
        (
            "weighted_round_robin",
            BalanceConfig::WeightedRoundRobin(Default::default()),
        ),
        (
            "least_connections",
            BalanceConfig::LeastConnections(Default::default()),
        ),
        (
            "least_response_time",
            BalanceConfig::LeastResponseTime(Default::default()),
        ),
        (
            "power_of_two",
            BalanceConfig::PowerOfTwo(Default::default()),
        ),
        ("least_ttft", BalanceConfig::LeastTtft(Default::default())),
    ];
    for (name, algorithm) in algorithms {
        run(c, "balancing", name, fifo(), lb(algorithm));
    }
}

criterion_group!(benches, policies, tenants, strategies);
criterion_main!(benches);
