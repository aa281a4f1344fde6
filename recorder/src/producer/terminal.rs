//! The user's side of the session: our standard input and output, put in
//! raw mode while the command runs when they are a terminal.

use std::io::{Read, Write};
use std::os::fd::AsFd;

use rustix::termios::{self, OptionalActions, Termios};
use tokio::sync::mpsc;

/// Terminal size used when standard input is not a terminal.
pub const DEFAULT_SIZE: (u16, u16) = (80, 24);

/// Our standard input, and whether it is a terminal.
#[derive(Debug)]
pub struct UserTerminal {
    is_tty: bool,
}

impl UserTerminal {
    /// Looks at standard input.
    pub fn stdin() -> Self {
        Self {
            is_tty: termios::isatty(std::io::stdin().as_fd()),
        }
    }

    /// Whether standard input is a terminal.
    pub fn is_tty(&self) -> bool {
        self.is_tty
    }

    /// The terminal's size as (columns, rows), if it is one and has a size.
    pub fn size(&self) -> Option<(u16, u16)> {
        if !self.is_tty {
            return None;
        }
        let ws = termios::tcgetwinsize(std::io::stdin().as_fd()).ok()?;
        (ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col, ws.ws_row))
    }

    /// Puts the terminal in raw mode until the guard is dropped: keys go to
    /// the command's terminal unchanged, which does its own line editing.
    pub fn raw_mode(&self) -> std::io::Result<Option<RawModeGuard>> {
        if !self.is_tty {
            return Ok(None);
        }
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(stdin.as_fd(), OptionalActions::Now, &raw)?;
        Ok(Some(RawModeGuard { saved }))
    }
}

/// Restores the terminal's saved mode when dropped.
#[derive(Debug)]
pub struct RawModeGuard {
    saved: Termios,
}

impl Drop for RawModeGuard {
    fn drop(&mut self) {
        let stdin = std::io::stdin();
        if let Err(e) = termios::tcsetattr(stdin.as_fd(), OptionalActions::Now, &self.saved) {
            tracing::warn!(error = %e, "restoring the terminal mode failed");
        }
    }
}

/// Reads standard input on a thread of its own and sends what it reads;
/// the channel closes at end of input. A plain thread rather than tokio's
/// blocking pool: a read that never returns must not hold up the exit.
pub fn spawn_stdin_reader() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(16);
    let spawned = std::thread::Builder::new()
        .name("record-stdin".to_owned())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; 4096];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        if tx.blocking_send(buf[..n].to_vec()).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "reading standard input failed");
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        // Without the thread the channel is closed at once: the command sees end of input.
        tracing::warn!(error = %e, "could not start the standard input reader");
    }
    rx
}

/// Writes what it is sent to standard output on a thread of its own, so a
/// slow terminal holds up only its own channel. Dropping the sender ends
/// the thread once everything sent is written; join the handle to wait.
pub fn spawn_stdout_writer() -> (mpsc::Sender<Vec<u8>>, Option<std::thread::JoinHandle<()>>) {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
    let spawned = std::thread::Builder::new()
        .name("record-stdout".to_owned())
        .spawn(move || {
            let mut stdout = std::io::stdout().lock();
            while let Some(chunk) = rx.blocking_recv() {
                if let Err(e) = stdout.write_all(&chunk).and_then(|()| stdout.flush()) {
                    // The user is gone (ssh closed); the session's end follows from the hangup.
                    tracing::debug!(error = %e, "writing to standard output failed");
                    return;
                }
            }
        });
    match spawned {
        Ok(handle) => (tx, Some(handle)),
        Err(e) => {
            tracing::warn!(error = %e, "could not start the standard output writer");
            (tx, None)
        }
    }
}
