//! The simulator's HTTP face on a real socket: vLLM's OpenAI-compatible routes, `/health`,
//! `/metrics`, and the `/sim/faults` control endpoint.
//!
//! [`SimServer::start`] binds (port 0 lets the OS choose), spawns the engine task and the
//! server, and returns a handle with the address and the fault controls.

use crate::driver::{self, EngineHandle};
use crate::engine::Engine;
use crate::faults::InvalidSetting;
use crate::faults::{FaultConfig, Faults};
use crate::handlers;
use crate::kv_events::KvEventsConfig;
use crate::listener::FaultyListener;
use crate::metrics::SimMetrics;
use crate::openai::ApiError;
use crate::profile::EngineProfile;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Configuration of one simulated engine server.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Instance id, sent back in the `x-inferplane-instance` response header.
    pub instance_id: String,
    /// The model name it serves.
    pub model: String,
    /// Step-time model and limits.
    pub profile: EngineProfile,
    /// Virtual seconds per real second (10 runs ten times faster than real time).
    pub time_scale: f64,
    /// With a seed, outputs stop at a seeded length; without, at `max_tokens`.
    pub stop_seed: Option<u64>,
    /// Faults active from the start.
    pub faults: FaultConfig,
    /// `max_tokens` for chat requests that give none (clamped to the context left).
    pub default_max_tokens: u32,
    /// Publish KV usage as vLLM V0's `vllm:gpu_cache_usage_perc`.
    pub legacy_metric_names: bool,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Require `Authorization: Bearer <key>` on `/v1/*`, as `vllm serve --api-key` does.
    pub api_key: Option<String>,
    /// Publish KV cache events as `vllm serve --kv-events-config` does.
    pub kv_events: Option<KvEventsConfig>,
    /// Tokenize prompts with this tokenizer (and its chat template) as the engine would,
    /// so cache blocks and KV events' `token_ids` are real token ids; none: the stand-in.
    pub tokenizer: Option<Arc<inferplane_tokenize::PromptTokenizer>>,
}

impl SimConfig {
    /// A config with the given model and profile and defaults for the rest.
    pub fn new(model: impl Into<String>, profile: EngineProfile) -> Self {
        SimConfig {
            instance_id: "sim-0".into(),
            model: model.into(),
            profile,
            time_scale: 1.0,
            stop_seed: None,
            faults: FaultConfig::default(),
            default_max_tokens: 256,
            legacy_metric_names: false,
            max_body_bytes: 8 << 20,
            api_key: None,
            kv_events: None,
            tokenizer: None,
        }
    }
}

/// Errors starting a simulated engine.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The profile or faults are invalid.
    #[error("invalid simulator configuration")]
    Invalid(#[from] InvalidSetting),
    /// Binding the socket failed.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Binding the KV event sockets failed.
    #[error(transparent)]
    KvEvents(#[from] inferplane_kv_events::TransportError),
}

#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) instance_id: HeaderValue,
    pub(crate) model: Arc<str>,
    pub(crate) engine: EngineHandle,
    pub(crate) faults: Faults,
    pub(crate) metrics: Arc<SimMetrics>,
    pub(crate) max_model_len: u32,
    pub(crate) default_max_tokens: u32,
    pub(crate) next_id: AtomicU64,
    pub(crate) api_key: Option<String>,
    pub(crate) tokenizer: Option<Arc<inferplane_tokenize::PromptTokenizer>>,
}

/// A running simulated engine.
#[derive(Debug)]
pub struct SimServer {
    addr: SocketAddr,
    faults: Faults,
    kv_events_endpoints: Option<(String, Option<String>)>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl SimServer {
    /// Binds `addr`, starts the engine task and serves until shut down or dropped.
    pub async fn start(config: SimConfig, addr: SocketAddr) -> Result<SimServer, StartError> {
        config.profile.validate()?;
        config.faults.validate()?;
        if !(config.time_scale.is_finite() && config.time_scale > 0.0) {
            return Err(StartError::Invalid(InvalidSetting::new(
                "time_scale",
                format!("must be positive, got {}", config.time_scale),
            )));
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let faults = Faults::new(config.faults.clone());
        let listener = FaultyListener::new(listener, faults.subscribe())
            .map_err(|source| StartError::Bind { addr, source })?;
        let local = axum::serve::Listener::local_addr(&listener)
            .map_err(|source| StartError::Bind { addr, source })?;
        let metrics = Arc::new(SimMetrics::new(
            &config.model,
            config.profile.kv_blocks,
            config.legacy_metric_names,
        ));
        let max_model_len = config.profile.max_model_len;
        let publisher = match &config.kv_events {
            Some(kv) if kv.publishes() => Some(kv.bind().await?),
            _ => None,
        };
        let kv_events_endpoints = publisher.as_ref().map(|p| {
            (
                p.endpoint().to_owned(),
                p.replay_endpoint().map(str::to_owned),
            )
        });
        let engine = driver::spawn(
            Engine::new(config.profile, config.stop_seed),
            config.time_scale,
            faults.clone(),
            metrics.clone(),
            publisher.map(driver::KvEventSink::new),
        );
        let state = Arc::new(AppState {
            instance_id: HeaderValue::from_str(&config.instance_id).map_err(|_| {
                StartError::Invalid(InvalidSetting::new(
                    "instance_id",
                    "is not a valid header value",
                ))
            })?,
            model: Arc::from(config.model.as_str()),
            engine,
            faults: faults.clone(),
            metrics,
            max_model_len,
            default_max_tokens: config.default_max_tokens,
            next_id: AtomicU64::new(0),
            api_key: config.api_key.clone(),
            tokenizer: config.tokenizer.clone(),
        });
        let app = app(state, config.max_body_bytes);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(SimServer {
            addr: local,
            faults,
            kv_events_endpoints,
            shutdown: Some(tx),
            task,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound KV event PUB endpoint (port resolved), when publishing.
    pub fn kv_events_endpoint(&self) -> Option<&str> {
        self.kv_events_endpoints.as_ref().map(|(e, _)| e.as_str())
    }

    /// The bound KV event replay endpoint (port resolved), when configured.
    pub fn kv_events_replay_endpoint(&self) -> Option<&str> {
        self.kv_events_endpoints
            .as_ref()
            .and_then(|(_, r)| r.as_deref())
    }

    /// The fault controls (the same state `/sim/faults` changes).
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Stops accepting, lets open requests finish, and waits for the server to end.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        if self.shutdown.is_some() {
            self.task.abort();
        }
    }
}

fn app(state: Arc<AppState>, max_body: usize) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(handlers::chat))
        .route("/v1/completions", post(handlers::completions))
        .route("/v1/models", get(handlers::models))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_key,
        ));
    Router::new()
        .merge(v1)
        .route("/health", get(handlers::health))
        .route("/metrics", get(handlers::metrics))
        .route("/reset_prefix_cache", post(handlers::reset_prefix_cache))
        .route(
            "/sim/faults",
            get(handlers::get_faults)
                .put(handlers::set_faults)
                .post(handlers::set_faults)
                .delete(handlers::clear_faults),
        )
        .fallback(|| async {
            ApiError {
                status: 404,
                message: "no such route".into(),
                kind: "invalid_request_error",
                param: None,
                code: Some("not_found"),
            }
        })
        .method_not_allowed_fallback(|| async {
            ApiError {
                status: 405,
                message: "method not allowed on this route".into(),
                kind: "invalid_request_error",
                param: None,
                code: Some("method_not_allowed"),
            }
        })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// With an API key configured, `/v1/*` needs `Authorization: Bearer <key>` (as vLLM).
async fn require_key(
    State(s): State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(key) = &s.api_key else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(key.as_str()) {
        next.run(req).await
    } else {
        ApiError {
            status: 401,
            message: "Unauthorized".into(),
            kind: "authentication_error",
            param: None,
            code: Some("invalid_api_key"),
        }
        .into_response()
    }
}
