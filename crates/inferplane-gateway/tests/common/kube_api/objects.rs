//! Builders of the objects the stand-in keeps, in the API reference's shapes:
//! EndpointSlice (`addressType`, `endpoints[].addresses/conditions/targetRef`,
//! `ports[].name/port`), Pod (`spec.containers[].ports`, `status.podIP/conditions`) and
//! Secret (`data`, base64).

use serde_json::{Value, json};

/// One endpoint of [`endpoint_slice`]: (pod name or none, address, `ready`, `serving`,
/// `terminating`; `None`: the condition left out).
pub type SliceEndpoint<'a> = (
    Option<&'a str>,
    &'a str,
    Option<bool>,
    Option<bool>,
    Option<bool>,
);

/// An EndpointSlice of Service `service` with one port (`name`, `port`) and `endpoints`.
pub fn endpoint_slice(
    name: &str,
    service: &str,
    port: (&str, u16),
    endpoints: &[SliceEndpoint<'_>],
) -> Value {
    let eps: Vec<Value> = endpoints
        .iter()
        .map(|(pod, addr, ready, serving, terminating)| {
            let mut e = json!({"addresses": [addr], "conditions": {}});
            for (k, v) in [
                ("ready", ready),
                ("serving", serving),
                ("terminating", terminating),
            ] {
                if let Some(v) = v {
                    e["conditions"][k] = json!(v);
                }
            }
            if let Some(p) = pod {
                e["targetRef"] = json!({"kind": "Pod", "name": p, "namespace": "llm"});
            }
            e
        })
        .collect();
    json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service,
                     "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"name": port.0, "port": port.1, "protocol": "TCP"}],
    })
}

/// A running Pod `name` with `labels`, `annotations`, IP `ip`, one container port
/// (`port_name`, `port`), and its `Ready` condition.
pub fn pod(
    name: &str,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
    ip: &str,
    port: (&str, u16),
    ready: bool,
) -> Value {
    let map = |kv: &[(&str, &str)]| -> Value {
        kv.iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    json!({
        "metadata": {"name": name, "labels": map(labels), "annotations": map(annotations)},
        "spec": {"containers": [{"name": "engine", "image": "vllm/vllm-openai",
                 "ports": [{"name": port.0, "containerPort": port.1, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                   "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
    })
}

/// A Secret `name` with `data` (values base64-encoded, as the API returns them).
pub fn secret(name: &str, data: &[(&str, &str)]) -> Value {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), json!(base64(v.as_bytes()))))
        .collect();
    json!({"metadata": {"name": name}, "type": "Opaque", "data": data})
}

/// Standard base64 with padding (RFC 4648), for Secret data.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
