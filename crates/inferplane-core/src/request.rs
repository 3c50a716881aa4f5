//! Requests: `RequestMeta` (the seed's `RequestMetadata`) and the enums that describe it.
//!
//! A request is one admitted OpenAI call. The gateway builds its `RequestMeta` from the body
//! and the `x-*` headers; the benchmark builds it from a workload. The scheduler only ever
//! sees this description, never the body.

use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The output length the gateway assumes for a request that names no `max_tokens` (the
/// gateway's `default_max_tokens`, and the simulation's, which must know no more).
pub const DEFAULT_MAX_TOKENS: u32 = 256;

/// A request's identity inside one control plane, unique for its lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Priority class of a request. Higher classes are scheduled first by the `priority` policy
/// and shed last under overload. Ordered so that `Critical > High > Normal > Low`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Best-effort batch work; shed first.
    Low,
    /// The default for requests that say nothing.
    #[default]
    Normal,
    /// Interactive traffic that should overtake normal work.
    High,
    /// Must run before everything else; never shed by overload policies.
    Critical,
}

impl Priority {
    /// All classes, from highest to lowest.
    pub const ALL: [Priority; 4] = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];

    /// The snake_case name used in headers, config, metric labels and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// A dense index, 0 for `Critical` up to 3 for `Low`, for per-class arrays.
    pub const fn index(self) -> usize {
        match self {
            Priority::Critical => 0,
            Priority::High => 1,
            Priority::Normal => 2,
            Priority::Low => 3,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a string that names no known enum value; says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}; expected one of: {expected}")]
pub struct UnknownVariant {
    /// What kind of value was being parsed (e.g. "priority").
    pub kind: &'static str,
    /// The value that was given.
    pub value: String,
    /// The accepted values, comma separated.
    pub expected: &'static str,
}

impl FromStr for Priority {
    type Err = UnknownVariant;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "critical" => Ok(Priority::Critical),
            "high" => Ok(Priority::High),
            "normal" => Ok(Priority::Normal),
            "low" => Ok(Priority::Low),
            _ => Err(UnknownVariant {
                kind: "priority",
                value: s.to_string(),
                expected: "critical, high, normal, low",
            }),
        }
    }
}

/// One duration per priority class (config: `{ critical = "2s", high = "4s", ... }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassDurations {
    /// For `critical`.
    #[serde(with = "humantime_serde")]
    pub critical: Duration,
    /// For `high`.
    #[serde(with = "humantime_serde")]
    pub high: Duration,
    /// For `normal`.
    #[serde(with = "humantime_serde")]
    pub normal: Duration,
    /// For `low`.
    #[serde(with = "humantime_serde")]
    pub low: Duration,
}

impl ClassDurations {
    /// The duration of `class`.
    pub const fn get(&self, class: Priority) -> Duration {
        match class {
            Priority::Critical => self.critical,
            Priority::High => self.high,
            Priority::Normal => self.normal,
            Priority::Low => self.low,
        }
    }

    /// The same duration for every class.
    pub const fn uniform(d: Duration) -> Self {
        ClassDurations {
            critical: d,
            high: d,
            normal: d,
            low: d,
        }
    }
}

/// Parallelism layout kinds (the seed's `ParallelismType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParallelismKind {
    /// Tensor parallel: weights of every layer split across GPUs.
    Tp,
    /// Pipeline parallel: layers split into stages across GPUs.
    Pp,
    /// Data parallel: independent replicas.
    Dp,
    /// Expert parallel: MoE experts split across GPUs.
    Ep,
    /// A combination of the above.
    Hybrid,
}

impl ParallelismKind {
    /// The snake_case name used in headers, config and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            ParallelismKind::Tp => "tp",
            ParallelismKind::Pp => "pp",
            ParallelismKind::Dp => "dp",
            ParallelismKind::Ep => "ep",
            ParallelismKind::Hybrid => "hybrid",
        }
    }
}

impl fmt::Display for ParallelismKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ParallelismKind {
    type Err = UnknownVariant;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tp" => Ok(ParallelismKind::Tp),
            "pp" => Ok(ParallelismKind::Pp),
            "dp" => Ok(ParallelismKind::Dp),
            "ep" => Ok(ParallelismKind::Ep),
            "hybrid" => Ok(ParallelismKind::Hybrid),
            _ => Err(UnknownVariant {
                kind: "parallelism kind",
                value: s.to_string(),
                expected: "tp, pp, dp, ep, hybrid",
            }),
        }
    }
}

/// A tenant (a team behind API keys), by its index in the gateway's configuration: what the
/// fair share between tenants inside a priority class counts by (see
/// [`crate::schedule::fair`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(pub u32);

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tenant#{}", self.0)
    }
}

/// Everything the control plane knows about one request (the seed's `RequestMetadata`).
///
/// Deadlines are relative to `arrival`: `deadline = Some(2s)` means the request should have
/// finished 2 s after it arrived at the control plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestMeta {
    /// Identity inside this control plane.
    pub id: RequestId,
    /// The model name, which selects the pool.
    pub model: String,
    /// Priority class.
    #[serde(default)]
    pub priority: Priority,
    /// End-to-end SLO: the request should complete within this long of arrival.
    #[serde(default, with = "opt_millis")]
    pub deadline: Option<Duration>,
    /// Time-to-first-token target, relative to arrival.
    #[serde(default, with = "opt_millis")]
    pub ttft_target: Option<Duration>,
    /// The most this request may cost, in US dollars.
    #[serde(default)]
    pub cost_budget: Option<f64>,
    /// Upper bound on generated tokens (the request's `max_tokens`, or a pool default).
    pub max_tokens: u32,
    /// The `max_tokens` the client asked for, if it did (engines reserve context for it).
    #[serde(default)]
    pub max_tokens_requested: Option<u32>,
    /// Prompt length in tokens (counted or estimated by the gateway).
    pub prompt_tokens: u32,
    /// Session or user key; `affinity` routing keeps one key on one instance.
    #[serde(default)]
    pub session: Option<String>,
    /// Hash of the prompt's leading blocks; `locality` routing groups equal hashes.
    #[serde(default)]
    pub prefix_hash: Option<u64>,
    /// Chained hashes of the prompt's full KV blocks, in order (see
    /// [`crate::prefix::block_hashes`]: 16-token blocks of the stand-in tokenizer, or of a
    /// real one); empty when unknown. `prefix` routing matches them against its index.
    #[serde(default)]
    pub prefix_blocks: std::sync::Arc<[u64]>,
    /// Preferred instance layout, if the client asked for one.
    #[serde(default)]
    pub parallelism_hint: Option<ParallelismKind>,
    /// When the request arrived at the control plane.
    pub arrival: Time,
    /// Its tenant, when the gateway knows callers by key; requests without one share the
    /// pool as one tenant.
    #[serde(default)]
    pub tenant: Option<TenantId>,
}

impl RequestMeta {
    /// A request with defaults for every optional field: normal priority, no SLO, no budget.
    pub fn new(
        id: RequestId,
        model: impl Into<String>,
        prompt_tokens: u32,
        max_tokens: u32,
        arrival: Time,
    ) -> Self {
        RequestMeta {
            id,
            model: model.into(),
            priority: Priority::Normal,
            deadline: None,
            ttft_target: None,
            cost_budget: None,
            max_tokens,
            max_tokens_requested: None,
            prompt_tokens,
            session: None,
            prefix_hash: None,
            prefix_blocks: std::sync::Arc::default(),
            parallelism_hint: None,
            arrival,
            tenant: None,
        }
    }

    /// The absolute time by which the request should complete, if it has an SLO.
    pub fn deadline_at(&self) -> Option<Time> {
        self.deadline.map(|d| self.arrival + d)
    }

    /// The absolute time by which the first token should arrive, if it has a TTFT target.
    pub fn ttft_deadline_at(&self) -> Option<Time> {
        self.ttft_target.map(|d| self.arrival + d)
    }

    /// Tokens that must fit an instance's context: the prompt plus the requested output
    /// when the client asked for a length, else the prompt and one token.
    pub fn context_tokens(&self) -> u64 {
        u64::from(self.prompt_tokens) + u64::from(self.max_tokens_requested.unwrap_or(1).max(1))
    }
}

/// Serde helper: `Option<Duration>` as integer milliseconds.
mod opt_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_orders_critical_highest_and_parses_case_insensitively() {
        assert!(Priority::Critical > Priority::High);
        assert!(Priority::High > Priority::Normal);
        assert!(Priority::Normal > Priority::Low);
        assert_eq!("HIGH".parse::<Priority>(), Ok(Priority::High));
        let err = "urgent".parse::<Priority>().unwrap_err();
        assert!(err.to_string().contains("critical, high, normal, low"));
        for p in Priority::ALL {
            assert_eq!(p.as_str().parse::<Priority>(), Ok(p));
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.as_str())
            );
        }
    }

    #[test]
    fn parallelism_kind_uses_snake_case_names_everywhere() {
        for k in ["tp", "pp", "dp", "ep", "hybrid"] {
            let parsed: ParallelismKind = k.parse().unwrap();
            assert_eq!(parsed.as_str(), k);
            assert_eq!(serde_json::to_string(&parsed).unwrap(), format!("\"{k}\""));
        }
        assert!("tensor".parse::<ParallelismKind>().is_err());
    }

    #[test]
    fn deadlines_are_relative_to_arrival() {
        let mut m = RequestMeta::new(RequestId(1), "m", 10, 20, Time::from_millis(100));
        assert_eq!(m.deadline_at(), None);
        m.deadline = Some(Duration::from_millis(250));
        m.ttft_target = Some(Duration::from_millis(50));
        assert_eq!(m.deadline_at(), Some(Time::from_millis(350)));
        assert_eq!(m.ttft_deadline_at(), Some(Time::from_millis(150)));
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains("\"deadline\":250"));
        let back: RequestMeta = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
    }
}
