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
//! sources contain the packet's source, not every rule.

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

/// A [`PacketFilter`] compiled for lookup: rules indexed by source prefix.
struct CompiledRules {
    by_source: IpNetworkTable<Vec<u32>>,
    rules: Vec<CompiledRule>,
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
        let mut by_source: IpNetworkTable<Vec<u32>> = IpNetworkTable::new();
        let mut rules = Vec::with_capacity(filter.rules.len());
        let mut empty_ranges = 0usize;
        for rule in &filter.rules {
            let index = u32::try_from(rules.len()).unwrap_or(u32::MAX);
            for source in &rule.sources {
                let Some(network) = crate::node::to_network(source) else {
                    continue;
                };
                match by_source.exact_match_mut(network) {
                    Some(list) => list.push(index),
                    None => {
                        by_source.insert(network, vec![index]);
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
        Self { by_source, rules }
    }

    /// Whether any rule allows this packet.
    fn allows(&self, flow: &Flow) -> bool {
        let has_ports = matches!(
            flow.protocol,
            protocol::TCP | protocol::UDP | protocol::SCTP
        );
        let rule_allows = |indices: &Vec<u32>| {
            indices.iter().any(|&i| {
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
                .any(|(_, indices)| rule_allows(indices)),
            IpAddr::V6(source) => self
                .by_source
                .matches_ipv6(source)
                .any(|(_, indices)| rule_allows(indices)),
        }
    }
}
