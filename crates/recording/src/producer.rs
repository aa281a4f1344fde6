//! The producer's side of a recording, sans-IO: the header built from what
//! the SSH server knows about a session, the encoder that turns terminal
//! output into asciicast v2 event lines, the parser of the recorder's reply
//! frames and the ack watchdog that decides when a silent recorder has
//! failed. Time comes in as `now` or as the offset since the session began.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::header::CastHeader;
use crate::ingest::AckFrame;

/// What a producer knows about the session it records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Name of the node the connection came from (an address for stock OpenSSH).
    pub src_node: String,
    /// Stable ID the recorder files the session under.
    pub src_node_id: String,
    /// User name as presented by the SSH client.
    pub ssh_user: String,
    /// Effective user name on this host.
    pub local_user: String,
    /// Identifies the SSH connection.
    pub connection_id: String,
    /// The command run, empty for an interactive shell.
    pub command: String,
    /// `TERM` of the session, when known.
    pub term: Option<String>,
}

impl SessionInfo {
    /// The header line (with its newline) for a session that started at
    /// `timestamp` (Unix seconds) on a terminal of `width` x `height`.
    pub fn header_line(&self, width: u16, height: u16, timestamp: i64) -> Vec<u8> {
        let header = CastHeader {
            version: 2,
            width: u32::from(width),
            height: u32::from(height),
            timestamp,
            command: self.command.clone(),
            env: self
                .term
                .iter()
                .map(|t| ("TERM".to_owned(), t.clone()))
                .collect::<BTreeMap<_, _>>(),
            src_node: self.src_node.clone(),
            src_node_id: self.src_node_id.clone(),
            src_node_tags: Vec::new(),
            src_node_user_id: None,
            src_node_user: String::new(),
            ssh_user: self.ssh_user.clone(),
            local_user: self.local_user.clone(),
            connection_id: self.connection_id.clone(),
        };
        json_line(&header)
    }
}

/// The connection ID for an OpenSSH session, from `SSH_CONNECTION`
/// (`client-ip client-port server-ip server-port`): the four fields joined
/// by `-`, unique while the connection lives. `None` if the value is not
/// four fields.
pub fn connection_id_from_ssh(ssh_connection: &str) -> Option<String> {
    let fields: Vec<&str> = ssh_connection.split_whitespace().collect();
    (fields.len() == 4).then(|| fields.join("-"))
}

/// The client's address from `SSH_CONNECTION`, if it has one.
pub fn client_from_ssh(ssh_connection: &str) -> Option<String> {
    let mut fields = ssh_connection.split_whitespace();
    let client = fields.next()?;
    (fields.count() == 3).then(|| client.to_owned())
}

/// Turns terminal output into asciicast v2 event lines. A read from a pty
/// can end inside a UTF-8 sequence; the encoder holds such a tail back until
/// the next read completes it, so a character is never split into two
/// replacement characters. Bytes that are not UTF-8 at all become U+FFFD.
#[derive(Debug, Default)]
pub struct EventEncoder {
    /// An incomplete UTF-8 sequence from the end of the last chunk (< 4 bytes).
    pending: Vec<u8>,
}

impl EventEncoder {
    /// A fresh encoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The `"o"` event line for `chunk` of output at `elapsed` since the
    /// session began, or `None` if the chunk held only an incomplete tail.
    pub fn output(&mut self, chunk: &[u8], elapsed: Duration) -> Option<Vec<u8>> {
        self.pending.extend_from_slice(chunk);
        let keep = incomplete_tail_len(&self.pending);
        let tail = self.pending.split_off(self.pending.len() - keep);
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending = tail;
        (!text.is_empty()).then(|| event_line(elapsed, "o", &text))
    }

    /// The `"o"` event for whatever incomplete tail is left at the end of
    /// the session (as replacement characters), if any.
    pub fn finish(&mut self, elapsed: Duration) -> Option<Vec<u8>> {
        let rest = std::mem::take(&mut self.pending);
        (!rest.is_empty()).then(|| event_line(elapsed, "o", &String::from_utf8_lossy(&rest)))
    }

    /// The `"r"` event line for a terminal resized to `width` x `height`.
    pub fn resize(&self, width: u16, height: u16, elapsed: Duration) -> Vec<u8> {
        event_line(elapsed, "r", &format!("{width}x{height}"))
    }
}

/// How many bytes at the end of `bytes` start a UTF-8 sequence that is not
/// complete yet but could still become valid.
fn incomplete_tail_len(bytes: &[u8]) -> usize {
    // A sequence is at most 4 bytes, so only the last 3 can be an unfinished one.
    for back in 1..=bytes.len().min(3) {
        let start = bytes.len() - back;
        let lead = bytes[start];
        let needed = match lead {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            0x80..=0xBF => continue, // a continuation byte: look further back
            _ => return 0,
        };
        if needed <= back {
            return 0; // the sequence is complete (or invalid, for the decoder to replace)
        }
        return match std::str::from_utf8(&bytes[start..]) {
            // A valid prefix of a sequence reports "incomplete" with no error length.
            Err(e) if e.error_len().is_none() => back,
            _ => 0,
        };
    }
    0
}

fn event_line(elapsed: Duration, code: &str, data: &str) -> Vec<u8> {
    json_line(&(elapsed.as_secs_f64(), code, data))
}

fn json_line(value: &impl serde::Serialize) -> Vec<u8> {
    // Serialising strings, numbers and maps of strings cannot fail.
    let mut line = serde_json::to_vec(value).expect("plain JSON values serialise");
    line.push(b'\n');
    line
}

/// A reply line that is neither `{"ack":N}` nor `{"error":"…"}`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the recorder sent a reply that is not an ack or an error frame: {0}")]
pub struct ReplyError(pub String);

/// Parses one line (without its newline) of the `/v2/record` response.
pub fn parse_reply(line: &[u8]) -> Result<AckFrame, ReplyError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Reply {
        ack: Option<u64>,
        error: Option<String>,
    }
    let reply: Reply = serde_json::from_slice(line).map_err(|e| ReplyError(e.to_string()))?;
    match reply {
        Reply {
            error: Some(e),
            ack: _,
        } => Ok(AckFrame::Error(e)),
        Reply {
            ack: Some(n),
            error: None,
        } => Ok(AckFrame::Ack(n)),
        Reply {
            ack: None,
            error: None,
        } => Err(ReplyError("neither `ack` nor `error` is set".to_owned())),
    }
}

/// Why the watchdog gave up on the recorder.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RecorderFailed {
    /// Sent bytes waited longer than the ack timeout without an ack.
    #[error(
        "the recorder acknowledged nothing for {waited:?} ({unacked} bytes waiting), the limit is {limit:?}"
    )]
    AckTimeout {
        /// How long the oldest unacknowledged progress has waited.
        waited: Duration,
        /// The configured ack timeout.
        limit: Duration,
        /// Bytes sent but not acknowledged.
        unacked: u64,
    },
    /// The recorder acknowledged bytes that were never sent.
    #[error("the recorder acknowledged {acked} bytes, but only {sent} were sent")]
    AckBeyondSent {
        /// The ack received.
        acked: u64,
        /// Bytes sent so far.
        sent: u64,
    },
    /// The recorder sent an ack smaller than an earlier one.
    #[error("the recorder's ack went back from {previous} to {acked} bytes")]
    AckWentBack {
        /// The earlier ack.
        previous: u64,
        /// The smaller one.
        acked: u64,
    },
    /// The recorder ended the recording with an error frame.
    #[error("the recorder ended the recording: {0}")]
    Refused(String),
}

/// Watches acks on one recording: the recorder has failed when bytes sent
/// have waited `ack_timeout` without the ack moving (Tailscale SSH uses
/// 30 s, `uploadAckWindow`). An idle session with everything acked never
/// times out, so a recorder that only acks new data is not cut off.
#[derive(Debug)]
pub struct AckWatchdogState {
    ack_timeout: Duration,
    sent: u64,
    acked: u64,
    /// Since when unacknowledged bytes have waited without the ack moving.
    waiting_since: Option<Instant>,
    failed: Option<RecorderFailed>,
}

impl AckWatchdogState {
    /// A watchdog for a recording with `ack_timeout`.
    pub fn new(ack_timeout: Duration) -> Self {
        Self {
            ack_timeout,
            sent: 0,
            acked: 0,
            waiting_since: None,
            failed: None,
        }
    }

    /// `n` more bytes of the recording were handed to the connection at `now`.
    pub fn handle_sent(&mut self, n: u64, now: Instant) {
        self.sent += n;
        if self.sent > self.acked && self.waiting_since.is_none() {
            self.waiting_since = Some(now);
        }
    }

    /// A reply frame arrived at `now`.
    pub fn handle_reply(&mut self, reply: AckFrame, now: Instant) {
        if self.failed.is_some() {
            return;
        }
        let acked = match reply {
            AckFrame::Error(e) => {
                self.failed = Some(RecorderFailed::Refused(e));
                return;
            }
            AckFrame::Ack(n) => n,
        };
        if acked > self.sent {
            self.failed = Some(RecorderFailed::AckBeyondSent {
                acked,
                sent: self.sent,
            });
            return;
        }
        if acked < self.acked {
            self.failed = Some(RecorderFailed::AckWentBack {
                previous: self.acked,
                acked,
            });
            return;
        }
        if acked > self.acked || self.waiting_since.is_none() {
            self.waiting_since = (acked < self.sent).then_some(now);
        }
        self.acked = acked;
    }

    /// When the shell must call [`Self::poll_failure`] next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.failed.is_some() {
            return None;
        }
        self.waiting_since.map(|since| since + self.ack_timeout)
    }

    /// The failure, once the recorder has failed by `now`.
    pub fn poll_failure(&mut self, now: Instant) -> Option<&RecorderFailed> {
        if self.failed.is_none()
            && let Some(since) = self.waiting_since
        {
            let waited = now.saturating_duration_since(since);
            if waited >= self.ack_timeout {
                self.failed = Some(RecorderFailed::AckTimeout {
                    waited,
                    limit: self.ack_timeout,
                    unacked: self.sent - self.acked,
                });
            }
        }
        self.failed.as_ref()
    }

    /// Bytes handed to the connection so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Bytes the recorder acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::validate_event;
    use proptest::prelude::*;

    const T: Duration = Duration::from_secs(30);

    fn info() -> SessionInfo {
        SessionInfo {
            src_node: "198.19.0.2".to_owned(),
            src_node_id: "web1".to_owned(),
            ssh_user: "root".to_owned(),
            local_user: "root".to_owned(),
            connection_id: "198.19.0.2-5555-198.19.0.1-22".to_owned(),
            command: "echo hi".to_owned(),
            term: Some("xterm-256color".to_owned()),
        }
    }

    #[test]
    fn header_is_one_valid_tailscale_line() {
        let line = info().header_line(120, 40, 1_700_000_000);
        assert_eq!(line.last(), Some(&b'\n'));
        let h = CastHeader::parse(&line[..line.len() - 1]).expect("valid header");
        assert_eq!((h.width, h.height, h.timestamp), (120, 40, 1_700_000_000));
        assert_eq!(h.src_node_id, "web1");
        assert_eq!(h.connection_id, "198.19.0.2-5555-198.19.0.1-22");
        assert_eq!(h.command, "echo hi");
        assert_eq!(
            (h.ssh_user.as_str(), h.local_user.as_str()),
            ("root", "root")
        );
        assert_eq!(
            h.env.get("TERM").map(String::as_str),
            Some("xterm-256color")
        );
    }

    #[test]
    fn reads_ssh_connection() {
        let v = "198.19.0.2 51234 198.19.0.1 22";
        assert_eq!(
            connection_id_from_ssh(v).as_deref(),
            Some("198.19.0.2-51234-198.19.0.1-22")
        );
        assert_eq!(client_from_ssh(v).as_deref(), Some("198.19.0.2"));
        assert_eq!(connection_id_from_ssh("198.19.0.2 51234"), None);
        assert_eq!(client_from_ssh(""), None);
    }

    #[test]
    fn holds_back_a_split_character() {
        let mut enc = EventEncoder::new();
        let ms = Duration::from_millis(250);
        // "é" is C3 A9; the first read ends after C3.
        assert_eq!(
            enc.output(b"caf\xC3", ms),
            Some(b"[0.25,\"o\",\"caf\"]\n".to_vec())
        );
        assert_eq!(
            enc.output(b"\xA9!", ms * 2),
            Some("[0.5,\"o\",\"\u{e9}!\"]\n".as_bytes().to_vec())
        );
        assert_eq!(enc.output(b"\xF0\x9F", ms), None, "only a partial emoji");
        assert_eq!(
            enc.finish(ms),
            Some("[0.25,\"o\",\"\u{fffd}\"]\n".as_bytes().to_vec())
        );
    }

    #[test]
    fn replaces_bytes_that_are_not_utf8() {
        let mut enc = EventEncoder::new();
        let line = enc.output(b"a\xFFb\xC3(", Duration::ZERO).expect("a line");
        assert_eq!(line, "[0.0,\"o\",\"a\u{fffd}b\u{fffd}(\"]\n".as_bytes());
        assert_eq!(enc.finish(Duration::ZERO), None);
    }

    #[test]
    fn resize_event() {
        let enc = EventEncoder::new();
        assert_eq!(
            enc.resize(100, 30, Duration::from_secs(2)),
            b"[2.0,\"r\",\"100x30\"]\n"
        );
    }

    #[test]
    fn parses_replies() {
        assert_eq!(parse_reply(br#"{"ack":42}"#), Ok(AckFrame::Ack(42)));
        assert_eq!(
            parse_reply(br#"{"error":"bad header"}"#),
            Ok(AckFrame::Error("bad header".to_owned()))
        );
        assert!(parse_reply(br#"{}"#).is_err());
        assert!(parse_reply(br#"{"ack":-1}"#).is_err());
        assert!(parse_reply(b"ack 4").is_err());
    }

    #[test]
    fn times_out_when_acks_stop() {
        let t0 = Instant::now();
        let mut w = AckWatchdogState::new(T);
        assert_eq!(w.poll_timeout(), None, "nothing sent, nothing to wait for");
        w.handle_sent(100, t0);
        assert_eq!(w.poll_timeout(), Some(t0 + T));
        w.handle_reply(AckFrame::Ack(60), t0 + Duration::from_secs(10));
        assert_eq!(
            w.poll_timeout(),
            Some(t0 + Duration::from_secs(40)),
            "the ack moved"
        );
        w.handle_reply(AckFrame::Ack(60), t0 + Duration::from_secs(20));
        assert_eq!(
            w.poll_timeout(),
            Some(t0 + Duration::from_secs(40)),
            "a repeated ack is no progress"
        );
        assert_eq!(w.poll_failure(t0 + Duration::from_secs(39)), None);
        assert_eq!(
            w.poll_failure(t0 + Duration::from_secs(40)),
            Some(&RecorderFailed::AckTimeout {
                waited: T,
                limit: T,
                unacked: 40
            })
        );
        assert_eq!(w.poll_timeout(), None);
    }

    #[test]
    fn an_idle_acked_session_never_times_out() {
        let t0 = Instant::now();
        let mut w = AckWatchdogState::new(T);
        w.handle_sent(10, t0);
        w.handle_reply(AckFrame::Ack(10), t0);
        assert_eq!(w.poll_timeout(), None);
        assert_eq!(w.poll_failure(t0 + Duration::from_secs(3600)), None);
        w.handle_sent(5, t0 + Duration::from_secs(3600));
        assert_eq!(
            w.poll_timeout(),
            Some(t0 + Duration::from_secs(3600) + T),
            "counts from the new send"
        );
    }

    /// The failure after 10 bytes were sent and `replies` came back.
    fn failure_after(replies: &[AckFrame]) -> Option<RecorderFailed> {
        let t0 = Instant::now();
        let mut w = AckWatchdogState::new(T);
        w.handle_sent(10, t0);
        for reply in replies {
            w.handle_reply(reply.clone(), t0);
        }
        w.poll_failure(t0).cloned()
    }

    #[test]
    fn error_frames_and_impossible_acks_fail() {
        assert_eq!(
            failure_after(&[AckFrame::Error("disk full".to_owned())]),
            Some(RecorderFailed::Refused("disk full".to_owned()))
        );
        assert_eq!(
            failure_after(&[AckFrame::Ack(11)]),
            Some(RecorderFailed::AckBeyondSent {
                acked: 11,
                sent: 10
            })
        );
        assert_eq!(
            failure_after(&[AckFrame::Ack(8), AckFrame::Ack(5)]),
            Some(RecorderFailed::AckWentBack {
                previous: 8,
                acked: 5
            })
        );
        assert_eq!(failure_after(&[AckFrame::Ack(8), AckFrame::Ack(10)]), None);
    }

    proptest! {
        /// However a stream of bytes is cut into reads, the events carry
        /// exactly its text: lossless for UTF-8 input.
        #[test]
        fn split_reads_keep_the_text(text in "\\PC{0,200}", cuts in proptest::collection::vec(0usize..400, 0..10)) {
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut enc = EventEncoder::new();
            let mut out = String::new();
            let mut start = 0;
            for end in cuts.into_iter().chain([bytes.len()]) {
                if let Some(line) = enc.output(&bytes[start..end], Duration::from_millis(end as u64)) {
                    prop_assert_eq!(validate_event(&line[..line.len() - 1], 2), Ok(()));
                    let (_, code, data): (f64, String, String) = serde_json::from_slice(&line).expect("event");
                    prop_assert_eq!(code, "o");
                    out.push_str(&data);
                }
                start = end;
            }
            prop_assert_eq!(enc.finish(Duration::ZERO), None);
            prop_assert_eq!(out, text);
        }

        /// Arbitrary bytes always give valid events, and the same text as a
        /// lossy decode of the whole, whatever the cuts.
        #[test]
        fn arbitrary_bytes_decode_like_the_whole(bytes in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..300) {
            let cut = cut.min(bytes.len());
            let mut enc = EventEncoder::new();
            let mut out = String::new();
            for chunk in [&bytes[..cut], &bytes[cut..]] {
                if let Some(line) = enc.output(chunk, Duration::ZERO) {
                    let (_, _, data): (f64, String, String) = serde_json::from_slice(&line).expect("event");
                    out.push_str(&data);
                }
            }
            if let Some(line) = enc.finish(Duration::ZERO) {
                let (_, _, data): (f64, String, String) = serde_json::from_slice(&line).expect("event");
                out.push_str(&data);
            }
            prop_assert_eq!(out, String::from_utf8_lossy(&bytes).into_owned());
        }

        #[test]
        fn reply_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_reply(&bytes);
        }

        /// On a virtual clock: the watchdog fails exactly when some progress
        /// has waited the timeout, and never while everything is acked.
        #[test]
        fn watchdog_on_a_virtual_clock(steps in proptest::collection::vec((0u64..20_000, 0u64..100, any::<bool>()), 1..200)) {
            let t0 = Instant::now();
            let mut w = AckWatchdogState::new(T);
            let mut now = t0;
            for (step_ms, n, ack) in steps {
                now += Duration::from_millis(step_ms);
                if let Some(deadline) = w.poll_timeout() {
                    prop_assert!(w.acked() < w.sent());
                    if now >= deadline {
                        prop_assert!(w.poll_failure(now).is_some());
                        break;
                    }
                }
                prop_assert!(w.poll_failure(now).is_none());
                if ack {
                    w.handle_reply(AckFrame::Ack(w.sent()), now);
                    prop_assert_eq!(w.poll_timeout(), None);
                } else {
                    w.handle_sent(n, now);
                }
            }
        }
    }
}
