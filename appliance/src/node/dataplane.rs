//! The data-plane driver: the shell around `causeway_mesh::NodeState`. It
//! owns the TUN device, the node's one UDP socket and one timer, and runs
//! on a single task so the core needs no locks.
//!
//! System calls, not cryptography, bound a tunnel's throughput, so both
//! devices move packets in batches where the kernel allows: a TUN read is
//! one TCP/UDP super-packet (TSO), encrypted packets to one peer leave in
//! one `sendmsg` (UDP GSO), a UDP read is a run of datagrams (UDP GRO), and
//! decrypted packets of one flow enter the TUN device as one write (GRO).
//! The core still sees one packet at a time.

mod tun_offload;
mod udp_offload;

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::SocketAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::time::Instant;

use anyhow::Context;
use causeway_mesh::{
    Delivery, DiscoveryEvent, DropCounts, EndpointDiscoveryState, NodeState, PeerStats, Via6Stats,
};
use causeway_wire::{Node, NodeId, PacketFilter, PrivateKey};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tun_rs::{AsyncDevice, IDEAL_BATCH_SIZE};

use self::tun_offload::{TunReads, TunWrites, is_device_error};
use self::udp_offload::{GsoBatch, OffloadSocket, RECV_BUF_LEN};

pub use self::tun_offload::open as open_tun;

/// Packets handled per wake-up before checking other inputs, so one busy
/// direction cannot starve the other.
const BATCH: usize = IDEAL_BATCH_SIZE;

/// Largest datagram from timers and handshakes (a UDP datagram is at most
/// 64 KiB).
const BUF_LEN: usize = 65_536;

/// WireGuard adds at most this much to a packet (header, counter, tag).
const OVERHEAD: usize = 32;

/// A 4via6 reply grows by up to this much when the core translates it to
/// IPv6 before encrypting it.
const VIA6_GROWTH: usize = 40;

/// The core writes handshake messages (148 bytes) into any output buffer.
const MIN_OUT: usize = 256;

/// Requests from the rest of the appliance.
pub enum Command {
    /// New peer set, packet filter, and the prefixes this node accepts
    /// packets for (its addresses and the routes it is primary for), from
    /// the netmap.
    SetPeers(Vec<Node>, Option<PacketFilter>, Vec<IpNet>),
    /// The node key was rotated: rebuild every tunnel under the new key.
    SetKey(PrivateKey, Vec<Node>),
    /// Counters for `appliance status`.
    Stats(oneshot::Sender<(Vec<PeerStats>, DropCounts, Via6Stats)>),
    /// The addresses of the node's own interfaces changed.
    SetLocalEndpoints(BTreeSet<SocketAddr>),
    /// The cloud's public address for this node, from its metadata service.
    SetCloudEndpoint(Option<SocketAddr>),
    /// Control's STUN address, from the netmap.
    SetStunServer(Option<SocketAddr>),
    /// Peers to keep sessions warm with (exit-node candidates of `auto`).
    SetWarm(BTreeSet<NodeId>),
}

/// Owns the packet path of one node, and the STUN exchange that must use
/// the same socket (a NAT maps each socket on its own).
pub struct DataplaneDriver {
    node: NodeState,
    discovery: EndpointDiscoveryState,
    tun: AsyncDevice,
    udp: OffloadSocket,
    commands: mpsc::Receiver<Command>,
    endpoints: watch::Sender<Vec<SocketAddr>>,
    /// The last filter and served prefixes, for a core rebuilt under a
    /// new key.
    filter: Option<PacketFilter>,
    served: Option<Vec<IpNet>>,
    /// The peers kept warm, likewise.
    warm: BTreeSet<NodeId>,
    /// The tailnet's IPv6 range and the 4via6 sites served, likewise.
    via6: Option<(Ipv6Net, Vec<(u16, Ipv4Net)>)>,
}

impl DataplaneDriver {
    /// Wires the cores to their devices. Every change of the endpoints to
    /// advertise is published on `endpoints`. `via6`: the tailnet's IPv6
    /// range and the 4via6 sites and ranges this node serves.
    pub fn new(
        mut node: NodeState,
        via6: Option<(Ipv6Net, Vec<(u16, Ipv4Net)>)>,
        discovery: EndpointDiscoveryState,
        tun: AsyncDevice,
        socket: UdpSocket,
        commands: mpsc::Receiver<Command>,
        endpoints: watch::Sender<Vec<SocketAddr>>,
    ) -> Self {
        if let Some((ula, sites)) = &via6 {
            set_via6(&mut node, *ula, sites);
        }
        Self {
            node,
            discovery,
            tun,
            udp: OffloadSocket::new(socket),
            commands,
            endpoints,
            filter: None,
            served: None,
            warm: BTreeSet::new(),
            via6,
        }
    }

    /// Moves packets until the command channel closes.
    pub async fn run(mut self) -> anyhow::Result<()> {
        let mut tun_reads = TunReads::new();
        let mut tun_writes = TunWrites::new();
        let mut udp_rx = vec![0u8; RECV_BUF_LEN];
        let mut udp_tx = GsoBatch::new();
        let mut out = vec![0u8; BUF_LEN + OVERHEAD];
        loop {
            let now = Instant::now();
            let deadline = match self.discovery.poll_timeout() {
                Some(probe) => self.node.poll_timeout(now).min(probe),
                None => self.node.poll_timeout(now),
            };
            tokio::select! {
                command = self.commands.recv() => {
                    let Some(command) = command else { return Ok(()) };
                    self.handle_command(command);
                }
                read = tun_reads.recv(&self.tun) => {
                    let mut read = read;
                    let mut packets = 0;
                    loop {
                        match read {
                            Ok(n) => {
                                for i in 0..n {
                                    encrypt(&mut self.node, &mut self.udp, &mut udp_tx, tun_reads.packet(i)).await;
                                }
                                packets += n;
                            }
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(e) if is_device_error(&e) => {
                                return Err(e).context("reading from the TUN device");
                            }
                            Err(e) => tracing::trace!(error = %e, "malformed TUN super-packet dropped"),
                        }
                        if packets >= BATCH {
                            break;
                        }
                        read = tun_reads.try_recv(&self.tun);
                    }
                    send_pending(&mut self.udp, &udp_tx).await;
                    udp_tx.clear();
                }
                received = self.udp.recv(&mut udp_rx) => {
                    let mut received = received;
                    let mut packets = 0;
                    loop {
                        match received {
                            Ok(r) => {
                                for datagram in udp_offload::datagrams(&udp_rx, r) {
                                    packets += 1;
                                    if causeway_wire::stun::is_stun(datagram) {
                                        self.discovery.handle_stun(r.from, datagram, Instant::now());
                                        continue;
                                    }
                                    decrypt(&mut self.node, &self.udp, &self.tun, &mut tun_writes, r.from, datagram).await;
                                }
                            }
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            // ICMP port unreachable from a peer surfaces here; not fatal.
                            Err(e) => { tracing::debug!(error = %e, "UDP receive failed"); break }
                        }
                        if packets >= BATCH {
                            break;
                        }
                        received = self.udp.try_recv(&mut udp_rx);
                    }
                    tun_writes.flush(&self.tun).await;
                }
                () = tokio::time::sleep_until(deadline.into()) => {
                    let now = Instant::now();
                    self.node.handle_timeout(now);
                    self.discovery.handle_timeout(now);
                }
            }
            self.flush(&mut out).await;
        }
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::SetPeers(peers, filter, served) => {
                self.node.set_peers(peers.iter());
                self.node.set_filter(filter.clone());
                self.node.set_served(&served);
                self.filter = filter;
                self.served = Some(served);
            }
            Command::SetKey(key, peers) => {
                self.node = NodeState::new(&key, rand::random());
                self.node.set_peers(peers.iter());
                self.node.set_warm(self.warm.clone());
                if let Some((ula, sites)) = &self.via6 {
                    set_via6(&mut self.node, *ula, sites);
                }
                // The new core enforces what the old one did.
                self.node.set_filter(self.filter.clone());
                if let Some(served) = &self.served {
                    self.node.set_served(served);
                }
            }
            Command::Stats(reply) => {
                let _ = reply.send((
                    self.node.peer_stats(Instant::now()),
                    self.node.dropped().clone(),
                    self.node.via6_stats(),
                ));
            }
            Command::SetLocalEndpoints(local) => self.discovery.set_local(local),
            Command::SetCloudEndpoint(cloud) => self.discovery.set_cloud(cloud),
            Command::SetStunServer(server) => {
                self.discovery.set_stun_server(server, Instant::now());
            }
            Command::SetWarm(peers) => {
                self.warm.clone_from(&peers);
                self.node.set_warm(peers);
            }
        }
    }

    async fn flush(&mut self, out: &mut [u8]) {
        while let Some(transmit) = self.node.poll_transmit(out, Instant::now()) {
            self.udp
                .send_to(transmit.payload, transmit.destination)
                .await;
        }
        if let Some(transmit) = self.discovery.poll_transmit() {
            self.udp
                .send_to(transmit.payload, transmit.destination)
                .await;
        }
        while let Some(DiscoveryEvent::EndpointsChanged(endpoints)) = self.discovery.poll_event() {
            tracing::debug!(?endpoints, "endpoints to advertise changed");
            self.endpoints.send_replace(endpoints);
        }
    }
}

/// Turns on 4via6 translation for `sites` (the configuration refuses
/// overlapping sites, so an error here is a bug worth a loud log line,
/// not a stop: the node's other routes still work).
fn set_via6(node: &mut NodeState, ula: Ipv6Net, sites: &[(u16, Ipv4Net)]) {
    if sites.is_empty() {
        return;
    }
    match node.set_via6(ula, sites) {
        Ok(()) => tracing::info!(%ula, ?sites, "4via6 translation on"),
        Err(e) => tracing::error!(error = %e, "4via6 translation stays off"),
    }
}

/// Encrypts a packet from the TUN device straight into the pending GSO run,
/// sending the run first when this datagram cannot join it.
async fn encrypt(
    node: &mut NodeState,
    udp: &mut OffloadSocket,
    batch: &mut GsoBatch,
    packet: &[u8],
) {
    let need = (packet.len() + OVERHEAD + VIA6_GROWTH).max(MIN_OUT);
    if batch.spare_len() < need {
        send_pending(udp, batch).await;
        batch.clear();
    }
    let (base, spare) = batch.spare();
    let (destination, offset, len) = match node.handle_tun_packet(packet, spare, Instant::now()) {
        Ok(Some(transmit)) => (
            transmit.destination,
            transmit.payload.as_ptr() as usize - base,
            transmit.payload.len(),
        ),
        Ok(None) => return,
        Err(why) => return tracing::trace!(reason = ?why, "outbound packet dropped"),
    };
    if batch.can_extend(destination, offset, len) {
        batch.extend(len);
    } else {
        send_pending(udp, batch).await;
        batch.begin(destination, offset, len);
    }
}

async fn send_pending(udp: &mut OffloadSocket, batch: &GsoBatch) {
    if let Some(run) = batch.pending() {
        udp.send_segments(run.destination, run.payload, run.segment_size)
            .await;
    }
}

/// Decrypts one datagram straight into the next TUN write slot.
async fn decrypt(
    node: &mut NodeState,
    udp: &OffloadSocket,
    tun: &AsyncDevice,
    writes: &mut TunWrites,
    from: SocketAddr,
    datagram: &[u8],
) {
    if writes.is_full() {
        writes.flush(tun).await;
    }
    let out = writes.slot(datagram.len().max(MIN_OUT));
    let base = out.as_ptr() as usize;
    match node.handle_datagram(from, datagram, out, Instant::now()) {
        Delivery::Tun(packet) => {
            let start = packet.as_ptr() as usize - base;
            let range = start..start + packet.len();
            writes.commit(range);
        }
        Delivery::Network(transmit) => udp.send_to(transmit.payload, transmit.destination).await,
        Delivery::Nothing => {}
        Delivery::Dropped(why) => {
            tracing::trace!(%from, reason = ?why, "inbound datagram dropped")
        }
    }
}
