//! `priority`: strict priority classes with aging relative to each class's wait target
//! (see `order` for the bound), and class-aware overload control: under overload the
//! scheduler sheds the lowest class first (see `scheduler/overload.rs`).
//!
//! Placement is unrestricted: the routing strategy picks among every instance with room.

use super::{OrderKind, SchedulingPolicy};
use serde::{Deserialize, Serialize};

/// The config tag.
pub const NAME: &str = "priority";

/// Settings of `priority` (the class wait targets are the pool's, in `SchedulerConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PriorityConfig {}

/// Strict classes with aging.
#[derive(Debug, Default)]
pub struct PriorityPolicy;

impl PriorityPolicy {
    /// The policy.
    pub fn new(_config: PriorityConfig) -> Self {
        PriorityPolicy
    }
}

impl SchedulingPolicy for PriorityPolicy {
    fn name(&self) -> &'static str {
        NAME
    }
    fn order(&self) -> OrderKind {
        OrderKind::ClassAging
    }
}
