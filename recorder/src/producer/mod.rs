//! The producer: runs a command in a pseudo-terminal and streams the
//! session to a recorder (`appliance record`). Usable as OpenSSH's
//! `ForceCommand`. The user's side is our standard input and output; the
//! SSH role, when it comes, will reuse the upload, the watchdog and the
//! session loop with its channel in their place and identities from policy.
//!
//! With `enforce`, a session that cannot be recorded does not run, and one
//! whose recorder stops acknowledging is ended; without it, the session
//! goes on and the failure is logged. The format and the ack watchdog are
//! sans-IO in `causeway_recording::producer`.

pub mod cli;
pub mod terminal;
pub mod upload;

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::process::ExitStatus;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use bytes::Bytes;
use causeway_recording::{AckWatchdogState, EventEncoder, SessionInfo};
use rustix::termios;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

pub use cli::{HostFacts, RecordArgs, SshEnvironment};
use terminal::{DEFAULT_SIZE, UserTerminal};
pub use upload::{RecorderUrl, RecorderUrlError};
use upload::{Reply, Upload};

/// Exit status when the session was refused or ended because it could not
/// be recorded (`enforce`).
pub const EXIT_NOT_RECORDED: i32 = 1;

/// How long output is still read after the command exited, for what a
/// background job of it prints on the way out.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

/// How long the output may take to reach the user after the command ended.
const STDOUT_FLUSH: Duration = Duration::from_secs(5);

/// What to run, where to record it, and how strictly.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Recorders to try in order; the first that accepts the recording gets it.
    pub recorders: Vec<RecorderUrl>,
    /// Refuse or end the session when it cannot be recorded.
    pub enforce: bool,
    /// How long sent bytes may wait for an ack.
    pub ack_timeout: Duration,
    /// How long connecting and each answer of the recorder may take.
    pub connect_timeout: Duration,
    /// Names the session in the recording's header.
    pub session: SessionInfo,
    /// The program to run in the pseudo-terminal.
    pub program: OsString,
    /// Arguments of the program.
    pub args: Vec<OsString>,
    /// `argv[0]` for the program (`-bash` for a login shell).
    pub argv0: Option<OsString>,
}

/// Runs the session and returns the exit status to leave with: the
/// command's, or [`EXIT_NOT_RECORDED`].
pub async fn run(config: ProducerConfig) -> anyhow::Result<i32> {
    let user = UserTerminal::stdin();
    let (width, height) = user.size().unwrap_or(DEFAULT_SIZE);
    let mut recording = match open_first(&config.recorders, config.connect_timeout).await {
        Ok(upload) => Some(Recording::new(upload, config.ack_timeout)),
        Err(e) if config.enforce => {
            eprint!(
                "\r\nThis session must be recorded, but the recorder cannot record it: {e}\r\nThe session was refused.\r\n"
            );
            return Ok(EXIT_NOT_RECORDED);
        }
        Err(e) => {
            tracing::warn!(error = %e, "recording is not possible; the session runs unrecorded");
            None
        }
    };
    let started = Instant::now();
    let timestamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    if let Some(r) = recording.as_mut() {
        let header = config.session.header_line(width, height, timestamp);
        r.send(header).await;
    }

    let (pty, pts) = pty_process::open().context("opening a pseudo-terminal")?;
    pty.resize(pty_process::Size::new(height, width))
        .context("setting the pseudo-terminal's size")?;
    let mut command = pty_process::Command::new(&config.program).args(&config.args);
    if let Some(argv0) = &config.argv0 {
        command = command.arg0(argv0);
    }
    let mut child = command
        .spawn(pts)
        .with_context(|| format!("starting {}", config.program.to_string_lossy()))?;
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw);
    let raw_mode = user
        .raw_mode()
        .context("putting the terminal in raw mode")?;

    let mut session = Session {
        config: &config,
        started,
        encoder: EventEncoder::new(),
        recording,
        group,
        ended_by_recorder: false,
        stdout_thread: None,
    };
    let status = session.pump(pty, &mut child, &user).await;
    // The writer ends when pump's sender is gone; wait until the user has
    // every byte, but not forever for a terminal that stopped reading.
    if let Some(thread) = session.stdout_thread.take() {
        let joined = tokio::task::spawn_blocking(move || thread.join());
        let _ = tokio::time::timeout(STDOUT_FLUSH, joined).await;
    }
    drop(raw_mode);
    let status = status?;
    if session.ended_by_recorder {
        return Ok(EXIT_NOT_RECORDED);
    }
    session.finish().await;
    Ok(exit_code(status))
}

/// Opens a recording at the first of `recorders` that accepts it; the
/// error names every attempt.
async fn open_first(recorders: &[RecorderUrl], timeout: Duration) -> Result<Upload, String> {
    let mut failures = Vec::new();
    for url in recorders {
        match upload::open(url, timeout).await {
            Ok(upload) => return Ok(upload),
            Err(e) => {
                tracing::debug!(%url, error = %e, "recorder unavailable");
                failures.push(e.to_string());
            }
        }
    }
    if failures.is_empty() {
        return Err("no recorder is configured".to_owned());
    }
    Err(failures.join("; "))
}

/// The exit status a shell would report: the code, or 128 + the signal.
fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(EXIT_NOT_RECORDED)
}

struct Session<'a> {
    config: &'a ProducerConfig,
    started: Instant,
    encoder: EventEncoder,
    recording: Option<Recording>,
    group: Option<rustix::process::Pid>,
    ended_by_recorder: bool,
    /// Writes the command's output to the user; joined before we exit.
    stdout_thread: Option<std::thread::JoinHandle<()>>,
}

impl Session<'_> {
    /// Moves bytes between the user, the command and the recorder until the
    /// command exited and its output is read.
    async fn pump(
        &mut self,
        pty: pty_process::Pty,
        child: &mut tokio::process::Child,
        user: &UserTerminal,
    ) -> anyhow::Result<ExitStatus> {
        // A second handle on the terminal for resizes: the writer task owns the write half.
        let resize_fd = pty
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating the pseudo-terminal handle")?;
        let (mut pty_out, pty_in) = pty.into_split();
        // Input goes in on a task of its own: written here, a command that
        // stops reading until its output is read would block both ways.
        let _input = AbortOnDrop(tokio::spawn(forward_input(
            terminal::spawn_stdin_reader(),
            pty_in,
            user.is_tty(),
        )));
        let (stdout, stdout_thread) = terminal::spawn_stdout_writer();
        self.stdout_thread = stdout_thread;
        let mut winch = if user.is_tty() {
            Some(signal(SignalKind::window_change()).context("watching for window size changes")?)
        } else {
            None
        };
        // sshd hangs up our terminal when the client goes away, and stops
        // us with SIGTERM; pass both on to the command so it ends and the
        // recording is closed properly instead of cut off.
        let mut hangup = signal(SignalKind::hangup()).ok();
        let mut terminate = signal(SignalKind::terminate()).ok();
        let mut status = None;
        let mut drain_deadline = None;
        let mut pty_closed = false;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if let (Some(status), true) = (status, pty_closed) {
                return Ok(status);
            }
            let ack_deadline = self.recording.as_ref().and_then(Recording::deadline);
            tokio::select! {
                read = pty_out.read(&mut buf), if !pty_closed => {
                    // EIO once every holder of the terminal's other side closed it.
                    let n = read.unwrap_or(0);
                    if n == 0 {
                        pty_closed = true;
                        continue;
                    }
                    // A closed standard output (the user is gone) does not stop the recording.
                    let _ = stdout.send(buf[..n].to_vec()).await;
                    let line = self.encoder.output(&buf[..n], self.started.elapsed());
                    self.record(line).await;
                }
                Some(()) = recv_signal(&mut hangup) => self.signal_command(rustix::process::Signal::HUP),
                Some(()) = recv_signal(&mut terminate) => self.signal_command(rustix::process::Signal::TERM),
                Some(()) = recv_signal(&mut winch) => {
                    if let Some((w, h)) = user.size() {
                        let size = termios::Winsize { ws_row: h, ws_col: w, ws_xpixel: 0, ws_ypixel: 0 };
                        let _ = termios::tcsetwinsize(&resize_fd, size);
                        let line = self.encoder.resize(w, h, self.started.elapsed());
                        self.record(Some(line)).await;
                    }
                }
                reply = recv_reply(&mut self.recording) => {
                    if let Some(r) = self.recording.as_mut() {
                        r.handle_reply(reply);
                    }
                }
                () = sleep_until(ack_deadline) => {}
                exited = child.wait(), if status.is_none() => {
                    status = Some(exited.context("waiting for the command")?);
                    drain_deadline = Some(Instant::now() + DRAIN_AFTER_EXIT);
                }
                // A background job still holds the terminal: stop reading it.
                () = sleep_until(drain_deadline) => pty_closed = true,
            }
            self.check_recording().await;
            if self.ended_by_recorder {
                return child.wait().await.context("waiting for the ended command");
            }
        }
    }

    /// Sends a line of the recording, if it is still being recorded.
    async fn record(&mut self, line: Option<Vec<u8>>) {
        if let (Some(r), Some(line)) = (self.recording.as_mut(), line) {
            r.send(line).await;
        }
    }

    /// Sends `signal` to the command's process group.
    fn signal_command(&self, signal: rustix::process::Signal) {
        if let Some(group) = self.group {
            // The command leads its own session (setsid), so its group is its pid.
            let _ = rustix::process::kill_process_group(group, signal);
        }
    }

    /// Acts on a failed recording: ends the session, or goes on unrecorded.
    async fn check_recording(&mut self) {
        let Some(failure) = self.recording.as_mut().and_then(Recording::failure) else {
            return;
        };
        self.recording = None;
        if !self.config.enforce {
            tracing::warn!(error = %failure, "recording failed; the session goes on unrecorded");
            return;
        }
        self.ended_by_recorder = true;
        self.signal_command(rustix::process::Signal::KILL);
        eprint!(
            "\r\nThis session must be recorded, but recording failed: {failure}\r\nThe session was ended.\r\n"
        );
    }

    /// Ends the recording: the last output, then the end of the stream,
    /// then waits for the recorder to ack it all and close.
    async fn finish(&mut self) {
        let line = self.encoder.finish(self.started.elapsed());
        self.record(line).await;
        let Some(recording) = self.recording.take() else {
            return;
        };
        let outcome = recording.close(self.config.ack_timeout).await;
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "the recording's end was not confirmed");
        }
    }
}

/// One recording in flight: its upload and the ack watchdog.
struct Recording {
    upload: Upload,
    watchdog: AckWatchdogState,
    ack_timeout: Duration,
    /// A failure the watchdog does not see: a closed or broken stream.
    lost: Option<String>,
}

impl Recording {
    fn new(upload: Upload, ack_timeout: Duration) -> Self {
        Self {
            upload,
            watchdog: AckWatchdogState::new(ack_timeout),
            ack_timeout,
            lost: None,
        }
    }

    /// Hands a line to the connection; a recorder that stops taking bytes
    /// for the ack timeout has failed.
    async fn send(&mut self, line: Vec<u8>) {
        if self.lost.is_some() {
            return;
        }
        let n = line.len() as u64;
        match tokio::time::timeout(self.ack_timeout, self.upload.body.send(Bytes::from(line))).await
        {
            // Without acks (`/record`) only a stalled or closed connection shows a failure.
            Ok(Ok(())) if !self.upload.acks => {}
            Ok(Ok(())) => self.watchdog.handle_sent(n, Instant::now().into_std()),
            Ok(Err(_)) => self.lost = Some("the connection to the recorder closed".to_owned()),
            Err(_) => {
                self.lost = Some(format!(
                    "the recorder took no bytes for {:?}",
                    self.ack_timeout
                ));
            }
        }
    }

    fn handle_reply(&mut self, reply: Reply) {
        match reply {
            Reply::Frame(frame) => self.watchdog.handle_reply(frame, Instant::now().into_std()),
            Reply::Ended => {
                self.lost = Some("the recorder closed the recording".to_owned());
            }
            Reply::Broken(e) => self.lost = Some(e),
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.watchdog.poll_timeout().map(Instant::from_std)
    }

    fn failure(&mut self) -> Option<String> {
        if let Some(lost) = &self.lost {
            return Some(lost.clone());
        }
        self.watchdog
            .poll_failure(Instant::now().into_std())
            .map(ToString::to_string)
    }

    /// Ends the request body and waits until the recorder acked every
    /// byte and ended its replies.
    async fn close(mut self, timeout: Duration) -> Result<(), String> {
        if let Some(lost) = self.lost.take() {
            return Err(lost);
        }
        let Self {
            upload: Upload {
                body, mut replies, ..
            },
            mut watchdog,
            ..
        } = self;
        drop(body);
        let waited = tokio::time::timeout(timeout, async {
            loop {
                match replies.recv().await {
                    Some(Reply::Frame(frame)) => {
                        watchdog.handle_reply(frame, Instant::now().into_std());
                        if let Some(f) = watchdog.poll_failure(Instant::now().into_std()) {
                            return Err(f.to_string());
                        }
                    }
                    Some(Reply::Ended) | None => return Ok(()),
                    Some(Reply::Broken(e)) => return Err(e),
                }
            }
        })
        .await
        .map_err(|_| format!("no end of the recording from the recorder within {timeout:?}"))?;
        waited?;
        if watchdog.acked() < watchdog.sent() {
            return Err(format!(
                "the recorder acked {} of {} bytes",
                watchdog.acked(),
                watchdog.sent()
            ));
        }
        Ok(())
    }
}

/// Copies what the user types to the command's terminal; at the end of
/// input that is not a terminal, sends ^D (VEOF) so the command sees it.
async fn forward_input(
    mut stdin: tokio::sync::mpsc::Receiver<Vec<u8>>,
    mut pty: pty_process::OwnedWritePty,
    user_is_tty: bool,
) {
    while let Some(bytes) = stdin.recv().await {
        if pty.write_all(&bytes).await.is_err() {
            // The command closed its terminal; its exit is handled by the session loop.
            return;
        }
    }
    if !user_is_tty {
        let _ = pty.write_all(&[0x04]).await;
    }
}

/// Aborts the task when dropped, so it does not outlive the session.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn recv_signal(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_reply(recording: &mut Option<Recording>) -> Reply {
    match recording {
        Some(r) if r.lost.is_none() => match r.upload.replies.recv().await {
            Some(reply) => reply,
            None => Reply::Ended,
        },
        _ => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
