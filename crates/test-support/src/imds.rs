//! A stand-in for EC2's instance metadata service (IMDSv2, tokens
//! required): `fixtures/fake_imds.py`, run with Python's own HTTP server.
//! It answers from files in a directory this guard owns, read at each
//! request, so a test can change the user data or the public address while
//! a client runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::ports::free_port;
use crate::server::ServerProcess;

const INSTALL: &str = "the fake metadata service needs python3 (see .ci/install-deps)";

/// The script, from this crate's source tree.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/fake_imds.py")
}

/// One fake IMDS; dropping it kills it.
#[derive(Debug)]
pub struct FakeImds {
    url: String,
    // Dropped first: the process goes before the files it serves.
    process: ServerProcess,
    files: tempfile::TempDir,
}

impl FakeImds {
    /// On a free loopback port; clients find it through
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT` = [`FakeImds::url`].
    pub fn start() -> Self {
        let port = free_port();
        Self::spawn(Command::new("python3"), "127.0.0.1", port)
    }

    /// Run through `wrap` (e.g. inside a network namespace, on the real
    /// link-local address `169.254.169.254` port 80, so clients need no
    /// override), listening on `host:port`.
    pub fn inside(wrap: impl FnOnce(&str) -> Command, host: &str, port: u16) -> Self {
        Self::spawn(wrap("python3"), host, port)
    }

    fn spawn(mut cmd: Command, host: &str, port: u16) -> Self {
        let files = tempfile::tempdir().expect("a directory for the metadata");
        cmd.arg(script())
            .arg(files.path())
            .args([host, &port.to_string()]);
        let process = ServerProcess::spawn(&mut cmd, None, "python3 fake_imds.py", INSTALL);
        let imds = Self {
            url: format!("http://{host}:{port}"),
            process,
            files,
        };
        imds.wait_ready();
        imds
    }

    /// Waits until the script says it listens (its log's first line).
    fn wait_ready(&self) {
        let begun = Instant::now();
        while !self.log().contains("listening") {
            assert!(
                begun.elapsed() < Duration::from_secs(15),
                "the fake IMDS did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its base URL, e.g. `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sets (or with `None` removes, so the path answers 404) one answer:
    /// `user-data`, `public-ipv4`, `local-hostname`, `region`, `role`,
    /// `mac` or `interface-id` (the ENI of the interface `mac` names).
    pub fn set(&self, file: &str, value: Option<&str>) {
        let path = self.files.path().join(file);
        match value {
            Some(v) => std::fs::write(&path, v).expect("writing a metadata answer"),
            None => match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("removing {}: {e}", path.display()),
            },
        }
    }

    /// Every request so far, one `METHOD PATH STATUS` a line.
    pub fn log(&self) -> String {
        self.process.log()
    }
}
