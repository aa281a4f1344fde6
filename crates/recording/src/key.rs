//! Where a recording is stored:
//! `<prefix>/<node-id>/<timestamp>-<connection>-<nonce>.cast`.
//!
//! The nonce is 64 random bits the caller draws for each recording (this
//! core has no RNG). Without it a key follows from the sender's header, so
//! anyone who can send a header can name, predict and race for the key of
//! somebody else's recording; with it two recordings never share a key and
//! storage can be written create-only.

use time::OffsetDateTime;

use crate::CastHeader;

/// A storage key, safe as both an S3 key and a relative file path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// The key as text, `/`-separated.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The key for a recording; `nonce` is drawn at random for each recording.
pub fn object_key(prefix: &str, header: &CastHeader, nonce: u64) -> ObjectKey {
    let stamp = OffsetDateTime::from_unix_timestamp(header.timestamp)
        .map(|t| {
            format!(
                "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        })
        .unwrap_or_else(|_| header.timestamp.to_string());
    let mut key = String::new();
    for part in prefix.split('/').filter(|p| !p.is_empty()) {
        key.push_str(&segment(part));
        key.push('/');
    }
    key.push_str(&segment(&header.src_node_id));
    key.push('/');
    key.push_str(&stamp);
    key.push('-');
    key.push_str(&segment(&header.connection_id));
    key.push_str(&format!("-{nonce:016x}.cast"));
    ObjectKey(key)
}

/// `key` with its nonce replaced by `nonce` (appended, for a key written
/// before keys had one): a new key for a recording whose key turned out to
/// be taken in storage.
pub fn with_nonce(key: &str, nonce: u64) -> String {
    let stem = key.strip_suffix(".cast").unwrap_or(key);
    let stem = match stem.rsplit_once('-') {
        Some((rest, old)) if old.len() == 16 && old.bytes().all(|b| b.is_ascii_hexdigit()) => rest,
        _ => stem,
    };
    format!("{stem}-{nonce:016x}.cast")
}

/// One path segment from untrusted text: only `[A-Za-z0-9._-]`, no leading
/// dot (so never `.` or `..`), at most 128 bytes.
pub(crate) fn segment(raw: &str) -> String {
    let mut out: String = raw
        .chars()
        .take(128)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with('.') {
        out.replace_range(..1, "_");
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(node: &str, conn: &str, timestamp: i64) -> CastHeader {
        CastHeader {
            version: 2,
            width: 80,
            height: 24,
            timestamp,
            command: String::new(),
            env: Default::default(),
            src_node: String::new(),
            src_node_id: node.to_owned(),
            src_node_tags: vec![],
            src_node_user_id: None,
            src_node_user: String::new(),
            ssh_user: String::new(),
            local_user: String::new(),
            connection_id: conn.to_owned(),
        }
    }

    #[test]
    fn lays_out_prefix_node_time_connection() {
        let key = object_key(
            "/recordings/prod/",
            &header("nAbC1", "c0ffee", 1_700_000_000),
            0x0123_4567_89ab_cdef,
        );
        assert_eq!(
            key.as_str(),
            "recordings/prod/nAbC1/20231114T221320Z-c0ffee-0123456789abcdef.cast"
        );
        let key = object_key("", &header("n", "c", 0), 2);
        assert_eq!(key.as_str(), "n/19700101T000000Z-c-0000000000000002.cast");
    }

    #[test]
    fn the_same_header_gives_different_keys_with_different_nonces() {
        let h = header("n", "c", 0);
        assert_ne!(object_key("p", &h, 1), object_key("p", &h, 2));
    }

    #[test]
    fn a_new_nonce_replaces_the_old_one_or_is_appended() {
        let key = object_key("p", &header("n", "c", 0), 7);
        assert_eq!(
            with_nonce(key.as_str(), 0xff),
            "p/n/19700101T000000Z-c-00000000000000ff.cast"
        );
        // A key from before nonces keeps all it had.
        assert_eq!(
            with_nonce("p/n/19700101T000000Z-c-2.cast", 1),
            "p/n/19700101T000000Z-c-2-0000000000000001.cast"
        );
    }

    #[test]
    fn defuses_path_traversal() {
        let key = object_key("p", &header("..", "../../etc/passwd", 0), 0);
        assert_eq!(
            key.as_str(),
            "p/_./19700101T000000Z-_._.._etc_passwd-0000000000000000.cast"
        );
    }

    proptest! {
        #[test]
        fn keys_stay_inside_the_prefix(node in "\\PC{0,40}", conn in "\\PC{0,40}", ts in 0i64..10_000_000_000, nonce: u64) {
            let key = object_key("rec", &header(&node, &conn, ts), nonce);
            let parts: Vec<&str> = key.as_str().split('/').collect();
            prop_assert_eq!(parts.len(), 3);
            prop_assert_eq!(parts[0], "rec");
            prop_assert!(parts.iter().all(|p| !p.is_empty() && !p.starts_with('.')));
            prop_assert!(key.as_str().ends_with(".cast"));
        }
    }
}
