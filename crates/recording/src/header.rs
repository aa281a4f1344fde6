//! The asciicast v2 header line, with the fields Tailscale SSH adds to name
//! the session (see Tailscale's `sessionrecording.CastHeader`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The first line of an asciicast v2 recording, as Tailscale SSH writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CastHeader {
    /// asciicast format version; only 2 is accepted.
    pub version: u32,
    /// Terminal width in columns (0 for sessions without a pty).
    #[serde(default)]
    pub width: u32,
    /// Terminal height in rows (0 for sessions without a pty).
    #[serde(default)]
    pub height: u32,
    /// Unix time (seconds) when the recording started.
    pub timestamp: i64,
    /// The command run, empty for an interactive shell.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub command: String,
    /// Environment of the session (Tailscale sends only `TERM`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// MagicDNS name of the node the connection came from.
    #[serde(default)]
    pub src_node: String,
    /// Stable node ID of the node the connection came from.
    #[serde(rename = "srcNodeID")]
    pub src_node_id: String,
    /// Tags of the source node, when it is tagged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub src_node_tags: Vec<String>,
    /// User ID owning the source node, when it is not tagged.
    #[serde(
        rename = "srcNodeUserID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub src_node_user_id: Option<i64>,
    /// Login name owning the source node, when it is not tagged.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub src_node_user: String,
    /// User name as presented by the SSH client.
    #[serde(default)]
    pub ssh_user: String,
    /// Effective user name on the SSH server.
    #[serde(default)]
    pub local_user: String,
    /// Identifies the SSH connection; shared by sessions multiplexed on it.
    #[serde(rename = "connectionID")]
    pub connection_id: String,
}

/// Why a header line was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    /// The line is not a JSON object with the asciicast header fields.
    #[error("recording header is not a valid asciicast v2 header object: {0}")]
    Json(String),
    /// The version field is not 2.
    #[error("recording header has version {0}, expected 2 (asciicast v2)")]
    Version(u32),
    /// A field that names the session is empty.
    #[error("recording header field `{0}` is empty, expected the session's {1}")]
    Empty(&'static str, &'static str),
    /// The timestamp is negative.
    #[error("recording header timestamp {0} is negative, expected Unix seconds")]
    Timestamp(i64),
}

impl CastHeader {
    /// Parses and validates one header line (without its trailing newline).
    pub fn parse(line: &[u8]) -> Result<Self, HeaderError> {
        let header: Self =
            serde_json::from_slice(line).map_err(|e| HeaderError::Json(e.to_string()))?;
        header.validate()?;
        Ok(header)
    }

    /// Checks the fields the recorder relies on to file the recording.
    pub fn validate(&self) -> Result<(), HeaderError> {
        if self.version != 2 {
            return Err(HeaderError::Version(self.version));
        }
        if self.timestamp < 0 {
            return Err(HeaderError::Timestamp(self.timestamp));
        }
        if self.src_node_id.is_empty() {
            return Err(HeaderError::Empty("srcNodeID", "source node ID"));
        }
        if self.connection_id.is_empty() {
            return Err(HeaderError::Empty("connectionID", "SSH connection ID"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TAILSCALE: &str = r#"{"version":2,"width":80,"height":24,"timestamp":1700000000,"env":{"TERM":"xterm-256color"},"srcNode":"laptop.tail-scale.ts.net","srcNodeID":"nAbC123CNTRL","srcNodeUserID":42,"srcNodeUser":"alice@example.com","sshUser":"root","localUser":"root","connectionID":"c0ffee"}"#;

    #[test]
    fn parses_a_tailscale_header() {
        let h = CastHeader::parse(TAILSCALE.as_bytes()).expect("valid header");
        assert_eq!(h.version, 2);
        assert_eq!((h.width, h.height), (80, 24));
        assert_eq!(h.src_node_id, "nAbC123CNTRL");
        assert_eq!(h.src_node_user_id, Some(42));
        assert_eq!(h.src_node_user, "alice@example.com");
        assert_eq!(h.connection_id, "c0ffee");
        assert_eq!(
            h.env.get("TERM").map(String::as_str),
            Some("xterm-256color")
        );
    }

    #[test]
    fn refuses_version_1() {
        let line = TAILSCALE.replace(r#""version":2"#, r#""version":1"#);
        assert_eq!(
            CastHeader::parse(line.as_bytes()),
            Err(HeaderError::Version(1))
        );
    }

    #[test]
    fn refuses_missing_node_id() {
        let line = TAILSCALE.replace(r#""srcNodeID":"nAbC123CNTRL""#, r#""srcNodeID":"""#);
        assert_eq!(
            CastHeader::parse(line.as_bytes()),
            Err(HeaderError::Empty("srcNodeID", "source node ID"))
        );
    }

    #[test]
    fn refuses_an_event_line_as_header() {
        let err = CastHeader::parse(br#"[0.1,"o","hi"]"#).expect_err("not a header");
        assert!(matches!(err, HeaderError::Json(_)), "{err:?}");
    }

    proptest! {
        #[test]
        fn round_trips(
            width in 0u32..1000, height in 0u32..1000, timestamp in 0i64..4_000_000_000,
            node in "[a-zA-Z0-9]{1,20}", conn in "[a-f0-9]{1,32}", user in "\\PC{0,20}",
            command in "\\PC{0,40}",
        ) {
            let h = CastHeader {
                version: 2, width, height, timestamp, command,
                env: BTreeMap::from([("TERM".to_owned(), "xterm".to_owned())]),
                src_node: "n.ts.net".to_owned(), src_node_id: node, src_node_tags: vec![],
                src_node_user_id: Some(7), src_node_user: user.clone(),
                ssh_user: user.clone(), local_user: user, connection_id: conn,
            };
            let line = serde_json::to_vec(&h).expect("serializes");
            prop_assert_eq!(CastHeader::parse(&line), Ok(h));
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = CastHeader::parse(&bytes);
        }
    }
}
