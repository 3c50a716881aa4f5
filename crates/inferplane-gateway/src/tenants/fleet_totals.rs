//! The fleet's usage totals in the `[shared]` store: each replica adds what it counted
//! since its last report to `{prefix}:tu:<tenant>` (a hash: `requests`, `succeeded`,
//! `prompt_tokens`, `completion_tokens`, `cost_usd`, `rejected:<reason>`), every
//! tenant's share in one `MULTI` so a report lands whole or not at all, and
//! `/admin/tenants/{id}/usage` reads the sum, the same on every replica. The totals
//! count from when the store first saw the tenant and outlive any replica (they never
//! expire: one small hash per configured tenant).

use super::store::LimitStore;
use crate::shared::StoreError;
use crate::telemetry::{REJECTIONS, TenantTotals};
use std::collections::HashMap;

/// The hash field of a rejection reason (one of [`REJECTIONS`]).
fn rejected_field(reason: &str) -> String {
    format!("rejected:{reason}")
}

impl LimitStore {
    fn totals_key(&self, tenant: &str) -> String {
        format!("{}:tu:{tenant}", self.prefix)
    }

    /// Adds each tenant's `delta` to the fleet's totals, all in one transaction.
    pub async fn add_totals(&self, deltas: &[(&str, TenantTotals)]) -> Result<(), StoreError> {
        if deltas.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (tenant, d) in deltas {
            let key = self.totals_key(tenant);
            let counts = [
                ("requests", d.requests),
                ("succeeded", d.succeeded),
                ("prompt_tokens", d.prompt_tokens),
                ("completion_tokens", d.completion_tokens),
            ];
            for (field, n) in counts.into_iter().filter(|(_, n)| *n > 0) {
                pipe.hincr(&key, field, n).ignore();
            }
            for (reason, n) in d.rejected.iter().filter(|(_, n)| *n > 0) {
                pipe.hincr(&key, rejected_field(reason), *n).ignore();
            }
            if d.cost_usd > 0.0 {
                pipe.cmd("HINCRBYFLOAT")
                    .arg(&key)
                    .arg("cost_usd")
                    .arg(d.cost_usd)
                    .ignore();
            }
        }
        let pipe = &pipe;
        self.run(|mut c| async move {
            let () = pipe.query_async(&mut c).await?;
            Ok(())
        })
        .await
    }

    /// The fleet's totals of each of `tenants`, in order (zero where nothing was ever
    /// reported), in one round trip.
    pub async fn totals_of(&self, tenants: &[&str]) -> Result<Vec<TenantTotals>, StoreError> {
        if tenants.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for tenant in tenants {
            pipe.cmd("HGETALL").arg(self.totals_key(tenant));
        }
        let pipe = &pipe;
        let hashes: Vec<HashMap<String, String>> = self
            .run(|mut c| async move { Ok(pipe.query_async(&mut c).await?) })
            .await?;
        if hashes.len() != tenants.len() {
            return Err(StoreError::Answer(format!(
                "{} hashes for {} tenants",
                hashes.len(),
                tenants.len()
            )));
        }
        hashes.iter().map(parse_totals).collect()
    }
}

/// Totals from the hash's fields; a field that is not a number is an error.
fn parse_totals(fields: &HashMap<String, String>) -> Result<TenantTotals, StoreError> {
    let count = |name: &str| -> Result<u64, StoreError> {
        match fields.get(name) {
            None => Ok(0),
            Some(v) => v
                .parse()
                .map_err(|_| StoreError::Answer(format!("{name} = {v:?}"))),
        }
    };
    let cost_usd = match fields.get("cost_usd") {
        None => 0.0,
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|c| c.is_finite())
            .ok_or_else(|| StoreError::Answer(format!("cost_usd = {v:?}")))?,
    };
    let mut rejected = REJECTIONS.map(|r| (r, 0));
    for (reason, n) in &mut rejected {
        *n = count(&rejected_field(reason))?;
    }
    Ok(TenantTotals {
        requests: count("requests")?,
        succeeded: count("succeeded")?,
        prompt_tokens: count("prompt_tokens")?,
        completion_tokens: count("completion_tokens")?,
        cost_usd,
        rejected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_parse_from_the_hash_and_bad_fields_are_errors() {
        let h = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        assert_eq!(parse_totals(&h(&[])).unwrap(), TenantTotals::default());
        let t = parse_totals(&h(&[
            ("requests", "7"),
            ("succeeded", "5"),
            ("prompt_tokens", "300"),
            ("completion_tokens", "120"),
            ("cost_usd", "0.25"),
            ("rejected:tokens_per_minute", "3"),
            ("something_newer", "x"),
        ]))
        .unwrap();
        assert_eq!((t.requests, t.succeeded), (7, 5));
        assert_eq!((t.prompt_tokens, t.completion_tokens), (300, 120));
        assert!((t.cost_usd - 0.25).abs() < 1e-12);
        assert_eq!(t.rejected[1], ("tokens_per_minute", 3));
        assert_eq!(t.rejected[0], ("requests_per_minute", 0));
        for bad in [
            h(&[("requests", "-1")]),
            h(&[("cost_usd", "NaN")]),
            h(&[("rejected:budget", "many")]),
        ] {
            assert!(parse_totals(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_delta_added_to_what_was_sent_gives_the_totals_back() {
        let mut now = TenantTotals {
            requests: 10,
            prompt_tokens: 500,
            cost_usd: 1.5,
            ..TenantTotals::default()
        };
        now.rejected[3].1 = 2;
        let sent = TenantTotals {
            requests: 4,
            prompt_tokens: 200,
            cost_usd: 0.5,
            ..TenantTotals::default()
        };
        let d = now.since(&sent);
        assert_eq!(
            (d.requests, d.prompt_tokens, d.rejected[3]),
            (6, 300, ("budget", 2))
        );
        assert_eq!(sent.plus(&d), now);
        assert!(now.since(&now).is_zero());
        assert!(!d.is_zero());
    }
}
