//! A session in progress as Server-Sent Events for asciinema-player's
//! `eventsource` driver (asciinema-player 3.x, `src/driver/eventsource.js`):
//! a message with `cols`/`rows` resets the terminal (with `init`, the screen
//! so far, and `time`, the stream time in seconds); a message holding an
//! array `[time, code, data]` is one event; an event named `done` ends the
//! stream.
//!
//! The caller reads the spooled recording as it grows and feeds the bytes
//! in. What was recorded before [`LiveFeedState::start`] is sent as one
//! reset (the catch-up); later events go out one message each.

use std::collections::VecDeque;

use serde::Deserialize;
use serde_json::json;

use crate::{CastHeader, LineFramer};

/// Longest line the feed accepts; the spool holds only lines ingest accepted.
const MAX_LINE: usize = 16 * 1024 * 1024;

/// Why a spooled recording could not be followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LiveError {
    /// The first line is not a recording header.
    #[error("the spooled recording does not start with a header: {0}")]
    Header(String),
    /// A later line is not an event.
    #[error("line {line} of the spooled recording is not an event: {reason}")]
    Event {
        /// 1-based line number.
        line: u64,
        /// What the parser said.
        reason: String,
    },
}

/// Turns the growing bytes of a spooled recording into SSE messages.
#[derive(Debug)]
pub struct LiveFeedState {
    framer: LineFramer,
    lines: u64,
    size: Option<(u32, u32)>,
    catch_up: Option<CatchUp>,
    out: VecDeque<String>,
}

#[derive(Debug, Default)]
struct CatchUp {
    screen: String,
    time: f64,
}

#[derive(Deserialize)]
struct Event(f64, String, String);

impl LiveFeedState {
    /// A feed that has seen nothing yet.
    pub fn new() -> Self {
        Self {
            framer: LineFramer::new(MAX_LINE),
            lines: 0,
            size: None,
            catch_up: Some(CatchUp::default()),
            out: VecDeque::new(),
        }
    }

    /// Feeds bytes read from the recording; an incomplete last line waits for more.
    pub fn handle_bytes(&mut self, bytes: &[u8]) -> Result<(), LiveError> {
        self.framer.push(bytes).map_err(|e| LiveError::Event {
            line: self.lines + 1,
            reason: e.to_string(),
        })?;
        let lines: Vec<Vec<u8>> = self.framer.lines().map(<[u8]>::to_vec).collect();
        self.framer.consume_complete();
        for line in lines {
            self.lines += 1;
            if self.lines == 1 {
                let header =
                    CastHeader::parse(&line).map_err(|e| LiveError::Header(e.to_string()))?;
                self.size = Some((header.width, header.height));
                continue;
            }
            let Event(time, code, data) =
                serde_json::from_slice(&line).map_err(|e| LiveError::Event {
                    line: self.lines,
                    reason: e.to_string(),
                })?;
            match &mut self.catch_up {
                Some(c) => {
                    c.time = time;
                    match code.as_str() {
                        "o" => c.screen.push_str(&data),
                        "r" => {
                            if let Some(size) = parse_size(&data) {
                                self.size = Some(size);
                            }
                        }
                        _ => {}
                    }
                }
                None => self
                    .out
                    .push_back(data_message(&String::from_utf8_lossy(&line))),
            }
        }
        Ok(())
    }

    /// Ends the catch-up: queues the reset with the screen so far. Needs the header.
    pub fn start(&mut self) -> Result<(), LiveError> {
        let Some((cols, rows)) = self.size else {
            return Err(LiveError::Header(
                "the recording has no header line yet".to_owned(),
            ));
        };
        let Some(c) = self.catch_up.take() else {
            return Ok(());
        };
        // A session without a pty has no size; the player needs one.
        let (cols, rows) = if cols == 0 || rows == 0 {
            (80, 24)
        } else {
            (cols, rows)
        };
        let reset = json!({"cols": cols, "rows": rows, "time": c.time, "init": c.screen});
        self.out.push_front(data_message(&reset.to_string()));
        Ok(())
    }

    /// Queues the end of the stream: the session is stored.
    pub fn finish(&mut self) {
        self.out.push_back("event: done\ndata: \n\n".to_owned());
    }

    /// The next SSE message to send, if any.
    pub fn poll_message(&mut self) -> Option<String> {
        if self.catch_up.is_some() {
            return None;
        }
        self.out.pop_front()
    }
}

impl Default for LiveFeedState {
    fn default() -> Self {
        Self::new()
    }
}

/// One SSE `data` message; JSON text has no raw newlines, so one line is enough.
fn data_message(json: &str) -> String {
    format!("data: {json}\n\n")
}

/// An asciicast resize event's data, `COLSxROWS`.
fn parse_size(data: &str) -> Option<(u32, u32)> {
    let (cols, rows) = data.split_once('x')?;
    Some((cols.parse().ok()?, rows.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = r#"{"version":2,"width":100,"height":30,"timestamp":1700000000,"srcNodeID":"n","connectionID":"c"}"#;

    fn drain(feed: &mut LiveFeedState) -> Vec<String> {
        std::iter::from_fn(|| feed.poll_message()).collect()
    }

    #[test]
    fn catches_up_in_one_reset_then_streams_events() {
        let mut feed = LiveFeedState::new();
        let first = format!(
            "{HEADER}\n[0.5,\"o\",\"$ ls\\r\\n\"]\n[0.7,\"r\",\"120x40\"]\n[1.25,\"o\",\"a b\"]\n[2,\"o\",\"par"
        );
        feed.handle_bytes(first.as_bytes()).expect("valid");
        assert!(drain(&mut feed).is_empty(), "nothing before start");
        feed.start().expect("has a header");
        let reset = drain(&mut feed);
        assert_eq!(reset.len(), 1);
        let body: serde_json::Value = serde_json::from_str(
            reset[0]
                .strip_prefix("data: ")
                .and_then(|m| m.strip_suffix("\n\n"))
                .expect("one data message"),
        )
        .expect("JSON");
        assert_eq!(
            body,
            json!({"cols": 120, "rows": 40, "time": 1.25, "init": "$ ls\r\na b"})
        );

        feed.handle_bytes(b"t\"]\n").expect("valid");
        feed.finish();
        assert_eq!(
            drain(&mut feed),
            ["data: [2,\"o\",\"part\"]\n\n", "event: done\ndata: \n\n"]
        );
    }

    #[test]
    fn a_session_without_a_pty_gets_a_default_size() {
        let mut feed = LiveFeedState::new();
        let header = HEADER.replace("\"width\":100,\"height\":30,", "");
        feed.handle_bytes(format!("{header}\n").as_bytes())
            .expect("valid");
        feed.start().expect("has a header");
        let reset = drain(&mut feed).concat();
        assert!(
            reset.contains(r#""cols":80"#) && reset.contains(r#""rows":24"#),
            "{reset}"
        );
    }

    #[test]
    fn refuses_to_start_without_a_header_and_names_bad_lines() {
        let mut feed = LiveFeedState::new();
        feed.handle_bytes(b"{\"version\":2")
            .expect("incomplete is fine");
        assert!(matches!(feed.start(), Err(LiveError::Header(_))));

        let mut feed = LiveFeedState::new();
        let err = feed
            .handle_bytes(format!("{HEADER}\n[0,\"o\",\"x\"]\nnot json\n").as_bytes())
            .expect_err("bad event");
        assert!(matches!(err, LiveError::Event { line: 3, .. }), "{err:?}");
    }
}
