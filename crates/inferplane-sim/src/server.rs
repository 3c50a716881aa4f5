//! The simulator's HTTP face on a real socket: vLLM's OpenAI-compatible routes, `/health`,
//! `/metrics`, and the `/sim/faults` control endpoint.
//!
//! [`SimServer::start`] binds (port 0 lets the OS choose), spawns the engine task and the
//! server, and returns a handle with the address and the fault controls.

use crate::driver::{self, EngineHandle, Output, SubmitError};
use crate::engine::{Engine, SeqInput};
use crate::faults::{FaultConfig, Faults, Verdict};
use crate::listener::FaultyListener;
use crate::metrics::SimMetrics;
use crate::openai::{ApiError, ChatRequest, CompletionRequest, Prompt, parse_error};
use crate::profile::EngineProfile;
use crate::respond::{AbortGuard, Answer, Api};
use crate::tokens;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

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
        }
    }
}

/// Errors starting a simulated engine.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The profile or faults are invalid.
    #[error("invalid simulator configuration: {0}")]
    Invalid(String),
    /// Binding the socket failed.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug)]
struct AppState {
    instance_id: HeaderValue,
    model: Arc<str>,
    engine: EngineHandle,
    faults: Faults,
    metrics: Arc<SimMetrics>,
    max_model_len: u32,
    default_max_tokens: u32,
    next_id: AtomicU64,
    api_key: Option<String>,
}

/// A running simulated engine.
#[derive(Debug)]
pub struct SimServer {
    addr: SocketAddr,
    faults: Faults,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl SimServer {
    /// Binds `addr`, starts the engine task and serves until shut down or dropped.
    pub async fn start(config: SimConfig, addr: SocketAddr) -> Result<SimServer, StartError> {
        config.profile.validate().map_err(StartError::Invalid)?;
        config.faults.validate().map_err(StartError::Invalid)?;
        if !(config.time_scale.is_finite() && config.time_scale > 0.0) {
            return Err(StartError::Invalid(format!(
                "time_scale must be positive, got {}",
                config.time_scale
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
        let engine = driver::spawn(
            Engine::new(config.profile, config.stop_seed),
            config.time_scale,
            faults.clone(),
            metrics.clone(),
        );
        let state = Arc::new(AppState {
            instance_id: HeaderValue::from_str(&config.instance_id).map_err(|_| {
                StartError::Invalid("instance id is not a valid header value".into())
            })?,
            model: Arc::from(config.model.as_str()),
            engine,
            faults: faults.clone(),
            metrics,
            max_model_len,
            default_max_tokens: config.default_max_tokens,
            next_id: AtomicU64::new(0),
            api_key: config.api_key.clone(),
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
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_key,
        ));
    Router::new()
        .merge(v1)
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route(
            "/sim/faults",
            get(get_faults)
                .put(set_faults)
                .post(set_faults)
                .delete(clear_faults),
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

fn body_error(e: BytesRejection) -> ApiError {
    let status = e.status().as_u16();
    ApiError {
        status,
        message: format!("cannot read the request body: {}", e.body_text()),
        kind: "invalid_request_error",
        param: None,
        code: (status == 413).then_some("request_too_large"),
    }
}

/// One validated completion job.
struct Job {
    api: Api,
    model: String,
    stream: bool,
    include_usage: bool,
    input: SeqInput,
}

async fn chat(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let job = (|| {
        let body = body.map_err(body_error)?;
        let req: ChatRequest = serde_json::from_slice(&body).map_err(|e| parse_error(&e))?;
        check_n(req.n)?;
        if req.messages.is_empty() {
            return Err(ApiError::bad_request(
                "messages must not be empty",
                Some("messages"),
            ));
        }
        let text = req.prompt_text();
        let max = req.max_completion_tokens.or(req.max_tokens);
        let prompt_tokens = tokens::count_tokens(&text);
        Ok(Job {
            api: Api::Chat,
            stream: req.stream.unwrap_or(false),
            include_usage: include_usage(&req.stream_options),
            input: SeqInput {
                prompt_tokens,
                block_hashes: tokens::block_hashes(&text),
                max_tokens: s.max_tokens(max, prompt_tokens, s.default_max_tokens)?,
                content_hash: tokens::content_hash(&text),
            },
            model: req.model,
        })
    })();
    run(s, headers, started, job).await
}

async fn completions(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let job = (|| {
        let body = body.map_err(body_error)?;
        let req: CompletionRequest = serde_json::from_slice(&body).map_err(|e| parse_error(&e))?;
        check_n(req.n)?;
        let (prompt_tokens, block_hashes, content_hash) = match &req.prompt {
            Prompt::Text(t) => (
                tokens::count_tokens(t),
                tokens::block_hashes(t),
                tokens::content_hash(t),
            ),
            Prompt::Texts(ts) if ts.len() == 1 => (
                tokens::count_tokens(&ts[0]),
                tokens::block_hashes(&ts[0]),
                tokens::content_hash(&ts[0]),
            ),
            Prompt::Ids(ids) => {
                let bytes: Vec<u8> = ids.iter().flat_map(|t| t.to_le_bytes()).collect();
                (
                    u32::try_from(ids.len()).unwrap_or(u32::MAX),
                    tokens::block_hashes_of_ids(ids),
                    xxhash_rust::xxh3::xxh3_64(&bytes),
                )
            }
            _ => {
                return Err(ApiError::bad_request(
                    "the simulator serves one prompt per request; send batched prompts as separate requests",
                    Some("prompt"),
                ));
            }
        };
        // OpenAI's documented default for legacy completions is 16 tokens.
        let max_tokens = s.max_tokens(req.max_tokens, prompt_tokens, 16)?;
        Ok(Job {
            api: Api::Completions,
            stream: req.stream.unwrap_or(false),
            include_usage: include_usage(&req.stream_options),
            input: SeqInput {
                prompt_tokens,
                block_hashes,
                max_tokens,
                content_hash,
            },
            model: req.model,
        })
    })();
    run(s, headers, started, job).await
}

fn check_n(n: Option<u32>) -> Result<(), ApiError> {
    match n {
        None | Some(1) => Ok(()),
        Some(n) => Err(ApiError::bad_request(
            format!("the simulator generates one choice per request, got n = {n}"),
            Some("n"),
        )),
    }
}

fn include_usage(opts: &Option<crate::openai::StreamOptions>) -> bool {
    opts.as_ref().and_then(|o| o.include_usage).unwrap_or(false)
}

impl AppState {
    fn max_tokens(&self, asked: Option<u32>, prompt: u32, default: u32) -> Result<u32, ApiError> {
        match asked {
            Some(0) => Err(ApiError::bad_request(
                "max_tokens must be at least 1",
                Some("max_tokens"),
            )),
            Some(n) => Ok(n),
            None => Ok(default
                .min(self.max_model_len.saturating_sub(prompt))
                .max(1)),
        }
    }
}

async fn run(
    s: Arc<AppState>,
    headers: HeaderMap,
    started: Instant,
    job: Result<Job, ApiError>,
) -> Response {
    let mut resp = match serve(&s, started, job).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    let h = resp.headers_mut();
    h.insert("x-inferplane-instance", s.instance_id.clone());
    if let Some(id) = headers.get("x-request-id") {
        h.insert("x-request-id", id.clone());
    }
    resp
}

async fn serve(
    s: &Arc<AppState>,
    started: Instant,
    job: Result<Job, ApiError>,
) -> Result<Response, ApiError> {
    let job = job?;
    if job.model != *s.model {
        return Err(ApiError::model_not_found(&job.model, &s.model));
    }
    if let Verdict::Fail(status) = s.faults.admit() {
        return Err(ApiError::injected(status));
    }
    let faults = s.faults.get();
    if faults.hang_before_first_token {
        std::future::pending::<()>().await;
    }
    let (tx, rx) = mpsc::unbounded_channel::<Output>();
    let prompt_tokens = job.input.prompt_tokens;
    let content_hash = job.input.content_hash;
    let id = s.engine.submit(job.input, tx).await.map_err(|e| match e {
        SubmitError::Refused(e) => ApiError::bad_request(e.to_string(), Some("messages")),
        SubmitError::Stopped => ApiError {
            status: 503,
            message: e.to_string(),
            kind: "server_error",
            param: None,
            code: None,
        },
    })?;
    let n = s.next_id.fetch_add(1, Ordering::Relaxed);
    let answer = Answer {
        api: job.api,
        id: match job.api {
            Api::Chat => format!("chatcmpl-{}-{n}", s.instance_id.to_str().unwrap_or("sim")),
            Api::Completions => format!("cmpl-{}-{n}", s.instance_id.to_str().unwrap_or("sim")),
        },
        model: s.model.clone(),
        created: unix_now(),
        prompt_tokens,
        content_hash,
        include_usage: job.include_usage,
        hang_after: faults.hang_after_tokens,
        started,
        metrics: s.metrics.clone(),
        guard: AbortGuard::new(s.engine.clone(), id),
    };
    if job.stream {
        let body = Body::from_stream(answer.stream(rx));
        Ok((
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response())
    } else {
        match answer.collect(rx).await {
            Some(v) => Ok(axum::Json(v).into_response()),
            None => {
                // A hang fault, or the engine stopped: never answer (the client times out).
                std::future::pending::<()>().await;
                Err(ApiError::injected(500))
            }
        }
    }
}

/// Unix seconds for the OpenAI `created` field; never used for any decision.
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn models(State(s): State<Arc<AppState>>) -> Response {
    axum::Json(serde_json::json!({
        "object": "list",
        "data": [{
            "id": &*s.model,
            "object": "model",
            "created": unix_now(),
            "owned_by": "inferplane-sim",
            "root": &*s.model,
            "max_model_len": s.max_model_len,
        }]
    }))
    .into_response()
}

async fn health(State(s): State<Arc<AppState>>) -> Response {
    if s.faults.get().unhealthy {
        ApiError {
            status: 503,
            message: "simulated engine reports unhealthy".into(),
            kind: "server_error",
            param: None,
            code: Some("unhealthy"),
        }
        .into_response()
    } else {
        StatusCode::OK.into_response()
    }
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

async fn get_faults(State(s): State<Arc<AppState>>) -> Response {
    axum::Json(s.faults.get()).into_response()
}

async fn set_faults(
    State(s): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let res = (|| {
        let body = body.map_err(body_error)?;
        let cfg: FaultConfig = if body.is_empty() {
            FaultConfig::default()
        } else {
            serde_json::from_slice(&body).map_err(|e| parse_error(&e))?
        };
        cfg.validate().map_err(|m| ApiError::bad_request(m, None))?;
        Ok::<_, ApiError>(cfg)
    })();
    match res {
        Ok(cfg) => {
            s.faults.set(cfg.clone());
            axum::Json(cfg).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn clear_faults(State(s): State<Arc<AppState>>) -> Response {
    s.faults.set(FaultConfig::default());
    axum::Json(FaultConfig::default()).into_response()
}
