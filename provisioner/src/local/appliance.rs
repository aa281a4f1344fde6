//! The `appliance` binary as the provisioner drives it: `control init`,
//! `admin keys …`, `status --json`, `run --config`; and the config files
//! and policy it is given (see docs/reference/appliance.md).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use causeway_wire::admin::NodeView;
use causeway_wire::via6;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Serialize;
use serde_json::Value;

use super::exec;
use super::netns::Netns;
use super::state::{Node, Secret, StateDir};
use super::topology::{
    ADMIN_PORT, APPS_RESOLVER, APPS_ZONE, CONTROL_ADDR, CONTROL_PORT, VPC_HOST_ADDR, VPC_SUBNET,
    WG_PORT,
};

/// The tag the subnet router's auth key carries; the policy auto-approves
/// the VPC subnet for it.
pub const ROUTER_TAG: &str = "tag:subnet-router";
/// The tag the exit node's auth key carries; the policy auto-approves its
/// exit routes (`autoApprovers.exitNode`).
pub const EXIT_TAG: &str = "tag:exit-node";
/// The tag the app connector's auth key carries; the policy auto-approves
/// the public routes it learns.
pub const CONNECTOR_TAG: &str = "tag:app-connector";
/// The TUN device name of every node.
pub const TUN_NAME: &str = "cw0";
/// Each node serves Prometheus metrics on this port of its namespace's
/// loopback address.
pub const METRICS_PORT: u16 = 9100;

/// Finds the `appliance` binary: the override, else next to the running
/// executable (or one directory up, where cargo puts binaries relative to
/// test executables in `target/debug/deps`).
pub fn locate(overridden: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = overridden {
        if !path.is_file() {
            bail!("--appliance-bin {}: no such file", path.display());
        }
        return Ok(path.to_owned());
    }
    let exe = std::env::current_exe().context("finding the provisioner's own executable")?;
    let dir = exe
        .parent()
        .context("the executable has no parent directory")?;
    let candidates = [dir.join("appliance"), dir.join("../appliance")];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "no `appliance` binary next to {} (build it, or pass --appliance-bin / CAUSEWAY_APPLIANCE_BIN)",
                exe.display()
            )
        })
}

/// The appliance binary, run inside namespaces.
#[derive(Debug, Clone)]
pub struct Appliance {
    bin: PathBuf,
}

impl Appliance {
    /// The appliance at `bin`.
    pub fn new(bin: PathBuf) -> Self {
        Self { bin }
    }

    /// Its path.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// `appliance control init --state-dir DIR` in `ns`: returns control's
    /// public key. Idempotent in the appliance.
    pub fn control_init(&self, ns: &Netns, dir: &Path) -> anyhow::Result<String> {
        let mut cmd = ns.command(&self.bin);
        cmd.args(["control", "init", "--state-dir"]).arg(dir);
        let out = exec::run(&mut cmd).context("initialising control")?;
        Ok(out.trim().to_owned())
    }

    /// `appliance run --config FILE` in `ns`, to be spawned by the caller.
    pub fn run_command(&self, ns: &Netns, config: &Path) -> Command {
        let mut cmd = ns.command(&self.bin);
        cmd.args(["run", "--config"]).arg(config);
        cmd
    }

    /// `appliance admin --url … --token-file … ARGS…` in the control namespace.
    pub fn admin_command(&self, ns: &Netns, token_file: &Path, args: &[&str]) -> Command {
        let mut cmd = ns.command(&self.bin);
        cmd.arg("admin")
            .args(["--url", &admin_url()])
            .arg("--token-file")
            .arg(token_file)
            .args(args);
        cmd
    }

    /// Whether the admin API answers `keys list`; `Err` carries why not.
    pub fn admin_ready(&self, ns: &Netns, token_file: &Path) -> Result<(), String> {
        let mut cmd = self.admin_command(ns, token_file, &["keys", "list"]);
        match exec::output(&mut cmd, None) {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
            Err(e) => Err(format!("{e:#}")),
        }
    }

    /// Creates an auth key with `tags`. The key is captured, never printed.
    pub fn create_auth_key(
        &self,
        ns: &Netns,
        token_file: &Path,
        tags: &[&str],
    ) -> anyhow::Result<Secret> {
        let mut args = vec!["keys", "create"];
        for tag in tags {
            args.extend(["--tag", tag]);
        }
        let mut cmd = self.admin_command(ns, token_file, &args);
        let out = exec::run(&mut cmd).context("creating an auth key")?;
        let key = out.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            bail!("`appliance admin keys create` printed something other than a single key");
        }
        Ok(Secret::new(key.to_owned()))
    }

    /// Makes control send queries under `domain` to `resolver` (split
    /// DNS), unless it already does exactly that; returns whether it
    /// changed anything.
    pub fn ensure_split_dns(
        &self,
        ns: &Netns,
        token_file: &Path,
        domain: &str,
        resolver: &str,
    ) -> anyhow::Result<bool> {
        let mut list = self.admin_command(ns, token_file, &["--json", "dns", "list"]);
        let out = exec::run(&mut list).context("asking control for its split DNS")?;
        let now: BTreeMap<String, Vec<IpAddr>> =
            serde_json::from_str(&out).context("parsing `appliance admin --json dns list`")?;
        let want: IpAddr = resolver
            .parse()
            .with_context(|| format!("split-DNS resolver {resolver:?}: not an IP address"))?;
        if now.get(domain).is_some_and(|have| have == &[want]) {
            return Ok(false);
        }
        let mut set = self.admin_command(
            ns,
            token_file,
            &["dns", "set-split", "--resolver", resolver, domain],
        );
        exec::run(&mut set).with_context(|| format!("registering split DNS for {domain}"))?;
        Ok(true)
    }

    /// Every node control knows (`appliance admin --json nodes list`), in
    /// the control namespace `ns`.
    pub fn nodes(&self, ns: &Netns, token_file: &Path) -> anyhow::Result<Vec<NodeView>> {
        let mut cmd = self.admin_command(ns, token_file, &["--json", "nodes", "list"]);
        let out = exec::run(&mut cmd).context("asking control for its nodes")?;
        serde_json::from_str(&out).context("parsing `appliance admin --json nodes list`")
    }

    /// `appliance status --state-dir DIR --json` in `ns`, parsed.
    pub fn status(&self, ns: &Netns, state_dir: &Path) -> anyhow::Result<Value> {
        let mut cmd = ns.command(&self.bin);
        cmd.arg("status")
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--json");
        let out = exec::run(&mut cmd)?;
        serde_json::from_str(&out).context("parsing `appliance status --json`")
    }
}

/// Control's admin URL, on the control namespace's loopback.
pub fn admin_url() -> String {
    format!("http://127.0.0.1:{ADMIN_PORT}")
}

/// Control's node-facing URL.
pub fn control_url() -> String {
    format!("http://{CONTROL_ADDR}:{CONTROL_PORT}")
}

#[derive(Serialize)]
struct ControlFile {
    state_dir: PathBuf,
    control: ControlSection,
}

#[derive(Serialize)]
struct ControlSection {
    listen: String,
    admin_listen: String,
    policy_file: PathBuf,
}

#[derive(Serialize)]
struct NodeFile {
    state_dir: PathBuf,
    node: NodeSection,
    #[serde(skip_serializing_if = "Option::is_none")]
    subnet_router: Option<SubnetRouterSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_node: Option<ExitNodeSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    app_connector: Option<AppConnectorSection>,
    metrics: MetricsSection,
}

/// `[app_connector]`: the apps' domain, asked of its resolver on the
/// internet host.
#[derive(Serialize)]
struct AppConnectorSection {
    domains: Vec<String>,
    resolvers: Vec<String>,
}

#[derive(Serialize)]
struct ExitNodeSection {
    /// The local network has no IPv6 uplink: advertise `0.0.0.0/0` only.
    ipv6: bool,
}

#[derive(Serialize)]
struct MetricsSection {
    listen: String,
}

#[derive(Serialize)]
struct NodeSection {
    control_url: String,
    control_public_key_file: PathBuf,
    auth_key_file: PathBuf,
    hostname: String,
    listen_port: u16,
    tun_name: String,
    accept_routes: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_node: Option<String>,
    /// The client runs the node resolver (MagicDNS, and the VPC's zone by
    /// split DNS); its namespace resolves through it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    dns_resolver: bool,
}

#[derive(Serialize)]
struct SubnetRouterSection {
    routes: Vec<RouteEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    local_route_table: Option<LocalReturnRoute>,
}

/// `[subnet_router.local_route_table]` (`--no-snat`): the VPC namespace,
/// and this router's address in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalReturnRoute {
    /// The VPC namespace (`cw-NAME-vpc`).
    pub namespace: String,
    /// The router's VPC-side address.
    pub via: String,
}

#[derive(Serialize)]
struct RouteEntry {
    prefix: String,
    /// Off with `--no-snat`: the VPC host sees tailnet addresses.
    snat: bool,
    /// The VPC host: the router reports the route unhealthy (and an HA
    /// pair fails over) when it stops answering through this router.
    probe_icmp: String,
    /// With `--role via6`: the site ID; the router advertises the range as
    /// its 4via6 prefix instead of the IPv4 prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    site_id: Option<u16>,
}

/// Control's config file.
pub fn control_config(dir: &StateDir) -> anyhow::Result<String> {
    let file = ControlFile {
        state_dir: dir.control_dir(),
        control: ControlSection {
            listen: format!("{CONTROL_ADDR}:{CONTROL_PORT}"),
            admin_listen: format!("127.0.0.1:{ADMIN_PORT}"),
            policy_file: dir.policy(),
        },
    };
    toml::to_string(&file).context("rendering control's config")
}

/// A node's config file: the router(s) advertise the VPC subnet, the exit
/// node its exit routes, the client accepts routes and, when `exit_node`
/// names one, sends all its traffic through that exit node. None names its
/// endpoints: each finds them itself (interface addresses, and the address
/// control's STUN port sees, which for a router or the exit node is its
/// public address on the internet gateway). A router given a
/// `return_route` does not masquerade, and points that route table at
/// itself when primary. A router given a `site_id` (`--role via6`)
/// serves the VPC subnet as that 4via6 site.
pub fn node_config(
    dir: &StateDir,
    node: Node,
    exit_node: Option<&str>,
    return_route: Option<LocalReturnRoute>,
    site_id: Option<u16>,
) -> anyhow::Result<String> {
    let (subnet_router, exit_section, accept_routes, choice) = match node {
        Node::Router | Node::Router2 => (
            Some(SubnetRouterSection {
                routes: vec![RouteEntry {
                    prefix: VPC_SUBNET.to_owned(),
                    snat: return_route.is_none(),
                    probe_icmp: VPC_HOST_ADDR.to_owned(),
                    site_id,
                }],
                local_route_table: return_route,
            }),
            None,
            false,
            None,
        ),
        Node::Exit => (None, Some(ExitNodeSection { ipv6: false }), false, None),
        Node::Connector | Node::Client => (None, None, node == Node::Client, None),
    };
    let choice = if node == Node::Client {
        exit_node.map(str::to_owned)
    } else {
        choice
    };
    let app_connector = (node == Node::Connector).then(|| AppConnectorSection {
        domains: vec![format!("*.{APPS_ZONE}")],
        resolvers: vec![APPS_RESOLVER.to_owned()],
    });
    let file = NodeFile {
        state_dir: dir.node_dir(node),
        node: NodeSection {
            control_url: control_url(),
            control_public_key_file: dir.control_pub(),
            auth_key_file: dir.node_auth_key(node),
            hostname: node.as_str().to_owned(),
            listen_port: WG_PORT,
            tun_name: TUN_NAME.to_owned(),
            accept_routes,
            exit_node: choice,
            dns_resolver: node == Node::Client,
        },
        subnet_router,
        exit_node: exit_section,
        app_connector,
        metrics: MetricsSection {
            listen: format!("127.0.0.1:{METRICS_PORT}"),
        },
    };
    toml::to_string(&file).with_context(|| format!("rendering the {} config", node.as_str()))
}

/// The tailnet policy: everyone may reach everything (this is a demo
/// tailnet of a few devices), the VPC subnet is auto-approved for routers
/// tagged [`ROUTER_TAG`] and, with `exit_node`, exit routes for the node
/// tagged [`EXIT_TAG`]; with `app_connector`, the public routes the node
/// tagged [`CONNECTOR_TAG`] learns (any inside `0.0.0.0/0`). With
/// `via6_sites` (`--role via6`) the VPC subnet is approved only as those
/// 4via6 sites (`site:SITE:198.19.1.0/24`), never as the IPv4 prefix.
pub fn policy(exit_node: bool, app_connector: bool, via6_sites: &[u16]) -> String {
    let (mut owners, mut approvers, mut routes) = (String::new(), String::new(), String::new());
    if exit_node {
        owners.push_str(&format!("\n    \"{EXIT_TAG}\": [\"autogroup:admin\"],"));
        approvers.push_str(&format!("\n    \"exitNode\": [\"{EXIT_TAG}\"],"));
    }
    if app_connector {
        owners.push_str(&format!(
            "\n    \"{CONNECTOR_TAG}\": [\"autogroup:admin\"],"
        ));
        routes.push_str(&format!("\n      \"0.0.0.0/0\": [\"{CONNECTOR_TAG}\"],"));
    }
    let vpc_keys: Vec<String> = if via6_sites.is_empty() {
        vec![VPC_SUBNET.to_owned()]
    } else {
        via6_sites
            .iter()
            .map(|site| format!("site:{site}:{VPC_SUBNET}"))
            .collect()
    };
    let vpc_routes: String = vpc_keys
        .iter()
        .map(|key| format!("\n      \"{key}\": [\"{ROUTER_TAG}\"],"))
        .collect();
    let (exit_owner, exit_approver) = (owners, approvers);
    format!(
        r#"// Written by the Causeway provisioner (--cloud local).
{{
  "tagOwners": {{
    "{ROUTER_TAG}": ["autogroup:admin"],{exit_owner}
  }},
  "autoApprovers": {{
    "routes": {{{vpc_routes}{routes}
    }},{exit_approver}
  }},
  "acls": [
    {{"action": "accept", "src": ["*"], "dst": ["*:*"]}},
  ],
}}
"#
    )
}

/// What `appliance status --json` says about a node, reduced to what the
/// provisioner shows and waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeSummary {
    /// The daemon's state (`running` when up).
    pub state: String,
    /// Its tailnet name.
    pub name: Option<String>,
    /// Its tailnet addresses.
    pub addresses: Vec<String>,
    /// Routes it points at its TUN device (`None`: not reported).
    pub kernel_routes: Option<Vec<String>>,
    /// Its peers.
    pub peers: Vec<PeerSummary>,
    /// Its exit node choice (`None`: the status has none, or it is `none`).
    pub exit_node: Option<ExitNodeSummary>,
    /// On an app connector: whether it answers DNS, and the addresses it
    /// routes (`None` on other nodes).
    pub app_connector: Option<ConnectorSummary>,
}

/// What an app connector's status says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectorSummary {
    /// Whether its DNS forwarder answers.
    pub serving: bool,
    /// Addresses it routes now.
    pub addresses: u64,
    /// Its cap.
    pub max_routes: u64,
}

/// What a client's status says of its exit node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExitNodeSummary {
    /// What was asked for (`exit`, `auto`, ...).
    pub choice: String,
    /// The peer it resolved to.
    pub selected: Option<String>,
    /// Whether that peer is online.
    pub online: bool,
    /// Whether all traffic goes into the tunnel.
    pub routing_all: bool,
}

impl ExitNodeSummary {
    /// Whether traffic goes through exit node `name`: selected, online and
    /// routing all.
    pub fn routes_all_through(&self, name: &str) -> bool {
        self.selected.as_deref() == Some(name) && self.online && self.routing_all
    }

    /// One line, e.g. `exit (online), all traffic through the tunnel`.
    pub fn describe(&self) -> String {
        format!(
            "{} -> {}{}, {}",
            self.choice,
            self.selected.as_deref().unwrap_or("(none usable)"),
            if self.online {
                " (online)"
            } else {
                " (OFFLINE)"
            },
            if self.routing_all {
                "all traffic through the tunnel"
            } else {
                "traffic on the host's own routes"
            }
        )
    }
}

/// One peer of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerSummary {
    /// Hostname (or key, if the status has no hostname).
    pub name: String,
    /// Routes (allowed IPs / primary routes) through this peer.
    pub routes: Vec<String>,
    /// Latest handshake, as the appliance reports it.
    pub handshake: Option<String>,
    /// Bytes received from the peer.
    pub rx_bytes: Option<u64>,
    /// Bytes sent to the peer.
    pub tx_bytes: Option<u64>,
}

impl NodeSummary {
    /// Reduces a status document. Tolerant of field names, as the status
    /// format is the appliance's to evolve.
    pub fn from_status(v: &Value) -> Self {
        let state = v
            .get("state")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned();
        let peers = match v.get("peers") {
            Some(Value::Array(a)) => a.iter().map(PeerSummary::from_status).collect(),
            Some(Value::Object(m)) => m.values().map(PeerSummary::from_status).collect(),
            _ => Vec::new(),
        };
        let strings = |key: &str| {
            v.get(key).and_then(Value::as_array).map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
        };
        let app_connector =
            v.get("app_connector")
                .filter(|c| c.is_object())
                .map(|c| ConnectorSummary {
                    serving: c.get("serving").and_then(Value::as_bool).unwrap_or(false),
                    addresses: c.get("addresses").and_then(Value::as_u64).unwrap_or(0),
                    max_routes: c.get("max_routes").and_then(Value::as_u64).unwrap_or(0),
                });
        let exit_node = v
            .get("exit_node")
            .filter(|e| e.get("choice").and_then(Value::as_str) != Some("none"))
            .and_then(|e| {
                Some(ExitNodeSummary {
                    choice: e.get("choice")?.as_str()?.to_owned(),
                    selected: e.get("selected").and_then(Value::as_str).map(str::to_owned),
                    online: e.get("online").and_then(Value::as_bool).unwrap_or(false),
                    routing_all: e
                        .get("routing_all")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                })
            });
        Self {
            state,
            name: v.get("name").and_then(Value::as_str).map(str::to_owned),
            addresses: strings("addresses").unwrap_or_default(),
            kernel_routes: strings("kernel_routes"),
            peers,
            exit_node,
            app_connector,
        }
    }

    /// Whether the daemon reports `running`.
    pub fn is_running(&self) -> bool {
        self.state == "running"
    }

    /// The tailnet's unique local /48 (where 4via6 addresses live), from
    /// this node's own IPv6 address.
    pub fn tailnet_ula(&self) -> Option<Ipv6Net> {
        self.addresses
            .iter()
            .find_map(|a| match a.parse::<IpNet>() {
                Ok(IpNet::V6(v6)) => Ipv6Net::new(v6.addr(), 48).ok().map(|n| n.trunc()),
                Ok(IpNet::V4(_)) | Err(_) => None,
            })
    }

    /// The 4via6 prefix of `range` at `site` in this node's tailnet, if
    /// it knows its tailnet's range.
    pub fn via6_prefix(&self, site: u16, range: Ipv4Net) -> Option<Ipv6Net> {
        Some(via6::via6_prefix(self.tailnet_ula()?, site, range))
    }

    /// Whether some peer routes the 4via6 prefix of `range` at `site`
    /// and, where the status reports kernel routes, it points at the TUN
    /// device.
    pub fn has_via6_route(&self, site: u16, range: Ipv4Net) -> bool {
        self.via6_prefix(site, range)
            .is_some_and(|p| self.has_route(&p.to_string()))
    }

    /// Whether some peer routes `prefix` and, where the status reports
    /// kernel routes, the route points at the TUN device.
    pub fn has_route(&self, prefix: &str) -> bool {
        self.peers
            .iter()
            .any(|p| p.routes.iter().any(|r| r == prefix))
            && self
                .kernel_routes
                .as_ref()
                .is_none_or(|k| k.iter().any(|r| r == prefix))
    }
}

impl PeerSummary {
    fn from_status(v: &Value) -> Self {
        let text = |keys: &[&str]| {
            keys.iter().find_map(|k| match v.get(*k) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            })
        };
        let number = |keys: &[&str]| keys.iter().find_map(|k| v.get(*k).and_then(Value::as_u64));
        let mut routes = Vec::new();
        if let Value::Object(m) = v {
            for (k, val) in m {
                if (k.contains("route") || k.contains("allowed_ips"))
                    && let Value::Array(items) = val
                {
                    routes.extend(items.iter().filter_map(Value::as_str).map(str::to_owned));
                }
            }
        }
        routes.sort();
        routes.dedup();
        Self {
            name: text(&["hostname", "name", "node_key", "id"]).unwrap_or_else(|| "?".into()),
            routes,
            handshake: number(&["last_handshake_seconds"])
                .map(|s| format!("{s} s ago"))
                .or_else(|| text(&["latest_handshake", "last_handshake", "handshake"])),
            rx_bytes: number(&["rx_bytes", "bytes_in", "rx"]),
            tx_bytes: number(&["tx_bytes", "bytes_out", "tx"]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_config_advertises_the_vpc_subnet() {
        let dir = StateDir::new("/run/causeway/local/demo");
        let text = node_config(&dir, Node::Router, None, None, None).expect("renders");
        let v: toml::Value = toml::from_str(&text).expect("valid toml");
        assert_eq!(
            v["state_dir"].as_str(),
            Some("/run/causeway/local/demo/router")
        );
        assert_eq!(
            v["node"]["control_url"].as_str(),
            Some("http://198.18.0.2:8080")
        );
        assert_eq!(
            v["node"]["auth_key_file"].as_str(),
            Some("/run/causeway/local/demo/router.authkey")
        );
        assert_eq!(
            v["subnet_router"]["routes"][0]["prefix"].as_str(),
            Some("198.19.1.0/24")
        );
        assert_eq!(
            v["subnet_router"]["routes"][0]["probe_icmp"].as_str(),
            Some("198.19.1.10")
        );
    }

    #[test]
    fn without_snat_a_router_names_the_vpc_namespace_and_its_own_address() {
        let dir = StateDir::new("/s");
        let route = LocalReturnRoute {
            namespace: "cw-demo-vpc".into(),
            via: "198.19.1.2".into(),
        };
        let v: toml::Value = toml::from_str(
            &node_config(&dir, Node::Router2, None, Some(route), None).expect("renders"),
        )
        .expect("toml");
        assert_eq!(
            v["subnet_router"]["routes"][0]["snat"].as_bool(),
            Some(false)
        );
        assert_eq!(
            v["subnet_router"]["local_route_table"]["namespace"].as_str(),
            Some("cw-demo-vpc")
        );
        assert_eq!(
            v["subnet_router"]["local_route_table"]["via"].as_str(),
            Some("198.19.1.2")
        );
        let with_snat: toml::Value =
            toml::from_str(&node_config(&dir, Node::Router2, None, None, None).expect("renders"))
                .expect("toml");
        assert_eq!(
            with_snat["subnet_router"]["routes"][0]["snat"].as_bool(),
            Some(true)
        );
        assert!(
            with_snat["subnet_router"]
                .get("local_route_table")
                .is_none()
        );
    }

    #[test]
    fn the_second_router_advertises_the_same_subnet_under_its_own_name() {
        let dir = StateDir::new("/s");
        let v: toml::Value =
            toml::from_str(&node_config(&dir, Node::Router2, None, None, None).expect("renders"))
                .expect("toml");
        assert_eq!(v["state_dir"].as_str(), Some("/s/router2"));
        assert_eq!(v["node"]["hostname"].as_str(), Some("router2"));
        assert_eq!(
            v["node"]["auth_key_file"].as_str(),
            Some("/s/router2.authkey")
        );
        assert_eq!(
            v["subnet_router"]["routes"][0]["prefix"].as_str(),
            Some("198.19.1.0/24")
        );
    }

    #[test]
    fn client_config_accepts_routes_and_has_no_router_section() {
        let dir = StateDir::new("/s");
        let v: toml::Value =
            toml::from_str(&node_config(&dir, Node::Client, None, None, None).expect("renders"))
                .expect("toml");
        assert_eq!(v["node"]["accept_routes"].as_bool(), Some(true));
        assert!(v["node"].get("advertise_endpoints").is_none());
        assert!(v.get("subnet_router").is_none());
    }

    #[test]
    fn control_config_listens_where_nodes_and_admin_expect() {
        let v: toml::Value =
            toml::from_str(&control_config(&StateDir::new("/s")).expect("renders")).expect("toml");
        assert_eq!(v["control"]["listen"].as_str(), Some("198.18.0.2:8080"));
        assert_eq!(
            v["control"]["admin_listen"].as_str(),
            Some("127.0.0.1:8081")
        );
        assert_eq!(
            v["control"]["policy_file"].as_str(),
            Some("/s/policy.hujson")
        );
    }

    #[test]
    fn summary_finds_state_and_routed_peer() {
        // The shape of appliance/src/node/status.rs.
        let v = serde_json::json!({
            "state": "running", "name": "client", "addresses": ["100.64.0.2/32"],
            "kernel_routes": ["198.19.1.0/24"],
            "peers": [{"id": 1, "name": "router", "allowed_ips": ["100.64.0.1/32", "198.19.1.0/24"],
                       "last_handshake_seconds": 2, "rx_bytes": 10, "tx_bytes": 20}]
        });
        let s = NodeSummary::from_status(&v);
        assert!(s.is_running());
        assert!(s.has_route("198.19.1.0/24"));
        assert_eq!(s.peers[0].rx_bytes, Some(10));
        assert_eq!(s.peers[0].name, "router");
        assert_eq!(s.peers[0].handshake.as_deref(), Some("2 s ago"));
        assert_eq!(s.addresses, ["100.64.0.2/32"]);
    }

    #[test]
    fn summary_reads_the_clients_exit_node_and_ignores_none() {
        let v = serde_json::json!({
            "state": "running",
            "exit_node": {"choice": "exit", "selected": "exit", "online": true,
                          "routing_all": true, "bypass": []}
        });
        let e = NodeSummary::from_status(&v)
            .exit_node
            .expect("an exit node");
        assert!(e.routes_all_through("exit"));
        assert!(!e.routes_all_through("router"));
        assert_eq!(
            e.describe(),
            "exit -> exit (online), all traffic through the tunnel"
        );
        let offline = serde_json::json!({
            "exit_node": {"choice": "exit", "selected": "exit", "online": false, "routing_all": true}
        });
        let e = NodeSummary::from_status(&offline)
            .exit_node
            .expect("chosen");
        assert!(!e.routes_all_through("exit"));
        let none = serde_json::json!({"exit_node": {"choice": "none", "online": false}});
        assert_eq!(NodeSummary::from_status(&none).exit_node, None);
    }

    #[test]
    fn a_peer_route_not_yet_in_the_kernel_is_not_ready() {
        let v = serde_json::json!({
            "state": "running", "kernel_routes": [],
            "peers": [{"name": "router", "allowed_ips": ["198.19.1.0/24"]}]
        });
        assert!(!NodeSummary::from_status(&v).has_route("198.19.1.0/24"));
    }

    #[test]
    fn policy_auto_approves_the_vpc_subnet_for_the_router_tag() {
        let p = policy(false, false, &[]);
        assert!(p.contains(r#""198.19.1.0/24": ["tag:subnet-router"]"#));
        assert!(!p.contains("exitNode"), "{p}");
    }

    #[test]
    fn exit_node_config_advertises_ipv4_exit_routes_and_the_client_selects_it() {
        let dir = StateDir::new("/s");
        let exit: toml::Value = toml::from_str(
            &node_config(&dir, Node::Exit, Some("exit"), None, None).expect("renders"),
        )
        .expect("toml");
        assert_eq!(exit["node"]["hostname"].as_str(), Some("exit"));
        assert_eq!(exit["exit_node"]["ipv6"].as_bool(), Some(false));
        assert!(exit.get("subnet_router").is_none());
        assert!(exit["node"].get("exit_node").is_none(), "{exit}");
        let client: toml::Value = toml::from_str(
            &node_config(&dir, Node::Client, Some("exit"), None, None).expect("renders"),
        )
        .expect("toml");
        assert_eq!(client["node"]["exit_node"].as_str(), Some("exit"));
        assert!(client.get("exit_node").is_none());
    }

    #[test]
    fn the_exit_policy_auto_approves_exit_routes_for_the_exit_tag_only() {
        let p = policy(true, false, &[]);
        assert!(p.contains(r#""exitNode": ["tag:exit-node"]"#), "{p}");
        assert!(p.contains(r#""tag:exit-node": ["autogroup:admin"]"#), "{p}");
        assert!(
            p.contains(r#""198.19.1.0/24": ["tag:subnet-router"]"#),
            "{p}"
        );
    }

    #[test]
    fn the_connector_serves_the_apps_and_its_routes_are_auto_approved() {
        let dir = StateDir::new("/s");
        let c: toml::Value =
            toml::from_str(&node_config(&dir, Node::Connector, None, None, None).expect("renders"))
                .expect("toml");
        assert_eq!(c["node"]["hostname"].as_str(), Some("connector"));
        assert_eq!(
            c["app_connector"]["domains"][0].as_str(),
            Some("*.apps.example")
        );
        assert_eq!(
            c["app_connector"]["resolvers"][0].as_str(),
            Some("198.18.100.53")
        );
        assert!(c.get("exit_node").is_none() && c.get("subnet_router").is_none());
        assert_eq!(c["node"]["accept_routes"].as_bool(), Some(false));
        let p = policy(false, true, &[]);
        assert!(p.contains(r#""0.0.0.0/0": ["tag:app-connector"]"#), "{p}");
        assert!(
            p.contains(r#""tag:app-connector": ["autogroup:admin"]"#),
            "{p}"
        );
        assert!(!p.contains("exitNode"), "{p}");
    }
}
