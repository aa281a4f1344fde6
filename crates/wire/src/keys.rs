//! Curve25519 keys: machine keys (authenticate a node to control), node keys
//! (its WireGuard key) and control's own key.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a key could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Not base64.
    #[error("key is not valid base64: {0}")]
    Base64(String),
    /// Decoded to the wrong number of bytes.
    #[error("key must be 32 bytes, got {0}")]
    Length(usize),
}

/// A Curve25519 public key, shown and serialised as standard base64 (the
/// same form `wg` uses).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Wraps raw key bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw key bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether this is a point of small order (or its non-canonical twin):
    /// a Diffie-Hellman with it yields all zeros whatever the secret, so
    /// anyone could "prove" they hold it. Checked by multiplying with a
    /// clamped scalar, which clears the cofactor: the result is zero exactly
    /// for the small-order points (RFC 7748 §6.1).
    pub fn is_small_order(&self) -> bool {
        let probe = x25519_dalek::StaticSecret::from([1; 32]);
        !probe
            .diffie_hellman(&x25519_dalek::PublicKey::from(self.0))
            .was_contributory()
    }

    /// A short, stable form for logs: the first 8 base64 characters.
    pub fn short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(8);
        s
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.short())
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        decode32(s).map(Self)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A Curve25519 private key. It never prints: `Debug` and `Display` are
/// redacted, and it is not `Serialize`.
#[derive(Clone)]
pub struct PrivateKey(x25519_dalek::StaticSecret);

impl PrivateKey {
    /// Builds a key from 32 random bytes supplied by the caller (cores take
    /// their randomness from outside).
    pub fn from_random_bytes(bytes: [u8; 32]) -> Self {
        Self(x25519_dalek::StaticSecret::from(bytes))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    /// The raw (clamped on use) secret bytes, for handing to WireGuard and
    /// Noise implementations and for persisting with 0600 permissions.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The base64 form, for writing the key file or a wg-quick config.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.to_bytes())
    }

    /// Reads the base64 form.
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        decode32(s).map(Self::from_random_bytes)
    }

    /// The dalek secret, for boringtun.
    pub fn to_static_secret(&self) -> x25519_dalek::StaticSecret {
        self.0.clone()
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PrivateKey(<redacted>, public {})",
            self.public_key().short()
        )
    }
}

fn decode32(s: &str) -> Result<[u8; 32], KeyError> {
    let bytes = STANDARD
        .decode(s.trim())
        .map_err(|e| KeyError::Base64(e.to_string()))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| KeyError::Length(bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn public_key_round_trips_through_base64() {
        let key = PrivateKey::from_random_bytes([7; 32]).public_key();
        let parsed: PublicKey = key.to_string().parse().expect("valid key");
        assert_eq!(parsed, key);
    }

    #[test]
    fn private_key_debug_is_redacted() {
        let key = PrivateKey::from_random_bytes([9; 32]);
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.to_base64()));
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn wrong_length_is_refused_with_the_length() {
        assert_eq!("AAAA".parse::<PublicKey>(), Err(KeyError::Length(3)));
    }

    proptest! {
        #[test]
        fn any_string_parses_or_errors_without_panicking(s in ".*") {
            let _ = s.parse::<PublicKey>();
        }

        #[test]
        fn any_bytes_round_trip(bytes in any::<[u8; 32]>()) {
            let key = PublicKey::from_bytes(bytes);
            let json = serde_json::to_string(&key).expect("serialises");
            let back: PublicKey = serde_json::from_str(&json).expect("parses");
            prop_assert_eq!(back, key);
        }
    }
}
