//! A thin runner for the recorder library, used by tests that must kill a
//! real process; in production the appliance links the library as role `recorder`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Runs the session recorder.
#[derive(Debug, Parser)]
struct Args {
    /// Recorder configuration (TOML, the appliance's `[recorder]` section).
    #[arg(long, env = "CAUSEWAY_RECORDER_CONFIG")]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "recorder stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let config: causeway_recorder::RecorderConfig =
        toml::from_str(&text).with_context(|| format!("parsing {}", args.config.display()))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    causeway_recorder::serve(config, listener, shutdown).await
}
