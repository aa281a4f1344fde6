//! When the recorder acknowledges bytes, and when it gives up on a silent
//! sender. Tailscale SSH closes a recording whose acks stop for 30 s
//! (`uploadAckWindow` in its `sessionrecording` package), so an ack goes out
//! whenever more bytes become durable and otherwise at a fixed interval.

use std::time::{Duration, Instant};

use serde::Serialize;

/// One frame of the `/v2/record` response: newline-delimited JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AckFrame {
    /// Bytes of the request body stored durably so far, counted from its start.
    Ack(u64),
    /// Why the recorder stopped; always the last frame.
    Error(String),
}

impl AckFrame {
    /// The frame as sent on the wire, one JSON object and a newline.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = match self {
            Self::Ack(n) => format!("{{\"ack\":{n}}}").into_bytes(),
            Self::Error(e) => serde_json::to_vec(&serde_json::json!({ "error": e }))
                .unwrap_or_else(|_| b"{\"error\":\"recorder error\"}".to_vec()),
        };
        line.push(b'\n');
        line
    }
}

/// The sender sent nothing for longer than the stall timeout.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("no bytes received for {idle:?}, the limit is {limit:?}")]
pub struct Stalled {
    /// How long the sender has been silent.
    pub idle: Duration,
    /// The configured stall timeout.
    pub limit: Duration,
}

/// The sender did not complete its header line within the header deadline.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("no complete header line within {limit:?} of the stream's start (header_timeout_ms)")]
pub struct HeaderTimeout {
    /// The configured header deadline.
    pub limit: Duration,
}

/// Ack schedule, header deadline and stall detection for one ingest stream.
#[derive(Debug)]
pub struct IngestState {
    ack_interval: Duration,
    stall_timeout: Duration,
    header_timeout: Duration,
    /// Until the header line is complete: when it must be.
    header_deadline: Option<Instant>,
    received: u64,
    durable: u64,
    acked: Option<u64>,
    last_ack_at: Instant,
    last_data_at: Instant,
}

impl IngestState {
    /// A stream that started at `now`; its header line is due within `stall_timeout`
    /// until [`IngestState::with_header_timeout`] sets a shorter deadline.
    pub fn new(now: Instant, ack_interval: Duration, stall_timeout: Duration) -> Self {
        Self {
            ack_interval,
            stall_timeout,
            header_timeout: stall_timeout,
            header_deadline: Some(now + stall_timeout),
            received: 0,
            durable: 0,
            acked: None,
            last_ack_at: now,
            last_data_at: now,
        }
    }

    /// The header line must be complete within `limit` of `started` (the
    /// stream's start): bytes that trickle in without a newline do not
    /// extend it.
    pub fn with_header_timeout(mut self, started: Instant, limit: Duration) -> Self {
        self.header_timeout = limit;
        self.header_deadline = Some(started + limit);
        self
    }

    /// The header line is complete; only the stall timeout applies from now.
    pub fn handle_header(&mut self) {
        self.header_deadline = None;
    }

    /// Fails once the header deadline passed without a complete header line.
    pub fn check_header(&self, now: Instant) -> Result<(), HeaderTimeout> {
        match self.header_deadline {
            Some(deadline) if now >= deadline => Err(HeaderTimeout {
                limit: self.header_timeout,
            }),
            _ => Ok(()),
        }
    }

    /// `n` more bytes arrived from the sender.
    pub fn handle_received(&mut self, n: u64, now: Instant) {
        self.received += n;
        if n > 0 {
            self.last_data_at = now;
        }
    }

    /// The first `total` bytes of the stream are now written and synced.
    pub fn handle_durable(&mut self, total: u64) {
        debug_assert!(total <= self.received, "cannot store more than received");
        self.durable = self.durable.max(total.min(self.received));
    }

    /// The ack to send now, if one is due: new durable bytes, or the interval passed.
    pub fn poll_ack(&mut self, now: Instant) -> Option<AckFrame> {
        let fresh = self.acked.is_none_or(|a| self.durable > a);
        let interval_due = now.saturating_duration_since(self.last_ack_at) >= self.ack_interval;
        if !(interval_due || fresh && self.durable > 0) {
            return None;
        }
        self.acked = Some(self.durable);
        self.last_ack_at = now;
        Some(AckFrame::Ack(self.durable))
    }

    /// Fails once the sender has been silent for the stall timeout.
    pub fn check_stall(&self, now: Instant) -> Result<(), Stalled> {
        let idle = now.saturating_duration_since(self.last_data_at);
        if idle >= self.stall_timeout {
            return Err(Stalled {
                idle,
                limit: self.stall_timeout,
            });
        }
        Ok(())
    }

    /// When the shell must call back: the next keep-alive ack, the header
    /// deadline or the stall deadline.
    pub fn poll_timeout(&self) -> Instant {
        let next =
            (self.last_ack_at + self.ack_interval).min(self.last_data_at + self.stall_timeout);
        self.header_deadline.map_or(next, |h| next.min(h))
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Bytes durable so far.
    pub fn durable(&self) -> u64 {
        self.durable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACK: Duration = Duration::from_secs(10);
    const STALL: Duration = Duration::from_secs(60);

    #[test]
    fn acks_durable_bytes_not_received_ones() {
        let t0 = Instant::now();
        let mut s = IngestState::new(t0, ACK, STALL);
        s.handle_received(100, t0);
        assert_eq!(s.poll_ack(t0), None, "nothing durable yet");
        s.handle_durable(60);
        assert_eq!(s.poll_ack(t0), Some(AckFrame::Ack(60)));
        assert_eq!(s.poll_ack(t0), None, "already acked");
    }

    #[test]
    fn sends_a_keepalive_ack_every_interval() {
        let t0 = Instant::now();
        let mut s = IngestState::new(t0, ACK, STALL);
        assert_eq!(s.poll_timeout(), t0 + ACK);
        assert_eq!(s.poll_ack(t0 + ACK), Some(AckFrame::Ack(0)));
        assert_eq!(s.poll_ack(t0 + ACK + Duration::from_secs(1)), None);
        assert_eq!(s.poll_timeout(), t0 + ACK + ACK);
    }

    #[test]
    fn detects_a_stalled_sender() {
        let t0 = Instant::now();
        let mut s = IngestState::new(t0, ACK, STALL);
        s.handle_received(5, t0 + Duration::from_secs(30));
        assert_eq!(s.check_stall(t0 + Duration::from_secs(89)), Ok(()));
        assert_eq!(
            s.check_stall(t0 + Duration::from_secs(90)),
            Err(Stalled {
                idle: STALL,
                limit: STALL
            })
        );
    }

    #[test]
    fn a_header_not_complete_by_its_deadline_fails_even_while_bytes_trickle() {
        let t0 = Instant::now();
        let limit = Duration::from_secs(5);
        let mut s = IngestState::new(t0, ACK, STALL).with_header_timeout(t0, limit);
        assert_eq!(
            s.poll_timeout(),
            t0 + limit,
            "the header deadline comes first"
        );
        s.handle_received(1, t0 + Duration::from_secs(4));
        assert_eq!(s.check_header(t0 + Duration::from_millis(4_999)), Ok(()));
        assert_eq!(
            s.check_header(t0 + limit),
            Err(HeaderTimeout { limit }),
            "a trickle of bytes does not extend the deadline"
        );
        assert_eq!(s.check_stall(t0 + limit), Ok(()), "not a stall");

        let mut s = IngestState::new(t0, ACK, STALL).with_header_timeout(t0, limit);
        s.handle_header();
        assert_eq!(s.check_header(t0 + STALL), Ok(()), "the header arrived");
        assert_eq!(s.poll_timeout(), t0 + ACK);
    }

    /// On a virtual clock with random arrivals: acks never exceed durable
    /// bytes, never go backwards, and no gap between acks exceeds the interval.
    #[test]
    fn ack_invariants_on_a_virtual_clock() {
        let t0 = Instant::now();
        let mut s = IngestState::new(t0, ACK, Duration::from_secs(3600));
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut now = t0;
        let (mut last_ack, mut last_ack_at) = (0u64, t0);
        for _ in 0..10_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let step = Duration::from_millis(seed % 3000);
            now = (now + step).min(s.poll_timeout().max(now));
            if seed.is_multiple_of(3) {
                s.handle_received(seed % 500, now);
            }
            if seed.is_multiple_of(5) {
                s.handle_durable(s.received());
            }
            if let Some(AckFrame::Ack(n)) = s.poll_ack(now) {
                assert!(n <= s.durable() && n >= last_ack);
                last_ack = n;
                last_ack_at = now;
            }
            assert!(now.saturating_duration_since(last_ack_at) <= ACK);
        }
    }

    #[test]
    fn frames_match_tailscale_field_names() {
        assert_eq!(AckFrame::Ack(42).to_line(), b"{\"ack\":42}\n");
        assert_eq!(
            AckFrame::Error("bad \"x\"".to_owned()).to_line(),
            b"{\"error\":\"bad \\\"x\\\"\"}\n"
        );
    }
}
