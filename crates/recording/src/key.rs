//! Where a recording is stored: `<prefix>/<node-id>/<timestamp>-<connection>.cast`.

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

/// The key for a recording; `seq` > 0 tells apart sessions that share a
/// connection and start second (SSH multiplexing).
pub fn object_key(prefix: &str, header: &CastHeader, seq: u32) -> ObjectKey {
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
    if seq > 0 {
        key.push_str(&format!("-{seq}"));
    }
    key.push_str(".cast");
    ObjectKey(key)
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
            0,
        );
        assert_eq!(
            key.as_str(),
            "recordings/prod/nAbC1/20231114T221320Z-c0ffee.cast"
        );
        let key = object_key("", &header("n", "c", 0), 2);
        assert_eq!(key.as_str(), "n/19700101T000000Z-c-2.cast");
    }

    #[test]
    fn defuses_path_traversal() {
        let key = object_key("p", &header("..", "../../etc/passwd", 0), 0);
        assert_eq!(key.as_str(), "p/_./19700101T000000Z-_._.._etc_passwd.cast");
    }

    proptest! {
        #[test]
        fn keys_stay_inside_the_prefix(node in "\\PC{0,40}", conn in "\\PC{0,40}", ts in 0i64..10_000_000_000) {
            let key = object_key("rec", &header(&node, &conn, ts), 0);
            let parts: Vec<&str> = key.as_str().split('/').collect();
            prop_assert_eq!(parts.len(), 3);
            prop_assert_eq!(parts[0], "rec");
            prop_assert!(parts.iter().all(|p| !p.is_empty() && !p.starts_with('.')));
            prop_assert!(key.as_str().ends_with(".cast"));
        }
    }
}
