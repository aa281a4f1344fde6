//! Reading IP packets: just enough of the header to route one
//! ([`parse_ip_header`]: version, source and destination, RFC 791 §3.1,
//! RFC 8200 §3), and what the packet filter needs to know about one
//! ([`parse_flow`]: protocol, ports, ICMP type, fragments).
//!
//! The IP layer, IPv6 extension headers included, is read by `etherparse`;
//! the transport header is a few fixed offsets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{IpSlice, Ipv6ExtensionSlice, LaxIpSlice};

/// The addresses of an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpHeader {
    /// Source address.
    pub source: IpAddr,
    /// Destination address.
    pub destination: IpAddr,
}

const IPV4_HEADER_MIN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;

/// Reads the source and destination of an IPv4 or IPv6 packet; `None` for
/// anything too short or of another version.
pub fn parse_ip_header(packet: &[u8]) -> Option<IpHeader> {
    match packet.first()? >> 4 {
        4 if packet.len() >= IPV4_HEADER_MIN => {
            let source: [u8; 4] = packet[12..16].try_into().ok()?;
            let destination: [u8; 4] = packet[16..20].try_into().ok()?;
            Some(IpHeader {
                source: Ipv4Addr::from(source).into(),
                destination: Ipv4Addr::from(destination).into(),
            })
        }
        6 if packet.len() >= IPV6_HEADER_LEN => {
            let source: [u8; 16] = packet[8..24].try_into().ok()?;
            let destination: [u8; 16] = packet[24..40].try_into().ok()?;
            Some(IpHeader {
                source: Ipv6Addr::from(source).into(),
                destination: Ipv6Addr::from(destination).into(),
            })
        }
        _ => None,
    }
}

/// IANA protocol numbers the filter reads further than the IP header.
pub(crate) mod protocol {
    /// ICMP for IPv4 (RFC 792).
    pub const ICMP: u8 = 1;
    /// TCP (RFC 9293).
    pub const TCP: u8 = 6;
    /// UDP (RFC 768).
    pub const UDP: u8 = 17;
    /// ICMPv6 (RFC 4443).
    pub const ICMPV6: u8 = 58;
    /// SCTP (RFC 9260).
    pub const SCTP: u8 = 132;
}

/// One direction of a flow: protocol, addresses and ports. For ICMP echo
/// the identifier stands in for both ports (request and reply carry the
/// same one); for protocols without ports both are 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    /// IANA protocol number.
    pub protocol: u8,
    /// Source address.
    pub source: IpAddr,
    /// Destination address.
    pub destination: IpAddr,
    /// TCP/UDP/SCTP source port, or the ICMP echo identifier.
    pub source_port: u16,
    /// TCP/UDP/SCTP destination port, or the ICMP echo identifier.
    pub destination_port: u16,
}

/// What kind of packet a [`Flow`] was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketKind {
    /// TCP, UDP or SCTP with its ports read; `opens` is true for a TCP SYN
    /// without ACK, the only TCP packet that opens a connection.
    Ports {
        /// A TCP SYN without ACK.
        opens: bool,
    },
    /// ICMP or ICMPv6 echo request.
    EchoRequest,
    /// ICMP or ICMPv6 echo reply.
    EchoReply,
    /// An ICMP error (destination unreachable, packet too big, time
    /// exceeded, parameter problem) and the packet it quotes, when the
    /// quote could be read.
    IcmpError(Option<QuotedPacket>),
    /// Any other ICMP message.
    IcmpOther,
    /// A fragment other than the first: no transport header to read.
    LaterFragment,
    /// A protocol without ports (GRE, ESP, …).
    Other,
}

/// The packet an ICMP error quotes, as that packet was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotedPacket {
    /// Its flow (for an echo, the identifier is the source port).
    pub flow: Flow,
    /// Whether it was an ICMP echo reply (the answer to the error's
    /// receiver's peer's ping) rather than anything else.
    pub echo_reply: bool,
}

/// What the packet filter reads from a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketSummary {
    /// Protocol, addresses, ports (zero where not read).
    pub flow: Flow,
    /// What sort of packet it is.
    pub kind: PacketKind,
}

/// Why a packet cannot be read far enough to filter it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadHeader {
    /// The IP header or an IPv6 extension header is malformed or cut short.
    #[error("malformed or truncated IP header")]
    Ip,
    /// The transport header is cut short (including a first fragment too
    /// small to hold it, RFC 1858 §3.1, RFC 7112).
    #[error("truncated transport header")]
    Transport,
    /// An IPv4 TCP fragment at offset 8 bytes, which could overwrite the
    /// flags of the first fragment's header (RFC 1858 §4).
    #[error("overlapping TCP fragment")]
    OverlappingFragment,
}

/// Reads protocol, addresses, ports or ICMP type from an IPv4 or IPv6
/// packet, following IPv6 extension headers to the transport header.
///
/// Fragments: the first fragment is read like a whole packet and must hold
/// the whole transport header; later fragments carry no ports and come
/// back as [`PacketKind::LaterFragment`].
pub fn parse_flow(packet: &[u8]) -> Result<PacketSummary, BadHeader> {
    let ip = IpSlice::from_slice(packet).map_err(|_| BadHeader::Ip)?;
    let source = ip.source_addr();
    let destination = ip.destination_addr();
    let payload = ip.payload();
    let protocol = payload.ip_number.0;
    let mut flow = Flow {
        protocol,
        source,
        destination,
        source_port: 0,
        destination_port: 0,
    };
    if payload.fragmented {
        let offset = fragment_offset(&ip);
        if offset != 0 {
            if offset == 1 && protocol == protocol::TCP && ip.ipv4().is_some() {
                return Err(BadHeader::OverlappingFragment);
            }
            return Ok(PacketSummary {
                flow,
                kind: PacketKind::LaterFragment,
            });
        }
    }
    let v6 = ip.ipv6().is_some();
    let kind = read_transport(&mut flow, v6, payload.payload).ok_or(BadHeader::Transport)?;
    Ok(PacketSummary { flow, kind })
}

/// Transport header lengths the filter needs: TCP's fixed header (its
/// flags are in byte 13), UDP's header, SCTP's common header, and the ICMP
/// header up to the echo identifier.
const TCP_HEADER_MIN: usize = 20;
const UDP_HEADER_LEN: usize = 8;
const SCTP_HEADER_LEN: usize = 12;
const ICMP_HEADER_LEN: usize = 8;

const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;

/// ICMP (RFC 792) and ICMPv6 (RFC 4443 §2.1) message types.
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACHABLE: u8 = 3;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETER_PROBLEM: u8 = 12;
const ICMPV6_DEST_UNREACHABLE: u8 = 1;
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
const ICMPV6_TIME_EXCEEDED: u8 = 3;
const ICMPV6_PARAMETER_PROBLEM: u8 = 4;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

/// The fragment offset in 8-byte units (0 for the first or only fragment).
fn fragment_offset(ip: &IpSlice<'_>) -> u16 {
    match ip {
        IpSlice::Ipv4(v4) => v4.header().fragments_offset().value(),
        IpSlice::Ipv6(v6) => v6
            .extensions()
            .clone()
            .into_iter()
            .find_map(|e| match e {
                Ipv6ExtensionSlice::Fragment(f) => Some(f.fragment_offset().value()),
                Ipv6ExtensionSlice::HopByHop(_)
                | Ipv6ExtensionSlice::Routing(_)
                | Ipv6ExtensionSlice::DestinationOptions(_)
                | Ipv6ExtensionSlice::Authentication(_) => None,
            })
            .unwrap_or(0),
    }
}

/// Fills in ports or the echo identifier and says what kind of packet this
/// is; `None` when the transport header is too short.
fn read_transport(flow: &mut Flow, v6: bool, l4: &[u8]) -> Option<PacketKind> {
    let ports = |len: usize, flow: &mut Flow| -> Option<()> {
        let header = l4.get(..len)?;
        flow.source_port = u16::from_be_bytes([header[0], header[1]]);
        flow.destination_port = u16::from_be_bytes([header[2], header[3]]);
        Some(())
    };
    match (flow.protocol, v6) {
        (protocol::TCP, _) => {
            ports(TCP_HEADER_MIN, flow)?;
            let flags = l4[13];
            let opens = flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN;
            Some(PacketKind::Ports { opens })
        }
        (protocol::UDP, _) => {
            ports(UDP_HEADER_LEN, flow).map(|()| PacketKind::Ports { opens: false })
        }
        (protocol::SCTP, _) => {
            ports(SCTP_HEADER_LEN, flow).map(|()| PacketKind::Ports { opens: false })
        }
        (protocol::ICMP, false) | (protocol::ICMPV6, true) => {
            let header = l4.get(..ICMP_HEADER_LEN)?;
            let (request, reply) = if v6 {
                (ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY)
            } else {
                (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY)
            };
            let kind = match header[0] {
                t if t == request => PacketKind::EchoRequest,
                t if t == reply => PacketKind::EchoReply,
                t if is_icmp_error(t, v6) => {
                    PacketKind::IcmpError(quoted_flow(v6, &l4[ICMP_HEADER_LEN..]))
                }
                _ => PacketKind::IcmpOther,
            };
            if matches!(kind, PacketKind::EchoRequest | PacketKind::EchoReply) {
                flow.source_port = u16::from_be_bytes([header[4], header[5]]);
                flow.destination_port = flow.source_port;
            }
            Some(kind)
        }
        _ => Some(PacketKind::Other),
    }
}

fn is_icmp_error(icmp_type: u8, v6: bool) -> bool {
    if v6 {
        matches!(
            icmp_type,
            ICMPV6_DEST_UNREACHABLE
                | ICMPV6_PACKET_TOO_BIG
                | ICMPV6_TIME_EXCEEDED
                | ICMPV6_PARAMETER_PROBLEM
        )
    } else {
        matches!(
            icmp_type,
            ICMP_DEST_UNREACHABLE | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM
        )
    }
}

/// The flow of the packet an ICMP error quotes: its IP header and at least
/// the first 8 bytes of its payload (RFC 792; ICMPv6 quotes as much as
/// fits, RFC 4443 §3.1), which hold the ports or the echo identifier. The
/// quote is cut short by design, so it is read leniently; it must be of the
/// same IP version as the error.
fn quoted_flow(v6: bool, quote: &[u8]) -> Option<QuotedPacket> {
    let (ip, _) = LaxIpSlice::from_slice(quote).ok()?;
    if ip.ipv6().is_some() != v6 {
        return None;
    }
    let payload = ip.payload();
    let mut echo_reply = false;
    let mut flow = Flow {
        protocol: payload.ip_number.0,
        source: ip.source_addr(),
        destination: ip.destination_addr(),
        source_port: 0,
        destination_port: 0,
    };
    let l4 = payload.payload;
    match (flow.protocol, v6) {
        (protocol::TCP | protocol::UDP | protocol::SCTP, _) => {
            let header = l4.get(..4)?;
            flow.source_port = u16::from_be_bytes([header[0], header[1]]);
            flow.destination_port = u16::from_be_bytes([header[2], header[3]]);
        }
        (protocol::ICMP, false) | (protocol::ICMPV6, true) => {
            // Only an echo request or reply has an identifier worth quoting.
            let header = l4.get(..ICMP_HEADER_LEN)?;
            let echo = if v6 {
                [ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY]
            } else {
                [ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY]
            };
            if !echo.contains(&header[0]) {
                return None;
            }
            flow.source_port = u16::from_be_bytes([header[4], header[5]]);
            flow.destination_port = flow.source_port;
            echo_reply = header[0] == echo[1];
        }
        _ => {}
    }
    Some(QuotedPacket { flow, echo_reply })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_ipv4_addresses() {
        let mut packet = [0u8; 20];
        packet[0] = 0x45;
        packet[12..16].copy_from_slice(&[100, 64, 0, 1]);
        packet[16..20].copy_from_slice(&[198, 19, 1, 10]);
        let header = parse_ip_header(&packet).expect("valid header");
        assert_eq!(header.source, IpAddr::from([100, 64, 0, 1]));
        assert_eq!(header.destination, IpAddr::from([198, 19, 1, 10]));
    }

    #[test]
    fn truncated_ipv6_is_refused() {
        let mut packet = [0u8; 39];
        packet[0] = 0x60;
        assert_eq!(parse_ip_header(&packet), None);
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_ip_header(&bytes);
        }
    }
}
