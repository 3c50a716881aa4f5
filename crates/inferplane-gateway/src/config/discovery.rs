//! `[discovery.kubernetes]`: engine instances discovered from the Kubernetes API (the
//! EndpointSlices of a Service, or Pods by label selector). The section is parsed and
//! checked in every build; a binary built without the `kubernetes` cargo feature refuses a
//! configuration that sets it, saying so.
//!
//! ```toml
//! [discovery.kubernetes]
//! namespace = "llm"                   # default: the pod's own namespace, else "default"
//! service = "vllm-llama"              # or: selector = "app=vllm" (exactly one of the two)
//! port = "http"                       # a port name or number (default 8000)
//! scheme = "http"
//! model_label = "inferplane.io/model" # absent on a pod: ask the engine's /v1/models
//! # api_server = "http://127.0.0.1:8001"  # default: in-cluster config (kube::Config::infer)
//! ```

use super::ConfigError;
use serde::{Deserialize, Serialize};

/// `[discovery]`: where instances come from besides the file and the admin API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverySection {
    /// `[discovery.kubernetes]`.
    #[serde(default)]
    pub kubernetes: Option<KubernetesSection>,
}

/// `[discovery.kubernetes]`, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSection {
    /// The namespace watched (default: the pod's own, from the service account, else
    /// `default`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// A Service whose EndpointSlices (`kubernetes.io/service-name=<service>`) are watched.
    #[serde(default)]
    pub service: Option<String>,
    /// A label selector of the Pods watched (instead of `service`).
    #[serde(default)]
    pub selector: Option<String>,
    /// The engine's port: an EndpointSlice port name or a container port name, or a number
    /// (default 8000).
    #[serde(default)]
    pub port: Option<PortRef>,
    /// `http` (the engines' URL scheme).
    #[serde(default = "default_scheme")]
    pub scheme: String,
    /// The pod label or annotation naming the served model (absent on a pod: the engine's
    /// `/v1/models` says).
    #[serde(default = "default_model_label")]
    pub model_label: String,
    /// The API server's URL (tests, `kubectl proxy`); default: the in-cluster
    /// configuration, or the kubeconfig (`kube::Config::infer`).
    #[serde(default)]
    pub api_server: Option<String>,
}

fn default_scheme() -> String {
    "http".into()
}

/// The default `model_label`.
pub const DEFAULT_MODEL_LABEL: &str = "inferplane.io/model";

fn default_model_label() -> String {
    DEFAULT_MODEL_LABEL.into()
}

/// The engine port when `port` is not given.
pub const DEFAULT_PORT: u16 = 8000;

/// A port by name or number (`port = "http"`, `port = 8000`; a string of digits is a
/// number: Kubernetes port names hold a letter).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortRef {
    /// A port number.
    Number(u16),
    /// A port name (an EndpointSlice port's or a container port's `name`).
    Name(String),
}

impl PortRef {
    /// A name that is all digits becomes a number.
    fn normalized(&self) -> PortRef {
        match self {
            PortRef::Name(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                n.parse().map_or_else(|_| self.clone(), PortRef::Number)
            }
            other => other.clone(),
        }
    }
}

/// What is watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The EndpointSlices of this Service.
    Service(String),
    /// The Pods matching this label selector.
    Selector(String),
}

/// A checked `[discovery.kubernetes]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesDiscovery {
    /// The namespace, if configured (else the pod's own, else `default`, found at start).
    pub namespace: Option<String>,
    /// What is watched.
    pub target: Target,
    /// The engine's port.
    pub port: PortRef,
    /// The model label or annotation.
    pub model_label: String,
    /// The API server, if not the in-cluster one.
    pub api_server: Option<String>,
}

impl KubernetesSection {
    /// Checks the section; errors name the field (`discovery.kubernetes.service`).
    pub fn validate(&self) -> Result<KubernetesDiscovery, ConfigError> {
        let at = |field: &str| format!("discovery.kubernetes.{field}");
        let target = match (&self.service, &self.selector) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    at("selector"),
                    "give either service (watch its EndpointSlices) or selector (watch Pods), not both",
                ));
            }
            (None, None) => {
                return Err(ConfigError::new(
                    at("service"),
                    "give service (watch its EndpointSlices) or selector (watch Pods by label)",
                ));
            }
            (Some(s), None) => {
                if !is_dns_label(s) {
                    return Err(ConfigError::new(
                        at("service"),
                        format!("{s:?} is not a Service name (lower-case letters, digits and '-')"),
                    ));
                }
                Target::Service(s.clone())
            }
            (None, Some(sel)) => {
                if sel.trim().is_empty() {
                    return Err(ConfigError::new(
                        at("selector"),
                        "must not be empty (it would match every pod); e.g. \"app=vllm\"",
                    ));
                }
                Target::Selector(sel.trim().to_string())
            }
        };
        if let Some(ns) = &self.namespace
            && !is_dns_label(ns)
        {
            return Err(ConfigError::new(
                at("namespace"),
                format!("{ns:?} is not a namespace name (lower-case letters, digits and '-')"),
            ));
        }
        let port = self
            .port
            .as_ref()
            .map_or(PortRef::Number(DEFAULT_PORT), PortRef::normalized);
        match &port {
            PortRef::Number(0) => {
                return Err(ConfigError::new(at("port"), "must be 1 to 65535"));
            }
            PortRef::Name(n) if n.trim().is_empty() => {
                return Err(ConfigError::new(
                    at("port"),
                    "must be a port name or a number",
                ));
            }
            _ => {}
        }
        match self.scheme.as_str() {
            "http" => {}
            "https" => {
                return Err(ConfigError::new(
                    at("scheme"),
                    "https to engines is not supported (engines are reached inside the cluster over plain http)",
                ));
            }
            other => {
                return Err(ConfigError::new(
                    at("scheme"),
                    format!("{other:?} must be http"),
                ));
            }
        }
        if self.model_label.trim().is_empty() {
            return Err(ConfigError::new(
                at("model_label"),
                "must not be empty; omit it for inferplane.io/model",
            ));
        }
        if let Some(url) = &self.api_server
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::new(
                at("api_server"),
                format!("{url:?} must start with http:// or https://"),
            ));
        }
        let checked = KubernetesDiscovery {
            namespace: self.namespace.clone(),
            target,
            port,
            model_label: self.model_label.trim().to_string(),
            api_server: self.api_server.clone(),
        };
        if cfg!(feature = "kubernetes") {
            Ok(checked)
        } else {
            Err(ConfigError::new(
                "discovery.kubernetes",
                "this binary was built without the `kubernetes` feature: rebuild with \
                 `cargo build --features kubernetes` to discover engines from Kubernetes",
            ))
        }
    }
}

/// An RFC 1123 label: what Service and namespace names are.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<KubernetesDiscovery, ConfigError> {
        let f = crate::FileConfig::parse(text, "t").unwrap();
        f.discovery.kubernetes.unwrap().validate()
    }

    #[test]
    fn the_section_parses_and_checks_its_fields() {
        let text = "[discovery.kubernetes]\nnamespace = \"llm\"\nservice = \"vllm-llama\"\nport = \"http\"\n";
        let r = parse(text);
        if cfg!(feature = "kubernetes") {
            let k = r.unwrap();
            assert_eq!(k.target, Target::Service("vllm-llama".into()));
            assert_eq!(k.port, PortRef::Name("http".into()));
            assert_eq!(k.model_label, DEFAULT_MODEL_LABEL);
        } else {
            let e = r.unwrap_err();
            assert_eq!(e.path, "discovery.kubernetes");
            assert!(
                e.message.contains("without the `kubernetes` feature"),
                "{e}"
            );
        }
        let both = parse("[discovery.kubernetes]\nservice = \"a\"\nselector = \"app=x\"\n");
        assert_eq!(both.unwrap_err().path, "discovery.kubernetes.selector");
        let none = parse("[discovery.kubernetes]\nnamespace = \"a\"\n");
        assert_eq!(none.unwrap_err().path, "discovery.kubernetes.service");
        let bad_port = parse("[discovery.kubernetes]\nselector = \"app=x\"\nport = 0\n");
        assert_eq!(bad_port.unwrap_err().path, "discovery.kubernetes.port");
        let https = parse("[discovery.kubernetes]\nselector = \"app=x\"\nscheme = \"https\"\n");
        assert!(https.unwrap_err().message.contains("https"));
        let ns = parse("[discovery.kubernetes]\nselector = \"app=x\"\nnamespace = \"No\"\n");
        assert_eq!(ns.unwrap_err().path, "discovery.kubernetes.namespace");
        let unknown = crate::FileConfig::parse("[discovery.kubernetes]\nservise = \"a\"\n", "t");
        assert!(unknown.is_err(), "unknown fields are refused");
    }

    #[test]
    fn a_port_of_digits_is_a_number() {
        assert_eq!(
            PortRef::Name("8080".into()).normalized(),
            PortRef::Number(8080)
        );
        assert_eq!(
            PortRef::Name("http".into()).normalized(),
            PortRef::Name("http".into())
        );
    }
}
