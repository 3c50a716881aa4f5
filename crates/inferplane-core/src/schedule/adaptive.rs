//! `adaptive`: watches load, queue depth and SLO attainment and hands the queue to
//! `fifo`, `priority`, `slo_aware` or `cost_optimized`. The recommended default.
//!
//! Every request is kept in all three orders at once (the FIFO deque, the priority
//! deques and the deadline heap; a request placed through one is a stale key in the
//! others), so a switch is O(1) and loses nothing.
//!
//! # Rule and hysteresis
//!
//! Four flags, each with its own enter and exit threshold (defaults in brackets), where
//! `pressure = (queued + in flight) / capacity` of routable instances:
//!
//! * `overloaded`: set when pressure >= `overload_enter` [1.5], cleared when pressure <=
//!   `overload_exit` [1.0];
//! * `slo_trouble`: set when recent SLO attainment < `slo_enter` [0.95], cleared when it is
//!   >= `slo_exit` [0.98];
//! * `light`: set when pressure <= `light_enter` [0.5], cleared when >= `light_exit` [0.75];
//! * `deadlines`: set when the recent share of requests with an SLO >= `deadline_enter`
//!   [0.2], cleared when <= `deadline_exit` [0.05].
//!
//! Target: `priority` if overloaded (classes and shedding matter most), else `slo_aware`
//! if SLOs are being missed, else `cost_optimized` if load is light and instances differ
//! in price, else `slo_aware` if requests carry deadlines, else `fifo`. The active policy
//! changes to the target only when at least `min_dwell` [5 s] has passed since the last
//! switch (the first switch may happen at once). Shedding on a full queue always follows
//! the priority classes. Every switch is counted and the last 64 are kept.

use super::{
    Admission, CostOptimized, CostOptimizedConfig, Eligibility, Entry, Fifo, FifoConfig, Live,
    PriorityConfig, PriorityPolicy, QueueKey, SchedulingPolicy, Signals,
};
use crate::request::RequestMeta;
use crate::route::{CandidateSet, PoolView};
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Duration;

/// The config tag.
pub const NAME: &str = "adaptive";

/// How many switch events are kept.
pub const SWITCH_HISTORY: usize = 64;

/// Settings of `adaptive` (see the module docs for the rule).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptiveConfig {
    /// Pressure at which `overloaded` is set.
    pub overload_enter: f64,
    /// Pressure at which `overloaded` is cleared.
    pub overload_exit: f64,
    /// SLO attainment below which `slo_trouble` is set.
    pub slo_enter: f64,
    /// SLO attainment at which `slo_trouble` is cleared.
    pub slo_exit: f64,
    /// Pressure at which `light` is set.
    pub light_enter: f64,
    /// Pressure at which `light` is cleared.
    pub light_exit: f64,
    /// Share of SLO requests at which `deadlines` is set.
    pub deadline_enter: f64,
    /// Share of SLO requests at which `deadlines` is cleared.
    pub deadline_exit: f64,
    /// Least time between two switches.
    #[serde(with = "humantime_serde")]
    pub min_dwell: Duration,
    /// Settings of the priority policy it may hand over to.
    pub priority: PriorityConfig,
    /// Settings of the cost and SLO policies it may hand over to.
    pub cost: CostOptimizedConfig,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            overload_enter: 1.5,
            overload_exit: 1.0,
            slo_enter: 0.95,
            slo_exit: 0.98,
            light_enter: 0.5,
            light_exit: 0.75,
            deadline_enter: 0.2,
            deadline_exit: 0.05,
            min_dwell: Duration::from_secs(5),
            priority: PriorityConfig::default(),
            cost: CostOptimizedConfig::default(),
        }
    }
}

/// The policies `adaptive` hands over to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// `fifo`.
    Fifo,
    /// `priority`.
    Priority,
    /// `slo_aware`.
    SloAware,
    /// `cost_optimized`.
    CostOptimized,
}

impl Mode {
    /// The policy's config tag.
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Fifo => super::fifo::NAME,
            Mode::Priority => super::priority::NAME,
            Mode::SloAware => super::slo_aware::NAME,
            Mode::CostOptimized => super::cost_optimized::NAME,
        }
    }
}

/// One switch of the active policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicySwitch {
    /// When.
    pub at: Time,
    /// The policy before.
    pub from: &'static str,
    /// The policy after.
    pub to: &'static str,
    /// Pool pressure at the time.
    pub pressure: f64,
    /// Recent SLO attainment at the time.
    pub slo_attainment: Option<f64>,
}

/// The adaptive policy.
#[derive(Debug)]
pub struct Adaptive {
    config: AdaptiveConfig,
    fifo: Fifo,
    priority: PriorityPolicy,
    cost: CostOptimized,
    mode: Mode,
    head: Mode,
    overloaded: bool,
    slo_trouble: bool,
    light: bool,
    deadlines: bool,
    last_switch: Option<Time>,
    switches: u64,
    history: VecDeque<PolicySwitch>,
}

impl Adaptive {
    /// An empty queue, starting as `fifo`.
    pub fn new(config: AdaptiveConfig) -> Self {
        Adaptive {
            fifo: Fifo::new(FifoConfig {}),
            priority: PriorityPolicy::new(config.priority.clone()),
            cost: CostOptimized::new(config.cost.clone()),
            config,
            mode: Mode::Fifo,
            head: Mode::Fifo,
            overloaded: false,
            slo_trouble: false,
            light: false,
            deadlines: false,
            last_switch: None,
            switches: 0,
            history: VecDeque::with_capacity(SWITCH_HISTORY),
        }
    }

    /// The policy in charge now.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Switches so far.
    pub fn switches(&self) -> u64 {
        self.switches
    }

    /// The last switches, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &PolicySwitch> {
        self.history.iter()
    }

    fn target(&mut self, s: &Signals) -> Mode {
        let c = &self.config;
        let p = s.pressure();
        self.overloaded = if self.overloaded {
            p > c.overload_exit
        } else {
            p >= c.overload_enter
        };
        self.light = if self.light {
            p < c.light_exit
        } else {
            p <= c.light_enter
        };
        self.slo_trouble = match s.slo_attainment {
            None => false,
            Some(a) if self.slo_trouble => a < c.slo_exit,
            Some(a) => a < c.slo_enter,
        };
        self.deadlines = if self.deadlines {
            s.deadline_share > c.deadline_exit
        } else {
            s.deadline_share >= c.deadline_enter
        };
        if self.overloaded {
            Mode::Priority
        } else if self.slo_trouble {
            Mode::SloAware
        } else if self.light && s.price_spread {
            Mode::CostOptimized
        } else if self.deadlines {
            Mode::SloAware
        } else {
            Mode::Fifo
        }
    }
}

impl SchedulingPolicy for Adaptive {
    fn name(&self) -> &'static str {
        NAME
    }
    fn active(&self) -> &'static str {
        self.mode.as_str()
    }
    fn push(&mut self, entry: Entry<'_>) {
        self.fifo.push(entry);
        self.priority.push(entry);
        self.cost.push(entry);
    }
    fn peek(&mut self, live: Live<'_>) -> Option<QueueKey> {
        self.head = self.mode;
        match self.mode {
            Mode::Fifo => self.fifo.peek(live),
            Mode::Priority => self.priority.peek(live),
            Mode::SloAware | Mode::CostOptimized => self.cost.peek(live),
        }
    }
    fn pop_head(&mut self) {
        match self.head {
            Mode::Fifo => self.fifo.pop_head(),
            Mode::Priority => self.priority.pop_head(),
            Mode::SloAware | Mode::CostOptimized => self.cost.pop_head(),
        }
    }
    fn stored(&self) -> usize {
        self.fifo
            .stored()
            .max(self.priority.stored())
            .max(self.cost.stored())
    }
    fn compact(&mut self, live: Live<'_>) {
        self.fifo.compact(live);
        self.priority.compact(live);
        self.cost.compact(live);
    }
    fn clear(&mut self) {
        self.fifo.clear();
        self.priority.clear();
        self.cost.clear();
    }
    fn shed_victim(&mut self, incoming: &RequestMeta, live: Live<'_>) -> Option<QueueKey> {
        self.priority.shed_victim(incoming, live)
    }
    fn admit(&mut self, req: &RequestMeta, view: &PoolView<'_>) -> Admission {
        match self.mode {
            Mode::Fifo | Mode::Priority => Admission::Admit,
            Mode::SloAware => self.cost.edf_mut().admit(req, view),
            Mode::CostOptimized => self.cost.admit(req, view),
        }
    }
    fn candidates(
        &mut self,
        req: &RequestMeta,
        view: &PoolView<'_>,
        out: &mut CandidateSet,
    ) -> Eligibility {
        match self.mode {
            Mode::Fifo | Mode::Priority => Eligibility::All,
            Mode::SloAware => self.cost.edf_mut().candidates(req, view, out),
            Mode::CostOptimized => self.cost.candidates(req, view, out),
        }
    }
    fn observe(&mut self, signals: &Signals, now: Time) {
        let target = self.target(signals);
        if target == self.mode {
            return;
        }
        let dwelt = self
            .last_switch
            .is_none_or(|t| now.saturating_since(t) >= self.config.min_dwell);
        if !dwelt {
            return;
        }
        if self.history.len() == SWITCH_HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(PolicySwitch {
            at: now,
            from: self.mode.as_str(),
            to: target.as_str(),
            pressure: signals.pressure(),
            slo_attainment: signals.slo_attainment,
        });
        self.mode = target;
        self.last_switch = Some(now);
        self.switches += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signals(queued: usize, inflight: u64, attainment: Option<f64>) -> Signals {
        Signals {
            queued,
            inflight,
            capacity: 100,
            slo_attainment: attainment,
            deadline_share: 0.0,
            price_spread: false,
        }
    }

    #[test]
    fn adaptive_switches_to_priority_under_overload_and_back_with_hysteresis() {
        let mut a = Adaptive::new(AdaptiveConfig::default());
        let s = |secs: u64| Time::from_millis(secs * 1000);
        a.observe(&signals(0, 80, None), s(0));
        assert_eq!(a.active(), "fifo");
        a.observe(&signals(50, 100, None), s(1)); // pressure 1.5: enter
        assert_eq!(a.active(), "priority");
        a.observe(&signals(20, 100, None), s(10)); // 1.2: still overloaded (exit at 1.0)
        assert_eq!(a.active(), "priority");
        a.observe(&signals(0, 100, None), s(11)); // 1.0: cleared, but ...
        assert_eq!(a.active(), "fifo", "5 s have passed since the last switch");
        a.observe(&signals(60, 100, None), s(12)); // overloaded again, but dwell not over
        assert_eq!(a.active(), "fifo");
        a.observe(&signals(60, 100, None), s(16));
        assert_eq!(a.active(), "priority");
        assert_eq!(a.switches(), 3);
        let h: Vec<_> = a.history().map(|e| (e.from, e.to, e.at)).collect();
        assert_eq!(
            h,
            [
                ("fifo", "priority", s(1)),
                ("priority", "fifo", s(11)),
                ("fifo", "priority", s(16))
            ]
        );
    }

    #[test]
    fn adaptive_turns_slo_aware_when_attainment_drops_and_cost_optimized_when_light_and_priced() {
        let mut a = Adaptive::new(AdaptiveConfig {
            min_dwell: Duration::ZERO,
            ..AdaptiveConfig::default()
        });
        a.observe(&signals(0, 80, Some(0.94)), Time::ZERO);
        assert_eq!(a.active(), "slo_aware");
        a.observe(&signals(0, 80, Some(0.97)), Time::ZERO);
        assert_eq!(a.active(), "slo_aware", "exit needs 0.98");
        a.observe(&signals(0, 80, Some(0.98)), Time::ZERO);
        assert_eq!(a.active(), "fifo");
        let mut light = signals(0, 10, None);
        light.price_spread = true;
        a.observe(&light, Time::ZERO);
        assert_eq!(a.active(), "cost_optimized");
        light.inflight = 70; // 0.7 < light_exit 0.75: stays light
        a.observe(&light, Time::ZERO);
        assert_eq!(a.active(), "cost_optimized");
        light.inflight = 75;
        light.deadline_share = 0.5;
        a.observe(&light, Time::ZERO);
        assert_eq!(a.active(), "slo_aware");
    }

    #[test]
    fn adaptive_keeps_every_request_across_a_switch() {
        let mut a = Adaptive::new(AdaptiveConfig::default());
        let mut metas = Vec::new();
        for (i, p) in [
            crate::request::Priority::Low,
            crate::request::Priority::Critical,
        ]
        .into_iter()
        .enumerate()
        {
            let mut m =
                RequestMeta::new(crate::request::RequestId(i as u64), "m", 1, 1, Time::ZERO);
            m.priority = p;
            metas.push(m);
        }
        for (i, m) in metas.iter().enumerate() {
            a.push(Entry {
                key: QueueKey {
                    slot: i as u32,
                    seq: i as u64 + 1,
                },
                meta: m,
                enqueued: Time::ZERO,
            });
        }
        let mut seqs = vec![1, 2];
        assert_eq!(a.peek(Live(&seqs)).map(|k| k.seq), Some(1), "fifo");
        a.observe(&signals(200, 100, None), Time::ZERO);
        assert_eq!(a.peek(Live(&seqs)).map(|k| k.seq), Some(2), "priority");
        a.pop_head();
        seqs[1] = 0;
        assert_eq!(a.peek(Live(&seqs)).map(|k| k.seq), Some(1));
        a.pop_head();
        seqs[0] = 0;
        assert_eq!(a.peek(Live(&seqs)), None);
    }
}
