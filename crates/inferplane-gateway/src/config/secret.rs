//! [`Secret`]: an engine's API key from the config (or `env:NAME`), usable but never printed.

/// A secret (an engine's API key): usable, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Resolves a configured value: `env:NAME` reads the variable `NAME`.
    pub fn resolve(value: &str) -> Result<Secret, SecretError> {
        match value.strip_prefix("env:") {
            Some(name) => match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(Secret(v)),
                _ => Err(SecretError::Unset(name.to_string())),
            },
            None if value.is_empty() => Err(SecretError::Empty),
            None => Ok(Secret(value.to_string())),
        }
    }
}

/// Why a configured secret could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// `env:NAME` names a variable that is unset or empty.
    #[error("environment variable {0} is not set")]
    Unset(String),
    /// An empty value.
    #[error("must not be empty; omit it instead")]
    Empty,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}
