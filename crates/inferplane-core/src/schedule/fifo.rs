//! `fifo`: first come, first served, class-blind: the seed's plain queue. It takes the
//! arrival order; requests leave the queue only by placement, the queue timeout, their
//! end-to-end deadline or a full queue (no class-aware shedding).

use super::{OrderKind, SchedulingPolicy};
use serde::{Deserialize, Serialize};

/// The config tag.
pub const NAME: &str = "fifo";

/// Settings of `fifo` (none yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FifoConfig {}

/// First come, first served.
#[derive(Debug, Default)]
pub struct Fifo;

impl Fifo {
    /// The policy.
    pub fn new(_config: FifoConfig) -> Self {
        Fifo
    }
}

impl SchedulingPolicy for Fifo {
    fn name(&self) -> &'static str {
        NAME
    }
    fn order(&self) -> OrderKind {
        OrderKind::Arrival
    }
}
