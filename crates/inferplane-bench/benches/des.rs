//! DES throughput (in progress).
fn main() {}
