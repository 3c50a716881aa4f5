//! API keys as the gateway keeps them: SHA-256 digests only. A presented bearer token is
//! hashed once and looked up by digest; the stored digest is then compared with the
//! presented one in constant time (`subtle`), so neither the lookup nor the comparison
//! tells an attacker how much of a guess was right (the lookup sees only digests, which
//! reveal nothing about a key's bytes).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A key's SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest([u8; 32]);

/// Why a configured key is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Neither `sha256:` nor `env:`.
    #[error(
        "must be `sha256:<64 hex digits>` (the key's SHA-256 digest) or `env:NAME`; keys are never written in plain text"
    )]
    Form,
    /// `sha256:` followed by something other than 64 hex digits.
    #[error("`sha256:` must be followed by 64 hex digits")]
    Digest,
    /// `env:NAME` names an unset or empty variable.
    #[error("environment variable {0} is not set")]
    Unset(String),
    /// A key shorter than 16 characters.
    #[error("a key must be at least 16 characters")]
    Short,
}

impl KeyDigest {
    /// The digest of a key.
    pub fn of(key: &str) -> KeyDigest {
        KeyDigest(Sha256::digest(key.as_bytes()).into())
    }

    /// A configured key: `sha256:<hex>` or `env:NAME` (the variable holds the key).
    pub fn from_config(raw: &str) -> Result<KeyDigest, KeyError> {
        if let Some(hex) = raw.strip_prefix("sha256:") {
            return parse_hex(hex).map(KeyDigest).ok_or(KeyError::Digest);
        }
        if let Some(name) = raw.strip_prefix("env:") {
            let key = std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| KeyError::Unset(name.to_string()))?;
            check_key(&key)?;
            return Ok(KeyDigest::of(&key));
        }
        Err(KeyError::Form)
    }

    /// Whether `other` is the same digest, compared in constant time.
    pub fn matches(&self, other: &KeyDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// The digest as 64 lowercase hex digits (`sha256:` config form without the prefix).
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // a digest is not the key, but it identifies it: never printed whole
        f.write_str("KeyDigest(***)")
    }
}

/// Checks a key's length.
pub fn check_key(key: &str) -> Result<(), KeyError> {
    if key.len() < 16 {
        Err(KeyError::Short)
    } else {
        Ok(())
    }
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_round_trips_through_its_config_form() {
        let d = KeyDigest::of("a-key-of-enough-length");
        let again = KeyDigest::from_config(&format!("sha256:{}", d.hex())).unwrap();
        assert!(d.matches(&again));
        assert!(!d.matches(&KeyDigest::of("another-key-of-length")));
        // the digest of "abc" (FIPS 180-2 test vector)
        assert_eq!(
            KeyDigest::of("abc").hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn plain_keys_bad_digests_and_unset_variables_are_refused() {
        assert_eq!(KeyDigest::from_config("sk-plain"), Err(KeyError::Form));
        assert_eq!(KeyDigest::from_config("sha256:abc"), Err(KeyError::Digest));
        let zz = format!("sha256:{}", "zz".repeat(32));
        assert_eq!(KeyDigest::from_config(&zz), Err(KeyError::Digest));
        assert!(matches!(
            KeyDigest::from_config("env:INFERPLANE_TEST_NO_SUCH_KEY_VAR"),
            Err(KeyError::Unset(_))
        ));
        assert!(format!("{:?}", KeyDigest::of("x")).contains("***"));
    }
}
