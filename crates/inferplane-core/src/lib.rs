//! # inferplane-core
//!
//! The pure heart of inferplane. The foundation ([`pool`], [`load`], [`reserve`],
//! [`predict`], [`outcome`], [`reject`], [`request`], [`instance`], [`time`]) holds the types every
//! decision shares; [`schedule`] (which request goes next) and [`route`] (which instance
//! serves it) import only the foundation; [`scheduler`] joins them into the one state
//! machine the gateway and the discrete-event simulation both drive; [`stats`] counts.
//!
//! Nothing here reads a clock, performs I/O or spawns tasks. Every function that depends on
//! time takes `now: Time` as an argument, so the gateway and the discrete-event simulation
//! drive exactly the same code.

pub mod fleet;
pub mod instance;
pub mod load;
pub mod outcome;
pub mod pool;
pub mod predict;
pub mod prefix;
pub mod reject;
pub mod request;
pub mod reserve;
pub mod route;
pub mod schedule;
pub mod scheduler;
pub mod settings;
pub mod stats;
pub mod time;

pub use instance::{EngineInfo, InstanceId, InstanceSpec, Layout, Price};
pub use load::SaturationConfig;
pub use outcome::{AttemptId, Outcome, Slo};
pub use pool::{EngineLoad, InstanceIx, InstanceState};
pub use predict::Rates;
pub use reject::{RejectKind, RejectReason};
pub use request::{ClassDurations, ParallelismKind, Priority, RequestId, RequestMeta, TenantId};
pub use route::{BalanceConfig, RoutingConfig};
pub use schedule::{PolicyConfig, PolicySwitch};
pub use scheduler::{
    Completion, DuplicateInstance, Effects, OverloadConfig, Placement, QueueAt, Rejection,
    Scheduler, SchedulerConfig,
};
pub use stats::Stats;
pub use time::Time;
