//! [`NodeState`]: the packet path of one node.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use causeway_wire::{Node, NodeId, PacketFilter, PrivateKey, PublicKey};
use ip_network::IpNetwork;
use ip_network_table::IpNetworkTable;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::conntrack::{DEFAULT_FLOW_CAPACITY, FlowStats};
use crate::filter::{FilterDrop, PacketFilterState};
use crate::packet::parse_ip_header;
use crate::tunnel::{Addressee, Identity, Output, Tunnel};
use crate::via6::{
    DEFAULT_VIA6_FLOW_CAPACITY, Via6ConfigError, Via6Outcome, Via6Refusal, Via6State, Via6Stats,
};

/// How often the shell should call [`NodeState::handle_timeout`]; boringtun's
/// own timers have a resolution of about this (WireGuard paper §6.1).
pub const TICK: Duration = Duration::from_millis(250);

/// The handshake rate limiter counts per second.
const RATE_LIMIT_WINDOW: Duration = Duration::from_secs(1);

/// Session indices are 24 bits; the low 8 bits belong to boringtun.
const SLOT_MASK: u32 = 0x00ff_ffff;

/// How long an unanswered handshake initiation stands (WireGuard paper §6.4).
const REKEY_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a peer kept warm ([`NodeState::set_warm`]) gets a keepalive:
/// WireGuard's usual persistent-keepalive interval, under the 30 s that
/// the shortest common NAT mappings last. Keepalives need no public-key
/// work; once the session expires (REJECT_AFTER_TIME, 180 s, §6.2) the
/// next keepalive starts a new handshake, which measures the round-trip
/// time again. A warm peer thus costs about one handshake every three
/// minutes and one 32-byte datagram every 25 s.
pub const WARM_KEEPALIVE: Duration = Duration::from_secs(25);

/// WireGuard message type 1 (WireGuard paper §5.4.2).
const HANDSHAKE_INIT: u8 = 1;

/// WireGuard message type 4, transport data (§5.4.6).
const DATA: u8 = 4;

/// A datagram to send on the node's UDP socket.
#[derive(Debug, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// Where to.
    pub destination: SocketAddr,
    /// The WireGuard message.
    pub payload: &'a [u8],
}

/// What became of a datagram from the network.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery<'a> {
    /// A decrypted IP packet to write to the TUN device.
    Tun(&'a [u8]),
    /// A reply (handshake response, cookie) to send back.
    Network(Transmit<'a>),
    /// Valid, but nothing to do (a keepalive, for instance).
    Nothing,
    /// Discarded, and why.
    Dropped(Drop),
}

/// Why a packet was discarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drop {
    /// Not a WireGuard message, or one that fails to authenticate (this
    /// includes a handshake initiation whose MAC1 is not for this node's
    /// key, refused before any X25519 work).
    Garbage,
    /// A handshake from a key, or for a session, we do not know.
    UnknownPeer,
    /// The inner source address does not belong to the peer that sent it.
    SpoofedSource {
        /// The peer that sent it.
        peer: NodeId,
        /// The address it claimed.
        source: IpAddr,
    },
    /// The packet filter does not allow it, and it answers no flow this
    /// node opened.
    Filtered,
    /// The destination is neither one of the node's own addresses nor a
    /// prefix it serves.
    NotForThisNode(IpAddr),
    /// The IP or transport header cannot be read far enough to filter the
    /// packet (truncated, malformed, or a fragment that could overwrite
    /// another's header).
    BadHeader,
    /// No peer is responsible for the destination.
    NoRoute(IpAddr),
    /// The peer's endpoint is not known yet.
    NoEndpoint(NodeId),
    /// The inner packet is not IPv4 or IPv6.
    NotIp,
    /// WireGuard refused it (replay, expired session, …).
    Tunnel(String),
    /// A 4via6 packet that cannot be translated (see [`Via6Refusal`];
    /// [`NodeState::via6_stats`] counts them per reason).
    Via6(Via6Refusal),
}

impl Drop {
    /// The reason without its details, for counting.
    pub fn reason(&self) -> DropReason {
        match self {
            Drop::Garbage => DropReason::Garbage,
            Drop::UnknownPeer => DropReason::UnknownPeer,
            Drop::SpoofedSource { .. } => DropReason::SpoofedSource,
            Drop::Filtered => DropReason::Filtered,
            Drop::NotForThisNode(_) => DropReason::NotForThisNode,
            Drop::BadHeader => DropReason::BadHeader,
            Drop::NoRoute(_) => DropReason::NoRoute,
            Drop::NoEndpoint(_) => DropReason::NoEndpoint,
            Drop::NotIp => DropReason::NotIp,
            Drop::Tunnel(_) => DropReason::Tunnel,
            Drop::Via6(_) => DropReason::Via6,
        }
    }
}

/// Why packets were discarded, without details: what the counters count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// See [`Drop::Garbage`].
    Garbage,
    /// See [`Drop::UnknownPeer`].
    UnknownPeer,
    /// See [`Drop::SpoofedSource`].
    SpoofedSource,
    /// See [`Drop::Filtered`].
    Filtered,
    /// See [`Drop::NotForThisNode`].
    NotForThisNode,
    /// See [`Drop::BadHeader`].
    BadHeader,
    /// See [`Drop::NoRoute`].
    NoRoute,
    /// See [`Drop::NoEndpoint`].
    NoEndpoint,
    /// See [`Drop::NotIp`].
    NotIp,
    /// See [`Drop::Tunnel`].
    Tunnel,
    /// See [`Drop::Via6`].
    Via6,
}

impl DropReason {
    /// Every reason, in the order counters are reported.
    pub const ALL: [DropReason; 11] = [
        DropReason::Garbage,
        DropReason::UnknownPeer,
        DropReason::SpoofedSource,
        DropReason::Filtered,
        DropReason::NotForThisNode,
        DropReason::BadHeader,
        DropReason::NoRoute,
        DropReason::NoEndpoint,
        DropReason::NotIp,
        DropReason::Tunnel,
        DropReason::Via6,
    ];

    /// The reason's name in status output and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Garbage => "garbage",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::SpoofedSource => "spoofed_source",
            DropReason::Filtered => "filtered",
            DropReason::NotForThisNode => "not_for_this_node",
            DropReason::BadHeader => "bad_header",
            DropReason::NoRoute => "no_route",
            DropReason::NoEndpoint => "no_endpoint",
            DropReason::NotIp => "not_ip",
            DropReason::Tunnel => "tunnel",
            DropReason::Via6 => "via6",
        }
    }
}

/// Packets discarded so far, per reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropCounts([u64; DropReason::ALL.len()]);

impl DropCounts {
    /// The count for one reason.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize]
    }

    /// Every reason with its count, in [`DropReason::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.into_iter().map(|r| (r, self.get(r)))
    }

    /// All reasons together.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    fn add(&mut self, reason: DropReason) {
        self.0[reason as usize] += 1;
    }
}

/// Counters for `appliance status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStats {
    /// The peer's id.
    pub id: NodeId,
    /// Its tailnet name.
    pub name: String,
    /// Its WireGuard key.
    pub node_key: PublicKey,
    /// Where we send to.
    pub endpoint: Option<SocketAddr>,
    /// Time since the last completed handshake, kept after boringtun drops
    /// the session's keys (an idle tunnel, REJECT_AFTER_TIME × 3 later).
    pub last_handshake: Option<Duration>,
    /// Time since the last authenticated datagram from the peer (data,
    /// keepalive or handshake): the data plane's liveness.
    pub last_received: Option<Duration>,
    /// Payload bytes sent.
    pub tx_bytes: u64,
    /// Payload bytes received.
    pub rx_bytes: u64,
    /// Round-trip time of the last handshake this node initiated.
    pub rtt: Option<Duration>,
    /// What it may send from and receive for.
    pub allowed_ips: Vec<IpNet>,
}

/// The packet path of one node: its peers, their tunnels, and cryptokey
/// routing (WireGuard paper §2).
pub struct NodeState {
    identity: Identity,
    public_key: PublicKey,
    peers: BTreeMap<NodeId, Peer>,
    by_key: HashMap<PublicKey, NodeId>,
    by_slot: HashMap<u32, NodeId>,
    routes: IpNetworkTable<NodeId>,
    filter: PacketFilterState,
    next_slot: u32,
    work: VecDeque<Work>,
    next_tick: Option<Instant>,
    next_rate_reset: Option<Instant>,
    dropped: DropCounts,
    cookie_replies: u64,
    /// Copies of a handshake initiation for a peer's other endpoints.
    sprays: VecDeque<(SocketAddr, Vec<u8>)>,
    /// Peers kept warm with keepalives (see [`NodeState::set_warm`]).
    warm: BTreeSet<NodeId>,
    /// 4via6 translation, when this node is a router for 4via6 routes.
    via6: Via6State,
    /// Where 4via6 translates to; reused, so no allocation per packet.
    via6_scratch: Vec<u8>,
}

struct Peer {
    node: Node,
    tunnel: Tunnel,
    slot: u32,
    endpoint: Option<SocketAddr>,
    /// Packets may wait in the tunnel for a handshake to finish.
    queued: bool,
    /// When we last sent a handshake initiation.
    initiated_at: Option<Instant>,
    /// When the last handshake completed, as far as we saw.
    handshake_at: Option<Instant>,
    /// When the last authenticated datagram arrived.
    received_at: Option<Instant>,
    /// When we last sent it a keepalive to keep it warm.
    warmed_at: Option<Instant>,
}

impl Peer {
    /// Records when the tunnel's last handshake completed. boringtun only
    /// reports it while the session's keys live (they are zeroed
    /// REJECT_AFTER_TIME × 3 after the last handshake: the WireGuard
    /// paper's timers, section 6), so the status would say "never" for an idle tunnel that
    /// carried traffic; we keep the time ourselves.
    fn note_handshake(&mut self, now: Instant) {
        if let Some(since) = self.tunnel.since_handshake() {
            self.handshake_at = self.handshake_at.max(now.checked_sub(since));
        }
    }
}

#[derive(Clone, Copy)]
enum Work {
    /// Send packets queued during a handshake.
    Flush(NodeId),
    /// Run the tunnel's timers.
    Timers(NodeId),
    /// Send a keepalive to a warm peer.
    Keepalive(NodeId),
}

impl NodeState {
    /// A node with this WireGuard key and no peers.
    ///
    /// `seed` picks where session indices start, so a restarted node does
    /// not reuse the indices its peers still hold sessions for.
    pub fn new(key: &PrivateKey, seed: u64) -> Self {
        Self {
            identity: Identity::new(key),
            public_key: key.public_key(),
            peers: BTreeMap::new(),
            by_key: HashMap::new(),
            by_slot: HashMap::new(),
            routes: IpNetworkTable::new(),
            filter: PacketFilterState::new(DEFAULT_FLOW_CAPACITY),
            next_slot: (seed as u32) & SLOT_MASK,
            work: VecDeque::new(),
            next_tick: None,
            next_rate_reset: None,
            dropped: DropCounts::default(),
            cookie_replies: 0,
            sprays: VecDeque::new(),
            warm: BTreeSet::new(),
            via6: Via6State::new(DEFAULT_VIA6_FLOW_CAPACITY),
            via6_scratch: Vec::new(),
        }
    }

    /// The node's WireGuard public key.
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// Replaces the peer set. Peers whose key is unchanged keep their
    /// tunnel, so established sessions survive netmap changes.
    pub fn set_peers<'n>(&mut self, peers: impl IntoIterator<Item = &'n Node>) {
        let mut next: BTreeMap<NodeId, Peer> = BTreeMap::new();
        for node in peers {
            if node.node_key == self.public_key {
                continue;
            }
            let peer = match self.peers.remove(&node.id) {
                Some(mut old) if old.node.node_key == node.node_key => {
                    if old.node.endpoints != node.endpoints {
                        old.endpoint = match old.endpoint {
                            Some(learned) if node.endpoints.contains(&learned) => Some(learned),
                            _ => node.endpoints.first().copied(),
                        };
                    }
                    old.node = node.clone();
                    old
                }
                _ => {
                    let slot = self.allocate_slot();
                    Peer {
                        tunnel: Tunnel::new(&self.identity, &node.node_key, slot),
                        slot,
                        endpoint: node.endpoints.first().copied(),
                        queued: false,
                        initiated_at: None,
                        handshake_at: None,
                        received_at: None,
                        warmed_at: None,
                        node: node.clone(),
                    }
                }
            };
            next.insert(node.id, peer);
        }
        self.peers = next;
        self.reindex();
    }

    /// Keeps sessions to these peers up whether or not traffic flows: a
    /// keepalive every [`WARM_KEEPALIVE`], which starts a handshake when
    /// there is no session. A client choosing its exit node by path
    /// uses it so every candidate has a session and a measured round-trip
    /// time ([`PeerStats::rtt`]). Ids that are not peers are ignored.
    pub fn set_warm(&mut self, peers: BTreeSet<NodeId>) {
        self.warm = peers;
    }

    /// Sets the packet filter compiled by control; `None` accepts every
    /// packet that passes the source and destination checks. Flows this
    /// node opened stay tracked, so their replies keep passing; flows a
    /// peer opened are judged by the new filter from the next packet on
    /// (see the `filter` module).
    pub fn set_filter(&mut self, filter: Option<PacketFilter>) {
        self.filter.set_filter(filter.as_ref());
    }

    /// Sets what this node accepts packets for: its own addresses and the
    /// routes it serves, that is the `addresses` and `primary_routes` of the
    /// node itself in the netmap ([`crate::NetmapState::served_prefixes`]).
    /// A decrypted packet for anything else is dropped as
    /// [`Drop::NotForThisNode`]. Until this is first called, destinations
    /// are not checked.
    pub fn set_served(&mut self, prefixes: &[IpNet]) {
        self.filter.set_served(prefixes);
    }

    /// Counters of the packet filter's flow table.
    pub fn flow_stats(&self) -> FlowStats {
        self.filter.flow_stats()
    }

    /// Makes this node translate 4via6 (see the `via6` module): IPv6
    /// packets for the 4via6 addresses of these (site, IPv4 range) pairs in
    /// the tailnet whose /48 is `ula` go to the TUN device as IPv4, and
    /// their replies come back to the client as IPv6. An empty list turns
    /// it off. The packet filter still judges the IPv6 packet, and the
    /// node must serve the 4via6 routes ([`NodeState::set_served`]). On an
    /// error nothing changes.
    pub fn set_via6(
        &mut self,
        ula: Ipv6Net,
        served: &[(u16, Ipv4Net)],
    ) -> Result<(), Via6ConfigError> {
        self.via6.configure(ula, served)
    }

    /// Counters of 4via6 translation.
    pub fn via6_stats(&self) -> Via6Stats {
        self.via6.stats()
    }

    /// Encrypts a packet read from the TUN device for the peer that owns
    /// its destination. `out` must be at least `packet.len() + 72` and 148
    /// bytes long (a 4via6 reply grows by up to 40 bytes as IPv6).
    pub fn handle_tun_packet<'a>(
        &mut self,
        packet: &[u8],
        out: &'a mut [u8],
        now: Instant,
    ) -> Result<Option<Transmit<'a>>, Drop> {
        let mut scratch = std::mem::take(&mut self.via6_scratch);
        let result = match self.via6.to_ipv6(packet, &mut scratch, now) {
            Via6Outcome::NotVia6 => self.encrypt(packet, out, now),
            Via6Outcome::Translated => self.encrypt(&scratch, out, now),
            Via6Outcome::Refused(refusal) => Err(self.drop(Drop::Via6(refusal))),
        };
        self.via6_scratch = scratch;
        result
    }

    fn encrypt<'a>(
        &mut self,
        packet: &[u8],
        out: &'a mut [u8],
        now: Instant,
    ) -> Result<Option<Transmit<'a>>, Drop> {
        let header = parse_ip_header(packet).ok_or(Drop::NotIp)?;
        let Some((_, &id)) = self.routes.longest_match(header.destination) else {
            return Err(self.drop(Drop::NoRoute(header.destination)));
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return Err(self.drop(Drop::NoRoute(header.destination)));
        };
        self.filter.outbound(packet, now);
        let output = peer.tunnel.encapsulate(packet, out);
        let endpoint = peer.endpoint;
        if let Output::Network(range) = &output
            && out.get(range.start) == Some(&HANDSHAKE_INIT)
        {
            // A handshake initiation instead of data: the packet is queued.
            peer.queued = true;
            peer.initiated_at = Some(now);
            let peer = &*peer;
            spray_initiation(&mut self.sprays, peer, &out[range.clone()]);
        }
        match output {
            Output::Network(range) => match endpoint {
                Some(destination) => Ok(Some(Transmit {
                    destination,
                    payload: &out[range],
                })),
                None => Err(self.drop(Drop::NoEndpoint(id))),
            },
            Output::Done | Output::Tunnel(..) => Ok(None),
            Output::Error(e) => Err(self.drop(Drop::Tunnel(format!("{e:?}")))),
        }
    }

    /// Handles a datagram that arrived on the UDP socket from `from`.
    pub fn handle_datagram<'a>(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        out: &'a mut [u8],
        now: Instant,
    ) -> Delivery<'a> {
        let id = match self.identity.addressee(from.ip(), datagram, out) {
            Addressee::Initiator(key) => {
                let id = self.by_key.get(&key).copied();
                if let Some(peer) = id.and_then(|id| self.peers.get(&id))
                    && self.public_key < key
                    && peer
                        .initiated_at
                        .is_some_and(|t| now.saturating_duration_since(t) < REKEY_TIMEOUT)
                {
                    // Both sides initiated at once. If each answered the
                    // other, both would hold responder sessions and neither
                    // could send until REKEY_TIMEOUT; the lower key keeps its
                    // own initiation instead.
                    return Delivery::Nothing;
                }
                id
            }
            Addressee::Index(slot) => self.by_slot.get(&(slot & SLOT_MASK)).copied(),
            Addressee::Cookie(range) => {
                self.cookie_replies += 1;
                return Delivery::Network(Transmit {
                    destination: from,
                    payload: &out[range],
                });
            }
            Addressee::Refused => return Delivery::Dropped(self.drop(Drop::Garbage)),
        };
        let Some(peer) = id.and_then(|id| self.peers.get_mut(&id)) else {
            return self.rescue_session(from, datagram, out, now);
        };
        let id = peer.node.id;
        let output = peer.tunnel.decapsulate(Some(from.ip()), datagram, out);
        if !matches!(output, Output::Error(_)) {
            // Authenticated: this is where the peer is now (roaming, §2.1).
            peer.endpoint = Some(from);
            peer.received_at = Some(now);
            peer.note_handshake(now);
        }
        let session_confirmed = match &output {
            Output::Tunnel(..) | Output::Done => true,
            Output::Network(range) => out.get(range.start) == Some(&DATA),
            Output::Error(_) => false,
        };
        if session_confirmed {
            // Our initiation, if any, is settled; the tie-break no longer applies.
            peer.initiated_at = None;
        }
        if matches!(output, Output::Tunnel(..) | Output::Done) && std::mem::take(&mut peer.queued) {
            // Data arrived, so a session is confirmed: packets queued while
            // we were initiating can go (the peer may have won the race).
            self.work.push_back(Work::Flush(id));
        }
        match output {
            Output::Done => Delivery::Nothing,
            Output::Network(range) => {
                // After a handshake response arrives, boringtun answers with a
                // keepalive on the new session: now queued packets can go.
                // (After we answer an initiation, they cannot: a responder
                // waits for the initiator's first data, §5.4.4.)
                let confirmed = out.get(range.start) == Some(&DATA);
                if confirmed
                    && !self
                        .work
                        .iter()
                        .any(|w| matches!(w, Work::Flush(f) if *f == id))
                {
                    self.work.push_back(Work::Flush(id));
                }
                Delivery::Network(Transmit {
                    destination: from,
                    payload: &out[range],
                })
            }
            Output::Tunnel(range, source) => {
                if self.routes.longest_match(source).map(|(_, &owner)| owner) != Some(id) {
                    return Delivery::Dropped(self.drop(Drop::SpoofedSource { peer: id, source }));
                }
                if let Err(refused) = self.filter.inbound(&out[range.clone()], now) {
                    let why = match refused {
                        FilterDrop::NotForThisNode(destination) => {
                            Drop::NotForThisNode(destination)
                        }
                        FilterDrop::BadHeader => Drop::BadHeader,
                        FilterDrop::NotAllowed => Drop::Filtered,
                    };
                    return Delivery::Dropped(self.drop(why));
                }
                self.deliver(id, range, out, now)
            }
            Output::Error(WireGuardError::NoCurrentSession | WireGuardError::WrongIndex) => {
                self.rescue_session(from, datagram, out, now)
            }
            Output::Error(e) => Delivery::Dropped(self.drop(Drop::Tunnel(format!("{e:?}")))),
        }
    }

    /// A decrypted packet that passed the source check and the filter:
    /// for the TUN device as it is, or translated from 4via6.
    fn deliver<'a>(
        &mut self,
        id: NodeId,
        range: std::ops::Range<usize>,
        out: &'a mut [u8],
        now: Instant,
    ) -> Delivery<'a> {
        if !self.via6.is_enabled() {
            return Delivery::Tun(&out[range]);
        }
        let client = self.peers.get(&id).and_then(|peer| {
            peer.node.addresses.iter().find_map(|a| match a.addr() {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None::<Ipv4Addr>,
            })
        });
        let mut scratch = std::mem::take(&mut self.via6_scratch);
        let outcome = self
            .via6
            .to_ipv4(&out[range.clone()], client, &mut scratch, now);
        let delivery = match outcome {
            Via6Outcome::NotVia6 => Delivery::Tun(&out[range]),
            Via6Outcome::Refused(refusal) => Delivery::Dropped(self.drop(Drop::Via6(refusal))),
            Via6Outcome::Translated => {
                // IPv4 is shorter than the IPv6 it came from: it fits.
                let end = range.start + scratch.len();
                match out.get_mut(range.start..end) {
                    Some(slot) if end <= range.end => {
                        slot.copy_from_slice(&scratch);
                        Delivery::Tun(&out[range.start..end])
                    }
                    _ => Delivery::Dropped(self.drop(Drop::Via6(Via6Refusal::Malformed))),
                }
            }
        };
        self.via6_scratch = scratch;
        delivery
    }

    /// A message for a session we do not have, from where a known peer
    /// lives: we probably restarted and lost our sessions while the peer
    /// kept its own. Rather than leave the peer sending into the void until
    /// its keepalive timeout (KEEPALIVE + REKEY_TIMEOUT, 15 s), start a
    /// handshake at once, at most once per [`REKEY_TIMEOUT`] per peer.
    fn rescue_session<'a>(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        out: &'a mut [u8],
        now: Instant,
    ) -> Delivery<'a> {
        let is_data = datagram.first() == Some(&DATA);
        let peer = self
            .peers
            .values_mut()
            .find(|p| p.endpoint == Some(from) || p.node.endpoints.contains(&from));
        let Some(peer) = peer.filter(|_| is_data) else {
            return Delivery::Dropped(self.drop(Drop::UnknownPeer));
        };
        if peer
            .initiated_at
            .is_some_and(|t| now.saturating_duration_since(t) < REKEY_TIMEOUT)
        {
            return Delivery::Dropped(self.drop(Drop::UnknownPeer));
        }
        peer.initiated_at = Some(now);
        match peer.tunnel.initiate(out) {
            Output::Network(range) => Delivery::Network(Transmit {
                destination: from,
                payload: &out[range],
            }),
            Output::Done | Output::Tunnel(..) | Output::Error(_) => {
                Delivery::Dropped(self.drop(Drop::UnknownPeer))
            }
        }
    }

    /// Advances timers. Call at [`NodeState::poll_timeout`], then drain
    /// [`NodeState::poll_transmit`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_rate_reset.is_none_or(|t| now >= t) {
            self.identity.reset_rate_limit();
            self.next_rate_reset = Some(now + RATE_LIMIT_WINDOW);
        }
        if self.next_tick.is_none_or(|t| now >= t) {
            self.filter.handle_timeout(now);
            self.via6.handle_timeout(now);
            self.work
                .extend(self.peers.keys().map(|&id| Work::Timers(id)));
            for &id in &self.warm {
                let Some(peer) = self.peers.get_mut(&id) else {
                    continue;
                };
                if peer
                    .warmed_at
                    .is_none_or(|t| now.saturating_duration_since(t) >= WARM_KEEPALIVE)
                {
                    peer.warmed_at = Some(now);
                    self.work.push_back(Work::Keepalive(id));
                }
            }
            self.next_tick = Some(now + TICK);
        }
    }

    /// When [`NodeState::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self, now: Instant) -> Instant {
        self.next_tick.unwrap_or(now)
    }

    /// The next datagram to send, from handshakes, timers or packets queued
    /// during a handshake.
    pub fn poll_transmit<'a>(&mut self, out: &'a mut [u8], now: Instant) -> Option<Transmit<'a>> {
        if let Some((destination, initiation)) = self.sprays.pop_front() {
            let payload = out.get_mut(..initiation.len())?;
            payload.copy_from_slice(&initiation);
            return Some(Transmit {
                destination,
                payload,
            });
        }
        while let Some(work) = self.work.pop_front() {
            let (Work::Flush(id) | Work::Timers(id) | Work::Keepalive(id)) = work;
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            let output = match work {
                Work::Flush(_) => peer.tunnel.decapsulate(None, &[], out),
                Work::Timers(_) => peer.tunnel.update_timers(out),
                Work::Keepalive(_) => peer.tunnel.keepalive(out),
            };
            peer.note_handshake(now);
            let Output::Network(range) = output else {
                continue;
            };
            if out.get(range.start) == Some(&HANDSHAKE_INIT) {
                peer.initiated_at = Some(now);
                // boringtun queued the keepalive behind the handshake.
                peer.queued |= matches!(work, Work::Keepalive(_));
                spray_initiation(&mut self.sprays, peer, &out[range.clone()]);
            }
            if matches!(work, Work::Flush(_)) {
                // More may be queued; come back to this peer.
                self.work.push_front(work);
            }
            if let Some(destination) = peer.endpoint {
                return Some(Transmit {
                    destination,
                    payload: &out[range],
                });
            }
            self.dropped.add(DropReason::NoEndpoint);
        }
        None
    }

    /// Counters per peer at `now`, sorted by id.
    pub fn peer_stats(&self, now: Instant) -> Vec<PeerStats> {
        let age = |at: Option<Instant>| at.map(|t| now.saturating_duration_since(t));
        self.peers
            .values()
            .map(|p| {
                let (tx, rx) = p.tunnel.bytes();
                PeerStats {
                    id: p.node.id,
                    name: p.node.name.clone(),
                    node_key: p.node.node_key,
                    endpoint: p.endpoint,
                    last_handshake: age(p.handshake_at),
                    last_received: age(p.received_at),
                    tx_bytes: tx as u64,
                    rx_bytes: rx as u64,
                    rtt: p.tunnel.rtt(),
                    allowed_ips: p.node.allowed_ips.clone(),
                }
            })
            .collect()
    }

    /// Packets discarded so far, per reason.
    pub fn dropped(&self) -> &DropCounts {
        &self.dropped
    }

    /// Cookie replies sent so far: handshake initiations answered without
    /// any X25519 work because the node was under load.
    pub fn cookie_replies(&self) -> u64 {
        self.cookie_replies
    }

    /// The peer responsible for an address (cryptokey routing).
    pub fn peer_for(&self, address: IpAddr) -> Option<NodeId> {
        self.routes.longest_match(address).map(|(_, &id)| id)
    }

    fn drop(&mut self, why: Drop) -> Drop {
        self.dropped.add(why.reason());
        tracing::trace!(reason = ?why, "packet dropped");
        why
    }

    fn allocate_slot(&mut self) -> u32 {
        loop {
            let slot = self.next_slot & SLOT_MASK;
            self.next_slot = self.next_slot.wrapping_add(1);
            if slot != 0
                && !self.by_slot.contains_key(&slot)
                && !self.peers.values().any(|p| p.slot == slot)
            {
                return slot;
            }
        }
    }

    fn reindex(&mut self) {
        self.by_key = self
            .peers
            .iter()
            .map(|(&id, p)| (p.node.node_key, id))
            .collect();
        self.by_slot = self.peers.iter().map(|(&id, p)| (p.slot, id)).collect();
        let mut routes = IpNetworkTable::new();
        for (&id, peer) in &self.peers {
            for net in &peer.node.allowed_ips {
                if let Some(network) = to_network(net) {
                    routes.insert(network, id);
                }
            }
        }
        self.routes = routes;
    }
}

/// Queues copies of a handshake initiation for every endpoint of `peer`
/// other than the one it is sent to.
///
/// A node advertises every address it might be reached on (interface
/// addresses, the cloud's public address, the address STUN saw), and only
/// some of them work from here: a private address works inside its VPC, the
/// public one from outside. Sending the initiation to all of them costs a
/// few 148-byte datagrams per handshake (one every two minutes per peer,
/// WireGuard paper §6.1); whichever copy arrives first is answered, the
/// others fail the responder's replay check (TAI64N timestamp, §5.4.2), and
/// the answer's source becomes the peer's endpoint (roaming, §2.1). So the
/// path that answers is the one kept, and each rekey re-chooses it.
fn spray_initiation(sprays: &mut VecDeque<(SocketAddr, Vec<u8>)>, peer: &Peer, initiation: &[u8]) {
    let candidates = peer.node.endpoints.iter().copied();
    for destination in candidates.filter(|e| Some(*e) != peer.endpoint) {
        sprays.push_back((destination, initiation.to_vec()));
    }
}

pub(crate) fn to_network(net: &IpNet) -> Option<IpNetwork> {
    let net = net.trunc();
    IpNetwork::new(net.addr(), net.prefix_len()).ok()
}
