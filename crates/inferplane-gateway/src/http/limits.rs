//! Tenants' limits as OpenAI clients see them: the 429 of a refusal (`rate_limit_exceeded`
//! with type `requests` or `tokens`, `insufficient_quota` for a spent budget, each with
//! `Retry-After`), and OpenAI's `x-ratelimit-*` headers on every response of a limited
//! tenant, refused or not.

use crate::error::ApiError;
use crate::tenants::{Refusal, Refused, Standing};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// The 429 for `r`, naming the tenant.
pub fn refused(r: &Refused, tenant: &str) -> ApiError {
    let retry_after = r
        .refusal
        .retry_after_secs()
        .map(|s| u32::try_from(s).unwrap_or(u32::MAX));
    let (kind, code, message) = match r.refusal {
        Refusal::Requests { limit, .. } => (
            "requests",
            "rate_limit_exceeded",
            format!(
                "Rate limit reached for tenant {tenant} on requests per min (RPM): Limit {limit}. Please try again in {}s.",
                retry_after.unwrap_or(1)
            ),
        ),
        Refusal::Tokens { limit, asked, .. } => (
            "tokens",
            "rate_limit_exceeded",
            format!(
                "Rate limit reached for tenant {tenant} on tokens per min (TPM): Limit {limit}, Requested {asked} (prompt + expected output; requests in flight count all they may still produce). Please try again in {}s.",
                retry_after.unwrap_or(1)
            ),
        ),
        Refusal::TooLarge { limit, asked } => (
            "tokens",
            "rate_limit_exceeded",
            format!(
                "Request too large for tenant {tenant} on tokens per min (TPM): Limit {limit}, Requested {asked}. The input or output tokens must be reduced in order to run successfully."
            ),
        ),
        Refusal::Concurrent { limit } => (
            "requests",
            "rate_limit_exceeded",
            format!(
                "Too many concurrent requests for tenant {tenant}: Limit {limit} in flight. Please try again when one has finished."
            ),
        ),
        Refusal::Budget {
            limit,
            spent,
            retry_after_ms,
        } => (
            "insufficient_quota",
            "insufficient_quota",
            match retry_after_ms {
                Some(ms) => format!(
                    "You exceeded your current quota: tenant {tenant} has spent ${spent:.4} of its ${limit:.2} budget for this period, which starts over in {}.",
                    reset(ms)
                ),
                None => format!(
                    "You exceeded your current quota: tenant {tenant} has spent ${spent:.4} of its ${limit:.2} budget."
                ),
            },
        ),
    };
    ApiError {
        status: StatusCode::TOO_MANY_REQUESTS,
        message,
        kind,
        param: None,
        code,
        retry_after,
    }
}

/// A reset in OpenAI's form: `20ms`, `3s`, `1m0s`.
fn reset(ms: u64) -> String {
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let secs = ms.div_ceil(1_000);
    if secs < 60 {
        format!("{secs}s")
    } else {
        format!("{}m{}s", secs / 60, secs % 60)
    }
}

/// Adds OpenAI's `x-ratelimit-*` headers for `s`.
pub fn add_headers(h: &mut HeaderMap, s: &Standing) {
    let mut put = |name: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    if let Some((limit, left)) = s.requests {
        put("x-ratelimit-limit-requests", limit.to_string());
        put("x-ratelimit-remaining-requests", left.to_string());
        put("x-ratelimit-reset-requests", reset(s.reset_ms));
    }
    if let Some((limit, left)) = s.tokens {
        put("x-ratelimit-limit-tokens", limit.to_string());
        put("x-ratelimit-remaining-tokens", left.to_string());
        put("x-ratelimit-reset-tokens", reset(s.reset_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_read_like_openais() {
        assert_eq!(reset(20), "20ms");
        assert_eq!(reset(2_100), "3s");
        assert_eq!(reset(60_000), "1m0s");
    }

    #[test]
    fn refusals_are_429s_of_openais_shape_with_headers() {
        let standing = Standing {
            requests: Some((10, 0)),
            tokens: Some((1_000, 40)),
            reset_ms: 12_500,
        };
        let r = Refused {
            refusal: Refusal::Tokens {
                limit: 1_000,
                asked: 300,
                retry_after_ms: 12_500,
            },
            standing,
        };
        let e = refused(&r, "team-a");
        assert_eq!(
            (e.status, e.kind, e.code, e.retry_after),
            (
                StatusCode::TOO_MANY_REQUESTS,
                "tokens",
                "rate_limit_exceeded",
                Some(13)
            )
        );
        assert!(
            e.message.contains("Limit 1000, Requested 300"),
            "{}",
            e.message
        );
        let budget = Refused {
            refusal: Refusal::Budget {
                limit: 5.0,
                spent: 5.01,
                retry_after_ms: None,
            },
            standing,
        };
        assert_eq!(refused(&budget, "t").code, "insufficient_quota");
        let mut h = HeaderMap::new();
        add_headers(&mut h, &standing);
        assert_eq!(h["x-ratelimit-remaining-requests"], "0");
        assert_eq!(h["x-ratelimit-limit-tokens"], "1000");
        assert_eq!(h["x-ratelimit-remaining-tokens"], "40");
        assert_eq!(h["x-ratelimit-reset-tokens"], "13s");
    }
}
