//! Roles `device`, `subnet-router` and `exit-node`: join the tailnet,
//! follow the netmap, and carry traffic (through an exit node, if the
//! node selected one).

pub mod commands;
mod connector;
mod control_client;
mod dataplane;
pub mod directory;
mod dns_forward;
mod egress;
mod exit;
mod exit_dns;
mod health;
mod os_dns;
mod resolver;
pub mod status;
mod vpc_route;

pub(crate) use self::dns_forward::{read_answer, write_message};
pub use self::resolver::RESOLVER_ADDR;
pub use self::vpc_route::{ReturnRoute, RouteTableId};

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use causeway_mesh::{
    ControlSessionState, EndpointDiscoveryState, NetmapState, NodeKeys, NodeState, RegisterAttempt,
    SessionCommand, SessionFailure, SessionPhase,
};
use causeway_netconf::{FirewallPolicy, RouteTable, SubnetRouter};
use causeway_wire::{
    ClientMessage, ErrorCode, MapRequest, NodeUpdate, PrivateKey, PublicKey, RegisterRequest,
    RouteHealth, ServerMessage,
};
use ipnet::IpNet;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use self::control_client::{ConnectError, ControlChannel};
use self::dataplane::{Command, DataplaneDriver};
use self::directory::Directory;
use self::egress::{EgressDriver, EgressSetup};
use self::exit::ExitDriver;
use self::status::{NodeStatus, StatusState};
use crate::cloud::{Cloud, Metadata};
use crate::config::{AppConnectorConfig, ExitNodeConfig, NodeConfig, SubnetRouterConfig};
use crate::state::{Registration, StateDir};

/// The nftables table the appliance owns.
const FIREWALL_TABLE: &str = "causeway";

/// The tailnet's IPv4 range (RFC 6598 shared address space).
pub(crate) const TAILNET_V4: &str = "100.64.0.0/10";

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
    roles: Roles<'_>,
    state: StateDir,
    metrics: &crate::metrics::Sources,
    tailnet: &Directory,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let Roles {
        router,
        exit_node,
        app_connector,
    } = roles;
    let control_key = control_key(config)?;
    let machine_key = state.machine_key()?;
    let (node_key, pending_key) = state.node_keys()?;
    // 4via6 routes lie in the tailnet's IPv6 range, known once registered.
    let advertised = advertised_routes(router, exit_node, None);
    // A bad egress interface or gateway stops the start before anything
    // is set up.
    let egress_setup = match exit_node {
        Some(exit) => EgressSetup::resolve(exit, &config.tun_name).await?,
        None => None,
    };
    // Interfaces whose addresses are not WireGuard endpoints: the tunnel
    // itself, and the egress interface (its traffic is the tailnet's, and
    // on a cloud its replies would leave by the public interface).
    let unadvertised: BTreeSet<String> = std::iter::once(config.tun_name.clone())
        .chain(egress_setup.as_ref().map(|e| e.interface_name().to_owned()))
        .collect();

    // A crash may have left this machine pointed at a resolver that is
    // gone: put its DNS configuration back first, whatever the
    // configuration says now.
    os_dns::OsDns::recover(state.root())
        .context("putting back the resolver configuration a crashed run left")?;
    let status = Arc::new(Mutex::new(NodeStatus::new(config, &advertised)));

    let registration = state.registration()?;
    let keys = NodeKeys {
        current: node_key.public_key(),
        pending: pending_key.as_ref().map(PrivateKey::public_key),
    };
    let mut session = SessionDriver {
        machine: ControlSessionState::new(keys, registration.is_some(), rand::random()),
        config,
        control_key,
        machine_key,
        state: &state,
        node_key,
        pending_key,
        registration,
        status: Arc::clone(&status),
        ever_running: false,
    };
    // Join (or finish a rotation a crash interrupted) before anything is
    // set up: the addresses come from the registration. Meanwhile the
    // status answers without data-plane counters (nobody receives them).
    let (no_dataplane, _) = mpsc::channel(1);
    let joining_status = tokio::spawn(status::serve(
        state.status_socket(),
        Arc::clone(&status),
        no_dataplane,
    ));
    let joined = tokio::select! {
        ready = session.until_map() => ready.map(|()| true),
        _ = shutdown.changed() => Ok(false),
    };
    joining_status.abort();
    let _ = joining_status.await;
    if !matches!(joined, Ok(true)) {
        let _ = std::fs::remove_file(state.status_socket());
        return joined.map(|_| ());
    }
    let registration = session
        .registration
        .clone()
        .context("control session opened the map without a registration")?;
    tracing::info!(node_id = %registration.node_id, addresses = ?registration.addresses, "registered");
    let ula = tailnet_v6(&registration);
    let advertised = advertised_routes(router, exit_node, ula);
    status::set(&status, |s| s.advertised_routes = advertised.clone());
    // What this node forwards to on its own side: the subnets it routes
    // (a 4via6 site's IPv4 range rather than its IPv6 route).
    let local_ranges: Vec<IpNet> = router
        .map(|r| r.routes.iter().map(|r| r.prefix).collect())
        .unwrap_or_default();

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
    let mut resolver = if config.dns_resolver {
        Some(
            resolver::NodeResolver::start(
                &routes,
                ifindex,
                config,
                state.root(),
                Arc::clone(&status),
            )
            .await?,
        )
    } else {
        None
    };
    let socket = UdpSocket::bind(SocketAddr::from((
        Ipv4Addr::UNSPECIFIED,
        config.listen_port,
    )))
    .await
    .with_context(|| format!("binding UDP port {}", config.listen_port))?;
    // WireGuard's own datagrams never go through an exit node.
    mark_socket(&socket);
    let (commands, command_rx) = mpsc::channel(64);
    let mut exit = ExitDriver::start(
        config,
        &local_ranges,
        ifindex,
        Arc::clone(&status),
        commands.clone(),
    )
    .await?;
    let (exit_requests_tx, mut exit_requests) = mpsc::channel(8);
    let command_server = tokio::spawn(commands::serve(state.command_socket(), exit_requests_tx));
    let fixed_endpoints = !config.advertise_endpoints.is_empty();
    let mut discovery = EndpointDiscoveryState::new(rand::random());
    discovery.set_local(if fixed_endpoints {
        config.advertise_endpoints.iter().copied().collect()
    } else {
        scan_interfaces(&unadvertised, config.listen_port)?
    });
    let (endpoints_tx, mut endpoints) = watch::channel(discovery.endpoints().to_vec());
    let mut dataplane_key = session.node_key.public_key();
    let via6 = ula.map(|ula| (ula, via6_sites(router)));
    if via6.as_ref().is_some_and(|(_, sites)| !sites.is_empty()) {
        status::set(&status, |s| s.via6 = Some(status::Via6Status::default()));
    }
    let driver = DataplaneDriver::new(
        NodeState::new(&session.node_key, rand::random()),
        via6,
        discovery,
        tun,
        socket,
        command_rx,
        endpoints_tx,
    );
    let mut dataplane = tokio::spawn(driver.run());
    let rescan = (!fixed_endpoints).then(|| {
        tokio::spawn(rescan_interfaces(
            unadvertised.clone(),
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

    // The prefixes control made this node primary for, for the task that
    // points the VPC's return route here (without SNAT, on AWS or --cloud local).
    let (primary, primary_rx) = watch::channel(Vec::new());
    let vpc_routes = router
        .and_then(|r| r.return_route())
        .map(|route| tokio::spawn(vpc_route::follow(route, primary_rx, Arc::clone(&status))));
    let mut connector = app_connector
        .map(|c| {
            // With the node resolver, `resolv.conf` names it, and it sends
            // the connector's own domains back here: ask what it saved.
            let upstreams = resolver.as_ref().map_or_else(
                || std::path::PathBuf::from(exit_dns::RESOLV_CONF),
                resolver::NodeResolver::upstreams,
            );
            connector::AppConnector::start(
                c,
                &config.tun_name,
                upstreams,
                primary.subscribe(),
                Arc::clone(&status),
            )
        })
        .transpose()?;

    // The egress routing goes in before forwarding is turned on, so no
    // forwarded packet takes the main table meanwhile.
    let egress_plan = egress_setup
        .as_ref()
        .map(|setup| setup.plan(&config.tun_name, &keep_on_main_table(router, &registration)))
        .transpose()?;
    let egress = match &egress_plan {
        Some(plan) => Some(EgressDriver::start(plan.clone(), Arc::clone(&status)).await?),
        None => None,
    };
    // Held until the node stops: dropping it, on any return below,
    // removes the nftables table and turns forwarding back.
    let subnet_router = (router.is_some() || exit_node.is_some() || connector.is_some())
        .then(|| {
            let firewall_egress = egress_plan.as_ref().map(egress::firewall_egress);
            start_router(config, roles, &registration, firewall_egress)
        })
        .transpose()?;
    // Health probes run while the router serves its routes (an exit
    // node's internet path counts as its `0.0.0.0/0` route); with neither
    // role the sender stays idle and nothing is reported.
    let (health_tx, mut health) = watch::channel(None::<Vec<RouteHealth>>);
    let mut probed = router
        .map(|r| health::RouteProbe::from_config(r, ula))
        .unwrap_or_default();
    probed.extend(exit_node.map(health::RouteProbe::for_exit_node));
    let probes = (!probed.is_empty()).then(|| {
        tokio::spawn(health::run(
            router.map_or_else(Default::default, SubnetRouterConfig::probe_settings),
            probed,
            config.tun_name.clone(),
            health_tx.clone(),
        ))
    });
    let priority = router.map(|r| r.priority);
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
        s.node_key = Some(dataplane_key);
    }

    let mut netmap = NetmapState::default();
    let result: anyhow::Result<()> = loop {
        // The machine asked for the map stream (see `until_map`).
        let stream = follow_control(
            config,
            &session.control_key,
            &session.machine_key,
            &session.node_key,
            &mut session.machine,
            &mut endpoints,
            fixed_endpoints,
            &advertised,
            (&mut health, priority),
            &mut netmap,
            &commands,
            &routes,
            ifindex,
            &status,
            tailnet,
            &mut exit,
            &mut exit_requests,
            &primary,
            resolver.as_mut(),
            connector.as_mut(),
        );
        let failure = tokio::select! {
            failure = stream => failure,
            _ = shutdown.changed() => break Ok(()),
            finished = &mut dataplane => break dataplane_ended(finished),
        };
        if let SessionFailure::Refused {
            code: ErrorCode::NodeKeyExpired,
            ..
        } = failure
        {
            tracing::info!("control says the node key expired");
        } else {
            tracing::warn!(error = %failure, "control session ended; the data plane keeps running");
        }
        let now = Instant::now();
        session.ever_running |= session.machine.status(now).phase == SessionPhase::Running;
        session.machine.handle_failure(now, failure);
        status::set(&status, |s| {
            s.control_connected = false;
            s.control_keepalive_ms = None;
        });
        session.show();
        tokio::select! {
            ready = session.until_map() => {
                if let Err(e) = ready {
                    break Err(e);
                }
            }
            _ = shutdown.changed() => break Ok(()),
            finished = &mut dataplane => break dataplane_ended(finished),
        }
        if session.node_key.public_key() != dataplane_key {
            // Control confirmed a new node key: only now does the data
            // plane switch to it.
            dataplane_key = session.node_key.public_key();
            let peers = exit.dataplane_peers(&netmap);
            commands
                .send(Command::SetKey(session.node_key.clone(), peers))
                .await
                .ok();
            status::set(&status, |s| s.node_key = Some(dataplane_key));
        }
    };

    // Tear down what we installed: nftables table, then the TUN device (its
    // routes and addresses go with it when the driver drops it).
    // First: nothing on this machine should keep asking a resolver that
    // is about to go.
    if let Some(resolver) = resolver {
        resolver.stop();
    }
    status_server.abort();
    command_server.abort();
    for task in [rescan, cloud_address, vpc_routes].into_iter().flatten() {
        task.abort();
    }
    if let Some(probes) = probes {
        probes.abort();
    }
    drop(health_tx);
    let _ = std::fs::remove_file(state.status_socket());
    let _ = std::fs::remove_file(state.command_socket());
    exit.stop().await;
    drop(subnet_router);
    // After forwarding is off: nothing forwarded meets the main table.
    if let Some(egress) = egress {
        egress.stop().await;
    }
    drop(commands);
    dataplane.abort();
    let _ = dataplane.await;
    tracing::info!("node stopped");
    result
}

fn dataplane_ended(
    finished: Result<anyhow::Result<()>, tokio::task::JoinError>,
) -> anyhow::Result<()> {
    match finished {
        Ok(Ok(())) => Err(anyhow::anyhow!("data plane stopped")),
        Ok(Err(e)) => Err(e.context("data plane failed")),
        Err(e) => Err(anyhow::anyhow!("data plane task failed: {e}")),
    }
}

/// The shell of [`ControlSessionState`]: carries out its commands (channels
/// to control, key files, the registration) and feeds back what happened.
struct SessionDriver<'a> {
    machine: ControlSessionState,
    config: &'a NodeConfig,
    control_key: PublicKey,
    machine_key: PrivateKey,
    state: &'a StateDir,
    /// The key control accepted last; the data plane uses it.
    node_key: PrivateKey,
    /// A rotation's new key, until control confirms it.
    pending_key: Option<PrivateKey>,
    registration: Option<Registration>,
    status: Arc<Mutex<NodeStatus>>,
    /// Whether a map stream has opened since the node started.
    ever_running: bool,
}

impl SessionDriver<'_> {
    /// Carries out the machine's commands until it asks for the map stream.
    /// An error is a definite refusal (or a disk that cannot keep the
    /// keys): the node stops.
    async fn until_map(&mut self) -> anyhow::Result<()> {
        loop {
            let Some(command) = self.machine.poll_command() else {
                // Waiting after a failure.
                let due = self
                    .machine
                    .poll_timeout()
                    .context("control session is idle with nothing scheduled")?;
                tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
                self.machine.handle_timeout(Instant::now());
                self.show();
                continue;
            };
            match command {
                SessionCommand::OpenMap { node_key } => {
                    anyhow::ensure!(
                        node_key == self.node_key.public_key(),
                        "control session asked for the map with a key the node does not hold"
                    );
                    self.show();
                    return Ok(());
                }
                SessionCommand::Register(attempt) => {
                    self.show();
                    match self.register(&attempt).await {
                        Ok(registration) => {
                            self.state.save_registration(&registration)?;
                            self.registration = Some(registration);
                            self.machine.handle_registered(attempt.node_key);
                        }
                        Err(failure) => {
                            tracing::warn!(error = %failure, "registering with control failed");
                            self.machine.handle_failure(Instant::now(), failure);
                        }
                    }
                    self.show();
                }
                SessionCommand::CreatePendingKey => {
                    let key = PrivateKey::from_random_bytes(rand::random());
                    self.state
                        .save_pending_node_key(&key)
                        .context("storing the new node key")?;
                    tracing::info!("rotating the node key");
                    let public = key.public_key();
                    self.pending_key = Some(key);
                    self.machine.handle_pending_key(public);
                }
                SessionCommand::CommitKey { key } => {
                    if let Some(pending) = self.pending_key.take_if(|p| p.public_key() == key) {
                        self.node_key = pending;
                    }
                    anyhow::ensure!(
                        self.node_key.public_key() == key,
                        "control session committed a node key the node does not hold"
                    );
                    self.state
                        .commit_node_key(&self.node_key)
                        .context("storing the node key control accepted")?;
                    tracing::info!("control accepted the new node key");
                }
                SessionCommand::Stop { message } => {
                    self.show();
                    bail!(message);
                }
            }
        }
    }

    /// Registers as `attempt` says and returns control's answer.
    async fn register(&self, attempt: &RegisterAttempt) -> Result<Registration, SessionFailure> {
        let auth_key = if attempt.with_auth_key {
            Some(auth_key(self.config).await?)
        } else {
            None
        };
        let mut channel = ControlChannel::connect(
            &self.config.control_url,
            &self.control_key,
            &self.machine_key,
        )
        .await
        .map_err(|e| match e {
            ConnectError::Transient(e) => SessionFailure::Unreachable(format!("{e:#}")),
            ConnectError::Refused(m) => SessionFailure::Definite(m),
        })?;
        let unreachable = |e: anyhow::Error| SessionFailure::Unreachable(format!("{e:#}"));
        channel
            .send(&ClientMessage::Register(RegisterRequest {
                node_key: attempt.node_key,
                old_node_key: attempt.old_node_key,
                auth_key,
                hostname: self.config.hostname(),
            }))
            .await
            .map_err(unreachable)?;
        match channel.recv().await.map_err(unreachable)? {
            ServerMessage::Registered(r) => Ok(Registration {
                node_id: r.node_id,
                addresses: r.addresses,
            }),
            ServerMessage::Error(e) => Err(SessionFailure::Refused {
                code: e.code,
                message: e.message,
            }),
            other => Err(SessionFailure::Unreachable(format!(
                "unexpected answer to registration: {other:?}"
            ))),
        }
    }

    /// Shows the session in the node's status.
    fn show(&self) {
        let session = self.machine.status(Instant::now());
        let state = match session.phase {
            SessionPhase::Joining => StatusState::Registering,
            SessionPhase::RotatingKey => StatusState::RotatingKey,
            SessionPhase::Connecting if self.ever_running => StatusState::Reconnecting,
            SessionPhase::Connecting => StatusState::Starting,
            SessionPhase::Running => StatusState::Running,
            SessionPhase::Stopped => StatusState::Reconnecting,
        };
        status::set(&self.status, |s| {
            s.state = state;
            s.session = session.to_string();
        });
    }
}

/// The auth key for a first join, from its file or the secrets manager.
async fn auth_key(config: &NodeConfig) -> Result<String, SessionFailure> {
    match (&config.auth_key_file, &config.auth_key_secret) {
        (Some(path), _) => std::fs::read_to_string(path)
            .map(|text| text.trim().to_owned())
            .map_err(|e| {
                SessionFailure::Definite(format!("reading auth key file {}: {e}", path.display()))
            }),
        // The secrets manager being unreachable is worth a retry.
        (None, Some(arn)) => crate::secrets::fetch_auth_key(arn, config.secrets_manager_endpoint.as_deref()).await.map_err(|e| {
            SessionFailure::Unreachable(format!(
                "fetching the auth key named by node.auth_key_secret: {e:#}"
            ))
        }),
        (None, None) => Err(SessionFailure::Definite(
            "this node is not registered yet: set node.auth_key_file or node.auth_key_secret to an auth key from control".into(),
        )),
    }
}

/// One control session: connect, open the map stream, apply maps until it
/// breaks. The data plane keeps running throughout.
#[allow(clippy::too_many_arguments)]
async fn follow_control(
    config: &NodeConfig,
    control_key: &PublicKey,
    machine_key: &PrivateKey,
    node_key: &PrivateKey,
    machine: &mut ControlSessionState,
    endpoints: &mut watch::Receiver<Vec<SocketAddr>>,
    fixed_endpoints: bool,
    configured: &[IpNet],
    (health, priority): (&mut watch::Receiver<Option<Vec<RouteHealth>>>, Option<u32>),
    netmap: &mut NetmapState,
    commands: &mpsc::Sender<Command>,
    routes: &RouteTable,
    ifindex: u32,
    status: &Arc<Mutex<NodeStatus>>,
    tailnet: &Directory,
    exit: &mut ExitDriver,
    exit_requests: &mut mpsc::Receiver<commands::Pending>,
    primary: &watch::Sender<Vec<IpNet>>,
    mut resolver: Option<&mut resolver::NodeResolver>,
    mut connector: Option<&mut connector::AppConnector>,
) -> SessionFailure {
    let lost = |e: anyhow::Error| SessionFailure::Unreachable(format!("{e:#}"));
    let mut channel =
        match ControlChannel::connect(&config.control_url, control_key, machine_key).await {
            Ok(c) => c,
            Err(ConnectError::Refused(m)) => return SessionFailure::Definite(m),
            Err(ConnectError::Transient(e)) => return lost(e),
        };
    let current = endpoints.borrow_and_update().clone();
    status::set(status, |s| s.endpoints = current.clone());
    // What this node advertises: the configured routes, and an app
    // connector's learned ones (which change while the stream is open).
    let mut advertising = configured.to_vec();
    if let Some(c) = connector.as_deref_mut() {
        advertising.extend(c.routes());
    }
    let request = ClientMessage::Map(MapRequest {
        node_key: node_key.public_key(),
        hostname: config.hostname(),
        endpoints: current,
        advertised_routes: advertising.clone(),
        health: health.borrow_and_update().clone(),
        priority,
        app_connector: connector.as_deref().map(connector::AppConnector::zones),
    });
    status::set(status, |s| s.advertised_routes = advertising.clone());
    if let ClientMessage::Map(map) = &request {
        let current = map.health.clone().unwrap_or_default();
        status::set(status, |s| s.route_health = current);
    }
    if let Err(e) = channel.send(&request).await {
        return lost(e);
    }
    // A fresh stream starts with a full map.
    *netmap = NetmapState::default();
    loop {
        let wake = channel.liveness_timeout();
        let message = tokio::select! {
            message = channel.recv() => match message {
                Ok(m) => m,
                Err(e) => return lost(e),
            },
            () = sleep_until_some(wake) => {
                if let Err(e) = channel.poll_liveness().await {
                    return lost(e);
                }
                continue;
            }
            Ok(()) = endpoints.changed() => {
                let current = endpoints.borrow_and_update().clone();
                tracing::info!(endpoints = current.len(), "advertising new endpoints");
                tracing::debug!(?current, "endpoints");
                status::set(status, |s| s.endpoints = current.clone());
                let update = ClientMessage::Update(NodeUpdate {
                    endpoints: Some(current),
                    ..NodeUpdate::default()
                });
                if let Err(e) = channel.send(&update).await {
                    return lost(e);
                }
                continue;
            }
            Ok(()) = health.changed() => {
                let current = health.borrow_and_update().clone();
                status::set(status, |s| s.route_health = current.clone().unwrap_or_default());
                let update = ClientMessage::Update(NodeUpdate {
                    health: current,
                    ..NodeUpdate::default()
                });
                if let Err(e) = channel.send(&update).await {
                    return lost(e);
                }
                continue;
            }
            () = connector_changed(connector.as_deref_mut()) => {
                let Some(c) = connector.as_deref_mut() else {
                    continue;
                };
                advertising = configured.to_vec();
                advertising.extend(c.routes());
                tracing::info!(routes = advertising.len(), "advertising the app connector's routes");
                status::set(status, |s| s.advertised_routes = advertising.clone());
                let update = ClientMessage::Update(NodeUpdate {
                    advertised_routes: Some(advertising.clone()),
                    ..NodeUpdate::default()
                });
                if let Err(e) = channel.send(&update).await {
                    return lost(e);
                }
                continue;
            }
            () = sleep_until_some(exit.next_path_check()) => {
                let peers = exit.check_paths(netmap).await;
                follow_exit_dns(resolver.as_deref(), exit);
                if let Some(peers) = peers
                    && send_exit_peers(commands, netmap, peers).await.is_err()
                {
                    return lost(anyhow::anyhow!("data plane gone"));
                }
                continue;
            }
            Some((choice, reply)) = exit_requests.recv() => {
                exit.set_choice(choice);
                let peers = exit.update(netmap).await;
                follow_exit_dns(resolver.as_deref(), exit);
                if send_exit_peers(commands, netmap, peers).await.is_err() {
                    return lost(anyhow::anyhow!("data plane gone"));
                }
                let _ = reply.send(commands::SetAnswer {
                    error: None,
                    exit_node: Some(exit.status()),
                });
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
                        return lost(anyhow::anyhow!("data plane gone"));
                    }
                }
                let changed = match netmap.apply(map) {
                    Ok(changed) => changed,
                    Err(e) => return lost(anyhow::anyhow!("netmap out of step: {e}")),
                };
                if changed || full {
                    tailnet.replace(netmap.peers(), netmap.cap_grants());
                    if let Some(e) = netmap.cap_grants_refused() {
                        tracing::warn!(error = %e, "control sent cap grants over the limits; granting no application capability");
                    }
                    let peers = exit.update(netmap).await;
                    if let Some(resolver) = resolver.as_deref_mut() {
                        resolver.update(netmap);
                    }
                    if let Some(c) = connector.as_deref_mut() {
                        c.update(netmap);
                    }
                    follow_exit_dns(resolver.as_deref(), exit);
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
                        return lost(anyhow::anyhow!("data plane gone"));
                    }
                    let wanted = netmap.kernel_routes(config.accept_routes, &advertising);
                    match sync_routes(routes, ifindex, &wanted).await {
                        Ok(()) => {
                            if let Some(resolver) = resolver.as_deref() {
                                resolver.routed(&wanted);
                            }
                        }
                        Err(e) => tracing::warn!(error = %format!("{e:#}"), "installing routes"),
                    }
                }
                if full {
                    let first = machine.status(Instant::now()).phase != SessionPhase::Running;
                    machine.handle_map_opened();
                    let session = machine.status(Instant::now()).to_string();
                    status::set(status, |s| {
                        s.state = StatusState::Running;
                        s.control_connected = true;
                        s.session = session;
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
                        .kernel_routes(config.accept_routes, &advertising)
                        .into_iter()
                        .collect();
                    if let Some(me) = netmap.node() {
                        s.primary_routes = me.primary_routes.clone();
                        s.name = Some(me.name.clone());
                    }
                });
                if let Some(me) = netmap.node() {
                    // Every full map says it again (after a reconnect the
                    // VPC route is checked anew); a delta only on change.
                    let now = &me.primary_routes;
                    if full {
                        primary.send_replace(now.clone());
                    } else {
                        primary.send_if_modified(|p| {
                            let changed = p != now;
                            if changed {
                                p.clone_from(now);
                            }
                            changed
                        });
                    }
                }
            }
            ServerMessage::KeepAlive => tracing::trace!("control keepalive"),
            ServerMessage::Liveness(liveness) => {
                channel.set_liveness(liveness);
                let interval = channel.keepalive_interval();
                tracing::debug!(?interval, "control set the keepalive interval");
                status::set(status, |s| {
                    s.control_keepalive_ms =
                        interval.and_then(|i| u64::try_from(i.as_millis()).ok());
                });
            }
            ServerMessage::Registered(_) => {
                tracing::debug!("unexpected registration answer on a map stream")
            }
            ServerMessage::Error(e) => {
                return SessionFailure::Refused {
                    code: e.code,
                    message: e.message,
                };
            }
        }
    }
}

/// Hands the data plane the peers after the exit node changed; `Err`
/// when the data plane is gone. Before a stream's first full map the
/// netmap is empty: the map applies the change when it comes.
/// The node resolver's upstream follows the exit node in use (see
/// `NodeResolver::follow_exit`); called after every change of the choice.
fn follow_exit_dns(resolver: Option<&resolver::NodeResolver>, exit: &ExitDriver) {
    if let Some(resolver) = resolver {
        resolver.follow_exit(exit.exit_resolver());
    }
}

async fn send_exit_peers(
    commands: &mpsc::Sender<Command>,
    netmap: &NetmapState,
    peers: Vec<causeway_wire::Node>,
) -> Result<(), ()> {
    if netmap.node().is_none() {
        return Ok(());
    }
    let filter = netmap.filter().cloned();
    let served = netmap.served_prefixes();
    commands
        .send(Command::SetPeers(peers, filter, served))
        .await
        .map_err(drop)
}

/// Sleeps until `when`, or forever when there is nothing to wake for.
async fn sleep_until_some(when: Option<Instant>) {
    match when {
        Some(when) => tokio::time::sleep_until(tokio::time::Instant::from_std(when)).await,
        None => std::future::pending().await,
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
async fn rescan_interfaces(
    unadvertised: BTreeSet<String>,
    port: u16,
    commands: mpsc::Sender<Command>,
) {
    let mut tick = tokio::time::interval(INTERFACE_RESCAN);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match scan_interfaces(&unadvertised, port) {
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

/// Every non-loopback, non-tailnet IPv4 address of this host but those of
/// the `unadvertised` interfaces, with the WireGuard port.
fn scan_interfaces(
    unadvertised: &BTreeSet<String>,
    port: u16,
) -> anyhow::Result<BTreeSet<SocketAddr>> {
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
            || unadvertised.contains(&interface.interface_name)
        {
            continue;
        }
        found.insert(SocketAddr::new(address, port));
    }
    Ok(found)
}

/// Sets the firewall mark that keeps a socket of the node's own (WireGuard,
/// control) off the exit node's tunnel. Needs CAP_NET_ADMIN, which the node
/// has for its TUN device; without it, only exit-node routing is affected.
pub(crate) fn mark_socket(socket: &impl std::os::fd::AsFd) {
    if let Err(e) = nix::sys::socket::setsockopt(
        socket,
        nix::sys::socket::sockopt::Mark,
        &causeway_netconf::BYPASS_MARK,
    ) {
        tracing::warn!(error = %e, "marking a socket to bypass the exit node");
    }
}

/// Resolves when an app connector's learned routes change; never without
/// one.
async fn connector_changed(connector: Option<&mut connector::AppConnector>) {
    match connector {
        Some(c) => c.changed().await,
        None => std::future::pending().await,
    }
}

/// The roles a node runs besides `device`: those that forward for the
/// tailnet.
#[derive(Clone, Copy, Default)]
pub struct Roles<'a> {
    /// `[subnet_router]`.
    pub router: Option<&'a SubnetRouterConfig>,
    /// `[exit_node]`.
    pub exit_node: Option<&'a ExitNodeConfig>,
    /// `[app_connector]`: its routes are learned at run time, so the
    /// kernel forwards (masqueraded) anywhere and the data plane, which
    /// delivers only traffic to the routes control made this node primary
    /// for, decides what is forwarded.
    pub app_connector: Option<&'a AppConnectorConfig>,
}

/// Subnet-router, exit-node and app-connector set-up: forwarding and the
/// nftables table (masquerade, and forwarding only to the routes, or
/// anywhere for an exit node or app connector, and replies back), undone
/// on drop.
fn start_router(
    config: &NodeConfig,
    Roles {
        router,
        exit_node,
        app_connector,
    }: Roles<'_>,
    registration: &Registration,
    egress: Option<causeway_netconf::ExitEgress>,
) -> anyhow::Result<SubnetRouter> {
    let tailnet_v6 = tailnet_v6(registration);
    let subnet_routes = router.map(|r| r.routes.as_slice()).unwrap_or_default();
    // An exit node forwards anywhere and masquerades everything it
    // forwards (IPv6 only with a tailnet /48 to match as the source).
    let anywhere = match (exit_node, app_connector.is_some()) {
        (Some(exit), _) => exit.routes(),
        (None, true) => vec![
            IpNet::V4(ipnet::Ipv4Net::default()),
            IpNet::V6(ipnet::Ipv6Net::default()),
        ],
        (None, false) => Vec::new(),
    };
    let exit_routes: Vec<IpNet> = anywhere
        .into_iter()
        .filter(|p| p.addr().is_ipv4() || tailnet_v6.is_some())
        .collect();
    let ipv6 = subnet_routes.iter().any(|r| r.prefix.addr().is_ipv6())
        || exit_routes.iter().any(|p| p.addr().is_ipv6());
    let policy = FirewallPolicy {
        table: FIREWALL_TABLE.to_owned(),
        tun_interface: config.tun_name.clone(),
        tailnet_v4: TAILNET_V4.parse().expect("TAILNET_V4 is a valid prefix"),
        tailnet_v6,
        masquerade: subnet_routes
            .iter()
            .filter(|r| r.snat)
            .map(|r| r.prefix)
            .chain(exit_routes.iter().copied())
            .collect(),
        forward: true,
        forward_to: subnet_routes
            .iter()
            .map(|r| r.prefix)
            .chain(exit_routes.iter().copied())
            .collect(),
        egress,
    };
    let setup = SubnetRouter::start(&policy, ipv6).context("starting the subnet router")?;
    tracing::info!(
        routes = ?policy.forward_to,
        masquerade = ?policy.masquerade,
        exit_node = exit_node.is_some(),
        app_connector = app_connector.is_some(),
        egress = ?policy.egress.as_ref().map(|e| &e.interface),
        "forwarding for the tailnet"
    );
    Ok(setup)
}

/// The routes this node advertises: its subnet routes (a 4via6 site's
/// IPv6 route in the tailnet's range `ula`, left out while it is not
/// known) and an exit node's default routes.
fn advertised_routes(
    router: Option<&SubnetRouterConfig>,
    exit_node: Option<&ExitNodeConfig>,
    ula: Option<ipnet::Ipv6Net>,
) -> Vec<IpNet> {
    router
        .into_iter()
        .flat_map(|r| r.routes.iter().filter_map(|r| r.advertised(ula)))
        .chain(exit_node.map(ExitNodeConfig::routes).unwrap_or_default())
        .collect()
}

/// The 4via6 sites and ranges this node serves.
fn via6_sites(router: Option<&SubnetRouterConfig>) -> Vec<(u16, ipnet::Ipv4Net)> {
    router
        .into_iter()
        .flat_map(|r| r.routes.iter().filter_map(|r| r.via6_site()))
        .collect()
}

/// The tailnet's IPv6 /48, from the node's own IPv6 address.
fn tailnet_v6(registration: &Registration) -> Option<ipnet::Ipv6Net> {
    registration.addresses.iter().find_map(|a| match a {
        IpNet::V6(v6) => Some(causeway_wire::via6::tailnet_ula(v6.addr())),
        IpNet::V4(_) => None,
    })
}

/// What forwarded traffic reaches by the main table even on an exit node
/// with an egress interface: the tailnet, and the subnets this node routes.
fn keep_on_main_table(
    router: Option<&SubnetRouterConfig>,
    registration: &Registration,
) -> BTreeSet<IpNet> {
    let tailnet: IpNet = TAILNET_V4.parse().expect("TAILNET_V4 is a valid prefix");
    std::iter::once(tailnet)
        .chain(tailnet_v6(registration).map(IpNet::V6))
        .chain(
            router
                .into_iter()
                .flat_map(|r| r.routes.iter().map(|r| r.prefix.trunc())),
        )
        .collect()
}
