//! Which stored recordings are old enough to delete.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

/// Keep recordings for `max_age`, then delete them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Age past which a recording is deleted.
    pub max_age: Duration,
}

impl RetentionPolicy {
    /// A policy keeping recordings for `days` days.
    pub fn days(days: u32) -> Self {
        Self {
            max_age: Duration::from_secs(u64::from(days) * 86_400),
        }
    }
}

/// A recording as the storage lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecording {
    /// Its storage key.
    pub key: String,
    /// When it was stored.
    pub modified: SystemTime,
}

/// The keys to delete at `now`, in order; a modification time in the future
/// (clock skew) keeps the recording.
pub fn expired(
    policy: RetentionPolicy,
    stored: &[StoredRecording],
    now: SystemTime,
) -> BTreeSet<String> {
    stored
        .iter()
        .filter(|r| {
            now.duration_since(r.modified)
                .is_ok_and(|age| age > policy.max_age)
        })
        .map(|r| r.key.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletes_only_what_is_older_than_the_limit() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100 * 86_400);
        let at = |days_ago: u64| now - Duration::from_secs(days_ago * 86_400);
        let stored = vec![
            StoredRecording {
                key: "a".into(),
                modified: at(31),
            },
            StoredRecording {
                key: "b".into(),
                modified: at(30),
            },
            StoredRecording {
                key: "c".into(),
                modified: at(1),
            },
            StoredRecording {
                key: "d".into(),
                modified: now + Duration::from_secs(60),
            },
        ];
        let gone = expired(RetentionPolicy::days(30), &stored, now);
        assert_eq!(gone, BTreeSet::from(["a".to_owned()]));
    }
}
