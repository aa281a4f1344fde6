//! [`PacketFilterState`]: what a node lets in from its peers.
//!
//! Filters are destination-side, as in Tailscale: control compiles the
//! policy into each node's [`PacketFilter`], which says which sources may
//! open flows to the node's own addresses and to the prefixes it serves
//! (as a subnet router or exit node). Every decrypted packet is checked, in
//! this order:
//!
//! 1. Its destination must be one of the node's own addresses or a prefix it
//!    serves, once the node has been told them ([`PacketFilterState::set_served`]);
//!    otherwise it is not for this node.
//! 2. A fragment other than the first passes: it carries no ports, and the
//!    receiver cannot reassemble it without the first fragment, which was
//!    checked with its ports. A first fragment too short to hold its
//!    transport header, and an IPv4 TCP fragment at offset 8 bytes, are
//!    refused as bad headers (RFC 1858, RFC 7112). This is Tailscale's
//!    choice too.
//! 3. A reply to a flow this node opened passes (connection tracking, see
//!    the `conntrack` module for what opens a flow and the timeouts); so
//!    does an ICMP error quoting a packet of such a flow, or of a flow the
//!    filter lets the far end open.
//! 4. Otherwise a rule must allow it: the source in the rule's sources, the
//!    destination in one of its destination prefixes, the protocol in its
//!    list, and for TCP, UDP and SCTP the destination port in that prefix's
//!    range. ICMP and other protocols without ports match on addresses.
//!
//! Replacing the filter keeps the flow table: flows this node opened keep
//! working whatever the new filter says, since a filter governs who may open
//! flows *to* the node. Flows a peer opened are judged packet by packet
//! against the filter in force, so a new filter that refuses them cuts them
//! off at once. (Tailscale keeps its tracked UDP flows across a filter
//! change too, but passes every TCP packet without SYN, so established
//! connections a peer opened outlive a filter that no longer allows them.)
//!
//! Rules are indexed by source prefix: a lookup visits only the rules whose
//! sources contain the packet's source, not every rule. Where many rules
//! share a source prefix, their port destinations are indexed again by
//! block of 256 ports.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::time::Instant;

use causeway_wire::{PacketFilter, PortRange};
use ip_network_table::IpNetworkTable;
use ipnet::IpNet;

use crate::conntrack::{FlowKey, FlowStats, FlowTable};
use crate::packet::{Flow, PacketKind, parse_flow, parse_ip_header, protocol};

/// Why the filter refused a packet from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterDrop {
    /// The destination is neither the node's own address nor a prefix it
    /// serves.
    NotForThisNode(IpAddr),
    /// The headers cannot be read far enough to judge the packet.
    BadHeader,
    /// No rule allows it, and it answers no tracked flow.
    NotAllowed,
}

/// A node's packet filter with its connection tracking.
pub struct PacketFilterState {
    rules: Option<CompiledRules>,
    served: Option<IpNetworkTable<()>>,
    flows: FlowTable,
}

impl PacketFilterState {
    /// No rules (every packet passes), destinations not checked, and room
    /// for `flow_capacity` tracked flows.
    pub fn new(flow_capacity: NonZeroUsize) -> Self {
        Self {
            rules: None,
            served: None,
            flows: FlowTable::new(flow_capacity),
        }
    }

    /// Replaces the rules; `None` lets every packet in (the source and
    /// destination checks still apply). Tracked flows are kept.
    pub fn set_filter(&mut self, filter: Option<&PacketFilter>) {
        self.rules = filter.map(CompiledRules::compile);
    }

    /// Sets the destinations this node accepts packets for: its own
    /// addresses and the routes it serves (0.0.0.0/0 and ::/0 for an exit
    /// node). Until this is called, every destination is accepted.
    pub fn set_served(&mut self, prefixes: &[IpNet]) {
        let mut served = IpNetworkTable::new();
        for prefix in prefixes {
            if let Some(network) = crate::node::to_network(prefix) {
                served.insert(network, ());
            }
        }
        self.served = Some(served);
    }

    /// Judges a decrypted packet from a peer.
    pub fn inbound(&mut self, packet: &[u8], now: Instant) -> Result<(), FilterDrop> {
        if let Some(served) = &self.served {
            let header = parse_ip_header(packet).ok_or(FilterDrop::BadHeader)?;
            if served.longest_match(header.destination).is_none() {
                return Err(FilterDrop::NotForThisNode(header.destination));
            }
        }
        let Some(rules) = &self.rules else {
            return Ok(());
        };
        let summary = parse_flow(packet).map_err(|_| FilterDrop::BadHeader)?;
        let flow = summary.flow;
        match summary.kind {
            PacketKind::LaterFragment => return Ok(()),
            PacketKind::Ports { .. } | PacketKind::EchoReply | PacketKind::Other => {
                if self.flows.answer(FlowKey::inbound(&flow), now) {
                    return Ok(());
                }
            }
            PacketKind::IcmpError(Some(quoted)) => {
                // An error goes to the quoted packet's sender, about a flow
                // that either side may legitimately have open.
                let q = quoted.flow;
                if q.source == flow.destination
                    && (self.flows.contains(FlowKey::outbound(&q), now)
                        || rules.allows(&reversed(&q)))
                {
                    return Ok(());
                }
            }
            PacketKind::EchoRequest | PacketKind::IcmpOther | PacketKind::IcmpError(None) => {}
        }
        if rules.allows(&flow) {
            Ok(())
        } else {
            Err(FilterDrop::NotAllowed)
        }
    }

    /// Notes a packet this node sends to a peer: a TCP SYN, an ICMP echo
    /// request, or a datagram of UDP, SCTP or a protocol without ports
    /// opens a flow (or refreshes it). A datagram the filter would have let
    /// the peer send the other way opens nothing: it is most likely a reply
    /// on a flow the peer opened, and tracking it as ours would let that
    /// flow outlive a filter that stops allowing it.
    pub fn outbound(&mut self, packet: &[u8], now: Instant) {
        let Ok(summary) = parse_flow(packet) else {
            return;
        };
        let key = FlowKey::outbound(&summary.flow);
        match summary.kind {
            PacketKind::Ports { opens } if summary.flow.protocol == protocol::TCP => {
                if opens {
                    self.flows.open(key, now);
                } else {
                    self.flows.refresh(key, now);
                }
            }
            PacketKind::EchoRequest => self.flows.open(key, now),
            PacketKind::Ports { .. } | PacketKind::Other => {
                if self.flows.refresh(key, now) {
                    return;
                }
                let peer_may_open = self
                    .rules
                    .as_ref()
                    .is_some_and(|rules| rules.allows(&reversed(&summary.flow)));
                if !peer_may_open {
                    self.flows.open(key, now);
                }
            }
            PacketKind::EchoReply
            | PacketKind::IcmpError(_)
            | PacketKind::IcmpOther
            | PacketKind::LaterFragment => {}
        }
    }

    /// Forgets flows idle past their timeout. Call from the node's timer.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.flows.expire(now);
    }

    /// Counters of the flow table.
    pub fn flow_stats(&self) -> FlowStats {
        self.flows.stats()
    }
}

/// The other direction of a flow.
fn reversed(flow: &Flow) -> Flow {
    Flow {
        protocol: flow.protocol,
        source: flow.destination,
        destination: flow.source,
        source_port: flow.destination_port,
        destination_port: flow.source_port,
    }
}

/// A [`PacketFilter`] compiled for lookup: rules indexed by source prefix,
/// and where many rules share a source prefix, by destination port.
struct CompiledRules {
    by_source: IpNetworkTable<SourceBucket>,
    rules: Vec<CompiledRule>,
}

/// The rules whose sources include one prefix.
struct SourceBucket {
    rules: Vec<u32>,
    /// Built when the bucket holds more than [`PORT_INDEX_THRESHOLD`] rules.
    ports: Option<Box<PortIndex>>,
}

/// A bucket's (rule, destination) pairs by block of 256 ports, for
/// TCP/UDP/SCTP lookups; ranges over more than [`WIDE_BLOCKS`] blocks are
/// kept apart and checked for every port.
struct PortIndex {
    blocks: Vec<Vec<(u32, u32)>>,
    wide: Vec<(u32, u32)>,
}

/// Below this many rules per source prefix, a scan is as fast as the index.
const PORT_INDEX_THRESHOLD: usize = if cfg!(test) { 2 } else { 32 };
const PORT_BLOCKS: usize = 256;
const WIDE_BLOCKS: usize = 16;

impl PortIndex {
    fn build(bucket: &[u32], rules: &[CompiledRule]) -> Self {
        let mut blocks = vec![Vec::new(); PORT_BLOCKS];
        let mut wide = Vec::new();
        for &r in bucket {
            for (d, (_, ports)) in rules[r as usize].destinations.iter().enumerate() {
                if ports.first > ports.last {
                    continue;
                }
                let entry = (r, u32::try_from(d).unwrap_or(u32::MAX));
                let (first, last) = (usize::from(ports.first >> 8), usize::from(ports.last >> 8));
                if last - first + 1 > WIDE_BLOCKS {
                    wide.push(entry);
                } else {
                    for block in &mut blocks[first..=last] {
                        block.push(entry);
                    }
                }
            }
        }
        Self { blocks, wide }
    }
}

struct CompiledRule {
    protocols: ProtocolSet,
    destinations: Vec<(IpNet, PortRange)>,
}

/// A set of IANA protocol numbers, one bit each.
#[derive(Clone, Copy)]
struct ProtocolSet([u64; 4]);

impl ProtocolSet {
    /// What a rule with an empty protocol list allows, as in Tailscale.
    const DEFAULT: [u8; 4] = [
        protocol::TCP,
        protocol::UDP,
        protocol::ICMP,
        protocol::ICMPV6,
    ];

    fn of(protocols: &[u8]) -> Self {
        let list = if protocols.is_empty() {
            &Self::DEFAULT[..]
        } else {
            protocols
        };
        let mut bits = [0u64; 4];
        for &p in list {
            bits[usize::from(p / 64)] |= 1 << (p % 64);
        }
        Self(bits)
    }

    fn contains(self, protocol: u8) -> bool {
        self.0[usize::from(protocol / 64)] & (1 << (protocol % 64)) != 0
    }
}

impl CompiledRules {
    fn compile(filter: &PacketFilter) -> Self {
        let mut by_source: IpNetworkTable<SourceBucket> = IpNetworkTable::new();
        let mut rules = Vec::with_capacity(filter.rules.len());
        let mut empty_ranges = 0usize;
        for rule in &filter.rules {
            let index = u32::try_from(rules.len()).unwrap_or(u32::MAX);
            for source in &rule.sources {
                let Some(network) = crate::node::to_network(source) else {
                    continue;
                };
                match by_source.exact_match_mut(network) {
                    Some(bucket) => bucket.rules.push(index),
                    None => {
                        let bucket = SourceBucket {
                            rules: vec![index],
                            ports: None,
                        };
                        by_source.insert(network, bucket);
                    }
                }
            }
            empty_ranges += rule
                .destinations
                .iter()
                .filter(|d| d.ports.first > d.ports.last)
                .count();
            rules.push(CompiledRule {
                protocols: ProtocolSet::of(&rule.protocols),
                destinations: rule
                    .destinations
                    .iter()
                    .map(|d| (d.prefix.trunc(), d.ports))
                    .collect(),
            });
        }
        if empty_ranges > 0 {
            // Such a destination matches no port; control should not send it.
            tracing::warn!(
                destinations = empty_ranges,
                "packet filter has port ranges whose first port is above the last"
            );
        }
        for (_, bucket) in by_source.iter_mut() {
            if bucket.rules.len() > PORT_INDEX_THRESHOLD {
                bucket.ports = Some(Box::new(PortIndex::build(&bucket.rules, &rules)));
            }
        }
        Self { by_source, rules }
    }

    /// Whether any rule allows this packet.
    fn allows(&self, flow: &Flow) -> bool {
        let has_ports = matches!(
            flow.protocol,
            protocol::TCP | protocol::UDP | protocol::SCTP
        );
        let pair_allows = |&(r, d): &(u32, u32)| {
            let rule = &self.rules[r as usize];
            rule.protocols.contains(flow.protocol)
                && rule
                    .destinations
                    .get(d as usize)
                    .is_some_and(|(prefix, ports)| {
                        prefix.contains(&flow.destination) && ports.contains(flow.destination_port)
                    })
        };
        let rule_allows = |bucket: &SourceBucket| {
            if has_ports && let Some(index) = &bucket.ports {
                let block = &index.blocks[usize::from(flow.destination_port >> 8)];
                return index.wide.iter().chain(block).any(pair_allows);
            }
            bucket.rules.iter().any(|&i| {
                let rule = &self.rules[i as usize];
                rule.protocols.contains(flow.protocol)
                    && rule.destinations.iter().any(|(prefix, ports)| {
                        prefix.contains(&flow.destination)
                            && (!has_ports || ports.contains(flow.destination_port))
                    })
            })
        };
        match flow.source {
            IpAddr::V4(source) => self
                .by_source
                .matches_ipv4(source)
                .any(|(_, bucket)| rule_allows(bucket)),
            IpAddr::V6(source) => self
                .by_source
                .matches_ipv6(source)
                .any(|(_, bucket)| rule_allows(bucket)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    use causeway_wire::{FilterDestination, FilterRule};
    use etherparse::{IpHeaders, IpNumber, PacketBuilder, PacketBuilderStep};
    use proptest::prelude::*;

    use super::*;

    const PEER4: IpAddr = IpAddr::V4(Ipv4Addr::new(100, 64, 0, 2));
    const ME4: IpAddr = IpAddr::V4(Ipv4Addr::new(100, 64, 0, 1));
    const PEER6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 2));
    const ME6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 1));

    fn ip(source: IpAddr, destination: IpAddr) -> PacketBuilderStep<IpHeaders> {
        match (source, destination) {
            (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
            (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
            _ => panic!("mixed address families"),
        }
    }

    fn tcp(source: IpAddr, destination: IpAddr, ports: (u16, u16), syn: bool) -> Vec<u8> {
        let builder = ip(source, destination).tcp(ports.0, ports.1, 1, 1000);
        let builder = if syn { builder.syn() } else { builder.ack(1) };
        let mut out = Vec::new();
        builder.write(&mut out, b"data").expect("build TCP");
        out
    }

    fn udp(source: IpAddr, destination: IpAddr, ports: (u16, u16)) -> Vec<u8> {
        let mut out = Vec::new();
        ip(source, destination)
            .udp(ports.0, ports.1)
            .write(&mut out, b"data")
            .expect("build UDP");
        out
    }

    fn echo(source: IpAddr, destination: IpAddr, id: u16, request: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let base = ip(source, destination);
        let result = match (source.is_ipv4(), request) {
            (true, true) => base.icmpv4_echo_request(id, 1).write(&mut out, b"ping"),
            (true, false) => base.icmpv4_echo_reply(id, 1).write(&mut out, b"ping"),
            (false, true) => base.icmpv6_echo_request(id, 1).write(&mut out, b"ping"),
            (false, false) => base.icmpv6_echo_reply(id, 1).write(&mut out, b"ping"),
        };
        result.expect("build echo");
        out
    }

    /// An ICMP destination unreachable (v4 type 3, v6 type 1) quoting `quoted`.
    fn unreachable(source: IpAddr, destination: IpAddr, quoted: &[u8]) -> Vec<u8> {
        let (icmp_type, number) = if source.is_ipv4() { (3, 1) } else { (1, 58) };
        let mut icmp = vec![icmp_type, 1, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&quoted[..quoted.len().min(48)]);
        let mut out = Vec::new();
        ip(source, destination)
            .write(&mut out, IpNumber(number), &icmp)
            .expect("build ICMP error");
        out
    }

    fn rule(
        sources: &[&str],
        destination: &str,
        ports: (u16, u16),
        protocols: &[u8],
    ) -> FilterRule {
        FilterRule {
            sources: sources.iter().map(|s| s.parse().expect("prefix")).collect(),
            destinations: vec![FilterDestination {
                prefix: destination.parse().expect("prefix"),
                ports: PortRange {
                    first: ports.0,
                    last: ports.1,
                },
            }],
            protocols: protocols.to_vec(),
        }
    }

    /// A node whose filter lets nobody in.
    fn closed() -> PacketFilterState {
        let mut state = PacketFilterState::new(DEFAULT_FLOW_CAPACITY_FOR_TESTS);
        state.set_filter(Some(&PacketFilter { rules: vec![] }));
        state
    }

    const DEFAULT_FLOW_CAPACITY_FOR_TESTS: NonZeroUsize = crate::DEFAULT_FLOW_CAPACITY;

    fn pairs() -> [(IpAddr, IpAddr); 2] {
        [(ME4, PEER4), (ME6, PEER6)]
    }

    #[test]
    fn tcp_replies_pass_and_unsolicited_tcp_is_refused() {
        for (me, peer) in pairs() {
            let mut state = closed();
            let now = Instant::now();
            assert_eq!(
                state.inbound(&tcp(peer, me, (40000, 22), true), now),
                Err(FilterDrop::NotAllowed)
            );
            state.outbound(&tcp(me, peer, (50000, 443), true), now);
            assert_eq!(
                state.inbound(&tcp(peer, me, (443, 50000), false), now),
                Ok(())
            );
            // Another port on the same hosts is a different flow.
            assert_eq!(
                state.inbound(&tcp(peer, me, (443, 50001), false), now),
                Err(FilterDrop::NotAllowed)
            );
        }
    }

    #[test]
    fn tcp_without_syn_opens_no_flow() {
        let mut state = closed();
        let now = Instant::now();
        state.outbound(&tcp(ME4, PEER4, (50000, 443), false), now);
        assert_eq!(
            state.inbound(&tcp(PEER4, ME4, (443, 50000), false), now),
            Err(FilterDrop::NotAllowed)
        );
        assert_eq!(state.flow_stats().tracked, 0);
    }

    #[test]
    fn udp_replies_pass_until_the_flow_times_out() {
        for (me, peer) in pairs() {
            let mut state = closed();
            let now = Instant::now();
            state.outbound(&udp(me, peer, (5353, 53)), now);
            assert_eq!(state.inbound(&udp(peer, me, (53, 5353)), now), Ok(()));
            // Answered: five idle minutes are allowed, not more.
            let later = now + Duration::from_secs(299);
            assert_eq!(state.inbound(&udp(peer, me, (53, 5353)), later), Ok(()));
            let too_late = later + Duration::from_secs(300);
            assert_eq!(
                state.inbound(&udp(peer, me, (53, 5353)), too_late),
                Err(FilterDrop::NotAllowed)
            );
        }
    }

    #[test]
    fn icmp_echo_replies_pass_only_for_our_identifier() {
        for (me, peer) in pairs() {
            let mut state = closed();
            let now = Instant::now();
            assert_eq!(
                state.inbound(&echo(peer, me, 7, true), now),
                Err(FilterDrop::NotAllowed)
            );
            state.outbound(&echo(me, peer, 7, true), now);
            assert_eq!(state.inbound(&echo(peer, me, 7, false), now), Ok(()));
            assert_eq!(
                state.inbound(&echo(peer, me, 8, false), now),
                Err(FilterDrop::NotAllowed)
            );
        }
    }

    #[test]
    fn icmp_errors_pass_only_when_they_quote_an_allowed_flow() {
        for (me, peer) in pairs() {
            let mut state = closed();
            let now = Instant::now();
            let ours = udp(me, peer, (5000, 9999));
            assert_eq!(
                state.inbound(&unreachable(peer, me, &ours), now),
                Err(FilterDrop::NotAllowed)
            );
            state.outbound(&ours, now);
            assert_eq!(state.inbound(&unreachable(peer, me, &ours), now), Ok(()));
            // An error quoting a packet someone else sent is not ours.
            let theirs = udp(peer, me, (9999, 5000));
            assert_eq!(
                state.inbound(&unreachable(peer, me, &theirs), now),
                Err(FilterDrop::NotAllowed)
            );
        }
    }

    #[test]
    fn icmp_error_about_a_reply_to_an_allowed_flow_passes() {
        let mut state = PacketFilterState::new(DEFAULT_FLOW_CAPACITY_FOR_TESTS);
        let filter = PacketFilter {
            rules: vec![rule(&["100.64.0.2/32"], "100.64.0.1/32", (80, 80), &[])],
        };
        state.set_filter(Some(&filter));
        let reply = tcp(ME4, PEER4, (80, 40000), false);
        assert_eq!(
            state.inbound(&unreachable(PEER4, ME4, &reply), Instant::now()),
            Ok(())
        );
    }

    #[test]
    fn port_ranges_and_protocol_lists_are_enforced() {
        let mut state = PacketFilterState::new(DEFAULT_FLOW_CAPACITY_FOR_TESTS);
        let filter = PacketFilter {
            rules: vec![
                rule(&["100.64.0.0/24"], "100.64.0.1/32", (5432, 5433), &[6]),
                rule(
                    &["fd7a:115c:a1e0::/48"],
                    "fd7a:115c:a1e0::1/128",
                    (53, 53),
                    &[17],
                ),
            ],
        };
        state.set_filter(Some(&filter));
        let now = Instant::now();
        assert_eq!(
            state.inbound(&tcp(PEER4, ME4, (1, 5432), true), now),
            Ok(())
        );
        assert_eq!(
            state.inbound(&tcp(PEER4, ME4, (1, 5433), true), now),
            Ok(())
        );
        assert_eq!(
            state.inbound(&tcp(PEER4, ME4, (1, 5434), true), now),
            Err(FilterDrop::NotAllowed)
        );
        // TCP only: UDP to the same port and ICMP are refused.
        assert_eq!(
            state.inbound(&udp(PEER4, ME4, (1, 5432)), now),
            Err(FilterDrop::NotAllowed)
        );
        assert_eq!(
            state.inbound(&echo(PEER4, ME4, 1, true), now),
            Err(FilterDrop::NotAllowed)
        );
        assert_eq!(state.inbound(&udp(PEER6, ME6, (1, 53)), now), Ok(()));
        assert_eq!(
            state.inbound(&tcp(PEER6, ME6, (1, 53), true), now),
            Err(FilterDrop::NotAllowed)
        );
        // A source outside the rule's prefix.
        let stranger = IpAddr::V4(Ipv4Addr::new(100, 64, 1, 2));
        assert_eq!(
            state.inbound(&tcp(stranger, ME4, (1, 5432), true), now),
            Err(FilterDrop::NotAllowed)
        );
    }

    #[test]
    fn default_protocols_allow_icmp_on_a_port_rule() {
        let mut state = PacketFilterState::new(DEFAULT_FLOW_CAPACITY_FOR_TESTS);
        let filter = PacketFilter {
            rules: vec![rule(&["100.64.0.2/32"], "100.64.0.1/32", (22, 22), &[])],
        };
        state.set_filter(Some(&filter));
        let now = Instant::now();
        assert_eq!(state.inbound(&echo(PEER4, ME4, 1, true), now), Ok(()));
        assert_eq!(state.inbound(&udp(PEER4, ME4, (1, 22)), now), Ok(()));
        // SCTP is not among the defaults.
        let mut sctp = Vec::new();
        ip(PEER4, ME4)
            .write(
                &mut sctp,
                IpNumber(132),
                &[0, 1, 0, 22, 0, 0, 0, 0, 0, 0, 0, 0],
            )
            .expect("build SCTP");
        assert_eq!(state.inbound(&sctp, now), Err(FilterDrop::NotAllowed));
    }

    #[test]
    fn packets_for_prefixes_the_node_does_not_serve_are_dropped() {
        let mut state = PacketFilterState::new(DEFAULT_FLOW_CAPACITY_FOR_TESTS);
        state.set_served(&[
            "100.64.0.1/32".parse().expect("prefix"),
            "198.19.1.0/24".parse().expect("prefix"),
        ]);
        let now = Instant::now();
        let lan = IpAddr::V4(Ipv4Addr::new(198, 19, 1, 10));
        let elsewhere = IpAddr::V4(Ipv4Addr::new(198, 19, 2, 10));
        assert_eq!(state.inbound(&udp(PEER4, ME4, (1, 2)), now), Ok(()));
        assert_eq!(state.inbound(&udp(PEER4, lan, (1, 2)), now), Ok(()));
        assert_eq!(
            state.inbound(&udp(PEER4, elsewhere, (1, 2)), now),
            Err(FilterDrop::NotForThisNode(elsewhere))
        );
        // An exit node serves everything.
        state.set_served(&["0.0.0.0/0".parse().expect("prefix")]);
        assert_eq!(state.inbound(&udp(PEER4, elsewhere, (1, 2)), now), Ok(()));
    }

    #[test]
    fn the_flow_table_is_capped_and_evicts_the_least_recently_used() {
        let capacity = NonZeroUsize::new(4).expect("non-zero");
        let mut state = PacketFilterState::new(capacity);
        state.set_filter(Some(&PacketFilter { rules: vec![] }));
        let now = Instant::now();
        for port in 0..10 {
            state.outbound(&udp(ME4, PEER4, (port, 53)), now);
        }
        assert_eq!(
            state.flow_stats(),
            FlowStats {
                tracked: 4,
                evicted: 6
            }
        );
        assert_eq!(
            state.inbound(&udp(PEER4, ME4, (53, 0)), now),
            Err(FilterDrop::NotAllowed)
        );
        assert_eq!(state.inbound(&udp(PEER4, ME4, (53, 9)), now), Ok(()));
    }

    #[test]
    fn expired_flows_are_swept_by_the_timer() {
        let mut state = closed();
        let now = Instant::now();
        state.outbound(&udp(ME4, PEER4, (1, 53)), now);
        state.outbound(&tcp(ME4, PEER4, (2, 443), true), now);
        state.handle_timeout(now + Duration::from_secs(31));
        assert_eq!(
            state.flow_stats().tracked,
            1,
            "unanswered UDP goes after 30 s"
        );
        state.handle_timeout(now + Duration::from_secs(241));
        assert_eq!(
            state.flow_stats().tracked,
            0,
            "unanswered TCP goes after 4 min"
        );
    }

    #[test]
    fn a_new_filter_keeps_our_flows_and_cuts_the_peers() {
        let mut state = PacketFilterState::new(DEFAULT_FLOW_CAPACITY_FOR_TESTS);
        let open = PacketFilter {
            rules: vec![rule(&["100.64.0.2/32"], "100.64.0.1/32", (22, 22), &[6])],
        };
        state.set_filter(Some(&open));
        let now = Instant::now();
        state.outbound(&tcp(ME4, PEER4, (50000, 443), true), now);
        assert_eq!(
            state.inbound(&tcp(PEER4, ME4, (40000, 22), false), now),
            Ok(())
        );
        state.set_filter(Some(&PacketFilter { rules: vec![] }));
        assert_eq!(
            state.inbound(&tcp(PEER4, ME4, (443, 50000), false), now),
            Ok(())
        );
        assert_eq!(
            state.inbound(&tcp(PEER4, ME4, (40000, 22), false), now),
            Err(FilterDrop::NotAllowed)
        );
    }

    #[test]
    fn a_udp_reply_on_a_flow_the_peer_opened_is_not_tracked_as_ours() {
        let mut state = PacketFilterState::new(DEFAULT_FLOW_CAPACITY_FOR_TESTS);
        let open = PacketFilter {
            rules: vec![rule(&["100.64.0.2/32"], "100.64.0.1/32", (53, 53), &[17])],
        };
        state.set_filter(Some(&open));
        let now = Instant::now();
        assert_eq!(state.inbound(&udp(PEER4, ME4, (40000, 53)), now), Ok(()));
        state.outbound(&udp(ME4, PEER4, (53, 40000)), now);
        assert_eq!(state.flow_stats().tracked, 0);
        state.set_filter(Some(&PacketFilter { rules: vec![] }));
        assert_eq!(
            state.inbound(&udp(PEER4, ME4, (40000, 53)), now),
            Err(FilterDrop::NotAllowed)
        );
    }

    #[test]
    fn later_fragments_pass_and_truncated_headers_do_not() {
        let mut state = closed();
        let now = Instant::now();
        let mut packet = udp(PEER4, ME4, (1, 2));
        // More fragments, offset 185 × 8 bytes; checksum is not ours to check.
        packet[6] = 0x20;
        packet[7] = 185;
        assert_eq!(state.inbound(&packet, now), Ok(()));
        // A TCP header cut to 10 bytes.
        let mut short = Vec::new();
        ip(PEER4, ME4)
            .write(&mut short, IpNumber(6), &[0; 10])
            .expect("build");
        assert_eq!(state.inbound(&short, now), Err(FilterDrop::BadHeader));
        assert_eq!(
            state.inbound(&[0x45, 0, 0], now),
            Err(FilterDrop::BadHeader)
        );
    }

    #[test]
    fn ipv6_later_fragments_pass_and_first_fragments_are_checked() {
        let mut state = closed();
        let now = Instant::now();
        let plain = udp(PEER6, ME6, (1, 2));
        let with_fragment_header = |offset_units: u16| {
            let mut packet = plain[..40].to_vec();
            packet[6] = 44;
            let payload_len = u16::from_be_bytes([packet[4], packet[5]]) + 8;
            packet[4..6].copy_from_slice(&payload_len.to_be_bytes());
            // Next header UDP, offset in 8-byte units, more fragments set.
            let field = (offset_units << 3) | 1;
            packet.extend_from_slice(&[17, 0]);
            packet.extend_from_slice(&field.to_be_bytes());
            packet.extend_from_slice(&[0, 0, 0, 7]);
            packet.extend_from_slice(&plain[40..]);
            packet
        };
        assert_eq!(state.inbound(&with_fragment_header(100), now), Ok(()));
        assert_eq!(
            state.inbound(&with_fragment_header(0), now),
            Err(FilterDrop::NotAllowed)
        );
    }

    #[test]
    fn ipv6_extension_headers_are_followed_to_the_ports() {
        let mut state = PacketFilterState::new(DEFAULT_FLOW_CAPACITY_FOR_TESTS);
        let filter = PacketFilter {
            rules: vec![rule(
                &["fd7a:115c:a1e0::2/128"],
                "fd7a:115c:a1e0::1/128",
                (443, 443),
                &[6],
            )],
        };
        state.set_filter(Some(&filter));
        let plain = tcp(PEER6, ME6, (1, 443), true);
        // Insert an 8-byte destination options header (next header TCP).
        let mut packet = plain[..40].to_vec();
        packet[6] = 60;
        let payload_len = u16::from_be_bytes([packet[4], packet[5]]) + 8;
        packet[4..6].copy_from_slice(&payload_len.to_be_bytes());
        packet.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
        packet.extend_from_slice(&plain[40..]);
        let now = Instant::now();
        assert_eq!(state.inbound(&packet, now), Ok(()));
        let port = 40 + 8 + 3;
        packet[port] = 0xbc; // port 444
        assert_eq!(state.inbound(&packet, now), Err(FilterDrop::NotAllowed));
    }

    /// The compiled rules against a linear scan of the wire rules.
    fn reference(filter: &PacketFilter, flow: &Flow) -> bool {
        let has_ports = matches!(flow.protocol, 6 | 17 | 132);
        filter.rules.iter().any(|r| {
            let protocols: &[u8] = if r.protocols.is_empty() {
                &[6, 17, 1, 58]
            } else {
                &r.protocols
            };
            protocols.contains(&flow.protocol)
                && r.sources.iter().any(|s| s.contains(&flow.source))
                && r.destinations.iter().any(|d| {
                    d.prefix.contains(&flow.destination)
                        && (!has_ports || d.ports.contains(flow.destination_port))
                })
        })
    }

    fn small_v4() -> impl Strategy<Value = Ipv4Addr> {
        (0u8..4, 0u8..4).prop_map(|(a, b)| Ipv4Addr::new(100, 64, a, b))
    }

    fn small_net() -> impl Strategy<Value = IpNet> {
        (
            small_v4(),
            prop_oneof![Just(16u8), Just(24), Just(30), Just(32), Just(0)],
        )
            .prop_map(|(a, len)| IpNet::new(a.into(), len).expect("valid length").trunc())
    }

    /// Ports near block edges of the port index, and a wide spread.
    fn port() -> impl Strategy<Value = u16> {
        prop_oneof![0u16..8, 250u16..262, 4000u16..4100, 65530u16..=65535]
    }

    fn any_rule() -> impl Strategy<Value = FilterRule> {
        (
            proptest::collection::vec(small_net(), 1..3),
            proptest::collection::vec((small_net(), port(), port()), 1..3),
            proptest::sample::subsequence(vec![1u8, 6, 17, 47, 132], 0..3),
        )
            .prop_map(|(sources, destinations, protocols)| FilterRule {
                sources,
                destinations: destinations
                    .into_iter()
                    .map(|(prefix, a, b)| FilterDestination {
                        prefix,
                        ports: PortRange {
                            first: a.min(b),
                            last: a.max(b),
                        },
                    })
                    .collect(),
                protocols,
            })
    }

    proptest! {
        #[test]
        fn compiled_rules_agree_with_a_linear_scan(
            rules in proptest::collection::vec(any_rule(), 0..24),
            source in small_v4(),
            destination in small_v4(),
            protocol in prop_oneof![Just(1u8), Just(6), Just(17), Just(47), Just(132)],
            port in port(),
        ) {
            let filter = PacketFilter { rules };
            let flow = Flow {
                protocol,
                source: source.into(),
                destination: destination.into(),
                source_port: 1000,
                destination_port: port,
            };
            prop_assert_eq!(CompiledRules::compile(&filter).allows(&flow), reference(&filter, &flow));
        }

        #[test]
        fn a_reply_passes_exactly_when_its_flow_was_opened(
            ours in proptest::collection::vec((1u16..6, 1u16..6), 0..6),
            reply in (1u16..6, 1u16..6),
        ) {
            let mut state = closed();
            let now = Instant::now();
            for &(local, remote) in &ours {
                state.outbound(&udp(ME4, PEER4, (local, remote)), now);
            }
            let opened = ours.contains(&(reply.1, reply.0));
            let verdict = state.inbound(&udp(PEER4, ME4, reply), now);
            prop_assert_eq!(verdict.is_ok(), opened);
        }

        #[test]
        fn inbound_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            let mut state = closed();
            let now = Instant::now();
            state.outbound(&bytes, now);
            let _ = state.inbound(&bytes, now);
        }
    }
}
