//! `appliance`: the one Causeway daemon (every role, enabled by its config)
//! and its local CLI.

mod cloud;
mod config;
mod dns_query;
mod metrics;
mod node;
mod secrets;
mod state;
mod state_volume;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

use crate::config::Config;
use crate::state::StateDir;

/// Causeway appliance: mesh node, subnet router and coordination server.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon with the roles its config file enables.
    Run(RunArgs),
    /// Parse and validate a config file without starting anything; prints
    /// the roles it enables. Exit status 1 and the offending key on error.
    CheckConfig(RunArgs),
    /// Read the config from the cloud's metadata service (EC2 user data),
    /// validate it as `run` would and write it to a file: a machine image's
    /// first step at boot. Writes nothing and exits 1 when it is missing or
    /// invalid.
    FetchConfig(FetchConfigArgs),
    /// Before the appliance starts (as root): when the config from the
    /// metadata service names a `state_volume`, wait for it to be attached,
    /// make an ext4 file system on it only if it is blank, and mount it.
    StateVolume(StateVolumeArgs),
    /// Show the running daemon's node, peers, handshakes and counters.
    Status(StatusArgs),
    /// Change a running node: its exit node.
    Set(SetArgs),
    /// DNS tools.
    #[command(subcommand)]
    Dns(DnsCommand),
    /// Coordination-server set-up.
    #[command(subcommand)]
    Control(ControlCommand),
    /// Administer control over its HTTP API (keys, nodes, routes, policy).
    Admin(causeway_control::admin_cli::AdminArgs),
    /// Run a command in a pseudo-terminal and record the session (sshd's `ForceCommand`).
    Record(causeway_recorder::producer::RecordArgs),
}

#[derive(Args)]
struct RunArgs {
    /// The TOML config file.
    #[arg(long, env = "CAUSEWAY_CONFIG")]
    config: PathBuf,
}

#[derive(Args)]
struct FetchConfigArgs {
    /// Where the config comes from.
    #[arg(long, env = "CAUSEWAY_CONFIG_SOURCE", value_enum)]
    from: cloud::ConfigSource,
    /// The file to write (replaced whole, mode 0600).
    #[arg(long, env = "CAUSEWAY_CONFIG")]
    output: PathBuf,
}

#[derive(Args)]
struct StateVolumeArgs {
    /// Where the config comes from.
    #[arg(long, env = "CAUSEWAY_CONFIG_SOURCE", value_enum)]
    from: cloud::ConfigSource,
    /// Where to mount the volume: the unit's state directory as systemd
    /// keeps it for a dynamic user (/var/lib/private/causeway).
    #[arg(long)]
    mount_point: PathBuf,
    /// How long to wait for the volume to be attached, in seconds.
    #[arg(long, default_value_t = 600)]
    wait_secs: u64,
}

#[derive(clap::Subcommand)]
enum DnsCommand {
    /// Ask a resolver (the node resolver by default) one question and print the answer.
    Query(dns_query::QueryArgs),
}

#[derive(Args)]
struct StatusArgs {
    /// The daemon's state directory.
    #[arg(long, env = "CAUSEWAY_STATE_DIR", default_value = "/var/lib/causeway")]
    state_dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SetArgs {
    /// The daemon's state directory.
    #[arg(long, env = "CAUSEWAY_STATE_DIR", default_value = "/var/lib/causeway")]
    state_dir: PathBuf,
    /// The exit node: a node's tailnet name, id or address, `auto` (an
    /// online exit node) or `none`. Lasts until the daemon restarts (the
    /// config's `node.exit_node` applies then).
    #[arg(long, env = "CAUSEWAY_EXIT_NODE")]
    exit_node: String,
}

#[derive(Subcommand)]
enum ControlCommand {
    /// Create a tailnet (idempotent): control's key, admin token, ULA /48.
    Init {
        /// Where control keeps its state.
        #[arg(long, env = "CAUSEWAY_STATE_DIR")]
        state_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("CAUSEWAY_LOG")
                .or_else(|_| EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(|| LogWriter {
            terminal: std::io::stderr().is_terminal(),
        })
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            // Line by line: journald files each line on its own, and a
            // parse error spans several (the line, a caret, what was wrong).
            let prefix = journal_error_prefix();
            for line in format!("error: {e:#}").lines() {
                eprintln!("{prefix}{line}");
            }
            ExitCode::FAILURE
        }
    }
}

/// `"<3>"` when standard error is the journal (the stream `JOURNAL_STREAM`
/// names, as systemd sets it for a unit), else nothing: the sd-daemon(3)
/// prefix files the line at priority "err", which the image's journald
/// forwards to the serial console, the one place an operator of an image
/// with no login can read why the unit failed.
fn journal_error_prefix() -> &'static str {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return "";
    };
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else {
        return "";
    };
    if stream.to_string_lossy() == format!("{}:{}", stderr.dev(), stderr.ino()) {
        "<3>"
    } else {
        ""
    }
}

/// Standard error for log lines. On a terminal each line ends in "\r\n":
/// `appliance record` puts the terminal in raw mode, where a bare "\n"
/// moves down without returning to the first column.
struct LogWriter {
    terminal: bool,
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut stderr = std::io::stderr().lock();
        if self.terminal {
            stderr.write_all(&crlf_line_ends(buf))?;
        } else {
            stderr.write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// `text` with every "\n" not already after a "\r" written as "\r\n".
fn crlf_line_ends(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 8);
    for (i, &byte) in text.iter().enumerate() {
        if byte == b'\n' && (i == 0 || text[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(byte);
    }
    out
}

/// Raises the soft limit on open files to the hard one, as Go programs
/// (tailscaled, wireguard-go) do at start: the soft default of 1024 would cap
/// a recorder at about 500 sessions (a socket and a spool file each).
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open-file limit"),
            Err(e) => tracing::warn!(soft, hard, error = %e, "could not raise the open-file limit"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not read the open-file limit"),
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    let () = match command {
        Command::Run(args) => run(args).await?,
        Command::CheckConfig(args) => {
            let config = Config::load(&args.config)?;
            println!(
                "{}: valid; roles: {}",
                args.config.display(),
                config.roles().join(", ")
            );
        }
        Command::FetchConfig(args) => {
            let roles = cloud::fetch_config(args.from, &args.output).await?;
            println!(
                "{}: written; roles: {}",
                args.output.display(),
                roles.join(", ")
            );
        }
        Command::StateVolume(args) => {
            use state_volume::Outcome;
            let outcome = state_volume::prepare(
                args.from,
                &args.mount_point,
                std::time::Duration::from_secs(args.wait_secs),
            )
            .await?;
            let at = args.mount_point.display();
            match outcome {
                Outcome::NoVolume => {
                    println!("the config names no state_volume: state stays on the root disk");
                }
                Outcome::AlreadyMounted(v) => println!("{v}: already mounted at {at}"),
                Outcome::Mounted {
                    volume,
                    formatted: true,
                } => {
                    println!("{volume}: was blank; made an ext4 file system and mounted it at {at}")
                }
                Outcome::Mounted { volume, .. } => println!("{volume}: mounted at {at}"),
            }
        }
        Command::Status(args) => {
            let status = node::status::query(&args.state_dir).await?;
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).context("serialising status")?
                );
            } else {
                print_stdout(&node::status::render(&status))?;
            }
        }
        Command::Set(args) => {
            let request = node::commands::SetRequest {
                exit_node: args.exit_node,
            };
            let answer = node::commands::send(&args.state_dir, &request).await?;
            if let Some(error) = answer.error {
                anyhow::bail!(error);
            }
            let exit = answer.exit_node.unwrap_or_default();
            println!(
                "exit node {}: {}{}",
                exit.choice,
                exit.selected.as_deref().unwrap_or("none selected"),
                if exit.routing_all {
                    ", all traffic through the tunnel"
                } else {
                    ""
                }
            );
        }
        Command::Dns(DnsCommand::Query(args)) => dns_query::run(args).await?,
        Command::Control(ControlCommand::Init { state_dir }) => {
            let output = causeway_control::init(&state_dir)?;
            println!("{}", output.public_key);
        }
        Command::Admin(args) => causeway_control::admin_cli::run(args).await?,
        Command::Record(args) => {
            use causeway_recorder::producer::{self, HostFacts, SshEnvironment};
            let config = args.resolve(&SshEnvironment::from_process(), &HostFacts::current())?;
            let code = producer::run(config).await?;
            return Ok(ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX)));
        }
    };
    Ok(ExitCode::SUCCESS)
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn print_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut config = Config::load(&args.config)?;
    if let Some(volume) = &config.state_volume {
        state_volume::check_mounted(volume, &config.state_dir)?;
    }
    if let Some(node) = &mut config.node
        && node.hostname.is_none()
        && let Some(cloud) = node.cloud
    {
        match cloud::Metadata::new(cloud).instance_hostname().await {
            Ok(name) => node.hostname = Some(name),
            Err(e) => tracing::warn!(
                error = %format!("{e:#}"),
                "no host name from the metadata service; using the OS host name"
            ),
        }
    }
    raise_open_file_limit();
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stopping");
        let _ = stop.send(true);
    });

    let control = config.control.clone().map(|mut control| {
        control.state_dir = config.state_dir.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            causeway_control::serve(control, async move {
                let _ = stopped.changed().await;
            })
            .await
        })
    });

    let sources = metrics::Sources::default();
    let metrics = match &config.metrics {
        Some(m) => {
            let listener = metrics::bind(m.listen).await?;
            Some(tokio::spawn(metrics::serve(
                m.listen,
                listener,
                sources.clone(),
                stopped.clone(),
            )))
        }
        None => None,
    };

    // The recorder beside a node asks it who sent each recording.
    let tailnet = Arc::new(node::directory::Directory::default());
    let who_is: Option<Arc<dyn causeway_recorder::WhoIs>> = config
        .node
        .is_some()
        .then(|| Arc::clone(&tailnet) as Arc<dyn causeway_recorder::WhoIs>);
    let recorder = match config.recorder.clone() {
        Some(recorder) => {
            let listener = tokio::net::TcpListener::bind(recorder.listen)
                .await
                .with_context(|| format!("binding recorder listener {}", recorder.listen))?;
            let stats = causeway_recorder::RecorderStats::default();
            sources.set_recorder(stats.clone(), recorder.spool_dir.clone());
            let mut stopped = stopped.clone();
            Some(tokio::spawn(async move {
                causeway_recorder::serve_observed(
                    recorder,
                    listener,
                    async move {
                        let _ = stopped.changed().await;
                    },
                    stats,
                    who_is,
                )
                .await
            }))
        }
        None => None,
    };

    let node_result = match &config.node {
        Some(node_config) => {
            let state = StateDir::open(&config.state_dir)?;
            node::run(
                node_config,
                node::Roles {
                    router: config.subnet_router.as_ref(),
                    exit_node: config.exit_node.as_ref(),
                    app_connector: config.app_connector.as_ref(),
                },
                state,
                &sources,
                &tailnet,
                stopped.clone(),
            )
            .await
        }
        None => Ok(()),
    };
    let control_result = match control {
        Some(handle) => handle.await.context("control task failed")?,
        None => Ok(()),
    };
    let recorder_result = match recorder {
        Some(handle) => handle.await.context("recorder task failed")?,
        None => Ok(()),
    };
    let metrics_result = match metrics {
        Some(handle) => handle.await.context("metrics task failed")?,
        None => Ok(()),
    };
    node_result
        .and(control_result)
        .and(recorder_result)
        .and(metrics_result)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers we can only run until killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::crlf_line_ends;

    #[test]
    fn log_lines_end_in_crlf_on_a_terminal() {
        assert_eq!(crlf_line_ends(b"WARN a\nWARN b\n"), b"WARN a\r\nWARN b\r\n");
        assert_eq!(crlf_line_ends(b"already\r\n\n"), b"already\r\n\r\n");
        assert_eq!(crlf_line_ends(b"\nno end"), b"\r\nno end");
    }
}
