//! Translation and flow tests for [`Via6State`]. Inputs are built with
//! `etherparse`'s `PacketBuilder`; outputs are checked with `etherparse`'s
//! own checksum calculations, not ours.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use causeway_wire::via6::via6_address;
use etherparse::{
    IcmpEchoHeader, Icmpv4Slice, Icmpv4Type, Icmpv6Slice, Icmpv6Type, IpNumber, Ipv4Header,
    Ipv6Header, PacketBuilder, TcpSlice, UdpSlice, icmpv4, icmpv6,
};
use ipnet::{Ipv4Net, Ipv6Net};
use proptest::prelude::*;

use super::translate::{PseudoHeader, Segment};
use super::*;

const SITE: u16 = 7;
const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
const REMOTE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);

fn ula() -> Ipv6Net {
    "fd7a:115c:a1e0::/48".parse().expect("valid")
}

fn client_v6() -> Ipv6Addr {
    "fd7a:115c:a1e0::1".parse().expect("valid")
}

fn remote_v6() -> Ipv6Addr {
    via6_address(ula(), SITE, REMOTE)
}

fn range() -> Ipv4Net {
    "10.0.0.0/24".parse().expect("valid")
}

fn router(capacity: usize) -> Via6State {
    let mut state = Via6State::new(NonZeroUsize::new(capacity).expect("non-zero"));
    state
        .configure(ula(), &[(SITE, range())])
        .expect("valid configuration");
    state
}

fn from_client(hop_limit: u8) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
    PacketBuilder::ipv6(client_v6().octets(), remote_v6().octets(), hop_limit)
}

fn from_remote(source: Ipv4Addr) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
    PacketBuilder::ipv4(source.octets(), CLIENT_V4.octets(), 63)
}

fn udp6(source_port: u16, destination_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::new();
    from_client(64)
        .udp(source_port, destination_port)
        .write(&mut packet, payload)
        .expect("written");
    packet
}

fn udp4(source: Ipv4Addr, ports: (u16, u16), payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::new();
    from_remote(source)
        .udp(ports.0, ports.1)
        .write(&mut packet, payload)
        .expect("written");
    packet
}

/// Checks a TCP or UDP segment's checksum with etherparse's calculation
/// under `ip`; false for other protocols.
/// IPv6's fixed header and IPv4's header without options.
const IPV6_LEN: usize = 40;
const IPV4_LEN: usize = 20;

/// Whether a TCP or UDP segment's checksum is right under `ip`.
fn transport_checksum_right(protocol: IpNumber, transport: &[u8], ip: PseudoHeader<'_>) -> bool {
    match protocol {
        IpNumber::TCP => {
            let tcp = TcpSlice::from_slice(transport).expect("TCP");
            tcp.to_header().checksum_under(&ip, tcp.payload()) == Some(tcp.checksum())
        }
        IpNumber::UDP => {
            let udp = UdpSlice::from_slice(transport).expect("UDP");
            udp.to_header().checksum_under(&ip, udp.payload()) == Some(udp.checksum())
        }
        other => panic!("not TCP or UDP: {other:?}"),
    }
}

fn segment_checksum_ok(protocol: IpNumber, transport: &[u8], ip: PseudoHeader<'_>) -> bool {
    match protocol {
        IpNumber::TCP => {
            let tcp = TcpSlice::from_slice(transport).expect("TCP");
            let expected = tcp.to_header().checksum_under(&ip, tcp.payload());
            assert_eq!(Some(tcp.checksum()), expected, "TCP checksum");
            true
        }
        IpNumber::UDP => {
            let udp = UdpSlice::from_slice(transport).expect("UDP");
            let expected = udp.to_header().checksum_under(&ip, udp.payload());
            assert_eq!(Some(udp.checksum()), expected, "UDP checksum");
            true
        }
        _ => false,
    }
}

/// Checks an IPv4 packet's header and transport checksums with etherparse's
/// own calculations; returns the header and the transport bytes.
fn valid_v4(packet: &[u8]) -> (Ipv4Header, Vec<u8>) {
    let (ip, rest) = Ipv4Header::from_slice(packet).expect("IPv4 header");
    assert_eq!(
        ip.header_checksum,
        ip.calc_header_checksum(),
        "IPv4 header checksum"
    );
    assert_eq!(usize::from(ip.total_len), packet.len(), "total length");
    if !segment_checksum_ok(ip.protocol, rest, (&ip).into()) {
        assert_eq!(ip.protocol, IpNumber::ICMP);
        let icmp = Icmpv4Slice::from_slice(rest).expect("ICMP");
        let expected = icmp.icmp_type().calc_checksum(icmp.payload());
        assert_eq!(icmp.checksum(), expected, "ICMP checksum");
    }
    (ip, rest.to_vec())
}

/// As [`valid_v4`], for IPv6.
fn valid_v6(packet: &[u8]) -> (Ipv6Header, Vec<u8>) {
    let (ip, rest) = Ipv6Header::from_slice(packet).expect("IPv6 header");
    assert_eq!(usize::from(ip.payload_length), rest.len(), "payload length");
    if !segment_checksum_ok(ip.next_header, rest, (&ip).into()) {
        assert_eq!(ip.next_header, IpNumber::IPV6_ICMP);
        let icmp = Icmpv6Slice::from_slice(rest).expect("ICMPv6");
        assert!(
            icmp.is_checksum_valid(ip.source, ip.destination),
            "ICMPv6 checksum"
        );
    }
    (ip, rest.to_vec())
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Tcp,
    Udp,
    Echo,
}

fn request(kind: Kind, ports: (u16, u16), hop_limit: u8, tc: u8, payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::new();
    let mut ip = Ipv6Header {
        traffic_class: tc,
        next_header: IpNumber::UDP,
        hop_limit,
        source: client_v6().octets(),
        destination: remote_v6().octets(),
        ..Ipv6Header::default()
    };
    let base = match kind {
        Kind::Tcp => {
            ip.next_header = IpNumber::TCP;
            PacketBuilder::ip(etherparse::IpHeaders::Ipv6(ip, Default::default()))
                .tcp(ports.0, ports.1, 1000, 64_000)
                .ack(1)
                .write(&mut packet, payload)
        }
        Kind::Udp => PacketBuilder::ip(etherparse::IpHeaders::Ipv6(ip, Default::default()))
            .udp(ports.0, ports.1)
            .write(&mut packet, payload),
        Kind::Echo => {
            ip.next_header = IpNumber::IPV6_ICMP;
            PacketBuilder::ip(etherparse::IpHeaders::Ipv6(ip, Default::default()))
                .icmpv6_echo_request(ports.0, ports.1)
                .write(&mut packet, payload)
        }
    };
    base.expect("written");
    packet
}

fn reply(kind: Kind, ports: (u16, u16), payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::new();
    let builder = from_remote(REMOTE);
    match kind {
        Kind::Tcp => builder
            .tcp(ports.1, ports.0, 5000, 64_000)
            .ack(1001)
            .write(&mut packet, payload),
        Kind::Udp => builder.udp(ports.1, ports.0).write(&mut packet, payload),
        Kind::Echo => builder
            .icmpv4_echo_reply(ports.0, ports.1)
            .write(&mut packet, payload),
    }
    .expect("written");
    packet
}

/// Source port, destination port and payload of a TCP, UDP or ICMP echo
/// segment (echo: identifier and sequence number).
fn ports_and_payload(protocol: IpNumber, transport: &[u8]) -> (u16, u16, Vec<u8>) {
    match protocol {
        IpNumber::TCP => {
            let tcp = TcpSlice::from_slice(transport).expect("TCP");
            (
                tcp.source_port(),
                tcp.destination_port(),
                tcp.payload().to_vec(),
            )
        }
        IpNumber::UDP => {
            let udp = UdpSlice::from_slice(transport).expect("UDP");
            (
                udp.source_port(),
                udp.destination_port(),
                udp.payload().to_vec(),
            )
        }
        IpNumber::ICMP => {
            let icmp = Icmpv4Slice::from_slice(transport).expect("ICMP");
            match icmp.icmp_type() {
                Icmpv4Type::EchoRequest(e) | Icmpv4Type::EchoReply(e) => {
                    (e.id, e.seq, icmp.payload().to_vec())
                }
                other => panic!("not an echo: {other:?}"),
            }
        }
        IpNumber::IPV6_ICMP => {
            let icmp = Icmpv6Slice::from_slice(transport).expect("ICMPv6");
            match icmp.icmp_type() {
                Icmpv6Type::EchoRequest(e) | Icmpv6Type::EchoReply(e) => {
                    (e.id, e.seq, icmp.payload().to_vec())
                }
                other => panic!("not an echo: {other:?}"),
            }
        }
        other => panic!("unexpected protocol {other:?}"),
    }
}

fn kind_strategy() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Tcp), Just(Kind::Udp), Just(Kind::Echo)]
}

proptest! {
    #[test]
    fn round_trip_keeps_ports_and_payloads_and_checksums_are_valid(
        kind in kind_strategy(),
        ports in (1u16.., 1u16..),
        hop_limit in 2u8..,
        tc: u8,
        payload in proptest::collection::vec(any::<u8>(), 0..1400),
        answer in proptest::collection::vec(any::<u8>(), 0..1400),
    ) {
        let now = Instant::now();
        let mut state = router(16);
        let mut v4 = Vec::new();

        let outcome = state.to_ipv4(
            &request(kind, ports, hop_limit, tc, &payload),
            Some(CLIENT_V4),
            &mut v4,
            now,
        );

        prop_assert_eq!(outcome, Via6Outcome::Translated);
        let (ip, transport) = valid_v4(&v4);
        prop_assert_eq!(Ipv4Addr::from(ip.source), CLIENT_V4);
        prop_assert_eq!(Ipv4Addr::from(ip.destination), REMOTE);
        prop_assert_eq!(ip.time_to_live, hop_limit);
        prop_assert_eq!((ip.dscp.value() << 2) | ip.ecn.value(), tc);
        prop_assert!(ip.dont_fragment);
        prop_assert_eq!(
            ports_and_payload(ip.protocol, &transport),
            (ports.0, ports.1, payload.clone())
        );

        let mut v6 = Vec::new();
        let outcome = state.to_ipv6(&reply(kind, ports, &answer), &mut v6, now);

        prop_assert_eq!(outcome, Via6Outcome::Translated);
        let (ip, transport) = valid_v6(&v6);
        prop_assert_eq!(ip.source_addr(), remote_v6());
        prop_assert_eq!(ip.destination_addr(), client_v6());
        let expected_ports = match kind {
            Kind::Echo => ports,
            Kind::Tcp | Kind::Udp => (ports.1, ports.0),
        };
        prop_assert_eq!(
            ports_and_payload(ip.next_header, &transport),
            (expected_ports.0, expected_ports.1, answer)
        );
        prop_assert_eq!(state.stats().to_ipv4, 1);
        prop_assert_eq!(state.stats().to_ipv6, 1);
    }

    #[test]
    fn addresses_outside_the_served_range_are_refused(host: u32, site: u16) {
        let now = Instant::now();
        let mut state = router(16);
        let destination = Ipv4Addr::from(host);
        prop_assume!(!(site == SITE && range().contains(&destination)));
        let mut packet = Vec::new();
        PacketBuilder::ipv6(
            client_v6().octets(),
            via6_address(ula(), site, destination).octets(),
            64,
        )
        .udp(1000, 53)
        .write(&mut packet, b"query")
        .expect("written");
        let mut out = Vec::new();

        let outcome = state.to_ipv4(&packet, Some(CLIENT_V4), &mut out, now);

        prop_assert_eq!(outcome, Via6Outcome::Refused(Via6Refusal::OutOfRange));
        prop_assert_eq!(state.stats().refused(Via6Refusal::OutOfRange), 1);
        prop_assert_eq!(state.stats().flows, 0);
    }

    #[test]
    fn reading_any_bytes_never_panics_and_never_opens_a_flow_when_refused(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let now = Instant::now();
        let mut state = router(16);
        let mut packet = udp6(1000, 53, b"");
        packet.truncate(40);
        packet.extend_from_slice(&bytes);
        let mut out = Vec::new();

        let to_ipv4 = state.to_ipv4(&packet, Some(CLIENT_V4), &mut out, now);
        let to_ipv6 = state.to_ipv6(&bytes, &mut out, now);

        if matches!(to_ipv4, Via6Outcome::Refused(_)) {
            prop_assert_eq!(state.stats().flows, 0);
        }
        prop_assert_ne!(to_ipv6, Via6Outcome::Translated);
    }
}

#[test]
fn an_ipv6_fragment_is_refused_and_counted() {
    let now = Instant::now();
    let mut state = router(16);
    let whole = udp6(1000, 53, b"query");
    // The same packet behind a Fragment header (RFC 8200 §4.5): the first
    // fragment, more to come.
    let mut packet = whole[..40].to_vec();
    packet[6] = IpNumber::IPV6_FRAGMENTATION_HEADER.0;
    packet.extend_from_slice(&[IpNumber::UDP.0, 0, 0, 1, 0, 0, 0, 42]);
    packet.extend_from_slice(&whole[40..]);
    let length = u16::try_from(packet.len() - 40).expect("small");
    packet[4..6].copy_from_slice(&length.to_be_bytes());
    let mut out = Vec::new();

    let outcome = state.to_ipv4(&packet, Some(CLIENT_V4), &mut out, now);

    assert_eq!(outcome, Via6Outcome::Refused(Via6Refusal::Fragment));
    assert_eq!(state.stats().refused(Via6Refusal::Fragment), 1);
    assert_eq!(state.stats().flows, 0);
}

#[test]
fn other_extension_headers_are_refused_as_unsupported() {
    let now = Instant::now();
    let mut state = router(16);
    let whole = udp6(1000, 53, b"query");
    // A hop-by-hop options header with one PadN option filling 6 bytes.
    let mut packet = whole[..40].to_vec();
    packet[6] = 0;
    packet.extend_from_slice(&[IpNumber::UDP.0, 0, 1, 4, 0, 0, 0, 0]);
    packet.extend_from_slice(&whole[40..]);
    let length = u16::try_from(packet.len() - 40).expect("small");
    packet[4..6].copy_from_slice(&length.to_be_bytes());
    let mut out = Vec::new();

    let outcome = state.to_ipv4(&packet, Some(CLIENT_V4), &mut out, now);

    assert_eq!(outcome, Via6Outcome::Refused(Via6Refusal::Unsupported));
    assert_eq!(state.stats().refused(Via6Refusal::Fragment), 0);
}

#[test]
fn an_ipv4_fragment_of_a_flow_is_refused_and_counted_and_of_no_flow_left_alone() {
    let now = Instant::now();
    let mut state = router(16);
    let mut out = Vec::new();
    assert_eq!(
        state.to_ipv4(&udp6(1000, 53, b"query"), Some(CLIENT_V4), &mut out, now),
        Via6Outcome::Translated
    );
    let fragment = |source_port: u16| {
        let mut packet = udp4(REMOTE, (53, source_port), b"a long answer");
        let (mut ip, rest) = Ipv4Header::from_slice(&packet).expect("IPv4");
        ip.more_fragments = true;
        ip.header_checksum = ip.calc_header_checksum();
        let rest = rest.to_vec();
        packet.clear();
        packet.extend_from_slice(&ip.to_bytes());
        packet.extend_from_slice(&rest);
        packet
    };

    let of_flow = state.to_ipv6(&fragment(1000), &mut out, now);
    let of_no_flow = state.to_ipv6(&fragment(2000), &mut out, now);

    assert_eq!(of_flow, Via6Outcome::Refused(Via6Refusal::Fragment));
    assert_eq!(of_no_flow, Via6Outcome::NotVia6);
    assert_eq!(state.stats().refused(Via6Refusal::Fragment), 1);
}

#[test]
fn a_hop_limit_of_one_is_refused() {
    let now = Instant::now();
    let mut state = router(16);
    let mut out = Vec::new();

    let outcome = state.to_ipv4(
        &request(Kind::Udp, (1000, 53), 1, 0, b"query"),
        Some(CLIENT_V4),
        &mut out,
        now,
    );

    assert_eq!(outcome, Via6Outcome::Refused(Via6Refusal::HopLimit));
    assert_eq!(state.stats().refused(Via6Refusal::HopLimit), 1);
}

#[test]
fn a_bad_checksum_stays_bad_instead_of_being_recomputed() {
    let now = Instant::now();
    let mut state = router(16);
    for kind in [Kind::Udp, Kind::Tcp] {
        let mut packet = request(kind, (1000, 53), 64, 0, b"query");
        let last = packet.len() - 1;
        packet[last] ^= 0xff;
        let mut out = Vec::new();

        let outcome = state.to_ipv4(&packet, Some(CLIENT_V4), &mut out, now);

        // Translated, with the error carried over exactly: undoing the
        // corruption in the IPv4 packet makes its checksum right.
        assert_eq!(outcome, Via6Outcome::Translated, "{kind:?}");
        let (ip, _) = Ipv4Header::from_slice(&out).expect("IPv4 header");
        let segment = &out[ip.header_len()..];
        assert!(
            !transport_checksum_right(ip.protocol, segment, (&ip).into()),
            "{kind:?}"
        );
        let last = out.len() - 1;
        out[last] ^= 0xff;
        valid_v4(&out);
    }
}

#[test]
fn a_udp_datagram_without_a_checksum_is_refused_over_ipv6_and_given_one_from_ipv4() {
    let now = Instant::now();
    let mut state = router(16);
    let mut out = Vec::new();
    let mut packet = udp6(1000, 53, b"query");
    packet[IPV6_LEN + 6..IPV6_LEN + 8].copy_from_slice(&[0, 0]);
    assert_eq!(
        state.to_ipv4(&packet, Some(CLIENT_V4), &mut out, now),
        Via6Outcome::Refused(Via6Refusal::BadChecksum)
    );
    state.to_ipv4(&udp6(1000, 53, b"query"), Some(CLIENT_V4), &mut out, now);
    let mut reply = udp4(REMOTE, (53, 1000), b"answer");
    reply[IPV4_LEN + 6..IPV4_LEN + 8].copy_from_slice(&[0, 0]);
    assert_eq!(
        state.to_ipv6(&reply, &mut out, now),
        Via6Outcome::Translated
    );
    let (_, segment) = valid_v6(&out);
    assert_ne!(segment[6..8], [0, 0]);
}

#[test]
fn a_client_without_an_ipv4_address_is_refused() {
    let now = Instant::now();
    let mut state = router(16);
    let mut out = Vec::new();

    let outcome = state.to_ipv4(&udp6(1000, 53, b"query"), None, &mut out, now);

    assert_eq!(outcome, Via6Outcome::Refused(Via6Refusal::NoClientIpv4));
}

#[test]
fn echo_request_and_reply_map_to_their_ipv4_and_ipv6_types() {
    let now = Instant::now();
    let mut state = router(16);
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();

    state.to_ipv4(
        &request(Kind::Echo, (77, 1), 64, 0, b"ping"),
        Some(CLIENT_V4),
        &mut v4,
        now,
    );
    state.to_ipv6(&reply(Kind::Echo, (77, 1), b"ping"), &mut v6, now);

    assert_eq!(v4[20], icmpv4::TYPE_ECHO_REQUEST);
    assert_eq!(v4[9], IpNumber::ICMP.0);
    assert_eq!(v6[40], icmpv6::TYPE_ECHO_REPLY);
    assert_eq!(v6[6], IpNumber::IPV6_ICMP.0);
}

#[test]
fn a_port_unreachable_for_a_translated_udp_flow_becomes_icmpv6_with_the_quote_translated() {
    let now = Instant::now();
    let mut state = router(16);
    let mut v4 = Vec::new();
    state.to_ipv4(&udp6(1000, 53, b"query"), Some(CLIENT_V4), &mut v4, now);
    // The remote host answers the translated packet with port unreachable,
    // quoting its IP header and the first bytes of the datagram.
    let mut error = Vec::new();
    from_remote(REMOTE)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            icmpv4::DestUnreachableHeader::Port,
        ))
        .write(&mut error, &v4)
        .expect("written");
    let mut v6 = Vec::new();

    let outcome = state.to_ipv6(&error, &mut v6, now);

    assert_eq!(outcome, Via6Outcome::Translated);
    let (ip, transport) = valid_v6(&v6);
    assert_eq!(ip.source_addr(), remote_v6());
    assert_eq!(ip.destination_addr(), client_v6());
    let icmp = Icmpv6Slice::from_slice(&transport).expect("ICMPv6");
    assert_eq!(
        icmp.icmp_type(),
        Icmpv6Type::DestinationUnreachable(icmpv6::DestUnreachableCode::Port)
    );
    let (inner, quoted) = Ipv6Header::from_slice(icmp.payload()).expect("quoted IPv6");
    assert_eq!(inner.source_addr(), client_v6());
    assert_eq!(inner.destination_addr(), remote_v6());
    assert_eq!(inner.next_header, IpNumber::UDP);
    assert_eq!(usize::from(inner.payload_length), 8 + b"query".len());
    assert_eq!(&quoted[..4], &[0x03, 0xe8, 0x00, 0x35], "ports 1000 → 53");
    // An error about a flow does not keep the flow alive.
    assert_eq!(state.stats().flows, 1);
}

#[test]
fn an_icmpv4_error_about_no_flow_is_left_alone() {
    let now = Instant::now();
    let mut state = router(16);
    let quoted = udp4(CLIENT_V4, (1000, 53), b"query");
    let mut error = Vec::new();
    from_remote(REMOTE)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            icmpv4::DestUnreachableHeader::Port,
        ))
        .write(&mut error, &quoted)
        .expect("written");
    let mut out = Vec::new();

    assert_eq!(state.to_ipv6(&error, &mut out, now), Via6Outcome::NotVia6);
}

#[test]
fn a_client_packet_too_big_becomes_fragmentation_needed_with_the_mtu_less_20() {
    let now = Instant::now();
    let mut state = router(16);
    let mut out = Vec::new();
    state.to_ipv4(&udp6(1000, 53, b"query"), Some(CLIENT_V4), &mut out, now);
    let mut answer = Vec::new();
    state.to_ipv6(&udp4(REMOTE, (53, 1000), b"answer"), &mut answer, now);
    // The client says the answer was too big for a 1400-byte link.
    let mut error = Vec::new();
    from_client(64)
        .icmpv6(Icmpv6Type::PacketTooBig { mtu: 1400 })
        .write(&mut error, &answer)
        .expect("written");
    let mut v4 = Vec::new();

    let outcome = state.to_ipv4(&error, Some(CLIENT_V4), &mut v4, now);

    assert_eq!(outcome, Via6Outcome::Translated);
    let (ip, transport) = valid_v4(&v4);
    assert_eq!(Ipv4Addr::from(ip.destination), REMOTE);
    let icmp = Icmpv4Slice::from_slice(&transport).expect("ICMP");
    assert_eq!(
        icmp.icmp_type(),
        Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: 1380
        })
    );
    let (inner, quoted) = Ipv4Header::from_slice(icmp.payload()).expect("quoted IPv4");
    assert_eq!(Ipv4Addr::from(inner.source), REMOTE);
    assert_eq!(Ipv4Addr::from(inner.destination), CLIENT_V4);
    assert_eq!(inner.protocol, IpNumber::UDP);
    assert_eq!(&quoted[..4], &[0x00, 0x35, 0x03, 0xe8], "ports 53 → 1000");
}

#[test]
fn a_client_error_about_a_flow_the_router_does_not_hold_is_refused() {
    let now = Instant::now();
    let mut state = router(16);
    let mut quoted = Vec::new();
    PacketBuilder::ipv6(remote_v6().octets(), client_v6().octets(), 64)
        .udp(53, 1000)
        .write(&mut quoted, b"answer")
        .expect("written");
    let mut error = Vec::new();
    from_client(64)
        .icmpv6(Icmpv6Type::DestinationUnreachable(
            icmpv6::DestUnreachableCode::Port,
        ))
        .write(&mut error, &quoted)
        .expect("written");
    let mut out = Vec::new();

    let outcome = state.to_ipv4(&error, Some(CLIENT_V4), &mut out, now);

    assert_eq!(outcome, Via6Outcome::Refused(Via6Refusal::NoFlow));
}

#[test]
fn the_flow_table_refuses_new_flows_when_full_and_takes_them_again_after_expiry() {
    let now = Instant::now();
    let mut state = router(2);
    let mut out = Vec::new();
    for port in [1000, 1001] {
        let outcome = state.to_ipv4(&udp6(port, 53, b"q"), Some(CLIENT_V4), &mut out, now);
        assert_eq!(outcome, Via6Outcome::Translated);
    }

    let refused = state.to_ipv4(&udp6(1002, 53, b"q"), Some(CLIENT_V4), &mut out, now);
    let known = state.to_ipv4(&udp6(1000, 53, b"q"), Some(CLIENT_V4), &mut out, now);

    assert_eq!(refused, Via6Outcome::Refused(Via6Refusal::FlowTableFull));
    assert_eq!(
        known,
        Via6Outcome::Translated,
        "an existing flow still passes"
    );
    assert_eq!(state.stats().refused(Via6Refusal::FlowTableFull), 1);
    assert_eq!(state.stats().flows, 2);
    assert_eq!(state.stats().flow_capacity, 2);

    // UDP flows last 2 minutes idle.
    let later = now + Duration::from_secs(120);
    state.handle_timeout(later);
    assert_eq!(state.stats().flows, 0);
    let again = state.to_ipv4(&udp6(1002, 53, b"q"), Some(CLIENT_V4), &mut out, later);
    assert_eq!(again, Via6Outcome::Translated);
    // Its reply comes back as IPv6; the expired flows' replies do not.
    assert_eq!(
        state.to_ipv6(&udp4(REMOTE, (53, 1002), b"a"), &mut out, later),
        Via6Outcome::Translated
    );
    assert_eq!(
        state.to_ipv6(&udp4(REMOTE, (53, 1001), b"a"), &mut out, later),
        Via6Outcome::NotVia6
    );
}

#[test]
fn an_ipv4_packet_of_no_flow_is_left_alone() {
    let now = Instant::now();
    let mut state = router(16);
    let mut out = vec![0xaa; 4];

    let outcome = state.to_ipv6(&udp4(REMOTE, (53, 1000), b"answer"), &mut out, now);

    assert_eq!(outcome, Via6Outcome::NotVia6);
    assert_eq!(out, vec![0xaa; 4], "output untouched");
    let stats = state.stats();
    assert_eq!((stats.to_ipv4, stats.to_ipv6, stats.flows), (0, 0, 0));
    assert_eq!(stats.iter_refused().map(|(_, n)| n).sum::<u64>(), 0);
}

#[test]
fn a_tcp_flow_is_established_by_the_answer_and_closing_by_fin() {
    let now = Instant::now();
    let mut state = router(16);
    let mut out = Vec::new();
    state.to_ipv4(
        &request(Kind::Tcp, (40000, 443), 64, 0, b""),
        Some(CLIENT_V4),
        &mut out,
        now,
    );
    state.to_ipv6(&reply(Kind::Tcp, (40000, 443), b""), &mut out, now);

    // Established TCP outlives the 4-minute transitory timeout.
    let later = now + Duration::from_secs(3600);
    state.handle_timeout(later);
    assert_eq!(state.stats().flows, 1);

    let mut fin = Vec::new();
    from_remote(REMOTE)
        .tcp(443, 40000, 6000, 64_000)
        .fin()
        .ack(1001)
        .write(&mut fin, b"")
        .expect("written");
    assert_eq!(
        state.to_ipv6(&fin, &mut out, later),
        Via6Outcome::Translated
    );
    state.handle_timeout(later + Duration::from_secs(4 * 60));
    assert_eq!(state.stats().flows, 0);
}

#[test]
fn a_bad_configuration_is_refused_and_changes_nothing() {
    let mut state = router(16);
    let other: Ipv4Net = "10.0.0.128/25".parse().expect("valid");

    let overlap = state.configure(ula(), &[(SITE, range()), (8, other)]);
    let not_48 = state.configure("fd7a:115c::/32".parse().expect("valid"), &[(8, other)]);

    assert_eq!(
        overlap,
        Err(Via6ConfigError::Overlap {
            first_site: SITE,
            first: range(),
            second_site: 8,
            second: other,
        })
    );
    assert!(matches!(not_48, Err(Via6ConfigError::NotA48(_))));
    assert!(state.is_enabled());
    let mut out = Vec::new();
    assert_eq!(
        state.to_ipv4(
            &udp6(1000, 53, b"q"),
            Some(CLIENT_V4),
            &mut out,
            Instant::now()
        ),
        Via6Outcome::Translated,
        "the old configuration still serves"
    );
    state.configure(ula(), &[]).expect("off");
    assert!(!state.is_enabled());
    assert_eq!(state.stats().flows, 0);
}

#[test]
fn icmp_echo_identifiers_are_kept_apart_per_flow() {
    let now = Instant::now();
    let mut state = router(16);
    let mut out = Vec::new();
    let echo = IcmpEchoHeader { id: 9, seq: 3 };
    state.to_ipv4(
        &request(Kind::Echo, (echo.id, echo.seq), 64, 0, b"ping"),
        Some(CLIENT_V4),
        &mut out,
        now,
    );

    let other_id = state.to_ipv6(&reply(Kind::Echo, (10, 3), b"ping"), &mut out, now);
    let same_id = state.to_ipv6(&reply(Kind::Echo, (9, 3), b"ping"), &mut out, now);

    assert_eq!(other_id, Via6Outcome::NotVia6);
    assert_eq!(same_id, Via6Outcome::Translated);
}

#[test]
fn a_reply_with_a_bad_checksum_keeps_it_when_it_belongs_to_a_flow() {
    let now = Instant::now();
    let mut state = router(16);
    let mut out = Vec::new();
    state.to_ipv4(&udp6(1000, 53, b"query"), Some(CLIENT_V4), &mut out, now);
    let corrupt = |ports| {
        let mut packet = udp4(REMOTE, ports, b"answer");
        let last = packet.len() - 1;
        packet[last] ^= 0xff;
        packet
    };

    let of_flow = state.to_ipv6(&corrupt((53, 1000)), &mut out, now);
    let of_no_flow = state.to_ipv6(&corrupt((53, 2000)), &mut out, now);

    assert_eq!(of_flow, Via6Outcome::Translated);
    let (ip, _) = Ipv6Header::from_slice(&out).expect("IPv6 header");
    assert!(!transport_checksum_right(
        ip.next_header,
        &out[IPV6_LEN..],
        (&ip).into()
    ));
    assert_eq!(of_no_flow, Via6Outcome::NotVia6);
    assert_eq!(state.stats().refused(Via6Refusal::BadChecksum), 0);
}

#[test]
fn a_time_exceeded_from_a_router_outside_the_range_names_it_at_the_site() {
    let now = Instant::now();
    let mut state = router(16);
    let mut v4 = Vec::new();
    state.to_ipv4(
        &request(Kind::Echo, (5, 1), 64, 0, b"trace"),
        Some(CLIENT_V4),
        &mut v4,
        now,
    );
    let hop = Ipv4Addr::new(192, 168, 1, 1);
    let mut error = Vec::new();
    from_remote(hop)
        .icmpv4(Icmpv4Type::TimeExceeded(
            icmpv4::TimeExceededCode::TtlExceededInTransit,
        ))
        .write(&mut error, &v4[..28])
        .expect("written");
    let mut v6 = Vec::new();

    let outcome = state.to_ipv6(&error, &mut v6, now);

    assert_eq!(outcome, Via6Outcome::Translated);
    let (ip, transport) = valid_v6(&v6);
    assert_eq!(ip.source_addr(), via6_address(ula(), SITE, hop));
    let icmp = Icmpv6Slice::from_slice(&transport).expect("ICMPv6");
    assert_eq!(
        icmp.icmp_type(),
        Icmpv6Type::TimeExceeded(icmpv6::TimeExceededCode::HopLimitExceeded)
    );
    let (inner, quoted) = Ipv6Header::from_slice(icmp.payload()).expect("quoted IPv6");
    assert_eq!(inner.next_header, IpNumber::IPV6_ICMP);
    assert_eq!(
        quoted[0],
        icmpv6::TYPE_ECHO_REQUEST,
        "quoted echo type mapped"
    );
}

/// ICMPv4 errors about a translated packet, and what they become.
fn icmpv4_error_strategy() -> impl Strategy<Value = (Icmpv4Type, Icmpv6Type)> {
    use icmpv4::DestUnreachableHeader as Unreach4;
    use icmpv6::DestUnreachableCode as Unreach6;
    prop_oneof![
        Just((
            Icmpv4Type::DestinationUnreachable(Unreach4::Port),
            Icmpv6Type::DestinationUnreachable(Unreach6::Port)
        )),
        Just((
            Icmpv4Type::DestinationUnreachable(Unreach4::Host),
            Icmpv6Type::DestinationUnreachable(Unreach6::NoRoute)
        )),
        Just((
            Icmpv4Type::DestinationUnreachable(Unreach4::FilterProhibited),
            Icmpv6Type::DestinationUnreachable(Unreach6::Prohibited)
        )),
        Just((
            Icmpv4Type::TimeExceeded(icmpv4::TimeExceededCode::TtlExceededInTransit),
            Icmpv6Type::TimeExceeded(icmpv6::TimeExceededCode::HopLimitExceeded)
        )),
        (1u16..).prop_map(|mtu| (
            Icmpv4Type::DestinationUnreachable(Unreach4::FragmentationNeeded { next_hop_mtu: mtu }),
            Icmpv6Type::PacketTooBig {
                mtu: u32::from(mtu) + 20
            }
        )),
    ]
}

proptest! {
    #[test]
    fn icmpv4_errors_about_a_flow_become_icmpv6_errors_quoting_the_ipv6_packet(
        kind in kind_strategy(),
        ports in (1u16.., 1u16..),
        (v4_type, v6_type) in icmpv4_error_strategy(),
        payload in proptest::collection::vec(any::<u8>(), 0..1400),
        quote_len in 28usize..1500,
    ) {
        let now = Instant::now();
        let mut state = router(16);
        let mut v4 = Vec::new();
        let outcome = state.to_ipv4(
            &request(kind, ports, 64, 0, &payload),
            Some(CLIENT_V4),
            &mut v4,
            now,
        );
        prop_assert_eq!(outcome, Via6Outcome::Translated);
        // A router on the way quotes as much of the packet as it likes.
        let quote = &v4[..quote_len.min(v4.len())];
        let mut error = Vec::new();
        from_remote(Ipv4Addr::new(192, 168, 1, 1))
            .icmpv4(v4_type)
            .write(&mut error, quote)
            .expect("written");
        let mut v6 = Vec::new();

        let outcome = state.to_ipv6(&error, &mut v6, now);

        prop_assert_eq!(outcome, Via6Outcome::Translated);
        prop_assert!(v6.len() <= 1280, "an ICMPv6 error fits the minimum MTU");
        let (ip, transport) = valid_v6(&v6);
        prop_assert_eq!(ip.destination_addr(), client_v6());
        let icmp = Icmpv6Slice::from_slice(&transport).expect("ICMPv6");
        prop_assert_eq!(icmp.icmp_type(), v6_type);
        let (inner, quoted) = Ipv6Header::from_slice(icmp.payload()).expect("quoted IPv6");
        prop_assert_eq!(inner.source_addr(), client_v6());
        prop_assert_eq!(inner.destination_addr(), remote_v6());
        prop_assert_eq!(usize::from(inner.payload_length), v4.len() - 20);
        prop_assert_eq!(&quoted[4..8], &quote[24..28], "quoted transport kept");
    }

    #[test]
    fn ipv4_fragments_of_a_flow_are_refused_and_counted(
        more_fragments: bool,
        offset in 0u16..8192,
    ) {
        prop_assume!(more_fragments || offset != 0);
        let now = Instant::now();
        let mut state = router(16);
        let mut out = Vec::new();
        state.to_ipv4(&udp6(1000, 53, b"query"), Some(CLIENT_V4), &mut out, now);
        let packet = udp4(REMOTE, (53, 1000), b"a long answer");
        let (mut ip, rest) = Ipv4Header::from_slice(&packet).expect("IPv4");
        ip.more_fragments = more_fragments;
        ip.fragment_offset = etherparse::IpFragOffset::try_new(offset).expect("13 bits");
        ip.header_checksum = ip.calc_header_checksum();
        let mut fragment = ip.to_bytes().to_vec();
        fragment.extend_from_slice(rest);

        let outcome = state.to_ipv6(&fragment, &mut out, now);

        if offset == 0 {
            // The first fragment carries the ports: it is the flow's.
            prop_assert_eq!(outcome, Via6Outcome::Refused(Via6Refusal::Fragment));
            prop_assert_eq!(state.stats().refused(Via6Refusal::Fragment), 1);
        } else {
            prop_assert_eq!(outcome, Via6Outcome::NotVia6);
        }
        prop_assert_eq!(state.stats().to_ipv6, 0);
    }
}

#[test]
fn a_udp_reply_without_a_checksum_gets_one_over_ipv6() {
    let now = Instant::now();
    let mut state = router(16);
    let mut out = Vec::new();
    state.to_ipv4(&udp6(1000, 53, b"query"), Some(CLIENT_V4), &mut out, now);
    let mut reply = udp4(REMOTE, (53, 1000), b"answer");
    reply[26..28].copy_from_slice(&[0, 0]);
    let mut v6 = Vec::new();

    let outcome = state.to_ipv6(&reply, &mut v6, now);

    assert_eq!(outcome, Via6Outcome::Translated);
    let (_, transport) = valid_v6(&v6);
    assert_ne!(&transport[6..8], &[0, 0]);
}
