//! Carrying out the reconciler's actions on the control plane: registering an endpoint
//! (its overrides from its pod's annotations, its API key from a Secret, its model from
//! its pod or its engine's `/v1/models`; a model no pool serves gets a pool, as the admin
//! API's registrations do), draining, taking back and removing it. Each change is logged.

use super::{Driver, chain};
use crate::config::{Secret, instance_spec, kv_events_of};
use crate::discovery::annotations::{self, Overrides};
use crate::discovery::reconcile::Action;
use crate::discovery::{Endpoint, Meta};
use crate::plane_error::PlaneError;
use inferplane_core::EngineInfo;

/// Why a discovered endpoint was not registered (it is tried again later).
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The Secret named by `inferplane.io/api-key-secret` could not be read.
    #[error("cannot read Secret {name:?} (annotation inferplane.io/api-key-secret)")]
    Secret {
        /// The Secret.
        name: String,
        /// The API's error.
        #[source]
        source: kube::Error,
    },
    /// The Secret has no usable `api-key`.
    #[error("Secret {0:?} has no non-empty UTF-8 key `api-key`")]
    SecretKey(String),
    /// Reading the Secret timed out.
    #[error("reading Secret {0:?} timed out")]
    SecretTimeout(String),
    /// No model label or annotation, and the engine did not say.
    #[error("no model label or annotation, and {url}/v1/models did not name one")]
    Model {
        /// The engine.
        url: String,
        /// Why.
        #[source]
        source: Option<reqwest::Error>,
    },
    /// The instance is not valid as the static config would check it.
    #[error("{field}: {message}")]
    Spec {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The control plane refused it.
    #[error(transparent)]
    Plane(#[from] PlaneError),
}

impl Driver {
    /// Carries out one action; false when the control plane is shutting down.
    pub(super) async fn act(&mut self, action: Action) -> bool {
        let res = match &action {
            Action::Register(ep) => match self.register(ep).await {
                Ok(()) => Ok(()),
                Err(RegisterError::Plane(PlaneError::ShuttingDown)) => {
                    Err(PlaneError::ShuttingDown)
                }
                Err(e) => {
                    let what = match &e {
                        RegisterError::Plane(PlaneError::Conflict(_)) => "conflict",
                        _ => "register",
                    };
                    self.warn_once(
                        ep.id.as_str(),
                        what,
                        &format!(
                            "not registered (tried again every few seconds): {}",
                            chain(&e)
                        ),
                    );
                    Ok(())
                }
            },
            Action::Drain(id) => match self.cp.drain_instance(id).await {
                Ok(_) => {
                    tracing::info!(instance = %id, "discovered instance draining (terminating or not ready)");
                    self.rec.drained(id, true);
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Action::Undrain(id) => match self.cp.undrain_instance(id).await {
                Ok(_) => {
                    tracing::info!(instance = %id, "discovered instance ready again");
                    self.rec.drained(id, false);
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Action::Remove(id) => match self.cp.remove_instance(id).await {
                Ok(_) => {
                    tracing::info!(instance = %id, "discovered instance removed");
                    self.rec.removed(id);
                    Ok(())
                }
                Err(e) => Err(e),
            },
        };
        match res {
            Ok(()) => true,
            Err(PlaneError::ShuttingDown) => false,
            Err(PlaneError::NotFound(id)) => {
                // removed by someone else (the admin API): registered again if still ready
                tracing::info!(instance = %id, "discovered instance was removed from outside");
                self.rec.removed(&id);
                true
            }
            Err(e) => {
                tracing::warn!(action = ?action, error = %chain(&e), "kubernetes discovery action failed");
                true
            }
        }
    }

    async fn register(&mut self, ep: &Endpoint) -> Result<(), RegisterError> {
        let o = match &ep.meta {
            Meta::Known(m) => {
                let (o, bad) = annotations::overrides(m, &self.cfg.model_label);
                for b in bad {
                    self.warn_once(
                        ep.id.as_str(),
                        &b.key,
                        &format!("annotation {} ignored: {}", b.key, b.message),
                    );
                }
                o
            }
            Meta::Defaults | Meta::Unknown => Overrides::default(),
        };
        let api_key = match &o.api_key_secret {
            Some(name) => Some(self.api_key(name).await?),
            None => None,
        };
        let model = match &o.model {
            Some(m) => m.clone(),
            None => self.ask_model(&ep.url, api_key.as_ref()).await?,
        };
        let section = annotations::section(ep.id.as_str(), &ep.url, &o);
        let spec_error =
            |(field, message): (&'static str, String)| RegisterError::Spec { field, message };
        let spec = instance_spec(&section, &model, self.cp.config().max_inflight_for(&model))
            .map_err(spec_error)?;
        let kv = kv_events_of(&section).map_err(spec_error)?;
        let view = self
            .cp
            .register_instance_with_kv_events(spec, api_key, EngineInfo::default(), kv)
            .await?;
        tracing::info!(
            instance = %ep.id,
            model = %view.spec.model,
            url = %view.spec.url,
            max_inflight = ?view.spec.max_inflight,
            "discovered instance registered"
        );
        self.rec.registered(ep.clone());
        self.warned.retain(|(id, _)| id != &ep.id);
        Ok(())
    }

    /// The engine's API key from Secret `name`, key `api-key`.
    async fn api_key(&self, name: &str) -> Result<Secret, RegisterError> {
        let secret = tokio::time::timeout(super::API_TIMEOUT, self.secrets.get(name))
            .await
            .map_err(|_| RegisterError::SecretTimeout(name.to_string()))?
            .map_err(|source| RegisterError::Secret {
                name: name.to_string(),
                source,
            })?;
        secret
            .data
            .as_ref()
            .and_then(|d| d.get("api-key"))
            .and_then(|b| std::str::from_utf8(&b.0).ok())
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(Secret::new)
            .ok_or_else(|| RegisterError::SecretKey(name.to_string()))
    }

    /// The model the engine serves, from its `/v1/models` (the first entry's `id`).
    async fn ask_model(&self, url: &str, key: Option<&Secret>) -> Result<String, RegisterError> {
        let fail = |source| RegisterError::Model {
            url: url.to_string(),
            source,
        };
        let mut req = self
            .cp
            .http()
            .get(format!("{url}/v1/models"))
            .timeout(self.cp.config().health.timeout);
        if let Some(k) = key {
            req = req.bearer_auth(k.expose());
        }
        let resp = req
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| fail(Some(e)))?;
        let body: serde_json::Value = resp.json().await.map_err(|e| fail(Some(e)))?;
        body["data"][0]["id"]
            .as_str()
            .filter(|m| !m.trim().is_empty())
            .map(|m| m.trim().to_string())
            .ok_or_else(|| fail(None))
    }
}
