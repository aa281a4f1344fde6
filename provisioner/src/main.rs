//! `provisioner`: the operator's CLI. Parsing and dispatch live in the
//! library (`causeway_provisioner::cli`); this file only sets up logging and
//! maps the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;

use causeway_provisioner::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAUSEWAY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.log.level.as_str())),
        )
        .init();
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
