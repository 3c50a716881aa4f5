//! Planner benchmarks (filled in by the planner issue).
fn main() {}
