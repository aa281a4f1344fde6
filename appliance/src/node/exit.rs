//! The client side of exit nodes: the shell of [`ExitNodeState`]. It turns
//! the selection into the data plane's peer list and into policy routing
//! (see `causeway_netconf::plan_exit_routing`), and removes that routing
//! on stop and at start (a crash leaves it behind). DNS through the exit
//! node, at both ends, is [`ExitDnsDriver`]'s, which follows every update.
//! on stop and at start (a crash leaves it behind). With `auto` it also
//! tells the data plane which candidates to keep warm and, every
//! [`PATH_CHECK`], feeds their round-trip times back into the selection.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use causeway_mesh::{ExitNodeChoice, ExitNodeState, NetmapState};
use causeway_netconf::{ExitRoutingPlan, RouteTable};
use causeway_wire::{Node, NodeId};
use ipnet::IpNet;
use tokio::sync::{mpsc, oneshot};

use super::dataplane::Command;
use super::exit_dns::ExitDnsDriver;
use super::status::{self, ExitCandidateStatus, ExitNodeStatus, NodeStatus};
use crate::config::NodeConfig;

/// How often `auto` reads the candidates' round-trip times from the data
/// plane. They change only with a handshake (about every two minutes per
/// candidate); failover does not wait for this, it follows the netmap.
pub(crate) const PATH_CHECK: Duration = Duration::from_secs(5);

/// Prefixes that never go to an exit node: IPv4 and IPv6 link-local
/// (the cloud's metadata service at 169.254.169.254, neighbour discovery).
const ALWAYS_BYPASS: [&str; 2] = ["169.254.0.0/16", "fe80::/10"];

/// Owns the exit-node selection and the policy routing it needs.
pub struct ExitDriver {
    state: ExitNodeState,
    allow_lan_access: bool,
    /// Always kept off the tunnel: link-local, and the subnets this node
    /// routes for the tailnet itself.
    fixed_bypass: BTreeSet<IpNet>,
    tun_name: String,
    ifindex: u32,
    routes: RouteTable,
    /// What is installed now; `None` when nothing is.
    applied: Option<ExitRoutingPlan>,
    status: Arc<Mutex<NodeStatus>>,
    dns: ExitDnsDriver,
    /// The data plane: warm peers go to it, round-trip times come from it.
    dataplane: mpsc::Sender<Command>,
    /// The peers it keeps warm now.
    warm: BTreeSet<NodeId>,
    /// The peer selected last.
    selected: Option<NodeId>,
    /// When `auto` next reads round-trip times.
    next_path_check: Instant,
}

impl ExitDriver {
    /// Removes policy routing a crashed run left behind and starts with the
    /// configured choice. `own_routes` are the subnets this node routes
    /// (kept off the tunnel).
    pub async fn start(
        config: &NodeConfig,
        own_routes: &[IpNet],
        ifindex: u32,
        status: Arc<Mutex<NodeStatus>>,
        dataplane: mpsc::Sender<Command>,
    ) -> anyhow::Result<Self> {
        let routes = RouteTable::new()
            .await
            .context("opening rtnetlink for exit routing")?;
        causeway_netconf::clear_exit_routing(&routes)
            .await
            .context("removing exit routing left by an earlier run")?;
        let mut fixed_bypass: BTreeSet<IpNet> = ALWAYS_BYPASS
            .iter()
            .map(|p| p.parse().expect("ALWAYS_BYPASS holds valid prefixes"))
            .collect();
        fixed_bypass.extend(
            own_routes
                .iter()
                .filter(|p| p.prefix_len() > 0)
                .map(IpNet::trunc),
        );
        let mut driver = Self {
            state: ExitNodeState::new(config.exit_node.0.clone(), config.exit_node_fail_open),
            allow_lan_access: config.exit_node_allow_lan_access,
            fixed_bypass,
            tun_name: config.tun_name.clone(),
            ifindex,
            routes,
            applied: None,
            status,
            dns: ExitDnsDriver::start(config),
            dataplane,
            warm: BTreeSet::new(),
            selected: None,
            next_path_check: Instant::now() + PATH_CHECK,
        };
        // Failing closed starts before the first netmap: nothing leaves
        // directly while the exit node is not known yet.
        driver.update(&NetmapState::default()).await;
        Ok(driver)
    }

    /// Changes the exit node; [`ExitDriver::update`] applies it.
    pub fn set_choice(&mut self, choice: ExitNodeChoice) {
        tracing::info!(exit_node = %choice, "exit node changed");
        self.state.set_choice(choice);
    }

    /// The exit node's tailnet address while this host's DNS goes to its
    /// forwarder; the node resolver then forwards there too.
    pub fn exit_resolver(&self) -> Option<std::net::IpAddr> {
        self.dns.exit_resolver()
    }

    /// Re-selects against the netmap, installs or removes policy routing,
    /// and returns the peers for the data plane.
    pub async fn update(&mut self, netmap: &NetmapState) -> Vec<Node> {
        let selection = self.state.select(netmap.peers(), Instant::now());
        let changed = selection.peer != self.selected;
        self.selected = selection.peer;
        let warm = self.state.warm_peers(netmap.peers());
        if warm != self.warm {
            tracing::debug!(peers = ?warm, "keeping exit-node candidates warm");
            if self
                .dataplane
                .send(Command::SetWarm(warm.clone()))
                .await
                .is_ok()
            {
                self.warm = warm;
            }
        }
        let selected = selection
            .peer
            .and_then(|id| netmap.peers().find(|n| n.id == id))
            .map(|n| n.name.clone());
        let mut bypass = Vec::new();
        if selection.route_all {
            let plan = self.plan();
            bypass = plan
                .routes
                .iter()
                .filter_map(|r| match r {
                    causeway_netconf::PlannedRoute::Throw(p) => Some(*p),
                    causeway_netconf::PlannedRoute::Default { .. }
                    | causeway_netconf::PlannedRoute::Unreachable { .. }
                    | causeway_netconf::PlannedRoute::Gateway(_) => None,
                })
                .collect();
            if self.applied.as_ref() != Some(&plan) {
                match causeway_netconf::apply_exit_routing(&self.routes, &plan, self.ifindex).await
                {
                    Ok(()) => {
                        tracing::info!(exit_node = ?selected, "routing all traffic through the exit node");
                        warn_on_strict_reverse_path_filter();
                        self.applied = Some(plan);
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "installing exit-node routing");
                    }
                }
            }
        } else if self.applied.is_some() {
            match causeway_netconf::clear_exit_routing(&self.routes).await {
                Ok(()) => {
                    tracing::info!("traffic outside the tailnet takes the host's own routes");
                    self.applied = None;
                }
                Err(e) => tracing::error!(error = %format!("{e:#}"), "removing exit-node routing"),
            }
        }
        // DNS follows the exit node only while traffic does.
        let exit_peer = selection
            .peer
            .filter(|_| self.applied.is_some())
            .and_then(|id| netmap.peers().find(|n| n.id == id));
        self.dns.update(netmap, exit_peer);
        if changed && let Some(reason) = self.state.because() {
            tracing::info!(exit_node_id = ?selection.peer, %reason, "auto chose an exit node");
            tracing::debug!(exit_node = ?selected, "auto's exit node by name");
        }
        let candidates = self
            .state
            .candidates(netmap.peers())
            .into_iter()
            .map(|c| ExitCandidateStatus {
                name: c.name,
                id: c.id,
                online: c.online,
                healthy: c.healthy,
                rtt_ms: c.rtt.and_then(|d| u64::try_from(d.as_millis()).ok()),
                warm: c.warm,
            })
            .collect();
        let shown = ExitNodeStatus {
            choice: self.state.choice().to_string(),
            selected,
            online: selection.online,
            routing_all: selection.route_all && self.applied.is_some(),
            bypass,
            reason: self.state.because().map(|r| r.to_string()),
            candidates,
        };
        status::set(&self.status, |s| s.exit_node = shown);
        self.dataplane_peers(netmap)
    }

    /// When `auto` next wants [`ExitDriver::check_paths`]; `None` for
    /// any other choice.
    pub fn next_path_check(&self) -> Option<Instant> {
        (*self.state.choice() == ExitNodeChoice::Auto).then_some(self.next_path_check)
    }

    /// Reads the round-trip times from the data plane and selects again;
    /// returns the peers for the data plane when the exit node changed.
    pub async fn check_paths(&mut self, netmap: &NetmapState) -> Option<Vec<Node>> {
        self.next_path_check = Instant::now() + PATH_CHECK;
        let (reply, answer) = oneshot::channel();
        self.dataplane.send(Command::Stats(reply)).await.ok()?;
        let (peers, ..) = answer.await.ok()?;
        self.state.set_rtts(peers.iter().map(|p| (p.id, p.rtt)));
        let before = self.selected;
        let peers = self.update(netmap).await;
        (self.selected != before).then_some(peers)
    }

    /// The peers for the data plane under the current selection.
    pub fn dataplane_peers(&self, netmap: &NetmapState) -> Vec<Node> {
        self.state.peers_for_dataplane(netmap.peers())
    }

    /// The status the last update showed.
    pub fn status(&self) -> ExitNodeStatus {
        status::set(&self.status, |s| s.exit_node.clone())
    }

    /// Removes the policy routing (on shutdown).
    pub async fn stop(self) {
        self.dns.stop();
        if let Err(e) = causeway_netconf::clear_exit_routing(&self.routes).await {
            tracing::error!(error = %format!("{e:#}"), "removing exit-node routing");
        }
    }

    fn plan(&self) -> ExitRoutingPlan {
        let mut bypass = self.fixed_bypass.clone();
        if self.allow_lan_access {
            match lan_subnets(&self.tun_name) {
                Ok(lan) => bypass.extend(lan),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "listing LAN subnets"),
            }
        }
        causeway_netconf::plan_exit_routing(&bypass)
    }
}

/// The subnets of this host's interfaces (its directly connected LANs),
/// leaving out loopback, the TUN device, link-local and the tailnet.
fn lan_subnets(tun_name: &str) -> anyhow::Result<BTreeSet<IpNet>> {
    let tailnet: IpNet = super::TAILNET_V4
        .parse()
        .expect("TAILNET_V4 is a valid prefix");
    let mut found = BTreeSet::new();
    for interface in nix::ifaddrs::getifaddrs().context("listing local addresses")? {
        if interface.interface_name == tun_name {
            continue;
        }
        let (Some(address), Some(mask)) = (interface.address, interface.netmask) else {
            continue;
        };
        let subnet = if let (Some(a), Some(m)) = (address.as_sockaddr_in(), mask.as_sockaddr_in()) {
            ipnet::Ipv4Net::with_netmask(a.ip(), m.ip())
                .ok()
                .map(|n| IpNet::V4(n.trunc()))
        } else if let (Some(a), Some(m)) = (address.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            ipnet::Ipv6Net::with_netmask(a.ip(), m.ip())
                .ok()
                .map(|n| IpNet::V6(n.trunc()))
        } else {
            None
        };
        let Some(subnet) = subnet else {
            continue;
        };
        let ip = subnet.addr();
        let skip = ip.is_loopback()
            || tailnet.contains(&ip)
            || matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local())
            || subnet.prefix_len() == 0;
        if !skip {
            found.insert(subnet);
        }
    }
    Ok(found)
}

/// Strict reverse-path filtering (`rp_filter = 1`) drops the exit node's
/// WireGuard replies: the reverse lookup of their source, without the
/// socket's mark, points into the tunnel. Loose (2) or off (0) works.
fn warn_on_strict_reverse_path_filter() {
    for path in [
        "/proc/sys/net/ipv4/conf/all/rp_filter",
        "/proc/sys/net/ipv4/conf/default/rp_filter",
    ] {
        if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1") {
            tracing::warn!(
                sysctl = path,
                "strict reverse-path filtering may drop the exit node's replies; set it to 2 (loose)"
            );
        }
    }
}
