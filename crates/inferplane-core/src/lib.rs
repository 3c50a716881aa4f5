//! # inferplane-core
//!
//! The pure heart of inferplane: domain types for requests and instances, and (in later
//! modules) the scheduling policies, routing strategies and the `Scheduler` state machine.
//!
//! Nothing here reads a clock, performs I/O or spawns tasks. Every function that depends on
//! time takes `now: Time` as an argument, so the gateway and the discrete-event simulation
//! drive exactly the same code.

pub mod instance;
pub mod request;
pub mod scheduler;
pub mod time;

pub use instance::{InstanceId, InstanceSpec, Layout, Price};
pub use request::{ParallelismKind, Priority, RequestId, RequestMeta};
pub use scheduler::{
    DuplicateInstance, EngineLoad, InstanceIx, InstanceState, Outcome, Placement, RejectReason,
    Rejected, Scheduler, SchedulerConfig,
};
pub use time::Time;
