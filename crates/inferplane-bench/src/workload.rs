//! Workloads: a seeded generator of open-loop request streams, and [`WorkItem`], the one
//! request description that live runs, simulations and traces share.
//!
//! A [`WorkloadSpec`] (TOML or flags) says how requests arrive (Poisson, or bursty gamma
//! with a coefficient of variation above 1), how long prompts and outputs are (fixed,
//! uniform or long-tailed log-normal, ShareGPT-like by default), which priority and SLO
//! class each belongs to (with TTFT and end-to-end targets and cost budgets), how many
//! belong to multi-turn sessions (each turn's prompt extends the previous turn's prompt and
//! output) and how many share a long system-prompt prefix. The same spec and seed always
//! give the same requests.

pub use crate::dist::{Arrival, LengthDist, gamma, standard_normal};
use crate::error::BenchError;
use inferplane_core::Priority;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// One request of a workload: when it arrives and what it asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkItem {
    /// Arrival, seconds after the start of the run.
    pub t: f64,
    /// Prompt length in tokens, the shared prefix included.
    pub prompt_tokens: u32,
    /// Tokens the engine generates: the request's true output length, which only the
    /// engine knows (a client sends it as vLLM's `min_tokens`, which the simulator takes as
    /// its end of sequence; the gateway never reads it).
    pub output_tokens: u32,
    /// The `max_tokens` the client sends: a cap, at least `output_tokens`. `None`: the
    /// client sends `output_tokens` itself as its cap (older traces; it tells the gateway
    /// the true length).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Priority class.
    #[serde(default, skip_serializing_if = "is_normal")]
    pub priority: Priority,
    /// SLO class name, for per-class attainment in reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// Time-to-first-token target, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<u64>,
    /// End-to-end target, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2e_ms: Option<u64>,
    /// Cost budget, US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_budget: Option<f64>,
    /// Multi-turn session id; turns of one session share their history as a prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<u64>,
    /// Shared system-prompt group; requests of one group share `prefix_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_group: Option<u32>,
    /// Length of the group's shared prefix (part of `prompt_tokens`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prefix_tokens: u32,
    /// Model name; `None` means the run's default model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The tenant it comes from (the gateway knows it by the caller's API key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

fn is_normal(p: &Priority) -> bool {
    *p == Priority::Normal
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl WorkItem {
    /// The `max_tokens` the client sends (see [`WorkItem::max_tokens`]).
    pub fn cap(&self) -> u32 {
        self.max_tokens
            .unwrap_or(self.output_tokens)
            .max(self.output_tokens)
            .max(1)
    }

    /// A plain request: normal priority, no SLO, no session, no shared prefix, its true
    /// output length as its cap.
    pub fn plain(t: f64, prompt_tokens: u32, output_tokens: u32) -> Self {
        WorkItem {
            t,
            prompt_tokens,
            output_tokens,
            max_tokens: None,
            priority: Priority::Normal,
            class: None,
            ttft_ms: None,
            e2e_ms: None,
            cost_budget: None,
            session: None,
            prefix_group: None,
            prefix_tokens: 0,
            model: None,
            tenant: None,
        }
    }
}

/// A priority and SLO class of requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassSpec {
    /// Name, shown in reports.
    pub name: String,
    /// Relative share of requests.
    pub weight: f64,
    /// Priority of its requests.
    #[serde(default)]
    pub priority: Priority,
    /// Time-to-first-token target, milliseconds.
    #[serde(default)]
    pub ttft_ms: Option<u64>,
    /// End-to-end target, milliseconds.
    #[serde(default)]
    pub e2e_ms: Option<u64>,
    /// Cost budget, US dollars.
    #[serde(default)]
    pub cost_budget: Option<f64>,
    /// The `max_tokens` its clients send (overrides the workload's).
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// The tenant its requests come from (fair share between tenants inside a priority
    /// class); absent: no tenant.
    #[serde(default)]
    pub tenant: Option<String>,
}

/// Multi-turn sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionSpec {
    /// Fraction of requests that are turns of a session (0 disables sessions).
    pub share: f64,
    /// Sessions open at once; a session request continues a random open one.
    pub active: usize,
    /// Mean turns per session (geometric).
    pub mean_turns: f64,
    /// Longest context a session grows to before it ends.
    pub max_context: u32,
}

impl Default for SessionSpec {
    fn default() -> Self {
        SessionSpec {
            share: 0.3,
            active: 32,
            mean_turns: 4.0,
            max_context: 8192,
        }
    }
}

/// Groups of requests that share a long system-prompt prefix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrefixSpec {
    /// Fraction of requests (and sessions) with a shared prefix.
    pub share: f64,
    /// Number of distinct prefixes.
    pub groups: u32,
    /// Length of each prefix in tokens.
    pub tokens: u32,
    /// Popularity skew: group `k` (from 0) is drawn with weight `1 / (k + 1)^zipf`
    /// (0: uniform).
    pub zipf: f64,
}

impl Default for PrefixSpec {
    fn default() -> Self {
        PrefixSpec {
            share: 0.5,
            groups: 8,
            tokens: 512,
            zipf: 0.0,
        }
    }
}

/// A seeded workload description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadSpec {
    /// RNG seed.
    pub seed: u64,
    /// Number of requests.
    pub requests: usize,
    /// Mean arrival rate, requests per second.
    pub rate: f64,
    /// Arrival process.
    pub arrival: Arrival,
    /// Prompt lengths (the part after any shared prefix).
    pub prompt: LengthDist,
    /// Output lengths (the true lengths; capped by `max_tokens`).
    pub output: LengthDist,
    /// The `max_tokens` clients send, a cap on the output (`None`: they send the true
    /// length, which tells the gateway more than real clients do).
    pub max_tokens: Option<u32>,
    /// Priority and SLO classes; empty means every request is a plain normal one.
    pub classes: Vec<ClassSpec>,
    /// Multi-turn sessions.
    pub sessions: SessionSpec,
    /// Shared system-prompt prefixes.
    pub prefixes: PrefixSpec,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        WorkloadSpec {
            seed: 1,
            requests: 1000,
            rate: 10.0,
            arrival: Arrival::Poisson,
            prompt: LengthDist::LogNormal {
                median: 256.0,
                sigma: 1.0,
                min: 4,
                max: 4096,
            },
            output: LengthDist::LogNormal {
                median: 160.0,
                sigma: 0.8,
                min: 4,
                max: 1024,
            },
            max_tokens: Some(1024),
            classes: default_classes(),
            sessions: SessionSpec::default(),
            prefixes: PrefixSpec::default(),
        }
    }
}

/// Three classes: interactive (high priority, tight SLO), standard, and batch (low, none).
pub fn default_classes() -> Vec<ClassSpec> {
    vec![
        ClassSpec {
            name: "interactive".into(),
            weight: 0.3,
            priority: Priority::High,
            ttft_ms: Some(1000),
            e2e_ms: Some(15_000),
            cost_budget: None,
            max_tokens: None,
            tenant: None,
        },
        ClassSpec {
            name: "standard".into(),
            weight: 0.5,
            priority: Priority::Normal,
            ttft_ms: Some(3000),
            e2e_ms: Some(30_000),
            cost_budget: Some(0.01),
            max_tokens: None,
            tenant: None,
        },
        ClassSpec {
            name: "batch".into(),
            weight: 0.2,
            priority: Priority::Low,
            ttft_ms: None,
            e2e_ms: None,
            cost_budget: None,
            max_tokens: None,
            tenant: None,
        },
    ]
}

struct OpenSession {
    id: u64,
    turns_left: u32,
    context: u32,
    group: Option<u32>,
    class: usize,
}

impl WorkloadSpec {
    /// Checks the spec; says what is wrong.
    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |m: &str| Err(BenchError::Workload(m.to_string()));
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return bad("rate must be a positive number of requests per second");
        }
        if let Arrival::Gamma { cv } = self.arrival
            && !(cv.is_finite() && cv > 0.0)
        {
            return bad("arrival.cv must be positive");
        }
        self.prompt.validate("prompt")?;
        self.output.validate("output")?;
        if self.max_tokens == Some(0) || self.classes.iter().any(|c| c.max_tokens == Some(0)) {
            return bad("max_tokens must be at least 1");
        }
        if self
            .classes
            .iter()
            .any(|c| !(c.weight.is_finite() && c.weight >= 0.0))
            || (!self.classes.is_empty()
                && self.classes.iter().map(|c| c.weight).sum::<f64>() <= 0.0)
        {
            return bad("class weights must be non-negative with a positive sum");
        }
        let share = |s: f64| (0.0..=1.0).contains(&s);
        if !share(self.sessions.share) || !share(self.prefixes.share) {
            return bad("sessions.share and prefixes.share must be within 0..=1");
        }
        if !(self.prefixes.zipf.is_finite() && self.prefixes.zipf >= 0.0) {
            return bad("prefixes.zipf must be a non-negative number");
        }
        if self.prefixes.share > 0.0 && self.prefixes.groups == 0 {
            return bad("prefixes.groups must be at least 1 when prefixes.share > 0");
        }
        if self.sessions.share > 0.0
            && (self.sessions.active == 0 || self.sessions.mean_turns < 1.0)
        {
            return bad("sessions need active >= 1 and mean_turns >= 1");
        }
        Ok(())
    }

    /// Generates the requests, sorted by arrival.
    pub fn generate(&self) -> Result<Vec<WorkItem>, BenchError> {
        self.validate()?;
        let mut rng = SmallRng::seed_from_u64(self.seed);
        let popularity = self.popularity();
        let total_weight: f64 = self.classes.iter().map(|c| c.weight).sum();
        let mut out = Vec::with_capacity(self.requests);
        let mut open: Vec<OpenSession> = Vec::new();
        let mut next_session = 0u64;
        let mut t = 0.0;
        for _ in 0..self.requests {
            t += self.arrival.gap(&mut rng, self.rate);
            // Microsecond resolution: short decimals round-trip exactly through JSONL.
            let t = (t * 1e6).round() / 1e6;
            let output = self.output.sample(&mut rng);
            let fresh = self.prompt.sample(&mut rng);
            let item = if self.sessions.share > 0.0 && rng.random_bool(self.sessions.share) {
                if open.len() < self.sessions.active {
                    // A new session: its first turn.
                    let p = 1.0 / self.sessions.mean_turns;
                    let mut turns = 1;
                    while turns < 1000 && !rng.random_bool(p) {
                        turns += 1;
                    }
                    let group = self.draw_group(&mut rng, &popularity);
                    open.push(OpenSession {
                        id: next_session,
                        turns_left: turns,
                        context: 0,
                        group,
                        class: self.draw_class(&mut rng, total_weight),
                    });
                    next_session += 1;
                }
                let ix = rng.random_range(0..open.len());
                let s = &mut open[ix];
                let prefix = s.group.map_or(0, |_| self.prefixes.tokens);
                let prompt = prefix.max(s.context) + fresh;
                let mut item = self.item(t, prompt, output, s.class, s.group);
                item.session = Some(s.id);
                s.context = prompt + item.output_tokens;
                s.turns_left -= 1;
                if s.turns_left == 0 || s.context >= self.sessions.max_context {
                    open.swap_remove(ix);
                }
                // the prompt and the cap the client asks for must fit the context
                if prompt + item.cap() > self.sessions.max_context && prompt > prefix + fresh {
                    // Too long to continue: the session ends and this turn starts afresh.
                    item.prompt_tokens = prefix + fresh;
                    item.session = Some(next_session);
                    next_session += 1;
                }
                item
            } else {
                let group = self.draw_group(&mut rng, &popularity);
                let prompt = group.map_or(0, |_| self.prefixes.tokens) + fresh;
                let class = self.draw_class(&mut rng, total_weight);
                self.item(t, prompt, output, class, group)
            };
            out.push(item);
        }
        Ok(out)
    }

    /// The cumulative Zipf weights of the groups (empty: uniform).
    fn popularity(&self) -> Vec<f64> {
        if self.prefixes.zipf == 0.0 || self.prefixes.share == 0.0 {
            return Vec::new();
        }
        let mut sum = 0.0;
        (0..self.prefixes.groups)
            .map(|k| {
                sum += (f64::from(k) + 1.0).powf(-self.prefixes.zipf);
                sum
            })
            .collect()
    }

    fn draw_group(&self, rng: &mut SmallRng, popularity: &[f64]) -> Option<u32> {
        (self.prefixes.share > 0.0 && rng.random_bool(self.prefixes.share)).then(
            || match popularity.last() {
                Some(&total) => {
                    let x = rng.random::<f64>() * total;
                    popularity
                        .partition_point(|&c| c <= x)
                        .min(popularity.len() - 1) as u32
                }
                None => rng.random_range(0..self.prefixes.groups),
            },
        )
    }

    fn draw_class(&self, rng: &mut SmallRng, total: f64) -> usize {
        let mut x = rng.random::<f64>() * total;
        for (i, c) in self.classes.iter().enumerate() {
            if x < c.weight {
                return i;
            }
            x -= c.weight;
        }
        self.classes.len().saturating_sub(1)
    }

    fn item(&self, t: f64, prompt: u32, output: u32, class: usize, group: Option<u32>) -> WorkItem {
        let c = self.classes.get(class);
        let cap = c.and_then(|c| c.max_tokens).or(self.max_tokens);
        let mut item = WorkItem::plain(t, prompt, cap.map_or(output, |m| output.min(m)));
        item.max_tokens = cap;
        if let Some(c) = c {
            item.priority = c.priority;
            item.class = Some(c.name.clone());
            item.ttft_ms = c.ttft_ms;
            item.e2e_ms = c.e2e_ms;
            item.cost_budget = c.cost_budget;
            item.tenant = c.tenant.clone();
        }
        if group.is_some() {
            item.prefix_group = group;
            item.prefix_tokens = self.prefixes.tokens;
        }
        item
    }
}

/// Mean prompt and output tokens of a request set (for capacity estimates).
pub fn mean_sizes(items: &[WorkItem]) -> (f64, f64) {
    let n = items.len().max(1) as f64;
    let p: f64 = items.iter().map(|i| f64::from(i.prompt_tokens)).sum();
    let o: f64 = items.iter().map(|i| f64::from(i.output_tokens)).sum();
    (p / n, o / n)
}

#[cfg(test)]
#[path = "workload_tests.rs"]
mod tests;
