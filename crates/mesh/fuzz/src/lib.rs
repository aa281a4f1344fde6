//! A small fixed mesh for the fuzz targets: node 1 (the one under test) with
//! peers 2 and 3, each with a fixed key, tailnet address 100.64.0.N and UDP
//! endpoint 198.18.0.N:41641; peer 3 also routes 198.19.1.0/24.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use causeway_mesh::{Delivery, NodeState};
use causeway_wire::{FilterDestination, FilterRule, Node, NodeId, PacketFilter, PortRange, PrivateKey};
use ipnet::IpNet;

/// Big enough for any datagram the targets produce.
pub const BUF: usize = 65_536 + 256;

/// Node `id`'s WireGuard key.
pub fn key(id: u8) -> PrivateKey {
    PrivateKey::from_random_bytes([id; 32])
}

/// Node `id`'s tailnet address.
pub fn address(id: u8) -> Ipv4Addr {
    Ipv4Addr::new(100, 64, 0, id)
}

/// Node `id`'s UDP endpoint.
pub fn endpoint(id: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, id)), 41641)
}

fn describe(id: u8) -> Node {
    let own = IpNet::from(IpAddr::V4(address(id)));
    let routes: Vec<IpNet> = if id == 3 {
        vec!["198.19.1.0/24".parse().expect("valid prefix")]
    } else {
        vec![]
    };
    Node {
        id: NodeId(u64::from(id)),
        name: format!("n{id}"),
        node_key: key(id).public_key(),
        key_expiry: None,
        addresses: vec![own],
        allowed_ips: std::iter::once(own).chain(routes.iter().copied()).collect(),
        primary_routes: routes,
        endpoints: vec![endpoint(id)],
        tags: vec![],
        online: true,
        user: None,
        wireguard_only: false,
        exit_routes: vec![],
        exit_unhealthy: false,
    }
}

/// Node `id` of the three, knowing the other two as peers.
pub fn node(id: u8) -> NodeState {
    let peers: Vec<Node> = (1..=3).filter(|&p| p != id).map(describe).collect();
    let mut node = NodeState::new(&key(id), u64::from(id) * 1000);
    node.set_peers(&peers);
    node
}

/// A filter letting only peer 2 reach node 1.
pub fn filter() -> PacketFilter {
    PacketFilter {
        rules: vec![FilterRule {
            sources: vec![IpNet::from(IpAddr::V4(address(2)))],
            destinations: vec![FilterDestination {
                prefix: IpNet::from(IpAddr::V4(address(1))),
                ports: PortRange::ANY,
            }],
            protocols: vec![],
        }],
    }
}

/// A minimal IPv4/UDP-ish packet.
pub fn ipv4_packet(source: Ipv4Addr, destination: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    let total = u16::try_from(20 + payload.len()).unwrap_or(u16::MAX);
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&source.octets());
    p[16..20].copy_from_slice(&destination.octets());
    p.extend_from_slice(payload);
    p
}

/// Drains `node`'s pending transmissions (must end).
pub fn drain(node: &mut NodeState, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = vec![0u8; BUF];
    let mut sent = Vec::new();
    while let Some(t) = node.poll_transmit(&mut out, now) {
        sent.push((t.destination, t.payload.to_vec()));
        assert!(sent.len() < 10_000, "poll_transmit never returns None");
    }
    sent
}

/// Runs a real handshake between `a` (node 1) and `b` (node 2) by sending a
/// packet from 2 to 1, delivering every datagram until none is left, so
/// node 1 ends with a confirmed session with peer 2.
pub fn establish(a: &mut NodeState, b: &mut NodeState, now: Instant) {
    let mut out = vec![0u8; BUF];
    let packet = ipv4_packet(address(2), address(1), b"hello");
    let mut wire: Vec<(SocketAddr, SocketAddr, Vec<u8>)> = Vec::new();
    if let Ok(Some(t)) = b.handle_tun_packet(&packet, &mut out, now) {
        wire.push((endpoint(2), t.destination, t.payload.to_vec()));
    }
    for (to, d) in drain(b, now) {
        wire.push((endpoint(2), to, d));
    }
    let mut steps = 0;
    while let Some((from, to, datagram)) = wire.pop() {
        steps += 1;
        assert!(steps < 100, "handshake does not settle");
        let (receiver, me) = if to == endpoint(1) { (&mut *a, 1) } else { (&mut *b, 2) };
        if let Delivery::Network(t) = receiver.handle_datagram(from, &datagram, &mut out, now) {
            wire.push((endpoint(me), t.destination, t.payload.to_vec()));
        }
        for (dest, d) in drain(receiver, now) {
            wire.push((endpoint(me), dest, d));
        }
    }
}
