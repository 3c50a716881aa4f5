//! The admin API's tenant routes (behind the admin token, like the rest of `/admin`):
//! `GET /admin/tenants` (each tenant's settings, keys (never a secret or digest), this
//! replica's totals and with `[shared]` the fleet's: what the dashboard's top tenants
//! are ranked by),
//! `GET /admin/tenants/{id}/usage`, `GET/POST /admin/tenants/{id}/keys` (a new key's
//! secret is in the creating answer only) and `DELETE /admin/keys/{id}` (revoked: 401 from
//! then on). Keys made here live in this process only (a restart goes back to the
//! config), unless `[shared]` is set: then a change is made in Redis first (503 if Redis
//! does not take it) and every replica reads the fleet's keys every second.

use super::AppState;
use crate::error::ApiError;
use crate::tenants::KeyAdminError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;

/// `GET /admin/tenants`.
pub async fn list(State(s): State<Arc<AppState>>) -> Json<Value> {
    let fleet = s.cp.limiter().fleet_totals().await;
    let tenants: Vec<Value> = s
        .tenants
        .list()
        .iter()
        .map(|t| {
            let mut v = json!({
                "id": t.id,
                "weight": t.weight,
                "default_priority": t.default_priority,
                "max_priority": t.max_priority,
                "models": t.models,
                "limits": t.limits,
                "keys": s.tenants.keys(Some(&t.id)),
                "totals": s.cp.limiter().totals(&t.id),
            });
            if let Some(f) = fleet.as_ref().and_then(|f| f.get(&t.id)) {
                v["fleet_totals"] = json!(f);
            }
            v
        })
        .collect();
    Json(json!({ "tenants": tenants, "keys_required": s.tenants.required() }))
}

/// `GET /admin/tenants/{id}/usage`.
pub async fn usage(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<crate::tenants::TenantUsage>, ApiError> {
    s.cp.limiter()
        .usage(&id, crate::tenants::now_ms())
        .await
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no tenant is named {id:?}")))
}

/// `GET /admin/tenants/{id}/keys`.
pub async fn keys(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if s.tenants.position(&id).is_none() {
        return Err(admin_error(KeyAdminError::UnknownTenant(id)));
    }
    Ok(Json(json!({ "keys": s.tenants.keys(Some(&id)) })))
}

/// `POST /admin/tenants/{id}/keys` with `{}` or `{"name": "<label>"}`: 201 with the key.
pub async fn create(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.map_err(|e| ApiError::bad_request(e.body_text(), None))?;
    let name = key_name(&body)?;
    let made = s
        .tenants
        .prepare_key(&id, name, fresh_secret())
        .map_err(admin_error)?;
    if let Some(store) = &s.keystore {
        let stored = crate::tenants::StoredKey {
            id: made.entry.id.clone(),
            tenant: made.entry.tenant.clone(),
            name: made.entry.name.clone(),
        };
        store
            .put(&made.digest, &stored)
            .await
            .map_err(|e| admin_error(KeyAdminError::Store(e)))?;
    }
    s.tenants.insert(&made);
    tracing::info!(tenant = %id, key = %made.entry.id, "API key created through the admin API");
    let mut v = serde_json::to_value(&made.entry).unwrap_or_else(|_| json!({}));
    v["key"] = Value::String(made.secret);
    v["note"] = if s.keystore.is_some() {
        "this is the only time the key is shown; every replica takes it within a second"
    } else {
        "this is the only time the key is shown; it lasts until this process restarts"
    }
    .into();
    Ok((StatusCode::CREATED, Json(v)))
}

/// `DELETE /admin/keys/{id}`.
pub async fn revoke(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (digest, gone) = s.tenants.lookup(&id).map_err(admin_error)?;
    if let Some(store) = &s.keystore {
        store
            .revoke(&digest)
            .await
            .map_err(|e| admin_error(KeyAdminError::Store(e)))?;
    }
    s.tenants.remove(&digest);
    tracing::info!(tenant = %gone.tenant, key = %gone.id, "API key revoked through the admin API");
    Ok(Json(json!({ "revoked": gone })))
}

fn admin_error(e: KeyAdminError) -> ApiError {
    match e {
        KeyAdminError::Store(_) => {
            tracing::warn!(error = %e, "an API key change was refused: the shared store failed");
            ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: e.to_string(),
                kind: "server_error",
                param: None,
                code: "shared_store_unavailable",
                retry_after: Some(1),
            }
        }
        _ => ApiError::not_found(e.to_string()),
    }
}

/// The optional `name` of a key-creation body: an empty body or `{}` is none; anything
/// else is refused naming the field.
fn key_name(body: &[u8]) -> Result<Option<String>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}"), None))?;
    let Value::Object(fields) = v else {
        return Err(ApiError::bad_request(
            "the body must be a JSON object such as {\"name\": \"ci\"}",
            None,
        ));
    };
    let mut name = None;
    for (k, v) in fields {
        match (k.as_str(), v) {
            ("name", Value::Null) => {}
            ("name", Value::String(n)) => {
                let ok = !n.is_empty()
                    && n.len() <= 64
                    && n.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
                if !ok {
                    return Err(ApiError::bad_request(
                        "name: must be 1 to 64 printable ASCII characters",
                        Some("name"),
                    ));
                }
                name = Some(n);
            }
            ("name", _) => {
                return Err(ApiError::bad_request(
                    "name: must be a string",
                    Some("name"),
                ));
            }
            (other, _) => {
                return Err(ApiError::bad_request(
                    format!("{other}: unknown field (a key takes only `name`)"),
                    Some(other),
                ));
            }
        }
    }
    Ok(name)
}

/// A new key: `ipk-` and 64 hex digits, 256 bits from the OS's generator (UUIDv4 draws
/// from it: 122 random bits each, so three of them).
fn fresh_secret() -> String {
    let mut s = String::from("ipk-");
    for _ in 0..3 {
        s.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_bodies_are_checked_naming_the_field() {
        assert_eq!(key_name(b"").unwrap(), None);
        assert_eq!(key_name(b"{}").unwrap(), None);
        assert_eq!(key_name(br#"{"name":"ci"}"#).unwrap(), Some("ci".into()));
        for (body, param) in [
            (&br#"{"name":3}"#[..], Some("name")),
            (br#"{"name":""}"#, Some("name")),
            (br#"{"nme":"x"}"#, Some("nme")),
            (b"[1]", None),
            (b"{", None),
        ] {
            let e = key_name(body).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert_eq!(
                e.param.as_deref(),
                param,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn fresh_keys_are_distinct_and_long() {
        let a = fresh_secret();
        assert_eq!(a.len(), 4 + 96);
        assert_ne!(a, fresh_secret());
        assert!(crate::tenants::check_key(&a).is_ok());
    }
}
