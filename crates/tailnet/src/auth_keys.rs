//! Pre-authorised keys that let a new machine join: `cwk_<id>_<secret>`.
//!
//! Control keeps only the SHA-256 of the secret, so a database leak does not
//! leak usable keys; the full key is shown once, when it is created.

use std::fmt;

use causeway_wire::UnixTime;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Prefix of every auth key, so scanners and humans recognise one.
pub const KEY_PREFIX: &str = "cwk_";
/// Bytes of randomness in a key id (shown in hex).
pub const ID_BYTES: usize = 6;
/// Bytes of randomness in a key secret (shown in hex).
pub const SECRET_BYTES: usize = 24;

/// An auth key as control stores it (the secret only as its hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthKey {
    /// Public identifier (hex), also part of the key string.
    pub id: String,
    /// SHA-256 of the secret part.
    pub secret_hash: [u8; 32],
    /// May register any number of machines (otherwise one).
    pub reusable: bool,
    /// Machines registered with it are deleted when they go away.
    pub ephemeral: bool,
    /// Tags given to machines registered with it.
    pub tags: Vec<String>,
    /// The user owning machines registered with it (`name@domain`); for a
    /// tagged key the tags, not the user, are the machines' identity in
    /// policy.
    pub user: Option<String>,
    /// When it was created.
    pub created: UnixTime,
    /// When it stops working, if ever.
    pub expires: Option<UnixTime>,
    /// Revoked by an admin.
    pub revoked: bool,
    /// Has registered at least one machine.
    pub used: bool,
}

/// What an admin asks for when creating a key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthKeySpec {
    /// See [`AuthKey::reusable`].
    pub reusable: bool,
    /// See [`AuthKey::ephemeral`].
    pub ephemeral: bool,
    /// See [`AuthKey::tags`]; each must be `tag:[a-z0-9-]+`.
    pub tags: Vec<String>,
    /// Lifetime in seconds from creation; `None` never expires.
    pub expiry_seconds: Option<u64>,
    /// See [`AuthKey::user`]; must look like `name@domain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Why an auth key was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthKeyRefusal {
    /// Not a key control issued (bad format, unknown id or wrong secret).
    #[error("auth key is not known to this control server")]
    Unknown,
    /// Past its expiry.
    #[error("auth key {id} expired")]
    Expired {
        /// Key id.
        id: String,
    },
    /// Revoked by an admin.
    #[error("auth key {id} was revoked")]
    Revoked {
        /// Key id.
        id: String,
    },
    /// A single-use key that already registered a machine.
    #[error("auth key {id} is single-use and was already used")]
    AlreadyUsed {
        /// Key id.
        id: String,
    },
}

/// A tag that is not `tag:[a-z0-9-]+`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid tag {0:?}: expected tag:NAME with NAME made of a-z, 0-9 and -")]
pub struct InvalidTag(pub String);

/// A user that is not `name@domain`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid user {0:?}: expected an e-mail-like name@domain")]
pub struct InvalidUser(pub String);

/// A freshly made key: what to store, and the full string to show once.
pub struct NewAuthKey {
    /// The stored form.
    pub key: AuthKey,
    /// The full key, `cwk_<id>_<secret>`; shown once, never stored.
    pub secret: String,
}

impl fmt::Debug for NewAuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewAuthKey")
            .field("key", &self.key)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Makes a key from caller-supplied randomness.
pub fn create(
    spec: &AuthKeySpec,
    random_id: [u8; ID_BYTES],
    random_secret: [u8; SECRET_BYTES],
    now: UnixTime,
) -> Result<NewAuthKey, InvalidTag> {
    for tag in &spec.tags {
        validate_tag(tag)?;
    }
    let id = hex::encode(random_id);
    let secret_hex = hex::encode(random_secret);
    let mut tags = spec.tags.clone();
    tags.sort();
    tags.dedup();
    let expires = spec
        .expiry_seconds
        .map(|s| now.saturating_add(i64::try_from(s).unwrap_or(i64::MAX)));
    Ok(NewAuthKey {
        key: AuthKey {
            id: id.clone(),
            secret_hash: hash_secret(&secret_hex),
            reusable: spec.reusable,
            ephemeral: spec.ephemeral,
            tags,
            user: spec.user.clone(),
            created: now,
            expires,
            revoked: false,
            used: false,
        },
        secret: format!("{KEY_PREFIX}{id}_{secret_hex}"),
    })
}

/// Splits `cwk_<id>_<secret>` into id and secret; `None` when it is not of
/// that form. Never panics on any input.
pub fn parse(key: &str) -> Option<(&str, &str)> {
    let rest = key.trim().strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let is_hex =
        |s: &str, len: usize| s.len() == len * 2 && s.bytes().all(|b| b.is_ascii_hexdigit());
    (is_hex(id, ID_BYTES) && is_hex(secret, SECRET_BYTES)).then_some((id, secret))
}

/// SHA-256 of a key's secret part.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares two hashes in time independent of where they differ.
pub fn hashes_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Checks `tag:[a-z0-9-]+`.
pub fn validate_tag(tag: &str) -> Result<(), InvalidTag> {
    let ok = tag.strip_prefix("tag:").is_some_and(|name| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    });
    if ok {
        Ok(())
    } else {
        Err(InvalidTag(tag.to_owned()))
    }
}

/// Checks that a user looks like `name@domain`, as policy names users.
pub fn validate_user(user: &str) -> Result<(), InvalidUser> {
    if crate::policy::is_user(user) {
        Ok(())
    } else {
        Err(InvalidUser(user.to_owned()))
    }
}

impl AuthKey {
    /// Checks this key against a presented secret and the time. Order of
    /// checks: secret, revoked, expired, used.
    pub fn check(&self, secret: &str, now: UnixTime) -> Result<(), AuthKeyRefusal> {
        if !hashes_equal(&self.secret_hash, &hash_secret(secret)) {
            return Err(AuthKeyRefusal::Unknown);
        }
        if self.revoked {
            return Err(AuthKeyRefusal::Revoked {
                id: self.id.clone(),
            });
        }
        if self.expires.is_some_and(|e| e <= now) {
            return Err(AuthKeyRefusal::Expired {
                id: self.id.clone(),
            });
        }
        if self.used && !self.reusable {
            return Err(AuthKeyRefusal::AlreadyUsed {
                id: self.id.clone(),
            });
        }
        Ok(())
    }

    /// Whether it could still register a machine at `now`.
    pub fn is_usable(&self, now: UnixTime) -> bool {
        !self.revoked && self.expires.is_none_or(|e| e > now) && (self.reusable || !self.used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn make(spec: AuthKeySpec) -> NewAuthKey {
        create(&spec, [1; ID_BYTES], [2; SECRET_BYTES], 1000).expect("valid spec")
    }

    #[test]
    fn created_key_parses_and_checks() {
        let new = make(AuthKeySpec::default());
        assert!(new.secret.starts_with("cwk_010101010101_0202"));
        let (id, secret) = parse(&new.secret).expect("well formed");
        assert_eq!(id, new.key.id);
        assert_eq!(new.key.check(secret, 1001), Ok(()));
    }

    #[test]
    fn refusals_are_distinct() {
        let mut key = make(AuthKeySpec {
            expiry_seconds: Some(10),
            ..Default::default()
        })
        .key;
        let secret = hex::encode([2u8; SECRET_BYTES]);
        assert_eq!(
            key.check(&hex::encode([3u8; SECRET_BYTES]), 1001),
            Err(AuthKeyRefusal::Unknown)
        );
        assert_eq!(
            key.check(&secret, 1010),
            Err(AuthKeyRefusal::Expired { id: key.id.clone() })
        );
        key.used = true;
        assert_eq!(
            key.check(&secret, 1001),
            Err(AuthKeyRefusal::AlreadyUsed { id: key.id.clone() })
        );
        key.revoked = true;
        assert_eq!(
            key.check(&secret, 1001),
            Err(AuthKeyRefusal::Revoked { id: key.id.clone() })
        );
    }

    #[test]
    fn reusable_keys_survive_use() {
        let mut key = make(AuthKeySpec {
            reusable: true,
            ..Default::default()
        })
        .key;
        key.used = true;
        assert_eq!(key.check(&hex::encode([2u8; SECRET_BYTES]), 1001), Ok(()));
    }

    #[test]
    fn tags_are_validated() {
        assert!(validate_tag("tag:router-1").is_ok());
        for bad in ["router", "tag:", "tag:Router", "tag:a_b", "tag:a b"] {
            assert_eq!(validate_tag(bad), Err(InvalidTag(bad.into())), "{bad}");
        }
        let spec = AuthKeySpec {
            tags: vec!["tag:ok".into(), "nope".into()],
            ..Default::default()
        };
        assert!(create(&spec, [0; ID_BYTES], [0; SECRET_BYTES], 0).is_err());
    }

    #[test]
    fn users_are_validated() {
        for good in ["alice@example.com", "ops.team+x@corp.example"] {
            assert_eq!(validate_user(good), Ok(()), "{good}");
        }
        for bad in [
            "alice",
            "@example.com",
            "alice@",
            "a@b@c",
            "tag:x@y",
            "al ice@x",
            "",
        ] {
            let e = validate_user(bad).expect_err("refused");
            assert_eq!(e, InvalidUser(bad.into()));
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn a_key_for_a_user_carries_it() {
        let new = make(AuthKeySpec {
            user: Some("alice@example.com".into()),
            ..Default::default()
        });
        assert_eq!(new.key.user.as_deref(), Some("alice@example.com"));
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        for bad in [
            "",
            "cwk_",
            "cwk__",
            "tskey-abc",
            "cwk_0101_02",
            "cwk_zzzzzzzzzzzz_00",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".*") {
            let _ = parse(&s);
        }

        #[test]
        fn parse_never_panics_on_near_keys(id in "[0-9a-fé_]{0,14}", secret in "[0-9a-f_é]{0,50}") {
            let _ = parse(&format!("cwk_{id}_{secret}"));
        }
    }
}
