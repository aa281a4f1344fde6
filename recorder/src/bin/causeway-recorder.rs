//! A thin runner for the recorder library, used by tests that must kill a
//! real process; in production the appliance links the library as role `recorder`.
//!
//! It runs beside no tailnet node, so nothing can say which node sent a
//! recording: each one is filed under the node ID its sender claims in the
//! header (`srcNode`), and any sender inside `allow` can claim any ID. It
//! refuses to start unless `--trust-claimed-node-ids` says that is meant.
//! The appliance's recorder role beside a `[node]` files recordings under
//! the node control says sent them instead.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Runs the session recorder.
#[derive(Debug, Parser)]
struct Args {
    /// Recorder configuration (TOML, the appliance's `[recorder]` section).
    #[arg(long, env = "CAUSEWAY_RECORDER_CONFIG")]
    config: PathBuf,
    /// File recordings under the node ID each sender claims, unchecked:
    /// this runner has no tailnet node to ask who a sender is.
    #[arg(long, env = "CAUSEWAY_RECORDER_TRUST_CLAIMED_NODE_IDS")]
    trust_claimed_node_ids: bool,
}

/// Why the runner refuses to start without `--trust-claimed-node-ids`.
const CLAIMS_UNCHECKED: &str = "causeway-recorder runs beside no tailnet node, so it cannot tell which node sent a recording: \
each would be filed under the node ID its sender claims. Pass --trust-claimed-node-ids to accept that (any sender in allow \
can claim any node), or run the appliance's recorder role beside a [node], which files recordings under the node control says sent them";

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
    anyhow::ensure!(args.trust_claimed_node_ids, CLAIMS_UNCHECKED);
    tracing::warn!(
        "recordings are filed under the node ID each sender claims (--trust-claimed-node-ids): senders are not identified"
    );
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
