//! A pod's overrides, from its `inferplane.io/*` annotations: `model`, `layout` (the
//! static config's syntax, `{ tp = 2 }`, or JSON), `gpu`, `price-per-hour`,
//! `max-inflight`, `api-key-secret` (a Secret in the namespace, key `api-key`) and
//! `kv-events` (a `tcp://` endpoint; `tcp://*:PORT` means the pod's own address). Each
//! is checked on its own, by the same checks as the static config: a bad one is reported ([`BadAnnotation`], which the caller logs naming
//! pod and annotation) and left out; the others still apply.

use super::PodMeta;
use crate::config::{InstanceSection, KvEventsSection, instance_spec, kv_events_of};
use inferplane_core::{Layout, Price};

/// The annotation prefix.
pub const PREFIX: &str = "inferplane.io/";

/// What a pod's annotations set; `None`: the default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// The served model (the `model_label` label or annotation, else
    /// `inferplane.io/model`).
    pub model: Option<String>,
    /// Parallelism layout.
    pub layout: Option<Layout>,
    /// GPU kind.
    pub gpu: Option<String>,
    /// Dollars per GPU-hour.
    pub price: Option<Price>,
    /// In-flight cap.
    pub max_inflight: Option<u32>,
    /// The Secret holding the engine's API key (key `api-key`).
    pub api_key_secret: Option<String>,
    /// Where the engine publishes KV cache events.
    pub kv_events: Option<KvEventsSection>,
}

/// An annotation left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadAnnotation {
    /// The annotation (or label) key.
    pub key: String,
    /// What is wrong with its value.
    pub message: String,
}

/// An instance section with only the URL and what `o` sets: the static config's shape,
/// for the static config's checks.
pub fn section(id: &str, url: &str, o: &Overrides) -> InstanceSection {
    InstanceSection {
        id: Some(id.to_string()),
        url: url.to_string(),
        max_inflight: o.max_inflight,
        layout: o.layout.unwrap_or_default(),
        gpu: o.gpu.clone(),
        price: o.price,
        api_key: None,
        max_model_len: None,
        max_batch: None,
        kv_events: o.kv_events.clone().map(|mut k| {
            k.endpoint = at_host(&k.endpoint, url);
            k
        }),
    }
}

/// A KV events endpoint that names no host (`tcp://*:5557`, as vLLM's
/// `--kv-events-config` binds it, so one annotation on a Deployment's pod template fits
/// every pod) at the host of the engine's `url`; any other endpoint as it is.
fn at_host(endpoint: &str, url: &str) -> String {
    let Some(port) = endpoint.strip_prefix("tcp://*:") else {
        return endpoint.to_string();
    };
    let authority = url.split("://").nth(1).unwrap_or(url);
    let authority = authority.split('/').next().unwrap_or(authority);
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    format!("tcp://{host}:{port}")
}

/// Checks one override as the static config would (`instance_spec`, `kv_events_of`).
fn check(o: &Overrides) -> Result<(), String> {
    let s = section("check", "http://127.0.0.1:1", o);
    instance_spec(&s, "check", None).map_err(|(_, m)| m)?;
    kv_events_of(&s).map_err(|(_, m)| m)?;
    Ok(())
}

/// A layout as in the static config (`{ tp = 2, pp = 1 }`) or as JSON (`{"tp": 2}`).
fn parse_layout(v: &str) -> Result<Layout, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wrap {
        layout: Layout,
    }
    match toml::from_str::<Wrap>(&format!("layout = {v}")) {
        Ok(w) => Ok(w.layout),
        Err(toml_err) => serde_json::from_str::<Layout>(v).map_err(|_| {
            format!(
                "{v:?} is not a layout like {{ tp = 2, pp = 1 }}: {}",
                toml_err.message()
            )
        }),
    }
}

/// Reads a pod's overrides. `model_label` names the label or annotation giving its model.
pub fn overrides(meta: &PodMeta, model_label: &str) -> (Overrides, Vec<BadAnnotation>) {
    let mut o = Overrides::default();
    let mut bad = Vec::new();
    let mut reject = |key: &str, message: String| {
        bad.push(BadAnnotation {
            key: key.to_string(),
            message,
        })
    };
    let model_key = format!("{PREFIX}model");
    let model = [
        (model_label, meta.labels.get(model_label)),
        (model_label, meta.annotations.get(model_label)),
        (model_key.as_str(), meta.annotations.get(&model_key)),
    ]
    .into_iter()
    .find_map(|(k, v)| v.map(|v| (k, v)));
    if let Some((key, m)) = model {
        if m.trim().is_empty() {
            reject(key, "the model must not be empty".into());
        } else {
            o.model = Some(m.trim().to_string());
        }
    }
    for (key, value) in &meta.annotations {
        let Some(name) = key.strip_prefix(PREFIX) else {
            continue;
        };
        let v = value.trim();
        let mut one = Overrides::default();
        let parsed: Result<(), String> = match name {
            "model" => continue,
            "layout" => parse_layout(v).map(|l| one.layout = Some(l)),
            "gpu" if v.is_empty() => Err("must not be empty".into()),
            "gpu" => {
                one.gpu = Some(v.to_string());
                Ok(())
            }
            "price-per-hour" => v
                .parse::<f64>()
                .map(|p| one.price = Some(Price::PerGpuHour(p)))
                .map_err(|_| format!("{v:?} is not a number of dollars per GPU-hour")),
            "max-inflight" => v
                .parse::<u32>()
                .map(|n| one.max_inflight = Some(n))
                .map_err(|_| format!("{v:?} is not a whole number")),
            "api-key-secret" if is_secret_name(v) => {
                one.api_key_secret = Some(v.to_string());
                Ok(())
            }
            "api-key-secret" => Err(format!("{v:?} is not a Secret name")),
            "kv-events" => {
                one.kv_events = Some(KvEventsSection {
                    endpoint: v.to_string(),
                    replay_endpoint: None,
                    topic: String::new(),
                });
                Ok(())
            }
            _ => Err(format!(
                "unknown annotation; known: {PREFIX}model, layout, gpu, price-per-hour, \
                 max-inflight, api-key-secret, kv-events"
            )),
        };
        match parsed.and_then(|()| check(&one)) {
            Ok(()) => merge(&mut o, one),
            Err(m) => reject(key, m),
        }
    }
    (o, bad)
}

fn merge(o: &mut Overrides, one: Overrides) {
    o.layout = one.layout.or(o.layout);
    o.gpu = one.gpu.or(o.gpu.take());
    o.price = one.price.or(o.price);
    o.max_inflight = one.max_inflight.or(o.max_inflight);
    o.api_key_secret = one.api_key_secret.or(o.api_key_secret.take());
    o.kv_events = one.kv_events.or(o.kv_events.take());
}

/// A DNS subdomain (what Secret names are).
fn is_secret_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_kv_events_endpoint_without_a_host_is_the_pods_address() {
        use super::at_host;
        assert_eq!(
            at_host("tcp://*:5557", "http://10.0.0.7:8000"),
            "tcp://10.0.0.7:5557"
        );
        assert_eq!(
            at_host("tcp://*:5557", "http://[fd00::7]:8000/"),
            "tcp://[fd00::7]:5557"
        );
        assert_eq!(
            at_host("tcp://kv:5557", "http://10.0.0.7:8000"),
            "tcp://kv:5557"
        );
    }

    use super::*;

    fn meta(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> PodMeta {
        let map = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        PodMeta {
            uid: None,
            labels: map(labels),
            annotations: map(annotations),
        }
    }

    #[test]
    fn every_annotation_applies_and_the_model_label_wins() {
        let m = meta(
            &[("inferplane.io/model", "llama")],
            &[
                ("inferplane.io/model", "other"),
                ("inferplane.io/layout", "{ tp = 2, pp = 2 }"),
                ("inferplane.io/gpu", "h100-sxm"),
                ("inferplane.io/price-per-hour", "2.5"),
                ("inferplane.io/max-inflight", "7"),
                ("inferplane.io/api-key-secret", "vllm-key"),
                ("inferplane.io/kv-events", "tcp://10.0.0.5:5557"),
                ("unrelated.io/x", "y"),
            ],
        );
        let (o, bad) = overrides(&m, "inferplane.io/model");
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(o.model.as_deref(), Some("llama"));
        assert_eq!(
            o.layout,
            Some(Layout {
                tp: 2,
                pp: 2,
                dp: 1,
                ep: 1
            })
        );
        assert_eq!(o.gpu.as_deref(), Some("h100-sxm"));
        assert_eq!(o.price, Some(Price::PerGpuHour(2.5)));
        assert_eq!(o.max_inflight, Some(7));
        assert_eq!(o.api_key_secret.as_deref(), Some("vllm-key"));
        assert_eq!(o.kv_events.unwrap().endpoint, "tcp://10.0.0.5:5557");
    }

    #[test]
    fn a_json_layout_and_a_model_annotation_of_another_key() {
        let m = meta(
            &[],
            &[
                ("serving.example/model", "m2"),
                ("inferplane.io/layout", r#"{"tp": 4}"#),
            ],
        );
        let (o, bad) = overrides(&m, "serving.example/model");
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(o.model.as_deref(), Some("m2"));
        assert_eq!(o.layout.map(|l| l.tp), Some(4));
    }

    #[test]
    fn bad_annotations_are_named_and_left_out_while_the_rest_apply() {
        let m = meta(
            &[],
            &[
                ("inferplane.io/max-inflight", "0"),
                ("inferplane.io/layout", "{ tp = 0 }"),
                ("inferplane.io/price-per-hour", "-1"),
                ("inferplane.io/kv-events", "http://x:1"),
                ("inferplane.io/api-key-secret", "Not A Name"),
                ("inferplane.io/colour", "blue"),
                ("inferplane.io/gpu", "a100"),
            ],
        );
        let (o, bad) = overrides(&m, "inferplane.io/model");
        let keys: Vec<&str> = bad.iter().map(|b| b.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "inferplane.io/api-key-secret",
                "inferplane.io/colour",
                "inferplane.io/kv-events",
                "inferplane.io/layout",
                "inferplane.io/max-inflight",
                "inferplane.io/price-per-hour",
            ]
        );
        assert!(bad.iter().all(|b| !b.message.is_empty()));
        assert_eq!(
            o,
            Overrides {
                gpu: Some("a100".into()),
                ..Overrides::default()
            }
        );
    }
}
