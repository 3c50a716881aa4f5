//! # inferplane-planner
//!
//! The advisory parallelism planner (work in progress).
pub mod catalog;
pub mod dtype;
pub mod error;
pub mod gpu;
pub mod hf;
pub mod memory;
pub mod model;
pub mod options;
pub mod constraints;
pub mod perf;
