//! Azurite's blob service: Azure Blob storage for tests, in memory.

use std::process::Command;
use std::time::Duration;

use crate::ports::{free_port, wait_listening};
use crate::server::ServerProcess;

/// Azurite's development account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// The development account's key, published by Microsoft (not a secret).
pub const AZURITE_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

const INSTALL: &str =
    "the Azure tests need it; install with `npm install -g azurite@3.35.0` (see .ci/install-deps)";

/// One Azurite blob service on a loopback port, in memory; dropping it
/// kills it (and its state), also when a test panics.
#[derive(Debug)]
pub struct Azurite {
    port: u16,
    // Dropped first: the process goes before its working directory.
    _process: ServerProcess,
    _workspace: tempfile::TempDir,
}

impl Azurite {
    /// Azurite on a free loopback port.
    pub fn start() -> Self {
        Self::on_port(free_port())
    }

    /// Azurite on 127.0.0.1:`port` (a restart on the port of one dropped
    /// before), waited for up to 30 s.
    pub fn on_port(port: u16) -> Self {
        let workspace = tempfile::tempdir().expect("a working directory for Azurite");
        let mut cmd = Command::new("azurite-blob");
        // --disableTelemetry: otherwise it calls out to the internet.
        cmd.args([
            "--disableTelemetry",
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
        ])
        .arg(port.to_string())
        .args([
            "--inMemoryPersistence",
            "--loose",
            "--skipApiVersionCheck",
            "--silent",
        ])
        // Azurite refuses --location with --inMemoryPersistence; whatever
        // it still writes goes to its working directory, a temporary one.
        .current_dir(workspace.path());
        let process = ServerProcess::spawn(&mut cmd, None, "azurite-blob", INSTALL);
        wait_listening(port, "azurite-blob", Duration::from_secs(30));
        Self {
            port,
            _process: process,
            _workspace: workspace,
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }
}
