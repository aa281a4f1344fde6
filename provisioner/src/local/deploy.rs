//! The deploy steps, in order. Each step looks before it acts, so running
//! deploy again resumes an interrupted deploy and changes nothing on a
//! healthy one.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use super::appliance::{self, CONNECTOR_TAG, EXIT_TAG, ROUTER_TAG};
use super::exec;
use super::observe::CONTROL_KEY;
use super::process::{self, ProcessRecord};
use super::services::{DB_QUERY, DnsServer, EchoServer, HttpServer, Postgres, echo_url, vpc_url};
use super::state::{
    DeploymentLock, DeploymentState, Node, STATE_VERSION, Secret, write_if_changed,
};
use super::topology::{
    APPS, APPS_ZONE, ExitPlan, HTTP_PORT, Site, Topology, VPC_DB_NAME, VPC_DNS_ZONE, VPC_HOST_ADDR,
};
use super::{LocalDeployment, ha, network, node_site, services, via6};
use crate::console::{Progress, StepOutcome};

/// One deploy step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Preflight,
    Network,
    Postgres,
    Http,
    Dns,
    Echo,
    Site2Echo,
    AppsDns,
    Control,
    KeysAndConfigs,
    Start(Node),
    Verify,
}

/// The steps and their labels, in order; `--ha` adds the second router,
/// `--role exit-node` the echo server and the exit node.
fn steps(topo: &Topology) -> Vec<(Step, &'static str)> {
    let mut out = vec![
        (Step::Preflight, "preflight"),
        (Step::Network, "network namespaces and links"),
        (Step::Postgres, "postgres in the VPC"),
        (Step::Http, "http server in the VPC"),
        (Step::Dns, "dns resolver in the VPC (corp.internal)"),
    ];
    if topo.has_internet() {
        out.push((Step::Echo, "echo server on the internet"));
    }
    if topo.has_via6() {
        out.push((
            Step::Site2Echo,
            "echo server in site 2's VPC (198.19.1.10 again)",
        ));
    }
    if topo.has_app_connector() {
        out.push((
            Step::AppsDns,
            "the apps' resolver on the internet (apps.example)",
        ));
    }
    out.push((Step::Control, "control"));
    out.push((Step::KeysAndConfigs, "auth keys and node configs"));
    out.push((Step::Start(Node::Router), "subnet router"));
    if topo.has_via6() {
        out.push((Step::Start(Node::Router2), "site 2's subnet router"));
    } else if topo.ha() {
        out.push((Step::Start(Node::Router2), "second subnet router"));
    }
    if topo.has_exit_node() {
        out.push((Step::Start(Node::Exit), "exit node"));
    }
    if topo.has_app_connector() {
        out.push((Step::Start(Node::Connector), "app connector"));
    }
    out.push((Step::Start(Node::Client), "client"));
    out.push((
        Step::Verify,
        match (topo.ha(), topo.has_exit_node(), topo.has_app_connector()) {
            _ if topo.has_via6() => "verify client -> each site's router -> its VPC, by 4via6 name",
            (true, _, _) => "verify client -> primary router -> VPC",
            (false, true, _) => {
                "verify client -> router -> VPC and client -> exit node -> internet"
            }
            (false, false, true) => {
                "verify client -> router -> VPC and client -> app connector -> apps by name"
            }
            (false, false, false) => "verify client -> router -> VPC",
        },
    ));
    out
}

/// Runs every step; on failure reports the step and leaves what was built
/// (recorded in `state.json`) for the next deploy or for destroy.
pub fn run(dep: &LocalDeployment) -> anyhow::Result<()> {
    let _lock = DeploymentLock::acquire(&dep.dir)?;
    let steps = steps(&dep.topo);
    let mut p = Progress::new(dep.opts.progress, steps.len());
    let mut state = initial_state(dep)?;
    let mut changed = false;
    let mut restart = BTreeSet::new();
    let mut details = Vec::new();
    for (step, label) in steps {
        p.begin(label);
        let result = match step {
            Step::Preflight => preflight(dep, &mut state),
            Step::Network => network::ensure(&dep.topo).map(outcome),
            Step::Postgres => {
                Postgres::new(dep.pg_bin.clone(), dep.dir.clone(), dep.netns(Site::Vpc))
                    .ensure(&mut state)
            }
            Step::Http => HttpServer::new(dep.dir.clone(), dep.netns(Site::Vpc)).ensure(
                &mut state,
                dep.name().as_str(),
                dep.opts.wait_timeout,
            ),
            Step::Dns => DnsServer::vpc(&dep.dir, dep.netns(Site::Vpc))
                .ensure(&mut state, dep.opts.wait_timeout),
            Step::Echo => EchoServer::new(dep.dir.clone(), dep.netns(Site::Web))
                .ensure(&mut state, dep.opts.wait_timeout),
            Step::Site2Echo => EchoServer::site2(dep.dir.clone(), dep.netns(Site::Vpc2))
                .ensure(&mut state, dep.opts.wait_timeout),
            Step::AppsDns => DnsServer::apps(&dep.dir, dep.netns(Site::Web))
                .ensure(&mut state, dep.opts.wait_timeout),
            Step::Control => control(dep, &mut state),
            Step::KeysAndConfigs => keys_and_configs(dep, &mut state, &mut restart),
            Step::Start(n) => node(dep, &mut state, n, &restart),
            Step::Verify => verify(dep, &mut details),
        };
        let saved = if dep.dir.root().is_dir() {
            state.save(&dep.dir)
        } else {
            Ok(())
        };
        match result.and_then(|o| saved.map(|()| o)) {
            Ok(o) => {
                changed |= o == StepOutcome::Changed;
                p.end(o);
                for line in details.drain(..) {
                    p.detail(&line);
                }
            }
            Err(e) => {
                p.fail();
                return Err(e.context(format!(
                    "deploy of {} stopped at {}; run deploy again to resume, or destroy to clean up",
                    dep.name(),
                    p.current_step()
                )));
            }
        }
    }
    if changed {
        p.line(&format!(
            "deployment {} is deployed and healthy",
            dep.name()
        ));
    } else {
        p.line(&format!(
            "deployment {} was already healthy: nothing changed",
            dep.name()
        ));
    }
    Ok(())
}

fn outcome(changed: bool) -> StepOutcome {
    if changed {
        StepOutcome::Changed
    } else {
        StepOutcome::Unchanged
    }
}

fn initial_state(dep: &LocalDeployment) -> anyhow::Result<DeploymentState> {
    if let Some(state) = DeploymentState::load(&dep.dir)? {
        return Ok(state);
    }
    Ok(DeploymentState {
        version: STATE_VERSION,
        name: dep.name().to_string(),
        cloud: "local".into(),
        role: dep.opts.role().to_string(),
        ha: dep.topo.ha(),
        snat: dep.opts.snat,
        namespaces: dep.topo.namespaces(),
        processes: Default::default(),
        postgres_data_dir: dep.dir.pg_data(),
        configs: Default::default(),
        secret_files: Default::default(),
    })
}

/// Checks privileges and tools before anything is created, then creates
/// the state directory and records the deployment in it.
fn preflight(dep: &LocalDeployment, state: &mut DeploymentState) -> anyhow::Result<StepOutcome> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the local cloud needs root (network namespaces, PostgreSQL as user postgres)");
    }
    for tool in [
        "ip", "runuser", "curl", "sysctl", "dnsmasq", "dig", "getent",
    ] {
        if find_in_path(tool).is_none() {
            bail!("`{tool}` is not installed (needed by --cloud local)");
        }
    }
    for bin in ["initdb", "pg_ctl", "psql"] {
        if !dep.pg_bin.join(bin).is_file() {
            bail!("{} has no {bin}", dep.pg_bin.display());
        }
    }
    if dep.opts.start_control {
        dep.appliance_or_err()?;
    }
    let root = dep.dir.root();
    let created = !root.is_dir();
    fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    // PostgreSQL runs as `postgres` from a directory inside: every
    // directory we create on the way must be traversable.
    for dir in root
        .ancestors()
        .take_while(|d| d.starts_with("/run/causeway") || *d == root)
    {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod 0755 {}", dir.display()))?;
    }
    let mut probe = Command::new("runuser");
    probe.args(["-u", "postgres", "--", "test", "-x"]).arg(root);
    if !exec::output(&mut probe, None)?.status.success() {
        bail!(
            "user postgres cannot enter the state directory {} (a parent directory is not world-traversable); choose another --state-dir",
            root.display()
        );
    }
    state.save(&dep.dir)?;
    Ok(outcome(created))
}

fn control(dep: &LocalDeployment, state: &mut DeploymentState) -> anyhow::Result<StepOutcome> {
    if !dep.opts.start_control {
        return Ok(StepOutcome::Skipped);
    }
    let app = dep.appliance_or_err()?;
    let ctl = dep.netns(Site::Ctl);
    let dir = &dep.dir;
    let mut changed = false;
    if !dir.control_pub().is_file() || !dir.admin_token().is_file() {
        fs::create_dir_all(dir.control_dir())
            .with_context(|| format!("creating {}", dir.control_dir().display()))?;
        app.control_init(&ctl, &dir.control_dir())?;
        changed = true;
    }
    let mut config_changed = write_if_changed(
        &dir.policy(),
        &appliance::policy(
            dep.topo.has_exit_node(),
            dep.topo.has_app_connector(),
            &via6_site_ids(dep),
        ),
        0o644,
    )?;
    config_changed |= write_if_changed(
        &dir.control_config(),
        &appliance::control_config(dir)?,
        0o644,
    )?;
    state.configs.insert("control".into(), dir.control_config());
    state.configs.insert("policy".into(), dir.policy());
    let alive = state
        .processes
        .get(CONTROL_KEY)
        .filter(|p| p.is_alive())
        .cloned();
    let record = match alive {
        Some(rec) if !config_changed => rec,
        other => {
            if let Some(old) = other {
                old.stop(Duration::from_secs(5));
            }
            let mut cmd = app.run_command(&ctl, &dir.control_config());
            let rec = process::spawn_logged(&mut cmd, ctl.name(), &dir.control_log())?;
            state.processes.insert(CONTROL_KEY.into(), rec.clone());
            changed = true;
            rec
        }
    };
    let mut last = String::new();
    let ready = process::poll(dep.opts.wait_timeout, || {
        if !record.is_alive() {
            bail!(
                "control exited; {} ends with:\n{}",
                dir.control_log().display(),
                record.log_tail(15)
            );
        }
        match app.admin_ready(&ctl, &dir.admin_token()) {
            Ok(()) => Ok(Some(())),
            Err(why) => {
                last = why;
                Ok(None)
            }
        }
    })?;
    if ready.is_none() {
        bail!(
            "control's admin API did not answer within {} s (last error: {last}); see {}",
            dep.opts.wait_timeout.as_secs(),
            dir.control_log().display()
        );
    }
    // The VPC's private zone, answered by its resolver through the
    // router. Not with 4via6 sites: the resolver's IPv4 address is routed
    // nowhere in the tailnet (each site's range is reached only by its
    // 4via6 names).
    let split = !dep.topo.has_via6()
        && app.ensure_split_dns(&ctl, &dir.admin_token(), VPC_DNS_ZONE, VPC_HOST_ADDR)?;
    Ok(outcome(changed || config_changed || split))
}

/// Writes auth keys and node configs; `restart` collects the nodes whose
/// config changed, so a running daemon must be restarted.
fn keys_and_configs(
    dep: &LocalDeployment,
    state: &mut DeploymentState,
    restart: &mut BTreeSet<Node>,
) -> anyhow::Result<StepOutcome> {
    if !dep.opts.start_control {
        return Ok(StepOutcome::Skipped);
    }
    let app = dep.appliance_or_err()?;
    let ctl = dep.netns(Site::Ctl);
    let mut changed = false;
    for node in dep.nodes() {
        let key_file = dep.dir.node_auth_key(node);
        if !key_file.is_file() {
            let tags: &[&str] = match node {
                Node::Router | Node::Router2 => &[ROUTER_TAG],
                Node::Exit => &[EXIT_TAG],
                Node::Connector => &[CONNECTOR_TAG],
                Node::Client => &[],
            };
            app.create_auth_key(&ctl, &dep.dir.admin_token(), tags)?
                .write(&key_file)?;
            changed = true;
        }
        state
            .secret_files
            .insert(format!("{}_auth_key", node.as_str()), key_file);
        fs::create_dir_all(dep.dir.node_dir(node))
            .with_context(|| format!("creating {}", dep.dir.node_dir(node).display()))?;
        let config = dep.dir.node_config(node);
        let config_changed = write_if_changed(
            &config,
            &appliance::node_config(
                &dep.dir,
                node,
                dep.client_exit_node(),
                dep.return_route(node),
                dep.via6_site_id(node),
            )?,
            0o644,
        )?;
        state.configs.insert(node.as_str().into(), config);
        if config_changed {
            restart.insert(node);
        }
        changed |= config_changed;
    }
    Ok(outcome(changed))
}

fn node(
    dep: &LocalDeployment,
    state: &mut DeploymentState,
    node: Node,
    restart: &BTreeSet<Node>,
) -> anyhow::Result<StepOutcome> {
    let wanted = match node {
        Node::Router | Node::Router2 | Node::Exit | Node::Connector => dep.opts.start_router,
        Node::Client => dep.opts.start_client,
    };
    let must_restart = restart.contains(&node);
    if !wanted {
        return Ok(StepOutcome::Skipped);
    }
    let app = dep.appliance_or_err()?;
    let ns = dep.netns(node_site(node));
    let alive = state
        .processes
        .get(node.as_str())
        .filter(|p| p.is_alive())
        .cloned();
    let mut changed = false;
    let record = match alive {
        Some(rec) if !must_restart => rec,
        other => {
            if let Some(old) = other {
                old.stop(Duration::from_secs(5));
            }
            let mut cmd = app.run_command(&ns, &dep.dir.node_config(node));
            let rec = process::spawn_logged(&mut cmd, ns.name(), &dep.dir.node_log(node))?;
            state.processes.insert(node.as_str().into(), rec.clone());
            changed = true;
            rec
        }
    };
    wait_node(dep, node, &record)?;
    Ok(outcome(changed))
}

fn wait_node(dep: &LocalDeployment, node: Node, record: &ProcessRecord) -> anyhow::Result<()> {
    let mut last = String::from("no status yet");
    let ready = process::poll(dep.opts.wait_timeout, || {
        if !record.is_alive() {
            bail!(
                "the {} exited; {} ends with:\n{}",
                node.as_str(),
                dep.dir.node_log(node).display(),
                record.log_tail(15)
            );
        }
        match dep.node_status(node) {
            Ok(s) if dep.node_ready(node, &s) => Ok(Some(())),
            Ok(s) => {
                last = format!("state {:?}, {} peer(s)", s.state, s.peers.len());
                Ok(None)
            }
            Err(e) => {
                last = format!("{e:#}");
                Ok(None)
            }
        }
    })?;
    if ready.is_none() {
        let wanted = match (node, dep.client_exit_node()) {
            (Node::Router | Node::Router2 | Node::Exit, _) => "\"state\": \"running\"".to_owned(),
            (Node::Connector, _) => {
                "\"state\": \"running\" and the connector answering DNS".to_owned()
            }
            (Node::Client, None) if dep.topo.has_via6() => format!(
                "\"state\": \"running\" and a peer routing each site's 4via6 prefix of {} (sites {:?})",
                super::topology::VPC_SUBNET,
                super::topology::VIA6_SITE_IDS
            ),
            (Node::Client, None) => format!(
                "\"state\": \"running\" and a peer routing {}",
                super::topology::VPC_SUBNET
            ),
            (Node::Client, Some(exit)) => format!(
                "\"state\": \"running\", a peer routing {} and all traffic through exit node {exit} (online; its exit routes approved by control)",
                super::topology::VPC_SUBNET
            ),
        };
        bail!(
            "the {} did not report {wanted} within {} s (last: {last}); see {}",
            node.as_str(),
            dep.opts.wait_timeout.as_secs(),
            dep.dir.node_log(node).display()
        );
    }
    Ok(())
}

/// The proof: from the client namespace, which has no route to the VPC
/// except through the tailnet, resolve the database's name (the C library,
/// the namespace's resolv.conf, the client's node resolver, split DNS, the
/// VPC's resolver through the router), query the database by that name and
/// fetch the page.
fn verify(dep: &LocalDeployment, details: &mut Vec<String>) -> anyhow::Result<StepOutcome> {
    if !(dep.opts.verify && dep.opts.start_router && dep.opts.start_client) {
        return Ok(StepOutcome::Skipped);
    }
    if dep.topo.has_via6() {
        details.extend(through_via6_sites(dep)?);
        return Ok(StepOutcome::Checked);
    }
    let cli = dep.netns(Site::Cli);
    let pw = Secret::read(&dep.dir.pg_password())?;
    let mut last = String::new();
    let proof = process::poll(dep.opts.wait_timeout, || {
        let resolved = services::resolve(&cli, VPC_DB_NAME);
        let row = services::query(&cli, VPC_DB_NAME, &dep.pg_bin, &pw, DB_QUERY);
        let page = services::http_get(&cli, &vpc_url());
        match (resolved, row, page) {
            (Ok(resolved), Ok(row), Ok(page)) => Ok(Some((resolved, row, page))),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                last = format!("{e:#}");
                Ok(None)
            }
        }
    })?;
    let Some((resolved, row, page)) = proof else {
        bail!(
            "the client could not reach the VPC host through the router within {} s: {last}",
            dep.opts.wait_timeout.as_secs()
        );
    };
    let line = page
        .lines()
        .find(|l| l.contains(services::HTTP_GREETING))
        .unwrap_or("(page without the expected line)");
    details.push(format!(
        "getent ahostsv4 {VPC_DB_NAME} from {} -> {resolved} (node resolver, split DNS to the VPC's resolver)",
        cli.name()
    ));
    details.push(format!(
        "psql {VPC_DB_NAME}:5432 from {} -> {row}",
        cli.name()
    ));
    details.push(format!(
        "curl {} from {} -> {}",
        vpc_url(),
        cli.name(),
        line.trim()
    ));
    if resolved != VPC_HOST_ADDR {
        bail!("{VPC_DB_NAME} resolved to {resolved} in the client, expected {VPC_HOST_ADDR}");
    }
    if row != services::DB_GREETING || !page.contains(services::HTTP_GREETING) {
        bail!("the VPC services answered, but not with the expected content");
    }
    if dep.topo.ha() {
        details.push(primary_router(dep)?);
    }
    if !dep.opts.snat {
        let report = super::status::return_route_report(dep);
        match (report.route, report.router) {
            (Some(route), Some(router)) => details.push(format!(
                "no SNAT: the VPC's tailnet route is `{route}`, set by {router}"
            )),
            (route, _) => bail!(
                "no SNAT, but the VPC's tailnet route does not lead to a router: {}",
                route.as_deref().unwrap_or("missing")
            ),
        }
    }
    if let Some(exit) = dep.topo.exit_node() {
        details.push(through_exit_node(dep, &exit)?);
    }
    if let Some(connector) = dep.topo.app_connector() {
        details.extend(through_app_connector(dep, &connector)?);
    }
    Ok(StepOutcome::Checked)
}

/// The 4via6 site IDs of the deployment (empty without `--role via6`).
fn via6_site_ids(dep: &LocalDeployment) -> Vec<u16> {
    dep.topo.via6_sites().iter().map(|s| s.id).collect()
}

/// With `--role via6`: for each site, the client resolves
/// `198-19-1-10-via-SITE.DOMAIN` (its node resolver answers the site's
/// 4via6 address: checked against the tailnet's range and the site ID)
/// and fetches the page by that name. The client has no route to
/// 198.19.1.0/24, only to each site's 4via6 prefix, so each fetch crosses
/// its own site's router; the answers tell the sites apart: site 1 serves
/// the VPC page, site 2's echo server answers with the address it saw,
/// its router's VPC address (SNAT). Site 1's database is queried by its
/// 4via6 name too.
fn through_via6_sites(dep: &LocalDeployment) -> anyhow::Result<Vec<String>> {
    let cli = dep.netns(Site::Cli);
    let mut lines = Vec::new();
    for site in dep.topo.via6_sites() {
        let mut last = String::new();
        let proof = process::poll(dep.opts.wait_timeout, || match via6::fetch(dep, &site) {
            Ok(fetched) if fetched.answer_is_from(&site) => Ok(Some(fetched)),
            Ok(fetched) => {
                last = format!("{} answered {:?}", fetched.url, fetched.body);
                Ok(None)
            }
            Err(e) => {
                last = format!("{e:#}");
                Ok(None)
            }
        })?;
        let Some(fetched) = proof else {
            bail!(
                "the client could not reach 198.19.1.10 at 4via6 site {} through {} within {} s (last: {last})",
                site.id,
                site.router,
                dep.opts.wait_timeout.as_secs()
            );
        };
        lines.push(format!(
            "getent ahostsv6 {} from {} -> {} (node resolver: 4via6 site {}, 198.19.1.10)",
            fetched.name,
            cli.name(),
            fetched.address,
            site.id
        ));
        lines.push(format!(
            "curl {} from {} -> {}",
            fetched.url,
            cli.name(),
            fetched.describe(&site)
        ));
        if via6::serves_the_page(&site) {
            let pw = Secret::read(&dep.dir.pg_password())?;
            let row = services::query(&cli, &fetched.name, &dep.pg_bin, &pw, DB_QUERY)
                .with_context(|| {
                    format!("querying the database at {} from the client", fetched.name)
                })?;
            if row != services::DB_GREETING {
                bail!("the database at {} answered {row:?}", fetched.name);
            }
            lines.push(format!(
                "psql {}:5432 from {} -> {row}",
                fetched.name,
                cli.name()
            ));
        }
    }
    Ok(lines)
}

/// With `--role app-connector`: the client resolves each app's name (its
/// node resolver sends `apps.example` to the connector, as split DNS
/// control made from the connector's domains) and fetches it; the client
/// has no route to the apps but the one the connector advertised, and the
/// echo server must see the connector's public address.
fn through_app_connector(
    dep: &LocalDeployment,
    connector: &ExitPlan,
) -> anyhow::Result<Vec<String>> {
    let cli = dep.netns(Site::Cli);
    let mut lines = Vec::new();
    for (name, addr) in APPS {
        let fqdn = format!("{name}.{APPS_ZONE}");
        let url = format!("http://{fqdn}:{HTTP_PORT}/");
        let mut last = String::new();
        let proof = process::poll(dep.opts.wait_timeout, || {
            let resolved = match services::resolve(&cli, &fqdn) {
                Ok(resolved) => resolved,
                Err(e) => {
                    last = format!("{e:#}");
                    return Ok(None);
                }
            };
            match services::http_get(&cli, &url) {
                Ok(body) if body.trim() == connector.public_addr => {
                    Ok(Some((resolved, body.trim().to_owned())))
                }
                Ok(body) => {
                    last = format!(
                        "the echo server saw {}",
                        connector.describe_caller(body.trim())
                    );
                    Ok(None)
                }
                Err(e) => {
                    last = format!("{e:#}");
                    Ok(None)
                }
            }
        })?;
        let Some((resolved, seen)) = proof else {
            bail!(
                "the client could not fetch {url} through the app connector within {} s (last: {last})",
                dep.opts.wait_timeout.as_secs()
            );
        };
        if resolved != addr {
            bail!("{fqdn} resolved to {resolved} in the client, expected {addr}");
        }
        lines.push(format!(
            "getent ahostsv4 {fqdn} from {} -> {resolved} (node resolver, split DNS to the app connector)",
            cli.name()
        ));
        lines.push(format!(
            "curl {url} from {} -> the echo server saw {}",
            cli.name(),
            connector.describe_caller(&seen)
        ));
    }
    Ok(lines)
}

/// With `--role exit-node`: the client's request to the internet's echo
/// server must arrive from the exit node's public address. The client
/// reaches the web host directly too (same public subnet), so a request
/// that bypassed the exit node would be seen from the client's own address.
fn through_exit_node(dep: &LocalDeployment, exit: &ExitPlan) -> anyhow::Result<String> {
    let cli = dep.netns(Site::Cli);
    let mut last = String::new();
    let seen = process::poll(dep.opts.wait_timeout, || {
        match services::http_get(&cli, &echo_url()) {
            Ok(body) if body.trim() == exit.public_addr => Ok(Some(body.trim().to_owned())),
            Ok(body) => {
                last = format!("the echo server saw {}", exit.describe_caller(body.trim()));
                Ok(None)
            }
            Err(e) => {
                last = format!("{e:#}");
                Ok(None)
            }
        }
    })?;
    let Some(seen) = seen else {
        bail!(
            "the client's request to the echo server ({}) did not arrive from the exit node's public address {} within {} s (last: {last})",
            echo_url(),
            exit.public_addr,
            dep.opts.wait_timeout.as_secs()
        );
    };
    Ok(format!(
        "curl {} from {} -> the echo server saw {}",
        echo_url(),
        cli.name(),
        exit.describe_caller(&seen)
    ))
}

/// With `--ha`: waits until control names exactly one primary for the VPC
/// subnet and holds both routers online with the route approved; returns
/// the line naming them.
fn primary_router(dep: &LocalDeployment) -> anyhow::Result<String> {
    let mut last = String::new();
    let settled = process::poll(dep.opts.wait_timeout, || {
        let (routers, error) = ha::routers(dep);
        let healthy = routers
            .iter()
            .all(|r| r.appliance.as_ref().is_some_and(|a| a.healthy()));
        if healthy && ha::sole_primary(&routers).is_some() {
            return Ok(Some(ha::describe(&routers)));
        }
        last = match error {
            Some(e) => e,
            None => ha::describe(&routers),
        };
        Ok(None)
    })?;
    settled.with_context(|| {
        format!(
            "control did not settle on one primary router with both routers online and approved within {} s (last: {last})",
            dep.opts.wait_timeout.as_secs()
        )
    })
}

fn find_in_path(tool: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| Path::new(p).is_file())
}
