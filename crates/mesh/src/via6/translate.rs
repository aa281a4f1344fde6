//! Stateless IP/ICMP header translation (RFC 7915), in two steps per
//! direction: `parse_*` reads a packet with `etherparse`, checks it can be
//! translated and maps its ICMP type; `emit_*` writes the other family's
//! packet with the addresses the caller chose.
//!
//! TCP and UDP checksums are updated, not recomputed: translation changes
//! only the pseudo-header the checksum covers, so the old pseudo-header's
//! sum is taken out and the new one's put in (RFC 1624, equation 3)
//! without reading the payload. A corrupted segment thus stays corrupted
//! and the receiving host drops it, as it would have without translation;
//! it is never given a fresh, valid checksum. (A UDP datagram over IPv4
//! without a checksum gets one computed over the whole datagram, as IPv6
//! requires one.) ICMP checksums are verified and recomputed: the message
//! itself changes. The transport header inside an ICMP error's quote is
//! copied as it is: the quote may be truncated, so its checksum cannot be
//! recomputed (RFC 7915 §4.3 and §5.3 leave it alone too).

use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::checksum::Sum16BitWords;
use etherparse::{
    IcmpEchoHeader, Icmpv4Header, Icmpv4Slice, Icmpv4Type, Icmpv6Header, Icmpv6Slice, Icmpv6Type,
    IpNumber, Ipv4Header, Ipv6Header, Ipv6Slice, TcpHeader, TcpSlice, UdpHeader, UdpSlice, icmpv4,
    icmpv6,
};

use super::Via6Refusal;

/// IPv4 header without options, and IPv6's fixed header.
const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
/// ICMP error header (type, code, checksum, 4 bytes of type-specific data).
const ICMP_ERROR_HEADER_LEN: usize = 8;
/// An ICMPv6 error must fit the minimum IPv6 MTU (RFC 4443 §2.4 (c)).
const IPV6_MIN_MTU: usize = 1280;
/// The quote must hold at least the ports or the echo identifier.
const QUOTED_TRANSPORT_MIN: usize = 8;

/// IPv4 option types that route the packet by its source (RFC 791 §3.1):
/// such a packet is dropped rather than translated (RFC 7915 §4.1).
const LOOSE_SOURCE_ROUTE: u8 = 131;
const STRICT_SOURCE_ROUTE: u8 = 137;

/// What a translated packet carries above IP, after `parse_*`.
#[derive(Debug)]
pub(super) enum Body<'a, T, H> {
    Tcp(TcpHeader, &'a [u8]),
    Udp(UdpHeader, &'a [u8]),
    /// ICMP echo request or reply; `target` is the other family's type.
    Echo {
        target: T,
        id: u16,
        request: bool,
        payload: &'a [u8],
    },
    /// An ICMP error: the other family's type, the quoted packet's IP
    /// header and as much of its transport header and data as was quoted.
    Error {
        target: T,
        inner: H,
        quoted: &'a [u8],
    },
}

/// The ports of a transport header (for ICMP echo: the identifier, 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Ports {
    /// IPv4 protocol number: 6, 17 or 1.
    pub protocol: u8,
    pub source: u16,
    pub destination: u16,
}

/// An IPv6 packet, read for translation to IPv4.
#[derive(Debug)]
pub(super) struct Parsed6<'a> {
    pub ip: Ipv6Header,
    pub body: Body<'a, Icmpv4Type, Ipv6Header>,
}

/// An IPv4 packet, read for translation to IPv6.
#[derive(Debug)]
pub(super) struct Parsed4<'a> {
    pub ip: Ipv4Header,
    pub body: Body<'a, Icmpv6Type, Ipv4Header>,
}

impl<T, H> Body<'_, T, H> {
    /// The protocol number of the translated packet, `icmp` being the
    /// target family's ICMP.
    fn protocol(&self, icmp: IpNumber) -> IpNumber {
        match self {
            Body::Tcp(..) => IpNumber::TCP,
            Body::Udp(..) => IpNumber::UDP,
            Body::Echo { .. } | Body::Error { .. } => icmp,
        }
    }

    /// The translated packet's length above IP: an error's quote gets an
    /// IP header of `inner_header_len` and at most `quote_room` bytes.
    fn len(&self, inner_header_len: usize, quote_room: usize) -> usize {
        match self {
            Body::Tcp(h, p) => h.header_len() + p.len(),
            Body::Udp(h, p) => h.header_len() + p.len(),
            Body::Echo { payload, .. } => ICMP_ERROR_HEADER_LEN + payload.len(),
            Body::Error { quoted, .. } => {
                ICMP_ERROR_HEADER_LEN + inner_header_len + quoted.len().min(quote_room)
            }
        }
    }

    /// TCP FIN or RST: the connection is closing.
    pub(super) fn closes(&self) -> bool {
        matches!(self, Body::Tcp(tcp, _) if tcp.fin || tcp.rst)
    }

    /// The ports of the packet itself; `None` for an ICMP error.
    pub(super) fn ports(&self) -> Option<Ports> {
        match self {
            Body::Tcp(h, _) => Some(Ports {
                protocol: IpNumber::TCP.0,
                source: h.source_port,
                destination: h.destination_port,
            }),
            Body::Udp(h, _) => Some(Ports {
                protocol: IpNumber::UDP.0,
                source: h.source_port,
                destination: h.destination_port,
            }),
            Body::Echo { id, request, .. } => Some(if *request {
                Ports {
                    protocol: IpNumber::ICMP.0,
                    source: *id,
                    destination: 0,
                }
            } else {
                Ports {
                    protocol: IpNumber::ICMP.0,
                    source: 0,
                    destination: *id,
                }
            }),
            Body::Error { .. } => None,
        }
    }
}

/// The ports of an ICMP error's quoted packet, `protocol` being its IPv4
/// or IPv6 protocol number. A quoted echo gets the identifier on the
/// side that sent the request, as in [`Body::ports`].
pub(super) fn quoted_ports(protocol: u8, quoted: &[u8]) -> Option<Ports> {
    let word = |at: usize| Some(u16::from_be_bytes([*quoted.get(at)?, *quoted.get(at + 1)?]));
    let ports = |protocol, source, destination| Ports {
        protocol,
        source,
        destination,
    };
    match (protocol, *quoted.first()?) {
        (6 | 17, _) => Some(ports(protocol, word(0)?, word(2)?)),
        (1, icmpv4::TYPE_ECHO_REQUEST) | (58, icmpv6::TYPE_ECHO_REQUEST) => {
            Some(ports(IpNumber::ICMP.0, word(4)?, 0))
        }
        (1, icmpv4::TYPE_ECHO_REPLY) | (58, icmpv6::TYPE_ECHO_REPLY) => {
            Some(ports(IpNumber::ICMP.0, 0, word(4)?))
        }
        _ => None,
    }
}

/// Reads an IPv6 packet for translation to IPv4.
pub(super) fn parse_v6(packet: &[u8]) -> Result<Parsed6<'_>, Via6Refusal> {
    let (ip, rest) = Ipv6Header::from_slice(packet).map_err(|_| Via6Refusal::Malformed)?;
    let payload = rest
        .get(..usize::from(ip.payload_length))
        .ok_or(Via6Refusal::Malformed)?;
    let body = match ip.next_header {
        IpNumber::TCP | IpNumber::UDP => segment_body((&ip).into(), ip.next_header, payload)?,
        IpNumber::IPV6_ICMP => {
            let icmp = Icmpv6Slice::from_slice(payload).map_err(|_| Via6Refusal::Malformed)?;
            if !icmp.is_checksum_valid(ip.source, ip.destination) {
                return Err(Via6Refusal::BadChecksum);
            }
            icmpv6_body(icmp)?
        }
        _ => {
            // Extension headers, or a protocol we do not translate. RFC
            // 7915 §5.1.1 would translate fragments; we refuse them, and
            // count them apart so they are easy to spot.
            let fragment = Ipv6Slice::from_slice(packet)
                .is_ok_and(|slice| slice.extensions().is_fragmenting_payload())
                || ip.next_header == IpNumber::IPV6_FRAGMENTATION_HEADER;
            return Err(if fragment {
                Via6Refusal::Fragment
            } else {
                Via6Refusal::Unsupported
            });
        }
    };
    Ok(Parsed6 { ip, body })
}

/// Reads an IPv4 packet for translation to IPv6.
pub(super) fn parse_v4(packet: &[u8]) -> Result<Parsed4<'_>, Via6Refusal> {
    let (ip, rest) = Ipv4Header::from_slice(packet).map_err(|_| Via6Refusal::Malformed)?;
    if ip.more_fragments || ip.fragment_offset.value() != 0 {
        return Err(Via6Refusal::Fragment);
    }
    if ip.calc_header_checksum() != ip.header_checksum {
        return Err(Via6Refusal::BadChecksum);
    }
    if has_source_route(&ip.options[..]) {
        return Err(Via6Refusal::Unsupported);
    }
    let payload_len = usize::from(ip.total_len)
        .checked_sub(ip.header_len())
        .ok_or(Via6Refusal::Malformed)?;
    let payload = rest.get(..payload_len).ok_or(Via6Refusal::Malformed)?;
    let body = match ip.protocol {
        IpNumber::TCP | IpNumber::UDP => segment_body((&ip).into(), ip.protocol, payload)?,
        IpNumber::ICMP => {
            let icmp = Icmpv4Slice::from_slice(payload).map_err(|_| Via6Refusal::Malformed)?;
            if Sum16BitWords::new().add_slice(payload).ones_complement() != 0 {
                return Err(Via6Refusal::BadChecksum);
            }
            icmpv4_body(icmp)?
        }
        _ => return Err(Via6Refusal::Unsupported),
    };
    Ok(Parsed4 { ip, body })
}

/// Writes the IPv4 translation of `parsed` into `out`: outer addresses
/// `source` → `destination`, and for an ICMP error the quoted packet's
/// addresses `inner` (source, destination).
pub(super) fn emit_v4(
    parsed: &Parsed6<'_>,
    source: Ipv4Addr,
    destination: Ipv4Addr,
    inner: Option<(Ipv4Addr, Ipv4Addr)>,
    out: &mut Vec<u8>,
) -> Result<(), Via6Refusal> {
    let protocol = parsed.body.protocol(IpNumber::ICMP);
    let transport_len = parsed.body.len(IPV4_HEADER_LEN, usize::MAX);
    let ip = ipv4_from(&parsed.ip, transport_len, protocol, source, destination)?;
    out.clear();
    out.extend_from_slice(&ip.to_bytes());
    match &parsed.body {
        Body::Tcp(h, payload) => write_segment(h, IpNumber::TCP, &parsed.ip, &ip, payload, out)?,
        Body::Udp(h, payload) => write_segment(h, IpNumber::UDP, &parsed.ip, &ip, payload, out)?,
        Body::Echo {
            target, payload, ..
        } => {
            let icmp = Icmpv4Header::with_checksum(target.clone(), payload);
            out.extend_from_slice(&icmp.to_bytes());
            out.extend_from_slice(payload);
        }
        Body::Error {
            target,
            inner: quoted_ip,
            quoted,
        } => {
            let (inner_source, inner_destination) = inner.ok_or(Via6Refusal::Unsupported)?;
            let quoted_protocol = ipv4_protocol(quoted_ip.next_header)?;
            let original_len = usize::from(quoted_ip.payload_length);
            let inner_ip = ipv4_from(
                quoted_ip,
                original_len,
                quoted_protocol,
                inner_source,
                inner_destination,
            )?;
            let echo_types = (quoted_protocol == IpNumber::ICMP).then_some(ECHO_6_TO_4);
            let start = write_quote(&inner_ip.to_bytes(), quoted, echo_types, out);
            let icmp = Icmpv4Header::with_checksum(target.clone(), &out[start..]);
            out[IPV4_HEADER_LEN..start].copy_from_slice(&icmp.to_bytes());
        }
    }
    Ok(())
}

/// Writes the IPv6 translation of `parsed` into `out`, as [`emit_v4`].
pub(super) fn emit_v6(
    parsed: &Parsed4<'_>,
    source: Ipv6Addr,
    destination: Ipv6Addr,
    inner: Option<(Ipv6Addr, Ipv6Addr)>,
    out: &mut Vec<u8>,
) -> Result<(), Via6Refusal> {
    // An ICMPv6 error is cut to the minimum MTU.
    let quote_room = IPV6_MIN_MTU - IPV6_HEADER_LEN - ICMP_ERROR_HEADER_LEN - IPV6_HEADER_LEN;
    let next_header = parsed.body.protocol(IpNumber::IPV6_ICMP);
    let transport_len = parsed.body.len(IPV6_HEADER_LEN, quote_room);
    let ip = ipv6_from(&parsed.ip, transport_len, next_header, source, destination)?;
    out.clear();
    out.extend_from_slice(&ip.to_bytes());
    match &parsed.body {
        Body::Tcp(h, payload) => write_segment(h, IpNumber::TCP, &parsed.ip, &ip, payload, out)?,
        Body::Udp(h, payload) => write_segment(h, IpNumber::UDP, &parsed.ip, &ip, payload, out)?,
        Body::Echo {
            target, payload, ..
        } => {
            let icmp = Icmpv6Header::with_checksum(*target, ip.source, ip.destination, payload)
                .map_err(|_| Via6Refusal::Unsupported)?;
            out.extend_from_slice(&icmp.to_bytes());
            out.extend_from_slice(payload);
        }
        Body::Error {
            target,
            inner: quoted_ip,
            quoted,
        } => {
            let (inner_source, inner_destination) = inner.ok_or(Via6Refusal::Unsupported)?;
            let quoted_next = ipv6_next_header(quoted_ip.protocol)?;
            let original_len =
                usize::from(quoted_ip.total_len).saturating_sub(quoted_ip.header_len());
            let inner_ip = ipv6_from(
                quoted_ip,
                original_len,
                quoted_next,
                inner_source,
                inner_destination,
            )?;
            let quoted = &quoted[..quoted.len().min(quote_room)];
            let echo_types = (quoted_next == IpNumber::IPV6_ICMP).then_some(ECHO_4_TO_6);
            let start = write_quote(&inner_ip.to_bytes(), quoted, echo_types, out);
            let icmp =
                Icmpv6Header::with_checksum(*target, ip.source, ip.destination, &out[start..])
                    .map_err(|_| Via6Refusal::Unsupported)?;
            out[IPV6_HEADER_LEN..start].copy_from_slice(&icmp.to_bytes());
        }
    }
    Ok(())
}

/// A TCP or UDP header whose checksum covers an IP pseudo-header.
pub(super) trait Segment: Clone {
    /// The checksum of this header and `payload` under `ip`'s
    /// pseudo-header, by etherparse.
    fn checksum_under(&self, ip: &PseudoHeader<'_>, payload: &[u8]) -> Option<u16>;
    fn checksum(&self) -> u16;
    fn set_checksum(&mut self, checksum: u16);
    fn header_len(&self) -> usize;
    fn write_to(&self, out: &mut Vec<u8>);
}

/// The IP header a transport checksum is computed under.
pub(super) enum PseudoHeader<'a> {
    V4(&'a Ipv4Header),
    V6(&'a Ipv6Header),
}

impl<'a> From<&'a Ipv4Header> for PseudoHeader<'a> {
    fn from(ip: &'a Ipv4Header) -> Self {
        PseudoHeader::V4(ip)
    }
}

impl<'a> From<&'a Ipv6Header> for PseudoHeader<'a> {
    fn from(ip: &'a Ipv6Header) -> Self {
        PseudoHeader::V6(ip)
    }
}

/// TCP and UDP headers offer the same checksum calls in etherparse.
macro_rules! segment {
    ($header:ty) => {
        impl Segment for $header {
            fn checksum_under(&self, ip: &PseudoHeader<'_>, payload: &[u8]) -> Option<u16> {
                match ip {
                    PseudoHeader::V4(ip) => self.calc_checksum_ipv4(ip, payload).ok(),
                    PseudoHeader::V6(ip) => self.calc_checksum_ipv6(ip, payload).ok(),
                }
            }

            fn checksum(&self) -> u16 {
                self.checksum
            }

            fn set_checksum(&mut self, checksum: u16) {
                self.checksum = checksum;
            }

            fn header_len(&self) -> usize {
                usize::from(<$header>::header_len(self))
            }

            fn write_to(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_bytes());
            }
        }
    };
}

segment!(TcpHeader);
segment!(UdpHeader);

/// Appends a TCP or UDP segment that travelled under `from` with its
/// checksum moved to `to`'s pseudo-header (RFC 1624, equation 3:
/// `HC' = ~(~HC + ~m + m')`, `m` and `m'` the two pseudo-headers' sums).
/// A UDP checksum of 0 (none, over IPv4) is computed in full instead.
fn write_segment<'a, 'b, S: Segment>(
    header: &S,
    protocol: IpNumber,
    from: impl Into<PseudoHeader<'a>>,
    to: impl Into<PseudoHeader<'b>>,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), Via6Refusal> {
    let mut header = header.clone();
    let (from, to) = (from.into(), to.into());
    let old = header.checksum();
    let checksum = if old == 0 && protocol == IpNumber::UDP {
        header
            .checksum_under(&to, payload)
            .ok_or(Via6Refusal::Unsupported)?
    } else {
        // etherparse sums the words as they lie in memory (native byte
        // order): words go in and come out as wire bytes.
        let len = header.header_len() + payload.len();
        let taken_out = pseudo_sum(Sum16BitWords::new(), &from, protocol, len)
            .ok_or(Via6Refusal::Unsupported)?
            .ones_complement()
            .to_ne_bytes();
        let start = Sum16BitWords::new()
            .add_2bytes((!old).to_be_bytes())
            .add_2bytes(taken_out);
        let updated = u16::from_be_bytes(
            pseudo_sum(start, &to, protocol, len)
                .ok_or(Via6Refusal::Unsupported)?
                .ones_complement()
                .to_ne_bytes(),
        );
        // In UDP a computed 0 is sent as all ones (0 means "none").
        if updated == 0 && protocol == IpNumber::UDP {
            0xffff
        } else {
            updated
        }
    };
    header.set_checksum(checksum);
    header.write_to(out);
    out.extend_from_slice(payload);
    Ok(())
}

/// The IPv4 header for an IPv6 one (RFC 7915 §5.1): TOS from the traffic
/// class, TTL from the hop limit (the kernel decrements it when it
/// forwards the packet from the TUN device: that is the router's hop), DF
/// set and identification 0 (an atomic datagram, RFC 6864 §4.1).
fn ipv4_from(
    v6: &Ipv6Header,
    payload_len: usize,
    protocol: IpNumber,
    source: Ipv4Addr,
    destination: Ipv4Addr,
) -> Result<Ipv4Header, Via6Refusal> {
    let payload_len = u16::try_from(payload_len).map_err(|_| Via6Refusal::Unsupported)?;
    let mut ip = Ipv4Header::new(
        payload_len,
        v6.hop_limit,
        protocol,
        source.octets(),
        destination.octets(),
    )
    .map_err(|_| Via6Refusal::Unsupported)?;
    ip.dscp = v6.dscp();
    ip.ecn = v6.ecn();
    ip.dont_fragment = true;
    ip.header_checksum = ip.calc_header_checksum();
    Ok(ip)
}

/// The IPv6 header for an IPv4 one (RFC 7915 §4.1): traffic class from
/// the TOS, flow label 0, hop limit from the TTL; options are dropped.
fn ipv6_from(
    v4: &Ipv4Header,
    payload_len: usize,
    next_header: IpNumber,
    source: Ipv6Addr,
    destination: Ipv6Addr,
) -> Result<Ipv6Header, Via6Refusal> {
    let mut ip = Ipv6Header {
        next_header,
        hop_limit: v4.time_to_live,
        source: source.octets(),
        destination: destination.octets(),
        ..Ipv6Header::default()
    };
    ip.set_payload_length(payload_len)
        .map_err(|_| Via6Refusal::Unsupported)?;
    ip.set_dscp(v4.dscp);
    ip.set_ecn(v4.ecn);
    Ok(ip)
}

/// ICMPv6 message → the ICMPv4 one it becomes (RFC 7915 §5.2).
fn icmpv6_body(icmp: Icmpv6Slice<'_>) -> Result<Body<'_, Icmpv4Type, Ipv6Header>, Via6Refusal> {
    use icmpv4::DestUnreachableHeader as Unreach4;
    use icmpv6::DestUnreachableCode as Unreach6;
    let payload = icmp.payload();
    let target = match icmp.icmp_type() {
        Icmpv6Type::EchoRequest(echo) => {
            return Ok(Body::Echo {
                target: Icmpv4Type::EchoRequest(echo),
                id: echo.id,
                request: true,
                payload,
            });
        }
        Icmpv6Type::EchoReply(echo) => {
            return Ok(Body::Echo {
                target: Icmpv4Type::EchoReply(echo),
                id: echo.id,
                request: false,
                payload,
            });
        }
        Icmpv6Type::DestinationUnreachable(code) => {
            Icmpv4Type::DestinationUnreachable(match code {
                Unreach6::NoRoute | Unreach6::BeyondScope | Unreach6::Address => Unreach4::Host,
                Unreach6::Prohibited => Unreach4::HostProhibited,
                Unreach6::Port => Unreach4::Port,
                Unreach6::SourceAddressFailedPolicy | Unreach6::RejectRoute => {
                    return Err(Via6Refusal::Unsupported);
                }
            })
        }
        Icmpv6Type::PacketTooBig { mtu } => {
            let next_hop_mtu = u16::try_from(mtu.saturating_sub(20)).unwrap_or(u16::MAX);
            Icmpv4Type::DestinationUnreachable(Unreach4::FragmentationNeeded { next_hop_mtu })
        }
        Icmpv6Type::TimeExceeded(code) => Icmpv4Type::TimeExceeded(match code {
            icmpv6::TimeExceededCode::HopLimitExceeded => {
                icmpv4::TimeExceededCode::TtlExceededInTransit
            }
            icmpv6::TimeExceededCode::FragmentReassemblyTimeExceeded => {
                icmpv4::TimeExceededCode::FragmentReassemblyTimeExceeded
            }
        }),
        Icmpv6Type::ParameterProblem(problem) => match problem.code {
            icmpv6::ParameterProblemCode::ErroneousHeaderField => {
                let pointer = pointer_6to4(problem.pointer).ok_or(Via6Refusal::Unsupported)?;
                Icmpv4Type::ParameterProblem(icmpv4::ParameterProblemHeader::PointerIndicatesError(
                    pointer,
                ))
            }
            icmpv6::ParameterProblemCode::UnrecognizedNextHeader => {
                Icmpv4Type::DestinationUnreachable(Unreach4::Protocol)
            }
            _ => return Err(Via6Refusal::Unsupported),
        },
        // Neighbour discovery, MLD and the rest are single-hop or have
        // no IPv4 counterpart (RFC 7915 §5.2: silently drop).
        _ => return Err(Via6Refusal::Unsupported),
    };
    let (inner, rest) = Ipv6Header::from_slice(payload).map_err(|_| Via6Refusal::Malformed)?;
    if !matches!(
        inner.next_header,
        IpNumber::TCP | IpNumber::UDP | IpNumber::IPV6_ICMP
    ) {
        return Err(Via6Refusal::Unsupported);
    }
    if rest.len() < QUOTED_TRANSPORT_MIN {
        return Err(Via6Refusal::Malformed);
    }
    Ok(Body::Error {
        target,
        inner,
        quoted: rest,
    })
}

/// ICMPv4 message → the ICMPv6 one it becomes (RFC 7915 §4.2).
fn icmpv4_body(icmp: Icmpv4Slice<'_>) -> Result<Body<'_, Icmpv6Type, Ipv4Header>, Via6Refusal> {
    use icmpv4::DestUnreachableHeader as Unreach4;
    use icmpv6::DestUnreachableCode as Unreach6;
    let payload = icmp.payload();
    let target = match icmp.icmp_type() {
        Icmpv4Type::EchoRequest(echo) => {
            return Ok(echo_body(
                Icmpv6Type::EchoRequest(echo),
                echo,
                true,
                payload,
            ));
        }
        Icmpv4Type::EchoReply(echo) => {
            return Ok(echo_body(Icmpv6Type::EchoReply(echo), echo, false, payload));
        }
        Icmpv4Type::DestinationUnreachable(header) => match header {
            Unreach4::Network
            | Unreach4::Host
            | Unreach4::SourceRouteFailed
            | Unreach4::NetworkUnknown
            | Unreach4::HostUnknown
            | Unreach4::Isolated
            | Unreach4::TosNetwork
            | Unreach4::TosHost => Icmpv6Type::DestinationUnreachable(Unreach6::NoRoute),
            Unreach4::Protocol => Icmpv6Type::ParameterProblem(icmpv6::ParameterProblemHeader {
                code: icmpv6::ParameterProblemCode::UnrecognizedNextHeader,
                // The Next Header field's offset in the IPv6 header.
                pointer: 6,
            }),
            Unreach4::Port => Icmpv6Type::DestinationUnreachable(Unreach6::Port),
            Unreach4::FragmentationNeeded { next_hop_mtu } => {
                // A zero MTU comes from a router older than RFC 1191; the
                // minimum IPv6 MTU is the safe answer then.
                let mtu = match next_hop_mtu {
                    0 => IPV6_MIN_MTU as u32,
                    m => u32::from(m) + 20,
                };
                Icmpv6Type::PacketTooBig { mtu }
            }
            Unreach4::NetworkProhibited
            | Unreach4::HostProhibited
            | Unreach4::FilterProhibited
            | Unreach4::PrecedenceCutoff => {
                Icmpv6Type::DestinationUnreachable(Unreach6::Prohibited)
            }
            Unreach4::HostPrecedenceViolation => return Err(Via6Refusal::Unsupported),
        },
        Icmpv4Type::TimeExceeded(code) => Icmpv6Type::TimeExceeded(match code {
            icmpv4::TimeExceededCode::TtlExceededInTransit => {
                icmpv6::TimeExceededCode::HopLimitExceeded
            }
            icmpv4::TimeExceededCode::FragmentReassemblyTimeExceeded => {
                icmpv6::TimeExceededCode::FragmentReassemblyTimeExceeded
            }
        }),
        Icmpv4Type::ParameterProblem(icmpv4::ParameterProblemHeader::PointerIndicatesError(
            pointer,
        )) => Icmpv6Type::ParameterProblem(icmpv6::ParameterProblemHeader {
            code: icmpv6::ParameterProblemCode::ErroneousHeaderField,
            pointer: pointer_4to6(pointer).ok_or(Via6Refusal::Unsupported)?,
        }),
        // Redirects, timestamps, information requests, "missing option":
        // no IPv6 counterpart (RFC 7915 §4.2: silently drop).
        _ => return Err(Via6Refusal::Unsupported),
    };
    let (inner, rest) = Ipv4Header::from_slice(payload).map_err(|_| Via6Refusal::Malformed)?;
    if !matches!(
        inner.protocol,
        IpNumber::TCP | IpNumber::UDP | IpNumber::ICMP
    ) {
        return Err(Via6Refusal::Unsupported);
    }
    if inner.more_fragments || inner.fragment_offset.value() != 0 {
        return Err(Via6Refusal::Fragment);
    }
    if rest.len() < QUOTED_TRANSPORT_MIN {
        return Err(Via6Refusal::Malformed);
    }
    Ok(Body::Error {
        target,
        inner,
        quoted: rest,
    })
}

fn echo_body<T, H>(
    target: T,
    echo: IcmpEchoHeader,
    request: bool,
    payload: &[u8],
) -> Body<'_, T, H> {
    Body::Echo {
        target,
        id: echo.id,
        request,
        payload,
    }
}

/// RFC 7915 Figure 6: where an ICMPv6 parameter problem's pointer lands
/// in the IPv4 header; `None` for fields IPv4 has no counterpart of.
fn pointer_6to4(pointer: u32) -> Option<u8> {
    match pointer {
        0 => Some(0),        // Version/Traffic Class
        1 => Some(1),        // Traffic Class/Flow Label
        4 | 5 => Some(2),    // Payload Length → Total Length
        6 => Some(9),        // Next Header → Protocol
        7 => Some(8),        // Hop Limit → TTL
        8..=23 => Some(12),  // Source Address
        24..=39 => Some(16), // Destination Address
        _ => None,
    }
}

/// RFC 7915 Figure 3: where an ICMPv4 parameter problem's pointer lands
/// in the IPv6 header.
fn pointer_4to6(pointer: u8) -> Option<u32> {
    match pointer {
        0 => Some(0),        // Version/IHL
        1 => Some(1),        // Type of Service
        2 | 3 => Some(4),    // Total Length → Payload Length
        8 => Some(7),        // TTL → Hop Limit
        9 => Some(6),        // Protocol → Next Header
        12..=15 => Some(8),  // Source Address
        16..=19 => Some(24), // Destination Address
        _ => None,
    }
}

fn ipv4_protocol(next_header: IpNumber) -> Result<IpNumber, Via6Refusal> {
    match next_header {
        IpNumber::IPV6_ICMP => Ok(IpNumber::ICMP),
        IpNumber::TCP | IpNumber::UDP => Ok(next_header),
        _ => Err(Via6Refusal::Unsupported),
    }
}

fn ipv6_next_header(protocol: IpNumber) -> Result<IpNumber, Via6Refusal> {
    match protocol {
        IpNumber::ICMP => Ok(IpNumber::IPV6_ICMP),
        IpNumber::TCP | IpNumber::UDP => Ok(protocol),
        _ => Err(Via6Refusal::Unsupported),
    }
}

/// ICMPv6 echo types and their ICMPv4 counterparts, and back.
const ECHO_6_TO_4: &[(u8, u8)] = &[
    (icmpv6::TYPE_ECHO_REQUEST, icmpv4::TYPE_ECHO_REQUEST),
    (icmpv6::TYPE_ECHO_REPLY, icmpv4::TYPE_ECHO_REPLY),
];
const ECHO_4_TO_6: &[(u8, u8)] = &[
    (icmpv4::TYPE_ECHO_REQUEST, icmpv6::TYPE_ECHO_REQUEST),
    (icmpv4::TYPE_ECHO_REPLY, icmpv6::TYPE_ECHO_REPLY),
];

/// Appends room for an ICMP error header, then the quoted packet: its
/// translated IP header and the quoted bytes, a quoted echo's type
/// rewritten by `echo_types`. Returns where the ICMP payload starts.
fn write_quote(
    inner_ip: &[u8],
    quoted: &[u8],
    echo_types: Option<&[(u8, u8)]>,
    out: &mut Vec<u8>,
) -> usize {
    let start = out.len() + ICMP_ERROR_HEADER_LEN;
    out.resize(start, 0);
    out.extend_from_slice(inner_ip);
    let transport_at = out.len();
    out.extend_from_slice(quoted);
    if let Some(mapping) = echo_types
        && let Some(kind) = out.get_mut(transport_at)
        && let Some(&(_, to)) = mapping.iter().find(|(from, _)| from == kind)
    {
        *kind = to;
    }
    start
}

/// Reads a TCP or UDP segment. Its checksum is not verified here (the
/// update in [`write_segment`] keeps a wrong one wrong), except that a UDP
/// datagram over IPv6 must have one (RFC 8200 §8.1); over IPv4, 0 means
/// none (RFC 768) and the IPv6 packet gets one (RFC 7915 §4.5).
fn segment_body<'a, T, H>(
    ip: PseudoHeader<'_>,
    protocol: IpNumber,
    segment: &'a [u8],
) -> Result<Body<'a, T, H>, Via6Refusal> {
    if protocol == IpNumber::UDP {
        let udp = UdpSlice::from_slice(segment).map_err(|_| Via6Refusal::Malformed)?;
        if udp.checksum() == 0 && matches!(ip, PseudoHeader::V6(_)) {
            return Err(Via6Refusal::BadChecksum);
        }
        return Ok(Body::Udp(udp.to_header(), udp.payload()));
    }
    let tcp = TcpSlice::from_slice(segment).map_err(|_| Via6Refusal::Malformed)?;
    Ok(Body::Tcp(tcp.to_header(), tcp.payload()))
}

/// Adds the words of `ip`'s pseudo-header for a `len`-byte `protocol`
/// segment (RFC 9293 §3.1, RFC 768, RFC 8200 §8.1) to `sum`; `None` when
/// the length does not fit it.
fn pseudo_sum(
    mut sum: Sum16BitWords,
    ip: &PseudoHeader<'_>,
    protocol: IpNumber,
    len: usize,
) -> Option<Sum16BitWords> {
    Some(match ip {
        PseudoHeader::V4(ip) => sum
            .add_4bytes(ip.source)
            .add_4bytes(ip.destination)
            .add_2bytes([0, protocol.0])
            .add_2bytes(u16::try_from(len).ok()?.to_be_bytes()),
        PseudoHeader::V6(ip) => sum
            .add_16bytes(ip.source)
            .add_16bytes(ip.destination)
            .add_4bytes(u32::try_from(len).ok()?.to_be_bytes())
            .add_2bytes([0, protocol.0]),
    })
}

/// Whether IPv4 options hold a source route (RFC 791 §3.1): option type
/// 0 ends the list, 1 is one byte, the others carry a length byte.
fn has_source_route(options: &[u8]) -> bool {
    let mut at = 0;
    while let Some(&kind) = options.get(at) {
        match kind {
            0 => return false,
            1 => at += 1,
            LOOSE_SOURCE_ROUTE | STRICT_SOURCE_ROUTE => return true,
            _ => match options.get(at + 1) {
                Some(&len) if len >= 2 => at += usize::from(len),
                // A broken option list: treat it as dangerous.
                _ => return true,
            },
        }
    }
    false
}
