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
        && let Ok((peers, dropped)) = answer.await
    {
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
    let _ = writeln!(
        out,
        "state     {:?}, control {} ({})",
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
        "{:<6} {:<16} {:<22} {:>10} {:>12} {:>12}  allowed IPs",
        "id", "peer", "endpoint", "handshake", "tx bytes", "rx bytes"
    );
    for p in &status.peers {
        let handshake = p
            .last_handshake_seconds
            .map_or("never".to_owned(), |s| format!("{s}s ago"));
        let endpoint = p.endpoint.map_or("-".to_owned(), |e| e.to_string());
        let allowed: Vec<String> = p.allowed_ips.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            out,
            "{:<6} {:<16} {:<22} {:>10} {:>12} {:>12}  {}",
            p.id,
            p.name,
            endpoint,
            handshake,
            p.tx_bytes,
            p.rx_bytes,
            allowed.join(" ")
        );
    }
    out
}
