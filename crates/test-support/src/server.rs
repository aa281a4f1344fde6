//! A server child process with its log file, killed and reaped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Where a server's stdout and stderr go.
#[derive(Debug)]
enum Log {
    /// A file the caller named (kept after the test).
    At(PathBuf),
    /// A temporary file, deleted with the guard.
    Temp(tempfile::NamedTempFile),
}

/// A running server process. Dropping it kills it (SIGKILL) and waits.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    log: Log,
}

impl ServerProcess {
    /// Spawns `cmd` with stdin closed and both output streams in `log`
    /// (a temporary file when `None`). `what` names it in the panic when
    /// the program is missing; `install` says how to get it.
    pub fn spawn(cmd: &mut Command, log: Option<&Path>, what: &str, install: &str) -> Self {
        let log = match log {
            Some(path) => Log::At(path.to_owned()),
            None => Log::Temp(tempfile::NamedTempFile::new().expect("a log file")),
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path(&log))
            .unwrap_or_else(|e| panic!("opening {}: {e}", log_path(&log).display()));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("a second handle on the log"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("{what} is missing or does not start ({e}); {install}"));
        Self { child, log }
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// The log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(log_path(&self.log)).unwrap_or_default()
    }
}

fn log_path(log: &Log) -> &Path {
    match log {
        Log::At(path) => path,
        Log::Temp(file) => file.path(),
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
