//! Command-line surface of `provisioner` and its dispatch to a cloud.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::aws::{AdminApi, Arch, AwsOptions, AwsProvider, DnsMode, Endpoint, Size};
use crate::cloud::{Cloud, CloudError, Provider, Verdict};
use crate::console::{OutputFormat, Progress, print_result};
use crate::image;
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
    /// Build or publish the appliance's machine image.
    #[command(subcommand)]
    Image(ImageCommand),
}

/// `image` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build the Debian 12 appliance image: raw disk, fixed VHD, manifest (needs root).
    Build(ImageBuildArgs),
    /// Upload the raw disk, import a snapshot and register the AMI deploy looks up.
    Publish(ImagePublishArgs),
}

/// Arguments of `image build`.
#[derive(Debug, Args)]
pub struct ImageBuildArgs {
    /// Architecture of the image (arm64 needs --appliance-bin).
    #[arg(long, env = "CAUSEWAY_IMAGE_ARCH", value_enum, default_value_t = Arch::X86_64)]
    pub arch: Arch,
    /// The appliance binary to install [default: target/release/appliance; required for arm64].
    #[arg(long, env = "CAUSEWAY_APPLIANCE_BIN")]
    pub appliance_bin: Option<PathBuf>,
    /// Output directory: disk.raw, disk.vhd, manifest.json [default: target/image/ARCH].
    #[arg(long, env = "CAUSEWAY_IMAGE_OUT")]
    pub out: Option<PathBuf>,
    /// The directory holding build.sh and the root file system overlay.
    #[arg(long, env = "CAUSEWAY_IMAGES_DIR", default_value = "images")]
    pub images_dir: PathBuf,
    /// Keep downloaded Debian packages here between builds.
    #[arg(long, env = "CAUSEWAY_IMAGE_CACHE")]
    pub cache: Option<PathBuf>,
    /// Keep the work directory (root file system, partitions) here [default: a temporary one].
    #[arg(long, env = "CAUSEWAY_IMAGE_WORK")]
    pub work: Option<PathBuf>,
    /// Disk size in MiB (at least 512).
    #[arg(long, env = "CAUSEWAY_IMAGE_SIZE_MIB", default_value_t = 2048)]
    pub size_mib: u64,
    /// Timestamp of every file in the image [default: today 00:00 UTC].
    #[arg(long, env = "SOURCE_DATE_EPOCH")]
    pub epoch: Option<u64>,
}

/// Arguments of `image publish`.
#[derive(Debug, Args)]
pub struct ImagePublishArgs {
    /// Cloud to publish to (aws; azure is not built yet).
    #[arg(long, env = "CAUSEWAY_CLOUD", value_enum)]
    pub cloud: Cloud,
    /// The directory `image build` wrote.
    #[arg(long, env = "CAUSEWAY_IMAGE_DIR")]
    pub image_dir: PathBuf,
    /// S3 bucket (existing) to upload the raw disk to.
    #[arg(long, env = "CAUSEWAY_IMAGE_BUCKET")]
    pub bucket: Option<String>,
    /// Register the AMI from this snapshot instead of uploading and importing.
    #[arg(long, env = "CAUSEWAY_SNAPSHOT_ID")]
    pub snapshot_id: Option<String>,
    /// The VM Import service role that reads the bucket.
    #[arg(long, env = "CAUSEWAY_IMPORT_ROLE", default_value = "vmimport")]
    pub import_role: String,
    /// AWS region [default: the SDK's chain (AWS_REGION, profile), then us-east-1].
    #[arg(long, env = "CAUSEWAY_AWS_REGION")]
    pub region: Option<String>,
    /// AWS endpoint override, e.g. a local emulator (AWS_ENDPOINT_URL works too).
    #[arg(long, env = "CAUSEWAY_AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// How long to wait for the snapshot import, in seconds.
    #[arg(long, env = "CAUSEWAY_AWS_WAIT_TIMEOUT", default_value_t = 3600)]
    pub aws_wait_timeout: u64,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
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
    /// Deployment name: 1-24 of a-z, 0-9 and '-', starting with a letter (--cloud local: 1-8); names and tags every resource.
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

/// Options of `--cloud aws` every command takes.
#[derive(Debug, Args)]
pub struct AwsCommonArgs {
    /// AWS region [default: the SDK's chain (AWS_REGION, profile), then us-east-1].
    #[arg(long, env = "CAUSEWAY_AWS_REGION")]
    pub region: Option<String>,
    /// AWS endpoint override, e.g. a local emulator (AWS_ENDPOINT_URL works too).
    #[arg(long, env = "CAUSEWAY_AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// Control's admin API: mints the auth key (deploy) and tells the HA primary (status).
    #[arg(
        long,
        env = "CAUSEWAY_ADMIN_URL",
        requires = "control_admin_token_file"
    )]
    pub control_admin_url: Option<String>,
    /// File holding control's admin bearer token.
    #[arg(long, env = "CAUSEWAY_ADMIN_TOKEN_FILE")]
    pub control_admin_token_file: Option<PathBuf>,
    /// How long to wait for instances to run or terminate, in seconds.
    #[arg(long, env = "CAUSEWAY_AWS_WAIT_TIMEOUT", default_value_t = 600)]
    pub aws_wait_timeout: u64,
}

/// Options of `--cloud aws` for `plan` and `deploy`
/// (docs/reference/aws-contract.md).
#[derive(Debug, Args)]
pub struct AwsArgs {
    /// Region, endpoint, control admin API.
    #[command(flatten)]
    pub common: AwsCommonArgs,
    /// The VPC to serve (required with --cloud aws).
    #[arg(long, env = "CAUSEWAY_VPC")]
    pub vpc: Option<String>,
    /// Sizing tier: small (2 vCPU), standard (4), consistent-network (more than 16).
    #[arg(long, env = "CAUSEWAY_SIZE", value_enum, default_value_t = Size::Standard)]
    pub size: Size,
    /// An explicit instance type, checked against the catalogue, image and AZs.
    #[arg(long, env = "CAUSEWAY_INSTANCE_TYPE")]
    pub instance_type: Option<String>,
    /// Accept burstable (T-family) instance types.
    #[arg(long, env = "CAUSEWAY_ALLOW_BURSTABLE")]
    pub allow_burstable: bool,
    /// Architecture of the image and instance type (without --ami).
    #[arg(long, env = "CAUSEWAY_ARCH", value_enum, default_value_t = Arch::Arm64)]
    pub arch: Arch,
    /// An explicit appliance image [default: newest own image tagged causeway:image=appliance].
    #[arg(long, env = "CAUSEWAY_AMI")]
    pub ami: Option<String>,
    /// A route to advertise (repeatable) [default: the VPC's CIDR blocks].
    #[arg(long = "route", env = "CAUSEWAY_ROUTES", value_delimiter = ',')]
    pub routes: Vec<String>,
    /// Exit node: a private subnet (same AZ as the instance) whose default route is a NAT gateway; forwarded internet traffic leaves through a second interface there, so third parties see the NAT gateway's address while peers keep direct connections.
    #[arg(long, env = "CAUSEWAY_EGRESS_SUBNET")]
    pub egress_subnet: Option<String>,
    /// App connector: a domain it routes, `app.example.com` (that name) or `*.example.com` (every name below it); repeatable, required with --role app-connector.
    #[arg(long = "domain", env = "CAUSEWAY_DOMAINS", value_delimiter = ',')]
    pub domains: Vec<String>,
    /// App connector: most addresses it routes at once, 1 to 65536 [default: the appliance's, 1000].
    #[arg(long, env = "CAUSEWAY_MAX_ROUTES")]
    pub max_routes: Option<usize>,
    /// App connector: shortest life of a learned route in seconds, at most 604800 (7 days) [default: the appliance's, 600].
    #[arg(long, env = "CAUSEWAY_ROUTE_TTL_FLOOR")]
    pub route_ttl_floor: Option<u64>,
    /// 4via6: the site ID (0 to 65535) the routes are advertised under, so that two VPCs with the same range are told apart; required with --role via6.
    #[arg(long, env = "CAUSEWAY_SITE_ID")]
    pub site_id: Option<u32>,
    /// Split DNS: the VPC resolver (base + 2) or a Route 53 Resolver inbound endpoint.
    #[arg(long, env = "CAUSEWAY_DNS", value_enum, default_value_t = DnsMode::Vpc)]
    pub dns: DnsMode,
    /// Control's node-facing URL, written into the appliance's config.
    #[arg(long, env = "CAUSEWAY_CONTROL_URL")]
    pub control_url: Option<String>,
    /// Control's public key (base64), pinned in the appliance's config.
    #[arg(long, env = "CAUSEWAY_CONTROL_PUBLIC_KEY")]
    pub control_public_key: Option<String>,
    /// A file holding the auth key to store in Secrets Manager (else control's admin API mints one).
    #[arg(long, env = "CAUSEWAY_AUTH_KEY_FILE")]
    pub auth_key_file: Option<PathBuf>,
    /// The Secrets Manager endpoint URL appliances read the auth key from, written into their config (a VPC interface endpoint without private DNS, a FIPS endpoint) [default: the region's].
    #[arg(long, env = "CAUSEWAY_SECRETS_MANAGER_ENDPOINT")]
    pub secrets_manager_endpoint: Option<String>,
    /// Recordings bucket (role recorder) [default: causeway-NAME-recordings-ACCOUNT].
    #[arg(long, env = "CAUSEWAY_BUCKET")]
    pub bucket: Option<String>,
    /// KMS key ARN for the recordings bucket (SSE-KMS; the recorder may use the key) [default: SSE-S3].
    #[arg(long, env = "CAUSEWAY_KMS_KEY")]
    pub kms_key: Option<String>,
    /// Days until recordings move to STANDARD_IA.
    #[arg(long, env = "CAUSEWAY_IA_DAYS", default_value_t = 30)]
    pub ia_days: i32,
    /// Days until recordings move to GLACIER.
    #[arg(long, env = "CAUSEWAY_ARCHIVE_DAYS", default_value_t = 90)]
    pub archive_days: i32,
    /// Days until recordings expire.
    #[arg(long, env = "CAUSEWAY_EXPIRE_DAYS", default_value_t = 365)]
    pub expire_days: i32,
    /// The recorder's web UI is on: its role may also read and list recordings.
    #[arg(long, env = "CAUSEWAY_RECORDER_UI")]
    pub recorder_ui: bool,
    /// A network allowed to send recordings to the recorder (repeatable) [default: 100.64.0.0/10, the tailnet].
    #[arg(
        long = "recorder-allow",
        env = "CAUSEWAY_RECORDER_ALLOW",
        value_delimiter = ','
    )]
    pub recorder_allow: Vec<String>,
    /// Root volume size in GiB.
    #[arg(long, env = "CAUSEWAY_ROOT_VOLUME_SIZE", default_value_t = 8)]
    pub root_volume_size: i32,
    /// deploy: how long to wait for every appliance to register with control, hold its netmap stream and (routers) have its routes approved with one primary, in seconds; 0 skips the wait.
    #[arg(long, env = "CAUSEWAY_HEALTH_TIMEOUT", default_value_t = 300)]
    pub health_timeout: u64,
    /// Size in GiB of control's state volume, when deploy creates it (role control).
    #[arg(long, env = "CAUSEWAY_STATE_VOLUME_SIZE", default_value_t = 8)]
    pub state_volume_size: i32,
    /// Lifetime in seconds of an auth key deploy mints in control (no --auth-key-file); once every instance is healthy deploy revokes it and clears the secret.
    #[arg(long, env = "CAUSEWAY_AUTH_KEY_EXPIRY", default_value_t = crate::aws::DEFAULT_AUTH_KEY_EXPIRY_SECONDS)]
    pub auth_key_expiry: u64,
}

/// Options of `--cloud aws` for `status` and `destroy`.
#[derive(Debug, Args)]
pub struct AwsInspectArgs {
    /// Region, endpoint, control admin API.
    #[command(flatten)]
    pub common: AwsCommonArgs,
    /// destroy: also delete recordings left in the bucket (otherwise a non-empty bucket stops destroy).
    #[arg(long, env = "CAUSEWAY_DELETE_RECORDINGS")]
    pub delete_recordings: bool,
}

/// Arguments of `plan` and `deploy`.
#[derive(Debug, Args)]
pub struct ChangeArgs {
    /// Target deployment.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Role to deploy (--cloud local: subnet-router or exit-node).
    #[arg(long, env = "CAUSEWAY_ROLE", value_enum)]
    pub role: Role,
    /// An HA pair: --cloud aws, two instances in two availability zones; --cloud local, a second subnet router namespace (cw-NAME-rtr2) for the same VPC subnet.
    #[arg(long, env = "CAUSEWAY_HA")]
    pub ha: bool,
    /// Subnet routers keep tailnet source addresses, and the VPC gets a 100.64.0.0/10 return route that follows the primary: --cloud aws, route tables (source/destination check off); --cloud local, the VPC namespace's own table.
    #[arg(long, env = "CAUSEWAY_NO_SNAT")]
    pub no_snat: bool,
    /// Local-cloud options.
    #[command(flatten)]
    pub local: LocalArgs,
    /// AWS options.
    #[command(flatten)]
    pub aws: AwsArgs,
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
    /// Role of the deployment (optional; status --cloud aws: show only this role).
    #[arg(long, env = "CAUSEWAY_ROLE", value_enum)]
    pub role: Option<Role>,
    /// Local-cloud options.
    #[command(flatten)]
    pub local: LocalArgs,
    /// AWS options.
    #[command(flatten)]
    pub aws: AwsInspectArgs,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let verdict = match cli.command {
        Command::Plan(a) => change_provider(&a)?.plan(a.output.output)?,
        Command::Deploy(a) => change_provider(&a)?.deploy(a.output.output)?,
        Command::Status(a) => inspect_provider(&a)?.status(a.output.output)?,
        Command::Destroy(a) => inspect_provider(&a)?.destroy(a.output.output)?,
        Command::Image(c) => {
            image_command(c)?;
            Verdict::Healthy
        }
    };
    Ok(match verdict {
        Verdict::Healthy => ExitCode::SUCCESS,
        Verdict::Unhealthy => ExitCode::from(EXIT_UNHEALTHY),
    })
}

fn image_command(c: ImageCommand) -> anyhow::Result<()> {
    match c {
        ImageCommand::Build(a) => {
            let out = a
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from("target/image").join(a.arch.as_str()));
            let m = image::build(&image::BuildOptions {
                arch: a.arch,
                appliance_bin: a.appliance_bin,
                out: out.clone(),
                images_dir: a.images_dir,
                cache: a.cache,
                work: a.work,
                size_mib: a.size_mib,
                epoch: a.epoch,
            })?;
            print_result(&format!(
                "image {arch}: {raw} ({raw_mib} MiB), {vhd} ({vhd_mib} MiB), {n} packages, appliance {ver}, exposure {exp}\nmanifest: {man}\n",
                arch = m.arch,
                raw = out.join(&m.raw.file).display(),
                raw_mib = m.raw.bytes >> 20,
                vhd = out.join(&m.vhd.file).display(),
                vhd_mib = m.vhd.bytes >> 20,
                n = m.packages.len(),
                ver = m.appliance.version,
                exp = m.exposure,
                man = out.join(image::manifest::MANIFEST).display(),
            ));
            Ok(())
        }
        ImageCommand::Publish(a) => {
            match a.cloud {
                Cloud::Aws => {}
                Cloud::Azure | Cloud::Local => anyhow::bail!(
                    "--cloud {}: image publish supports only --cloud aws today",
                    a.cloud
                ),
            }
            let opts = image::publish::PublishOptions {
                image_dir: a.image_dir,
                bucket: a.bucket,
                endpoint: Endpoint {
                    region: a.region,
                    url: a.endpoint_url,
                    max_attempts: None,
                },
                snapshot_id: a.snapshot_id,
                import_role: a.import_role,
                wait_timeout: Duration::from_secs(a.aws_wait_timeout),
            };
            let mut progress = Progress::for_format(a.output.output, 4);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let p = rt.block_on(image::publish::publish(&opts, &mut progress))?;
            match a.output.output {
                OutputFormat::Json => print_result(
                    &(serde_json::to_string_pretty(&p).context("encoding the result")? + "\n"),
                ),
                OutputFormat::Text => print_result(&format!(
                    "ami: {}{}\nsnapshot: {}\n",
                    p.ami,
                    if p.existed {
                        " (already registered)"
                    } else {
                        ""
                    },
                    p.snapshot
                )),
            }
            Ok(())
        }
    }
}

fn change_provider(a: &ChangeArgs) -> anyhow::Result<Box<dyn Provider>> {
    match a.target.cloud {
        Cloud::Local if !a.aws.domains.is_empty() => anyhow::bail!(
            "--domain with --cloud local: the local app connector serves its own apps zone; --domain is for --cloud aws"
        ),
        Cloud::Local if a.aws.site_id.is_some() => anyhow::bail!(
            "--site-id with --cloud local: the local via6 deployment numbers its own two sites; --site-id is for --cloud aws"
        ),
        Cloud::Local => match a.role {
            Role::SubnetRouter => Ok(local_provider(&a.target, &a.local, a.ha, false, !a.no_snat)),
            Role::ExitNode if a.ha => anyhow::bail!(
                "--ha with --role exit-node: --cloud local deploys one exit node beside one subnet router; drop --ha"
            ),
            Role::ExitNode if a.no_snat => anyhow::bail!(
                "--no-snat with --role exit-node: an exit node masquerades the tailnet's traffic to its own address (the internet has no route back to 100.64.0.0/10)"
            ),
            Role::ExitNode => Ok(local_provider(&a.target, &a.local, false, true, true)),
            Role::AppConnector if a.ha || a.no_snat => anyhow::bail!(
                "--role app-connector with --ha or --no-snat: --cloud local deploys one app connector beside one subnet router with SNAT; drop them"
            ),
            Role::AppConnector => {
                let mut provider = local_options(&a.target, &a.local, false, false, true);
                provider.app_connector = true;
                Ok(Box::new(LocalProvider::new(provider)))
            }
            Role::Via6 if a.ha || a.no_snat => anyhow::bail!(
                "--role via6 with --ha or --no-snat: --cloud local deploys one subnet router per 4via6 site, with SNAT; drop them"
            ),
            Role::Via6 => {
                let mut provider = local_options(&a.target, &a.local, false, false, true);
                provider.via6 = true;
                Ok(Box::new(LocalProvider::new(provider)))
            }
            role @ Role::Relay => anyhow::bail!(
                "--role {role} is not built yet: {}",
                role.not_built_yet().unwrap_or_default()
            ),
            role @ (Role::Recorder | Role::Control) => anyhow::bail!(
                "--role {role}: --cloud local deploys subnet-router, exit-node, app-connector and via6; {role} needs --cloud aws"
            ),
        },
        Cloud::Aws => {
            let mut opts = aws_options(&a.target, Some(a.role), &a.aws.common);
            let x = &a.aws;
            opts.vpc = x.vpc.clone();
            opts.ha = a.ha;
            opts.size = x.size;
            opts.instance_type = x.instance_type.clone();
            opts.allow_burstable = x.allow_burstable;
            opts.arch = x.arch;
            opts.ami = x.ami.clone();
            opts.routes = x.routes.clone();
            opts.snat = !a.no_snat;
            opts.egress_subnet = x.egress_subnet.clone();
            opts.domains = x.domains.clone();
            opts.max_routes = x.max_routes;
            opts.route_ttl_floor = x.route_ttl_floor;
            opts.site_id = x.site_id;
            opts.dns = x.dns;
            opts.control_url = x.control_url.clone();
            opts.control_public_key = x.control_public_key.clone();
            opts.auth_key_file = x.auth_key_file.clone();
            opts.secrets_manager_endpoint = x.secrets_manager_endpoint.clone();
            opts.bucket = x.bucket.clone();
            opts.kms_key = x.kms_key.clone();
            opts.ia_days = x.ia_days;
            opts.archive_days = x.archive_days;
            opts.expire_days = x.expire_days;
            opts.recorder_ui = x.recorder_ui;
            if !x.recorder_allow.is_empty() {
                opts.recorder_allow = x.recorder_allow.clone();
            }
            opts.root_volume_gib = x.root_volume_size;
            opts.health_timeout = Duration::from_secs(x.health_timeout);
            opts.state_volume_gib = x.state_volume_size;
            opts.auth_key_expiry = Duration::from_secs(x.auth_key_expiry);
            Ok(Box::new(AwsProvider::new(opts)))
        }
        Cloud::Azure => Err(CloudError::NotImplemented(Cloud::Azure).into()),
    }
}

fn inspect_provider(a: &InspectArgs) -> anyhow::Result<Box<dyn Provider>> {
    match a.target.cloud {
        Cloud::Aws => {
            let mut opts = aws_options(&a.target, a.role, &a.aws.common);
            opts.delete_recordings = a.aws.delete_recordings;
            Ok(Box::new(AwsProvider::new(opts)))
        }
        // status and destroy take no --ha: the deployment's state says.
        Cloud::Local => Ok(local_provider(&a.target, &a.local, false, false, true)),
        Cloud::Azure => Err(CloudError::NotImplemented(Cloud::Azure).into()),
    }
}

fn aws_options(target: &TargetArgs, role: Option<Role>, c: &AwsCommonArgs) -> AwsOptions {
    let mut opts = AwsOptions::new(target.name.clone());
    opts.role = role;
    opts.endpoint = Endpoint {
        region: c.region.clone(),
        url: c.endpoint_url.clone(),
        max_attempts: None,
    };
    opts.admin = match (&c.control_admin_url, &c.control_admin_token_file) {
        (Some(url), Some(token_file)) => Some(AdminApi {
            url: url.clone(),
            token_file: token_file.clone(),
        }),
        _ => None,
    };
    opts.wait_timeout = Duration::from_secs(c.aws_wait_timeout);
    opts
}

fn local_provider(
    target: &TargetArgs,
    local: &LocalArgs,
    ha: bool,
    exit_node: bool,
    snat: bool,
) -> Box<dyn Provider> {
    Box::new(LocalProvider::new(local_options(
        target, local, ha, exit_node, snat,
    )))
}

fn local_options(
    target: &TargetArgs,
    local: &LocalArgs,
    ha: bool,
    exit_node: bool,
    snat: bool,
) -> DeployOptions {
    let mut opts = DeployOptions::new(target.name.clone());
    opts.ha = ha;
    opts.exit_node = exit_node;
    opts.snat = snat;
    if let Some(dir) = &target.state_dir {
        opts.state_dir = dir.clone();
    }
    opts.appliance_bin = local.appliance_bin.clone();
    opts.pg_bin_dir = local.pg_bin_dir.clone();
    opts.wait_timeout = Duration::from_secs(local.wait_timeout);
    opts
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
        let err = parse(&["deploy", "--role", "exit-nod"]).expect_err("must fail");
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
    fn azure_parses_but_is_not_implemented() {
        let cli =
            parse(&["deploy", "--cloud", "azure", "--role", "subnet-router"]).expect("parses");
        let err = run(cli).expect_err("azure is not implemented");
        assert_eq!(
            err.to_string(),
            "--cloud azure is not implemented yet; --cloud local and --cloud aws work today"
        );
        let cli = parse(&["status", "--cloud", "azure"]).expect("parses");
        let err = run(cli).expect_err("azure is not implemented");
        assert!(
            err.to_string()
                .starts_with("--cloud azure is not implemented yet"),
            "{err}"
        );
    }

    #[test]
    fn ha_parses_for_the_local_cloud_and_is_off_by_default() {
        let cli = parse(&["plan", "--role", "subnet-router", "--ha"]).expect("parses");
        let Command::Plan(a) = cli.command else {
            panic!("expected plan");
        };
        assert_eq!(a.target.cloud, Cloud::Local);
        assert!(a.ha);
        let cli = parse(&["deploy", "--role", "subnet-router"]).expect("parses");
        let Command::Deploy(a) = cli.command else {
            panic!("expected deploy");
        };
        assert!(!a.ha);
    }

    #[test]
    fn local_refuses_roles_other_than_subnet_router_and_exit_node() {
        let cli = parse(&["deploy", "--role", "recorder"]).expect("parses");
        let err = run(cli).expect_err("local has no recorder");
        assert!(err.to_string().contains("--role recorder"), "{err}");
        assert!(err.to_string().contains("exit-node"), "{err}");
    }

    #[test]
    fn local_exit_node_with_ha_is_refused_naming_both_flags() {
        let cli = parse(&["deploy", "--role", "exit-node", "--ha"]).expect("parses");
        let err = run(cli).expect_err("one exit node only");
        let msg = format!("{err:#}");
        assert!(msg.contains("--ha with --role exit-node"), "{msg}");
    }

    #[test]
    fn local_via6_with_ha_or_without_snat_is_refused_naming_the_flags() {
        for flag in ["--ha", "--no-snat"] {
            let cli = parse(&["deploy", "--role", "via6", flag]).expect("parses");
            let err = run(cli).expect_err("one router per site, with SNAT");
            let msg = format!("{err:#}");
            assert!(msg.contains("--role via6 with --ha or --no-snat"), "{msg}");
        }
    }

    #[test]
    fn local_exit_node_without_snat_is_refused_naming_both_flags() {
        let cli = parse(&["deploy", "--role", "exit-node", "--no-snat"]).expect("parses");
        let err = run(cli).expect_err("an exit node masquerades");
        let msg = format!("{err:#}");
        assert!(msg.contains("--no-snat with --role exit-node"), "{msg}");
    }

    #[test]
    fn aws_flags_parse_with_the_contract_defaults() {
        let cli = parse(&[
            "deploy",
            "--cloud",
            "aws",
            "--role",
            "recorder",
            "--name",
            "prod-recordings-1",
            "--vpc",
            "vpc-1",
            "--ha",
            "--route",
            "10.0.0.0/16,10.1.0.0/16",
            "--no-snat",
            "--dns",
            "resolver-endpoint",
        ])
        .expect("parses");
        let Command::Deploy(a) = cli.command else {
            panic!("expected deploy");
        };
        assert_eq!(a.aws.size, Size::Standard);
        assert_eq!(a.aws.arch, Arch::Arm64);
        assert_eq!(a.aws.routes, ["10.0.0.0/16", "10.1.0.0/16"]);
        assert_eq!(
            (a.aws.ia_days, a.aws.archive_days, a.aws.expire_days),
            (30, 90, 365)
        );
        assert!(a.ha && a.no_snat && !a.aws.allow_burstable);
        assert_eq!(a.aws.dns, DnsMode::ResolverEndpoint);
    }

    #[test]
    fn aws_without_a_vpc_is_refused_naming_the_flag() {
        let cli = parse(&[
            "plan",
            "--cloud",
            "aws",
            "--role",
            "subnet-router",
            "--endpoint-url",
            "http://127.0.0.1:9",
        ])
        .expect("parses");
        let err = run(cli).expect_err("no --vpc");
        assert!(format!("{err:#}").contains("--vpc is required"), "{err:#}");
    }

    #[test]
    fn domains_parse_repeated_or_comma_separated_and_local_refuses_them() {
        let cli = parse(&[
            "plan",
            "--cloud",
            "aws",
            "--role",
            "app-connector",
            "--domain",
            "app.example.com,*.example.net",
            "--domain",
            "b.example.org",
            "--max-routes",
            "50",
            "--route-ttl-floor",
            "3600",
        ])
        .expect("parses");
        let Command::Plan(a) = cli.command else {
            panic!("expected plan");
        };
        assert_eq!(
            a.aws.domains,
            ["app.example.com", "*.example.net", "b.example.org"]
        );
        assert_eq!(
            (a.aws.max_routes, a.aws.route_ttl_floor),
            (Some(50), Some(3600))
        );

        let cli = parse(&[
            "deploy",
            "--role",
            "app-connector",
            "--domain",
            "a.example.com",
        ])
        .expect("parses");
        let err = run(cli).expect_err("local has its own zone");
        assert!(
            err.to_string().starts_with("--domain with --cloud local"),
            "{err}"
        );
    }

    #[test]
    fn site_id_parses_for_aws_and_local_refuses_it() {
        let cli =
            parse(&["plan", "--cloud", "aws", "--role", "via6", "--site-id", "7"]).expect("parses");
        let Command::Plan(a) = cli.command else {
            panic!("expected plan");
        };
        assert_eq!(a.aws.site_id, Some(7));
        let err = parse(&["plan", "--site-id", "seven"]).expect_err("not a number");
        assert!(err.to_string().contains("--site-id"), "{err}");

        let cli = parse(&["deploy", "--role", "via6", "--site-id", "7"]).expect("parses");
        let err = run(cli).expect_err("local numbers its own sites");
        assert!(
            err.to_string().starts_with("--site-id with --cloud local"),
            "{err}"
        );
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
