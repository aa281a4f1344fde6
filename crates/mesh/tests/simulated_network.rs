//! Several node cores on a simulated network with a virtual clock.
//!
//! The network is a queue of datagrams that the test delivers one at a
//! time, in an order chosen by a seeded generator; after every step the
//! test checks the mesh's invariants. (boringtun's own handshake timers
//! read the real monotonic clock; the test runs well inside them.)

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use causeway_mesh::{Delivery, Drop, DropReason, NetmapState, NodeState, parse_ip_header};
use causeway_wire::{MapResponse, Node, NodeId, PrivateKey};
use ipnet::IpNet;

const NODES: u64 = 4;
const ROUTER: u64 = 4;
const BUF: usize = 2048;

struct Sim {
    nodes: BTreeMap<u64, NodeState>,
    wire: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    now: Instant,
    rng: u64,
    /// (receiver, source, destination, payload) of everything that reached a TUN device.
    delivered: Vec<(u64, IpAddr, IpAddr, Vec<u8>)>,
    drops: Vec<(u64, Drop)>,
    /// Datagrams sent to an address no node holds (a private address of
    /// another network, say): lost on the way.
    lost: Vec<SocketAddr>,
    /// How control describes each node to its peers.
    describe: fn(u64) -> Node,
}

fn address(id: u64) -> Ipv4Addr {
    Ipv4Addr::new(100, 64, 0, id as u8)
}

fn endpoint(id: u64) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, id as u8)), 41641)
}

fn owner_of(endpoint: SocketAddr) -> u64 {
    match endpoint.ip() {
        IpAddr::V4(v4) => u64::from(v4.octets()[3]),
        IpAddr::V6(_) => unreachable!("simulation is IPv4 only"),
    }
}

fn key(id: u64) -> PrivateKey {
    PrivateKey::from_random_bytes([id as u8; 32])
}

fn describe(id: u64) -> Node {
    let own: IpNet = IpNet::from(IpAddr::V4(address(id)));
    let subnet: IpNet = "198.19.1.0/24".parse().expect("valid");
    let routes = if id == ROUTER { vec![subnet] } else { vec![] };
    Node {
        id: NodeId(id),
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

fn ipv4_packet(source: Ipv4Addr, destination: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    let total = u16::try_from(20 + payload.len()).expect("small packet");
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&source.octets());
    p[16..20].copy_from_slice(&destination.octets());
    p.extend_from_slice(payload);
    p
}

impl Sim {
    fn new(seed: u64) -> Self {
        Self::described(seed, describe)
    }

    /// A simulation whose nodes control describes with `describe`.
    fn described(seed: u64, describe: fn(u64) -> Node) -> Self {
        let mut nodes = BTreeMap::new();
        for id in 1..=NODES {
            // Each node learns its peers the way the appliance does: from a netmap.
            let mut netmap = NetmapState::default();
            let peers: Vec<Node> = (1..=NODES).filter(|&p| p != id).map(describe).collect();
            netmap
                .apply(MapResponse {
                    seq: 1,
                    node: Some(describe(id)),
                    peers: Some(peers),
                    ..Default::default()
                })
                .expect("full map applies");
            let mut node = NodeState::new(&key(id), seed.wrapping_mul(id));
            node.set_peers(netmap.peers());
            nodes.insert(id, node);
        }
        Self {
            nodes,
            wire: VecDeque::new(),
            now: Instant::now(),
            rng: seed | 1,
            delivered: vec![],
            drops: vec![],
            lost: vec![],
            describe,
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64: deterministic per seed.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn send_from_tun(&mut self, from: u64, packet: &[u8]) {
        let mut out = vec![0u8; BUF];
        let node = self.nodes.get_mut(&from).expect("node exists");
        match node.handle_tun_packet(packet, &mut out, self.now) {
            Ok(Some(t)) => self
                .wire
                .push_back((endpoint(from), t.destination, t.payload.to_vec())),
            Ok(None) => {}
            Err(e) => self.drops.push((from, e)),
        }
        self.drain(from);
    }

    fn drain(&mut self, id: u64) {
        let mut out = vec![0u8; BUF];
        let node = self.nodes.get_mut(&id).expect("node exists");
        while let Some(t) = node.poll_transmit(&mut out, self.now) {
            self.wire
                .push_back((endpoint(id), t.destination, t.payload.to_vec()));
        }
    }

    /// Delivers one datagram, picked at random among the first few queued
    /// (so datagrams are reordered), then checks the invariants.
    fn step(&mut self) -> bool {
        if self.wire.is_empty() {
            return false;
        }
        let window = self.wire.len().min(3) as u64;
        let pick = (self.random() % window) as usize;
        let (from, to, datagram) = self.wire.remove(pick).expect("index within queue");
        if std::env::var("SIM_TRACE").is_ok() {
            eprintln!(
                "{} -> {} type {} len {}",
                owner_of(from),
                owner_of(to),
                datagram.first().copied().unwrap_or(255),
                datagram.len()
            );
        }
        let receiver = owner_of(to);
        if to != endpoint(receiver) {
            self.lost.push(to);
            return true;
        }
        let mut out = vec![0u8; BUF];
        let node = self
            .nodes
            .get_mut(&receiver)
            .expect("datagram for a known node");
        match node.handle_datagram(from, &datagram, &mut out, self.now) {
            Delivery::Tun(packet) => {
                let header = parse_ip_header(packet).expect("delivered packets are IP");
                self.delivered.push((
                    receiver,
                    header.source,
                    header.destination,
                    packet[20..].to_vec(),
                ));
            }
            Delivery::Network(t) => self.wire.push_back((to, t.destination, t.payload.to_vec())),
            Delivery::Nothing => {}
            Delivery::Dropped(why) => self.drops.push((receiver, why)),
        }
        self.drain(receiver);
        self.now += Duration::from_millis(10);
        for id in 1..=NODES {
            let node = self.nodes.get_mut(&id).expect("node exists");
            if node.poll_timeout(self.now) <= self.now {
                node.handle_timeout(self.now);
            }
            self.drain(id);
        }
        self.check_invariants();
        true
    }

    fn check_invariants(&self) {
        let mut seen = BTreeSet::new();
        for (receiver, source, destination, payload) in &self.delivered {
            // Only packets for the receiver (or its subnet) reach its TUN.
            let for_me = *destination == IpAddr::V4(address(*receiver))
                || (*receiver == ROUTER
                    && "198.19.1.0/24"
                        .parse::<IpNet>()
                        .expect("valid")
                        .contains(destination));
            assert!(for_me, "node {receiver} got a packet for {destination}");
            // The payload names its true sender; the source must be that sender's.
            let sender = u64::from(payload[0]);
            let sender_owns_source = (self.describe)(sender)
                .allowed_ips
                .iter()
                .any(|n| n.contains(source));
            assert!(
                sender_owns_source,
                "node {receiver} accepted {source} from node {sender}"
            );
            // Replay protection: nothing arrives twice.
            assert!(
                seen.insert((receiver, payload.clone())),
                "duplicate delivery to {receiver}"
            );
        }
    }

    fn run(&mut self) {
        let mut steps = 0;
        while self.step() {
            steps += 1;
            assert!(steps < 100_000, "simulation did not settle");
        }
    }
}

#[test]
fn every_node_reaches_every_other_and_invariants_hold_each_step() {
    for seed in [1, 7, 42, 1234] {
        let mut sim = Sim::new(seed);
        let mut expected = BTreeSet::new();
        for round in 0..3u8 {
            for from in 1..=NODES {
                for to in (1..=NODES).filter(|&t| t != from) {
                    let payload = vec![from as u8, to as u8, round];
                    sim.send_from_tun(from, &ipv4_packet(address(from), address(to), &payload));
                    expected.insert((to, payload));
                }
            }
            sim.run();
        }
        let got: BTreeSet<_> = sim
            .delivered
            .iter()
            .map(|(r, _, _, p)| (*r, p.clone()))
            .collect();
        assert_eq!(
            got, expected,
            "seed {seed}: every packet arrives exactly once"
        );
    }
}

#[test]
fn subnet_traffic_goes_to_the_router_and_replies_come_back() {
    let mut sim = Sim::new(3);
    let server = Ipv4Addr::new(198, 19, 1, 10);
    sim.send_from_tun(1, &ipv4_packet(address(1), server, &[1, 0, 0]));
    sim.run();
    // The router's kernel would forward it; its reply comes from the VPC address.
    sim.send_from_tun(
        ROUTER,
        &ipv4_packet(server, address(1), &[ROUTER as u8, 0, 1]),
    );
    sim.run();
    let got: Vec<_> = sim
        .delivered
        .iter()
        .map(|(r, s, d, _)| (*r, *s, *d))
        .collect();
    assert_eq!(
        got,
        vec![
            (ROUTER, address(1).into(), server.into()),
            (1, server.into(), address(1).into())
        ]
    );
}

#[test]
fn a_peer_cannot_spoof_another_peers_source() {
    let mut sim = Sim::new(5);
    // Establish a session 2 → 1 first.
    sim.send_from_tun(2, &ipv4_packet(address(2), address(1), &[2, 1, 0]));
    sim.run();
    // Node 2 now claims to be node 3, and to be the router's subnet.
    sim.send_from_tun(2, &ipv4_packet(address(3), address(1), &[2, 1, 1]));
    sim.send_from_tun(
        2,
        &ipv4_packet(Ipv4Addr::new(198, 19, 1, 10), address(1), &[2, 1, 2]),
    );
    sim.run();
    assert_eq!(sim.delivered.len(), 1, "only the honest packet arrives");
    let spoofs = sim
        .drops
        .iter()
        .filter(|(r, d)| {
            *r == 1
                && matches!(
                    d,
                    Drop::SpoofedSource {
                        peer: NodeId(2),
                        ..
                    }
                )
        })
        .count();
    assert_eq!(spoofs, 2);
}

#[test]
fn garbage_datagrams_change_nothing() {
    let mut sim = Sim::new(9);
    sim.send_from_tun(1, &ipv4_packet(address(1), address(2), &[1, 2, 0]));
    sim.run();
    let stats_before = sim.nodes[&2].peer_stats(sim.now);
    for len in [0usize, 1, 4, 32, 148, 200] {
        let mut bytes = vec![0u8; len];
        for b in bytes.iter_mut() {
            *b = sim.random() as u8;
        }
        if let Some(first) = bytes.first_mut() {
            *first = (len % 5) as u8; // message types 0..4, including valid-looking ones
        }
        sim.wire.push_back((endpoint(3), endpoint(2), bytes));
    }
    sim.run();
    // Endpoints learned from authenticated traffic only, and the session still works.
    assert_eq!(
        sim.nodes[&2]
            .peer_stats(sim.now)
            .iter()
            .map(|p| p.endpoint)
            .collect::<Vec<_>>(),
        stats_before.iter().map(|p| p.endpoint).collect::<Vec<_>>()
    );
    sim.send_from_tun(1, &ipv4_packet(address(1), address(2), &[1, 2, 1]));
    sim.run();
    assert_eq!(sim.delivered.len(), 2);
}

#[test]
fn a_netmap_change_keeps_established_sessions() {
    let mut sim = Sim::new(11);
    sim.send_from_tun(1, &ipv4_packet(address(1), address(2), &[1, 2, 0]));
    sim.run();
    let handshakes_before = sim.wire.len();
    // Node 3 leaves; node 1 and 2 keep their tunnel to each other.
    for id in [1, 2] {
        let peers: Vec<Node> = [1, 2, 4]
            .into_iter()
            .filter(|&p| p != id)
            .map(describe)
            .collect();
        sim.nodes
            .get_mut(&id)
            .expect("exists")
            .set_peers(peers.iter());
    }
    sim.send_from_tun(1, &ipv4_packet(address(1), address(2), &[1, 2, 1]));
    // One data datagram, no new handshake.
    assert_eq!(sim.wire.len(), handshakes_before + 1);
    sim.run();
    assert_eq!(sim.delivered.len(), 2);
    assert_eq!(sim.nodes[&1].peer_for(address(3).into()), None);
}

#[test]
fn a_restarted_peer_gets_a_fresh_handshake_without_waiting_for_timeouts() {
    let mut sim = Sim::new(13);
    sim.send_from_tun(1, &ipv4_packet(address(1), address(2), &[1, 2, 0]));
    sim.run();
    // Node 2 restarts: same key, no sessions.
    let mut fresh = NodeState::new(&key(2), 0);
    let peers: Vec<Node> = [1, 3, 4].into_iter().map(describe).collect();
    fresh.set_peers(peers.iter());
    sim.nodes.insert(2, fresh);
    // Node 1 still has its old session and sends on it: lost, but it
    // triggers a handshake from node 2, after which traffic flows again.
    sim.send_from_tun(1, &ipv4_packet(address(1), address(2), &[1, 2, 1]));
    sim.run();
    sim.send_from_tun(1, &ipv4_packet(address(1), address(2), &[1, 2, 2]));
    sim.run();
    let got: Vec<_> = sim
        .delivered
        .iter()
        .map(|(r, _, _, p)| (*r, p.clone()))
        .collect();
    assert_eq!(got, vec![(2, vec![1, 2, 0]), (2, vec![1, 2, 2])]);
}

#[test]
fn a_peer_is_reached_on_whichever_advertised_endpoint_answers() {
    // The router advertises an address that does not work from here (its
    // private one, sorted first) and one that does (its public one).
    let private: SocketAddr = "10.0.0.4:41641".parse().expect("valid");
    let with_endpoints = |endpoints: Vec<SocketAddr>| {
        let mut router = describe(ROUTER);
        router.endpoints = endpoints;
        let peers: Vec<Node> = vec![describe(2), describe(3), router];
        let mut sim = Sim::new(17);
        sim.nodes
            .get_mut(&1)
            .expect("exists")
            .set_peers(peers.iter());
        sim.send_from_tun(
            1,
            &ipv4_packet(address(1), Ipv4Addr::new(198, 19, 1, 10), &[1, 0, 0]),
        );
        sim.run();
        sim
    };

    let sim = with_endpoints(vec![private, endpoint(ROUTER)]);

    assert_eq!(sim.delivered.len(), 1, "the packet reached the router");
    assert!(sim.lost.contains(&private), "the private address was tried");
    let kept = sim.nodes[&1]
        .peer_stats(sim.now)
        .into_iter()
        .find(|p| p.id == NodeId(ROUTER))
        .and_then(|p| p.endpoint);
    assert_eq!(
        kept,
        Some(endpoint(ROUTER)),
        "the endpoint that answered is kept"
    );

    // With only the address that does not work, nothing gets through.
    let sim = with_endpoints(vec![private]);
    assert!(sim.delivered.is_empty());
}

/// A handshake initiation for node `to` from a node holding `attacker`'s
/// key that `to` has never heard of (anyone who knows `to`'s public key,
/// which every peer does, can make these).
fn initiation_from_stranger(attacker: &PrivateKey, to: u64) -> Vec<u8> {
    let mut stranger = NodeState::new(attacker, 1);
    stranger.set_peers([&describe(to)]);
    let mut out = vec![0u8; BUF];
    let packet = ipv4_packet(Ipv4Addr::new(100, 100, 0, 1), address(to), &[0]);
    let transmit = stranger
        .handle_tun_packet(&packet, &mut out, Instant::now())
        .expect("a peer")
        .expect("an initiation");
    assert_eq!(transmit.payload[0], 1, "handshake initiation");
    transmit.payload.to_vec()
}

#[test]
fn a_handshake_with_a_bad_mac1_is_refused_before_the_peer_is_looked_up() {
    let mut sim = Sim::new(5);
    sim.send_from_tun(1, &ipv4_packet(address(1), address(2), &[1, 2, 0]));
    // The first datagram on the wire is node 1's initiation to node 2.
    let (from, to, mut initiation) = sim.wire.pop_front().expect("an initiation");
    assert_eq!((initiation[0], initiation.len(), to), (1, 148, endpoint(2)));
    // MAC1 is bytes 116..132 (WireGuard paper §5.4.4).
    initiation[120] ^= 1;
    let mut out = vec![0u8; BUF];
    let node = sim.nodes.get_mut(&2).expect("node 2");
    let delivery = node.handle_datagram(from, &initiation, &mut out, sim.now);
    assert_eq!(delivery, Delivery::Dropped(Drop::Garbage));
    assert_eq!(node.dropped().get(DropReason::Garbage), 1);
    assert_eq!(node.dropped().total(), 1);
    // The intact initiation still works.
    initiation[120] ^= 1;
    sim.wire.push_front((from, to, initiation));
    sim.run();
    assert_eq!(sim.delivered.len(), 1);
}

#[test]
fn under_a_handshake_flood_strangers_get_cookies_and_sessions_keep_going() {
    let mut sim = Sim::new(11);
    sim.send_from_tun(1, &ipv4_packet(address(1), address(2), &[1, 2, 0]));
    sim.run();
    assert_eq!(sim.delivered.len(), 1);
    let flood: Vec<Vec<u8>> = (0..250u32)
        .map(|i| {
            let mut secret = [0x77; 32];
            secret[..4].copy_from_slice(&i.to_le_bytes());
            initiation_from_stranger(&PrivateKey::from_random_bytes(secret), 2)
        })
        .collect();
    let mut cookies = 0;
    let mut unknown = 0;
    let mut delivered = 0;
    let mut out = vec![0u8; BUF];
    for (i, initiation) in flood.iter().enumerate() {
        let source = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 9, i as u8)), 5000);
        let node = sim.nodes.get_mut(&2).expect("node 2");
        match node.handle_datagram(source, initiation, &mut out, sim.now) {
            Delivery::Network(t) => {
                // A cookie reply (type 3, 64 bytes) to the sender.
                assert_eq!((t.payload[0], t.payload.len()), (3, 64));
                assert_eq!(t.destination, source);
                cookies += 1;
            }
            Delivery::Dropped(Drop::UnknownPeer) => unknown += 1,
            other => panic!("unexpected answer to a stranger's initiation: {other:?}"),
        }
        if i % 25 == 24 {
            // The established session keeps carrying data during the flood.
            // (Delivered by hand: the simulation's timers would reset the
            // rate limiter, which reads the real clock.)
            let payload = [1, 2, 1 + (i / 25) as u8];
            let packet = ipv4_packet(address(1), address(2), &payload);
            let mut sealed = vec![0u8; BUF];
            let node1 = sim.nodes.get_mut(&1).expect("node 1");
            let datagram = node1
                .handle_tun_packet(&packet, &mut sealed, sim.now)
                .expect("routed")
                .expect("sealed");
            assert_eq!(datagram.payload[0], 4, "data on the established session");
            let datagram = datagram.payload.to_vec();
            let node2 = sim.nodes.get_mut(&2).expect("node 2");
            let delivery = node2.handle_datagram(endpoint(1), &datagram, &mut out, sim.now);
            assert_eq!(delivery, Delivery::Tun(&packet));
            delivered += 1;
        }
    }
    assert!(unknown <= 100, "at most the limit are decrypted: {unknown}");
    assert_eq!(cookies + unknown, 250);
    assert_eq!(sim.nodes[&2].cookie_replies(), cookies);
    assert_eq!(delivered, 10, "every data packet got through");
    // A known peer starting a handshake now is asked for a cookie too, and
    // takes it.
    sim.send_from_tun(3, &ipv4_packet(address(3), address(2), &[3, 2, 0]));
    let (from, to, initiation) = sim.wire.pop_front().expect("an initiation");
    let node = sim.nodes.get_mut(&2).expect("node 2");
    let Delivery::Network(reply) = node.handle_datagram(from, &initiation, &mut out, sim.now)
    else {
        panic!("expected a cookie reply");
    };
    assert_eq!(reply.payload[0], 3);
    let reply = reply.payload.to_vec();
    let node = sim.nodes.get_mut(&3).expect("node 3");
    assert_eq!(
        node.handle_datagram(to, &reply, &mut out, sim.now),
        Delivery::Nothing
    );
}

/// A UDP packet; the simulation reads the sender from the first payload
/// byte, here the high byte of the source port.
fn udp_packet(source: Ipv4Addr, destination: Ipv4Addr, ports: (u16, u16)) -> Vec<u8> {
    let mut udp = Vec::new();
    udp.extend_from_slice(&ports.0.to_be_bytes());
    udp.extend_from_slice(&ports.1.to_be_bytes());
    udp.extend_from_slice(&12u16.to_be_bytes());
    udp.extend_from_slice(&[0, 0, b'd', b'a', b't', b'a']);
    ipv4_packet(source, destination, &udp)
}

#[test]
fn a_router_with_a_filter_lets_in_what_a_rule_allows_and_the_replies_to_its_own_flows() {
    use causeway_wire::{FilterDestination, FilterRule, PacketFilter, PortRange};
    let mut sim = Sim::new(9);
    let server = Ipv4Addr::new(198, 19, 1, 10);
    let mut netmap = NetmapState::default();
    netmap
        .apply(MapResponse {
            seq: 1,
            node: Some(describe(ROUTER)),
            peers: Some(vec![]),
            ..Default::default()
        })
        .expect("full map applies");
    let router = sim.nodes.get_mut(&ROUTER).expect("router exists");
    router.set_served(&netmap.served_prefixes());
    router.set_filter(Some(PacketFilter {
        rules: vec![FilterRule {
            sources: vec![IpNet::from(IpAddr::V4(address(1)))],
            destinations: vec![FilterDestination {
                prefix: "198.19.1.0/24".parse().expect("valid"),
                ports: PortRange {
                    first: 5432,
                    last: 5432,
                },
            }],
            protocols: vec![17],
        }],
    }));
    sim.send_from_tun(1, &udp_packet(address(1), server, (0x0101, 5432)));
    sim.send_from_tun(1, &udp_packet(address(1), server, (0x0102, 80)));
    sim.send_from_tun(2, &udp_packet(address(2), server, (0x0201, 5432)));
    // The router opens a flow of its own to node 3, which answers.
    sim.send_from_tun(
        ROUTER,
        &udp_packet(address(ROUTER), address(3), (0x0401, 0x0335)),
    );
    sim.run();
    sim.send_from_tun(
        3,
        &udp_packet(address(3), address(ROUTER), (0x0335, 0x0401)),
    );
    sim.run();
    let arrived: Vec<_> = sim
        .delivered
        .iter()
        .filter(|(r, ..)| *r == ROUTER)
        .map(|(_, s, d, _)| (*s, *d))
        .collect();
    assert_eq!(
        arrived,
        vec![
            (address(1).into(), server.into()),
            (address(3).into(), address(ROUTER).into())
        ]
    );
    let router = &sim.nodes[&ROUTER];
    assert_eq!(router.dropped().get(DropReason::Filtered), 2);
    assert_eq!(router.flow_stats().tracked, 1);
}

#[test]
fn a_secondary_router_accepts_for_a_route_from_the_delta_that_makes_it_primary() {
    let mut sim = Sim::new(11);
    let server = Ipv4Addr::new(198, 19, 1, 10);
    // The router as control describes it while another router is primary:
    // the route is advertised and approved (so its filter already has the
    // rules for it) but it is not among its primary routes.
    let mut secondary = describe(ROUTER);
    secondary.primary_routes.clear();
    secondary.allowed_ips.truncate(1);
    let mut netmap = NetmapState::default();
    netmap
        .apply(MapResponse {
            seq: 1,
            node: Some(secondary),
            peers: Some(vec![]),
            packet_filter: Some(causeway_wire::PacketFilter::allow_all()),
            ..Default::default()
        })
        .expect("full map applies");
    let router = sim.nodes.get_mut(&ROUTER).expect("router exists");
    router.set_served(&netmap.served_prefixes());
    router.set_filter(netmap.filter().cloned());
    // Node 1 still routes the subnet to this router (its netmap is stale).
    sim.send_from_tun(1, &udp_packet(address(1), server, (0x0101, 5432)));
    sim.run();
    let to_router = |sim: &Sim| sim.delivered.iter().filter(|d| d.0 == ROUTER).count();
    assert_eq!(to_router(&sim), 0);
    assert_eq!(
        sim.nodes[&ROUTER].dropped().get(DropReason::NotForThisNode),
        1
    );

    // Failover: the delta that makes it primary changes only the node itself.
    let changed = netmap.apply(MapResponse {
        seq: 2,
        node: Some(describe(ROUTER)),
        ..Default::default()
    });
    assert_eq!(
        changed,
        Ok(true),
        "the shell must reconfigure the data plane"
    );
    let router = sim.nodes.get_mut(&ROUTER).expect("router exists");
    router.set_served(&netmap.served_prefixes());
    sim.send_from_tun(1, &udp_packet(address(1), server, (0x0102, 5432)));
    sim.run();

    assert_eq!(to_router(&sim), 1);
    assert_eq!(
        sim.nodes[&ROUTER].dropped().get(DropReason::NotForThisNode),
        1
    );
}

/// The node that is an exit node in [`describe_with_exit_node`].
const EXIT: u64 = 3;

/// As [`describe`], with node [`EXIT`] an exit node: control gives its
/// peers `0.0.0.0/0` as its allowed IPs, so any source it writes passes
/// WireGuard's check of the inner source address.
fn describe_with_exit_node(id: u64) -> Node {
    let mut node = describe(id);
    if id == EXIT {
        let default: IpNet = "0.0.0.0/0".parse().expect("valid");
        node.allowed_ips.push(default);
        node.primary_routes.push(default);
    }
    node
}

#[test]
fn an_exit_node_cannot_reach_a_star_rule_from_an_internet_source_address() {
    use causeway_tailnet::policy::{Policy, PolicyNode, compile};
    let policy = Policy::parse(
        r#"{"hosts": {"server": "100.64.0.1"},
            "acls": [{"action": "accept", "src": ["*"], "dst": ["server:5432"]}]}"#,
    )
    .expect("valid policy");
    let nodes: Vec<PolicyNode> = (1..=NODES)
        .map(|id| {
            let node = describe_with_exit_node(id);
            PolicyNode::new(NodeId(id), [IpAddr::V4(address(id))], &[], None)
                .with_routes(node.primary_routes)
        })
        .collect();
    let ula = "fd7a:115c:a1e0::/48".parse().expect("valid prefix");
    let compiled = compile(&policy, ula, &nodes);
    let mut sim = Sim::described(13, describe_with_exit_node);
    let server = sim.nodes.get_mut(&1).expect("node 1 exists");
    server.set_served(&[IpNet::from(IpAddr::V4(address(1)))]);
    server.set_filter(Some(compiled[&NodeId(1)].filter.clone()));
    let internet = Ipv4Addr::new(203, 0, 113, 7);
    let benchmark_net = Ipv4Addr::new(198, 18, 7, 7);

    sim.send_from_tun(EXIT, &udp_packet(internet, address(1), (0x0301, 5432)));
    sim.send_from_tun(EXIT, &udp_packet(benchmark_net, address(1), (0x0302, 5432)));
    sim.send_from_tun(EXIT, &udp_packet(address(EXIT), address(1), (0x0303, 5432)));
    sim.run();

    let arrived: Vec<_> = sim
        .delivered
        .iter()
        .filter(|(r, ..)| *r == 1)
        .map(|(_, s, d, _)| (*s, *d))
        .collect();
    assert_eq!(arrived, vec![(address(EXIT).into(), address(1).into())]);
    let counts = sim.nodes[&1].dropped();
    assert_eq!(counts.get(DropReason::Filtered), 2);
    assert_eq!(counts.get(DropReason::SpoofedSource), 0);
    assert_eq!(counts.total(), 2);
}

#[test]
fn both_ends_report_handshake_and_receive_ages_that_outlive_the_session() {
    let mut sim = Sim::new(11);
    for (me, peer) in [(1, 2), (2, 1)] {
        let stats = sim.nodes[&me].peer_stats(sim.now);
        assert_eq!(stats[0].last_handshake, None, "{me}: no traffic yet");
        assert_eq!(stats[0].last_received, None, "{me}: no traffic yet");
        assert_eq!(stats[0].id, NodeId(peer));
    }
    sim.send_from_tun(1, &ipv4_packet(address(1), address(2), &[1, 2, 0]));
    sim.run();
    sim.send_from_tun(2, &ipv4_packet(address(2), address(1), &[2, 1, 0]));
    sim.run();
    assert_eq!(sim.delivered.len(), 2);
    let later = sim.now + Duration::from_secs(600);
    for (me, peer) in [(1, 2), (2, 1)] {
        let stats = sim.nodes[&me]
            .peer_stats(sim.now)
            .into_iter()
            .find(|p| p.id == NodeId(peer))
            .expect("peer listed");
        let handshake = stats.last_handshake.expect("a handshake was seen");
        let received = stats.last_received.expect("a packet was received");
        assert!(handshake < Duration::from_secs(5), "{me}: {handshake:?}");
        assert!(received <= handshake, "{me}: {received:?} > {handshake:?}");
        assert!(stats.rx_bytes > 0);
        // Ten minutes on, past the point where boringtun zeroes idle
        // session keys, the ages still count from what was seen.
        let aged = sim.nodes[&me]
            .peer_stats(later)
            .into_iter()
            .find(|p| p.id == NodeId(peer))
            .expect("peer listed");
        assert_eq!(
            aged.last_handshake,
            Some(handshake + Duration::from_secs(600))
        );
        assert_eq!(
            aged.last_received,
            Some(received + Duration::from_secs(600))
        );
    }
}

/// Runs node `id`'s timers now and queues what it sends.
fn tick(sim: &mut Sim, id: u64) {
    let now = sim.now;
    sim.nodes
        .get_mut(&id)
        .expect("node exists")
        .handle_timeout(now);
    sim.drain(id);
}

#[test]
fn warm_peers_get_a_session_and_a_round_trip_time_without_any_traffic() {
    let mut sim = Sim::new(11);
    sim.nodes
        .get_mut(&1)
        .expect("node 1")
        .set_warm([2, 3, 99].map(NodeId).into());
    tick(&mut sim, 1);
    sim.run();
    let stats = sim.nodes[&1].peer_stats(sim.now);
    let measured: Vec<(u64, bool, bool)> = stats
        .iter()
        .map(|p| (p.id.0, p.last_handshake.is_some(), p.rtt.is_some()))
        .collect();
    assert_eq!(
        measured,
        [(2, true, true), (3, true, true), (4, false, false)],
        "only the warm peers (99 is no peer) get a handshake, initiated by node 1"
    );
    assert!(sim.delivered.is_empty(), "keepalives reach no TUN device");

    // Nothing more until the keepalive interval has passed; then one
    // keepalive (an empty data message: type 4, 32 bytes) per warm peer.
    sim.now += causeway_mesh::TICK;
    tick(&mut sim, 1);
    assert!(sim.wire.is_empty(), "{:?}", sim.wire);
    sim.now += causeway_mesh::WARM_KEEPALIVE;
    tick(&mut sim, 1);
    let sent: Vec<(u64, u8, usize)> = sim
        .wire
        .iter()
        .map(|(_, to, d)| (owner_of(*to), d[0], d.len()))
        .collect();
    assert_eq!(sent, [(2, 4, 32), (3, 4, 32)]);
    sim.run();
    assert!(sim.delivered.is_empty());
}
