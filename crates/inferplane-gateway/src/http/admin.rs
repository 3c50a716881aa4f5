//! The admin API: `GET/POST /admin/instances`, `DELETE /admin/instances/{id}`,
//! `POST /admin/instances/{id}/drain`, `GET /admin/metrics`, `GET/PUT /admin/policy`, and
//! the tenant routes of `tenants_admin.rs` (tenants, usage, keys). It requires
//! `Authorization: Bearer <token>` when a token is configured; without one it answers only
//! when the gateway listens on a loopback address, and says so otherwise. Requests that
//! change something are refused (403) when a browser sends them from another origin, and
//! need a JSON body when they have one, token or not: a web page must not drive the admin
//! API of a gateway on the same machine (a cross-origin `text/plain` POST needs no CORS
//! preflight).

use super::AppState;
use crate::config::{InstanceSection, engine_override, instance_spec, kv_events_of};
use crate::dispatcher::{InstanceView, MetricsView, PolicyChange};
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use inferplane_core::InstanceId;
use serde::Deserialize;
use std::sync::Arc;

/// The admin routes, behind the token check.
pub fn routes(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/instances", get(list).post(register))
        .route("/admin/instances/{id}", delete(remove))
        .route("/admin/instances/{id}/drain", post(drain))
        .route("/admin/metrics", get(metrics))
        .route("/admin/policy", get(get_policy).put(put_policy))
        .route("/admin/tenants", get(super::tenants_admin::list))
        .route(
            "/admin/tenants/{id}/usage",
            get(super::tenants_admin::usage),
        )
        .route(
            "/admin/tenants/{id}/keys",
            get(super::tenants_admin::keys).post(super::tenants_admin::create),
        )
        .route("/admin/keys/{id}", delete(super::tenants_admin::revoke))
        .route_layer(middleware::from_fn_with_state(state, guard))
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a state-changing admin request from a browser is refused, if it is: an `Origin`
/// other than the `Host` it was sent to, or a body that is not JSON.
fn cross_site(req: &Request) -> Option<&'static str> {
    if matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    ) {
        return None;
    }
    let h = req.headers();
    if let Some(origin) = h.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("null");
        let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
        let origin_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        if origin_host.is_none() || origin_host != host {
            return Some("the admin API refuses requests from another origin");
        }
    }
    let has_body = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|n| n != "0")
        || h.contains_key(header::TRANSFER_ENCODING);
    let json = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim_start().starts_with("application/json"));
    (has_body && !json).then_some("the admin API takes `content-type: application/json` bodies")
}

async fn guard(
    State(s): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(why) = cross_site(&req) {
        return Err(ApiError::forbidden(why));
    }
    match &s.cp.config().admin_token {
        Some(token) => {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            match given {
                Some(g) if same(g.trim().as_bytes(), token.as_bytes()) => Ok(next.run(req).await),
                Some(_) => Err(ApiError::unauthorized("the admin token is wrong")),
                None => Err(ApiError::unauthorized(
                    "the admin API needs an `Authorization: Bearer <token>` header",
                )),
            }
        }
        None if s.loopback => Ok(next.run(req).await),
        None => Err(ApiError::forbidden(format!(
            "the admin API is off: no admin token is configured and the gateway listens on {}, \
             which is not a loopback address; set [admin] token in the config or INFERPLANE_ADMIN_TOKEN",
            s.listen
        ))),
    }
}

async fn list(State(s): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    let v = s.cp.instances().await?;
    Ok(Json(serde_json::json!({ "instances": v })))
}

/// `POST /admin/instances` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    model: String,
    #[serde(flatten)]
    instance: InstanceSection,
}

async fn register(
    State(s): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<InstanceView>), ApiError> {
    let body = body.map_err(|e| ApiError::bad_request(e.body_text(), None))?;
    let b: RegisterBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid instance: {e}"), None))?;
    if b.model.trim().is_empty() {
        return Err(ApiError::bad_request(
            "model must not be empty",
            Some("model"),
        ));
    }
    let default_inflight = s.cp.config().max_inflight_for(&b.model);
    let field_error = |(field, msg): (&'static str, String)| {
        ApiError::bad_request(format!("{field}: {msg}"), Some(field))
    };
    let spec = instance_spec(&b.instance, &b.model, default_inflight).map_err(field_error)?;
    let engine = engine_override(&b.instance).map_err(field_error)?;
    let kv_events = kv_events_of(&b.instance).map_err(field_error)?;
    let secret = match &b.instance.api_key {
        Some(key) => Some(
            crate::config::Secret::resolve(key)
                .map_err(|m| ApiError::bad_request(format!("api_key: {m}"), Some("api_key")))?,
        ),
        None => None,
    };
    let view =
        s.cp.register_instance_with_kv_events(spec, secret, engine, kv_events)
            .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn remove(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<InstanceView>, ApiError> {
    Ok(Json(s.cp.remove_instance(&InstanceId::new(id)).await?))
}

async fn drain(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<InstanceView>, ApiError> {
    Ok(Json(s.cp.drain_instance(&InstanceId::new(id)).await?))
}

async fn metrics(State(s): State<Arc<AppState>>) -> Result<Json<MetricsView>, ApiError> {
    Ok(Json(s.cp.metrics().await?))
}

async fn get_policy(State(s): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    let v = s.cp.policies().await?;
    Ok(Json(serde_json::json!({ "pools": v })))
}

/// `PUT /admin/policy`: `{"model"?, "policy"?, "routing"?, "balancing"?}`, e.g.
/// `{"policy": {"kind": "priority", "aging_step": "2s"}}` or
/// `{"model": "m", "balancing": {"kind": "power_of_two"}}`.
async fn put_policy(
    State(s): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = body.map_err(|e| ApiError::bad_request(e.body_text(), None))?;
    let change: PolicyChange = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid policy change: {e}"), None))?;
    if change.policy.is_none() && change.routing.is_none() && change.balancing.is_none() {
        return Err(ApiError::bad_request(
            "nothing to change: give policy, routing and/or balancing",
            None,
        ));
    }
    let v = s.cp.set_policy(change).await?;
    Ok(Json(serde_json::json!({ "pools": v })))
}

#[cfg(test)]
mod tests {
    #[test]
    fn token_comparison_needs_equal_bytes() {
        assert!(super::same(b"abc", b"abc"));
        assert!(!super::same(b"abc", b"abd"));
        assert!(!super::same(b"abc", b"ab"));
    }
}
