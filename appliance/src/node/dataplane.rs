//! The data-plane driver: the shell around `causeway_mesh::NodeState`. It
//! owns the TUN device, the node's one UDP socket and one timer, and runs
//! on a single task so the core needs no locks.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Instant;

use anyhow::Context;
use causeway_mesh::{Delivery, NodeState, PeerStats};
use causeway_wire::{Node, PacketFilter, PrivateKey};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tun_rs::AsyncDevice;

/// Packets handled per wake-up before checking other inputs, so one busy
/// direction cannot starve the other.
const BATCH: usize = 64;

/// Largest packet on either side (a TUN read is at most the MTU; a UDP
/// datagram at most 64 KiB).
const BUF_LEN: usize = 65_536;

/// WireGuard adds at most this much to a packet (header, counter, tag).
const OVERHEAD: usize = 32;

/// Requests from the rest of the appliance.
pub enum Command {
    /// New peer set and packet filter from the netmap.
    SetPeers(Vec<Node>, Option<PacketFilter>),
    /// The node key was rotated: rebuild every tunnel under the new key.
    SetKey(PrivateKey, Vec<Node>),
    /// Counters for `appliance status`.
    Stats(oneshot::Sender<(Vec<PeerStats>, u64)>),
}

/// Owns the packet path of one node.
pub struct DataplaneDriver {
    node: NodeState,
    tun: AsyncDevice,
    socket: UdpSocket,
    commands: mpsc::Receiver<Command>,
}

impl DataplaneDriver {
    /// Wires a core to its devices.
    pub fn new(
        node: NodeState,
        tun: AsyncDevice,
        socket: UdpSocket,
        commands: mpsc::Receiver<Command>,
    ) -> Self {
        Self {
            node,
            tun,
            socket,
            commands,
        }
    }

    /// Moves packets until the command channel closes.
    pub async fn run(mut self) -> anyhow::Result<()> {
        let mut tun_buf = vec![0u8; BUF_LEN];
        let mut udp_buf = vec![0u8; BUF_LEN];
        let mut out = vec![0u8; BUF_LEN + OVERHEAD];
        loop {
            let deadline = self.node.poll_timeout(Instant::now());
            tokio::select! {
                command = self.commands.recv() => {
                    let Some(command) = command else { return Ok(()) };
                    self.handle_command(command);
                }
                read = self.tun.recv(&mut tun_buf) => {
                    let n = read.context("reading from the TUN device")?;
                    self.on_tun_packet(&tun_buf[..n], &mut out).await;
                    for _ in 1..BATCH {
                        match self.tun.try_recv(&mut tun_buf) {
                            Ok(n) => self.on_tun_packet(&tun_buf[..n], &mut out).await,
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(e) => return Err(e).context("reading from the TUN device"),
                        }
                    }
                }
                read = self.socket.recv_from(&mut udp_buf) => {
                    match read {
                        Ok((n, from)) => self.on_datagram(from, &udp_buf[..n], &mut out).await,
                        // ICMP port unreachable from a peer surfaces here; not fatal.
                        Err(e) => tracing::debug!(error = %e, "UDP receive failed"),
                    }
                    for _ in 1..BATCH {
                        match self.socket.try_recv_from(&mut udp_buf) {
                            Ok((n, from)) => self.on_datagram(from, &udp_buf[..n], &mut out).await,
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(e) => { tracing::debug!(error = %e, "UDP receive failed"); break }
                        }
                    }
                }
                () = tokio::time::sleep_until(deadline.into()) => {
                    self.node.handle_timeout(Instant::now());
                }
            }
            self.flush(&mut out).await;
        }
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::SetPeers(peers, filter) => {
                self.node.set_peers(peers.iter());
                self.node.set_filter(filter);
            }
            Command::SetKey(key, peers) => {
                self.node = NodeState::new(&key, rand::random());
                self.node.set_peers(peers.iter());
            }
            Command::Stats(reply) => {
                let _ = reply.send((self.node.peer_stats(), self.node.dropped()));
            }
        }
    }

    async fn on_tun_packet(&mut self, packet: &[u8], out: &mut [u8]) {
        match self.node.handle_tun_packet(packet, out, Instant::now()) {
            Ok(Some(transmit)) => send(&self.socket, transmit.destination, transmit.payload).await,
            Ok(None) => {}
            Err(why) => tracing::trace!(reason = ?why, "outbound packet dropped"),
        }
    }

    async fn on_datagram(&mut self, from: SocketAddr, datagram: &[u8], out: &mut [u8]) {
        match self
            .node
            .handle_datagram(from, datagram, out, Instant::now())
        {
            Delivery::Tun(packet) => {
                if let Err(e) = self.tun.send(packet).await {
                    tracing::debug!(error = %e, "TUN write failed");
                }
            }
            Delivery::Network(transmit) => {
                send(&self.socket, transmit.destination, transmit.payload).await
            }
            Delivery::Nothing => {}
            Delivery::Dropped(why) => {
                tracing::trace!(%from, reason = ?why, "inbound datagram dropped")
            }
        }
    }

    async fn flush(&mut self, out: &mut [u8]) {
        while let Some(transmit) = self.node.poll_transmit(out, Instant::now()) {
            send(&self.socket, transmit.destination, transmit.payload).await;
        }
    }
}

async fn send(socket: &UdpSocket, destination: SocketAddr, payload: &[u8]) {
    if let Err(e) = socket.send_to(payload, destination).await {
        tracing::debug!(%destination, error = %e, "UDP send failed");
    }
}
