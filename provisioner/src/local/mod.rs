//! `--cloud local`: a deployment built from network namespaces on this
//! machine, standing in for a cloud (see docs/reference/appliance.md for
//! the appliance it runs). Also the library the end-to-end tests use:
//!
//! ```no_run
//! use causeway_provisioner::local::{DeployOptions, DestroyGuard, Site, deploy};
//! let opts = DeployOptions::new("e2e1".parse()?);
//! let guard = DestroyGuard::new(&opts); // armed before anything exists
//! let dep = deploy(&opts)?;
//! let out = dep.exec_in(Site::Cli, &["curl", "-s", "http://198.19.1.10/"])?;
//! assert!(out.status.success());
//! drop(guard); // destroys, even when a test panics
//! # anyhow::Ok(())
//! ```

pub mod appliance;
mod deploy;
mod destroy;
pub mod exec;
pub mod ha;
pub mod netns;
pub mod network;
mod observe;
pub mod process;
pub mod services;
pub mod state;
mod status;
pub mod topology;
pub mod via6;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::Context;

pub use self::appliance::{Appliance, NodeSummary, PeerSummary};
pub use self::destroy::DestroyReport;
pub use self::ha::RouterStatus;
pub use self::netns::Netns;
pub use self::observe::{Action, Observation, Plan, PlanItem};
pub use self::process::{ProcessRecord, Stopped};
pub use self::state::{DeploymentState, Node, Secret, StateDir};
pub use self::status::StatusReport;
pub use self::topology::{Site, Topology};

use crate::cloud::{Provider, Verdict};
use crate::console::{OutputFormat, ProgressSink};
use crate::name::DeploymentName;
use crate::role::Role;

/// Where local deployments keep their state by default.
pub const DEFAULT_STATE_ROOT: &str = "/run/causeway/local";

/// What to deploy, and where.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// Deployment name; every namespace and file is named after it.
    pub name: DeploymentName,
    /// State directory (default `/run/causeway/local/NAME`). PostgreSQL
    /// runs as `postgres` from inside it, so every parent must be
    /// traversable by that user.
    pub state_dir: PathBuf,
    /// The `appliance` binary (default: found next to the executable).
    pub appliance_bin: Option<PathBuf>,
    /// PostgreSQL's server binaries (default: newest /usr/lib/postgresql/*/bin).
    pub pg_bin_dir: Option<PathBuf>,
    /// How long to wait for each service to come up.
    pub wait_timeout: Duration,
    /// Initialise and run control, write node configs and auth keys.
    pub start_control: bool,
    /// Start the subnet router(s) (needs control).
    pub start_router: bool,
    /// Two subnet routers for the same VPC subnet (`--ha`): `router` in
    /// `cw-NAME-rtr` and `router2` in `cw-NAME-rtr2`, both advertising it,
    /// both approved; control picks the primary.
    pub ha: bool,
    /// `--role exit-node`: also an exit node (`exit` in `cw-NAME-exit`,
    /// exit routes auto-approved by the policy) and a host on the internet
    /// running the echo server (`cw-NAME-web`); the client sends all its
    /// traffic through the exit node. Not with `ha`. The exit node starts
    /// with the router(s) (`start_router`).
    pub exit_node: bool,
    /// `--role app-connector`: also an app connector (`connector` in
    /// `cw-NAME-exit`, where the exit node would be, serving
    /// `*.apps.example`, its routes auto-approved by the policy), and on
    /// the internet host the apps and their resolver. Not with `ha`,
    /// `exit_node` or without `snat`. Starts with the router(s).
    pub app_connector: bool,
    /// `--role via6`: two 4via6 sites with the same VPC range: site 1 is
    /// the router and VPC as without it, site 2 a second router
    /// (`router2` in `cw-NAME-rtr2`) in front of a second VPC
    /// (`cw-NAME-vpc2`) whose host has the same address and runs an echo
    /// server. Each router advertises the range as its site's 4via6
    /// prefix, approved by the policy as `site:ID:198.19.1.0/24`. Not with
    /// `ha`, `exit_node`, `app_connector` or without `snat`.
    pub via6: bool,
    /// Masquerade the client to the router's VPC address (default). Off
    /// (`--no-snat`): the VPC host sees tailnet addresses, and the primary
    /// router points the VPC namespace's `100.64.0.0/10` route at itself
    /// (`[subnet_router.local_route_table]`). Not with `exit_node`.
    pub snat: bool,
    /// Start the client (needs control).
    pub start_client: bool,
    /// Prove the path client → router → VPC with `psql` and `curl`
    /// (only when router and client are started).
    pub verify: bool,
    /// Where progress lines go.
    pub progress: ProgressSink,
}

impl DeployOptions {
    /// Everything on, default state directory, progress on stdout.
    pub fn new(name: DeploymentName) -> Self {
        Self {
            state_dir: Path::new(DEFAULT_STATE_ROOT).join(name.as_str()),
            name,
            appliance_bin: None,
            pg_bin_dir: None,
            wait_timeout: Duration::from_secs(30),
            start_control: true,
            start_router: true,
            ha: false,
            exit_node: false,
            app_connector: false,
            via6: false,
            snat: true,
            start_client: true,
            verify: true,
            progress: ProgressSink::Stdout,
        }
    }

    /// Only the topology and the VPC services: no appliance at all.
    pub fn services_only(mut self) -> Self {
        self.start_control = false;
        self.start_router = false;
        self.start_client = false;
        self.verify = false;
        self
    }

    /// The role `deploy` records for these options.
    pub fn role(&self) -> Role {
        if self.exit_node {
            Role::ExitNode
        } else if self.app_connector {
            Role::AppConnector
        } else if self.via6 {
            Role::Via6
        } else {
            Role::SubnetRouter
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        self.name.check_local().context("--name")?;
        if (self.start_router || self.start_client) && !self.start_control {
            anyhow::bail!("starting the router or the client needs control: set start_control");
        }
        Ok(())
    }
}

/// A local deployment: its topology, state directory and the binaries it
/// runs. Cheap to open; opening changes nothing.
#[derive(Debug, Clone)]
pub struct LocalDeployment {
    opts: DeployOptions,
    topo: Topology,
    dir: StateDir,
    pg_bin: PathBuf,
    appliance: Option<Appliance>,
    /// Why no appliance binary was found, for the step that needs one.
    appliance_missing: Option<String>,
}

impl LocalDeployment {
    /// Opens the deployment `opts` describes, whether it exists or not.
    /// The appliance binary is optional here; steps that need it fail clearly.
    pub fn open(opts: &DeployOptions) -> anyhow::Result<Self> {
        opts.check()?;
        let pg_bin = services::find_pg_bin_dir(opts.pg_bin_dir.as_deref())?;
        let (appliance, appliance_missing) = match appliance::locate(opts.appliance_bin.as_deref())
        {
            Ok(bin) => (Some(Appliance::new(bin)), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        Ok(Self {
            opts: opts.clone(),
            topo: if opts.via6 && !opts.ha {
                Topology::with_via6(opts.name.clone())
            } else if opts.app_connector && !opts.ha {
                Topology::with_app_connector(opts.name.clone())
            } else {
                Topology::for_layout(
                    opts.name.clone(),
                    opts.ha,
                    opts.exit_node || opts.app_connector,
                )
            },
            dir: StateDir::new(&opts.state_dir),
            pg_bin,
            appliance,
            appliance_missing,
        })
    }

    /// The appliance, or why there is none.
    fn appliance_or_err(&self) -> anyhow::Result<&Appliance> {
        match (&self.appliance, &self.appliance_missing) {
            (Some(app), _) => Ok(app),
            (None, Some(why)) => anyhow::bail!("{why}"),
            (None, None) => anyhow::bail!("no appliance binary"),
        }
    }

    /// Refuses `--ha` with `--role exit-node`, and changing a deployment
    /// between one router and two or between roles: the VPC side is a
    /// plain veth with one router and a bridge with two, and the exit
    /// node changes the gateway and the client, so switching needs a
    /// destroy first.
    fn check_layout_matches(&self) -> anyhow::Result<()> {
        if self.opts.ha && self.opts.exit_node {
            anyhow::bail!(
                "--ha with --role exit-node: --cloud local deploys one exit node beside one subnet router; drop --ha"
            );
        }
        if self.opts.app_connector && (self.opts.ha || self.opts.exit_node || !self.opts.snat) {
            anyhow::bail!(
                "--role app-connector: --cloud local deploys one app connector beside one subnet router with SNAT; drop --ha and --no-snat"
            );
        }
        if self.opts.via6
            && (self.opts.ha || self.opts.exit_node || self.opts.app_connector || !self.opts.snat)
        {
            anyhow::bail!(
                "--role via6: --cloud local deploys one subnet router per 4via6 site, with SNAT; drop --ha and --no-snat"
            );
        }
        if !self.opts.snat && self.opts.exit_node {
            anyhow::bail!(
                "--no-snat with --role exit-node: an exit node masquerades the tailnet's traffic to its own address (the internet has no route back to 100.64.0.0/10)"
            );
        }
        let Some(state) = DeploymentState::load(&self.dir)? else {
            return Ok(());
        };
        let wanted = self.opts.role();
        if state.role != wanted.as_str() {
            anyhow::bail!(
                "--role {wanted}: deployment {} exists with role {}; destroy it first, or deploy --role {}",
                self.name(),
                state.role,
                state.role
            );
        }
        match (state.ha, self.opts.ha) {
            (true, false) => anyhow::bail!(
                "deployment {} was deployed with --ha (two subnet routers): pass --ha, or destroy it first",
                self.name()
            ),
            (false, true) => anyhow::bail!(
                "--ha: deployment {} exists with one subnet router; destroy it first, then deploy with --ha",
                self.name()
            ),
            (true, true) | (false, false) => {}
        }
        match (state.snat, self.opts.snat) {
            (false, true) => anyhow::bail!(
                "deployment {} was deployed with --no-snat: pass --no-snat, or destroy it first",
                self.name()
            ),
            (true, false) => anyhow::bail!(
                "--no-snat: deployment {} exists with SNAT on; destroy it first, then deploy with --no-snat",
                self.name()
            ),
            (true, true) | (false, false) => Ok(()),
        }
    }

    /// The deployment name.
    pub fn name(&self) -> &DeploymentName {
        self.topo.name()
    }

    /// The options it was opened with.
    pub fn options(&self) -> &DeployOptions {
        &self.opts
    }

    /// Its address plan.
    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// The appliance nodes of this deployment, in start order: the
    /// router(s), the exit node if any, then the client.
    pub fn nodes(&self) -> Vec<Node> {
        let mut out = vec![Node::Router];
        if self.topo.has_router2() {
            out.push(Node::Router2);
        }
        if self.topo.has_exit_node() {
            out.push(Node::Exit);
        }
        if self.topo.has_app_connector() {
            out.push(Node::Connector);
        }
        out.push(Node::Client);
        out
    }

    /// With `--no-snat`, the route table `node` (a router) points at
    /// itself when primary: the VPC namespace, via its VPC-side address.
    pub fn return_route(&self, node: Node) -> Option<appliance::LocalReturnRoute> {
        if self.opts.snat {
            return None;
        }
        let router = self
            .topo
            .routers()
            .into_iter()
            .find(|r| r.key == node.as_str())?;
        Some(appliance::LocalReturnRoute {
            namespace: self.topo.namespace(Site::Vpc),
            via: router.vpc_addr.to_owned(),
        })
    }

    /// With `--role via6`: the 4via6 site ID `node` (a router) serves.
    pub fn via6_site_id(&self, node: Node) -> Option<u16> {
        self.topo
            .via6_sites()
            .into_iter()
            .find(|s| s.router == node.as_str())
            .map(|s| s.id)
    }

    /// What a node's status must show before deploy goes on (see
    /// [`observe::node_ready`]).
    pub fn node_ready(&self, node: Node, s: &NodeSummary) -> bool {
        observe::node_ready(node, s, self.client_exit_node(), self.topo.has_via6())
    }

    /// With `--role via6`: the tailnet's MagicDNS domain, as the client's
    /// appliance wrote it (first `search` entry) into its namespace's
    /// `/etc/netns/cw-NAME-cli/resolv.conf`.
    pub fn tailnet_domain(&self) -> anyhow::Result<String> {
        let file = Path::new("/etc/netns")
            .join(self.namespace(Site::Cli))
            .join("resolv.conf");
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        search_domain(&text).with_context(|| {
            format!(
                "{} has no search domain: the client's node resolver has not written it yet",
                file.display()
            )
        })
    }

    /// The exit node the client is configured to use, if any.
    pub fn client_exit_node(&self) -> Option<&'static str> {
        self.topo.exit_node().map(|x| x.key)
    }

    /// The namespace name of `site` (`cw-NAME-SUFFIX`).
    pub fn namespace(&self, site: Site) -> String {
        self.topo.namespace(site)
    }

    /// The namespace of `site`, to run commands in.
    pub fn netns(&self, site: Site) -> Netns {
        network::netns(&self.topo, site)
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        self.dir.root()
    }

    /// Paths inside the state directory.
    pub fn paths(&self) -> &StateDir {
        &self.dir
    }

    /// The appliance binary in use, if found.
    pub fn appliance(&self) -> Option<&Appliance> {
        self.appliance.as_ref()
    }

    /// PostgreSQL's server binary directory.
    pub fn pg_bin_dir(&self) -> &Path {
        &self.pg_bin
    }

    /// Control's public address (198.18.0.2).
    pub fn control_addr(&self) -> &'static str {
        topology::CONTROL_ADDR
    }

    /// The subnet router's public address (198.18.0.3).
    pub fn router_public_addr(&self) -> &'static str {
        topology::ROUTER_PUBLIC_ADDR
    }

    /// The subnet router's VPC address (198.19.1.1).
    pub fn router_vpc_addr(&self) -> &'static str {
        topology::ROUTER_VPC_ADDR
    }

    /// The client's public address (198.18.0.4).
    pub fn client_addr(&self) -> &'static str {
        topology::CLIENT_ADDR
    }

    /// The VPC host (198.19.1.10), serving PostgreSQL and HTTP.
    pub fn vpc_host_addr(&self) -> &'static str {
        topology::VPC_HOST_ADDR
    }

    /// The VPC subnet the router advertises (198.19.1.0/24).
    pub fn vpc_subnet(&self) -> &'static str {
        topology::VPC_SUBNET
    }

    /// Runs `cmd[0] cmd[1..]` inside the namespace of `site` and returns its
    /// output, whatever its exit status.
    pub fn exec_in(&self, site: Site, cmd: &[&str]) -> anyhow::Result<Output> {
        let (program, args) = cmd.split_first().context("exec_in needs a program")?;
        let mut c = self.netns(site).command(program);
        c.args(args);
        exec::output(&mut c, None)
    }

    /// Queries the VPC database as user `causeway` from `site`; returns the row.
    pub fn query_db(&self, site: Site) -> anyhow::Result<String> {
        let pw = Secret::read(&self.dir.pg_password())?;
        services::query(
            &self.netns(site),
            topology::VPC_HOST_ADDR,
            &self.pg_bin,
            &pw,
            services::DB_QUERY,
        )
    }

    /// Fetches the VPC web page from `site`.
    pub fn http_get(&self, site: Site) -> anyhow::Result<String> {
        services::http_get(&self.netns(site), &services::vpc_url())
    }

    /// The command that runs `node`'s appliance in its namespace with its
    /// config, for tests that start nodes themselves.
    pub fn node_command(&self, node: Node) -> anyhow::Result<Command> {
        let app = self.appliance_or_err()?;
        Ok(app.run_command(&self.netns(node_site(node)), &self.dir.node_config(node)))
    }

    /// `appliance status --json` of `node`, summarised.
    pub fn node_status(&self, node: Node) -> anyhow::Result<NodeSummary> {
        let app = self.appliance_or_err()?;
        let v = app.status(&self.netns(node_site(node)), &self.dir.node_dir(node))?;
        Ok(NodeSummary::from_status(&v))
    }

    /// Creates another auth key with `tags` (never printed).
    pub fn create_auth_key(&self, tags: &[&str]) -> anyhow::Result<Secret> {
        let app = self.appliance_or_err()?;
        app.create_auth_key(&self.netns(Site::Ctl), &self.dir.admin_token(), tags)
    }

    /// `state.json`, if the deployment exists.
    pub fn state(&self) -> anyhow::Result<Option<DeploymentState>> {
        DeploymentState::load(&self.dir)
    }
}

/// The first `search` entry of a resolv.conf: the tailnet's domain, where
/// the node resolver puts it.
fn search_domain(resolv_conf: &str) -> Option<String> {
    resolv_conf.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some("search"))
            .then(|| words.next())
            .flatten()
            .map(|d| d.trim_end_matches('.').to_owned())
    })
}

/// The namespace a node runs in.
pub fn node_site(node: Node) -> Site {
    match node {
        Node::Router => Site::Rtr,
        Node::Router2 => Site::Rtr2,
        Node::Exit | Node::Connector => Site::Exit,
        Node::Client => Site::Cli,
    }
}

/// Creates or repairs the deployment until healthy; prints progress to
/// `opts.progress`. On failure, names the step; a later `deploy` resumes and
/// `destroy` cleans up.
pub fn deploy(opts: &DeployOptions) -> anyhow::Result<LocalDeployment> {
    let dep = LocalDeployment::open(opts)?;
    dep.check_layout_matches()?;
    deploy::run(&dep)?;
    Ok(dep)
}

/// What `deploy` would do; changes nothing.
pub fn plan(opts: &DeployOptions) -> anyhow::Result<Plan> {
    let dep = LocalDeployment::open(opts)?;
    dep.check_layout_matches()?;
    let obs = observe::observe(&dep)?;
    Ok(observe::plan_from(
        &obs,
        &dep.topo,
        &observe::Wanted::from(opts),
    ))
}

/// What runs and whether it is healthy.
pub fn status(opts: &DeployOptions) -> anyhow::Result<StatusReport> {
    let mut opts = opts.clone();
    // `status` takes no --ha or --role: the deployment says what it is.
    if let Some(state) = DeploymentState::load(&StateDir::new(&opts.state_dir))? {
        opts.ha = state.ha;
        opts.exit_node = state.role == Role::ExitNode.as_str();
        opts.app_connector = state.role == Role::AppConnector.as_str();
        opts.via6 = state.role == Role::Via6.as_str();
        opts.snat = state.snat;
    }
    let dep = LocalDeployment::open(&opts)?;
    status::report(&dep)
}

/// Removes everything the deployment created (also a half-finished one),
/// then checks nothing is left. A missing deployment is a no-op.
pub fn destroy(opts: &DeployOptions) -> anyhow::Result<DestroyReport> {
    let mut opts = opts.clone();
    // Destroy needs no appliance binary: processes are found by pid.
    opts.start_control = false;
    opts.start_router = false;
    opts.start_client = false;
    // The topology with both the second router and the exit node is the
    // union of every layout (each link keeps its index, and so its
    // temporary names, in every layout), so this finds everything any
    // kind of deploy may have left, even without a state.json.
    opts.ha = true;
    opts.exit_node = true;
    let dep = LocalDeployment::open(&opts)?;
    destroy::run(&dep)
}

/// Destroys a deployment when dropped, also when a test panics. Create it
/// before calling [`deploy`], so a deploy that fails half-way is cleaned too.
#[derive(Debug)]
pub struct DestroyGuard {
    opts: Option<DeployOptions>,
}

impl DestroyGuard {
    /// A guard for the deployment `opts` describes.
    pub fn new(opts: &DeployOptions) -> Self {
        Self {
            opts: Some(opts.clone()),
        }
    }

    /// Destroys now and returns the report (for asserting on it).
    pub fn destroy(mut self) -> anyhow::Result<DestroyReport> {
        match self.opts.take() {
            Some(opts) => destroy(&opts),
            None => anyhow::bail!("already destroyed"),
        }
    }

    /// Keeps the deployment (for debugging a failed test).
    pub fn disarm(mut self) {
        self.opts = None;
    }
}

impl Drop for DestroyGuard {
    fn drop(&mut self) {
        if let Some(opts) = self.opts.take() {
            match destroy(&opts) {
                Ok(report) if report.leftovers.is_empty() => {}
                Ok(report) => eprintln!("destroy of {} left: {:?}", opts.name, report.leftovers),
                Err(e) => eprintln!("destroy of {} failed: {e:#}", opts.name),
            }
        }
    }
}

/// `--cloud local` behind the [`Provider`] interface.
#[derive(Debug, Clone)]
pub struct LocalProvider {
    opts: DeployOptions,
}

impl LocalProvider {
    /// A provider for the deployment `opts` describes.
    pub fn new(opts: DeployOptions) -> Self {
        Self { opts }
    }

    fn opts_for(&self, format: OutputFormat) -> DeployOptions {
        let mut opts = self.opts.clone();
        opts.progress = match format {
            OutputFormat::Text => ProgressSink::Stdout,
            OutputFormat::Json => ProgressSink::Stderr,
        };
        opts
    }
}

impl Provider for LocalProvider {
    fn plan(&self, format: OutputFormat) -> anyhow::Result<Verdict> {
        let opts = self.opts_for(format);
        let plan = plan(&opts)?;
        match format {
            OutputFormat::Text => {
                print!("{}", plan.render(&opts));
                if let Err(e) = LocalDeployment::open(&opts)?.appliance_or_err() {
                    println!("note: deploy will fail in preflight: {e:#}");
                }
            }
            OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
        }
        Ok(if plan.is_noop() {
            Verdict::Healthy
        } else {
            Verdict::Unhealthy
        })
    }

    fn deploy(&self, format: OutputFormat) -> anyhow::Result<Verdict> {
        let opts = self.opts_for(format);
        deploy(&opts)?;
        if format == OutputFormat::Json {
            let report = status(&opts)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Ok(Verdict::Healthy)
    }

    fn status(&self, format: OutputFormat) -> anyhow::Result<Verdict> {
        let opts = self.opts_for(format);
        let report = status(&opts)?;
        match format {
            OutputFormat::Text => print!("{}", report.render()),
            OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        }
        Ok(if report.healthy {
            Verdict::Healthy
        } else {
            Verdict::Unhealthy
        })
    }

    fn destroy(&self, format: OutputFormat) -> anyhow::Result<Verdict> {
        let opts = self.opts_for(format);
        let report = destroy(&opts)?;
        match format {
            OutputFormat::Text => print!("{}", report.render()),
            OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        }
        if !report.leftovers.is_empty() {
            anyhow::bail!(
                "destroy left resources behind: {}",
                report.leftovers.join(", ")
            );
        }
        Ok(Verdict::Healthy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tailnet_domain_is_the_first_search_entry() {
        let written = "# written by causeway\nnameserver 100.100.100.100\nsearch tailnet.causeway.internal corp.example\n";
        assert_eq!(
            search_domain(written).as_deref(),
            Some("tailnet.causeway.internal")
        );
        assert_eq!(search_domain("nameserver 100.100.100.100\n"), None);
        assert_eq!(search_domain("search\n"), None);
        assert_eq!(
            search_domain("searchx a\nsearch b.example.\n").as_deref(),
            Some("b.example")
        );
    }

    #[test]
    fn via6_options_are_refused_with_ha_or_without_snat_naming_the_flags() {
        for (ha, snat) in [(true, true), (false, false)] {
            let mut opts = DeployOptions::new("t".parse().expect("valid"));
            opts.via6 = true;
            opts.ha = ha;
            opts.snat = snat;
            opts.state_dir = std::env::temp_dir().join("causeway-via6-refusal-never-created");
            opts.appliance_bin = Some(PathBuf::from("/bin/true"));
            // Only the layout check: opening needs PostgreSQL's binaries.
            let dep = LocalDeployment {
                topo: Topology::with_via6(opts.name.clone()),
                dir: StateDir::new(&opts.state_dir),
                pg_bin: PathBuf::from("/nonexistent"),
                appliance: None,
                appliance_missing: None,
                opts,
            };
            let err = dep.check_layout_matches().expect_err("refused");
            assert!(err.to_string().contains("--role via6"), "{err}");
            assert!(err.to_string().contains("--ha and --no-snat"), "{err}");
        }
    }
}
