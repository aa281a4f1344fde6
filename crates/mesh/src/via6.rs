//! [`Via6State`]: 4via6 on a subnet router. Sites that use the same IPv4
//! range are told apart by a site ID; clients reach site 7's `10.0.0.5` at
//! the IPv6 address `causeway_wire::via6::via6_address(ula, 7, 10.0.0.5)`,
//! and the router serving site 7 translates between that IPv6 packet and
//! the IPv4 one its LAN understands: stateless header translation as in
//! RFC 7915 for TCP, UDP and ICMP (echo and errors), plus a flow table
//! that remembers which IPv4 flows came in as IPv6.
//!
//! IPv6 → IPv4 (a client's packet, decrypted): the destination is the
//! IPv4 address embedded in the 4via6 address, which must fall inside a
//! range the router serves for that site; the source is the client's
//! tailnet IPv4 address. The shell masquerades what it writes to the TUN
//! device to the router's LAN address, so the kernel's connection
//! tracking picks the LAN-side source port and handles collisions, and
//! undoes it on replies before they come back through the TUN device.
//!
//! IPv4 → IPv6 (a reply read from the TUN device, to the client's tailnet
//! IPv4 address): only when it belongs to a flow in the table; its source
//! becomes the 4via6 address of the remote host at the flow's site, its
//! destination the client's tailnet IPv6 address. A packet of no flow is
//! not ours: the router may serve the same range plainly too.
//!
//! Refused, and counted per reason ([`Via6Stats`]): fragments (RFC 7915
//! §4.1 and §5.1.1 allow translating them; we do not), IPv6 extension
//! headers, IPv4 source routes, protocols other than TCP, UDP and ICMP,
//! ICMP messages without a counterpart, bad ICMP or IPv4 header checksums
//! (a TCP or UDP checksum is carried over, wrong if it was wrong; see the
//! `translate` module), hop limit 1 or 0,
//! addresses outside the served ranges, and new flows when the table is
//! full. What the table holds and for how long: see the `flows` module.
//!
//! Not built: fragmenting a reply that the 20 bytes of the larger IPv6
//! header take past the tailnet MTU (RFC 7915 §4.1 would fragment it when
//! DF is clear, or answer "fragmentation needed" when set); such a packet
//! goes to the client whole. TCP is unaffected (its MSS comes from the
//! client's IPv6 SYN, 20 bytes smaller than IPv4 would allow); a UDP reply
//! that fills the LAN's MTU is not.
//!
//! Time is passed in; nothing here does I/O.

mod flows;
mod translate;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::num::NonZeroUsize;
use std::time::Instant;

use causeway_wire::via6::{parse_via6_address, via6_address};
use etherparse::{IpNumber, icmpv4};
use ipnet::{Ipv4Net, Ipv6Net};

use self::flows::{Class, FlowEntry, FlowKey, Via6Flows};
use self::translate::{Body, Ports, emit_v4, emit_v6, parse_v4, parse_v6, quoted_ports};

/// How many 4via6 flows a router tracks by default: 114 bytes each as
/// measured (`examples/via6-translate.rs`), so about 7.3 MB when full.
pub const DEFAULT_VIA6_FLOW_CAPACITY: NonZeroUsize = match NonZeroUsize::new(65_536) {
    Some(n) => n,
    None => unreachable!(),
};

/// Why a 4via6 packet was not translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Via6Refusal {
    /// An IPv4 fragment (MF set or offset not 0) or an IPv6 packet with a
    /// Fragment header: translation of fragments is not built.
    Fragment,
    /// Something without a translation: IPv6 extension headers, an IPv4
    /// source route, a protocol other than TCP, UDP or ICMP, an ICMP type
    /// with no counterpart (RFC 7915 §4.2, §5.2), a packet too big for
    /// IPv4's length field.
    Unsupported,
    /// The embedded IPv4 address is outside every range this router
    /// serves for that site.
    OutOfRange,
    /// An IPv6 hop limit of 1 or 0: forwarding it would take it to 0.
    HopLimit,
    /// An ICMP or IPv4 header checksum is wrong, or a UDP over IPv6
    /// checksum is zero.
    BadChecksum,
    /// Truncated, or lengths that disagree.
    Malformed,
    /// A new flow while the flow table is full of live flows.
    FlowTableFull,
    /// The client has no tailnet IPv4 address to use as the source.
    NoClientIpv4,
    /// An ICMPv6 error from a client about a flow the table does not hold.
    NoFlow,
}

impl Via6Refusal {
    /// Every reason, in the order counters are reported.
    pub const ALL: [Via6Refusal; 9] = [
        Via6Refusal::Fragment,
        Via6Refusal::Unsupported,
        Via6Refusal::OutOfRange,
        Via6Refusal::HopLimit,
        Via6Refusal::BadChecksum,
        Via6Refusal::Malformed,
        Via6Refusal::FlowTableFull,
        Via6Refusal::NoClientIpv4,
        Via6Refusal::NoFlow,
    ];

    /// The reason's name in status output and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Via6Refusal::Fragment => "fragment",
            Via6Refusal::Unsupported => "unsupported",
            Via6Refusal::OutOfRange => "out_of_range",
            Via6Refusal::HopLimit => "hop_limit",
            Via6Refusal::BadChecksum => "bad_checksum",
            Via6Refusal::Malformed => "malformed",
            Via6Refusal::FlowTableFull => "flow_table_full",
            Via6Refusal::NoClientIpv4 => "no_client_ipv4",
            Via6Refusal::NoFlow => "no_flow",
        }
    }
}

/// Counters of 4via6 translation, for `appliance status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Via6Stats {
    /// Client packets translated from IPv6 to IPv4.
    pub to_ipv4: u64,
    /// Replies translated from IPv4 to IPv6.
    pub to_ipv6: u64,
    /// Flows in the table now.
    pub flows: usize,
    /// The most flows the table holds.
    pub flow_capacity: usize,
    refused: [u64; Via6Refusal::ALL.len()],
}

impl Via6Stats {
    /// Packets refused for one reason.
    pub fn refused(&self, reason: Via6Refusal) -> u64 {
        self.refused[reason as usize]
    }

    /// Every reason with its count, in [`Via6Refusal::ALL`] order.
    pub fn iter_refused(&self) -> impl Iterator<Item = (Via6Refusal, u64)> + '_ {
        Via6Refusal::ALL.into_iter().map(|r| (r, self.refused(r)))
    }
}

/// A 4via6 configuration that cannot work; the old one stays.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Via6ConfigError {
    /// 4via6 addresses live in the tailnet's /48.
    #[error("4via6: the tailnet ULA prefix {0} is not a /48")]
    NotA48(Ipv6Net),
    /// One router cannot tell two sites' identical addresses apart on its
    /// LAN, so its served ranges must not overlap.
    #[error(
        "4via6: site {first_site} range {first} overlaps site {second_site} range {second}; \
         one router must serve disjoint IPv4 ranges"
    )]
    Overlap {
        /// The earlier site.
        first_site: u16,
        /// Its range.
        first: Ipv4Net,
        /// The later site.
        second_site: u16,
        /// Its range.
        second: Ipv4Net,
    },
}

/// What became of a packet offered for 4via6 translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via6Outcome {
    /// Not a 4via6 packet (4via6 off, another destination, no flow): handle
    /// it as usual.
    NotVia6,
    /// Translated into the output buffer.
    Translated,
    /// A 4via6 packet that cannot be translated; drop it.
    Refused(Via6Refusal),
}

/// 4via6 translation on a subnet router: the served (site, range) pairs,
/// the flow table and the counters.
pub struct Via6State {
    ula: Option<Ipv6Net>,
    /// Site → ranges served there.
    served: BTreeMap<u16, Vec<Ipv4Net>>,
    flows: Via6Flows,
    to_ipv4: u64,
    to_ipv6: u64,
    refused: [u64; Via6Refusal::ALL.len()],
}

impl Via6State {
    /// Off, with a flow table of at most `capacity` flows.
    pub fn new(capacity: NonZeroUsize) -> Self {
        Self {
            ula: None,
            served: BTreeMap::new(),
            flows: Via6Flows::new(capacity),
            to_ipv4: 0,
            to_ipv6: 0,
            refused: [0; Via6Refusal::ALL.len()],
        }
    }

    /// Serves these (site, IPv4 range) pairs in the tailnet whose /48 is
    /// `ula`; an empty list turns 4via6 off. Flows of the old
    /// configuration are forgotten when the configuration changes. On an
    /// error nothing changes.
    pub fn configure(
        &mut self,
        ula: Ipv6Net,
        served: &[(u16, Ipv4Net)],
    ) -> Result<(), Via6ConfigError> {
        if served.is_empty() {
            self.ula = None;
            self.served.clear();
            self.flows.clear();
            return Ok(());
        }
        if ula.prefix_len() != 48 {
            return Err(Via6ConfigError::NotA48(ula));
        }
        for (i, &(first_site, first)) in served.iter().enumerate() {
            let first = first.trunc();
            for &(second_site, second) in &served[i + 1..] {
                let second = second.trunc();
                let same = first_site == second_site && first == second;
                if !same && (first.contains(&second) || second.contains(&first)) {
                    return Err(Via6ConfigError::Overlap {
                        first_site,
                        first,
                        second_site,
                        second,
                    });
                }
            }
        }
        let mut next: BTreeMap<u16, Vec<Ipv4Net>> = BTreeMap::new();
        for &(site, range) in served {
            let ranges = next.entry(site).or_default();
            if !ranges.contains(&range.trunc()) {
                ranges.push(range.trunc());
            }
        }
        let ula = Some(ula.trunc());
        if ula != self.ula || next != self.served {
            self.flows.clear();
        }
        self.ula = ula;
        self.served = next;
        Ok(())
    }

    /// Translates a client's IPv6 packet to IPv4 into `out` when its
    /// destination is a 4via6 address of this tailnet. `client` is the
    /// sending peer's tailnet IPv4 address.
    pub fn to_ipv4(
        &mut self,
        packet: &[u8],
        client: Option<Ipv4Addr>,
        out: &mut Vec<u8>,
        now: Instant,
    ) -> Via6Outcome {
        let Some(ula) = self.ula else {
            return Via6Outcome::NotVia6;
        };
        let Some(destination) = ipv6_destination(packet) else {
            return Via6Outcome::NotVia6;
        };
        let Some((site, remote)) = parse_via6_address(ula, destination) else {
            return Via6Outcome::NotVia6;
        };
        let result = self.translate_to_ipv4(ula, site, remote, packet, client, out, now);
        self.count(result, true)
    }

    /// Translates an IPv4 packet read from the TUN device to IPv6 into
    /// `out` when it belongs to a 4via6 flow (a reply, or an ICMP error
    /// about a packet of the flow); the translated packet's destination
    /// is the client's tailnet IPv6 address.
    pub fn to_ipv6(&mut self, packet: &[u8], out: &mut Vec<u8>, now: Instant) -> Via6Outcome {
        if self.ula.is_none() || packet.first().is_none_or(|b| b >> 4 != 4) {
            return Via6Outcome::NotVia6;
        }
        let result = self.translate_to_ipv6(packet, out, now);
        match result {
            Ok(false) => Via6Outcome::NotVia6,
            Ok(true) => self.count(Ok(()), false),
            Err(refusal) => self.count(Err(refusal), false),
        }
    }

    /// Drops flows idle past their timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.flows.expire(now);
    }

    /// Whether any range is served.
    pub fn is_enabled(&self) -> bool {
        self.ula.is_some()
    }

    /// Counters.
    pub fn stats(&self) -> Via6Stats {
        Via6Stats {
            to_ipv4: self.to_ipv4,
            to_ipv6: self.to_ipv6,
            flows: self.flows.len(),
            flow_capacity: self.flows.capacity(),
            refused: self.refused,
        }
    }

    fn count(&mut self, result: Result<(), Via6Refusal>, to_ipv4: bool) -> Via6Outcome {
        match result {
            Ok(()) if to_ipv4 => {
                self.to_ipv4 += 1;
                Via6Outcome::Translated
            }
            Ok(()) => {
                self.to_ipv6 += 1;
                Via6Outcome::Translated
            }
            Err(refusal) => {
                self.refused[refusal as usize] += 1;
                tracing::trace!(reason = refusal.as_str(), "4via6 packet refused");
                Via6Outcome::Refused(refusal)
            }
        }
    }

    fn serves(&self, site: u16, address: Ipv4Addr) -> bool {
        self.served
            .get(&site)
            .is_some_and(|ranges| ranges.iter().any(|r| r.contains(&address)))
    }

    #[allow(clippy::too_many_arguments)]
    fn translate_to_ipv4(
        &mut self,
        ula: Ipv6Net,
        site: u16,
        remote: Ipv4Addr,
        packet: &[u8],
        client: Option<Ipv4Addr>,
        out: &mut Vec<u8>,
        now: Instant,
    ) -> Result<(), Via6Refusal> {
        if !self.serves(site, remote) {
            return Err(Via6Refusal::OutOfRange);
        }
        let client = client.ok_or(Via6Refusal::NoClientIpv4)?;
        let parsed = parse_v6(packet)?;
        // RFC 7915 §5.1: a translator that would send a packet on with a
        // TTL of 0 drops it. The kernel decrements once more as it
        // forwards from the TUN device, so 1 is refused too.
        if parsed.ip.hop_limit <= 1 {
            return Err(Via6Refusal::HopLimit);
        }
        let client_v6 = Ipv6Addr::from(parsed.ip.source);
        if let Some(ports) = parsed.body.ports() {
            let key = flow_key(ports, client, remote);
            let class = match self.flows.get(&key, now, true) {
                Some((_, entry)) if entry.client == client_v6 && entry.site == site => {
                    if parsed.body.closes() {
                        Some(Class::TcpTransitory)
                    } else {
                        None
                    }
                }
                _ => Some(first_class(ports.protocol)),
            };
            // Translate first: a packet refused opens no flow.
            emit_v4(&parsed, client, remote, None, out)?;
            if let Some(class) = class {
                let mut entry = FlowEntry::new(client_v6, site, now);
                entry.closing = parsed.body.closes();
                self.flows
                    .put(key, entry, class, now)
                    .map_err(|_| Via6Refusal::FlowTableFull)?;
            }
            return Ok(());
        }
        // An ICMPv6 error from the client, about a packet the router sent
        // it: from a 4via6 address at a site it serves, to the client.
        let Body::Error { inner, quoted, .. } = &parsed.body else {
            return Err(Via6Refusal::Unsupported);
        };
        let inner_destination = Ipv6Addr::from(inner.destination);
        let Some((inner_site, inner_remote)) =
            parse_via6_address(ula, Ipv6Addr::from(inner.source))
        else {
            return Err(Via6Refusal::NoFlow);
        };
        let ports = quoted_ports(inner.next_header.0, quoted).ok_or(Via6Refusal::Unsupported)?;
        // The quoted packet went remote → client: its destination port is
        // the client's.
        let key = flow_key(ports.reversed(), client, inner_remote);
        match self.flows.get(&key, now, false) {
            Some((_, entry))
                if entry.client == inner_destination
                    && entry.site == inner_site
                    && client_v6 == inner_destination =>
            {
                emit_v4(&parsed, client, remote, Some((inner_remote, client)), out)
            }
            _ => Err(Via6Refusal::NoFlow),
        }
    }

    /// `Ok(false)`: no flow, not ours.
    fn translate_to_ipv6(
        &mut self,
        packet: &[u8],
        out: &mut Vec<u8>,
        now: Instant,
    ) -> Result<bool, Via6Refusal> {
        let Some(ula) = self.ula else {
            return Ok(false);
        };
        // Most packets from the TUN device are the plain IPv4 path's: find
        // the flow from the headers alone before reading the whole packet. Refusals count only for packets of a flow.
        let Some(key) = reply_flow_key(packet) else {
            return Ok(false);
        };
        if self.flows.get(&key, now, false).is_none() {
            return Ok(false);
        }
        let parsed = parse_v4(packet)?;
        let remote = Ipv4Addr::from(parsed.ip.source);
        let client = Ipv4Addr::from(parsed.ip.destination);
        if let Some(ports) = parsed.body.ports() {
            let key = flow_key(ports.reversed(), client, remote);
            let Some((class, mut entry)) = self.flows.get(&key, now, true) else {
                return Ok(false);
            };
            let closes = parsed.body.closes();
            let next = match class {
                Class::TcpEstablished if closes => Some(Class::TcpTransitory),
                Class::TcpTransitory if !closes && !entry.closing => Some(Class::TcpEstablished),
                Class::TcpTransitory if closes && !entry.closing => Some(Class::TcpTransitory),
                Class::TcpTransitory | Class::TcpEstablished | Class::Udp | Class::Icmp => None,
            };
            if let Some(next) = next {
                entry.closing |= closes;
                // Moving a flow it holds never fails.
                self.flows
                    .put(key, entry, next, now)
                    .map_err(|_| Via6Refusal::FlowTableFull)?;
            }
            let source = via6_address(ula, entry.site, remote);
            emit_v6(&parsed, source, entry.client, None, out)?;
            return Ok(true);
        }
        // An ICMPv4 error about a packet of a flow: the quoted packet went
        // client → remote.
        let Body::Error { inner, quoted, .. } = &parsed.body else {
            return Ok(false);
        };
        let Some(ports) = quoted_ports(inner.protocol.0, quoted) else {
            return Ok(false);
        };
        let inner_client = Ipv4Addr::from(inner.source);
        let inner_remote = Ipv4Addr::from(inner.destination);
        if inner_client != client {
            return Ok(false);
        }
        let key = flow_key(ports, inner_client, inner_remote);
        let Some((_, entry)) = self.flows.get(&key, now, false) else {
            return Ok(false);
        };
        // The error may come from a router on the way, outside the range:
        // it is still named by its IPv4 address at the flow's site.
        let source = via6_address(ula, entry.site, remote);
        let inner_addresses = (entry.client, via6_address(ula, entry.site, inner_remote));
        emit_v6(&parsed, source, entry.client, Some(inner_addresses), out)?;
        Ok(true)
    }
}

impl Ports {
    /// The ports of the other direction.
    fn reversed(self) -> Ports {
        Ports {
            protocol: self.protocol,
            source: self.destination,
            destination: self.source,
        }
    }
}

/// The flow of a client → remote packet with these ports.
fn flow_key(ports: Ports, client: Ipv4Addr, remote: Ipv4Addr) -> FlowKey {
    FlowKey {
        protocol: ports.protocol,
        client,
        client_port: ports.source,
        remote,
        remote_port: ports.destination,
    }
}

/// The flow an IPv4 packet from the TUN device would answer, read from
/// its headers only: a TCP or UDP reply, an echo reply, or an ICMP error
/// quoting a packet of the client's. `None` for anything else, later
/// fragments included (they have no ports: they take the plain IPv4 path,
/// where the client cannot reassemble them without the first fragment,
/// which is refused here).
fn reply_flow_key(packet: &[u8]) -> Option<FlowKey> {
    let (ip, rest) = etherparse::Ipv4Header::from_slice(packet).ok()?;
    if ip.fragment_offset.value() != 0 {
        return None;
    }
    let client = Ipv4Addr::from(ip.destination);
    let remote = Ipv4Addr::from(ip.source);
    let reply = |ports: Ports| flow_key(ports.reversed(), client, remote);
    match (ip.protocol, *rest.first()?) {
        (IpNumber::TCP | IpNumber::UDP, _) => quoted_ports(ip.protocol.0, rest).map(reply),
        (IpNumber::ICMP, icmpv4::TYPE_ECHO_REPLY) => quoted_ports(ip.protocol.0, rest).map(reply),
        (
            IpNumber::ICMP,
            icmpv4::TYPE_DEST_UNREACH | icmpv4::TYPE_TIME_EXCEEDED | icmpv4::TYPE_PARAMETER_PROBLEM,
        ) => {
            let (inner, quoted) = etherparse::Ipv4Header::from_slice(rest.get(8..)?).ok()?;
            let inner_client = Ipv4Addr::from(inner.source);
            if inner_client != client {
                return None;
            }
            let ports = quoted_ports(inner.protocol.0, quoted)?;
            Some(flow_key(
                ports,
                inner_client,
                Ipv4Addr::from(inner.destination),
            ))
        }
        _ => None,
    }
}

/// The class a new flow starts in.
fn first_class(protocol: u8) -> Class {
    match protocol {
        6 => Class::TcpTransitory,
        17 => Class::Udp,
        _ => Class::Icmp,
    }
}

/// The destination of an IPv6 packet, without parsing further.
fn ipv6_destination(packet: &[u8]) -> Option<Ipv6Addr> {
    if packet.first()? >> 4 != 6 {
        return None;
    }
    let bytes: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
    Some(Ipv6Addr::from(bytes))
}

#[cfg(test)]
mod tests;
