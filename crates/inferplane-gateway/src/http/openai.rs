//! The OpenAI routes: `POST /v1/chat/completions`, `POST /v1/completions` and
//! `GET /v1/models`. A request is parsed once, described by a `RequestMeta`, queued, placed
//! by the dispatcher, and sent to its instance with the client's original bytes. Connect
//! errors, 502/503/504 and timeouts before the first byte are retried on another instance
//! with backoff; once a byte reached the client nothing is retried.

use super::AppState;
use crate::backend::{self, AttemptError, usage_of};
use crate::dispatcher::Assignment;
use crate::error::ApiError;
use crate::meta::{BodyMeta, HeaderMeta, body_with_usage, headers};
use crate::plane_error::PlaneError;
use crate::relay::{Relay, RelayParams};
use crate::telemetry::Route;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use inferplane_core::{Outcome, RequestMeta};
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use tokio::time::Instant;

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    proxy(s, Route::chat_completions, headers, body).await
}

/// `POST /v1/completions`.
pub async fn completions(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    proxy(s, Route::completions, headers, body).await
}

/// `GET /v1/models`: every pool's model.
pub async fn models(State(s): State<Arc<AppState>>) -> Response {
    let data: Vec<serde_json::Value> = s
        .cp
        .models()
        .into_iter()
        .map(|m| serde_json::json!({"id": m, "object": "model", "created": 0, "owned_by": "inferplane"}))
        .collect();
    axum::Json(serde_json::json!({"object": "list", "data": data})).into_response()
}

async fn proxy(s: Arc<AppState>, route: Route, headers: HeaderMap, body: Body) -> Response {
    let arrival = Instant::now();
    let mut known = Known::default();
    let mut resp = handle(&s, route, &headers, body, arrival, &mut known)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    if let Some(id) = known
        .request_id
        .and_then(|id| HeaderValue::from_str(&id).ok())
    {
        resp.headers_mut().insert(headers::REQUEST_ID, id);
    }
    if let Some(standing) = &known.standing {
        super::limits::add_headers(resp.headers_mut(), standing);
    }
    resp
}

/// What the edge learned of a request, for its response's headers whatever the outcome.
#[derive(Debug, Default)]
struct Known {
    request_id: Option<String>,
    /// Its tenant's standing against its limits, if limited.
    standing: Option<crate::tenants::Standing>,
}

/// Counts a request refused before it reached a pool and passes its error on.
fn invalid(s: &AppState, route: Route, e: ApiError) -> ApiError {
    s.cp.telemetry().invalid_request(route);
    e
}

async fn handle(
    s: &Arc<AppState>,
    route: Route,
    headers: &HeaderMap,
    body: Body,
    arrival: Instant,
    known: &mut Known,
) -> Result<Response, ApiError> {
    let cfg = s.cp.config();
    let mut hm = HeaderMeta::parse(
        headers,
        cfg.default_priority,
        super::request_id::new_request_id,
    )
    .map_err(|e| invalid(s, route, e))?;
    known.request_id = Some(hm.request_id.clone());
    let caller = s.tenants.authenticate(headers).map_err(|e| {
        s.cp.telemetry().auth_failed(e.reason());
        invalid(s, route, ApiError::invalid_api_key(e.to_string()))
    })?;
    if let Some(c) = &caller {
        let asked = headers
            .contains_key(headers::PRIORITY)
            .then_some(hm.priority);
        hm.priority = c.priority(asked, cfg.default_priority);
    }
    let client = &cfg.client;
    let body = super::body::read(body, cfg.max_body_bytes, client.body_read_timeout)
        .await
        .map_err(|e| invalid(s, route, e))?;
    let bm = BodyMeta::parse(&body).map_err(|e| invalid(s, route, e))?;
    if let Some(c) = caller.filter(|c| !c.allows(&bm.model)) {
        let e = ApiError::model_not_allowed(&bm.model, &c.tenant.id);
        return Err(invalid(s, route, e));
    }
    let Some(pool) = s.cp.pool(&bm.model) else {
        let unknown = PlaneError::UnknownModel {
            model: bm.model.clone(),
            known: s.cp.models(),
        };
        return Err(invalid(s, route, unknown.into()));
    };
    let stream = bm.stream.unwrap_or(false);
    let forward = if stream {
        body_with_usage(&body, &bm)?
    } else {
        body.clone()
    };
    let prompt = crate::prompt::facts(
        &bm.model,
        &bm,
        cfg.tokenizer_for(&bm.model),
        Some(&pool.blocks),
    );
    let prompt_estimate = prompt.prompt_tokens;
    let meta = RequestMeta {
        id: s.cp.next_request_id(),
        model: bm.model.clone(),
        priority: hm.priority,
        deadline: hm.deadline,
        ttft_target: hm.ttft_target,
        cost_budget: hm.cost_budget,
        max_tokens: bm.max_tokens().unwrap_or(cfg.default_max_tokens),
        max_tokens_requested: bm.max_tokens(),
        prompt_tokens: prompt_estimate,
        session: hm.session.clone().or_else(|| bm.user.clone()),
        prefix_hash: bm.prefix_hash(),
        prefix_blocks: prompt.blocks,
        parallelism_hint: hm.parallelism_hint,
        arrival: s.cp.clock().at(arrival),
        tenant: caller.map(|c| c.id),
    };
    let reservation = match s.cp.limiter().admit(&meta, crate::tenants::now_ms()).await {
        Ok(r) => r.map(Arc::new),
        Err(refused) => {
            known.standing = Some(refused.standing);
            let tenant = caller.map_or("", |c| c.tenant.id.as_str());
            // the access log's line for a request that never reached a pool
            tracing::info!(
                request_id = hm.request_id.as_str(),
                id = meta.id.0,
                model = %meta.model,
                route = ?route,
                priority = meta.priority.as_str(),
                tenant,
                outcome = "rate_limited",
                reason = refused.refusal.reason(),
                "request refused by its tenant's limits"
            );
            return Err(super::limits::refused(&refused, tenant));
        }
    };
    known.standing = reservation.as_ref().map(|r| r.standing);
    let strip_usage = stream && !bm.wants_usage();
    drop(bm);
    // a stream forwards a copy (with usage asked for): the original must not be held too
    // while the request waits and runs
    drop(body);
    let exec = Exec {
        s,
        timeouts: cfg.timeouts_for(&meta.model),
        route,
        request_id: &hm.request_id,
        body: forward,
        stream,
        strip_usage,
        arrival,
        prompt_estimate,
        reservation,
    };
    exec.run(meta).await
}

struct Exec<'a> {
    s: &'a Arc<AppState>,
    /// The pool's attempt timeouts.
    timeouts: &'a crate::config::TimeoutSection,
    route: Route,
    request_id: &'a str,
    body: Bytes,
    stream: bool,
    strip_usage: bool,
    arrival: Instant,
    prompt_estimate: u32,
    /// The tenant's reservation against its limits: settled when the last holder (this,
    /// or the stream relaying the answer) drops it.
    reservation: Option<Arc<crate::tenants::Reservation>>,
}

impl Exec<'_> {
    async fn run(self, meta: RequestMeta) -> Result<Response, ApiError> {
        let cp = &self.s.cp;
        let retry = &cp.config().retry;
        // Jitter only: seeded per request, no decision depends on it.
        let mut rng = rand::rngs::SmallRng::seed_from_u64(meta.id.0);
        let tag: std::sync::Arc<str> = std::sync::Arc::from(self.request_id);
        let mut assignment = cp
            .submit_with_id(meta.clone(), self.route, tag.clone())
            .await?;
        let mut attempt = 1;
        // where attempts failed: a retry avoids all of them while another has room
        let mut tried = Vec::new();
        loop {
            tried.push(assignment.backend.spec.id.clone());
            let failed_attempt = assignment.guard.attempt();
            let may_retry = attempt < retry.max_attempts;
            match self.attempt(assignment, may_retry).await {
                Ok(resp) => return Ok(resp),
                Err(e) if e.retryable => {
                    tracing::warn!(request_id = self.request_id, attempt, error = %e.error, "retrying on another instance");
                    let exp = retry
                        .backoff_base
                        .saturating_mul(1 << (attempt - 1).min(16));
                    let backoff = exp.min(retry.backoff_max);
                    let jitter = rng.random_range(0.5..=1.0);
                    tokio::time::sleep(backoff.mul_f64(jitter)).await;
                    attempt += 1;
                    assignment = cp
                        .retry_with_id(
                            meta.clone(),
                            self.route,
                            failed_attempt,
                            tried.clone(),
                            tag.clone(),
                        )
                        .await?;
                }
                Err(e) => return Ok(e.response),
            }
        }
    }

    /// One attempt. On failure, the attempt has been reported and `response` is what the
    /// client gets if no retry follows.
    async fn attempt(&self, a: Assignment, may_retry: bool) -> Result<Response, Failed> {
        let t = self.timeouts;
        let Assignment {
            backend,
            guard,
            prefix,
            ..
        } = a;
        let instance_header = HeaderValue::from_str(backend.spec.id.as_str()).ok();
        // one budget for the whole request, not one per attempt
        let deadline = self.arrival + t.total;
        // the shutdown grace running out ends a wait on the engine too, not only streams
        let mut cut = self.s.cp.cut_signal();
        let sending = tokio::time::timeout_at(
            deadline,
            backend::send(
                self.s.cp.http(),
                &backend,
                self.route,
                self.body.clone(),
                self.request_id,
                t,
            ),
        );
        let Some(sent) = unless_cut(&mut cut, sending).await else {
            guard.finish(Outcome::Failed { retrying: false });
            return Err(Failed::cut());
        };
        let sent = sent.unwrap_or_else(|_| {
            Err(AttemptError::TotalTimeout {
                instance: backend.spec.id.to_string(),
                timeout: t.total,
            })
        });
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                // A retry is decided by the caller; report "retrying" only if it can happen.
                let will_retry = e.is_retryable() && may_retry;
                guard.finish(if e.is_instance_fault() {
                    Outcome::Failed {
                        retrying: will_retry,
                    }
                } else {
                    Outcome::ClientError
                });
                return Err(Failed::from_attempt(e, will_retry));
            }
        };
        let status = resp.status();
        let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
        let is_sse = content_type
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let mut out = if self.stream && is_sse {
            let params = RelayParams {
                arrival: self.arrival,
                strip_usage: self.strip_usage,
                first_event_timeout: t.first_byte,
                idle_timeout: t.idle,
                deadline,
                prompt_estimate: self.prompt_estimate,
            };
            let cut = self.s.cp.cut_signal();
            match Relay::start(resp, guard, params, cut, self.reservation.clone()).await {
                Ok(relay) => {
                    let mut r = Response::new(Body::from_stream(relay.into_stream()));
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/event-stream"),
                    );
                    r.headers_mut()
                        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                    r
                }
                Err(f) => {
                    let will_retry = may_retry;
                    f.guard.finish(Outcome::Failed {
                        retrying: will_retry,
                    });
                    let msg = format!("instance {}: {}", backend.spec.id, f.reason);
                    return Err(Failed {
                        retryable: will_retry,
                        error: msg.clone(),
                        response: if f.timed_out {
                            ApiError {
                                status: StatusCode::GATEWAY_TIMEOUT,
                                code: "upstream_timeout",
                                ..ApiError::upstream(msg)
                            }
                        } else {
                            ApiError::upstream(msg)
                        }
                        .into_response(),
                    });
                }
            }
        } else {
            let left = deadline.saturating_duration_since(Instant::now());
            let reading = tokio::time::timeout(
                left,
                backend::read_answer(resp, backend.spec.id.as_str(), t.idle),
            );
            let Some(read) = unless_cut(&mut cut, reading).await else {
                guard.finish(Outcome::Failed { retrying: false });
                return Err(Failed::cut());
            };
            match read {
                Ok(Ok(bytes)) => {
                    let usage = usage_of(&bytes).unwrap_or(backend::Usage {
                        prompt_tokens: self.prompt_estimate,
                        completion_tokens: 0,
                        cached_tokens: None,
                    });
                    if let Some(r) = &self.reservation {
                        r.answered(usage.prompt_tokens, usage.completion_tokens);
                    }
                    guard.finish(Outcome::Success {
                        prompt_tokens: usage.prompt_tokens,
                        completion_tokens: usage.completion_tokens,
                        cached_tokens: usage.cached_tokens,
                        // The client sees its first token with the whole answer.
                        first_token: None,
                        latency: self.arrival.elapsed(),
                    });
                    let mut r = Response::new(Body::from(bytes));
                    *r.status_mut() = status;
                    if let Some(ct) = content_type {
                        r.headers_mut().insert(header::CONTENT_TYPE, ct);
                    }
                    r
                }
                Ok(Err(e)) => {
                    let will_retry = may_retry;
                    guard.finish(Outcome::Failed {
                        retrying: will_retry,
                    });
                    return Err(Failed::from_attempt(e, will_retry));
                }
                Err(_) => {
                    guard.finish(Outcome::Failed { retrying: false });
                    let e = AttemptError::TotalTimeout {
                        instance: backend.spec.id.to_string(),
                        timeout: t.total,
                    };
                    return Err(Failed::from_attempt(e, false));
                }
            }
        };
        if let Some(h) = instance_header {
            out.headers_mut().insert(headers::INSTANCE, h);
        }
        if let Some(h) = prefix.and_then(|n| prefix_header(&n)) {
            out.headers_mut().insert(headers::PREFIX, h);
        }
        Ok(out)
    }
}

/// The `x-inferplane-prefix` value: prompt tokens cached where it went, the most cached
/// anywhere, and why it went there.
fn prefix_header(n: &inferplane_core::route::PrefixNote) -> Option<HeaderValue> {
    let v = format!(
        "matched={}; best={}; reason={}",
        n.matched_tokens,
        n.best_tokens,
        n.reason.as_str()
    );
    HeaderValue::from_str(&v).ok()
}

/// A failed attempt: whether to retry, and the client's answer otherwise.
struct Failed {
    retryable: bool,
    error: String,
    response: Response,
}

/// Waits for `fut`, unless the shutdown grace runs out first (`None`): a request still
/// waiting on its engine then gets the gateway's own 503 instead of an answer that would
/// come after the gateway is gone.
async fn unless_cut<F: std::future::Future>(
    cut: &mut tokio::sync::watch::Receiver<bool>,
    fut: F,
) -> Option<F::Output> {
    tokio::select! {
        out = fut => Some(out),
        Ok(_) = cut.wait_for(|c| *c) => None,
    }
}

impl Failed {
    /// The attempt was ended by the shutdown grace running out: not retried.
    fn cut() -> Self {
        Failed {
            retryable: false,
            error: "the gateway is shutting down".into(),
            response: ApiError::from(PlaneError::ShuttingDown).into_response(),
        }
    }

    fn from_attempt(e: AttemptError, retryable: bool) -> Self {
        let error = e.to_string();
        let response = match e {
            // The engine's own error (OpenAI-shaped from vLLM and SGLang) goes to the client.
            AttemptError::Status {
                status,
                body,
                content_type,
                ..
            } if !body.is_empty() => {
                let mut r = Response::new(Body::from(body));
                *r.status_mut() = status;
                if let Some(ct) = content_type {
                    r.headers_mut().insert(header::CONTENT_TYPE, ct);
                }
                r
            }
            AttemptError::FirstByteTimeout { .. }
            | AttemptError::IdleTimeout { .. }
            | AttemptError::TotalTimeout { .. } => ApiError {
                status: StatusCode::GATEWAY_TIMEOUT,
                code: "upstream_timeout",
                ..ApiError::upstream(error.clone())
            }
            .into_response(),
            _ => ApiError::upstream(error.clone()).into_response(),
        };
        Failed {
            retryable,
            error,
            response,
        }
    }
}
