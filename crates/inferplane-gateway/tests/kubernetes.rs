//! Kubernetes discovery against a stand-in API server (placeholder while it is written).
