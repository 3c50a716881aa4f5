//! The HTTP edge: `fn app(state) -> Router` with the OpenAI routes, the admin API,
//! `/metrics`, `/health`, `/ready`, the `/dashboard` page and the JSON error fallbacks. Tests call [`app`] directly.
//! Handlers return `Result<_, ApiError>` and use `?` on control-plane calls: `plane_error.rs`
//! is the one place a library [`PlaneError`](crate::PlaneError) becomes an [`ApiError`]
//! (status, OpenAI `type`/`code`/`param`, message, `Retry-After`).

pub mod admin;
pub mod body;
pub mod limits;
pub mod openai;
mod plane_error;
mod request_id;
pub mod tenants_admin;

use crate::control_plane::ControlPlane;
use crate::error::ApiError;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The control plane.
    pub cp: ControlPlane,
    /// Whether the listener is on a loopback address (admin without a token allowed).
    pub loopback: bool,
    /// The listener address, for error messages.
    pub listen: String,
    /// Who callers are, by their API keys (`[[tenants]]`).
    pub tenants: Arc<crate::tenants::Tenants>,
    /// Where keys changed at run time are shared with the other replicas (`[shared]`).
    pub keystore: Option<Arc<crate::tenants::KeyStore>>,
}

/// `GET /health`: 200 while the dispatcher runs; 503 (OpenAI-shaped) once it has stopped,
/// so a load balancer or an orchestrator takes the process out.
async fn health(State(s): State<Arc<AppState>>) -> Result<StatusCode, ApiError> {
    if s.cp.is_alive() {
        Ok(StatusCode::OK)
    } else {
        Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the scheduler stopped; this gateway cannot serve".into(),
            kind: "server_error",
            param: None,
            code: "dispatcher_stopped",
            retry_after: None,
        })
    }
}

/// `GET /ready`: whether this gateway should get traffic. 200 `{"ready":true,...}` once
/// at least one instance of some pool may take work and while no shutdown has begun; 503
/// (OpenAI-shaped, `code` saying why) before the first instance is ready, when none is,
/// from a shutdown signal on, and when the dispatcher has stopped. Kubernetes' readiness
/// probe: a replica that cannot serve, or is leaving, is taken out of its Service.
async fn ready(State(s): State<Arc<AppState>>) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let unready = |code: &'static str, message: String| ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message,
        kind: "server_error",
        param: None,
        code,
        retry_after: None,
    };
    if !s.cp.is_alive() {
        return Err(unready(
            "dispatcher_stopped",
            "the scheduler stopped; this gateway cannot serve".into(),
        ));
    }
    if s.cp.is_leaving() {
        return Err(unready(
            "shutting_down",
            "this gateway is shutting down; send requests to another replica".into(),
        ));
    }
    let instances = s.cp.instances().await?;
    let routable = instances.iter().filter(|i| i.ready && !i.draining).count();
    if routable == 0 {
        return Err(unready(
            "no_ready_instance",
            format!(
                "no instance is ready to serve yet ({} registered)",
                instances.len()
            ),
        ));
    }
    Ok(axum::Json(serde_json::json!({
        "ready": true,
        "instances_ready": routable,
        "instances": instances.len(),
    })))
}

/// The gateway's router.
pub fn app(state: Arc<AppState>) -> Router {
    let max_body = state.cp.config().max_body_bytes;
    Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/models", get(openai::models))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(prometheus))
        .route("/dashboard", get(dashboard))
        .merge(admin::routes(state.clone()))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                message: "method not allowed on this route".into(),
                kind: "invalid_request_error",
                param: None,
                code: "method_not_allowed",
                retry_after: None,
            }
        })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

async fn prometheus(axum::extract::State(s): axum::extract::State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.cp.telemetry().encode(),
    )
        .into_response()
}

/// The live dashboard: a static page that polls the admin API (asking for the token when
/// one is needed). It holds no data itself, so it needs no guard.
async fn dashboard() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("dashboard.html"),
    )
        .into_response()
}
