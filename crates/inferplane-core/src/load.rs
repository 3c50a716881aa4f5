//! Load estimators: how busy an instance is, from the gateway's own counts and the
//! engine's last reading, with no clock of its own.
//!
//! # When an instance has room (admission by engine saturation)
//!
//! The gateway holds a request only when the engines are saturated; below that it sends
//! at once, so at low load it adds no queueing delay. An instance has room when it is
//! routable (ready, not draining) and:
//!
//! 1. its attempts in flight are below its **limit**: the configured `max_inflight`, else
//!    the engine's own batch limit (`EngineInfo::max_batch`: llama.cpp's slots, SGLang's
//!    `max_running_requests`, the planner's `max_num_seqs`), the smaller of the two when
//!    both are known, else [`SaturationConfig::default_limit`];
//! 2. the engine is not saturated: its last reading showed requests waiting inside it
//!    **and** it was full (KV usage at or above [`SaturationConfig::kv_full`], or running at
//!    its batch limit, or no KV figure at all, as with llama.cpp whose waiting requests
//!    mean every slot is busy), and no more of the gateway's requests have finished there
//!    since than were waiting plus placed since (each finish lets one waiting request in). Waiting requests in an engine with free KV
//!    are a prefill queue the engine is working through (requests that arrived mid-step,
//!    a chunked-prefill budget), not saturation.
//!
//! A missing reading is unknown, never idle, and never saturated: the limit still applies.
//!
//! 3. protected requests (class [`SaturationConfig::protect`] and above, `critical` by
//!    default) with an end-to-end deadline running there can still make it: every
//!    sequence an engine runs slows every other's tokens, so while such requests are in
//!    flight the instance takes no more than the batch at which each could still finish
//!    in time ([`deadline_limit`]: its remaining time over its remaining tokens, planned
//!    for a long answer of its class, against the instance's time per token by batch,
//!    `predict::DecodeModel`). Under overload this keeps critical work on time instead of
//!    letting every request slow down together; the work it holds back waits in the
//!    gateway, where the lowest class is shed first. It costs throughput, which is why
//!    only the protected classes do it. Two exceptions: protected requests themselves are
//!    not held back by it (they may fill the batch up to the limit: one more sequence
//!    slows the others' tokens by a fraction, while holding it back costs the newcomer its
//!    time to first token, so [`LoadSignals::protected_room`] is the room they see, up to
//!    as many protected deadlines as the limit allows), and a deadline that could not be
//!    met even by the request running alone holds nothing. On a lane for protected traffic
//!    the bound also holds between protected requests (see `reserve`).
//!
//! # Prefill backlog (predicted time to first token)
//!
//! Engines prefill new requests first come, first served (vLLM's and SGLang's schedulers
//! admit waiting requests in order into each step's token budget). The scheduler counts,
//! per instance, the prompt tokens it placed there whose first token has not come yet
//! ([`LoadSignals::prefill_pending`], exact for streamed answers: their first token is
//! reported; a whole answer counts until it ends). A request's predicted time to first
//! token is that backlog and its own prompt at the instance's prefill rate. The rate is
//! measured the same way: the tokens pending when a request was placed plus its own,
//! over the time its first token took.
//!
//! # Latency
//!
//! [`PeakEwma`] (as in linkerd and finagle) tracks placement-to-completion latency for
//! `least_response_time`.

use crate::pool::{EngineLoad, InstanceState};
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How often the gateway reads engine load by default, and how often the discrete-event
/// simulation reports it (the same number, so the simulation knows no more than the
/// gateway would).
pub const DEFAULT_READING_INTERVAL: Duration = Duration::from_millis(500);

/// Settings of admission by engine saturation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SaturationConfig {
    /// In-flight limit of an instance whose `max_inflight` is not configured and whose
    /// engine did not say its batch limit.
    pub default_limit: u32,
    /// KV-cache usage at which an engine with waiting requests counts as full.
    pub kv_full: f64,
    /// Hold an instance's batch to what the end-to-end deadlines of protected requests in
    /// flight there allow (see [`deadline_limit`]).
    pub deadlines: bool,
    /// The lowest class whose deadlines hold batches (see `deadlines`).
    pub protect: crate::request::Priority,
}

impl Default for SaturationConfig {
    fn default() -> Self {
        SaturationConfig {
            default_limit: 256,
            kv_full: 0.9,
            deadlines: true,
            protect: crate::request::Priority::Critical,
        }
    }
}

/// Per-instance signals derived from the gateway's own counts and the engine's last
/// reading. Updated by the scheduler; read by policies and strategies.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadSignals {
    /// The in-flight limit in force (see the module docs).
    pub limit: u32,
    /// Whether the instance takes one more request of any class now.
    pub room: bool,
    /// Whether it takes one more protected request now (at or above
    /// [`SaturationConfig::protect`]): as `room`, but past the deadline limit.
    pub protected_room: bool,
    /// When the last engine reading was taken (`None`: never, or the last was unknown).
    pub reading_at: Option<Time>,
    /// Attempts placed here since the last reading.
    pub placed_since: u32,
    /// Attempts finished here since the last reading.
    pub finished_since: u32,
    /// Prompt tokens placed here whose first token has not come (see the module docs).
    pub prefill_pending: u64,
    /// The batch the deadlines in flight allow (see [`deadline_limit`]) and, on a lane, the
    /// reserve (see `reserve`); `None`: no bound.
    pub deadline_limit: Option<u32>,
    /// Until when the instance is a lane for protected traffic: a protected request with an
    /// end-to-end deadline was placed here within the last `reserve::RESERVE_WINDOW`.
    pub lane_until: Option<Time>,
    /// Time integral of attempts in flight (batch-seconds), to measure the mean batch a
    /// request decoded in.
    pub batch_secs: f64,
    /// When `batch_secs` was last advanced.
    pub batch_at: Time,
}

impl LoadSignals {
    /// Engine-waiting requests not yet drained, by the last reading and the gateway's
    /// counts since: `waiting + placed since - finished since`, at least 0; 0 unknown.
    pub fn engine_backlog(&self, load: &EngineLoad) -> f64 {
        match load.waiting {
            Some(w) if self.reading_at.is_some() => {
                (w + f64::from(self.placed_since) - f64::from(self.finished_since)).max(0.0)
            }
            _ => 0.0,
        }
    }

    /// Requests the engine still holds waiting, by the last reading less the gateway's
    /// requests finished since (each lets one in), at least 0; 0 unknown. A busyness
    /// figure: unlike [`LoadSignals::engine_backlog`] it does not count the gateway's own
    /// placements since the reading, which `inflight` already counts.
    pub fn engine_waiting(&self, load: &EngineLoad) -> f64 {
        match load.waiting {
            Some(w) if self.reading_at.is_some() => (w - f64::from(self.finished_since)).max(0.0),
            _ => 0.0,
        }
    }

    /// Advances the batch integral to `now` with `inflight` running since the last time.
    pub fn advance_batch(&mut self, now: Time, inflight: u32) {
        if now > self.batch_at {
            self.batch_secs +=
                f64::from(inflight) * now.saturating_since(self.batch_at).as_secs_f64();
            self.batch_at = now;
        }
    }

    /// Seconds of prefill ahead of a request placed now, at `prefill_tokens_per_sec`.
    pub fn prefill_backlog_secs(&self, prefill_tokens_per_sec: f64) -> f64 {
        self.prefill_pending as f64 / prefill_tokens_per_sec.max(1e-9)
    }
}

/// The in-flight limit of `inst` (see the module docs).
pub fn limit(inst: &InstanceState, config: &SaturationConfig) -> u32 {
    let limit = match (inst.spec.max_inflight, inst.engine.max_batch) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) => a,
        (None, Some(b)) => b,
        (None, None) => config.default_limit,
    };
    inst.probe_limit.map_or(limit, |p| limit.min(p)).max(1)
}

/// Whether the engine behind `inst` is saturated by its last reading (see the module docs).
pub fn engine_saturated(inst: &InstanceState, config: &SaturationConfig) -> bool {
    let s = &inst.signals;
    let Some(waiting) = inst
        .load
        .waiting
        .filter(|w| *w > 0.0 && s.reading_at.is_some())
    else {
        return false;
    };
    // each of the gateway's requests finished since lets one waiting request in; room
    // opens once more have finished than were waiting plus placed since
    if f64::from(s.finished_since) > waiting + f64::from(s.placed_since) {
        return false;
    }
    let at_batch = match (inst.load.running, inst.engine.max_batch) {
        (Some(r), Some(b)) => r >= f64::from(b),
        _ => false,
    };
    match inst.load.kv_usage {
        Some(kv) => kv >= config.kv_full || at_batch,
        None => true,
    }
}

/// An end-to-end deadline in flight on an instance (see [`deadline_limit`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeadlineInFlight {
    /// The attempt.
    pub attempt: crate::outcome::AttemptId,
    /// When it must be done.
    pub deadline: Time,
    /// The output it is planned for (a long answer of its class).
    pub tokens: u32,
    /// When its first token came, if it did.
    pub first: Option<Time>,
}

/// The largest batch at which every deadline in flight on `inst` can still be met at
/// `now`: for each, its remaining time over its remaining tokens (its planned output less
/// what it has generated since its first token at the present time per token) is the time
/// per token it needs; the instance's decode model says the batch for the tightest.
/// Deadlines already missed, or out of reach even at a batch of one, do not count.
/// `None`: no deadline in flight, or no model.
pub fn deadline_limit(inst: &InstanceState, now: Time) -> Option<u32> {
    let decode = &inst.rates.decode;
    let tpot_now = decode.tpot(f64::from(inst.inflight.max(1)));
    let alone = decode.tpot(1.0);
    let mut need = f64::INFINITY;
    for d in &inst.deadlines {
        if d.deadline <= now {
            continue;
        }
        let left = d.deadline.saturating_since(now).as_secs_f64();
        let generated = d.first.map_or(0.0, |f| {
            now.saturating_since(f).as_secs_f64() / tpot_now.max(1e-9)
        });
        let remaining = (f64::from(d.tokens) - generated).max(1.0);
        let per_token = left / remaining;
        if per_token >= alone {
            need = need.min(per_token);
        }
    }
    if need.is_infinite() {
        return None;
    }
    decode.max_batch_for(need).map(|b| b.max(1))
}

/// The batch at which a protected request arriving now, needing `secs_per_token` (see
/// `reserve`), could finish in time on `inst`; `None`: no bound (no model, or out of
/// reach even at a batch of one).
pub fn reserve_limit(inst: &InstanceState, secs_per_token: f64) -> Option<u32> {
    let decode = &inst.rates.decode;
    if secs_per_token < decode.tpot(1.0) {
        return None;
    }
    decode.max_batch_for(secs_per_token).map(|b| b.max(1))
}

/// Recomputes `inst`'s limits and room (for any request, and for protected ones) at
/// `now`, with `reserve` the time per token recent protected requests needed (see
/// `reserve`); returns whether either room changed.
pub fn refresh(
    inst: &mut InstanceState,
    config: &SaturationConfig,
    reserve: Option<f64>,
    now: Time,
) -> bool {
    let limit = limit(inst, config);
    let deadline = if config.deadlines {
        let held = deadline_limit(inst, now);
        let lane = inst.signals.lane_until.is_some_and(|t| t > now);
        let planned = reserve
            .filter(|_| lane)
            .and_then(|need| reserve_limit(inst, need));
        match (held, planned) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    } else {
        None
    };
    let open = inst.routable()
        && inst.fleet.allows(inst.inflight, limit)
        && !engine_saturated(inst, config);
    let protected_room =
        open && deadline.is_none_or(|d| (inst.deadlines.len() as u64) < u64::from(d));
    let room = open && deadline.is_none_or(|d| inst.inflight < d);
    inst.signals.limit = limit;
    inst.signals.deadline_limit = deadline;
    let before = inst.rooms();
    inst.signals.room = room;
    inst.signals.protected_room = protected_room;
    before != inst.rooms()
}

/// Decay time constant of the peak EWMA, in seconds.
pub const PEAK_EWMA_TAU_SECS: f64 = 10.0;

/// A latency estimate that jumps up to peaks and decays down slowly: a sample above the
/// current value replaces it at once; a lower one is blended in with weight
/// `1 - exp(-dt / tau)`, where `dt` is the time since the previous sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PeakEwma {
    /// The current estimate in seconds (meaningless while `samples` is 0).
    pub secs: f64,
    /// When the last sample arrived.
    pub at: Time,
    /// Samples so far.
    pub samples: u64,
}

impl PeakEwma {
    /// Folds in one latency sample taken at `now`.
    pub fn observe(&mut self, sample_secs: f64, now: Time) {
        if !sample_secs.is_finite() || sample_secs < 0.0 {
            return;
        }
        if self.samples == 0 || sample_secs > self.secs {
            self.secs = sample_secs;
        } else {
            let dt = now.saturating_since(self.at).as_secs_f64();
            let keep = (-dt / PEAK_EWMA_TAU_SECS).exp();
            self.secs = self.secs * keep + sample_secs * (1.0 - keep);
        }
        self.at = self.at.max(now);
        self.samples += 1;
    }

    /// The estimate, or `prior` when there is no sample.
    pub fn get_or(&self, prior: f64) -> f64 {
        if self.samples == 0 { prior } else { self.secs }
    }
}

/// A rate of events per second, smoothed exponentially over the time it is observed
/// (`rate = rate * exp(-dt / tau) + events / tau`), which is unbiased for a steady
/// Poisson stream. Time outside observation does not count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateMeter {
    rate: f64,
    tau_secs: f64,
    observed_secs: f64,
}

impl RateMeter {
    /// A meter starting at `prior` events per second, smoothing over `tau`.
    pub fn new(prior: f64, tau: Duration) -> Self {
        RateMeter {
            rate: prior.max(0.0),
            tau_secs: tau.as_secs_f64().max(1e-3),
            observed_secs: 0.0,
        }
    }

    /// `events` happened over `dt` of observed time.
    pub fn observe(&mut self, dt: Duration, events: u32) {
        let dt = dt.as_secs_f64();
        self.rate = self.rate * (-dt / self.tau_secs).exp() + f64::from(events) / self.tau_secs;
        self.observed_secs += dt;
    }

    /// The smoothed rate.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Seconds observed so far.
    pub fn observed_secs(&self) -> f64 {
        self.observed_secs
    }

    /// Replaces the rate while little has been observed (the prior is the better guess).
    pub fn set_prior(&mut self, prior: f64) {
        if self.observed_secs < self.tau_secs {
            let w = self.observed_secs / self.tau_secs;
            self.rate = w * self.rate + (1.0 - w) * prior.max(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::InstanceSpec;
    use crate::pool::InstanceIx;

    fn inst(max_inflight: Option<u32>, max_batch: Option<u32>) -> InstanceState {
        let mut spec = InstanceSpec::new("a", "u", "m", 1);
        spec.max_inflight = max_inflight;
        let mut s = InstanceState::new(spec, InstanceIx::new(0, 0));
        s.engine.max_batch = max_batch;
        s.ready = true;
        s
    }

    #[test]
    fn the_limit_is_the_configured_cap_or_the_engines_batch_whichever_is_smaller() {
        let c = SaturationConfig::default();
        assert_eq!(limit(&inst(Some(64), None), &c), 64);
        assert_eq!(limit(&inst(None, Some(2)), &c), 2);
        assert_eq!(limit(&inst(Some(64), Some(2)), &c), 2);
        assert_eq!(limit(&inst(Some(1), Some(1024)), &c), 1);
        assert_eq!(limit(&inst(None, None), &c), c.default_limit);
    }

    #[test]
    fn waiting_requests_saturate_a_full_engine_until_enough_finish() {
        let c = SaturationConfig::default();
        let mut s = inst(None, Some(100));
        assert!(!refresh(&mut s, &c, None, Time::ZERO) || s.has_room());
        assert!(s.has_room(), "no reading: the limit alone decides");
        s.load = EngineLoad {
            running: Some(40.0),
            waiting: Some(2.0),
            kv_usage: Some(0.95),
        };
        s.signals.reading_at = Some(Time::ZERO);
        refresh(&mut s, &c, None, Time::ZERO);
        assert!(!s.has_room(), "waiting in a full KV cache");
        s.signals.finished_since = 2;
        refresh(&mut s, &c, None, Time::ZERO);
        assert!(
            !s.has_room(),
            "two finished: the two waiting moved in, still full"
        );
        s.signals.finished_since = 3;
        refresh(&mut s, &c, None, Time::ZERO);
        assert!(s.has_room(), "a third finish frees a place");
        s.signals.placed_since = 1;
        refresh(&mut s, &c, None, Time::ZERO);
        assert!(!s.has_room(), "and the gateway took it");
    }

    #[test]
    fn waiting_in_an_engine_with_free_kv_is_a_prefill_queue_not_saturation() {
        let c = SaturationConfig::default();
        let mut s = inst(None, Some(100));
        s.load = EngineLoad {
            running: Some(40.0),
            waiting: Some(8.0),
            kv_usage: Some(0.3),
        };
        s.signals.reading_at = Some(Time::ZERO);
        refresh(&mut s, &c, None, Time::ZERO);
        assert!(s.has_room());
        s.load.running = Some(100.0);
        refresh(&mut s, &c, None, Time::ZERO);
        assert!(!s.has_room(), "at its batch limit");
        // llama.cpp: no KV figure, a deferred request means every slot is busy
        s.load = EngineLoad {
            running: Some(2.0),
            waiting: Some(1.0),
            kv_usage: None,
        };
        refresh(&mut s, &c, None, Time::ZERO);
        assert!(!s.has_room());
        s.ready = false;
        s.load = EngineLoad::default();
        refresh(&mut s, &c, None, Time::ZERO);
        assert!(!s.has_room(), "unready never has room");
    }

    #[test]
    fn the_prefill_backlog_is_the_pending_prompt_at_the_prefill_rate() {
        let s = LoadSignals {
            prefill_pending: 3000,
            ..LoadSignals::default()
        };
        assert!((s.prefill_backlog_secs(1000.0) - 3.0).abs() < 1e-12);
        assert_eq!(LoadSignals::default().prefill_backlog_secs(1000.0), 0.0);
    }

    #[test]
    fn a_rate_meter_converges_to_a_steady_rate_and_blends_out_its_prior() {
        let mut m = RateMeter::new(100.0, Duration::from_secs(10));
        m.set_prior(100.0);
        for _ in 0..1000 {
            m.observe(Duration::from_millis(100), 2); // 20 events/s
        }
        assert!((m.rate() - 20.0).abs() < 0.5, "{}", m.rate());
        assert!(m.observed_secs() > 99.0);
        m.set_prior(1000.0);
        assert!(
            (m.rate() - 20.0).abs() < 0.5,
            "a long observation ignores the prior"
        );
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let mut e = PeakEwma::default();
        assert_eq!(e.get_or(7.0), 7.0);
        e.observe(1.0, Time::ZERO);
        e.observe(3.0, Time::from_millis(10));
        assert_eq!(e.secs, 3.0);
        e.observe(1.0, Time::from_secs_f64(10.01));
        let keep = (-1.0f64).exp();
        assert!((e.secs - (3.0 * keep + 1.0 * (1.0 - keep))).abs() < 1e-9);
        e.observe(f64::NAN, Time::ZERO);
        assert_eq!(e.samples, 3);
    }
}
