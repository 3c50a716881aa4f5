//! # inferplane-planner
//!
//! The advisory parallelism planner (placeholder until the planner issue lands).
