//! # inferplane-core
//!
//! The pure heart of inferplane: domain types for requests and instances, the scheduling
//! policies (`schedule`), the routing strategies and balancing algorithms (`route`), the
//! latency and cost predictions (`predict`), the counters (`stats`) and the `Scheduler`
//! state machine that joins them.
//!
//! Nothing here reads a clock, performs I/O or spawns tasks. Every function that depends on
//! time takes `now: Time` as an argument, so the gateway and the discrete-event simulation
//! drive exactly the same code.

pub mod instance;
pub mod predict;
pub mod reject;
pub mod request;
pub mod route;
pub mod schedule;
pub mod scheduler;
pub mod stats;
pub mod time;

pub use instance::{EngineInfo, InstanceId, InstanceSpec, Layout, Price};
pub use predict::Rates;
pub use reject::{RejectKind, RejectReason};
pub use request::{ParallelismKind, Priority, RequestId, RequestMeta};
pub use route::{BalanceConfig, RoutingConfig};
pub use schedule::{PolicyConfig, PolicySwitch};
pub use scheduler::{
    DuplicateInstance, EngineLoad, InstanceIx, InstanceState, Outcome, Placement, Rejected,
    Scheduler, SchedulerConfig,
};
pub use stats::Stats;
pub use time::Time;
