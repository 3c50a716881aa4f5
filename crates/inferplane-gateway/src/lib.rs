//! # inferplane-gateway
//!
//! Everything with I/O: the OpenAI-compatible HTTP gateway and the embeddable control
//! plane behind it.
//!
//! - [`control_plane`] and [`builder`]: [`ControlPlane`], the library API (builder, submit,
//!   register, drain, remove, metrics, run-time policy switching).
//! - [`plane_error`]: [`PlaneError`], what the library API and the dispatcher answer when
//!   they cannot do what was asked (unknown model, rejected with the core's reason,
//!   conflict, not found, invalid setting, shutting down). It knows nothing of HTTP.
//! - [`dispatcher`]: the task that owns every pool's `core::Scheduler`, instance health and
//!   circuit state, and request accounting.
//! - [`http`]: the routes ([`http::app`]), and the one mapping of a [`PlaneError`] to an
//!   [`ApiError`] (status, OpenAI `type`/`code`/`param`, `Retry-After`); [`server`]:
//!   [`Gateway`], the router on a socket with graceful shutdown.
//! - [`backend`] and [`relay`]: one attempt at an engine, and SSE relaying.
//! - [`probe`], [`health`], [`scrape`]: health checks, circuit breakers, load scraping.
//! - [`engine_info`]: what each engine says about itself (batch limit, context length, KV
//!   capacity), discovered when it becomes healthy.
//! - [`discovery`]: instances from the Kubernetes API (the pure reconciler and pod
//!   annotations always; the kube-rs watch behind the cargo feature `kubernetes`).
//! - [`config`], [`meta`], [`error`], [`telemetry`], [`stats`]: configuration, request
//!   metadata from headers and body, the HTTP error type (the edge's only: the library
//!   never builds one), Prometheus metrics, and the JSON `PerformanceMetrics`.

pub mod backend;
pub mod builder;
pub mod config;
pub mod control_plane;
pub mod discovery;
pub mod dispatcher;
pub mod engine_info;
pub mod error;
pub mod health;
pub mod http;
pub mod kv_events;
pub mod listener;
pub mod meta;
pub mod plane_error;
pub mod probe;
pub mod prompt;
pub mod relay;
pub mod scrape;
pub mod server;
pub mod shared;
pub mod stats;
pub mod telemetry;
pub mod tenants;

pub use builder::{BuildError, ControlPlaneBuilder};
pub use config::{ConfigError, FileConfig, GatewayConfig};
pub use control_plane::ControlPlane;
pub use error::ApiError;
pub use plane_error::{NotReady, PlaneError, Unready};
pub use server::{Gateway, GatewayError, Stopped};
