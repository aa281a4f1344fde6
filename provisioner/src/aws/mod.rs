//! `--cloud aws`: the deployment of docs/reference/aws-contract.md through
//! the official AWS SDK. [`api`] is the only module that talks to AWS (one
//! module per service); the decisions are plain functions: sizing in
//! [`sizing`], subnets and routes in [`network`], the contract's resources
//! and the flag checks in [`spec`]. `plan` and `deploy` follow the same
//! observe → plan → apply split as `--cloud local`: [`prepare`] reads and
//! refuses before anything exists, [`observe`] reads each resource,
//! [`plan`] decides the changes (pure, one module per resource), `deploy`
//! walks the steps and applies the changes in order, and [`report`] prints
//! them; `destroy` and `status` find what carries the deployment's tag.

pub mod api;
pub mod control;
mod deploy;
mod destroy;
pub mod health;
pub mod network;
pub mod observe;
pub mod plan;
pub mod prepare;
pub mod report;
pub mod sizing;
pub mod spec;
mod status;
pub mod wait;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use self::api::Endpoint;
pub use self::control::{AdminApi, AuthKey};
pub use self::sizing::{Arch, Size};

use crate::cloud::{Provider, Verdict};
use crate::console::OutputFormat;
use crate::name::DeploymentName;
use crate::role::Role;

/// Default lifetime of a minted auth key: long enough for instances to
/// boot and join (deploy waits 300 s for that by default), short enough
/// that a key copied out of the secret is soon worthless.
pub const DEFAULT_AUTH_KEY_EXPIRY_SECONDS: u64 = 3600;

/// How split DNS reaches the VPC's private zones (`--dns`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DnsMode {
    /// The VPC resolver (CIDR base + 2), reached through the subnet router.
    #[default]
    Vpc,
    /// A Route 53 Resolver inbound endpoint with addresses in two AZs.
    ResolverEndpoint,
}

/// Everything `--cloud aws` needs for one command.
#[derive(Debug, Clone)]
pub struct AwsOptions {
    /// Deployment name.
    pub name: DeploymentName,
    /// Role (`plan`/`deploy`: required; `status`/`destroy`: a filter).
    pub role: Option<Role>,
    /// Region and endpoint.
    pub endpoint: Endpoint,
    /// The VPC (`--vpc`).
    pub vpc: Option<String>,
    /// Two instances in two AZs.
    pub ha: bool,
    /// Sizing tier.
    pub size: Size,
    /// Explicit instance type.
    pub instance_type: Option<String>,
    /// Allow burstable types.
    pub allow_burstable: bool,
    /// Architecture when no `--ami` is given.
    pub arch: Arch,
    /// Explicit image.
    pub ami: Option<String>,
    /// Advertised routes (default: the VPC's CIDRs).
    pub routes: Vec<String>,
    /// Masquerade tailnet sources.
    pub snat: bool,
    /// Exit node: a private subnet whose default route is a NAT gateway;
    /// the instance gets a second interface there and sends forwarded
    /// internet traffic out of it (`--egress-subnet`).
    pub egress_subnet: Option<String>,
    /// App connector: the domains it routes (`--domain`).
    pub domains: Vec<String>,
    /// App connector: most addresses held (`--max-routes`; `None`: the
    /// appliance's default).
    pub max_routes: Option<usize>,
    /// App connector: shortest life of a learned route, in seconds
    /// (`--route-ttl-floor`; `None`: the appliance's default).
    pub route_ttl_floor: Option<u64>,
    /// 4via6: the site ID every route is advertised under (`--site-id`,
    /// 0 to 65535; required with role via6, refused with any other). Kept
    /// wide so that an out-of-range value is refused naming the flag.
    pub site_id: Option<u32>,
    /// Split-DNS mode.
    pub dns: DnsMode,
    /// Control's node-facing URL (user data).
    pub control_url: Option<String>,
    /// Control's public key (user data).
    pub control_public_key: Option<String>,
    /// A file holding the auth key.
    pub auth_key_file: Option<PathBuf>,
    /// The Secrets Manager endpoint appliances read the auth key from
    /// (user data); `None`: the region's.
    pub secrets_manager_endpoint: Option<String>,
    /// Control's admin API (mints keys; tells the primary).
    pub admin: Option<AdminApi>,
    /// Recordings bucket name override.
    pub bucket: Option<String>,
    /// KMS key for the bucket (default SSE-S3).
    pub kms_key: Option<String>,
    /// Days to Standard-IA.
    pub ia_days: i32,
    /// Days to Glacier.
    pub archive_days: i32,
    /// Days to expiry.
    pub expire_days: i32,
    /// The recorder's web UI is on (read and list).
    pub recorder_ui: bool,
    /// Networks allowed to send recordings (`--recorder-allow`).
    pub recorder_allow: Vec<String>,
    /// Root volume size in GiB.
    pub root_volume_gib: i32,
    /// Control's state volume size in GiB (when created).
    pub state_volume_gib: i32,
    /// `destroy` empties and deletes a non-empty recordings bucket.
    pub delete_recordings: bool,
    /// How long to wait for instances to run or terminate.
    pub wait_timeout: Duration,
    /// How long `deploy` waits for the appliances' health (zero: no wait).
    pub health_timeout: Duration,
    /// Lifetime of an auth key deploy mints (`--auth-key-expiry`).
    pub auth_key_expiry: Duration,
}

impl AwsOptions {
    /// Defaults of the contract for `name`.
    pub fn new(name: DeploymentName) -> Self {
        Self {
            name,
            role: None,
            endpoint: Endpoint::default(),
            vpc: None,
            ha: false,
            size: Size::Standard,
            instance_type: None,
            allow_burstable: false,
            arch: Arch::Arm64,
            ami: None,
            routes: Vec::new(),
            snat: true,
            egress_subnet: None,
            domains: Vec::new(),
            max_routes: None,
            route_ttl_floor: None,
            site_id: None,
            dns: DnsMode::Vpc,
            control_url: None,
            control_public_key: None,
            auth_key_file: None,
            secrets_manager_endpoint: None,
            admin: None,
            bucket: None,
            kms_key: None,
            ia_days: 30,
            archive_days: 90,
            expire_days: 365,
            recorder_ui: false,
            recorder_allow: vec![spec::DEFAULT_RECORDER_ALLOW.to_owned()],
            root_volume_gib: 8,
            state_volume_gib: 8,
            delete_recordings: false,
            wait_timeout: Duration::from_secs(600),
            health_timeout: Duration::from_secs(300),
            auth_key_expiry: Duration::from_secs(DEFAULT_AUTH_KEY_EXPIRY_SECONDS),
        }
    }
}

/// `--cloud aws` behind the [`Provider`] interface.
#[derive(Debug, Clone)]
pub struct AwsProvider {
    opts: AwsOptions,
}

impl AwsProvider {
    /// A provider for the deployment `opts` describes.
    pub fn new(opts: AwsOptions) -> Self {
        Self { opts }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

impl Provider for AwsProvider {
    fn plan(&self, format: OutputFormat) -> anyhow::Result<Verdict> {
        runtime()?.block_on(deploy::run(&self.opts, format, deploy::Mode::Plan))
    }

    fn deploy(&self, format: OutputFormat) -> anyhow::Result<Verdict> {
        runtime()?.block_on(deploy::run(&self.opts, format, deploy::Mode::Apply))
    }

    fn status(&self, format: OutputFormat) -> anyhow::Result<Verdict> {
        runtime()?.block_on(status::run(&self.opts, format))
    }

    fn destroy(&self, format: OutputFormat) -> anyhow::Result<Verdict> {
        runtime()?.block_on(destroy::run(&self.opts, format))
    }
}
