//! `appliance status`: the daemon answers on a unix socket in its state
//! directory with one JSON document; the CLI prints it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use causeway_wire::{NodeId, PublicKey};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use super::dataplane::Command;
use crate::config::NodeConfig;

/// Where the node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusState {
    /// Started, no netmap yet.
    Starting,
    /// Registering with an auth key.
    Registering,
    /// Registering a new node key; the old one stays in use until control
    /// confirms the new one.
    RotatingKey,
    /// Following the netmap.
    Running,
    /// Control is unreachable; the data plane runs on the last netmap.
    Reconnecting,
}

/// What the daemon reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Life-cycle state.
    pub state: StatusState,
    /// Our id.
    pub node_id: Option<NodeId>,
    /// Our tailnet name.
    pub name: Option<String>,
    /// Our WireGuard key.
    pub node_key: Option<PublicKey>,
    /// Our tailnet addresses.
    pub addresses: Vec<IpNet>,
    /// Control's URL.
    pub control_url: String,
    /// Whether the control channel is open.
    pub control_connected: bool,
    /// The keepalive interval control set for this node's stream, in
    /// milliseconds; the node gives up on a control silent for two of them
    /// and a 250 ms grace. `None` before the first map or with a control
    /// that sets none.
    #[serde(default)]
    pub control_keepalive_ms: Option<u64>,
    /// The control session in words: what it is doing, and when and why it
    /// retries (`rotating_key (retry in 4 s: control unreachable: …)`).
    #[serde(default)]
    pub session: String,
    /// The endpoints we advertise: interface addresses, the cloud's public
    /// address, and the address control's STUN port saw.
    pub endpoints: Vec<std::net::SocketAddr>,
    /// Last netmap sequence applied.
    pub netmap_seq: u64,
    /// Routes we advertise.
    pub advertised_routes: Vec<IpNet>,
    /// Advertised routes for which we are primary.
    pub primary_routes: Vec<IpNet>,
    /// What the health probes last found per advertised route (empty
    /// until the first report, and for a node that routes nothing).
    #[serde(default)]
    pub route_health: Vec<causeway_wire::RouteHealth>,
    /// Routes we point at the TUN device.
    pub kernel_routes: Vec<IpNet>,
    /// Rules in the packet filter from control; `None` before the first
    /// netmap (or from a control that sends none).
    #[serde(default)]
    pub filter_rules: Option<usize>,
    /// Why control's last filter was refused (too large), if it was.
    #[serde(default)]
    pub filter_refused: Option<String>,
    /// What the node accepts packets for: its addresses and the routes it
    /// is primary for. Anything else is dropped as `not_for_this_node`.
    #[serde(default)]
    pub served_prefixes: Vec<IpNet>,
    /// Packets dropped by the data plane.
    pub dropped_packets: u64,
    /// The same, per reason (`garbage`, `spoofed_source`, `filtered`, …).
    #[serde(default)]
    pub dropped_by_reason: BTreeMap<String, u64>,
    /// Peers and their counters.
    pub peers: Vec<PeerStatus>,
    /// The exit node this node routes through, if it wants one.
    #[serde(default)]
    pub exit_node: ExitNodeStatus,
    /// AWS without SNAT: each VPC route table of
    /// `subnet_router.aws_route_tables` and where its tailnet route stands.
    #[serde(default)]
    pub vpc_routes: BTreeMap<String, VpcRouteStatus>,
    /// An exit node with `exit_node.egress_*`: where its forwarded
    /// internet-bound traffic leaves.
    #[serde(default)]
    pub egress: Option<EgressStatus>,
    /// Where this machine's resolver configuration points while the node
    /// resolver runs (`/etc/netns/NAME/resolv.conf -> 100.100.100.100`), or
    /// why it was left alone; `None` without the node resolver.
    #[serde(default)]
    pub os_dns: Option<String>,
    /// The app connector's domains and learned routes; `None` on other
    /// nodes.
    #[serde(default)]
    pub app_connector: Option<super::connector::AppConnectorStatus>,
    /// 4via6 translation counters; `None` on a node that serves no site.
    #[serde(default)]
    pub via6: Option<Via6Status>,
}

/// A subnet router's 4via6 translation in the status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Via6Status {
    /// Client packets translated from IPv6 to IPv4.
    pub to_ipv4: u64,
    /// Replies translated from IPv4 to IPv6.
    pub to_ipv6: u64,
    /// Flows in the translation table.
    pub flows: usize,
    /// The table's bound.
    pub flow_capacity: usize,
    /// Packets refused, per reason (also counted under `via6` in
    /// `dropped_by_reason`).
    pub refused: BTreeMap<String, u64>,
}

impl From<&causeway_mesh::Via6Stats> for Via6Status {
    fn from(stats: &causeway_mesh::Via6Stats) -> Self {
        Self {
            to_ipv4: stats.to_ipv4,
            to_ipv6: stats.to_ipv6,
            flows: stats.flows,
            flow_capacity: stats.flow_capacity,
            refused: stats
                .iter_refused()
                .filter(|&(_, n)| n > 0)
                .map(|(reason, n)| (reason.as_str().to_owned(), n))
                .collect(),
        }
    }
}

/// An exit node's egress interface in the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressStatus {
    /// The interface's name.
    pub interface: String,
    /// Its address (masquerade's source).
    pub address: std::net::Ipv4Addr,
    /// The IPv4 next hop.
    pub gateway: std::net::Ipv4Addr,
    /// The IPv6 next hop, when IPv6 leaves there too (else IPv6 keeps
    /// the main table).
    pub ipv6_gateway: Option<std::net::Ipv6Addr>,
    /// Whether the routes were all in place at the last check; while not
    /// (the interface is down), forwarded traffic is unreachable.
    pub installed: bool,
    /// Why not, when not.
    pub detail: String,
}

/// The client side of exit nodes in the status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitNodeStatus {
    /// What was asked for: a name, id or address, `auto` or `none`.
    pub choice: String,
    /// The peer it resolved to, by name.
    pub selected: Option<String>,
    /// Whether that peer is online.
    pub online: bool,
    /// Whether all traffic is routed into the tunnel (policy routing on).
    pub routing_all: bool,
    /// Prefixes kept on the host's own routes while routing all traffic.
    pub bypass: Vec<IpNet>,
    /// With `auto`: why the selected exit node (or none) was chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// With `auto`: every exit node it may choose, best first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<ExitCandidateStatus>,
}

/// One exit node `auto` may choose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitCandidateStatus {
    /// Its tailnet name.
    pub name: String,
    /// Its id.
    pub id: NodeId,
    /// Whether control says it is online.
    pub online: bool,
    /// Whether its health probes pass, as control last said.
    pub healthy: bool,
    /// Round-trip time of the last handshake this node initiated to it,
    /// in milliseconds.
    pub rtt_ms: Option<u64>,
    /// Whether this node keeps a session to it warm.
    pub warm: bool,
}

/// One VPC route table's tailnet route, as this node last saw or set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VpcRouteStatus {
    /// The last read or change worked.
    pub ok: bool,
    /// Where the route points, or the error and when the next try comes.
    pub detail: String,
}

/// One peer in the status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Its id.
    pub id: NodeId,
    /// Its name.
    pub name: String,
    /// Its WireGuard key.
    pub node_key: PublicKey,
    /// Where we send to.
    pub endpoint: Option<std::net::SocketAddr>,
    /// Seconds since the last handshake, if any.
    pub last_handshake_seconds: Option<u64>,
    /// Milliseconds since the last authenticated datagram (data, keepalive
    /// or handshake) from the peer, if any.
    #[serde(default)]
    pub last_received_ms: Option<u64>,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Its allowed IPs.
    pub allowed_ips: Vec<IpNet>,
}

impl NodeStatus {
    /// The status before anything happened.
    pub fn new(config: &NodeConfig, advertised: &[IpNet]) -> Self {
        Self {
            state: StatusState::Starting,
            node_id: None,
            name: None,
            node_key: None,
            addresses: vec![],
            control_url: config.control_url.clone(),
            control_connected: false,
            control_keepalive_ms: None,
            session: String::new(),
            endpoints: vec![],
            netmap_seq: 0,
            advertised_routes: advertised.to_vec(),
            primary_routes: vec![],
            route_health: vec![],
            kernel_routes: vec![],
            filter_rules: None,
            filter_refused: None,
            served_prefixes: vec![],
            dropped_packets: 0,
            dropped_by_reason: BTreeMap::new(),
            peers: vec![],
            exit_node: ExitNodeStatus {
                choice: config.exit_node.0.to_string(),
                ..ExitNodeStatus::default()
            },
            vpc_routes: BTreeMap::new(),
            egress: None,
            os_dns: None,
            app_connector: None,
            via6: None,
        }
    }
}

/// Updates the shared status under its lock.
pub fn set<T>(status: &Arc<Mutex<NodeStatus>>, f: impl FnOnce(&mut NodeStatus) -> T) -> T {
    let mut guard = status
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    f(&mut guard)
}

/// Answers status requests until aborted.
pub async fn serve(
    path: PathBuf,
    status: Arc<Mutex<NodeStatus>>,
    dataplane: mpsc::Sender<Command>,
) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("binding status socket {}", path.display()))?;
    loop {
        let (mut stream, _) = listener
            .accept()
            .await
            .context("accepting on the status socket")?;
        let snapshot = snapshot(&status, &dataplane).await;
        let json = serde_json::to_vec(&snapshot).context("serialising status")?;
        if let Err(e) = stream.write_all(&json).await {
            tracing::debug!(error = %e, "status client went away");
        }
    }
}

/// The status now, with the data plane's counters (left empty if the data
/// plane does not answer).
pub async fn snapshot(
    status: &Arc<Mutex<NodeStatus>>,
    dataplane: &mpsc::Sender<Command>,
) -> NodeStatus {
    let (reply, answer) = oneshot::channel();
    let mut snapshot = set(status, |s| s.clone());
    if dataplane.send(Command::Stats(reply)).await.is_ok()
        && let Ok((peers, dropped, via6)) = answer.await
    {
        if let Some(status) = &mut snapshot.via6 {
            *status = Via6Status::from(&via6);
        }
        snapshot.dropped_packets = dropped.total();
        snapshot.dropped_by_reason = dropped
            .iter()
            .map(|(reason, n)| (reason.as_str().to_owned(), n))
            .collect();
        snapshot.peers = peers
            .into_iter()
            .map(|p| PeerStatus {
                id: p.id,
                name: p.name,
                node_key: p.node_key,
                endpoint: p.endpoint,
                last_handshake_seconds: p.last_handshake.map(|d| d.as_secs()),
                last_received_ms: p
                    .last_received
                    .and_then(|d| u64::try_from(d.as_millis()).ok()),
                tx_bytes: p.tx_bytes,
                rx_bytes: p.rx_bytes,
                allowed_ips: p.allowed_ips,
            })
            .collect();
    }
    snapshot
}

/// Asks the daemon whose state directory is `state_dir` for its status.
pub async fn query(state_dir: &Path) -> anyhow::Result<NodeStatus> {
    let path = state_dir.join("appliance.sock");
    let mut stream = UnixStream::connect(&path).await.with_context(|| {
        format!(
            "connecting to {} (is `appliance run` running with this state_dir?)",
            path.display()
        )
    })?;
    let mut bytes = Vec::new();
    stream
        .read_to_end(&mut bytes)
        .await
        .context("reading status")?;
    serde_json::from_slice(&bytes).context("parsing status")
}

/// Renders a status for people.
pub fn render(status: &NodeStatus) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let name = status.name.as_deref().unwrap_or("-");
    let addresses: Vec<String> = status.addresses.iter().map(ToString::to_string).collect();
    let _ = writeln!(
        out,
        "node      {name} (id {}) {}",
        status.node_id.map_or("-".into(), |i| i.to_string()),
        addresses.join(" ")
    );
    let keepalive = status
        .control_keepalive_ms
        .map_or(String::new(), |ms| format!(", keepalive {}", age(ms)));
    let _ = writeln!(
        out,
        "state     {:?}, control {} ({}){keepalive}",
        status.state,
        if status.control_connected {
            "connected"
        } else {
            "disconnected"
        },
        status.control_url
    );
    if !status.session.is_empty() {
        let _ = writeln!(out, "session   {}", status.session);
    }
    if let Some(dns) = &status.os_dns {
        let _ = writeln!(out, "dns       {dns}");
    }
    if let Some(c) = &status.app_connector {
        let _ = writeln!(
            out,
            "connector {} ; {} addresses routed (max {}), {} refused over the cap{}",
            c.domains.join(" "),
            c.addresses,
            c.max_routes,
            c.over_cap,
            if c.serving {
                ""
            } else {
                " ; DNS not answering yet"
            }
        );
    }
    if let Some(v) = &status.via6 {
        let refused: Vec<String> = v.refused.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let _ = writeln!(
            out,
            "4via6     {} to IPv4, {} to IPv6 ; {} of {} flows ; refused: {}",
            v.to_ipv4,
            v.to_ipv6,
            v.flows,
            v.flow_capacity,
            if refused.is_empty() {
                "none".to_owned()
            } else {
                refused.join(", ")
            }
        );
    }
    let exit = &status.exit_node;
    if exit.choice != "none" {
        let _ = writeln!(
            out,
            "exit node {} -> {}{}, {}",
            exit.choice,
            exit.selected.as_deref().unwrap_or("(none usable)"),
            if exit.online { "" } else { " (offline)" },
            if exit.routing_all {
                "all traffic through the tunnel"
            } else {
                "traffic on the host's own routes (fail open)"
            }
        );
        if let Some(reason) = &exit.reason {
            let _ = writeln!(out, "  why     {reason}");
        }
        for c in &exit.candidates {
            let _ = writeln!(
                out,
                "  {:<16} {:<7} {:<9} rtt {:>6}{}{}",
                c.name,
                if c.online { "online" } else { "offline" },
                if c.healthy { "healthy" } else { "UNHEALTHY" },
                c.rtt_ms.map_or("-".to_owned(), age),
                if c.warm { "  warm" } else { "" },
                if exit.selected.as_ref() == Some(&c.name) {
                    "  (chosen)"
                } else {
                    ""
                }
            );
        }
    }
    let endpoints: Vec<String> = status.endpoints.iter().map(ToString::to_string).collect();
    let _ = writeln!(
        out,
        "endpoints {}",
        if endpoints.is_empty() {
            "-".to_owned()
        } else {
            endpoints.join(" ")
        }
    );
    if !status.advertised_routes.is_empty() {
        let adv: Vec<String> = status
            .advertised_routes
            .iter()
            .map(ToString::to_string)
            .collect();
        let pri: Vec<String> = status
            .primary_routes
            .iter()
            .map(ToString::to_string)
            .collect();
        let _ = writeln!(
            out,
            "routes    advertised {} ; primary for {}",
            adv.join(" "),
            if pri.is_empty() {
                "-".into()
            } else {
                pri.join(" ")
            }
        );
        for h in &status.route_health {
            let _ = writeln!(
                out,
                "health    {} {}{}",
                h.prefix,
                if h.healthy { "healthy" } else { "UNHEALTHY" },
                if h.reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", h.reason)
                }
            );
        }
    }
    if let Some(egress) = &status.egress {
        let _ = writeln!(
            out,
            "egress    {} {} via {}{}{}",
            egress.interface,
            egress.address,
            egress.gateway,
            egress
                .ipv6_gateway
                .map_or(" (IPv6 keeps the main table)".to_owned(), |g| format!(
                    ", IPv6 via {g}"
                )),
            if egress.installed {
                String::new()
            } else {
                format!(
                    "; NOT INSTALLED, forwarded traffic unreachable: {}",
                    egress.detail
                )
            }
        );
    }
    for (table, route) in &status.vpc_routes {
        let _ = writeln!(
            out,
            "vpc route {table} {}: {}",
            if route.ok { "ok" } else { "error" },
            route.detail
        );
    }
    let served: Vec<String> = status
        .served_prefixes
        .iter()
        .map(ToString::to_string)
        .collect();
    let rules = match (status.filter_rules, &status.filter_refused) {
        (_, Some(why)) => format!("refused ({why}); accepting no new flows"),
        (Some(n), None) => format!("{n} rules"),
        (None, None) => "none".to_owned(),
    };
    let _ = writeln!(
        out,
        "filter    {rules}; accepts for {}",
        if served.is_empty() {
            "-".to_owned()
        } else {
            served.join(" ")
        }
    );
    let reasons: Vec<String> = status
        .dropped_by_reason
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    if reasons.is_empty() {
        let _ = writeln!(out, "dropped   {} packets", status.dropped_packets);
    } else {
        let _ = writeln!(
            out,
            "dropped   {} packets ({})",
            status.dropped_packets,
            reasons.join(", ")
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<6} {:<16} {:<22} {:>10} {:>10} {:>12} {:>12}  allowed IPs",
        "id", "peer", "endpoint", "handshake", "received", "tx bytes", "rx bytes"
    );
    for p in &status.peers {
        let handshake = p
            .last_handshake_seconds
            .map_or("never".to_owned(), |s| format!("{} ago", age(s * 1000)));
        let received = p
            .last_received_ms
            .map_or("never".to_owned(), |ms| format!("{} ago", age(ms)));
        let endpoint = p.endpoint.map_or("-".to_owned(), |e| e.to_string());
        let allowed: Vec<String> = p.allowed_ips.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            out,
            "{:<6} {:<16} {:<22} {:>10} {:>10} {:>12} {:>12}  {}",
            p.id,
            p.name,
            endpoint,
            handshake,
            received,
            p.tx_bytes,
            p.rx_bytes,
            allowed.join(" ")
        );
    }
    out
}

/// A duration in milliseconds, short: `350ms`, `12s`, `4m`, `3h`.
fn age(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms}ms"),
        1000..120_000 => format!("{}s", ms / 1000),
        120_000..7_200_000 => format!("{}m", ms / 60_000),
        _ => format!("{}h", ms / 3_600_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> NodeStatus {
        NodeStatus {
            state: StatusState::Running,
            node_id: Some(NodeId(3)),
            name: Some("router".into()),
            node_key: None,
            addresses: vec![],
            control_url: "http://198.18.0.2:8080".into(),
            control_connected: true,
            control_keepalive_ms: Some(1000),
            session: String::new(),
            endpoints: vec![],
            netmap_seq: 1,
            advertised_routes: vec![],
            primary_routes: vec![],
            kernel_routes: vec![],
            filter_rules: None,
            filter_refused: None,
            served_prefixes: vec![],
            dropped_packets: 0,
            dropped_by_reason: BTreeMap::new(),
            peers: vec![
                PeerStatus {
                    id: NodeId(1),
                    name: "client".into(),
                    node_key: PublicKey::from_bytes([1; 32]),
                    endpoint: None,
                    last_handshake_seconds: Some(600),
                    last_received_ms: Some(350),
                    tx_bytes: 10,
                    rx_bytes: 20,
                    allowed_ips: vec![],
                },
                PeerStatus {
                    id: NodeId(2),
                    name: "idle".into(),
                    node_key: PublicKey::from_bytes([2; 32]),
                    endpoint: None,
                    last_handshake_seconds: None,
                    last_received_ms: None,
                    tx_bytes: 0,
                    rx_bytes: 0,
                    allowed_ips: vec![],
                },
            ],
            exit_node: ExitNodeStatus::default(),
            vpc_routes: BTreeMap::new(),
            egress: None,
            os_dns: None,
            app_connector: None,
            via6: None,
            route_health: vec![],
        }
    }

    #[test]
    fn render_shows_the_keepalive_and_both_ages_per_peer() {
        let text = render(&status());
        assert!(
            text.contains("control connected (http://198.18.0.2:8080), keepalive 1s"),
            "{text}"
        );
        let client = text.lines().find(|l| l.contains("client")).expect("row");
        assert!(client.contains("10m ago"), "{client}");
        assert!(client.contains("350ms ago"), "{client}");
        let idle = text.lines().find(|l| l.contains("idle")).expect("row");
        assert_eq!(idle.matches("never").count(), 2, "{idle}");
    }

    #[test]
    fn render_shows_auto_candidates_and_why_one_was_chosen() {
        let mut s = status();
        s.exit_node = ExitNodeStatus {
            choice: "auto".into(),
            selected: Some("exit2".into()),
            online: true,
            routing_all: true,
            bypass: vec![],
            reason: Some("failover: node 4 went offline".into()),
            candidates: vec![
                ExitCandidateStatus {
                    name: "exit2".into(),
                    id: NodeId(5),
                    online: true,
                    healthy: true,
                    rtt_ms: Some(3),
                    warm: true,
                },
                ExitCandidateStatus {
                    name: "exit1".into(),
                    id: NodeId(4),
                    online: false,
                    healthy: false,
                    rtt_ms: None,
                    warm: false,
                },
            ],
        };
        let text = render(&s);
        assert!(
            text.contains("exit node auto -> exit2, all traffic through the tunnel"),
            "{text}"
        );
        assert!(
            text.contains("why     failover: node 4 went offline"),
            "{text}"
        );
        let chosen = text.lines().find(|l| l.contains("(chosen)")).expect("row");
        assert!(
            chosen.contains("exit2") && chosen.contains("online") && chosen.contains("3ms"),
            "{chosen}"
        );
        let other = text.lines().find(|l| l.contains("exit1")).expect("row");
        assert!(
            other.contains("offline") && other.contains("UNHEALTHY") && !other.contains("warm"),
            "{other}"
        );
    }

    #[test]
    fn render_shows_4via6_counters() {
        let mut s = status();
        s.via6 = Some(Via6Status {
            to_ipv4: 12,
            to_ipv6: 10,
            flows: 2,
            flow_capacity: 65_536,
            refused: BTreeMap::from([("fragment".to_owned(), 3)]),
        });
        let text = render(&s);
        assert!(
            text.contains(
                "4via6     12 to IPv4, 10 to IPv6 ; 2 of 65536 flows ; refused: fragment 3"
            ),
            "{text}"
        );
    }

    #[test]
    fn render_shows_the_app_connectors_domains_and_cap() {
        assert!(!render(&status()).contains("connector"));
        let mut s = status();
        s.app_connector = Some(super::super::connector::AppConnectorStatus {
            domains: vec!["app.example.com".into(), "*.example.net".into()],
            addresses: 12,
            max_routes: 1000,
            over_cap: 3,
            serving: false,
        });
        let text = render(&s);
        assert!(
            text.contains(
                "connector app.example.com *.example.net ; 12 addresses routed (max 1000), 3 refused over the cap ; DNS not answering yet"
            ),
            "{text}"
        );
    }

    #[test]
    fn ages_are_short() {
        assert_eq!(age(0), "0ms");
        assert_eq!(age(999), "999ms");
        assert_eq!(age(1000), "1s");
        assert_eq!(age(119_999), "119s");
        assert_eq!(age(120_000), "2m");
        assert_eq!(age(7_200_000), "2h");
    }

    #[test]
    fn a_status_from_an_older_daemon_parses() {
        let mut v = serde_json::to_value(status()).expect("serialises");
        v.as_object_mut()
            .expect("object")
            .remove("control_keepalive_ms");
        v["peers"][0]
            .as_object_mut()
            .expect("object")
            .remove("last_received_ms");
        let parsed: NodeStatus = serde_json::from_value(v).expect("parses");
        assert_eq!(parsed.control_keepalive_ms, None);
        assert_eq!(parsed.peers[0].last_received_ms, None);
    }
}
