//! How the library's errors are answered over HTTP: `impl From<PlaneError> for ApiError`,
//! the one place that gives each [`PlaneError`] its status, OpenAI `type`, `code`, `param`,
//! message and `Retry-After`. Handlers use `?` on [`ControlPlane`](crate::ControlPlane)
//! calls and get this answer.

use crate::error::ApiError;
use crate::plane_error::PlaneError;
use axum::http::StatusCode;
use inferplane_core::RejectKind;

impl From<PlaneError> for ApiError {
    fn from(e: PlaneError) -> Self {
        match e {
            PlaneError::UnknownModel { model, known } => ApiError {
                status: StatusCode::NOT_FOUND,
                message: format!(
                    "The model `{model}` does not exist. Models served here: {}.",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
                kind: "invalid_request_error",
                param: Some("model".into()),
                code: "model_not_found",
                retry_after: None,
            },
            PlaneError::Rejected {
                model,
                reason,
                not_ready,
            } => {
                let kind = reason.kind();
                let invalid = kind == RejectKind::ContextLengthExceeded;
                let mut message = format!("model `{model}`: {reason}");
                if let Some(n) = not_ready {
                    message = format!("{message}: {n}");
                }
                ApiError {
                    status: reject_status(kind),
                    message,
                    kind: if invalid {
                        "invalid_request_error"
                    } else {
                        "server_error"
                    },
                    param: invalid.then(|| "messages".to_string()),
                    code: kind.as_str(),
                    retry_after: reason
                        .retry_after()
                        .map(|d| u32::try_from(d.as_secs().max(1)).unwrap_or(u32::MAX)),
                }
            }
            PlaneError::Conflict(dup) => ApiError::conflict(dup.to_string()),
            PlaneError::NotFound(id) => ApiError::not_found(format!("no instance {id}")),
            PlaneError::InvalidSetting(e) => {
                ApiError::bad_request(format!("invalid policy change: {e}"), Some(e.field))
            }
            // 503 without a figure: the response says `Retry-After: 1`.
            PlaneError::ShuttingDown => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: "the gateway is shutting down".into(),
                kind: "server_error",
                param: None,
                code: "shutting_down",
                retry_after: None,
            },
        }
    }
}

/// The status of a rejection: overload may be retried later (429), an unservable pool or
/// target is the gateway's state (503), a missed deadline a timeout (504); a request over
/// its budget (402) or too long for every instance (400) is the client's.
fn reject_status(kind: RejectKind) -> StatusCode {
    match kind {
        RejectKind::QueueFull | RejectKind::Shed => StatusCode::TOO_MANY_REQUESTS,
        RejectKind::NoInstances
        | RejectKind::NoneReady
        | RejectKind::QueueTimeout
        | RejectKind::SloInfeasible => StatusCode::SERVICE_UNAVAILABLE,
        RejectKind::DeadlineMissed => StatusCode::GATEWAY_TIMEOUT,
        RejectKind::OverBudget => StatusCode::PAYMENT_REQUIRED,
        RejectKind::ContextLengthExceeded => StatusCode::BAD_REQUEST,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plane_error::{NotReady, Unready};
    use axum::response::IntoResponse;
    use inferplane_core::settings::InvalidSetting;
    use inferplane_core::{DuplicateInstance, InstanceId, Priority, RejectReason};
    use std::time::Duration;

    /// Status, `Retry-After` header and JSON body of the answer to `e`.
    async fn answer(e: PlaneError) -> (u16, Option<String>, serde_json::Value) {
        let resp = ApiError::from(e).into_response();
        let status = resp.status().as_u16();
        let after = resp
            .headers()
            .get(axum::http::header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, after, serde_json::from_slice(&body).unwrap())
    }

    fn rejected(reason: RejectReason) -> PlaneError {
        PlaneError::Rejected {
            model: "m".into(),
            reason,
            not_ready: None,
        }
    }

    #[tokio::test]
    async fn every_rejection_kind_has_its_status_code_and_retry_after() {
        let secs = Duration::from_secs;
        // (reason, status, Retry-After, OpenAI type, param)
        let cases = [
            (
                RejectReason::QueueFull { max_queue: 4 },
                429,
                Some("1"),
                "server_error",
                None,
            ),
            (
                RejectReason::NoInstances,
                503,
                Some("1"),
                "server_error",
                None,
            ),
            (
                RejectReason::NoneReady { registered: 2 },
                503,
                Some("1"),
                "server_error",
                None,
            ),
            (
                RejectReason::QueueTimeout {
                    waited: secs(6),
                    timeout: secs(5),
                },
                503,
                Some("1"),
                "server_error",
                None,
            ),
            (
                RejectReason::DeadlineMissed { waited: secs(2) },
                504,
                Some("1"),
                "server_error",
                None,
            ),
            (
                RejectReason::Shed {
                    class: Priority::Low,
                    predicted_wait: secs(12),
                    budget: secs(3),
                },
                429,
                Some("12"),
                "server_error",
                None,
            ),
            (
                RejectReason::SloInfeasible { short_by: secs(1) },
                503,
                Some("1"),
                "server_error",
                None,
            ),
            (
                RejectReason::OverBudget {
                    estimate: 0.5,
                    budget: 0.1,
                },
                402,
                None,
                "server_error",
                None,
            ),
            (
                RejectReason::ContextLengthExceeded {
                    requested: 9000,
                    max_model_len: 8192,
                },
                400,
                None,
                "invalid_request_error",
                Some("messages"),
            ),
        ];
        assert_eq!(cases.len(), RejectKind::COUNT, "every kind is checked");
        for (reason, status, after, kind, param) in cases {
            let code = reason.kind().as_str();
            let message = format!("model `m`: {reason}");
            let (s, a, v) = answer(rejected(reason)).await;
            assert_eq!(s, status, "{code}");
            assert_eq!(a.as_deref(), after, "{code}");
            assert_eq!(
                v,
                serde_json::json!({"error": {
                    "message": message, "type": kind, "param": param, "code": code,
                }}),
                "{code}"
            );
        }
    }

    #[tokio::test]
    async fn a_shed_request_is_told_its_predicted_wait_within_one_to_thirty_seconds() {
        for (wait, after) in [(0, "1"), (90, "30")] {
            let (_, a, _) = answer(rejected(RejectReason::Shed {
                class: Priority::Normal,
                predicted_wait: Duration::from_millis(wait * 1000),
                budget: Duration::from_secs(1),
            }))
            .await;
            assert_eq!(a.as_deref(), Some(after));
        }
    }

    #[tokio::test]
    async fn no_ready_instance_says_why_each_instance_takes_no_work() {
        let mut n = NotReady::default();
        n.push(InstanceId::new("a"), Unready::Unhealthy);
        n.push(InstanceId::new("b"), Unready::CircuitOpen);
        let (status, after, v) = answer(PlaneError::Rejected {
            model: "m".into(),
            reason: RejectReason::NoneReady { registered: 2 },
            not_ready: Some(n),
        })
        .await;
        assert_eq!((status, after.as_deref()), (503, Some("1")));
        assert_eq!(v["error"]["code"], "no_ready_instance");
        assert_eq!(
            v["error"]["message"],
            "model `m`: none of its 2 instances is ready (unhealthy, circuit open, starting or \
             draining): a: unhealthy, b: circuit open after failures"
        );
    }

    #[tokio::test]
    async fn library_errors_become_their_openai_answers() {
        let bad = InvalidSetting {
            field: "routing.capacity",
            problem: "0 is not within [1, 16777216]".into(),
        };
        // (error, status, Retry-After, body)
        let cases = [
            (
                PlaneError::UnknownModel {
                    model: "x".into(),
                    known: vec!["a".into(), "b".into()],
                },
                404,
                None,
                serde_json::json!({"error": {
                    "message": "The model `x` does not exist. Models served here: a, b.",
                    "type": "invalid_request_error", "param": "model", "code": "model_not_found",
                }}),
            ),
            (
                PlaneError::UnknownModel {
                    model: "x".into(),
                    known: vec![],
                },
                404,
                None,
                serde_json::json!({"error": {
                    "message": "The model `x` does not exist. Models served here: none.",
                    "type": "invalid_request_error", "param": "model", "code": "model_not_found",
                }}),
            ),
            (
                PlaneError::Conflict(DuplicateInstance(InstanceId::new("i0"))),
                409,
                None,
                serde_json::json!({"error": {
                    "message": "instance i0 is already registered",
                    "type": "invalid_request_error", "param": null, "code": "conflict",
                }}),
            ),
            (
                PlaneError::NotFound(InstanceId::new("i9")),
                404,
                None,
                serde_json::json!({"error": {
                    "message": "no instance i9",
                    "type": "invalid_request_error", "param": null, "code": "not_found",
                }}),
            ),
            (
                PlaneError::InvalidSetting(bad),
                400,
                None,
                serde_json::json!({"error": {
                    "message": "invalid policy change: routing.capacity: 0 is not within [1, 16777216]",
                    "type": "invalid_request_error", "param": "routing.capacity",
                    "code": "invalid_request",
                }}),
            ),
            (
                PlaneError::ShuttingDown,
                503,
                Some("1"),
                serde_json::json!({"error": {
                    "message": "the gateway is shutting down",
                    "type": "server_error", "param": null, "code": "shutting_down",
                }}),
            ),
        ];
        for (e, status, after, body) in cases {
            let name = format!("{e:?}");
            let (s, a, v) = answer(e).await;
            assert_eq!((s, a.as_deref()), (status, after), "{name}");
            assert_eq!(v, body, "{name}");
        }
    }
}
