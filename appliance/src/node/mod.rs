//! Roles `device` and `subnet-router`: join the tailnet, follow the netmap,
//! and carry traffic.

mod control_client;
mod dataplane;
pub mod status;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use causeway_mesh::{EndpointDiscoveryState, NetmapState, NodeState};
use causeway_netconf::{FirewallPolicy, RouteTable, SubnetRouter};
use causeway_wire::{
    ClientMessage, ErrorCode, MapRequest, NodeUpdate, PrivateKey, PublicKey, RegisterRequest,
    ServerMessage,
};
use ipnet::IpNet;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use self::control_client::{ConnectError, ControlChannel};
use self::dataplane::{Command, DataplaneDriver};
use self::status::{NodeStatus, StatusState};
use crate::cloud::{Cloud, Metadata};
use crate::config::{NodeConfig, SubnetRouterConfig};
use crate::state::{Registration, StateDir};

/// The nftables table the appliance owns.
const FIREWALL_TABLE: &str = "causeway";

/// The tailnet's IPv4 range (RFC 6598 shared address space).
pub(crate) const TAILNET_V4: &str = "100.64.0.0/10";

/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How often the node re-reads its interface addresses (a new ENI, a DHCP
/// renewal) to keep its advertised endpoints true.
const INTERFACE_RESCAN: Duration = Duration::from_secs(30);
/// How often the cloud's metadata service is asked for the public address.
const CLOUD_ADDRESS_RECHECK: Duration = Duration::from_secs(60);

/// Default TUN MTU: fits a WireGuard packet in a 1340-byte underlay path
/// (Tailscale's choice; safe across IPv6 and most tunnels).
pub const DEFAULT_MTU: u16 = 1280;

/// What the rest of the appliance (metrics) reads from a running node.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    status: Arc<Mutex<NodeStatus>>,
    dataplane: mpsc::Sender<Command>,
}

impl NodeHandle {
    /// The node's status with the data plane's counters, as
    /// `appliance status` shows it.
    pub async fn snapshot(&self) -> NodeStatus {
        status::snapshot(&self.status, &self.dataplane).await
    }
}

/// Runs the node until `shutdown` fires, then removes what it installed.
pub async fn run(
    config: &NodeConfig,
    router: Option<&SubnetRouterConfig>,
    state: StateDir,
    metrics: &crate::metrics::Sources,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let control_key = control_key(config)?;
    let machine_key = state.machine_key()?;
    let mut node_key = state.node_key()?;
    let advertised: Vec<IpNet> = router
        .map(|r| r.routes.iter().map(|r| r.prefix).collect())
        .unwrap_or_default();

    let status = Arc::new(Mutex::new(NodeStatus::new(config, &advertised)));

    let registration = match state.registration()? {
        Some(r) => r,
        None => {
            status::set(&status, |s| s.state = StatusState::Registering);
            let r = register(config, &control_key, &machine_key, &node_key, None).await?;
            state.save_registration(&r)?;
            r
        }
    };
    tracing::info!(node_id = %registration.node_id, addresses = ?registration.addresses, "registered");

    // Data plane: TUN device, UDP socket, driver task.
    let tun = dataplane::open_tun(&config.tun_name, config.mtu.unwrap_or(DEFAULT_MTU))
        .with_context(|| format!("creating TUN device {}", config.tun_name))?;
    let routes = RouteTable::new().await.context("opening rtnetlink")?;
    let ifindex = routes
        .interface_index(&config.tun_name)
        .await
        .context("finding the TUN device")?;
    for address in &registration.addresses {
        routes
            .add_address(ifindex, *address)
            .await
            .with_context(|| format!("adding {address} to {}", config.tun_name))?;
    }
    routes
        .set_up(ifindex)
        .await
        .context("bringing the TUN device up")?;
    let socket = UdpSocket::bind(SocketAddr::from((
        Ipv4Addr::UNSPECIFIED,
        config.listen_port,
    )))
    .await
    .with_context(|| format!("binding UDP port {}", config.listen_port))?;
    let (commands, command_rx) = mpsc::channel(64);
    let fixed_endpoints = !config.advertise_endpoints.is_empty();
    let mut discovery = EndpointDiscoveryState::new(rand::random());
    discovery.set_local(if fixed_endpoints {
        config.advertise_endpoints.iter().copied().collect()
    } else {
        interface_endpoints(config)?
    });
    let (endpoints_tx, mut endpoints) = watch::channel(discovery.endpoints().to_vec());
    let driver = DataplaneDriver::new(
        NodeState::new(&node_key, rand::random()),
        discovery,
        tun,
        socket,
        command_rx,
        endpoints_tx,
    );
    let mut dataplane = tokio::spawn(driver.run());
    let rescan = (!fixed_endpoints).then(|| {
        tokio::spawn(rescan_interfaces(
            config.tun_name.clone(),
            config.listen_port,
            commands.clone(),
        ))
    });
    let cloud_address = match config.cloud {
        Some(cloud) if !fixed_endpoints => Some(tokio::spawn(follow_cloud_address(
            cloud,
            config.listen_port,
            commands.clone(),
        ))),
        _ => None,
    };

    // Held until the node stops: dropping it, on any return below,
    // removes the nftables table and turns forwarding back.
    let subnet_router = router
        .map(|router| start_router(config, router, &registration))
        .transpose()?;
    metrics.set_node(NodeHandle {
        status: Arc::clone(&status),
        dataplane: commands.clone(),
    });
    let status_server = tokio::spawn(status::serve(
        state.status_socket(),
        Arc::clone(&status),
        commands.clone(),
    ));

    {
        let mut s = status
            .lock()
            .map_err(|_| anyhow::anyhow!("status lock poisoned"))?;
        s.node_id = Some(registration.node_id);
        s.addresses = registration.addresses.clone();
        s.node_key = Some(node_key.public_key());
    }

    let mut netmap = NetmapState::default();
    let mut backoff = BACKOFF_MIN;
    let result: anyhow::Result<()> = loop {
        let session = follow_control(
            config,
            &control_key,
            &machine_key,
            &node_key,
            &mut endpoints,
            fixed_endpoints,
            &advertised,
            &mut netmap,
            &commands,
            &routes,
            ifindex,
            &status,
            &mut backoff,
        );
        let outcome = tokio::select! {
            outcome = session => outcome,
            _ = shutdown.changed() => break Ok(()),
            finished = &mut dataplane => break match finished {
                Ok(Ok(())) => Err(anyhow::anyhow!("data plane stopped")),
                Ok(Err(e)) => Err(e.context("data plane failed")),
                Err(e) => Err(anyhow::anyhow!("data plane task failed: {e}")),
            },
        };
        match outcome {
            SessionEnd::Lost(e) => {
                status::set(&status, |s| {
                    s.control_connected = false;
                    if s.state == StatusState::Running {
                        s.state = StatusState::Reconnecting
                    }
                });
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?backoff, "lost control; the data plane keeps running");
            }
            SessionEnd::Refused(message) => break Err(anyhow::anyhow!(message)),
            SessionEnd::KeyExpired => {
                tracing::info!("node key expired; rotating");
                let new_key = state.rotate_node_key()?;
                match register(
                    config,
                    &control_key,
                    &machine_key,
                    &new_key,
                    Some(node_key.public_key()),
                )
                .await
                {
                    Ok(r) => state.save_registration(&r)?,
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "key rotation failed; will retry")
                    }
                }
                node_key = new_key;
                status::set(&status, |s| s.node_key = Some(node_key.public_key()));
                let peers = netmap.peers().cloned().collect();
                commands
                    .send(Command::SetKey(node_key.clone(), peers))
                    .await
                    .ok();
                continue;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {},
            _ = shutdown.changed() => break Ok(()),
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    };

    // Tear down what we installed: nftables table, then the TUN device (its
    // routes and addresses go with it when the driver drops it).
    status_server.abort();
    for task in [rescan, cloud_address].into_iter().flatten() {
        task.abort();
    }
    let _ = std::fs::remove_file(state.status_socket());
    drop(subnet_router);
    drop(commands);
    dataplane.abort();
    let _ = dataplane.await;
    tracing::info!("node stopped");
    result
}

enum SessionEnd {
    /// The channel broke; reconnect with backoff.
    Lost(anyhow::Error),
    /// Control refused us for good.
    Refused(String),
    /// Rotate the node key and come back.
    KeyExpired,
}

/// One control session: connect, open the map stream, apply maps until it
/// breaks. The data plane keeps running throughout.
#[allow(clippy::too_many_arguments)]
async fn follow_control(
    config: &NodeConfig,
    control_key: &PublicKey,
    machine_key: &PrivateKey,
    node_key: &PrivateKey,
    endpoints: &mut watch::Receiver<Vec<SocketAddr>>,
    fixed_endpoints: bool,
    advertised: &[IpNet],
    netmap: &mut NetmapState,
    commands: &mpsc::Sender<Command>,
    routes: &RouteTable,
    ifindex: u32,
    status: &Arc<Mutex<NodeStatus>>,
    backoff: &mut Duration,
) -> SessionEnd {
    let mut channel =
        match ControlChannel::connect(&config.control_url, control_key, machine_key).await {
            Ok(c) => c,
            Err(ConnectError::Refused(m)) => return SessionEnd::Refused(m),
            Err(ConnectError::Transient(e)) => return SessionEnd::Lost(e),
        };
    let current = endpoints.borrow_and_update().clone();
    status::set(status, |s| s.endpoints = current.clone());
    let request = ClientMessage::Map(MapRequest {
        node_key: node_key.public_key(),
        hostname: config.hostname(),
        endpoints: current,
        advertised_routes: advertised.to_vec(),
    });
    if let Err(e) = channel.send(&request).await {
        return SessionEnd::Lost(e);
    }
    // A fresh stream starts with a full map.
    *netmap = NetmapState::default();
    loop {
        let message = tokio::select! {
            message = channel.recv() => match message {
                Ok(m) => m,
                Err(e) => return SessionEnd::Lost(e),
            },
            Ok(()) = endpoints.changed() => {
                let current = endpoints.borrow_and_update().clone();
                tracing::info!(endpoints = current.len(), "advertising new endpoints");
                tracing::debug!(?current, "endpoints");
                status::set(status, |s| s.endpoints = current.clone());
                let update = ClientMessage::Update(NodeUpdate {
                    endpoints: Some(current),
                    advertised_routes: None,
                });
                if let Err(e) = channel.send(&update).await {
                    return SessionEnd::Lost(e);
                }
                continue;
            }
        };
        match message {
            ServerMessage::Map(map) => {
                let full = map.is_full();
                if full && !fixed_endpoints {
                    // Every full map says where STUN is (or that it is off);
                    // the data plane ignores an unchanged address.
                    let server = match map.stun_port {
                        Some(port) => stun_server(&config.control_url, port).await,
                        None => None,
                    };
                    tracing::debug!(?server, "control's STUN address");
                    if commands.send(Command::SetStunServer(server)).await.is_err() {
                        return SessionEnd::Lost(anyhow::anyhow!("data plane gone"));
                    }
                }
                let changed = match netmap.apply(map) {
                    Ok(changed) => changed,
                    Err(e) => return SessionEnd::Lost(anyhow::anyhow!("netmap out of step: {e}")),
                };
                if changed || full {
                    let peers = netmap.peers().cloned().collect();
                    if let Some(e) = netmap.filter_refused() {
                        tracing::warn!(error = %e, "control sent a packet filter over the limits; accepting no new flows");
                    }
                    let filter = netmap.filter().cloned();
                    let served = netmap.served_prefixes();
                    status::set(status, |s| {
                        s.filter_rules = filter.as_ref().map(|f| f.rules.len());
                        s.filter_refused = netmap.filter_refused().map(ToString::to_string);
                        s.served_prefixes = served.clone();
                    });
                    if commands
                        .send(Command::SetPeers(peers, filter, served))
                        .await
                        .is_err()
                    {
                        return SessionEnd::Lost(anyhow::anyhow!("data plane gone"));
                    }
                    let wanted = netmap.kernel_routes(config.accept_routes, advertised);
                    if let Err(e) = sync_routes(routes, ifindex, &wanted).await {
                        tracing::warn!(error = %format!("{e:#}"), "installing routes");
                    }
                }
                if full {
                    *backoff = BACKOFF_MIN;
                    let first = status::set(status, |s| {
                        let first = s.state != StatusState::Running;
                        s.state = StatusState::Running;
                        s.control_connected = true;
                        first
                    });
                    if first {
                        tracing::info!(event = "ready", peers = netmap.peers().count(), "ready");
                    } else {
                        tracing::info!(peers = netmap.peers().count(), "resynced with control");
                    }
                }
                status::set(status, |s| {
                    s.netmap_seq = netmap.seq();
                    s.kernel_routes = netmap
                        .kernel_routes(config.accept_routes, advertised)
                        .into_iter()
                        .collect();
                    if let Some(me) = netmap.node() {
                        s.primary_routes = me.primary_routes.clone();
                        s.name = Some(me.name.clone());
                    }
                });
            }
            ServerMessage::KeepAlive => tracing::trace!("control keepalive"),
            ServerMessage::Registered(_) => {
                tracing::debug!("unexpected registration answer on a map stream")
            }
            ServerMessage::Error(e) => {
                return match e.code {
                    ErrorCode::NodeKeyExpired => SessionEnd::KeyExpired,
                    ErrorCode::NodeUnknown | ErrorCode::AuthKeyRefused | ErrorCode::BadRequest => {
                        SessionEnd::Refused(format!(
                            "control refused the map request: {}",
                            e.message
                        ))
                    }
                    ErrorCode::Internal => {
                        SessionEnd::Lost(anyhow::anyhow!("control failed: {}", e.message))
                    }
                };
            }
        }
    }
}

async fn sync_routes(
    routes: &RouteTable,
    ifindex: u32,
    wanted: &BTreeSet<IpNet>,
) -> anyhow::Result<()> {
    let changes = causeway_netconf::sync_routes(routes, ifindex, wanted)
        .await
        .context("syncing kernel routes")?;
    if !changes.added.is_empty() || !changes.removed.is_empty() {
        tracing::debug!(added = ?changes.added, removed = ?changes.removed, "kernel routes changed");
    }
    Ok(())
}

/// Registers `node_key` (first join with the auth key, or a rotation from
/// `old_key`).
async fn register(
    config: &NodeConfig,
    control_key: &PublicKey,
    machine_key: &PrivateKey,
    node_key: &PrivateKey,
    old_key: Option<PublicKey>,
) -> anyhow::Result<Registration> {
    let auth_key = match (&old_key, &config.auth_key_file, &config.auth_key_secret) {
        (Some(_), _, _) => None,
        (None, Some(path), _) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading auth key file {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        (None, None, Some(arn)) => Some(
            crate::secrets::fetch_auth_key(arn)
                .await
                .context("fetching the auth key named by node.auth_key_secret")?,
        ),
        (None, None, None) => bail!(
            "this node is not registered yet: set node.auth_key_file or node.auth_key_secret to an auth key from control"
        ),
    };
    let mut channel = ControlChannel::connect(&config.control_url, control_key, machine_key)
        .await
        .map_err(|e| anyhow::anyhow!("registering with control: {e}"))?;
    channel
        .send(&ClientMessage::Register(RegisterRequest {
            node_key: node_key.public_key(),
            old_node_key: old_key,
            auth_key,
            hostname: config.hostname(),
        }))
        .await?;
    match channel.recv().await? {
        ServerMessage::Registered(r) => Ok(Registration {
            node_id: r.node_id,
            addresses: r.addresses,
        }),
        ServerMessage::Error(e) => bail!("control refused the registration: {}", e.message),
        other => bail!("unexpected answer to registration: {other:?}"),
    }
}

fn control_key(config: &NodeConfig) -> anyhow::Result<PublicKey> {
    if let Some(key) = config.control_public_key {
        return Ok(key);
    }
    let path = config
        .control_public_key_file
        .as_ref()
        .context("node.control_public_key_file is not set")?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("parsing control public key in {}", path.display()))
}

/// Control's STUN address: the host of `control_url` (resolved now) and
/// the port control announced. `None` when the host does not resolve to an
/// IPv4 address (the WireGuard socket is IPv4).
async fn stun_server(control_url: &str, port: u16) -> Option<SocketAddr> {
    let uri: hyper::Uri = control_url.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    match tokio::net::lookup_host((host, port)).await {
        Ok(mut addresses) => addresses.find(SocketAddr::is_ipv4),
        Err(e) => {
            tracing::warn!(error = %e, "resolving control's host for STUN");
            None
        }
    }
}

/// Reads the public IPv4 address the cloud maps to this machine at start
/// and every [`CLOUD_ADDRESS_RECHECK`] (an Elastic IP can be associated or
/// moved at any time) and hands it, with the WireGuard port, to the data
/// plane, which advertises it when it changed. A failed lookup keeps the
/// last known address: the metadata service being briefly unreachable does
/// not mean the address went away.
async fn follow_cloud_address(cloud: Cloud, port: u16, commands: mpsc::Sender<Command>) {
    let metadata = Metadata::new(cloud);
    let mut tick = tokio::time::interval(CLOUD_ADDRESS_RECHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = None;
    loop {
        tick.tick().await;
        let address = match metadata.public_ipv4().await {
            Ok(address) => address.map(|ip| SocketAddr::from((ip, port))),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "reading the public address");
                continue;
            }
        };
        if address == last {
            continue;
        }
        tracing::info!(
            public = address.is_some(),
            "the cloud's public address changed"
        );
        tracing::debug!(?address, "public address from the metadata service");
        if commands
            .send(Command::SetCloudEndpoint(address))
            .await
            .is_err()
        {
            return;
        }
        last = address;
    }
}

/// Re-reads the interface addresses every [`INTERFACE_RESCAN`] and hands
/// them to the data plane, which advertises them if they changed.
async fn rescan_interfaces(tun_name: String, port: u16, commands: mpsc::Sender<Command>) {
    let mut tick = tokio::time::interval(INTERFACE_RESCAN);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match scan_interfaces(&tun_name, port) {
            Ok(local) => {
                if commands
                    .send(Command::SetLocalEndpoints(local))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "listing local addresses"),
        }
    }
}

/// Every non-loopback, non-tailnet IPv4 address of this host, with the
/// WireGuard port.
fn interface_endpoints(config: &NodeConfig) -> anyhow::Result<BTreeSet<SocketAddr>> {
    scan_interfaces(&config.tun_name, config.listen_port)
}

fn scan_interfaces(tun_name: &str, port: u16) -> anyhow::Result<BTreeSet<SocketAddr>> {
    let tailnet: IpNet = TAILNET_V4.parse().expect("TAILNET_V4 is a valid prefix");
    let mut found = BTreeSet::new();
    for interface in nix::ifaddrs::getifaddrs().context("listing local addresses")? {
        let Some(address) = interface
            .address
            .as_ref()
            .and_then(|a| a.as_sockaddr_in())
            .map(|a| IpAddr::V4(a.ip()))
        else {
            continue;
        };
        if address.is_loopback()
            || tailnet.contains(&address)
            || interface.interface_name == tun_name
        {
            continue;
        }
        found.insert(SocketAddr::new(address, port));
    }
    Ok(found)
}

/// Subnet-router set-up: forwarding and the nftables table (masquerade,
/// and forwarding only to the routes and replies back), undone on drop.
fn start_router(
    config: &NodeConfig,
    router: &SubnetRouterConfig,
    registration: &Registration,
) -> anyhow::Result<SubnetRouter> {
    let ipv6 = router.routes.iter().any(|r| r.prefix.addr().is_ipv6());
    let tailnet_v6 = registration.addresses.iter().find_map(|a| match a {
        IpNet::V6(v6) => ipnet::Ipv6Net::new(v6.addr(), 48).ok().map(|n| n.trunc()),
        IpNet::V4(_) => None,
    });
    let policy = FirewallPolicy {
        table: FIREWALL_TABLE.to_owned(),
        tun_interface: config.tun_name.clone(),
        tailnet_v4: TAILNET_V4.parse().expect("TAILNET_V4 is a valid prefix"),
        tailnet_v6,
        masquerade: router
            .routes
            .iter()
            .filter(|r| r.snat)
            .map(|r| r.prefix)
            .collect(),
        forward: true,
        forward_to: router.routes.iter().map(|r| r.prefix).collect(),
    };
    let setup = SubnetRouter::start(&policy, ipv6).context("starting the subnet router")?;
    tracing::info!(
        routes = ?router.routes.iter().map(|r| r.prefix).collect::<Vec<_>>(),
        masquerade = ?policy.masquerade,
        "subnet router on"
    );
    Ok(setup)
}
