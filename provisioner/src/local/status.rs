//! `status`: namespaces, processes and each node's view of the tailnet.

use std::fmt::Write;
use std::path::PathBuf;

use serde::Serialize;

use super::appliance::{ConnectorSummary, ExitNodeSummary, NodeSummary};
use super::netns::Netns;
use super::services::{self, DnsServer, EchoServer, HttpServer, PgState, Postgres};
use super::state::{DeploymentState, Node};
use super::topology::{APPS, APPS_ZONE, ExitPlan, HTTP_PORT, Site};
use super::via6::{self, Via6SiteReport};
use super::{LocalDeployment, RouterStatus, ha, network};

/// Everything `status` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    /// Deployment name.
    pub name: String,
    /// Always `local`.
    pub cloud: &'static str,
    /// State directory.
    pub state_dir: PathBuf,
    /// Whether the deployment exists at all.
    pub deployed: bool,
    /// Whether everything recorded runs and answers.
    pub healthy: bool,
    /// Namespaces and whether they exist.
    pub namespaces: Vec<NamespaceStatus>,
    /// Problems with namespaces and links.
    pub network_problems: Vec<String>,
    /// Recorded processes.
    pub processes: Vec<ProcessStatus>,
    /// PostgreSQL answers the proof query from inside the VPC.
    pub postgres_healthy: bool,
    /// The HTTP server serves its page inside the VPC.
    pub http_healthy: bool,
    /// The VPC's resolver answers for its zone inside the VPC.
    pub dns_healthy: bool,
    /// Each node's status, as the appliance reports it.
    pub nodes: Vec<NodeStatus>,
    /// Whether the client reaches the VPC web server through the router
    /// (checked only when both nodes were started, and not with `--role
    /// via6`, where [`StatusReport::via6_sites`] says it by site).
    pub client_reaches_vpc: Option<bool>,
    /// With `--role via6`: each 4via6 site's router, its routes by
    /// control's word, and a fetch by 4via6 name from the client.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub via6_sites: Vec<Via6SiteReport>,
    /// With `--role via6`: why control did not answer about the routers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via6_error: Option<String>,
    /// With `--ha`: each subnet router's place in the pair (primary,
    /// standby, offline), by control's word.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routers: Vec<RouterStatus>,
    /// With `--ha`: why control could not say which router is primary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routers_error: Option<String>,
    /// With `--role exit-node`: the exit node, and whether the client's
    /// traffic goes through it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_node: Option<ExitNodeReport>,
    /// With `--role app-connector`: the connector, and whether the client
    /// reaches an app through it by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_connector: Option<AppConnectorReport>,
    /// With `--no-snat`: the VPC namespace's `100.64.0.0/10` route, as
    /// `ip route` prints it (none: missing), and the router it leads to.
    pub vpc_return_route: Option<ReturnRouteReport>,
}

/// Where the VPC sends the tailnet's replies, without SNAT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReturnRouteReport {
    /// The route as `ip route show 100.64.0.0/10` prints it.
    pub route: Option<String>,
    /// The router whose VPC-side address it goes via.
    pub router: Option<String>,
}

/// The exit node or app connector: its process and control's word on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EdgeNodeStatus {
    /// Where it lives: host name (what the client's `exit_node` names),
    /// namespace, public address.
    pub plan: ExitPlan,
    /// Its pid as `state.json` records it (none: never started).
    pub pid: Option<i32>,
    /// Whether that process runs.
    pub alive: bool,
    /// Whether control holds it online (none: control did not answer).
    pub online: Option<bool>,
    /// The routes control approved for it (none: control did not answer).
    pub approved_routes: Option<Vec<String>>,
    /// Why control did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_error: Option<String>,
}

impl EdgeNodeStatus {
    /// A table of one row under `title`, and control's error if any.
    fn render(&self, out: &mut String, title: &str) {
        let _ = writeln!(
            out,
            "\n{:<10} {:<16} {:>8}  {:<7} {:<14} {:<7} APPROVED (control's word)",
            title, "NAMESPACE", "PID", "ALIVE", "PUBLIC", "ONLINE"
        );
        let approved = match &self.approved_routes {
            Some(r) if r.is_empty() => "NONE".to_owned(),
            Some(r) => r.join(","),
            None => "unknown".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<10} {:<16} {:>8}  {:<7} {:<14} {:<7} {approved}",
            self.plan.key,
            self.plan.namespace,
            self.pid.map_or("-".to_owned(), |p| p.to_string()),
            yes(self.alive),
            self.plan.public_addr,
            self.online.map_or("unknown", yes),
        );
        if let Some(e) = &self.control_error {
            let _ = writeln!(out, "  control did not answer: {e}");
        }
    }

    fn observe(dep: &LocalDeployment, state: Option<&DeploymentState>, plan: ExitPlan) -> Self {
        let record = state.and_then(|s| s.processes.get(plan.key));
        let (online, approved_routes, control_error) = match ha::control_nodes(dep) {
            Ok(all) => match all.iter().find(|n| n.hostname == plan.key) {
                Some(n) => (
                    Some(n.online),
                    Some(n.approved_routes.iter().map(ToString::to_string).collect()),
                    None,
                ),
                None => (Some(false), Some(Vec::new()), None),
            },
            Err(e) => (None, None, Some(format!("{e:#}"))),
        };
        Self {
            pid: record.map(|r| r.pid),
            alive: record.is_some_and(|r| r.is_alive()),
            plan,
            online,
            approved_routes,
            control_error,
        }
    }
}

/// The exit node of a `--role exit-node` deployment, by its process,
/// control's word, the client's status and the echo server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExitNodeReport {
    /// Its process and control's word.
    #[serde(flatten)]
    pub node: EdgeNodeStatus,
    /// The client's exit node, as the client's status says (none: the
    /// client did not answer or chose none).
    pub client_uses: Option<ExitNodeSummary>,
    /// Whether the echo server runs and answers on its host.
    pub echo_healthy: bool,
    /// The address the echo server saw the client's request come from, or
    /// why the request failed (none: the client was not started).
    pub client_seen_as: Option<Result<String, String>>,
}

impl ExitNodeReport {
    /// Running, online and approved; the client routes all its traffic
    /// through it, and the echo server sees the client as the exit node.
    pub fn healthy(&self) -> bool {
        self.node.alive
            && self.node.online == Some(true)
            && self
                .node
                .approved_routes
                .as_ref()
                .is_some_and(|r| r.iter().any(|p| p == "0.0.0.0/0"))
            && self
                .client_uses
                .as_ref()
                .is_some_and(|c| c.routes_all_through(self.node.plan.key))
            && self.echo_healthy
            && self
                .client_seen_as
                .as_ref()
                .and_then(|r| r.as_ref().ok())
                .map(String::as_str)
                == Some(self.node.plan.public_addr)
    }
}

fn exit_node_report(
    dep: &LocalDeployment,
    state: Option<&DeploymentState>,
    nodes: &[NodeStatus],
) -> Option<ExitNodeReport> {
    let node = EdgeNodeStatus::observe(dep, state, dep.topo.exit_node()?);
    let client_uses = nodes
        .iter()
        .find(|n| n.node == Node::Client)
        .and_then(|n| n.status.as_ref())
        .and_then(|s| s.exit_node.clone());
    let client_started = nodes.iter().any(|n| n.node == Node::Client);
    let client_seen_as = client_started.then(|| {
        services::http_get(&dep.netns(Site::Cli), &services::echo_url())
            .map(|b| b.trim().to_owned())
            .map_err(|e| format!("{e:#}"))
    });
    Some(ExitNodeReport {
        node,
        client_uses,
        echo_healthy: state
            .is_some_and(|s| EchoServer::new(dep.dir.clone(), dep.netns(Site::Web)).is_healthy(s)),
        client_seen_as,
    })
}

/// The app connector of a `--role app-connector` deployment, by its
/// process, control's word, its own status, the apps' servers and a fetch
/// by name from the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppConnectorReport {
    /// Its process and control's word.
    #[serde(flatten)]
    pub node: EdgeNodeStatus,
    /// What its own status says (none: it did not answer).
    pub connector: Option<ConnectorSummary>,
    /// Whether the apps' resolver and the echo server run and answer.
    pub apps_healthy: bool,
    /// The first app's URL, and the address the echo server saw the
    /// client's request come from, or why it failed (none: the client was
    /// not started).
    pub client_fetch: Option<(String, Result<String, String>)>,
}

impl AppConnectorReport {
    /// Running, online, answering DNS, the apps up, and the client's
    /// fetch by name seen from the connector's public address.
    pub fn healthy(&self) -> bool {
        self.node.alive
            && self.node.online == Some(true)
            && self.connector.as_ref().is_some_and(|c| c.serving)
            && self.apps_healthy
            && self
                .client_fetch
                .as_ref()
                .and_then(|(_, r)| r.as_ref().ok())
                .map(String::as_str)
                == Some(self.node.plan.public_addr)
    }

    fn render(&self, out: &mut String) {
        self.node.render(out, "CONNECTOR");
        match &self.connector {
            Some(c) => {
                let _ = writeln!(
                    out,
                    "  *.{APPS_ZONE}: DNS {}, {} addresses routed (max {})",
                    if c.serving {
                        "answering"
                    } else {
                        "NOT ANSWERING"
                    },
                    c.addresses,
                    c.max_routes
                );
            }
            None => {
                let _ = writeln!(out, "  its status did not answer");
            }
        }
        let fetched = match &self.client_fetch {
            None => "not checked (the client was not started)".to_owned(),
            Some((url, Ok(addr))) => format!("{url}: {}", self.node.plan.describe_caller(addr)),
            Some((url, Err(e))) => format!("{url}: NO ANSWER ({e})"),
        };
        let _ = writeln!(
            out,
            "client -> app connector -> apps: resolver and echo server {}; {fetched}",
            if self.apps_healthy {
                "answer"
            } else {
                "DO NOT ANSWER"
            },
        );
    }
}

fn app_connector_report(
    dep: &LocalDeployment,
    state: Option<&DeploymentState>,
    nodes: &[NodeStatus],
) -> Option<AppConnectorReport> {
    let node = EdgeNodeStatus::observe(dep, state, dep.topo.app_connector()?);
    let connector = nodes
        .iter()
        .find(|n| n.node == Node::Connector)
        .and_then(|n| n.status.as_ref())
        .and_then(|s| s.app_connector.clone());
    let web = dep.netns(Site::Web);
    let apps_healthy = state.is_some_and(|s| {
        DnsServer::apps(&dep.dir, web.clone()).is_healthy(s)
            && EchoServer::new(dep.dir.clone(), web.clone()).is_healthy(s)
    });
    let client_started = nodes.iter().any(|n| n.node == Node::Client);
    let client_fetch = client_started.then(|| {
        let (name, _) = APPS[0];
        let url = format!("http://{name}.{APPS_ZONE}:{HTTP_PORT}/");
        let seen = services::http_get(&dep.netns(Site::Cli), &url)
            .map(|b| b.trim().to_owned())
            .map_err(|e| format!("{e:#}"));
        (url, seen)
    });
    Some(AppConnectorReport {
        node,
        connector,
        apps_healthy,
        client_fetch,
    })
}

/// One namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamespaceStatus {
    /// Its name.
    pub name: String,
    /// Whether it exists.
    pub present: bool,
}

/// One recorded process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessStatus {
    /// Its key (`postgres`, `http`, `control`, `router`, `router2`, `client`).
    pub key: String,
    /// Its namespace.
    pub namespace: String,
    /// Its pid.
    pub pid: i32,
    /// Whether it still runs (same pid and start time).
    pub alive: bool,
}

/// One node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    /// Which node.
    pub node: Node,
    /// Its status summary, if it answered.
    pub status: Option<NodeSummary>,
    /// Why it did not, if it did not.
    pub error: Option<String>,
}

/// Builds the report.
pub fn report(dep: &LocalDeployment) -> anyhow::Result<StatusReport> {
    let state = DeploymentState::load(&dep.dir)?;
    let existing = Netns::list()?;
    let namespaces: Vec<NamespaceStatus> = dep
        .topo
        .namespaces()
        .into_iter()
        .map(|name| NamespaceStatus {
            present: existing.contains(&name),
            name,
        })
        .collect();
    let any_ns = namespaces.iter().any(|n| n.present);
    let deployed = state.is_some() || any_ns;
    let network_problems = if any_ns {
        network::findings(&dep.topo)?
    } else {
        Vec::new()
    };
    let processes: Vec<ProcessStatus> = state
        .iter()
        .flat_map(|s| s.processes.iter())
        .map(|(key, rec)| ProcessStatus {
            key: key.clone(),
            namespace: rec.namespace.clone(),
            pid: rec.pid,
            alive: rec.is_alive(),
        })
        .collect();
    let vpc = dep.netns(Site::Vpc);
    let postgres_healthy = any_ns
        && Postgres::new(dep.pg_bin.clone(), dep.dir.clone(), vpc.clone()).observe()
            == PgState::Healthy;
    let http_healthy = state
        .as_ref()
        .is_some_and(|s| HttpServer::new(dep.dir.clone(), vpc.clone()).is_healthy(s));
    let dns_healthy = state
        .as_ref()
        .is_some_and(|s| DnsServer::vpc(&dep.dir, vpc).is_healthy(s));
    let mut nodes = Vec::new();
    for node in dep.nodes() {
        if !processes.iter().any(|p| p.key == node.as_str()) {
            continue;
        }
        let (status, error) = match dep.node_status(node) {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        nodes.push(NodeStatus {
            node,
            status,
            error,
        });
    }
    let started = |node: Node| nodes.iter().any(|n| n.node == node);
    let client_reaches_vpc =
        (started(Node::Router) && started(Node::Client) && !dep.topo.has_via6()).then(|| {
            services::http_get(&dep.netns(Site::Cli), &services::vpc_url())
                .is_ok_and(|page| page.contains(services::HTTP_GREETING))
        });
    let (via6_sites, via6_error) = via6::report(dep, state.as_ref(), started(Node::Client));
    let site2_echo_healthy = !dep.topo.has_via6()
        || state.as_ref().is_some_and(|s| {
            EchoServer::site2(dep.dir.clone(), dep.netns(Site::Vpc2)).is_healthy(s)
        });
    let exit_node = exit_node_report(dep, state.as_ref(), &nodes);
    let app_connector = app_connector_report(dep, state.as_ref(), &nodes);
    let (routers, routers_error) = if dep.topo.ha() && state.is_some() {
        ha::routers(dep)
    } else {
        (Vec::new(), None)
    };
    let vpc_return_route = (!dep.opts.snat && deployed).then(|| return_route_report(dep));
    let healthy = deployed
        && vpc_return_route.as_ref().is_none_or(|r| r.router.is_some())
        && routers
            .iter()
            .all(|r| r.appliance.as_ref().is_some_and(|a| a.healthy()))
        && client_reaches_vpc != Some(false)
        && namespaces.iter().all(|n| n.present)
        && network_problems.is_empty()
        && processes.iter().all(|p| p.alive)
        && postgres_healthy
        && http_healthy
        && dns_healthy
        && nodes
            .iter()
            .all(|n| n.status.as_ref().is_some_and(|s| dep.node_ready(n.node, s)))
        && site2_echo_healthy
        && via6_sites.iter().all(Via6SiteReport::healthy)
        && exit_node.as_ref().is_none_or(ExitNodeReport::healthy)
        && app_connector
            .as_ref()
            .is_none_or(AppConnectorReport::healthy);
    Ok(StatusReport {
        name: dep.name().to_string(),
        cloud: "local",
        state_dir: dep.dir.root().to_owned(),
        deployed,
        healthy,
        namespaces,
        network_problems,
        processes,
        postgres_healthy,
        http_healthy,
        dns_healthy,
        nodes,
        client_reaches_vpc,
        via6_sites,
        via6_error,
        routers,
        routers_error,
        exit_node,
        app_connector,
        vpc_return_route,
    })
}

/// Reads the VPC namespace's tailnet route and names the router it leads to.
pub(super) fn return_route_report(dep: &LocalDeployment) -> ReturnRouteReport {
    let route = dep
        .netns(Site::Vpc)
        .ip(&["route", "show", "100.64.0.0/10"])
        .ok()
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty());
    let router = route.as_deref().and_then(|route| {
        let via = route
            .split_whitespace()
            .skip_while(|w| *w != "via")
            .nth(1)?;
        dep.topo
            .routers()
            .into_iter()
            .find(|r| r.vpc_addr == via)
            .map(|r| r.key.to_owned())
    });
    ReturnRouteReport { route, router }
}

impl StatusReport {
    /// The report as text tables.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.deployed {
            let _ = writeln!(out, "deployment {} (local) does not exist", self.name);
            return out;
        }
        let verdict = if self.healthy {
            "healthy"
        } else {
            "NOT HEALTHY"
        };
        let _ = writeln!(
            out,
            "deployment {} (local, state {}): {verdict}\n",
            self.name,
            self.state_dir.display()
        );
        let _ = writeln!(out, "{:<16} PRESENT", "NAMESPACE");
        for ns in &self.namespaces {
            let _ = writeln!(out, "{:<16} {}", ns.name, yes(ns.present));
        }
        for p in &self.network_problems {
            let _ = writeln!(out, "  problem: {p}");
        }
        let _ = writeln!(
            out,
            "\n{:<10} {:<16} {:>8}  ALIVE",
            "PROCESS", "NAMESPACE", "PID"
        );
        for p in &self.processes {
            let _ = writeln!(
                out,
                "{:<10} {:<16} {:>8}  {}",
                p.key,
                p.namespace,
                p.pid,
                yes(p.alive)
            );
        }
        let _ = writeln!(
            out,
            "\nservices: postgres {} / http {} / dns {} (checked from inside the VPC)",
            if self.postgres_healthy {
                "answers"
            } else {
                "DOES NOT ANSWER"
            },
            if self.http_healthy {
                "answers"
            } else {
                "DOES NOT ANSWER"
            },
            if self.dns_healthy {
                "answers"
            } else {
                "DOES NOT ANSWER"
            },
        );
        if !self.nodes.is_empty() {
            let _ = writeln!(
                out,
                "\n{:<8} {:<10} {:<10} {:<18} {:<12} {:>10} {:>10}",
                "NODE", "STATE", "PEER", "ROUTES", "HANDSHAKE", "RX BYTES", "TX BYTES"
            );
        }
        for n in &self.nodes {
            let node = n.node.as_str();
            match (&n.status, &n.error) {
                (Some(s), _) if s.peers.is_empty() => {
                    let _ = writeln!(out, "{node:<8} {:<10} (no peers)", s.state);
                }
                (Some(s), _) => {
                    for (i, p) in s.peers.iter().enumerate() {
                        let (nd, st) = if i == 0 {
                            (node, s.state.as_str())
                        } else {
                            ("", "")
                        };
                        let opt = |v: Option<u64>| v.map_or("-".to_owned(), |b| b.to_string());
                        // Host routes are the peer's own tailnet addresses; show subnets.
                        let subnets: Vec<&str> = p
                            .routes
                            .iter()
                            .map(String::as_str)
                            .filter(|r| !(r.ends_with("/32") || r.ends_with("/128")))
                            .collect();
                        let routes = if subnets.is_empty() {
                            "-".to_owned()
                        } else {
                            subnets.join(",")
                        };
                        let _ = writeln!(
                            out,
                            "{nd:<8} {st:<10} {:<10} {routes:<18} {:<12} {:>10} {:>10}",
                            p.name,
                            p.handshake.as_deref().unwrap_or("never"),
                            opt(p.rx_bytes),
                            opt(p.tx_bytes)
                        );
                    }
                }
                (None, e) => {
                    let _ = writeln!(
                        out,
                        "{node:<8} {:<10} {}",
                        "unknown",
                        e.as_deref().unwrap_or("")
                    );
                }
            }
        }
        if !self.routers.is_empty() {
            let _ = writeln!(
                out,
                "\n{:<8} {:<16} {:>8}  {:<7} HA ROLE (control's word)",
                "ROUTER", "NAMESPACE", "PID", "ALIVE"
            );
            for r in &self.routers {
                let _ = writeln!(
                    out,
                    "{:<8} {:<16} {:>8}  {:<7} {}",
                    r.node.as_str(),
                    r.namespace,
                    r.pid.map_or("-".to_owned(), |p| p.to_string()),
                    yes(r.alive),
                    r.ha_role
                );
                if let Some(h) = &r.appliance {
                    let _ = writeln!(out, "  {}", h.describe());
                }
            }
            let _ = writeln!(out, "{}", ha::describe(&self.routers));
            if let Some(e) = &self.routers_error {
                let _ = writeln!(out, "  control did not answer: {e}");
            }
        }
        if let Some(r) = &self.vpc_return_route {
            let _ = match (&r.route, &r.router) {
                (Some(route), Some(router)) => {
                    writeln!(out, "VPC return route (no SNAT): {route} ({router})")
                }
                (Some(route), None) => writeln!(
                    out,
                    "VPC return route (no SNAT): {route} (NOT VIA A ROUTER)"
                ),
                (None, _) => writeln!(
                    out,
                    "VPC return route (no SNAT): MISSING (no router has been primary yet)"
                ),
            };
        }
        if !self.via6_sites.is_empty() {
            via6::render(&self.via6_sites, self.via6_error.as_deref(), &mut out);
        }
        if let Some(x) = &self.exit_node {
            x.render(&mut out);
        }
        if let Some(c) = &self.app_connector {
            c.render(&mut out);
        }
        if let Some(ok) = self.client_reaches_vpc {
            let _ = writeln!(
                out,
                "\nclient -> router -> VPC ({}): {}",
                services::vpc_url(),
                if ok { "reachable" } else { "NOT REACHABLE" }
            );
        }
        out
    }
}

impl ExitNodeReport {
    fn render(&self, out: &mut String) {
        self.node.render(out, "EXIT");
        let _ = writeln!(
            out,
            "client's exit node: {}",
            self.client_uses.as_ref().map_or(
                "NONE (or the client did not answer)".to_owned(),
                ExitNodeSummary::describe
            )
        );
        let seen = match &self.client_seen_as {
            None => "not checked (the client was not started)".to_owned(),
            Some(Ok(addr)) => self.node.plan.describe_caller(addr),
            Some(Err(e)) => format!("NO ANSWER ({e})"),
        };
        let _ = writeln!(
            out,
            "client -> exit node -> internet ({}): echo server {}, saw the client as {seen}",
            services::echo_url(),
            if self.echo_healthy {
                "answers"
            } else {
                "DOES NOT ANSWER"
            },
        );
    }
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "NO" }
}
