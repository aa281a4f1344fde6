//! Command-line surface of `provisioner` and its dispatch to a cloud.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::cloud::{Cloud, CloudError, Provider, Verdict};
use crate::console::OutputFormat;
use crate::local::{DeployOptions, LocalProvider};
use crate::name::DeploymentName;
use crate::role::Role;

/// Exit code of `status` (and `plan`) when the deployment is not healthy.
pub const EXIT_UNHEALTHY: u8 = 3;

/// Plan, deploy, inspect and destroy Causeway edge roles.
#[derive(Debug, Parser)]
#[command(
    name = "provisioner",
    version,
    about,
    after_help = "Exit codes: 0 ok/healthy, 1 error, 2 usage, 3 not healthy (status) or changes pending (plan)."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Logging of the provisioner itself.
    #[command(flatten)]
    pub log: LogArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what `deploy` would create or change, changing nothing.
    Plan(ChangeArgs),
    /// Create or repair a deployment until it is healthy, then prove it works.
    Deploy(ChangeArgs),
    /// Show what runs and whether it is healthy.
    Status(InspectArgs),
    /// Remove everything a deployment created, then check nothing is left.
    Destroy(InspectArgs),
}

/// Logging options.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log filter for the provisioner's diagnostics on stderr (e.g. `info`, `debug`).
    #[arg(
        long = "log",
        env = "CAUSEWAY_LOG",
        default_value = "warn",
        global = true
    )]
    pub level: String,
}

/// Which deployment, on which cloud.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Cloud to deploy to.
    #[arg(long, env = "CAUSEWAY_CLOUD", value_enum, default_value_t = Cloud::Local)]
    pub cloud: Cloud,
    /// Deployment name: 1-8 of a-z, 0-9 and '-'; names every resource.
    #[arg(long, env = "CAUSEWAY_NAME", default_value = "demo")]
    pub name: DeploymentName,
    /// Where the deployment's state lives [default: /run/causeway/local/NAME].
    #[arg(long, env = "CAUSEWAY_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// Output format.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Result format; with `json`, progress goes to stderr.
    #[arg(long, env = "CAUSEWAY_OUTPUT", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// Options of `--cloud local`.
#[derive(Debug, Args)]
pub struct LocalArgs {
    /// The `appliance` binary [default: next to this executable].
    #[arg(long, env = "CAUSEWAY_APPLIANCE_BIN")]
    pub appliance_bin: Option<PathBuf>,
    /// Directory with PostgreSQL's server binaries [default: newest /usr/lib/postgresql/*/bin].
    #[arg(long, env = "CAUSEWAY_PG_BIN_DIR")]
    pub pg_bin_dir: Option<PathBuf>,
    /// How long to wait for each service to come up, in seconds.
    #[arg(long, env = "CAUSEWAY_WAIT_TIMEOUT", default_value_t = 30)]
    pub wait_timeout: u64,
}

/// Arguments of `plan` and `deploy`.
#[derive(Debug, Args)]
pub struct ChangeArgs {
    /// Target deployment.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Role to deploy.
    #[arg(long, env = "CAUSEWAY_ROLE", value_enum)]
    pub role: Role,
    /// Local-cloud options.
    #[command(flatten)]
    pub local: LocalArgs,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Arguments of `status` and `destroy`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Target deployment.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Role of the deployment (optional; only subnet-router exists today).
    #[arg(long, env = "CAUSEWAY_ROLE", value_enum)]
    pub role: Option<Role>,
    /// Local-cloud options.
    #[command(flatten)]
    pub local: LocalArgs,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let verdict = match cli.command {
        Command::Plan(a) => provider(&a.target, &a.local)?.plan(a.output.output)?,
        Command::Deploy(a) => provider(&a.target, &a.local)?.deploy(a.output.output)?,
        Command::Status(a) => provider(&a.target, &a.local)?.status(a.output.output)?,
        Command::Destroy(a) => provider(&a.target, &a.local)?.destroy(a.output.output)?,
    };
    Ok(match verdict {
        Verdict::Healthy => ExitCode::SUCCESS,
        Verdict::Unhealthy => ExitCode::from(EXIT_UNHEALTHY),
    })
}

fn provider(target: &TargetArgs, local: &LocalArgs) -> anyhow::Result<Box<dyn Provider>> {
    match target.cloud {
        Cloud::Local => {
            let mut opts = DeployOptions::new(target.name.clone());
            if let Some(dir) = &target.state_dir {
                opts.state_dir = dir.clone();
            }
            opts.appliance_bin = local.appliance_bin.clone();
            opts.pg_bin_dir = local.pg_bin_dir.clone();
            opts.wait_timeout = Duration::from_secs(local.wait_timeout);
            Ok(Box::new(LocalProvider::new(opts)))
        }
        cloud @ (Cloud::Aws | Cloud::Azure) => Err(CloudError::NotImplemented(cloud).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("provisioner").chain(args.iter().copied()))
    }

    #[test]
    fn cloud_defaults_to_local_and_name_to_demo() {
        let cli = parse(&["deploy", "--role", "subnet-router"]).expect("parses");
        let Command::Deploy(a) = cli.command else {
            panic!("expected deploy");
        };
        assert_eq!(a.target.cloud, Cloud::Local);
        assert_eq!(a.target.name.as_str(), "demo");
        assert_eq!(a.role, Role::SubnetRouter);
        assert_eq!(a.output.output, OutputFormat::Text);
    }

    #[test]
    fn unknown_role_names_the_flag_and_the_accepted_values() {
        let err = parse(&["deploy", "--role", "exit-node"]).expect_err("must fail");
        let msg = err.to_string();
        assert!(msg.contains("--role"), "{msg}");
        assert!(msg.contains("subnet-router"), "{msg}");
    }

    #[test]
    fn bad_name_names_the_flag_and_the_rule() {
        let err = parse(&["plan", "--role", "subnet-router", "--name", "Too_Long_Name"])
            .expect_err("must fail");
        let msg = err.to_string();
        assert!(msg.contains("--name"), "{msg}");
        assert!(msg.contains("lowercase"), "{msg}");
    }

    #[test]
    fn aws_parses_but_is_not_implemented() {
        let cli = parse(&["deploy", "--cloud", "aws", "--role", "subnet-router"]).expect("parses");
        let err = run(cli).expect_err("aws is not implemented");
        assert_eq!(
            err.to_string(),
            "--cloud aws is not implemented yet; only --cloud local works today"
        );
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
