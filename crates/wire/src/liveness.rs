//! Keepalives and read deadlines on the control channel, with no clock:
//! the shells (control's map stream, the node's control client) pass `now`
//! in and sleep until [`LivenessState::poll_timeout`].
//!
//! Each end sends a keepalive once it has sent nothing for one interval, so
//! a live peer never goes longer than one interval (plus scheduling delay)
//! without a message. Each end gives up on the other after
//! [`read_deadline`] of silence: two intervals and a fixed grace. TCP alone
//! does not notice a frozen or partitioned peer for minutes (until its
//! retransmissions give up); this does within the deadline.

use std::time::{Duration, Instant};

use crate::Liveness;

/// Added to two intervals to form the read deadline, so a keepalive that
/// a busy scheduler sends a little late is not taken for silence.
pub const DEADLINE_GRACE: Duration = Duration::from_millis(250);

/// The shortest keepalive interval either end accepts, so a peer cannot
/// make the other send keepalives in a busy loop.
pub const MIN_KEEPALIVE_MS: u64 = 100;

/// The longest keepalive interval either end accepts (one day), so the
/// deadline arithmetic cannot overflow.
pub const MAX_KEEPALIVE_MS: u64 = 86_400_000;

/// How long an end waits for any message before it closes the channel:
/// two keepalive intervals plus [`DEADLINE_GRACE`].
pub fn read_deadline(interval: Duration) -> Duration {
    interval.saturating_mul(2).saturating_add(DEADLINE_GRACE)
}

impl Liveness {
    /// The settings for `interval`, clamped to
    /// [`MIN_KEEPALIVE_MS`]..=[`MAX_KEEPALIVE_MS`].
    pub fn new(interval: Duration) -> Self {
        let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        Self {
            keepalive_interval_ms: ms.clamp(MIN_KEEPALIVE_MS, MAX_KEEPALIVE_MS),
        }
    }

    /// The keepalive interval, clamped to
    /// [`MIN_KEEPALIVE_MS`]..=[`MAX_KEEPALIVE_MS`] whatever the peer sent.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(
            self.keepalive_interval_ms
                .clamp(MIN_KEEPALIVE_MS, MAX_KEEPALIVE_MS),
        )
    }
}

/// What the shell must do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LivenessEvent {
    /// Nothing was sent for one interval: send a keepalive (then call
    /// [`LivenessState::handle_sent`]).
    SendKeepAlive,
    /// Nothing was received within the read deadline: close the channel.
    PeerSilent {
        /// How long since the peer's last message.
        silent_for: Duration,
    },
}

/// One end's keepalive timer and read deadline.
#[derive(Clone, Debug)]
pub struct LivenessState {
    /// Our keepalive interval; `None` sends none.
    send_every: Option<Duration>,
    /// The interval the peer keeps alive at; `None` holds no deadline (a
    /// peer too old to send keepalives).
    expect_every: Option<Duration>,
    last_sent: Instant,
    last_received: Instant,
    /// The deadline is no earlier than this: after a change of interval
    /// the peer may not have heard of it yet.
    not_before: Instant,
}

impl LivenessState {
    /// A channel that opened at `now`, sending no keepalives and holding no
    /// deadline until [`LivenessState::set_intervals`].
    pub fn new(now: Instant) -> Self {
        Self {
            send_every: None,
            expect_every: None,
            last_sent: now,
            last_received: now,
            not_before: now,
        }
    }

    /// Sets our keepalive interval and the one the peer keeps alive at.
    ///
    /// The new deadline counts from `now` at the earliest: a peer told of
    /// a shorter interval keeps its old pace until it reads the message,
    /// then (having sent nothing for longer than the new interval) sends a
    /// keepalive at once, well within the new deadline unless the round
    /// trip is longer than an interval.
    pub fn set_intervals(
        &mut self,
        now: Instant,
        send_every: Option<Duration>,
        expect_every: Option<Duration>,
    ) {
        self.send_every = send_every;
        self.expect_every = expect_every;
        self.not_before = match expect_every {
            None => now,
            Some(every) => now + read_deadline(every),
        };
    }

    /// Our keepalive interval.
    pub fn send_every(&self) -> Option<Duration> {
        self.send_every
    }

    /// The read deadline's span, when one is held.
    pub fn deadline_span(&self) -> Option<Duration> {
        self.expect_every.map(read_deadline)
    }

    /// We sent a message (of any kind) at `now`.
    pub fn handle_sent(&mut self, now: Instant) {
        self.last_sent = self.last_sent.max(now);
    }

    /// We received a message (of any kind, or part of one) at `now`.
    pub fn handle_received(&mut self, now: Instant) {
        self.last_received = self.last_received.max(now);
    }

    /// When the peer counts as silent, if a deadline is held.
    pub fn deadline(&self) -> Option<Instant> {
        let every = self.expect_every?;
        Some((self.last_received + read_deadline(every)).max(self.not_before))
    }

    /// When the next keepalive is due, if we send them.
    pub fn keepalive_due(&self) -> Option<Instant> {
        self.send_every.map(|every| self.last_sent + every)
    }

    /// The next instant [`LivenessState::poll_event`] may have something.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.deadline(), self.keepalive_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What is due at `now`: silence first (a dead channel needs no
    /// keepalive), then a keepalive.
    pub fn poll_event(&self, now: Instant) -> Option<LivenessEvent> {
        if self.deadline().is_some_and(|d| now >= d) {
            return Some(LivenessEvent::PeerSilent {
                silent_for: now.saturating_duration_since(self.last_received),
            });
        }
        if self.keepalive_due().is_some_and(|due| now >= due) {
            return Some(LivenessEvent::SendKeepAlive);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    /// Two ends on a virtual clock, each message delivered `latency` after
    /// it is sent; steps of `step`. Returns the first silence either end saw.
    fn run_pair(
        interval: Duration,
        latency: Duration,
        step: Duration,
        steps: u32,
        b_freezes_at: Option<u32>,
    ) -> Option<(char, Duration, Duration)> {
        let start = Instant::now();
        let mut a = LivenessState::new(start);
        let mut b = LivenessState::new(start);
        a.set_intervals(start, Some(interval), Some(interval));
        b.set_intervals(start, Some(interval), Some(interval));
        // In-flight messages: (arrival, to_a).
        let mut flight: Vec<(Instant, bool)> = Vec::new();
        for i in 0..steps {
            let now = start + step * i;
            let frozen = b_freezes_at.is_some_and(|f| i >= f);
            flight.retain(|&(at, to_a)| {
                if at > now {
                    return true;
                }
                if to_a {
                    a.handle_received(at);
                } else if !frozen {
                    b.handle_received(at);
                }
                false
            });
            for (name, end) in [('a', &mut a), ('b', &mut b)] {
                if name == 'b' && frozen {
                    continue;
                }
                match end.poll_event(now) {
                    Some(LivenessEvent::PeerSilent { silent_for }) => {
                        return Some((name, now - start, silent_for));
                    }
                    Some(LivenessEvent::SendKeepAlive) => {
                        end.handle_sent(now);
                        flight.push((now + latency, name == 'b'));
                    }
                    None => {}
                }
                // The timeout is never in the past once events are handled.
                if let Some(t) = end.poll_timeout() {
                    assert!(t > now, "{name} asks to wake in the past at step {i}");
                }
            }
        }
        None
    }

    #[test]
    fn live_ends_never_see_silence() {
        assert_eq!(run_pair(1000 * MS, 100 * MS, 10 * MS, 10_000, None), None);
    }

    #[test]
    fn a_frozen_peer_is_seen_within_the_deadline() {
        let interval = 1000 * MS;
        let freeze = 500;
        let (who, at, silent_for) =
            run_pair(interval, 10 * MS, 10 * MS, 10_000, Some(freeze)).expect("silence seen");
        assert_eq!(who, 'a');
        assert!(silent_for >= read_deadline(interval), "{silent_for:?}");
        // Seen no later than one deadline after b's last keepalive, which
        // was at most one interval before it froze.
        assert!(
            at <= 10 * MS * freeze + read_deadline(interval) + 20 * MS,
            "{at:?}"
        );
    }

    #[test]
    fn without_an_expected_interval_no_deadline_is_held() {
        let start = Instant::now();
        let mut old_peer = LivenessState::new(start);
        old_peer.set_intervals(start, Some(15_000 * MS), None);
        assert_eq!(old_peer.deadline(), None);
        assert_eq!(
            old_peer.poll_event(start + Duration::from_secs(3600)),
            Some(LivenessEvent::SendKeepAlive)
        );
        assert_eq!(old_peer.poll_timeout(), Some(start + 15_000 * MS));
    }

    #[test]
    fn a_shorter_interval_counts_from_the_change() {
        let start = Instant::now();
        let mut end = LivenessState::new(start);
        end.set_intervals(start, Some(15_000 * MS), Some(15_000 * MS));
        end.handle_received(start + 10_000 * MS);
        assert_eq!(end.deadline(), Some(start + 40_250 * MS));
        // The peer last spoke 10 s ago, but it could not know the short
        // interval before now: its deadline counts from the change...
        let change = start + 20_000 * MS;
        end.set_intervals(change, Some(1000 * MS), Some(1000 * MS));
        assert_eq!(end.deadline(), Some(start + 22_250 * MS));
        assert_eq!(end.keepalive_due(), Some(start + 1000 * MS));
        // ...and then from whatever the peer sends.
        end.handle_received(change + 500 * MS);
        assert_eq!(end.deadline(), Some(start + 22_750 * MS));
        assert_eq!(
            end.poll_event(start + 22_750 * MS),
            Some(LivenessEvent::PeerSilent {
                silent_for: 2250 * MS
            })
        );
    }

    #[test]
    fn a_first_deadline_counts_from_when_it_was_set() {
        let start = Instant::now();
        let mut end = LivenessState::new(start);
        let set = start + 60_000 * MS;
        end.set_intervals(set, Some(1000 * MS), Some(1000 * MS));
        assert_eq!(end.deadline(), Some(set + read_deadline(1000 * MS)));
    }

    #[test]
    fn intervals_are_clamped() {
        let tiny = Liveness {
            keepalive_interval_ms: 0,
        };
        assert_eq!(tiny.interval(), Duration::from_millis(MIN_KEEPALIVE_MS));
        let huge = Liveness {
            keepalive_interval_ms: u64::MAX,
        };
        assert_eq!(huge.interval(), Duration::from_millis(MAX_KEEPALIVE_MS));
        assert_eq!(
            Liveness::new(Duration::from_secs(u64::MAX)).keepalive_interval_ms,
            MAX_KEEPALIVE_MS
        );
        assert_eq!(read_deadline(1000 * MS), 2250 * MS);
    }

    proptest! {
        #[test]
        fn live_ends_with_latency_under_half_an_interval_stay_up(
            interval_ms in 100u64..5000,
            latency_pct in 0u64..50,
            step_ms in 1u64..20,
        ) {
            let interval = Duration::from_millis(interval_ms);
            let latency = interval * u32::try_from(latency_pct).expect("small") / 100;
            prop_assert_eq!(run_pair(interval, latency, Duration::from_millis(step_ms), 2000, None), None);
        }
    }
}
