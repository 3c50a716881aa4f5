//! The simulator's request handlers: chat and legacy completions (validation, admission,
//! fault injection, JSON or SSE answers), `/v1/models`, `/health`, `/metrics` and the
//! `/sim/faults` control endpoint.
//!
//! Simulator convention: a request's `min_tokens = m` (vLLM's sampling parameter) makes the
//! simulated model emit its end-of-sequence token as soon as `min_tokens` allows, so the
//! answer has exactly `m` tokens (`finish_reason` `stop` below `max_tokens`, `length` at
//! it), whatever `--stop-seed` says. Benchmark clients use it to state a request's true
//! output length while the gateway sees only `max_tokens`, a cap. `min_tokens` must be a
//! non-negative integer no larger than `max_tokens` (400 otherwise); `0` means no minimum.
//!
//! `/v1/models` answers vLLM's model card, `max_model_len` included, so a gateway can
//! read the engine's context limit from it as from vLLM.

use crate::driver::{Output, SubmitError};
use crate::engine::{AddError, SeqInput};
use crate::faults::{FaultConfig, Verdict};
use crate::openai;
use crate::openai::{ApiError, ChatRequest, CompletionRequest, Prompt, parse_error};
use crate::prompt::{Prompted, real};
use crate::respond::{AbortGuard, Answer, Api};
use crate::server::AppState;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;
use tokio::time::Instant;

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
    /// Exact output length when above 0 (see the module docs).
    min_tokens: u32,
}

pub(crate) async fn chat(
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
        let prompted = match s.tokenizer.as_deref() {
            Some(tk) => {
                let m: crate::prompt::Messages =
                    serde_json::from_slice(&body).map_err(|e| parse_error(&e))?;
                real(tk, tk.chat_ids(&m.messages), || req.prompt_text())
            }
            None => Prompted::stand_in(&req.prompt_text()),
        };
        let max = req.max_completion_tokens.or(req.max_tokens);
        let max_tokens = s.max_tokens(max, prompted.prompt_tokens, s.default_max_tokens)?;
        Ok(Job {
            api: Api::Chat,
            stream: req.stream.unwrap_or(false),
            include_usage: include_usage(&req.stream_options),
            min_tokens: openai::min_tokens(req.min_tokens.as_ref(), max_tokens)?,
            input: prompted.input(max_tokens),
            model: req.model,
        })
    })();
    run(s, headers, started, job).await
}

pub(crate) async fn completions(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let job = (|| {
        let body = body.map_err(body_error)?;
        let req: CompletionRequest = serde_json::from_slice(&body).map_err(|e| parse_error(&e))?;
        check_n(req.n)?;
        let text = match &req.prompt {
            Prompt::Text(t) => Some(t),
            Prompt::Texts(ts) if ts.len() == 1 => Some(&ts[0]),
            _ => None,
        };
        let prompted = match (&req.prompt, text, s.tokenizer.as_deref()) {
            (_, Some(t), Some(tk)) => real(tk, tk.completion_ids(t), || t.clone()),
            (_, Some(t), None) => Prompted::stand_in(t),
            (Prompt::Ids(ids), _, _) => Prompted::of_ids(ids),
            _ => {
                return Err(ApiError::bad_request(
                    "the simulator serves one prompt per request; send batched prompts as separate requests",
                    Some("prompt"),
                ));
            }
        };
        // OpenAI's documented default for legacy completions is 16 tokens.
        let max_tokens = s.max_tokens(req.max_tokens, prompted.prompt_tokens, 16)?;
        Ok(Job {
            api: Api::Completions,
            stream: req.stream.unwrap_or(false),
            include_usage: include_usage(&req.stream_options),
            min_tokens: openai::min_tokens(req.min_tokens.as_ref(), max_tokens)?,
            input: prompted.input(max_tokens),
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
    let id = s
        .engine
        .submit(job.input, job.min_tokens, tx)
        .await
        .map_err(|e| match e {
            SubmitError::Refused(e @ AddError::MinTokensAboveMax { .. }) => {
                ApiError::bad_request(e.to_string(), Some("min_tokens"))
            }
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

/// vLLM's model list: one model card, with `max_model_len` and vLLM's permission object.
pub(crate) async fn models(State(s): State<Arc<AppState>>) -> Response {
    let created = unix_now();
    let instance = s.instance_id.to_str().unwrap_or("sim");
    axum::Json(serde_json::json!({
        "object": "list",
        "data": [{
            "id": &*s.model,
            "object": "model",
            "created": created,
            "owned_by": "inferplane-sim",
            "root": &*s.model,
            "parent": null,
            "max_model_len": s.max_model_len,
            "permission": [{
                "id": format!("modelperm-{instance}"),
                "object": "model_permission",
                "created": created,
                "allow_create_engine": false,
                "allow_sampling": true,
                "allow_logprobs": true,
                "allow_search_indices": false,
                "allow_view": true,
                "allow_fine_tuning": false,
                "organization": "*",
                "group": null,
                "is_blocking": false,
            }],
        }]
    }))
    .into_response()
}

pub(crate) async fn health(State(s): State<Arc<AppState>>) -> Response {
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

/// vLLM's `POST /reset_prefix_cache`: 200 when emptied, 400 while requests hold blocks.
pub(crate) async fn reset_prefix_cache(State(s): State<Arc<AppState>>) -> Response {
    match s.engine.reset_prefix_cache().await {
        Ok(true) => StatusCode::OK.into_response(),
        Ok(false) => ApiError::bad_request(
            "the prefix cache is in use by running requests; retry when idle",
            None,
        )
        .into_response(),
        Err(e) => ApiError {
            status: 503,
            message: e.to_string(),
            kind: "server_error",
            param: None,
            code: None,
        }
        .into_response(),
    }
}

pub(crate) async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

pub(crate) async fn get_faults(State(s): State<Arc<AppState>>) -> Response {
    axum::Json(s.faults.get()).into_response()
}

pub(crate) async fn set_faults(
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
        cfg.validate()
            .map_err(|e| ApiError::bad_request(e.to_string(), Some(e.field)))?;
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

pub(crate) async fn clear_faults(State(s): State<Arc<AppState>>) -> Response {
    s.faults.set(FaultConfig::default());
    axum::Json(FaultConfig::default()).into_response()
}
