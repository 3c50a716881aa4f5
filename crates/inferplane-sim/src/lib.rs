//! # inferplane-sim
