//! `adaptive`: watches the traffic and the pool and hands the queue to `fifo`, `priority`,
//! `slo_aware` or `cost_optimized`. The recommended default.
//!
//! The scheduler keeps every request in every order, so a switch is O(1) and loses
//! nothing; the policy only decides which order serves and which placement filter runs.
//!
//! # Rule and hysteresis
//!
//! Four flags, each with an enter and an exit threshold (defaults in brackets):
//!
//! * `deadlines`: the recent share of requests with an SLO (TTFT target or deadline) is
//!   >= `deadline_enter` [0.05]; cleared at <= `deadline_exit` [0.01];
//! * `slo_trouble`: recent SLO attainment < `slo_enter` [0.95]; cleared at >= `slo_exit`
//!   [0.98];
//! * `classes`: the recent share of requests not of the `normal` class is >=
//!   `class_enter` [0.05]; cleared at <= `class_exit` [0.01];
//! * `light`: attempts in flight are at most `light_enter` [0.3] of the pool's in-flight
//!   limits and nothing is queued; cleared at >= `light_exit` [0.5] or when requests queue.
//!
//! Target, first match: `slo_aware` when SLOs are being missed; `cost_optimized` when
//! `light`, instances differ in price and `prefer_cost` is set; `slo_aware` when requests
//! carry SLOs; `priority` when classes are mixed; else `fifo`. With SLOs, `slo_aware`
//! serves at every load: it keeps the classes strict (urgency orders within a class), its
//! placement filter keeps the least-TTFT balancer's choice whenever the SLO holds there,
//! and its admission turns away what cannot make its deadline before the backlog forms.
//! That backlog may be in the engines, not here: with the engines' own batch limits the
//! gateway rarely queues, so waiting for a gateway queue before protecting deadlines
//! (tried: switching on a queue left after placement) lost 8 points of SLO attainment on
//! 100 instances at twice their capacity (`bench/matrix.toml`). The active policy
//! changes to the target only when at least `min_dwell` [2 s] has passed since the last
//! switch (an eighth of it during the first [`WARM_UP`] submissions, while the traffic
//! shares settle). Every switch is counted and the last 64 are
//! kept with the reason and the signals that made it.

use super::{
    Admission, CostOptimized, CostOptimizedConfig, Eligibility, OrderKind, SchedulingPolicy,
    Signals, SloAware, SloAwareConfig,
};
use crate::pool::{CandidateSet, PoolView};
use crate::request::RequestMeta;
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Duration;

/// The config tag.
pub const NAME: &str = "adaptive";

/// How many switch events are kept.
pub const SWITCH_HISTORY: usize = 64;

/// Submissions before the full minimum dwell applies (the traffic shares are still
/// settling; until then an eighth of it).
pub const WARM_UP: u64 = 64;

/// Settings of `adaptive` (see the module docs for the rule).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptiveConfig {
    /// Share of SLO requests at which `deadlines` is set.
    pub deadline_enter: f64,
    /// Share of SLO requests at which `deadlines` is cleared.
    pub deadline_exit: f64,
    /// SLO attainment below which `slo_trouble` is set.
    pub slo_enter: f64,
    /// SLO attainment at which `slo_trouble` is cleared.
    pub slo_exit: f64,
    /// Share of non-`normal` requests at which `classes` is set.
    pub class_enter: f64,
    /// Share of non-`normal` requests at which `classes` is cleared.
    pub class_exit: f64,
    /// Utilisation (in flight over limits) at which `light` is set.
    pub light_enter: f64,
    /// Utilisation at which `light` is cleared.
    pub light_exit: f64,
    /// Whether a light pool with differently priced instances switches to
    /// `cost_optimized` (trading some latency for cost).
    pub prefer_cost: bool,
    /// Least time between two switches.
    #[serde(with = "humantime_serde")]
    pub min_dwell: Duration,
    /// Settings of the SLO policy it may hand over to.
    pub slo: SloAwareConfig,
    /// Settings of the cost policy it may hand over to.
    pub cost: CostOptimizedConfig,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            deadline_enter: 0.05,
            deadline_exit: 0.01,
            slo_enter: 0.95,
            slo_exit: 0.98,
            class_enter: 0.05,
            class_exit: 0.01,
            light_enter: 0.3,
            light_exit: 0.5,
            prefer_cost: false,
            min_dwell: Duration::from_secs(2),
            slo: SloAwareConfig::default(),
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

/// Why the adaptive policy chose its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchReason {
    /// Requests carry SLOs.
    Deadlines,
    /// SLOs are being missed.
    SloTrouble,
    /// The pool is light and instances differ in price.
    LightAndPriced,
    /// Requests of several priority classes arrive, without SLOs.
    MixedClasses,
    /// None of the above: plain arrival order.
    Plain,
}

impl SwitchReason {
    /// A short phrase for logs and the admin API.
    pub const fn as_str(self) -> &'static str {
        match self {
            SwitchReason::Deadlines => "requests carry SLOs",
            SwitchReason::SloTrouble => "SLOs are being missed",
            SwitchReason::LightAndPriced => "light load and instances differ in price",
            SwitchReason::MixedClasses => "several classes, no SLOs",
            SwitchReason::Plain => "one class, no SLOs",
        }
    }
}

/// One switch of the active policy, with why.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PolicySwitch {
    /// When.
    #[serde(skip)]
    pub at: Time,
    /// Seconds since the scheduler's origin (for JSON).
    pub at_secs: f64,
    /// The policy before.
    pub from: &'static str,
    /// The policy after.
    pub to: &'static str,
    /// Why.
    pub reason: SwitchReason,
    /// The signals at the time.
    #[serde(flatten)]
    pub signals: SignalsView,
}

/// The signals a switch was made on, as shown in the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct SignalsView {
    /// Requests queued.
    pub queued: usize,
    /// Predicted queue wait of a new normal request, seconds.
    pub wait_secs: f64,
    /// Recent SLO attainment.
    pub slo_attainment: Option<f64>,
    /// Recent share of requests with an SLO.
    pub deadline_share: f64,
    /// Recent share of requests not of the normal class.
    pub class_share: f64,
    /// In flight over the pool's in-flight limits.
    pub utilisation: f64,
}

/// The adaptive policy.
#[derive(Debug)]
pub struct Adaptive {
    config: AdaptiveConfig,
    slo: SloAware,
    cost: CostOptimized,
    mode: Mode,
    reason: SwitchReason,
    deadlines: bool,
    slo_trouble: bool,
    classes: bool,
    light: bool,
    last_switch: Option<Time>,
    switches: u64,
    history: VecDeque<PolicySwitch>,
    last_signals: SignalsView,
}

fn hysteresis(on: bool, x: f64, enter: f64, exit: f64, rising: bool) -> bool {
    match (on, rising) {
        (true, true) => x > exit,
        (false, true) => x >= enter,
        (true, false) => x < exit,
        (false, false) => x <= enter,
    }
}

impl Adaptive {
    /// A policy starting as `fifo`.
    pub fn new(config: AdaptiveConfig) -> Self {
        Adaptive {
            slo: SloAware::new(config.slo.clone()),
            cost: CostOptimized::new(config.cost.clone()),
            config,
            mode: Mode::Fifo,
            reason: SwitchReason::Plain,
            deadlines: false,
            slo_trouble: false,
            classes: false,
            light: false,
            last_switch: None,
            switches: 0,
            history: VecDeque::with_capacity(SWITCH_HISTORY),
            last_signals: SignalsView::default(),
        }
    }

    /// The policy in charge now.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Why the policy in charge was chosen.
    pub fn reason(&self) -> SwitchReason {
        self.reason
    }

    /// The signals last observed.
    pub fn last_signals(&self) -> SignalsView {
        self.last_signals
    }

    /// Switches so far.
    pub fn switches(&self) -> u64 {
        self.switches
    }

    /// The last switches, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &PolicySwitch> {
        self.history.iter()
    }

    fn target(&mut self, s: &Signals, utilisation: f64) -> (Mode, SwitchReason) {
        let c = &self.config;
        self.deadlines = hysteresis(
            self.deadlines,
            s.deadline_share,
            c.deadline_enter,
            c.deadline_exit,
            true,
        );
        self.classes = hysteresis(
            self.classes,
            s.class_share,
            c.class_enter,
            c.class_exit,
            true,
        );
        self.slo_trouble = match s.slo_attainment {
            None => false,
            Some(a) => hysteresis(self.slo_trouble, a, c.slo_enter, c.slo_exit, false),
        };
        self.light = !s.saturated()
            && hysteresis(self.light, utilisation, c.light_enter, c.light_exit, false);
        if self.slo_trouble {
            (Mode::SloAware, SwitchReason::SloTrouble)
        } else if self.light && s.price_spread && c.prefer_cost {
            (Mode::CostOptimized, SwitchReason::LightAndPriced)
        } else if self.deadlines {
            (Mode::SloAware, SwitchReason::Deadlines)
        } else if self.classes {
            (Mode::Priority, SwitchReason::MixedClasses)
        } else {
            (Mode::Fifo, SwitchReason::Plain)
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
    /// The default sheds by wait in every mode: under overload of plain traffic (its
    /// `fifo` mode) a client gets a 429 at once instead of a 503 after the queue timeout.
    fn budgets(&self) -> bool {
        true
    }
    fn order(&self) -> OrderKind {
        match self.mode {
            Mode::Fifo => OrderKind::Arrival,
            Mode::Priority => OrderKind::ClassAging,
            Mode::SloAware | Mode::CostOptimized => OrderKind::Urgency,
        }
    }
    fn admit(&mut self, req: &RequestMeta, view: &PoolView<'_>, wait_secs: f64) -> Admission {
        match self.mode {
            Mode::Fifo | Mode::Priority => Admission::Admit,
            Mode::SloAware => self.slo.admit(req, view, wait_secs),
            Mode::CostOptimized => self.cost.admit(req, view, wait_secs),
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
            Mode::SloAware => self.slo.candidates(req, view, out),
            Mode::CostOptimized => self.cost.candidates(req, view, out),
        }
    }
    fn observe(&mut self, signals: &Signals, now: Time) {
        let utilisation = signals.utilisation();
        self.last_signals = SignalsView {
            queued: signals.queued,
            wait_secs: signals.wait_secs,
            slo_attainment: signals.slo_attainment,
            deadline_share: signals.deadline_share,
            class_share: signals.class_share,
            utilisation,
        };
        let (target, reason) = self.target(signals, utilisation);
        if target == self.mode {
            self.reason = reason;
            return;
        }
        // the traffic shares are EWMAs: until they have seen some requests, follow them
        // closely, but not at every poll
        let dwell = if signals.submitted < WARM_UP {
            self.config.min_dwell / 8
        } else {
            self.config.min_dwell
        };
        let dwelt = self
            .last_switch
            .is_none_or(|t| now.saturating_since(t) >= dwell);
        if !dwelt {
            return;
        }
        if self.history.len() == SWITCH_HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(PolicySwitch {
            at: now,
            at_secs: now.as_secs_f64(),
            from: self.mode.as_str(),
            to: target.as_str(),
            reason,
            signals: self.last_signals,
        });
        self.mode = target;
        self.reason = reason;
        self.last_switch = Some(now);
        self.switches += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signals() -> Signals {
        Signals {
            submitted: 1000,
            queued: 0,
            routable: 4,
            with_room: 4,
            inflight: 10,
            capacity: 100,
            wait_secs: 0.0,
            slo_attainment: None,
            deadline_share: 0.0,
            class_share: 0.0,
            price_spread: false,
        }
    }

    fn s(secs: u64) -> Time {
        Time::from_secs_f64(secs as f64)
    }

    #[test]
    fn adaptive_turns_slo_aware_when_requests_carry_slos_and_back_with_hysteresis() {
        let mut a = Adaptive::new(AdaptiveConfig::default());
        let mut sig = signals();
        a.observe(&sig, s(0));
        assert_eq!(a.active(), "fifo");
        sig.deadline_share = 0.3;
        a.observe(&sig, s(1));
        assert_eq!(a.active(), "slo_aware", "the first switch at once");
        assert_eq!(a.reason(), SwitchReason::Deadlines);
        sig.deadline_share = 0.0;
        sig.class_share = 0.3;
        a.observe(&sig, s(2));
        assert_eq!(
            a.active(),
            "slo_aware",
            "min dwell: 2 s since the last switch"
        );
        a.observe(&sig, s(3));
        assert_eq!(a.active(), "priority", "classes without SLOs");
        sig.class_share = 0.0;
        sig.deadline_share = 0.3;
        a.observe(&sig, s(5));
        assert_eq!(a.active(), "slo_aware");
        sig.deadline_share = 0.02;
        a.observe(&sig, s(10));
        assert_eq!(a.active(), "slo_aware", "exit needs 0.01");
        sig.deadline_share = 0.0;
        sig.queued = 0;
        sig.with_room = 4;
        a.observe(&sig, s(11));
        assert_eq!(a.active(), "fifo");
        sig.deadline_share = 0.3;
        sig.queued = 3;
        a.observe(&sig, s(12));
        assert_eq!(a.active(), "fifo", "min dwell: 2 s since the last switch");
        a.observe(&sig, s(13));
        assert_eq!(a.active(), "slo_aware");
        let h: Vec<_> = a.history().map(|e| (e.from, e.to, e.at)).collect();
        assert_eq!(
            h,
            [
                ("fifo", "slo_aware", s(1)),
                ("slo_aware", "priority", s(3)),
                ("priority", "slo_aware", s(5)),
                ("slo_aware", "fifo", s(11)),
                ("fifo", "slo_aware", s(13))
            ]
        );
        assert_eq!(a.switches(), 5);
    }

    #[test]
    fn mixed_classes_get_priority_missed_slos_get_slo_aware_and_cost_needs_its_flag() {
        let mut a = Adaptive::new(AdaptiveConfig {
            min_dwell: Duration::ZERO,
            ..AdaptiveConfig::default()
        });
        let mut sig = signals();
        sig.class_share = 0.5;
        a.observe(&sig, Time::ZERO);
        assert_eq!(a.active(), "priority");
        sig.slo_attainment = Some(0.9);
        a.observe(&sig, Time::ZERO);
        assert_eq!(
            a.active(),
            "slo_aware",
            "missed SLOs, even with no queue here"
        );
        assert_eq!(a.reason(), SwitchReason::SloTrouble);
        sig.slo_attainment = Some(0.99);
        sig.price_spread = true;
        a.observe(&sig, Time::ZERO);
        assert_eq!(a.active(), "priority", "cost is not preferred by default");
        let mut c = Adaptive::new(AdaptiveConfig {
            prefer_cost: true,
            ..AdaptiveConfig::default()
        });
        c.observe(&sig, Time::ZERO);
        assert_eq!(c.active(), "cost_optimized");
        sig.queued = 5;
        c.observe(&sig, s(5));
        assert_eq!(c.active(), "priority", "a queue ends `light`");
    }
}
