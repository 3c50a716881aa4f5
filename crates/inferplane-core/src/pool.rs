//! The foundation that scheduling policies, routing strategies and the scheduler share:
//! the instance index (with a generation, so a reused slot is never mistaken for the
//! instance that held it before), one instance's state as the scheduler keeps it, the
//! engine's reported load, the read-only [`PoolView`] that decisions run against, and the
//! [`CandidateSet`] a policy narrows placement with.
//!
//! `schedule/` and `route/` import only this module and the other foundation files
//! (`request`, `instance`, `time`, `predict`, `load`, `reject`); `scheduler/` joins them.

use crate::instance::{EngineInfo, InstanceSpec};
use crate::load::{LoadSignals, PeakEwma};
use crate::predict::{OutputLengths, Rates};
use crate::request::RequestMeta;
use crate::time::Time;

/// A position in the instance table, as routing strategies see it.
pub type Slot = usize;

/// An instance's index in the scheduler's table: its slot and the generation of that slot.
/// A removed instance's slot is reused with the next generation, so an index held across a
/// removal never names the newcomer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceIx {
    slot: u32,
    generation: u32,
}

impl InstanceIx {
    /// The index of `slot` at `generation`.
    pub const fn new(slot: u32, generation: u32) -> Self {
        InstanceIx { slot, generation }
    }

    /// The slot in the table.
    pub const fn slot(self) -> Slot {
        self.slot as Slot
    }

    /// How many instances held this slot before.
    pub const fn generation(self) -> u32 {
        self.generation
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

/// One instance as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct InstanceState {
    /// Its spec.
    pub spec: InstanceSpec,
    /// Its index.
    pub ix: InstanceIx,
    /// Healthy and circuit closed: may receive work.
    pub ready: bool,
    /// Draining: receives nothing new, in-flight work finishes.
    pub draining: bool,
    /// While probed (a half-open circuit breaker): at most this many attempts in flight.
    pub probe_limit: Option<u32>,
    /// Attempts placed and not yet completed.
    pub inflight: u32,
    /// What other gateway replicas have in flight on it, and this replica's share of
    /// the room until the next sync (see `fleet`); zero for a single gateway.
    pub fleet: crate::fleet::FleetShare,
    /// What the engine says about itself (batch limit, context, KV capacity).
    pub engine: EngineInfo,
    /// The last engine-reported load.
    pub load: EngineLoad,
    /// Saturation and prefill-backlog signals derived from the gateway's own counts and
    /// the last reading (see `load`).
    pub signals: LoadSignals,
    /// Predicted speeds: seeded from the layout or by the caller, then measured.
    pub rates: Rates,
    /// Peak-EWMA of placement-to-completion latency (`least_response_time`).
    pub latency: PeakEwma,
    /// Placements made on it.
    pub placed_total: u64,
    /// `placed_total` at the last fleet sync (see `Scheduler::fleet_demand`).
    pub fleet_placed_at_sync: u64,
    /// End-to-end deadlines of the attempts in flight on it (see `load::deadline_limit`).
    pub deadlines: Vec<crate::load::DeadlineInFlight>,
}

impl InstanceState {
    /// A new, not yet ready instance with rates seeded from its layout.
    pub fn new(spec: InstanceSpec, ix: InstanceIx) -> Self {
        InstanceState {
            rates: Rates::for_layout(&spec.layout),
            spec,
            ix,
            ready: false,
            draining: false,
            probe_limit: None,
            inflight: 0,
            fleet: crate::fleet::FleetShare::default(),
            engine: EngineInfo::default(),
            load: EngineLoad::default(),
            signals: LoadSignals::default(),
            latency: PeakEwma::default(),
            placed_total: 0,
            fleet_placed_at_sync: 0,
            deadlines: Vec::new(),
        }
    }

    /// Ready and not draining: may be given new work when it has room.
    pub fn routable(&self) -> bool {
        self.ready && !self.draining
    }

    /// Whether it takes one more request now: routable and not saturated (see
    /// `load::room`). Kept up to date by the scheduler on every change.
    pub fn has_room(&self) -> bool {
        self.signals.room
    }

    /// Whether it takes one more request now, `protected` or not (a protected request may
    /// use the batch that protected deadlines hold back from the rest, see `load`).
    pub fn has_room_for(&self, protected: bool) -> bool {
        if protected {
            self.signals.protected_room
        } else {
            self.signals.room
        }
    }

    /// Its room for any request and for protected ones, to tell what a change changed.
    pub fn rooms(&self) -> (bool, bool) {
        (self.signals.room, self.signals.protected_room)
    }

    /// The most attempts the gateway sends it at once (see `load::limit`).
    pub fn limit(&self) -> u32 {
        self.signals.limit
    }

    /// Attempts in flight on it from the whole fleet of gateway replicas: this one's and,
    /// as of the last sync, the others' (see `fleet`).
    pub fn fleet_inflight(&self) -> u32 {
        self.inflight.saturating_add(self.fleet.others)
    }

    /// Comparable busyness, lower is better: attempts in flight (the fleet's) plus the
    /// requests still waiting inside the engine, relative to the in-flight limit.
    pub fn load_score(&self) -> f64 {
        let extra = self.signals.engine_waiting(&self.load);
        (f64::from(self.fleet_inflight()) + extra) / f64::from(self.limit().max(1))
    }

    /// Predicted seconds per output token for a request placed here now: the decode model
    /// at one more than the present batch when it knows its shape or has measured, else
    /// the measured time per token.
    pub fn tpot_secs(&self) -> f64 {
        let d = &self.rates.decode;
        if d.samples > 0 || d.base > 0.0 {
            d.tpot(f64::from(self.fleet_inflight() + 1))
        } else {
            self.rates.decode_secs_per_token
        }
    }

    /// Predicted seconds from now until a request of `prompt_tokens` placed now gets its
    /// first token here: the engine's prefill backlog, then its own prefill.
    pub fn ttft_secs(&self, prompt_tokens: u32, _now: Time) -> f64 {
        self.signals
            .prefill_backlog_secs(self.rates.prefill_tokens_per_sec)
            + self.rates.ttft_secs(prompt_tokens)
    }

    /// Whether `context_tokens` (prompt plus requested output) fit its context length
    /// (unknown fits).
    pub fn fits(&self, context_tokens: u64) -> bool {
        self.context_len()
            .is_none_or(|len| context_tokens <= u64::from(len))
    }

    /// Its context length, as the engine said (or the configuration overrode).
    pub fn context_len(&self) -> Option<u32> {
        self.engine.max_model_len
    }
}

/// The pool as decisions see it: the instance table and totals over routable instances
/// (ready and not draining), kept up to date incrementally by the scheduler.
#[derive(Debug, Clone, Copy)]
pub struct PoolView<'a> {
    /// The instance table by slot; `None` marks a free slot.
    pub instances: &'a [Option<InstanceState>],
    /// Routable instances.
    pub routable: usize,
    /// Attempts in flight on routable instances.
    pub routable_inflight: u64,
    /// Routable instances with room for any request now.
    pub with_room: usize,
    /// Sum of in-flight limits over routable instances.
    pub capacity: u64,
    /// Requests waiting in the queue.
    pub queued: usize,
    /// Bumped whenever the routable set or an instance's spec changes.
    pub epoch: u64,
    /// The current time.
    pub now: Time,
    /// The output-length predictor (per class, learned from completions).
    pub outputs: &'a OutputLengths,
    /// The lowest protected class (see `load::SaturationConfig::protect`).
    pub protect: crate::request::Priority,
    /// Whether the request being decided is protected: it sees the room protected
    /// requests have ([`InstanceState::has_room_for`]).
    pub protected: bool,
}

impl<'a> PoolView<'a> {
    /// The instance at `slot`, if any.
    pub fn get(&self, slot: Slot) -> Option<&'a InstanceState> {
        self.instances.get(slot).and_then(Option::as_ref)
    }

    /// Whether `inst` has room for the request being decided.
    pub fn has_room(&self, inst: &InstanceState) -> bool {
        inst.has_room_for(self.protected)
    }

    /// Whether the instance at `slot` exists, has room and is allowed.
    pub fn eligible(&self, slot: Slot, allowed: Allowed<'_>) -> bool {
        allowed.contains(slot) && self.get(slot).is_some_and(|i| self.has_room(i))
    }

    /// Routable instances (ready, not draining), with their slot.
    pub fn routable(&self) -> impl Iterator<Item = (Slot, &'a InstanceState)> + 'a {
        self.instances
            .iter()
            .enumerate()
            .filter_map(|(ix, s)| s.as_ref().filter(|s| s.routable()).map(|s| (ix, s)))
    }

    /// Routable instances with room for the request being decided.
    pub fn with_room_iter(&self) -> impl Iterator<Item = (Slot, &'a InstanceState)> + 'a {
        let protected = self.protected;
        self.routable()
            .filter(move |(_, s)| s.has_room_for(protected))
    }

    /// The output length predicted for `req`.
    pub fn output_tokens(&self, req: &RequestMeta) -> u32 {
        self.outputs.predict(req)
    }

    /// Bounded-load test of consistent hashing with bounded loads: whether the instance
    /// could take one more request and stay within `factor` times the mean in-flight count
    /// (rounded up) of routable instances.
    pub fn within_load_bound(&self, slot: Slot, factor: f64) -> bool {
        let Some(inst) = self.get(slot) else {
            return false;
        };
        let mean = (self.routable_inflight + 1) as f64 / self.routable.max(1) as f64;
        f64::from(inst.inflight + 1) <= (factor * mean).ceil()
    }

    /// The eligible instance with the lowest `load_score`, scanning from `start` so that
    /// ties rotate. O(instances).
    pub fn least_loaded(&self, allowed: Allowed<'_>, start: usize) -> Option<Slot> {
        self.least_by(allowed, start, InstanceState::load_score)
    }

    /// The eligible instance with the lowest `score` (any ordered score, e.g. a tuple
    /// compared field by field), scanning from `start` so that ties rotate. O(instances).
    pub fn least_by<S: PartialOrd>(
        &self,
        allowed: Allowed<'_>,
        start: usize,
        score: impl Fn(&InstanceState) -> S,
    ) -> Option<Slot> {
        let n = self.instances.len();
        let mut best: Option<(Slot, S)> = None;
        for i in 0..n {
            let ix = (start + i) % n;
            let Some(inst) = self.get(ix) else { continue };
            if !self.has_room(inst) || !allowed.contains(ix) {
                continue;
            }
            let s = score(inst);
            if best.as_ref().is_none_or(|(_, b)| s < *b) {
                best = Some((ix, s));
            }
        }
        best.map(|(ix, _)| ix)
    }
}

/// A set of slots, as a bitset reused from pick to pick (it only allocates when the
/// instance table grows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CandidateSet {
    words: Vec<u64>,
    len: usize,
}

impl CandidateSet {
    /// Empties the set and makes room for slots below `n`.
    pub fn reset(&mut self, n: usize) {
        let words = n.div_ceil(64);
        self.words.clear();
        self.words.resize(words, 0);
        self.len = 0;
    }

    /// Adds `slot` (ignored if beyond the size given to `reset`).
    pub fn insert(&mut self, slot: Slot) {
        if let Some(w) = self.words.get_mut(slot / 64) {
            let bit = 1u64 << (slot % 64);
            if *w & bit == 0 {
                *w |= bit;
                self.len += 1;
            }
        }
    }

    /// Removes `slot`.
    pub fn remove(&mut self, slot: Slot) {
        if let Some(w) = self.words.get_mut(slot / 64) {
            let bit = 1u64 << (slot % 64);
            if *w & bit != 0 {
                *w &= !bit;
                self.len -= 1;
            }
        }
    }

    /// Whether `slot` is in the set.
    pub fn contains(&self, slot: Slot) -> bool {
        self.words
            .get(slot / 64)
            .is_some_and(|w| w & (1u64 << (slot % 64)) != 0)
    }

    /// Members.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it has no member.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Members in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = Slot> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(wi * 64 + b)
            })
        })
    }

    /// Keeps only the members for which `keep` holds.
    pub fn retain(&mut self, keep: impl Fn(Slot) -> bool) {
        for (wi, w) in self.words.iter_mut().enumerate() {
            let mut bits = *w;
            while bits != 0 {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if !keep(wi * 64 + b) {
                    *w &= !(1u64 << b);
                    self.len -= 1;
                }
            }
        }
    }

    /// Copies `other` into `self` (reusing its buffer).
    pub fn copy_from(&mut self, other: &CandidateSet) {
        self.words.clear();
        self.words.extend_from_slice(&other.words);
        self.len = other.len;
    }
}

/// Which slots a pick may choose (besides having room).
#[derive(Debug, Clone, Copy)]
pub enum Allowed<'a> {
    /// Every instance.
    All,
    /// Only these.
    Only(&'a CandidateSet),
}

impl Allowed<'_> {
    /// Whether `slot` is allowed.
    pub fn contains(&self, slot: Slot) -> bool {
        match self {
            Allowed::All => true,
            Allowed::Only(set) => set.contains(slot),
        }
    }
}

/// Test helpers: pools of instance states without a scheduler.
#[cfg(test)]
pub(crate) mod testkit {
    use super::*;
    use crate::load::{SaturationConfig, refresh};
    use crate::request::RequestId;

    /// Shared empty output predictor for views built by tests.
    pub static OUTPUTS: std::sync::LazyLock<OutputLengths> =
        std::sync::LazyLock::new(OutputLengths::default);

    /// Ready instances with the given `(max_inflight, inflight)`, room computed.
    pub fn states(slots: &[(u32, u32)]) -> Vec<Option<InstanceState>> {
        slots
            .iter()
            .enumerate()
            .map(|(i, &(max, inflight))| {
                let spec = InstanceSpec::new(format!("i{i}"), "u", "m", max);
                let mut s = InstanceState::new(spec, InstanceIx::new(i as u32, 0));
                s.ready = true;
                s.inflight = inflight;
                refresh(&mut s, &SaturationConfig::default(), None, Time::ZERO);
                Some(s)
            })
            .collect()
    }

    /// Recomputes room after a test changed a state.
    pub fn refresh_all(states: &mut [Option<InstanceState>]) {
        for s in states.iter_mut().flatten() {
            refresh(s, &SaturationConfig::default(), None, Time::ZERO);
        }
    }

    /// A view over `states` with totals computed.
    pub fn view(states: &[Option<InstanceState>]) -> PoolView<'_> {
        let mut v = PoolView {
            instances: states,
            routable: 0,
            routable_inflight: 0,
            with_room: 0,
            capacity: 0,
            queued: 0,
            epoch: 0,
            now: Time::ZERO,
            outputs: &OUTPUTS,
            protect: crate::request::Priority::Critical,
            protected: false,
        };
        for s in states.iter().flatten().filter(|s| s.routable()) {
            v.routable += 1;
            v.routable_inflight += u64::from(s.inflight);
            v.capacity += u64::from(s.limit());
            v.with_room += usize::from(s.has_room());
        }
        v
    }

    /// A request with an optional session and prefix.
    pub fn req(id: u64, session: Option<&str>, prefix: Option<u64>) -> RequestMeta {
        let mut m = RequestMeta::new(RequestId(id), "m", 100, 100, Time::ZERO);
        m.session = session.map(str::to_string);
        m.prefix_hash = prefix;
        m
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
