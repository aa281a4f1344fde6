//! The node's life with control, without I/O: joining with an auth key,
//! opening the map stream, rotating the node key, and retrying what can
//! be retried.
//!
//! [`ControlSessionState`] decides; the shell carries out its
//! [`SessionCommand`]s (open a channel and register, open the map stream,
//! create and persist keys) and feeds back what happened. Time and the
//! random seed come from the shell, so every crash point and error class
//! is tested here with a virtual clock.
//!
//! Node-key rotation keeps the old key until control confirms the new one.
//! The new key is persisted as *pending* before it is sent, and becomes
//! current only after control accepted it, so a crash or a failed request
//! at any point leaves a key control knows:
//!
//! - crash before the request reached control: control still holds the
//!   current key; the retry rotates from it to the pending key;
//! - control accepted, the answer or our write was lost: control holds the
//!   pending key; the same request is a repeat of the current registration
//!   and control answers it again (and if the pending key has expired since,
//!   control says so, which proves it holds that key: it becomes current and
//!   a fresh rotation starts from it);
//! - crash after the pending key became current but before the pending
//!   file was removed: both are equal, and the pending one is dropped.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use causeway_wire::{ErrorCode, PublicKey};

use crate::discovery::splitmix64;

/// First retry delay after a failure.
pub const RETRY_MIN: Duration = Duration::from_millis(250);
/// Longest retry delay: the doubling stops here.
pub const RETRY_MAX: Duration = Duration::from_secs(5);

/// The node's keys as the shell found them on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeKeys {
    /// The key control accepted last (the data plane uses it).
    pub current: PublicKey,
    /// A key created for a rotation that control has not confirmed yet.
    pub pending: Option<PublicKey>,
}

/// What the shell must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionCommand {
    /// Open a channel and register `node_key`, then report
    /// [`ControlSessionState::handle_registered`] or a failure.
    Register(RegisterAttempt),
    /// Open a channel and a map stream for `node_key`; report
    /// [`ControlSessionState::handle_map_opened`] on the first full map and
    /// a failure when the stream ends.
    OpenMap {
        /// The key to present.
        node_key: PublicKey,
    },
    /// Create a new node key, persist it as the pending key (the current one
    /// stays), and report [`ControlSessionState::handle_pending_key`].
    CreatePendingKey,
    /// Control holds `key`: persist it as the current node key, drop the
    /// pending one, and give it to the data plane.
    CommitKey {
        /// The key that is now current.
        key: PublicKey,
    },
    /// Stop the node: retrying cannot help.
    Stop {
        /// What went wrong and what the operator can do.
        message: String,
    },
}

/// One registration request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegisterAttempt {
    /// The key to register.
    pub node_key: PublicKey,
    /// The key control holds now, for a rotation.
    pub old_node_key: Option<PublicKey>,
    /// Whether to present the auth key (a first join).
    pub with_auth_key: bool,
}

/// Why an attempt failed, as the shell saw it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionFailure {
    /// Control could not be reached, or the channel broke: retried.
    #[error("control unreachable: {0}")]
    Unreachable(String),
    /// Control answered with an error code: retried or final by the code.
    #[error("control refused ({code:?}): {message}")]
    Refused {
        /// The code control sent.
        code: ErrorCode,
        /// Control's message.
        message: String,
    },
    /// Refused for good before a request was answered (control's key does
    /// not verify, capability version too old, no auth key configured).
    #[error("{0}")]
    Definite(String),
}

/// Where the session is, for the node's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionPhase {
    /// Registering for the first time, with the auth key.
    Joining,
    /// Registering a new node key, signed by the machine key.
    RotatingKey,
    /// Opening the map stream.
    Connecting,
    /// The map stream is open.
    Running,
    /// Given up; see the stop message.
    Stopped,
}

impl SessionPhase {
    /// The phase as `snake_case` text.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionPhase::Joining => "joining",
            SessionPhase::RotatingKey => "rotating_key",
            SessionPhase::Connecting => "connecting",
            SessionPhase::Running => "running",
            SessionPhase::Stopped => "stopped",
        }
    }
}

/// A snapshot of the session for the status view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionStatus {
    /// The phase.
    pub phase: SessionPhase,
    /// How long until the next attempt, when waiting after a failure.
    pub retry_in: Option<Duration>,
    /// Why the last attempt failed, until one succeeds.
    pub last_error: Option<String>,
}

impl fmt::Display for SessionStatus {
    /// For example `rotating_key (retry in 4 s: control unreachable: …)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.phase.as_str())?;
        match (self.retry_in, &self.last_error) {
            (Some(wait), Some(error)) => {
                write!(f, " (retry in {} s: {error})", wait.as_secs_f64().ceil())
            }
            (Some(wait), None) => write!(f, " (retry in {} s)", wait.as_secs_f64().ceil()),
            (None, Some(error)) => write!(f, " (last attempt failed: {error})"),
            (None, None) => Ok(()),
        }
    }
}

/// The control session's state machine.
#[derive(Debug)]
pub struct ControlSessionState {
    keys: NodeKeys,
    /// Whether control has registered this machine (the shell has a
    /// registration); without it, joining needs the auth key.
    registered: bool,
    phase: Phase,
    /// Failures since the map stream last opened: the exponent of the delay.
    failures: u32,
    /// Why the last attempt failed, until one succeeds.
    last_error: Option<String>,
    /// The auth key refusal, kept while we check whether an earlier attempt
    /// with the same key already registered us.
    auth_refusal: Option<String>,
    rng: u64,
    commands: VecDeque<SessionCommand>,
}

/// What the node is trying to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attempt {
    /// Register the current key. `with_auth_key: false` asks control whether
    /// an earlier attempt already registered us (its answer to the same
    /// request with the auth key was lost).
    Join { with_auth_key: bool },
    /// Register the pending key, signed by the machine key, from the current.
    Rotate,
    /// Open the map stream; `opened` once the first full map came.
    Map { opened: bool },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// The shell is carrying out the attempt.
    InFlight(Attempt),
    /// Waiting for the shell to create the pending key.
    AwaitingKey,
    /// Waiting after a failure.
    Backoff {
        attempt: Attempt,
        until: Instant,
    },
    Stopped,
}

impl ControlSessionState {
    /// A session for `keys`; `registered` says whether control registered
    /// this machine before (the shell holds its registration). `seed`
    /// drives the retry jitter. The first command is ready at once.
    pub fn new(keys: NodeKeys, registered: bool, seed: u64) -> Self {
        let mut state = Self {
            keys,
            registered,
            phase: Phase::Stopped,
            failures: 0,
            last_error: None,
            auth_refusal: None,
            rng: seed,
            commands: VecDeque::new(),
        };
        if keys.pending == Some(keys.current) {
            // Crashed between making the pending key current and removing it.
            state.keys.pending = None;
            state
                .commands
                .push_back(SessionCommand::CommitKey { key: keys.current });
        }
        state.start(state.next_attempt());
        state
    }

    /// The next command for the shell, if any.
    pub fn poll_command(&mut self) -> Option<SessionCommand> {
        self.commands.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Backoff { until, .. } => Some(until),
            Phase::InFlight(_) | Phase::AwaitingKey | Phase::Stopped => None,
        }
    }

    /// Time passed: retry when the backoff is over.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Phase::Backoff { attempt, until } = self.phase
            && now >= until
        {
            self.start(attempt);
        }
    }

    /// The node's keys as they should be on disk now.
    pub fn keys(&self) -> NodeKeys {
        self.keys
    }

    /// Where the session is.
    pub fn status(&self, now: Instant) -> SessionStatus {
        let (phase, retry_in) = match &self.phase {
            Phase::InFlight(attempt) => (attempt.phase(), None),
            Phase::AwaitingKey => (SessionPhase::RotatingKey, None),
            Phase::Backoff { attempt, until } => {
                (attempt.phase(), Some(until.saturating_duration_since(now)))
            }
            Phase::Stopped => (SessionPhase::Stopped, None),
        };
        SessionStatus {
            phase,
            retry_in,
            last_error: self.last_error.clone(),
        }
    }

    /// Control registered `node_key` for this machine.
    pub fn handle_registered(&mut self, node_key: PublicKey) {
        match self.phase {
            Phase::InFlight(Attempt::Join { .. }) if node_key == self.keys.current => {
                self.registered = true;
                self.auth_refusal = None;
            }
            Phase::InFlight(Attempt::Rotate) if Some(node_key) == self.keys.pending => {
                self.registered = true;
                self.auth_refusal = None;
                self.commit_pending();
            }
            Phase::InFlight(_) | Phase::AwaitingKey | Phase::Backoff { .. } | Phase::Stopped => {
                return;
            }
        }
        self.last_error = None;
        self.start(self.next_attempt());
    }

    /// The map stream delivered its first full map.
    pub fn handle_map_opened(&mut self) {
        if let Phase::InFlight(Attempt::Map { opened }) = &mut self.phase {
            *opened = true;
            self.failures = 0;
            self.last_error = None;
        }
    }

    /// The shell persisted `key` as the pending node key.
    pub fn handle_pending_key(&mut self, key: PublicKey) {
        if self.phase != Phase::AwaitingKey {
            return;
        }
        self.keys.pending = Some(key);
        self.start(Attempt::Rotate);
    }

    /// The attempt in flight failed (or the open map stream ended).
    pub fn handle_failure(&mut self, now: Instant, failure: SessionFailure) {
        let Phase::InFlight(attempt) = self.phase else {
            return;
        };
        let (code, message) = match failure {
            SessionFailure::Unreachable(message) => {
                return self.retry(now, attempt, format!("control unreachable: {message}"));
            }
            SessionFailure::Definite(message) => return self.stop(message),
            SessionFailure::Refused { code, message } => (code, message),
        };
        match (code, attempt) {
            (ErrorCode::Internal, _) => {
                self.retry(now, attempt, format!("control failed: {message}"));
            }
            (ErrorCode::NodeKeyExpired, Attempt::Map { opened }) => {
                let reason = format!("node key expired: {message}");
                if opened {
                    self.last_error = Some(reason);
                    self.rotate();
                } else if self.failures == 0 {
                    // Started with an expired key: rotate at once, but count
                    // it, so a key that expires again before the stream
                    // opens waits its turn instead of rotating in a loop.
                    self.failures = 1;
                    self.last_error = Some(reason);
                    self.rotate();
                } else {
                    self.retry(now, Attempt::Rotate, reason);
                }
            }
            (ErrorCode::NodeKeyExpired, Attempt::Rotate) => {
                // Control answers "expired" to this request only when it
                // holds the pending key (it accepts a rotation from an
                // expired current key): an earlier attempt got through and
                // that key has expired since. Make it current and rotate
                // from it.
                self.last_error = Some(format!("node key expired: {message}"));
                self.commit_pending();
                self.rotate();
            }
            (
                ErrorCode::NodeKeyExpired,
                Attempt::Join {
                    with_auth_key: false,
                },
            ) => {
                // Control holds our current key, expired: we are
                // registered, and a rotation brings the key back.
                self.registered = true;
                self.auth_refusal = None;
                self.last_error = Some(format!("node key expired: {message}"));
                self.rotate();
            }
            (
                ErrorCode::AuthKeyRefused,
                Attempt::Join {
                    with_auth_key: true,
                },
            ) => {
                // Control may have registered us on an earlier attempt whose
                // answer was lost (a single-use key is then spent): ask
                // without the key before giving up.
                self.auth_refusal = Some(message);
                self.start(Attempt::Join {
                    with_auth_key: false,
                });
            }
            (
                ErrorCode::AuthKeyRefused
                | ErrorCode::NodeUnknown
                | ErrorCode::BadRequest
                | ErrorCode::NodeKeyExpired,
                Attempt::Join { .. },
            ) => {
                // After the check without the key, report why the key
                // itself was refused.
                let stop = match self.auth_refusal.take() {
                    Some(refusal) => format!("control refused the auth key: {refusal}"),
                    None => format!("control refused the registration: {message}"),
                };
                self.stop(stop);
            }
            (ErrorCode::AuthKeyRefused | ErrorCode::NodeUnknown, Attempt::Rotate)
                if !self.registered =>
            {
                // Control does not know this machine with either key, and
                // we hold no registration: join with the auth key (the
                // pending key is rotated to afterwards).
                self.start(Attempt::Join {
                    with_auth_key: true,
                });
            }
            (ErrorCode::AuthKeyRefused | ErrorCode::NodeUnknown, Attempt::Rotate) => {
                self.stop(format!(
                    "control refused the node-key rotation: {message} (was this node deleted? join again with an auth key)"
                ));
            }
            (ErrorCode::AuthKeyRefused | ErrorCode::NodeUnknown, Attempt::Map { .. }) => {
                self.stop(format!(
                    "control refused the map request: {message} (was this node deleted? join again with an auth key)"
                ));
            }
            (ErrorCode::BadRequest, Attempt::Rotate | Attempt::Map { .. }) => {
                self.stop(format!("control refused the request: {message}"));
            }
        }
    }

    fn next_attempt(&self) -> Attempt {
        // A pending key first, even before a registration is stored: a
        // rotation may have started from a join whose answer we never kept.
        if self.keys.pending.is_some() {
            Attempt::Rotate
        } else if !self.registered {
            Attempt::Join {
                with_auth_key: true,
            }
        } else {
            Attempt::Map { opened: false }
        }
    }

    fn start(&mut self, attempt: Attempt) {
        let command = match attempt {
            Attempt::Join { with_auth_key } => SessionCommand::Register(RegisterAttempt {
                node_key: self.keys.current,
                old_node_key: None,
                with_auth_key,
            }),
            Attempt::Rotate => {
                let Some(pending) = self.keys.pending else {
                    return self.rotate();
                };
                SessionCommand::Register(RegisterAttempt {
                    node_key: pending,
                    old_node_key: Some(self.keys.current),
                    with_auth_key: false,
                })
            }
            Attempt::Map { .. } => SessionCommand::OpenMap {
                node_key: self.keys.current,
            },
        };
        self.phase = Phase::InFlight(match attempt {
            Attempt::Map { .. } => Attempt::Map { opened: false },
            other => other,
        });
        self.commands.push_back(command);
    }

    /// Starts a rotation: a new pending key first.
    fn rotate(&mut self) {
        self.phase = Phase::AwaitingKey;
        self.commands.push_back(SessionCommand::CreatePendingKey);
    }

    fn commit_pending(&mut self) {
        if let Some(pending) = self.keys.pending.take() {
            self.keys.current = pending;
            self.commands
                .push_back(SessionCommand::CommitKey { key: pending });
        }
    }

    fn retry(&mut self, now: Instant, attempt: Attempt, reason: String) {
        self.failures = self.failures.saturating_add(1);
        self.last_error = Some(reason);
        self.phase = Phase::Backoff {
            attempt,
            until: now + self.delay(),
        };
    }

    fn stop(&mut self, message: String) {
        self.last_error = Some(message.clone());
        self.phase = Phase::Stopped;
        self.commands.push_back(SessionCommand::Stop { message });
    }

    /// Exponential backoff with "equal jitter": half the doubled delay is
    /// fixed, the other half random, so nodes that failed together (a
    /// control restart) spread out instead of returning in step.
    fn delay(&mut self) -> Duration {
        let exponent = self.failures.saturating_sub(1).min(16);
        let full = RETRY_MIN.saturating_mul(1 << exponent).min(RETRY_MAX);
        let half = full / 2;
        let spread = u64::try_from(half.as_micros()).unwrap_or(u64::MAX);
        let jitter = match spread {
            0 => 0,
            s => splitmix64(&mut self.rng) % (s + 1),
        };
        half + Duration::from_micros(jitter)
    }
}

impl Attempt {
    fn phase(self) -> SessionPhase {
        match self {
            Attempt::Join { .. } => SessionPhase::Joining,
            Attempt::Rotate => SessionPhase::RotatingKey,
            Attempt::Map { opened: false } => SessionPhase::Connecting,
            Attempt::Map { opened: true } => SessionPhase::Running,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> PublicKey {
        PublicKey::from_bytes([n; 32])
    }

    const OLD: u8 = 1;
    const NEW: u8 = 2;
    const NEWER: u8 = 3;

    fn keys(current: u8, pending: Option<u8>) -> NodeKeys {
        NodeKeys {
            current: key(current),
            pending: pending.map(key),
        }
    }

    fn commands(s: &mut ControlSessionState) -> Vec<SessionCommand> {
        std::iter::from_fn(|| s.poll_command()).collect()
    }

    fn register(node_key: u8, old: Option<u8>, with_auth_key: bool) -> SessionCommand {
        SessionCommand::Register(RegisterAttempt {
            node_key: key(node_key),
            old_node_key: old.map(key),
            with_auth_key,
        })
    }

    fn open_map(node_key: u8) -> SessionCommand {
        SessionCommand::OpenMap {
            node_key: key(node_key),
        }
    }

    fn refused(code: ErrorCode) -> SessionFailure {
        SessionFailure::Refused {
            code,
            message: format!("{code:?} from control"),
        }
    }

    fn unreachable() -> SessionFailure {
        SessionFailure::Unreachable("connection refused".into())
    }

    /// A registered node whose map stream is open on key OLD.
    fn running(now: Instant) -> ControlSessionState {
        let mut s = ControlSessionState::new(keys(OLD, None), true, 7);
        assert_eq!(commands(&mut s), [open_map(OLD)]);
        s.handle_map_opened();
        assert_eq!(s.status(now).phase, SessionPhase::Running);
        s
    }

    /// Runs the machine from a map stream that control ended with "expired"
    /// up to the rotation request for key NEW.
    fn expire_and_request_rotation(s: &mut ControlSessionState, now: Instant) {
        s.handle_failure(now, refused(ErrorCode::NodeKeyExpired));
        assert_eq!(commands(s), [SessionCommand::CreatePendingKey]);
        assert_eq!(s.status(now).phase, SessionPhase::RotatingKey);
        s.handle_pending_key(key(NEW));
        assert_eq!(commands(s), [register(NEW, Some(OLD), false)]);
    }

    #[test]
    fn first_join_registers_with_the_auth_key_then_opens_the_map() {
        let now = Instant::now();
        let mut s = ControlSessionState::new(keys(OLD, None), false, 1);
        assert_eq!(commands(&mut s), [register(OLD, None, true)]);
        assert_eq!(s.status(now).phase, SessionPhase::Joining);

        s.handle_registered(key(OLD));
        assert_eq!(commands(&mut s), [open_map(OLD)]);
        s.handle_map_opened();

        let status = s.status(now);
        assert_eq!(status.phase, SessionPhase::Running);
        assert_eq!(status.to_string(), "running");
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn unreachable_control_is_retried_with_growing_jittered_delays() {
        let mut now = Instant::now();
        let mut s = ControlSessionState::new(keys(OLD, None), false, 42);
        let mut delays = Vec::new();
        for _ in 0..8 {
            assert_eq!(commands(&mut s), [register(OLD, None, true)]);
            s.handle_failure(now, unreachable());
            assert_eq!(commands(&mut s), []);
            let due = s.poll_timeout().expect("a retry is scheduled");
            delays.push(due - now);
            s.handle_timeout(due - Duration::from_millis(1));
            assert_eq!(commands(&mut s), [], "retried before the delay");
            now = due;
            s.handle_timeout(now);
        }
        // Equal jitter: each delay lies in [d/2, d] of the doubled delay,
        // capped at RETRY_MAX.
        for (n, delay) in delays.iter().enumerate() {
            let full = (RETRY_MIN * (1 << n)).min(RETRY_MAX);
            assert!(
                *delay >= full / 2 && *delay <= full,
                "delay {n} is {delay:?}, expected within [{:?}, {full:?}]",
                full / 2
            );
        }
        assert!(delays[7] >= RETRY_MAX / 2, "{delays:?}");
    }

    #[test]
    fn jitter_comes_from_the_seed_only() {
        let run = |seed| {
            let now = Instant::now();
            let mut s = ControlSessionState::new(keys(OLD, None), true, seed);
            let mut delays = Vec::new();
            for _ in 0..6 {
                commands(&mut s);
                s.handle_failure(now, unreachable());
                let due = s.poll_timeout().expect("scheduled");
                delays.push(due - now);
                s.handle_timeout(due);
            }
            delays
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }

    #[test]
    fn status_says_what_is_retried_and_why() {
        let now = Instant::now();
        let mut s = running(now);
        expire_and_request_rotation(&mut s, now);
        s.handle_failure(now, unreachable());
        let status = s.status(now);
        assert_eq!(status.phase, SessionPhase::RotatingKey);
        let retry_in = status.retry_in.expect("waiting");
        assert!(retry_in >= RETRY_MIN / 2 && retry_in <= RETRY_MIN);
        assert_eq!(
            status.to_string(),
            "rotating_key (retry in 1 s: control unreachable: connection refused)"
        );
    }

    #[test]
    fn an_overloaded_or_restarting_control_is_retried() {
        let now = Instant::now();
        let mut s = running(now);
        s.handle_failure(now, refused(ErrorCode::Internal));
        assert_eq!(commands(&mut s), []);
        let due = s.poll_timeout().expect("retry scheduled");
        assert!(due - now <= RETRY_MIN, "first retry after a running stream");
        s.handle_timeout(due);
        assert_eq!(commands(&mut s), [open_map(OLD)]);
        assert_eq!(
            s.status(due).last_error.as_deref(),
            Some("control failed: Internal from control")
        );
    }

    #[test]
    fn a_lost_map_stream_reopens_after_a_short_delay_and_resets_the_backoff() {
        let mut now = Instant::now();
        let mut s = running(now);
        for _ in 0..5 {
            s.handle_failure(now, unreachable());
            now = s.poll_timeout().expect("scheduled");
            s.handle_timeout(now);
            assert_eq!(commands(&mut s), [open_map(OLD)]);
        }
        s.handle_map_opened();
        assert_eq!(s.status(now).last_error, None);
        s.handle_failure(now, unreachable());
        let due = s.poll_timeout().expect("scheduled");
        assert!(
            due - now <= RETRY_MIN,
            "backoff restarts once the map opened"
        );
    }

    #[test]
    fn a_refused_auth_key_stops_after_checking_an_earlier_attempt() {
        let now = Instant::now();
        let mut s = ControlSessionState::new(keys(OLD, None), false, 1);
        commands(&mut s);
        s.handle_failure(
            now,
            SessionFailure::Refused {
                code: ErrorCode::AuthKeyRefused,
                message: "auth key has been used".into(),
            },
        );
        // Did an earlier attempt whose answer was lost register us?
        assert_eq!(commands(&mut s), [register(OLD, None, false)]);
        s.handle_failure(now, refused(ErrorCode::AuthKeyRefused));
        assert_eq!(
            commands(&mut s),
            [SessionCommand::Stop {
                message: "control refused the auth key: auth key has been used".into()
            }]
        );
        assert_eq!(s.status(now).phase, SessionPhase::Stopped);
        // Nothing moves a stopped session.
        s.handle_timeout(now + RETRY_MAX * 10);
        s.handle_registered(key(OLD));
        assert_eq!(commands(&mut s), []);
    }

    #[test]
    fn a_join_whose_answer_was_lost_completes_without_the_spent_auth_key() {
        let now = Instant::now();
        let mut s = ControlSessionState::new(keys(OLD, None), false, 1);
        commands(&mut s);
        s.handle_failure(now, unreachable());
        s.handle_timeout(s.poll_timeout().expect("scheduled"));
        assert_eq!(commands(&mut s), [register(OLD, None, true)]);
        s.handle_failure(now, refused(ErrorCode::AuthKeyRefused));
        assert_eq!(commands(&mut s), [register(OLD, None, false)]);
        s.handle_registered(key(OLD));
        assert_eq!(commands(&mut s), [open_map(OLD)]);
    }

    #[test]
    fn a_join_that_finds_its_key_expired_rotates_it() {
        let now = Instant::now();
        let mut s = ControlSessionState::new(keys(OLD, None), false, 1);
        commands(&mut s);
        s.handle_failure(now, refused(ErrorCode::AuthKeyRefused));
        commands(&mut s);
        s.handle_failure(now, refused(ErrorCode::NodeKeyExpired));
        assert_eq!(commands(&mut s), [SessionCommand::CreatePendingKey]);
        s.handle_pending_key(key(NEW));
        assert_eq!(commands(&mut s), [register(NEW, Some(OLD), false)]);
    }

    #[test]
    fn definite_refusals_stop_with_the_reason() {
        let now = Instant::now();
        let cases = [
            (
                ControlSessionState::new(keys(OLD, None), false, 1),
                SessionFailure::Definite("node.auth_key_file is not set".into()),
                "node.auth_key_file is not set",
            ),
            (
                ControlSessionState::new(keys(OLD, None), false, 1),
                refused(ErrorCode::BadRequest),
                "control refused the registration: BadRequest from control",
            ),
            (
                running(now),
                refused(ErrorCode::NodeUnknown),
                "control refused the map request: NodeUnknown from control (was this node deleted? join again with an auth key)",
            ),
            (
                running(now),
                refused(ErrorCode::BadRequest),
                "control refused the request: BadRequest from control",
            ),
            (
                ControlSessionState::new(keys(OLD, Some(NEW)), true, 1),
                refused(ErrorCode::NodeUnknown),
                "control refused the node-key rotation: NodeUnknown from control (was this node deleted? join again with an auth key)",
            ),
        ];
        for (mut s, failure, expected) in cases {
            commands(&mut s);
            s.handle_failure(now, failure);
            assert_eq!(
                commands(&mut s),
                [SessionCommand::Stop {
                    message: expected.into()
                }]
            );
        }
    }

    #[test]
    fn rotation_commits_the_new_key_only_after_control_accepts_it() {
        let now = Instant::now();
        let mut s = running(now);
        expire_and_request_rotation(&mut s, now);
        assert_eq!(s.keys(), keys(OLD, Some(NEW)));

        s.handle_registered(key(NEW));
        assert_eq!(
            commands(&mut s),
            [SessionCommand::CommitKey { key: key(NEW) }, open_map(NEW)]
        );
        assert_eq!(s.keys(), keys(NEW, None));
    }

    #[test]
    fn a_failed_rotation_keeps_the_old_key_and_retries_the_same_new_key() {
        let mut now = Instant::now();
        let mut s = running(now);
        expire_and_request_rotation(&mut s, now);
        for failure in [unreachable(), refused(ErrorCode::Internal), unreachable()] {
            s.handle_failure(now, failure);
            assert_eq!(s.keys(), keys(OLD, Some(NEW)), "the old key stays current");
            assert_eq!(commands(&mut s), []);
            now = s.poll_timeout().expect("scheduled");
            s.handle_timeout(now);
            assert_eq!(commands(&mut s), [register(NEW, Some(OLD), false)]);
        }
        s.handle_registered(key(NEW));
        assert_eq!(
            commands(&mut s),
            [SessionCommand::CommitKey { key: key(NEW) }, open_map(NEW)]
        );
    }

    #[test]
    fn crash_with_a_pending_key_retries_the_rotation_before_the_map() {
        // Crash before the request reached control, or after control
        // accepted it but before we stored it: the same request either way
        // (control answers a repeat of its current key as a success).
        let mut s = ControlSessionState::new(keys(OLD, Some(NEW)), true, 1);
        assert_eq!(commands(&mut s), [register(NEW, Some(OLD), false)]);
        s.handle_registered(key(NEW));
        assert_eq!(
            commands(&mut s),
            [SessionCommand::CommitKey { key: key(NEW) }, open_map(NEW)]
        );
    }

    #[test]
    fn a_pending_key_without_a_stored_registration_is_tried_before_the_auth_key() {
        // Joined (answer lost), found the key expired, started a rotation,
        // crashed: control may hold either key.
        let now = Instant::now();
        let mut s = ControlSessionState::new(keys(OLD, Some(NEW)), false, 1);
        assert_eq!(commands(&mut s), [register(NEW, Some(OLD), false)]);
        s.handle_registered(key(NEW));
        assert_eq!(
            commands(&mut s),
            [SessionCommand::CommitKey { key: key(NEW) }, open_map(NEW)]
        );

        // Control does not know the machine: join, then rotate.
        let mut s = ControlSessionState::new(keys(OLD, Some(NEW)), false, 1);
        commands(&mut s);
        s.handle_failure(now, refused(ErrorCode::AuthKeyRefused));
        assert_eq!(commands(&mut s), [register(OLD, None, true)]);
        s.handle_registered(key(OLD));
        assert_eq!(commands(&mut s), [register(NEW, Some(OLD), false)]);
    }

    #[test]
    fn crash_after_the_commit_but_before_the_pending_file_went_drops_it() {
        let mut s = ControlSessionState::new(keys(NEW, Some(NEW)), true, 1);
        assert_eq!(
            commands(&mut s),
            [SessionCommand::CommitKey { key: key(NEW) }, open_map(NEW)]
        );
        assert_eq!(s.keys(), keys(NEW, None));
    }

    #[test]
    fn crash_after_control_accepted_and_the_new_key_expired_rotates_from_it() {
        let now = Instant::now();
        let mut s = ControlSessionState::new(keys(OLD, Some(NEW)), true, 1);
        commands(&mut s);
        // Control holds NEW, expired.
        s.handle_failure(now, refused(ErrorCode::NodeKeyExpired));
        assert_eq!(
            commands(&mut s),
            [
                SessionCommand::CommitKey { key: key(NEW) },
                SessionCommand::CreatePendingKey
            ]
        );
        s.handle_pending_key(key(NEWER));
        assert_eq!(commands(&mut s), [register(NEWER, Some(NEW), false)]);
        s.handle_registered(key(NEWER));
        assert_eq!(
            commands(&mut s),
            [
                SessionCommand::CommitKey { key: key(NEWER) },
                open_map(NEWER)
            ]
        );
    }

    #[test]
    fn a_key_that_keeps_expiring_before_the_map_opens_backs_off() {
        let now = Instant::now();
        let mut s = ControlSessionState::new(keys(OLD, None), true, 1);
        commands(&mut s);
        // Started with an expired key: rotate at once.
        s.handle_failure(now, refused(ErrorCode::NodeKeyExpired));
        assert_eq!(commands(&mut s), [SessionCommand::CreatePendingKey]);
        s.handle_pending_key(key(NEW));
        commands(&mut s);
        s.handle_registered(key(NEW));
        assert_eq!(
            commands(&mut s),
            [SessionCommand::CommitKey { key: key(NEW) }, open_map(NEW)]
        );
        // Expired again before the stream opened: wait first.
        s.handle_failure(now, refused(ErrorCode::NodeKeyExpired));
        assert_eq!(commands(&mut s), []);
        let due = s.poll_timeout().expect("scheduled");
        assert_eq!(s.status(now).phase, SessionPhase::RotatingKey);
        s.handle_timeout(due);
        assert_eq!(commands(&mut s), [SessionCommand::CreatePendingKey]);
    }

    #[test]
    fn stale_answers_are_ignored() {
        let now = Instant::now();
        let mut s = running(now);
        // A registration answer for a key we are not rotating to.
        s.handle_registered(key(NEWER));
        s.handle_pending_key(key(NEWER));
        assert_eq!(commands(&mut s), []);
        assert_eq!(s.keys(), keys(OLD, None));
        assert_eq!(s.status(now).phase, SessionPhase::Running);
    }
}
