//! 4via6 through two node cores: a client sends IPv6 to a 4via6 address,
//! the subnet router writes IPv4 to its TUN device, and the router's IPv4
//! reply reaches the client as IPv6 from the 4via6 address.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use causeway_mesh::{Delivery, Drop, NodeState, Via6Refusal};
use causeway_wire::via6::{via6_address, via6_prefix};
use causeway_wire::{Node, NodeId, PrivateKey};
use etherparse::{Ipv4Header, Ipv6Header, PacketBuilder, UdpSlice};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

const CLIENT: u64 = 1;
const ROUTER: u64 = 2;
const SITE: u16 = 7;
const BUF: usize = 2048;

fn ula() -> Ipv6Net {
    "fd7a:115c:a1e0::/48".parse().expect("valid")
}

fn range() -> Ipv4Net {
    "10.0.0.0/24".parse().expect("valid")
}

fn v4(id: u64) -> Ipv4Addr {
    Ipv4Addr::new(100, 64, 0, id as u8)
}

fn v6(id: u64) -> Ipv6Addr {
    Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, id as u16)
}

fn endpoint(id: u64) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, id as u8)), 41641)
}

fn key(id: u64) -> PrivateKey {
    PrivateKey::from_random_bytes([id as u8; 32])
}

fn describe(id: u64) -> Node {
    let addresses: Vec<IpNet> = vec![IpAddr::V4(v4(id)).into(), IpAddr::V6(v6(id)).into()];
    let routes: Vec<IpNet> = if id == ROUTER {
        vec![IpNet::V6(via6_prefix(ula(), SITE, range()))]
    } else {
        vec![]
    };
    Node {
        id: NodeId(id),
        name: format!("n{id}"),
        node_key: key(id).public_key(),
        key_expiry: None,
        allowed_ips: addresses.iter().chain(&routes).copied().collect(),
        addresses,
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

struct Pair {
    client: NodeState,
    router: NodeState,
    wire: VecDeque<(u64, Vec<u8>)>,
    /// (receiver, packet) of everything written to a TUN device.
    tun: Vec<(u64, Vec<u8>)>,
    drops: Vec<(u64, Drop)>,
    now: Instant,
}

impl Pair {
    fn new() -> Self {
        let mut client = NodeState::new(&key(CLIENT), 1);
        client.set_peers(&[describe(ROUTER)]);
        let mut router = NodeState::new(&key(ROUTER), 2);
        router.set_peers(&[describe(CLIENT)]);
        let served = describe(ROUTER);
        router.set_served(&served.allowed_ips);
        router
            .set_via6(ula(), &[(SITE, range())])
            .expect("valid configuration");
        Self {
            client,
            router,
            wire: VecDeque::new(),
            tun: vec![],
            drops: vec![],
            now: Instant::now(),
        }
    }

    fn node(&mut self, id: u64) -> &mut NodeState {
        if id == CLIENT {
            &mut self.client
        } else {
            &mut self.router
        }
    }

    fn send_from_tun(&mut self, from: u64, packet: &[u8]) {
        let now = self.now;
        let mut out = vec![0u8; BUF];
        match self.node(from).handle_tun_packet(packet, &mut out, now) {
            Ok(Some(t)) => self.wire.push_back((from, t.payload.to_vec())),
            Ok(None) => {}
            Err(e) => self.drops.push((from, e)),
        }
        self.drain(from);
    }

    fn drain(&mut self, id: u64) {
        let now = self.now;
        let mut out = vec![0u8; BUF];
        while let Some(t) = self.node(id).poll_transmit(&mut out, now) {
            let payload = t.payload.to_vec();
            self.wire.push_back((id, payload));
        }
    }

    fn run(&mut self) {
        while let Some((from, datagram)) = self.wire.pop_front() {
            let to = if from == CLIENT { ROUTER } else { CLIENT };
            let now = self.now;
            let mut out = vec![0u8; BUF];
            match self
                .node(to)
                .handle_datagram(endpoint(from), &datagram, &mut out, now)
            {
                Delivery::Tun(packet) => {
                    let packet = packet.to_vec();
                    self.tun.push((to, packet));
                }
                Delivery::Network(t) => {
                    let payload = t.payload.to_vec();
                    self.wire.push_back((to, payload));
                }
                Delivery::Nothing => {}
                Delivery::Dropped(why) => self.drops.push((to, why)),
            }
            self.drain(to);
        }
    }
}

fn udp_v6(source: Ipv6Addr, destination: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::new();
    PacketBuilder::ipv6(source.octets(), destination.octets(), 64)
        .udp(5353, 53)
        .write(&mut packet, payload)
        .expect("written");
    packet
}

#[test]
fn a_client_reaches_a_site_by_its_4via6_address_and_the_reply_comes_back_as_ipv6() {
    let mut pair = Pair::new();
    let server = Ipv4Addr::new(10, 0, 0, 5);
    let server_v6 = via6_address(ula(), SITE, server);

    pair.send_from_tun(CLIENT, &udp_v6(v6(CLIENT), server_v6, b"query"));
    pair.run();

    assert_eq!(pair.drops, vec![]);
    assert_eq!(pair.tun.len(), 1);
    let (receiver, packet) = pair.tun.pop().expect("one packet");
    assert_eq!(receiver, ROUTER);
    let (ip, rest) = Ipv4Header::from_slice(&packet).expect("IPv4 on the router's TUN");
    assert_eq!(Ipv4Addr::from(ip.source), v4(CLIENT));
    assert_eq!(Ipv4Addr::from(ip.destination), server);
    let udp = UdpSlice::from_slice(rest).expect("UDP");
    assert_eq!(udp.payload(), b"query");

    // The router's kernel forwards it and un-masquerades the answer.
    let mut answer = Vec::new();
    PacketBuilder::ipv4(server.octets(), v4(CLIENT).octets(), 63)
        .udp(53, 5353)
        .write(&mut answer, b"answer")
        .expect("written");
    pair.send_from_tun(ROUTER, &answer);
    pair.run();

    assert_eq!(pair.drops, vec![]);
    let (receiver, packet) = pair.tun.pop().expect("the answer");
    assert_eq!(receiver, CLIENT);
    let (ip, rest) = Ipv6Header::from_slice(&packet).expect("IPv6 on the client's TUN");
    assert_eq!(ip.source_addr(), server_v6);
    assert_eq!(ip.destination_addr(), v6(CLIENT));
    let udp = UdpSlice::from_slice(rest).expect("UDP");
    assert_eq!((udp.source_port(), udp.destination_port()), (53, 5353));
    assert_eq!(udp.payload(), b"answer");
    let stats = pair.router.via6_stats();
    assert_eq!((stats.to_ipv4, stats.to_ipv6, stats.flows), (1, 1, 1));
}

#[test]
fn plain_ipv4_from_the_router_stays_ipv4_and_a_site_it_does_not_serve_is_refused() {
    let mut pair = Pair::new();
    // Another site's 4via6 address routed to this router by mistake.
    let elsewhere = via6_address(ula(), SITE + 1, Ipv4Addr::new(10, 0, 0, 5));
    // The router also serves the range plainly, as IPv4.
    let mut router = describe(ROUTER);
    router
        .allowed_ips
        .push(IpNet::V6(via6_prefix(ula(), SITE + 1, range())));
    router.allowed_ips.push(IpNet::V4(range()));
    pair.client.set_peers(&[router.clone()]);
    pair.router.set_served(&router.allowed_ips);

    pair.send_from_tun(CLIENT, &udp_v6(v6(CLIENT), elsewhere, b"query"));
    pair.run();
    let mut plain = Vec::new();
    PacketBuilder::ipv4([10, 0, 0, 9], v4(CLIENT).octets(), 63)
        .udp(53, 5353)
        .write(&mut plain, b"plain")
        .expect("written");
    pair.send_from_tun(ROUTER, &plain);
    pair.run();

    assert_eq!(
        pair.drops,
        vec![(ROUTER, Drop::Via6(Via6Refusal::OutOfRange))]
    );
    assert_eq!(pair.tun, vec![(CLIENT, plain)]);
}
